package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/proc"
)

const kubeletUA = "kubelet/v1.36.3 (linux/amd64) kubernetes/herdtest"

// find returns the ResponseComplete event of user's request whose URI is uri.
func find(sink *controlplane.AuditSink, user, uri string) (auditv1.Event, bool) {
	for _, e := range sink.EventsFrom(0) {
		if e.User.Username == user && e.RequestURI == uri && e.Stage == auditv1.StageResponseComplete {
			return e, true
		}
	}
	return auditv1.Event{}, false
}

func startWithAudit(t *testing.T) (*controlplane.ControlPlane, *controlplane.AuditSink, string) {
	t.Helper()
	sink := controlplane.NewAuditSink("audit-token")
	t.Cleanup(sink.Close)
	logPath := filepath.Join(t.TempDir(), "audit.log")
	opts := controlplane.Options{AuditLogPath: logPath}
	sink.Wire(&opts)
	_, cp := start(t, 2*time.Minute, opts)
	return cp, sink, logPath
}

// start starts a control plane with opts that logs to t and is stopped when
// t ends; ctx bounds the test's requests and is cancelled then too.
func start(t *testing.T, timeout time.Duration, opts controlplane.Options) (context.Context, *controlplane.ControlPlane) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx, controlplane.StartForTest(ctx, t, opts)
}

// TestKubeletRequestsAndAudit is the incident-000 ground truth: what the Node
// authorizer lets a kubelet read, the 504 a too-large resourceVersion gets,
// and the audit events the apiserver sends for each.
func TestKubeletRequestsAndAudit(t *testing.T) {
	cp, sink, logPath := startWithAudit(t)

	cfg := cp.Config(controlplane.KubeletIdentity("node-1"))
	cfg.UserAgent = kubeletUA
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	requests := []struct {
		uri      string
		wantCode int
		wantBody string
		resource string
		group    string
	}{
		{uri: "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&resourceVersion=0", wantCode: 200, resource: "pods"},
		{uri: "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-2&resourceVersion=0", wantCode: 403, resource: "pods"},
		{uri: "/apis/node.k8s.io/v1/runtimeclasses?resourceVersion=191700552", wantCode: 504, wantBody: "Too large resource version", resource: "runtimeclasses", group: "node.k8s.io"},
	}
	for _, r := range requests {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodGet, cp.URL+r.uri, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", r.uri, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("GET %s -> %d in %v", r.uri, resp.StatusCode, time.Since(start).Round(time.Millisecond))
		if resp.StatusCode != r.wantCode {
			t.Errorf("GET %s = %d, want %d: %s", r.uri, resp.StatusCode, r.wantCode, body)
		}
		if !strings.Contains(string(body), r.wantBody) {
			t.Errorf("GET %s body lacks %q: %s", r.uri, r.wantBody, body)
		}
	}

	user := cp.User(controlplane.KubeletIdentity("node-1"))
	if user != "system:node:node-1" {
		t.Fatalf("kubelet user = %q", user)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range requests {
		var ev auditv1.Event
		var ok bool
		for ; !ok && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			ev, ok = find(sink, user, r.uri)
		}
		if !ok {
			events := sink.EventsFrom(0)
			for _, e := range events {
				if e.User.Username == user {
					t.Logf("have: %s %s %s", e.Stage, e.Verb, e.RequestURI)
				}
			}
			t.Logf("total events: %d", len(events))
			t.Fatalf("no ResponseComplete audit event for %s reached the webhook", r.uri)
		}
		if ev.Verb != "list" || ev.UserAgent != kubeletUA || ev.ObjectRef == nil ||
			ev.ObjectRef.Resource != r.resource || ev.ObjectRef.APIGroup != r.group ||
			ev.ResponseStatus == nil || int(ev.ResponseStatus.Code) != r.wantCode {
			got, _ := json.Marshal(ev)
			t.Errorf("audit event for %s: want verb=list ua=%q resource=%s group=%q code=%d; got %s", r.uri, kubeletUA, r.resource, r.group, r.wantCode, got)
		}
		if r.wantCode == 504 && !strings.Contains(ev.ResponseStatus.Message, "Too large resource version") {
			t.Errorf("504 audit event message = %q, want it to say Too large resource version", ev.ResponseStatus.Message)
		}
		if len(ev.SourceIPs) == 0 || ev.SourceIPs[0] != "127.0.0.1" {
			t.Errorf("audit event for %s: sourceIPs = %v, want [127.0.0.1 ...]", r.uri, ev.SourceIPs)
		}
	}

	// The same requests reach the log backend, one JSON event per line.
	logged, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	inLog := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(logged)), "\n") {
		var ev auditv1.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit log line is not an Event: %v: %s", err, line)
		}
		if ev.User.Username == user && ev.Stage == auditv1.StageResponseComplete {
			inLog[ev.RequestURI] = true
		}
	}
	for _, r := range requests {
		if !inLog[r.uri] {
			t.Errorf("audit log lacks %s", r.uri)
		}
	}
}

