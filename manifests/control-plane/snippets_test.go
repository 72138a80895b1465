package controlplane_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// readFile is a file of this directory; failing to read it fails the test.
func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// herdDir is where the snippets mount the policy, the webhook kubeconfig and
// its certificates from.
const herdDir = "/etc/kubernetes/herd"

// logFileFlags are the log-backend alternative the snippets show in
// comments; policy_test.go runs the real apiserver with them.
var logFileFlags = []string{
	"--audit-log-format=json",
	"--audit-log-mode=batch",
	"--audit-log-maxsize=100",
	"--audit-log-maxbackup=5",
}

// staticPod reads kube-apiserver-static-pod.yaml strictly as a Pod: a typo
// in a field name is an error, as kubelet would refuse the manifest.
func staticPod(t *testing.T) *corev1.Pod {
	t.Helper()
	b := readFile(t, "kube-apiserver-static-pod.yaml")
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		t.Fatalf("kube-apiserver-static-pod.yaml: %v", err)
	}
	if len(pod.Spec.Containers) != 1 || pod.Spec.Containers[0].Name != "kube-apiserver" ||
		len(pod.Spec.Containers[0].Command) < 2 || pod.Spec.Containers[0].Command[0] != "kube-apiserver" {
		t.Fatalf("kube-apiserver-static-pod.yaml: want one container kube-apiserver whose command is kube-apiserver and its flags")
	}
	return &pod
}

// webhookFlags are the snippet's kube-apiserver flags.
func webhookFlags(t *testing.T) []string {
	return staticPod(t).Spec.Containers[0].Command[1:]
}

