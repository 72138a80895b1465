package guard

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/herd-k8s/herd/responder/policy"
)

var t0 = time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC)

func newBudget(perHour map[policy.Action]int, cooldown time.Duration) (*Budget, *clocktesting.FakeClock) {
	c := clocktesting.NewFakeClock(t0)
	return NewBudget(policy.Guards{MaxActionsPerHour: perHour, StormCooldown: model.Duration(cooldown)}, c.Now), c
}

// step is one operation on a budget and what it must answer.
type step struct {
	advance time.Duration // before the operation
	op      string        // take, refund, trip, cooling
	action  policy.Action // default cordon
	guard   Guard         // "" = no refusal
	reason  string        // exact reason, when not ""
}

func TestBudget(t *testing.T) {
	const cordon, isolate = policy.ActionCordon, policy.ActionIsolate
	limits := map[policy.Action]int{cordon: 3, isolate: 1}
	cases := []struct {
		name  string
		steps []step
	}{
		{
			name: "limit per hour, refusal starts the cooldown, which ends",
			steps: []step{
				{op: "take"},
				{advance: time.Minute, op: "take"},
				{advance: time.Minute, op: "take"},
				{advance: time.Minute, op: "take", guard: MaxActionsPerHour,
					reason: "3 cordon actions in the last hour, the limit is 3 (guards.maxActionsPerHour); pausing cordon for 30m0s"},
				// The refusal at 10:03 started a 30m cooldown.
				{advance: time.Minute, op: "take", guard: StormCooldown,
					reason: "a guard refused cordon at 2025-03-04T10:03:00Z; cordon pauses until 2025-03-04T10:33:00Z (guards.stormCooldown)"},
				{op: "cooling", guard: StormCooldown},
				{advance: 28*time.Minute + 59*time.Second, op: "cooling", guard: StormCooldown}, // 10:32:59
				// 10:33:00: the cooldown is over, but the hour since 10:00 is not.
				{advance: time.Second, op: "cooling"},
				{op: "take", guard: MaxActionsPerHour},
			},
		},
		{
			name: "the hourly window slides",
			steps: []step{
				{op: "take"},                               // 10:00
				{advance: 20 * time.Minute, op: "take"},    // 10:20
				{advance: 20 * time.Minute, op: "take"},    // 10:40
				{advance: 19 * time.Minute, op: "cooling"}, // 10:59, no cooldown yet
				// 11:00: the 10:00 action is exactly an hour old and no longer counts.
				{advance: time.Minute, op: "take"},
				// 11:10: 10:20, 10:40 and 11:00 count.
				{advance: 10 * time.Minute, op: "take", guard: MaxActionsPerHour,
					reason: "3 cordon actions in the last hour, the limit is 3 (guards.maxActionsPerHour); pausing cordon for 30m0s"},
			},
		},
		{
			name: "refund gives the action back",
			steps: []step{
				{op: "take"},
				{op: "take"},
				{op: "take"},
				{op: "refund"},
				{op: "take"},
				{op: "refund"},
				{op: "refund"},
				{op: "refund"},
				{op: "refund"}, // more refunds than takes: harmless
				{op: "take"},
				{op: "take"},
				{op: "take"},
				{op: "take", guard: MaxActionsPerHour},
			},
		},
		{
			name: "trip starts the cooldown, which refuses take and ends",
			steps: []step{
				{op: "cooling"},
				{advance: 5 * time.Minute, op: "trip"}, // 10:05
				{op: "cooling", guard: StormCooldown,
					reason: "a guard refused cordon at 2025-03-04T10:05:00Z; cordon pauses until 2025-03-04T10:35:00Z (guards.stormCooldown)"},
				{advance: 10 * time.Minute, op: "take", guard: StormCooldown,
					reason: "a guard refused cordon at 2025-03-04T10:05:00Z; cordon pauses until 2025-03-04T10:35:00Z (guards.stormCooldown)"},
				// Tripping again restarts the cooldown from now (10:15).
				{op: "trip"},
				{advance: 29 * time.Minute, op: "take", guard: StormCooldown,
					reason: "a guard refused cordon at 2025-03-04T10:15:00Z; cordon pauses until 2025-03-04T10:45:00Z (guards.stormCooldown)"},
				{advance: time.Minute, op: "take"}, // 10:45
			},
		},
		{
			name: "a refused take during the cooldown does not spend the budget",
			steps: []step{
				{op: "trip"},
				{op: "take", guard: StormCooldown},
				{op: "take", guard: StormCooldown},
				{op: "take", guard: StormCooldown},
				{advance: 30 * time.Minute, op: "take"},
				{op: "take"},
				{op: "take"},
				{op: "take", guard: MaxActionsPerHour},
			},
		},
		{
			name: "actions have their own budgets and cooldowns",
			steps: []step{
				{op: "take", action: isolate},
				{op: "take", action: isolate, guard: MaxActionsPerHour,
					reason: "1 isolate actions in the last hour, the limit is 1 (guards.maxActionsPerHour); pausing isolate for 30m0s"},
				{op: "cooling", action: isolate, guard: StormCooldown},
				{op: "cooling"},
				{op: "take"},
				{op: "trip"},
				{op: "take", guard: StormCooldown},
				// 10:30: both cooldowns are over; isolate's 10:00 action still counts.
				{advance: 30 * time.Minute, op: "take", action: isolate, guard: MaxActionsPerHour},
				{op: "take"},
				{advance: 30 * time.Minute, op: "take", action: isolate},
			},
		},
		{
			name: "an action without a limit is refused",
			steps: []step{
				{op: "take", action: policy.ActionQuarantine, guard: MaxActionsPerHour,
					reason: "0 quarantine actions in the last hour, the limit is 0 (guards.maxActionsPerHour); pausing quarantine for 30m0s"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, c := newBudget(limits, 30*time.Minute)
			for i, s := range tc.steps {
				c.Step(s.advance)
				a := s.action
				if a == "" {
					a = cordon
				}
				var r *Refusal
				switch s.op {
				case "take":
					r = b.Take(a)
				case "cooling":
					r = b.Cooling(a)
				case "trip":
					b.Trip(a)
				case "refund":
					b.Refund(a)
				default:
					t.Fatalf("step %d: unknown op %q", i, s.op)
				}
				switch {
				case s.guard == "" && r != nil:
					t.Fatalf("step %d (%s %s at %s): refused: %v", i, s.op, a, c.Now().Format("15:04:05"), r)
				case s.guard != "" && r == nil:
					t.Fatalf("step %d (%s %s at %s): not refused, want %s", i, s.op, a, c.Now().Format("15:04:05"), s.guard)
				case s.guard != "" && r.Guard != s.guard:
					t.Fatalf("step %d (%s %s): refused by %s (%s), want %s", i, s.op, a, r.Guard, r.Reason, s.guard)
				case s.reason != "" && r.Reason != s.reason:
					t.Fatalf("step %d (%s %s): reason\n%s\nwant\n%s", i, s.op, a, r.Reason, s.reason)
				}
			}
		})
	}
}

func TestBudgetConcurrentTakes(t *testing.T) {
	b, _ := newBudget(map[policy.Action]int{policy.ActionCordon: 5}, time.Minute)
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted, refused := 0, 0
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := b.Take(policy.ActionCordon)
			mu.Lock()
			defer mu.Unlock()
			if r == nil {
				granted++
			} else {
				refused++
			}
		}()
	}
	wg.Wait()
	if granted != 5 || refused != 45 {
		t.Errorf("granted %d, refused %d; want 5 and 45", granted, refused)
	}
}

