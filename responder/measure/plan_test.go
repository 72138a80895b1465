package measure

import (
	"reflect"
	"strings"
	"testing"

	"github.com/herd-k8s/herd/internal/apfmatch"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/herd-k8s/herd/internal/nodeclient"
	"github.com/herd-k8s/herd/responder/action"
	"github.com/herd-k8s/herd/responder/policy"
)

// apiserverConfig is what a kube-apiserver creates (apfmatch.Default),
// its levels by name.
func apiserverConfig() ([]*flowcontrolv1.FlowSchema, map[string]*flowcontrolv1.PriorityLevelConfiguration) {
	fss, pls := apfmatch.Default()
	levels := map[string]*flowcontrolv1.PriorityLevelConfiguration{}
	for _, pl := range pls {
		levels[pl.Name] = pl
	}
	return fss, levels
}

func measuring(clients ...policy.MeasuredClient) policy.Measurement {
	return policy.Measurement{Enabled: true, MaxFlowSchemas: 50, OwnerClusterRole: "herd-responder", Clients: clients}
}

var (
	cilium = policy.MeasuredClient{Role: "cni", Client: "cilium-agent", Subjects: []nodeclient.Subject{{ServiceAccount: "kube-system:cilium"}}, Resources: []string{"pods"}}
	nodes  = policy.MeasuredClient{Role: "kubelet", Client: "kubelet", Subjects: []nodeclient.Subject{{Group: "system:nodes"}}, Resources: []string{"pods"}}
)

func schema(name string, prec int32, level string, subject flowcontrolv1.Subject, rr flowcontrolv1.ResourcePolicyRule) *flowcontrolv1.FlowSchema {
	return &flowcontrolv1.FlowSchema{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: flowcontrolv1.FlowSchemaSpec{
		MatchingPrecedence: prec, PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: level},
		Rules: []flowcontrolv1.PolicyRulesWithSubjects{{Subjects: []flowcontrolv1.Subject{subject}, ResourceRules: []flowcontrolv1.ResourcePolicyRule{rr}}}}}
}

func herds(fs *flowcontrolv1.FlowSchema, ann ...string) *flowcontrolv1.FlowSchema {
	fs.Labels = map[string]string{action.ManagedByLabel: action.ManagedByValue}
	fs.Annotations = map[string]string{}
	for i := 0; i+1 < len(ann); i += 2 {
		fs.Annotations[ann[i]] = ann[i+1]
	}
	return fs
}

var (
	ciliumSA   = flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}}
	listPods   = flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, ClusterScope: true, Namespaces: []string{"*"}}
	everything = flowcontrolv1.ResourcePolicyRule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}, ClusterScope: true, Namespaces: []string{"*"}}
)

