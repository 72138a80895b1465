package apiservices_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/herd-k8s/herd/exporter/apiservices"
	"github.com/herd-k8s/herd/exporter/collector"
	"github.com/herd-k8s/herd/test/auditcount"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/proc"
)

// herdIdentity is the identity the View runs as, with only PolicyRules.
const herdIdentity = "herd"

// env is the control plane and the View every test here shares: starting
// kube-apiserver costs seconds, and one View watching every APIService is what
// herd runs.
var env struct {
	cp       *controlplane.ControlPlane
	view     *apiservices.View
	registry *prometheus.Registry
	auditLog string
	logs     *herdtest.LogBuffer
}

// probeInterval is short so the tests see several probes; the timeout is the
// SPEC's 5 s, the same as the aggregator's own limit for discovery requests.
const probeInterval = time.Second

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "herd-apiservices-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	env.auditLog = filepath.Join(dir, "audit.log")
	env.logs = &herdtest.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
	defer scancel()
	cp, err := controlplane.Start(sctx, controlplane.Options{
		Identities:   map[string]controlplane.Identity{herdIdentity: {User: "herd-exporter"}},
		AuditLogPath: env.auditLog,
		Log:          env.logs,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cp.Stop()
	env.cp = cp
	if err := grantHerd(sctx, cp); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	view, err := apiservices.New(cp.Config(herdIdentity), apiservices.Options{
		ProbeInterval: probeInterval,
		Logger:        slog.New(slog.NewTextHandler(env.logs, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env.view = view
	done := make(chan error, 1)
	go func() { done <- view.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	for !view.Synced() {
		if sctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "View never synced:", env.logs.String())
			return 1
		}
		time.Sleep(20 * time.Millisecond)
	}
	env.registry = prometheus.NewRegistry()
	// herd's collector set over the view alone, as `herd exporter` runs it.
	env.registry.MustRegister(collector.New(collector.Sources{APIServices: view}, slog.New(slog.DiscardHandler)))
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, "herd and harness log:\n"+env.logs.String())
		fmt.Fprintln(os.Stderr, "kube-apiserver log tail:\n"+proc.TailFile(cp.APIServerLog(), 40))
	}
	return code
}

// grantHerd binds herd's identity to exactly the rules the package says it needs.
func grantHerd(ctx context.Context, cp *controlplane.ControlPlane) error {
	c := cp.Client(controlplane.Admin)
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "herd:apiservices"}, Rules: apiservices.PolicyRules}
	if _, err := c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return err
	}
	b := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "herd:apiservices"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: cp.User(herdIdentity)}},
	}
	_, err := c.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{})
	return err
}

// backendServer is an aggregated API server on loopback: it trusts the
// aggregator only with a front-proxy client certificate, as real ones do,
// and serves discovery for one group/version.
type backendServer struct {
	*httptest.Server
	groupVersion string
	// slow, if set, says which requests answer only after delay.
	slow  func(r *http.Request) bool
	delay time.Duration
	// herdRequests counts the probes that reached the backend as herd.
	herdRequests atomic.Int64
	stop         chan struct{}
}

func newBackend(t *testing.T, group, version string, slow func(*http.Request) bool, delay time.Duration) *backendServer {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(env.cp.FrontProxyCA()) {
		t.Fatal("front-proxy CA does not parse")
	}
	b := &backendServer{groupVersion: group + "/" + version, slow: slow, delay: delay, stop: make(chan struct{})}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(b.serve))
	b.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	b.StartTLS()
	t.Cleanup(func() {
		close(b.stop) // slow answers end now: Close waits for them
		b.Close()
	})
	return b
}

