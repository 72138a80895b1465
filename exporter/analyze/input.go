package analyze

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/herd-k8s/herd/exporter/audit"
)

// Mode is how an input was read.
type Mode string

const (
	// ModeLines streams the input a line at a time, as the apiserver's log
	// backend writes it: one event (or one EventList, array or records
	// wrapper) per line. A bad line is counted and the next one read.
	ModeLines Mode = "lines"
	// ModeDocument reads the whole input and decodes it as one JSON value
	// (or a sequence of them): a pretty-printed EventList, Event or array, as
	// `kubectl get --raw`, jq or a saved webhook body produce. It stops at
	// the first syntax error, because after one the rest of a document
	// cannot be framed.
	ModeDocument Mode = "document"
)

var utf8BOM = []byte("\xef\xbb\xbf")

// DetectMode decides how to read an input from its first lines (prefix: up
// to two non-blank lines, or all of the input if shorter). JSON lines are
// the common case and the robust one, so it is the default; an input is read
// as a document only when it starts with '{' or '[' and its first line is not
// a complete JSON value — the value spans lines — unless the second line is a
// complete event, which means a JSON-lines file whose first line is broken.
// A first line longer than the whole prefix is read as a document too: a
// single-line EventList bigger than the line limit can still be decoded
// whole.
func DetectMode(prefix []byte) Mode {
	b := bytes.TrimPrefix(prefix, utf8BOM)
	l1, rest := nextNonBlankLine(b)
	if l1 == nil || (l1[0] != '{' && l1[0] != '[') || json.Valid(l1) {
		return ModeLines
	}
	if l2, _ := nextNonBlankLine(rest); l2 != nil && (l2[0] == '{' || l2[0] == '[') && json.Valid(l2) {
		return ModeLines
	}
	return ModeDocument
}

// nextNonBlankLine returns the first line of b with content, trimmed of
// surrounding whitespace, and what follows it; nil when there is none.
func nextNonBlankLine(b []byte) (line, rest []byte) {
	for len(b) > 0 {
		l := b
		if nl := bytes.IndexByte(b, '\n'); nl >= 0 {
			l, b = b[:nl], b[nl+1:]
		} else {
			b = nil
		}
		if t := bytes.TrimSpace(l); len(t) > 0 {
			return t, b
		}
	}
	return nil, nil
}

