package policy

import "testing"

// FuzzParseConfig: Parse never panics, and whatever it accepts is valid,
// routes without panicking and survives a round trip through its JSON form
// (the /debug/config output).
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"",
		promURL,
		promURL + "dryRun: false\nroutes:\n- match: {alertname: HerdStaleKubelet}\n  action: cordon\n",
		promURL + "routes:\n- matchRE: {alertname: 'Herd.*', node: 'n-[0-9]+'}\n  action: isolate\n- action: none\n",
		promURL + "actions: {isolate: {ttl: 1h, queues: 64, handSize: 8}, cordon: {nodeSelector: {pool: a}}}\n",
		promURL + "guards: {maxUnschedulableFraction: 0.2, maxActionsPerHour: {cordon: 1}, stormCooldown: 5m}\n",
		promURL + "actions: {triage: {remediate: true}}\nroutes:\n- matchRE: {alertname: '(.*)'}\n  action: triage\n",
		"routes: [\n",
		"guards: {maxUnschedulableFraction: .nan}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid config: %v", err)
		}
		for _, labels := range []map[string]string{nil, {"alertname": "HerdStaleKubelet"}, {"alertname": "", "node": "x"}} {
			if r, ok := c.Route(labels); ok && r.Action.Mutating() && len(r.Match) == 0 && r.matchesEverything() {
				t.Fatalf("a catch-all route to %s was accepted", r.Action)
			}
		}
		assertRoundTrip(t, c)
	})
}
