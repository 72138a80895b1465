package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/test/drill"
	"github.com/herd-k8s/herd/test/stack"
)

// reportProduction prints the production drill as markdown: the stampede
// (protected against unprotected, with the forecast beside what the
// unprotected wave 1 did), the rolling restart, the unforecast storm, the
// kubelet storm, the responder's writes, and the goals of issue 12.
func reportProduction(w io.Writer, o options, root string, rs map[string]*prodResult) {
	list := heading(w, "herd storm drill, production settings", o.runs, func(name string) *result {
		if r := rs[name]; r != nil {
			return &r.result
		}
		return nil
	})
	fmt.Fprintf(w, "%d pods of ~10.8 KB (one unfiltered LIST: %s); %d cilium-agents (kube-system/cilium → APF workload-high), each from its own node's address. "+
		"Settings as shipped: rules/prometheus_{rules,alerts}.yaml (%s), scrape and rule evaluation %v (herd and the apiserver), Alertmanager group_wait %v, "+
		"group_interval %v, repeat_interval %v (HerdSynchronizedRelist %v: docs/install.md's route); herd's APF objects installed (manifests/apf/herd.yaml); the responder's defaults. apiserver RSS sampled every 250 ms, killed above %.0f GiB; "+
		"APF's executing requests every 500 ms. A fresh control plane and stack per run.\n\n",
		o.pods, list, o.clients, shippedFors(root), prodScrape, prodGroupWait, prodGroupInterval, prodRepeat, prodHeldRepeat, o.rssCap)

	p, u := rs["protected"], rs["unprotected"]
	if p != nil || u != nil {
		stampedeTable(w, o, p, u)
	}
	if f := rs["unforecast"]; f != nil {
		unforecastTable(w, o, f)
	}
	if k := rs["kubelet"]; k != nil {
		kubeletProdTable(w, o, k)
	}
	writesTable(w, o, rs)
	if p != nil && u != nil {
		prodGoals(w, p, u, rs["unforecast"], rs["kubelet"])
	}
	fmt.Fprintln(w)
	for _, name := range o.runs {
		r := rs[name]
		fmt.Fprintf(w, "apiserver RSS every 5 s from the storm's start, %s run (MiB): %s\n", name, timeline(&r.result))
		if c := r.crashed; len(c) > 0 {
			fmt.Fprintf(w, "%s run: processes that exited on their own: %s\n", name, strings.Join(c, ", "))
		}
	}
}

// shippedFors names the `for` of the alerts the drill depends on, from the
// shipped rules.
func shippedFors(root string) string {
	b, err := os.ReadFile(filepath.Join(root, "rules/prometheus_alerts.yaml"))
	if err != nil {
		return "?"
	}
	var f stack.RuleFile
	if yaml.Unmarshal(b, &f) != nil {
		return "?"
	}
	var out []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if slices.Contains([]string{"HerdStampedeRisk", "HerdSynchronizedRelist", "HerdRelistStorm"}, r.Alert) {
				out = append(out, fmt.Sprintf("%s for %s", r.Alert, orNone(r.For)))
			}
		}
	}
	return strings.Join(out, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "0s"
	}
	return s
}

// executing is the most and mean storm LISTs the run's level executed in
// a stretch (the scheduler's GETs in the same level are a few at most).
func (r *prodResult) executing(s span) (int, float64) {
	return r.apf.Executing(r.level, s.start, s.end.Add(5*time.Second))
}

// k is the apiserver bytes per listed byte per LIST running at once: the
// wave's growth over (the forecast's list bytes × the most LISTs executing).
func (r *prodResult) k(s span, listBytes float64) float64 {
	most, _ := r.executing(s)
	if most == 0 || listBytes <= 0 {
		return 0
	}
	return float64(r.growth(s)) / (listBytes * float64(most))
}

