package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jsonnet "github.com/google/go-jsonnet"
	"github.com/prometheus/alertmanager/notify/webhook"
	"github.com/prometheus/alertmanager/template"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/exporter-toolkit/web"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/apiservices"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/internal/kube"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/proc"
	"github.com/herd-k8s/herd/test/promstack"
)

// mixinOverrides shorten the mixin's `for` durations and rate window so the
// alerts fire within seconds. Thresholds keep their production values: the
// scenario is sized to cross them (12 kubelets in a relist loop against
// relistStormMinInstances 10, ~6 relists/s against relistStormMinRate 0.5).
// The responder is not deployed, so its alerts are off, as the README says
// for an exporter-only install.
var mixinOverrides = map[string]any{
	"rateWindow":                 "20s",
	"relistStormFor":             "15s",
	"syncRelistFor":              "5s",
	"staleKubeletFor":            "10s",
	"ghostNodeClientFor":         "10s",
	"tooLargeResourceVersionFor": "10s",
	"apiserviceUnavailableFor":   "10s",
	"apiserviceSlowFor":          "10s",
	"apiserviceFlapFor":          "10s",
	"tokenReviewStormFor":        "10s",
	"metricsServerTokenAuthFor":  "10s",
	"auditStalledFor":            "10s",
	"auditRejectedFor":           "10s",
	"herdResponderEnabled":       false,
}

const (
	// mixinStormNodes kubelets relist their pods every mixinStormEvery: 6
	// relists/s in all, each instance far above accounting.relistThreshold
	// in the window, and below relistStormHighRate (10/s), so the storm is
	// caught by the instance count, not by the rate alone.
	mixinStormNodes = 12
	mixinStormEvery = 2 * time.Second
	// mixinWindow is the exporter's accounting window.
	mixinWindow  = 20 * time.Second
	mixinJob     = "herd-exporter"
	mixinGhost   = "old-worker-7"
	mixinGhostIP = "10.99.0.7"
)

// mixinAuditPolicy audits every kubelet and kube-proxy: the node-side
// clients of the scenario.
const mixinAuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:nodes"]
- level: Metadata
  users: ["system:serviceaccount:kube-system:kube-proxy"]
- level: None
`

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

// mixinRendered is the mixin rendered with the test's overrides.
type mixinRendered struct {
	Alerts    json.RawMessage `json:"alerts"`
	Rules     json.RawMessage `json:"rules"`
	Dashboard map[string]any  `json:"dashboard"`
	Config    map[string]any  `json:"config"`
}

type mixinRuleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert  string            `json:"alert"`
			Record string            `json:"record"`
			Expr   string            `json:"expr"`
			For    string            `json:"for"`
			Labels map[string]string `json:"labels"`
		} `json:"rules"`
	} `json:"groups"`
}

// renderMixinWith evaluates rules/mixin.libsonnet in process with overrides
// mixed into _config, as a user vendoring the mixin would; the production
// files stay untouched. Rule files are JSON, which Prometheus reads as YAML.
func renderMixinWith(t *testing.T, overrides map[string]any) mixinRendered {
	t.Helper()
	vm := jsonnet.MakeVM()
	rulesDir := filepath.Join("..", "..", "rules")
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{rulesDir, filepath.Join(rulesDir, "vendor")}})
	b, err := json.Marshal(overrides)
	if err != nil {
		t.Fatal(err)
	}
	vm.ExtCode("overrides", string(b))
	out, err := vm.EvaluateAnonymousSnippet("mixin_e2e.jsonnet", `
