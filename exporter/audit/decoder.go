package audit

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/valyala/fastjson"
)

// DefaultMaxEventBytes is the largest encoded event herd accounts (SPEC §3.1).
// At the Metadata level herd's audit policy asks for, events are 1–3 KiB; a
// bigger one carries a request or response body herd never reads.
const DefaultMaxEventBytes = 256 << 10

// reuseLimit is the size above which a records-wrapper entry is parsed by a
// fresh fastjson parser that is then dropped. fastjson keeps its copy of the
// input and one Value (~80 bytes) per JSON value for reuse; without this, one
// hostile entry of tiny values would pin megabytes in every pooled Decoder.
const reuseLimit = 16 << 10

var (
	// ErrMalformed marks an event (or body, or line) that is present but
	// cannot be accounted: not JSON, not an object, the wrong kind or
	// apiVersion, or missing auditID, stage or verb.
	ErrMalformed = errors.New("malformed audit event")
	// ErrOversized marks an event larger than the decoder's MaxEventBytes.
	ErrOversized = errors.New("oversized audit event")
)

// BodyError says why a body (or a line) cannot be read as audit JSON, and
// where. Decoding stops at it; events before it have been delivered.
type BodyError struct {
	// Line is the 1-based line of Offset; 0 when unknown (DecodeLine, whose
	// caller knows the line number).
	Line int
	// Offset is the byte offset of the problem from the start of the body.
	Offset int64
	// Msg says what is wrong, e.g. "unexpected end of JSON (in the string opened at offset 12)".
	Msg string
}

func (e *BodyError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s at offset %d", e.Line, e.Msg, e.Offset)
	}
	return fmt.Sprintf("%s at offset %d", e.Msg, e.Offset)
}

// Unwrap makes errors.Is(err, ErrMalformed) true: a body that is not audit
// JSON is malformed input (HTTP 400), never a server fault.
func (e *BodyError) Unwrap() error { return ErrMalformed }

// EventError describes one event that was skipped: where it is and why.
type EventError struct {
	Line   int    // 1-based line of Offset; 0 when unknown
	Offset int64  // byte offset of the event from the start of the body
	Where  string // "items[3]", "records[0]", "[7]" or "event"
	Reason string // "missing auditID", "event of 300000 bytes exceeds the 262144-byte limit", ...
	Err    error  // ErrMalformed or ErrOversized
}

func (e *EventError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s at offset %d: %s", e.Line, e.Where, e.Offset, e.Reason)
	}
	return fmt.Sprintf("%s at offset %d: %s", e.Where, e.Offset, e.Reason)
}

func (e *EventError) Unwrap() error { return e.Err }

// Result counts what one DecodeBody or DecodeNDJSON call did with a body.
type Result struct {
	Events    int // delivered to the callback
	Malformed int // present but unusable (see ErrMalformed); NDJSON lines that are not JSON count here
	Oversized int // larger than MaxEventBytes; read through to their end, nothing in them decoded
	// Skipped counts entries that say they are not audit events: records
	// of another log category, CloudWatch control messages, Cloud Audit
	// Logs of other services.
	Skipped int
	// Unrecognized counts top-level objects (or top-level array elements)
	// that are neither an audit event nor an envelope herd knows
	// (ErrUnrecognized): a misconfigured sender.
	Unrecognized int
	Bytes        int64 // len(body)
	// Problem is the first malformed or oversized event (an *EventError, or a
	// *BodyError for an NDJSON line that is not JSON), for logs and 400
	// bodies; nil when every event was delivered.
	Problem error
}

