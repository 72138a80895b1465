package apfmatch

import (
	"reflect"
	"testing"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/herd-k8s/herd/internal/nodeclient"
)

// apiserverSchemas and apiserverLevels are what a kube-apiserver creates
// (Default).
func apiserverSchemas() []*flowcontrolv1.FlowSchema {
	schemas, _ := Default()
	return schemas
}

func apiserverLevels() []*flowcontrolv1.PriorityLevelConfiguration {
	_, levels := Default()
	return levels
}

func schema(name, level string, precedence int32, rule flowcontrolv1.PolicyRulesWithSubjects) *flowcontrolv1.FlowSchema {
	return &flowcontrolv1.FlowSchema{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: flowcontrolv1.FlowSchemaSpec{MatchingPrecedence: precedence, PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: level},
			Rules: []flowcontrolv1.PolicyRulesWithSubjects{rule}},
	}
}

// catchEverything matches every request of every authenticated user.
var catchEverything = flowcontrolv1.PolicyRulesWithSubjects{
	Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: "system:authenticated"}}},
	ResourceRules: []flowcontrolv1.ResourcePolicyRule{{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"},
		ClusterScope: true, Namespaces: []string{"*"}}},
}

// TestServingSuggestedFlowSchemas: which of the apiserver's own schemas,
// and so which level, serves the requests of node-side clients and their
// neighbours.
func TestServingSuggestedFlowSchemas(t *testing.T) {
	listPods := List("pods")
	cases := []struct {
		name      string
		user      User
		req       Request
		want      string
		wantLevel string
	}{
		{"cilium agent LISTs pods cluster-wide", UserOf("system:serviceaccount:kube-system:cilium"), listPods, "kube-system-service-accounts", "workload-high"},
		{"kube-proxy LISTs endpointslices", UserOf("system:serviceaccount:kube-system:kube-proxy"), List("endpointslices.discovery.k8s.io"), "kube-system-service-accounts", "workload-high"},
		{"kube-system SA gets a lease in its namespace", UserOf("system:serviceaccount:kube-system:cilium-operator"),
			Request{Verb: "get", APIGroup: "coordination.k8s.io", Resource: "leases", Namespace: "kube-system"}, "system-leader-election", "leader-election"},
		{"kube-system SA LISTs leases cluster-wide: not leader election", UserOf("system:serviceaccount:kube-system:cilium-operator"),
			List("leases.coordination.k8s.io"), "kube-system-service-accounts", "workload-high"},
		{"kubelet LISTs pods", UserOf("system:node:ip-10-0-3-17.eu-west-1.compute.internal"), listPods, "system-nodes", "system"},
		{"kubelet gets its node", UserOf("system:node:n1"), Request{Verb: "get", Resource: "nodes"}, "system-node-high", "node-high"},
		{"kubelet patches node status", UserOf("system:node:n1"), Request{Verb: "patch", Resource: "nodes", Subresource: "status"}, "system-node-high", "node-high"},
		{"kubelet renews its lease", UserOf("system:node:n1"), Request{Verb: "update", APIGroup: "coordination.k8s.io", Resource: "leases", Namespace: "kube-node-lease"}, "system-node-high", "node-high"},
		{"kubelet LISTs leases cluster-wide", UserOf("system:node:n1"), List("leases.coordination.k8s.io"), "system-nodes", "system"},
		{"calico in its own namespace", UserOf("system:serviceaccount:calico-system:calico-node"), listPods, "service-accounts", "workload-low"},
		{"a service account elsewhere", UserOf("system:serviceaccount:monitoring:prometheus"), listPods, "service-accounts", "workload-low"},
		{"a service account elsewhere, namespaced", UserOf("system:serviceaccount:monitoring:prometheus"), Request{Verb: "get", Resource: "configmaps", Namespace: "monitoring"}, "service-accounts", "workload-low"},
		{"kube-controller-manager", UserOf("system:kube-controller-manager"), listPods, "kube-controller-manager", "workload-high"},
		{"kube-scheduler", UserOf("system:kube-scheduler"), listPods, "kube-scheduler", "workload-high"},
		{"kube-scheduler gets a lease", UserOf("system:kube-scheduler"), Request{Verb: "get", APIGroup: "coordination.k8s.io", Resource: "leases", Namespace: "kube-system"}, "system-leader-election", "leader-election"},
		{"kube-proxy's own user", UserOf("system:kube-proxy"), listPods, "global-default", "global-default"},
		{"a person", UserOf("alice@example.com"), listPods, "global-default", "global-default"},
		{"system:masters", User{Name: "admin", Groups: []string{"system:masters", "system:authenticated"}}, listPods, "exempt", "exempt"},
		{"a malformed service account name is a plain user", UserOf("system:serviceaccount:kube-system"), listPods, "global-default", "global-default"},
		{"anonymous", UserOf("system:anonymous"), listPods, "global-default", "global-default"},
		{"unauthenticated", User{Name: "system:anonymous", Groups: []string{"system:unauthenticated"}}, listPods, "global-default", "global-default"},
	}
	all := apiserverSchemas()
	cfg := NewConfig(all, apiserverLevels(), nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := Serving(all, tc.user, tc.req, nil)
			if fs == nil || fs.Name != tc.want {
				t.Fatalf("Serving: %v, want %s", fs, tc.want)
			}
			got, level := cfg.Serve(tc.user, tc.req)
			if got.Name != tc.want || level != tc.wantLevel {
				t.Errorf("Serve: %s → %s, want %s → %s", got.Name, level, tc.want, tc.wantLevel)
			}
		})
	}
	// Probes are non-resource requests: exempt alone serves no resource
	// request of alice.
	if fs := Serving(all[:1], UserOf("alice"), listPods, nil); fs != nil {
		t.Errorf("exempt alone serves alice: %s", fs.Name)
	}
}

