package metricsdoc

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestReadTheDoc(t *testing.T) {
	fams, err := Read("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	want := Family{Type: "counter", Labels: []string{"role", "client", "resource", "consistency", "shape"}}
	if got := fams["herd_relists_total"]; !reflect.DeepEqual(got, want) {
		t.Errorf("herd_relists_total = %+v, want %+v", got, want)
	}
	for name, f := range fams {
		if !strings.HasPrefix(name, "herd_") || f.Type == "" {
			t.Errorf("%s: %+v", name, f)
		}
	}
}

func TestReadRows(t *testing.T) {
	var b strings.Builder
	b.WriteString("| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n")
	b.WriteString("  | `herd_a_total` | counter | x,  y , | indented, spaces and a trailing comma |\n")
	b.WriteString("| `herd_b` | gauge |  | no labels |\n")
	b.WriteString("| `herd_c` | widget | z | not a metric type: not a row |\n")
	b.WriteString("| `other_d` | gauge | z | not herd's: not a row |\n")
	for i := range minRows {
		b.WriteString("| `herd_filler_" + string(rune('a'+i)) + "` | histogram | le_not | filler |\n")
	}
	path := filepath.Join(t.TempDir(), "metrics.md")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	fams, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fams["herd_a_total"], (Family{"counter", []string{"x", "y"}}); !reflect.DeepEqual(got, want) {
		t.Errorf("herd_a_total = %+v, want %+v", got, want)
	}
	if got, want := fams["herd_b"], (Family{Type: "gauge"}); !reflect.DeepEqual(got, want) {
		t.Errorf("herd_b = %+v, want %+v", got, want)
	}
	for _, name := range []string{"herd_c", "other_d"} {
		if f, ok := fams[name]; ok {
			t.Errorf("%s read as %+v", name, f)
		}
	}
	if len(fams) != 2+minRows {
		t.Errorf("%d families, want %d", len(fams), 2+minRows)
	}
}

func TestReadRefusesTooFewRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metrics.md")
	if err := os.WriteFile(path, []byte("| `herd_a_total` | counter | x | one row |\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), "found only 1 metrics") {
		t.Errorf("Read = %v, want a too-few-rows error", err)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "none.md")); err == nil {
		t.Error("Read of a missing file: no error")
	}
}
