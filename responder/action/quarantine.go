package action

import (
	"context"
	"strings"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/herd-k8s/herd/responder/config"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/webhook"
)

// ReasonQuarantine prefixes quarantine's Event reasons.
const ReasonQuarantine = "HerdQuarantine"

// Quarantine sends every request of a ghost node identity (a kubelet whose
// Node was deleted, still running somewhere) to a priority level with no
// seats and Reject: an immediate 429 instead of a request that holds a
// seat for 3 s and ends in a 504 that burns the error budget.
//
// Only per-node identities (system:node:<name>) whose Node does not exist
// are quarantined. A ghost kube-proxy or CNI agent authenticates with a
// service account that every node shares: rejecting it would cut the whole
// fleet, so quarantine refuses (shared_identity) and the runbook says how
// to stop the ghost machine instead.
type Quarantine struct {
	Env *Env
	fs  *flowSchemas
}

// NewQuarantine returns the quarantine action.
func NewQuarantine(env *Env) *Quarantine {
	return &Quarantine{Env: env, fs: &flowSchemas{env: env, action: config.ActionQuarantine, prefix: "herd-quarantine",
		level: QuarantineLevel, max: env.Config.Actions.Quarantine.MaxManagedFlowSchemas}}
}

// Name implements Action.
func (*Quarantine) Name() config.Action { return config.ActionQuarantine }

func ghostIdentity(a webhook.Alert) (identity, node string, r *guard.Refusal) {
	id, r := label(a, "identity", func(v string) []string {
		if len(v) > 300 {
			return []string{"too long"}
		}
		return nil
	})
	if r != nil {
		return "", "", r
	}
	node, ok := strings.CutPrefix(id, "system:node:")
	if !ok {
		return "", "", guard.Refuse(guard.SharedIdentity, "identity %q is not a per-node identity (system:node:<name>); a shared identity is used by every node, and rejecting it would cut them all", truncate(id, 80))
	}
	if errs := validNodeName(node); len(errs) > 0 {
		return "", "", guard.Refuse(guard.LabelValidation, "identity %q does not name a valid node: %s", truncate(id, 80), strings.Join(errs, "; "))
	}
	return id, node, nil
}

// Fire implements Action.
func (q *Quarantine) Fire(ctx context.Context, a webhook.Alert) Decision {
	e := q.Env
	d := e.decision(config.ActionQuarantine, a)
	id, node, r := ghostIdentity(a)
	if r != nil {
		d = d.refuse(r)
		e.recordEvent(nil, ReasonQuarantine, "Quarantine", d)
		return d
	}
	d.Target = "identity/" + id
	d, slot := q.fire(ctx, d, a, id, node)
	if slot != "" {
		e.recordEvent(fsRef(slot), ReasonQuarantine, "Quarantine", d)
	} else {
		e.recordEvent(nil, ReasonQuarantine, "Quarantine", d)
	}
	return d
}

