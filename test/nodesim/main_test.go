package nodesim_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/test/controlplane"
)

// The tests share one control plane (starting one costs seconds on 2 cores)
// with an in-process https audit webhook sink. The restart test restarts its
// apiserver; the others do not depend on it staying up between tests.
var (
	envOnce sync.Once
	envErr  error
	env     *testEnv
)

type testEnv struct {
	cp    *controlplane.ControlPlane
	sink  *controlplane.AuditSink
	admin kubernetes.Interface
}

// Nodes that exist as Node objects, and a kubelet identity without one.
var (
	liveNodes = []string{"node-1", "node-2", "node-3"}
	ghostNode = "old-worker-7"
)

// podsPerNode pods are bound to each live node before the tests run.
const podsPerNode = 3

func TestMain(m *testing.M) {
	code := m.Run()
	if env != nil {
		env.cp.Stop()
		env.sink.Close()
	}
	os.Exit(code)
}

// sharedEnv starts the control plane once. Missing binaries fail the test
// with the harness's instructions (never a skip).
func sharedEnv(t *testing.T) *testEnv {
	t.Helper()
	envOnce.Do(func() { env, envErr = startEnv() })
	if envErr != nil {
		t.Fatal(envErr)
	}
	return env
}

func startEnv() (*testEnv, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sink := controlplane.NewAuditSink("nodesim-audit-token")
	opts := controlplane.Options{
		Nodes:                    append(append([]string(nil), liveNodes...), ghostNode),
		AuditWebhookBatchMaxWait: 100 * time.Millisecond,
	}
	sink.Wire(&opts)
	cp, err := controlplane.Start(ctx, opts)
	if err != nil {
		sink.Close()
		return nil, err
	}
	e := &testEnv{cp: cp, sink: sink, admin: cp.Client(controlplane.Admin)}
	if err := e.seed(ctx); err != nil {
		cp.Stop()
		sink.Close()
		return nil, fmt.Errorf("seed control plane: %w", err)
	}
	return e, nil
}

// seed creates the live Nodes and podsPerNode pods on each.
func (e *testEnv) seed(ctx context.Context) error {
	for i, n := range liveNodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.0.0.%d", i+1)},
			}},
		}
		if _, err := e.admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create node %s: %w", n, err)
		}
		for j := 0; j < podsPerNode; j++ {
			if err := createPod(ctx, e.admin, fmt.Sprintf("%s-pod-%d", n, j), n); err != nil {
				return err
			}
		}
	}
	return nil
}

func createPod(ctx context.Context, c kubernetes.Interface, name, node string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
	if _, err := c.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create pod %s on %s: %w", name, node, err)
	}
	return nil
}

// deletePod removes a pod at once: with no kubelet to confirm, a graceful
// delete would leave it terminating for ever.
func deletePod(e *testEnv, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = e.admin.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
}

// since is a view of the events that arrive from now on, so a test's
// counts are not disturbed by earlier tests (or earlier -count runs) that
// used the same identities and URIs.
func since(s *controlplane.AuditSink) *auditView { return &auditView{s: s, from: s.Len()} }

type auditView struct {
	s    *controlplane.AuditSink
	from int
}

// count returns how many events in the view satisfy pred.
func (v *auditView) count(pred func(auditv1.Event) bool) int {
	n := 0
	for _, e := range v.s.EventsFrom(v.from) {
		if pred(e) {
			n++
		}
	}
	return n
}

// matching returns the events of user's request with requestURI uri.
func (v *auditView) matching(user, uri string) []auditv1.Event {
	var out []auditv1.Event
	for _, e := range v.s.EventsFrom(v.from) {
		if e.User.Username == user && e.RequestURI == uri {
			out = append(out, e)
		}
	}
	return out
}

// waitStages waits until user's request uri has an event in each stage.
func (v *auditView) waitStages(t *testing.T, user, uri string, stages ...auditv1.Stage) map[auditv1.Stage]auditv1.Event {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := map[auditv1.Stage]auditv1.Event{}
		for _, e := range v.matching(user, uri) {
			got[e.Stage] = e
		}
		var missing []string
		for _, st := range stages {
			if _, ok := got[st]; !ok {
				missing = append(missing, string(st))
			}
		}
		if len(missing) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit: %s %s: no event in stage(s) %v; have %v", user, uri, missing, stageList(got))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitCount waits up to a few seconds for want events of user's uri in stage
// and returns how many there are (more than want is a failure the caller
// reports).
func (v *auditView) waitCount(user, uri string, stage auditv1.Stage, want int) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, e := range v.matching(user, uri) {
			if e.Stage == stage {
				n++
			}
		}
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func stageList(m map[auditv1.Stage]auditv1.Event) []string {
	var out []string
	for st := range m {
		out = append(out, string(st))
	}
	return out
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
