// Command demo is `make demo`: herd end to end on a real local control
// plane. It starts etcd and kube-apiserver 1.36 (audit webhook → herd
// exporter), Prometheus with herd's mixin, Alertmanager routing to herd
// responder (acting: dryRun false, every guard on) and real kubelets and
// kube-proxies — kubemark's hollow nodes (test/hollow), each node in its own
// network namespace at its own address — then runs a relist storm (incident
// 002 at a smaller scale than `make drill-storm`) by simulated cilium-agents,
// one per node, and narrates what an operator would see:
// the relist rate climbing, HerdRelistStorm firing, the responder's
// decision and its evidence, the apiserver's memory and the scheduler's
// latency settling, and the storm's end undoing the isolation. It ends with
// a summary and leaves the stack up until Ctrl-C, or exits with DEMO_EXIT=1.
// It needs root (network namespaces) and the hollow node binary (`make
// controlplane`); on success, failure or Ctrl-C it stops every process and
// removes every namespace it made.
//
//	go run ./test/demo [-herd bin/herd]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/drill"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/stack"
)

type options struct {
	herd          string
	pods, clients int
	agents        int
	afterIsolate  time.Duration
	wave2         time.Duration
	exit          bool
}

// wave1Max bounds the first wave when herd cannot isolate it (the
// apiserver too slow for the responder's writes).
const wave1Max = 90 * time.Second

func main() { os.Exit(run()) }

func run() int {
	var o options
	flag.StringVar(&o.herd, "herd", "", "herd binary (default: go build ./cmd/herd)")
	flag.IntVar(&o.pods, "pods", 1000, "heavy pods (~10.8 KB each)")
	flag.IntVar(&o.clients, "clients", 50, "cilium-agents in the storm, one on each of the first nodes")
	flag.IntVar(&o.agents, "nodes", 50, "hollow nodes: a real kubelet and kube-proxy each (kubemark, v1.36.3), in a network namespace of its own")
	flag.DurationVar(&o.afterIsolate, "after-isolation", 30*time.Second, "how long the first wave goes on after herd isolates it")
	flag.DurationVar(&o.wave2, "wave2", 20*time.Second, "how long the second wave lasts")
	flag.Parse()
	if o.clients > o.agents || o.clients <= 0 {
		fmt.Fprintf(os.Stderr, "demo: -clients %d: want 1 to -nodes (%d): a cilium-agent runs on a node\n", o.clients, o.agents)
		return 2
	}
	o.exit = os.Getenv("DEMO_EXIT") == "1"
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{o: o, t0: time.Now()}
	err := d.run(ctx)
	d.say("demo took %v", time.Since(d.t0).Round(time.Second))
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Println("\ninterrupted: everything the demo started is stopped.")
		return 130
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo: %v\n", err)
		return 1
	}
	return 0
}

type demo struct {
	o     options
	t0    time.Time
	s     *stack.Stack
	fleet *drill.Fleet
	// fleetClosed: the fleet is closed (closeFleet runs from two defers).
	fleetClosed bool
}

// say prints one narrated line with the time since the demo started.
func (d *demo) say(format string, args ...any) {
	el := time.Since(d.t0).Round(time.Second)
	fmt.Printf("[%02d:%02d] %s\n", int(el.Minutes()), int(el.Seconds())%60, fmt.Sprintf(format, args...))
}

// detail prints an indented continuation line.
func detail(format string, args ...any) { fmt.Printf("        "+format+"\n", args...) }

type stdoutLog struct{}

func (stdoutLog) Write(p []byte) (int, error) { return os.Stdout.Write(p) }

// indentLog indents the hollow nodes' progress lines like the stack's.
type indentLog struct{}

func (indentLog) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		fmt.Printf("  %s\n", line)
	}
	return len(p), nil
}

