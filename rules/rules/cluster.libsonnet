// Ghosts, stale kubelets, TokenReviews and metrics-server's kubelet auth mode. Per-object gauges
// are deduplicated with max across exporter replicas (every replica that sees a ghost reports
// it); per-replica counts are summed (docs/scaling.md).
local utils = import '../lib/utils.libsonnet';

{
  prometheusRules+:: {
    local c = $._config,
    local w = c.rateWindow,
    groups+: [
      {
        name: 'herd-cluster.rules',
        rules: [
          {
            // 1 per ghost identity: what HerdGhostNodeClient and the responder's quarantine use.
            record: 'herd:ghost_instance:max',
            expr: |||
              max without (instance, pod, %(exported)s) (
                %(honored)s
              )
            ||| % {
              exported: utils.exportedLabels(['node']),
              honored: utils.honorExported('herd_ghost_instance{%(herdExporterSelector)s}' % c, ['node']),
            },
          },
          {
            // Ghosts by role and client: a lower bound across replicas.
            record: 'herd:ghost_instances:max',
            expr: |||
              max without (instance, pod) (herd_ghost_instances{%(herdExporterSelector)s})
            ||| % c,
          },
          {
            // 1 per stale kubelet (node, reason): what HerdStaleKubelet and cordon use.
            record: 'herd:stale_kubelet:max',
            expr: |||
              max without (instance, pod, %(exported)s) (
                %(honored)s
              )
            ||| % {
              exported: utils.exportedLabels(['node']),
              honored: utils.honorExported('herd_stale_kubelet{%(herdExporterSelector)s}' % c, ['node']),
            },
          },
          {
            // All stale kubelets, uncapped, summed over replicas.
            record: 'herd:stale_kubelets:sum',
            expr: |||
              sum without (instance, pod) (herd_stale_kubelets{%(herdExporterSelector)s})
            ||| % c,
          },
          {
            record: 'herd:tokenreviews:rate%s' % w,
            expr: |||
              sum without (instance, pod) (
                rate(herd_tokenreviews_total{%(herdExporterSelector)s}[%(rateWindow)s])
              )
            ||| % c,
          },
          {
            // Nodes whose kubelet created TokenReviews in the window: max across replicas is a
            // lower bound (a node seen by several replicas is counted by each).
            record: 'herd:tokenreview_nodes:max',
            expr: |||
              max without (instance, pod) (herd_tokenreview_nodes{%(herdExporterSelector)s})
            ||| % c,
          },
          {
            // Rewinds of the cluster's revision in the hold window: every replica sees the same
            // rewind, so max, not sum.
            record: 'herd:cluster_revision_rewinds:increase%s' % c.clusterRevisionRewindHold,
            expr: |||
              max without (instance, pod) (
                increase(herd_cluster_revision_rewinds_total{%(herdExporterSelector)s}[%(clusterRevisionRewindHold)s])
              )
            ||| % c,
          },
          {
            // metrics-server's kubelet auth mode, one series per Deployment.
            record: 'herd:metrics_server_kubelet_auth:max',
            expr: |||
              max without (instance, pod, %(exported)s) (
                %(honored)s
              )
            ||| % {
              exported: utils.exportedLabels(['namespace']),
              honored: utils.honorExported('herd_metrics_server_kubelet_auth{%(herdExporterSelector)s}' % c, ['namespace']),
            },
          },
        ],
      },
    ],
  },
}