// readPrefix reads from br until it holds two non-blank complete lines, limit
// bytes, or the end of the input: enough for DetectMode. The error is the
// reader's (never io.EOF); what was read before it is returned.
func readPrefix(br *bufio.Reader, limit int) ([]byte, error) {
	var buf []byte
	lines, lineStart := 0, 0
	for len(buf) < limit {
		chunk, err := br.ReadSlice('\n')
		buf = append(buf, chunk...)
		if n := len(chunk); n > 0 && chunk[n-1] == '\n' {
			line := buf[lineStart:]
			if lineStart == 0 {
				line = bytes.TrimPrefix(line, utf8BOM) // as DetectMode reads it
			}
			if len(bytes.TrimSpace(line)) > 0 {
				lines++
			}
			lineStart = len(buf)
			if lines == 2 {
				return buf, nil
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case err == io.EOF:
			return buf, nil
		default:
			return buf, err
		}
	}
	return buf, nil
}

// errReader replays a read error that happened while sniffing, after the
// sniffed bytes, so it is reported at the line where it happened.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// read sniffs the input's form and reads it in that mode.
func (a *Analyzer) read(name string, r io.Reader, in *InputSummary, hint int64) error {
	lineCap := int(a.cfg.Ingest.MaxBodyBytes)
	br := bufio.NewReaderSize(r, 64<<10)
	prefix, err := readPrefix(br, lineCap)
	var rest io.Reader = br
	if err != nil {
		rest = errReader{err}
	}
	rest = io.MultiReader(bytes.NewReader(prefix), rest)
	in.Mode = DetectMode(prefix)
	if in.Mode == ModeDocument {
		return a.readDocument(name, rest, in, hint)
	}
	return a.readLines(name, rest, in, lineCap)
}

// readLines accounts an input line by line. Each line is decoded with
// DecodeBody rather than DecodeLine because a line may hold a whole batch (a
// saved webhook EventList, an Azure records wrapper) and DecodeBody counts
// every bad event in it, not only the first.
func (a *Analyzer) readLines(name string, r io.Reader, in *InputSummary, lineCap int) error {
	// One LineReader serves every input: its buffer is sized for the longest
	// line allowed (16 MiB by default), too much to allocate per file of a
	// hundred-file glob.
	lr := a.lr
	if lr == nil {
		lr = audit.NewLineReader(r, lineCap)
		a.lr = lr
	} else {
		lr.Reset(r)
	}
	defer func() { in.Lines = lr.Line() }()
	for {
		line, err := lr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if errors.Is(err, audit.ErrOversized) {
				a.counts.Oversized++
				a.problem(name, lr.Line(), fmt.Sprintf("line longer than %d bytes, skipped", lineCap))
				continue
			}
			var le *audit.LineError
			if errors.As(err, &le) {
				return fmt.Errorf("read error at line %d, rest of the input not read: %w", le.Line, le.Err)
			}
			return fmt.Errorf("read error, rest of the input not read: %w", err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		res, derr := a.dec.DecodeBody(line, a.event)
		a.countResult(res)
		if derr != nil {
			// Not JSON (often a line cut short when the log was copied
			// mid-write). Events before the error on this line, if any,
			// were delivered and stay counted.
			a.counts.Malformed++
			a.problem(name, lr.Line(), reasonOf(derr, true))
			continue
		}
		a.reportResult(name, lr.Line(), res, true)
	}
}

// readDocument accounts an input read whole. A document is held in memory to
// be decoded, so it is capped; JSON lines are not.
func (a *Analyzer) readDocument(name string, r io.Reader, in *InputSummary, hint int64) error {
	limit := a.opts.MaxDocumentBytes
	data, rerr := readBounded(r, limit+1, hint)
	if int64(len(data)) > limit {
		return fmt.Errorf("a JSON document larger than %d MiB is not read; convert it to JSON lines first (jq -c '.items[]' FILE)", limit>>20)
	}
	in.Lines = int64(bytes.Count(data, []byte{'\n'}))
	if len(data) > 0 && data[len(data)-1] != '\n' {
		in.Lines++
	}
	// Decode what was read even after a read error (a truncated .gz): the
	// events before the cut are good, and the decoder reports the cut.
	res, derr := a.dec.DecodeBody(data, a.event)
	a.countResult(res)
	if derr != nil {
		a.counts.Malformed++
		var be *audit.BodyError
		line := int64(0)
		if errors.As(derr, &be) {
			line = int64(be.Line)
		}
		a.problem(name, line, reasonOf(derr, false)+"; the rest of the document was not read")
	}
	a.reportResult(name, 0, res, false)
	if rerr != nil {
		return fmt.Errorf("read error after %d bytes, rest of the input not read: %w", len(data), rerr)
	}
	return nil
}

func (a *Analyzer) countResult(res audit.Result) {
	// An object that is neither an event nor a known envelope is counted
	// with the malformed: the report says which in its problem lines.
	a.counts.Malformed += res.Malformed + res.Unrecognized
	a.counts.Oversized += res.Oversized
	a.counts.NotAudit += res.Skipped
}

// reportResult prints the first bad event of a line or document. The
// decoder keeps only the first problem per call; the others are counted
// (and so included in "N more not shown").
func (a *Analyzer) reportResult(name string, line int64, res audit.Result, lineMode bool) {
	if res.Problem == nil {
		return
	}
	if !lineMode {
		var ee *audit.EventError
		var be *audit.BodyError
		switch {
		case errors.As(res.Problem, &ee):
			line = int64(ee.Line)
		case errors.As(res.Problem, &be):
			line = int64(be.Line)
		}
	}
	a.problem(name, line, reasonOf(res.Problem, lineMode))
	a.problems += max(0, res.Malformed+res.Oversized+res.Unrecognized-1)
}

// readBounded reads r to its end or to limit bytes. io.ReadAll grows its
// buffer by appending, holding old and new copies at once: a 256 MiB
// document peaked at 658 MB (issue 16.9). With a size hint (a file's size,
// a gzip trailer) the buffer is allocated once; without one the input is
// read in 8 MiB chunks and joined once, so the peak is about twice the
// document, never more.
func readBounded(r io.Reader, limit, hint int64) ([]byte, error) {
	if hint >= 0 && hint < limit {
		buf := make([]byte, 0, hint+1) // +1: EOF is seen without growing
		for {
			if len(buf) == cap(buf) {
				break // the hint was low: go on in chunks
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				return buf, nil
			}
			if err != nil {
				return buf, err
			}
		}
		rest, err := readBounded(r, limit-int64(len(buf)), -1)
		return append(buf, rest...), err
	}
	const chunk = 8 << 20
	var chunks [][]byte
	var total int64
	var rerr error
	for total < limit {
		c := make([]byte, min(chunk, limit-total))
		n, err := io.ReadFull(r, c)
		chunks = append(chunks, c[:n])
		total += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	if len(chunks) == 1 {
		return chunks[0], rerr
	}
	out := make([]byte, 0, total)
	for i, c := range chunks {
		out = append(out, c...)
		chunks[i] = nil
	}
	return out, rerr
}
