package apiservices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
)

// Failure reasons, the values of herd_apiservice_probe_failures_total's
// reason label. See classify for the mapping.
const (
	ReasonTimeout    = "timeout"
	ReasonHTTP5xx    = "http_5xx"
	ReasonHTTP4xx    = "http_4xx"
	ReasonConnection = "connection"
	ReasonTLS        = "tls"
)

// Reasons lists every failure reason; each probed APIService exports all of
// them, from 0, so rate() sees the first failure.
var Reasons = []string{ReasonTimeout, ReasonHTTP5xx, ReasonHTTP4xx, ReasonConnection, ReasonTLS}

// probeBuckets are the upper bounds of herd_apiservice_probe_duration_seconds:
// a healthy discovery answer takes milliseconds, the aggregator gives up at 5s.
var probeBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// ProbeResult is the outcome of one probe.
type ProbeResult struct {
	Time     time.Time `json:"time"`
	Duration float64   `json:"durationSeconds"`
	// Code is the HTTP status; 0 when no response arrived.
	Code int `json:"code,omitempty"`
	// Reason is the failure reason; empty for a success.
	Reason string `json:"reason,omitempty"`
	// Error says what failed: the transport error, or the response body, or
	// for the aggregator's bare "service unavailable" the Available
	// condition's reason and message as well.
	Error string `json:"error,omitempty"`
}

// probeStats are one APIService's cumulative probe results.
type probeStats struct {
	count    uint64
	sum      float64
	buckets  []uint64 // per bound, not cumulative
	failures map[string]uint64
	last     ProbeResult
}

func newProbeStats() *probeStats {
	f := make(map[string]uint64, len(Reasons))
	for _, r := range Reasons {
		f[r] = 0
	}
	return &probeStats{buckets: make([]uint64, len(probeBuckets)), failures: f}
}

func (p *probeStats) observe(r ProbeResult) {
	p.count++
	p.sum += r.Duration
	for i, b := range probeBuckets {
		if r.Duration <= b {
			p.buckets[i]++
			break
		}
	}
	if r.Reason != "" {
		p.failures[r.Reason]++
	}
	p.last = r
}

// cumulative returns the buckets as Prometheus wants them.
func (p *probeStats) cumulative() map[float64]uint64 {
	out := make(map[float64]uint64, len(probeBuckets))
	var acc uint64
	for i, b := range probeBuckets {
		acc += p.buckets[i]
		out[b] = acc
	}
	return out
}

type target struct {
	name, group, version string
}

// probeLoop runs a round of probes every ProbeInterval (±10%) until ctx is
// done. A round probes every non-local APIService, at most ProbeWorkers at a
// time; a round that outlasts the interval delays the next, never overlaps it.
func (v *View) probeLoop(ctx context.Context) {
	// The first round comes soon after sync, but not at the same instant in
	// every replica.
	next := time.Now().Add(jitter(min(v.opts.ProbeInterval/10, time.Second)))
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		start := time.Now()
		v.probeRound(ctx)
		next = start.Add(v.opts.ProbeInterval + jitter(v.opts.ProbeInterval/5) - v.opts.ProbeInterval/10)
	}
}

// jitter is a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

func (v *View) probeRound(ctx context.Context) {
	var targets []target
	for _, a := range v.list() {
		if a.Spec.Service != nil {
			targets = append(targets, target{name: a.Name, group: a.Spec.Group, version: a.Spec.Version})
		}
	}
	rand.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
	sem := make(chan struct{}, v.opts.ProbeWorkers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, t := range targets {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			v.probe(ctx, t)
		})
	}
}

// probe sends GET /apis/<group>/<version> through the apiserver, as kubectl's
// discovery does, and records the result.
func (v *View) probe(ctx context.Context, t target) {
	pctx, cancel := context.WithTimeout(ctx, v.opts.ProbeTimeout)
	defer cancel()
	start := time.Now()
	code, body, err := v.getURL(pctx, v.probeURL(t.group, t.version))
	dur := time.Since(start)
	if ctx.Err() != nil {
		return // herd is stopping; that is no failure of the APIService
	}
	if err != nil && pctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w: %v", context.DeadlineExceeded, err) // the deadline cut the transfer
	}
	as := v.get(t.name)
	if as == nil {
		return // deleted while the probe ran
	}
	res := ProbeResult{Time: start, Duration: dur.Seconds(), Code: code}
	res.Reason, res.Error = classify(code, body, err, as)

	v.mu.Lock()
	p, ok := v.probes[t.name]
	if !ok {
		p = newProbeStats()
		v.probes[t.name] = p
	}
	prev := p.last
	p.observe(res)
	v.mu.Unlock()

	if !ok || prev.Reason != res.Reason {
		v.logger.Info("apiservice probe", "apiservice", t.name, "code", res.Code, "reason", res.Reason,
			"duration", dur.Round(time.Millisecond), "err", res.Error)
	}
}

