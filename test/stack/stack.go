// Package stack runs herd end to end on one machine, as it runs in a
// cluster: a real etcd and kube-apiserver (test/controlplane) whose audit
// webhook feeds `herd exporter`, Prometheus evaluating herd's mixin,
// Alertmanager routing herd's alerts to `herd responder`, which acts on the
// apiserver with the RBAC herd ships. It is the one stack builder of the
// repository: the demo (test/demo), the storm drill (test/drill), the
// end-to-end tests (test/e2e) and the responder load test
// (test/responderload) are all built on it, each with the Options it needs:
// the exporter binary or an in-process exporter a test can inspect, the
// demo's mixin windows or the shipped rules, a responder of the stack's own
// or replicas the caller starts (StartResponder), Alertmanager routing to
// the responder or to a receiver of the caller's, Prometheus scraping the
// apiserver, and so on.
//
// Every process runs in its own process group and dies with the program that
// started it (test/proc); Close stops them all, in reverse order. Callers
// cancel Start's context on SIGINT and then call Close; tests use StartTest.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/proc"
	"github.com/herd-k8s/herd/test/promstack"
)

// The service accounts herd runs as, as the chart and manifests/rbac name them.
const (
	ExporterUser  = "system:serviceaccount:herd:herd-exporter"
	ResponderUser = "system:serviceaccount:herd:herd-responder"
	// ExporterIdentity and ResponderIdentity are their names in the
	// control plane's token file (ControlPlane.Config and friends).
	ExporterIdentity  = "herd-exporter"
	ResponderIdentity = "herd-responder"
	// AlertmanagerToken is the bearer token Alertmanager presents to the
	// responder.
	AlertmanagerToken = "herd-stack-alertmanager-token"
	// ExporterJob and ResponderJob are Prometheus' scrape jobs for herd, as
	// the mixin's selectors expect them.
	ExporterJob  = "herd-exporter"
	ResponderJob = "herd-responder"
)

