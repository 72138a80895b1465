package action

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/herd-k8s/herd/responder/config"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/webhook"
)

// Event reasons of cordon: HerdCordon + Applied, DryRun, Refused, Noop or
// Failed; uncordon on resolve uses HerdUncordon + the same suffixes.
const (
	ReasonCordon   = "HerdCordon"
	ReasonUncordon = "HerdUncordon"
)

// CordonedByValue is what herd writes in herd.dev/cordoned-by.
const CordonedByValue = "herd-responder"

// controlPlaneLabels mark nodes herd never cordons.
var controlPlaneLabels = []string{"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"}

// Cordon marks a stale kubelet's node unschedulable (HerdStaleKubelet), and
// on resolve uncordons nodes herd cordoned that nobody touched since.
type Cordon struct {
	Env *Env

	// mu serialises cordons: the blast-radius guard counts unschedulable
	// nodes, and two concurrent cordons must not both see room for one.
	mu sync.Mutex
	// pending are nodes herd cordoned (or, in dry-run mode, would have)
	// that the node cache may not show yet; dry-run entries stand in for
	// the cordon that never happened, until resolve or an hour passes.
	pending map[string]time.Time
}

// Name implements Action.
func (*Cordon) Name() config.Action { return config.ActionCordon }

// pendingFor is how long a cordon herd made counts as unschedulable
// without the node cache showing it.
func (c *Cordon) pendingFor() time.Duration {
	if c.Env.Config.DryRun {
		return time.Hour
	}
	return time.Minute
}

// Fire implements Action.
func (c *Cordon) Fire(ctx context.Context, a webhook.Alert) Decision {
	e := c.Env
	d := e.decision(config.ActionCordon, a)
	name, r := label(a, "node", validNodeName)
	if r != nil {
		d = d.refuse(r)
		e.recordEvent(nil, ReasonCordon, "Cordon", d)
		return d
	}
	d.Target = "node/" + name
	d = c.fire(ctx, d, a, name)
	var regarding = nodeRef(name)
	e.recordEvent(regarding, ReasonCordon, "Cordon", d)
	return d
}

func (c *Cordon) fire(ctx context.Context, d Decision, a webhook.Alert, name string) Decision {
	e := c.Env
	cluster, r := clusterLabel(a)
	if r != nil {
		return d.refuse(r)
	}
	if r, err := e.verify(ctx, &d, evidence.StaleKubelet(name, cluster), "that the kubelet on "+name+" is stale"); err != nil {
		return d.fail("read evidence", err)
	} else if r != nil {
		return d.refuse(r)
	}

	node, err := e.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return d.refuse(guard.Refuse(guard.Verification, "node %s does not exist", name))
	}
	if err != nil {
		return d.fail("get node "+name, err)
	}
	for _, l := range controlPlaneLabels {
		if _, ok := node.Labels[l]; ok {
			return d.refuse(guard.Refuse(guard.ControlPlane, "node %s is a control-plane node (label %s)", name, l))
		}
	}
	if _, ok := node.Annotations[e.Config.Guards.ExcludeAnnotation]; ok {
		return d.refuse(guard.Refuse(guard.Excluded, "node %s is annotated %s", name, e.Config.Guards.ExcludeAnnotation))
	}
	for k, v := range e.Config.Actions.Cordon.NodeSelector {
		if node.Labels[k] != v {
			return d.refuse(guard.Refuse(guard.Excluded, "node %s does not match actions.cordon.nodeSelector (%s=%q)", name, k, v))
		}
	}
	if node.Spec.Unschedulable {
		if node.Annotations[AnnotationCordonedBy] == CordonedByValue {
			return d.noop("node %s is already cordoned by herd (at %s)", name, node.Annotations[AnnotationCordonedAt])
		}
		return d.noop("node %s is already unschedulable, cordoned by someone else; herd leaves it as it is", name)
	}
	// The blast-radius decision and the reservation of this node's place
	// under the limit happen under the lock; the API write does not, so
	// cordons of different nodes do not queue behind each other's writes.
	c.mu.Lock()
	now, allowed, count, total, d2, ok := c.reserve(d, name)
	c.mu.Unlock()
	if !ok {
		return d2
	}
	release := func() {
		c.mu.Lock()
		if c.pending[name].Equal(now) {
			delete(c.pending, name)
		}
		c.mu.Unlock()
		e.Budget.Refund(config.ActionCordon)
	}
	if err := e.checkLeader(); err != nil {
		release()
		return d.fail("cordon "+name, err)
	}
	reason := "HerdStaleKubelet"
	if v := a.Labels["reason"]; v != "" && len(validDNSLabel(strings.ReplaceAll(v, "_", "-"))) == 0 {
		reason += ": " + v
	}
	// Server-side apply as herd: herd owns exactly what it sets, and
	// managedFields track it (an apiserver tracks no field of an object
	// that was only ever created and updated), so that a person who later
	// changes herd's cordon shows up as the new owner. The resourceVersion
	// is a precondition: if the node changed since the GET (someone
	// cordoned it, another leader acted), the apply fails with 409.
	body, _ := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{
			"name": name, "resourceVersion": node.ResourceVersion,
			"annotations": map[string]any{
				AnnotationCordonedBy: CordonedByValue,
				AnnotationReason:     reason,
				AnnotationCordonedAt: now.UTC().Format(time.RFC3339),
			},
		},
		"spec": map[string]any{"unschedulable": true},
	})
	_, err = e.Client.CoreV1().Nodes().Patch(ctx, name, types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: FieldManager, Force: ptr.To(true), DryRun: e.dryRunOpt()})
	if err != nil {
		release()
		return d.fail("cordon "+name, err)
	}
	return d.done("cordoned node %s (%d of %d nodes now unschedulable, limit %d)", name, count, total, allowed)
}

