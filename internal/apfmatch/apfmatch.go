// Package apfmatch says which FlowSchema — and so which priority level — API
// Priority and Fairness gives a request, the way kube-apiserver decides it.
// APF does not write its choice into audit events (k8s.io/apiserver@v0.36.3
// pkg/server/filters/priority-and-fairness.go only logs it, in httplog), so
// herd works it out from the FlowSchemas and PriorityLevelConfigurations in
// force: the exporter to label its stampede forecast with the level that
// serves a client's LISTs, the responder to place its own FlowSchemas just
// before the one that serves a client now (isolate and quarantine put
// their schema before it; the measurement schemas copy its priority level
// and distinguisher and sit right before it, so that no request changes
// level). It is the one matcher of both binaries.
//
// The matching follows k8s.io/apiserver@v0.36.3/pkg/util/flowcontrol/rule.go
// (matchesFlowSchema and the functions under it) rule for rule; the order
// and the schemas that take part follow apf_controller.go
// (digestFlowSchemasLocked: a schema whose priority level does not exist is
// ignored, apihelpers.FlowSchemaSequence sorts the rest by
// matchingPrecedence and name, the mandatory exempt schema goes first and
// catch-all last when missing, and the first schema that matches serves the
// request).
package apfmatch

import (
	"slices"
	"strings"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"k8s.io/apiserver/pkg/apis/flowcontrol/bootstrap"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"

	"github.com/herd-k8s/herd/internal/nodeclient"
)

// User is who a request comes from, as APF matches it: a name and groups.
type User struct {
	Name   string
	Groups []string
}