local m = (import 'mixin.libsonnet') + { _config+:: std.extVar('overrides') };
{
  alerts: m.prometheusAlerts,
  rules: m.prometheusRules,
  dashboard: m.grafanaDashboards['herd.json'],
  config: m._config,
}`)
	if err != nil {
		t.Fatalf("render rules/mixin.libsonnet: %v", err)
	}
	var r mixinRendered
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("decode rendered mixin: %v", err)
	}
	var alerts mixinRuleFile
	if err := json.Unmarshal(r.Alerts, &alerts); err != nil {
		t.Fatalf("decode rendered alerts: %v", err)
	}
	// The overrides reached the rules.
	found := false
	for _, g := range alerts.Groups {
		for _, rule := range g.Rules {
			if rule.Alert == "HerdRelistStorm" {
				found = true
				if rule.For != overrides["relistStormFor"] || !strings.Contains(rule.Expr, "herd:relists_by_resource:rate"+overrides["rateWindow"].(string)) {
					t.Fatalf("HerdRelistStorm rendered without the overrides: for %q, expr %s", rule.For, rule.Expr)
				}
			}
			if strings.HasPrefix(rule.Alert, "HerdResponder") {
				t.Fatalf("%s rendered with herdResponderEnabled=false", rule.Alert)
			}
		}
	}
	if !found {
		t.Fatal("rendered alerts have no HerdRelistStorm")
	}
	return r
}

// startExporterOnAudit is startExporterWith with the /audit listener on a
// given address: the apiserver's audit webhook URL is fixed when it starts,
// before the exporter (which needs the apiserver's credentials) can.
func startExporterOnAudit(t *testing.T, cfg config.Config, opts exporter.Options, auditAddr string) *runningExporter {
	t.Helper()
	webPort, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	webAddrs := []string{"127.0.0.1:" + strconv.Itoa(webPort)}
	auditAddrs := []string{auditAddr}
	off, empty := false, ""
	opts.Config = cfg
	opts.Web = web.FlagConfig{WebListenAddresses: &webAddrs, WebSystemdSocket: &off, WebConfigFile: &empty}
	opts.Audit = web.FlagConfig{WebListenAddresses: &auditAddrs, WebSystemdSocket: &off, WebConfigFile: &empty}
	e, err := exporter.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("exporter: %v", err)
		}
	})
	r := &runningExporter{Exporter: e, MetricsURL: "http://" + webAddrs[0], AuditURL: "http://" + auditAddr + "/audit"}
	waitFor(t, 10*time.Second, "the exporter to listen", func() bool {
		resp, err := http.Get(r.MetricsURL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return r
}

// mixinSyncBuffer is a goroutine-safe log sink.
type mixinSyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *mixinSyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *mixinSyncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := strings.Split(strings.TrimRight(s.b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// mixinDiscovery is an aggregated API server on loopback that serves
// discovery for one group/version to the aggregator (front-proxy client
// certificate), as metrics-server does.
func mixinDiscovery(t *testing.T, cp *controlplane.ControlPlane, groupVersion string) *httptest.Server {
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
		if r.URL.Path != "/apis/"+groupVersion {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":%q,"resources":[{"name":"nodes","singularName":"","namespaced":false,"kind":"NodeMetrics","verbs":["get","list"]}]}`, groupVersion)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// mixinLoops runs request loops in the background and keeps their tallies.
type mixinLoops struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	tallies map[string]nodesim.Tally
}

func (l *mixinLoops) run(ctx context.Context, name string, every time.Duration, fn func(context.Context) (nodesim.Result, error)) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tally, _ := nodesim.Repeat(ctx, every, 0, fn)
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.tallies == nil {
			l.tallies = map[string]nodesim.Tally{}
		}
		prev := l.tallies[name]
		if prev.Codes == nil {
			prev.Codes = map[int]int{}
		}
		prev.Requests += tally.Requests
		prev.Errors += tally.Errors
		for c, n := range tally.Codes {
			prev.Codes[c] += n
		}
		l.tallies[name] = prev
	}()
}

func (l *mixinLoops) tally(name string) nodesim.Tally {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tallies[name]
}

