package action

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// Isolate and quarantine on the fake clientset: every guard, and the one
// apply or delete each decision makes (the fake applies without
// preconditions; apiserver_test.go runs the writes on a real apiserver).

// clusterSchemas are the apiserver's FlowSchemas and herd's installed
// priority levels, as objects for the fake.
func clusterSchemas() []runtime.Object {
	var out []runtime.Object
	for _, fs := range apiserverSchemas() {
		out = append(out, fs)
	}
	return append(out, installedLevels()...)
}

// installedLevels are herd's priority levels as the chart installs them.
func installedLevels() []runtime.Object {
	return []runtime.Object{
		installed(IsolateLevel, IsolateLevelSpec(policy.Default().Actions.Isolate)),
		installed(ProtectLevel, ProtectLevelSpec(policy.Default().Actions.Protect)),
		installed(QuarantineLevel, QuarantineLevelSpec()),
	}
}

func installed(name string, spec flowcontrolv1.PriorityLevelConfigurationSpec) *flowcontrolv1.PriorityLevelConfiguration {
	return &flowcontrolv1.PriorityLevelConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: "uid-" + types.UID(name), ResourceVersion: "3", Labels: map[string]string{"app.kubernetes.io/managed-by": "Helm"}},
		Spec:       spec,
	}
}

// without returns objs less the priority level named name.
func without(objs []runtime.Object, name string) []runtime.Object {
	var out []runtime.Object
	for _, o := range objs {
		if pl, ok := o.(*flowcontrolv1.PriorityLevelConfiguration); ok && pl.Name == name {
			continue
		}
		out = append(out, o)
	}
	return out
}

// applies are the fake's recorded server-side applies.
func (f *fixture) applies() []k8stesting.PatchActionImpl {
	var out []k8stesting.PatchActionImpl
	for _, p := range f.patches() {
		if p.PatchType == types.ApplyPatchType {
			out = append(out, p)
		}
	}
	return out
}

// slotObj is a FlowSchema in one of herd's slots.
func slotObj(name string, owned bool, ann map[string]string, rules int) *flowcontrolv1.FlowSchema {
	fs := &flowcontrolv1.FlowSchema{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), ResourceVersion: "7", Annotations: ann},
		Spec:       flowcontrolv1.FlowSchemaSpec{MatchingPrecedence: 450, PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: IsolateLevel}},
	}
	for range rules {
		fs.Spec.Rules = append(fs.Spec.Rules, catchEverything)
	}
	if owned {
		fs.Labels = map[string]string{ManagedByLabel: ManagedByValue}
	}
	return fs
}

func ann(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// strict is someone's FlowSchema that serves matching users' requests at a
// given precedence.
func strict(name string, precedence int32, subject flowcontrolv1.Subject) *flowcontrolv1.FlowSchema {
	return &flowcontrolv1.FlowSchema{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: flowcontrolv1.FlowSchemaSpec{MatchingPrecedence: precedence, Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
			Subjects:      []flowcontrolv1.Subject{subject},
			ResourceRules: catchEverything.ResourceRules,
		}}},
	}
}

func (f *fixture) assertNoWrites(t *testing.T) {
	t.Helper()
	if w := f.writes(); len(w) != 0 {
		t.Errorf("wrote %q", w)
	}
}

// assertRefunded checks that action a's budget of 1 per hour is unspent.
func (f *fixture) assertRefunded(t *testing.T, a policy.Action) {
	t.Helper()
	if r := f.env.Budget.Take(a); r != nil {
		t.Errorf("the budget was not refunded: %v", r)
	}
}

var (
	stormRate = evidence.RelistRate("5m", "cni", "cilium", "pods", "")
	stormIDs  = evidence.RelistIdentities("cni", "cilium", "pods", "")
	// Without audit (docs/apf-measurement.md).
	measuredIDs   = evidence.MeasuredIdentities("5m", "cni", "cilium", "pods", "")
	isolatedLists = evidence.IsolatedLists("5m", "cni", "cilium", "pods", "")
	stormKey      = ann(AnnotationAction, "isolate", AnnotationRole, "cni", AnnotationClient, "cilium", AnnotationResource, "pods")
)

func stormAlert(kv ...string) alert.Alert {
	return firing(append([]string{"alertname", "HerdRelistStorm", "role", "cni", "client", "cilium", "resource", "pods"}, kv...)...)
}

func withKey(base map[string]string, kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for k, v := range ann(kv...) {
		m[k] = v
	}
	return m
}