// Decoder turns audit request bodies and log lines into Events. It keeps
// scratch space between calls so the steady state allocates nothing. A
// Decoder is not safe for concurrent use (keep one per goroutine or in a
// sync.Pool), and fn must not call back into the Decoder that called it. The
// zero value is ready to use.
//
// Events are read in one validating pass that notes where herd's dozen
// fields are and skips the rest, rather than through a fastjson tree. The
// first version of this package did the latter (a scan for event boundaries,
// then fastjson per event, then field lookups) and reached 325k events/s on a
// realistic 400-event batch here, short of SPEC §7's 500k; this pass does
// 830–880k. fastjson's parse alone of the same batch costs about as much as
// this whole decoder, because it builds a tree of every annotation and group
// herd never reads, and it cannot say where an event starts and ends, which
// the per-event size limit and the error offsets need. fastjson still
// unwraps the Azure records wrapper and the managed clusters' envelopes
// (envelope.go), cold paths where its generality pays; they are entered
// only for objects without an event's keys, so the apiserver's own batches
// never reach them.
type Decoder struct {
	// MaxEventBytes caps the encoded size of one event (one line in NDJSON);
	// larger events are counted as oversized: validated on the way past, so
	// the rest of the body stays readable, but nothing in them is decoded or
	// kept. 0 means
	// DefaultMaxEventBytes. Bodies are not capped here: the HTTP handler does
	// that before the body is read.
	MaxEventBytes int

	// MaxInflatedBytes caps what one call decompresses in all (gzip
	// bodies and gzip payloads inside envelopes); 0 means
	// DefaultMaxInflatedBytes.
	MaxInflatedBytes int64

	pp      [maxNest]fastjson.Parser // envelopes and records entries, one per nesting level
	scratch []byte                   // unescaped strings and %-decoded query values of the current event
	ev      Event
	minute  minuteCache // of stageTimestamps

	nest      int   // envelopes being unwrapped around the current payload
	inflated  int64 // bytes decompressed in this call
	queryLost bool  // the event being finished was rebuilt without its query

	// per-call state. The callback is passed down rather than kept here, so
	// that a caller's closure does not escape to the heap.
	r    Result
	base int64 // offset of the slice being walked within the body
	line int   // line number of the slice's first byte; 0 = unknown
}

func (d *Decoder) maxEventBytes() int {
	if d.MaxEventBytes > 0 {
		return d.MaxEventBytes
	}
	return DefaultMaxEventBytes
}

var utf8BOM = []byte("\xef\xbb\xbf")

// DecodeBody decodes an audit request body and calls fn for every usable
// event in it, in order. The form is detected from the content: an
// audit.k8s.io/v1 or v1beta1 EventList, a single Event, a JSON array of
// events, the Azure Event Hub wrapper {"records":[{"properties":{"log":"<event
// JSON>"}}]}, or any whitespace-separated sequence of those (JSON lines).
//
// The Event passed to fn, and every slice in it, is valid only until fn
// returns: copy what must outlive it.
//
// Events that are present but unusable, or oversized, are counted in the
// Result and skipped; the rest of the body is still delivered. A body that is
// not JSON, or whose top level is none of the forms above, yields a
// *BodyError (wrapped) that says what and where; events before that point
// have been delivered and counted, which is harmless because herd
// deduplicates re-sent events by (auditID, stage). An empty body is an error.
func (d *Decoder) DecodeBody(body []byte, fn func(*Event)) (Result, error) {
	d.r = Result{Bytes: int64(len(body))}
	d.inflated, d.nest = 0, 0
	b, base := body, int64(0)
	b, err := d.gunzipBody(b)
	if err != nil {
		return d.r, err
	}
	if bytes.HasPrefix(b, utf8BOM) {
		b, base = b[len(utf8BOM):], base+int64(len(utf8BOM))
	}
	if err := d.decode(b, base, 1, fn); err != nil {
		return d.r, fmt.Errorf("decode audit body: %w", err)
	}
	return d.r, nil
}

// gunzipBody decompresses a body that starts with gzip's magic bytes, with
// or without Content-Encoding (a CloudWatch subscription payload forwarded
// as is), within MaxInflatedBytes; other bodies are returned as they are.
func (d *Decoder) gunzipBody(b []byte) ([]byte, error) {
	if !bytes.HasPrefix(b, GzipMagic) {
		return b, nil
	}
	p, err := d.inflate(b)
	switch {
	case errors.Is(err, ErrInflateLimit):
		d.r.Oversized++
		return nil, fmt.Errorf("decode audit body: %w (limit %d bytes)", err, d.maxInflated())
	case err != nil:
		d.r.Malformed++
		return nil, fmt.Errorf("decode audit body: %w: %w", ErrMalformed, err)
	}
	return p, nil
}

