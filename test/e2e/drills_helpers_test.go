package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/notify/webhook"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/apiservices"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/internal/kube"
	cpfiles "github.com/herd-k8s/herd/manifests/control-plane"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/promstack"
)

// The incident drills (drills_test.go) share one stack: a real control plane
// with the shipped audit policy, an in-process herd exporter on its audit
// webhook, Prometheus with the mixin (short `for`s and windows), Alertmanager
// 0.25 delivering through a recording tap and a leaderService to one acting
// `herd responder` binary.

// drillNodeIP is the InternalIP of node-i in every drill.
func drillNodeIP(i int) string { return fmt.Sprintf("10.0.0.%d", i) }

// drillAuditPolicy is the shipped audit policy (manifests/control-plane)
// with one rule in front that audits the responder's own requests, so that
// a drill can check from the apiserver's log what herd wrote. Everything
// herd's exporter receives is what the shipped policy sends.
func drillAuditPolicy(t *testing.T) string {
	t.Helper()
	p, err := cpfiles.AuditPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	const marker = "\nrules:\n"
	if bytes.Count(p, []byte(marker)) != 1 {
		t.Fatalf("the shipped audit policy has %d %q lines, want 1", bytes.Count(p, []byte(marker)), strings.TrimSpace(marker))
	}
	// Writes only: its reads (FlowSchema LISTs every sweep) would reach
	// herd's exporter as relists of an "other" client.
	return strings.Replace(string(p), marker, marker+"- level: Metadata\n  verbs: [create, update, patch, delete, deletecollection]\n  users: [\""+responderUser+"\"]\n", 1)
}

// drillSetup says what a drill's stack holds besides the common parts.
type drillSetup struct {
	// Nodes creates Node objects node-1..node-N with InternalIP 10.0.0.i;
	// each has a kubelet identity.
	Nodes int
	// Ghosts are kubelet identities (system:node:NAME) without a Node.
	Ghosts []string
	// Overrides are mixin _config overrides on top of mixinOverrides.
	Overrides map[string]any
	// Rules is a rule file of the drill's own (YAML), e.g. a
	// KubeAPIErrorBudgetBurn over the apiserver's metrics.
	Rules string
	// ScrapeAPIServer makes Prometheus scrape kube-apiserver's /metrics
	// (job "apiserver", https, the admin token, the serving CA).
	ScrapeAPIServer bool
	// Objects runs after the Nodes exist and before herd starts: the
	// drill's cluster objects (APIServices, metrics-server, pods).
	Objects func(ctx context.Context, s *drillStack)
}

// drillStack is one drill's running stack.
type drillStack struct {
	t       *testing.T
	start   time.Time
	cp      *controlplane.ControlPlane
	admin   kubernetes.Interface
	dir     string
	logPath string
	herd    *runningExporter
	logs    *mixinSyncBuffer
	prom    *promstack.Prometheus
	am      *promstack.Alertmanager
	tap     *drillTap
	svc     *leaderService
	resp    *responderProc
	loops   mixinLoops

	mu    sync.Mutex
	marks []drillEvent
}

// drillEvent is one line of a drill's timeline.
type drillEvent struct {
	at   time.Time
	what string
}

// since is the drill's clock.
func (s *drillStack) since() string {
	return time.Since(s.start).Round(100 * time.Millisecond).String()
}

// mark logs a step now and keeps it for the timeline.
func (s *drillStack) mark(format string, args ...any) {
	s.t.Helper()
	what := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.marks = append(s.marks, drillEvent{time.Now(), what})
	s.mu.Unlock()
	s.t.Logf("%s: %s", s.since(), what)
}

// logf logs with the drill's clock, without a timeline entry (for what
// the timeline already shows: deliveries and decisions).
func (s *drillStack) logf(format string, args ...any) {
	s.t.Helper()
	s.t.Logf("%s: %s", s.since(), fmt.Sprintf(format, args...))
}

// withSourceIP makes cfg's requests carry X-Forwarded-For: ip, which the
// apiserver reports as their source IP (see nodesim.Options.SourceIP).
func withSourceIP(cfg *rest.Config, ip string) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			req = req.Clone(req.Context())
			req.Header.Set("X-Forwarded-For", ip)
			return rt.RoundTrip(req)
		})
	})
	return cfg
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// drillResponderConfig acts (dryRun false) with the default routes and
// guards; isolate's hold-down is short so a drill can watch it end.
func drillResponderConfig(promURL string) string {
	return fmt.Sprintf(`dryRun: false
prometheus: {url: %q, timeout: 5s, rateWindow: %s}
actions:
  isolate: {ttl: 30m, holdDown: 5s}
  quarantine: {ttl: 30m}
`, promURL, mixinOverrides["rateWindow"])
}

