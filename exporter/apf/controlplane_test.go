package apf_test

import (
	"context"
	"io"
	"testing"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/exporter/apf"
	"github.com/herd-k8s/herd/internal/apfmatch"
	"github.com/herd-k8s/herd/test/controlplane"
)

// TestViewAgreesWithTheAPIServer asks a real kube-apiserver 1.36.3 which
// priority level served a LIST — the level's UID it writes in the
// X-Kubernetes-PF-PriorityLevel-UID response header — and compares it with
// the view's answer for the same identity and resource, with the
// apiserver's own configuration, with a FlowSchema of the cluster's, and
// with a herd guard the view must leave out (the apiserver does not).
func TestViewAgreesWithTheAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.StartForTest(ctx, t, controlplane.Options{Nodes: []string{"node-1"}})
	admin := cp.Client(controlplane.Admin)
	v := apf.New(admin, nil)
	vctx, vcancel := context.WithCancel(ctx)
	defer vcancel()
	v.Start(vctx)

	// servedBy is the name of the level that served path as identity.
	servedBy := func(identity, path string) string {
		t.Helper()
		hc, err := rest.HTTPClientFor(cp.Config(identity))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Get(cp.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		uid := resp.Header.Get(flowcontrolv1.ResponseHeaderMatchedPriorityLevelConfigurationUID)
		levels, err := admin.FlowcontrolV1().PriorityLevelConfigurations().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, pl := range levels.Items {
			if string(pl.UID) == uid {
				return pl.Name
			}
		}
		t.Fatalf("GET %s as %s: level UID %q (status %d) is no PriorityLevelConfiguration", path, identity, uid, resp.StatusCode)
		return ""
	}
	// agree waits until the view and the apiserver name the same level,
	// and that it is want.
	agree := func(identity, user, path, resource, want string) {
		t.Helper()
		var got, served string
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			served = servedBy(identity, path)
			got = v.PriorityLevel(v.Class(user), resource)
			if got == served && got == want {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Errorf("%s LIST %s: the view says %q, the apiserver served it at %q; want %q", user, path, got, served, want)
	}

	cilium := cp.User(controlplane.Cilium)
	kubelet := cp.User(controlplane.KubeletIdentity("node-1"))
	agree(controlplane.Cilium, cilium, "/api/v1/pods?limit=1", "pods", "workload-high")
	agree(controlplane.KubeletIdentity("node-1"), kubelet, "/api/v1/pods?limit=1&fieldSelector=spec.nodeName%3Dnode-1", "pods", "system")
	agree(controlplane.KubeProxy, cp.User(controlplane.KubeProxy), "/apis/discovery.k8s.io/v1/endpointslices?limit=1", "endpointslices.discovery.k8s.io", "workload-high")

	rule := flowcontrolv1.PolicyRulesWithSubjects{
		Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindServiceAccount,
			ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}}},
		ResourceRules: []flowcontrolv1.ResourcePolicyRule{{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"},
			ClusterScope: true, Namespaces: []string{"*"}}},
	}
	schema := func(name, level string, precedence int32, labels map[string]string) *flowcontrolv1.FlowSchema {
		return &flowcontrolv1.FlowSchema{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: flowcontrolv1.FlowSchemaSpec{MatchingPrecedence: precedence,
				PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: level},
				Rules:                      []flowcontrolv1.PolicyRulesWithSubjects{rule}}}
	}
	// The cluster's own schema moves cilium's LISTs of pods to workload-low.
	if _, err := admin.FlowcontrolV1().FlowSchemas().Create(ctx, schema("cni-pods", "workload-low", 800, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	agree(controlplane.Cilium, cilium, "/api/v1/pods?limit=1", "pods", "workload-low")

	// A herd guard before it: the apiserver serves the LISTs there; the
	// view, forecasting the unguarded cluster, still names workload-low.
	if _, err := admin.FlowcontrolV1().PriorityLevelConfigurations().Create(ctx, &flowcontrolv1.PriorityLevelConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "herd-protect"},
		Spec: flowcontrolv1.PriorityLevelConfigurationSpec{Type: flowcontrolv1.PriorityLevelEnablementLimited,
			Limited: &flowcontrolv1.LimitedPriorityLevelConfiguration{NominalConcurrencyShares: ptr(int32(2)),
				LimitResponse: flowcontrolv1.LimitResponse{Type: flowcontrolv1.LimitResponseTypeReject}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	guard := schema("herd-protect-1", "herd-protect", 440, map[string]string{apfmatch.ManagedByLabel: apfmatch.ManagedByValue})
	if _, err := admin.FlowcontrolV1().FlowSchemas().Create(ctx, guard, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for servedBy(controlplane.Cilium, "/api/v1/pods?limit=1") != "herd-protect" {
		if time.Now().After(deadline) {
			t.Fatal("the apiserver never served cilium's LIST at herd-protect")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := v.PriorityLevel(v.Class(cilium), "pods"); got != "workload-low" {
		t.Errorf("with herd's guard in place the view says %q, want the unguarded workload-low", got)
	}
}

func ptr[T any](v T) *T { return &v }
