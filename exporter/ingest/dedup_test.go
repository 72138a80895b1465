package ingest

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"syscall"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
)

// uuid renders n as a version-4-shaped auditID.
func uuid(n uint64) []byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], n*0x9e3779b97f4a7c15)
	binary.BigEndian.PutUint64(b[8:], n)
	return fmt.Appendf(nil, "%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func TestDedup(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	d := NewDedup(time.Minute, 8) // generations of 4 pairs
	a, b := uuid(1), uuid(2)
	if d.Seen(a, audit.StageResponseComplete, t0) {
		t.Fatal("new pair seen")
	}
	if !d.Seen(a, audit.StageResponseComplete, t0) {
		t.Fatal("re-sent pair not seen")
	}
	if d.Seen(a, audit.StageResponseStarted, t0) {
		t.Fatal("another stage of the same request is a different pair")
	}
	if d.Seen(b, audit.StageResponseComplete, t0) || !d.Seen(b, audit.StageResponseComplete, t0) {
		t.Fatal("second id")
	}
	// Non-UUID ids are hashed, and kept apart from UUIDs.
	if d.Seen([]byte("not-a-uuid"), audit.StageResponseComplete, t0) || !d.Seen([]byte("not-a-uuid"), audit.StageResponseComplete, t0) {
		t.Fatal("non-UUID id")
	}
	// Four more pairs fill the generation: a is then in the previous one,
	// still remembered.
	for i := uint64(10); i < 14; i++ {
		d.Seen(uuid(i), audit.StageResponseComplete, t0)
	}
	// (The first pair started a generation too: a new Dedup's is expired.)
	if r := d.Rotations(); r != 2 || !d.Seen(a, audit.StageResponseComplete, t0) {
		t.Fatalf("after %d rotations a was forgotten", r)
	}
	// After the TTL, two rotations forget everything.
	d.Seen(uuid(20), audit.StageResponseComplete, t0.Add(time.Minute))
	d.Seen(uuid(21), audit.StageResponseComplete, t0.Add(2*time.Minute))
	if d.Seen(b, audit.StageResponseComplete, t0.Add(2*time.Minute)) {
		t.Fatal("pair remembered past two generations")
	}
	// Bounded: never more than max pairs.
	for i := uint64(100); i < 1000; i++ {
		d.Seen(uuid(i), audit.StageResponseComplete, t0.Add(2*time.Minute))
		if n := d.shards[0].cur.n + d.shards[0].prev.n; len(d.shards) != 1 || n > 8 {
			t.Fatalf("%d pairs held, max 8", n)
		}
	}
}

