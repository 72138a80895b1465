// Package dispatch turns alert deliveries into decisions: it routes each
// alert to its action, lets only the leader act, makes repeated deliveries
// act once, answers Alertmanager in time while a slow decision goes on, and
// runs the periodic sweeps. The decisions themselves, and their records,
// are the action Runner's (responder/action).
//
// # Acting once
//
// Alertmanager delivers at least once: retries, repeat_interval and an HA
// pair all bring the same alert again, also concurrently. The dispatcher
// remembers each (fingerprint, status, startsAt) it decided for
// RememberFor; a delivery of one it is deciding waits for that decision and
// a delivery of one it decided returns at once, neither decided again.
// Two answers are not remembered, so that the next delivery decides again:
// a transient failure, and a firing alert refused by verification (its
// evidence is not there now, but the alert still fires: a held alert such
// as HerdSynchronizedRelist keeps firing through a later wave, and only
// its repeats, re-verified, can see that wave).
// What a new leader did not see, the actions themselves make idempotent:
// a node herd already cordoned or a FlowSchema slot already serving the
// client is a no-op, and writes carry resourceVersion preconditions or are
// server-side applies.
//
// # Answering in time
//
// Alertmanager gives a notification 10 s by default (the flush's context,
// max(group_interval, 10s)). A decision may take longer when the apiserver
// is saturated, which is exactly when herd acts. So a delivery waits at
// most ReplyTimeout for its decision; past it, the delivery is answered
// 503 (transient: Alertmanager retries) while the decision goes on, up to
// ActionTimeout, and the retry waits for it and gets its answer.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/responder/action"
	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// ErrNotLeader is returned, marked transient, to deliveries that reach a
// replica that does not hold the Lease: the webhook answers 503 and
// Alertmanager retries (through the Service, which routes only to the
// ready leader).
var ErrNotLeader = errors.New("this responder replica is not the leader")

// ErrStillDeciding is returned, marked transient, to a delivery whose
// decision outlasts ReplyTimeout: Alertmanager retries, and the retry
// waits for the same decision.
var ErrStillDeciding = errors.New("the decision is still being made (the apiserver is slow); Alertmanager's retry gets its answer")

// Defaults of Options.
const (
	DefaultRememberFor   = time.Hour
	DefaultMaxRemembered = 10000
	// DefaultReplyTimeout answers under Alertmanager's 10 s.
	DefaultReplyTimeout = 8 * time.Second
	// DefaultActionTimeout lets a write that lands on a saturated
	// apiserver finish (the storm drill measured single requests of up to
	// 7 s there).
	DefaultActionTimeout = 30 * time.Second
)

// Runner makes decisions; *action.Runner is the one the responder uses.
type Runner interface {
	// Runs reports whether the runner has act.
	Runs(act policy.Action) bool
	// Handle decides a with act and records the decision.
	Handle(ctx context.Context, act policy.Action, a alert.Alert) action.Decision
	// Sweep removes what expired.
	Sweep(ctx context.Context)
}

// Options configure a Dispatcher.
type Options struct {
	Config policy.Config
	Runner Runner
	// IsLeader reports whether this replica may act. nil: always.
	IsLeader func() bool
	// RememberFor is how long a decided alert is remembered
	// (DefaultRememberFor: longer than Alertmanager's retries, shorter than
	// its default repeat_interval of 4h, after which the action re-checks
	// the cluster).
	RememberFor time.Duration
	// MaxRemembered bounds that memory (DefaultMaxRemembered alerts); the
	// oldest are forgotten first.
	MaxRemembered int
	// ReplyTimeout bounds how long a delivery waits for its decision
	// (DefaultReplyTimeout).
	ReplyTimeout time.Duration
	// ActionTimeout bounds one decision (DefaultActionTimeout).
	ActionTimeout time.Duration
	Registerer    prometheus.Registerer
	Logger        *slog.Logger
	Now           func() time.Time
}

// Dispatcher implements webhook.Dispatcher.
type Dispatcher struct {
	opts       Options
	duplicates *prometheus.CounterVec

	mu         sync.Mutex
	remembered map[string]*entry
	order      []string // keys, oldest first
	inFlight   sync.WaitGroup
}

type entry struct {
	at       time.Time
	done     chan struct{}
	decision action.Decision
}

// New returns a Dispatcher.
func New(opts Options) (*Dispatcher, error) {
	if opts.Runner == nil {
		return nil, errors.New("dispatch: no runner")
	}
	if opts.RememberFor <= 0 {
		opts.RememberFor = DefaultRememberFor
	}
	if opts.MaxRemembered <= 0 {
		opts.MaxRemembered = DefaultMaxRemembered
	}
	if opts.ReplyTimeout <= 0 {
		opts.ReplyTimeout = DefaultReplyTimeout
	}
	if opts.ActionTimeout <= 0 {
		opts.ActionTimeout = DefaultActionTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.IsLeader == nil {
		opts.IsLeader = func() bool { return true }
	}
	dup := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herd_responder_duplicate_deliveries_total",
		Help: "Deliveries of an alert already decided or being decided (Alertmanager retries, repeats and HA pairs), answered without acting again.",
	}, []string{"action"})
	for _, a := range policy.AllActions {
		if a != policy.ActionNone {
			dup.WithLabelValues(string(a))
		}
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(dup); err != nil {
			return nil, err
		}
	}
	return &Dispatcher{opts: opts, duplicates: dup, remembered: map[string]*entry{}}, nil
}

