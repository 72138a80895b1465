package tail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// sink collects delivered lines; fn copies because the slice is only valid
// during the call.
type sink struct {
	mu    sync.Mutex
	lines []string
	delay time.Duration // a slow consumer
}

func (s *sink) fn(b []byte) {
	// Spin: time.Sleep rounds short delays up to a timer tick.
	for t0 := time.Now(); time.Since(t0) < s.delay; {
	}
	s.mu.Lock()
	s.lines = append(s.lines, string(b))
	s.mu.Unlock()
}

func (s *sink) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lines)
}

func (s *sink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lines)
}

// recorder is a slog handler that keeps records for assertions.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recorder) WithGroup(string) slog.Handler            { return h }
func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}

func (h *recorder) find(msg string) []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slog.Record
	for _, r := range h.recs {
		if strings.Contains(r.Message, msg) {
			out = append(out, r)
		}
	}
	return out
}

func attr(r slog.Record, key string) (slog.Value, bool) {
	var v slog.Value
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, found = a.Value, true
			return false
		}
		return true
	})
	return v, found
}

type harness struct {
	t    *testing.T
	f    *Follower
	sink *sink
	log  *recorder
	stop func() error
}

// start runs a Follower in a goroutine; stop cancels it and returns Run's
// error, failing the test if Run does not return promptly.
func start(t *testing.T, path string, opts Options, s *sink) *harness {
	t.Helper()
	if s == nil {
		s = &sink{}
	}
	rec := &recorder{}
	opts.Logger = slog.New(rec)
	if opts.PollInterval == 0 {
		opts.PollInterval = 5 * time.Millisecond
	}
	f := New(path, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := f.Run(ctx, s.fn)
		if ctx.Err() == nil {
			t.Errorf("Run returned before cancel: %v", err)
		}
		done <- err
	}()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return within 5s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return &harness{t: t, f: f, sink: s, log: rec, stop: stop}
}

// waitFollowing waits until the follower has opened the file and chosen
// its start offset, so that later writes are unambiguously new.
func (h *harness) waitFollowing() {
	h.t.Helper()
	waitFor(h.t, "follower to open the file", func() bool { return len(h.log.find("following audit log")) > 0 })
}

// startOn creates audit.log holding initial in a fresh directory and starts
// a Follower on it that has already opened it; it returns the path.
func startOn(t *testing.T, initial string, opts Options, s *sink) (*harness, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	appendFile(t, path, initial)
	h := start(t, path, opts, s)
	h.waitFollowing()
	return h, path
}

// expect waits for len(want) lines, gives the follower a few more polls to
// deliver anything extra, and checks that it delivered exactly want.
func (h *harness) expect(want []string) {
	h.t.Helper()
	h.waitLines(len(want))
	time.Sleep(20 * time.Millisecond)
	assertExactly(h.t, h.sink.get(), want)
}

