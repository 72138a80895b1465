// Package evidence asks Prometheus whether what an alert claims is still
// true. Alerts are triggers, not evidence (SPEC §4.3): by the time one is
// delivered it may be minutes old, repeated, or forged by anyone who can
// reach the webhook. Every action re-reads the condition it acts on from
// herd's recording rules before it changes anything, and names the query it
// read in its decision record.
//
// The queries read the mixin's recording rules (herd:*), whose labels are
// normalised (node, namespace) whatever the scrape's honor_labels setting.
// Label values are validated by the caller and quoted here, so an alert
// cannot inject PromQL.
package evidence

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// ErrUnavailable wraps failures to ask Prometheus: the evidence is unknown,
// not negative, so the caller must neither act nor conclude the alert false.
var ErrUnavailable = errors.New("prometheus unavailable")

// Sample is one series of a query's answer.
type Sample struct {
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
}

// Querier runs instant queries.
type Querier interface {
	Query(ctx context.Context, query string) ([]Sample, error)
}

// Prometheus queries a Prometheus server's HTTP API.
type Prometheus struct {
	api     promv1.API
	timeout time.Duration
}

// NewPrometheus returns a Querier for the server at url. Each query is
// bounded by timeout.
func NewPrometheus(url string, timeout time.Duration, rt http.RoundTripper) (*Prometheus, error) {
	c, err := api.NewClient(api.Config{Address: url, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("prometheus client %s: %w", url, err)
	}
	return &Prometheus{api: promv1.NewAPI(c), timeout: timeout}, nil
}

// Query runs an instant query now. Only vector and scalar answers are
// accepted: every evidence query herd writes returns one of those.
func (p *Prometheus) Query(ctx context.Context, query string) ([]Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	v, _, _, err := p.api.Query(ctx, query, time.Now())
	if err != nil {
		// Prometheus rejecting the query itself (bad_data) is herd's bug
		// or a missing rule, not an outage: retrying will not help.
		var apiErr *promv1.Error
		if errors.As(err, &apiErr) && apiErr.Type == promv1.ErrBadData {
			return nil, fmt.Errorf("query %s rejected by Prometheus: %v", query, err)
		}
		return nil, fmt.Errorf("%w: query %s: %v", ErrUnavailable, query, err)
	}
	switch v := v.(type) {
	case model.Vector:
		out := make([]Sample, 0, len(v))
		for _, s := range v {
			ls := make(map[string]string, len(s.Metric))
			for k, val := range s.Metric {
				ls[string(k)] = string(val)
			}
			out = append(out, Sample{Labels: ls, Value: float64(s.Value)})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Value > out[j].Value })
		return out, nil
	case *model.Scalar:
		return []Sample{{Labels: map[string]string{}, Value: float64(v.Value)}}, nil
	}
	return nil, fmt.Errorf("query %s: answer of type %s, want a vector", query, v.Type())
}

// Selector builds a PromQL label selector from equality matchers, quoting
// every value. Empty values are skipped (a label the alert did not carry
// is not a constraint). Keys are sorted so queries are stable in records.
func Selector(m map[string]string) string { return selector(m) }

// selector is Selector followed by fixed matchers: herd's own constants,
// never a value from an alert.
func selector(m map[string]string, fixed ...string) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys), len(keys)+len(fixed))
	for i, k := range keys {
		parts[i] = k + "=" + quote(m[k])
	}
	parts = append(parts, fixed...)
	return "{" + strings.Join(parts, ", ") + "}"
}

// quote is strconv.Quote with U+FFFD escaped: strconv.Quote writes that
// printable rune as is, and PromQL's lexer rejects it in a string as an
// "invalid UTF-8 rune". Invalid UTF-8 bytes are escaped by strconv.Quote
// (\xff), so the rune in its output is always a real U+FFFD.
func quote(s string) string {
	return strings.ReplaceAll(strconv.Quote(s), "\uFFFD", `\ufffd`)
}

// Check is one piece of evidence: the query, what it returned and whether
// that confirms the alert.
type Check struct {
	Query     string  `json:"query"`
	Value     float64 `json:"value"`
	Series    int     `json:"series"`
	Confirmed bool    `json:"confirmed"`
}

