// Package rules holds the herd mixin (jsonnet), its generated Prometheus rules and their tests.
//
// promtool checks and unit-tests the generated YAML (make rules-check). These tests check what
// promtool cannot: every alert has its annotations and a runbook in docs/runbooks/, every metric
// an expression reads is one herd documents (docs/metrics.md), a recording rule of the mixin, a
// responder metric of SPEC §4 or up, with labels the metric has, and the committed YAML is what
// the jsonnet renders.
package rules

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	jsonnet "github.com/google/go-jsonnet"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	yaml "go.yaml.in/yaml/v2"

	"github.com/herd-k8s/herd/test/metricsdoc"
)

const (
	alertsFile  = "prometheus_alerts.yaml"
	rulesFile   = "prometheus_rules.yaml"
	metricsDoc  = "../docs/metrics.md"
	runbooksDir = "../docs/runbooks"
	runbookURL  = "https://github.com/herd-k8s/herd/blob/main/docs/runbooks/%s.md"
)

// specAlerts are the alerts of SPEC §5, all of them, and the few the issues
// added since (each named with its issue), and only them.
var specAlerts = []string{
	"HerdStampedeRisk", "HerdRelistStorm", "HerdSynchronizedRelist", "HerdStaleKubelet", "HerdGhostNodeClient",
	"HerdTooLargeResourceVersion", "HerdAggregatedAPIUnavailable", "HerdAggregatedAPISlow",
	"HerdAggregatedAPIFlapping", "HerdKubeletTokenReviewStorm", "HerdMetricsServerTokenAuth",
	"HerdAuditIngestStalled", "HerdAuditEventsRejected", "HerdResponderGuardTripped", "HerdResponderDown",
	// Without audit logs (issue 15; docs/apf-measurement.md): the SPEC §5 list needs it added.
	"HerdNodeClientRejected",
	"HerdClusterRevisionRewound", // issue 17: an etcd rewind (incident 000's cause), SPEC §3.3
}

// apiserverMetrics are kube-apiserver's own metrics the mixin reads (through
// _config.apiserverSelector), with their labels as v1.36.3 defines them: the APF measurement
// rules' and the stampede forecast's (k8s.io/apiserver@v0.36.3 pkg/util/flowcontrol/metrics/
// metrics.go; pkg/storage/etcd3/metrics/metrics.go for object sizes and counts; client_golang's
// process collector).
var apiserverMetrics = map[string]metric{
	"apiserver_flowcontrol_dispatched_requests_total":     {Type: "counter", Labels: []string{"priority_level", "flow_schema"}},
	"apiserver_flowcontrol_rejected_requests_total":       {Type: "counter", Labels: []string{"priority_level", "flow_schema", "reason"}},
	"apiserver_flowcontrol_request_wait_duration_seconds": {Type: "histogram", Labels: []string{"priority_level", "flow_schema", "execute"}},
	"apiserver_flowcontrol_current_executing_seats":       {Type: "gauge", Labels: []string{"priority_level", "flow_schema"}},
	"apiserver_flowcontrol_current_limit_seats":           {Type: "gauge", Labels: []string{"priority_level"}},
	"apiserver_flowcontrol_nominal_limit_seats":           {Type: "gauge", Labels: []string{"priority_level"}},
	"apiserver_resource_size_estimate_bytes":              {Type: "gauge", Labels: []string{"group", "resource"}},
	"apiserver_resource_objects":                          {Type: "gauge", Labels: []string{"group", "resource"}},
	"process_resident_memory_bytes":                       {Type: "gauge"},
}

// targetLabels are attached by the scrape (target labels, relabelling), not by herd; cluster
// is the mixin's default clusterLabel. exported_* appear when a scrape without honor_labels
// renames herd's own namespace, service, node or pod labels.
var targetLabels = []string{"job", "instance", "pod", "namespace", "service", "endpoint", "container", "cluster",
	"exported_namespace", "exported_service", "exported_node", "exported_pod"}