// TestPlanDefaults: every default measured identity, against the
// apiserver's own configuration, lands in the level and with the
// distinguisher that serve it now, immediately before that schema.
func TestPlanDefaults(t *testing.T) {
	all, levels := apiserverConfig()
	cfg := policy.Default().Measurement
	cfg.Enabled = true
	placements, remove := plan(cfg, all, levels)
	if len(placements) != cfg.Schemas() || len(remove) != 0 {
		t.Fatalf("%d placements (want %d), %d removals", len(placements), cfg.Schemas(), len(remove))
	}
	want := map[string]Placement{
		"group:system:nodes pods":     {Serving: "system-nodes", PriorityLevel: "system", Precedence: 500, Distinguisher: "ByUser", Namespaced: true},
		"group:system:nodes services": {Serving: "system-nodes", PriorityLevel: "system", Precedence: 500, Distinguisher: "ByUser", Namespaced: true},
		"system:kube-proxy services":  {Serving: "global-default", PriorityLevel: "global-default", Precedence: 9899, Distinguisher: "ByUser", Namespaced: true},
		"system:serviceaccount:kube-system:kube-proxy endpointslices.discovery.k8s.io": {Serving: "kube-system-service-accounts", PriorityLevel: "workload-high", Precedence: 900, Distinguisher: "ByNamespace", Namespaced: true},
		"system:serviceaccount:calico-system:calico-node pods":                         {Serving: "service-accounts", PriorityLevel: "workload-low", Precedence: 9000, Distinguisher: "ByUser", Namespaced: true},
		"system:serviceaccount:kube-system:cilium ciliumnodes.cilium.io":               {Serving: "kube-system-service-accounts", PriorityLevel: "workload-high", Precedence: 900, Distinguisher: "ByNamespace", Namespaced: true},
	}
	slots := map[string]bool{}
	for _, p := range placements {
		if p.Skip != "" {
			t.Errorf("%s skipped: %s", p.Key, p.Skip)
		}
		if slots[p.Slot] || slotIndex(p.Slot) < 1 || slotIndex(p.Slot) > cfg.MaxFlowSchemas {
			t.Errorf("%s: slot %q taken twice or out of range", p.Key, p.Slot)
		}
		slots[p.Slot] = true
		w, ok := want[p.Identity+" "+p.Resource]
		if !ok {
			continue
		}
		delete(want, p.Identity+" "+p.Resource)
		if got, w := viewOf(p), viewOf(w); got != w {
			t.Errorf("%s: %+v, want %+v", p.Key, got, w)
		}
	}
	if len(want) > 0 {
		t.Errorf("not planned: %v", want)
	}
}

func TestPlanPlacement(t *testing.T) {
	exempt := schema("custom-exempt", 100, "exempt", ciliumSA, listPods)
	namespacedOnly := schema("cilium-kube-system", 700, "workload-high", ciliumSA,
		flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, ClusterScope: true, Namespaces: []string{"kube-system"}})
	dangling := schema("cilium-nowhere", 100, "no-such-level", ciliumSA, listPods)
	isolate := herds(schema("herd-isolate-1", 450, "herd-isolate", ciliumSA, listPods), action.AnnotationAction, "isolate")
	// A protect schema at the serving schema's precedence, named after
	// herd-measure-N: the measurement schema may go neither before it (it
	// would take protect's requests) nor between it and the serving schema.
	protectTie := herds(schema("herd-protect-1", 900, "herd-protect", ciliumSA, listPods), action.AnnotationAction, "protect")
	for _, tc := range []struct {
		name  string
		extra []*flowcontrolv1.FlowSchema
		want  Placement
	}{
		{"suggested", nil, Placement{Serving: "kube-system-service-accounts", PriorityLevel: "workload-high", Precedence: 900, Distinguisher: "ByNamespace", Namespaced: true}},
		{"served by an exempt schema: skipped", []*flowcontrolv1.FlowSchema{exempt},
			Placement{Serving: "custom-exempt", Skip: "served by FlowSchema custom-exempt in the exempt priority level exempt: herd never shadows a schema that routes to an exempt level"}},
		{"a schema whose level does not exist is ignored, as the apiserver does", []*flowcontrolv1.FlowSchema{dangling},
			Placement{Serving: "kube-system-service-accounts", PriorityLevel: "workload-high", Precedence: 900, Distinguisher: "ByNamespace", Namespaced: true}},
		{"serving schema takes one namespace: cluster-wide LISTs only", []*flowcontrolv1.FlowSchema{namespacedOnly},
			Placement{Serving: "cilium-kube-system", PriorityLevel: "workload-high", Precedence: 699}},
		{"a herd schema whose level does not exist is ignored too", []*flowcontrolv1.FlowSchema{herds(schema("herd-protect-2", 900, "gone", ciliumSA, listPods), action.AnnotationAction, "protect")},
			Placement{Serving: "kube-system-service-accounts", PriorityLevel: "workload-high", Precedence: 900, Distinguisher: "ByNamespace", Namespaced: true}},
		{"herd's isolate schema is looked past and keeps winning", []*flowcontrolv1.FlowSchema{isolate},
			Placement{Serving: "kube-system-service-accounts", PriorityLevel: "workload-high", Precedence: 900, Distinguisher: "ByNamespace", Namespaced: true}},
		{"herd's protect schema between: skipped", []*flowcontrolv1.FlowSchema{protectTie},
			Placement{Serving: "kube-system-service-accounts", Namespaced: true, Skip: "FlowSchema herd-protect-1, which may match these LISTs, sits right before kube-system-service-accounts (precedence 900): a schema placed before it would take its requests"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			all, levels := apiserverConfig()
			all = append(all, tc.extra...)
			for _, l := range []string{"herd-isolate", "herd-protect"} {
				levels[l] = &flowcontrolv1.PriorityLevelConfiguration{ObjectMeta: metav1.ObjectMeta{Name: l}, Spec: flowcontrolv1.PriorityLevelConfigurationSpec{Type: flowcontrolv1.PriorityLevelEnablementLimited}}
			}
			ps, _ := plan(measuring(cilium), all, levels)
			if len(ps) != 1 {
				t.Fatalf("%d placements", len(ps))
			}
			p := ps[0]
			got, want := viewOf(p), viewOf(tc.want)
			if got != want {
				t.Errorf("placement %+v\nwant      %+v", got, tc.want)
			}
		})
	}
}

