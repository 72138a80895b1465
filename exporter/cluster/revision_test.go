package cluster

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// clusterRevision answers the view's revision reads (a WatchList of one
// Node name) with an initial-events-end bookmark at the revision a test
// sets; the informers' own reads go to the fake clientset as usual.
func clusterRevision(client *fake.Clientset, rev *atomic.Uint64) {
	client.PrependWatchReactor("nodes", func(a k8stesting.Action) (bool, watch.Interface, error) {
		opts := a.(k8stesting.WatchActionImpl).ListOptions
		if opts.FieldSelector != "metadata.name="+revisionProbeNode {
			return false, nil, nil
		}
		if opts.SendInitialEvents == nil || !*opts.SendInitialEvents || opts.ResourceVersion != "" || !opts.AllowWatchBookmarks {
			return true, nil, fmt.Errorf("the revision read is not a consistent WatchList: %+v", opts)
		}
		w := watch.NewFakeWithChanSize(1, false)
		w.Action(watch.Bookmark, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			ResourceVersion: strconv.FormatUint(rev.Load(), 10),
			Annotations:     map[string]string{metav1.InitialEventsAnnotationKey: "true"},
		}})
		return true, w, nil
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s", what)
		}
	}
}

// The view proves the revision with consistent reads, and a read below
// one it has seen is a rewind: counted, and the informers start over — a
// new generation replaces the old one once it has synced, and the old one
// stops. A revision that only grows is no rewind.
func TestRevisionReadsAndRewind(t *testing.T) {
	client := fake.NewSimpleClientset(realisticNode(1), realisticNode(2), lease(realisticNode(1).Name, time.Now()))
	var rev atomic.Uint64
	rev.Store(500)
	clusterRevision(client, &rev)
	v := New(client, Options{Grace: time.Minute, RevisionProbeInterval: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Start(ctx)
	waitFor(t, "the view to sync and read the revision", func() bool { return v.Synced() && v.Revision().Revision == 500 })
	ticket, r, ok := v.ProvenRevision()
	if !ok || r != 500 || ticket == 0 || ticket > v.RevisionTicket() {
		t.Fatalf("proven revision = ticket %d, revision %d, %v (current ticket %d)", ticket, r, ok, v.RevisionTicket())
	}
	rev.Store(900)
	waitFor(t, "revision 900", func() bool { return v.Revision().Revision == 900 })
	if s := v.Revision(); s.Rewinds != 0 || s.Restarts != 0 || s.ProbeFailures != 0 {
		t.Fatalf("a growing revision: %+v", s)
	}

	old := v.current()
	rev.Store(640) // etcd restored from an older snapshot without --bump-revision
	waitFor(t, "the rewind to be seen and the informers to start over", func() bool { return v.Revision().Restarts == 1 })
	s := v.Revision()
	if s.Rewinds != 1 || s.LastRewind.From != 900 || s.LastRewind.To != 640 || s.Revision != 640 {
		t.Errorf("after the rewind: %+v, want one rewind 900 → 640", s)
	}
	if v.current() == old {
		t.Error("the view still reads the informers from before the rewind")
	}
	select {
	case <-old.done:
	case <-time.After(5 * time.Second):
		t.Error("the old informers were not stopped")
	}
	if v.Nodes() != 2 {
		t.Errorf("after starting over the view has %d Nodes, want 2", v.Nodes())
	}
	if _, ok := v.LeaseAge(realisticNode(1).Name); !ok {
		t.Error("after starting over the view lost node 1's Lease")
	}
	if n, ok := v.NodeForIP([]byte("10.0.0.2")); !ok || n != realisticNode(2).Name {
		t.Errorf("after starting over NodeForIP(10.0.0.2) = %q %v", n, ok)
	}
	// The revision grows again from there: no further rewind.
	rev.Store(700)
	waitFor(t, "revision 700", func() bool { return v.Revision().Revision == 700 })
	if s := v.Revision(); s.Rewinds != 1 {
		t.Errorf("rewinds = %d after the revision grew again, want 1", s.Rewinds)
	}
}

// A failing read proves nothing: no revision, nothing judged, counted.
func TestRevisionReadFailure(t *testing.T) {
	client := fake.NewSimpleClientset()
	client.PrependWatchReactor("nodes", func(a k8stesting.Action) (bool, watch.Interface, error) {
		if a.(k8stesting.WatchActionImpl).ListOptions.FieldSelector != "metadata.name="+revisionProbeNode {
			return false, nil, nil
		}
		w := watch.NewFakeWithChanSize(1, false)
		w.Action(watch.Bookmark, &corev1.Node{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "not-a-revision",
			Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}})
		return true, w, nil
	})
	v := New(client, Options{RevisionProbeInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Start(ctx)
	waitFor(t, "failed reads", func() bool { return v.Revision().ProbeFailures >= 2 })
	if _, _, ok := v.ProvenRevision(); ok || v.Revision().Revision != 0 || v.Revision().Probes != 0 {
		t.Errorf("a failed read proved something: %+v", v.Revision())
	}
}
