package analyze

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/test/herdtest"
)

func TestDetectMode(t *testing.T) {
	event := `{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","stage":"ResponseComplete","verb":"get"}`
	tests := []struct {
		name, prefix string
		want         Mode
	}{
		{"empty", "", ModeLines},
		{"blank", " \n\t\n", ModeLines},
		{"json lines", event + "\n" + event + "\n", ModeLines},
		{"one line, no newline", event, ModeLines},
		{"compact EventList on one line", `{"kind":"EventList","items":[` + event + `]}` + "\n", ModeLines},
		{"pretty event", "{\n  \"kind\": \"Event\",\n", ModeDocument},
		{"pretty EventList", "{\n  \"kind\": \"EventList\",\n  \"items\": [\n", ModeDocument},
		{"pretty array", "[\n  {\n", ModeDocument},
		{"array of one event per line", "[\n" + event + ",\n", ModeDocument},
		{"BOM and pretty", "\xef\xbb\xbf{\n  \"kind\": \"Event\",\n", ModeDocument},
		{"blank lines then pretty", "\n\n{\n\"kind\": \"Event\",\n", ModeDocument},
		{"broken first line of json lines", `{"kind":"Ev` + "\n" + event + "\n", ModeLines},
		{"text log", "I1123 08:00:00.000 audit.go:1] hello\n", ModeLines},
		{"single line cut by the prefix limit", `{"kind":"EventList","items":[` + event, ModeDocument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DetectMode([]byte(tc.prefix)); got != tc.want {
				t.Errorf("DetectMode(%q) = %s, want %s", tc.prefix, got, tc.want)
			}
		})
	}
}

// scenarioEvents is the scenario as decoded JSON values, to re-encode in
// other forms.
func scenarioEvents(t testing.TB) []json.RawMessage {
	var out []json.RawMessage
	for _, l := range strings.Split(strings.TrimSpace(scenarioLog()), "\n") {
		out = append(out, json.RawMessage(l))
	}
	return out
}

func prettyEventList(t testing.TB) []byte {
	t.Helper()
	// Fields in the order the apiserver and kubectl write them: kind first.
	b, err := json.MarshalIndent(struct {
		Kind       string            `json:"kind"`
		APIVersion string            `json:"apiVersion"`
		Metadata   struct{}          `json:"metadata"`
		Items      []json.RawMessage `json:"items"`
	}{"EventList", "audit.k8s.io/v1", struct{}{}, scenarioEvents(t)}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// webhookBatches renders the scenario as the apiserver's webhook sends it,
// one compact EventList of up to n events per line, as a recorder saves it.
func webhookBatches(t testing.TB, n int) []byte {
	evs := scenarioEvents(t)
	var out bytes.Buffer
	for i := 0; i < len(evs); i += n {
		b, err := json.Marshal(map[string]any{"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": evs[i:min(i+n, len(evs))]})
		if err != nil {
			t.Fatal(err)
		}
		out.Write(b)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

// TestReadForms reads the scenario in every form herd analyze accepts and
// checks the same numbers come out.
func TestReadForms(t *testing.T) {
	log := []byte(scenarioLog())
	prettyArray, err := json.MarshalIndent(scenarioEvents(t), "", "    ")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file string
		data       []byte
		mode       Mode
	}{
		{"json lines", "audit.log", log, ModeLines},
		{"gzip", "audit.log.gz", herdtest.Gzip(t, log), ModeLines},
		{"gzip named .log", "audit.log.1", herdtest.Gzip(t, log), ModeLines},
		{"pretty EventList", "events.json", prettyEventList(t), ModeDocument},
		{"pretty EventList gzip", "events.json.gz", herdtest.Gzip(t, prettyEventList(t)), ModeDocument},
		{"pretty array", "events.json", prettyArray, ModeDocument},
		{"webhook batches", "webhook-batches.jsonl", webhookBatches(t, 10), ModeLines},
		{"CRLF", "audit.log", bytes.ReplaceAll(log, []byte("\n"), []byte("\r\n")), ModeLines},
		{"BOM", "audit.log", append([]byte("\xef\xbb\xbf"), log...), ModeLines},
		{"no final newline", "audit.log", bytes.TrimSuffix(log, []byte("\n")), ModeLines},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tc.file)
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			var warn bytes.Buffer
			r, err := Run([]string{path}, Options{Warn: &warn})
			if err != nil {
				t.Fatal(err)
			}
			if warn.Len() > 0 {
				t.Errorf("warnings: %s", warn.String())
			}
			if in := r.Inputs[0]; in.Mode != tc.mode || in.Events != 71 || in.Error != "" {
				t.Errorf("input = %+v, want mode %s, 71 events", in, tc.mode)
			}
			if r.Events != (EventCounts{Read: 71, Accounted: 71}) {
				t.Errorf("events = %+v", r.Events)
			}
			if row := r.Relisting.Rows[0]; row.Identity != "system:node:node-7" || row.Relists != 12 {
				t.Errorf("top relister %s %d", row.Identity, row.Relists)
			}
			if r.TooLarge.Rows[0].Identity != "system:node:old-worker-7" || r.TooLarge.Errors != 6 {
				t.Errorf("too large: %+v", r.TooLarge)
			}
		})
	}
}

