package chart

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/stack"
)

// The all-on release: its service accounts get tokens in the control plane's
// token file, so the test can act as them.
const (
	namespace    = "herd"
	exporterUser = "system:serviceaccount:herd:herd-exporter"
	responderSA  = "herd-responder"
	responderUsr = "system:serviceaccount:herd:herd-responder"
	exporterSA   = "herd-exporter"
	fieldManager = "herd-chart-test"
)

// saGroups are a service account's groups in namespace herd, less
// system:authenticated: what the chart's bindings grant, without the defaults
// every authenticated user gets.
var saGroups = []string{"system:serviceaccounts", "system:serviceaccounts:herd"}

// warnings collects the apiserver's warning headers (PodSecurity's "would
// violate" among them).
type warnings struct{ herdtest.List[string] }

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) { w.Add(text) }

// cluster is the real apiserver with the clients the test uses as admin.
type cluster struct {
	cp     *controlplane.ControlPlane
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	disc   discovery.DiscoveryInterface
	mapper meta.RESTMapper
	warn   *warnings
}

func startCluster(ctx context.Context, t *testing.T) *cluster {
	t.Helper()
	cp := controlplane.StartForTest(ctx, t, controlplane.Options{
		Nodes: []string{"node-1"},
		Identities: map[string]controlplane.Identity{
			exporterSA:  {User: exporterUser, Groups: saGroups},
			responderSA: {User: responderUsr, Groups: saGroups},
		},
	})
	c := &cluster{cp: cp, warn: &warnings{}}
	cfg := cp.Config(controlplane.Admin)
	cfg.WarningHandler = c.warn
	c.kube = kubernetes.NewForConfigOrDie(cfg)
	c.dyn = dynamic.NewForConfigOrDie(cfg)
	c.disc = discovery.NewDiscoveryClientForConfigOrDie(cfg)
	c.refreshMapper(t)
	return c
}

// refreshMapper rediscovers the API (after CRDs are established).
func (c *cluster) refreshMapper(t *testing.T) {
	t.Helper()
	groups, err := restmapper.GetAPIGroupResources(c.disc)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	c.mapper = restmapper.NewDiscoveryRESTMapper(groups)
}

// resource maps an object to its dynamic client, namespaced or not.
func (c *cluster) resource(dyn dynamic.Interface, o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", gvk, o.GetName(), err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return dyn.Resource(m.Resource).Namespace(o.GetNamespace()), nil
	}
	return dyn.Resource(m.Resource), nil
}

// apply server-side applies o as admin with strict field validation: an
// unknown or duplicate field is an error, not a silent drop.
func (c *cluster) apply(ctx context.Context, o *unstructured.Unstructured, dryRun bool) error {
	r, err := c.resource(c.dyn, o)
	if err != nil {
		return err
	}
	body, err := json.Marshal(o.Object)
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: fieldManager, Force: new(true), FieldValidation: "Strict"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = r.Patch(ctx, o.GetName(), types.ApplyPatchType, body, opts)
	if err != nil {
		return fmt.Errorf("apply %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
	}
	return nil
}

// installCRDs creates the minimal CRDs in testdata/crds.yaml and waits until
// they are served.
func (c *cluster) installCRDs(ctx context.Context, t *testing.T) {
	t.Helper()
	crds := decodeFile(t, "testdata/crds.yaml")
	for _, crd := range crds {
		if err := c.apply(ctx, crd, false); err != nil {
			t.Fatal(err)
		}
	}
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	herdtest.Wait(t, 30*time.Second, "the CRDs to be established", func() bool {
		for _, crd := range crds {
			got, err := c.dyn.Resource(gvr).Get(ctx, crd.GetName(), metav1.GetOptions{})
			if err != nil {
				return false
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			established := false
			for _, cond := range conds {
				m := cond.(map[string]any)
				established = established || (m["type"] == "Established" && m["status"] == "True")
			}
			if !established {
				return false
			}
		}
		return true
	})
	herdtest.Wait(t, 30*time.Second, "the CRDs to be discoverable", func() bool {
		c.refreshMapper(t)
		_, err := c.mapper.RESTMapping(schema.GroupKind{Group: "monitoring.coreos.com", Kind: "ServiceMonitor"}, "v1")
		return err == nil
	})
}

// restrictedNamespace creates a namespace that enforces (and warns about) the
// restricted Pod Security Standard.
func (c *cluster) restrictedNamespace(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
		"pod-security.kubernetes.io/warn":            "restricted",
		"pod-security.kubernetes.io/warn-version":    "latest",
	}}}
	if _, err := c.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// applyRelease applies a rendered release with a server-side dry run first,
