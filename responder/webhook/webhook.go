// Package webhook serves POST /alerts: Alertmanager's webhook notifications
// (payload version 4), authenticated, bounded, decoded with Alertmanager's own
// type (notify/webhook.Message) and handed to a Dispatcher one alert at a
// time.
//
// # Status codes
//
// The answer is a contract with Alertmanager's retry logic. Alertmanager's
// webhook notifier (notify/webhook/webhook.go, the same in 0.25 and 0.34)
// passes the status code to notify.Retrier.Check (notify/util.go): 2xx is
// success; 5xx is "recoverable", so the retry stage (notify.RetryStage,
// notify/retry_stage.go in 0.34, notify/notify.go in 0.25) tries again with
// exponential backoff (0.5s, ×1.5, ±50 % jitter) until the flush's context
// ends, max(group_interval, 10s) after the flush began; any other code is
// "unrecoverable" and not retried in that flush. A failed flush writes
// nothing to the notification log, so the aggregation group sends again at
// its next group_interval whatever the code was: a 4xx ends the immediate
// retries, not the delivery. Hence:
//
//	200 handled, skipped, refused by a guard, no-op, or failed for good (logged, counted)
//	400 malformed: not JSON, not version "4", no alerts list, an alert status other than firing/resolved
//	401 no, wrong or wrong-length bearer token (with WWW-Authenticate)
//	405 not POST
//	413 body over the limit (4 MiB)
//	503 only when the Dispatcher returned an error marked alert.ErrTransient (e.g. the
//	    Kubernetes API is unavailable), so Alertmanager retries; also when the
//	    sender went away before every alert was dispatched (nobody reads it)
//
// Alertmanager delivers at least once: a retried message, repeat_interval and
// an HA pair all deliver the same alert again, also concurrently. The handler
// keeps no state between requests and is safe for concurrent use; making
// repeated alerts act once is the Dispatcher's job.
//
// # Server timeouts
//
// The caller owns the http.Server (internal/webserver's timeouts, with a
// ReadTimeout of 30 s for a 4 MiB body on a slow link). Alertmanager's
// notification context ends max(group_interval, 10s) after a flush began
// (less if webhook_configs sets timeout), and it cancels the request then;
// so the Dispatcher answers well under 10 s (responder/dispatch answers
// within 8 s, 503 while a slow decision goes on).
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/prometheus/alertmanager/notify/webhook"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/responder/alert"
)

// DefaultMaxBodyBytes is the body limit of SPEC §4.1.
const DefaultMaxBodyBytes = 4 << 20

// Dispatcher acts on alerts. The handler calls it once per alert of a
// message, in order, with the request's context; it may be called
// concurrently for different requests, and with the same alert more than
// once. An error wrapping alert.ErrTransient makes the handler answer 503 (after
// dispatching the rest of the message); any other error is logged, counted
// and answered with 200, so Alertmanager does not retry it.
type Dispatcher interface {
	Dispatch(ctx context.Context, a alert.Alert) error
}

// DispatcherFunc adapts a function to Dispatcher.
type DispatcherFunc func(ctx context.Context, a alert.Alert) error

// Dispatch calls f.
func (f DispatcherFunc) Dispatch(ctx context.Context, a alert.Alert) error { return f(ctx, a) }

// Options configure the handler.
type Options struct {
	// Dispatcher receives every alert. Required.
	Dispatcher Dispatcher
	// Auth checks the bearer token; nil checks nothing in the handler
	// (the listener may still require client certificates or basic auth).
	Auth *Authenticator
	// RequireAuth makes NewHandler fail unless Auth authenticates callers
	// one way or another; the command sets it unless --web.insecure-no-auth.
	RequireAuth bool
	// Known reports whether an alertname has a configured route; others
	// are counted as alertname="other" to bound the metrics' cardinality.
	// nil counts every alert as "other".
	Known func(alertname string) bool
	// Alertnames are the routed alert names whose series exist from the
	// start (Known should accept each).
	Alertnames []string
	// Registerer gets the handler's metrics; nil registers them nowhere.
	Registerer prometheus.Registerer
	// MaxBodyBytes caps a request body (413 above it); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	Logger       *slog.Logger
}

// Handler serves POST /alerts.
type Handler struct {
	opts    Options
	metrics *metrics
}

// NewHandler returns the /alerts handler.
func NewHandler(opts Options) (*Handler, error) {
	if opts.Dispatcher == nil {
		return nil, errors.New("webhook: no dispatcher")
	}
	if opts.RequireAuth && !opts.Auth.Configured() {
		return nil, errors.New("the webhook needs authentication: give --web.bearer-token-file, or --web.config.file requiring client certificates or basic auth; or --web.insecure-no-auth to accept unauthenticated alerts")
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Known == nil {
		opts.Known = func(string) bool { return false }
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer, opts.Alertnames)
	if err != nil {
		return nil, err
	}
	return &Handler{opts: opts, metrics: m}, nil
}

// reply is the 200 body, for people reading logs; Alertmanager ignores it.
type reply struct {
	Alerts          int    `json:"alerts"`
	Failed          int    `json:"failed"`
	TruncatedAlerts uint64 `json:"truncatedAlerts"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	code, msg := h.serve(r)
	h.metrics.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	switch code {
	case http.StatusOK:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, msg)
		return
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="herd responder"`)
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", http.MethodPost)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	// 401 and 405 are what scanners get; they are counted, and logged
	// only at debug level. A misconfigured Alertmanager shows in
	// herd_responder_webhook_requests_total{code="401"} and in its own log.
	level := slog.LevelWarn
	if code == http.StatusUnauthorized || code == http.StatusMethodNotAllowed {
		level = slog.LevelDebug
	}
	h.opts.Logger.Log(r.Context(), level, "webhook request not accepted", "code", code, "remote", r.RemoteAddr, "reason", msg)
	http.Error(w, msg, code)
}

