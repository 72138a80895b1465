// Package metricsserver watches the metrics-server Deployment and reports how
// metrics-server authenticates to kubelets (SPEC §3.1, §3.4).
//
// In token mode metrics-server sends its service-account token to every
// kubelet on every scrape; each kubelet checks it with a TokenReview against
// the apiserver (cached two minutes). At a few thousand nodes that is a
// steady TokenReview load which turns into a storm whenever the caches expire
// together — background incident 004, where those TokenReviews filled
// max-mutating-requests-inflight and took the control plane down. With a
// client certificate (--kubelet-client-certificate and --kubelet-client-key)
// kubelets verify metrics-server locally and create no TokenReview.
//
// # Which Deployments
//
// By default herd watches the Deployments of one namespace (kube-system) and
// treats as metrics-server every one labelled k8s-app=metrics-server (the
// upstream components.yaml, kubeadm-style add-ons) or
// app.kubernetes.io/name=metrics-server (the upstream Helm chart and most
// vendor add-ons). A Kubernetes label selector cannot OR two keys, so this
// match is made client-side over the namespace's Deployments; the informer
// keeps only a stub (name, labels) of every other Deployment, so the cost is
// a few hundred bytes per Deployment in that namespace. Options.Name (a
// metadata.name field selector, which also lets RBAC use resourceNames) and
// Options.LabelSelector (a server-side selector) narrow the watch instead.
//
// The informer is namespace-scoped so that herd needs only a Role in
// metrics-server's namespace, not cluster-wide read access to Deployments
// (manifests/rbac/exporter.yaml). It starts from the watch cache: client-go
// 1.36 reflectors open a WatchList stream (watch with sendInitialEvents=true)
// instead of a LIST, and afterwards only re-watch; should the stream fail,
// client-go falls back to one LIST at the informer's last resourceVersion
// (resourceVersion=0 at start), which the watch cache also serves.
package metricsserver

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// DefaultNamespace is where metrics-server runs unless Options say otherwise.
const DefaultNamespace = "kube-system"

// DefaultLabels are the labels that mark a Deployment as metrics-server when
// neither Options.Name nor Options.LabelSelector is set: any one of them
// matches.
var DefaultLabels = map[string]string{
	"k8s-app":                "metrics-server",
	"app.kubernetes.io/name": "metrics-server",
}

// Options say which Deployments are metrics-server.
type Options struct {
	// Namespace holds metrics-server; default DefaultNamespace. herd watches
	// one namespace only (see the package comment).
	Namespace string
	// Name, if set, watches only the Deployment of this name.
	Name string
	// LabelSelector, if set, is a server-side label selector; every
	// Deployment it returns (and that has Name, if set) is metrics-server.
	LabelSelector string
	// Logger receives watch errors; default: discarded.
	Logger *slog.Logger
	// OnWatchError, if set, is also called with every error the informer's
	// reflector reports, e.g. a 403 when RBAC lacks list/watch on
	// Deployments in Namespace.
	OnWatchError func(error)
}

// Informer watches metrics-server Deployments; exporter/collector reads
// Deployments for herd_metrics_server_kubelet_auth.
type Informer struct {
	opts     Options
	selector labels.Selector // server-side; nil means the default match
	informer cache.SharedIndexInformer
	logger   *slog.Logger
	start    sync.Once
}

// New builds the informer; Start runs it.
func New(client kubernetes.Interface, opts Options) (*Informer, error) {
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if errs := validation.IsDNS1123Label(opts.Namespace); len(errs) > 0 {
		return nil, fmt.Errorf("metrics-server namespace %q: %s", opts.Namespace, errs[0])
	}
	if opts.Name != "" {
		if errs := validation.IsDNS1123Subdomain(opts.Name); len(errs) > 0 {
			return nil, fmt.Errorf("metrics-server deployment name %q: %s", opts.Name, errs[0])
		}
	}
	i := &Informer{opts: opts, logger: opts.Logger}
	if i.logger == nil {
		i.logger = slog.New(slog.DiscardHandler)
	}
	if opts.LabelSelector != "" {
		sel, err := labels.Parse(opts.LabelSelector)
		if err != nil {
			return nil, fmt.Errorf("metrics-server label selector %q: %w", opts.LabelSelector, err)
		}
		i.selector = sel
	}
	i.informer = appsinformers.NewFilteredDeploymentInformer(client, opts.Namespace, 0, cache.Indexers{},
		func(lo *metav1.ListOptions) {
			if opts.LabelSelector != "" {
				lo.LabelSelector = opts.LabelSelector
			}
			if opts.Name != "" {
				lo.FieldSelector = fields.OneTermEqualSelector("metadata.name", opts.Name).String()
			}
		})
	if err := i.informer.SetTransform(i.strip); err != nil {
		return nil, err
	}
	if err := i.informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		cache.DefaultWatchErrorHandler(ctx, r, err)
		i.logger.Warn("metrics-server deployment watch failed", "namespace", opts.Namespace, "err", err)
		if opts.OnWatchError != nil {
			opts.OnWatchError(err)
		}
	}); err != nil {
		return nil, err
	}
	return i, nil
}

// Start runs the informer until ctx ends. Later calls do nothing.
func (i *Informer) Start(ctx context.Context) {
	i.start.Do(func() { go i.informer.RunWithContext(ctx) })
}

// Synced reports whether the informer has delivered its initial state.
func (i *Informer) Synced() bool { return i.informer.HasSynced() }

// WaitForSync blocks until the informer has synced or ctx ends, and says which.
func (i *Informer) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), i.informer.HasSynced)
}

// matches says whether d is metrics-server. The informer's selectors have
// already applied Name and LabelSelector.
func (i *Informer) matches(d *appsv1.Deployment) bool {
	if i.opts.Name != "" || i.selector != nil {
		return (i.opts.Name == "" || d.Name == i.opts.Name) &&
			(i.selector == nil || i.selector.Matches(labels.Set(d.Labels)))
	}
	for k, v := range DefaultLabels {
		if d.Labels[k] == v {
			return true
		}
	}
	return false
}

// strip is the informer's transform: it keeps what Inspect reads (container
// names, images, command and args) of metrics-server Deployments, and only
// name and labels of the others.
func (i *Informer) strip(obj any) (any, error) {
	d, ok := obj.(*appsv1.Deployment)
	if !ok {
		return obj, nil // a tombstone: its object was stripped when stored
	}
	s := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{
		Name:            d.Name,
		Namespace:       d.Namespace,
		UID:             d.UID,
		ResourceVersion: d.ResourceVersion,
		Generation:      d.Generation,
		Labels:          d.Labels,
	}}
	if i.matches(d) {
		cs := make([]corev1.Container, len(d.Spec.Template.Spec.Containers))
		for n, c := range d.Spec.Template.Spec.Containers {
			cs[n] = corev1.Container{Name: c.Name, Image: c.Image, Command: c.Command, Args: c.Args}
		}
		s.Spec.Template.Spec.Containers = cs
	}
	return s, nil
}

// Deployments inspects every metrics-server Deployment in the informer's
// cache, ordered by namespace and name.
func (i *Informer) Deployments() []DeploymentView {
	var vs []DeploymentView
	for _, obj := range i.informer.GetStore().List() {
		d, ok := obj.(*appsv1.Deployment)
		if !ok || !i.matches(d) {
			continue
		}
		vs = append(vs, Inspect(d))
	}
	sortViews(vs)
	return vs
}
