package audit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
)

// DefaultMaxLineBytes caps one audit log line, like DefaultMaxEventBytes caps
// one event: the apiserver's log backend writes one event per line.
const DefaultMaxLineBytes = DefaultMaxEventBytes

// readChunk is how much LineReader asks its reader for at a time beyond the
// longest line, so that reads stay large while lines are short.
const readChunk = 64 << 10

// LineError reports a line LineReader skipped (errors.Is ErrOversized) or an
// error reading the input, with the line it happened on.
type LineError struct {
	Line int64 // 1-based
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// LineReader splits an audit log into lines without ever holding more than
// one line (up to its maximum) in memory: an over-long line is read through
// and dropped, never buffered whole, so a corrupt or hostile log cannot make
// herd grow. Lines are returned without their "\n" (or "\r\n").
//
// Unlike bufio.Scanner it survives over-long lines (reporting them and going
// on) and can follow a growing file: with Follow set, a last line without a
// newline is kept back at EOF, because the writer may be half-way through it,
// and completed by a later Next once more data arrives.
type LineReader struct {
	// Follow keeps an unterminated last line back at EOF instead of
	// returning it; set it when tailing a file that is still being written.
	Follow bool

	r       io.Reader
	max     int
	buf     []byte
	start   int   // first unread byte in buf
	end     int   // end of valid data in buf
	scanned int   // buf[start:scanned] holds no '\n'
	discard bool  // dropping the rest of an over-long line
	line    int64 // number of the line last returned or reported
	off     int64 // input offset just past the last line returned or reported
	skipped int   // over-long lines dropped so far
}

// NewLineReader returns a LineReader over r for lines of at most maxLine
// bytes (not counting the newline); maxLine <= 0 means DefaultMaxLineBytes.
func NewLineReader(r io.Reader, maxLine int) *LineReader {
	if maxLine <= 0 {
		maxLine = DefaultMaxLineBytes
	}
	return &LineReader{r: r, max: maxLine}
}

// Reset makes lr read from r as if new, keeping its buffer; a follower calls
// it after the file was rotated or truncated. Line numbers and the offset
// start again from 0; the oversized count is kept.
func (lr *LineReader) Reset(r io.Reader) {
	lr.r = r
	lr.start, lr.end, lr.scanned = 0, 0, 0
	lr.discard = false
	lr.line, lr.off = 0, 0
}

// Line is the number of the line last returned by Next (or reported in its
// error), starting at 1.
func (lr *LineReader) Line() int64 { return lr.line }

// Offset is the input offset just past the last line returned or reported;
// a follower compares it with the file size to notice truncation.
func (lr *LineReader) Offset() int64 { return lr.off }

// Oversized is how many over-long lines have been dropped.
func (lr *LineReader) Oversized() int { return lr.skipped }

// Next returns the next line. The slice is valid until the next call. Errors:
//   - a *LineError wrapping ErrOversized for a line longer than the maximum;
//     it has been dropped, and reading can go on;
//   - io.EOF at the end of the input (with Follow, also when only an
//     unterminated line is left; call Next again once the file has grown);
//   - a *LineError wrapping the reader's error otherwise.
func (lr *LineReader) Next() ([]byte, error) {
	if lr.buf == nil {
		lr.buf = make([]byte, lr.max+1+readChunk)
	}
	empty := 0
	for {
		if nl := bytes.IndexByte(lr.buf[lr.scanned:lr.end], '\n'); nl >= 0 {
			nl += lr.scanned
			n := nl + 1 - lr.start
			lr.off += int64(n)
			lr.line++
			if lr.discard {
				lr.discard = false
				lr.skipped++
				lr.start, lr.scanned = nl+1, nl+1
				return nil, &LineError{Line: lr.line, Err: lr.oversized()}
			}
			line := lr.buf[lr.start:nl]
			lr.start, lr.scanned = nl+1, nl+1
			if len(line) > lr.max {
				// Possible when the line arrived with its newline in one read.
				lr.skipped++
				return nil, &LineError{Line: lr.line, Err: lr.oversized()}
			}
			return trimCR(line), nil
		}
		lr.scanned = lr.end
		if lr.end-lr.start > lr.max {
			// Too long: drop what we hold and read on to the newline.
			lr.off += int64(lr.end - lr.start)
			lr.discard = true
			lr.start, lr.end, lr.scanned = 0, 0, 0
		}
		if lr.start > 0 && lr.end == len(lr.buf) || lr.start == lr.end {
			// Move the partial line to the front to make room.
			copy(lr.buf, lr.buf[lr.start:lr.end])
			lr.end -= lr.start
			lr.scanned -= lr.start
			lr.start = 0
		}
		n, err := lr.r.Read(lr.buf[lr.end:])
		if n < 0 || n > len(lr.buf)-lr.end {
			return nil, &LineError{Line: lr.line + 1, Err: errors.New("reader returned an invalid count")}
		}
		lr.end += n
		if n > 0 {
			empty = 0
			continue
		}
		if err == nil {
			// io.Reader allows 0, nil and asks callers to retry, within reason.
			if empty++; empty >= maxEmptyReads {
				return nil, &LineError{Line: lr.line + 1, Err: io.ErrNoProgress}
			}
			continue
		}
		if err != io.EOF {
			return nil, &LineError{Line: lr.line + 1, Err: err}
		}
		if lr.Follow || lr.start == lr.end && !lr.discard {
			return nil, io.EOF
		}
		// The last line has no newline: it is a line all the same.
		lr.line++
		lr.off += int64(lr.end - lr.start)
		line := lr.buf[lr.start:lr.end]
		lr.start, lr.scanned = lr.end, lr.end
		if lr.discard {
			lr.discard = false
			lr.skipped++
			return nil, &LineError{Line: lr.line, Err: lr.oversized()}
		}
		return trimCR(line), nil
	}
}

// maxEmptyReads is how many (0, nil) reads in a row LineReader tolerates
// before it gives up with io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

func (lr *LineReader) oversized() error {
	return fmt.Errorf("longer than %d bytes, skipped: %w", lr.max, ErrOversized)
}

func trimCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}

