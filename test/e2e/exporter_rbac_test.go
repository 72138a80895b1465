package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/herd-k8s/herd/exporter/metricsserver"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/stack"
)

const (
	rbacManifest = "../../manifests/rbac/exporter.yaml"
	// rbacIdentity is the controlplane identity name of the exporter's
	// service account.
	rbacIdentity = "herd-exporter"
	rbacSAUser   = "system:serviceaccount:herd:herd-exporter"
)

// rbacSAGroups are the groups the apiserver gives the service account's
// token, less system:authenticated (which every authenticated user gets).
var rbacSAGroups = []string{"system:serviceaccounts", "system:serviceaccounts:herd"}

// access is one request the exporter might make.
type access = controlplane.Access

// checkRulesAreReadOnly fails on any write verb or wildcard in the
// manifest's roles, and on bindings to anyone but the exporter's account.
func checkRulesAreReadOnly(t *testing.T, objs map[string][]any) {
	t.Helper()
	readOnly := map[string]bool{"get": true, "list": true, "watch": true}
	var rules []rbacv1.PolicyRule
	for _, o := range objs["ClusterRole"] {
		rules = append(rules, o.(*rbacv1.ClusterRole).Rules...)
	}
	for _, o := range objs["Role"] {
		rules = append(rules, o.(*rbacv1.Role).Rules...)
	}
	if len(rules) == 0 {
		t.Fatal("manifest has no rules")
	}
	for _, r := range rules {
		for _, list := range [][]string{r.Verbs, r.APIGroups, r.Resources, r.ResourceNames, r.NonResourceURLs} {
			for _, v := range list {
				if v == "*" {
					t.Errorf("rule %+v has a wildcard", r)
				}
			}
		}
		for _, v := range r.Verbs {
			if !readOnly[v] {
				t.Errorf("rule %+v grants %q", r, v)
			}
		}
	}
	var subjects []rbacv1.Subject
	for _, o := range objs["ClusterRoleBinding"] {
		subjects = append(subjects, o.(*rbacv1.ClusterRoleBinding).Subjects...)
	}
	for _, o := range objs["RoleBinding"] {
		subjects = append(subjects, o.(*rbacv1.RoleBinding).Subjects...)
	}
	for _, s := range subjects {
		if s.Kind != rbacv1.ServiceAccountKind || s.Name != "herd-exporter" || s.Namespace != "herd" {
			t.Errorf("binding subject %+v is not the herd-exporter service account", s)
		}
	}
}

