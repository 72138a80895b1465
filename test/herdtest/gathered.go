package herdtest

import (
	"slices"

	dto "github.com/prometheus/client_model/go"
)

// Matching are the series of family name in mfs (a registry's Gather) that
// carry every label=value pair of labels (name, value, name, value, ...),
// in mfs' order.
func Matching(mfs []*dto.MetricFamily, name string, labels ...string) []*dto.Metric {
	var out []*dto.Metric
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == labels[i] && l.GetValue() == labels[i+1] }) {
					continue series
				}
			}
			out = append(out, m)
		}
	}
	return out
}

// Value is a counter's, a gauge's or an untyped series' value; 0 for a
// histogram or summary.
func Value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return m.GetUntyped().GetValue()
}
