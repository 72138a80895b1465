package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/drill"
	"github.com/herd-k8s/herd/test/stack"
)

// report prints the runs as markdown: the storm runs side by side with
// their ratios, whether each goal of issue 8 is met and what limited it,
// then the kubelet variant.
func report(w io.Writer, o options, rs map[string]*result) {
	mix := stack.DemoMixin()
	list := heading(w, "herd storm drill", o.runs, func(name string) *result { return rs[name] })
	fmt.Fprintf(w, "%d pods of ~10.8 KB (one unfiltered LIST: %s). Storm: %d cilium-agents (kube-system/cilium → APF workload-high) "+
		"LISTing every pod (consistent, unfiltered) in a closed loop, each from its own node's address, in two waves of %v; "+
		"kube-scheduler GETs one pod every 100 ms (workload-high too). Demo windows: rateWindow %v, HerdRelistStorm `for` %v, "+
		"scrape and evaluation 1 s, Alertmanager group_wait 1 s, group_interval 2 s. apiserver RSS sampled every 250 ms, killed "+
		"above %.0f GiB. A fresh control plane and stack per run.\n\n",
		o.pods, list, o.clients, o.wave, mix["rateWindow"], mix["relistStormFor"], o.rssCap)
	if o.measurement {
		fmt.Fprintf(w, "With the responder's APF measurement FlowSchemas (`-measurement`, docs/apf-measurement.md): every node-side "+
			"client's LISTs served by its herd-measure schema in the level it had; compare the scheduler's p99 with a run without.\n\n")
	}

	p, u := rs["protected"], rs["unprotected"]
	if p != nil || u != nil {
		stormTable(w, o, p, u)
	}
	if k := rs["kubelet"]; k != nil {
		kubeletTable(w, o, k)
	}
	fmt.Fprintln(w)
	for _, name := range o.runs {
		fmt.Fprintf(w, "apiserver RSS every 5 s from the first wave's start, %s run (MiB): %s\n", name, timeline(rs[name]))
	}
	for _, name := range o.runs {
		if c := rs[name].crashed; len(c) > 0 {
			fmt.Fprintf(w, "%s run: processes that exited on their own: %s\n", name, strings.Join(c, ", "))
		}
	}
}

// heading prints a report's title, the control plane and machine every
// run had and each run's Nodes; it returns the size of one unfiltered LIST
// of the pods as a storm run measured it ("?" when none did). run is the
// named run's measures, nil when it did not run.
func heading(w io.Writer, title string, runs []string, run func(name string) *result) (list string) {
	fmt.Fprintf(w, "\n## %s, %s\n\n", title, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "kube-apiserver %s + etcd; machine: %s.\n", controlplane.Version, machine())
	fmt.Fprintln(w, runNodesLine(runs, func(name string) string {
		if r := run(name); r != nil {
			return r.nodes
		}
		return ""
	}))
	list = "?"
	for _, name := range runs {
		if r := run(name); r != nil && r.listBytes > 0 && r.name != "kubelet" {
			list = fmt.Sprintf("%.1f MB", float64(r.listBytes)/1e6)
		}
	}
	return list
}

// The measures of one run over a stretch.

func (r *result) rssAt(t time.Time) int64 { return r.mem.At(t).RSS }

// peak is the largest RSS in the stretch and the 5 s after it (a LIST
// admitted late is still being answered).
func (r *result) peak(s span) int64 { return r.mem.Peak(s.start, s.end.Add(5*time.Second)).RSS }

// growth is a stretch's peak over the RSS before the first wave: memory
// the apiserver kept from wave 1 counts against wave 2.
func (r *result) growth(s span) int64 { return r.peak(s) - r.rssAt(r.start) }

// settle is how far into a wave the "settled" RSS starts: memory a wave
// finds left over from the one before (the Go runtime returns it to the OS
// lazily) is not this wave's doing.
const settle = 15 * time.Second

// settledGrowth is the peak from settle into the stretch to its end, over
// the RSS before the first wave.
func (r *result) settledGrowth(s span) int64 {
	return r.peak(span{s.start.Add(settle), s.end}) - r.rssAt(r.start)
}

func (r *result) schedIn(s span) drill.Summary { return drill.Summarize(r.sched, s.start, s.end) }

func (r *result) listsIn(s span) drill.Summary { return drill.Summarize(r.storm, s.start, s.end) }

func (r *result) whole() span { return span{r.start, r.end} }

func (r *result) at(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("+%.1f s", t.Sub(r.start).Seconds())
}

