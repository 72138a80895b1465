package apiservices

import (
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
)

// Status is what herd exports about one non-local APIService, read at
// scrape time: exporter/collector turns it into the herd_apiservice_*
// series.
type Status struct {
	Name string
	// Namespace and Service are the APIService's spec.service.
	Namespace, Service string
	// Available is the availability controller's Available=True.
	Available bool
	// BackendsKnown is set once the Service's EndpointSlices are watched:
	// then Ready and NotReady count its endpoints (once per pod) and
	// Backends lists them, distinct (pod, node), at most MaxBackends.
	BackendsKnown   bool
	Ready, NotReady int
	Backends        []Backend
	// Probe is nil until the first probe.
	Probe *ProbeCounts
}

// ProbeCounts are an APIService's cumulative probe results.
type ProbeCounts struct {
	Count uint64
	Sum   float64
	// Buckets are cumulative, by upper bound in seconds.
	Buckets map[float64]uint64
	// Failures has every reason of Reasons, 0 included.
	Failures map[string]uint64
}

// Status lists the non-local APIServices (those with spec.service; local
// ones are served by kube-apiserver itself); nothing until synced.
func (v *View) Status() []Status {
	if !v.Synced() {
		return nil
	}
	var out []Status
	for _, a := range v.list() {
		if a.Spec.Service == nil {
			continue
		}
		key := serviceKey(a)
		st := Status{Name: a.Name, Namespace: key.Namespace, Service: key.Name}
		if c := availableCondition(a); c != nil && c.Status == apiregistrationv1.ConditionTrue {
			st.Available = true
		}
		if backends, known := v.backends(key); known {
			st.BackendsKnown = true
			seen := map[[2]string]bool{}
			for _, b := range backends {
				if b.Ready {
					st.Ready++
				} else {
					st.NotReady++
				}
				id := [2]string{b.Pod, b.Node}
				if seen[id] || len(seen) >= v.opts.MaxBackends {
					continue
				}
				seen[id] = true
				st.Backends = append(st.Backends, b)
			}
		}
		v.mu.Lock()
		if p, ok := v.probes[a.Name]; ok {
			pc := &ProbeCounts{Count: p.count, Sum: p.sum, Buckets: p.cumulative(), Failures: make(map[string]uint64, len(Reasons))}
			for _, r := range Reasons {
				pc.Failures[r] = p.failures[r]
			}
			st.Probe = pc
		}
		v.mu.Unlock()
		out = append(out, st)
	}
	return out
}