func TestIsolateFire(t *testing.T) {
	confirmed := map[string][]evidence.Sample{
		stormRate: {sample(12.5)},
		stormIDs:  {sample(3, "identity", "system:serviceaccount:kube-system:cilium")},
	}
	cases := []struct {
		name     string
		objs     []runtime.Object
		evidence map[string][]evidence.Sample
		evErr    map[string]error
		unsynced bool // the APF cache has not synced
		noLevel  bool // herd-isolate is not installed (objs may hold another)
		cfg      func(*policy.Config)
		spend    bool // the budget is spent before
		alert    alert.Alert
		want     want
		event    string
		refunded bool
	}{
		{
			name:  "role other",
			alert: firing("alertname", "HerdRelistStorm", "role", "other", "client", "cilium", "resource", "pods"),
			want:  want{result: Refused, guard: guard.LabelValidation, reason: `label role="other" is not valid: not a node-side client role`},
			event: "Lease/herd-responder HerdIsolateRefused",
		},
		{
			name:  "Prometheus returns nothing",
			alert: stormAlert(),
			want: want{result: Refused, guard: guard.Verification,
				reason: `Prometheus does not confirm that cilium relists pods at more than 0.5/s: sum(herd:relists_by_resource:rate5m{client="cilium", resource="pods", role="cni"}) returned nothing`},
			event: "Lease/herd-responder HerdIsolateRefused",
		},
		{
			name:     "the storm is over",
			evidence: map[string][]evidence.Sample{stormRate: {sample(0.2)}},
			alert:    stormAlert(),
			want: want{result: Refused, guard: guard.Verification,
				reason: `Prometheus does not confirm that cilium relists pods at more than 0.5/s: sum(herd:relists_by_resource:rate5m{client="cilium", resource="pods", role="cni"}) = 0.2, not above 0.5`},
			event: "Lease/herd-responder HerdIsolateRefused",
		},
		{
			name:  "Prometheus unavailable",
			evErr: map[string]error{stormRate: evidence.ErrUnavailable},
			alert: stormAlert(),
			want:  want{result: Failed, reason: "read evidence"},
			event: "Lease/herd-responder HerdIsolateFailed",
		},
		{
			name:     "identities unavailable",
			evidence: map[string][]evidence.Sample{stormRate: {sample(3)}},
			evErr:    map[string]error{stormIDs: evidence.ErrUnavailable},
			alert:    stormAlert(),
			want:     want{result: Failed, reason: "read evidence"},
			event:    "Lease/herd-responder HerdIsolateFailed",
		},
		{
			name:     "no identities",
			evidence: map[string][]evidence.Sample{stormRate: {sample(3)}, stormIDs: {sample(3)}},
			alert:    stormAlert(),
			want: want{result: Refused, guard: guard.Verification,
				reason: "Prometheus names no identity of the client among herd's top relisting instances (herd_instance_relists) nor among its APF measurement schemas (herd:apf_lists): nothing to put in a FlowSchema"},
			event: "Lease/herd-responder HerdIsolateRefused",
		},
		{
			name:     "without audit, a group of every caller is never a subject",
			evidence: map[string][]evidence.Sample{stormRate: {sample(12.5)}, measuredIDs: {sample(3600, "identity", "group:system:authenticated")}},
			alert:    stormAlert(),
			want:     want{result: Refused, guard: guard.Verification, reason: `group "system:authenticated" takes in callers that are not one client's fleet: herd never isolates it`},
			event:    "Lease/herd-responder HerdIsolateRefused",
		},
		{
			// While herd's isolation stands the client's LISTs leave its
			// measurement schemas: the isolate schema's own LISTs carry its
			// subjects' evidence, and the decision sees the slot in place.
			name: "without audit, during the isolation",
			objs: []runtime.Object{func() *flowcontrolv1.FlowSchema {
				fs := slotObj("herd-isolate-1", true, withKey(stormKey, AnnotationExpiresAt, "2025-03-04T11:00:00Z"), 0)
				fs.Spec.Rules = []flowcontrolv1.PolicyRulesWithSubjects{{Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindServiceAccount,
					ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}}}, ResourceRules: catchEverything.ResourceRules}}
				return fs
			}()},
			evidence: map[string][]evidence.Sample{stormRate: {sample(12.5)}, isolatedLists: {sample(3000, "flow_schema", "herd-isolate-1")}},
			alert:    stormAlert(),
			want:     want{result: Noop, reason: "FlowSchema herd-isolate-1 already isolates cilium's LISTs of pods (until 2025-03-04T11:00:00Z)"},
			event:    "FlowSchema/herd-isolate-1 HerdIsolateNoop",
		},
		{
			name:     "a wildcard identity",
			evidence: map[string][]evidence.Sample{stormRate: {sample(3)}, stormIDs: {sample(3, "identity", "*")}},
			alert:    stormAlert(),
			want:     want{result: Refused, guard: guard.LabelValidation, reason: `identity "*" is not a user name`},
			event:    "Lease/herd-responder HerdIsolateRefused",
		},
		{
			// Issue 16, point 1: an anonymous flood claiming calico-node's
			// user agent, next to the real calico-node service account that
			// made one ordinary LIST. Neither is a subject.
			name: "an anonymous flood and an innocent identity",
			evidence: map[string][]evidence.Sample{stormRate: {sample(80)}, stormIDs: {
				sample(4800, "identity", "system:anonymous"),
				sample(1, "identity", "system:serviceaccount:calico-system:calico-node"),
			}},
			alert: stormAlert(),
			want: want{result: Refused, guard: guard.Verification,
				reason: "no identity of the client storms itself: herd_instance_relists shows system:anonymous (4800, unauthenticated), system:serviceaccount:calico-system:calico-node (1), and a subject needs at least 3 relists of its own (actions.isolate.minSubjectRelists) and an authenticated identity"},
			event: "Lease/herd-responder HerdIsolateRefused",
		},
		{
			name:     "the cluster label scopes both queries",
			evidence: confirmed,
			alert:    stormAlert("cluster", "eu"),
			want: want{result: Refused, guard: guard.Verification,
				has: `sum(herd:relists_by_resource:rate5m{client="cilium", cluster="eu", resource="pods", role="cni"}) returned nothing`},
			event: "Lease/herd-responder HerdIsolateRefused",
		},
		{
			name:     "the cache has not synced",
			unsynced: true,
			evidence: confirmed,
			alert:    stormAlert(),
			want:     want{result: Failed, reason: "read FlowSchemas"},
			event:    "Lease/herd-responder HerdIsolateFailed",
		},
		{
			name: "all slots in use",
			objs: []runtime.Object{
				slotObj("herd-isolate-1", true, ann(AnnotationAction, "isolate", AnnotationClient, "calico"), 1),
				slotObj("herd-isolate-2", false, nil, 1),
			},
			cfg:      func(c *policy.Config) { c.Actions.Isolate.MaxManagedFlowSchemas = 2 },
			evidence: confirmed,
			alert:    stormAlert(),
			want: want{result: Refused, guard: guard.MaxManagedFlowSchemas,
				reason: "all 2 FlowSchema slots herd-isolate-1..2 are in use (actions.isolate.maxManagedFlowSchemas)"},
			event: "Lease/herd-responder HerdIsolateRefused",
		},
		{
			name:     "already isolated",
			objs:     []runtime.Object{slotObj("herd-isolate-1", true, withKey(stormKey, AnnotationExpiresAt, "2025-03-04T11:00:00Z"), 1)},
			evidence: confirmed,
			alert:    stormAlert(),
			want:     want{result: Noop, reason: "FlowSchema herd-isolate-1 already isolates cilium's LISTs of pods (until 2025-03-04T11:00:00Z)"},
			event:    "FlowSchema/herd-isolate-1 HerdIsolateNoop",
		},
		{
			name:     "a person holds the slot",
			objs:     []runtime.Object{slotObj("herd-isolate-1", true, withKey(stormKey, "herd.dev/exclude", ""), 1)},
			evidence: confirmed,
			alert:    stormAlert(),
			want:     want{result: Refused, guard: guard.Excluded, reason: "FlowSchema herd-isolate-1 is annotated herd.dev/exclude: a person holds it"},
			event:    "Lease/herd-responder HerdIsolateRefused",
		},
		{
			name: "no precedence fits",
			objs: []runtime.Object{strict("cilium-first", 401, flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindServiceAccount,
				ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}})},
			evidence: confirmed,
			alert:    stormAlert(),
			want: want{result: Refused, guard: guard.Precedence,
				reason: "the client's LISTs are served by FlowSchema cilium-first at precedence 401; herd's schema must come after system-node-high (400) and before it"},
			event:    "FlowSchema/herd-isolate-1 HerdIsolateRefused",
			refunded: true,
		},
		{
			name:     "the priority level rejects",
			noLevel:  true,
			objs:     []runtime.Object{installed(IsolateLevel, QuarantineLevelSpec())},
			evidence: confirmed,
			alert:    stormAlert(),
			want: want{result: Refused, guard: guard.PriorityLevel,
				reason: "PriorityLevelConfiguration herd-isolate answers excess with Reject, not Queue: it would reject the isolated client's LISTs instead of slowing them; herd's isolate needs the level the chart installs (manifests/apf/herd.yaml)"},
			event:    "Lease/herd-responder HerdIsolateRefused",
			refunded: true,
		},
		{
			name:     "the priority level is exempt",
			noLevel:  true,
			objs:     []runtime.Object{installed(IsolateLevel, flowcontrolv1.PriorityLevelConfigurationSpec{Type: flowcontrolv1.PriorityLevelEnablementExempt})},
			evidence: confirmed,
			alert:    stormAlert(),
			want:     want{result: Refused, guard: guard.PriorityLevel, has: "is of type Exempt, not Limited"},
			event:    "Lease/herd-responder HerdIsolateRefused",
		},
		{
			name:     "budget spent",
			evidence: confirmed,
			spend:    true,
			alert:    stormAlert(),
			want: want{result: Refused, guard: guard.MaxActionsPerHour,
				reason: "1 isolate actions in the last hour, the limit is 1 (guards.maxActionsPerHour); pausing isolate for 30m0s"},
			event: "FlowSchema/herd-isolate-1 HerdIsolateRefused",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := clusterSchemas()
			if tc.noLevel {
				objs = without(objs, IsolateLevel)
			}
			f := newFixture(t, oneAnHour(policy.ActionIsolate, tc.cfg), append(objs, tc.objs...)...)
			if tc.unsynced {
				f.env.APF = NewAPFCache(f.client)
			}
			f.q.setAll(tc.evidence)
			f.q.errs = tc.evErr
			if tc.spend {
				f.spend(t, policy.ActionIsolate)
			}
			d := f.run(NewIsolate(f.env).Fire(tc.alert))
			f.checkFired(t, d, tc.want, tc.event)
			f.assertNoWrites(t)
			if tc.refunded {
				f.assertRefunded(t, policy.ActionIsolate)
			}
		})
	}
}

