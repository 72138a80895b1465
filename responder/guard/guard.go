// Package guard holds the limits every responder action passes (SPEC §4.3)
// that are about the responder's own recent behaviour rather than about the
// object it acts on: actions per hour and the storm cooldown. The
// object-level guards (blast radius, exemptions, ownership) live with the
// actions that know the objects; all of them report refusals with the
// names below, which are the values of herd_responder_guard_refusals_total's
// guard label.
//
// The budgets are in memory. A new leader starts with full budgets; the
// actions' own state checks (a node herd already cordoned is a no-op, a
// FlowSchema slot in use is reused) keep a failover from repeating work, and
// the blast-radius guard counts what is in the cluster, not what this
// process did.
package guard

import (
	"fmt"
	"sync"
	"time"

	"github.com/herd-k8s/herd/responder/policy"
)

// Guard names a guard. Values are metric label values.
type Guard string

// The guards.
const (
	// LabelValidation: an alert label the action needs is missing or not a
	// valid name (DNS-1123, known role, node identity).
	LabelValidation Guard = "label_validation"
	// Verification: Prometheus or the Kubernetes API does not confirm what
	// the alert claims (the node is not stale, does not exist, the client
	// no longer storms).
	Verification Guard = "verification"
	// MaxUnschedulableFraction: the cordon would leave more than the
	// configured fraction of all nodes unschedulable.
	MaxUnschedulableFraction Guard = "max_unschedulable_fraction"
	// MaxActionsPerHour: the action's hourly budget is spent.
	MaxActionsPerHour Guard = "max_actions_per_hour"
	// StormCooldown: a budget guard tripped recently; the action pauses.
	StormCooldown Guard = "storm_cooldown"
	// ControlPlane: control-plane nodes are never cordoned.
	ControlPlane Guard = "control_plane"
	// Excluded: the object carries the exclude annotation, or a node falls
	// outside actions.cordon.nodeSelector.
	Excluded Guard = "excluded"
	// Ownership: the object is not herd's (no managed-by label), or someone
	// changed what herd set since.
	Ownership Guard = "ownership"
	// MaxManagedFlowSchemas: every FlowSchema slot of the action is in use.
	MaxManagedFlowSchemas Guard = "max_managed_flowschemas"
	// SharedIdentity: quarantine refuses identities many machines share
	// (service accounts, groups): rejecting one would cut every node.
	SharedIdentity Guard = "shared_identity"
	// Precedence: no FlowSchema precedence fits between system-node-high
	// and the schema that serves the client now.
	Precedence Guard = "apf_precedence"
	// PriorityLevel: the priority level an APF action routes to is not
	// installed, or is not what the action needs (a level that does not
	// queue would jail an isolated client; one that does not reject would
	// not quarantine).
	PriorityLevel Guard = "apf_priority_level"
)

// All lists every guard, for metrics that exist from the start.
var All = []Guard{LabelValidation, Verification, MaxUnschedulableFraction, MaxActionsPerHour, StormCooldown,
	ControlPlane, Excluded, Ownership, MaxManagedFlowSchemas, SharedIdentity, Precedence, PriorityLevel}

// Refusal is a guard's "no", with the reason a person reads.
type Refusal struct {
	Guard  Guard
	Reason string
}

func (r *Refusal) Error() string { return fmt.Sprintf("refused by %s: %s", r.Guard, r.Reason) }

// Refuse builds a Refusal.
func Refuse(g Guard, format string, args ...any) *Refusal {
	return &Refusal{Guard: g, Reason: fmt.Sprintf(format, args...)}
}

// Budget enforces maxActionsPerHour and the storm cooldown per action.
// Safe for concurrent use.
type Budget struct {
	mu       sync.Mutex
	perHour  map[policy.Action]int
	cooldown time.Duration
	now      func() time.Time
	taken    map[policy.Action][]time.Time
	until    map[policy.Action]time.Time
}

// NewBudget returns budgets from the guards' configuration. now may be nil.
func NewBudget(g policy.Guards, now func() time.Time) *Budget {
	if now == nil {
		now = time.Now
	}
	return &Budget{
		perHour:  g.MaxActionsPerHour,
		cooldown: time.Duration(g.StormCooldown),
		now:      now,
		taken:    map[policy.Action][]time.Time{},
		until:    map[policy.Action]time.Time{},
	}
}

// Take spends one action of a's hourly budget, or refuses: storm_cooldown
// while a cooldown runs, max_actions_per_hour when the last hour's budget
// is spent (which also starts the cooldown).
func (b *Budget) Take(a policy.Action) *Refusal {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if r := b.coolingLocked(a, now); r != nil {
		return r
	}
	hour := now.Add(-time.Hour)
	kept := b.taken[a][:0]
	for _, t := range b.taken[a] {
		if t.After(hour) {
			kept = append(kept, t)
		}
	}
	b.taken[a] = kept
	if limit := b.perHour[a]; len(kept) >= limit {
		b.until[a] = now.Add(b.cooldown)
		return Refuse(MaxActionsPerHour, "%d %s actions in the last hour, the limit is %d (guards.maxActionsPerHour); pausing %s for %s",
			len(kept), a, limit, a, b.cooldown)
	}
	b.taken[a] = append(kept, now)
	return nil
}

// Refund gives back the last action taken from a's budget: the action
// turned out to be a no-op or failed before changing anything.
func (b *Budget) Refund(a policy.Action) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := len(b.taken[a]); n > 0 {
		b.taken[a] = b.taken[a][:n-1]
	}
}

// Trip starts a's cooldown: a blast-radius guard refused it.
func (b *Budget) Trip(a policy.Action) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.until[a] = b.now().Add(b.cooldown)
}

// Cooling refuses with storm_cooldown while a's cooldown runs. Actions
// call it before their own blast-radius checks, so that a paused action
// reports the pause rather than the guard behind it.
func (b *Budget) Cooling(a policy.Action) *Refusal {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.coolingLocked(a, b.now())
}

func (b *Budget) coolingLocked(a policy.Action, now time.Time) *Refusal {
	if u := b.until[a]; now.Before(u) {
		return Refuse(StormCooldown, "a guard refused %s at %s; %s pauses until %s (guards.stormCooldown)",
			a, u.Add(-b.cooldown).UTC().Format(time.RFC3339), a, u.UTC().Format(time.RFC3339))
	}
	return nil
}
