package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/apiservices"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/internal/kube"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/proc"
)

// ExporterOptions say how the stack runs `herd exporter`: as its service
// account, under the RBAC herd ships, fed by the apiserver's audit webhook
// (unless Options.NoAuditWebhook) on a listener without authentication
// (everything is on loopback, and the apiserver sends its webhook token
// only over https).
type ExporterOptions struct {
	// InProcess runs the exporter in this process (exporter.New), so that a
	// test can read its registry and the race detector covers it; its
	// accounting window may then be shorter than the 1m herd's
	// configuration allows. Default: the herd binary.
	InProcess bool
	// Window is the accounting window (herd_relisting_instances, top-K);
	// default 1m, as short as the binary allows, as the mixin's windows are
	// shortened for the demo.
	Window time.Duration
	// GhostGrace is --cluster.ghost-grace; default 1m.
	GhostGrace time.Duration
	// ProbeInterval is how often aggregated APIServices are probed;
	// default herd's.
	ProbeInterval time.Duration
	// RevisionProbe is --cluster.revision-probe-interval; default herd's.
	RevisionProbe time.Duration
	// FollowAuditLog also feeds the exporter the apiserver's audit log
	// (Options.AuditLog): the duplicates are dropped by auditID.
	FollowAuditLog bool
	// Config is the binary's whole --config YAML; default: the window and
	// HostProxies as the trusted proxies.
	Config string
	// Args are more flags for the binary (--log.level=warn).
	Args []string
}

// LoopbackProxy is the trusted proxy of the stack's exporter
// (accounting.trustedProxies). Every simulated node-side client (test/nodesim,
// test/drill) connects to the apiserver from loopback and says which node
// it plays with X-Forwarded-For, so the apiserver records sourceIPs as
// [<the node's address>, 127.0.0.1]. herd trusts only the connection's
// address unless told otherwise (SPEC §3.1 "What herd trusts"): here
// 127.0.0.1 plays the trusted proxy that appends the real client's address,
// as a load balancer in front of the apiserver would in a real cluster, so
// the simulated addresses attribute agents to their Nodes and name ghosts.
// (A client's own X-Forwarded-For from anywhere else is still not believed:
// that is tested in exporter/accounting and exporter/ingest.)
const LoopbackProxy = "127.0.0.1/32"

// HostProxies are the trusted proxies of an exporter whose apiserver
// listens on address (controlplane.Options.Address; "" is loopback): the
// address the simulated clients on this host call it from. With the
// control plane on a hollow Network's gateway (test/hollow), the host's
// clients reach it from the gateway, and the gateway plays the proxy; the
// hollow nodes call from their own namespaces' addresses and name no one
// else. Loopback stays trusted either way.
func HostProxies(address string) []string {
	out := []string{LoopbackProxy}
	if a, err := netip.ParseAddr(address); err == nil && !a.IsLoopback() {
		out = append(out, netip.PrefixFrom(a, a.BitLen()).String())
	}
	return out
}

// HostProxies are the stack's exporter's trusted proxies (HostProxies of
// its control plane's address).
func (s *Stack) HostProxies() []string {
	u, err := url.Parse(s.CP.URL)
	if err != nil {
		return []string{LoopbackProxy}
	}
	return HostProxies(u.Hostname())
}

func (o *ExporterOptions) defaults() {
	if o.Window == 0 {
		o.Window = time.Minute
	}
	if o.GhostGrace == 0 {
		o.GhostGrace = time.Minute
	}
}