// TestPlanBetween: a schema for one kubelet at system-nodes' precedence,
// named between herd-measure-1 and system-nodes, serves that kubelet's
// LISTs; a group schema before it would take them, so none is placed.
func TestPlanBetween(t *testing.T) {
	all, levels := apiserverConfig()
	one := schema("herd-node-one", 500, "workload-low", flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindUser,
		User: &flowcontrolv1.UserSubject{Name: "system:node:n1"}}, everything)
	ps, _ := plan(measuring(nodes), append(all, one), levels)
	if want := "FlowSchema herd-node-one, which may match these LISTs, sits right before system-nodes (precedence 500): a schema placed before it would take its requests"; ps[0].Skip != want {
		t.Errorf("skip %q\nwant %q", ps[0].Skip, want)
	}
	// At 501 it is after system-nodes: no matter.
	one.Spec.MatchingPrecedence = 501
	if ps, _ := plan(measuring(nodes), append(all, one), levels); ps[0].Skip != "" || ps[0].Precedence != 500 {
		t.Errorf("placement %+v", viewOf(ps[0]))
	}
	// A schema for one kubelet before system-nodes still serves it: the
	// measurement schema goes after it.
	one.Spec.MatchingPrecedence = 300
	if ps, _ := plan(measuring(nodes), append(all, one), levels); ps[0].Skip != "" || ps[0].Serving != "system-nodes" || ps[0].Precedence != 500 {
		t.Errorf("placement %+v", viewOf(ps[0]))
	}
}

