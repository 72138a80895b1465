package main

// standinRules stand in for issue 12's forecast (rules/, the exporter's
// herd_stampede_* and herd_relist_wave_instances) while it is not in the
// shipped mixin, so that the production drill's machinery can be tried:
// the names of the contract (/work/plan/issue12.md), constant model values
// over the apiserver's real metrics, NOT the model. -forecast-standin only.
const standinRules = `groups:
- name: herd-forecast-standin
  rules:
  - record: herd:stampede_list_bytes
    expr: max(apiserver_resource_size_estimate_bytes{resource="pods"})
    labels: {role: cni, client: cilium-agent, resource: pods, shape: all}
  - record: herd:stampede_list_seats
    expr: vector(10)
    labels: {role: cni, client: cilium-agent, resource: pods, shape: all}
  - record: herd:stampede_concurrency
    expr: vector(9)
    labels: {role: cni, client: cilium-agent, resource: pods, shape: all}
  - record: herd:stampede_growth_bytes
    expr: 8 * 9 * max(apiserver_resource_size_estimate_bytes{resource="pods"})
    labels: {role: cni, client: cilium-agent, resource: pods, shape: all}
  - record: herd:stampede_budget_bytes
    expr: max(process_resident_memory_bytes{job="apiserver"}) + 24 * max(apiserver_resource_size_estimate_bytes{resource="pods"})
  - record: herd:stampede_peak_bytes
    expr: max(process_resident_memory_bytes{job="apiserver"}) + 8 * 9 * max(apiserver_resource_size_estimate_bytes{resource="pods"})
    labels: {role: cni, client: cilium-agent, resource: pods, shape: all}
  - record: herd:stampede_safe_concurrency
    expr: vector(3)
    labels: {role: cni, client: cilium-agent, resource: pods, shape: all}
  - record: herd_stampede_subjects
    expr: vector(100)
    labels: {role: cni, client: cilium-agent, resource: pods, subject: "serviceaccount:kube-system:cilium"}
  - record: herd_relist_wave_instances
    expr: label_replace(sum by (role, client, resource) (herd:instances_relisted:increase2m{client="cilium-agent", resource="pods"}), "shape", "all", "", "")
  - alert: HerdStampedeRisk
    expr: herd:stampede_peak_bytes > on () group_left () herd:stampede_budget_bytes
    for: 2m
  - alert: HerdSynchronizedRelist
    expr: herd_relist_wave_instances >= 10
    labels: {cost: expensive, shape: all}
`
