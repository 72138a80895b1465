// Package drill holds the pieces of herd's storm drill (incident 002, SPEC
// §8.1) that the drill (test/drill/storm) and the demo (test/demo) share:
// heavy pods, storming clients that discard what they read, a scheduler that
// keeps reading while they storm, and latency summaries.
//
// Clients own their transports (one TLS connection each, like separate
// agents on separate nodes) and never keep a response body: 100 clients
// reading 21.7 MB lists would otherwise spend the cores the apiserver is
// being measured on.
package drill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/test/nodesim"
)

// Client sends raw GETs as one identity and counts the bytes it read.
type Client struct {
	host      string
	transport *http.Transport
	http      *http.Client
	sourceIP  string
}

// NewClient is a client for cfg's identity with its own connection pool.
// sourceIP, when set, is sent as X-Forwarded-For: the apiserver records it
// as the request's source IP, which is how herd attributes a host-network
// agent (kube-proxy, a CNI agent) to its node.
func NewClient(cfg *rest.Config, userAgent, sourceIP string, timeout time.Duration) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = userAgent
	host, t, rt, err := nodesim.Transport(cfg)
	if err != nil {
		return nil, fmt.Errorf("new client: %w", err)
	}
	return &Client{host: host, transport: t, http: &http.Client{Transport: rt, Timeout: timeout}, sourceIP: sourceIP}, nil
}

// Close drops the client's idle connections.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

// Outcome is what one request got.
type Outcome struct {
	Start time.Time
	Took  time.Duration
	// Code is the HTTP status; 0 when no response arrived (Err says why).
	Code  int
	Bytes int64
	Err   error
}

// OK reports a 2xx answer read to the end.
func (o Outcome) OK() bool { return o.Err == nil && o.Code >= 200 && o.Code < 300 }

// Get sends one GET of uri (path and query) and reads the answer to the end.
func (c *Client) Get(ctx context.Context, uri string) Outcome {
	o := Outcome{Start: time.Now()}
	req, err := c.request(ctx, uri)
	if err != nil {
		o.Err = err
		return o
	}
	resp, err := c.http.Do(req)
	if err != nil {
		o.Took, o.Err = time.Since(o.Start), err
		return o
	}
	o.Code = resp.StatusCode
	o.Bytes, o.Err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	o.Took = time.Since(o.Start)
	return o
}

// Recorder keeps every outcome of a set of clients.
type Recorder struct {
	mu       sync.Mutex
	outcomes []Outcome
}

// Add records an outcome. A request cut short because its loop was
// stopped is neither served nor failed, and is dropped.
func (r *Recorder) Add(o Outcome) {
	if o.Err != nil && errors.Is(o.Err, context.Canceled) {
		return
	}
	r.mu.Lock()
	r.outcomes = append(r.outcomes, o)
	r.mu.Unlock()
}

// Outcomes returns a copy of what was recorded, in completion order.
func (r *Recorder) Outcomes() []Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.outcomes)
}

// ClosedLoop runs one goroutine per client, each sending uri(i) again as
// soon as the previous answer is read (and after pause, if any), until ctx
// ends: a relist loop that never backs off, as `ab -c N` does. It returns
// when every goroutine has stopped.
func ClosedLoop(ctx context.Context, clients []*Client, uri func(i int) string, pause time.Duration, rec *Recorder) {
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			u := uri(i)
			for ctx.Err() == nil {
				o := c.Get(ctx, u)
				if ctx.Err() != nil {
					return // cut short by the stop: neither served nor failed
				}
				rec.Add(o)
				if o.Code == 0 && ctx.Err() == nil {
					// No answer (a dead apiserver): do not spin.
					sleep(ctx, 250*time.Millisecond)
				}
				if pause > 0 {
					sleep(ctx, pause)
				}
			}
		})
	}
	wg.Wait()
}

// OpenLoop sends uri every interval whether or not earlier requests have
// answered (at most maxInFlight at once; a tick with that many pending is
// recorded as a failure), so a slow apiserver cannot hide its latency by
// slowing the sender down. It returns when ctx ends and every request has.
func OpenLoop(ctx context.Context, c *Client, uri string, interval time.Duration, maxInFlight int, rec *Recorder) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxInFlight)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case sem <- struct{}{}:
			wg.Go(func() {
				defer func() { <-sem }()
				rec.Add(c.Get(ctx, uri))
			})
		default:
			rec.Add(Outcome{Start: time.Now(), Err: fmt.Errorf("%d requests still in flight", maxInFlight)})
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Summary describes the requests that started in a window.
type Summary struct {
	Requests int
	OK       int
	// Failed counts non-2xx answers and requests that got no answer.
	Failed   int
	Codes    map[int]int
	P50, P99 time.Duration
	Max      time.Duration
	Bytes    int64
}

// Summarize looks at outcomes that started in [from, to) (zero: unbounded).
// Percentiles are over every request, failures included: a timeout is a
// latency too.
func Summarize(outcomes []Outcome, from, to time.Time) Summary {
	s := Summary{Codes: map[int]int{}}
	var took []time.Duration
	for _, o := range outcomes {
		if (!from.IsZero() && o.Start.Before(from)) || (!to.IsZero() && !o.Start.Before(to)) {
			continue
		}
		s.Requests++
		s.Codes[o.Code]++
		s.Bytes += o.Bytes
		if o.OK() {
			s.OK++
		} else {
			s.Failed++
		}
		took = append(took, o.Took)
	}
	if len(took) > 0 {
		slices.Sort(took)
		s.P50 = quantile(took, 0.50)
		s.P99 = quantile(took, 0.99)
		s.Max = took[len(took)-1]
	}
	return s
}

// Completed counts the 2xx answers that completed in [from, to): a rate as
// the client sees it, for requests that take longer than the window.
func Completed(outcomes []Outcome, from, to time.Time) int {
	n := 0
	for _, o := range outcomes {
		if end := o.Start.Add(o.Took); o.OK() && !end.Before(from) && end.Before(to) {
			n++
		}
	}
	return n
}

// quantile of sorted durations, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// CodeList formats status codes and counts, e.g. "200×1019 429×12 none×3".
func (s Summary) CodeList() string {
	codes := make([]int, 0, len(s.Codes))
	for c := range s.Codes {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	var parts []string
	for _, c := range codes {
		name := fmt.Sprint(c)
		if c == 0 {
			name = "none"
		}
		parts = append(parts, fmt.Sprintf("%s×%d", name, s.Codes[c]))
	}
	return strings.Join(parts, " ")
}

// Recovered is the start of the first window of length hold, at or after
// from, in which every request started and answered OK within limit; zero
// if none. It is when an operator would call the reader healthy again.
func Recovered(outcomes []Outcome, from time.Time, hold, limit time.Duration) time.Time {
	var in []Outcome
	for _, o := range outcomes {
		if !o.Start.Before(from) {
			in = append(in, o)
		}
	}
	slices.SortFunc(in, func(a, b Outcome) int { return a.Start.Compare(b.Start) })
	for i := range in {
		start := in[i].Start
		if in[len(in)-1].Start.Sub(start) < hold {
			break // not enough run left to judge
		}
		good := true
		for _, o := range in[i:] {
			if o.Start.Sub(start) >= hold {
				break
			}
			if !o.OK() || o.Took > limit {
				good = false
				break
			}
		}
		if good {
			return start
		}
	}
	return time.Time{}
}
