// Package apfguard builds herd's standing guard against a forecast
// stampede (issue 12) as API Priority and Fairness objects: the FlowSchema
// that routes one client's LISTs of one resource, by the client's own
// subjects, to herd's bounded priority level herd-protect, and that level.
// The responder's protect action applies them (one server-side apply of a
// slot herd-protect-N); `herd analyze --apf` prints the same objects for
// people who apply APF configuration by GitOps. One builder, so that both
// say the same thing.
package apfguard

import (
	"fmt"
	"math"
	"strings"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/herd-k8s/herd/internal/nodeclient"
)

// ProtectLevel is the priority level the guard routes to (installed with
// herd: the chart, manifests/apf/herd.yaml).
const ProtectLevel = "herd-protect"

// Precedences (lower is evaluated first).
const (
	// SystemNodeHighPrecedence is the suggested schema system-node-high's
	// (k8s.io/apiserver@v0.36.3/pkg/apis/flowcontrol/bootstrap/default.go):
	// node heartbeats and leases stay there, so herd's schemas come after it.
	SystemNodeHighPrecedence = 400
	// ProtectPrecedence is the guard's precedence when the schema serving
	// the client now comes later: before isolate's 450, so that where a
	// guard and an isolation both match, the guard's level (sized for the
	// budget) serves.
	ProtectPrecedence = 440
)

// MaxSubjects bounds the subjects of one FlowSchema: more identities than
// this are not one client's fleet (the exporter caps the forecast's
// subjects at the same number).
const MaxSubjects = 20

// Shapes are the LIST shapes of the forecast (herd_stampede_instances):
// unfiltered, selected by a label or non-indexed field (the watch cache
// reads every object: costed like all), by spec.nodeName (indexed), by
// metadata.name (one object), and unknown: instances herd has seen only
// watch (they listed before herd started), which the forecast costs as an
// unfiltered LIST.
var Shapes = []string{"all", "selected", "node", "object", "unknown"}

// GuardedShapes are the shapes a guard is for. A FlowSchema cannot tell
// one LIST of a resource from another by its selector, so a guard routes
// every LIST of the resource by its subjects: guarding a kubelet's cheap
// spec.nodeName LISTs would slow the fleet's every pod LIST for nothing.
var GuardedShapes = []string{"all", "selected", "unknown"}

// Level is a herd priority level's settings (the responder's policy:
// actions.protect, actions.isolate).
type Level struct {
	Shares, Queues, HandSize, QueueLengthLimit int
}

// LevelSpec is a queuing level of l's shares that neither lends nor
// borrows seats: the guarded LISTs run on exactly its nominal seats
// however idle the other levels are, and the excess queues.
func LevelSpec(l Level) flowcontrolv1.PriorityLevelConfigurationSpec {
	return flowcontrolv1.PriorityLevelConfigurationSpec{
		Type: flowcontrolv1.PriorityLevelEnablementLimited,
		Limited: &flowcontrolv1.LimitedPriorityLevelConfiguration{
			NominalConcurrencyShares: ptr.To(int32(l.Shares)),
			LendablePercent:          ptr.To(int32(0)),
			BorrowingLimitPercent:    ptr.To(int32(0)),
			LimitResponse: flowcontrolv1.LimitResponse{
				Type: flowcontrolv1.LimitResponseTypeQueue,
				Queuing: &flowcontrolv1.QueuingConfiguration{
					Queues: int32(l.Queues), HandSize: int32(l.HandSize), QueueLengthLimit: int32(l.QueueLengthLimit),
				},
			},
		},
	}
}

// ListRule routes only `list` of one resource (plural in group, "" for
// the core group), cluster-wide and in every namespace, by subjects.
func ListRule(group, plural string, subjects []flowcontrolv1.Subject) flowcontrolv1.PolicyRulesWithSubjects {
	return flowcontrolv1.PolicyRulesWithSubjects{
		Subjects: subjects,
		ResourceRules: []flowcontrolv1.ResourcePolicyRule{{
			Verbs: []string{"list"}, APIGroups: []string{group}, Resources: []string{plural},
			ClusterScope: true, Namespaces: []string{flowcontrolv1.NamespaceEvery},
		}},
	}
}

// ByUser is the guard's flow distinguisher: each instance is its own flow
// (a kubelet's user is its node), so one noisy instance queues behind
// itself.
func ByUser() *flowcontrolv1.FlowDistinguisherMethod {
	return &flowcontrolv1.FlowDistinguisherMethod{Type: flowcontrolv1.FlowDistinguisherMethodByUserType}
}

