// Stale kubelets, ghost clients, an etcd rewind, TokenReview storms and metrics-server's auth
// mode (incidents 000 and 004).
{
  prometheusAlerts+:: {
    local c = $._config,
    local w = c.rateWindow,
    groups+: [
      {
        name: 'herd-cluster',
        rules: [
          {
            alert: 'HerdStaleKubelet',
            expr: |||
              herd:stale_kubelet:max > 0
            ||| % c,
            'for': c.staleKubeletFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'The kubelet on {{ $labels.node }} is stuck.',
              description: ('The kubelet on node {{ $labels.node }} has been failing its pod sync ({{ $labels.reason }}) for %(staleKubeletFor)s: its LISTs keep failing or repeating, each one load on the apiserver. '
                            + "Check the node with `kubectl get node {{ $labels.node }} -o wide` and its requests with `curl -s '%(herdExporterURL)s/debug/clients?role=kubelet&node={{ $labels.node }}'`, "
                            + "then on the node `journalctl -u kubelet --since -30m | grep -i 'resource version'`; restarting the kubelet usually clears it. The responder cordons the node.") % c,
            },
          },
          {
            alert: 'HerdGhostNodeClient',
            expr: |||
              herd:ghost_instance:max > 0
            ||| % c,
            'for': c.ghostNodeClientFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $labels.identity }} calls the apiserver from no current Node.',
              description: ('{{ $labels.client }} ({{ $labels.role }}) as {{ $labels.identity }} claims node "{{ $labels.node }}" and calls from {{ $labels.source_ip }}, but that is no current Node ({{ $labels.reason }}): '
                            + 'a machine removed from the cluster is still running it, and its requests time out and burn the error budget (incident 000). '
                            + "Confirm with `kubectl get node {{ $labels.node }}` and `curl -s '%(herdExporterURL)s/debug/clients?identity={{ $labels.identity }}'`, "
                            + 'then stop the agent on {{ $labels.source_ip }} or revoke its credentials. The responder quarantines the identity with API Priority and Fairness.') % c,
            },
          },
          {
            alert: 'HerdClusterRevisionRewound',
            expr: |||
              herd:cluster_revision_rewinds:increase%(clusterRevisionRewindHold)s > 0
            ||| % c,
            labels: { severity: 'critical' },
            annotations: {
              summary: "The cluster's resourceVersion went back: etcd was restored without --bump-revision.",
              description: ("herd read a cluster revision (etcd's, every object's resourceVersion) below one it had already seen, {{ $value | printf \"%%.0f\" }} time(s) in the last %(clusterRevisionRewindHold)s: "
                            + 'etcd was restored from an older snapshot without --bump-revision (incident 000). Every client that held a newer resourceVersion is now asking for a revision the cluster does not have: '
                            + 'LISTs fail with 504 "Too large resource version", WatchLists and re-watches succeed and deliver nothing, so kubelets stop seeing their pods with no error anywhere. '
                            + 'See how far it went back with `herd_cluster_revision_last_rewind_revisions` and who is stuck with `herd_stale_kubelet` and `herd:too_large_resource_version:rate%(rateWindow)s`. '
                            + 'Restore again with `etcdutl snapshot restore --bump-revision 1000000000 --mark-compacted` (clients then relist once), or restart the stuck agents in batches. herd relisted its own informers.') % c,
            },
          },
          {
            alert: 'HerdKubeletTokenReviewStorm',
            expr: |||
              sum without (client) (herd:tokenreviews:rate%(rateWindow)s{role="kubelet"}) > %(tokenReviewStormRate)g
              and on (%(clusterLabel)s)
              herd:tokenreview_nodes:max >= %(tokenReviewStormMinNodes)g
            ||| % c,
            'for': c.tokenReviewStormFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Kubelets are creating a storm of TokenReviews.',
              description: ('Kubelets create {{ $value | printf "%%.0f" }} TokenReviews/s, from at least %(tokenReviewStormMinNodes)g nodes: a fleet-wide caller authenticates to every kubelet with a bearer token, '
                            + "usually metrics-server without a client certificate, and the TokenReviews fill the apiserver's mutating in-flight limit (incident 004). "
                            + "Check metrics-server with `kubectl -n kube-system get deploy -l k8s-app=metrics-server -o yaml | grep -e --kubelet-client` and the sources with `curl -s '%(herdExporterURL)s/debug/clients?role=kubelet&limit=20'`. "
                            + 'The responder flags metrics-server (annotation herd.dev/kubelet-auth).') % c,
            },
          },
          {
            alert: 'HerdMetricsServerTokenAuth',
            expr: |||
              herd:metrics_server_kubelet_auth:max{mode="token"} > 0
            ||| % c,
            'for': c.metricsServerTokenAuthFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'metrics-server {{ $labels.namespace }}/{{ $labels.deployment }} authenticates to kubelets with a token.',
              description: ('metrics-server {{ $labels.namespace }}/{{ $labels.deployment }} runs without --kubelet-client-certificate and --kubelet-client-key, so it sends its service-account token to every kubelet '
                            + 'and every kubelet creates a TokenReview per scrape: on a large cluster a TokenReview storm (incident 004). '
                            + "See its flags with `kubectl -n {{ $labels.namespace }} get deploy {{ $labels.deployment }} -o jsonpath='{.spec.template.spec.containers[*].args}'` "
                            + 'and give it a client certificate that kubelets trust. The responder annotates the Deployment herd.dev/kubelet-auth=token and never changes its spec.') % c,
            },
          },
        ],
      },
    ],
  },
}