// TestIsolateAppliesWithoutAudit: with no audit feed (docs/apf-measurement.md),
// each identity's own measurement schema is its evidence: the one write's
// subjects are the identities whose schemas counted at least
// minSubjectRelists LISTs in the window, a kubelet fleet as its group.
func TestIsolateAppliesWithoutAudit(t *testing.T) {
	sa := func(ns, n string) flowcontrolv1.Subject {
		return flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: ns, Name: n}}
	}
	for _, tc := range []struct {
		name     string
		measured []evidence.Sample
		want     []flowcontrolv1.Subject
	}{
		{"service accounts", []evidence.Sample{
			sample(3600, "identity", "system:serviceaccount:kube-system:cilium"),
			sample(1, "identity", "system:serviceaccount:cilium:cilium"), // one LIST in the window: no evidence of its own
		}, []flowcontrolv1.Subject{sa("kube-system", "cilium")}},
		{"the kubelets' group", []evidence.Sample{sample(3600, "identity", "group:system:nodes")},
			[]flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: "system:nodes"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, clusterSchemas()...)
			f.q.set(stormRate, sample(12.5))
			f.q.set(measuredIDs, tc.measured...)
			d := f.run(NewIsolate(f.env).Fire(stormAlert()))
			want{result: Applied, has: "isolated cilium's LISTs of pods from 1 identities in FlowSchema herd-isolate-1"}.check(t, d)
			if len(d.Evidence) != 3 || d.Evidence[1].Query != stormIDs || d.Evidence[2].Query != measuredIDs || !d.Evidence[2].Confirmed {
				t.Errorf("evidence %+v: want the rate, the audit identities (none), the measured ones", d.Evidence)
			}
			var fs flowcontrolv1.FlowSchema
			if err := json.Unmarshal(f.applies()[0].Patch, &fs); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fs.Spec.Rules[0].Subjects, tc.want) {
				t.Errorf("subjects %+v, want %+v", fs.Spec.Rules[0].Subjects, tc.want)
			}
		})
	}
}

