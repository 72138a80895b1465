package measure

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/herd-k8s/herd/internal/apfmatch"
	"github.com/herd-k8s/herd/internal/nodeclient"
	"github.com/herd-k8s/herd/responder/action"
	"github.com/herd-k8s/herd/responder/policy"
)

// Key is one measured (identity, resource) of a client: one FlowSchema.
type Key struct {
	Role     string `json:"role"`
	Client   string `json:"client"`
	Identity string `json:"identity"`
	Resource string `json:"resource"`
}

func (k Key) String() string {
	return fmt.Sprintf("%s/%s %s LISTs of %s", k.Role, k.Client, k.Identity, k.Resource)
}

// Placement is where one key's FlowSchema goes, or why it has none.
type Placement struct {
	Key
	// Slot is the FlowSchema's name (herd-measure-N).
	Slot string `json:"slot,omitempty"`
	// Serving is the FlowSchema that serves these LISTs without herd's:
	// the measurement schema takes its priority level and distinguisher
	// and sits right before it.
	Serving       string `json:"serving,omitempty"`
	PriorityLevel string `json:"priorityLevel,omitempty"`
	Distinguisher string `json:"distinguisher,omitempty"`
	Precedence    int32  `json:"precedence,omitempty"`
	// Namespaced: namespaced LISTs are measured too (the serving schema
	// takes them in every namespace); else only LISTs without a namespace
	// (across all namespaces, or of a cluster-scoped resource).
	Namespaced bool `json:"namespaced"`
	// Skip says why the key has no FlowSchema ("" when it has one).
	Skip string `json:"skip,omitempty"`

	subject       nodeclient.Subject
	distinguisher *flowcontrolv1.FlowDistinguisherMethod
}

// keys lists what cfg measures, in configuration order.
func keys(cfg policy.Measurement) []Placement {
	if !cfg.Enabled {
		return nil
	}
	var out []Placement
	for _, c := range cfg.Clients {
		for _, s := range c.Subjects {
			for _, r := range c.Resources {
				out = append(out, Placement{Key: Key{Role: c.Role, Client: c.Client, Identity: s.Identity(), Resource: r}, subject: s})
			}
		}
	}
	return out
}

var slotRE = regexp.MustCompile(`^` + SlotPrefix + `-([1-9][0-9]{0,2})$`)