// getURL sends one GET and returns the status and the start of the body.
func (v *View) getURL(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.probeClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err == nil {
		// Drain a large discovery document so the connection is reused.
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<20))
	}
	if err != nil && resp.StatusCode/100 == 2 {
		return resp.StatusCode, string(body), err
	}
	return resp.StatusCode, string(body), nil
}

// Patterns in error text, checked in this order: a dial that timed out
// ("dial tcp ...: i/o timeout") is a connection failure, not a timeout.
var (
	tlsPatterns        = []string{"x509:", "tls:", "TLS handshake", "certificate"}
	connectionPatterns = []string{"dial tcp", "dial udp", "connection refused", "no route to host", "i/o timeout",
		"connection reset", "network is unreachable", "host is unreachable", "no such host", "broken pipe", "EOF"}
	timeoutPatterns = []string{"context deadline exceeded", "Client.Timeout exceeded", "timed out waiting for",
		"timeout awaiting response headers", "Timeout:"}
)

// aggregatorUnavailable is the whole body of the aggregator's answer for an
// APIService whose Available condition is not True: it does not even try the
// backend, and the reason is only in the condition.
const aggregatorUnavailable = "service unavailable"

// classify maps a probe outcome to a failure reason ("" for success) and the
// text that explains it.
//
//   - No response: the probe's deadline → timeout; x509/TLS errors → tls;
//     anything else (refused, reset, EOF reaching the apiserver) → connection.
//   - 2xx → success. 4xx (403: herd's RBAC; 404: group/version not served;
//     429: APF) and any other non-5xx → http_4xx.
//   - 5xx: the message decides. When the body is the aggregator's bare
//     "service unavailable", the message is the Available condition's, if it
//     is False (FailedDiscoveryCheck carries the availability controller's
//     own dial error). Then: x509/tls/certificate → tls; dial tcp, connection
//     refused, no route to host, i/o timeout, connection reset, no such host,
//     EOF → connection; context deadline exceeded, Client.Timeout exceeded,
//     timed out waiting for (and any 504) → timeout; else http_5xx (e.g.
//     MissingEndpoints: no ready backend at all, or a backend's own 500).
func classify(code int, body string, err error, as *apiregistrationv1.APIService) (reason, detail string) {
	if code == 0 {
		if err == nil {
			return ReasonConnection, "no response"
		}
		msg := err.Error()
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return ReasonTimeout, msg
		case containsAny(msg, tlsPatterns):
			return ReasonTLS, msg
		default:
			return ReasonConnection, msg
		}
	}
	if code/100 == 2 {
		if err != nil { // the body broke off
			if errors.Is(err, context.DeadlineExceeded) {
				return ReasonTimeout, err.Error()
			}
			return ReasonConnection, err.Error()
		}
		return "", ""
	}
	msg := statusMessage(body)
	if code/100 != 5 {
		return ReasonHTTP4xx, httpDetail(code, msg)
	}
	text := msg
	if msg == aggregatorUnavailable && as != nil {
		if c := availableCondition(as); c != nil && c.Status != apiregistrationv1.ConditionTrue {
			text = c.Reason + ": " + c.Message
			msg += " (Available=" + string(c.Status) + " " + text + ")"
		}
	}
	detail = httpDetail(code, msg)
	switch {
	case containsAny(text, tlsPatterns):
		return ReasonTLS, detail
	case containsAny(text, connectionPatterns):
		return ReasonConnection, detail
	case code == http.StatusGatewayTimeout || containsAny(text, timeoutPatterns):
		return ReasonTimeout, detail
	default:
		return ReasonHTTP5xx, detail
	}
}

// httpDetail is "503 service unavailable" or "403 <message>".
func httpDetail(code int, msg string) string {
	if msg == "" {
		msg = strings.ToLower(http.StatusText(code))
	}
	return strconv.Itoa(code) + " " + msg
}

// statusMessage is a metav1.Status's message, or the plain-text body
// (the aggregator's proxy answers with http.Error).
func statusMessage(body string) string {
	body = strings.TrimSpace(body)
	if strings.HasPrefix(body, "{") {
		var st struct {
			Kind    string `json:"kind"`
			Message string `json:"message"`
		}
		if json.Unmarshal([]byte(body), &st) == nil && st.Kind == "Status" {
			return st.Message
		}
	}
	if len(body) > 512 {
		body = body[:512] + "..."
	}
	return body
}

func containsAny(s string, subs []string) bool {
	for _, p := range subs {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}
