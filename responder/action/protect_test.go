package action

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/herd-k8s/herd/internal/apfguard"
	"github.com/herd-k8s/herd/internal/apfmatch"
	"github.com/herd-k8s/herd/internal/nodeclient"
	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// Protect on the fake clientset: the forecast's evidence, the subjects,
// the level's fit, and the one apply (protect_apiserver_test.go runs it on
// a real apiserver).

// apfCluster is a default cluster's FlowSchemas and priority levels, with
// herd's installed levels.
func apfCluster() []runtime.Object {
	out := clusterSchemas()
	_, levels := apfmatch.Default()
	for _, pl := range levels {
		out = append(out, pl)
	}
	return out
}

// seatsAt600 are apiserver_flowcontrol_nominal_limit_seats of a
// kube-apiserver at the default 600 seats (400 + 200 in flight) with the
// suggested levels (Σ 245 shares) and herd's (isolate 2, protect 1,
// quarantine 0): ceil(600 × shares / 248). The arithmetic is checked
// against a live apiserver in protect_apiserver_test.go.
func seatsAt600(instance string) []evidence.Sample {
	var out []evidence.Sample
	for level, seats := range map[string]float64{
		"exempt": 0, "system": 73, "node-high": 97, "leader-election": 25, "workload-high": 97, "workload-low": 242,
		"global-default": 49, "catch-all": 13, IsolateLevel: 5, ProtectLevel: 3, QuarantineLevel: 0,
	} {
		out = append(out, sample(seats, "priority_level", level, "instance", instance, "job", "apiserver"))
	}
	return out
}

var (
	riskSel     = func(record string) string { return evidence.StampedeModel(record, "cni", "cilium", "pods", "all", "") }
	riskBudget  = evidence.StampedeBudget("")
	riskSubject = evidence.StampedeSubjects("cni", "cilium", "pods", "")
	riskSeats   = evidence.NominalSeats("")
	ciliumSA    = sample(100, "subject", "serviceaccount:kube-system:cilium")
)

// riskEvidence is a consistent forecast: the apiserver at 0.6 GB, each of
// cilium's 2.4 GB / 9 concurrent LISTs adds 0.27 GB, so 9 at once peak at
// 3 GB against a budget of 1.5 GB, which allows 3.
func riskEvidence() map[string][]evidence.Sample {
	return map[string][]evidence.Sample{
		riskSel("peak_bytes"):       {sample(3e9)},
		riskBudget:                  {sample(1.5e9)},
		riskSel("growth_bytes"):     {sample(2.4e9)},
		riskSel("concurrency"):      {sample(9)},
		riskSel("safe_concurrency"): {sample(3)},
		riskSel("list_seats"):       {sample(10)},
		riskSubject:                 {ciliumSA},
		riskSeats:                   seatsAt600("10.0.0.1:6443"),
	}
}

func riskAlert(kv ...string) alert.Alert {
	return firing(append([]string{"alertname", "HerdStampedeRisk", "role", "cni", "client", "cilium", "resource", "pods", "shape", "all"}, kv...)...)
}

