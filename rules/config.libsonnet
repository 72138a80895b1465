// Everything a user may want to change in the herd mixin: selectors, thresholds, `for` durations
// and windows. Override with `(import 'herd-mixin/mixin.libsonnet') + { _config+:: { ... } }`.
// The defaults are what rules/prometheus_*.yaml are generated with.
{
  _config+:: {
    // Selectors for herd's two scrape jobs. Every expression is restricted to them.
    herdExporterSelector: 'job="herd-exporter"',
    herdResponderSelector: 'job="herd-responder"',

    // The label that tells clusters apart in a multi-cluster Prometheus (absent is fine).
    clusterLabel: 'cluster',

    // runbook_url of every alert: %s is the alert name.
    runbookURLPattern: 'https://github.com/herd-k8s/herd/blob/main/docs/runbooks/%s.md',

    // Where a person reaches herd's debug pages, quoted in alert descriptions.
    herdExporterURL: 'http://herd-exporter.herd.svc:10380',
    herdResponderURL: 'http://herd-responder.herd.svc:10382',

    // Set to false when only the exporter is deployed: drops HerdResponderDown and
    // HerdResponderGuardTripped.
    herdResponderEnabled: true,

    // Where the counts of node-side clients' LISTs come from (docs/apf-measurement.md):
    //   'audit' herd's exporter, fed the apiserver's audit events: relists, pages, consistency,
    //           per-node attribution, ghosts, stale kubelets;
    //   'apf'   the apiserver's API Priority and Fairness metrics, per client and resource through
    //           the responder's measurement FlowSchemas (measurement.enabled): LISTs only, no
    //           node, no consistency; the audit feed's alerts are dropped;
    //   'both'  audit where herd's exporter sees a (role, client, resource), APF for the rest:
    //           the same recording rules, never a LIST counted twice.
    // 'both' is right for either install: without measurement schemas its APF rules are empty.
    nodeClientSource: 'both',
    // The apiserver's scrape job, as kube-prometheus names it: apiserver_flowcontrol_* come from it.
    apiserverSelector: 'job="apiserver"',

    // HerdNodeClientRejected: API Priority and Fairness rejects (429) more than this many of one
    // node-side client's LISTs of one resource per second in the priority level it is measured in.
    apfRejectedRate: 0.1,
    apfRejectedFor: '10m',

    // Window of the rate() recording rules. Recording rule names carry it (herd:relists:rate5m).
    rateWindow: '5m',

    // HerdRelistStorm: one client relisting one resource far above its own baseline.
    //   rate  >= relistStormMinRate (floor: a quiet cluster never alerts on a few relists)
    //   rate  >  relistStormBaselineFactor x its median over relistBaselineWindow
    //            (streams younger than relistBaselineMinAge have no baseline: floor only)
    //   and either herd_relisting_instances >= relistStormMinInstances (many instances in a loop)
    //   or rate >= relistStormHighRate (so a storm split across exporter replicas, which
    //   under-counts the gauge, is still seen: docs/scaling.md).
    relistStormMinRate: 0.5,  // relists/s, cluster-wide, of one resource by one client
    relistStormBaselineFactor: 3,
    relistStormMinInstances: 10,
    relistStormHighRate: 10,  // relists/s
    relistBaselineWindow: '1d',
    relistBaselineMinAge: '1h',
    relistStormFor: '15m',

    // HerdSynchronizedRelist: within two minutes, at least syncRelistFraction of one client's
    // instances (estimated as the number of Nodes: one per node for these roles) relisted after
    // being quiet, and at least syncRelistMinInstances of them. The alert holds for
    // syncRelistHold after the event so that triage can correlate it.
    syncRelistRoles: 'kubelet|kube-proxy|cni',
    syncRelistFraction: 0.5,
    syncRelistMinInstances: 10,
    syncRelistHold: '10m',
    syncRelistFor: '1m',

    // HerdStaleKubelet: herd_stale_kubelet is windowed (accounting.window, 10m by default), so a
    // `for` longer than the window keeps a one-off burst (an apiserver restart) from alerting.
    staleKubeletFor: '15m',

    // HerdGhostNodeClient (herd already waits --cluster.ghost-grace, 5m, before flagging).
    ghostNodeClientFor: '10m',

    // HerdTooLargeResourceVersion: "Too large resource version" answers per second for one
    // client and resource (a looping ghost kubelet gets one every ~3 s).
    tooLargeResourceVersionRate: 0.05,
    tooLargeResourceVersionFor: '15m',

    // HerdClusterRevisionRewound: herd saw the cluster's revision go back (etcd restored from a
    // snapshot without --bump-revision). A one-off event: it fires at once and stays for
    // clusterRevisionRewindHold so that people see it.
    clusterRevisionRewindHold: '1h',

    // Aggregated APIServices.
    apiserviceUnavailableFor: '10m',
    apiserviceSlowSeconds: 1,  // probe p99 over rateWindow
    apiserviceSlowFor: '15m',
    apiserviceFlapWindow: '30m',
    apiserviceFlapChanges: 4,  // availability changes in the window: two down/up cycles
    apiserviceFlapFor: '5m',

    // HerdKubeletTokenReviewStorm: kubelets create more than tokenReviewStormRate TokenReviews/s
    // and the kubelets of at least tokenReviewStormMinNodes nodes do (a fleet-wide caller such
    // as metrics-server in token mode, not one broken node).
    tokenReviewStormRate: 20,
    tokenReviewStormMinNodes: 20,
    tokenReviewStormFor: '15m',

    // HerdMetricsServerTokenAuth.
    metricsServerTokenAuthFor: '30m',

    // HerdAuditIngestStalled: an exporter that is up has accounted no audit event for this long.
    auditStalledSeconds: 600,
    auditStalledFor: '5m',

    // HerdAuditEventsRejected: share of audit events rejected (malformed, oversized) or of
    // POST /audit requests answered 4xx (but 405) or 5xx.
    auditRejectedRatio: 0.01,
    auditRejectedFor: '15m',

    // HerdResponderGuardTripped: any guard refusal within the window.
    responderGuardWindow: '30m',

    // HerdResponderDown.
    responderDownFor: '10m',
  },
}
