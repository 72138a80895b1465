package controlplane

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"k8s.io/utils/ptr"
)

// Backend is one endpoint of an aggregated API's Service.
type Backend struct {
	// Addr is the host:port the aggregator dials, e.g. an httptest server's
	// 127.0.0.1:PORT.
	Addr string
	// Pod and Node fill the endpoint's targetRef (a Pod in the Service's
	// namespace) and nodeName; empty leaves them out. Neither needs to exist.
	Pod, Node string
	// NotReady marks the endpoint not ready: the aggregator skips it.
	NotReady bool
}

// AggregatedAPI is an APIService v<Version>.<Group> served by the Service
// Namespace/Service (port 443, named https) and its Backends.
type AggregatedAPI struct {
	Group, Version     string
	Namespace, Service string
	Backends           []Backend
	// CABundle verifies the backends' serving certificates; empty sets
	// insecureSkipTLSVerify, as many charts (calico-apiserver among them) do.
	CABundle []byte
}

// Name is the APIService's name, v<Version>.<Group>.
func (a AggregatedAPI) Name() string { return a.Version + "." + a.Group }

// aggregatedManagedBy marks the EndpointSlices the harness writes (no
// kube-controller-manager runs here to write them from Pods).
const aggregatedManagedBy = "herd-test"

// Aggregator is an apiregistration.k8s.io clientset for the named identity.
func (cp *ControlPlane) Aggregator(name string) aggregator.Interface {
	return aggregator.NewForConfigOrDie(cp.Config(name))
}

// RegisterAggregatedAPI creates (or updates) the namespace, the Service, its
// EndpointSlices and the APIService, as an aggregated API server's chart
// would. The apiserver's availability controller then checks the backends and
// sets the APIService's Available condition.
func (cp *ControlPlane) RegisterAggregatedAPI(ctx context.Context, api AggregatedAPI) error {
	c := cp.Client(Admin)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: api.Namespace}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", api.Namespace, err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: api.Service, Namespace: api.Namespace},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("https")}},
		},
	}
	if _, err := c.CoreV1().Services(api.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create service %s/%s: %w", api.Namespace, api.Service, err)
	}
	if err := cp.SetAggregatedBackends(ctx, api.Namespace, api.Service, api.Backends); err != nil {
		return err
	}
	as := &apiregistrationv1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: api.Name()},
		Spec: apiregistrationv1.APIServiceSpec{
			Group:                 api.Group,
			Version:               api.Version,
			Service:               &apiregistrationv1.ServiceReference{Namespace: api.Namespace, Name: api.Service, Port: ptr.To[int32](443)},
			CABundle:              api.CABundle,
			InsecureSkipTLSVerify: len(api.CABundle) == 0,
			GroupPriorityMinimum:  1000,
			VersionPriority:       15,
		},
	}
	ac := cp.Aggregator(Admin).ApiregistrationV1().APIServices()
	cur, err := ac.Get(ctx, as.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = ac.Create(ctx, as, metav1.CreateOptions{})
	case err == nil:
		cur.Spec = as.Spec
		_, err = ac.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("register APIService %s: %w", as.Name, err)
	}
	return nil
}

// SetAggregatedBackends replaces the endpoints of Service namespace/service:
// one EndpointSlice per backend port.
//
// EndpointSlice validation rejects loopback IPs in IPv4 slices, so the harness
// writes FQDN slices whose address is the IP literal ("127.0.0.1" is a valid
// four-label domain name): the aggregator's endpoint routing joins
// addresses[0] with the port whatever the address type, and dials it.
func (cp *ControlPlane) SetAggregatedBackends(ctx context.Context, namespace, service string, backends []Backend) error {
	c := cp.Client(Admin).DiscoveryV1().EndpointSlices(namespace)
	byPort := map[int32][]discoveryv1.Endpoint{}
	for _, b := range backends {
		host, portStr, err := net.SplitHostPort(b.Addr)
		if err != nil {
			return fmt.Errorf("backend %q: %w", b.Addr, err)
		}
		port, err := strconv.ParseInt(portStr, 10, 32)
		if err != nil {
			return fmt.Errorf("backend %q: port: %w", b.Addr, err)
		}
		ep := discoveryv1.Endpoint{
			Addresses:  []string{host},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(!b.NotReady), Serving: ptr.To(!b.NotReady), Terminating: ptr.To(false)},
		}
		if b.Pod != "" {
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: namespace, Name: b.Pod}
		}
		if b.Node != "" {
			ep.NodeName = ptr.To(b.Node)
		}
		byPort[int32(port)] = append(byPort[int32(port)], ep)
	}
	ports := make([]int32, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, p)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	selector := discoveryv1.LabelServiceName + "=" + service
	existing, err := c.List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return fmt.Errorf("list endpointslices of %s/%s: %w", namespace, service, err)
	}
	keep := map[string]bool{}
	for _, port := range ports {
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Name:      fmt.Sprintf("%s-%d", service, port),
				Namespace: namespace,
				Labels: map[string]string{
					discoveryv1.LabelServiceName: service,
					discoveryv1.LabelManagedBy:   aggregatedManagedBy,
				},
			},
			AddressType: discoveryv1.AddressTypeFQDN,
			Endpoints:   byPort[port],
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
		keep[slice.Name] = true
		cur, err := c.Get(ctx, slice.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = c.Create(ctx, slice, metav1.CreateOptions{})
		case err == nil:
			cur.Labels, cur.AddressType, cur.Endpoints, cur.Ports = slice.Labels, slice.AddressType, slice.Endpoints, slice.Ports
			_, err = c.Update(ctx, cur, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("write endpointslice %s/%s: %w", namespace, slice.Name, err)
		}
	}
	for _, s := range existing.Items {
		if keep[s.Name] || s.Labels[discoveryv1.LabelManagedBy] != aggregatedManagedBy {
			continue
		}
		if err := c.Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete endpointslice %s/%s: %w", namespace, s.Name, err)
		}
	}
	return nil
}
