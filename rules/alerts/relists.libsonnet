// Relist storms, synchronized relists and too-large resourceVersion loops (incidents 000, 002).
{
  prometheusAlerts+:: {
    local c = $._config,
    local w = c.rateWindow,
    groups+: [
      {
        name: 'herd-relists',
        rules: [
          {
            alert: 'HerdRelistStorm',
            // The value is the client's relist rate of the resource, cluster-wide.
            expr: |||
              herd:relists_by_resource:rate%(rateWindow)s >= %(relistStormMinRate)g
              and on (%(clusterLabel)s, role, client, resource)
              (
                herd:relists_by_resource:rate%(rateWindow)s > %(relistStormBaselineFactor)g * herd:relists_by_resource:median%(relistBaselineWindow)s
                or
                herd:relists_by_resource:rate%(rateWindow)s unless herd:relists_by_resource:median%(relistBaselineWindow)s
              )
              and on (%(clusterLabel)s, role, client, resource)
              (
                herd:relisting_instances:sum >= %(relistStormMinInstances)g
                or
                herd:relists_by_resource:rate%(rateWindow)s >= %(relistStormHighRate)g
              )
            ||| % c,
            'for': c.relistStormFor,
            labels: { severity: 'critical' },
            annotations: {
              summary: '{{ $labels.client }} is in a relist storm on {{ $labels.resource }}.',
              description: ('{{ $labels.client }} ({{ $labels.role }}) has been relisting {{ $labels.resource }} at {{ $value | printf "%%.1f" }}/s across the cluster for %(relistStormFor)s, '
                            + 'more than %(relistStormBaselineFactor)g times its usual rate, with many instances in a relist loop: every LIST costs the apiserver memory in proportion to the objects it returns, and an etcd read when the watch cache cannot serve it (incident 002). '
                            + "Find the instances and their nodes with `curl -s '%(herdExporterURL)s/debug/clients?role={{ $labels.role }}&client={{ $labels.client }}&limit=20'` "
                            + 'and the consistency mix with `herd:relists:rate%(rateWindow)s{client="{{ $labels.client }}", resource="{{ $labels.resource }}"}`. '
                            + 'The responder isolates these LISTs with API Priority and Fairness: `kubectl get flowschemas -l app.kubernetes.io/managed-by=herd`.') % c,
            },
          },
          {
            alert: 'HerdSynchronizedRelist',
            // The value is the largest share of the client's instances (estimated as Nodes)
            // that relisted one resource within two minutes, over the last syncRelistHold.
            expr: |||
              max without (resource) (
                max_over_time(herd:instances_relisted:ratio2m[%(syncRelistHold)s]) >= %(syncRelistFraction)g
                and on (%(clusterLabel)s, role, client, resource)
                max_over_time(herd:instances_relisted:increase2m[%(syncRelistHold)s]) >= %(syncRelistMinInstances)g
              )
            ||| % c,
            'for': c.syncRelistFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Most {{ $labels.client }} instances relisted at the same time.',
              description: ('{{ $value | humanizePercentage }} of {{ $labels.client }} ({{ $labels.role }}) instances, counted against the number of Nodes, relisted within two minutes: '
                            + 'a load-balancer reset, an apiserver restart or a network blip made them reconnect together, and their LISTs arrive at once (incident 002). '
                            + 'Check for apiserver restarts with `kubectl -n kube-system get pods -l component=kube-apiserver` and watch apiserver memory; '
                            + 'see which resources with `herd:instances_relisted:increase2m{client="{{ $labels.client }}"}`. If it turns into a loop, HerdRelistStorm follows.') % c,
            },
          },
          {
            alert: 'HerdTooLargeResourceVersion',
            expr: |||
              herd:too_large_resource_version:rate%(rateWindow)s > %(tooLargeResourceVersionRate)g
            ||| % c,
            'for': c.tooLargeResourceVersionFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $labels.client }} keeps asking for a resourceVersion the apiserver never reached.',
              description: ('{{ $labels.client }} ({{ $labels.role }}) makes {{ $value | printf "%%.2f" }}/s requests on {{ $labels.resource }} for a resourceVersion the cluster has not reached: '
                            + 'a LIST holds an apiserver request for about 3 s and ends in a 504 "Too large resource version" that burns the error budget; a WatchList or re-watch gets 200 and no events, so the client silently stops syncing. '
                            + 'Usually a ghost kubelet on a removed node or a client stuck after an etcd restore (incident 000; see HerdClusterRevisionRewound). '
                            + "Find the instances with `curl -s '%(herdExporterURL)s/debug/clients?role={{ $labels.role }}&client={{ $labels.client }}'` or `herd analyze <audit log>`, "
                            + 'then check HerdGhostNodeClient and HerdStaleKubelet.') % c,
            },
          },
        ],
      },
    ],
  },
}