// Max runs query and confirms when its largest value is above threshold.
// No series means not confirmed (the condition is gone, or never was).
func Max(ctx context.Context, q Querier, query string, threshold float64) (Check, error) {
	samples, err := q.Query(ctx, query)
	if err != nil {
		return Check{Query: query}, err
	}
	c := Check{Query: query, Series: len(samples)}
	for i, s := range samples {
		if i == 0 || s.Value > c.Value {
			c.Value = s.Value
		}
	}
	c.Confirmed = len(samples) > 0 && c.Value > threshold
	return c, nil
}

// Recently is query at every moment of the last window (a subquery at
// Prometheus' evaluation interval), each series' largest value: what query
// answered before its series went stale. An empty answer now is not enough
// to conclude that a condition ended: Prometheus marks every series of a
// target stale when one scrape of it fails (prometheus/scrape/scrape.go: "A
// failed scrape is the same as an empty scrape, we still call sl.append to
// trigger stale markers"), so herd's gauges, and the recording rules over
// them, vanish until the next scrape; a rate over a range does not.
func Recently(query, window string) string {
	return "max_over_time((" + query + ")[" + window + ":])"
}

// Vanished asks, for a query that answers nothing now, whether it answered
// above threshold at some moment of the last window (Recently): if so, the
// answer now is unknown — the condition may just have ended, or Prometheus
// missed a scrape of herd — and the error wraps ErrUnavailable, so that the
// caller neither acts nor refuses, and Alertmanager asks again. An empty
// window checks nothing.
func Vanished(ctx context.Context, q Querier, query, window string, threshold float64) error {
	if window == "" {
		return nil
	}
	recent := Recently(query, window)
	c, err := Max(ctx, q, recent, threshold)
	if err != nil {
		return err
	}
	if c.Confirmed {
		return fmt.Errorf("%w: %s returned nothing now, but %s = %g: the condition may just have ended, or Prometheus missed a scrape of herd's exporter (a failed scrape makes every series of its target stale)",
			ErrUnavailable, query, recent, c.Value)
	}
	return nil
}

// The evidence queries of the actions. cluster is the alert's cluster label
// ("" when Prometheus sees one cluster).

// StaleKubelet is herd's stale-kubelet gauge for one node.
func StaleKubelet(node, cluster string) string {
	return "max(herd:stale_kubelet:max" + Selector(map[string]string{"node": node, "cluster": cluster}) + ")"
}

// GhostIdentity is herd's ghost gauge for one identity.
func GhostIdentity(identity, cluster string) string {
	return "max(herd:ghost_instance:max" + Selector(map[string]string{"identity": identity, "cluster": cluster}) + ")"
}

// RelistRate is a client's cluster-wide relist rate of one resource, from
// the mixin's recording rule over window (its _config.rateWindow).
func RelistRate(window, role, client, resource, cluster string) string {
	return "sum(herd:relists_by_resource:rate" + window + Selector(map[string]string{"role": role, "client": client, "resource": resource, "cluster": cluster}) + ")"
}

// RelistIdentities are the identities of a client's top relisting
// instances of one resource (herd_instance_relists keeps the top K), each
// with the relists in the window of its busiest instance: an identity's own
// evidence, not its client's. An instance is (identity, node) within the
// selector; its series from several exporter replicas, and of its shapes,
// are summed first. Per-object relists (shape="object": one ConfigMap,
// Secret or its own Node, the kubelet's normal way of working and one key
// read for the apiserver, SPEC §3.3) are no storm and no evidence, as the
// mixin's storm rules leave them out of herd:relists_by_resource.
func RelistIdentities(role, client, resource, cluster string) string {
	return "max by (identity) (sum by (identity, node) (herd_instance_relists" +
		selector(map[string]string{"role": role, "client": client, "resource": resource, "cluster": cluster}, notObject) + "))"
}

// The evidence of the APF measurement mode (docs/apf-measurement.md): the
// mixin joins the apiserver's apiserver_flowcontrol_* metrics with
// herd_measurement_flowschema_info into herd:apf_lists:rate<window>, per
// FlowSchema, with the client's role, client, resource and, for a
// measurement schema, its one identity.

