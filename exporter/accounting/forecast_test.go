package accounting

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
)

// levels is a Leveler over a fixed table: kubelets are one class, every
// other identity its own; it counts what the snapshot asks.
type levels struct {
	byClass map[string]string // class → level (every resource)
	asked   map[string]int    // class/resource → PriorityLevel calls
}

func (lv *levels) Class(identity string) string {
	if strings.HasPrefix(identity, "system:node:") {
		return "system:node:*"
	}
	return identity
}

func (lv *levels) PriorityLevel(class, resource string) string {
	lv.asked[class+"/"+resource]++
	return lv.byClass[class]
}

func stampedeRows(s Snapshot) []string {
	var out []string
	for _, c := range s.Stampede {
		out = append(out, fmt.Sprintf("%s/%s/%s/%s %s %s %q=%d", c.Role, c.Client, c.Resource, c.Shape, c.Consistency, c.Mode, c.PriorityLevel, c.Value))
	}
	slices.Sort(out)
	return out
}

func subjectRows(s Snapshot) []string {
	var out []string
	for _, c := range s.StampedeSubjects {
		out = append(out, fmt.Sprintf("%s/%s/%s %s=%d", c.Role, c.Client, c.Resource, c.Subject, c.Value))
	}
	slices.Sort(out)
	return out
}

func waveRows(s Snapshot) []string {
	var out []string
	for _, c := range s.Wave {
		out = append(out, fmt.Sprintf("%s/%s/%s/%s %s=%d", c.Role, c.Client, c.Resource, c.Shape, c.Mode, c.Value))
	}
	slices.Sort(out)
	return out
}

func sameRows(t *testing.T, what string, got, want []string) {
	t.Helper()
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n  got  %q\n  want %q", what, got, want)
	}
}

// TestStampedeInstances: who is live on a resource (a watch or a relist in
// the live window), by the shape, consistency and mode of the latest
// relist, and the priority level that serves the LISTs.
func TestStampedeInstances(t *testing.T) {
	lv := &levels{byClass: map[string]string{"system:node:*": "system", cilium: "workload-high"}, asked: map[string]int{}}
	l := newLedger(t, nil)
	l.SetLeveler(lv)
	l.SetClock(func() time.Time { return t0.Add(20 * time.Minute) })
	var evs []ev
	for i := 1; i <= 30; i++ {
		node := fmt.Sprintf("node-%d", i)
		kl := "system:node:" + node
		// Every kubelet re-watches its pods (spec.nodeName: shape node);
		// ten relisted them too, at consistency cache, in the window.
		evs = append(evs, ev{user: kl, ua: kubeUA, verb: "watch", resource: "pods", rv: "10", fieldNode: node, at: 12 * time.Minute})
		if i <= 10 {
			evs = append(evs, ev{user: kl, ua: kubeUA, verb: "list", resource: "pods", rv: "0", fieldNode: node, at: 11 * time.Minute})
		}
		// cilium on every node: unfiltered, consistent LISTs of pods
		// (instances by node through the field selector of their
		// ciliumnodes watch would be wrong: give each its own identity).
		sa := fmt.Sprintf("system:serviceaccount:kube-system:cilium-%d", i)
		if i <= 20 {
			evs = append(evs, ev{user: sa, ua: ciliumUA, verb: "list", resource: "pods", at: 10 * time.Minute})
		} else {
			// Ten relisted with WatchList.
			evs = append(evs, ev{user: sa, ua: ciliumUA, verb: "watch", resource: "pods", initial: true, rvMatch: "NotOlderThan", at: 10 * time.Minute})
		}
	}
	// One cilium SA seen long ago: not live.
	evs = append(evs, ev{user: cilium, ua: ciliumUA, verb: "list", resource: "pods", at: -time.Hour})
	// Pages are not relists: the page's instance is live only by its relist.
	evs = append(evs, ev{user: "system:serviceaccount:kube-system:cilium-1", ua: ciliumUA, verb: "list", resource: "pods", cont: true, at: 10 * time.Minute})
	for _, e := range evs {
		l.Account(e.event())
	}
	lv.byClass["system:serviceaccount:kube-system:cilium-1"] = "workload-high"
	s := l.Snapshot()
	sameRows(t, "herd_stampede_instances", stampedeRows(s), []string{
		`kubelet/kubelet/pods/node cache list "system"=10`,
		`kubelet/kubelet/pods/node unknown unknown "system"=20`,
		`cni/cilium-agent/pods/all consistent list "workload-high"=1`, // cilium-1, whose class has a level
		`cni/cilium-agent/pods/all consistent list ""=19`,
		`cni/cilium-agent/pods/all consistent watchlist ""=10`, // resourceVersion "" with NotOlderThan: consistent
	})
	// Thirty kubelets are one class: the level is asked once per class
	// and resource, not per instance.
	for k, n := range lv.asked {
		if n != 1 {
			t.Errorf("PriorityLevel(%s) asked %d times, want once", k, n)
		}
	}
	// The kubelets' class and 30 cilium identities, all on pods.
	if n := len(lv.asked); n != 31 {
		t.Errorf("PriorityLevel asked for %d class/resource pairs, want 31: %v", n, lv.asked)
	}

	// Twenty minutes without anything: nobody is live any more.
	l.SetClock(func() time.Time { return t0.Add(40 * time.Minute) })
	if s := l.Snapshot(); len(s.Stampede) != 0 || len(s.StampedeSubjects) != 0 {
		t.Errorf("after the live window: %q %q", stampedeRows(s), subjectRows(s))
	}
}

