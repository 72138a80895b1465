// Package kube builds herd's Kubernetes client configuration, shared by the
// exporter and the responder: --kubeconfig, else $KUBECONFIG, else the
// in-cluster service account, always with herd's own user agent so that
// herd's requests are recognisable in the apiserver's audit log.
package kube

import (
	"fmt"
	"os"

	"github.com/prometheus/common/version"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config loads a client configuration. component is "exporter" or
// "responder"; it goes into the user agent (herd-exporter/<version>).
func Config(kubeconfig, component string) (*rest.Config, error) {
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig, no $KUBECONFIG, and not in a cluster: %w", err)
		}
	}
	return Tune(cfg, component), nil
}

// Tune sets herd's user agent and client-side rate limits on a copy of cfg.
// herd's informers make one request per resource at start and then only
// watch, so modest limits protect the apiserver from herd itself.
func Tune(cfg *rest.Config, component string) *rest.Config {
	c := rest.CopyConfig(cfg)
	v := version.Version
	if v == "" {
		v = "devel"
	}
	c.UserAgent = fmt.Sprintf("herd-%s/%s", component, v)
	if c.QPS == 0 {
		c.QPS = 20
	}
	if c.Burst == 0 {
		c.Burst = 40
	}
	return c
}