func (h *harness) waitLines(n int) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for h.sink.len() < n {
		if time.Now().After(deadline) {
			h.log.mu.Lock()
			for _, r := range h.log.recs {
				var b strings.Builder
				r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s", a); return true })
				h.t.Logf("%s %s %s%s", r.Time.Format("15:04:05.000000"), r.Level, r.Message, b.String())
			}
			h.log.mu.Unlock()
			gens := map[string]int{}
			for _, l := range h.sink.get() {
				if i := strings.Index(l, `"gen":`); i >= 0 {
					gens[l[i+6:i+8]]++
				}
			}
			h.t.Fatalf("timed out waiting for %d lines: got %d, stats %+v, lines per generation %v", n, h.sink.len(), h.f.Stats(), gens)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func appendFile(t testing.TB, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func line(gen, seq int) string {
	return fmt.Sprintf(`{"kind":"Event","gen":%d,"seq":%d,"auditID":"%08x-%04d"}`, gen, seq, gen*7919+seq, seq)
}

// assertExactly checks that got is want: every line once, in order.
func assertExactly(t *testing.T, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	seen := map[string]int{}
	for _, l := range got {
		seen[l]++
	}
	missing, dup := 0, 0
	for _, l := range want {
		switch seen[l] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	first := 0
	for first < min(len(got), len(want)) && got[first] == want[first] {
		first++
	}
	t.Fatalf("got %d lines, want %d: %d missing, %d duplicated, first difference at index %d", len(got), len(want), missing, dup, first)
}

func TestFromEnd(t *testing.T) {
	h, path := startOn(t, "old1\nold2\n", Options{}, nil)
	appendFile(t, path, "new1\nnew2\n")
	h.expect([]string{"new1", "new2"})
}

func TestFromStart(t *testing.T) {
	h, path := startOn(t, "old1\nold2\n", Options{FromStart: true}, nil)
	appendFile(t, path, "new1\n")
	h.expect([]string{"old1", "old2", "new1"})
	if st := h.f.Stats(); st.Lines != 3 || st.Bytes != 15 {
		t.Errorf("stats = %+v, want 3 lines, 15 bytes", st)
	}
}

// Starting at the end while the writer is mid-line must not deliver the
// rest of that line as if it were whole.
func TestFromEndSkipsLineInProgress(t *testing.T) {
	h, path := startOn(t, "old1\n{\"half\":", Options{}, nil)
	appendFile(t, path, "\"line\"}\nnew\n")
	h.expect([]string{"new"})
	if st := h.f.Stats(); st.Oversized != 0 {
		t.Errorf("the skipped fragment counted as oversized: %+v", st)
	}
}

func TestPartialLineHeld(t *testing.T) {
	h, path := startOn(t, "", Options{}, nil)
	appendFile(t, path, `{"a":`)
	time.Sleep(50 * time.Millisecond) // ten polls
	if n := h.sink.len(); n != 0 {
		t.Fatalf("partial line delivered early: %q", h.sink.get())
	}
	appendFile(t, path, "1}\r\n")
	h.expect([]string{`{"a":1}`})
}

// Blank lines are skipped, CRLF is trimmed, other CRs and spaces are kept.
func TestCRLFAndBlankLines(t *testing.T) {
	h, path := startOn(t, "", Options{}, nil)
	appendFile(t, path, "a\r\n\n\r\nb\n \na\rb\nc\r\r\nlast\n")
	h.expect([]string{"a", "b", " ", "a\rb", "c\r", "last"})
}

func TestOversizedLine(t *testing.T) {
	h, path := startOn(t, "", Options{}, nil)
	big := bytes.Repeat([]byte("x"), 300<<10)
	f := openAppend(t, path)
	// Write the big line in pieces, as a writer would stream it, so the
	// follower sees it grow past the limit before its newline exists.
	mustWrite(t, f, "first\n")
	for chunk := range slices.Chunk(big, 10<<10) {
		mustWrite(t, f, string(chunk))
		time.Sleep(time.Millisecond)
	}
	mustWrite(t, f, "\nafter\n")
	// Exactly MaxLineBytes is still fine, with or without CR.
	exact := strings.Repeat("y", DefaultMaxLineBytes)
	mustWrite(t, f, exact+"\n"+exact+"\r\n"+exact+"z\n"+"end\n")
	h.expect([]string{"first", "after", exact, exact, "end"})
	if st := h.f.Stats(); st.Oversized != 2 {
		t.Errorf("oversized = %d, want 2", st.Oversized)
	}
	recs := h.log.find("too long")
	if len(recs) != 2 {
		t.Fatalf("got %d oversized reports, want 2", len(recs))
	}
	for i, want := range []struct{ line, off, n int64 }{
		{2, 6, 300 << 10},
		{6, int64(6 + 300<<10 + 1 + 6 + 2*(DefaultMaxLineBytes+1) + 1), DefaultMaxLineBytes + 1},
	} {
		r := recs[i]
		if r.Level != slog.LevelWarn {
			t.Errorf("report %d level %v, want WARN", i, r.Level)
		}
		for key, w := range map[string]int64{"line": want.line, "offset": want.off, "bytes": want.n} {
			if v, ok := attr(r, key); !ok || v.Int64() != w {
				t.Errorf("report %d: %s = %v, want %d", i, key, v, w)
			}
		}
	}
}

func mustWrite(t testing.TB, f *os.File, s string) {
	t.Helper()
	if _, err := f.WriteString(s); err != nil {
		t.Error(err)
	}
}

// writeLines writes n lines of generation gen to f and returns them.
func writeLines(t testing.TB, f *os.File, gen, n int) []string {
	t.Helper()
	lines := make([]string, 0, n)
	for i := range n {
		lines = append(lines, line(gen, i))
		mustWrite(t, f, lines[i]+"\n")
	}
	return lines
}

// openAppend opens path for appending, as a writer that keeps its file
// open does; the file is closed when the test ends.
func openAppend(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// lumberjack rotates by closing the file, renaming it to a backup name and
// creating a new one; the follower must finish the old file and then read
// the new one from its start, while the writer keeps writing.
func TestRenameRotation(t *testing.T) {
	h, path := startOn(t, "", Options{}, nil)

	const n, m = 3000, 3000
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := writeLines(t, f, 1, n)
	f.Close()
	if err := os.Rename(path, filepath.Join(filepath.Dir(path), "audit-2026-11-23T08-00-00.000.log")); err != nil {
		t.Fatal(err)
	}
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, writeLines(t, f, 2, m)...)
	f.Close()
	h.expect(want)
	if st := h.f.Stats(); st.Rotations != 1 || st.Truncations != 0 {
		t.Errorf("stats = %+v, want 1 rotation, 0 truncations", st)
	}
}

// logrotate's "create" mode: the new file appears empty while the writer
// still writes to the old one until it reopens. Nothing written to the old
// file before the new one has data may be lost.
func TestRenameRotationWriterReopensLate(t *testing.T) {
	h, path := startOn(t, "", Options{}, nil)

	old := openAppend(t, path)
	mustWrite(t, old, "a1\n")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "") // logrotate creates the new file
	for i := 2; i <= 5; i++ {
		time.Sleep(15 * time.Millisecond) // several polls see the empty new file
		mustWrite(t, old, fmt.Sprintf("a%d\n", i))
	}
	appendFile(t, path, "b1\n") // the writer reopened
	h.expect([]string{"a1", "a2", "a3", "a4", "a5", "b1"})
}

// The unterminated last line of a rotated file is delivered: nothing will
// complete it.
func TestRotatedFileUnterminatedLastLine(t *testing.T) {
	h, path := startOn(t, "", Options{}, nil)
	appendFile(t, path, "a\nb")
	time.Sleep(20 * time.Millisecond)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "c\n")
	h.expect([]string{"a", "b", "c"})
}

// Ten rotations in a row, the writer writing all the time and pausing only
// two poll intervals around each rotation (see the package guarantees).
func TestRepeatedRotations(t *testing.T) {
	const poll = 5 * time.Millisecond
	h, path := startOn(t, "", Options{PollInterval: poll}, nil)
	want := writeGenerations(h, path, 11, 500, 2*poll)
	h.expect(want)
	if st := h.f.Stats(); st.Rotations != 10 {
		t.Errorf("rotations = %d, want 10", st.Rotations)
	}
}

// A slow consumer falls several generations behind the writer; the
// generations it found while busy are held open and read in full, in order,
// even after later rotations renamed them away.
func TestRotationsWhileBehind(t *testing.T) {
	const poll = 5 * time.Millisecond
	h, path := startOn(t, "", Options{PollInterval: poll}, &sink{delay: 200 * time.Microsecond})
	want := writeGenerations(h, path, 8, 250, 3*poll)
	if got := h.sink.len(); got > len(want)*3/4 {
		t.Errorf("consumer was not far behind (%d of %d lines read when the writer finished)", got, len(want))
	}
	h.expect(want)
	if st := h.f.Stats(); st.Rotations != 7 {
		t.Errorf("rotations = %d, want 7", st.Rotations)
	}
}

// writeGenerations writes gens files of n lines each at path the way
// lumberjack does, pausing in the middle of each file and before each
// rotation, and returns the lines in order.
//
// The package promises to find a generation that stays at the path longer
// than PollInterval plus one callback; pause should be a few of those. On
// a loaded machine (the race detector, parallel builds) the follower's
// goroutine can be descheduled for longer than any pause the tests can
// afford, so before rotating a generation away the writer also waits until
// the follower has found it, and logs how often that wait was needed.
func writeGenerations(h *harness, path string, gens, n int, pause time.Duration) []string {
	t := h.t
	t.Helper()
	var want []string
	late := 0
	for g := range gens {
		if g > 0 {
			time.Sleep(pause)
			if g > 1 && len(h.log.find("finishing the old file first")) < g-1 {
				late++
				waitFor(t, fmt.Sprintf("generation %d to be found", g-1), func() bool {
					return len(h.log.find("finishing the old file first")) >= g-1
				})
			}
			if err := os.Rename(path, filepath.Join(filepath.Dir(path), fmt.Sprintf("audit-%03d.log", g))); err != nil {
				t.Fatal(err)
			}
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			l := line(g, i)
			want = append(want, l)
			mustWrite(t, f, l+"\n")
			if i == n/2 {
				time.Sleep(pause)
			}
		}
		f.Close()
	}
	if late > 0 {
		t.Logf("the follower found %d of %d generations later than the pause of %v", late, gens-1, pause)
	}
	return want
}

// copytruncate after the follower caught up: nothing is lost.
func TestCopyTruncate(t *testing.T) {
	h, path := startOn(t, "", Options{}, nil)

	f := openAppend(t, path)
	want := writeLines(t, f, 1, 1000)
	h.waitLines(1000)
	copyTruncate(t, path)
	want = append(want, writeLines(t, f, 2, 1000)...)
	h.expect(want)
	if st := h.f.Stats(); st.Truncations != 1 || st.Rotations != 0 {
		t.Errorf("stats = %+v, want 1 truncation, 0 rotations", st)
	}
}

// copytruncate while the writer keeps writing and the follower may be
// behind: lines after the truncation are all seen, nothing twice, order
// kept; only lines between the last read and the truncation may be lost.
func TestCopyTruncateWhileWriting(t *testing.T) {
	h, path := startOn(t, "", Options{}, &sink{delay: 2 * time.Microsecond})

	f := openAppend(t, path)
	before := writeLines(t, f, 1, 3000)
	copyTruncate(t, path)
	after := writeLines(t, f, 2, 3000)
	waitFor(t, "the last line", func() bool {
		got := h.sink.get()
		return len(got) > 0 && got[len(got)-1] == after[len(after)-1]
	})
	got := h.sink.get()
	k := slices.Index(got, after[0])
	if k < 0 {
		t.Fatalf("first line after truncation not delivered")
	}
	assertExactly(t, got[k:], after)
	// What came before is an in-order prefix of the old lines.
	assertExactly(t, got[:k], before[:k])
	t.Logf("lost %d of %d lines written before the truncation", len(before)-k, len(before))
}

// copytruncate where the new content has grown past the old read offset
// before the follower looks again: the size never looks smaller, and only
// the fingerprint shows that the file was rewritten. A real copytruncate
// does this in two steps (truncate, then append), so whether the follower
// sees the short file in between depends on timing; one pwrite of the new
// content at offset 0 shows the follower exactly the state after both.
func TestCopyTruncateRegrownBeforePoll(t *testing.T) {
	h, path := startOn(t, "", Options{}, nil)
	var want []string
	var b strings.Builder
	for i := range 3 {
		want = append(want, line(1, i))
		b.WriteString(want[i] + "\n")
	}
	appendFile(t, path, b.String())
	h.waitLines(3)

	b.Reset()
	for i := range 50 {
		want = append(want, line(2, i))
		b.WriteString(want[len(want)-1] + "\n")
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(b.String()), 0); err != nil {
		t.Fatal(err)
	}
	h.expect(want)
	if st := h.f.Stats(); st.Truncations != 1 {
		t.Errorf("truncations = %d, want 1", st.Truncations)
	}
	recs := h.log.find("truncated")
	if len(recs) != 1 {
		t.Fatalf("got %d truncation reports, want 1", len(recs))
	}
	if v, _ := attr(recs[0], "shrunk"); v.Bool() {
		t.Errorf("truncation reported as shrunk; it can only have been noticed by the fingerprint")
	}
}

func copyTruncate(t *testing.T, path string) {
	t.Helper()
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
}

// A file that does not exist yet is waited for, logged once, and read from
// its start when it appears even though FromStart is false.
func TestFileAppearsLater(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "audit.log")
	h := start(t, path, Options{}, nil)
	waitFor(t, "the waiting message", func() bool { return len(h.log.find("does not exist yet")) > 0 })
	time.Sleep(30 * time.Millisecond) // several polls
	if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "first\nsecond\n")
	h.waitLines(2)
	appendFile(t, path, "third\n")
	h.expect([]string{"first", "second", "third"})
	if n := len(h.log.find("does not exist yet")); n != 1 {
		t.Errorf("waiting message logged %d times, want once", n)
	}
	if err := h.stop(); err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
}

