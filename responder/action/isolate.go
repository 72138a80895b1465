package action

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/utils/ptr"

	"github.com/herd-k8s/herd/internal/apfguard"
	"github.com/herd-k8s/herd/internal/apfmatch"
	"github.com/herd-k8s/herd/internal/nodeclient"
	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// ReasonIsolate prefixes isolate's Event reasons (HerdIsolateApplied, ...,
// HerdIsolateRemoved when the sweep deletes a schema).
const ReasonIsolate = "HerdIsolate"

// IsolateLevel is the priority level isolate routes to.
const IsolateLevel = "herd-isolate"

// IsolateMinRelistRate is the relist rate (per second, cluster-wide) below
// which isolate does not believe a storm alert: HerdRelistStorm's own floor.
const IsolateMinRelistRate = 0.5

// isolatePrecedence is used when the schema serving the client now is
// above it; the calibration of SPEC §8.1 used 450. Every herd schema comes
// after system-node-high (apfguard.SystemNodeHighPrecedence).
const isolatePrecedence = 450

// Isolate routes a storming client's LISTs of one resource to a bounded
// priority level (HerdRelistStorm). Only `list` of that resource: the
// client's watches, leases and status updates keep their schemas. Only the
// identities that storm themselves become subjects (issue 16): each must
// have relisted the resource at least actions.isolate.minSubjectRelists
// times in the exporter's window, and no unauthenticated identity ever
// does.
type Isolate struct {
	*SlotOps
	env *Env
}

// NewIsolate returns the isolate action.
func NewIsolate(env *Env) *Isolate {
	i := &Isolate{env: env}
	i.SlotOps = NewSlotOps(env, i)
	return i
}

// Name implements Action.
func (*Isolate) Name() policy.Action { return policy.ActionIsolate }

// Slots implements SlotAction.
func (i *Isolate) Slots() Slots {
	is := i.env.Config.Actions.Isolate
	return Slots{
		Action: policy.ActionIsolate, Prefix: "herd-isolate", Max: is.MaxManagedFlowSchemas, Level: IsolateLevel,
		LevelSpec: IsolateLevelSpec(is),
		LevelFits: func(pl *flowcontrolv1.PriorityLevelConfiguration) string { return queuingLevelFits(pl, "isolated") },
		TTL:       time.Duration(is.TTL), HoldDown: time.Duration(is.HoldDown),
		Event: EventNames{Reason: ReasonIsolate, Verb: "Isolate"},
	}
}

// queuingLevelFits says why pl cannot slow the routed LISTs ("" when it
// can): it must be Limited, and queue excess rather than reject it.
func queuingLevelFits(pl *flowcontrolv1.PriorityLevelConfiguration, routed string) string {
	switch l := pl.Spec.Limited; {
	case pl.Spec.Type != flowcontrolv1.PriorityLevelEnablementLimited || l == nil:
		return fmt.Sprintf("is of type %s, not Limited: it would not bound the %s LISTs", pl.Spec.Type, routed)
	case l.LimitResponse.Type != flowcontrolv1.LimitResponseTypeQueue || l.LimitResponse.Queuing == nil:
		return fmt.Sprintf("answers excess with %s, not Queue: it would reject the %s client's LISTs instead of slowing them", l.LimitResponse.Type, routed)
	}
	return ""
}

// IsolateLevelSpec is the herd-isolate priority level for the policy's
// settings: bounded, it neither lends nor borrows seats, so the isolated
// LISTs get exactly their nominal share however idle the other levels are,
// and excess queues. The chart renders the same spec (test/chart checks it).
func IsolateLevelSpec(is policy.Isolate) flowcontrolv1.PriorityLevelConfigurationSpec {
	return boundedLevelSpec(is.Level())
}

// boundedLevelSpec is a queuing level of l's shares that neither lends nor
// borrows seats (apfguard.LevelSpec).
func boundedLevelSpec(l policy.Level) flowcontrolv1.PriorityLevelConfigurationSpec {
	return apfguard.LevelSpec(apfguard.Level{Shares: l.PriorityLevelShares, Queues: l.Queues, HandSize: l.HandSize, QueueLengthLimit: l.QueueLengthLimit})
}

// clientTarget is a node-side client's LISTs of one resource, as an alert
// names them: what isolate and protect route.
type clientTarget struct {
	role, client, resource, cluster string
	group, plural                   string
}

