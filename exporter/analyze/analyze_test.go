package analyze

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// analyzeString reads one input and returns the report and what was warned.
func analyzeString(t *testing.T, opts Options, name, input string) (*Report, string) {
	t.Helper()
	var warn bytes.Buffer
	opts.Warn = &warn
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Read(name, strings.NewReader(input)); err != nil {
		t.Fatalf("Read: %v", err)
	}
	return a.Report(), warn.String()
}

func table(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// firstLines is the first n lines of s.
func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// rowAfter returns the first table row after the line starting with header.
func rowAfter(t *testing.T, out, header string) string {
	t.Helper()
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, header) && i+1 < len(lines) {
			return lines[i+1]
		}
	}
	t.Fatalf("no line starting with %q in:\n%s", header, out)
	return ""
}

// TestScenarioTable is what the on-call SRE sees first: the findings name
// the relisting kubelet, the stuck identity and the TokenReview source in
// the first dozen lines, and each section's first row is the culprit.
func TestScenarioTable(t *testing.T) {
	r, warn := analyzeString(t, Options{}, "scenario.log", scenarioLog())
	if warn != "" {
		t.Errorf("warnings on a clean log: %q", warn)
	}
	out := table(t, r)
	head := firstLines(out, 13)
	for _, want := range []string{
		"span:   2026-11-23 08:00:01 → 08:06:30 UTC (6m29s)",
		"events: 71 read, 71 accounted, 0 duplicate, 0 malformed, 0 oversized",
		"relisting:    kubelet system:node:node-7 relisted pods 12 times (12 in last 10m, consistent=12) (+2 more)",
		"too-large RV: system:node:old-worker-7: 6 errors (csidrivers, runtimeclasses) from 10.0.9.7,10.0.9.8",
		"tokenreviews: 10 created by 3 instances on 3 nodes; most by kubelet system:node:node-1 (5)",
		"ghost?:       system:node:old-worker-7: 2 source IPs (5 changes), 6 too-large-RV errors\n" +
			"                verify with kubectl get node old-worker-7\n",
	} {
		if !strings.Contains(head, want) {
			t.Errorf("first lines lack %q:\n%s", want, head)
		}
	}
	for header, want := range map[string][]string{
		// The shape says what the relists select: node-7's pod LISTs are its own node's (spec.nodeName).
		"CLIENT   IDENTITY (NODE)": {"kubelet", "system:node:node-7", "pods", " node ", "12", "0/0/12", "08:06:30", "stale?"},
		"IDENTITY                  NODE          SOURCE IPS         RESOURCE": {"system:node:old-worker-7", "10.0.9.7,10.0.9.8", "csidrivers.storage ", "3"},
		"CLIENT   NODE    TOKENREVIEWS":                                       {"kubelet", "node-1", "5", "system:node:node-1"},
		"IDENTITY                  NODE          SOURCE IPS         WHY":      {"system:node:old-worker-7", "2 source IPs (5 changes)", "6 too-large-RV errors"},
		"ROLE     CLIENT   VERB":                                              {"kubelet", "list", "504", "6"},
	} {
		row := rowAfter(t, out, header)
		for _, w := range want {
			if !strings.Contains(row, w) {
				t.Errorf("row after %q lacks %q: %q", header, w, row)
			}
		}
	}
	if !strings.Contains(out, "verify with: kubectl get node old-worker-7 -o wide\n") {
		t.Errorf("no kubectl verify line:\n%s", out)
	}
	for i, l := range strings.Split(out, "\n") {
		if n := len([]rune(l)); n > 120 {
			t.Errorf("line %d is %d columns wide: %q", i+1, n, l)
		}
	}
}

func at(d time.Duration) *time.Time {
	t := t0.Add(d)
	return &t
}

