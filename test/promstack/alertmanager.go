package promstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// Alertmanager is a running Alertmanager owned by a test.
type Alertmanager struct {
	// URL is the base URL, e.g. http://127.0.0.1:40123.
	URL string
	// Dir holds the config, the storage and the log.
	Dir string

	server
}

// StartAlertmanager starts Alertmanager with cfgYAML as its configuration
// and returns once it is ready. It listens on a free loopback port, runs
// without HA gossip (an empty --cluster.listen-address; otherwise every
// instance would try to bind :9094 and wait to settle a cluster), and is
// stopped by t.Cleanup. A missing binary or a start failure fails the test.
func StartAlertmanager(t testing.TB, cfgYAML string) *Alertmanager {
	t.Helper()
	return startForTest(t, func(dir string) (*Alertmanager, error) { return RunAlertmanager(dir, cfgYAML) })
}

// RunAlertmanager is StartAlertmanager for a caller without a test:
// Alertmanager keeps its files in dir, and the caller stops it with Stop.
func RunAlertmanager(dir, cfgYAML string) (*Alertmanager, error) {
	bin, err := LookAlertmanager()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgPath, []byte(cfgYAML), 0o644); err != nil {
		return nil, fmt.Errorf("start alertmanager: write config: %w", err)
	}
	child, url, err := launch("alertmanager", bin, dir, func(addr string) []string {
		return []string{
			"--config.file=" + cfgPath,
			"--storage.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + addr,
			// Webhook payloads carry externalURL; make it the loopback one
			// instead of http://<hostname>:<port>.
			"--web.external-url=http://" + addr,
			"--cluster.listen-address=",
		}
	})
	if err != nil {
		return nil, err
	}
	return &Alertmanager{URL: url, Dir: dir, server: server{child}}, nil
}

// AlertmanagerAlert is an alert as Alertmanager's v2 API reports it. Only
// the fields tests look at are decoded.
type AlertmanagerAlert struct {
	Labels       model.LabelSet `json:"labels"`
	Annotations  model.LabelSet `json:"annotations"`
	StartsAt     time.Time      `json:"startsAt"`
	EndsAt       time.Time      `json:"endsAt"`
	UpdatedAt    time.Time      `json:"updatedAt"`
	Fingerprint  string         `json:"fingerprint"`
	GeneratorURL string         `json:"generatorURL"`
	Receivers    []struct {
		Name string `json:"name"`
	} `json:"receivers"`
	Status struct {
		// State is "active", "suppressed" or "unprocessed".
		State       string   `json:"state"`
		SilencedBy  []string `json:"silencedBy"`
		InhibitedBy []string `json:"inhibitedBy"`
	} `json:"status"`
}

// Alerts returns the alerts Alertmanager currently holds (GET /api/v2/alerts).
// Plain JSON keeps the go-openapi client stack out of the module.
func (am *Alertmanager) Alerts(ctx context.Context) ([]AlertmanagerAlert, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, am.URL+"/api/v2/alerts", nil)
	if err != nil {
		return nil, fmt.Errorf("alertmanager alerts: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("alertmanager alerts: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("alertmanager alerts: GET %s: %s", req.URL, resp.Status)
	}
	var alerts []AlertmanagerAlert
	if err := json.NewDecoder(resp.Body).Decode(&alerts); err != nil {
		return nil, fmt.Errorf("alertmanager alerts: decode: %w", err)
	}
	return alerts, nil
}

// PostAlerts sends alerts, a JSON array of postable alerts, to the
// Alertmanager at url through its v2 API (POST /api/v2/alerts), as
// Prometheus does; anything but 200 is an error with Alertmanager's answer.
func PostAlerts(ctx context.Context, url string, alerts []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/api/v2/alerts", bytes.NewReader(alerts))
	if err != nil {
		return fmt.Errorf("alertmanager post alerts: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("alertmanager post alerts: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("alertmanager post alerts: POST %s: %s %s", req.URL, resp.Status, b)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}
