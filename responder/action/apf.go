package action

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"

	"github.com/herd-k8s/herd/responder/flowmatch"
)

// How APF would match a request: which FlowSchema serves a user's request
// now. Isolate and quarantine place herd's schema before that one (its
// precedence bounds theirs). The matching is the apiserver's own, in
// package flowmatch (k8s.io/apiserver@v0.36.3/pkg/util/flowcontrol/rule.go
// and apf_controller.go).

// The user a request comes from, as APF matches it.
type user = flowmatch.User

// userOf derives the groups an identity authenticates with in every
// cluster: service accounts and nodes get theirs from the authenticator.
func userOf(identity string) user { return flowmatch.UserOf(identity) }

// request is what APF matches on for a resource request.
type request struct {
	verb, group, resource string
	clusterScope          bool // no namespace: a LIST across all namespaces
	// namespace of a namespaced request; "" stands for some ordinary
	// namespace (default).
	namespace string
}

func (r request) match() flowmatch.Request {
	m := flowmatch.Request{Verb: r.verb, APIGroup: r.group, Resource: r.resource}
	if !r.clusterScope {
		m.Namespace = r.namespace
		if m.Namespace == "" {
			m.Namespace = "default"
		}
	}
	return m
}

// serving returns the FlowSchema that serves r from u now: the matching
// schema of lowest precedence (ties by name), skipping herd's own.
func serving(all []*flowcontrolv1.FlowSchema, u user, r request) *flowcontrolv1.FlowSchema {
	return flowmatch.First(flowmatch.Sorted(all, nil), u, r.match(), herdOwn)
}

// herdOwn reports whether fs is one of herd's own schemas (an action's or
// a measurement's), which serving looks past: herd places its schemas
// relative to what the cluster's own configuration does.
func herdOwn(fs *flowcontrolv1.FlowSchema) bool {
	return owned(fs) && strings.HasPrefix(fs.Name, "herd-")
}

func fsRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "flowcontrol.apiserver.k8s.io/v1", Kind: "FlowSchema", Name: name}
}

func plRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "flowcontrol.apiserver.k8s.io/v1", Kind: "PriorityLevelConfiguration", Name: name}
}
