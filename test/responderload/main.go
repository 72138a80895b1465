// Command responderload measures herd's responder from alert to action
// (SPEC §7: "alert to action (responder, excluding Alertmanager's waits)
// p99 < 1 s") on the real stack: kube-apiserver and etcd (test/controlplane)
// with N Nodes, a real `herd exporter` fed audit events of kubelets in a pod
// relist loop (so herd_stale_kubelet is 1 for each of them), a real
// Prometheus scraping it with the mixin's generated recording and alerting
// rules, and the real `herd responder` binary acting (dryRun: false, one
// replica, guards loosened so that every stale node may be cordoned).
//
// It then posts Alertmanager webhook payloads (version 4) straight to
// POST /alerts, which leaves out Alertmanager's own waits (group_wait,
// group_interval), in four phases:
//
//  1. cordon fire, one alert per POST, one POST at a time: the cost of one
//     alert with nothing queued;
//  2. cordon fire for the other stale nodes, -group alerts per POST, -senders
//     POSTs at once;
//  3. every firing alert again, each payload -repeat times at once
//     (Alertmanager's repeat_interval, an HA pair): acted on once already,
//     so no new decision;
//  4. the resolves, grouped and concurrent like 2: uncordon.
//
// For every alert it reports the time from POST to 200 (each alert of a
// payload gets its POST's time), the time from the POST to the end of the
// alert's own action, and the action's durationMs from /debug/actions. In the
// same run, as baselines: GET + merge-PATCH of a Node by an admin client
// without client-side limits (what a cordon minimally costs on this
// apiserver), the same with a server-side apply as herd writes, and the
// cordon's evidence query against Prometheus.
//
//	go run ./test/responderload -herd bin/herd          # make responder-load
//	go run ./test/responderload -stale 500 -group 50 -senders 2 -json
//
// Every process runs in its own process group and dies with this one
// (test/proc); all are stopped at the end. Missing binaries fail the run
// with how to get them (make controlplane, make deps).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/hostinfo"
)

// Target is SPEC §7's: alert to action, p99.
const Target = time.Second

// Config is what one run does.
type Config struct {
	Herd           string        // herd binary; "" builds ./cmd/herd into Dir
	Root           string        // repository root (manifests/rbac, rules/)
	Stale          int           // nodes with a stale kubelet: one HerdStaleKubelet alert each
	Nodes          int           // all Nodes; 0: enough that every stale node may be cordoned
	Fraction       float64       // guards.maxUnschedulableFraction
	Sequential     int           // phase 1: alerts sent one per POST, one at a time
	Group          int           // alerts per POST in phases 2-4
	Senders        int           // concurrent POSTs in phases 2-4
	Repeat         int           // copies of each payload sent at once in phase 3
	Baseline       int           // operations per baseline
	ScrapeInterval time.Duration // Prometheus scrape and rule evaluation interval
	Dir            string        // for logs and data; "" makes a temp dir, removed
}

// Report is a whole run.
type Report struct {
	Date          time.Time  `json:"date"`
	GoVersion     string     `json:"goVersion"`
	CPUs          int        `json:"cpus"`
	CPUModel      string     `json:"cpuModel"`
	LoadAvg       [2]string  `json:"loadAvg"`
	APIServer     string     `json:"kubeAPIServer"`
	Prometheus    string     `json:"prometheus"`
	Config        Config     `json:"config"`
	Baselines     []Baseline `json:"baselines"`
	Phases        []*Phase   `json:"phases"`
	Cordoned      int        `json:"cordonedAfterFire"`    // nodes unschedulable with herd's annotation after phase 2
	Uncordoned    int        `json:"cordonedAfterResolve"` // after phase 4 (want 0)
	Duplicates    float64    `json:"duplicateDeliveries"`  // herd_responder_duplicate_deliveries_total{action="cordon"}
	Applied       float64    `json:"actionsApplied"`       // herd_responder_actions_total{action="cordon",result="applied"}
	OtherOutcomes float64    `json:"actionsNotApplied"`    // the same with another result
}

