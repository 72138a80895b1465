// Aggregated APIServices (incident 001).
{
  prometheusAlerts+:: {
    local c = $._config,
    groups+: [
      {
        name: 'herd-apiservices',
        rules: [
          {
            alert: 'HerdAggregatedAPIUnavailable',
            expr: |||
              herd:apiservice_available:max == 0
            ||| % c,
            'for': c.apiserviceUnavailableFor,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Aggregated API {{ $labels.apiservice }} is unavailable.',
              description: ('APIService {{ $labels.apiservice }} (service {{ $labels.namespace }}/{{ $labels.service }}) has not been Available for %(apiserviceUnavailableFor)s: '
                            + 'the apiserver answers 503 to every request for its group, and namespace deletion and garbage collection stall on its discovery (incident 001). '
                            + "Run `kubectl get apiservice {{ $labels.apiservice }} -o jsonpath='{.status.conditions}'` and `kubectl -n {{ $labels.namespace }} get endpointslices -l kubernetes.io/service-name={{ $labels.service }} -o wide`, "
                            + "and see the backends and the last probe with `curl -s '%(herdExporterURL)s/debug/apiservices'`.") % c,
            },
          },
          {
            alert: 'HerdAggregatedAPISlow',
            // The probe p99; namespace and service come from the availability series.
            expr: |||
              (
                max without (quantile) (herd:apiservice_probe_duration_seconds:histogram_quantile{quantile="0.99"}) > %(apiserviceSlowSeconds)g
                unless on (%(clusterLabel)s, apiservice)
                herd:apiservice_available:max == 0
              )
              * on (%(clusterLabel)s, apiservice) group_left (namespace, service)
              group by (%(clusterLabel)s, apiservice, namespace, service) (herd:apiservice_available:max)
            ||| % c,
            'for': c.apiserviceSlowFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Aggregated API {{ $labels.apiservice }} is slow.',
              description: ("herd's probes of APIService {{ $labels.apiservice }} (service {{ $labels.namespace }}/{{ $labels.service }}) take {{ $value | humanizeDuration }} at p99: "
                            + 'every discovery and request for its group waits as long, and near 5 s the aggregator times out (incident 001). '
                            + "See the failure reasons and the backends' nodes with `curl -s '%(herdExporterURL)s/debug/apiservices'` and the pods with `kubectl -n {{ $labels.namespace }} get pods -o wide`; "
                            + 'a slow path to backends on some nodes points at the overlay network.') % c,
            },
          },
          {
            alert: 'HerdAggregatedAPIFlapping',
            expr: |||
              changes(herd:apiservice_available:max[%(apiserviceFlapWindow)s]) >= %(apiserviceFlapChanges)g
            ||| % c,
            'for': c.apiserviceFlapFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Aggregated API {{ $labels.apiservice }} is flapping.',
              description: ('APIService {{ $labels.apiservice }} (service {{ $labels.namespace }}/{{ $labels.service }}) changed availability {{ $value }} times in %(apiserviceFlapWindow)s: '
                            + 'requests for its group fail intermittently with 503. Usually some backends are unreachable from some apiservers (incident 001: overlay encapsulation) or a backend is crash-looping. '
                            + "Compare the backends' nodes in `curl -s '%(herdExporterURL)s/debug/apiservices'` with `kubectl -n {{ $labels.namespace }} get endpointslices -l kubernetes.io/service-name={{ $labels.service }} -o wide`.") % c,
            },
          },
        ],
      },
    ],
  },
}
