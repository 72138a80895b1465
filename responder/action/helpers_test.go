package action

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
	"github.com/herd-k8s/herd/test/herdtest"
)

// A note on the fake clientset (k8s.io/client-go/kubernetes/fake):
//
//   - Its object tracker ignores PatchOptions.DryRun (for merge patches and
//     server-side applies alike: a dry-run patch is stored like any other)
//     and resourceVersion preconditions (a stale resourceVersion in a patch
//     does not conflict). The tests check the DryRun option and the
//     resourceVersion on the recorded PatchAction, and the fixtures get a
//     reactor (dryRunPatches) that answers dry-run patches and deletes the
//     way the apiserver does, without storing them.
//   - fake.NewClientset's tracker does server-side apply through the typed
//     clients (cordon's applies to Nodes run, managedFields included, and
//     so do the FlowSchema applies of isolate and quarantine), but not as
//     the apiserver does: no conflicts, no preconditions. What the
//     apiserver does with herd's single apply (preconditions, ownership,
//     RBAC pinned by name) is tested against a real kube-apiserver in
//     apiserver_test.go.

// t0 is the tests' "now".
var t0 = time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// querier answers queries from a map; a query it does not know returns no
// series. errs makes chosen queries fail.
type querier struct {
	mu      sync.Mutex
	answers map[string][]evidence.Sample
	errs    map[string]error
	all     error // every query fails with it
	queries []string
}

func (q *querier) Query(_ context.Context, query string) ([]evidence.Sample, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queries = append(q.queries, query)
	if q.all != nil {
		return nil, q.all
	}
	if err := q.errs[query]; err != nil {
		return nil, err
	}
	return q.answers[query], nil
}

func (q *querier) set(query string, samples ...evidence.Sample) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.answers == nil {
		q.answers = map[string][]evidence.Sample{}
	}
	q.answers[query] = samples
}

// setAll answers each query of answers with its samples.
func (q *querier) setAll(answers map[string][]evidence.Sample) {
	for query, samples := range answers {
		q.set(query, samples...)
	}
}

func sample(v float64, kv ...string) evidence.Sample {
	l := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return evidence.Sample{Labels: l, Value: v}
}

// event is one recorded Event.
type event struct {
	Kind, Namespace, Name string // the regarding object
	Type, Reason, Action  string
	Note                  string
}

// recorder captures Events.
type recorder struct{ herdtest.List[event] }

func (r *recorder) Eventf(regarding, _ runtime.Object, eventtype, reason, action, note string, args ...interface{}) {
	e := event{Type: eventtype, Reason: reason, Action: action, Note: fmt.Sprintf(note, args...)}
	if ref, ok := regarding.(*corev1.ObjectReference); ok {
		e.Kind, e.Namespace, e.Name = ref.Kind, ref.Namespace, ref.Name
	} else {
		e.Kind = fmt.Sprintf("%T", regarding)
	}
	r.Add(e)
}

// reasons are the recorded Events as "Kind/name Reason".
func (r *recorder) reasons() []string {
	var out []string
	for _, e := range r.Take() {
		out = append(out, e.Kind+"/"+e.Name+" "+e.Reason)
	}
	return out
}

// nodeCounter is a fixed NodeCounter. Count returns a fresh map, as
// NodeCache does: the cordon adds its pending nodes to it.
type nodeCounter struct {
	total         int
	unschedulable []string
	existing      []string
	err           error
}

func (n nodeCounter) Exists(name string) (bool, error) {
	if n.err != nil {
		return false, n.err
	}
	return slices.Contains(n.existing, name), nil
}

func (n nodeCounter) Count() (int, map[string]bool, error) {
	if n.err != nil {
		return 0, nil, n.err
	}
	m := map[string]bool{}
	for _, u := range n.unschedulable {
		m[u] = true
	}
	return n.total, m, nil
}

// fixture is an Env on a fake clientset, and a Runner that records into
// a recorder and a querier.
type fixture struct {
	env    *Env
	runner *Runner
	client *fake.Clientset
	q      *querier
	rec    *recorder
	clock  *clock
	leader bool
	mu     sync.Mutex
}

// selfRef is the responder's Lease, where Events without an object go.
var selfRef = &corev1.ObjectReference{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Namespace: "herd", Name: "herd-responder"}

