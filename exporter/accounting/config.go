package accounting

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/prometheus/common/model"
)

// Config bounds and tunes a Ledger. It is the `accounting` section of
// `herd exporter --config` as it is written (strict YAML, exporter/config):
// the one place each setting and its default is defined.
type Config struct {
	// Window is W: the span of the windowed signals (relisting instances,
	// top-K, TokenReview nodes, stale kubelets, ghosts' recency).
	Window model.Duration `json:"window"`
	// RelistThreshold is N: an instance relisting a resource at least N times
	// in W counts in herd_relisting_instances.
	RelistThreshold int `json:"relistThreshold"`
	// TopK is how many instances of each stream — (role, client, resource)
	// — get per-node herd_instance_relists series, so that one noisy
	// instance cannot push another client's storm out; MaxTopKStreams caps
	// how many streams have them (the busiest in the window). Flagged
	// instances (ghosts, stale kubelets) get them whatever their rank.
	TopK           int `json:"topK"`
	MaxTopKStreams int `json:"maxTopKStreams"`
	// MaxInstances caps the instance table; the least recently seen are
	// evicted first.
	MaxInstances int `json:"maxInstances"`
	// MaxResources caps distinct resource label values; the rest are "other".
	MaxResources int `json:"maxResources"`
	// StaleTooLarge and StalePodRelists are the stale-kubelet thresholds
	// within W (SPEC §3.3).
	StaleTooLarge   int `json:"staleTooLarge"`
	StalePodRelists int `json:"stalePodRelists"`
	// MaxGhostSeries and MaxStaleSeries cap the per-instance verdict series
	// (herd_ghost_instance, herd_stale_kubelet) and so the instances flagged
	// for per-node relist series, so that a mass event — every kubelet
	// stale after an etcd restore — cannot make series follow cluster size.
	// Counts are exported whole.
	MaxGhostSeries int `json:"maxGhostSeries"`
	MaxStaleSeries int `json:"maxStaleSeries"`
	// TrustedProxies are the CIDRs of proxies between node-side clients and
	// the apiserver whose X-Forwarded-For entries herd may believe: the
	// trusted source address is then the right-most sourceIPs entry that
	// is not one of them. Empty (the default): the connection's own
	// address, the last entry, is the only one trusted.
	TrustedProxies []string `json:"trustedProxies,omitempty"`
	// MaxClockSkew is how far ahead of herd's clock an event's
	// stageTimestamp may be; a later one is accounted at the receive time.
	MaxClockSkew model.Duration `json:"maxClockSkew"`
	// MaxPendingRevisionChecks caps the requests with a resourceVersion
	// waiting for the cluster view's next revision read (every
	// cluster.revisionProbeInterval), which tells whether they asked for a
	// revision the cluster never reached; beyond it requests go unchecked
	// (herd_revision_checks_dropped_total). About 40 bytes each.
	MaxPendingRevisionChecks int `json:"maxPendingRevisionChecks"`

	// The stampede forecast (issue 12). LiveWindow: an instance is live on
	// a resource (herd_stampede_instances) while it watched or relisted it
	// within this span; longer than client-go's 5–10 minute watch timeout,
	// so that an informer's re-watches keep it live. WaveWindow: an
	// instance is in a relist wave (herd_relist_wave_instances) when its
	// relist started or completed within this span. MaxSubjects caps the
	// FlowSchema subjects exported per (role, client, resource);
	// MaxStampedeSeries caps each of the three forecast families.
	LiveWindow        model.Duration `json:"liveWindow"`
	WaveWindow        model.Duration `json:"waveWindow"`
	MaxSubjects       int            `json:"maxSubjects"`
	MaxStampedeSeries int            `json:"maxStampedeSeries"`
	// SeparateStorageResources are resources (<resource>[.<group>]) whose
	// resourceVersions are not the main etcd's revision: kept in another
	// etcd (kube-apiserver --etcd-servers-overrides, usually events) or
	// served by an aggregated API server. Their resourceVersions are never
	// compared with the cluster's revision.
	SeparateStorageResources []string `json:"separateStorageResources"`
}