// Options say what to run. The zero value is the demo's stack: three
// Nodes, the shipped audit policy feeding the herd exporter binary,
// Prometheus evaluating the mixin at the demo's windows, and Alertmanager
// routing to a herd responder binary of the stack's own, in dry-run.
type Options struct {
	// Dir holds every component's configuration, data and log. Default: a
	// new temporary directory, removed by Close unless KeepDir.
	Dir     string
	KeepDir bool
	// Log receives one line per step; default: discarded.
	Log io.Writer
	// Root is the repository (manifests/, rules/); default: found upwards
	// from the working directory.
	Root string
	// HerdBin is the herd binary; default: cmd/herd built once per process
	// (herdtest.HerdBinary), and only if a binary is needed.
	HerdBin string

	// Nodes is how many Nodes exist (NodeName(i), InternalIP NodeIP(i)),
	// each with a kubelet identity. Default 3, or 0 with AgentNodes.
	Nodes int
	// AgentNodes are nodes whose real kubelets register them (test/hollow):
	// each gets a kubelet identity, and no Node is created for it.
	AgentNodes []string
	// ControlPlane, if set, adjusts the control plane's options once the
	// stack has filled them: bind it to a hollow Network's gateway, put a
	// tee (test/auditcount) on its audit webhook, and so on.
	ControlPlane func(*controlplane.Options)
	// Ghosts are kubelet identities (system:node:NAME) without a Node:
	// a removed worker's kubelet still calling.
	Ghosts []string
	// AuditPolicy is the apiserver's audit Policy; default: the one herd
	// ships (manifests/control-plane/audit-policy.yaml).
	AuditPolicy string
	// AuditLog makes the apiserver also write its audit log, to
	// AuditLogPath, so that a test can check what was written.
	AuditLog bool
	// NoAuditWebhook leaves the apiserver's audit webhook off: the caller
	// posts events to AuditURL itself (the responder load test).
	NoAuditWebhook bool
	// APIServerArgs are extra kube-apiserver flags.
	APIServerArgs []string
	// Objects runs once the Nodes exist and before herd starts: the
	// caller's cluster objects (APIServices, metrics-server, pods, cordons).
	Objects func(ctx context.Context, s *Stack) error

	Exporter ExporterOptions

	// Mixin overrides the mixin's _config over DemoMixin (e.g. a longer
	// relistStormFor). The stack's responder uses its rateWindow.
	Mixin map[string]any
	// ShippedRules loads the committed rules/prometheus_{rules,alerts}.yaml
	// (production windows) instead of rendering the mixin with Mixin.
	ShippedRules bool
	// Rules are more rule files for Prometheus (name → YAML), e.g. a
	// KubeAPIErrorBudgetBurn over the apiserver's metrics.
	Rules map[string]string
	// ScrapeInterval is Prometheus' scrape and evaluation interval;
	// default 1s.
	ScrapeInterval time.Duration
	// ScrapeAPIServer makes Prometheus scrape kube-apiserver's /metrics
	// (job "apiserver", https, the admin token, the serving CA), every
	// APIServerScrapeInterval (default 2s).
	ScrapeAPIServer         bool
	APIServerScrapeInterval time.Duration
	// InstallAPF applies herd's APF objects (manifests/apf/herd.yaml: its
	// priority levels and the responder's FlowSchema) as the chart does;
	// without, the first decision that needs a level creates it.
	InstallAPF bool

	// NoAlertmanager runs no Alertmanager.
	NoAlertmanager bool
	// AlertReceiver is where Alertmanager delivers (a webhook URL);
	// default: the stack's responder's /alerts.
	AlertReceiver string
	// AlertRepeat is Alertmanager's repeat_interval; default 1m.
	AlertRepeat time.Duration
	// HeldAlertRepeat is the repeat_interval of the alerts held after their
	// condition (HerdSynchronizedRelist: docs/install.md's route, 1m, so
	// that the responder re-verifies a wave that comes while it fires);
	// default AlertRepeat.
	HeldAlertRepeat time.Duration
	// AlertGroupWait and AlertGroupInterval are Alertmanager's group_wait
	// and group_interval; default 1s and 2s (the demo's).
	AlertGroupWait, AlertGroupInterval time.Duration
	// AlertGroupBy is Alertmanager's group_by; default [alertname].
	// docs/install.md's receiver groups by every label ("..."): each alert
	// is its own notification.
	AlertGroupBy []string

	// NoResponder starts no responder of the stack's own: the caller starts
	// the replicas it needs with StartResponder.
	NoResponder bool
	// ResponderAddrs are where replicas the caller starts will listen
	// (ResponderOptions.Addr; reserve them with proc.FreeAddr): Prometheus
	// scrapes them as job herd-responder, e.g. for the measurement's
	// herd_measurement_flowschema_info.
	ResponderAddrs []string
	// DryRun runs the stack's responder in dry-run (decide, record,
	// change nothing).
	DryRun bool
	// IsolateHoldDown is how long the stack's responder keeps an isolation
	// after its alert resolves (default 30s, so a demo sees it removed).
	IsolateHoldDown time.Duration
	// Measurement turns on the stack's responder's APF measurement
	// (measurement.enabled, its default clients): one FlowSchema per
	// node-side identity and resource, without audit logs
	// (docs/apf-measurement.md).
	Measurement bool
	// ResponderConfig makes the stack's responder's --config from the
	// stack's Prometheus URL (Measurement's line is added to it); default
	// ResponderConfig(...) with DryRun and IsolateHoldDown.
	ResponderConfig func(prometheusURL string) string
}

