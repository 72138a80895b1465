package evidence

import (
	"reflect"
	"testing"

	"github.com/prometheus/common/model"
)

// FuzzSelector: whatever the label values, Selector's output parses as one
// selector whose equality matchers hold exactly the non-empty values. The
// keys are label names herd's code writes, never alert input, so the fuzzer
// uses them only when they are valid (legacy) label names.
func FuzzSelector(f *testing.F) {
	for _, s := range [][4]string{
		{"node", "n1", "cluster", "prod"},
		{"node", `"} or vector(1) #`, "cluster", `\`},
		{"identity", "system:node:a\nb", "role", "\ufffd"},
		{"node", "\xff\xfe", "cluster", ""},
		{"a", `\"`, "b", "`'\"\\x00"},
		{"node", "", "node", "dup"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		in := map[string]string{}
		for _, kv := range [][2]string{{k1, v1}, {k2, v2}, {"cluster", v1 + v2}} {
			if !model.LegacyValidation.IsValidLabelName(kv[0]) || kv[0] == model.MetricNameLabel {
				continue
			}
			in[kv[0]] = kv[1]
		}
		want := map[string]string{}
		for k, v := range in {
			if v != "" {
				want[k] = v
			}
		}
		sel := Selector(in)
		if got := parseSelector(t, "herd:stale_kubelet:max", sel); !reflect.DeepEqual(got, want) {
			t.Fatalf("Selector(%q) = %s, which parses to %q", in, sel, got)
		}
	})
}