func (d *demo) run(ctx context.Context) error {
	o := d.o
	fmt.Printf("herd demo: a relist storm (incident 002) on a real kube-apiserver, and herd calming it\n\n")
	defer herdtest.RemoveHerdBinary() // built when -herd is not given
	// The nodes' network first: the control plane listens on its gateway.
	// This defer matters when the nodes never started; once they run, the
	// one below stops them and removes their network before the stack
	// stops (closeFleet runs once).
	fleet, err := drill.NewFleet(o.agents)
	if err != nil {
		return err
	}
	d.fleet = fleet
	defer d.closeFleet()
	d.say("starting etcd, kube-apiserver, herd exporter, herd responder, Prometheus and Alertmanager")
	s, err := stack.Start(ctx, stack.Options{AgentNodes: fleet.Names(), ControlPlane: fleet.ControlPlane,
		HerdBin: o.herd, DryRun: false, IsolateHoldDown: 15 * time.Second, Log: stdoutLog{}})
	if err != nil {
		return err
	}
	d.s = s
	defer func() {
		began := time.Now()
		s.Close()
		d.say("stopped the stack in %.1f s", time.Since(began).Seconds())
	}()
	d.say("the stack is up:")
	d.urls()

	// Bound to the nodes and finished before their kubelets start: a real
	// kubelet admits no finished pod, it only adds its own status fields
	// once (drill.FinishHeavyPods).
	d.say("creating %d heavy pods (~10.8 KB each: finished batch-job pods nobody deleted), %d on each node", o.pods, o.pods/o.agents)
	if err := drill.CreateHeavyPods(ctx, s.Admin, o.pods, fleet.Names(), drill.FinishedHeavyPodFiller, 8); err != nil {
		return err
	}
	if err := drill.FinishHeavyPods(ctx, s.Admin, o.pods, 8); err != nil {
		return err
	}
	d.say("starting %d hollow nodes: the real kubelet and kube-proxy of %s (kubemark's hollow node: a fake container runtime and proxier), each node in a network namespace of its own", o.agents, controlplane.Version)
	nodesUp := time.Now()
	if err := fleet.Start(ctx, s, filepath.Join(s.Dir, "nodes"), indentLog{}); err != nil {
		return err
	}
	defer d.closeFleet() // the agents stop before the stack
	d.say("%d nodes Ready in %.0f s, %s to %s; each kubelet and kube-proxy relisted by WatchList, then watches, renews its Lease every 10 s", o.agents, time.Since(nodesUp).Seconds(), fleet.Addrs()[0], fleet.Addrs()[len(fleet.Addrs())-1])

	sched, err := drill.SchedulerClient(s, 30*time.Second)
	if err != nil {
		return err
	}
	defer sched.Close()
	storm, err := drill.CiliumClientsAt(s, fleet.Addrs()[:o.clients], time.Minute)
	if err != nil {
		return err
	}
	defer drill.CloseAll(storm)
	mem := s.WatchAPIServer(250*time.Millisecond, 6<<30)
	defer mem.Stop()
	leases := watchLeases(ctx, s.Admin, 2*time.Second)
	defer leases.stop()
	var schedRec, stormRec drill.Recorder
	stopSched := drill.Scheduler(ctx, sched, &schedRec)
	defer stopSched()

	d.say("kube-scheduler reads a pod every 100 ms (APF level workload-high); watching for 10 s before the storm")
	if err := sleep(ctx, 10*time.Second); err != nil {
		return err
	}
	phases := []phase{{name: "before the storm", from: time.Now().Add(-10 * time.Second)}}
	d.status(ctx, "baseline", mem, &schedRec, &stormRec)

	// Wave 1: until herd has isolated it and afterIsolate has passed, at
	// most wave1Max; the agents then back off. Wave 2: the next reconnect,
	// which meets herd's isolation from its first request.
	watch := drill.WatchResponse(s, "HerdRelistStorm", map[string]string{"client": "cilium-agent", "resource": "pods"}, "isolate", "HerdSynchronizedRelist")
	defer watch.Stop()
	start := time.Now()
	phases[0].to = start
	var seen drill.Response
	var isolatedAt time.Time
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	// follow narrates until done reports true or ctx ends.
	follow := func(done func() bool) error {
		for !done() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
				d.status(ctx, fmt.Sprintf("+%2.0fs", time.Since(start).Seconds()), mem, &schedRec, &stormRec)
				continue
			case <-poll.C:
			}
			r := watch.Snapshot()
			d.narrate(ctx, &seen, r, start)
			if isolatedAt.IsZero() && !r.Decided.IsZero() {
				isolatedAt = r.Decided
			}
		}
		return nil
	}
	wave := func(done func() bool) (phase, error) {
		p := phase{from: time.Now()}
		stopWave := herdtest.Background(ctx, func(ctx context.Context) {
			drill.ClosedLoop(ctx, storm, func(int) string { return drill.StormURI }, 0, &stormRec)
		})
		err := follow(done)
		stopWave()
		p.to = time.Now()
		return p, err
	}

	d.say("STORM, wave 1: %d cilium-agents (service account kube-system/cilium, APF level workload-high, like kube-scheduler) LIST every pod in a loop: unfiltered, consistent, %d pods each time", o.clients, o.pods)
	w1, err := wave(func() bool {
		return (!isolatedAt.IsZero() && time.Since(isolatedAt) >= o.afterIsolate) || time.Since(start) >= wave1Max
	})
	if err != nil {
		return err
	}
	if isolatedAt.IsZero() || !isolatedAt.Before(w1.to) {
		phases = append(phases, phase{name: "wave 1, no isolation yet", from: w1.from, to: w1.to})
		d.say("wave 1 ends: the agents back off. herd has not isolated it yet (the apiserver is too slow for its writes); waiting for the responder")
		deadline := time.Now().Add(time.Minute)
		if err := follow(func() bool { return !isolatedAt.IsZero() || time.Now().After(deadline) }); err != nil {
			return err
		}
		if isolatedAt.IsZero() {
			return fmt.Errorf("herd did not isolate the storm within a minute of its end; logs are in %s while the stack runs", s.Dir)
		}
	} else {
		phases = append(phases, phase{name: "wave 1 before isolation", from: w1.from, to: isolatedAt},
			phase{name: "wave 1 after isolation", from: isolatedAt, to: w1.to})
		d.say("wave 1 ends: the agents back off")
	}
	pause := time.Now().Add(10 * time.Second)
	if err := follow(func() bool { return time.Now().After(pause) }); err != nil {
		return err
	}
	d.say("STORM, wave 2: the agents reconnect and relist again, as they do after every load-balancer reset; herd's FlowSchema is still in place")
	until := time.Now().Add(o.wave2)
	w2, err := wave(func() bool { return time.Now().After(until) })
	if err != nil {
		return err
	}
	w2.name = "wave 2, isolation in place"
	phases = append(phases, w2)
	end := w2.to
	d.say("the storm ends; herd undoes the isolation once the alert resolves and the hold-down (15 s here) passes")
	phases = append(phases, phase{name: "after the storm", from: end})

	var removed time.Time
	deadline := end.Add(3 * time.Minute)
	if err := follow(func() bool {
		if time.Now().After(deadline) || watch.Snapshot().Resolved.IsZero() {
			return time.Now().After(deadline)
		}
		l, err := s.Admin.FlowcontrolV1().FlowSchemas().List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=herd"})
		if err != nil || len(l.Items) > 0 {
			return false
		}
		removed = time.Now()
		d.say("+%.0fs  the responder's sweep removed herd's FlowSchema: the cluster is as it was", removed.Sub(start).Seconds())
		return true
	}); err != nil {
		return err
	}
	if removed.IsZero() {
		return errors.New("herd's isolation was not undone within 3 minutes of the storm's end")
	}
	phases[len(phases)-1].to = time.Now()
	stopSched()
	mem.Stop()
	leases.stop()
	watch.Stop()

	if err := fleet.Crashed(); err != nil {
		return err
	}
	d.summary(watch.Snapshot(), start, removed, phases, mem, leases, schedRec.Outcomes(), stormRec.Outcomes())
	if o.exit {
		d.say("DEMO_EXIT=1: stopping everything")
		return nil
	}
	fmt.Println()
	d.say("the stack stays up for you to look around; Ctrl-C stops everything:")
	d.urls()
	<-ctx.Done()
	fmt.Println()
	d.say("stopping everything")
	return nil
}

