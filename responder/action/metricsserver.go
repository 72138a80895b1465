package action

import (
	"context"
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/herd-k8s/herd/exporter/metricsserver"
	"github.com/herd-k8s/herd/responder/config"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/webhook"
)

// ReasonFlagMetricsServer prefixes flag-metrics-server's Event reasons.
const ReasonFlagMetricsServer = "HerdFlagMetricsServer"

// FlagMetricsServer marks a metrics-server Deployment that authenticates
// to kubelets with its token (HerdMetricsServerTokenAuth,
// HerdKubeletTokenReviewStorm): the annotation herd.dev/kubelet-auth=token
// and an Event with the fix. It never changes the Deployment's spec: the
// fix needs a client certificate only the cluster's owner can issue.
type FlagMetricsServer struct {
	Env *Env
}

// Name implements Action.
func (*FlagMetricsServer) Name() config.Action { return config.ActionFlagMetricsServer }

type deploymentID struct{ namespace, name string }

// targets are the Deployments the alert is about: the one it names
// (HerdMetricsServerTokenAuth) or, for a TokenReview storm, every
// metrics-server Prometheus sees in token mode.
func (f *FlagMetricsServer) targets(ctx context.Context, d *Decision, a webhook.Alert) ([]deploymentID, *guard.Refusal, error) {
	cluster, r := clusterLabel(a)
	if r != nil {
		return nil, r, nil
	}
	ns, name := a.Labels["namespace"], a.Labels["deployment"]
	if ns != "" || name != "" {
		if ns, r = label(a, "namespace", validDNSLabel); r != nil {
			return nil, r, nil
		}
		if name, r = label(a, "deployment", validNodeName); r != nil {
			return nil, r, nil
		}
	}
	q := evidence.MetricsServerTokenMode(ns, name, cluster)
	samples, err := f.Env.Evidence.Query(ctx, q)
	d.Evidence = append(d.Evidence, evidence.Check{Query: q, Series: len(samples), Confirmed: len(samples) > 0})
	if err != nil {
		return nil, nil, err
	}
	var out []deploymentID
	for _, s := range samples {
		id := deploymentID{s.Labels["namespace"], s.Labels["deployment"]}
		if len(validDNSLabel(id.namespace)) > 0 || len(validNodeName(id.name)) > 0 {
			continue
		}
		out = append(out, id)
	}
	if len(out) == 0 {
		return nil, guard.Refuse(guard.Verification, "Prometheus shows no metrics-server Deployment in token mode: %s returned nothing", q), nil
	}
	return out, nil, nil
}

// Fire implements Action.
func (f *FlagMetricsServer) Fire(ctx context.Context, a webhook.Alert) Decision {
	e := f.Env
	d := e.decision(config.ActionFlagMetricsServer, a)
	ids, r, err := f.targets(ctx, &d, a)
	switch {
	case err != nil:
		d = d.fail("read evidence", err)
	case r != nil:
		d = d.refuse(r)
	}
	if d.Result != "" {
		e.recordEvent(nil, ReasonFlagMetricsServer, "Flag", d)
		return d
	}
	// One decision per alert: the first Deployment that needs flagging
	// (a cluster runs one metrics-server; more are listed in the reason).
	var last Decision
	for _, id := range ids {
		dd := d
		dd.Evidence = append([]evidence.Check(nil), d.Evidence...)
		dd.Target = "deployment/" + id.namespace + "/" + id.name
		dd = f.flag(ctx, dd, id)
		e.recordEvent(deploymentRef(id), ReasonFlagMetricsServer, "Flag", dd)
		// Keep going past no-ops and refusals: another Deployment may
		// still need the flag. Stop at the first that acted or failed.
		if last.Result == "" || last.Result == Noop || (last.Result == Refused && dd.Result != Noop) || dd.Result == Applied || dd.Result == DryRun || dd.Result == Failed {
			last = dd
		}
		if dd.Result == Applied || dd.Result == DryRun || dd.Result == Failed {
			break
		}
	}
	return last
}

