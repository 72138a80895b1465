package action

import (
	"context"
	"encoding/json"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/herd-k8s/herd/internal/kubeletauth"
	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
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
func (*FlagMetricsServer) Name() policy.Action { return policy.ActionFlagMetricsServer }

type deploymentID struct{ namespace, name string }

// candidate is a Deployment the alert is about, as read.
type candidate struct {
	id  deploymentID
	dep *appsv1.Deployment // nil: it does not exist
}

// Fire implements Action. The alert names one Deployment
// (HerdMetricsServerTokenAuth) or, for a TokenReview storm, every
// metrics-server Prometheus sees in token mode: one decision per alert,
// about the first Deployment that needs the flag; the ones passed over get
// Events of their own.
func (f *FlagMetricsServer) Fire(a alert.Alert) Op {
	e := f.Env
	var (
		ns, name, cluster string
		ids               []deploymentID
		cands             []candidate
	)
	return Op{
		Action: policy.ActionFlagMetricsServer, Alert: a, Event: EventNames{Reason: ReasonFlagMetricsServer, Verb: "Flag"},
		Labels: func(*Case) Outcome {
			var r *guard.Refusal
			if cluster, r = clusterLabel(a); r != nil {
				return Refuse(r)
			}
			ns, name = a.Labels["namespace"], a.Labels["deployment"]
			if ns != "" || name != "" {
				if ns, r = label(a, "namespace", validDNSLabel); r != nil {
					return Refuse(r)
				}
				name, r = label(a, "deployment", validNodeName)
			}
			return Refuse(r)
		},
		Evidence: func(ctx context.Context, c *Case) Outcome {
			q := evidence.MetricsServerTokenMode(ns, name, cluster)
			samples, err := c.QueryEvidence(ctx, q)
			c.AddEvidence(evidence.Check{Query: q, Series: len(samples), Confirmed: len(samples) > 0})
			if err != nil {
				return Fail("read evidence", err)
			}
			for _, s := range samples {
				id := deploymentID{s.Labels["namespace"], s.Labels["deployment"]}
				if len(validDNSLabel(id.namespace)) == 0 && len(validNodeName(id.name)) == 0 {
					ids = append(ids, id)
				}
			}
			if len(ids) == 0 {
				return Refuse(guard.Refuse(guard.Verification, "Prometheus shows no metrics-server Deployment in token mode: %s returned nothing", q))
			}
			return Continue
		},
		// Every candidate is read first (a cluster runs one metrics-server;
		// a TokenReview storm may name a few), so an API error fails the
		// decision before any guard runs.
		Read: func(ctx context.Context, _ *Case) Outcome {
			for _, id := range ids {
				dep, err := e.Client.AppsV1().Deployments(id.namespace).Get(ctx, id.name, metav1.GetOptions{})
				switch {
				case apierrors.IsNotFound(err):
					dep = nil
				case err != nil:
					return Fail("get deployment", err)
				}
				cands = append(cands, candidate{id: id, dep: dep})
			}
			return Continue
		},
		Guards: func(_ context.Context, c *Case) (*Write, Outcome) {
			// The decision is about the first candidate that needs the
			// flag. With none, it ends as the most telling of their
			// outcomes: the last refusal (what a person must fix), else the
			// last no-op. The others get Events of their own.
			var (
				w      *Write
				outs   []Outcome
				decide = -1
			)
			for i, cd := range cands {
				var o Outcome
				if w, o = f.guards(cd); w != nil {
					decide = i
					break
				}
				outs = append(outs, o)
				if decide < 0 || outs[decide].result == Noop || o.result != Noop {
					decide = i
				}
			}
			for i, o := range outs {
				if i != decide {
					id := cands[i].id
					c.Skip("deployment/"+id.namespace+"/"+id.name, deploymentRef(id), o)
				}
			}
			id := cands[decide].id
			c.About("deployment/"+id.namespace+"/"+id.name, deploymentRef(id))
			if w != nil {
				return w, Continue
			}
			return nil, outs[decide]
		},
	}
}

// guards decide about one Deployment: the write that flags it, or why not.
func (f *FlagMetricsServer) guards(cd candidate) (*Write, Outcome) {
	e := f.Env
	id, dep := cd.id, cd.dep
	if dep == nil {
		return nil, Refuse(guard.Refuse(guard.Verification, "Deployment %s/%s does not exist", id.namespace, id.name))
	}
	if _, ok := dep.Annotations[e.Config.Guards.ExcludeAnnotation]; ok {
		return nil, Refuse(guard.Refuse(guard.Excluded, "Deployment %s/%s is annotated %s", id.namespace, id.name, e.Config.Guards.ExcludeAnnotation))
	}
	if view := kubeletauth.Inspect(dep); view.Mode != kubeletauth.ModeToken {
		return nil, Refuse(guard.Refuse(guard.Verification, "Deployment %s/%s is in %s mode now, not token", id.namespace, id.name, view.Mode))
	}
	if dep.Annotations[AnnotationKubeletAuth] == string(kubeletauth.ModeToken) {
		return nil, Nothing("Deployment %s/%s is already flagged %s=token (at %s)", id.namespace, id.name, AnnotationKubeletAuth, dep.Annotations[AnnotationFlaggedAt])
	}
	patch := map[string]any{"metadata": map[string]any{
		"resourceVersion": dep.ResourceVersion,
		"annotations": map[string]any{
			AnnotationKubeletAuth: string(kubeletauth.ModeToken),
			AnnotationFlaggedAt:   e.now().UTC().Format(time.RFC3339),
		},
	}}
	return &Write{
		What: "flag deployment", Budget: true, Object: patch,
		Done:  "annotated Deployment " + id.namespace + "/" + id.name + " " + AnnotationKubeletAuth + "=token; fix: " + kubeletauth.TokenFix,
		Apply: func(ctx context.Context, dryRun bool) error { return mergePatch(ctx, e, id, patch, dryRun) },
	}, Continue
}

// mergePatch merge-patches a Deployment's metadata as herd; the patch
// carries the resourceVersion read, so a change since is a 409.
func mergePatch(ctx context.Context, e *Env, id deploymentID, patch map[string]any, dryRun bool) error {
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = e.Client.AppsV1().Deployments(id.namespace).Patch(ctx, id.name, types.MergePatchType, b,
		metav1.PatchOptions{FieldManager: FieldManager, DryRun: dryRunOpt(dryRun)})
	return err
}

// Resolve implements Action: once metrics-server no longer uses a token,
// herd's annotation goes (only herd's, only if it is still there).
func (f *FlagMetricsServer) Resolve(a alert.Alert) Op {
	e := f.Env
	var (
		id  deploymentID
		dep *appsv1.Deployment
	)
	return Op{
		Action: policy.ActionFlagMetricsServer, Alert: a, Event: EventNames{Reason: ReasonFlagMetricsServer, Verb: "Unflag"},
		Labels: func(c *Case) Outcome {
			if a.Labels["namespace"] == "" || a.Labels["deployment"] == "" {
				return Nothing("the alert names no Deployment; herd's annotation stays until HerdMetricsServerTokenAuth resolves")
			}
			var r *guard.Refusal
			if id.namespace, r = label(a, "namespace", validDNSLabel); r == nil {
				id.name, r = label(a, "deployment", validNodeName)
			}
			if r != nil {
				return Refuse(r)
			}
			c.About("deployment/"+id.namespace+"/"+id.name, deploymentRef(id))
			return Continue
		},
		Read: func(ctx context.Context, _ *Case) Outcome {
			var err error
			dep, err = e.Client.AppsV1().Deployments(id.namespace).Get(ctx, id.name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return Nothing("Deployment %s/%s no longer exists", id.namespace, id.name)
			}
			if err != nil {
				return Fail("get deployment", err)
			}
			return Continue
		},
		Guards: func(context.Context, *Case) (*Write, Outcome) {
			if _, ok := dep.Annotations[AnnotationKubeletAuth]; !ok {
				return nil, Nothing("Deployment %s/%s carries no %s annotation", id.namespace, id.name, AnnotationKubeletAuth)
			}
			if _, ok := dep.Annotations[e.Config.Guards.ExcludeAnnotation]; ok {
				return nil, Refuse(guard.Refuse(guard.Excluded, "Deployment %s/%s is annotated %s", id.namespace, id.name, e.Config.Guards.ExcludeAnnotation))
			}
			if kubeletauth.Inspect(dep).Mode == kubeletauth.ModeToken {
				return nil, Nothing("Deployment %s/%s is still in token mode; the annotation stays", id.namespace, id.name)
			}
			patch := map[string]any{"metadata": map[string]any{
				"resourceVersion": dep.ResourceVersion,
				"annotations":     map[string]any{AnnotationKubeletAuth: nil, AnnotationFlaggedAt: nil},
			}}
			return &Write{
				What: "unflag deployment", Object: patch,
				Done:  "removed " + AnnotationKubeletAuth + " from Deployment " + id.namespace + "/" + id.name + ": it no longer authenticates with a token",
				Apply: func(ctx context.Context, dryRun bool) error { return mergePatch(ctx, e, id, patch, dryRun) },
			}, Continue
		},
	}
}

func deploymentRef(id deploymentID) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: id.namespace, Name: id.name}
}
