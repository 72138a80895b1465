package main

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// No Docker engine runs on the machines that test herd, so these tests hold
// the Dockerfile to its promises by reading it (SPEC §6: multi-stage, static
// binary, distroless non-root, no shell) and by building the binary exactly
// as its builder stage does.

// repoRoot is where the Dockerfile and Makefile live.
const repoRoot = "../.."

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int    // 1-based line of its first line
	cmd  string // upper case: FROM, RUN, ...
	args string
}

type stage struct {
	from  instruction
	image string // the FROM image, without --platform
	name  string // AS name
	ins   []instruction
}

// parseDockerfile splits a Dockerfile into stages. It handles what this
// Dockerfile uses: comments and parser directives, backslash continuations
// (also across comment lines inside a continued instruction, as BuildKit does).
func parseDockerfile(t *testing.T, text string) []stage {
	t.Helper()
	var ins []instruction
	var cur *instruction
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if strings.HasPrefix(line, "#") || (line == "" && cur == nil) {
			continue
		}
		cont := strings.HasSuffix(line, "\\")
		line = strings.TrimSuffix(line, "\\")
		if cur == nil {
			cmd, args, _ := strings.Cut(line, " ")
			cur = &instruction{line: i + 1, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		} else {
			cur.args += " " + line
		}
		if !cont {
			cur.args = strings.Join(strings.Fields(cur.args), " ")
			ins = append(ins, *cur)
			cur = nil
		}
	}
	if cur != nil {
		t.Fatalf("Dockerfile:%d: continuation runs past the end of the file", cur.line)
	}
	var stages []stage
	for _, in := range ins {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--platform=") })
			s := stage{from: in, image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile:%d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	return stages
}

func readRepoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var xFlag = regexp.MustCompile(`-X (\S+)\.(\w+)=`)

// makefileLDFlags are the -X variables and -s -w of the Makefile's build target.
func makefileLDFlags(t *testing.T) (vars []string, stripped bool) {
	t.Helper()
	mk := strings.ReplaceAll(readRepoFile(t, "Makefile"), "\\\n", " ")
	var vpkg, ldflags string
	for _, l := range strings.Split(mk, "\n") {
		if v, ok := strings.CutPrefix(l, "VPKG"); ok {
			vpkg = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":="))
		}
		if v, ok := strings.CutPrefix(l, "LDFLAGS"); ok {
			ldflags = strings.ReplaceAll(v, "$(VPKG)", vpkg)
		}
	}
	if vpkg == "" || ldflags == "" {
		t.Fatal("Makefile: no VPKG or LDFLAGS")
	}
	for _, m := range xFlag.FindAllStringSubmatch(ldflags, -1) {
		vars = append(vars, m[1]+"."+m[2])
	}
	return vars, strings.Contains(ldflags, "-s -w")
}

// builderRun is the builder stage's RUN that builds herd, and its -ldflags.
func builderRun(t *testing.T, s stage) (run, ldflags string) {
	t.Helper()
	for _, in := range s.ins {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			m := regexp.MustCompile(`-ldflags "([^"]*)"`).FindStringSubmatch(in.args)
			if m == nil {
				t.Fatalf("Dockerfile:%d: go build without -ldflags \"...\"", in.line)
			}
			return in.args, m[1]
		}
	}
	t.Fatal("Dockerfile: the builder stage has no RUN ... go build")
	return "", ""
}

func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, readRepoFile(t, "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s); want a builder and a final stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	// Builder: Go 1.26, a static, reproducible build with version information.
	if !strings.HasPrefix(build.image, "golang:1.26") || build.name == "" {
		t.Errorf("builder stage is FROM %s AS %q; want golang:1.26 with a name", build.image, build.name)
	}
	run, ldflags := builderRun(t, build)
	for _, want := range []string{"CGO_ENABLED=0", "go build", "-trimpath", "./cmd/herd", "-o /out/herd"} {
		if !strings.Contains(run, want) {
			t.Errorf("builder RUN lacks %q: %s", want, run)
		}
	}
	wantVars, stripped := makefileLDFlags(t)
	var gotVars []string
	for _, m := range xFlag.FindAllStringSubmatch(ldflags, -1) {
		gotVars = append(gotVars, m[1]+"."+m[2])
	}
	if !slices.Equal(gotVars, wantVars) || len(wantVars) == 0 {
		t.Errorf("-ldflags -X variables differ from the Makefile's build target:\nDockerfile: %v\nMakefile:   %v", gotVars, wantVars)
	}
	if stripped != strings.HasPrefix(ldflags, "-s -w") {
		t.Errorf("-ldflags %q: -s -w differs from the Makefile", ldflags)
	}

	// Final: distroless static, non-root, no shell, nothing run in it.
	if final.image != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("final stage is FROM %s; want gcr.io/distroless/static-debian12:nonroot", final.image)
	}
	var user, entrypoint string
	var exposed, labels []string
	for _, in := range final.ins {
		switch in.cmd {
		case "RUN", "SHELL", "ONBUILD", "ADD":
			t.Errorf("Dockerfile:%d: %s in the final stage (it has no shell; copy files from the builder)", in.line, in.cmd)
		case "COPY":
			if !strings.HasPrefix(in.args, "--from="+build.name+" ") {
				t.Errorf("Dockerfile:%d: the final stage copies only from the builder: COPY %s", in.line, in.args)
			}
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "LABEL":
			for _, m := range regexp.MustCompile(`(org\.opencontainers\.image\.[a-z.]+)=`).FindAllStringSubmatch(in.args, -1) {
				labels = append(labels, m[1])
			}
		}
	}
	if user != "65532:65532" {
		t.Errorf("final USER = %q; want 65532:65532 (distroless nonroot, numeric so Kubernetes' runAsNonRoot can check it)", user)
	}
	if entrypoint != `["/herd"]` {
		t.Errorf("ENTRYPOINT %s; want the exec form [\"/herd\"] (there is no shell)", entrypoint)
	}
	for _, port := range []string{"10380", "10381", "10382"} {
		if !slices.Contains(exposed, port) {
			t.Errorf("EXPOSE lacks %s (have %v)", port, exposed)
		}
	}
	for _, l := range []string{"title", "description", "source", "version", "revision", "created"} {
		if !slices.Contains(labels, "org.opencontainers.image."+l) {
			t.Errorf("no LABEL org.opencontainers.image.%s", l)
		}
	}

	// make image passes every build argument the Dockerfile declares (the
	// platform ones come from BuildKit).
	mk := readRepoFile(t, "Makefile")
	for _, s := range stages {
		for _, in := range s.ins {
			name, _, _ := strings.Cut(in.args, "=")
			if in.cmd != "ARG" || name == "TARGETOS" || name == "TARGETARCH" {
				continue
			}
			if !strings.Contains(mk, "--build-arg "+name+"=") {
				t.Errorf("make image does not pass --build-arg %s", name)
			}
		}
	}
}

