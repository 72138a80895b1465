// Package hollow runs real node agents against the test control plane: the
// kubelet and kube-proxy code of Kubernetes v1.36.3, as kubemark's hollow node
// runs them (a fake container runtime, a fake proxier), one process per agent.
// Where simulated agents (test/nodesim) send the requests their authors knew
// of, these send what the real agents send: node registration and status,
// Leases, a pod watch, a reflector per ConfigMap and Secret a pod mounts,
// kube-proxy's Services, EndpointSlices, ServiceCIDRs and its own Node.
//
// Each hollow node has its own identity (system:node:NAME in system:nodes for
// the kubelet; kube-proxy's service account, as every kube-proxy of a cluster
// shares it) and, with a Network, its own network namespace and address: the
// kubelet registers that address as the Node's InternalIP and both agents
// call the apiserver from it, so source-IP attribution sees what it would in
// a cluster. Without a Network the agents share the host's loopback.
//
// The binary is built by `make controlplane` (test/tools/controlplane/build.sh,
// ./hollownode: a wrapper of kubemark's packages that lets several hollow
// nodes share a machine). Every process goes through test/proc: its own
// process group, SIGKILL when the test process dies.
package hollow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/proc"
)

// BinaryName is the hollow node's file name in controlplane.BinDir().
const BinaryName = "hollow-node"

// FindBinary locates the hollow node built by `make controlplane`. When it is
// missing the error says how to build it; tests fail on it, never skip.
func FindBinary() (string, error) {
	p := filepath.Join(controlplane.BinDir(), BinaryName)
	if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
		return p, fmt.Errorf("%w: %s is missing; run `make controlplane` to build kubemark's hollow node %s from Go modules into %s",
			proc.ErrMissingBinary, p, controlplane.Version, controlplane.BinDir())
	}
	return p, nil
}

// UserAgents says how the agents introduce themselves.
type UserAgents int

const (
	// RealUserAgents: what the real binaries send, client-go's default for a
	// program named kubelet or kube-proxy ("kubelet/v1.36.3 (linux/amd64)
	// kubernetes/<commit>").
	RealUserAgents UserAgents = iota
	// KubemarkUserAgents: what kubemark's hollow node sends ("hollow-kubelet",
	// "hollow-proxy"); herd must classify these by identity.
	KubemarkUserAgents
)

func (u UserAgents) flag() string {
	if u == KubemarkUserAgents {
		return "kubemark"
	}
	return "real"
}

// NodeOptions describe one hollow node.
type NodeOptions struct {
	// Name is the Node's name. The control plane needs a kubelet identity for
	// it: list it in controlplane.Options.Nodes.
	Name string
	// ListMode runs both agents with LIST-mode reflectors (the
	// WatchListClient feature gate off), as client-go < 1.35 does — kubelets
	// and kube-proxies up to 1.34. Otherwise they relist by WatchList
	// (watch with sendInitialEvents=true), 1.35's default.
	ListMode bool
	// MaxPods is the kubelet's pod capacity; default 110.
	MaxPods int
	// NoProxy starts only the kubelet.
	NoProxy bool
}

// Options say which hollow nodes to start and how.
type Options struct {
	Nodes []NodeOptions
	// Network, if set, gives each node its own network namespace and
	// address on it. The control plane must then listen on the Network's
	// gateway (controlplane.Options.Address).
	Network *Network
	// UserAgents: RealUserAgents (default) or KubemarkUserAgents.
	UserAgents UserAgents
	// Dir holds each node's state and logs; default a new temp dir, removed
	// by Stop unless HERD_KEEP_HOLLOW_DIR is set.
	Dir string
	// Log receives progress lines; default: discarded.
	Log io.Writer
	// AfterRegistered, if set, runs once every kubelet has registered its
	// Node and before the kube-proxies start — as a kube-proxy DaemonSet's
	// pods start only on nodes the cluster knows. A test waits here until its
	// own view has the Nodes (herd's informers, say).
	AfterRegistered func(context.Context) error
}

