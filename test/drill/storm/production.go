package main

// The drill with production settings (issue 12, SPEC §7's first row): the
// mixin and the intervals exactly as shipped, and herd's APF objects
// installed as the chart installs them.
//
//	protected, unprotected: 100 cilium-agents hold informers (a LIST, then a
//	  watch each) on a cluster of heavy pods; herd forecasts what one
//	  synchronized relist of them would cost and HerdStampedeRisk fires; the
//	  protected run's responder applies its guard (protect), the unprotected
//	  run's decides the same in dry-run. Then a rolling restart of the agents
//	  (each restarts and relists once, one at a time) with and without the
//	  guard, then the storm's waves (every agent relists at once, again and
//	  again), as the demo drill's.
//	unforecast: protect is off (its alert routed to none) and the agents
//	  appear with the storm: only the fast path (an expensive
//	  HerdSynchronizedRelist → isolate) can act; the figure is the time from
//	  the wave's start to the isolation applied.
//	kubelet: kubelets LIST their own pods (spec.nodeName, cheap): reported,
//	  not acted on.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/responder/policy"
	"github.com/herd-k8s/herd/test/drill"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/stack"
)

// The production settings (SPEC §7): what the chart's ServiceMonitor and a
// stock Prometheus and Alertmanager do.
const (
	prodScrape        = 30 * time.Second
	prodGroupWait     = 30 * time.Second
	prodGroupInterval = time.Minute // docs/install.md's receiver
	prodRepeat        = time.Hour
	prodHeldRepeat    = time.Minute // docs/install.md's HerdSynchronizedRelist route
)

// The storm's client, as herd classifies it.
const (
	stormRole   = "cni"
	stormClient = "cilium-agent"
)

// prodResult is what one production run measured; result holds what the
// demo's runs measure too (waves, memory, the scheduler, the storm).
type prodResult struct {
	result
	steady  span // the informers started → the storm's preparation began
	restart span // the rolling restart
	// guard follows HerdStampedeRisk and protect's decision, fast the
	// HerdSynchronizedRelist of the storm's client and isolate's.
	guard, fast drill.Response
	forecast    forecast
	// restartLists are the agents' LISTs of the rolling restart.
	restartLists []drill.Outcome
	apf          *drill.APFWatch
	// level is the priority level the storm's LISTs ran in.
	level     string
	decisions []stack.Decision
	writes    []stack.AuditWrite
	dryRun    bool
	runNodes  *runNodes
}

// forecast is herd's forecast for the storm's client just before wave 1.
type forecast struct {
	peak, budget, growth, concurrency, safe, listBytes, listSeats, rss float64
	shape                                                              string
}

// prodRef is what the unprotected run copies from the protected one.
type prodRef struct{ steady time.Duration }

func drillProduction(ctx context.Context, o options) error {
	root, err := herdtest.RepoRoot()
	if err != nil {
		return err
	}
	if err := checkForecastRules(root); err != nil {
		return err
	}
	done, err := herdBinary(ctx, &o)
	if err != nil {
		return err
	}
	defer done()
	results := map[string]*prodResult{}
	var ref prodRef
	for _, name := range o.runs {
		var r *prodResult
		switch name {
		case "protected", "unprotected":
			r, err = stampedeRun(ctx, o, name, ref)
			if err == nil && name == "protected" {
				ref.steady = r.steady.length()
			}
		case "unforecast":
			r, err = unforecastRun(ctx, o)
		case "kubelet":
			r, err = kubeletRun(ctx, o)
		}
		if err != nil {
			return fmt.Errorf("%s run: %w", name, err)
		}
		results[name] = r
	}
	reportProduction(os.Stdout, o, root, results)
	return nil
}

// checkForecastRules fails unless the shipped mixin has issue 12's
// forecast (HerdStampedeRisk): without it nothing would forecast the
// stampede and the drill would measure nothing.
func checkForecastRules(root string) error {
	b, err := os.ReadFile(filepath.Join(root, "rules/prometheus_alerts.yaml"))
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "alert: \"HerdStampedeRisk\"") && !strings.Contains(string(b), "alert: HerdStampedeRisk") {
		return fmt.Errorf("rules/prometheus_alerts.yaml has no HerdStampedeRisk (issue 12's forecast): nothing would forecast the stampede")
	}
	return nil
}

