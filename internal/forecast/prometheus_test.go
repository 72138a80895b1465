package forecast

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// promAPI answers /api/v1/query with the vectors of answers, by the
// metric name each query contains; a query it has no answer for is an
// empty vector.
func promAPI(t *testing.T, answers map[string][]map[string]any) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		q := r.Form.Get("query")
		result := []map[string]any{}
		for key, vec := range answers {
			if strings.Contains(q, key) {
				result = vec
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": "vector", "result": result}})
	}))
	t.Cleanup(s.Close)
	return s
}

func sample(v float64, labels ...string) map[string]any {
	m := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		m[labels[i]] = labels[i+1]
	}
	return map[string]any{"metric": m, "value": []any{float64(time.Now().Unix()), fmt.Sprint(v)}}
}

// TestFromPrometheus: the apiservers' metrics become the model's inputs as
// the mixin's recording rules read them: herd's resource labels, the
// larger of a level's current and nominal seats, the budget from the
// median memory (or the limit given).
func TestFromPrometheus(t *testing.T) {
	s := promAPI(t, map[string][]map[string]any{
		"apiserver_resource_size_estimate_bytes":    {sample(18e6, "resource", "pods"), sample(3e6, "resource", "endpointslices", "group", "discovery.k8s.io")},
		"apiserver_resource_objects":                {sample(2000, "resource", "pods"), sample(100, "resource", "nodes")},
		"max(process_resident_memory_bytes":         {sample(5e8)},
		"quantile_over_time":                        {sample(4e8)},
		"count by (cluster)":                        {sample(3)},
		"apiserver_flowcontrol_current_limit_seats": {sample(49, "priority_level", "workload-high"), sample(80, "priority_level", "system")},
		"apiserver_flowcontrol_nominal_limit_seats": {sample(98, "priority_level", "workload-high"), sample(74, "priority_level", "system")},
	})
	c, err := FromPrometheus(context.Background(), s.URL, DefaultAPIServerSelector, 0, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.StoredBytes["pods"] != 18e6 || c.StoredBytes["endpointslices.discovery.k8s.io"] != 3e6 || c.Objects["nodes"] != 100 {
		t.Errorf("sizes %v, objects %v", c.StoredBytes, c.Objects)
	}
	if c.MemoryBytes != 5e8 || c.APIServers != 3 || c.BudgetBytes != Budget(0, 4e8) {
		t.Errorf("memory %g, apiservers %d, budget %g", c.MemoryBytes, c.APIServers, c.BudgetBytes)
	}
	if c.LimitSeats["workload-high"] != 98 || c.LimitSeats["system"] != 80 || c.NominalSeats["system"] != 74 {
		t.Errorf("limit seats %v, nominal %v", c.LimitSeats, c.NominalSeats)
	}
	if c, err = FromPrometheus(context.Background(), s.URL, DefaultAPIServerSelector, 6e9, 5*time.Second, nil); err != nil || c.BudgetBytes != Budget(6e9, 0) {
		t.Errorf("with a limit: budget %g, %v", c.BudgetBytes, err)
	}

	empty := promAPI(t, nil)
	_, err = FromPrometheus(context.Background(), empty.URL, `job="kube-apiserver"`, 0, 5*time.Second, nil)
	if want := fmt.Sprintf(`prometheus %s has no apiserver_resource_size_estimate_bytes{job="kube-apiserver"}: it must scrape the apiservers (kube-apiserver ≥ 1.34)`, empty.URL); err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}