func (q *Quarantine) fire(ctx context.Context, d Decision, a webhook.Alert, id, node string) (Decision, string) {
	e := q.Env
	cluster, r := clusterLabel(a)
	if r != nil {
		return d.refuse(r), ""
	}
	if r, err := e.verify(ctx, &d, evidence.GhostIdentity(id, cluster), id+" is a ghost client"); err != nil {
		return d.fail("read evidence", err), ""
	} else if r != nil {
		return d.refuse(r), ""
	}
	switch _, err := e.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); {
	case err == nil:
		return d.refuse(guard.Refuse(guard.Verification, "node %s exists: its kubelet may be the one calling from an unknown address, and quarantining %s would cut a live node", node, id)), ""
	case !apierrors.IsNotFound(err):
		return d.fail("get node "+node, err), ""
	}

	f := q.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	all, mine, err := f.list(ctx)
	if err != nil {
		return d.fail("read FlowSchemas", err), ""
	}
	key := map[string]string{AnnotationAction: string(config.ActionQuarantine), AnnotationIdentity: id}
	slot, existing, r := f.claim(mine, key)
	if r != nil {
		return d.refuse(r), ""
	}
	d.Target = "flowschema/" + slot
	if existing != nil {
		if _, resolved := existing.Annotations[AnnotationResolvedAt]; !resolved {
			return d.noop("FlowSchema %s already quarantines %s (until %s)", slot, id, existing.Annotations[AnnotationExpiresAt]), slot
		}
	}
	if r := e.Budget.Take(config.ActionQuarantine); r != nil {
		return d.refuse(r), slot
	}
	refund := func() { e.Budget.Refund(config.ActionQuarantine) }
	// herd's schema must catch the identity before whatever serves it now.
	u := userOf(id)
	for _, req := range []request{{verb: "list", resource: "pods", clusterScope: true}, {verb: "get", resource: "nodes", clusterScope: true}} {
		if s := serving(all, u, req); s != nil && s.Spec.MatchingPrecedence <= quarantinePrecedence {
			refund()
			return d.refuse(guard.Refuse(guard.Precedence, "FlowSchema %s serves %s at precedence %d, before herd's quarantine at %d", s.Name, id, s.Spec.MatchingPrecedence, quarantinePrecedence)), slot
		}
	}
	// No seats of its own, none borrowed: APF rejects every request at
	// once with 429.
	r, err = f.ensureLevel(ctx, flowcontrolv1.PriorityLevelConfigurationSpec{
		Type: flowcontrolv1.PriorityLevelEnablementLimited,
		Limited: &flowcontrolv1.LimitedPriorityLevelConfiguration{
			NominalConcurrencyShares: ptr.To(int32(0)),
			LendablePercent:          ptr.To(int32(0)),
			BorrowingLimitPercent:    ptr.To(int32(0)),
			LimitResponse:            flowcontrolv1.LimitResponse{Type: flowcontrolv1.LimitResponseTypeReject},
		},
	})
	if r != nil {
		refund()
		return d.refuse(r), slot
	}
	if err != nil {
		refund()
		return d.fail("apply priority level "+QuarantineLevel, err), slot
	}
	now := e.now()
	ann := map[string]string{
		AnnotationAction: string(config.ActionQuarantine), AnnotationIdentity: id,
		AnnotationAlert: a.Name(), AnnotationFingerprint: a.Fingerprint,
		AnnotationAppliedAt: now.UTC().Format(time.RFC3339),
		AnnotationExpiresAt: now.Add(time.Duration(e.Config.Actions.Quarantine.TTL)).UTC().Format(time.RFC3339),
	}
	rule := flowcontrolv1.PolicyRulesWithSubjects{
		Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: id}}},
		ResourceRules: []flowcontrolv1.ResourcePolicyRule{{
			Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"},
			ClusterScope: true, Namespaces: []string{flowcontrolv1.NamespaceEvery},
		}},
		NonResourceRules: []flowcontrolv1.NonResourcePolicyRule{{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}},
	}
	obj := f.flowSchema(slot, quarantinePrecedence, ann, rule, nil)
	if err := f.apply(ctx, "flowschemas", slot, obj); err != nil {
		refund()
		return d.fail("apply FlowSchema "+slot, err), slot
	}
	return d.done("quarantined %s (node %s does not exist) in FlowSchema %s (precedence %d) to priority level %s, which rejects at once; until %s",
		id, node, slot, quarantinePrecedence, QuarantineLevel, ann[AnnotationExpiresAt]), slot
}

// Resolve implements Action: the ghost went quiet; remove its schema.
func (q *Quarantine) Resolve(ctx context.Context, a webhook.Alert) Decision {
	e := q.Env
	d := e.decision(config.ActionQuarantine, a)
	id, _, r := ghostIdentity(a)
	if r != nil {
		d = d.refuse(r)
		e.recordEvent(nil, ReasonQuarantine, "Resolve", d)
		return d
	}
	d.Target = "identity/" + id
	key := map[string]string{AnnotationAction: string(config.ActionQuarantine), AnnotationIdentity: id}
	return resolveSlot(ctx, q.fs, d, key, 0, ReasonQuarantine)
}

// Sweep removes expired quarantines.
func (q *Quarantine) Sweep(ctx context.Context) []Decision {
	return q.fs.sweep(ctx, 0, ReasonQuarantine)
}
