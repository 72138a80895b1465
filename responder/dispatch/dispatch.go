// Package dispatch turns alerts into decisions: it routes each alert to its
// action, lets only the leader act, makes repeated deliveries act once, and
// records every decision (metrics, a structured log line with the alert's
// fingerprint, and /debug/actions).
//
// # Acting once
//
// Alertmanager delivers at least once: retries, repeat_interval and an HA
// pair all bring the same alert again, also concurrently. The dispatcher
// remembers each (fingerprint, status, startsAt) it decided for
// RememberFor; a delivery of one it is deciding waits for that decision and
// a delivery of one it decided returns at once, neither recorded again.
// What a new leader did not see, the actions themselves make idempotent:
// a node herd already cordoned or a FlowSchema slot already serving the
// client is a no-op, and writes carry resourceVersion preconditions or are
// server-side applies.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/responder/action"
	"github.com/herd-k8s/herd/responder/config"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/webhook"
)

// ErrNotLeader is returned, marked transient, to deliveries that reach a
// replica that does not hold the Lease: the webhook answers 503 and
// Alertmanager retries (through the Service, which routes only to the
// ready leader).
var ErrNotLeader = errors.New("this responder replica is not the leader")

// Sweeper is an action with objects that expire (isolate, quarantine).
type Sweeper interface {
	Sweep(ctx context.Context) []action.Decision
}

// Options configure a Dispatcher.
type Options struct {
	Config  config.Config
	Actions map[config.Action]action.Action
	// IsLeader reports whether this replica may act. nil: always.
	IsLeader func() bool
	// RememberFor is how long a decided alert is remembered (default 1h:
	// longer than Alertmanager's retries, shorter than its default
	// repeat_interval of 4h, after which the action re-checks the cluster).
	RememberFor time.Duration
	// MaxRemembered bounds that memory (default 10,000 alerts); the oldest
	// are forgotten first.
	MaxRemembered int
	// MaxDecisions bounds /debug/actions (default 200).
	MaxDecisions int
	// ActionTimeout bounds one action, under Alertmanager's 10 s (default 8s).
	ActionTimeout time.Duration
	Registerer    prometheus.Registerer
	Logger        *slog.Logger
	Now           func() time.Time
}

// Dispatcher implements webhook.Dispatcher.
type Dispatcher struct {
	opts    Options
	metrics *metrics

	mu         sync.Mutex
	remembered map[string]*entry
	order      []string // keys, oldest first
	decisions  []action.Decision
}

type entry struct {
	at       time.Time
	done     chan struct{}
	decision action.Decision
}

// New returns a Dispatcher.
func New(opts Options) (*Dispatcher, error) {
	if opts.RememberFor <= 0 {
		opts.RememberFor = time.Hour
	}
	if opts.MaxRemembered <= 0 {
		opts.MaxRemembered = 10000
	}
	if opts.MaxDecisions <= 0 {
		opts.MaxDecisions = 200
	}
	if opts.ActionTimeout <= 0 {
		opts.ActionTimeout = 8 * time.Second
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
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Dispatcher{opts: opts, metrics: m, remembered: map[string]*entry{}}, nil
}

// FindingsGauge is herd_responder_findings, for the triage action.
func (d *Dispatcher) FindingsGauge() *prometheus.GaugeVec { return d.metrics.findings }

// key identifies one delivery's alert: the same alert firing again after a
// resolve has a new startsAt.
func key(a webhook.Alert) string {
	fp := a.Fingerprint
	if fp == "" { // not from Alertmanager: the labels identify it
		keys := make([]string, 0, len(a.Labels))
		for k := range a.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%q,", k, a.Labels[k])
		}
		fp = b.String()
	}
	return fmt.Sprintf("%s|%s|%d", fp, a.Status, a.StartsAt.UnixNano())
}

