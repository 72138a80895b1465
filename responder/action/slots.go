package action

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	flowcontrolv1ac "k8s.io/client-go/applyconfigurations/flowcontrol/v1"

	"github.com/herd-k8s/herd/internal/apfguard"
	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// A slot action routes some requests to one of herd's priority levels with
// a FlowSchema of its own: isolate, quarantine, and the coming protect. The
// FlowSchemas have fixed names, the action's slots (herd-isolate-1..N), so
// that RBAC can pin herd's writes to them; the priority levels are
// installed with herd (the chart, manifests/apf/herd.yaml), so that an
// action never writes one while the apiserver is saturated.
//
// An action supplies a SlotAction; SlotOps turns it into the Ops of
// Fire, Resolve and Sweep. Every write is one server-side apply (or one
// delete) with the resourceVersion and UID the cache holds as
// preconditions; everything else comes from the APFCache.

// Slots describe one action's FlowSchema slots and priority level.
type Slots struct {
	Action policy.Action
	// Prefix names the slots: Prefix-1..Prefix-Max.
	Prefix string
	Max    int
	// Level is the priority level herd's schemas of this action route to.
	Level string
	// LevelSpec is the level's spec: what the chart installs, and what the
	// first decision that needs the level creates when it is missing.
	LevelSpec flowcontrolv1.PriorityLevelConfigurationSpec
	// LevelFits says why an installed level cannot serve the action ("" when
	// it can): a level someone changed to Exempt or Reject must not receive
	// an isolated client's LISTs.
	LevelFits func(*flowcontrolv1.PriorityLevelConfiguration) string
	// TTL ends a schema this long after it was applied, whatever its alert
	// does; 0 means never while the alert fires (protect).
	TTL time.Duration
	// HoldDown keeps a schema this long after its alert resolved; 0
	// removes it at once on resolve.
	HoldDown time.Duration
	// Event names the action's Events (HerdIsolate, Isolate).
	Event EventNames
}

// SlotAction is what a slot action supplies.
type SlotAction interface {
	Name() policy.Action
	Slots() Slots
	// Request validates alert a's labels and says what it asks for.
	Request(a alert.Alert) (SlotRequest, *guard.Refusal)
}

// SlotRequest is what one alert asks a slot action for.
type SlotRequest interface {
	// Key are the annotations that identify the slot serving this request
	// across deliveries: the target's labels (the slot machinery adds
	// herd.dev/action).
	Key() map[string]string
	// Target names the request before a slot is chosen ("cni/cilium LISTs
	// of pods").
	Target() string
	// Evidence re-verifies the alert for this request (Case.Verify).
	Evidence(ctx context.Context, c *Case) Outcome
	// Rule is the FlowSchema's rule and distinguisher, and its precedence
	// given the FlowSchemas that serve the target now (all but herd's own
	// slots); a refusal when no precedence fits.
	Rule(all []*flowcontrolv1.FlowSchema) (SlotRule, *guard.Refusal)
	// Serving says what an unresolved slot already does, for the no-op
	// ("isolates cilium's LISTs of pods").
	Serving() string
	// Done says what applying rule did ("isolated ..."); level is the
	// installed priority level (its spec when not installed, in dry-run
	// mode), until the expiry or "" when none.
	Done(slot string, rule SlotRule, level *flowcontrolv1.PriorityLevelConfiguration, until string) string
}

// Covered is a SlotRequest that another action's standing schema may
// already serve: isolate's, when protect guards the same client. A fire
// it covers is a no-op naming that schema.
type Covered interface {
	CoveredBy(all []*flowcontrolv1.FlowSchema) string
}

// SlotRule is the one rule of a slot's FlowSchema.
type SlotRule struct {
	Precedence    int32
	Rule          flowcontrolv1.PolicyRulesWithSubjects
	Distinguisher *flowcontrolv1.FlowDistinguisherMethod
	// Note is added to Done's text (what the precedence is before).
	Note string
}

// SlotOps makes the Ops of a slot action. Build it once per action and
// keep it: it serialises the action's slot claims within this replica
// (across replicas the leader Lease does, and the writes' preconditions
// make a stale claim fail instead of overwriting).
type SlotOps struct {
	env *Env
	sa  SlotAction
	s   Slots

	mu sync.Mutex
	// claimed are slots whose write is under way, by name: a second
	// request sees them taken before the cache shows the write.
	claimed map[string]map[string]string
}

