// Package tail follows a growing log file the way `tail -F` does, for the
// kube-apiserver audit log backend (--audit-log-path): one JSON event per
// line, rotated either by rename (lumberjack: audit.log is renamed to
// audit-<timestamp>.log and a new audit.log is created) or by copytruncate
// (logrotate copies the file, then truncates it in place).
//
// The follower polls rather than using inotify, so it behaves the same on
// every filesystem (overlayfs, NFS, hostPath mounts); an idle file costs a
// stat and a read per PollInterval. It reads in the caller's goroutine, in
// 64 KiB chunks into one reusable buffer, and hands lines to the callback
// without copying them.
//
// # Guarantees
//
// Every complete line is delivered exactly once, in file order, and all
// lines of an older file generation before any of a newer one, under these
// conditions; what each costs when it does not hold is said with it.
//
//   - Rename rotation, finding the new file: the path is checked at every
//     EOF and, while lines are being delivered, every PollInterval. A
//     generation that stays at the path for longer than PollInterval plus
//     the time the callback takes for one line (2× PollInterval is
//     comfortable) is found and opened. Once open it is held, so it is read
//     in full even if it is renamed again or deleted before the follower
//     gets to it; up to 16 generations can wait like this, and beyond that
//     newer ones may be missed (logged as an error). A generation created
//     and rotated away between two checks is never seen: its lines are lost.
//   - Rename rotation, leaving the old file: the follower moves on only once
//     the new file holds data, and only after reading the old file to an EOF
//     observed after that. So nothing is lost as long as the writer stops
//     writing the old file once it has written to the new one: lumberjack
//     (close, rename, create) does, and so does logrotate's "create" mode
//     with a reopen signal. Writes to the old file after that are lost. The
//     unterminated last line of an old file is delivered as it is when the
//     follower moves on, since nothing will ever complete it.
//   - Copytruncate: lines appended after the follower's last read and
//     before the truncation are only in the copy, so they are lost by the
//     nature of copytruncate; a partial line held at the truncation is
//     dropped (its end is in the copy). Everything written after the
//     truncation is read: every read also re-reads the 64 bytes before the
//     read offset and compares them with what was there, so a truncation
//     is noticed on the next read even when the file has grown past the old
//     offset again, and reading restarts at offset 0. (A rewrite that
//     reproduces those 64 bytes at the same offset would go unnoticed.) The
//     writer must open the file with O_APPEND; otherwise it goes on writing
//     at its old offset after the truncation, the file starts with a hole
//     of NUL bytes, and the first line after it is garbage, usually
//     skipped as oversized.
//   - Restarts: no offset is persisted. Following starts at the end of the
//     file by default, so lines written while herd was down are not read;
//     with FromStart they are, along with everything already read before,
//     which is then counted twice.
//   - The live file's unterminated last line is held until its newline
//     arrives (the writer may be mid-line). When following starts at the
//     end of a file whose last line is unterminated, the rest of that line
//     is skipped silently: its beginning was never read.
//   - A file deleted and not replaced stays open (its space is not freed)
//     until a new file appears at the path.
//
// Lines that are empty after CRLF trimming are skipped: an audit event is
// never empty, and delivering them would only cost the consumer a parse
// error. Lines longer than MaxLineBytes are skipped up to their newline
// without being buffered, counted in Stats.Oversized and logged with their
// line number and offset.
package tail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

const (
	// DefaultPollInterval is how often an idle file is checked for growth,
	// truncation and rotation.
	DefaultPollInterval = 250 * time.Millisecond
	// DefaultMaxLineBytes matches the audit event size limit of SPEC §3.1.
	DefaultMaxLineBytes = 256 << 10

	// readSize is the chunk read per syscall; the buffer is reused, so the
	// steady state allocates nothing.
	readSize = 64 << 10
	// fingerprintLen bytes before the read offset are read again with every
	// chunk and compared with what was there, to catch a copytruncate whose
	// new content has already grown past the old offset.
	fingerprintLen = 64
	// maxPending bounds the rotated generations held open while the
	// follower is still reading an older one.
	maxPending = 16
)

