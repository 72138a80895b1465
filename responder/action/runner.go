package action

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// Op is one decision as an action describes it. The Runner calls its steps
// in the order of the fields, skips nil ones, and stops at the first that
// ends the decision (an Outcome that is not Continue). Steps share what
// they learn through the variables of the function that built the Op.
type Op struct {
	Action policy.Action
	// Alert is the alert decided about; for a sweep, one made from the
	// object's annotations (Status "sweep").
	Alert alert.Alert
	// Event names the Event that records the decision; a zero Reason
	// records none (triage's resolve, which decides nothing).
	Event EventNames

	// 1. Labels validates the alert labels the action reads and names the
	// target (Case.About).
	Labels func(c *Case) Outcome
	// 2. Evidence re-verifies the alert's condition from Prometheus and
	// the Kubernetes API (Case.Verify, Case.Query): alerts are triggers,
	// not evidence.
	Evidence func(ctx context.Context, c *Case) Outcome
	// 3. Read reads the object the action would change, from a cache
	// where one exists.
	Read func(ctx context.Context, c *Case) Outcome
	// 4. Guards applies the object-level guards (exclusion, ownership,
	// blast radius, slots, precedence) and returns the write to make, or
	// nil and how the decision ends.
	Guards func(ctx context.Context, c *Case) (*Write, Outcome)
}

// EventNames are an Op's Event reason prefix and action: the reason is the
// prefix and the result (HerdCordonApplied, HerdCordonRefused, ...) unless
// Suffixes says otherwise for a result (the sweep's HerdIsolateRemoved).
type EventNames struct {
	Reason   string
	Verb     string
	Suffixes map[Result]string
}

// Write is what a decision changes, as its guards decided it.
type Write struct {
	// What names the write in failures ("cordon node-1").
	What string
	// Done says what was done ("cordoned node node-1 ..."); in dry-run
	// mode the decision's reason is "dry run: would have " + Done.
	Done string
	// Budget: the write spends one of the action's guards.maxActionsPerHour,
	// given back if the write does not happen.
	Budget bool
	// Local: the write changes nothing in the cluster (triage records its
	// report): no leadership check, and dry-run mode does not apply.
	Local bool
	// Object is the body written (or, in dry-run mode, dry-run), shown in
	// /debug/actions.
	Object any
	// Apply writes; with dryRun, as a server-side dry run. It must be one
	// request, with a precondition on what the guards read.
	Apply func(ctx context.Context, dryRun bool) error
	// Release gives back what the guards reserved (cordon's place under
	// the blast-radius limit) when the write does not happen or fails.
	Release func()
}

// Outcome is how a step ends a decision; the zero value, Continue, lets
// the next step run.
type Outcome struct {
	result Result
	guard  guard.Guard
	reason string
	err    error
}

// Continue is the Outcome of a step that lets the decision go on.
var Continue = Outcome{}

// Ends reports whether o ends the decision.
func (o Outcome) Ends() bool { return o.result != "" }

// Refuse ends a decision with a guard's refusal; Refuse(nil) is Continue,
// so that a step can return whatever its guard said.
func Refuse(r *guard.Refusal) Outcome {
	if r == nil {
		return Continue
	}
	return Outcome{result: Refused, guard: r.Guard, reason: r.Reason}
}

// Nothing ends a decision as a no-op: what the alert asks for is already
// so, or is not herd's to do.
func Nothing(format string, args ...any) Outcome {
	return Outcome{result: Noop, reason: fmt.Sprintf(format, args...)}
}

// Fail ends a decision as failed: what was being done, and why. Errors a
// later delivery may not meet (unavailable, timeouts, conflicts,
// throttling, Prometheus unreachable, a lost Lease) are marked transient,
// so that the webhook answers 503 and Alertmanager retries.
func Fail(what string, err error) Outcome {
	if isTransient(err) {
		err = alert.Transient(err)
	}
	return Outcome{result: Failed, reason: what, err: fmt.Errorf("%s: %w", what, err)}
}

// Case is a decision being made; steps name its target, add evidence and
// note the objects they passed over.
type Case struct {
	d         Decision
	alert     alert.Alert
	regarding runtime.Object
	skipped   []skipped
	ev        evidence.Querier
	// window is prometheus.rateWindow: how far back an empty answer is
	// checked (evidence.Vanished).
	window string
	budget *guard.Budget
	// took: the guards took the budget themselves (TakeBudget).
	took bool
}

type skipped struct {
	regarding runtime.Object
	d         Decision
}

// Alert is the alert decided about.
func (c *Case) Alert() alert.Alert { return c.alert }

