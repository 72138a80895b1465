// Package kubeletauth decides how metrics-server authenticates to kubelets
// from its Deployment: with its service-account token (every kubelet then
// creates a TokenReview per scrape, background incident 004) or with a client
// certificate. The exporter reports the mode (herd_metrics_server_kubelet_auth)
// and the responder's flag-metrics-server re-checks it before annotating, so
// both read one implementation.
package kubeletauth

import (
	"path"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// Mode is how metrics-server authenticates to kubelets.
type Mode string

const (
	// ModeToken: metrics-server sends its service-account token to every
	// kubelet, and each kubelet creates a TokenReview to check it (cached for
	// 2 minutes by default). At thousands of nodes that is a TokenReview storm
	// on the apiserver (background incident 004).
	ModeToken Mode = "token"
	// ModeCertificate: metrics-server presents a client certificate
	// (--kubelet-client-certificate and --kubelet-client-key), which kubelets
	// verify locally against their client CA: no TokenReview.
	ModeCertificate Mode = "certificate"
	// ModeUnknown: only one of the two flags is set, or herd found no
	// metrics-server container in the Deployment.
	ModeUnknown Mode = "unknown"
)

// The flags that decide the mode.
const (
	flagClientCert = "kubelet-client-certificate"
	flagClientKey  = "kubelet-client-key"
)

// TokenFix is the advice for a metrics-server in token mode.
const TokenFix = "add --kubelet-client-certificate and --kubelet-client-key (a client cert signed by the kubelet client CA) so kubelets verify it locally instead of creating a TokenReview per scrape"

// containerName is the name metrics-server's own manifests (components.yaml,
// the Helm chart, the EKS/AKS/GKE add-ons) give its container.
const containerName = "metrics-server"

// valueFlags are metrics-server's kubelet flags that take a value, so that
// `--flag value` (two arguments) consumes the next argument, as pflag does.
// Boolean flags (--kubelet-insecure-tls, --kubelet-use-node-status-port,
// --deprecated-kubelet-completely-insecure) never consume the next argument.
var valueFlags = map[string]bool{
	flagClientCert:                    true,
	flagClientKey:                     true,
	"kubelet-certificate-authority":   true,
	"kubelet-preferred-address-types": true,
	"kubelet-port":                    true,
	"kubelet-request-timeout":         true,
}

// DeploymentView is what /debug pages show about one metrics-server
// Deployment.
type DeploymentView struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Mode      Mode   `json:"mode"`
	// Container is the container herd read the flags from; empty when none
	// looks like metrics-server.
	Container string `json:"container,omitempty"`
	// Flags are the kubelet-related flags found in the container's command
	// and args (name without dashes → value; a boolean flag given without a
	// value is "true").
	Flags map[string]string `json:"flags,omitempty"`
	// Reason explains an unknown mode.
	Reason string `json:"reason,omitempty"`
	// Fix is what to change, set when the mode is token.
	Fix string `json:"fix,omitempty"`
}

// Inspect decides a Deployment's kubelet auth mode from its metrics-server
// container's command and args.
func Inspect(d *appsv1.Deployment) DeploymentView {
	v := DeploymentView{Namespace: d.Namespace, Name: d.Name, Mode: ModeUnknown}
	c := findContainer(d.Spec.Template.Spec.Containers)
	if c == nil {
		v.Reason = "no container named or looking like metrics-server (by name, image or command)"
		return v
	}
	v.Container = c.Name
	v.Flags = kubeletFlags(append(append([]string(nil), c.Command...), c.Args...))
	cert, key := v.Flags[flagClientCert] != "", v.Flags[flagClientKey] != ""
	switch {
	case cert && key:
		v.Mode = ModeCertificate
	case !cert && !key:
		v.Mode = ModeToken
		v.Fix = TokenFix
	case cert:
		v.Reason = "--kubelet-client-certificate is set without --kubelet-client-key; certificate auth needs both"
	default:
		v.Reason = "--kubelet-client-key is set without --kubelet-client-certificate; certificate auth needs both"
	}
	return v
}

// findContainer picks the metrics-server container: the one named
// metrics-server, else the first whose name, image repository or command
// says metrics-server (a renamed container in a vendor's chart).
func findContainer(cs []corev1.Container) *corev1.Container {
	for i := range cs {
		if cs[i].Name == containerName {
			return &cs[i]
		}
	}
	for i := range cs {
		c := &cs[i]
		if strings.Contains(c.Name, containerName) || strings.Contains(imageName(c.Image), containerName) {
			return c
		}
		if len(c.Command) > 0 && strings.Contains(path.Base(c.Command[0]), containerName) {
			return c
		}
	}
	return nil
}

// imageName is the last path element of an image reference without tag or
// digest: registry.k8s.io/metrics-server/metrics-server:v0.7.2 → metrics-server.
func imageName(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	name := path.Base(image)
	if i := strings.IndexByte(name, ':'); i >= 0 {
		name = name[:i]
	}
	return name
}

// kubeletFlags returns the --kubelet-* (and --deprecated-kubelet-*) flags in
// argv, parsed the way metrics-server's pflag does: `--flag=value` or
// `--flag value` for flags that take a value, the last occurrence wins, and
// `--` ends the flags. An argument holding spaces (a `sh -c` script) is split
// into words first. A value flag given without a value records "".
func kubeletFlags(argv []string) map[string]string {
	var words []string
	for _, a := range argv {
		if strings.ContainsAny(a, " \t\n") {
			for _, w := range strings.Fields(a) {
				words = append(words, strings.Trim(w, `"'`))
			}
			continue
		}
		words = append(words, a)
	}
	flags := map[string]string{}
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "--" {
			break
		}
		if !strings.HasPrefix(w, "--") {
			continue
		}
		name, value, hasValue := strings.Cut(w[2:], "=")
		if !strings.HasPrefix(name, "kubelet-") && !strings.HasPrefix(name, "deprecated-kubelet-") {
			continue
		}
		if !hasValue {
			switch {
			case !valueFlags[name]:
				value = "true"
			case i+1 < len(words):
				i++
				value = words[i]
			}
		}
		flags[name] = value
	}
	if len(flags) == 0 {
		return nil
	}
	return flags
}