func TestProtectFire(t *testing.T) {
	applied := "guarded cilium's LISTs of pods (shape all) from 1 subjects in FlowSchema herd-protect-1 (precedence 440, before kube-system-service-accounts at 900) to priority level herd-protect " +
		"(1 shares, 16 queues: 3 of ~600 seats, a LIST 1 wide): 3 at once instead of 9; predicted peak 2.8 GiB → 1.3 GiB, under the budget 1.4 GiB (within the 3 the budget allows); kept while HerdStampedeRisk fires"
	with := func(kv ...any) map[string][]evidence.Sample {
		ev := riskEvidence()
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(ev, kv[i].(string))
				continue
			}
			ev[kv[i].(string)] = kv[i+1].([]evidence.Sample)
		}
		return ev
	}
	borrowing := ProtectLevelSpec(policy.Default().Actions.Protect)
	borrowing.Limited.BorrowingLimitPercent = nil
	cases := []struct {
		name     string
		objs     []runtime.Object // default apfCluster()
		evidence map[string][]evidence.Sample
		evErr    error // every query fails
		alert    alert.Alert
		want     want
		subjects []flowcontrolv1.Subject // of the applied schema
		writes   []string
	}{
		{name: "applied", evidence: riskEvidence(), alert: riskAlert(), want: want{result: Applied, reason: applied},
			subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}}}},
		{name: "the risk is gone", evidence: with(riskBudget, []evidence.Sample{sample(4e9)}), alert: riskAlert(),
			want: want{result: Refused, guard: guard.Verification, reason: "Prometheus does not confirm the risk: the predicted peak 2.8 GiB is not above the budget 3.7 GiB"}},
		{name: "no forecast", evidence: with(riskSel("peak_bytes"), nil), alert: riskAlert(),
			want: want{result: Refused, guard: guard.Verification, reason: `Prometheus forecasts no peak for cni/cilium LISTs of pods (shape all): max(herd:stampede_peak_bytes{client="cilium", resource="pods", role="cni", shape="all"}) returned nothing`}},
		{name: "no budget", evidence: with(riskBudget, nil), alert: riskAlert(),
			want: want{result: Refused, guard: guard.Verification, reason: "Prometheus has no memory budget to compare the forecast with: min(herd:stampede_budget_bytes{}) returned nothing"}},
		{name: "no safe concurrency", evidence: with(riskSel("safe_concurrency"), nil), alert: riskAlert(),
			want: want{result: Refused, guard: guard.Verification, reason: "Prometheus has no herd:stampede_safe_concurrency for cni/cilium LISTs of pods (shape all): herd cannot size the guard"}},
		{name: "Prometheus unavailable", evErr: fmt.Errorf("%w: connection refused", evidence.ErrUnavailable), alert: riskAlert(),
			want: want{result: Failed, reason: "read evidence"}},
		{name: "no subject", evidence: with(riskSubject, nil), alert: riskAlert(),
			want: want{result: Refused, guard: guard.Verification, reason: "Prometheus names no subject of cilium's live instances of pods (herd_stampede_subjects): nothing to put in a FlowSchema"}},
		{name: "no subject herd would put in a FlowSchema",
			evidence: with(riskSubject, []evidence.Sample{sample(5, "subject", "user:system:anonymous"), sample(5, "subject", "group:system:authenticated"),
				sample(5, "subject", "user:*"), sample(5, "subject", "serviceaccount:Kube_System:cilium"), sample(5, "subject", "uid:42"),
				sample(0, "subject", "serviceaccount:kube-system:gone")}),
			alert: riskAlert(),
			want: want{result: Refused, guard: guard.Verification, reason: "no subject of cilium's live instances of pods can go in a FlowSchema: " +
				"group:system:authenticated (herd puts no group but system:nodes in a FlowSchema: another group may hold unrelated users); " +
				"serviceaccount:Kube_System:cilium (not a service account namespace and name); uid:42 (not a subject herd knows (group:, serviceaccount:, user:)); " +
				"user:* (contains *, APF's wildcard); user:system:anonymous (unauthenticated: nothing proves who sent it)"}},
		{name: "the subjects herd would, and only those",
			evidence: with(riskSubject, []evidence.Sample{ciliumSA, sample(30, "subject", "group:system:nodes"), sample(2, "subject", "user:cilium-dev"),
				sample(5, "subject", "user:system:unauthenticated:x")}),
			// The kubelets' group is served by system-nodes now, before kube-system-service-accounts.
			alert: riskAlert(), want: want{result: Applied, has: "from 3 subjects in FlowSchema herd-protect-1 (precedence 440, before system-nodes at 500)"},
			subjects: []flowcontrolv1.Subject{
				{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: "system:nodes"}},
				{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}},
				{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: "cilium-dev"}},
			}},
		{name: "too many subjects", evidence: with(riskSubject, manySubjects(21)), alert: riskAlert(),
			want: want{result: Refused, guard: guard.Verification, reason: "the client runs as 21 different subjects; herd puts at most 20 in one FlowSchema"}},
		{name: "Prometheus does not scrape the apiservers", evidence: with(riskSeats, nil), alert: riskAlert(),
			want: want{result: Refused, guard: guard.Verification, reason: "herd cannot tell how many LISTs its level would run: Prometheus has no apiserver_flowcontrol_nominal_limit_seats: it must scrape the apiservers"}},
		{name: "the seats do not follow from the levels (one changed since the scrape)",
			evidence: with(riskSeats, []evidence.Sample{sample(97, "priority_level", "workload-high"), sample(5, "priority_level", "workload-low")}), alert: riskAlert(),
			want: want{result: Failed, reason: "size priority level herd-protect"}},
		{name: "shape node is cheap", alert: riskAlert("shape", "node"), evidence: riskEvidence(),
			want: want{result: Refused, guard: guard.LabelValidation, reason: "shape node is a cheap LIST (indexed or one object): a FlowSchema cannot tell it from the client's other LISTs of pods, so herd guards only shapes all, selected, unknown"}},
		{name: "no shape", alert: firing("alertname", "HerdStampedeRisk", "role", "cni", "client", "cilium", "resource", "pods"),
			want: want{result: Refused, guard: guard.LabelValidation, reason: "the alert has no shape label"}},
		{name: "an unknown shape", alert: riskAlert("shape", "everything"),
			want: want{result: Refused, guard: guard.LabelValidation, reason: `label shape="everything" is not valid: not one of all, selected, node, object, unknown`}},
		{name: "the level would not lower the concurrency", evidence: with(riskSel("concurrency"), []evidence.Sample{sample(3)}), alert: riskAlert(),
			want: want{result: Refused, guard: guard.PriorityLevel, reason: "priority level herd-protect (1 shares, 3 of ~600 seats) runs 3 of cilium's LISTs of pods at once, no fewer than its level runs now (3): the guard would not lower the peak; within the 3 the budget allows"}},
		{name: "the budget allows one: the finest level still lowers the peak", evidence: with(riskSel("safe_concurrency"), []evidence.Sample{sample(1)}), alert: riskAlert(),
			want: want{result: Applied, has: "3 at once instead of 9; predicted peak 2.8 GiB → 1.3 GiB, under the budget 1.4 GiB (the budget allows 1 at once, and no level of 1..20 shares runs fewer than 3 on this apiserver)"}},
		{name: "a larger level than fits",
			objs:     append(without(apfCluster(), ProtectLevel), installed(ProtectLevel, boundedLevelSpec(policy.Level{PriorityLevelShares: 10, Queues: 16, HandSize: 4, QueueLengthLimit: 50}))),
			evidence: with(riskSeats, seatsWithProtectShares(10)), alert: riskAlert(),
			want: want{result: Applied, has: "(10 shares, 16 queues: 24 of ~601 seats, a LIST 4 wide): 6 at once instead of 9; predicted peak 2.8 GiB → 2.0 GiB, still above the budget 1.4 GiB (the budget allows 3 at once: set actions.protect.priorityLevelShares to 1 (it runs no more))"}},
		{name: "a level that may borrow", objs: append(without(apfCluster(), ProtectLevel), installed(ProtectLevel, borrowing)), evidence: riskEvidence(), alert: riskAlert(),
			want: want{result: Refused, guard: guard.PriorityLevel, has: "may borrow seats from other levels"}},
		{name: "not installed: created first", objs: without(apfCluster(), ProtectLevel), evidence: with(riskSeats, seatsWithout(ProtectLevel)), alert: riskAlert(),
			want:   want{result: Applied, has: "3 at once instead of 9"},
			writes: []string{"patch prioritylevelconfigurations/herd-protect", "patch flowschemas/herd-protect-1"}},
		{name: "kubelets: the nodes group, before system-nodes",
			evidence: func() map[string][]evidence.Sample {
				ev := map[string][]evidence.Sample{}
				for k, v := range riskEvidence() {
					ev[k] = v
				}
				for _, r := range []string{"peak_bytes", "growth_bytes", "concurrency", "safe_concurrency", "list_seats"} {
					ev[evidence.StampedeModel(r, "kubelet", "kubelet", "pods", "selected", "")] = ev[riskSel(r)]
				}
				ev[evidence.StampedeSubjects("kubelet", "kubelet", "pods", "")] = []evidence.Sample{sample(100, "subject", "group:system:nodes")}
				return ev
			}(),
			alert:    firing("alertname", "HerdStampedeRisk", "role", "kubelet", "client", "kubelet", "resource", "pods", "shape", "selected"),
			want:     want{result: Applied, has: "from 1 subjects in FlowSchema herd-protect-1 (precedence 440, before system-nodes at 500)"},
			subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: "system:nodes"}}}},
		{name: "a schema at 400 serves the client: no room after system-node-high",
			objs: append(apfCluster(), strict("early", 400, flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindServiceAccount,
				ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}})),
			evidence: riskEvidence(), alert: riskAlert(),
			want: want{result: Refused, guard: guard.Precedence, reason: "the client's LISTs are served by FlowSchema early at precedence 400; herd's schema must come after system-node-high (400) and before it"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := tc.objs
			if objs == nil {
				objs = apfCluster()
			}
			f := newFixture(t, nil, objs...)
			f.q.setAll(tc.evidence)
			f.q.all = tc.evErr
			d := f.run(NewProtect(f.env).Fire(tc.alert))
			tc.want.check(t, d)
			writes := tc.writes
			if writes == nil && (tc.want.result == Applied || tc.want.result == DryRun) {
				writes = []string{"patch flowschemas/herd-protect-1"}
			}
			if w := f.writes(); !reflect.DeepEqual(w, writes) {
				t.Fatalf("writes %q, want %q", w, writes)
			}
			if tc.want.result == Failed && !errors.Is(d.Err, alert.ErrTransient) {
				t.Errorf("err %v is not transient", d.Err)
			}
			if len(writes) == 0 {
				f.assertRefunded(t, policy.ActionProtect)
				return
			}
			p := f.applies()[len(writes)-1]
			var fs flowcontrolv1.FlowSchema
			if err := json.Unmarshal(p.Patch, &fs); err != nil {
				t.Fatal(err)
			}
			if tc.subjects != nil && !reflect.DeepEqual(fs.Spec.Rules[0].Subjects, tc.subjects) {
				t.Errorf("subjects %+v\nwant %+v", fs.Spec.Rules[0].Subjects, tc.subjects)
			}
			rr := fs.Spec.Rules[0].ResourceRules
			if fs.Spec.PriorityLevelConfiguration.Name != ProtectLevel || len(fs.Spec.Rules) != 1 || len(rr) != 1 ||
				!reflect.DeepEqual(rr[0].Verbs, []string{"list"}) || !reflect.DeepEqual(rr[0].Resources, []string{"pods"}) || !rr[0].ClusterScope ||
				fs.Annotations[AnnotationExpiresAt] != "" || fs.Annotations[AnnotationAction] != "protect" || fs.Annotations[AnnotationShape] != tc.alert.Labels["shape"] ||
				fs.Spec.DistinguisherMethod == nil || fs.Spec.DistinguisherMethod.Type != flowcontrolv1.FlowDistinguisherMethodByUserType {
				t.Errorf("applied %s", p.Patch)
			}
		})
	}
}

