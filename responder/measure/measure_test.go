package measure

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/herd-k8s/herd/responder/action"
	"github.com/herd-k8s/herd/responder/policy"
)

type fixture struct {
	client *fake.Clientset
	apf    *action.APFCache
	c      *Controller
	reg    *prometheus.Registry
	leader atomic.Bool
}

var ownerRole = &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "herd-responder", UID: "role-uid"}}

// newFixture runs a Controller on a fake clientset holding the
// apiserver's own APF configuration and objs.
func newFixture(t *testing.T, cfg policy.Measurement, objs ...runtime.Object) *fixture {
	t.Helper()
	all, levels := apiserverConfig()
	for _, fs := range all {
		objs = append(objs, fs)
	}
	for _, pl := range levels {
		objs = append(objs, pl)
	}
	f := &fixture{client: fake.NewClientset(objs...), reg: prometheus.NewRegistry()}
	f.leader.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.apf = action.NewAPFCache(f.client)
	var err error
	if f.c, err = New(Options{Client: f.client, APF: f.apf, Config: cfg, IsLeader: f.leader.Load, Registerer: f.reg}); err != nil {
		t.Fatal(err)
	}
	f.apf.Start(ctx)
	if !f.apf.WaitForSync(ctx) {
		t.Fatal("APF cache did not sync")
	}
	return f
}

// writes are the fake's requests but lists and watches (the informers')
// since the last call, as "verb resource/name".
func (f *fixture) writes() []string {
	var out []string
	for _, a := range f.client.Actions() {
		switch a.GetVerb() {
		case "list", "watch":
			continue
		}
		name := ""
		if n, ok := a.(interface{ GetName() string }); ok {
			name = n.GetName()
		}
		out = append(out, a.GetVerb()+" "+a.GetResource().Resource+"/"+name)
	}
	f.client.ClearActions()
	return out
}

// settle waits until the cache shows n measurement schemas.
func (f *fixture) settle(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		all, _ := f.apf.FlowSchemas()
		got := 0
		for _, fs := range all {
			if isMeasurement(fs) {
				got++
			}
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cache shows %d measurement schemas, want %d", got, n)
		}
	}
}

func TestReconcile(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, measuring(cilium, nodes), ownerRole)
	f.writes()

	st := f.c.Reconcile(ctx)
	if len(st.Errors) > 0 {
		t.Fatalf("errors: %v", st.Errors)
	}
	if got, want := strings.Join(f.writes(), ", "), "get clusterroles/herd-responder, patch flowschemas/herd-measure-1, patch flowschemas/herd-measure-2"; got != want {
		t.Errorf("first reconcile: %s\nwant %s", got, want)
	}
	fs, err := f.client.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-measure-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(fs.OwnerReferences) != 1 || fs.OwnerReferences[0].UID != "role-uid" || fs.Spec.PriorityLevelConfiguration.Name != "workload-high" ||
		fs.Annotations[action.AnnotationClient] != "cilium-agent" {
		t.Errorf("herd-measure-1: %+v %+v", fs.ObjectMeta, fs.Spec)
	}
	f.settle(t, 2)
	f.writes() // the test's own GET
	f.c.Reconcile(ctx)
	if w := f.writes(); len(w) != 0 {
		t.Errorf("a reconcile with nothing to change made requests: %v", w)
	}
	if got := testutil.ToFloat64(f.c.m.schemas.WithLabelValues(stateMeasuring)); got != 2 {
		t.Errorf("measuring %v", got)
	}

	t.Run("the serving schema changes: herd's follows", func(t *testing.T) {
		ks, err := f.client.FlowcontrolV1().FlowSchemas().Get(ctx, "kube-system-service-accounts", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ks.Spec.PriorityLevelConfiguration.Name = "workload-low"
		if _, err := f.client.FlowcontrolV1().FlowSchemas().Update(ctx, ks, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if fs, _ := f.apf.FlowSchema("kube-system-service-accounts"); fs.Spec.PriorityLevelConfiguration.Name == "workload-low" {
				break
			} else if time.Now().After(deadline) {
				t.Fatal("the cache did not see the change")
			}
		}
		f.writes()
		f.c.Reconcile(ctx)
		if got, want := strings.Join(f.writes(), ", "), "get clusterroles/herd-responder, patch flowschemas/herd-measure-1"; got != want {
			t.Errorf("%s, want %s", got, want)
		}
		fs, _ := f.client.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-measure-1", metav1.GetOptions{})
		if fs.Spec.PriorityLevelConfiguration.Name != "workload-low" {
			t.Errorf("herd-measure-1 routes to %s", fs.Spec.PriorityLevelConfiguration.Name)
		}
		f.writes()
	})

	t.Run("not the leader: plans, writes nothing", func(t *testing.T) {
		f.leader.Store(false)
		defer f.leader.Store(true)
		f.c.opts.Config.Enabled = false
		defer func() { f.c.opts.Config.Enabled = true }()
		st := f.c.Reconcile(ctx)
		if w := f.writes(); len(w) != 0 || st.Leader {
			t.Errorf("a follower wrote %v (status %+v)", w, st)
		}
	})

	t.Run("disabled: herd's schemas are deleted", func(t *testing.T) {
		f.settle(t, 2)
		f.c.opts.Config.Enabled = false
		st := f.c.Reconcile(ctx)
		if got, want := strings.Join(f.writes(), ", "), "delete flowschemas/herd-measure-1, delete flowschemas/herd-measure-2"; got != want {
			t.Errorf("%s, want %s", got, want)
		}
		if strings.Join(st.Removed, ",") != "herd-measure-1,herd-measure-2" {
			t.Errorf("removed %v", st.Removed)
		}
		if got := testutil.ToFloat64(f.c.m.writes.WithLabelValues("delete", "ok")); got != 2 {
			t.Errorf("deletes counted %v", got)
		}
	})
}