func TestPlanSlots(t *testing.T) {
	all, levels := apiserverConfig()
	two := policy.MeasuredClient{Role: "cni", Client: "cilium-agent", Subjects: []nodeclient.Subject{{ServiceAccount: "kube-system:cilium"}}, Resources: []string{"pods", "nodes"}}
	ps, _ := plan(measuring(two, nodes), all, levels)
	var objs []*flowcontrolv1.FlowSchema
	for _, p := range ps {
		objs = append(objs, p.object(nil))
	}
	slotsOf := func(ps []Placement) map[string]string {
		out := map[string]string{}
		for _, p := range ps {
			out[p.Identity+" "+p.Resource] = p.Slot + p.Skip
		}
		return out
	}
	if got, want := slotsOf(ps), map[string]string{
		"system:serviceaccount:kube-system:cilium pods": "herd-measure-1", "system:serviceaccount:kube-system:cilium nodes": "herd-measure-2",
		"group:system:nodes pods": "herd-measure-3",
	}; !reflect.DeepEqual(got, want) {
		t.Errorf("first plan: %v, want %v", got, want)
	}

	t.Run("a key keeps its slot; a new one takes the lowest free; one no longer measured is removed", func(t *testing.T) {
		one := two
		one.Resources = []string{"nodes", "services"}
		ps, remove := plan(measuring(one, nodes), append(all, objs...), levels)
		if got, want := slotsOf(ps), map[string]string{
			"system:serviceaccount:kube-system:cilium nodes": "herd-measure-2", "system:serviceaccount:kube-system:cilium services": "herd-measure-1",
			"group:system:nodes pods": "herd-measure-3",
		}; !reflect.DeepEqual(got, want) {
			t.Errorf("slots %v, want %v", got, want)
		}
		if len(remove) != 0 {
			t.Errorf("removed %v: herd-measure-1 is rewritten for the new key, not removed", names(remove))
		}
	})
	t.Run("another's object under a slot name is never used", func(t *testing.T) {
		foreign := schema("herd-measure-1", 5000, "global-default", ciliumSA, listPods)
		ps, remove := plan(measuring(two), append(all, foreign), levels)
		if got, want := slotsOf(ps), map[string]string{
			"system:serviceaccount:kube-system:cilium pods": "herd-measure-2", "system:serviceaccount:kube-system:cilium nodes": "herd-measure-3",
		}; !reflect.DeepEqual(got, want) {
			t.Errorf("slots %v, want %v", got, want)
		}
		if len(remove) != 0 {
			t.Errorf("removed %v", names(remove))
		}
		// Its schema does serve cilium's pod LISTs (5000 is before
		// service-accounts), so that is what herd's copies now.
		if ps[0].Serving != "kube-system-service-accounts" {
			t.Errorf("serving %s", ps[0].Serving)
		}
	})
	t.Run("no free slot", func(t *testing.T) {
		cfg := measuring(two, nodes)
		cfg.MaxFlowSchemas = 2
		ps, _ := plan(cfg, all, levels)
		if !strings.HasPrefix(ps[2].Skip, "no free slot among herd-measure-1..2") {
			t.Errorf("third key: %+v", ps[2])
		}
	})
	t.Run("disabled: every measurement schema is removed, nothing else", func(t *testing.T) {
		cfg := measuring(two, nodes)
		cfg.Enabled = false
		isolate := herds(schema("herd-isolate-1", 450, "herd-isolate", ciliumSA, listPods), action.AnnotationAction, "isolate")
		ps, remove := plan(cfg, append(append(all, objs...), isolate), levels)
		if len(ps) != 0 || !reflect.DeepEqual(names(remove), []string{"herd-measure-1", "herd-measure-2", "herd-measure-3"}) {
			t.Errorf("placements %v, removed %v", ps, names(remove))
		}
	})
	t.Run("a schema that can no longer be placed is removed", func(t *testing.T) {
		exempt := schema("custom-exempt", 100, "exempt", ciliumSA, listPods)
		ps, remove := plan(measuring(two, nodes), append(append(all, objs...), exempt), levels)
		if ps[0].Skip == "" || ps[1].Skip != "" || !reflect.DeepEqual(names(remove), []string{"herd-measure-1"}) {
			t.Errorf("placements %+v, removed %v", ps, names(remove))
		}
	})
	t.Run("a slot above maxFlowSchemas is removed", func(t *testing.T) {
		cfg := measuring(two, nodes)
		cfg.MaxFlowSchemas = 2
		ps, remove := plan(cfg, append(all, objs...), levels)
		if got := names(remove); !reflect.DeepEqual(got, []string{"herd-measure-3"}) || ps[2].Skip == "" {
			t.Errorf("removed %v, third %+v", got, ps[2])
		}
	})
}

// view is a placement's outcome, printable.
type view struct {
	Serving, PriorityLevel, Distinguisher, Skip string
	Precedence                                  int32
	Namespaced                                  bool
}

