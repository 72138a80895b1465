package ingest

import (
	"encoding/binary"
	"fmt"
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
		if n := len(d.cur) + len(d.prev); n > 8 {
			t.Fatalf("%d pairs held, max 8", n)
		}
	}
}

func TestIDBytes(t *testing.T) {
	u := []byte("0a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3")
	got := idBytes(u)
	want := [16]byte{0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x4a, 0x6b, 0x8c, 0x7d, 0x8e, 0x9f, 0xa0, 0xb1, 0xc2, 0xd3}
	if got != want {
		t.Fatalf("idBytes = %x", got)
	}
	// Same shape, not hex: hashed, not a panic or a collision with a real UUID.
	if bad := idBytes([]byte("0a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2zz")); bad == got {
		t.Fatal("collision")
	}
	if testing.AllocsPerRun(100, func() { idBytes(u) }) != 0 {
		t.Error("idBytes allocates")
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