// Node is one running hollow node.
type Node struct {
	Name     string
	ListMode bool
	// Namespace is the node's network namespace; nil without a Network.
	Namespace *Namespace
	// Addr is the Node's InternalIP as the kubelet registers it; invalid
	// without a Network (the kubelet then picks the host's address).
	Addr netip.Addr

	dir         string
	bin, ipCmd  string
	kubeletArgs []string
	proxyArgs   []string // nil: NoProxy

	mu      sync.Mutex
	kubelet *proc.Process
	proxy   *proc.Process
}

// Cluster is a set of running hollow nodes.
type Cluster struct {
	Nodes []*Node

	cp     *controlplane.ControlPlane
	admin  kubernetes.Interface
	bin    string
	ip     string
	dir    string
	ownDir bool
	log    io.Writer
}

// Start starts every node's kubelet, waits until each has registered its Node
// (Ready, with its address when there is a Network), then starts the
// kube-proxies — as a DaemonSet's pods start only on registered nodes — and
// waits until each has announced itself (kube-proxy's "Starting" Event on its
// Node). On error everything started is stopped.
func Start(ctx context.Context, cp *controlplane.ControlPlane, opts Options) (c *Cluster, err error) {
	bin, err := FindBinary()
	if err != nil {
		return nil, err
	}
	if len(opts.Nodes) == 0 {
		return nil, errors.New("hollow: no nodes")
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	c = &Cluster{cp: cp, admin: cp.Client(controlplane.Admin), bin: bin, dir: opts.Dir, log: opts.Log}
	if opts.Network != nil {
		c.ip = opts.Network.ip
	} else if c.ip, err = exec.LookPath("ip"); err != nil {
		c.ip = "ip" // only used with a Network
	}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "herd-hollow-"); err != nil {
			return nil, fmt.Errorf("hollow: %w", err)
		}
		c.ownDir = true
	}
	// The named result is nil by the time an error return runs this: stop
	// what was started through the cluster itself.
	started := c
	defer func() {
		if err != nil {
			started.Stop()
		}
	}()
	proxyConfig, err := cp.Kubeconfig(controlplane.KubeProxy)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, no := range opts.Nodes {
		if no.Name == "" || seen[no.Name] {
			return nil, fmt.Errorf("hollow: node name %q empty or repeated", no.Name)
		}
		seen[no.Name] = true
		n, err := c.prepare(no, opts, proxyConfig)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := n.StartKubelet(); err != nil {
			return nil, err
		}
	}
	if err := c.WaitRegistered(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(c.log, "hollow: %d kubelets registered\n", len(c.Nodes))
	if opts.AfterRegistered != nil {
		if err := opts.AfterRegistered(ctx); err != nil {
			return nil, fmt.Errorf("hollow: after the kubelets registered: %w", err)
		}
	}
	var proxies []*Node
	for _, n := range c.Nodes {
		if n.proxyArgs != nil {
			if err := n.StartProxy(); err != nil {
				return nil, err
			}
			proxies = append(proxies, n)
		}
	}
	if err := c.waitProxiesStarted(ctx, proxies); err != nil {
		return nil, err
	}
	fmt.Fprintf(c.log, "hollow: %d kube-proxies started\n", len(proxies))
	return c, nil
}

