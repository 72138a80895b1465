package measure

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/responder/action"
	"github.com/herd-k8s/herd/responder/policy"
	"github.com/herd-k8s/herd/test/controlplane"
)

// The measurement schemas on a real kube-apiserver 1.36.3, written as the
// responder's service account with the RBAC herd ships: each node-side
// client's LISTs stay in their priority level (the apiserver's own
// X-Kubernetes-PF-PriorityLevel-UID header says so) while the apiserver
// counts them per herd schema; they follow the apiserver's configuration
// maintenance and survive its restart; turned off, none is left; deleting
// the responder's ClusterRole (uninstalling) has the garbage collector
// delete them.

const responderSA = controlplane.Responder

// Test identities beyond the harness's: calico-node as the Tigera
// operator installs it, and kube-proxy authenticated by a client
// certificate's name.
const (
	calicoOperator = "calico-system:calico-node"
	proxyUser      = "kube-proxy-user"
)

func startControlPlane(ctx context.Context, t *testing.T, controllers ...string) *controlplane.ControlPlane {
	t.Helper()
	cp := controlplane.StartForTest(ctx, t, controlplane.Options{InstallResponder: true, Controllers: controllers, Identities: map[string]controlplane.Identity{
		calicoOperator: {User: "system:serviceaccount:calico-system:calico-node", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:calico-system"}},
		proxyUser:      {User: "system:kube-proxy"},
	}})
	admin := cp.Client(controlplane.Admin)
	// The extra identities read what the CNI test role grants.
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "herd-test:measure"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "herd-test:cni"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: cp.User(calicoOperator)},
			{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: cp.User(proxyUser)}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return cp
}

// liveController is a Controller as the responder's service account.
type liveController struct {
	c    *Controller
	apf  *action.APFCache
	sent *controlplane.Requests
}

func newLiveController(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, cfg policy.Measurement) *liveController {
	t.Helper()
	l := &liveController{sent: &controlplane.Requests{}}
	rc := cp.Config(responderSA)
	rc.WrapTransport = l.sent.Wrap
	client := kubernetes.NewForConfigOrDie(rc)
	l.apf = action.NewAPFCache(client)
	var err error
	if l.c, err = New(Options{Client: client, APF: l.apf, Config: cfg, IsLeader: func() bool { return true }}); err != nil {
		t.Fatal(err)
	}
	l.apf.Start(ctx)
	if !l.apf.WaitForSync(ctx) {
		t.Fatal("the APF cache did not sync")
	}
	l.sent.Take()
	return l
}

// reconcile runs one reconcile and fails on its errors.
func (l *liveController) reconcile(ctx context.Context, t *testing.T) Status {
	t.Helper()
	st := l.c.Reconcile(ctx)
	if len(st.Errors) > 0 {
		t.Fatalf("reconcile: %v", st.Errors)
	}
	return st
}

// settled waits until the cache shows what the last writes wrote (a
// reconcile then writes nothing).
func (l *liveController) settled(ctx context.Context, t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st := l.c.Reconcile(ctx)
		if sent := l.sent.Take(); len(sent) == 0 && len(st.Errors) == 0 {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("the controller keeps writing: %v %v", sent, st.Errors)
		}
	}
}

// served is how APF served one request.
type served = controlplane.Served

