package action

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/herd-k8s/herd/responder/config"
	"github.com/herd-k8s/herd/responder/guard"
)

// The APF objects herd manages have fixed names, so that RBAC can pin
// herd's writes to them (manifests/rbac/responder.yaml): FlowSchema slots
// herd-isolate-1..N and herd-quarantine-1..N, and one priority level per
// action.
const (
	IsolateLevel    = "herd-isolate"
	QuarantineLevel = "herd-quarantine"
)

// Precedences (lower is evaluated first). system-node-high is 400: node
// heartbeats and leases stay there, so herd's schemas come after it.
const (
	systemNodeHighPrecedence = 400
	// isolatePrecedence is used when the schema serving the client now is
	// above it; the calibration of SPEC §8.1 used 450.
	isolatePrecedence = 450
	// quarantinePrecedence catches a ghost identity before system-node-high
	// and system-nodes: every request of the identity is rejected, its
	// heartbeats too (it has no Node to heartbeat for).
	quarantinePrecedence = 300
)

// slotName is the name of FlowSchema slot i (1-based) of an action.
func slotName(prefix string, i int) string { return fmt.Sprintf("%s-%d", prefix, i) }

// flowSchemas manages the FlowSchema slots and priority level of one
// action.
type flowSchemas struct {
	env    *Env
	action config.Action
	prefix string // slot names: prefix-1..prefix-max
	level  string
	max    int
	// mu serialises slot claims within this replica; across replicas the
	// leader Lease does, and server-side apply makes a repeated write
	// converge instead of duplicating.
	mu sync.Mutex
}

// list returns every FlowSchema, herd's slots of this action by name.
func (f *flowSchemas) list(ctx context.Context) ([]flowcontrolv1.FlowSchema, map[string]*flowcontrolv1.FlowSchema, error) {
	l, err := f.env.Client.FlowcontrolV1().FlowSchemas().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("list flowschemas: %w", err)
	}
	mine := map[string]*flowcontrolv1.FlowSchema{}
	for i := range l.Items {
		fs := &l.Items[i]
		if isSlot(fs.Name, f.prefix, f.max) {
			mine[fs.Name] = fs
		}
	}
	return l.Items, mine, nil
}

func isSlot(name, prefix string, max int) bool {
	for i := 1; i <= max; i++ {
		if name == slotName(prefix, i) {
			return true
		}
	}
	return false
}

// owned reports whether herd created o (the managed-by label).
func owned(o metav1.Object) bool { return o.GetLabels()[ManagedByLabel] == ManagedByValue }

// claim finds the slot already serving key (annotations that identify the
// target), else the first free one. It refuses when every slot is taken or
// the slot for key is excluded or not herd's.
func (f *flowSchemas) claim(mine map[string]*flowcontrolv1.FlowSchema, key map[string]string) (name string, existing *flowcontrolv1.FlowSchema, r *guard.Refusal) {
	free := ""
	for i := 1; i <= f.max; i++ {
		n := slotName(f.prefix, i)
		fs, ok := mine[n]
		if !ok {
			if free == "" {
				free = n
			}
			continue
		}
		if !owned(fs) {
			continue // someone else's object under herd's name: never touched
		}
		if matchesKey(fs.Annotations, key) {
			if _, ok := fs.Annotations[f.env.Config.Guards.ExcludeAnnotation]; ok {
				return "", nil, guard.Refuse(guard.Excluded, "FlowSchema %s is annotated %s: a person holds it", n, f.env.Config.Guards.ExcludeAnnotation)
			}
			return n, fs, nil
		}
	}
	if free == "" {
		return "", nil, guard.Refuse(guard.MaxManagedFlowSchemas, "all %d FlowSchema slots %s-1..%d are in use (actions.%s.maxManagedFlowSchemas)", f.max, f.prefix, f.max, f.action)
	}
	return free, nil, nil
}

func matchesKey(ann, key map[string]string) bool {
	for k, v := range key {
		if ann[k] != v {
			return false
		}
	}
	return true
}

