package main

import (
	"fmt"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/exporter-toolkit/web"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/apiservices"
	"github.com/herd-k8s/herd/exporter/cluster"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/exporter/metricsserver"
	kubeclient "github.com/herd-k8s/herd/internal/kube"
)

// exporterFlags are `herd exporter`'s flags (SPEC §2).
type exporterFlags struct {
	webListen, auditListen *[]string
	webConfig, auditConfig *string
	tokenFile, configFile  *string
	insecure, logFromStart *bool
	logFiles               *[]string
	noSystemd              bool
	kubeconfig             *string
	noKube                 *bool
	cidrs                  *[]string
	ghostGrace             *time.Duration
	revisionEvery          *time.Duration
	msNamespace, msName    *string
	msSelector             *string
	probeEvery, probeLimit *time.Duration
	pprof                  *bool
}

func addExporterFlags(cmd *kingpin.CmdClause) *exporterFlags {
	f := &exporterFlags{}
	f.webListen = cmd.Flag("web.listen-address", "Address for /metrics, debug pages and health (repeatable).").Default(":10380").Strings()
	f.webConfig = cmd.Flag("web.config.file", "exporter-toolkit web config for the metrics listener (TLS, basic auth).").Default("").String()
	f.pprof = cmd.Flag("web.enable-pprof", "Serve Go's profiles (net/http/pprof) under /debug/pprof/ on the metrics listener, behind its web config; off by default: a profile costs CPU and shows internals.").Bool()
	f.auditListen = cmd.Flag("audit.listen-address", "Address for POST /audit (repeatable).").Default(":10381").Strings()
	f.auditConfig = cmd.Flag("audit.web-config.file", "exporter-toolkit web config for the audit listener (TLS, client certificates, basic auth).").Default("").String()
	f.tokenFile = cmd.Flag("audit.bearer-token-file", "File with the bearer token audit senders must present; re-read when it changes.").Default("").String()
	f.insecure = cmd.Flag("audit.insecure", "Accept audit events without authentication.").Bool()
	f.logFiles = cmd.Flag("audit.log-file", "Audit log file to follow across rotation (repeatable).").Strings()
	f.logFromStart = cmd.Flag("audit.log-from-start", "Read audit log files from the start instead of the end.").Bool()
	f.configFile = cmd.Flag("config", "YAML configuration file (strict: unknown fields are errors).").Default("").String()
	f.kubeconfig = cmd.Flag("kubeconfig", "Kubeconfig file (else $KUBECONFIG, else in-cluster).").Default("").String()
	f.noKube = cmd.Flag("no-kube", "Run on audit events alone: no Node attribution by IP, no ghosts or stale kubelets.").Bool()
	f.cidrs = cmd.Flag("cluster.control-plane-cidrs", "Source CIDRs of control-plane clients that no Node owns; never ghosts (repeatable).").Strings()
	f.ghostGrace = cmd.Flag("cluster.ghost-grace", "How long an instance or a fresh informer sync waits before anything is called a ghost.").Default("5m").Duration()
	f.revisionEvery = cmd.Flag("cluster.revision-probe-interval", "How often the cluster's revision is read (a consistent WatchList of one Node name, closed at its first bookmark): requests for a resourceVersion above it count as too large, and a revision going back (an etcd restore without --bump-revision) makes herd's informers start over.").Default("10s").Duration()
	f.msNamespace = cmd.Flag("metrics-server.namespace", "Namespace of the metrics-server Deployment (herd's Role must be there).").Default("kube-system").String()
	f.msName = cmd.Flag("metrics-server.name", "Name of the metrics-server Deployment (default: found by its k8s-app or app.kubernetes.io/name label).").Default("").String()
	f.probeEvery = cmd.Flag("apiservices.probe-interval", "How often each aggregated APIService is probed through the apiserver.").Default("30s").Duration()
	f.probeLimit = cmd.Flag("apiservices.probe-timeout", "Probe timeout; a slower answer counts as reason=\"timeout\".").Default("5s").Duration()
	f.msSelector = cmd.Flag("metrics-server.selector", "Label selector for the metrics-server Deployment, instead of the default labels.").Default("").String()
	return f
}

func (f *exporterFlags) options() (exporter.Options, error) {
	cfg := config.Default()
	if *f.configFile != "" {
		var err error
		if cfg, err = config.Load(*f.configFile); err != nil {
			return exporter.Options{}, err
		}
	}
	cidrs, err := cluster.ParseCIDRs(*f.cidrs)
	if err != nil {
		return exporter.Options{}, fmt.Errorf("--cluster.control-plane-cidrs: %w", err)
	}
	var kube *rest.Config
	if !*f.noKube {
		if kube, err = kubeclient.Config(*f.kubeconfig, "exporter"); err != nil {
			return exporter.Options{}, fmt.Errorf("%w (or run with --no-kube)", err)
		}
	}
	return exporter.Options{
		Kube:              kube,
		ControlPlaneCIDRs: cidrs,
		GhostGrace:        *f.ghostGrace,
		RevisionProbe:     *f.revisionEvery,
		APIServices:       apiservices.Options{ProbeInterval: *f.probeEvery, ProbeTimeout: *f.probeLimit},
		MetricsServer:     metricsserver.Options{Namespace: *f.msNamespace, Name: *f.msName, LabelSelector: *f.msSelector},
		Config:            cfg,
		Web:               web.FlagConfig{WebListenAddresses: f.webListen, WebSystemdSocket: &f.noSystemd, WebConfigFile: f.webConfig},
		Audit:             web.FlagConfig{WebListenAddresses: f.auditListen, WebSystemdSocket: &f.noSystemd, WebConfigFile: f.auditConfig},
		AuditTokenFile:    *f.tokenFile,
		AuditInsecure:     *f.insecure,
		LogFiles:          *f.logFiles,
		LogFromStart:      *f.logFromStart,
		Pprof:             *f.pprof,
	}, nil
}