func manySubjects(n int) []evidence.Sample {
	var out []evidence.Sample
	for i := range n {
		out = append(out, sample(1, "subject", fmt.Sprintf("serviceaccount:ns%d:cilium", i)))
	}
	return out
}

// seatsWithout are seatsAt600 of an apiserver without level (Σ 247).
func seatsWithout(level string) []evidence.Sample {
	var out []evidence.Sample
	for _, s := range seatsAt600("10.0.0.1:6443") {
		if s.Labels["priority_level"] == level {
			continue
		}
		if s.Labels["priority_level"] == "workload-low" {
			s.Value = 243 // ceil(600 × 100 / 247)
		}
		out = append(out, s)
	}
	return out
}

// seatsWithProtectShares are the seats with herd-protect at shares (Σ
// 247 + shares), as APF computes them.
func seatsWithProtectShares(shares float64) []evidence.Sample {
	sum := 247 + shares
	var out []evidence.Sample
	for _, s := range seatsAt600("10.0.0.1:6443") {
		sh := map[string]float64{"exempt": 0, "system": 30, "node-high": 40, "leader-election": 10, "workload-high": 40, "workload-low": 100,
			"global-default": 20, "catch-all": 5, IsolateLevel: 2, ProtectLevel: shares, QuarantineLevel: 0}[s.Labels["priority_level"]]
		s.Value = float64(apfguard.NominalSeats(600, sh, sum))
		out = append(out, s)
	}
	return out
}

