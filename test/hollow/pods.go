package hollow

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// PauseImage is the image of the pods CreatePods makes; the fake runtime
// "pulls" it without a registry.
const PauseImage = "registry.k8s.io/pause:3.10"

// CreatePods binds perNode pods to each node, the way the scheduler would
// (spec.nodeName), each mounting a ConfigMap and a Secret of its own: the
// kubelet then starts a reflector for each (fieldSelector=metadata.name=...,
// pkg/kubelet/util/manager/watch_based_manager.go), as it does for every
// ConfigMap and Secret volume in a cluster. It creates the namespace when
// missing and returns the pods' names.
func CreatePods(ctx context.Context, c kubernetes.Interface, namespace string, nodes []string, perNode int) ([]string, error) {
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	var names []string
	for _, node := range nodes {
		for i := range perNode {
			name := fmt.Sprintf("%s-pod-%d", node, i)
			meta := metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "herd-hollow"}}
			if _, err := c.CoreV1().ConfigMaps(namespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"config": name}}, metav1.CreateOptions{}); err != nil {
				return names, fmt.Errorf("create configmap %s: %w", name, err)
			}
			if _, err := c.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{ObjectMeta: meta, StringData: map[string]string{"token": name}}, metav1.CreateOptions{}); err != nil {
				return names, fmt.Errorf("create secret %s: %w", name, err)
			}
			pod := &corev1.Pod{
				ObjectMeta: meta,
				Spec: corev1.PodSpec{
					NodeName:   node,
					Containers: []corev1.Container{{Name: "app", Image: PauseImage, VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/config"}, {Name: "secret", MountPath: "/secret"}}}},
					Volumes: []corev1.Volume{
						{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}},
						{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name}}},
					},
				},
			}
			if _, err := c.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				return names, fmt.Errorf("create pod %s: %w", name, err)
			}
			names = append(names, name)
		}
	}
	return names, nil
}

// WaitPodsRunning waits until every named pod in namespace is Running (the
// kubelet has "started" its containers in the fake runtime and reported it).
func WaitPodsRunning(ctx context.Context, c kubernetes.Interface, namespace string, names []string) error {
	for {
		var notRunning []string
		for _, name := range names {
			p, err := c.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil || p.Status.Phase != corev1.PodRunning {
				notRunning = append(notRunning, name)
			}
		}
		if len(notRunning) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hollow: pods not Running: %v: %w", notRunning, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}
