package controlplane_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/test/controlplane"
)

// revision is the cluster's revision by a consistent read (what herd's
// cluster view reads).
func revision(ctx context.Context, t *testing.T, c kubernetes.Interface) uint64 {
	t.Helper()
	l, err := c.CoreV1().ConfigMaps(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	rv, err := strconv.ParseUint(l.ResourceVersion, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return rv
}

func configMap(name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// TestEtcdRestore pins what the apiserver does after an etcd restore, which
// herd's too-large and rewind detection rely on (docs/exporter.md, The
// cluster's revision): restored without --bump-revision the revision goes
// back, a LIST at a newer resourceVersion is a 504 "Too large resource
// version", and a watch from one is answered 200 and delivers nothing, not
// even a newer object; restored with --bump-revision and --mark-compacted
// the revision moves forward and a watch from an old resourceVersion gets
// 410 Gone.
func TestEtcdRestore(t *testing.T) {
	ctx, cp := start(t, 4*time.Minute, controlplane.Options{})
	admin := cp.Client(controlplane.Admin)
	cms := admin.CoreV1().ConfigMaps(metav1.NamespaceDefault)
	if _, err := cms.Create(ctx, configMap("before-snapshot"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "snapshot.db")
	snapRev, err := cp.SaveEtcdSnapshot(ctx, snap)
	if err != nil {
		t.Fatal(err)
	}
	// History the restore will lose.
	for i := range 50 {
		if _, err := cms.Create(ctx, configMap(fmt.Sprintf("after-snapshot-%d", i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lost := revision(ctx, t, admin)
	if lost < uint64(snapRev)+50 {
		t.Fatalf("revision %d after 50 writes on a snapshot at %d", lost, snapRev)
	}

	t.Run("without --bump-revision the revision goes back", func(t *testing.T) {
		if err := cp.RestoreEtcd(ctx, snap, controlplane.RestoreOptions{}); err != nil {
			t.Fatal(err)
		}
		now := revision(ctx, t, admin)
		if now >= lost || now < uint64(snapRev) {
			t.Fatalf("revision after the restore %d, want from the snapshot's %d and below %d", now, snapRev, lost)
		}
		if _, err := cms.Get(ctx, "after-snapshot-0", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("an object created after the snapshot: %v, want NotFound", err)
		}
		// A LIST at a resourceVersion from the lost history: the 504, asked
		// once. The answer carries Retry-After: 1 (k8s.io/apiserver@v0.36.3
		// pkg/storage/cacher/watch_cache.go, resourceVersionTooHighRetrySeconds),
		// so client-go's default request retries it up to ten times
		// (k8s.io/client-go@v0.36.3 rest/with_retry.go IsNextRetry): one
		// relist, eleven 3 s 504s in the audit log.
		err := admin.CoreV1().RESTClient().Get().Namespace(metav1.NamespaceDefault).Resource("configmaps").
			Param("resourceVersion", strconv.FormatUint(lost, 10)).MaxRetries(0).Do(ctx).Error()
		if !apierrors.IsTimeout(err) || !strings.Contains(err.Error(), "Too large resource version") {
			t.Errorf("LIST at the lost revision %d: %v, want 504 Too large resource version", lost, err)
		}
		// A watch from it: 200, then nothing, not even an object created now.
		w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: strconv.FormatUint(lost, 10)})
		if err != nil {
			t.Fatalf("watch from the lost revision: %v, want it accepted", err)
		}
		defer w.Stop()
		if _, err := cms.Create(ctx, configMap("after-restore"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-w.ResultChan():
			t.Errorf("the watch from the lost revision delivered %s %v", e.Type, e.Object)
		case <-time.After(3 * time.Second):
		}
	})

	t.Run("with --bump-revision and --mark-compacted it moves forward", func(t *testing.T) {
		before := revision(ctx, t, admin)
		const bump = 1_000_000
		if err := cp.RestoreEtcd(ctx, snap, controlplane.RestoreOptions{BumpRevision: bump}); err != nil {
			t.Fatal(err)
		}
		now := revision(ctx, t, admin)
		if now < uint64(snapRev)+bump || now <= lost || now <= before {
			t.Fatalf("revision after the bumped restore %d, want at least %d", now, uint64(snapRev)+bump)
		}
		w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: strconv.FormatUint(lost, 10)})
		if err != nil {
			if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
				t.Fatalf("watch from an old revision: %v, want 410 Gone", err)
			}
			return
		}
		defer w.Stop()
		select {
		case e := <-w.ResultChan():
			if st, ok := e.Object.(*metav1.Status); e.Type != watch.Error || !ok || st.Code != 410 {
				t.Errorf("watch from an old revision: %s %v, want an ERROR event 410 Gone", e.Type, e.Object)
			}
		case <-time.After(5 * time.Second):
			t.Error("a watch from an old revision after a bumped restore got nothing; want 410 Gone")
		}
	})
}