func (c *Cluster) prepare(no NodeOptions, opts Options, proxyConfig string) (*Node, error) {
	n := &Node{Name: no.Name, ListMode: no.ListMode, dir: filepath.Join(c.dir, no.Name)}
	if err := os.MkdirAll(filepath.Join(n.dir, "kubelet"), 0o755); err != nil {
		return nil, fmt.Errorf("hollow: %w", err)
	}
	kubeletConfig, err := c.cp.Kubeconfig(controlplane.KubeletIdentity(no.Name))
	if err != nil {
		return nil, err
	}
	maxPods := no.MaxPods
	if maxPods <= 0 {
		maxPods = 110
	}
	common := []string{"--name=" + no.Name, "--user-agent=" + opts.UserAgents.flag()}
	if no.ListMode {
		common = append(common, "--feature-gates=WatchListClient=false")
	}
	n.kubeletArgs = append([]string{"--morph=kubelet", "--kubeconfig=" + kubeletConfig,
		"--root-dir=" + filepath.Join(n.dir, "kubelet"), "--max-pods=" + strconv.Itoa(maxPods)}, common...)
	if opts.Network != nil {
		if n.Namespace, err = opts.Network.Add(); err != nil {
			return nil, err
		}
		n.Addr = n.Namespace.Addr
		// Alone in its namespace, the kubelet serves on its own address at
		// the usual port.
		n.kubeletArgs = append(n.kubeletArgs, "--node-ip="+n.Addr.String(), "--address="+n.Addr.String(), "--port=10250")
	} else {
		port, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		n.kubeletArgs = append(n.kubeletArgs, "--address=127.0.0.1", "--port="+strconv.Itoa(port))
	}
	if !no.NoProxy {
		n.proxyArgs = append([]string{"--morph=proxy", "--kubeconfig=" + proxyConfig}, common...)
	}
	n.ipCmd, n.bin = c.ip, c.bin
	return n, nil
}

// start runs the hollow node binary with args, in the node's namespace if it
// has one.
func (n *Node) start(what string, args []string) (*proc.Process, error) {
	path, argv := n.bin, args
	if n.Namespace != nil {
		path, argv = n.Namespace.Command(n.ipCmd, n.bin, args...)
	}
	p, err := proc.Start(n.Name+" "+what, path, argv, filepath.Join(n.dir, what+".log"), nil)
	if err != nil {
		return nil, fmt.Errorf("hollow: %w", err)
	}
	return p, nil
}

// StartKubelet starts the node's kubelet (again, after StopKubelet: it keeps
// its state directory, as a restarted kubelet does).
func (n *Node) StartKubelet() error { return n.startAgent(&n.kubelet, "kubelet", n.kubeletArgs) }

// StartProxy starts the node's kube-proxy.
func (n *Node) StartProxy() error {
	if n.proxyArgs == nil {
		return fmt.Errorf("hollow: %s was started with NoProxy", n.Name)
	}
	return n.startAgent(&n.proxy, "kube-proxy", n.proxyArgs)
}

func (n *Node) startAgent(pp **proc.Process, what string, args []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if *pp != nil {
		if exited, _ := (*pp).Exited(); !exited {
			return fmt.Errorf("hollow: %s: %s already running", n.Name, what)
		}
	}
	p, err := n.start(what, args)
	if err != nil {
		return err
	}
	*pp = p
	return nil
}

// StopKubelet stops the kubelet (SIGTERM, then SIGKILL after 5 s).
func (n *Node) StopKubelet() error { return stop(&n.mu, &n.kubelet) }

// StopProxy stops kube-proxy (SIGTERM, then SIGKILL after 5 s).
func (n *Node) StopProxy() error { return stop(&n.mu, &n.proxy) }

func stop(mu *sync.Mutex, pp **proc.Process) error {
	mu.Lock()
	p := *pp
	mu.Unlock()
	if p == nil {
		return nil
	}
	_, err := p.Stop(5 * time.Second)
	return err
}

// Processes are the node's running or exited agent processes (kubelet first;
// nil entries for agents never started).
func (n *Node) Processes() (kubelet, proxy *proc.Process) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.kubelet, n.proxy
}

// KubeletLog and ProxyLog are the paths of the agents' output.
func (n *Node) KubeletLog() string { return filepath.Join(n.dir, "kubelet.log") }
func (n *Node) ProxyLog() string   { return filepath.Join(n.dir, "kube-proxy.log") }

