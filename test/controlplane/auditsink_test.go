package controlplane_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/herd-k8s/herd/test/controlplane"
)

// TestReadAuditBatch: what every test receiver of the audit webhook accepts
// and refuses (no control plane needed).
func TestReadAuditBatch(t *testing.T) {
	batch := `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"auditID":"a1","stage":"ResponseComplete"},{"auditID":"a2","stage":"RequestReceived"}]}`
	for _, tc := range []struct {
		name, auth, body string
		code, items      int
	}{
		{"a batch", "Bearer tok", batch, http.StatusOK, 2},
		{"no token", "", batch, http.StatusUnauthorized, 0},
		{"another token", "Bearer other", batch, http.StatusUnauthorized, 0},
		{"not JSON", "Bearer tok", "{", http.StatusBadRequest, 0},
		{"not an EventList", "Bearer tok", `{"items":"x"}`, http.StatusBadRequest, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			body, list, ok := controlplane.ReadAuditBatch(w, req, "tok")
			if ok != (tc.code == http.StatusOK) || w.Code != tc.code {
				t.Fatalf("ok %v, answered %d; want %d", ok, w.Code, tc.code)
			}
			if !ok {
				return
			}
			if string(body) != tc.body || len(list.Items) != tc.items || list.Items[1].AuditID != "a2" || list.Items[1].Stage != "RequestReceived" {
				t.Errorf("body %q, events %+v", body, list.Items)
			}
		})
	}
}
