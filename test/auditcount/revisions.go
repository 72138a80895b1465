package auditcount

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herd-k8s/herd/test/herdtest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/kubernetes"
)

// Revisions is the cluster's revision over a run, as the test read it with
// consistent reads (a LIST of one ConfigMap without a resourceVersion:
// etcd's current revision or later), and the etcd restores the test made.
//
// The audit log does not say what the cluster's revision was when a
// request was served, so the requests herd counts as too large by revision
// (detected_by="revision": answered 200 but above the revision) cannot be
// counted exactly from it. They can be bounded: a request whose
// resourceVersion is above the revision read *after* it was served was
// certainly too large; one whose resourceVersion is not above the lowest
// revision the cluster had from before it until herd could have judged it
// cannot be one herd counts. FutureRevisions counts both.
type Revisions struct {
	mu       sync.Mutex
	samples  []revisionSample // in time order
	restores []restore
}

type revisionSample struct {
	at  time.Time
	rev uint64
}

// restore is an etcd restore: the apiserver was away from begin to end,
// and the revision went back to rev (the snapshot's, plus a bump).
type restore struct {
	begin, end time.Time
	rev        uint64
}

// SampleRevisions reads the cluster's revision every interval until ctx
// ends (failed reads, while the apiserver restarts, are skipped).
func SampleRevisions(ctx context.Context, c kubernetes.Interface, every time.Duration) *Revisions {
	r := &Revisions{}
	read := func() { r.Read(ctx, c) }
	go func() {
		read()
		herdtest.Every(ctx, every, read)
	}()
	return r
}

// Read reads the revision once and records it, stamped when the read
// returned (the revision is at least the cluster's at that moment's start,
// and at most at its end).
func (r *Revisions) Read(ctx context.Context, c kubernetes.Interface) (uint64, bool) {
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	l, err := c.CoreV1().ConfigMaps(metav1.NamespaceDefault).List(rctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return 0, false
	}
	rev, err := strconv.ParseUint(l.ResourceVersion, 10, 64)
	if err != nil {
		return 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Stamped at its start for the upper bounds (the cluster's revision
	// when the read started is at most rev) — a read is a few
	// milliseconds, and samples are compared with audit timestamps that
	// have microseconds.
	r.samples = append(r.samples, revisionSample{at: start, rev: rev})
	sort.Slice(r.samples, func(i, j int) bool { return r.samples[i].at.Before(r.samples[j].at) })
	return rev, true
}

// Restored records an etcd restore that began at begin (the apiserver
// stopping) and ended at end (it serving again), to revision rev.
func (r *Revisions) Restored(begin, end time.Time, rev uint64) {
	r.mu.Lock()
	r.restores = append(r.restores, restore{begin: begin, end: end, rev: rev})
	r.mu.Unlock()
}

// upper is the revision of the first read that started at or after t and
// before any restore that began after t; ok is false when there is none.
func (r *Revisions) upper(t time.Time) (uint64, bool) {
	i := sort.Search(len(r.samples), func(i int) bool { return !r.samples[i].at.Before(t) })
	if i == len(r.samples) {
		return 0, false
	}
	for _, rs := range r.restores {
		if !rs.begin.Before(t) && !rs.begin.After(r.samples[i].at) {
			return 0, false
		}
	}
	return r.samples[i].rev, true
}

// lower is the lowest revision the cluster may have had between from and
// to: a read that certainly ended before from (the one before the last
// that started before it: a read returns the revision at some moment of
// its own), every read up to to, and the revision of every restore in
// between.
func (r *Revisions) lower(from, to time.Time) uint64 {
	lo := uint64(0)
	have := false
	take := func(v uint64) {
		if !have || v < lo {
			lo, have = v, true
		}
	}
	i := sort.Search(len(r.samples), func(i int) bool { return !r.samples[i].at.Before(from) })
	i = max(0, i-2)
	for ; i < len(r.samples) && !r.samples[i].at.After(to); i++ {
		take(r.samples[i].rev)
	}
	for _, rs := range r.restores {
		if !rs.begin.After(to) && !rs.end.Before(from) {
			take(rs.rev)
		}
	}
	return lo
}

// Bounds bound how many of an identity's (or a series') requests herd may
// count too large by revision: at least Definite, at most Possible.
type Bounds struct{ Definite, Possible int }

// FutureResult is FutureRevisions' count.
type FutureResult struct {
	// ByIdentity is keyed by username, BySeries by the
	// herd_too_large_resource_version_total{...,detected_by=revision,...}
	// series herd would count them in.
	ByIdentity map[string]Bounds
	BySeries   map[string]Bounds
	// StatusByIdentity counts, per username, the requests answered "Too
	// large resource version" (detected_by="status"; Count has them by
	// series).
	StatusByIdentity map[string]int
}

// FutureRevisions bounds the delivered requests herd counts too large by
// revision: those it counts by its rules (counted stage, not refused, a
// resourceVersion that is a number above 0, not answered "Too large
// resource version", not in separateStorage) and whose resourceVersion is
// above the revision. judgeWithin is how long after a request was served
// herd may judge it (its revision read interval plus slack): a request
// served before a restore may be judged with a revision read after it.
func FutureRevisions(path string, delivered map[Key]bool, classify Classifier, revs *Revisions, judgeWithin time.Duration, separateStorage []string) (FutureResult, error) {
	revs.mu.Lock()
	defer revs.mu.Unlock()
	res := FutureResult{ByIdentity: map[string]Bounds{}, BySeries: map[string]Bounds{}, StatusByIdentity: map[string]int{}}
	c := counter{s: Series{}, classify: classify, proven: map[string]bool{}}
	err := Each(path, func(e *auditv1.Event) {
		if delivered != nil && !delivered[Key{string(e.AuditID), e.Stage}] || !Counted(e) {
			return
		}
		c.event(e) // keeps the proven resources, as herd names them
		code, message := 0, ""
		if e.ResponseStatus != nil {
			code, message = int(e.ResponseStatus.Code), e.ResponseStatus.Message
		}
		if code == 401 || code == 403 {
			return
		}
		if strings.Contains(message, "Too large resource version") {
			res.StatusByIdentity[e.User.Username]++
			return
		}
		rv, err := strconv.ParseUint(Query(e.RequestURI).Get("resourceVersion"), 10, 64)
		if err != nil || rv == 0 || e.ObjectRef == nil {
			return
		}
		resource := e.ObjectRef.Resource
		if e.ObjectRef.APIGroup != "" {
			resource += "." + e.ObjectRef.APIGroup
		}
		for _, sep := range separateStorage {
			if resource == sep {
				return
			}
		}
		if !c.proven[resource] {
			resource = "other"
		}
		served, done := e.RequestReceivedTimestamp.Time, e.StageTimestamp.Time
		var b Bounds
		if up, ok := revs.upper(done); ok && rv > up {
			b.Definite = 1
		}
		if rv > revs.lower(served, done.Add(judgeWithin)) {
			b.Possible = 1
		}
		if b.Possible == 0 {
			return
		}
		role, client := classify(e.User.Username, e.UserAgent)
		key := Series{}
		key.add("herd_too_large_resource_version_total", 0, "role", role, "client", client, "resource", resource, "detected_by", "revision")
		for k := range key {
			sb := res.BySeries[k]
			sb.Definite += b.Definite
			sb.Possible += b.Possible
			res.BySeries[k] = sb
		}
		ib := res.ByIdentity[e.User.Username]
		ib.Definite += b.Definite
		ib.Possible += b.Possible
		res.ByIdentity[e.User.Username] = ib
	})
	return res, err
}