// mixinStack is what the diagnostics read.
type mixinStack struct {
	prom   *promstack.Prometheus
	am     *promstack.Alertmanager
	recv   *promstack.Receiver
	herd   *runningExporter
	logs   *mixinSyncBuffer
	window string
}

// dump prints what explains a failure: Prometheus' alerts, Alertmanager's,
// the notifications received, and the series behind the alerts.
func (s *mixinStack) dump(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if res, err := s.prom.API.Alerts(ctx); err != nil {
		t.Logf("prometheus /api/v1/alerts: %v", err)
	} else {
		b, _ := json.MarshalIndent(res.Alerts, "", "  ")
		t.Logf("prometheus /api/v1/alerts:\n%s", b)
	}
	if s.am != nil {
		if alerts, err := s.am.Alerts(ctx); err != nil {
			t.Logf("alertmanager alerts: %v", err)
		} else {
			for _, a := range alerts {
				t.Logf("alertmanager: %v %s", a.Labels, a.Status.State)
			}
		}
	}
	for _, m := range s.recv.Messages() {
		for _, a := range m.Alerts {
			t.Logf("received: %s %v", a.Status, a.Labels)
		}
	}
	for _, q := range []string{
		`up`,
		`herd:relists_by_resource:rate` + s.window,
		`herd:relisting_instances:sum`,
		`herd:relists_by_resource:median1d`,
		`herd:ghost_instance:max`,
		`herd:stale_kubelet:max`,
		`herd:too_large_resource_version:rate` + s.window,
		`herd:apiservice_available:max`,
		`herd:metrics_server_kubelet_auth:max`,
		`herd:audit_events:rate` + s.window,
		`herd:audit_requests:rate` + s.window,
		`herd_cluster_nodes`,
		`ALERTS`,
	} {
		vec, err := s.prom.Query(ctx, q)
		t.Logf("query %s: %v %v", q, vec, err)
	}
	if s.herd != nil {
		t.Logf("herd exporter log tail:\n%s", s.logs.tail(40))
	}
}