// TestBadLines: a garbage line in the middle and a last line cut short are
// counted and reported as FILE:LINE, and every other line is still read.
func TestBadLines(t *testing.T) {
	lines := strings.Split(strings.TrimSuffix(scenarioLog(), "\n"), "\n")
	var b strings.Builder
	for i, l := range lines {
		if i == 9 {
			b.WriteString("this is not json\n") // line 10
		}
		if i == 20 {
			b.WriteString(strings.Replace(l, `"auditID"`, `"auditId"`, 1) + "\n") // line 22: no auditID (a node-7 relist)
			continue
		}
		if i == len(lines)-1 {
			b.WriteString(l[:len(l)/2]) // line 72, cut mid-write (node-7's last relist)
			continue
		}
		b.WriteString(l + "\n")
	}
	path := filepath.Join(t.TempDir(), "bad.log")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var warn bytes.Buffer
	r, err := Run([]string{path}, Options{Warn: &warn})
	if err != nil {
		t.Fatal(err)
	}
	wantWarn := []string{
		path + ":10: not JSON: invalid character ",
		path + ":22: missing auditID",
		path + ":72: not JSON: ",
	}
	got := strings.Split(strings.TrimSuffix(warn.String(), "\n"), "\n")
	if len(got) != len(wantWarn) {
		t.Fatalf("warnings:\n%s", warn.String())
	}
	for i, w := range wantWarn {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("warning %d = %q, want prefix %q", i, got[i], w)
		}
	}
	if want := (EventCounts{Read: 69, Accounted: 69, Malformed: 3}); r.Events != want {
		t.Errorf("events = %+v, want %+v", r.Events, want)
	}
	if in := r.Inputs[0]; in.Lines != 72 || in.Malformed != 3 || in.Events != 69 {
		t.Errorf("input = %+v", in)
	}
	// Lines 22 and 72 were two of node-7's 12 relists; the other 10 are there.
	if row := r.Relisting.Rows[0]; row.Identity != "system:node:node-7" || row.Relists != 10 {
		t.Errorf("top relister %s %d, want node-7 10", row.Identity, row.Relists)
	}
	if out := table(t, r); !strings.Contains(out, "3 malformed, 0 oversized (skipped; the first are on stderr)") {
		t.Errorf("headline does not say lines were skipped:\n%s", firstLines(out, 4))
	}
}

