package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/herd-k8s/herd/exporter/accounting"
)

// DefaultRevisionProbeInterval is how often the view reads the cluster's
// revision: often enough that a too-large request is counted seconds after
// it arrives and that an etcd rewind is seen, and herd's informers start
// over, well within a minute; rarely enough to cost nothing (one
// consistent read of one Node key).
const DefaultRevisionProbeInterval = 10 * time.Second

// The cluster's revision.
//
// Every resourceVersion of the main storage is an etcd revision, one
// counter for the whole cluster. herd's informers see it move in their
// events and bookmarks (client-go@v0.36.3 tools/cache/reflector.go:
// handleAnyWatch calls setLastSyncResourceVersion with every event's
// resourceVersion, a watch.Bookmark's included, and list and watchList set
// it from the list's metadata or the initial-events-end bookmark;
// tools/cache/shared_informer.go sharedIndexInformer.LastSyncResourceVersion
// reads it). But they only see Nodes and Leases, and bookmarks come about
// once a minute (k8s.io/apiserver@v0.36.3 pkg/storage/cacher/
// cache_watcher.go nextBookmarkTime), so their revision lags the cluster's:
// a kubelet holding a pod's resourceVersion is routinely ahead of it. Worse,
// after etcd is restored from a snapshot without --bump-revision the
// revision goes back, and a watch from a resourceVersion the cluster no
// longer has is served with nothing at all (pkg/storage/cacher/
// watch_cache.go getAllEventsSinceLocked returns the events after it, none;
// cache_watcher.go process sends only events newer than it): the
// informers' revision stays where it was, blind.
//
// So the view proves the revision with a consistent read: a WatchList (a
// watch with sendInitialEvents=true and no resourceVersion) of one Node
// name, closed at its initial-events-end bookmark. Without a
// resourceVersion the apiserver asks etcd for its current revision
// (k8s.io/apiserver@v0.36.3 pkg/storage/cacher/cacher.go
// getWatchCacheResourceVersion, pkg/storage/etcd3/store.go
// GetCurrentResourceVersion), waits until its cache has reached it
// (waitUntilWatchCacheFreshAndForceAllEvents), and ends the initial events
// with a bookmark at the cache's revision (setInitialEventsEndBookmarkIfRequested):
// at least every revision committed before the read started — so at least
// every resourceVersion any client was given before then. That is what
// makes the ledger's too-large check free of false positives
// (accounting.RevisionSource): a request is judged only against a read that
// started after herd received its audit event. It is a watch of one key, as
// herd's informers start (SPEC §3.1: herd never LISTs): the cacher reads one
// object for a metadata.name selector (watch_cache.go
// getAllEventsSinceLocked), here a name no Node has.
//
// A read below what the view has already seen — a read's, or an informer's
// last synced resourceVersion read before it started — can only mean the
// cluster went back: etcd restored without --bump-revision (incident
// 000's cause). The view counts it, logs it, and starts its informers over
// from the new revision, so that its Nodes and Leases are right again.
type revision struct {
	ticket atomic.Uint64
	proof  atomic.Pointer[revisionProof]

	mu sync.Mutex
	// known is the highest revision seen since the last rewind: reads,
	// and the trusted informers' last synced resourceVersion.
	known      uint64
	lastRewind accounting.Rewind

	probes, failures, rewinds, restarts atomic.Uint64
}

type revisionProof struct{ ticket, revision uint64 }

var _ accounting.RevisionSource = (*View)(nil)

// RevisionTicket implements accounting.RevisionSource: the number of
// revision reads started so far.
func (v *View) RevisionTicket() uint64 { return v.rev.ticket.Load() }

// ProvenRevision implements accounting.RevisionSource: the last completed
// read's ticket and revision.
func (v *View) ProvenRevision() (ticket, revision uint64, ok bool) {
	p := v.rev.proof.Load()
	if p == nil {
		return 0, 0, false
	}
	return p.ticket, p.revision, true
}

// Revision reports the view's revision state.
func (v *View) Revision() accounting.RevisionStatus {
	s := accounting.RevisionStatus{
		Probes: v.rev.probes.Load(), ProbeFailures: v.rev.failures.Load(),
		Rewinds: v.rev.rewinds.Load(), Restarts: v.rev.restarts.Load(),
	}
	if p := v.rev.proof.Load(); p != nil {
		s.Revision = p.revision
	}
	v.rev.mu.Lock()
	s.LastRewind = v.rev.lastRewind
	v.rev.mu.Unlock()
	return s
}

