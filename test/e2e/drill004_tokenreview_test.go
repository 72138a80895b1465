package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/stack"
)

const (
	drillTRNodes = 25 // kubelets reviewing tokens: tokenReviewStormMinNodes is 20
	drillTREvery = 800 * time.Millisecond
)

// TestDrill004TokenReviewStorm is incident 004: metrics-server runs without
// a kubelet client certificate, so it authenticates to every kubelet with
// its service-account token and every kubelet creates a TokenReview per
// scrape. With 25 nodes' kubelets reviewing its token, herd sees the
// TokenReview storm and metrics-server's token mode; both alerts lead to
// flag-metrics-server, which annotates the Deployment once and never
// touches its spec.
func TestDrill004TokenReviewStorm(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var created *appsv1.Deployment
	s := startDrill(ctx, t, drillSetup{
		Nodes: drillTRNodes,
		// The storm's alert first, then metrics-server's own, so the
		// drill sees one action and one no-op.
		Overrides: map[string]any{"metricsServerTokenAuthFor": "45s"},
		Objects: func(ctx context.Context, s *stack.Stack) error {
			var err error
			created, err = createMetricsServer(ctx, s.Admin)
			return err
		},
	})
	defer s.loops.wg.Wait()
	defer cancel()

	reviewing := herdtest.NewPrereq("the kubelets review metrics-server's token", func(t *testing.T) {
		// metrics-server scrapes every kubelet with its token; each kubelet
		// asks the apiserver whether the token is good.
		token := s.CP.Token(controlplane.MetricsServer)
		for i := 1; i <= drillTRNodes; i++ {
			kubelet, err := nodesim.NewKubelet(s.CP, stack.NodeName(i), nodesim.Options{SourceIP: stack.NodeIP(i)})
			if err != nil {
				t.Fatal(err)
			}
			s.t.Cleanup(kubelet.Close) // the loops outlive this step
			s.loops.run(ctx, "tokenreview", drillTREvery, func(ctx context.Context) (nodesim.Result, error) {
				return kubelet.CreateTokenReview(ctx, token)
			})
		}
		s.mark(t, "the kubelets of %d nodes review metrics-server's token every %v (%.0f TokenReviews/s)", drillTRNodes, drillTREvery, float64(drillTRNodes)/drillTREvery.Seconds())
	})
	alerted := herdtest.NewPrereq("HerdKubeletTokenReviewStorm delivered", func(t *testing.T) {
		reviewing.Need(t)
		s.waitDelivered(t, 2*time.Minute, "HerdKubeletTokenReviewStorm", map[string]string{"role": "kubelet"})
	})
	var flagged, again stack.Decision
	flagging := herdtest.NewPrereq("flag-metrics-server decided for the storm", func(t *testing.T) {
		alerted.Need(t)
		flagged = s.waitDecision(t, 30*time.Second, "flag-metrics-server for the TokenReview storm", func(d stack.Decision) bool {
			return d.Action == "flag-metrics-server" && d.Status == "firing" && d.Alert == "HerdKubeletTokenReviewStorm"
		})
		s.logf(t, "flag-metrics-server %s: %s", flagged.Result, flagged.Reason)
	})
	flaggedTwice := herdtest.NewPrereq("flag-metrics-server decided for HerdMetricsServerTokenAuth", func(t *testing.T) {
		flagging.Need(t)
		s.waitDelivered(t, 2*time.Minute, "HerdMetricsServerTokenAuth", map[string]string{"namespace": "kube-system", "deployment": "metrics-server", "mode": "token"})
		again = s.waitDecision(t, 30*time.Second, "flag-metrics-server for HerdMetricsServerTokenAuth", func(d stack.Decision) bool {
			return d.Action == "flag-metrics-server" && d.Status == "firing" && d.Alert == "HerdMetricsServerTokenAuth"
		})
	})

	t.Run("herd sees metrics-server in token mode", func(t *testing.T) {
		if _, err := s.Prom.WaitForQuery(ctx, `herd_metrics_server_kubelet_auth{namespace="kube-system", deployment="metrics-server", mode="token"}`, func(v model.Vector) bool {
			return len(v) == 1 && v[0].Value == 1
		}); err != nil {
			t.Errorf("metrics-server runs without --kubelet-client-certificate: %v", err)
		}
	})
	t.Run("HerdKubeletTokenReviewStorm fires with every reviewing node", func(t *testing.T) {
		alerted.Need(t)
		if v, ok := s.query(ctx, t, `herd:tokenreview_nodes:max`); !ok || v != drillTRNodes {
			t.Errorf("herd:tokenreview_nodes:max = %v (%v), want %d", v, ok, drillTRNodes)
		}
		if v, ok := s.query(ctx, t, `sum(herd:tokenreviews:rate`+rateWindow+`{role="kubelet"})`); ok {
			t.Logf("kubelets' TokenReviews: %.1f/s in herd's evidence", v)
		}
	})
	t.Run("flag-metrics-server annotates metrics-server", func(t *testing.T) {
		flagging.Need(t)
		if flagged.Result != "applied" || flagged.Target != "deployment/kube-system/metrics-server" {
			t.Errorf("flag-metrics-server on HerdKubeletTokenReviewStorm: %+v, want applied to deployment/kube-system/metrics-server", flagged)
		}
		checkEvent(ctx, t, s.Admin, "Deployment", "HerdFlagMetricsServerApplied")
	})
	t.Run("the second alert for the same fix is a no-op", func(t *testing.T) {
		flaggedTwice.Need(t)
		if again.Result != "noop" {
			t.Errorf("flag-metrics-server on HerdMetricsServerTokenAuth after the flag: %+v, want noop", again)
		}
	})
	t.Run("metrics-server is patched once and its spec never", func(t *testing.T) {
		flaggedTwice.Need(t)
		// The annotation, and the spec exactly as created. (A Deployment's
		// generation counts annotation changes too, so the spec itself is
		// compared.)
		ms, err := s.Admin.AppsV1().Deployments("kube-system").Get(ctx, "metrics-server", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ms.Annotations["herd.dev/kubelet-auth"] != "token" {
			t.Errorf("metrics-server annotations %v, want herd.dev/kubelet-auth=token", ms.Annotations)
		}
		if !equality.Semantic.DeepEqual(ms.Spec, created.Spec) {
			t.Errorf("metrics-server's spec changed:\nbefore %+v\nafter  %+v", created.Spec, ms.Spec)
		}
		s.mark(t, "metrics-server annotated herd.dev/kubelet-auth=token (generation %d -> %d), spec unchanged", created.Generation, ms.Generation)
		var patches []auditRecord
		for _, w := range writesBy(t, s.AuditLogPath, stack.ResponderUser) {
			switch {
			case w.Bookkeeping() || w.ObjectRef == nil:
			case w.On("deployments", "metrics-server") && !w.DryRun():
				patches = append(patches, w)
			default:
				t.Errorf("the responder wrote to %s", w)
			}
		}
		if len(patches) != 1 || patches[0].Verb != "patch" {
			t.Errorf("the responder's writes to metrics-server: %v, want exactly one patch", patches)
		}
	})
	t.Run("every TokenReview is created", func(t *testing.T) {
		flaggedTwice.Need(t) // the storm ran through both alerts
		tally := s.stopLoad(t, cancel, "tokenreview")
		if tally.Errors > 0 || tally.Codes[http.StatusCreated] != tally.Requests {
			t.Errorf("TokenReviews %+v, want every one created (201)", tally)
		}
	})
}
