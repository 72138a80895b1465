package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/internal/webauth"
)

// Limits of the audit endpoint (SPEC §3.1).
const (
	DefaultMaxBodyBytes = 16 << 20
	DefaultMaxInFlight  = 8
)

// HandlerOptions configure the /audit endpoint.
type HandlerOptions struct {
	// Tokens, if set, requires a bearer token. mTLS is enforced by the
	// listener (exporter-toolkit web config), before the handler.
	Tokens *webauth.TokenFile
	// MaxBodyBytes caps a request body (413 above it).
	MaxBodyBytes int64
	// MaxEventBytes caps one event (counted oversized above it).
	MaxEventBytes int
	// MaxInFlight bounds concurrent decodes; past it, requests wait up to
	// QueueWait for a slot and then get 503, which the apiserver retries.
	// Bodies are read before a slot is taken, so a slow sender holds memory
	// (see MaxBufferedBytes), never a decode slot.
	MaxInFlight int
	// MaxBufferedBytes caps the body bytes held at once, by requests still
	// reading their bodies and by those waiting for or holding a decode slot;
	// a request reserves its Content-Length (or, sent chunked, what it has
	// read so far, in growing steps) and waits up to QueueWait for room, then
	// gets 503. 0 means MaxInFlight largest bodies: the same bound on body
	// memory as when bodies were read inside the decode slots.
	MaxBufferedBytes int64
	// QueueWait is the longest a request waits, in all, for buffer room and
	// a decode slot.
	QueueWait time.Duration
	// MinBodyRate is the slowest a sender may send its body, in bytes per
	// second: the connection's read deadline is BodyGrace plus the declared
	// (or, sent chunked, the largest allowed) size at this rate, so a
	// sender trickling a byte a second is cut off instead of holding the
	// connection for the server's whole ReadTimeout. 0 means 1 MiB/s.
	MinBodyRate int64
	// BodyGrace is the fixed part of that deadline; 0 means 10s.
	BodyGrace time.Duration
	Logger    *slog.Logger
}

// Handler serves POST /audit.
type Handler struct {
	p        *Pipeline
	opts     HandlerOptions
	slots    chan struct{}
	mem      *budget
	decoders sync.Pool
	bufs     sync.Pool // *[]byte
	warn     *logLimiter
}

// NewHandler returns the /audit handler.
func NewHandler(p *Pipeline, opts HandlerOptions) *Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	// A body reserves one byte more than its length, the byte that would
	// tell it from a longer one.
	if opts.MaxBufferedBytes <= 0 {
		opts.MaxBufferedBytes = int64(opts.MaxInFlight) * (opts.MaxBodyBytes + 1)
	}
	opts.MaxBufferedBytes = max(opts.MaxBufferedBytes, opts.MaxBodyBytes+1) // one largest body always fits
	if opts.QueueWait <= 0 {
		opts.QueueWait = time.Second
	}
	if opts.MinBodyRate <= 0 {
		opts.MinBodyRate = 1 << 20
	}
	if opts.BodyGrace <= 0 {
		opts.BodyGrace = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{p: p, opts: opts, slots: make(chan struct{}, opts.MaxInFlight), mem: newBudget(opts.MaxBufferedBytes)}
	h.decoders.New = func() any {
		return &audit.Decoder{MaxEventBytes: opts.MaxEventBytes, MaxInflatedBytes: opts.MaxBodyBytes}
	}
	h.warn = newLogLimiter(time.Minute)
	h.bufs.New = func() any { return new([]byte) }
	return h
}

