package promstack

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// InstallHint is the part of every lookup error that tells the reader how to
// get the binaries; tests assert on it.
const InstallHint = "apt-get install prometheus prometheus-alertmanager"

// LookPrometheus returns the path of the prometheus server binary.
func LookPrometheus() (string, error) {
	return lookBinary("HERD_PROMETHEUS", "prometheus")
}

// LookAlertmanager returns the path of the Alertmanager binary. Debian names
// it prometheus-alertmanager; upstream tarballs name it alertmanager.
func LookAlertmanager() (string, error) {
	return lookBinary("HERD_ALERTMANAGER", "prometheus-alertmanager", "alertmanager")
}

// LookPromtool returns the path of promtool, shipped in Debian's prometheus
// package.
func LookPromtool() (string, error) {
	return lookBinary("HERD_PROMTOOL", "promtool")
}

// lookBinary honours the environment override strictly: when it is set and
// wrong, falling back to $PATH would hide the misconfiguration.
func lookBinary(envVar string, names ...string) (string, error) {
	if override := os.Getenv(envVar); override != "" {
		path, err := exec.LookPath(override)
		if err != nil {
			return "", fmt.Errorf("find %s: %s=%q: %w; install it with `%s` (Debian package names) or fix %s",
				names[0], envVar, override, err, InstallHint, envVar)
		}
		return path, nil
	}
	for _, name := range names {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("find %s: none of %s in $PATH and %s is unset; install it with `%s` (Debian package names) or set %s",
		names[0], strings.Join(names, ", "), envVar, InstallHint, envVar)
}
