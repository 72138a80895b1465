// Package exporter assembles `herd exporter`: audit ingest (webhook and log
// files) feeding the ledger, collectors over it, and the HTTP listeners for
// /metrics, debug pages and /audit.
package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/apf"
	"github.com/herd-k8s/herd/exporter/apiservices"
	"github.com/herd-k8s/herd/exporter/classify"
	"github.com/herd-k8s/herd/exporter/cluster"
	"github.com/herd-k8s/herd/exporter/collector"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/exporter/ingest"
	"github.com/herd-k8s/herd/exporter/metricsserver"
	"github.com/herd-k8s/herd/exporter/tail"
	"github.com/herd-k8s/herd/internal/webauth"
	"github.com/herd-k8s/herd/internal/webserver"
)

// Options are the exporter's flags, parsed.
type Options struct {
	Config config.Config
	// Web is the /metrics and debug listener.
	Web web.FlagConfig
	// Audit is the /audit listener; its web config carries TLS and mTLS.
	Audit          web.FlagConfig
	AuditTokenFile string
	AuditInsecure  bool
	LogFiles       []string
	LogFromStart   bool
	// Kube is the API client configuration; nil runs on audit alone
	// (--no-kube): no node attribution by IP, no ghosts or stale kubelets.
	Kube              *rest.Config
	ControlPlaneCIDRs []netip.Prefix
	GhostGrace        time.Duration
	// RevisionProbe is how often the cluster view reads the cluster's
	// revision (--cluster.revision-probe-interval); 0 is its default.
	RevisionProbe time.Duration
	// MetricsServer says where to find metrics-server's Deployment.
	MetricsServer metricsserver.Options
	// APIServices tunes the aggregated-APIService probes.
	APIServices apiservices.Options
	Logger      *slog.Logger
	// Pprof serves net/http/pprof's profiles under /debug/pprof/ on the
	// metrics listener (--web.enable-pprof), to see where a loaded herd
	// spends its CPU and memory.
	Pprof bool
	// Now is the ledger's clock; nil is time.Now. Tests read recorded
	// fixtures at a fixed time with it.
	Now func() time.Time
}

// Exporter is a configured, not yet running, `herd exporter`.
type Exporter struct {
	opts      Options
	ledger    *accounting.Ledger
	pipeline  *ingest.Pipeline
	registry  *prometheus.Registry
	audit     *ingest.Handler
	logger    *slog.Logger
	cluster   *cluster.View
	apf       *apf.View
	msrv      *metricsserver.Informer
	apis      *apiservices.View
	synced    []func() bool
	followers map[string]*tail.Follower
	reads     *readGate
}

