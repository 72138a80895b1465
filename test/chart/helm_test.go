// Package chart tests the Helm chart in manifests/charts/herd: what it renders (helm lint and
// template with the values users set), what its values schema refuses, and what the rendered
// objects do on a real kube-apiserver (Pod Security admission, RBAC, server-side apply).
//
// Helm is built from Go modules by `make helm` (test/tools/helm) and cached outside the work
// tree; the tests fail, never skip, when it is missing.
package chart

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/test/herdtest"
)

const (
	chartDir     = "../../manifests/charts/herd"
	allOnValues  = chartDir + "/ci/all-on-values.yaml"
	helmToolsMod = "../tools/helm/go.mod"
	// kubeVersion is what helm template assumes for Capabilities (the test control plane's).
	kubeVersion = "1.36.3"
)

// helmBinary finds the Helm that `make helm` builds: $HERD_HELM, else
// ${HERD_HELM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/herd/bin}/helm-<version pinned in test/tools/helm/go.mod>.
func helmBinary() (string, error) {
	if p := os.Getenv("HERD_HELM"); p != "" {
		return p, checkExecutable(p)
	}
	mod, err := os.ReadFile(helmToolsMod)
	if err != nil {
		return "", fmt.Errorf("read the pinned Helm version: %w", err)
	}
	m := regexp.MustCompile(`(?m)^(?:require)?\s*helm\.sh/helm/v3 (v\S+)`).FindSubmatch(mod)
	if m == nil {
		return "", fmt.Errorf("%s does not require helm.sh/helm/v3", helmToolsMod)
	}
	dir := os.Getenv("HERD_HELM_DIR")
	if dir == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("find the Helm cache: %w", err)
			}
			cache = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(cache, "herd", "bin")
	}
	p := filepath.Join(dir, "helm-"+string(m[1]))
	return p, checkExecutable(p)
}

func checkExecutable(p string) error {
	if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
		return fmt.Errorf("helm is missing at %s: run `make helm` to build it from Go modules (test/tools/helm, about a minute on 2 cores)", p)
	}
	return nil
}

// helm runs the pinned Helm with args and returns its stdout; a non-zero exit
// is an error carrying stderr.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := helmBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	// Helm must not read the developer's kubeconfig or repositories.
	cmd.Env = append(os.Environ(), "KUBECONFIG=/dev/null", "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// release says what to render: release name, namespace, values files and --set flags.
type release struct {
	name, namespace string
	valuesFiles     []string
	set             []string
}

// defaults is the release docs/install.md installs: herd in namespace herd.
var defaults = release{name: "herd", namespace: "herd"}

func (r release) args() []string {
	args := []string{"template", r.name, chartDir, "--namespace", r.namespace, "--kube-version", kubeVersion}
	for _, f := range r.valuesFiles {
		args = append(args, "-f", f)
	}
	for _, s := range r.set {
		args = append(args, "--set", s)
	}
	return args
}

// render runs helm template and decodes every object it prints.
func render(t *testing.T, r release) []*unstructured.Unstructured {
	t.Helper()
	out, err := helm(t, r.args()...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll([]byte(out))
	if err != nil {
		t.Fatalf("helm template %s: %v", r.name, err)
	}
	if len(objs) == 0 {
		t.Fatalf("helm template %s rendered nothing", r.name)
	}
	return objs
}

// renderErr runs helm template expecting it to fail, and returns the error text.
func renderErr(t *testing.T, r release) string {
	t.Helper()
	_, err := helm(t, r.args()...)
	if err == nil {
		t.Fatalf("helm %s succeeded; want an error", strings.Join(r.args(), " "))
	}
	return err.Error()
}

// decodeFile is decodeAll of the file at path; it fails t if it cannot.
func decodeFile(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return objs
}

// decodeAll splits a multi-document YAML stream into objects, skipping
// documents that hold only comments.
func decodeAll(data []byte) ([]*unstructured.Unstructured, error) {
	docs, err := herdtest.YAMLDocuments(data)
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	for n, doc := range docs {
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("document %d: %w\n%s", n+1, err, doc)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs, nil
}

// find returns the rendered object of kind and name (and namespace, when
// given), failing the test when there is none.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name && (namespace == "" || o.GetNamespace() == namespace) {
			return o
		}
	}
	t.Fatalf("no %s %s/%s rendered", kind, namespace, name)
	return nil
}

func ofKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// into converts an unstructured object into a typed one, strictly: a field
// the type does not know is an error (a misspelt key in a template).
func into(t *testing.T, o *unstructured.Unstructured, typed any) {
	t.Helper()
	b, err := o.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, typed); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
}
