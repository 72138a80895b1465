package chart

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/internal/webauth"
	"github.com/herd-k8s/herd/test/herdtest"
)

const installDoc = "../../docs/install.md"

// yamlBlocks returns the ```yaml fenced blocks of a Markdown file.
func yamlBlocks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// block returns the one YAML block of docs/install.md containing marker.
func block(t *testing.T, marker string) string {
	t.Helper()
	var found []string
	for _, b := range yamlBlocks(t, installDoc) {
		if strings.Contains(b, marker) {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		t.Fatalf("docs/install.md: %d yaml blocks contain %q, want 1", len(found), marker)
	}
	return found[0]
}

// TestInstallDocValues renders the chart with the values docs/install.md
// shows, so the guide cannot drift from the schema.
func TestInstallDocValues(t *testing.T) {
	typical := herdtest.WriteTemp(t, "herd-values.yaml", block(t, "# herd-values.yaml"))
	mtls := herdtest.WriteTemp(t, "mtls.yaml", block(t, "secretName: herd-audit-client-ca"))
	objs := render(t, release{name: "herd", namespace: "herd", valuesFiles: []string{typical, mtls}})
	a := strings.Join(deployment(t, objs, "herd-exporter").Spec.Template.Spec.Containers[0].Args, " ")
	if strings.Contains(a, "--audit.bearer-token-file") {
		t.Errorf("the guide's client-certificate values still configure a bearer token: %s", a)
	}
	if got := configMapData(t, objs, "herd-exporter", "audit-web.yml"); !strings.Contains(got, "client_allowed_sans:\n    - kube-apiserver-audit") {
		t.Errorf("the guide's client-certificate values render an audit web config without the apiserver's SAN:\n%s", got)
	}
	if len(ofKind(objs, "ServiceMonitor")) != 2 || len(ofKind(objs, "PrometheusRule")) != 2 {
		t.Error("the guide's typical values render no ServiceMonitors or PrometheusRules")
	}
}

// TestInstallDocMetricsAuth renders the guide's values that put /metrics
// and the debug pages behind client certificates and basic auth.
func TestInstallDocMetricsAuth(t *testing.T) {
	vals := herdtest.WriteTemp(t, "metrics-auth-values.yaml", block(t, "# metrics-auth-values.yaml"))
	objs := render(t, release{name: "herd", namespace: "herd", valuesFiles: []string{vals}, set: []string{"serviceMonitor.enabled=true"}})
	dir := t.TempDir()
	writeCerts(t, dir)
	if got, err := webauth.ListenerAuth(writeRebased(t, dir, "web.yml", configMapData(t, objs, "herd-exporter", "web.yml"))); err != nil ||
		got != "verified client certificate and basic auth" {
		t.Errorf("the guide's values: the metrics listener requires %q (%v)", got, err)
	}
	if p := deployment(t, objs, "herd-exporter").Spec.Template.Spec.Containers[0].ReadinessProbe; p == nil || p.TCPSocket == nil {
		t.Errorf("the guide's values: readiness probe %+v, want a TCP check", p)
	}
	sm := find(t, objs, "ServiceMonitor", "herd", "herd-exporter")
	if eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints"); len(eps) != 1 || eps[0].(map[string]any)["basicAuth"] == nil || eps[0].(map[string]any)["scheme"] != "https" {
		t.Errorf("the guide's values: exporter ServiceMonitor endpoints %v, want https with basicAuth", eps)
	}
}

// TestInstallDocAlertmanager checks the guide's Alertmanager route and
// receiver with amtool, and that they point at the Service and Secret the
// chart creates.
func TestInstallDocAlertmanager(t *testing.T) {
	snippet := block(t, "- name: herd\n  webhook_configs:")
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(snippet), &cfg); err != nil {
		t.Fatalf("the guide's Alertmanager snippet: %v", err)
	}
	// Make it a whole configuration: a root receiver for everything else.
	cfg["route"].(map[string]any)["receiver"] = "people"
	cfg["receivers"] = append(cfg["receivers"].([]any), map[string]any{"name": "people"})
	full, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	amtool, err := exec.LookPath("amtool")
	if err != nil {
		t.Fatalf("amtool (Debian package prometheus-alertmanager) is missing: run `make deps`: %v", err)
	}
	if out, err := exec.Command(amtool, "check-config", herdtest.WriteTemp(t, "alertmanager.yml", string(full))).CombinedOutput(); err != nil {
		t.Fatalf("amtool check-config on the guide's snippet: %v\n%s\n%s", err, out, full)
	}

	wc := cfg["receivers"].([]any)[0].(map[string]any)["webhook_configs"].([]any)[0].(map[string]any)
	if wc["url"] != "http://herd-responder.herd.svc:10382/alerts" || wc["send_resolved"] != true || wc["max_alerts"] != float64(0) {
		t.Errorf("webhook config %v: want the responder Service's /alerts, send_resolved true, max_alerts 0", wc)
	}
	objs := render(t, defaults)
	find(t, objs, "Service", "herd", "herd-responder")
	find(t, objs, "Secret", "herd", "herd-responder-token")
	route := cfg["route"].(map[string]any)["routes"].([]any)[0].(map[string]any)
	matchers := strings.Join(func() []string {
		var s []string
		for _, m := range route["matchers"].([]any) {
			s = append(s, m.(string))
		}
		return s
	}(), " ")
	for _, alert := range []string{"KubeAPIErrorBudgetBurn", "HerdStaleKubelet", "HerdRelistStorm", "HerdGhostNodeClient", "HerdMetricsServerTokenAuth", "HerdKubeletTokenReviewStorm"} {
		if !strings.Contains(matchers, alert) {
			t.Errorf("the guide's route does not send %s to herd", alert)
		}
	}
	if route["continue"] != true {
		t.Error("the guide's herd route must continue, so people are still notified")
	}
}

