package apf

import (
	"context"
	"testing"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/herd-k8s/herd/internal/apfmatch"
)

func suggested() []runtime.Object {
	var objs []runtime.Object
	schemas, levels := apfmatch.Default()
	for _, fs := range schemas {
		objs = append(objs, fs)
	}
	for _, pl := range levels {
		objs = append(objs, pl)
	}
	return objs
}

// cniToLow routes the cilium service account's LISTs of pods to
// workload-low, before kube-system-service-accounts (900).
func cniToLow(name string, labels map[string]string) *flowcontrolv1.FlowSchema {
	return &flowcontrolv1.FlowSchema{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: flowcontrolv1.FlowSchemaSpec{
			MatchingPrecedence:         450,
			PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: "workload-low"},
			Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
				Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindServiceAccount,
					ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}}},
				ResourceRules: []flowcontrolv1.ResourcePolicyRule{{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"},
					ClusterScope: true, Namespaces: []string{"*"}}},
			}},
		},
	}
}

const cilium = "system:serviceaccount:kube-system:cilium"

func waitLevel(t *testing.T, v *View, identity, resource, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		if got = v.PriorityLevel(v.Class(identity), resource); got == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("PriorityLevel(%s, %s) = %q, want %q", identity, resource, got, want)
}

// TestView: the levels of the apiserver's suggested configuration, then
// a FlowSchema of the cluster's own that the view follows, and herd's own
// guard, which it leaves out.
func TestView(t *testing.T) {
	client := fake.NewClientset(suggested()...)
	v := New(client, nil)
	if got := v.PriorityLevel(v.Class(cilium), "pods"); got != "" {
		t.Errorf("before sync: %q, want \"\"", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Start(ctx)
	waitLevel(t, v, cilium, "pods", "workload-high")
	waitLevel(t, v, "system:node:node-1", "pods", "system")
	waitLevel(t, v, "system:serviceaccount:calico-system:calico-node", "pods", "workload-low")
	if c := v.Class("system:node:node-1"); c != v.Class("system:node:node-2") {
		t.Errorf("two kubelets in two classes: %q", c)
	}

	// herd's own guard: left out, the forecast is of the unguarded cluster.
	guard := cniToLow("herd-protect-1", map[string]string{apfmatch.ManagedByLabel: apfmatch.ManagedByValue})
	if _, err := client.FlowcontrolV1().FlowSchemas().Create(ctx, guard, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The cluster's own schema: followed.
	if _, err := client.FlowcontrolV1().FlowSchemas().Create(ctx, cniToLow("cni-pods", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitLevel(t, v, cilium, "pods", "workload-low")
	waitLevel(t, v, cilium, "endpointslices.discovery.k8s.io", "workload-high")
	if err := client.FlowcontrolV1().FlowSchemas().Delete(ctx, "cni-pods", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitLevel(t, v, cilium, "pods", "workload-high")

	// A schema to a level that does not exist is ignored, as the
	// apiserver ignores it; once the level exists, it serves.
	dangling := cniToLow("cni-pods", nil)
	dangling.Spec.PriorityLevelConfiguration.Name = "cni"
	if _, err := client.FlowcontrolV1().FlowSchemas().Create(ctx, dangling, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	waitLevel(t, v, cilium, "pods", "workload-high")
	if _, err := client.FlowcontrolV1().PriorityLevelConfigurations().Create(ctx, &flowcontrolv1.PriorityLevelConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "cni"},
		Spec: flowcontrolv1.PriorityLevelConfigurationSpec{Type: flowcontrolv1.PriorityLevelEnablementExempt}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitLevel(t, v, cilium, "pods", "cni")
}

func TestSlim(t *testing.T) {
	fs := cniToLow("x", map[string]string{"a": "b"})
	fs.Annotations = map[string]string{"big": "annotation"}
	fs.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	fs.Status.Conditions = []flowcontrolv1.FlowSchemaCondition{{Type: "Dangling"}}
	got, err := Slim(fs)
	if err != nil {
		t.Fatal(err)
	}
	s := got.(*flowcontrolv1.FlowSchema)
	if s.Annotations != nil || s.ManagedFields != nil || s.Status.Conditions != nil || s.Labels["a"] != "b" || s.Spec.MatchingPrecedence != 450 {
		t.Errorf("slim FlowSchema %+v", s)
	}
}

func TestClassDoesNotAllocate(t *testing.T) {
	v := New(fake.NewClientset(suggested()...), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Start(ctx)
	waitLevel(t, v, cilium, "pods", "workload-high")
	if a := testing.AllocsPerRun(1000, func() { v.Class("system:node:node-7") }); a != 0 {
		t.Errorf("Class allocates %.1f times", a)
	}
}
