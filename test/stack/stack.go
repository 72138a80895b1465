// Package stack runs herd end to end on one machine, as it runs in a
// cluster: a real etcd and kube-apiserver (test/controlplane) whose audit
// webhook feeds the real `herd exporter` binary, Prometheus evaluating herd's
// mixin (rendered with short demo windows), Alertmanager routing herd's
// alerts to the real `herd responder` binary, which acts on the apiserver
// with the RBAC herd ships. The demo (test/demo) and the drills (test/drill)
// are built on it; test/e2e keeps its own in-process variant.
//
// Every process runs in its own process group and dies with the program that
// started it (test/proc); Close stops them all, in reverse order. Callers
// cancel Start's context on SIGINT and then call Close.
package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/proc"
)

// The service accounts herd runs as, as the chart and manifests/rbac name them.
const (
	ExporterUser  = "system:serviceaccount:herd:herd-exporter"
	ResponderUser = "system:serviceaccount:herd:herd-responder"
	// exporterIdentity and responderIdentity are their names in the
	// control plane's token file.
	exporterIdentity  = "herd-exporter"
	responderIdentity = "herd-responder"
	// alertmanagerToken is what Alertmanager presents to the responder.
	alertmanagerToken = "herd-stack-alertmanager-token"
)

// Options say what to run. The zero value runs a responder in dry-run with
// three Nodes and the demo's mixin windows.
type Options struct {
	// Dir holds every component's configuration, data and log. Default: a
	// new temporary directory, removed by Close unless KeepDir.
	Dir     string
	KeepDir bool
	// Log receives one line per step; default: discarded.
	Log io.Writer
	// HerdBin is the herd binary; empty builds cmd/herd into Dir.
	HerdBin string
	// Nodes is how many Nodes (node-1..node-N, InternalIP NodeIP(i)) exist,
	// each with a kubelet identity. Default 3.
	Nodes int
	// DryRun runs the responder in dry-run (decide, record, change nothing).
	DryRun bool
	// Mixin overrides the mixin's _config over DemoMixin (e.g. a longer
	// relistStormFor). The responder's prometheus.rateWindow and the
	// exporter's accounting window follow the rateWindow given here.
	Mixin map[string]any
	// IsolateHoldDown is how long the responder keeps an isolation after its
	// alert resolves (default 30s, so a demo sees it removed).
	IsolateHoldDown time.Duration
	// APIServerArgs are extra kube-apiserver flags.
	APIServerArgs []string
}

// Stack is a running stack. Its URLs are on loopback.
type Stack struct {
	CP    *controlplane.ControlPlane
	Admin kubernetes.Interface

	ExporterURL     string // /metrics, /debug/clients, /readyz
	ResponderURL    string // /alerts, /metrics, /debug/actions, /debug/triage
	PrometheusURL   string
	AlertmanagerURL string
	// Dir holds configurations, data and logs (see Options.Dir).
	Dir string
	// Mixin is the effective _config overrides the rules were rendered with.
	Mixin map[string]any

	opts   Options
	ownDir bool

	mu    sync.Mutex
	procs []*proc.Process // in start order
}

// NodeName and NodeIP name Node i (1-based) of the stack.
func NodeName(i int) string { return fmt.Sprintf("node-%d", i) }

// NodeIP is Node i's InternalIP: 10.0.0.0/16, so up to 65,000 Nodes.
func NodeIP(i int) string { return fmt.Sprintf("10.0.%d.%d", i/250, i%250+1) }

