package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/proc"
	"github.com/herd-k8s/herd/test/stack"
)

// The incident drills (drill0*_test.go) share one kind of stack: a real
// control plane with the shipped audit policy, an in-process herd exporter
// on its audit webhook, Prometheus with the mixin (short `for`s and
// windows), Alertmanager 0.25 delivering through a recording tap and a
// leaderService to one acting `herd responder` binary. Each drill is split
// into the steps of its incident's chain: what the apiserver suffers, what
// herd sees and alerts on, what the responder decides, what it changes and
// what it leaves alone.

// drillAuditPolicy is the shipped audit policy with the responder's
// writes audited (stack.ResponderWritesAuditPolicy).
func drillAuditPolicy(t *testing.T) string {
	t.Helper()
	p, err := stack.ResponderWritesAuditPolicy()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// drillSetup says what a drill's stack holds besides the common parts.
type drillSetup struct {
	// Nodes creates Nodes node-1..node-N (stack.NodeName, stack.NodeIP);
	// each has a kubelet identity.
	Nodes int
	// Ghosts are kubelet identities (system:node:NAME) without a Node.
	Ghosts []string
	// Overrides are mixin _config overrides on top of mixinOverrides.
	Overrides map[string]any
	// Rules is a rule file of the drill's own (YAML), e.g. a
	// KubeAPIErrorBudgetBurn over the apiserver's metrics.
	Rules string
	// ScrapeAPIServer makes Prometheus scrape kube-apiserver's /metrics.
	ScrapeAPIServer bool
	// Objects runs after the Nodes exist and before herd starts: the
	// drill's cluster objects (APIServices, metrics-server, pods).
	Objects func(ctx context.Context, s *stack.Stack) error
	// NoAuditWebhook sends herd no audit event at all (the apiserver
	// still writes its log: the independent count).
	NoAuditWebhook bool
	// Measurement turns on the responder's APF measurement
	// (docs/apf-measurement.md).
	Measurement bool
	// RateWindow is the mixin's and the responder's rate window; default
	// the scenarios' (rateWindow).
	RateWindow string
	// AuditPolicy replaces drillAuditPolicy (the shipped policy and the
	// responder's writes), e.g. a managed provider's log-everything
	// policy.
	AuditPolicy string
	// APIServerArgs are extra kube-apiserver flags.
	APIServerArgs []string
}

// drill is one drill's running stack.
type drill struct {
	*stack.Stack
	t     *testing.T
	start time.Time
	tap   *drillTap
	svc   *leaderService
	resp  *stack.Responder
	loops loops

	mu    sync.Mutex
	marks []drillEvent
}

// drillEvent is one line of a drill's timeline.
type drillEvent struct {
	at   time.Time
	what string
}

// since is the drill's clock.
func (s *drill) since() string {
	return time.Since(s.start).Round(100 * time.Millisecond).String()
}

// mark logs a step now (with t, the step's) and keeps it for the timeline.
func (s *drill) mark(t *testing.T, format string, args ...any) {
	t.Helper()
	what := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.marks = append(s.marks, drillEvent{time.Now(), what})
	s.mu.Unlock()
	t.Logf("%s: %s", s.since(), what)
}

// logf logs with the drill's clock, without a timeline entry (for what
// the timeline already shows: deliveries and decisions).
func (s *drill) logf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("%s: %s", s.since(), fmt.Sprintf(format, args...))
}

// drillResponderConfig acts (dryRun false) with the default routes and
// guards; isolate's hold-down is short so a drill can watch it end.
func drillResponderConfig(promURL, window string) string {
	return fmt.Sprintf(`dryRun: false
prometheus: {url: %q, timeout: 5s, rateWindow: %s}
actions:
  isolate: {ttl: 30m, holdDown: 5s}
  quarantine: {ttl: 30m}
`, promURL, window)
}