func (b *backendServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != controlplane.FrontProxyClientName {
		http.Error(w, "no front-proxy client certificate", http.StatusUnauthorized)
		return
	}
	if r.URL.Path != "/apis/"+b.groupVersion {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("X-Remote-User") == env.cp.User(herdIdentity) {
		b.herdRequests.Add(1)
	}
	if b.slow != nil && b.slow(r) {
		select {
		case <-time.After(b.delay):
		case <-r.Context().Done():
			return
		case <-b.stop:
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":%q,"resources":[{"name":"things","singularName":"thing","namespaced":true,"kind":"Thing","verbs":["get","list"]}]}`, b.groupVersion)
}

// fromUser is a slow predicate: requests a user sends through the
// aggregator, not the availability controller's own checks.
func fromUser(r *http.Request) bool {
	return r.Header.Get("X-Remote-User") != "system:kube-aggregator"
}

func register(t *testing.T, api controlplane.AggregatedAPI) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := env.cp.RegisterAggregatedAPI(ctx, api); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.cp.Aggregator(controlplane.Admin).ApiregistrationV1().APIServices().Delete(context.Background(), api.Name(), metav1.DeleteOptions{})
	})
}

// TestUnavailableWithoutReadyEndpoints is incident 001's first half: an
// APIService whose Service has no ready endpoint. The apiserver's own
// availability controller marks it Available=False; every discovery request
// gets a 503.
func TestUnavailableWithoutReadyEndpoints(t *testing.T) {
	t.Parallel()
	api := controlplane.AggregatedAPI{
		Group: "example.herd.dev", Version: "v1beta1", Namespace: "calico-apiserver", Service: "calico-api",
		Backends: []controlplane.Backend{{Addr: "127.0.0.1:1", Pod: "calico-apiserver-7d9f-abcde", Node: "node-2", NotReady: true}},
	}
	register(t, api)
	name := api.Name()
	created := time.Now()

	eventually(t, 45*time.Second, func() error {
		m := gather(t)
		if v, ok := m.value("herd_apiservice_available", "apiservice", name, "namespace", "calico-apiserver", "service", "calico-api"); !ok || v != 0 {
			return fmt.Errorf("herd_apiservice_available = %v (present %v), want 0", v, ok)
		}
		if v, _ := m.value("herd_apiservice_probe_failures_total", "apiservice", name, "reason", apiservices.ReasonHTTP5xx); v < 2 {
			return fmt.Errorf("http_5xx failures = %v, want ≥ 2", v)
		}
		if v, ok := m.value("herd_apiservice_endpoints", "apiservice", name, "state", "ready"); !ok || v != 0 {
			return fmt.Errorf("ready endpoints = %v (present %v), want 0", v, ok)
		}
		if v, ok := m.value("herd_apiservice_endpoints", "apiservice", name, "state", "not_ready"); !ok || v != 1 {
			return fmt.Errorf("not_ready endpoints = %v (present %v), want 1", v, ok)
		}
		if v, ok := m.value("herd_apiservice_backend", "apiservice", name, "pod", "calico-apiserver-7d9f-abcde", "node", "node-2"); !ok || v != 1 {
			return fmt.Errorf("backend series = %v (present %v), want 1", v, ok)
		}
		return nil
	})
	t.Logf("Available=0 and 503s counted %v after registration", time.Since(created).Round(time.Millisecond))

	d := debugEntry(t, name)
	if d.Available == nil || d.Available.Status != "False" || d.Available.Reason != "MissingEndpoints" {
		t.Errorf("debug available = %+v, want False/MissingEndpoints", d.Available)
	}
	if d.LastProbe == nil || d.LastProbe.Code != http.StatusServiceUnavailable || d.LastProbe.Reason != apiservices.ReasonHTTP5xx ||
		!strings.Contains(d.LastProbe.Error, "service unavailable") || !strings.Contains(d.LastProbe.Error, "MissingEndpoints") {
		t.Errorf("debug lastProbe = %+v, want a 503 'service unavailable' explained by MissingEndpoints", d.LastProbe)
	}
	t.Logf("last probe: %+v", *d.LastProbe)
	for _, r := range []string{apiservices.ReasonConnection, apiservices.ReasonTLS, apiservices.ReasonHTTP4xx} {
		if n := d.Failures[r]; n != 0 {
			t.Errorf("%d %s failures: the aggregator answers 503 without dialing the backend", n, r)
		}
	}
}

