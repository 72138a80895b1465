package action

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// The triage queries, by position in triageQueries.
const (
	qGhost = iota
	qTooLarge
	qAPIUnavailable
	qAPISlow
	qRelist
	qTokenReview
	qAudit
	qAuditNever
	qAPFRejections
	nQueries
)

func tq(i int) string { return triageQueries("5m", "")[i].query }

func TestTriageQueriesParse(t *testing.T) {
	for _, cluster := range []string{"", "prod", `"} or vector(1) #`} {
		qs := triageQueries("5m", cluster)
		if len(qs) != nQueries {
			t.Fatalf("%d queries", len(qs))
		}
		for _, q := range qs {
			if _, err := parser.NewParser(parser.Options{}).ParseExpr(q.query); err != nil {
				t.Errorf("%s: %v", q.query, err)
			}
			if cluster != "" && !strings.Contains(q.query, `cluster=`+fmt.Sprintf("%q", cluster)) {
				t.Errorf("%s is not scoped to the cluster", q.query)
			}
		}
	}
}

type remediation struct {
	action policy.Action
	alert  alert.Alert
}

type triageFixture struct {
	*fixture
	triage   *Triage
	findings *prometheus.GaugeVec
	mu       sync.Mutex
	calls    []remediation
}

func newTriage(t *testing.T, cfg func(*policy.Config)) *triageFixture {
	tf := &triageFixture{fixture: newFixture(t, cfg)}
	reg := prometheus.NewRegistry()
	tr, err := NewTriage(tf.env, tf.runner, reg)
	if err != nil {
		t.Fatal(err)
	}
	tf.triage, tf.findings = tr, tr.Findings
	if n, err := testutil.GatherAndCount(reg, "herd_responder_findings"); err != nil || n != len(Patterns) {
		t.Fatalf("herd_responder_findings registered with %d series (%v), want one per pattern", n, err)
	}
	// The remediations run through the Runner; these stand-ins record
	// what triage asked for.
	tf.runner.Register(tf.triage)
	for _, act := range []policy.Action{policy.ActionCordon, policy.ActionIsolate, policy.ActionQuarantine, policy.ActionFlagMetricsServer} {
		tf.runner.Register(&remediationAction{name: act, tf: tf})
	}
	return tf
}

// remediationAction records its calls and decides nothing.
type remediationAction struct {
	name policy.Action
	tf   *triageFixture
}

func (r *remediationAction) Name() policy.Action { return r.name }
func (r *remediationAction) Fire(a alert.Alert) Op {
	return Op{Action: r.name, Alert: a, Labels: func(*Case) Outcome {
		r.tf.mu.Lock()
		defer r.tf.mu.Unlock()
		r.tf.calls = append(r.tf.calls, remediation{r.name, a})
		return Nothing("remediated")
	}}
}
func (r *remediationAction) Resolve(a alert.Alert) Op { return r.Fire(a) }

func (tf *triageFixture) gauge(pattern string) float64 {
	return testutil.ToFloat64(tf.findings.WithLabelValues(pattern))
}

func burn() alert.Alert {
	a := firing("alertname", "KubeAPIErrorBudgetBurn", "severity", "critical", "long", "1h", "short", "5m")
	a.GroupKey, a.Receiver = `{}:{alertname="KubeAPIErrorBudgetBurn"}`, "herd"
	return a
}

var (
	ghostSample = sample(1, "identity", "system:node:ghost-1", "node", "ghost-1", "role", "kubelet", "client", "kubelet",
		"source_ip", "10.0.0.9", "reason", "node_deleted", "instance", "herd-exporter-0")
	tooLargeSample = sample(3.5, "role", "kubelet", "client", "kubelet", "resource", "pods")
	relistSample   = sample(2, "role", "cni", "client", "cilium", "resource", "pods", "instance", "x")
)

func patterns(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("%s %g", f.Pattern, f.Score))
	}
	return out
}

