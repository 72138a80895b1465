package nodesim

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Resource is a collection a node-side agent reads: group, version and
// resource, an optional namespace, and the field selector the agent always
// applies to it (a kubelet's spec.nodeName=<node> on pods).
type Resource struct {
	Group    string
	Version  string
	Resource string
	// Namespace limits the collection to one namespace; empty is cluster-wide.
	Namespace string
	// FieldSelector is sent with every list and watch of this resource.
	FieldSelector string
}

// The collections the simulated agents read.
var (
	Pods            = Resource{Version: "v1", Resource: "pods"}
	Nodes           = Resource{Version: "v1", Resource: "nodes"}
	Namespaces      = Resource{Version: "v1", Resource: "namespaces"}
	Services        = Resource{Version: "v1", Resource: "services"}
	Endpoints       = Resource{Version: "v1", Resource: "endpoints"}
	EndpointSlices  = Resource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
	NetworkPolicies = Resource{Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"}
	RuntimeClasses  = Resource{Group: "node.k8s.io", Version: "v1", Resource: "runtimeclasses"}
	CSIDrivers      = Resource{Group: "storage.k8s.io", Version: "v1", Resource: "csidrivers"}
)

// OnNode narrows pods to those bound to node, as a kubelet lists them.
func (r Resource) OnNode(node string) Resource {
	r.FieldSelector = "spec.nodeName=" + node
	return r
}

// Named narrows a collection to one object by name, as a kubelet watches
// its own Node.
func (r Resource) Named(name string) Resource {
	r.FieldSelector = "metadata.name=" + name
	return r
}

// InNamespace narrows a collection to one namespace.
func (r Resource) InNamespace(ns string) Resource {
	r.Namespace = ns
	return r
}

// GVR is the resource's schema.GroupVersionResource.
func (r Resource) GVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: r.Group, Version: r.Version, Resource: r.Resource}
}

// Path is the collection's URL path, e.g. /api/v1/pods or
// /apis/node.k8s.io/v1/runtimeclasses.
func (r Resource) Path() string {
	p := "/api/" + r.Version
	if r.Group != "" {
		p = "/apis/" + r.Group + "/" + r.Version
	}
	if r.Namespace != "" {
		p += "/namespaces/" + r.Namespace
	}
	return p + "/" + r.Resource
}

// String is group/resource (or resource for the core group), the way herd
// labels resources.
func (r Resource) String() string {
	if r.Group == "" {
		return r.Resource
	}
	return r.Resource + "." + r.Group
}

// KubeletResources are what a kubelet on node keeps informed about in steady
// state: its own pods and Node, every Service (for pod environment
// variables), RuntimeClasses and CSIDrivers (the collections of incident 000).
func KubeletResources(node string) []Resource {
	return []Resource{Pods.OnNode(node), Nodes.Named(node), Services, RuntimeClasses, CSIDrivers}
}

// KubeProxyResources are what kube-proxy watches: Services and EndpointSlices.
func KubeProxyResources() []Resource {
	return []Resource{Services, EndpointSlices}
}

// CalicoNodeResources are what calico-node (Kubernetes datastore mode) watches.
func CalicoNodeResources() []Resource {
	return []Resource{Pods, Nodes, Namespaces, NetworkPolicies, Services, EndpointSlices}
}

// CiliumAgentResources are what cilium-agent watches of the built-in API.
func CiliumAgentResources() []Resource {
	return []Resource{Pods, Nodes, Namespaces, NetworkPolicies, Services, EndpointSlices}
}