// reserve runs the guards that count (cooldown, blast radius, budget) and,
// when they pass, holds name's place among the unschedulable nodes until
// the node cache shows the cordon. Callers hold c.mu. ok is false when d2
// is the decision to return.
func (c *Cordon) reserve(d Decision, name string) (now time.Time, allowed, count, total int, d2 Decision, ok bool) {
	e := c.Env
	now = e.now()
	if t, seen := c.pending[name]; seen && now.Sub(t) < c.pendingFor() {
		if e.Config.DryRun {
			return now, 0, 0, 0, d.noop("dry run: herd would already have cordoned node %s at %s", name, t.UTC().Format(time.RFC3339)), false
		}
		return now, 0, 0, 0, d.noop("herd cordoned node %s at %s", name, t.UTC().Format(time.RFC3339)), false
	}
	if r := e.Budget.Cooling(config.ActionCordon); r != nil {
		return now, 0, 0, 0, d.refuse(r), false
	}
	total, unschedulable, err := e.Nodes.Count()
	if err != nil {
		return now, 0, 0, 0, d.fail("count nodes", webhook.Transient(err)), false
	}
	for n, t := range c.pending {
		if now.Sub(t) < c.pendingFor() {
			unschedulable[n] = true
		} else {
			delete(c.pending, n)
		}
	}
	frac := e.Config.Guards.MaxUnschedulableFraction
	allowed = int(math.Floor(frac * float64(total)))
	if len(unschedulable)+1 > allowed {
		e.Budget.Trip(config.ActionCordon)
		return now, 0, 0, 0, d.refuse(guard.Refuse(guard.MaxUnschedulableFraction,
			"%d of %d nodes are unschedulable (%s); cordoning %s would make %d, over guards.maxUnschedulableFraction %g (at most %d); cordon pauses for guards.stormCooldown",
			len(unschedulable), total, listSome(unschedulable, 5), name, len(unschedulable)+1, frac, allowed)), false
	}
	if r := e.Budget.Take(config.ActionCordon); r != nil {
		return now, 0, 0, 0, d.refuse(r), false
	}
	if c.pending == nil {
		c.pending = map[string]time.Time{}
	}
	c.pending[name] = now
	return now, allowed, len(unschedulable) + 1, total, d, true
}