// UserOf is the user an identity authenticates as in every cluster: the
// groups its authenticator gives it. Service-account tokens carry
// system:serviceaccounts and system:serviceaccounts:NAMESPACE
// (k8s.io/apiserver@v0.36.3 pkg/authentication/serviceaccount/util.go
// MakeGroupNames), kubelets system:nodes, every authenticated user
// system:authenticated (pkg/authentication/group/authenticated_group_adder.go)
// and an unauthenticated one system:unauthenticated
// (pkg/authentication/request/anonymous). Groups a particular cluster adds
// (OIDC claims, webhook authenticators) are not known from the name alone.
func UserOf(identity string) User {
	if nodeclient.Unauthenticated(identity) {
		return User{Name: identity, Groups: []string{nodeclient.AllUnauthenticated}}
	}
	u := User{Name: identity, Groups: []string{"system:authenticated"}}
	if ns, _, ok := nodeclient.ServiceAccount(identity); ok {
		u.Groups = append(u.Groups, "system:serviceaccounts", "system:serviceaccounts:"+ns)
	} else if _, ok := nodeclient.NodeName(identity); ok {
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

// Request is a resource request as APF matches it (the fields of the
// apiserver's RequestInfo that rule.go reads). Namespace "" is a
// cluster-scoped request, such as a LIST across all namespaces.
type Request struct {
	Verb, APIGroup, Resource, Subresource, Namespace string
}

// List is a cluster-wide LIST of resource, named as herd labels it:
// "pods" for the core group, "endpointslices.discovery.k8s.io" otherwise.
func List(resource string) Request {
	plural, group, _ := strings.Cut(resource, ".")
	return Request{Verb: "list", APIGroup: group, Resource: plural}
}

// Matches reports whether fs matches r from u (rule.go matchesFlowSchema):
// one of its rules has a subject u is, and a resource rule r satisfies.
func Matches(fs *flowcontrolv1.FlowSchema, u User, r Request) bool {
	for i := range fs.Spec.Rules {
		rule := &fs.Spec.Rules[i]
		if !MatchesASubject(u, rule.Subjects) {
			continue
		}
		for _, rr := range rule.ResourceRules {
			if MatchesResourceRule(r, rr) {
				return true
			}
		}
	}
	return false
}

// MatchesASubject reports whether one of subjects is u (rule.go's
// matchesASubject).
func MatchesASubject(u User, subjects []flowcontrolv1.Subject) bool {
	for _, s := range subjects {
		if matchesSubject(u, s) {
			return true
		}
	}
	return false
}

// matchesSubject is rule.go's matchesSubject.
func matchesSubject(u User, s flowcontrolv1.Subject) bool {
	switch s.Kind {
	case flowcontrolv1.SubjectKindUser:
		return s.User != nil && (s.User.Name == flowcontrolv1.NameAll || s.User.Name == u.Name)
	case flowcontrolv1.SubjectKindGroup:
		if s.Group == nil {
			return false
		}
		if s.Group.Name == "*" {
			return true
		}
		for _, g := range u.Groups {
			if g == s.Group.Name {
				return true
			}
		}
		return false
	case flowcontrolv1.SubjectKindServiceAccount:
		if s.ServiceAccount == nil {
			return false
		}
		if s.ServiceAccount.Name == flowcontrolv1.NameAll {
			return serviceAccountMatchesNamespace(s.ServiceAccount.Namespace, u.Name)
		}
		return serviceaccount.MatchesUsername(s.ServiceAccount.Namespace, s.ServiceAccount.Name, u.Name)
	}
	return false
}

// serviceAccountMatchesNamespace is rule.go's: the username is
// system:serviceaccount:NAMESPACE:anything.
func serviceAccountMatchesNamespace(namespace, username string) bool {
	rest, ok := strings.CutPrefix(username, serviceaccount.ServiceAccountUsernamePrefix)
	if !ok {
		return false
	}
	rest, ok = strings.CutPrefix(rest, namespace)
	return ok && strings.HasPrefix(rest, serviceaccount.ServiceAccountUsernameSeparator)
}

// MatchesResourceRule reports whether r satisfies rr (rule.go's
// matchesResourcePolicyRule).
func MatchesResourceRule(r Request, rr flowcontrolv1.ResourcePolicyRule) bool {
	resource := r.Resource
	if r.Subresource != "" {
		resource += "/" + r.Subresource
	}
	if !containsString(r.Verb, rr.Verbs, flowcontrolv1.VerbAll) ||
		!containsString(resource, rr.Resources, flowcontrolv1.ResourceAll) ||
		!containsString(r.APIGroup, rr.APIGroups, flowcontrolv1.APIGroupAll) {
		return false
	}
	if r.Namespace == "" {
		return rr.ClusterScope
	}
	return containsString(r.Namespace, rr.Namespaces, flowcontrolv1.NamespaceEvery)
}

// containsString is rule.go's: the wildcard counts only as the list's sole
// member (validation allows it nowhere else); otherwise x must be listed.
func containsString(x string, list []string, wildcard string) bool {
	if len(list) == 1 && list[0] == wildcard {
		return true
	}
	return slices.Contains(list, x)
}

// Before reports whether a is evaluated before b
// (apihelpers.FlowSchemaSequence: matchingPrecedence, then name).
func Before(a, b *flowcontrolv1.FlowSchema) bool {
	return Precedes(a.Spec.MatchingPrecedence, a.Name, b.Spec.MatchingPrecedence, b.Name)
}

// Precedes reports whether a schema at (precA, nameA) is evaluated before
// one at (precB, nameB): where a schema that does not exist yet would go.
func Precedes(precA int32, nameA string, precB int32, nameB string) bool {
	if precA != precB {
		return precA < precB
	}
	return nameA < nameB
}

// Sorted returns the schemas of all that keep keeps (nil: all), in the
// order the apiserver evaluates them (apf_controller.go
// digestFlowSchemasLocked sorts by apihelpers.FlowSchemaSequence). all is
// not modified.
func Sorted(all []*flowcontrolv1.FlowSchema, keep func(*flowcontrolv1.FlowSchema) bool) []*flowcontrolv1.FlowSchema {
	out := make([]*flowcontrolv1.FlowSchema, 0, len(all))
	for _, fs := range all {
		if keep == nil || keep(fs) {
			out = append(out, fs)
		}
	}
	slices.SortStableFunc(out, func(a, b *flowcontrolv1.FlowSchema) int {
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

// Serving is the schema of all that serves r from u: the first that
// matches in the apiserver's order, skipping those skip names (nil skips
// none); nil when none matches. all is used as given: no schema is added or
// dropped for its priority level (Config does that).
func Serving(all []*flowcontrolv1.FlowSchema, u User, r Request, skip func(*flowcontrolv1.FlowSchema) bool) *flowcontrolv1.FlowSchema {
	var best *flowcontrolv1.FlowSchema
	for _, fs := range all {
		if skip != nil && skip(fs) || best != nil && !Before(fs, best) || !Matches(fs, u, r) {
			continue
		}
		best = fs
	}
	return best
}

// Herd's own FlowSchemas: the guards its responder writes. Both sides leave
// them out when they ask what serves a client: the responder places its
// schema before the client's own, and the exporter forecasts what a
// stampede would do unguarded — so that a guard in place does not make the
// risk it guards against look gone.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "herd"
	// GuardPrefix starts the name of every FlowSchema slot herd's
	// responder writes (herd-isolate-N, herd-protect-N, herd-quarantine-N).
	GuardPrefix = "herd-"
)

// HerdGuard reports whether fs is one of herd's own guards: labelled as
// managed by herd and named as a slot.
func HerdGuard(fs *flowcontrolv1.FlowSchema) bool {
	return fs.Labels[ManagedByLabel] == ManagedByValue && strings.HasPrefix(fs.Name, GuardPrefix)
}

// Default is the configuration of an apiserver nobody changed: its
// mandatory and suggested FlowSchemas and priority levels
// (k8s.io/apiserver@v0.36.3/pkg/apis/flowcontrol/bootstrap/default.go), as
// copies the caller may change.
func Default() (schemas []*flowcontrolv1.FlowSchema, levels []*flowcontrolv1.PriorityLevelConfiguration) {
	for _, fs := range append(append([]*flowcontrolv1.FlowSchema(nil), bootstrap.MandatoryFlowSchemas...), bootstrap.SuggestedFlowSchemas...) {
		schemas = append(schemas, fs.DeepCopy())
	}
	for _, pl := range append(append([]*flowcontrolv1.PriorityLevelConfiguration(nil), bootstrap.MandatoryPriorityLevelConfigurations...), bootstrap.SuggestedPriorityLevelConfigurations...) {
		levels = append(levels, pl.DeepCopy())
	}
	return schemas, levels
}

// Config is the APF configuration in force as the apiserver digests it:
// schemas whose priority level does not exist are ignored, the mandatory
// exempt and catch-all schemas and levels stand in when missing, and the
// schemas are in matching order. It is immutable once built.
type Config struct {
	schemas []*flowcontrolv1.FlowSchema
	levels  map[string]*flowcontrolv1.PriorityLevelConfiguration
	// users are the user names that User subjects name: the only users
	// whose match can differ from another user's with the same groups.
	users map[string]bool
}

// NewConfig digests schemas and levels (from informers; not modified),
// leaving out the schemas skip names (nil: none).
func NewConfig(schemas []*flowcontrolv1.FlowSchema, levels []*flowcontrolv1.PriorityLevelConfiguration, skip func(*flowcontrolv1.FlowSchema) bool) *Config {
	c := &Config{levels: map[string]*flowcontrolv1.PriorityLevelConfiguration{}, users: map[string]bool{}}
	for _, pl := range levels {
		c.levels[pl.Name] = pl
	}
	// apf_controller.go digestConfigObjects: the mandatory levels are
	// supplied when missing.
	for _, pl := range bootstrap.MandatoryPriorityLevelConfigurations {
		if c.levels[pl.Name] == nil {
			c.levels[pl.Name] = pl
		}
	}
	// A dangling schema is ignored ("Ignoring FlowSchema ... because of
	// bad priority level reference"); the rest are sorted, then the
	// mandatory exempt schema goes first and catch-all last when missing.
	c.schemas = Sorted(schemas, func(fs *flowcontrolv1.FlowSchema) bool {
		return (skip == nil || !skip(fs)) && c.levels[fs.Spec.PriorityLevelConfiguration.Name] != nil
	})
	named := func(name string) func(*flowcontrolv1.FlowSchema) bool {
		return func(fs *flowcontrolv1.FlowSchema) bool { return fs.Name == name }
	}
	if !slices.ContainsFunc(c.schemas, named(flowcontrolv1.FlowSchemaNameExempt)) {
		c.schemas = append([]*flowcontrolv1.FlowSchema{bootstrap.MandatoryFlowSchemaExempt}, c.schemas...)
	}
	if !slices.ContainsFunc(c.schemas, named(flowcontrolv1.FlowSchemaNameCatchAll)) {
		c.schemas = append(c.schemas, bootstrap.MandatoryFlowSchemaCatchAll)
	}
	for _, fs := range c.schemas {
		for _, rule := range fs.Spec.Rules {
			for _, s := range rule.Subjects {
				if s.Kind == flowcontrolv1.SubjectKindUser && s.User != nil {
					c.users[s.User.Name] = true
				}
			}
		}
	}
	return c
}

// Serve is the schema that serves r from u and its priority level. The
// catch-all schema matches every user, so a request always has one; should
// a configuration lack it anyway, the apiserver falls back to catch-all
// (apf_controller.go, "no match found ... selecting catchAll"), and so does
// Serve.
func (c *Config) Serve(u User, r Request) (*flowcontrolv1.FlowSchema, string) {
	for _, fs := range c.schemas {
		if Matches(fs, u, r) {
			return fs, fs.Spec.PriorityLevelConfiguration.Name
		}
	}
	return bootstrap.MandatoryFlowSchemaCatchAll, flowcontrolv1.PriorityLevelConfigurationNameCatchAll
}

// Level is the priority level named name, nil when it does not exist.
func (c *Config) Level(name string) *flowcontrolv1.PriorityLevelConfiguration { return c.levels[name] }

// ClassOf is a key under which identities are served alike: two
// identities with the same key get the same schema for every request. A
// kubelet's identity (system:node:NAME) that no User subject names is
// served as every other such kubelet, so the fleet shares one key; any
// other identity is its own key. Callers cache per key: thousands of
// kubelets cost one evaluation.
func (c *Config) ClassOf(identity string) string {
	if _, ok := nodeclient.NodeName(identity); ok && !c.users[identity] {
		return nodeclient.NodeUserPrefix + "*"
	}
	return identity
}

// MayOverlap reports whether fs may match some LIST of resource r (its
// Namespace ignored) by some user s names, in a request without a
// namespace and, with namespaced, in any namespace. It answers yes
// whenever it cannot rule a match out: a group's members and a user may
// be in groups herd does not know of, and a group's members have any name.
// The responder's measurement asks it of the schemas between its own and
// the one it shadows.
func MayOverlap(fs *flowcontrolv1.FlowSchema, s nodeclient.Subject, r Request, namespaced bool) bool {
	for _, rule := range fs.Spec.Rules {
		if !maySubjectsMatch(rule.Subjects, s) {
			continue
		}
		for _, rr := range rule.ResourceRules {
			q := r
			q.Namespace = ""
			if MatchesResourceRule(q, rr) {
				return true
			}
			if namespaced && len(rr.Namespaces) > 0 {
				q.Namespace = rr.Namespaces[0]
				if rr.Namespaces[0] == flowcontrolv1.NamespaceEvery {
					q.Namespace = "default"
				}
				if MatchesResourceRule(q, rr) {
					return true
				}
			}
		}
	}
	return false
}

func maySubjectsMatch(subjects []flowcontrolv1.Subject, s nodeclient.Subject) bool {
	if s.ServiceAccount != "" { // a service account's name and groups are known exactly
		return MatchesASubject(Representative(s), subjects)
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