// Options configures a Follower. The zero value follows from the end of the
// file with the defaults above.
type Options struct {
	// FromStart reads the content already in the file when following
	// starts. By default following starts at the end of the file, so that a
	// restart does not count old events again. A file that does not exist
	// yet at start is always read from its beginning once it appears.
	FromStart bool
	// PollInterval is how often an idle file is checked; default 250ms.
	PollInterval time.Duration
	// MaxLineBytes is the longest line delivered (excluding the newline and
	// a CR before it); default 256 KiB. Memory use is about MaxLineBytes +
	// 64 KiB per follower, whatever the input.
	MaxLineBytes int
	// Logger receives rotation, truncation and oversized-line reports;
	// default slog.Default().
	Logger *slog.Logger

	// readSize overrides the read chunk size, for tests that want to cut
	// lines at every possible boundary.
	readSize int
	// onIdle, when set, is called instead of sleeping a PollInterval, so
	// that the fuzz test can write the next piece of the file at exactly
	// that point and stay deterministic.
	onIdle func()
}

// Stats are a Follower's counters since it was created.
type Stats struct {
	Lines       uint64 // lines delivered to fn
	Bytes       uint64 // bytes read and processed, including newlines and skipped bytes
	Oversized   uint64 // lines skipped because they exceeded MaxLineBytes
	Rotations   uint64 // switches to a new file generation (rename rotation)
	Truncations uint64 // restarts at offset 0 (copytruncate)
}

// Follower follows one path. Its Stats may be read at any time, for example
// at scrape time, while Run is going.
type Follower struct {
	path string
	opts Options

	lines, bytes, oversized, rotations, truncations atomic.Uint64
}