func TestServingOrderAndSkip(t *testing.T) {
	u := UserOf("system:node:n1")
	req := List("pods")
	herd := func(name string) *flowcontrolv1.FlowSchema {
		fs := schema(name, "herd-isolate", 450, catchEverything)
		fs.Labels = map[string]string{ManagedByLabel: ManagedByValue}
		return fs
	}
	cases := []struct {
		name  string
		extra []*flowcontrolv1.FlowSchema
		want  string
	}{
		{"suggested only", nil, "system-nodes"},
		{"herd's own guard is skipped", []*flowcontrolv1.FlowSchema{herd("herd-isolate-1")}, "system-nodes"},
		{"a herd-named schema that is not herd's counts", []*flowcontrolv1.FlowSchema{schema("herd-isolate-1", "x", 450, catchEverything)}, "herd-isolate-1"},
		{"a herd-labelled schema under another name counts", []*flowcontrolv1.FlowSchema{herd("custom")}, "custom"},
		{"ties go to the smaller name", []*flowcontrolv1.FlowSchema{schema("zz", "x", 450, catchEverything), schema("aa", "x", 450, catchEverything)}, "aa"},
		{"a later schema does not win", []*flowcontrolv1.FlowSchema{schema("late", "x", 600, catchEverything)}, "system-nodes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			all := append(apiserverSchemas(), tc.extra...)
			if fs := Serving(all, u, req, HerdGuard); fs == nil || fs.Name != tc.want {
				t.Errorf("served by %v, want %s", fs, tc.want)
			}
		})
	}
}

