// Package responder wires `herd responder` (SPEC §4): the Alertmanager
// webhook, the actions and their guards, leader election, the debug pages
// and the metrics, and runs them until shutdown.
//
// Shutdown order matters: the listener stops taking alerts, in-flight
// deliveries finish their actions, the sweeps stop, and only then is the
// leader Lease released, so that the next leader never acts while this one
// still writes.
package responder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"

	"github.com/herd-k8s/herd/responder/action"
	"github.com/herd-k8s/herd/responder/config"
	"github.com/herd-k8s/herd/responder/dispatch"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/leader"
	"github.com/herd-k8s/herd/responder/webhook"
)

// Options configure a Responder.
type Options struct {
	Config config.Config
	Kube   *rest.Config
	// Web is the listener (exporter-toolkit flags: addresses, web config).
	Web web.FlagConfig
	// BearerTokenFile and InsecureNoAuth: see webhook.Options.
	BearerTokenFile string
	InsecureNoAuth  bool
	Leader          leader.Options
	// SweepInterval is how often expired and resolved APF objects are
	// removed (default 15s).
	SweepInterval time.Duration
	// ShutdownTimeout bounds waiting for in-flight actions (default 30s).
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
}

// Responder is a configured responder.
type Responder struct {
	opts       Options
	logger     *slog.Logger
	registry   *prometheus.Registry
	client     kubernetes.Interface
	nodes      *action.NodeCache
	elector    *leader.Elector
	dispatcher *dispatch.Dispatcher
	triage     *action.Triage
	webhook    *webhook.Handler
	broadcast  events.EventBroadcaster
	draining   chan struct{}
	drainOnce  sync.Once
}

// New checks the options and builds the responder; nothing runs yet.
func New(opts Options) (*Responder, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = 15 * time.Second
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	auth, err := webhook.NewAuthenticator(opts.BearerTokenFile, deref(opts.Web.WebConfigFile))
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(opts.Kube)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector("herd"))
	r := &Responder{opts: opts, logger: opts.Logger, registry: reg, client: client, draining: make(chan struct{})}

	lo := opts.Leader
	lo.Logger, lo.Registerer = opts.Logger, reg
	if r.elector, err = leader.New(client, lo); err != nil {
		return nil, err
	}
	var q evidence.Querier
	if opts.Config.Prometheus.URL != "" {
		if q, err = evidence.NewPrometheus(opts.Config.Prometheus.URL, time.Duration(opts.Config.Prometheus.Timeout), nil); err != nil {
			return nil, err
		}
	} else {
		q = unconfigured{}
	}
	r.broadcast = events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	recorder := r.broadcast.NewRecorder(scheme.Scheme, "herd.dev/responder")
	r.nodes = action.NewNodeCache(client)
	env := &action.Env{
		Client: client, Config: opts.Config, Evidence: q, Budget: guard.NewBudget(opts.Config.Guards, nil),
		Events: recorder, Nodes: r.nodes, IsLeader: r.elector.IsLeader,
		Self: &corev1.ObjectReference{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Namespace: lo.Namespace, Name: lo.Name},
	}
	r.triage = &action.Triage{Env: env}
	actions := map[config.Action]action.Action{
		config.ActionTriage:            r.triage,
		config.ActionCordon:            &action.Cordon{Env: env},
		config.ActionIsolate:           action.NewIsolate(env),
		config.ActionQuarantine:        action.NewQuarantine(env),
		config.ActionFlagMetricsServer: &action.FlagMetricsServer{Env: env},
	}
	r.dispatcher, err = dispatch.New(dispatch.Options{
		Config: opts.Config, Actions: actions, IsLeader: r.elector.IsLeader, Registerer: reg, Logger: opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	r.triage.Remediate = r.dispatcher.Remediate
	r.triage.Findings = r.dispatcher.FindingsGauge()
	r.webhook, err = webhook.NewHandler(webhook.Options{
		Dispatcher: r.dispatcher, Auth: auth, RequireAuth: !opts.InsecureNoAuth, Known: opts.Config.Known, Alertnames: opts.Config.Alertnames(),
		Registerer: reg, Logger: opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// unconfigured answers every evidence query with an error: a config with
// no prometheus.url routes nothing but none and read-only triage is
// refused by validation, so this only shows up as failed triage.
type unconfigured struct{}

func (unconfigured) Query(context.Context, string) ([]evidence.Sample, error) {
	return nil, fmt.Errorf("%w: no prometheus.url configured", evidence.ErrUnavailable)
}

// Handler serves every endpoint: POST /alerts, /metrics, /healthz,
// /readyz, /debug/actions, /debug/triage.
func (r *Responder) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/alerts", r.webhook)
	mux.Handle("/metrics", promhttp.HandlerFor(r.registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(r.logger.Handler(), slog.LevelError)}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case r.isDraining():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		case !r.elector.IsLeader():
			http.Error(w, "not the leader: another replica acts (see the Lease "+r.opts.Leader.Namespace+"/"+r.opts.Leader.Name+")", http.StatusServiceUnavailable)
		case !r.nodes.Synced():
			http.Error(w, "leading, but the Node cache has not synced", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ok: leading")
		}
	})
	mux.HandleFunc("/debug/actions", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{
			"identity": r.elector.Identity(), "leader": r.elector.IsLeader(), "dryRun": r.opts.Config.DryRun,
			"decisions": r.dispatcher.Decisions(),
		})
	})
	mux.HandleFunc("/debug/triage", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"reports": r.triage.Reports()})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/" {
			http.NotFound(w, req)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<html><head><title>herd responder</title></head><body><h1>herd responder</h1><ul>
<li>POST /alerts: Alertmanager webhook</li><li><a href="/metrics">/metrics</a></li><li><a href="/readyz">/readyz</a> (ready while leading)</li>
<li><a href="/debug/actions">/debug/actions</a>: the last decisions and why</li><li><a href="/debug/triage">/debug/triage</a>: the last triage reports</li></ul></body></html>`)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (r *Responder) isDraining() bool {
	select {
	case <-r.draining:
		return true
	default:
		return false
	}
}

// Run serves until ctx ends or the listener fails, then shuts down in
// order (see the package comment).
func (r *Responder) Run(ctx context.Context) error {
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	r.broadcast.StartRecordingToSink(bg.Done())
	defer r.broadcast.Shutdown()
	r.nodes.Start(bg)

	electCtx, stopElection := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.elector.Run(electCtx) }()
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	var sweepWG sync.WaitGroup
	sweepWG.Add(1)
	go func() { defer sweepWG.Done(); r.dispatcher.SweepLoop(sweepCtx, r.opts.SweepInterval) }()

	srv := &http.Server{
		Handler:           r.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- web.ListenAndServe(srv, &r.opts.Web, r.logger) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	r.drainOnce.Do(func() { close(r.draining) })
	sctx, cancel := context.WithTimeout(context.Background(), r.opts.ShutdownTimeout)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		r.logger.Warn("in-flight alerts did not finish before the shutdown timeout", "err", serr)
	}
	stopSweep()
	sweepWG.Wait()
	stopElection() // releases the Lease, now that no action runs
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Registry is the responder's metrics registry.
func (r *Responder) Registry() *prometheus.Registry { return r.registry }