// slotIndex returns N of herd-measure-N, 0 when name is not a slot name.
func slotIndex(name string) int {
	m := slotRE.FindStringSubmatch(name)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func slotName(i int) string { return fmt.Sprintf("%s-%d", SlotPrefix, i) }

// isMeasurement reports whether fs is a measurement schema herd wrote.
func isMeasurement(fs *flowcontrolv1.FlowSchema) bool {
	return fs.Labels[action.ManagedByLabel] == action.ManagedByValue && fs.Annotations[action.AnnotationAction] == ActionMeasure &&
		slotIndex(fs.Name) > 0
}

func keyOf(fs *flowcontrolv1.FlowSchema) Key {
	a := fs.Annotations
	return Key{Role: a[action.AnnotationRole], Client: a[action.AnnotationClient], Identity: a[action.AnnotationIdentity], Resource: a[action.AnnotationResource]}
}

// plan is what the measurement schemas should be, given every FlowSchema
// and priority level in force: a placement per key (with its slot, or why
// it has none), and the measurement schemas to delete (herd's, no longer
// wanted or no longer placeable). It reads; it writes nothing.
func plan(cfg policy.Measurement, all []*flowcontrolv1.FlowSchema, levels map[string]*flowcontrolv1.PriorityLevelConfiguration) (placements []Placement, remove []*flowcontrolv1.FlowSchema) {
	placements = keys(cfg)
	mine := map[string]*flowcontrolv1.FlowSchema{} // herd's measurement schemas by name
	taken := map[string]bool{}                     // slot names anyone's object holds
	var others []*flowcontrolv1.FlowSchema         // every schema but herd's measurement ones
	for _, fs := range all {
		if isMeasurement(fs) {
			mine[fs.Name] = fs
			taken[fs.Name] = true
			continue
		}
		if slotIndex(fs.Name) > 0 {
			taken[fs.Name] = true // another's object under a slot name: never touched
		}
		others = append(others, fs)
	}

	// Slots: a key keeps the slot that already measures it, so that its
	// counters keep their flow_schema; new keys take the lowest free one.
	used := map[string]bool{}
	for i := range placements {
		for name, fs := range mine {
			if !used[name] && keyOf(fs) == placements[i].Key && slotIndex(name) <= cfg.MaxFlowSchemas {
				placements[i].Slot, used[name] = name, true
				break
			}
		}
	}
	next := 1
	for i := range placements {
		if placements[i].Slot != "" {
			continue
		}
		for ; next <= cfg.MaxFlowSchemas && (taken[slotName(next)] && !isFree(mine, used, slotName(next))); next++ {
		}
		if next > cfg.MaxFlowSchemas {
			placements[i].Skip = fmt.Sprintf("no free slot among %s-1..%d (measurement.maxFlowSchemas; a slot name held by an object herd did not write is never used)", SlotPrefix, cfg.MaxFlowSchemas)
			continue
		}
		placements[i].Slot, used[slotName(next)] = slotName(next), true
		next++
	}

	sorted := apfmatch.Sorted(others, func(fs *flowcontrolv1.FlowSchema) bool { return levels[fs.Spec.PriorityLevelConfiguration.Name] != nil })
	for i := range placements {
		if placements[i].Skip == "" {
			place(&placements[i], sorted, levels)
		}
	}

	keep := map[string]bool{}
	for _, p := range placements {
		if p.Skip == "" {
			keep[p.Slot] = true
		}
	}
	for _, name := range sortedKeys(mine) {
		if !keep[name] {
			remove = append(remove, mine[name])
		}
	}
	return placements, remove
}

// isFree: slot name is herd's measurement schema not used by a key yet
// (a stale one, which the key may take over and rewrite).
func isFree(mine map[string]*flowcontrolv1.FlowSchema, used map[string]bool, name string) bool {
	_, ok := mine[name]
	return ok && !used[name]
}

// place finds where p's FlowSchema goes among sorted (every schema the
// apiserver uses, herd's measurement ones left out, in its order):
//
//   - S, the schema that serves the LISTs without herd's schemas, is the
//     first that matches the subject's representative user's LIST of the
//     resource without a namespace, looking past herd's own (action and
//     measurement) schemas. Never an exempt one.
//   - The measurement schema sits immediately before S in the
//     apiserver's order, with S's priority level and distinguisher. Every
//     request it matches was either served by a schema before it (which
//     still serves it) or would have been served by S: it matches only the
//     subject's LISTs of the resource, and S matches all of them
//     (namespaced ones only when S takes every namespace).
//   - "Immediately": at S's precedence when its name sorts before S's,
//     else one below; and no schema that may match its requests lies
//     between it and S (herd's isolate, quarantine and protect schemas
//     included: they keep winning). Otherwise the key is skipped.
//
// A schema whose priority level does not exist is ignored, as the
// apiserver ignores it (sorted holds none).
func place(p *Placement, sorted []*flowcontrolv1.FlowSchema, levels map[string]*flowcontrolv1.PriorityLevelConfiguration) {
	req := apfmatch.List(p.Resource)
	u := apfmatch.Representative(p.subject)
	s := apfmatch.Serving(sorted, u, req, apfmatch.HerdGuard)
	if s == nil {
		p.Skip = "no FlowSchema serves these LISTs (the apiserver's catch-all is missing from the cache)"
		return
	}
	p.Serving = s.Name
	level := levels[s.Spec.PriorityLevelConfiguration.Name]
	if level.Spec.Type == flowcontrolv1.PriorityLevelEnablementExempt {
		p.Skip = fmt.Sprintf("served by FlowSchema %s in the exempt priority level %s: herd never shadows a schema that routes to an exempt level", s.Name, level.Name)
		return
	}
	p.Namespaced = everyNamespace(s, u, req)
	// Right before S: at its precedence when the slot's name sorts
	// before S's, else one below (any position further ahead would only
	// put more schemas between).
	prec := s.Spec.MatchingPrecedence
	if !apfmatch.Precedes(prec, p.Slot, s.Spec.MatchingPrecedence, s.Name) {
		prec--
	}
	if prec < 1 {
		p.Skip = fmt.Sprintf("FlowSchema %s is at precedence %d: nothing can go before it", s.Name, s.Spec.MatchingPrecedence)
		return
	}
	if b := between(sorted, prec, p.Slot, s, p.subject, req, p.Namespaced); b != nil {
		p.Skip = fmt.Sprintf("FlowSchema %s, which may match these LISTs, sits right before %s (precedence %d): a schema placed before it would take its requests", b.Name, s.Name, s.Spec.MatchingPrecedence)
		return
	}
	p.Precedence = prec
	p.PriorityLevel = level.Name
	if d := s.Spec.DistinguisherMethod; d != nil {
		p.distinguisher = d.DeepCopy()
		p.Distinguisher = string(d.Type)
	}
}

// everyNamespace reports whether s serves the LISTs in every namespace
// too: one of its rules matching u has a resource rule for the LISTs with
// namespaces ["*"].
func everyNamespace(s *flowcontrolv1.FlowSchema, u apfmatch.User, req apfmatch.Request) bool {
	for _, rule := range s.Spec.Rules {
		if !apfmatch.MatchesASubject(u, rule.Subjects) {
			continue
		}
		for _, rr := range rule.ResourceRules {
			q := req
			q.Namespace = "default"
			if len(rr.Namespaces) == 1 && rr.Namespaces[0] == flowcontrolv1.NamespaceEvery && apfmatch.MatchesResourceRule(q, rr) {
				return true
			}
		}
	}
	return false
}

// between returns a schema that lies after (prec, name) and before s in
// the apiserver's order and may match the LISTs; nil when none does.
func between(sorted []*flowcontrolv1.FlowSchema, prec int32, name string, s *flowcontrolv1.FlowSchema, sub nodeclient.Subject, req apfmatch.Request, namespaced bool) *flowcontrolv1.FlowSchema {
	for _, fs := range sorted {
		if fs == s || !apfmatch.Precedes(prec, name, fs.Spec.MatchingPrecedence, fs.Name) || !apfmatch.Before(fs, s) {
			continue
		}
		if apfmatch.MayOverlap(fs, sub, req, namespaced) {
			return fs
		}
	}
	return nil
}

// object is p's FlowSchema as herd applies it; owner is the installation
// object it is owned by (nil: none known yet).
func (p Placement) object(owner *metav1.OwnerReference) *flowcontrolv1.FlowSchema {
	plural, group, _ := strings.Cut(p.Resource, ".")
	rr := flowcontrolv1.ResourcePolicyRule{Verbs: []string{"list"}, APIGroups: []string{group}, Resources: []string{plural}, ClusterScope: true}
	if p.Namespaced {
		rr.Namespaces = []string{flowcontrolv1.NamespaceEvery}
	}
	fs := &flowcontrolv1.FlowSchema{
		TypeMeta: metav1.TypeMeta{APIVersion: "flowcontrol.apiserver.k8s.io/v1", Kind: "FlowSchema"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   p.Slot,
			Labels: map[string]string{action.ManagedByLabel: action.ManagedByValue, LabelMeasurement: "true"},
			Annotations: map[string]string{
				action.AnnotationAction: ActionMeasure, action.AnnotationRole: p.Role, action.AnnotationClient: p.Client,
				action.AnnotationIdentity: p.Identity, action.AnnotationResource: p.Resource, AnnotationServing: p.Serving,
				// The apiserver's configuration maintenance deletes
				// objects it marks auto-updated that are not its own
				// (k8s.io/kubernetes@v1.36.3/pkg/registry/flowcontrol/
				// ensurer/strategy.go, RemoveUnwantedObjects): false,
				// owned by herd, says it never may.
				flowcontrolv1.AutoUpdateAnnotationKey: "false",
			},
		},
		Spec: flowcontrolv1.FlowSchemaSpec{
			PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: p.PriorityLevel},
			MatchingPrecedence:         p.Precedence,
			DistinguisherMethod:        p.distinguisher,
			Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
				Subjects:      []flowcontrolv1.Subject{subject(p.subject)},
				ResourceRules: []flowcontrolv1.ResourcePolicyRule{rr},
			}},
		},
	}
	if owner != nil {
		fs.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	return fs
}

func subject(s nodeclient.Subject) flowcontrolv1.Subject {
	switch {
	case s.Group != "":
		return flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: s.Group}}
	case s.ServiceAccount != "":
		ns, name, _ := strings.Cut(s.ServiceAccount, ":")
		return flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: ns, Name: name}}
	}
	return flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: s.User}}
}

func sortedKeys(m map[string]*flowcontrolv1.FlowSchema) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	// By slot number: herd-measure-2 before herd-measure-10.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && slotIndex(out[j]) < slotIndex(out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}
