package drill

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/herd-k8s/herd/test/herdtest"
)

// Namespace holds the drill's pods.
const Namespace = "drill"

// PodName is the name of heavy pod i (0-based).
func PodName(i int) string { return fmt.Sprintf("batch-job-%05d", i) }

// HeavyPod is a pod of the kind incident 002 piles up: a finished batch
// job's pod nobody deleted, with the big labels, annotations and
// environment that workflow engines stamp on them. With filler bytes of
// annotation it serialises to about filler + 4.3 KB of JSON, managedFields
// included; HeavyPodFiller gives the SPEC's ~10.8 KB. It is bound to node
// so that node's kubelet lists it; where no kubelet runs it stays Pending,
// and where a real one does (the demo's hollow nodes) FinishHeavyPods first
// marks it finished.
func HeavyPod(i int, node string, filler int) *corev1.Pod {
	labels := map[string]string{
		"app.kubernetes.io/name": "nightly-etl", "app.kubernetes.io/component": "worker",
		"workflows.example.com/workflow": fmt.Sprintf("etl-%04d", i/50), "workflows.example.com/step": fmt.Sprintf("step-%02d", i%50),
		"team": "data-platform", "cost-center": "cc-4711",
	}
	env := make([]corev1.EnvVar, 0, 12)
	for j := range 12 {
		env = append(env, corev1.EnvVar{Name: fmt.Sprintf("ETL_SETTING_%02d", j), Value: fmt.Sprintf("s3://example-datalake/warehouse/tables/t%02d/partition=%05d", j, i)})
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: PodName(i), Namespace: Namespace, Labels: labels,
			Annotations: map[string]string{"workflows.example.com/template": fillerText(i, filler)},
		},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "worker", Image: "registry.example.com/data/etl-worker:v3.14.2",
				Command: []string{"/bin/etl", "run", "--step", fmt.Sprint(i % 50)},
				Env:     env,
			}},
		},
	}
}

// HeavyPodFiller is the annotation size that makes HeavyPod about 10.8 KB
// of JSON as a LIST returns it (SPEC §8.1: 2,000 of them are 21.7 MB).
const HeavyPodFiller = 6570

// FinishedHeavyPodFiller keeps a heavy pod bound to a real kubelet at
// ~10.8 KB once FinishHeavyPods has written its status (+1,810 bytes with
// its managedFields entry) and the kubelet its own (+765 bytes: hostIP,
// observedGeneration, the container's ready, and the kubelet's
// managedFields entry), as measured on v1.36.3's hollow kubelet.
const FinishedHeavyPodFiller = HeavyPodFiller - 1810 - 765

// fillerText is n bytes of a workflow template that differs per pod.
func fillerText(i, n int) string {
	var b strings.Builder
	for b.Len() < n {
		fmt.Fprintf(&b, "- name: step-%d-%d\n  image: registry.example.com/data/etl:%d\n", i, b.Len(), b.Len()%97)
	}
	return b.String()[:n]
}

// CreateHeavyPods creates the drill namespace and n heavy pods spread over
// nodes (round robin), with workers creators in parallel. Pods that exist
// are kept.
func CreateHeavyPods(ctx context.Context, c kubernetes.Interface, n int, nodes []string, filler, workers int) error {
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", Namespace, err)
	}
	return herdtest.Parallel(ctx, n, workers, func(ctx context.Context, i int) error {
		_, err := c.CoreV1().Pods(Namespace).Create(ctx, HeavyPod(i, nodes[i%len(nodes)], filler), metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create pod %s: %w", PodName(i), err)
		}
		return nil
	})
}
