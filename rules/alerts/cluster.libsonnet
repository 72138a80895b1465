// Stale kubelets, ghost clients, TokenReview storms and metrics-server's auth mode
// (incidents 000 and 004).
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
