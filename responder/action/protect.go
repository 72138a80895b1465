package action

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"k8s.io/utils/ptr"

	"github.com/herd-k8s/herd/internal/apfguard"
	"github.com/herd-k8s/herd/internal/forecast"
	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// ReasonProtect prefixes protect's Event reasons (HerdProtectApplied, ...,
// HerdProtectRemoved when the sweep deletes a guard).
const ReasonProtect = "HerdProtect"

// ProtectLevel is the priority level protect routes to; ProtectPrefix names
// its slots (herd-protect-1..N).
const (
	ProtectLevel  = apfguard.ProtectLevel
	ProtectPrefix = "herd-protect"
)

// Protect is the standing guard against a forecast stampede (SPEC §4.2,
// issue 12). HerdStampedeRisk fires in the steady state when one
// synchronized relist of a client would take the apiserver's memory past
// its budget: (live instances that would relist) × (bytes one LIST makes
// the apiserver hold), bounded by the concurrency of the client's priority
// level. protect then routes only `list` of that resource, by the client's
// own identities, to the installed level herd-protect, which runs few of
// those LISTs at once, and keeps the guard while the risk holds (no TTL),
// removing it a hold-down after the alert resolves.
//
// The level is installed with herd and protect never writes it: it checks
// that the level bounds the target (how many of its LISTs the level runs
// at once, from the apiserver's own seats) and says what it bounds the peak
// to. Every decision is one server-side apply of the FlowSchema.
type Protect struct {
	*SlotOps
	env *Env
}

// NewProtect returns the protect action.
func NewProtect(env *Env) *Protect {
	p := &Protect{env: env}
	p.SlotOps = NewSlotOps(env, p)
	return p
}

// Name implements Action.
func (*Protect) Name() policy.Action { return policy.ActionProtect }

// Slots implements SlotAction: no TTL, a hold-down after resolve.
func (p *Protect) Slots() Slots {
	pc := p.env.Config.Actions.Protect
	return Slots{
		Action: policy.ActionProtect, Prefix: ProtectPrefix, Max: pc.MaxManagedFlowSchemas, Level: ProtectLevel,
		LevelSpec: ProtectLevelSpec(pc),
		LevelFits: func(pl *flowcontrolv1.PriorityLevelConfiguration) string {
			if why := queuingLevelFits(pl, "guarded"); why != "" {
				return why
			}
			switch l := pl.Spec.Limited; {
			case ptr.Deref(l.BorrowingLimitPercent, -1) != 0:
				return "may borrow seats from other levels (borrowingLimitPercent is not 0): in a storm it would run more LISTs than its own seats"
			case ptr.Deref(l.NominalConcurrencyShares, apfguard.DefaultLimitedShares) < 1:
				return "has no seats: it would hold the guarded LISTs until they time out"
			}
			return ""
		},
		HoldDown: time.Duration(pc.HoldDown),
		Event:    EventNames{Reason: ReasonProtect, Verb: "Protect"},
	}
}

// ProtectLevelSpec is the herd-protect priority level for the policy's
// settings: bounded both ways (nothing lent, nothing borrowed), so the
// guarded LISTs run on exactly the level's nominal seats however idle the
// other levels are, and excess queues. The chart renders the same spec
// (test/chart checks it).
func ProtectLevelSpec(pc policy.Protect) flowcontrolv1.PriorityLevelConfigurationSpec {
	return boundedLevelSpec(pc.Level())
}

// riskRequest is what a HerdStampedeRisk alert asks protect for.
type riskRequest struct {
	clientTarget
	env   *Env
	shape string

	// The forecast, re-read (Evidence).
	peak, budget, growth, concurrency, safe, listSeats float64
	serverCL                                           int
	// The subjects, and the identities APF sees for them (precedence).
	ids      []string
	subjects []flowcontrolv1.Subject
	// plan: how herd-protect bounds the target (Rule).
	plan levelPlan
}