func TestProtectLifecycle(t *testing.T) {
	f := newFixture(t, nil, apfCluster()...)
	f.q.setAll(riskEvidence())
	p := NewProtect(f.env)
	want{result: Applied}.check(t, f.run(p.Fire(riskAlert())))
	// Another shape of the same client is a guard of its own.
	f.q.set(evidence.StampedeModel("peak_bytes", "cni", "cilium", "pods", "selected", ""), sample(3e9))
	for _, r := range []string{"growth_bytes", "concurrency", "safe_concurrency", "list_seats"} {
		f.q.set(evidence.StampedeModel(r, "cni", "cilium", "pods", "selected", ""), f.q.answers[riskSel(r)]...)
	}
	want{result: Applied, has: "FlowSchema herd-protect-2"}.check(t, f.run(p.Fire(riskAlert("shape", "selected"))))
	// A year of firing: nothing expires.
	f.clock.Advance(365 * 24 * time.Hour)
	if ds := f.sweep(p); len(ds) != 0 {
		t.Errorf("the sweep removed a guard whose alert fires: %+v", ds)
	}
	want{result: Noop, reason: "FlowSchema herd-protect-1 already guards cilium's LISTs of pods (shape all)"}.check(t, f.run(p.Fire(riskAlert())))
	res := riskAlert()
	res.Status = alert.StatusResolved
	want{result: Applied, has: "marked FlowSchema herd-protect-1 resolved; it is removed after the hold-down"}.check(t, f.run(p.Resolve(res)))
	waitFor(t, func() bool {
		fs, _ := f.env.APF.FlowSchema("herd-protect-1")
		return fs != nil && fs.Annotations[AnnotationResolvedAt] != ""
	})
	f.clock.Advance(29 * time.Minute)
	if ds := f.sweep(p); len(ds) != 0 {
		t.Errorf("the sweep removed a guard in its 30m hold-down: %+v", ds)
	}
	f.clock.Advance(time.Minute)
	ds := f.sweep(p)
	if len(ds) != 1 || ds[0].Result != Applied || ds[0].Target != "flowschema/herd-protect-1" {
		t.Fatalf("the sweep after the hold-down: %+v", ds)
	}
	if got := f.rec.reasons(); got[len(got)-1] != "FlowSchema/herd-protect-1 HerdProtectRemoved" {
		t.Errorf("events %q", got)
	}
	// The other shape's guard stays.
	waitFor(t, func() bool { fs, _ := f.env.APF.FlowSchema("herd-protect-1"); return fs == nil })
	if fs, _ := f.env.APF.FlowSchema("herd-protect-2"); fs == nil {
		t.Error("herd-protect-2 went with herd-protect-1")
	}
}

