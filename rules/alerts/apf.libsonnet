// Alerts of the APF measurement mode (docs/apf-measurement.md). HerdRelistStorm and
// HerdSynchronizedRelist need nothing here: they read the shared recording rules, which
// rules/rules/apf.libsonnet feeds from APF too. This file adds the rejection alert and fits the audit
// feed's alerts to the mode: 'apf' has no audit feed to watch; in 'both', an exporter that never
// received an audit event (herd_audit_last_event_timestamp_seconds is exported at 0 until the first)
// in a cluster the measurement schemas count is no stalled feed but a cluster measured through APF
// alone.
{
  prometheusAlerts+:: {
    local c = $._config,
    local apf = c.nodeClientSource == 'apf' || c.nodeClientSource == 'both',
    local auditAlerts = ['HerdAuditIngestStalled', 'HerdAuditEventsRejected'],

    local fit(g) = g {
      rules: [
        if c.nodeClientSource == 'both' && r.alert == 'HerdAuditIngestStalled' then r {
          expr: |||
            (
            %(expr)s
            )
            unless on (%(clusterLabel)s)
            (
              count by (%(clusterLabel)s) (herd_measurement_flowschema_info{%(herdResponderSelector)s, action="measure"})
              unless on (%(clusterLabel)s)
              count by (%(clusterLabel)s) (herd_audit_last_event_timestamp_seconds{%(herdExporterSelector)s} > 0)
            )
          ||| % (c { expr: std.join('\n', ['  ' + l for l in std.split(std.stripChars(r.expr, '\n'), '\n')]) }),
        } else r
        for r in g.rules
        if !(c.nodeClientSource == 'apf' && std.objectHas(r, 'alert') && std.member(auditAlerts, r.alert))
      ],
    },

    groups: (if c.nodeClientSource == 'audit' then super.groups else [fit(g) for g in super.groups]) + if !apf then [] else [
      {
        name: 'herd-apf',
        rules: [
          {
            alert: 'HerdNodeClientRejected',
            // The value is the client's rejected LISTs of the resource per second, cluster-wide.
            expr: |||
              sum by (%(clusterLabel)s, role, client, resource, priority_level) (herd:apf_rejected:rate%(rateWindow)s{action="measure"})
              > %(apfRejectedRate)g
            ||| % c,
            'for': c.apfRejectedFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: "API Priority and Fairness rejects {{ $labels.client }}'s LISTs of {{ $labels.resource }}.",
              description: ('The apiserver answers {{ $value | printf "%%.2f" }} of {{ $labels.client }} ({{ $labels.role }}) LISTs of {{ $labels.resource }} per second with 429: '
                            + 'priority level {{ $labels.priority_level }}, where the apiserver serves this client, has no seat and no queue room left for them, '
                            + 'so the client retries and everything else in that level waits or is rejected too. '
                            + 'See who fills the level with `kubectl get --raw /debug/api_priority_and_fairness/dump_priority_levels` and '
                            + '`sum by (client, resource) (herd:apf_lists:rate%(rateWindow)s{priority_level="{{ $labels.priority_level }}"})`; '
                            + 'if one client storms, HerdRelistStorm and the responder isolate it.') % c,
            },
          },
        ],
      },
    ],
  },
}