// DryRun reports whether the responder runs dry.
func (c *Case) DryRun() bool { return c.d.DryRun }

// About names the decision's target ("node/node-1") and the object its
// Event is recorded on; regarding nil keeps the responder's Lease.
func (c *Case) About(target string, regarding runtime.Object) {
	c.d.Target = target
	if regarding != nil {
		c.regarding = regarding
	}
}

// Verify runs one evidence query and continues when its largest value is
// above threshold; it refuses (verification) when not, and fails when
// Prometheus cannot answer — or when the query answers nothing now but
// confirmed within the last rate window (evidence.Vanished): a missed scrape
// is not a condition that ended.
func (c *Case) Verify(ctx context.Context, query string, threshold float64, what string) Outcome {
	chk, err := evidence.Max(ctx, c.ev, query, threshold)
	if err == nil && chk.Series == 0 {
		err = evidence.Vanished(ctx, c.ev, query, c.window, threshold)
	}
	c.d.Evidence = append(c.d.Evidence, chk)
	if err != nil {
		return Fail("read evidence", err)
	}
	if chk.Confirmed {
		return Continue
	}
	if chk.Series == 0 {
		return Refuse(guard.Refuse(guard.Verification, "Prometheus does not confirm %s: %s returned nothing", what, query))
	}
	return Refuse(guard.Refuse(guard.Verification, "Prometheus does not confirm %s: %s = %g, not above %g", what, query, chk.Value, threshold))
}

// Query runs an evidence query; the caller records what it concluded with
// AddEvidence. An empty answer is only what Prometheus holds now (triage
// reads it so); an action that refuses on it uses QueryEvidence.
func (c *Case) Query(ctx context.Context, query string) ([]evidence.Sample, error) {
	return c.ev.Query(ctx, query)
}

// QueryEvidence is Query for an action's evidence: an empty answer fails
// (evidence.ErrUnavailable: Alertmanager retries) when the query had series
// within the last rate window (evidence.Vanished), instead of being taken
// for a condition that ended.
func (c *Case) QueryEvidence(ctx context.Context, query string) ([]evidence.Sample, error) {
	samples, err := c.ev.Query(ctx, query)
	if err == nil && len(samples) == 0 {
		err = evidence.Vanished(ctx, c.ev, query, c.window, math.Inf(-1))
	}
	return samples, err
}

// AddEvidence records a piece of evidence.
func (c *Case) AddEvidence(chk evidence.Check) { c.d.Evidence = append(c.d.Evidence, chk) }

// Skip records an object the decision considered and passed over (a
// Deployment already flagged) with an Event of its own; the decision
// itself goes on.
func (c *Case) Skip(target string, regarding runtime.Object, o Outcome) {
	d := c.d
	d.Evidence = append([]evidence.Check(nil), c.d.Evidence...)
	d.Target = target
	end(&d, o)
	c.skipped = append(c.skipped, skipped{regarding: regarding, d: d})
}

// TakeBudget takes the action's budget now, inside the guards, for an
// action whose guards reserve something under a lock of their own that the
// budget must not be taken apart from (cordon's place under the
// blast-radius limit: a cooldown another cordon trips in between must not
// refuse one that already passed). The Runner then does not take it again,
// and refunds it as always if the write does not happen.
func (c *Case) TakeBudget() *guard.Refusal {
	if r := c.budget.Take(c.d.Action); r != nil {
		return r
	}
	c.took = true
	return nil
}

// Recorder is the part of k8s.io/client-go/tools/events.EventRecorder the
// Runner uses.
type Recorder interface {
	Eventf(regarding runtime.Object, related runtime.Object, eventtype, reason, action, note string, args ...interface{})
}

// RunnerOptions configure a Runner.
type RunnerOptions struct {
	// Env is what the actions share: the configuration (dry run), the
	// budget and the clock.
	Env      *Env
	Evidence evidence.Querier
	Events   Recorder
	// Self is the object Events are recorded on when there is no object
	// concerned (triage, an alert naming a node that does not exist): the
	// responder's leader Lease.
	Self *corev1.ObjectReference
	// IsLeader is checked right before every write: a replica that lost
	// its Lease while deciding does not write. nil: always.
	IsLeader func() bool
	// MaxDecisions bounds /debug/actions (default 200).
	MaxDecisions int
	Registerer   prometheus.Registerer
	Logger       *slog.Logger
}

// Runner makes every decision of every action: the one place where the
// guards of SPEC §4.3 run, in one order, and where decisions are recorded.
// Safe for concurrent use.
type Runner struct {
	opts    RunnerOptions
	metrics *metrics
	actions map[policy.Action]Action

	mu        sync.Mutex
	decisions []Decision
}

