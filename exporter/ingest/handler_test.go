package ingest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/herd-k8s/herd/internal/webauth"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/herd-k8s/herd/exporter/ingest"
)

// reply is the 200 answer of POST /audit.
type reply struct {
	Accounted, Duplicate, Malformed, Oversized, Unrecognized, Skipped int
}

func parseReply(t testing.TB, body string) reply {
	t.Helper()
	var r reply
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("reply %q: %v", body, err)
	}
	return r
}

// TestAuditBodies posts one body per case to a fresh exporter and checks the
// status, what the answer says, and every audit counter, exactly: nothing a
// sender sends goes uncounted.
func TestAuditBodies(t *testing.T) {
	ten := events(10)
	full := list(ten...)
	cut := full[:strings.Index(full, ten[5])+len(ten[5])/2] // in the middle of items[5]

	bigUA := strings.Repeat("k", 200<<10)                                           // a 200 KiB field: big, but the event fits in 256 KiB
	bigObject := `"requestObject":{"data":"` + strings.Repeat("x", 300<<10) + `"},` // makes an event of ~300 KiB
	deepField := `"annotations":` + strings.Repeat(`{"a":`, 10000) + `1` + strings.Repeat(`}`, 10000) + `,`

	ndjsonType := []string{"Content-Type", "application/x-ndjson"}
	tests := []struct {
		name   string
		body   string
		header []string
		code   int
		reply  reply    // for 200
		errHas []string // for 4xx: the message says what and where
		counts map[string]float64
	}{
		{
			name: "EventList", body: list(events(3)...), code: 200, reply: reply{Accounted: 3},
			counts: map[string]float64{"events{webhook,accounted}": 3, "requests{webhook,200}": 1},
		},
		{
			name: "truncated JSON", body: cut, code: 400,
			errHas: []string{"unexpected end of JSON", "at offset " + fmt.Sprint(len(cut)), "accounted 5 events before it"},
			counts: map[string]float64{"events{webhook,accounted}": 5, "events{webhook,malformed}": 1, "requests{webhook,400}": 1,
				"bytes{webhook}": float64(len(cut))},
		},
		{
			name: "truncated after the last event", body: full[:len(full)-2], code: 400,
			errHas: []string{"unexpected end of JSON", "accounted 10 events before it"},
			counts: map[string]float64{"events{webhook,accounted}": 10, "events{webhook,malformed}": 1, "requests{webhook,400}": 1},
		},
		{
			// Nothing accounted is never 200 (issue 13): the sender must know.
			name: "wrong kind at the top", body: `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x"}}`, code: 400,
			errHas: []string{"no audit event accounted: line 1: event at offset 0: kind is not Event"},
			counts: map[string]float64{"events{webhook,malformed}": 1, "requests{webhook,400}": 1},
		},
		{
			name: "wrong kind and apiVersion among items", code: 200, reply: reply{Accounted: 2, Malformed: 2},
			body:   list(ev(), `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x"}}`, ev(`"level"`, `"apiVersion":"v1","level"`), ev()),
			counts: map[string]float64{"events{webhook,accounted}": 2, "events{webhook,malformed}": 2, "requests{webhook,200}": 1},
		},
		{
			name: "items not an array", body: `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{"0":` + ev() + `}}`, code: 400,
			errHas: []string{"EventList items is an object, want an array", "at offset 59"},
			counts: map[string]float64{"events{webhook,malformed}": 1, "requests{webhook,400}": 1},
		},
		{
			name: "items a string", body: `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":"[]"}`, code: 400,
			errHas: []string{"items is a string, want an array"},
			counts: map[string]float64{"events{webhook,malformed}": 1, "requests{webhook,400}": 1},
		},
		{
			name: "items of numbers and nulls", body: list("1", "null", ev()), code: 200, reply: reply{Accounted: 1, Malformed: 2},
			counts: map[string]float64{"events{webhook,accounted}": 1, "events{webhook,malformed}": 2, "requests{webhook,200}": 1},
		},
		{
			name: "events missing auditID, stage and verb", code: 400, errHas: []string{"no audit event accounted: line 1: items[0] at offset 74: missing auditID"},
			body:   list(ev(`"auditID"`, `"x"`), ev(`"stage"`, `"x"`), ev(`"verb"`, `"x"`)),
			counts: map[string]float64{"events{webhook,malformed}": 3, "requests{webhook,400}": 1},
		},
		{
			name: "top-level null", body: `null`, code: 400, errHas: []string{"top-level value is null", "at offset 0"},
			counts: map[string]float64{"events{webhook,malformed}": 1, "requests{webhook,400}": 1},
		},
		{
			name: "empty body", body: ``, code: 400, errHas: []string{"empty body"},
			counts: map[string]float64{"events{webhook,malformed}": 1, "requests{webhook,400}": 1},
		},
		{
			name: "not JSON", body: "<html>hello</html>", code: 400, errHas: []string{"at offset 0"},
			counts: map[string]float64{"events{webhook,malformed}": 1, "requests{webhook,400}": 1},
		},
		{
			name: "10,000 nested arrays", body: strings.Repeat("[", 10000), code: 400,
			errHas: []string{"nesting deeper than 256 levels", "at offset 256"},
			counts: map[string]float64{"events{webhook,malformed}": 1, "requests{webhook,400}": 1},
		},
		{
			name: "10,000 nested objects inside an event", body: list(ev(), ev(`"annotations":`, deepField+`"x":`)), code: 400,
			errHas: []string{"nesting deeper than 256 levels", "accounted 1 events before it"},
			counts: map[string]float64{"events{webhook,accounted}": 1, "events{webhook,malformed}": 1, "requests{webhook,400}": 1},
		},
		{
			name: "a 200 KiB user agent", body: list(ev(`kubelet/v1.36.3 (linux/amd64) kubernetes/6a1f4c3`, "kubelet/"+bigUA)), code: 200, reply: reply{Accounted: 1},
			counts: map[string]float64{"events{webhook,accounted}": 1, "requests{webhook,200}": 1},
		},
		{
			name: "a 300 KiB event among four", code: 200, reply: reply{Accounted: 3, Oversized: 1},
			body:   list(ev(), ev(), ev(`"level"`, bigObject+`"level"`), ev()),
			counts: map[string]float64{"events{webhook,accounted}": 3, "events{webhook,oversized}": 1, "requests{webhook,200}": 1},
		},
		{
			// A label value that is not UTF-8 would fail every later scrape.
			name: "invalid UTF-8 in fields that become labels", code: 200, reply: reply{Accounted: 1, Malformed: 4},
			body: list(ev(`system:node:node-1`, "system:node:n\xff"), ev(`"verb":"list"`, "\"verb\":\"li\xc3\x28st\""),
				ev(`"resource":"pods"`, "\"resource\":\"po\xfeds\""), ev(`"sourceIPs":["10.0.0.1"]`, "\"sourceIPs\":[\"10.0.0.\xff\"]"), ev()),
			counts: map[string]float64{"events{webhook,accounted}": 1, "events{webhook,malformed}": 4, "requests{webhook,200}": 1},
		},
		{
			name: "invalid UTF-8 elsewhere", code: 200, reply: reply{Accounted: 1},
			body:   list(ev(`"authorization.k8s.io/reason":""`, "\"authorization.k8s.io/reason\":\"\xff\xfe\"")),
			counts: map[string]float64{"events{webhook,accounted}": 1, "requests{webhook,200}": 1},
		},
		{
			name: "a batch sent twice in one body", code: 200, reply: reply{Accounted: 2, Duplicate: 2},
			body:   func() string { e := events(2); return list(e...) + "\n" + list(e...) }(),
			counts: map[string]float64{"events{webhook,accounted}": 2, "events{webhook,duplicate}": 2, "requests{webhook,200}": 1},
		},
		{
			name: "NDJSON with a bad line in the middle", header: ndjsonType, code: 200, reply: reply{Accounted: 4, Malformed: 1},
			body:   strings.Join([]string{ev(), ev(), `{"auditID": oops`, ev(), "", ev()}, "\n") + "\n",
			counts: map[string]float64{"events{ndjson,accounted}": 4, "events{ndjson,malformed}": 1, "requests{ndjson,200}": 1},
		},
		{
			name: "NDJSON with an oversized line", header: ndjsonType, code: 200, reply: reply{Accounted: 1, Oversized: 1},
			body:   ev(`"level"`, bigObject+`"level"`) + "\n" + ev() + "\n",
			counts: map[string]float64{"events{ndjson,accounted}": 1, "events{ndjson,oversized}": 1, "requests{ndjson,200}": 1},
		},
		{
			name: "NDJSON of nothing but bad lines", header: ndjsonType, code: 400, errHas: []string{"line 1:"},
			body:   "nope\n{\n",
			counts: map[string]float64{"events{ndjson,malformed}": 2, "requests{ndjson,400}": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newAudit(t, nil)
			code, msg := post(t, e.AuditHandler(), tt.body, tt.header...)
			if code != tt.code {
				t.Fatalf("status %d, want %d: %.300s", code, tt.code, msg)
			}
			if code == 200 {
				if got := parseReply(t, msg); got != tt.reply {
					t.Errorf("reply %+v, want %+v", got, tt.reply)
				}
			}
			for _, s := range tt.errHas {
				if !strings.Contains(msg, s) {
					t.Errorf("message %.300q lacks %q", msg, s)
				}
			}
			if _, ok := tt.counts["bytes{webhook}"]; !ok && len(tt.header) == 0 {
				tt.counts["bytes{webhook}"] = float64(len(tt.body))
			}
			wantCounts(t, e.Registry(), tt.counts)
			// Whatever was sent, /metrics still serves.
			rec := httptest.NewRecorder()
			e.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			if rec.Code != 200 {
				t.Errorf("GET /metrics = %d: %.500s", rec.Code, rec.Body)
			}
		})
	}
}

