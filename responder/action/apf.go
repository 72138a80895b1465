package action

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"

	"github.com/herd-k8s/herd/internal/nodeclient"
)

// How APF would match a request: which FlowSchema serves a user's request
// now. Isolate and quarantine place herd's schema before that one (its
// precedence bounds theirs); the logic follows the apiserver's own matching
// (k8s.io/apiserver@v0.36.3/pkg/util/flowcontrol/rule.go, matchesFlowSchema;
// apf_controller.go sorts the schemas by matchingPrecedence, then name, and
// the first that matches serves the request).

// The user a request comes from, as APF matches it.
type user struct {
	name   string
	groups []string
}

// userOf derives the groups an identity authenticates with in every
// cluster: service accounts and nodes get theirs from the authenticator.
func userOf(identity string) user {
	u := user{name: identity, groups: []string{"system:authenticated"}}
	if ns, _, ok := nodeclient.ServiceAccount(identity); ok {
		u.groups = append(u.groups, "system:serviceaccounts", "system:serviceaccounts:"+ns)
	} else if strings.HasPrefix(identity, nodeclient.NodeUserPrefix) {
		u.groups = append(u.groups, nodeclient.NodesGroup)
	}
	return u
}

// request is what APF matches on for a resource request.
type request struct {
	verb, group, resource string
	clusterScope          bool // no namespace: a LIST across all namespaces
}

// serving returns the FlowSchema that serves r from u now: the matching
// schema of lowest precedence (ties by name), skipping herd's own.
func serving(all []*flowcontrolv1.FlowSchema, u user, r request) *flowcontrolv1.FlowSchema {
	var best *flowcontrolv1.FlowSchema
	for _, fs := range all {
		if owned(fs) && strings.HasPrefix(fs.Name, "herd-") {
			continue
		}
		if !schemaMatches(fs, u, r) {
			continue
		}
		if best == nil || fs.Spec.MatchingPrecedence < best.Spec.MatchingPrecedence ||
			(fs.Spec.MatchingPrecedence == best.Spec.MatchingPrecedence && fs.Name < best.Name) {
			best = fs
		}
	}
	return best
}

func schemaMatches(fs *flowcontrolv1.FlowSchema, u user, r request) bool {
	for _, rule := range fs.Spec.Rules {
		if !subjectsMatch(rule.Subjects, u) {
			continue
		}
		for _, rr := range rule.ResourceRules {
			if has(rr.Verbs, r.verb) && has(rr.APIGroups, r.group) && has(rr.Resources, r.resource) &&
				(r.clusterScope && rr.ClusterScope || !r.clusterScope && len(rr.Namespaces) > 0) {
				return true
			}
		}
	}
	return false
}

func subjectsMatch(subjects []flowcontrolv1.Subject, u user) bool {
	for _, s := range subjects {
		switch s.Kind {
		case flowcontrolv1.SubjectKindUser:
			if s.User != nil && (s.User.Name == "*" || s.User.Name == u.name) {
				return true
			}
		case flowcontrolv1.SubjectKindGroup:
			if s.Group != nil && (s.Group.Name == "*" || has(u.groups, s.Group.Name)) {
				return true
			}
		case flowcontrolv1.SubjectKindServiceAccount:
			if s.ServiceAccount == nil {
				continue
			}
			ns, name, ok := nodeclient.ServiceAccount(u.name)
			if ok && ns == s.ServiceAccount.Namespace && (s.ServiceAccount.Name == "*" || s.ServiceAccount.Name == name) {
				return true
			}
		}
	}
	return false
}

func has(list []string, v string) bool {
	for _, x := range list {
		if x == "*" || x == v {
			return true
		}
	}
	return false
}

func fsRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "flowcontrol.apiserver.k8s.io/v1", Kind: "FlowSchema", Name: name}
}

func plRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "flowcontrol.apiserver.k8s.io/v1", Kind: "PriorityLevelConfiguration", Name: name}
}
