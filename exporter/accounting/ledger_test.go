package accounting

import (
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
)

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

// ev builds the event a request produces at the stage herd counts it.
type ev struct {
	user, ua, verb, resource, group, ip string
	rv, rvMatch, fieldNode              string
	cont, initial, tooLarge             bool
	code                                int32
	stage                               audit.Stage
	at                                  time.Duration
}

func (e ev) event() *audit.Event {
	stage := e.stage
	if stage == 0 {
		stage = audit.StageResponseComplete
		if e.verb == "watch" {
			stage = audit.StageResponseStarted
		}
	}
	code := e.code
	if code == 0 {
		code = 200
	}
	return &audit.Event{
		AuditID: []byte("id"), Stage: stage, Verb: []byte(e.verb), User: []byte(e.user), UserAgent: []byte(e.ua),
		SourceIP: []byte(e.ip), Resource: []byte(e.resource), APIGroup: []byte(e.group), Code: code,
		TooLargeResourceVersion: e.tooLarge, StageTimestampNanos: t0.Add(e.at).UnixNano(),
		Query: audit.Query{ResourceVersion: []byte(e.rv), ResourceVersionMatch: []byte(e.rvMatch), Continue: e.cont,
			SendInitialEvents: e.initial, FieldSelectorNode: []byte(e.fieldNode)},
	}
}

// newLedger is a ledger with the default configuration, changed by mod,
// whose clock stands one minute after t0 (ledgerWith, without a resolver).
func newLedger(t *testing.T, mod func(*Config)) *Ledger {
	t.Helper()
	return ledgerWith(t, nil, mod)
}

const (
	kubelet1 = "system:node:node-1"
	kubelet2 = "system:node:node-2"
	kubeUA   = "kubelet/v1.36.3 (linux/amd64) kubernetes/abc"
	cilium   = "system:serviceaccount:kube-system:cilium"
	ciliumUA = "cilium-agent/1.18.0"
)

func TestRelistsPagesAndWatches(t *testing.T) {
	l := newLedger(t, nil)
	for _, e := range []ev{
		{user: kubelet1, ua: kubeUA, verb: "list", resource: "pods", rv: "0"},                                       // cache relist
		{user: kubelet1, ua: kubeUA, verb: "list", resource: "pods", rv: ""},                                        // consistent relist
		{user: kubelet1, ua: kubeUA, verb: "list", resource: "pods", rv: "15", rvMatch: "Exact"},                    // exact relist
		{user: kubelet1, ua: kubeUA, verb: "list", resource: "pods", rv: "15", rvMatch: "NotOlderThan"},             // cache relist
		{user: kubelet1, ua: kubeUA, verb: "list", resource: "pods", cont: true},                                    // a page
		{user: kubelet1, ua: kubeUA, verb: "watch", resource: "pods", rv: "20"},                                     // plain re-watch
		{user: kubelet1, ua: kubeUA, verb: "watch", resource: "pods", initial: true, rvMatch: "NotOlderThan"},       // streaming relist
		{user: kubelet1, ua: kubeUA, verb: "watch", resource: "pods", rv: "20", stage: audit.StageResponseComplete}, // watch end: not counted again
		{user: kubelet1, ua: kubeUA, verb: "list", resource: "pods", rv: "0", stage: audit.StageResponseStarted},    // a list never counts at ResponseStarted
		{user: cilium, ua: ciliumUA, verb: "list", resource: "endpointslices", group: "discovery.k8s.io"},
	} {
		l.Account(e.event())
	}
	s := l.Snapshot()
	relists := map[string]uint64{}
	for _, r := range s.Relists {
		relists[r.Role+"/"+r.Client+"/"+r.Resource+"/"+r.Consistency] = r.Value
	}
	want := map[string]uint64{
		"kubelet/kubelet/pods/cache":                                  2,
		"kubelet/kubelet/pods/consistent":                             2, // the rv="" list and the WatchList
		"kubelet/kubelet/pods/exact":                                  1,
		"cni/cilium-agent/endpointslices.discovery.k8s.io/consistent": 1,
	}
	if len(relists) != len(want) {
		t.Errorf("relists = %v, want %v", relists, want)
	}
	for k, v := range want {
		if relists[k] != v {
			t.Errorf("relists[%s] = %d, want %d", k, relists[k], v)
		}
	}
	if len(s.Pages) != 1 || s.Pages[0].Value != 1 || s.Pages[0].Resource != "pods" {
		t.Errorf("pages = %+v, want one page of pods", s.Pages)
	}
	requests := map[string]uint64{}
	for _, r := range s.Requests {
		requests[r.Client+"/"+r.Verb] += r.Value
	}
	if requests["kubelet/list"] != 5 || requests["kubelet/watch"] != 2 || requests["cilium-agent/list"] != 1 {
		t.Errorf("requests = %v, want kubelet list 5, watch 2; cilium list 1", requests)
	}
}

