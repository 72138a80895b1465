package hollow_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/test/auditcount"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/hollow"
)

// TestLoopbackKubemarkUserAgents runs two hollow nodes without a Network, on
// the host's loopback — where kubemark's own hollow node would fail, both
// kubelets binding 0.0.0.0:10250 — with kubemark's user agents: herd must
// classify "hollow-kubelet" and "hollow-proxy" by identity alone, and still
// count exactly what the audit log says.
func TestLoopbackKubemarkUserAgents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "audit.log")
	names := []string{"loop-1", "loop-2"}
	tee := auditcount.NewTee("hollow-audit-token")
	t.Cleanup(tee.Close)
	opts := controlplane.Options{Nodes: names, AuditPolicy: nodeAgentsPolicy, AuditLogPath: logPath}
	tee.Wire(&opts)
	cp := controlplane.StartForTest(ctx, t, opts)
	ex := startExporter(t, cp)
	tee.Forward(ex.AuditHandler())
	agents, err := hollow.Start(ctx, cp, hollow.Options{
		Nodes:      []hollow.NodeOptions{{Name: names[0]}, {Name: names[1]}},
		UserAgents: hollow.KubemarkUserAgents,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agents.Stop)
	pods, err := hollow.CreatePods(ctx, cp.Client(controlplane.Admin), podsNS, names, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := hollow.WaitPodsRunning(ctx, cp.Client(controlplane.Admin), podsNS, pods); err != nil {
		t.Fatal(err)
	}
	if err := agents.Crashed(); err != nil {
		t.Fatal(err)
	}
	compareWithAuditLog(t, ex, tee, logPath, "pods running")

	agentsSeen := map[string]string{}
	if err := auditcount.Each(logPath, func(e *auditv1.Event) { agentsSeen[e.UserAgent] = e.User.Username }); err != nil {
		t.Fatal(err)
	}
	for ua := range agentsSeen {
		if ua != "hollow-kubelet" && ua != "hollow-proxy" {
			t.Errorf("user agent %q (of %s), want kubemark's hollow-kubelet or hollow-proxy", ua, agentsSeen[ua])
		}
	}
	for _, role := range []string{"kubelet", "kube-proxy"} {
		views := ex.Ledger().Clients(accounting.ClientFilter{Role: role})
		if len(views) == 0 {
			t.Errorf("herd saw no %s instance", role)
		}
		for _, v := range views {
			if want := map[string]string{"kubelet": "hollow-kubelet", "kube-proxy": "hollow-proxy"}[role]; v.UserAgent != want || v.Client != role {
				t.Errorf("%s instance %s: client %q, user agent %q; want client %s with user agent %s", role, v.Identity, v.Client, v.UserAgent, role, want)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(agents.Dir(), names[0], "kubelet", "cri.sock")); err != nil {
		t.Errorf("the fake runtime's socket is not in the node's state directory: %v", err)
	}
}
