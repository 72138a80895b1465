package metricsserver

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// deployment is a metrics-server Deployment in kube-system with containers.
// (The mode table test lives with the detection, in internal/kubeletauth.)
func deployment(name string, labels map[string]string, cs ...corev1.Container) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: cs},
			},
		},
	}
}

func msContainer(command []string, args ...string) corev1.Container {
	return corev1.Container{Name: "metrics-server", Image: "registry.k8s.io/metrics-server/metrics-server:v0.7.2", Command: command, Args: args}
}

// components.yaml's args (metrics-server v0.7.2): token mode.
var upstreamArgs = []string{"--cert-dir=/tmp", "--secure-port=10250", "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname", "--kubelet-use-node-status-port", "--metric-resolution=15s"}
