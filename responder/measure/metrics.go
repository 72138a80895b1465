package measure

import (
	"errors"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"

	"github.com/herd-k8s/herd/internal/apfmatch"
	"github.com/herd-k8s/herd/internal/nodeclient"
	"github.com/herd-k8s/herd/responder/action"
)

// metrics are the controller's own and the info metric the mixin joins
// the apiserver's APF metrics with.
type metrics struct {
	schemas *prometheus.GaugeVec
	writes  *prometheus.CounterVec
}

// The states of herd_responder_measurement_flowschemas.
const (
	stateMeasuring = "measuring"
	stateSkipped   = "skipped"
)

func newMetrics(reg prometheus.Registerer, apf *action.APFCache) (*metrics, error) {
	m := &metrics{
		schemas: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herd_responder_measurement_flowschemas",
			Help: "Measured (identity, resource) pairs of the latest plan: measuring (a FlowSchema is placed) or skipped (see /debug/measurement for why).",
		}, []string{"state"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_responder_measurement_writes_total",
			Help: "Writes of measurement FlowSchemas by operation (apply, delete) and result (ok, failed).",
		}, []string{"operation", "result"}),
	}
	for _, s := range []string{stateMeasuring, stateSkipped} {
		m.schemas.WithLabelValues(s)
	}
	for _, op := range []string{"apply", "delete"} {
		for _, r := range []string{"ok", "failed"} {
			m.writes.WithLabelValues(op, r)
		}
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.schemas, m.writes, infoCollector{apf: apf}} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}

func (m *metrics) record(placements []Placement) {
	n := map[string]int{}
	for _, p := range placements {
		if p.Skip == "" {
			n[stateMeasuring]++
		} else {
			n[stateSkipped]++
		}
	}
	for _, s := range []string{stateMeasuring, stateSkipped} {
		m.schemas.WithLabelValues(s).Set(float64(n[s]))
	}
}

func (m *metrics) write(op string, err error) {
	r := "ok"
	if err != nil {
		r = "failed"
	}
	m.writes.WithLabelValues(op, r).Inc()
}

var infoDesc = prometheus.NewDesc("herd_measurement_flowschema_info",
	"1 for each of herd's FlowSchemas that serves one node-side client's LISTs of one resource: the measurement schemas (action measure) "+
		"and isolate's and protect's, which take LISTs from them. Joins apiserver_flowcontrol_*{flow_schema} to role, client, resource and identity.",
	[]string{"flow_schema", "role", "client", "resource", "identity", "action"}, nil)

// infoCollector builds herd_measurement_flowschema_info at scrape time
// from the FlowSchemas in the cache, as kube-state-metrics builds its info
// metrics from objects: every replica exports the same series, and no
// series outlives its object.
type infoCollector struct{ apf *action.APFCache }

func (infoCollector) Describe(ch chan<- *prometheus.Desc) { ch <- infoDesc }

func (c infoCollector) Collect(ch chan<- prometheus.Metric) {
	if c.apf == nil || !c.apf.Synced() {
		return
	}
	all, err := c.apf.FlowSchemas()
	if err != nil {
		return
	}
	for _, fs := range all {
		if labels, ok := infoLabels(fs); ok {
			ch <- prometheus.MustNewConstMetric(infoDesc, prometheus.GaugeValue, 1, labels...)
		}
	}
}

// countedActions are the herd actions whose schemas serve one client's
// LISTs of one resource (isolate's rule is `list` of the resource by the
// client's storming identities; protect's its risky LISTs).
var countedActions = map[string]bool{ActionMeasure: true, "isolate": true, "protect": true}

// infoLabels are fs's info labels, when fs is herd's and names a client
// and resource. The values come from herd's own annotations, validated as
// herd's label values are, so a hand-edited annotation cannot add an
// unbounded or malformed label value.
func infoLabels(fs *flowcontrolv1.FlowSchema) ([]string, bool) {
	a := fs.Annotations
	act := a[action.AnnotationAction]
	if !apfmatch.HerdGuard(fs) || !countedActions[act] {
		return nil, false
	}
	k := keyOf(fs)
	role, err := nodeclient.ParseRole(k.Role)
	if err != nil || role == nodeclient.RoleOther || !nodeclient.ValidClientName(k.Client) || !nodeclient.ValidResource(k.Resource) {
		return nil, false
	}
	if act != ActionMeasure {
		k.Identity = "" // several identities, or none named
	} else if !validIdentity(k.Identity) {
		return nil, false
	}
	return []string{fs.Name, k.Role, k.Client, k.Resource, k.Identity, act}, true
}

// validIdentity: a username or group:NAME of sane length and characters.
func validIdentity(s string) bool {
	if s == "" || len(s) > 320 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
