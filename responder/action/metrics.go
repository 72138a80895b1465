package action

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// metrics are the Runner's: every decision counted with its result, every
// refusal with its guard, and how long each took.
type metrics struct {
	actions  *prometheus.CounterVec
	refusals *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_responder_actions_total",
			Help: "Decisions by action and result: applied, dry_run, refused (by a guard), noop or failed.",
		}, []string{"action", "result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_responder_guard_refusals_total",
			Help: "Decisions a guard refused, by action and guard.",
		}, []string{"action", "guard"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herd_responder_action_duration_seconds",
			Help:    "Time from an alert's dispatch to its decision, evidence queries and API writes included.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"action"}),
	}
	// Every series exists from the start: rate() and increase() need a
	// zero before the first event, and HerdResponderGuardTripped reads
	// the refusals counter.
	for _, a := range policy.AllActions {
		if a == policy.ActionNone {
			continue
		}
		for _, r := range Results {
			m.actions.WithLabelValues(string(a), string(r))
		}
		for _, g := range guard.All {
			m.refusals.WithLabelValues(string(a), string(g))
		}
		m.duration.WithLabelValues(string(a))
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.actions, m.refusals, m.duration} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}
