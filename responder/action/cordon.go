package action

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
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
func (*Cordon) Name() policy.Action { return policy.ActionCordon }

// pendingFor is how long a cordon herd made counts as unschedulable
// without the node cache showing it.
func (c *Cordon) pendingFor() time.Duration {
	if c.Env.Config.DryRun {
		return time.Hour
	}
	return time.Minute
}

// Fire implements Action: cordon the stale kubelet's node.
func (c *Cordon) Fire(a alert.Alert) Op {
	e := c.Env
	var (
		name, cluster string
		node          *corev1.Node
	)
	return Op{
		Action: policy.ActionCordon, Alert: a, Event: EventNames{Reason: ReasonCordon, Verb: "Cordon"},
		Labels: func(cs *Case) Outcome {
			if o := nodeLabel(cs, a, &name); o.Ends() {
				return o
			}
			var r *guard.Refusal
			cluster, r = clusterLabel(a)
			return Refuse(r)
		},
		Evidence: func(ctx context.Context, cs *Case) Outcome {
			return cs.Verify(ctx, evidence.StaleKubelet(name, cluster), 0, "that the kubelet on "+name+" is stale")
		},
		Read: func(ctx context.Context, _ *Case) Outcome {
			var err error
			node, err = e.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return Refuse(guard.Refuse(guard.Verification, "node %s does not exist", name))
			}
			if err != nil {
				return Fail("get node "+name, err)
			}
			return Continue
		},
		Guards: func(_ context.Context, cs *Case) (*Write, Outcome) { return c.guards(cs, a, name, node) },
	}
}

// nodeLabel reads the alert's node label into *name and makes the Node the
// decision's target.
func nodeLabel(cs *Case, a alert.Alert, name *string) Outcome {
	var r *guard.Refusal
	if *name, r = label(a, "node", validNodeName); r != nil {
		return Refuse(r)
	}
	cs.About("node/"+*name, nodeRef(*name))
	return Continue
}

func (c *Cordon) guards(cs *Case, a alert.Alert, name string, node *corev1.Node) (*Write, Outcome) {
	e := c.Env
	for _, l := range controlPlaneLabels {
		if _, ok := node.Labels[l]; ok {
			return nil, Refuse(guard.Refuse(guard.ControlPlane, "node %s is a control-plane node (label %s)", name, l))
		}
	}
	if _, ok := node.Annotations[e.Config.Guards.ExcludeAnnotation]; ok {
		return nil, Refuse(guard.Refuse(guard.Excluded, "node %s is annotated %s", name, e.Config.Guards.ExcludeAnnotation))
	}
	for k, v := range e.Config.Actions.Cordon.NodeSelector {
		if node.Labels[k] != v {
			return nil, Refuse(guard.Refuse(guard.Excluded, "node %s does not match actions.cordon.nodeSelector (%s=%q)", name, k, v))
		}
	}
	if node.Spec.Unschedulable {
		if node.Annotations[AnnotationCordonedBy] == CordonedByValue {
			return nil, Nothing("node %s is already cordoned by herd (at %s)", name, node.Annotations[AnnotationCordonedAt])
		}
		return nil, Nothing("node %s is already unschedulable, cordoned by someone else; herd leaves it as it is", name)
	}
	// The blast-radius decision, the reservation of this node's place
	// under the limit and the budget happen under the lock; the API write
	// does not, so cordons of different nodes do not queue behind each
	// other's writes.
	c.mu.Lock()
	now, allowed, count, total, o := c.reserve(cs, name)
	c.mu.Unlock()
	if o.Ends() {
		return nil, o
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
	body := map[string]any{
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
	}
	return &Write{
		What: "cordon " + name, Budget: true, Object: body,
		Done:  fmt.Sprintf("cordoned node %s (%d of %d nodes now unschedulable, limit %d)", name, count, total, allowed),
		Apply: func(ctx context.Context, dryRun bool) error { return applyNode(ctx, e, name, body, dryRun) },
		Release: func() {
			c.mu.Lock()
			if c.pending[name].Equal(now) {
				delete(c.pending, name)
			}
			c.mu.Unlock()
		},
	}, Continue
}

// applyNode server-side applies body to node name as herd.
func applyNode(ctx context.Context, e *Env, name string, body map[string]any, dryRun bool) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	_, err = e.Client.CoreV1().Nodes().Patch(ctx, name, types.ApplyPatchType, b,
		metav1.PatchOptions{FieldManager: FieldManager, Force: ptr.To(true), DryRun: dryRunOpt(dryRun)})
	return err
}

