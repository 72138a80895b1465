package drill

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/stack"
)

// The requests of the drill.
const (
	// StormURI is an unfiltered consistent LIST of every pod: what `ab -c
	// 100 .../api/v1/pods` sent in incident 002, and what a CNI agent or a
	// DaemonSet without a field selector sends when it relists.
	StormURI = "/api/v1/pods"
	// SchedulerUserAgent is the reader that shares the storm's priority
	// level (workload-high).
	SchedulerUserAgent = "kube-scheduler/v1.36.3 (linux/amd64) kubernetes/herdsim"
)

// KubeletPodsURI is node's kubelet's consistent LIST of its own pods.
func KubeletPodsURI(node string) string {
	return "/api/v1/pods?fieldSelector=spec.nodeName%3D" + node
}

// Scheduler runs kube-scheduler's reads, a GET of one heavy pod every
// 100 ms (OpenLoop, at most 400 at once), until the returned stop.
func Scheduler(ctx context.Context, c *Client, rec *Recorder) (stop func()) {
	return herdtest.Background(ctx, func(ctx context.Context) {
		OpenLoop(ctx, c, SchedulerURI(), 100*time.Millisecond, 400, rec)
	})
}

// SchedulerURI is a GET of one heavy pod.
func SchedulerURI() string { return "/api/v1/namespaces/" + Namespace + "/pods/" + PodName(0) }

// CiliumClients are n cilium-agents (service account kube-system/cilium:
// APF's kube-system-service-accounts schema, level workload-high), agent i
// on stack Node i+1's address so herd attributes each to its node.
func CiliumClients(s *stack.Stack, n int, timeout time.Duration) ([]*Client, error) {
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = stack.NodeIP(i + 1)
	}
	return CiliumClientsAt(s, addrs, timeout)
}

// CiliumClientsAt are cilium-agents on the nodes at addrs, one each (a
// DaemonSet's pod in the node's host network): as CiliumClients.
func CiliumClientsAt(s *stack.Stack, addrs []string, timeout time.Duration) ([]*Client, error) {
	out := make([]*Client, 0, len(addrs))
	for i, addr := range addrs {
		c, err := NewClient(s.CP.Config(controlplane.Cilium), nodesim.CiliumAgentUserAgent, addr, timeout)
		if err != nil {
			CloseAll(out)
			return nil, fmt.Errorf("cilium-agent %d: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// KubeletClients are the kubelets of stack Nodes 1..n.
func KubeletClients(s *stack.Stack, n int, timeout time.Duration) ([]*Client, error) {
	out := make([]*Client, 0, n)
	for i := range n {
		c, err := NewClient(s.CP.Config(controlplane.KubeletIdentity(stack.NodeName(i+1))), nodesim.KubeletUserAgent, "", timeout)
		if err != nil {
			CloseAll(out)
			return nil, fmt.Errorf("kubelet %d: %w", i+1, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// SchedulerClient reads as system:kube-scheduler (APF's kube-scheduler
// schema: workload-high, the storm's level).
func SchedulerClient(s *stack.Stack, timeout time.Duration) (*Client, error) {
	return NewClient(s.CP.Config(controlplane.KubeScheduler), SchedulerUserAgent, "", timeout)
}

// CloseAll closes clients.
func CloseAll(cs []*Client) {
	for _, c := range cs {
		c.Close()
	}
}

// Response is how the stack answered a storm, as an operator sees it.
type Response struct {
	// Pending and Firing are when Prometheus had the alert pending (its
	// activeAt) and when it was first seen firing.
	Pending, Firing time.Time
	// Labels are the alert's labels when first seen.
	Labels map[string]string
	// Decided is when the responder's first decision of the action for the
	// alert (applied, or dry_run when it runs dry) was done, its objects
	// written; Decision is that decision.
	Decided  time.Time
	Decision stack.Decision
	// Resolved is when the responder handled the alert's resolution.
	Resolved        time.Time
	ResolveDecision stack.Decision
	// Failures are the firing decisions that failed or were refused before
	// Decided (the responder could not act yet), oldest first.
	Failures []stack.Decision
	// Last is the latest decision about the firing alert, whatever its
	// result (a no-op too).
	Last stack.Decision
}

// ResponseWatch polls Prometheus and the responder every 250 ms for an
// alert and the responder's decision about it.
type ResponseWatch struct {
	stop func() // herdtest.Background's

	mu sync.Mutex
	r  Response
}

// WatchResponse follows alert (with labels match) and the responder's
// action for it, from now until Stop. The action's decisions for the
// alerts in alsoBy count as well: isolate's fast path
// (HerdSynchronizedRelist) usually isolates a storm before
// HerdRelistStorm fires, whose own decision is then a no-op. A decision
// counts only if its alert's labels agree with match.
func WatchResponse(s *stack.Stack, alert string, match map[string]string, action string, alsoBy ...string) *ResponseWatch {
	w := &ResponseWatch{}
	since := time.Now()
	w.stop = herdtest.Background(context.Background(), func(ctx context.Context) {
		poll := func() { w.poll(ctx, s, alert, match, action, alsoBy, since) }
		poll()
		herdtest.Every(ctx, 250*time.Millisecond, poll)
	})
	return w
}

func (w *ResponseWatch) poll(ctx context.Context, s *stack.Stack, alert string, match map[string]string, action string, alsoBy []string, since time.Time) {
	a, _ := s.Alert(ctx, alert, match)
	ds, _ := s.Responder.Decisions(ctx)
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if a != nil {
		if w.r.Pending.IsZero() {
			w.r.Pending = a.ActiveAt
			w.r.Labels = map[string]string{}
			for k, v := range a.Labels {
				w.r.Labels[string(k)] = string(v)
			}
		}
		if a.State == v1.AlertStateFiring && w.r.Firing.IsZero() {
			w.r.Firing = now
		}
	}
	w.r.Failures = w.r.Failures[:0]
	for _, d := range ds {
		if string(d.Action) != action || (d.Alert != alert && !slices.Contains(alsoBy, d.Alert)) || d.Time.Before(since) || !labelsAgree(d.Labels, match) {
			continue
		}
		if d.Status == "firing" {
			w.r.Last = d
		}
		if d.Status == "firing" && (d.Result == "failed" || d.Result == "refused") && (w.r.Decided.IsZero() || d.Time.Before(w.r.Decision.Time)) {
			w.r.Failures = append(w.r.Failures, d)
		}
		if d.Status == "firing" && w.r.Decided.IsZero() && (d.Result == "applied" || d.Result == "dry_run") {
			w.r.Decided, w.r.Decision = doneAt(d), d
		}
		if d.Status == "resolved" && !w.r.Decided.IsZero() && w.r.Resolved.IsZero() {
			w.r.Resolved, w.r.ResolveDecision = doneAt(d), d
		}
	}
}

// labelsAgree reports whether a decision's alert labels contradict none of
// match: a decision about another client (the hollow kubelets' start-up, a
// synchronized relist too) is not the storm's.
func labelsAgree(labels, match map[string]string) bool {
	for k, v := range match {
		if got, ok := labels[k]; ok && got != v {
			return false
		}
	}
	return true
}

// doneAt is when a decision finished: its time is when it started.
func doneAt(d stack.Decision) time.Time {
	return d.Time.Add(time.Duration(d.DurationMS * float64(time.Millisecond)))
}

// Snapshot is what has been seen so far.
func (w *ResponseWatch) Snapshot() Response {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.r
	r.Failures = slices.Clone(w.r.Failures)
	return r
}

// Stop ends the polling.
func (w *ResponseWatch) Stop() { w.stop() }
