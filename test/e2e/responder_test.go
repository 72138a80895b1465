package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/stack"
)

const (
	respNodes    = 20 // Nodes in the cluster
	respStale    = 12 // kubelets in a relist loop: HerdStaleKubelet, and a HerdRelistStorm of kubelet pod LISTs
	respPersonal = "node-20"
	respFraction = 0.15 // of 20 nodes: at most 3 unschedulable
	respAllowed  = 3
	respHoldDown = 5 * time.Second
	respRepeat   = 20 * time.Second
)

// respAuditPolicy logs the node-side clients and what the responder does.
var respAuditPolicy = metadataPolicy([]string{"system:nodes"}, []string{stack.ResponderUser})

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
`, promURL, rateWindow, model.Duration(respHoldDown), respFraction)
}

// responderScenario is the stack the responder acts on and what its
// stages leave for later steps.
type responderScenario struct {
	*stack.Stack
	start time.Time
	svc   *leaderService
	ghost *nodesim.Client
	// metricsServer is the Deployment as created, before herd saw it.
	metricsServer *appsv1.Deployment
	loops         loops
	stopLoad      context.CancelFunc // the storm and the ghost

	dryRun                   *stack.Responder
	ra, rb, leader, follower *stack.Responder
	codes                    map[string]map[int]int // the 100 deliveries' answers, by replica
	delivered                int                    // deliveries before Alertmanager's reached the leader
	herdCordoned             string                 // the node herd cordoned besides node-1
	isolation                *flowcontrolv1.FlowSchema
	isolatedAt               time.Time
	dispatched               float64
	failoverTook             time.Duration
	appliesBefore            int
	stopped                  time.Time
}

func (s *responderScenario) since() string {
	return time.Since(s.start).Round(100 * time.Millisecond).String()
}

// nodePatches are herd's patches of a node (not dry runs) in the audit log.
func (s *responderScenario) nodePatches(t *testing.T, name string) []auditRecord {
	var out []auditRecord
	for _, w := range writesBy(t, s.AuditLogPath, stack.ResponderUser) {
		if w.On("nodes", name) && !w.DryRun() {
			out = append(out, w)
		}
	}
	return out
}

// isolateApplies counts herd's applies of herd-isolate-1 (not dry runs).
func (s *responderScenario) isolateApplies(t *testing.T) int {
	n := 0
	for _, w := range writesBy(t, s.AuditLogPath, stack.ResponderUser) {
		if w.On("flowschemas", "herd-isolate-1") && !w.DryRun() {
			n++
		}
	}
	return n
}

// TestResponder drives `herd responder` with Alertmanager 0.25 on a real
// control plane, a real herd exporter and Prometheus with the mixin: first
// in dry-run (the default), then as two replicas that act, with the
// acceptance of issue 5 checked from the apiserver's audit log, the
// objects, the apiserver's APF metrics and response headers. Each step runs
// alone too: go test ./test/e2e/ -run 'TestResponder/uncordon_only_what_herd_cordoned'.
func TestResponder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	s := startResponderScenario(ctx, t)
	defer s.loops.wg.Wait()
	defer s.stopLoad()
	t.Logf("%s: stack up, storm and ghost running", s.since())

	// The stages, in the order the whole test performs them.
	dryRun := herdtest.NewPrereq("the dry-run responder decided every action", func(t *testing.T) {
		s.dryRun = startReplica(ctx, t, s.Stack, "dry-run", responderConfig(s.PrometheusURL, true))
		s.svc.set(s.dryRun)
		herdtest.Wait(t, 3*time.Minute, "the dry-run responder to decide cordon, isolate, quarantine and flag-metrics-server", func() bool {
			ds := decisions(t, s.dryRun)
			for _, a := range []policy.Action{"cordon", "isolate", "quarantine", "flag-metrics-server"} {
				if len(matching(ds, func(d stack.Decision) bool { return d.Action == a && d.Result == "dry_run" })) == 0 {
					return false
				}
			}
			return true
		})
		t.Logf("%s: dry run decided every action", s.since())
	})
	// What the whole run's dry-run phase waits for, for a step run alone:
	// Prometheus fires every alert the scenario causes, so that evidence
	// confirms what Alertmanager delivers.
	evidence := herdtest.NewPrereq("the scenario's alerts firing in Prometheus", func(t *testing.T) {
		want := map[string]float64{"HerdStaleKubelet": respStale, "HerdRelistStorm": 1, "HerdGhostNodeClient": 1, "HerdMetricsServerTokenAuth": 1}
		herdtest.Wait(t, 3*time.Minute, fmt.Sprintf("Prometheus to fire %v", want), func() bool {
			vec, err := s.Query(ctx, `count by (alertname) (ALERTS{alertstate="firing"})`)
			if err != nil {
				return false
			}
			n := 0
			for _, v := range vec {
				if w, ok := want[string(v.Metric["alertname"])]; ok && float64(v.Value) >= w {
					n++
				}
			}
			return n == len(want)
		})
	})
	acting := herdtest.NewPrereq("two acting replicas, one leading", func(t *testing.T) {
		evidence.Need(t)
		if s.dryRun != nil {
			_, _ = s.dryRun.Proc.Stop(10 * time.Second)
		}
		acting := responderConfig(s.PrometheusURL, false)
		s.ra = startReplica(ctx, t, s.Stack, "replica-a", acting)
		s.rb = startReplica(ctx, t, s.Stack, "replica-b", acting)
		s.svc.pause(true)
		s.svc.set(s.ra, s.rb)
		herdtest.Wait(t, 30*time.Second, "one replica to lead", func() bool {
			a, b := s.ra.Ready(ctx), s.rb.Ready(ctx)
			switch {
			case a && !b:
				s.leader, s.follower = s.ra, s.rb
			case b && !a:
				s.leader, s.follower = s.rb, s.ra
			default:
				return false
			}
			return true
		})
		t.Logf("%s: %s leads, %s follows", s.since(), s.leader.Name, s.follower.Name)
	})
	stale1 := map[string]string{"alertname": "HerdStaleKubelet", "node": "node-1", "reason": "relist_loop", "severity": "warning", "job": mixinJob}
	hundredDeliveries := herdtest.NewPrereq("the same alert delivered 100 times to both replicas", func(t *testing.T) {
		acting.Need(t)
		payload := alertPayload("firing", time.Now().Add(-time.Minute).UTC().Truncate(time.Second), stale1)
		s.codes = map[string]map[int]int{s.ra.Name: {}, s.rb.Name: {}}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range 100 {
			r := []*stack.Responder{s.ra, s.rb}[i%2]
			wg.Go(func() {
				c, err := r.Post(ctx, payload)
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				s.codes[r.Name][c]++
				mu.Unlock()
			})
		}
		wg.Wait()
		herdtest.Wait(t, 10*time.Second, "the cordon patch of node-1 in the audit log", func() bool { return len(s.nodePatches(t, "node-1")) > 0 })
		time.Sleep(2 * time.Second) // any second patch would be logged by now
	})
	amDelivered := herdtest.NewPrereq("the leader acted on Alertmanager's deliveries", func(t *testing.T) {
		hundredDeliveries.Need(t) // node-1 is herd's first cordon
		s.delivered = s.svc.delivered()
		s.svc.pause(false)
		herdtest.Wait(t, 2*time.Minute, "the leader to act on Alertmanager's deliveries", func() bool {
			ds := decisions(t, s.leader)
			for _, a := range []policy.Action{"isolate", "quarantine", "flag-metrics-server"} {
				if len(matching(ds, func(d stack.Decision) bool { return d.Action == a && d.Result == "applied" })) == 0 {
					return false
				}
			}
			seen := map[string]bool{}
			for _, d := range matching(ds, func(d stack.Decision) bool { return d.Action == "cordon" && d.Status == "firing" }) {
				seen[d.Target] = true
			}
			return len(seen) >= respStale
		})
		for _, n := range unschedulable(ctx, t, s.Admin) {
			if n != respPersonal && n != "node-1" {
				s.herdCordoned = n
			}
		}
		if s.herdCordoned == "" {
			t.Fatalf("herd cordoned no node besides node-1 (unschedulable: %v)", unschedulable(ctx, t, s.Admin))
		}
		t.Logf("%s: the leader acted on Alertmanager's deliveries", s.since())
	})
	isolation := herdtest.NewPrereq("herd-isolate-1 read, its traffic counted", func(t *testing.T) {
		amDelivered.Need(t)
		var err error
		if s.isolation, err = s.Admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-isolate-1", metav1.GetOptions{}); err != nil {
			t.Fatalf("isolate's FlowSchema: %v", err)
		}
		s.isolatedAt = time.Now()
		s.dispatched = apfDispatched(ctx, t, s.Admin, "herd-isolate-1")
	})
	failover := herdtest.NewPrereq("the leader killed, the follower leading", func(t *testing.T) {
		amDelivered.Need(t)
		s.appliesBefore = s.isolateApplies(t)
		killed := time.Now()
		s.leader.Proc.Kill()
		herdtest.Wait(t, respLease+5*time.Second, "the follower to take over", func() bool { return s.follower.Ready(ctx) })
		s.failoverTook = time.Since(killed)
		t.Logf("%s: %s killed; %s leads after %v", s.since(), s.leader.Name, s.follower.Name, s.failoverTook.Round(100*time.Millisecond))
		s.leader, s.follower = s.follower, nil
	})
	personTakesOver := herdtest.NewPrereq("a person took over herd's cordon", func(t *testing.T) {
		amDelivered.Need(t)
		patch := []byte(`{"metadata":{"annotations":{"herd.dev/reason":"investigating disk errors"}}}`)
		if _, err := s.Admin.CoreV1().Nodes().Patch(ctx, s.herdCordoned, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-annotate"}); err != nil {
			t.Fatal(err)
		}
	})
	loadStopped := herdtest.NewPrereq("the storm and the ghost stopped, herd's undo done", func(t *testing.T) {
		personTakesOver.Need(t)
		s.stopLoad()
		s.stopped = time.Now()
		herdtest.Wait(t, 3*time.Minute, "node-1 uncordoned, herd's APF objects removed", func() bool {
			n1, err := s.Admin.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
			if err != nil || n1.Spec.Unschedulable || n1.Annotations["herd.dev/cordoned-by"] != "" {
				return false
			}
			fs, levels := herdAPF(ctx, t, s.Admin)
			return len(fs) == 0 && len(levels) == 0
		})
		t.Logf("%s: resolved and undone %v after the storm stopped", s.since(), time.Since(s.stopped).Round(time.Second))
	})

	// --- Dry run (the default). ---
	t.Run("dry run decides every action within the guards", func(t *testing.T) {
		dryRun.Need(t)
		// Alertmanager may deliver the stale nodes beyond the limit a group
		// interval after the first ones.
		fraction := func(d stack.Decision) bool { return d.Action == "cordon" && d.Guard == "max_unschedulable_fraction" }
		if err := herdtest.Poll(ctx, 30*time.Second, "a cordon refused by max_unschedulable_fraction", func(context.Context) error {
			if len(matching(decisions(t, s.dryRun), fraction)) == 0 {
				return errors.New("none yet")
			}
			return nil
		}); err != nil {
			t.Errorf("dry run: no cordon refused by max_unschedulable_fraction: %v", err)
		}
		ds := decisions(t, s.dryRun)
		if n := len(matching(ds, func(d stack.Decision) bool { return d.Action == "cordon" && d.Result == "dry_run" })); n != respAllowed-1 {
			t.Errorf("dry run: %d cordons would have been made, want %d (%d allowed, %s cordoned by a person): %+v", n, respAllowed-1, respAllowed, respPersonal, ds)
		}
		if got := metric(t, s.dryRun, "herd_responder_actions_total", "action=cordon", "result=dry_run"); got < 1 {
			t.Errorf("herd_responder_actions_total{action=cordon,result=dry_run} = %v", got)
		}
		checkEvent(ctx, t, s.Admin, "Node", "HerdCordonDryRun")
		checkEvent(ctx, t, s.Admin, "FlowSchema", "HerdIsolateDryRun")
	})
	t.Run("dry run changes nothing", func(t *testing.T) {
		dryRun.Need(t)
		dry := 0
		for _, w := range writesBy(t, s.AuditLogPath, stack.ResponderUser) {
			switch {
			case w.Bookkeeping():
			case w.DryRun():
				dry++
			default:
				t.Errorf("dry run: herd made a mutating request: %s", w)
			}
		}
		if dry == 0 {
			t.Errorf("dry run: no server-side dry-run request in the audit log; herd should validate what it would do")
		}
		if fs, _ := herdAPF(ctx, t, s.Admin); len(fs) != 0 {
			t.Errorf("dry run created FlowSchemas %v", fs)
		}
		if un := unschedulable(ctx, t, s.Admin); len(un) != 1 || un[0] != respPersonal {
			t.Errorf("dry run: unschedulable nodes %v, want only %s", un, respPersonal)
		}
		t.Logf("%s: dry run: %d server-side dry runs, no mutation", s.since(), dry)
	})
	t.Run("a ghost too-large LIST takes 3 s before quarantine", func(t *testing.T) {
		before, _ := s.ghost.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
		t.Logf("%s: the ghost's LIST before quarantine: %s", s.since(), before)
		if before.Code != http.StatusGatewayTimeout || before.Duration < 2*time.Second {
			t.Errorf("the ghost's too-large-RV LIST before quarantine: %s, want 504 after ~3 s", before)
		}
	})

	// --- Two replicas that act. ---
	t.Run("one replica leads", func(t *testing.T) {
		acting.Need(t)
		if s.follower.Ready(ctx) {
			t.Errorf("%s and %s both report ready", s.leader.Name, s.follower.Name)
		}
	})
	t.Run("bad credentials and bad input are refused", func(t *testing.T) {
		acting.Need(t)
		// Auth and bad input, on the real binary: 401 for no, wrong or
		// wrong-length tokens; 400 malformed; 413 over 4 MiB.
		for _, tc := range []struct {
			name, token string
			body        []byte
			want        int
		}{
			{"no credentials", "", []byte(`{}`), http.StatusUnauthorized},
			{"wrong token", strings.Repeat("x", len(s.leader.Token)), []byte(`{}`), http.StatusUnauthorized},
			{"wrong-length token", s.leader.Token + "x", []byte(`{}`), http.StatusUnauthorized},
			{"malformed", s.leader.Token, []byte(`{"version":"4","alerts":[`), http.StatusBadRequest},
			{"5 MiB", s.leader.Token, append([]byte(`{"version":"4","alerts":[],"x":"`), bytes.Repeat([]byte("a"), 5<<20)...), http.StatusRequestEntityTooLarge},
		} {
			if got := postAs(t, s.leader.URL, tc.token, tc.body); got != tc.want {
				t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
			}
		}
	})
	t.Run("an alert delivered 100 times to both replicas acts once", func(t *testing.T) {
		hundredDeliveries.Need(t)
		if s.codes[s.leader.Name][http.StatusOK] != 50 || s.codes[s.follower.Name][http.StatusServiceUnavailable] != 50 {
			t.Errorf("100 deliveries: codes %v; want 50×200 from the leader %s and 50×503 from the follower", s.codes, s.leader.Name)
		}
		if p := s.nodePatches(t, "node-1"); len(p) != 1 {
			t.Errorf("100 concurrent deliveries to two replicas made %d patches of node-1, want exactly 1: %v", len(p), p)
		}
		cordon1 := func(d stack.Decision) bool {
			return d.Action == "cordon" && d.Target == "node/node-1" && d.Result == "applied"
		}
		if n := len(matching(decisions(t, s.ra), cordon1)) + len(matching(decisions(t, s.rb), cordon1)); n != 1 {
			t.Errorf("%d applied cordon records for node-1 across both replicas, want 1", n)
		}
		if d := metric(t, s.leader, "herd_responder_duplicate_deliveries_total", "action=cordon"); d != 49 {
			t.Errorf("herd_responder_duplicate_deliveries_total{action=cordon} = %v on the leader, want 49", d)
		}
		t.Logf("%s: 100 concurrent deliveries: %v, one patch, one record", s.since(), s.codes)
	})
	t.Run("cordons stop at the blast radius", func(t *testing.T) {
		amDelivered.Need(t)
		// At most 3 of 20 unschedulable, the person's node counted.
		un := unschedulable(ctx, t, s.Admin)
		if len(un) > respAllowed || !slices.Contains(un, respPersonal) || !slices.Contains(un, "node-1") {
			t.Errorf("unschedulable nodes %v: want at most %d (%g of %d), %s and node-1 among them", un, respAllowed, respFraction, respNodes, respPersonal)
		}
		refused := matching(decisions(t, s.leader), func(d stack.Decision) bool { return d.Action == "cordon" && d.Result == "refused" })
		byGuard := map[guard.Guard]int{}
		for _, d := range refused {
			byGuard[d.Guard]++
		}
		if byGuard["max_unschedulable_fraction"] == 0 || byGuard["max_unschedulable_fraction"]+byGuard["storm_cooldown"] < respStale-2 {
			t.Errorf("cordon refusals by guard %v; want the %d stale nodes beyond the limit refused by max_unschedulable_fraction, then storm_cooldown", byGuard, respStale-2)
		}
		if got := metric(t, s.leader, "herd_responder_guard_refusals_total", "action=cordon", "guard=max_unschedulable_fraction"); got < 1 {
			t.Errorf("herd_responder_guard_refusals_total{action=cordon,guard=max_unschedulable_fraction} = %v", got)
		}
		checkEvent(ctx, t, s.Admin, "Node", "HerdCordonRefused")
		for _, c := range s.svc.codesSince(s.delivered) {
			if c != http.StatusOK {
				t.Errorf("Alertmanager got %d from the responder; refusals and no-ops must be 200 so it does not retry (codes: %v)", c, s.svc.codesSince(s.delivered))
				break
			}
		}
		t.Logf("%s: blast radius: unschedulable %v; cordon refusals %v", s.since(), un, byGuard)
	})
	t.Run("alerts Prometheus or the API do not confirm are refused", func(t *testing.T) {
		acting.Need(t)
		for _, tc := range []struct {
			node  string
			guard guard.Guard
		}{
			{"node-15", "verification"},      // exists, not stale
			{"no-such-node", "verification"}, // does not exist
			{"Bad_Name!", "label_validation"},
		} {
			l := maps.Clone(stale1)
			l["node"] = tc.node
			if c, err := s.leader.Post(ctx, alertPayload("firing", time.Now().UTC().Truncate(time.Second), l)); err != nil || c != http.StatusOK {
				t.Errorf("alert for %q: %d (%v), want 200", tc.node, c, err)
			}
			got := matching(decisions(t, s.leader), func(d stack.Decision) bool { return d.Action == "cordon" && d.Labels["node"] == tc.node })
			if len(got) != 1 || got[0].Result != "refused" || got[0].Guard != tc.guard {
				t.Errorf("alert for node %q: decisions %+v, want one refused by %s", tc.node, got, tc.guard)
			}
		}
	})
	t.Run("quarantine makes ghost LISTs fail fast", func(t *testing.T) {
		amDelivered.Need(t)
		for range 3 {
			res, err := s.ghost.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
			if err != nil || res.Code != http.StatusTooManyRequests || res.Duration >= time.Second {
				t.Errorf("the ghost's LIST after quarantine: %s (%v), want 429 well under 1 s", res, err)
			}
		}
		after, _ := s.ghost.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
		t.Logf("%s: quarantine: the ghost's LIST now gets %s", s.since(), after)
	})
	t.Run("isolate catches only the storm LISTs", func(t *testing.T) {
		isolation.Need(t)
		fs := s.isolation
		if !appliedBy(fs.ManagedFields, "herd") || fs.Spec.MatchingPrecedence <= 400 || fs.Spec.MatchingPrecedence >= 500 ||
			fs.Spec.PriorityLevelConfiguration.Name != "herd-isolate" || fs.Labels["app.kubernetes.io/managed-by"] != "herd" {
			t.Errorf("FlowSchema herd-isolate-1: managers %v, precedence %d, level %s, labels %v; want applied by herd, 400 < precedence < 500 (system-nodes), herd-isolate, managed-by herd",
				managers(fs.ManagedFields), fs.Spec.MatchingPrecedence, fs.Spec.PriorityLevelConfiguration.Name, fs.Labels)
		}
		servedByIsolation(ctx, t, s.CP.Config("kubelet:node-1"), fs.UID, "kubelet node-1", []isolationCase{
			{"LIST pods", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1", true},
			{"its Lease", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", false},
			{"its Node", "/api/v1/nodes/node-1", false},
			{"WATCH pods", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&watch=true&timeoutSeconds=1", false},
		})
		s.dispatched = apfDispatched(ctx, t, s.Admin, "herd-isolate-1")
		if s.dispatched == 0 {
			t.Errorf("apiserver_flowcontrol_dispatched_requests_total{flow_schema=\"herd-isolate-1\"} = 0")
		}
		t.Logf("%s: isolate: herd-isolate-1 at precedence %d, %v requests dispatched through it", s.since(), fs.Spec.MatchingPrecedence, s.dispatched)
	})
	t.Run("flag-metrics-server annotates and leaves the spec", func(t *testing.T) {
		amDelivered.Need(t)
		// (A Deployment's generation counts annotation changes too, so the
		// spec itself is compared.)
		ms, err := s.Admin.AppsV1().Deployments("kube-system").Get(ctx, "metrics-server", metav1.GetOptions{})
		if err != nil || ms.Annotations["herd.dev/kubelet-auth"] != "token" || !equality.Semantic.DeepEqual(ms.Spec, s.metricsServer.Spec) {
			t.Errorf("metrics-server: annotations %v (%v), spec changed: %v; want herd.dev/kubelet-auth=token and the spec untouched", ms.Annotations, err, !equality.Semantic.DeepEqual(ms.Spec, s.metricsServer.Spec))
		}
	})
	t.Run("a follower takes over within the lease and does nothing twice", func(t *testing.T) {
		failover.Need(t)
		if s.failoverTook > respLease+2*time.Second {
			t.Errorf("failover took %v, want within the lease duration (%v) plus retries", s.failoverTook, respLease)
		}
		// Alertmanager repeats its notifications to the new leader: no
		// action twice.
		herdtest.Wait(t, respRepeat+30*time.Second, "Alertmanager's repeat to reach the new leader", func() bool {
			return len(matching(decisions(t, s.leader), func(d stack.Decision) bool { return d.Action == "isolate" })) > 0 &&
				len(matching(decisions(t, s.leader), func(d stack.Decision) bool { return d.Action == "cordon" && d.Target == "node/node-1" })) > 0
		})
		for _, d := range matching(decisions(t, s.leader), func(d stack.Decision) bool {
			return (d.Action == "isolate" || d.Target == "node/node-1") && d.Status == "firing"
		}) {
			if d.Result != "noop" {
				t.Errorf("after failover: %s %s %s (%s), want noop", d.Action, d.Target, d.Result, d.Reason)
			}
		}
		if p := s.nodePatches(t, "node-1"); len(p) != 1 {
			t.Errorf("after failover: %d patches of node-1, want still 1: %v", len(p), p)
		}
		if n := s.isolateApplies(t); n != s.appliesBefore {
			t.Errorf("after failover: %d applies of herd-isolate-1, want still %d", n, s.appliesBefore)
		}
		if un := unschedulable(ctx, t, s.Admin); len(un) > respAllowed {
			t.Errorf("after failover (the new leader has no cooldown in memory): unschedulable %v, more than %d", un, respAllowed)
		}
	})
	t.Run("the isolation survives APF maintenance", func(t *testing.T) {
		isolation.Need(t)
		personTakesOver.Need(t) // as in the whole run: a person acts meanwhile
		if wait := time.Until(s.isolatedAt.Add(65 * time.Second)); wait > 0 {
			t.Logf("%s: waiting %v for the apiserver's APF maintenance to run", s.since(), wait.Round(time.Second))
			time.Sleep(wait)
		}
		fs := s.isolation
		fs2, err := s.Admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-isolate-1", metav1.GetOptions{})
		if err != nil || fs2.UID != fs.UID || fs2.Spec.MatchingPrecedence != fs.Spec.MatchingPrecedence || !appliedBy(fs2.ManagedFields, "herd") {
			t.Errorf("after 65 s: herd-isolate-1 %v (err %v); want the same object, still herd's", fs2, err)
		}
		if more := apfDispatched(ctx, t, s.Admin, "herd-isolate-1"); more <= s.dispatched {
			t.Errorf("dispatched through herd-isolate-1: %v then %v; the storm's LISTs should keep going through it", s.dispatched, more)
		}
	})
	t.Run("resolve undoes what herd did", func(t *testing.T) {
		loadStopped.Need(t)
	})
	t.Run("uncordon only what herd cordoned", func(t *testing.T) {
		loadStopped.Need(t)
		for _, n := range []string{s.herdCordoned, respPersonal} {
			node, err := s.Admin.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil || !node.Spec.Unschedulable {
				t.Errorf("node %s: schedulable again (%v); a person owns its cordon", n, err)
			}
		}
		herdtest.Wait(t, time.Minute, "the resolve of "+s.herdCordoned+" to be refused for ownership", func() bool {
			return len(matching(decisions(t, s.leader), func(d stack.Decision) bool {
				return d.Action == "cordon" && d.Status == "resolved" && d.Target == "node/"+s.herdCordoned && d.Guard == "ownership"
			})) > 0
		})
	})
	t.Run("herd writes only its own objects", func(t *testing.T) {
		loadStopped.Need(t)
		// Everything herd wrote, from the audit log: only its own objects,
		// the nodes it cordoned and metrics-server's annotation.
		wroteOnly(t, s.AuditLogPath, "nodes/node-1", "nodes/"+s.herdCordoned,
			"flowschemas/herd-isolate-1", "flowschemas/herd-quarantine-1",
			"prioritylevelconfigurations/herd-isolate", "prioritylevelconfigurations/herd-quarantine",
			"deployments/metrics-server")
	})
}

// startResponderScenario starts the stack (no responder yet; Alertmanager
// routes to a leaderService) and the scenario's load: 12 kubelets in a
// relist loop and a ghost kubelet.
func startResponderScenario(ctx context.Context, t *testing.T) *responderScenario {
	t.Helper()
	s := &responderScenario{start: time.Now()}
	if _, err := herdtest.HerdBinary(ctx); err != nil { // before the scenario's clock
		t.Fatal(err)
	}
	s.svc = newLeaderService(t)
	s.Stack = stack.StartTest(ctx, t, stack.Options{
		Nodes:       respNodes,
		Ghosts:      []string{ghostName},
		AuditPolicy: respAuditPolicy,
		AuditLog:    true,
		Objects: func(ctx context.Context, st *stack.Stack) error {
			// A person cordoned node-20 before anything happened.
			if _, err := st.Admin.CoreV1().Nodes().Patch(ctx, respPersonal, types.MergePatchType, []byte(`{"spec":{"unschedulable":true}}`),
				metav1.PatchOptions{FieldManager: "kubectl-cordon"}); err != nil {
				return err
			}
			var err error
			s.metricsServer, err = createMetricsServer(ctx, st.Admin)
			return err
		},
		Exporter:      scenarioExporter,
		Mixin:         mixinOverrides,
		AlertReceiver: s.svc.URL + "/alerts",
		AlertRepeat:   respRepeat,
		NoResponder:   true,
	})

	loadCtx, stop := context.WithCancel(ctx)
	s.stopLoad = stop
	for i := 1; i <= respStale; i++ {
		node := stack.NodeName(i)
		k := nodesim.ForTest(t, func() (*nodesim.Client, error) {
			return nodesim.NewKubelet(s.CP, node, nodesim.Options{SourceIP: stack.NodeIP(i)})
		})
		pods := nodesim.Pods.OnNode(node)
		s.loops.run(loadCtx, "storm", stormEvery, func(ctx context.Context) (nodesim.Result, error) {
			return k.ListConsistent(ctx, pods)
		})
	}
	s.ghost = nodesim.ForTest(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubelet(s.CP, ghostName, nodesim.Options{SourceIP: ghostIP})
	})
	s.loops.run(loadCtx, "ghost", time.Second, func(ctx context.Context) (nodesim.Result, error) {
		return s.ghost.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
	})
	return s
}