func main() {
	var c Config
	flag.StringVar(&c.Herd, "herd", "", "herd binary (default: go build ./cmd/herd into a temp dir)")
	flag.StringVar(&c.Root, "root", ".", "repository root: manifests/rbac and rules/ are read from it")
	flag.IntVar(&c.Stale, "stale", 200, "nodes whose kubelet is stale: one HerdStaleKubelet alert each")
	flag.IntVar(&c.Nodes, "nodes", 0, "Nodes in the cluster (default: enough that -fraction allows cordoning every stale node)")
	flag.Float64Var(&c.Fraction, "fraction", 0.5, "the responder's guards.maxUnschedulableFraction")
	flag.IntVar(&c.Sequential, "sequential", 20, "phase 1: alerts sent one per POST, one POST at a time")
	flag.IntVar(&c.Group, "group", 10, "alerts per POST in the grouped phases")
	flag.IntVar(&c.Senders, "senders", 4, "concurrent POSTs in the grouped phases")
	flag.IntVar(&c.Repeat, "repeat", 2, "duplicate phase: copies of each payload sent at once")
	flag.IntVar(&c.Baseline, "baseline", 100, "operations per baseline")
	flag.DurationVar(&c.ScrapeInterval, "scrape-interval", 5*time.Second, "Prometheus scrape and rule evaluation interval")
	flag.StringVar(&c.Dir, "dir", "", "directory for logs and data (default: a temp dir, removed; give one to keep the logs)")
	asJSON := flag.Bool("json", false, "print the report as JSON")
	check := flag.Bool("check", false, "exit 1 when the SPEC §7 target is missed or an alert was not handled as it must be")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, c, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "responder-load:", err)
		stop()
		os.Exit(2)
	}
	herdtest.PrintReport(os.Stdout, rep, *asJSON)
	if *check && len(rep.Missed())+len(rep.Problems()) > 0 {
		stop()
		os.Exit(1)
	}
}

// Run does one measurement; progress goes to log. Every process it starts
// is stopped before it returns.
func Run(ctx context.Context, c Config, log io.Writer) (*Report, error) {
	if c.Stale <= 0 || c.Group <= 0 || c.Senders <= 0 || c.Repeat <= 0 || c.Baseline < 2 || c.Sequential < 0 {
		return nil, errors.New("-stale, -group, -senders and -repeat must be positive, -baseline at least 2")
	}
	if !(c.Fraction > 0 && c.Fraction < 1) {
		return nil, errors.New("-fraction must be more than 0 and less than 1 (the responder refuses anything else)")
	}
	if c.Nodes == 0 {
		c.Nodes = int(math.Ceil(float64(c.Stale)/c.Fraction)) + 10
	}
	if allowed := int(math.Floor(c.Fraction * float64(c.Nodes))); allowed < c.Stale {
		return nil, fmt.Errorf("-nodes %d with -fraction %g allows %d cordons, fewer than -stale %d: the guard would refuse the rest", c.Nodes, c.Fraction, allowed, c.Stale)
	}
	if c.Nodes <= c.Stale {
		return nil, errors.New("-nodes must be more than -stale: the baselines cordon healthy nodes")
	}
	c.Sequential = min(c.Sequential, c.Stale)
	promBin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	dir, done, err := herdtest.WorkDir(c.Dir, "herd-responder-load-")
	if err != nil {
		return nil, err
	}
	defer done()
	c.Dir = dir
	bin := c.Herd
	if bin == "" {
		fmt.Fprintf(log, "responder-load: go build ./cmd/herd ...\n")
		if bin, err = herdtest.BuildHerd(ctx, c.Dir); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("-herd %s: %w (make build builds bin/herd)", bin, err)
	}

	rep := &Report{
		Date: time.Now().UTC(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), CPUModel: hostinfo.CPUModel(),
		LoadAvg: [2]string{hostinfo.LoadAverageText(), ""}, APIServer: "kube-apiserver " + controlplane.Version, Config: c,
	}
	s, err := startStack(ctx, c, bin, promBin, log)
	if err != nil {
		return nil, err
	}
	defer s.stop()
	rep.Prometheus = strings.TrimSpace(s.promVersion)
	if err := s.measure(ctx, rep, log); err != nil {
		return nil, fmt.Errorf("%w\nresponder log:\n%s", err, s.responder.Proc.Tail(20))
	}
	rep.LoadAvg[1] = hostinfo.LoadAverageText()
	if crashed := s.Crashed(); len(crashed) > 0 {
		return nil, fmt.Errorf("%s exited during the run:\n%s", strings.Join(crashed, ", "), s.Tails(20, true))
	}
	s.stop()
	return rep, nil
}

