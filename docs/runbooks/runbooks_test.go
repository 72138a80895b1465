// Package runbooks holds no code: it is the home of the runbooks (one Markdown
// file per alert) and of the test that keeps them honest.
package runbooks

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"

	"github.com/herd-k8s/herd/test/metricsdoc"
	"sigs.k8s.io/yaml"
)

// alerts are the alerts SPEC §5 names, plus the kubernetes-mixin burn-rate
// alert that herd's responder triages: each has a runbook here.
var alerts = []string{
	"HerdStampedeRisk", "HerdRelistStorm", "HerdSynchronizedRelist", "HerdStaleKubelet", "HerdGhostNodeClient",
	"HerdTooLargeResourceVersion", "HerdAggregatedAPIUnavailable", "HerdAggregatedAPISlow",
	"HerdAggregatedAPIFlapping", "HerdKubeletTokenReviewStorm", "HerdMetricsServerTokenAuth",
	"HerdAuditIngestStalled", "HerdAuditEventsRejected", "HerdResponderGuardTripped",
	"HerdResponderDown", "HerdNodeClientRejected", "KubeAPIErrorBudgetBurn",
	"HerdClusterRevisionRewound", // issue 17
}

// requiredSections must be present, in this order, each with real content.
var requiredSections = []string{"Meaning", "Impact", "Diagnosis", "Mitigation", "What herd's responder does", "Related"}

// targetLabels are added by the scrape, not by herd, and may appear in any
// selector.
var targetLabels = map[string]bool{
	"job": true, "instance": true, "pod": true, "namespace": true, "service": true,
	"container": true, "endpoint": true, "cluster": true,
}

var (
	metricRef   = regexp.MustCompile(`herd_[a-z_]+`)
	selectorRef = regexp.MustCompile(`(herd_[a-z_]+)\{([^}]*)\}`)
	matcherRef  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	todoRef     = regexp.MustCompile(`(?i)\bTODO\b|\bTBD\b|\bFIXME\b`)
)

// documentedMetrics reads docs/metrics.md: every table row that names a
// herd_ metric, with its label column; and the responder's metrics and
// labels as SPEC §4 specifies them (metricsdoc.SpecResponder), checked on
// their own so that a runbook cannot name a label SPEC does not promise.
func documentedMetrics(t *testing.T) map[string]map[string]bool {
	t.Helper()
	families, err := metricsdoc.Read("../metrics.md")
	if err != nil {
		t.Fatalf("docs/metrics.md: %v", err)
	}
	out := map[string]map[string]bool{}
	for name, f := range families {
		out[name] = labelSet(f.Labels)
	}
	for name, f := range metricsdoc.SpecResponder {
		out[name] = labelSet(f.Labels)
	}
	return out
}

func labelSet(labels []string) map[string]bool {
	l := map[string]bool{}
	for _, x := range labels {
		l[x] = true
	}
	return l
}

// lookup finds a metric by name, accepting a histogram's _bucket, _sum and
// _count series. It returns the labels and whether the name is a bucket.
func lookup(docs map[string]map[string]bool, name string) (map[string]bool, bool, bool) {
	if l, ok := docs[name]; ok {
		return l, false, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, cut := strings.CutSuffix(name, suffix); cut {
			if l, ok := docs[base]; ok && strings.HasSuffix(base, "_seconds") {
				return l, suffix == "_bucket", true
			}
		}
	}
	return nil, false, false
}

// sections splits a Markdown file into its "## " sections.
func sections(text string) (order []string, body map[string]string) {
	body = map[string]string{}
	cur := ""
	inFence := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
		}
		if !inFence && strings.HasPrefix(line, "## ") {
			cur = strings.TrimSpace(strings.TrimPrefix(line, "## "))
			order = append(order, cur)
			continue
		}
		if cur != "" {
			body[cur] += line + "\n"
		}
	}
	return order, body
}

// substance is a section's text without blank lines and sub-headings.
func substance(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// pages is every Markdown page of this directory, by file name, in name
// order.
func pages(t *testing.T) (names []string, text map[string]string) {
	t.Helper()
	names, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	text = map[string]string{}
	for _, f := range names {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text[f] = string(b)
	}
	return names, text
}

func readRunbook(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name + ".md")
	if err != nil {
		t.Fatalf("runbook for %s: %v", name, err)
	}
	return string(b)
}

