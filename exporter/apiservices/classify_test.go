package apiservices

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
)

func withCondition(status apiregistrationv1.ConditionStatus, reason, message string) *apiregistrationv1.APIService {
	a := &apiregistrationv1.APIService{}
	a.Status.Conditions = []apiregistrationv1.APIServiceCondition{{Type: apiregistrationv1.Available, Status: status, Reason: reason, Message: message}}
	return a
}

// The messages are the ones the real kube-apiserver 1.36 sends (see the
// control-plane tests) or its availability controller writes.
func TestClassify(t *testing.T) {
	const discovery = `failing or missing response from https://10.244.3.7:5443/apis/projectcalico.org/v3: Get "https://10.244.3.7:5443/apis/projectcalico.org/v3": `
	cases := []struct {
		name string
		code int
		body string
		err  error
		as   *apiregistrationv1.APIService
		want string
	}{
		{name: "ok", code: 200, body: `{"kind":"APIResourceList"}`, want: ""},
		{name: "herd's own deadline", err: fmt.Errorf("Get %q: %w", "https://x/apis/g/v", context.DeadlineExceeded), want: ReasonTimeout},
		{name: "apiserver unreachable", err: errors.New(`dial tcp 127.0.0.1:6443: connect: connection refused`), want: ReasonConnection},
		{name: "apiserver certificate", err: errors.New(`tls: failed to verify certificate: x509: certificate signed by unknown authority`), want: ReasonTLS},
		{name: "aggregator discovery limit", code: 503, body: "error trying to reach service: context deadline exceeded\n", want: ReasonTimeout},
		{name: "proxy dial refused", code: 503, body: "error trying to reach service: dial tcp 10.244.3.7:5443: connect: connection refused\n", want: ReasonConnection},
		{name: "proxy dial timeout is connection", code: 503, body: "error trying to reach service: dial tcp 10.244.3.7:5443: i/o timeout\n", want: ReasonConnection},
		{name: "proxy no route", code: 503, body: "error trying to reach service: dial tcp 10.244.3.7:5443: connect: no route to host", want: ReasonConnection},
		{name: "proxy tls", code: 503, body: "error trying to reach service: tls: failed to verify certificate: x509: certificate signed by unknown authority", want: ReasonTLS},
		{name: "unavailable, no condition yet", code: 503, body: "service unavailable\n", want: ReasonHTTP5xx},
		{name: "unavailable, missing endpoints", code: 503, body: "service unavailable\n",
			as: withCondition("False", "MissingEndpoints", `endpointslices for service/calico-api in "calico-apiserver" have no addresses with port name "https"`), want: ReasonHTTP5xx},
		{name: "unavailable, controller dial timed out", code: 503, body: "service unavailable\n",
			as: withCondition("False", "FailedDiscoveryCheck", discovery+"dial tcp 10.244.3.7:5443: i/o timeout"), want: ReasonConnection},
		{name: "unavailable, controller refused", code: 503, body: "service unavailable\n",
			as: withCondition("False", "FailedDiscoveryCheck", discovery+"dial tcp 10.244.3.7:5443: connect: connection refused"), want: ReasonConnection},
		{name: "unavailable, controller awaited headers", code: 503, body: "service unavailable\n",
			as: withCondition("False", "FailedDiscoveryCheck", discovery+"net/http: request canceled (Client.Timeout exceeded while awaiting headers)"), want: ReasonTimeout},
		{name: "unavailable, controller's own 6 s guard", code: 503, body: "service unavailable\n",
			as: withCondition("False", "FailedDiscoveryCheck", "timed out waiting for https://10.244.3.7:5443/apis/projectcalico.org/v3"), want: ReasonTimeout},
		{name: "unavailable, controller tls", code: 503, body: "service unavailable\n",
			as: withCondition("False", "FailedDiscoveryCheck", discovery+"tls: failed to verify certificate: x509: certificate signed by unknown authority"), want: ReasonTLS},
		{name: "unavailable, backend said 500", code: 503, body: "service unavailable\n",
			as: withCondition("False", "FailedDiscoveryCheck", "bad status from https://10.244.3.7:5443/apis/projectcalico.org/v3: 500"), want: ReasonHTTP5xx},
		{name: "condition True but 503 body from the backend", code: 503, body: "service unavailable\n",
			as: withCondition("True", "Passed", "all checks passed"), want: ReasonHTTP5xx},
		{name: "backend 500 status", code: 500, body: `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd is down","code":500}`, want: ReasonHTTP5xx},
		{name: "gateway timeout", code: 504, body: `{"kind":"Status","message":"Timeout: request did not complete within requested timeout","code":504}`, want: ReasonTimeout},
		{name: "forbidden", code: 403, body: `{"kind":"Status","message":"forbidden: User \"herd\" cannot get path \"/apis/g/v\"","code":403}`, want: ReasonHTTP4xx},
		{name: "not served", code: 404, body: "404 page not found", want: ReasonHTTP4xx},
		{name: "apf", code: 429, body: "Too many requests, please try again later.", want: ReasonHTTP4xx},
		{name: "body broke off", code: 200, err: errors.New("unexpected EOF"), want: ReasonConnection},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, detail := classify(c.code, c.body, c.err, c.as)
			if got != c.want {
				t.Errorf("classify(%d, %q, %v) = %q (%s), want %q", c.code, c.body, c.err, got, detail, c.want)
			}
			if got != "" && detail == "" {
				t.Error("a failure without detail")
			}
			if c.as != nil && c.code == 503 && c.as.Status.Conditions[0].Status != "True" && !strings.Contains(detail, c.as.Status.Conditions[0].Reason) {
				t.Errorf("detail %q does not carry the condition's reason", detail)
			}
		})
	}
}

func TestProbeStatsAreCumulative(t *testing.T) {
	p := newProbeStats()
	for _, d := range []float64{0.001, 0.003, 0.2, 5.0, 7} {
		r := ProbeResult{Duration: d}
		if d >= 5 {
			r.Reason = ReasonTimeout
		}
		p.observe(r)
	}
	b := p.cumulative()
	for le, want := range map[float64]uint64{0.005: 2, 0.1: 2, 0.25: 3, 5: 4, 10: 5} {
		if b[le] != want {
			t.Errorf("bucket le=%v = %d, want %d", le, b[le], want)
		}
	}
	if p.count != 5 || p.failures[ReasonTimeout] != 2 || len(p.failures) != len(Reasons) {
		t.Errorf("count %d failures %v", p.count, p.failures)
	}
}

func TestOptions(t *testing.T) {
	var o Options
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	if o.ProbeInterval != 30e9 || o.ProbeTimeout != 5e9 || o.ProbeWorkers != 4 || o.MaxBackends != 20 || o.Logger == nil {
		t.Errorf("defaults = %+v", o)
	}
	for _, bad := range []Options{{ProbeInterval: -1}, {ProbeTimeout: -1}, {ProbeWorkers: -1}, {MaxBackends: -1}} {
		if err := bad.defaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New(nil) accepted")
	}
}