// closeFleet stops the hollow nodes and removes their namespaces; a
// failure to is said (CI fails on leftovers).
func (d *demo) closeFleet() {
	if d.fleetClosed {
		return
	}
	d.fleetClosed = true
	began := time.Now()
	if err := d.fleet.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "demo: removing the hollow nodes' network: %v\n", err)
	}
	d.say("stopped the hollow nodes and removed their network namespaces in %.1f s", time.Since(began).Seconds())
}

func (d *demo) urls() {
	s := d.s
	// Debian's Prometheus ships the classic UI only.
	detail("Prometheus      %s/classic/alerts   %s/classic/graph?g0.expr=herd%%3Arelists_by_resource%%3Arate20s&g0.tab=0", s.PrometheusURL, s.PrometheusURL)
	detail("Alertmanager    %s", s.AlertmanagerURL)
	detail("herd exporter   %s/metrics   %s/debug/clients?limit=20", s.ExporterURL, s.ExporterURL)
	detail("herd responder  %s/debug/actions   %s/debug/triage", s.ResponderURL, s.ResponderURL)
	if kc, err := s.CP.Kubeconfig("admin"); err == nil {
		detail("kubectl         KUBECONFIG=%s kubectl get flowschemas,prioritylevelconfigurations", kc)
	}
}

