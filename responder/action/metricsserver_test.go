package action

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/herd-k8s/herd/internal/kubeletauth"
	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
	"github.com/herd-k8s/herd/test/herdtest"
)

var (
	tokenArgs = []string{"--cert-dir=/tmp", "--secure-port=10250", "--kubelet-preferred-address-types=InternalIP", "--kubelet-use-node-status-port"}
	certArgs  = append(append([]string(nil), tokenArgs...), "--kubelet-client-certificate=/certs/tls.crt", "--kubelet-client-key=/certs/tls.key")
)

func msDeployment(ns, name string, args []string, annotations ...string) *appsv1.Deployment {
	d := herdtest.MetricsServer(ns, name, "k8s-app", args...)
	d.ResourceVersion, d.Annotations = "11", ann(annotations...)
	return d
}

func getDeployment(t *testing.T, f *fixture, ns, name string) *appsv1.Deployment {
	t.Helper()
	d, err := f.client.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func specJSON(t *testing.T, d *appsv1.Deployment) string {
	t.Helper()
	b, err := json.Marshal(d.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFlagMetricsServerFire(t *testing.T) {
	named := evidence.MetricsServerTokenMode("kube-system", "metrics-server", "")
	anyMS := evidence.MetricsServerTokenMode("", "", "")
	msSample := func(ns, name string) evidence.Sample {
		return sample(1, "namespace", ns, "deployment", name, "mode", "token")
	}
	tokenAuth := firing("alertname", "HerdMetricsServerTokenAuth", "namespace", "kube-system", "deployment", "metrics-server")
	storm := firing("alertname", "HerdKubeletTokenReviewStorm")
	const applied = "annotated Deployment kube-system/metrics-server herd.dev/kubelet-auth=token; fix: " + kubeletauth.TokenFix
	cases := []struct {
		name     string
		objs     []runtime.Object
		evidence map[string][]evidence.Sample
		evErr    error
		cfg      func(*policy.Config)
		spend    bool
		notLead  bool
		alert    alert.Alert
		want     want
		events   []string
		flagged  []string // namespace/name of Deployments annotated after
	}{
		{
			name:   "namespace label not a DNS label",
			alert:  firing("alertname", "HerdMetricsServerTokenAuth", "namespace", "Kube_System", "deployment", "metrics-server"),
			want:   want{result: Refused, guard: guard.LabelValidation, has: `label namespace="Kube_System" is not valid`},
			events: []string{"Lease/herd-responder HerdFlagMetricsServerRefused"},
		},
		{
			name:   "a namespace without a deployment",
			alert:  firing("alertname", "HerdMetricsServerTokenAuth", "namespace", "kube-system"),
			want:   want{result: Refused, guard: guard.LabelValidation, reason: "the alert has no deployment label"},
			events: []string{"Lease/herd-responder HerdFlagMetricsServerRefused"},
		},
		{
			name:  "Prometheus shows none",
			objs:  []runtime.Object{msDeployment("kube-system", "metrics-server", tokenArgs)},
			alert: tokenAuth,
			want: want{result: Refused, guard: guard.Verification,
				reason: `Prometheus shows no metrics-server Deployment in token mode: max by (namespace, deployment) (herd:metrics_server_kubelet_auth:max{deployment="metrics-server", mode="token", namespace="kube-system"}) returned nothing`},
			events: []string{"Lease/herd-responder HerdFlagMetricsServerRefused"},
		},
		{
			// Drill 004's flake: the second alert, for a Deployment herd had
			// just flagged, met a moment when Prometheus had missed a scrape of
			// herd's exporter (every series of the target stale, the recording
			// rule with it). Unknown, not gone: fail, and Alertmanager's retry
			// finds the flag (a no-op); a refusal would be remembered for an hour.
			name:     "the evidence vanished a moment ago",
			objs:     []runtime.Object{msDeployment("kube-system", "metrics-server", tokenArgs, AnnotationKubeletAuth, "token")},
			evidence: map[string][]evidence.Sample{evidence.Recently(named, "5m"): {msSample("kube-system", "metrics-server")}},
			alert:    tokenAuth,
			want:     want{result: Failed, reason: "read evidence"},
			events:   []string{"Lease/herd-responder HerdFlagMetricsServerFailed"},
			flagged:  []string{"kube-system/metrics-server"},
		},
		{
			name:     "Prometheus shows only invalid names",
			evidence: map[string][]evidence.Sample{anyMS: {msSample("Bad NS", "metrics-server"), msSample("kube-system", ""), msSample("", "")}},
			alert:    storm,
			want:     want{result: Refused, guard: guard.Verification, has: "Prometheus shows no metrics-server Deployment in token mode"},
			events:   []string{"Lease/herd-responder HerdFlagMetricsServerRefused"},
		},
		{
			name:   "Prometheus unavailable",
			evErr:  evidence.ErrUnavailable,
			alert:  tokenAuth,
			want:   want{result: Failed, reason: "read evidence"},
			events: []string{"Lease/herd-responder HerdFlagMetricsServerFailed"},
		},
		{
			name:     "the Deployment does not exist",
			evidence: map[string][]evidence.Sample{named: {msSample("kube-system", "metrics-server")}},
			alert:    tokenAuth,
			want:     want{result: Refused, guard: guard.Verification, reason: "Deployment kube-system/metrics-server does not exist"},
			events:   []string{"Deployment/metrics-server HerdFlagMetricsServerRefused"},
		},
		{
			name:     "it has client certificate flags now",
			objs:     []runtime.Object{msDeployment("kube-system", "metrics-server", certArgs)},
			evidence: map[string][]evidence.Sample{named: {msSample("kube-system", "metrics-server")}},
			alert:    tokenAuth,
			want:     want{result: Refused, guard: guard.Verification, reason: "Deployment kube-system/metrics-server is in certificate mode now, not token"},
			events:   []string{"Deployment/metrics-server HerdFlagMetricsServerRefused"},
		},
		{
			name:     "excluded",
			objs:     []runtime.Object{msDeployment("kube-system", "metrics-server", tokenArgs, "herd.dev/exclude", "")},
			evidence: map[string][]evidence.Sample{named: {msSample("kube-system", "metrics-server")}},
			alert:    tokenAuth,
			want:     want{result: Refused, guard: guard.Excluded, reason: "Deployment kube-system/metrics-server is annotated herd.dev/exclude"},
			events:   []string{"Deployment/metrics-server HerdFlagMetricsServerRefused"},
		},
		{
			name:     "already flagged",
			objs:     []runtime.Object{msDeployment("kube-system", "metrics-server", tokenArgs, AnnotationKubeletAuth, "token", AnnotationFlaggedAt, "2025-03-01T00:00:00Z")},
			evidence: map[string][]evidence.Sample{named: {msSample("kube-system", "metrics-server")}},
			alert:    tokenAuth,
			want:     want{result: Noop, reason: "Deployment kube-system/metrics-server is already flagged herd.dev/kubelet-auth=token (at 2025-03-01T00:00:00Z)"},
			events:   []string{"Deployment/metrics-server HerdFlagMetricsServerNoop"},
			flagged:  []string{"kube-system/metrics-server"},
		},
		{
			name:     "applied",
			objs:     []runtime.Object{msDeployment("kube-system", "metrics-server", tokenArgs, "deployment.kubernetes.io/revision", "3")},
			evidence: map[string][]evidence.Sample{named: {msSample("kube-system", "metrics-server")}},
			alert:    tokenAuth,
			want:     want{result: Applied, reason: applied},
			events:   []string{"Deployment/metrics-server HerdFlagMetricsServerApplied"},
			flagged:  []string{"kube-system/metrics-server"},
		},
		{
			name:     "dry run",
			objs:     []runtime.Object{msDeployment("kube-system", "metrics-server", tokenArgs)},
			evidence: map[string][]evidence.Sample{named: {msSample("kube-system", "metrics-server")}},
			cfg:      func(c *policy.Config) { c.DryRun = true },
			alert:    tokenAuth,
			want:     want{result: DryRun, reason: "dry run: would have " + applied},
			events:   []string{"Deployment/metrics-server HerdFlagMetricsServerDryRun"},
		},
		{
			name:     "budget spent",
			objs:     []runtime.Object{msDeployment("kube-system", "metrics-server", tokenArgs)},
			evidence: map[string][]evidence.Sample{named: {msSample("kube-system", "metrics-server")}},
			spend:    true,
			alert:    tokenAuth,
			want:     want{result: Refused, guard: guard.MaxActionsPerHour},
			events:   []string{"Deployment/metrics-server HerdFlagMetricsServerRefused"},
		},
		{
			name:     "not the leader",
			objs:     []runtime.Object{msDeployment("kube-system", "metrics-server", tokenArgs)},
			evidence: map[string][]evidence.Sample{named: {msSample("kube-system", "metrics-server")}},
			notLead:  true,
			alert:    tokenAuth,
			want:     want{result: Failed, reason: "flag deployment"},
			events:   []string{"Deployment/metrics-server HerdFlagMetricsServerFailed"},
		},
		{
			name: "a TokenReview storm flags the first Deployment that needs it",
			objs: []runtime.Object{
				msDeployment("kube-system", "metrics-server", tokenArgs, AnnotationKubeletAuth, "token"),
				msDeployment("monitoring", "metrics-server", tokenArgs),
			},
			evidence: map[string][]evidence.Sample{anyMS: {msSample("kube-system", "metrics-server"), msSample("monitoring", "metrics-server")}},
			alert:    storm,
			want:     want{result: Applied, reason: "annotated Deployment monitoring/metrics-server herd.dev/kubelet-auth=token; fix: " + kubeletauth.TokenFix},
			events:   []string{"Deployment/metrics-server HerdFlagMetricsServerNoop", "Deployment/metrics-server HerdFlagMetricsServerApplied"},
			flagged:  []string{"kube-system/metrics-server", "monitoring/metrics-server"},
		},
		{
			name: "a TokenReview storm with every Deployment flagged",
			objs: []runtime.Object{
				msDeployment("kube-system", "metrics-server", tokenArgs, AnnotationKubeletAuth, "token"),
				msDeployment("monitoring", "metrics-server", tokenArgs, AnnotationKubeletAuth, "token"),
			},
			evidence: map[string][]evidence.Sample{anyMS: {msSample("kube-system", "metrics-server"), msSample("monitoring", "metrics-server")}},
			alert:    storm,
			want:     want{result: Noop, has: "Deployment monitoring/metrics-server is already flagged"},
			events:   []string{"Deployment/metrics-server HerdFlagMetricsServerNoop", "Deployment/metrics-server HerdFlagMetricsServerNoop"},
			flagged:  []string{"kube-system/metrics-server", "monitoring/metrics-server"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, oneAnHour(policy.ActionFlagMetricsServer, tc.cfg), tc.objs...)
			f.dryRunPatches()
			f.q.setAll(tc.evidence)
			f.q.all = tc.evErr
			f.setLeader(!tc.notLead)
			if tc.spend {
				f.spend(t, policy.ActionFlagMetricsServer)
			}
			before := map[string]*appsv1.Deployment{}
			for _, o := range tc.objs {
				d := o.(*appsv1.Deployment)
				before[d.Namespace+"/"+d.Name] = getDeployment(t, f, d.Namespace, d.Name)
			}
			d := f.run((&FlagMetricsServer{Env: f.env}).Fire(tc.alert))
			f.checkFired(t, d, tc.want, tc.events...)
			if wantEv := map[bool]int{true: 0, false: 1}[d.Guard == guard.LabelValidation]; len(d.Evidence) != wantEv {
				t.Errorf("evidence %+v", d.Evidence)
			}
			for id, b := range before {
				after := getDeployment(t, f, b.Namespace, b.Name)
				if specJSON(t, after) != specJSON(t, b) {
					t.Errorf("%s: the spec changed", id)
				}
				flagged := false
				for _, x := range tc.flagged {
					flagged = flagged || x == id
				}
				if got := after.Annotations[AnnotationKubeletAuth] == "token"; got != flagged {
					t.Errorf("%s: flagged %v, want %v", id, got, flagged)
				}
				if _, had := b.Annotations[AnnotationKubeletAuth]; !had && flagged && after.Annotations[AnnotationFlaggedAt] != "2025-03-04T10:00:00Z" {
					t.Errorf("%s: flagged-at %q", id, after.Annotations[AnnotationFlaggedAt])
				}
				for k, v := range b.Annotations {
					if after.Annotations[k] != v {
						t.Errorf("%s: annotation %s changed", id, k)
					}
				}
				if !reflect.DeepEqual(after.Labels, b.Labels) {
					t.Errorf("%s: labels changed", id)
				}
			}
			// Every patch is a merge patch of metadata alone, with a
			// resourceVersion precondition.
			for _, p := range f.patches() {
				var body map[string]map[string]any
				if err := json.Unmarshal(p.Patch, &body); err != nil {
					t.Fatal(err)
				}
				if len(body) != 1 || body["metadata"] == nil || len(body["metadata"]) != 2 || body["metadata"]["resourceVersion"] != "11" {
					t.Errorf("patch %s", p.Patch)
				}
				if p.PatchType != types.MergePatchType || p.PatchOptions.FieldManager != FieldManager {
					t.Errorf("patch %s as %s", p.PatchType, p.PatchOptions.FieldManager)
				}
				if f.env.Config.DryRun != reflect.DeepEqual(p.PatchOptions.DryRun, []string{"All"}) {
					t.Errorf("patch DryRun %q in dry-run mode %v", p.PatchOptions.DryRun, f.env.Config.DryRun)
				}
			}
			wantPatches := 0
			if d.Result == Applied || d.Result == DryRun {
				wantPatches = 1
			}
			if n := len(f.patches()); n != wantPatches {
				t.Errorf("%d patches, want %d", n, wantPatches)
			}
			if tc.notLead {
				f.assertRefunded(t, policy.ActionFlagMetricsServer)
			}
		})
	}
}

func TestFlagMetricsServerResolve(t *testing.T) {
	named := resolved("alertname", "HerdMetricsServerTokenAuth", "namespace", "kube-system", "deployment", "metrics-server")
	cases := []struct {
		name      string
		objs      []runtime.Object
		alert     alert.Alert
		want      want
		event     string
		unflagged bool
	}{
		{
			name:  "a TokenReview storm names no Deployment",
			alert: resolved("alertname", "HerdKubeletTokenReviewStorm"),
			want:  want{result: Noop, reason: "the alert names no Deployment; herd's annotation stays until HerdMetricsServerTokenAuth resolves"},
			event: "Lease/herd-responder HerdFlagMetricsServerNoop",
		},
		{
			name:  "invalid deployment label",
			alert: resolved("alertname", "HerdMetricsServerTokenAuth", "namespace", "kube-system", "deployment", "Metrics Server"),
			want:  want{result: Refused, guard: guard.LabelValidation, has: `label deployment="Metrics Server" is not valid`},
			event: "Lease/herd-responder HerdFlagMetricsServerRefused",
		},
		{
			name:  "gone",
			alert: named,
			want:  want{result: Noop, reason: "Deployment kube-system/metrics-server no longer exists"},
			event: "Deployment/metrics-server HerdFlagMetricsServerNoop",
		},
		{
			name:  "never flagged",
			objs:  []runtime.Object{msDeployment("kube-system", "metrics-server", certArgs)},
			alert: named,
			want:  want{result: Noop, reason: "Deployment kube-system/metrics-server carries no herd.dev/kubelet-auth annotation"},
			event: "Deployment/metrics-server HerdFlagMetricsServerNoop",
		},
		{
			name:  "still in token mode",
			objs:  []runtime.Object{msDeployment("kube-system", "metrics-server", tokenArgs, AnnotationKubeletAuth, "token")},
			alert: named,
			want:  want{result: Noop, reason: "Deployment kube-system/metrics-server is still in token mode; the annotation stays"},
			event: "Deployment/metrics-server HerdFlagMetricsServerNoop",
		},
		{
			name:  "fixed",
			objs:  []runtime.Object{msDeployment("kube-system", "metrics-server", certArgs, AnnotationKubeletAuth, "token", AnnotationFlaggedAt, "x", "keep", "me")},
			alert: named,
			want:  want{result: Applied, reason: "removed herd.dev/kubelet-auth from Deployment kube-system/metrics-server: it no longer authenticates with a token"},
			event: "Deployment/metrics-server HerdFlagMetricsServerApplied", unflagged: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, tc.objs...)
			var before string
			if len(tc.objs) > 0 {
				before = specJSON(t, getDeployment(t, f, "kube-system", "metrics-server"))
			}
			d := f.run((&FlagMetricsServer{Env: f.env}).Resolve(tc.alert))
			f.checkDecision(t, d, tc.want, tc.event)
			if !tc.unflagged {
				if w := f.writes(); len(w) != 0 {
					t.Errorf("writes %q", w)
				}
				return
			}
			after := getDeployment(t, f, "kube-system", "metrics-server")
			if specJSON(t, after) != before {
				t.Error("the spec changed")
			}
			if !reflect.DeepEqual(after.Annotations, map[string]string{"keep": "me"}) {
				t.Errorf("annotations %v", after.Annotations)
			}
		})
	}
}