// then for real, and fails on any PodSecurity warning.
func (c *cluster) applyRelease(ctx context.Context, t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, dryRun := range []bool{true, false} {
		for _, o := range objs {
			if err := c.apply(ctx, o, dryRun); err != nil {
				t.Fatalf("dry run %v: %v", dryRun, err)
			}
		}
		for _, w := range c.warn.Take() {
			t.Errorf("apiserver warning (dry run %v): %s", dryRun, w)
		}
	}
}

// admitPods creates a Pod from each Deployment's template in the restricted
// namespace (no kubelet runs: the pods stay Pending; the point is admission),
// then checks that non-compliant variants are refused, so that the admission
// check can fail.
func (c *cluster) admitPods(ctx context.Context, t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	deployments := ofKind(objs, "Deployment")
	if len(deployments) != 2 {
		t.Fatalf("%d Deployments rendered, want 2", len(deployments))
	}
	for _, u := range deployments {
		var d appsv1.Deployment
		into(t, u, &d)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-admission", Namespace: d.Namespace, Labels: map[string]string{"herd-chart-test": "admission"}},
			Spec:       *d.Spec.Template.Spec.DeepCopy(),
		}
		if _, err := c.kube.CoreV1().Pods(d.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Errorf("Pod from Deployment %s/%s not admitted: %v", d.Namespace, d.Name, err)
		}
		for _, w := range c.warn.Take() {
			t.Errorf("Pod from Deployment %s: warning %s", d.Name, w)
		}

		variants := map[string]func(*corev1.PodSpec){
			"allowPrivilegeEscalation": func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.AllowPrivilegeEscalation = new(true) },
			"capabilities": func(s *corev1.PodSpec) {
				s.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
			},
			"seccompProfile": func(s *corev1.PodSpec) {
				s.SecurityContext.SeccompProfile = nil
				s.Containers[0].SecurityContext.SeccompProfile = nil
			},
			"runAsNonRoot": func(s *corev1.PodSpec) {
				s.SecurityContext.RunAsNonRoot, s.SecurityContext.RunAsUser = nil, nil
				s.Containers[0].SecurityContext.RunAsNonRoot, s.Containers[0].SecurityContext.RunAsUser = nil, nil
			},
		}
		refused := 0
		for what, change := range variants {
			bad := pod.DeepCopy()
			bad.Name = d.Name + "-bad"
			change(&bad.Spec)
			_, err := c.kube.CoreV1().Pods(d.Namespace).Create(ctx, bad, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `violates PodSecurity "restricted:latest"`) {
				t.Errorf("Pod from Deployment %s with %s changed: got %v, want a PodSecurity refusal", d.Name, what, err)
			} else {
				refused++
			}
		}
		t.Logf("Deployment %s/%s: its pod admitted under restricted Pod Security; %d non-compliant variants refused", d.Namespace, d.Name, refused)
	}
}

// TestChartOnAPIServer applies the chart, every optional part on, to a real
// kube-apiserver in a namespace enforcing the restricted Pod Security
// Standard; checks its pods are admitted; runs the RBAC matrix as the
// exporter's and the responder's service accounts; and checks that the
// responder's writes pinned by resourceNames work with server-side apply.
func TestChartOnAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver")
	}
	allOn := render(t, release{name: "herd", namespace: namespace, valuesFiles: []string{allOnValues}})
	// The default values, as a second release in its own namespace: they must be admitted too.
	defaultsRelease := render(t, release{name: "herd-defaults", namespace: "herd-defaults"})

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := startCluster(ctx, t)
	c.installCRDs(ctx, t)
	c.restrictedNamespace(ctx, t, namespace)
	c.restrictedNamespace(ctx, t, "herd-defaults")

	kinds := map[string]int{}
	for _, o := range allOn {
		kinds[o.GetKind()]++
	}
	for _, k := range []string{"ServiceMonitor", "PrometheusRule", "Certificate", "NetworkPolicy", "PodDisruptionBudget", "ConfigMap", "Secret", "Service", "Deployment"} {
		if kinds[k] == 0 {
			t.Errorf("all-on values render no %s", k)
		}
	}
	t.Logf("all-on release: %d objects %v; default release: %d objects", len(allOn), kinds, len(defaultsRelease))
	c.applyRelease(ctx, t, allOn)
	c.applyRelease(ctx, t, defaultsRelease)
	c.admitPods(ctx, t, allOn)
	c.admitPods(ctx, t, defaultsRelease)

	t.Run("HelmInstallUpgradeUninstall", func(t *testing.T) { helmLifecycle(ctx, t, c) })
	t.Run("RBAC", func(t *testing.T) { rbacMatrix(ctx, t, c) })
	t.Run("ApplyPinnedByName", func(t *testing.T) { applyPinnedByName(ctx, t, c) })
}

