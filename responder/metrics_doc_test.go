package responder_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/responder"
	"github.com/herd-k8s/herd/responder/leader"
	"github.com/herd-k8s/herd/responder/policy"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/metricsdoc"
)

// TestEveryMetricIsDocumented fails when the responder exports a metric
// that docs/metrics.md does not describe, and runs promlint over it.
func TestEveryMetricIsDocumented(t *testing.T) {
	cfg, err := policy.FromDefault(policy.WithPrometheusURL("http://prometheus.invalid:9090"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := responder.New(responder.Options{
		Config:         cfg,
		Kube:           &rest.Config{Host: "https://127.0.0.1:1"}, // never contacted: Run is not called
		Web:            herdtest.WebFlags("", "127.0.0.1:0"),
		InsecureNoAuth: true,
		Leader:         leader.Options{Namespace: "herd", Name: "herd-responder", Identity: "test"},
	})
	if err != nil {
		t.Fatal(err)
	}
	families, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := metricsdoc.Read("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, f := range families {
		name := f.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		seen++
		if _, ok := doc[name]; !ok {
			t.Errorf("metric %s is exported by the responder but not documented in docs/metrics.md", name)
		}
	}
	if seen < 10 {
		t.Errorf("only %d herd metrics gathered; every responder metric should exist from the start", seen)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
