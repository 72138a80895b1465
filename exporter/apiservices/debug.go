package apiservices

import (
	"net/http"
	"time"

	"github.com/herd-k8s/herd/internal/webserver"
)

// DebugPage is what /debug/apiservices serves.
type DebugPage struct {
	Synced        bool              `json:"synced"`
	ProbeInterval string            `json:"probeInterval"`
	ProbeTimeout  string            `json:"probeTimeout"`
	APIServices   []DebugAPIService `json:"apiservices"`
}

// DebugAPIService is everything herd knows about one APIService.
type DebugAPIService struct {
	Name    string `json:"name"`
	Group   string `json:"group"`
	Version string `json:"version"`
	// Local APIServices are served by kube-apiserver itself and not probed.
	Local     bool            `json:"local"`
	Service   *DebugService   `json:"service,omitempty"`
	Available *DebugCondition `json:"available,omitempty"`
	Endpoints *DebugEndpoints `json:"endpoints,omitempty"`
	Backends  []Backend       `json:"backends,omitempty"`
	LastProbe *ProbeResult    `json:"lastProbe,omitempty"`
	Probes    uint64          `json:"probes"`
	// Failures counts failed probes by reason.
	Failures map[string]uint64 `json:"failures,omitempty"`
}

// DebugService is the APIService's spec.service.
type DebugService struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Port      int32  `json:"port,omitempty"`
}

// DebugCondition is the APIService's Available condition.
type DebugCondition struct {
	Status             string    `json:"status"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// DebugEndpoints counts the Service's endpoints.
type DebugEndpoints struct {
	Ready    int `json:"ready"`
	NotReady int `json:"notReady"`
}

// Debug returns the page /debug/apiservices serves.
func (v *View) Debug() DebugPage {
	page := DebugPage{
		Synced:        v.Synced(),
		ProbeInterval: v.opts.ProbeInterval.String(),
		ProbeTimeout:  v.opts.ProbeTimeout.String(),
		APIServices:   []DebugAPIService{},
	}
	for _, a := range v.list() {
		d := DebugAPIService{Name: a.Name, Group: a.Spec.Group, Version: a.Spec.Version, Local: a.Spec.Service == nil}
		if c := availableCondition(a); c != nil {
			d.Available = &DebugCondition{Status: string(c.Status), Reason: c.Reason, Message: c.Message, LastTransitionTime: c.LastTransitionTime.Time}
		}
		if s := a.Spec.Service; s != nil {
			d.Service = &DebugService{Namespace: s.Namespace, Name: s.Name}
			if s.Port != nil {
				d.Service.Port = *s.Port
			}
			if backends, known := v.backends(serviceKey(a)); known {
				d.Endpoints = &DebugEndpoints{}
				for _, b := range backends {
					if b.Ready {
						d.Endpoints.Ready++
					} else {
						d.Endpoints.NotReady++
					}
				}
				d.Backends = backends
			}
		}
		v.mu.Lock()
		if p, ok := v.probes[a.Name]; ok {
			last := p.last
			d.LastProbe = &last
			d.Probes = p.count
			d.Failures = make(map[string]uint64, len(p.failures))
			for r, n := range p.failures {
				d.Failures[r] = n
			}
		}
		v.mu.Unlock()
		page.APIServices = append(page.APIServices, d)
	}
	return page
}

// DebugHandler serves /debug/apiservices: every APIService with its
// condition, service, endpoints, backends (pod, node, IP), last probe and
// failure counts, as JSON.
func (v *View) DebugHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		webserver.WriteJSON(w, v.Debug())
	})
}
