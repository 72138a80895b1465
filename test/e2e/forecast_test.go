package e2e

import (
	"context"
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/test/controlplane"
	stormdrill "github.com/herd-k8s/herd/test/drill"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/stack"
)

// The forecast's scene: forecastNodes Nodes, each with a cilium-agent and a
// kubelet that LIST then WATCH (no WatchList: a LIST is what the model
// costs), and forecastPods of the drill's 10.8 KB pods.
const (
	forecastNodes = 40
	forecastPods  = 600
	// forecastListTolerance is how far herd:stampede_list_bytes may be from
	// the size of the LIST the agents make: the apiserver's size estimate is
	// an average of the last observed stored sizes (pkg/storage/etcd3/
	// stats.go), the JSON/protobuf factor a constant.
	forecastListTolerance = 0.10
)

// TestForecastOnRealAPIServer checks the stampede model (rules/rules/
// stampede.libsonnet) against a real kube-apiserver 1.36.3 through a real
// Prometheus: herd's series and the apiserver's own metrics give
// herd:stampede_list_bytes within forecastListTolerance of the JSON a LIST
// of every pod returns, and HerdStampedeRisk fires for the cilium-agents'
// unfiltered LISTs and never for the kubelets' spec.nodeName ones. It is
// not timed: it waits for the numbers, then checks them. The budget is the
// mixin's own formula with apiserverMemoryHeadroomFactor 1.5 (0.8 × 1.5 =
// 1.2 × the apiserver's median RSS), so that this small scene has a risk
// to forecast: what the real budget would be in a real cluster is
// docs/runbooks/HerdStampedeRisk.md's business, not this test's.
func TestForecastOnRealAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	var nodes []string
	for i := 1; i <= forecastNodes; i++ {
		nodes = append(nodes, stack.NodeName(i))
	}
	s := stack.StartTest(ctx, t, stack.Options{
		Nodes: forecastNodes,
		// The apiserver counts objects and sizes every 5 s instead of every
		// minute (--etcd-count-metric-poll-period), so the test waits less.
		APIServerArgs:   []string{"--etcd-count-metric-poll-period=5s"},
		ScrapeAPIServer: true,
		Objects: func(ctx context.Context, s *stack.Stack) error {
			return stormdrill.CreateHeavyPods(ctx, s.Admin, forecastPods, nodes, stormdrill.HeavyPodFiller, 8)
		},
		Mixin: map[string]any{
			"stampedeRiskFor":               "10s",
			"apiserverMemoryHeadroomFactor": 1.5,
		},
		// The agents' node addresses reach the apiserver as X-Forwarded-For
		// from loopback (nodesim): trust loopback as a proxy, so that each
		// cilium-agent is its own instance, as on a real node.
		Exporter:       stack.ExporterOptions{Config: "accounting:\n  window: 1m\n  trustedProxies: [127.0.0.1/32]\n"},
		NoResponder:    true,
		NoAlertmanager: true,
	})

	// The agents: real client-go reflectors, each node's from its own
	// address (the exporter attributes them to their Node).
	for i := 1; i <= forecastNodes; i++ {
		opts := nodesim.AgentOptions{Options: nodesim.Options{SourceIP: stack.NodeIP(i)}, DisableWatchList: true}
		c, err := nodesim.StartCiliumAgent(ctx, s.CP, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Stop)
		k, err := nodesim.StartKubelet(ctx, s.CP, stack.NodeName(i), nodesim.AgentOptions{DisableWatchList: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Stop)
	}

	// The LIST the cilium-agents make, as JSON, measured (as the admin: a
	// LIST as cilium from here would be one more cilium instance).
	actual := listBytes(ctx, t, s, "/api/v1/pods")
	t.Logf("one unfiltered LIST of %d pods: %d bytes of JSON", forecastPods, actual)

	query := func(expr string) float64 {
		t.Helper()
		vec, err := s.Prom.Query(ctx, expr)
		if err != nil || len(vec) != 1 {
			return math.NaN()
		}
		return float64(vec[0].Value)
	}
	cilium := `{client="cilium-agent", resource="pods", shape="all"}`
	kubelet := `{client="kubelet", resource="pods", shape="node"}`

	var listed, objects, instances float64
	deadline := time.Now().Add(3 * time.Minute)
	for {
		listed = query(`herd:stampede_list_bytes` + cilium)
		objects = query(`herd:apiserver_objects:max{resource="pods"}`)
		instances = query(`sum(herd:stampede_instances:sum` + cilium + `)`)
		if !math.IsNaN(listed) && objects == forecastPods && instances == forecastNodes {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 3m: herd:stampede_list_bytes %v, pods the apiserver counts %v, live cilium-agents %v; want a size, %d, %d",
				listed, objects, instances, forecastPods, forecastNodes)
		}
		time.Sleep(time.Second)
	}
	stored := query(`herd:apiserver_stored_bytes:max{resource="pods"}`)
	t.Logf("the apiserver stores %.0f bytes of pods (%.0f per pod); herd:stampede_list_bytes = %.0f, the LIST's JSON %d: %.3f (JSON per stored byte %.3f)",
		stored, stored/forecastPods, listed, actual, listed/float64(actual), float64(actual)/stored)
	if d := math.Abs(listed-float64(actual)) / float64(actual); d > forecastListTolerance {
		t.Errorf("herd:stampede_list_bytes %.0f is %.1f%% from the LIST's %d bytes; tolerance %.0f%%", listed, 100*d, actual, 100*forecastListTolerance)
	}

	// The rest of the forecast, for the record.
	for _, r := range []string{"herd:stampede_list_seats", "herd:stampede_concurrency", "herd:stampede_growth_bytes", "herd:stampede_peak_bytes", "herd:stampede_safe_concurrency"} {
		t.Logf("%s: cilium %.0f, kubelet %.0f", r, query(r+cilium), query(r+kubelet))
	}
	t.Logf("herd:stampede_budget_bytes %.0f, apiserver RSS %.0f, level of cilium's LISTs %v",
		query(`max(herd:stampede_budget_bytes)`), query(`herd:apiserver_memory_bytes:max`),
		labelValues(ctx, t, s, `herd:stampede_instances:sum`+cilium, "priority_level"))

	herdtest.Wait(t, 2*time.Minute, "HerdStampedeRisk firing for cilium-agent's LISTs of pods", func() bool {
		return query(`ALERTS{alertname="HerdStampedeRisk", alertstate="firing", client="cilium-agent", resource="pods", shape="all"}`) == 1
	})
	if v := query(`count(ALERTS{alertname="HerdStampedeRisk", client!="cilium-agent"}) or vector(0)`); v != 0 {
		t.Errorf("HerdStampedeRisk is pending or firing for %v other streams; only cilium-agent's unfiltered LISTs of pods should", v)
	}
	if v := query(`count(ALERTS{alertname="HerdStampedeRisk", client="kubelet"}) or vector(0)`); v != 0 {
		t.Errorf("HerdStampedeRisk for the kubelets' spec.nodeName LISTs")
	}
}

// listBytes is the size of the JSON body of GET path.
func listBytes(ctx context.Context, t *testing.T, s *stack.Stack, path string) int64 {
	t.Helper()
	hc, err := rest.HTTPClientFor(s.CP.Config(controlplane.Admin))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.CP.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", path, resp.StatusCode, err)
	}
	return n
}

// labelValues lists the values of label in the result of expr.
func labelValues(ctx context.Context, t *testing.T, s *stack.Stack, expr, label string) []string {
	t.Helper()
	vec, err := s.Prom.Query(ctx, expr)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range vec {
		out = append(out, string(v.Metric[model.LabelName(label)]))
	}
	return out
}