func stampedeTable(w io.Writer, o options, p, u *prodResult) {
	t := sideBySide[*prodResult]{w: w, p: p, u: u}
	row, head := t.row, t.head
	fmt.Fprintf(w, "| | protected: herd acting (dryRun: false) | unprotected: herd in dry-run | ratio |\n|---|---|---|---|\n")
	row("load average at start (1, 5, 15 min)", func(r *prodResult) string {
		if !r.quiet {
			return r.load + " (busy)"
		}
		return r.load
	}, nil)

	head("steady state: agents with informers (a LIST, then a watch each), nothing storming")
	row("length", func(r *prodResult) string { return fmt.Sprintf("%.0f s", r.steady.length().Seconds()) }, nil)
	row("HerdStampedeRisk pending / firing (from the informers' start)", func(r *prodResult) string {
		return since(r.steady.start, r.guard.Pending) + " / " + since(r.steady.start, r.guard.Firing)
	}, nil)
	row("protect's decision", func(r *prodResult) string {
		if r.guard.Decided.IsZero() {
			return "none" + failuresOf(r.guard)
		}
		return fmt.Sprintf("%s at %s, %.1f s after the alert fired", r.guard.Decision.Result, since(r.steady.start, r.guard.Decided), r.guard.Decided.Sub(r.guard.Firing).Seconds())
	}, nil)
	row("the storm's LISTs run in priority level", func(r *prodResult) string { return r.level }, nil)
	row("forecast before wave 1: predicted peak / budget (shape)", func(r *prodResult) string {
		f := r.forecast
		return fmt.Sprintf("%s / %s (%s)", mib(int64(f.peak)), mib(int64(f.budget)), orDash(f.shape))
	}, nil)
	row("forecast: growth, LISTs at once now, safe at once, list bytes, seats per LIST", func(r *prodResult) string {
		f := r.forecast
		return fmt.Sprintf("+%s, %g, %g, %.1f MB, %g", mib(int64(f.growth)), f.concurrency, f.safe, f.listBytes/1e6, f.listSeats)
	}, nil)

	head(fmt.Sprintf("rolling restart: each agent restarts and relists once, one every %v, nothing storming", o.restartStagger))
	row("the agents' LIST p50 / p99 (max)", func(r *prodResult) string {
		return lat(drill.Summarize(r.restartLists, time.Time{}, time.Time{}))
	}, func() string {
		a, b := drill.Summarize(p.restartLists, time.Time{}, time.Time{}), drill.Summarize(u.restartLists, time.Time{}, time.Time{})
		return fmt.Sprintf("p99 %.2f guarded/unguarded", float64(a.P99)/float64(max(1, b.P99)))
	})
	row("LISTs, not 2xx", func(r *prodResult) string {
		s := drill.Summarize(r.restartLists, time.Time{}, time.Time{})
		return fmt.Sprintf("%d, %d", s.Requests, s.Failed)
	}, nil)
	row("scheduler GET p50 / p99", func(r *prodResult) string { return lat(r.schedIn(r.restart)) }, nil)

	stretch := func(sp func(*prodResult) span) {
		row("apiserver RSS peak (over the RSS before the storm)", func(r *prodResult) string {
			s := sp(r)
			return fmt.Sprintf("%s (**+%s** over %s)", mib(r.peak(s)), mib(r.growth(s)), mib(r.rssAt(r.start)))
		}, func() string { return "growth " + times(u.growth(sp(u)), p.growth(sp(p))) + " smaller protected" })
		row("scheduler GET p50 / p99", func(r *prodResult) string { return lat(r.schedIn(sp(r))) },
			func() string {
				return "p99 " + times(int64(u.schedIn(sp(u)).P99), int64(p.schedIn(sp(p)).P99)) + " better protected"
			})
		row("scheduler GETs not 2xx", func(r *prodResult) string {
			s := r.schedIn(sp(r))
			return fmt.Sprintf("%d of %d", s.Failed, s.Requests)
		}, nil)
		row("storm LISTs served (2xx); answers", func(r *prodResult) string {
			s := r.listsIn(sp(r))
			return fmt.Sprintf("%d (%.1f/s); %s", s.OK, float64(s.OK)/sp(r).length().Seconds(), s.CodeList())
		}, func() string {
			return fmt.Sprintf("%.2f protected/unprotected", float64(p.listsIn(sp(p)).OK)/float64(max(1, u.listsIn(sp(u)).OK)))
		})
		row("storm LISTs executing at once in their level: most / mean", func(r *prodResult) string {
			most, mean := r.executing(sp(r))
			return fmt.Sprintf("%d / %.1f (%s)", most, mean, r.level)
		}, nil)
		row("measured k: RSS growth / (list bytes × most LISTs at once)", func(r *prodResult) string {
			return fmt.Sprintf("%.1f", r.k(sp(r), r.forecast.listBytes))
		}, nil)
	}
	wave := func(i int) func(*prodResult) span { return func(r *prodResult) span { return r.waves[i] } }
	head(fmt.Sprintf("wave 1 (%v): every agent relists at once, again and again", o.wave))
	stretch(wave(0))
	row("forecast's predicted peak beside the measured peak (growth)", func(r *prodResult) string {
		return fmt.Sprintf("%s predicted (+%s) · %s measured (+%s)", mib(int64(r.forecast.peak)), mib(int64(r.forecast.growth)), mib(r.peak(r.waves[0])), mib(r.growth(r.waves[0])))
	}, func() string {
		return fmt.Sprintf("unprotected measured/predicted growth %.2f", float64(u.growth(u.waves[0]))/max(1, u.forecast.growth))
	})
	head(fmt.Sprintf("wave 2 (%v, after %v)", o.wave, o.gap))
	stretch(wave(1))
	row("fast path: HerdSynchronizedRelist firing; isolate's decision", func(r *prodResult) string {
		d := "none"
		if !r.fast.Decided.IsZero() {
			d = fmt.Sprintf("%s (%s)", r.fast.Decision.Result, truncated(r.fast.Decision.Reason, 90))
		} else if l := r.fast.Last; l.Result != "" {
			d = fmt.Sprintf("%s: %s", l.Result, truncated(l.Reason, 120))
		}
		return fmt.Sprintf("%s from the informers' start; %s", since(r.steady.start, r.fast.Firing), d)
	}, nil)
	if p != nil && p.guard.Decision.Reason != "" {
		fmt.Fprintf(w, "\nprotect's decision (protected run): %s\n", p.guard.Decision.Reason)
	}
	if u != nil && u.guard.Decision.Reason != "" {
		fmt.Fprintf(w, "\nprotect's decision (unprotected run, dry-run): %s\n", u.guard.Decision.Reason)
	}
}

