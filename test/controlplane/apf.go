package controlplane

import (
	"context"
	"fmt"
	"io"
	"net/http"

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