// TestProtectDryRun: a dry run is one server-side dry-run apply and shows
// the object.
func TestProtectDryRun(t *testing.T) {
	f := newFixture(t, func(c *policy.Config) { c.DryRun = true }, apfCluster()...)
	f.q.setAll(riskEvidence())
	d := f.run(NewProtect(f.env).Fire(riskAlert()))
	want{result: DryRun, has: "dry run: would have guarded cilium's LISTs of pods (shape all)"}.check(t, d)
	if p := f.applies(); len(p) != 1 || !reflect.DeepEqual(p[0].PatchOptions.DryRun, []string{"All"}) {
		t.Errorf("applies %+v", p)
	}
	if d.Object == nil {
		t.Error("no object")
	}
	if got := f.rec.reasons(); !reflect.DeepEqual(got, []string{"FlowSchema/herd-protect-1 HerdProtectDryRun"}) {
		t.Errorf("events %q", got)
	}
}

// TestIsolateCoveredByProtect: isolate for a target protect guards is a
// no-op naming the guard, unless the guard is in its hold-down or lacks a
// subject isolate would add.
func TestIsolateCoveredByProtect(t *testing.T) {
	cilium := flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}}
	guardObj := func(resolved bool, subjects ...flowcontrolv1.Subject) *flowcontrolv1.FlowSchema {
		a := ann(AnnotationAction, "protect", AnnotationRole, "cni", AnnotationClient, "cilium", AnnotationResource, "pods", AnnotationShape, "all")
		if resolved {
			a[AnnotationResolvedAt] = t0.Format(time.RFC3339)
		}
		fs := slotObj("herd-protect-1", true, a, 0)
		fs.Spec.PriorityLevelConfiguration.Name = ProtectLevel
		fs.Spec.Rules = []flowcontrolv1.PolicyRulesWithSubjects{{Subjects: subjects, ResourceRules: catchEverything.ResourceRules}}
		return fs
	}
	// gitops is the guard `herd analyze --apf` prints, applied by someone
	// else: herd's GitOps labels, not managed by the responder.
	gitops := func(labels map[string]string, level string, precedence ...int32) *flowcontrolv1.FlowSchema {
		fs := slotObj("herd-protect-cilium-pods", false, ann(AnnotationAction, "protect", AnnotationRole, "cni", AnnotationClient, "cilium", AnnotationResource, "pods", "herd.dev/generated-by", "herd analyze --apf"), 0)
		fs.Spec.MatchingPrecedence = 450
		if len(precedence) > 0 {
			fs.Spec.MatchingPrecedence = precedence[0]
		}
		fs.Labels = labels
		fs.Spec.PriorityLevelConfiguration.Name = level
		fs.Spec.Rules = []flowcontrolv1.PolicyRulesWithSubjects{{Subjects: []flowcontrolv1.Subject{cilium}, ResourceRules: catchEverything.ResourceRules}}
		return fs
	}
	other := flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: "someone"}}
	for _, tc := range []struct {
		name  string
		guard *flowcontrolv1.FlowSchema
		want  want
	}{
		{"guarded", guardObj(false, other, cilium), want{result: Noop, reason: "FlowSchema herd-protect-1 (protect) already routes cilium's LISTs of pods to priority level herd-protect"}},
		{"guarded by GitOps", gitops(apfguard.GitOpsLabels(), ProtectLevel), want{result: Noop, reason: "FlowSchema herd-protect-cilium-pods (GitOps guard) already routes cilium's LISTs of pods to priority level herd-protect"}},
		{"a GitOps guard to another level", gitops(apfguard.GitOpsLabels(), "workload-low"), want{result: Applied, has: "FlowSchema herd-isolate-1"}},
		{"a GitOps guard after the serving schema", gitops(apfguard.GitOpsLabels(), ProtectLevel, 950), want{result: Applied, has: "FlowSchema herd-isolate-1"}},
		{"not herd's labels", gitops(map[string]string{"app.kubernetes.io/part-of": "herd"}, ProtectLevel), want{result: Applied, has: "FlowSchema herd-isolate-1"}},
		{"the guard's risk cleared", guardObj(true, cilium), want{result: Applied, has: "FlowSchema herd-isolate-1"}},
		{"the guard lacks a subject", guardObj(false, other), want{result: Applied, has: "FlowSchema herd-isolate-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, append(apfCluster(), tc.guard)...)
			f.q.set(stormRate, sample(12.5))
			f.q.set(stormIDs, sample(30, "identity", "system:serviceaccount:kube-system:cilium"))
			tc.want.check(t, f.run(NewIsolate(f.env).Fire(stormAlert())))
		})
	}
}