// clientLabels reads and validates the role, client, resource and cluster
// labels of a storm or stampede alert.
func clientLabels(a alert.Alert) (clientTarget, *guard.Refusal) {
	var t clientTarget
	var r *guard.Refusal
	if t.role, r = label(a, "role", func(v string) []string {
		if role, err := nodeclient.ParseRole(v); err != nil || role == nodeclient.RoleOther {
			return []string{"not a node-side client role"}
		}
		return nil
	}); r != nil {
		return t, r
	}
	if t.client, r = label(a, "client", func(v string) []string {
		if !nodeclient.ValidClientName(v) {
			return []string{"not a client name (a lowercase DNS label, dots allowed)"}
		}
		return nil
	}); r != nil {
		return t, r
	}
	if t.client == "other" {
		return t, guard.Refuse(guard.LabelValidation, `client "other" is every unclassified caller, not one client`)
	}
	if t.resource, r = label(a, "resource", func(v string) []string {
		if !nodeclient.ValidResource(v) {
			return []string{"not a resource name (plural, or plural.group)"}
		}
		return nil
	}); r != nil {
		return t, r
	}
	if t.resource == "other" {
		return t, guard.Refuse(guard.LabelValidation, `resource "other" is herd's overflow bucket, not one resource`)
	}
	t.plural, t.group, _ = strings.Cut(t.resource, ".")
	t.cluster, r = clusterLabel(a)
	return t, r
}

// key are the annotations naming t on a slot.
func (t clientTarget) key(act policy.Action) map[string]string {
	return map[string]string{AnnotationAction: string(act), AnnotationRole: t.role, AnnotationClient: t.client, AnnotationResource: t.resource}
}

// listRule is the one rule of a slot that routes only `list` of t's
// resource by subjects; ids are the identities APF would see (their groups
// follow from them), to find the schema that serves them now. herd's
// schema takes precedence preferred, or comes just before that schema, and
// always after system-node-high.
func (t clientTarget) listRule(all []*flowcontrolv1.FlowSchema, ids []string, subjects []flowcontrolv1.Subject, preferred int32) (SlotRule, *guard.Refusal) {
	current, currentName := int32(10000), "none (catch-all)"
	for _, id := range ids {
		if s := apfmatch.Serving(all, apfmatch.UserOf(id), apfmatch.List(t.resource), apfmatch.HerdGuard); s != nil && s.Spec.MatchingPrecedence < current {
			current, currentName = s.Spec.MatchingPrecedence, s.Name
		}
	}
	prec, ok := apfguard.Precedence(preferred, current)
	if !ok {
		return SlotRule{}, guard.Refuse(guard.Precedence, "the client's LISTs are served by FlowSchema %s at precedence %d; herd's schema must come after system-node-high (%d) and before it",
			currentName, current, apfguard.SystemNodeHighPrecedence)
	}
	return SlotRule{
		Precedence:    prec,
		Rule:          apfguard.ListRule(t.group, t.plural, subjects),
		Distinguisher: apfguard.ByUser(),
		Note:          fmt.Sprintf("before %s at %d", currentName, current),
	}, nil
}

// stormRequest is what a storm alert asks isolate for.
type stormRequest struct {
	clientTarget
	env *Env
	// wave: a HerdSynchronizedRelist of an expensive shape (the fast
	// path), shape its shape label ("" when it has none).
	wave  bool
	shape string
	ids   []string // the identities that storm themselves
	// subjects of the FlowSchema, from ids.
	subjects []flowcontrolv1.Subject
}

// AlertSynchronizedRelist is the fast path's alert: a synchronized relist,
// isolated when its cost label says expensive.
const AlertSynchronizedRelist = "HerdSynchronizedRelist"

// Request implements SlotAction: the role, client and resource labels; for
// HerdSynchronizedRelist also cost, which must be expensive.
func (i *Isolate) Request(a alert.Alert) (SlotRequest, *guard.Refusal) {
	ct, r := clientLabels(a)
	if r != nil {
		return nil, r
	}
	t := &stormRequest{env: i.env, clientTarget: ct}
	if a.Name() == AlertSynchronizedRelist {
		t.wave = true
		if cost := a.Labels["cost"]; cost != "expensive" {
			return nil, guard.Refuse(guard.LabelValidation, "a synchronized relist with cost=%q is reported, not isolated: only an expensive shape is (cost=\"expensive\")", truncate(cost, 40))
		}
		if t.shape = a.Labels["shape"]; t.shape != "" && !slices.Contains(apfguard.Shapes, t.shape) {
			return nil, guard.Refuse(guard.LabelValidation, "label shape=%q is not one of %s", truncate(t.shape, 40), strings.Join(apfguard.Shapes, ", "))
		}
	}
	return t, nil
}