// New validates the options and builds the parts. Every error names the flag
// or file at fault.
func New(opts Options) (*Exporter, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var tokens *webauth.TokenFile
	if opts.AuditTokenFile != "" {
		t, err := webauth.NewTokenFile(opts.AuditTokenFile)
		if err != nil {
			return nil, fmt.Errorf("--audit.bearer-token-file: %w", err)
		}
		tokens = t
	}
	listenerAuth, err := webauth.ListenerAuth(*opts.Audit.WebConfigFile)
	if err != nil {
		return nil, fmt.Errorf("--audit.web-config.file: %w", err)
	}
	if tokens == nil && listenerAuth == "" && !opts.AuditInsecure {
		return nil, errors.New("the audit listener needs authentication: give --audit.bearer-token-file, or --audit.web-config.file requiring client certificates or basic auth; or --audit.insecure to accept unauthenticated events")
	}
	if err := web.Validate(*opts.Web.WebConfigFile); err != nil {
		return nil, fmt.Errorf("--web.config.file: %w", err)
	}

	cls, err := classify.New(opts.Config.Rules)
	if err != nil {
		return nil, fmt.Errorf("config rules: %w", err)
	}
	reg := prometheus.NewRegistry()
	var sources collector.Sources
	var view *cluster.View
	var resolver accounting.NodeResolver
	var synced []func() bool
	var msrv *metricsserver.Informer
	var apis *apiservices.View
	var apfView *apf.View
	if opts.Kube != nil {
		client, err := kubernetes.NewForConfig(opts.Kube)
		if err != nil {
			return nil, fmt.Errorf("kubernetes client: %w", err)
		}
		view = cluster.New(client, cluster.Options{ControlPlaneCIDRs: opts.ControlPlaneCIDRs, Grace: opts.GhostGrace,
			RevisionProbeInterval: opts.RevisionProbe, Logger: logger})
		// And the ledger's Judge (snapshots carry the verdicts) and
		// RevisionSource (requests above the cluster's revision are too
		// large whatever their answer).
		resolver = view
		sources.Cluster = view
		msOpts := opts.MetricsServer
		msOpts.Logger = logger
		if msrv, err = metricsserver.New(client, msOpts); err != nil {
			return nil, fmt.Errorf("metrics-server: %w", err)
		}
		sources.MetricsServer = msrv
		apiOpts := opts.APIServices
		apiOpts.Logger = logger
		if apis, err = apiservices.New(opts.Kube, apiOpts); err != nil {
			return nil, fmt.Errorf("apiservices: %w", err)
		}
		sources.APIServices = apis
		// Not a readiness condition: without it the forecast's
		// priority_level is "" and nothing else changes.
		apfView = apf.New(client, logger)
		synced = append(synced, view.Synced, msrv.Synced, apis.Synced)
	}
	ledger, err := accounting.New(opts.Config.Accounting, cls, resolver)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if opts.Now != nil {
		ledger.SetClock(opts.Now)
	}
	if apfView != nil {
		ledger.SetLeveler(apfView)
	}
	sources.Ledger = ledger
	in := opts.Config.Ingest
	followers := map[string]*tail.Follower{}
	for _, path := range opts.LogFiles {
		f := tail.New(path, tail.Options{FromStart: opts.LogFromStart, MaxLineBytes: in.MaxEventBytes, Logger: logger})
		followers[path] = f
		if sources.AuditFiles == nil {
			sources.AuditFiles = map[string]collector.FileSource{}
		}
		sources.AuditFiles[path] = f
	}
	metrics := ingest.NewMetrics(reg)
	pipeline := ingest.NewPipeline(ledger, ingest.NewDedup(time.Duration(in.DedupWindow), in.DedupMaxEntries), metrics)
	reg.MustRegister(
		collector.New(sources, logger),
		versioncollector.NewCollector("herd"),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &Exporter{
		opts: opts, ledger: ledger, pipeline: pipeline, registry: reg, logger: logger,
		cluster: view, apf: apfView, msrv: msrv, apis: apis, synced: synced, followers: followers, reads: newReadGate(),
		audit: ingest.NewHandler(pipeline, ingest.HandlerOptions{
			Tokens: tokens, MaxBodyBytes: in.MaxBodyBytes, MaxEventBytes: in.MaxEventBytes,
			MaxInFlight: in.MaxInFlight, Logger: logger,
		}),
	}, nil
}

// Registry is the exporter's dedicated registry (tests gather from it).
func (e *Exporter) Registry() *prometheus.Registry { return e.registry }

// Ledger is the exporter's ledger.
func (e *Exporter) Ledger() *accounting.Ledger { return e.ledger }

// AuditHandler serves POST /audit.
func (e *Exporter) AuditHandler() http.Handler { return e.audit }

// LineSink accounts audit log lines as the file follower does.
func (e *Exporter) LineSink(s ingest.Source) *ingest.LineSink {
	return e.pipeline.NewLineSink(s, e.opts.Config.Ingest.MaxEventBytes)
}

// Handler serves /metrics, the debug pages and health.
func (e *Exporter) Handler() http.Handler {
	mux := webserver.Mux("herd exporter", "Measures the node-side clients of a Kubernetes control plane from audit events.",
		webserver.Link{Address: "/metrics", Text: "Metrics"},
		webserver.Link{Address: "/debug/clients", Text: "Clients (JSON)"},
		webserver.Link{Address: "/debug/apiservices", Text: "Aggregated APIServices (JSON)"},
		webserver.Link{Address: "/debug/config", Text: "Configuration (JSON)"},
	)
	mux.Handle("/metrics", promhttp.HandlerFor(gatedGatherer{e.registry, e.reads}, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(e.logger.Handler(), slog.LevelError),
		MaxRequestsInFlight: 4,
		Timeout:             30 * time.Second,
		EnableOpenMetrics:   true,
	}))
	mux.HandleFunc("/debug/clients", e.debugClients)
	if e.apis != nil {
		mux.Handle("/debug/apiservices", e.apis.DebugHandler())
	}
	mux.HandleFunc("/debug/config", func(w http.ResponseWriter, r *http.Request) { webserver.WriteJSON(w, e.opts.Config) })
	mux.HandleFunc("/readyz", e.readyz)
	if e.opts.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// debugClients lists instances; ?role= ?client= ?node= ?identity= filter and
// ?limit= caps (default 1000, the busiest first).
func (e *Exporter) debugClients(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := accounting.ClientFilter{Role: q.Get("role"), Client: q.Get("client"), Node: q.Get("node"), Identity: q.Get("identity"), Limit: 1000}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			http.Error(w, "limit must be a non-negative integer", http.StatusBadRequest)
			return
		}
		f.Limit = n
	}
	if !e.reads.enter(r.Context()) {
		http.Error(w, "client went away while waiting for its turn", http.StatusServiceUnavailable)
		return
	}
	page := debugClientsPage{Clients: e.ledger.Clients(f), TokenReviewNodes: e.ledger.TokenReviewNodes()}
	if e.msrv != nil {
		page.MetricsServer = e.msrv.Deployments()
	}
	buf := pageBufs.Get().(*pageBuf)
	defer putPageBuf(buf)
	err := buf.enc.Encode(page)
	e.reads.leave() // the page is rendered: writing it to a slow reader holds no slot
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
}