// helmLifecycle runs helm itself against the apiserver: install (its NOTES),
// upgrade (the generated tokens and certificate are kept: the templates look
// them up), uninstall (nothing of the release is left).
func helmLifecycle(ctx context.Context, t *testing.T, c *cluster) {
	const rel = "herd-helm"
	c.restrictedNamespace(ctx, t, rel)
	kubeconfig, err := c.cp.Kubeconfig(controlplane.Admin)
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := helm(t, append(args, "--kubeconfig", kubeconfig, "--namespace", rel)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// herd's priority levels have cluster-wide names: one release per
	// cluster installs them. The releases applied above hold them; helm
	// installs its own once they are gone, and removes them on uninstall.
	plcGVR := schema.GroupVersionResource{Group: fc, Version: "v1", Resource: "prioritylevelconfigurations"}
	for _, n := range []string{"herd-isolate", "herd-protect", "herd-quarantine"} {
		if err := c.dyn.Resource(plcGVR).Delete(ctx, n, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	notes := run("install", rel, chartDir)
	for _, n := range []string{"herd-isolate", "herd-protect", "herd-quarantine"} {
		if _, err := c.dyn.Resource(plcGVR).Get(ctx, n, metav1.GetOptions{}); err != nil {
			t.Errorf("after helm install, PriorityLevelConfiguration %s: %v", n, err)
		}
	}
	for _, want := range []string{
		"https://herd-helm-exporter-audit.herd-helm.svc:10381/audit",
		"kubectl -n herd-helm get secret herd-helm-audit-tls -o jsonpath='{.data.ca\\.crt}'",
		"http://herd-helm-responder.herd-helm.svc:10382/alerts",
		"dryRun is on",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("helm install output lacks %q:\n%s", want, notes)
		}
	}
	secrets := func() map[string]map[string][]byte {
		out := map[string]map[string][]byte{}
		for _, name := range []string{"herd-helm-audit-token", "herd-helm-audit-tls", "herd-helm-responder-token"} {
			s, err := c.kube.CoreV1().Secrets(rel).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("after helm: %v", err)
			}
			out[name] = s.Data
		}
		return out
	}
	before := secrets()
	run("upgrade", rel, chartDir, "--set", "log.level=debug")
	if after := secrets(); !reflect.DeepEqual(before, after) {
		t.Error("helm upgrade changed the generated tokens or audit certificate; they must be kept")
	}
	run("uninstall", rel, "--wait")
	for _, name := range []string{"herd-helm-exporter", "herd-helm-responder"} {
		if _, err := c.kube.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("after helm uninstall, ClusterRole %s: %v", name, err)
		}
	}
	for _, name := range []string{"herd-helm-exporter", "herd-helm-responder"} {
		if _, err := c.kube.AppsV1().Deployments(rel).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("after helm uninstall, Deployment %s: %v", name, err)
		}
	}
	if l, err := c.kube.CoreV1().Secrets(rel).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Errorf("after helm uninstall, Secrets in %s: %v %v", rel, l, err)
	}
	for _, n := range []string{"herd-isolate", "herd-protect", "herd-quarantine"} {
		if _, err := c.dyn.Resource(plcGVR).Get(ctx, n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("after helm uninstall, PriorityLevelConfiguration %s: %v", n, err)
		}
	}
	if _, err := c.kube.FlowcontrolV1().FlowSchemas().Get(ctx, rel+"-responder", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after helm uninstall, FlowSchema %s-responder: %v", rel, err)
	}
}

// access is one request a service account might make.
type access = controlplane.Access