// New returns a Follower for path; nothing is opened until Run.
func New(path string, opts Options) *Follower {
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.MaxLineBytes <= 0 {
		opts.MaxLineBytes = DefaultMaxLineBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.readSize <= 0 {
		opts.readSize = readSize
	}
	return &Follower{path: path, opts: opts}
}

// Stats returns a snapshot of the counters.
func (f *Follower) Stats() Stats {
	return Stats{
		Lines:       f.lines.Load(),
		Bytes:       f.bytes.Load(),
		Oversized:   f.oversized.Load(),
		Rotations:   f.rotations.Load(),
		Truncations: f.truncations.Load(),
	}
}

// Follow follows path with a new Follower; see Follower.Run.
func Follow(ctx context.Context, path string, opts Options, fn func(line []byte)) error {
	return New(path, opts).Run(ctx, fn)
}

// Run calls fn for every complete, non-empty line (without its newline; a
// CR before the newline is trimmed) until ctx ends, and then returns nil.
// The slice passed to fn is only valid during the call: it points into the
// read buffer, which is how lines cost no allocation.
//
// A missing file is waited for (logged once), not an error. Run returns an
// error, naming the path, only when following cannot go on: the file or its
// directory is not readable (for example permission denied), the path is
// not a regular file, or a read fails.
func (f *Follower) Run(ctx context.Context, fn func(line []byte)) error {
	s := &state{
		Follower: f,
		ctx:      ctx,
		fn:       fn,
		log:      f.opts.Logger.With("path", f.path),
		max:      f.opts.MaxLineBytes,
		buf:      make([]byte, fingerprintLen+f.opts.MaxLineBytes+1+f.opts.readSize),
		timer:    time.NewTimer(time.Hour),
	}
	s.timer.Stop()
	s.checkTimer = time.AfterFunc(f.opts.PollInterval, func() { s.checkDue.Store(true) })
	defer s.close()
	err := s.run()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// generation is one file that has been at the followed path.
type generation struct {
	f  *os.File
	fi os.FileInfo
}

// state is one Run's reading state. Offsets are file offsets; buf holds the
// unterminated line so far in buf[lineStart:end], and off is the file
// offset of buf[end]. buf starts with fingerprintLen spare bytes, where the
// fingerprint is read again when no buffered line covers it.
type state struct {
	*Follower
	ctx context.Context
	fn  func([]byte)
	log *slog.Logger
	max int

	cur       generation
	pending   []generation // newer generations, oldest first
	nextReady bool         // pending[0] was seen with data: leave cur at its next EOF
	queueFull bool         // the pending-limit error was logged

	buf            []byte
	lineStart, end int
	off            int64

	startOff int64 // where reading of cur began; line numbers count from here
	lineNo   int64 // newlines seen since startOff

	// Skipping the rest of a line: an oversized one (report set) or the
	// tail of the line under way when following started at the end.
	skipping  bool
	report    bool
	skipOff   int64
	skipLine  int64
	skipBytes int64

	fp  [fingerprintLen]byte // the bytes just before off, as last read
	fpN int                  // min(off, fingerprintLen) once reading has begun

	// While the follower is busy delivering lines it still looks for new
	// generations every PollInterval, so a slow consumer does not miss a
	// short-lived one: checkTimer sets checkDue, tested after every line
	// (an atomic load, cheaper than reading the clock).
	checkDue   atomic.Bool
	checkTimer *time.Timer
	timer      *time.Timer // for sleeping
}

var errStopped = errors.New("stopped")

func (s *state) run() error {
	if err := s.openFirst(); err != nil {
		return err
	}
	for {
		if s.ctx.Err() != nil {
			return nil
		}
		n, eof, err := s.read()
		if err != nil {
			return err
		}
		if n > 0 {
			if err := s.consume(n); err != nil {
				return err
			}
			continue // the EOF (if any) must be seen by a read after consume's checks
		}
		if !eof {
			continue // truncated: read again from the start
		}
		// At EOF. Every pending generation was found before this read, so
		// this EOF is final for cur once the next one has data.
		if s.nextReady {
			s.rotate()
			continue
		}
		st, err := s.discover()
		if err != nil {
			return err
		}
		if len(s.pending) > 0 {
			ready, err := s.pendingHasData()
			if err != nil {
				return err
			}
			if ready {
				// Read cur once more: the writer may have written to it
				// between our EOF and its switch to the new file.
				s.nextReady = true
				continue
			}
		}
		grew, err := s.checkCur(st)
		if err != nil {
			return err
		}
		if grew {
			continue
		}
		if !s.sleep() {
			return nil
		}
	}
}

// openFirst opens the path, waiting for it to appear, and positions the
// read offset according to Options.FromStart.
func (s *state) openFirst() error {
	s.reset(0)
	waited := false
	for {
		f, err := os.Open(s.path)
		if err == nil {
			fi, err := s.checkRegular(f)
			if err != nil {
				return err
			}
			s.cur = generation{f: f, fi: fi}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("following audit log: %w", err)
		}
		if !waited {
			s.log.Info("audit log file does not exist yet; waiting for it to appear")
			waited = true
		}
		if !s.sleep() {
			return errStopped
		}
	}
	if waited || s.opts.FromStart || s.cur.fi.Size() == 0 {
		s.log.Info("following audit log", "offset", 0)
		return nil
	}
	size := s.cur.fi.Size()
	s.reset(size)
	// Fingerprint the end, and if the last line is unterminated (the
	// writer is mid-line), skip its rest: it is not a whole line.
	n := int64(min(fingerprintLen, size))
	m, err := s.cur.f.ReadAt(s.fp[:n], size-n)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading %s at offset %d: %w", s.path, size-n, err)
	}
	s.fpN = m
	if int64(m) == n && s.fp[m-1] != '\n' {
		s.skipping, s.report, s.skipOff = true, false, size
	}
	s.log.Info("following audit log", "offset", size)
	return nil
}

func (s *state) checkRegular(f *os.File) (os.FileInfo, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("following audit log: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("following audit log %s: not a regular file (%s)", s.path, fi.Mode().Type())
	}
	return fi, nil
}

// read reads the next chunk into buf[end:], after the unterminated line
// kept in buf, and returns its length. It reads the fingerprint bytes before
// off in the same call, just before the chunk; if they are gone or changed,
// the file was truncated: read resets to offset 0 and returns 0, false.
func (s *state) read() (n int, eof bool, err error) {
	if s.lineStart > fingerprintLen {
		s.end = fingerprintLen + copy(s.buf[fingerprintLen:], s.buf[s.lineStart:s.end])
		s.lineStart = fingerprintLen
	}
	// end <= fingerprintLen+max+1 here (a longer line switches to
	// skipping), so the buffer always has room for a full chunk, and
	// lo >= 0 thanks to the spare bytes at its start.
	lo := s.end - s.fpN
	m, err := s.cur.f.ReadAt(s.buf[lo:s.end+s.opts.readSize], s.off-int64(s.fpN))
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, false, fmt.Errorf("reading %s at offset %d: %w", s.path, s.off-int64(s.fpN), err)
	}
	if m < s.fpN || !bytes.Equal(s.buf[lo:lo+s.fpN], s.fp[:s.fpN]) {
		s.truncated(m < s.fpN)
		return 0, false, nil
	}
	k := min(m, fingerprintLen)
	s.fpN = copy(s.fp[:], s.buf[lo+m-k:lo+m])
	return m - (s.end - lo), err != nil, nil
}