// probeRevisions reads the revision every RevisionProbeInterval until ctx
// ends.
func (v *View) probeRevisions(ctx context.Context) {
	t := time.NewTicker(v.opts.RevisionProbeInterval)
	defer t.Stop()
	for {
		if err := v.probeRevision(ctx); err != nil && ctx.Err() == nil {
			v.rev.failures.Add(1)
			v.opts.Logger.Debug("cluster revision read failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeRevision reads the cluster's revision once, and on a rewind starts
// the informers over.
func (v *View) probeRevision(ctx context.Context) error {
	seen := v.informersRevision() // before the read starts: the read must be at least this
	ticket := v.rev.ticket.Add(1)
	rctx, cancel := context.WithTimeout(ctx, v.opts.RevisionProbeInterval)
	defer cancel()
	rev, err := readRevision(rctx, v.client)
	if err != nil {
		return err
	}
	v.rev.probes.Add(1)
	v.rev.mu.Lock()
	known := max(v.rev.known, seen)
	rewound := rev < known
	if rewound {
		v.rev.lastRewind = accounting.Rewind{From: known, To: rev, At: v.now()}
	}
	v.rev.known = rev // not rewound: rev ≥ known
	v.rev.mu.Unlock()
	if rewound {
		v.rev.rewinds.Add(1)
		v.opts.Logger.Warn("the cluster's revision went back: etcd was restored from a snapshot without --bump-revision; "+
			"clients holding a newer resourceVersion are blind or failing until they relist; herd's informers start over",
			"from", known, "to", rev)
		v.restart()
	}
	// Published after a rewind's restart has made the old informers
	// untrusted, so that no later read compares with them.
	v.rev.proof.Store(&revisionProof{ticket: ticket, revision: rev})
	return nil
}

// informersRevision is the highest last synced resourceVersion of the
// informers the view trusts: the newest generation's (after a rewind, the
// old one's revision is the lost history's).
func (v *View) informersRevision() uint64 {
	v.mu.RLock()
	g := v.gen
	if v.next != nil {
		g = v.next
	}
	v.mu.RUnlock()
	var rev uint64
	for _, inf := range []interface{ LastSyncResourceVersion() string }{g.nodes, g.leases} {
		if r, err := strconv.ParseUint(inf.LastSyncResourceVersion(), 10, 64); err == nil {
			rev = max(rev, r)
		}
	}
	return rev
}

// restart starts a new generation of informers, from the cluster's
// current state; readers keep the old one until the new one has synced,
// then it is stopped. A later restart supersedes one still syncing.
func (v *View) restart() {
	v.mu.Lock()
	if v.ctx == nil {
		v.mu.Unlock()
		return
	}
	if v.next != nil {
		v.next.cancel()
	}
	g := v.newGeneration()
	v.next = g
	ctx := v.ctx
	g.start(ctx)
	v.mu.Unlock()
	go func() {
		if !g.synced(g.done) {
			return // superseded, or the view stopped
		}
		v.mu.Lock()
		if v.next != g {
			v.mu.Unlock()
			return
		}
		old := v.gen
		v.gen, v.next = g, nil
		v.mu.Unlock()
		old.cancel()
		v.rev.restarts.Add(1)
		v.opts.Logger.Info("cluster view relisted after the revision went back",
			"nodes", len(g.nodes.GetStore().ListKeys()), "leases", len(g.leases.GetStore().ListKeys()))
	}()
}

// revisionProbeNode is the Node name the revision read selects: a name no
// Node has (a Node may have it; its events are ignored).
const revisionProbeNode = "herd.dev-revision-probe"

// readRevision reads the cluster's revision with a one-object WatchList and
// returns its initial-events-end bookmark's resourceVersion.
func readRevision(ctx context.Context, c kubernetes.Interface) (uint64, error) {
	timeout := int64(30)
	if d, ok := ctx.Deadline(); ok {
		timeout = max(1, int64(time.Until(d).Seconds()))
	}
	w, err := c.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{
		FieldSelector:        "metadata.name=" + revisionProbeNode,
		SendInitialEvents:    ptr.To(true),
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
		AllowWatchBookmarks:  true,
		TimeoutSeconds:       &timeout,
	})
	if err != nil {
		return 0, fmt.Errorf("watch one node: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("watch one node: no initial-events-end bookmark: %w", ctx.Err())
		case e, ok := <-w.ResultChan():
			if !ok {
				return 0, errors.New("watch one node: closed before its initial-events-end bookmark")
			}
			if e.Type == watch.Error {
				return 0, fmt.Errorf("watch one node: %w", apierrors.FromObject(e.Object))
			}
			if e.Type != watch.Bookmark {
				continue
			}
			m, err := meta.Accessor(e.Object)
			if err != nil || m.GetAnnotations()[metav1.InitialEventsAnnotationKey] != "true" {
				continue
			}
			rev, err := strconv.ParseUint(m.GetResourceVersion(), 10, 64)
			if err != nil || rev == 0 {
				return 0, fmt.Errorf("watch one node: bookmark resourceVersion %q is not a revision", m.GetResourceVersion())
			}
			return rev, nil
		}
	}
}