// Dispatch implements webhook.Dispatcher.
func (d *Dispatcher) Dispatch(ctx context.Context, a webhook.Alert) error {
	route, ok := d.opts.Config.Route(a.Labels)
	if !ok || route.Action == config.ActionNone {
		d.opts.Logger.Debug("alert has no action", "alertname", a.Name(), "fingerprint", a.Fingerprint, "status", a.Status)
		return nil
	}
	act, ok := d.opts.Actions[route.Action]
	if !ok {
		return fmt.Errorf("route to %s, which this responder does not run", route.Action)
	}
	if !d.opts.IsLeader() {
		return webhook.Transient(ErrNotLeader)
	}

	k := key(a)
	d.mu.Lock()
	now := d.opts.Now()
	if e, ok := d.remembered[k]; ok && now.Sub(e.at) < d.opts.RememberFor {
		d.mu.Unlock()
		d.metrics.duplicates.WithLabelValues(string(route.Action)).Inc()
		select {
		case <-e.done:
		case <-ctx.Done():
			return webhook.Transient(fmt.Errorf("waiting for the first delivery's decision: %w", ctx.Err()))
		}
		return e.decision.Err
	}
	e := &entry{at: now, done: make(chan struct{})}
	d.remember(k, e)
	d.mu.Unlock()

	dec := d.run(ctx, act, a)
	e.decision = dec
	close(e.done)
	// A failure is not remembered: the next delivery (Alertmanager's retry
	// of a 503, or its next group_interval or repeat) acts again.
	if dec.Result == action.Failed {
		d.mu.Lock()
		if d.remembered[k] == e {
			// Let the retry act. Expire the entry rather than delete it:
			// its key stays in d.order once, where a deleted key would be
			// appended again by every retry, growing d.order past
			// MaxRemembered for as long as the failure lasts.
			e.at = time.Time{}
		}
		d.mu.Unlock()
	}
	return dec.Err
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

// run acts and records. The action's context outlives the request's (a
// sender that hangs up must not leave a half-made change) but is bounded.
func (d *Dispatcher) run(ctx context.Context, act action.Action, a webhook.Alert) action.Decision {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.ActionTimeout)
	defer cancel()
	start := time.Now()
	var dec action.Decision
	if a.Firing() {
		dec = act.Fire(actx, a)
	} else {
		dec = act.Resolve(actx, a)
	}
	dec.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	d.metrics.duration.WithLabelValues(string(act.Name())).Observe(time.Since(start).Seconds())
	d.Record(dec)
	return dec
}

// Remediate runs act for a synthesized alert (triage's findings) through
// the same guards and records, without the delivery dedup.
func (d *Dispatcher) Remediate(ctx context.Context, act config.Action, a webhook.Alert) action.Decision {
	x, ok := d.opts.Actions[act]
	if !ok {
		dec := action.Decision{Time: d.opts.Now(), Action: act, Alert: a.Name(), Status: a.Status, Fingerprint: a.Fingerprint,
			Result: action.Refused, Guard: guard.LabelValidation, Reason: fmt.Sprintf("this responder does not run %s", act)}
		d.Record(dec)
		return dec
	}
	return d.run(ctx, x, a)
}

// Record counts, logs and keeps a decision.
func (d *Dispatcher) Record(dec action.Decision) {
	d.metrics.actions.WithLabelValues(string(dec.Action), string(dec.Result)).Inc()
	if dec.Result == action.Refused {
		d.metrics.refusals.WithLabelValues(string(dec.Action), string(dec.Guard)).Inc()
	}
	level := slog.LevelInfo
	switch dec.Result {
	case action.Refused:
		level = slog.LevelWarn
	case action.Failed:
		level = slog.LevelError
	}
	attrs := []any{"action", dec.Action, "result", dec.Result, "alertname", dec.Alert, "fingerprint", dec.Fingerprint,
		"status", dec.Status, "target", dec.Target, "dry_run", dec.DryRun, "reason", dec.Reason, "duration_ms", dec.DurationMS}
	if dec.Guard != "" {
		attrs = append(attrs, "guard", dec.Guard)
	}
	if dec.Err != nil {
		attrs = append(attrs, "err", dec.Err)
	}
	d.opts.Logger.Log(context.Background(), level, "decision", attrs...)
	d.mu.Lock()
	d.decisions = append(d.decisions, dec)
	if len(d.decisions) > d.opts.MaxDecisions {
		d.decisions = append(d.decisions[:0], d.decisions[len(d.decisions)-d.opts.MaxDecisions:]...)
	}
	d.mu.Unlock()
}

// Decisions returns the last decisions, newest last.
func (d *Dispatcher) Decisions() []action.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]action.Decision(nil), d.decisions...)
}

// SweepLoop runs the actions' sweeps every interval while this replica
// leads, until ctx ends.
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

// Sweep runs every action's sweep once, if this replica leads.
func (d *Dispatcher) Sweep(ctx context.Context) {
	if !d.opts.IsLeader() {
		return
	}
	names := make([]string, 0, len(d.opts.Actions))
	for n := range d.opts.Actions {
		names = append(names, string(n))
	}
	sort.Strings(names)
	for _, n := range names {
		s, ok := d.opts.Actions[config.Action(n)].(Sweeper)
		if !ok {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, d.opts.ActionTimeout)
		for _, dec := range s.Sweep(sctx) {
			d.Record(dec)
		}
		cancel()
	}
}