// status prints one line of what an operator's dashboards show now.
func (d *demo) status(ctx context.Context, label string, mem *stack.MemWatch, sched, storm *drill.Recorder) {
	now := time.Now()
	rate, _ := d.s.QueryValue(ctx, `sum(herd:relists_by_resource:rate20s{client="cilium-agent",resource="pods"})`)
	inst, _ := d.s.QueryValue(ctx, `sum(herd:relisting_instances:sum{client="cilium-agent",resource="pods"})`)
	sc := drill.Summarize(sched.Outcomes(), now.Add(-3*time.Second), now)
	served := drill.Completed(storm.Outcomes(), now.Add(-3*time.Second), now)
	fmt.Printf("        %-8s herd: cilium-agent pod relists %5.1f/s, %3.0f instances relisting | apiserver RSS %s | scheduler GET p99 %s | storm LISTs served %4.1f/s\n",
		label, rate, inst, stack.MiB(mem.Last().RSS), secs(sc.P99), float64(served)/3)
}

// narrate prints each step of the response once.
func (d *demo) narrate(ctx context.Context, seen *drill.Response, r drill.Response, start time.Time) {
	at := func(t time.Time) string { return fmt.Sprintf("+%.0fs", t.Sub(start).Seconds()) }
	if seen.Pending.IsZero() && !r.Pending.IsZero() {
		d.say("%s  ALERT HerdRelistStorm pending in Prometheus (rate ≥ 0.5/s and ≥ 10 instances or ≥ 10/s; it fires after `for` %v)", at(r.Pending), d.s.Mixin["relistStormFor"])
	}
	if seen.Firing.IsZero() && !r.Firing.IsZero() {
		d.say("%s  ALERT HerdRelistStorm FIRING → Alertmanager → herd responder", at(r.Firing))
		if a, err := d.s.Alert(ctx, "HerdRelistStorm", map[string]string{"client": "cilium-agent"}); err == nil && a != nil {
			detail("summary: %s", a.Annotations["summary"])
			detail("description: %s", wrap(string(a.Annotations["description"]), 110, "        "))
		}
	}
	for _, f := range r.Failures[min(len(seen.Failures), len(r.Failures)):] {
		msg := f.Error
		if msg == "" {
			msg = f.Reason
		}
		took := time.Duration(f.DurationMS * float64(time.Millisecond))
		d.say("%s  RESPONDER isolate attempt %s after %.1f s; Alertmanager delivers again: %s", at(f.Time.Add(took)), f.Result, took.Seconds(), msg)
	}
	if seen.Decided.IsZero() && !r.Decided.IsZero() {
		dec := r.Decision
		d.say("%s  RESPONDER isolate %s on %s in %.0f ms: %s", at(r.Decided), dec.Result, dec.Alert, dec.DurationMS, dec.Reason)
		for _, e := range dec.Evidence {
			value := ""
			if e.Value != 0 {
				value = fmt.Sprintf(" = %.4g", e.Value)
			}
			detail("evidence re-verified before acting: %s%s (%d series, confirmed: %v)", e.Query, value, e.Series, e.Confirmed)
		}
		if fs, err := d.s.Admin.FlowcontrolV1().FlowSchemas().Get(ctx, strings.TrimPrefix(dec.Target, "flowschema/"), metav1.GetOptions{}); err == nil {
			r0 := fs.Spec.Rules[0]
			detail("in the apiserver: FlowSchema %s, precedence %d → level %s; verbs %v on %v, subjects %d",
				fs.Name, fs.Spec.MatchingPrecedence, fs.Spec.PriorityLevelConfiguration.Name, r0.ResourceRules[0].Verbs, r0.ResourceRules[0].Resources, len(r0.Subjects))
		}
	}
	if seen.Resolved.IsZero() && !r.Resolved.IsZero() {
		d.say("%s  ALERT HerdRelistStorm resolved; RESPONDER %s: %s", at(r.Resolved), r.ResolveDecision.Result, r.ResolveDecision.Reason)
	}
	*seen = r
}

