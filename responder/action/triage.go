package action

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/responder/guard"
	"github.com/herd-k8s/herd/responder/policy"
)

// ReasonTriage prefixes triage's Event reasons.
const ReasonTriage = "HerdTriage"

// The patterns triage looks for: the incidents of ../shared/background.
const (
	PatternGhostClient      = "ghost_client"
	PatternTooLargeRV       = "too_large_rv"
	PatternAggregatedAPI    = "aggregated_api"
	PatternRelistStorm      = "relist_storm"
	PatternTokenReviewStorm = "tokenreview_storm"
	PatternAuditPipeline    = "audit_pipeline"
	// PatternAPFRejections: API Priority and Fairness rejects a node-side
	// client's LISTs in its own priority level (measured without audit
	// logs, docs/apf-measurement.md).
	PatternAPFRejections = "apf_rejections"
)

// Patterns lists them, for metrics that exist from the start.
var Patterns = []string{PatternGhostClient, PatternTooLargeRV, PatternAggregatedAPI, PatternRelistStorm, PatternTokenReviewStorm, PatternAuditPipeline, PatternAPFRejections}

// Finding is one suspected cause of an error-budget burn.
type Finding struct {
	Pattern string `json:"pattern"`
	// Score ranks findings: roughly the failing or harmful requests per
	// second the cause is worth, with fixed weights for causes whose rate
	// herd cannot see (an unavailable APIService fails every request of
	// its group; a blind audit pipeline hides everything else).
	Score   float64 `json:"score"`
	Summary string  `json:"summary"`
	// Query is the evidence, Value what it returned for this finding.
	Query string  `json:"query"`
	Value float64 `json:"value"`
	// Next is what to do: the remediation herd would run, or a command.
	Next string `json:"next"`
	// Remediation is the action that fixes it, if herd has one; Labels
	// are the alert labels that action takes.
	Remediation policy.Action     `json:"remediation,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// TriageReport is one triage: the alert, the findings best first, what
// could not be read, and the remediations run.
type TriageReport struct {
	Time         time.Time         `json:"time"`
	Alert        string            `json:"alert"`
	Fingerprint  string            `json:"fingerprint"`
	Labels       map[string]string `json:"labels"`
	Findings     []Finding         `json:"findings"`
	Errors       []string          `json:"errors,omitempty"`
	Remediations []Decision        `json:"remediations,omitempty"`
}

// maxFindings bounds a report; maxReports bounds /debug/triage.
const (
	maxFindings = 10
	maxReports  = 20
)

// Triage ranks the causes of a KubeAPIErrorBudgetBurn from herd's evidence
// and, with actions.triage.remediate, runs the remediations its findings
// call for through the Runner, each with its own guards and record.
type Triage struct {
	Env *Env
	// Runner makes the remediations' decisions.
	Runner *Runner
	// Findings is herd_responder_findings{pattern}.
	Findings *prometheus.GaugeVec

	mu      sync.Mutex
	reports []TriageReport
}

// NewTriage returns the triage action; its findings gauge is registered
// with reg (nil: nowhere).
func NewTriage(env *Env, runner *Runner, reg prometheus.Registerer) (*Triage, error) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herd_responder_findings",
		Help: "Findings of the latest triage, by pattern.",
	}, []string{"pattern"})
	for _, p := range Patterns {
		g.WithLabelValues(p)
	}
	if reg != nil {
		if err := reg.Register(g); err != nil {
			return nil, err
		}
	}
	return &Triage{Env: env, Runner: runner, Findings: g}, nil
}

// Name implements Action.
func (*Triage) Name() policy.Action { return policy.ActionTriage }

// query is one evidence query and how its samples become findings.
type triageQuery struct {
	pattern string
	query   string
	find    func(s evidence.Sample) Finding
}

func triageQueries(window, cluster string) []triageQuery {
	sel := evidence.Selector(map[string]string{"cluster": cluster})
	with := func(k, v string) string { return evidence.Selector(map[string]string{"cluster": cluster, k: v}) }
	// nodeSide is sel without the "other" role.
	nodeSide := strings.TrimSuffix(sel, "}")
	if nodeSide != "{" {
		nodeSide += ", "
	}
	nodeSide += `role!="other"}`
	return []triageQuery{
		{PatternGhostClient, `herd:ghost_instance:max` + sel + ` > 0`, func(s evidence.Sample) Finding {
			l := s.Labels
			return Finding{Score: 10, Summary: fmt.Sprintf("ghost %s (%s) as %s claims node %q from %s (%s): a removed machine still calling (incident 000)",
				l["client"], l["role"], l["identity"], l["node"], l["source_ip"], l["reason"]),
				Next: "quarantine " + l["identity"], Remediation: policy.ActionQuarantine,
				Labels: pick(l, "identity", "node", "role", "client", "source_ip", "reason", "cluster")}
		}},
		{PatternTooLargeRV, `sum by (role, client, resource) (herd:too_large_resource_version:rate` + window + sel + `) > 0`, func(s evidence.Sample) Finding {
			l := s.Labels
			return Finding{Score: s.Value, Summary: fmt.Sprintf("%s (%s) gets %.2f/s \"Too large resource version\" 504s on %s, each after ~3 s",
				l["client"], l["role"], s.Value, l["resource"]),
				Next: fmt.Sprintf("find the instances: curl -s 'http://herd-exporter.herd.svc:10380/debug/clients?role=%s&client=%s'", l["role"], l["client"])}
		}},
		{PatternAggregatedAPI, `herd:apiservice_available:max` + sel + ` == 0`, func(s evidence.Sample) Finding {
			l := s.Labels
			return Finding{Score: 50, Summary: fmt.Sprintf("APIService %s (service %s/%s) is unavailable: every request for its group fails with 503 (incident 001)",
				l["apiservice"], l["namespace"], l["service"]),
				Next: "kubectl get apiservice " + l["apiservice"] + " -o yaml; curl -s http://herd-exporter.herd.svc:10380/debug/apiservices"}
		}},
		{PatternAggregatedAPI, `max without (quantile) (herd:apiservice_probe_duration_seconds:histogram_quantile` + with("quantile", "0.99") + `) > 1`, func(s evidence.Sample) Finding {
			l := s.Labels
			return Finding{Score: 5 * s.Value, Summary: fmt.Sprintf("APIService %s answers herd's probes in %.1f s at p99: its group's requests wait as long (incident 001)",
				l["apiservice"], s.Value),
				Next: "curl -s http://herd-exporter.herd.svc:10380/debug/apiservices"}
		}},
		// role="other" is every unclassified caller (controllers, herd's own
		// reads): not a node-side client, and not one client to isolate.
		// Without audit logs the same recording rule counts the client's
		// LISTs through API Priority and Fairness (source="apf").
		{PatternRelistStorm, `herd:relists_by_resource:rate` + window + nodeSide + ` >= 0.5`, func(s evidence.Sample) Finding {
			l := s.Labels
			what := "relists"
			if l["source"] == "apf" {
				what = "LISTs (counted by API Priority and Fairness: pages included, no node known)"
			}
			return Finding{Score: s.Value, Summary: fmt.Sprintf("%s (%s) %s %s at %.1f/s: every LIST costs apiserver memory and, when consistent, an etcd read (incident 002)",
				l["client"], l["role"], what, l["resource"], s.Value),
				Next: fmt.Sprintf("isolate %s's LISTs of %s", l["client"], l["resource"]), Remediation: policy.ActionIsolate,
				Labels: pick(l, "role", "client", "resource", "cluster")}
		}},
		{PatternTokenReviewStorm, `sum without (client) (herd:tokenreviews:rate` + window + with("role", "kubelet") + `) > 1`, func(s evidence.Sample) Finding {
			return Finding{Score: s.Value / 2, Summary: fmt.Sprintf("kubelets create %.1f TokenReviews/s: a caller (usually metrics-server without a client certificate) authenticates to every kubelet with a token (incident 004)", s.Value),
				Next: "flag metrics-server", Remediation: policy.ActionFlagMetricsServer, Labels: pick(s.Labels, "cluster")}
		}},
		// The exporter exports the gauge at 0 until its first event.
		{PatternAuditPipeline, `time() - max without (source, instance, pod, job) (herd_audit_last_event_timestamp_seconds` + sel + ` > 0) > 300`, func(s evidence.Sample) Finding {
			return Finding{Score: 20, Summary: fmt.Sprintf("herd has received no audit event for %.0f s: it is blind, and its other findings may be missing", s.Value),
				Next: "check the apiserver's --audit-webhook-config-file and herd's POST /audit (docs/runbooks/HerdAuditIngestStalled.md)"}
		}},
		// Never fed: blind, unless the cluster is measured through API
		// Priority and Fairness instead (docs/apf-measurement.md).
		{PatternAuditPipeline, `max without (source, instance, pod, job) (herd_audit_last_event_timestamp_seconds` + sel + `) == 0 unless on (cluster) count by (cluster) (herd_measurement_flowschema_info` + with("action", "measure") + `)`, func(evidence.Sample) Finding {
			return Finding{Score: 20, Summary: "herd's exporter has never received an audit event, and no APF measurement schema counts node-side clients instead: herd is blind, and its other findings are missing",
				Next: "feed it audit events (docs/install.md), or turn on the responder's measurement.enabled (docs/apf-measurement.md)"}
		}},
		{PatternAPFRejections, `sum by (role, client, resource, priority_level) (herd:apf_rejected:rate` + window + with("action", "measure") + `) > 0.1`, func(s evidence.Sample) Finding {
			l := s.Labels
			return Finding{Score: s.Value, Summary: fmt.Sprintf("API Priority and Fairness rejects %.1f/s of %s (%s) LISTs of %s in priority level %s: the level is full, and what else it serves waits or is rejected too",
				s.Value, l["client"], l["role"], l["resource"], l["priority_level"]),
				Next: fmt.Sprintf("see who fills the level: sum by (client, resource) (herd:apf_lists:rate%s{priority_level=%q}); kubectl get --raw /debug/api_priority_and_fairness/dump_priority_levels (docs/runbooks/HerdNodeClientRejected.md)",
					window, l["priority_level"])}
		}},
	}
}

func pick(l map[string]string, keys ...string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		if v := l[k]; v != "" {
			out[k] = v
		}
	}
	return out
}

// Fire implements Action: query every pattern, rank the findings, keep
// the report, and run the remediations.
func (t *Triage) Fire(a alert.Alert) Op {
	e := t.Env
	var (
		cluster string
		rep     = TriageReport{Alert: a.Name(), Fingerprint: a.Fingerprint, Labels: a.Labels}
	)
	return Op{
		Action: policy.ActionTriage, Alert: a, Event: EventNames{Reason: ReasonTriage, Verb: "Triage"},
		Labels: func(*Case) Outcome {
			var r *guard.Refusal
			cluster, r = clusterLabel(a)
			return Refuse(r)
		},
		Evidence: func(ctx context.Context, c *Case) Outcome {
			rep.Time = e.now()
			qs := triageQueries(e.Config.Prometheus.RateWindow, cluster)
			for _, q := range qs {
				samples, err := c.Query(ctx, q.query)
				c.AddEvidence(evidence.Check{Query: q.query, Series: len(samples), Confirmed: len(samples) > 0})
				if err != nil {
					rep.Errors = append(rep.Errors, err.Error())
					continue
				}
				for _, s := range samples {
					f := q.find(s)
					f.Pattern, f.Query, f.Value = q.pattern, q.query, s.Value
					rep.Findings = append(rep.Findings, f)
				}
			}
			if len(rep.Errors) == len(qs) {
				return Fail("read evidence", errors.Join(evidence.ErrUnavailable, errors.New(rep.Errors[0])))
			}
			rank(&rep)
			return Continue
		},
		// Triage changes nothing itself: its write records the report and
		// runs the remediations, each a decision of its own action.
		Guards: func(context.Context, *Case) (*Write, Outcome) {
			return &Write{
				What: "triage", Budget: true, Local: true, Done: summarize(rep),
				Apply: func(ctx context.Context, _ bool) error {
					t.record(ctx, a, &rep)
					return nil
				},
			}, Continue
		},
	}
}

// rank credits a ghost with the too-large-RV 504s (its harm), sorts the
// findings best first and keeps the best maxFindings.
func rank(rep *TriageReport) {
	tooLarge := 0.0
	for _, f := range rep.Findings {
		if f.Pattern == PatternTooLargeRV {
			tooLarge += f.Value
		}
	}
	for i := range rep.Findings {
		if rep.Findings[i].Pattern == PatternGhostClient {
			rep.Findings[i].Score += tooLarge
		}
	}
	sort.SliceStable(rep.Findings, func(i, j int) bool { return rep.Findings[i].Score > rep.Findings[j].Score })
	if len(rep.Findings) > maxFindings {
		rep.Findings = rep.Findings[:maxFindings]
	}
}

// record sets the findings gauge, runs the remediations (with
// actions.triage.remediate) and keeps the report for /debug/triage.
func (t *Triage) record(ctx context.Context, a alert.Alert, rep *TriageReport) {
	e := t.Env
	counts := map[string]int{}
	for _, f := range rep.Findings {
		counts[f.Pattern]++
	}
	for _, p := range Patterns {
		t.Findings.WithLabelValues(p).Set(float64(counts[p]))
	}
	if e.Config.Actions.Triage.Remediate && t.Runner != nil {
		done := map[string]bool{}
		for i, f := range rep.Findings {
			if f.Remediation == "" || !e.Config.Enabled(f.Remediation) {
				continue
			}
			key := string(f.Remediation) + fmt.Sprint(f.Labels)
			if done[key] {
				continue
			}
			done[key] = true
			labels := map[string]string{"alertname": a.Name()}
			for k, v := range f.Labels {
				labels[k] = v
			}
			ra := alert.Alert{Status: alert.StatusFiring, Labels: labels, StartsAt: a.StartsAt,
				Fingerprint: fmt.Sprintf("%s/triage/%d", a.Fingerprint, i), GroupKey: a.GroupKey, Receiver: a.Receiver}
			rep.Remediations = append(rep.Remediations, t.Runner.Handle(ctx, f.Remediation, ra))
		}
	}
	t.mu.Lock()
	t.reports = append(t.reports, *rep)
	if len(t.reports) > maxReports {
		t.reports = t.reports[len(t.reports)-maxReports:]
	}
	t.mu.Unlock()
}

func summarize(rep TriageReport) string {
	if len(rep.Findings) == 0 {
		s := "no finding: herd's evidence shows none of the node-side patterns; look at the apiserver's own metrics (apiserver_request_total by resource, verb, code)"
		if len(rep.Errors) > 0 {
			s += fmt.Sprintf(" (%d evidence queries failed)", len(rep.Errors))
		}
		return s
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d findings, best first:", len(rep.Findings))
	for i, f := range rep.Findings {
		if i == 3 {
			fmt.Fprintf(&b, " (and %d more in /debug/triage)", len(rep.Findings)-3)
			break
		}
		fmt.Fprintf(&b, " %d. [%s] %s; next: %s.", i+1, f.Pattern, f.Summary, f.Next)
	}
	return b.String()
}

// Resolve implements Action: a resolved burn needs nothing (and records no
// Event).
func (t *Triage) Resolve(a alert.Alert) Op {
	return Op{Action: policy.ActionTriage, Alert: a, Labels: func(*Case) Outcome {
		return Nothing("the burn resolved; triage keeps its last report in /debug/triage")
	}}
}

// Reports returns the latest triage reports, newest last.
func (t *Triage) Reports() []TriageReport {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]TriageReport(nil), t.reports...)
}