// consume delivers the lines completed by the n bytes just read into
// buf[end:end+n].
func (s *state) consume(n int) error {
	i := s.end
	s.end += n
	s.off += int64(n)
	defer s.bytes.Add(uint64(n))

	if s.skipping {
		j := bytes.IndexByte(s.buf[i:s.end], '\n')
		if j < 0 {
			s.skipBytes += int64(n)
			s.end, s.lineStart = fingerprintLen, fingerprintLen
			return nil
		}
		s.skipBytes += int64(j)
		s.lineNo++
		s.endSkip("")
		i += j + 1
		s.lineStart = i
	}
	for {
		j := bytes.IndexByte(s.buf[i:s.end], '\n')
		if j < 0 {
			break
		}
		p := i + j
		s.lineNo++
		s.emit(s.buf[s.lineStart:p], s.lineNo, s.offsetOf(s.lineStart))
		i = p + 1
		s.lineStart = i
		if s.checkDue.Load() {
			if _, err := s.discover(); err != nil {
				return err
			}
		}
	}
	if s.end-s.lineStart > s.max+1 {
		// Longer than any deliverable line even with a CR: stop buffering.
		s.skipping, s.report = true, true
		s.skipOff, s.skipLine = s.offsetOf(s.lineStart), s.lineNo+1
		s.skipBytes = int64(s.end - s.lineStart)
		s.end, s.lineStart = fingerprintLen, fingerprintLen
	}
	if s.checkDue.Load() {
		_, err := s.discover()
		return err
	}
	return nil
}

func (s *state) offsetOf(i int) int64 { return s.off - int64(s.end-i) }

// emit delivers one line, or skips it when empty or oversized.
func (s *state) emit(line []byte, lineNo, off int64) {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	switch {
	case len(line) == 0:
	case len(line) > s.max:
		s.reportOversized(lineNo, off, int64(len(line)), "")
	default:
		s.fn(line)
		s.lines.Add(1)
	}
}

// endSkip finishes skipping a line; why is empty when its newline was
// found, else says why the line ends without one.
func (s *state) endSkip(why string) {
	if s.report {
		s.reportOversized(s.skipLine, s.skipOff, s.skipBytes, why)
	}
	s.skipping, s.report, s.skipBytes = false, false, 0
}

func (s *state) reportOversized(lineNo, off, n int64, why string) {
	s.oversized.Add(1)
	attrs := []any{"line", lineNo, "offset", off, "bytes", n, "max_bytes", s.max}
	if s.startOff > 0 {
		// Started mid-file: lines are counted from there, offsets are exact.
		attrs = append(attrs, "lines_counted_from_offset", s.startOff)
	}
	if why != "" {
		attrs = append(attrs, "unterminated", why)
	}
	s.log.Warn("audit log line too long; skipped", attrs...)
}

