package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/herd-k8s/herd/responder/action"
	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
	"github.com/herd-k8s/herd/test/herdtest"
)

// fakeAction counts its calls and answers with decide.
type fakeAction struct {
	name     policy.Action
	fires    atomic.Int32
	resolves atomic.Int32
	// gate, when not nil, holds every call until it is closed.
	gate   chan struct{}
	decide func(call int32, a alert.Alert) action.Decision
}

func (f *fakeAction) run(n int32, a alert.Alert) action.Decision {
	if f.gate != nil {
		<-f.gate
	}
	d := action.Decision{Action: f.name, Alert: a.Name(), Status: a.Status, Fingerprint: a.Fingerprint, Result: action.Applied, Reason: "did it"}
	if f.decide != nil {
		d = f.decide(n, a)
		d.Action = f.name
	}
	return d
}

// fakeRunner stands in for the action Runner: it runs fake actions and
// keeps their decisions and its sweeps.
type fakeRunner struct {
	mu        sync.Mutex
	actions   map[policy.Action]*fakeAction
	decisions []action.Decision
	sweeps    atomic.Int32
	ctxFn     func(context.Context)
}

func (r *fakeRunner) Runs(act policy.Action) bool { _, ok := r.actions[act]; return ok }

func (r *fakeRunner) Handle(ctx context.Context, act policy.Action, a alert.Alert) action.Decision {
	if r.ctxFn != nil {
		r.ctxFn(ctx)
	}
	x := r.actions[act]
	var d action.Decision
	if a.Firing() {
		d = x.run(x.fires.Add(1), a)
	} else {
		d = x.run(x.resolves.Add(1), a)
	}
	r.mu.Lock()
	r.decisions = append(r.decisions, d)
	r.mu.Unlock()
	return d
}

func (r *fakeRunner) Sweep(context.Context) { r.sweeps.Add(1) }

func (r *fakeRunner) results(act policy.Action, res action.Result) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, d := range r.decisions {
		if d.Action == act && d.Result == res {
			n++
		}
	}
	return n
}

func (r *fakeRunner) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.decisions)
}

var t0 = time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC)

type fixture struct {
	d      *Dispatcher
	reg    *prometheus.Registry
	runner *fakeRunner
	cordon *fakeAction
	triage *fakeAction
	clock  *clocktesting.FakeClock
	leader atomic.Bool
	logs   *herdtest.LogBuffer
}

