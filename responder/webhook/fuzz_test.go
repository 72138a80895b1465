package webhook_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/webhook"
)

// FuzzAlertsPayload: no body makes the handler panic or answer anything
// but 200, 400 or 413, and what it dispatches is always a firing or
// resolved alert of a version 4 message.
func FuzzAlertsPayload(f *testing.F) {
	full := sample(f)
	f.Add(full)
	f.Add(twoAlerts(f))
	f.Add(edit(f, full, `"truncatedAlerts":0`, `"truncatedAlerts":18446744073709551615`))
	f.Add(edit(f, full, `"version":"4"`, `"version":"3"`))
	f.Add(full[:500])
	f.Add([]byte(`{"version":"4","alerts":[]}`))
	f.Add([]byte(`{"version":"4","alerts":[{"status":"resolved","labels":null,"startsAt":"0001-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":"4","alerts":null}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"Version":"4","ALERTS":[{"STATUS":"firing"}]}`))
	f.Add([]byte("\xff\xfe{}"))

	h, err := webhook.NewHandler(webhook.Options{
		Dispatcher: webhook.DispatcherFunc(func(_ context.Context, a alert.Alert) error {
			if a.Status != alert.StatusFiring && a.Status != alert.StatusResolved {
				panic("dispatched an alert with status " + a.Status)
			}
			return nil
		}),
		Known:        func(name string) bool { return name == "HerdStaleKubelet" },
		MaxBodyBytes: 2048, // small, so that the fuzzer reaches 413
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, length := range []int64{int64(len(body)), -1} {
			req := httptest.NewRequest(http.MethodPost, "/alerts", bytes.NewReader(body))
			req.ContentLength = length
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			switch w.Code {
			case 200, 400:
			case 413:
				if len(body) <= 2048 {
					t.Fatalf("413 for %d bytes", len(body))
				}
			default:
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
	})
}