// ciliumFleet is a ledger whose classification also puts every
// kube-system:cilium-N service account in cilium-agent by identity.
func ciliumFleet(t *testing.T, mod func(*Config)) *Ledger {
	t.Helper()
	c, err := classify.New([]classify.Rule{{Role: "cni", Client: "cilium-agent", UsernamePrefix: "system:serviceaccount:kube-system:cilium-"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	mod(&cfg)
	l, err := New(cfg, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.SetClock(func() time.Time { return t0.Add(time.Minute) })
	return l
}

// TestStampedeSubjects: the FlowSchema subjects of the live instances,
// only identities classified by who they are and authenticated, one per
// instance and resource, at most maxSubjects per stream.
func TestStampedeSubjects(t *testing.T) {
	l := ciliumFleet(t, func(c *Config) { c.MaxSubjects = 3 })
	var evs []ev
	for i := 1; i <= 5; i++ {
		node := fmt.Sprintf("node-%d", i)
		evs = append(evs,
			// kubelets: group system:nodes, whatever their node.
			ev{user: "system:node:" + node, ua: kubeUA, verb: "watch", resource: "pods", rv: "1", fieldNode: node},
			// The same kubelet reads pods in a second shape: still one
			// instance of the subject.
			ev{user: "system:node:" + node, ua: kubeUA, verb: "list", resource: "pods", rv: "0"},
			// kube-proxy as a service account on every node.
			ev{user: "system:serviceaccount:kube-system:kube-proxy", ua: "kube-proxy/v1.36.3", verb: "list", resource: "endpointslices", group: "discovery.k8s.io", ip: "10.0.0." + fmt.Sprint(i)},
		)
	}
	evs = append(evs,
		// A user agent alone makes this a cilium-agent: never a subject.
		ev{user: "system:serviceaccount:default:app", ua: ciliumUA, verb: "list", resource: "pods"},
		ev{user: cilium, ua: ciliumUA, verb: "list", resource: "pods"},
		ev{user: "cilium-user", ua: ciliumUA, verb: "list", resource: "pods"},
	)
	for i := 0; i < 4; i++ {
		// Four more service accounts a rule puts in cilium-agent by
		// identity; with maxSubjects 3, three subjects are kept.
		evs = append(evs, ev{user: fmt.Sprintf("system:serviceaccount:kube-system:cilium-%d", i), ua: ciliumUA, verb: "list", resource: "pods"})
	}
	for _, e := range evs {
		l.Account(e.event())
	}
	anon := ev{user: "system:anonymous", ua: ciliumUA, verb: "list", resource: "pods"}.event()
	anon.Unauthenticated = true
	l.Account(anon)
	s := l.Snapshot()
	got := subjectRows(s)
	want := []string{
		"kubelet/kubelet/pods group:system:nodes=5",
		"kube-proxy/kube-proxy/endpointslices.discovery.k8s.io serviceaccount:kube-system:kube-proxy=1",
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("subjects %q lack %q", got, w)
		}
	}
	var cni []string
	for _, g := range got {
		if strings.HasPrefix(g, "cni/cilium-agent/pods ") {
			cni = append(cni, g)
		}
		if strings.Contains(g, "default:app") || strings.Contains(g, "anonymous") || strings.Contains(g, "unauthenticated") {
			t.Errorf("subject %q: classified by user agent, or unauthenticated", g)
		}
	}
	if len(cni) != 3 {
		t.Errorf("cilium subjects %q: want maxSubjects = 3", cni)
	}
	if !slices.Contains(cni, "cni/cilium-agent/pods serviceaccount:kube-system:cilium-0=1") || !slices.Contains(cni, "cni/cilium-agent/pods serviceaccount:kube-system:cilium=1") {
		t.Errorf("cilium subjects %q: ties are broken by subject name", cni)
	}
}

// TestRelistWave: instances whose relist started (RequestReceived of a
// LIST) or completed in the wave window. A start marks only a stream that
// already relisted: it is not authorized yet.
func TestRelistWave(t *testing.T) {
	l := newLedger(t, func(c *Config) { c.WaveWindow = 60 * 1e9 })
	clock := t0.Add(10 * time.Minute)
	l.SetClock(func() time.Time { return clock })
	for i := 1; i <= 20; i++ {
		sa := fmt.Sprintf("system:serviceaccount:kube-system:cilium-%d", i)
		l.Account(ev{user: sa, ua: ciliumUA, verb: "list", resource: "pods", at: time.Minute}.event())
	}
	if w := waveRows(l.Snapshot()); len(w) != 0 {
		t.Errorf("nine minutes later, no wave: %q", w)
	}
	start := func(user string, at time.Duration, mod func(*audit.Event)) {
		e := ev{user: user, ua: ciliumUA, verb: "list", resource: "pods", stage: audit.StageRequestReceived, at: at}.event()
		e.Code = 0 // no response yet
		if mod != nil {
			mod(e)
		}
		l.Account(e)
	}
	// Fifteen start relisting at 9m40s; five of them completed at 9m50s.
	for i := 1; i <= 15; i++ {
		start(fmt.Sprintf("system:serviceaccount:kube-system:cilium-%d", i), 9*time.Minute+40*time.Second, nil)
	}
	for i := 1; i <= 5; i++ {
		l.Account(ev{user: fmt.Sprintf("system:serviceaccount:kube-system:cilium-%d", i), ua: ciliumUA, verb: "list", resource: "pods", at: 9*time.Minute + 50*time.Second}.event())
	}
	// Starts that mark nothing: a page, an unknown instance, an
	// unauthenticated request, a resource no relist proved, a stream in
	// another shape.
	start("system:serviceaccount:kube-system:cilium-16", 9*time.Minute+40*time.Second, func(e *audit.Event) { e.Query.Continue = true })
	start("system:serviceaccount:kube-system:intruder", 9*time.Minute+40*time.Second, nil)
	start("system:anonymous", 9*time.Minute+40*time.Second, func(e *audit.Event) { e.Unauthenticated = true })
	start("system:serviceaccount:kube-system:cilium-17", 9*time.Minute+40*time.Second, func(e *audit.Event) { e.Resource = []byte("secrets") })
	start("system:serviceaccount:kube-system:cilium-18", 9*time.Minute+40*time.Second, func(e *audit.Event) { e.Query.LabelSelector = true })
	s := l.Snapshot()
	sameRows(t, "herd_relist_wave_instances", waveRows(s), []string{"cni/cilium-agent/pods/all list=15"})
	for _, r := range s.Relists {
		if r.Resource == "pods" && r.Value != 25 {
			t.Errorf("relists %+v: a start is not a relist (want 20 + 5)", r)
		}
	}
	for _, r := range s.Requests {
		if r.Value > 25 {
			t.Errorf("requests %+v: a start is not a request", r)
		}
	}
	// A minute later the wave is over.
	clock = clock.Add(time.Minute)
	if w := waveRows(l.Snapshot()); len(w) != 0 {
		t.Errorf("after the wave window: %q", w)
	}
}

// TestStampedeSeriesAreBounded: each forecast family is capped by
// maxStampedeSeries, the most instances first.
func TestStampedeSeriesAreBounded(t *testing.T) {
	l := ciliumFleet(t, func(c *Config) { c.MaxStampedeSeries = 4 })
	for r := 0; r < 10; r++ {
		for i := 0; i <= r; i++ {
			sa := fmt.Sprintf("system:serviceaccount:kube-system:cilium-%d", i)
			l.Account(ev{user: sa, ua: ciliumUA, verb: "list", resource: fmt.Sprintf("r%d", r), at: 50 * time.Second}.event())
		}
	}
	s := l.Snapshot()
	if len(s.Stampede) != 4 || len(s.Wave) != 4 || len(s.StampedeSubjects) != 4 {
		t.Fatalf("series: %d instances, %d wave, %d subjects; want 4 each", len(s.Stampede), len(s.Wave), len(s.StampedeSubjects))
	}
	for _, c := range s.Stampede {
		if c.Value < 7 {
			t.Errorf("kept %+v: the busiest streams (10, 9, 8, 7 instances) should be", c)
		}
	}
}

func TestForecastDoesNotAllocateOnTheHotPath(t *testing.T) {
	l := newLedger(t, nil)
	list := ev{user: cilium, ua: ciliumUA, verb: "list", resource: "pods", rv: "0", ip: "10.0.0.1"}.event()
	watch := ev{user: cilium, ua: ciliumUA, verb: "watch", resource: "pods", rv: "10", ip: "10.0.0.1"}.event()
	start := ev{user: cilium, ua: ciliumUA, verb: "list", resource: "pods", rv: "0", ip: "10.0.0.1", stage: audit.StageRequestReceived}.event()
	grp := ev{user: cilium, ua: ciliumUA, verb: "list", resource: "endpointslices", group: "discovery.k8s.io", ip: "10.0.0.1", stage: audit.StageRequestReceived}.event()
	l.Account(list)
	l.Account(watch)
	l.Account(ev{user: cilium, ua: ciliumUA, verb: "list", resource: "endpointslices", group: "discovery.k8s.io", ip: "10.0.0.1"}.event())
	for name, e := range map[string]*audit.Event{"watch": watch, "list start": start, "list start of a grouped resource": grp} {
		if allocs := testing.AllocsPerRun(1000, func() { l.Account(e) }); allocs != 0 {
			t.Errorf("%s: Account allocates %.1f times, want 0", name, allocs)
		}
	}
}
