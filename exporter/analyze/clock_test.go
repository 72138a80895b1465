package analyze

import (
	"bytes"
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
)

// render writes requests as a log, in time order, each request's events
// shifted by shift (the auditIDs offset by idOffset, so shifted copies are
// other requests).
func render(rs []req, shift time.Duration, idOffset int) []string {
	rs = slices.Clone(rs)
	slices.SortStableFunc(rs, func(x, y req) int { return cmp.Compare(x.at, y.at) })
	var lines []string
	for _, r := range rs {
		r.at += shift
		r.id += idOffset
		lines = append(lines, r.events()...)
	}
	return lines
}

// windowRelists is each relist row's window count and total, by identity
// and resource.
func windowRelists(r *Report) map[string][2]uint64 {
	out := map[string][2]uint64{}
	for _, row := range r.Relisting.Rows {
		out[row.Identity+" "+row.Resource] = [2]uint64{uint64(row.WindowRelists), row.Relists}
	}
	return out
}

// Issue 16 point 6, "the same in herd analyze": one event stamped an hour
// ahead of the rest of the log moved the report's window an hour ahead
// (every window column went to 0) and the span with it. Wherever it is in
// the log — first, in the middle, last, or two in a row — it now counts at
// the log's own time: the report is the one without it, plus that event.
func TestEventAheadOfTheLogCountsAtItsTime(t *testing.T) {
	base := render(scenario(), 0, 0)
	clean, _ := analyzeString(t, Options{}, "clean.log", strings.Join(base, "\n"))
	if clean.Events.Ahead != 0 || len(clean.Relisting.Rows) == 0 {
		t.Fatalf("clean scenario: %d ahead, %d relist rows", clean.Events.Ahead, len(clean.Relisting.Rows))
	}
	// node-7's kubelet relisting pods once more, stamped an hour after the log.
	forged := req{id: 9000, user: "system:node:node-7", groups: nodeGroups, ua: kubeletUA, ip: "10.0.0.77", verb: "list",
		resource: "pods", version: "v1", code: 200, uri: "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-7&limit=500",
		at: time.Hour + 5*time.Minute}
	for _, tc := range []struct {
		name string
		at   int // where in the log
		n    int // copies in a row (other requests)
	}{
		{"first", 0, 1},
		{"middle", len(base) / 2, 1},
		{"last", len(base), 1},
		{"two in a row", len(base) / 3, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ins []string
			for i := 0; i < tc.n; i++ {
				f := forged
				f.id += i
				ins = append(ins, f.events()...)
			}
			log := slices.Insert(slices.Clone(base), tc.at, ins...)
			r, _ := analyzeString(t, Options{}, "forged.log", strings.Join(log, "\n"))
			if want := 2 * tc.n; r.Events.Ahead != want {
				t.Errorf("ahead = %d, want %d (each forged request's two events)", r.Events.Ahead, want)
			}
			if !r.Span.Last.Equal(clean.Span.Last) || !r.Window.End.Equal(*clean.Window.End) {
				t.Errorf("span ends %v, window ends %v; want %v as without the forged events", r.Span.Last, r.Window.End, clean.Span.Last)
			}
			// Counted at the log's time: in the totals and in the window,
			// which covers the whole 6.5-minute scenario.
			got, want := windowRelists(r), windowRelists(clean)
			k := "system:node:node-7 pods"
			want[k] = [2]uint64{want[k][0] + uint64(tc.n), want[k][1] + uint64(tc.n)}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("relists (window, total) = %v\nwant %v", got, want)
			}
			if !slices.ContainsFunc(r.Notes, func(n string) bool { return strings.Contains(n, "ahead of the rest of the log") }) {
				t.Errorf("notes %q do not say events were ahead", r.Notes)
			}
		})
	}
}

// A log that moves on — the next file starts a day later, a sparse or
// filtered log whose events are minutes apart — is read at its own times:
// nothing is taken for ahead, and the window ends at its last event.
func TestLogThatMovesOnIsBelieved(t *testing.T) {
	day1, day2 := render(scenario(), 0, 0), render(scenario(), 24*time.Hour, 5000)
	both, _ := analyzeString(t, Options{}, "two-days.log", strings.Join(append(day1, day2...), "\n"))
	second, _ := analyzeString(t, Options{}, "day2.log", strings.Join(day2, "\n"))
	if both.Events.Ahead != 0 || !both.Window.End.Equal(*second.Window.End) {
		t.Errorf("two days: %d ahead, window ends %v; want 0 and %v", both.Events.Ahead, both.Window.End, second.Window.End)
	}
	for k, v := range windowRelists(second) {
		if got := windowRelists(both)[k]; got[0] != v[0] || got[1] != 2*v[1] {
			t.Errorf("%s: (window, total) = %v, want (%d, %d)", k, got, v[0], 2*v[1])
		}
	}

	// Every event minutes after the one before: all at their own times.
	var sparse []string
	for i := 0; i < 20; i++ {
		r := req{id: i + 1, user: "system:node:node-7", groups: nodeGroups, ua: kubeletUA, ip: "10.0.0.77", verb: "list",
			resource: "pods", version: "v1", code: 200, uri: "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-7&limit=500",
			at: time.Duration(i) * (2*time.Minute + time.Duration(i)*time.Second)}
		sparse = append(sparse, r.events()...)
	}
	r, _ := analyzeString(t, Options{Window: 15 * time.Minute}, "sparse.log", strings.Join(sparse, "\n"))
	last := t0.Add(19 * (2*time.Minute + 19*time.Second)).Add(20 * time.Millisecond)
	if r.Events.Ahead != 0 || !r.Span.Last.Equal(last) {
		t.Errorf("sparse log: %d ahead, span ends %v; want 0 and %v", r.Events.Ahead, r.Span.Last, last)
	}
}

// cloneEvent copies every byte slice of an event, so that a waiting event
// outlives the decoder's buffers.
func TestCloneEvent(t *testing.T) {
	var e audit.Event
	n := 0
	eachSlice(reflect.ValueOf(&e).Elem(), func(v reflect.Value) {
		n++
		v.SetBytes(fmt.Appendf(nil, "field-%d", n))
	})
	e.StageTimestampNanos, e.Code = 42, 200
	c := cloneEvent(&e)
	want := fmt.Sprintf("%+v", e)
	eachSlice(reflect.ValueOf(&e).Elem(), func(v reflect.Value) { // the decoder reuses its buffers
		copy(v.Bytes(), bytes.Repeat([]byte{'x'}, v.Len()))
	})
	if got := fmt.Sprintf("%+v", *c); got != want || n < 20 {
		t.Errorf("clone after the original's bytes changed:\n%s\nwant\n%s (%d byte slices)", got, want, n)
	}
}

// eachSlice calls f for every slice in v, through structs and arrays: the
// test's own walk of audit.Event, kept apart from cloneBytes so that it
// checks it rather than repeats it.
func eachSlice(v reflect.Value, f func(reflect.Value)) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			eachSlice(v.Field(i), f)
		}
	case reflect.Array:
		for i := range v.Len() {
			eachSlice(v.Index(i), f)
		}
	case reflect.Slice:
		f(v)
	}
}
