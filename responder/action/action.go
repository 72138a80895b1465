// Package action holds the responder's actions (SPEC §4.2): triage, cordon,
// isolate, quarantine and flag-metrics-server. Each is a small type behind
// one interface; each re-verifies its alert from Prometheus and the
// Kubernetes API, passes the guards of SPEC §4.3, writes only with
// resourceVersion preconditions or server-side apply, and returns a
// Decision that says what it did or would have done, and why.
//
// An action never returns a Go error for "no": refusals, no-ops and
// dry runs are Decisions. Only a Decision with Result Failed carries an
// error, and that error says whether a later delivery could succeed
// (Transient), which is what the webhook's 503 means to Alertmanager.
package action

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/responder/config"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/webhook"
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
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "herd"

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
	AnnotationIdentity    = "herd.dev/identity"
	AnnotationKubeletAuth = "herd.dev/kubelet-auth"
	AnnotationFlaggedAt   = "herd.dev/flagged-at"
)

// Decision records one decision: what alert, what target, what herd did
// or would have done, which guard refused, and on what evidence.
type Decision struct {
	Time        time.Time         `json:"time"`
	Action      config.Action     `json:"action"`
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
	DurationMS  float64           `json:"durationMs"`
	// Err is set when Result is Failed.
	Err error `json:"-"`
	// Error is Err's text, for /debug/actions.
	Error string `json:"error,omitempty"`
}

// Action acts on alerts of one kind.
type Action interface {
	Name() config.Action
	// Fire handles a firing alert.
	Fire(ctx context.Context, a webhook.Alert) Decision
	// Resolve handles a resolved alert: undo what Fire did, if herd did it
	// and nobody changed it since.
	Resolve(ctx context.Context, a webhook.Alert) Decision
}

// Recorder is the part of k8s.io/client-go/tools/events.EventRecorder the
// actions use.
type Recorder interface {
	Eventf(regarding runtime.Object, related runtime.Object, eventtype, reason, action, note string, args ...interface{})
}

// Env is what actions share.
type Env struct {
	Client   kubernetes.Interface
	Config   config.Config
	Evidence evidence.Querier
	Budget   *guard.Budget
	Events   Recorder
	// Nodes counts nodes for the cordon guard; see NodeCount.
	Nodes NodeCounter
	// IsLeader is checked right before every write: a replica that lost
	// its Lease while deciding does not write.
	IsLeader func() bool
	// Self is the object Events are recorded on when there is no object
	// concerned (triage, an alert naming a node that does not exist): the
	// responder's leader Lease.
	Self *corev1.ObjectReference
	Now  func() time.Time
}

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// dryRunOpt is the DryRun field of write options: All in dry-run mode.
func (e *Env) dryRunOpt() []string {
	if e.Config.DryRun {
		return []string{"All"}
	}
	return nil
}

// errNotLeader stops a write by a replica that is no longer the leader.
var errNotLeader = webhook.Transient(errors.New("this replica lost the leader Lease before writing; the new leader acts on the next delivery"))

func (e *Env) checkLeader() error {
	if e.IsLeader != nil && !e.IsLeader() {
		return errNotLeader
	}
	return nil
}

// decision starts a Decision for alert a.
func (e *Env) decision(act config.Action, a webhook.Alert) Decision {
	return Decision{
		Time: e.now(), Action: act, Alert: a.Name(), Status: a.Status, Fingerprint: a.Fingerprint,
		Labels: a.Labels, DryRun: e.Config.DryRun,
	}
}

func (d Decision) refuse(r *guard.Refusal) Decision {
	d.Result, d.Guard, d.Reason = Refused, r.Guard, r.Reason
	return d
}

func (d Decision) noop(format string, args ...any) Decision {
	d.Result, d.Reason = Noop, fmt.Sprintf(format, args...)
	return d
}

// fail ends d as Failed. API errors that a later delivery can fix
// (unavailable, timeouts, conflicts, throttling) and Prometheus being
// unreachable are marked transient.
func (d Decision) fail(what string, err error) Decision {
	d.Result = Failed
	d.Reason = what
	if isTransient(err) {
		err = webhook.Transient(err)
	}
	d.Err = fmt.Errorf("%s: %w", what, err)
	d.Error = d.Err.Error()
	return d
}

// done ends d as Applied, or DryRun in dry-run mode.
func (d Decision) done(format string, args ...any) Decision {
	d.Result = Applied
	if d.DryRun {
		d.Result = DryRun
		format = "dry run: would have " + format
	}
	d.Reason = fmt.Sprintf(format, args...)
	return d
}

func isTransient(err error) bool {
	if errors.Is(err, webhook.ErrTransient) || errors.Is(err, evidence.ErrUnavailable) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsConflict(err) ||
		apierrors.IsUnexpectedServerError(err) || isConnectionError(err)
}

func isConnectionError(err error) bool {
	s := err.Error()
	// client-go's rate limiter gives up with its own error, not
	// context.DeadlineExceeded, when the wait would outlast the deadline.
	for _, m := range []string{"connection refused", "connection reset", "i/o timeout", "no route to host", "EOF", "http2: client connection lost",
		"client rate limiter Wait returned an error"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// verify runs one evidence check and appends it to d. It returns a refusal
// when the evidence does not confirm, and an error when it cannot be read.
func (e *Env) verify(ctx context.Context, d *Decision, query, what string) (*guard.Refusal, error) {
	return e.verifyAbove(ctx, d, query, 0, what)
}

// verifyAbove is verify with a threshold the value must exceed.
func (e *Env) verifyAbove(ctx context.Context, d *Decision, query string, threshold float64, what string) (*guard.Refusal, error) {
	c, err := evidence.Max(ctx, e.Evidence, query, threshold)
	d.Evidence = append(d.Evidence, c)
	if err != nil {
		return nil, err
	}
	if !c.Confirmed {
		if c.Series == 0 {
			return guard.Refuse(guard.Verification, "Prometheus does not confirm %s: %s returned nothing", what, query), nil
		}
		return guard.Refuse(guard.Verification, "Prometheus does not confirm %s: %s = %g, not above %g", what, query, c.Value, threshold), nil
	}
	return nil, nil
}

// label reads a label an action needs, refusing when it is missing or
// fails valid.
func label(a webhook.Alert, name string, valid func(string) []string) (string, *guard.Refusal) {
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
func clusterLabel(a webhook.Alert) (string, *guard.Refusal) {
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

// event records an Event on regarding (or on the responder's Lease when
// regarding is nil). Recording is asynchronous and never fails an action.
func (e *Env) event(regarding runtime.Object, eventtype, reason, verb, note string) {
	if e.Events == nil {
		return
	}
	if regarding == nil {
		if e.Self == nil {
			return
		}
		regarding = e.Self
	}
	// The events API caps a note at 1 KiB.
	e.Events.Eventf(regarding, nil, eventtype, reason, verb, "%s", truncate(note, 1000))
}

// recordEvent turns a decision into an Event: reasons are the action's
// prefix and the result (HerdCordonApplied, HerdCordonRefused, ...).
func (e *Env) recordEvent(regarding runtime.Object, prefix, verb string, d Decision) {
	t := corev1.EventTypeNormal
	if d.Result == Refused || d.Result == Failed {
		t = corev1.EventTypeWarning
	}
	note := d.Reason
	if d.Err != nil {
		note = d.Err.Error()
	}
	e.event(regarding, t, prefix+reasonSuffix[d.Result], verb, note)
}

var reasonSuffix = map[Result]string{Applied: "Applied", DryRun: "DryRun", Refused: "Refused", Noop: "Noop", Failed: "Failed"}

func nodeRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: name}
}
