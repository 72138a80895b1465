package accounting

import (
	"slices"
	"sync"

	"github.com/herd-k8s/herd/exporter/classify"
)

// shard is one part of the books: the instances whose key hashes to it, and
// the counters of the events they sent (refused events, which have no
// instance, count in the shard their key hashes to). Its lock is held for
// one event, or by a read for as long as it takes to copy the shard's
// packed state (live, streams) and add up its counters.
//
// Why packed: a read (a scrape, a /debug/clients page) needs every
// instance's windows. Walking 15,000 instances and their streams through
// pointers under the locks costs milliseconds, and a batch touches every
// shard within microseconds, so it would follow the read from shard to
// shard and wait for nearly all of it. Copying two flat arrays takes tens
// of microseconds per shard; the sums, verdicts and sorting are done on the
// copy, with no lock held.
type shard struct {
	mu        sync.Mutex
	instances map[uint64]*Instance // by instance key hash; collisions chained through Instance.next
	live      []liveInstance       // one per instance (Instance.live)
	streams   []liveStream         // one per instance stream (Stream.live)
	keyBuf    []byte               // resourceID's scratch
	// atComplete remembers the watches counted at ResponseComplete while no
	// ResponseStarted had been seen, so that their ResponseStarted, should it
	// come later, does not count them again.
	atComplete watchSet

	// Counters, keyed by their key packed into a uint64 (pack): the maps'
	// 64-bit fast path, several times cheaper per event than hashing a
	// struct.
	relists     map[uint64]uint64 // relistKey
	pages       map[uint64]uint64 // streamKey
	tooLarge    map[uint64]uint64 // streamKey: too large by status
	tooLargeRev map[uint64]uint64 // streamKey: too large by revision
	// revs are this shard's requests waiting for a revision read.
	revs         revisionChecks
	intervals    map[uint64]*histogram
	requests     map[uint64]uint64 // requestKey
	tokenReviews map[clientKey]uint64
	latency      map[streamKey]*latencySums

	_ [64]byte // keep neighbouring shards' locks off one cache line
}

// liveInstance is the part of an instance that changes and that reads
// need for every instance.
type liveInstance struct {
	in             *Instance
	lastSeen       int64
	tokenReviewWin window
	// trusted is the trusted source address (TrustedSourceIP), which
	// attribution and ghost verdicts use.
	trusted address
}

// liveStream is a stream's windows, with what a read needs to attribute
// them without following the stream's pointer.
type liveStream struct {
	st               *Stream
	owner            int32 // its instance's index in live
	resource         uint16
	shape            Shape
	win, tooLargeWin window

	// lastRelistNanos is when it last relisted (a relist interval's start);
	// the forecast's (forecast.go): the newest plain watch and relist
	// start, and the mode and consistency of the latest relist.
	lastRelistNanos int64
	lastWatchNanos  int64
	lastStartNanos  int64
	lastMode        Mode
	lastCons        Consistency
}

func newShard() shard {
	return shard{
		instances:    map[uint64]*Instance{},
		relists:      map[uint64]uint64{},
		pages:        map[uint64]uint64{},
		tooLarge:     map[uint64]uint64{},
		tooLargeRev:  map[uint64]uint64{},
		intervals:    map[uint64]*histogram{},
		requests:     map[uint64]uint64{},
		tokenReviews: map[clientKey]uint64{},
		latency:      map[streamKey]*latencySums{},
	}
}

// add puts a new instance (already in instances) in live.
func (s *shard) add(in *Instance) {
	in.live = int32(len(s.live))
	s.live = append(s.live, liveInstance{in: in})
}

// stream is in's stream k, and its windows; made if it is new. The
// liveStream pointer is valid until the next stream is made.
func (s *shard) stream(in *Instance, k shapeKey) (*Stream, *liveStream) {
	for _, st := range in.streams {
		if st.resource == k.resource && st.shape == k.shape {
			return st, &s.streams[st.live]
		}
	}
	st := &Stream{resource: k.resource, shape: k.shape, live: int32(len(s.streams))}
	s.streams = append(s.streams, liveStream{st: st, owner: in.live, resource: k.resource, shape: k.shape})
	in.streams = append(in.streams, st)
	return st, &s.streams[st.live]
}