// phase is a stretch of the demo the summary reports on.
type phase struct {
	name     string
	from, to time.Time
}

func (d *demo) summary(r drill.Response, start, removed time.Time, phases []phase, mem *stack.MemWatch, leases *leaseWatch, sched, storm []drill.Outcome) {
	at := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("+%.1f s", t.Sub(start).Seconds())
	}
	fmt.Printf("\nSummary (times from the storm's start)\n\n")
	fmt.Printf("| | |\n|---|---|\n")
	fmt.Printf("| nodes | %d hollow nodes: the real kubelet and kube-proxy of v1.36.3, each node in a network namespace of its own |\n", d.o.agents)
	listSize := "?"
	for _, o := range storm {
		if o.OK() {
			listSize = fmt.Sprintf("%.1f MB", float64(o.Bytes)/1e6)
			break
		}
	}
	fmt.Printf("| storm | %d simulated cilium-agents, one per node, LISTing %d pods of ~10.8 KB (unfiltered, consistent, %s each) in a loop |\n", d.o.clients, d.o.pods, listSize)
	fmt.Printf("| HerdRelistStorm pending / firing | %s / %s |\n", at(r.Pending), at(r.Firing))
	fmt.Printf("| action | isolate on %s, %s at %s (%+.1f s from HerdRelistStorm firing): %s |\n", r.Decision.Alert, r.Decision.Result, at(r.Decided), r.Decided.Sub(r.Firing).Seconds(), r.Decision.Reason)
	fmt.Printf("| alert resolved / isolation removed | %s / %s |\n", at(r.Resolved), at(removed))
	fmt.Printf("\n| | %s |\n|---|%s\n", joinPhases(phases, func(p phase) string { return fmt.Sprintf("%s (%.0f s)", p.name, p.to.Sub(p.from).Seconds()) }), strings.Repeat("---|", len(phases)))
	fmt.Printf("| apiserver RSS at end / peak | %s |\n", joinPhases(phases, func(p phase) string {
		return fmt.Sprintf("%s / %s", stack.MiB(mem.At(p.to).RSS), stack.MiB(mem.Peak(p.from, p.to).RSS))
	}))
	fmt.Printf("| kube-scheduler GET p50 / p99 | %s |\n", joinPhases(phases, func(p phase) string {
		s := drill.Summarize(sched, p.from, p.to)
		return fmt.Sprintf("%s / %s", secs(s.P50), secs(s.P99))
	}))
	fmt.Printf("| kube-scheduler GETs not 2xx | %s |\n", joinPhases(phases, func(p phase) string {
		s := drill.Summarize(sched, p.from, p.to)
		return fmt.Sprintf("%d of %d", s.Failed, s.Requests)
	}))
	fmt.Printf("| kubelets: Node Leases renewed, oldest (renewed every 10 s, expire after 40 s) | %s |\n", joinPhases(phases, func(p phase) string {
		oldest, n, ok := leases.oldest(p.from, p.to)
		if !ok {
			return "?"
		}
		return fmt.Sprintf("%d of %d, %.0f s ago", n, d.o.agents, oldest.Seconds())
	}))
	fmt.Printf("| storm LISTs served | %s |\n", joinPhases(phases, func(p phase) string {
		s := drill.Summarize(storm, p.from, p.to)
		return fmt.Sprintf("%d (%.1f/s)", s.OK, float64(s.OK)/p.to.Sub(p.from).Seconds())
	}))
	fmt.Printf("\nherd bounds the storming client's LISTs to a priority level of their own: they are still served at about the\n" +
		"same rate, but one or two at a time, so the apiserver neither holds dozens of 10 MB responses at once nor makes\n" +
		"kube-scheduler, which shared workload-high with them, queue behind them. What comes before the alert is the cost\n" +
		"of detection. `make drill-storm` measures the full-size storm (2,000 pods, 100 agents) with and without herd.\n\n")
}