// measure runs the baselines, then the four phases.
func (s *stack) measure(ctx context.Context, rep *Report, log io.Writer) error {
	c := s.cfg
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: c.Senders*c.Repeat + 2, DisableCompression: true},
		Timeout:   2 * time.Minute,
	}
	defer client.CloseIdleConnections()

	fmt.Fprintf(log, "responder-load: baselines (%d operations each) ...\n", c.Baseline)
	healthy := s.healthy()
	for _, b := range []struct {
		name    string
		workers int
		apply   bool
	}{
		{"GET + merge-PATCH Node (admin, no client-side limit)", 1, false},
		{"GET + server-side apply Node, as herd writes", 1, true},
		{fmt.Sprintf("GET + merge-PATCH Node, %d at once", c.Senders), c.Senders, false},
	} {
		r, err := nodeBaseline(ctx, s.Admin, b.name, healthy, c.Baseline, b.workers, b.apply)
		if err != nil {
			return fmt.Errorf("baseline %s: %w", b.name, err)
		}
		rep.Baselines = append(rep.Baselines, r)
	}
	if err := uncordonAll(ctx, s.Admin, healthy); err != nil {
		return err
	}
	r, err := queryBaseline(ctx, s.PrometheusURL, s.stale(), c.Baseline)
	if err != nil {
		return fmt.Errorf("baseline query: %w", err)
	}
	rep.Baselines = append(rep.Baselines, r)
	time.Sleep(time.Second) // the responder's Node cache sees the baselines' last uncordons

	startsAt := time.Now().Add(-16 * time.Minute).UTC().Truncate(time.Second) // staleKubeletFor is 15m
	var alerts []alert
	for _, n := range s.stale() {
		alerts = append(alerts, newAlert(n.name, startsAt))
	}
	run := func(name, status string, as []alert, group, senders, repeat int) error {
		if len(as) == 0 {
			return nil
		}
		fmt.Fprintf(log, "responder-load: %s (%d alerts) ...\n", name, len(as))
		ph, err := s.deliver(ctx, client, name, status, as, group, senders, repeat)
		if err != nil {
			return err
		}
		rep.Phases = append(rep.Phases, ph)
		return nil
	}
	seq := c.Sequential
	if err := run("cordon fire, 1 alert per POST, 1 at a time", "firing", alerts[:seq], 1, 1, 1); err != nil {
		return err
	}
	if err := run(fmt.Sprintf("cordon fire, %d per POST, %d POSTs at once", c.Group, c.Senders), "firing", alerts[seq:], c.Group, c.Senders, 1); err != nil {
		return err
	}
	if rep.Cordoned, _, err = s.herdCordoned(ctx); err != nil {
		return err
	}
	if err := run(fmt.Sprintf("duplicate delivery, %d per POST, %d×%d POSTs at once", c.Group, c.Senders, c.Repeat), "firing", alerts, c.Group, c.Senders, c.Repeat); err != nil {
		return err
	}
	if err := run(fmt.Sprintf("cordon resolve, %d per POST, %d POSTs at once", c.Group, c.Senders), "resolved", alerts, c.Group, c.Senders, 1); err != nil {
		return err
	}
	if rep.Uncordoned, _, err = s.herdCordoned(ctx); err != nil {
		return err
	}
	rep.Duplicates = s.responderMetric(ctx, "herd_responder_duplicate_deliveries_total", "action=cordon")
	rep.Applied = s.responderMetric(ctx, "herd_responder_actions_total", "action=cordon", "result=applied")
	rep.OtherOutcomes = s.responderMetric(ctx, "herd_responder_actions_total", "action=cordon") - rep.Applied
	return nil
}

// isAction reports whether a phase acts (fire or resolve) rather than
// repeating deliveries herd already decided.
func (p *Phase) isAction() bool { return !strings.HasPrefix(p.Name, "duplicate") }

// Missed lists the phases that act (fire, resolve) whose per-alert p99
// from POST to 200 missed SPEC §7's target.
func (rep *Report) Missed() []string {
	var m []string
	for _, p := range rep.Phases {
		if p.isAction() && p.Latency.P99 >= Target {
			m = append(m, fmt.Sprintf("%s: p99 %v ≥ %v", p.Name, p.Latency.P99.Round(time.Millisecond), Target))
		}
	}
	return m
}

// Problems lists what did not go as it must: answers other than 200 or
// with failed alerts, nodes not cordoned or not uncordoned.
func (rep *Report) Problems() []string {
	var m []string
	for _, p := range rep.Phases {
		if p.Codes[http.StatusOK] != p.Posts || p.Results["failed"] > 0 {
			m = append(m, fmt.Sprintf("%s: answers %v, %d failed actions (first error: %s)", p.Name, p.Codes, p.Results["failed"], p.FirstErr))
		}
	}
	if rep.Cordoned != rep.Config.Stale || rep.Uncordoned != 0 {
		m = append(m, fmt.Sprintf("%d nodes cordoned by herd after the fires (want %d), %d after the resolves (want 0)", rep.Cordoned, rep.Config.Stale, rep.Uncordoned))
	}
	return m
}

func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.1f", float64(d)/1e6)
	}
	return fmt.Sprintf("%.0f", float64(d)/1e6)
}

