package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
)

// Dedup remembers (auditID, stage) pairs so that a batch the apiserver
// re-sends after a timeout is not counted twice. Memory is bounded by two
// generations of at most Max/2 entries each: a pair is remembered for at
// least TTL unless more than Max/2 new pairs arrive within it, in which case
// the window shrinks to what fits (herd_audit_dedup_rotations_total shows it).
type Dedup struct {
	ttl  time.Duration
	half int

	mu        sync.Mutex
	cur, prev map[dedupKey]struct{}
	rotatedAt time.Time
	rotations uint64
}

type dedupKey struct {
	id    [16]byte
	stage audit.Stage
}

// NewDedup returns a Dedup remembering about ttl worth of pairs, at most max.
func NewDedup(ttl time.Duration, max int) *Dedup {
	if max < 2 {
		max = 2
	}
	return &Dedup{ttl: ttl, half: max / 2, cur: map[dedupKey]struct{}{}, prev: map[dedupKey]struct{}{}}
}

// Seen records the pair and reports whether it had been seen before.
func (d *Dedup) Seen(auditID []byte, stage audit.Stage, now time.Time) bool {
	k := dedupKey{id: idBytes(auditID), stage: stage}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.cur[k]; ok {
		return true
	}
	if _, ok := d.prev[k]; ok {
		return true
	}
	if len(d.cur) >= d.half || now.Sub(d.rotatedAt) >= d.ttl {
		d.prev, d.cur = d.cur, d.prev
		clear(d.cur)
		d.rotatedAt = now
		d.rotations++
	}
	d.cur[k] = struct{}{}
	return false
}

// Has reports whether the pair was seen, without recording it.
func (d *Dedup) Has(auditID []byte, stage audit.Stage) bool {
	k := dedupKey{id: idBytes(auditID), stage: stage}
	d.mu.Lock()
	defer d.mu.Unlock()
	_, cur := d.cur[k]
	_, prev := d.prev[k]
	return cur || prev
}

// Rotations counts generation changes.
func (d *Dedup) Rotations() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rotations
}

// idBytes packs a UUID auditID into 16 bytes without allocating; any other
// string is hashed (the apiserver always sends UUIDs, but the key must not
// depend on that).
func idBytes(id []byte) [16]byte {
	var out [16]byte
	if len(id) == 36 && id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-' {
		var hexed [32]byte
		n := 0
		for i, c := range id {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				continue
			}
			hexed[n] = c
			n++
		}
		if _, err := hex.Decode(out[:], hexed[:]); err == nil {
			return out
		}
	}
	sum := sha256.Sum256(id)
	copy(out[:], sum[:16])
	out[0] ^= 0x80 // keep hashed ids apart from a UUID that packs to the same bytes
	return out
}
