package action

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/herd-k8s/herd/exporter/classify"
	"github.com/herd-k8s/herd/responder/config"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/webhook"
)

// ReasonIsolate prefixes isolate's Event reasons (HerdIsolateApplied, ...,
// HerdIsolateRemoved when the sweep deletes a schema).
const ReasonIsolate = "HerdIsolate"

// IsolateMinRelistRate is the relist rate (per second, cluster-wide) below
// which isolate does not believe a storm alert: HerdRelistStorm's own floor.
const IsolateMinRelistRate = 0.5

// maxSubjects bounds the subjects of one FlowSchema: more identities than
// this means a fleet, and fleets share a group or service account.
const maxSubjects = 20

// Isolate routes a storming client's LISTs of one resource to a bounded
// priority level (HerdRelistStorm). Only `list` of that resource: the
// client's watches, leases and status updates keep their schemas.
type Isolate struct {
	Env *Env
	fs  *flowSchemas
}

// NewIsolate returns the isolate action.
func NewIsolate(env *Env) *Isolate {
	return &Isolate{Env: env, fs: &flowSchemas{env: env, action: config.ActionIsolate, prefix: "herd-isolate",
		level: IsolateLevel, max: env.Config.Actions.Isolate.MaxManagedFlowSchemas}}
}

// Name implements Action.
func (*Isolate) Name() config.Action { return config.ActionIsolate }

var resourceRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}(\.[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)?$`)

// stormTarget is what the alert names.
type stormTarget struct {
	role, client, resource, cluster string
	group, plural                   string
}

func (t stormTarget) key() map[string]string {
	return map[string]string{AnnotationAction: string(config.ActionIsolate), AnnotationRole: t.role, AnnotationClient: t.client, AnnotationResource: t.resource}
}

func stormTargetOf(a webhook.Alert) (stormTarget, *guard.Refusal) {
	var t stormTarget
	var r *guard.Refusal
	if t.role, r = label(a, "role", func(v string) []string {
		if _, err := classify.ParseRole(v); err != nil || v == "other" {
			return []string{"not a node-side client role"}
		}
		return nil
	}); r != nil {
		return t, r
	}
	if t.client, r = label(a, "client", validDNSLabel); r != nil {
		return t, r
	}
	if t.client == "other" {
		return t, guard.Refuse(guard.LabelValidation, `client "other" is every unclassified caller, not one client`)
	}
	if t.resource, r = label(a, "resource", func(v string) []string {
		if !resourceRE.MatchString(v) {
			return []string{"not a resource name (plural, or plural.group)"}
		}
		return nil
	}); r != nil {
		return t, r
	}
	if t.resource == "other" {
		return t, guard.Refuse(guard.LabelValidation, `resource "other" is herd's overflow bucket, not one resource`)
	}
	t.plural, t.group, _ = strings.Cut(t.resource, ".")
	if t.cluster, r = clusterLabel(a); r != nil {
		return t, r
	}
	return t, nil
}

// Fire implements Action.
func (i *Isolate) Fire(ctx context.Context, a webhook.Alert) Decision {
	e := i.Env
	d := e.decision(config.ActionIsolate, a)
	t, r := stormTargetOf(a)
	if r != nil {
		d = d.refuse(r)
		e.recordEvent(nil, ReasonIsolate, "Isolate", d)
		return d
	}
	d.Target = fmt.Sprintf("%s/%s LISTs of %s", t.role, t.client, t.resource)
	d, slot := i.fire(ctx, d, a, t)
	if slot != "" {
		e.recordEvent(fsRef(slot), ReasonIsolate, "Isolate", d)
	} else {
		e.recordEvent(nil, ReasonIsolate, "Isolate", d)
	}
	return d
}

