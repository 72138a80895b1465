package action

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/internal/apfguard"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/policy"
	"github.com/herd-k8s/herd/test/controlplane"
)

// protectOnAPIServer runs protect against the real kube-apiserver of
// TestAPFWritesOnAPIServer (herd's RBAC and APF objects applied, started
// with a server concurrency of testServerCL): the level's seats follow from
// the apiserver's own metrics; one server-side apply routes cilium's LISTs
// of pods, and nothing else of cilium's, through herd-protect-1 to
// herd-protect; isolate is then a no-op; resolve and the sweep take one
// request each.
func protectOnAPIServer(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane) {
	admin := cp.Client(controlplane.Admin)
	own, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-responder", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	level, err := admin.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, ProtectLevel, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("manifests/apf/herd.yaml installs no %s: %v", ProtectLevel, err)
	}
	if _, err := admin.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p1"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	seats := nominalSeatsOf(ctx, t, admin)
	l := newLiveResponder(t, cp, func(c *policy.Config) { c.Actions.Protect.HoldDown = model.Duration(time.Second) })

	t.Run("the level's seats follow from the apiserver's own", func(t *testing.T) {
		levels, err := l.env.APF.PriorityLevels()
		if err != nil {
			t.Fatal(err)
		}
		cl, err := serverConcurrency(seats, levels)
		if err != nil || cl != testServerCL {
			t.Fatalf("serverConcurrency = %d, %v; the apiserver runs --max-requests-inflight + --max-mutating-requests-inflight = %d", cl, err, testServerCL)
		}
		sum := 0.0
		for _, pl := range levels {
			sum += apfguard.LevelShares(pl)
		}
		for _, s := range seats {
			pl, _ := l.env.APF.PriorityLevel(s.Labels["priority_level"])
			if pl == nil {
				continue
			}
			if got := apfguard.NominalSeats(cl, apfguard.LevelShares(pl), sum); float64(got) != s.Value {
				t.Errorf("level %s: herd computes %d nominal seats, the apiserver reports %g", pl.Name, got, s.Value)
			}
		}
	})

	l.q.set(evidence.NominalSeats(""), seats...)
	risk := firing("alertname", "HerdStampedeRisk", "role", "cni", "client", "cilium", "resource", "pods", "shape", "all")
	setForecast(l.q, 3e9, 1.5e9, 2.4e9, 9, 3, 10, sample(100, "subject", "serviceaccount:kube-system:cilium"))
	ciliumCfg := cp.Config(controlplane.Cilium)
	var fs *flowcontrolv1.FlowSchema

	t.Run("protect is one server-side apply; cilium's LISTs of pods, and nothing else of cilium's, go to herd-protect", func(t *testing.T) {
		d := l.runner.Run(ctx, NewProtect(l.env).Fire(risk))
		want{result: Applied, has: "guarded cilium's LISTs of pods (shape all) from 1 subjects in FlowSchema herd-protect-1 (precedence 440, before kube-system-service-accounts at 900) to priority level herd-protect"}.check(t, d)
		t.Logf("decision: %s", d.Reason)
		sent := l.sent.Take()
		if len(sent) != 1 || sent[0].Method != http.MethodPatch || sent[0].Path != "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/herd-protect-1" ||
			!strings.Contains(sent[0].Query, "fieldManager=herd") || !strings.Contains(sent[0].Query, "force=true") || sent[0].Status != http.StatusCreated {
			t.Fatalf("requests %v, want one server-side apply of herd-protect-1", sent)
		}
		if sent[0].FlowSchemaUID != string(own.UID) {
			t.Errorf("the apply was served by FlowSchema UID %q; herd-responder is %s", sent[0].FlowSchemaUID, own.UID)
		}
		if fs, err = admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-protect-1", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		if fs.Spec.PriorityLevelConfiguration.Name != ProtectLevel || fs.Annotations[AnnotationExpiresAt] != "" || fs.Annotations[AnnotationShape] != "all" {
			t.Errorf("herd-protect-1: %+v", fs)
		}
		// APF takes the new schema within moments.
		if s, err := controlplane.WaitServedBy(ctx, ciliumCfg, "/api/v1/pods", string(fs.UID), 20*time.Second); err != nil {
			t.Fatalf("cilium's LIST of pods, herd-protect-1: %v", err)
		} else if s.Status/100 != 2 || s.PriorityLevelUID != string(level.UID) {
			t.Errorf("cilium's LIST of pods is served by herd-protect-1 (%d) at priority level UID %q, not herd-protect (%s)", s.Status, s.PriorityLevelUID, level.UID)
		}
		// A namespaced LIST of pods is a LIST of pods too.
		if s := servedAs(ctx, t, ciliumCfg, "/api/v1/namespaces/default/pods"); s.FlowSchemaUID != string(fs.UID) {
			t.Errorf("cilium's namespaced LIST of pods is served by %q, not herd-protect-1", s.FlowSchemaUID)
		}
		// Nothing else of cilium's: a GET and a WATCH of pods, a LIST of
		// another resource.
		for what, uri := range map[string]string{
			"get pods/p1": "/api/v1/namespaces/default/pods/p1",
			"watch pods":  "/api/v1/pods?watch=true&timeoutSeconds=1",
			"list nodes":  "/api/v1/nodes",
		} {
			if s := servedAs(ctx, t, ciliumCfg, uri); s.FlowSchemaUID == string(fs.UID) || s.PriorityLevelUID == string(level.UID) {
				t.Errorf("cilium's %s is served by herd-protect-1", what)
			}
		}
		// The scheduler's LISTs of pods stay where they were.
		if s := servedAs(ctx, t, cp.Config(controlplane.KubeScheduler), "/api/v1/pods"); s.FlowSchemaUID == string(fs.UID) {
			t.Error("kube-scheduler's LIST of pods is served by herd-protect-1")
		}
	})

	t.Run("again: a no-op, no request; isolate for the same target is a no-op naming the guard", func(t *testing.T) {
		want{result: Noop, reason: "FlowSchema herd-protect-1 already guards cilium's LISTs of pods (shape all)"}.check(t, l.runner.Run(ctx, NewProtect(l.env).Fire(risk)))
		d := l.runner.Run(ctx, NewIsolate(l.env).Fire(l.storm("cilium", "system:serviceaccount:kube-system:cilium")))
		want{result: Noop, reason: "FlowSchema herd-protect-1 (protect) already routes cilium's LISTs of pods to priority level herd-protect"}.check(t, d)
		if sent := l.sent.Take(); len(sent) != 0 {
			t.Errorf("requests %v", sent)
		}
	})

	t.Run("dry run is one server-side dry run, nothing stored", func(t *testing.T) {
		dry := newLiveResponder(t, cp, func(c *policy.Config) { c.DryRun = true })
		dry.q.set(evidence.NominalSeats(""), seats...)
		setForecast(dry.q, 3e9, 1.5e9, 2.4e9, 9, 3, 10, sample(100, "subject", "group:system:nodes"))
		d := dry.runner.Run(ctx, NewProtect(dry.env).Fire(firing("alertname", "HerdStampedeRisk", "role", "kubelet", "client", "kubelet", "resource", "pods", "shape", "all")))
		want{result: DryRun, has: "dry run: would have guarded kubelet's LISTs of pods (shape all) from 1 subjects in FlowSchema herd-protect-2 (precedence 440, before system-nodes at 500)"}.check(t, d)
		sent := dry.sent.Take()
		if len(sent) != 1 || sent[0].Method != http.MethodPatch || !strings.Contains(sent[0].Query, "dryRun=All") || sent[0].Status != http.StatusCreated {
			t.Fatalf("requests %v, want one server-side dry-run apply", sent)
		}
		if _, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-protect-2", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("herd-protect-2 after a dry run: %v", err)
		}
	})

	t.Run("resolve marks, the sweep removes after the hold-down: one request each", func(t *testing.T) {
		d := l.runner.Run(ctx, NewProtect(l.env).Resolve(resolved("alertname", "HerdStampedeRisk", "role", "cni", "client", "cilium", "resource", "pods", "shape", "all")))
		want{result: Applied, has: "marked FlowSchema herd-protect-1 resolved"}.check(t, d)
		if sent := l.sent.Take(); len(sent) != 1 || sent[0].Method != http.MethodPatch {
			t.Errorf("resolve: requests %v", sent)
		}
		p := NewProtect(l.env)
		l.runner.Register(p)
		waitFor(t, func() bool {
			c, _ := l.env.APF.FlowSchema("herd-protect-1")
			return c != nil && c.Annotations[AnnotationResolvedAt] != ""
		})
		time.Sleep(1100 * time.Millisecond) // the hold-down
		l.runner.Sweep(ctx)
		sent := l.sent.Take()
		if len(sent) != 1 || sent[0].Method != http.MethodDelete || sent[0].Path != "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/herd-protect-1" || sent[0].Status != http.StatusOK {
			t.Fatalf("sweep: requests %v, want one DELETE of herd-protect-1", sent)
		}
		if _, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-protect-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("herd-protect-1 after the sweep: %v", err)
		}
		if _, err := admin.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, ProtectLevel, metav1.GetOptions{}); err != nil {
			t.Errorf("the installed level went with the guard: %v", err)
		}
	})
}

