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
// arrive at the same apiserver in the same microsecond. Has asks with the
// same timestamp, so one request's ResponseStarted is never mistaken for
// another request's under the same auditID. (Events without
// requestReceivedTimestamp fall back to stageTimestamp, which differs
// between stages: for them Has finds only the same stage. Events with
// neither are keyed by auditID and stage alone.)
//
// Each generation is an open-addressing table of 8-byte slots, at most half
// full, allocated whole: 8 MiB per generation at the default 1 Mi entries,
// where Go maps of 25-byte keys grew past 20 MiB; the two generations are
// interleaved in one array, so that looking an event up in both touches one
// cache line (table). A slot holds 61 bits of a hash of (auditID, timestamp), whose
// top bits also choose the slot, and the stage; 0 is an empty slot. The hash
// is seeded per Dedup, so auditIDs chosen to collide cannot make probe chains
// long, and because the timestamp is hashed in, a constant auditID spreads
// its requests over the table like distinct ones. A comparison mistakes one
// event for another with a probability of about 2^-60.
//
// A large Dedup (herd's default) is split into shards by hash, each with its
// own lock and its own two generations of Max/2/shards entries, so that
// concurrent batches do not queue on one lock per event; the hash is seeded,
// so nobody can steer events into one shard. Each shard rotates on its own,
// when it is full or its generation is TTL old, which keeps the rule above
// shard by shard.
type Dedup struct {
	ttl    time.Duration
	seed   maphash.Seed
	shards []dedupShard
	mask   uint64 // len(shards)-1
}

// dedupShard is one shard: two generations under one lock.
type dedupShard struct {
	mu        sync.Mutex
	half      int
	cur, prev table
	rotatedAt time.Time
	rotations uint64
	_         [64]byte // keep neighbouring shards' locks off one cache line
}

// Sharding: a table is split only when each shard keeps at least
// minShardHalf entries per generation, so small ones (tests, tiny
// configurations) behave exactly as one table.
const (
	maxDedupShards = 16
	minShardHalf   = 1 << 15
)

const (
	stageBits = 3
	stageMask = 1<<stageBits - 1
)

// table is one generation. A shard's two generations share one array,
// interleaved (slot i of generation g at 2i+g), so that a new event's two
// probes, which start at the same slot in both, read one cache line: at
// herd's default size the tables are far larger than the caches, and the
// second probe was a second miss for every event.
type table struct {
	slots []uint64 // both generations' slots, interleaved
	gen   int      // which of them this is: 0 or 1
	n     int      // occupied slots
	shift uint8
}

// newTables returns the two generations of a shard holding up to half
// entries each.
func newTables(half int) (table, table) {
	// At most half full: a generation of at least 2·half slots.
	lg := bits.Len(uint(2*half - 1))
	slots := make([]uint64, 2<<lg)
	return table{slots: slots, gen: 0, shift: uint8(64 - lg)}, table{slots: slots, gen: 1, shift: uint8(64 - lg)}
}

// size is the generation's number of slots.
func (t *table) size() int { return len(t.slots) / 2 }

// at is the generation's slot i.
func (t *table) at(i int) uint64 { return t.slots[2*i+t.gen] }

// find returns the index in slots of the slot holding key, or of the empty
// slot where it would go, and whether it is there.
func (t *table) find(h, key uint64) (int, bool) {
	mask := t.size() - 1
	i := int(h >> t.shift) // the top bits choose the slot
	for {
		j := 2*i + t.gen
		s := t.slots[j]
		if s == 0 {
			return j, false
		}
		if s == key {
			return j, true
		}
		i = (i + 1) & mask
	}
}

// reset empties the generation.
func (t *table) reset() {
	for j := t.gen; j < len(t.slots); j += 2 {
		t.slots[j] = 0
	}
	t.n = 0
}

// NewDedup returns a Dedup remembering about ttl worth of events, at most max.
func NewDedup(ttl time.Duration, max int) *Dedup {
	if max < 2 {
		max = 2
	}
	half := min(max/2, 1<<22) // tables of up to 2^23 slots
	n := 1
	for n < maxDedupShards && half/(2*n) >= minShardHalf {
		n *= 2
	}
	d := &Dedup{ttl: ttl, seed: maphash.MakeSeed(), shards: make([]dedupShard, n), mask: uint64(n - 1)}
	for i := range d.shards {
		sh := &d.shards[i]
		sh.half = half / n
		sh.cur, sh.prev = newTables(sh.half)
	}
	return d
}

// shard is the shard of a key's hash: bits the slot index (the top ones)
// and the stage (the bottom ones) do not use.
func (d *Dedup) shard(h uint64) *dedupShard { return &d.shards[(h>>8)&d.mask] }

// key is the slot value for an event; h chooses the slot. Both stages of
// one request hash alike but for the stage bits, so they land in the same
// place: Has after SeenAt finds the line in the cache.
func (d *Dedup) key(auditID []byte, stage audit.Stage, reqTS uint64) (h, key uint64) {
	h = maphash.Bytes(d.seed, auditID)
	if reqTS != 0 {
		h = audit.Mix64(h ^ reqTS)
	}
	return h, (h|1)<<stageBits | uint64(stage&stageMask) // never 0: a slot with an entry is never empty
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
	sh := d.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.cur.find(h, key)
	if ok {
		return true
	}
	if _, ok := sh.prev.find(h, key); ok {
		return true
	}
	if sh.cur.n >= sh.half || now.Sub(sh.rotatedAt) >= d.ttl {
		sh.prev, sh.cur = sh.cur, sh.prev
		sh.cur.reset()
		sh.rotatedAt = now
		sh.rotations++
		i, _ = sh.cur.find(h, key)
	}
	sh.cur.slots[i] = key
	sh.cur.n++
	return false
}

// Has reports whether the event (auditID, stage, reqTS) was seen, without
// recording it.
func (d *Dedup) Has(auditID []byte, stage audit.Stage, reqTS uint64) bool {
	h, key := d.key(auditID, stage, reqTS)
	sh := d.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.cur.find(h, key); ok {
		return true
	}
	_, ok := sh.prev.find(h, key)
	return ok
}

// Rotations counts generation changes: of the one table, or, when the
// Dedup is sharded, the shards' average.
func (d *Dedup) Rotations() uint64 {
	var n uint64
	for i := range d.shards {
		sh := &d.shards[i]
		sh.mu.Lock()
		n += sh.rotations
		sh.mu.Unlock()
	}
	return n / uint64(len(d.shards))
}