func (i *Isolate) fire(ctx context.Context, d Decision, a webhook.Alert, t stormTarget) (Decision, string) {
	e := i.Env
	if r, err := e.verifyAbove(ctx, &d, evidence.RelistRate(e.Config.Prometheus.RateWindow, t.role, t.client, t.resource, t.cluster), IsolateMinRelistRate,
		fmt.Sprintf("that %s relists %s at more than %g/s", t.client, t.resource, IsolateMinRelistRate)); err != nil {
		return d.fail("read evidence", err), ""
	} else if r != nil {
		return d.refuse(r), ""
	}
	q := evidence.RelistIdentities(t.role, t.client, t.resource, t.cluster)
	samples, err := e.Evidence.Query(ctx, q)
	if err != nil {
		return d.fail("read evidence", err), ""
	}
	ids := make([]string, 0, len(samples))
	for _, s := range samples {
		if id := s.Labels["identity"]; id != "" {
			ids = append(ids, id)
		}
	}
	d.Evidence = append(d.Evidence, evidence.Check{Query: q, Series: len(ids), Confirmed: len(ids) > 0})
	subjects, r := subjectsFor(ids)
	if r != nil {
		return d.refuse(r), ""
	}

	f := i.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	all, mine, err := f.list(ctx)
	if err != nil {
		return d.fail("read FlowSchemas", err), ""
	}
	slot, existing, r := f.claim(mine, t.key())
	if r != nil {
		return d.refuse(r), ""
	}
	d.Target = "flowschema/" + slot
	now := e.now()
	ann := t.key()
	ann[AnnotationAlert] = a.Name()
	ann[AnnotationFingerprint] = a.Fingerprint
	ann[AnnotationAppliedAt] = now.UTC().Format(time.RFC3339)
	ann[AnnotationExpiresAt] = now.Add(time.Duration(e.Config.Actions.Isolate.TTL)).UTC().Format(time.RFC3339)
	if existing != nil {
		if _, resolved := existing.Annotations[AnnotationResolvedAt]; !resolved {
			return d.noop("FlowSchema %s already isolates %s's LISTs of %s (until %s)", slot, t.client, t.resource, existing.Annotations[AnnotationExpiresAt]), slot
		}
		// The alert fired again during the hold-down: keep the schema,
		// keep its expiry, drop the resolve mark.
		ann[AnnotationAppliedAt] = existing.Annotations[AnnotationAppliedAt]
		ann[AnnotationExpiresAt] = existing.Annotations[AnnotationExpiresAt]
	} else {
		if r := e.Budget.Take(config.ActionIsolate); r != nil {
			return d.refuse(r), slot
		}
	}
	refund := func() {
		if existing == nil {
			e.Budget.Refund(config.ActionIsolate)
		}
	}

	// Precedence: before the schema serving the client's LISTs now, after
	// system-node-high.
	req := request{verb: "list", group: t.group, resource: t.plural, clusterScope: true}
	current, currentName := int32(10000), "none (catch-all)"
	for _, id := range ids {
		if s := serving(all, userOf(id), req); s != nil && s.Spec.MatchingPrecedence < current {
			current, currentName = s.Spec.MatchingPrecedence, s.Name
		}
	}
	prec := min(int32(isolatePrecedence), current-1)
	if prec <= systemNodeHighPrecedence {
		refund()
		return d.refuse(guard.Refuse(guard.Precedence, "the client's LISTs are served by FlowSchema %s at precedence %d; herd's schema must come after system-node-high (%d) and before it",
			currentName, current, systemNodeHighPrecedence)), slot
	}
	is := e.Config.Actions.Isolate
	r, err = f.ensureLevel(ctx, flowcontrolv1.PriorityLevelConfigurationSpec{
		Type: flowcontrolv1.PriorityLevelEnablementLimited,
		Limited: &flowcontrolv1.LimitedPriorityLevelConfiguration{
			NominalConcurrencyShares: ptr.To(int32(is.PriorityLevelShares)),
			// Bounded: it neither lends nor borrows seats, so the isolated
			// LISTs get exactly their nominal share however idle the other
			// levels are.
			LendablePercent:       ptr.To(int32(0)),
			BorrowingLimitPercent: ptr.To(int32(0)),
			LimitResponse: flowcontrolv1.LimitResponse{
				Type: flowcontrolv1.LimitResponseTypeQueue,
				Queuing: &flowcontrolv1.QueuingConfiguration{
					Queues: int32(is.Queues), HandSize: int32(is.HandSize), QueueLengthLimit: int32(is.QueueLengthLimit),
				},
			},
		},
	})
	if r != nil {
		refund()
		return d.refuse(r), slot
	}
	if err != nil {
		refund()
		return d.fail("apply priority level "+IsolateLevel, err), slot
	}
	rule := flowcontrolv1.PolicyRulesWithSubjects{
		Subjects: subjects,
		ResourceRules: []flowcontrolv1.ResourcePolicyRule{{
			Verbs: []string{"list"}, APIGroups: []string{t.group}, Resources: []string{t.plural},
			ClusterScope: true, Namespaces: []string{flowcontrolv1.NamespaceEvery},
		}},
	}
	obj := f.flowSchema(slot, prec, ann, rule, &flowcontrolv1.FlowDistinguisherMethod{Type: flowcontrolv1.FlowDistinguisherMethodByUserType})
	if err := f.apply(ctx, "flowschemas", slot, obj); err != nil {
		refund()
		return d.fail("apply FlowSchema "+slot, err), slot
	}
	verb := "isolated"
	if existing != nil {
		verb = "re-armed (alert fired again during the hold-down)"
	}
	return d.done("%s %s's LISTs of %s from %d identities in FlowSchema %s (precedence %d, before %s at %d) to priority level %s (%d shares, %d queues), until %s",
		verb, t.client, t.resource, len(ids), slot, prec, currentName, current, IsolateLevel, is.PriorityLevelShares, is.Queues, ann[AnnotationExpiresAt]), slot
}

