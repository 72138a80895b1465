package ingest

import (
	"hash/maphash"
	"math/bits"
	"sync"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
)

// Dedup remembers (auditID, stage) pairs so that a batch the apiserver
// re-sends after a timeout is not counted twice. Memory is bounded by two
// generations of at most Max/2 entries each: a pair is remembered for at
// least TTL unless more than Max/2 new pairs arrive within it, in which case
// the window shrinks to what fits (Rotations counts generation changes).
//
// A client can choose its requests' auditIDs (kube-apiserver takes the
// Audit-ID request header as is), so the pair alone cannot tell a re-sent
// event from a new request that reuses an ID: a client sending a constant
// Audit-ID would otherwise be counted once per window, however hard it
// relists. SeenAt therefore also compares the event's stageTimestamp, which
// a re-sent event repeats and a new request does not.
//
// Each generation is an open-addressing table of 8-byte slots, at most half
// full, allocated whole: 8 MiB per generation at the default 1 Mi pairs,
// where Go maps of 17-byte keys grew to 20 MiB, and one probe touches one
// cache line where a map lookup touched two or three. (A table cannot grow:
// its slots keep too few bits of the hash to be placed again.) Slots are
// placed by a hash seeded per Dedup, so auditIDs chosen to collide cannot
// make probe chains long. A lookup mistakes one request for another with a
// probability of about 2^-38 (Has), and an event for a duplicate of another
// with about 2^-59 (SeenAt, which compares the timestamps too).
type Dedup struct {
	ttl  time.Duration
	half int
	seed maphash.Seed

	mu        sync.Mutex
	cur, prev table
	rotatedAt time.Time
	rotations uint64
}

// A slot packs, from the top: 40 bits of the auditID's hash (its low bits;
// its top bits choose the slot), the stage, and 21 bits of the
// stageTimestamp's hash. 0 is an empty slot.
const (
	tsBits    = 21
	stageBits = 3
	keyShift  = tsBits
	idShift   = tsBits + stageBits
	tsMask    = 1<<tsBits - 1
	keyMask   = ^uint64(tsMask) // id and stage
)

type table struct {
	slots []uint64
	n     int // occupied slots
	shift uint8
}

func newTable(half int) table {
	// At most half full: a table of at least 2·half slots.
	lg := bits.Len(uint(2*half - 1))
	return table{slots: make([]uint64, 1<<lg), shift: uint8(64 - lg)}
}

// find returns the index of the slot holding key (id and stage bits), or of
// the empty slot where it would go, and whether it is there.
func (t *table) find(h, key uint64) (int, bool) {
	mask := len(t.slots) - 1
	i := int(h >> t.shift) // the top bits choose the slot
	for {
		s := t.slots[i]
		if s == 0 {
			return i, false
		}
		if s&keyMask == key {
			return i, true
		}
		i = (i + 1) & mask
	}
}

// NewDedup returns a Dedup remembering about ttl worth of pairs, at most max.
func NewDedup(ttl time.Duration, max int) *Dedup {
	if max < 2 {
		max = 2
	}
	half := min(max/2, 1<<22) // tables of up to 2^23 slots: their index bits and the stored 40 stay apart
	return &Dedup{ttl: ttl, half: half, seed: maphash.MakeSeed(), cur: newTable(half), prev: newTable(half)}
}

// key is the slot's id and stage bits for auditID and stage; h chooses the
// slot. The id bits come from the bottom of h and the slot from its top, so
// that a slot's neighbours, which share its top bits, still differ in 40
// others. Both stages of one request land in the same place: Has after
// SeenAt finds the line in the cache.
func (d *Dedup) key(auditID []byte, stage audit.Stage) (h, key uint64) {
	h = maphash.Bytes(d.seed, auditID)
	id := h&(1<<40-1) | 1 // never 0: a slot with an entry is never empty
	return h, id<<idShift | uint64(stage&(1<<stageBits-1))<<keyShift
}

func tsHash(ts int64) uint64 { return uint64(ts) * 0x9e3779b97f4a7c15 >> (64 - tsBits) }

// Seen records the pair and reports whether it had been seen before. It is
// SeenAt without a timestamp: a pair is a duplicate whenever it is known.
func (d *Dedup) Seen(auditID []byte, stage audit.Stage, now time.Time) bool {
	return d.SeenAt(auditID, stage, 0, now)
}

// SeenAt records the pair and reports whether the same event was seen
// before: the pair with the same stageTimestamp (Unix ns; 0 when absent). A
// known pair with another timestamp is a new request reusing the auditID;
// it is recorded in place of the old one and is not a duplicate.
func (d *Dedup) SeenAt(auditID []byte, stage audit.Stage, stageTS int64, now time.Time) bool {
	h, key := d.key(auditID, stage)
	ts := tsHash(stageTS)
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.cur.find(h, key)
	if ok {
		if d.cur.slots[i]&tsMask == ts {
			return true
		}
		d.cur.slots[i] = key | ts // an auditID reused by another request
		return false
	}
	if j, ok := d.prev.find(h, key); ok && d.prev.slots[j]&tsMask == ts {
		return true
	}
	if d.cur.n >= d.half || now.Sub(d.rotatedAt) >= d.ttl {
		d.prev, d.cur = d.cur, d.prev
		clear(d.cur.slots)
		d.cur.n = 0
		d.rotatedAt = now
		d.rotations++
		i, _ = d.cur.find(h, key)
	}
	d.cur.slots[i] = key | ts
	d.cur.n++
	return false
}

// Has reports whether the pair was seen (with any timestamp), without
// recording it.
func (d *Dedup) Has(auditID []byte, stage audit.Stage) bool {
	h, key := d.key(auditID, stage)
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.cur.find(h, key); ok {
		return true
	}
	_, ok := d.prev.find(h, key)
	return ok
}

// Rotations counts generation changes.
func (d *Dedup) Rotations() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rotations
}