// Start brings the whole stack up and returns once the exporter is ready,
// Prometheus scrapes it and the responder leads. On error, or when ctx ends
// first, everything started so far is stopped.
func Start(ctx context.Context, opts Options) (s *Stack, err error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Nodes <= 0 {
		opts.Nodes = 3
	}
	if opts.IsolateHoldDown == 0 {
		opts.IsolateHoldDown = 30 * time.Second
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	s = &Stack{opts: opts, Dir: opts.Dir, Mixin: DemoMixin()}
	for k, v := range opts.Mixin {
		s.Mixin[k] = v
	}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "herd-stack-"); err != nil {
			return nil, fmt.Errorf("start stack: %w", err)
		}
		s.ownDir = !opts.KeepDir
	}
	defer func() {
		if err != nil {
			s.Close()
			s = nil
		}
	}()
	step := func(format string, args ...any) {
		fmt.Fprintf(opts.Log, "  stack: "+format+"\n", args...)
	}

	if s.opts.HerdBin == "" {
		step("building herd (go build ./cmd/herd)")
		if s.opts.HerdBin, err = BuildHerd(ctx, root, s.Dir); err != nil {
			return s, err
		}
	}
	// Children run in Dir: a relative path would not resolve there.
	if s.opts.HerdBin, err = filepath.Abs(s.opts.HerdBin); err != nil {
		return s, fmt.Errorf("start stack: %w", err)
	}
	policy, err := os.ReadFile(filepath.Join(root, "manifests/control-plane/audit-policy.yaml"))
	if err != nil {
		return s, fmt.Errorf("start stack: the shipped audit policy: %w", err)
	}

	// The apiserver's webhook URL is fixed when it starts, before the
	// exporter (which needs the apiserver's credentials) can: reserve the
	// port now. Until the exporter listens, the apiserver retries batches.
	auditPort, err := proc.FreePort()
	if err != nil {
		return s, err
	}
	nodes := make([]string, opts.Nodes)
	for i := range nodes {
		nodes[i] = NodeName(i + 1)
	}
	step("starting etcd and kube-apiserver %s (audit webhook → herd exporter, shipped audit policy)", controlplane.Version)
	cpDir := filepath.Join(s.Dir, "controlplane")
	if err := os.MkdirAll(cpDir, 0o755); err != nil {
		return s, fmt.Errorf("start stack: %w", err)
	}
	sa := func(user string) controlplane.Identity {
		return controlplane.Identity{User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:herd"}}
	}
	s.CP, err = controlplane.Start(ctx, controlplane.Options{
		Nodes:           nodes,
		Identities:      map[string]controlplane.Identity{exporterIdentity: sa(ExporterUser), responderIdentity: sa(ResponderUser)},
		AuditPolicy:     string(policy),
		AuditWebhookURL: "http://127.0.0.1:" + strconv.Itoa(auditPort) + "/audit",
		ExtraArgs:       opts.APIServerArgs,
		Dir:             cpDir,
	})
	if err != nil {
		return s, fmt.Errorf("start stack: %w", err)
	}
	s.Admin = s.CP.Client(controlplane.Admin)
	for _, m := range []string{"manifests/rbac/exporter.yaml", "manifests/rbac/responder.yaml"} {
		if err := ApplyManifest(ctx, s.Admin, filepath.Join(root, m)); err != nil {
			return s, err
		}
	}
	step("creating %d Nodes", opts.Nodes)
	if err := createNodes(ctx, s.Admin, opts.Nodes); err != nil {
		return s, err
	}

	step("starting herd exporter and herd responder (dryRun: %v, guards on)", opts.DryRun)
	if err := s.startExporter(ctx, auditPort); err != nil {
		return s, err
	}
	if err := s.startResponder(ctx); err != nil {
		return s, err
	}
	step("starting Alertmanager and Prometheus (mixin with rateWindow %v, HerdRelistStorm for %v)", s.Mixin["rateWindow"], s.Mixin["relistStormFor"])
	if err := s.startAlertmanager(ctx); err != nil {
		return s, err
	}
	// Alert descriptions name herd's debug pages: the stack's own.
	s.Mixin["herdExporterURL"], s.Mixin["herdResponderURL"] = s.ExporterURL, s.ResponderURL
	mixin, err := RenderMixin(filepath.Join(root, "rules"), s.Mixin)
	if err != nil {
		return s, err
	}
	if err := s.startPrometheus(ctx, mixin); err != nil {
		return s, err
	}
	if err := s.waitReady(ctx); err != nil {
		return s, err
	}
	step("stack ready")
	return s, nil
}