// subjectsFor turns identities into FlowSchema subjects: service accounts
// as themselves, kubelets as the system:nodes group (one subject for the
// fleet), other users by name.
func subjectsFor(ids []string) ([]flowcontrolv1.Subject, *guard.Refusal) {
	if len(ids) == 0 {
		return nil, guard.Refuse(guard.Verification, "Prometheus names no identity of the client among herd's top relisting instances (herd_instance_relists): nothing to put in a FlowSchema")
	}
	seen := map[string]bool{}
	var out []flowcontrolv1.Subject
	add := func(key string, s flowcontrolv1.Subject) {
		if !seen[key] {
			seen[key] = true
			out = append(out, s)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		switch ns, name, ok := serviceAccount(id); {
		case strings.Contains(id, "*"):
			// "*" is APF's wildcard for user and service-account names:
			// a subject made from it would match every user.
			return nil, guard.Refuse(guard.LabelValidation, "identity %q is not a user name", id)
		case ok:
			add("sa:"+id, flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindServiceAccount,
				ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: ns, Name: name}})
		case strings.HasPrefix(id, "system:node:"):
			add("group:system:nodes", flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindGroup,
				Group: &flowcontrolv1.GroupSubject{Name: "system:nodes"}})
		default:
			add("user:"+id, flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: id}})
		}
	}
	if len(out) > maxSubjects {
		return nil, guard.Refuse(guard.Verification, "the client runs as %d different identities; herd puts at most %d in one FlowSchema", len(out), maxSubjects)
	}
	return out, nil
}

// Resolve implements Action: mark the schema resolved; the sweep removes
// it after actions.isolate.holdDown (at once when that is 0).
func (i *Isolate) Resolve(ctx context.Context, a webhook.Alert) Decision {
	e := i.Env
	d := e.decision(config.ActionIsolate, a)
	t, r := stormTargetOf(a)
	if r != nil {
		d = d.refuse(r)
		e.recordEvent(nil, ReasonIsolate, "Resolve", d)
		return d
	}
	d.Target = fmt.Sprintf("%s/%s LISTs of %s", t.role, t.client, t.resource)
	d = resolveSlot(ctx, i.fs, d, t.key(), time.Duration(e.Config.Actions.Isolate.HoldDown), ReasonIsolate)
	return d
}

