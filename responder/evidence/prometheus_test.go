package evidence_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/test/promstack"
)

// relistReplicas are two exporter replicas' herd_instance_relists, as
// herd's collector writes them: kubelets' relists of configmaps in the
// window, by instance and shape. node-1 and node-2 make the kubelet's
// per-object reflector relists (shape="object") by the dozen; node-1 also
// relisted twice with a label selector, node-3 relisted whole and
// selected, node-4's series comes from a herd before shapes (no label).
var relistReplicas = []string{
	`# TYPE herd_instance_relists gauge
herd_instance_relists{classified_by="identity",client="kubelet",identity="system:node:node-1",node="node-1",resource="configmaps",role="kubelet",shape="object"} 40
herd_instance_relists{classified_by="identity",client="kubelet",identity="system:node:node-1",node="node-1",resource="configmaps",role="kubelet",shape="selected"} 2
herd_instance_relists{classified_by="identity",client="kubelet",identity="system:node:node-2",node="node-2",resource="configmaps",role="kubelet",shape="object"} 40
herd_instance_relists{classified_by="identity",client="kubelet",identity="system:node:node-3",node="node-3",resource="configmaps",role="kubelet",shape="all"} 4
herd_instance_relists{classified_by="identity",client="kubelet",identity="system:node:node-3",node="node-3",resource="configmaps",role="kubelet",shape="selected"} 3
herd_instance_relists{classified_by="identity",client="kubelet",identity="system:node:node-4",node="node-4",resource="configmaps",role="kubelet"} 5
herd_instance_relists{classified_by="identity",client="kubelet",identity="system:node:node-5",node="node-5",resource="secrets",role="kubelet",shape="all"} 9
`,
	`# TYPE herd_instance_relists gauge
herd_instance_relists{classified_by="identity",client="kubelet",identity="system:node:node-2",node="node-2",resource="configmaps",role="kubelet",shape="object"} 30
herd_instance_relists{classified_by="identity",client="kubelet",identity="system:node:node-3",node="node-3",resource="configmaps",role="kubelet",shape="all"} 1
`,
}

// TestRelistIdentitiesOnPrometheus runs isolate's subject evidence on a
// real Prometheus that scrapes two exporter replicas: an instance's series
// are summed over replicas and shapes, per-object relists left out. The
// kubelet that only ran its per-object reflectors (node-2) is no identity
// of a storm, however many it ran.
func TestRelistIdentitiesOnPrometheus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var jobs []promstack.ScrapeConfig
	for i, body := range relistReplicas {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			io.WriteString(w, body)
		}))
		t.Cleanup(srv.Close)
		jobs = append(jobs, promstack.ScrapeConfig{JobName: "herd-exporter-" + string(rune('a'+i)), Targets: []string{srv.Listener.Addr().String()}})
	}
	prom := promstack.StartPrometheus(t, promstack.PromOptions{ScrapeConfigs: jobs})
	if _, err := prom.WaitForQuery(ctx, `herd_instance_relists`, func(v model.Vector) bool { return len(v) == 9 }); err != nil {
		t.Fatalf("Prometheus did not scrape both replicas: %v", err)
	}
	q, err := evidence.NewPrometheus(prom.URL, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	identities := func(query string) map[string]float64 {
		t.Helper()
		samples, err := q.Query(ctx, query)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, s := range samples {
			if len(s.Labels) != 1 {
				t.Errorf("%s: a sample labelled %v, want identity alone", query, s.Labels)
			}
			out[s.Labels["identity"]] = s.Value
		}
		return out
	}

	query := evidence.RelistIdentities("kubelet", "kubelet", "configmaps", "")
	got := identities(query)
	want := map[string]float64{"system:node:node-1": 2, "system:node:node-3": 8, "system:node:node-4": 5}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %v, want %v (replicas and shapes summed, per-object relists left out)", query, got, want)
	}
	// The same query without the shape matcher (what it was before
	// shapes) names node-2 on its per-object relists: the fixture tells
	// the two apart.
	old := `max by (identity) (sum by (identity, node) (herd_instance_relists{client="kubelet", resource="configmaps", role="kubelet"}))`
	if got := identities(old)["system:node:node-2"]; got != 70 {
		t.Errorf("%s names node-2 with %v, want 70: the fixture no longer exercises per-object relists", old, got)
	}
}

// TestVanishedOnPrometheus is why an empty answer is not always negative
// evidence: when one scrape of herd's exporter fails, Prometheus marks every
// series of the target stale, and the shipped recording rules over them
// answer nothing until the next scrape. Vanished tells that moment (unknown:
// ErrUnavailable) from a condition that ended longer ago than the window, or
// never held.
func TestVanishedOnPrometheus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rules, err := os.ReadFile("../../rules/prometheus_rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var state atomic.Value // "token", "down" (scrape fails), "certificate"
	state.Store("token")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mode := state.Load().(string)
		if mode == "down" {
			http.Error(w, "herd exporter unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE herd_metrics_server_kubelet_auth gauge\nherd_metrics_server_kubelet_auth{deployment=\"metrics-server\",mode=%q,namespace=\"kube-system\"} 1\n", mode)
	}))
	t.Cleanup(srv.Close)
	prom := promstack.StartPrometheus(t, promstack.PromOptions{
		ScrapeConfigs: []promstack.ScrapeConfig{{JobName: "herd-exporter", Targets: []string{srv.Listener.Addr().String()}}},
		RuleFiles:     map[string]string{"herd.yml": string(rules)},
	})
	q, err := evidence.NewPrometheus(prom.URL, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	token := evidence.MetricsServerTokenMode("kube-system", "metrics-server", "")
	other := evidence.MetricsServerTokenMode("monitoring", "metrics-server", "")
	series := func(query string) int {
		t.Helper()
		s, err := q.Query(ctx, query)
		if err != nil {
			t.Fatal(err)
		}
		return len(s)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("waiting for %s: %v", what, ctx.Err())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("the recording rule", func() bool { return series(token) == 1 })
	if err := evidence.Vanished(ctx, q, other, "1m", 0); err != nil {
		t.Errorf("a Deployment never in token mode: %v, want nil (no evidence, a refusal)", err)
	}

	// One failed scrape: herd's series and the rule over them are stale.
	state.Store("down")
	waitFor("the failed scrape to empty the rule", func() bool { return series(token) == 0 })
	err = evidence.Vanished(ctx, q, token, "1m", 0)
	if !errors.Is(err, evidence.ErrUnavailable) {
		t.Errorf("during the missed scrape: %v, want ErrUnavailable (unknown, not gone)", err)
	}
	t.Logf("during the missed scrape: %v", err)
	if err := evidence.Vanished(ctx, q, token, "1m", 1); err != nil {
		t.Errorf("never above the threshold: %v, want nil", err)
	}
	state.Store("token")
	waitFor("the next scrape to bring the rule back", func() bool { return series(token) == 1 })

	// The condition really ends: metrics-server got its certificate. An
	// answer empty for longer than the window is negative evidence.
	state.Store("certificate")
	waitFor("the rule to drop token mode", func() bool { return series(token) == 0 })
	ended := time.Now()
	if err := evidence.Vanished(ctx, q, token, "1m", 0); !errors.Is(err, evidence.ErrUnavailable) {
		t.Errorf("just ended, within the window: %v, want ErrUnavailable", err)
	}
	time.Sleep(time.Until(ended.Add(4 * time.Second)))
	if err := evidence.Vanished(ctx, q, token, "3s", 0); err != nil {
		t.Errorf("ended more than the window ago: %v, want nil", err)
	}
}
