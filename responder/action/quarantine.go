package action

import (
	"context"
	"fmt"
	"strings"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"k8s.io/utils/ptr"

	"github.com/herd-k8s/herd/internal/apfmatch"
	"github.com/herd-k8s/herd/internal/nodeclient"
	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// ReasonQuarantine prefixes quarantine's Event reasons.
const ReasonQuarantine = "HerdQuarantine"

// QuarantineLevel is the priority level quarantine routes to.
const QuarantineLevel = "herd-quarantine"

// quarantinePrecedence catches a ghost identity before system-node-high and
// system-nodes: every request of the identity is rejected, its heartbeats
// too (it has no Node to heartbeat for).
const quarantinePrecedence = 300

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
	*SlotOps
	env *Env
}

// NewQuarantine returns the quarantine action.
func NewQuarantine(env *Env) *Quarantine {
	q := &Quarantine{env: env}
	q.SlotOps = NewSlotOps(env, q)
	return q
}

// Name implements Action.
func (*Quarantine) Name() policy.Action { return policy.ActionQuarantine }

// Slots implements SlotAction. A quarantine is removed at once when its
// alert resolves.
func (q *Quarantine) Slots() Slots {
	qc := q.env.Config.Actions.Quarantine
	return Slots{
		Action: policy.ActionQuarantine, Prefix: "herd-quarantine", Max: qc.MaxManagedFlowSchemas, Level: QuarantineLevel,
		LevelSpec: QuarantineLevelSpec(),
		LevelFits: func(pl *flowcontrolv1.PriorityLevelConfiguration) string {
			if pl.Spec.Type != flowcontrolv1.PriorityLevelEnablementLimited || pl.Spec.Limited == nil ||
				pl.Spec.Limited.LimitResponse.Type != flowcontrolv1.LimitResponseTypeReject {
				return "does not reject: a quarantined identity's requests would be served"
			}
			return ""
		},
		TTL:   time.Duration(qc.TTL),
		Event: EventNames{Reason: ReasonQuarantine, Verb: "Quarantine"},
	}
}

// QuarantineLevelSpec is the herd-quarantine priority level: no seats of its
// own, none borrowed, so APF rejects every request at once with 429. A
// level with no seats takes nothing from the other levels.
func QuarantineLevelSpec() flowcontrolv1.PriorityLevelConfigurationSpec {
	return flowcontrolv1.PriorityLevelConfigurationSpec{
		Type: flowcontrolv1.PriorityLevelEnablementLimited,
		Limited: &flowcontrolv1.LimitedPriorityLevelConfiguration{
			NominalConcurrencyShares: ptr.To(int32(0)),
			LendablePercent:          ptr.To(int32(0)),
			BorrowingLimitPercent:    ptr.To(int32(0)),
			LimitResponse:            flowcontrolv1.LimitResponse{Type: flowcontrolv1.LimitResponseTypeReject},
		},
	}
}

// ghostRequest is what a ghost alert asks quarantine for.
type ghostRequest struct {
	env                     *Env
	identity, node, cluster string
}

// Request implements SlotAction: the identity label, a per-node identity.
func (q *Quarantine) Request(a alert.Alert) (SlotRequest, *guard.Refusal) {
	id, r := label(a, "identity", func(v string) []string {
		if len(v) > 300 {
			return []string{"too long"}
		}
		return nil
	})
	if r != nil {
		return nil, r
	}
	node, ok := nodeclient.NodeName(id)
	if !ok {
		return nil, guard.Refuse(guard.SharedIdentity, "identity %q is not a per-node identity (system:node:<name>); a shared identity is used by every node, and rejecting it would cut them all", truncate(id, 80))
	}
	if errs := validNodeName(node); len(errs) > 0 {
		return nil, guard.Refuse(guard.LabelValidation, "identity %q does not name a valid node: %s", truncate(id, 80), strings.Join(errs, "; "))
	}
	g := &ghostRequest{env: q.env, identity: id, node: node}
	if g.cluster, r = clusterLabel(a); r != nil {
		return nil, r
	}
	return g, nil
}

func (g *ghostRequest) Key() map[string]string {
	return map[string]string{AnnotationAction: string(policy.ActionQuarantine), AnnotationIdentity: g.identity}
}

func (g *ghostRequest) Target() string  { return "identity/" + g.identity }
func (g *ghostRequest) Serving() string { return "quarantines " + g.identity }

// Evidence: herd's exporter calls the identity a ghost, and its Node does
// not exist (from the Node cache: no GET during a storm).
func (g *ghostRequest) Evidence(ctx context.Context, c *Case) Outcome {
	if o := c.Verify(ctx, evidence.GhostIdentity(g.identity, g.cluster), 0, g.identity+" is a ghost client"); o.Ends() {
		return o
	}
	exists, err := g.env.Nodes.Exists(g.node)
	switch {
	case err != nil:
		return Fail("read node "+g.node, alert.Transient(err))
	case exists:
		return Refuse(guard.Refuse(guard.Verification, "node %s exists: its kubelet may be the one calling from an unknown address, and quarantining %s would cut a live node", g.node, g.identity))
	}
	return Continue
}

// Rule: every request of the identity, before whatever serves it now.
func (g *ghostRequest) Rule(all []*flowcontrolv1.FlowSchema) (SlotRule, *guard.Refusal) {
	u := apfmatch.UserOf(g.identity)
	for _, req := range []apfmatch.Request{apfmatch.List("pods"), {Verb: "get", Resource: "nodes"}} {
		if s := apfmatch.Serving(all, u, req, apfmatch.HerdGuard); s != nil && s.Spec.MatchingPrecedence <= quarantinePrecedence {
			return SlotRule{}, guard.Refuse(guard.Precedence, "FlowSchema %s serves %s at precedence %d, before herd's quarantine at %d", s.Name, g.identity, s.Spec.MatchingPrecedence, quarantinePrecedence)
		}
	}
	return SlotRule{
		Precedence: quarantinePrecedence,
		Rule: flowcontrolv1.PolicyRulesWithSubjects{
			Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: g.identity}}},
			ResourceRules: []flowcontrolv1.ResourcePolicyRule{{
				Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"},
				ClusterScope: true, Namespaces: []string{flowcontrolv1.NamespaceEvery},
			}},
			NonResourceRules: []flowcontrolv1.NonResourcePolicyRule{{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}},
		},
	}, nil
}

func (g *ghostRequest) Done(slot string, rule SlotRule, level *flowcontrolv1.PriorityLevelConfiguration, until string) string {
	return fmt.Sprintf("quarantined %s (node %s does not exist) in FlowSchema %s (precedence %d) to priority level %s, which rejects at once; until %s",
		g.identity, g.node, slot, rule.Precedence, QuarantineLevel, until)
}