// startDrill brings the stack up; the drill's load starts afterwards.
func startDrill(ctx context.Context, t *testing.T, setup drillSetup) *drill {
	t.Helper()
	s := &drill{t: t, start: time.Now()}
	if _, err := herdtest.HerdBinary(ctx); err != nil { // before the drill's clock matters
		t.Fatal(err)
	}
	overrides := maps.Clone(mixinOverrides)
	maps.Copy(overrides, setup.Overrides)
	if setup.RateWindow == "" {
		setup.RateWindow = rateWindow
	}
	overrides["rateWindow"] = setup.RateWindow
	rules := map[string]string{}
	if setup.Rules != "" {
		rules["drill.yml"] = setup.Rules
	}
	s.svc = newLeaderService(t)
	s.tap = newDrillTap(t, s.svc.URL+"/alerts")
	exp := scenarioExporter
	exp.ProbeInterval = 2 * time.Second
	// A measuring responder is scraped: its herd_measurement_flowschema_info
	// is what the mixin joins the apiserver's APF metrics with.
	var respAddrs []string
	if setup.Measurement {
		addr, err := proc.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		respAddrs = []string{addr}
	}
	if setup.AuditPolicy == "" {
		setup.AuditPolicy = drillAuditPolicy(t)
	}
	s.Stack = stack.StartTest(ctx, t, stack.Options{
		Nodes:           setup.Nodes,
		Ghosts:          setup.Ghosts,
		AuditPolicy:     setup.AuditPolicy,
		APIServerArgs:   setup.APIServerArgs,
		AuditLog:        true,
		Objects:         setup.Objects,
		Exporter:        exp,
		Mixin:           overrides,
		Rules:           rules,
		ScrapeAPIServer: setup.ScrapeAPIServer,
		NoAuditWebhook:  setup.NoAuditWebhook,
		AlertReceiver:   s.tap.URL,
		AlertRepeat:     20 * time.Second,
		NoResponder:     true,
		ResponderAddrs:  respAddrs,
	})
	ro := stack.ResponderOptions{Name: "drill", Config: drillResponderConfig(s.PrometheusURL, setup.RateWindow) + stack.MeasurementConfig(setup.Measurement)}
	if len(respAddrs) > 0 {
		ro.Addr = respAddrs[0]
	}
	s.resp = startReplicaWith(ctx, t, s.Stack, ro)
	s.svc.set(s.resp)
	herdtest.Wait(t, 30*time.Second, "the responder to lead", func() bool { return s.resp.Ready(ctx) })
	t.Cleanup(func() {
		s.timeline()
		if t.Failed() {
			s.dump()
		}
	})
	s.mark(t, "stack up: control plane, herd exporter, Prometheus, Alertmanager, responder leading")
	return s
}

