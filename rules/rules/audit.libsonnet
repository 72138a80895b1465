// herd's own audit ingest, summed across exporter replicas.
{
  prometheusRules+:: {
    local c = $._config,
    local w = c.rateWindow,
    groups+: [
      {
        name: 'herd-audit.rules',
        rules: [
          {
            // Audit events by source and result (accounted, duplicate, malformed, oversized).
            record: 'herd:audit_events:rate%s' % w,
            expr: |||
              sum without (instance, pod) (
                rate(herd_audit_events_total{%(herdExporterSelector)s}[%(rateWindow)s])
              )
            ||| % c,
          },
          {
            // POST /audit requests by source and HTTP status code.
            record: 'herd:audit_requests:rate%s' % w,
            expr: |||
              sum without (instance, pod) (
                rate(herd_audit_requests_total{%(herdExporterSelector)s}[%(rateWindow)s])
              )
            ||| % c,
          },
          {
            record: 'herd:audit_bytes:rate%s' % w,
            expr: |||
              sum without (instance, pod) (
                rate(herd_audit_bytes_total{%(herdExporterSelector)s}[%(rateWindow)s])
              )
            ||| % c,
          },
        ],
      },
    ],
  },
}
