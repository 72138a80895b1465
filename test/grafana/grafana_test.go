package grafana

import (
	"encoding/json"
	"strings"
	"testing"
)

const dashboard = `{
  "templating": {"list": [{"name": "job", "type": "query", "definition": "label_values(up{cluster=\"$cluster\"}, job)"}]},
  "panels": [
    {"title": "top", "targets": [{"expr": "sum(rate(x{job=~\"$job\"}[$__rate_interval]))"}]},
    {"title": "row", "type": "row", "panels": [{"title": "in the row", "targets": [{"expr": "label_replace(y, \"a\", \"$1\", \"b\", \"(.*)\")"}]}]}
  ]
}`

func TestDashboard(t *testing.T) {
	var d Dashboard
	if err := json.Unmarshal([]byte(dashboard), &d); err != nil {
		t.Fatal(err)
	}
	var titles []string
	for _, p := range Panels(d) {
		titles = append(titles, p["title"].(string))
	}
	if got := strings.Join(titles, ","); got != "top,row,in the row" {
		t.Errorf("Panels: %s, want the rows' panels after their row", got)
	}
	vars := Variables(d)
	if len(vars) != 1 || vars[0]["name"] != "job" {
		t.Fatalf("Variables: %v", vars)
	}
	sel, label, ok := LabelValues(vars[0]["definition"].(string))
	if !ok || sel != `up{cluster="$cluster"}` || label != "job" {
		t.Errorf("LabelValues: %q %q %v", sel, label, ok)
	}
	if _, _, ok := LabelValues("query_result(up)"); ok {
		t.Errorf("LabelValues accepted query_result")
	}

	values := map[string]string{"job": "herd", "__rate_interval": "1m"}
	lookup := func(n string) (string, bool) { v, ok := values[n]; return v, ok }
	got, err := Substitute(List(Panels(d)[0], "targets")[0]["expr"].(string), lookup)
	if err != nil || got != `sum(rate(x{job=~"herd"}[1m]))` {
		t.Errorf("Substitute: %q, %v", got, err)
	}
	// $1 is a back-reference, not a variable.
	if got, err := Substitute(`label_replace(y, "a", "$1", "b", "(.*)")`, lookup); err != nil || !strings.Contains(got, `"$1"`) {
		t.Errorf("Substitute of a back-reference: %q, %v", got, err)
	}
	if _, err := Substitute(`x{a="$nope", b="${other:csv}"}`, lookup); err == nil || !strings.Contains(err.Error(), "$nope") || !strings.Contains(err.Error(), "${other:csv}") {
		t.Errorf("Substitute with unknown variables: %v; want both named", err)
	}
}