// TestConfig: what the apiserver digests (apf_controller.go): a dangling
// schema is ignored, the mandatory schemas and levels stand in, herd's
// guards are left out when asked.
func TestConfig(t *testing.T) {
	cilium := UserOf("system:serviceaccount:kube-system:cilium")
	listPods := List("pods")
	cases := []struct {
		name      string
		schemas   []*flowcontrolv1.FlowSchema
		levels    []*flowcontrolv1.PriorityLevelConfiguration
		skip      func(*flowcontrolv1.FlowSchema) bool
		want      string
		wantLevel string
	}{
		{name: "the apiserver's own", schemas: apiserverSchemas(), levels: apiserverLevels(), want: "kube-system-service-accounts", wantLevel: "workload-high"},
		{name: "a schema whose level is missing is ignored",
			schemas: append(apiserverSchemas(), schema("cni", "no-such-level", 450, catchEverything)), levels: apiserverLevels(),
			want: "kube-system-service-accounts", wantLevel: "workload-high"},
		{name: "a schema whose level exists serves",
			schemas: append(apiserverSchemas(), schema("cni", "workload-low", 450, catchEverything)), levels: apiserverLevels(),
			want: "cni", wantLevel: "workload-low"},
		{name: "nothing at all: the mandatory catch-all", want: "catch-all", wantLevel: "catch-all"},
		{name: "a schema to the mandatory exempt level without the level object",
			schemas: []*flowcontrolv1.FlowSchema{schema("mine", "exempt", 100, catchEverything)}, want: "mine", wantLevel: "exempt"},
		{name: "herd's guard skipped", schemas: append(apiserverSchemas(), func() *flowcontrolv1.FlowSchema {
			fs := schema("herd-protect-1", "herd-protect", 440, catchEverything)
			fs.Labels = map[string]string{ManagedByLabel: ManagedByValue}
			return fs
		}()), levels: append(apiserverLevels(), &flowcontrolv1.PriorityLevelConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "herd-protect"}}),
			skip: HerdGuard, want: "kube-system-service-accounts", wantLevel: "workload-high"},
		{name: "herd's guard counted when not skipped", schemas: append(apiserverSchemas(), func() *flowcontrolv1.FlowSchema {
			fs := schema("herd-protect-1", "herd-protect", 440, catchEverything)
			fs.Labels = map[string]string{ManagedByLabel: ManagedByValue}
			return fs
		}()), levels: append(apiserverLevels(), &flowcontrolv1.PriorityLevelConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "herd-protect"}}),
			want: "herd-protect-1", wantLevel: "herd-protect"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := NewConfig(tc.schemas, tc.levels, tc.skip)
			fs, level := c.Serve(cilium, listPods)
			if fs.Name != tc.want || level != tc.wantLevel {
				t.Errorf("Serve = %s → %s, want %s → %s", fs.Name, level, tc.want, tc.wantLevel)
			}
			if c.Level(level) == nil {
				t.Errorf("Level(%q) = nil", level)
			}
		})
	}
}

func TestClassOf(t *testing.T) {
	named := schema("one-node", "workload-low", 300, flowcontrolv1.PolicyRulesWithSubjects{
		Subjects:      []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: "system:node:special"}}},
		ResourceRules: catchEverything.ResourceRules,
	})
	c := NewConfig(append(apiserverSchemas(), named), apiserverLevels(), nil)
	cases := map[string]string{
		"system:node:n1":      "system:node:*",
		"system:node:n2":      "system:node:*",
		"system:node:special": "system:node:special", // a User subject names it
		"system:node:":        "system:node:",        // not a node name
		"system:serviceaccount:kube-system:cilium": "system:serviceaccount:kube-system:cilium",
		"alice": "alice",
	}
	for id, want := range cases {
		if got := c.ClassOf(id); got != want {
			t.Errorf("ClassOf(%q) = %q, want %q", id, got, want)
		}
	}
	// The class is sound: every kubelet of the class is served alike, the
	// named one is not.
	_, a := c.Serve(UserOf("system:node:n1"), List("pods"))
	_, b := c.Serve(UserOf("system:node:n2"), List("pods"))
	_, s := c.Serve(UserOf("system:node:special"), List("pods"))
	if a != b || a == s {
		t.Errorf("levels n1 %s, n2 %s, special %s: want n1 = n2 ≠ special", a, b, s)
	}
}