func TestTriageRanking(t *testing.T) {
	cases := []struct {
		name     string
		answers  map[int][]evidence.Sample
		want     []string
		findings map[string]float64
	}{
		{
			name:     "nothing",
			want:     nil,
			findings: map[string]float64{},
		},
		{
			name:     "a ghost gets its too-large-RV 504s added, and ranks first",
			answers:  map[int][]evidence.Sample{qGhost: {ghostSample}, qTooLarge: {tooLargeSample}, qRelist: {relistSample}},
			want:     []string{"ghost_client 13.5", "too_large_rv 3.5", "relist_storm 2"},
			findings: map[string]float64{"ghost_client": 1, "too_large_rv": 1, "relist_storm": 1},
		},
		{
			name: "an unavailable APIService outweighs a ghost",
			answers: map[int][]evidence.Sample{
				qGhost: {ghostSample}, qTooLarge: {tooLargeSample}, qRelist: {relistSample},
				qAPIUnavailable: {sample(0, "apiservice", "v1beta1.metrics.k8s.io", "namespace", "kube-system", "service", "metrics-server")},
				qAPISlow:        {sample(2, "apiservice", "v1beta1.custom.metrics.k8s.io")},
				qTokenReview:    {sample(30)},
				qAudit:          {sample(600)},
			},
			want:     []string{"aggregated_api 50", "audit_pipeline 20", "tokenreview_storm 15", "ghost_client 13.5", "aggregated_api 10", "too_large_rv 3.5", "relist_storm 2"},
			findings: map[string]float64{"aggregated_api": 2, "audit_pipeline": 1, "tokenreview_storm": 1, "ghost_client": 1, "too_large_rv": 1, "relist_storm": 1},
		},
		{
			// Without audit logs (docs/apf-measurement.md): a storm counted
			// through APF, its rejections, and no blind-pipeline finding.
			name: "without audit, APF names the client class and resource",
			answers: map[int][]evidence.Sample{
				qRelist:        {sample(25, "role", "cni", "client", "cilium-agent", "resource", "pods", "source", "apf")},
				qAPFRejections: {sample(1.5, "role", "cni", "client", "cilium-agent", "resource", "pods", "priority_level", "workload-high")},
			},
			want:     []string{"relist_storm 25", "apf_rejections 1.5"},
			findings: map[string]float64{"relist_storm": 1, "apf_rejections": 1},
		},
		{
			name:     "an exporter never fed, with nothing measured instead",
			answers:  map[int][]evidence.Sample{qAuditNever: {sample(0)}},
			want:     []string{"audit_pipeline 20"},
			findings: map[string]float64{"audit_pipeline": 1},
		},
		{
			name: "relist storms rank by rate",
			answers: map[int][]evidence.Sample{qRelist: {
				sample(0.6, "client", "a"), sample(40, "client", "b"), sample(7, "client", "c"),
			}},
			want:     []string{"relist_storm 40", "relist_storm 7", "relist_storm 0.6"},
			findings: map[string]float64{"relist_storm": 3},
		},
		{
			name: "two ghosts share the too-large rate",
			answers: map[int][]evidence.Sample{qGhost: {ghostSample, sample(1, "identity", "system:node:ghost-2")},
				qTooLarge: {sample(1, "client", "kubelet"), sample(2, "client", "cilium")}},
			want:     []string{"ghost_client 13", "ghost_client 13", "too_large_rv 2", "too_large_rv 1"},
			findings: map[string]float64{"ghost_client": 2, "too_large_rv": 2},
		},
		{
			name: "at most 10 findings",
			answers: map[int][]evidence.Sample{qRelist: func() []evidence.Sample {
				var s []evidence.Sample
				for i := range 12 {
					s = append(s, sample(float64(i+1), "client", fmt.Sprint(i)))
				}
				return s
			}()},
			want:     []string{"relist_storm 12", "relist_storm 11", "relist_storm 10", "relist_storm 9", "relist_storm 8", "relist_storm 7", "relist_storm 6", "relist_storm 5", "relist_storm 4", "relist_storm 3"},
			findings: map[string]float64{"relist_storm": 10},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tf := newTriage(t, nil)
			// A previous triage's gauges are overwritten, zeros included.
			for _, p := range Patterns {
				tf.findings.WithLabelValues(p).Set(99)
			}
			for i, s := range tc.answers {
				tf.q.set(tq(i), s...)
			}
			d := tf.run(tf.triage.Fire(burn()))
			want{result: Applied}.check(t, d)
			reps := tf.triage.Reports()
			if len(reps) != 1 {
				t.Fatalf("%d reports", len(reps))
			}
			rep := reps[0]
			if got := patterns(rep.Findings); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("findings\n%q\nwant\n%q", got, tc.want)
			}
			for _, p := range Patterns {
				if got := tf.gauge(p); got != tc.findings[p] {
					t.Errorf("herd_responder_findings{pattern=%q} = %g, want %g", p, got, tc.findings[p])
				}
			}
			if n := testutil.CollectAndCount(tf.findings); n != len(Patterns) {
				t.Errorf("%d findings series", n)
			}
			for _, f := range rep.Findings {
				if f.Query == "" || f.Summary == "" || f.Next == "" {
					t.Errorf("finding without query, summary or next: %+v", f)
				}
			}
			if len(d.Evidence) != nQueries {
				t.Errorf("%d evidence checks, want %d", len(d.Evidence), nQueries)
			}
			if got := tf.rec.reasons(); !reflect.DeepEqual(got, []string{"Lease/herd-responder HerdTriageApplied"}) {
				t.Errorf("events %q", got)
			}
			if len(tf.calls) != 0 {
				t.Errorf("remediated with actions.triage.remediate false: %+v", tf.calls)
			}
		})
	}
}

