package ingest

import (
	"errors"

	"github.com/herd-k8s/herd/exporter/audit"
)

// LineSink accounts audit log lines, one at a time, for a file follower or
// `herd analyze`. It is not safe for concurrent use: keep one per file.
type LineSink struct {
	p   *Pipeline
	dec audit.Decoder
	b   batch
}

// NewLineSink returns a sink whose events count under source s.
func (p *Pipeline) NewLineSink(s Source, maxEventBytes int) *LineSink {
	return &LineSink{p: p, dec: audit.Decoder{MaxEventBytes: maxEventBytes}, b: batch{p: p, m: p.sources[s]}}
}

// Line accounts one line. A bad line is counted (malformed or oversized) and
// its error returned for the caller to log with the file and line number; it
// never stops the caller.
func (s *LineSink) Line(line []byte) error {
	s.b.now, s.b.accounted, s.b.dupes, s.b.invalid, s.b.newest = s.p.now(), 0, 0, 0, 0
	err := s.dec.DecodeLine(line, s.b.event)
	res := audit.Result{Bytes: int64(len(line)) + 1} // + the newline
	switch {
	case err == nil:
	case isOversized(err):
		res.Oversized = 1
	case errors.Is(err, audit.ErrUnrecognized):
		res.Unrecognized = 1
	default:
		res.Malformed = 1
	}
	s.b.finish(res) // adds events refused for invalid UTF-8 to malformed
	if err == nil && s.b.invalid > 0 {
		err = ErrInvalidUTF8
	}
	return err
}