// TestMatches follows rule.go case by case, including where a looser
// reading would differ: a wildcard counts only as a list's sole member, a
// namespaced rule names its namespaces, a subresource is resource/sub.
func TestMatches(t *testing.T) {
	rule := func(rr flowcontrolv1.ResourcePolicyRule) *flowcontrolv1.FlowSchema {
		return &flowcontrolv1.FlowSchema{Spec: flowcontrolv1.FlowSchemaSpec{Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
			Subjects:      []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: "u"}}},
			ResourceRules: []flowcontrolv1.ResourcePolicyRule{rr},
		}}}}
	}
	u := User{Name: "u"}
	listPods := List("pods")
	inNS := func(ns string) Request { return Request{Verb: "list", Resource: "pods", Namespace: ns} }
	all := flowcontrolv1.ResourcePolicyRule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}, ClusterScope: true}
	kubeSystem := rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods", "nodes/status"}, Namespaces: []string{"kube-system"}})
	cases := []struct {
		name string
		fs   *flowcontrolv1.FlowSchema
		u    User
		r    Request
		want bool
	}{
		{"exact", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, ClusterScope: true}), u, listPods, true},
		{"wildcards", rule(all), u, listPods, true},
		{"other user", rule(all), User{Name: "v"}, listPods, false},
		{"other verb", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"watch"}, APIGroups: []string{""}, Resources: []string{"pods"}, ClusterScope: true}), u, listPods, false},
		{"other group", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{"apps"}, Resources: []string{"pods"}, ClusterScope: true}), u, listPods, false},
		{"other resource", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"nodes"}, ClusterScope: true}), u, listPods, false},
		{"a wildcard among names is a name, not a wildcard", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"get", "*"}, APIGroups: []string{"*"}, Resources: []string{"*"}, ClusterScope: true}), u, listPods, false},
		{"group of a dotted resource", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, ClusterScope: true}), u, List("endpointslices.discovery.k8s.io"), true},
		{"namespaced rule, cluster-wide request", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, Namespaces: []string{"*"}}), u, listPods, false},
		{"every namespace", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, Namespaces: []string{"*"}}), u, inNS("a"), true},
		{"the rule's namespace", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, Namespaces: []string{"a", "b"}}), u, inNS("b"), true},
		{"another namespace", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, Namespaces: []string{"a"}}), u, inNS("c"), false},
		{"cluster rule, namespaced request", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, ClusterScope: true}), u, inNS("a"), false},
		{"subresource named", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"patch"}, APIGroups: []string{""}, Resources: []string{"nodes/status"}, ClusterScope: true}), u, Request{Verb: "patch", Resource: "nodes", Subresource: "status"}, true},
		{"subresource not named", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"patch"}, APIGroups: []string{""}, Resources: []string{"nodes"}, ClusterScope: true}), u, Request{Verb: "patch", Resource: "nodes", Subresource: "status"}, false},
		{"no rules", &flowcontrolv1.FlowSchema{}, u, listPods, false},
		{"several resources, listed namespace", kubeSystem, u, inNS("kube-system"), true},
		{"several resources, unlisted namespace", kubeSystem, u, inNS("default"), false},
		{"several resources, no clusterScope", kubeSystem, u, listPods, false},
		{"several resources, subresource listed", kubeSystem, u, Request{Verb: "list", Resource: "nodes", Subresource: "status", Namespace: "kube-system"}, true},
		{"several resources, resource listed only with its subresource", kubeSystem, u, Request{Verb: "list", Resource: "nodes", Namespace: "kube-system"}, false},
	}
	for _, tc := range cases {
		if got := Matches(tc.fs, tc.u, tc.r); got != tc.want {
			t.Errorf("%s: Matches = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMatchesSubject(t *testing.T) {
	cilium := UserOf("system:serviceaccount:kube-system:cilium")
	kubelet := UserOf("system:node:n1")
	cases := []struct {
		name     string
		subjects []flowcontrolv1.Subject
		u        User
		want     bool
	}{
		{"none", nil, cilium, false},
		{"user by name", []flowcontrolv1.Subject{userSubject("system:node:n1")}, kubelet, true},
		{"user by another name", []flowcontrolv1.Subject{userSubject("system:node:n2")}, kubelet, false},
		{"user *", []flowcontrolv1.Subject{userSubject("*")}, kubelet, true},
		{"group", []flowcontrolv1.Subject{groupSubject("system:nodes")}, kubelet, true},
		{"group the user is not in", []flowcontrolv1.Subject{groupSubject("system:nodes")}, cilium, false},
		{"group *", []flowcontrolv1.Subject{groupSubject("*")}, cilium, true},
		{"all authenticated", []flowcontrolv1.Subject{groupSubject("system:authenticated")}, cilium, true},
		{"service accounts group", []flowcontrolv1.Subject{groupSubject("system:serviceaccounts")}, cilium, true},
		{"service accounts of the namespace", []flowcontrolv1.Subject{groupSubject("system:serviceaccounts:kube-system")}, cilium, true},
		{"service accounts of another namespace", []flowcontrolv1.Subject{groupSubject("system:serviceaccounts:default")}, cilium, false},
		{"service account", []flowcontrolv1.Subject{saSubject("kube-system", "cilium")}, cilium, true},
		{"service account *", []flowcontrolv1.Subject{saSubject("kube-system", "*")}, cilium, true},
		{"service account * of a namespace that is a prefix", []flowcontrolv1.Subject{saSubject("kube", "*")}, cilium, false},
		{"service account in another namespace", []flowcontrolv1.Subject{saSubject("default", "*")}, cilium, false},
		{"another service account", []flowcontrolv1.Subject{saSubject("kube-system", "coredns")}, cilium, false},
		{"service account subject, user not a service account", []flowcontrolv1.Subject{saSubject("kube-system", "*")}, kubelet, false},
		{"nil pointers are skipped", []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindUser}, {Kind: flowcontrolv1.SubjectKindGroup},
			{Kind: flowcontrolv1.SubjectKindServiceAccount}, userSubject("system:node:n1")}, kubelet, true},
		{"unknown kind", []flowcontrolv1.Subject{{Kind: "Robot", User: &flowcontrolv1.UserSubject{Name: "*"}}}, kubelet, false},
		{"anonymous is not authenticated", []flowcontrolv1.Subject{groupSubject("system:authenticated")}, UserOf("system:anonymous"), false},
		{"anonymous is unauthenticated", []flowcontrolv1.Subject{groupSubject("system:unauthenticated")}, UserOf("system:anonymous"), true},
	}
	for _, tc := range cases {
		if got := MatchesASubject(tc.u, tc.subjects); got != tc.want {
			t.Errorf("%s: MatchesASubject = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestUserOf(t *testing.T) {
	cases := []struct {
		identity string
		groups   []string
	}{
		{"system:serviceaccount:kube-system:cilium", []string{"system:authenticated", "system:serviceaccounts", "system:serviceaccounts:kube-system"}},
		{"system:serviceaccount:monitoring:prometheus-k8s", []string{"system:authenticated", "system:serviceaccounts", "system:serviceaccounts:monitoring"}},
		{"system:node:ip-10-0-3-17.eu-west-1.compute.internal", []string{"system:authenticated", "system:nodes"}},
		{"system:node:", []string{"system:authenticated"}},
		{"system:serviceaccount:kube-system", []string{"system:authenticated"}},
		{"system:serviceaccount::x", []string{"system:authenticated"}},
		{"system:serviceaccount:x:", []string{"system:authenticated"}},
		{"system:kube-proxy", []string{"system:authenticated"}},
		{"alice", []string{"system:authenticated"}},
		{"system:anonymous", []string{"system:unauthenticated"}},
		{"", []string{"system:unauthenticated"}},
	}
	for _, tc := range cases {
		u := UserOf(tc.identity)
		if u.Name != tc.identity || !reflect.DeepEqual(u.Groups, tc.groups) {
			t.Errorf("UserOf(%q) = %+v, want groups %q", tc.identity, u, tc.groups)
		}
	}
}

func userSubject(n string) flowcontrolv1.Subject {
	return flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: n}}
}

func groupSubject(n string) flowcontrolv1.Subject {
	return flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: n}}
}