func TestEveryAlertHasARunbook(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"README.md": true}
	for _, a := range alerts {
		want[a+".md"] = true
		if _, err := os.Stat(a + ".md"); err != nil {
			t.Errorf("%s has no runbook: %v", a, err)
		}
	}
	for _, f := range files {
		if !want[f] {
			t.Errorf("%s: not the runbook of a known alert (add it to the alerts list and README.md)", f)
		}
	}
}

func TestRunbookSections(t *testing.T) {
	for _, a := range alerts {
		t.Run(a, func(t *testing.T) {
			text := readRunbook(t, a)
			if !strings.HasPrefix(text, "# "+a+"\n") {
				t.Errorf("first line must be the title %q", "# "+a)
			}
			order, body := sections(text)
			next := 0
			for _, want := range requiredSections {
				content, ok := body[want]
				if !ok {
					t.Errorf("missing section %q (have %q)", "## "+want, order)
					continue
				}
				idx := -1
				for i, s := range order {
					if s == want {
						idx = i
					}
				}
				if idx < next {
					t.Errorf("section %q is out of order (want %q)", want, requiredSections)
				}
				next = idx
				min := 80
				if want == "Diagnosis" || want == "Mitigation" {
					min = 400
				}
				if n := len(substance(content)); n < min {
					t.Errorf("section %q has %d characters of content, want at least %d", want, n, min)
				}
			}
			if m := todoRef.FindString(text); m != "" {
				t.Errorf("contains %q: runbooks must say what to do", m)
			}
		})
	}
}

func TestDiagnosisIsConcrete(t *testing.T) {
	for _, a := range alerts {
		t.Run(a, func(t *testing.T) {
			_, body := sections(readRunbook(t, a))
			diag := body["Diagnosis"]
			if !strings.Contains(diag, "```promql") {
				t.Errorf("Diagnosis has no PromQL block")
			}
			if strings.Contains(diag, "$labels") || strings.Contains(diag, "{{") {
				t.Errorf("Diagnosis uses alert template syntax; use concrete queries with <placeholders>")
			}
			if !strings.Contains(diag, "kubectl") && !strings.Contains(diag, "curl") {
				t.Errorf("Diagnosis has neither a kubectl nor a curl command")
			}
		})
	}
}

func TestMetricNamesAndLabelsAreDocumented(t *testing.T) {
	docs := documentedMetrics(t)
	files, texts := pages(t)
	for _, f := range files {
		text := texts[f]
		seen := map[string]bool{}
		for _, name := range metricRef.FindAllString(text, -1) {
			if seen[name] {
				continue
			}
			seen[name] = true
			if _, _, ok := lookup(docs, name); !ok {
				t.Errorf("%s: %s is neither in docs/metrics.md nor a responder metric of SPEC §4", f, name)
			}
		}
		for _, m := range selectorRef.FindAllStringSubmatch(text, -1) {
			labels, bucket, ok := lookup(docs, m[1])
			if !ok {
				continue // reported above
			}
			for _, lm := range matcherRef.FindAllStringSubmatch(m[2], -1) {
				l := lm[1]
				if labels[l] || targetLabels[l] || (bucket && l == "le") {
					continue
				}
				have := make([]string, 0, len(labels))
				for x := range labels {
					have = append(have, x)
				}
				sort.Strings(have)
				t.Errorf("%s: %s has no label %q (documented: %v)", f, m[1], l, have)
			}
		}
	}
}

func TestIndexListsEveryRunbook(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts {
		if !strings.Contains(string(b), "]("+a+".md)") {
			t.Errorf("README.md does not link %s.md", a)
		}
	}
}

// promqlBlocks returns the queries in a file's ```promql blocks. A block may
// hold several queries: a line at the block's own indentation starts a new
// query unless it continues the previous one (it starts with a closing
// parenthesis or a binary operator); indented lines continue; comment lines
// are dropped.
func promqlBlocks(text string) []string {
	var out []string
	var cur []string
	flush := func() {
		if q := strings.TrimSpace(strings.Join(cur, "\n")); q != "" {
			out = append(out, q)
		}
		cur = nil
	}
	in, indent := false, ""
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if !in {
			if trimmed == "```promql" {
				in, indent = true, line[:len(line)-len(strings.TrimLeft(line, " "))]
			}
			continue
		}
		if trimmed == "```" {
			flush()
			in = false
			continue
		}
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		body := strings.TrimPrefix(line, indent)
		continues := strings.HasPrefix(body, " ") || strings.HasPrefix(body, "\t")
		for _, op := range []string{")", "/", "-", "+", "*", "or", "and", "unless", "on", "group_"} {
			if strings.HasPrefix(trimmed, op) {
				continues = true
			}
		}
		if !continues {
			flush()
		}
		cur = append(cur, body)
	}
	return out
}