// allowed asks the apiserver (SubjectAccessReview, what `kubectl auth can-i
// --as` asks) whether user with groups may do a.
func (c *cluster) allowed(ctx context.Context, t *testing.T, user string, groups []string, a access) bool {
	t.Helper()
	ok, err := c.cp.Allowed(ctx, user, groups, a)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

const fc = "flowcontrol.apiserver.k8s.io"

// responderAllowed is what the responder needs with the all-on values
// (isolate 3 slots, protect 2, quarantine 2, the Lease herd-responder-leader).
func responderAllowed() []access {
	a := []access{
		{Verb: "get", Resource: "nodes", Name: "node-1"},
		{Verb: "list", Resource: "nodes"},
		{Verb: "watch", Resource: "nodes"},
		{Verb: "patch", Resource: "nodes", Name: "node-1"},
		{Verb: "list", Group: fc, Resource: "flowschemas"},
		{Verb: "watch", Group: fc, Resource: "flowschemas"},
		{Verb: "get", Group: fc, Resource: "flowschemas", Name: "system-nodes"},
		{Verb: "list", Group: fc, Resource: "prioritylevelconfigurations"},
		{Verb: "watch", Group: fc, Resource: "prioritylevelconfigurations"},
		{Verb: "create", Group: "events.k8s.io", Resource: "events", Namespace: "default"},
		{Verb: "patch", Group: "events.k8s.io", Resource: "events", Namespace: "kube-system", Name: "x"},
		{Verb: "create", Group: "coordination.k8s.io", Resource: "leases", Namespace: "herd"},
		{Verb: "get", Group: "coordination.k8s.io", Resource: "leases", Namespace: "herd", Name: "herd-responder-leader"},
		{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: "herd", Name: "herd-responder-leader"},
		{Verb: "patch", Group: "coordination.k8s.io", Resource: "leases", Namespace: "herd", Name: "herd-responder-leader"},
		{Verb: "get", Group: "apps", Resource: "deployments", Namespace: "kube-system", Name: "metrics-server"},
		{Verb: "patch", Group: "apps", Resource: "deployments", Namespace: "kube-system", Name: "metrics-server"},
		// The owner of the measurement FlowSchemas: its own ClusterRole.
		{Verb: "get", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "herd-responder"},
	}
	var names []string
	for i := 1; i <= 3; i++ {
		names = append(names, "herd-isolate-"+strconv.Itoa(i))
	}
	names = append(names, "herd-protect-1", "herd-protect-2", "herd-quarantine-1", "herd-quarantine-2", "herd-measure-1", "herd-measure-4")
	for _, n := range names {
		for _, v := range []string{"create", "patch", "delete"} {
			a = append(a, access{Verb: v, Group: fc, Resource: "flowschemas", Name: n})
		}
	}
	// herd's installed levels: a missing one is created (server-side apply:
	// patch, then create) by the first decision that needs it.
	for _, n := range []string{"herd-isolate", "herd-protect", "herd-quarantine"} {
		for _, v := range []string{"create", "patch"} {
			a = append(a, access{Verb: v, Group: fc, Resource: "prioritylevelconfigurations", Name: n})
		}
	}
	return a
}

// responderDenied: nothing beyond its own objects, nodes' patch, Events and
// metrics-server's annotation.
var responderDenied = []access{
	// Other Deployments, and metrics-server beyond get/patch.
	{Verb: "patch", Group: "apps", Resource: "deployments", Namespace: "kube-system", Name: "coredns"},
	{Verb: "patch", Group: "apps", Resource: "deployments", Namespace: "herd", Name: "herd-exporter"},
	{Verb: "patch", Group: "apps", Resource: "deployments", Namespace: "default", Name: "metrics-server"},
	{Verb: "update", Group: "apps", Resource: "deployments", Namespace: "kube-system", Name: "metrics-server"},
	{Verb: "delete", Group: "apps", Resource: "deployments", Namespace: "kube-system", Name: "metrics-server"},
	{Verb: "patch", Group: "apps", Resource: "deployments", Subresource: "scale", Namespace: "kube-system", Name: "metrics-server"},
	{Verb: "list", Group: "apps", Resource: "deployments"},
	// FlowSchemas and priority levels herd does not own, and slots beyond maxManagedFlowSchemas.
	{Verb: "patch", Group: fc, Resource: "flowschemas", Name: "global-default"},
	{Verb: "update", Group: fc, Resource: "flowschemas", Name: "global-default"},
	{Verb: "delete", Group: fc, Resource: "flowschemas", Name: "global-default"},
	{Verb: "patch", Group: fc, Resource: "flowschemas", Name: "system-nodes"},
	{Verb: "delete", Group: fc, Resource: "flowschemas", Name: "system-nodes"},
	{Verb: "patch", Group: fc, Resource: "flowschemas", Name: "herd-other"},
	{Verb: "create", Group: fc, Resource: "flowschemas", Name: "herd-other"},
	{Verb: "create", Group: fc, Resource: "flowschemas", Name: "herd-isolate-4"},
	{Verb: "create", Group: fc, Resource: "flowschemas", Name: "herd-quarantine-3"},
	{Verb: "create", Group: fc, Resource: "flowschemas", Name: "herd-measure-5"},
	{Verb: "update", Group: fc, Resource: "flowschemas", Name: "herd-measure-1"},
	{Verb: "create", Group: fc, Resource: "flowschemas", Name: "herd-protect-3"},
	{Verb: "patch", Group: fc, Resource: "flowschemas", Name: "herd-protect-3"},
	{Verb: "create", Group: fc, Resource: "flowschemas"}, // a POST without a name
	{Verb: "deletecollection", Group: fc, Resource: "flowschemas"},
	{Verb: "patch", Group: fc, Resource: "flowschemas", Subresource: "status", Name: "herd-isolate-1"},
	{Verb: "patch", Group: fc, Resource: "prioritylevelconfigurations", Name: "workload-high"},
	{Verb: "delete", Group: fc, Resource: "prioritylevelconfigurations", Name: "global-default"},
	{Verb: "create", Group: fc, Resource: "prioritylevelconfigurations", Name: "herd-other"},
	// herd never PUTs its slots, and never changes or removes an installed level.
	{Verb: "update", Group: fc, Resource: "flowschemas", Name: "herd-isolate-1"},
	{Verb: "update", Group: fc, Resource: "prioritylevelconfigurations", Name: "herd-isolate"},
	{Verb: "delete", Group: fc, Resource: "prioritylevelconfigurations", Name: "herd-isolate"},
	{Verb: "delete", Group: fc, Resource: "prioritylevelconfigurations", Name: "herd-quarantine"},
	{Verb: "update", Group: fc, Resource: "prioritylevelconfigurations", Name: "herd-protect"},
	{Verb: "delete", Group: fc, Resource: "prioritylevelconfigurations", Name: "herd-protect"},
	// The responder's own FlowSchema is the installer's.
	{Verb: "patch", Group: fc, Resource: "flowschemas", Name: "herd-responder"},
	{Verb: "delete", Group: fc, Resource: "flowschemas", Name: "herd-responder"},
	// Secrets, Pods, Nodes beyond patch.
	{Verb: "get", Resource: "secrets", Namespace: "herd", Name: "alertmanager-herd-token"},
	{Verb: "get", Resource: "secrets", Namespace: "kube-system", Name: "any"},
	{Verb: "list", Resource: "secrets"},
	{Verb: "list", Resource: "pods"},
	{Verb: "create", Resource: "pods", Subresource: "eviction", Namespace: "default", Name: "x"},
	{Verb: "delete", Resource: "nodes", Name: "node-1"},
	{Verb: "update", Resource: "nodes", Name: "node-1"},
	{Verb: "create", Resource: "nodes"},
	{Verb: "patch", Resource: "nodes", Subresource: "status", Name: "node-1"},
	// Other Leases.
	{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-system", Name: "kube-controller-manager"},
	{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: "herd", Name: "other"},
	{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-node-lease", Name: "node-1"},
	{Verb: "delete", Group: "coordination.k8s.io", Resource: "leases", Namespace: "herd", Name: "herd-responder-leader"},
	// Privilege escalation.
	{Verb: "bind", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "cluster-admin"},
	{Verb: "escalate", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "herd-responder"},
	{Verb: "patch", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "herd-responder"},
	{Verb: "get", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "herd-exporter"},
	{Verb: "list", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"},
	{Verb: "impersonate", Resource: "users", Name: "admin"},
	{Verb: "create", Resource: "serviceaccounts", Subresource: "token", Namespace: "herd", Name: "herd-exporter"},
}

// rbacMatrix checks, for both service accounts, every request herd needs
// (granted by the chart's bindings alone: the review leaves out
// system:authenticated) and every request it must not make (refused even
// with system:authenticated, as the real token has it).
func rbacMatrix(ctx context.Context, t *testing.T, c *cluster) {
	type account struct {
		user             string
		allowed, denied  []access
		authenticatedGrp []string
	}
	accounts := []account{
		{user: exporterUser, allowed: stack.ExporterAllowed, denied: stack.ExporterDenied},
		{user: responderUsr, allowed: responderAllowed(), denied: responderDenied},
	}
	withAuth := append(slices.Clone(saGroups), "system:authenticated")
	for _, a := range accounts {
		// The RBAC authorizer reads bindings through informers: wait for them.
		herdtest.Wait(t, 20*time.Second, a.user+"'s bindings to take effect", func() bool {
			for _, req := range a.allowed {
				if !c.allowed(ctx, t, a.user, saGroups, req) {
					return false
				}
			}
			return true
		})
		for _, req := range a.allowed {
			if !c.allowed(ctx, t, a.user, saGroups, req) {
				t.Errorf("%s may not %s; herd needs it", a.user, req)
			}
		}
		for _, req := range a.denied {
			if c.allowed(ctx, t, a.user, withAuth, req) {
				t.Errorf("%s may %s; it must not", a.user, req)
			}
		}
		t.Logf("%s: %d requests allowed, %d denied, as expected", a.user, len(a.allowed), len(a.denied))
	}
	// The exporter writes nothing at all: every write verb on every resource the apiserver serves.
	groups, err := restmapper.GetAPIGroupResources(c.disc)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, g := range groups {
		for _, v := range g.Group.Versions {
			for _, r := range g.VersionedResources[v.Version] {
				for _, verb := range []string{"create", "update", "patch", "delete", "deletecollection"} {
					// Every authenticated user may ask who it is and what it may do
					// (system:basic-user): reviews about itself, not writes.
					if !slices.Contains(r.Verbs, verb) || strings.HasPrefix(r.Name, "selfsubject") {
						continue
					}
					res, sub, _ := strings.Cut(r.Name, "/")
					ns := ""
					if r.Namespaced {
						ns = "kube-system"
					}
					checked++
					if c.allowed(ctx, t, exporterUser, withAuth, access{Verb: verb, Group: g.Group.Name, Resource: res, Subresource: sub, Namespace: ns}) {
						t.Errorf("%s may %s %s in group %q", exporterUser, verb, r.Name, g.Group.Name)
					}
				}
			}
		}
	}
	t.Logf("%s: %d write requests across every served resource, all denied", exporterUser, checked)
}

// applyPinnedByName checks, as the responder's service account itself, that
// server-side apply creates (and then changes and deletes) the APF objects
// whose names RBAC pins, and that any other name is refused. It also records
// whether a plain create (POST) of a pinned name works: POST carries the name
// in the body, so RBAC's resourceNames cannot match it.
func applyPinnedByName(ctx context.Context, t *testing.T, c *cluster) {
	cfg := c.cp.Config(responderSA)
	dyn := dynamic.NewForConfigOrDie(cfg)
	plcGVR := schema.GroupVersionResource{Group: fc, Version: "v1", Resource: "prioritylevelconfigurations"}
	fsGVR := schema.GroupVersionResource{Group: fc, Version: "v1", Resource: "flowschemas"}
	labels := map[string]any{"app.kubernetes.io/managed-by": "herd"}
	plc := func(name string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": fc + "/v1", "kind": "PriorityLevelConfiguration",
			"metadata": map[string]any{"name": name, "labels": labels},
			"spec": map[string]any{"type": "Limited", "limited": map[string]any{
				"nominalConcurrencyShares": int64(2),
				"limitResponse": map[string]any{"type": "Queue", "queuing": map[string]any{
					"queues": int64(16), "handSize": int64(4), "queueLengthLimit": int64(50)}},
			}},
		}}
	}
	fs := func(name string, precedence int64) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": fc + "/v1", "kind": "FlowSchema",
			"metadata": map[string]any{"name": name, "labels": labels},
			"spec": map[string]any{
				"priorityLevelConfiguration": map[string]any{"name": "herd-isolate"},
				"matchingPrecedence":         precedence,
				"distinguisherMethod":        map[string]any{"type": "ByUser"},
				"rules": []any{map[string]any{
					"subjects": []any{map[string]any{"kind": "ServiceAccount",
						"serviceAccount": map[string]any{"namespace": "kube-system", "name": "cilium"}}},
					"resourceRules": []any{map[string]any{"verbs": []any{"list"}, "apiGroups": []any{""},
						"resources": []any{"pods"}, "clusterScope": true, "namespaces": []any{"*"}}},
				}},
			},
		}}
	}
	apply := func(gvr schema.GroupVersionResource, o *unstructured.Unstructured) error {
		_, err := dyn.Resource(gvr).Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: "herd", Force: true})
		return err
	}

	// Server-side apply creating objects named from herd's slots and
	// levels: allowed (the chart installed the levels; remove one first, as
	// the responder finds it when it creates it).
	if err := c.dyn.Resource(plcGVR).Delete(ctx, "herd-isolate", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if err := apply(plcGVR, plc("herd-isolate")); err != nil {
		t.Errorf("server-side apply creating PriorityLevelConfiguration herd-isolate as %s: %v", responderUsr, err)
	} else {
		t.Logf("FINDING: server-side apply creating PriorityLevelConfiguration herd-isolate as %s succeeds (create pinned by resourceNames)", responderUsr)
	}
	if err := apply(fsGVR, fs("herd-isolate-1", 450)); err != nil {
		t.Errorf("server-side apply creating FlowSchema herd-isolate-1 as %s: %v", responderUsr, err)
	} else {
		t.Logf("FINDING: server-side apply creating FlowSchema herd-isolate-1 as %s succeeds (create pinned by resourceNames)", responderUsr)
	}
	// Applying again changes it (patch pinned by name).
	if err := apply(fsGVR, fs("herd-isolate-1", 460)); err != nil {
		t.Errorf("server-side apply changing FlowSchema herd-isolate-1: %v", err)
	}

	// Any other name: refused, whether new or someone else's.
	for _, name := range []string{"something-else", "herd-other", "herd-isolate-4", "global-default", "system-nodes"} {
		err := apply(fsGVR, fs(name, 470))
		if !apierrors.IsForbidden(err) {
			t.Errorf("server-side apply of FlowSchema %s as %s: got %v, want 403 Forbidden", name, responderUsr, err)
		} else {
			t.Logf("server-side apply of FlowSchema %s as %s: forbidden, as wanted", name, responderUsr)
		}
	}
	if err := apply(plcGVR, plc("workload-high")); !apierrors.IsForbidden(err) {
		t.Errorf("server-side apply of PriorityLevelConfiguration workload-high: got %v, want 403 Forbidden", err)
	}
	for _, name := range []string{"global-default", "system-nodes"} {
		if err := dyn.Resource(fsGVR).Delete(ctx, name, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("delete FlowSchema %s as %s: got %v, want 403 Forbidden", name, responderUsr, err)
		}
	}

	// A plain create (POST) of a pinned name.
	_, err := dyn.Resource(fsGVR).Create(ctx, fs("herd-isolate-2", 450), metav1.CreateOptions{FieldManager: "herd"})
	switch {
	case err == nil:
		t.Logf("FINDING: POST create of FlowSchema herd-isolate-2 as %s is allowed too", responderUsr)
		if err := dyn.Resource(fsGVR).Delete(ctx, "herd-isolate-2", metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete FlowSchema herd-isolate-2: %v", err)
		}
	case apierrors.IsForbidden(err):
		t.Logf("FINDING: POST create of FlowSchema herd-isolate-2 as %s is forbidden (%v): the responder must create its objects with server-side apply, which the apiserver authorizes as create of the named object", responderUsr, err)
	default:
		t.Errorf("POST create of FlowSchema herd-isolate-2: %v", err)
	}

	// Deleting its own FlowSchemas: allowed. Its priority levels are
	// installed: never deleted by the responder.
	if err := dyn.Resource(fsGVR).Delete(ctx, "herd-isolate-1", metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete FlowSchema herd-isolate-1 as %s: %v", responderUsr, err)
	}
	if err := dyn.Resource(plcGVR).Delete(ctx, "herd-isolate", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("delete PriorityLevelConfiguration herd-isolate as %s: got %v, want 403 Forbidden", responderUsr, err)
	}
}

var _ rest.WarningHandler = (*warnings)(nil)