// waitReady waits until Prometheus has scraped both herd targets (its
// discovery hands targets over at most every 5 s) and the responder leads.
func (s *Stack) waitReady(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		up, err := s.Query(wctx, `sum(up{job=~"herd-exporter|herd-responder"})`)
		scraped := err == nil && len(up) == 1 && up[0].Value == 2
		leads := httpStatus(wctx, s.ResponderURL+"/readyz") == http.StatusOK
		if scraped && leads {
			return nil
		}
		if crashed := s.Crashed(); len(crashed) > 0 {
			return fmt.Errorf("start stack: %s exited:\n%s", strings.Join(crashed, ", "), s.tails())
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("start stack: waiting for Prometheus to scrape herd (%v) and the responder to lead (%v): %w", scraped, leads, wctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// start runs a child process whose output goes to Dir/<name>.log, and
// remembers it for Close.
func (s *Stack) start(name, bin string, args []string) (*proc.Process, error) {
	p, err := proc.StartWith(name, bin, args, filepath.Join(s.Dir, name+".log"), proc.Options{Dir: s.Dir})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// Crashed names the stack's processes that exited although nobody stopped them.
func (s *Stack) Crashed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.procs {
		if p.Crashed() {
			out = append(out, p.Name)
		}
	}
	return out
}

// tails is the end of every crashed process's log, for errors.
func (s *Stack) tails() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, p := range s.procs {
		if p.Crashed() {
			fmt.Fprintf(&b, "--- %s (%s)\n%s\n", p.Name, p.LogPath, p.Tail(20))
		}
	}
	return b.String()
}

// Close stops every process in reverse start order, then the control
// plane, and removes Dir if Start created it. It is safe to call twice.
func (s *Stack) Close() {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		_, _ = procs[i].Stop(5 * time.Second)
	}
	if s.CP != nil {
		s.CP.Stop()
		s.CP = nil
	}
	if s.ownDir {
		os.RemoveAll(s.Dir)
		s.ownDir = false
	}
}

// RepoRoot is the directory of herd's go.mod, found upwards from the
// working directory: the mains run from anywhere inside the repository.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find the herd repository: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/herd-k8s/herd\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find the herd repository: no go.mod of github.com/herd-k8s/herd above the working directory; run from inside the repository")
		}
		dir = parent
	}
}

// BuildHerd builds cmd/herd into dir and returns the binary's path.
func BuildHerd(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "herd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/herd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/herd: %w\n%s", err, out)
	}
	return bin, nil
}

func createNodes(ctx context.Context, c kubernetes.Interface, n int) error {
	for i := 1; i <= n; i++ {
		node, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: NodeName(i), Labels: map[string]string{"kubernetes.io/hostname": NodeName(i), "kubernetes.io/os": "linux"},
		}}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create node %s: %w", NodeName(i), err)
		}
		now := metav1.Now()
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: NodeIP(i)}, {Type: corev1.NodeHostName, Address: NodeName(i)}}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}}
		if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("node %s status: %w", NodeName(i), err)
		}
	}
	return nil
}

// httpStatus is GET url's status code (0 when no answer).
func httpStatus(ctx context.Context, url string) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitHTTP polls url until it answers 200, p exits or ctx ends.
func waitHTTP(ctx context.Context, p *proc.Process, url string, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return proc.WaitUntil(wctx, p, 100*time.Millisecond, func(ctx context.Context) error {
		if c := httpStatus(ctx, url); c != http.StatusOK {
			return fmt.Errorf("GET %s: %d", url, c)
		}
		return nil
	})
}