func joinPhases(ps []phase, f func(phase) string) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = f(p)
	}
	return strings.Join(parts, " | ")
}

func secs(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.0f ms", d.Seconds()*1000)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// wrap breaks s into lines of at most width, indenting continuations.
func wrap(s string, width int, indent string) string {
	var b strings.Builder
	n := 0
	for _, w := range strings.Fields(s) {
		if n > 0 && n+1+len(w) > width {
			b.WriteString("\n" + indent)
			n = 0
		} else if n > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// leaseWatch samples the node Leases: how many there are and how long ago
// the least recently renewed one was renewed. A real kubelet renews its
// Lease every 10 s in the system-nodes priority level; a storm in
// workload-high should not delay it.
type leaseWatch struct {
	stop func()

	mu      sync.Mutex
	samples []leaseSample
}

type leaseSample struct {
	at     time.Time
	oldest time.Duration
	n      int
}

func watchLeases(ctx context.Context, c kubernetes.Interface, every time.Duration) *leaseWatch {
	w := &leaseWatch{}
	w.stop = herdtest.Background(ctx, func(ctx context.Context) {
		herdtest.Every(ctx, every, func() {
			l, err := c.CoordinationV1().Leases(corev1.NamespaceNodeLease).List(ctx, metav1.ListOptions{})
			if err != nil {
				return
			}
			now := time.Now()
			sm := leaseSample{at: now, n: len(l.Items)}
			for _, le := range l.Items {
				if le.Spec.RenewTime != nil {
					sm.oldest = max(sm.oldest, now.Sub(le.Spec.RenewTime.Time))
				}
			}
			w.mu.Lock()
			w.samples = append(w.samples, sm)
			w.mu.Unlock()
		})
	})
	return w
}

// oldest is the oldest renewal seen in [from, to) and the fewest Leases
// then; ok is false without a sample.
func (w *leaseWatch) oldest(from, to time.Time) (oldest time.Duration, n int, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n = -1
	for _, sm := range w.samples {
		if sm.at.Before(from) || !sm.at.Before(to) {
			continue
		}
		ok = true
		oldest = max(oldest, sm.oldest)
		if n < 0 || sm.n < n {
			n = sm.n
		}
	}
	return oldest, n, ok
}
