// herd's own audit feed (incident 003: herd must see its input, and never flood the disk).
{
  prometheusAlerts+:: {
    local c = $._config,
    groups+: [
      {
        name: 'herd-audit',
        rules: [
          {
            alert: 'HerdAuditIngestStalled',
            // Seconds since the newest accounted event (any source), or, for an exporter that
            // was already scraped auditStalledSeconds ago and has accounted no event since it
            // (re)started, 1.
            expr: |||
              time() - max without (source) (herd_audit_last_event_timestamp_seconds{%(herdExporterSelector)s}) > %(auditStalledSeconds)d
              or
              (
                up{%(herdExporterSelector)s} == 1
                and on (%(clusterLabel)s, instance) (up{%(herdExporterSelector)s} offset %(auditStalledSeconds)ds)
                unless on (%(clusterLabel)s, instance) herd_audit_last_event_timestamp_seconds{%(herdExporterSelector)s}
              )
            ||| % c,
            'for': c.auditStalledFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'herd exporter {{ $labels.instance }} receives no audit events.',
              description: ('herd exporter {{ $labels.instance }} is up but has accounted no audit event for over %(auditStalledSeconds)d seconds, so herd is blind to what this apiserver serves and its alerts stay silent. '
                            + "Check the apiserver's --audit-webhook-config-file and --audit-policy-file (`herd audit-policy` prints the policy herd needs), "
                            + 'its audit webhook errors in `kubectl -n kube-system logs -l component=kube-apiserver | grep -i audit`, '
                            + 'and what herd receives with `curl -s http://{{ $labels.instance }}/metrics | grep herd_audit_requests_total`.') % c,
            },
          },
          {
            alert: 'HerdAuditEventsRejected',
            // The rejected share of events, else of POST /audit requests.
            expr: |||
              (
                sum without (result) (herd:audit_events:rate%(rateWindow)s{result=~"malformed|oversized"})
                /
                sum without (result) (herd:audit_events:rate%(rateWindow)s)
              ) > %(auditRejectedRatio)g
              or
              (
                sum without (code) (herd:audit_requests:rate%(rateWindow)s{code=~"4..|5..", code!="405"})
                /
                sum without (code) (herd:audit_requests:rate%(rateWindow)s)
              ) > %(auditRejectedRatio)g
            ||| % c,
            'for': c.auditRejectedFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'herd rejects audit input from {{ $labels.source }}.',
              description: ('herd rejects {{ $value | humanizePercentage }} of its {{ $labels.source }} audit input (malformed or oversized events, or POST /audit answered 400, 401, 403, 413 or 5xx), '
                            + 'so those requests are missing from its counts. '
                            + 'See which with `sum by (source, result) (herd:audit_events:rate%(rateWindow)s)` and `sum by (source, code) (herd:audit_requests:rate%(rateWindow)s)`, '
                            + "and the reasons herd logs with `kubectl -n herd logs deploy/herd-exporter | grep -i audit`; 401 means the apiserver's webhook kubeconfig credentials are wrong.") % c,
            },
          },
        ],
      },
    ],
  },
}
