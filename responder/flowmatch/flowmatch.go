// Package flowmatch answers, from FlowSchema objects, the question the
// apiserver answers for every request: which FlowSchema serves it. herd's
// APF writes depend on the answer: isolate and quarantine place their
// schema before the one that serves a client now, and the measurement
// schemas copy its priority level and distinguisher and sit right before
// it, so that no request changes level.
//
// The semantics are the apiserver's (Kubernetes v1.36):
//   - k8s.io/apiserver@v0.36.3/pkg/util/flowcontrol/rule.go: a schema
//     matches when one of its rules has a subject matching the user and a
//     resource rule matching verb, API group, resource (with subresource)
//     and scope: a request without a namespace needs clusterScope, a
//     namespaced one a namespaces entry equal to its namespace or "*"; "*"
//     in verbs, groups, resources and user or group names matches all; a
//     service-account subject matches system:serviceaccount:NS:NAME, any
//     name in NS with name "*".
//   - apf_controller.go (digestFlowSchemasLocked): schemas whose priority
//     level does not exist are ignored; the rest are sorted by
//     matchingPrecedence, then name (k8s.io/apiserver@v0.36.3/pkg/util/
//     apihelpers/helpers.go, FlowSchemaSequence.Less); startRequest takes
//     the first that matches.
package flowmatch

import (
	"slices"
	"strings"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"

	"github.com/herd-k8s/herd/internal/nodeclient"
)

// User is a requester as APF sees it: its name and groups.
type User struct {
	Name   string
	Groups []string
}

// UserOf is the user an identity authenticates as in every cluster, with
// the groups its authenticator always gives: service accounts and nodes
// get theirs from the authenticator, everyone system:authenticated (the
// apiserver adds it to every authenticated user).
func UserOf(identity string) User {
	u := User{Name: identity, Groups: []string{"system:authenticated"}}
	if ns, _, ok := nodeclient.ServiceAccount(identity); ok {
		u.Groups = append(u.Groups, "system:serviceaccounts", "system:serviceaccounts:"+ns)
	} else if strings.HasPrefix(identity, nodeclient.NodeUserPrefix) {
		u.Groups = append(u.Groups, nodeclient.NodesGroup)
	}
	return u
}

// Representative is a user standing for every user a subject names: for a
// group, a member whose name no schema singles out (the empty name, which
// no User subject can hold) with the group and system:authenticated; for a
// user or service account, that user (UserOf).
func Representative(s nodeclient.Subject) User {
	if s.Group != "" {
		return User{Groups: []string{s.Group, "system:authenticated"}}
	}
	return UserOf(s.Identity())
}

// Request is what APF matches for a resource request. An empty Namespace
// is a request without one: a LIST across all namespaces, or of a
// cluster-scoped resource.
type Request struct {
	Verb, APIGroup, Resource, Subresource, Namespace string
}

// Matches reports whether fs matches a request of u (rule.go,
// matchesFlowSchema).
func Matches(fs *flowcontrolv1.FlowSchema, u User, r Request) bool {
	for _, rule := range fs.Spec.Rules {
		if !SubjectsMatch(rule.Subjects, u) {
			continue
		}
		for _, rr := range rule.ResourceRules {
			if ResourceRuleMatches(rr, r) {
				return true
			}
		}
	}
	return false
}

// SubjectsMatch reports whether one of subjects matches u (rule.go,
// matchesASubject).
func SubjectsMatch(subjects []flowcontrolv1.Subject, u User) bool {
	for _, s := range subjects {
		switch s.Kind {
		case flowcontrolv1.SubjectKindUser:
			if s.User != nil && (s.User.Name == flowcontrolv1.NameAll || s.User.Name == u.Name) {
				return true
			}
		case flowcontrolv1.SubjectKindGroup:
			if s.Group != nil && (s.Group.Name == flowcontrolv1.NameAll || slices.Contains(u.Groups, s.Group.Name)) {
				return true
			}
		case flowcontrolv1.SubjectKindServiceAccount:
			if s.ServiceAccount == nil {
				continue
			}
			ns, name, ok := nodeclient.ServiceAccount(u.Name)
			if ok && ns == s.ServiceAccount.Namespace && (s.ServiceAccount.Name == flowcontrolv1.NameAll || s.ServiceAccount.Name == name) {
				return true
			}
		}
	}
	return false
}