// NewRunner returns a Runner; Register gives it its actions.
func NewRunner(opts RunnerOptions) (*Runner, error) {
	if opts.MaxDecisions <= 0 {
		opts.MaxDecisions = 200
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.IsLeader == nil {
		opts.IsLeader = func() bool { return true }
	}
	if opts.Env == nil {
		return nil, errors.New("action runner: no Env")
	}
	if opts.Env.Budget == nil {
		opts.Env.Budget = guard.NewBudget(opts.Env.Config.Guards, opts.Env.Now)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Runner{opts: opts, metrics: m, actions: map[policy.Action]Action{}}, nil
}

// Register adds actions; an action registered twice replaces the first.
func (r *Runner) Register(actions ...Action) {
	for _, a := range actions {
		r.actions[a.Name()] = a
	}
}

// Runs reports whether act is registered.
func (r *Runner) Runs(act policy.Action) bool { _, ok := r.actions[act]; return ok }

// Handle decides alert a with action act: its fire path when a fires, its
// resolve path when it resolved. An action the responder does not run is
// refused (label_validation), and recorded like any decision.
func (r *Runner) Handle(ctx context.Context, act policy.Action, a alert.Alert) Decision {
	x, ok := r.actions[act]
	if !ok {
		return r.Run(ctx, Op{Action: act, Alert: a, Labels: func(*Case) Outcome {
			return Refuse(guard.Refuse(guard.LabelValidation, "this responder does not run %s", act))
		}})
	}
	if a.Firing() {
		return r.Run(ctx, x.Fire(a))
	}
	return r.Run(ctx, x.Resolve(a))
}

// Sweep runs every sweeping action's removals, in the actions' name order,
// if this replica leads.
func (r *Runner) Sweep(ctx context.Context) {
	if !r.opts.IsLeader() {
		return
	}
	names := make([]string, 0, len(r.actions))
	for n := range r.actions {
		names = append(names, string(n))
	}
	sort.Strings(names)
	for _, n := range names {
		if s, ok := r.actions[policy.Action(n)].(Sweeper); ok {
			for _, op := range s.Sweep() {
				r.Run(ctx, op)
			}
		}
	}
}

// errNotLeader stops a write by a replica that is no longer the leader.
var errNotLeader = alert.Transient(errors.New("this replica lost the leader Lease before writing; the new leader acts on the next delivery"))

// Run makes one decision. The order of its steps is the guarantee of SPEC
// §4.3; every decision, whatever step ended it, is recorded the same way.
func (r *Runner) Run(ctx context.Context, op Op) Decision {
	start := time.Now()
	c := &Case{alert: op.Alert, ev: r.opts.Evidence, window: r.opts.Env.Config.Prometheus.RateWindow, budget: r.opts.Env.Budget, d: Decision{
		Time: r.opts.Env.now(), Action: op.Action, Alert: op.Alert.Name(), Status: op.Alert.Status,
		Fingerprint: op.Alert.Fingerprint, Labels: op.Alert.Labels, DryRun: r.opts.Env.Config.DryRun,
	}}
	r.decide(ctx, c, op)
	c.d.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	r.metrics.duration.WithLabelValues(string(op.Action)).Observe(time.Since(start).Seconds())
	r.record(c, op)
	return c.d
}

func (r *Runner) decide(ctx context.Context, c *Case, op Op) {
	// 1. The labels the action reads: valid names, known roles.
	if op.Labels != nil {
		if o := op.Labels(c); o.Ends() {
			end(&c.d, o)
			return
		}
	}
	// 2. The evidence: the alert's condition, read again.
	if op.Evidence != nil {
		if o := op.Evidence(ctx, c); o.Ends() {
			end(&c.d, o)
			return
		}
	}
	// 3. The object, as it is now.
	if op.Read != nil {
		if o := op.Read(ctx, c); o.Ends() {
			end(&c.d, o)
			return
		}
	}
	// 4. The object-level guards, which say what to write.
	if op.Guards == nil {
		end(&c.d, Nothing("nothing to do"))
		return
	}
	w, o := op.Guards(ctx, c)
	if w == nil {
		if c.took {
			r.opts.Env.Budget.Refund(op.Action)
		}
		if !o.Ends() {
			o = Nothing("nothing to do")
		}
		end(&c.d, o)
		return
	}
	release := func() {
		if w.Release != nil {
			w.Release()
		}
	}
	// 5. The budget: actions per hour and the storm cooldown (unless the
	// guards took it, see Case.TakeBudget).
	if w.Budget && !c.took {
		if rf := r.opts.Env.Budget.Take(op.Action); rf != nil {
			release()
			end(&c.d, Refuse(rf))
			return
		}
		c.took = true
	}
	undo := func() {
		release()
		if c.took {
			r.opts.Env.Budget.Refund(op.Action)
		}
	}
	// 6. Leadership, right before writing.
	if !w.Local && !r.opts.IsLeader() {
		undo()
		end(&c.d, Fail(w.What, errNotLeader))
		return
	}
	// 7. The write, or its dry run.
	dry := c.d.DryRun && !w.Local
	c.d.Object = w.Object
	if err := w.Apply(ctx, dry); err != nil {
		undo()
		end(&c.d, Fail(w.What, err))
		return
	}
	c.d.Result, c.d.Reason = Applied, w.Done
	if dry {
		c.d.Result, c.d.Reason = DryRun, "dry run: would have "+w.Done
	}
}

// end writes an ending Outcome into d.
func end(d *Decision, o Outcome) {
	d.Result, d.Guard, d.Reason = o.result, o.guard, o.reason
	if o.err != nil {
		d.Err, d.Error = o.err, o.err.Error()
	}
}

func isTransient(err error) bool {
	if errors.Is(err, alert.ErrTransient) || errors.Is(err, evidence.ErrUnavailable) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsConflict(err) ||
		apierrors.IsUnexpectedServerError(err) || isConnectionError(err)
}

func isConnectionError(err error) bool {
	s := err.Error()
	// client-go's rate limiter gives up with its own error, not
	// context.DeadlineExceeded, when the wait would outlast the deadline.
	for _, m := range []string{"connection refused", "connection reset", "i/o timeout", "no route to host", "EOF", "http2: client connection lost",
		"client rate limiter Wait returned an error"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// record counts, logs, keeps and Events a decision, and Events the objects
// it passed over.
func (r *Runner) record(c *Case, op Op) {
	d := c.d
	for _, s := range c.skipped {
		r.event(s.regarding, op.Event, s.d)
	}
	r.event(c.regarding, op.Event, d)

	r.metrics.actions.WithLabelValues(string(d.Action), string(d.Result)).Inc()
	if d.Result == Refused {
		r.metrics.refusals.WithLabelValues(string(d.Action), string(d.Guard)).Inc()
	}
	level := slog.LevelInfo
	switch d.Result {
	case Refused:
		level = slog.LevelWarn
	case Failed:
		level = slog.LevelError
	}
	attrs := []any{"action", d.Action, "result", d.Result, "alertname", d.Alert, "fingerprint", d.Fingerprint,
		"status", d.Status, "target", d.Target, "dry_run", d.DryRun, "reason", d.Reason, "duration_ms", d.DurationMS}
	if d.Guard != "" {
		attrs = append(attrs, "guard", d.Guard)
	}
	if d.Err != nil {
		attrs = append(attrs, "err", d.Err)
	}
	r.opts.Logger.Log(context.Background(), level, "decision", attrs...)

	r.mu.Lock()
	r.decisions = append(r.decisions, d)
	if len(r.decisions) > r.opts.MaxDecisions {
		r.decisions = append(r.decisions[:0], r.decisions[len(r.decisions)-r.opts.MaxDecisions:]...)
	}
	r.mu.Unlock()
}

var reasonSuffix = map[Result]string{Applied: "Applied", DryRun: "DryRun", Refused: "Refused", Noop: "Noop", Failed: "Failed"}

// event records d as an Event on regarding (the responder's Lease when
// nil). Recording is asynchronous and never fails a decision.
func (r *Runner) event(regarding runtime.Object, names EventNames, d Decision) {
	if r.opts.Events == nil || names.Reason == "" {
		return
	}
	if regarding == nil {
		if r.opts.Self == nil {
			return
		}
		regarding = r.opts.Self
	}
	t := corev1.EventTypeNormal
	if d.Result == Refused || d.Result == Failed {
		t = corev1.EventTypeWarning
	}
	suffix, ok := names.Suffixes[d.Result]
	if !ok {
		suffix = reasonSuffix[d.Result]
	}
	note := d.Reason
	if d.Err != nil {
		note = d.Err.Error()
	}
	// The events API caps a note at 1 KiB.
	r.opts.Events.Eventf(regarding, nil, t, names.Reason+suffix, names.Verb, "%s", truncate(note, 1000))
}

// Decisions returns the last decisions, newest last: /debug/actions.
func (r *Runner) Decisions() []Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Decision(nil), r.decisions...)
}

// DryRun reports whether the runner decides without changing anything.
func (r *Runner) DryRun() bool { return r.opts.Env.Config.DryRun }
