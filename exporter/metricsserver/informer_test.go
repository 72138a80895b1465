package metricsserver

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/herd-k8s/herd/test/herdtest"
)

func inNamespace(d *appsv1.Deployment, ns string) *appsv1.Deployment {
	d.Namespace = ns
	return d
}

func startInformer(t *testing.T, opts Options, objs ...*appsv1.Deployment) (*Informer, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset()
	for _, d := range objs {
		if _, err := client.AppsV1().Deployments(d.Namespace).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	i, err := New(client, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	i.Start(ctx)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if !i.WaitForSync(wctx) {
		t.Fatal("informer did not sync")
	}
	return i, client
}

func names(vs []DeploymentView) string {
	var s []string
	for _, v := range vs {
		s = append(s, v.Namespace+"/"+v.Name+"="+string(v.Mode))
	}
	return strings.Join(s, " ")
}

func TestMetricsServerInformerDefaultMatch(t *testing.T) {
	certArgs := []string{"--kubelet-client-certificate=/c", "--kubelet-client-key=/k"}
	i, client := startInformer(t, Options{},
		deployment("metrics-server", map[string]string{"k8s-app": "metrics-server"}, msContainer(nil, upstreamArgs...)),
		deployment("metrics-server-helm", map[string]string{"app.kubernetes.io/name": "metrics-server"}, msContainer(nil, certArgs...)),
		deployment("odd", map[string]string{"k8s-app": "metrics-server"}, corev1.Container{Name: "proxy", Image: "nginx"}),
		deployment("coredns", map[string]string{"k8s-app": "kube-dns"}, corev1.Container{Name: "coredns", Image: "coredns", Args: certArgs}),
		inNamespace(deployment("metrics-server", map[string]string{"k8s-app": "metrics-server"}, msContainer(nil)), "default"),
	)
	if got, want := names(i.Deployments()), "kube-system/metrics-server=token kube-system/metrics-server-helm=certificate kube-system/odd=unknown"; got != want {
		t.Fatalf("Deployments() = %s, want %s", got, want)
	}
	// exporter/collector's table test turns these views into series.

	// Other Deployments are kept as stubs: no containers in the cache.
	obj, ok, err := i.informer.GetStore().GetByKey("kube-system/coredns")
	if err != nil || !ok {
		t.Fatalf("coredns not in the store: %v", err)
	}
	if cs := obj.(*appsv1.Deployment).Spec.Template.Spec.Containers; len(cs) != 0 {
		t.Errorf("coredns stored with containers: %v", cs)
	}

	// The fix flows through an update; a deletion removes the Deployment.
	ctx := context.Background()
	d, err := client.AppsV1().Deployments("kube-system").Get(ctx, "metrics-server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[0].Args = append(d.Spec.Template.Spec.Containers[0].Args, "--kubelet-client-certificate", "/c", "--kubelet-client-key", "/k")
	if _, err := client.AppsV1().Deployments("kube-system").Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.AppsV1().Deployments("kube-system").Delete(ctx, "odd", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// A Deployment labelled later becomes metrics-server, with its containers.
	dns, err := client.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dns.Labels["app.kubernetes.io/name"] = "metrics-server"
	if _, err := client.AppsV1().Deployments("kube-system").Update(ctx, dns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want2 := "kube-system/coredns=unknown kube-system/metrics-server=certificate kube-system/metrics-server-helm=certificate"
	herdtest.Wait(t, 10*time.Second, want2, func() bool { return names(i.Deployments()) == want2 })
}

func TestMetricsServerInformerNameAndSelector(t *testing.T) {
	objs := func() []*appsv1.Deployment {
		return []*appsv1.Deployment{
			deployment("metrics-server", map[string]string{"k8s-app": "metrics-server"}, msContainer(nil)),
			deployment("ms-custom", map[string]string{"team": "obs"}, msContainer(nil, "--kubelet-client-certificate=/c", "--kubelet-client-key=/k")),
			inNamespace(deployment("ms-custom", map[string]string{"team": "obs"}, msContainer(nil)), "monitoring"),
		}
	}
	cases := []struct {
		opts Options
		want string
	}{
		{Options{Name: "ms-custom"}, "kube-system/ms-custom=certificate"},
		{Options{LabelSelector: "team=obs"}, "kube-system/ms-custom=certificate"},
		{Options{LabelSelector: "team in (obs)", Name: "metrics-server"}, ""},
		{Options{Namespace: "monitoring", LabelSelector: "team=obs"}, "monitoring/ms-custom=token"},
		{Options{Namespace: "monitoring"}, ""},
	}
	for _, tc := range cases {
		i, _ := startInformer(t, tc.opts, objs()...)
		if got := names(i.Deployments()); got != tc.want {
			t.Errorf("%+v: Deployments() = %q, want %q", tc.opts, got, tc.want)
		}
	}
}

func TestMetricsServerOptionErrors(t *testing.T) {
	client := fake.NewClientset()
	for _, opts := range []Options{
		{Namespace: "Kube_System"},
		{Name: "bad name"},
		{LabelSelector: "a in (b"},
	} {
		if _, err := New(client, opts); err == nil {
			t.Errorf("New(%+v) = nil error", opts)
		} else {
			t.Logf("New(%+v): %v", opts, err)
		}
	}
}
