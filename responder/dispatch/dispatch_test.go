package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/herd-k8s/herd/responder/action"
	"github.com/herd-k8s/herd/responder/config"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/webhook"
)

// fakeAction counts its calls and answers with decide.
type fakeAction struct {
	name     config.Action
	fires    atomic.Int32
	resolves atomic.Int32
	// gate, when not nil, holds every call until it is closed.
	gate   chan struct{}
	decide func(call int32, a webhook.Alert) action.Decision
	sweep  []action.Decision
}

func (f *fakeAction) Name() config.Action { return f.name }

func (f *fakeAction) run(n int32, a webhook.Alert) action.Decision {
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

func (f *fakeAction) Fire(_ context.Context, a webhook.Alert) action.Decision {
	return f.run(f.fires.Add(1), a)
}

func (f *fakeAction) Resolve(_ context.Context, a webhook.Alert) action.Decision {
	return f.run(f.resolves.Add(1), a)
}

type sweepAction struct{ *fakeAction }

func (s sweepAction) Sweep(context.Context) []action.Decision { return s.sweep }

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var t0 = time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC)

type fixture struct {
	d      *Dispatcher
	reg    *prometheus.Registry
	cordon *fakeAction
	triage *fakeAction
	clock  *clock
	leader atomic.Bool
	logs   *bytes.Buffer
}

