// Command measure reports what hollow nodes cost the machine (issue 17,
// docs/performance.md): for each node count it starts the real control plane
// and that many hollow nodes (real kubelet and kube-proxy code, each node in
// its own network namespace), binds pods that mount a ConfigMap and a Secret
// each, lets them settle, then samples every agent's CPU time over a steady
// window and its RSS at the end. It prints a markdown table.
//
//	go run ./test/hollow/measure -nodes 5,20
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/hollow"
	"github.com/herd-k8s/herd/test/hostinfo"
	"github.com/herd-k8s/herd/test/proc"
)

func main() { os.Exit(run()) }

func run() int {
	nodesFlag := flag.String("nodes", "5,20", "comma-separated node counts, one run each")
	pods := flag.Int("pods", 2, "pods per node, each mounting a ConfigMap and a Secret")
	settle := flag.Duration("settle", 20*time.Second, "wait after the pods run before sampling")
	window := flag.Duration("window", 60*time.Second, "steady-state window over which CPU is measured")
	listEvery := flag.Int("list-every", 2, "every Nth node runs LIST-mode reflectors (0: none)")
	flag.Parse()
	var counts []int
	for _, s := range strings.Split(*nodesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "measure: -nodes: %q is not a positive count\n", s)
			return 2
		}
		counts = append(counts, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("machine: %s, %d cores visible to Go; load before: %s\n\n", hostinfo.CPUModel(), nproc(), hostinfo.LoadAverageText())
	fmt.Println("| hollow nodes | pods | start to all Ready | kubelet RSS / PSS | kube-proxy RSS / PSS | kubelet CPU | kube-proxy CPU | per node: PSS, steady CPU, CPU to start | kube-apiserver RSS, CPU | load (1m, 5m, 15m) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, n := range counts {
		row, err := measure(ctx, n, *pods, *listEvery, *settle, *window)
		if err != nil {
			fmt.Fprintf(os.Stderr, "measure %d nodes: %v\n", n, err)
			return 1
		}
		fmt.Println(row)
	}
	return 0
}

func nproc() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\nprocessor") + 1
}

func measure(ctx context.Context, n, podsPerNode, listEvery int, settle, window time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute+window)
	defer cancel()
	network, err := hollow.NewNetwork()
	if err != nil {
		return "", err
	}
	defer network.Close()
	var names []string
	var specs []hollow.NodeOptions
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("hollow-%d", i)
		names = append(names, name)
		specs = append(specs, hollow.NodeOptions{Name: name, ListMode: listEvery > 0 && i%listEvery == 0})
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{Nodes: names, Address: network.Gateway().String()})
	if err != nil {
		return "", err
	}
	defer cp.Stop()
	start := time.Now()
	agents, err := hollow.Start(ctx, cp, hollow.Options{Network: network, Nodes: specs, Log: os.Stderr})
	if err != nil {
		return "", err
	}
	defer agents.Stop()
	ready := time.Since(start)
	admin := cp.Client(controlplane.Admin)
	pods, err := hollow.CreatePods(ctx, admin, "hollow", names, podsPerNode)
	if err != nil {
		return "", err
	}
	if err := hollow.WaitPodsRunning(ctx, admin, "hollow", pods); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "%d nodes Ready in %v, %d pods Running; settling %v, then measuring %v\n", n, ready.Round(time.Second), len(pods), settle, window)
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(settle):
	}

	var kubelets, proxies []*proc.Process
	for _, node := range agents.Nodes {
		k, p := node.Processes()
		kubelets, proxies = append(kubelets, k), append(proxies, p)
	}
	apiPid := cp.APIServerPid()
	cpu0 := func(ps []*proc.Process) []time.Duration {
		out := make([]time.Duration, len(ps))
		for i, p := range ps {
			out[i] = hostinfo.ProcCPU(p.Pid())
		}
		return out
	}
	k0, p0, a0 := cpu0(kubelets), cpu0(proxies), hostinfo.ProcCPU(apiPid)
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(window):
	}
	if err := agents.Crashed(); err != nil {
		return "", err
	}
	elapsed := time.Since(t0)
	k1, p1, a1 := cpu0(kubelets), cpu0(proxies), hostinfo.ProcCPU(apiPid)
	var kRSS, pRSS, kPSS, pPSS []float64
	for _, m := range []struct {
		into *[]float64
		of   func([]*proc.Process) ([]float64, error)
		ps   []*proc.Process
	}{{&kRSS, rss, kubelets}, {&pRSS, rss, proxies}, {&kPSS, pss, kubelets}, {&pPSS, pss, proxies}} {
		if *m.into, err = m.of(m.ps); err != nil {
			return "", err
		}
	}
	apiRSS, _ := hostinfo.RSS(apiPid)
	kCPU, pCPU := cpuShare(k0, k1, elapsed), cpuShare(p0, p1, elapsed)
	var startCPU time.Duration
	for i := range k0 {
		startCPU += k0[i] + p0[i]
	}
	return fmt.Sprintf("| %d | %d | %v | %s / %s | %s / %s | %.2f %% | %.2f %% | %s, %.2f %%, %.1f s | %s, %.1f %% | %s |",
		n, len(pods), ready.Round(time.Second),
		mib(mean(kRSS)), mib(mean(kPSS)), mib(mean(pRSS)), mib(mean(pPSS)),
		kCPU, pCPU, mib(mean(kPSS)+mean(pPSS)), kCPU+pCPU, (startCPU / time.Duration(n)).Seconds(),
		mib(float64(apiRSS)), 100*float64(a1-a0)/float64(elapsed), hostinfo.LoadAverageText()), nil
}

// pss is each process's proportional set size (/proc/PID/smaps_rollup):
// its RSS with the pages it shares with the other agents (the binary's
// text, above all) divided among them, so that the sum is what they take.
func pss(ps []*proc.Process) ([]float64, error) {
	out := make([]float64, len(ps))
	for i, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p.Pid()))
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "Pss:"); ok {
				kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
				if err != nil {
					return nil, fmt.Errorf("pss of %d: %w", p.Pid(), err)
				}
				out[i] = kb * 1024
			}
		}
	}
	return out, nil
}

func rss(ps []*proc.Process) ([]float64, error) {
	out := make([]float64, len(ps))
	for i, p := range ps {
		b, err := hostinfo.RSS(p.Pid())
		if err != nil {
			return nil, err
		}
		out[i] = float64(b)
	}
	return out, nil
}

// cpuShare is the mean CPU use of one process, in percent of one core.
func cpuShare(before, after []time.Duration, elapsed time.Duration) float64 {
	var sum time.Duration
	for i := range before {
		sum += after[i] - before[i]
	}
	return 100 * float64(sum) / float64(elapsed) / float64(len(before))
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func mib(b float64) string { return fmt.Sprintf("%.0f MiB", b/(1<<20)) }
