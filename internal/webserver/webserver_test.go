package webserver

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	s := New(http.NotFoundHandler(), 30*time.Second)
	if s.ReadHeaderTimeout != 10*time.Second || s.ReadTimeout != 30*time.Second || s.WriteTimeout != time.Minute ||
		s.IdleTimeout != 2*time.Minute || s.MaxHeaderBytes != 64<<10 || s.Handler == nil {
		t.Errorf("server %+v", s)
	}
}

func TestWriteJSON(t *testing.T) {
	w := httptest.NewRecorder()
	WriteJSON(w, map[string]any{"a": 1})
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	if got := w.Body.String(); got != "{\n  \"a\": 1\n}\n" {
		t.Errorf("body %q", got)
	}
}

func TestMux(t *testing.T) {
	h := Mux("herd responder", "Acts on alerts.", Link{"/metrics", "Metrics"}, Link{"/debug/actions", "Decisions (JSON)"})
	srv := httptest.NewServer(h)
	defer srv.Close()
	res, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{"herd responder", "Acts on alerts.", `href="/metrics"`, `href="/debug/actions"`, "Decisions (JSON)"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("landing page lacks %q:\n%s", want, b)
		}
	}
	res, err = http.Get(srv.URL + "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("/nothing: %d, want 404", res.StatusCode)
	}
	res, err = http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(b) != "ok\n" {
		t.Errorf("/healthz: %d %q, want 200 \"ok\\n\"", res.StatusCode, b)
	}
}
