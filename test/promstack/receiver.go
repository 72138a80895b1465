package promstack

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/alertmanager/notify/webhook"
)

// Receiver is an Alertmanager webhook endpoint on loopback that records
// every notification, so a test can assert on what Alertmanager actually
// sent rather than on what Prometheus evaluated.
type Receiver struct {
	// URL is the webhook URL to put in an Alertmanager webhook_config.
	URL string

	t        testing.TB
	mu       sync.Mutex
	messages []webhook.Message
	// arrived is closed and replaced whenever a message is recorded, which
	// wakes every WaitFor without a per-waiter channel.
	arrived chan struct{}
}

// NewReceiver starts a webhook receiver that is closed by t.Cleanup. A
// payload that does not decode fails the test: it means the Alertmanager
// and the webhook.Message type disagree.
func NewReceiver(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{t: t, arrived: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(r.serveHTTP))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var msg webhook.Message
	if err := json.NewDecoder(req.Body).Decode(&msg); err != nil {
		r.t.Errorf("webhook receiver: decode payload: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if msg.Data == nil {
		r.t.Errorf("webhook receiver: payload without alert data (version %q, groupKey %q)", msg.Version, msg.GroupKey)
		http.Error(w, "no alert data", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.messages = append(r.messages, msg)
	close(r.arrived)
	r.arrived = make(chan struct{})
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// Messages returns every notification received so far, oldest first.
func (r *Receiver) Messages() []webhook.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.messages)
}

// WaitFor returns the first notification, already received or yet to come,
// that pred accepts, or an error when ctx ends first.
func (r *Receiver) WaitFor(ctx context.Context, pred func(webhook.Message) bool) (webhook.Message, error) {
	seen := 0
	for {
		r.mu.Lock()
		fresh := slices.Clone(r.messages[seen:])
		arrived := r.arrived
		r.mu.Unlock()
		for _, msg := range fresh {
			if pred(msg) {
				return msg, nil
			}
		}
		seen += len(fresh)
		select {
		case <-ctx.Done():
			return webhook.Message{}, fmt.Errorf("wait for webhook notification: %w (%d received, none matched)", ctx.Err(), seen)
		case <-arrived:
		}
	}
}

// AlertmanagerConfig returns an Alertmanager configuration that routes every
// alert to this receiver with 1s group_wait and group_interval, so a firing
// rule reaches the test within seconds instead of the default 30s+5m.
// Resolved notifications are sent too.
func (r *Receiver) AlertmanagerConfig() string {
	return fmt.Sprintf(`route:
  receiver: test
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: %q
        send_resolved: true
`, r.URL)
}
