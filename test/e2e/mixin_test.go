package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/notify/webhook"
	"github.com/prometheus/alertmanager/template"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/grafana"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/promstack"
	"github.com/herd-k8s/herd/test/stack"
)

// mixinStormNodes kubelets relist their pods every stormEvery: 6 relists/s
// in all, each instance far above accounting.relistThreshold in the window,
// and below relistStormHighRate (10/s), so the storm is caught by the
// instance count, not by the rate alone.
const mixinStormNodes = 12

// mixinAuditPolicy audits every kubelet and kube-proxy: the node-side
// clients of the scenario.
var mixinAuditPolicy = metadataPolicy([]string{"system:nodes"}, []string{"system:serviceaccount:kube-system:kube-proxy"})

// mixinExpectedEmpty are the dashboard panels that have no data in this
// scenario, each with the reason. Everything else must return data.
var mixinExpectedEmpty = map[string]string{
	// This test runs no responder: no herd_responder_* series exist
	// anywhere, so its panels are empty until it is deployed and scraped.
	"Responder leaders":   "herd_responder_leader: this test runs no responder (test/e2e/responder_test.go runs it)",
	"Responder actions":   "herd_responder_actions_total: this test runs no responder (test/e2e/responder_test.go runs it)",
	"Guard refusals":      "herd_responder_guard_refusals_total: this test runs no responder (test/e2e/responder_test.go runs it)",
	"Leader":              "herd_responder_leader: this test runs no responder (test/e2e/responder_test.go runs it)",
	"Alerts received":     "herd_responder_alerts_received_total: this test runs no responder (test/e2e/responder_test.go runs it)",
	"Action duration p99": "herd_responder_action_duration_seconds: this test runs no responder (test/e2e/responder_test.go runs it)",
	"Triage findings":     "herd_responder_findings: this test runs no responder (test/e2e/responder_test.go runs it)",
}