// MeasuredIdentities are a client's identities measured through APF, each
// with its own LISTs of one resource in the rate window: what
// RelistIdentities is to the audit feed (an identity is the subject of its
// own measurement schema: a username, or group:NAME).
func MeasuredIdentities(window, role, client, resource, cluster string) string {
	return "sum by (identity) (herd:apf_lists:rate" + window +
		Selector(map[string]string{"role": role, "client": client, "resource": resource, "cluster": cluster, "action": "measure"}) + ") * " + seconds(window)
}

// IsolatedLists are a client's LISTs of one resource in the rate window
// that herd's isolate schemas serve, by FlowSchema: while an isolation
// stands, the client's LISTs leave its measurement schemas for it.
func IsolatedLists(window, role, client, resource, cluster string) string {
	return "sum by (flow_schema) (herd:apf_lists:rate" + window +
		Selector(map[string]string{"role": role, "client": client, "resource": resource, "cluster": cluster, "action": "isolate"}) + ") * " + seconds(window)
}

// seconds is a Prometheus duration (validated by the responder's config)
// in seconds, as PromQL takes a number.
func seconds(window string) string {
	d, err := model.ParseDuration(window)
	if err != nil || d <= 0 {
		d = model.Duration(5 * time.Minute)
	}
	return strconv.FormatFloat(time.Duration(d).Seconds(), 'f', -1, 64)
}

// notObject leaves per-object relists out (see RelistIdentities).
const notObject = `shape!="object"`

// MetricsServerTokenMode lists metrics-server Deployments in token mode;
// namespace and deployment may be "" for all.
func MetricsServerTokenMode(namespace, deployment, cluster string) string {
	return "max by (namespace, deployment) (herd:metrics_server_kubelet_auth:max" +
		Selector(map[string]string{"namespace": namespace, "deployment": deployment, "cluster": cluster, "mode": "token"}) + ")"
}

// The forecast of issue 12 (rules/rules/stampede.libsonnet): what one
// synchronized relist of a client would cost the apiserver, and how many of
// its LISTs may run at once with the peak under the memory budget.

// Target selects one (role, client, resource, shape) of the forecast.
func target(role, client, resource, shape, cluster string) string {
	return Selector(map[string]string{"role": role, "client": client, "resource": resource, "shape": shape, "cluster": cluster})
}

// StampedeModel is one recording rule of the forecast for one target:
// record is the rule's name without the herd:stampede_ prefix (peak_bytes,
// growth_bytes, concurrency, safe_concurrency, list_seats). The largest
// value is the worst case: several apiservers or exporter jobs.
func StampedeModel(record, role, client, resource, shape, cluster string) string {
	return "max(herd:stampede_" + record + target(role, client, resource, shape, cluster) + ")"
}

// StampedeBudget is the apiserver memory budget the forecast compares its
// peak to; the smallest when Prometheus sees several.
func StampedeBudget(cluster string) string {
	return "min(herd:stampede_budget_bytes" + Selector(map[string]string{"cluster": cluster}) + ")"
}

// StampedeSubjects are the FlowSchema subjects of a client's live instances
// of one resource (group:system:nodes, serviceaccount:NS:NAME, user:NAME),
// each with its live instances; the exporter names only identities it
// classified by identity and the apiserver authenticated. Exporter replicas
// see parts of the fleet, so they are summed.
func StampedeSubjects(role, client, resource, cluster string) string {
	return "sum by (subject) (herd_stampede_subjects" +
		Selector(map[string]string{"role": role, "client": client, "resource": resource, "cluster": cluster}) + ")"
}

// RelistWave is how many of a client's instances relisted the resource in
// the exporter's wave window (accounting.waveWindow, 60 s): the signal of
// HerdSynchronizedRelist's fast path, which exists before any instance
// relisted often enough to show a relist rate. shape "" means every shape.
func RelistWave(role, client, resource, shape, cluster string) string {
	return "sum(herd_relist_wave_instances" + target(role, client, resource, shape, cluster) + ")"
}

// NominalSeats is every apiserver's nominal concurrency limit per priority
// level (k8s.io/apiserver@v0.36.3/pkg/util/flowcontrol/metrics/metrics.go):
// with the levels' shares it gives the server's concurrency limit, from
// which protect computes the seats of its own level.
func NominalSeats(cluster string) string {
	return "apiserver_flowcontrol_nominal_limit_seats" + Selector(map[string]string{"cluster": cluster})
}