// Precedence is the guard's precedence: preferred, or just before the
// schema (name, precedence) that serves the client's LISTs now. ok is
// false when that would not come after system-node-high.
func Precedence(preferred, serving int32) (prec int32, ok bool) {
	prec = min(preferred, serving-1)
	return prec, prec > SystemNodeHighPrecedence
}

// SubjectOf turns one herd_stampede_subjects value (group:system:nodes,
// serviceaccount:NS:NAME, user:NAME) into a FlowSchema subject and the
// identity APF sees for it; why says why it is passed over: herd puts no
// group but the kubelets' in a FlowSchema, no unauthenticated user, and
// never APF's wildcard.
func SubjectOf(s string) (sub flowcontrolv1.Subject, identity, why string) {
	kind, rest, _ := strings.Cut(s, ":")
	switch {
	case strings.Contains(rest, "*"):
		// APF's wildcard for names: a subject made from it matches everyone.
		return sub, "", "contains *, APF's wildcard"
	case kind == "group":
		if rest != nodeclient.NodesGroup {
			return sub, "", "herd puts no group but " + nodeclient.NodesGroup + " in a FlowSchema: another group may hold unrelated users"
		}
		return flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: rest}},
			nodeclient.NodeUserPrefix + "any", ""
	case kind == "serviceaccount":
		ns, name, _ := strings.Cut(rest, ":")
		if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
			return sub, "", "not a service account namespace and name"
		}
		return flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: ns, Name: name}},
			"system:serviceaccount:" + ns + ":" + name, ""
	case kind == "user":
		switch {
		case rest == "" || len(rest) > 253 || strings.ContainsFunc(rest, func(r rune) bool { return r < ' ' || r == 0x7f }):
			return sub, "", "not a user name"
		case nodeclient.Unauthenticated(rest):
			return sub, "", "unauthenticated: nothing proves who sent it"
		}
		return flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: rest}}, rest, ""
	}
	return sub, "", "not a subject herd knows (group:, serviceaccount:, user:)"
}

// APF's seat arithmetic, as kube-apiserver 1.36 does it: how many seats a
// priority level gets from its shares, and how many LISTs of a given width
// it then runs at once.
//
// k8s.io/apiserver@v0.36.3/pkg/util/flowcontrol/apf_controller.go,
// finishQueueSetReconfigsLocked:
//
//	nominalCL = ceil(serverCL × shares / Σ shares of every level)
//	maxSeats  = max(1, min(ceil(0.15 × nominalCL), nominalCL / handSize))   (integer division)
//
// where serverCL is --max-requests-inflight + --max-mutating-requests-inflight
// (600 by default) and Σ counts every level, exempt included (plSpecCommons:
// an Exempt level's shares default to 0). A level with lendablePercent 0
// and borrowingLimitPercent 0 runs exactly nominalCL seats. A LIST's width
// is its size-based estimate (request/list_work_estimator.go: the forecast's
// herd:stampede_list_seats) capped at the level's maxSeats, so a small level
// charges a big LIST less than a big level does, and runs more of them at
// once than nominalCL / listSeats suggests.

// DefaultServerConcurrency is kube-apiserver's serverCL with its default
// flags: --max-requests-inflight 400 + --max-mutating-requests-inflight 200
// (k8s.io/apiserver@v0.36.3/pkg/server/options/server_run_options.go).
const DefaultServerConcurrency = 600

// DefaultLimitedShares is nominalConcurrencyShares of a Limited level that
// does not set it (k8s.io/kubernetes@v1.36.3/pkg/apis/flowcontrol/v1/
// defaults.go); the apiserver stores the default, so only hand-made objects
// lack it.
const DefaultLimitedShares = 30

// LevelShares is a level's nominalConcurrencyShares as APF counts them.
func LevelShares(pl *flowcontrolv1.PriorityLevelConfiguration) float64 {
	switch {
	case pl.Spec.Limited != nil:
		return float64(ptr.Deref(pl.Spec.Limited.NominalConcurrencyShares, DefaultLimitedShares))
	case pl.Spec.Exempt != nil:
		return float64(ptr.Deref(pl.Spec.Exempt.NominalConcurrencyShares, 0))
	}
	return 0
}

// NominalSeats is the nominal concurrency limit of a level with shares
// among levels whose shares sum to sum (its own included).
func NominalSeats(serverCL int, shares, sum float64) int {
	if sum <= 0 {
		return 0
	}
	return int(math.Ceil(float64(serverCL) * shares / sum))
}

