package analyze

import (
	"reflect"
	"slices"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
)

// timeline places events on a log's own time. The exporter bounds an
// event's time by when it received it plus accounting.maxClockSkew, so that
// one event stamped ahead cannot move its windows (issue 16 point 6);
// offline there is no receive time, so the log's other events are the
// reference: an event is believed when the events around it agree.
//
//   - now is the newest believed stageTimestamp: the ledger's clock and the
//     end of the report's windows.
//   - An event at most skew ahead of now (or earlier: logs of several
//     apiservers, or rotated files, come in any order) is accounted at its
//     own time at once.
//   - An event further ahead waits, copied, in pending. If the next event
//     is back within skew of now, the waiting ones were ahead of the log:
//     they are accounted at now ("a future event counts now", as in the
//     exporter) and move nothing. If the events ahead in a row come from
//     confirmAhead requests (a request's stages count once), the log moved on (the next file starts later, a quiet spell, a
//     sparse or filtered log): now moves to the earliest of them, and each
//     of them is accounted at its own time once it is within skew of now.
//   - Before the first events are believed, every event waits: the log's
//     first event stamped an hour ahead is found like any other.
//   - At the end, the events still waiting have nothing after them to agree
//     with. One is believed if it is no further ahead than endSteps times the
//     widest step the log's time took over its last recentSteps moves (a
//     sparse log's last events, a minute apart like the rest); otherwise it
//     is accounted at now.
//
// So one request, or two in a row, stamped an hour ahead — a broken clock,
// hand-edited lines, one apiserver's clock running ahead with its events
// interleaved with the others' — change no window; a sparse log is read
// with its events at their own times, a couple of requests late.
type timeline struct {
	now     int64 // Unix ns; 0 before the first events are believed
	skew    int64
	pending []*audit.Event // copies of events ahead of now, in log order
	steps   [recentSteps]int64
	step    int // next slot of steps
}

// recentSteps is how many of the log time's last moves forward the end of
// the log compares its waiting events with, and endSteps how many of the
// widest of them one may be ahead.
const (
	recentSteps = 16
	endSteps    = 4
)

// advance moves now to ts if it is later, remembering the step.
func (tl *timeline) advance(ts int64) {
	if ts <= tl.now {
		return
	}
	if tl.now > 0 {
		tl.steps[tl.step] = ts - tl.now
		tl.step = (tl.step + 1) % recentSteps
	}
	tl.now = ts
}

// confirmAhead is how many requests in a row, all more than the skew ahead
// of the log's time, show that the log itself moved on.
const confirmAhead = 3

// admit takes one event (after dedup). account is called, in log order, for
// each event whose time is settled, with e.StageTimestampNanos set to the
// time it counts at; ahead says it was stamped ahead of the log and counts
// at now instead.
func (tl *timeline) admit(e *audit.Event, account func(e *audit.Event, ahead bool)) {
	ts := e.StageTimestampNanos
	if tl.now > 0 && ts <= tl.now+tl.skew {
		if len(tl.pending) > 0 {
			tl.flush(account) // e is back in the log's time: they were ahead of it
		}
		tl.advance(ts)
		account(e, false)
		return
	}
	tl.pending = append(tl.pending, cloneEvent(e))
	if requests(tl.pending) < confirmAhead {
		return
	}
	// The log moved on: from the earliest of them, account those that are
	// within skew of the log's time, in order; the rest wait.
	earliest := tl.pending[0].StageTimestampNanos
	for _, p := range tl.pending[1:] {
		earliest = min(earliest, p.StageTimestampNanos)
	}
	tl.advance(earliest)
	rest := tl.pending[:0]
	for _, p := range tl.pending {
		if p.StageTimestampNanos <= tl.now+tl.skew {
			tl.advance(p.StageTimestampNanos)
			account(p, false)
		} else {
			rest = append(rest, p)
		}
	}
	clear(tl.pending[len(rest):])
	tl.pending = rest
}

// flush accounts the waiting events: at now when nothing agreed with them
// (admit: the log's time came back), or, at the end (last), at their own
// time when they are no further ahead than the log's recent steps.
func (tl *timeline) flush(account func(e *audit.Event, ahead bool)) {
	tl.settle(account, tl.skew)
}

// end settles the events still waiting when the log ends.
func (tl *timeline) end(account func(e *audit.Event, ahead bool)) {
	var widest int64
	for _, s := range tl.steps {
		widest = max(widest, s)
	}
	tl.settle(account, max(tl.skew, endSteps*widest))
}

func (tl *timeline) settle(account func(e *audit.Event, ahead bool), tolerance int64) {
	for _, p := range tl.pending {
		if tl.now == 0 {
			tl.now = p.StageTimestampNanos // the log's only events: believe the first
		}
		if p.StageTimestampNanos > tl.now+tolerance {
			p.StageTimestampNanos = tl.now
			account(p, true)
		} else {
			tl.advance(p.StageTimestampNanos)
			account(p, false)
		}
	}
	clear(tl.pending)
	tl.pending = tl.pending[:0]
}

// requests counts the requests events are stages of.
func requests(events []*audit.Event) int {
	n := 0
	for i, e := range events {
		if !slices.ContainsFunc(events[:i], func(p *audit.Event) bool { return sameRequest(p, e) }) {
			n++
		}
	}
	return n
}

// sameRequest reports whether a and b are stages of one request: the
// request's own timestamp tells requests that reuse an Audit-ID apart.
func sameRequest(a, b *audit.Event) bool {
	return string(a.AuditID) == string(b.AuditID) && a.RequestKey() == b.RequestKey()
}

// time is now as a time.Time: the ledger's clock while herd analyze reads,
// so that its own bound on future events is the log's time.
func (tl *timeline) time() time.Time { return time.Unix(0, max(tl.now, 1)) }

// cloneEvent copies e and every byte slice it holds (which alias the
// decoder's buffers, valid only during its callback), whatever fields
// audit.Event has.
func cloneEvent(e *audit.Event) *audit.Event {
	c := *e
	cloneBytes(reflect.ValueOf(&c).Elem())
	return &c
}

var bytesType = reflect.TypeFor[[]byte]()

func cloneBytes(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			cloneBytes(v.Field(i))
		}
	case reflect.Array:
		for i := range v.Len() {
			cloneBytes(v.Index(i))
		}
	case reflect.Slice:
		if v.Type() != bytesType {
			panic("analyze: cloneEvent: audit.Event holds a " + v.Type().String() + "; copy it too")
		}
		if !v.IsNil() {
			v.SetBytes(append([]byte(nil), v.Bytes()...))
		}
	}
}