func (h *Handler) serve(r *http.Request) (int, string) {
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "use POST"
	}
	if !h.opts.Auth.allow(r) {
		return http.StatusUnauthorized, "missing or wrong bearer token"
	}
	limit := h.opts.MaxBodyBytes
	if r.ContentLength > limit {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds the %d-byte limit", r.ContentLength, limit)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if int64(len(body)) > limit {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds the %d-byte limit", limit)
	}
	if err != nil {
		return http.StatusBadRequest, fmt.Sprintf("read body: %v", err)
	}
	msg, err := decode(body)
	if err != nil {
		return http.StatusBadRequest, err.Error()
	}

	known := h.opts.Known
	for _, a := range msg.Alerts {
		name := a.Labels["alertname"]
		if !known(name) {
			name = "other"
		}
		h.metrics.received.WithLabelValues(name, a.Status).Inc()
	}
	log := h.opts.Logger.With("group_key", msg.GroupKey, "receiver", msg.Receiver)
	if msg.TruncatedAlerts > 0 {
		h.metrics.truncated.Add(float64(msg.TruncatedAlerts))
		log.Warn("alertmanager truncated the notification: the alerts it left out are unknown, not resolved; raise max_alerts in the webhook config",
			"alerts", len(msg.Alerts), "truncated_alerts", msg.TruncatedAlerts, "status", msg.Status)
	}

	ctx := r.Context()
	failed, transient := 0, 0
	var firstTransient error
	for i, am := range msg.Alerts {
		if ctx.Err() != nil {
			return http.StatusServiceUnavailable, fmt.Sprintf("the sender went away after %d of %d alerts", i, len(msg.Alerts))
		}
		a := alert.Alert{
			Status:          am.Status,
			Labels:          am.Labels,
			Annotations:     am.Annotations,
			StartsAt:        am.StartsAt,
			EndsAt:          am.EndsAt,
			Fingerprint:     am.Fingerprint,
			GeneratorURL:    am.GeneratorURL,
			GroupKey:        msg.GroupKey,
			Receiver:        msg.Receiver,
			TruncatedAlerts: msg.TruncatedAlerts,
			ExternalURL:     msg.ExternalURL,
		}
		err := h.opts.Dispatcher.Dispatch(ctx, a)
		if err == nil {
			continue
		}
		name := a.Name()
		if !known(name) {
			name = "other"
		}
		kind := "permanent"
		if errors.Is(err, alert.ErrTransient) {
			kind = "transient"
			transient++
			if firstTransient == nil {
				firstTransient = err
			}
		} else {
			failed++
		}
		h.metrics.dispatchErrors.WithLabelValues(name, kind).Inc()
		log.Error("dispatch failed", "kind", kind, "alertname", a.Name(), "fingerprint", a.Fingerprint, "status", a.Status, "err", err)
	}
	if transient > 0 {
		return http.StatusServiceUnavailable, fmt.Sprintf("%d of %d alerts failed transiently, retry: %v", transient, len(msg.Alerts), firstTransient)
	}
	b, _ := json.Marshal(reply{Alerts: len(msg.Alerts), Failed: failed, TruncatedAlerts: msg.TruncatedAlerts})
	return http.StatusOK, string(b) + "\n"
}

// decode parses and checks a webhook message. Unknown fields are ignored:
// newer Alertmanagers add some, older ones lack some of the type's.
func decode(body []byte) (*webhook.Message, error) {
	var msg webhook.Message
	if err := json.Unmarshal(body, &msg); err != nil {
		return nil, describeJSONError(body, err)
	}
	if msg.Version != "4" {
		if msg.Version == "" {
			return nil, errors.New(`payload has no "version": herd takes Alertmanager's webhook payload version "4"`)
		}
		return nil, fmt.Errorf("payload version %q: herd takes Alertmanager's webhook payload version \"4\"", msg.Version)
	}
	if msg.Data == nil || msg.Alerts == nil {
		return nil, errors.New(`payload has no "alerts" list`)
	}
	for i, a := range msg.Alerts {
		if a.Status != alert.StatusFiring && a.Status != alert.StatusResolved {
			return nil, fmt.Errorf("alerts[%d].status %q: want firing or resolved", i, a.Status)
		}
	}
	return &msg, nil
}

// describeJSONError says what is wrong and where: line, column and byte
// offset, and for a wrong type the field and the JSON types involved.
func describeJSONError(body []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("malformed JSON at %s: %v", position(body, se.Offset), se)
	case errors.As(err, &te):
		// Message embeds *template.Data; its fields are top-level in JSON.
		field := strings.TrimPrefix(te.Field, "Data.")
		if field == "" {
			field = "payload"
		}
		return fmt.Errorf("malformed payload at %s: %s is a JSON %s, want %s", position(body, te.Offset), field, te.Value, jsonKind(te.Type))
	}
	// A field's own UnmarshalJSON (time.Time) failed; encoding/json does
	// not say where.
	return fmt.Errorf("malformed payload: %v", err)
}

// position says where encoding/json stopped: it reports errors after
// reading offset bytes, so the byte at fault is the last one read (the
// first of an object or array of the wrong type, the last of a wrong
// literal).
func position(body []byte, offset int64) string {
	if offset >= int64(len(body)) {
		return fmt.Sprintf("the end of the body (after %d bytes)", len(body))
	}
	i := max(offset-1, 0)
	before := string(body[:i])
	line := 1 + strings.Count(before, "\n")
	col := i - int64(strings.LastIndexByte(before, '\n'))
	return fmt.Sprintf("line %d, column %d", line, col)
}

// jsonKind names the JSON type a Go type decodes from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return t.String()
}