// startDrill brings the stack up; the drill's load starts afterwards.
func startDrill(ctx context.Context, t *testing.T, setup drillSetup) *drillStack {
	t.Helper()
	s := &drillStack{t: t, start: time.Now(), dir: t.TempDir()}
	herdBinary(t) // build before the drill's clock matters
	s.logPath = filepath.Join(s.dir, "audit.log")
	overrides := maps.Clone(mixinOverrides)
	maps.Copy(overrides, setup.Overrides)
	mixin := renderMixinWith(t, overrides)

	// The audit webhook URL is fixed when the apiserver starts; the
	// exporter needs the apiserver's credentials. Reserve the port.
	reserved, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	auditAddr := reserved.Addr().String()
	identities := slices.Clone(setup.Ghosts)
	for i := 1; i <= setup.Nodes; i++ {
		identities = append(identities, fmt.Sprintf("node-%d", i))
	}
	s.cp, err = controlplane.Start(ctx, controlplane.Options{
		Nodes: identities,
		Identities: map[string]controlplane.Identity{
			"herd":           {User: herdUser, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:herd"}},
			"herd-responder": {User: responderUser, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:herd"}},
		},
		AuditPolicy:     drillAuditPolicy(t),
		AuditWebhookURL: "http://" + auditAddr + "/audit",
		AuditLogPath:    s.logPath,
	})
	if err != nil {
		reserved.Close()
		t.Fatal(err)
	}
	t.Cleanup(s.cp.Stop)
	s.admin = s.cp.Client(controlplane.Admin)
	applyManifest(ctx, t, s.admin, "../../manifests/rbac/exporter.yaml")
	applyManifest(ctx, t, s.admin, "../../manifests/rbac/responder.yaml")
	for i := 1; i <= setup.Nodes; i++ {
		createNode(ctx, t, s.admin, fmt.Sprintf("node-%d", i), drillNodeIP(i))
	}
	if setup.Objects != nil {
		setup.Objects(ctx, s)
	}

	cfg := config.Default()
	cfg.Accounting.Window = model.Duration(mixinWindow)
	s.logs = &mixinSyncBuffer{}
	reserved.Close()
	s.herd = startExporterOnAudit(t, cfg, exporter.Options{
		AuditInsecure: true,
		Kube:          kube.Tune(s.cp.Config("herd"), "exporter"),
		GhostGrace:    time.Second,
		APIServices:   apiservices.Options{ProbeInterval: 2 * time.Second},
		Logger:        slog.New(slog.NewTextHandler(s.logs, nil)),
	}, auditAddr)
	waitFor(t, 60*time.Second, "herd exporter /readyz", func() bool {
		resp, err := http.Get(s.herd.MetricsURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	s.svc = newLeaderService(t)
	s.tap = newDrillTap(t, s.svc.URL+"/alerts")
	s.am = promstack.StartAlertmanager(t, fmt.Sprintf(`route:
  receiver: herd
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 20s
receivers:
  - name: herd
    webhook_configs:
      - url: %q
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization:
            credentials: alertmanager-token-0123456789
`, s.tap.URL))
	rules := map[string]string{
		"herd_alerts.json": string(mixin.Alerts),
		"herd_rules.json":  string(mixin.Rules),
	}
	if setup.Rules != "" {
		rules["drill.yml"] = setup.Rules
	}
	scrape := []promstack.ScrapeConfig{{JobName: mixinJob, Targets: []string{strings.TrimPrefix(s.herd.MetricsURL, "http://")}}}
	if setup.ScrapeAPIServer {
		ca := filepath.Join(s.dir, "apiserver-ca.crt")
		write(t, ca, string(s.cp.Config(controlplane.Admin).TLSClientConfig.CAData))
		scrape = append(scrape, promstack.ScrapeConfig{
			JobName: "apiserver", Targets: []string{strings.TrimPrefix(s.cp.URL, "https://")},
			Scheme: "https", BearerToken: s.cp.Token(controlplane.Admin), CAFile: ca,
			// kube-apiserver's /metrics is large: every 2 s is enough for
			// burn-rate windows of 10 s and more.
			ScrapeInterval: 2 * time.Second,
		})
	}
	s.prom = promstack.StartPrometheus(t, promstack.PromOptions{
		RuleFiles:          rules,
		ScrapeConfigs:      scrape,
		ScrapeInterval:     time.Second,
		EvaluationInterval: time.Second,
		AlertmanagerURLs:   []string{s.am.URL},
	})
	s.resp = startResponder(t, s.cp, s.dir, "drill", responderSetup{Config: drillResponderConfig(s.prom.URL), LeaseDuration: respLease})
	s.svc.set(s.resp)
	waitCtx(ctx, t, 30*time.Second, "the responder to lead", s.resp.ready)
	t.Cleanup(func() {
		s.timeline()
		if t.Failed() {
			s.dump()
		}
	})
	s.mark("stack up: control plane, herd exporter, Prometheus, Alertmanager, responder leading")
	return s
}

// timeline prints what happened in order: the drill's marks, every first
// delivery of an alert (per alert name, labels and status) from
// Alertmanager, and the responder's decisions and triage reports.
func (s *drillStack) timeline() {
	t := s.t
	s.mu.Lock()
	evs := slices.Clone(s.marks)
	s.mu.Unlock()
	seen := map[string]bool{}
	for _, d := range s.tap.deliveries() {
		for _, a := range d.msg.Alerts {
			key := a.Status + " " + a.Labels["alertname"] + fmt.Sprint(a.Labels)
			if seen[key] {
				continue
			}
			seen[key] = true
			evs = append(evs, drillEvent{d.at, fmt.Sprintf("Alertmanager delivered %s %s %v", a.Labels["alertname"], a.Status, drillLabels(a.Labels))})
		}
	}
	for _, d := range s.resp.decisions(t) {
		what := fmt.Sprintf("responder: %s %s on %s -> %s", d.Action, d.Status, d.Alert, d.Result)
		if d.Target != "" {
			what += " (" + d.Target + ")"
		}
		if d.Guard != "" {
			what += " guard " + d.Guard
		}
		evs = append(evs, drillEvent{d.Time, what + ": " + truncateString(d.Reason, 240)})
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %8s  %s\n", e.at.Sub(s.start).Round(100*time.Millisecond), e.what)
	}
	t.Logf("timeline (from the start of the drill):\n%s", b.String())
}

// drillLabels prints an alert's labels without alertname, job and severity.
func drillLabels(l map[string]string) map[string]string {
	out := maps.Clone(l)
	for _, k := range []string{"alertname", "job", "severity"} {
		delete(out, k)
	}
	return out
}

func truncateString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// dump explains a failure: Prometheus' alerts and the exporter's log.
func (s *drillStack) dump() {
	t := s.t
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if res, err := s.prom.API.Alerts(ctx); err != nil {
		t.Logf("prometheus /api/v1/alerts: %v", err)
	} else {
		for _, a := range res.Alerts {
			t.Logf("prometheus alert: %s %v since %s", a.State, a.Labels, a.ActiveAt.Format(time.RFC3339))
		}
	}
	for _, r := range s.triageReports() {
		b, _ := json.Marshal(r)
		t.Logf("triage report: %s", b)
	}
	t.Logf("herd exporter log tail:\n%s", s.logs.tail(30))
}

// drillTap records every Alertmanager notification, with its arrival time,
// and forwards it to the responder's leaderService.
type drillTap struct {
	*httptest.Server
	next string
	mu   sync.Mutex
	got  []tapDelivery
}

type tapDelivery struct {
	at   time.Time
	msg  webhook.Message
	code int
}

func newDrillTap(t *testing.T, next string) *drillTap {
	tap := &drillTap{next: next}
	tap.Server = httptest.NewServer(http.HandlerFunc(tap.serve))
	t.Cleanup(tap.Close)
	return tap
}

func (tap *drillTap) serve(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg webhook.Message
	_ = json.Unmarshal(body, &msg) // the responder judges the payload
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, tap.next, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	code := http.StatusBadGateway
	if err == nil {
		code = resp.StatusCode
		w.WriteHeader(code)
		io.Copy(w, resp.Body)
		resp.Body.Close()
	} else {
		http.Error(w, err.Error(), code)
	}
	tap.mu.Lock()
	tap.got = append(tap.got, tapDelivery{at: at, msg: msg, code: code})
	tap.mu.Unlock()
}

func (tap *drillTap) deliveries() []tapDelivery {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return slices.Clone(tap.got)
}

// firstDelivery is when Alertmanager first delivered alert name with status
// and every label in match (zero time: not yet).
func (tap *drillTap) firstDelivery(name, status string, match map[string]string) (time.Time, map[string]string) {
	for _, d := range tap.deliveries() {
		for _, a := range d.msg.Alerts {
			if a.Labels["alertname"] != name || a.Status != status {
				continue
			}
			ok := true
			for k, v := range match {
				ok = ok && a.Labels[k] == v
			}
			if ok {
				return d.at, a.Labels
			}
		}
	}
	return time.Time{}, nil
}

// waitDelivered waits until Alertmanager delivered alert name (firing) with
// the labels in match to the responder, marks it and returns its labels.
func (s *drillStack) waitDelivered(ctx context.Context, timeout time.Duration, name string, match map[string]string) map[string]string {
	s.t.Helper()
	var labels map[string]string
	var at time.Time
	waitCtx(ctx, s.t, timeout, "Alertmanager to deliver "+name+fmt.Sprint(match), func() bool {
		at, labels = s.tap.firstDelivery(name, "firing", match)
		return labels != nil
	})
	s.logf("%s delivered to the responder (at %s) %v", name, at.Sub(s.start).Round(100*time.Millisecond), drillLabels(labels))
	return labels
}

// waitDecision waits for a responder decision that pred accepts and
// returns it.
func (s *drillStack) waitDecision(ctx context.Context, timeout time.Duration, what string, pred func(responderDecision) bool) responderDecision {
	s.t.Helper()
	var got responderDecision
	waitCtx(ctx, s.t, timeout, what, func() bool {
		ds := matching(s.resp.decisions(s.t), pred)
		if len(ds) == 0 {
			return false
		}
		got = ds[0]
		return true
	})
	return got
}

// triageFinding and triageReport are /debug/triage's view.
type triageFinding struct {
	Pattern     string            `json:"pattern"`
	Score       float64           `json:"score"`
	Summary     string            `json:"summary"`
	Query       string            `json:"query"`
	Value       float64           `json:"value"`
	Next        string            `json:"next"`
	Remediation string            `json:"remediation"`
	Labels      map[string]string `json:"labels"`
}

type triageReport struct {
	Time     time.Time         `json:"time"`
	Alert    string            `json:"alert"`
	Labels   map[string]string `json:"labels"`
	Findings []triageFinding   `json:"findings"`
	Errors   []string          `json:"errors"`
}

func (s *drillStack) triageReports() []triageReport {
	resp, err := http.Get(s.resp.URL + "/debug/triage")
	if err != nil {
		s.t.Logf("GET /debug/triage: %v", err)
		return nil
	}
	defer resp.Body.Close()
	var page struct {
		Reports []triageReport `json:"reports"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		s.t.Errorf("decode /debug/triage: %v", err)
	}
	return page.Reports
}

// logFindings prints a triage report's ranking.
func (s *drillStack) logFindings(r triageReport) {
	var b strings.Builder
	for i, f := range r.Findings {
		fmt.Fprintf(&b, "  %d. [%s] score %.2f: %s (next: %s)\n", i+1, f.Pattern, f.Score, f.Summary, f.Next)
	}
	s.t.Logf("triage of %s %v at %s:\n%s", r.Alert, drillLabels(r.Labels), r.Time.Sub(s.start).Round(100*time.Millisecond), b.String())
}

// query returns the value of a single-sample instant query (ok false when
// the result is empty).
func (s *drillStack) query(ctx context.Context, q string) (float64, bool) {
	s.t.Helper()
	vec, err := s.prom.Query(ctx, q)
	if err != nil {
		s.t.Errorf("%v", err)
		return 0, false
	}
	if len(vec) == 0 {
		return 0, false
	}
	sum := 0.0
	for _, v := range vec {
		sum += float64(v.Value)
	}
	return sum, true
}

// postAlert hands an alert to Alertmanager's API, as a Prometheus would:
// Alertmanager then routes and delivers it like any other.
func (s *drillStack) postAlert(ctx context.Context, labels, annotations map[string]string) {
	s.t.Helper()
	body, _ := json.Marshal([]map[string]any{{
		"labels": labels, "annotations": annotations,
		"startsAt":     time.Now().UTC().Format(time.RFC3339),
		"endsAt":       time.Now().Add(10 * time.Minute).UTC().Format(time.RFC3339),
		"generatorURL": "http://drill.test/" + labels["alertname"],
	}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.am.URL+"/api/v2/alerts", bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("POST alertmanager /api/v2/alerts: %v", err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("POST alertmanager /api/v2/alerts: %s: %s", resp.Status, msg)
	}
}
