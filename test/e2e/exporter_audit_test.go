package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/stack"
)

// nodeClientsPolicy audits only the simulated node-side identities, so every
// event herd sees comes from a request this test made.
var nodeClientsPolicy = metadataPolicy(nil, []string{"system:node:node-1", "system:node:node-2", "system:serviceaccount:kube-system:kube-proxy", "system:serviceaccount:kube-system:cilium"})

// TestAuditPipelineExactCounts is issue 3's acceptance test: known numbers of
// every kind of request, made by simulated kubelets, kube-proxy and cilium
// against the real apiserver, reach herd through the audit webhook (TLS and a
// bearer token, as in production) and, separately, through the audit log
// file; both exporters must report exactly the same, expected, series.
func TestAuditPipelineExactCounts(t *testing.T) {
	dir := t.TempDir()
	cert, key, err := herdtest.SelfSigned(herdtest.Cert{CommonName: "herd-e2e", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	webConfig := filepath.Join(dir, "audit-web.yml")
	tokenFile := filepath.Join(dir, "token")
	for path, content := range map[string]string{
		certPath: string(cert), keyPath: string(key), tokenFile: "e2e-audit-token\n",
		webConfig: fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", certPath, keyPath),
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(dir, "audit.log")

	viaWebhook := startExporter(t, config.Default(), exporter.Options{
		Audit:          web.FlagConfig{WebConfigFile: &webConfig},
		AuditTokenFile: tokenFile,
	}, "")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp := controlplane.StartForTest(ctx, t, controlplane.Options{
		Nodes:             []string{"node-1", "node-2"},
		AuditPolicy:       nodeClientsPolicy,
		AuditWebhookURL:   viaWebhook.AuditURL,
		AuditWebhookToken: "e2e-audit-token",
		AuditWebhookCA:    cert,
		AuditLogPath:      logPath,
		// Rotate the log at 1 MiB (lumberjack's smallest size): the burst at
		// the end of the test crosses it, so the file exporter must follow
		// a real rename rotation.
		ExtraArgs: []string{"--audit-log-maxsize=1"},
	})

	viaFile := startExporter(t, config.Default(), exporter.Options{
		AuditInsecure: true,
		LogFiles:      []string{logPath},
		LogFromStart:  true,
	}, "")
	feeds := []struct {
		name string
		e    *stack.InProcessExporter
	}{{"webhook", viaWebhook}, {"log file", viaFile}}

	admin := cp.Client(controlplane.Admin)
	for _, n := range []string{"node-1", "node-2"} {
		if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 5; i++ {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "default"},
			Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
		}
		if _, err := admin.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	kubelet1 := nodesim.ForTest(t, func() (*nodesim.Client, error) { return nodesim.NewKubelet(cp, "node-1", nodesim.Options{}) })
	kubelet2 := nodesim.ForTest(t, func() (*nodesim.Client, error) { return nodesim.NewKubelet(cp, "node-2", nodesim.Options{}) })
	proxy := nodesim.ForTest(t, func() (*nodesim.Client, error) { return nodesim.NewKubeProxy(cp, nodesim.Options{}) })
	cilium := nodesim.ForTest(t, func() (*nodesim.Client, error) { return nodesim.NewCiliumAgent(cp, nodesim.Options{}) })
	pods1, pods2 := nodesim.Pods.OnNode("node-1"), nodesim.Pods.OnNode("node-2")

	// expect(t, code, what)(request) checks one request's status.
	expect := func(t *testing.T, want int, what string) func(nodesim.Result, error) nodesim.Result {
		return func(res nodesim.Result, err error) nodesim.Result {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if res.Code != want {
				t.Fatalf("%s: %s, want %d", what, res, want)
			}
			return res
		}
	}
	repeat := func(n int, f func()) {
		for i := 0; i < n; i++ {
			f()
		}
	}

	requested := herdtest.NewPrereq("every kind of request made", func(t *testing.T) {
		// kubelet node-1: 3 cache, 2 consistent, 1 exact relists of its pods.
		var rv string
		repeat(3, func() { rv = expect(t, 200, "cache list")(kubelet1.ListCache(ctx, pods1)).ResourceVersion })
		repeat(2, func() { expect(t, 200, "consistent list")(kubelet1.ListConsistent(ctx, pods1)) })
		expect(t, 200, "exact list")(kubelet1.ListExact(ctx, pods1, rv))
		// One consistent paginated relist: 5 pods in pages of 2 = 1 relist + 2 pages.
		pages, err := kubelet1.ListPages(ctx, pods1, 2, nodesim.ListOptions{})
		if err != nil || len(pages) != 3 {
			t.Fatalf("paginated list: %d pages, err %v; want 3", len(pages), err)
		}
		// node-1 asks for node-2's pods: the Node authorizer says 403, a
		// failure counted in herd_requests_total only, not a relist (SPEC §3.1).
		expect(t, 403, "foreign pods")(kubelet1.ListCache(ctx, pods2))
		// 2 TooLarge-RV lists of runtimeclasses, concurrently (each waits ~3 s).
		var wg sync.WaitGroup
		for i := 0; i < 2; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := kubelet1.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
				if err != nil || res.Code != 504 {
					t.Errorf("too-large list: %v %v", res, err)
				}
			}()
		}
		// 4 TokenReviews by kubelet node-1.
		repeat(4, func() { expect(t, 201, "tokenreview")(kubelet1.CreateTokenReview(ctx, "not-a-real-token")) })
		// kubelet node-2: 2 WatchList (streaming, consistent) relists and 3 plain re-watches.
		repeat(2, func() { rv = expect(t, 200, "watchlist")(kubelet2.WatchList(ctx, pods2, "")).ResourceVersion })
		repeat(3, func() { expect(t, 200, "re-watch")(kubelet2.Watch(ctx, pods2, rv, 0)) })
		// kube-proxy: 1 cache relist of endpointslices; cilium: 2 consistent relists of all pods.
		expect(t, 200, "proxy list")(proxy.ListCache(ctx, nodesim.EndpointSlices))
		repeat(2, func() { expect(t, 200, "cilium list")(cilium.ListConsistent(ctx, nodesim.Pods)) })
		wg.Wait()
	})

	// Relists carry their shape (SPEC §3.3): the kubelets' pod relists
	// select spec.nodeName (node), the other lists select nothing (all).
	want := series{
		"herd_relists_total{client=kubelet,consistency=cache,resource=pods,role=kubelet,shape=node}":                                 3, // the 403 is no relist (SPEC §3.1)
		"herd_relists_total{client=kubelet,consistency=consistent,resource=pods,role=kubelet,shape=node}":                            5, // 2 + paginated + 2 WatchList
		"herd_relists_total{client=kubelet,consistency=exact,resource=pods,role=kubelet,shape=node}":                                 1,
		"herd_relists_total{client=kubelet,consistency=cache,resource=runtimeclasses.node.k8s.io,role=kubelet,shape=all}":            2,
		"herd_relists_total{client=kube-proxy,consistency=cache,resource=endpointslices.discovery.k8s.io,role=kube-proxy,shape=all}": 1,
		"herd_relists_total{client=cilium-agent,consistency=consistent,resource=pods,role=cni,shape=all}":                            2,
		"herd_list_pages_total{client=kubelet,resource=pods,role=kubelet}":                                                           2,
		"herd_too_large_resource_version_total{client=kubelet,detected_by=status,resource=runtimeclasses.node.k8s.io,role=kubelet}":  2,
		"herd_tokenreviews_total{client=kubelet,role=kubelet}":                                                                       4,
		"herd_requests_total{client=kubelet,code=200,role=kubelet,verb=list}":                                                        9, // 3 cache + 2 consistent + 1 exact + 3 paginated requests
		"herd_requests_total{client=kubelet,code=403,role=kubelet,verb=list}":                                                        1,
		"herd_requests_total{client=kubelet,code=504,role=kubelet,verb=list}":                                                        2,
		"herd_requests_total{client=kubelet,code=201,role=kubelet,verb=create}":                                                      4,
		"herd_requests_total{client=kubelet,code=200,role=kubelet,verb=watch}":                                                       5,
		"herd_requests_total{client=kube-proxy,code=200,role=kube-proxy,verb=list}":                                                  1,
		"herd_requests_total{client=cilium-agent,code=200,role=cni,verb=list}":                                                       2,
	}
	totalRequests := 0.0
	for k, v := range want {
		if strings.HasPrefix(k, "herd_requests_total{") {
			totalRequests += v
		}
	}

	for _, ex := range feeds {
		t.Run("the "+ex.name+" feed counts every request exactly", func(t *testing.T) {
			requested.Need(t)
			herdtest.Wait(t, 30*time.Second, ex.name+" exporter to account every request", func() bool {
				return sum(gather(t, ex.e.Exporter), "herd_requests_total") >= totalRequests
			})
			time.Sleep(time.Second) // a late duplicate or straggler would show now
			got := gather(t, ex.e.Exporter)
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s: %s = %g, want %g", ex.name, k, got[k], v)
				}
			}
			for _, family := range []string{"herd_relists_total", "herd_list_pages_total", "herd_too_large_resource_version_total", "herd_tokenreviews_total", "herd_requests_total"} {
				var wantSum float64
				for k, v := range want {
					if strings.HasPrefix(k, family+"{") {
						wantSum += v
					}
				}
				if s := sum(got, family); s != wantSum {
					t.Errorf("%s: sum(%s) = %g, want %g (an unexpected series?)", ex.name, family, s, wantSum)
				}
			}
			if sum(got, "herd_requests_total", "role=other") != 0 {
				t.Errorf("%s: requests classified other; the policy audits only node-side identities", ex.name)
			}
			if t.Failed() {
				t.Logf("%s exporter series:\n%s", ex.name, got)
			}
		})
	}
	t.Run("the webhook events are accounted and none malformed", func(t *testing.T) {
		requested.Need(t)
		herdtest.Wait(t, 30*time.Second, "the webhook exporter to account every request", func() bool {
			return sum(gather(t, viaWebhook.Exporter), "herd_requests_total") >= totalRequests
		})
		webhookSource := gather(t, viaWebhook.Exporter)
		if sum(webhookSource, "herd_audit_events_total", "source=webhook", "result=malformed") != 0 ||
			sum(webhookSource, "herd_audit_events_total", "source=webhook", "result=accounted") == 0 {
			t.Errorf("webhook ingest: %s", webhookSource)
		}
	})
	t.Run("a rotated log is followed without loss", func(t *testing.T) {
		// A burst of cache lists crosses the 1 MiB log size, so the
		// apiserver renames audit.log and starts a new one mid-stream. The
		// file exporter must count exactly what the webhook exporter counts.
		const burst = 2000
		for i := 0; i < burst; i++ {
			expect(t, 200, "burst list")(proxy.ListCache(ctx, nodesim.Services))
		}
		rotated, _ := filepath.Glob(filepath.Join(dir, "audit-*.log"))
		if len(rotated) == 0 {
			t.Fatalf("the apiserver did not rotate %s; the burst was too small", logPath)
		}
		key := "herd_relists_total{client=kube-proxy,consistency=cache,resource=services,role=kube-proxy,shape=all}"
		for _, ex := range feeds {
			herdtest.Wait(t, 30*time.Second, fmt.Sprintf("%s exporter to count %d burst relists", ex.name, burst), func() bool {
				return gather(t, ex.e.Exporter)[key] >= burst
			})
		}
		time.Sleep(time.Second)
		if w, f := gather(t, viaWebhook.Exporter)[key], gather(t, viaFile.Exporter)[key]; w != burst || f != burst {
			t.Errorf("after rotation (%d rotated files): webhook counted %g, file %g; want %d each", len(rotated), w, f, burst)
		}
	})
}
