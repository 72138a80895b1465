package chart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/herd-k8s/herd/exporter"
	exporterconfig "github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/internal/webauth"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/proc"
)

// TestExporterWebAuth: exporter.web.clientCA and exporter.web.basicAuthUsers
// put /metrics and the debug pages behind client certificates or basic auth
// (issue 16 point 3: unauthenticated readers must not reach them). The
// rendered web.yml, served by the real exporter's listener, refuses a
// reader without credentials and serves one with them; the probes open a
// TCP connection instead of GETs the kubelet could not authenticate; the
// CA is mounted where web.yml names it; the ServiceMonitor carries the
// scrape's basic auth; and auth without TLS fails the render.
func TestExporterWebAuth(t *testing.T) {
	ca, err := herdtest.NewCA("scrapers")
	if err != nil {
		t.Fatal(err)
	}
	srvCrt, srvKey, err := herdtest.SelfSigned(herdtest.Cert{CommonName: "herd-exporter", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	cliCrt, cliKey, err := ca.Issue(herdtest.Cert{CommonName: "prometheus", DNSNames: []string{"prometheus"}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	strangerCA, err := herdtest.NewCA("someone else")
	if err != nil {
		t.Fatal(err)
	}
	strangerCrt, strangerKey, err := strangerCA.Issue(herdtest.Cert{CommonName: "prometheus", DNSNames: []string{"prometheus"}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	otherCrt, otherKey, err := ca.Issue(herdtest.Cert{CommonName: "someone", DNSNames: []string{"someone"}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for path, b := range map[string][]byte{"web-tls/tls.crt": srvCrt, "web-tls/tls.key": srvKey, "web-client-ca/ca.crt": ca.PEM} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, path)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, path), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(srvCrt)
	pair := func(crt, key []byte) []tls.Certificate {
		c, err := tls.X509KeyPair(crt, key)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}

	type reader struct {
		name   string
		certs  []tls.Certificate
		user   string
		pass   string
		served bool
	}
	for _, tc := range []struct {
		name    string
		set     []string
		auth    string // webauth.ListenerAuth of the rendered web.yml
		readers []reader
	}{
		{
			name: "client certificates",
			set:  []string{"exporter.web.clientCA.secretName=scrapers-ca", "exporter.web.clientCA.allowedSANs={prometheus}"},
			auth: "verified client certificate",
			readers: []reader{
				{name: "no certificate"},
				{name: "a certificate of another CA", certs: pair(strangerCrt, strangerKey)},
				{name: "the scrapers' CA's certificate for another name", certs: pair(otherCrt, otherKey)},
				{name: "the scrapers' certificate", certs: pair(cliCrt, cliKey), served: true},
			},
		},
		{
			name: "basic auth",
			set: []string{"exporter.web.basicAuthUsers.prometheus=" + string(hash), "serviceMonitor.enabled=true",
				"serviceMonitor.basicAuth.username.name=herd-scrape", "serviceMonitor.basicAuth.username.key=username",
				"serviceMonitor.basicAuth.password.name=herd-scrape", "serviceMonitor.basicAuth.password.key=password"},
			auth: "basic auth",
			readers: []reader{
				{name: "no password"},
				{name: "a wrong password", user: "prometheus", pass: "guess"},
				{name: "the password", user: "prometheus", pass: "s3cret", served: true},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := defaults
			r.set = append([]string{"exporter.web.tlsSecretName=herd-exporter-web-tls"}, tc.set...)
			objs := render(t, r)
			webYML := configMapData(t, objs, "herd-exporter", "web.yml")
			path := writeRebased(t, dir, tc.name+".yml", webYML)
			if got, err := webauth.ListenerAuth(path); err != nil || got != tc.auth {
				t.Fatalf("web.yml requires %q (%v), want %q:\n%s", got, err, tc.auth, webYML)
			}

			d := deployment(t, objs, "herd-exporter")
			c := d.Spec.Template.Spec.Containers[0]
			if !strings.Contains(strings.Join(c.Args, " "), "--web.config.file=/etc/herd/config/web.yml") {
				t.Errorf("exporter args %v lack --web.config.file", c.Args)
			}
			for what, p := range map[string]bool{
				"readiness": c.ReadinessProbe != nil && c.ReadinessProbe.TCPSocket != nil && c.ReadinessProbe.TCPSocket.Port.StrVal == "metrics",
				"liveness":  c.LivenessProbe != nil && c.LivenessProbe.TCPSocket != nil && c.LivenessProbe.TCPSocket.Port.StrVal == "metrics",
			} {
				if !p {
					t.Errorf("%s probe %+v: want a TCP check of the metrics port (a kubelet cannot authenticate)", what, c.ReadinessProbe)
				}
			}
			mounted := false
			for _, m := range c.VolumeMounts {
				mounted = mounted || m.Name == "web-client-ca" && m.MountPath == "/etc/herd/web-client-ca"
			}
			if wantCA := strings.Contains(webYML, "client_ca_file: /etc/herd/web-client-ca/ca.crt"); mounted != wantCA {
				t.Errorf("client CA mounted %v, named in web.yml %v", mounted, wantCA)
			}
			if tc.auth == "basic auth" {
				sm := find(t, objs, "ServiceMonitor", "herd", "herd-exporter")
				eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
				ba, _, _ := unstructured.NestedString(eps[0].(map[string]any), "basicAuth", "password", "name")
				if ba != "herd-scrape" {
					t.Errorf("exporter ServiceMonitor endpoint %v: want basicAuth from Secret herd-scrape", eps[0])
				}
				if rsm := find(t, objs, "ServiceMonitor", "herd", "herd-responder"); strings.Contains(toYAML(t, rsm), "basicAuth") {
					t.Error("the responder's ServiceMonitor got the exporter's basicAuth")
				}
			}

			base := runExporter(t, path)
			for _, rd := range tc.readers {
				client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
					TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: rd.certs}}}
				for _, page := range []string{"/metrics", "/debug/clients"} {
					req, _ := http.NewRequest(http.MethodGet, base+page, nil)
					if rd.user != "" {
						req.SetBasicAuth(rd.user, rd.pass)
					}
					resp, err := client.Do(req)
					served := err == nil && resp.StatusCode == http.StatusOK
					if err == nil {
						resp.Body.Close()
					}
					if served != rd.served {
						t.Errorf("GET %s with %s: served %v (%v %v), want %v", page, rd.name, served, statusOf(resp, err), err, rd.served)
					}
				}
			}
		})
	}

	r := defaults
	r.set = []string{"exporter.web.clientCA.secretName=scrapers-ca"}
	if msg := renderErr(t, r); !strings.Contains(msg, "exporter.web.clientCA and exporter.web.basicAuthUsers need exporter.web.tlsSecretName") {
		t.Errorf("client CA without TLS: %s", msg)
	}
}

func statusOf(resp *http.Response, err error) string {
	if err != nil {
		return "no answer"
	}
	return resp.Status
}

func toYAML(t *testing.T, o *unstructured.Unstructured) string {
	t.Helper()
	b, err := o.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// runExporter runs herd's exporter in process (--no-kube) with webConfig as
// its --web.config.file, and returns the metrics listener's base URL.
func runExporter(t *testing.T, webConfig string) string {
	t.Helper()
	webAddr, err := proc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	auditAddr, err := proc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	e, err := exporter.New(exporter.Options{
		Config:        exporterconfig.Default(),
		Web:           herdtest.WebFlags(webConfig, webAddr),
		Audit:         herdtest.WebFlags("", auditAddr),
		AuditInsecure: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("exporter: %v", err)
		}
	})
	err = herdtest.Poll(ctx, 10*time.Second, "the exporter to listen", func(ctx context.Context) error {
		c, err := net.Dial("tcp", webAddr)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return "https://" + webAddr
}
