package accounting

import (
	"strconv"
	"testing"
	"time"
)

// revisions is a RevisionSource a test drives: start begins a read (its
// ticket), done completes it with the revision the cluster had then.
type revisions struct {
	judgeGhosts
	ticket uint64
	proven bool
	proof  [2]uint64 // ticket, revision
}

func (r *revisions) RevisionTicket() uint64 { return r.ticket }
func (r *revisions) ProvenRevision() (uint64, uint64, bool) {
	return r.proof[0], r.proof[1], r.proven
}

// read runs a whole revision read: it starts after everything accounted so
// far and returns rev.
func (r *revisions) read(rev uint64) {
	r.ticket++
	r.proven, r.proof = true, [2]uint64{r.ticket, rev}
}

func revisionLedger(t *testing.T, mod func(*Config)) (*Ledger, *revisions) {
	t.Helper()
	src := &revisions{}
	return ledgerWith(t, src, mod), src
}

// tooLarge sums the snapshot's too-large counts by detected_by.
func tooLarge(s Snapshot) map[string]uint64 {
	out := map[string]uint64{}
	for _, c := range s.TooLarge {
		out[c.Resource+"/"+c.DetectedBy] += c.Value
	}
	return out
}

// A request answered 200 whose resourceVersion is above the cluster's
// revision is too large (SPEC §3.3): a WatchList relist and a plain
// re-watch alike. One at or below it is not, and neither is one that asks
// for any revision ("0", "").
func TestTooLargeWhateverTheStatusCode(t *testing.T) {
	l, src := revisionLedger(t, nil)
	src.read(700) // the cluster's revision before the requests
	for _, e := range []ev{
		{user: kubelet1, verb: "watch", resource: "pods", rv: "99999999", rvMatch: "NotOlderThan", initial: true}, // WatchList relist: 200, error in the stream
		{user: kubelet1, verb: "watch", resource: "configmaps", rv: "2750"},                                       // re-watch after a rewind: 200, nothing
		{user: kubelet1, verb: "watch", resource: "secrets", rv: "735"},                                           // at the revision read below: fine
		{user: kubelet1, verb: "list", resource: "services", rv: "0"},                                             // any revision
		{user: kubelet1, verb: "watch", resource: "nodes", rv: ""},                                                // the newest
		{user: kubelet2, verb: "list", resource: "runtimeclasses", rv: "99999999", code: 504, tooLarge: true},     // said so: counted once, by status
		{user: kubelet2, verb: "watch", resource: "csidrivers", rv: "not-a-number"},                               // not a revision: the apiserver says 400
	} {
		l.Account(e.event())
	}
	// Until a read that started after them completes, nothing is judged
	// (the status one is counted at once).
	if got := tooLarge(l.Snapshot()); len(got) != 1 || got["runtimeclasses/status"] != 1 {
		t.Fatalf("before the next revision read: %v, want only the status one", got)
	}
	src.read(735)
	got := tooLarge(l.Snapshot())
	want := map[string]uint64{"pods/revision": 1, "configmaps/revision": 1, "runtimeclasses/status": 1}
	if len(got) != len(want) {
		t.Errorf("too large = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("too large %s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	// They count toward the stale-kubelet verdict and /debug/clients.
	views := l.Clients(ClientFilter{Identity: kubelet1})
	if len(views) != 1 || views[0].WindowTooLarge != 2 {
		t.Fatalf("kubelet 1: %+v, want 2 too-large requests in the window", views)
	}
	s := l.Snapshot()
	if s.StaleTotal != 0 {
		t.Errorf("stale kubelets = %d with 2 too-large requests (threshold 3)", s.StaleTotal)
	}
	src.ticket++ // a read starts, then the kubelet re-watches
	l.Account(ev{user: kubelet1, verb: "watch", resource: "secrets", rv: "2750", at: time.Second}.event())
	src.proof = [2]uint64{src.ticket, 740}
	if got := l.Clients(ClientFilter{Identity: kubelet1})[0].WindowTooLarge; got != 2 {
		t.Errorf("a read that started before the request judged it: %d too-large requests, want 2", got)
	}
	src.read(745)
	if s := l.Snapshot(); s.StaleTotal != 1 || len(s.Stale) != 1 || s.Stale[0].Node != "node-1" || s.Stale[0].Reason != ReasonTooLargeRV {
		t.Errorf("stale = %+v (%d), want node-1 too_large_resource_version", s.Stale, s.StaleTotal)
	}
}

// A healthy client never holds a resourceVersion above a revision read
// that started after herd received its request, however far herd's own
// informers lag: here every request asks for a revision the cluster had
// reached (the revision grows by one per request) and reads come at random
// points, each started after the requests it judges. None is too large.
func TestHealthyClientsAreNeverTooLarge(t *testing.T) {
	l, src := revisionLedger(t, nil)
	cluster := uint64(1000)
	for i := range 5000 {
		cluster++ // a write: the revision a client may now hold
		l.Account(ev{user: kubelet1, verb: "watch", resource: "configmaps", rv: strconv.FormatUint(cluster, 10), at: time.Duration(i) * time.Millisecond}.event())
		if i%37 == 0 {
			src.read(cluster) // a read started after the request: at least its revision
		}
	}
	src.read(cluster)
	if got := tooLarge(l.Snapshot()); len(got) != 0 {
		t.Errorf("healthy requests counted too large: %v", got)
	}
}

// Events (kept in their own etcd by many clusters) have their own
// resourceVersions: never compared.
func TestSeparateStorageIsNotCompared(t *testing.T) {
	l, src := revisionLedger(t, nil)
	l.Account(ev{user: kubelet1, verb: "watch", resource: "events", rv: "99999999"}.event())
	l.Account(ev{user: kubelet1, verb: "watch", resource: "events", group: "events.k8s.io", rv: "99999999"}.event())
	l.Account(ev{user: kubelet1, verb: "watch", resource: "leases", group: "coordination.k8s.io", rv: "99999999"}.event())
	src.read(10)
	if got := tooLarge(l.Snapshot()); len(got) != 1 || got["leases.coordination.k8s.io/revision"] != 1 {
		t.Errorf("too large = %v, want only the Lease watch", got)
	}
}

// The queue is bounded: past MaxPendingRevisionChecks requests go
// unchecked, and are counted.
func TestPendingRevisionChecksAreBounded(t *testing.T) {
	l, src := revisionLedger(t, func(c *Config) { c.MaxPendingRevisionChecks = 100 })
	for i := range 250 {
		l.Account(ev{user: kubelet1, verb: "watch", resource: "pods", rv: "5000", at: time.Duration(i) * time.Millisecond}.event())
	}
	if s := l.Snapshot(); s.RevisionChecksDropped != 150 {
		t.Errorf("dropped = %d, want 150", s.RevisionChecksDropped)
	}
	src.read(10)
	if got := tooLarge(l.Snapshot()); got["pods/revision"] != 100 {
		t.Errorf("too large = %v, want the 100 that were checked", got)
	}
	// The queue is empty again and takes new checks.
	l.Account(ev{user: kubelet1, verb: "watch", resource: "pods", rv: "5000", at: time.Second}.event())
	src.read(10)
	if got := tooLarge(l.Snapshot()); got["pods/revision"] != 101 {
		t.Errorf("too large = %v, want 101", got)
	}
	ring := 0
	for i := range l.shards {
		ring += len(l.shards[i].revs.ring)
	}
	if ring > 100 {
		t.Errorf("queues grew to %d entries, bound 100", ring)
	}
}

// Without a revision source (--no-kube, herd analyze) only the apiserver's
// answer counts, and nothing waits.
func TestNoRevisionSource(t *testing.T) {
	l := newLedger(t, nil)
	l.Account(ev{user: kubelet1, verb: "watch", resource: "pods", rv: "99999999"}.event())
	if n := l.revPending.Load(); n != 0 || len(tooLarge(l.Snapshot())) != 0 {
		t.Errorf("queued %d, too large %v: want nothing without a revision source", n, tooLarge(l.Snapshot()))
	}
}

func TestParseResourceVersion(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "1": 1, "191700552": 191700552, "18446744073709551615": 1<<64 - 1} {
		if got, ok := parseResourceVersion([]byte(in)); !ok || got != want {
			t.Errorf("parseResourceVersion(%q) = %d %v, want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "-1", "1e9", "12a", "18446744073709551616", "99999999999999999999", "123456789012345678901"} {
		if got, ok := parseResourceVersion([]byte(in)); ok {
			t.Errorf("parseResourceVersion(%q) = %d, want not a revision", in, got)
		}
	}
}

func FuzzParseResourceVersion(f *testing.F) {
	for _, s := range []string{"0", "735", "18446744073709551615", "18446744073709551616", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseResourceVersion([]byte(s))
		want, err := strconv.ParseUint(s, 10, 64)
		if ok != (err == nil) || ok && got != want {
			t.Errorf("parseResourceVersion(%q) = %d %v, strconv says %d %v", s, got, ok, want, err)
		}
	})
}

// Accounting a request with a resourceVersion allocates nothing once the
// queue has grown.
func TestRevisionCheckDoesNotAllocate(t *testing.T) {
	l, src := revisionLedger(t, nil)
	e := ev{user: kubelet1, verb: "watch", resource: "pods", rv: "5000"}.event()
	for range 100 {
		l.Account(e)
	}
	src.read(10000)
	allocs := testing.AllocsPerRun(1000, func() {
		l.Account(e)
		src.read(10000)
	})
	if allocs != 0 {
		t.Errorf("Account with a revision check allocates %.1f times, want 0", allocs)
	}
}