// Cancel returns promptly even with a long poll interval, in every state,
// and leaves no goroutine behind.
func TestCancelPromptNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	existing := filepath.Join(dir, "audit.log")
	appendFile(t, existing, "a\n")
	for _, tc := range []struct {
		name string
		path string
	}{
		{"following", existing},
		{"waiting for file", filepath.Join(dir, "missing.log")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- Follow(ctx, tc.path, Options{PollInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)}, func([]byte) {})
			}()
			time.Sleep(20 * time.Millisecond)
			t0 := time.Now()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
				if d := time.Since(t0); d > 500*time.Millisecond {
					t.Errorf("Run took %v to return after cancel", d)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
	}
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}

// Permission denied is an error naming the path, not a wait. Root reads
// files whatever their mode, so as root (CI) the check runs in a copy of this
// test binary started as nobody (uid 65534).
func TestPermissionDenied(t *testing.T) {
	if path := os.Getenv("HERD_TAIL_PERMISSION_CHILD"); path != "" {
		checkPermissionDenied(t, path)
		return
	}
	dir, err := os.MkdirTemp("", "herd-tail-perm-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "audit.log")
	appendFile(t, path, "a\n")
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		checkPermissionDenied(t, path)
		return
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tail.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestPermissionDenied$", "-test.v")
	cmd.Env = append(os.Environ(), "HERD_TAIL_PERMISSION_CHILD="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestPermissionDenied") {
		t.Fatalf("as uid 65534: %v\n%s", err, out)
	}
}

func checkPermissionDenied(t *testing.T, path string) {
	err := Follow(context.Background(), path, Options{Logger: slog.New(slog.DiscardHandler)}, func([]byte) {})
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Follow = %v, want a permission error naming %s", err, path)
	}
}