// TestScenarioJSON pins every number of the scenario's JSON report.
func TestScenarioJSON(t *testing.T) {
	r, _ := analyzeString(t, Options{}, "scenario.log", scenarioLog())
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got Report
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("JSON does not decode: %v\n%s", err, b.String())
	}
	end := t0.Add(6*time.Minute + 30*time.Second + 20*time.Millisecond)
	kubelet := func(node string) Instance {
		return Instance{Role: "kubelet", Client: "kubelet", Identity: "system:node:" + node, Node: node, Attribution: "username"}
	}
	want := Report{
		SchemaVersion: 1,
		Inputs:        []InputSummary{{Name: "scenario.log", Mode: ModeLines, Lines: 71, Events: 71}},
		Span:          &Span{First: t0.Add(time.Second), Last: end, Seconds: 389.02},
		Window:        Window{Seconds: 600, End: &end},
		Events:        EventCounts{Read: 71, Accounted: 71},
		Roles: []RoleTotals{
			{Role: "kubelet", Instances: 5, Requests: 32, Relists: 21, TooLarge: 6, TokenReviews: 10, Errors: 6},
			{Role: "kube-proxy"},
			{Role: "cni", Instances: 3, Requests: 3, Relists: 3},
			{Role: "metrics-server"},
			{Role: "other"},
		},
		Relisting: RelistingSection{Threshold: 3, Count: 3, Rows: []RelistRow{
			{Instance: kubelet("node-7"), Resource: "pods", Shape: "node", Relists: 12, WindowRelists: 12,
				ByConsistency: ConsistencyMix{Consistent: 12}, LastRelist: &end, PossiblyStale: true},
			{Instance: kubelet("old-worker-7"), Resource: "csidrivers.storage.k8s.io", Shape: "all", Relists: 3, WindowRelists: 3,
				ByConsistency: ConsistencyMix{Cache: 3}, LastRelist: at(5*time.Minute + 20*time.Second + 20*time.Millisecond), PossiblyStale: true},
			{Instance: kubelet("old-worker-7"), Resource: "runtimeclasses.node.k8s.io", Shape: "all", Relists: 3, WindowRelists: 3,
				ByConsistency: ConsistencyMix{Cache: 3}, LastRelist: at(3*time.Minute + 20*time.Second + 20*time.Millisecond), PossiblyStale: true},
		}},
		TooLarge: TooLargeSection{Errors: 6, Count: 2, Rows: []TooLargeRow{
			{Instance: kubelet("old-worker-7"), SourceIPs: []string{"10.0.9.7", "10.0.9.8"}, Resource: "csidrivers.storage.k8s.io",
				Errors: 3, WindowErrors: 3, LastError: at(5*time.Minute + 20*time.Second + 20*time.Millisecond), PossiblyStale: true},
			{Instance: kubelet("old-worker-7"), SourceIPs: []string{"10.0.9.7", "10.0.9.8"}, Resource: "runtimeclasses.node.k8s.io",
				Errors: 3, WindowErrors: 3, LastError: at(3*time.Minute + 20*time.Second + 20*time.Millisecond), PossiblyStale: true},
		}},
		TokenReviews: TokenReviewSection{TokenReviews: 10, Nodes: 3, Count: 3, Rows: []TokenReviewRow{
			{Instance: kubelet("node-1"), TokenReviews: 5},
			{Instance: kubelet("node-2"), TokenReviews: 3},
			{Instance: kubelet("node-3"), TokenReviews: 2},
		}},
		Ghosts: GhostSection{Count: 1, Verify: "kubectl get node old-worker-7 -o wide", Rows: []GhostRow{{
			Instance: kubelet("old-worker-7"), SourceIPs: []string{"10.0.9.7", "10.0.9.8"}, SourceIPChanges: 5,
			FieldSelectorNodes: []string{}, TooLarge: 6,
			Reasons: []string{"2 source IPs (5 changes)", "6 too-large-RV errors"},
		}}},
		Consistency: ConsistencySection{Count: 4, Rows: []ConsistencyRow{
			{Role: "kubelet", Client: "kubelet", Resource: "pods", Relists: 15, ConsistencyMix: ConsistencyMix{Cache: 3, Consistent: 12}},
			{Role: "cni", Client: "cilium-agent", Resource: "endpointslices.discovery.k8s.io", Relists: 3, ConsistencyMix: ConsistencyMix{Cache: 3}},
			{Role: "kubelet", Client: "kubelet", Resource: "csidrivers.storage.k8s.io", Relists: 3, ConsistencyMix: ConsistencyMix{Cache: 3}},
			{Role: "kubelet", Client: "kubelet", Resource: "runtimeclasses.node.k8s.io", Relists: 3, ConsistencyMix: ConsistencyMix{Cache: 3}},
		}},
		Errors: ErrorSection{Count: 1, Rows: []ErrorRow{{Role: "kubelet", Client: "kubelet", Verb: "list", Code: 504, Requests: 6}}},
		// Live at the end (accounting.liveWindow), the levels of the
		// apiserver's suggested FlowSchemas; no sizes given: no bytes.
		Forecast: ForecastSection{Count: 5, Rows: []ForecastRow{
			{Role: "kubelet", Client: "kubelet", Resource: "pods", Shape: "node", Instances: 4, PriorityLevels: []string{"system"}, Subjects: []string{"group:system:nodes"}},
			{Role: "cni", Client: "cilium-agent", Resource: "endpointslices.discovery.k8s.io", Shape: "all", Instances: 3, PriorityLevels: []string{"workload-high"}, Subjects: []string{"serviceaccount:kube-system:cilium"}},
			{Role: "kubelet", Client: "kubelet", Resource: "csidrivers.storage.k8s.io", Shape: "all", Instances: 1, PriorityLevels: []string{"system"}, Subjects: []string{"group:system:nodes"}},
			{Role: "kubelet", Client: "kubelet", Resource: "nodes", Shape: "object", Instances: 1, PriorityLevels: []string{"node-high"}, Subjects: []string{"group:system:nodes"}},
			{Role: "kubelet", Client: "kubelet", Resource: "runtimeclasses.node.k8s.io", Shape: "all", Instances: 1, PriorityLevels: []string{"system"}, Subjects: []string{"group:system:nodes"}},
		}},
		Notes: []string{},
	}
	got.top, got.includeOther = 0, false
	if !reflect.DeepEqual(got, want) {
		gj, _ := json.MarshalIndent(got, "", "  ")
		wj, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("report differs\n got: %s\nwant: %s", gj, wj)
	}

	// The document is stable: every key is present even when empty.
	var doc map[string]any
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	wantKeys := []string{"consistency", "errors", "events", "inputs", "notes", "possibleGhosts", "relisting", "roles",
		"schemaVersion", "span", "stampedeForecast", "tokenReviews", "tooLargeResourceVersion", "window"}
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("top-level keys = %v, want %v", keys, wantKeys)
	}
}

