package action

import (
	"context"
	"fmt"
	"testing"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// standing is a slot action kept while its alert fires, with no TTL, and
// removed a hold-down after it resolves: the shape of the coming protect,
// written the way an action is (one SlotAction, one SlotRequest).
type standing struct{ env *Env }

func (standing) Name() policy.Action { return policy.ActionIsolate }

func (s standing) Slots() Slots {
	return Slots{
		Action: policy.ActionIsolate, Prefix: "herd-standing", Max: 2, Level: IsolateLevel,
		LevelSpec: IsolateLevelSpec(s.env.Config.Actions.Isolate),
		LevelFits: func(*flowcontrolv1.PriorityLevelConfiguration) string { return "" },
		HoldDown:  10 * time.Minute, // and no TTL
		Event:     EventNames{Reason: "HerdStanding", Verb: "Standing"},
	}
}

func (s standing) Request(a alert.Alert) (SlotRequest, *guard.Refusal) {
	c, r := label(a, "client", validDNSLabel)
	if r != nil {
		return nil, r
	}
	return standingReq{client: c}, nil
}

type standingReq struct{ client string }

func (r standingReq) Key() map[string]string {
	return map[string]string{AnnotationAction: "standing", AnnotationClient: r.client}
}
func (r standingReq) Target() string  { return "client/" + r.client }
func (r standingReq) Serving() string { return "guards " + r.client }
func (r standingReq) Evidence(ctx context.Context, c *Case) Outcome {
	return c.Verify(ctx, "risk{client=\""+r.client+"\"}", 0, r.client+" is at risk")
}
func (r standingReq) Rule([]*flowcontrolv1.FlowSchema) (SlotRule, *guard.Refusal) {
	return SlotRule{Precedence: 460, Rule: flowcontrolv1.PolicyRulesWithSubjects{
		Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: r.client}}},
		ResourceRules: []flowcontrolv1.ResourcePolicyRule{{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"},
			ClusterScope: true, Namespaces: []string{"*"}}},
	}}, nil
}
func (r standingReq) Done(slot string, _ SlotRule, level *flowcontrolv1.PriorityLevelConfiguration, until string) string {
	return fmt.Sprintf("guarded %s in %s to %s (%s) until %q", r.client, slot, level.Name, levelSize(level), until)
}

// TestSlotsWithoutTTL: a slot with no TTL stays while its alert fires,
// however long; resolved, it stays for the hold-down, is re-armed if the
// alert fires again, and the sweep removes it after the hold-down.
func TestSlotsWithoutTTL(t *testing.T) {
	f := newFixture(t, nil, installedLevels()...)
	type slotAction struct {
		*SlotOps
		standing
	}
	st := standing{env: f.env}
	a := slotAction{SlotOps: NewSlotOps(f.env, st), standing: st}
	f.q.set(`risk{client="cilium"}`, sample(1))
	fire := firing("alertname", "HerdStampedeRisk", "client", "cilium")
	want{result: Applied, reason: `guarded cilium in herd-standing-1 to herd-isolate (2 shares, 16 queues) until ""`}.check(t, f.run(a.Fire(fire)))
	fs, _ := f.env.APF.FlowSchema("herd-standing-1")
	if fs == nil || fs.Annotations[AnnotationExpiresAt] != "" || fs.Annotations[AnnotationAppliedAt] != "2025-03-04T10:00:00Z" {
		t.Fatalf("applied %+v", fs)
	}
	// A year of firing: no expiry, and a repeat is a no-op.
	f.clock.Advance(365 * 24 * time.Hour)
	if ds := f.sweep(a); len(ds) != 0 {
		t.Errorf("the sweep removed a slot whose alert fires: %+v", ds)
	}
	want{result: Noop, reason: "FlowSchema herd-standing-1 already guards cilium"}.check(t, f.run(a.Fire(fire)))
	// Resolved: kept for the hold-down.
	want{result: Applied, has: "marked FlowSchema herd-standing-1 resolved"}.check(t, f.run(a.Resolve(resolved("alertname", "HerdStampedeRisk", "client", "cilium"))))
	// (The fake's objects have no resourceVersion for the cache to order
	// herd's writes by: wait for the informer.)
	cached := func(resolved bool) func() bool {
		return func() bool {
			fs, _ := f.env.APF.FlowSchema("herd-standing-1")
			if fs == nil {
				return false
			}
			_, ok := fs.Annotations[AnnotationResolvedAt]
			return ok == resolved
		}
	}
	waitFor(t, cached(true))
	f.clock.Advance(9 * time.Minute)
	if ds := f.sweep(a); len(ds) != 0 {
		t.Errorf("the sweep removed a slot in its hold-down: %+v", ds)
	}
	// Firing again in the hold-down re-arms it, without the budget.
	want{result: Applied, has: "re-armed"}.check(t, f.run(a.Fire(fire)))
	waitFor(t, cached(false))
	want{result: Applied}.check(t, f.run(a.Resolve(resolved("alertname", "HerdStampedeRisk", "client", "cilium"))))
	waitFor(t, cached(true))
	f.clock.Advance(10 * time.Minute)
	ds := f.sweep(a)
	if len(ds) != 1 || ds[0].Result != Applied || ds[0].Target != "flowschema/herd-standing-1" {
		t.Fatalf("the sweep after the hold-down: %+v", ds)
	}
	waitFor(t, func() bool { fs, _ := f.env.APF.FlowSchema("herd-standing-1"); return fs == nil })
}
