package controlplane

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/herd-k8s/herd/test/herdtest"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"k8s.io/client-go/rest"
)

// Served is how API Priority and Fairness served one request, from the
// apiserver's response headers.
type Served struct {
	Status int
	// FlowSchemaUID and PriorityLevelUID are the UIDs of the FlowSchema
	// that matched the request and of its priority level
	// (X-Kubernetes-PF-FlowSchema-UID, X-Kubernetes-PF-PriorityLevel-UID).
	FlowSchemaUID, PriorityLevelUID string
}

// ServedBy GETs uri as cfg and says which FlowSchema and priority level
// served it.
func ServedBy(ctx context.Context, cfg *rest.Config, uri string) (Served, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return Served{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+uri, nil)
	if err != nil {
		return Served{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Served{}, fmt.Errorf("GET %s: %w", uri, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return Served{Status: resp.StatusCode, FlowSchemaUID: resp.Header.Get(flowcontrolv1.ResponseHeaderMatchedFlowSchemaUID),
		PriorityLevelUID: resp.Header.Get(flowcontrolv1.ResponseHeaderMatchedPriorityLevelConfigurationUID)}, nil
}

// WaitServedBy GETs uri as cfg until the FlowSchema of UID schema serves
// it (APF takes a new schema within moments of its write) and returns how;
// it gives up after timeout with the FlowSchema that served it last.
func WaitServedBy(ctx context.Context, cfg *rest.Config, uri, schema string, timeout time.Duration) (Served, error) {
	var s Served
	err := herdtest.Poll(ctx, timeout, "FlowSchema "+schema+" to serve GET "+uri, func(ctx context.Context) error {
		var err error
		if s, err = ServedBy(ctx, cfg, uri); err != nil {
			return err
		}
		if s.FlowSchemaUID != schema {
			return fmt.Errorf("served by FlowSchema UID %q", s.FlowSchemaUID)
		}
		return nil
	})
	return s, err
}

// Request is one request a client made, as a Requests recorder saw it.
type Request struct {
	Method, Path, Query string
	Status              int
	// FlowSchemaUID is the FlowSchema APF served it with.
	FlowSchemaUID string
}

func (r Request) String() string {
	q := ""
	if r.Query != "" {
		q = "?" + r.Query
	}
	return fmt.Sprintf("%s %s%s → %d", r.Method, r.Path, q, r.Status)
}

// Requests records every request of a client but its watches (its
// informers' long-running streams): set a rest.Config's WrapTransport to
// its Wrap, and Take what was sent since the last Take.
type Requests struct{ herdtest.List[Request] }

// Wrap is a rest.Config's WrapTransport.
func (rs *Requests) Wrap(rt http.RoundTripper) http.RoundTripper { return recording{rt: rt, rs: rs} }

type recording struct {
	rt http.RoundTripper
	rs *Requests
}

func (w recording) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := w.rt.RoundTrip(r)
	if r.URL.Query().Get("watch") == "true" {
		return resp, err
	}
	s := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery}
	if resp != nil {
		s.Status, s.FlowSchemaUID = resp.StatusCode, resp.Header.Get(flowcontrolv1.ResponseHeaderMatchedFlowSchemaUID)
	}
	w.rs.Add(s)
	return resp, err
}

// WrappedRoundTripper lets client-go cancel requests through it.
func (w recording) WrappedRoundTripper() http.RoundTripper { return w.rt }