func newFixture(t *testing.T, mod func(*Options)) *fixture {
	t.Helper()
	cfg, err := policy.FromDefault(policy.WithPrometheusURL("http://prometheus:9090"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{reg: prometheus.NewRegistry(), cordon: &fakeAction{name: policy.ActionCordon}, triage: &fakeAction{name: policy.ActionTriage},
		clock: clocktesting.NewFakeClock(t0), logs: &herdtest.LogBuffer{}}
	f.runner = &fakeRunner{actions: map[policy.Action]*fakeAction{policy.ActionCordon: f.cordon, policy.ActionTriage: f.triage}}
	f.leader.Store(true)
	opts := Options{
		Config:     cfg,
		Runner:     f.runner,
		IsLeader:   f.leader.Load,
		Registerer: f.reg,
		Logger:     slog.New(slog.NewJSONHandler(f.logs, nil)),
		Now:        f.clock.Now,
	}
	if mod != nil {
		mod(&opts)
	}
	f.d, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// wantFires checks how often the cordon action has run so far.
func (f *fixture) wantFires(t *testing.T, n int32, when string) {
	t.Helper()
	if got := f.cordon.fires.Load(); got != n {
		t.Errorf("the cordon action ran %d times %s, want %d", got, when, n)
	}
}

// fire delivers a firing HerdStaleKubelet for node; an error fails the test.
func (f *fixture) fire(t *testing.T, node string) {
	t.Helper()
	if err := f.d.Dispatch(context.Background(), stale("firing", node)); err != nil {
		t.Fatal(err)
	}
}

func stale(status, node string) alert.Alert {
	return alert.Alert{Status: status, Labels: map[string]string{"alertname": "HerdStaleKubelet", "node": node},
		StartsAt: t0.Add(-5 * time.Minute), Fingerprint: "fp-" + node}
}

func (f *fixture) actions(act policy.Action, r action.Result) float64 {
	return float64(f.runner.results(act, r))
}

func (f *fixture) duplicates(act policy.Action) float64 {
	return testutil.ToFloat64(f.d.duplicates.WithLabelValues(string(act)))
}

func TestRouting(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.Config.Routes = append([]policy.Route{{Match: map[string]string{"alertname": "Silenced"}, Action: policy.ActionNone}}, o.Config.Routes...)
	})
	cases := []struct {
		name   string
		alert  alert.Alert
		err    string
		cordon int32
		triage int32
	}{
		{name: "no route", alert: alert.Alert{Status: "firing", Labels: map[string]string{"alertname": "Watchdog"}}},
		{name: "route to none", alert: alert.Alert{Status: "firing", Labels: map[string]string{"alertname": "Silenced", "node": "n1"}}},
		{name: "cordon", alert: stale("firing", "n1"), cordon: 1},
		{name: "triage", alert: alert.Alert{Status: "firing", Labels: map[string]string{"alertname": "KubeAPIErrorBudgetBurn"}, Fingerprint: "b"}, cordon: 1, triage: 1},
		{name: "an action this responder does not run", alert: alert.Alert{Status: "firing", Labels: map[string]string{"alertname": "HerdRelistStorm"}},
			err: "route to isolate, which this responder does not run", cordon: 1, triage: 1},
	}
	for _, tc := range cases {
		err := f.d.Dispatch(context.Background(), tc.alert)
		if (err == nil) != (tc.err == "") || (err != nil && (err.Error() != tc.err || errors.Is(err, alert.ErrTransient))) {
			t.Errorf("%s: err %v, want %q (not transient)", tc.name, err, tc.err)
		}
		if f.cordon.fires.Load() != tc.cordon || f.triage.fires.Load() != tc.triage {
			t.Errorf("%s: cordon ran %d times, triage %d; want %d, %d", tc.name, f.cordon.fires.Load(), f.triage.fires.Load(), tc.cordon, tc.triage)
		}
	}
	if n := f.runner.count(); n != 2 {
		t.Errorf("%d decisions, want 2", n)
	}
}

func TestNotLeader(t *testing.T) {
	f := newFixture(t, nil)
	f.leader.Store(false)
	err := f.d.Dispatch(context.Background(), stale("firing", "n1"))
	if !errors.Is(err, alert.ErrTransient) || !errors.Is(err, ErrNotLeader) {
		t.Errorf("err %v: want transient ErrNotLeader", err)
	}
	if f.cordon.fires.Load() != 0 || f.runner.count() != 0 {
		t.Error("a replica that is not the leader acted")
	}
	// Not remembered: once it leads, the retry acts.
	f.leader.Store(true)
	if err := f.d.Dispatch(context.Background(), stale("firing", "n1")); err != nil || f.cordon.fires.Load() != 1 {
		t.Errorf("after becoming leader: err %v, %d fires", err, f.cordon.fires.Load())
	}
	// An alert without an action is fine on any replica.
	f.leader.Store(false)
	if err := f.d.Dispatch(context.Background(), alert.Alert{Status: "firing", Labels: map[string]string{"alertname": "Watchdog"}}); err != nil {
		t.Errorf("unrouted alert on a follower: %v", err)
	}
	// The sweep does nothing on a follower.
	f.d.Sweep(context.Background())
	if n := f.runner.sweeps.Load(); n != 0 {
		t.Errorf("a follower swept %d times", n)
	}
}

func TestConcurrentDuplicates(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"applied", nil},
		{"a permanent failure", errors.New("forbidden: herd may not patch nodes")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.cordon.gate = make(chan struct{})
			if tc.err != nil {
				f.cordon.decide = func(_ int32, a alert.Alert) action.Decision {
					return action.Decision{Result: action.Failed, Err: tc.err, Error: tc.err.Error()}
				}
			}
			const n = 100
			errs := make(chan error, n)
			for range n {
				go func() { errs <- f.d.Dispatch(context.Background(), stale("firing", "n1")) }()
			}
			// Every delivery but the first waits for the first's decision.
			deadline := time.Now().Add(10 * time.Second)
			for f.duplicates(policy.ActionCordon) < n-1 {
				if time.Now().After(deadline) {
					t.Fatalf("%g duplicates waiting", f.duplicates(policy.ActionCordon))
				}
				time.Sleep(time.Millisecond)
			}
			close(f.cordon.gate)
			for range n {
				if err := <-errs; err != tc.err {
					t.Errorf("err %v, want %v", err, tc.err)
				}
			}
			if got := f.cordon.fires.Load(); got != 1 {
				t.Errorf("the action ran %d times", got)
			}
			if got := f.runner.count(); got != 1 {
				t.Errorf("%d decisions made", got)
			}
			result := action.Applied
			if tc.err != nil {
				result = action.Failed
			}
			if got := f.actions(policy.ActionCordon, result); got != 1 {
				t.Errorf("%g decisions %s", got, result)
			}
			// Delivered again later: still once after a decision; a failure
			// is not remembered, so the next delivery acts again.
			wantFires, wantDup := int32(1), float64(n)
			if tc.err != nil {
				wantFires, wantDup = 2, float64(n-1)
			}
			if err := f.d.Dispatch(context.Background(), stale("firing", "n1")); err != tc.err || f.cordon.fires.Load() != wantFires {
				t.Errorf("a later delivery: err %v, %d fires, want %d", err, f.cordon.fires.Load(), wantFires)
			}
			if got := f.duplicates(policy.ActionCordon); got != wantDup {
				t.Errorf("herd_responder_duplicate_deliveries_total{cordon} = %g, want %g", got, wantDup)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	f := newFixture(t, nil)
	dispatch := func(a alert.Alert) {
		t.Helper()
		if err := f.d.Dispatch(context.Background(), a); err != nil {
			t.Fatal(err)
		}
	}
	dispatch(stale("firing", "n1"))
	dispatch(stale("firing", "n1"))
	dispatch(stale("resolved", "n1"))
	dispatch(stale("resolved", "n1"))
	if f.cordon.fires.Load() != 1 || f.cordon.resolves.Load() != 1 {
		t.Errorf("fires %d, resolves %d; want 1, 1", f.cordon.fires.Load(), f.cordon.resolves.Load())
	}
	// Firing again after the resolve: a new startsAt, a new alert.
	again := stale("firing", "n1")
	again.StartsAt = t0
	dispatch(again)
	dispatch(again)
	f.wantFires(t, 2, "after the alert fired again")
	// Another fingerprint is another alert.
	dispatch(stale("firing", "n2"))
	f.wantFires(t, 3, "after another node")
	// Without a fingerprint the labels identify the alert.
	noFP := func(node string) alert.Alert {
		a := stale("firing", node)
		a.Fingerprint = ""
		return a
	}
	dispatch(noFP("n3"))
	dispatch(noFP("n3"))
	dispatch(noFP("n4"))
	f.wantFires(t, 5, "after alerts without fingerprints")
	// Labels whose concatenation is ambiguous stay apart.
	a := alert.Alert{Status: "firing", Labels: map[string]string{"alertname": "HerdStaleKubelet", "node": `a",x="b`}}
	b := alert.Alert{Status: "firing", Labels: map[string]string{"alertname": "HerdStaleKubelet", "node": "a", "x": "b"}}
	if key(a) == key(b) {
		t.Errorf("key(%v) == key(%v)", a.Labels, b.Labels)
	}
	if got := f.duplicates(policy.ActionCordon); got != 4 {
		t.Errorf("duplicates %g, want 4", got)
	}
}

func TestTransientFailureIsNotRemembered(t *testing.T) {
	f := newFixture(t, nil)
	transient := alert.Transient(errors.New("apiserver unavailable"))
	f.cordon.decide = func(call int32, _ alert.Alert) action.Decision {
		if call == 1 {
			return action.Decision{Result: action.Failed, Err: transient, Error: transient.Error()}
		}
		return action.Decision{Result: action.Applied}
	}
	if err := f.d.Dispatch(context.Background(), stale("firing", "n1")); err != transient {
		t.Fatalf("first delivery: %v", err)
	}
	if err := f.d.Dispatch(context.Background(), stale("firing", "n1")); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if err := f.d.Dispatch(context.Background(), stale("firing", "n1")); err != nil {
		t.Fatalf("duplicate of the retry: %v", err)
	}
	if got := f.cordon.fires.Load(); got != 2 {
		t.Errorf("fires %d, want 2 (the failure and the retry)", got)
	}
	if f.actions(policy.ActionCordon, action.Failed) != 1 || f.actions(policy.ActionCordon, action.Applied) != 1 || f.duplicates(policy.ActionCordon) != 1 {
		t.Errorf("failed %g, applied %g, duplicates %g", f.actions(policy.ActionCordon, action.Failed),
			f.actions(policy.ActionCordon, action.Applied), f.duplicates(policy.ActionCordon))
	}
}

// TestVerificationRefusalIsNotRemembered: a firing alert refused because
// its evidence is absent is decided again at its next delivery (a held
// HerdSynchronizedRelist whose second wave comes while it fires); any other
// refusal, and a resolved alert's, are remembered as answers are.
func TestVerificationRefusalIsNotRemembered(t *testing.T) {
	for _, c := range []struct {
		name   string
		status string
		guard  guard.Guard
		fires  int32
	}{
		{"firing, verification", alert.StatusFiring, guard.Verification, 3},
		{"firing, blast radius", alert.StatusFiring, guard.MaxUnschedulableFraction, 1},
		{"resolved, verification", alert.StatusResolved, guard.Verification, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, nil)
			decide := func(_ int32, _ alert.Alert) action.Decision {
				return action.Decision{Result: action.Refused, Guard: c.guard, Reason: "not confirmed"}
			}
			f.cordon.decide = decide
			for range 3 {
				if err := f.d.Dispatch(context.Background(), stale(c.status, "n1")); err != nil {
					t.Fatal(err)
				}
			}
			got := f.cordon.fires.Load() + f.cordon.resolves.Load()
			if got != c.fires {
				t.Errorf("decided %d times in 3 deliveries, want %d", got, c.fires)
			}
			if d := f.duplicates(policy.ActionCordon); d != float64(3-c.fires) {
				t.Errorf("duplicates %g, want %d", d, 3-c.fires)
			}
		})
	}
}