func statCells(s Stats) string {
	if s.N == 0 {
		return "-\t-\t-\t-\t-"
	}
	return fmt.Sprintf("%d\t%s\t%s\t%s\t%s", s.N, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max))
}

// Print writes the report as tables.
func (rep *Report) Print(w io.Writer) {
	c := rep.Config
	fmt.Fprintf(w, "herd responder load test, %s, Go %s, %d CPUs (%s); load average %s at the start, %s at the end\n",
		rep.Date.Format("2006-01-02 15:04 MST"), rep.GoVersion, rep.CPUs, rep.CPUModel, rep.LoadAvg[0], rep.LoadAvg[1])
	fmt.Fprintf(w, "%s + etcd, %d Nodes, %d with a stale kubelet (herd:stale_kubelet:max = 1); herd exporter; %s, mixin rules, %v scrape and evaluation;\n",
		rep.APIServer, c.Nodes, c.Stale, rep.Prometheus, c.ScrapeInterval)
	fmt.Fprintf(w, "herd responder, one replica, dryRun false, maxUnschedulableFraction %g; Alertmanager payloads (version 4) posted to /alerts\n\n", c.Fraction)

	width := 0
	for _, p := range rep.Phases {
		width = max(width, len(p.Name))
	}
	for _, b := range rep.Baselines {
		width = max(width, len(b.Name)+len("baseline: "))
	}
	name := func(s string) string { return fmt.Sprintf("%-*s", width, s) }

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s\talerts\tPOSTs\tanswers\tdecisions\twall\tdeliveries/s\tactions/s\tresponder CPU\tapiserver CPU\tPrometheus CPU\t\n", name("phase"))
	for _, p := range rep.Phases {
		var codes, results []string
		for code, n := range p.Codes {
			codes = append(codes, fmt.Sprintf("%d×%d", n, code))
		}
		for r, n := range p.Results {
			results = append(results, fmt.Sprintf("%s %d", r, n))
		}
		sort.Strings(codes)
		sort.Strings(results)
		if len(results) == 0 {
			results = []string{"none"}
		}
		if p.isAction() && p.Missing > 0 {
			results = append(results, fmt.Sprintf("%d not in /debug/actions", p.Missing))
		}
		aps := "-"
		if p.ActionsPerSec > 0 {
			aps = fmt.Sprintf("%.1f", p.ActionsPerSec)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%v\t%.1f\t%s\t%.2f s\t%.2f s\t%.2f s\t\n", name(p.Name), p.Alerts, p.Posts, strings.Join(codes, " "), strings.Join(results, ", "),
			p.Wall.Round(time.Millisecond), p.PerSec, aps, p.ResponderCPU.Seconds(), p.APIServerCPU.Seconds(), p.PromCPU.Seconds())
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s\tn\tp50\tp90\tp99\tmax\tper second\t\n", name("latency, ms"))
	for _, p := range rep.Phases {
		fmt.Fprintf(tw, "%s\t\t\t\t\t\t\t\n", name(p.Name))
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t\n", name("  POST → 200, per alert"), statCells(p.Latency), p.PerSec)
		if p.isAction() {
			fmt.Fprintf(tw, "%s\t%s\t\t\n", name("  POST → the alert's action done"), statCells(p.Done))
			fmt.Fprintf(tw, "%s\t%s\t\t\n", name("  the action alone (durationMs)"), statCells(p.Action))
		}
	}
	for _, b := range rep.Baselines {
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t\n", name("baseline: "+b.Name), statCells(b.Latency), b.PerSec)
	}
	tw.Flush()

	fmt.Fprintf(w, "\nafter the fires %d nodes were cordoned by herd (want %d), after the resolves %d (want 0); cordons applied %.0f, other outcomes %.0f; duplicate deliveries counted %.0f\n",
		rep.Cordoned, c.Stale, rep.Uncordoned, rep.Applied, rep.OtherOutcomes, rep.Duplicates)
	for _, p := range rep.Phases {
		if p.FirstErr != "" {
			fmt.Fprintf(w, "%s: first error: %s\n", p.Name, p.FirstErr)
		}
	}
	if m := rep.Problems(); len(m) > 0 {
		fmt.Fprintf(w, "PROBLEMS: %s\n", strings.Join(m, "; "))
	}
	if m := rep.Missed(); len(m) > 0 {
		fmt.Fprintf(w, "SPEC §7 alert to action, p99 < 1 s: NOT MET: %s\n", strings.Join(m, "; "))
	} else {
		fmt.Fprintln(w, "SPEC §7 alert to action, p99 < 1 s: met in every phase that acts")
	}
}