// debugClientsPage puts metrics-server's kubelet auth mode next to the
// kubelets that create TokenReviews because of it (incident 004). Each
// client carries the ledger's verdict on it (ghost, stale, node, Lease age).
type debugClientsPage struct {
	MetricsServer    []metricsserver.DeploymentView `json:"metricsServer,omitempty"`
	TokenReviewNodes int                            `json:"tokenReviewNodes"`
	Clients          []accounting.ClientView        `json:"clients"`
}

// readyz is ready once every informer has synced; with --no-kube at once.
func (e *Exporter) readyz(w http.ResponseWriter, r *http.Request) {
	for _, ok := range e.synced {
		if !ok() {
			http.Error(w, "informers not synced", http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ready")
}

// Run serves until ctx ends, then shuts the listeners down.
func (e *Exporter) Run(ctx context.Context) error {
	servers := []*http.Server{
		newServer(e.Handler()),
		newServer(e.AuditHandler()),
	}
	flags := []*web.FlagConfig{&e.opts.Web, &e.opts.Audit}
	errc := make(chan error, len(servers)+len(e.followers)+1) // every sender fits: none blocks after Run returns
	for i, s := range servers {
		go func() { errc <- web.ListenAndServe(s, flags[i], e.logger) }()
	}
	var wg sync.WaitGroup
	fctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	if e.cluster != nil {
		e.cluster.Start(fctx)
		e.apf.Start(fctx)
		e.msrv.Start(fctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.apis.Run(fctx); err != nil {
				errc <- fmt.Errorf("apiservices: %w", err)
			}
		}()
	}
	for path, f := range e.followers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.follow(fctx, f, path); err != nil {
				errc <- fmt.Errorf("--audit.log-file %s: %w", path, err)
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	for _, s := range servers {
		_ = s.Shutdown(sctx)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (e *Exporter) follow(ctx context.Context, f *tail.Follower, path string) error {
	sink := e.LineSink(ingest.SourceFile)
	err := f.Run(ctx, func(b []byte) {
		if err := sink.Line(b); err != nil {
			// The follower logs oversized lines with their offsets; this is
			// a line that is not a usable event. Both are counted.
			e.logger.Debug("audit log line skipped", "file", path, "err", err)
		}
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// newServer sets the timeouts a slow or hostile client must not outlast; a
// whole request may take a minute (an audit batch is up to 16 MiB).
func newServer(h http.Handler) *http.Server { return webserver.New(h, 60*time.Second) }