// NewSlotOps returns the Ops maker of sa.
func NewSlotOps(env *Env, sa SlotAction) *SlotOps {
	return &SlotOps{env: env, sa: sa, s: sa.Slots(), claimed: map[string]map[string]string{}}
}

// slotName is the name of slot i (1-based).
func (o *SlotOps) slotName(i int) string { return fmt.Sprintf("%s-%d", o.s.Prefix, i) }

func (o *SlotOps) isSlot(name string) bool {
	for i := 1; i <= o.s.Max; i++ {
		if name == o.slotName(i) {
			return true
		}
	}
	return false
}

// owned reports whether herd created o (the managed-by label).
func owned(o metav1.Object) bool { return o.GetLabels()[ManagedByLabel] == ManagedByValue }

// key is req's key with the action's name: the annotations a slot serving
// req carries.
func (o *SlotOps) key(req SlotRequest) map[string]string {
	k := map[string]string{}
	for n, v := range req.Key() {
		k[n] = v
	}
	k[AnnotationAction] = string(o.s.Action)
	return k
}

func matchesKey(ann, key map[string]string) bool {
	for k, v := range key {
		if ann[k] != v {
			return false
		}
	}
	return true
}

// mine returns the action's slots among all, by name.
func (o *SlotOps) mine(all []*flowcontrolv1.FlowSchema) map[string]*flowcontrolv1.FlowSchema {
	out := map[string]*flowcontrolv1.FlowSchema{}
	for _, fs := range all {
		if o.isSlot(fs.Name) {
			out[fs.Name] = fs
		}
	}
	return out
}

// claim finds the slot already serving key, else the first free one, and
// marks it claimed. busy: another request for key is writing that slot
// right now. It refuses when every slot is taken or the slot for key is
// excluded. Another's object under herd's slot name is never touched.
func (o *SlotOps) claim(mine map[string]*flowcontrolv1.FlowSchema, key map[string]string) (slot string, existing *flowcontrolv1.FlowSchema, busy bool, r *guard.Refusal) {
	exclude := o.env.Config.Guards.ExcludeAnnotation
	o.mu.Lock()
	defer o.mu.Unlock()
	free := ""
	for i := 1; i <= o.s.Max; i++ {
		n := o.slotName(i)
		if k, ok := o.claimed[n]; ok {
			if matchesKey(k, key) {
				return n, nil, true, nil
			}
			continue
		}
		fs, ok := mine[n]
		if !ok {
			if free == "" {
				free = n
			}
			continue
		}
		if !owned(fs) {
			continue
		}
		if matchesKey(fs.Annotations, key) {
			if _, ok := fs.Annotations[exclude]; ok {
				return "", nil, false, guard.Refuse(guard.Excluded, "FlowSchema %s is annotated %s: a person holds it", n, exclude)
			}
			o.claimed[n] = key
			return n, fs, false, nil
		}
	}
	if free == "" {
		return "", nil, false, guard.Refuse(guard.MaxManagedFlowSchemas, "all %d FlowSchema slots %s-1..%d are in use (actions.%s.maxManagedFlowSchemas)",
			o.s.Max, o.s.Prefix, o.s.Max, o.s.Action)
	}
	o.claimed[free] = key
	return free, nil, false, nil
}

func (o *SlotOps) release(slot string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.claimed, slot)
}

func (o *SlotOps) isClaimed(slot string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.claimed[slot]
	return ok
}

// readLevel reads the action's priority level from the cache and says
// whether the action may route to it. missing: the level is not installed,
// and the decision's write creates it first (createLevel); the level's spec
// is then LevelSpec. A FlowSchema whose level does not exist would be
// ignored by the apiserver (k8s.io/apiserver@v0.36.3/pkg/util/flowcontrol/
// apf_controller.go: "Ignoring FlowSchema ... because of bad priority level
// reference").
func (o *SlotOps) readLevel() (pl *flowcontrolv1.PriorityLevelConfiguration, missing bool, out Outcome) {
	pl, err := o.env.APF.PriorityLevel(o.s.Level)
	if err != nil {
		return nil, false, Fail("read priority level "+o.s.Level, err)
	}
	if pl == nil {
		return o.levelObject(), true, Continue
	}
	if why := o.s.LevelFits(pl); why != "" {
		return nil, false, Refuse(guard.Refuse(guard.PriorityLevel, "PriorityLevelConfiguration %s %s; herd's %s needs the level the chart installs (manifests/apf/herd.yaml)", o.s.Level, why, o.s.Action))
	}
	return pl, false, Continue
}

