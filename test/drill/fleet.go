package drill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/hollow"
	"github.com/herd-k8s/herd/test/stack"
)

// Fleet is the demo's and the drill's real node agents: hollow nodes
// (test/hollow: the kubelet and kube-proxy code of v1.36.3 under kubemark's
// fake runtime and proxier), each in its own network namespace with its own
// address on a private Network whose gateway the control plane listens on.
// The simulated agents that stay (cilium-agents, kube-scheduler) run on the
// host and reach the apiserver from the gateway; a CNI agent runs in its
// node's host network, so each cilium-agent names its node's address in
// X-Forwarded-For, which herd believes from the gateway (the stack trusts
// the address its host clients call from, stack.Stack.HostProxies).
//
// Close stops every agent and removes every namespace; NewFleet first
// removes what a crashed earlier run left (hollow.CleanupStale).
type Fleet struct {
	Net *hollow.Network
	// Nodes is nil until Start.
	Nodes *hollow.Cluster
	names []string
}

// NewFleet creates the Network for n hollow nodes named stack.NodeName(1..n).
// It needs root and iproute2 (hollow.ErrNeedsRoot says so) and the hollow
// node binary (`make controlplane`; hollow.FindBinary says so).
func NewFleet(n int) (*Fleet, error) {
	if n <= 0 {
		return nil, errors.New("fleet: no nodes")
	}
	if _, err := hollow.FindBinary(); err != nil {
		return nil, err
	}
	net, err := hollow.NewNetwork()
	if err != nil {
		return nil, err
	}
	f := &Fleet{Net: net}
	for i := range n {
		f.names = append(f.names, stack.NodeName(i+1))
	}
	return f, nil
}

// Names are the fleet's Node names, node-1..node-n: give them to
// stack.Options.AgentNodes (kubelet identities, no Node created for them).
func (f *Fleet) Names() []string { return f.names }

// ControlPlane binds the control plane to the Network's gateway, so that
// the namespaces reach it: stack.Options.ControlPlane.
func (f *Fleet) ControlPlane(co *controlplane.Options) { co.Address = f.Net.Gateway().String() }

// Start starts the hollow nodes (all relisting by WatchList, 1.36's
// default, with their real user agents) on s's control plane and returns
// once every kubelet has registered its Node (Ready, its namespace's address
// as InternalIP), herd's exporter has every Node in its view (so that no
// kube-proxy is ever a ghost), and every kube-proxy has started. Their logs
// go under dir.
func (f *Fleet) Start(ctx context.Context, s *stack.Stack, dir string, log io.Writer) error {
	specs := make([]hollow.NodeOptions, len(f.names))
	for i, n := range f.names {
		specs[i] = hollow.NodeOptions{Name: n}
	}
	c, err := hollow.Start(ctx, s.CP, hollow.Options{
		Network: f.Net, Nodes: specs, Dir: dir, Log: log,
		AfterRegistered: func(ctx context.Context) error { return herdKnowsNodes(ctx, s, len(f.names)) },
	})
	if err != nil {
		return err
	}
	f.Nodes = c
	return nil
}

// herdKnowsNodes waits until Prometheus reads n Nodes in herd's cluster view.
func herdKnowsNodes(ctx context.Context, s *stack.Stack, n int) error {
	return herdtest.Poll(ctx, time.Minute, fmt.Sprintf("herd's cluster view to hold the %d Nodes", n), func(ctx context.Context) error {
		v, err := s.QueryValue(ctx, "max(herd_cluster_nodes)")
		if err != nil || int(v) < n {
			return fmt.Errorf("herd_cluster_nodes = %v (%v)", v, err)
		}
		return nil
	})
}

// Addrs are the nodes' addresses (InternalIPs), node-1 first; empty before
// Start.
func (f *Fleet) Addrs() []string {
	if f.Nodes == nil {
		return nil
	}
	out := make([]string, len(f.Nodes.Nodes))
	for i, n := range f.Nodes.Nodes {
		out[i] = n.Addr.String()
	}
	return out
}

// Crashed reports the first agent that exited although nobody stopped it.
func (f *Fleet) Crashed() error {
	if f.Nodes == nil {
		return nil
	}
	return f.Nodes.Crashed()
}

// Close stops every agent, then removes the namespaces, veth pairs and the
// bridge. It is safe to call more than once.
func (f *Fleet) Close() error {
	if f.Nodes != nil {
		f.Nodes.Stop()
	}
	return f.Net.Close()
}

// FinishHeavyPods writes the status a kubelet leaves on a finished batch
// job's pod (phase Succeeded, its container terminated with exit code 0) on
// heavy pods 0..n-1, with workers writers at once. Real kubelets, which the
// pods are bound to, then take them for what incident 002's were: done, not
// to be run (k8s.io/kubernetes pkg/kubelet/kubelet.go HandlePodAdditions
// admits no pod in a terminal phase); each patches its own status fields in
// once (hostIP, observedGeneration: FinishedHeavyPodFiller counts them).
func FinishHeavyPods(ctx context.Context, c kubernetes.Interface, n, workers int) error {
	return herdtest.Parallel(ctx, n, workers, func(ctx context.Context, i int) error {
		p, err := c.CoreV1().Pods(Namespace).Get(ctx, PodName(i), metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("finish pod %s: %w", PodName(i), err)
		}
		if p.Status.Phase == corev1.PodSucceeded {
			return nil
		}
		p.Status = FinishedStatus(p.CreationTimestamp.Time)
		if _, err := c.CoreV1().Pods(Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("finish pod %s: %w", PodName(i), err)
		}
		return nil
	})
}

// FinishedStatus is a finished batch job pod's status: it ran for a minute
// from created and exited 0.
func FinishedStatus(created time.Time) corev1.PodStatus {
	start, end := metav1.NewTime(created), metav1.NewTime(created.Add(time.Minute))
	cond := func(t corev1.PodConditionType, s corev1.ConditionStatus, reason string) corev1.PodCondition {
		return corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: end}
	}
	return corev1.PodStatus{
		Phase: corev1.PodSucceeded,
		Conditions: []corev1.PodCondition{
			cond(corev1.PodReadyToStartContainers, corev1.ConditionFalse, ""),
			cond(corev1.PodInitialized, corev1.ConditionTrue, "PodCompleted"),
			cond(corev1.PodReady, corev1.ConditionFalse, "PodCompleted"),
			cond(corev1.ContainersReady, corev1.ConditionFalse, "PodCompleted"),
			cond(corev1.PodScheduled, corev1.ConditionTrue, ""),
		},
		StartTime: &start,
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "worker", Image: "registry.example.com/data/etl-worker:v3.14.2",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: start, FinishedAt: end}},
		}},
	}
}
