package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/notify/webhook"
	"github.com/prometheus/alertmanager/template"

	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/promstack"
	"github.com/herd-k8s/herd/test/stack"
)

// Alertmanager's side of the scenarios: the payloads it sends, the Service
// in front of the responder replicas, and a tap that records what it
// delivered and when.

// postAs posts body to url's /alerts with a bearer token ("" for none).
func postAs(t *testing.T, url, token string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/alerts", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s/alerts: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// alertPayload is what Alertmanager would send for alerts with these
// labels (promstack.Notification).
func alertPayload(status string, startsAt time.Time, labels ...map[string]string) []byte {
	alerts := make([]template.Alert, 0, len(labels))
	for _, l := range labels {
		alerts = append(alerts, template.Alert{Labels: l, Annotations: template.KV{}, StartsAt: startsAt})
	}
	b, err := json.Marshal(promstack.Notification(status, alerts...))
	if err != nil {
		panic(err) // maps of strings and times always marshal
	}
	return b
}

// leaderService stands in for a Kubernetes Service in front of the
// responder replicas: it forwards to a replica whose readiness probe
// (/readyz) passes, as kube-proxy forwards only to ready endpoints. It
// records the status of every delivery it forwarded, and can hold
// deliveries back (503) to stage a scenario.
type leaderService struct {
	*httptest.Server
	mu       sync.Mutex
	replicas []*stack.Responder
	paused   bool
	codes    []int
}

func newLeaderService(t *testing.T) *leaderService {
	s := &leaderService{}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *leaderService) set(rs ...*stack.Responder) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replicas = rs
}

func (s *leaderService) pause(p bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paused = p
}

// codesSince returns the codes of deliveries after the first n.
func (s *leaderService) codesSince(n int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > len(s.codes) {
		return nil
	}
	return append([]int(nil), s.codes[n:]...)
}

func (s *leaderService) delivered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.codes)
}

func (s *leaderService) serve(w http.ResponseWriter, req *http.Request) {
	s.mu.Lock()
	paused, replicas := s.paused, s.replicas
	s.mu.Unlock()
	if paused {
		http.Error(w, "held back by the test", http.StatusServiceUnavailable)
		return
	}
	for _, r := range replicas {
		if !r.Ready(req.Context()) {
			continue
		}
		u, _ := url.Parse(r.URL)
		rec := herdtest.NewStatusRecorder(w)
		httputil.NewSingleHostReverseProxy(u).ServeHTTP(rec, req)
		s.mu.Lock()
		s.codes = append(s.codes, rec.Code)
		s.mu.Unlock()
		return
	}
	http.Error(w, "no ready endpoint", http.StatusServiceUnavailable)
}

// drillTap records every Alertmanager notification, with its arrival time,
// and forwards it to the responder's leaderService.
type drillTap struct {
	*httptest.Server
	next string
	mu   sync.Mutex
	got  []tapDelivery
}

type tapDelivery struct {
	at   time.Time
	msg  webhook.Message
	code int
}

func newDrillTap(t *testing.T, next string) *drillTap {
	tap := &drillTap{next: next}
	tap.Server = httptest.NewServer(http.HandlerFunc(tap.serve))
	t.Cleanup(tap.Close)
	return tap
}

func (tap *drillTap) serve(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg webhook.Message
	_ = json.Unmarshal(body, &msg) // the responder judges the payload
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, tap.next, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	code := http.StatusBadGateway
	if err == nil {
		code = resp.StatusCode
		w.WriteHeader(code)
		io.Copy(w, resp.Body)
		resp.Body.Close()
	} else {
		http.Error(w, err.Error(), code)
	}
	tap.mu.Lock()
	tap.got = append(tap.got, tapDelivery{at: at, msg: msg, code: code})
	tap.mu.Unlock()
}

func (tap *drillTap) deliveries() []tapDelivery {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return slices.Clone(tap.got)
}

// firstDelivery is when Alertmanager first delivered alert name with status
// and every label in match (zero time: not yet).
func (tap *drillTap) firstDelivery(name, status string, match map[string]string) (time.Time, map[string]string) {
	for _, d := range tap.deliveries() {
		for _, a := range d.msg.Alerts {
			if a.Labels["alertname"] != name || a.Status != status {
				continue
			}
			ok := true
			for k, v := range match {
				ok = ok && a.Labels[k] == v
			}
			if ok {
				return d.at, a.Labels
			}
		}
	}
	return time.Time{}, nil
}
