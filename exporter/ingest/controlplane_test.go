package ingest_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/test/controlplane"
)

// TestRealAPIServerTrustFields runs kube-apiserver 1.36.3 and checks what
// its audit events carry against what herd's decoder takes from them
// (issues 13 and 16):
//
//   - a pod-bound service-account token (TokenRequest bound to a Pod on
//     node-1, whose Node object does not exist) authenticates, and its
//     events carry user.extra authentication.kubernetes.io/node-name=node-1,
//     which herd decodes as NodeNameExtra, while a forged X-Forwarded-For
//     lands in SourceIP and the connection's address stays last (PeerIP);
//   - an anonymous request is Unauthenticated;
//   - a client that sends one Audit-ID on 8 WatchList relists gets 8
//     requests audited under that ID, and herd counts 8 relists.
func TestRealAPIServerTrustFields(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logPath := filepath.Join(t.TempDir(), "audit.log")
	cp, err := controlplane.Start(ctx, controlplane.Options{AuditLogPath: logPath, ExtraArgs: []string{"--anonymous-auth=true"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	admin := cp.Client(controlplane.Admin)

	// A Pod on node-1 (no Node object: a deleted Node's pod would look the
	// same) running as kube-system/cilium, and a token bound to it.
	if _, err := admin.CoreV1().ServiceAccounts("kube-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "cilium"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	no := false
	pod, err := admin.CoreV1().Pods("kube-system").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cilium-abcde"},
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "cilium", AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "agent", Image: "quay.io/cilium/cilium:v1.18.2"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := admin.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "cilium", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	base := cp.Config(controlplane.Admin)
	raw := func(token, path string, header ...string) {
		t.Helper()
		cfg := &rest.Config{Host: base.Host, BearerToken: token, TLSClientConfig: base.TLSClientConfig}
		hc, err := rest.HTTPClientFor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base.Host+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	raw(tr.Status.Token, "/api/v1/namespaces/kube-system/pods?limit=1",
		"X-Forwarded-For", "10.0.0.99, 10.0.0.98", "User-Agent", "cilium-agent/1.18.2 herd-trust-test")
	raw("", "/api/v1/pods?limit=1", "User-Agent", "calico-node/v3.30.0 herd-anonymous-test", "X-Forwarded-For", "10.0.0.1")
	for i := 0; i < 8; i++ {
		raw(cp.Token(controlplane.KubeletIdentity("node-1")),
			"/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
			"Audit-ID", "constant-audit-id", "User-Agent", "kubelet/v1.36.3 (linux/amd64) kubernetes/herdsim")
	}

	// The log backend writes as it goes; wait for the last watch's
	// ResponseComplete.
	var log []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		log, _ = os.ReadFile(logPath)
		if bytes.Count(log, []byte(`"auditID":"constant-audit-id","stage":"ResponseComplete"`)) >= 8 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var sawToken, sawAnon bool
	watchStarts := 0
	var d audit.Decoder
	for _, line := range bytes.Split(log, []byte("\n")) {
		if err := d.DecodeLine(line, func(e *audit.Event) {
			switch {
			case strings.Contains(string(e.UserAgent), "herd-trust-test") && e.Stage == audit.StageResponseComplete:
				sawToken = true
				if string(e.User) != "system:serviceaccount:kube-system:cilium" || string(e.NodeNameExtra) != "node-1" ||
					string(e.SourceIP) != "10.0.0.99" || string(e.PeerIP()) != "127.0.0.1" || e.NumSourceIPTail != 3 || e.Unauthenticated {
					t.Errorf("pod-bound token's event: user %q node-name %q sourceIP %q peer %q tail %d unauthenticated %v\n%s",
						e.User, e.NodeNameExtra, e.SourceIP, e.PeerIP(), e.NumSourceIPTail, e.Unauthenticated, line)
				}
			case strings.Contains(string(e.UserAgent), "herd-anonymous-test") && e.Stage == audit.StageResponseComplete:
				sawAnon = true
				if !e.Unauthenticated || e.Code != 403 || string(e.PeerIP()) != "127.0.0.1" {
					t.Errorf("anonymous event: user %q unauthenticated %v code %d peer %q\n%s", e.User, e.Unauthenticated, e.Code, e.PeerIP(), line)
				}
			case string(e.AuditID) == "constant-audit-id" && e.Stage == audit.StageResponseStarted:
				watchStarts++
				if !e.Query.SendInitialEvents || e.RequestReceivedNanos() == 0 {
					t.Errorf("WatchList event: %+v", e.Query)
				}
			}
		}); err != nil && len(bytes.TrimSpace(line)) > 0 {
			t.Errorf("audit line not decoded: %v", err)
		}
	}
	if !sawToken || !sawAnon || watchStarts != 8 {
		t.Fatalf("in the apiserver's log: token event %v, anonymous event %v, %d WatchList starts under one Audit-ID (want 8)", sawToken, sawAnon, watchStarts)
	}

	// The same log through herd: 8 relists, not 1.
	a := newAudit(t, nil)
	if code, msg := post(t, a.AuditHandler(), string(log), "Content-Type", "application/x-ndjson"); code != 200 {
		t.Fatalf("%d %s", code, msg)
	}
	if r := sumOf(herdSeries(t, a), "herd_relists_total", "client=kubelet", "resource=pods"); r != 8 {
		t.Errorf("herd counted %v kubelet pod relists under one Audit-ID, want 8", r)
	}
}