// sideBySide writes the rows of a table of two runs, protected (p) and
// unprotected (u), either of which may be missing, and their ratio.
type sideBySide[R comparable] struct {
	w    io.Writer
	p, u R
}

// row is one line: what, each run's f, and ratio when both ran.
func (t sideBySide[R]) row(what string, f func(R) string, ratio func() string) {
	var none R
	cell := func(r R) string {
		if r == none {
			return "not run"
		}
		return f(r)
	}
	rat := ""
	if t.p != none && t.u != none && ratio != nil {
		rat = ratio()
	}
	fmt.Fprintf(t.w, "| %s | %s | %s | %s |\n", what, cell(t.p), cell(t.u), rat)
}

// head is a heading row.
func (t sideBySide[R]) head(what string) { fmt.Fprintf(t.w, "| **%s** | | | |\n", what) }

// lat is a latency summary's p50 / p99 (max).
func lat(s drill.Summary) string {
	return fmt.Sprintf("%s / **%s** (max %s)", secs(s.P50), secs(s.P99), secs(s.Max))
}

func stormTable(w io.Writer, o options, p, u *result) {
	both := p != nil && u != nil
	t := sideBySide[*result]{w: w, p: p, u: u}
	row, head := t.row, t.head
	rate := func(n int, d time.Duration) string { return fmt.Sprintf("%d (%.1f/s)", n, float64(n)/d.Seconds()) }
	// The rows every stretch has, with ratios; settled adds the RSS
	// without what the wave found left over.
	stretch := func(sp func(*result) span, settled bool) {
		row("apiserver RSS peak (over the RSS before the storm)", func(r *result) string {
			s := sp(r)
			return fmt.Sprintf("%s (**+%s** over %s)", mib(r.peak(s)), mib(r.growth(s)), mib(r.rssAt(r.start)))
		}, func() string { return "growth " + times(u.growth(sp(u)), p.growth(sp(p))) + " smaller protected" })
		if settled {
			row(fmt.Sprintf("**apiserver RSS growth, settled: peak from %v into the wave, over the RSS before the storm**", settle), func(r *result) string {
				return fmt.Sprintf("**+%s**", mib(r.settledGrowth(sp(r))))
			}, func() string {
				return "growth " + times(u.settledGrowth(sp(u)), p.settledGrowth(sp(p))) + " smaller protected"
			})
		}
		row("scheduler GET p50 / p99", func(r *result) string { return lat(r.schedIn(sp(r))) },
			func() string {
				return "p99 " + times(int64(u.schedIn(sp(u)).P99), int64(p.schedIn(sp(p)).P99)) + " better protected"
			})
		row("scheduler GETs not 2xx", func(r *result) string {
			s := r.schedIn(sp(r))
			return fmt.Sprintf("%d of %d", s.Failed, s.Requests)
		}, nil)
		row("storm LISTs served (2xx)", func(r *result) string { return rate(r.listsIn(sp(r)).OK, sp(r).length()) },
			func() string {
				return fmt.Sprintf("%.2f protected/unprotected", float64(p.listsIn(sp(p)).OK)/float64(max(1, u.listsIn(sp(u)).OK)))
			})
	}
	wave := func(i int) func(*result) span { return func(r *result) span { return r.waves[i] } }

	fmt.Fprintf(w, "| | protected: herd acting (dryRun: false) | unprotected: herd in dry-run | ratio |\n|---|---|---|---|\n")
	row("load average at start (1, 5, 15 min)", func(r *result) string {
		if !r.quiet {
			return r.load + " (busy)"
		}
		return r.load
	}, nil)
	head(fmt.Sprintf("wave 1 (%v): the storm starts; herd detects it and acts", o.wave))
	stretch(wave(0), false)
	row("HerdRelistStorm pending / firing (from the wave's start)", func(r *result) string {
		return r.at(r.resp.Pending) + " / " + r.at(r.resp.Firing)
	}, nil)
	row("responder attempts that failed", func(r *result) string { return failures(r) }, nil)
	row("responder decision done", func(r *result) string {
		d := r.resp.Decided
		if d.IsZero() {
			return "none"
		}
		when := "during the wave"
		if !d.Before(r.waves[0].end) {
			when = fmt.Sprintf("%.1f s after the wave ended", d.Sub(r.waves[0].end).Seconds())
		}
		return fmt.Sprintf("%s: %s on %s, %+.1f s from HerdRelistStorm firing, %s", r.at(d), r.resp.Decision.Result, r.resp.Decision.Alert, d.Sub(r.resp.Firing).Seconds(), when)
	}, nil)
	head(fmt.Sprintf("wave 2 (%v, after a pause): herd's isolation in place against default APF", o.wave))
	stretch(wave(1), true)
	head("both waves")
	row("apiserver RSS start → peak", func(r *result) string {
		s := fmt.Sprintf("%s → %s (+%s)", mib(r.rssAt(r.start)), mib(r.peak(r.whole())), mib(r.growth(r.whole())))
		if k := r.mem.KilledAt(); k > 0 {
			s += fmt.Sprintf(", **killed at %.1f GiB**", float64(k)/(1<<30))
		}
		return s
	}, func() string {
		return "growth " + times(u.growth(u.whole()), p.growth(p.whole())) + " smaller protected"
	})
	inWaves := func(r *result) drill.Summary {
		var in []drill.Outcome
		for _, o := range r.sched {
			for _, wv := range r.waves {
				if !o.Start.Before(wv.start) && o.Start.Before(wv.end) {
					in = append(in, o)
				}
			}
		}
		return drill.Summarize(in, time.Time{}, time.Time{})
	}
	row("scheduler GET p50 / p99 (during the waves)", func(r *result) string { return lat(inWaves(r)) },
		func() string {
			return "p99 " + times(int64(inWaves(u).P99), int64(inWaves(p).P99)) + " better protected"
		})
	row("storm LISTs served (2xx)", func(r *result) string {
		n := r.listsIn(r.whole()).OK
		return fmt.Sprintf("%d; answers %s", n, r.listsIn(r.whole()).CodeList())
	}, func() string {
		return fmt.Sprintf("%.2f protected/unprotected", float64(p.listsIn(p.whole()).OK)/float64(max(1, u.listsIn(u.whole()).OK)))
	})
	row(fmt.Sprintf("scheduler healthy again (every GET for 5 s: 200 within %v) after the isolation", o.recoveryLimit), func(r *result) string {
		if r.name != "protected" {
			return "—"
		}
		return r.at(r.recovered)
	}, nil)

	if p != nil && p.resp.Decision.Reason != "" {
		fmt.Fprintf(w, "\nThe responder's decision: %s\n", p.resp.Decision.Reason)
	}
	if both {
		goals(w, p, u)
	}
}

