// The stampede forecast (issue 12): what one synchronized relist of each client would make the
// apiserver hold, from herd's live instances (herd_stampede_instances) and the apiserver's own
// metrics (object sizes and counts, APF seats, RSS). The model and its constants are in
// config.libsonnet; docs/runbooks/HerdStampedeRisk.md says how to read it.
//
// Rows: herd_stampede_instances has one series per (role, client, resource, shape, consistency,
// mode, priority_level); the :row rules keep those labels, the contract rules
// (herd:stampede_list_bytes, _list_seats, _concurrency, _growth_bytes, _peak_bytes,
// _safe_concurrency) have (role, client, resource, shape), and herd:stampede_budget_bytes the
// cluster only. Every other label (job, cluster) is kept.
{
  prometheusRules+:: {
    local c = $._config,
    local cl = c.clusterLabel,
    // A stream's labels and a row's: what group_left joins keep.
    local stream = '%s, job, role, client, resource, shape' % cl,
    local row = stream + ', consistency, mode, priority_level',
    local v = c { stream: stream, row: row },
    // Stored bytes and objects of every resource, labelled as herd labels resources: pods for
    // the core group, endpointslices.discovery.k8s.io otherwise (-1 = the apiserver could not
    // count: left out).
    local byResource(metric) = |||
      max by (%(clusterLabel)s, resource) (
        label_replace(
          label_replace(
            label_join(%(metric)s{%(apiserverSelector)s} >= 0, "herd_resource", ".", "resource", "group"),
            "herd_resource", "$1", "herd_resource", "(.*)[.]"
          ),
          "resource", "$1", "herd_resource", "(.+)"
        )
      )
    ||| % (c { metric: metric }),
    groups+: [
      {
        name: 'herd-stampede.rules',
        rules: [
          {
            // Live instances, summed across exporter replicas (docs/scaling.md: an instance whose
            // connection moved is counted on both for up to accounting.liveWindow: the safe side).
            record: 'herd:stampede_instances:sum',
            expr: |||
              sum without (instance, pod) (herd_stampede_instances{%(herdExporterSelector)s})
            ||| % c,
          },
          {
            // The apiserver's stored bytes of each resource (pkg/storage/etcd3/metrics/metrics.go:
            // average stored object size × count; protobuf for built-in types, JSON for CRDs).
            record: 'herd:apiserver_stored_bytes:max',
            expr: byResource('apiserver_resource_size_estimate_bytes'),
          },
          {
            record: 'herd:apiserver_objects:max',
            expr: byResource('apiserver_resource_objects'),
          },
          {
            // How many apiservers share the instances' connections.
            record: 'herd:apiservers:count',
            expr: |||
              count by (%(clusterLabel)s) (process_resident_memory_bytes{%(apiserverSelector)s})
            ||| % c,
          },
          {
            // The largest apiserver's memory now: where a wave would start from.
            record: 'herd:apiserver_memory_bytes:max',
            expr: |||
              max by (%(clusterLabel)s) (process_resident_memory_bytes{%(apiserverSelector)s})
            ||| % c,
          },
          {
            // Seats each priority level may run at once on one apiserver: its current limit, or
            // its nominal one when it lends seats now (a storm takes back what it lent). The
            // mandatory exempt level has no limit: left out, so that it bounds nothing.
            record: 'herd:apiserver_limit_seats:max',
            expr: |||
              max by (%(clusterLabel)s, priority_level) (apiserver_flowcontrol_current_limit_seats{%(apiserverSelector)s, priority_level!="exempt"})
                > max by (%(clusterLabel)s, priority_level) (apiserver_flowcontrol_nominal_limit_seats{%(apiserverSelector)s, priority_level!="exempt"})
              or
              max by (%(clusterLabel)s, priority_level) (apiserver_flowcontrol_nominal_limit_seats{%(apiserverSelector)s, priority_level!="exempt"})
            ||| % c,
          },
          {
            // The most seats APF lets one request of a level take: ceil(15 % of its nominal seats)
            // (apf_controller.go priorityLevelMaxSeatsPercent; also at most nominal / handSize,
            // which the metrics do not give: the default levels' hand sizes do not bind).
            record: 'herd:apiserver_max_request_seats:max',
            expr: |||
              clamp_min(ceil(0.15 * max by (%(clusterLabel)s, priority_level) (apiserver_flowcontrol_nominal_limit_seats{%(apiserverSelector)s, priority_level!="exempt"})), 1)
            ||| % c,
          },
          {
            // The bytes one relist of a stream makes the apiserver serve: the whole resource
            // (all, selected: the watch cache reads every object; unknown), one Node's share
            // (node: the spec.nodeName index), one object (object); as served (JSON).
            record: 'herd:stampede_list_bytes',
            expr: |||
              %(stampedeResponseBytesPerStoredByte)g * (
                (
                  group by (%(stream)s) (herd:stampede_instances:sum{shape=~"all|selected|unknown"})
                  * on (%(clusterLabel)s, resource) group_left ()
                  herd:apiserver_stored_bytes:max
                )
                or
                (
                  group by (%(stream)s) (herd:stampede_instances:sum{shape="node"})
                  * on (%(clusterLabel)s, resource) group_left ()
                  (herd:apiserver_stored_bytes:max / on (%(clusterLabel)s) group_left () clamp_min(herd:apiserver_objects:max{resource="nodes"}, 1))
                )
                or
                (
                  group by (%(stream)s) (herd:stampede_instances:sum{shape="object"})
                  * on (%(clusterLabel)s, resource) group_left ()
                  (herd:apiserver_stored_bytes:max / clamp_min(herd:apiserver_objects:max, 1))
                )
              )
            ||| % v,
          },
          {
            // The stored bytes APF's estimator loads for one LIST of a row: the whole resource
            // whatever the selector (list_work_estimator.go: from the cache it counts every
            // object — "TODO: For resources that implement indexes" — and from etcd with a
            // selector at least half), one object for metadata.name (matchesSingle).
            record: 'herd:stampede_loaded_bytes:row',
            expr: |||
              (
                herd:stampede_instances:sum{shape!="object"} * 0
                + on (%(clusterLabel)s, resource) group_left ()
                herd:apiserver_stored_bytes:max
              )
              or
              (
                herd:stampede_instances:sum{shape="object"} * 0
                + on (%(clusterLabel)s, resource) group_left ()
                (herd:apiserver_stored_bytes:max / clamp_min(herd:apiserver_objects:max, 1))
              )
            ||| % v,
          },
          {
            // Seats APF charges one LIST of a row by its size: ceil(bytes / 100,000); from the watch
            // cache (cache and consistent LISTs, WatchLists, and a row whose relist herd has not
            // seen) at most 1,000,000 bytes = 10 seats, from etcd (exact) at most 100 seats.
            record: 'herd:stampede_size_seats:row',
            expr: |||
              clamp(ceil(herd:stampede_loaded_bytes:row{consistency="exact", mode!="watchlist"} / 100000), 1, 100)
              or
              clamp(ceil(clamp_max(herd:stampede_loaded_bytes:row, 1000000) / 100000), 1, 10)
            ||| % v,
          },
          {
            // ... and no more than its level lets one request take (herd:apiserver_max_request_seats:max).
            record: 'herd:stampede_seats:row',
            expr: |||
              (
                herd:stampede_size_seats:row
                <= on (%(clusterLabel)s, priority_level) group_left ()
                herd:apiserver_max_request_seats:max
              )
              or
              (
                herd:stampede_size_seats:row * 0
                + on (%(clusterLabel)s, priority_level) group_left ()
                herd:apiserver_max_request_seats:max
              )
              or
              herd:stampede_size_seats:row
            ||| % v,
          },
          {
            // A row's relists running at once on one apiserver: its instances there (spread over
            // the apiservers), bounded by how many such LISTs its level's seats admit; a level with
            // no seat limit (exempt, or unknown: priority_level="") does not bound them.
            record: 'herd:stampede_concurrency:row',
            expr: |||
              (
                (
                  ceil(herd:stampede_instances:sum / on (%(clusterLabel)s) group_left () herd:apiservers:count)
                  <=
                  clamp_min(floor(
                    herd:apiserver_limit_seats:max / on (%(clusterLabel)s, priority_level) group_right () herd:stampede_seats:row
                  ), 1)
                )
                or
                clamp_min(floor(
                  herd:apiserver_limit_seats:max / on (%(clusterLabel)s, priority_level) group_right () herd:stampede_seats:row
                ), 1)
              )
              or
              ceil(herd:stampede_instances:sum / on (%(clusterLabel)s) group_left () herd:apiservers:count)
            ||| % v,
          },
          {
            // What a row's relists running at once add to the apiserver's memory: k × bytes each, a
            // WatchList stream at most stampedeWatchListBytes.
            record: 'herd:stampede_growth_bytes:row',
            expr: |||
              %(stampedeListMemoryFactor)g * (
                herd:stampede_concurrency:row{mode!="watchlist"}
                * on (%(stream)s) group_left ()
                herd:stampede_list_bytes
                or
                herd:stampede_concurrency:row{mode="watchlist"}
                * on (%(stream)s) group_left ()
                clamp_max(herd:stampede_list_bytes, %(stampedeWatchListBytes)g)
              )
            ||| % v,
          },
          {
            // LISTs of the stream that would run at once on one apiserver (WatchLists are not
            // LISTs: a guard on `list` does not route them).
            record: 'herd:stampede_concurrency',
            expr: |||
              sum without (consistency, mode, priority_level) (herd:stampede_concurrency:row{mode!="watchlist"})
            ||| % v,
          },
          {
            // Seats one LIST of the stream takes; the fewest of its rows (the most at once).
            record: 'herd:stampede_list_seats',
            expr: |||
              min without (consistency, mode, priority_level) (herd:stampede_seats:row{mode!="watchlist"})
            ||| % v,
          },
          {
            record: 'herd:stampede_growth_bytes',
            expr: |||
              sum without (consistency, mode, priority_level) (herd:stampede_growth_bytes:row)
            ||| % v,
          },
          {
            // The apiserver's predicted memory peak if the stream's instances relisted together now.
            record: 'herd:stampede_peak_bytes',
            expr: |||
              herd:stampede_growth_bytes + on (%(clusterLabel)s) group_left () herd:apiserver_memory_bytes:max
            ||| % v,
          },
          {
            // The memory a forecast peak must stay under: stampedeBudgetShare of the apiserver's
            // budget (apiserverMemoryLimitBytes, or apiserverMemoryHeadroomFactor × its median RSS
            // over apiserverMemoryBaseline: one factor, share × headroom, in the expression).
            record: 'herd:stampede_budget_bytes',
            expr: (
              if c.apiserverMemoryLimitBytes > 0 then |||
                %(stampedeBudgetShare)g * (herd:apiserver_memory_bytes:max * 0 + %(apiserverMemoryLimitBytes)d)
              ||| else |||
                %(share)g * max by (%(clusterLabel)s) (
                  quantile_over_time(0.5, process_resident_memory_bytes{%(apiserverSelector)s}[%(apiserverMemoryBaseline)s])
                )
              |||
            ) % (c { share: c.stampedeBudgetShare * c.apiserverMemoryHeadroomFactor }),
          },
          {
            // The forecast peak as a share of the budget: HerdStampedeRisk fires above 1.
            record: 'herd:stampede_budget_used:ratio',
            expr: |||
              herd:stampede_peak_bytes / on (%(clusterLabel)s) group_left () herd:stampede_budget_bytes
            ||| % v,
          },
          {
            // How many of the stream's LISTs may run at once with the peak under the budget: what
            // the responder's protect sizes herd-protect from (seats = this × herd:stampede_list_seats).
            record: 'herd:stampede_safe_concurrency',
            expr: |||
              floor(
                clamp_min(herd:stampede_budget_bytes - on (%(clusterLabel)s) herd:apiserver_memory_bytes:max, 0)
                / on (%(clusterLabel)s) group_right ()
                (%(stampedeListMemoryFactor)g * herd:stampede_list_bytes)
              )
            ||| % v,
          },
        ],
      },
    ],
  },
}