// Deliveries waiting for a decision that fails transiently get the
// transient error too, and their retries act.
func TestTransientFailureReachesWaiters(t *testing.T) {
	f := newFixture(t, nil)
	transient := alert.Transient(errors.New("conflict"))
	f.cordon.gate = make(chan struct{})
	f.cordon.decide = func(call int32, _ alert.Alert) action.Decision {
		if call == 1 {
			return action.Decision{Result: action.Failed, Err: transient}
		}
		return action.Decision{Result: action.Applied}
	}
	errs := make(chan error, 5)
	for range 5 {
		go func() { errs <- f.d.Dispatch(context.Background(), stale("firing", "n1")) }()
	}
	for f.duplicates(policy.ActionCordon) < 4 {
		time.Sleep(time.Millisecond)
	}
	close(f.cordon.gate)
	for range 5 {
		if err := <-errs; !errors.Is(err, alert.ErrTransient) {
			t.Errorf("err %v, want transient", err)
		}
	}
	if err := f.d.Dispatch(context.Background(), stale("firing", "n1")); err != nil || f.cordon.fires.Load() != 2 {
		t.Errorf("retry: err %v, %d fires", err, f.cordon.fires.Load())
	}
}

func TestWaiterContext(t *testing.T) {
	f := newFixture(t, nil)
	f.cordon.gate = make(chan struct{})
	first := make(chan error, 1)
	go func() { first <- f.d.Dispatch(context.Background(), stale("firing", "n1")) }()
	for f.cordon.fires.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := f.d.Dispatch(ctx, stale("firing", "n1"))
	if !errors.Is(err, alert.ErrTransient) || !errors.Is(err, context.Canceled) {
		t.Errorf("a waiter whose request ended: %v", err)
	}
	close(f.cordon.gate)
	if err := <-first; err != nil {
		t.Error(err)
	}
}