// productionResponderConfig is the responder's --config as an operator
// would write it: the defaults (every route, limit and hold-down), acting
// unless dryRun; without protect, HerdStampedeRisk routed to none.
func productionResponderConfig(promURL string, dryRun, protect bool) string {
	cfg := fmt.Sprintf("dryRun: %v\nprometheus: {url: %q}\n", dryRun, promURL)
	if protect {
		return cfg
	}
	routes := policy.DefaultRoutes()
	for i, r := range routes {
		if r.Match["alertname"] == "HerdStampedeRisk" {
			routes[i].Action = policy.ActionNone
		}
	}
	b, err := yaml.Marshal(map[string]any{"routes": routes})
	if err != nil {
		panic(err) // routes always marshal
	}
	return cfg + string(b)
}

// productionStack is a fresh stack with the shipped settings, for rn's
// Nodes.
func productionStack(ctx context.Context, o options, rn *runNodes, dryRun, protect bool) (*stack.Stack, error) {
	audit, err := stack.ResponderWritesAuditPolicy()
	if err != nil {
		return nil, err
	}
	opts := stack.Options{
		HerdBin: o.herd, KeepDir: o.keep, Log: logWriter{},
		AuditPolicy: audit, AuditLog: true,
		InstallAPF:     true,
		ShippedRules:   true,
		ScrapeInterval: prodScrape, ScrapeAPIServer: true, APIServerScrapeInterval: prodScrape,
		AlertGroupBy: []string{"..."}, AlertGroupWait: prodGroupWait, AlertGroupInterval: prodGroupInterval, AlertRepeat: prodRepeat, HeldAlertRepeat: prodHeldRepeat,
		// The exporter's defaults, but for the trusted proxy that stands in
		// for the network: every simulated agent connects from this host
		// (loopback, or the hollow nodes' gateway) and names its node's
		// address in X-Forwarded-For (stack.HostProxies). Without it the 100
		// agents are one instance, and the forecast sees one LIST where a
		// hundred would come.
		Exporter:        stack.ExporterOptions{Config: fmt.Sprintf("accounting: {trustedProxies: [%s]}\n", stack.QuotedList(rn.trustedProxies())), GhostGrace: 5 * time.Minute},
		ResponderConfig: func(u string) string { return productionResponderConfig(u, dryRun, protect) },
		Measurement:     o.measurement,
	}
	rn.stackOptions(&opts)
	return stack.Start(ctx, opts)
}