func saSubject(ns, n string) flowcontrolv1.Subject {
	return flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: ns, Name: n}}
}

func rulesFor(subject flowcontrolv1.Subject, rr ...flowcontrolv1.ResourcePolicyRule) flowcontrolv1.PolicyRulesWithSubjects {
	return flowcontrolv1.PolicyRulesWithSubjects{Subjects: []flowcontrolv1.Subject{subject}, ResourceRules: rr}
}

// TestSorted: the apiserver's order (apf_controller.go): a schema Sorted
// does not keep is left out, ties go by name; Serving on the sorted
// schemas takes the first that matches and skip does not rule out.
func TestSorted(t *testing.T) {
	all := []*flowcontrolv1.FlowSchema{
		schema("late", "l", 600, catchEverything),
		schema("bb", "l", 500, catchEverything),
		schema("aa", "l", 500, catchEverything),
		schema("dangling", "gone", 1, catchEverything),
	}
	exists := func(fs *flowcontrolv1.FlowSchema) bool { return fs.Spec.PriorityLevelConfiguration.Name == "l" }
	var names []string
	for _, fs := range Sorted(all, exists) {
		names = append(names, fs.Name)
	}
	if want := []string{"aa", "bb", "late"}; !reflect.DeepEqual(names, want) {
		t.Errorf("Sorted = %v, want %v (a schema whose level does not exist is ignored, ties go by name)", names, want)
	}
	if n := len(Sorted(all, nil)); n != 4 {
		t.Errorf("Sorted keeping all kept %d", n)
	}
	u, r := UserOf("alice"), Request{Verb: "list", Resource: "pods"}
	if fs := Serving(Sorted(all, exists), u, r, nil); fs == nil || fs.Name != "aa" {
		t.Errorf("Serving = %v, want aa", fs)
	}
	if fs := Serving(Sorted(all, exists), u, r, func(fs *flowcontrolv1.FlowSchema) bool { return fs.Name == "aa" }); fs == nil || fs.Name != "bb" {
		t.Errorf("Serving skipping aa = %v, want bb", fs)
	}
	if !Precedes(500, "aa", 500, "bb") || Precedes(500, "bb", 500, "aa") || !Precedes(499, "zz", 500, "aa") {
		t.Error("Precedes does not order by precedence, then name")
	}
}

