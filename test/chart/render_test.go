package chart

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	exporterconfig "github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/internal/webauth"
	responderpolicy "github.com/herd-k8s/herd/responder/policy"
	"github.com/herd-k8s/herd/test/herdtest"
)

// TestLint runs helm lint --strict on the default values and on the values
// that turn every optional part on.
func TestLint(t *testing.T) {
	for _, args := range [][]string{
		{"lint", "--strict", chartDir},
		{"lint", "--strict", chartDir, "-f", allOnValues},
	} {
		if out, err := helm(t, args...); err != nil {
			t.Errorf("%v\n%s", err, out)
		}
	}
}

// TestChartFilesMatchRules keeps the chart's copies of the mixin's generated
// files identical to rules/ (Helm reads only files inside the chart).
func TestChartFilesMatchRules(t *testing.T) {
	for src, dst := range map[string]string{
		"../../rules/prometheus_alerts.yaml":   chartDir + "/files/prometheus_alerts.yaml",
		"../../rules/prometheus_rules.yaml":    chartDir + "/files/prometheus_rules.yaml",
		"../../rules/dashboards_out/herd.json": chartDir + "/files/herd.json",
	} {
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatalf("%v (run make chart-sync)", err)
		}
		if string(got) != string(want) {
			t.Errorf("%s differs from %s: run make chart-sync", dst, src)
		}
	}
}

// TestSchemaRejects checks that values.schema.json and the templates' own
// checks refuse bad values with a message that names the value and what is
// wrong with it.
func TestSchemaRejects(t *testing.T) {
	cases := []struct {
		set  []string
		want string
	}{
		{[]string{"exporter.replicas=two"}, "at '/exporter/replicas': got string, want integer"},
		{[]string{"responder.config.dryRun=maybe"}, "at '/responder/config/dryRun': got string, want boolean"},
		{[]string{"exporter.audit.port=70000"}, "at '/exporter/audit/port': maximum: got 70,000, want 65,535"},
		{[]string{"exporter.audit.tls.mode=selfsigned"}, "at '/exporter/audit/tls/mode': value must be one of 'generate', 'secret', 'certManager', 'none'"},
		{[]string{"exporter.replica=2"}, "at '/exporter': additional properties 'replica' not allowed"},
		{[]string{"responder.config.actions.isolate.maxManagedFlowSchemas=0"}, "at '/responder/config/actions/isolate/maxManagedFlowSchemas': minimum: got 0, want 1"},
		{[]string{"exporter.ghostGrace=5 minutes"}, "at '/exporter/ghostGrace'"},
		{[]string{"log.level=verbose"}, "at '/log/level': value must be one of 'debug', 'info', 'warn', 'error'"},
		// Combinations the schema cannot express: the templates fail with a message.
		{[]string{"exporter.audit.bearerToken.enabled=false"}, "exporter.audit: no authentication: enable bearerToken, set clientCA.secretName, or set insecure: true"},
		{[]string{"exporter.audit.tls.mode=none"}, "exporter.audit.tls.mode none serves plain http"},
		{[]string{"exporter.audit.tls.mode=certManager"}, "exporter.audit.tls.certManager.issuerRef.name is required"},
		{[]string{"exporter.audit.tls.mode=secret"}, "exporter.audit.tls.secretName is required when exporter.audit.tls.mode is secret"},
		{[]string{"responder.web.bearerToken.enabled=false"}, "responder.web: no authentication"},
		{[]string{"responder.config.prometheus.url="}, "at '/responder/config/prometheus/url': '' does not match pattern '^https?://'"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.set, ","), func(t *testing.T) {
			r := defaults
			r.set = c.set
			if msg := renderErr(t, r); !strings.Contains(msg, c.want) {
				t.Errorf("error does not say %q:\n%s", c.want, msg)
			}
		})
	}
	// And the values those cases break are fine when right.
	r := defaults
	r.set = []string{"exporter.replicas=2", "exporter.audit.bearerToken.enabled=false", "exporter.audit.clientCA.secretName=ca", "exporter.audit.tls.mode=secret", "exporter.audit.tls.secretName=tls"}
	render(t, r)
}