func serve(ctx context.Context, t *testing.T, cfg *rest.Config, path string) served {
	t.Helper()
	s, err := controlplane.ServedBy(ctx, cfg, path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// probe is one request of one client that herd measures (or must not).
type probe struct {
	identity, path string
	measured       bool // served by a herd-measure schema once they are in place
}

var probes = []probe{
	{controlplane.KubeletIdentity("node-1"), "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1", true},
	{controlplane.KubeletIdentity("node-1"), "/api/v1/services", true},
	{controlplane.KubeletIdentity("node-1"), "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dnode-1", true},
	{controlplane.KubeProxy, "/apis/discovery.k8s.io/v1/endpointslices", true},
	{controlplane.KubeProxy, "/api/v1/services", true},
	{controlplane.KubeProxy, "/api/v1/nodes", true},
	{controlplane.Cilium, "/api/v1/pods", true},
	{controlplane.Cilium, "/api/v1/nodes?limit=500&resourceVersion=0", true},
	{controlplane.Cilium, "/api/v1/namespaces/kube-system/pods", true},
	{controlplane.CalicoNode, "/api/v1/pods", true},
	{calicoOperator, "/api/v1/pods", true},
	{proxyUser, "/api/v1/services", true},
	// Not LISTs, or not of a measured resource: untouched.
	{controlplane.Cilium, "/api/v1/namespaces/kube-system", false},
	{controlplane.Cilium, "/api/v1/namespaces", false},
	{controlplane.KubeletIdentity("node-1"), "/api/v1/namespaces/default/services/kubernetes", false},
}

// schemaNames maps FlowSchema UIDs to names.
func schemaNames(ctx context.Context, t *testing.T, admin kubernetes.Interface) map[string]string {
	t.Helper()
	l, err := admin.FlowcontrolV1().FlowSchemas().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, fs := range l.Items {
		out[string(fs.UID)] = fs.Name
	}
	return out
}

// measurement returns herd's measurement schemas by name.
func measurement(ctx context.Context, t *testing.T, admin kubernetes.Interface) map[string]flowcontrolv1.FlowSchema {
	t.Helper()
	l, err := admin.FlowcontrolV1().FlowSchemas().List(ctx, metav1.ListOptions{LabelSelector: LabelMeasurement + "=true"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]flowcontrolv1.FlowSchema{}
	for _, fs := range l.Items {
		out[fs.Name] = fs
	}
	return out
}

// eventually retries check (APF takes a new configuration within moments)
// until it returns "".
func eventually(t *testing.T, within time.Duration, check func() string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if last = check(); last == "" {
			return
		}
	}
	t.Fatal(last)
}

// checkServing: every probe is served in the priority level it had
// before herd measured, by a herd-measure schema when it is measured, by
// the schema it had otherwise.
func checkServing(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, before map[probe]served, measuring bool) func() string {
	admin := cp.Client(controlplane.Admin)
	return func() string {
		names := schemaNames(ctx, t, admin)
		var problems []string
		for _, p := range probes {
			now := serve(ctx, t, cp.Config(p.identity), p.path)
			b := before[p]
			switch {
			case now.Status != http.StatusOK:
				problems = append(problems, fmt.Sprintf("%s GET %s: %d", p.identity, p.path, now.Status))
			case now.PriorityLevelUID != b.PriorityLevelUID:
				problems = append(problems, fmt.Sprintf("%s GET %s: priority level %s, before %s", p.identity, p.path, now.PriorityLevelUID, b.PriorityLevelUID))
			case measuring && p.measured && !strings.HasPrefix(names[now.FlowSchemaUID], SlotPrefix+"-"):
				problems = append(problems, fmt.Sprintf("%s GET %s: served by %s, not a herd-measure schema", p.identity, p.path, names[now.FlowSchemaUID]))
			case (!measuring || !p.measured) && now.FlowSchemaUID != b.FlowSchemaUID:
				problems = append(problems, fmt.Sprintf("%s GET %s: served by %s, before by %s", p.identity, p.path, names[now.FlowSchemaUID], names[b.FlowSchemaUID]))
			}
		}
		return strings.Join(problems, "\n")
	}
}

// dispatched reads apiserver_flowcontrol_dispatched_requests_total by
// flow_schema from the apiserver's /metrics.
func dispatched(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane) map[string]float64 {
	t.Helper()
	b, err := cp.Client(controlplane.Admin).CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	f := families["apiserver_flowcontrol_dispatched_requests_total"]
	if f == nil {
		t.Fatal("the apiserver exports no apiserver_flowcontrol_dispatched_requests_total")
	}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "flow_schema" {
				out[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

func defaultMeasurement() policy.Measurement {
	m := policy.Default().Measurement
	m.Enabled = true
	return m
}

func TestMeasurementOnAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cp := startControlPlane(ctx, t)
	admin := cp.Client(controlplane.Admin)

	before := map[probe]served{}
	for _, p := range probes {
		before[p] = serve(ctx, t, cp.Config(p.identity), p.path)
		if before[p].Status != http.StatusOK || before[p].PriorityLevelUID == "" || before[p].FlowSchemaUID == "" {
			t.Fatalf("%s GET %s before measuring: %+v", p.identity, p.path, before[p])
		}
	}
	l := newLiveController(ctx, t, cp, defaultMeasurement())

	t.Run("every default schema is written, one apply each, and lands where its LISTs were served", func(t *testing.T) {
		st := l.reconcile(ctx, t)
		sent := l.sent.Take()
		n := 0
		for _, p := range st.Placements {
			if p.Skip != "" {
				t.Errorf("%s skipped: %s", p.Key, p.Skip)
			}
			n++
		}
		if want := policy.Default().Measurement.Schemas(); n != want || len(sent) != want+1 {
			t.Fatalf("%d placements, %d requests (%v); want %d schemas, each one apply, and one GET of the owner", n, len(sent), sent, want)
		}
		if sent[0].Method != http.MethodGet || sent[0].Path != "/apis/rbac.authorization.k8s.io/v1/clusterroles/herd-responder" {
			t.Errorf("first request %s, want the owner's GET", sent[0])
		}
		for _, s := range sent[1:] {
			if s.Method != http.MethodPatch || !strings.HasPrefix(s.Path, "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/herd-measure-") ||
				!strings.Contains(s.Query, "fieldManager=herd") || s.Status != http.StatusCreated {
				t.Errorf("request %s, want server-side applies of herd-measure slots", s)
			}
		}
		mine := measurement(ctx, t, admin)
		if len(mine) != n {
			t.Errorf("%d herd-measure schemas stored, want %d", len(mine), n)
		}
		owner, err := admin.RbacV1().ClusterRoles().Get(ctx, "herd-responder", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Placements {
			fs, ok := mine[p.Slot]
			if !ok {
				continue
			}
			serving, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, p.Serving, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if fs.Spec.PriorityLevelConfiguration != serving.Spec.PriorityLevelConfiguration || !equalDistinguisher(fs.Spec.DistinguisherMethod, serving.Spec.DistinguisherMethod) ||
				!flowmatchBefore(&fs, serving) || len(fs.OwnerReferences) != 1 || fs.OwnerReferences[0].UID != owner.UID {
				t.Errorf("%s (%s): level %s, distinguisher %v, precedence %d, owners %v; serving %s: level %s, distinguisher %v, precedence %d",
					fs.Name, p.Key, fs.Spec.PriorityLevelConfiguration.Name, fs.Spec.DistinguisherMethod, fs.Spec.MatchingPrecedence, fs.OwnerReferences,
					serving.Name, serving.Spec.PriorityLevelConfiguration.Name, serving.Spec.DistinguisherMethod, serving.Spec.MatchingPrecedence)
			}
		}
		l.settled(ctx, t)
	})

	t.Run("serving is unchanged: the same priority level, herd's FlowSchema", func(t *testing.T) {
		eventually(t, 20*time.Second, checkServing(ctx, t, cp, before, true))
		for _, p := range probes {
			now := serve(ctx, t, cp.Config(p.identity), p.path)
			t.Logf("%-14s GET %-60s level %s (same), schema %s → %s", strings.TrimPrefix(cp.User(p.identity), "system:serviceaccount:"), p.path, now.PriorityLevelUID[:8],
				schemaNames(ctx, t, admin)[before[p].FlowSchemaUID], schemaNames(ctx, t, admin)[now.FlowSchemaUID])
		}
	})

	t.Run("the apiserver counts each client's LISTs in its schema, exactly", func(t *testing.T) {
		cilium := cp.Config(controlplane.Cilium)
		first := serve(ctx, t, cilium, "/api/v1/pods")
		name := schemaNames(ctx, t, admin)[first.FlowSchemaUID]
		b := dispatched(ctx, t, cp)[name]
		for range 7 {
			serve(ctx, t, cilium, "/api/v1/pods")
		}
		if got := dispatched(ctx, t, cp)[name] - b; got != 7 {
			t.Errorf("apiserver_flowcontrol_dispatched_requests_total{flow_schema=%q} grew by %v over 7 LISTs", name, got)
		}
	})

	t.Run("herd's isolate schema still wins over measurement", func(t *testing.T) {
		iso := &flowcontrolv1.FlowSchema{
			ObjectMeta: metav1.ObjectMeta{Name: "herd-isolate-1", Labels: map[string]string{action.ManagedByLabel: action.ManagedByValue},
				Annotations: map[string]string{action.AnnotationAction: "isolate", action.AnnotationRole: "cni", action.AnnotationClient: "cilium-agent", action.AnnotationResource: "pods"}},
			Spec: flowcontrolv1.FlowSchemaSpec{PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: action.IsolateLevel}, MatchingPrecedence: 450,
				DistinguisherMethod: &flowcontrolv1.FlowDistinguisherMethod{Type: flowcontrolv1.FlowDistinguisherMethodByUserType},
				Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
					Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}}},
					ResourceRules: []flowcontrolv1.ResourcePolicyRule{{Verbs: []string{"list"}, APIGroups: []string{""}, Resources: []string{"pods"}, ClusterScope: true,
						Namespaces: []string{"*"}}}}}},
		}
		created, err := admin.FlowcontrolV1().FlowSchemas().Create(ctx, iso, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, func() string {
			if s := serve(ctx, t, cp.Config(controlplane.Cilium), "/api/v1/pods"); s.FlowSchemaUID != string(created.UID) {
				return "cilium's pod LIST is not served by herd-isolate-1: " + schemaNames(ctx, t, admin)[s.FlowSchemaUID]
			}
			return ""
		})
		l.settled(ctx, t) // the new schema changes none of herd's measurement schemas
		if err := admin.FlowcontrolV1().FlowSchemas().Delete(ctx, "herd-isolate-1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, checkServing(ctx, t, cp, before, true))
	})

	t.Run("the apiserver's configuration maintenance: herd follows its changes and is left alone (65 s+)", func(t *testing.T) {
		l.settled(ctx, t)
		untouched := measurement(ctx, t, admin)
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); l.c.Run(runCtx) }()
		start := time.Now()
		// Someone changes a suggested schema: herd's copies follow; the
		// maintenance (every minute, apf.kubernetes.io/autoupdate-spec=true)
		// puts it back, and herd's follow again.
		ks, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, "kube-system-service-accounts", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ks.Annotations[flowcontrolv1.AutoUpdateAnnotationKey] != "true" {
			t.Fatalf("kube-system-service-accounts is not auto-updated: %v", ks.Annotations)
		}
		ks.Spec.PriorityLevelConfiguration.Name = "workload-low"
		if _, err := admin.FlowcontrolV1().FlowSchemas().Update(ctx, ks, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		followed := func(level string) func() string {
			return func() string {
				for name, fs := range measurement(ctx, t, admin) {
					if fs.Annotations[AnnotationServing] == "kube-system-service-accounts" && fs.Spec.PriorityLevelConfiguration.Name != level {
						return fmt.Sprintf("%s routes to %s, kube-system-service-accounts to %s", name, fs.Spec.PriorityLevelConfiguration.Name, level)
					}
				}
				return ""
			}
		}
		eventually(t, 20*time.Second, followed("workload-low"))
		eventually(t, 30*time.Second, func() string {
			if s := serve(ctx, t, cp.Config(controlplane.Cilium), "/api/v1/pods"); s.PriorityLevelUID == before[probes[6]].PriorityLevelUID {
				return "cilium's LISTs are still served in workload-high after the change"
			}
			return ""
		})
		t.Logf("changed kube-system-service-accounts to workload-low: herd's schemas followed after %s", time.Since(start).Round(time.Second))
		eventually(t, 100*time.Second, followed("workload-high"))
		t.Logf("the apiserver's maintenance put it back and herd's schemas followed after %s", time.Since(start).Round(time.Second))
		if wait := 65*time.Second - time.Since(start); wait > 0 {
			time.Sleep(wait)
		}
		stop()
		<-done
		for name, was := range untouched {
			now, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Errorf("%s after %s of maintenance: %v", name, time.Since(start).Round(time.Second), err)
				continue
			}
			if now.UID != was.UID {
				t.Errorf("%s was recreated", name)
			}
			if was.Annotations[AnnotationServing] != "kube-system-service-accounts" && now.ResourceVersion != was.ResourceVersion {
				t.Errorf("%s changed (resourceVersion %s → %s) though what it copies did not", name, was.ResourceVersion, now.ResourceVersion)
			}
		}
		eventually(t, 20*time.Second, checkServing(ctx, t, cp, before, true))
	})

	t.Run("a kube-apiserver restart changes nothing", func(t *testing.T) {
		was := measurement(ctx, t, admin)
		if err := cp.RestartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		now := measurement(ctx, t, admin)
		for name, fs := range was {
			if n, ok := now[name]; !ok || n.UID != fs.UID || !equalSpec(n.Spec, fs.Spec) {
				t.Errorf("%s after the restart: %v", name, ok)
			}
		}
		eventually(t, 30*time.Second, checkServing(ctx, t, cp, before, true))
		// The informers resume; nothing to write.
		eventually(t, 30*time.Second, func() string {
			if !l.apf.Synced() {
				return "cache not synced"
			}
			st := l.c.Reconcile(ctx)
			if sent := l.sent.Take(); len(sent) > 0 || len(st.Errors) > 0 {
				return fmt.Sprintf("after the restart the controller wrote %v (%v)", sent, st.Errors)
			}
			return ""
		})
	})

	t.Run("turned off, none is left and serving is as before", func(t *testing.T) {
		l.c.opts.Config.Enabled = false
		st := l.reconcile(ctx, t)
		if len(st.Removed) != policy.Default().Measurement.Schemas() {
			t.Errorf("removed %d", len(st.Removed))
		}
		if left := measurement(ctx, t, admin); len(left) != 0 {
			t.Errorf("%d herd-measure schemas left", len(left))
		}
		eventually(t, 20*time.Second, checkServing(ctx, t, cp, before, false))
	})
}