// TestIsolateApplies: the decision's one write, a server-side apply of the
// slot with only the storming identities as subjects; in dry-run mode, its
// server-side dry run, with the object in the decision.
func TestIsolateApplies(t *testing.T) {
	ids := []evidence.Sample{
		sample(40, "identity", "system:serviceaccount:kube-system:cilium"),
		sample(12, "identity", "system:serviceaccount:cilium:cilium"),
		// Issue 16: these share the client label but carry no evidence
		// of their own.
		sample(1, "identity", "system:serviceaccount:kube-system:cilium-operator"),
		sample(4800, "identity", "system:anonymous"),
		sample(900, "identity", "system:unauthenticated:forged"),
	}
	for _, tc := range []struct {
		name   string
		dryRun bool
		level  bool // herd-isolate installed
		result Result
	}{
		{"acting", false, true, Applied},
		{"acting without the level: created first", false, false, Applied},
		{"dry run", true, true, DryRun},
		{"dry run without the level: nothing created", true, false, DryRun},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := clusterSchemas()
			if !tc.level {
				objs = without(objs, IsolateLevel)
			}
			f := newFixture(t, func(c *policy.Config) { c.DryRun = tc.dryRun }, objs...)
			f.q.set(stormRate, sample(12.5))
			f.q.set(stormIDs, ids...)
			d := f.run(NewIsolate(f.env).Fire(stormAlert()))
			want{result: tc.result, has: "isolated cilium's LISTs of pods from 2 identities in FlowSchema herd-isolate-1 (precedence 450, before kube-system-service-accounts at 900) to priority level herd-isolate (2 shares, 16 queues), until 2025-03-04T11:00:00Z"}.check(t, d)
			if got := f.rec.reasons(); !reflect.DeepEqual(got, []string{"FlowSchema/herd-isolate-1 HerdIsolate" + reasonSuffix[tc.result]}) {
				t.Errorf("events %q", got)
			}
			wantWrites := []string{"patch flowschemas/herd-isolate-1"}
			if !tc.level && !tc.dryRun {
				// Once, on a cluster where herd's levels were not installed.
				wantWrites = append([]string{"patch prioritylevelconfigurations/herd-isolate"}, wantWrites...)
				if !strings.Contains(d.Reason, "created priority level herd-isolate first: it was not installed") {
					t.Errorf("reason %q does not say the level was created", d.Reason)
				}
				pl, err := f.client.FlowcontrolV1().PriorityLevelConfigurations().Get(context.Background(), IsolateLevel, metav1.GetOptions{})
				if err != nil || !reflect.DeepEqual(pl.Spec, IsolateLevelSpec(f.env.Config.Actions.Isolate)) || pl.Labels[ManagedByLabel] != "" ||
					pl.Labels["app.kubernetes.io/part-of"] != "herd" {
					t.Errorf("created level %+v (%v)", pl, err)
				}
			}
			if w := f.writes(); !reflect.DeepEqual(w, wantWrites) {
				t.Fatalf("writes %q, want %q", w, wantWrites)
			}
			p := f.applies()[len(wantWrites)-1]
			if p.PatchOptions.FieldManager != FieldManager || p.PatchOptions.Force == nil || !*p.PatchOptions.Force ||
				!reflect.DeepEqual(p.PatchOptions.DryRun, dryRunOpt(tc.dryRun)) {
				t.Errorf("apply options %+v", p.PatchOptions)
			}
			var fs flowcontrolv1.FlowSchema
			if err := json.Unmarshal(p.Patch, &fs); err != nil {
				t.Fatal(err)
			}
			wantSubjects := []flowcontrolv1.Subject{
				{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "cilium", Name: "cilium"}},
				{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}},
			}
			if len(fs.Spec.Rules) != 1 || !reflect.DeepEqual(fs.Spec.Rules[0].Subjects, wantSubjects) {
				t.Errorf("subjects %+v, want only the two that storm themselves", fs.Spec.Rules)
			}
			rr := fs.Spec.Rules[0].ResourceRules
			if len(rr) != 1 || !reflect.DeepEqual(rr[0].Verbs, []string{"list"}) || !reflect.DeepEqual(rr[0].Resources, []string{"pods"}) {
				t.Errorf("resource rules %+v", rr)
			}
			if fs.Labels[ManagedByLabel] != ManagedByValue || fs.Spec.PriorityLevelConfiguration.Name != IsolateLevel ||
				fs.Spec.MatchingPrecedence != 450 || fs.Annotations[AnnotationExpiresAt] != "2025-03-04T11:00:00Z" ||
				fs.ResourceVersion != "" || fs.UID != "" {
				t.Errorf("applied %s", p.Patch)
			}
			if d.Object == nil {
				t.Error("the decision does not carry the applied object")
			}
			// The budget was spent, acting or not.
			if r := f.env.Budget.Take(policy.ActionIsolate); r != nil {
				t.Errorf("budget: %v", r)
			}
			if tc.dryRun {
				return
			}
			// The next alert sees the slot before the watch does.
			fs2, err := f.env.APF.FlowSchema("herd-isolate-1")
			if err != nil || fs2 == nil {
				t.Fatalf("the cache does not show herd's write: %v %v", fs2, err)
			}
			want{result: Noop, has: "FlowSchema herd-isolate-1 already isolates cilium's LISTs of pods"}.check(t, f.run(NewIsolate(f.env).Fire(stormAlert())))
		})
	}
}

// The evidence an isolate decision names: the rate and the identities.
func TestIsolateEvidence(t *testing.T) {
	f := newFixture(t, nil, append(installedLevels(), slotObj("herd-isolate-1", true, stormKey, 1))...)
	f.q.set(stormRate, sample(12.5))
	f.q.set(stormIDs, sample(3, "identity", "system:serviceaccount:kube-system:cilium"), sample(1, "identity", ""))
	d := f.run(NewIsolate(f.env).Fire(stormAlert()))
	want{result: Noop}.check(t, d)
	wantEv := []evidence.Check{
		{Query: stormRate, Value: 12.5, Series: 1, Confirmed: true},
		{Query: stormIDs, Series: 1, Confirmed: true},
	}
	if !reflect.DeepEqual(d.Evidence, wantEv) {
		t.Errorf("evidence %+v\nwant %+v", d.Evidence, wantEv)
	}
	if d.Target != "flowschema/herd-isolate-1" {
		t.Errorf("target %q", d.Target)
	}
}