// TestProblemsCapped: a file of garbage prints the first few problems only.
func TestProblemsCapped(t *testing.T) {
	input := strings.Repeat("garbage\n", 20) + strings.Join(req{id: 1, user: "system:node:n", ua: kubeletUA, ip: "10.0.0.1",
		verb: "get", resource: "nodes", version: "v1", uri: "/api/v1/nodes/n", code: 200}.events(), "\n")
	var warn bytes.Buffer
	a, err := New(Options{Warn: &warn})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Read("junk.log", strings.NewReader(input)); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(warn.String(), "\n"); n != DefaultMaxProblems {
		t.Errorf("%d warnings printed, want %d:\n%s", n, DefaultMaxProblems, warn.String())
	}
	if total, shown := a.Problems(); total != 20 || shown != 5 {
		t.Errorf("Problems() = %d, %d; want 20, 5", total, shown)
	}
	if r := a.Report(); r.Events.Read != 2 || r.Events.Malformed != 20 {
		t.Errorf("events = %+v", r.Events)
	}
}

// TestOversized: a line over the line limit and an event over the event
// limit are skipped and counted, and reading goes on.
func TestOversized(t *testing.T) {
	cfg := config.Default()
	cfg.Ingest.MaxBodyBytes, cfg.Ingest.MaxEventBytes = 64<<10, 4<<10
	ok := strings.Join(req{id: 1, user: "system:node:n", ua: kubeletUA, ip: "10.0.0.1", verb: "get", resource: "nodes",
		version: "v1", uri: "/api/v1/nodes/n", code: 200}.events(), "\n")
	bigEvent := strings.Replace(req{id: 2, user: "system:node:n", ua: strings.Repeat("x", 5000), ip: "10.0.0.1", verb: "get",
		resource: "nodes", version: "v1", uri: "/api/v1/nodes/n", code: 200}.events()[0], "", "", 0)
	hugeLine := `{"kind":"Event","padding":"` + strings.Repeat("y", 70<<10) + `"}`
	input := ok + "\n" + bigEvent + "\n" + hugeLine + "\n" + ok + "\n"
	var warn bytes.Buffer
	a, err := New(Options{Config: cfg, Warn: &warn})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Read("big.log", strings.NewReader(input)); err != nil {
		t.Fatal(err)
	}
	r := a.Report()
	if want := (EventCounts{Read: 4, Accounted: 2, Duplicate: 2, Oversized: 2}); r.Events != want {
		t.Errorf("events = %+v, want %+v", r.Events, want)
	}
	for _, want := range []string{"big.log:3: event of ", "-byte limit", "big.log:4: line longer than 65536 bytes, skipped"} {
		if !strings.Contains(warn.String(), want) {
			t.Errorf("warnings lack %q:\n%s", want, warn.String())
		}
	}
}

// TestStdin reads "-", gzip included, as it would `zcat`-less pipes.
func TestStdin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdin")
	if err := os.WriteFile(path, herdtest.Gzip(t, []byte(scenarioLog())), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	saved := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = saved }()
	r, err := Run([]string{"-"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if in := r.Inputs[0]; in.Name != "stdin" || in.Events != 71 {
		t.Errorf("input = %+v", in)
	}
}

// TestEmptyFile: no events is a report of zeros, not an error.
func TestEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var warn bytes.Buffer
	r, err := Run([]string{path}, Options{Warn: &warn})
	if err != nil {
		t.Fatal(err)
	}
	if r.Events != (EventCounts{}) || r.Span != nil || warn.Len() > 0 || r.Inputs[0].Lines != 0 {
		t.Errorf("events %+v span %v warn %q input %+v", r.Events, r.Span, warn.String(), r.Inputs[0])
	}
}

