package action

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// steps is an Op whose steps record that they ran and end as told.
type steps struct {
	ran                            []string
	labels, evidence, read, guards Outcome
	write                          *Write
	applied                        []bool // dryRun of each Apply
	applyErr                       error
	released                       int
}

func (s *steps) op(act policy.Action, a alert.Alert) Op {
	return Op{
		Action: act, Alert: a, Event: EventNames{Reason: "HerdTest", Verb: "Test"},
		Labels: func(c *Case) Outcome {
			s.ran = append(s.ran, "labels")
			c.About("thing/x", nodeRef("x"))
			return s.labels
		},
		Evidence: func(context.Context, *Case) Outcome { s.ran = append(s.ran, "evidence"); return s.evidence },
		Read:     func(context.Context, *Case) Outcome { s.ran = append(s.ran, "read"); return s.read },
		Guards: func(context.Context, *Case) (*Write, Outcome) {
			s.ran = append(s.ran, "guards")
			if s.write == nil {
				return nil, s.guards
			}
			w := *s.write
			w.Apply = func(_ context.Context, dryRun bool) error {
				s.ran = append(s.ran, "apply")
				s.applied = append(s.applied, dryRun)
				return s.applyErr
			}
			w.Release = func() { s.released++ }
			return &w, Continue
		},
	}
}

// TestRunnerOrder: the steps run in their order, the first that ends the
// decision stops the rest, and the write comes after the budget and the
// leadership check.
func TestRunnerOrder(t *testing.T) {
	refusal := Refuse(guard.Refuse(guard.Excluded, "no"))
	write := &Write{What: "write x", Done: "wrote x", Budget: true}
	cases := []struct {
		name     string
		s        steps
		spend    bool
		notLead  bool
		dryRun   bool
		ran      string
		want     want
		budget   bool // one unit of the budget spent after
		released int
	}{
		{name: "labels refuse", s: steps{labels: refusal}, ran: "labels", want: want{result: Refused, guard: guard.Excluded, reason: "no"}},
		{name: "evidence fails", s: steps{evidence: Fail("read evidence", apierrors.NewServiceUnavailable("x"))}, ran: "labels evidence",
			want: want{result: Failed, reason: "read evidence"}},
		{name: "read: nothing to do", s: steps{read: Nothing("gone")}, ran: "labels evidence read", want: want{result: Noop, reason: "gone"}},
		{name: "guards refuse", s: steps{guards: refusal}, ran: "labels evidence read guards", want: want{result: Refused, guard: guard.Excluded}},
		{name: "guards say nothing", s: steps{}, ran: "labels evidence read guards", want: want{result: Noop, reason: "nothing to do"}},
		{name: "applied", s: steps{write: write}, ran: "labels evidence read guards apply", want: want{result: Applied, reason: "wrote x"}, budget: true},
		{name: "dry run", s: steps{write: write}, dryRun: true, ran: "labels evidence read guards apply",
			want: want{result: DryRun, reason: "dry run: would have wrote x"}, budget: true},
		{name: "budget spent: no write, reservation released", s: steps{write: write}, spend: true, ran: "labels evidence read guards",
			want: want{result: Refused, guard: guard.MaxActionsPerHour}, budget: true, released: 1},
		{name: "not the leader: no write, budget refunded", s: steps{write: write}, notLead: true, ran: "labels evidence read guards",
			want: want{result: Failed, reason: "write x"}, released: 1},
		{name: "the write fails: budget refunded", s: steps{write: write, applyErr: apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "x", errors.New("rv"))},
			ran: "labels evidence read guards apply", want: want{result: Failed, reason: "write x"}, released: 1},
		{name: "a write without budget", s: steps{write: &Write{What: "w", Done: "did"}}, ran: "labels evidence read guards apply", want: want{result: Applied}},
		{name: "a local write needs no leadership and ignores dry run", s: steps{write: &Write{What: "w", Done: "did", Local: true}}, notLead: true, dryRun: true,
			ran: "labels evidence read guards apply", want: want{result: Applied, reason: "did"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *policy.Config) {
				c.DryRun = tc.dryRun
				c.Guards.MaxActionsPerHour[policy.ActionCordon] = 1
			})
			f.setLeader(!tc.notLead)
			if tc.spend {
				f.spend(t, policy.ActionCordon)
			}
			s := tc.s
			d := f.run(s.op(policy.ActionCordon, firing("alertname", "X")))
			tc.want.check(t, d)
			if got := strings.Join(s.ran, " "); got != tc.ran {
				t.Errorf("ran %q, want %q", got, tc.ran)
			}
			if len(s.applied) == 1 && s.applied[0] != (tc.dryRun && !s.write.Local) {
				t.Errorf("Apply(dryRun=%v)", s.applied[0])
			}
			spent := f.env.Budget.Take(policy.ActionCordon) != nil
			if spent != tc.budget {
				t.Errorf("budget spent %v, want %v", spent, tc.budget)
			}
			if s.released != tc.released {
				t.Errorf("released %d times, want %d", s.released, tc.released)
			}
			if d.Target != "thing/x" || d.Action != policy.ActionCordon || d.Alert != "X" || d.Status != "firing" || d.DryRun != tc.dryRun {
				t.Errorf("decision header %+v", d)
			}
			if d.Result == Failed && tc.notLead && (!errors.Is(d.Err, alert.ErrTransient) || !errors.Is(d.Err, errNotLeader)) {
				t.Errorf("not the leader: %v", d.Err)
			}
			if got := f.rec.reasons(); !reflect.DeepEqual(got, []string{"Node/x HerdTest" + reasonSuffix[d.Result]}) {
				t.Errorf("events %q", got)
			}
		})
	}
}