// ResourceRuleMatches reports whether rr matches r (rule.go,
// matchesResourcePolicyRule).
func ResourceRuleMatches(rr flowcontrolv1.ResourcePolicyRule, r Request) bool {
	res := r.Resource
	if r.Subresource != "" {
		res += "/" + r.Subresource
	}
	if !contains(rr.Verbs, r.Verb, flowcontrolv1.VerbAll) || !contains(rr.Resources, res, flowcontrolv1.ResourceAll) ||
		!contains(rr.APIGroups, r.APIGroup, flowcontrolv1.APIGroupAll) {
		return false
	}
	if r.Namespace == "" {
		return rr.ClusterScope
	}
	return contains(rr.Namespaces, r.Namespace, flowcontrolv1.NamespaceEvery)
}

// contains is rule.go's containsString: x is in list, or list is the
// wildcard alone (validation keeps the wildcard alone).
func contains(list []string, x, wildcard string) bool {
	if len(list) == 1 && list[0] == wildcard {
		return true
	}
	return slices.Contains(list, x)
}

// Before reports whether the apiserver tries a before b: lower
// matchingPrecedence first, then by name.
func Before(a, b *flowcontrolv1.FlowSchema) bool {
	return Precedes(a.Spec.MatchingPrecedence, a.Name, b.Spec.MatchingPrecedence, b.Name)
}

// Precedes reports whether a schema at (precA, nameA) is tried before one
// at (precB, nameB).
func Precedes(precA int32, nameA string, precB int32, nameB string) bool {
	if precA != precB {
		return precA < precB
	}
	return nameA < nameB
}

// Sorted returns the schemas the apiserver uses, in the order it tries
// them: those whose priority level exists (levelExists nil: all), by
// precedence then name.
func Sorted(all []*flowcontrolv1.FlowSchema, levelExists func(string) bool) []*flowcontrolv1.FlowSchema {
	out := make([]*flowcontrolv1.FlowSchema, 0, len(all))
	for _, fs := range all {
		if levelExists == nil || levelExists(fs.Spec.PriorityLevelConfiguration.Name) {
			out = append(out, fs)
		}
	}
	slices.SortFunc(out, func(a, b *flowcontrolv1.FlowSchema) int {
		switch {
		case Before(a, b):
			return -1
		case Before(b, a):
			return 1
		}
		return 0
	})
	return out
}

// First returns the first of sorted (Sorted's order) that matches, and
// skip does not rule out; nil when none does.
func First(sorted []*flowcontrolv1.FlowSchema, u User, r Request, skip func(*flowcontrolv1.FlowSchema) bool) *flowcontrolv1.FlowSchema {
	for _, fs := range sorted {
		if skip != nil && skip(fs) {
			continue
		}
		if Matches(fs, u, r) {
			return fs
		}
	}
	return nil
}

// MayOverlap reports whether fs may match some LIST of resource r (its
// Namespace ignored) by some user s names, in a request without a
// namespace and, with namespaced, in any namespace. It answers yes
// whenever it cannot rule a match out: a group's members and a user may
// be in groups herd does not know of, and a group's members have any name.
func MayOverlap(fs *flowcontrolv1.FlowSchema, s nodeclient.Subject, r Request, namespaced bool) bool {
	for _, rule := range fs.Spec.Rules {
		if !maySubjectsMatch(rule.Subjects, s) {
			continue
		}
		for _, rr := range rule.ResourceRules {
			q := r
			q.Namespace = ""
			if ResourceRuleMatches(rr, q) {
				return true
			}
			if namespaced && len(rr.Namespaces) > 0 {
				q.Namespace = rr.Namespaces[0]
				if rr.Namespaces[0] == flowcontrolv1.NamespaceEvery {
					q.Namespace = "default"
				}
				if ResourceRuleMatches(rr, q) {
					return true
				}
			}
		}
	}
	return false
}

func maySubjectsMatch(subjects []flowcontrolv1.Subject, s nodeclient.Subject) bool {
	if s.ServiceAccount != "" { // a service account's name and groups are known exactly
		return SubjectsMatch(subjects, Representative(s))
	}
	for _, sub := range subjects {
		switch sub.Kind {
		case flowcontrolv1.SubjectKindUser:
			// A group's members have any name.
			if sub.User != nil && (s.Group != "" || sub.User.Name == flowcontrolv1.NameAll || sub.User.Name == s.User) {
				return true
			}
		case flowcontrolv1.SubjectKindGroup:
			// Groups beyond the known ones are possible.
			if sub.Group != nil {
				return true
			}
		case flowcontrolv1.SubjectKindServiceAccount:
			// A group could hold a service account; a user subject is
			// validated not to be one.
			if sub.ServiceAccount != nil && s.Group != "" {
				return true
			}
		}
	}
	return false
}