// failures summarises the failed attempts: how many, and the last error.
func failures(r *result) string {
	ds := r.resp.Failures
	if len(ds) == 0 {
		return "none"
	}
	last := ds[len(ds)-1]
	msg := last.Error
	if msg == "" {
		msg = last.Reason
	}
	return fmt.Sprintf("%d, started %s to %s; the last %s after %.1f s: %s", len(ds), r.at(ds[0].Time), r.at(last.Time), last.Result, last.DurationMS/1000, msg)
}

func goals(w io.Writer, p, u *result) {
	g := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}
	fmt.Fprintf(w, "\n**Goals (issue 8), protected against unprotected:**\n\n")
	w2p, w2u := p.waves[1], u.waves[1]
	gp, gu := p.settledGrowth(w2p), u.settledGrowth(w2u)
	ap, au := p.growth(p.whole()), u.growth(u.whole())
	fmt.Fprintf(w, "- apiserver RSS growth ≥ 5× smaller: wave 2 settled (isolation in place) %s — %s; both waves %s — %s.\n",
		times(gu, gp), g(gu >= 5*gp), times(au, ap), g(au >= 5*ap))
	sp, su := p.schedIn(w2p), u.schedIn(w2u)
	w1p, w1u := p.schedIn(p.waves[0]), u.schedIn(u.waves[0])
	fmt.Fprintf(w, "- scheduler p99 < 1 s and ≥ 5× better: wave 2 %s, %s — %s; wave 1 %s, %s — %s.\n",
		secs(sp.P99), times(int64(su.P99), int64(sp.P99)), g(sp.P99 < time.Second && su.P99 >= 5*sp.P99),
		secs(w1p.P99), times(int64(w1u.P99), int64(w1p.P99)), g(w1p.P99 < time.Second && w1u.P99 >= 5*w1p.P99))
	served := float64(p.listsIn(p.whole()).OK) / float64(max(1, u.listsIn(u.whole()).OK))
	served2 := float64(p.listsIn(w2p).OK) / float64(max(1, u.listsIn(w2u).OK))
	fmt.Fprintf(w, "- storm LISTs served within 20%% of unprotected: both waves %.2f — %s; wave 2 %.2f — %s.\n",
		served, g(served >= 0.8 && served <= 1.2), served2, g(served2 >= 0.8 && served2 <= 1.2))
	if d := p.resp.Decided; !d.IsZero() && !p.resp.Firing.IsZero() {
		when := "during wave 1"
		if !d.Before(p.waves[0].end) {
			when = fmt.Sprintf("%.1f s after wave 1 ended", d.Sub(p.waves[0].end).Seconds())
		}
		fmt.Fprintf(w, "- alert → isolation < 60 s: %.1f s, applied %s, after %d failed attempts — %s.\n",
			d.Sub(p.resp.Firing).Seconds(), when, len(p.resp.Failures), g(d.Sub(p.resp.Firing) < time.Minute))
	} else {
		fmt.Fprintf(w, "- alert → isolation < 60 s: no isolation — **not met**.\n")
	}
	fmt.Fprintf(w, "\nHow to read it: herd acts only once a storm is visible (the rate window fills, the alert's `for` passes) "+
		"and once the apiserver accepts the responder's writes, so wave 1 hits both runs before any response: its figures "+
		"are the cost of detection. Wave 2 is the same storm again after the pause, as the next reconnect of the agents "+
		"would bring it: herd's FlowSchema is still in place (it is kept for the hold-down after the alert resolves and "+
		"for at most its TTL), and the comparison is isolation against default APF. A wave can start with memory the one before "+
		"left (the apiserver's Go runtime returns freed memory lazily): the settled RSS leaves out a wave's first %v.\n", settle)
}