// Request implements SlotAction: role, client, resource and shape, which
// must be one protect guards.
func (p *Protect) Request(a alert.Alert) (SlotRequest, *guard.Refusal) {
	ct, r := clientLabels(a)
	if r != nil {
		return nil, r
	}
	t := &riskRequest{env: p.env, clientTarget: ct}
	if t.shape, r = label(a, "shape", func(v string) []string {
		if !slices.Contains(apfguard.Shapes, v) {
			return []string{"not one of " + strings.Join(apfguard.Shapes, ", ")}
		}
		return nil
	}); r != nil {
		return nil, r
	}
	if !slices.Contains(apfguard.GuardedShapes, t.shape) {
		return nil, guard.Refuse(guard.LabelValidation, "shape %s is a cheap LIST (indexed or one object): a FlowSchema cannot tell it from the client's other LISTs of %s, so herd guards only shapes %s",
			t.shape, t.resource, strings.Join(apfguard.GuardedShapes, ", "))
	}
	return t, nil
}

// Key: one guard per target and shape, so that each shape's alert keeps
// and resolves its own.
func (t *riskRequest) Key() map[string]string {
	k := t.key(policy.ActionProtect)
	k[AnnotationShape] = t.shape
	return k
}

func (t *riskRequest) Target() string {
	return fmt.Sprintf("%s/%s LISTs of %s (shape %s)", t.role, t.client, t.resource, t.shape)
}

func (t *riskRequest) Serving() string {
	return fmt.Sprintf("guards %s's LISTs of %s (shape %s)", t.client, t.resource, t.shape)
}

// Evidence re-reads the forecast from Prometheus: the predicted peak is
// still above the budget; how many of the client's LISTs may run at once
// (safe concurrency), how wide APF makes each one and how many run at once
// now; the client's subjects; and the apiservers' seats per level, from
// which the level's seats follow.
func (t *riskRequest) Evidence(ctx context.Context, c *Case) Outcome {
	model := func(record string) (float64, bool, Outcome) {
		q := evidence.StampedeModel(record, t.role, t.client, t.resource, t.shape, t.cluster)
		samples, err := c.Query(ctx, q)
		if err != nil {
			c.AddEvidence(evidence.Check{Query: q})
			return 0, false, Fail("read evidence", err)
		}
		chk := evidence.Check{Query: q, Series: len(samples), Confirmed: len(samples) > 0}
		for i, s := range samples {
			if i == 0 || s.Value > chk.Value {
				chk.Value = s.Value
			}
		}
		c.AddEvidence(chk)
		return chk.Value, chk.Confirmed, Continue
	}
	var (
		ok bool
		o  Outcome
	)
	if t.peak, ok, o = model("peak_bytes"); o.Ends() {
		return o
	} else if !ok {
		return Refuse(guard.Refuse(guard.Verification, "Prometheus forecasts no peak for %s: %s returned nothing", t.Target(),
			evidence.StampedeModel("peak_bytes", t.role, t.client, t.resource, t.shape, t.cluster)))
	}
	bq := evidence.StampedeBudget(t.cluster)
	samples, err := c.Query(ctx, bq)
	if err != nil {
		c.AddEvidence(evidence.Check{Query: bq})
		return Fail("read evidence", err)
	}
	if len(samples) == 0 {
		c.AddEvidence(evidence.Check{Query: bq})
		return Refuse(guard.Refuse(guard.Verification, "Prometheus has no memory budget to compare the forecast with: %s returned nothing", bq))
	}
	t.budget = samples[0].Value
	c.AddEvidence(evidence.Check{Query: bq, Value: t.budget, Series: len(samples), Confirmed: t.peak > t.budget})
	if !(t.peak > t.budget) {
		return Refuse(guard.Refuse(guard.Verification, "Prometheus does not confirm the risk: the predicted peak %s is not above the budget %s", forecast.Bytes(t.peak), forecast.Bytes(t.budget)))
	}
	for _, m := range []struct {
		record string
		into   *float64
	}{{"growth_bytes", &t.growth}, {"concurrency", &t.concurrency}, {"safe_concurrency", &t.safe}, {"list_seats", &t.listSeats}} {
		v, ok, o := model(m.record)
		if o.Ends() {
			return o
		}
		if !ok {
			return Refuse(guard.Refuse(guard.Verification, "Prometheus has no herd:stampede_%s for %s: herd cannot size the guard", m.record, t.Target()))
		}
		*m.into = v
	}
	if t.ids, t.subjects, o = stampedeSubjects(ctx, c, t.clientTarget); o.Ends() {
		return o
	}
	nq := evidence.NominalSeats(t.cluster)
	if samples, err = c.Query(ctx, nq); err != nil {
		c.AddEvidence(evidence.Check{Query: nq})
		return Fail("read evidence", err)
	}
	levels, err := t.env.APF.PriorityLevels()
	if err != nil {
		return Fail("read priority levels", err)
	}
	t.serverCL, err = serverConcurrency(samples, levels)
	c.AddEvidence(evidence.Check{Query: nq, Series: len(samples), Value: float64(t.serverCL), Confirmed: err == nil})
	if err != nil {
		if len(samples) == 0 {
			return Refuse(guard.Refuse(guard.Verification, "herd cannot tell how many LISTs its level would run: %v", err))
		}
		return Fail("size priority level "+ProtectLevel, alert.Transient(err))
	}
	return Continue
}

