package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/internal/kube"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/promstack"
)

const (
	respNodes     = 20 // Nodes in the cluster
	respStale     = 12 // kubelets in a relist loop: HerdStaleKubelet, and a HerdRelistStorm of kubelet pod LISTs
	respPersonal  = "node-20"
	respGhost     = "old-worker-7"
	respGhostIP   = "10.99.0.7"
	respFraction  = 0.15 // of 20 nodes: at most 3 unschedulable
	respAllowed   = 3
	respHoldDown  = 5 * time.Second
	respLease     = 4 * time.Second
	respRepeat    = 20 * time.Second
	respAuditRule = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:nodes"]
- level: Metadata
  users: ["` + responderUser + `"]
- level: None
`
)

// responderConfig is the responder's --config in the scenario.
func responderConfig(promURL string, dryRun bool) string {
	dry := ""
	if !dryRun {
		dry = "dryRun: false\n"
	}
	return dry + fmt.Sprintf(`prometheus: {url: %q, timeout: 5s, rateWindow: %s}
actions:
  isolate: {ttl: 30m, holdDown: %s}
  quarantine: {ttl: 30m}
guards:
  maxUnschedulableFraction: %g
  maxActionsPerHour: {cordon: 10}
  stormCooldown: 10m
`, promURL, mixinOverrides["rateWindow"], model.Duration(respHoldDown), respFraction)
}

// responderStack is the real stack the responder acts on.
type responderStack struct {
	cp      *controlplane.ControlPlane
	admin   kubernetes.Interface
	logPath string
	dir     string
	prom    *promstack.Prometheus
	svc     *leaderService
	// metricsServer is the Deployment as created, before herd saw it.
	metricsServer *appsv1.Deployment
	loops         mixinLoops
	stop          context.CancelFunc // the storm and the ghost
}

// TestResponderOnRealStack drives `herd responder` with Alertmanager
// 0.25 on a real control plane, a real herd exporter and Prometheus with
// the mixin: first in dry-run (the default), then as two replicas that act,
// with the acceptance of issue 5 checked from the apiserver's audit log,
// the objects, the apiserver's APF metrics and response headers.
func TestResponderOnRealStack(t *testing.T) {
	start := time.Now()
	since := func() string { return time.Since(start).Round(100 * time.Millisecond).String() }
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	herdBinary(t) // build before the clock of the scenario starts
	s := startResponderStack(ctx, t)
	defer s.loops.wg.Wait()
	defer s.stop()
	t.Logf("%s: stack up, storm and ghost running", since())

	// --- Dry run (the default). ---
	r0 := startResponder(t, s.cp, s.dir, "dry-run", responderSetup{Config: responderConfig(s.prom.URL, true), LeaseDuration: respLease})
	s.svc.set(r0)
	waitCtx(ctx, t, 3*time.Minute, "the dry-run responder to decide cordon, isolate, quarantine and flag-metrics-server", func() bool {
		ds := r0.decisions(t)
		for _, a := range []string{"cordon", "isolate", "quarantine", "flag-metrics-server"} {
			if len(matching(ds, func(d responderDecision) bool { return d.Action == a && d.Result == "dry_run" })) == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("%s: dry run decided every action", since())
	ds := r0.decisions(t)
	if n := len(matching(ds, func(d responderDecision) bool { return d.Action == "cordon" && d.Result == "dry_run" })); n != respAllowed-1 {
		t.Errorf("dry run: %d cordons would have been made, want %d (%d allowed, %s cordoned by a person): %+v", n, respAllowed-1, respAllowed, respPersonal, ds)
	}
	if n := len(matching(ds, func(d responderDecision) bool { return d.Action == "cordon" && d.Guard == "max_unschedulable_fraction" })); n == 0 {
		t.Errorf("dry run: no cordon refused by max_unschedulable_fraction")
	}
	writes := writesBy(t, s.logPath, responderUser)
	dry := 0
	for _, w := range writes {
		switch {
		case w.bookkeeping():
		case w.dryRun():
			dry++
		default:
			t.Errorf("dry run: herd made a mutating request: %s", w)
		}
	}
	if dry == 0 {
		t.Errorf("dry run: no server-side dry-run request in the audit log; herd should validate what it would do")
	}
	if got := r0.metric(t, "herd_responder_actions_total", "action=cordon", "result=dry_run"); got < 1 {
		t.Errorf("herd_responder_actions_total{action=cordon,result=dry_run} = %v", got)
	}
	checkEvent(ctx, t, s.admin, "Node", "HerdCordonDryRun")
	checkEvent(ctx, t, s.admin, "FlowSchema", "HerdIsolateDryRun")
	if fs := herdFlowSchemas(ctx, t, s.admin); len(fs) != 0 {
		t.Errorf("dry run created FlowSchemas %v", fs)
	}
	if un := unschedulable(ctx, t, s.admin); len(un) != 1 || un[0] != respPersonal {
		t.Errorf("dry run: unschedulable nodes %v, want only %s", un, respPersonal)
	}
	ghost := s.ghostClient(t)
	before, _ := ghost.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
	t.Logf("%s: dry run: %d server-side dry runs, no mutation; the ghost's LIST before quarantine: %s", since(), dry, before)
	if before.Code != http.StatusGatewayTimeout || before.Duration < 2*time.Second {
		t.Errorf("the ghost's too-large-RV LIST before quarantine: %s, want 504 after ~3 s", before)
	}
	r0.p.Stop(10 * time.Second)

	// --- Two replicas that act. ---
	acting := responderConfig(s.prom.URL, false)
	ra := startResponder(t, s.cp, s.dir, "replica-a", responderSetup{Config: acting, LeaseDuration: respLease})
	rb := startResponder(t, s.cp, s.dir, "replica-b", responderSetup{Config: acting, LeaseDuration: respLease})
	s.svc.pause(true)
	s.svc.set(ra, rb)
	var leader, follower *responderProc
	waitCtx(ctx, t, 30*time.Second, "one replica to lead", func() bool {
		a, b := ra.ready(), rb.ready()
		switch {
		case a && !b:
			leader, follower = ra, rb
		case b && !a:
			leader, follower = rb, ra
		default:
			return false
		}
		return true
	})
	t.Logf("%s: %s leads, %s follows", since(), leader.Name, follower.Name)

	// Auth and bad input, on the real binary: 401 for no, wrong or
	// wrong-length tokens; 400 malformed; 413 over 4 MiB.
	for _, tc := range []struct {
		name, token string
		body        []byte
		want        int
	}{
		{"no credentials", "", []byte(`{}`), http.StatusUnauthorized},
		{"wrong token", strings.Repeat("x", len(leader.Token)), []byte(`{}`), http.StatusUnauthorized},
		{"wrong-length token", leader.Token + "x", []byte(`{}`), http.StatusUnauthorized},
		{"malformed", leader.Token, []byte(`{"version":"4","alerts":[`), http.StatusBadRequest},
		{"5 MiB", leader.Token, append([]byte(`{"version":"4","alerts":[],"x":"`), bytes.Repeat([]byte("a"), 5<<20)...), http.StatusRequestEntityTooLarge},
	} {
		if got := postAs(t, leader.URL, tc.token, tc.body); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}

	// Idempotency: the same firing alert 100 times, concurrently, to both.
	stale1 := map[string]string{"alertname": "HerdStaleKubelet", "node": "node-1", "reason": "relist_loop", "severity": "warning", "job": mixinJob}
	payload := alertPayload("firing", time.Now().Add(-time.Minute).UTC().Truncate(time.Second), stale1)
	codes := map[string]map[int]int{ra.Name: {}, rb.Name: {}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 100 {
		r := []*responderProc{ra, rb}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := r.post(t, payload)
			mu.Lock()
			codes[r.Name][c]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[leader.Name][http.StatusOK] != 50 || codes[follower.Name][http.StatusServiceUnavailable] != 50 {
		t.Errorf("100 deliveries: codes %v; want 50×200 from the leader %s and 50×503 from the follower", codes, leader.Name)
	}
	nodePatches := func(name string) []auditRecord {
		var out []auditRecord
		for _, w := range writesBy(t, s.logPath, responderUser) {
			if w.on("nodes", name) && !w.dryRun() {
				out = append(out, w)
			}
		}
		return out
	}
	waitCtx(ctx, t, 10*time.Second, "the cordon patch of node-1 in the audit log", func() bool { return len(nodePatches("node-1")) > 0 })
	time.Sleep(2 * time.Second) // any second patch would be logged by now
	if p := nodePatches("node-1"); len(p) != 1 {
		t.Errorf("100 concurrent deliveries to two replicas made %d patches of node-1, want exactly 1: %v", len(p), p)
	}
	cordon1 := func(d responderDecision) bool {
		return d.Action == "cordon" && d.Target == "node/node-1" && d.Result == "applied"
	}
	if n := len(matching(ra.decisions(t), cordon1)) + len(matching(rb.decisions(t), cordon1)); n != 1 {
		t.Errorf("%d applied cordon records for node-1 across both replicas, want 1", n)
	}
	if d := leader.metric(t, "herd_responder_duplicate_deliveries_total", "action=cordon"); d != 49 {
		t.Errorf("herd_responder_duplicate_deliveries_total{action=cordon} = %v on the leader, want 49", d)
	}
	t.Logf("%s: 100 concurrent deliveries: %v, one patch, one record", since(), codes)

	// Alertmanager's deliveries reach the leader from now on.
	delivered := s.svc.delivered()
	s.svc.pause(false)
	waitCtx(ctx, t, 2*time.Minute, "the leader to act on Alertmanager's deliveries", func() bool {
		ds := leader.decisions(t)
		for _, a := range []string{"isolate", "quarantine", "flag-metrics-server"} {
			if len(matching(ds, func(d responderDecision) bool { return d.Action == a && d.Result == "applied" })) == 0 {
				return false
			}
		}
		seen := map[string]bool{}
		for _, d := range matching(ds, func(d responderDecision) bool { return d.Action == "cordon" && d.Status == "firing" }) {
			seen[d.Target] = true
		}
		return len(seen) >= respStale
	})
	t.Logf("%s: the leader acted on Alertmanager's deliveries", since())

	// Blast radius: at most 3 of 20 unschedulable, the person's node counted.
	un := unschedulable(ctx, t, s.admin)
	if len(un) > respAllowed || !contains(un, respPersonal) || !contains(un, "node-1") {
		t.Errorf("unschedulable nodes %v: want at most %d (%g of %d), %s and node-1 among them", un, respAllowed, respFraction, respNodes, respPersonal)
	}
	herdCordoned := ""
	for _, n := range un {
		if n != respPersonal && n != "node-1" {
			herdCordoned = n
		}
	}
	if herdCordoned == "" {
		t.Fatalf("herd cordoned no node besides node-1 (unschedulable: %v)", un)
	}
	ds = leader.decisions(t)
	refused := matching(ds, func(d responderDecision) bool { return d.Action == "cordon" && d.Result == "refused" })
	byGuard := map[string]int{}
	for _, d := range refused {
		byGuard[d.Guard]++
	}
	if byGuard["max_unschedulable_fraction"] == 0 || byGuard["max_unschedulable_fraction"]+byGuard["storm_cooldown"] < respStale-2 {
		t.Errorf("cordon refusals by guard %v; want the %d stale nodes beyond the limit refused by max_unschedulable_fraction, then storm_cooldown", byGuard, respStale-2)
	}
	if got := leader.metric(t, "herd_responder_guard_refusals_total", "action=cordon", "guard=max_unschedulable_fraction"); got < 1 {
		t.Errorf("herd_responder_guard_refusals_total{action=cordon,guard=max_unschedulable_fraction} = %v", got)
	}
	checkEvent(ctx, t, s.admin, "Node", "HerdCordonRefused")
	for _, c := range s.svc.codesSince(delivered) {
		if c != http.StatusOK {
			t.Errorf("Alertmanager got %d from the responder; refusals and no-ops must be 200 so it does not retry (codes: %v)", c, s.svc.codesSince(delivered))
			break
		}
	}
	t.Logf("%s: blast radius: unschedulable %v; cordon refusals %v", since(), un, byGuard)

	// Re-verification: alerts Prometheus or the API do not confirm.
	for _, tc := range []struct{ node, guard string }{
		{"node-15", "verification"},      // exists, not stale
		{"no-such-node", "verification"}, // does not exist
		{"Bad_Name!", "label_validation"},
	} {
		l := maps.Clone(stale1)
		l["node"] = tc.node
		if c := leader.post(t, alertPayload("firing", time.Now().UTC().Truncate(time.Second), l)); c != http.StatusOK {
			t.Errorf("alert for %q: %d, want 200", tc.node, c)
		}
		got := matching(leader.decisions(t), func(d responderDecision) bool { return d.Action == "cordon" && d.Labels["node"] == tc.node })
		if len(got) != 1 || got[0].Result != "refused" || got[0].Guard != tc.guard {
			t.Errorf("alert for node %q: decisions %+v, want one refused by %s", tc.node, got, tc.guard)
		}
	}

	// quarantine: the ghost's LISTs now fail fast with 429.
	for range 3 {
		res, err := ghost.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
		if err != nil || res.Code != http.StatusTooManyRequests || res.Duration >= time.Second {
			t.Errorf("the ghost's LIST after quarantine: %s (%v), want 429 well under 1 s", res, err)
		}
	}
	after, _ := ghost.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
	t.Logf("%s: quarantine: the ghost's LIST went from %s to %s", since(), before, after)

	// isolate: the FlowSchema, its owner, what it catches and what it does not.
	fs, err := s.admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-isolate-1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("isolate's FlowSchema: %v", err)
	}
	isolatedAt := time.Now()
	if !appliedBy(fs.ManagedFields, "herd") || fs.Spec.MatchingPrecedence <= 400 || fs.Spec.MatchingPrecedence >= 500 ||
		fs.Spec.PriorityLevelConfiguration.Name != "herd-isolate" || fs.Labels["app.kubernetes.io/managed-by"] != "herd" {
		t.Errorf("FlowSchema herd-isolate-1: managers %v, precedence %d, level %s, labels %v; want applied by herd, 400 < precedence < 500 (system-nodes), herd-isolate, managed-by herd",
			managers(fs.ManagedFields), fs.Spec.MatchingPrecedence, fs.Spec.PriorityLevelConfiguration.Name, fs.Labels)
	}
	kubelet := s.cp.Config("kubelet:node-1")
	for _, tc := range []struct {
		what, uri string
		isolated  bool
	}{
		{"LIST pods", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1", true},
		{"its Lease", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", false},
		{"its Node", "/api/v1/nodes/node-1", false},
		{"WATCH pods", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&watch=true&timeoutSeconds=1", false},
	} {
		uid := servedBy(ctx, t, kubelet, tc.uri)
		if (uid == string(fs.UID)) != tc.isolated {
			t.Errorf("kubelet node-1 %s: served by FlowSchema UID %q; herd-isolate-1 is %s; want isolated=%v", tc.what, uid, fs.UID, tc.isolated)
		}
	}
	dispatched := apfDispatched(ctx, t, s.admin, "herd-isolate-1")
	if dispatched == 0 {
		t.Errorf("apiserver_flowcontrol_dispatched_requests_total{flow_schema=\"herd-isolate-1\"} = 0")
	}
	t.Logf("%s: isolate: herd-isolate-1 at precedence %d, %v requests dispatched through it", since(), fs.Spec.MatchingPrecedence, dispatched)

	// flag-metrics-server: the annotation, never the spec.
	// (A Deployment's generation counts annotation changes too, so the
	// spec itself is compared.)
	ms, err := s.admin.AppsV1().Deployments("kube-system").Get(ctx, "metrics-server", metav1.GetOptions{})
	if err != nil || ms.Annotations["herd.dev/kubelet-auth"] != "token" || !equality.Semantic.DeepEqual(ms.Spec, s.metricsServer.Spec) {
		t.Errorf("metrics-server: annotations %v (%v), spec changed: %v; want herd.dev/kubelet-auth=token and the spec untouched", ms.Annotations, err, !equality.Semantic.DeepEqual(ms.Spec, s.metricsServer.Spec))
	}

	// Failover: kill the leader; the follower takes over within the Lease.
	isolateApplies := func() int {
		n := 0
		for _, w := range writesBy(t, s.logPath, responderUser) {
			if w.on("flowschemas", "herd-isolate-1") && !w.dryRun() {
				n++
			}
		}
		return n
	}
	appliesBefore := isolateApplies()
	killed := time.Now()
	leader.p.Kill()
	waitCtx(ctx, t, respLease+5*time.Second, "the follower to take over", follower.ready)
	took := time.Since(killed)
	if took > respLease+2*time.Second {
		t.Errorf("failover took %v, want within the lease duration (%v) plus retries", took, respLease)
	}
	t.Logf("%s: %s killed; %s leads after %v", since(), leader.Name, follower.Name, took.Round(100*time.Millisecond))
	leader, follower = follower, nil
	// Alertmanager repeats its notifications to the new leader: no action twice.
	waitCtx(ctx, t, respRepeat+30*time.Second, "Alertmanager's repeat to reach the new leader", func() bool {
		return len(matching(leader.decisions(t), func(d responderDecision) bool { return d.Action == "isolate" })) > 0 &&
			len(matching(leader.decisions(t), func(d responderDecision) bool { return d.Action == "cordon" && d.Target == "node/node-1" })) > 0
	})
	for _, d := range matching(leader.decisions(t), func(d responderDecision) bool {
		return (d.Action == "isolate" || d.Target == "node/node-1") && d.Status == "firing"
	}) {
		if d.Result != "noop" {
			t.Errorf("after failover: %s %s %s (%s), want noop", d.Action, d.Target, d.Result, d.Reason)
		}
	}
	if p := nodePatches("node-1"); len(p) != 1 {
		t.Errorf("after failover: %d patches of node-1, want still 1: %v", len(p), p)
	}
	if n := isolateApplies(); n != appliesBefore {
		t.Errorf("after failover: %d applies of herd-isolate-1, want still %d", n, appliesBefore)
	}
	if un2 := unschedulable(ctx, t, s.admin); len(un2) > respAllowed {
		t.Errorf("after failover (the new leader has no cooldown in memory): unschedulable %v, more than %d", un2, respAllowed)
	}

	// A person takes over the cordon herd made of herdCordoned.
	patch := []byte(`{"metadata":{"annotations":{"herd.dev/reason":"investigating disk errors"}}}`)
	if _, err := s.admin.CoreV1().Nodes().Patch(ctx, herdCordoned, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-annotate"}); err != nil {
		t.Fatal(err)
	}

	// The isolation survives the apiserver's periodic APF maintenance.
	if wait := time.Until(isolatedAt.Add(65 * time.Second)); wait > 0 {
		t.Logf("%s: waiting %v for the apiserver's APF maintenance to run", since(), wait.Round(time.Second))
		time.Sleep(wait)
	}
	fs2, err := s.admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-isolate-1", metav1.GetOptions{})
	if err != nil || fs2.UID != fs.UID || fs2.Spec.MatchingPrecedence != fs.Spec.MatchingPrecedence || !appliedBy(fs2.ManagedFields, "herd") {
		t.Errorf("after 65 s: herd-isolate-1 %v (err %v); want the same object, still herd's", fs2, err)
	}
	if more := apfDispatched(ctx, t, s.admin, "herd-isolate-1"); more <= dispatched {
		t.Errorf("dispatched through herd-isolate-1: %v then %v; the storm's LISTs should keep going through it", dispatched, more)
	}

	// The storm and the ghost stop: everything herd did is undone, except
	// what people own.
	s.stop()
	stopped := time.Now()
	waitCtx(ctx, t, 3*time.Minute, "node-1 uncordoned, herd's APF objects removed", func() bool {
		n1, err := s.admin.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
		if err != nil || n1.Spec.Unschedulable || n1.Annotations["herd.dev/cordoned-by"] != "" {
			return false
		}
		return len(herdFlowSchemas(ctx, t, s.admin)) == 0 && len(herdLevels(ctx, t, s.admin)) == 0
	})
	t.Logf("%s: resolved and undone %v after the storm stopped", since(), time.Since(stopped).Round(time.Second))
	for _, n := range []string{herdCordoned, respPersonal} {
		node, err := s.admin.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil || !node.Spec.Unschedulable {
			t.Errorf("node %s: schedulable again (%v); a person owns its cordon", n, err)
		}
	}
	waitCtx(ctx, t, time.Minute, "the resolve of "+herdCordoned+" to be refused for ownership", func() bool {
		return len(matching(leader.decisions(t), func(d responderDecision) bool {
			return d.Action == "cordon" && d.Status == "resolved" && d.Target == "node/"+herdCordoned && d.Guard == "ownership"
		})) > 0
	})

	// Everything herd wrote, from the audit log: only its own objects,
	// the nodes it cordoned and metrics-server's annotation.
	allowed := map[string]bool{"nodes/node-1": true, "nodes/" + herdCordoned: true,
		"flowschemas/herd-isolate-1": true, "flowschemas/herd-quarantine-1": true,
		"prioritylevelconfigurations/herd-isolate": true, "prioritylevelconfigurations/herd-quarantine": true,
		"deployments/metrics-server": true}
	for _, w := range writesBy(t, s.logPath, responderUser) {
		if w.bookkeeping() || w.ObjectRef == nil {
			continue
		}
		if !allowed[w.ObjectRef.Resource+"/"+w.ObjectRef.Name] {
			t.Errorf("herd wrote to an object it does not own: %s", w)
		}
	}
}

// startResponderStack starts the control plane, the exporter, Prometheus
// with the mixin and Alertmanager routing to a leaderService, and the
// scenario's load: 12 kubelets in a relist loop and a ghost kubelet.
func startResponderStack(ctx context.Context, t *testing.T) *responderStack {
	t.Helper()
	mixin := renderMixinWith(t, mixinOverrides)
	reserved, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	auditAddr := reserved.Addr().String()
	s := &responderStack{dir: t.TempDir()}
	s.logPath = filepath.Join(s.dir, "audit.log")
	nodes := []string{respGhost}
	for i := 1; i <= respNodes; i++ {
		nodes = append(nodes, fmt.Sprintf("node-%d", i))
	}
	s.cp, err = controlplane.Start(ctx, controlplane.Options{
		Nodes: nodes,
		Identities: map[string]controlplane.Identity{
			"herd":           {User: herdUser, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:herd"}},
			"herd-responder": {User: responderUser, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:herd"}},
		},
		AuditPolicy:     respAuditRule,
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
	for i := 1; i <= respNodes; i++ {
		createNode(ctx, t, s.admin, fmt.Sprintf("node-%d", i), fmt.Sprintf("10.0.0.%d", i))
	}
	// A person cordoned node-20 before anything happened.
	if _, err := s.admin.CoreV1().Nodes().Patch(ctx, respPersonal, types.MergePatchType, []byte(`{"spec":{"unschedulable":true}}`),
		metav1.PatchOptions{FieldManager: "kubectl-cordon"}); err != nil {
		t.Fatal(err)
	}
	createMixinMetricsServer(ctx, t, s.admin)
	if s.metricsServer, err = s.admin.AppsV1().Deployments("kube-system").Get(ctx, "metrics-server", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	cfg.Accounting.Window = model.Duration(mixinWindow)
	reserved.Close()
	herd := startExporterOnAudit(t, cfg, exporter.Options{
		AuditInsecure: true,
		Kube:          kube.Tune(s.cp.Config("herd"), "exporter"),
		GhostGrace:    time.Second,
	}, auditAddr)
	waitFor(t, 60*time.Second, "herd exporter /readyz", func() bool {
		resp, err := http.Get(herd.MetricsURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	s.svc = newLeaderService(t)
	am := promstack.StartAlertmanager(t, fmt.Sprintf(`route:
  receiver: herd
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: %s
receivers:
  - name: herd
    webhook_configs:
      - url: %q
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization:
            credentials: alertmanager-token-0123456789
`, model.Duration(respRepeat), s.svc.URL+"/alerts"))
	s.prom = promstack.StartPrometheus(t, promstack.PromOptions{
		RuleFiles: map[string]string{
			"herd_alerts.json": string(mixin.Alerts),
			"herd_rules.json":  string(mixin.Rules),
		},
		ScrapeConfigs:      []promstack.ScrapeConfig{{JobName: mixinJob, Targets: []string{strings.TrimPrefix(herd.MetricsURL, "http://")}}},
		ScrapeInterval:     time.Second,
		EvaluationInterval: time.Second,
		AlertmanagerURLs:   []string{am.URL},
	})

	loadCtx, stop := context.WithCancel(ctx)
	s.stop = stop
	for i := 1; i <= respStale; i++ {
		node := fmt.Sprintf("node-%d", i)
		k := newClient(t, func() (*nodesim.Client, error) {
			return nodesim.NewKubelet(s.cp, node, nodesim.Options{SourceIP: fmt.Sprintf("10.0.0.%d", i)})
		})
		pods := nodesim.Pods.OnNode(node)
		s.loops.run(loadCtx, "storm", mixinStormEvery, func(ctx context.Context) (nodesim.Result, error) {
			return k.ListConsistent(ctx, pods)
		})
	}
	ghost := s.ghostClient(t)
	s.loops.run(loadCtx, "ghost", time.Second, func(ctx context.Context) (nodesim.Result, error) {
		return ghost.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
	})
	return s
}

func (s *responderStack) ghostClient(t *testing.T) *nodesim.Client {
	return newClient(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubelet(s.cp, respGhost, nodesim.Options{SourceIP: respGhostIP})
	})
}

func unschedulable(ctx context.Context, t *testing.T, c kubernetes.Interface) []string {
	t.Helper()
	l, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range l.Items {
		if n.Spec.Unschedulable {
			out = append(out, n.Name)
		}
	}
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func herdFlowSchemas(ctx context.Context, t *testing.T, c kubernetes.Interface) []string {
	t.Helper()
	l, err := c.FlowcontrolV1().FlowSchemas().List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=herd"})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fs := range l.Items {
		out = append(out, fs.Name)
	}
	return out
}

func herdLevels(ctx context.Context, t *testing.T, c kubernetes.Interface) []string {
	t.Helper()
	l, err := c.FlowcontrolV1().PriorityLevelConfigurations().List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=herd"})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, pl := range l.Items {
		out = append(out, pl.Name)
	}
	return out
}

func appliedBy(mf []metav1.ManagedFieldsEntry, manager string) bool {
	for _, m := range mf {
		if m.Manager == manager && m.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}

func managers(mf []metav1.ManagedFieldsEntry) []string {
	var out []string
	for _, m := range mf {
		out = append(out, m.Manager+"/"+string(m.Operation))
	}
	return out
}

// checkEvent waits for an events.k8s.io Event with reason about an object
// of kind, from herd's responder.
func checkEvent(ctx context.Context, t *testing.T, c kubernetes.Interface, kind, reason string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		l, err := c.EventsV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, e := range l.Items {
				if e.Reason == reason && e.Regarding.Kind == kind && e.ReportingController == "herd.dev/responder" {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("no Event with reason %s regarding a %s from herd.dev/responder (err %v)", reason, kind, err)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// servedBy makes a request as cfg's identity and returns the UID of the
// FlowSchema that APF chose for it (the X-Kubernetes-PF-FlowSchema-UID
// response header).
func servedBy(ctx context.Context, t *testing.T, cfg *rest.Config, uri string) string {
	t.Helper()
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: rt, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", uri, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.Header.Get("X-Kubernetes-PF-FlowSchema-UID")
}

// apfDispatched reads apiserver_flowcontrol_dispatched_requests_total for
// a FlowSchema from the apiserver's /metrics.
func apfDispatched(ctx context.Context, t *testing.T, c kubernetes.Interface, flowSchema string) float64 {
	t.Helper()
	b, err := c.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		t.Fatalf("apiserver /metrics: %v", err)
	}
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "apiserver_flowcontrol_dispatched_requests_total{") && strings.Contains(line, `flow_schema="`+flowSchema+`"`) {
			if f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
				sum += f
			}
		}
	}
	return sum
}
