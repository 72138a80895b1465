package ingest_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/ingest"
)

const (
	fuzzMaxBody  = 64 << 10
	fuzzMaxEvent = 4 << 10
)

var accountedBefore = regexp.MustCompile(`\(accounted (\d+) events before it\)$`)

// FuzzAuditHandler posts arbitrary bodies, as EventList/JSON or as NDJSON,
// through the /audit handler (small limits, so 413 and oversized
// events are reachable). It must never panic; the status is 200, 400 or
// 413; 200 only when something in the body was accounted, a duplicate or
// said it is not an audit event; and every event is counted once, in
// agreement with the answer and with an independent decode of the same
// body:
//
//	accounted + duplicate + (events refused for invalid UTF-8) = events the decoder delivers
//	malformed = the decoder's malformed (+1 for a body it cannot read past) + refused
//	oversized, unrecognized, skipped = the decoder's
func FuzzAuditHandler(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "audit", "testdata", "public", "*"))
	for _, p := range files {
		if strings.HasSuffix(p, ".md") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte(list(events(3)...)), false)
	f.Add([]byte(ev()+"\n"+ev()+"\n{oops\n"), true)
	f.Add([]byte(list(ev(), ev(`system:node:node-1`, "system:node:\xff"))), false)
	f.Add([]byte(list(ev(`"level"`, `"x":"`+strings.Repeat("y", fuzzMaxEvent)+`","level"`), ev())), false)
	f.Add([]byte(strings.Repeat("[", 300)), false)
	f.Add([]byte(`{"records":[{"category":"kube-audit","properties":{"log":"{\"auditID\":\"a\",\"stage\":\"ResponseComplete\",\"verb\":\"get\"}"}}]}`), false)
	f.Add([]byte(list(ev())+strings.Repeat(" ", fuzzMaxBody)), false)

	a := newAudit(f, func(o *ingest.HandlerOptions) { o.MaxBodyBytes, o.MaxEventBytes = fuzzMaxBody, fuzzMaxEvent })
	h, reg := a.AuditHandler(), a.Registry()
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		src, hdr := "webhook", []string(nil)
		if ndjson {
			src, hdr = "ndjson", []string{"Content-Type", "application/x-ndjson"}
		}
		before := auditCounts(t, reg)
		code, msg := post(t, h, string(body), hdr...)
		after := auditCounts(t, reg)
		delta := func(k string) int { return int(after[k] - before[k]) }
		acc, dup := delta("events{"+src+",accounted}"), delta("events{"+src+",duplicate}")
		mal, over := delta("events{"+src+",malformed}"), delta("events{"+src+",oversized}")
		unrec, skipped := delta("events{"+src+",unrecognized}"), delta("events{"+src+",skipped}")

		// Exactly one request counted, under its source and code; nothing
		// under another source.
		for k := range after {
			want := 0
			if k == "requests{"+src+","+strconv.Itoa(code)+"}" {
				want = 1
			}
			if strings.HasPrefix(k, "bytes{") {
				continue
			}
			if !strings.HasPrefix(k, "events{"+src+",") && delta(k) != want {
				t.Fatalf("%s changed by %d (status %d)", k, delta(k), code)
			}
		}
		if code == http.StatusRequestEntityTooLarge && len(body) > fuzzMaxBody {
			if acc+dup+mal+over+unrec+skipped != 0 || delta("bytes{"+src+"}") != 0 {
				t.Fatalf("413 for %d bytes; counted %d/%d/%d/%d", len(body), acc, dup, mal, over)
			}
			return
		}
		if len(body) > fuzzMaxBody {
			t.Fatalf("%d bytes: status %d, want 413", len(body), code)
		}
		if delta("bytes{"+src+"}") != len(body) {
			t.Fatalf("bytes counted %d, body %d", delta("bytes{"+src+"}"), len(body))
		}

		// The same body through a separate decoder.
		d := &audit.Decoder{MaxEventBytes: fuzzMaxEvent, MaxInflatedBytes: fuzzMaxBody}
		var res audit.Result
		var err error
		if ndjson {
			res, err = d.DecodeNDJSON(body, func(*audit.Event) {})
		} else {
			res, err = d.DecodeBody(body, func(*audit.Event) {})
		}
		bodyErr := 0
		if err != nil && !ndjson && !errors.Is(err, audit.ErrOversized) {
			bodyErr = 1
		}
		refused := res.Events - acc - dup
		if refused < 0 || over != res.Oversized || mal != res.Malformed+bodyErr+refused ||
			unrec != res.Unrecognized || skipped != res.Skipped {
			t.Fatalf("counted accounted %d duplicate %d malformed %d oversized %d unrecognized %d skipped %d; decoder: %+v, err %v",
				acc, dup, mal, over, unrec, skipped, res, err)
		}

		something := acc+dup+skipped > 0
		switch code {
		case http.StatusOK:
			if err != nil {
				t.Fatalf("200 for a body the decoder refuses: %v", err)
			}
			if !something {
				t.Fatalf("200 with nothing accounted: %s", msg)
			}
			if r := parseReply(t, msg); r != (reply{acc, dup, mal, over, unrec, skipped}) {
				t.Fatalf("reply %+v, counters %d/%d/%d/%d/%d/%d", r, acc, dup, mal, over, unrec, skipped)
			}
		case http.StatusBadRequest:
			switch {
			case err != nil:
				if mal == 0 {
					t.Fatal("400 without a malformed count")
				}
				m := accountedBefore.FindStringSubmatch(strings.TrimSpace(msg))
				if m == nil || m[1] != strconv.Itoa(acc) {
					t.Fatalf("400 message %q, accounted %d", msg, acc)
				}
			case something:
				t.Fatalf("400 (%s) for a body with something accounted", msg)
			case mal+unrec == 0 && len(body) > 0 && strings.TrimSpace(string(body)) != "":
				t.Fatalf("400 (%s) for a body of only oversized events", msg)
			}
		case http.StatusRequestEntityTooLarge:
			if something || (over == 0 && !errors.Is(err, audit.ErrOversized)) {
				t.Fatalf("413 (%s) with %d/%d/%d/%d", msg, acc, dup, over, skipped)
			}
		default:
			t.Fatalf("status %d: %s", code, msg)
		}
	})
}