// DefaultConfig is what herd runs with when nothing is configured.
func DefaultConfig() Config {
	return Config{
		Window:          model.Duration(10 * time.Minute),
		RelistThreshold: 3,
		TopK:            20,
		MaxTopKStreams:  32,
		MaxInstances:    50000,
		MaxResources:    256,
		StaleTooLarge:   3,
		StalePodRelists: 6,
		MaxGhostSeries:  50,
		MaxStaleSeries:  200,
		MaxClockSkew:    model.Duration(10 * time.Second),

		MaxPendingRevisionChecks: 65536,

		LiveWindow:               model.Duration(15 * time.Minute),
		WaveWindow:               model.Duration(time.Minute),
		MaxSubjects:              20,
		MaxStampedeSeries:        1000,
		SeparateStorageResources: []string{"events", "events.events.k8s.io"},
	}
}

// Validate checks ranges; errors name the field as the config file does.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Window >= model.Duration(10*time.Second), "accounting.window %s: must be at least 10s", c.Window)
	check(c.RelistThreshold >= 1, "accounting.relistThreshold %d: must be at least 1", c.RelistThreshold)
	check(c.TopK >= 1 && c.TopK <= 1000, "accounting.topK %d: must be 1..1000 (each is a series per stream)", c.TopK)
	check(c.MaxTopKStreams >= 1 && c.MaxTopKStreams <= 1000, "accounting.maxTopKStreams %d: must be 1..1000", c.MaxTopKStreams)
	check(c.TopK*c.MaxTopKStreams <= 20000, "accounting.topK × maxTopKStreams %d: must be at most 20000 series", c.TopK*c.MaxTopKStreams)
	check(c.MaxInstances >= 100, "accounting.maxInstances %d: must be at least 100", c.MaxInstances)
	check(c.MaxResources >= 8 && c.MaxResources <= 4096, "accounting.maxResources %d: must be 8..4096", c.MaxResources)
	check(c.StaleTooLarge >= 1, "accounting.staleTooLarge %d: must be at least 1", c.StaleTooLarge)
	check(c.StalePodRelists >= 1, "accounting.stalePodRelists %d: must be at least 1", c.StalePodRelists)
	check(c.MaxGhostSeries >= 1 && c.MaxGhostSeries <= 10000, "accounting.maxGhostSeries %d: must be 1..10000", c.MaxGhostSeries)
	check(c.MaxStaleSeries >= 1 && c.MaxStaleSeries <= 10000, "accounting.maxStaleSeries %d: must be 1..10000", c.MaxStaleSeries)
	check(c.MaxClockSkew >= 0 && c.MaxClockSkew <= model.Duration(time.Hour), "accounting.maxClockSkew %s: must be 0..1h", c.MaxClockSkew)
	check(c.MaxPendingRevisionChecks >= 1 && c.MaxPendingRevisionChecks <= 1<<22, "accounting.maxPendingRevisionChecks %d: must be 1..4194304", c.MaxPendingRevisionChecks)
	check(c.LiveWindow >= model.Duration(time.Minute) && c.LiveWindow <= model.Duration(24*time.Hour),
		"accounting.liveWindow %s: must be 1m..24h (longer than the clients' watch timeout, 5-10m with client-go)", c.LiveWindow)
	check(c.WaveWindow >= model.Duration(10*time.Second) && c.WaveWindow < c.LiveWindow,
		"accounting.waveWindow %s: must be at least 10s and shorter than accounting.liveWindow (%s)", c.WaveWindow, c.LiveWindow)
	check(c.MaxSubjects >= 1 && c.MaxSubjects <= 100, "accounting.maxSubjects %d: must be 1..100", c.MaxSubjects)
	check(c.MaxStampedeSeries >= 1 && c.MaxStampedeSeries <= 20000, "accounting.maxStampedeSeries %d: must be 1..20000", c.MaxStampedeSeries)
	if _, err := c.trustedProxies(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// trustedProxies parses TrustedProxies.
func (c Config) trustedProxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range c.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("accounting.trustedProxies[%d] %q: must be a CIDR such as 10.0.0.0/8", i, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