// key identifies one delivery's alert: the same alert firing again after a
// resolve has a new startsAt.
func key(a alert.Alert) string {
	fp := a.Fingerprint
	if fp == "" { // not from Alertmanager: the labels identify it
		var b strings.Builder
		for _, k := range slices.Sorted(maps.Keys(a.Labels)) {
			fmt.Fprintf(&b, "%s=%q,", k, a.Labels[k])
		}
		fp = b.String()
	}
	return fmt.Sprintf("%s|%s|%d", fp, a.Status, a.StartsAt.UnixNano())
}

// Dispatch implements webhook.Dispatcher.
func (d *Dispatcher) Dispatch(ctx context.Context, a alert.Alert) error {
	route, ok := d.opts.Config.Route(a.Labels)
	if !ok || route.Action == policy.ActionNone {
		d.opts.Logger.Debug("alert has no action", "alertname", a.Name(), "fingerprint", a.Fingerprint, "status", a.Status)
		return nil
	}
	if !d.opts.Runner.Runs(route.Action) {
		return fmt.Errorf("route to %s, which this responder does not run", route.Action)
	}
	if !d.opts.IsLeader() {
		return alert.Transient(ErrNotLeader)
	}

	k := key(a)
	d.mu.Lock()
	now := d.opts.Now()
	if e, ok := d.remembered[k]; ok && now.Sub(e.at) < d.opts.RememberFor {
		d.mu.Unlock()
		d.duplicates.WithLabelValues(string(route.Action)).Inc()
		return d.wait(ctx, e, "waiting for the first delivery's decision")
	}
	e := &entry{at: now, done: make(chan struct{})}
	d.remember(k, e)
	d.inFlight.Add(1)
	d.mu.Unlock()

	// The decision's context outlives the request's (a sender that hangs
	// up must not leave a half-made change) but is bounded.
	go func() {
		defer d.inFlight.Done()
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.ActionTimeout)
		defer cancel()
		dec := d.opts.Runner.Handle(actx, route.Action, a)
		e.decision = dec
		// A failure is not remembered: the next delivery (Alertmanager's
		// retry of a 503, or its next group_interval or repeat) acts again.
		// Nor is a firing alert's verification refusal: the evidence may
		// come later while the alert fires, and a repeat re-verifies.
		if forget(a, dec) {
			d.mu.Lock()
			if d.remembered[k] == e {
				// Expire the entry rather than delete it: its key stays in
				// d.order once, where a deleted key would be appended
				// again by every retry, growing d.order past MaxRemembered
				// for as long as the failure lasts.
				e.at = time.Time{}
			}
			d.mu.Unlock()
		}
		close(e.done)
	}()
	return d.wait(ctx, e, "waiting for the decision")
}

// forget reports whether decision dec about a must not be remembered: a
// transient failure, or a firing alert whose evidence Prometheus or the
// API did not confirm (guard verification). Other refusals (blast radius,
// budget, cooldown, labels) stand for RememberFor, as answers do.
func forget(a alert.Alert, dec action.Decision) bool {
	return dec.Result == action.Failed ||
		dec.Result == action.Refused && dec.Guard == guard.Verification && a.Firing()
}

// wait returns e's decision's error once it is made, or a transient error
// when the request ends or ReplyTimeout passes first.
func (d *Dispatcher) wait(ctx context.Context, e *entry, what string) error {
	t := time.NewTimer(d.opts.ReplyTimeout)
	defer t.Stop()
	select {
	case <-e.done:
		return e.decision.Err
	case <-ctx.Done():
		return alert.Transient(fmt.Errorf("%s: %w", what, ctx.Err()))
	case <-t.C:
		return alert.Transient(ErrStillDeciding)
	}
}

// remember stores e under k, forgetting the oldest entries beyond the
// bound. Callers hold d.mu.
func (d *Dispatcher) remember(k string, e *entry) {
	if _, ok := d.remembered[k]; !ok {
		d.order = append(d.order, k)
	}
	d.remembered[k] = e
	now := d.opts.Now()
	drop := 0
	for drop < len(d.order) {
		old, ok := d.remembered[d.order[drop]]
		if ok && len(d.remembered) <= d.opts.MaxRemembered && now.Sub(old.at) < d.opts.RememberFor {
			break
		}
		if ok && d.order[drop] != k {
			delete(d.remembered, d.order[drop])
		}
		drop++
	}
	if drop > 0 {
		d.order = append(d.order[:0], d.order[drop:]...)
	}
}

// Wait waits until every decision under way is made, or ctx ends: the
// responder releases its Lease only after.
func (d *Dispatcher) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { d.inFlight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SweepLoop runs the sweeps every interval while this replica leads, until
// ctx ends.
func (d *Dispatcher) SweepLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.Sweep(ctx)
	}
}

// Sweep runs the sweeps once, if this replica leads.
func (d *Dispatcher) Sweep(ctx context.Context) {
	if !d.opts.IsLeader() {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, d.opts.ActionTimeout)
	defer cancel()
	d.opts.Runner.Sweep(sctx)
}
