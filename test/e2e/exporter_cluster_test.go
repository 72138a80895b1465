package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/internal/kube"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/stack"
)

// clusterPolicy audits the test's node-side clients and herd itself.
var clusterPolicy = metadataPolicy(nil, []string{"system:node:node-1", "system:node:node-2", "system:node:" + ghostName, "system:serviceaccount:kube-system:kube-proxy", stack.ExporterUser})

type debugClient struct {
	Identity        string `json:"identity"`
	Role            string `json:"role"`
	Client          string `json:"client"`
	Node            string `json:"node"`
	Attribution     string `json:"attribution"`
	ClassifiedBy    string `json:"classifiedBy"`
	SourceIP        string `json:"sourceIP"`
	TrustedSourceIP string `json:"trustedSourceIP"`
	Requests        uint64 `json:"requests"`
	Resources       []struct {
		Resource      string `json:"resource"`
		Shape         string `json:"shape"`
		Relists       uint64 `json:"relists"`
		WindowRelists int    `json:"windowRelists"`
	} `json:"resources"`
	Cluster *struct {
		Ghost       bool   `json:"ghost"`
		GhostReason string `json:"ghostReason"`
		Stale       bool   `json:"stale"`
		NodeExists  *bool  `json:"nodeExists"`
	} `json:"cluster"`
}

func debugClients(t *testing.T, e *stack.InProcessExporter) map[string]debugClient {
	t.Helper()
	var page struct{ Clients []debugClient }
	if err := herdtest.GetJSON(t.Context(), e.MetricsURL+"/debug/clients?limit=0", &page); err != nil {
		t.Fatal(err)
	}
	out := map[string]debugClient{}
	for _, c := range page.Clients {
		out[c.Identity] = c
	}
	return out
}

