package controlplane

import (
	"encoding/json"
	"encoding/pem"
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
func (s *AuditSink) Wire(opts *Options) {
	opts.AuditWebhookURL = s.srv.URL
	opts.AuditWebhookToken = s.token
	opts.AuditWebhookCA = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// Close stops the server.
func (s *AuditSink) Close() { s.srv.Close() }

func (s *AuditSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+s.token {
		http.Error(w, "unauthenticated", http.StatusUnauthorized)
		return
	}
	var list auditv1.EventList
	if err := json.NewDecoder(r.Body).Decode(&list); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
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