func (t *stormRequest) Key() map[string]string { return t.key(policy.ActionIsolate) }

func (t *stormRequest) Target() string {
	return fmt.Sprintf("%s/%s LISTs of %s", t.role, t.client, t.resource)
}

func (t *stormRequest) Serving() string {
	return fmt.Sprintf("isolates %s's LISTs of %s", t.client, t.resource)
}

// Evidence: the client storms (its cluster-wide relist rate), and which of
// its identities storm themselves. For the fast path, the wave itself.
func (t *stormRequest) Evidence(ctx context.Context, c *Case) Outcome {
	if t.wave {
		return t.waveEvidence(ctx, c)
	}
	if o := c.Verify(ctx, evidence.RelistRate(t.env.Config.Prometheus.RateWindow, t.role, t.client, t.resource, t.cluster),
		IsolateMinRelistRate, fmt.Sprintf("that %s relists %s at more than %g/s", t.client, t.resource, IsolateMinRelistRate)); o.Ends() {
		return o
	}
	min := float64(t.env.Config.Actions.Isolate.MinSubjectRelists)
	q := evidence.RelistIdentities(t.role, t.client, t.resource, t.cluster)
	samples, err := c.QueryEvidence(ctx, q)
	if err != nil {
		c.AddEvidence(evidence.Check{Query: q})
		return Fail("read evidence", err)
	}
	ids, passed := stormingIdentities(samples, min)
	c.AddEvidence(evidence.Check{Query: q, Series: len(ids), Confirmed: len(ids) > 0})
	if len(samples) == 0 {
		// No audit feed for this client: its identities' own LISTs, as
		// API Priority and Fairness counts them (docs/apf-measurement.md).
		var o Outcome
		if ids, passed, o = t.measuredIdentities(ctx, c, min); o.Ends() {
			return o
		}
	}
	t.ids = ids
	if len(ids) == 0 {
		why := "Prometheus names no identity of the client among herd's top relisting instances (herd_instance_relists) nor among its APF measurement schemas (herd:apf_lists): nothing to put in a FlowSchema"
		if len(passed) > 0 {
			why = fmt.Sprintf("no identity of the client storms itself: herd_instance_relists shows %s, and a subject needs at least %d relists of its own (actions.isolate.minSubjectRelists) and an authenticated identity",
				strings.Join(passed, ", "), t.env.Config.Actions.Isolate.MinSubjectRelists)
		}
		return Refuse(guard.Refuse(guard.Verification, "%s", why))
	}
	var r *guard.Refusal
	t.subjects, r = subjectsFor(ids)
	return Refuse(r)
}

// waveEvidence is the fast path's (issue 12): a synchronized relist of an
// expensive shape is isolated while its first wave runs, before any
// instance relisted often enough to show a relist rate above
// IsolateMinRelistRate or minSubjectRelists relists of its own (in a first
// wave each relisted once). So the client's evidence is the wave: at least
// actions.isolate.minWaveInstances of its instances relisted the resource
// in the exporter's wave window (herd_relist_wave_instances, what the
// alert itself reads). Its subjects are those of the forecast
// (herd_stampede_subjects): identities the exporter classified as this
// client by who they are, not by user agent, and the apiserver
// authenticated; an identity there is one of the client's own instances,
// so sharing a user agent with the wave cannot make a bystander a subject.
func (t *stormRequest) waveEvidence(ctx context.Context, c *Case) Outcome {
	n := t.env.Config.Actions.Isolate.MinWaveInstances
	if o := c.Verify(ctx, evidence.RelistWave(t.role, t.client, t.resource, t.shape, t.cluster), float64(n)-1,
		fmt.Sprintf("that at least %d %s instances relisted %s in the last wave (actions.isolate.minWaveInstances)", n, t.client, t.resource)); o.Ends() {
		return o
	}
	var o Outcome
	t.ids, t.subjects, o = stampedeSubjects(ctx, c, t.clientTarget)
	return o
}

