package e2e

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/stack"
)

// What herd did, read from the apiserver: its objects, its Events, the
// FlowSchema APF chose for a request, and every write in the audit log.

// auditRecord is one of the responder's writes in the audit log.
type auditRecord = stack.AuditWrite

// writesBy returns the mutating requests (create, update, patch, delete)
// that user made, at ResponseComplete, from the apiserver's audit log.
func writesBy(t *testing.T, logPath, user string) []auditRecord {
	t.Helper()
	ws, err := stack.WritesBy(logPath, user)
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

func unschedulable(ctx context.Context, t *testing.T, c kubernetes.Interface) []string {
	t.Helper()
	l, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range l.Items {
		if n.Spec.Unschedulable {
			out = append(out, n.Name)
		}
	}
	return out
}

// herdAPF lists the FlowSchemas and priority levels herd manages.
func herdAPF(ctx context.Context, t *testing.T, c kubernetes.Interface) (flowSchemas, levels []string) {
	t.Helper()
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=herd"}
	fs, err := c.FlowcontrolV1().FlowSchemas().List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := c.FlowcontrolV1().PriorityLevelConfigurations().List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range fs.Items {
		flowSchemas = append(flowSchemas, o.Name)
	}
	for _, o := range pl.Items {
		levels = append(levels, o.Name)
	}
	return flowSchemas, levels
}

// wroteOnly fails t for every write of the responder in the audit log,
// its bookkeeping aside, to an object not in owned ("resource/name").
func wroteOnly(t *testing.T, logPath string, owned ...string) {
	t.Helper()
	for _, w := range writesBy(t, logPath, stack.ResponderUser) {
		if w.Bookkeeping() || w.ObjectRef == nil {
			continue
		}
		if !slices.Contains(owned, w.ObjectRef.Resource+"/"+w.ObjectRef.Name) {
			t.Errorf("the responder wrote to %s, which is not its own", w)
		}
	}
}

// servedByIsolation checks, for each request as cfg's identity, whether
// APF serves it through the FlowSchema uid (isolated) or not.
func servedByIsolation(ctx context.Context, t *testing.T, cfg *rest.Config, uid types.UID, who string, cases []isolationCase) {
	t.Helper()
	for _, tc := range cases {
		got := servedBy(ctx, t, cfg, tc.uri)
		if (got == string(uid)) != tc.isolated {
			t.Errorf("%s %s: served by FlowSchema UID %q; herd's isolation is %s; want isolated=%v", who, tc.what, got, uid, tc.isolated)
		}
	}
}

// isolationCase is one request and whether an isolation must catch it.
type isolationCase struct {
	what, uri string
	isolated  bool
}

func appliedBy(mf []metav1.ManagedFieldsEntry, manager string) bool {
	for _, m := range mf {
		if m.Manager == manager && m.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}

func managers(mf []metav1.ManagedFieldsEntry) []string {
	var out []string
	for _, m := range mf {
		out = append(out, m.Manager+"/"+string(m.Operation))
	}
	return out
}

// checkEvent waits for an events.k8s.io Event with reason about an object
// of kind, from herd's responder.
func checkEvent(ctx context.Context, t *testing.T, c kubernetes.Interface, kind, reason string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		l, err := c.EventsV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, e := range l.Items {
				if e.Reason == reason && e.Regarding.Kind == kind && e.ReportingController == "herd.dev/responder" {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("no Event with reason %s regarding a %s from herd.dev/responder (err %v)", reason, kind, err)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// servedBy makes a request as cfg's identity and returns the UID of the
// FlowSchema that APF chose for it (the X-Kubernetes-PF-FlowSchema-UID
// response header).
func servedBy(ctx context.Context, t *testing.T, cfg *rest.Config, uri string) string {
	t.Helper()
	schema, _ := servedIn(ctx, t, cfg, uri)
	return schema
}

// servedIn is the FlowSchema and the priority level (their UIDs, from the
// X-Kubernetes-PF-* response headers) that served a GET of uri as cfg.
func servedIn(ctx context.Context, t *testing.T, cfg *rest.Config, uri string) (schema, level string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := controlplane.ServedBy(ctx, cfg, uri)
	if err != nil {
		t.Fatal(err)
	}
	return s.FlowSchemaUID, s.PriorityLevelUID
}

// apfDispatched reads apiserver_flowcontrol_dispatched_requests_total for
// a FlowSchema from the apiserver's /metrics.
func apfDispatched(ctx context.Context, t *testing.T, c kubernetes.Interface, flowSchema string) float64 {
	t.Helper()
	b, err := c.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		t.Fatalf("apiserver /metrics: %v", err)
	}
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "apiserver_flowcontrol_dispatched_requests_total{") && strings.Contains(line, `flow_schema="`+flowSchema+`"`) {
			if f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
				sum += f
			}
		}
	}
	return sum
}

// createMetricsServer creates a metrics-server Deployment without
// --kubelet-client-certificate/--kubelet-client-key: token mode (incident
// 004). It returns it as created.
func createMetricsServer(ctx context.Context, c kubernetes.Interface) (*appsv1.Deployment, error) {
	d := herdtest.MetricsServer("kube-system", "metrics-server", "k8s-app", "--secure-port=10250", "--kubelet-preferred-address-types=InternalIP", "--kubelet-use-node-status-port")
	return c.AppsV1().Deployments("kube-system").Create(ctx, d, metav1.CreateOptions{})
}