// gzipMagic starts every gzip stream (RFC 1952).
var gzipMagic = []byte{0x1f, 0x8b}

// Open opens an audit log for reading: path "-" is standard input, and a gzip
// stream (logrotate's compressed rotations, or gzip piped in) is decompressed
// transparently, whatever the file is called, because it is recognised by its
// magic bytes rather than its name. Closing the result never closes stdin.
func Open(path string) (io.ReadCloser, error) {
	var (
		f    io.ReadCloser
		name = path
	)
	if path == "-" {
		f, name = io.NopCloser(os.Stdin), "standard input"
	} else {
		file, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("open audit log: %w", err)
		}
		f = file
	}
	br := bufio.NewReaderSize(f, readChunk)
	magic, err := br.Peek(len(gzipMagic))
	if err != nil && err != io.EOF {
		f.Close()
		return nil, fmt.Errorf("read audit log %s: %w", name, err)
	}
	size := fileSize(f)
	if !bytes.Equal(magic, gzipMagic) {
		return &logFile{r: br, c: f, name: name, size: size}, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read audit log %s: gzip: %w", name, err)
	}
	return &logFile{r: zr, c: f, z: zr, name: name, size: gzipSize(f, size)}, nil
}

// fileSize is a regular file's size, or -1 (stdin, a pipe).
func fileSize(f io.ReadCloser) int64 {
	file, ok := f.(*os.File)
	if !ok {
		return -1
	}
	st, err := file.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return -1
	}
	return st.Size()
}

// gzipSize reads a gzip file's ISIZE trailer (the last member's size mod
// 2^32): a hint only, -1 when it cannot be read.
func gzipSize(f io.ReadCloser, size int64) int64 {
	file, ok := f.(*os.File)
	if !ok || size < 18 {
		return -1
	}
	var b [4]byte
	if _, err := file.ReadAt(b[:], size-4); err != nil {
		return -1
	}
	return int64(b[0]) | int64(b[1])<<8 | int64(b[2])<<16 | int64(b[3])<<24
}

// logFile names the file in read errors, so "unexpected EOF" from a
// truncated .gz says which file.
type logFile struct {
	r    io.Reader
	c    io.Closer
	z    *gzip.Reader
	name string
	size int64 // decompressed size hint; -1 unknown
}

// SizeHint is how many bytes the log probably holds once decompressed: the
// file's size, or a gzip file's trailer; -1 when unknown. A reader of the
// whole log sizes its buffer by it instead of growing one (issue 16.9).
func (l *logFile) SizeHint() int64 { return l.size }

func (l *logFile) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read audit log %s: %w", l.name, err)
	}
	return n, err
}

func (l *logFile) Close() error {
	var zerr error
	if l.z != nil {
		zerr = l.z.Close()
	}
	if err := l.c.Close(); err != nil {
		return fmt.Errorf("close audit log %s: %w", l.name, err)
	}
	return zerr
}