// DecodeNDJSON decodes a body declared as JSON lines (application/x-ndjson),
// as log shippers send. Each line stands alone: a line that is not JSON is
// counted malformed (its *BodyError becomes Result.Problem) and the other
// lines are still delivered, and a line longer than MaxEventBytes is counted
// oversized without being parsed. Blank lines are ignored, and an empty body
// is zero events. Only when no line at all is JSON does it return an error,
// the first line's. A line may hold any form DecodeBody accepts.
func (d *Decoder) DecodeNDJSON(body []byte, fn func(*Event)) (Result, error) {
	d.r = Result{Bytes: int64(len(body))}
	d.inflated, d.nest = 0, 0
	body, err := d.gunzipBody(body)
	if err != nil {
		return d.r, err
	}
	max := d.maxEventBytes()
	var firstErr *BodyError
	jsonLines := 0
	off, line := 0, 0
	if bytes.HasPrefix(body, utf8BOM) {
		off = len(utf8BOM)
	}
	for off < len(body) {
		line++
		end, next := len(body), len(body)
		if nl := bytes.IndexByte(body[off:], '\n'); nl >= 0 {
			end, next = off+nl, off+nl+1
		}
		b := body[off:end]
		if skipWS(b, 0) == len(b) {
			off = next
			continue
		}
		if len(b) > max {
			d.r.Oversized++
			d.setProblem(&EventError{Line: line, Offset: int64(off), Where: "event",
				Reason: fmt.Sprintf("line of %d bytes exceeds the %d-byte limit", len(b), max), Err: ErrOversized})
			off = next
			continue
		}
		if err := d.decode(b, int64(off), line, fn); err != nil {
			d.r.Malformed++
			d.setProblem(err)
			if firstErr == nil {
				firstErr = err
			}
		} else {
			jsonLines++
		}
		off = next
	}
	res := d.r
	if jsonLines == 0 && firstErr != nil {
		return res, fmt.Errorf("decode audit body: %w", firstErr)
	}
	return res, nil
}

// DecodeLine decodes one line of an audit log file (the apiserver's log
// backend writes one Event per line) and calls fn for the event in it. A
// blank line is no event and no error. Otherwise the error is a *BodyError
// when the line is not JSON, or an *EventError (errors.Is ErrMalformed or
// ErrOversized) when its event cannot be accounted; offsets in it count from
// the start of the line and Line is 0, for the caller to fill in from its
// LineReader.
func (d *Decoder) DecodeLine(line []byte, fn func(*Event)) error {
	if skipWS(line, 0) == len(line) {
		return nil
	}
	if max := d.maxEventBytes(); len(line) > max {
		return fmt.Errorf("decode audit line: %w", &EventError{Where: "event",
			Reason: fmt.Sprintf("line of %d bytes exceeds the %d-byte limit", len(line), max), Err: ErrOversized})
	}
	d.r = Result{}
	d.inflated, d.nest = 0, 0
	if err := d.decode(line, 0, 0, fn); err != nil {
		return fmt.Errorf("decode audit line: %w", err)
	}
	if d.r.Problem != nil {
		return fmt.Errorf("decode audit line: %w", d.r.Problem)
	}
	return nil
}

func (d *Decoder) setProblem(err error) {
	if d.r.Problem == nil {
		d.r.Problem = err
	}
}