func unforecastTable(w io.Writer, o options, f *prodResult) {
	fmt.Fprintf(w, "\n| unforecast: protect off (HerdStampedeRisk → none), %d agents appear with the storm (%v), production intervals | |\n|---|---|\n", o.clients, o.unforecastWave)
	fmt.Fprintf(w, "| load average at start | %s |\n", f.load)
	fmt.Fprintf(w, "| HerdSynchronizedRelist pending / firing (from the wave's start); its labels | %s / %s; %s |\n", f.at(f.fast.Pending), f.at(f.fast.Firing), labelList(f.fast.Labels))
	iso := "**never**" + failuresOf(f.fast)
	if !f.fast.Decided.IsZero() {
		iso = fmt.Sprintf("**%s** (%s)", f.at(f.fast.Decided), f.fast.Decision.Result)
	}
	fmt.Fprintf(w, "| isolation applied (from the wave's start; goal ≤ 90 s) | %s |\n", iso)
	if !f.fast.Decided.IsZero() {
		before, after := drill.Summarize(f.sched, f.start, f.fast.Decided), drill.Summarize(f.sched, f.fast.Decided.Add(10*time.Second), f.end)
		fmt.Fprintf(w, "| scheduler GET p99 before / from 10 s after the isolation | %s / %s |\n", secs(before.P99), secs(after.P99))
		fmt.Fprintf(w, "| isolate's decision | %s |\n", f.fast.Decision.Reason)
	}
	s := f.listsIn(f.whole())
	fmt.Fprintf(w, "| apiserver RSS start → peak; storm LISTs served | %s → %s (+%s); %d, %s |\n", mib(f.rssAt(f.start)), mib(f.peak(f.whole())), mib(f.growth(f.whole())), s.OK, s.CodeList())
}