// metric is a family the rules may read: documented, SPEC §4's or kube-apiserver's.
type metric = metricsdoc.Family

type ruleFile struct {
	Groups []struct {
		Name string `yaml:"name"`
		// Interval is a group's own evaluation interval (the fast path's).
		Interval string `yaml:"interval"`
		Rules    []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert         string            `yaml:"alert"`
	Record        string            `yaml:"record"`
	Expr          string            `yaml:"expr"`
	For           string            `yaml:"for"`
	KeepFiringFor string            `yaml:"keep_firing_for"`
	Labels        map[string]string `yaml:"labels"`
	Annotations   map[string]string `yaml:"annotations"`
}

func load(t *testing.T, path string) []rule {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v (run make rules)", path, err)
	}
	var f ruleFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s: no rules", path)
	}
	return rules
}

func TestAlerts(t *testing.T) {
	alerts := load(t, alertsFile)
	var names []string
	for _, r := range alerts {
		if r.Alert == "" {
			t.Errorf("%s holds a recording rule %q: recording rules belong in %s", alertsFile, r.Record, rulesFile)
			continue
		}
		names = append(names, r.Alert)
		t.Run(r.Alert, func(t *testing.T) {
			switch r.Labels["severity"] {
			case "warning", "critical":
			default:
				t.Errorf("severity %q, want warning or critical", r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("no %s annotation", a)
				}
			}
			if !strings.Contains(r.Annotations["description"], "`") {
				t.Errorf("description names no command to run next (in backquotes): %q", r.Annotations["description"])
			}
			if want := fmt.Sprintf(runbookURL, r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("runbook_url %q, want %q", r.Annotations["runbook_url"], want)
			}
			// The runbook engineer writes docs/runbooks/<Alert>.md: every alert must have one.
			if _, err := os.Stat(filepath.Join(runbooksDir, r.Alert+".md")); err != nil {
				t.Errorf("runbook missing: %v", err)
			}
			if _, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr); err != nil {
				t.Errorf("expr does not parse: %v", err)
			}
		})
	}
	slices.Sort(names)
	// An alert may have a rule per source of its data (HerdSynchronizedRelist: the exporter's
	// wave gauge, and APF's counts in the measurement mode).
	names = slices.Compact(names)
	want := slices.Clone(specAlerts)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("alerts %v, want exactly SPEC §5's and the issues' %v", names, want)
	}
}

// selectors returns every vector selector of expr (those inside range selectors included).
func selectors(t *testing.T, expr string) []*parser.VectorSelector {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%q does not parse: %v", expr, err)
		return nil
	}
	var vs []*parser.VectorSelector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if v, ok := n.(*parser.VectorSelector); ok {
			vs = append(vs, v)
		}
		return nil
	})
	return vs
}

func selectorName(v *parser.VectorSelector) string {
	if v.Name != "" {
		return v.Name
	}
	for _, m := range v.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// lookup finds the metric family a series name belongs to (histograms: _bucket, _count, _sum).
func lookup(name string, families map[string]metric) (metric, bool) {
	if m, ok := families[name]; ok {
		return m, true
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if m, ok := families[base]; ok && m.Type == "histogram" {
				if suffix == "_bucket" {
					m.Labels = append(slices.Clone(m.Labels), "le")
				}
				return m, true
			}
		}
	}
	return metric{}, false
}