// decode walks b, a whole body or one NDJSON line starting at byte base of
// the body and on line `line` (0 = unknown), delivering events as it finds
// them.
func (d *Decoder) decode(b []byte, base int64, line int, fn func(*Event)) *BodyError {
	d.base, d.line = base, line

	i := skipWS(b, 0)
	if i == len(b) {
		return d.bodyError(b, &scanError{off: i, msg: "empty body: no JSON value"})
	}
	for i < len(b) {
		var err *scanError
		switch b[i] {
		case '{':
			i, err = d.walkEvent(b, i, 0, true, loc{}, fn)
		case '[':
			i, err = d.walkArray(b, i, 0, whereArray, fn)
		default:
			if _, err = skipValue(b, i, 0); err == nil {
				err = &scanError{off: i, msg: "top-level value is " + valueKind(b, i) +
					", want an audit Event, an EventList, an array of events or a records wrapper"}
			} else if what := describeNonJSON(b[i:]); what != "" && i == skipWS(b, 0) {
				err = &scanError{off: i, msg: "body is " + what}
			}
		}
		if err != nil {
			return d.bodyError(b, err)
		}
		i = skipWS(b, i)
	}
	return nil
}

func (d *Decoder) bodyError(b []byte, err *scanError) *BodyError {
	msg := err.msg
	if err.inString {
		msg += fmt.Sprintf(" (in the string opened at offset %d)", d.base+int64(err.strOpen))
	}
	return &BodyError{Line: d.lineOf(b, err.off), Offset: d.base + int64(err.off), Msg: msg}
}

func (d *Decoder) lineOf(b []byte, off int) int {
	if d.line == 0 {
		return 0
	}
	if off > len(b) {
		off = len(b)
	}
	return d.line + bytes.Count(b[:off], []byte{'\n'})
}