func newFixture(t *testing.T, mod func(*Options)) *fixture {
	t.Helper()
	cfg, err := config.FromDefault(config.WithPrometheusURL("http://prometheus:9090"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{reg: prometheus.NewRegistry(), cordon: &fakeAction{name: config.ActionCordon}, triage: &fakeAction{name: config.ActionTriage},
		clock: &clock{t: t0}, logs: &bytes.Buffer{}}
	f.leader.Store(true)
	opts := Options{
		Config:     cfg,
		Actions:    map[config.Action]action.Action{config.ActionCordon: f.cordon, config.ActionTriage: f.triage},
		IsLeader:   f.leader.Load,
		Registerer: f.reg,
		Logger:     slog.New(slog.NewJSONHandler(&syncWriter{w: f.logs}, nil)),
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

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func stale(status, node string) webhook.Alert {
	return webhook.Alert{Status: status, Labels: map[string]string{"alertname": "HerdStaleKubelet", "node": node},
		StartsAt: t0.Add(-5 * time.Minute), Fingerprint: "fp-" + node}
}

func (f *fixture) actions(act config.Action, r action.Result) float64 {
	return testutil.ToFloat64(f.d.metrics.actions.WithLabelValues(string(act), string(r)))
}

func (f *fixture) duplicates(act config.Action) float64 {
	return testutil.ToFloat64(f.d.metrics.duplicates.WithLabelValues(string(act)))
}

func TestRouting(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.Config.Routes = append([]config.Route{{Match: map[string]string{"alertname": "Silenced"}, Action: config.ActionNone}}, o.Config.Routes...)
	})
	cases := []struct {
		name   string
		alert  webhook.Alert
		err    string
		cordon int32
		triage int32
	}{
		{name: "no route", alert: webhook.Alert{Status: "firing", Labels: map[string]string{"alertname": "Watchdog"}}},
		{name: "route to none", alert: webhook.Alert{Status: "firing", Labels: map[string]string{"alertname": "Silenced", "node": "n1"}}},
		{name: "cordon", alert: stale("firing", "n1"), cordon: 1},
		{name: "triage", alert: webhook.Alert{Status: "firing", Labels: map[string]string{"alertname": "KubeAPIErrorBudgetBurn"}, Fingerprint: "b"}, cordon: 1, triage: 1},
		{name: "an action this responder does not run", alert: webhook.Alert{Status: "firing", Labels: map[string]string{"alertname": "HerdRelistStorm"}},
			err: "route to isolate, which this responder does not run", cordon: 1, triage: 1},
	}
	for _, tc := range cases {
		err := f.d.Dispatch(context.Background(), tc.alert)
		if (err == nil) != (tc.err == "") || (err != nil && (err.Error() != tc.err || errors.Is(err, webhook.ErrTransient))) {
			t.Errorf("%s: err %v, want %q (not transient)", tc.name, err, tc.err)
		}
		if f.cordon.fires.Load() != tc.cordon || f.triage.fires.Load() != tc.triage {
			t.Errorf("%s: cordon ran %d times, triage %d; want %d, %d", tc.name, f.cordon.fires.Load(), f.triage.fires.Load(), tc.cordon, tc.triage)
		}
	}
	if n := len(f.d.Decisions()); n != 2 {
		t.Errorf("%d decisions, want 2", n)
	}
}

func TestNotLeader(t *testing.T) {
	f := newFixture(t, nil)
	f.leader.Store(false)
	err := f.d.Dispatch(context.Background(), stale("firing", "n1"))
	if !errors.Is(err, webhook.ErrTransient) || !errors.Is(err, ErrNotLeader) {
		t.Errorf("err %v: want transient ErrNotLeader", err)
	}
	if f.cordon.fires.Load() != 0 || len(f.d.Decisions()) != 0 {
		t.Error("a replica that is not the leader acted")
	}
	// Not remembered: once it leads, the retry acts.
	f.leader.Store(true)
	if err := f.d.Dispatch(context.Background(), stale("firing", "n1")); err != nil || f.cordon.fires.Load() != 1 {
		t.Errorf("after becoming leader: err %v, %d fires", err, f.cordon.fires.Load())
	}
	// An alert without an action is fine on any replica.
	f.leader.Store(false)
	if err := f.d.Dispatch(context.Background(), webhook.Alert{Status: "firing", Labels: map[string]string{"alertname": "Watchdog"}}); err != nil {
		t.Errorf("unrouted alert on a follower: %v", err)
	}
	// The sweep does nothing on a follower.
	s := &fakeAction{name: config.ActionIsolate, sweep: []action.Decision{{Action: config.ActionIsolate, Result: action.Applied}}}
	f.d.opts.Actions[config.ActionIsolate] = sweepAction{s}
	f.d.Sweep(context.Background())
	if n := f.actions(config.ActionIsolate, action.Applied); n != 0 {
		t.Errorf("a follower swept: %g", n)
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
				f.cordon.decide = func(_ int32, a webhook.Alert) action.Decision {
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
			for f.duplicates(config.ActionCordon) < n-1 {
				if time.Now().After(deadline) {
					t.Fatalf("%g duplicates waiting", f.duplicates(config.ActionCordon))
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
			if got := len(f.d.Decisions()); got != 1 {
				t.Errorf("%d decisions recorded", got)
			}
			result := action.Applied
			if tc.err != nil {
				result = action.Failed
			}
			if got := f.actions(config.ActionCordon, result); got != 1 {
				t.Errorf("herd_responder_actions_total{cordon,%s} = %g", result, got)
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
			if got := f.duplicates(config.ActionCordon); got != wantDup {
				t.Errorf("herd_responder_duplicate_deliveries_total{cordon} = %g, want %g", got, wantDup)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	f := newFixture(t, nil)
	dispatch := func(a webhook.Alert) {
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
	if f.cordon.fires.Load() != 2 {
		t.Errorf("fires %d after the alert fired again", f.cordon.fires.Load())
	}
	// Another fingerprint is another alert.
	dispatch(stale("firing", "n2"))
	if f.cordon.fires.Load() != 3 {
		t.Errorf("fires %d after another node", f.cordon.fires.Load())
	}
	// Without a fingerprint the labels identify the alert.
	noFP := func(node string) webhook.Alert {
		a := stale("firing", node)
		a.Fingerprint = ""
		return a
	}
	dispatch(noFP("n3"))
	dispatch(noFP("n3"))
	dispatch(noFP("n4"))
	if f.cordon.fires.Load() != 5 {
		t.Errorf("fires %d after alerts without fingerprints", f.cordon.fires.Load())
	}
	// Labels whose concatenation is ambiguous stay apart.
	a := webhook.Alert{Status: "firing", Labels: map[string]string{"alertname": "HerdStaleKubelet", "node": `a",x="b`}}
	b := webhook.Alert{Status: "firing", Labels: map[string]string{"alertname": "HerdStaleKubelet", "node": "a", "x": "b"}}
	if key(a) == key(b) {
		t.Errorf("key(%v) == key(%v)", a.Labels, b.Labels)
	}
	if got := f.duplicates(config.ActionCordon); got != 4 {
		t.Errorf("duplicates %g, want 4", got)
	}
}

func TestTransientFailureIsNotRemembered(t *testing.T) {
	f := newFixture(t, nil)
	transient := webhook.Transient(errors.New("apiserver unavailable"))
	f.cordon.decide = func(call int32, _ webhook.Alert) action.Decision {
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
	if f.actions(config.ActionCordon, action.Failed) != 1 || f.actions(config.ActionCordon, action.Applied) != 1 || f.duplicates(config.ActionCordon) != 1 {
		t.Errorf("failed %g, applied %g, duplicates %g", f.actions(config.ActionCordon, action.Failed),
			f.actions(config.ActionCordon, action.Applied), f.duplicates(config.ActionCordon))
	}
}

// Deliveries waiting for a decision that fails transiently get the
// transient error too, and their retries act.
func TestTransientFailureReachesWaiters(t *testing.T) {
	f := newFixture(t, nil)
	transient := webhook.Transient(errors.New("conflict"))
	f.cordon.gate = make(chan struct{})
	f.cordon.decide = func(call int32, _ webhook.Alert) action.Decision {
		if call == 1 {
			return action.Decision{Result: action.Failed, Err: transient}
		}
		return action.Decision{Result: action.Applied}
	}
	errs := make(chan error, 5)
	for range 5 {
		go func() { errs <- f.d.Dispatch(context.Background(), stale("firing", "n1")) }()
	}
	for f.duplicates(config.ActionCordon) < 4 {
		time.Sleep(time.Millisecond)
	}
	close(f.cordon.gate)
	for range 5 {
		if err := <-errs; !errors.Is(err, webhook.ErrTransient) {
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
	if !errors.Is(err, webhook.ErrTransient) || !errors.Is(err, context.Canceled) {
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
	act := &ctxAction{fn: func(ctx context.Context) {
		d, _ := ctx.Deadline()
		deadline = time.Until(d)
		canceled = ctx.Err() != nil
	}}
	f := newFixture(t, func(o *Options) {
		o.Actions[config.ActionCordon] = act
		o.ActionTimeout = 3 * time.Second
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.d.Dispatch(ctx, stale("firing", "n1")); err != nil {
		t.Fatal(err)
	}
	if canceled || deadline <= 2*time.Second || deadline > 3*time.Second {
		t.Errorf("action context: canceled %v, deadline in %s", canceled, deadline)
	}
}

type ctxAction struct{ fn func(context.Context) }

func (*ctxAction) Name() config.Action { return config.ActionCordon }
func (c *ctxAction) Fire(ctx context.Context, a webhook.Alert) action.Decision {
	c.fn(ctx)
	return action.Decision{Action: config.ActionCordon, Result: action.Noop}
}
func (c *ctxAction) Resolve(ctx context.Context, a webhook.Alert) action.Decision {
	return c.Fire(ctx, a)
}

func TestMaxRemembered(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.MaxRemembered = 3 })
	dispatch := func(node string) {
		t.Helper()
		if err := f.d.Dispatch(context.Background(), stale("firing", node)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"a", "b", "c", "d"} {
		dispatch(n)
	}
	if f.cordon.fires.Load() != 4 {
		t.Fatalf("fires %d", f.cordon.fires.Load())
	}
	if len(f.d.remembered) != 3 || len(f.d.order) != 3 {
		t.Errorf("remembers %d alerts (order %d), want 3", len(f.d.remembered), len(f.d.order))
	}
	// b, c, d are remembered; a, the oldest, was forgotten.
	for _, n := range []string{"b", "c", "d"} {
		dispatch(n)
	}
	if f.cordon.fires.Load() != 4 {
		t.Errorf("fires %d after duplicates of remembered alerts", f.cordon.fires.Load())
	}
	dispatch("a")
	if f.cordon.fires.Load() != 5 {
		t.Errorf("fires %d: the forgotten alert did not act again", f.cordon.fires.Load())
	}
	// a pushed out b.
	dispatch("b")
	if f.cordon.fires.Load() != 6 {
		t.Errorf("fires %d: b was not forgotten", f.cordon.fires.Load())
	}
	// Many more: the memory stays bounded.
	for i := range 1000 {
		dispatch(fmt.Sprint("n", i))
	}
	if len(f.d.remembered) != 3 || len(f.d.order) != 3 {
		t.Errorf("remembers %d alerts (order %d), want 3", len(f.d.remembered), len(f.d.order))
	}
}

func TestRememberFor(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.RememberFor = 10 * time.Minute })
	dispatch := func(node string) {
		t.Helper()
		if err := f.d.Dispatch(context.Background(), stale("firing", node)); err != nil {
			t.Fatal(err)
		}
	}
	dispatch("n1")
	f.clock.Advance(9*time.Minute + 59*time.Second)
	dispatch("n1")
	if f.cordon.fires.Load() != 1 {
		t.Fatalf("fires %d within RememberFor", f.cordon.fires.Load())
	}
	f.clock.Advance(time.Second)
	dispatch("n1")
	if f.cordon.fires.Load() != 2 {
		t.Fatalf("fires %d after RememberFor", f.cordon.fires.Load())
	}
	dispatch("n1")
	if f.cordon.fires.Load() != 2 {
		t.Fatalf("fires %d: the new decision is not remembered", f.cordon.fires.Load())
	}
	// Expired entries are dropped as new ones come.
	f.clock.Advance(11 * time.Minute)
	dispatch("n2")
	if len(f.d.remembered) != 1 || len(f.d.order) != 1 {
		t.Errorf("remembers %d alerts (order %d), want 1", len(f.d.remembered), len(f.d.order))
	}
}

func TestDefaults(t *testing.T) {
	d, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := d.opts
	if o.RememberFor != time.Hour || o.MaxRemembered != 10000 || o.MaxDecisions != 200 || o.ActionTimeout != 8*time.Second ||
		o.Logger == nil || o.Now == nil || o.IsLeader == nil || !o.IsLeader() {
		t.Errorf("defaults %+v", o)
	}
}

func TestDecisionsBounded(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.MaxDecisions = 3 })
	for i := range 5 {
		if err := f.d.Dispatch(context.Background(), stale("firing", fmt.Sprint("n", i))); err != nil {
			t.Fatal(err)
		}
	}
	ds := f.d.Decisions()
	var fps []string
	for _, d := range ds {
		fps = append(fps, d.Fingerprint)
	}
	if strings.Join(fps, ",") != "fp-n2,fp-n3,fp-n4" {
		t.Errorf("decisions %v, want the last 3, newest last", fps)
	}
	ds[0].Fingerprint = "changed"
	if f.d.Decisions()[0].Fingerprint == "changed" {
		t.Error("Decisions shares its slice")
	}
	if ds[2].DurationMS < 0 {
		t.Errorf("duration %g", ds[2].DurationMS)
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, nil)
	// Every series exists from the start.
	nActions := len(config.AllActions) - 1 // none takes no action
	for _, tc := range []struct {
		c    prometheus.Collector
		name string
		want int
	}{
		{f.d.metrics.actions, "herd_responder_actions_total", nActions * len(action.Results)},
		{f.d.metrics.refusals, "herd_responder_guard_refusals_total", nActions * len(guard.All)},
		{f.d.metrics.duration, "herd_responder_action_duration_seconds", nActions},
		{f.d.metrics.duplicates, "herd_responder_duplicate_deliveries_total", nActions},
		{f.d.metrics.findings, "herd_responder_findings", len(action.Patterns)},
	} {
		if n := testutil.CollectAndCount(tc.c, tc.name); n != tc.want {
			t.Errorf("%s: %d series, want %d", tc.name, n, tc.want)
		}
		if n, err := testutil.GatherAndCount(f.reg, tc.name); err != nil || n != tc.want {
			t.Errorf("%s registered: %d series (%v), want %d", tc.name, n, err, tc.want)
		}
	}
	for _, a := range config.AllActions {
		if a == config.ActionNone {
			continue
		}
		for _, g := range guard.All {
			if v := testutil.ToFloat64(f.d.metrics.refusals.WithLabelValues(string(a), string(g))); v != 0 {
				t.Errorf("refusals{%s,%s} = %g", a, g, v)
			}
		}
	}
	if f.d.FindingsGauge() != f.d.metrics.findings {
		t.Error("FindingsGauge is not herd_responder_findings")
	}

	results := []action.Decision{
		{Result: action.Applied},
		{Result: action.Refused, Guard: guard.MaxUnschedulableFraction},
		{Result: action.Refused, Guard: guard.StormCooldown},
		{Result: action.Refused, Guard: guard.StormCooldown},
		{Result: action.Noop},
		{Result: action.DryRun},
	}
	f.cordon.decide = func(call int32, _ webhook.Alert) action.Decision { return results[call-1] }
	for i := range results {
		if err := f.d.Dispatch(context.Background(), stale("firing", fmt.Sprint("n", i))); err != nil {
			t.Fatal(err)
		}
	}
	for r, want := range map[action.Result]float64{action.Applied: 1, action.Refused: 3, action.Noop: 1, action.DryRun: 1, action.Failed: 0} {
		if got := f.actions(config.ActionCordon, r); got != want {
			t.Errorf("actions{cordon,%s} = %g, want %g", r, got, want)
		}
	}
	for g, want := range map[guard.Guard]float64{guard.MaxUnschedulableFraction: 1, guard.StormCooldown: 2, guard.Excluded: 0} {
		if got := testutil.ToFloat64(f.d.metrics.refusals.WithLabelValues("cordon", string(g))); got != want {
			t.Errorf("refusals{cordon,%s} = %g, want %g", g, got, want)
		}
	}
	if got := f.actions(config.ActionTriage, action.Applied); got != 0 {
		t.Errorf("actions{triage,applied} = %g", got)
	}
	// The series set did not grow: the labels used were all pre-created.
	if n := testutil.CollectAndCount(f.d.metrics.refusals); n != nActions*len(guard.All) {
		t.Errorf("%d refusal series after refusals", n)
	}
	// One duration observation per decision.
	if n := histogramCount(t, f.reg, "herd_responder_action_duration_seconds", "cordon"); n != uint64(len(results)) {
		t.Errorf("%d duration observations", n)
	}
	// Every decision is logged, refusals with their guard.
	logs := f.logs.String()
	if strings.Count(logs, `"msg":"decision"`) != len(results) || !strings.Contains(logs, `"guard":"storm_cooldown"`) ||
		!strings.Contains(logs, `"level":"WARN"`) {
		t.Errorf("logs:\n%s", logs)
	}
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name, act string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "action" && l.GetValue() == act {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	t.Fatalf("no %s{action=%q}", name, act)
	return 0
}

func TestRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(Options{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Registerer: reg}); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
}

func TestRemediate(t *testing.T) {
	f := newFixture(t, nil)
	a := stale("firing", "n1")
	a.Fingerprint = "burn/triage/0"
	// Remediations skip the delivery dedup: triage decides when to call.
	for range 2 {
		if d := f.d.Remediate(context.Background(), config.ActionCordon, a); d.Result != action.Applied {
			t.Errorf("remediate: %+v", d)
		}
	}
	if f.cordon.fires.Load() != 2 {
		t.Errorf("fires %d", f.cordon.fires.Load())
	}
	d := f.d.Remediate(context.Background(), config.ActionQuarantine, a)
	if d.Result != action.Refused || d.Guard != guard.LabelValidation || d.Reason != "this responder does not run quarantine" || d.Action != config.ActionQuarantine {
		t.Errorf("remediate with an action not run: %+v", d)
	}
	if got := testutil.ToFloat64(f.d.metrics.refusals.WithLabelValues("quarantine", "label_validation")); got != 1 {
		t.Errorf("refusals{quarantine,label_validation} = %g", got)
	}
	if n := len(f.d.Decisions()); n != 3 {
		t.Errorf("%d decisions", n)
	}
}

func TestSweep(t *testing.T) {
	f := newFixture(t, nil)
	s := &fakeAction{name: config.ActionIsolate, sweep: []action.Decision{
		{Action: config.ActionIsolate, Result: action.Applied, Target: "flowschema/herd-isolate-1"},
		{Action: config.ActionIsolate, Result: action.Failed, Err: errors.New("x"), Target: "flowschema/herd-isolate-2"},
	}}
	f.d.opts.Actions[config.ActionIsolate] = sweepAction{s}
	f.d.Sweep(context.Background())
	if f.actions(config.ActionIsolate, action.Applied) != 1 || f.actions(config.ActionIsolate, action.Failed) != 1 {
		t.Errorf("sweep decisions not recorded")
	}
	if n := len(f.d.Decisions()); n != 2 {
		t.Errorf("%d decisions", n)
	}
	// SweepLoop sweeps every interval until its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.d.SweepLoop(ctx, time.Millisecond); close(done) }()
	for f.actions(config.ActionIsolate, action.Applied) < 3 {
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
	transient := webhook.Transient(errors.New("prometheus unavailable"))
	f.cordon.decide = func(_ int32, a webhook.Alert) action.Decision {
		if a.Labels["node"] == "down" {
			return action.Decision{Result: action.Failed, Err: transient}
		}
		return action.Decision{Result: action.Applied}
	}
	if err := f.d.Dispatch(context.Background(), stale("firing", "ok")); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		f.clock.Advance(10 * time.Second)
		if err := f.d.Dispatch(context.Background(), stale("firing", "down")); !errors.Is(err, webhook.ErrTransient) {
			t.Fatalf("err %v", err)
		}
	}
	if f.cordon.fires.Load() != 51 {
		t.Errorf("fires %d: every retry must act", f.cordon.fires.Load())
	}
	if len(f.d.remembered) > 3 || len(f.d.order) > 3 {
		t.Errorf("remembers %d alerts in an order of %d keys; MaxRemembered is 3", len(f.d.remembered), len(f.d.order))
	}
	// The alert that succeeded is still remembered.
	if err := f.d.Dispatch(context.Background(), stale("firing", "ok")); err != nil || f.cordon.fires.Load() != 51 {
		t.Errorf("the remembered alert acted again: err %v, fires %d", err, f.cordon.fires.Load())
	}
}
