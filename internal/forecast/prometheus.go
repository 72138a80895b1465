package forecast

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// DefaultAPIServerSelector selects the apiservers' series (the mixin's
// _config.apiserverSelector default).
const DefaultAPIServerSelector = `job="apiserver"`

// MemoryBaseline is the window of the apiserver's median memory
// (_config.apiserverMemoryBaseline).
const MemoryBaseline = "1h"

// FromPrometheus reads what the forecast needs of the apiservers from a
// Prometheus that scrapes them (selected by selector, a PromQL matcher
// list such as job="apiserver"), as the mixin's recording rules read it:
// stored bytes and objects per resource, the largest apiserver's memory
// and its median over MemoryBaseline, the number of apiservers, and each
// priority level's seats. limitBytes is the apiserver's memory limit (0:
// the budget follows from its median memory). Across clusters the largest
// value wins: point it at one cluster's Prometheus, or select one.
func FromPrometheus(ctx context.Context, url, selector string, limitBytes float64, timeout time.Duration, rt http.RoundTripper) (Cluster, error) {
	client, err := api.NewClient(api.Config{Address: url, RoundTripper: rt})
	if err != nil {
		return Cluster{}, fmt.Errorf("prometheus %s: %w", url, err)
	}
	p := promv1.NewAPI(client)
	query := func(q string) (model.Vector, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		v, _, _, err := p.Query(ctx, q, time.Now())
		if err != nil {
			return nil, fmt.Errorf("prometheus %s: query %s: %w", url, q, err)
		}
		vec, ok := v.(model.Vector)
		if !ok {
			return nil, fmt.Errorf("prometheus %s: query %s: answer of type %s, want a vector", url, q, v.Type())
		}
		return vec, nil
	}
	c := Cluster{StoredBytes: map[string]float64{}, Objects: map[string]float64{}, LimitSeats: map[string]float64{}, NominalSeats: map[string]float64{}}
	for _, m := range []struct {
		metric string
		into   map[string]float64
	}{{"apiserver_resource_size_estimate_bytes", c.StoredBytes}, {"apiserver_resource_objects", c.Objects}} {
		// -1: the apiserver could not count (left out, as the rules do).
		vec, err := query(fmt.Sprintf("max by (group, resource) (%s{%s} >= 0)", m.metric, selector))
		if err != nil {
			return Cluster{}, err
		}
		for _, s := range vec {
			r := string(s.Metric["resource"])
			if g := string(s.Metric["group"]); g != "" {
				r += "." + g
			}
			m.into[r] = max(m.into[r], float64(s.Value))
		}
	}
	if len(c.StoredBytes) == 0 {
		return Cluster{}, fmt.Errorf("prometheus %s has no apiserver_resource_size_estimate_bytes{%s}: it must scrape the apiservers (kube-apiserver ≥ 1.34)", url, selector)
	}
	scalar := func(q string) (float64, error) {
		vec, err := query(q)
		if err != nil {
			return 0, err
		}
		if len(vec) == 0 {
			return 0, fmt.Errorf("prometheus %s: %s returned nothing", url, q)
		}
		return float64(vec[0].Value), nil
	}
	var median float64
	var errs []error
	for _, v := range []struct {
		q    string
		into *float64
	}{
		{fmt.Sprintf("max(process_resident_memory_bytes{%s})", selector), &c.MemoryBytes},
		{fmt.Sprintf("max(quantile_over_time(0.5, process_resident_memory_bytes{%s}[%s]))", selector, MemoryBaseline), &median},
	} {
		var err error
		if *v.into, err = scalar(v.q); err != nil {
			errs = append(errs, err)
		}
	}
	n, err := scalar(fmt.Sprintf("max(count by (cluster) (process_resident_memory_bytes{%s}))", selector))
	if err != nil {
		errs = append(errs, err)
	}
	c.APIServers = max(int(n), 1)
	if err := errors.Join(errs...); err != nil {
		return Cluster{}, err
	}
	c.BudgetBytes = Budget(limitBytes, median)
	current := map[string]float64{}
	for _, m := range []struct {
		metric string
		into   map[string]float64
	}{{"apiserver_flowcontrol_current_limit_seats", current}, {"apiserver_flowcontrol_nominal_limit_seats", c.NominalSeats}} {
		vec, err := query(fmt.Sprintf(`max by (priority_level) (%s{%s, priority_level!="exempt"})`, m.metric, selector))
		if err != nil {
			return Cluster{}, err
		}
		for _, s := range vec {
			m.into[string(s.Metric["priority_level"])] = float64(s.Value)
		}
	}
	// A level's seats at once: the larger of its current and nominal
	// limit (a storm takes back what it lends).
	for pl, n := range c.NominalSeats {
		c.LimitSeats[pl] = max(current[pl], n)
	}
	return c, nil
}
