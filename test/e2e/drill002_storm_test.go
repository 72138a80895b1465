package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/stack"
)

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
		Objects: func(ctx context.Context, s *stack.Stack) error {
			for i := range drillPods {
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d", i), Namespace: "default", Labels: map[string]string{"app": "drill"}},
					Spec: corev1.PodSpec{NodeName: stack.NodeName(i%drillCNIAgents + 1),
						Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
				}
				if _, err := s.Admin.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
					return err
				}
			}
			return nil
		},
	})
	defer s.loops.wg.Wait()
	defer cancel()

	stormCtx, stopStorm := context.WithCancel(ctx)
	defer stopStorm()
	for i := 1; i <= drillCNIAgents; i++ {
		agent := nodesim.ForTest(t, func() (*nodesim.Client, error) {
			return nodesim.NewCiliumAgent(s.CP, nodesim.Options{SourceIP: stack.NodeIP(i)})
		})
		s.loops.run(stormCtx, "storm", drillCNIEvery, func(ctx context.Context) (nodesim.Result, error) {
			return agent.ListConsistent(ctx, nodesim.Pods)
		})
	}
	stormStart := time.Now()
	s.mark(t, "%d cilium-agents (kube-system/cilium, one per node) LIST all %d pods every %v, consistent reads", drillCNIAgents, drillPods, drillCNIEvery)

	storm := map[string]string{"role": "cni", "client": "cilium-agent", "resource": "pods"}
	alerted := herdtest.NewPrereq("HerdRelistStorm delivered", func(t *testing.T) {
		s.waitDelivered(t, 2*time.Minute, "HerdRelistStorm", storm)
	})
	var iso stack.Decision
	isolated := herdtest.NewPrereq("the storm isolated", func(t *testing.T) {
		alerted.Need(t)
		iso = s.waitDecision(t, 30*time.Second, "the isolation of cilium-agent's pod LISTs", func(d stack.Decision) bool {
			return d.Action == "isolate" && d.Status == "firing" && d.Result != "noop"
		})
		s.logf(t, "isolate %s: %s", iso.Result, iso.Reason)
		if iso.Result != "applied" || iso.Target != "flowschema/herd-isolate-1" {
			t.Fatalf("isolate: %+v, want applied as herd-isolate-1", iso)
		}
	})
	// From node-1's address, as the agents call: from loopback herd would
	// rightly see a cilium-agent on no Node (a ghost).
	cilium := nodesim.WithSourceIP(s.CP.Config(controlplane.Cilium), stack.NodeIP(1))
	var fs *flowcontrolv1.FlowSchema
	effective := herdtest.NewPrereq("herd-isolate-1 serving cilium's pod LISTs", func(t *testing.T) {
		isolated.Need(t)
		var err error
		if fs, err = s.Admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-isolate-1", metav1.GetOptions{}); err != nil {
			t.Fatalf("FlowSchema herd-isolate-1: %v", err)
		}
		// APF applies it once its config controller has digested the new
		// schema: wait for the first LIST it serves.
		var took time.Duration
		herdtest.Wait(t, 30*time.Second, "herd-isolate-1 to serve cilium's pod LISTs", func() bool {
			took = time.Since(iso.Time)
			return servedBy(ctx, t, cilium, "/api/v1/pods?limit=1") == string(fs.UID)
		})
		s.mark(t, "the apiserver serves cilium's pod LISTs through herd-isolate-1 %v after it was applied (precedence %d)", took.Round(10*time.Millisecond), fs.Spec.MatchingPrecedence)
	})
	var stopped time.Time
	undone := herdtest.NewPrereq("the storm stopped, herd's objects removed", func(t *testing.T) {
		effective.Need(t)
		stopStorm()
		stopped = time.Now()
		s.mark(t, "the storm stops (%v after it started)", stopped.Sub(stormStart).Round(time.Second))
		herdtest.Wait(t, 2*time.Minute, "herd's FlowSchema and priority level removed", func() bool {
			fs, levels := herdAPF(ctx, t, s.Admin)
			return len(fs) == 0 && len(levels) == 0
		})
		s.mark(t, "herd-isolate-1 and herd-isolate removed, %v after the storm stopped", time.Since(stopped).Round(time.Second))
	})

	t.Run("HerdRelistStorm counts one cilium-agent per node", func(t *testing.T) {
		alerted.Need(t)
		if v, ok := s.query(ctx, t, `herd:relisting_instances:sum{role="cni", client="cilium-agent", resource="pods"}`); !ok || v != drillCNIAgents {
			t.Errorf("herd:relisting_instances:sum for cilium-agent pod LISTs = %v (%v), want %d: one instance per node", v, ok, drillCNIAgents)
		}
	})
	t.Run("the responder isolates them ahead of kube-system-service-accounts", func(t *testing.T) {
		isolated.Need(t)
		checkEvent(ctx, t, s.Admin, "FlowSchema", "HerdIsolateApplied")
		fs, err := s.Admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-isolate-1", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("FlowSchema herd-isolate-1: %v", err)
		}
		ksa, err := s.Admin.FlowcontrolV1().FlowSchemas().Get(ctx, "kube-system-service-accounts", metav1.GetOptions{})
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
	})
	t.Run("the FlowSchema catches cilium pod LISTs and nothing else", func(t *testing.T) {
		effective.Need(t)
		// Not its watches, its other LISTs or its GETs.
		servedByIsolation(ctx, t, cilium, fs.UID, "cilium", []isolationCase{
			{"LIST pods", "/api/v1/pods", true},
			{"LIST pods in a namespace", "/api/v1/namespaces/default/pods", true},
			{"WATCH pods", "/api/v1/pods?watch=true&timeoutSeconds=1", false},
			{"GET a pod", "/api/v1/namespaces/default/pods/app-0", false},
			{"LIST nodes", "/api/v1/nodes", false},
		})
		// Nobody else's LISTs of pods.
		if uid := servedBy(ctx, t, s.CP.Config(controlplane.KubeScheduler), "/api/v1/pods?limit=1"); uid == string(fs.UID) {
			t.Errorf("the scheduler's pod LIST is served by herd-isolate-1")
		}
	})
	t.Run("the storm LISTs go through the isolation", func(t *testing.T) {
		effective.Need(t)
		d1 := apfDispatched(ctx, t, s.Admin, "herd-isolate-1")
		time.Sleep(3 * drillCNIEvery)
		d2 := apfDispatched(ctx, t, s.Admin, "herd-isolate-1")
		if d2-d1 < drillCNIAgents {
			t.Errorf("apiserver_flowcontrol_dispatched_requests_total{flow_schema=herd-isolate-1}: %v then %v over %v; the storm's LISTs (%d every %v) should go through it",
				d1, d2, 3*drillCNIEvery, drillCNIAgents, drillCNIEvery)
		}
		s.mark(t, "apiserver_flowcontrol_dispatched_requests_total{flow_schema=herd-isolate-1}: %v, +%v in %v", d2, d2-d1, 3*drillCNIEvery)
	})
	t.Run("herd removes its objects after the storm", func(t *testing.T) {
		undone.Need(t)
	})
	t.Run("the responder writes only its isolation objects", func(t *testing.T) {
		undone.Need(t)
		wroteOnly(t, s.AuditLogPath, "flowschemas/herd-isolate-1", "prioritylevelconfigurations/herd-isolate")
	})
	t.Run("isolation queues the storm LISTs and never fails them", func(t *testing.T) {
		undone.Need(t)
		tally := s.stopLoad(t, cancel, "storm")
		if tally.Errors > 0 || tally.Codes[http.StatusOK] != tally.Requests {
			t.Errorf("the storm's LISTs %+v: isolation queues, it must not fail them", tally)
		}
	})
}