// TestAuditDuplicateBatch re-sends a batch, as the apiserver does after a
// timeout: the second time every event is a duplicate. The exposition is
// checked whole with client_golang's testutil.
func TestAuditDuplicateBatch(t *testing.T) {
	e := newAudit(t, nil)
	body := list(events(400)...)
	if code, msg := post(t, e.AuditHandler(), body); code != 200 || parseReply(t, msg) != (reply{Accounted: 400}) {
		t.Fatalf("first: %d %s", code, msg)
	}
	if code, msg := post(t, e.AuditHandler(), body); code != 200 || parseReply(t, msg) != (reply{Duplicate: 400}) {
		t.Fatalf("second: %d %s", code, msg)
	}
	// The same events as JSON lines are duplicates too: the key is
	// (auditID, stage), whatever carried them.
	var nd strings.Builder
	var l struct{ Items []json.RawMessage }
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatal(err)
	}
	for _, it := range l.Items[:10] {
		nd.Write(it)
		nd.WriteByte('\n')
	}
	if code, msg := post(t, e.AuditHandler(), nd.String(), "Content-Type", "application/x-ndjson; charset=utf-8"); code != 200 || parseReply(t, msg) != (reply{Duplicate: 10}) {
		t.Fatalf("as NDJSON: %d %s", code, msg)
	}
	want := `
# HELP herd_audit_events_total Audit events received, by source and what became of them (accounted, duplicate, malformed, oversized, unrecognized, skipped).
# TYPE herd_audit_events_total counter
herd_audit_events_total{result="accounted",source="file"} 0
herd_audit_events_total{result="accounted",source="firehose"} 0
herd_audit_events_total{result="accounted",source="ndjson"} 0
herd_audit_events_total{result="accounted",source="webhook"} 400
herd_audit_events_total{result="duplicate",source="file"} 0
herd_audit_events_total{result="duplicate",source="firehose"} 0
herd_audit_events_total{result="duplicate",source="ndjson"} 10
herd_audit_events_total{result="duplicate",source="webhook"} 400
herd_audit_events_total{result="malformed",source="file"} 0
herd_audit_events_total{result="malformed",source="firehose"} 0
herd_audit_events_total{result="malformed",source="ndjson"} 0
herd_audit_events_total{result="malformed",source="webhook"} 0
herd_audit_events_total{result="oversized",source="file"} 0
herd_audit_events_total{result="oversized",source="firehose"} 0
herd_audit_events_total{result="oversized",source="ndjson"} 0
herd_audit_events_total{result="oversized",source="webhook"} 0
herd_audit_events_total{result="skipped",source="file"} 0
herd_audit_events_total{result="skipped",source="firehose"} 0
herd_audit_events_total{result="skipped",source="ndjson"} 0
herd_audit_events_total{result="skipped",source="webhook"} 0
herd_audit_events_total{result="unrecognized",source="file"} 0
herd_audit_events_total{result="unrecognized",source="firehose"} 0
herd_audit_events_total{result="unrecognized",source="ndjson"} 0
herd_audit_events_total{result="unrecognized",source="webhook"} 0
# HELP herd_audit_requests_total Requests to the audit ingest endpoint, by source and HTTP status code.
# TYPE herd_audit_requests_total counter
herd_audit_requests_total{code="200",source="ndjson"} 1
herd_audit_requests_total{code="200",source="webhook"} 2
`
	if err := testutil.GatherAndCompare(e.Registry(), strings.NewReader(want), "herd_audit_events_total", "herd_audit_requests_total"); err != nil {
		t.Error(err)
	}
}