// Stack is a running stack. Its URLs are on loopback.
type Stack struct {
	CP    *controlplane.ControlPlane
	Admin kubernetes.Interface
	// Exporter is the in-process exporter (Options.Exporter.InProcess);
	// nil when the binary runs.
	Exporter *InProcessExporter
	// Responder is the stack's own responder; nil with NoResponder.
	Responder *Responder
	Prom      *promstack.Prometheus
	// AM is nil with NoAlertmanager.
	AM *promstack.Alertmanager

	ExporterURL     string // /metrics, /debug/clients, /readyz
	AuditURL        string // the exporter's POST /audit
	ResponderURL    string // the stack's responder: /alerts, /metrics, /debug/actions, /debug/triage
	PrometheusURL   string
	AlertmanagerURL string
	// AuditLogPath is the apiserver's audit log (Options.AuditLog).
	AuditLogPath string
	// Dir holds configurations, data and logs (see Options.Dir).
	Dir string
	// Mixin is the effective _config overrides the rules were rendered
	// with; Rendered is what they rendered to.
	Mixin    map[string]any
	Rendered Mixin

	opts      Options
	root      string
	ownDir    bool
	auditAddr string // the exporter's audit listener

	exporterProc *proc.Process
	exporterLog  *herdtest.LogBuffer

	mu    sync.Mutex
	procs []*proc.Process // in start order
}

// NodeName is Node i's name (1-based).
func NodeName(i int) string { return fmt.Sprintf("node-%d", i) }

// NodeIP is Node i's InternalIP: 10.0.0.i for the first 255, in 10.0.0.0/8
// for up to 16 million.
func NodeIP(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }

// Start brings the stack up. With a responder of its own it returns once
// Prometheus scrapes herd and the responder leads; without, once every
// server answers. On error, or when ctx ends first, everything started so
// far is stopped.
func Start(ctx context.Context, opts Options) (s *Stack, err error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Nodes <= 0 && len(opts.AgentNodes) == 0 {
		opts.Nodes = 3
	}
	if opts.IsolateHoldDown == 0 {
		opts.IsolateHoldDown = 30 * time.Second
	}
	if opts.ScrapeInterval == 0 {
		opts.ScrapeInterval = time.Second
	}
	if opts.AlertRepeat == 0 {
		opts.AlertRepeat = time.Minute
	}
	if opts.HeldAlertRepeat == 0 {
		opts.HeldAlertRepeat = opts.AlertRepeat
	}
	if opts.AlertGroupWait == 0 {
		opts.AlertGroupWait = time.Second
	}
	if len(opts.AlertGroupBy) == 0 {
		opts.AlertGroupBy = []string{"alertname"}
	}
	if opts.AlertGroupInterval == 0 {
		opts.AlertGroupInterval = 2 * time.Second
	}
	if opts.APIServerScrapeInterval == 0 {
		opts.APIServerScrapeInterval = 2 * time.Second
	}
	opts.Exporter.defaults()
	s = &Stack{opts: opts, Dir: opts.Dir, Mixin: DemoMixin(), root: opts.Root}
	maps.Copy(s.Mixin, opts.Mixin)
	if s.root == "" {
		if s.root, err = herdtest.RepoRoot(); err != nil {
			return nil, err
		}
	}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "herd-stack-"); err != nil {
			return nil, fmt.Errorf("start stack: %w", err)
		}
		s.ownDir = !opts.KeepDir
	}
	defer func() {
		if err != nil {
			_ = s.Close()
			s = nil
		}
	}()
	step := func(format string, args ...any) {
		fmt.Fprintf(opts.Log, "  stack: "+format+"\n", args...)
	}

	if err := s.startControlPlane(ctx, step); err != nil {
		return s, err
	}
	if opts.Objects != nil {
		if err := opts.Objects(ctx, s); err != nil {
			return s, fmt.Errorf("start stack: the caller's objects: %w", err)
		}
	}

	mode := "binary"
	if opts.Exporter.InProcess {
		mode = "in process"
	}
	step("starting herd exporter (%s)", mode)
	if err := s.startExporter(ctx); err != nil {
		return s, err
	}
	// Alertmanager and Prometheus need the stack's responder's address
	// before it can start (it needs theirs): reserve it.
	var responderAddr string
	if !opts.NoResponder {
		if responderAddr, err = proc.FreeAddr(); err != nil {
			return s, err
		}
		s.ResponderURL = "http://" + responderAddr
	}
	if err := s.renderMixin(); err != nil {
		return s, err
	}
	if !opts.NoAlertmanager {
		step("starting Alertmanager")
		if err := s.startAlertmanager(); err != nil {
			return s, err
		}
	}
	step("starting Prometheus (%s)", s.rulesSummary())
	if err := s.startPrometheus(); err != nil {
		return s, err
	}
	if !opts.NoResponder {
		step("starting herd responder (dryRun: %v, guards on)", opts.DryRun)
		cfg := ResponderConfig(s.PrometheusURL, fmt.Sprint(s.Mixin["rateWindow"]), opts.DryRun, opts.IsolateHoldDown)
		if opts.ResponderConfig != nil {
			cfg = opts.ResponderConfig(s.PrometheusURL)
		}
		r, err := s.StartResponder(ctx, ResponderOptions{Addr: responderAddr, Config: cfg + MeasurementConfig(opts.Measurement)})
		if err != nil {
			return s, err
		}
		s.Responder = r
	}
	// With a responder of its own the stack is a demo's: ready once
	// Prometheus scrapes herd and the responder leads. Without, the caller
	// starts its load at once, as on a Prometheus that has just started.
	if s.Responder != nil {
		if err := s.waitReady(ctx); err != nil {
			return s, err
		}
	}
	step("stack ready")
	return s, nil
}