// Resolve implements Action: uncordon when herd cordoned the node and
// nobody changed herd's cordon since.
func (c *Cordon) Resolve(ctx context.Context, a webhook.Alert) Decision {
	e := c.Env
	d := e.decision(config.ActionCordon, a)
	name, r := label(a, "node", validNodeName)
	if r != nil {
		d = d.refuse(r)
		e.recordEvent(nil, ReasonUncordon, "Uncordon", d)
		return d
	}
	d.Target = "node/" + name
	d = c.resolve(ctx, d, name)
	e.recordEvent(nodeRef(name), ReasonUncordon, "Uncordon", d)
	return d
}

func (c *Cordon) resolve(ctx context.Context, d Decision, name string) Decision {
	e := c.Env
	c.mu.Lock()
	_, wouldHave := c.pending[name]
	delete(c.pending, name)
	c.mu.Unlock()
	if wouldHave && e.Config.DryRun {
		return d.done("uncordoned node %s, which herd would have cordoned", name)
	}
	if !e.Config.Actions.Cordon.UncordonOnResolve {
		return d.noop("actions.cordon.uncordonOnResolve is false: node %s stays as it is", name)
	}
	node, err := e.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return d.noop("node %s no longer exists", name)
	}
	if err != nil {
		return d.fail("get node "+name, err)
	}
	if node.Annotations[AnnotationCordonedBy] != CordonedByValue {
		return d.noop("herd did not cordon node %s; it stays as it is", name)
	}
	if _, ok := node.Annotations[e.Config.Guards.ExcludeAnnotation]; ok {
		return d.refuse(guard.Refuse(guard.Excluded, "node %s is annotated %s since herd cordoned it; a person decides", name, e.Config.Guards.ExcludeAnnotation))
	}
	if !node.Spec.Unschedulable {
		return d.refuse(guard.Refuse(guard.Ownership, "node %s is schedulable again: someone uncordoned it after herd; herd leaves it and its annotations alone", name))
	}
	if who := touchedBy(node); who != "" {
		return d.refuse(guard.Refuse(guard.Ownership, "node %s was changed by %s after herd cordoned it; it stays cordoned for a person to decide", name, who))
	}
	if err := e.checkLeader(); err != nil {
		return d.fail("uncordon "+name, err)
	}
	// Applying nothing as herd releases every field herd owns: the cordon
	// and herd's annotations go, and nothing else changes.
	body, _ := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{"name": name, "resourceVersion": node.ResourceVersion},
	})
	if _, err := e.Client.CoreV1().Nodes().Patch(ctx, name, types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: FieldManager, Force: ptr.To(true), DryRun: e.dryRunOpt()}); err != nil {
		return d.fail("uncordon "+name, err)
	}
	return d.done("uncordoned node %s, which herd had cordoned at %s", name, node.Annotations[AnnotationCordonedAt])
}

// touchedBy names a field manager other than herd that owns what herd's
// cordon set (spec.unschedulable, or one of herd's annotations), "" when
// there is none. Ownership moves to whoever last wrote a field, so a person
// who re-cordons, edits herd's reason or re-applies the node shows up here;
// controllers that add taints or kubelets that update status do not.
func touchedBy(n *corev1.Node) string {
	for _, mf := range n.ManagedFields {
		if mf.Manager == FieldManager || mf.Subresource != "" || mf.FieldsV1 == nil {
			continue
		}
		var f map[string]any
		if json.Unmarshal(mf.FieldsV1.Raw, &f) != nil {
			continue
		}
		if spec, ok := f["f:spec"].(map[string]any); ok {
			if _, ok := spec["f:unschedulable"]; ok {
				return mf.Manager
			}
		}
		if meta, ok := f["f:metadata"].(map[string]any); ok {
			if ann, ok := meta["f:annotations"].(map[string]any); ok {
				for _, k := range []string{AnnotationCordonedBy, AnnotationReason, AnnotationCordonedAt} {
					if _, ok := ann["f:"+k]; ok {
						return mf.Manager
					}
				}
			}
		}
	}
	return ""
}

func listSome(m map[string]bool, n int) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none"
	}
	if len(names) > n {
		return strings.Join(names[:n], ", ") + fmt.Sprintf(" and %d more", len(names)-n)
	}
	return strings.Join(names, ", ")
}