// TestMeasurementUninstalled: deleting the responder's ClusterRole, as
// helm uninstall and kubectl delete -f manifests/rbac/responder.yaml do,
// has kube-controller-manager's garbage collector delete every measurement
// schema; a responder still running writes none back without its owner.
func TestMeasurementUninstalled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver and kube-controller-manager")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cp := startControlPlane(ctx, t, "garbagecollector")
	admin := cp.Client(controlplane.Admin)
	cfg := defaultMeasurement()
	cfg.Clients = []policy.MeasuredClient{cilium, nodes}
	l := newLiveController(ctx, t, cp, cfg)
	l.reconcile(ctx, t)
	if n := len(measurement(ctx, t, admin)); n != 2 {
		t.Fatalf("%d measurement schemas", n)
	}
	if err := admin.RbacV1().ClusterRoles().Delete(ctx, "herd-responder", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, 90*time.Second, func() string {
		if n := len(measurement(ctx, t, admin)); n > 0 {
			return fmt.Sprintf("%d measurement schemas left %s after the owner was deleted (kube-controller-manager log: %s)", n, time.Since(start).Round(time.Second), cp.ControllerManagerLog())
		}
		return ""
	})
	t.Logf("the garbage collector deleted the measurement schemas %s after their owner", time.Since(start).Round(time.Second))
	// A responder still running, once its cache shows them gone, cannot
	// read its owner (its RBAC went with the ClusterRole too): it writes
	// none back.
	var st Status
	eventually(t, 30*time.Second, func() string {
		if st = l.c.Reconcile(ctx); len(st.Errors) == 0 {
			return "a reconcile after the uninstall reports nothing"
		}
		return ""
	})
	if n := len(measurement(ctx, t, admin)); n != 0 {
		t.Errorf("after the uninstall a responder left running wrote %d schemas back", n)
	}
	t.Logf("a responder left running: %v", st.Errors)
}

func equalDistinguisher(a, b *flowcontrolv1.FlowDistinguisherMethod) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Type == b.Type
}

func equalSpec(a, b flowcontrolv1.FlowSchemaSpec) bool { return equality.Semantic.DeepEqual(a, b) }

// flowmatchBefore: a is tried right before b (same precedence and a
// smaller name, or one below).
func flowmatchBefore(a, b *flowcontrolv1.FlowSchema) bool {
	return (a.Spec.MatchingPrecedence == b.Spec.MatchingPrecedence && a.Name < b.Name) || a.Spec.MatchingPrecedence == b.Spec.MatchingPrecedence-1
}
