package herdtest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestPollSaysWhatItWaitedFor(t *testing.T) {
	calls := 0
	err := Poll(context.Background(), 3*Interval/2, "the answer", func(context.Context) error {
		calls++
		return fmt.Errorf("attempt %d", calls)
	})
	if err == nil || !strings.Contains(err.Error(), "waiting for the answer") || !strings.Contains(err.Error(), fmt.Sprintf("attempt %d", calls)) {
		t.Errorf("Poll: %v; want it to name what it waited for and the last check's error", err)
	}
	if calls < 2 {
		t.Errorf("check called %d times in 1.5 intervals, want 2", calls)
	}
	if err := Poll(context.Background(), time.Second, "x", func(context.Context) error { return nil }); err != nil {
		t.Errorf("Poll of a check that holds: %v", err)
	}
}

func TestParallelStopsAtTheFirstError(t *testing.T) {
	var ran atomic.Int64
	boom := errors.New("boom")
	err := Parallel(context.Background(), 1000, 4, func(ctx context.Context, i int) error {
		ran.Add(1)
		if i == 10 {
			return boom
		}
		time.Sleep(time.Millisecond)
		return nil
	})
	if !errors.Is(err, boom) {
		t.Errorf("Parallel: %v, want boom", err)
	}
	if n := ran.Load(); n >= 1000 {
		t.Errorf("%d jobs ran after the error, want the rest left out", n)
	}
	var sum atomic.Int64
	if err := Parallel(context.Background(), 100, 7, func(_ context.Context, i int) error { sum.Add(int64(i)); return nil }); err != nil || sum.Load() != 4950 {
		t.Errorf("Parallel over 0..99: sum %d, err %v; want every job once (4950)", sum.Load(), err)
	}
}

func TestPrereqRunsOnceAndFailsItsDependents(t *testing.T) {
	runs := 0
	ok := NewPrereq("ok", func(*testing.T) { runs++ })
	t.Run("first", func(t *testing.T) { ok.Need(t) })
	t.Run("second", func(t *testing.T) { ok.Need(t) })
	if runs != 1 {
		t.Errorf("the stage ran %d times, want once", runs)
	}

	// A stage that unwinds before its end (FailNow, SkipNow) is marked
	// failed, so that every later step needing it fails at once instead of
	// running on a stage that is not there. (Needing it again would fail
	// this test, so the mark is checked.)
	failing := NewPrereq("failing", func(t *testing.T) { t.SkipNow() })
	t.Run("needs a stage that stops early", func(t *testing.T) { failing.Need(t) })
	if !failing.ran || !failing.failed {
		t.Errorf("a stage that stopped before its end: ran %v, failed %v; want both", failing.ran, failing.failed)
	}
	withFinding := NewPrereq("with a finding", func(t *testing.T) {})
	t.Run("needs a stage that finishes", func(t *testing.T) { withFinding.Need(t) })
	if withFinding.failed {
		t.Errorf("a stage that finished is marked failed")
	}
}