func kubeletProdTable(w io.Writer, o options, k *prodResult) {
	sched, lists := k.schedIn(k.whole()), k.listsIn(k.whole())
	fmt.Fprintf(w, "\n| kubelet storm: %d kubelets LIST their own pods (fieldSelector spec.nodeName, consistent) in a closed loop for %v, herd acting | |\n|---|---|\n", o.kubelets, k.whole().length().Round(time.Second))
	fmt.Fprintf(w, "| load average at start | %s |\n", k.load)
	fmt.Fprintf(w, "| apiserver RSS start → peak | %s → %s (+%s) |\n", mib(k.rssAt(k.start)), mib(k.peak(k.whole())), mib(k.growth(k.whole())))
	fmt.Fprintf(w, "| kubelet LISTs served; p50 / p99 | %d (%.0f/s); %s / %s; %s |\n", lists.OK, float64(lists.OK)/k.whole().length().Seconds(), secs(lists.P50), secs(lists.P99), lists.CodeList())
	fmt.Fprintf(w, "| scheduler GET p50 / p99 | %s / %s |\n", secs(sched.P50), secs(sched.P99))
	alert := "did not fire"
	if !k.fast.Firing.IsZero() {
		alert = fmt.Sprintf("fired at %s; labels %s", k.at(k.fast.Firing), labelList(k.fast.Labels))
	}
	fmt.Fprintf(w, "| HerdSynchronizedRelist (kubelet, pods) | %s |\n", alert)
	risk := "did not fire"
	if !k.guard.Firing.IsZero() {
		risk = fmt.Sprintf("**fired** at %s", k.at(k.guard.Firing))
	}
	fmt.Fprintf(w, "| HerdStampedeRisk (kubelet) | %s |\n", risk)
	fmt.Fprintf(w, "| the responder's decisions about kubelets | %s |\n", kubeletDecisions(k))
}