func TestRuleMetrics(t *testing.T) {
	documented, err := metricsdoc.Read(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	for _, extra := range []map[string]metric{metricsdoc.SpecResponder, apiserverMetrics} {
		for name, m := range extra {
			if _, ok := documented[name]; !ok {
				documented[name] = m
			}
		}
	}
	documented["up"] = metric{Type: "gauge"}

	records := load(t, rulesFile)
	recorded := map[string]bool{}
	for _, r := range records {
		if r.Record == "" {
			t.Errorf("%s holds an alert %q: alerts belong in %s", rulesFile, r.Alert, alertsFile)
			continue
		}
		// level:metric:operations; the forecast's model (herd:stampede_peak_bytes, ...)
		// names quantities, not aggregations of one metric, and has no operation.
		if n := strings.Count(r.Record, ":"); !strings.HasPrefix(r.Record, "herd:") || n != 2 && !(n == 1 && strings.HasPrefix(r.Record, "herd:stampede_")) {
			t.Errorf("recording rule %q: want herd:<metric>:<aggregation> (or herd:stampede_<quantity>)", r.Record)
		}
		recorded[r.Record] = true
	}

	all := append(load(t, alertsFile), records...)
	used := map[string]bool{}
	for _, r := range all {
		name := r.Alert + r.Record
		for _, v := range selectors(t, r.Expr) {
			series := selectorName(v)
			if series == "" {
				t.Errorf("%s: selector %s has no metric name", name, v)
				continue
			}
			used[series] = true
			if recorded[series] {
				continue
			}
			m, ok := lookup(series, documented)
			if !ok {
				t.Errorf("%s reads %s: not in docs/metrics.md, not a recording rule of the mixin, not a responder metric (SPEC §4), not a kube-apiserver metric the mixin reads, not up", name, series)
				continue
			}
			for _, lm := range v.LabelMatchers {
				if lm.Name == labels.MetricName || slices.Contains(m.Labels, lm.Name) || slices.Contains(targetLabels, lm.Name) {
					continue
				}
				t.Errorf("%s: %s has no label %q (labels: %v)", name, series, lm.Name, m.Labels)
			}
		}
	}
	// Every recording rule is read by an alert, or is there for the dashboard: list those.
	for r := range recorded {
		if !used[r] {
			t.Logf("recording rule %s is read by no rule (dashboard only)", r)
		}
	}
}

// TestGeneratedUpToDate renders the mixin in process and compares it with the committed YAML
// (make rules-check does the same with the jsonnet tool, plus the dashboard JSON).
func TestGeneratedUpToDate(t *testing.T) {
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{"."}})
	out, err := vm.EvaluateFileMulti("generate.jsonnet")
	if err != nil {
		t.Fatalf("generate.jsonnet: %v", err)
	}
	for _, f := range []string{alertsFile, rulesFile} {
		s, ok := out[f]
		if !ok {
			t.Errorf("generate.jsonnet renders no %s", f)
			continue
		}
		// Each field is a JSON string holding the YAML document; jsonnet -S writes it raw,
		// followed by a newline.
		var rendered string
		if err := json.Unmarshal([]byte(s), &rendered); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		rendered += "\n"
		committed, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if rendered != string(committed) {
			t.Errorf("%s is stale: run make rules", f)
		}
	}
}

// TestConfigOverridesReachRunbookURLs: a user who vendors the mixin and sets
// _config.runbookURLPattern (rules/README.md) gets their URLs on every alert.
func TestConfigOverridesReachRunbookURLs(t *testing.T) {
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{"."}})
	out, err := vm.EvaluateAnonymousSnippet("override.jsonnet", `
local m = (import 'mixin.libsonnet') + { _config+:: { runbookURLPattern: 'https://runbooks.example/%s' } };
std.uniq(std.sort([r.annotations.runbook_url for g in m.prometheusAlerts.groups for r in g.rules]))`)
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	if err := json.Unmarshal([]byte(out), &urls); err != nil {
		t.Fatal(err)
	}
	if len(urls) != len(specAlerts) {
		t.Fatalf("got %d distinct runbook URLs, want one per alert (%d): %v", len(urls), len(specAlerts), urls)
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, "https://runbooks.example/Herd") {
			t.Errorf("runbook_url %q ignores the _config override", u)
		}
	}
}