func TestCertificatesVerify(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	serverPEM, serverKey, err := ca.Issue(Cert{CommonName: "server", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	clientPEM, _, err := ca.Issue(Cert{CommonName: "client", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	for name, c := range map[string]struct {
		pem   []byte
		usage x509.ExtKeyUsage
	}{"server": {serverPEM, x509.ExtKeyUsageServerAuth}, "client": {clientPEM, x509.ExtKeyUsageClientAuth}} {
		b, _ := pem.Decode(c.pem)
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{c.usage}}); err != nil {
			t.Errorf("%s certificate does not verify against its CA: %v", name, err)
		}
	}

	// A self-signed serving certificate is trusted by its own PEM, as the
	// apiserver's audit webhook trusts herd's.
	self, selfKey, err := SelfSigned(Cert{CommonName: "self", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	for name, pair := range map[string][2][]byte{"CA-issued": {serverPEM, serverKey}, "self-signed": {self, selfKey}} {
		kp, err := tls.X509KeyPair(pair[0], pair[1])
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{kp}}
		srv.StartTLS()
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(map[string][]byte{"CA-issued": ca.PEM, "self-signed": self}[name])
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else {
			resp.Body.Close()
		}
		srv.Close()
	}
}

func TestLogBufferTail(t *testing.T) {
	var l LogBuffer
	for i := range 5 {
		fmt.Fprintf(&l, "line %d\n", i)
	}
	if got := l.Tail(2); got != "line 3\nline 4" {
		t.Errorf("Tail(2) = %q", got)
	}
	if got := l.Tail(10); !strings.HasPrefix(got, "line 0") {
		t.Errorf("Tail(10) = %q, want every line", got)
	}
}

func TestGzipInflatesToItsInput(t *testing.T) {
	in := []byte(strings.Repeat("audit line\n", 100))
	zr, err := gzip.NewReader(bytes.NewReader(Gzip(t, in)))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(out, in) {
		t.Errorf("inflated %d bytes (%v), want the %d written", len(out), err, len(in))
	}
}

func TestStatusRecorderPassesThroughAndRemembers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    int
	}{
		{"body only", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }, http.StatusOK},
		{"error", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "busy", http.StatusServiceUnavailable) }, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			rec := NewStatusRecorder(w)
			tc.handler(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			if rec.Code != tc.want || w.Code != tc.want {
				t.Errorf("recorded %d, client got %d; want %d", rec.Code, w.Code, tc.want)
			}
		})
	}
}

func TestList(t *testing.T) {
	var l List[int]
	if got := l.Take(); got != nil {
		t.Fatalf("empty Take = %v", got)
	}
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() { defer wg.Done(); l.Add(i) }()
	}
	wg.Wait()
	got := l.Take()
	slices.Sort(got)
	if len(got) != 100 || got[0] != 0 || got[99] != 99 {
		t.Fatalf("Take = %v, want 0..99", got)
	}
	l.Add(7)
	if got := l.Take(); !slices.Equal(got, []int{7}) {
		t.Errorf("Take after Take = %v, want [7]", got)
	}
}

func TestWriteTemp(t *testing.T) {
	p := WriteTemp(t, "a.yaml", "x: 1\n")
	if b, err := os.ReadFile(p); err != nil || string(b) != "x: 1\n" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if q := WriteTemp(t, "a.yaml", "y"); q == p {
		t.Errorf("two calls wrote the same file %s", p)
	}
}

func TestMatchingAndValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "c"}, []string{"a", "b"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "g"})
	reg.MustRegister(c, g)
	c.WithLabelValues("x", "1").Add(2)
	c.WithLabelValues("x", "2").Add(3)
	c.WithLabelValues("y", "1").Add(5)
	g.Set(7)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := func(name string, labels ...string) (n int, total float64) {
		for _, m := range Matching(mfs, name, labels...) {
			n, total = n+1, total+Value(m)
		}
		return n, total
	}
	for _, tc := range []struct {
		name   string
		labels []string
		n      int
		total  float64
	}{
		{"c_total", nil, 3, 10},
		{"c_total", []string{"a", "x"}, 2, 5},
		{"c_total", []string{"a", "x", "b", "2"}, 1, 3},
		{"c_total", []string{"a", "z"}, 0, 0},
		{"g", nil, 1, 7},
		{"absent", nil, 0, 0},
	} {
		if n, total := sum(tc.name, tc.labels...); n != tc.n || total != tc.total {
			t.Errorf("%s%v: %d series, %g; want %d, %g", tc.name, tc.labels, n, total, tc.n, tc.total)
		}
	}
}

func TestWorkDir(t *testing.T) {
	dir, done, err := WorkDir("", "herd-test-")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("temporary %s: %v", dir, err)
	}
	done()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("done left %s (%v)", dir, err)
	}
	given := filepath.Join(t.TempDir(), "a", "b")
	got, done, err := WorkDir(given, "herd-test-")
	if err != nil || got != given {
		t.Fatalf("WorkDir(%s) = %s, %v", given, got, err)
	}
	done()
	if fi, err := os.Stat(given); err != nil || !fi.IsDir() {
		t.Errorf("a given dir is created and kept: %v", err)
	}
}