// kubeadmConfig is the part of kubeadm's v1beta4 ClusterConfiguration the
// snippet sets, decoded strictly so that a misspelt field fails here.
type kubeadmConfig struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	APIServer  struct {
		ExtraArgs []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"extraArgs"`
		ExtraVolumes []struct {
			Name      string `json:"name"`
			HostPath  string `json:"hostPath"`
			MountPath string `json:"mountPath"`
			ReadOnly  bool   `json:"readOnly"`
			PathType  string `json:"pathType"`
		} `json:"extraVolumes"`
	} `json:"apiServer"`
}

// TestSnippetsAgree: the static-pod and kubeadm snippets set the same flags
// and mount the same directory, the webhook is batch mode only, and both show
// the same log-file alternative.
func TestSnippetsAgree(t *testing.T) {
	pod := staticPod(t)
	flags := webhookFlags(t)
	for _, want := range []string{
		"--audit-policy-file=" + herdDir + "/audit-policy.yaml",
		"--audit-webhook-config-file=" + herdDir + "/audit-webhook-kubeconfig.yaml",
		"--audit-webhook-mode=batch",
		"--audit-webhook-version=audit.k8s.io/v1",
	} {
		if !slices.Contains(flags, want) {
			t.Errorf("static pod lacks %s", want)
		}
	}
	for _, f := range flags {
		if !strings.HasPrefix(f, "--audit-") {
			t.Errorf("static pod flag %s: the snippet sets audit flags only", f)
		}
		if strings.Contains(f, "blocking") {
			t.Errorf("static pod flag %s: blocking modes make every request wait for herd", f)
		}
	}

	b := readFile(t, "kubeadm-clusterconfiguration.yaml")
	var kc kubeadmConfig
	if err := yaml.UnmarshalStrict(b, &kc); err != nil {
		t.Fatalf("kubeadm-clusterconfiguration.yaml: %v", err)
	}
	if kc.APIVersion != "kubeadm.k8s.io/v1beta4" || kc.Kind != "ClusterConfiguration" {
		t.Errorf("kubeadm snippet is %s %s, want kubeadm.k8s.io/v1beta4 ClusterConfiguration", kc.APIVersion, kc.Kind)
	}
	var kubeadmFlags []string
	for _, a := range kc.APIServer.ExtraArgs {
		kubeadmFlags = append(kubeadmFlags, "--"+a.Name+"="+a.Value)
	}
	if !slices.Equal(kubeadmFlags, flags) {
		t.Errorf("kubeadm extraArgs and static-pod flags differ:\nkubeadm: %v\npod:     %v", kubeadmFlags, flags)
	}

	if len(kc.APIServer.ExtraVolumes) != 1 {
		t.Fatalf("kubeadm snippet: %d extraVolumes, want 1", len(kc.APIServer.ExtraVolumes))
	}
	v := kc.APIServer.ExtraVolumes[0]
	if v.HostPath != herdDir || v.MountPath != herdDir || !v.ReadOnly || v.PathType != "Directory" {
		t.Errorf("kubeadm volume %+v: want %s mounted read-only at the same path", v, herdDir)
	}
	c := pod.Spec.Containers[0]
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != herdDir || !c.VolumeMounts[0].ReadOnly ||
		len(pod.Spec.Volumes) != 1 || pod.Spec.Volumes[0].HostPath == nil || pod.Spec.Volumes[0].HostPath.Path != herdDir ||
		pod.Spec.Volumes[0].Name != c.VolumeMounts[0].Name {
		t.Errorf("static pod must mount hostPath %s read-only at the same path: %+v %+v", herdDir, c.VolumeMounts, pod.Spec.Volumes)
	}

	podText, _ := os.ReadFile("kube-apiserver-static-pod.yaml")
	readme := readFile(t, "README.md")
	for _, f := range append([]string{"--audit-log-path=/var/log/kubernetes/audit/audit.log"}, logFileFlags...) {
		if !strings.Contains(string(podText), "# - "+f) {
			t.Errorf("static pod snippet does not show the log-file alternative %s", f)
		}
		if !strings.Contains(string(readme), f) {
			t.Errorf("README.md does not show the log-file alternative %s", f)
		}
		name, value, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		if !strings.Contains(string(b), "# - name: "+name+"\n  #   value: ") || !strings.Contains(string(b), value) {
			t.Errorf("kubeadm snippet does not show the log-file alternative %s", f)
		}
	}
}

// TestWebhookKubeconfig: the webhook kubeconfig loads as client-go loads it,
// points at herd's https /audit path, and authenticates with a client
// certificate from files under the mounted directory (files, so that
// client-go reloads them when they are rotated).
func TestWebhookKubeconfig(t *testing.T) {
	b := readFile(t, "audit-webhook-kubeconfig.yaml")
	cfg, err := clientcmd.Load(b)
	if err != nil {
		t.Fatalf("audit-webhook-kubeconfig.yaml: %v", err)
	}
	// Resolved the way client-go resolves it, without reading the files
	// (they exist only on control-plane nodes).
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.Clusters[ctx.Cluster] == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
		t.Fatalf("current-context %q does not resolve to a cluster and a user", cfg.CurrentContext)
	}
	cluster, user := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
	if !strings.HasPrefix(cluster.Server, "https://") || !strings.HasSuffix(cluster.Server, ":10381/audit") {
		t.Errorf("server %s: want https://...:10381/audit (herd's audit listener)", cluster.Server)
	}
	for what, p := range map[string]string{"certificate-authority": cluster.CertificateAuthority, "client-certificate": user.ClientCertificate, "client-key": user.ClientKey} {
		if !strings.HasPrefix(p, herdDir+"/") {
			t.Errorf("%s %q: want a file under %s, the directory the snippets mount", what, p, herdDir)
		}
	}
	if len(user.ClientCertificateData)+len(user.ClientKeyData)+len(cluster.CertificateAuthorityData) > 0 ||
		user.Token != "" || user.TokenFile != "" || user.Exec != nil || cluster.InsecureSkipTLSVerify {
		t.Errorf("want file-based client certificate authentication only, with server verification")
	}
}
