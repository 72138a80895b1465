package metricsserver_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/exporter/metricsserver"
	"github.com/herd-k8s/herd/test/auditcount"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
)

// deploymentsAuditPolicy records only requests about Deployments.
const deploymentsAuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  resources:
  - group: apps
    resources: [deployments]
- level: None
`

const informerUA = "herd-exporter/metricsserver-test"

// TestMetricsServerModeOnRealControlPlane creates metrics-server as
// components.yaml does (token mode) on a real kube-apiserver, then adds the
// client-certificate flags: the informer must follow the update to
// mode=certificate, having started from a WatchList stream, never a LIST.
func TestMetricsServerModeOnRealControlPlane(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	cp, err := controlplane.Start(ctx, controlplane.Options{AuditPolicy: deploymentsAuditPolicy, AuditLogPath: auditLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	admin := cp.Client(controlplane.Admin)

	cfg := cp.Config(controlplane.Admin)
	cfg.UserAgent = informerUA
	var mu sync.Mutex
	var watchErrs []error
	inf, err := metricsserver.New(kubernetes.NewForConfigOrDie(cfg), metricsserver.Options{
		OnWatchError: func(err error) {
			mu.Lock()
			watchErrs = append(watchErrs, err)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ictx, icancel := context.WithCancel(ctx)
	defer icancel()
	inf.Start(ictx)
	if !inf.WaitForSync(ctx) {
		t.Fatal("informer did not sync")
	}
	if got := scrape(t, inf); len(got) != 0 {
		t.Fatalf("series before metrics-server exists: %v", got)
	}

	d := herdtest.MetricsServer("kube-system", "metrics-server", "k8s-app",
		"--cert-dir=/tmp", "--secure-port=10250", "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname", "--kubelet-use-node-status-port", "--metric-resolution=15s")
	created, err := admin.AppsV1().Deployments("kube-system").Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitSeries(t, inf, `kube-system/metrics-server=token`)
	v := inf.Deployments()[0]
	if v.Container != "metrics-server" || v.Fix != metricsserver.TokenFix {
		t.Errorf("token view = %+v", v)
	}

	created.Spec.Template.Spec.Containers[0].Args = append(created.Spec.Template.Spec.Containers[0].Args,
		"--kubelet-client-certificate", "/etc/metrics-server/kubelet-client/tls.crt",
		"--kubelet-client-key=/etc/metrics-server/kubelet-client/tls.key")
	if _, err := admin.AppsV1().Deployments("kube-system").Update(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSeries(t, inf, `kube-system/metrics-server=certificate`)
	v = inf.Deployments()[0]
	if v.Fix != "" || v.Flags["kubelet-client-certificate"] != "/etc/metrics-server/kubelet-client/tls.crt" || v.Flags["kubelet-client-key"] != "/etc/metrics-server/kubelet-client/tls.key" {
		t.Errorf("certificate view = %+v", v)
	}

	if err := admin.AppsV1().Deployments("kube-system").Delete(ctx, "metrics-server", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSeries(t, inf, ``)

	mu.Lock()
	for _, err := range watchErrs {
		t.Errorf("watch error: %v", err)
	}
	mu.Unlock()

	// What the informer asked the apiserver: a WatchList stream, no LIST.
	var watchLists, lists int
	err = auditcount.Each(auditLog, func(ev *auditv1.Event) {
		if ev.UserAgent != informerUA || ev.Stage != auditv1.StageResponseComplete && ev.Stage != auditv1.StageResponseStarted {
			return
		}
		switch {
		case ev.Verb == "list":
			lists++
			t.Errorf("informer LISTed: %s", ev.RequestURI)
		case ev.Verb == "watch" && strings.Contains(ev.RequestURI, "sendInitialEvents=true") && ev.Stage == auditv1.StageResponseStarted:
			watchLists++
			if !strings.HasPrefix(ev.RequestURI, "/apis/apps/v1/namespaces/kube-system/deployments?") {
				t.Errorf("WatchList is not namespace-scoped: %s", ev.RequestURI)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if watchLists == 0 {
		t.Errorf("no WatchList (watch with sendInitialEvents=true) by the informer in the audit log")
	}
	t.Logf("informer requests: %d WatchList, %d LIST", watchLists, lists)
}

// scrape reads the informer as herd's metrics-server collector does at
// scrape time: "namespace/deployment=mode" per Deployment.
func scrape(t *testing.T, inf *metricsserver.Informer) []string {
	t.Helper()
	if !inf.Synced() {
		t.Fatal("informer not synced")
	}
	var out []string
	for _, v := range inf.Deployments() {
		out = append(out, v.Namespace+"/"+v.Name+"="+string(v.Mode))
	}
	return out
}

func waitSeries(t *testing.T, inf *metricsserver.Informer, want string) {
	t.Helper()
	err := herdtest.Poll(t.Context(), 20*time.Second, fmt.Sprintf("herd_metrics_server_kubelet_auth %q", want), func(context.Context) error {
		if got := strings.Join(scrape(t, inf), " "); got != want {
			return fmt.Errorf("herd_metrics_server_kubelet_auth = %q, want %q", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
