package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/herd-k8s/herd/test/drill"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/proc"
	"github.com/herd-k8s/herd/test/stack"
)

// timeoutStorm bounds one storm LIST.
const timeoutStorm = time.Minute

// runNodes are a storm run's Nodes, node-1..node-n: the first hollow of
// them hollow nodes (test/hollow: the real kubelet and kube-proxy of
// v1.36.3, each node in a network namespace of its own, drill.Fleet), the
// rest Nodes without agents, as every Node of the drill was before. The
// cilium-agents and kube-scheduler stay simulated (no real CNI agent is
// built here); cilium-agent i runs on node i+1, at its address.
//
// The kubelet runs have no hollow nodes: their 300 kubelets LIST their own
// pods in a closed loop, which no real kubelet does (a real one relists
// once, then watches), and 300 hollow nodes do not fit a 2-core machine
// (~0.6 % of a core and ~35 MiB each in steady state, ~0.5 CPU-seconds
// each to start: docs/performance.md "Real node agents").
type runNodes struct {
	n     int
	fleet *drill.Fleet // nil without hollow nodes
	names []string
	addrs []string
}

// newRunNodes prepares n Nodes, the first hollow of them hollow nodes
// (their network is created here, so the control plane can listen on its
// gateway).
func newRunNodes(n, hollow int) (*runNodes, error) {
	hollow = min(hollow, n)
	r := &runNodes{n: n}
	for i := range n {
		r.names = append(r.names, stack.NodeName(i+1))
		r.addrs = append(r.addrs, stack.NodeIP(i+1))
	}
	if hollow > 0 {
		f, err := drill.NewFleet(hollow)
		if err != nil {
			return nil, err
		}
		r.fleet = f
	}
	return r, nil
}

// hollow is how many of the Nodes are hollow nodes.
func (r *runNodes) hollow() int {
	if r.fleet == nil {
		return 0
	}
	return len(r.fleet.Names())
}

// stackOptions sets opts for the Nodes: without hollow nodes the stack
// creates them all (each with a kubelet identity); with, the hollow nodes'
// kubelets register theirs (the stack makes their identities) and
// start creates the others, and the control plane listens on the fleet's
// gateway.
func (r *runNodes) stackOptions(opts *stack.Options) {
	if r.fleet == nil {
		opts.Nodes = r.n
		return
	}
	opts.Nodes = 0
	opts.AgentNodes = r.fleet.Names()
	opts.ControlPlane = r.fleet.ControlPlane
}

// trustedProxies are the exporter's trusted proxies for the simulated
// agents: loopback, and the fleet's gateway when there is one
// (stack.HostProxies).
func (r *runNodes) trustedProxies() []string {
	if r.fleet == nil {
		return stack.HostProxies("")
	}
	return stack.HostProxies(r.fleet.Net.Gateway().String())
}

// start creates the Nodes without agents and the heavy pods, then starts
// the hollow nodes and waits until they run. The heavy pods are bound to
// the Nodes without agents, Pending, as the drill always had them: the
// storm LISTs the same bytes with hollow nodes or without, and the hollow
// nodes' kubelets, bystanders, hold no heavy pod. Only when every Node is a
// hollow node are the pods theirs, finished as the demo's are (a real
// kubelet leaves a finished pod alone).
func (r *runNodes) start(ctx context.Context, s *stack.Stack, name string, pods int) error {
	h := r.hollow()
	if h > 0 && r.n > h {
		plain := make([]*corev1.Node, 0, r.n-h)
		for i := h; i < r.n; i++ {
			plain = append(plain, herdtest.Node(r.names[i], r.addrs[i]))
		}
		logf("%s run: creating %d Nodes without agents", name, len(plain))
		if err := herdtest.CreateNodes(ctx, s.Admin, plain, 8); err != nil {
			return err
		}
	}
	on, filler := r.names[h:], drill.HeavyPodFiller
	if len(on) == 0 {
		on, filler = r.names, drill.FinishedHeavyPodFiller
	}
	logf("%s run: creating %d heavy pods on %d Nodes", name, pods, len(on))
	if err := drill.CreateHeavyPods(ctx, s.Admin, pods, on, filler, 8); err != nil {
		return err
	}
	if h == 0 {
		return nil
	}
	if len(on) == len(r.names) {
		if err := drill.FinishHeavyPods(ctx, s.Admin, pods, 8); err != nil {
			return err
		}
	}
	logf("%s run: starting %d hollow nodes (real kubelets and kube-proxies, each node in its own network namespace)", name, h)
	if err := r.fleet.Start(ctx, s, filepath.Join(s.Dir, "nodes"), logWriter{}); err != nil {
		return err
	}
	copy(r.addrs, r.fleet.Addrs())
	return nil
}

// ciliums are n cilium-agents on the first n Nodes.
func (r *runNodes) ciliums(s *stack.Stack, n int) ([]*drill.Client, error) {
	if n > r.n {
		return nil, fmt.Errorf("%d cilium-agents on %d Nodes", n, r.n)
	}
	return drill.CiliumClientsAt(s, r.addrs[:n], timeoutStorm)
}

// crashed names hollow agents that exited on their own.
func (r *runNodes) crashed() []string {
	if r.fleet == nil || r.fleet.Nodes == nil {
		return nil
	}
	var out []string
	for _, n := range r.fleet.Nodes.Nodes {
		k, p := n.Processes()
		for _, pr := range []*proc.Process{k, p} {
			if pr != nil && pr.Crashed() {
				out = append(out, pr.Name)
			}
		}
	}
	return out
}

// close stops the hollow nodes and removes their network.
func (r *runNodes) close() {
	if r.fleet == nil {
		return
	}
	if err := r.fleet.Close(); err != nil {
		logf("removing the hollow nodes' network: %v", err)
	}
}

// describe is the report's phrase for the Nodes.
func (r *runNodes) describe() string {
	if h := r.hollow(); h > 0 {
		return fmt.Sprintf("%d Nodes, %d of them hollow nodes (the real kubelet and kube-proxy of v1.36.3, each node in a network namespace of its own, the control plane on their bridge)", r.n, h)
	}
	return fmt.Sprintf("%d Nodes without real agents", r.n)
}

// runNodesLine is the report's line on each run's Nodes.
func runNodesLine(runs []string, nodes func(run string) string) string {
	parts := make([]string, 0, len(runs))
	for _, name := range runs {
		if d := nodes(name); d != "" {
			parts = append(parts, fmt.Sprintf("%s run: %s", name, d))
		}
	}
	return "Nodes: " + strings.Join(parts, "; ") + ". The cilium-agents and kube-scheduler are simulated; cilium-agent i runs on node i+1, at its address."
}
