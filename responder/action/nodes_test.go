package action

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestNodeCache(t *testing.T) {
	client := fake.NewClientset(node("n1"), node("n2", unschedulable), node("n3", herdCordoned))
	c := NewNodeCache(client)
	if _, _, err := c.Count(); !errors.Is(err, errNodesNotSynced) {
		t.Fatalf("Count before sync: %v", err)
	}
	if c.Synced() {
		t.Fatal("synced before start")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.Start(ctx)
	if !c.WaitForSync(ctx) || !c.Synced() {
		t.Fatal("no sync")
	}
	total, un, err := c.Count()
	if err != nil || total != 3 || !reflect.DeepEqual(un, map[string]bool{"n2": true, "n3": true}) {
		t.Fatalf("Count = %d, %v, %v", total, un, err)
	}
	// Count returns a fresh map each time: the cordon adds to it.
	un["x"] = true
	if _, un2, _ := c.Count(); un2["x"] {
		t.Error("Count shares its map")
	}
	// The watch keeps it current.
	if _, err := client.CoreV1().Nodes().Create(ctx, node("n4", unschedulable), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Nodes().Delete(ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		total, un, _ = c.Count()
		if total == 3 && reflect.DeepEqual(un, map[string]bool{"n3": true, "n4": true}) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the cache did not follow: %d, %v", total, un)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestSlimNode(t *testing.T) {
	n := node("n1", herdCordoned, withLabel("pool", "a"), func(n *corev1.Node) {
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		n.Spec.PodCIDR = "10.0.0.0/24"
	})
	got, err := slimNode(n)
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", ResourceVersion: "42", Labels: map[string]string{"kubernetes.io/hostname": "n1", "pool": "a"}},
		Spec:       corev1.NodeSpec{Unschedulable: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("slimNode = %+v", got)
	}
	if o, _ := slimNode("tombstone"); o != "tombstone" {
		t.Errorf("slimNode of a non-node = %v", o)
	}
}