// TestDedupReusedAuditID: a client may set the Audit-ID header, and the
// apiserver then uses it for every request: a new request reusing an ID is
// told from a re-sent event by its requestReceivedTimestamp (issue 16.2).
func TestDedupReusedAuditID(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	d := NewDedup(time.Minute, 1000)
	id := []byte("fixed-audit-id")
	rc, rs := audit.StageResponseComplete, audit.StageResponseStarted
	if d.SeenAt(id, rc, 100, t0) || !d.SeenAt(id, rc, 100, t0) {
		t.Fatal("first request, re-sent")
	}
	if d.SeenAt(id, rc, 200, t0) {
		t.Fatal("a second request with the same auditID is a duplicate")
	}
	if !d.SeenAt(id, rc, 200, t0) || d.SeenAt(id, rc, 300, t0) {
		t.Fatal("second request re-sent; third request")
	}
	// The first request's batch re-sent after the later ones: still a
	// duplicate (each request keeps its own entry).
	if !d.SeenAt(id, rc, 100, t0) {
		t.Fatal("first request re-sent late")
	}
	// Has asks about one request's other stage: another request's stage
	// under the same auditID does not answer.
	if !d.Has(id, rc, 200) || d.Has(id, rs, 200) || d.Has(id, rc, 400) {
		t.Fatal("Has")
	}
	d.SeenAt(id, rs, 400, t0)
	if !d.Has(id, rs, 400) || d.Has(id, rc, 400) {
		t.Fatal("Has after the ResponseStarted of request 400")
	}
	// Eight WatchList relists with one auditID: eight requests.
	n := 0
	for i := uint64(0); i < 8; i++ {
		if !d.SeenAt(id, rs, 1000+i, t0) {
			n++
		}
	}
	if n != 8 {
		t.Fatalf("%d of 8 relists counted", n)
	}
	// Known in the previous generation: still a duplicate; new: new.
	for i := uint64(0); i < 500; i++ {
		d.SeenAt(uuid(i), rc, 1, t0)
	}
	if d.Rotations() < 2 || !d.Has(id, rc, 300) || !d.SeenAt(id, rc, 300, t0) || d.SeenAt(id, rc, 500, t0) {
		t.Fatal("after a rotation")
	}
	// A constant auditID does not build one long probe chain: its
	// requests spread over the table like distinct IDs.
	d2 := NewDedup(time.Hour, 1<<16)
	for i := 0; i < 30000; i++ {
		// Consecutive microseconds, as the apiserver writes them.
		e := audit.Event{RequestReceived: fmt.Appendf(nil, "2026-11-23T08:%02d:%02d.%06dZ", i/1_000_000/60, i/1_000_000%60, i%1_000_000)}
		d2.SeenAt(id, rc, e.RequestKey(), t0)
	}
	longest, run := 0, 0
	for i := range d2.shards[0].cur.size() {
		if s := d2.shards[0].cur.at(i); s == 0 {
			run = 0
			continue
		}
		run++
		longest = max(longest, run)
	}
	if longest > 200 {
		t.Errorf("a constant auditID made a run of %d occupied slots", longest)
	}
}

// TestDedupFull: many more pairs than the bound, no false duplicates, what
// is recent is remembered, and the tables grow (rehashing what they hold)
// only as far as the bound needs.
func TestDedupFull(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	for _, max := range []int{1000, 1 << 16} {
		d := NewDedup(time.Hour, max)
		for i := uint64(0); i < 200_000; i++ {
			if d.SeenAt(uuid(i), audit.StageResponseStarted, uint64(i), t0) {
				t.Fatalf("max %d: pair %d new but seen", max, i)
			}
			if i >= 10 && !d.SeenAt(uuid(i-10), audit.StageResponseStarted, uint64(i-10), t0) {
				t.Fatalf("max %d: pair %d forgotten ten pairs later", max, i-10)
			}
			if i >= 100 && !d.Has(uuid(i-100), audit.StageResponseStarted, uint64(i-100)) {
				t.Fatalf("max %d: pair %d forgotten a hundred pairs later", max, i-100)
			}
			if n := d.shards[0].cur.n + d.shards[0].prev.n; len(d.shards) != 1 || n > max {
				t.Fatalf("max %d: %d pairs held", max, n)
			}
		}
		if r, want := d.Rotations(), uint64(200_000/(max/2)); r < want-1 || r > want+1 {
			t.Errorf("max %d: %d rotations, want about %d", max, r, want)
		}
		if got, want := d.shards[0].cur.size(), 1<<bits.Len(uint(max-1)); got != want {
			t.Errorf("max %d: a generation has %d slots, want %d", max, got, want)
		}
	}
	// herd's default, 1 Mi pairs: two generations of 1 Mi 8-byte slots
	// in all, in 16 shards.
	big := NewDedup(2*time.Minute, 1<<20)
	n := 0
	for i := range big.shards {
		n += big.shards[i].cur.size() + big.shards[i].prev.size()
	}
	if n*8 != 16<<20 || len(big.shards) != maxDedupShards {
		t.Errorf("1 Mi pairs take %d bytes of slots in %d shards, want 16 MiB in %d", n*8, len(big.shards), maxDedupShards)
	}
}