// levelObject is the action's priority level as herd installs it. When the
// responder creates it, it is herd's installation, not an object an action
// manages (no managed-by=herd label): no action changes or deletes it.
func (o *SlotOps) levelObject() *flowcontrolv1.PriorityLevelConfiguration {
	return &flowcontrolv1.PriorityLevelConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: "flowcontrol.apiserver.k8s.io/v1", Kind: "PriorityLevelConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: o.s.Level, Labels: InstallLabels(),
			Annotations: map[string]string{AnnotationAction: string(o.s.Action),
				"herd.dev/created-by": "herd responder: the level was not installed with herd (chart, manifests/apf/herd.yaml)"}},
		Spec: o.s.LevelSpec,
	}
}

// createLevel creates the action's missing priority level: one
// server-side apply (authorized as patch and create of that name), without
// force, so that a level someone installed meanwhile is not taken over.
func (o *SlotOps) createLevel(ctx context.Context, pl *flowcontrolv1.PriorityLevelConfiguration) error {
	ac, err := toApplyConfiguration[flowcontrolv1ac.PriorityLevelConfigurationApplyConfiguration](pl)
	if err != nil {
		return err
	}
	if _, err := o.env.Client.FlowcontrolV1().PriorityLevelConfigurations().Apply(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager}); err != nil {
		return fmt.Errorf("create priority level %s (not installed): %w", pl.Name, err)
	}
	return nil
}

// labels is the Labels step of Fire and Resolve: the action's request for
// alert a, into *req.
func (o *SlotOps) labels(a alert.Alert, req *SlotRequest) func(*Case) Outcome {
	return func(c *Case) Outcome {
		var r *guard.Refusal
		if *req, r = o.sa.Request(a); r != nil {
			return Refuse(r)
		}
		c.About((*req).Target(), nil)
		return Continue
	}
}

// Fire is the decision about a firing alert: apply (or re-arm) the slot
// serving the request.
func (o *SlotOps) Fire(a alert.Alert) Op {
	var (
		req     SlotRequest
		all     []*flowcontrolv1.FlowSchema
		level   *flowcontrolv1.PriorityLevelConfiguration
		missing bool // the level is not installed
	)
	return Op{
		Action: o.s.Action, Alert: a, Event: o.s.Event,
		Labels:   o.labels(a, &req),
		Evidence: func(ctx context.Context, c *Case) Outcome { return req.Evidence(ctx, c) },
		Read: func(_ context.Context, c *Case) Outcome {
			var err error
			if all, err = o.env.APF.FlowSchemas(); err != nil {
				return Fail("read FlowSchemas", err)
			}
			var out Outcome
			level, missing, out = o.readLevel()
			return out
		},
		Guards: func(_ context.Context, c *Case) (*Write, Outcome) {
			if cv, ok := req.(Covered); ok {
				if by := cv.CoveredBy(all); by != "" {
					return nil, Nothing("%s", by)
				}
			}
			slot, existing, busy, r := o.claim(o.mine(all), o.key(req))
			if r != nil {
				return nil, Refuse(r)
			}
			c.About("flowschema/"+slot, fsRef(slot))
			if busy {
				return nil, Nothing("FlowSchema %s is being applied right now: it %s", slot, req.Serving())
			}
			held := true // released here unless the write takes the claim
			defer func() {
				if held {
					o.release(slot)
				}
			}()
			now := o.env.now()
			ann := o.key(req)
			ann[AnnotationAlert] = a.Name()
			ann[AnnotationFingerprint] = a.Fingerprint
			ann[AnnotationAppliedAt] = now.UTC().Format(time.RFC3339)
			if o.s.TTL > 0 {
				ann[AnnotationExpiresAt] = now.Add(o.s.TTL).UTC().Format(time.RFC3339)
			}
			if existing != nil {
				if _, resolved := existing.Annotations[AnnotationResolvedAt]; !resolved {
					if until := existing.Annotations[AnnotationExpiresAt]; until != "" {
						return nil, Nothing("FlowSchema %s already %s (until %s)", slot, req.Serving(), until)
					}
					return nil, Nothing("FlowSchema %s already %s", slot, req.Serving())
				}
				// The alert fired again during the hold-down: keep the
				// schema and its expiry, drop the resolve mark.
				ann[AnnotationAppliedAt] = existing.Annotations[AnnotationAppliedAt]
				if v, ok := existing.Annotations[AnnotationExpiresAt]; ok {
					ann[AnnotationExpiresAt] = v
				}
			}
			rule, r := req.Rule(all)
			if r != nil {
				return nil, Refuse(r)
			}
			fs := o.flowSchema(slot, rule, ann, existing)
			done := req.Done(slot, rule, level, ann[AnnotationExpiresAt])
			if existing != nil {
				done = "re-armed (alert fired again during the hold-down): " + done
			}
			if missing {
				done += fmt.Sprintf("; created priority level %s first: it was not installed (install the chart's or manifests/apf/herd.yaml)", o.s.Level)
			}
			held = false // the write releases the claim
			return &Write{
				What: "apply FlowSchema " + slot, Done: done, Object: fs,
				// A re-armed schema is the same action, already counted.
				Budget: existing == nil,
				Apply: func(ctx context.Context, dryRun bool) error {
					defer o.release(slot)
					// Only on a cluster where herd's levels were not
					// installed: once, one more request.
					if missing && !dryRun {
						if err := o.createLevel(ctx, level); err != nil {
							return err
						}
					}
					return o.apply(ctx, fs, dryRun)
				},
				Release: func() { o.release(slot) },
			}, Continue
		},
	}
}