// TestLabels checks Helm's conventional labels on every object.
func TestLabels(t *testing.T) {
	for _, r := range []release{defaults, {name: "herd", namespace: "herd", valuesFiles: []string{allOnValues}}} {
		for _, o := range render(t, r) {
			l := o.GetLabels()
			for _, k := range []string{"helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "app.kubernetes.io/component"} {
				if l[k] == "" {
					t.Errorf("%s %s has no label %s", o.GetKind(), o.GetName(), k)
				}
			}
			if l["app.kubernetes.io/managed-by"] != "Helm" {
				t.Errorf("%s %s: app.kubernetes.io/managed-by=%q", o.GetKind(), o.GetName(), l["app.kubernetes.io/managed-by"])
			}
		}
	}
}

// chartAppVersion reads appVersion from Chart.yaml.
func chartAppVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(chartDir + "/Chart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.AppVersion
}

func deployment(t *testing.T, objs []*unstructured.Unstructured, name string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	into(t, find(t, objs, "Deployment", "", name), d)
	return d
}

// TestDeployments checks the pod specs: image, hardening, probes, the
// responder's rollout strategy and leader election wiring.
func TestDeployments(t *testing.T) {
	objs := render(t, defaults)
	exporter := deployment(t, objs, "herd-exporter")
	responder := deployment(t, objs, "herd-responder")
	wantImage := "ghcr.io/herd-k8s/herd:" + chartAppVersion(t)

	for _, d := range []*appsv1.Deployment{exporter, responder} {
		ps := d.Spec.Template.Spec
		if len(ps.Containers) != 1 {
			t.Fatalf("%s: %d containers", d.Name, len(ps.Containers))
		}
		c := ps.Containers[0]
		if c.Image != wantImage {
			t.Errorf("%s: image %s, want %s (tag = the chart's appVersion)", d.Name, c.Image, wantImage)
		}
		psc, sc := ps.SecurityContext, c.SecurityContext
		if psc == nil || sc == nil {
			t.Fatalf("%s: no security context", d.Name)
		}
		checks := map[string]bool{
			"pod runAsNonRoot":                 psc.RunAsNonRoot != nil && *psc.RunAsNonRoot,
			"pod runAsUser 65532":              psc.RunAsUser != nil && *psc.RunAsUser == 65532,
			"pod runAsGroup 65532":             psc.RunAsGroup != nil && *psc.RunAsGroup == 65532,
			"pod seccomp RuntimeDefault":       psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault,
			"readOnlyRootFilesystem":           sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem,
			"allowPrivilegeEscalation false":   sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation,
			"capabilities drop ALL, add none":  sc.Capabilities != nil && reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) && len(sc.Capabilities.Add) == 0,
			"container seccomp RuntimeDefault": sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault,
			"readiness /readyz":                c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path == "/readyz",
			"liveness /healthz":                c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path == "/healthz",
			"memory request and limit":         !c.Resources.Requests.Memory().IsZero() && !c.Resources.Limits.Memory().IsZero(),
			"cpu request":                      !c.Resources.Requests.Cpu().IsZero(),
			"service account token mounted":    ps.AutomountServiceAccountToken != nil && *ps.AutomountServiceAccountToken,
		}
		for what, ok := range checks {
			if !ok {
				t.Errorf("%s: want %s", d.Name, what)
			}
		}
		for _, m := range c.VolumeMounts {
			if m.SubPath != "" {
				t.Errorf("%s: volume %s mounted with subPath: rotated Secrets would never reach herd", d.Name, m.Name)
			}
		}
	}
	for _, sa := range ofKind(objs, "ServiceAccount") {
		if v, ok, _ := unstructured.NestedBool(sa.Object, "automountServiceAccountToken"); !ok || v {
			t.Errorf("ServiceAccount %s mounts tokens by default; pods must opt in", sa.GetName())
		}
	}

	// The responder: only the leader is ready, so the rollout must not wait for new pods to be
	// ready (maxSurge 0, maxUnavailable 100%).
	if *responder.Spec.Replicas != 2 {
		t.Errorf("responder replicas %d, want 2", *responder.Spec.Replicas)
	}
	ru := responder.Spec.Strategy.RollingUpdate
	if responder.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
		ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 0 || ru.MaxUnavailable == nil || *ru.MaxUnavailable != intstr.FromString("100%") {
		t.Errorf("responder strategy %+v, want RollingUpdate maxSurge 0 maxUnavailable 100%%", responder.Spec.Strategy)
	}
	rc := responder.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range rc.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if env["POD_NAME"] != "metadata.name" || env["POD_NAMESPACE"] != "metadata.namespace" {
		t.Errorf("responder env %v, want POD_NAME and POD_NAMESPACE from the downward API", env)
	}
	args := strings.Join(rc.Args, " ")
	for _, want := range []string{"responder", "--web.listen-address=:10382", "--config=/etc/herd/config/responder.yaml",
		"--web.bearer-token-file=/etc/herd/web-token/token", "--leader-election.name=herd-responder",
		"--leader-election.namespace=$(POD_NAMESPACE)", "--leader-election.identity=$(POD_NAME)", "--shutdown-timeout=30s"} {
		if !strings.Contains(args, want) {
			t.Errorf("responder args %q lack %s", args, want)
		}
	}
	if g := responder.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= 30*time.Second {
		t.Errorf("responder terminationGracePeriodSeconds %v must exceed --shutdown-timeout=30s", g)
	}
	ea := strings.Join(exporter.Spec.Template.Spec.Containers[0].Args, " ")
	for _, want := range []string{"exporter", "--web.listen-address=:10380", "--audit.listen-address=:10381",
		"--audit.web-config.file=/etc/herd/config/audit-web.yml", "--audit.bearer-token-file=/etc/herd/audit-token/token",
		"--metrics-server.namespace=kube-system"} {
		if !strings.Contains(ea, want) {
			t.Errorf("exporter args %q lack %s", ea, want)
		}
	}
	if eu := exporter.Spec.Strategy.RollingUpdate; eu == nil || eu.MaxUnavailable.IntValue() != 0 {
		t.Errorf("exporter strategy %+v, want maxUnavailable 0 (a ready audit endpoint throughout)", exporter.Spec.Strategy)
	}

	// The responder's PDB is off by default (values.yaml explains why); the exporter's is on.
	if len(ofKind(objs, "PodDisruptionBudget")) != 1 {
		t.Errorf("default PodDisruptionBudgets: %d, want 1 (the exporter's)", len(ofKind(objs, "PodDisruptionBudget")))
	}
	find(t, objs, "PodDisruptionBudget", "herd", "herd-exporter")

	// --no-kube: no token, no RBAC.
	r := defaults
	r.set = []string{"exporter.noKube=true", "responder.enabled=false"}
	nk := render(t, r)
	if d := deployment(t, nk, "herd-exporter"); *d.Spec.Template.Spec.AutomountServiceAccountToken {
		t.Error("exporter with noKube mounts a service account token")
	}
	for _, o := range nk {
		if strings.HasPrefix(o.GetAPIVersion(), "rbac.authorization.k8s.io/") {
			t.Errorf("exporter with noKube renders %s %s", o.GetKind(), o.GetName())
		}
	}
}

