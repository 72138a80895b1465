package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/exporter/metricsserver"
	"github.com/herd-k8s/herd/test/controlplane"
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
type access struct {
	verb, group, resource, subresource, namespace, name string
	path                                                string // a non-resource URL instead
}

func (a access) String() string {
	if a.path != "" {
		return a.verb + " " + a.path
	}
	s := a.verb + " " + a.resource
	if a.subresource != "" {
		s += "/" + a.subresource
	}
	if a.group != "" {
		s += "." + a.group
	}
	if a.name != "" {
		s += " " + a.name
	}
	if a.namespace == "" {
		return s + " (cluster-wide)"
	}
	return s + " in " + a.namespace
}

func (a access) spec() authorizationv1.SubjectAccessReviewSpec {
	if a.path != "" {
		return authorizationv1.SubjectAccessReviewSpec{NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: a.path, Verb: a.verb}}
	}
	return authorizationv1.SubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
		Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Namespace: a.namespace, Name: a.name,
	}}
}

// rbacAllowed is everything the exporter's informers and probes do.
var rbacAllowed = []access{
	{verb: "get", resource: "nodes", name: "node-1"},
	{verb: "list", resource: "nodes"},
	{verb: "watch", resource: "nodes"},
	{verb: "list", group: "coordination.k8s.io", resource: "leases", namespace: "kube-node-lease"},
	{verb: "watch", group: "coordination.k8s.io", resource: "leases", namespace: "kube-node-lease"},
	{verb: "list", group: "apiregistration.k8s.io", resource: "apiservices"},
	{verb: "watch", group: "apiregistration.k8s.io", resource: "apiservices"},
	{verb: "list", group: "discovery.k8s.io", resource: "endpointslices"},
	{verb: "watch", group: "discovery.k8s.io", resource: "endpointslices"},
	{verb: "list", group: "discovery.k8s.io", resource: "endpointslices", namespace: "monitoring"},
	{verb: "list", group: "apps", resource: "deployments", namespace: "kube-system"},
	{verb: "watch", group: "apps", resource: "deployments", namespace: "kube-system"},
	{verb: "get", path: "/apis/metrics.k8s.io/v1beta1"},
	{verb: "get", path: "/apis/custom.metrics.k8s.io/v1beta2"},
}

// rbacDenied is what the exporter must not be able to do.
var rbacDenied = []access{
	{verb: "get", resource: "secrets", namespace: "kube-system", name: "any"},
	{verb: "get", resource: "secrets", namespace: "herd", name: "any"},
	{verb: "list", resource: "secrets"},
	{verb: "watch", resource: "secrets", namespace: "kube-system"},
	{verb: "get", resource: "configmaps", namespace: "kube-system", name: "kubeadm-config"},
	{verb: "list", resource: "pods"},
	{verb: "get", resource: "pods", subresource: "exec", namespace: "x", name: "y"},
	{verb: "create", resource: "pods", subresource: "exec", namespace: "x", name: "y"},
	{verb: "get", resource: "nodes", subresource: "proxy", name: "node-1"},
	{verb: "delete", resource: "nodes", name: "node-1"},
	{verb: "patch", resource: "nodes", name: "node-1"},
	{verb: "update", resource: "nodes", name: "node-1"},
	{verb: "patch", resource: "nodes", subresource: "status", name: "node-1"},
	{verb: "create", group: "flowcontrol.apiserver.k8s.io", resource: "flowschemas"},
	{verb: "create", group: "flowcontrol.apiserver.k8s.io", resource: "prioritylevelconfigurations"},
	{verb: "list", group: "coordination.k8s.io", resource: "leases", namespace: "default"},
	{verb: "list", group: "coordination.k8s.io", resource: "leases"},
	{verb: "get", group: "coordination.k8s.io", resource: "leases", namespace: "kube-system", name: "kube-controller-manager"},
	{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: "kube-node-lease", name: "node-1"},
	{verb: "patch", group: "apps", resource: "deployments", namespace: "kube-system", name: "metrics-server"},
	{verb: "update", group: "apps", resource: "deployments", namespace: "kube-system", name: "metrics-server"},
	{verb: "list", group: "apps", resource: "deployments", namespace: "default"},
	{verb: "list", group: "apps", resource: "deployments"},
	{verb: "delete", group: "apiregistration.k8s.io", resource: "apiservices", name: "v1beta1.metrics.k8s.io"},
	{verb: "create", group: "discovery.k8s.io", resource: "endpointslices", namespace: "kube-system"},
	{verb: "create", group: "authentication.k8s.io", resource: "tokenreviews"},
	{verb: "create", group: "authorization.k8s.io", resource: "subjectaccessreviews"},
	{verb: "create", resource: "serviceaccounts", subresource: "token", namespace: "kube-system", name: "metrics-server"},
	{verb: "impersonate", resource: "users", name: "admin"},
	{verb: "bind", group: "rbac.authorization.k8s.io", resource: "clusterroles", name: "cluster-admin"},
	{verb: "escalate", group: "rbac.authorization.k8s.io", resource: "clusterroles", name: "herd-exporter"},
	{verb: "create", resource: "events", namespace: "kube-system"},
	{verb: "get", path: "/metrics"},
	{verb: "post", path: "/apis/metrics.k8s.io/v1beta1"},
}