// flowSchema builds slot's FlowSchema; existing (from the cache) gives the
// preconditions: its resourceVersion and UID, so that the apply fails with
// 409 if the object changed since the cache saw it.
func (o *SlotOps) flowSchema(slot string, rule SlotRule, ann map[string]string, existing *flowcontrolv1.FlowSchema) *flowcontrolv1.FlowSchema {
	fs := apfguard.FlowSchema(slot, o.s.Level, rule.Precedence, rule.Rule)
	fs.Labels, fs.Annotations = map[string]string{ManagedByLabel: ManagedByValue}, ann
	fs.Spec.DistinguisherMethod = rule.Distinguisher
	if existing != nil {
		fs.ResourceVersion, fs.UID = existing.ResourceVersion, existing.UID
	}
	return fs
}

// apply is ApplyFlowSchema with the action's client and cache.
func (o *SlotOps) apply(ctx context.Context, fs *flowcontrolv1.FlowSchema, dryRun bool) error {
	return ApplyFlowSchema(ctx, o.env.Client, o.env.APF, fs, dryRun)
}

// toApplyConfiguration converts a typed object to its apply configuration
// (the same JSON, with every field a pointer, so unset fields stay unset).
func toApplyConfiguration[AC any](obj any) (*AC, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", obj, err)
	}
	ac := new(AC)
	if err := json.Unmarshal(b, ac); err != nil {
		return nil, fmt.Errorf("decode %T: %w", ac, err)
	}
	return ac, nil
}