// TestIsolateFastPath: an expensive HerdSynchronizedRelist is isolated on
// the wave itself, before any relist rate or per-identity relist count;
// its subjects are the forecast's.
func TestIsolateFastPath(t *testing.T) {
	wave := evidence.RelistWave("cni", "cilium", "pods", "all", "")
	fast := firing("alertname", "HerdSynchronizedRelist", "role", "cni", "client", "cilium", "resource", "pods", "shape", "all", "cost", "expensive")
	for _, tc := range []struct {
		name     string
		evidence map[string][]evidence.Sample
		want     want
	}{
		{"the wave, one relist each", map[string][]evidence.Sample{wave: {sample(100)}, riskSubject: {ciliumSA, sample(3, "subject", "user:system:anonymous")},
			stormIDs: {sample(1, "identity", "system:serviceaccount:kube-system:cilium")}},
			want{result: Applied, has: "isolated cilium's LISTs of pods from 1 identities in FlowSchema herd-isolate-1 (precedence 450, before kube-system-service-accounts at 900)"}},
		{"a small wave", map[string][]evidence.Sample{wave: {sample(9)}, riskSubject: {ciliumSA}},
			want{result: Refused, guard: guard.Verification, reason: `Prometheus does not confirm that at least 10 cilium instances relisted pods in the last wave (actions.isolate.minWaveInstances): sum(herd_relist_wave_instances{client="cilium", resource="pods", role="cni", shape="all"}) = 9, not above 9`}},
		{"no subject", map[string][]evidence.Sample{wave: {sample(100)}},
			want{result: Refused, guard: guard.Verification, reason: "Prometheus names no subject of cilium's live instances of pods (herd_stampede_subjects): nothing to put in a FlowSchema"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, apfCluster()...)
			f.q.setAll(tc.evidence)
			d := f.run(NewIsolate(f.env).Fire(fast))
			tc.want.check(t, d)
			for _, q := range f.q.queries {
				if q == stormRate || q == stormIDs {
					t.Errorf("the fast path read %s", q)
				}
			}
			if d.Result != Applied {
				return
			}
			var fs flowcontrolv1.FlowSchema
			if err := json.Unmarshal(f.applies()[0].Patch, &fs); err != nil {
				t.Fatal(err)
			}
			if want := []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}}}; !reflect.DeepEqual(fs.Spec.Rules[0].Subjects, want) {
				t.Errorf("subjects %+v", fs.Spec.Rules[0].Subjects)
			}
		})
	}
}

