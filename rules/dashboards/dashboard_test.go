// Package dashboards holds the herd mixin's Grafana dashboard (jsonnet) and its tests.
//
// The tests evaluate the jsonnet in process (go-jsonnet), so they need no jsonnet binary, and check
// that every query parses as PromQL and references only metrics herd documents (docs/metrics.md), the
// responder metrics of SPEC §4, or recording rules the mixin defines (rules/prometheus_rules.yaml).
package dashboards

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	jsonnet "github.com/google/go-jsonnet"
	"github.com/google/go-jsonnet/formatter"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	yaml "go.yaml.in/yaml/v2"

	"github.com/herd-k8s/herd/test/grafana"
	"github.com/herd-k8s/herd/test/metricsdoc"
)

const (
	rulesDir      = ".."
	docsMetrics   = "../../docs/metrics.md"
	recordedRules = "../prometheus_rules.yaml"
	renderedJSON  = "../dashboards_out/herd.json"
	dashboardFile = "herd.json"
)

// metric is a family a query may select: documented, SPEC §4's, or a
// recording rule (Type "record").
type metric = metricsdoc.Family

// targetLabels are attached by Prometheus (scrape config, relabelling), not by herd.
var targetLabels = []string{"job", "instance", "pod", "namespace", "service", "endpoint", "container"}

// rendered is what the jsonnet evaluation returns.
type rendered struct {
	Dashboard         map[string]any `json:"dashboard"`
	ClusterLabel      string         `json:"clusterLabel"`
	ExporterSelector  string         `json:"exporterSelector"`
	ResponderSelector string         `json:"responderSelector"`
}

func evaluate(t *testing.T, entry string) rendered {
	t.Helper()
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{rulesDir, filepath.Join(rulesDir, "vendor")}})
	snippet := fmt.Sprintf(`local m = import %q; {
  dashboard: m.grafanaDashboards[%q],
  clusterLabel: m._config.clusterLabel,
  exporterSelector: m._config.herdExporterSelector,
  responderSelector: m._config.herdResponderSelector,
}`, entry, dashboardFile)
	out, err := vm.EvaluateAnonymousSnippet("dashboard_test.jsonnet", snippet)
	if err != nil {
		t.Fatalf("evaluate %s: %v", entry, err)
	}
	var r rendered
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("decode %s: %v", entry, err)
	}
	return r
}

// entries are the jsonnet files that produce the dashboard: the dashboards file on its own (with its
// defaults) and, once it exists, the whole mixin (with config.libsonnet's selectors).
func entries(t *testing.T) []string {
	e := []string{"dashboards/dashboards.libsonnet"}
	if _, err := os.Stat(filepath.Join(rulesDir, "mixin.libsonnet")); err == nil {
		e = append(e, "mixin.libsonnet")
	} else {
		t.Logf("rules/mixin.libsonnet not found: checking the dashboards file on its own only")
	}
	return e
}

func TestDashboards(t *testing.T) {
	known, err := metricsdoc.Read(docsMetrics)
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range metricsdoc.SpecResponder {
		if _, ok := known[name]; !ok {
			known[name] = m
		}
	}
	records := recordingRules(t)
	for _, entry := range entries(t) {
		t.Run(strings.TrimSuffix(filepath.Base(entry), ".libsonnet"), func(t *testing.T) {
			r := evaluate(t, entry)
			c := checker{t: t, known: known, records: records, r: r, vars: variables(t, r.Dashboard)}
			c.dashboard()
		})
	}
}

// TestRenderedUpToDate compares the committed rules/dashboards_out/herd.json with the mixin's output.
func TestRenderedUpToDate(t *testing.T) {
	committed, err := os.ReadFile(renderedJSON)
	if err != nil {
		t.Fatalf("%v: the rendered dashboard is committed; regenerate it with make rules", err)
	}
	var got map[string]any
	if err := json.Unmarshal(committed, &got); err != nil {
		t.Fatalf("%s: %v", renderedJSON, err)
	}
	want := evaluate(t, "mixin.libsonnet").Dashboard
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s is stale: run make rules", renderedJSON)
	}
}

