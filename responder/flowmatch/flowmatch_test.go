package flowmatch

import (
	"reflect"
	"testing"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/apis/flowcontrol/bootstrap"

	"github.com/herd-k8s/herd/internal/nodeclient"
)

func TestSchemaMatches(t *testing.T) {
	rule := func(rr flowcontrolv1.ResourcePolicyRule) *flowcontrolv1.FlowSchema {
		return &flowcontrolv1.FlowSchema{Spec: flowcontrolv1.FlowSchemaSpec{Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
			Subjects:      []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: "u"}}},
			ResourceRules: []flowcontrolv1.ResourcePolicyRule{rr},
		}}}}
	}
	u := User{Name: "u"}
	listPods := Request{Verb: "list", Resource: "pods"}
	cases := []struct {
		name string
		fs   *flowcontrolv1.FlowSchema
		u    User
		r    Request
		want bool
	}{
		{"exact", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, ClusterScope: true}), u, listPods, true},
		{"wildcards", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}, ClusterScope: true}), u, listPods, true},
		{"other user", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}, ClusterScope: true}), User{Name: "v"}, listPods, false},
		{"other verb", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"watch"}, APIGroups: []string{""}, Resources: []string{"pods"}, ClusterScope: true}), u, listPods, false},
		{"other group", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{"apps"}, Resources: []string{"pods"}, ClusterScope: true}), u, listPods, false},
		{"other resource", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"nodes"}, ClusterScope: true}), u, listPods, false},
		{"namespaced rule, cluster-wide request", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, Namespaces: []string{"*"}}), u, listPods, false},
		{"namespaced rule, namespaced request", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, Namespaces: []string{"*"}}), u, Request{Verb: "list", Resource: "pods", Namespace: "default"}, true},
		{"cluster rule, namespaced request", rule(flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, ClusterScope: true}), u, Request{Verb: "list", Resource: "pods", Namespace: "default"}, false},
		{"no rules", &flowcontrolv1.FlowSchema{}, u, listPods, false},
	}
	for _, tc := range cases {
		if got := Matches(tc.fs, tc.u, tc.r); got != tc.want {
			t.Errorf("%s: Matches = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSubjectsMatch(t *testing.T) {
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
		{"service account in another namespace", []flowcontrolv1.Subject{saSubject("default", "*")}, cilium, false},
		{"another service account", []flowcontrolv1.Subject{saSubject("kube-system", "coredns")}, cilium, false},
		{"service account subject, user not a service account", []flowcontrolv1.Subject{saSubject("kube-system", "*")}, kubelet, false},
		{"nil pointers are skipped", []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindUser}, {Kind: flowcontrolv1.SubjectKindGroup},
			{Kind: flowcontrolv1.SubjectKindServiceAccount}, userSubject("system:node:n1")}, kubelet, true},
		{"unknown kind", []flowcontrolv1.Subject{{Kind: "Robot", User: &flowcontrolv1.UserSubject{Name: "*"}}}, kubelet, false},
	}
	for _, tc := range cases {
		if got := SubjectsMatch(tc.subjects, tc.u); got != tc.want {
			t.Errorf("%s: SubjectsMatch = %v, want %v", tc.name, got, tc.want)
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
		{"system:serviceaccount:kube-system", []string{"system:authenticated"}},
		{"system:serviceaccount::x", []string{"system:authenticated"}},
		{"system:serviceaccount:x:", []string{"system:authenticated"}},
		{"system:kube-proxy", []string{"system:authenticated"}},
		{"alice", []string{"system:authenticated"}},
	}
	for _, tc := range cases {
		u := UserOf(tc.identity)
		if u.Name != tc.identity || !reflect.DeepEqual(u.Groups, tc.groups) {
			t.Errorf("UserOf(%q) = %+v, want groups %q", tc.identity, u, tc.groups)
		}
	}
}

func schema(name string, prec int32, level string, rules ...flowcontrolv1.PolicyRulesWithSubjects) *flowcontrolv1.FlowSchema {
	return &flowcontrolv1.FlowSchema{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: flowcontrolv1.FlowSchemaSpec{
		MatchingPrecedence: prec, PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: level}, Rules: rules}}
}

func rulesFor(subject flowcontrolv1.Subject, rr ...flowcontrolv1.ResourcePolicyRule) flowcontrolv1.PolicyRulesWithSubjects {
	return flowcontrolv1.PolicyRulesWithSubjects{Subjects: []flowcontrolv1.Subject{subject}, ResourceRules: rr}
}

var (
	allAuthenticated = flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: "system:authenticated"}}
	everything       = flowcontrolv1.ResourcePolicyRule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}, ClusterScope: true, Namespaces: []string{"*"}}
)