// startControlPlane starts etcd and kube-apiserver, applies herd's RBAC
// and creates the Nodes.
func (s *Stack) startControlPlane(ctx context.Context, step func(string, ...any)) error {
	opts := s.opts
	policy := opts.AuditPolicy
	if policy == "" {
		b, err := os.ReadFile(filepath.Join(s.root, "manifests/control-plane/audit-policy.yaml"))
		if err != nil {
			return fmt.Errorf("start stack: the shipped audit policy: %w", err)
		}
		policy = string(b)
	}
	// The apiserver's webhook URL is fixed when it starts, before the
	// exporter (which needs the apiserver's credentials) can: reserve the
	// port now. Until the exporter listens, the apiserver retries batches.
	var err error
	if s.auditAddr, err = proc.FreeAddr(); err != nil {
		return err
	}
	s.AuditURL = "http://" + s.auditAddr + "/audit"
	cpOpts := controlplane.Options{
		Identities:  map[string]controlplane.Identity{ExporterIdentity: serviceAccount(ExporterUser), ResponderIdentity: serviceAccount(ResponderUser)},
		AuditPolicy: policy,
		ExtraArgs:   opts.APIServerArgs,
		Dir:         filepath.Join(s.Dir, "controlplane"),
	}
	if !opts.NoAuditWebhook {
		cpOpts.AuditWebhookURL = s.AuditURL
	}
	if opts.AuditLog {
		s.AuditLogPath = filepath.Join(s.Dir, "audit.log")
		cpOpts.AuditLogPath = s.AuditLogPath
	}
	cpOpts.Nodes = append(cpOpts.Nodes, opts.Ghosts...)
	cpOpts.Nodes = append(cpOpts.Nodes, opts.AgentNodes...)
	for i := 1; i <= opts.Nodes; i++ {
		cpOpts.Nodes = append(cpOpts.Nodes, NodeName(i))
	}
	if opts.ControlPlane != nil {
		opts.ControlPlane(&cpOpts)
	}
	step("starting etcd and kube-apiserver %s (audit webhook → herd exporter: %v)", controlplane.Version, !opts.NoAuditWebhook)
	if err := os.MkdirAll(cpOpts.Dir, 0o755); err != nil {
		return fmt.Errorf("start stack: %w", err)
	}
	if s.CP, err = controlplane.Start(ctx, cpOpts); err != nil {
		return fmt.Errorf("start stack: %w", err)
	}
	s.Admin = s.CP.Client(controlplane.Admin)
	manifests := []string{"manifests/rbac/exporter.yaml", "manifests/rbac/responder.yaml"}
	if opts.InstallAPF {
		manifests = append(manifests, "manifests/apf/herd.yaml")
	}
	for _, m := range manifests {
		if _, err := ApplyManifest(ctx, s.Admin, filepath.Join(s.root, m)); err != nil {
			return err
		}
	}
	if opts.Nodes == 0 {
		return nil // AgentNodes only: their kubelets register them
	}
	step("creating %d Nodes", opts.Nodes)
	nodes := make([]*corev1.Node, opts.Nodes)
	for i := range nodes {
		nodes[i] = herdtest.Node(NodeName(i+1), NodeIP(i+1))
	}
	return herdtest.CreateNodes(ctx, s.Admin, nodes, 8)
}

