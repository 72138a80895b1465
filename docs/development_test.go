// Package docs holds the tests of the developer documentation that are
// not runbooks: the SPEC → tests table of development.md must name tests
// that exist, with commands that run them.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// tableRow is one row of development.md's SPEC → tests table.
var tableRow = regexp.MustCompile("^\\| (§[0-9.]+) \\| ([^|]+) \\| (.+) \\| `go test (\\./[^ `]+/)(?: -run '([^']+)')?` \\|$")

// namedTest is one `Test/step` (pkg) mention in the test column.
var namedTest = regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]*(?:/[^`]+)?)`(?: \\(([a-z0-9/-]+)\\))?")

// testFuncs and stepNames are what a package's test files define: its
// top-level test functions, and the literal text of its t.Run names.
var (
	testFunc = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]*)\(`)
	stepName = regexp.MustCompile(`t\.Run\(("[^\n]*"), func`)
	// joined is how a name built in code ("the "+name+" feed") is read:
	// the expression stands for one word.
	joined = regexp.MustCompile(`"\s*\+[^"]*\+\s*"`)
)

type pkgTests struct {
	funcs []string
	steps []string
}

func load(t *testing.T, dir string) pkgTests {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("..", dir, "*_test.go"))
	if len(files) == 0 {
		t.Fatalf("%s has no tests", dir)
	}
	var p pkgTests
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range testFunc.FindAllSubmatch(b, -1) {
			p.funcs = append(p.funcs, string(m[1]))
		}
		for _, m := range stepName.FindAllSubmatch(b, -1) {
			name := strings.Trim(joined.ReplaceAllString(string(m[1]), "X"), `"`)
			// go test's own rewriting of subtest names: spaces become _.
			p.steps = append(p.steps, strings.ReplaceAll(name, " ", "_"))
		}
	}
	return p
}

// has reports whether a -run pattern (or a test name, exact) names a test
// of p: its first element matches a test function and each further element
// a step (a t.Run name), as go test matches them.
func (p pkgTests) has(pattern string, exact bool) bool {
	top, steps, _ := strings.Cut(pattern, "/")
	re, err := regexp.Compile(top)
	if err != nil {
		return false
	}
	found := false
	for _, f := range p.funcs {
		found = found || (exact && f == top) || (!exact && re.MatchString(f))
	}
	if !found || steps == "" {
		return found
	}
	for _, step := range strings.Split(steps, "/") {
		re, err := regexp.Compile(step)
		if err != nil {
			return false
		}
		ok := false
		for _, s := range p.steps {
			ok = ok || re.MatchString(s)
		}
		if !ok {
			return false
		}
	}
	return true
}

func TestSPECTableNamesRealTests(t *testing.T) {
	b, err := os.ReadFile("development.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "### SPEC → the tests that prove it")
	if !ok {
		t.Fatal("development.md has no SPEC → tests table")
	}
	pkgs := map[string]pkgTests{}
	get := func(dir string) pkgTests {
		if _, ok := pkgs[dir]; !ok {
			pkgs[dir] = load(t, dir)
		}
		return pkgs[dir]
	}
	rows, sections := 0, map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "| §") {
			if rows > 0 && !strings.HasPrefix(line, "|") {
				break
			}
			continue
		}
		m := tableRow.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("row does not end in a `go test ./pkg/ [-run 'pattern']` command: %s", line)
			continue
		}
		rows++
		sections[strings.SplitN(m[1], ".", 2)[0]] = true
		dir, pattern := strings.Trim(m[4], "./"), m[5]
		if pattern != "" && !get(dir).has(pattern, false) {
			t.Errorf("%s: `go test ./%s/ -run '%s'` runs no test", m[1], dir, pattern)
		}
		// "`A`, `B` (pkg)": a package names the tests since the last one;
		// tests without one are test/e2e's.
		var pending []string
		check := func(pkg string) {
			for _, name := range pending {
				if !get(pkg).has(name, true) {
					t.Errorf("%s: %s is not a test of %s", m[1], name, pkg)
				}
			}
			pending = nil
		}
		for _, n := range namedTest.FindAllStringSubmatch(m[3], -1) {
			pending = append(pending, n[1])
			if n[2] != "" {
				check(n[2])
			}
		}
		check("test/e2e")
	}
	for _, s := range []string{"§2", "§3", "§4", "§5", "§6", "§7", "§8"} {
		if !sections[s] {
			t.Errorf("the table has no row for SPEC %s", s)
		}
	}
	if rows < 30 {
		t.Errorf("the table has %d rows; it was cut short?", rows)
	}
}