// discover stats the path and, when a file not seen before is there, opens
// it and queues it behind cur: holding it open is what keeps a generation
// readable after it is rotated away. It returns the path's FileInfo when
// the path is cur, for checkCur.
func (s *state) discover() (os.FileInfo, error) {
	s.checkDue.Store(false)
	s.checkTimer.Reset(s.opts.PollInterval)
	st, err := os.Stat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // renamed away, new file not created yet
	}
	if err != nil {
		return nil, fmt.Errorf("following audit log: %w", err)
	}
	if os.SameFile(st, s.cur.fi) {
		return st, nil
	}
	if s.known(st) {
		return nil, nil
	}
	if len(s.pending) >= maxPending {
		if !s.queueFull {
			s.log.Error("audit log rotates faster than it is read; newer files may be missed",
				"pending_files", len(s.pending))
			s.queueFull = true
		}
		return nil, nil
	}
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // rotated away again already; the next one is found later
	}
	if err != nil {
		return nil, fmt.Errorf("following audit log: %w", err)
	}
	fi, err := s.checkRegular(f)
	if err != nil {
		return nil, err
	}
	if os.SameFile(fi, s.cur.fi) || s.known(fi) {
		f.Close()
		return nil, nil
	}
	s.pending = append(s.pending, generation{f: f, fi: fi})
	s.log.Debug("audit log rotated; finishing the old file first", "pending_files", len(s.pending))
	return nil, nil
}

func (s *state) known(fi os.FileInfo) bool {
	for _, g := range s.pending {
		if os.SameFile(fi, g.fi) {
			return true
		}
	}
	return false
}

// pendingHasData reports whether the writer has started on the next
// generation, which is when cur can be finished.
func (s *state) pendingHasData() (bool, error) {
	if len(s.pending) > 1 {
		return true, nil
	}
	fi, err := s.pending[0].f.Stat()
	if err != nil {
		return false, fmt.Errorf("following audit log: %w", err)
	}
	return fi.Size() > 0, nil
}

// rotate finishes cur and moves to the oldest pending generation.
func (s *state) rotate() {
	if s.skipping {
		s.endSkip("file rotated")
	} else if s.end > s.lineStart {
		// Nothing will complete this line: deliver what there is.
		s.log.Warn("rotated audit log ended without a newline; delivering its last line",
			"bytes", s.end-s.lineStart)
		s.emit(s.buf[s.lineStart:s.end], s.lineNo+1, s.offsetOf(s.lineStart))
	}
	s.cur.f.Close()
	s.cur = s.pending[0]
	s.pending = append(s.pending[:0], s.pending[1:]...)
	s.nextReady, s.queueFull = false, false
	s.reset(0)
	s.rotations.Add(1)
	s.log.Info("audit log rotated; following the new file")
}

// checkCur reports at EOF whether there is something to read in cur: it
// has grown, or it is shorter than the read offset (truncated: start again
// at 0). A truncated file that has already grown past the offset again is
// caught by the fingerprint in read.
func (s *state) checkCur(st os.FileInfo) (bool, error) {
	if st == nil {
		var err error
		if st, err = s.cur.f.Stat(); err != nil {
			return false, fmt.Errorf("following audit log: %w", err)
		}
	}
	if st.Size() < s.off {
		s.truncated(true)
		return true, nil
	}
	return st.Size() > s.off, nil
}

// truncated starts cur again at offset 0 after a copytruncate; shrunk
// says whether the file was shorter than the offset or had been rewritten.
func (s *state) truncated(shrunk bool) {
	attrs := []any{"offset", s.off, "shrunk", shrunk}
	if s.skipping {
		s.endSkip("file truncated")
	} else if s.end > s.lineStart {
		attrs = append(attrs, "dropped_partial_line_bytes", s.end-s.lineStart)
	}
	s.truncations.Add(1)
	s.log.Warn("audit log truncated (copytruncate); reading again from its start", attrs...)
	s.reset(0)
}

// reset positions reading of cur at off with nothing buffered.
func (s *state) reset(off int64) {
	s.lineStart, s.end, s.off = fingerprintLen, fingerprintLen, off
	s.startOff, s.lineNo = off, 0
	s.skipping, s.report, s.skipBytes = false, false, 0
	s.fpN = 0
}

// sleep waits one PollInterval; false means ctx ended.
func (s *state) sleep() bool {
	if s.opts.onIdle != nil {
		s.opts.onIdle()
		return s.ctx.Err() == nil
	}
	s.timer.Reset(s.opts.PollInterval)
	select {
	case <-s.ctx.Done():
		return false
	case <-s.timer.C:
		return true
	}
}

func (s *state) close() {
	s.timer.Stop()
	s.checkTimer.Stop()
	if s.cur.f != nil {
		s.cur.f.Close()
	}
	for _, g := range s.pending {
		g.f.Close()
	}
}