func TestNewBudgetDefaultsToTheWallClock(t *testing.T) {
	b := NewBudget(policy.Guards{MaxActionsPerHour: map[policy.Action]int{policy.ActionCordon: 1}, StormCooldown: model.Duration(time.Hour)}, nil)
	if r := b.Take(policy.ActionCordon); r != nil {
		t.Fatal(r)
	}
	r := b.Take(policy.ActionCordon)
	if r == nil || r.Guard != MaxActionsPerHour {
		t.Fatalf("second take: %v", r)
	}
	// The cooldown ends an hour from now, on the wall clock.
	r = b.Cooling(policy.ActionCordon)
	if r == nil {
		t.Fatal("no cooldown")
	}
	_, after, ok := strings.Cut(r.Reason, "pauses until ")
	if !ok {
		t.Fatalf("reason %q", r.Reason)
	}
	until, err := time.Parse(time.RFC3339, strings.TrimSuffix(after, " (guards.stormCooldown)"))
	if err != nil {
		t.Fatalf("reason %q: %v", r.Reason, err)
	}
	if d := time.Until(until); d < 59*time.Minute || d > time.Hour+time.Second {
		t.Errorf("cooldown ends in %s, want about 1h", d)
	}
}

func TestRefusal(t *testing.T) {
	r := Refuse(Excluded, "node %s is annotated %s", "n1", "herd.dev/exclude")
	if r.Guard != Excluded || r.Reason != "node n1 is annotated herd.dev/exclude" {
		t.Errorf("Refuse = %+v", r)
	}
	if got, want := r.Error(), "refused by excluded: node n1 is annotated herd.dev/exclude"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var err error = r
	var rr *Refusal
	if !errors.As(err, &rr) || rr != r {
		t.Error("errors.As does not find the Refusal")
	}
}

func TestAllGuards(t *testing.T) {
	want := []Guard{"label_validation", "verification", "max_unschedulable_fraction", "max_actions_per_hour", "storm_cooldown",
		"control_plane", "excluded", "ownership", "max_managed_flowschemas", "shared_identity", "apf_precedence", "apf_priority_level"}
	if len(All) != len(want) {
		t.Fatalf("All has %d guards, want %d: %v", len(All), len(want), All)
	}
	seen := map[Guard]bool{}
	for i, g := range All {
		if g != want[i] {
			t.Errorf("All[%d] = %q, want %q", i, g, want[i])
		}
		if seen[g] {
			t.Errorf("%q twice", g)
		}
		seen[g] = true
	}
}