// newFixture returns an Env that acts (dryRun false) with the default
// configuration; cfg, when not nil, changes it before the budget is made.
// Its APF cache has synced the fake's FlowSchemas and priority levels.
func newFixture(t *testing.T, cfg func(*policy.Config), objs ...runtime.Object) *fixture {
	t.Helper()
	c := testPolicy(t, cfg)
	f := &fixture{client: fake.NewClientset(objs...), q: &querier{}, rec: &recorder{}, clock: &clock{t: t0}, leader: true}
	f.env = &Env{
		Client: f.client, Config: c, Budget: guard.NewBudget(c.Guards, f.clock.Now),
		Nodes: nodeCounter{total: 1000}, APF: syncedAPF(t, f.client), Now: f.clock.Now,
	}
	var err error
	f.runner, err = NewRunner(RunnerOptions{Env: f.env, Evidence: f.q, Events: f.rec, Self: selfRef,
		IsLeader: func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.leader }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// testPolicy is the default policy, acting (dryRun false), changed by cfg
// when not nil.
func testPolicy(t *testing.T, cfg func(*policy.Config)) policy.Config {
	t.Helper()
	c, err := policy.FromDefault(policy.WithPrometheusURL("http://prometheus:9090"))
	if err != nil {
		t.Fatal(err)
	}
	c.DryRun = false
	if cfg != nil {
		cfg(&c)
	}
	return c
}

// syncedAPF is an APFCache of client, synced, stopped with the test.
func syncedAPF(t *testing.T, client *fake.Clientset) *APFCache {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := NewAPFCache(client)
	c.Start(ctx)
	// Polled faster than cache.WaitForCacheSync's 100 ms: hundreds of
	// fixtures start a cache.
	for deadline := time.Now().Add(10 * time.Second); !c.Synced(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the APF cache did not sync")
		}
	}
	return c
}

// run makes op's decision.
func (f *fixture) run(op Op) Decision { return f.runner.Run(context.Background(), op) }

// sweep runs a's sweep through the Runner and returns its decisions.
func (f *fixture) sweep(a Action) []Decision {
	before := len(f.runner.Decisions())
	f.runner.Register(a)
	f.runner.Sweep(context.Background())
	return f.runner.Decisions()[before:]
}

func (f *fixture) setLeader(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leader = v
}

// dryRunPatches makes the fake answer dry-run patches as the apiserver
// does: the object as it would be, nothing stored. The fake's tracker
// itself ignores DryRun and stores the patch.
func (f *fixture) dryRunPatches() {
	f.client.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.PatchActionImpl)
		if len(p.PatchOptions.DryRun) == 0 {
			return false, nil, nil
		}
		obj, err := f.client.Tracker().Get(p.GetResource(), p.GetNamespace(), p.GetName())
		return true, obj, err
	})
	f.client.PrependReactor("delete", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		d := a.(k8stesting.DeleteActionImpl)
		if len(d.DeleteOptions.DryRun) == 0 {
			return false, nil, nil
		}
		_, err := f.client.Tracker().Get(d.GetResource(), d.GetNamespace(), d.GetName())
		return true, nil, err
	})
}

// writes are the fake's recorded write actions (patch, update, create,
// delete), as "verb resource/name".
func (f *fixture) writes() []string {
	var out []string
	for _, a := range f.client.Actions() {
		switch a.GetVerb() {
		case "get", "list", "watch":
			continue
		}
		name := ""
		if n, ok := a.(interface{ GetName() string }); ok {
			name = n.GetName()
		}
		out = append(out, a.GetVerb()+" "+a.GetResource().Resource+"/"+name)
	}
	return out
}

// patches are the fake's recorded PatchActions.
func (f *fixture) patches() []k8stesting.PatchActionImpl {
	var out []k8stesting.PatchActionImpl
	for _, a := range f.client.Actions() {
		if p, ok := a.(k8stesting.PatchActionImpl); ok {
			out = append(out, p)
		}
	}
	return out
}

// failOn makes the fake answer verb on resource with err.
func (f *fixture) failOn(verb, resource string, err error) {
	f.client.PrependReactor(verb, resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, err
	})
}

