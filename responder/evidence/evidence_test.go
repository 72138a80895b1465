package evidence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// parseSelector parses metric+sel as PromQL and returns the selector's
// equality matchers (without __name__). It fails the test unless the whole
// expression is one vector selector of metric with equality matchers only.
func parseSelector(t testing.TB, metric, sel string) map[string]string {
	t.Helper()
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(metric + sel)
	if err != nil {
		t.Fatalf("%s%s does not parse: %v", metric, sel, err)
	}
	vs, ok := expr.(*parser.VectorSelector)
	if !ok {
		t.Fatalf("%s%s parses as %T (%s), not one vector selector", metric, sel, expr, expr)
	}
	got := map[string]string{}
	for _, m := range vs.LabelMatchers {
		if m.Type != labels.MatchEqual {
			t.Fatalf("%s%s: matcher %s is not an equality", metric, sel, m)
		}
		if m.Name == labels.MetricName {
			if m.Value != metric {
				t.Fatalf("%s%s: metric name %q", metric, sel, m.Value)
			}
			continue
		}
		if _, dup := got[m.Name]; dup {
			t.Fatalf("%s%s: label %s matched twice", metric, sel, m.Name)
		}
		got[m.Name] = m.Value
	}
	return got
}

func TestSelector(t *testing.T) {
	cases := []struct {
		name string
		in   map[string]string
		want string
	}{
		{"empty", nil, "{}"},
		{"empty values are skipped", map[string]string{"node": "", "cluster": ""}, "{}"},
		{"sorted keys", map[string]string{"node": "n1", "cluster": "prod", "a": "x"}, `{a="x", cluster="prod", node="n1"}`},
		{"one skipped", map[string]string{"node": "ip-10-0-3-17.eu-west-1.compute.internal", "cluster": ""}, `{node="ip-10-0-3-17.eu-west-1.compute.internal"}`},
		{"quote", map[string]string{"node": `a"b`}, `{node="a\"b"}`},
		{"backslash", map[string]string{"node": `a\b`}, `{node="a\\b"}`},
		{"newline", map[string]string{"node": "a\nb"}, `{node="a\nb"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Selector(tc.in); got != tc.want {
				t.Errorf("Selector(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

// Hostile label values stay inside one quoted string: the query is one
// selector whose matchers hold the values exactly.
func TestSelectorInjection(t *testing.T) {
	hostile := []string{
		`"} or vector(1) #`,
		`"} or vector(1)`,
		`n1"} or on() vector(1) or {node="x`,
		`n1", node=~".*`,
		`n1", __name__="up`,
		`\"} or vector(1) #`,
		`\`,
		`\\`,
		`a\`,
		`"`,
		`'`,
		"`",
		"`} or vector(1) #",
		`'} or vector(1) #`,
		"n1\"}\nor vector(1)\n#",
		"line1\nline2\r\n",
		"tab\there",
		"nul\x00byte",
		"bell\a\b\f\v",
		"\x7f del",
		"ümlaut ✓ 日本",
		"\u2028 line separator \u2029",
		"\ufeff bom",
		"\u00ad soft hyphen",
		"\U0001F600 emoji",
		"\ufffd replacement character",
		"invalid utf-8 \xff\xfe",
		"truncated rune \xe2\x82",
		"lone surrogate \xed\xa0\x80",
		`{node="x"}`,
		`# comment`,
		`$1 ${1}`,
		`%s %q %v`,
		strings.Repeat(`"\`, 500),
	}
	for _, v := range hostile {
		t.Run(fmt.Sprintf("%q", v), func(t *testing.T) {
			in := map[string]string{"node": v, "cluster": v, "identity": "system:node:" + v}
			sel := Selector(in)
			if got := parseSelector(t, "herd:stale_kubelet:max", sel); !reflect.DeepEqual(got, in) {
				t.Errorf("%s parses to %q, want %q", sel, got, in)
			}
			// The queries built on Selector parse too, as aggregations (one
			// within another at most) of one selector.
			for _, q := range []string{StaleKubelet(v, v), GhostIdentity(v, v), RelistRate("5m", v, v, v, v),
				RelistIdentities(v, v, v, v), MetricsServerTokenMode(v, v, v)} {
				expr, err := parser.NewParser(parser.Options{}).ParseExpr(q)
				if err != nil {
					t.Fatalf("%s does not parse: %v", q, err)
				}
				agg, ok := expr.(*parser.AggregateExpr)
				if !ok {
					t.Fatalf("%s parses as %T, want an aggregation", q, expr)
				}
				inner := agg.Expr
				if a2, ok := inner.(*parser.AggregateExpr); ok {
					inner = a2.Expr
				}
				vs, ok := inner.(*parser.VectorSelector)
				if !ok {
					t.Fatalf("%s: aggregates %T, want one selector", q, agg.Expr)
				}
				for _, m := range vs.LabelMatchers {
					switch m.Name {
					case labels.MetricName, "mode":
					case "shape": // herd's own matcher, whatever the alert says
						if m.Type != labels.MatchNotEqual || m.Value != "object" {
							t.Errorf("%s: %s, want shape!=\"object\"", q, m)
						}
					default:
						if m.Value != v {
							t.Errorf("%s: %s, want the value %q", q, m, v)
						}
					}
				}
			}
			// The APF measurement's: one selector, aggregated, times the window.
			for _, q := range []string{MeasuredIdentities("5m", v, v, v, v), IsolatedLists("5m", v, v, v, v)} {
				expr, err := parser.NewParser(parser.Options{}).ParseExpr(q)
				if err != nil {
					t.Fatalf("%s does not parse: %v", q, err)
				}
				b, ok := expr.(*parser.BinaryExpr)
				if !ok {
					t.Fatalf("%s parses as %T, want aggregation * window", q, expr)
				}
				agg, ok := b.LHS.(*parser.AggregateExpr)
				if !ok {
					t.Fatalf("%s: %T, want an aggregation", q, b.LHS)
				}
				vs, ok := agg.Expr.(*parser.VectorSelector)
				if !ok {
					t.Fatalf("%s: aggregates %T, want one selector", q, agg.Expr)
				}
				for _, m := range vs.LabelMatchers {
					if m.Name != labels.MetricName && m.Name != "action" && m.Value != v {
						t.Errorf("%s: %s, want the value %q", q, m, v)
					}
				}
			}
		})
	}
}

func TestQueries(t *testing.T) {
	cases := []struct{ got, want string }{
		{StaleKubelet("n1", ""), `max(herd:stale_kubelet:max{node="n1"})`},
		{StaleKubelet("n1", "prod"), `max(herd:stale_kubelet:max{cluster="prod", node="n1"})`},
		{GhostIdentity("system:node:n1", ""), `max(herd:ghost_instance:max{identity="system:node:n1"})`},
		{RelistRate("5m", "cni", "cilium", "pods", ""), `sum(herd:relists_by_resource:rate5m{client="cilium", resource="pods", role="cni"})`},
		{RelistIdentities("cni", "cilium", "pods", "c"), `max by (identity) (sum by (identity, node) (herd_instance_relists{client="cilium", cluster="c", resource="pods", role="cni", shape!="object"}))`},
		{RelistIdentities("kubelet", "kubelet", "configmaps", ""), `max by (identity) (sum by (identity, node) (herd_instance_relists{client="kubelet", resource="configmaps", role="kubelet", shape!="object"}))`},
		{MeasuredIdentities("5m", "cni", "cilium", "pods", "c"), `sum by (identity) (herd:apf_lists:rate5m{action="measure", client="cilium", cluster="c", resource="pods", role="cni"}) * 300`},
		{IsolatedLists("90s", "kubelet", "kubelet", "pods", ""), `sum by (flow_schema) (herd:apf_lists:rate90s{action="isolate", client="kubelet", resource="pods", role="kubelet"}) * 90`},
		{MetricsServerTokenMode("", "", ""), `max by (namespace, deployment) (herd:metrics_server_kubelet_auth:max{mode="token"})`},
		{MetricsServerTokenMode("kube-system", "metrics-server", ""), `max by (namespace, deployment) (herd:metrics_server_kubelet_auth:max{deployment="metrics-server", mode="token", namespace="kube-system"})`},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("query\n%s\nwant\n%s", tc.got, tc.want)
		}
		if _, err := parser.NewParser(parser.Options{}).ParseExpr(tc.got); err != nil {
			t.Errorf("%s: %v", tc.got, err)
		}
	}
}

// fakeQuerier answers queries from a map.
type fakeQuerier struct {
	answers map[string][]Sample
	err     error
}

func (f fakeQuerier) Query(_ context.Context, q string) ([]Sample, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.answers[q], nil
}

func TestMax(t *testing.T) {
	const q = "max(x)"
	s := func(vs ...float64) []Sample {
		out := make([]Sample, len(vs))
		for i, v := range vs {
			out[i] = Sample{Labels: map[string]string{"i": fmt.Sprint(i)}, Value: v}
		}
		return out
	}
	cases := []struct {
		name      string
		samples   []Sample
		threshold float64
		want      Check
	}{
		{"no series: not confirmed", nil, 0, Check{Query: q}},
		{"no series, negative threshold: still not confirmed", nil, -1, Check{Query: q}},
		{"zero is not above zero", s(0), 0, Check{Query: q, Series: 1}},
		{"above zero", s(1), 0, Check{Query: q, Value: 1, Series: 1, Confirmed: true}},
		{"the largest counts, whatever the order", s(0.1, 0.7, 0.3), 0.5, Check{Query: q, Value: 0.7, Series: 3, Confirmed: true}},
		{"all negative: the largest, not 0", s(-3, -1, -2), -1.5, Check{Query: q, Value: -1, Series: 3, Confirmed: true}},
		{"equal to the threshold is not above", s(0.5), 0.5, Check{Query: q, Value: 0.5, Series: 1}},
		{"+Inf is above", s(1, math.Inf(1)), 0, Check{Query: q, Value: math.Inf(1), Series: 2, Confirmed: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Max(context.Background(), fakeQuerier{answers: map[string][]Sample{q: tc.samples}}, q, tc.threshold)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Max = %+v, want %+v", got, tc.want)
			}
		})
	}
	t.Run("NaN confirms nothing", func(t *testing.T) {
		got, err := Max(context.Background(), fakeQuerier{answers: map[string][]Sample{q: s(math.NaN())}}, q, 0)
		if err != nil || got.Confirmed || got.Series != 1 || !math.IsNaN(got.Value) {
			t.Errorf("Max = %+v, %v", got, err)
		}
	})
	t.Run("error", func(t *testing.T) {
		boom := fmt.Errorf("%w: boom", ErrUnavailable)
		got, err := Max(context.Background(), fakeQuerier{err: boom}, q, 0)
		if !errors.Is(err, ErrUnavailable) || got != (Check{Query: q}) {
			t.Errorf("Max = %+v, %v", got, err)
		}
	})
}

// promServer emulates Prometheus's /api/v1/query.
type promServer struct {
	mu      sync.Mutex
	queries []string
	status  int
	body    string
	delay   time.Duration
}

func (p *promServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	b, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(b))
	q := form.Get("query")
	if q == "" {
		q = r.URL.Query().Get("query")
	}
	p.mu.Lock()
	p.queries = append(p.queries, q)
	p.mu.Unlock()
	if p.delay > 0 {
		select {
		case <-time.After(p.delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(p.status)
	io.WriteString(w, p.body)
}

func TestPrometheus(t *testing.T) {
	const q = `max(herd:stale_kubelet:max{node="n1"})`
	cases := []struct {
		name        string
		status      int
		body        string
		delay       time.Duration
		want        []Sample
		unavailable bool   // the error wraps ErrUnavailable
		errHas      string // the error contains this
	}{
		{
			name:   "vector, sorted by value, largest first",
			status: 200,
			body: `{"status":"success","data":{"resultType":"vector","result":[
				{"metric":{"node":"n1","cluster":"a"},"value":[1700000000,"0.5"]},
				{"metric":{"node":"n2"},"value":[1700000000,"3"]},
				{"metric":{},"value":[1700000000,"1"]}]}}`,
			want: []Sample{
				{Labels: map[string]string{"node": "n2"}, Value: 3},
				{Labels: map[string]string{}, Value: 1},
				{Labels: map[string]string{"node": "n1", "cluster": "a"}, Value: 0.5},
			},
		},
		{
			name:   "empty vector",
			status: 200,
			body:   `{"status":"success","data":{"resultType":"vector","result":[]}}`,
			want:   []Sample{},
		},
		{
			name:   "scalar",
			status: 200,
			body:   `{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}`,
			want:   []Sample{{Labels: map[string]string{}, Value: 42}},
		},
		{
			name:        "error answer",
			status:      422,
			body:        `{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory"}`,
			unavailable: true, errHas: "too many samples",
		},
		{
			// A query Prometheus cannot parse is herd's bug, not an
			// outage: not ErrUnavailable, so the webhook does not ask
			// Alertmanager to retry forever.
			name:   "bad query",
			status: 400,
			body:   `{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error"}`,
			errHas: "rejected by Prometheus",
		},
		{
			name:        "server error",
			status:      503,
			body:        `{"status":"error","errorType":"unavailable","error":"not ready"}`,
			unavailable: true, errHas: "server error: 503",
		},
		{
			name:        "not JSON",
			status:      502,
			body:        `<html>bad gateway</html>`,
			unavailable: true,
		},
		{
			name:        "timeout",
			status:      200,
			delay:       5 * time.Second,
			body:        `{"status":"success","data":{"resultType":"vector","result":[]}}`,
			unavailable: true, errHas: "deadline exceeded",
		},
		{
			name:   "matrix answer",
			status: 200,
			body:   `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"node":"n1"},"values":[[1700000000,"1"]]}]}}`,
			errHas: "answer of type matrix, want a vector",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps := &promServer{status: tc.status, body: tc.body, delay: tc.delay}
			srv := httptest.NewServer(ps)
			defer srv.Close()
			p, err := NewPrometheus(srv.URL, 200*time.Millisecond, nil)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			got, err := p.Query(context.Background(), q)
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("query took %s; the timeout is 200ms", took)
			}
			ps.mu.Lock()
			if len(ps.queries) == 0 || ps.queries[0] != q {
				t.Errorf("server saw queries %q, want %q", ps.queries, q)
			}
			ps.mu.Unlock()
			if tc.errHas != "" || tc.unavailable {
				if err == nil {
					t.Fatalf("no error; samples %v", got)
				}
				if errors.Is(err, ErrUnavailable) != tc.unavailable {
					t.Errorf("errors.Is(%v, ErrUnavailable) = %v, want %v", err, !tc.unavailable, tc.unavailable)
				}
				if !strings.Contains(err.Error(), tc.errHas) || !strings.Contains(err.Error(), q) {
					t.Errorf("error %q does not name %q and the query", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("samples %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPrometheusUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()
	p, err := NewPrometheus(addr, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Query(context.Background(), "up"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("error %v does not wrap ErrUnavailable", err)
	}
}

func TestPrometheusCallerContext(t *testing.T) {
	ps := &promServer{status: 200, delay: 5 * time.Second, body: `{"status":"success","data":{"resultType":"vector","result":[]}}`}
	srv := httptest.NewServer(ps)
	defer srv.Close()
	p, err := NewPrometheus(srv.URL, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := p.Query(ctx, "up"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("error %v does not wrap ErrUnavailable", err)
	}
}

func TestNewPrometheusBadURL(t *testing.T) {
	if _, err := NewPrometheus("://nope", time.Second, nil); err == nil || !strings.Contains(err.Error(), "://nope") {
		t.Errorf("error %v", err)
	}
}