// TestSlowBackendCountsTimeouts: a backend that answers after more than 5 s.
// When it is slow for everyone, the availability controller's own check times
// out, the APIService turns Available=False and the aggregator answers 503
// "service unavailable" at once: herd classifies it by the condition. When it
// is slow only for users (packet loss the controller's five parallel checks
// survive, as in incident 001), it stays Available and herd's probe itself
// runs into the 5 s limit.
func TestSlowBackendCountsTimeouts(t *testing.T) {
	t.Parallel()
	cases := []struct {
		group     string
		slow      func(*http.Request) bool
		available float64
	}{
		{group: "slow.herd.dev", slow: func(*http.Request) bool { return true }, available: 0},
		{group: "flaky.herd.dev", slow: fromUser, available: 1},
	}
	for _, c := range cases {
		t.Run(c.group, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t, c.group, "v1", c.slow, 8*time.Second)
			api := controlplane.AggregatedAPI{
				Group: c.group, Version: "v1", Namespace: "slow-system", Service: strings.Split(c.group, ".")[0] + "-api",
				Backends: []controlplane.Backend{{Addr: b.Listener.Addr().String(), Pod: c.group + "-0", Node: "node-1"}},
			}
			register(t, api)
			name := api.Name()
			created := time.Now()
			eventually(t, 60*time.Second, func() error {
				m := gather(t)
				if v, _ := m.value("herd_apiservice_probe_failures_total", "apiservice", name, "reason", apiservices.ReasonTimeout); v < 1 {
					return fmt.Errorf("timeout failures = %v, want ≥ 1", v)
				}
				if v, ok := m.value("herd_apiservice_available", "apiservice", name, "namespace", "slow-system", "service", api.Service); !ok || v != c.available {
					return fmt.Errorf("available = %v (present %v), want %v", v, ok, c.available)
				}
				return nil
			})
			d := debugEntry(t, name)
			t.Logf("timeout counted %v after registration; available=%+v; last probe %+v; failures %v",
				time.Since(created).Round(time.Millisecond), d.Available, d.LastProbe, d.Failures)
			if d.Failures[apiservices.ReasonConnection]+d.Failures[apiservices.ReasonTLS]+d.Failures[apiservices.ReasonHTTP4xx] != 0 {
				t.Errorf("failures %v: a slow backend is neither a connection, TLS nor 4xx failure", d.Failures)
			}
			if c.available == 1 {
				if b.herdRequests.Load() == 0 {
					t.Error("no probe reached the backend as herd's user")
				}
				m := gather(t)
				// The probes that reach the backend last the full 5 s.
				h, _ := m.histogram("herd_apiservice_probe_duration_seconds", "apiservice", name)
				if under := bucket(h, 2.5); under >= h.GetSampleCount() {
					t.Errorf("all %d probes took under 2.5 s; the ones that reach the backend should last ~5 s", h.GetSampleCount())
				}
			}
		})
	}
}