func viewOf(p Placement) view {
	return view{Serving: p.Serving, PriorityLevel: p.PriorityLevel, Distinguisher: p.Distinguisher, Skip: p.Skip, Precedence: p.Precedence, Namespaced: p.Namespaced}
}

func names(fss []*flowcontrolv1.FlowSchema) []string {
	var out []string
	for _, fs := range fss {
		out = append(out, fs.Name)
	}
	return out
}

func TestObject(t *testing.T) {
	all, levels := apiserverConfig()
	ps, _ := plan(measuring(policy.MeasuredClient{Role: "kube-proxy", Client: "kube-proxy", Subjects: []nodeclient.Subject{{ServiceAccount: "kube-system:kube-proxy"}},
		Resources: []string{"endpointslices.discovery.k8s.io"}}), all, levels)
	owner := &metav1.OwnerReference{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "herd-responder", UID: "u-1"}
	fs := ps[0].object(owner)
	want := flowcontrolv1.FlowSchemaSpec{
		PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: "workload-high"},
		MatchingPrecedence:         900,
		DistinguisherMethod:        &flowcontrolv1.FlowDistinguisherMethod{Type: flowcontrolv1.FlowDistinguisherMethodByNamespaceType},
		Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
			Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "kube-proxy"}}},
			ResourceRules: []flowcontrolv1.ResourcePolicyRule{{Verbs: []string{"list"}, APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"},
				ClusterScope: true, Namespaces: []string{"*"}}},
		}},
	}
	if !reflect.DeepEqual(fs.Spec, want) {
		t.Errorf("spec %+v\nwant %+v", fs.Spec, want)
	}
	if fs.Name != "herd-measure-1" || fs.Labels[action.ManagedByLabel] != "herd" || fs.Labels[LabelMeasurement] != "true" ||
		fs.Annotations[flowcontrolv1.AutoUpdateAnnotationKey] != "false" || fs.Annotations[action.AnnotationIdentity] != "system:serviceaccount:kube-system:kube-proxy" ||
		fs.Annotations[AnnotationServing] != "kube-system-service-accounts" || len(fs.OwnerReferences) != 1 || fs.OwnerReferences[0] != *owner {
		t.Errorf("object %+v", fs.ObjectMeta)
	}
	if !isMeasurement(fs) || keyOf(fs) != ps[0].Key {
		t.Errorf("the object is not recognised as the key's measurement schema")
	}

	cur := fs.DeepCopy()
	cur.ResourceVersion, cur.UID = "7", "x"
	cur.Annotations["someone/else"] = "kept"
	cur.Status.Conditions = []flowcontrolv1.FlowSchemaCondition{{Type: flowcontrolv1.FlowSchemaConditionDangling, Status: flowcontrolv1.ConditionFalse}}
	if !upToDate(cur, ps[0].object(nil), "herd-responder") {
		t.Error("an object as herd wrote it, with the apiserver's status and another's annotation, is not up to date")
	}
	for name, change := range map[string]func(*flowcontrolv1.FlowSchema){
		"level":       func(fs *flowcontrolv1.FlowSchema) { fs.Spec.PriorityLevelConfiguration.Name = "workload-low" },
		"precedence":  func(fs *flowcontrolv1.FlowSchema) { fs.Spec.MatchingPrecedence = 899 },
		"annotation":  func(fs *flowcontrolv1.FlowSchema) { fs.Annotations[AnnotationServing] = "service-accounts" },
		"autoupdate":  func(fs *flowcontrolv1.FlowSchema) { fs.Annotations[flowcontrolv1.AutoUpdateAnnotationKey] = "true" },
		"owner":       func(fs *flowcontrolv1.FlowSchema) { fs.OwnerReferences = nil },
		"other owner": func(fs *flowcontrolv1.FlowSchema) { fs.OwnerReferences[0].Name = "other" },
	} {
		c := cur.DeepCopy()
		change(c)
		if upToDate(c, ps[0].object(nil), "herd-responder") {
			t.Errorf("%s changed, still up to date", name)
		}
	}
}