func TestTriageFindingDetails(t *testing.T) {
	tf := newTriage(t, nil)
	tf.q.set(tq(qGhost), ghostSample)
	tf.q.set(tq(qTooLarge), tooLargeSample)
	d := tf.run(tf.triage.Fire(burn()))
	rep := tf.triage.Reports()[0]
	g := rep.Findings[0]
	wantG := Finding{
		Pattern: PatternGhostClient, Score: 13.5,
		Summary: `ghost kubelet (kubelet) as system:node:ghost-1 claims node "ghost-1" from 10.0.0.9 (node_deleted): a removed machine still calling (incident 000)`,
		Query:   "herd:ghost_instance:max{} > 0", Value: 1, Next: "quarantine system:node:ghost-1", Remediation: policy.ActionQuarantine,
		Labels: map[string]string{"identity": "system:node:ghost-1", "node": "ghost-1", "role": "kubelet", "client": "kubelet", "source_ip": "10.0.0.9", "reason": "node_deleted"},
	}
	if !reflect.DeepEqual(g, wantG) {
		t.Errorf("ghost finding\n%+v\nwant\n%+v", g, wantG)
	}
	wantReason := "2 findings, best first: 1. [ghost_client] " + wantG.Summary + "; next: quarantine system:node:ghost-1. 2. [too_large_rv] " +
		`kubelet (kubelet) gets 3.50/s "Too large resource version" 504s on pods, each after ~3 s; next: find the instances: curl -s 'http://herd-exporter.herd.svc:10380/debug/clients?role=kubelet&client=kubelet'.`
	if d.Reason != wantReason {
		t.Errorf("reason\n%s\nwant\n%s", d.Reason, wantReason)
	}
	if rep.Alert != "KubeAPIErrorBudgetBurn" || rep.Fingerprint != "fp-KubeAPIErrorBudgetBurn" || !rep.Time.Equal(t0) || len(rep.Errors) != 0 {
		t.Errorf("report %+v", rep)
	}
}

func TestTriageSummary(t *testing.T) {
	tf := newTriage(t, nil)
	tf.q.errs = map[string]error{tq(qGhost): fmt.Errorf("%w: boom", evidence.ErrUnavailable), tq(qAudit): evidence.ErrUnavailable}
	d := tf.run(tf.triage.Fire(burn()))
	want{result: Applied, reason: "no finding: herd's evidence shows none of the node-side patterns; look at the apiserver's own metrics (apiserver_request_total by resource, verb, code) (2 evidence queries failed)"}.check(t, d)
	if rep := tf.triage.Reports()[0]; len(rep.Errors) != 2 {
		t.Errorf("errors %q", rep.Errors)
	}
	// More than three findings: the summary names three.
	tf = newTriage(t, nil)
	tf.q.set(tq(qRelist), sample(4, "client", "a"), sample(3, "client", "b"), sample(2, "client", "c"), sample(1, "client", "d"), sample(0.5, "client", "e"))
	d = tf.run(tf.triage.Fire(burn()))
	if !strings.HasPrefix(d.Reason, "5 findings, best first: 1. [relist_storm] a () relists  at 4.0/s") || !strings.HasSuffix(d.Reason, " (and 2 more in /debug/triage)") {
		t.Errorf("reason %q", d.Reason)
	}
}

func TestTriageAllQueriesFail(t *testing.T) {
	tf := newTriage(t, func(c *policy.Config) { c.Guards.MaxActionsPerHour[policy.ActionTriage] = 1 })
	for _, p := range Patterns {
		tf.findings.WithLabelValues(p).Set(7)
	}
	tf.q.all = fmt.Errorf("%w: dial tcp: connection refused", evidence.ErrUnavailable)
	d := tf.run(tf.triage.Fire(burn()))
	want{result: Failed, reason: "read evidence"}.check(t, d)
	if !errors.Is(d.Err, alert.ErrTransient) || !errors.Is(d.Err, evidence.ErrUnavailable) || !strings.Contains(d.Err.Error(), "connection refused") {
		t.Errorf("err %v: not transient, or not the cause", d.Err)
	}
	if got := tf.rec.reasons(); !reflect.DeepEqual(got, []string{"Lease/herd-responder HerdTriageFailed"}) {
		t.Errorf("events %q", got)
	}
	if n := len(tf.triage.Reports()); n != 0 {
		t.Errorf("%d reports of a failed triage", n)
	}
	for _, p := range Patterns {
		if got := tf.gauge(p); got != 7 {
			t.Errorf("a failed triage set %s to %g", p, got)
		}
	}
	// The budget was refunded: the retry can run.
	tf.q.all = nil
	want{result: Applied}.check(t, tf.run(tf.triage.Fire(burn())))
}

