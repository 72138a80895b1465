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

	"github.com/herd-k8s/herd/internal/webserver"
	"github.com/herd-k8s/herd/responder/action"
	"github.com/herd-k8s/herd/responder/dispatch"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/leader"
	"github.com/herd-k8s/herd/responder/measure"
	"github.com/herd-k8s/herd/responder/policy"
	"github.com/herd-k8s/herd/responder/webhook"
)

// Defaults of Options.
const (
	DefaultSweepInterval   = 15 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
)

// Options configure a Responder.
type Options struct {
	Config policy.Config
	Kube   *rest.Config
	// Web is the listener (exporter-toolkit flags: addresses, web config).
	Web web.FlagConfig
	// BearerTokenFile and InsecureNoAuth: see webhook.Options.
	BearerTokenFile string
	InsecureNoAuth  bool
	Leader          leader.Options
	// SweepInterval is how often expired and resolved APF objects are
	// removed (DefaultSweepInterval).
	SweepInterval time.Duration
	// ShutdownTimeout bounds waiting for in-flight actions
	// (DefaultShutdownTimeout).
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
	apf        *action.APFCache
	elector    *leader.Elector
	runner     *action.Runner
	dispatcher *dispatch.Dispatcher
	triage     *action.Triage
	measure    *measure.Controller
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
		opts.SweepInterval = DefaultSweepInterval
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
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
	r.apf = action.NewAPFCache(client)
	env := &action.Env{
		Client: client, Config: opts.Config, Budget: guard.NewBudget(opts.Config.Guards, nil),
		Nodes: r.nodes, APF: r.apf,
	}
	r.runner, err = action.NewRunner(action.RunnerOptions{
		Env: env, Evidence: q, Events: recorder, IsLeader: r.elector.IsLeader, Registerer: reg, Logger: opts.Logger,
		Self: &corev1.ObjectReference{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Namespace: lo.Namespace, Name: lo.Name},
	})
	if err != nil {
		return nil, err
	}
	if r.triage, err = action.NewTriage(env, r.runner, reg); err != nil {
		return nil, err
	}
	r.runner.Register(r.triage, &action.Cordon{Env: env}, action.NewIsolate(env), action.NewProtect(env), action.NewQuarantine(env), &action.FlagMetricsServer{Env: env})
	r.measure, err = measure.New(measure.Options{Client: client, APF: r.apf, Config: opts.Config.Measurement, IsLeader: r.elector.IsLeader,
		Registerer: reg, Logger: opts.Logger.With("component", "measurement")})
	if err != nil {
		return nil, err
	}
	r.dispatcher, err = dispatch.New(dispatch.Options{
		Config: opts.Config, Runner: r.runner, IsLeader: r.elector.IsLeader, Registerer: reg, Logger: opts.Logger,
	})
	if err != nil {
		return nil, err
	}
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
// /readyz, /debug/actions, /debug/triage, /debug/measurement.
func (r *Responder) Handler() http.Handler {
	mux := webserver.Mux("herd responder", "Acts on Alertmanager's alerts about the node-side clients of a Kubernetes control plane, guarded. POST /alerts is the webhook.",
		webserver.Link{Address: "/metrics", Text: "Metrics"},
		webserver.Link{Address: "/readyz", Text: "Ready (while leading)"},
		webserver.Link{Address: "/debug/actions", Text: "The last decisions and why (JSON)"},
		webserver.Link{Address: "/debug/triage", Text: "The last triage reports (JSON)"},
		webserver.Link{Address: "/debug/measurement", Text: "The APF measurement FlowSchemas: where each goes and why (JSON)"},
	)
	mux.Handle("/alerts", r.webhook)
	mux.Handle("/metrics", promhttp.HandlerFor(r.registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(r.logger.Handler(), slog.LevelError)}))
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case r.isDraining():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		case !r.elector.IsLeader():
			http.Error(w, "not the leader: another replica acts (see the Lease "+r.opts.Leader.Namespace+"/"+r.opts.Leader.Name+")", http.StatusServiceUnavailable)
		case !r.nodes.Synced():
			http.Error(w, "leading, but the Node cache has not synced", http.StatusServiceUnavailable)
		case !r.apf.Synced():
			http.Error(w, "leading, but the FlowSchema and priority level cache has not synced", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ok: leading")
		}
	})
	mux.HandleFunc("/debug/actions", func(w http.ResponseWriter, _ *http.Request) {
		webserver.WriteJSON(w, map[string]any{
			"identity": r.elector.Identity(), "leader": r.elector.IsLeader(), "dryRun": r.opts.Config.DryRun,
			"decisions": r.runner.Decisions(),
		})
	})
	mux.HandleFunc("/debug/triage", func(w http.ResponseWriter, _ *http.Request) {
		webserver.WriteJSON(w, map[string]any{"reports": r.triage.Reports()})
	})
	mux.HandleFunc("/debug/measurement", func(w http.ResponseWriter, _ *http.Request) {
		webserver.WriteJSON(w, r.measure.Status())
	})
	return mux
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
	r.apf.Start(bg)
	go r.warnMissingLevels(bg)

	electCtx, stopElection := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.elector.Run(electCtx) }()
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	var sweepWG sync.WaitGroup
	sweepWG.Add(1)
	go func() { defer sweepWG.Done(); r.dispatcher.SweepLoop(sweepCtx, r.opts.SweepInterval) }()
	// The measurement schemas are kept (or, disabled, removed) by the
	// leader. They outlive the process: a restart or a new leader changes
	// nothing in how requests are served, and stopping writes nothing.
	sweepWG.Add(1)
	go func() { defer sweepWG.Done(); r.measure.Run(sweepCtx) }()

	// A whole alert body (at most 4 MiB) within 30 s.
	srv := webserver.New(r.Handler(), 30*time.Second)
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
	// Decisions outlive the deliveries that started them (dispatch answers
	// Alertmanager in time and keeps deciding): wait for them too.
	if werr := r.dispatcher.Wait(sctx); werr != nil {
		r.logger.Warn("decisions under way did not finish before the shutdown timeout", "err", werr)
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

// warnMissingLevels says, once the APF cache has synced, which of herd's
// priority levels are not installed: the first decision that needs one
// creates it, one more request during the storm it acts on.
func (r *Responder) warnMissingLevels(ctx context.Context) {
	if !r.apf.WaitForSync(ctx) {
		return
	}
	for _, level := range []string{action.IsolateLevel, action.ProtectLevel, action.QuarantineLevel} {
		if pl, err := r.apf.PriorityLevel(level); err == nil && pl == nil {
			r.logger.Warn("herd's priority level is not installed: the first decision that needs it creates it, one more request during a storm; install it with the chart or kubectl apply -f manifests/apf/herd.yaml",
				"level", level)
		}
	}
}

// Registry is the responder's metrics registry.
func (r *Responder) Registry() *prometheus.Registry { return r.registry }