// TestHealthyAPIService: a backend that answers at once reads available=1,
// its probe latency is recorded, and its backend series names the pod and
// node of the EndpointSlice.
func TestHealthyAPIService(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "healthy.herd.dev", "v1alpha1", nil, 0)
	api := controlplane.AggregatedAPI{
		Group: "healthy.herd.dev", Version: "v1alpha1", Namespace: "healthy-system", Service: "healthy-api",
		Backends: []controlplane.Backend{{Addr: b.Listener.Addr().String(), Pod: "healthy-api-5c4b-xyz12", Node: "node-3"}},
	}
	register(t, api)
	name := api.Name()
	eventually(t, 45*time.Second, func() error {
		m := gather(t)
		if v, ok := m.value("herd_apiservice_available", "apiservice", name, "namespace", "healthy-system", "service", "healthy-api"); !ok || v != 1 {
			return fmt.Errorf("available = %v (present %v), want 1", v, ok)
		}
		h, ok := m.histogram("herd_apiservice_probe_duration_seconds", "apiservice", name)
		if !ok || h.GetSampleCount() < 2 {
			return fmt.Errorf("probe histogram %v, want ≥ 2 probes", h)
		}
		if v, ok := m.value("herd_apiservice_endpoints", "apiservice", name, "state", "ready"); !ok || v != 1 {
			return fmt.Errorf("ready endpoints = %v (present %v), want 1", v, ok)
		}
		if v, ok := m.value("herd_apiservice_backend", "apiservice", name, "pod", "healthy-api-5c4b-xyz12", "node", "node-3"); !ok || v != 1 {
			return fmt.Errorf("backend series = %v (present %v), want 1", v, ok)
		}
		d, _ := debugLookup(t, name)
		if d.LastProbe == nil || d.LastProbe.Code != http.StatusOK {
			return fmt.Errorf("last probe %+v, want 200", d.LastProbe)
		}
		return nil
	})
	m := gather(t)
	h, _ := m.histogram("herd_apiservice_probe_duration_seconds", "apiservice", name)
	t.Logf("healthy probes: count %d, mean %.1f ms", h.GetSampleCount(), 1000*h.GetSampleSum()/float64(h.GetSampleCount()))
	if b.herdRequests.Load() == 0 {
		t.Error("no probe reached the backend as herd's user")
	}
	// Probes before the availability controller passed the APIService fail
	// with 503; once it is Available probes succeed (on a loaded machine one
	// may still run out of time).
	d := debugEntry(t, name)
	for _, r := range []string{apiservices.ReasonConnection, apiservices.ReasonTLS, apiservices.ReasonHTTP4xx} {
		if n := d.Failures[r]; n != 0 {
			t.Errorf("healthy APIService has %d %s failures", n, r)
		}
	}
	if len(d.Backends) != 1 || d.Backends[0].IP != "127.0.0.1" || d.Backends[0].Node != "node-3" || !d.Backends[0].Ready {
		t.Errorf("debug backends = %+v", d.Backends)
	}
	if js, err := json.MarshalIndent(d, "", "  "); err == nil {
		t.Logf("/debug/apiservices entry:\n%s", js)
	}
	if d.Service == nil || d.Service.Namespace != "healthy-system" || d.Service.Name != "healthy-api" || d.Service.Port != 443 {
		t.Errorf("debug service = %+v", d.Service)
	}

	// Counters and histograms are cumulative across scrapes.
	before, _ := m.histogram("herd_apiservice_probe_duration_seconds", "apiservice", name)
	eventually(t, 30*time.Second, func() error {
		after, _ := gather(t).histogram("herd_apiservice_probe_duration_seconds", "apiservice", name)
		if after.GetSampleCount() <= before.GetSampleCount() {
			return fmt.Errorf("probe count went from %d to %d", before.GetSampleCount(), after.GetSampleCount())
		}
		return nil
	})

	// Local APIServices are not reported.
	if _, ok := m.value("herd_apiservice_available", "apiservice", "v1.apps"); ok {
		t.Error("local APIService v1.apps has a herd_apiservice_available series")
	}
	if d := debugEntry(t, "v1.apps"); !d.Local || d.LastProbe != nil {
		t.Errorf("debug v1.apps = %+v, want local and never probed", d)
	}
}