// TestInstallDocScrapeConfig checks the guide's Prometheus scrape jobs: job
// names the mixin selects, honor_labels, and the chart's Service and port
// names. (promtool cannot check them here: Debian builds Prometheus without
// kubernetes_sd_configs.)
func TestInstallDocScrapeConfig(t *testing.T) {
	var cfg struct {
		ScrapeConfigs []struct {
			JobName             string           `json:"job_name"`
			HonorLabels         bool             `json:"honor_labels"`
			KubernetesSDConfigs []map[string]any `json:"kubernetes_sd_configs"`
			RelabelConfigs      []struct {
				SourceLabels []string `json:"source_labels"`
				Regex        string   `json:"regex"`
				Action       string   `json:"action"`
			} `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.UnmarshalStrict([]byte(block(t, "scrape_configs:")), &cfg); err != nil {
		t.Fatalf("the guide's scrape config: %v", err)
	}
	objs := render(t, defaults)
	ports := map[string]string{}
	for _, svc := range ofKind(objs, "Service") {
		p, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
		ports[svc.GetName()] = p[0].(map[string]any)["name"].(string)
	}
	var jobs []string
	for _, sc := range cfg.ScrapeConfigs {
		jobs = append(jobs, sc.JobName)
		if !sc.HonorLabels {
			t.Errorf("job %s: honor_labels must be true", sc.JobName)
		}
		if len(sc.KubernetesSDConfigs) != 1 || sc.KubernetesSDConfigs[0]["role"] != "endpoints" {
			t.Errorf("job %s: want one kubernetes_sd_config with role endpoints", sc.JobName)
		}
		want := sc.JobName + ";" + ports[sc.JobName]
		if len(sc.RelabelConfigs) != 1 || sc.RelabelConfigs[0].Action != "keep" || sc.RelabelConfigs[0].Regex != want ||
			strings.Join(sc.RelabelConfigs[0].SourceLabels, ",") != "__meta_kubernetes_service_name,__meta_kubernetes_endpoint_port_name" {
			t.Errorf("job %s: relabel_configs %+v, want keep %s (the chart's Service and port)", sc.JobName, sc.RelabelConfigs, want)
		}
	}
	if want := mixinJobs(t); strings.Join(jobs, ",") != strings.Join(want, ",") {
		t.Errorf("the guide's scrape jobs %v; the mixin selects %v", jobs, want)
	}
}

// TestInstallDocLinks checks the guide's relative links and anchors.
func TestInstallDocLinks(t *testing.T) {
	b, err := os.ReadFile(installDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(doc, -1) {
		a := strings.ToLower(m[1])
		a = regexp.MustCompile(`[^a-z0-9 -]`).ReplaceAllString(a, "")
		anchors[strings.ReplaceAll(a, " ", "-")] = true
	}
	for _, m := range regexp.MustCompile(`\]\(([^)]+)\)`).FindAllStringSubmatch(doc, -1) {
		link := m[1]
		switch {
		case strings.HasPrefix(link, "http://"), strings.HasPrefix(link, "https://"):
		case strings.HasPrefix(link, "#"):
			if !anchors[link[1:]] {
				t.Errorf("docs/install.md links to #%s, which is no heading", link[1:])
			}
		default:
			path, _, _ := strings.Cut(link, "#")
			if _, err := os.Stat(filepath.Join(filepath.Dir(installDoc), path)); err != nil {
				t.Errorf("docs/install.md links to %s: %v", link, err)
			}
		}
	}
}
