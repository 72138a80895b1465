package audit

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/valyala/fastjson"
	"k8s.io/apimachinery/pkg/fields"
)

// seedBodies are the fuzzers' starting points: the public fixtures and the
// shapes the table tests exercise.
func seedBodies(t testing.TB) [][]byte {
	seeds := [][]byte{
		[]byte(kubeletList), []byte(tooLarge), benchBatch(6),
		[]byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[` + ev("a1") + `,` + ev("a2") + `]}`),
		[]byte(`{"metadata":{},"items":[` + ev("a1") + `],"kind":"EventList"}`),
		[]byte(`{"kind":"EventList","items":null}`),
		[]byte(`{"kind":"EventList","items":{}}`),
		[]byte(`{"items":[` + ev("a1") + `],"kind":"Event","auditID":"x","stage":"ResponseComplete","verb":"get"}`),
		[]byte("[" + ev("a1") + ", 42, \"x\", null, [], true]"),
		[]byte(ev("a1") + "\n" + ev("a2") + "\r\n\n" + ev("a3")),
		[]byte(`{"records":[{"category":"kube-audit","properties":{"log":` + quote(ev("a1")) + `}},{"category":"x","properties":{"log":"y"}}]}`),
		[]byte(`{"aud\u0069tID":"\ud83d\ude00|\ud83d|\u12|\q","stage":"Panic","verb":"get","user":{"user\u006eame":"n"}}`),
		[]byte(ev("d", `,"auditID":"e","user":{"username":"a","username":"b"},"objectRef":{"resource":"pods","resource":"nodes"}`)),
		[]byte("{\"auditID\":\"a\xff\x00\",\"stage\":\"ResponseComplete\",\"verb\":\"get\"}"),
		[]byte(ev("q", `,"requestURI":"/api/v1/nodes?fieldSelector=metadata.name%3Dn%5C%2C1%2Cspec.nodeName%3D%3Dm\u0026limit=5\u0026continue=x\u0026sendInitialEvents=true"`,
			`,"objectRef":{"resource":"nodes"},"responseStatus":{"code":504,"message":"Too large resource version"},"stageTimestamp":"2026-01-01T00:00:00.5+01:00"`)),
		[]byte(ev("t", `,"user":{"username":"system:anonymous","groups":["system:unauthenticated"],"extra":{"authentication.kubernetes.io/node-name":["n","m"]}}`,
			`,"sourceIPs":["1.1.1.1","2.2.2.2","3.3.3.3","4.4.4.4","5.5.5.5"],"requestReceivedTimestamp":"2026-01-01T00:00:00.000001Z"`,
			`,"annotations":{"apiserver.latency.k8s.io/etcd":"1m2.5s","apiserver.latency.k8s.io/total":"850µs","apiserver.latency.k8s.io/response-write":"1.5\u00b5s"}`)),
		[]byte(strings.Repeat("[", 300)),
		[]byte(`{"kind":"EventList","items":[` + ev("a1") + `,{"auditID":"a2`),
		[]byte(""), []byte("null"), []byte("[01]"), []byte("[1e5, -0.5, true, false, null]"),
	}
	for _, name := range []string{"02_sysdiglabs-aks_samples-event.json", "02b_sysdiglabs-aks_unwrapped.jsonl",
		"03_apisnoop_example-user-agent.log", "04b_audit2rbac_demo-v1.log", "06_kbx_single-event.json"} {
		seeds = append(seeds, readFixture(t, name))
	}
	return seeds
}

// decodeAll runs every entry point over data and returns what DecodeBody
// delivered.
func decodeAll(t *testing.T, d *Decoder, data []byte) ([]rec, Result, error) {
	got := []rec{}
	res, err := d.DecodeBody(data, func(ev *Event) {
		if len(ev.AuditID) == 0 || len(ev.Verb) == 0 {
			t.Fatalf("delivered an event without auditID or verb: %+v", own(ev))
		}
		got = append(got, own(ev))
	})
	if res.Bytes != int64(len(data)) {
		t.Fatalf("Bytes = %d, want %d", res.Bytes, len(data))
	}
	if res.Events != len(got) {
		t.Fatalf("Events = %d, delivered %d", res.Events, len(got))
	}
	if (res.Problem != nil) != (res.Malformed+res.Oversized+res.Unrecognized > 0) {
		t.Fatalf("Problem %v with %d malformed, %d oversized", res.Problem, res.Malformed, res.Oversized)
	}
	if err != nil && !errors.Is(err, ErrMalformed) {
		t.Fatalf("error %v is not ErrMalformed", err)
	}
	nres, nerr := d.DecodeNDJSON(data, func(*Event) {})
	if nres.Bytes != int64(len(data)) || nerr != nil && nres.Malformed == 0 {
		t.Fatalf("DecodeNDJSON: %+v, %v", nres, nerr)
	}
	for _, line := range bytes.Split(data, []byte{'\n'}) {
		if err := d.DecodeLine(line, func(*Event) {}); err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrOversized) && !errors.Is(err, ErrUnrecognized) {
			t.Fatalf("DecodeLine error %v is neither malformed, oversized nor unrecognised", err)
		}
	}
	return got, res, err
}

// oracleBody predicts, with fastjson, what DecodeBody delivers from data when
// no event is oversized. ok is false where the oracle has nothing to say
// (records wrappers, which the decoder reads with fastjson too).
func oracleBody(data []byte) (events []rec, malformed int, ok bool) {
	if envelopeLike(data) {
		return nil, 0, false // envelopes are read with fastjson too: FuzzEnvelope holds them to the bare events
	}
	var sc fastjson.Scanner
	sc.InitBytes(data)
	events = []rec{}
	one := func(v *fastjson.Value) {
		r, reason := oracle(v)
		if reason != "" {
			malformed++
			return
		}
		events = append(events, r)
	}
	for sc.Next() {
		v := sc.Value()
		switch v.Type() {
		case fastjson.TypeArray:
			a, _ := v.Array()
			for _, e := range a {
				one(e)
			}
		case fastjson.TypeObject:
			kind := first(v, "kind")
			ks, isStr := oracleStr(kind)
			var kb []byte
			if isStr {
				kb = []byte(ks)
			}
			switch classify(kind != nil, kb, first(v, "items") != nil, first(v, "records") != nil) {
			case formEvent:
				one(v)
			case formEventList:
				items := first(v, "items")
				if items == nil || items.Type() == fastjson.TypeNull {
					continue
				}
				a, err := items.Array()
				if err != nil {
					return nil, 0, false
				}
				for _, e := range a {
					one(e)
				}
			default:
				return nil, 0, false
			}
		default:
			return nil, 0, false
		}
	}
	return events, malformed, sc.Error() == nil
}

func FuzzDecodeBody(f *testing.F) {
	for _, s := range seedBodies(f) {
		f.Add(s, uint16(0))
	}
	f.Add([]byte(ev("a1")+"\n"+ev("a2")), uint16(57))
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		d := &Decoder{MaxEventBytes: int(max)}
		got, res, err := decodeAll(t, d, data)

		// Decoding again with the same (now warm) Decoder gives the same.
		again, res2, err2 := decodeAll(t, d, data)
		if !reflect.DeepEqual(got, again) || res.Events != res2.Events || res.Malformed != res2.Malformed ||
			res.Oversized != res2.Oversized || (err == nil) != (err2 == nil) {
			t.Fatalf("second decode differs: %+v %v vs %+v %v", res, err, res2, err2)
		}

		// The scanner accepts every JSON document encoding/json accepts...
		single := func() (bool, *scanError) {
			i := skipWS(data, 0)
			end, serr := skipValue(data, i, 0)
			if serr != nil {
				return false, serr
			}
			return skipWS(data, end) == len(data), nil
		}
		valid, serr := single()
		if json.Valid(data) && !valid && (serr == nil || !strings.HasPrefix(serr.msg, "nesting deeper")) {
			t.Fatalf("encoding/json accepts %q, the scanner does not: %+v", data, serr)
		}
		// ...and, outside strings' contents (which it does not check), no more.
		if valid && !json.Valid(data) && bytes.IndexByte(data, '\\') < 0 && !hasControl(data) {
			t.Fatalf("the scanner accepts %q, encoding/json does not", data)
		}

		// With no event oversized, what is delivered matches the fastjson oracle.
		if err != nil {
			return
		}
		d.MaxEventBytes = len(data) + 1
		got, res, err = decodeAll(t, d, data)
		if err != nil {
			t.Fatalf("error %v only with a larger MaxEventBytes", err)
		}
		want, malformed, ok := oracleBody(data)
		if !ok {
			return
		}
		if !reflect.DeepEqual(got, want) || res.Malformed != malformed {
			t.Fatalf("decoder: %d malformed, %+v\n oracle: %d malformed, %+v", res.Malformed, got, malformed, want)
		}
	})
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != ' ' {
			return true
		}
	}
	return false
}