// CoveredBy names the guard that already routes these LISTs ("" when
// none): a standing, unresolved herd-protect slot of protect, or a GitOps
// guard from `herd analyze --apf` (apfguard.IsGitOpsGuard, routing to
// herd-protect), for the same role, client and resource, whose subjects
// include every one isolate would use. isolate is then a no-op; the
// guard's level is already bounded for this client, and a second schema
// would add nothing. A GitOps guard is only read, never changed.
func (t *stormRequest) CoveredBy(all []*flowcontrolv1.FlowSchema) string {
	key := t.key(policy.ActionProtect)
	for _, fs := range all {
		if !strings.HasPrefix(fs.Name, ProtectPrefix+"-") || !matchesKey(fs.Annotations, key) || len(fs.Spec.Rules) != 1 {
			continue
		}
		what := "protect"
		switch {
		case owned(fs):
			if _, resolved := fs.Annotations[AnnotationResolvedAt]; resolved {
				continue // its risk cleared: it goes after the hold-down
			}
		case apfguard.IsGitOpsGuard(fs.Labels) && fs.Spec.PriorityLevelConfiguration.Name == apfguard.ProtectLevel && t.servedBy(all, fs):
			what = "GitOps guard"
		default:
			continue
		}
		if coversSubjects(fs.Spec.Rules[0].Subjects, t.subjects) {
			return fmt.Sprintf("FlowSchema %s (%s) already routes %s's LISTs of %s to priority level %s", fs.Name, what, t.client, t.resource, fs.Spec.PriorityLevelConfiguration.Name)
		}
	}
	return ""
}

// servedBy reports whether fs serves the LISTs of every one of t's
// identities now (a GitOps guard someone placed after the schema that
// serves them routes nothing).
func (t *stormRequest) servedBy(all []*flowcontrolv1.FlowSchema, fs *flowcontrolv1.FlowSchema) bool {
	for _, id := range t.ids {
		if s := apfmatch.Serving(all, apfmatch.UserOf(id), apfmatch.List(t.resource), apfmatch.HerdGuard); s == nil || s.Name != fs.Name {
			return false
		}
	}
	return len(t.ids) > 0
}

// coversSubjects reports whether every subject of want is in have.
func coversSubjects(have, want []flowcontrolv1.Subject) bool {
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h flowcontrolv1.Subject) bool { return equality.Semantic.DeepEqual(h, w) }) {
			return false
		}
	}
	return true
}

// measuredIdentities are the client's identities whose own measurement
// schemas counted at least min LISTs of the resource in the rate window
// (each identity has one schema per resource, so this is its own
// evidence, as herd_instance_relists is in the audit feed). While herd's
// isolate schema stands, the client's LISTs leave the measurement schemas
// for it: its subjects, which it still serves, are then the identities.
func (t *stormRequest) measuredIdentities(ctx context.Context, c *Case, min float64) (ids, passed []string, o Outcome) {
	window := t.env.Config.Prometheus.RateWindow
	q := evidence.MeasuredIdentities(window, t.role, t.client, t.resource, t.cluster)
	samples, err := c.Query(ctx, q)
	if err != nil {
		c.AddEvidence(evidence.Check{Query: q})
		return nil, nil, Fail("read evidence", err)
	}
	ids, passed = stormingIdentities(samples, min)
	c.AddEvidence(evidence.Check{Query: q, Series: len(ids), Confirmed: len(ids) > 0})
	if len(ids) > 0 {
		return ids, passed, Continue
	}
	q = evidence.IsolatedLists(window, t.role, t.client, t.resource, t.cluster)
	samples, err = c.Query(ctx, q)
	if err != nil {
		c.AddEvidence(evidence.Check{Query: q})
		return nil, nil, Fail("read evidence", err)
	}
	seen := map[string]bool{}
	for _, s := range samples {
		fs, err := t.env.APF.FlowSchema(s.Labels["flow_schema"])
		if err != nil || fs == nil || !owned(fs) || s.Value < min || fs.Annotations[AnnotationAction] != string(policy.ActionIsolate) {
			continue
		}
		for _, rule := range fs.Spec.Rules {
			for _, sub := range rule.Subjects {
				if id := subjectIdentity(sub); id != "" && !seen[id] {
					seen[id] = true
					ids = append(ids, id)
				}
			}
		}
	}
	sort.Strings(ids)
	c.AddEvidence(evidence.Check{Query: q, Series: len(ids), Confirmed: len(ids) > 0})
	return ids, passed, Continue
}

// subjectIdentity is an APF subject as herd's identity labels write it
// (nodeclient.Subject.Identity); "" for a malformed one.
func subjectIdentity(s flowcontrolv1.Subject) string {
	switch {
	case s.ServiceAccount != nil:
		return nodeclient.Subject{ServiceAccount: s.ServiceAccount.Namespace + ":" + s.ServiceAccount.Name}.Identity()
	case s.Group != nil:
		return nodeclient.Subject{Group: s.Group.Name}.Identity()
	case s.User != nil:
		return s.User.Name
	}
	return ""
}