// timeline prints what happened in order: the drill's marks, every first
// delivery of an alert (per alert name, labels and status) from
// Alertmanager, and the responder's decisions and triage reports.
func (s *drill) timeline() {
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
	for _, d := range decisions(t, s.resp) {
		what := fmt.Sprintf("responder: %s %s on %s -> %s", d.Action, d.Status, d.Alert, d.Result)
		if d.Target != "" {
			what += " (" + d.Target + ")"
		}
		if d.Guard != "" {
			what += " guard " + string(d.Guard)
		}
		evs = append(evs, drillEvent{d.Time, what + ": " + truncateString(d.Reason, 240)})
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %8s  %s\n", e.at.Sub(s.start).Round(100*time.Millisecond), e.what)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t.Logf("timeline (from the start of the drill):\n%s  %s", b.String(), s.scrapes(ctx))
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
func (s *drill) dump() {
	t := s.t
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if res, err := s.Prom.API.Alerts(ctx); err != nil {
		t.Logf("prometheus /api/v1/alerts: %v", err)
	} else {
		for _, a := range res.Alerts {
			t.Logf("prometheus alert: %s %v since %s", a.State, a.Labels, a.ActiveAt.Format(time.RFC3339))
		}
	}
	for _, r := range s.triageReports(t) {
		b, _ := json.Marshal(r)
		t.Logf("triage report: %s", b)
	}
}

// scrapes says how Prometheus' scrapes of herd's exporter went during the
// drill. A failed one (over its timeout, the scrape interval, on a loaded
// machine) makes every herd series stale until the next: the alerts'
// `for` starts again, and the responder's evidence is unknown for a moment.
func (s *drill) scrapes(ctx context.Context) string {
	t := s.t
	total, _ := s.query(ctx, t, fmt.Sprintf(`sum(count_over_time(up{job=%q}[15m]))`, stack.ExporterJob))
	up, _ := s.query(ctx, t, fmt.Sprintf(`sum(sum_over_time(up{job=%q}[15m]))`, stack.ExporterJob))
	slow, _ := s.query(ctx, t, fmt.Sprintf(`max(max_over_time(scrape_duration_seconds{job=%q}[15m]))`, stack.ExporterJob))
	return fmt.Sprintf("Prometheus scraped herd's exporter %g times, %g failed; the slowest scrape took %.3f s", total, total-up, slow)
}

// waitDelivered waits until Alertmanager delivered alert name (firing) with
// the labels in match to the responder, marks it and returns its labels.
func (s *drill) waitDelivered(t *testing.T, timeout time.Duration, name string, match map[string]string) map[string]string {
	t.Helper()
	var labels map[string]string
	var at time.Time
	herdtest.Wait(t, timeout, "Alertmanager to deliver "+name+fmt.Sprint(match), func() bool {
		at, labels = s.tap.firstDelivery(name, "firing", match)
		return labels != nil
	})
	s.logf(t, "%s delivered to the responder (at %s) %v", name, at.Sub(s.start).Round(100*time.Millisecond), drillLabels(labels))
	return labels
}

// waitDecision waits for a responder decision that pred accepts and that
// did not fail, and returns it. A failed decision is not the end of its
// alert: the responder answers 503, forgets it, and decides again on
// Alertmanager's retry (docs/responder.md, "Acting once"); the evidence
// fails so for a moment when Prometheus missed a scrape of herd's
// exporter, as it may on a loaded machine. Failed ones are logged, and a
// decision that only ever fails runs into the timeout.
func (s *drill) waitDecision(t *testing.T, timeout time.Duration, what string, pred func(stack.Decision) bool) stack.Decision {
	t.Helper()
	var got stack.Decision
	failed := 0
	herdtest.Wait(t, timeout, what, func() bool {
		for i, d := range matching(decisions(t, s.resp), pred) {
			if d.Result != "failed" {
				got = d
				return true
			}
			if i == failed {
				failed++
				s.logf(t, "%s: a decision failed, Alertmanager retries: %s: %s", what, d.Reason, d.Error)
			}
		}
		return false
	})
	return got
}

// stopLoad ends the drill's load (cancel ends its context) and returns the
// tally of the loops called name, logged.
func (s *drill) stopLoad(t *testing.T, cancel context.CancelFunc, name string) nodesim.Tally {
	t.Helper()
	cancel()
	s.loops.wg.Wait()
	tally := s.loops.tally(name)
	t.Logf("%s: %+v", name, tally)
	return tally
}

// triageReports is the responder's /debug/triage.
func (s *drill) triageReports(t *testing.T) []stack.TriageReport {
	t.Helper()
	r, err := s.resp.Triage(context.Background())
	if err != nil {
		t.Errorf("/debug/triage: %v", err)
	}
	return r
}

// logFindings prints a triage report's ranking.
func (s *drill) logFindings(t *testing.T, r stack.TriageReport) {
	var b strings.Builder
	for i, f := range r.Findings {
		fmt.Fprintf(&b, "  %d. [%s] score %.2f: %s (next: %s)\n", i+1, f.Pattern, f.Score, f.Summary, f.Next)
	}
	t.Logf("triage of %s %v at %s:\n%s", r.Alert, drillLabels(r.Labels), r.Time.Sub(s.start).Round(100*time.Millisecond), b.String())
}

// query returns the value of a single-sample instant query (ok false when
// the result is empty).
func (s *drill) query(ctx context.Context, t *testing.T, q string) (float64, bool) {
	t.Helper()
	vec, err := s.Prom.Query(ctx, q)
	if err != nil {
		t.Errorf("%v", err)
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
func (s *drill) postAlert(ctx context.Context, t *testing.T, labels, annotations map[string]string) {
	t.Helper()
	body, _ := json.Marshal([]map[string]any{{
		"labels": labels, "annotations": annotations,
		"startsAt":     time.Now().UTC().Format(time.RFC3339),
		"endsAt":       time.Now().Add(10 * time.Minute).UTC().Format(time.RFC3339),
		"generatorURL": "http://drill.test/" + labels["alertname"],
	}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.AlertmanagerURL+"/api/v2/alerts", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST alertmanager /api/v2/alerts: %v", err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST alertmanager /api/v2/alerts: %s: %s", resp.Status, msg)
	}
}

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
