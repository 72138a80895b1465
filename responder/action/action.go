// Package action holds the responder's actions (SPEC §4.2) and the one place
// that runs them: the Runner (runner.go).
//
// An action says what it needs and the Runner does the rest, in one fixed
// order, for every decision of every action (SPEC §4.3, "every guard, every
// time"): validate the alert's labels, re-verify its condition from
// Prometheus and the Kubernetes API, read the object, apply the object-level
// guards, take the hourly budget, check leadership right before writing,
// write (or dry-run), and record the decision as an Event, a metric, a log
// line and an entry of /debug/actions, together. An action is a value that
// returns an Op per alert: Op's fields are those steps.
//
// An action never returns a Go error for "no": refusals, no-ops and dry runs
// are Decisions. Only a Decision with Result Failed carries an error, and
// that error says whether a later delivery could succeed (alert.Transient),
// which is what the webhook's 503 means to Alertmanager.
//
// The FlowSchema actions (isolate, quarantine, and the coming protect) share
// one more layer, slots.go: an action there supplies its target, evidence,
// subjects and precedence, and the slot machinery claims one of herd's
// FlowSchema names, applies it with one server-side apply, marks it resolved
// and sweeps it.
package action

import (
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/internal/apfmatch"
	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// Result is how a decision ended; the values of
// herd_responder_actions_total's result label.
type Result string

// The results (SPEC §4.3).
const (
	Applied Result = "applied"
	DryRun  Result = "dry_run"
	Refused Result = "refused"
	Noop    Result = "noop"
	Failed  Result = "failed"
)

// Results lists every result, for metrics that exist from the start.
var Results = []Result{Applied, DryRun, Refused, Noop, Failed}

// FieldManager is herd's field manager on every write: server-side apply
// ownership and managedFields show what herd set.
const FieldManager = "herd"

// Labels and annotations herd puts on what it creates or changes.
const (
	// ManagedByLabel marks objects herd created; herd changes or deletes
	// no other object of the kinds it creates.
	ManagedByLabel = apfmatch.ManagedByLabel
	ManagedByValue = apfmatch.ManagedByValue

	AnnotationCordonedBy  = "herd.dev/cordoned-by"
	AnnotationReason      = "herd.dev/reason"
	AnnotationCordonedAt  = "herd.dev/cordoned-at"
	AnnotationAction      = "herd.dev/action"
	AnnotationAlert       = "herd.dev/alert"
	AnnotationFingerprint = "herd.dev/alert-fingerprint"
	AnnotationAppliedAt   = "herd.dev/applied-at"
	AnnotationExpiresAt   = "herd.dev/expires-at"
	AnnotationResolvedAt  = "herd.dev/resolved-at"
	AnnotationRole        = "herd.dev/role"
	AnnotationClient      = "herd.dev/client"
	AnnotationResource    = "herd.dev/resource"
	AnnotationShape       = "herd.dev/shape"
	AnnotationIdentity    = "herd.dev/identity"
	AnnotationKubeletAuth = "herd.dev/kubelet-auth"
	AnnotationFlaggedAt   = "herd.dev/flagged-at"
)

// Decision records one decision: what alert, what target, what herd did
// or would have done, which guard refused, and on what evidence.
type Decision struct {
	Time        time.Time         `json:"time"`
	Action      policy.Action     `json:"action"`
	Alert       string            `json:"alert"`
	Status      string            `json:"status"`
	Fingerprint string            `json:"fingerprint"`
	Target      string            `json:"target,omitempty"`
	Result      Result            `json:"result"`
	Guard       guard.Guard       `json:"guard,omitempty"`
	Reason      string            `json:"reason"`
	Evidence    []evidence.Check  `json:"evidence,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	DryRun      bool              `json:"dryRun"`
	// Object is what the decision applied or, in dry-run mode, would have
	// applied (server-side apply body), so that a dry run shows it.
	Object     any     `json:"object,omitempty"`
	DurationMS float64 `json:"durationMs"`
	// Err is set when Result is Failed.
	Err error `json:"-"`
	// Error is Err's text, for /debug/actions.
	Error string `json:"error,omitempty"`
}

// Action acts on alerts of one kind. Fire and Resolve describe the
// decision; the Runner makes it.
type Action interface {
	Name() policy.Action
	// Fire is the decision about a firing alert.
	Fire(a alert.Alert) Op
	// Resolve is the decision about a resolved alert: undo what Fire did,
	// if herd did it and nobody changed it since.
	Resolve(a alert.Alert) Op
}

// Sweeper is an action with objects that expire (isolate, quarantine): the
// dispatcher calls Sweep periodically on the leader, and each removal is a
// decision the Runner makes.
type Sweeper interface {
	Sweep() []Op
}

// Env is what actions share.
type Env struct {
	Client kubernetes.Interface
	Config policy.Config
	// Budget is every action's hourly budget and storm cooldown: the
	// Runner takes and refunds it; cordon also checks the cooldown before
	// counting nodes and trips it when its blast-radius guard refuses.
	Budget *guard.Budget
	// Nodes counts nodes for the cordon guard and tells quarantine whether
	// a node exists; see NodeCache.
	Nodes NodeCounter
	// APF is the cache of FlowSchemas and priority levels the APF actions
	// read instead of asking the apiserver (see APFCache).
	APF *APFCache
	Now func() time.Time
}

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// dryRunOpt is the DryRun field of write options: All in dry-run mode.
func dryRunOpt(dryRun bool) []string {
	if dryRun {
		return []string{"All"}
	}
	return nil
}

// label reads a label an action needs, refusing when it is missing or
// fails valid.
func label(a alert.Alert, name string, valid func(string) []string) (string, *guard.Refusal) {
	v, ok := a.Labels[name]
	if !ok || v == "" {
		return "", guard.Refuse(guard.LabelValidation, "the alert has no %s label", name)
	}
	if errs := valid(v); len(errs) > 0 {
		return "", guard.Refuse(guard.LabelValidation, "label %s=%q is not valid: %s", name, truncate(v, 80), strings.Join(errs, "; "))
	}
	return v, nil
}

// clusterLabel is the alert's cluster label when it has a sane one; it
// scopes evidence queries in a Prometheus that sees several clusters.
func clusterLabel(a alert.Alert) (string, *guard.Refusal) {
	v := a.Labels["cluster"]
	if len(v) > 253 || strings.ContainsAny(v, "\x00\n") {
		return "", guard.Refuse(guard.LabelValidation, "label cluster is not a plausible cluster name")
	}
	return v, nil
}

var (
	validNodeName = validation.IsDNS1123Subdomain
	validDNSLabel = validation.IsDNS1123Label
)

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func nodeRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: name}
}