// rbacObjects decodes the RBAC objects of a manifest or render, keyed by
// kind/namespace/name. Labels are not compared: the chart adds Helm's.
func rbacObjects(t *testing.T, objs []*unstructured.Unstructured) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, o := range objs {
		key := o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
		switch o.GetKind() {
		case "ClusterRole":
			var r rbacv1.ClusterRole
			into(t, o, &r)
			out[key] = r.Rules
		case "Role":
			var r rbacv1.Role
			into(t, o, &r)
			out[key] = r.Rules
		case "ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			into(t, o, &b)
			out[key] = []any{b.RoleRef, b.Subjects}
		case "RoleBinding":
			var b rbacv1.RoleBinding
			into(t, o, &b)
			out[key] = []any{b.RoleRef, b.Subjects}
		}
	}
	return out
}

// TestRBACMatchesManifests: with the release named herd in namespace herd the
// chart grants exactly what manifests/rbac/exporter.yaml and responder.yaml
// grant (those files are what test/e2e runs the exporter and responder with).
func TestRBACMatchesManifests(t *testing.T) {
	var want []*unstructured.Unstructured
	for _, f := range []string{"../../manifests/rbac/exporter.yaml", "../../manifests/rbac/responder.yaml"} {
		want = append(want, decodeFile(t, f)...)
	}
	wantRBAC := rbacObjects(t, want)
	gotRBAC := rbacObjects(t, render(t, defaults))
	for key, w := range wantRBAC {
		g, ok := gotRBAC[key]
		if !ok {
			t.Errorf("the chart does not render %s", key)
			continue
		}
		if !reflect.DeepEqual(g, w) {
			gy, _ := yaml.Marshal(g)
			wy, _ := yaml.Marshal(w)
			t.Errorf("%s differs from manifests/rbac:\nchart:\n%s\nmanifest:\n%s", key, gy, wy)
		}
	}
	for key := range gotRBAC {
		if _, ok := wantRBAC[key]; !ok {
			t.Errorf("the chart renders %s, which manifests/rbac does not have", key)
		}
	}
}