// ensureLevel applies the action's priority level, refusing when an object
// of that name exists that herd did not create.
func (f *flowSchemas) ensureLevel(ctx context.Context, spec flowcontrolv1.PriorityLevelConfigurationSpec) (*guard.Refusal, error) {
	cur, err := f.env.Client.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, f.level, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("get prioritylevelconfiguration %s: %w", f.level, err)
	case !owned(cur):
		return guard.Refuse(guard.Ownership, "PriorityLevelConfiguration %s exists and herd did not create it (no %s=%s label)", f.level, ManagedByLabel, ManagedByValue), nil
	}
	pl := flowcontrolv1.PriorityLevelConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "flowcontrol.apiserver.k8s.io/v1", Kind: "PriorityLevelConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: f.level, Labels: map[string]string{ManagedByLabel: ManagedByValue}, Annotations: map[string]string{AnnotationAction: string(f.action)}},
		Spec:       spec,
	}
	return nil, f.apply(ctx, "prioritylevelconfigurations", f.level, pl)
}

// apply server-side applies obj as herd: first with dryRun=All, so that a
// spec the apiserver rejects fails before anything changes, then for real
// unless herd runs dry.
func (f *flowSchemas) apply(ctx context.Context, resource, name string, obj any) error {
	body, err := json.Marshal(obj)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", resource, name, err)
	}
	force := true // herd's own object: take back fields only herd should set
	passes := [][]string{{"All"}}
	if !f.env.Config.DryRun {
		passes = append(passes, nil)
	}
	for _, dry := range passes {
		if dry == nil {
			if err := f.env.checkLeader(); err != nil {
				return err
			}
		}
		opts := metav1.PatchOptions{FieldManager: FieldManager, Force: &force, DryRun: dry}
		rc := f.env.Client.FlowcontrolV1().RESTClient()
		err := rc.Patch(types.ApplyPatchType).Resource(resource).Name(name).
			VersionedParams(&opts, metav1.ParameterCodec).Body(body).Do(ctx).Error()
		if err != nil {
			what := "apply"
			if dry != nil {
				what = "dry-run apply"
			}
			return fmt.Errorf("%s %s %s: %w", what, resource, name, err)
		}
	}
	return nil
}

// flowSchema builds one of herd's FlowSchemas.
func (f *flowSchemas) flowSchema(name string, precedence int32, ann map[string]string, rule flowcontrolv1.PolicyRulesWithSubjects, distinguisher *flowcontrolv1.FlowDistinguisherMethod) flowcontrolv1.FlowSchema {
	return flowcontrolv1.FlowSchema{
		TypeMeta: metav1.TypeMeta{APIVersion: "flowcontrol.apiserver.k8s.io/v1", Kind: "FlowSchema"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{ManagedByLabel: ManagedByValue},
			Annotations: ann,
		},
		Spec: flowcontrolv1.FlowSchemaSpec{
			PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: f.level},
			MatchingPrecedence:         precedence,
			DistinguisherMethod:        distinguisher,
			Rules:                      []flowcontrolv1.PolicyRulesWithSubjects{rule},
		},
	}
}

// Sweep deletes this action's FlowSchemas that expired or whose alert
// resolved longer ago than holdDown, then the priority level once no
// schema of herd's uses it. It returns a decision per deletion. It does
// nothing in dry-run mode (nothing was created) and leaves alone objects
// that carry the exclude annotation or are not herd's.
func (f *flowSchemas) sweep(ctx context.Context, holdDown time.Duration, reasonPrefix string) []Decision {
	e := f.env
	if e.Config.DryRun || e.checkLeader() != nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, mine, err := f.list(ctx)
	if err != nil {
		return nil // the next sweep tries again; the error is not a decision
	}
	now := e.now()
	var out []Decision
	inUse := 0
	for _, name := range sortedNames(mine) {
		fs := mine[name]
		if !owned(fs) {
			continue
		}
		_, excluded := fs.Annotations[e.Config.Guards.ExcludeAnnotation]
		why := ""
		if t, err := time.Parse(time.RFC3339, fs.Annotations[AnnotationExpiresAt]); err == nil && !now.Before(t) {
			why = "its TTL ended at " + fs.Annotations[AnnotationExpiresAt]
		} else if t, err := time.Parse(time.RFC3339, fs.Annotations[AnnotationResolvedAt]); err == nil && !now.Before(t.Add(holdDown)) {
			why = fmt.Sprintf("its alert resolved at %s and the hold-down of %s passed", fs.Annotations[AnnotationResolvedAt], holdDown)
		}
		if why == "" || excluded {
			inUse++
			continue
		}
		d := Decision{Time: now, Action: f.action, Alert: fs.Annotations[AnnotationAlert], Status: "sweep",
			Fingerprint: fs.Annotations[AnnotationFingerprint], Target: "flowschema/" + name}
		uid, rv := fs.UID, fs.ResourceVersion
		err := e.Client.FlowcontrolV1().FlowSchemas().Delete(ctx, name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv},
		})
		if err != nil && !apierrors.IsNotFound(err) {
			d = d.fail("delete flowschema "+name, err)
			inUse++
		} else {
			d = d.done("removed FlowSchema %s: %s", name, why)
		}
		if d.Result == Failed {
			e.event(fsRef(name), corev1.EventTypeWarning, reasonPrefix+"RemoveFailed", "Delete", d.Err.Error())
		} else {
			e.event(fsRef(name), corev1.EventTypeNormal, reasonPrefix+"Removed", "Delete", d.Reason)
		}
		out = append(out, d)
	}
	if inUse == 0 {
		pl, err := e.Client.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, f.level, metav1.GetOptions{})
		if err == nil && owned(pl) {
			uid, rv := pl.UID, pl.ResourceVersion
			_ = e.Client.FlowcontrolV1().PriorityLevelConfigurations().Delete(ctx, f.level, metav1.DeleteOptions{
				Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv},
			})
		}
	}
	return out
}