func TestNamespacesAndSubresources(t *testing.T) {
	u := User{Name: "u"}
	fs := schema("x", 100, "l", rulesFor(flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: "u"}},
		flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods", "nodes/status"}, Namespaces: []string{"kube-system"}}))
	for _, tc := range []struct {
		r    Request
		want bool
	}{
		{Request{Verb: "list", Resource: "pods", Namespace: "kube-system"}, true},
		{Request{Verb: "list", Resource: "pods", Namespace: "default"}, false},
		{Request{Verb: "list", Resource: "pods"}, false}, // no clusterScope
		{Request{Verb: "list", Resource: "nodes", Subresource: "status", Namespace: "kube-system"}, true},
		{Request{Verb: "list", Resource: "nodes", Namespace: "kube-system"}, false},
	} {
		if got := Matches(fs, u, tc.r); got != tc.want {
			t.Errorf("%+v: Matches = %v, want %v", tc.r, got, tc.want)
		}
	}
}

func TestSortedAndFirst(t *testing.T) {
	all := []*flowcontrolv1.FlowSchema{
		schema("late", 600, "l", rulesFor(allAuthenticated, everything)),
		schema("bb", 500, "l", rulesFor(allAuthenticated, everything)),
		schema("aa", 500, "l", rulesFor(allAuthenticated, everything)),
		schema("dangling", 1, "gone", rulesFor(allAuthenticated, everything)),
	}
	exists := func(l string) bool { return l == "l" }
	var names []string
	for _, fs := range Sorted(all, exists) {
		names = append(names, fs.Name)
	}
	if want := []string{"aa", "bb", "late"}; !reflect.DeepEqual(names, want) {
		t.Errorf("Sorted = %v, want %v (a schema whose level does not exist is ignored, ties go by name)", names, want)
	}
	if n := len(Sorted(all, nil)); n != 4 {
		t.Errorf("Sorted without a level check kept %d", n)
	}
	u, r := UserOf("alice"), Request{Verb: "list", Resource: "pods"}
	if fs := First(Sorted(all, exists), u, r, nil); fs == nil || fs.Name != "aa" {
		t.Errorf("First = %v, want aa", fs)
	}
	if fs := First(Sorted(all, exists), u, r, func(fs *flowcontrolv1.FlowSchema) bool { return fs.Name == "aa" }); fs == nil || fs.Name != "bb" {
		t.Errorf("First skipping aa = %v, want bb", fs)
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
	one := []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: "system:node:n1"}}}
	if SubjectsMatch(one, nodes) {
		t.Error("a schema for one node matches the group's representative")
	}
	var all []*flowcontrolv1.FlowSchema
	for _, fs := range append(append([]*flowcontrolv1.FlowSchema(nil), bootstrap.MandatoryFlowSchemas...), bootstrap.SuggestedFlowSchemas...) {
		all = append(all, fs.DeepCopy())
	}
	sorted := Sorted(all, nil)
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
		fs := First(sorted, Representative(tc.s), Request{Verb: "list", Resource: tc.resource}, nil)
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
	pods := Request{Verb: "list", Resource: "pods"}
	for _, tc := range []struct {
		name       string
		fs         *flowcontrolv1.FlowSchema
		s          nodeclient.Subject
		namespaced bool
		want       bool
	}{
		{"one node's name may be a member", schema("x", 1, "l", rulesFor(userSubject("system:node:n1"), listPods)), nodes, false, true},
		{"another group may hold members", schema("x", 1, "l", rulesFor(groupSubject("ops"), listPods)), nodes, false, true},
		{"a service account may be in a group", schema("x", 1, "l", rulesFor(saSubject("kube-system", "cilium"), listPods)), nodes, false, true},
		{"a service account's groups are known", schema("x", 1, "l", rulesFor(groupSubject("ops"), listPods)), cilium, false, false},
		{"its own namespace's group", schema("x", 1, "l", rulesFor(groupSubject("system:serviceaccounts:kube-system"), listPods)), cilium, false, true},
		{"another service account", schema("x", 1, "l", rulesFor(saSubject("kube-system", "coredns"), listPods)), cilium, false, false},
		{"a user by another name", schema("x", 1, "l", rulesFor(userSubject("alice"), listPods)), proxy, false, false},
		{"a user in a group herd does not know", schema("x", 1, "l", rulesFor(groupSubject("ops"), listPods)), proxy, false, true},
		{"a user is no service account", schema("x", 1, "l", rulesFor(saSubject("kube-system", "*"), listPods)), proxy, false, false},
		{"another verb", schema("x", 1, "l", rulesFor(groupSubject("*"), flowcontrolv1.ResourcePolicyRule{Verbs: []string{"watch"}, APIGroups: []string{"*"}, Resources: []string{"*"}, ClusterScope: true})), cilium, true, false},
		{"namespaced rule, cluster-wide LISTs only", schema("x", 1, "l", rulesFor(groupSubject("*"), nsPods)), cilium, false, false},
		{"namespaced rule, namespaced LISTs measured too", schema("x", 1, "l", rulesFor(groupSubject("*"), nsPods)), cilium, true, true},
	} {
		if got := MayOverlap(tc.fs, tc.s, pods, tc.namespaced); got != tc.want {
			t.Errorf("%s: MayOverlap = %v, want %v", tc.name, got, tc.want)
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
