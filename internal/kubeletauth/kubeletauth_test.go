package kubeletauth

import (
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const msImage = "registry.k8s.io/metrics-server/metrics-server:v0.7.2"

// deployment is a Deployment in kube-system with containers.
func deployment(name string, cs ...corev1.Container) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system"},
		Spec:       appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: cs}}},
	}
}

func msContainer(command []string, args ...string) corev1.Container {
	return corev1.Container{Name: "metrics-server", Image: msImage, Command: command, Args: args}
}

// components.yaml's args (metrics-server v0.7.2): token mode.
var upstreamArgs = []string{"--cert-dir=/tmp", "--secure-port=10250", "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname", "--kubelet-use-node-status-port", "--metric-resolution=15s"}

func TestMetricsServerInspect(t *testing.T) {
	cases := []struct {
		name       string
		containers []corev1.Container
		mode       Mode
		container  string
		flags      map[string]string
		reason     bool
	}{
		{
			name:       "upstream components.yaml: token",
			containers: []corev1.Container{msContainer(nil, upstreamArgs...)},
			mode:       ModeToken, container: "metrics-server",
			flags: map[string]string{"kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname", "kubelet-use-node-status-port": "true"},
		},
		{
			name:       "no args at all: token",
			containers: []corev1.Container{msContainer(nil)},
			mode:       ModeToken, container: "metrics-server",
		},
		{
			name:       "both flags, --flag=value",
			containers: []corev1.Container{msContainer(nil, append(upstreamArgs, "--kubelet-client-certificate=/certs/tls.crt", "--kubelet-client-key=/certs/tls.key")...)},
			mode:       ModeCertificate, container: "metrics-server",
			flags: map[string]string{"kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname", "kubelet-use-node-status-port": "true", "kubelet-client-certificate": "/certs/tls.crt", "kubelet-client-key": "/certs/tls.key"},
		},
		{
			name:       "both flags, --flag value as separate args",
			containers: []corev1.Container{msContainer(nil, "--kubelet-client-certificate", "/certs/tls.crt", "--kubelet-client-key", "/certs/tls.key", "--secure-port", "10250")},
			mode:       ModeCertificate, container: "metrics-server",
			flags: map[string]string{"kubelet-client-certificate": "/certs/tls.crt", "kubelet-client-key": "/certs/tls.key"},
		},
		{
			name:       "both flags in command, no args",
			containers: []corev1.Container{msContainer([]string{"/metrics-server", "--kubelet-client-certificate=/c", "--kubelet-client-key=/k"})},
			mode:       ModeCertificate, container: "metrics-server",
			flags: map[string]string{"kubelet-client-certificate": "/c", "kubelet-client-key": "/k"},
		},
		{
			name:       "certificate in command, key in args",
			containers: []corev1.Container{msContainer([]string{"/metrics-server", "--kubelet-client-certificate", "/c"}, "--kubelet-client-key=/k")},
			mode:       ModeCertificate, container: "metrics-server",
			flags: map[string]string{"kubelet-client-certificate": "/c", "kubelet-client-key": "/k"},
		},
		{
			name:       "values from environment variables",
			containers: []corev1.Container{msContainer(nil, "--kubelet-client-certificate=$(CERT)", "--kubelet-client-key", "$(KEY)")},
			mode:       ModeCertificate, container: "metrics-server",
			flags: map[string]string{"kubelet-client-certificate": "$(CERT)", "kubelet-client-key": "$(KEY)"},
		},
		{
			name:       "sh -c script",
			containers: []corev1.Container{msContainer([]string{"/bin/sh", "-c", "exec /metrics-server --kubelet-client-certificate=/c --kubelet-client-key '/k'"})},
			mode:       ModeCertificate, container: "metrics-server",
			flags: map[string]string{"kubelet-client-certificate": "/c", "kubelet-client-key": "/k"},
		},
		{
			name:       "boolean flag does not consume the next argument",
			containers: []corev1.Container{msContainer(nil, "--kubelet-insecure-tls", "--kubelet-client-certificate", "/c", "--kubelet-client-key", "/k")},
			mode:       ModeCertificate, container: "metrics-server",
			flags: map[string]string{"kubelet-insecure-tls": "true", "kubelet-client-certificate": "/c", "kubelet-client-key": "/k"},
		},
		{
			name:       "only the certificate",
			containers: []corev1.Container{msContainer(nil, "--kubelet-client-certificate=/c")},
			mode:       ModeUnknown, container: "metrics-server", reason: true,
			flags: map[string]string{"kubelet-client-certificate": "/c"},
		},
		{
			name:       "only the key, separate args",
			containers: []corev1.Container{msContainer(nil, "--kubelet-client-key", "/k")},
			mode:       ModeUnknown, container: "metrics-server", reason: true,
			flags: map[string]string{"kubelet-client-key": "/k"},
		},
		{
			name:       "empty value counts as unset",
			containers: []corev1.Container{msContainer(nil, "--kubelet-client-certificate=", "--kubelet-client-key=/k")},
			mode:       ModeUnknown, container: "metrics-server", reason: true,
			flags: map[string]string{"kubelet-client-certificate": "", "kubelet-client-key": "/k"},
		},
		{
			name:       "value flag last, without a value",
			containers: []corev1.Container{msContainer(nil, "--kubelet-client-key=/k", "--kubelet-client-certificate")},
			mode:       ModeUnknown, container: "metrics-server", reason: true,
			flags: map[string]string{"kubelet-client-certificate": "", "kubelet-client-key": "/k"},
		},
		{
			// pflag takes the next argument as the value, whatever it is.
			name:       "separate-arg value swallows the next flag, as pflag does",
			containers: []corev1.Container{msContainer(nil, "--kubelet-client-certificate", "--kubelet-client-key=/k")},
			mode:       ModeUnknown, container: "metrics-server", reason: true,
			flags: map[string]string{"kubelet-client-certificate": "--kubelet-client-key=/k"},
		},
		{
			name:       "last occurrence wins",
			containers: []corev1.Container{msContainer(nil, "--kubelet-client-certificate=/c", "--kubelet-client-key=/k", "--kubelet-client-certificate=")},
			mode:       ModeUnknown, container: "metrics-server", reason: true,
			flags: map[string]string{"kubelet-client-certificate": "", "kubelet-client-key": "/k"},
		},
		{
			name:       "arguments after -- are not flags",
			containers: []corev1.Container{msContainer(nil, "--", "--kubelet-client-certificate=/c", "--kubelet-client-key=/k")},
			mode:       ModeToken, container: "metrics-server",
		},
		{
			name: "GKE-style nanny sidecar: the container named metrics-server wins",
			containers: []corev1.Container{
				{Name: "metrics-server-nanny", Image: "gke.gcr.io/addon-resizer:1.8.14", Command: []string{"/pod_nanny", "--container=metrics-server"}},
				msContainer([]string{"/metrics-server", "--kubelet-client-certificate=/c", "--kubelet-client-key=/k"}),
			},
			mode: ModeCertificate, container: "metrics-server",
			flags: map[string]string{"kubelet-client-certificate": "/c", "kubelet-client-key": "/k"},
		},
		{
			name: "renamed container found by image",
			containers: []corev1.Container{
				{Name: "resizer", Image: "registry.k8s.io/autoscaling/addon-resizer:1.8.20"},
				{Name: "server", Image: msImage, Args: []string{"--kubelet-client-certificate=/c", "--kubelet-client-key=/k"}},
			},
			mode: ModeCertificate, container: "server",
			flags: map[string]string{"kubelet-client-certificate": "/c", "kubelet-client-key": "/k"},
		},
		{
			name:       "renamed container found by image digest",
			containers: []corev1.Container{{Name: "ms", Image: "mirror.example/metrics-server@sha256:0123abcd"}},
			mode:       ModeToken, container: "ms",
		},
		{
			name:       "renamed container from a mirror found by command",
			containers: []corev1.Container{{Name: "app", Image: "mirror.example/platform/app:1", Command: []string{"/metrics-server"}, Args: []string{"--kubelet-client-certificate=/c", "--kubelet-client-key=/k"}}},
			mode:       ModeCertificate, container: "app",
			flags: map[string]string{"kubelet-client-certificate": "/c", "kubelet-client-key": "/k"},
		},
		{
			name:       "no metrics-server container",
			containers: []corev1.Container{{Name: "proxy", Image: "nginx:1.27", Args: []string{"--kubelet-client-certificate=/c"}}},
			mode:       ModeUnknown, reason: true,
		},
		{
			name:   "no containers",
			mode:   ModeUnknown,
			reason: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := Inspect(deployment("metrics-server", tc.containers...))
			if v.Namespace != "kube-system" || v.Name != "metrics-server" {
				t.Errorf("namespace/name = %s/%s", v.Namespace, v.Name)
			}
			if v.Mode != tc.mode {
				t.Errorf("mode = %s, want %s (view %+v)", v.Mode, tc.mode, v)
			}
			if v.Container != tc.container {
				t.Errorf("container = %q, want %q", v.Container, tc.container)
			}
			if !reflect.DeepEqual(v.Flags, tc.flags) {
				t.Errorf("flags = %v, want %v", v.Flags, tc.flags)
			}
			if (v.Reason != "") != tc.reason {
				t.Errorf("reason = %q, want one: %v", v.Reason, tc.reason)
			}
			if (v.Mode == ModeToken) != (v.Fix != "") {
				t.Errorf("fix = %q for mode %s: want it exactly for token", v.Fix, v.Mode)
			}
			if v.Mode == ModeToken && v.Fix != TokenFix {
				t.Errorf("fix = %q", v.Fix)
			}
		})
	}
}