// chunkReader returns at most n bytes per Read, and sometimes nothing.
type chunkReader struct {
	data []byte
	n    int
	tick int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.tick++
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if r.tick%7 == 0 {
		return 0, nil
	}
	n := min(len(p), r.n, len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func FuzzLineReader(f *testing.F) {
	for _, s := range seedBodies(f) {
		f.Add(s, uint16(0), uint8(0), false)
	}
	f.Add([]byte("abc\n123456789\nxy\n"), uint16(4), uint8(2), false)
	f.Add([]byte("abc\n123456789"), uint16(4), uint8(0), true)
	f.Add([]byte("a\r\n\r\nb\r"), uint16(1), uint8(1), false)
	f.Fuzz(func(t *testing.T, data []byte, max uint16, chunk uint8, follow bool) {
		maxLine := int(max)
		if maxLine == 0 {
			maxLine = DefaultMaxLineBytes
		}
		// What a plain split says.
		want := []string{}
		var wantOff int64
		pieces := bytes.Split(data, []byte{'\n'})
		for i, p := range pieces {
			last := i == len(pieces)-1
			if last && (len(p) == 0 || follow) {
				break
			}
			wantOff += int64(len(p))
			if !last {
				wantOff++
			}
			if len(p) > maxLine {
				want = append(want, "!")
				continue
			}
			want = append(want, string(bytes.TrimSuffix(p, []byte{'\r'})))
		}
		lr := NewLineReader(&chunkReader{data: data, n: int(chunk) + 1}, int(max))
		lr.Follow = follow
		got := []string{}
		for {
			line, err := lr.Next()
			if err == io.EOF {
				break
			}
			if errors.Is(err, ErrOversized) {
				got = append(got, "!")
				continue
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if len(line) > maxLine {
				t.Fatalf("line of %d bytes over the %d maximum", len(line), maxLine)
			}
			got = append(got, string(line))
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("lines %q\n want %q", got, want)
		}
		if lr.Line() != int64(len(want)) {
			t.Fatalf("Line() = %d, want %d", lr.Line(), len(want))
		}
		partialTooLong := follow && len(pieces[len(pieces)-1]) > maxLine
		if !partialTooLong && lr.Offset() != wantOff {
			t.Fatalf("Offset() = %d, want %d", lr.Offset(), wantOff)
		}
		if len(lr.buf) > maxLine+1+readChunk {
			t.Fatalf("buffer grew to %d for lines of %d", len(lr.buf), maxLine)
		}
	})
}

// rfc3339 is RFC 3339's date-time grammar (plus a comma before the
// fraction). time.Parse's layout matching is looser (one-digit hours, offset
// hours past 23) and Go's strict parser is not exported, so the fuzzer uses
// the grammar to tell which inputs time.Parse may judge.
var rfc3339 = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}([.,]\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$`)

// FuzzTimestamp holds parseTimestamp to time.Parse on RFC 3339 input, and to
// rejecting everything else.
func FuzzTimestamp(f *testing.F) {
	for _, s := range []string{"2026-03-14T09:26:53.589793Z", "2026-03-14T09:26:53Z", "2026-03-14T09:26:53+09:00",
		"2024-02-29T00:00:00.123456789-07:30", "1677-09-21T00:12:43.145224192Z", "2262-04-11T23:47:16.854775807Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := parseTimestamp([]byte(s))
		if !rfc3339.MatchString(s) {
			if got != 0 {
				t.Fatalf("parseTimestamp(%q) = %d, want 0 for a string that is not RFC 3339", s, got)
			}
			return
		}
		norm := strings.NewReplacer("t", "T", "z", "Z", ",", ".").Replace(s)
		tm, err := time.Parse(time.RFC3339Nano, norm)
		switch {
		case err != nil || tm.Year() < 1678 || tm.Year() > 2261:
			// Impossible dates, second 60, or beyond int64 nanoseconds
			// (where UnixNano is undefined): only 0 is certain to be right
			// for the first two.
			if err != nil && got != 0 {
				t.Fatalf("parseTimestamp(%q) = %d, time.Parse: %v", s, got, err)
			}
		case got != tm.UnixNano():
			t.Fatalf("parseTimestamp(%q) = %d, time.Parse says %d", s, got, tm.UnixNano())
		}
	})
}

// FuzzTimestampMinute holds the Decoder's remembered-minute parse to
// parseTimestamp, for a timestamp parsed after another (whose minute the
// Decoder then holds): same minute, another minute, or not a timestamp.
func FuzzTimestampMinute(f *testing.F) {
	f.Add("2026-03-14T09:26:53.589793Z", "2026-03-14T09:26:59.1Z")
	f.Add("2026-03-14T09:26:53Z", "2026-03-14T09:26:53+09:00")
	f.Add("2026-03-14T09:26:53Z", "2026-03-14T09:26x53Z")
	f.Add("2026-03-14T09:26:53Z", "2026-03-14T09:26:60Z")
	f.Add("2026-02-29T09:26:53Z", "2026-02-29T09:26:54Z")
	f.Add("2262-04-11T23:47:16.854775807Z", "2262-04-11T23:47:16.854775808Z")
	f.Fuzz(func(t *testing.T, first, second string) {
		var d Decoder
		for _, s := range []string{first, second, first} {
			if got, want := d.timestamp([]byte(s)), parseTimestamp([]byte(s)); got != want {
				t.Fatalf("after %q: timestamp(%q) = %d, parseTimestamp = %d", first, s, got, want)
			}
		}
	})
}

// FuzzQuery holds parseQuery to net/url and the apiserver's field selector
// parser.
func FuzzQuery(f *testing.F) {
	for _, s := range []string{"/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&limit=500&resourceVersion=0",
		"/api/v1/nodes?fieldSelector=metadata.name%3Dn%5C%2C1%2Cspec.nodeName%3D%3Dm&continue=x&sendInitialEvents=true",
		"/x?%72esourceVersion=%31&resourceVersionMatch=Exact;&limit=+5", "/x?fieldSelector=spec.nodeName=a\\=b,x!=y"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, uri string, nodes bool) {
		resource := "pods"
		if nodes {
			resource = "nodes"
		}
		var q Query
		var scratch []byte
		parseQuery(&q, []byte(uri), []byte(resource), &scratch)
		_, raw, hasQuery := strings.Cut(uri, "?")
		raw, _, _ = strings.Cut(raw, "#")
		vals, _ := url.ParseQuery(raw)
		if !hasQuery {
			vals = url.Values{}
		}
		get := func(k string) string {
			if v := vals[k]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		if string(q.ResourceVersion) != get("resourceVersion") || string(q.ResourceVersionMatch) != get("resourceVersionMatch") ||
			q.Continue != (get("continue") != "") || q.LabelSelector != (get("labelSelector") != "") {
			t.Fatalf("parseQuery(%q) = %+v, net/url says %v", uri, q, vals)
		}
		// The field selector: compare with the apiserver's own parser where
		// it accepts the selector and names each field at most once. (It
		// turns invalid UTF-8 in an escaped value into U+FFFD; no node is
		// named that way, so such selectors are not compared.)
		fs := get("fieldSelector")
		sel, err := fields.ParseSelector(fs)
		if err != nil || !utf8.ValidString(fs) {
			return
		}
		count := map[string]int{}
		value := map[string]string{}
		other := false
		for _, r := range sel.Requirements() {
			count[r.Field]++
			indexed := r.Field == "spec.nodeName" || r.Field == "metadata.name"
			if (r.Operator == "=" || r.Operator == "==") && indexed && r.Value != "" {
				value[r.Field] = r.Value
			} else {
				other = true
			}
		}
		if count["spec.nodeName"] > 1 || count["metadata.name"] > 1 {
			return
		}
		want, wantName := value["spec.nodeName"], value["metadata.name"]
		if nodes {
			if want == "" {
				want = wantName
			}
			wantName = ""
		}
		if string(q.FieldSelectorNode) != want || string(q.FieldSelectorName) != wantName || q.OtherFieldSelector != other {
			t.Fatalf("selector %q: node %q, name %q, other %v; fields.ParseSelector says %q, %q, %v",
				fs, q.FieldSelectorNode, q.FieldSelectorName, q.OtherFieldSelector, want, wantName, other)
		}
	})
}

// envelopeLike reports whether data has a top-level object (or element of a
// top-level array) without any of an event's keys: such objects are
// envelopes or unrecognised, which the oracle does not model.
func envelopeLike(data []byte) bool {
	var sc fastjson.Scanner
	sc.InitBytes(data)
	bare := func(v *fastjson.Value) bool {
		if v.Type() != fastjson.TypeObject {
			return false
		}
		o, _ := v.Object()
		if o.Len() == 0 {
			return false
		}
		for _, k := range []string{"kind", "auditID", "stage", "verb", "items", "records"} {
			if o.Get(k) != nil {
				return false
			}
		}
		return true
	}
	for sc.Next() {
		v := sc.Value()
		if bare(v) {
			return true
		}
		if a, err := v.Array(); err == nil {
			for _, e := range a {
				if bare(e) {
					return true
				}
			}
		}
	}
	return false
}

// FuzzEnvelope wraps arbitrary bodies in every envelope that carries a body
// as a string (a CloudWatch log event's message, a Firehose record's base64
// data, the awslogs wrapper's gzip'd CloudWatch message, a Pub/Sub push's
// data, an AKS record's properties.log) and also decodes arbitrary bytes as
// envelopes (GKE LogEntry fields, AKSAudit rows). It must never panic, and
// an envelope must deliver exactly the events the same body delivers bare.
func FuzzEnvelope(f *testing.F) {
	for _, s := range seedBodies(f) {
		f.Add(s)
	}
	for _, name := range []string{"gke-logentry.json", "cloudwatch-message.json", "firehose-request.json"} {
		if b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "envelopes", name)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := &Decoder{}
		bare, _, err := collect(d, data)
		// Arbitrary bytes as an envelope of any kind: no panic, and
		// the counts stay consistent.
		decodeAll(t, d, data)
		if err != nil || len(data) > 64<<10 || !utf8.Valid(data) {
			return
		}
		var gzbuf bytes.Buffer
		zw := gzip.NewWriter(&gzbuf)
		cw := `{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s","subscriptionFilters":["f"],"logEvents":[{"id":"1","timestamp":1,"message":` + quote(string(data)) + `}]}`
		zw.Write([]byte(cw))
		zw.Close()
		b64 := base64.StdEncoding.EncodeToString
		for name, env := range map[string]string{
			"cloudwatch": cw,
			"firehose":   `{"requestId":"r","timestamp":1,"records":[{"data":"` + b64(data) + `"}]}`,
			"awslogs":    `{"awslogs":{"data":"` + b64(gzbuf.Bytes()) + `"}}`,
			"pubsub":     `{"message":{"data":"` + b64(data) + `","messageId":"1"},"subscription":"projects/p/subscriptions/s"}`,
			"aks":        `{"category":"kube-audit","properties":{"log":` + quote(string(data)) + `}}`,
		} {
			got, _, err := collect(d, []byte(env))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if name == "aks" {
				// properties.log holds exactly one event object.
				v, err := fastjson.ParseBytes(data)
				if err != nil || v.Type() != fastjson.TypeObject || first(v, "items") != nil || first(v, "records") != nil ||
					first(v, "kind") != nil || envelopeLike(data) {
					continue
				}
			}
			if !reflect.DeepEqual(got, bare) {
				t.Fatalf("%s delivers %+v\n bare %+v", name, got, bare)
			}
		}
	})
}

// unescapeJSONByByte is unescapeJSON as it was written first, a byte at a
// time: FuzzUnescapeJSON holds the run-copying version to it.
func unescapeJSONByByte(dst, s []byte) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		if i+1 >= len(s) {
			return append(dst, c)
		}
		i++
		switch e := s[i]; e {
		case '"', '\\', '/':
			dst = append(dst, e)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(s[i+1:])
			if !ok {
				dst = append(dst, '\\', 'u')
				continue
			}
			if !utf16.IsSurrogate(r) {
				dst = utf8.AppendRune(dst, r)
				i += 4
				continue
			}
			if i+10 < len(s) && s[i+5] == '\\' && s[i+6] == 'u' {
				if r2, ok := hex4(s[i+7:]); ok {
					dst = utf8.AppendRune(dst, utf16.DecodeRune(r, r2))
					i += 10
					continue
				}
			}
			dst = append(dst, '\\', 'u')
			dst = append(dst, s[i+1:i+5]...)
			i += 4
		default:
			dst = append(dst, '\\', e)
		}
	}
	return dst
}

// FuzzUnescapeJSON holds unescapeJSON to the byte-at-a-time version it
// replaced: every escape, valid or not, comes out the same.
func FuzzUnescapeJSON(f *testing.F) {
	for _, s := range []string{
		`/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1\u0026limit=500\u0026resourceVersion=0`,
		`\"\\\/\b\f\n\r\t`, `\u00e9\ud83d\ude00`, `\ud83d`, `\ud83dx`, `\ud83d\u0041`, `\ud83d\uzzzz`, `\uzz`, `\u12`,
		`\`, `a\`, `\q`, `\ud83d\ude0`, `\ud83d\ude00\`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		got, want := unescapeJSON([]byte("x"), s), unescapeJSONByByte([]byte("x"), s)
		if !bytes.Equal(got, want) {
			t.Fatalf("unescapeJSON(%q) = %q, want %q", s, got, want)
		}
	})
}