// The action's context outlives the request's.
func TestActionContext(t *testing.T) {
	var deadline time.Duration
	var canceled bool
	f := newFixture(t, func(o *Options) { o.ActionTimeout = 3 * time.Second })
	f.runner.ctxFn = func(ctx context.Context) {
		d, _ := ctx.Deadline()
		deadline = time.Until(d)
		canceled = ctx.Err() != nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// The sender went away: its answer may be the decision's or a 503
	// nobody reads; the decision is made either way.
	if err := f.d.Dispatch(ctx, stale("firing", "n1")); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if err := f.d.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.wantFires(t, 1, "for a delivery whose sender went away")
	if canceled || deadline <= 2*time.Second || deadline > 3*time.Second {
		t.Errorf("action context: canceled %v, deadline in %s", canceled, deadline)
	}
}

func TestMaxRemembered(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.MaxRemembered = 3 })
	for _, n := range []string{"a", "b", "c", "d"} {
		f.fire(t, n)
	}
	f.wantFires(t, 4, "for four alerts")
	if len(f.d.remembered) != 3 || len(f.d.order) != 3 {
		t.Errorf("remembers %d alerts (order %d), want 3", len(f.d.remembered), len(f.d.order))
	}
	// b, c, d are remembered; a, the oldest, was forgotten.
	for _, n := range []string{"b", "c", "d"} {
		f.fire(t, n)
	}
	f.wantFires(t, 4, "after duplicates of remembered alerts")
	f.fire(t, "a")
	f.wantFires(t, 5, "after the forgotten alert came again (it must act again)")
	// a pushed out b.
	f.fire(t, "b")
	f.wantFires(t, 6, "after b came again (a pushed it out)")
	// Many more: the memory stays bounded.
	for i := range 1000 {
		f.fire(t, fmt.Sprint("n", i))
	}
	if len(f.d.remembered) != 3 || len(f.d.order) != 3 {
		t.Errorf("remembers %d alerts (order %d), want 3", len(f.d.remembered), len(f.d.order))
	}
}