// TestClusterView is issue 4's acceptance test for Nodes: attribution by
// source IP, ghosts (incident 000), stale kubelets, and an informer that
// never LISTs, even across an apiserver restart.
func TestClusterView(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "audit.log")
	// The webhook goes over plain http (no token: --audit.insecure); the
	// pipeline's auth is covered elsewhere.
	ingest := startExporter(t, config.Default(), exporter.Options{AuditInsecure: true}, "")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp := controlplane.StartForTest(ctx, t, controlplane.Options{
		Nodes:           []string{"node-1", "node-2", ghostName},
		Identities:      map[string]controlplane.Identity{stack.ExporterIdentity: {User: stack.ExporterUser, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:herd"}}},
		AuditPolicy:     clusterPolicy,
		AuditWebhookURL: ingest.AuditURL,
		AuditLogPath:    logPath,
	})
	admin := cp.Client(controlplane.Admin)
	// herd runs with exactly the RBAC it ships, nothing more.
	if _, err := stack.ApplyManifest(ctx, admin, "../../manifests/rbac/exporter.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := herdtest.CreateNodes(ctx, admin, []*corev1.Node{herdtest.Node("node-1", "10.0.0.1"), herdtest.Node("node-2", "10.0.0.2")}, 2); err != nil {
		t.Fatal(err)
	}

	// The exporter under test reads the audit log and watches the cluster as
	// its own identity, with a short window and ghost grace.
	cfg := config.Default()
	cfg.Accounting.Window = model.Duration(15 * time.Second)
	// The simulated agents all connect from loopback and send their node's
	// address as X-Forwarded-For: 127.0.0.1 plays the trusted proxy that
	// appends the real client's address (SPEC §3.1; stack.LoopbackProxy).
	cfg.Accounting.TrustedProxies = []string{stack.LoopbackProxy}
	herd := startExporter(t, cfg, exporter.Options{
		AuditInsecure: true,
		LogFiles:      []string{logPath},
		LogFromStart:  true,
		Kube:          kube.Tune(cp.Config(stack.ExporterIdentity), "exporter"),
		GhostGrace:    time.Second,
	}, "")
	herdtest.Wait(t, 30*time.Second, "/readyz", func() bool { return herdtest.Status(ctx, herd.MetricsURL+"/readyz") == 200 })

	kubelet1 := nodesim.ForTest(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubelet(cp, "node-1", nodesim.Options{SourceIP: "10.0.0.1"})
	})
	proxy := nodesim.ForTest(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubeProxy(cp, nodesim.Options{SourceIP: "10.0.0.2"})
	})
	ghost := nodesim.ForTest(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubelet(cp, ghostName, nodesim.Options{SourceIP: ghostIP})
	})
	called := herdtest.NewPrereq("a kubelet, kube-proxy and the ghost called", func(t *testing.T) {
		if res, err := kubelet1.ListCache(ctx, nodesim.Pods.OnNode("node-1")); err != nil || res.Code != 200 {
			t.Fatalf("kubelet list: %v %v", res, err)
		}
		if res, err := proxy.ListCache(ctx, nodesim.Services); err != nil || res.Code != 200 {
			t.Fatalf("kube-proxy list: %v %v", res, err)
		}
		// The ghost loops on too-large RVs for runtimeclasses and csidrivers, as in incident 000.
		var wg sync.WaitGroup
		for _, r := range []nodesim.Resource{nodesim.RuntimeClasses, nodesim.CSIDrivers} {
			wg.Go(func() {
				if res, err := ghost.ListTooLargeRV(ctx, r, ""); err != nil || res.Code != 504 {
					t.Errorf("ghost list: %v %v", res, err)
				}
			})
		}
		wg.Wait()
	})

	t.Run("a ghost kubelet is reported by reason and address", func(t *testing.T) {
		called.Need(t)
		ghostKey := "herd_ghost_instance{client=kubelet,identity=system:node:old-worker-7,node=old-worker-7,reason=no_such_node,role=kubelet,source_ip=10.99.0.7}"
		herdtest.Wait(t, 30*time.Second, "the ghost kubelet to be reported", func() bool { return gather(t, herd.Exporter)[ghostKey] == 1 })
		got := gather(t, herd.Exporter)
		if n := sum(got, "herd_ghost_instances"); n != 1 {
			t.Errorf("herd_ghost_instances total = %g, want 1 (only old-worker-7):\n%s", n, got)
		}
		if got["herd_ghost_instances{client=kubelet,role=kubelet}"] != 1 {
			t.Errorf("ghost count for kubelets: %s", got)
		}
		// Flagged instances get per-node series even outside the top K.
		if sum(got, "herd_instance_relists", "node=old-worker-7") != 2 {
			t.Errorf("ghost's relists by node: %g, want 2", sum(got, "herd_instance_relists", "node=old-worker-7"))
		}
	})
	t.Run("clients are placed on their node by identity or source IP", func(t *testing.T) {
		called.Need(t)
		herdtest.Wait(t, 30*time.Second, "the ghost in /debug/clients", func() bool {
			c := debugClients(t, herd)["system:node:old-worker-7"]
			return c.Cluster != nil && c.Cluster.Ghost
		})
		clients := debugClients(t, herd)
		if c := clients["system:node:node-1"]; c.Cluster == nil || c.Cluster.Ghost || c.Cluster.NodeExists == nil || !*c.Cluster.NodeExists {
			t.Errorf("node-1's kubelet: %+v; want an existing node, no ghost", c)
		}
		if c := clients["system:serviceaccount:kube-system:kube-proxy"]; c.Node != "node-2" || c.Attribution != "source_ip" || c.Cluster == nil || c.Cluster.Ghost {
			t.Errorf("kube-proxy from 10.0.0.2: %+v; want node-2 by source_ip, no ghost", c)
		}
		if c := clients["system:node:old-worker-7"]; c.SourceIP != ghostIP || c.Cluster == nil || !c.Cluster.Ghost {
			t.Errorf("ghost in /debug/clients: %+v", c)
		}
	})
	t.Run("a too-large-RV loop makes a stale kubelet for the window", func(t *testing.T) {
		// node-1's kubelet loops on too-large RVs: stale within the window,
		// gone after it.
		var wg sync.WaitGroup
		for i := 0; i < 3; i++ {
			wg.Go(func() {
				if res, err := kubelet1.ListTooLargeRV(ctx, nodesim.RuntimeClasses, ""); err != nil || res.Code != 504 {
					t.Errorf("stale list: %v %v", res, err)
				}
			})
		}
		wg.Wait()
		staleKey := "herd_stale_kubelet{node=node-1,reason=too_large_resource_version}"
		herdtest.Wait(t, 20*time.Second, "node-1 to be a stale kubelet", func() bool { return gather(t, herd.Exporter)[staleKey] == 1 })
		if got := gather(t, herd.Exporter); sum(got, "herd_stale_kubelet") != 1 {
			t.Errorf("stale kubelets: %s", got)
		}
		herdtest.Wait(t, 30*time.Second, "node-1 to drop out once the window passed", func() bool { _, ok := gather(t, herd.Exporter)[staleKey]; return !ok })
	})
	t.Run("informers never LIST even across an apiserver restart", func(t *testing.T) {
		// Informers resume by watching, never by LIST.
		if err := cp.RestartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		if err := herdtest.CreateNode(ctx, admin, herdtest.Node("node-3", "10.0.0.3")); err != nil {
			t.Fatal(err)
		}
		herdtest.Wait(t, 60*time.Second, "the informer to see node-3 after the restart", func() bool {
			return gather(t, herd.Exporter)["herd_cluster_nodes{}"] == 3
		})
		lists, watches := herdRequests(t, logPath)
		if lists != 0 {
			t.Errorf("herd's identity sent %d LISTs; informers must start from the watch cache and resume by watching", lists)
		}
		if watches < 4 {
			t.Errorf("herd's identity sent %d watches; want at least 2 informers × (start + resume)", watches)
		}
		t.Logf("herd's identity: %d lists, %d watches across start and an apiserver restart", lists, watches)
	})
}

// herdRequests counts herd's list and watch requests in the audit log (and
// its rotated predecessors).
func herdRequests(t *testing.T, logPath string) (lists, watches int) {
	t.Helper()
	files, _ := filepath.Glob(strings.TrimSuffix(logPath, ".log") + "*.log")
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReaderSize(f, 1<<20)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 {
				var ev auditv1.Event
				// Lists are whole at ResponseComplete; a watch shows at
				// ResponseStarted and ends only when it is closed.
				if json.Unmarshal(line, &ev) == nil && ev.User.Username == stack.ExporterUser {
					switch {
					case ev.Verb == "list" && ev.Stage == auditv1.StageResponseComplete:
						lists++
						t.Logf("herd LIST: %s", ev.RequestURI)
					case ev.Verb == "watch" && ev.Stage == auditv1.StageResponseStarted:
						watches++
					}
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
	}
	return lists, watches
}