func TestWatchFallsBackToResponseComplete(t *testing.T) {
	// A policy that omits ResponseStarted: watches count when they end.
	l := newLedger(t, nil)
	l.Account(ev{user: kubelet1, verb: "watch", resource: "pods", initial: true, stage: audit.StageResponseComplete}.event())
	s := l.Snapshot()
	if len(s.Relists) != 1 || s.Relists[0].Value != 1 {
		t.Fatalf("relists = %+v, want 1 streaming relist counted at ResponseComplete", s.Relists)
	}
}

func TestWindowedSignals(t *testing.T) {
	l := newLedger(t, func(c *Config) { c.RelistThreshold, c.TopK = 3, 2 })
	// node-1 relists pods 5 times in the last minute, node-2 twice, node-3 once
	// long ago (outside the window); cilium on node-3's IP once.
	for i := 0; i < 5; i++ {
		l.Account(ev{user: kubelet1, verb: "list", resource: "pods", at: time.Duration(i) * time.Second}.event())
	}
	for i := 0; i < 2; i++ {
		l.Account(ev{user: kubelet2, verb: "list", resource: "pods", at: time.Duration(i) * time.Second}.event())
	}
	l.Account(ev{user: "system:node:node-3", verb: "list", resource: "pods", at: -30 * time.Minute}.event())
	l.Account(ev{user: kubelet1, verb: "create", resource: "tokenreviews", group: "authentication.k8s.io", code: 201}.event())
	l.Account(ev{user: kubelet2, verb: "create", resource: "tokenreviews", group: "authentication.k8s.io", code: 201, at: -20 * time.Minute}.event())

	s := l.Snapshot()
	if len(s.RelistingInstances) != 1 || s.RelistingInstances[0].Value != 1 {
		t.Errorf("relisting instances = %+v, want 1 (node-1 only)", s.RelistingInstances)
	}
	if len(s.TopInstances) != 2 || s.TopInstances[0].Node != "node-1" || s.TopInstances[0].Relists != 5 ||
		s.TopInstances[1].Node != "node-2" || s.TopInstances[1].Relists != 2 {
		t.Errorf("top instances = %+v, want node-1 (5), node-2 (2)", s.TopInstances)
	}
	if s.TokenReviewNodes != 1 {
		t.Errorf("token review nodes = %d, want 1 (node-2's was outside the window)", s.TokenReviewNodes)
	}
	var tr uint64
	for _, c := range s.TokenReviews {
		tr += c.Value
	}
	if tr != 2 {
		t.Errorf("tokenreviews total = %d, want 2 (counters are not windowed)", tr)
	}
	// Later: the window has passed, the gauge reads 0 but does not vanish.
	l.now = func() time.Time { return t0.Add(30 * time.Minute) }
	s = l.Snapshot()
	if len(s.RelistingInstances) != 1 || s.RelistingInstances[0].Value != 0 || len(s.TopInstances) != 0 {
		t.Errorf("after the window: relisting %+v, top %+v; want one zero gauge and no top instances", s.RelistingInstances, s.TopInstances)
	}
}

func TestIntervalsAndTooLarge(t *testing.T) {
	l := newLedger(t, nil)
	for _, at := range []time.Duration{0, 3 * time.Second, 10 * time.Second} {
		l.Account(ev{user: kubelet1, verb: "list", resource: "runtimeclasses", group: "node.k8s.io", rv: "191700552", code: 504, tooLarge: true, at: at}.event())
	}
	s := l.Snapshot()
	if len(s.Intervals) != 1 || s.Intervals[0].Count != 2 || s.Intervals[0].Sum != 10 || s.Intervals[0].Buckets[5] != 1 || s.Intervals[0].Buckets[15] != 2 {
		t.Errorf("intervals = %+v, want 2 observations (3 s, 7 s)", s.Intervals)
	}
	if len(s.TooLarge) != 1 || s.TooLarge[0].Value != 3 || s.TooLarge[0].Resource != "runtimeclasses.node.k8s.io" {
		t.Errorf("too large = %+v, want 3 on runtimeclasses.node.k8s.io", s.TooLarge)
	}
}

func TestBounds(t *testing.T) {
	l := newLedger(t, func(c *Config) { c.MaxInstances, c.MaxResources = 100, 10 })
	for i := 0; i < 1000; i++ {
		name := []byte{'n', byte('a' + i%26), byte('a' + i/26%26), byte('a' + i/676)}
		l.Account(ev{user: "system:node:" + string(name), verb: "list", resource: "r" + string(name), at: time.Duration(i) * time.Millisecond}.event())
	}
	s := l.Snapshot()
	if s.Instances > 100 {
		t.Errorf("instances = %d, bound 100", s.Instances)
	}
	if s.Evicted < 900 {
		t.Errorf("evicted = %d, want at least 900", s.Evicted)
	}
	resources := map[string]bool{}
	for _, r := range s.Relists {
		resources[r.Resource] = true
	}
	if len(resources) > 10 || !resources["other"] {
		t.Errorf("resources = %d values (other present: %v), bound 10", len(resources), resources["other"])
	}
}