// crashed names the first agent of the node that exited without Stop.
func (n *Node) crashed() error {
	k, p := n.Processes()
	for _, pr := range []*proc.Process{k, p} {
		if pr != nil && pr.Crashed() {
			_, err := pr.Exited()
			return fmt.Errorf("hollow: %s exited: %v\n%s", pr.Name, err, pr.Tail(30))
		}
	}
	return nil
}

// Crashed reports the first agent of any node that exited although nobody
// stopped it; nil when all run (or were stopped on purpose).
func (c *Cluster) Crashed() error {
	for _, n := range c.Nodes {
		if err := n.crashed(); err != nil {
			return err
		}
	}
	return nil
}

// WaitRegistered waits until every node's Node object exists and is Ready,
// with the node's address as its InternalIP when it has one, failing early
// when an agent exits.
func (c *Cluster) WaitRegistered(ctx context.Context) error {
	return c.poll(ctx, "nodes registered and Ready", func(ctx context.Context) error {
		for _, n := range c.Nodes {
			node, err := c.admin.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
			if !nodeReady(node) {
				return fmt.Errorf("node %s: not Ready", n.Name)
			}
			if n.Addr.IsValid() && internalIP(node) != n.Addr.String() {
				return fmt.Errorf("node %s: InternalIP %q, want %s", n.Name, internalIP(node), n.Addr)
			}
		}
		return nil
	})
}

// WaitLeases waits until every node's kubelet has created its Lease in
// kube-node-lease, and returns their renew times. A kubelet creates it only
// once its Node exists, at the next renewal (every 10 s), so this comes up
// to ten seconds after WaitRegistered.
func (c *Cluster) WaitLeases(ctx context.Context) (map[string]time.Time, error) {
	renewed := map[string]time.Time{}
	err := c.poll(ctx, "node Leases", func(ctx context.Context) error {
		for _, n := range c.Nodes {
			l, err := c.admin.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("lease of %s: %w", n.Name, err)
			}
			if l.Spec.RenewTime == nil {
				return fmt.Errorf("lease of %s: never renewed", n.Name)
			}
			renewed[n.Name] = l.Spec.RenewTime.Time
		}
		return nil
	})
	return renewed, err
}

// waitProxiesStarted waits for each kube-proxy's birth cry: the "Starting"
// Event kube-proxy records on its Node once its informers are running
// (cmd/kube-proxy/app/server.go, ProxyServer.Run, birthCry).
func (c *Cluster) waitProxiesStarted(ctx context.Context, nodes []*Node) error {
	if len(nodes) == 0 {
		return nil
	}
	return c.poll(ctx, "kube-proxies started", func(ctx context.Context) error {
		list, err := c.admin.EventsV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		started := map[string]bool{}
		for _, e := range list.Items {
			if e.Reason == "Starting" && e.ReportingController == "kube-proxy" && e.Regarding.Kind == "Node" {
				started[e.Regarding.Name] = true
			}
		}
		for _, n := range nodes {
			if !started[n.Name] {
				return fmt.Errorf("kube-proxy of %s has not started", n.Name)
			}
		}
		return nil
	})
}

func (c *Cluster) poll(ctx context.Context, what string, check func(context.Context) error) error {
	var last error
	for {
		if err := c.Crashed(); err != nil {
			return err
		}
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hollow: waiting for %s: %w (last: %v)", what, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// Stop stops every agent (all at once, SIGTERM then SIGKILL) and removes
// the directory Start created. The Network and its namespaces belong to the
// caller (Network.Close). Stop is safe to call more than once.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		k, p := n.Processes()
		for _, pr := range []*proc.Process{p, k} {
			if pr != nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, _ = pr.Stop(5 * time.Second)
				}()
			}
		}
	}
	wg.Wait()
	if c.ownDir && os.Getenv("HERD_KEEP_HOLLOW_DIR") == "" {
		_ = os.RemoveAll(c.dir)
	}
}

// Dir holds the nodes' state and logs.
func (c *Cluster) Dir() string { return c.dir }