// reserve runs the guards that count (cooldown, blast radius, budget) and,
// when they pass, holds name's place among the unschedulable nodes until
// the node cache shows the cordon (the write's Release gives it back if the
// write does not happen, and the Runner refunds the budget). Callers hold
// c.mu.
func (c *Cordon) reserve(cs *Case, name string) (now time.Time, allowed, count, total int, o Outcome) {
	e := c.Env
	now = e.now()
	if t, seen := c.pending[name]; seen && now.Sub(t) < c.pendingFor() {
		if e.Config.DryRun {
			return now, 0, 0, 0, Nothing("dry run: herd would already have cordoned node %s at %s", name, t.UTC().Format(time.RFC3339))
		}
		return now, 0, 0, 0, Nothing("herd cordoned node %s at %s", name, t.UTC().Format(time.RFC3339))
	}
	if r := e.Budget.Cooling(policy.ActionCordon); r != nil {
		return now, 0, 0, 0, Refuse(r)
	}
	total, unschedulable, err := e.Nodes.Count()
	if err != nil {
		return now, 0, 0, 0, Fail("count nodes", alert.Transient(err))
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
		e.Budget.Trip(policy.ActionCordon)
		return now, 0, 0, 0, Refuse(guard.Refuse(guard.MaxUnschedulableFraction,
			"%d of %d nodes are unschedulable (%s); cordoning %s would make %d, over guards.maxUnschedulableFraction %g (at most %d); cordon pauses for guards.stormCooldown",
			len(unschedulable), total, listSome(unschedulable, 5), name, len(unschedulable)+1, frac, allowed))
	}
	if r := cs.TakeBudget(); r != nil {
		return now, 0, 0, 0, Refuse(r)
	}
	if c.pending == nil {
		c.pending = map[string]time.Time{}
	}
	c.pending[name] = now
	return now, allowed, len(unschedulable) + 1, total, Continue
}

// Resolve implements Action: uncordon when herd cordoned the node and
// nobody changed herd's cordon since.
func (c *Cordon) Resolve(a alert.Alert) Op {
	e := c.Env
	var (
		name      string
		node      *corev1.Node
		wouldHave bool
	)
	return Op{
		Action: policy.ActionCordon, Alert: a, Event: EventNames{Reason: ReasonUncordon, Verb: "Uncordon"},
		Labels: func(cs *Case) Outcome { return nodeLabel(cs, a, &name) },
		Read: func(ctx context.Context, _ *Case) Outcome {
			c.mu.Lock()
			_, wouldHave = c.pending[name]
			delete(c.pending, name)
			c.mu.Unlock()
			if wouldHave && e.Config.DryRun {
				return Continue // a simulated cordon: nothing to read
			}
			if !e.Config.Actions.Cordon.UncordonOnResolve {
				return Nothing("actions.cordon.uncordonOnResolve is false: node %s stays as it is", name)
			}
			var err error
			node, err = e.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return Nothing("node %s no longer exists", name)
			}
			if err != nil {
				return Fail("get node "+name, err)
			}
			return Continue
		},
		Guards: func(context.Context, *Case) (*Write, Outcome) {
			if wouldHave && e.Config.DryRun {
				return &Write{What: "uncordon " + name, Done: fmt.Sprintf("uncordoned node %s, which herd would have cordoned", name),
					Apply: func(context.Context, bool) error { return nil }}, Continue
			}
			return c.uncordonGuards(name, node)
		},
	}
}

func (c *Cordon) uncordonGuards(name string, node *corev1.Node) (*Write, Outcome) {
	e := c.Env
	if node.Annotations[AnnotationCordonedBy] != CordonedByValue {
		return nil, Nothing("herd did not cordon node %s; it stays as it is", name)
	}
	if _, ok := node.Annotations[e.Config.Guards.ExcludeAnnotation]; ok {
		return nil, Refuse(guard.Refuse(guard.Excluded, "node %s is annotated %s since herd cordoned it; a person decides", name, e.Config.Guards.ExcludeAnnotation))
	}
	if !node.Spec.Unschedulable {
		return nil, Refuse(guard.Refuse(guard.Ownership, "node %s is schedulable again: someone uncordoned it after herd; herd leaves it and its annotations alone", name))
	}
	if who := touchedBy(node); who != "" {
		return nil, Refuse(guard.Refuse(guard.Ownership, "node %s was changed by %s after herd cordoned it; it stays cordoned for a person to decide", name, who))
	}
	// Applying nothing as herd releases every field herd owns: the cordon
	// and herd's annotations go, and nothing else changes.
	body := map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{"name": name, "resourceVersion": node.ResourceVersion},
	}
	return &Write{
		What: "uncordon " + name, Object: body,
		Done:  fmt.Sprintf("uncordoned node %s, which herd had cordoned at %s", name, node.Annotations[AnnotationCordonedAt]),
		Apply: func(ctx context.Context, dryRun bool) error { return applyNode(ctx, e, name, body, dryRun) },
	}, Continue
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
	names := slices.Sorted(maps.Keys(m))
	if len(names) == 0 {
		return "none"
	}
	if len(names) > n {
		return strings.Join(names[:n], ", ") + fmt.Sprintf(" and %d more", len(names)-n)
	}
	return strings.Join(names, ", ")
}