// TestEmptyReportJSON: with nothing read, lists are [] and span is null, so
// a script can index without checks.
func TestEmptyReportJSON(t *testing.T) {
	r, _ := analyzeString(t, Options{}, "empty.log", "")
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"span": null`, `"rows": []`, `"notes": []`, `"end": null`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("empty report lacks %s:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "null,") && strings.Contains(b.String(), `"rows": null`) {
		t.Errorf("null rows in:\n%s", b.String())
	}
	out := table(t, r)
	if !strings.Contains(out, "span:   no event had a stageTimestamp") || !strings.Contains(out, "nothing stands out") {
		t.Errorf("empty table:\n%s", out)
	}
}

// TestDuplicates: the same events twice, in one file or two, count once.
func TestDuplicates(t *testing.T) {
	log := scenarioLog()
	var warn bytes.Buffer
	a, err := New(Options{Warn: &warn})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.log", "b.log"} {
		if err := a.Read(name, strings.NewReader(log+log)); err != nil {
			t.Fatal(err)
		}
	}
	r := a.Report()
	if want := (EventCounts{Read: 284, Accounted: 71, Duplicate: 213}); r.Events != want {
		t.Errorf("events = %+v, want %+v", r.Events, want)
	}
	if got := r.Relisting.Rows[0]; got.Identity != "system:node:node-7" || got.Relists != 12 {
		t.Errorf("top relister = %s %d, want node-7 12", got.Identity, got.Relists)
	}
	if r.TokenReviews.TokenReviews != 10 || r.TooLarge.Errors != 6 {
		t.Errorf("tokenreviews %d, too large %d: want 10, 6", r.TokenReviews.TokenReviews, r.TooLarge.Errors)
	}
}

// TestWindow: the window columns count back from the newest event.
func TestWindow(t *testing.T) {
	tests := []struct {
		name      string
		window    time.Duration
		want      int // node-7's pod relists in the window
		wantAll   bool
		wantSecs  float64
		wantLabel string
	}{
		// Relists at 1:00, 1:30, ... 6:30; the newest event is at 6:30.02.
		// A 2m window in 12 s buckets covers [4:36, 6:36): 5:00 to 6:30.
		{name: "2m", window: 2 * time.Minute, want: 4, wantSecs: 120, wantLabel: "LAST 2m"},
		{name: "default 10m", want: 12, wantSecs: 600, wantLabel: "LAST 10m"},
		{name: "all", window: WindowAll, want: 12, wantAll: true, wantSecs: 389.02, wantLabel: "IN INPUT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := analyzeString(t, Options{Window: tc.window}, "scenario.log", scenarioLog())
			row := r.Relisting.Rows[0]
			if row.Identity != "system:node:node-7" || row.Relists != 12 || row.WindowRelists != tc.want {
				t.Errorf("top row = %s %d relists, %d in window; want node-7 12, %d", row.Identity, row.Relists, row.WindowRelists, tc.want)
			}
			if r.Window.All != tc.wantAll || r.Window.Seconds != tc.wantSecs {
				t.Errorf("window = %+v, want all=%v seconds=%v", r.Window, tc.wantAll, tc.wantSecs)
			}
			if out := table(t, r); !strings.Contains(out, "RELISTS  "+tc.wantLabel) {
				t.Errorf("table lacks the %q column:\n%s", tc.wantLabel, out)
			}
		})
	}
}

// TestTop caps every section and says how many there are.
func TestTop(t *testing.T) {
	r, _ := analyzeString(t, Options{Top: 1}, "scenario.log", scenarioLog())
	if len(r.Relisting.Rows) != 1 || r.Relisting.Count != 3 || len(r.TokenReviews.Rows) != 1 || r.TokenReviews.Count != 3 {
		t.Errorf("top 1: relisting %d of %d, tokenreviews %d of %d", len(r.Relisting.Rows), r.Relisting.Count, len(r.TokenReviews.Rows), r.TokenReviews.Count)
	}
	if r.TokenReviews.TokenReviews != 10 {
		t.Errorf("the total must not be capped: %d", r.TokenReviews.TokenReviews)
	}
	if out := table(t, r); !strings.Contains(out, "(top 1 of 3 instance streams; --top to see more)") {
		t.Errorf("no cap note:\n%s", out)
	}
}

// TestIncludeOther: controllers and people are totals only, unless asked.
func TestIncludeOther(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 4; i++ {
		b.WriteString(req{id: 900 + i, user: "system:kube-controller-manager", ua: "kube-controller-manager/v1.36.3", ip: "10.0.0.250",
			verb: "list", resource: "pods", version: "v1", uri: "/api/v1/pods?limit=500", code: 200, at: time.Duration(i) * time.Second}.events()[1] + "\n")
	}
	for _, tc := range []struct {
		include bool
		rows    int
	}{{false, 0}, {true, 1}} {
		r, _ := analyzeString(t, Options{IncludeOther: tc.include}, "kcm.log", b.String())
		if len(r.Relisting.Rows) != tc.rows || r.Roles[4].Relists != 4 {
			t.Errorf("include-other=%v: %d relisting rows, other relists %d; want %d, 4", tc.include, len(r.Relisting.Rows), r.Roles[4].Relists, tc.rows)
		}
	}
}

// TestGhostSelectorMismatch: a kubelet whose credentials were copied to
// another machine asks for that machine's pods under the old identity.
func TestGhostSelectorMismatch(t *testing.T) {
	r := req{id: 1, user: "system:node:node-3", groups: nodeGroups, ua: kubeletUA, ip: "10.0.0.3", verb: "list", resource: "pods",
		version: "v1", uri: "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-3-clone&resourceVersion=0", code: 200}
	rep, _ := analyzeString(t, Options{}, "clone.log", strings.Join(r.events(), "\n"))
	if rep.Ghosts.Count != 1 {
		t.Fatalf("ghosts = %+v", rep.Ghosts)
	}
	g := rep.Ghosts.Rows[0]
	if g.Identity != "system:node:node-3" || !slices.Equal(g.FieldSelectorNodes, []string{"node-3-clone"}) ||
		g.Reasons[0] != "field selectors name node node-3-clone" {
		t.Errorf("ghost = %+v", g)
	}
}

// TestHostileNames: client-controlled text cannot inject terminal escapes
// into the table or a shell command into the verify line.
func TestHostileNames(t *testing.T) {
	var lines []string
	for i, ip := range []string{"10.0.0.1", "10.0.0.2"} {
		r := req{id: i + 1, user: "system:node:evil;rm -rf ~\x1b[2J", groups: nodeGroups, ua: kubeletUA, ip: ip,
			verb: "list", resource: "pods", version: "v1", uri: "/api/v1/pods?resourceVersion=0", code: 200}
		lines = append(lines, r.events()...)
	}
	rep, _ := analyzeString(t, Options{}, "evil.log", strings.Join(lines, "\n"))
	if rep.Ghosts.Count != 1 || rep.Ghosts.Verify != "" {
		t.Errorf("ghosts = %+v; want one, with no verify command", rep.Ghosts)
	}
	out := table(t, rep)
	if strings.ContainsRune(out, '\x1b') || strings.Contains(out, "kubectl get node evil") {
		t.Errorf("hostile name leaked:\n%q", out)
	}
}

func TestCells(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{identityCell("system:serviceaccount:kube-system:weave-net", 29), "system:…kube-system:weave-net"},
		{identityCell("system:node:ip-10-0-31-19.us-west-2.compute.internal", 30), "system:node:ip-10-0-31-19.us-…"},
		{identityCell("system:node:node-1", 30), "system:node:node-1"},
		{resourceCell("csidrivers.storage.k8s.io"), "csidrivers.storage"},
		{resourceCell("ciliumendpoints.cilium.io"), "ciliumendpoints.cilium.io"},
		{resourceCell("pods"), "pods"},
		{cut("a\x1b[2Jb\u009bc", 10), "a?[2Jb?c"},
		{shortDuration(10 * time.Minute), "10m"},
		{shortDuration(time.Hour), "1h"},
		{shortDuration(90*time.Minute + 1500*time.Millisecond), "1h30m2s"},
		{ipsText([]string{"a", "b", "c"}, 2), "a,b,+1"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// TestDocsCoverJSON: every key of the JSON report is described in
// docs/analyze.md, so the documented schema cannot fall behind the code.
func TestDocsCoverJSON(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "analyze.md"))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := analyzeString(t, Options{}, "scenario.log", scenarioLog())
	r.Inputs[0].Error = "set, to document it" // omitted when empty
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				keys[k] = true
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	for k := range keys {
		if !bytes.Contains(doc, []byte("`"+k+"`")) && !bytes.Contains(doc, []byte("`"+k+"[]")) {
			t.Errorf("docs/analyze.md does not describe JSON field %q", k)
		}
	}
}