// walkArray validates the array at b[i], enclosed by depth containers, and
// delivers each element as soon as it has been read.
func (d *Decoder) walkArray(b []byte, i, depth int, w where, fn func(*Event)) (int, *scanError) {
	if depth >= maxDepth {
		return 0, &scanError{off: i, msg: "nesting deeper than " + itoa(maxDepth) + " levels"}
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for idx := 0; ; idx++ {
		start := skipWS(b, i)
		at := loc{b: b, off: start, w: w, idx: idx}
		var (
			end int
			err *scanError
		)
		switch {
		case start < len(b) && b[start] == '{' && w != whereRecords:
			end, err = d.walkEvent(b, start, depth+1, false, at, fn)
		default:
			if end, err = skipValue(b, start, depth+1); err == nil {
				if w == whereRecords {
					d.deliverRecord(b[start:end], at, fn)
				} else {
					d.skip(at, ErrMalformed, "is "+valueKind(b, start)+", want an object", 0)
				}
			}
		}
		if err != nil {
			return 0, err
		}
		i = skipWS(b, end)
		if i >= len(b) {
			return 0, unexpected(b, i, "after array element")
		}
		switch b[i] {
		case ',':
			i++
		case ']':
			return i + 1, nil
		default:
			return 0, unexpected(b, i, "after array element")
		}
	}
}

// The shapes a top-level object can have.
type form uint8

const (
	formUndecided form = iota
	formEvent          // a single Event (or something malformed that claims to be one)
	formEventList      // events in "items"
	formRecords        // Azure Event Hub entries in "records"
)

// classify decides what a top-level object is from its first "kind" key and
// whether it has "items" and "records" keys. kind is nil when absent or not a
// string; kindPresent says whether the key exists at all. An object with a
// kind other than EventList is an event (a wrong kind is then counted
// malformed); without a kind, "items" makes an EventList and "records" an
// Azure wrapper.
func classify(kindPresent bool, kind []byte, hasItems, hasRecords bool) form {
	switch {
	case kindPresent && string(kind) == "EventList":
		return formEventList
	case kindPresent:
		return formEvent
	case hasItems:
		return formEventList
	case hasRecords:
		return formRecords
	}
	return formEvent
}

// lookAhead classifies a top-level object whose "items" or "records" value at
// b[i] came before its "kind" key (or that has none): it skips that value and
// reads the remaining keys. Only such objects pay for this second look; the
// apiserver writes kind first.
func lookAhead(b []byte, i int, isItems bool) (form, *scanError) {
	hasItems, hasRecords := isItems, !isItems
	var (
		kind rawStr
		seen bool
		err  *scanError
		key  []byte
		esc  bool
		kb   [32]byte
	)
	if i, err = skipValue(b, i, 1); err != nil {
		return 0, err
	}
	for {
		i = skipWS(b, i)
		if i >= len(b) {
			return 0, unexpected(b, i, "after object member")
		}
		if b[i] == '}' {
			return classify(seen, kindName(kind), hasItems, hasRecords), nil
		}
		if b[i] != ',' {
			return 0, unexpected(b, i, "after object member")
		}
		if key, i, esc, err = scanKeyFast(b, skipWS(b, i+1)); err != nil {
			return 0, err
		}
		i = skipWS(b, i)
		switch string(keyName(key, esc, &kb)) {
		case "kind":
			if !seen {
				seen = true
				if i < len(b) && b[i] == '"' {
					if i, err = scanStringField(b, i, &kind); err != nil {
						return 0, err
					}
					continue
				}
			}
		case "items":
			hasItems = true
		case "records":
			hasRecords = true
		}
		if i, err = skipValue(b, i, 1); err != nil {
			return 0, err
		}
	}
}

// deliverRecord unwraps one Azure Event Hub entry, rec (already validated).
// Diagnostic settings send every control-plane log category to the same hub,
// so entries whose category is not kube-audit or kube-audit-admin are counted
// as skipped, not malformed. fastjson does the unwrapping: this path is cold
// and the embedded event arrives as an escaped JSON string, which fastjson
// unescapes in place.
func (d *Decoder) deliverRecord(rec []byte, at loc, fn func(*Event)) {
	if rec[0] != '{' {
		d.skip(at, ErrMalformed, "is "+valueKind(rec, 0)+", want an object", 0)
		return
	}
	v, err := d.envParser(len(rec)).ParseBytes(rec)
	if err != nil {
		d.skip(at, ErrMalformed, err.Error(), 0)
		return
	}
	if v.Get("data") != nil && v.Get("properties") == nil {
		// Kinesis Data Firehose's HTTP endpoint delivery shares the
		// "records" key; its entries are {"data": base64}.
		d.firehoseRecord(v, at, fn)
		return
	}
	if cat := v.Get("category"); cat != nil {
		c, _ := cat.StringBytes()
		if !bytes.HasPrefix(c, []byte("kube-audit")) {
			d.r.Skipped++
			return
		}
	}
	log := v.Get("properties", "log")
	if log == nil || log.Type() != fastjson.TypeString {
		d.skip(at, ErrMalformed, "properties.log is missing or not a string", 0)
		return
	}
	ev, _ := log.StringBytes()
	if len(ev) > d.maxEventBytes() {
		d.skip(at, ErrOversized, "", len(ev))
		return
	}
	i := skipWS(ev, 0)
	end, serr := skipValue(ev, i, 0)
	switch {
	case serr != nil:
		d.skip(at, ErrMalformed, "properties.log is not JSON: "+serr.msg+" at offset "+itoa(serr.off)+" of the log", 0) // offsets inside the unescaped log
		return
	case ev[i] != '{':
		d.skip(at, ErrMalformed, "properties.log is "+valueKind(ev, i)+", want an object", 0)
		return
	case skipWS(ev, end) != len(ev):
		d.skip(at, ErrMalformed, "properties.log has data after the event", 0)
		return
	}
	// Validated above, so this walk cannot fail; it reports into at.
	d.walkEvent(ev, i, 0, false, at, fn)
}

// skip counts a skipped event and, for the first one, records where and why.
// The message is built only then, so a batch full of bad events costs one
// allocation, not one per event.
func (d *Decoder) skip(at loc, kind error, reason string, size int) {
	if kind == ErrOversized {
		d.r.Oversized++
	} else {
		d.r.Malformed++
	}
	if d.r.Problem != nil {
		return
	}
	if kind == ErrOversized {
		reason = fmt.Sprintf("event of %d bytes exceeds the %d-byte limit", size, d.maxEventBytes())
	}
	d.r.Problem = &EventError{
		Line:   d.lineOf(at.b, at.off),
		Offset: d.base + int64(at.off),
		Where:  at.w.describe(at.idx),
		Reason: reason,
		Err:    kind,
	}
}