// AuditPath is the one path the audit listener serves.
const AuditPath = "/audit"

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	src := SourceWebhook
	fh := firehoseRequest(r)
	switch {
	case fh != nil:
		src = SourceFirehose
	case isNDJSON(r.Header.Get("Content-Type")):
		src = SourceNDJSON
	}
	code, msg := h.serve(w, r, src, fh)
	h.p.metrics.requests.WithLabelValues(string(src), strconv.Itoa(code)).Inc()
	switch code {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="herd audit"`)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", http.MethodPost)
	}
	if code >= 500 || code == http.StatusRequestEntityTooLarge {
		h.opts.Logger.Warn("audit request refused", "code", code, "source", src, "remote", r.RemoteAddr, "reason", msg)
	}
	if fh != nil {
		// Firehose's HTTP endpoint protocol: every answer is JSON naming
		// its request ID (docs/exporter.md, "Kinesis Data Firehose").
		fh.reply(w, code, msg)
		return
	}
	if code == http.StatusOK {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, msg)
		return
	}
	http.Error(w, msg, code)
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, src Source, fh *firehose) (int, string) {
	if r.URL.Path != AuditPath {
		return http.StatusNotFound, "not found: the audit listener serves POST " + AuditPath
	}
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "use POST"
	}
	if h.opts.Tokens != nil && !h.opts.Tokens.Allow(r) && (fh == nil || !h.opts.Tokens.AllowKey(fh.accessKey)) {
		if fh != nil {
			return http.StatusUnauthorized, "missing or wrong X-Amz-Firehose-Access-Key"
		}
		return http.StatusUnauthorized, "missing or wrong bearer token"
	}
	if r.ContentLength > h.opts.MaxBodyBytes {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds the %d-byte limit", r.ContentLength, h.opts.MaxBodyBytes)
	}
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity", "gzip", "x-gzip":
		// gzip is recognised by its magic bytes, with or without the header.
	default:
		return http.StatusBadRequest, "Content-Encoding " + strconv.Quote(enc) + " is not supported (use gzip or none)"
	}
	// A slow sender gets as long as its body needs at MinBodyRate, not the
	// server's whole ReadTimeout (issue 16.8).
	size := r.ContentLength
	if size < 0 {
		size = h.opts.MaxBodyBytes
	}
	setReadDeadline(w, time.Now().Add(h.opts.BodyGrace+time.Duration(size*int64(time.Second)/h.opts.MinBodyRate)))
	q := queue{ctx: r.Context(), wait: h.opts.QueueWait}
	defer q.stop()

	// Read the whole body first: a slow sender must not hold a decode slot
	// while its bytes trickle in, or a few of them would turn every other
	// sender away with 503 while the CPU idles.
	bp := h.bufs.Get().(*[]byte)
	defer h.putBuf(bp)
	held, code, msg := h.readBody(r, bp, &q)
	defer h.mem.release(held)
	if code != 0 {
		return code, msg
	}

	select {
	case h.slots <- struct{}{}:
	default:
		select {
		case h.slots <- struct{}{}:
		case <-q.expired():
			return http.StatusServiceUnavailable, "overloaded: too many audit batches in flight"
		case <-q.ctx.Done():
			return http.StatusServiceUnavailable, "client went away while queued"
		}
	}
	defer func() { <-h.slots }()

	d := h.decoders.Get().(*audit.Decoder)
	defer h.decoders.Put(d)
	c, err := h.p.AccountBody(d, src, *bp)
	if c.Unrecognized > 0 && h.warn.allow() {
		h.opts.Logger.Warn("audit envelope not recognised", "source", src, "remote", r.RemoteAddr, "unrecognized", c.Unrecognized, "first", c.Problem)
	}
	switch {
	case err != nil && errors.Is(err, audit.ErrInflateLimit):
		return http.StatusRequestEntityTooLarge, err.Error()
	case err != nil:
		return http.StatusBadRequest, fmt.Sprintf("%v (accounted %d events before it)", err, c.Accounted)
	case c.Accounted+c.Duplicate+c.Skipped == 0 && c.Problem != nil:
		// Nothing in the body was an audit event: never 200, or a
		// misconfigured sender would never know (SPEC §3.1).
		if c.Malformed+c.Unrecognized == 0 {
			return http.StatusRequestEntityTooLarge, "no audit event accounted: " + c.Problem.Error()
		}
		return http.StatusBadRequest, "no audit event accounted: " + c.Problem.Error()
	case c.Accounted+c.Duplicate+c.Skipped == 0:
		return http.StatusBadRequest, "no audit event in the body"
	}
	if c.Problem != nil {
		h.opts.Logger.Debug("audit events skipped", "source", src, "malformed", c.Malformed, "oversized", c.Oversized, "first", c.Problem)
	}
	return http.StatusOK, fmt.Sprintf(`{"accounted":%d,"duplicate":%d,"malformed":%d,"oversized":%d,"unrecognized":%d,"skipped":%d}`+"\n",
		c.Accounted, c.Duplicate, c.Malformed, c.Oversized, c.Unrecognized, c.Skipped)
}

// readBody reads r's body into *bp, reserving buffer room as it goes: the
// Content-Length (plus the byte that would show the body is longer) at once
// when it is known, else 64 KiB and then twice what it holds each time it
// fills up. held is what it reserved, to release once the body is done with,
// also when code is not 0.
func (h *Handler) readBody(r *http.Request, bp *[]byte, q *queue) (held int64, code int, msg string) {
	limit := h.opts.MaxBodyBytes + 1
	// Reserve what the body has sent, not what it declares: a sender that
	// declares 16 MiB and trickles holds 64 KiB (or the pooled buffer's
	// room) of the budget, not 16 MiB (issue 16.8).
	first := max(int64(64<<10), int64(cap(*bp)))
	if r.ContentLength >= 0 {
		first = min(first, r.ContentLength+1)
	}
	b := (*bp)[:0]
	defer func() { *bp = b }()
	for {
		if int64(len(b)) == held {
			n := min(max(first, held), limit-held)
			if r.ContentLength >= 0 && held > 0 {
				n = min(n, r.ContentLength+1-held) // never more than the declared size
				if n <= 0 {
					n = 1
				}
			}
			if n <= 0 { // cannot happen: a body past the limit returned below
				return held, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds the %d-byte limit", h.opts.MaxBodyBytes)
			}
			if !h.mem.acquire(n, q) {
				if q.ctx.Err() != nil {
					return held, http.StatusServiceUnavailable, "client went away while queued"
				}
				return held, http.StatusServiceUnavailable, "overloaded: too many audit bytes buffered"
			}
			held += n
			if int64(cap(b)) < held {
				// Round up so that the pooled buffers fit the next batches.
				nb := make([]byte, len(b), (held+bufRound-1)/bufRound*bufRound)
				copy(nb, b)
				b = nb
			}
		}
		m, err := r.Body.Read(b[len(b):held])
		b = b[:len(b)+m]
		if int64(len(b)) > h.opts.MaxBodyBytes {
			return held, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds the %d-byte limit", h.opts.MaxBodyBytes)
		}
		if err == io.EOF {
			return held, 0, ""
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return held, http.StatusRequestTimeout, fmt.Sprintf("read audit body: slower than %d bytes/s: %v", h.opts.MinBodyRate, err)
			}
			return held, http.StatusBadRequest, fmt.Sprintf("read audit body: %v", err)
		}
	}
}

const bufRound = 64 << 10

// putBuf returns a body buffer to the pool unless it grew past the usual
// batch size, so one 16 MiB body does not pin 16 MiB forever.
func (h *Handler) putBuf(bp *[]byte) {
	if cap(*bp) <= 1<<20 {
		*bp = (*bp)[:0]
		h.bufs.Put(bp)
	}
}

// queue is one request's allowance for waiting (QueueWait in all, across
// buffer room and a decode slot). Its timer starts at the first wait, so a
// request that never waits makes none.
type queue struct {
	ctx   context.Context
	wait  time.Duration
	timer *time.Timer
}

func (q *queue) expired() <-chan time.Time {
	if q.timer == nil {
		q.timer = time.NewTimer(q.wait)
	}
	return q.timer.C
}

func (q *queue) stop() {
	if q.timer != nil {
		q.timer.Stop()
	}
}

// budget is a counting semaphore of bytes.
type budget struct {
	mu      sync.Mutex
	free    int64
	waiting bool          // someone failed to acquire since the last wake-up
	wake    chan struct{} // closed (and replaced) by a release while waiting
}

func newBudget(n int64) *budget { return &budget{free: n, wake: make(chan struct{})} }

// acquire takes n bytes, waiting as q allows; false when q ran out first.
func (b *budget) acquire(n int64, q *queue) bool {
	for {
		b.mu.Lock()
		if b.free >= n {
			b.free -= n
			b.mu.Unlock()
			return true
		}
		b.waiting = true
		wake := b.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-q.expired():
			return false
		case <-q.ctx.Done():
			return false
		}
	}
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.free += n
	if b.waiting {
		close(b.wake)
		b.wake = make(chan struct{})
		b.waiting = false
	}
	b.mu.Unlock()
}

func isNDJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	switch mt {
	case "application/x-ndjson", "application/jsonl", "application/jsonlines", "application/x-jsonlines":
		return true
	}
	return false
}

func isOversized(err error) bool { return errors.Is(err, audit.ErrOversized) }

// setReadDeadline is http.ResponseController's SetReadDeadline without its
// allocation per request: net/http's response has the method, and wrappers
// expose what they wrap with Unwrap. Writers without it (tests) are left be.
func setReadDeadline(w http.ResponseWriter, t time.Time) {
	for {
		switch x := w.(type) {
		case interface{ SetReadDeadline(time.Time) error }:
			_ = x.SetReadDeadline(t)
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return
		}
	}
}

// logLimiter lets one warning through per interval, so a misconfigured
// shipper sending thousands of unrecognised bodies a minute logs once.
type logLimiter struct {
	every time.Duration
	mu    sync.Mutex
	last  time.Time
}

func newLogLimiter(every time.Duration) *logLimiter { return &logLimiter{every: every} }

func (l *logLimiter) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.last) < l.every {
		return false
	}
	l.last = now
	return true
}
