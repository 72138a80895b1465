package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/nodesim"
)

// The incident drills of issue 8: one per incident of ../shared/background,
// each on the real stack (drills_helpers_test.go), each logging its timeline.

// burnWindow is one long/short window pair of the SRE workbook's multiwindow,
// multi-burn-rate alert (https://sre.google/workbook/alerting-on-slos/ §6),
// as the kubernetes-mixin uses them for KubeAPIErrorBudgetBurn.
type burnWindow struct {
	long, short time.Duration
	factor      float64
	forDur      time.Duration
}

// burnPages are the workbook's two paging pairs (1h/5m at 14.4, 6h/30m at 6).
var burnPages = []burnWindow{
	{time.Hour, 5 * time.Minute, 14.4, 2 * time.Minute},
	{6 * time.Hour, 30 * time.Minute, 6, 15 * time.Minute},
}

// burnScale compresses the workbook's windows for a drill: 1h becomes 2m,
// 5m becomes 10s.
const burnScale = 30

// drillBurnRules is KubeAPIErrorBudgetBurn as the kubernetes-mixin defines
// it, over the real apiserver's apiserver_request_total (job "apiserver"),
// errors only (5xx; the mixin also counts too-slow requests), with the
// workbook's windows divided by burnScale. The SLO is 99 %: the budget is
// 1 % of requests. As in the mixin, read (LIST, GET) and write requests
// burn separately and the alert sums the two; WATCH, CONNECT and streaming
// subresources are not part of the SLI, nor are 429s.
func drillBurnRules() string {
	// The harness polls /readyz while the apiserver starts: those 500s are
	// not the drill's, so health endpoints are left out of the SLI.
	const sli = `job="apiserver", verb=~"%s", subresource!~"proxy|attach|log|exec|portforward|/readyz|/livez|/healthz"`
	windows := map[string]bool{}
	var b strings.Builder
	b.WriteString("groups:\n- name: drill-kube-apiserver-burnrate.rules\n  rules:\n")
	for _, p := range burnPages {
		for _, w := range []time.Duration{p.long / burnScale, p.short / burnScale} {
			win := model.Duration(w).String()
			if windows[win] {
				continue
			}
			windows[win] = true
			for _, class := range []struct{ name, verbs string }{{"read", "LIST|GET"}, {"write", "POST|PUT|PATCH|DELETE"}} {
				sel := fmt.Sprintf(sli, class.verbs)
				fmt.Fprintf(&b, "  - record: apiserver_request:burnrate%s\n    labels: {verb: %s}\n    expr: sum(rate(apiserver_request_total{%s, code=~\"5..\"}[%s])) / clamp_min(sum(rate(apiserver_request_total{%s}[%s])), 1e-9)\n",
					win, class.name, sel, win, sel, win)
			}
		}
	}
	b.WriteString("- name: drill-kube-apiserver-slos\n  rules:\n")
	for _, p := range burnPages {
		long, short := model.Duration(p.long/burnScale).String(), model.Duration(p.short/burnScale).String()
		fmt.Fprintf(&b, `  - alert: KubeAPIErrorBudgetBurn
    expr: sum(apiserver_request:burnrate%[1]s) > (%[3]g * 0.01000) and sum(apiserver_request:burnrate%[2]s) > (%[3]g * 0.01000)
    for: %[4]s
    labels: {long: %[1]s, short: %[2]s, severity: critical}
    annotations:
      summary: The API server is burning too much error budget.
      description: The API server is burning too much error budget.
      runbook_url: https://github.com/herd-k8s/herd/blob/main/docs/runbooks/KubeAPIErrorBudgetBurn.md
`, long, short, p.factor, model.Duration(p.forDur/burnScale))
	}
	return b.String()
}

const (
	drillGhost   = "old-worker-7"
	drillGhostIP = "10.99.0.7"
)

