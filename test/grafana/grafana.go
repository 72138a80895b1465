// Package grafana reads what herd's tests check of a Grafana dashboard
// (the mixin's, as JSON): its panels, their targets, its template
// variables, and the variables in a query. rules/dashboards checks the
// dashboard statically; test/e2e runs its queries against a real
// Prometheus.
package grafana

import (
	"fmt"
	"regexp"
)

// Dashboard is a dashboard decoded from JSON.
type Dashboard = map[string]any

// List is the objects of v's array field key (none when it is missing or
// not an array of objects).
func List(v any, key string) []map[string]any {
	m, _ := v.(map[string]any)
	items, _ := m[key].([]any)
	out := make([]map[string]any, 0, len(items))
	for _, it := range items {
		if o, ok := it.(map[string]any); ok {
			out = append(out, o)
		}
	}
	return out
}

// Panels is every panel of d, rows included, with the panels of collapsed
// rows after their row.
func Panels(d Dashboard) []map[string]any { return flatten(List(d, "panels")) }

func flatten(panels []map[string]any) []map[string]any {
	var out []map[string]any
	for _, p := range panels {
		out = append(out, p)
		out = append(out, flatten(List(p, "panels"))...)
	}
	return out
}

// Variables are d's template variables.
func Variables(d Dashboard) []map[string]any { return List(d["templating"], "list") }

// templateVar matches Grafana's variables ($name, ${name}, ${name:format});
// they start with a letter or _, so $1 (a label_replace back-reference) is
// not one.
var templateVar = regexp.MustCompile(`\$(?:\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}|([a-zA-Z_][a-zA-Z0-9_]*))`)

// Substitute replaces the variables in expr with value(name); a variable
// value does not know makes an error that names every such one.
func Substitute(expr string, value func(name string) (string, bool)) (string, error) {
	var unknown []string
	out := templateVar.ReplaceAllStringFunc(expr, func(s string) string {
		m := templateVar.FindStringSubmatch(s)
		v, ok := value(m[1] + m[2])
		if !ok {
			unknown = append(unknown, s)
		}
		return v
	})
	if unknown != nil {
		return "", fmt.Errorf("%q uses unknown variables %v", expr, unknown)
	}
	return out, nil
}

var labelValues = regexp.MustCompile(`^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// LabelValues splits a query variable's definition,
// label_values(selector, label).
func LabelValues(definition string) (selector, label string, ok bool) {
	m := labelValues.FindStringSubmatch(definition)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}