func serviceAccount(user string) controlplane.Identity {
	return controlplane.Identity{User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:herd"}}
}

// herdBin is the herd binary, built on first use.
func (s *Stack) herdBin(ctx context.Context) (string, error) {
	if s.opts.HerdBin == "" {
		fmt.Fprintf(s.opts.Log, "  stack: building herd (go build ./cmd/herd)\n")
		bin, err := herdtest.HerdBinary(ctx)
		if err != nil {
			return "", err
		}
		s.opts.HerdBin = bin
	}
	// Children run in Dir: a relative path would not resolve there.
	return filepath.Abs(s.opts.HerdBin)
}

// waitReady waits until Prometheus has scraped herd's targets and the
// stack's responder leads.
func (s *Stack) waitReady(ctx context.Context) error {
	jobs := []string{ExporterJob, ResponderJob}
	query := fmt.Sprintf(`count(up{job=~%q} == 1)`, strings.Join(jobs, "|"))
	return herdtest.Poll(ctx, 90*time.Second, "Prometheus to scrape "+strings.Join(jobs, " and ")+" (and the responder to lead)", func(ctx context.Context) error {
		if crashed := s.Crashed(); len(crashed) > 0 {
			return fmt.Errorf("%s exited:\n%s", strings.Join(crashed, ", "), s.Tails(20, true))
		}
		if v, err := s.QueryValue(ctx, query); err != nil || int(v) != len(jobs) {
			return fmt.Errorf("%s = %v (%v)", query, v, err)
		}
		if !s.Responder.Ready(ctx) {
			return errors.New("the responder does not lead yet")
		}
		return nil
	})
}

// track remembers a child process for Crashed, Tails and Close.
func (s *Stack) track(p *proc.Process) {
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
}

func (s *Stack) processes() []*proc.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*proc.Process(nil), s.procs...)
}

// Crashed names the stack's processes that exited although nobody stopped
// them.
func (s *Stack) Crashed() []string {
	var out []string
	for _, p := range s.processes() {
		if p.Crashed() {
			out = append(out, p.Name)
		}
	}
	return out
}

// Tails is the end of each process's log (only the crashed ones' if
// crashedOnly), for errors and failing tests.
func (s *Stack) Tails(n int, crashedOnly bool) string {
	var b strings.Builder
	for _, p := range s.processes() {
		if !crashedOnly || p.Crashed() {
			fmt.Fprintf(&b, "--- %s (%s)\n%s\n", p.Name, p.LogPath, p.Tail(n))
		}
	}
	if s.exporterLog != nil && !crashedOnly {
		fmt.Fprintf(&b, "--- herd exporter (in process)\n%s\n", s.exporterLog.Tail(n))
	}
	return b.String()
}

// ExporterLog is the end of the exporter's log, in process or binary.
func (s *Stack) ExporterLog(n int) string {
	if s.exporterLog != nil {
		return s.exporterLog.Tail(n)
	}
	if s.exporterProc != nil {
		return s.exporterProc.Tail(n)
	}
	return ""
}

// Close stops every process in reverse start order, then the control
// plane, and removes Dir if Start created it. It returns the in-process
// exporter's error and any process that outlived SIGKILL. It is safe to
// call twice.
func (s *Stack) Close() error {
	var errs []error
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		if _, err := procs[i].Stop(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if s.Exporter != nil {
		if err := s.Exporter.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("herd exporter (in process): %w", err))
		}
	}
	if s.CP != nil {
		s.CP.Stop()
		s.CP = nil
	}
	if s.ownDir {
		os.RemoveAll(s.Dir)
		s.ownDir = false
	}
	return errors.Join(errs...)
}

// httpAddr is host:port of an http:// URL.
func httpAddr(url string) string { return strings.TrimPrefix(url, "http://") }
