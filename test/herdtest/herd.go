package herdtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// RepoRoot is the directory of herd's go.mod, found upwards from the
// working directory: tests run in their package's directory and the tools
// from anywhere inside the repository.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find the herd repository: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/herd-k8s/herd\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find the herd repository: no go.mod of github.com/herd-k8s/herd above the working directory; run from inside the repository")
		}
		dir = parent
	}
}

// BuildHerd builds cmd/herd into dir and returns the binary's path.
func BuildHerd(ctx context.Context, dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "herd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/herd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/herd: %w\n%s", err, out)
	}
	return bin, nil
}

var built struct {
	sync.Mutex
	dir, bin string
}

// HerdBinary builds cmd/herd the first time it is called in this process
// and returns the same binary after: the responder runs as processes (a
// test kills its leader), and one build serves every test of a test
// binary. RemoveHerdBinary deletes it (Main does, for a test binary). A
// failed build is tried again by the next call.
func HerdBinary(ctx context.Context) (string, error) {
	built.Lock()
	defer built.Unlock()
	if built.bin != "" {
		return built.bin, nil
	}
	dir, err := os.MkdirTemp("", "herd-bin-")
	if err != nil {
		return "", fmt.Errorf("build herd: %w", err)
	}
	bin, err := BuildHerd(ctx, dir)
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	built.dir, built.bin = dir, bin
	return bin, nil
}

// RemoveHerdBinary deletes what HerdBinary built.
func RemoveHerdBinary() {
	built.Lock()
	defer built.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	built.dir, built.bin = "", ""
}

// Main runs a test binary's tests and then removes the herd binary they
// built: func TestMain(m *testing.M) { os.Exit(herdtest.Main(m)) }.
func Main(m *testing.M) int {
	code := m.Run()
	RemoveHerdBinary()
	return code
}

// PrintReport writes a load tool's report: indented JSON, or its Print.
func PrintReport(w io.Writer, rep interface{ Print(io.Writer) }, asJSON bool) {
	if !asJSON {
		rep.Print(w)
		return
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep)
}