func TestTriageRemediate(t *testing.T) {
	answers := map[int][]evidence.Sample{
		qGhost: {ghostSample},
		// Two series of one storm: one remediation.
		qRelist:      {relistSample, sample(1, "role", "cni", "client", "cilium", "resource", "pods", "instance", "y")},
		qTokenReview: {sample(30, "cluster", "prod")},
		qTooLarge:    {tooLargeSample},
	}
	onlyCordon := func(c *policy.Config) {
		c.Routes = []policy.Route{{Match: map[string]string{"alertname": "HerdStaleKubelet"}, Action: policy.ActionCordon}}
	}
	cases := []struct {
		name string
		cfg  func(*policy.Config)
		nilR bool
		want []string // action and labels of each call
	}{
		{name: "remediate false", cfg: func(c *policy.Config) { c.Actions.Triage.Remediate = false }},
		{
			name: "remediate true",
			cfg:  func(c *policy.Config) { c.Actions.Triage.Remediate = true },
			want: []string{
				"flag-metrics-server fp-KubeAPIErrorBudgetBurn/triage/0 map[alertname:KubeAPIErrorBudgetBurn cluster:prod]",
				"quarantine fp-KubeAPIErrorBudgetBurn/triage/1 map[alertname:KubeAPIErrorBudgetBurn client:kubelet identity:system:node:ghost-1 node:ghost-1 reason:node_deleted role:kubelet source_ip:10.0.0.9]",
				"isolate fp-KubeAPIErrorBudgetBurn/triage/3 map[alertname:KubeAPIErrorBudgetBurn client:cilium resource:pods role:cni]",
			},
		},
		{
			name: "only enabled actions",
			cfg: func(c *policy.Config) {
				c.Actions.Triage.Remediate = true
				onlyCordon(c)
			},
		},
		{name: "no remediator", cfg: func(c *policy.Config) { c.Actions.Triage.Remediate = true }, nilR: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tf := newTriage(t, tc.cfg)
			if tc.nilR {
				tf.triage.Runner = nil
			}
			for i, s := range answers {
				tf.q.set(tq(i), s...)
			}
			a := burn()
			d := tf.run(tf.triage.Fire(a))
			want{result: Applied}.check(t, d)
			var got []string
			for _, c := range tf.calls {
				got = append(got, fmt.Sprintf("%s %s %v", c.action, c.alert.Fingerprint, c.alert.Labels))
				if c.alert.Status != alert.StatusFiring || !c.alert.StartsAt.Equal(a.StartsAt) || c.alert.GroupKey != a.GroupKey || c.alert.Receiver != a.Receiver {
					t.Errorf("synthesized alert %+v", c.alert)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("remediations\n%q\nwant\n%q", got, tc.want)
			}
			rep := tf.triage.Reports()[0]
			if len(rep.Remediations) != len(tc.want) {
				t.Errorf("%d remediations in the report", len(rep.Remediations))
			}
			// The burn's own labels never leak into a remediation's alert.
			for _, c := range tf.calls {
				if _, ok := c.alert.Labels["severity"]; ok {
					t.Errorf("remediation alert carries the burn's labels: %v", c.alert.Labels)
				}
			}
		})
	}
}

func TestTriageGuards(t *testing.T) {
	tf := newTriage(t, func(c *policy.Config) { c.Guards.MaxActionsPerHour[policy.ActionTriage] = 1 })
	want{result: Applied}.check(t, tf.run(tf.triage.Fire(burn())))
	want{result: Refused, guard: guard.MaxActionsPerHour,
		reason: "1 triage actions in the last hour, the limit is 1 (guards.maxActionsPerHour); pausing triage for 30m0s"}.check(t, tf.run(tf.triage.Fire(burn())))
	a := burn()
	a.Labels["cluster"] = "a\x00b"
	want{result: Refused, guard: guard.LabelValidation}.check(t, tf.run(tf.triage.Fire(a)))
	if got := tf.rec.reasons(); !reflect.DeepEqual(got, []string{"Lease/herd-responder HerdTriageApplied", "Lease/herd-responder HerdTriageRefused", "Lease/herd-responder HerdTriageRefused"}) {
		t.Errorf("events %q", got)
	}
	want{result: Noop, reason: "the burn resolved; triage keeps its last report in /debug/triage"}.check(t,
		tf.run(tf.triage.Resolve(resolved("alertname", "KubeAPIErrorBudgetBurn"))))
}

