// The stampede forecast (issue 12): a synchronized relist of one client would take the apiserver
// past its memory budget. It fires in the steady state, before any storm; the responder's
// `protect` action guards the client's risky LISTs while it fires.
{
  prometheusAlerts+:: {
    local c = $._config,
    groups+: [
      {
        name: 'herd-stampede',
        rules: [
          {
            alert: 'HerdStampedeRisk',
            // The value is the predicted apiserver memory peak, bytes. Cheap shapes (node: the
            // spec.nodeName index; object: one key) are left out whatever their numbers, and so
            // are the catch-all clients, which are no one client.
            expr: |||
              herd:stampede_peak_bytes{shape!~"node|object", role!="other", client!~"other|unauthenticated"}
              > on (%(clusterLabel)s) group_left ()
              herd:stampede_budget_bytes
            ||| % c,
            'for': c.stampedeRiskFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'A synchronized relist of {{ $labels.client }} would take the apiserver past its memory budget.',
              description: ('If the {{ $labels.client }} ({{ $labels.role }}) instances that hold a watch on {{ $labels.resource }} relisted it together — an apiserver restart, a load-balancer reset (incident 002) — '
                            + 'the apiserver would hold about {{ $value | humanize1024 }}B at the peak, above %(stampedeBudgetShare)g of its memory budget: each of those LISTs ({{ $labels.shape }}) makes it hold the whole response, and APF lets many run at once. '
                            + 'Nothing is storming now: this is a forecast. Read it with `herd:stampede_list_bytes{client="{{ $labels.client }}", resource="{{ $labels.resource }}"}`, `herd:stampede_concurrency{...}` and `herd:stampede_safe_concurrency{...}`; '
                            + 'the responder guards these LISTs with API Priority and Fairness while it fires: `kubectl get flowschemas -l app.kubernetes.io/managed-by=herd`.') % c,
            },
          },
        ],
      },
    ],
  },
}