// reviewAs asks, as admin, whether the service account's user with only its
// service-account groups (not system:authenticated) may do a: that is, what
// herd's own bindings grant, without the defaults every authenticated user
// gets (system:discovery, system:basic-user).
func reviewAs(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, a access) bool {
	t.Helper()
	ok, err := cp.Allowed(ctx, rbacSAUser, rbacSAGroups, a)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// selfReview asks, as the service account itself, whether it may do a.
func selfReview(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, a access) (bool, string) {
	t.Helper()
	ok, reason, err := cp.SelfAllowed(ctx, rbacIdentity, a)
	if err != nil {
		t.Fatal(err)
	}
	return ok, reason
}

// TestRBACExporterManifest applies manifests/rbac/exporter.yaml to a real
// kube-apiserver, checks the exporter's service account may do exactly what
// the exporter needs, and runs the exporter's informers as that account.
func TestRBACExporterManifest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp := controlplane.StartForTest(ctx, t, controlplane.Options{
		Nodes:      []string{"node-1"},
		Identities: map[string]controlplane.Identity{rbacIdentity: {User: rbacSAUser, Groups: rbacSAGroups}},
	})
	admin := cp.Client(controlplane.Admin)
	sa := cp.Client(rbacIdentity)

	var objs map[string][]any
	applied := herdtest.NewPrereq("the manifest applied", func(t *testing.T) {
		var err error
		if objs, err = stack.ApplyManifest(ctx, admin, rbacManifest); err != nil {
			t.Fatal(err)
		}
	})
	effective := herdtest.NewPrereq("the manifest's bindings in effect", func(t *testing.T) {
		applied.Need(t)
		// The RBAC authorizer reads bindings through informers: wait for them.
		herdtest.Wait(t, 15*time.Second, "the manifest's bindings to take effect", func() bool {
			for _, a := range stack.ExporterAllowed {
				if !reviewAs(ctx, t, cp, a) {
					return false
				}
			}
			return true
		})
	})

	t.Run("nothing is granted before the manifest", func(t *testing.T) {
		// Before the manifest, nothing in the allowed list is granted to the
		// account by its own groups: whatever is allowed later, the manifest
		// granted.
		for _, a := range stack.ExporterAllowed {
			if reviewAs(ctx, t, cp, a) {
				t.Errorf("before the manifest, %s is already allowed", a)
			}
		}
	})
	t.Run("the manifest grants only reads and only to the exporter", func(t *testing.T) {
		applied.Need(t)
		checkRulesAreReadOnly(t, objs)
	})
	t.Run("the exporter account may do what it needs and nothing else", func(t *testing.T) {
		effective.Need(t)
		for _, a := range stack.ExporterAllowed {
			if ok, reason := selfReview(ctx, t, cp, a); !ok {
				t.Errorf("herd-exporter may not %s: %s", a, reason)
			}
		}
		for _, a := range stack.ExporterDenied {
			if ok, reason := selfReview(ctx, t, cp, a); ok {
				t.Errorf("herd-exporter may %s (%s); it must not", a, reason)
			}
			if reviewAs(ctx, t, cp, a) {
				t.Errorf("herd's bindings grant %s; they must not", a)
			}
		}
		t.Logf("checked %d allowed and %d denied requests", len(stack.ExporterAllowed), len(stack.ExporterDenied))
	})
	t.Run("the exporter informers sync as its account", func(t *testing.T) {
		effective.Need(t)
		checkInformers(ctx, t, cp, admin, sa)
	})
}