func TestTriageClusterScope(t *testing.T) {
	tf := newTriage(t, nil)
	a := burn()
	a.Labels["cluster"] = "prod"
	tf.run(tf.triage.Fire(a))
	want := triageQueries("5m", "prod")
	if len(tf.q.queries) != len(want) {
		t.Fatalf("queries %q", tf.q.queries)
	}
	for i, q := range want {
		if tf.q.queries[i] != q.query {
			t.Errorf("query %d: %s, want %s", i, tf.q.queries[i], q.query)
		}
	}
}

func TestTriageReportsBounded(t *testing.T) {
	tf := newTriage(t, func(c *policy.Config) { c.Guards.MaxActionsPerHour[policy.ActionTriage] = 100 })
	for i := range 25 {
		a := burn()
		a.Fingerprint = fmt.Sprint(i)
		tf.run(tf.triage.Fire(a))
	}
	reps := tf.triage.Reports()
	if len(reps) != maxReports || reps[0].Fingerprint != "5" || reps[len(reps)-1].Fingerprint != "24" {
		t.Errorf("%d reports, %s..%s", len(reps), reps[0].Fingerprint, reps[len(reps)-1].Fingerprint)
	}
	// Reports returns a copy.
	reps[0].Alert = "changed"
	if tf.triage.Reports()[0].Alert == "changed" {
		t.Error("Reports shares its slice")
	}
}

// TestTriageRelistStormSkipsOther: unclassified callers (controllers, herd's
// own reads) are not a relist storm to isolate, with or without a cluster.
func TestTriageRelistStormSkipsOther(t *testing.T) {
	for _, cluster := range []string{"", "prod"} {
		for _, q := range triageQueries("5m", cluster) {
			if q.pattern != PatternRelistStorm {
				continue
			}
			if !strings.Contains(q.query, `role!="other"`) {
				t.Errorf("cluster %q: relist storm query %s does not exclude role=\"other\"", cluster, q.query)
			}
			if _, err := parser.NewParser(parser.Options{}).ParseExpr(q.query); err != nil {
				t.Errorf("cluster %q: %s: %v", cluster, q.query, err)
			}
		}
	}
}

// TestTriageWithoutAudit: the findings of the APF measurement mode say
// where their numbers come from and what to do, and a storm counted
// through APF still asks isolate for the client and resource.
func TestTriageWithoutAudit(t *testing.T) {
	tf := newTriage(t, nil)
	tf.q.set(tq(qRelist), sample(25, "role", "cni", "client", "cilium-agent", "resource", "pods", "source", "apf"))
	tf.q.set(tq(qAPFRejections), sample(1.5, "role", "cni", "client", "cilium-agent", "resource", "pods", "priority_level", "workload-high"))
	tf.run(tf.triage.Fire(burn()))
	rep := tf.triage.Reports()[0]
	if len(rep.Findings) != 2 {
		t.Fatalf("findings %+v", rep.Findings)
	}
	r, rej := rep.Findings[0], rep.Findings[1]
	if want := "cilium-agent (cni) LISTs (counted by API Priority and Fairness: pages included, no node known) pods at 25.0/s: every LIST costs apiserver memory and, when consistent, an etcd read (incident 002)"; r.Summary != want {
		t.Errorf("summary %q\nwant    %q", r.Summary, want)
	}
	if r.Remediation != policy.ActionIsolate || !reflect.DeepEqual(r.Labels, map[string]string{"role": "cni", "client": "cilium-agent", "resource": "pods"}) {
		t.Errorf("remediation %s %v", r.Remediation, r.Labels)
	}
	if want := "API Priority and Fairness rejects 1.5/s of cilium-agent (cni) LISTs of pods in priority level workload-high: the level is full, and what else it serves waits or is rejected too"; rej.Summary != want {
		t.Errorf("summary %q\nwant    %q", rej.Summary, want)
	}
	if !strings.Contains(rej.Next, `herd:apf_lists:rate5m{priority_level="workload-high"}`) || rej.Remediation != "" {
		t.Errorf("next %q, remediation %q", rej.Next, rej.Remediation)
	}
}
