package exporter

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/herd-k8s/herd/exporter/config"
)

// Go's profiles are served only with --web.enable-pprof (Options.Pprof).
func TestPprofOnlyWhenEnabled(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		e := newLocalExporter(t, config.Default(), enabled)
		want := http.StatusNotFound
		if enabled {
			want = http.StatusOK
		}
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
			rec := httptest.NewRecorder()
			e.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			if rec.Code != want {
				t.Errorf("Pprof %v: GET %s = %d, want %d", enabled, path, rec.Code, want)
			}
		}
	}
}
