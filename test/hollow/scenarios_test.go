package hollow_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/herd-k8s/herd/test/auditcount"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/stack"
)

// actionAlerts are the alerts that make herd act or that would say
// something is wrong with healthy agents.
var actionAlerts = []string{"HerdRelistStorm", "HerdSynchronizedRelist", "HerdStaleKubelet", "HerdGhostNodeClient",
	"HerdTooLargeResourceVersion", "HerdClusterRevisionRewound"}

// TestRealAgents is issue 17's suite on real agents, in `make test`: five
// hollow nodes — the real kubelet and kube-proxy code of v1.36.3, three
// relisting by WatchList (client-go ≥ 1.35) and two in LIST mode (client-go
// < 1.35), each node in its own network namespace with its own address —
// against the real kube-apiserver, whose audit webhook feeds herd's
// exporter, with Prometheus evaluating herd's mixin (the demo's windows)
// and Alertmanager routing to herd's responder, acting. Two pods per node
// mount a ConfigMap and a Secret each. Every step compares herd with an
// independent count over the apiserver's audit log of the same run.
func TestRealAgents(t *testing.T) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	a := startRealAgents(ctx, t, agentsOptions{
		nodes: 5, listMode: func(i int) bool { return i > 3 }, podsPerNode: podsPerNode,
		mixin: map[string]any{"ghostNodeClientFor": "10s"},
	})
	t.Logf("stack and %d hollow nodes up, pods Running after %v", len(a.names), time.Since(began).Round(time.Millisecond))

	// Steady state: herd's counters equal the independent count; each
	// kube-proxy is placed on its own node by its address and each kubelet
	// calls from its Node's InternalIP; no agent is a ghost, no kubelet is
	// stale, no request is too large, nothing alerts and the responder does
	// nothing; the agents make the requests docs/exporter.md's table says.
	t.Run("steady state", func(t *testing.T) {
		leases, err := a.nodes.WaitLeases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		first, _ := a.compare(t, "pods running")
		// Every kubelet renews its Lease every 10 s (a quarter of its 40 s
		// duration); let that happen a few times, and the ghost grace pass.
		time.Sleep(steadyPeriod)
		if err := a.nodes.Crashed(); err != nil {
			t.Fatal(err)
		}
		renewed, err := a.nodes.WaitLeases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for node, at := range leases {
			if !renewed[node].After(at) {
				t.Errorf("kubelet %s did not renew its Lease in %v (renewed at %v)", node, steadyPeriod, at)
			}
		}
		second, _ := a.compare(t, "steady state")
		if len(second.delivered) <= len(first.delivered) {
			t.Errorf("herd was delivered %d events by the steady-state snapshot, %d at the first: the agents went quiet", len(second.delivered), len(first.delivered))
		}
		if n := a.tee.Refused(); n > 0 {
			t.Errorf("herd refused %d audit batches", n)
		}
		// Healthy agents: not one request too large, however far herd's own
		// informers lag the revisions the kubelets hold.
		for k, v := range second.series {
			if strings.HasPrefix(k, "herd_too_large_resource_version_total{") && v > 0 {
				t.Errorf("healthy agents: %s = %g", k, v)
			}
		}
		checkAttribution(t, a.ex, a.nodes)
		checkNoGhostNoStale(t, a.ex, a.nodes)
		checkRequests(t, a.logPath, a.nodes)
		a.checkQuiet(ctx, t)
	})

	// An apiserver restart breaks every watch: the real agents resume
	// together. herd counts what they do exactly as the audit log says
	// (the events the webhook lost in the restart aside, which the log
	// keeps: counted and reported), and calls nothing stale, ghost or too
	// large.
	t.Run("apiserver restart", func(t *testing.T) {
		before := a.view(t)
		restartAt := time.Now()
		if err := a.s.CP.RestartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("apiserver restarted in %v", time.Since(restartAt).Round(time.Millisecond))
		// Let every agent resume and the webhook deliver.
		if err := herdtest.Poll(ctx, time.Minute, "every agent to call again", func(context.Context) error {
			return a.calledSince(restartAt.Add(time.Second))
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		if err := a.nodes.Crashed(); err != nil {
			t.Fatal(err)
		}
		after, _ := a.compare(t, "after the apiserver restart")
		a.reportResume(t, before, after, restartAt)
		for k, v := range after.series {
			if strings.HasPrefix(k, "herd_too_large_resource_version_total{") && v > before.series[k] {
				t.Errorf("after an apiserver restart: %s went from %g to %g", k, before.series[k], v)
			}
		}
		if len(after.stale) > 0 {
			t.Errorf("stale kubelets after an apiserver restart: %v", after.stale)
		}
		checkNoGhostNoStale(t, a.ex, a.nodes)
		a.checkQuiet(ctx, t)
	})

	// A Node deleted under its running kubelet: the kubelet keeps running
	// and does not register again. herd calls it a ghost (no_such_node),
	// HerdGhostNodeClient fires in Prometheus, Alertmanager delivers it, and
	// the responder — acting — quarantines the kubelet's identity with API
	// Priority and Fairness: its requests are rejected (429), while every
	// other kubelet carries on untouched. The node's kube-proxy, on an
	// address that is no Node's any more, is a ghost too; its identity is
	// every kube-proxy's, so the responder refuses to quarantine it.
	t.Run("node deleted under a running kubelet", func(t *testing.T) {
		victim := a.nodes.Nodes[len(a.nodes.Nodes)-1]
		identity := "system:node:" + victim.Name
		deletedAt := time.Now()
		if err := a.s.Admin.CoreV1().Nodes().Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		match := map[string]string{"identity": identity, "node": victim.Name, "reason": "no_such_node", "source_ip": victim.Addr.String()}
		var firing time.Time
		if err := herdtest.Poll(ctx, 2*time.Minute, "HerdGhostNodeClient for "+identity, func(ctx context.Context) error {
			al, err := a.s.Alert(ctx, "HerdGhostNodeClient", match)
			if err != nil || al == nil || al.State != "firing" {
				return fmt.Errorf("not firing (%v)", err)
			}
			firing = time.Now()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("HerdGhostNodeClient firing %v after the Node was deleted", firing.Sub(deletedAt).Round(100*time.Millisecond))
		var quarantine stack.Decision
		if err := herdtest.Poll(ctx, time.Minute, "the responder to quarantine "+identity, func(ctx context.Context) error {
			ds, err := a.actions(ctx)
			if err != nil {
				return err
			}
			for _, d := range ds {
				if d.Action == "quarantine" && d.Status == "firing" && d.Labels["identity"] == identity {
					quarantine = d
					if d.Result == "applied" {
						return nil
					}
				}
			}
			return fmt.Errorf("no applied quarantine (last: %+v)", quarantine)
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("quarantine %s %v after the alert fired: %s", quarantine.Result, quarantine.Time.Sub(firing).Round(100*time.Millisecond), quarantine.Reason)
		// The FlowSchema names that identity alone.
		fss, err := a.s.Admin.FlowcontrolV1().FlowSchemas().List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=herd"})
		if err != nil {
			t.Fatal(err)
		}
		for _, fs := range fss.Items {
			for _, r := range fs.Spec.Rules {
				for _, s := range r.Subjects {
					if s.User == nil || s.User.Name != identity {
						t.Errorf("herd's FlowSchema %s has subject %+v; only %s is a ghost kubelet", fs.Name, s, identity)
					}
				}
			}
		}
		// The kubelet kept running and never registered again; the API
		// rejects it now.
		if _, err := a.s.Admin.CoreV1().Nodes().Get(ctx, victim.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the deleted Node %s: %v, want NotFound (its kubelet registered again?)", victim.Name, err)
		}
		if err := a.nodes.Crashed(); err != nil {
			t.Fatal(err)
		}
		// Every request of the ghost now goes to herd's quarantine level, which
		// has no seats: APF rejects a request there with 429 whenever another
		// one is executing, and lets it through when the level is idle
		// (k8s.io/apiserver@v0.36.3 pkg/util/flowcontrol/fairqueuing/queueset/
		// queueset.go canAccommodateSeatsLocked). The real kubelet's requests
		// here — a GET of its Node every 10 s, its Lease — never overlap, so
		// they are served; a ghost that loops on 3 s "Too large" LISTs, as in
		// incident 000, is rejected but for one request at a time.
		var caught float64
		if err := herdtest.Poll(ctx, 30*time.Second, "herd's quarantine FlowSchema to catch the ghost's requests", func(ctx context.Context) error {
			var err error
			if caught, err = a.flowSchemaRequests(ctx, "herd-quarantine-1"); err != nil || caught == 0 {
				return fmt.Errorf("%g requests (%v)", caught, err)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		codes := a.ghostLoop(ctx, t, victim.Name, 6)
		t.Logf("requests of the ghost kubelet since the quarantine routed to herd-quarantine: %g; six concurrent too-large LISTs as it: %v", caught, codes)
		if codes[http.StatusTooManyRequests] < 4 {
			t.Errorf("six concurrent LISTs as the quarantined %s: %v, want at least 4 rejected with 429", identity, codes)
		}
		// Every other kubelet untouched: Leases renewed after the
		// quarantine, no request of theirs rejected.
		time.Sleep(12 * time.Second)
		leases, err := a.nodes.WaitLeases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range a.nodes.Nodes[:len(a.nodes.Nodes)-1] {
			if !leases[n.Name].After(quarantine.Time) {
				t.Errorf("kubelet %s has not renewed its Lease since the quarantine (%v)", n.Name, leases[n.Name])
			}
		}
		a.checkOthersUntouched(t, identity, quarantine.Time)
		v, _ := a.compare(t, "after the quarantine")
		for _, c := range v.clients {
			ghost := c.Cluster != nil && c.Cluster.Ghost
			wantGhost := c.Identity == identity || c.Role == "kube-proxy" && c.TrustedSourceIP == victim.Addr.String()
			if (c.Role == "kubelet" || c.Role == "kube-proxy") && ghost != wantGhost {
				t.Errorf("%s %s on %q from %s: ghost %v, want %v", c.Role, c.Identity, c.Node, c.TrustedSourceIP, ghost, wantGhost)
			}
		}
		ds, err := a.actions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			switch {
			case d.Action == "quarantine" && d.Labels["identity"] == identity:
			case d.Action == "quarantine" && d.Result == "refused" && d.Guard == "shared_identity":
				t.Logf("the kube-proxy ghost: quarantine refused (%s): %s", d.Guard, d.Reason)
			default:
				t.Errorf("unexpected responder decision: %s %s %s on %v: %s", d.Action, d.Result, d.Target, d.Labels, d.Reason)
			}
		}
	})
}

// checkQuiet: none of herd's alerts that act or flag an agent fires, and
// the responder has done nothing.
func (a *realAgents) checkQuiet(ctx context.Context, t *testing.T) {
	t.Helper()
	firing, err := a.alertsFiring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range firing {
		for _, name := range actionAlerts {
			if strings.Contains(f, `alertname="`+name+`"`) {
				t.Errorf("alert firing: %s", f)
			}
		}
	}
	ds, err := a.actions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		t.Errorf("the responder decided: %s %s %s for %s %v: %s", d.Action, d.Result, d.Target, d.Alert, d.Labels, d.Reason)
	}
}

// calledSince fails until every agent's requests since t are in the audit
// log.
func (a *realAgents) calledSince(t time.Time) error {
	seen := map[string]bool{}
	err := auditcount.Each(a.logPath, func(e *auditv1.Event) {
		if e.StageTimestamp.Time.After(t) && auditcount.Counted(e) {
			seen[e.User.Username+" "+lastIP(e)] = true
		}
	})
	if err != nil {
		return err
	}
	for _, n := range a.nodes.Nodes {
		for _, who := range []string{"system:node:" + n.Name, "system:serviceaccount:kube-system:kube-proxy"} {
			if !seen[who+" "+n.Addr.String()] {
				return fmt.Errorf("%s on %s has not called", who, n.Name)
			}
		}
	}
	return nil
}

// flowSchemaRequests is how many requests the apiserver matched to the
// FlowSchema named fs: dispatched or rejected.
func (a *realAgents) flowSchemaRequests(ctx context.Context, fs string) (float64, error) {
	b, err := a.s.Admin.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, l := range strings.Split(string(b), "\n") {
		if (strings.HasPrefix(l, "apiserver_flowcontrol_dispatched_requests_total{") || strings.HasPrefix(l, "apiserver_flowcontrol_rejected_requests_total{")) &&
			strings.Contains(l, `flow_schema="`+fs+`"`) {
			var v float64
			if _, err := fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v); err == nil {
				sum += v
			}
		}
	}
	return sum, nil
}

// ghostLoop sends n concurrent LISTs of node's pods at a resourceVersion
// the cluster has not reached, with node's kubelet's credentials, as
// incident 000's ghost looped: each one the apiserver serves takes 3 s and
// ends in 504. It returns the answers' codes.
func (a *realAgents) ghostLoop(ctx context.Context, t *testing.T, node string, n int) map[int]int {
	t.Helper()
	c := a.s.CP.Client(controlplane.KubeletIdentity(node))
	codes := make(chan int, n)
	for range n {
		go func() {
			err := c.CoreV1().RESTClient().Get().Resource("pods").Param("fieldSelector", "spec.nodeName="+node).
				Param("resourceVersion", "999999999").MaxRetries(0).Do(ctx).Error()
			var status apierrors.APIStatus
			switch {
			case err == nil:
				codes <- http.StatusOK
			case errors.As(err, &status):
				codes <- int(status.Status().Code)
			default:
				codes <- 0
			}
		}()
	}
	out := map[int]int{}
	for range n {
		out[<-codes]++
	}
	return out
}

// checkOthersUntouched: no request of another agent rejected (429) since t.
func (a *realAgents) checkOthersUntouched(t *testing.T, ghost string, since time.Time) {
	t.Helper()
	calls := map[string]int{}
	err := auditcount.Each(a.logPath, func(e *auditv1.Event) {
		if e.User.Username == ghost || !e.StageTimestamp.Time.After(since) || !auditcount.Counted(e) {
			return
		}
		calls[e.User.Username]++
		if e.ResponseStatus != nil && e.ResponseStatus.Code == http.StatusTooManyRequests {
			t.Errorf("%s's %s %s rejected after the quarantine of %s", e.User.Username, e.Verb, e.RequestURI, ghost)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("requests of the other agents since the quarantine: %v", calls)
}

func lastIP(e *auditv1.Event) string {
	if len(e.SourceIPs) == 0 {
		return ""
	}
	return e.SourceIPs[len(e.SourceIPs)-1]
}

// reportResume logs what the agents did after the restart, as herd counted
// it: relists by client, resource and shape, and how many instances
// relisted; and how many events the webhook lost that the log kept.
func (a *realAgents) reportResume(t *testing.T, before, after herdView, restartAt time.Time) {
	t.Helper()
	var lines []string
	for k, v := range after.series {
		if strings.HasPrefix(k, "herd_relists_total{") && v > before.series[k] {
			lines = append(lines, fmt.Sprintf("  %s +%g", k, v-before.series[k]))
		}
	}
	relisted := map[string]bool{}
	for _, c := range after.clients {
		for _, s := range c.Resources {
			if s.LastRelist != nil && s.LastRelist.After(restartAt) {
				relisted[c.Role+" "+c.Node] = true
			}
		}
	}
	all, err := auditcount.Count(a.logPath, nil, auditcount.NodeAgents)
	if err != nil {
		t.Fatal(err)
	}
	delivered, err := auditcount.Count(a.logPath, after.delivered, auditcount.NodeAgents)
	if err != nil {
		t.Fatal(err)
	}
	lost := 0.0
	for k, v := range all.Series {
		if strings.HasPrefix(k, "herd_requests_total{") {
			lost += v - delivered.Series[k]
		}
	}
	sort.Strings(lines)
	t.Logf("after the restart, %d of %d agent instances relisted; relists herd counted since:\n%s\nrequests in the audit log that the webhook never delivered to herd: %g",
		len(relisted), 2*len(a.nodes.Nodes), strings.Join(lines, "\n"), lost)
}