// remove takes in out of s: its hash chain, its live entry and its streams'
// (the last entries move into their places).
func (s *shard) remove(in *Instance) {
	switch p := s.instances[in.hash]; {
	case p == in && in.next == nil:
		delete(s.instances, in.hash)
	case p == in:
		s.instances[in.hash] = in.next
	default:
		for p != nil && p.next != in {
			p = p.next
		}
		if p == nil {
			return // not in this shard
		}
		p.next = in.next
	}
	for _, st := range in.streams {
		j, m := st.live, int32(len(s.streams)-1)
		if j != m {
			s.streams[j] = s.streams[m]
			s.streams[j].st.live = j
		}
		s.streams[m] = liveStream{}
		s.streams = s.streams[:m]
	}
	i, m := in.live, int32(len(s.live)-1)
	if i != m {
		s.live[i] = s.live[m]
		moved := s.live[i].in
		moved.live = i
		for _, st := range moved.streams {
			s.streams[st.live].owner = i
		}
	}
	s.live[m] = liveInstance{}
	s.live = s.live[:m]
	in.live = -1
}

// shardCopy is one shard's live state as a read copied it.
type shardCopy struct {
	live    []liveInstance
	streams []liveStream
}

// copyLive copies s's packed state into c; call with s locked. Trusted
// addresses that changed get their text here, once per change, so that the
// copies share it.
func (s *shard) copyLive(c *shardCopy) {
	for i := range s.live {
		s.live[i].trusted.refresh()
	}
	c.live = append(c.live[:0], s.live...)
	c.streams = append(c.streams[:0], s.streams...)
}

// release drops the copy's references to instances, keeping its memory.
func (c *shardCopy) release() {
	clear(c.live)
	clear(c.streams)
	c.live, c.streams = c.live[:0], c.streams[:0]
}

// copies holds shardCopy buffers between reads.
var copies = sync.Pool{New: func() any { return new(shardCopy) }}

// evict drops the least recently seen tenth of the instances when the
// table is full, so a full table costs one pass per MaxInstances/10 new
// instances. It reads and then prunes one shard at a time, like a snapshot:
// events of the other shards go on meanwhile.
func (l *Ledger) evict() {
	l.evictMu.Lock()
	defer l.evictMu.Unlock()
	if l.count.Load() < int64(l.cfg.MaxInstances) {
		return // another eviction made room
	}
	seen := make([]int64, 0, l.count.Load())
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for j := range s.live {
			seen = append(seen, s.live[j].lastSeen)
		}
		s.mu.Unlock()
	}
	if len(seen) == 0 {
		return
	}
	n := max(1, len(seen)/10)
	slices.Sort(seen)
	cutoff := seen[n-1]
	// Instances seen before the cutoff go; of those seen at it, as many as
	// make n.
	atCutoff := n
	for _, ts := range seen[:n] {
		if ts < cutoff {
			atCutoff--
		}
	}
	var dropped uint64
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		// Backwards: remove moves the last entry into the place it frees,
		// and that one has been looked at already.
		for j := len(s.live) - 1; j >= 0; j-- {
			ts := s.live[j].lastSeen
			if ts < cutoff || ts == cutoff && atCutoff > 0 {
				if ts == cutoff {
					atCutoff--
				}
				s.remove(s.live[j].in)
				dropped++
			}
		}
		s.mu.Unlock()
	}
	l.count.Add(-int64(dropped))
	l.evicted.Add(dropped)
}

// Counter keys packed into a uint64 and back: role (8 bits), client (16),
// then resource (16), shape (8) and consistency (8), or verb (16) and code
// (16: codeKey's values are below 600).
func (k clientKey) pack() uint64 { return uint64(k.role)<<56 | uint64(k.client)<<40 }

func (k streamKey) pack() uint64 { return k.clientKey.pack() | uint64(k.resource)<<24 }

func (k shapeKey) pack() uint64 { return k.streamKey.pack() | uint64(k.shape)<<16 }

func (k relistKey) pack() uint64 { return k.shapeKey.pack() | uint64(k.consistency)<<8 }

func (k requestKey) pack() uint64 {
	return k.clientKey.pack() | uint64(k.verb)<<24 | uint64(uint16(k.code))<<8
}

func unpackClient(p uint64) clientKey {
	return clientKey{role: classify.Role(p >> 56), client: uint16(p >> 40)}
}

func unpackStream(p uint64) streamKey {
	return streamKey{clientKey: unpackClient(p), resource: uint16(p >> 24)}
}

func unpackShape(p uint64) shapeKey {
	return shapeKey{streamKey: unpackStream(p), shape: Shape(p >> 16)}
}

func unpackRelist(p uint64) relistKey {
	return relistKey{shapeKey: unpackShape(p), consistency: Consistency(p >> 8)}
}

func unpackRequest(p uint64) requestKey {
	return requestKey{clientKey: unpackClient(p), verb: uint16(p >> 24), code: int32(uint16(p >> 8))}
}