func kubeletTable(w io.Writer, o options, k *result) {
	pause := "in a tight loop"
	if o.kubeletPause > 0 {
		pause = fmt.Sprintf("every %v", o.kubeletPause)
	}
	sched, lists := k.schedIn(k.whole()), k.listsIn(k.whole())
	fmt.Fprintf(w, "\n| kubelet variant: %d kubelets (system:node:NAME → APF system-nodes) LISTing their own pods (fieldSelector spec.nodeName, consistent) %s for %.0f s, herd in dry-run | |\n|---|---|\n",
		o.kubelets, pause, k.whole().length().Seconds())
	fmt.Fprintf(w, "| load average at start | %s |\n", k.load)
	rss := fmt.Sprintf("%s → %s (+%s)", mib(k.rssAt(k.start)), mib(k.peak(k.whole())), mib(k.growth(k.whole())))
	if kk := k.mem.KilledAt(); kk > 0 {
		rss += fmt.Sprintf(", killed at %.1f GiB", float64(kk)/(1<<30))
	}
	fmt.Fprintf(w, "| apiserver RSS start → peak | %s |\n", rss)
	fmt.Fprintf(w, "| scheduler GET p50 / p99 (max), not 2xx | %s / %s (%s), %d of %d |\n", secs(sched.P50), secs(sched.P99), secs(sched.Max), sched.Failed, sched.Requests)
	fmt.Fprintf(w, "| kubelet LISTs served (2xx) | %d (%.0f/s), p50 %s, p99 %s; answers %s |\n", lists.OK, float64(lists.OK)/k.whole().length().Seconds(), secs(lists.P50), secs(lists.P99), lists.CodeList())
	alert := "did not fire"
	if !k.resp.Firing.IsZero() {
		alert = fmt.Sprintf("fired at %s", k.at(k.resp.Firing))
		if !k.resp.Decided.IsZero() {
			alert += fmt.Sprintf("; the dry-run responder decided %s: %s", k.resp.Decision.Result, k.resp.Decision.Reason)
		}
	}
	fmt.Fprintf(w, "| HerdRelistStorm (kubelet, pods) | %s |\n", alert)
}

func timeline(r *result) string {
	var parts []string
	for t := r.start; !t.After(r.end.Add(5 * time.Second)); t = t.Add(5 * time.Second) {
		parts = append(parts, fmt.Sprintf("%.0f", float64(r.rssAt(t))/(1<<20)))
	}
	return strings.Join(parts, " ")
}

func mib(b int64) string { return thousands(b>>20) + " MiB" }

func thousands(n int64) string {
	if n < 0 {
		return "-" + thousands(-n)
	}
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func secs(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.0f ms", d.Seconds()*1000)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// times is a/b as "N.N×" (∞ when b is 0).
func times(a, b int64) string {
	if b <= 0 {
		return "∞×"
	}
	return fmt.Sprintf("%.1f×", float64(a)/float64(b))
}