func sortedNames(m map[string]*flowcontrolv1.FlowSchema) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The user a request comes from, as APF matches it.
type user struct {
	name   string
	groups []string
}

// userOf derives the groups an identity authenticates with in every
// cluster: service accounts and nodes get theirs from the authenticator.
func userOf(identity string) user {
	u := user{name: identity, groups: []string{"system:authenticated"}}
	if ns, _, ok := serviceAccount(identity); ok {
		u.groups = append(u.groups, "system:serviceaccounts", "system:serviceaccounts:"+ns)
	} else if strings.HasPrefix(identity, "system:node:") {
		u.groups = append(u.groups, "system:nodes")
	}
	return u
}

func serviceAccount(identity string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(identity, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	return ns, name, ok && ns != "" && name != ""
}

// request is what APF matches on for a resource request.
type request struct {
	verb, group, resource string
	clusterScope          bool // no namespace: a LIST across all namespaces
}

// serving returns the FlowSchema that serves r from u now: the matching
// schema of lowest precedence (ties by name), skipping herd's own.
func serving(all []flowcontrolv1.FlowSchema, u user, r request) *flowcontrolv1.FlowSchema {
	var best *flowcontrolv1.FlowSchema
	for i := range all {
		fs := &all[i]
		if owned(fs) && strings.HasPrefix(fs.Name, "herd-") {
			continue
		}
		if !schemaMatches(fs, u, r) {
			continue
		}
		if best == nil || fs.Spec.MatchingPrecedence < best.Spec.MatchingPrecedence ||
			(fs.Spec.MatchingPrecedence == best.Spec.MatchingPrecedence && fs.Name < best.Name) {
			best = fs
		}
	}
	return best
}

func schemaMatches(fs *flowcontrolv1.FlowSchema, u user, r request) bool {
	for _, rule := range fs.Spec.Rules {
		if !subjectsMatch(rule.Subjects, u) {
			continue
		}
		for _, rr := range rule.ResourceRules {
			if has(rr.Verbs, r.verb) && has(rr.APIGroups, r.group) && has(rr.Resources, r.resource) &&
				(r.clusterScope && rr.ClusterScope || !r.clusterScope && len(rr.Namespaces) > 0) {
				return true
			}
		}
	}
	return false
}

func subjectsMatch(subjects []flowcontrolv1.Subject, u user) bool {
	for _, s := range subjects {
		switch s.Kind {
		case flowcontrolv1.SubjectKindUser:
			if s.User != nil && (s.User.Name == "*" || s.User.Name == u.name) {
				return true
			}
		case flowcontrolv1.SubjectKindGroup:
			if s.Group != nil && (s.Group.Name == "*" || has(u.groups, s.Group.Name)) {
				return true
			}
		case flowcontrolv1.SubjectKindServiceAccount:
			if s.ServiceAccount == nil {
				continue
			}
			ns, name, ok := serviceAccount(u.name)
			if ok && ns == s.ServiceAccount.Namespace && (s.ServiceAccount.Name == "*" || s.ServiceAccount.Name == name) {
				return true
			}
		}
	}
	return false
}

func has(list []string, v string) bool {
	for _, x := range list {
		if x == "*" || x == v {
			return true
		}
	}
	return false
}

func fsRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "flowcontrol.apiserver.k8s.io/v1", Kind: "FlowSchema", Name: name}
}
