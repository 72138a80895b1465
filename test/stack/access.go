package stack

import "github.com/herd-k8s/herd/test/controlplane"

// What the exporter's RBAC must allow and deny, however it is installed:
// manifests/rbac/exporter.yaml (test/e2e's TestRBACExporterManifest) or the
// chart's exporter-rbac.yaml (test/chart's TestChartOnAPIServer). The two
// grant the same, so one list states it.

const fc = "flowcontrol.apiserver.k8s.io"

// ExporterAllowed is everything the exporter's informers and probes do.
var ExporterAllowed = []controlplane.Access{
	{Verb: "get", Resource: "nodes", Name: "node-1"},
	{Verb: "list", Resource: "nodes"},
	{Verb: "watch", Resource: "nodes"},
	{Verb: "list", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-node-lease"},
	{Verb: "watch", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-node-lease"},
	{Verb: "list", Group: "apiregistration.k8s.io", Resource: "apiservices"},
	{Verb: "watch", Group: "apiregistration.k8s.io", Resource: "apiservices"},
	{Verb: "list", Group: "discovery.k8s.io", Resource: "endpointslices"},
	{Verb: "watch", Group: "discovery.k8s.io", Resource: "endpointslices"},
	{Verb: "list", Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: "monitoring"},
	{Verb: "watch", Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: "monitoring"},
	{Verb: "list", Group: "apps", Resource: "deployments", Namespace: "kube-system"},
	{Verb: "watch", Group: "apps", Resource: "deployments", Namespace: "kube-system"},
	{Verb: "get", Path: "/apis/metrics.k8s.io/v1beta1"},
	{Verb: "get", Path: "/apis/custom.metrics.k8s.io/v1beta2"},
	{Verb: "list", Group: fc, Resource: "flowschemas"},
	{Verb: "watch", Group: fc, Resource: "flowschemas"},
	{Verb: "list", Group: fc, Resource: "prioritylevelconfigurations"},
	{Verb: "watch", Group: fc, Resource: "prioritylevelconfigurations"},
}

// ExporterDenied is what the exporter must not be able to do: it reads,
// never writes, and never reads Secrets.
var ExporterDenied = []controlplane.Access{
	{Verb: "get", Resource: "secrets", Namespace: "kube-system", Name: "any"},
	{Verb: "get", Resource: "secrets", Namespace: "herd", Name: "any"},
	{Verb: "get", Resource: "secrets", Namespace: "herd", Name: "herd-audit-token"},
	{Verb: "list", Resource: "secrets"},
	{Verb: "watch", Resource: "secrets", Namespace: "kube-system"},
	{Verb: "get", Resource: "configmaps", Namespace: "kube-system", Name: "kubeadm-config"},
	{Verb: "create", Resource: "configmaps", Namespace: "herd"},
	{Verb: "list", Resource: "pods"},
	{Verb: "get", Resource: "pods", Subresource: "exec", Namespace: "x", Name: "y"},
	{Verb: "create", Resource: "pods", Subresource: "exec", Namespace: "x", Name: "y"},
	{Verb: "create", Resource: "pods", Subresource: "exec", Namespace: "kube-system", Name: "x"},
	{Verb: "get", Resource: "nodes", Subresource: "proxy", Name: "node-1"},
	{Verb: "delete", Resource: "nodes", Name: "node-1"},
	{Verb: "patch", Resource: "nodes", Name: "node-1"},
	{Verb: "update", Resource: "nodes", Name: "node-1"},
	{Verb: "patch", Resource: "nodes", Subresource: "status", Name: "node-1"},
	{Verb: "create", Group: fc, Resource: "flowschemas"},
	{Verb: "create", Group: fc, Resource: "flowschemas", Name: "herd-isolate-1"},
	{Verb: "patch", Group: fc, Resource: "flowschemas", Name: "herd-isolate-1"},
	{Verb: "delete", Group: fc, Resource: "flowschemas", Name: "global-default"},
	{Verb: "create", Group: fc, Resource: "prioritylevelconfigurations"},
	{Verb: "create", Group: fc, Resource: "prioritylevelconfigurations", Name: "herd-protect"},
	{Verb: "patch", Group: fc, Resource: "prioritylevelconfigurations", Name: "workload-high"},
	{Verb: "list", Group: "coordination.k8s.io", Resource: "leases", Namespace: "default"},
	{Verb: "list", Group: "coordination.k8s.io", Resource: "leases"},
	{Verb: "get", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-system", Name: "kube-controller-manager"},
	{Verb: "create", Group: "coordination.k8s.io", Resource: "leases", Namespace: "herd"},
	{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-node-lease", Name: "node-1"},
	{Verb: "patch", Group: "apps", Resource: "deployments", Namespace: "kube-system", Name: "metrics-server"},
	{Verb: "update", Group: "apps", Resource: "deployments", Namespace: "kube-system", Name: "metrics-server"},
	{Verb: "list", Group: "apps", Resource: "deployments", Namespace: "default"},
	{Verb: "list", Group: "apps", Resource: "deployments"},
	{Verb: "delete", Group: "apiregistration.k8s.io", Resource: "apiservices", Name: "v1beta1.metrics.k8s.io"},
	{Verb: "create", Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: "kube-system"},
	{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"},
	{Verb: "create", Group: "authorization.k8s.io", Resource: "subjectaccessreviews"},
	{Verb: "create", Resource: "serviceaccounts", Subresource: "token", Namespace: "kube-system", Name: "metrics-server"},
	{Verb: "impersonate", Resource: "users", Name: "admin"},
	{Verb: "impersonate", Resource: "serviceaccounts", Namespace: "herd", Name: "herd-responder"},
	{Verb: "bind", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "cluster-admin"},
	{Verb: "escalate", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "herd-exporter"},
	{Verb: "create", Resource: "events", Namespace: "kube-system"},
	{Verb: "create", Resource: "events", Namespace: "default"},
	{Verb: "create", Group: "events.k8s.io", Resource: "events", Namespace: "default"},
	{Verb: "get", Path: "/metrics"},
	{Verb: "post", Path: "/apis/metrics.k8s.io/v1beta1"},
}