// TestRunnerRecords: every decision is counted, its refusals by guard,
// timed, logged and kept; every series exists from the start.
func TestRunnerRecords(t *testing.T) {
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	f := newFixture(t, nil)
	r, err := NewRunner(RunnerOptions{Env: f.env, Evidence: f.q, Events: f.rec, Self: selfRef, Registerer: reg, MaxDecisions: 3,
		Logger: slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	nActions := len(policy.AllActions) - 1 // none takes no action
	for _, tc := range []struct {
		c    prometheus.Collector
		name string
		want int
	}{
		{r.metrics.actions, "herd_responder_actions_total", nActions * len(Results)},
		{r.metrics.refusals, "herd_responder_guard_refusals_total", nActions * len(guard.All)},
		{r.metrics.duration, "herd_responder_action_duration_seconds", nActions},
	} {
		if n, err := testutil.GatherAndCount(reg, tc.name); err != nil || n != tc.want {
			t.Errorf("%s registered: %d series (%v), want %d", tc.name, n, err, tc.want)
		}
	}
	ends := []Outcome{Continue, Refuse(guard.Refuse(guard.MaxUnschedulableFraction, "full")), Refuse(guard.Refuse(guard.StormCooldown, "cool")),
		Refuse(guard.Refuse(guard.StormCooldown, "cool")), Nothing("done already")}
	for i, o := range ends {
		a := firing("alertname", "HerdStaleKubelet", "node", fmt.Sprint("n", i))
		s := &steps{guards: o}
		if !o.Ends() {
			s.write = &Write{What: "w", Done: "did"}
		}
		r.Run(context.Background(), s.op(policy.ActionCordon, a))
	}
	for res, want := range map[Result]float64{Applied: 1, Refused: 3, Noop: 1, DryRun: 0, Failed: 0} {
		if got := testutil.ToFloat64(r.metrics.actions.WithLabelValues("cordon", string(res))); got != want {
			t.Errorf("actions{cordon,%s} = %g, want %g", res, got, want)
		}
	}
	for g, want := range map[guard.Guard]float64{guard.MaxUnschedulableFraction: 1, guard.StormCooldown: 2, guard.Excluded: 0} {
		if got := testutil.ToFloat64(r.metrics.refusals.WithLabelValues("cordon", string(g))); got != want {
			t.Errorf("refusals{cordon,%s} = %g, want %g", g, got, want)
		}
	}
	if n := testutil.CollectAndCount(r.metrics.refusals); n != nActions*len(guard.All) {
		t.Errorf("%d refusal series after refusals: the labels used were not all pre-created", n)
	}
	if n := histogramCount(t, reg, "herd_responder_action_duration_seconds", "cordon"); n != uint64(len(ends)) {
		t.Errorf("%d duration observations", n)
	}
	out := logs.String()
	if strings.Count(out, `"msg":"decision"`) != len(ends) || !strings.Contains(out, `"guard":"storm_cooldown"`) || !strings.Contains(out, `"level":"WARN"`) {
		t.Errorf("logs:\n%s", out)
	}
	// /debug/actions: the last 3, newest last, a copy.
	ds := r.Decisions()
	var fps []string
	for _, d := range ds {
		fps = append(fps, d.Labels["node"])
	}
	if strings.Join(fps, ",") != "n2,n3,n4" {
		t.Errorf("decisions %v, want the last 3, newest last", fps)
	}
	ds[0].Fingerprint = "changed"
	if r.Decisions()[0].Fingerprint == "changed" {
		t.Error("Decisions shares its slice")
	}
	if _, err := NewRunner(RunnerOptions{Env: f.env, Registerer: reg}); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
	if _, err := NewRunner(RunnerOptions{}); err == nil {
		t.Error("a runner without an Env")
	}
}

// TestRunnerEvents: an Event on the object concerned or the Lease, the
// suffixes an Op overrides, none for an Op without a reason, and one per
// object a decision passed over.
func TestRunnerEvents(t *testing.T) {
	f := newFixture(t, nil)
	f.run(Op{Action: policy.ActionTriage, Alert: firing("alertname", "X"), Event: EventNames{Reason: "HerdT", Verb: "T"},
		Labels: func(*Case) Outcome { return Nothing("n") }})
	f.run(Op{Action: policy.ActionIsolate, Alert: firing("alertname", "X"),
		Event: EventNames{Reason: "HerdT", Verb: "Delete", Suffixes: map[Result]string{Applied: "Removed"}},
		Guards: func(_ context.Context, c *Case) (*Write, Outcome) {
			c.About("flowschema/s", fsRef("s"))
			c.Skip("deployment/a/b", deploymentRef(deploymentID{"a", "b"}), Refuse(guard.Refuse(guard.Excluded, "held")))
			return &Write{What: "w", Done: "d", Apply: func(context.Context, bool) error { return nil }}, Continue
		}})
	f.run(Op{Action: policy.ActionTriage, Alert: resolved("alertname", "X"), Labels: func(*Case) Outcome { return Nothing("quiet") }})
	got := f.rec.Take()
	var names []string
	for _, e := range got {
		names = append(names, fmt.Sprintf("%s/%s %s %s %s", e.Kind, e.Name, e.Type, e.Reason, e.Action))
	}
	want := []string{"Lease/herd-responder Normal HerdTNoop T", "Deployment/b Warning HerdTRefused Delete", "FlowSchema/s Normal HerdTRemoved Delete"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("events\n%q\nwant\n%q", names, want)
	}
	if got[1].Note != "held" {
		t.Errorf("the passed-over object's note %q", got[1].Note)
	}
}

// Handle: the fire or resolve path of the action named, and a refusal,
// recorded, for an action the responder does not run.
func TestRunnerHandle(t *testing.T) {
	f := newFixture(t, nil)
	rec := &recordingAction{}
	f.runner.Register(rec)
	f.runner.Handle(context.Background(), policy.ActionCordon, firing("alertname", "A"))
	f.runner.Handle(context.Background(), policy.ActionCordon, resolved("alertname", "A"))
	if strings.Join(rec.calls, ",") != "fire,resolve" {
		t.Errorf("calls %v", rec.calls)
	}
	d := f.runner.Handle(context.Background(), policy.ActionQuarantine, firing("alertname", "B"))
	if d.Result != Refused || d.Guard != guard.LabelValidation || d.Reason != "this responder does not run quarantine" || d.Action != policy.ActionQuarantine {
		t.Errorf("an action not run: %+v", d)
	}
	if n := len(f.runner.Decisions()); n != 3 {
		t.Errorf("%d decisions", n)
	}
	if !f.runner.Runs(policy.ActionCordon) || f.runner.Runs(policy.ActionIsolate) {
		t.Error("Runs")
	}
}

type recordingAction struct{ calls []string }

func (*recordingAction) Name() policy.Action { return policy.ActionCordon }
func (r *recordingAction) Fire(a alert.Alert) Op {
	r.calls = append(r.calls, "fire")
	return Op{Action: policy.ActionCordon, Alert: a}
}
func (r *recordingAction) Resolve(a alert.Alert) Op {
	r.calls = append(r.calls, "resolve")
	return Op{Action: policy.ActionCordon, Alert: a}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
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