func TestAccountDoesNotAllocateForKnownInstances(t *testing.T) {
	l := newLedger(t, nil)
	e := ev{user: cilium, ua: ciliumUA, verb: "list", resource: "pods", rv: "0", ip: "10.0.0.1"}.event()
	l.Account(e)
	allocs := testing.AllocsPerRun(1000, func() { l.Account(e) })
	if allocs != 0 {
		t.Errorf("Account allocates %.1f times per known event, want 0", allocs)
	}
}

func TestWatchCountsOnceWhicheverStageComesFirst(t *testing.T) {
	l := newLedger(t, nil)
	deliver := func(id string, stage audit.Stage) {
		e := ev{user: kubelet1, verb: "watch", resource: "pods", rv: "5", stage: stage}.event()
		e.AuditID = []byte(id)
		e.RequestReceived = []byte("2026-11-23T08:00:00.000001Z") // the same request at both stages
		l.Account(e)
	}
	watches := func() (n uint64) {
		for _, r := range l.Snapshot().Requests {
			if r.Verb == "watch" {
				n += r.Value
			}
		}
		return n
	}
	deliver("a", audit.StageResponseComplete) // arrives first, no start seen yet: counted
	deliver("a", audit.StageResponseStarted)  // its start, later: not again
	deliver("b", audit.StageResponseStarted)  // the usual order: counted at start
	deliver("b", audit.StageResponseComplete)
	deliver("c", audit.StageResponseComplete) // a watch whose start herd never saw, after starts were seen: not counted
	if n := watches(); n != 2 {
		t.Errorf("watches counted = %d, want 2 (a and b once each)", n)
	}
	// Once starts are known, a watch whose ResponseComplete overtakes its
	// ResponseStarted (another batch, another replica) counts at the start:
	// once, not zero times.
	deliver("d", audit.StageResponseComplete)
	if n := watches(); n != 2 {
		t.Errorf("after d's ResponseComplete: %d watches, want 2 (d counts at its start)", n)
	}
	deliver("d", audit.StageResponseStarted)
	if n := watches(); n != 3 {
		t.Errorf("after d's ResponseStarted: %d watches, want 3", n)
	}
}

// A client may send one Audit-ID on every request: a watch counted at
// ResponseComplete (no start seen yet) does not hide the next request's
// ResponseStarted under the same auditID.
func TestWatchStagesOfReusedAuditID(t *testing.T) {
	l := newLedger(t, nil)
	e := ev{user: kubelet1, verb: "watch", resource: "pods", rv: "5", stage: audit.StageResponseComplete}.event()
	e.AuditID, e.RequestReceived = []byte("constant"), []byte("2026-11-23T08:00:00.000001Z")
	l.Account(e)
	e.Stage, e.RequestReceived = audit.StageResponseStarted, []byte("2026-11-23T08:00:01.000001Z")
	l.Account(e)
	var n uint64
	for _, r := range l.Snapshot().Requests {
		if r.Verb == "watch" {
			n += r.Value
		}
	}
	if n != 2 {
		t.Errorf("watches counted = %d, want 2 (two requests)", n)
	}
}

func TestTimestampsBefore1970(t *testing.T) {
	l := newLedger(t, nil)
	e := ev{user: kubelet1, verb: "list", resource: "pods"}.event()
	e.StageTimestampNanos = -5e18 // 1811: hostile or broken
	l.Account(e)                  // must not panic
	s := l.SnapshotAt(-1)         // a window ending just before 1970 must not panic either
	if len(s.Relists) != 1 {
		t.Errorf("relists = %+v", s.Relists)
	}
	var w window
	w.add(-7, 3)
	if got := w.sum(-7, 3); got != 1 {
		t.Errorf("window before 1970: sum = %d, want 1", got)
	}
}

// Agents that share one identity across nodes (kube-proxy, CNI service
// accounts) change source address on almost every event without a node
// resolver: that must not allocate.
func TestChangingSourceIPDoesNotAllocate(t *testing.T) {
	l := newLedger(t, nil)
	ips := [][]byte{[]byte("10.0.0.1"), []byte("10.0.0.2"), []byte("fd00::1234:5678:9abc:def0")}
	e := ev{user: cilium, ua: ciliumUA, verb: "list", resource: "pods", rv: "0"}.event()
	l.Account(e)
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		e.SourceIP = ips[i%len(ips)]
		i++
		l.Account(e)
	})
	if allocs != 0 {
		t.Errorf("Account allocates %.1f times when the source IP changes, want 0", allocs)
	}
	c := l.Clients(ClientFilter{})
	if len(c) != 1 || c[0].SourceIP != string(ips[(i-1)%len(ips)]) || c[0].SourceIPChanges < 1000 {
		t.Errorf("client view: %+v", c)
	}
}