// slotNames are the FlowSchema names the responder's ClusterRole pins its
// writes to.
func slotNames(t *testing.T, objs []*unstructured.Unstructured, role string) []string {
	t.Helper()
	var r rbacv1.ClusterRole
	into(t, find(t, objs, "ClusterRole", "", role), &r)
	for _, rule := range r.Rules {
		if slices.Contains(rule.Resources, "flowschemas") && slices.Contains(rule.Verbs, "create") {
			return rule.ResourceNames
		}
	}
	t.Fatalf("ClusterRole %s has no create rule for flowschemas", role)
	return nil
}

// TestRBACSlotsFromValues: the FlowSchema slots follow
// responder.config.actions.*.maxManagedFlowSchemas and
// measurement.maxFlowSchemas, the numbers the responder reads from the same
// config; the owner of the measurement schemas is the responder's
// ClusterRole, readable by name; the metrics-server grant follows
// metricsServer.
func TestRBACSlotsFromValues(t *testing.T) {
	r := defaults
	r.set = []string{"responder.config.actions.isolate.maxManagedFlowSchemas=25", "responder.config.actions.quarantine.maxManagedFlowSchemas=1",
		"responder.config.actions.protect.maxManagedFlowSchemas=2",
		"responder.config.measurement.maxFlowSchemas=2", "metricsServer.namespace=monitoring", "metricsServer.name=ms"}
	objs := render(t, r)
	var want []string
	for i := 1; i <= 25; i++ {
		want = append(want, "herd-isolate-"+strconv.Itoa(i))
	}
	want = append(want, "herd-protect-1", "herd-protect-2", "herd-quarantine-1", "herd-measure-1", "herd-measure-2")
	if got := slotNames(t, objs, "herd-responder"); !reflect.DeepEqual(got, want) {
		t.Errorf("slots %v, want %v", got, want)
	}
	for _, tc := range []struct {
		set         []string
		name, owner string
	}{
		{nil, "herd-responder", "herd-responder"},
		{[]string{"fullnameOverride=ops-herd"}, "ops-herd-responder", "ops-herd-responder"},
		{[]string{"responder.config.measurement.ownerClusterRole=installed-elsewhere"}, "herd-responder", "installed-elsewhere"},
	} {
		r := defaults
		r.set = tc.set
		objs := render(t, r)
		rc, err := responderpolicy.Parse([]byte(configMapData(t, objs, tc.name, "responder.yaml")))
		if err != nil {
			t.Fatal(err)
		}
		if rc.Measurement.OwnerClusterRole != tc.owner {
			t.Errorf("%v: measurement.ownerClusterRole %q, want %q", tc.set, rc.Measurement.OwnerClusterRole, tc.owner)
		}
		var cr rbacv1.ClusterRole
		into(t, find(t, objs, "ClusterRole", "", tc.name), &cr)
		if !slices.ContainsFunc(cr.Rules, func(r rbacv1.PolicyRule) bool {
			return slices.Equal(r.Resources, []string{"clusterroles"}) && slices.Equal(r.Verbs, []string{"get"}) && slices.Equal(r.ResourceNames, []string{tc.owner})
		}) {
			t.Errorf("%v: the responder's ClusterRole cannot get its owner %s: %+v", tc.set, tc.owner, cr.Rules)
		}
	}
	var ms rbacv1.Role
	into(t, find(t, objs, "Role", "monitoring", "herd-responder-metrics-server"), &ms)
	if len(ms.Rules) != 1 || !reflect.DeepEqual(ms.Rules[0].ResourceNames, []string{"ms"}) {
		t.Errorf("metrics-server Role rules %+v, want get/patch pinned to ms", ms.Rules)
	}
	find(t, objs, "Role", "monitoring", "herd-exporter-metrics-server")
	if a := strings.Join(deployment(t, objs, "herd-exporter").Spec.Template.Spec.Containers[0].Args, " "); !strings.Contains(a, "--metrics-server.namespace=monitoring") {
		t.Errorf("exporter args %q lack --metrics-server.namespace=monitoring", a)
	}
}