// stampedeSubjects reads the FlowSchema subjects of a client's live
// instances of one resource (herd_stampede_subjects) and turns them into
// subjects, with the identity APF would see for each. Only identities the
// exporter classified by who they are and the apiserver authenticated are
// there; protect checks again, and passes over any it would not put in a
// FlowSchema (a group other than the kubelets', an unauthenticated user,
// APF's wildcard), naming them. None left: refused.
func stampedeSubjects(ctx context.Context, c *Case, t clientTarget) ([]string, []flowcontrolv1.Subject, Outcome) {
	q := evidence.StampedeSubjects(t.role, t.client, t.resource, t.cluster)
	samples, err := c.Query(ctx, q)
	if err != nil {
		c.AddEvidence(evidence.Check{Query: q})
		return nil, nil, Fail("read evidence", err)
	}
	var (
		ids, passed []string
		subjects    []flowcontrolv1.Subject
	)
	sort.Slice(samples, func(i, j int) bool { return samples[i].Labels["subject"] < samples[j].Labels["subject"] })
	for _, s := range samples {
		name := s.Labels["subject"]
		if name == "" || !(s.Value > 0) {
			continue
		}
		sub, id, why := apfguard.SubjectOf(name)
		if why != "" {
			passed = append(passed, fmt.Sprintf("%s (%s)", truncate(name, 80), why))
			continue
		}
		ids = append(ids, id)
		subjects = append(subjects, sub)
	}
	c.AddEvidence(evidence.Check{Query: q, Series: len(subjects), Confirmed: len(subjects) > 0})
	switch {
	case len(subjects) == 0 && len(passed) == 0:
		return nil, nil, Refuse(guard.Refuse(guard.Verification, "Prometheus names no subject of %s's live instances of %s (herd_stampede_subjects): nothing to put in a FlowSchema", t.client, t.resource))
	case len(subjects) == 0:
		return nil, nil, Refuse(guard.Refuse(guard.Verification, "no subject of %s's live instances of %s can go in a FlowSchema: %s", t.client, t.resource, strings.Join(passed, "; ")))
	case len(subjects) > apfguard.MaxSubjects:
		return nil, nil, Refuse(guard.Refuse(guard.Verification, "the client runs as %d different subjects; herd puts at most %d in one FlowSchema", len(subjects), apfguard.MaxSubjects))
	}
	return ids, subjects, Continue
}

// levelPlan is how herd-protect bounds one target's LISTs.
type levelPlan struct {
	shares   float64 // the level's, as installed (its spec when not installed)
	nominal  int     // its nominal seats
	width    int     // seats one of the target's LISTs takes there
	admitted int     // how many of them it runs at once
	// fitShares is the largest nominalConcurrencyShares 1..20 with which
	// the level would run no more than the safe concurrency (0: none);
	// fewest is the fewest LISTs at once any of them runs.
	fitShares, fewest int
}

// planLevel works out how level (among levels) bounds LISTs of listSeats
// seats on a server of serverCL, and which shares would fit safe.
func planLevel(serverCL int, levels map[string]*flowcontrolv1.PriorityLevelConfiguration, level *flowcontrolv1.PriorityLevelConfiguration, listSeats int, safe float64) levelPlan {
	others := 0.0
	for _, pl := range levels {
		if pl.Name != level.Name {
			others += apfguard.LevelShares(pl)
		}
	}
	hand := int32(1)
	if q := level.Spec.Limited.LimitResponse.Queuing; q != nil {
		hand = q.HandSize
	}
	p := levelPlan{shares: apfguard.LevelShares(level), fewest: math.MaxInt}
	p.nominal = apfguard.NominalSeats(serverCL, p.shares, others+p.shares)
	p.width = min(max(listSeats, 1), apfguard.MaxListWidth(p.nominal, hand))
	p.admitted = apfguard.AdmittedLists(p.nominal, hand, listSeats)
	for s := 1; s <= 20; s++ {
		n := apfguard.AdmittedLists(apfguard.NominalSeats(serverCL, float64(s), others+float64(s)), hand, listSeats)
		p.fewest = min(p.fewest, n)
		if float64(n) <= safe {
			p.fitShares = s
		}
	}
	return p
}

