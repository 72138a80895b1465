package ingest_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/ingest"
	"github.com/herd-k8s/herd/internal/webauth"
	"github.com/herd-k8s/herd/test/herdtest"
)

// recorded returns the real apiserver's events recorded in testdata/audit
// (kube-apiserver 1.36.3: lists, pages, WatchList relists, watches at both
// stages, creates) as raw JSON lines.
func recorded(t testing.TB) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "audit", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, append([]byte(nil), sc.Bytes()...))
	}
	if len(out) < 60 {
		t.Fatalf("%d recorded events", len(out))
	}
	return out
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// cloudWatchMessage is a CloudWatch Logs subscription DATA_MESSAGE (the
// documented schema) carrying events as EKS ships them: each log event's
// message is one apiserver JSON line.
func cloudWatchMessage(events [][]byte) []byte {
	type logEvent struct {
		ID        string `json:"id"`
		Timestamp int64  `json:"timestamp"`
		Message   string `json:"message"`
	}
	m := struct {
		MessageType         string     `json:"messageType"`
		Owner               string     `json:"owner"`
		LogGroup            string     `json:"logGroup"`
		LogStream           string     `json:"logStream"`
		SubscriptionFilters []string   `json:"subscriptionFilters"`
		LogEvents           []logEvent `json:"logEvents"`
	}{MessageType: "DATA_MESSAGE", Owner: "123456789012", LogGroup: "/aws/eks/prod/cluster",
		LogStream: "kube-apiserver-audit-0a1b2c3d4e5f", SubscriptionFilters: []string{"herd"}}
	for i, e := range events {
		m.LogEvents = append(m.LogEvents, logEvent{ID: fmt.Sprintf("3795%032d", i), Timestamp: 1795000000000 + int64(i), Message: string(e)})
	}
	return mustJSON(m)
}

// logEntry is a GKE Cloud Audit Logs LogEntry for an event, built the way
// GKE maps audit.k8s.io fields (protoPayload: google.cloud.audit.AuditLog).
// With withRequest, protoPayload.request carries the ListOptions.
func logEntry(t testing.TB, raw []byte, withRequest bool) map[string]any {
	var e struct {
		AuditID, Stage, Verb, RequestURI, UserAgent string
		StageTimestamp                              string
		User                                        struct{ Username string }
		SourceIPs                                   []string
		ObjectRef                                   struct{ Resource, APIGroup, APIVersion, Namespace, Name, Subresource string }
		ResponseStatus                              struct {
			Code    int
			Message string
		}
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatal(err)
	}
	group := e.ObjectRef.APIGroup
	if group == "" {
		group = "core"
	}
	rn := group + "/" + e.ObjectRef.APIVersion + "/"
	if e.ObjectRef.Namespace != "" {
		rn += "namespaces/" + e.ObjectRef.Namespace + "/"
	}
	rn += e.ObjectRef.Resource
	if e.ObjectRef.Name != "" {
		rn += "/" + e.ObjectRef.Name
	}
	grpc := map[int]int{200: 0, 201: 0, 403: 7, 404: 5, 409: 6, 504: 4}[e.ResponseStatus.Code]
	status := map[string]any{}
	if grpc != 0 {
		status = map[string]any{"code": grpc, "message": e.ResponseStatus.Message}
	}
	p := map[string]any{
		"@type":              "type.googleapis.com/google.cloud.audit.AuditLog",
		"authenticationInfo": map[string]any{"principalEmail": e.User.Username},
		"authorizationInfo":  []any{map[string]any{"granted": true, "permission": "io.k8s." + group + "." + e.ObjectRef.APIVersion + "." + e.ObjectRef.Resource + "." + e.Verb, "resource": rn}},
		"methodName":         "io.k8s." + group + "." + e.ObjectRef.APIVersion + "." + e.ObjectRef.Resource + "." + e.Verb,
		"requestMetadata":    map[string]any{"callerIp": e.SourceIPs[0], "callerSuppliedUserAgent": e.UserAgent},
		"resourceName":       rn,
		"serviceName":        "k8s.io",
		"status":             status,
	}
	if withRequest {
		if _, q, ok := strings.Cut(e.RequestURI, "?"); ok {
			req := map[string]any{"@type": "k8s.io/meta.v1.ListOptions"}
			for _, kv := range strings.Split(q, "&") {
				k, v, _ := strings.Cut(kv, "=")
				v = strings.ReplaceAll(v, "%3D", "=")
				req[k] = v
			}
			p["request"] = req
		}
	}
	return map[string]any{
		"protoPayload": p, "insertId": "x" + e.AuditID[:8] + e.Stage,
		"resource":  map[string]any{"type": "k8s_cluster", "labels": map[string]any{"project_id": "p", "location": "europe-west1", "cluster_name": "prod"}},
		"timestamp": e.StageTimestamp, "severity": "INFO",
		"logName":          "projects/p/logs/cloudaudit.googleapis.com%2Fdata_access",
		"operation":        map[string]any{"id": e.AuditID, "producer": "k8s.io", "first": e.Stage == "ResponseStarted" || e.Verb != "watch", "last": e.Stage == "ResponseComplete"},
		"receiveTimestamp": e.StageTimestamp,
	}
}