// configMapData returns key of a rendered ConfigMap.
func configMapData(t *testing.T, objs []*unstructured.Unstructured, name, key string) string {
	t.Helper()
	v, ok, err := unstructured.NestedString(find(t, objs, "ConfigMap", "", name).Object, "data", key)
	if err != nil || !ok {
		t.Fatalf("ConfigMap %s has no %s (%v)", name, key, err)
	}
	return v
}

// TestRenderedConfigsLoad feeds the files the chart renders to herd's own
// loaders: the responder's and exporter's strict config parsers and
// exporter-toolkit's web config validation (with the mounted paths moved into
// a temp dir that holds real certificates).
func TestRenderedConfigsLoad(t *testing.T) {
	for _, r := range []release{defaults, {name: "herd", namespace: "herd", valuesFiles: []string{allOnValues}}} {
		allOn := len(r.valuesFiles) > 0
		objs := render(t, r)
		rc, err := responderpolicy.Parse([]byte(configMapData(t, objs, "herd-responder", "responder.yaml")))
		if err != nil {
			t.Errorf("responder config (all-on %v): %v", allOn, err)
		} else if rc.DryRun == allOn {
			t.Errorf("responder config (all-on %v): dryRun %v", allOn, rc.DryRun)
		}
		if allOn {
			if !rc.Measurement.Enabled || rc.Measurement.Schemas() != 4 || rc.Measurement.OwnerClusterRole != "herd-responder" {
				t.Errorf("all-on responder config: measurement %+v", rc.Measurement)
			}
			if rc.Actions.Isolate.MaxManagedFlowSchemas != 3 || rc.Actions.Quarantine.MaxManagedFlowSchemas != 2 {
				t.Errorf("all-on responder config: maxManagedFlowSchemas %d/%d, want 3/2", rc.Actions.Isolate.MaxManagedFlowSchemas, rc.Actions.Quarantine.MaxManagedFlowSchemas)
			}
			ec, err := exporterconfig.Parse([]byte(configMapData(t, objs, "herd-exporter", "exporter.yaml")))
			if err != nil {
				t.Errorf("exporter config: %v", err)
			} else if ec.Accounting.TopK != 30 {
				t.Errorf("exporter config topK %d, want 30", ec.Accounting.TopK)
			}
		} else if _, ok, _ := unstructured.NestedString(find(t, objs, "ConfigMap", "", "herd-exporter").Object, "data", "exporter.yaml"); ok {
			t.Error("default values render an exporter --config; {} should mean herd's defaults")
		}

		dir := t.TempDir()
		writeCerts(t, dir)
		audit := configMapData(t, objs, "herd-exporter", "audit-web.yml")
		got, err := webauth.ListenerAuth(writeRebased(t, dir, "audit-web.yml", audit))
		if err != nil {
			t.Errorf("audit web config (all-on %v): %v\n%s", allOn, err, audit)
		}
		if want := map[bool]string{false: "", true: "verified client certificate"}[allOn]; got != want {
			t.Errorf("audit web config (all-on %v) requires %q, want %q", allOn, got, want)
		}
		if allOn {
			for cm, want := range map[string]string{"herd-exporter": "verified client certificate and basic auth", "herd-responder": ""} {
				got, err := webauth.ListenerAuth(writeRebased(t, dir, cm+"-web.yml", configMapData(t, objs, cm, "web.yml")))
				if err != nil || got != want {
					t.Errorf("%s web.yml requires %q (%v), want %q", cm, got, err, want)
				}
			}
		}
	}
}