// Resolve is the decision about a resolved alert: mark the slot resolved
// (the sweep removes it after the hold-down), or remove it at once when
// there is no hold-down.
func (o *SlotOps) Resolve(a alert.Alert) Op {
	var (
		req SlotRequest
		fs  *flowcontrolv1.FlowSchema
	)
	exclude := o.env.Config.Guards.ExcludeAnnotation
	return Op{
		Action: o.s.Action, Alert: a, Event: o.s.Event,
		Labels: o.labels(a, &req),
		Read: func(_ context.Context, c *Case) Outcome {
			all, err := o.env.APF.FlowSchemas()
			if err != nil {
				return Fail("read FlowSchemas", err)
			}
			mine := o.mine(all)
			for _, name := range slices.Sorted(maps.Keys(mine)) {
				if owned(mine[name]) && matchesKey(mine[name].Annotations, o.key(req)) {
					fs = mine[name]
					break
				}
			}
			if fs == nil {
				return Nothing("no FlowSchema of herd's serves this alert")
			}
			c.About("flowschema/"+fs.Name, fsRef(fs.Name))
			return Continue
		},
		Guards: func(_ context.Context, c *Case) (*Write, Outcome) {
			if _, ok := fs.Annotations[exclude]; ok {
				return nil, Refuse(guard.Refuse(guard.Excluded, "FlowSchema %s is annotated %s: a person holds it", fs.Name, exclude))
			}
			if o.s.HoldDown <= 0 {
				return o.remove(fs, "resolve", "its alert resolved"), Continue
			}
			if _, ok := fs.Annotations[AnnotationResolvedAt]; ok {
				return nil, Nothing("FlowSchema %s is already in its hold-down since %s", fs.Name, fs.Annotations[AnnotationResolvedAt])
			}
			if len(fs.Spec.Rules) != 1 {
				return nil, Refuse(guard.Refuse(guard.Ownership, "FlowSchema %s has %d rules; herd writes one, so someone changed it", fs.Name, len(fs.Spec.Rules)))
			}
			ann := map[string]string{}
			for k, v := range fs.Annotations {
				if strings.HasPrefix(k, "herd.dev/") && k != exclude {
					ann[k] = v
				}
			}
			now := o.env.now()
			ann[AnnotationResolvedAt] = now.UTC().Format(time.RFC3339)
			again := o.flowSchema(fs.Name, SlotRule{Precedence: fs.Spec.MatchingPrecedence, Rule: fs.Spec.Rules[0], Distinguisher: fs.Spec.DistinguisherMethod}, ann, fs)
			return &Write{
				What: "resolve", Object: again,
				Done:  fmt.Sprintf("marked FlowSchema %s resolved; it is removed after the hold-down, at %s", fs.Name, now.Add(o.s.HoldDown).UTC().Format(time.RFC3339)),
				Apply: func(ctx context.Context, dryRun bool) error { return o.apply(ctx, again, dryRun) },
			}, Continue
		},
	}
}

// remove is the write that deletes fs (DeleteFlowSchema).
func (o *SlotOps) remove(fs *flowcontrolv1.FlowSchema, what, why string) *Write {
	return &Write{
		What: what, Done: fmt.Sprintf("removed FlowSchema %s: %s", fs.Name, why),
		Apply: func(ctx context.Context, dryRun bool) error {
			return DeleteFlowSchema(ctx, o.env.Client, o.env.APF, fs, dryRun)
		},
	}
}

// Sweep returns the removals of the action's schemas that expired or whose
// alert resolved longer ago than the hold-down. It returns nothing in
// dry-run mode (nothing was created), before the cache has synced, and for
// objects that carry the exclude annotation or are not herd's.
func (o *SlotOps) Sweep() []Op {
	if o.env.Config.DryRun || !o.env.APF.Synced() {
		return nil
	}
	var ops []Op
	all, err := o.env.APF.FlowSchemas()
	if err != nil {
		return nil
	}
	now := o.env.now()
	mine := o.mine(all)
	for _, name := range slices.Sorted(maps.Keys(mine)) {
		fs := mine[name]
		if !owned(fs) || o.isClaimed(name) {
			continue
		}
		if _, excluded := fs.Annotations[o.env.Config.Guards.ExcludeAnnotation]; excluded {
			continue
		}
		why := ""
		if t, err := time.Parse(time.RFC3339, fs.Annotations[AnnotationExpiresAt]); err == nil && !now.Before(t) {
			why = "its TTL ended at " + fs.Annotations[AnnotationExpiresAt]
		} else if t, err := time.Parse(time.RFC3339, fs.Annotations[AnnotationResolvedAt]); err == nil && !now.Before(t.Add(o.s.HoldDown)) {
			why = fmt.Sprintf("its alert resolved at %s and the hold-down of %s passed", fs.Annotations[AnnotationResolvedAt], o.s.HoldDown)
		}
		if why == "" {
			continue
		}
		w := o.remove(fs, "delete flowschema "+name, why)
		ops = append(ops, Op{
			Action: o.s.Action,
			Alert:  alert.Alert{Status: "sweep", Labels: map[string]string{"alertname": fs.Annotations[AnnotationAlert]}, Fingerprint: fs.Annotations[AnnotationFingerprint]},
			Event:  EventNames{Reason: o.s.Event.Reason, Verb: "Delete", Suffixes: map[Result]string{Applied: "Removed", Failed: "RemoveFailed"}},
			Guards: func(_ context.Context, c *Case) (*Write, Outcome) {
				c.About("flowschema/"+name, fsRef(name))
				return w, Continue
			},
		})
	}
	return ops
}

// InstallLabels are the labels of what herd's installation creates (the
// manifests' objects, and a priority level the responder had to create):
// herd's, but not an action's to change or delete.
func InstallLabels() map[string]string { return apfguard.InstallLabels() }