// render evaluates the mixin with _config overrides (a JSON object) and returns its alerts and
// recording rules.
func render(t *testing.T, overrides string) (alerts, records map[string]string) {
	t.Helper()
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{"."}})
	vm.ExtCode("overrides", overrides)
	out, err := vm.EvaluateAnonymousSnippet("mode.jsonnet", `
local m = (import 'mixin.libsonnet') + { _config+:: std.extVar('overrides') };
{ alerts: [[r.alert, r.expr] for g in m.prometheusAlerts.groups for r in g.rules],
  records: [[r.record, r.expr] for g in m.prometheusRules.groups for r in g.rules] }`)
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Alerts, Records [][2]string }
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	alerts, records = map[string]string{}, map[string]string{}
	for _, a := range v.Alerts {
		alerts[a[0]] += a[1]
	}
	for _, r := range v.Records {
		records[r[0]] += r[1]
	}
	return alerts, records
}

// TestNodeClientSource: _config.nodeClientSource chooses where the shared recording rules count
// from. 'audit' is the mixin without APF rules; 'apf' reads APF alone and drops the audit feed's
// alerts; 'both' (the default, the committed files) merges them.
func TestNodeClientSource(t *testing.T) {
	auditAlerts, auditRecords := render(t, `{nodeClientSource: 'audit'}`)
	apfAlerts, apfRecords := render(t, `{nodeClientSource: 'apf'}`)
	bothAlerts, bothRecords := render(t, `{}`)
	const shared = "herd:relists_by_resource:rate5m"

	if strings.Contains(auditRecords[shared], "apiserver_flowcontrol") || auditRecords["herd:apf_lists:rate5m"] != "" ||
		auditAlerts["HerdNodeClientRejected"] != "" || strings.Contains(auditAlerts["HerdAuditIngestStalled"], "herd_measurement_flowschema_info") {
		t.Errorf("audit mode has APF rules: %q", auditRecords[shared])
	}
	if strings.Contains(apfRecords[shared], "herd:relists:rate5m") || !strings.Contains(apfRecords[shared], "herd:apf_lists:rate5m") ||
		strings.Contains(apfRecords["herd:instances_relisted:increase2m"], "herd_relists_total") {
		t.Errorf("apf mode reads the audit feed: %q", apfRecords[shared])
	}
	for _, a := range []string{"HerdAuditIngestStalled", "HerdAuditEventsRejected"} {
		if _, ok := apfAlerts[a]; ok {
			t.Errorf("apf mode keeps %s: there is no audit feed to watch", a)
		}
		if _, ok := bothAlerts[a]; !ok {
			t.Errorf("both mode lacks %s", a)
		}
	}
	for _, a := range []string{"HerdNodeClientRejected", "HerdRelistStorm", "HerdSynchronizedRelist"} {
		if apfAlerts[a] == "" || bothAlerts[a] == "" {
			t.Errorf("%s missing in apf or both mode", a)
		}
	}
	if !strings.Contains(bothRecords[shared], "herd:relists:rate5m") || !strings.Contains(bothRecords[shared], "or on (cluster, role, client, resource)") {
		t.Errorf("both mode does not merge: %q", bothRecords[shared])
	}
	// The audit expression is kept whole inside the merged one.
	if !strings.Contains(bothRecords[shared], strings.TrimSpace(auditRecords[shared])) {
		t.Errorf("both mode changed the audit expression:\n%s\nnot in\n%s", auditRecords[shared], bothRecords[shared])
	}

	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{"."}})
	if _, err := vm.EvaluateAnonymousSnippet("bad.jsonnet", `((import 'mixin.libsonnet') + { _config+:: { nodeClientSource: 'logs' } }).prometheusRules`); err == nil ||
		!strings.Contains(err.Error(), "_config.nodeClientSource must be 'audit', 'apf' or 'both', not logs") {
		t.Errorf("an unknown nodeClientSource: %v", err)
	}
}