// TestDedupSharded: herd's default size is split into shards; each keeps
// the rule of one table (what is recent is remembered, never more than the
// bound held), and Rotations counts generations as one table would.
func TestDedupSharded(t *testing.T) {
	if testing.Short() {
		t.Skip("two million pairs")
	}
	const max = 1 << 20
	d := NewDedup(time.Hour, max)
	if len(d.shards) != maxDedupShards {
		t.Fatalf("%d shards, want %d", len(d.shards), maxDedupShards)
	}
	t0 := time.Now()
	const total = 2_000_000
	for i := uint64(0); i < total; i++ {
		if d.SeenAt(uuid(i), audit.StageResponseComplete, i+1, t0) {
			t.Fatalf("pair %d new but seen", i)
		}
		if i >= 1000 && !d.Has(uuid(i-1000), audit.StageResponseComplete, i-999) {
			t.Fatalf("pair %d forgotten a thousand pairs later", i-1000)
		}
	}
	held := 0
	for i := range d.shards {
		held += d.shards[i].cur.n + d.shards[i].prev.n
	}
	if held > max || held < max/2 {
		t.Errorf("%d pairs held, want between %d and %d", held, max/2, max)
	}
	if r, want := d.Rotations(), uint64(total/(max/2)); r < want-1 || r > want+1 {
		t.Errorf("%d rotations, want about %d", r, want)
	}
}

// TestDedupNoFalseDuplicates: a million distinct pairs, without timestamps,
// none mistaken for another.
func TestDedupNoFalseDuplicates(t *testing.T) {
	if testing.Short() {
		t.Skip("a million pairs")
	}
	d := NewDedup(time.Hour, 1<<20)
	t0 := time.Now()
	id := uuid(0)
	for n := uint32(0); n < 1<<20; n++ {
		for k, v := 7, n; k >= 0; k, v = k-1, v>>4 {
			id[k] = "0123456789abcdef"[v&0xf]
		}
		if d.Has(id, audit.StageResponseComplete, 0) || d.Seen(id, audit.StageResponseComplete, t0) {
			t.Fatalf("pair %d: a new auditID taken for a known one", n)
		}
	}
}

// BenchmarkDedupSeen is one new pair into a full-size dedup (herd's default
// 1 Mi pairs), the per-event cost on the hot path.
func BenchmarkDedupSeen(b *testing.B) {
	d := NewDedup(2*time.Minute, 1<<20)
	now := time.Now()
	ids := make([][]byte, 1<<16)
	for i := range ids {
		ids[i] = uuid(uint64(i))
	}
	for i := 0; i < 1<<20+1; i++ { // fill both generations
		d.Seen(uuid(uint64(i)+1<<32), audit.StageResponseComplete, now)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	n := uint32(0)
	for b.Loop() {
		id := ids[n&(1<<16-1)]
		// A fresh id each time: rewrite the first 8 hex digits.
		for k, v := 7, n; k >= 0; k, v = k-1, v>>4 {
			id[k] = "0123456789abcdef"[v&0xf]
		}
		n++
		if d.Seen(id, audit.StageResponseComplete, now) {
			b.Fatal("seen")
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the CPU time this process has used: on a shared machine, a
// steadier measure than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// labelSafe passes ASCII at once and checks anything else in full: valid
// UTF-8 beyond ASCII is fine, one bad byte anywhere in any label field is not.
func TestLabelSafe(t *testing.T) {
	long := "system:serviceaccount:kube-system:cilium"
	for _, tc := range []struct {
		user, node string
		ok         bool
	}{
		{long, "node-1", true},
		{"système:nœud:é", "nœud-1", true},
		{long + "\xff", "node-1", false},
		{"\xff" + long, "node-1", false},
		{long[:9] + "\xc3" + long[10:], "node-1", false},
		{long, "n\xffde", false},
		{"", "", true},
	} {
		e := audit.Event{Verb: []byte("list"), User: []byte(tc.user), Resource: []byte("pods"), SourceIP: []byte("10.0.0.1")}
		e.Query.FieldSelectorNode = []byte(tc.node)
		if got := labelSafe(&e); got != tc.ok {
			t.Errorf("labelSafe(user %q, node %q) = %v, want %v", tc.user, tc.node, got, tc.ok)
		}
	}
}