// TestAPFSeats: APF's arithmetic as apf_controller.go does it.
func TestAPFSeats(t *testing.T) {
	for _, tc := range []struct {
		nominal   int
		hand      int32
		listSeats int
		width     int
		admitted  int
	}{
		// workload-high at 600: 97 seats, hand 6: a 10-seat LIST is 10 wide.
		{97, 6, 10, 10, 9},
		// herd-protect at 600 (1 share): 3 seats, every LIST 1 wide.
		{3, 4, 10, 1, 3},
		{3, 4, 1, 1, 3},
		// herd-isolate at 600 (2 shares): 5 seats.
		{5, 4, 10, 1, 5},
		// 24 seats, hand 4: min(ceil(3.6), 6) = 4 wide.
		{24, 4, 10, 4, 6},
		// A hand larger than the level: 1 wide.
		{13, 20, 10, 1, 13},
		{0, 4, 10, 1, 0},
	} {
		if w := min(max(tc.listSeats, 1), apfguard.MaxListWidth(tc.nominal, tc.hand)); w != tc.width {
			t.Errorf("%d seats, hand %d, %d-seat LIST: width %d, want %d", tc.nominal, tc.hand, tc.listSeats, w, tc.width)
		}
		if a := apfguard.AdmittedLists(tc.nominal, tc.hand, tc.listSeats); a != tc.admitted {
			t.Errorf("%d seats, hand %d, %d-seat LIST: %d at once, want %d", tc.nominal, tc.hand, tc.listSeats, a, tc.admitted)
		}
	}
	levels := func() map[string]*flowcontrolv1.PriorityLevelConfiguration {
		out := map[string]*flowcontrolv1.PriorityLevelConfiguration{}
		for _, o := range apfCluster() {
			if pl, ok := o.(*flowcontrolv1.PriorityLevelConfiguration); ok {
				out[pl.Name] = pl
			}
		}
		return out
	}()
	if cl, err := serverConcurrency(seatsAt600("a"), levels); err != nil || cl != 600 {
		t.Errorf("serverConcurrency = %d, %v, want 600", cl, err)
	}
	// Two apiservers: the larger one counts.
	var two []evidence.Sample
	two = append(two, seatsAt600("a")...)
	for _, s := range seatsAt600("b") {
		sh := apfguard.LevelShares(findLevel(levels, s.Labels["priority_level"]))
		s.Value = float64(apfguard.NominalSeats(3000, sh, 248))
		two = append(two, s)
	}
	if cl, err := serverConcurrency(two, levels); err != nil || cl != 3000 {
		t.Errorf("two apiservers: serverConcurrency = %d, %v, want 3000", cl, err)
	}
	// One apiserver's seats from before a level changed, another's now.
	stale := append(seatsAt600("a")[:0:0], seatsAt600("a")...)
	for i := range stale {
		if stale[i].Labels["priority_level"] == "workload-low" {
			stale[i].Value = 300
		}
	}
	if cl, err := serverConcurrency(stale, levels); err == nil {
		t.Errorf("inconsistent seats: serverConcurrency = %d", cl)
	}
	if _, err := serverConcurrency(nil, levels); err == nil {
		t.Error("no seats: no error")
	}
	// The plan: at 600 the finest level runs 3; 10 shares run 6 of them.
	protect := findLevel(levels, ProtectLevel)
	// (2 shares: 5 seats, 5 at once; 3 shares: 8 seats, 2 wide, 4 at once.)
	if p := planLevel(600, levels, protect, 10, 3); p.nominal != 3 || p.admitted != 3 || p.fitShares != 1 || p.fewest != 3 {
		t.Errorf("plan %+v", p)
	}
	big := installed(ProtectLevel, boundedLevelSpec(policy.Level{PriorityLevelShares: 10, Queues: 16, HandSize: 4, QueueLengthLimit: 50}))
	levels[ProtectLevel] = big
	if p := planLevel(600, levels, big, 10, 3); p.nominal != 24 || p.admitted != 6 || p.width != 4 {
		t.Errorf("plan %+v", p)
	}
	if got := apfguard.LevelShares(&flowcontrolv1.PriorityLevelConfiguration{Spec: flowcontrolv1.PriorityLevelConfigurationSpec{Limited: &flowcontrolv1.LimitedPriorityLevelConfiguration{}}}); got != 30 {
		t.Errorf("shares of a Limited level without shares: %g, want the API's default 30", got)
	}
	if got := apfguard.LevelShares(&flowcontrolv1.PriorityLevelConfiguration{Spec: flowcontrolv1.PriorityLevelConfigurationSpec{Exempt: &flowcontrolv1.ExemptPriorityLevelConfiguration{NominalConcurrencyShares: ptr.To(int32(7))}}}); got != 7 {
		t.Errorf("shares of an exempt level: %g", got)
	}
}