func TestNotARegularFile(t *testing.T) {
	path := t.TempDir()
	err := Follow(context.Background(), path, Options{Logger: slog.New(slog.DiscardHandler)}, func([]byte) {})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Follow = %v, want a not-a-regular-file error naming %s", err, path)
	}
}

// Delivering lines allocates nothing per line.
func TestNoAllocationPerLine(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	var b strings.Builder
	const n = 100_000
	for i := range n {
		b.WriteString(line(0, i) + "\n")
	}
	appendFile(t, path, b.String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := New(path, Options{FromStart: true, PollInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	var ms0, ms1 runtime.MemStats
	got := 0
	runtime.ReadMemStats(&ms0)
	err := f.Run(ctx, func([]byte) {
		got++
		if got == n {
			runtime.ReadMemStats(&ms1)
			cancel()
		}
	})
	if err != nil || got != n {
		t.Fatalf("Run = %v after %d lines", err, got)
	}
	if allocs := ms1.Mallocs - ms0.Mallocs; allocs > 200 {
		t.Errorf("%d allocations for %d lines", allocs, n)
	}
}

func BenchmarkFollow(b *testing.B) {
	path := filepath.Join(b.TempDir(), "audit.log")
	var sb strings.Builder
	const n = 100_000
	for i := range n {
		sb.WriteString(strings.Repeat("x", 200) + line(0, i) + "\n")
	}
	appendFile(b, path, sb.String())
	b.SetBytes(int64(sb.Len()))
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		got := 0
		_ = Follow(ctx, path, Options{FromStart: true, PollInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)}, func([]byte) {
			if got++; got == n {
				cancel()
			}
		})
		cancel()
	}
}