// applyManifest decodes a multi-document YAML file strictly (an unknown
// field is an error) and creates each object as admin. It returns the
// objects by kind for static checks.
func applyManifest(ctx context.Context, t *testing.T, c kubernetes.Interface, path string) map[string][]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string][]any{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, n, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%s: document %d: %v", path, n, err)
		}
		if tm.Kind == "" {
			if strings.TrimSpace(stripComments(doc)) != "" {
				t.Fatalf("%s: document %d has no kind", path, n)
			}
			continue
		}
		strict := func(into any) {
			t.Helper()
			if err := yaml.UnmarshalStrict(doc, into); err != nil {
				t.Fatalf("%s: document %d (%s): %v", path, n, tm.Kind, err)
			}
			objs[tm.Kind] = append(objs[tm.Kind], into)
		}
		switch tm.APIVersion + "/" + tm.Kind {
		case "v1/Namespace":
			o := &corev1.Namespace{}
			strict(o)
			_, err = c.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case "v1/ServiceAccount":
			o := &corev1.ServiceAccount{}
			strict(o)
			_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			o := &rbacv1.ClusterRole{}
			strict(o)
			_, err = c.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			o := &rbacv1.ClusterRoleBinding{}
			strict(o)
			_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case "rbac.authorization.k8s.io/v1/Role":
			o := &rbacv1.Role{}
			strict(o)
			_, err = c.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case "rbac.authorization.k8s.io/v1/RoleBinding":
			o := &rbacv1.RoleBinding{}
			strict(o)
			_, err = c.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("%s: document %d: unexpected %s %s", path, n, tm.APIVersion, tm.Kind)
		}
		if err != nil {
			t.Fatalf("%s: document %d (%s): create: %v", path, n, tm.Kind, err)
		}
	}
	return objs
}

func stripComments(doc []byte) string {
	var b strings.Builder
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

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
func reviewAs(ctx context.Context, t *testing.T, admin kubernetes.Interface, a access) bool {
	t.Helper()
	spec := a.spec()
	spec.User, spec.Groups = rbacSAUser, rbacSAGroups
	r, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SubjectAccessReview %s: %v", a, err)
	}
	return r.Status.Allowed
}

// selfReview asks, as the service account itself, whether it may do a.
func selfReview(ctx context.Context, t *testing.T, c kubernetes.Interface, a access) (bool, string) {
	t.Helper()
	spec := a.spec()
	r, err := c.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: spec.ResourceAttributes, NonResourceAttributes: spec.NonResourceAttributes,
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectAccessReview %s: %v", a, err)
	}
	return r.Status.Allowed, r.Status.Reason
}

// TestRBACExporterManifest applies manifests/rbac/exporter.yaml to a real
// kube-apiserver, checks the exporter's service account may do exactly what
// the exporter needs, and runs the exporter's informers as that account.
func TestRBACExporterManifest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{
		Nodes:      []string{"node-1"},
		Identities: map[string]controlplane.Identity{rbacIdentity: {User: rbacSAUser, Groups: rbacSAGroups}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	admin := cp.Client(controlplane.Admin)
	sa := cp.Client(rbacIdentity)

	// Before the manifest, nothing in the allowed list is granted to the
	// account by its own groups: whatever is allowed later, the manifest
	// granted.
	for _, a := range rbacAllowed {
		if reviewAs(ctx, t, admin, a) {
			t.Errorf("before the manifest, %s is already allowed", a)
		}
	}

	objs := applyManifest(ctx, t, admin, rbacManifest)
	checkRulesAreReadOnly(t, objs)

	// The RBAC authorizer reads bindings through informers: wait for them.
	waitFor(t, 15*time.Second, "the manifest's bindings to take effect", func() bool {
		for _, a := range rbacAllowed {
			if !reviewAs(ctx, t, admin, a) {
				return false
			}
		}
		return true
	})
	for _, a := range rbacAllowed {
		if ok, reason := selfReview(ctx, t, sa, a); !ok {
			t.Errorf("herd-exporter may not %s: %s", a, reason)
		}
	}
	for _, a := range rbacDenied {
		if ok, reason := selfReview(ctx, t, sa, a); ok {
			t.Errorf("herd-exporter may %s (%s); it must not", a, reason)
		}
		if reviewAs(ctx, t, admin, a) {
			t.Errorf("herd's bindings grant %s; they must not", a)
		}
	}
	t.Logf("checked %d allowed and %d denied requests", len(rbacAllowed), len(rbacDenied))

	// Objects for the informers to find.
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ms := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-server", Namespace: "kube-system", Labels: map[string]string{"app.kubernetes.io/name": "metrics-server"}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "metrics-server"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app.kubernetes.io/name": "metrics-server"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "metrics-server", Image: "registry.k8s.io/metrics-server/metrics-server:v0.7.2",
					Args: []string{"--secure-port=10250", "--kubelet-preferred-address-types=InternalIP"},
				}}},
			},
		},
	}
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
	msInf.Start(ictx)
	go allLeases.RunWithContext(ictx)

	syncCtx, syncCancel := context.WithTimeout(ctx, 20*time.Second)
	defer syncCancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), nodes.HasSynced, slices.HasSynced, leases.HasSynced, apiservices.HasSynced, msInf.Synced) {
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
	waitFor(t, 10*time.Second, "the kube-system/metrics-server-abcde EndpointSlice", func() bool {
		_, ok, _ := slices.GetStore().GetByKey("kube-system/metrics-server-abcde")
		return ok
	})
	if vs := msInf.Deployments(); len(vs) != 1 || vs[0].Mode != metricsserver.ModeToken {
		t.Errorf("metrics-server informer as herd-exporter = %+v, want kube-system/metrics-server in token mode", vs)
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