// checkInformers runs the exporter's informers as its service account
// (sa) against objects for them to find: every error any of them reports
// is a failure, and a control informer the manifest does not cover must
// report its 403.
func checkInformers(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, admin, sa kubernetes.Interface) {
	// Objects for the informers to find.
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ms := herdtest.MetricsServer("kube-system", "metrics-server", "app.kubernetes.io/name", "--secure-port=10250", "--kubelet-preferred-address-types=InternalIP")
	if _, err := admin.AppsV1().Deployments("kube-system").Create(ctx, ms, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// An APIService backend's EndpointSlice (no controller-manager runs here
	// to make one).
	node1 := "node-1"
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "metrics-server-abcde", Namespace: "kube-system", Labels: map[string]string{discoveryv1.LabelServiceName: "metrics-server"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.7"}, NodeName: &node1}},
	}
	if _, err := admin.DiscoveryV1().EndpointSlices("kube-system").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The exporter's informers, as the service account. Every error any of
	// them reports is a failure.
	var mu sync.Mutex
	var watchErrs []string
	onErr := func(what string) func(error) {
		return func(err error) {
			mu.Lock()
			defer mu.Unlock()
			watchErrs = append(watchErrs, fmt.Sprintf("%s: %v", what, err))
		}
	}
	handler := func(what string, inf cache.SharedIndexInformer) {
		t.Helper()
		f := onErr(what)
		if err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
			cache.DefaultWatchErrorHandler(ctx, r, err)
			f(err)
		}); err != nil {
			t.Fatal(err)
		}
	}
	ictx, icancel := context.WithCancel(ctx)
	defer icancel()

	cluster := informers.NewSharedInformerFactory(sa, 0)
	nodes := cluster.Core().V1().Nodes().Informer()
	handler("nodes", nodes)
	slices := cluster.Discovery().V1().EndpointSlices().Informer()
	handler("endpointslices", slices)
	leaseFactory := informers.NewSharedInformerFactoryWithOptions(sa, 0, informers.WithNamespace("kube-node-lease"))
	leases := leaseFactory.Coordination().V1().Leases().Informer()
	handler("leases in kube-node-lease", leases)
	dyn := dynamic.NewForConfigOrDie(cp.Config(rbacIdentity))
	apiFactory := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	apiservices := apiFactory.ForResource(schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}).Informer()
	handler("apiservices", apiservices)
	// The APF view's informers (exporter/apf), on the same objects.
	apfFactory := informers.NewSharedInformerFactory(sa, 0)
	flowSchemas := apfFactory.Flowcontrol().V1().FlowSchemas().Informer()
	handler("flowschemas", flowSchemas)
	levels := apfFactory.Flowcontrol().V1().PriorityLevelConfigurations().Informer()
	handler("prioritylevelconfigurations", levels)
	msInf, err := metricsserver.New(sa, metricsserver.Options{OnWatchError: onErr("metrics-server deployments")})
	if err != nil {
		t.Fatal(err)
	}

	// A control: leases across all namespaces are not granted, and the
	// error handler must say so — proof that a missing grant would show.
	var denied sync.Once
	deniedCh := make(chan error, 1)
	allLeases := informers.NewSharedInformerFactory(sa, 0).Coordination().V1().Leases().Informer()
	if err := allLeases.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		denied.Do(func() { deniedCh <- err })
	}); err != nil {
		t.Fatal(err)
	}

	cluster.Start(ictx.Done())
	leaseFactory.Start(ictx.Done())
	apiFactory.Start(ictx.Done())
	apfFactory.Start(ictx.Done())
	msInf.Start(ictx)
	go allLeases.RunWithContext(ictx)

	syncCtx, syncCancel := context.WithTimeout(ctx, 20*time.Second)
	defer syncCancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), nodes.HasSynced, slices.HasSynced, leases.HasSynced, apiservices.HasSynced, msInf.Synced, flowSchemas.HasSynced, levels.HasSynced) {
		mu.Lock()
		t.Fatalf("informers did not sync as herd-exporter; errors: %v", watchErrs)
	}
	select {
	case err := <-deniedCh:
		if !apierrors.IsForbidden(err) {
			t.Errorf("control: cluster-wide leases informer failed with %v, want 403 Forbidden", err)
		} else {
			t.Logf("control: cluster-wide leases informer got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("control: cluster-wide leases informer reported no 403")
	}

	if got := nodes.GetStore().ListKeys(); len(got) != 1 || got[0] != "node-1" {
		t.Errorf("node informer has %v, want [node-1]", got)
	}
	// The apiserver registers its local APIServices (v1., v1.apps, ...).
	if n := len(apiservices.GetStore().ListKeys()); n == 0 {
		t.Error("APIService informer is empty")
	}
	herdtest.Wait(t, 10*time.Second, "the kube-system/metrics-server-abcde EndpointSlice", func() bool {
		_, ok, _ := slices.GetStore().GetByKey("kube-system/metrics-server-abcde")
		return ok
	})
	if vs := msInf.Deployments(); len(vs) != 1 || vs[0].Mode != metricsserver.ModeToken {
		t.Errorf("metrics-server informer as herd-exporter = %+v, want kube-system/metrics-server in token mode", vs)
	}

	// The apiserver's own APF configuration, as the exporter's view reads it.
	if _, ok, _ := flowSchemas.GetStore().GetByKey("kube-system-service-accounts"); !ok {
		t.Error("FlowSchema informer lacks kube-system-service-accounts")
	}
	if _, ok, _ := levels.GetStore().GetByKey("workload-high"); !ok {
		t.Error("PriorityLevelConfiguration informer lacks workload-high")
	}

	// A little time for any late 403 (a watch re-established after the
	// initial stream) to show up.
	time.Sleep(time.Second)
	mu.Lock()
	defer mu.Unlock()
	for _, e := range watchErrs {
		t.Errorf("informer error as herd-exporter: %s", e)
	}
}
