package action

import (
	"reflect"
	"testing"

	"github.com/herd-k8s/herd/internal/apfmatch"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// apiserverSchemas are the FlowSchemas a kube-apiserver creates
// (apfmatch.Default).
func apiserverSchemas() []*flowcontrolv1.FlowSchema {
	schemas, _ := apfmatch.Default()
	return schemas
}

// catchEverything matches every request of every authenticated user.
var catchEverything = flowcontrolv1.PolicyRulesWithSubjects{
	Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: "system:authenticated"}}},
	ResourceRules: []flowcontrolv1.ResourcePolicyRule{{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"},
		ClusterScope: true, Namespaces: []string{"*"}}},
}

func TestSubjectsFor(t *testing.T) {
	sa := func(ns, n string) flowcontrolv1.Subject {
		return flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: ns, Name: n}}
	}
	nodes := flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: "system:nodes"}}
	userS := func(n string) flowcontrolv1.Subject {
		return flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: n}}
	}
	many := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, prefix+string(rune('a'+i%26))+string(rune('a'+i/26)))
		}
		return out
	}
	cases := []struct {
		name   string
		ids    []string
		want   []flowcontrolv1.Subject
		guard  guard.Guard
		reason string
	}{
		{name: "none", guard: guard.Verification,
			reason: "Prometheus names no identity of the client among herd's top relisting instances (herd_instance_relists): nothing to put in a FlowSchema"},
		{name: "one service account", ids: []string{"system:serviceaccount:kube-system:cilium"}, want: []flowcontrolv1.Subject{sa("kube-system", "cilium")}},
		{name: "service accounts sorted, deduplicated", ids: []string{"system:serviceaccount:kube-system:cilium", "system:serviceaccount:cilium:cilium", "system:serviceaccount:kube-system:cilium"},
			want: []flowcontrolv1.Subject{sa("cilium", "cilium"), sa("kube-system", "cilium")}},
		{name: "kubelets are one group", ids: many("system:node:n", 50), want: []flowcontrolv1.Subject{nodes}},
		{name: "users by name", ids: []string{"system:kube-proxy", "alice"}, want: []flowcontrolv1.Subject{userS("alice"), userS("system:kube-proxy")}},
		{name: "mixed", ids: []string{"system:node:n2", "system:serviceaccount:kube-system:cilium", "system:node:n1", "bob"},
			want: []flowcontrolv1.Subject{userS("bob"), nodes, sa("kube-system", "cilium")}},
		{name: "a measured group and the kubelets' identities are one subject", ids: []string{"group:system:nodes", "system:node:n1"}, want: []flowcontrolv1.Subject{nodes}},
		{name: "a measured group", ids: []string{"group:ops-agents"}, want: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: "ops-agents"}}}},
		{name: "a group of every caller", ids: []string{"group:system:authenticated"}, guard: guard.Verification,
			reason: `group "system:authenticated" takes in callers that are not one client's fleet: herd never isolates it`},
		{name: "an empty group", ids: []string{"group:"}, guard: guard.Verification,
			reason: `group "" takes in callers that are not one client's fleet: herd never isolates it`},
		{name: "a wildcard system name", ids: []string{"system:*"}, guard: guard.LabelValidation, reason: `identity "system:*" is not a user name`},
		// "*" is APF's wildcard for user and service-account names: a
		// subject made from it would throttle every user's LISTs.
		{name: "the user wildcard", ids: []string{"cilium", "*"}, guard: guard.LabelValidation, reason: `identity "*" is not a user name`},
		{name: "the service-account wildcard", ids: []string{"system:serviceaccount:kube-system:*"}, guard: guard.LabelValidation,
			reason: `identity "system:serviceaccount:kube-system:*" is not a user name`},
		{name: "20 identities", ids: many("user-", 20), want: func() []flowcontrolv1.Subject {
			var out []flowcontrolv1.Subject
			for _, id := range many("user-", 20) {
				out = append(out, userS(id))
			}
			return sortedSubjects(out)
		}()},
		{name: "21 identities", ids: many("user-", 21), guard: guard.Verification,
			reason: "the client runs as 21 different identities; herd puts at most 20 in one FlowSchema"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, r := subjectsFor(append([]string(nil), tc.ids...))
			if tc.guard != "" {
				if r == nil || r.Guard != tc.guard || r.Reason != tc.reason {
					t.Fatalf("refusal %+v, want %s: %s", r, tc.guard, tc.reason)
				}
				return
			}
			if r != nil {
				t.Fatal(r)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("subjects\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func sortedSubjects(s []flowcontrolv1.Subject) []flowcontrolv1.Subject {
	out := append([]flowcontrolv1.Subject(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].User.Name < out[i].User.Name {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestStormTargetOf(t *testing.T) {
	cases := []struct {
		name      string
		alertname string // HerdRelistStorm when ""
		labels    []string
		want      stormRequest
		guard     guard.Guard
		reason    string
	}{
		{name: "core resource", labels: []string{"role", "cni", "client", "cilium", "resource", "pods"},
			want: stormRequest{clientTarget: clientTarget{role: "cni", client: "cilium", resource: "pods", plural: "pods"}}},
		{name: "grouped resource", labels: []string{"role", "cni", "client", "cilium", "resource", "ciliumendpoints.cilium.io", "cluster", "prod"},
			want: stormRequest{clientTarget: clientTarget{role: "cni", client: "cilium", resource: "ciliumendpoints.cilium.io", plural: "ciliumendpoints", group: "cilium.io", cluster: "prod"}}},
		{name: "kubelet", labels: []string{"role", "kubelet", "client", "kubelet", "resource", "endpointslices.discovery.k8s.io"},
			want: stormRequest{clientTarget: clientTarget{role: "kubelet", client: "kubelet", resource: "endpointslices.discovery.k8s.io", plural: "endpointslices", group: "discovery.k8s.io"}}},
		{name: "no role", labels: []string{"client", "cilium", "resource", "pods"}, guard: guard.LabelValidation, reason: "the alert has no role label"},
		{name: "role other", labels: []string{"role", "other", "client", "cilium", "resource", "pods"}, guard: guard.LabelValidation,
			reason: `label role="other" is not valid: not a node-side client role`},
		{name: "unknown role", labels: []string{"role", "admin", "client", "cilium", "resource", "pods"}, guard: guard.LabelValidation,
			reason: `label role="admin" is not valid: not a node-side client role`},
		{name: "no client", labels: []string{"role", "cni", "resource", "pods"}, guard: guard.LabelValidation, reason: "the alert has no client label"},
		{name: "client other", labels: []string{"role", "cni", "client", "other", "resource", "pods"}, guard: guard.LabelValidation,
			reason: `client "other" is every unclassified caller, not one client`},
		{name: "client not a DNS label", labels: []string{"role", "cni", "client", "Cilium Agent", "resource", "pods"}, guard: guard.LabelValidation},
		{name: "client injection", labels: []string{"role", "cni", "client", `x"} or vector(1) #`, "resource", "pods"}, guard: guard.LabelValidation},
		{name: "no resource", labels: []string{"role", "cni", "client", "cilium"}, guard: guard.LabelValidation, reason: "the alert has no resource label"},
		{name: "resource other", labels: []string{"role", "cni", "client", "cilium", "resource", "other"}, guard: guard.LabelValidation,
			reason: `resource "other" is herd's overflow bucket, not one resource`},
		{name: "resource with a subresource", labels: []string{"role", "cni", "client", "cilium", "resource", "pods/status"}, guard: guard.LabelValidation,
			reason: `label resource="pods/status" is not valid: not a resource name (plural, or plural.group)`},
		{name: "resource uppercase", labels: []string{"role", "cni", "client", "cilium", "resource", "Pods"}, guard: guard.LabelValidation},
		{name: "resource *", labels: []string{"role", "cni", "client", "cilium", "resource", "*"}, guard: guard.LabelValidation},
		{name: "resource with an empty group", labels: []string{"role", "cni", "client", "cilium", "resource", "pods."}, guard: guard.LabelValidation},
		{name: "fast path", alertname: "HerdSynchronizedRelist", labels: []string{"role", "cni", "client", "cilium", "resource", "pods", "cost", "expensive", "shape", "all"},
			want: stormRequest{clientTarget: clientTarget{role: "cni", client: "cilium", resource: "pods", plural: "pods"}, wave: true, shape: "all"}},
		{name: "fast path without a shape", alertname: "HerdSynchronizedRelist", labels: []string{"role", "cni", "client", "cilium", "resource", "pods", "cost", "expensive"},
			want: stormRequest{clientTarget: clientTarget{role: "cni", client: "cilium", resource: "pods", plural: "pods"}, wave: true}},
		{name: "cheap synchronized relist", alertname: "HerdSynchronizedRelist", labels: []string{"role", "kubelet", "client", "kubelet", "resource", "pods", "cost", "cheap"},
			guard: guard.LabelValidation, reason: `a synchronized relist with cost="cheap" is reported, not isolated: only an expensive shape is (cost="expensive")`},
		{name: "synchronized relist without a cost", alertname: "HerdSynchronizedRelist", labels: []string{"role", "cni", "client", "cilium", "resource", "pods"},
			guard: guard.LabelValidation, reason: `a synchronized relist with cost="" is reported, not isolated: only an expensive shape is (cost="expensive")`},
		{name: "synchronized relist of an unknown shape", alertname: "HerdSynchronizedRelist", labels: []string{"role", "cni", "client", "cilium", "resource", "pods", "cost", "expensive", "shape", "x\"}"},
			guard: guard.LabelValidation, reason: `label shape="x\"}" is not one of all, selected, node, object, unknown`},
		{name: "cluster with a newline", labels: []string{"role", "cni", "client", "cilium", "resource", "pods", "cluster", "a\nb"}, guard: guard.LabelValidation,
			reason: "label cluster is not a plausible cluster name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.alertname
			if name == "" {
				name = "HerdRelistStorm"
			}
			req, r := NewIsolate(newFixture(t, nil).env).Request(firing(append([]string{"alertname", name}, tc.labels...)...))
			if tc.guard != "" {
				if r == nil || r.Guard != tc.guard || (tc.reason != "" && r.Reason != tc.reason) {
					t.Fatalf("refusal %+v, want %s: %s", r, tc.guard, tc.reason)
				}
				return
			}
			if r != nil {
				t.Fatal(r)
			}
			got := *req.(*stormRequest)
			got.env = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("target %+v, want %+v", got, tc.want)
			}
			if k := got.Key(); !reflect.DeepEqual(k, map[string]string{AnnotationAction: "isolate", AnnotationRole: tc.want.role,
				AnnotationClient: tc.want.client, AnnotationResource: tc.want.resource}) {
				t.Errorf("key %v", k)
			}
		})
	}
}

func TestClaim(t *testing.T) {
	key := map[string]string{AnnotationAction: "isolate", AnnotationClient: "cilium", AnnotationResource: "pods", AnnotationRole: "cni"}
	slot := func(name string, owned bool, ann map[string]string) *flowcontrolv1.FlowSchema {
		fs := &flowcontrolv1.FlowSchema{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
		if owned {
			fs.Labels = map[string]string{ManagedByLabel: ManagedByValue}
		}
		return fs
	}
	other := map[string]string{AnnotationAction: "isolate", AnnotationClient: "calico", AnnotationResource: "pods", AnnotationRole: "cni"}
	withExtra := func(m map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	cases := []struct {
		name     string
		mine     []*flowcontrolv1.FlowSchema
		want     string
		existing bool
		guard    guard.Guard
		reason   string
	}{
		{name: "no slots used", want: "herd-isolate-1"},
		{name: "the slot serving the key is reused", mine: []*flowcontrolv1.FlowSchema{slot("herd-isolate-1", true, withExtra(key, AnnotationExpiresAt, "x"))},
			want: "herd-isolate-1", existing: true},
		{name: "reuse wins over the first free slot", mine: []*flowcontrolv1.FlowSchema{slot("herd-isolate-3", true, key)}, want: "herd-isolate-3", existing: true},
		{name: "first free slot", mine: []*flowcontrolv1.FlowSchema{slot("herd-isolate-1", true, other), slot("herd-isolate-3", true, other)}, want: "herd-isolate-2"},
		{name: "a slot not owned by herd is skipped", mine: []*flowcontrolv1.FlowSchema{slot("herd-isolate-1", false, nil)}, want: "herd-isolate-2"},
		{name: "a slot not owned by herd is never reused, even with herd's annotations", mine: []*flowcontrolv1.FlowSchema{slot("herd-isolate-1", false, key)}, want: "herd-isolate-2"},
		{name: "all slots full", mine: []*flowcontrolv1.FlowSchema{slot("herd-isolate-1", true, other), slot("herd-isolate-2", false, nil), slot("herd-isolate-3", true, other)},
			guard: guard.MaxManagedFlowSchemas, reason: "all 3 FlowSchema slots herd-isolate-1..3 are in use (actions.isolate.maxManagedFlowSchemas)"},
		{name: "all slots full, one serves the key", mine: []*flowcontrolv1.FlowSchema{slot("herd-isolate-1", true, other), slot("herd-isolate-2", true, key), slot("herd-isolate-3", true, other)},
			want: "herd-isolate-2", existing: true},
		{name: "excluded", mine: []*flowcontrolv1.FlowSchema{slot("herd-isolate-2", true, withExtra(key, "herd.dev/exclude", ""))},
			guard: guard.Excluded, reason: "FlowSchema herd-isolate-2 is annotated herd.dev/exclude: a person holds it"},
		{name: "a partial key match is another target", mine: []*flowcontrolv1.FlowSchema{slot("herd-isolate-1", true, map[string]string{AnnotationAction: "isolate", AnnotationClient: "cilium"})},
			want: "herd-isolate-2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *policy.Config) { c.Actions.Isolate.MaxManagedFlowSchemas = 3 })
			fss := NewIsolate(f.env).SlotOps
			mine := map[string]*flowcontrolv1.FlowSchema{}
			for _, fs := range tc.mine {
				mine[fs.Name] = fs
			}
			name, existing, busy, r := fss.claim(mine, key)
			if busy {
				t.Fatal("busy with no write under way")
			}
			if tc.guard != "" {
				if r == nil || r.Guard != tc.guard || r.Reason != tc.reason || name != "" || existing != nil {
					t.Fatalf("claim = %q, %v, %+v; want %s: %s", name, existing, r, tc.guard, tc.reason)
				}
				return
			}
			if r != nil {
				t.Fatal(r)
			}
			if name != tc.want || (existing != nil) != tc.existing || (existing != nil && existing != mine[name]) {
				t.Errorf("claim = %q, existing %v; want %q, existing %v", name, existing, tc.want, tc.existing)
			}
		})
	}
}

func TestIsSlot(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{{"herd-isolate-1", true}, {"herd-isolate-10", true}, {"herd-isolate-11", false}, {"herd-isolate-0", false},
		{"herd-isolate-01", false}, {"herd-isolate", false}, {"herd-quarantine-1", false}, {"xherd-isolate-1", false}} {
		if got := NewIsolate(newFixture(t, nil).env).isSlot(tc.name); got != tc.want {
			t.Errorf("isSlot(%q) = %v", tc.name, got)
		}
	}
}

// A slot being written is taken: a second request for the same target is
// told so (busy), one for another target gets the next slot, and the slot
// is free again once the write is done.
func TestClaimWhileWriting(t *testing.T) {
	f := newFixture(t, func(c *policy.Config) { c.Actions.Isolate.MaxManagedFlowSchemas = 2 })
	o := NewIsolate(f.env).SlotOps
	key := map[string]string{AnnotationAction: "isolate", AnnotationClient: "cilium"}
	other := map[string]string{AnnotationAction: "isolate", AnnotationClient: "calico"}
	name, _, busy, r := o.claim(nil, key)
	if name != "herd-isolate-1" || busy || r != nil {
		t.Fatalf("first claim %q busy %v %v", name, busy, r)
	}
	if name, _, busy, r = o.claim(nil, key); name != "herd-isolate-1" || !busy || r != nil {
		t.Errorf("same target while writing: %q busy %v %v", name, busy, r)
	}
	if name, _, busy, r = o.claim(nil, other); name != "herd-isolate-2" || busy || r != nil {
		t.Errorf("another target while writing: %q busy %v %v", name, busy, r)
	}
	if _, _, _, r = o.claim(nil, map[string]string{AnnotationClient: "flannel"}); r == nil || r.Guard != guard.MaxManagedFlowSchemas {
		t.Errorf("a third target with both slots being written: %v", r)
	}
	o.release("herd-isolate-1")
	if name, _, busy, r = o.claim(nil, key); name != "herd-isolate-1" || busy || r != nil {
		t.Errorf("after the write: %q busy %v %v", name, busy, r)
	}
}