func findLevel(levels map[string]*flowcontrolv1.PriorityLevelConfiguration, name string) *flowcontrolv1.PriorityLevelConfiguration {
	if pl, ok := levels[name]; ok {
		return pl
	}
	return &flowcontrolv1.PriorityLevelConfiguration{}
}

// FuzzSubjectOf: whatever a herd_stampede_subjects label holds, a subject
// herd accepts is one it may put in a FlowSchema: no wildcard, no group but
// the kubelets', no unauthenticated user, and the identity APF sees for it
// matches it.
func FuzzSubjectOf(f *testing.F) {
	for _, s := range []string{"group:system:nodes", "serviceaccount:kube-system:cilium", "user:cilium-dev", "user:system:anonymous",
		"group:system:authenticated", "user:*", "serviceaccount:a:b:c", "user:", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sub, id, why := apfguard.SubjectOf(s)
		if why != "" {
			if sub.Kind != "" || id != "" {
				t.Fatalf("%q passed over (%s) with a subject %+v %q", s, why, sub, id)
			}
			return
		}
		if !apfmatch.MatchesASubject(apfmatch.UserOf(id), []flowcontrolv1.Subject{sub}) {
			t.Fatalf("%q: subject %+v does not match its identity %q", s, sub, id)
		}
		if apfmatch.MatchesASubject(apfmatch.UserOf("system:serviceaccount:elsewhere:someone-else"), []flowcontrolv1.Subject{sub}) &&
			id != "system:serviceaccount:elsewhere:someone-else" {
			t.Fatalf("%q: subject %+v matches an unrelated service account", s, sub)
		}
		switch sub.Kind {
		case flowcontrolv1.SubjectKindGroup:
			if sub.Group.Name != "system:nodes" {
				t.Fatalf("%q: group %q", s, sub.Group.Name)
			}
		case flowcontrolv1.SubjectKindUser:
			if sub.User.Name == "*" || nodeclient.Unauthenticated(sub.User.Name) {
				t.Fatalf("%q: user %q", s, sub.User.Name)
			}
		case flowcontrolv1.SubjectKindServiceAccount:
			if sub.ServiceAccount.Name == "*" {
				t.Fatalf("%q: every service account of %s", s, sub.ServiceAccount.Namespace)
			}
		default:
			t.Fatalf("%q: kind %q", s, sub.Kind)
		}
	})
}