func TestReconcileWithoutOwner(t *testing.T) {
	f := newFixture(t, measuring(cilium))
	f.writes()
	st := f.c.Reconcile(context.Background())
	if got, want := strings.Join(f.writes(), ", "), "get clusterroles/herd-responder"; got != want {
		t.Errorf("%s, want %s: no owner, no write", got, want)
	}
	if len(st.Errors) != 1 || !strings.Contains(st.Errors[0], "the owner ClusterRole herd-responder (measurement.ownerClusterRole) does not exist") {
		t.Errorf("errors %v", st.Errors)
	}
}

func TestInfoMetric(t *testing.T) {
	mine := func(name string, ann ...string) *flowcontrolv1.FlowSchema {
		return herds(schema(name, 900, "workload-high", ciliumSA, listPods), ann...)
	}
	f := newFixture(t, measuring(),
		mine("herd-measure-1", action.AnnotationAction, "measure", action.AnnotationRole, "cni", action.AnnotationClient, "cilium-agent",
			action.AnnotationResource, "pods", action.AnnotationIdentity, "system:serviceaccount:kube-system:cilium"),
		mine("herd-isolate-1", action.AnnotationAction, "isolate", action.AnnotationRole, "cni", action.AnnotationClient, "cilium-agent",
			action.AnnotationResource, "pods"),
		mine("herd-quarantine-1", action.AnnotationAction, "quarantine", action.AnnotationIdentity, "system:node:ghost"),
		// Hand-edited annotations never become label values.
		mine("herd-measure-2", action.AnnotationAction, "measure", action.AnnotationRole, "scheduler", action.AnnotationClient, "x",
			action.AnnotationResource, "pods", action.AnnotationIdentity, "u"),
		mine("herd-measure-3", action.AnnotationAction, "measure", action.AnnotationRole, "cni", action.AnnotationClient, "Cilium Agent",
			action.AnnotationResource, "pods", action.AnnotationIdentity, "u"),
		mine("herd-measure-4", action.AnnotationAction, "measure", action.AnnotationRole, "cni", action.AnnotationClient, "x",
			action.AnnotationResource, "pods", action.AnnotationIdentity, "line\nbreak"),
		// Not herd's.
		herds(schema("custom", 900, "workload-high", ciliumSA, listPods), action.AnnotationAction, "measure", action.AnnotationRole, "cni",
			action.AnnotationClient, "x", action.AnnotationResource, "pods", action.AnnotationIdentity, "u"),
	)
	want := `
# HELP herd_measurement_flowschema_info 1 for each of herd's FlowSchemas that serves one node-side client's LISTs of one resource: the measurement schemas (action measure) and isolate's and protect's, which take LISTs from them. Joins apiserver_flowcontrol_*{flow_schema} to role, client, resource and identity.
# TYPE herd_measurement_flowschema_info gauge
herd_measurement_flowschema_info{action="isolate",client="cilium-agent",flow_schema="herd-isolate-1",identity="",resource="pods",role="cni"} 1
herd_measurement_flowschema_info{action="measure",client="cilium-agent",flow_schema="herd-measure-1",identity="system:serviceaccount:kube-system:cilium",resource="pods",role="cni"} 1
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "herd_measurement_flowschema_info"); err != nil {
		t.Error(err)
	}
}
