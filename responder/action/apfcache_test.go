package action

import (
	"context"
	"errors"
	"testing"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/herd-k8s/herd/responder/alert"
)

func fsAt(name, rv, client string) *flowcontrolv1.FlowSchema {
	return &flowcontrolv1.FlowSchema{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: rv,
		Annotations: map[string]string{AnnotationClient: client}}}
}

// TestAPFCacheOverlay: what herd wrote shows until the informer shows it or
// something newer, a delete hides the object until the informer drops it,
// and an overlay lasts a minute at most.
func TestAPFCacheOverlay(t *testing.T) {
	client := fake.NewClientset(fsAt("herd-isolate-1", "10", "old"), fsAt("herd-isolate-2", "20", "kept"))
	c := syncedAPF(t, client)
	now := t0
	c.now = func() time.Time { return now }
	get := func(name string) string {
		t.Helper()
		fs, err := c.FlowSchema(name)
		if err != nil {
			t.Fatal(err)
		}
		if fs == nil {
			return "none"
		}
		return fs.Annotations[AnnotationClient]
	}
	listed := func() int {
		all, err := c.FlowSchemas()
		if err != nil {
			t.Fatal(err)
		}
		return len(all)
	}

	// A write newer than the informer's object, and a new one.
	c.Wrote(fsAt("herd-isolate-1", "11", "new"))
	c.Wrote(fsAt("herd-isolate-3", "12", "created"))
	if get("herd-isolate-1") != "new" || get("herd-isolate-3") != "created" || listed() != 3 {
		t.Errorf("after the writes: %s %s, %d listed", get("herd-isolate-1"), get("herd-isolate-3"), listed())
	}
	// A delete hides the informer's object.
	c.Deleted("herd-isolate-2", "20")
	if get("herd-isolate-2") != "none" || listed() != 2 {
		t.Errorf("after the delete: %s, %d listed", get("herd-isolate-2"), listed())
	}
	// The informer catches up (the fake's objects carry what the apiserver
	// would have returned).
	if _, err := client.FlowcontrolV1().FlowSchemas().Update(context.Background(), fsAt("herd-isolate-1", "13", "someone"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return get("herd-isolate-1") == "someone" })
	// Created again by someone after herd's delete: shown.
	if _, err := client.FlowcontrolV1().FlowSchemas().Update(context.Background(), fsAt("herd-isolate-2", "30", "recreated"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return get("herd-isolate-2") == "recreated" })
	// An overlay the informer never confirms lasts a minute.
	now = now.Add(recentFor + time.Second)
	if get("herd-isolate-3") != "none" {
		t.Errorf("an unconfirmed write after a minute: %s", get("herd-isolate-3"))
	}
}

// TestAPFCacheWriteThenDeletedByAnother: the watch shows herd's write,
// then another deletes the object (the garbage collector, once its owner
// is gone): the cache shows it gone, not herd's write, with no read in
// between.
func TestAPFCacheWriteThenDeletedByAnother(t *testing.T) {
	client := fake.NewClientset()
	c := syncedAPF(t, client)
	// (The fake keeps the resourceVersion it is given.)
	written, err := client.FlowcontrolV1().FlowSchemas().Create(context.Background(), fsAt("herd-measure-1", "5", "herd"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Wrote(written)
	if err := client.FlowcontrolV1().FlowSchemas().Delete(context.Background(), "herd-measure-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Wait for the watch's delete, not only for the overlay to go: the
	// watch's add of herd's own write also drops the overlay, and may come
	// after Wrote.
	waitFor(t, func() bool {
		if _, cached, _ := c.fs.GetStore().GetByKey("herd-measure-1"); cached {
			return false
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.recent["herd-measure-1"]
		return !ok
	})
	if fs, _ := c.FlowSchema("herd-measure-1"); fs != nil {
		t.Errorf("deleted by another after herd's write, still shown: %+v", fs.ObjectMeta)
	}
}

func TestAPFCacheNotSynced(t *testing.T) {
	c := NewAPFCache(fake.NewClientset())
	if _, err := c.FlowSchemas(); !errors.Is(err, alert.ErrTransient) {
		t.Errorf("FlowSchemas before sync: %v, want a transient error", err)
	}
	if _, err := c.PriorityLevel(IsolateLevel); !errors.Is(err, alert.ErrTransient) {
		t.Errorf("PriorityLevel before sync: %v", err)
	}
	if c.Synced() {
		t.Error("synced without running")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}