func TestRememberFor(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.RememberFor = 10 * time.Minute })
	f.fire(t, "n1")
	f.clock.Step(9*time.Minute + 59*time.Second)
	f.fire(t, "n1")
	f.wantFires(t, 1, "within RememberFor")
	f.clock.Step(time.Second)
	f.fire(t, "n1")
	f.wantFires(t, 2, "after RememberFor")
	f.fire(t, "n1")
	f.wantFires(t, 2, "after a duplicate of the new decision (it must be remembered)")
	// Expired entries are dropped as new ones come.
	f.clock.Step(11 * time.Minute)
	f.fire(t, "n2")
	if len(f.d.remembered) != 1 || len(f.d.order) != 1 {
		t.Errorf("remembers %d alerts (order %d), want 1", len(f.d.remembered), len(f.d.order))
	}
}

func TestDefaults(t *testing.T) {
	d, err := New(Options{Runner: &fakeRunner{}})
	if err != nil {
		t.Fatal(err)
	}
	o := d.opts
	if o.RememberFor != time.Hour || o.MaxRemembered != 10000 || o.ReplyTimeout != 8*time.Second || o.ActionTimeout != 30*time.Second ||
		o.Logger == nil || o.Now == nil || o.IsLeader == nil || !o.IsLeader() {
		t.Errorf("defaults %+v", o)
	}
	if _, err := New(Options{}); err == nil {
		t.Error("a dispatcher without a runner")
	}
}

func TestDuplicatesMetric(t *testing.T) {
	f := newFixture(t, nil)
	nActions := len(policy.AllActions) - 1 // none takes no action
	if n, err := testutil.GatherAndCount(f.reg, "herd_responder_duplicate_deliveries_total"); err != nil || n != nActions {
		t.Errorf("herd_responder_duplicate_deliveries_total: %d series (%v), want %d from the start", n, err, nActions)
	}
	if _, err := New(Options{Runner: f.runner, Registerer: f.reg}); err == nil {
		t.Error("registering the metric twice succeeded")
	}
}