// Rule: only `list` of the resource, by the client's subjects, before the
// schema that serves them now and after system-node-high; and the level
// must bound the target: run fewer of its LISTs at once than its level
// runs now. It is applied also when it cannot bring the peak under the
// budget (the apiserver's seats are too coarse, or even one LIST would
// exceed it), because it lowers the peak; the decision says by how much.
func (t *riskRequest) Rule(all []*flowcontrolv1.FlowSchema) (SlotRule, *guard.Refusal) {
	levels, err := t.env.APF.PriorityLevels()
	if err != nil {
		return SlotRule{}, guard.Refuse(guard.PriorityLevel, "read priority levels: %v", err)
	}
	level, _ := t.env.APF.PriorityLevel(ProtectLevel)
	if level == nil {
		// Not installed: the decision creates it with this spec (dry run:
		// would have). Count it among the levels as it will be.
		level = &flowcontrolv1.PriorityLevelConfiguration{Spec: ProtectLevelSpec(t.env.Config.Actions.Protect)}
		level.Name = ProtectLevel
		levels[ProtectLevel] = level // a copy of the cache's map
	}
	t.plan = planLevel(t.serverCL, levels, level, int(math.Ceil(t.listSeats)), t.safe)
	if float64(t.plan.admitted) >= t.concurrency {
		return SlotRule{}, guard.Refuse(guard.PriorityLevel, "priority level %s (%g shares, %d of ~%d seats) runs %d of %s's LISTs of %s at once, no fewer than its level runs now (%g): the guard would not lower the peak; %s",
			ProtectLevel, t.plan.shares, t.plan.nominal, t.serverCL, t.plan.admitted, t.client, t.resource, t.concurrency, t.fitAdvice())
	}
	return t.listRule(all, t.ids, t.subjects, apfguard.ProtectPrecedence)
}

// fitAdvice says which shares would fit the budget.
func (t *riskRequest) fitAdvice() string {
	switch {
	case t.safe < 1:
		return fmt.Sprintf("the budget allows no such LIST at all (safe concurrency %g): no priority level can fit it", t.safe)
	case t.plan.fitShares == 0:
		return fmt.Sprintf("the budget allows %g at once, and no level of 1..20 shares runs fewer than %d on this apiserver", t.safe, t.plan.fewest)
	case float64(t.plan.admitted) > t.safe:
		return fmt.Sprintf("the budget allows %g at once: set actions.protect.priorityLevelShares to %d (it runs no more)", t.safe, t.plan.fitShares)
	}
	return fmt.Sprintf("within the %g the budget allows", t.safe)
}

// guardedPeak is the forecast's peak with the level's concurrency instead
// of the current one: the growth is per LIST running at once.
func (t *riskRequest) guardedPeak() float64 {
	if t.concurrency <= 0 {
		return t.peak
	}
	return t.peak - t.growth/t.concurrency*(t.concurrency-float64(t.plan.admitted))
}

func (t *riskRequest) Done(slot string, rule SlotRule, level *flowcontrolv1.PriorityLevelConfiguration, _ string) string {
	fits := "under"
	if t.guardedPeak() > t.budget {
		fits = "still above"
	}
	return fmt.Sprintf("guarded %s's LISTs of %s (shape %s) from %d subjects in FlowSchema %s (precedence %d, %s) to priority level %s (%s: %d of ~%d seats, a LIST %d wide): "+
		"%d at once instead of %g; predicted peak %s → %s, %s the budget %s (%s); kept while HerdStampedeRisk fires",
		t.client, t.resource, t.shape, len(t.subjects), slot, rule.Precedence, rule.Note, ProtectLevel, levelSize(level), t.plan.nominal, t.serverCL, t.plan.width,
		t.plan.admitted, t.concurrency, forecast.Bytes(t.peak), forecast.Bytes(t.guardedPeak()), fits, forecast.Bytes(t.budget), t.fitAdvice())
}
