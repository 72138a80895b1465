// Relist recording rules. Counters are summed across exporter replicas (each audit event reaches
// exactly one replica: docs/scaling.md), keeping every other label, so that a multi-cluster
// Prometheus keeps its cluster label and the alerts keep job.
{
  prometheusRules+:: {
    local c = $._config,
    local w = c.rateWindow,
    groups+: [
      {
        name: 'herd-relists.rules',
        rules: [
          {
            // Relists per second by role, client, resource, consistency and shape, cluster-wide.
            record: 'herd:relists:rate%s' % w,
            expr: |||
              sum without (instance, pod) (
                rate(herd_relists_total{%(herdExporterSelector)s}[%(rateWindow)s])
              )
            ||| % c,
          },
          {
            // The same, all consistencies and shapes together but per-object reads (shape="object":
            // fieldSelector=metadata.name=, at most one object, such as the kubelet's per-object
            // ConfigMap and Secret reflectors; the cheapest relist there is): what HerdRelistStorm
            // compares to a baseline and the responder's evidence reads. A series without a shape
            // label (herd before shapes) counts.
            record: 'herd:relists_by_resource:rate%s' % w,
            expr: |||
              sum without (consistency, shape) (herd:relists:rate%(rateWindow)s{shape!="object"})
            ||| % c,
          },
          {
            // The client's own baseline for one resource: the median relist rate over the last
            // day. Only for streams that already existed relistBaselineMinAge ago, so that a
            // stream born in a storm does not take the storm as its baseline.
            record: 'herd:relists_by_resource:median%s' % c.relistBaselineWindow,
            expr: |||
              quantile_over_time(0.5, herd:relists_by_resource:rate%(rateWindow)s[%(relistBaselineWindow)s])
              and
              herd:relists_by_resource:rate%(rateWindow)s offset %(relistBaselineMinAge)s
            ||| % c,
          },
          {
            // Instances with >= accounting.relistThreshold relists in the window, cluster-wide, per-object
            // reads left out (as above). Exact while each instance stays on one apiserver; a split
            // under- or over-counts (docs/scaling.md), which is why HerdRelistStorm also looks at the
            // summed rate. An instance relisting a resource in two shapes counts in each.
            record: 'herd:relisting_instances:sum',
            expr: |||
              sum without (instance, pod, shape) (herd_relisting_instances{%(herdExporterSelector)s, shape!="object"})
            ||| % c,
          },
          {
            // Relists in the window of the top-K and flagged instances, parts of a split summed.
            record: 'herd:instance_relists:sum',
            expr: |||
              sum without (instance, pod) (herd_instance_relists{%(herdExporterSelector)s})
            ||| % c,
          },
          {
            record: 'herd:list_pages:rate%s' % w,
            expr: |||
              sum without (instance, pod) (
                rate(herd_list_pages_total{%(herdExporterSelector)s}[%(rateWindow)s])
              )
            ||| % c,
          },
          {
            record: 'herd:requests:rate%s' % w,
            expr: |||
              sum without (instance, pod) (
                rate(herd_requests_total{%(herdExporterSelector)s}[%(rateWindow)s])
              )
            ||| % c,
          },
          {
            // Both kinds, the apiserver's 504s and the 200s above the cluster's revision
            // (detected_by), as one rate per client and resource.
            record: 'herd:too_large_resource_version:rate%s' % w,
            expr: |||
              sum without (instance, pod, detected_by) (
                rate(herd_too_large_resource_version_total{%(herdExporterSelector)s}[%(rateWindow)s])
              )
            ||| % c,
          },
          {
            // The APF measurement mode's synchronized relists (rules/rules/apf.libsonnet patches
            // these two rules by name: source="apf" series count LISTs above their pace; its
            // HerdSynchronizedRelist reads them). The audit feed's own HerdSynchronizedRelist reads
            // herd_relist_wave_instances instead (the fast path); these audit series stay for a
            // person comparing the two.
            // Instances of a client that relisted a resource in the last two minutes after at
            // least two minutes of quiet: all relists, minus those that came within 120 s of
            // the same instance's previous relist of the resource (herd_relist_interval_seconds
            // has a 120 s bucket). An instance contributes at most one such relist in a 2m
            // window, so a relist loop counts once, not once per relist; an instance herd sees
            // relist for the first time has no interval and counts once too (also when an
            // apiserver restart moves it to another exporter replica).
            // The bucket is le="120.0" when Prometheus scraped OpenMetrics (as herd serves it,
            // and as Prometheus 3 always stores it) and le="120" from the text format: match both.
            // Per-object reads (shape="object") are left out: a deploy wave makes every kubelet
            // start per-object ConfigMap and Secret reflectors at once, which costs the apiserver
            // one key read each.
            record: 'herd:instances_relisted:increase2m',
            expr: |||
              clamp_min(
                (
                  sum without (instance, pod, consistency, shape) (increase(herd_relists_total{%(herdExporterSelector)s, shape!="object"}[2m]))
                  -
                  sum without (instance, pod, le, shape) (increase(herd_relist_interval_seconds_bucket{%(herdExporterSelector)s, shape!="object", le=~"120|120[.]0"}[2m]))
                )
                or
                sum without (instance, pod, consistency, shape) (increase(herd_relists_total{%(herdExporterSelector)s, shape!="object"}[2m])),
                0
              )
            ||| % c,
          },
          {
            // The share of a per-node client's instances that relisted in the last two
            // minutes. herd exports no per-client instance count, so the denominator is the
            // number of Nodes: kubelet, kube-proxy and CNI agents run one instance per node.
            // Absent with --no-kube (no herd_cluster_nodes).
            record: 'herd:instances_relisted:ratio2m',
            expr: |||
              clamp_max(
                herd:instances_relisted:increase2m{role=~"%(syncRelistRoles)s"}
                / on (%(clusterLabel)s, job) group_left ()
                max by (%(clusterLabel)s, job) (herd_cluster_nodes{%(herdExporterSelector)s} > 0),
                1
              )
            ||| % c,
          },
        ],
      },
    ],
  },
}