func TestIsolateResolve(t *testing.T) {
	resolve := resolved("alertname", "HerdRelistStorm", "role", "cni", "client", "cilium", "resource", "pods")
	cases := []struct {
		name    string
		objs    []runtime.Object
		cfg     func(*policy.Config)
		notLead bool
		want    want
		event   string
		deleted bool
		applied bool
	}{
		{
			name:  "no schema",
			objs:  []runtime.Object{slotObj("herd-isolate-1", true, ann(AnnotationAction, "isolate", AnnotationClient, "calico"), 1)},
			want:  want{result: Noop, reason: "no FlowSchema of herd's serves this alert"},
			event: "Lease/herd-responder HerdIsolateNoop",
		},
		{
			name:  "a schema not herd's is never resolved",
			objs:  []runtime.Object{slotObj("herd-isolate-1", false, stormKey, 1)},
			want:  want{result: Noop, reason: "no FlowSchema of herd's serves this alert"},
			event: "Lease/herd-responder HerdIsolateNoop",
		},
		{
			name:  "already in its hold-down",
			objs:  []runtime.Object{slotObj("herd-isolate-2", true, withKey(stormKey, AnnotationResolvedAt, "2025-03-04T09:55:00Z"), 1)},
			want:  want{result: Noop, reason: "FlowSchema herd-isolate-2 is already in its hold-down since 2025-03-04T09:55:00Z"},
			event: "FlowSchema/herd-isolate-2 HerdIsolateNoop",
		},
		{
			name:  "changed by someone",
			objs:  []runtime.Object{slotObj("herd-isolate-1", true, stormKey, 2)},
			want:  want{result: Refused, guard: guard.Ownership, reason: "FlowSchema herd-isolate-1 has 2 rules; herd writes one, so someone changed it"},
			event: "FlowSchema/herd-isolate-1 HerdIsolateRefused",
		},
		{
			name:  "excluded",
			objs:  []runtime.Object{slotObj("herd-isolate-1", true, withKey(stormKey, "herd.dev/exclude", "keep"), 1)},
			cfg:   func(c *policy.Config) { c.Actions.Isolate.HoldDown = 0 },
			want:  want{result: Refused, guard: guard.Excluded, reason: "FlowSchema herd-isolate-1 is annotated herd.dev/exclude: a person holds it"},
			event: "FlowSchema/herd-isolate-1 HerdIsolateRefused",
		},
		{
			name:  "no hold-down: deleted",
			objs:  []runtime.Object{slotObj("herd-isolate-1", true, stormKey, 1)},
			cfg:   func(c *policy.Config) { c.Actions.Isolate.HoldDown = 0 },
			want:  want{result: Applied, reason: "removed FlowSchema herd-isolate-1: its alert resolved"},
			event: "FlowSchema/herd-isolate-1 HerdIsolateApplied", deleted: true,
		},
		{
			name:    "not the leader",
			objs:    []runtime.Object{slotObj("herd-isolate-1", true, stormKey, 1)},
			cfg:     func(c *policy.Config) { c.Actions.Isolate.HoldDown = 0 },
			notLead: true,
			want:    want{result: Failed, reason: "resolve"},
			event:   "FlowSchema/herd-isolate-1 HerdIsolateFailed",
		},
		{
			name:    "marked resolved: one apply, with the cached version as precondition",
			objs:    []runtime.Object{slotObj("herd-isolate-1", true, stormKey, 1)},
			want:    want{result: Applied, reason: "marked FlowSchema herd-isolate-1 resolved; it is removed after the hold-down, at 2025-03-04T10:10:00Z"},
			event:   "FlowSchema/herd-isolate-1 HerdIsolateApplied",
			applied: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.cfg, tc.objs...)
			f.setLeader(!tc.notLead)
			d := f.run(NewIsolate(f.env).Resolve(resolve))
			f.checkDecision(t, d, tc.want, tc.event)
			switch {
			case tc.deleted:
				assertDeleted(t, f, "herd-isolate-1", nil)
			case tc.applied:
				if len(f.writes()) != 1 || len(f.applies()) != 1 {
					t.Fatalf("writes %q, want one apply", f.writes())
				}
				var fs flowcontrolv1.FlowSchema
				if err := json.Unmarshal(f.applies()[0].Patch, &fs); err != nil {
					t.Fatal(err)
				}
				if fs.ResourceVersion != "7" || fs.UID != "uid-herd-isolate-1" || fs.Annotations[AnnotationResolvedAt] != "2025-03-04T10:00:00Z" ||
					fs.Annotations[AnnotationClient] != "cilium" || len(fs.Spec.Rules) != 1 {
					t.Errorf("applied %s", f.applies()[0].Patch)
				}
			default:
				f.assertNoWrites(t)
			}
		})
	}
}

// assertDeleted checks the one write: a delete of name with preconditions.
func assertDeleted(t *testing.T, f *fixture, name string, dryRun []string) {
	t.Helper()
	var dels []k8stesting.DeleteActionImpl
	for _, a := range f.client.Actions() {
		if d, ok := a.(k8stesting.DeleteActionImpl); ok {
			dels = append(dels, d)
		}
	}
	if len(dels) != 1 || len(f.writes()) != 1 {
		t.Fatalf("writes %q, want one delete of %s", f.writes(), name)
	}
	d := dels[0]
	p := d.DeleteOptions.Preconditions
	if d.Name != name || p == nil || p.UID == nil || *p.UID != types.UID("uid-"+name) || p.ResourceVersion == nil || *p.ResourceVersion != "7" {
		t.Errorf("delete %s with preconditions %+v", d.Name, p)
	}
	if !reflect.DeepEqual(d.DeleteOptions.DryRun, dryRun) {
		t.Errorf("delete DryRun %q, want %q", d.DeleteOptions.DryRun, dryRun)
	}
	_, err := f.client.FlowcontrolV1().FlowSchemas().Get(context.Background(), name, metav1.GetOptions{})
	if gone := apierrors.IsNotFound(err); gone != (dryRun == nil) {
		t.Errorf("after the delete (dry run %v), get: %v", dryRun, err)
	}
}

const ghost = "system:node:ghost-1"

var ghostQuery = evidence.GhostIdentity(ghost, "")

func ghostAlert(identity string) alert.Alert {
	return firing("alertname", "HerdGhostNodeClient", "identity", identity)
}