// resolveSlot marks the slot serving key resolved (or deletes it when
// holdDown is 0).
func resolveSlot(ctx context.Context, f *flowSchemas, d Decision, key map[string]string, holdDown time.Duration, reason string) Decision {
	e := f.env
	f.mu.Lock()
	defer f.mu.Unlock()
	_, mine, err := f.list(ctx)
	if err != nil {
		return d.fail("read FlowSchemas", err)
	}
	var fs *flowcontrolv1.FlowSchema
	for _, name := range sortedNames(mine) {
		if owned(mine[name]) && matchesKey(mine[name].Annotations, key) {
			fs = mine[name]
			break
		}
	}
	if fs == nil {
		d = d.noop("no FlowSchema of herd's serves this alert")
		e.recordEvent(nil, reason, "Resolve", d)
		return d
	}
	d.Target = "flowschema/" + fs.Name
	defer func() { e.recordEvent(fsRef(fs.Name), reason, "Resolve", d) }()
	if _, ok := fs.Annotations[e.Config.Guards.ExcludeAnnotation]; ok {
		d = d.refuse(guard.Refuse(guard.Excluded, "FlowSchema %s is annotated %s: a person holds it", fs.Name, e.Config.Guards.ExcludeAnnotation))
		return d
	}
	if err := e.checkLeader(); err != nil {
		d = d.fail("resolve", err)
		return d
	}
	if holdDown <= 0 {
		uid, rv := fs.UID, fs.ResourceVersion
		err := e.Client.FlowcontrolV1().FlowSchemas().Delete(ctx, fs.Name, metav1.DeleteOptions{
			DryRun: e.dryRunOpt(), Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		if err != nil && !apierrors.IsNotFound(err) {
			d = d.fail("delete FlowSchema "+fs.Name, err)
			return d
		}
		d = d.done("removed FlowSchema %s: its alert resolved", fs.Name)
		return d
	}
	if _, ok := fs.Annotations[AnnotationResolvedAt]; ok {
		d = d.noop("FlowSchema %s is already in its hold-down since %s", fs.Name, fs.Annotations[AnnotationResolvedAt])
		return d
	}
	obj := fs.DeepCopy()
	if len(obj.Spec.Rules) != 1 {
		d = d.refuse(guard.Refuse(guard.Ownership, "FlowSchema %s has %d rules; herd writes one, so someone changed it", fs.Name, len(obj.Spec.Rules)))
		return d
	}
	ann := map[string]string{}
	for k, v := range obj.Annotations {
		if strings.HasPrefix(k, "herd.dev/") && k != e.Config.Guards.ExcludeAnnotation {
			ann[k] = v
		}
	}
	now := e.now()
	ann[AnnotationResolvedAt] = now.UTC().Format(time.RFC3339)
	again := f.flowSchema(fs.Name, fs.Spec.MatchingPrecedence, ann, obj.Spec.Rules[0], obj.Spec.DistinguisherMethod)
	if err := f.apply(ctx, "flowschemas", fs.Name, again); err != nil {
		d = d.fail("mark FlowSchema "+fs.Name+" resolved", err)
		return d
	}
	d = d.done("marked FlowSchema %s resolved; it is removed after the hold-down, at %s", fs.Name, now.Add(holdDown).UTC().Format(time.RFC3339))
	return d
}

// Sweep removes expired and resolved schemas; the dispatcher calls it
// periodically on the leader.
func (i *Isolate) Sweep(ctx context.Context) []Decision {
	return i.fs.sweep(ctx, time.Duration(i.Env.Config.Actions.Isolate.HoldDown), ReasonIsolate)
}