func newAlert(status string, kv ...string) alert.Alert {
	l := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return alert.Alert{Status: status, Labels: l, StartsAt: t0.Add(-10 * time.Minute), Fingerprint: "fp-" + l["alertname"]}
}

func firing(kv ...string) alert.Alert   { return newAlert(alert.StatusFiring, kv...) }
func resolved(kv ...string) alert.Alert { return newAlert(alert.StatusResolved, kv...) }

// want is what a decision must say.
type want struct {
	result Result
	guard  guard.Guard
	reason string // exact, when not ""
	has    string // the reason contains it, when not ""
}

// oneAnHour is the policy change that allows act once an hour, then more
// (nil: none).
func oneAnHour(act policy.Action, more func(*policy.Config)) func(*policy.Config) {
	return func(c *policy.Config) {
		c.Guards.MaxActionsPerHour[act] = 1
		if more != nil {
			more(c)
		}
	}
}

// spend takes act's budget, as a decision before the test's did.
func (f *fixture) spend(t *testing.T, act policy.Action) {
	t.Helper()
	if r := f.env.Budget.Take(act); r != nil {
		t.Fatal(r)
	}
}

// checkDecision checks decision d: as w says, and exactly the events.
func (f *fixture) checkDecision(t *testing.T, d Decision, w want, events ...string) {
	t.Helper()
	w.check(t, d)
	if got := f.rec.reasons(); !reflect.DeepEqual(got, events) {
		t.Errorf("events %q, want %q", got, events)
	}
}

// checkFired checks the decision about a firing alert: checkDecision, and
// a failure is retried (transient).
func (f *fixture) checkFired(t *testing.T, d Decision, w want, events ...string) {
	t.Helper()
	f.checkDecision(t, d, w, events...)
	if d.Result == Failed && !errors.Is(d.Err, alert.ErrTransient) {
		t.Errorf("err %v is not transient", d.Err)
	}
}

func (w want) check(t *testing.T, d Decision) {
	t.Helper()
	if d.Result != w.result || d.Guard != w.guard {
		t.Errorf("decision %s/%s (%s; err %v), want %s/%s", d.Result, d.Guard, d.Reason, d.Err, w.result, w.guard)
	}
	if w.reason != "" && d.Reason != w.reason {
		t.Errorf("reason\n%s\nwant\n%s", d.Reason, w.reason)
	}
	if w.has != "" && !strings.Contains(d.Reason, w.has) {
		t.Errorf("reason %q does not contain %q", d.Reason, w.has)
	}
	if (d.Result == Failed) != (d.Err != nil) {
		t.Errorf("result %s with err %v", d.Result, d.Err)
	}
	if d.Err != nil && d.Error != d.Err.Error() {
		t.Errorf("Error %q, Err %q", d.Error, d.Err)
	}
	if d.Result == Refused && d.Guard == "" {
		t.Error("refused without a guard")
	}
}

func node(name string, mod ...func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "42", Labels: map[string]string{"kubernetes.io/hostname": name}}}
	for _, m := range mod {
		m(n)
	}
	return n
}

func withLabel(k, v string) func(*corev1.Node) {
	return func(n *corev1.Node) { n.Labels[k] = v }
}

func withAnnotation(k, v string) func(*corev1.Node) {
	return func(n *corev1.Node) {
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		n.Annotations[k] = v
	}
}

func unschedulable(n *corev1.Node) { n.Spec.Unschedulable = true }

// herdCordoned is a node as herd's cordon leaves it.
func herdCordoned(n *corev1.Node) {
	n.Spec.Unschedulable = true
	withAnnotation(AnnotationCordonedBy, CordonedByValue)(n)
	withAnnotation(AnnotationReason, "HerdStaleKubelet")(n)
	withAnnotation(AnnotationCordonedAt, "2025-03-04T09:00:00Z")(n)
}

func withManagedFields(entries ...metav1.ManagedFieldsEntry) func(*corev1.Node) {
	return func(n *corev1.Node) { n.ManagedFields = append(n.ManagedFields, entries...) }
}

func managed(manager, subresource, fields string) metav1.ManagedFieldsEntry {
	return metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1",
		FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(fields)}, Subresource: subresource}
}