// TestMixin is issue 6's acceptance test: the mixin's rules, rendered with
// short `for`s, run in a real Prometheus scraping an in-process herd
// exporter that watches a real kube-apiserver and receives its audit
// webhook and its log; Alertmanager delivers the alerts to a webhook
// receiver. A kubelet relist storm, a ghost kubelet and an aggregated API
// without endpoints must each be delivered with the labels the rules
// promise, the storm must resolve once it stops, and every dashboard
// panel's queries must run against that Prometheus and return data (bar
// the responder's).
func TestMixin(t *testing.T) {
	start := time.Now()
	since := func() string { return time.Since(start).Round(100 * time.Millisecond).String() }
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// Incident 001: calico-apiserver's APIService with no endpoints at all.
	calico := controlplane.AggregatedAPI{Group: "projectcalico.org", Version: "v3", Namespace: "calico-apiserver", Service: "calico-api"}
	recv := promstack.NewReceiver(t)
	exp := scenarioExporter
	// The audit log is a second feed (the duplicates are dropped by
	// auditID); APIServices are probed every 2 s.
	exp.ProbeInterval, exp.FollowAuditLog = 2*time.Second, true
	s := stack.StartTest(ctx, t, stack.Options{
		Nodes:       mixinStormNodes,
		Ghosts:      []string{ghostName},
		AuditPolicy: mixinAuditPolicy,
		AuditLog:    true,
		// The stampede forecast's panels (herd:stampede_*) join herd's live
		// instances with the apiserver's own object sizes, RSS and APF seats:
		// Prometheus scrapes it, and it counts objects every 5 s instead of
		// every minute (--etcd-count-metric-poll-period).
		ScrapeAPIServer: true,
		APIServerArgs:   []string{"--etcd-count-metric-poll-period=5s"},
		Objects: func(ctx context.Context, s *stack.Stack) error {
			if _, err := createMetricsServer(ctx, s.Admin); err != nil {
				return err
			}
			if err := s.CP.RegisterAggregatedAPI(ctx, calico); err != nil {
				return err
			}
			// A healthy metrics-server APIService, so the backend and
			// latency panels have a backend to show.
			ms := mixinDiscovery(t, s.CP, "metrics.k8s.io/v1beta1")
			return s.CP.RegisterAggregatedAPI(ctx, controlplane.AggregatedAPI{
				Group: "metrics.k8s.io", Version: "v1beta1", Namespace: "kube-system", Service: "metrics-server",
				Backends: []controlplane.Backend{{Addr: ms.Listener.Addr().String(), Pod: "metrics-server-5f6d7c-x2k9q", Node: "node-1"}},
			})
		},
		Exporter:      exp,
		Mixin:         mixinOverrides,
		AlertReceiver: recv.URL,
		AlertRepeat:   time.Hour,
		NoResponder:   true,
	})
	window := rateWindow
	t.Cleanup(func() {
		if t.Failed() {
			dumpMixin(t, s, recv, window)
		}
	})
	t.Logf("%s: stack up", since())

	// The scenario.
	var l loops
	defer l.wg.Wait()
	defer cancel()
	kubelets := make([]*nodesim.Client, mixinStormNodes)
	for i := range kubelets {
		kubelets[i] = nodesim.ForTest(t, func() (*nodesim.Client, error) {
			return nodesim.NewKubelet(s.CP, stack.NodeName(i+1), nodesim.Options{SourceIP: stack.NodeIP(i + 1)})
		})
	}
	ghost := nodesim.ForTest(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubelet(s.CP, ghostName, nodesim.Options{SourceIP: ghostIP})
	})
	proxy := nodesim.ForTest(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubeProxy(s.CP, nodesim.Options{SourceIP: stack.NodeIP(1)})
	})

	// 1. The relist storm: every kubelet relists its pods with a consistent
	// (quorum) LIST every 2 s. Being pod relists in a loop, it also makes
	// every storming kubelet a stale kubelet (relist_loop).
	stormCtx, stopStorm := context.WithCancel(ctx)
	defer stopStorm()
	for i, k := range kubelets {
		pods := nodesim.Pods.OnNode(stack.NodeName(i + 1))
		l.run(stormCtx, "storm", stormEvery, func(ctx context.Context) (nodesim.Result, error) {
			return k.ListConsistent(ctx, pods)
		})
	}
	stormStart := time.Now()
	// 2. The ghost kubelet of incident 000: no Node, an address no Node
	// has, looping on too-large-RV runtimeclass LISTs (~3 s each).
	l.run(ctx, "ghost", time.Second, func(ctx context.Context) (nodesim.Result, error) {
		return ghost.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
	})
	// TokenReviews by two kubelets (a metrics-server in token mode scraping
	// them), and kube-proxy's paginated service LISTs (3 services in pages
	// of 1: 1 relist and 2 continuation pages each), for their panels.
	for _, k := range kubelets[:2] {
		l.run(ctx, "tokenreview", time.Second, func(ctx context.Context) (nodesim.Result, error) {
			return k.CreateTokenReview(ctx, "metrics-server-token")
		})
	}
	l.run(ctx, "pages", 3*time.Second, func(ctx context.Context) (nodesim.Result, error) {
		pages, err := proxy.ListPages(ctx, nodesim.Services, 1, nodesim.ListOptions{})
		if len(pages) == 0 {
			return nodesim.Result{}, err
		}
		return pages[len(pages)-1], err
	})

	// The stages the steps build on.
	stormSel := map[string]string{"role": "kubelet", "client": "kubelet", "resource": "pods"}
	var storm, ghostAlert, unavailable template.Alert
	stormFired := herdtest.NewPrereq("HerdRelistStorm delivered", func(t *testing.T) {
		storm = waitNotified(ctx, t, recv, 2*time.Minute, "HerdRelistStorm", "firing", stormSel)
		t.Logf("%s: HerdRelistStorm delivered %s after the storm started: %s", since(), time.Since(stormStart).Round(100*time.Millisecond), storm.Annotations["description"])
	})
	ghostFired := herdtest.NewPrereq("HerdGhostNodeClient delivered", func(t *testing.T) {
		ghostAlert = waitNotified(ctx, t, recv, time.Minute, "HerdGhostNodeClient", "firing", map[string]string{
			"role": "kubelet", "client": "kubelet", "identity": "system:node:" + ghostName,
			"node": ghostName, "source_ip": ghostIP, "reason": "no_such_node",
		})
		t.Logf("%s: HerdGhostNodeClient delivered: %s", since(), ghostAlert.Annotations["summary"])
	})
	unavailableFired := herdtest.NewPrereq("HerdAggregatedAPIUnavailable delivered", func(t *testing.T) {
		unavailable = waitNotified(ctx, t, recv, time.Minute, "HerdAggregatedAPIUnavailable", "firing", map[string]string{
			"apiservice": calico.Name(), "namespace": "calico-apiserver", "service": "calico-api",
		})
		t.Logf("%s: HerdAggregatedAPIUnavailable delivered: %s", since(), unavailable.Annotations["description"])
	})
	others := []struct {
		name  string
		match map[string]string
	}{
		{"HerdTooLargeResourceVersion", map[string]string{"role": "kubelet", "client": "kubelet", "resource": "runtimeclasses.node.k8s.io"}},
		{"HerdStaleKubelet", map[string]string{"node": "node-1", "reason": "relist_loop"}},
		{"HerdMetricsServerTokenAuth", map[string]string{"namespace": "kube-system", "deployment": "metrics-server", "mode": "token"}},
	}
	othersErr := map[string]error{}
	othersFired := herdtest.NewPrereq("the scenario's other alerts waited for", func(t *testing.T) {
		stormFired.Need(t)
		ghostFired.Need(t)
		unavailableFired.Need(t)
		for _, want := range others {
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			_, othersErr[want.name] = s.Prom.WaitForAlert(wctx, want.name, v1.AlertStateFiring, want.match)
			wcancel()
		}
		t.Logf("%s: the scenario's other alerts waited for", since())
	})
	var stopped time.Time
	stormStopped := herdtest.NewPrereq("the storm stopped", func(t *testing.T) {
		othersFired.Need(t) // everything that needs the storm ran first
		stopStorm()
		stopped = time.Now()
	})
	resolved := herdtest.NewPrereq("HerdRelistStorm resolved", func(t *testing.T) {
		stormStopped.Need(t)
		r := waitNotified(ctx, t, recv, 90*time.Second, "HerdRelistStorm", "resolved", stormSel)
		t.Logf("%s: HerdRelistStorm resolved %s after the storm stopped (ends at %s)", since(), time.Since(stopped).Round(100*time.Millisecond), r.EndsAt.Format(time.RFC3339))
	})

	t.Run("the rules select the exporter scrape job", func(t *testing.T) {
		if sel := s.Rendered.Config["herdExporterSelector"]; sel != `job="`+mixinJob+`"` {
			t.Fatalf("herdExporterSelector is %v; the scrape job is %q", sel, mixinJob)
		}
	})
	t.Run("HerdRelistStorm is delivered with its labels", func(t *testing.T) {
		stormFired.Need(t)
		checkMixinNotification(t, storm, "role", "client", "resource")
		if storm.Labels["severity"] != "critical" {
			t.Errorf("HerdRelistStorm severity %q, want critical", storm.Labels["severity"])
		}
		// It fired on the instance count (every storming kubelet is in a
		// relist loop), not on relistStormHighRate.
		sel := `{role="kubelet", client="kubelet", resource="pods"}`
		if vec, err := s.Prom.Query(ctx, `herd:relisting_instances:sum`+sel); err != nil || len(vec) != 1 || vec[0].Value != mixinStormNodes {
			t.Errorf("herd:relisting_instances:sum%s = %v (%v), want %d", sel, vec, err, mixinStormNodes)
		}
		if vec, err := s.Prom.Query(ctx, `herd:relists_by_resource:rate`+window+sel); err != nil || len(vec) != 1 || vec[0].Value >= 10 {
			t.Errorf("herd:relists_by_resource:rate%s%s = %v (%v), want one series under relistStormHighRate (10/s)", window, sel, vec, err)
		}
	})
	t.Run("HerdGhostNodeClient is delivered with its labels", func(t *testing.T) {
		ghostFired.Need(t)
		checkMixinNotification(t, ghostAlert, "role", "client", "identity", "node", "source_ip", "reason")
	})
	t.Run("HerdAggregatedAPIUnavailable is delivered with its labels", func(t *testing.T) {
		unavailableFired.Need(t)
		checkMixinNotification(t, unavailable, "apiservice", "namespace", "service")
	})
	t.Run("the other alerts of the scenario fire", func(t *testing.T) {
		othersFired.Need(t)
		for _, want := range others {
			if err := othersErr[want.name]; err != nil {
				t.Errorf("%s did not fire: %v", want.name, err)
			}
		}
	})
	t.Run("every dashboard panel has data", func(t *testing.T) {
		othersFired.Need(t) // during the storm, once every alert had its chance
		checkMixinDashboard(ctx, t, s.Prom, s.Rendered.Dashboard)
		t.Logf("%s: dashboard queries checked", since())
	})
	t.Run("HerdRelistStorm resolves once the storm stops", func(t *testing.T) {
		resolved.Need(t)
	})
	t.Run("no alert fires without a reason", func(t *testing.T) {
		resolved.Need(t)
		fired := mixinFiredAlerts(ctx, t, s.Prom)
		t.Logf("alerts that fired: %v", fired)
		for _, name := range []string{"HerdAuditIngestStalled", "HerdAuditEventsRejected", "HerdAggregatedAPISlow", "HerdAggregatedAPIFlapping", "HerdKubeletTokenReviewStorm", "HerdStampedeRisk"} {
			if slices.Contains(fired, name) {
				t.Errorf("%s fired; nothing in this scenario should trigger it", name)
			}
		}
		// The storm's first wave is a synchronized relist (issue 12: every
		// kubelet starts relisting its pods at once), so HerdSynchronizedRelist
		// may fire at its start — for the kubelets' spec.nodeName LISTs only,
		// and cheap: reported, never isolated.
		vec, err := s.Prom.Query(ctx, `group by (role, client, resource, shape, cost) (last_over_time(ALERTS{alertname="HerdSynchronizedRelist", alertstate="firing"}[15m]))`)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range vec {
			if a.Metric["client"] != "kubelet" || a.Metric["resource"] != "pods" || a.Metric["shape"] != "node" || a.Metric["cost"] != "cheap" {
				t.Errorf("HerdSynchronizedRelist fired for %v; only the kubelets' cheap wave of pod LISTs should", a.Metric)
			}
		}
	})
	t.Run("the scenario requests got the expected answers", func(t *testing.T) {
		resolved.Need(t)
		cancel()
		l.wg.Wait()
		if st := l.tally("storm"); st.Codes[http.StatusOK] == 0 || st.Errors > 0 {
			t.Errorf("storm LISTs: %+v", st)
		}
		if gt := l.tally("ghost"); gt.Codes[http.StatusGatewayTimeout] == 0 {
			t.Errorf("ghost LISTs: %+v, want 504 Too large resource version", gt)
		}
		if tr := l.tally("tokenreview"); tr.Codes[http.StatusCreated] == 0 {
			t.Errorf("TokenReviews: %+v", tr)
		}
		t.Logf("%s: done; storm %+v, ghost %+v, tokenreviews %+v, pages %+v", since(), l.tally("storm"), l.tally("ghost"), l.tally("tokenreview"), l.tally("pages"))
	})
}