// TestDrill000GhostKubelet is incident 000: a kubelet on a long-removed
// worker (no Node, an address no Node has) loops on LISTs of runtimeclasses
// and csidrivers at a resourceVersion from its old cluster; each takes 3 s
// and ends in a 504 "Too large resource version", which burns the
// apiserver's error budget. KubeAPIErrorBudgetBurn (defined here over the
// apiserver's own metrics) fires and the responder's triage names the ghost
// first; HerdGhostNodeClient and HerdTooLargeResourceVersion fire and the
// responder quarantines the identity: its requests then get fast 429s,
// which the SLO does not count.
func TestDrill000GhostKubelet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := startDrill(ctx, t, drillSetup{
		Nodes:  3,
		Ghosts: []string{drillGhost},
		// The burn alert fires within seconds of the first 504s; herd's
		// ghost alert waits longer, so that the drill sees the incident's
		// order: the SLO alert and its triage first, then herd's own alert
		// and the quarantine.
		Overrides:       map[string]any{"ghostNodeClientFor": "45s"},
		Rules:           drillBurnRules(),
		ScrapeAPIServer: true,
	})
	defer s.loops.wg.Wait()
	defer cancel()
	if _, err := s.prom.WaitForQuery(ctx, `up{job="apiserver"}`, func(v model.Vector) bool { return len(v) == 1 && v[0].Value == 1 }); err != nil {
		t.Fatalf("Prometheus does not scrape the apiserver's /metrics: %v", err)
	}

	ghost := newClient(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubelet(s.cp, drillGhost, nodesim.Options{SourceIP: drillGhostIP})
	})
	before, err := ghost.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
	if err != nil || before.Code != http.StatusGatewayTimeout || before.Duration < 2*time.Second {
		t.Fatalf("the ghost's too-large-RV LIST: %s (%v), want the incident's 504 after ~3 s", before, err)
	}
	s.mark("the ghost's LIST before herd: %d in %v: %s", before.Code, before.Duration.Round(10*time.Millisecond), before.Message)

	// The ghost's kubelet loops on both collections, three loops each:
	// about 2 504s per second (the incident saw "about 1 rps" on a cluster
	// with far more traffic). The drill's other reads are the responder's
	// sweeps and Prometheus' scrapes, ~3/s.
	for _, r := range []nodesim.Resource{nodesim.RuntimeClasses, nodesim.RuntimeClasses, nodesim.RuntimeClasses, nodesim.CSIDrivers, nodesim.CSIDrivers, nodesim.CSIDrivers} {
		s.loops.run(ctx, "ghost", time.Second, func(ctx context.Context) (nodesim.Result, error) {
			return ghost.ListTooLargeRV(ctx, r, "")
		})
	}
	ghostStart := time.Now()
	s.mark("the ghost kubelet loops on too-large-RV LISTs of runtimeclasses and csidrivers")

	// The SLO alert, from the apiserver's own metrics, and its triage.
	burn := s.waitDelivered(ctx, 90*time.Second, "KubeAPIErrorBudgetBurn", nil)
	if v, ok := s.query(ctx, `sum(apiserver_request:burnrate`+model.Duration(burnPages[0].short/burnScale).String()+`)`); ok {
		t.Logf("burn rate over the short window: %.3f (threshold %.3f)", v, burnPages[0].factor*0.01)
	}
	if vec, err := s.prom.Query(ctx, `sum by (verb, resource, subresource, code) (rate(apiserver_request_total{job="apiserver", verb=~"LIST|GET"}[1m])) > 0`); err == nil {
		t.Logf("the apiserver's reads, per second over 1m: %v", vec)
	}
	triaged := s.waitDecision(ctx, 30*time.Second, "the triage of KubeAPIErrorBudgetBurn", func(d responderDecision) bool {
		return d.Action == "triage" && d.Alert == "KubeAPIErrorBudgetBurn" && d.Status == "firing"
	})
	s.logf("triage decided (%s): %s", triaged.Result, truncateString(triaged.Reason, 300))
	if triaged.Result != "applied" || !strings.Contains(triaged.Reason, "1. [ghost_client]") || !strings.Contains(triaged.Reason, "system:node:"+drillGhost) {
		t.Errorf("triage decision %s: %q; want applied, naming ghost_client system:node:%s first", triaged.Result, triaged.Reason, drillGhost)
	}
	var first triageReport
	for _, r := range s.triageReports() {
		if r.Alert == "KubeAPIErrorBudgetBurn" && r.Labels["long"] == burn["long"] {
			first = r
			break
		}
	}
	if len(first.Findings) == 0 {
		t.Fatalf("/debug/triage has no findings for KubeAPIErrorBudgetBurn %v: %+v", burn, s.triageReports())
	}
	s.logFindings(first)
	top := first.Findings[0]
	if top.Pattern != "ghost_client" || top.Labels["identity"] != "system:node:"+drillGhost || top.Labels["source_ip"] != drillGhostIP ||
		top.Remediation != "quarantine" || !strings.Contains(top.Summary, drillGhostIP) {
		t.Errorf("triage's first finding: %+v; want ghost_client system:node:%s from %s, remediation quarantine", top, drillGhost, drillGhostIP)
	}
	tooLarge := false
	for _, f := range first.Findings[1:] {
		tooLarge = tooLarge || f.Pattern == "too_large_rv"
		if f.Score >= top.Score {
			t.Errorf("finding %s scores %.2f, not below the ghost's %.2f", f.Pattern, f.Score, top.Score)
		}
	}
	if !tooLarge {
		t.Errorf("triage has no too_large_rv finding behind the ghost: %+v", first.Findings)
	}
	if got := s.resp.metric(t, "herd_responder_findings", "pattern=ghost_client"); got != 1 {
		t.Errorf("herd_responder_findings{pattern=ghost_client} = %v, want 1", got)
	}
	checkEvent(ctx, t, s.admin, "Lease", "HerdTriageApplied")

	// herd's own alerts, and the quarantine. Meanwhile a probe of the
	// ghost's identity, 5 times a second from now on (not earlier: its
	// reads would dilute the burn rate), times when APF starts rejecting
	// it: a GET of its own Node (404, cheap, and not audited by the shipped
	// policy, so herd does not see it).
	rejected := make(chan time.Time, 1)
	s.loops.wg.Add(1)
	go func() {
		defer s.loops.wg.Done()
		for ctx.Err() == nil {
			res, err := ghost.Do(ctx, http.MethodGet, "/api/v1/nodes/"+drillGhost, nil)
			if err == nil && res.Code == http.StatusTooManyRequests {
				rejected <- time.Now()
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	s.waitDelivered(ctx, 90*time.Second, "HerdTooLargeResourceVersion", map[string]string{"role": "kubelet", "client": "kubelet", "resource": "runtimeclasses.node.k8s.io"})
	s.waitDelivered(ctx, 90*time.Second, "HerdTooLargeResourceVersion", map[string]string{"role": "kubelet", "client": "kubelet", "resource": "csidrivers.storage.k8s.io"})
	s.waitDelivered(ctx, 90*time.Second, "HerdGhostNodeClient", map[string]string{
		"identity": "system:node:" + drillGhost, "node": drillGhost, "source_ip": drillGhostIP, "reason": "no_such_node"})
	q := s.waitDecision(ctx, 30*time.Second, "the quarantine of the ghost", func(d responderDecision) bool {
		return d.Action == "quarantine" && d.Status == "firing" && d.Result != "noop"
	})
	s.logf("quarantine %s: %s", q.Result, truncateString(q.Reason, 300))
	if q.Result != "applied" {
		t.Fatalf("quarantine: %+v, want applied", q)
	}
	checkEvent(ctx, t, s.admin, "FlowSchema", "HerdQuarantineApplied")

	// APF applies the new FlowSchema once its config controller has
	// digested it.
	select {
	case at := <-rejected:
		s.mark("the apiserver rejects the ghost's requests %v after the quarantine was applied", at.Sub(q.Time).Round(10*time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatalf("the apiserver did not reject the ghost's requests within 30 s of the quarantine")
	}

	// The ghost's LISTs fail fast now, with 429, which the SLO ignores.
	for _, r := range []nodesim.Resource{nodesim.RuntimeClasses, nodesim.CSIDrivers} {
		after, err := ghost.ListTooLargeRV(ctx, r, "")
		if err != nil || after.Code != http.StatusTooManyRequests || after.Duration >= time.Second {
			t.Errorf("the ghost's LIST of %s after quarantine: %s (%v), want 429 in well under 1 s", r.Resource, after, err)
		}
		s.mark("the ghost's LIST of %s after quarantine: %d in %v (before: %d in %v)", r.Resource, after.Code, after.Duration.Round(time.Millisecond), before.Code, before.Duration.Round(10*time.Millisecond))
	}
	short := model.Duration(burnPages[0].short / burnScale).String()
	if _, err := s.prom.WaitForQuery(ctx, `sum(apiserver_request:burnrate`+short+`)`, func(v model.Vector) bool {
		return len(v) == 1 && float64(v[0].Value) < burnPages[0].factor*0.01
	}); err != nil {
		t.Errorf("the short-window burn rate did not fall below %g after the quarantine: %v", burnPages[0].factor*0.01, err)
	} else {
		s.mark("the short-window (%s) burn rate is below the threshold again: the ghost no longer burns budget", short)
	}
	t.Logf("ghost started %v before the quarantine landed", q.Time.Sub(ghostStart).Round(100*time.Millisecond))

	// What the responder wrote: its quarantine objects and nothing else.
	for _, w := range writesBy(t, s.logPath, responderUser) {
		if w.bookkeeping() || w.ObjectRef == nil {
			continue
		}
		if !(w.on("flowschemas", "herd-quarantine-1") || w.on("prioritylevelconfigurations", "herd-quarantine")) {
			t.Errorf("the responder wrote to %s", w)
		}
	}
	if _, err := s.admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-quarantine-1", metav1.GetOptions{}); err != nil {
		t.Errorf("FlowSchema herd-quarantine-1: %v", err)
	}
	cancel()
	s.loops.wg.Wait()
	tally := s.loops.tally("ghost")
	t.Logf("the ghost's LISTs: %+v", tally)
	if tally.Codes[http.StatusGatewayTimeout] == 0 || tally.Codes[http.StatusTooManyRequests] == 0 {
		t.Errorf("the ghost's LISTs %+v: want 504s before the quarantine and 429s after", tally)
	}
}

const (
	drillCalicoNode  = "node-3"
	drillCalicoPod   = "calico-apiserver-6c8f9d7b5-q2x7m"
	drillCalicoDelay = 8 * time.Second // longer than the aggregator's 5 s
)

// slowAggregatedBackend is an aggregated API server that accepts the
// aggregator's front-proxy client certificate and then does not answer in
// time: what calico-apiserver looked like from the control plane in
// incident 001 (unreachable through the overlay), without a real overlay.
func slowAggregatedBackend(t *testing.T, cp interface{ FrontProxyCA() []byte }, delay time.Duration) *httptest.Server {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cp.FrontProxyCA()) {
		t.Fatal("front-proxy CA does not parse")
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != controlplane.FrontProxyClientName {
			http.Error(w, "no front-proxy client certificate", http.StatusUnauthorized)
			return
		}
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"projectcalico.org/v3","resources":[]}`)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// TestDrill001AggregatedAPI is incident 001: calico-apiserver's APIService
// points at a backend (a pod on node-3) that the control plane cannot get
// an answer from within the aggregator's 5 s. herd's probes see it fail,
// HerdAggregatedAPIUnavailable (or Slow) fires with the APIService's real
// namespace and service, herd_apiservice_backend names the backend's node,
// and when KubeAPIErrorBudgetBurn fires the responder's triage names the
// APIService first — the query the incident's reporter asked for.
func TestDrill001AggregatedAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	calico := controlplane.AggregatedAPI{Group: "projectcalico.org", Version: "v3", Namespace: "calico-apiserver", Service: "calico-api"}
	s := startDrill(ctx, t, drillSetup{
		Nodes:           3,
		ScrapeAPIServer: true,
		Objects: func(ctx context.Context, s *drillStack) {
			backend := slowAggregatedBackend(t, s.cp, drillCalicoDelay)
			calico.Backends = []controlplane.Backend{{Addr: backend.Listener.Addr().String(), Pod: drillCalicoPod, Node: drillCalicoNode}}
			if err := s.cp.RegisterAggregatedAPI(ctx, calico); err != nil {
				t.Fatal(err)
			}
		},
	})
	defer s.loops.wg.Wait()
	defer cancel()
	s.mark("APIService %s registered, its only backend %s on %s answers after %v", calico.Name(), drillCalicoPod, drillCalicoNode, drillCalicoDelay)

	// What users see: discovery and requests for the group fail.
	user := newClient(t, func() (*nodesim.Client, error) {
		return nodesim.NewClient(s.cp.Config(controlplane.Admin), "kubectl", nodesim.Options{UserAgent: "kubectl/v1.36.3 (linux/amd64) kubernetes/herdsim"})
	})
	for _, uri := range []string{"/apis/projectcalico.org/v3", "/apis/projectcalico.org/v3/ippools"} {
		s.loops.run(ctx, "user", 2*time.Second, func(ctx context.Context) (nodesim.Result, error) {
			return user.Do(ctx, http.MethodGet, uri, nil)
		})
	}
	// The group's requests in the apiserver's metrics: resource requests
	// carry group, discovery is a non-resource path in subresource.
	calicoRequests := func(metric, sel string) string {
		return fmt.Sprintf(`sum(%[1]s{%[2]s, group="projectcalico.org"} or %[1]s{%[2]s, subresource=~"/apis/projectcalico.org(/.*)?"})`, metric, sel)
	}

	// herd's alert, with the APIService's real namespace and service.
	match := map[string]string{"apiservice": calico.Name(), "namespace": calico.Namespace, "service": calico.Service}
	var alert string
	var labels map[string]string
	waitCtx(ctx, t, 2*time.Minute, "HerdAggregatedAPIUnavailable or HerdAggregatedAPISlow for "+calico.Name(), func() bool {
		for _, name := range []string{"HerdAggregatedAPIUnavailable", "HerdAggregatedAPISlow"} {
			if _, l := s.tap.firstDelivery(name, "firing", match); l != nil {
				alert, labels = name, l
				return true
			}
		}
		return false
	})
	s.logf("%s delivered: %v", alert, drillLabels(labels))
	// The backend's node, from herd_apiservice_backend.
	backend := fmt.Sprintf(`herd_apiservice_backend{job=%q, apiservice=%q}`, mixinJob, calico.Name())
	vec, err := s.prom.WaitForQuery(ctx, backend, func(v model.Vector) bool { return len(v) > 0 })
	if err != nil || len(vec) != 1 || string(vec[0].Metric["node"]) != drillCalicoNode || string(vec[0].Metric["pod"]) != drillCalicoPod {
		t.Errorf("%s = %v (%v); want one backend, pod %s on node %s", backend, vec, err, drillCalicoPod, drillCalicoNode)
	} else {
		s.mark("herd_apiservice_backend: %s runs on %s", vec[0].Metric["pod"], vec[0].Metric["node"])
	}
	if vec, err := s.prom.Query(ctx, fmt.Sprintf(`sum by (reason) (herd_apiservice_probe_failures_total{apiservice=%q})`, calico.Name())); err != nil || len(vec) == 0 {
		t.Errorf("herd_apiservice_probe_failures_total{apiservice=%q}: %v (%v), want failures", calico.Name(), vec, err)
	} else {
		t.Logf("herd's probe failures by reason: %v", vec)
	}
	if as, err := s.cp.Aggregator(controlplane.Admin).ApiregistrationV1().APIServices().Get(ctx, calico.Name(), metav1.GetOptions{}); err == nil {
		for _, c := range as.Status.Conditions {
			t.Logf("APIService %s condition %s=%s (%s): %s", calico.Name(), c.Type, c.Status, c.Reason, c.Message)
		}
	}

	// The apiserver's own SLO metrics. The users' requests for the group
	// fail, but kube-apiserver does not count aggregator-proxied requests
	// in apiserver_request_total (the aggregator records its 503s as
	// apiserver_request_terminations_total{component="aggregator"}), so
	// no burn-rate rule over apiserver_request_total can see this
	// incident: the KubeAPIErrorBudgetBurn runbook's blind spot, and why
	// herd probes APIServices. Check that it is so, then hand
	// KubeAPIErrorBudgetBurn to Alertmanager directly (the burn of the
	// incident came from the handler timeouts elsewhere).
	var terminations float64
	waitCtx(ctx, t, 30*time.Second, "the aggregator's terminations in the apiserver's metrics", func() bool {
		terminations, _ = s.query(ctx, calicoRequests("apiserver_request_terminations_total", `job="apiserver", component="aggregator", code=~"5.."`))
		return terminations > 0
	})
	counted, present := s.query(ctx, calicoRequests("apiserver_request_total", `job="apiserver"`))
	if present {
		t.Errorf("apiserver_request_total counts %v requests for projectcalico.org: the runbook says aggregator-proxied requests are absent; a burn-rate rule could be used here instead of a synthetic alert", counted)
	}
	s.mark("the apiserver's own view: %v aggregator terminations for projectcalico.org, none in apiserver_request_total (present: %v); KubeAPIErrorBudgetBurn is posted to Alertmanager", terminations, present)
	burn := map[string]string{"alertname": "KubeAPIErrorBudgetBurn", "severity": "critical", "long": "1h", "short": "5m"}
	s.postAlert(ctx, burn, map[string]string{"summary": "The API server is burning too much error budget."})
	s.waitDelivered(ctx, 30*time.Second, "KubeAPIErrorBudgetBurn", map[string]string{"long": "1h"})
	triaged := s.waitDecision(ctx, 30*time.Second, "the triage of KubeAPIErrorBudgetBurn", func(d responderDecision) bool {
		return d.Action == "triage" && d.Alert == "KubeAPIErrorBudgetBurn" && d.Status == "firing"
	})
	if triaged.Result != "applied" || !strings.Contains(triaged.Reason, "1. [aggregated_api] APIService "+calico.Name()) {
		t.Errorf("triage decision %s: %q; want applied, naming aggregated_api %s first", triaged.Result, triaged.Reason, calico.Name())
	}
	reports := s.triageReports()
	if len(reports) == 0 || len(reports[len(reports)-1].Findings) == 0 {
		t.Fatalf("/debug/triage: %+v, want a report with findings", reports)
	}
	rep := reports[len(reports)-1]
	s.logFindings(rep)
	top := rep.Findings[0]
	if top.Pattern != "aggregated_api" || !strings.Contains(top.Summary, calico.Name()) || !strings.Contains(top.Summary, calico.Namespace+"/"+calico.Service) {
		t.Errorf("triage's first finding %+v; want aggregated_api naming %s (service %s/%s)", top, calico.Name(), calico.Namespace, calico.Service)
	}
	for _, f := range rep.Findings {
		if f.Pattern != "aggregated_api" && f.Score >= top.Score {
			t.Errorf("finding %s scores %.2f, not below the APIService's %.2f", f.Pattern, f.Score, top.Score)
		}
	}
	cancel()
	s.loops.wg.Wait()
	userTally := s.loops.tally("user")
	t.Logf("users' GET /apis/projectcalico.org/v3: %+v", userTally)
	if userTally.Codes[http.StatusOK] > 0 {
		t.Errorf("users' requests for the group succeeded %d times; the backend should never answer in time", userTally.Codes[http.StatusOK])
	}
}

const (
	drillCNIAgents = 12 // cilium-agents storming, one per node: relistStormMinInstances is 10
	drillCNIEvery  = 2 * time.Second
	drillPods      = 40
)

// TestDrill002RelistStorm is incident 002's chain for a CNI agent: every
// node's cilium-agent (service account kube-system/cilium, on the host
// network, so herd places each on its node by source IP) re-LISTs every pod
// in the cluster in a loop: HerdRelistStorm fires for cni/cilium-agent/pods
// and the responder isolates those LISTs, and only those, with a FlowSchema
// to a bounded priority level, before kube-system-service-accounts (where
// APF puts cilium's LISTs by default, next to the scheduler and the
// controller-manager). It is light on purpose: the storm drill measures the
// harm; this drill checks the chain and what the FlowSchema catches. When
// the storm ends, herd removes what it made after the hold-down.
func TestDrill002RelistStorm(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := startDrill(ctx, t, drillSetup{
		Nodes: drillCNIAgents,
		Objects: func(ctx context.Context, s *drillStack) {
			for i := range drillPods {
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d", i), Namespace: "default", Labels: map[string]string{"app": "drill"}},
					Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", i%drillCNIAgents+1),
						Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
				}
				if _, err := s.admin.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
		},
	})
	defer s.loops.wg.Wait()
	defer cancel()

	stormCtx, stopStorm := context.WithCancel(ctx)
	defer stopStorm()
	for i := 1; i <= drillCNIAgents; i++ {
		agent := newClient(t, func() (*nodesim.Client, error) {
			return nodesim.NewCiliumAgent(s.cp, nodesim.Options{SourceIP: drillNodeIP(i)})
		})
		s.loops.run(stormCtx, "storm", drillCNIEvery, func(ctx context.Context) (nodesim.Result, error) {
			return agent.ListConsistent(ctx, nodesim.Pods)
		})
	}
	stormStart := time.Now()
	s.mark("%d cilium-agents (kube-system/cilium, one per node) LIST all %d pods every %v, consistent reads", drillCNIAgents, drillPods, drillCNIEvery)

	storm := map[string]string{"role": "cni", "client": "cilium-agent", "resource": "pods"}
	s.waitDelivered(ctx, 2*time.Minute, "HerdRelistStorm", storm)
	if v, ok := s.query(ctx, `herd:relisting_instances:sum{role="cni", client="cilium-agent", resource="pods"}`); !ok || v != drillCNIAgents {
		t.Errorf("herd:relisting_instances:sum for cilium-agent pods = %v (%v), want %d: one instance per node", v, ok, drillCNIAgents)
	}
	iso := s.waitDecision(ctx, 30*time.Second, "the isolation of cilium-agent's pod LISTs", func(d responderDecision) bool {
		return d.Action == "isolate" && d.Status == "firing" && d.Result != "noop"
	})
	s.logf("isolate %s: %s", iso.Result, iso.Reason)
	if iso.Result != "applied" || iso.Target != "flowschema/herd-isolate-1" {
		t.Fatalf("isolate: %+v, want applied as herd-isolate-1", iso)
	}
	checkEvent(ctx, t, s.admin, "FlowSchema", "HerdIsolateApplied")

	fs, err := s.admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-isolate-1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("FlowSchema herd-isolate-1: %v", err)
	}
	ksa, err := s.admin.FlowcontrolV1().FlowSchemas().Get(ctx, "kube-system-service-accounts", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fs.Spec.MatchingPrecedence <= 400 || fs.Spec.MatchingPrecedence >= ksa.Spec.MatchingPrecedence ||
		fs.Spec.PriorityLevelConfiguration.Name != "herd-isolate" || !appliedBy(fs.ManagedFields, "herd") ||
		len(fs.Spec.Rules) != 1 || len(fs.Spec.Rules[0].Subjects) != 1 || fs.Spec.Rules[0].Subjects[0].ServiceAccount == nil ||
		fs.Spec.Rules[0].Subjects[0].ServiceAccount.Namespace != "kube-system" || fs.Spec.Rules[0].Subjects[0].ServiceAccount.Name != "cilium" {
		t.Errorf("herd-isolate-1: precedence %d (kube-system-service-accounts is %d), level %s, managers %v, rules %+v; want 400 < precedence < %d, herd-isolate, applied by herd, one subject: service account kube-system/cilium",
			fs.Spec.MatchingPrecedence, ksa.Spec.MatchingPrecedence, fs.Spec.PriorityLevelConfiguration.Name, managers(fs.ManagedFields), fs.Spec.Rules, ksa.Spec.MatchingPrecedence)
	}

	// What it catches: cilium's pod LISTs; not its watches, its other
	// LISTs or its GETs. (APF applies it once its config controller has
	// digested the new schema: wait for the first LIST it serves.)
	// From node-1's address, as the agents call: from loopback herd would
	// rightly see a cilium-agent on no Node (a ghost).
	cilium := withSourceIP(s.cp.Config(controlplane.Cilium), drillNodeIP(1))
	var effective time.Duration
	waitCtx(ctx, t, 30*time.Second, "herd-isolate-1 to serve cilium's pod LISTs", func() bool {
		effective = time.Since(iso.Time)
		return servedBy(ctx, t, cilium, "/api/v1/pods?limit=1") == string(fs.UID)
	})
	s.mark("the apiserver serves cilium's pod LISTs through herd-isolate-1 %v after it was applied (precedence %d, before kube-system-service-accounts at %d)",
		effective.Round(10*time.Millisecond), fs.Spec.MatchingPrecedence, ksa.Spec.MatchingPrecedence)
	for _, tc := range []struct {
		what, uri string
		isolated  bool
	}{
		{"LIST pods", "/api/v1/pods", true},
		{"LIST pods in a namespace", "/api/v1/namespaces/default/pods", true},
		{"WATCH pods", "/api/v1/pods?watch=true&timeoutSeconds=1", false},
		{"GET a pod", "/api/v1/namespaces/default/pods/app-0", false},
		{"LIST nodes", "/api/v1/nodes", false},
	} {
		uid := servedBy(ctx, t, cilium, tc.uri)
		if (uid == string(fs.UID)) != tc.isolated {
			t.Errorf("cilium %s: served by FlowSchema UID %q; herd-isolate-1 is %s; want isolated=%v", tc.what, uid, fs.UID, tc.isolated)
		}
	}
	// Nobody else's LISTs of pods.
	if uid := servedBy(ctx, t, s.cp.Config(controlplane.KubeScheduler), "/api/v1/pods?limit=1"); uid == string(fs.UID) {
		t.Errorf("the scheduler's pod LIST is served by herd-isolate-1")
	}
	d1 := apfDispatched(ctx, t, s.admin, "herd-isolate-1")
	time.Sleep(3 * drillCNIEvery)
	d2 := apfDispatched(ctx, t, s.admin, "herd-isolate-1")
	if d2-d1 < drillCNIAgents {
		t.Errorf("apiserver_flowcontrol_dispatched_requests_total{flow_schema=herd-isolate-1}: %v then %v over %v; the storm's LISTs (%d every %v) should go through it",
			d1, d2, 3*drillCNIEvery, drillCNIAgents, drillCNIEvery)
	}
	s.mark("apiserver_flowcontrol_dispatched_requests_total{flow_schema=herd-isolate-1}: %v, +%v in %v", d2, d2-d1, 3*drillCNIEvery)

	// The storm ends: the alert resolves and herd removes its objects after
	// the hold-down.
	stopStorm()
	stopped := time.Now()
	s.mark("the storm stops (%v after it started)", stopped.Sub(stormStart).Round(time.Second))
	waitCtx(ctx, t, 2*time.Minute, "herd's FlowSchema and priority level removed", func() bool {
		return len(herdFlowSchemas(ctx, t, s.admin)) == 0 && len(herdLevels(ctx, t, s.admin)) == 0
	})
	s.mark("herd-isolate-1 and herd-isolate removed, %v after the storm stopped", time.Since(stopped).Round(time.Second))

	for _, w := range writesBy(t, s.logPath, responderUser) {
		if w.bookkeeping() || w.ObjectRef == nil {
			continue
		}
		if !(w.on("flowschemas", "herd-isolate-1") || w.on("prioritylevelconfigurations", "herd-isolate")) {
			t.Errorf("the responder wrote to %s", w)
		}
	}
	cancel()
	s.loops.wg.Wait()
	tally := s.loops.tally("storm")
	t.Logf("the storm's LISTs: %+v", tally)
	if tally.Errors > 0 || tally.Codes[http.StatusOK] != tally.Requests {
		t.Errorf("the storm's LISTs %+v: isolation queues, it must not fail them", tally)
	}
}

const (
	drillTRNodes = 25 // kubelets reviewing tokens: tokenReviewStormMinNodes is 20
	drillTREvery = 800 * time.Millisecond
)

// TestDrill004TokenReviewStorm is incident 004: metrics-server runs without
// a kubelet client certificate, so it authenticates to every kubelet with
// its service-account token and every kubelet creates a TokenReview per
// scrape. With 25 nodes' kubelets reviewing its token, herd sees the
// TokenReview storm and metrics-server's token mode; both alerts lead to
// flag-metrics-server, which annotates the Deployment once and never
// touches its spec.
func TestDrill004TokenReviewStorm(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var created *appsv1.Deployment
	s := startDrill(ctx, t, drillSetup{
		Nodes: drillTRNodes,
		// The storm's alert first, then metrics-server's own, so the
		// drill sees one action and one no-op.
		Overrides: map[string]any{"metricsServerTokenAuthFor": "45s"},
		Objects: func(ctx context.Context, s *drillStack) {
			createMixinMetricsServer(ctx, t, s.admin)
			var err error
			if created, err = s.admin.AppsV1().Deployments("kube-system").Get(ctx, "metrics-server", metav1.GetOptions{}); err != nil {
				t.Fatal(err)
			}
		},
	})
	defer s.loops.wg.Wait()
	defer cancel()
	if _, err := s.prom.WaitForQuery(ctx, `herd_metrics_server_kubelet_auth{namespace="kube-system", deployment="metrics-server", mode="token"}`, func(v model.Vector) bool {
		return len(v) == 1 && v[0].Value == 1
	}); err != nil {
		t.Errorf("metrics-server runs without --kubelet-client-certificate: %v", err)
	}

	// metrics-server scrapes every kubelet with its token; each kubelet asks
	// the apiserver whether the token is good.
	token := s.cp.Token(controlplane.MetricsServer)
	for i := 1; i <= drillTRNodes; i++ {
		kubelet := newClient(t, func() (*nodesim.Client, error) {
			return nodesim.NewKubelet(s.cp, fmt.Sprintf("node-%d", i), nodesim.Options{SourceIP: drillNodeIP(i)})
		})
		s.loops.run(ctx, "tokenreview", drillTREvery, func(ctx context.Context) (nodesim.Result, error) {
			return kubelet.CreateTokenReview(ctx, token)
		})
	}
	s.mark("the kubelets of %d nodes review metrics-server's token every %v (%.0f TokenReviews/s)", drillTRNodes, drillTREvery, float64(drillTRNodes)/drillTREvery.Seconds())

	s.waitDelivered(ctx, 2*time.Minute, "HerdKubeletTokenReviewStorm", map[string]string{"role": "kubelet"})
	if v, ok := s.query(ctx, `herd:tokenreview_nodes:max`); !ok || v != drillTRNodes {
		t.Errorf("herd:tokenreview_nodes:max = %v (%v), want %d", v, ok, drillTRNodes)
	}
	if v, ok := s.query(ctx, `sum(herd:tokenreviews:rate`+mixinOverrides["rateWindow"].(string)+`{role="kubelet"})`); ok {
		t.Logf("kubelets' TokenReviews: %.1f/s in herd's evidence", v)
	}
	flagged := s.waitDecision(ctx, 30*time.Second, "flag-metrics-server for the TokenReview storm", func(d responderDecision) bool {
		return d.Action == "flag-metrics-server" && d.Status == "firing" && d.Alert == "HerdKubeletTokenReviewStorm"
	})
	s.logf("flag-metrics-server %s: %s", flagged.Result, flagged.Reason)
	if flagged.Result != "applied" || flagged.Target != "deployment/kube-system/metrics-server" {
		t.Errorf("flag-metrics-server on HerdKubeletTokenReviewStorm: %+v, want applied to deployment/kube-system/metrics-server", flagged)
	}
	checkEvent(ctx, t, s.admin, "Deployment", "HerdFlagMetricsServerApplied")

	s.waitDelivered(ctx, 2*time.Minute, "HerdMetricsServerTokenAuth", map[string]string{"namespace": "kube-system", "deployment": "metrics-server", "mode": "token"})
	again := s.waitDecision(ctx, 30*time.Second, "flag-metrics-server for HerdMetricsServerTokenAuth", func(d responderDecision) bool {
		return d.Action == "flag-metrics-server" && d.Status == "firing" && d.Alert == "HerdMetricsServerTokenAuth"
	})
	if again.Result != "noop" {
		t.Errorf("flag-metrics-server on HerdMetricsServerTokenAuth after the flag: %+v, want noop", again)
	}

	// The annotation, and the spec exactly as created. (A Deployment's
	// generation counts annotation changes too, so the spec itself is
	// compared.)
	ms, err := s.admin.AppsV1().Deployments("kube-system").Get(ctx, "metrics-server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ms.Annotations["herd.dev/kubelet-auth"] != "token" {
		t.Errorf("metrics-server annotations %v, want herd.dev/kubelet-auth=token", ms.Annotations)
	}
	if !equality.Semantic.DeepEqual(ms.Spec, created.Spec) {
		t.Errorf("metrics-server's spec changed:\nbefore %+v\nafter  %+v", created.Spec, ms.Spec)
	}
	s.mark("metrics-server annotated herd.dev/kubelet-auth=token (generation %d -> %d), spec unchanged", created.Generation, ms.Generation)
	var patches []auditRecord
	for _, w := range writesBy(t, s.logPath, responderUser) {
		switch {
		case w.bookkeeping() || w.ObjectRef == nil:
		case w.on("deployments", "metrics-server") && !w.dryRun():
			patches = append(patches, w)
		default:
			t.Errorf("the responder wrote to %s", w)
		}
	}
	if len(patches) != 1 || patches[0].Verb != "patch" {
		t.Errorf("the responder's writes to metrics-server: %v, want exactly one patch", patches)
	}
	cancel()
	s.loops.wg.Wait()
	tally := s.loops.tally("tokenreview")
	t.Logf("TokenReviews: %+v", tally)
	if tally.Errors > 0 || tally.Codes[http.StatusCreated] != tally.Requests {
		t.Errorf("TokenReviews %+v, want every one created (201)", tally)
	}
}