// TestDocumentLimits: a document over the cap is refused with the fix; one
// cut short yields the events before the cut and says where it stopped.
func TestDocumentLimits(t *testing.T) {
	doc := prettyEventList(t)
	t.Run("too large", func(t *testing.T) {
		var warn bytes.Buffer
		a, err := New(Options{Warn: &warn, MaxDocumentBytes: 1 << 10})
		if err != nil {
			t.Fatal(err)
		}
		err = a.Read("big.json", bytes.NewReader(doc))
		if err == nil || !strings.Contains(err.Error(), "convert it to JSON lines first") {
			t.Fatalf("err = %v", err)
		}
		if r := a.Report(); r.Inputs[0].Error == "" || r.Events.Read != 0 || !strings.HasPrefix(warn.String(), "big.json: a JSON document larger than") {
			t.Errorf("input %+v, warn %q", r.Inputs[0], warn.String())
		}
	})
	t.Run("truncated", func(t *testing.T) {
		var warn bytes.Buffer
		a, err := New(Options{Warn: &warn})
		if err != nil {
			t.Fatal(err)
		}
		cut := doc[:len(doc)*2/3]
		if err := a.Read("cut.json", bytes.NewReader(cut)); err != nil {
			t.Fatal(err)
		}
		r := a.Report()
		lines := bytes.Count(cut, []byte("\n")) + 1
		if r.Events.Read < 30 || r.Events.Read >= 71 || r.Events.Malformed != 1 {
			t.Errorf("events = %+v", r.Events)
		}
		if want := fmt.Sprintf("cut.json:%d: not JSON: ", lines); !strings.HasPrefix(warn.String(), want) ||
			!strings.Contains(warn.String(), "the rest of the document was not read") {
			t.Errorf("warning %q, want prefix %q", warn.String(), want)
		}
	})
}

// TestTruncatedGzip: a .gz cut short (copied while logrotate compressed it)
// keeps what decompressed and names the file and the problem.
func TestTruncatedGzip(t *testing.T) {
	z := herdtest.Gzip(t, []byte(scenarioLog()))
	path := filepath.Join(t.TempDir(), "audit.log.gz")
	if err := os.WriteFile(path, z[:len(z)*3/4], 0o600); err != nil {
		t.Fatal(err)
	}
	var warn bytes.Buffer
	r, err := Run([]string{path}, Options{Warn: &warn})
	if err != nil {
		t.Fatal(err)
	}
	in := r.Inputs[0]
	if !strings.Contains(in.Error, "unexpected EOF") || !strings.Contains(in.Error, "rest of the input not read") {
		t.Errorf("input error = %q", in.Error)
	}
	if r.Events.Read == 0 || r.Events.Read >= 71 {
		t.Errorf("events = %+v", r.Events)
	}
	if !strings.HasPrefix(warn.String(), path+": read error at line ") {
		t.Errorf("warning = %q", warn.String())
	}
	if out := table(t, r); !strings.Contains(out, "input:  "+path+": read error") {
		t.Errorf("headline lacks the read error:\n%s", firstLines(out, 6))
	}
}

// TestCheckInputs: every path is checked before anything is read.
func TestCheckInputs(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok.log")
	if err := os.WriteFile(ok, []byte(scenarioLog()), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.log")
	tests := []struct {
		name  string
		paths []string
		want  string
	}{
		{"ok", []string{ok, "-"}, ""},
		{"none", nil, "no input files (use - for standard input)"},
		{"missing", []string{ok, missing}, "audit log " + missing + ": stat " + missing + ": no such file or directory"},
		{"directory", []string{dir}, "audit log " + dir + ": is a directory"},
		{"stdin twice", []string{"-", "-"}, "standard input (-) given more than once"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckInputs(tc.paths)
			if (err == nil) != (tc.want == "") || err != nil && err.Error() != tc.want {
				t.Errorf("CheckInputs = %v, want %q", err, tc.want)
			}
		})
	}
	if r, err := Run([]string{ok, missing}, Options{}); err == nil || r != nil {
		t.Errorf("Run with a missing file = %v, %v; want an error before reading", r, err)
	}
}

// TestOptions rejects what cannot work.
func TestOptions(t *testing.T) {
	bad := config.Default()
	bad.Accounting.RelistThreshold = 0
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"short window", Options{Window: 30e9}, "window 30s: must be at least 1m"},
		{"negative top", Options{Top: -1}, "top -1"},
		{"bad config", Options{Config: bad}, "accounting.relistThreshold 0"},
	} {
		if _, err := New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