// MaxListWidth is the most seats one request may take in a queuing level
// of nominal seats (maxSeats above).
func MaxListWidth(nominal int, handSize int32) int {
	if handSize < 1 {
		handSize = 1
	}
	return max(1, min(int(math.Ceil(float64(nominal)*0.15)), int(int32(nominal)/handSize)))
}

// AdmittedLists is how many LISTs of listSeats seats a bounded level of
// nominal seats runs at once.
func AdmittedLists(nominal int, handSize int32, listSeats int) int {
	if nominal <= 0 {
		return 0
	}
	w := min(max(listSeats, 1), MaxListWidth(nominal, handSize))
	return nominal / w
}

// Seats are every level's nominal seats on a server of serverCL, by name.
func Seats(serverCL int, levels []*flowcontrolv1.PriorityLevelConfiguration) map[string]int {
	sum := 0.0
	for _, pl := range levels {
		sum += LevelShares(pl)
	}
	out := make(map[string]int, len(levels))
	for _, pl := range levels {
		if pl.Spec.Type == flowcontrolv1.PriorityLevelEnablementExempt {
			continue // no limit
		}
		out[pl.Name] = NominalSeats(serverCL, LevelShares(pl), sum)
	}
	return out
}

// Describe is a level's spec in a few words ("10 shares, 8 queues × hand 2
// × 50").
func Describe(spec flowcontrolv1.PriorityLevelConfigurationSpec) string {
	l := spec.Limited
	if l == nil {
		return string(spec.Type)
	}
	s := fmt.Sprintf("%d shares", ptr.Deref(l.NominalConcurrencyShares, DefaultLimitedShares))
	if q := l.LimitResponse.Queuing; q != nil {
		s += fmt.Sprintf(", %d queues × hand %d × %d", q.Queues, q.HandSize, q.QueueLengthLimit)
	}
	return s
}

// FlowSchema is a schema of one rule at precedence that routes to level,
// each instance its own flow (ByUser); the caller adds its labels and
// annotations.
func FlowSchema(name, level string, precedence int32, rule flowcontrolv1.PolicyRulesWithSubjects) *flowcontrolv1.FlowSchema {
	return &flowcontrolv1.FlowSchema{
		TypeMeta:   metav1.TypeMeta{APIVersion: flowcontrolv1.SchemeGroupVersion.String(), Kind: "FlowSchema"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: flowcontrolv1.FlowSchemaSpec{
			PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: level},
			MatchingPrecedence:         precedence,
			DistinguisherMethod:        ByUser(),
			Rules:                      []flowcontrolv1.PolicyRulesWithSubjects{rule},
		},
	}
}

// InstallLabels are the labels of what herd's installation creates (the
// manifests' objects, the chart's, and a priority level the responder had
// to create): herd's, but not an action's to change or delete.
func InstallLabels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": "herd", "app.kubernetes.io/component": "responder", "app.kubernetes.io/part-of": "herd"}
}

// GitOpsLabels mark the guard FlowSchemas `herd analyze --apf` prints:
// herd's, installed by whoever applies them, not managed by the responder
// (no app.kubernetes.io/managed-by=herd), so the responder never changes
// or deletes one; it only reads them (isolate leaves a client a GitOps
// guard already covers alone, as it does protect's own).
func GitOpsLabels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": "herd", "app.kubernetes.io/component": "guard", "app.kubernetes.io/part-of": "herd"}
}

// IsGitOpsGuard reports whether labels are GitOpsLabels'.
func IsGitOpsGuard(labels map[string]string) bool {
	for k, v := range GitOpsLabels() {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// ProtectLevelObject is herd-protect as herd installs it
// (manifests/apf/herd.yaml, the chart) for the level settings l.
func ProtectLevelObject(l Level) *flowcontrolv1.PriorityLevelConfiguration {
	pl := PriorityLevel(ProtectLevel, LevelSpec(l))
	pl.Labels, pl.Annotations = InstallLabels(), map[string]string{"herd.dev/action": "protect"}
	return pl
}

// PriorityLevel is a level object of spec.
func PriorityLevel(name string, spec flowcontrolv1.PriorityLevelConfigurationSpec) *flowcontrolv1.PriorityLevelConfiguration {
	return &flowcontrolv1.PriorityLevelConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: flowcontrolv1.SchemeGroupVersion.String(), Kind: "PriorityLevelConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       spec,
	}
}