// waitNotified waits until the receiver got a notification holding alert
// name with status ("firing" or "resolved") and every label in match.
func waitNotified(ctx context.Context, t *testing.T, recv *promstack.Receiver, timeout time.Duration, name, status string, match map[string]string) template.Alert {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var got template.Alert
	_, err := recv.WaitFor(wctx, func(m webhook.Message) bool {
		for _, a := range m.Alerts {
			if a.Status != status || a.Labels["alertname"] != name {
				continue
			}
			ok := true
			for k, v := range match {
				ok = ok && a.Labels[k] == v
			}
			if ok {
				got = a
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no %s notification for %s %v within %v: %v", status, name, match, timeout, err)
	}
	return got
}

// dumpMixin prints what explains a failure: Prometheus' alerts,
// Alertmanager's, the notifications received, and the series behind the
// alerts.
func dumpMixin(t *testing.T, s *stack.Stack, recv *promstack.Receiver, window string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if res, err := s.Prom.API.Alerts(ctx); err != nil {
		t.Logf("prometheus /api/v1/alerts: %v", err)
	} else {
		b, _ := json.MarshalIndent(res.Alerts, "", "  ")
		t.Logf("prometheus /api/v1/alerts:\n%s", b)
	}
	if alerts, err := s.AM.Alerts(ctx); err != nil {
		t.Logf("alertmanager alerts: %v", err)
	} else {
		for _, a := range alerts {
			t.Logf("alertmanager: %v %s", a.Labels, a.Status.State)
		}
	}
	for _, m := range recv.Messages() {
		for _, a := range m.Alerts {
			t.Logf("received: %s %v", a.Status, a.Labels)
		}
	}
	for _, q := range []string{
		`up`,
		`herd:relists_by_resource:rate` + window,
		`herd:relisting_instances:sum`,
		`herd:relists_by_resource:median1d`,
		`herd:ghost_instance:max`,
		`herd:stale_kubelet:max`,
		`herd:too_large_resource_version:rate` + window,
		`herd:apiservice_available:max`,
		`herd:metrics_server_kubelet_auth:max`,
		`herd:audit_events:rate` + window,
		`herd:audit_requests:rate` + window,
		`herd_cluster_nodes`,
		`ALERTS`,
	} {
		vec, err := s.Prom.Query(ctx, q)
		t.Logf("query %s: %v %v", q, vec, err)
	}
}

// checkMixinNotification checks an alert's exact label names and its annotations
// (no template that read a missing label).
func checkMixinNotification(t *testing.T, a template.Alert, labels ...string) {
	t.Helper()
	want := append([]string{"alertname", "severity", "job"}, labels...)
	slices.Sort(want)
	got := slices.Sorted(maps.Keys(a.Labels))
	if !slices.Equal(got, want) {
		t.Errorf("%s: labels %v, want exactly %v", a.Labels["alertname"], a.Labels, want)
	}
	if a.Labels["job"] != mixinJob {
		t.Errorf("%s: job %q, want %q", a.Labels["alertname"], a.Labels["job"], mixinJob)
	}
	for _, k := range []string{"summary", "description", "runbook_url"} {
		v := a.Annotations[k]
		if v == "" || strings.Contains(v, "<no value>") {
			t.Errorf("%s: annotation %s = %q", a.Labels["alertname"], k, v)
		}
	}
}

// mixinDiscovery is an aggregated API server on loopback that serves
// discovery for one group/version to the aggregator, as metrics-server does.
func mixinDiscovery(t *testing.T, cp *controlplane.ControlPlane, groupVersion string) *httptest.Server {
	return aggregatedBackend(t, cp, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/"+groupVersion {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":%q,"resources":[{"name":"nodes","singularName":"","namespaced":false,"kind":"NodeMetrics","verbs":["get","list"]}]}`, groupVersion)
	})
}

// mixinFiredAlerts lists the alerts that were firing at any time in the
// last 15 minutes.
func mixinFiredAlerts(ctx context.Context, t *testing.T, prom *promstack.Prometheus) []string {
	t.Helper()
	vec, err := prom.Query(ctx, `group by (alertname) (last_over_time(ALERTS{alertstate="firing"}[15m]))`)
	if err != nil {
		t.Errorf("list fired alerts: %v", err)
		return nil
	}
	var names []string
	for _, s := range vec {
		names = append(names, string(s.Metric["alertname"]))
	}
	slices.Sort(names)
	return names
}

// mixinSubstitute replaces Grafana's variables in expr with vars.
func mixinSubstitute(expr string, vars map[string]string) (string, error) {
	return grafana.Substitute(expr, func(name string) (string, bool) { v, ok := vars[name]; return v, ok })
}

// mixinVariables resolves the dashboard's template variables against
// Prometheus as Grafana would on first load: query variables take their
// first value (none: empty, which matches a missing label), multi-value
// variables with includeAll take "All", i.e. their allValue.
func mixinVariables(ctx context.Context, t *testing.T, prom *promstack.Prometheus, d map[string]any) map[string]string {
	t.Helper()
	vars := map[string]string{
		"__rate_interval": "1m", "__interval": "15s", "__range": "1h",
		"__interval_ms": "15000", "__range_ms": "3600000", "__range_s": "3600",
		"datasource": "prometheus",
	}
	for _, v := range grafana.Variables(d) {
		name, _ := v["name"].(string)
		if v["type"] != "query" {
			continue
		}
		def, _ := v["definition"].(string)
		selector, label, ok := grafana.LabelValues(def)
		if !ok {
			t.Fatalf("variable %s: %q is not label_values(selector, label)", name, def)
		}
		sel, err := mixinSubstitute(selector, vars)
		if err != nil {
			t.Fatalf("variable %s: %v", name, err)
		}
		values, _, _, err := prom.API.LabelValues(ctx, label, []string{sel}, time.Now().Add(-time.Hour), time.Now())
		if err != nil {
			t.Errorf("variable %s: label_values(%s, %s): %v", name, sel, label, err)
		}
		all, _ := v["includeAll"].(bool)
		switch {
		case all:
			vars[name], _ = v["allValue"].(string)
		case len(values) > 0:
			vars[name] = string(values[0])
		default:
			vars[name] = ""
		}
		t.Logf("variable %s: label_values(%s, %s) = %v; using %q", name, sel, label, values, vars[name])
		if name == "job" && !slices.Contains(values, model.LabelValue(mixinJob)) {
			t.Errorf("variable job offers %v, not the scraped job %q", values, mixinJob)
		}
	}
	return vars
}

// checkMixinDashboard runs every panel query of the dashboard against
// Prometheus: none may fail, and every panel but mixinExpectedEmpty must
// return data (instant query, else a range query over the last 3 minutes).
// Panels still without data are retried for a while: on a slow machine a
// window may not have filled yet.
func checkMixinDashboard(ctx context.Context, t *testing.T, prom *promstack.Prometheus, d map[string]any) {
	t.Helper()
	vars := mixinVariables(ctx, t, prom, d)
	deadline := time.Now().Add(45 * time.Second)
	for {
		res := mixinDashboardPass(ctx, prom, d, vars)
		if len(res.errs) > 0 || len(res.empty) == 0 || time.Now().After(deadline) {
			for _, e := range res.errs {
				t.Error(e)
			}
			for _, e := range res.empty {
				t.Errorf("panel %s returned no data", e)
			}
			for _, n := range res.notes {
				t.Log(n)
			}
			t.Logf("dashboard: %d panels, %d with data, %d expected empty", res.panels, res.withData, len(mixinExpectedEmpty))
			return
		}
		t.Logf("panels without data yet, retrying: %v", res.empty)
		time.Sleep(3 * time.Second)
	}
}

type mixinDashboardResult struct {
	errs, empty, notes []string
	panels, withData   int
}

func mixinDashboardPass(ctx context.Context, prom *promstack.Prometheus, d map[string]any, vars map[string]string) mixinDashboardResult {
	var res mixinDashboardResult
	run := func(where, raw string) (bool, error) {
		expr, err := mixinSubstitute(raw, vars)
		if err != nil {
			return false, err
		}
		now := time.Now()
		val, _, _, err := prom.API.Query(ctx, expr, now)
		if err != nil {
			return false, fmt.Errorf("instant query %s: %w", expr, err)
		}
		if mixinHasData(val) {
			return true, nil
		}
		val, _, _, err = prom.API.QueryRange(ctx, expr, v1.Range{Start: now.Add(-3 * time.Minute), End: now, Step: 5 * time.Second})
		if err != nil {
			return false, fmt.Errorf("range query %s: %w", expr, err)
		}
		if mixinHasData(val) {
			res.notes = append(res.notes, fmt.Sprintf("%s: data only in the range query: %s", where, expr))
			return true, nil
		}
		return false, nil
	}

	for _, a := range grafana.List(d["annotations"], "list") {
		if expr, ok := a["expr"].(string); ok {
			if _, err := run(fmt.Sprintf("annotation %q", a["name"]), expr); err != nil {
				res.errs = append(res.errs, fmt.Sprintf("annotation %q: %v", a["name"], err))
			}
		}
	}
	seen := map[string]bool{}
	for _, p := range grafana.Panels(d) {
		if p["type"] == "row" {
			continue
		}
		title, _ := p["title"].(string)
		seen[title] = true
		res.panels++
		has := false
		var empty []string
		for _, tg := range grafana.List(p, "targets") {
			raw, _ := tg["expr"].(string)
			ok, err := run(fmt.Sprintf("panel %q target %v", title, tg["refId"]), raw)
			if err != nil {
				res.errs = append(res.errs, fmt.Sprintf("panel %q target %v: %v", title, tg["refId"], err))
				continue
			}
			has = has || ok
			if !ok {
				empty = append(empty, fmt.Sprint(tg["refId"]))
			}
		}
		reason, exempt := mixinExpectedEmpty[title]
		switch {
		case exempt && has:
			res.errs = append(res.errs, fmt.Sprintf("panel %q has data although it is listed as expected-empty (%s): remove it from mixinExpectedEmpty", title, reason))
		case exempt:
			res.notes = append(res.notes, fmt.Sprintf("panel %q: empty as expected (%s)", title, reason))
		case !has:
			res.empty = append(res.empty, fmt.Sprintf("%q", title))
		default:
			res.withData++
			if len(empty) > 0 {
				res.notes = append(res.notes, fmt.Sprintf("panel %q: targets %v empty (the panel has data from the others)", title, empty))
			}
		}
	}
	for title := range mixinExpectedEmpty {
		if !seen[title] {
			res.errs = append(res.errs, fmt.Sprintf("expected-empty panel %q is not in the dashboard", title))
		}
	}
	return res
}

func mixinHasData(v model.Value) bool {
	switch v := v.(type) {
	case model.Vector:
		return len(v) > 0
	case model.Matrix:
		return len(v) > 0
	case *model.Scalar:
		return v != nil
	}
	return false
}
