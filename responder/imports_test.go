package responder_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsNothingFromTheExporter: the responder shares code with the
// exporter only through internal/ (SPEC §1). It walks every package under
// responder/, its tests' imports included, as the go command resolves them.
func TestImportsNothingFromTheExporter(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("this test runs `go list`; put the go command on PATH: %v", err)
	}
	cmd := exec.Command(gobin, "list", "-deps", "-test", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./responder/...")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const exporter = "github.com/herd-k8s/herd/exporter"
	pkgs := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		pkgs++
		pkg := fields[0]
		if pkg == exporter || strings.HasPrefix(pkg, exporter+"/") {
			t.Errorf("the responder depends on %s", pkg)
		}
		for _, imp := range fields[1:] {
			if imp == exporter || strings.HasPrefix(imp, exporter+"/") {
				t.Errorf("%s imports %s: move what both use to internal/", pkg, imp)
			}
		}
	}
	if pkgs < 50 {
		t.Fatalf("go list named only %d packages: the walk is broken", pkgs)
	}
}