// A decision that outlasts ReplyTimeout: the delivery is answered 503
// (transient) while the decision goes on; the retry waits for it and gets
// its answer, and nothing acts twice.
func TestReplyTimeout(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.ReplyTimeout = 20 * time.Millisecond })
	f.cordon.gate = make(chan struct{})
	err := f.d.Dispatch(context.Background(), stale("firing", "n1"))
	if !errors.Is(err, alert.ErrTransient) || !errors.Is(err, ErrStillDeciding) {
		t.Fatalf("a slow decision: %v, want transient ErrStillDeciding", err)
	}
	// The retry while it still runs: 503 again, no second action.
	if err := f.d.Dispatch(context.Background(), stale("firing", "n1")); !errors.Is(err, ErrStillDeciding) {
		t.Errorf("a retry during the decision: %v", err)
	}
	retry := make(chan error, 1)
	f.d.opts.ReplyTimeout = 5 * time.Second
	go func() { retry <- f.d.Dispatch(context.Background(), stale("firing", "n1")) }()
	close(f.cordon.gate)
	if err := <-retry; err != nil {
		t.Errorf("the retry after the decision: %v", err)
	}
	if n := f.cordon.fires.Load(); n != 1 {
		t.Errorf("the action ran %d times", n)
	}
	if err := f.d.Wait(context.Background()); err != nil {
		t.Error(err)
	}
}

// Wait waits for decisions under way, whose deliveries were answered.
func TestWait(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.ReplyTimeout = time.Millisecond })
	f.cordon.gate = make(chan struct{})
	if err := f.d.Dispatch(context.Background(), stale("firing", "n1")); !errors.Is(err, ErrStillDeciding) {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := f.d.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with a decision under way: %v", err)
	}
	close(f.cordon.gate)
	if err := f.d.Wait(context.Background()); err != nil {
		t.Errorf("Wait after the decision: %v", err)
	}
	if f.runner.count() != 1 {
		t.Errorf("%d decisions", f.runner.count())
	}
}

func TestSweep(t *testing.T) {
	f := newFixture(t, nil)
	f.d.Sweep(context.Background())
	if n := f.runner.sweeps.Load(); n != 1 {
		t.Errorf("%d sweeps", n)
	}
	// SweepLoop sweeps every interval until its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.d.SweepLoop(ctx, time.Millisecond); close(done) }()
	for f.runner.sweeps.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("SweepLoop did not stop")
	}
}

// Retries of an alert that keeps failing transiently (Prometheus down for
// an hour) do not grow the memory past MaxRemembered.
func TestTransientRetriesStayBounded(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.MaxRemembered = 3 })
	transient := alert.Transient(errors.New("prometheus unavailable"))
	f.cordon.decide = func(_ int32, a alert.Alert) action.Decision {
		if a.Labels["node"] == "down" {
			return action.Decision{Result: action.Failed, Err: transient}
		}
		return action.Decision{Result: action.Applied}
	}
	if err := f.d.Dispatch(context.Background(), stale("firing", "ok")); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		f.clock.Step(10 * time.Second)
		if err := f.d.Dispatch(context.Background(), stale("firing", "down")); !errors.Is(err, alert.ErrTransient) {
			t.Fatalf("err %v", err)
		}
	}
	f.wantFires(t, 51, "after 50 transient failures (every retry must act)")
	if len(f.d.remembered) > 3 || len(f.d.order) > 3 {
		t.Errorf("remembers %d alerts in an order of %d keys; MaxRemembered is 3", len(f.d.remembered), len(f.d.order))
	}
	// The alert that succeeded is still remembered.
	if err := f.d.Dispatch(context.Background(), stale("firing", "ok")); err != nil || f.cordon.fires.Load() != 51 {
		t.Errorf("the remembered alert acted again: err %v, fires %d", err, f.cordon.fires.Load())
	}
}
