package webhook

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/responder/alert"
)

type metrics struct {
	received       *prometheus.CounterVec
	requests       *prometheus.CounterVec
	truncated      prometheus.Counter
	dispatchErrors *prometheus.CounterVec
}

// answered are the codes the handler gives; their series exist from the
// start so that rate() and absent-series alerts work before the first one.
var answered = []int{200, 400, 401, 405, 413, 503}

// newMetrics creates the handler's metrics, with every series of the
// routed alertnames at 0.
func newMetrics(reg prometheus.Registerer, alertnames []string) (*metrics, error) {
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_responder_alerts_received_total",
			Help: "Alerts received in well-formed Alertmanager notifications, by alertname (\"other\" for alertnames without a route) and status.",
		}, []string{"alertname", "status"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_responder_webhook_requests_total",
			Help: "Requests to the Alertmanager webhook, by HTTP status code answered.",
		}, []string{"code"}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_responder_truncated_alerts_total",
			Help: "Alerts Alertmanager left out of notifications (truncatedAlerts, webhook max_alerts); never read as resolved.",
		}),
		dispatchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_responder_dispatch_errors_total",
			Help: "Alerts whose dispatch failed, by alertname and kind: transient (answered 503, Alertmanager retries) or permanent (answered 200).",
		}, []string{"alertname", "kind"}),
	}
	for _, c := range answered {
		m.requests.WithLabelValues(strconv.Itoa(c))
	}
	for _, name := range alertnames {
		for _, st := range []string{alert.StatusFiring, alert.StatusResolved} {
			m.received.WithLabelValues(name, st)
		}
		for _, kind := range []string{"transient", "permanent"} {
			m.dispatchErrors.WithLabelValues(name, kind)
		}
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.received, m.requests, m.truncated, m.dispatchErrors} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}