// testServerCL is the server concurrency TestAPFWritesOnAPIServer's
// apiserver runs with: not the default 600, so that herd must infer it.
const testServerCL = 700 + 200

// forecast makes the evidence of HerdStampedeRisk for cni/cilium or
// kubelet LISTs of pods, shape all, and the client's subjects.
func setForecast(q *querier, peak, budget, growth, concurrency, safe, listSeats float64, subjects ...evidence.Sample) {
	for _, c := range []struct{ role, client string }{{"cni", "cilium"}, {"kubelet", "kubelet"}} {
		m := func(record string, v float64) {
			q.set(evidence.StampedeModel(record, c.role, c.client, "pods", "all", ""), sample(v))
		}
		m("peak_bytes", peak)
		m("growth_bytes", growth)
		m("concurrency", concurrency)
		m("safe_concurrency", safe)
		m("list_seats", listSeats)
		q.set(evidence.StampedeSubjects(c.role, c.client, "pods", ""), subjects...)
	}
	q.set(evidence.StampedeBudget(""), sample(budget))
}

// nominalSeatsOf reads apiserver_flowcontrol_nominal_limit_seats from the
// apiserver's /metrics, as Prometheus would, once herd-protect is there.
func nominalSeatsOf(ctx context.Context, t *testing.T, admin kubernetes.Interface) []evidence.Sample {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		raw, err := admin.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		families, err := p.TextToMetricFamilies(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		var out []evidence.Sample
		has := false
		if mf := families["apiserver_flowcontrol_nominal_limit_seats"]; mf != nil {
			for _, m := range mf.GetMetric() {
				l := map[string]string{"job": "apiserver", "instance": "127.0.0.1:6443"}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				has = has || l["priority_level"] == ProtectLevel
				out = append(out, evidence.Sample{Labels: l, Value: m.GetGauge().GetValue()})
			}
		}
		if has {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("the apiserver reports no nominal seats for %s: %v", ProtectLevel, out)
		}
	}
}

// servedAs GETs uri as cfg's identity and says how APF served it; the
// answer must be 2xx.
func servedAs(ctx context.Context, t *testing.T, cfg *rest.Config, uri string) controlplane.Served {
	t.Helper()
	s, err := controlplane.ServedBy(ctx, cfg, uri)
	if err != nil || s.Status/100 != 2 {
		t.Fatalf("GET %s: %d %v", uri, s.Status, err)
	}
	return s
}
