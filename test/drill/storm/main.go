// Command storm is herd's storm drill (issue 8, incident 002, calibrated in
// SPEC §8.1): thousands of heavy pods in a real kube-apiserver 1.36, then
// ~100 cilium-agents LISTing every pod in a loop while kube-scheduler keeps
// reading in the same APF priority level.
//
// A relist storm comes in waves: every load-balancer reset or apiserver
// restart makes the agents reconnect and relist again. The drill runs two
// waves on a fresh stack, twice: herd acting (the real exporter's accounting
// fires HerdRelistStorm, the responder isolates the storming LISTs with API
// Priority and Fairness) and herd in dry-run. Wave 1 shows detection and
// the response, with the harm that comes before any response; wave 2, after
// a pause, shows the steady state with herd's isolation in place (it is
// kept for its hold-down after the alert resolves) against default APF.
// Then the kubelet variant: hundreds of kubelets relisting their own pods,
// which should stay cheap.
//
//	go run ./test/drill/storm        # make drill-storm
//	go run ./test/drill/storm -pods 300 -clients 20 -kubelets 30 -wave 30s -gap 10s   # a quick look
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/herd-k8s/herd/test/drill"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/hostinfo"
	"github.com/herd-k8s/herd/test/stack"
)

type options struct {
	pods, clients, kubelets int
	hollow                  int
	wave, gap, isolateWait  time.Duration
	kubeletStorm            time.Duration
	kubeletPause            time.Duration
	rssCap                  float64 // GiB
	maxLoad                 float64
	loadWait                time.Duration
	runs                    []string
	herd                    string
	recoveryLimit           time.Duration
	keep                    bool
	measurement             bool

	// -settings production (production.go).
	settings             string
	steadyMin, steadyMax time.Duration
	restartStagger       time.Duration
	unforecastQuiet      time.Duration
	unforecastWave       time.Duration
}

func main() { os.Exit(run()) }