// TestRestartKeepsData restarts kube-apiserver on the same etcd: objects
// survive and the same clients work again.
func TestRestartKeepsData(t *testing.T) {
	ctx, cp := start(t, 3*time.Minute, controlplane.Options{})
	admin := cp.Client(controlplane.Admin)
	if _, err := admin.CoreV1().Namespaces().Create(ctx, namespace("survivor"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	oldPid := cp.APIServerPid()
	if err := cp.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if cp.APIServerPid() == oldPid {
		t.Fatal("apiserver pid unchanged after restart")
	}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, "survivor", metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace lost across restart: %v", err)
	}
}

// TestNoProcessSurvives proves Stop leaves nothing behind: not etcd, not
// kube-apiserver, not anything they forked.
func TestNoProcessSurvives(t *testing.T) {
	before, err := proc.Children(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	during, _ := proc.Children(os.Getpid())
	if len(during)-len(before) != 2 {
		t.Errorf("while running: %d children, want 2 more than the %d before (etcd, kube-apiserver)", len(during), len(before))
	}
	dir := cp.Dir
	cp.Stop()
	after, err := proc.Children(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("after Stop: children %v, want %v", after, before)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("control-plane dir %s left behind (err %v)", dir, err)
	}
}

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// TestAggregatorReachesBackend proves the front-proxy wiring: the aggregator
// dials the endpoint the harness wrote (loopback, through an FQDN slice),
// presents the front-proxy client certificate signed by FrontProxyCA, and
// passes the user in X-Remote-* headers; the availability controller marks
// the APIService Available.
func TestAggregatorReachesBackend(t *testing.T) {
	ctx, cp := start(t, 2*time.Minute, controlplane.Options{})

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cp.FrontProxyCA()) {
		t.Fatal("FrontProxyCA does not parse")
	}
	var mu sync.Mutex
	users := map[string]bool{}
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.VerifiedChains) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != controlplane.FrontProxyClientName {
			http.Error(w, "no front-proxy client certificate", http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/apis/example.herd.dev/v1" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		users[r.Header.Get("X-Remote-User")] = true
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"example.herd.dev/v1","resources":[]}`)
	}))
	backend.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	backend.StartTLS()
	t.Cleanup(backend.Close)

	api := controlplane.AggregatedAPI{
		Group: "example.herd.dev", Version: "v1", Namespace: "example-system", Service: "example-api",
		Backends: []controlplane.Backend{{Addr: backend.Listener.Addr().String(), Pod: "example-api-0", Node: "node-1"}},
	}
	if err := cp.RegisterAggregatedAPI(ctx, api); err != nil {
		t.Fatal(err)
	}
	var cond string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		as, err := cp.Aggregator(controlplane.Admin).ApiregistrationV1().APIServices().Get(ctx, api.Name(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cond = fmt.Sprint(as.Status.Conditions)
		if len(as.Status.Conditions) > 0 && as.Status.Conditions[0].Status == "True" {
			break
		}
	}
	if !strings.Contains(cond, "Passed") {
		t.Fatalf("APIService %s never became Available: %s", api.Name(), cond)
	}
	client, err := rest.HTTPClientFor(cp.Config(controlplane.KubeletIdentity("node-1")))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(cp.URL + "/apis/example.herd.dev/v1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "APIResourceList") {
		t.Fatalf("GET /apis/example.herd.dev/v1 through the aggregator = %d %s", resp.StatusCode, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if !users["system:node:node-1"] {
		t.Errorf("backend saw users %v, want system:node:node-1 in X-Remote-User", users)
	}
}