// TestFormatted fails when jsonnetfmt would change a file under rules/dashboards.
func TestFormatted(t *testing.T) {
	files, err := filepath.Glob("*sonnet")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no jsonnet files found")
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out, err := formatter.Format(f, string(src), formatter.DefaultOptions())
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if out != string(src) {
			t.Errorf("%s is not formatted: run jsonnetfmt -i rules/dashboards/%s", f, f)
		}
	}
}

// recordingRules returns the `herd:` recording rules of rules/prometheus_rules.yaml, if it exists.
func recordingRules(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(recordedRules)
	if os.IsNotExist(err) {
		t.Logf("%s not found: no recording rules allowed", recordedRules)
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Record string `yaml:"record"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", recordedRules, err)
	}
	records := map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if strings.HasPrefix(r.Record, "herd:") {
				records[r.Record] = true
			}
		}
	}
	return records
}

func variables(t *testing.T, d map[string]any) map[string]bool {
	vars := map[string]bool{}
	for _, v := range grafana.Variables(d) {
		name, _ := v["name"].(string)
		if name == "" || vars[name] {
			t.Errorf("template variable with an empty or duplicate name %q", name)
		}
		vars[name] = true
	}
	for _, want := range []string{"datasource", "cluster", "job"} {
		if !vars[want] {
			t.Errorf("no %q template variable", want)
		}
	}
	return vars
}

type checker struct {
	t       *testing.T
	known   map[string]metric
	records map[string]bool
	r       rendered
	vars    map[string]bool
}

func (c *checker) dashboard() {
	t, d := c.t, c.r.Dashboard
	if v, _ := d["schemaVersion"].(float64); v != 39 {
		t.Errorf("schemaVersion = %v, want 39", d["schemaVersion"])
	}
	for _, k := range []string{"uid", "title"} {
		if s, _ := d[k].(string); s == "" {
			t.Errorf("dashboard has no %s", k)
		}
	}

	for _, v := range grafana.Variables(d) {
		c.variable(v)
	}
	for _, a := range grafana.List(d["annotations"], "list") {
		if expr, ok := a["expr"].(string); ok {
			c.query(fmt.Sprintf("annotation %q", a["name"]), expr)
		}
	}

	panels := grafana.Panels(d)
	if len(panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	ids := map[float64]string{}
	var boxes []box
	queries := 0
	for _, p := range panels {
		title, _ := p["title"].(string)
		typ, _ := p["type"].(string)
		id, ok := p["id"].(float64)
		if !ok {
			t.Errorf("panel %q has no id", title)
		} else if prev, dup := ids[id]; dup {
			t.Errorf("panels %q and %q share id %v", prev, title, id)
		} else {
			ids[id] = title
		}
		b, err := gridPos(p)
		if err != nil {
			t.Errorf("panel %q: %v", title, err)
		} else {
			for _, o := range boxes {
				if b.overlaps(o) {
					t.Errorf("panel %q %+v overlaps panel %q %+v", title, b, o.title, o)
				}
			}
			boxes = append(boxes, b)
		}
		if typ == "row" {
			continue
		}
		if title == "" {
			t.Errorf("panel %d has no title", int(id))
		}
		if desc, _ := p["description"].(string); desc == "" {
			t.Errorf("panel %q has no description", title)
		}
		if uid := dsUID(p["datasource"]); uid != "${datasource}" {
			t.Errorf("panel %q: datasource uid %q, want ${datasource}", title, uid)
		}
		targets := grafana.List(p, "targets")
		if len(targets) == 0 {
			t.Errorf("panel %q has no targets", title)
		}
		refIDs := map[string]bool{}
		for _, tg := range targets {
			ref, _ := tg["refId"].(string)
			if ref == "" || refIDs[ref] {
				t.Errorf("panel %q: empty or duplicate refId %q", title, ref)
			}
			refIDs[ref] = true
			if uid := dsUID(tg["datasource"]); uid != "${datasource}" {
				t.Errorf("panel %q target %s: datasource uid %q, want ${datasource}", title, ref, uid)
			}
			expr, _ := tg["expr"].(string)
			c.query(fmt.Sprintf("panel %q target %s", title, ref), expr)
			queries++
		}
	}
	t.Logf("%d panels, %d queries checked", len(panels), queries)
}

func (c *checker) variable(v map[string]any) {
	if v["type"] != "query" {
		return
	}
	name := v["name"]
	if dsUID(v["datasource"]) != "${datasource}" {
		c.t.Errorf("variable %v: datasource is not ${datasource}", name)
	}
	q, _ := v["definition"].(string)
	if obj, ok := v["query"].(map[string]any); ok {
		if s, _ := obj["query"].(string); s != q {
			c.t.Errorf("variable %v: query %q differs from definition %q", name, s, q)
		}
	}
	selector, _, ok := grafana.LabelValues(q)
	if !ok {
		c.t.Errorf("variable %v: %q is not label_values(selector, label)", name, q)
		return
	}
	expr, err := c.substitute(selector)
	if err != nil {
		c.t.Errorf("variable %v: %v", name, err)
		return
	}
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		c.t.Errorf("variable %v: %q: %v", name, expr, err)
		return
	}
	vs, ok := e.(*parser.VectorSelector)
	if !ok {
		c.t.Errorf("variable %v: %q is not a selector", name, selector)
		return
	}
	scope := scopeCluster
	if name == "cluster" {
		scope = 0
	}
	c.selector(fmt.Sprintf("variable %v", name), vs, scope)
}

// substitute replaces Grafana's variables with values PromQL accepts: durations for the interval
// and range variables, VAR_<name> for the dashboard's own variables.
func (c *checker) substitute(expr string) (string, error) {
	return grafana.Substitute(expr, func(name string) (string, bool) {
		switch name {
		case "__rate_interval", "__interval", "__range":
			return "5m", true
		case "__interval_ms", "__range_ms":
			return "300000", true
		case "__range_s":
			return "300", true
		}
		return "VAR_" + name, c.vars[name]
	})
}

// query checks one PromQL expression of a panel or an annotation.
func (c *checker) query(where, expr string) {
	t := c.t
	if strings.TrimSpace(expr) == "" {
		t.Errorf("%s: empty expr", where)
		return
	}
	sub, err := c.substitute(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	e, err := parser.NewParser(parser.Options{}).ParseExpr(sub)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, sub, err)
		return
	}
	selectors := 0
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			selectors++
			c.selector(where, n, scopeCluster|scopeJob)
		case *parser.AggregateExpr:
			c.grouping(where, n)
		}
		return nil
	})
	if selectors == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
}

// family resolves a selected series name to its documented family: the metric, its type and the
// labels it may carry; ok is false when herd does not export it.
func (c *checker) family(name string) (string, metric, bool) {
	if c.records[name] {
		return name, metric{Type: "record"}, true
	}
	if m, ok := c.known[name]; ok && m.Type != "histogram" && m.Type != "summary" {
		return name, m, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		m, ok := c.known[base]
		if !ok || (m.Type != "histogram" && !(m.Type == "summary" && suffix != "_bucket")) {
			continue
		}
		if suffix == "_bucket" {
			m.Labels = append(slices.Clone(m.Labels), "le")
		}
		return base, m, true
	}
	return "", metric{}, false
}

// Scopes a selector must carry.
const (
	scopeCluster = 1 << iota
	scopeJob
)

func (c *checker) selector(where string, vs *parser.VectorSelector, scope int) {
	t := c.t
	name := vs.Name
	if name == "" {
		t.Errorf("%s: selector %s has no metric name", where, vs)
		return
	}
	base, m, ok := c.family(name)
	if !ok {
		if m, hist := c.known[name]; hist {
			t.Errorf("%s: %s is a %s: select its _bucket, _sum or _count series", where, name, m.Type)
		} else {
			t.Errorf("%s: %s is not documented in docs/metrics.md, a SPEC §4 responder metric or a herd: recording rule", where, name)
		}
		return
	}
	responder := strings.HasPrefix(base, "herd_responder_")
	byName := map[string][]*labels.Matcher{}
	for _, lm := range vs.LabelMatchers {
		if lm.Name == labels.MetricName {
			continue
		}
		byName[lm.Name] = append(byName[lm.Name], lm)
		if m.Type != "record" && !slices.Contains(m.Labels, lm.Name) && !slices.Contains(targetLabels, lm.Name) && lm.Name != c.r.ClusterLabel {
			t.Errorf("%s: %s has no label %q (docs: %v)", where, name, lm.Name, m.Labels)
		}
	}
	has := func(label string, typ labels.MatchType, value string) bool {
		return slices.ContainsFunc(byName[label], func(lm *labels.Matcher) bool { return lm.Type == typ && lm.Value == value })
	}
	// Every selector is scoped to the configured exporter or responder and to the selected cluster
	// (except the query of the cluster variable itself) and, in panels, to the job variable.
	sel := c.r.ExporterSelector
	if responder {
		sel = c.r.ResponderSelector
	}
	if sel != "" {
		want, err := parser.NewParser(parser.Options{}).ParseMetricSelector("{" + sel + "}")
		if err != nil {
			t.Fatalf("configured selector %q: %v", sel, err)
		}
		for _, w := range want {
			if !has(w.Name, w.Type, w.Value) {
				t.Errorf("%s: %s lacks the configured selector %s", where, vs, sel)
			}
		}
	}
	if scope&scopeCluster != 0 && !has(c.r.ClusterLabel, labels.MatchEqual, "VAR_cluster") {
		t.Errorf("%s: %s is not scoped with %s=\"$cluster\"", where, vs, c.r.ClusterLabel)
	}
	if scope&scopeJob != 0 {
		jobVar := "VAR_job"
		if responder {
			jobVar = "VAR_responder_job"
		}
		if !has("job", labels.MatchRegexp, jobVar) {
			t.Errorf("%s: %s is not scoped with job=~\"$%s\"", where, vs, strings.TrimPrefix(jobVar, "VAR_"))
		}
	}
}

// grouping checks that `by (...)` names labels the aggregated metric has, when the aggregation is
// over a single metric family (typos in grouping labels otherwise yield silently empty legends).
func (c *checker) grouping(where string, a *parser.AggregateExpr) {
	if a.Without || len(a.Grouping) == 0 {
		return
	}
	families := map[string]metric{}
	parser.Inspect(a.Expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			if base, m, ok := c.family(vs.Name); ok {
				families[base] = m
			}
		}
		return nil
	})
	if len(families) != 1 {
		return
	}
	for base, m := range families {
		if m.Type == "record" {
			return
		}
		for _, l := range a.Grouping {
			if !slices.Contains(m.Labels, l) && !slices.Contains(targetLabels, l) && l != c.r.ClusterLabel {
				c.t.Errorf("%s: %s by (%s): %s has no label %q (docs: %v)", where, a.Op, strings.Join(a.Grouping, ", "), base, l, m.Labels)
			}
		}
	}
}

type box struct {
	title      string
	x, y, w, h int
}

func (a box) overlaps(b box) bool {
	return a.x < b.x+b.w && b.x < a.x+a.w && a.y < b.y+b.h && b.y < a.y+a.h
}

func gridPos(p map[string]any) (box, error) {
	g, ok := p["gridPos"].(map[string]any)
	if !ok {
		return box{}, fmt.Errorf("no gridPos")
	}
	var v [4]int
	for i, k := range []string{"x", "y", "w", "h"} {
		f, ok := g[k].(float64)
		if !ok || f != float64(int(f)) || f < 0 {
			return box{}, fmt.Errorf("gridPos.%s = %v", k, g[k])
		}
		v[i] = int(f)
	}
	b := box{title: fmt.Sprint(p["title"]), x: v[0], y: v[1], w: v[2], h: v[3]}
	if b.w == 0 || b.h == 0 || b.x+b.w > 24 {
		return b, fmt.Errorf("gridPos %+v is empty or wider than the 24-column grid", b)
	}
	return b, nil
}

func dsUID(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["uid"].(string)
	return s
}
