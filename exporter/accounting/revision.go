package accounting

import (
	"math"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
)

// RevisionSource proves the cluster's current revision (etcd's, which
// every resourceVersion of the main storage is) for the ledger's
// too-large checks. The cluster view implements it next to NodeResolver
// and Judge, with a consistent read (exporter/cluster revision.go).
//
// A too-large request is one whose resourceVersion is above the cluster's
// revision, whatever its status code (SPEC §3.3): a LIST gets 504 "Too
// large resource version", but a WatchList gets 200 with the error inside
// the stream, and a plain re-watch after an etcd rewind gets 200 and never
// an event. Only the first says so in its audit event; the ledger finds the
// others by comparing the request's resourceVersion with a revision read
// after the request was served: a ticket, read when the event is
// accounted, orders the two.
type RevisionSource interface {
	// RevisionTicket is the number of revision reads started so far. A
	// read started after a request was accounted has a greater ticket than
	// the one the request was given.
	RevisionTicket() uint64
	// ProvenRevision is the last revision read that completed: the ticket
	// it started with and the revision it returned. ok is false until one
	// has completed.
	ProvenRevision() (ticket, revision uint64, ok bool)
}

// RevisionStatus is a revision source's state, for metrics
// (herd_cluster_revision and friends).
type RevisionStatus struct {
	// Revision is the last revision a read returned; 0 before the first.
	Revision uint64
	// Probes and ProbeFailures count the reads.
	Probes, ProbeFailures uint64
	// Rewinds counts the times the revision went back; Restarts the times
	// the source's informers then synced again from the new revision.
	Rewinds, Restarts uint64
	// LastRewind is the latest rewind (zero when none).
	LastRewind Rewind
}

// Rewind is one observed rewind of the cluster's revision.
type Rewind struct {
	From, To uint64
	At       time.Time
}

// revisionCheck is a request with a resourceVersion, waiting for a
// revision read that started after it was accounted.
type revisionCheck struct {
	inst   *Instance
	key    shapeKey
	rv     uint64
	ticket uint64
	at     int64 // when it was accounted (Unix ns): its window bucket
}

// revisionChecks is a shard's queue of such requests, oldest first: a ring;
// all shards' together hold at most MaxPendingRevisionChecks
// (Ledger.revPending). Guarded by the shard's lock.
type revisionChecks struct {
	ring    []revisionCheck
	head, n int
	// settled is the ticket of the read the queue was last settled with.
	settled uint64
}

// checkRevision queues e for a too-large check when it asked for a
// resourceVersion (a number above 0: "0" and "" ask for any, or the
// newest) of a resource stored with the cluster's revision, and the
// apiserver did not already answer it too large. Called with s locked
// after e's instance and stream are known.
func (l *Ledger) checkRevision(s *shard, e *audit.Event, inst *Instance, k shapeKey, t int64) {
	q := &s.revs
	if l.revSrc == nil || e.TooLargeResourceVersion {
		return
	}
	rv, ok := parseResourceVersion(e.Query.ResourceVersion)
	if !ok || rv == 0 || l.separateStorage(k.resource) {
		return
	}
	// The bound is the ledger's, over every shard, as for instances.
	if l.revPending.Add(1) > int64(l.cfg.MaxPendingRevisionChecks) {
		l.revPending.Add(-1)
		l.revDropped.Add(1)
		return
	}
	if q.n == len(q.ring) {
		q.grow(min(max(64, 2*len(q.ring)), l.cfg.MaxPendingRevisionChecks))
	}
	q.ring[(q.head+q.n)%len(q.ring)] = revisionCheck{inst: inst, key: k, rv: rv, ticket: l.revSrc.RevisionTicket(), at: t}
	q.n++
}

func (q *revisionChecks) grow(size int) {
	ring := make([]revisionCheck, size)
	for i := range q.n {
		ring[i] = q.ring[(q.head+i)%len(q.ring)]
	}
	q.ring, q.head = ring, 0
}

// settleRevisions judges every request queued in s that a completed
// revision read started after: too large when its resourceVersion is above
// the revision read. A healthy client's resourceVersion came from the
// cluster before it sent the request, and a consistent read returns a
// revision at least as new as every one committed before it started, so it
// is never above; one from before an etcd rewind, or made up, is. An
// instance evicted meanwhile is left out. Call with s locked.
func (l *Ledger) settleRevisions(s *shard) {
	q := &s.revs
	if q.n == 0 {
		return
	}
	ticket, revision, ok := l.revSrc.ProvenRevision()
	if !ok || ticket == q.settled {
		return
	}
	q.settled = ticket
	for q.n > 0 {
		c := &q.ring[q.head]
		if c.ticket >= ticket {
			break
		}
		if c.rv > revision && c.inst.live >= 0 {
			l.countTooLarge(s, c.inst, c.key, DetectedByRevision, c.at)
		}
		*c = revisionCheck{} // let go of the instance
		q.head = (q.head + 1) % len(q.ring)
		q.n--
		l.revPending.Add(-1)
	}
}

// countTooLarge charges one too-large request to its stream's counter and
// window, which the stale-kubelet verdict reads. Call with s locked.
func (l *Ledger) countTooLarge(s *shard, inst *Instance, k shapeKey, by DetectedBy, t int64) {
	if by == DetectedByRevision {
		s.tooLargeRev[k.streamKey.pack()]++
	} else {
		s.tooLarge[k.streamKey.pack()]++
	}
	st, ls := s.stream(inst, k)
	st.TooLarge++
	ls.tooLargeWin.add(t, l.width)
}

// separateStorage reports whether resource id r is one of
// SeparateStorageResources, whose resourceVersions are not the cluster's
// revision.
func (l *Ledger) separateStorage(r uint16) bool {
	if len(l.cfg.SeparateStorageResources) == 0 {
		return false
	}
	name := l.resources.name(r)
	for _, s := range l.cfg.SeparateStorageResources {
		if s == name {
			return true
		}
	}
	return false
}

// parseResourceVersion reads a resourceVersion parameter as etcd's
// revision: a decimal number (k8s.io/apiserver@v0.36.3 pkg/storage/
// api_object_versioner.go ParseResourceVersion). Anything else is not one
// the ledger can compare. Like strconv.ParseUint there, leading zeros are
// allowed ("0001" is revision 1), so the length is bounded by the event's,
// and the value by the overflow check below.
func parseResourceVersion(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false // above any revision etcd can have
		}
		v = v*10 + d
	}
	return v, true
}

// DetectedBy says how herd knows a request was too large: the
// `detected_by` label of herd_too_large_resource_version_total.
type DetectedBy uint8

const (
	// DetectedByStatus: the apiserver answered "Too large resource
	// version" (a LIST's 504, in the audit event).
	DetectedByStatus DetectedBy = iota
	// DetectedByRevision: the answer said nothing (200: a WatchList, a
	// re-watch after an etcd rewind), but the resourceVersion asked for
	// is above the cluster's revision read after the request.
	DetectedByRevision
	numDetectedBy
)

var detectedByNames = [numDetectedBy]string{"status", "revision"}

func (d DetectedBy) String() string { return detectedByNames[d] }

type tooLargeKey struct {
	streamKey
	by DetectedBy
}