// herdSeries is what herd says about the node-side clients: every series of
// the accounting metrics, and the events accounted.
func herdSeries(t testing.TB, a *auditServer) map[string]float64 {
	t.Helper()
	mfs, err := a.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "herd_relists_total", "herd_list_pages_total", "herd_requests_total", "herd_too_large_resource_version_total", "herd_tokenreviews_total":
		case "herd_audit_events_total":
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				if mf.GetName() == "herd_audit_events_total" && l.GetName() == "source" {
					continue // the same events under another source
				}
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			v := m.GetCounter().GetValue()
			if v != 0 {
				out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] += v
			}
		}
	}
	return out
}

func sumOf(m map[string]float64, prefix string, has ...string) float64 {
	var s float64
outer:
	for k, v := range m {
		if !strings.HasPrefix(k, prefix+"{") {
			continue
		}
		for _, h := range has {
			if !strings.Contains(k, h) {
				continue outer
			}
		}
		s += v
	}
	return s
}

// TestEnvelopes posts the recorded events in every envelope herd
// recognises and checks that herd's counters equal those of the same
// events posted bare, except the GKE losses the test names.
func TestEnvelopes(t *testing.T) {
	evs := recorded(t)
	ndjson := bytes.Join(evs, []byte("\n"))
	bare := newAudit(t, nil)
	if code, msg := post(t, bare.AuditHandler(), string(ndjson), "Content-Type", "application/x-ndjson"); code != 200 {
		t.Fatalf("bare: %d %s", code, msg)
	}
	want := herdSeries(t, bare)
	if want["herd_audit_events_total{result=accounted}"] != float64(len(evs)) {
		t.Fatalf("bare events: %v", want)
	}

	cw := cloudWatchMessage(evs)
	half := len(evs) / 2
	var gke, gkeReq []map[string]any
	for _, e := range evs {
		gke = append(gke, logEntry(t, e, false))
		gkeReq = append(gkeReq, logEntry(t, e, true))
	}
	pubsub := func(entries []map[string]any) string {
		var lines []string
		for i, e := range entries {
			lines = append(lines, string(mustJSON(map[string]any{
				"message":      map[string]any{"data": b64(mustJSON(e)), "messageId": fmt.Sprint(9000 + i), "publishTime": "2026-11-23T08:18:43Z", "attributes": map[string]any{"logging.googleapis.com/timestamp": "2026-11-23T08:18:42Z"}},
				"subscription": "projects/p/subscriptions/herd-audit", "deliveryAttempt": 1,
			})))
		}
		return strings.Join(lines, "\n")
	}
	var jsonLines []string
	for _, e := range gke {
		jsonLines = append(jsonLines, string(mustJSON(e)))
	}
	var aksLines, laRows []string
	for i, e := range evs {
		rec := map[string]any{"time": "2026-11-23T08:18:43.0000000Z", "resourceId": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/PROD",
			"category": "kube-audit", "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
			"properties": map[string]any{"log": string(e) + "\n", "stream": "stdout", "pod": "kube-apiserver-7d9c" + fmt.Sprint(i%3)}}
		aksLines = append(aksLines, string(mustJSON(rec)))
		laRows = append(laRows, string(mustJSON(map[string]any{"TenantId": "t", "TimeGenerated": "2026-11-23T08:18:43Z", "Category": "kube-audit",
			"log_s": string(e), "ResourceId": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/PROD", "Type": "AzureDiagnostics"})))
	}
	aksOther := `{"time":"2026-11-23T08:18:43Z","category":"kube-apiserver","properties":{"log":"I1123 08:18:43 request.go:42] plain log line","stream":"stderr","pod":"kube-apiserver-7d9c0"}}`
	type filtered struct {
		LogStreamName string `json:"logStreamName"`
		Timestamp     int64  `json:"timestamp"`
		Message       string `json:"message"`
		IngestionTime int64  `json:"ingestionTime"`
		EventID       string `json:"eventId"`
	}
	var fle []filtered
	for i, e := range evs {
		fle = append(fle, filtered{"kube-apiserver-audit-0a1b", 1795000000000 + int64(i), string(e), 1795000000100, fmt.Sprint(i)})
	}

	tests := []struct {
		name   string
		body   []byte
		header []string
		// gkeLoss: the events went through a GKE LogEntry without the
		// request's query (see docs/exporter.md).
		gkeLoss bool
		// skipped: entries that say they are not audit events (a
		// CloudWatch control message, another Azure log category).
		skipped float64
	}{
		{name: "CloudWatch subscription message", body: cw},
		{name: "CloudWatch subscription message, gzip without Content-Encoding", body: herdtest.Gzip(t, cw)},
		{name: "CloudWatch subscription message, gzip with Content-Encoding", body: herdtest.Gzip(t, cw), header: []string{"Content-Encoding", "gzip"}},
		{name: "CloudWatch in the awslogs wrapper (Lambda event)", body: mustJSON(map[string]any{"awslogs": map[string]any{"data": b64(herdtest.Gzip(t, cw))}})},
		{name: "two CloudWatch messages and a control message", body: []byte(string(cloudWatchMessage(evs[:half])) + "\n" +
			`{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":1795000000000,"message":"CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}` + "\n" +
			string(cloudWatchMessage(evs[half:]))), skipped: 1},
		{name: "aws logs filter-log-events output", body: mustJSON(map[string]any{"events": fle, "searchedLogStreams": []any{map[string]any{"logStreamName": "kube-apiserver-audit-0a1b", "searchedCompletely": true}}})},
		{name: "JSON lines, gzip", body: herdtest.Gzip(t, ndjson), header: []string{"Content-Type", "application/x-ndjson", "Content-Encoding", "gzip"}},
		{name: "EventList, gzip", body: herdtest.Gzip(t, []byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[`+string(bytes.Join(evs, []byte(",")))+`]}`)), header: []string{"Content-Encoding", "gzip"}},
		{name: "AKS Event Hub records", body: []byte(`{"records":[` + strings.Join(append(aksLines, aksOther), ",") + `]}`), skipped: 1},
		{name: "AKS storage account PT1H.json", body: []byte(strings.Join(append(aksLines, aksOther), "\n")), header: []string{"Content-Type", "application/x-ndjson"}, skipped: 1},
		{name: "Log Analytics AzureDiagnostics rows", body: []byte("[" + strings.Join(laRows, ",") + "]")},
		{name: "GKE LogEntry array", body: mustJSON(gke), gkeLoss: true},
		{name: "GKE LogEntry JSON lines", body: []byte(strings.Join(jsonLines, "\n")), header: []string{"Content-Type", "application/x-ndjson"}, gkeLoss: true},
		{name: "GKE entries.list answer", body: mustJSON(map[string]any{"entries": gke, "nextPageToken": ""}), gkeLoss: true},
		{name: "GKE Pub/Sub push", body: []byte(pubsub(gke)), gkeLoss: true},
		{name: "GKE LogEntry with the ListOptions logged", body: mustJSON(gkeReq)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAudit(t, nil)
			code, msg := post(t, a.AuditHandler(), string(tt.body), tt.header...)
			if code != 200 {
				t.Fatalf("%d %s", code, msg)
			}
			got := herdSeries(t, a)
			if g := got["herd_audit_events_total{result=skipped}"]; g != tt.skipped {
				t.Errorf("skipped %v, want %v", g, tt.skipped)
			}
			delete(got, "herd_audit_events_total{result=skipped}")
			if !tt.gkeLoss && !strings.HasPrefix(tt.name, "GKE") {
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("counters differ from the bare events:\n got %v\nwant %v", got, want)
				}
				return
			}
			if tt.name == "GKE LogEntry with the ListOptions logged" {
				// Everything but the create codes' own spelling is
				// rebuilt: compare relists, pages and too-large counts.
				for _, m := range []string{"herd_relists_total", "herd_list_pages_total", "herd_too_large_resource_version_total"} {
					if g, w := sumOf(got, m), sumOf(want, m); g != w {
						t.Errorf("%s: %v, bare %v", m, g, w)
					}
				}
				return
			}
			// The GKE losses, by name. Every request is still counted
			// once, by verb:
			for _, verb := range []string{"list", "watch", "get", "create"} {
				if g, w := sumOf(got, "herd_requests_total", "verb="+verb), sumOf(want, "herd_requests_total", "verb="+verb); g != w {
					t.Errorf("requests verb=%s: %v, bare %v", verb, g, w)
				}
			}
			bareRelists, barePages := sumOf(want, "herd_relists_total"), sumOf(want, "herd_list_pages_total")
			bareWatchList := float64(0)
			for _, e := range evs {
				if bytes.Contains(e, []byte("sendInitialEvents=true")) && bytes.Contains(e, []byte(`"stage":"ResponseStarted"`)) {
					bareWatchList++
				}
			}
			// Loss 1: no continue token, so pages count as relists. Loss 2:
			// no sendInitialEvents, so WatchList relists look like watches.
			if g := sumOf(got, "herd_relists_total"); g != bareRelists+barePages-bareWatchList {
				t.Errorf("relists %v, want bare %v + pages %v - WatchList %v", g, bareRelists, barePages, bareWatchList)
			}
			if g := sumOf(got, "herd_list_pages_total"); g != 0 {
				t.Errorf("pages %v, want 0: GKE loses the continue token", g)
			}
			// Loss 3: no resourceVersion, so every list is labelled
			// consistent, whatever it asked for.
			if g := sumOf(got, "herd_relists_total", "consistency=cache"); g != 0 {
				t.Errorf("cache relists %v, want 0 without the query", g)
			}
		})
	}
}

// TestFirehoseProtocol plays Kinesis Data Firehose's side of its HTTP
// endpoint protocol: its headers, a JSON body of base64 records each a
// gzip'd CloudWatch Logs message, the whole body gzip'd, the access key;
// and checks herd's answer against the protocol: 200 with
// {"requestId": <the header's>, "timestamp": <ms>}, other codes with
// errorMessage too, a wrong key 401.
func TestFirehoseProtocol(t *testing.T) {
	evs := recorded(t)
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("firehose-key-1\n"), 0o600)
	tf, err := webauth.NewTokenFile(tok)
	if err != nil {
		t.Fatal(err)
	}
	a := newAudit(t, func(o *ingest.HandlerOptions) { o.Tokens = tf })
	s := serve(t, a.AuditHandler())

	deliver := func(key, requestID string, records [][]byte, gzipBody bool) (int, map[string]any) {
		t.Helper()
		type rec struct {
			Data string `json:"data"`
		}
		body := struct {
			RequestID string `json:"requestId"`
			Timestamp int64  `json:"timestamp"`
			Records   []rec  `json:"records"`
		}{RequestID: requestID, Timestamp: time.Now().UnixMilli()}
		for _, r := range records {
			body.Records = append(body.Records, rec{b64(r)})
		}
		b := mustJSON(body)
		if gzipBody {
			b = herdtest.Gzip(t, b)
		}
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/audit", bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Amz-Firehose-Protocol-Version", "1.0")
		req.Header.Set("X-Amz-Firehose-Request-Id", requestID)
		req.Header.Set("X-Amz-Firehose-Source-Arn", "arn:aws:firehose:eu-west-1:123456789012:deliverystream/herd-audit")
		req.Header.Set("X-Amz-Firehose-Access-Key", key)
		if gzipBody {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q, want application/json", ct)
		}
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("answer is not JSON: %v", err)
		}
		if out["requestId"] != requestID {
			t.Errorf("requestId %v, want %q", out["requestId"], requestID)
		}
		if ts, ok := out["timestamp"].(float64); !ok || time.Since(time.UnixMilli(int64(ts))).Abs() > time.Minute {
			t.Errorf("timestamp %v is not now in ms", out["timestamp"])
		}
		return resp.StatusCode, out
	}

	// CloudWatch subscription → Firehose: each record a gzip'd message.
	half := len(evs) / 2
	code, out := deliver("firehose-key-1", "ed4c3a8b-8d1c-4d59-a1a5-1f0e1c7a9e01",
		[][]byte{herdtest.Gzip(t, cloudWatchMessage(evs[:half])), herdtest.Gzip(t, cloudWatchMessage(evs[half:]))}, true)
	if code != 200 || len(out) != 2 {
		t.Fatalf("delivery: %d %v, want 200 with requestId and timestamp only", code, out)
	}
	// Direct PUT: records of JSON lines; a retry of the same request is
	// all duplicates, still 200.
	code, out = deliver("firehose-key-1", "ed4c3a8b-8d1c-4d59-a1a5-1f0e1c7a9e02", [][]byte{bytes.Join(evs[:10], []byte("\n"))}, false)
	if code != 200 {
		t.Fatalf("direct put: %d %v", code, out)
	}
	wantCounts(t, a.Registry(), map[string]float64{"events{firehose,accounted}": float64(len(evs)), "events{firehose,duplicate}": 10,
		"requests{firehose,200}": 2})

	// A wrong key: 401, with the protocol's body.
	code, out = deliver("wrong", "ed4c3a8b-8d1c-4d59-a1a5-1f0e1c7a9e03", [][]byte{evs[0]}, false)
	if code != 401 || !strings.Contains(fmt.Sprint(out["errorMessage"]), "X-Amz-Firehose-Access-Key") {
		t.Errorf("wrong key: %d %v", code, out)
	}
	// Records that are not audit events: 400 naming what it saw.
	code, out = deliver("firehose-key-1", "ed4c3a8b-8d1c-4d59-a1a5-1f0e1c7a9e04", [][]byte{[]byte(`{"log":"{\"auditID\":\"x\"}","date":1.5}`)}, false)
	if code != 400 || !strings.Contains(fmt.Sprint(out["errorMessage"]), `top-level object with keys [date log]`) {
		t.Errorf("unrecognised records: %d %v", code, out)
	}
}

// TestUnrecognizedEnvelopes: what misconfigured shippers send gets 400
// naming it, counted under result="unrecognized"; never 200.
func TestUnrecognizedEnvelopes(t *testing.T) {
	tests := []struct{ name, body, msg string }{
		{"CloudWatch message without messageType", `{"owner":"1","logGroup":"g","logEvents":[{"id":"1","timestamp":1,"message":"x"}]}`,
			"no audit event accounted: line 1: event at offset 0: top-level object with keys [logEvents logGroup owner]: a CloudWatch Logs message without messageType: not an audit event, EventList or known wrapper"},
		{"OTLP/JSON logs", `{"resourceLogs":[{"resource":{"attributes":[]},"scopeLogs":[{"logRecords":[{"body":{"stringValue":"{}"}}]}]}]}`,
			"no audit event accounted: line 1: event at offset 0: top-level object with keys [resourceLogs]: OTLP/JSON logs (export the audit log as JSON lines instead): not an audit event, EventList or known wrapper"},
		{"Fluent Bit record without a JSON parser", `[{"date":1732349922.5,"log":"{\"kind\":\"Event\",\"auditID\":\"a\"}"}]`,
			`no audit event accounted: line 1: [0] at offset 1: top-level object with keys [date log]: a log shipper's record with the event as a string in "log" (Fluent Bit: parse it with a json parser): not an audit event, EventList or known wrapper`},
		{"Vector event without parse_json", `{"message":"{\"kind\":\"Event\"}","source_type":"file","timestamp":"2026-11-23T08:18:43Z","file":"/var/log/kube-apiserver/audit.log"}`,
			`no audit event accounted: line 1: event at offset 0: top-level object with keys [file message source_type timestamp]: a log shipper's record with the event as a string in "message" (Vector: parse_json(.message)): not an audit event, EventList or known wrapper`},
		{"msgpack (Fluent Forward)", "\x93\xa8kube.aud\xce\x67\x41\xb2\x62\x81\xa3log\xa2{}",
			"decode audit body: line 1: body is msgpack (Fluent Forward?), not JSON at offset 0 (accounted 0 events before it)"},
		{"an unknown object", `{"foo":1,"bar":{"baz":2}}`,
			"no audit event accounted: line 1: event at offset 0: top-level object with keys [bar foo]: not an audit event, EventList or known wrapper"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAudit(t, nil)
			code, msg := post(t, a.AuditHandler(), tt.body)
			if code != 400 || strings.TrimSpace(msg) != tt.msg {
				t.Errorf("%d %q\nwant 400 %q", code, strings.TrimSpace(msg), tt.msg)
			}
			c := auditCounts(t, a.Registry())
			if c["events{webhook,accounted}"] != 0 || c["requests{webhook,400}"] != 1 ||
				c["events{webhook,unrecognized}"]+c["events{webhook,malformed}"] != 1 {
				t.Errorf("counters %v", c)
			}
		})
	}
}

// TestGzipBomb: 1 MiB of gzip that inflates to 1 GiB gets 413 and costs no
// memory to speak of (herd reads the size from the gzip trailer before
// inflating; a multi-member bomb stops at the limit).
func TestGzipBomb(t *testing.T) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for i := 0; i < 1024; i++ {
		zw.Write(zero)
	}
	zw.Close()
	bomb := buf.Bytes()
	if len(bomb) > 2<<20 {
		t.Fatalf("bomb of %d bytes", len(bomb))
	}
	// The same zeros as several members, each under the limit on its own:
	// the trailer of the last one says little.
	var multi []byte
	for i := 0; i < 20; i++ {
		multi = append(multi, herdtest.Gzip(t, make([]byte, 1<<20))...)
	}
	a := newAudit(t, nil)
	rss := func() uint64 {
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := rss()
	var peak uint64
	for i, b := range [][]byte{bomb, multi} {
		for _, hdr := range [][]string{nil, {"Content-Encoding", "gzip"}} {
			req := httptest.NewRequest(http.MethodPost, "/audit", bytes.NewReader(b))
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			rec := httptest.NewRecorder()
			a.AuditHandler().ServeHTTP(rec, req)
			if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "decompressed payload too large") {
				t.Errorf("gzip bomb of %d bytes (%v): %d %s", len(b), hdr, rec.Code, rec.Body)
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if i == 0 {
				peak = max(peak, ms.HeapInuse)
			} else if ms.HeapInuse > before+3*(16<<20)+20<<20 {
				// Several members: inflated up to the 16 MiB limit (growing
				// the buffer costs old + new), never more.
				t.Errorf("multi-member bomb: heap %d MiB, %d MiB before", ms.HeapInuse>>20, before>>20)
			}
		}
	}
	// The 1 GiB bomb is refused by its gzip trailer: the heap (measured as
	// HeapInuse after each request; RSS follows it) stays within 20 MiB.
	if after := rss(); after > before+20<<20 || peak > before+20<<20+uint64(len(bomb)) {
		t.Errorf("heap %d MiB before, %d MiB after, %d MiB at the peak of the 1 GiB bomb", before>>20, after>>20, peak>>20)
	}
	wantCounts(t, a.Registry(), map[string]float64{"requests{webhook,413}": 4, "events{webhook,oversized}": 4,
		"bytes{webhook}": float64(2 * (len(bomb) + len(multi)))})
}