func TestQuarantineFire(t *testing.T) {
	confirmed := map[string][]evidence.Sample{ghostQuery: {sample(1)}}
	qKey := ann(AnnotationAction, "quarantine", AnnotationIdentity, ghost)
	cases := []struct {
		name     string
		objs     []runtime.Object
		evidence map[string][]evidence.Sample
		nodes    nodeCounter
		noLevel  bool // herd-quarantine is not installed (objs may hold another)
		cfg      func(*policy.Config)
		spend    bool
		alert    alert.Alert
		want     want
		event    string
		refunded bool
	}{
		{
			name:  "no identity",
			alert: firing("alertname", "HerdGhostNodeClient"),
			want:  want{result: Refused, guard: guard.LabelValidation, reason: "the alert has no identity label"},
			event: "Lease/herd-responder HerdQuarantineRefused",
		},
		{
			name:  "identity too long",
			alert: ghostAlert("system:node:" + strings.Repeat("a", 300)),
			want:  want{result: Refused, guard: guard.LabelValidation, has: "is not valid: too long"},
			event: "Lease/herd-responder HerdQuarantineRefused",
		},
		{
			name:  "a service account is shared",
			alert: ghostAlert("system:serviceaccount:kube-system:kube-proxy"),
			want: want{result: Refused, guard: guard.SharedIdentity,
				reason: `identity "system:serviceaccount:kube-system:kube-proxy" is not a per-node identity (system:node:<name>); a shared identity is used by every node, and rejecting it would cut them all`},
			event: "Lease/herd-responder HerdQuarantineRefused",
		},
		{
			name:  "a plain user is not per-node",
			alert: ghostAlert("system:kube-proxy"),
			want:  want{result: Refused, guard: guard.SharedIdentity, has: `identity "system:kube-proxy" is not a per-node identity`},
			event: "Lease/herd-responder HerdQuarantineRefused",
		},
		{
			name:  "not a node name",
			alert: ghostAlert("system:node:Ghost_1"),
			want:  want{result: Refused, guard: guard.LabelValidation, has: `identity "system:node:Ghost_1" does not name a valid node: a lowercase RFC 1123 subdomain`},
			event: "Lease/herd-responder HerdQuarantineRefused",
		},
		{
			name:  "the node wildcard",
			alert: ghostAlert("system:node:*"),
			want:  want{result: Refused, guard: guard.LabelValidation, has: `identity "system:node:*" does not name a valid node`},
			event: "Lease/herd-responder HerdQuarantineRefused",
		},
		{
			name:  "Prometheus returns nothing",
			alert: ghostAlert(ghost),
			want: want{result: Refused, guard: guard.Verification,
				reason: `Prometheus does not confirm system:node:ghost-1 is a ghost client: max(herd:ghost_instance:max{identity="system:node:ghost-1"}) returned nothing`},
			event: "Lease/herd-responder HerdQuarantineRefused",
		},
		{
			name:     "the node exists",
			nodes:    nodeCounter{total: 3, existing: []string{"ghost-0", "ghost-1"}},
			evidence: confirmed,
			alert:    ghostAlert(ghost),
			want: want{result: Refused, guard: guard.Verification,
				reason: "node ghost-1 exists: its kubelet may be the one calling from an unknown address, and quarantining system:node:ghost-1 would cut a live node"},
			event: "Lease/herd-responder HerdQuarantineRefused",
		},
		{
			name:     "the Node cache has not synced",
			nodes:    nodeCounter{err: errNodesNotSynced},
			evidence: confirmed,
			alert:    ghostAlert(ghost),
			want:     want{result: Failed, reason: "read node ghost-1"},
			event:    "Lease/herd-responder HerdQuarantineFailed",
		},
		{
			name:     "all slots in use",
			objs:     []runtime.Object{slotObj("herd-quarantine-1", true, ann(AnnotationIdentity, "system:node:other"), 1), slotObj("herd-quarantine-2", true, nil, 1)},
			cfg:      func(c *policy.Config) { c.Actions.Quarantine.MaxManagedFlowSchemas = 2 },
			evidence: confirmed,
			alert:    ghostAlert(ghost),
			want: want{result: Refused, guard: guard.MaxManagedFlowSchemas,
				reason: "all 2 FlowSchema slots herd-quarantine-1..2 are in use (actions.quarantine.maxManagedFlowSchemas)"},
			event: "Lease/herd-responder HerdQuarantineRefused",
		},
		{
			name:     "isolate's slots are not quarantine's",
			objs:     []runtime.Object{slotObj("herd-isolate-1", true, qKey, 1)},
			cfg:      func(c *policy.Config) { c.Actions.Quarantine.MaxManagedFlowSchemas = 1 },
			evidence: confirmed,
			spend:    true,
			alert:    ghostAlert(ghost),
			want:     want{result: Refused, guard: guard.MaxActionsPerHour},
			event:    "FlowSchema/herd-quarantine-1 HerdQuarantineRefused",
		},
		{
			name:     "already quarantined",
			objs:     []runtime.Object{slotObj("herd-quarantine-1", true, withKey(qKey, AnnotationExpiresAt, "2025-03-05T10:00:00Z"), 1)},
			evidence: confirmed,
			alert:    ghostAlert(ghost),
			want:     want{result: Noop, reason: "FlowSchema herd-quarantine-1 already quarantines system:node:ghost-1 (until 2025-03-05T10:00:00Z)"},
			event:    "FlowSchema/herd-quarantine-1 HerdQuarantineNoop",
		},
		{
			name:     "a person holds the slot",
			objs:     []runtime.Object{slotObj("herd-quarantine-1", true, withKey(qKey, "herd.dev/exclude", ""), 1)},
			evidence: confirmed,
			alert:    ghostAlert(ghost),
			want:     want{result: Refused, guard: guard.Excluded, reason: "FlowSchema herd-quarantine-1 is annotated herd.dev/exclude: a person holds it"},
			event:    "Lease/herd-responder HerdQuarantineRefused",
		},
		{
			name: "a schema before herd's serves the identity",
			objs: []runtime.Object{strict("nodes-first", 250, flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindGroup,
				Group: &flowcontrolv1.GroupSubject{Name: "system:nodes"}})},
			evidence: confirmed,
			alert:    ghostAlert(ghost),
			want: want{result: Refused, guard: guard.Precedence,
				reason: "FlowSchema nodes-first serves system:node:ghost-1 at precedence 250, before herd's quarantine at 300"},
			event:    "FlowSchema/herd-quarantine-1 HerdQuarantineRefused",
			refunded: true,
		},
		{
			name:     "the priority level does not reject",
			noLevel:  true,
			objs:     []runtime.Object{installed(QuarantineLevel, IsolateLevelSpec(policy.Default().Actions.Isolate))},
			evidence: confirmed,
			alert:    ghostAlert(ghost),
			want: want{result: Refused, guard: guard.PriorityLevel,
				reason: "PriorityLevelConfiguration herd-quarantine does not reject: a quarantined identity's requests would be served; herd's quarantine needs the level the chart installs (manifests/apf/herd.yaml)"},
			event:    "Lease/herd-responder HerdQuarantineRefused",
			refunded: true,
		},
		{
			name:     "applied",
			evidence: confirmed,
			alert:    ghostAlert(ghost),
			want: want{result: Applied,
				reason: "quarantined system:node:ghost-1 (node ghost-1 does not exist) in FlowSchema herd-quarantine-1 (precedence 300) to priority level herd-quarantine, which rejects at once; until 2025-03-05T10:00:00Z"},
			event: "FlowSchema/herd-quarantine-1 HerdQuarantineApplied",
		},
		{
			name:     "budget spent",
			evidence: confirmed,
			spend:    true,
			alert:    ghostAlert(ghost),
			want: want{result: Refused, guard: guard.MaxActionsPerHour,
				reason: "1 quarantine actions in the last hour, the limit is 1 (guards.maxActionsPerHour); pausing quarantine for 30m0s"},
			event: "FlowSchema/herd-quarantine-1 HerdQuarantineRefused",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := clusterSchemas()
			if tc.noLevel {
				objs = without(objs, QuarantineLevel)
			}
			f := newFixture(t, oneAnHour(policy.ActionQuarantine, tc.cfg), append(objs, tc.objs...)...)
			f.env.Nodes = tc.nodes
			f.q.setAll(tc.evidence)
			if tc.spend {
				f.spend(t, policy.ActionQuarantine)
			}
			d := f.run(NewQuarantine(f.env).Fire(tc.alert))
			f.checkFired(t, d, tc.want, tc.event)
			if d.Result != Applied {
				f.assertNoWrites(t)
				return
			}
			if w := f.writes(); !reflect.DeepEqual(w, []string{"patch flowschemas/herd-quarantine-1"}) {
				t.Fatalf("writes %q, want one apply", w)
			}
			var fs flowcontrolv1.FlowSchema
			if err := json.Unmarshal(f.applies()[0].Patch, &fs); err != nil {
				t.Fatal(err)
			}
			r := fs.Spec.Rules
			if fs.Spec.PriorityLevelConfiguration.Name != QuarantineLevel || fs.Spec.MatchingPrecedence != quarantinePrecedence || len(r) != 1 ||
				len(r[0].Subjects) != 1 || r[0].Subjects[0].User == nil || r[0].Subjects[0].User.Name != ghost || len(r[0].NonResourceRules) != 1 {
				t.Errorf("applied %s", f.applies()[0].Patch)
			}
			if tc.refunded {
				f.assertRefunded(t, policy.ActionQuarantine)
			}
		})
	}
}