// stampedeRun is the protected or unprotected run.
func stampedeRun(ctx context.Context, o options, name string, ref prodRef) (*prodResult, error) {
	r := &prodResult{result: result{name: name}, dryRun: name == "unprotected"}
	x, err := r.setup(ctx, o, o.clients, o.hollow, true, ciliums(o))
	if err != nil {
		return nil, err
	}
	defer x.close()
	s, storm := x.s, x.storm

	// The steady state: agents with informers, until herd has decided
	// about the forecast (acting or dry), as long as the protected run's.
	match := map[string]string{"client": stormClient, "resource": "pods"}
	guard := drill.WatchResponse(s, "HerdStampedeRisk", match, "protect")
	defer guard.Stop()
	fast := drill.WatchResponse(s, "HerdSynchronizedRelist", match, "isolate")
	defer fast.Stop()
	logf("%s run: %d agents start their informers (a LIST, then a watch)", name, len(storm))
	r.steady.start = time.Now()
	informers := drill.StartInformers(ctx, storm, drill.StormURI)
	defer informers.Stop()
	atLeast := max(o.steadyMin, ref.steady)
	for {
		el := time.Since(r.steady.start)
		decided := !guard.Snapshot().Decided.IsZero()
		if (el >= atLeast && decided) || el >= max(o.steadyMax, atLeast) {
			break
		}
		logf("%s run: steady +%3.0fs  apiserver RSS %s  %s  %s", name, el.Seconds(), stack.MiB(r.mem.Last().RSS), forecastLine(ctx, s), alertState(guard.Snapshot(), "HerdStampedeRisk"))
		if err := sleep(ctx, 30*time.Second); err != nil {
			return nil, err
		}
	}
	r.steady.end = time.Now()
	r.forecast = readForecast(ctx, s)
	r.level = "workload-high"
	if g := guard.Snapshot(); !g.Decided.IsZero() && g.Decision.Result == "applied" {
		r.level = "herd-protect"
	}
	logf("%s run: steady state done after %.0f s: %s; the storm's LISTs run in %s", name, r.steady.length().Seconds(), alertState(guard.Snapshot(), "HerdStampedeRisk"), r.level)

	// The rolling restart: one agent at a time, nothing storming.
	logf("%s run: rolling restart of %d agents, one every %v", name, len(storm), o.restartStagger)
	r.restart.start = time.Now()
	for i := range storm {
		informers.Restart(i)
		if err := sleep(ctx, o.restartStagger); err != nil {
			return nil, err
		}
	}
	if err := herdtest.Poll(ctx, 2*time.Minute, "the rolling restart's LISTs", func(context.Context) error {
		if n := len(listsSince(informers.Lists.Outcomes(), r.restart.start)); n < len(storm) {
			return fmt.Errorf("%d of %d agents relisted", n, len(storm))
		}
		return nil
	}); err != nil {
		logf("%s run: %v; going on", name, err)
	}
	r.restart.end = time.Now()
	r.restartLists = listsSince(informers.Lists.Outcomes(), r.restart.start)
	if err := sleep(ctx, 30*time.Second); err != nil { // let the apiserver settle
		return nil, err
	}

	// The storm: the agents' watches break and every one relists, again
	// and again.
	informers.Pause()
	r.start = time.Now()
	state := func() string {
		return alertState(guard.Snapshot(), "HerdStampedeRisk") + "; " + alertState(fast.Snapshot(), "HerdSynchronizedRelist")
	}
	uri := func(int) string { return drill.StormURI }
	if err := runWave(ctx, &r.result, 1, stormClient, storm, uri, 0, o.wave, &x.stormRec, state); err != nil {
		return nil, err
	}
	logf("%s run: pause %v until wave 2", name, o.gap)
	if err := sleep(ctx, o.gap); err != nil {
		return nil, err
	}
	if err := runWave(ctx, &r.result, 2, stormClient, storm, uri, 0, o.wave, &x.stormRec, state); err != nil {
		return nil, err
	}
	r.end = time.Now()
	if rv, err := drill.CurrentRV(ctx, s.Admin); err == nil {
		informers.Resume(rv)
	}
	if err := r.finish(ctx, s, 5*time.Second, x.stopSched, &x.schedRec, &x.stormRec); err != nil {
		return nil, err
	}
	r.guard, r.fast = guard.Snapshot(), fast.Snapshot()
	logf("%s run: done", name)
	return r, nil
}

// unforecastRun: protect off, a quiet cluster, then the storm: how soon
// the fast path isolates it.
func unforecastRun(ctx context.Context, o options) (*prodResult, error) {
	r := &prodResult{result: result{name: "unforecast"}}
	x, err := r.setup(ctx, o, o.clients, o.hollow, false, ciliums(o))
	if err != nil {
		return nil, err
	}
	defer x.close()
	s, storm := x.s, x.storm
	logf("unforecast run: quiet for %v (Prometheus learns the apiserver; no agent yet)", o.unforecastQuiet)
	if err := sleep(ctx, o.unforecastQuiet); err != nil {
		return nil, err
	}
	fast := drill.WatchResponse(s, "HerdSynchronizedRelist", map[string]string{"client": stormClient, "resource": "pods"}, "isolate")
	defer fast.Stop()
	r.start = time.Now()
	state := func() string { return alertState(fast.Snapshot(), "HerdSynchronizedRelist") }
	if err := runWave(ctx, &r.result, 1, stormClient, storm, func(int) string { return drill.StormURI }, 0, o.unforecastWave, &x.stormRec, state); err != nil {
		return nil, err
	}
	r.end = time.Now()
	if err := r.finish(ctx, s, 5*time.Second, x.stopSched, &x.schedRec, &x.stormRec); err != nil {
		return nil, err
	}
	r.fast = fast.Snapshot()
	r.level = "workload-high"
	logf("unforecast run: done")
	return r, nil
}

