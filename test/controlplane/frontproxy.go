package controlplane

import (
	"fmt"
	"os"

	"github.com/herd-k8s/herd/test/herdtest"
)

// FrontProxyClientName is the CommonName of the client certificate the
// aggregator presents to aggregated API servers, and the only name
// --requestheader-allowed-names accepts.
const FrontProxyClientName = "front-proxy-client"

// frontProxyArgs are the flags that make kube-apiserver's aggregator work as
// it does in a kubeadm cluster: it proxies /apis/<group>/<version> of
// non-local APIServices to their backends, authenticating as
// front-proxy-client and passing the user in X-Remote-* headers, and it dials
// the endpoints in the service's EndpointSlices (there is no service network
// here to route a ClusterIP).
func (cp *ControlPlane) frontProxyArgs() []string {
	return []string{
		"--requestheader-client-ca-file=" + cp.path("certs/front-proxy-ca.crt"),
		"--requestheader-allowed-names=" + FrontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + cp.path("certs/front-proxy-client.crt"),
		"--proxy-client-key-file=" + cp.path("certs/front-proxy-client.key"),
		"--enable-aggregator-routing=true",
	}
}

// writeFrontProxyCerts generates the requestheader CA and the
// front-proxy-client certificate it signs.
func (cp *ControlPlane) writeFrontProxyCerts() error {
	ca, err := herdtest.NewCA("herd-test-front-proxy-ca")
	if err != nil {
		return fmt.Errorf("front-proxy CA: %w", err)
	}
	cert, key, err := ca.Issue(herdtest.Cert{CommonName: FrontProxyClientName, Client: true})
	if err != nil {
		return fmt.Errorf("front-proxy client certificate: %w", err)
	}
	cp.frontProxyCA = ca.PEM
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"certs/front-proxy-ca.crt", cp.frontProxyCA, 0o644},
		{"certs/front-proxy-client.crt", cert, 0o644},
		{"certs/front-proxy-client.key", key, 0o600},
	}
	for _, f := range files {
		if err := os.WriteFile(cp.path(f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// FrontProxyCA is the PEM requestheader CA. An aggregated API server verifies
// the aggregator's client certificate against it before trusting the
// X-Remote-User and X-Remote-Group headers.
func (cp *ControlPlane) FrontProxyCA() []byte { return cp.frontProxyCA }