// waitNotified waits until the receiver got a notification holding alert
// name with status ("firing" or "resolved") and every label in match.
func (s *mixinStack) waitNotified(t *testing.T, ctx context.Context, timeout time.Duration, name, status string, match map[string]string) template.Alert {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var got template.Alert
	_, err := s.recv.WaitFor(wctx, func(m webhook.Message) bool {
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

// TestMixinOnRealStack is issue 6's acceptance test: the mixin's rules,
// rendered with short `for`s, run in a real Prometheus scraping an in-process
// herd exporter that watches a real kube-apiserver and receives its audit
// webhook; Alertmanager delivers the alerts to a webhook receiver. A kubelet
// relist storm, a ghost kubelet and an aggregated API without endpoints must
// each be delivered with the labels the rules promise, the storm must resolve
// once it stops, and every dashboard panel's queries must run against that
// Prometheus and return data (bar the responder's).
func TestMixinOnRealStack(t *testing.T) {
	start := time.Now()
	since := func() string { return time.Since(start).Round(100 * time.Millisecond).String() }
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	mixin := renderMixinWith(t, mixinOverrides)
	window := mixinOverrides["rateWindow"].(string)
	if sel := mixin.Config["herdExporterSelector"]; sel != `job="`+mixinJob+`"` {
		t.Fatalf("herdExporterSelector is %v; the scrape job below is %q", sel, mixinJob)
	}

	// The audit webhook URL is fixed when the apiserver starts; the exporter
	// needs the apiserver's credentials. Reserve the /audit port until the
	// exporter binds it (the policy audits only the simulated clients, so
	// nothing is sent before they start).
	reserved, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	auditAddr := reserved.Addr().String()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "audit.log")

	nodes := []string{mixinGhost}
	for i := 1; i <= mixinStormNodes; i++ {
		nodes = append(nodes, fmt.Sprintf("node-%d", i))
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{
		Nodes:           nodes,
		Identities:      map[string]controlplane.Identity{"herd": {User: herdUser, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:herd"}}},
		AuditPolicy:     mixinAuditPolicy,
		AuditWebhookURL: "http://" + auditAddr + "/audit",
		AuditLogPath:    logPath,
	})
	if err != nil {
		reserved.Close()
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	t.Logf("%s: control plane up", since())
	admin := cp.Client(controlplane.Admin)
	applyManifest(ctx, t, admin, "../../manifests/rbac/exporter.yaml")
	for i := 1; i <= mixinStormNodes; i++ {
		createNode(ctx, t, admin, fmt.Sprintf("node-%d", i), fmt.Sprintf("10.0.0.%d", i))
	}
	createMixinMetricsServer(ctx, t, admin)

	// Incident 001: calico-apiserver's APIService with no endpoints at all.
	calico := controlplane.AggregatedAPI{Group: "projectcalico.org", Version: "v3", Namespace: "calico-apiserver", Service: "calico-api"}
	if err := cp.RegisterAggregatedAPI(ctx, calico); err != nil {
		t.Fatal(err)
	}
	// A healthy metrics-server APIService, so the backend and latency panels
	// have a backend to show.
	ms := mixinDiscovery(t, cp, "metrics.k8s.io/v1beta1")
	metricsAPI := controlplane.AggregatedAPI{
		Group: "metrics.k8s.io", Version: "v1beta1", Namespace: "kube-system", Service: "metrics-server",
		Backends: []controlplane.Backend{{Addr: ms.Listener.Addr().String(), Pod: "metrics-server-5f6d7c-x2k9q", Node: "node-1"}},
	}
	if err := cp.RegisterAggregatedAPI(ctx, metricsAPI); err != nil {
		t.Fatal(err)
	}

	// herd: the audit webhook, and the apiserver's audit log as a second
	// feed (the duplicates are dropped by auditID), watching the cluster as
	// its service account under the shipped RBAC, with a short window and
	// ghost grace and fast APIService probes.
	cfg := config.Default()
	cfg.Accounting.Window = model.Duration(mixinWindow)
	logs := &mixinSyncBuffer{}
	reserved.Close()
	herd := startExporterOnAudit(t, cfg, exporter.Options{
		AuditInsecure: true,
		LogFiles:      []string{logPath},
		Kube:          kube.Tune(cp.Config("herd"), "exporter"),
		GhostGrace:    time.Second,
		APIServices:   apiservices.Options{ProbeInterval: 2 * time.Second},
		Logger:        slog.New(slog.NewTextHandler(logs, nil)),
	}, auditAddr)
	waitFor(t, 60*time.Second, "herd's /readyz (informers synced under the shipped RBAC)", func() bool {
		resp, err := http.Get(herd.MetricsURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	t.Logf("%s: herd exporter ready", since())

	recv := promstack.NewReceiver(t)
	am := promstack.StartAlertmanager(t, recv.AlertmanagerConfig())
	prom := promstack.StartPrometheus(t, promstack.PromOptions{
		RuleFiles: map[string]string{
			"herd_alerts.json": string(mixin.Alerts),
			"herd_rules.json":  string(mixin.Rules),
		},
		ScrapeConfigs:      []promstack.ScrapeConfig{{JobName: mixinJob, Targets: []string{strings.TrimPrefix(herd.MetricsURL, "http://")}}},
		ScrapeInterval:     time.Second,
		EvaluationInterval: time.Second,
		AlertmanagerURLs:   []string{am.URL},
	})
	stack := &mixinStack{prom: prom, am: am, recv: recv, herd: herd, logs: logs, window: window}
	t.Cleanup(func() {
		if t.Failed() {
			stack.dump(t)
		}
	})
	t.Logf("%s: prometheus and alertmanager up", since())

	// The scenario.
	var loops mixinLoops
	defer loops.wg.Wait()
	defer cancel()
	kubelets := make([]*nodesim.Client, mixinStormNodes)
	for i := range kubelets {
		node := fmt.Sprintf("node-%d", i+1)
		kubelets[i] = newClient(t, func() (*nodesim.Client, error) {
			return nodesim.NewKubelet(cp, node, nodesim.Options{SourceIP: fmt.Sprintf("10.0.0.%d", i+1)})
		})
	}
	ghost := newClient(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubelet(cp, mixinGhost, nodesim.Options{SourceIP: mixinGhostIP})
	})
	proxy := newClient(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubeProxy(cp, nodesim.Options{SourceIP: "10.0.0.1"})
	})

	// 1. The relist storm: every kubelet relists its pods with a consistent
	// (quorum) LIST every 2 s. Being pod relists in a loop, it also makes
	// every storming kubelet a stale kubelet (relist_loop).
	stormCtx, stopStorm := context.WithCancel(ctx)
	defer stopStorm()
	for i, k := range kubelets {
		pods := nodesim.Pods.OnNode(fmt.Sprintf("node-%d", i+1))
		loops.run(stormCtx, "storm", mixinStormEvery, func(ctx context.Context) (nodesim.Result, error) {
			return k.ListConsistent(ctx, pods)
		})
	}
	stormStart := time.Now()
	// 2. The ghost kubelet of incident 000: no Node, an address no Node
	// has, looping on too-large-RV runtimeclass LISTs (~3 s each).
	loops.run(ctx, "ghost", time.Second, func(ctx context.Context) (nodesim.Result, error) {
		return ghost.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
	})
	// TokenReviews by two kubelets (a metrics-server in token mode scraping
	// them), and kube-proxy's paginated service LISTs (3 services in pages
	// of 1: 1 relist and 2 continuation pages each), for their panels.
	for _, k := range kubelets[:2] {
		loops.run(ctx, "tokenreview", time.Second, func(ctx context.Context) (nodesim.Result, error) {
			return k.CreateTokenReview(ctx, "metrics-server-token")
		})
	}
	loops.run(ctx, "pages", 3*time.Second, func(ctx context.Context) (nodesim.Result, error) {
		pages, err := proxy.ListPages(ctx, nodesim.Services, 1, nodesim.ListOptions{})
		if len(pages) == 0 {
			return nodesim.Result{}, err
		}
		return pages[len(pages)-1], err
	})

	// The three alerts of the acceptance, delivered by Alertmanager.
	storm := stack.waitNotified(t, ctx, 2*time.Minute, "HerdRelistStorm", "firing",
		map[string]string{"role": "kubelet", "client": "kubelet", "resource": "pods"})
	checkMixinNotification(t, storm, "role", "client", "resource")
	if storm.Labels["severity"] != "critical" {
		t.Errorf("HerdRelistStorm severity %q, want critical", storm.Labels["severity"])
	}
	t.Logf("%s: HerdRelistStorm delivered %s after the storm started: %s", since(), time.Since(stormStart).Round(100*time.Millisecond), storm.Annotations["description"])
	// It fired on the instance count (every storming kubelet is in a relist
	// loop), not on relistStormHighRate.
	sel := `{role="kubelet", client="kubelet", resource="pods"}`
	if vec, err := prom.Query(ctx, `herd:relisting_instances:sum`+sel); err != nil || len(vec) != 1 || vec[0].Value != mixinStormNodes {
		t.Errorf("herd:relisting_instances:sum%s = %v (%v), want %d", sel, vec, err, mixinStormNodes)
	}
	if vec, err := prom.Query(ctx, `herd:relists_by_resource:rate`+window+sel); err != nil || len(vec) != 1 || vec[0].Value >= 10 {
		t.Errorf("herd:relists_by_resource:rate%s%s = %v (%v), want one series under relistStormHighRate (10/s)", window, sel, vec, err)
	}

	ghostAlert := stack.waitNotified(t, ctx, time.Minute, "HerdGhostNodeClient", "firing", map[string]string{
		"role": "kubelet", "client": "kubelet", "identity": "system:node:" + mixinGhost,
		"node": mixinGhost, "source_ip": mixinGhostIP, "reason": "no_such_node",
	})
	checkMixinNotification(t, ghostAlert, "role", "client", "identity", "node", "source_ip", "reason")
	t.Logf("%s: HerdGhostNodeClient delivered: %s", since(), ghostAlert.Annotations["summary"])

	unavailable := stack.waitNotified(t, ctx, time.Minute, "HerdAggregatedAPIUnavailable", "firing", map[string]string{
		"apiservice": calico.Name(), "namespace": "calico-apiserver", "service": "calico-api",
	})
	checkMixinNotification(t, unavailable, "apiservice", "namespace", "service")
	t.Logf("%s: HerdAggregatedAPIUnavailable delivered: %s", since(), unavailable.Annotations["description"])

	// The scenario's other alerts fire in Prometheus too.
	for _, want := range []struct {
		name  string
		match map[string]string
	}{
		{"HerdTooLargeResourceVersion", map[string]string{"role": "kubelet", "client": "kubelet", "resource": "runtimeclasses.node.k8s.io"}},
		{"HerdStaleKubelet", map[string]string{"node": "node-1", "reason": "relist_loop"}},
		{"HerdMetricsServerTokenAuth", map[string]string{"namespace": "kube-system", "deployment": "metrics-server", "mode": "token"}},
	} {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := prom.WaitForAlert(wctx, want.name, v1.AlertStateFiring, want.match)
		wcancel()
		if err != nil {
			t.Errorf("%s did not fire: %v", want.name, err)
		}
	}
	t.Logf("%s: the scenario's other alerts fire", since())

	// 5. The dashboard, during the storm.
	checkMixinDashboard(ctx, t, prom, mixin.Dashboard)
	t.Logf("%s: dashboard queries checked", since())

	// 4. The storm stops; the alert resolves.
	stopStorm()
	stopped := time.Now()
	resolved := stack.waitNotified(t, ctx, 90*time.Second, "HerdRelistStorm", "resolved",
		map[string]string{"role": "kubelet", "client": "kubelet", "resource": "pods"})
	t.Logf("%s: HerdRelistStorm resolved %s after the storm stopped (ends at %s)", since(), time.Since(stopped).Round(100*time.Millisecond), resolved.EndsAt.Format(time.RFC3339))

	// No alert fired that this scenario gives no reason for.
	fired := mixinFiredAlerts(ctx, t, prom)
	t.Logf("alerts that fired: %v", fired)
	// HerdSynchronizedRelist must not mistake this storm (every kubelet relisting
	// every 2 s, a loop) for a synchronized relist.
	for _, name := range []string{"HerdAuditIngestStalled", "HerdAuditEventsRejected", "HerdAggregatedAPISlow", "HerdAggregatedAPIFlapping", "HerdKubeletTokenReviewStorm", "HerdSynchronizedRelist"} {
		if slices.Contains(fired, name) {
			t.Errorf("%s fired; nothing in this scenario should trigger it", name)
		}
	}

	cancel()
	loops.wg.Wait()
	if st := loops.tally("storm"); st.Codes[http.StatusOK] == 0 || st.Errors > 0 {
		t.Errorf("storm LISTs: %+v", st)
	}
	if gt := loops.tally("ghost"); gt.Codes[http.StatusGatewayTimeout] == 0 {
		t.Errorf("ghost LISTs: %+v, want 504 Too large resource version", gt)
	}
	if tr := loops.tally("tokenreview"); tr.Codes[http.StatusCreated] == 0 {
		t.Errorf("TokenReviews: %+v", tr)
	}
	t.Logf("%s: done; storm %+v, ghost %+v, tokenreviews %+v, pages %+v", since(), loops.tally("storm"), loops.tally("ghost"), loops.tally("tokenreview"), loops.tally("pages"))
}

// createMixinMetricsServer creates a metrics-server Deployment without
// --kubelet-client-certificate/--kubelet-client-key: token mode (incident 004).
func createMixinMetricsServer(ctx context.Context, t *testing.T, c kubernetes.Interface) {
	t.Helper()
	labels := map[string]string{"k8s-app": "metrics-server"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-server", Namespace: "kube-system", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "metrics-server", Image: "registry.k8s.io/metrics-server/metrics-server:v0.7.2",
					Args: []string{"--secure-port=10250", "--kubelet-preferred-address-types=InternalIP", "--kubelet-use-node-status-port"},
				}}},
			},
		},
	}
	if _, err := c.AppsV1().Deployments("kube-system").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
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

// mixinTemplateVar matches Grafana variables ($name, ${name}, ${name:fmt});
// $1 (a label_replace back-reference) is not one.
var mixinTemplateVar = regexp.MustCompile(`\$(?:\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}|([a-zA-Z_][a-zA-Z0-9_]*))`)

var mixinLabelValues = regexp.MustCompile(`^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// mixinSubstitute replaces Grafana's variables in expr with vars.
func mixinSubstitute(expr string, vars map[string]string) (string, error) {
	var unknown []string
	out := mixinTemplateVar.ReplaceAllStringFunc(expr, func(s string) string {
		m := mixinTemplateVar.FindStringSubmatch(s)
		v, ok := vars[m[1]+m[2]]
		if !ok {
			unknown = append(unknown, s)
		}
		return v
	})
	if unknown != nil {
		return "", fmt.Errorf("unknown variables %v in %q", unknown, expr)
	}
	return out, nil
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
	for _, v := range mixinList(d["templating"], "list") {
		name, _ := v["name"].(string)
		if v["type"] != "query" {
			continue
		}
		def, _ := v["definition"].(string)
		m := mixinLabelValues.FindStringSubmatch(def)
		if m == nil {
			t.Fatalf("variable %s: %q is not label_values(selector, label)", name, def)
		}
		sel, err := mixinSubstitute(m[1], vars)
		if err != nil {
			t.Fatalf("variable %s: %v", name, err)
		}
		values, _, _, err := prom.API.LabelValues(ctx, m[2], []string{sel}, time.Now().Add(-time.Hour), time.Now())
		if err != nil {
			t.Errorf("variable %s: label_values(%s, %s): %v", name, sel, m[2], err)
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
		t.Logf("variable %s: label_values(%s, %s) = %v; using %q", name, sel, m[2], values, vars[name])
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

	for _, a := range mixinList(d["annotations"], "list") {
		if expr, ok := a["expr"].(string); ok {
			if _, err := run(fmt.Sprintf("annotation %q", a["name"]), expr); err != nil {
				res.errs = append(res.errs, fmt.Sprintf("annotation %q: %v", a["name"], err))
			}
		}
	}
	seen := map[string]bool{}
	for _, p := range mixinFlatten(mixinList(d, "panels")) {
		if p["type"] == "row" {
			continue
		}
		title, _ := p["title"].(string)
		seen[title] = true
		res.panels++
		has := false
		var empty []string
		for _, tg := range mixinList(p, "targets") {
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

// flatten returns the panels with those nested in rows.
func mixinFlatten(panels []map[string]any) []map[string]any {
	var out []map[string]any
	for _, p := range panels {
		out = append(out, p)
		out = append(out, mixinFlatten(mixinList(p, "panels"))...)
	}
	return out
}

func mixinList(v any, key string) []map[string]any {
	m, _ := v.(map[string]any)
	items, _ := m[key].([]any)
	out := make([]map[string]any, 0, len(items))
	for _, it := range items {
		if o, ok := it.(map[string]any); ok {
			out = append(out, o)
		}
	}
	return out
}
