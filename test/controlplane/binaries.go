package controlplane

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/herd-k8s/herd/test/proc"
)

// Binaries are the paths of the control-plane executables.
type Binaries struct {
	APIServer string
	Etcd      string
	// ControllerManager is kube-controller-manager, which only tests that
	// ask for a controller need (Options.Controllers).
	ControllerManager string
}

// BinDir is where `make controlplane` caches the binaries for Version:
// $HERD_BIN_DIR if set, else ${XDG_CACHE_HOME:-$HOME/.cache}/herd/bin/<Version>.
// It lives outside the work tree so that fresh clones reuse one build.
func BinDir() string {
	if d := os.Getenv("HERD_BIN_DIR"); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "herd", "bin", Version)
}

// FindBinaries locates the cached kube-apiserver and etcd. When they are
// missing the error says how to build them; tests fail on it, never skip.
func FindBinaries() (Binaries, error) {
	dir := BinDir()
	b := Binaries{APIServer: filepath.Join(dir, "kube-apiserver"), Etcd: filepath.Join(dir, "etcd"), ControllerManager: filepath.Join(dir, "kube-controller-manager")}
	for _, p := range []string{b.APIServer, b.Etcd} {
		if err := executable(p); err != nil {
			return b, err
		}
	}
	return b, nil
}

// executable says how to build p when it is missing.
func executable(p string) error {
	if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%w: %s is missing; run `make controlplane` to build kube-apiserver %s, etcd, kubemark's hollow node, kube-controller-manager and etcdutl from Go modules into %s (about 10 minutes on 2 cores the first time)", proc.ErrMissingBinary, p, Version, filepath.Dir(p))
	}
	return nil
}
