package stack

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"sigs.k8s.io/yaml"

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
	write := func(name, body string) string { return herdtest.WriteTemp(t, name, body) }
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

// TestApplyManifestAPF: herd's APF objects apply as the chart installs them.
func TestApplyManifestAPF(t *testing.T) {
	root, err := herdtest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientset()
	objs, err := ApplyManifest(context.Background(), c, filepath.Join(root, "manifests/apf/herd.yaml"))
	if err != nil || len(objs["PriorityLevelConfiguration"]) != 3 || len(objs["FlowSchema"]) != 1 {
		t.Fatalf("ApplyManifest: %v, %v; want herd's three levels and its FlowSchema", objs, err)
	}
	if _, err := c.FlowcontrolV1().PriorityLevelConfigurations().Get(context.Background(), "herd-protect", metav1.GetOptions{}); err != nil {
		t.Errorf("herd-protect was not created: %v", err)
	}
}

// TestResponderWrites: the audit policy puts the responder's writes in the
// log, and WritesBy reads them back with their latency.
func TestResponderWrites(t *testing.T) {
	p, err := ResponderWritesAuditPolicy()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p, `users: ["`+ResponderUser+`"]`) {
		t.Errorf("the policy does not audit the responder:\n%s", p)
	}
	log := filepath.Join(t.TempDir(), "audit.log")
	lines := []string{
		`{"stage":"ResponseComplete","verb":"patch","requestURI":"/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/herd-protect-1?fieldManager=herd&force=true","user":{"username":"` + ResponderUser + `"},"objectRef":{"resource":"flowschemas","name":"herd-protect-1","apiGroup":"flowcontrol.apiserver.k8s.io"},"responseStatus":{"code":201},"requestReceivedTimestamp":"2026-01-01T10:00:00.000000Z","stageTimestamp":"2026-01-01T10:00:01.250000Z"}`,
		`{"stage":"ResponseComplete","verb":"patch","requestURI":"/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/herd-protect-1?dryRun=All","user":{"username":"` + ResponderUser + `"},"objectRef":{"resource":"flowschemas","name":"herd-protect-1"},"responseStatus":{"code":201}}`,
		`{"stage":"ResponseComplete","verb":"update","requestURI":"/apis/coordination.k8s.io/v1/namespaces/herd/leases/herd-responder","user":{"username":"` + ResponderUser + `"},"objectRef":{"resource":"leases","name":"herd-responder"},"responseStatus":{"code":200}}`,
		`{"stage":"ResponseComplete","verb":"list","requestURI":"/api/v1/pods","user":{"username":"` + ResponderUser + `"}}`,
		`{"stage":"ResponseStarted","verb":"patch","requestURI":"/x","user":{"username":"` + ResponderUser + `"}}`,
		`{"stage":"ResponseComplete","verb":"patch","requestURI":"/x","user":{"username":"someone"}}`,
		`not json`,
	}
	if err := os.WriteFile(log, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ws, err := WritesBy(log, ResponderUser)
	if err != nil || len(ws) != 3 {
		t.Fatalf("WritesBy: %v, %v; want 3 writes", ws, err)
	}
	if !ws[0].Mutated() || ws[0].Latency() != 1250*time.Millisecond || ws[0].Code() != 201 || !ws[0].On("flowschemas", "herd-protect-1") {
		t.Errorf("the apply: %+v (latency %v)", ws[0], ws[0].Latency())
	}
	if ws[1].Mutated() || !ws[1].DryRun() || ws[2].Mutated() || !ws[2].Bookkeeping() {
		t.Errorf("the dry run and the Lease count as mutations: %v", ws)
	}
}

// TestAlertmanagerConfig: the route carries the grouping and intervals asked
// for (the production drill's group_by ['...'] and 30 s group_wait), and
// HerdSynchronizedRelist its own repeat_interval (docs/install.md's).
func TestAlertmanagerConfig(t *testing.T) {
	var cfg struct {
		Route struct {
			GroupBy        []string `json:"group_by"`
			GroupWait      string   `json:"group_wait"`
			GroupInterval  string   `json:"group_interval"`
			RepeatInterval string   `json:"repeat_interval"`
			Routes         []struct {
				Matchers       []string `json:"matchers"`
				RepeatInterval string   `json:"repeat_interval"`
			} `json:"routes"`
		} `json:"route"`
	}
	y := AlertmanagerConfig("http://127.0.0.1:1/alerts", []string{"..."}, 30*time.Second, time.Minute, time.Hour, time.Minute)
	if err := yaml.Unmarshal([]byte(y), &cfg); err != nil {
		t.Fatal(err)
	}
	r := cfg.Route
	if len(r.GroupBy) != 1 || r.GroupBy[0] != "..." || r.GroupWait != "30s" || r.GroupInterval != "1m" || r.RepeatInterval != "1h" {
		t.Errorf("route %+v\n%s", r, y)
	}
	if len(r.Routes) != 1 || len(r.Routes[0].Matchers) != 1 || r.Routes[0].Matchers[0] != `alertname="HerdSynchronizedRelist"` || r.Routes[0].RepeatInterval != "1m" {
		t.Errorf("held route %+v\n%s", r.Routes, y)
	}
	if y := AlertmanagerConfig("http://127.0.0.1:1/alerts", nil, time.Second, time.Second, time.Minute, time.Minute); strings.Contains(y, "routes:") {
		t.Errorf("a held repeat equal to the repeat needs no route:\n%s", y)
	}
}
