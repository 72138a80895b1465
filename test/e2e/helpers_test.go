package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/test/proc"
)

// servingCert writes a self-signed certificate for 127.0.0.1 and returns the
// cert and key paths and the PEM to trust it.
func servingCert(t *testing.T, dir string) (certPath, keyPath string, caPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "herd-e2e"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write(t, certPath, string(caPEM))
	write(t, keyPath, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})))
	return certPath, keyPath, caPEM
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// runningExporter is an in-process `herd exporter` serving on loopback.
type runningExporter struct {
	*exporter.Exporter
	MetricsURL string
	AuditURL   string
}

// startExporter runs an exporter until the test ends. opts.Web and
// opts.Audit get free loopback addresses; the caller sets auth and files.
func startExporter(t *testing.T, opts exporter.Options) *runningExporter {
	t.Helper()
	return startExporterWith(t, config.Default(), opts)
}

// startExporterWith is startExporter with a configuration of the test's own.
func startExporterWith(t *testing.T, cfg config.Config, opts exporter.Options) *runningExporter {
	t.Helper()
	webPort, _ := proc.FreePort()
	auditPort, _ := proc.FreePort()
	webAddrs := []string{"127.0.0.1:" + strconv.Itoa(webPort)}
	auditAddrs := []string{"127.0.0.1:" + strconv.Itoa(auditPort)}
	off, empty := false, ""
	opts.Config = cfg
	opts.Web = web.FlagConfig{WebListenAddresses: &webAddrs, WebSystemdSocket: &off, WebConfigFile: &empty}
	if opts.Audit.WebConfigFile == nil {
		opts.Audit.WebConfigFile = &empty
	}
	opts.Audit.WebListenAddresses, opts.Audit.WebSystemdSocket = &auditAddrs, &off
	e, err := exporter.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("exporter: %v", err)
		}
	})
	scheme := "http"
	if *opts.Audit.WebConfigFile != "" {
		scheme = "https"
	}
	r := &runningExporter{Exporter: e, MetricsURL: "http://" + webAddrs[0], AuditURL: scheme + "://" + auditAddrs[0] + "/audit"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(r.MetricsURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// series is a gathered sample keyed by "name{l1=v1,l2=v2}" with sorted labels;
// histograms contribute name_count.
type series map[string]float64

func gather(t *testing.T, e *exporter.Exporter) series {
	t.Helper()
	families, err := e.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	s := series{}
	for _, mf := range families {
		if !strings.HasPrefix(mf.GetName(), "herd_") || strings.HasPrefix(mf.GetName(), "herd_scrape_") || mf.GetName() == "herd_build_info" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			sort.Strings(labels)
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				s[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				s[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				s[strings.Replace(key, "{", "_count{", 1)] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return s
}

// sum adds the samples of name whose labels include every one of match
// ("k=v").
func (s series) sum(name string, match ...string) float64 {
	total := 0.0
	for k, v := range s {
		if !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && (strings.Contains(k, "{"+m+",") || strings.Contains(k, ","+m+",") || strings.Contains(k, ","+m+"}") || strings.Contains(k, "{"+m+"}"))
		}
		if ok {
			total += v
		}
	}
	return total
}

func (s series) String() string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %g\n", k, s[k])
	}
	return b.String()
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