func run() int {
	var o options
	flag.IntVar(&o.pods, "pods", 2000, "heavy pods (~10.8 KB each) in the apiserver")
	flag.IntVar(&o.clients, "clients", 100, "concurrent cilium-agents in the storm")
	flag.IntVar(&o.kubelets, "kubelets", 300, "kubelets in the kubelet variant (also the number of Nodes)")
	flag.IntVar(&o.hollow, "hollow", 20, "hollow nodes (the real kubelet and kube-proxy of v1.36.3, each node in its own network namespace; needs root) among the Nodes of the cilium-agent runs, the first cilium-agents on them; 0: Nodes without agents. The kubelet runs have none (their kubelets are simulated)")
	flag.DurationVar(&o.wave, "wave", time.Minute, "how long each of the two storm waves lasts")
	flag.DurationVar(&o.gap, "gap", 30*time.Second, "the pause between the waves (the protected run also waits, at most -isolate-wait, for herd's isolation to be applied)")
	flag.DurationVar(&o.isolateWait, "isolate-wait", time.Minute, "how long after wave 1 the protected run waits for herd's isolation before wave 2")
	flag.DurationVar(&o.kubeletStorm, "kubelet-storm", time.Minute, "how long the kubelet variant's storm lasts")
	flag.DurationVar(&o.kubeletPause, "kubelet-pause", 0, "pause between a kubelet's relists in the kubelet variant (0: a tight loop)")
	flag.Float64Var(&o.rssCap, "rss-cap", 6, "kill kube-apiserver when its RSS exceeds this many GiB")
	flag.Float64Var(&o.maxLoad, "max-load", 1.5, "wait before each run until the 1-minute load average is below this")
	flag.DurationVar(&o.loadWait, "load-wait", 5*time.Minute, "wait at most this long for the load to fall, then run anyway and say so")
	runs := flag.String("runs", "protected,unprotected,kubelet", "which runs, in order (protected first: the unprotected run copies its timing)")
	flag.StringVar(&o.herd, "herd", "", "herd binary (default: go build ./cmd/herd)")
	flag.DurationVar(&o.recoveryLimit, "recovery-limit", 500*time.Millisecond, "the scheduler has recovered once every GET for 5 s answers 200 within this")
	flag.BoolVar(&o.keep, "keep", false, "keep each run's directory (logs, configs)")
	flag.BoolVar(&o.measurement, "measurement", false, "run the responder's APF measurement FlowSchemas (docs/apf-measurement.md) in every run: compare the scheduler's p99 with a run without")
	flag.StringVar(&o.settings, "settings", "demo", "demo: the mixin at the demo's short windows and 1 s intervals; production: the shipped rules and intervals (scrape and evaluation 30 s, Alertmanager group_wait 30 s), a steady state with informers first, the guard (protect) before the storm, a rolling restart, an unforecast storm and a cheap kubelet storm (production.go)")
	flag.DurationVar(&o.steadyMin, "steady-min", 2*time.Minute, "production: the shortest steady state before the storm")
	flag.DurationVar(&o.steadyMax, "steady-max", 40*time.Minute, "production: the longest steady state: the storm starts then even if HerdStampedeRisk has not been acted on")
	flag.DurationVar(&o.restartStagger, "restart-stagger", 2*time.Second, "production: the rolling restart restarts one agent every this long (a DaemonSet rollout, one at a time)")
	flag.DurationVar(&o.unforecastQuiet, "unforecast-quiet", 3*time.Minute, "production: how long the unforecast run's cluster is quiet before its storm")
	flag.DurationVar(&o.unforecastWave, "unforecast-wave", 3*time.Minute, "production: how long the unforecast storm lasts")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	known := []string{"protected", "unprotected", "kubelet"}
	switch o.settings {
	case "demo":
	case "production":
		known = append(known, "unforecast")
		if !set["runs"] {
			*runs = "protected,unprotected,unforecast,kubelet"
		}
		if !set["kubelet-storm"] {
			o.kubeletStorm = 3 * time.Minute // long enough for HerdSynchronizedRelist at 30 s intervals
		}
	default:
		fmt.Fprintf(os.Stderr, "storm: -settings %q: want demo or production\n", o.settings)
		return 2
	}
	o.runs = strings.Split(*runs, ",")
	for _, r := range o.runs {
		if !slices.Contains(known, r) {
			fmt.Fprintf(os.Stderr, "storm: -runs: unknown run %q (want %s)\n", r, strings.Join(known, ", "))
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	drillFn := drillAll
	if o.settings == "production" {
		drillFn = drillProduction
	}
	if err := drillFn(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "storm: %v\n", err)
		return 1
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// herdBinary builds herd into a temporary directory unless -herd names a
// binary; done removes what it built.
func herdBinary(ctx context.Context, o *options) (done func(), err error) {
	if o.herd != "" {
		return func() {}, nil
	}
	dir, err := os.MkdirTemp("", "herd-drill-")
	if err != nil {
		return nil, err
	}
	logf("building herd")
	if o.herd, err = herdtest.BuildHerd(ctx, dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return func() { os.RemoveAll(dir) }, nil
}

func drillAll(ctx context.Context, o options) error {
	done, err := herdBinary(ctx, &o)
	if err != nil {
		return err
	}
	defer done()
	results := map[string]*result{}
	var ref reference
	for _, name := range o.runs {
		r, err := drillOne(ctx, o, name, ref)
		if err != nil {
			return fmt.Errorf("%s run: %w", name, err)
		}
		if name == "protected" {
			ref.gap = r.waves[1].start.Sub(r.waves[0].end)
			if !r.resp.Decided.IsZero() {
				ref.isolated = r.resp.Decided.Sub(r.start)
			}
		}
		results[name] = r
	}
	report(os.Stdout, o, results)
	return nil
}

// reference is what the unprotected run copies from the protected one, so
// that both are compared over the same stretches.
type reference struct {
	gap      time.Duration // wave 1 end → wave 2 start
	isolated time.Duration // storm start → isolation applied; 0 if none
}

// span is a stretch of time.
type span struct{ start, end time.Time }

func (s span) length() time.Duration { return s.end.Sub(s.start) }

// result is what one run measured.
type result struct {
	name       string
	load       string
	quiet      bool
	start, end time.Time // first wave's start, last wave's end
	waves      []span    // one for the kubelet variant
	// isolated is when herd's isolation was applied in the protected run,
	// or the same offset in the unprotected run; zero if never.
	isolated  time.Time
	listBytes int64
	mem       *stack.MemWatch
	storm     []drill.Outcome
	sched     []drill.Outcome
	resp      drill.Response
	recovered time.Time
	crashed   []string
	// nodes describes the run's Nodes (runNodes.describe).
	nodes string
}

func drillOne(ctx context.Context, o options, name string, ref reference) (*result, error) {
	r := &result{name: name}
	r.load, r.quiet = stack.WaitForQuiet(ctx, o.maxLoad, o.loadWait, func(s string) { logf("%s", s) })
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if !r.quiet {
		logf("%s run: load average %s is still above %.1f after %v; running anyway (the figures say so)", name, r.load, o.maxLoad, o.loadWait)
	}
	logf("%s run: load average %s; starting a fresh stack", name, r.load)
	nodes := max(o.clients, o.kubelets)
	hollow := o.hollow
	if name == "kubelet" {
		hollow = 0
	}
	rn, err := newRunNodes(nodes, hollow)
	if err != nil {
		return nil, err
	}
	defer rn.close() // last: the network outlives the stack
	opts := stack.Options{
		HerdBin: o.herd, DryRun: name != "protected", KeepDir: o.keep, Measurement: o.measurement,
		// Kept through the pause: wave 2 meets the isolation wave 1 caused.
		IsolateHoldDown: 10 * time.Minute,
		Log:             logWriter{},
	}
	rn.stackOptions(&opts)
	s, err := stack.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if o.keep {
		logf("%s run: files in %s", name, s.Dir)
	}
	if err := rn.start(ctx, s, name, o.pods); err != nil {
		return nil, err
	}
	defer rn.close() // the agents stop before the stack
	r.nodes = rn.describe()

	var storm []*drill.Client
	uri := func(int) string { return drill.StormURI }
	var pause time.Duration
	client := "cilium-agent"
	if name == "kubelet" {
		storm, err = drill.KubeletClients(s, o.kubelets, time.Minute)
		uri = func(i int) string { return drill.KubeletPodsURI(stack.NodeName(i + 1)) }
		pause, client = o.kubeletPause, "kubelet"
	} else {
		storm, err = rn.ciliums(s, o.clients)
	}
	if err != nil {
		return nil, err
	}
	defer drill.CloseAll(storm)
	sched, err := drill.SchedulerClient(s, 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer sched.Close()

	// Let the apiserver settle after the pod creation, then measure.
	logf("%s run: settling 15 s", name)
	if err := sleep(ctx, 15*time.Second); err != nil {
		return nil, err
	}
	r.mem = s.WatchAPIServer(250*time.Millisecond, int64(o.rssCap*(1<<30)))
	defer r.mem.Stop()
	var schedRec, stormRec drill.Recorder
	stopSched := drill.Scheduler(ctx, sched, &schedRec)
	defer stopSched()
	if err := sleep(ctx, 3*time.Second); err != nil { // the scheduler's quiet baseline
		return nil, err
	}

	watch := drill.WatchResponse(s, "HerdRelistStorm", map[string]string{"client": client, "resource": "pods"}, "isolate", "HerdSynchronizedRelist")
	defer watch.Stop()
	r.start = time.Now()
	wave := func(n int, length time.Duration) error {
		return runWave(ctx, r, n, client, storm, uri, pause, length, &stormRec, func() string { return alertState(watch.Snapshot(), "HerdRelistStorm") })
	}
	if name == "kubelet" {
		if err := wave(1, o.kubeletStorm); err != nil {
			return nil, err
		}
	} else {
		if err := wave(1, o.wave); err != nil {
			return nil, err
		}
		gap := o.gap
		if name == "protected" {
			// Wave 2 meets herd's isolation, if herd manages to apply it.
			deadline := time.Now().Add(o.isolateWait)
			for watch.Snapshot().Decided.IsZero() && time.Now().Before(deadline) {
				if err := sleep(ctx, 250*time.Millisecond); err != nil {
					return nil, err
				}
			}
			gap = max(o.gap, time.Since(r.waves[0].end))
		} else if ref.gap > 0 {
			gap = ref.gap
		}
		logf("%s run: pause until wave 2 (%.0f s after wave 1)", name, gap.Seconds())
		if err := sleep(ctx, time.Until(r.waves[0].end.Add(gap))); err != nil {
			return nil, err
		}
		if err := wave(2, o.wave); err != nil {
			return nil, err
		}
	}
	r.end = time.Now()
	// The scheduler and the memory readings continue a few seconds past
	// the storm: the tail shows whether the apiserver lets go.
	if err := sleep(ctx, 5*time.Second); err != nil {
		return nil, err
	}
	stopSched()
	r.mem.Stop()
	watch.Stop()
	r.resp = watch.Snapshot()
	r.storm, r.sched = stormRec.Outcomes(), schedRec.Outcomes()
	for _, out := range r.storm {
		if out.OK() {
			r.listBytes = out.Bytes
			break
		}
	}
	switch {
	case name == "protected" && !r.resp.Decided.IsZero():
		r.isolated = r.resp.Decided
		r.recovered = drill.Recovered(r.sched, r.isolated, 5*time.Second, o.recoveryLimit)
	case name == "unprotected" && ref.isolated > 0:
		r.isolated = r.start.Add(ref.isolated)
	}
	r.crashed = append(s.Crashed(), rn.crashed()...)
	logf("%s run: done", name)
	return r, nil
}

// runWave is one storm wave: clients relist uri(i) in a closed loop (with
// pause between relists) for length, recorded in rec, with a progress line
// every 5 s that ends with state().
func runWave(ctx context.Context, r *result, n int, client string, clients []*drill.Client, uri func(int) string, pause, length time.Duration, rec *drill.Recorder, state func() string) error {
	w := span{start: time.Now()}
	logf("%s run: wave %d: %d %s clients for %v (apiserver RSS %s)", r.name, n, len(clients), client, length, stack.MiB(r.mem.Last().RSS))
	wctx, stopWave := context.WithTimeout(ctx, length)
	stopProgress := herdtest.Background(wctx, func(ctx context.Context) { progress(ctx, r, rec, state) })
	drill.ClosedLoop(wctx, clients, uri, pause, rec)
	stopWave()
	stopProgress()
	w.end = time.Now()
	r.waves = append(r.waves, w)
	return ctx.Err()
}

// alertState says where an alert and the responder's decision about it
// stand.
func alertState(resp drill.Response, alert string) string {
	switch {
	case !resp.Decided.IsZero():
		return fmt.Sprintf("responder: %s %s", resp.Decision.Result, resp.Decision.Target)
	case len(resp.Failures) > 0:
		f := resp.Failures[len(resp.Failures)-1]
		return fmt.Sprintf("%s firing; responder attempt %d %s: %s %s", alert, len(resp.Failures), f.Result, f.Reason, f.Error)
	case !resp.Firing.IsZero():
		return alert + " firing"
	case !resp.Pending.IsZero():
		return alert + " pending"
	}
	return "no " + alert
}

// progress prints a line every 5 s during a wave, until ctx ends.
func progress(ctx context.Context, r *result, rec *drill.Recorder, state func() string) {
	herdtest.Every(ctx, 5*time.Second, func() {
		now := time.Now()
		recent := drill.Completed(rec.Outcomes(), now.Add(-5*time.Second), now)
		sc := drill.Summarize(rec.Outcomes(), time.Time{}, time.Time{})
		killed := ""
		if k := r.mem.KilledAt(); k > 0 {
			killed = fmt.Sprintf(" (apiserver killed at %s)", stack.MiB(k))
		}
		logf("%s run: +%3.0fs  apiserver RSS %s%s  LISTs served %d (%d in the last 5 s, other answers %d)  %s",
			r.name, now.Sub(r.start).Seconds(), stack.MiB(r.mem.Last().RSS), killed, sc.OK, recent, sc.Failed, state())
	})
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// logWriter prefixes the stack's progress lines with the time.
type logWriter struct{}

func (logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		logf("%s", strings.TrimSpace(line))
	}
	return len(p), nil
}

func machine() string {
	return fmt.Sprintf("%d vCPUs (%s), %s, %s", runtime.NumCPU(), hostinfo.CPUModel(), memTotal(), runtime.Version())
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb)
			return fmt.Sprintf("%.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return "unknown RAM"
}
