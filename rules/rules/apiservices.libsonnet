// Aggregated APIServices. Every exporter replica watches and probes every APIService, so the
// availability gauge is deduplicated with max and the probe histograms are summed.
local utils = import '../lib/utils.libsonnet';

{
  prometheusRules+:: {
    local c = $._config,
    local w = c.rateWindow,
    groups+: [
      {
        name: 'herd-apiservices.rules',
        rules: [
          {
            // 1 when Available=True. namespace and service are the APIService's spec.service.
            record: 'herd:apiservice_available:max',
            expr: |||
              max without (instance, pod, %(exported)s) (
                %(honored)s
              )
            ||| % {
              exported: utils.exportedLabels(['namespace', 'service']),
              honored: utils.honorExported('herd_apiservice_available{%(herdExporterSelector)s}' % c, ['namespace', 'service']),
            },
          },
        ] + [
          {
            record: 'herd:apiservice_probe_duration_seconds:histogram_quantile',
            expr: |||
              histogram_quantile(%(q)s, sum without (instance, pod) (
                rate(herd_apiservice_probe_duration_seconds_bucket{%(herdExporterSelector)s}[%(rateWindow)s])
              ))
            ||| % (c { q: q }),
            labels: { quantile: q },
          }
          for q in ['0.5', '0.99']
        ] + [
          {
            record: 'herd:apiservice_probe_failures:rate%s' % w,
            expr: |||
              sum without (instance, pod) (
                rate(herd_apiservice_probe_failures_total{%(herdExporterSelector)s}[%(rateWindow)s])
              )
            ||| % c,
          },
        ],
      },
    ],
  },
}
