package action

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
	"github.com/herd-k8s/herd/test/controlplane"
)

// The runner's APF writes on a real kube-apiserver 1.36.3 (protect's in
// protect_apiserver_test.go), as the
// responder's service account with the RBAC herd ships
// (manifests/rbac/responder.yaml) and its installed APF objects
// (manifests/apf/herd.yaml): one server-side apply per decision, served
// by the responder's own FlowSchema; preconditions from the cache; another's
// object under a slot name never touched; a level that was not installed
// created once, by the first decision that needs it.

const responderSA = controlplane.Responder

// liveResponder is a Runner acting as herd's service account on the real
// apiserver, with a request counter on its client.
type liveResponder struct {
	env    *Env
	runner *Runner
	sent   *controlplane.Requests
	q      *querier
	stop   context.CancelFunc
}

func newLiveResponder(t *testing.T, cp *controlplane.ControlPlane, cfg func(*policy.Config)) *liveResponder {
	t.Helper()
	c := testPolicy(t, cfg)
	l := &liveResponder{q: &querier{}, sent: &controlplane.Requests{}}
	rc := cp.Config(responderSA)
	rc.WrapTransport = l.sent.Wrap
	client := kubernetes.NewForConfigOrDie(rc)
	ctx, cancel := context.WithCancel(context.Background())
	l.stop = cancel
	t.Cleanup(cancel)
	apf := NewAPFCache(client)
	apf.Start(ctx)
	if !apf.WaitForSync(ctx) {
		t.Fatal("the APF cache did not sync")
	}
	l.env = &Env{Client: client, Config: c, Budget: guard.NewBudget(c.Guards, nil), Nodes: nodeCounter{total: 10}, APF: apf}
	var err error
	if l.runner, err = NewRunner(RunnerOptions{Env: l.env, Evidence: l.q, Events: &recorder{}, Self: selfRef}); err != nil {
		t.Fatal(err)
	}
	l.sent.Take() // the informers' first lists
	return l
}

// storm makes the evidence of a storm of client's identities.
func (l *liveResponder) storm(client string, ids ...string) alert.Alert {
	l.q.set(evidence.RelistRate("5m", "cni", client, "pods", ""), sample(10))
	var s []evidence.Sample
	for _, id := range ids {
		s = append(s, sample(30, "identity", id))
	}
	l.q.set(evidence.RelistIdentities("cni", client, "pods", ""), s...)
	return firing("alertname", "HerdRelistStorm", "role", "cni", "client", client, "resource", "pods")
}

func TestAPFWritesOnAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cp := controlplane.StartForTest(ctx, t, controlplane.Options{InstallResponder: true,
		// Not the default 600 seats: protect infers the server's concurrency (protect_apiserver_test.go).
		ExtraArgs: []string{"--max-requests-inflight=700", "--max-mutating-requests-inflight=200"}})
	admin := cp.Client(controlplane.Admin)
	own, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-responder", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := newLiveResponder(t, cp, nil)
	cilium := "system:serviceaccount:kube-system:cilium"

	t.Run("isolate is one server-side apply, served by the responder's own FlowSchema", func(t *testing.T) {
		iso := NewIsolate(l.env)
		d := l.runner.Run(ctx, iso.Fire(l.storm("cilium", cilium, "system:anonymous")))
		want{result: Applied, has: "isolated cilium's LISTs of pods from 1 identities in FlowSchema herd-isolate-1"}.check(t, d)
		sent := l.sent.Take()
		if len(sent) != 1 || sent[0].Method != http.MethodPatch || sent[0].Path != "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/herd-isolate-1" ||
			!strings.Contains(sent[0].Query, "fieldManager=herd") || !strings.Contains(sent[0].Query, "force=true") || sent[0].Status != http.StatusCreated {
			t.Fatalf("requests %v, want one server-side apply of herd-isolate-1", sent)
		}
		t.Logf("isolate: %d request: %v", len(sent), sent[0])
		if sent[0].FlowSchemaUID != string(own.UID) {
			t.Errorf("the apply was served by FlowSchema UID %q; herd-responder is %s", sent[0].FlowSchemaUID, own.UID)
		}
		fs, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-isolate-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		subjects := fs.Spec.Rules[0].Subjects
		if fs.Labels[ManagedByLabel] != ManagedByValue || len(subjects) != 1 || subjects[0].ServiceAccount == nil || subjects[0].ServiceAccount.Name != "cilium" ||
			!slices.ContainsFunc(fs.ManagedFields, func(m metav1.ManagedFieldsEntry) bool {
				return m.Manager == FieldManager && m.Operation == metav1.ManagedFieldsOperationApply
			}) {
			t.Errorf("herd-isolate-1: labels %v, subjects %+v, managers %+v", fs.Labels, subjects, fs.ManagedFields)
		}
		// The apiserver serves cilium's pod LISTs through it (APF applies a
		// new schema within moments).
		if _, err := controlplane.WaitServedBy(ctx, cp.Config(controlplane.Cilium), "/api/v1/pods?limit=1", string(fs.UID), 20*time.Second); err != nil {
			t.Fatalf("cilium's pod LIST, herd-isolate-1: %v", err)
		}
		// Again: a no-op from the cache, no request.
		d = l.runner.Run(ctx, iso.Fire(l.storm("cilium", cilium)))
		want{result: Noop}.check(t, d)
		if sent := l.sent.Take(); len(sent) != 0 {
			t.Errorf("a repeated alert made requests: %v", sent)
		}
	})

	t.Run("dry run is one server-side dry run, nothing stored", func(t *testing.T) {
		dry := newLiveResponder(t, cp, func(c *policy.Config) { c.DryRun = true })
		d := dry.runner.Run(ctx, NewIsolate(dry.env).Fire(dry.storm("calico-node", "system:serviceaccount:calico-system:calico-node")))
		want{result: DryRun, has: "dry run: would have isolated calico-node's LISTs of pods from 1 identities in FlowSchema herd-isolate-2"}.check(t, d)
		sent := dry.sent.Take()
		if len(sent) != 1 || sent[0].Method != http.MethodPatch || !strings.Contains(sent[0].Query, "dryRun=All") || sent[0].Status != http.StatusCreated {
			t.Fatalf("requests %v, want one server-side dry-run apply", sent)
		}
		if d.Object == nil {
			t.Error("the dry-run decision does not show the object")
		}
		if _, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-isolate-2", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("herd-isolate-2 after a dry run: %v", err)
		}
	})

	t.Run("a stale cache conflicts instead of overwriting", func(t *testing.T) {
		stale := newLiveResponder(t, cp, nil)
		stale.stop() // its informers stop: what it holds grows old
		fs, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-isolate-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		patch := []byte(`{"metadata":{"annotations":{"someone":"changed it"}}}`)
		if _, err := admin.FlowcontrolV1().FlowSchemas().Patch(ctx, "herd-isolate-1", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		d := stale.runner.Run(ctx, NewIsolate(stale.env).Resolve(resolved("alertname", "HerdRelistStorm", "role", "cni", "client", "cilium", "resource", "pods")))
		want{result: Failed, reason: "resolve"}.check(t, d)
		if !apierrors.IsConflict(errors.Unwrap(d.Err)) && !strings.Contains(d.Error, "the object has been modified") {
			t.Errorf("err %v, want a 409 conflict", d.Err)
		}
		if !errors.Is(d.Err, alert.ErrTransient) {
			t.Errorf("err %v is not transient", d.Err)
		}
		if sent := stale.sent.Take(); len(sent) != 1 || sent[0].Status != http.StatusConflict {
			t.Errorf("requests %v, want one apply answered 409", sent)
		}
		after, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-isolate-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := after.Annotations[AnnotationResolvedAt]; ok || after.Annotations["someone"] != "changed it" || after.ResourceVersion == fs.ResourceVersion {
			t.Errorf("herd-isolate-1 after the conflict: %v", after.Annotations)
		}
		// The live cache sees the change: its resolve goes through.
		waitFor(t, func() bool {
			c, _ := l.env.APF.FlowSchema("herd-isolate-1")
			return c != nil && c.Annotations["someone"] != ""
		})
		d = l.runner.Run(ctx, NewIsolate(l.env).Resolve(resolved("alertname", "HerdRelistStorm", "role", "cni", "client", "cilium", "resource", "pods")))
		want{result: Applied, has: "marked FlowSchema herd-isolate-1 resolved"}.check(t, d)
		if sent := l.sent.Take(); len(sent) != 1 {
			t.Errorf("resolve made %d requests: %v", len(sent), sent)
		}
	})

	t.Run("another's object under a slot name is never touched", func(t *testing.T) {
		foreign := &flowcontrolv1.FlowSchema{
			ObjectMeta: metav1.ObjectMeta{Name: "herd-quarantine-1"},
			Spec: flowcontrolv1.FlowSchemaSpec{PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: "global-default"},
				MatchingPrecedence: 8000, Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
					Subjects:      []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: "someone"}}},
					ResourceRules: []flowcontrolv1.ResourcePolicyRule{{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"pods"}, Namespaces: []string{"*"}}},
				}}},
		}
		created, err := admin.FlowcontrolV1().FlowSchemas().Create(ctx, foreign, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ghost := "system:node:ghost-1"
		one := newLiveResponder(t, cp, func(c *policy.Config) { c.Actions.Quarantine.MaxManagedFlowSchemas = 1 })
		one.q.set(evidence.GhostIdentity(ghost, ""), sample(1))
		d := one.runner.Run(ctx, NewQuarantine(one.env).Fire(ghostAlert(ghost)))
		want{result: Refused, guard: guard.MaxManagedFlowSchemas}.check(t, d)
		if sent := one.sent.Take(); len(sent) != 0 {
			t.Errorf("a refused quarantine made requests: %v", sent)
		}
		two := newLiveResponder(t, cp, func(c *policy.Config) { c.Actions.Quarantine.MaxManagedFlowSchemas = 2 })
		two.q.set(evidence.GhostIdentity(ghost, ""), sample(1))
		d = two.runner.Run(ctx, NewQuarantine(two.env).Fire(ghostAlert(ghost)))
		want{result: Applied, has: "in FlowSchema herd-quarantine-2"}.check(t, d)
		if sent := two.sent.Take(); len(sent) != 1 {
			t.Errorf("quarantine made %d requests: %v", len(sent), sent)
		}
		// (The apiserver's APF controller writes its status; herd writes
		// nothing.)
		after, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-quarantine-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(after.Spec, created.Spec) || len(after.Labels) != 0 || len(after.Annotations) != 0 ||
			slices.ContainsFunc(after.ManagedFields, func(m metav1.ManagedFieldsEntry) bool { return m.Manager == FieldManager }) {
			t.Errorf("the foreign herd-quarantine-1 changed: %+v", after)
		}
	})

	t.Run("a level that was not installed is created once, by the first decision that needs it", func(t *testing.T) {
		if err := admin.FlowcontrolV1().PriorityLevelConfigurations().Delete(ctx, QuarantineLevel, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { pl, _ := l.env.APF.PriorityLevel(QuarantineLevel); return pl == nil })
		// The sweep installs nothing.
		q := NewQuarantine(l.env)
		l.runner.Register(q)
		l.runner.Sweep(ctx)
		if sent := l.sent.Take(); len(sent) != 0 {
			t.Errorf("the sweep made requests: %v", sent)
		}
		ghost := "system:node:ghost-2"
		l.q.set(evidence.GhostIdentity(ghost, ""), sample(1))
		d := l.runner.Run(ctx, q.Fire(ghostAlert(ghost)))
		want{result: Applied, has: "created priority level herd-quarantine first: it was not installed"}.check(t, d)
		sent := l.sent.Take()
		if len(sent) != 2 || sent[0].Path != "/apis/flowcontrol.apiserver.k8s.io/v1/prioritylevelconfigurations/herd-quarantine" || sent[0].Status != http.StatusCreated ||
			!strings.Contains(sent[1].Path, "/flowschemas/herd-quarantine-") {
			t.Errorf("requests %v, want the level's creation, then the FlowSchema's apply", sent)
		}
		pl, err := admin.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, QuarantineLevel, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pl.Labels[ManagedByLabel] == ManagedByValue || pl.Labels["app.kubernetes.io/part-of"] != "herd" ||
			pl.Spec.Limited == nil || pl.Spec.Limited.LimitResponse.Type != flowcontrolv1.LimitResponseTypeReject || *pl.Spec.Limited.NominalConcurrencyShares != 0 {
			t.Errorf("created %+v", pl)
		}
		// Once: the next decision finds it.
		waitFor(t, func() bool { pl, _ := l.env.APF.PriorityLevel(QuarantineLevel); return pl != nil })
		ghost = "system:node:ghost-3"
		l.q.set(evidence.GhostIdentity(ghost, ""), sample(1))
		want{result: Applied}.check(t, l.runner.Run(ctx, q.Fire(ghostAlert(ghost))))
		if sent := l.sent.Take(); len(sent) != 1 {
			t.Errorf("the next quarantine made %d requests: %v", len(sent), sent)
		}
	})

	t.Run("protect", func(t *testing.T) { protectOnAPIServer(ctx, t, cp) })
}