// TestRepresentative: a group stands for members whose names no schema
// singles out; each default measured identity is served where the
// apiserver's own configuration puts it.
func TestRepresentative(t *testing.T) {
	nodes := Representative(nodeclient.Subject{Group: "system:nodes"})
	if nodes.Name != "" || !reflect.DeepEqual(nodes.Groups, []string{"system:nodes", "system:authenticated"}) {
		t.Errorf("group representative %+v", nodes)
	}
	if MatchesASubject(nodes, []flowcontrolv1.Subject{userSubject("system:node:n1")}) {
		t.Error("a schema for one node matches the group's representative")
	}
	sorted := Sorted(apiserverSchemas(), nil)
	for _, tc := range []struct {
		s        nodeclient.Subject
		resource string
		want     string
	}{
		{nodeclient.Subject{Group: "system:nodes"}, "pods", "system-nodes"},
		{nodeclient.Subject{Group: "system:nodes"}, "nodes", "system-node-high"},
		{nodeclient.Subject{ServiceAccount: "kube-system:kube-proxy"}, "endpointslices", "kube-system-service-accounts"},
		{nodeclient.Subject{User: "system:kube-proxy"}, "services", "global-default"},
		{nodeclient.Subject{ServiceAccount: "calico-system:calico-node"}, "pods", "service-accounts"},
	} {
		fs := Serving(sorted, Representative(tc.s), Request{Verb: "list", Resource: tc.resource}, nil)
		if fs == nil || fs.Name != tc.want {
			t.Errorf("%s LIST %s: served by %v, want %s", tc.s.Identity(), tc.resource, fs, tc.want)
		}
	}
}

func TestMayOverlap(t *testing.T) {
	listPods := flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, ClusterScope: true}
	nsPods := flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, Namespaces: []string{"kube-system"}}
	nodes := nodeclient.Subject{Group: "system:nodes"}
	cilium := nodeclient.Subject{ServiceAccount: "kube-system:cilium"}
	proxy := nodeclient.Subject{User: "system:kube-proxy"}
	for _, tc := range []struct {
		name       string
		rule       flowcontrolv1.PolicyRulesWithSubjects
		s          nodeclient.Subject
		namespaced bool
		want       bool
	}{
		{"one node's name may be a member", rulesFor(userSubject("system:node:n1"), listPods), nodes, false, true},
		{"another group may hold members", rulesFor(groupSubject("ops"), listPods), nodes, false, true},
		{"a service account may be in a group", rulesFor(saSubject("kube-system", "cilium"), listPods), nodes, false, true},
		{"a service account's groups are known", rulesFor(groupSubject("ops"), listPods), cilium, false, false},
		{"its own namespace's group", rulesFor(groupSubject("system:serviceaccounts:kube-system"), listPods), cilium, false, true},
		{"another service account", rulesFor(saSubject("kube-system", "coredns"), listPods), cilium, false, false},
		{"a user by another name", rulesFor(userSubject("alice"), listPods), proxy, false, false},
		{"a user in a group herd does not know", rulesFor(groupSubject("ops"), listPods), proxy, false, true},
		{"a user is no service account", rulesFor(saSubject("kube-system", "*"), listPods), proxy, false, false},
		{"another verb", rulesFor(groupSubject("*"), flowcontrolv1.ResourcePolicyRule{Verbs: []string{"watch"}, APIGroups: []string{"*"}, Resources: []string{"*"}, ClusterScope: true}), cilium, true, false},
		{"namespaced rule, cluster-wide LISTs only", rulesFor(groupSubject("*"), nsPods), cilium, false, false},
		{"namespaced rule, namespaced LISTs measured too", rulesFor(groupSubject("*"), nsPods), cilium, true, true},
	} {
		if got := MayOverlap(schema("x", "l", 1, tc.rule), tc.s, Request{Verb: "list", Resource: "pods"}, tc.namespaced); got != tc.want {
			t.Errorf("%s: MayOverlap = %v, want %v", tc.name, got, tc.want)
		}
	}
}