func TestQuarantineResolve(t *testing.T) {
	qKey := ann(AnnotationAction, "quarantine", AnnotationIdentity, ghost)
	cases := []struct {
		name     string
		objs     []runtime.Object
		alert    alert.Alert
		dryRun   bool
		notLead  bool
		notFound bool
		want     want
		event    string
		deleted  bool
	}{
		{
			name:  "shared identity",
			alert: resolved("alertname", "HerdGhostNodeClient", "identity", "system:serviceaccount:kube-system:kube-proxy"),
			want:  want{result: Refused, guard: guard.SharedIdentity},
			event: "Lease/herd-responder HerdQuarantineRefused",
		},
		{
			name:  "no schema",
			alert: resolved("alertname", "HerdGhostNodeClient", "identity", ghost),
			want:  want{result: Noop, reason: "no FlowSchema of herd's serves this alert"},
			event: "Lease/herd-responder HerdQuarantineNoop",
		},
		{
			name:  "deleted at once",
			objs:  []runtime.Object{slotObj("herd-quarantine-1", true, ann(AnnotationIdentity, "system:node:other", AnnotationAction, "quarantine"), 1), slotObj("herd-quarantine-2", true, qKey, 1)},
			alert: resolved("alertname", "HerdGhostNodeClient", "identity", ghost),
			want:  want{result: Applied, reason: "removed FlowSchema herd-quarantine-2: its alert resolved"},
			event: "FlowSchema/herd-quarantine-2 HerdQuarantineApplied", deleted: true,
		},
		{
			name:     "already gone when deleted",
			objs:     []runtime.Object{slotObj("herd-quarantine-2", true, qKey, 1)},
			notFound: true,
			alert:    resolved("alertname", "HerdGhostNodeClient", "identity", ghost),
			want:     want{result: Applied, reason: "removed FlowSchema herd-quarantine-2: its alert resolved"},
			event:    "FlowSchema/herd-quarantine-2 HerdQuarantineApplied",
		},
		{
			name:   "dry run",
			objs:   []runtime.Object{slotObj("herd-quarantine-2", true, qKey, 1)},
			dryRun: true,
			alert:  resolved("alertname", "HerdGhostNodeClient", "identity", ghost),
			want:   want{result: DryRun, reason: "dry run: would have removed FlowSchema herd-quarantine-2: its alert resolved"},
			event:  "FlowSchema/herd-quarantine-2 HerdQuarantineDryRun", deleted: true,
		},
		{
			name:  "excluded",
			objs:  []runtime.Object{slotObj("herd-quarantine-1", true, withKey(qKey, "herd.dev/exclude", ""), 1)},
			alert: resolved("alertname", "HerdGhostNodeClient", "identity", ghost),
			want:  want{result: Refused, guard: guard.Excluded},
			event: "FlowSchema/herd-quarantine-1 HerdQuarantineRefused",
		},
		{
			name:    "not the leader",
			objs:    []runtime.Object{slotObj("herd-quarantine-1", true, qKey, 1)},
			notLead: true,
			alert:   resolved("alertname", "HerdGhostNodeClient", "identity", ghost),
			want:    want{result: Failed, reason: "resolve"},
			event:   "FlowSchema/herd-quarantine-1 HerdQuarantineFailed",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *policy.Config) { c.DryRun = tc.dryRun }, tc.objs...)
			f.dryRunPatches()
			f.setLeader(!tc.notLead)
			if tc.notFound {
				f.client.PrependReactor("delete", "flowschemas", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewNotFound(flowcontrolv1.Resource("flowschemas"), "herd-quarantine-2")
				})
			}
			d := f.run(NewQuarantine(f.env).Resolve(tc.alert))
			f.checkDecision(t, d, tc.want, tc.event)
			if tc.notLead && !errors.Is(d.Err, alert.ErrTransient) {
				t.Errorf("err %v is not transient", d.Err)
			}
			switch {
			case tc.deleted && tc.dryRun:
				assertDeleted(t, f, "herd-quarantine-2", []string{"All"})
			case tc.deleted:
				assertDeleted(t, f, "herd-quarantine-2", nil)
			case !tc.notFound:
				f.assertNoWrites(t)
			}
		})
	}
}

