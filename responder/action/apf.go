package action

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	flowcontrolv1ac "k8s.io/client-go/applyconfigurations/flowcontrol/v1"
	"k8s.io/client-go/kubernetes"
)

// Which FlowSchema serves a user's request now: isolate and quarantine
// place herd's schema before that one (its precedence bounds theirs),
// looking past herd's own schemas (apfmatch.HerdGuard). The matching is
// the apiserver's own, in internal/apfmatch
// (k8s.io/apiserver@v0.36.3/pkg/util/flowcontrol/rule.go and
// apf_controller.go), shared with the exporter.

func fsRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "flowcontrol.apiserver.k8s.io/v1", Kind: "FlowSchema", Name: name}
}

func plRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "flowcontrol.apiserver.k8s.io/v1", Kind: "PriorityLevelConfiguration", Name: name}
}

// herd's one APF write path: every FlowSchema herd writes (an action's
// slots, the measurement schemas) is one of these two requests.

// ApplyFlowSchema server-side applies fs as herd, one request: force,
// because the object is herd's own and herd takes back the fields it sets;
// the resourceVersion and UID of an existing object (set on fs from the
// cache) are preconditions, so that the apply fails with 409 if the object
// changed since the cache saw it. No dry-run pass precedes it: a spec the
// apiserver rejects fails this one request, before anything changes. With
// dryRun it is the server-side dry run. The cache shows the write until its
// watch does.
func ApplyFlowSchema(ctx context.Context, client kubernetes.Interface, cache *APFCache, fs *flowcontrolv1.FlowSchema, dryRun bool) error {
	ac, err := toApplyConfiguration[flowcontrolv1ac.FlowSchemaApplyConfiguration](fs)
	if err != nil {
		return err
	}
	got, err := client.FlowcontrolV1().FlowSchemas().Apply(ctx, ac,
		metav1.ApplyOptions{FieldManager: FieldManager, Force: true, DryRun: dryRunOpt(dryRun)})
	if err != nil {
		return fmt.Errorf("apply flowschemas %s: %w", fs.Name, err)
	}
	if !dryRun && got != nil && cache != nil {
		cache.Wrote(got)
	}
	return nil
}

// DeleteFlowSchema deletes fs, one request, with its UID and
// resourceVersion as preconditions. A schema already gone is deleted.
func DeleteFlowSchema(ctx context.Context, client kubernetes.Interface, cache *APFCache, fs *flowcontrolv1.FlowSchema, dryRun bool) error {
	uid, rv := fs.UID, fs.ResourceVersion
	err := client.FlowcontrolV1().FlowSchemas().Delete(ctx, fs.Name, metav1.DeleteOptions{
		DryRun: dryRunOpt(dryRun), Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete flowschema %s: %w", fs.Name, err)
	}
	if !dryRun && cache != nil {
		cache.Deleted(fs.Name, rv)
	}
	return nil
}