func (f *FlagMetricsServer) flag(ctx context.Context, d Decision, id deploymentID) Decision {
	e := f.Env
	dep, err := e.Client.AppsV1().Deployments(id.namespace).Get(ctx, id.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return d.refuse(guard.Refuse(guard.Verification, "Deployment %s/%s does not exist", id.namespace, id.name))
	}
	if err != nil {
		return d.fail("get deployment", err)
	}
	if _, ok := dep.Annotations[e.Config.Guards.ExcludeAnnotation]; ok {
		return d.refuse(guard.Refuse(guard.Excluded, "Deployment %s/%s is annotated %s", id.namespace, id.name, e.Config.Guards.ExcludeAnnotation))
	}
	view := metricsserver.Inspect(dep)
	if view.Mode != metricsserver.ModeToken {
		return d.refuse(guard.Refuse(guard.Verification, "Deployment %s/%s is in %s mode now, not token", id.namespace, id.name, view.Mode))
	}
	if dep.Annotations[AnnotationKubeletAuth] == string(metricsserver.ModeToken) {
		return d.noop("Deployment %s/%s is already flagged %s=token (at %s)", id.namespace, id.name, AnnotationKubeletAuth, dep.Annotations[AnnotationFlaggedAt])
	}
	if r := e.Budget.Take(config.ActionFlagMetricsServer); r != nil {
		return d.refuse(r)
	}
	if err := e.checkLeader(); err != nil {
		e.Budget.Refund(config.ActionFlagMetricsServer)
		return d.fail("flag deployment", err)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": dep.ResourceVersion,
		"annotations": map[string]any{
			AnnotationKubeletAuth: string(metricsserver.ModeToken),
			AnnotationFlaggedAt:   e.now().UTC().Format(time.RFC3339),
		},
	}})
	if _, err := e.Client.AppsV1().Deployments(id.namespace).Patch(ctx, id.name, types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: FieldManager, DryRun: e.dryRunOpt()}); err != nil {
		e.Budget.Refund(config.ActionFlagMetricsServer)
		return d.fail("flag deployment", err)
	}
	return d.done("annotated Deployment %s/%s %s=token; fix: %s", id.namespace, id.name, AnnotationKubeletAuth, metricsserver.TokenFix)
}

// Resolve implements Action: once metrics-server no longer uses a token,
// herd's annotation goes (only herd's, only if it is still there).
func (f *FlagMetricsServer) Resolve(ctx context.Context, a webhook.Alert) Decision {
	e := f.Env
	d := e.decision(config.ActionFlagMetricsServer, a)
	ns, name := a.Labels["namespace"], a.Labels["deployment"]
	if ns == "" || name == "" {
		d = d.noop("the alert names no Deployment; herd's annotation stays until HerdMetricsServerTokenAuth resolves")
		e.recordEvent(nil, ReasonFlagMetricsServer, "Unflag", d)
		return d
	}
	var r *guard.Refusal
	if ns, r = label(a, "namespace", validDNSLabel); r == nil {
		name, r = label(a, "deployment", validNodeName)
	}
	if r != nil {
		d = d.refuse(r)
		e.recordEvent(nil, ReasonFlagMetricsServer, "Unflag", d)
		return d
	}
	id := deploymentID{ns, name}
	d.Target = "deployment/" + ns + "/" + name
	d = f.unflag(ctx, d, id)
	e.recordEvent(deploymentRef(id), ReasonFlagMetricsServer, "Unflag", d)
	return d
}

func (f *FlagMetricsServer) unflag(ctx context.Context, d Decision, id deploymentID) Decision {
	e := f.Env
	dep, err := e.Client.AppsV1().Deployments(id.namespace).Get(ctx, id.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return d.noop("Deployment %s/%s no longer exists", id.namespace, id.name)
	}
	if err != nil {
		return d.fail("get deployment", err)
	}
	if _, ok := dep.Annotations[AnnotationKubeletAuth]; !ok {
		return d.noop("Deployment %s/%s carries no %s annotation", id.namespace, id.name, AnnotationKubeletAuth)
	}
	if _, ok := dep.Annotations[e.Config.Guards.ExcludeAnnotation]; ok {
		return d.refuse(guard.Refuse(guard.Excluded, "Deployment %s/%s is annotated %s", id.namespace, id.name, e.Config.Guards.ExcludeAnnotation))
	}
	if m := metricsserver.Inspect(dep).Mode; m == metricsserver.ModeToken {
		return d.noop("Deployment %s/%s is still in token mode; the annotation stays", id.namespace, id.name)
	}
	if err := e.checkLeader(); err != nil {
		return d.fail("unflag deployment", err)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": dep.ResourceVersion,
		"annotations":     map[string]any{AnnotationKubeletAuth: nil, AnnotationFlaggedAt: nil},
	}})
	if _, err := e.Client.AppsV1().Deployments(id.namespace).Patch(ctx, id.name, types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: FieldManager, DryRun: e.dryRunOpt()}); err != nil {
		return d.fail("unflag deployment", err)
	}
	return d.done("removed %s from Deployment %s/%s: it no longer authenticates with a token", AnnotationKubeletAuth, id.namespace, id.name)
}

func deploymentRef(id deploymentID) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: id.namespace, Name: id.name}
}
