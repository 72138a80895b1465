package evidence_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
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