// writeRebased writes a web config whose /etc/herd/... paths point into dir.
func writeRebased(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(content, "/etc/herd/", dir+"/")), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeCerts puts a self-signed certificate where the rebased web configs
// look for the mounted Secrets.
func writeCerts(t *testing.T, dir string) {
	t.Helper()
	crt, key, err := herdtest.SelfSigned(herdtest.Cert{CommonName: "herd", DNSNames: []string{"herd"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"audit-tls", "web-tls", "audit-client-ca", "web-client-ca"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
		files := map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": crt}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, sub, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// mixinJobs reads the job selectors from rules/config.libsonnet.
func mixinJobs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../rules/config.libsonnet")
	if err != nil {
		t.Fatal(err)
	}
	var jobs []string
	for _, m := range regexp.MustCompile(`herd(?:Exporter|Responder)Selector:\s*'job="([^"]+)"'`).FindAllSubmatch(b, -1) {
		jobs = append(jobs, string(m[1]))
	}
	if len(jobs) != 2 {
		t.Fatalf("rules/config.libsonnet: found job selectors %v, want the exporter's and the responder's", jobs)
	}
	return jobs
}

// TestMonitoring checks the optional prometheus-operator objects and the
// dashboard: the job names the mixin selects, honorLabels, and the mixin's
// files carried verbatim (no Helm template evaluation of {{ $labels }}).
func TestMonitoring(t *testing.T) {
	// Another release name: the job names must not follow it.
	objs := render(t, release{name: "prod", namespace: "observability", valuesFiles: []string{allOnValues}})
	var jobs []string
	for _, sm := range ofKind(objs, "ServiceMonitor") {
		eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if len(eps) != 1 {
			t.Fatalf("ServiceMonitor %s: %d endpoints", sm.GetName(), len(eps))
		}
		ep := eps[0].(map[string]any)
		if ep["honorLabels"] != true {
			t.Errorf("ServiceMonitor %s: honorLabels %v, want true (herd's node/namespace/service/pod labels)", sm.GetName(), ep["honorLabels"])
		}
		for _, rl := range ep["relabelings"].([]any) {
			m := rl.(map[string]any)
			if m["targetLabel"] == "job" {
				jobs = append(jobs, m["replacement"].(string))
			}
		}
	}
	slices.Sort(jobs)
	if want := mixinJobs(t); !reflect.DeepEqual(jobs, want) {
		t.Errorf("ServiceMonitors set job to %v; the mixin selects %v", jobs, want)
	}

	for name, file := range map[string]string{"prod-herd-alerts": "prometheus_alerts.yaml", "prod-herd-rules": "prometheus_rules.yaml"} {
		b, err := os.ReadFile("../../rules/" + file)
		if err != nil {
			t.Fatal(err)
		}
		var want map[string]any
		if err := yaml.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		got, _, _ := unstructured.NestedMap(find(t, objs, "PrometheusRule", "observability", name).Object, "spec")
		if !reflect.DeepEqual(got, want) {
			t.Errorf("PrometheusRule %s differs from rules/%s", name, file)
		}
	}
	b, err := os.ReadFile("../../rules/dashboards_out/herd.json")
	if err != nil {
		t.Fatal(err)
	}
	dash := find(t, objs, "ConfigMap", "observability", "prod-herd-dashboard")
	if got, _, _ := unstructured.NestedString(dash.Object, "data", "herd.json"); got != strings.TrimRight(string(b), "\n") {
		t.Error("dashboard ConfigMap differs from rules/dashboards_out/herd.json")
	}
	if dash.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("dashboard labels %v lack grafana_dashboard=1", dash.GetLabels())
	}
}

// TestAuditTLS checks the certificate names for the audit Service and that a
// generated certificate is signed by the CA handed to the apiserver.
func TestAuditTLS(t *testing.T) {
	r := defaults
	r.set = []string{"exporter.audit.service.clusterIP=10.96.0.50", "exporter.audit.tls.dnsNames={audit.example.com}"}
	objs := render(t, r)
	sec := find(t, objs, "Secret", "herd", "herd-audit-tls")
	data := map[string][]byte{}
	for _, k := range []string{"tls.crt", "ca.crt"} {
		s, _, _ := unstructured.NestedString(sec.Object, "data", k)
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		data[k] = b
	}
	leaf, ca := parseCert(t, data["tls.crt"]), parseCert(t, data["ca.crt"])
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		t.Errorf("audit certificate is not signed by ca.crt: %v", err)
	}
	for _, name := range []string{"herd-exporter-audit.herd.svc", "herd-exporter-audit.herd.svc.cluster.local", "audit.example.com"} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("audit certificate: %v", err)
		}
	}
	if err := leaf.VerifyHostname("10.96.0.50"); err != nil {
		t.Errorf("audit certificate lacks the pinned clusterIP: %v", err)
	}
	var svc corev1.Service
	into(t, find(t, objs, "Service", "herd", "herd-exporter-audit"), &svc)
	if svc.Spec.ClusterIP != "10.96.0.50" {
		t.Errorf("audit Service clusterIP %q", svc.Spec.ClusterIP)
	}
	// Two replicas: each apiserver sticks to one (docs/scaling.md).
	r.set = append(r.set, "exporter.replicas=2")
	into(t, find(t, render(t, r), "Service", "herd", "herd-exporter-audit"), &svc)
	if svc.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
		t.Errorf("audit Service with 2 replicas: sessionAffinity %q, want ClientIP", svc.Spec.SessionAffinity)
	}
}

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM in %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