// startExporter runs the exporter on the audit address reserved for the
// apiserver's webhook, and waits for /readyz (informers synced).
func (s *Stack) startExporter(ctx context.Context) error {
	o := s.opts.Exporter
	auditAddr := s.auditAddr
	var logFiles []string
	if o.FollowAuditLog {
		if s.AuditLogPath == "" {
			return errors.New("start herd exporter: FollowAuditLog needs Options.AuditLog")
		}
		logFiles = []string{s.AuditLogPath}
	}
	if o.InProcess {
		cfg := config.Default()
		cfg.Accounting.Window = model.Duration(o.Window)
		cfg.Accounting.TrustedProxies = s.HostProxies()
		s.exporterLog = &herdtest.LogBuffer{}
		e, err := RunExporter(exporter.Options{
			Config:        cfg,
			AuditInsecure: true,
			LogFiles:      logFiles,
			Kube:          kube.Tune(s.CP.Config(ExporterIdentity), "exporter"),
			GhostGrace:    o.GhostGrace,
			RevisionProbe: o.RevisionProbe,
			APIServices:   apiservices.Options{ProbeInterval: o.ProbeInterval},
			Logger:        slog.New(slog.NewTextHandler(s.exporterLog, nil)),
		}, auditAddr)
		if err != nil {
			return err
		}
		s.Exporter, s.ExporterURL = e, e.MetricsURL
		p := herdtest.Poll(ctx, time.Minute, "herd exporter /readyz (informers synced under the shipped RBAC)", func(ctx context.Context) error {
			if c := herdtest.Status(ctx, e.MetricsURL+"/readyz"); c != 200 {
				return fmt.Errorf("/readyz: %d", c)
			}
			return nil
		})
		if p != nil {
			return fmt.Errorf("start herd exporter: %w\n%s", p, s.exporterLog.Tail(20))
		}
		return nil
	}

	bin, err := s.herdBin(ctx)
	if err != nil {
		return err
	}
	kubeconfig, err := s.CP.Kubeconfig(ExporterIdentity)
	if err != nil {
		return err
	}
	cfgYAML := o.Config
	if cfgYAML == "" {
		cfgYAML = fmt.Sprintf("accounting: {window: %s, trustedProxies: [%s]}\n", model.Duration(o.Window), QuotedList(s.HostProxies()))
	}
	cfg := filepath.Join(s.Dir, "exporter.yaml")
	if err := os.WriteFile(cfg, []byte(cfgYAML), 0o644); err != nil {
		return fmt.Errorf("start herd exporter: %w", err)
	}
	args := []string{"exporter",
		"--audit.listen-address=" + auditAddr,
		"--audit.insecure",
		"--kubeconfig=" + kubeconfig,
		"--config=" + cfg,
		"--cluster.ghost-grace=" + o.GhostGrace.String(),
	}
	for _, f := range logFiles {
		args = append(args, "--audit.log-file="+f)
	}
	if o.ProbeInterval > 0 {
		args = append(args, "--apiservices.probe-interval="+o.ProbeInterval.String())
	}
	if o.RevisionProbe > 0 {
		args = append(args, "--cluster.revision-probe-interval="+o.RevisionProbe.String())
	}
	args = append(args, o.Args...)
	p, addr, err := proc.StartServer(ctx, proc.Server{
		Name: "herd-exporter", Bin: bin,
		Args:      func(addr string) []string { return append(args, "--web.listen-address="+addr) },
		LogPath:   filepath.Join(s.Dir, "herd-exporter.log"),
		Options:   proc.Options{Dir: s.Dir},
		ReadyPath: "/readyz",
		Timeout:   time.Minute,
	})
	if err != nil {
		return fmt.Errorf("start herd exporter: %w", err)
	}
	s.track(p)
	s.exporterProc, s.ExporterURL = p, "http://"+addr
	return nil
}

// InProcessExporter is `herd exporter` running in this process.
type InProcessExporter struct {
	*exporter.Exporter
	// MetricsURL serves /metrics, the debug pages and health.
	MetricsURL string
	// AuditURL is POST /audit, https when opts.Audit has a web config.
	AuditURL string

	cancel context.CancelFunc
	done   chan error
	err    error
}

// RunExporter runs an exporter in this process until Stop: opts.Web
// listens on a free loopback port and opts.Audit on auditAddr (a free one
// when empty); the caller sets the configuration, auth and feeds. It
// returns once /healthz answers.
func RunExporter(opts exporter.Options, auditAddr string) (*InProcessExporter, error) {
	webAddr, err := proc.FreeAddr()
	if err != nil {
		return nil, err
	}
	if auditAddr == "" {
		if auditAddr, err = proc.FreeAddr(); err != nil {
			return nil, err
		}
	}
	opts.Web = herdtest.WebFlags("", webAddr)
	auditConfig := ""
	if opts.Audit.WebConfigFile != nil {
		auditConfig = *opts.Audit.WebConfigFile
	}
	opts.Audit = herdtest.WebFlags(auditConfig, auditAddr)
	e, err := exporter.New(opts)
	if err != nil {
		return nil, fmt.Errorf("start herd exporter (in process): %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &InProcessExporter{Exporter: e, MetricsURL: "http://" + webAddr, AuditURL: "http://" + auditAddr + "/audit", cancel: cancel, done: make(chan error, 1)}
	if *opts.Audit.WebConfigFile != "" {
		r.AuditURL = "https://" + auditAddr + "/audit"
	}
	go func() { r.done <- e.Run(ctx) }()
	err = herdtest.Poll(ctx, 10*time.Second, "the in-process exporter to listen", func(ctx context.Context) error {
		select {
		case err := <-r.done:
			r.done <- err
			return fmt.Errorf("exporter exited: %w", err)
		default:
		}
		if herdtest.Status(ctx, r.MetricsURL+"/healthz") == 0 {
			return errors.New("no answer on /healthz")
		}
		return nil
	})
	if err != nil {
		_ = r.Stop()
		return nil, fmt.Errorf("start herd exporter (in process): %w", err)
	}
	return r, nil
}

// Stop ends the exporter and returns what its Run returned. It is safe to
// call twice.
func (e *InProcessExporter) Stop() error {
	e.cancel()
	if e.done != nil {
		e.err = <-e.done
		e.done = nil
	}
	return e.err
}

// QuotedList is a YAML flow sequence's items: "a", "b".
func QuotedList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