// TestDockerignoreKeepsSources: every package `go build ./cmd/herd` needs
// (and its embedded files) is in the build context.
func TestDockerignoreKeepsSources(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(readRepoFile(t, ".dockerignore"), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	// excluded knows only the two pattern shapes .dockerignore uses; a new
	// shape fails here rather than being checked wrongly.
	excluded := func(rel string) bool {
		for _, p := range patterns {
			switch {
			case strings.HasPrefix(p, "**/"):
				if ok, _ := filepath.Match(strings.TrimPrefix(p, "**/"), filepath.Base(rel)); ok {
					return true
				}
			case !strings.ContainsAny(p, "*?[!"):
				if rel == p || strings.HasPrefix(rel, p+"/") {
					return true
				}
			default:
				t.Fatalf(".dockerignore pattern %q: this test understands only paths and **/GLOB", p)
			}
		}
		return false
	}
	cmd := exec.Command(goTool(), "list", "-deps", "-f", `{{if not .Standard}}{{.Dir}}{{range .EmbedFiles}} {{$.Dir}}/{{.}}{{end}}{{end}}`, "./cmd/herd")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	needed := []string{"go.mod", "go.sum", "Dockerfile"}
	for _, f := range strings.Fields(string(out)) {
		if rel, err := filepath.Rel(root, f); err == nil && !strings.HasPrefix(rel, "..") {
			needed = append(needed, filepath.ToSlash(rel))
		}
	}
	if !slices.Contains(needed, "manifests/control-plane/audit-policy.yaml") {
		t.Fatalf("go list did not report the embedded audit policy: %v", needed)
	}
	for _, rel := range needed {
		if excluded(rel) {
			t.Errorf(".dockerignore excludes %s, which go build ./cmd/herd needs", rel)
		}
	}
}

// TestStaticBuild builds herd with the Dockerfile's own flags and checks the
// result is statically linked (it must run on distroless/static, which has
// no libc and no dynamic loader) and carries the version it was given.
func TestStaticBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds herd (a minute with a cold build cache)")
	}
	stages := parseDockerfile(t, readRepoFile(t, "Dockerfile"))
	run, ldflags := builderRun(t, stages[0])
	if !strings.Contains(run, "-trimpath") || !strings.Contains(run, "CGO_ENABLED=0") {
		t.Fatalf("builder RUN is not a static -trimpath build: %s", run)
	}
	args := map[string]string{
		"VERSION": "9.8.7-test", "REVISION": "cafe123", "BRANCH": "image-test",
		"BUILD_USER": "tester@herd", "BUILD_DATE": "20260101-00:00:00",
	}
	ldflags = regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(ldflags, func(m string) string {
		v, ok := args[m[2:len(m)-1]]
		if !ok {
			t.Fatalf("-ldflags uses ${%s}, which this test does not set", m[2:len(m)-1])
		}
		return v
	})
	bin := filepath.Join(t.TempDir(), "herd")
	cmd := exec.Command(goTool(), "build", "-trimpath", "-ldflags", ldflags, "-o", bin, "./cmd/herd")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("%s is not ELF: %v", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v program header: it is dynamically linked", p.Type)
		}
	}
	for _, name := range []string{".interp", ".dynamic"} {
		if f.Section(name) != nil {
			t.Errorf("binary has a %s section: it is dynamically linked", name)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary imports shared libraries %v", libs)
	}

	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, out)
	}
	for _, want := range []string{`version 9\.8\.7-test`, `branch: image-test`, `revision: cafe123`, `build user:\s+tester@herd`, `build date:\s+20260101-00:00:00`} {
		if !regexp.MustCompile(want).Match(out) {
			t.Errorf("herd version does not match %s:\n%s", want, out)
		}
	}
	// -trimpath: no path of the build machine in the binary.
	if abs, _ := filepath.Abs(repoRoot); abs != "" {
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(abs+"/")) {
			t.Errorf("binary contains the build directory %s: not built with -trimpath", abs)
		}
	}
}

// goTool is the go command of the toolchain running the tests.
func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