// TestNoListAfterStart reads the apiserver's audit log: herd's identity
// started its informers with WatchList streams (watch, sendInitialEvents=true)
// and has sent no LIST at all, neither for the EndpointSlice informer it
// starts when an APIService appears, nor after kube-apiserver restarts and
// every watch breaks.
func TestNoListAfterStart(t *testing.T) {
	// Not parallel: it restarts the apiserver before the parallel tests run.
	b := newBackend(t, "audited.herd.dev", "v1", nil, 0)
	api := controlplane.AggregatedAPI{
		Group: "audited.herd.dev", Version: "v1", Namespace: "audited-system", Service: "audited-api",
		Backends: []controlplane.Backend{{Addr: b.Listener.Addr().String(), Pod: "audited-api-0", Node: "node-1"}},
	}
	register(t, api)
	eventually(t, 45*time.Second, func() error {
		if v, ok := gather(t).value("herd_apiservice_endpoints", "apiservice", api.Name(), "state", "ready"); !ok || v != 1 {
			return fmt.Errorf("ready endpoints = %v (present %v), want 1", v, ok)
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	restarted := time.Now()
	if err := env.cp.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	// A change after the restart must reach herd through the new watches.
	if err := env.cp.SetAggregatedBackends(ctx, api.Namespace, api.Service, []controlplane.Backend{
		{Addr: b.Listener.Addr().String(), Pod: "audited-api-0", Node: "node-1"},
		{Addr: b.Listener.Addr().String(), Pod: "audited-api-1", Node: "node-2", NotReady: true},
	}); err != nil {
		t.Fatal(err)
	}
	// client-go's reflectors back off exponentially (0.8 s doubling, with
	// jitter) while the apiserver is away: ~20 s here.
	eventually(t, 90*time.Second, func() error {
		if v, ok := gather(t).value("herd_apiservice_endpoints", "apiservice", api.Name(), "state", "not_ready"); !ok || v != 1 {
			return fmt.Errorf("not_ready endpoints after restart = %v (present %v), want 1", v, ok)
		}
		return nil
	})
	t.Logf("informers resumed %v after the restart began", time.Since(restarted).Round(time.Millisecond))

	user := env.cp.User(herdIdentity)
	var lists, watchLists, watches, gets []string
	resources := map[string]bool{}
	for _, ev := range readAudit(t) {
		if ev.User.Username != user || ev.Stage != auditv1.StageResponseComplete && ev.Stage != auditv1.StageResponseStarted {
			continue
		}
		line := fmt.Sprintf("%s %s %s %s", ev.StageTimestamp.Format("15:04:05.000"), ev.Stage, ev.Verb, ev.RequestURI)
		switch {
		case ev.Verb == "list":
			lists = append(lists, line)
		case ev.Verb == "watch" && strings.Contains(ev.RequestURI, "sendInitialEvents=true"):
			watchLists = append(watchLists, line)
			if ev.ObjectRef != nil {
				resources[ev.ObjectRef.Resource] = true
			}
		case ev.Verb == "watch":
			watches = append(watches, line)
		case ev.Verb == "get":
			gets = append(gets, line)
		}
	}
	t.Logf("herd's requests: %d WatchList streams, %d watches, %d discovery probes, %d LISTs", len(watchLists), len(watches), len(gets), len(lists))
	for _, l := range watchLists {
		t.Log("  watchlist:", l)
	}
	if len(lists) != 0 {
		t.Errorf("herd's identity sent %d LISTs:\n%s", len(lists), strings.Join(lists, "\n"))
	}
	if !resources["apiservices"] || !resources["endpointslices"] {
		t.Errorf("WatchList streams for %v, want apiservices and endpointslices", resources)
	}
	for _, l := range append(watchLists, watches...) {
		if strings.Contains(l, "/endpointslices") && !strings.Contains(l, "labelSelector=kubernetes.io%2Fservice-name%3D") {
			t.Errorf("endpointslice watch without a service-name selector: %s", l)
		}
		if strings.Contains(l, "/endpointslices") && !strings.Contains(l, "/namespaces/") {
			t.Errorf("cluster-wide endpointslice watch: %s", l)
		}
	}
	if len(gets) == 0 {
		t.Error("no probe of herd's appears in the audit log")
	}
}

// TestMetricsAreDocumentedAndLint checks every herd_apiservice_ metric the
// tests produced against docs/metrics.md and promlint.
func TestMetricsAreDocumentedAndLint(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "doc.herd.dev", "v1", nil, 0)
	register(t, controlplane.AggregatedAPI{
		Group: "doc.herd.dev", Version: "v1", Namespace: "doc-system", Service: "doc-api",
		Backends: []controlplane.Backend{{Addr: b.Listener.Addr().String(), Pod: "doc-api-0", Node: "node-1"}},
	})
	want := []string{"herd_apiservice_available", "herd_apiservice_probe_duration_seconds", "herd_apiservice_probe_failures_total",
		"herd_apiservice_endpoints", "herd_apiservice_backend"}
	var families []*dto.MetricFamily
	eventually(t, 45*time.Second, func() error {
		var err error
		if families, err = env.registry.Gather(); err != nil {
			return err
		}
		have := map[string]bool{}
		for _, mf := range families {
			have[mf.GetName()] = true
		}
		for _, w := range want {
			if !have[w] {
				return fmt.Errorf("%s not exported yet", w)
			}
		}
		return nil
	})
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "## Aggregated APIServices") {
		t.Error(`docs/metrics.md has no "## Aggregated APIServices" section`)
	}
	for _, mf := range families {
		if !strings.Contains(string(doc), "`"+mf.GetName()+"`") {
			t.Errorf("metric %s is not documented in docs/metrics.md", mf.GetName())
		}
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// --- helpers ---

type metrics []*dto.MetricFamily

func gather(t *testing.T) metrics {
	t.Helper()
	mfs, err := env.registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return mfs
}

func (m metrics) find(name string, labels ...string) (*dto.Metric, bool) {
	if ms := herdtest.Matching(m, name, labels...); len(ms) > 0 {
		return ms[0], true
	}
	return nil, false
}

func (m metrics) value(name string, labels ...string) (float64, bool) {
	s, ok := m.find(name, labels...)
	if !ok || s.GetGauge() == nil && s.GetCounter() == nil {
		return 0, false
	}
	return herdtest.Value(s), true
}

func (m metrics) histogram(name string, labels ...string) (*dto.Histogram, bool) {
	s, ok := m.find(name, labels...)
	if !ok || s.GetHistogram() == nil {
		return &dto.Histogram{}, false
	}
	return s.GetHistogram(), true
}

// bucket is the cumulative count of the histogram's bucket with upper bound le.
func bucket(h *dto.Histogram, le float64) uint64 {
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == le {
			return b.GetCumulativeCount()
		}
	}
	return 0
}

func debugEntry(t *testing.T, name string) apiservices.DebugAPIService {
	t.Helper()
	d, ok := debugLookup(t, name)
	if !ok {
		t.Fatalf("/debug/apiservices lacks %s", name)
	}
	return d
}

func debugLookup(t *testing.T, name string) (apiservices.DebugAPIService, bool) {
	t.Helper()
	rec := httptest.NewRecorder()
	env.view.DebugHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/apiservices", nil))
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("/debug/apiservices = %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	var page apiservices.DebugPage
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
		t.Fatalf("/debug/apiservices: %v", err)
	}
	if !page.Synced {
		t.Error("/debug/apiservices says not synced")
	}
	for _, d := range page.APIServices {
		if d.Name == name {
			return d, true
		}
	}
	return apiservices.DebugAPIService{}, false
}

// eventually polls f (herdtest.Poll) until it returns nil, and fails the
// test with f's last error after timeout.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	if err := herdtest.Poll(t.Context(), timeout, "the condition", func(context.Context) error { return f() }); err != nil {
		t.Fatal(err)
	}
}

func readAudit(t *testing.T) []auditv1.Event {
	t.Helper()
	var out []auditv1.Event
	if err := auditcount.Each(env.auditLog, func(ev *auditv1.Event) { out = append(out, *ev) }); err != nil {
		t.Fatal(err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StageTimestamp.Before(&out[j].StageTimestamp) })
	return out
}