// stormingIdentities keeps the identities that carry their own evidence:
// their largest instance relisted at least min times in the window
// (evidence.RelistIdentities gives max by identity), and the apiserver
// authenticated them. The rest are named in passed, for the refusal.
func stormingIdentities(samples []evidence.Sample, min float64) (ids, passed []string) {
	for _, s := range samples {
		id := s.Labels["identity"]
		switch {
		case id == "":
		case nodeclient.Unauthenticated(id):
			passed = append(passed, fmt.Sprintf("%s (%g, unauthenticated)", id, s.Value))
		case s.Value < min:
			passed = append(passed, fmt.Sprintf("%s (%g)", id, s.Value))
		default:
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	sort.Strings(passed)
	return ids, passed
}

// Rule: only `list` of the resource, from the storming identities, before
// the schema that serves their LISTs now and after system-node-high.
func (t *stormRequest) Rule(all []*flowcontrolv1.FlowSchema) (SlotRule, *guard.Refusal) {
	return t.listRule(all, t.ids, t.subjects, isolatePrecedence)
}

func (t *stormRequest) Done(slot string, rule SlotRule, level *flowcontrolv1.PriorityLevelConfiguration, until string) string {
	return fmt.Sprintf("isolated %s's LISTs of %s from %d identities in FlowSchema %s (precedence %d, %s) to priority level %s (%s), until %s",
		t.client, t.resource, len(t.ids), slot, rule.Precedence, rule.Note, IsolateLevel, levelSize(level), until)
}

// levelSize describes a priority level's size for decision records.
func levelSize(pl *flowcontrolv1.PriorityLevelConfiguration) string {
	l := pl.Spec.Limited
	if l == nil {
		return string(pl.Spec.Type)
	}
	s := fmt.Sprintf("%d shares", ptr.Deref(l.NominalConcurrencyShares, 0))
	if q := l.LimitResponse.Queuing; q != nil {
		s += fmt.Sprintf(", %d queues", q.Queues)
	} else {
		s += ", " + strings.ToLower(string(l.LimitResponse.Type))
	}
	return s
}

// subjectsFor turns identities into FlowSchema subjects: service accounts
// as themselves, kubelets as the system:nodes group (one subject for the
// fleet), a group (group:NAME, a measurement schema's subject) as itself
// unless it takes in more than one client's fleet, other users by name.
func subjectsFor(ids []string) ([]flowcontrolv1.Subject, *guard.Refusal) {
	if len(ids) == 0 {
		return nil, guard.Refuse(guard.Verification, "Prometheus names no identity of the client among herd's top relisting instances (herd_instance_relists): nothing to put in a FlowSchema")
	}
	seen := map[string]bool{}
	var out []flowcontrolv1.Subject
	add := func(key string, s flowcontrolv1.Subject) {
		if !seen[key] {
			seen[key] = true
			out = append(out, s)
		}
	}
	ids = append([]string(nil), ids...)
	sort.Strings(ids)
	for _, id := range ids {
		switch ns, name, ok := nodeclient.ServiceAccount(id); {
		case strings.Contains(id, "*"):
			// "*" is APF's wildcard for user and service-account names:
			// a subject made from it would match every user.
			return nil, guard.Refuse(guard.LabelValidation, "identity %q is not a user name", id)
		case strings.HasPrefix(id, nodeclient.GroupIdentityPrefix):
			g := strings.TrimPrefix(id, nodeclient.GroupIdentityPrefix)
			if g == "" || nodeclient.BroadGroup(g) {
				return nil, guard.Refuse(guard.Verification, "group %q takes in callers that are not one client's fleet: herd never isolates it", g)
			}
			add("group:"+g, flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: g}})
		case nodeclient.Unauthenticated(id):
			// Never a subject: nothing proves who sent it (issue 16).
			return nil, guard.Refuse(guard.Verification, "identity %q is unauthenticated: herd never puts it in a FlowSchema", id)
		case ok:
			add("sa:"+id, flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindServiceAccount,
				ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: ns, Name: name}})
		case strings.HasPrefix(id, nodeclient.NodeUserPrefix):
			add("group:"+nodeclient.NodesGroup, flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindGroup,
				Group: &flowcontrolv1.GroupSubject{Name: nodeclient.NodesGroup}})
		default:
			add("user:"+id, flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: id}})
		}
	}
	if len(out) > apfguard.MaxSubjects {
		return nil, guard.Refuse(guard.Verification, "the client runs as %d different identities; herd puts at most %d in one FlowSchema", len(out), apfguard.MaxSubjects)
	}
	return out, nil
}