// kubeletRun: kubelets LIST their own pods, cheap: reported, not acted on
// by an acting responder.
func kubeletRun(ctx context.Context, o options) (*prodResult, error) {
	r := &prodResult{result: result{name: "kubelet"}}
	x, err := r.setup(ctx, o, o.kubelets, 0, true, func(s *stack.Stack, _ *runNodes) ([]*drill.Client, error) {
		return drill.KubeletClients(s, o.kubelets, time.Minute)
	})
	if err != nil {
		return nil, err
	}
	defer x.close()
	s, storm := x.s, x.storm
	if err := sleep(ctx, time.Minute); err != nil {
		return nil, err
	}
	match := map[string]string{"client": "kubelet", "resource": "pods"}
	fast := drill.WatchResponse(s, "HerdSynchronizedRelist", match, "isolate")
	defer fast.Stop()
	guard := drill.WatchResponse(s, "HerdStampedeRisk", map[string]string{"client": "kubelet"}, "protect")
	defer guard.Stop()
	r.start = time.Now()
	state := func() string {
		return alertState(fast.Snapshot(), "HerdSynchronizedRelist") + "; " + alertState(guard.Snapshot(), "HerdStampedeRisk")
	}
	uri := func(i int) string { return drill.KubeletPodsURI(stack.NodeName(i + 1)) }
	if err := runWave(ctx, &r.result, 1, "kubelet", storm, uri, o.kubeletPause, o.kubeletStorm, &x.stormRec, state); err != nil {
		return nil, err
	}
	r.end = time.Now()
	// The responder's decisions come a group_wait after the alert fires.
	if err := r.finish(ctx, s, prodGroupWait+10*time.Second, x.stopSched, &x.schedRec, &x.stormRec); err != nil {
		return nil, err
	}
	r.fast, r.guard = fast.Snapshot(), guard.Snapshot()
	logf("kubelet run: done")
	return r, nil
}

// begin waits for a quiet machine and starts a fresh stack with the
// production settings for rn's Nodes, the responder dry when r.dryRun, with
// protect or without.
func (r *prodResult) begin(ctx context.Context, o options, rn *runNodes, protect bool) (*stack.Stack, error) {
	r.load, r.quiet = stack.WaitForQuiet(ctx, o.maxLoad, o.loadWait, func(s string) { logf("%s", s) })
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if !r.quiet {
		logf("%s run: load average %s is still above %.1f after %v; running anyway (the figures say so)", r.name, r.load, o.maxLoad, o.loadWait)
	}
	logf("%s run: load average %s; starting a fresh stack with production settings", r.name, r.load)
	s, err := productionStack(ctx, o, rn, r.dryRun, protect)
	if err == nil && o.keep {
		logf("%s run: files in %s", r.name, s.Dir)
	}
	return s, err
}

// prodRun is a run's stack, its Nodes, its clients and their recorders.
type prodRun struct {
	s                  *stack.Stack
	nodes              *runNodes
	storm              []*drill.Client
	sched              *drill.Client
	schedRec, stormRec drill.Recorder
	stopSched          func()
}

// ciliums are the storm's agents, one on each of the first Nodes.
func ciliums(o options) func(*stack.Stack, *runNodes) ([]*drill.Client, error) {
	return func(s *stack.Stack, rn *runNodes) ([]*drill.Client, error) { return rn.ciliums(s, o.clients) }
}

// setup starts a run: nodes Nodes, the first hollow of them hollow nodes
// (runNodes), a fresh stack (begin), the heavy pods on the Nodes, the
// storm's clients and kube-scheduler's; after the apiserver settled, the
// memory and APF samplers and the scheduler's reads.
func (r *prodResult) setup(ctx context.Context, o options, nodes, hollow int, protect bool, clients func(*stack.Stack, *runNodes) ([]*drill.Client, error)) (x *prodRun, err error) {
	x = &prodRun{stopSched: func() {}}
	if x.nodes, err = newRunNodes(nodes, hollow); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			x.close()
		}
	}()
	if x.s, err = r.begin(ctx, o, x.nodes, protect); err != nil {
		return nil, err
	}
	if err := x.nodes.start(ctx, x.s, r.name, o.pods); err != nil {
		return nil, err
	}
	r.nodes, r.runNodes = x.nodes.describe(), x.nodes
	if x.storm, err = clients(x.s, x.nodes); err != nil {
		return nil, err
	}
	if x.sched, err = drill.SchedulerClient(x.s, 30*time.Second); err != nil {
		return nil, err
	}
	if err := sleep(ctx, 15*time.Second); err != nil {
		return nil, err
	}
	r.mem = x.s.WatchAPIServer(250*time.Millisecond, int64(o.rssCap*(1<<30)))
	r.apf = drill.WatchAPF(x.s.Admin, 500*time.Millisecond)
	x.stopSched = drill.Scheduler(ctx, x.sched, &x.schedRec)
	return x, nil
}

