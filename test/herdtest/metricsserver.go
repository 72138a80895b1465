package herdtest

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MetricsServer is a metrics-server Deployment called name in namespace
// ns, labelled (and selecting its pods) label=metrics-server — k8s-app as
// components.yaml has it, app.kubernetes.io/name as the Helm chart — with
// one container of the v0.7.2 image and args. Without
// --kubelet-client-certificate/--kubelet-client-key it authenticates to
// kubelets with its token (incident 004).
func MetricsServer(ns, name, label string, args ...string) *appsv1.Deployment {
	labels := map[string]string{label: "metrics-server"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "metrics-server", Image: "registry.k8s.io/metrics-server/metrics-server:v0.7.2", Args: args,
				}}},
			},
		},
	}
}
