package action

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

func stale(name string) string { return evidence.StaleKubelet(name, "") }

func getNode(t *testing.T, f *fixture, name string) *corev1.Node {
	t.Helper()
	n, err := f.client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCordonFire(t *testing.T) {
	staleAlert := func(kv ...string) alert.Alert {
		return firing(append([]string{"alertname", "HerdStaleKubelet"}, kv...)...)
	}
	cases := []struct {
		name     string
		nodes    []runtime.Object
		evidence map[string][]evidence.Sample
		evErr    error
		cfg      func(*policy.Config)
		alert    alert.Alert
		want     want
		event    string // "Kind/name Reason" of the one Event
		patched  bool   // the node was patched
	}{
		{
			name:  "no node label",
			alert: staleAlert(),
			want:  want{result: Refused, guard: guard.LabelValidation, reason: "the alert has no node label"},
			event: "Lease/herd-responder HerdCordonRefused",
		},
		{
			name:  "empty node label",
			alert: staleAlert("node", ""),
			want:  want{result: Refused, guard: guard.LabelValidation, reason: "the alert has no node label"},
			event: "Lease/herd-responder HerdCordonRefused",
		},
		{
			name:  "node label is not a DNS name",
			alert: staleAlert("node", `n1"} or vector(1)`),
			want: want{result: Refused, guard: guard.LabelValidation,
				reason: `label node="n1\"} or vector(1)" is not valid: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
			event: "Lease/herd-responder HerdCordonRefused",
		},
		{
			name:  "implausible cluster label",
			nodes: []runtime.Object{node("n1")},
			alert: staleAlert("node", "n1", "cluster", "a\nb"),
			want:  want{result: Refused, guard: guard.LabelValidation, reason: "label cluster is not a plausible cluster name"},
			event: "Node/n1 HerdCordonRefused",
		},
		{
			name:  "Prometheus returns nothing",
			nodes: []runtime.Object{node("n1")},
			alert: staleAlert("node", "n1"),
			want: want{result: Refused, guard: guard.Verification,
				reason: `Prometheus does not confirm that the kubelet on n1 is stale: max(herd:stale_kubelet:max{node="n1"}) returned nothing`},
			event: "Node/n1 HerdCordonRefused",
		},
		{
			// Prometheus missed a scrape of herd's exporter: the stale
			// verdict answers nothing now but was there a moment ago. That
			// is unknown, not over: fail (Alertmanager retries), never refuse.
			name:     "the evidence vanished a moment ago",
			nodes:    []runtime.Object{node("n1")},
			evidence: map[string][]evidence.Sample{evidence.Recently(stale("n1"), "5m"): {sample(1)}},
			alert:    staleAlert("node", "n1"),
			want:     want{result: Failed, reason: "read evidence"},
			event:    "Node/n1 HerdCordonFailed",
		},
		{
			// It was there, but never above the threshold: a refusal, as when
			// it answers 0 now.
			name:     "the evidence vanished a moment ago, at 0",
			nodes:    []runtime.Object{node("n1")},
			evidence: map[string][]evidence.Sample{evidence.Recently(stale("n1"), "5m"): {sample(0)}},
			alert:    staleAlert("node", "n1"),
			want: want{result: Refused, guard: guard.Verification,
				reason: `Prometheus does not confirm that the kubelet on n1 is stale: max(herd:stale_kubelet:max{node="n1"}) returned nothing`},
			event: "Node/n1 HerdCordonRefused",
		},
		{
			name:     "Prometheus returns 0",
			nodes:    []runtime.Object{node("n1")},
			evidence: map[string][]evidence.Sample{stale("n1"): {sample(0)}},
			alert:    staleAlert("node", "n1"),
			want: want{result: Refused, guard: guard.Verification,
				reason: `Prometheus does not confirm that the kubelet on n1 is stale: max(herd:stale_kubelet:max{node="n1"}) = 0, not above 0`},
			event: "Node/n1 HerdCordonRefused",
		},
		{
			name:     "the cluster label scopes the evidence",
			nodes:    []runtime.Object{node("n1")},
			evidence: map[string][]evidence.Sample{stale("n1"): {sample(1)}},
			alert:    staleAlert("node", "n1", "cluster", "prod"),
			want: want{result: Refused, guard: guard.Verification,
				reason: `Prometheus does not confirm that the kubelet on n1 is stale: max(herd:stale_kubelet:max{cluster="prod", node="n1"}) returned nothing`},
			event: "Node/n1 HerdCordonRefused",
		},
		{
			name:  "Prometheus unavailable",
			nodes: []runtime.Object{node("n1")},
			evErr: fmt.Errorf("%w: connection refused", evidence.ErrUnavailable),
			alert: staleAlert("node", "n1"),
			want:  want{result: Failed, reason: "read evidence"},
			event: "Node/n1 HerdCordonFailed",
		},
		{
			name:     "node not found",
			evidence: map[string][]evidence.Sample{stale("n1"): {sample(1)}},
			alert:    staleAlert("node", "n1"),
			want:     want{result: Refused, guard: guard.Verification, reason: "node n1 does not exist"},
			event:    "Node/n1 HerdCordonRefused",
		},
		{
			name:     "control-plane node",
			nodes:    []runtime.Object{node("cp1", withLabel("node-role.kubernetes.io/control-plane", ""))},
			evidence: map[string][]evidence.Sample{stale("cp1"): {sample(1)}},
			alert:    staleAlert("node", "cp1"),
			want:     want{result: Refused, guard: guard.ControlPlane, reason: "node cp1 is a control-plane node (label node-role.kubernetes.io/control-plane)"},
			event:    "Node/cp1 HerdCordonRefused",
		},
		{
			name:     "legacy master label",
			nodes:    []runtime.Object{node("m1", withLabel("node-role.kubernetes.io/master", "true"))},
			evidence: map[string][]evidence.Sample{stale("m1"): {sample(1)}},
			alert:    staleAlert("node", "m1"),
			want:     want{result: Refused, guard: guard.ControlPlane, reason: "node m1 is a control-plane node (label node-role.kubernetes.io/master)"},
			event:    "Node/m1 HerdCordonRefused",
		},
		{
			name:     "exclude annotation",
			nodes:    []runtime.Object{node("n1", withAnnotation("herd.dev/exclude", ""))},
			evidence: map[string][]evidence.Sample{stale("n1"): {sample(1)}},
			alert:    staleAlert("node", "n1"),
			want:     want{result: Refused, guard: guard.Excluded, reason: "node n1 is annotated herd.dev/exclude"},
			event:    "Node/n1 HerdCordonRefused",
		},
		{
			name:     "configured exclude annotation",
			nodes:    []runtime.Object{node("n1", withAnnotation("example.com/keep", "yes"))},
			evidence: map[string][]evidence.Sample{stale("n1"): {sample(1)}},
			cfg:      func(c *policy.Config) { c.Guards.ExcludeAnnotation = "example.com/keep" },
			alert:    staleAlert("node", "n1"),
			want:     want{result: Refused, guard: guard.Excluded, reason: "node n1 is annotated example.com/keep"},
			event:    "Node/n1 HerdCordonRefused",
		},
		{
			name:     "nodeSelector mismatch",
			nodes:    []runtime.Object{node("n1", withLabel("pool", "general"))},
			evidence: map[string][]evidence.Sample{stale("n1"): {sample(1)}},
			cfg:      func(c *policy.Config) { c.Actions.Cordon.NodeSelector = map[string]string{"pool": "spot"} },
			alert:    staleAlert("node", "n1"),
			want:     want{result: Refused, guard: guard.Excluded, reason: `node n1 does not match actions.cordon.nodeSelector (pool="spot")`},
			event:    "Node/n1 HerdCordonRefused",
		},
		{
			name:     "nodeSelector label missing",
			nodes:    []runtime.Object{node("n1")},
			evidence: map[string][]evidence.Sample{stale("n1"): {sample(1)}},
			cfg:      func(c *policy.Config) { c.Actions.Cordon.NodeSelector = map[string]string{"pool": "spot"} },
			alert:    staleAlert("node", "n1"),
			want:     want{result: Refused, guard: guard.Excluded, reason: `node n1 does not match actions.cordon.nodeSelector (pool="spot")`},
			event:    "Node/n1 HerdCordonRefused",
		},
		{
			name:     "nodeSelector match",
			nodes:    []runtime.Object{node("n1", withLabel("pool", "spot"))},
			evidence: map[string][]evidence.Sample{stale("n1"): {sample(1)}},
			cfg:      func(c *policy.Config) { c.Actions.Cordon.NodeSelector = map[string]string{"pool": "spot"} },
			alert:    staleAlert("node", "n1"),
			want:     want{result: Applied, reason: "cordoned node n1 (1 of 1000 nodes now unschedulable, limit 100)"},
			event:    "Node/n1 HerdCordonApplied",
			patched:  true,
		},
		{
			name:     "already cordoned by herd",
			nodes:    []runtime.Object{node("n1", herdCordoned)},
			evidence: map[string][]evidence.Sample{stale("n1"): {sample(1)}},
			alert:    staleAlert("node", "n1"),
			want:     want{result: Noop, reason: "node n1 is already cordoned by herd (at 2025-03-04T09:00:00Z)"},
			event:    "Node/n1 HerdCordonNoop",
		},
		{
			name:     "cordoned by a person",
			nodes:    []runtime.Object{node("n1", unschedulable)},
			evidence: map[string][]evidence.Sample{stale("n1"): {sample(1)}},
			alert:    staleAlert("node", "n1"),
			want:     want{result: Noop, reason: "node n1 is already unschedulable, cordoned by someone else; herd leaves it as it is"},
			event:    "Node/n1 HerdCordonNoop",
		},
		{
			name:     "applied",
			nodes:    []runtime.Object{node("n1")},
			evidence: map[string][]evidence.Sample{stale("n1"): {sample(1)}},
			alert:    staleAlert("node", "n1"),
			want:     want{result: Applied, reason: "cordoned node n1 (1 of 1000 nodes now unschedulable, limit 100)"},
			event:    "Node/n1 HerdCordonApplied",
			patched:  true,
		},
		{
			name:     "dry run",
			nodes:    []runtime.Object{node("n1")},
			evidence: map[string][]evidence.Sample{stale("n1"): {sample(1)}},
			cfg:      func(c *policy.Config) { c.DryRun = true },
			alert:    staleAlert("node", "n1"),
			want:     want{result: DryRun, reason: "dry run: would have cordoned node n1 (1 of 1000 nodes now unschedulable, limit 100)"},
			event:    "Node/n1 HerdCordonDryRun",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.cfg, tc.nodes...)
			f.dryRunPatches()
			f.q.setAll(tc.evidence)
			f.q.all = tc.evErr
			c := &Cordon{Env: f.env}
			var before []*corev1.Node
			for _, o := range tc.nodes {
				before = append(before, getNode(t, f, o.(*corev1.Node).Name))
			}
			d := f.run(c.Fire(tc.alert))
			f.checkDecision(t, d, tc.want, tc.event)
			if d.Action != policy.ActionCordon || d.Alert != "HerdStaleKubelet" || d.Status != "firing" || d.Fingerprint != "fp-HerdStaleKubelet" ||
				!d.Time.Equal(t0) || d.DryRun != f.env.Config.DryRun {
				t.Errorf("decision header %+v", d)
			}
			if tc.want.result == Failed && (!errors.Is(d.Err, alert.ErrTransient) || !errors.Is(d.Err, evidence.ErrUnavailable)) {
				t.Errorf("Prometheus unavailable: err %v is not transient", d.Err)
			}
			patches := f.patches()
			wantPatches := 0
			if tc.patched || tc.want.result == DryRun {
				wantPatches = 1
			}
			if len(patches) != wantPatches {
				t.Fatalf("%d patches, want %d: %v", len(patches), wantPatches, f.writes())
			}
			if wantPatches == 1 {
				p := patches[0]
				if p.PatchType != types.ApplyPatchType || p.PatchOptions.FieldManager != FieldManager ||
					p.PatchOptions.Force == nil || !*p.PatchOptions.Force {
					t.Errorf("patch %s as %q, force %v", p.PatchType, p.PatchOptions.FieldManager, p.PatchOptions.Force)
				}
				wantDry := []string(nil)
				if f.env.Config.DryRun {
					wantDry = []string{"All"}
				}
				if !reflect.DeepEqual(p.PatchOptions.DryRun, wantDry) {
					t.Errorf("patch DryRun %q, want %q", p.PatchOptions.DryRun, wantDry)
				}
				var body map[string]any
				if err := json.Unmarshal(p.Patch, &body); err != nil {
					t.Fatal(err)
				}
				meta := body["metadata"].(map[string]any)
				if meta["resourceVersion"] != before[0].ResourceVersion || before[0].ResourceVersion == "" {
					t.Errorf("patch precondition resourceVersion %v, node's %q", meta["resourceVersion"], before[0].ResourceVersion)
				}
			}
			for i, o := range tc.nodes {
				after := getNode(t, f, o.(*corev1.Node).Name)
				if !tc.patched {
					if !reflect.DeepEqual(after, before[i]) {
						t.Errorf("node changed:\n%+v\nwas\n%+v", after, before[i])
					}
					continue
				}
				if !after.Spec.Unschedulable {
					t.Error("node is schedulable")
				}
				for k, v := range map[string]string{AnnotationCordonedBy: "herd-responder", AnnotationReason: "HerdStaleKubelet", AnnotationCordonedAt: "2025-03-04T10:00:00Z"} {
					if after.Annotations[k] != v {
						t.Errorf("annotation %s=%q, want %q", k, after.Annotations[k], v)
					}
				}
			}
		})
	}
}

// The alert's reason label goes into herd.dev/reason when it is a plain
// word, never when it could be anything.
func TestCordonReasonAnnotation(t *testing.T) {
	for _, tc := range []struct{ reason, want string }{
		{"", "HerdStaleKubelet"},
		{"no_heartbeat", "HerdStaleKubelet: no_heartbeat"},
		{"lease-expired", "HerdStaleKubelet: lease-expired"},
		{"x; kubectl delete", "HerdStaleKubelet"},
		{"UPPER", "HerdStaleKubelet"},
		{string(make([]byte, 100)), "HerdStaleKubelet"},
	} {
		f := newFixture(t, nil, node("n1"))
		f.q.set(stale("n1"), sample(1))
		d := f.run((&Cordon{Env: f.env}).Fire(firing("alertname", "HerdStaleKubelet", "node", "n1", "reason", tc.reason)))
		want{result: Applied}.check(t, d)
		if got := getNode(t, f, "n1").Annotations[AnnotationReason]; got != tc.want {
			t.Errorf("reason %q: annotation %q, want %q", tc.reason, got, tc.want)
		}
	}
}

// The blast-radius guard counts every unschedulable node and herd's own
// recent cordons; once it trips, cordon pauses.
func TestCordonFraction(t *testing.T) {
	var objs []runtime.Object
	for i := range 20 {
		objs = append(objs, node(fmt.Sprintf("n%d", i)))
	}
	f := newFixture(t, nil, objs...)
	// n0 is unschedulable, someone else's; 20 nodes at 0.1 allow 2.
	f.env.Nodes = nodeCounter{total: 20, unschedulable: []string{"n0"}}
	for i := range 20 {
		f.q.set(stale(fmt.Sprintf("n%d", i)), sample(1))
	}
	c := &Cordon{Env: f.env}
	fire := func(n string) Decision {
		return f.run(c.Fire(firing("alertname", "HerdStaleKubelet", "node", n)))
	}
	want{result: Applied, reason: "cordoned node n1 (2 of 20 nodes now unschedulable, limit 2)"}.check(t, fire("n1"))
	// The node counter has not seen n1's cordon yet; herd counts it anyway.
	want{result: Refused, guard: guard.MaxUnschedulableFraction,
		reason: "2 of 20 nodes are unschedulable (n0, n1); cordoning n2 would make 3, over guards.maxUnschedulableFraction 0.1 (at most 2); cordon pauses for guards.stormCooldown"}.check(t, fire("n2"))
	f.clock.Advance(time.Minute)
	want{result: Refused, guard: guard.StormCooldown,
		reason: "a guard refused cordon at 2025-03-04T10:00:00Z; cordon pauses until 2025-03-04T10:30:00Z (guards.stormCooldown)"}.check(t, fire("n3"))
	// n1 again: a no-op, not a refusal: it is cordoned.
	want{result: Noop, reason: "node n1 is already cordoned by herd (at 2025-03-04T10:00:00Z)"}.check(t, fire("n1"))
	// After the cooldown, with the counter now showing n1, still full.
	f.clock.Advance(30 * time.Minute)
	f.env.Nodes = nodeCounter{total: 20, unschedulable: []string{"n0", "n1"}}
	want{result: Refused, guard: guard.MaxUnschedulableFraction,
		reason: "2 of 20 nodes are unschedulable (n0, n1); cordoning n4 would make 3, over guards.maxUnschedulableFraction 0.1 (at most 2); cordon pauses for guards.stormCooldown"}.check(t, fire("n4"))
	// A person uncordons n0: room for one again once the cooldown passed.
	f.clock.Advance(30 * time.Minute)
	f.env.Nodes = nodeCounter{total: 20, unschedulable: []string{"n1"}}
	want{result: Applied, reason: "cordoned node n5 (2 of 20 nodes now unschedulable, limit 2)"}.check(t, fire("n5"))
	got := f.rec.reasons()
	wantEvents := []string{"Node/n1 HerdCordonApplied", "Node/n2 HerdCordonRefused", "Node/n3 HerdCordonRefused", "Node/n1 HerdCordonNoop",
		"Node/n4 HerdCordonRefused", "Node/n5 HerdCordonApplied"}
	if !reflect.DeepEqual(got, wantEvents) {
		t.Errorf("events\n%q\nwant\n%q", got, wantEvents)
	}
	for _, n := range []string{"n2", "n3", "n4"} {
		if getNode(t, f, n).Spec.Unschedulable {
			t.Errorf("%s was cordoned", n)
		}
	}
}

// A small cluster: floor(fraction × nodes) is 0, so herd never cordons.
func TestCordonFractionSmallCluster(t *testing.T) {
	f := newFixture(t, nil, node("n1"))
	f.env.Nodes = nodeCounter{total: 9}
	f.q.set(stale("n1"), sample(1))
	d := f.run((&Cordon{Env: f.env}).Fire(firing("alertname", "HerdStaleKubelet", "node", "n1")))
	want{result: Refused, guard: guard.MaxUnschedulableFraction,
		reason: "0 of 9 nodes are unschedulable (none); cordoning n1 would make 1, over guards.maxUnschedulableFraction 0.1 (at most 0); cordon pauses for guards.stormCooldown"}.check(t, d)
}

func TestCordonListsSomeNodes(t *testing.T) {
	f := newFixture(t, nil, node("n1"))
	f.env.Nodes = nodeCounter{total: 70, unschedulable: []string{"a", "b", "c", "d", "e", "f", "g"}}
	f.q.set(stale("n1"), sample(1))
	d := f.run((&Cordon{Env: f.env}).Fire(firing("alertname", "HerdStaleKubelet", "node", "n1")))
	want{result: Refused, guard: guard.MaxUnschedulableFraction,
		reason: "7 of 70 nodes are unschedulable (a, b, c, d, e and 2 more); cordoning n1 would make 8, over guards.maxUnschedulableFraction 0.1 (at most 7); cordon pauses for guards.stormCooldown"}.check(t, d)
}

func TestCordonBudget(t *testing.T) {
	var objs []runtime.Object
	for i := range 4 {
		objs = append(objs, node(fmt.Sprintf("n%d", i)))
	}
	f := newFixture(t, func(c *policy.Config) { c.Guards.MaxActionsPerHour[policy.ActionCordon] = 2 }, objs...)
	for i := range 4 {
		f.q.set(stale(fmt.Sprintf("n%d", i)), sample(1))
	}
	c := &Cordon{Env: f.env}
	fire := func(n string) Decision {
		return f.run(c.Fire(firing("alertname", "HerdStaleKubelet", "node", n)))
	}
	want{result: Applied}.check(t, fire("n0"))
	want{result: Applied}.check(t, fire("n1"))
	want{result: Refused, guard: guard.MaxActionsPerHour,
		reason: "2 cordon actions in the last hour, the limit is 2 (guards.maxActionsPerHour); pausing cordon for 30m0s"}.check(t, fire("n2"))
	want{result: Refused, guard: guard.StormCooldown}.check(t, fire("n3"))
	// No-ops and refusals before the budget spend nothing: an hour later
	// there are two again.
	f.clock.Advance(time.Hour)
	want{result: Noop}.check(t, fire("n0"))
	want{result: Applied}.check(t, fire("n2"))
	want{result: Applied}.check(t, fire("n3"))
}

func TestCordonNotLeader(t *testing.T) {
	f := newFixture(t, func(c *policy.Config) { c.Guards.MaxActionsPerHour[policy.ActionCordon] = 1 }, node("n1"))
	f.q.set(stale("n1"), sample(1))
	f.setLeader(false)
	c := &Cordon{Env: f.env}
	d := f.run(c.Fire(firing("alertname", "HerdStaleKubelet", "node", "n1")))
	want{result: Failed, reason: "cordon n1"}.check(t, d)
	if !errors.Is(d.Err, alert.ErrTransient) {
		t.Errorf("err %v is not transient", d.Err)
	}
	if len(f.patches()) != 0 || getNode(t, f, "n1").Spec.Unschedulable {
		t.Error("a replica that is not the leader wrote")
	}
	// The budget was refunded: the leader-to-be can act.
	f.setLeader(true)
	want{result: Applied}.check(t, f.run(c.Fire(firing("alertname", "HerdStaleKubelet", "node", "n1"))))
}

func TestCordonAPIErrors(t *testing.T) {
	cases := []struct {
		name      string
		verb      string
		err       error
		reason    string
		transient bool
	}{
		{"get: unavailable", "get", apierrors.NewServiceUnavailable("etcd"), "get node n1", true},
		{"get: forbidden", "get", apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "n1", errors.New("rbac")), "get node n1", false},
		{"patch: conflict", "patch", apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "n1", errors.New("rv")), "cordon n1", true},
		{"patch: too many requests", "patch", apierrors.NewTooManyRequests("slow down", 1), "cordon n1", true},
		{"patch: connection refused", "patch", errors.New("dial tcp 10.0.0.1:443: connect: connection refused"), "cordon n1", true},
		{"patch: invalid", "patch", apierrors.NewInvalid(schema.GroupKind{Kind: "Node"}, "n1", nil), "cordon n1", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *policy.Config) { c.Guards.MaxActionsPerHour[policy.ActionCordon] = 1 }, node("n1"))
			f.q.set(stale("n1"), sample(1))
			f.failOn(tc.verb, "nodes", tc.err)
			c := &Cordon{Env: f.env}
			d := f.run(c.Fire(firing("alertname", "HerdStaleKubelet", "node", "n1")))
			want{result: Failed, reason: tc.reason}.check(t, d)
			if errors.Is(d.Err, alert.ErrTransient) != tc.transient {
				t.Errorf("transient = %v, want %v (%v)", !tc.transient, tc.transient, d.Err)
			}
			if !errors.Is(d.Err, tc.err) {
				t.Errorf("err %v does not wrap %v", d.Err, tc.err)
			}
			if got := f.rec.reasons(); !reflect.DeepEqual(got, []string{"Node/n1 HerdCordonFailed"}) {
				t.Errorf("events %q", got)
			}
			if tc.verb == "patch" {
				// The failed patch gave the budget back.
				if r := f.env.Budget.Take(policy.ActionCordon); r != nil {
					t.Errorf("budget not refunded: %v", r)
				}
			}
		})
	}
}

func TestCordonNodeCountError(t *testing.T) {
	f := newFixture(t, nil, node("n1"))
	f.env.Nodes = nodeCounter{err: errNodesNotSynced}
	f.q.set(stale("n1"), sample(1))
	d := f.run((&Cordon{Env: f.env}).Fire(firing("alertname", "HerdStaleKubelet", "node", "n1")))
	want{result: Failed, reason: "count nodes"}.check(t, d)
	if !errors.Is(d.Err, alert.ErrTransient) || !errors.Is(d.Err, errNodesNotSynced) {
		t.Errorf("err %v", d.Err)
	}
}

// In dry-run mode nothing changes, and herd remembers what it would have
// done: the same node again is a no-op, the blast-radius guard counts it,
// and resolve "uncordons" it.
func TestCordonDryRun(t *testing.T) {
	var objs []runtime.Object
	for i := range 20 {
		objs = append(objs, node(fmt.Sprintf("n%d", i)))
	}
	f := newFixture(t, func(c *policy.Config) { c.DryRun = true }, objs...)
	f.dryRunPatches()
	f.env.Nodes = nodeCounter{total: 20, unschedulable: []string{"n0"}}
	for i := range 20 {
		f.q.set(stale(fmt.Sprintf("n%d", i)), sample(1))
	}
	c := &Cordon{Env: f.env}
	fire := func(n string) Decision {
		return f.run(c.Fire(firing("alertname", "HerdStaleKubelet", "node", n)))
	}
	d := fire("n1")
	want{result: DryRun, reason: "dry run: would have cordoned node n1 (2 of 20 nodes now unschedulable, limit 2)"}.check(t, d)
	if !d.DryRun {
		t.Error("decision DryRun false")
	}
	f.clock.Advance(10 * time.Minute)
	want{result: Noop, reason: "dry run: herd would already have cordoned node n1 at 2025-03-04T10:00:00Z"}.check(t, fire("n1"))
	want{result: Refused, guard: guard.MaxUnschedulableFraction, has: "(n0, n1)"}.check(t, fire("n2"))
	for _, p := range f.patches() {
		if !reflect.DeepEqual(p.PatchOptions.DryRun, []string{"All"}) {
			t.Errorf("patch without dryRun=All: %+v", p.PatchOptions)
		}
	}
	if n := len(f.patches()); n != 1 {
		t.Errorf("%d patches, want the one dry-run patch", n)
	}
	for i := range 20 {
		if n := getNode(t, f, fmt.Sprintf("n%d", i)); n.Spec.Unschedulable || len(n.Annotations) > 0 {
			t.Errorf("dry run changed node %s: %+v", n.Name, n)
		}
	}
	// Resolve forgets the would-be cordon without touching the node.
	r := f.run(c.Resolve(resolved("alertname", "HerdStaleKubelet", "node", "n1")))
	want{result: DryRun, reason: "dry run: would have uncordoned node n1, which herd would have cordoned"}.check(t, r)
	// Another resolve has nothing to forget; the node is not herd's.
	want{result: Noop, reason: "herd did not cordon node n1; it stays as it is"}.check(t,
		f.run(c.Resolve(resolved("alertname", "HerdStaleKubelet", "node", "n1"))))
	if n := len(f.patches()); n != 1 {
		t.Errorf("%d patches after resolve", n)
	}
	// An hour after a dry-run cordon, herd stops counting it.
	f2 := newFixture(t, func(c *policy.Config) { c.DryRun = true }, node("n1"))
	f2.dryRunPatches()
	f2.q.set(stale("n1"), sample(1))
	c2 := &Cordon{Env: f2.env}
	want{result: DryRun}.check(t, f2.run(c2.Fire(firing("alertname", "HerdStaleKubelet", "node", "n1"))))
	f2.clock.Advance(time.Hour)
	want{result: DryRun}.check(t, f2.run(c2.Fire(firing("alertname", "HerdStaleKubelet", "node", "n1"))))
}

func TestCordonResolve(t *testing.T) {
	// touched are managedFields of a person who re-cordoned the node or
	// edited herd's annotation after herd.
	recordon := managed("kubectl-cordon", "", `{"f:spec":{"f:unschedulable":{}}}`)
	editReason := managed("kubectl-edit", "", `{"f:metadata":{"f:annotations":{"f:herd.dev/reason":{}}}}`)
	herdOwn := managed(FieldManager, "", `{"f:metadata":{"f:annotations":{"f:herd.dev/cordoned-by":{},"f:herd.dev/reason":{},"f:herd.dev/cordoned-at":{}}},"f:spec":{"f:unschedulable":{}}}`)
	herdOwn.Operation = metav1.ManagedFieldsOperationApply
	kubeletStatus := managed("kubelet", "status", `{"f:status":{"f:conditions":{}}}`)
	taints := managed("node-lifecycle-controller", "", `{"f:spec":{"f:taints":{}}}`)
	otherAnnotation := managed("kubeadm", "", `{"f:metadata":{"f:annotations":{"f:kubeadm.alpha.kubernetes.io/cri-socket":{}}}}`)

	cases := []struct {
		name    string
		node    *corev1.Node
		cfg     func(*policy.Config)
		want    want
		event   string
		patched bool
	}{
		{
			name: "herd's cordon is undone", node: node("n1", herdCordoned, withManagedFields(herdOwn, kubeletStatus, taints, otherAnnotation)),
			want:  want{result: Applied, reason: "uncordoned node n1, which herd had cordoned at 2025-03-04T09:00:00Z"},
			event: "Node/n1 HerdUncordonApplied", patched: true,
		},
		{
			name: "a person's cordon stays", node: node("n1", unschedulable),
			want:  want{result: Noop, reason: "herd did not cordon node n1; it stays as it is"},
			event: "Node/n1 HerdUncordonNoop",
		},
		{
			name: "someone re-cordoned after herd", node: node("n1", herdCordoned, withManagedFields(herdOwn, recordon)),
			want: want{result: Refused, guard: guard.Ownership,
				reason: "node n1 was changed by kubectl-cordon after herd cordoned it; it stays cordoned for a person to decide"},
			event: "Node/n1 HerdUncordonRefused",
		},
		{
			name: "someone edited herd's annotation", node: node("n1", herdCordoned, withManagedFields(herdOwn, editReason)),
			want: want{result: Refused, guard: guard.Ownership,
				reason: "node n1 was changed by kubectl-edit after herd cordoned it; it stays cordoned for a person to decide"},
			event: "Node/n1 HerdUncordonRefused",
		},
		{
			name: "excluded since", node: node("n1", herdCordoned, withAnnotation("herd.dev/exclude", "investigating")),
			want: want{result: Refused, guard: guard.Excluded,
				reason: "node n1 is annotated herd.dev/exclude since herd cordoned it; a person decides"},
			event: "Node/n1 HerdUncordonRefused",
		},
		{
			name: "uncordoned by someone since", node: node("n1", herdCordoned, func(n *corev1.Node) { n.Spec.Unschedulable = false }),
			want: want{result: Refused, guard: guard.Ownership,
				reason: "node n1 is schedulable again: someone uncordoned it after herd; herd leaves it and its annotations alone"},
			event: "Node/n1 HerdUncordonRefused",
		},
		{
			name: "uncordonOnResolve false", node: node("n1", herdCordoned),
			cfg:   func(c *policy.Config) { c.Actions.Cordon.UncordonOnResolve = false },
			want:  want{result: Noop, reason: "actions.cordon.uncordonOnResolve is false: node n1 stays as it is"},
			event: "Node/n1 HerdUncordonNoop",
		},
		{
			name:  "node gone",
			want:  want{result: Noop, reason: "node n1 no longer exists"},
			event: "Node/n1 HerdUncordonNoop",
		},
		{
			name: "dry run", node: node("n1", herdCordoned),
			cfg:   func(c *policy.Config) { c.DryRun = true },
			want:  want{result: DryRun, reason: "dry run: would have uncordoned node n1, which herd had cordoned at 2025-03-04T09:00:00Z"},
			event: "Node/n1 HerdUncordonDryRun", patched: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var objs []runtime.Object
			if tc.node != nil {
				objs = append(objs, tc.node)
			}
			f := newFixture(t, tc.cfg, objs...)
			f.dryRunPatches()
			var before *corev1.Node
			if tc.node != nil {
				before = getNode(t, f, "n1")
				if !reflect.DeepEqual(before.ManagedFields, tc.node.ManagedFields) {
					t.Fatalf("the fake changed managedFields: %+v", before.ManagedFields)
				}
			}
			c := &Cordon{Env: f.env}
			d := f.run(c.Resolve(resolved("alertname", "HerdStaleKubelet", "node", "n1")))
			f.checkDecision(t, d, tc.want, tc.event)
			ps := f.patches()
			if !tc.patched {
				if len(ps) != 0 {
					t.Errorf("patched: %s", ps[0].Patch)
				}
				if before != nil && !reflect.DeepEqual(getNode(t, f, "n1"), before) {
					t.Error("node changed")
				}
				return
			}
			if len(ps) != 1 {
				t.Fatalf("%d patches", len(ps))
			}
			var body map[string]any
			if err := json.Unmarshal(ps[0].Patch, &body); err != nil {
				t.Fatal(err)
			}
			if rv := body["metadata"].(map[string]any)["resourceVersion"]; rv != before.ResourceVersion {
				t.Errorf("precondition %v, want %s", rv, before.ResourceVersion)
			}
			after := getNode(t, f, "n1")
			if f.env.Config.DryRun {
				if !reflect.DeepEqual(ps[0].PatchOptions.DryRun, []string{"All"}) || !reflect.DeepEqual(after, before) {
					t.Errorf("dry run: options %+v, node changed %v", ps[0].PatchOptions, !reflect.DeepEqual(after, before))
				}
				return
			}
			if after.Spec.Unschedulable {
				t.Error("still unschedulable")
			}
			for _, k := range []string{AnnotationCordonedBy, AnnotationReason, AnnotationCordonedAt} {
				if _, ok := after.Annotations[k]; ok {
					t.Errorf("annotation %s left", k)
				}
			}
		})
	}
}

// Fire then resolve: herd undoes its own cordon.
func TestCordonRoundTrip(t *testing.T) {
	f := newFixture(t, nil, node("n1", withAnnotation("keep", "me")))
	f.q.set(stale("n1"), sample(1))
	c := &Cordon{Env: f.env}
	want{result: Applied}.check(t, f.run(c.Fire(firing("alertname", "HerdStaleKubelet", "node", "n1"))))
	want{result: Applied}.check(t, f.run(c.Resolve(resolved("alertname", "HerdStaleKubelet", "node", "n1"))))
	n := getNode(t, f, "n1")
	if n.Spec.Unschedulable || !reflect.DeepEqual(n.Annotations, map[string]string{"keep": "me"}) {
		t.Errorf("node after round trip: unschedulable %v, annotations %v", n.Spec.Unschedulable, n.Annotations)
	}
	if got, wantEv := f.rec.reasons(), []string{"Node/n1 HerdCordonApplied", "Node/n1 HerdUncordonApplied"}; !reflect.DeepEqual(got, wantEv) {
		t.Errorf("events %q", got)
	}
}

func TestCordonResolveLabels(t *testing.T) {
	f := newFixture(t, nil)
	d := f.run((&Cordon{Env: f.env}).Resolve(resolved("alertname", "HerdStaleKubelet", "node", "N_1")))
	want{result: Refused, guard: guard.LabelValidation, has: `label node="N_1" is not valid`}.check(t, d)
	if got := f.rec.reasons(); !reflect.DeepEqual(got, []string{"Lease/herd-responder HerdUncordonRefused"}) {
		t.Errorf("events %q", got)
	}
}

func TestTouchedBy(t *testing.T) {
	cases := []struct {
		name   string
		fields []metav1.ManagedFieldsEntry
		want   string
	}{
		{"none", nil, ""},
		{"herd only", []metav1.ManagedFieldsEntry{managed("herd", "", `{"f:spec":{"f:unschedulable":{}}}`)}, ""},
		{"status subresource", []metav1.ManagedFieldsEntry{managed("kubelet", "status", `{"f:spec":{"f:unschedulable":{}}}`)}, ""},
		{"no fields", []metav1.ManagedFieldsEntry{{Manager: "x"}}, ""},
		{"taints", []metav1.ManagedFieldsEntry{managed("ctrl", "", `{"f:spec":{"f:taints":{}}}`)}, ""},
		{"unschedulable", []metav1.ManagedFieldsEntry{managed("kubectl", "", `{"f:spec":{"f:unschedulable":{}}}`)}, "kubectl"},
		{"cordoned-by", []metav1.ManagedFieldsEntry{managed("a", "", `{"f:metadata":{"f:annotations":{"f:herd.dev/cordoned-by":{}}}}`)}, "a"},
		{"cordoned-at", []metav1.ManagedFieldsEntry{managed("b", "", `{"f:metadata":{"f:annotations":{"f:herd.dev/cordoned-at":{}}}}`)}, "b"},
		{"other annotation", []metav1.ManagedFieldsEntry{managed("c", "", `{"f:metadata":{"f:annotations":{"f:herd.dev/exclude":{}}}}`)}, ""},
		{"invalid JSON", []metav1.ManagedFieldsEntry{managed("d", "", `{`)}, ""},
		{"first other wins", []metav1.ManagedFieldsEntry{
			managed("herd", "", `{"f:spec":{"f:unschedulable":{}}}`),
			managed("e", "", `{"f:spec":{"f:unschedulable":{}}}`),
			managed("f", "", `{"f:spec":{"f:unschedulable":{}}}`),
		}, "e"},
	}
	for _, tc := range cases {
		if got := touchedBy(&corev1.Node{ObjectMeta: metav1.ObjectMeta{ManagedFields: tc.fields}}); got != tc.want {
			t.Errorf("%s: touchedBy = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Concurrent cordons of different nodes do not both see room for one.
func TestCordonConcurrent(t *testing.T) {
	var objs []runtime.Object
	for i := range 10 {
		objs = append(objs, node(fmt.Sprintf("n%d", i)))
	}
	f := newFixture(t, func(c *policy.Config) { c.Guards.MaxActionsPerHour[policy.ActionCordon] = 100 }, objs...)
	f.env.Nodes = nodeCounter{total: 30} // 3 allowed
	for i := range 10 {
		f.q.set(stale(fmt.Sprintf("n%d", i)), sample(1))
	}
	c := &Cordon{Env: f.env}
	results := make(chan Decision, 10)
	for i := range 10 {
		go func() {
			results <- f.run(c.Fire(firing("alertname", "HerdStaleKubelet", "node", fmt.Sprintf("n%d", i))))
		}()
	}
	count := map[Result]int{}
	for range 10 {
		count[(<-results).Result]++
	}
	if count[Applied] != 3 || count[Refused] != 7 {
		t.Errorf("results %v, want 3 applied and 7 refused", count)
	}
}