// TestAuditMethod: only POST.
func TestAuditMethod(t *testing.T) {
	e := newAudit(t, nil)
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodHead} {
		rec := httptest.NewRecorder()
		e.AuditHandler().ServeHTTP(rec, httptest.NewRequest(m, "/audit", strings.NewReader(list(ev()))))
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "POST" {
			t.Errorf("%s: %d, Allow %q", m, rec.Code, rec.Header().Get("Allow"))
		}
	}
	wantCounts(t, e.Registry(), map[string]float64{"requests{webhook,405}": 4})
}

// TestAuditTooLarge: a body over 16 MiB is refused with 413, up front when
// it declares its length and once 16 MiB + 1 byte have been read when it
// is sent chunked; nothing in it is accounted. Exactly 16 MiB is fine.
func TestAuditTooLarge(t *testing.T) {
	e := newAudit(t, nil)
	s := serve(t, e.AuditHandler())
	c := s.Client()

	// 17 MiB of valid events (to show nothing is decoded, not even a prefix).
	one := ev()
	var b bytes.Buffer
	b.WriteString(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[`)
	for b.Len() < 17<<20 {
		b.WriteString(ev())
		b.WriteByte(',')
	}
	b.WriteString(one + "]}")
	huge := b.Bytes()

	code, msg := postHTTP(t, c, s.URL, bytes.NewReader(huge), int64(len(huge)))
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, fmt.Sprintf("body of %d bytes exceeds the 16777216-byte limit", len(huge))) {
		t.Errorf("with Content-Length: %d %q", code, msg)
	}
	// Chunked: the handler cannot know the length until it has read past
	// the limit. (io.MultiReader hides the length from net/http.)
	code, msg = postHTTP(t, c, s.URL, io.MultiReader(bytes.NewReader(huge)), -1)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "body exceeds the 16777216-byte limit") {
		t.Errorf("chunked: %d %q", code, msg)
	}
	wantCounts(t, e.Registry(), map[string]float64{"requests{webhook,413}": 2, "bytes{webhook}": 0})

	// At the limit exactly: accepted, chunked too.
	atLimit := list(one)
	atLimit = atLimit[:len(atLimit)-1] + strings.Repeat(" ", 16<<20-len(atLimit)) + "}"
	code, msg = postHTTP(t, c, s.URL, io.MultiReader(strings.NewReader(atLimit)), -1)
	if code != 200 || parseReply(t, msg) != (reply{Accounted: 1}) {
		t.Errorf("16 MiB chunked: %d %.200s", code, msg)
	}
	wantCounts(t, e.Registry(), map[string]float64{"requests{webhook,413}": 2, "requests{webhook,200}": 1,
		"events{webhook,accounted}": 1, "bytes{webhook}": 16 << 20})
}

// TestAuditAuth: with a token file, a request without the token, with a
// wrong one or one of another length, or with another scheme is 401; a
// rotated file takes effect within about a second and the old token stops
// working.
func TestAuditAuth(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	const tokA, tokB = "s3cr3t-token-aaaaaaaaaaaaaaaaaaaaa", "s3cr3t-token-bbbbbbbbbbbbbbbbbbbbb"
	if err := os.WriteFile(path, []byte(tokA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := webauth.NewTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e := newAudit(t, func(o *ingest.HandlerOptions) { o.Tokens = tokens })
	h := e.AuditHandler()
	s := serve(t, h)
	try := func(auth string) int {
		t.Helper()
		var hdr []string
		if auth != "" {
			hdr = []string{"Authorization", auth}
		}
		code, _ := postHTTP(t, s.Client(), s.URL, strings.NewReader(list(ev())), -1, hdr...)
		return code
	}
	for _, auth := range []string{"", "Bearer ", "Bearer wrong", "Bearer " + tokA[:len(tokA)-1], "Bearer " + tokA + "x",
		"Basic " + tokA, "bearer" + tokA, tokA} {
		if code := try(auth); code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d, want 401", auth, code)
		}
	}
	if code := try("Bearer " + tokA); code != 200 {
		t.Fatalf("right token: %d", code)
	}
	// Rotate (write a temp file and rename, as a Secret volume does).
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(tokB), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()
	for try("Bearer "+tokB) != 200 {
		if time.Since(rotated) > 3*time.Second {
			t.Fatal("the rotated token is not accepted after 3s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(rotated)
	if code := try("Bearer " + tokA); code != http.StatusUnauthorized {
		t.Errorf("old token after rotation: %d, want 401", code)
	}
	t.Logf("rotated token accepted after %v", took.Round(10*time.Millisecond))
	// An empty file (a writer caught mid-way) keeps the last good token.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if code := try("Bearer " + tokB); code != 200 {
		t.Errorf("token while the file is empty: %d, want 200 (last good token)", code)
	}
	code401 := auditCounts(t, e.Registry())["requests{webhook,401}"]
	if code401 < 9 {
		t.Errorf("requests{webhook,401} = %v, want at least 9", code401)
	}
	if got := auditCounts(t, e.Registry())["events{webhook,accounted}"]; got != auditCounts(t, e.Registry())["requests{webhook,200}"] {
		t.Errorf("accounted %v events from %v accepted requests of one event", got, auditCounts(t, e.Registry())["requests{webhook,200}"])
	}
}

// stalledBody sends its first bytes and then blocks until released: a
// sender on a bad link.
type stalledBody struct {
	first   []byte
	rest    []byte
	release chan struct{}
	sent    chan struct{} // closed once the first bytes have gone
	once    sync.Once
	freed   sync.Once
	stage   int
}

// free lets the rest of the body go.
func (s *stalledBody) free() { s.freed.Do(func() { close(s.release) }) }

func newStalledBody(body string, split int) *stalledBody {
	return &stalledBody{first: []byte(body[:split]), rest: []byte(body[split:]), release: make(chan struct{}), sent: make(chan struct{})}
}

func (s *stalledBody) Read(p []byte) (int, error) {
	switch {
	case len(s.first) > 0:
		n := copy(p, s.first)
		s.first = s.first[n:]
		return n, nil
	case s.stage == 0:
		s.stage = 1
		s.once.Do(func() { close(s.sent) })
		<-s.release
	}
	if len(s.rest) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.rest)
	s.rest = s.rest[n:]
	return n, nil
}

// TestAuditSlowSenders: senders whose bodies trickle in hold buffer memory,
// not decode slots, so with MaxInFlight stalled senders others are still
// served at once. They hold only what they have sent, not what they
// declared (issue 16.8): only when stalled senders have sent all the buffer
// memory's worth (MaxInFlight largest bodies, by default) do others get
// 503, after the queue wait, and they are counted.
func TestAuditSlowSenders(t *testing.T) {
	const slots = 2
	e := newAudit(t, func(o *ingest.HandlerOptions) {
		o.MaxInFlight = slots
		o.MaxBodyBytes = 1 << 20 // buffer memory: 2 × 1 MiB
	})
	s := serve(t, e.AuditHandler())
	c := s.Client()

	var wg sync.WaitGroup
	sendFirst := func(body string) int { return len(body) / 3 }
	stall := func(body string, declared bool) *stalledBody {
		sb := newStalledBody(body, sendFirst(body))
		t.Cleanup(sb.free) // a failing test must not leave senders stalled
		cl := int64(-1)
		if declared {
			cl = int64(len(body))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, msg := postHTTP(t, c, s.URL, sb, cl); code != 200 {
				t.Errorf("stalled sender: %d %s", code, msg)
			}
		}()
		<-sb.sent
		return sb
	}

	// More stalled senders than decode slots, each with a small batch.
	var small []*stalledBody
	for i := 0; i < slots+1; i++ {
		small = append(small, stall(list(events(20)...), i%2 == 0))
	}
	time.Sleep(100 * time.Millisecond) // let the handler block in the reads
	start := time.Now()
	for i := 0; i < 5; i++ {
		if code, msg := postHTTP(t, c, s.URL, strings.NewReader(list(events(20)...)), -1); code != 200 {
			t.Fatalf("with %d stalled senders: %d %s", len(small), code, msg)
		}
	}
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Errorf("5 posts took %v next to stalled senders: they queued", took)
	}
	for _, sb := range small {
		sb.free()
	}
	wg.Wait()

	pad := func(n int) string {
		b := list(ev())
		return b[:len(b)-1] + strings.Repeat(" ", n-len(b)) + "}"
	}
	// Two stalled senders that declared 1 MiB bodies and sent a third hold
	// a third each, not all the buffer memory: others are served.
	var big []*stalledBody
	for i := 0; i < slots; i++ {
		big = append(big, stall(pad(1<<20), true))
	}
	time.Sleep(100 * time.Millisecond)
	if code, msg := postHTTP(t, c, s.URL, strings.NewReader(list(events(20)...)), -1); code != 200 {
		t.Errorf("next to senders that declared more than they sent: %d %q, want 200", code, msg)
	}
	for _, sb := range big {
		sb.free()
	}
	wg.Wait()

	// Two stalled senders that sent almost all of 1 MiB hold all the buffer
	// memory: the next sender waits the queue wait (1 s), then gets 503.
	sendFirst = func(body string) int { return len(body) - 10 }
	big = big[:0]
	for i := 0; i < slots; i++ {
		big = append(big, stall(pad(1<<20), true))
	}
	time.Sleep(100 * time.Millisecond)
	start = time.Now()
	code, msg := postHTTP(t, c, s.URL, strings.NewReader(list(events(20)...)), -1)
	if code != http.StatusServiceUnavailable || !strings.Contains(msg, "overloaded") {
		t.Errorf("with the buffer memory reserved: %d %q, want 503", code, msg)
	}
	if took := time.Since(start); took < 900*time.Millisecond || took > 5*time.Second {
		t.Errorf("503 after %v, want after the 1s queue wait", took)
	}
	// A sender that is queued when memory frees up gets in.
	done := make(chan int)
	go func() {
		code, _ := postHTTP(t, c, s.URL, strings.NewReader(list(events(20)...)), -1)
		done <- code
	}()
	time.Sleep(200 * time.Millisecond)
	big[0].free()
	if code := <-done; code != 200 {
		t.Errorf("queued sender after memory was released: %d", code)
	}
	big[1].free()
	wg.Wait()

	wantCounts(t, e.Registry(), map[string]float64{
		"requests{webhook,200}": slots + 1 + 5 + 1 + slots + slots + 1, "requests{webhook,503}": 1,
		"events{webhook,accounted}": 20*(slots+1+5+1+1) + 2*slots,
	})
}

// TestAuditTricklingSenders reproduces issue 16.8: eight authenticated
// connections declaring 16 MiB bodies and sending a byte at a time. Other
// batches are still answered 200 at once (the tricklers hold what they sent,
// not what they declared), and each trickler is cut off when its body is
// slower than MinBodyRate allows (BodyGrace + declared size / rate), not
// after the server's 60 s ReadTimeout.
func TestAuditTricklingSenders(t *testing.T) {
	e := newAudit(t, func(o *ingest.HandlerOptions) {
		o.MinBodyRate = 16 << 20 // 16 MiB/s: a 16 MiB body gets grace + 1 s
		o.BodyGrace = time.Second
	})
	s := serve(t, e.AuditHandler())
	type result struct {
		code int
		took time.Duration
	}
	results := make(chan result, 8)
	stop := make(chan struct{})
	defer close(stop)
	for i := 0; i < 8; i++ {
		go func() {
			pr, pw := io.Pipe()
			go func() {
				for {
					select {
					case <-stop:
						pw.Close()
						return
					case <-time.After(50 * time.Millisecond):
						if _, err := pw.Write([]byte{' '}); err != nil {
							return
						}
					}
				}
			}()
			start := time.Now()
			req, _ := http.NewRequest(http.MethodPost, s.URL+"/audit", pr)
			req.ContentLength = 16 << 20
			code := 0
			if resp, err := s.Client().Do(req); err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
			pr.Close()
			results <- result{code, time.Since(start)}
		}()
	}
	time.Sleep(300 * time.Millisecond) // all eight are trickling
	for i := 0; i < 10; i++ {
		start := time.Now()
		if code, msg := postHTTP(t, s.Client(), s.URL, strings.NewReader(list(events(20)...)), -1); code != 200 {
			t.Fatalf("batch %d next to 8 trickling senders: %d %s", i, code, msg)
		}
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Errorf("batch %d took %v next to 8 trickling senders", i, took)
		}
	}
	for i := 0; i < 8; i++ {
		select {
		case r := <-results:
			// Cut at grace (1 s) + 16 MiB at 16 MiB/s (1 s): the answer is
			// 408 when the server could still write it, else the
			// connection is closed (code 0).
			if r.code != http.StatusRequestTimeout && r.code != 0 {
				t.Errorf("trickling sender got %d", r.code)
			}
			if r.took < 1900*time.Millisecond || r.took > 10*time.Second {
				t.Errorf("trickling sender cut after %v, want about 2s", r.took)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a trickling sender was never cut off")
		}
	}
}

// TestAuditConcurrentPosters: many senders at once (run with -race), with
// some batches sent twice: every event is counted exactly once as accounted
// or duplicate.
func TestAuditConcurrentPosters(t *testing.T) {
	e := newAudit(t, nil)
	s := serve(t, e.AuditHandler())
	const posters, perPoster, size = 8, 12, 50
	var wg sync.WaitGroup
	for p := 0; p < posters; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perPoster; i++ {
				body := list(events(size)...)
				ct := "application/json"
				if i%3 == 2 { // the same events as JSON lines
					var l struct{ Items []json.RawMessage }
					_ = json.Unmarshal([]byte(body), &l)
					var nd bytes.Buffer
					for _, it := range l.Items {
						nd.Write(it)
						nd.WriteByte('\n')
					}
					body, ct = nd.String(), "application/x-ndjson"
				}
				code, msg := postHTTP(t, s.Client(), s.URL, strings.NewReader(body), int64(len(body)), "Content-Type", ct)
				if code != 200 || parseReply(t, msg) != (reply{Accounted: size}) {
					t.Errorf("poster %d batch %d: %d %s", p, i, code, msg)
				}
				if i%4 == 0 { // re-sent
					code, msg := postHTTP(t, s.Client(), s.URL, strings.NewReader(body), int64(len(body)), "Content-Type", ct)
					if code != 200 || parseReply(t, msg) != (reply{Duplicate: size}) {
						t.Errorf("poster %d batch %d again: %d %s", p, i, code, msg)
					}
				}
			}
		}()
	}
	// Scrape while they post.
	for i := 0; i < 5; i++ {
		rec := httptest.NewRecorder()
		e.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != 200 {
			t.Errorf("scrape: %d", rec.Code)
		}
	}
	wg.Wait()
	// Per poster: batches 0..11; NDJSON are 2, 5, 8, 11; re-sent are 0, 4, 8.
	wantCounts(t, e.Registry(), map[string]float64{
		"events{webhook,accounted}": posters * 8 * size, "events{ndjson,accounted}": posters * 4 * size,
		"events{webhook,duplicate}": posters * 2 * size, "events{ndjson,duplicate}": posters * 1 * size,
		"requests{webhook,200}": posters * (8 + 2), "requests{ndjson,200}": posters * (4 + 1),
	})
}