// TestPromQLParses checks every query with promtool (installed by `make deps`)
// as a recording rule: a typo in a runbook's query is a typo at 3 a.m.
func TestPromQLParses(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install it with `apt-get install prometheus` (make deps does)")
	}
	files, texts := pages(t)
	var b strings.Builder
	b.WriteString("groups:\n- name: runbooks\n  rules:\n")
	n := 0
	where := map[string]string{}
	for _, f := range files {
		for _, q := range promqlBlocks(texts[f]) {
			n++
			name := fmt.Sprintf("runbook_query_%d", n)
			where[name] = f + ": " + q
			expr, _ := json.Marshal(q) // a JSON string is a YAML string
			fmt.Fprintf(&b, "  - record: %s\n    expr: %s\n", name, expr)
		}
	}
	if n < 100 {
		t.Fatalf("found only %d PromQL queries; did the block format change?", n)
	}
	path := filepath.Join(t.TempDir(), "queries.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
	if err != nil {
		msg := string(out)
		for name, q := range where {
			if strings.Contains(msg, name+"\"") || strings.Contains(msg, name+" ") {
				msg += "\n" + name + " is " + q
			}
		}
		t.Fatalf("promtool check rules: %v\n%s", err, msg)
	}
}

// alertRules reads the mixin's generated alerts, when the rules are there.
func alertRules(t *testing.T) map[string]map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../rules/prometheus_alerts.yaml")
	if err != nil {
		t.Fatalf("rules/prometheus_alerts.yaml is committed; regenerate it with make rules: %v", err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `json:"alert"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("rules/prometheus_alerts.yaml: %v", err)
	}
	out := map[string]map[string]string{}
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out[r.Alert] = map[string]string{"severity": r.Labels["severity"], "runbook_url": r.Annotations["runbook_url"]}
			}
		}
	}
	return out
}

// TestRunbooksMatchTheMixin checks that every alert of the mixin has a
// runbook, points at it, and has the severity the index states.
func TestRunbooksMatchTheMixin(t *testing.T) {
	rules := alertRules(t)
	index, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, a := range alerts {
		known[a] = true
	}
	for name, r := range rules {
		if !known[name] {
			t.Errorf("the mixin has alert %s but there is no runbook for it here", name)
			continue
		}
		if want := "docs/runbooks/" + name + ".md"; !strings.HasSuffix(r["runbook_url"], want) {
			t.Errorf("%s: runbook_url %q does not end in %s", name, r["runbook_url"], want)
		}
		row := regexp.MustCompile(`(?m)^\| \[` + name + `\]\(` + name + `\.md\) \| ([^|]*) \|`).FindStringSubmatch(string(index))
		if row == nil {
			t.Errorf("README.md has no index row for %s", name)
			continue
		}
		if got := strings.TrimSpace(row[1]); got != r["severity"] {
			t.Errorf("README.md says %s is %q, the mixin says %q", name, got, r["severity"])
		}
	}
	for _, a := range alerts {
		if _, ok := rules[a]; !ok && strings.HasPrefix(a, "Herd") {
			t.Errorf("runbook %s.md has no alert in rules/prometheus_alerts.yaml", a)
		}
	}
}

// slug is GitHub's anchor for a heading: lower case, punctuation dropped,
// spaces to hyphens.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	inFence := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
		}
		if !inFence && strings.HasPrefix(line, "#") {
			out[slug(strings.TrimLeft(line, "#"))] = true
		}
	}
	return out
}

// TestRelativeLinks checks that every relative link points at a file that
// exists and, with a #fragment, at one of its headings.
func TestRelativeLinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)#\s]*)(#[^)\s]*)?\)`)
	files, texts := pages(t)
	for _, f := range files {
		for _, m := range link.FindAllStringSubmatch(texts[f], -1) {
			target, frag := m[1], strings.TrimPrefix(m[2], "#")
			if strings.Contains(target, "://") {
				continue
			}
			if target == "" {
				target = f
			}
			if _, err := os.Stat(target); err != nil {
				t.Errorf("%s: link to %s: %v", f, m[0], err)
				continue
			}
			if frag != "" && strings.HasSuffix(target, ".md") && !anchors(t, target)[frag] {
				t.Errorf("%s: link %s: %s has no heading #%s", f, m[0], target, frag)
			}
		}
	}
}
