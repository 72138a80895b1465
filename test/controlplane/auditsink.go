package controlplane

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
)

// AuditSink is an audit webhook backend for tests: an https server on
// loopback (the apiserver sends the webhook's bearer token only over https)
// that keeps every event it receives, decoded with the apiserver's own
// audit/v1 types, so tests check herd against what the apiserver really
// sent rather than against herd's own decoder.
type AuditSink struct {
	srv   *httptest.Server
	token string

	mu     sync.Mutex
	events []auditv1.Event
}

// NewAuditSink starts a sink that accepts only the given bearer token. Close
// it when done.
func NewAuditSink(token string) *AuditSink {
	s := &AuditSink{token: token}
	s.srv = httptest.NewTLSServer(s)
	return s
}

// Wire points opts' audit webhook at the sink, with its token and CA.
func (s *AuditSink) Wire(opts *Options) { WireAuditWebhook(opts, s.srv, s.token) }

// WireAuditWebhook points opts' audit webhook at srv, a test receiver
// started with httptest.NewTLSServer (the apiserver sends the bearer token
// only over https): its URL, token, and its certificate as the CA.
func WireAuditWebhook(opts *Options, srv *httptest.Server, token string) {
	opts.AuditWebhookURL = srv.URL
	opts.AuditWebhookToken = token
	opts.AuditWebhookCA = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// maxAuditBatch bounds what ReadAuditBatch reads: far more than a batch of
// the webhook's default 400 events.
const maxAuditBatch = 64 << 20

// ReadAuditBatch reads one batch the audit webhook posted to a test
// receiver. Unless the request carries token as its bearer token (401) and
// its body is an audit/v1 EventList (400), it answers the error and returns
// false. The body is returned as sent, for a receiver that keeps or
// forwards it, and decoded with the apiserver's own types.
func ReadAuditBatch(w http.ResponseWriter, r *http.Request, token string) (body []byte, list *auditv1.EventList, ok bool) {
	if r.Header.Get("Authorization") != "Bearer "+token {
		http.Error(w, "unauthenticated", http.StatusUnauthorized)
		return nil, nil, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAuditBatch))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, nil, false
	}
	list = &auditv1.EventList{}
	if err := json.Unmarshal(body, list); err != nil {
		http.Error(w, "not an EventList: "+err.Error(), http.StatusBadRequest)
		return nil, nil, false
	}
	return body, list, true
}

// Close stops the server.
func (s *AuditSink) Close() { s.srv.Close() }

func (s *AuditSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, list, ok := ReadAuditBatch(w, r, s.token)
	if !ok {
		return
	}
	s.mu.Lock()
	s.events = append(s.events, list.Items...)
	s.mu.Unlock()
}

// Len is how many events have arrived: a mark for EventsFrom, so a test can
// look only at what its own requests caused.
func (s *AuditSink) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

// EventsFrom returns a copy of the events that arrived after mark (a Len).
func (s *AuditSink) EventsFrom(mark int) []auditv1.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]auditv1.Event(nil), s.events[mark:]...)
}
