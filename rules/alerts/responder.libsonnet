// The responder's own health: it acts only while it runs and leads, and a tripped guard means a
// person must decide.
{
  prometheusAlerts+:: {
    local c = $._config,
    groups+: if !c.herdResponderEnabled then [] else [
      {
        name: 'herd-responder',
        rules: [
          {
            alert: 'HerdResponderGuardTripped',
            // Refusals in the window; the second branch covers counters that appear already
            // above zero (a responder that creates them on the first refusal).
            expr: |||
              sum without (instance, pod) (increase(herd_responder_guard_refusals_total{%(herdResponderSelector)s}[%(responderGuardWindow)s])) > 0
              or
              sum without (instance, pod) (
                herd_responder_guard_refusals_total{%(herdResponderSelector)s}
                unless
                herd_responder_guard_refusals_total{%(herdResponderSelector)s} offset %(responderGuardWindow)s
              ) > 0
            ||| % c,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'A herd responder guard refused the {{ $labels.action }} action.',
              description: ("The responder's {{ $labels.guard }} guard refused the {{ $labels.action }} action in the last %(responderGuardWindow)s: herd found a reason to act and a safety limit stopped it, so a person must decide. "
                            + "See what it wanted to do with `curl -s '%(herdResponderURL)s/debug/actions'` and `kubectl get events -A --field-selector reportingComponent=herd.dev/responder`, "
                            + 'and the decision log with `kubectl -n herd logs -l app.kubernetes.io/name=herd,app.kubernetes.io/component=responder | grep -i guard`.') % c,
            },
          },
          {
            alert: 'HerdResponderDown',
            expr: |||
              up{%(herdResponderSelector)s} == 0
              or
              absent(up{%(herdResponderSelector)s})
              or
              sum without (instance, pod) (herd_responder_leader{%(herdResponderSelector)s}) == 0
            ||| % c,
            'for': c.responderDownFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'The herd responder is down.',
              description: ('{{ if $labels.instance }}herd responder {{ $labels.instance }} is down{{ else }}No herd responder is running and leading{{ end }}: '
                            + 'alerts routed to it get no triage and no remediation, and Alertmanager retries against it. '
                            + 'Check `kubectl -n herd get pods -l app.kubernetes.io/name=herd,app.kubernetes.io/component=responder`, its logs, and which replica holds the leader Lease with `kubectl -n herd get leases`.') % c,
            },
          },
        ],
      },
    ],
  },
}