// kubeletDecisions lists the responder's decisions about the kubelet
// client: none is the goal.
func kubeletDecisions(k *prodResult) string {
	var out []string
	for _, d := range k.decisions {
		if d.Labels["client"] == "kubelet" && d.Action != "triage" {
			out = append(out, fmt.Sprintf("%s %s %s", d.Action, d.Result, d.Target))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return "**" + strings.Join(out, "; ") + "**"
}

// writesTable: every write of the responder, from the apiserver's audit
// log: how many, how long each took, whether it succeeded, and whether it
// landed in a storm.
func writesTable(w io.Writer, o options, rs map[string]*prodResult) {
	fmt.Fprintf(w, "\n| the responder's writes (audit log; Lease and Events aside) | count | during the storm | apiserver latency p50 / max | answers | dry-run requests / others |\n|---|---|---|---|---|---|\n")
	for _, name := range o.runs {
		r := rs[name]
		var lat []time.Duration
		codes := map[int]int{}
		inStorm, dry, other := 0, 0, 0
		for _, wr := range r.writes {
			if wr.Bookkeeping() {
				continue
			}
			if wr.DryRun() {
				dry++
			} else {
				other++
			}
			lat = append(lat, wr.Latency())
			codes[wr.Code()]++
			for _, wv := range r.waves {
				if !wr.RequestReceived.Before(wv.start) && wr.RequestReceived.Before(wv.end) {
					inStorm++
				}
			}
		}
		slices.Sort(lat)
		l := "—"
		if len(lat) > 0 {
			l = fmt.Sprintf("%s / %s", secs(lat[len(lat)/2]), secs(lat[len(lat)-1]))
		}
		var cs []string
		for c, n := range codes {
			cs = append(cs, fmt.Sprintf("%d×%d", c, n))
		}
		slices.Sort(cs)
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %d / %d |\n", name, dry+other, inStorm, l, orDash(strings.Join(cs, " ")), dry, other)
		for _, wr := range r.writes {
			if !wr.Bookkeeping() {
				fmt.Fprintf(w, "| | %s %s | %s | %s | %d | |\n", wr.Verb, objectOf(wr), stormPhase(r, wr.RequestReceived), secs(wr.Latency()), wr.Code())
			}
		}
	}
}

func objectOf(wr stack.AuditWrite) string {
	if wr.ObjectRef == nil {
		return wr.RequestURI
	}
	s := wr.ObjectRef.Resource + "/" + wr.ObjectRef.Name
	if wr.DryRun() {
		s += " (dryRun=All)"
	}
	return s
}

func stormPhase(r *prodResult, t time.Time) string {
	for i, wv := range r.waves {
		if !t.Before(wv.start) && t.Before(wv.end) {
			return fmt.Sprintf("wave %d +%.0f s", i+1, t.Sub(wv.start).Seconds())
		}
	}
	if !r.start.IsZero() {
		return fmt.Sprintf("%+.0f s from the storm", t.Sub(r.start).Seconds())
	}
	return ""
}

func prodGoals(w io.Writer, p, u, f, k *prodResult) {
	g := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}
	fmt.Fprintf(w, "\n**Goals (issue 12, SPEC §7), protected against unprotected:**\n\n")
	applied := !p.guard.Decided.IsZero() && p.guard.Decision.Result == "applied" && p.guard.Decided.Before(p.waves[0].start)
	fmt.Fprintf(w, "- HerdStampedeRisk fires in the steady state and the guard is applied before wave 1: %s.\n", g(!p.guard.Firing.IsZero() && applied))
	gp, gu := p.growth(p.waves[0]), u.growth(u.waves[0])
	fmt.Fprintf(w, "- wave 1 apiserver RSS growth ≥ 5× smaller: %s — %s.\n", times(gu, gp), g(gu >= 5*gp))
	sp, su := p.schedIn(p.waves[0]), u.schedIn(u.waves[0])
	fmt.Fprintf(w, "- wave 1 kube-scheduler GET p99 < 1 s and ≥ 5× better: %s, %s — %s.\n", secs(sp.P99), times(int64(su.P99), int64(sp.P99)), g(sp.P99 < time.Second && su.P99 >= 5*sp.P99))
	served := float64(p.listsIn(p.waves[0]).OK) / float64(max(1, u.listsIn(u.waves[0]).OK))
	fmt.Fprintf(w, "- wave 1 storm LISTs served within 20%%: %.2f — %s.\n", served, g(served >= 0.8 && served <= 1.2))
	rp, ru := drill.Summarize(p.restartLists, time.Time{}, time.Time{}), drill.Summarize(u.restartLists, time.Time{}, time.Time{})
	rr := float64(rp.P99) / float64(max(1, ru.P99))
	fmt.Fprintf(w, "- rolling restart, nothing storming: the guarded agents' LIST p99 within 10%% of unguarded: %s vs %s (%.2f) — %s.\n", secs(rp.P99), secs(ru.P99), rr, g(rr <= 1.1))
	pr := float64(gu) / max(1, u.forecast.growth)
	fmt.Fprintf(w, "- the forecast's growth beside the measured unprotected wave-1 growth: +%s predicted, +%s measured (%.2f) — goal within 2×: %s.\n",
		mib(int64(u.forecast.growth)), mib(gu), pr, g(pr >= 0.5 && pr <= 2))
	if f != nil {
		ok := !f.fast.Decided.IsZero() && f.fast.Decision.Result == "applied" && f.fast.Decided.Sub(f.start) <= 90*time.Second
		fmt.Fprintf(w, "- an unforecast storm isolated ≤ 90 s after it starts: %s — %s.\n", f.at(f.fast.Decided), g(ok))
	}
	if k != nil {
		fmt.Fprintf(w, "- a cheap kubelet storm is not acted on: decisions %s, HerdStampedeRisk %s — %s.\n", kubeletDecisions(k), firedOrNot(k.guard), g(kubeletDecisions(k) == "none" && k.guard.Firing.IsZero()))
	}
	mut := 0
	for _, wr := range u.writes {
		if wr.Mutated() {
			mut++
		}
	}
	fmt.Fprintf(w, "- dry run: no mutating request from herd's service account (audit log): %d — %s.\n", mut, g(mut == 0))
	for _, r := range []*prodResult{p, f} {
		if r == nil {
			continue
		}
		bad := 0
		for _, wr := range r.writes {
			if !wr.Bookkeeping() && (wr.Code() < 200 || wr.Code() >= 300) {
				bad++
			}
		}
		fmt.Fprintf(w, "- %s run: every write one request that succeeds: %d not 2xx — %s.\n", r.name, bad, g(bad == 0))
	}
}

func firedOrNot(r drill.Response) string {
	if r.Firing.IsZero() {
		return "did not fire"
	}
	return "fired"
}

func since(from, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("+%.0f s", t.Sub(from).Seconds())
}

func failuresOf(r drill.Response) string {
	if n := len(r.Failures); n > 0 {
		f := r.Failures[n-1]
		return fmt.Sprintf(" (%d %s, the last: %s %s)", n, f.Result, truncated(f.Reason, 120), f.Error)
	}
	return ""
}

func labelList(l map[string]string) string {
	var out []string
	for k, v := range l {
		if k != "alertname" && k != "severity" {
			out = append(out, k+"="+v)
		}
	}
	slices.Sort(out)
	return orDash(strings.Join(out, ", "))
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func truncated(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
