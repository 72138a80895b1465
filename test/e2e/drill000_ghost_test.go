package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/stack"
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
		Ghosts: []string{ghostName},
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
	if _, err := s.Prom.WaitForQuery(ctx, `up{job="apiserver"}`, func(v model.Vector) bool { return len(v) == 1 && v[0].Value == 1 }); err != nil {
		t.Fatalf("Prometheus does not scrape the apiserver's /metrics: %v", err)
	}
	ghost := nodesim.ForTest(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubelet(s.CP, ghostName, nodesim.Options{SourceIP: ghostIP})
	})

	var before nodesim.Result
	measured := herdtest.NewPrereq("the ghost's LIST measured before herd", func(t *testing.T) {
		var err error
		before, err = ghost.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
		if err != nil || before.Code != http.StatusGatewayTimeout || before.Duration < 2*time.Second {
			t.Fatalf("the ghost's too-large-RV LIST: %s (%v), want the incident's 504 after ~3 s", before, err)
		}
	})
	var ghostStart time.Time
	looping := herdtest.NewPrereq("the ghost loops", func(t *testing.T) {
		// The ghost's kubelet loops on both collections, three loops each:
		// about 2 504s per second (the incident saw "about 1 rps" on a
		// cluster with far more traffic). The drill's other reads are the
		// responder's sweeps and Prometheus' scrapes, ~3/s.
		for _, r := range []nodesim.Resource{nodesim.RuntimeClasses, nodesim.RuntimeClasses, nodesim.RuntimeClasses, nodesim.CSIDrivers, nodesim.CSIDrivers, nodesim.CSIDrivers} {
			s.loops.run(ctx, "ghost", time.Second, func(ctx context.Context) (nodesim.Result, error) {
				return ghost.ListTooLargeRV(ctx, r, "")
			})
		}
		ghostStart = time.Now()
		s.mark(t, "the ghost kubelet loops on too-large-RV LISTs of runtimeclasses and csidrivers")
	})
	var burn map[string]string
	var triaged stack.Decision
	triage := herdtest.NewPrereq("KubeAPIErrorBudgetBurn triaged", func(t *testing.T) {
		looping.Need(t)
		// The SLO alert, from the apiserver's own metrics, and its triage.
		burn = s.waitDelivered(t, 90*time.Second, "KubeAPIErrorBudgetBurn", nil)
		if v, ok := s.query(ctx, t, `sum(apiserver_request:burnrate`+model.Duration(burnPages[0].short/burnScale).String()+`)`); ok {
			t.Logf("burn rate over the short window: %.3f (threshold %.3f)", v, burnPages[0].factor*0.01)
		}
		if vec, err := s.Prom.Query(ctx, `sum by (verb, resource, subresource, code) (rate(apiserver_request_total{job="apiserver", verb=~"LIST|GET"}[1m])) > 0`); err == nil {
			t.Logf("the apiserver's reads, per second over 1m: %v", vec)
		}
		triaged = s.waitDecision(t, 30*time.Second, "the triage of KubeAPIErrorBudgetBurn", func(d stack.Decision) bool {
			return d.Action == "triage" && d.Alert == "KubeAPIErrorBudgetBurn" && d.Status == "firing"
		})
		s.logf(t, "triage decided (%s): %s", triaged.Result, truncateString(triaged.Reason, 300))
	})
	rejected := make(chan time.Time, 1)
	var q stack.Decision
	quarantined := herdtest.NewPrereq("the ghost quarantined", func(t *testing.T) {
		triage.Need(t)
		// Meanwhile a probe of the ghost's identity, 5 times a second from
		// now on (not earlier: its reads would dilute the burn rate), times
		// when APF starts rejecting it: a GET of its own Node (404, cheap,
		// and not audited by the shipped policy, so herd does not see it).
		s.loops.wg.Go(func() {
			for ctx.Err() == nil {
				res, err := ghost.Do(ctx, http.MethodGet, "/api/v1/nodes/"+ghostName, nil)
				if err == nil && res.Code == http.StatusTooManyRequests {
					rejected <- time.Now()
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
		s.waitDelivered(t, 90*time.Second, "HerdTooLargeResourceVersion", map[string]string{"role": "kubelet", "client": "kubelet", "resource": "runtimeclasses.node.k8s.io"})
		s.waitDelivered(t, 90*time.Second, "HerdTooLargeResourceVersion", map[string]string{"role": "kubelet", "client": "kubelet", "resource": "csidrivers.storage.k8s.io"})
		s.waitDelivered(t, 90*time.Second, "HerdGhostNodeClient", map[string]string{
			"identity": "system:node:" + ghostName, "node": ghostName, "source_ip": ghostIP, "reason": "no_such_node"})
		q = s.waitDecision(t, 30*time.Second, "the quarantine of the ghost", func(d stack.Decision) bool {
			return d.Action == "quarantine" && d.Status == "firing" && d.Result != "noop"
		})
		s.logf(t, "quarantine %s: %s", q.Result, truncateString(q.Reason, 300))
		if q.Result != "applied" {
			t.Fatalf("quarantine: %+v, want applied", q)
		}
	})
	rejecting := herdtest.NewPrereq("the apiserver rejects the ghost", func(t *testing.T) {
		quarantined.Need(t)
		// APF applies the new FlowSchema once its config controller has
		// digested it.
		select {
		case at := <-rejected:
			s.mark(t, "the apiserver rejects the ghost's requests %v after the quarantine was applied", at.Sub(q.Time).Round(10*time.Millisecond))
		case <-time.After(30 * time.Second):
			t.Fatalf("the apiserver did not reject the ghost's requests within 30 s of the quarantine")
		}
	})

	t.Run("the ghost LIST gets the incident 504 after 3 s", func(t *testing.T) {
		measured.Need(t)
		s.mark(t, "the ghost's LIST before herd: %d in %v: %s", before.Code, before.Duration.Round(10*time.Millisecond), before.Message)
	})
	t.Run("KubeAPIErrorBudgetBurn fires and triage names the ghost first", func(t *testing.T) {
		triage.Need(t)
		if triaged.Result != "applied" || !strings.Contains(triaged.Reason, "1. [ghost_client]") || !strings.Contains(triaged.Reason, "system:node:"+ghostName) {
			t.Errorf("triage decision %s: %q; want applied, naming ghost_client system:node:%s first", triaged.Result, triaged.Reason, ghostName)
		}
		var first stack.TriageReport
		for _, r := range s.triageReports(t) {
			if r.Alert == "KubeAPIErrorBudgetBurn" && r.Labels["long"] == burn["long"] {
				first = r
				break
			}
		}
		if len(first.Findings) == 0 {
			t.Fatalf("/debug/triage has no findings for KubeAPIErrorBudgetBurn %v: %+v", burn, s.triageReports(t))
		}
		s.logFindings(t, first)
		top := first.Findings[0]
		if top.Pattern != "ghost_client" || top.Labels["identity"] != "system:node:"+ghostName || top.Labels["source_ip"] != ghostIP ||
			top.Remediation != "quarantine" || !strings.Contains(top.Summary, ghostIP) {
			t.Errorf("triage's first finding: %+v; want ghost_client system:node:%s from %s, remediation quarantine", top, ghostName, ghostIP)
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
		if got := metric(t, s.resp, "herd_responder_findings", "pattern=ghost_client"); got != 1 {
			t.Errorf("herd_responder_findings{pattern=ghost_client} = %v, want 1", got)
		}
		checkEvent(ctx, t, s.Admin, "Lease", "HerdTriageApplied")
	})
	t.Run("herd alerts and the responder quarantines the ghost", func(t *testing.T) {
		quarantined.Need(t)
		checkEvent(ctx, t, s.Admin, "FlowSchema", "HerdQuarantineApplied")
	})
	t.Run("the apiserver rejects the quarantined ghost", func(t *testing.T) {
		rejecting.Need(t)
	})
	t.Run("the ghost LISTs fail fast and stop burning the budget", func(t *testing.T) {
		rejecting.Need(t)
		// The ghost's LISTs fail fast now, with 429, which the SLO ignores.
		for _, r := range []nodesim.Resource{nodesim.RuntimeClasses, nodesim.CSIDrivers} {
			after, err := ghost.ListTooLargeRV(ctx, r, "")
			if err != nil || after.Code != http.StatusTooManyRequests || after.Duration >= time.Second {
				t.Errorf("the ghost's LIST of %s after quarantine: %s (%v), want 429 in well under 1 s", r.Resource, after, err)
			}
			s.mark(t, "the ghost's LIST of %s after quarantine: %d in %v (before: %d in %v)", r.Resource, after.Code, after.Duration.Round(time.Millisecond), before.Code, before.Duration.Round(10*time.Millisecond))
		}
		short := model.Duration(burnPages[0].short / burnScale).String()
		if _, err := s.Prom.WaitForQuery(ctx, `sum(apiserver_request:burnrate`+short+`)`, func(v model.Vector) bool {
			return len(v) == 1 && float64(v[0].Value) < burnPages[0].factor*0.01
		}); err != nil {
			t.Errorf("the short-window burn rate did not fall below %g after the quarantine: %v", burnPages[0].factor*0.01, err)
		} else {
			s.mark(t, "the short-window (%s) burn rate is below the threshold again: the ghost no longer burns budget", short)
		}
		t.Logf("ghost started %v before the quarantine landed", q.Time.Sub(ghostStart).Round(100*time.Millisecond))
	})
	t.Run("the responder writes only its quarantine objects", func(t *testing.T) {
		rejecting.Need(t)
		wroteOnly(t, s.AuditLogPath, "flowschemas/herd-quarantine-1", "prioritylevelconfigurations/herd-quarantine")
		if _, err := s.Admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-quarantine-1", metav1.GetOptions{}); err != nil {
			t.Errorf("FlowSchema herd-quarantine-1: %v", err)
		}
	})
	t.Run("the ghost LISTs went from 504 to 429", func(t *testing.T) {
		rejecting.Need(t)
		tally := s.stopLoad(t, cancel, "ghost")
		if tally.Codes[http.StatusGatewayTimeout] == 0 || tally.Codes[http.StatusTooManyRequests] == 0 {
			t.Errorf("the ghost's LISTs %+v: want 504s before the quarantine and 429s after", tally)
		}
	})
}