// close stops the scheduler and the clients, then the hollow nodes and
// their network, then the stack.
func (x *prodRun) close() {
	x.stopSched()
	drill.CloseAll(x.storm)
	if x.sched != nil {
		x.sched.Close()
	}
	if x.nodes != nil {
		x.nodes.close()
	}
	if x.s != nil {
		x.s.Close()
	}
}

// finish keeps measuring for tail after the storm (whether the apiserver
// lets go; the responder's last decisions), stops the scheduler and the
// samplers, and reads what herd did.
func (r *prodResult) finish(ctx context.Context, s *stack.Stack, tail time.Duration, stopSched func(), sched, storm *drill.Recorder) error {
	if err := sleep(ctx, tail); err != nil {
		return err
	}
	stopSched()
	r.mem.Stop()
	r.apf.Stop()
	r.storm, r.sched = storm.Outcomes(), sched.Outcomes()
	for _, out := range r.storm {
		if out.OK() {
			r.listBytes = out.Bytes
			break
		}
	}
	r.decisions, _ = s.Responder.Decisions(ctx)
	var err error
	if r.writes, err = stack.WritesBy(s.AuditLogPath, stack.ResponderUser); err != nil {
		logf("%s run: %v", r.name, err)
	}
	r.crashed = append(s.Crashed(), r.runNodes.crashed()...)
	return nil
}

// listsSince are the outcomes that started at or after t.
func listsSince(outs []drill.Outcome, t time.Time) []drill.Outcome {
	var in []drill.Outcome
	for _, o := range outs {
		if !o.Start.Before(t) {
			in = append(in, o)
		}
	}
	return in
}

// readForecast reads herd's forecast for the storm's client (the shape
// with the highest peak).
func readForecast(ctx context.Context, s *stack.Stack) forecast {
	var f forecast
	sel := fmt.Sprintf(`{role=%q, client=%q, resource="pods"}`, stormRole, stormClient)
	if vec, err := s.Query(ctx, "topk(1, herd:stampede_peak_bytes"+sel+")"); err == nil && len(vec) > 0 {
		f.peak, f.shape = float64(vec[0].Value), string(vec[0].Metric["shape"])
	}
	one := func(expr string) float64 {
		v, _ := s.QueryValue(ctx, expr)
		return v
	}
	shapeSel := fmt.Sprintf(`{role=%q, client=%q, resource="pods", shape=%q}`, stormRole, stormClient, f.shape)
	f.growth = one("max(herd:stampede_growth_bytes" + shapeSel + ")")
	f.concurrency = one("max(herd:stampede_concurrency" + shapeSel + ")")
	f.safe = one("min(herd:stampede_safe_concurrency" + shapeSel + ")")
	f.listBytes = one("max(herd:stampede_list_bytes" + shapeSel + ")")
	f.listSeats = one("max(herd:stampede_list_seats" + shapeSel + ")")
	f.budget = one("min(herd:stampede_budget_bytes)")
	f.rss = one(`max(process_resident_memory_bytes{job="apiserver"})`)
	return f
}

// forecastLine is a progress line's view of the forecast.
func forecastLine(ctx context.Context, s *stack.Stack) string {
	f := readForecast(ctx, s)
	if f.peak == 0 {
		return "no forecast yet"
	}
	return fmt.Sprintf("forecast: peak %s, budget %s (shape %s, %g at once, safe %g)", stack.MiB(int64(f.peak)), stack.MiB(int64(f.budget)), f.shape, f.concurrency, f.safe)
}
