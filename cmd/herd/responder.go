package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"k8s.io/klog/v2"

	kubeclient "github.com/herd-k8s/herd/internal/kube"
	"github.com/herd-k8s/herd/responder"
	"github.com/herd-k8s/herd/responder/leader"
	"github.com/herd-k8s/herd/responder/policy"
)

// responderFlags are `herd responder`'s flags (SPEC §2, §4).
type responderFlags struct {
	webListen                   *[]string
	webConfig, tokenFile        *string
	insecure, check             *bool
	configFile, promURL         *string
	kubeconfig                  *string
	leNamespace, leName, leID   *string
	leLease, leRenew, leRetry   *time.Duration
	sweepEvery, shutdownTimeout *time.Duration
	noSystemd                   bool
}

func addResponderFlags(cmd *kingpin.CmdClause) *responderFlags {
	f := &responderFlags{}
	f.webListen = cmd.Flag("web.listen-address", "Address for POST /alerts, /metrics, debug pages and health (repeatable).").Default(":10382").Strings()
	f.webConfig = cmd.Flag("web.config.file", "exporter-toolkit web config (TLS, client certificates, basic auth).").Default("").String()
	f.tokenFile = cmd.Flag("web.bearer-token-file", "File with the bearer token Alertmanager must present on /alerts; re-read when it changes.").Default("").String()
	f.insecure = cmd.Flag("web.insecure-no-auth", "Accept alerts without authentication.").Bool()
	f.configFile = cmd.Flag("config", "Responder configuration file (strict YAML; see docs/responder.md).").Default("").String()
	f.check = cmd.Flag("check", "Validate --config and --prometheus.url, print a one-line summary, and exit.").Bool()
	f.promURL = cmd.Flag("prometheus.url", "Prometheus to read evidence from (overrides prometheus.url in --config).").Default("").String()
	f.kubeconfig = cmd.Flag("kubeconfig", "Kubeconfig file (else $KUBECONFIG, else in-cluster).").Default("").String()
	f.leNamespace = cmd.Flag("leader-election.namespace", "Namespace of the leader Lease.").Default(envOr("POD_NAMESPACE", "herd")).String()
	f.leName = cmd.Flag("leader-election.name", "Name of the leader Lease.").Default("herd-responder").String()
	f.leID = cmd.Flag("leader-election.identity", "This replica's identity in the Lease.").Default(envOr("POD_NAME", hostname())).String()
	f.leLease = cmd.Flag("leader-election.lease-duration", "How long a leader's Lease lasts without renewal: the longest a failover takes.").Default("15s").Duration()
	f.leRenew = cmd.Flag("leader-election.renew-deadline", "How long the leader keeps trying to renew before it stops acting.").Default("10s").Duration()
	f.leRetry = cmd.Flag("leader-election.retry-period", "How often replicas try to take or renew the Lease.").Default("2s").Duration()
	f.sweepEvery = cmd.Flag("sweep-interval", "How often expired and resolved APF objects of herd's are removed.").Default(responder.DefaultSweepInterval.String()).Duration()
	f.shutdownTimeout = cmd.Flag("shutdown-timeout", "How long shutdown waits for in-flight actions before releasing the Lease.").Default(responder.DefaultShutdownTimeout.String()).Duration()
	return f
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "herd-responder"
	}
	return h
}

func (f *responderFlags) config() (policy.Config, error) {
	opt := policy.WithPrometheusURL(*f.promURL)
	if *f.configFile == "" {
		c, err := policy.FromDefault(opt)
		if err != nil {
			return c, fmt.Errorf("no --config: the defaults need --prometheus.url: %w", err)
		}
		return c, nil
	}
	return policy.Load(*f.configFile, opt)
}

// runResponder serves until SIGINT or SIGTERM.
func runResponder(f *responderFlags, logger *slog.Logger, stdout, stderr io.Writer) int {
	cfg, err := f.config()
	if err != nil {
		fmt.Fprintf(stderr, "herd responder: %s\n", oneLine(err))
		return 2
	}
	if *f.check {
		fmt.Fprintf(stdout, "configuration OK: dryRun=%t, %d routes, prometheus %s\n", cfg.DryRun, len(cfg.Routes), cfg.Prometheus.URL)
		return 0
	}
	kube, err := kubeclient.Config(*f.kubeconfig, "responder")
	if err != nil {
		fmt.Fprintf(stderr, "herd responder: %v\n", err)
		return 2
	}
	// The responder's requests come in bursts (an alert group of many nodes:
	// a GET, an apply and an Event each) and are few in all (the guards
	// bound the actions per hour); the exporter's 20/s would queue a burst
	// for seconds, past Alertmanager's patience.
	kube.QPS, kube.Burst = 200, 400
	klog.SetSlogLogger(logger)
	r, err := responder.New(responder.Options{
		Config: cfg, Kube: kube,
		Web:             web.FlagConfig{WebListenAddresses: f.webListen, WebSystemdSocket: &f.noSystemd, WebConfigFile: f.webConfig},
		BearerTokenFile: *f.tokenFile, InsecureNoAuth: *f.insecure,
		Leader: leader.Options{Namespace: *f.leNamespace, Name: *f.leName, Identity: *f.leID,
			LeaseDuration: *f.leLease, RenewDeadline: *f.leRenew, RetryPeriod: *f.leRetry},
		SweepInterval: *f.sweepEvery, ShutdownTimeout: *f.shutdownTimeout,
		Logger: logger,
	})
	if err != nil {
		fmt.Fprintf(stderr, "herd responder: %s\n", oneLine(err))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger.Info("starting herd responder", "version", version.Info(), "web", *f.webListen, "dry_run", cfg.DryRun,
		"prometheus", cfg.Prometheus.URL, "identity", *f.leID, "lease", *f.leNamespace+"/"+*f.leName)
	if err := r.Run(ctx); err != nil {
		logger.Error("herd responder stopped", "err", err)
		return 1
	}
	return 0
}

// oneLine joins a multi-error's lines so the command's error is one line
// per SPEC §2 ("; " between problems).
func oneLine(err error) string {
	s := err.Error()
	out := make([]rune, 0, len(s))
	for _, c := range s {
		if c == '\n' {
			out = append(out, ';', ' ')
			continue
		}
		out = append(out, c)
	}
	return string(out)
}
