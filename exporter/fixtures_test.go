package exporter_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/classify"
	"github.com/herd-k8s/herd/exporter/ingest"
)

// scenario is testdata/audit/scenario.json: what the recorded requests were.
type scenario struct {
	Expected []struct {
		User, UserAgent, Verb, APIGroup, Resource, Kind, Consistency string
		Code, Requests                                               int
	} `json:"expected"`
}

// wantFromScenario derives every audit-derived series herd must report for
// the recorded scenario, independently of the ledger's code.
func wantFromScenario(t *testing.T) map[string]float64 {
	t.Helper()
	b, err := os.ReadFile("../testdata/audit/scenario.json")
	if err != nil {
		t.Fatal(err)
	}
	var s scenario
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	cls, _ := classify.New(nil)
	want := map[string]float64{}
	for _, e := range s.Expected {
		c := cls.Classify([]byte(e.User), []byte(e.UserAgent))
		role, client := c.Role.String(), c.Client
		res := e.Resource
		if e.APIGroup != "" {
			res += "." + e.APIGroup
		}
		n := float64(e.Requests)
		want[fmt.Sprintf("herd_requests_total{client=%s,code=%d,role=%s,verb=%s}", client, e.Code, role, e.Verb)] += n
		if e.Code == 401 || e.Code == 403 {
			continue // refused: counted as a request, nothing else
		}
		switch e.Kind {
		case "list", "watchlist":
			want[fmt.Sprintf("herd_relists_total{client=%s,consistency=%s,resource=%s,role=%s}", client, e.Consistency, res, role)] += n
		case "page":
			want[fmt.Sprintf("herd_list_pages_total{client=%s,resource=%s,role=%s}", client, res, role)] += n
		case "create":
			if e.Resource == "tokenreviews" {
				want[fmt.Sprintf("herd_tokenreviews_total{client=%s,role=%s}", client, role)] += n
			}
		}
		if e.Code == 504 {
			want[fmt.Sprintf("herd_too_large_resource_version_total{client=%s,detected_by=status,resource=%s,role=%s}", client, res, role)] += n
		}
	}
	return want
}

// counters returns the exporter's counter series in the same notation.
func counters(t *testing.T, e *exporter.Exporter) map[string]float64 {
	t.Helper()
	families, err := e.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		switch mf.GetName() {
		case "herd_requests_total", "herd_relists_total", "herd_list_pages_total", "herd_tokenreviews_total", "herd_too_large_resource_version_total":
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			var l []string
			for _, lp := range m.GetLabel() {
				// scenario.json does not record selectors: relists of every
				// shape of a stream add up (TestRelistShapes checks shapes).
				if lp.GetName() != "shape" {
					l = append(l, lp.GetName()+"="+lp.GetValue())
				}
			}
			sort.Strings(l)
			if mf.GetType() == dto.MetricType_COUNTER {
				got[mf.GetName()+"{"+strings.Join(l, ",")+"}"] += m.GetCounter().GetValue()
			}
		}
	}
	return got
}

func compare(t *testing.T, path string, got, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %g, want %g", path, k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected series %s = %g", path, k, v)
		}
	}
}

// TestRecordedFixtures replays what the real apiserver sent (make fixtures)
// through both inputs: the webhook batches through POST /audit, and the log
// file through the line sink. Both must report exactly the scenario, and a
// second delivery of every batch must change nothing.
func TestRecordedFixtures(t *testing.T) {
	want := wantFromScenario(t)
	if len(want) < 10 {
		t.Fatalf("scenario.json yields only %d series; the fixtures are broken", len(want))
	}

	viaWebhook := newTestExporter(t)
	batches, err := os.ReadFile("../testdata/audit/webhook-batches.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ { // the second round is all duplicates
		for i, body := range strings.Split(strings.TrimSpace(string(batches)), "\n") {
			rec := httptest.NewRecorder()
			viaWebhook.AuditHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/audit", strings.NewReader(body)))
			if rec.Code != http.StatusOK {
				t.Fatalf("batch %d: %d %s", i, rec.Code, rec.Body)
			}
		}
	}
	compare(t, "webhook", counters(t, viaWebhook), want)

	viaFile := newTestExporter(t)
	f, err := os.Open("../testdata/audit/audit.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sink := viaFile.LineSink(ingest.SourceFile)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if err := sink.Line(sc.Bytes()); err != nil {
			t.Errorf("audit.log:%d: %v", line, err)
		}
	}
	compare(t, "file", counters(t, viaFile), want)
}

var update = flag.Bool("update", false, "rewrite testdata/*.prom from what the code exports now")

// fixtureTime is when TestFixtureExposition reads the ledger: 74 s after
// the last recorded event, so every windowed series is in its window.
var fixtureTime = time.Date(2026, 11, 23, 8, 20, 0, 0, time.UTC)

// TestFixtureExposition replays the recorded webhook batches into an
// exporter whose clock stands at fixtureTime and compares the whole herd_
// exposition (but the scrape durations, the lag histogram that depends on
// the wall clock, and build info) with testdata/fixtures.prom byte for
// byte: restructuring the ledger or the collectors must not change what
// herd exports. A behaviour change rewrites the file (go test -update) and
// shows in review as a diff of series.
func TestFixtureExposition(t *testing.T) {
	// No log file: its path, in the file collector's label, changes per run.
	e := newTestExporter(t, func(o *exporter.Options) { o.LogFiles, o.Now = nil, func() time.Time { return fixtureTime } })
	batches, err := os.ReadFile("../testdata/audit/webhook-batches.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	for i, body := range strings.Split(strings.TrimSpace(string(batches)), "\n") {
		rec := httptest.NewRecorder()
		e.AuditHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/audit", strings.NewReader(body)))
		if rec.Code != http.StatusOK {
			t.Fatalf("batch %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	families, err := e.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for _, mf := range families {
		switch n := mf.GetName(); {
		case !strings.HasPrefix(n, "herd_"), strings.HasPrefix(n, "herd_scrape_collector_"),
			n == "herd_audit_event_lag_seconds", n == "herd_build_info":
			continue
		}
		if _, err := expfmt.MetricFamilyToText(&got, mf); err != nil {
			t.Fatal(err)
		}
	}
	if *update {
		if err := os.WriteFile("testdata/fixtures.prom", got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/fixtures.prom")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("exposition differs from testdata/fixtures.prom (go test -update rewrites it):\n%s", got.Bytes())
	}
}
