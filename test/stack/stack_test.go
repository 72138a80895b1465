package stack

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/herd-k8s/herd/test/herdtest"
)

func TestRenderMixinCarriesTheOverrides(t *testing.T) {
	root, err := herdtest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	overrides := DemoMixin()
	overrides["relistStormFor"], overrides["herdResponderEnabled"] = "42s", false
	m, err := RenderMixin(filepath.Join(root, "rules"), overrides)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Dashboard) == 0 || m.Config["relistStormFor"] != "42s" {
		t.Errorf("rendered dashboard %d keys, config relistStormFor %v; want a dashboard and the override", len(m.Dashboard), m.Config["relistStormFor"])
	}
	if !strings.Contains(strings.Join(strings.Fields(string(m.Alerts)), ""), `"for":"42s"`) {
		t.Errorf("no alert renders for: 42s")
	}
}

func TestCheckOverridesFailsWhenTheyDidNotReachTheRules(t *testing.T) {
	alerts := func(rules ...map[string]string) Mixin {
		b, _ := json.Marshal(map[string]any{"groups": []any{map[string]any{"name": "g", "rules": rules}}})
		return Mixin{Alerts: b}
	}
	storm := map[string]string{"alert": "HerdRelistStorm", "for": "15s", "expr": "herd:relists_by_resource:rate20s > 1"}
	ok := map[string]any{"relistStormFor": "15s", "rateWindow": "20s", "herdResponderEnabled": false}
	if err := checkOverrides(alerts(storm), ok); err != nil {
		t.Errorf("rules with the overrides: %v", err)
	}
	for name, tc := range map[string]struct {
		m    Mixin
		want string
	}{
		"other for":           {alerts(map[string]string{"alert": "HerdRelistStorm", "for": "15m", "expr": storm["expr"]}), "without the overrides"},
		"other window":        {alerts(map[string]string{"alert": "HerdRelistStorm", "for": "15s", "expr": "herd:relists_by_resource:rate5m > 1"}), "rateWindow"},
		"no storm alert":      {alerts(), "no HerdRelistStorm"},
		"responder rendered":  {alerts(storm, map[string]string{"alert": "HerdResponderDown"}), "herdResponderEnabled=false"},
		"alerts not decoding": {Mixin{Alerts: []byte("{")}, "decode"},
	} {
		if err := checkOverrides(tc.m, ok); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

func TestApplyManifestIsStrict(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "# a comment-only document\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: herd}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: herd-exporter, namespace: herd}\n")
	c := fake.NewClientset()
	objs, err := ApplyManifest(context.Background(), c, good)
	if err != nil || len(objs["Namespace"]) != 1 || len(objs["ServiceAccount"]) != 1 {
		t.Fatalf("ApplyManifest: %v, %v; want one Namespace and one ServiceAccount", objs, err)
	}
	if _, err := c.CoreV1().ServiceAccounts("herd").Get(context.Background(), "herd-exporter", metav1.GetOptions{}); err != nil {
		t.Errorf("the ServiceAccount was not created: %v", err)
	}
	for name, tc := range map[string]struct{ body, want string }{
		"unknown field": {"apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\nspce: {}\n", "unknown field"},
		"no kind":       {"metadata: {name: x}\n", "has no kind"},
		"other kind":    {"apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n", "not a kind this harness creates"},
		"exists":        {"apiVersion: v1\nkind: Namespace\nmetadata: {name: herd}\n", "create"},
	} {
		if _, err := ApplyManifest(context.Background(), c, write(name+".yaml", tc.body)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}
