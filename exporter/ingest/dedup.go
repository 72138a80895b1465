package ingest

import (
	"hash/maphash"
	"math/bits"
	"sync"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
)

// Dedup remembers audit events by (auditID, stage, request timestamp) so that
// a batch the apiserver re-sends after a timeout is not counted twice.
// Memory is bounded by two generations of at most Max/2 entries each: an
// event is remembered for at least TTL unless more than Max/2 new ones
// arrive within it, in which case the window shrinks to what fits
// (Rotations counts generation changes).
//
// A client can choose its requests' auditIDs (kube-apiserver takes the
// Audit-ID request header as is), so the auditID alone cannot tell a re-sent
// event from a new request that reuses the ID: a client sending a constant
// Audit-ID would otherwise be counted once per window, however hard it
// relists (issue 16). The key therefore includes the request's own
// timestamp, audit.Event.RequestKey: requestReceivedTimestamp, which
// the apiserver sets (to the microsecond) and repeats on every stage of the
// request and on every re-send, and which two requests share only if they
// arrive at the same apiserver in the same microsecond. Has, the ledger's
// "was another stage of this request seen?" question, asks with the same
// timestamp, so one request's ResponseStarted is never mistaken for another
// request's under the same auditID. (Events without requestReceivedTimestamp
// fall back to stageTimestamp, which differs between stages: for them Has
// finds only the same stage. Events with neither are keyed by auditID and
// stage alone.)
//
// Each generation is an open-addressing table of 8-byte slots, at most half
// full, allocated whole: 8 MiB per generation at the default 1 Mi entries,
// where Go maps of 25-byte keys grew past 20 MiB, and one probe touches one
// cache line. A slot holds 61 bits of a hash of (auditID, timestamp), whose
// top bits also choose the slot, and the stage; 0 is an empty slot. The hash
// is seeded per Dedup, so auditIDs chosen to collide cannot make probe chains
// long, and because the timestamp is hashed in, a constant auditID spreads
// its requests over the table like distinct ones. A comparison mistakes one
// event for another with a probability of about 2^-60.
type Dedup struct {
	ttl  time.Duration
	half int
	seed maphash.Seed

	mu        sync.Mutex
	cur, prev table
	rotatedAt time.Time
	rotations uint64
}

const (
	stageBits = 3
	stageMask = 1<<stageBits - 1
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

// find returns the index of the slot holding key, or of the empty slot
// where it would go, and whether it is there.
func (t *table) find(h, key uint64) (int, bool) {
	mask := len(t.slots) - 1
	i := int(h >> t.shift) // the top bits choose the slot
	for {
		s := t.slots[i]
		if s == 0 {
			return i, false
		}
		if s == key {
			return i, true
		}
		i = (i + 1) & mask
	}
}

// NewDedup returns a Dedup remembering about ttl worth of events, at most max.
func NewDedup(ttl time.Duration, max int) *Dedup {
	if max < 2 {
		max = 2
	}
	half := min(max/2, 1<<22) // tables of up to 2^23 slots
	return &Dedup{ttl: ttl, half: half, seed: maphash.MakeSeed(), cur: newTable(half), prev: newTable(half)}
}

// key is the slot value for an event; h chooses the slot. Both stages of
// one request hash alike but for the stage bits, so they land in the same
// place: Has after SeenAt finds the line in the cache.
func (d *Dedup) key(auditID []byte, stage audit.Stage, reqTS uint64) (h, key uint64) {
	h = maphash.Bytes(d.seed, auditID)
	if reqTS != 0 {
		h = mix64(h ^ reqTS)
	}
	return h, (h|1)<<stageBits | uint64(stage&stageMask) // never 0: a slot with an entry is never empty
}

// mix64 is the murmur3 finalizer: every input bit moves every output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// Seen records the pair and reports whether it had been seen before. It is
// SeenAt without a timestamp: a pair is a duplicate whenever it is known.
func (d *Dedup) Seen(auditID []byte, stage audit.Stage, now time.Time) bool {
	return d.SeenAt(auditID, stage, 0, now)
}

// SeenAt records the event (auditID, stage, reqTS: its
// audit.Event.RequestKey, 0 when it has no timestamp) and reports whether
// it was seen before. The same auditID with another timestamp is a new
// request reusing the ID, not a duplicate.
func (d *Dedup) SeenAt(auditID []byte, stage audit.Stage, reqTS uint64, now time.Time) bool {
	h, key := d.key(auditID, stage, reqTS)
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.cur.find(h, key)
	if ok {
		return true
	}
	if _, ok := d.prev.find(h, key); ok {
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
	d.cur.slots[i] = key
	d.cur.n++
	return false
}

// Has reports whether the event (auditID, stage, reqTS) was seen, without
// recording it: the ledger asks it whether another stage of the same request
// came first.
func (d *Dedup) Has(auditID []byte, stage audit.Stage, reqTS uint64) bool {
	h, key := d.key(auditID, stage, reqTS)
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.cur.find(h, key); ok {
		return true
	}
	_, ok := d.prev.find(h, key)
	return ok
}

// HasStage is Has for an event's other stage: the form the ledger's stage
// lookup takes (accounting.Ledger.SetStageLookup).
func (d *Dedup) HasStage(e *audit.Event, stage audit.Stage) bool {
	return d.Has(e.AuditID, stage, e.RequestKey())
}

// Rotations counts generation changes.
func (d *Dedup) Rotations() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rotations
}