func TestSweep(t *testing.T) {
	now := t0.Format(time.RFC3339)
	past := t0.Add(-time.Minute).Format(time.RFC3339)
	future := t0.Add(time.Minute).Format(time.RFC3339)
	elevenAgo := t0.Add(-11 * time.Minute).Format(time.RFC3339)
	fiveAgo := t0.Add(-5 * time.Minute).Format(time.RFC3339)
	cases := []struct {
		name      string
		objs      []runtime.Object
		dryRun    bool
		notLeader bool
		failOn    string // a FlowSchema whose delete fails
		want      []string
		deleted   []string
		missing   bool // herd-isolate is not installed
	}{
		{
			name: "expired and resolved go; the rest stay",
			objs: []runtime.Object{
				slotObj("herd-isolate-1", true, ann(AnnotationExpiresAt, past, AnnotationAlert, "HerdRelistStorm", AnnotationFingerprint, "fp1"), 1),
				slotObj("herd-isolate-2", true, ann(AnnotationExpiresAt, future, AnnotationResolvedAt, elevenAgo), 1),
				slotObj("herd-isolate-3", true, ann(AnnotationExpiresAt, future, AnnotationResolvedAt, fiveAgo), 1),
				slotObj("herd-isolate-4", true, ann(AnnotationExpiresAt, past, "herd.dev/exclude", ""), 1),
				slotObj("herd-isolate-5", false, ann(AnnotationExpiresAt, past), 1),
				slotObj("herd-isolate-6", true, ann(AnnotationExpiresAt, future), 1),
				slotObj("herd-isolate-7", true, ann(AnnotationExpiresAt, now), 1),
				slotObj("herd-isolate-8", true, ann(AnnotationExpiresAt, "garbage"), 1),
				slotObj("herd-quarantine-1", true, ann(AnnotationExpiresAt, past), 1),
				slotObj("other", true, ann(AnnotationExpiresAt, past), 1),
				installed(IsolateLevel, IsolateLevelSpec(policy.Default().Actions.Isolate)),
			},
			want: []string{
				"flowschema/herd-isolate-1 applied removed FlowSchema herd-isolate-1: its TTL ended at " + past,
				"flowschema/herd-isolate-2 applied removed FlowSchema herd-isolate-2: its alert resolved at " + elevenAgo + " and the hold-down of 10m0s passed",
				"flowschema/herd-isolate-7 applied removed FlowSchema herd-isolate-7: its TTL ended at " + now,
			},
			deleted: []string{"herd-isolate-1", "herd-isolate-2", "herd-isolate-7"},
		},
		{
			name: "the last schema leaves the installed priority level",
			objs: []runtime.Object{
				slotObj("herd-isolate-1", true, ann(AnnotationExpiresAt, past), 1),
				slotObj("herd-isolate-2", false, nil, 1),
				installed(IsolateLevel, IsolateLevelSpec(policy.Default().Actions.Isolate)),
			},
			want:    []string{"flowschema/herd-isolate-1 applied removed FlowSchema herd-isolate-1: its TTL ended at " + past},
			deleted: []string{"herd-isolate-1"},
		},
		{
			// The sweep removes; it installs nothing.
			name:    "a missing priority level is not the sweep's to create",
			objs:    []runtime.Object{slotObj("herd-isolate-1", true, ann(AnnotationExpiresAt, future), 1)},
			missing: true,
		},
		{
			name:   "a failed delete keeps the level",
			objs:   []runtime.Object{slotObj("herd-isolate-1", true, ann(AnnotationExpiresAt, past), 1), installed(IsolateLevel, IsolateLevelSpec(policy.Default().Actions.Isolate))},
			failOn: "herd-isolate-1",
			want:   []string{"flowschema/herd-isolate-1 failed delete flowschema herd-isolate-1"},
		},
		{
			name:   "dry run: nothing was created, nothing is removed",
			objs:   []runtime.Object{slotObj("herd-isolate-1", true, ann(AnnotationExpiresAt, past), 1), installed(IsolateLevel, IsolateLevelSpec(policy.Default().Actions.Isolate))},
			dryRun: true,
		},
		{
			name:      "not the leader",
			objs:      []runtime.Object{slotObj("herd-isolate-1", true, ann(AnnotationExpiresAt, past), 1), installed(IsolateLevel, IsolateLevelSpec(policy.Default().Actions.Isolate))},
			notLeader: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *policy.Config) { c.DryRun = tc.dryRun }, tc.objs...)
			f.setLeader(!tc.notLeader)
			if tc.failOn != "" {
				f.client.PrependReactor("delete", "flowschemas", func(a k8stesting.Action) (bool, runtime.Object, error) {
					if a.(k8stesting.DeleteActionImpl).Name == tc.failOn {
						return true, nil, apierrors.NewServiceUnavailable("later")
					}
					return false, nil, nil
				})
			}
			iso := NewIsolate(f.env)
			ds := f.sweep(iso)
			var got []string
			for _, d := range ds {
				got = append(got, d.Target+" "+string(d.Result)+" "+d.Reason)
				if d.Action != policy.ActionIsolate || d.Status != "sweep" || !d.Time.Equal(t0) {
					t.Errorf("decision header %+v", d)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decisions\n%q\nwant\n%q", got, tc.want)
			}
			if len(ds) > 0 && ds[0].Target == "flowschema/herd-isolate-1" && ds[0].Result == Applied &&
				tc.name == "expired and resolved go; the rest stay" && (ds[0].Alert != "HerdRelistStorm" || ds[0].Fingerprint != "fp1") {
				t.Errorf("the decision does not name the schema's alert: %+v", ds[0])
			}
			var events []string
			for _, e := range f.rec.Take() {
				events = append(events, e.Kind+"/"+e.Name+" "+e.Reason)
			}
			if len(events) != len(tc.want) {
				t.Errorf("events %q", events)
			}
			for _, e := range events {
				if !strings.HasPrefix(e, "FlowSchema/herd-isolate-") || !(strings.HasSuffix(e, " HerdIsolateRemoved") || strings.HasSuffix(e, " HerdIsolateRemoveFailed")) {
					t.Errorf("event %q", e)
				}
			}
			list, err := f.client.FlowcontrolV1().FlowSchemas().List(context.Background(), metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			left := map[string]bool{}
			for _, fs := range list.Items {
				left[fs.Name] = true
			}
			for _, o := range tc.objs {
				fs, ok := o.(*flowcontrolv1.FlowSchema)
				if !ok {
					continue
				}
				wantGone := false
				for _, d := range tc.deleted {
					wantGone = wantGone || d == fs.Name
				}
				if left[fs.Name] == wantGone {
					t.Errorf("%s: left %v, want deleted %v", fs.Name, left[fs.Name], wantGone)
				}
			}
			// herd's installed level stays, whatever the sweep removed; a
			// missing one stays missing.
			_, err = f.client.FlowcontrolV1().PriorityLevelConfigurations().Get(context.Background(), IsolateLevel, metav1.GetOptions{})
			if gone := apierrors.IsNotFound(err); gone != tc.missing {
				t.Errorf("priority level missing %v (%v), want %v", gone, err, tc.missing)
			}
		})
	}
}

// Quarantine's sweep has no hold-down: a resolved mark is removed at once.
func TestQuarantineSweep(t *testing.T) {
	f := newFixture(t, nil, installed(QuarantineLevel, QuarantineLevelSpec()),
		slotObj("herd-quarantine-1", true, ann(AnnotationResolvedAt, t0.Format(time.RFC3339)), 1),
		slotObj("herd-quarantine-2", true, ann(AnnotationExpiresAt, t0.Add(time.Hour).Format(time.RFC3339)), 1),
	)
	ds := f.sweep(NewQuarantine(f.env))
	if len(ds) != 1 || ds[0].Target != "flowschema/herd-quarantine-1" || ds[0].Result != Applied ||
		ds[0].Reason != "removed FlowSchema herd-quarantine-1: its alert resolved at 2025-03-04T10:00:00Z and the hold-down of 0s passed" {
		t.Errorf("decisions %+v", ds)
	}
}
