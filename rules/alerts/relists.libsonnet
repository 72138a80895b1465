// Relist storms, synchronized relists and too-large resourceVersion loops (incidents 000, 002).
{
  prometheusAlerts+:: {
    local c = $._config,
    local w = c.rateWindow,
    local stream = '%s, job, role, client, resource, shape' % c.clusterLabel,
    local v = c { stream: stream },
    // Instances of a client that relisted a resource in the exporter's wave window, and its live
    // instances there: raw series, so that the fast path reads the scrape that saw the wave,
    // not a recording rule of another group evaluated later.
    local wave = |||
      sum without (instance, pod, mode) (herd_relist_wave_instances{%(herdExporterSelector)s, role=~"%(syncRelistRoles)s", shape!="object"})
    ||| % c,
    local live = |||
      sum without (instance, pod, consistency, mode, priority_level) (herd_stampede_instances{%(herdExporterSelector)s, role=~"%(syncRelistRoles)s", shape!="object"})
    ||| % c,
    // indent shifts every line of a multi-line expression but the first right by n spaces.
    local indent(s, n) = std.join('\n' + std.repeat(' ', n), std.split(std.rstripChars(s, '\n'), '\n')),
    local synchronized = |||
      %(wave)s
      / on (%(stream)s)
      %(live)s
      >= %(syncRelistFraction)g
      and
      %(wave)s
      >= %(syncRelistMinInstances)g
    ||| % (v { wave: indent(wave, 0), live: indent(live, 0) }),
    // An expensive wave: LISTs (not WatchLists) of a shape that reads the whole resource, making
    // the apiserver serve at least syncRelistExpensiveBytes; by shape alone when the forecast has
    // no list size (the apiserver is not scraped).
    local expensive = |||
      (
        sum without (instance, pod, mode) (herd_relist_wave_instances{%(herdExporterSelector)s, shape=~"all|selected|unknown", mode!="watchlist"})
        * on (%(stream)s) group_left ()
        herd:stampede_list_bytes
      ) >= %(syncRelistExpensiveBytes)d
      or
      (
        sum without (instance, pod, mode) (herd_relist_wave_instances{%(herdExporterSelector)s, shape=~"all|selected|unknown", mode!="watchlist"})
        unless on (%(stream)s)
        herd:stampede_list_bytes
      )
    ||| % v,
    groups+: [
      {
        // The fast path (issue 12): its own small group, evaluated every
        // fastPathEvaluationInterval, so that the wave a scrape saw fires within seconds.
        name: 'herd-relists-fast',
        [if c.fastPathEvaluationInterval != '' then 'interval']: c.fastPathEvaluationInterval,
        rules: [
          {
            alert: 'HerdSynchronizedRelist',
            // The value is the share of the client's live instances on the resource that relisted
            // it in the wave window. A relist loop's first wave is a synchronized relist too: a
            // storm that starts fires this (and keeps it firing while instances relist together),
            // minutes before HerdRelistStorm can; cost says whether the responder isolates it.
            expr: |||
              label_replace(
                (
                  %(synchronized)s
                )
                and on (%(stream)s)
                (
                  %(expensive)s
                ),
                "cost", "expensive", "", ""
              )
              or
              label_replace(
                (
                  %(synchronized)s
                )
                unless on (%(stream)s)
                (
                  %(expensive)s
                ),
                "cost", "cheap", "", ""
              )
            ||| % (v { synchronized: indent(synchronized, 4), expensive: indent(expensive, 4) }),
            'for': c.syncRelistFor,
            keep_firing_for: c.syncRelistHold,
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $labels.client }} instances relisted {{ $labels.resource }} at the same time ({{ $labels.cost }}).',
              description: ('{{ $value | humanizePercentage }} of the live {{ $labels.client }} ({{ $labels.role }}) instances on {{ $labels.resource }} relisted it ({{ $labels.shape }}) within the last minute: '
                            + 'a load-balancer reset, an apiserver restart or a network blip made them reconnect together, or a relist storm is starting, and their LISTs arrive at once (incident 002). '
                            + 'cost="{{ $labels.cost }}": expensive waves (unfiltered LISTs of a large resource) are isolated by the responder at once; cheap ones (indexed or per-object LISTs, WatchLists, small resources) are reported only. '
                            + "See the wave with `herd_relist_wave_instances{client=\"{{ $labels.client }}\", resource=\"{{ $labels.resource }}\"}` and the instances with `curl -s '%(herdExporterURL)s/debug/clients?role={{ $labels.role }}&client={{ $labels.client }}&limit=20'`; "
                            + 'check for apiserver restarts with `kubectl -n kube-system get pods -l component=kube-apiserver`. If it turns into a loop, HerdRelistStorm follows.') % c,
            },
          },
        ],
      },
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
        ] + (if c.nodeClientSource == 'audit' then [] else [
               {
                 alert: 'HerdSynchronizedRelist',
                 // The APF measurement mode's (docs/apf-measurement.md): without the exporter's wave
                 // gauge, LISTs above their pace (source="apf", rules/rules/apf.libsonnet) counted
                 // against the Nodes, over the last syncRelistHold. APF cannot tell the shape of a LIST:
                 // no cost label, so the responder reports it and does not isolate it.
                 expr: |||
                   max without (resource) (
                     max_over_time(herd:instances_relisted:ratio2m{source="apf"}[%(syncRelistHold)s]) >= %(syncRelistFraction)g
                     and on (%(clusterLabel)s, role, client, resource)
                     max_over_time(herd:instances_relisted:increase2m{source="apf"}[%(syncRelistHold)s]) >= %(syncRelistMinInstances)g
                   )
                 ||| % c,
                 'for': c.syncRelistApfFor,
                 // source="apf" (the expression's too) sets this rule apart from the fast path's.
                 labels: { severity: 'warning', source: 'apf' },
                 annotations: {
                   summary: 'Most {{ $labels.client }} instances relisted at the same time.',
                   description: ('{{ $value | humanizePercentage }} of {{ $labels.client }} ({{ $labels.role }}) instances, counted against the number of Nodes, relisted within two minutes: '
                                 + 'a load-balancer reset, an apiserver restart or a network blip made them reconnect together, and their LISTs arrive at once (incident 002). '
                                 + 'Check for apiserver restarts with `kubectl -n kube-system get pods -l component=kube-apiserver` and watch apiserver memory; '
                                 + 'see which resources with `herd:instances_relisted:increase2m{client="{{ $labels.client }}"}`. If it turns into a loop, HerdRelistStorm follows.') % c,
                 },
               },
             ]) + [
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
