package analyze

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herd-k8s/herd/exporter/config"
)

var fuzzConfig config.Config

// FuzzAnalyzeInput drives the mode detection and both reading paths (lines
// and document) with arbitrary input. Whatever the bytes, reading must not
// panic or fail (a bytes.Reader never errors), every event must be either
// accounted or a duplicate, the mode must be what DetectMode says, both
// outputs must render, and reading the same input again must account
// nothing new.
func FuzzAnalyzeInput(f *testing.F) {
	// Small limits keep each run cheap (the line buffer is sized by
	// MaxBodyBytes) and let the fuzzer reach the oversized paths.
	fuzzConfig = config.Default()
	fuzzConfig.Ingest.MaxBodyBytes, fuzzConfig.Ingest.MaxEventBytes = 64<<10, 4<<10
	for _, dir := range []string{publicDir, filepath.Join("..", "..", "testdata", "audit")} {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, p := range files {
			if strings.HasSuffix(p, ".md") || strings.HasSuffix(p, "scenario.json") {
				continue
			}
			if b, err := os.ReadFile(p); err == nil {
				f.Add(small(b))
			}
		}
	}
	f.Add(small([]byte(scenarioLog())))
	f.Add(small(prettyEventList(f)))
	f.Add(small(webhookBatches(f, 2)))
	f.Add([]byte(""))
	f.Add([]byte("\n\n  \n"))
	f.Add([]byte("{\n"))
	f.Add([]byte("[\n{\"kind\":\"Event\"},\n"))
	f.Add([]byte("\xef\xbb\xbf{\"kind\":\"Ev\n{}\n"))
	// Timestamps the ledger's windows cannot place: before 1970, at the epoch.
	for _, ts := range []string{"1900-01-01T00:00:00Z", "1970-01-01T00:00:01Z", "2262-04-11T23:47:16Z", "nope"} {
		f.Add([]byte(`{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","stage":"ResponseComplete","verb":"list",` +
			`"user":{"username":"system:node:n"},"sourceIPs":["10.0.0.1"],"objectRef":{"resource":"pods"},` +
			`"requestURI":"/api/v1/pods","responseStatus":{"code":504,"message":"Too large resource version"},"stageTimestamp":"` + ts + `"}` + "\n"))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := New(Options{Config: fuzzConfig, Top: 3, MaxDocumentBytes: 4 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Read("fuzz", bytes.NewReader(data)); err != nil && len(data) <= 4<<20 {
			t.Fatalf("Read: %v", err)
		}
		r := a.Report()
		e := r.Events
		if e.Read != e.Accounted+e.Duplicate || r.Inputs[0].Events != e.Read {
			t.Fatalf("events do not add up: %+v, input %+v", e, r.Inputs[0])
		}
		if want := DetectMode(data); r.Inputs[0].Mode != want {
			t.Fatalf("mode %s, DetectMode says %s", r.Inputs[0].Mode, want)
		}
		var out bytes.Buffer
		if err := r.WriteJSON(&out); err != nil || !json.Valid(out.Bytes()) {
			t.Fatalf("WriteJSON: %v\n%s", err, out.String())
		}
		out.Reset()
		if err := r.WriteTable(&out); err != nil {
			t.Fatalf("WriteTable: %v", err)
		}
		for _, rows := range []int{len(r.Relisting.Rows), len(r.TooLarge.Rows), len(r.Ghosts.Rows), len(r.Errors.Rows)} {
			if rows > 3 {
				t.Fatalf("a section has %d rows, --top is 3", rows)
			}
		}
		accounted := e.Accounted
		if err := a.Read("again", bytes.NewReader(data)); err != nil && len(data) <= 4<<20 {
			t.Fatalf("second Read: %v", err)
		}
		if again := a.Report().Events; again.Accounted != accounted {
			t.Fatalf("the same input again accounted %d new events", again.Accounted-accounted)
		}
	})
}

// small cuts a seed to its first lines within 4 KiB (a single long line is
// simply cut). The fuzzer minimizes every input that finds new coverage, and
// minimizing one of tens of KiB takes minutes per input, which stalls
// fuzzing; small seeds reach the same code.
func small(b []byte) []byte {
	const limit = 4 << 10
	if len(b) <= limit {
		return b
	}
	if i := bytes.LastIndexByte(b[:limit], '\n'); i > 0 {
		return b[:i+1]
	}
	return b[:limit]
}
