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

    // HerdSynchronizedRelist, the fast path (issue 12): at least syncRelistFraction of one client's
    // live instances on a resource (herd_stampede_instances), and at least syncRelistMinInstances
    // of them, relisted it in the exporter's wave window (herd_relist_wave_instances:
    // accounting.waveWindow, 60 s, a LIST counted from its RequestReceived). No `for` by default:
    // the wave is the evidence, and every second counts (the latency chain in
    // docs/runbooks/HerdSynchronizedRelist.md). It keeps firing syncRelistHold after the wave so
    // that triage can correlate it. cost="expensive" when the shape reads the whole resource
    // (all, selected, unknown), the mode is a LIST, and the wave makes the apiserver serve at
    // least syncRelistExpensiveBytes (wave instances × herd:stampede_list_bytes; by shape alone
    // when the apiserver's metrics are missing): the responder isolates those. 1 GiB is half of
    // SPEC §8.1's incident-002 wave (100 × 21.7 MB), which grew the apiserver by ~1.3 GB.
    // The fast path's rules evaluate every fastPathEvaluationInterval ('' = the global
    // evaluation interval): a group this small costs nothing to evaluate often, and it takes
    // up to 20 s off the chain.
    syncRelistRoles: 'kubelet|kube-proxy|cni',
    syncRelistFraction: 0.5,
    syncRelistMinInstances: 10,
    syncRelistHold: '10m',
    syncRelistFor: '0s',
    // The APF measurement mode's HerdSynchronizedRelist (no wave gauge without the exporter): LISTs
    // above their pace against the Nodes, held syncRelistHold, with this `for`.
    syncRelistApfFor: '1m',
    syncRelistExpensiveBytes: 1073741824,
    fastPathEvaluationInterval: '10s',

    // The stampede forecast (issue 12, rules/rules/stampede.libsonnet, docs/runbooks/HerdStampedeRisk.md):
    // what one synchronized relist of a client would make the apiserver hold, from herd's live
    // instances and the apiserver's own metrics (scraped as apiserverSelector, above).
    //   list bytes  = stored bytes of what the relist selects (apiserver_resource_size_estimate_bytes:
    //                 the whole resource for shapes all, selected, unknown; / Nodes for node; / objects
    //                 for object) × stampedeResponseBytesPerStoredByte: the apiserver stores built-in
    //                 types as protobuf and serves JSON. Measured on kube-apiserver 1.36.3 with 600 of
    //                 the drill's 10.8 KB pods (test/drill HeavyPod): 6,472,969 bytes of JSON for
    //                 5.87 MB stored, 1.10 (test/e2e TestForecastOnRealAPIServer); a protobuf client
    //                 gets about 1.0.
    stampedeResponseBytesPerStoredByte: 1.1,
    //   seats       = APF's own estimate (k8s.io/apiserver@v0.36.3 pkg/util/flowcontrol/request/
    //                 list_work_estimator.go): ceil(stored bytes / 100,000), capped at 1,000,000 bytes
    //                 (10 seats) when the watch cache serves it (cache and consistent LISTs, WatchLists)
    //                 and at 100 seats from etcd (exact). Not knobs: the apiserver's constants.
    //   concurrency = per apiserver: min(live instances / apiservers, max(1, floor(seats of the level
    //                 that serves the client (max of apiserver_flowcontrol_current_limit_seats and
    //                 nominal_limit_seats) / seats))); an exempt or unknown level does not bound it.
    //   growth      = stampedeListMemoryFactor × list bytes × concurrency (a WatchList stream: at
    //                 most stampedeWatchListBytes instead of list bytes).
    //   peak        = the apiserver's RSS now (the largest process_resident_memory_bytes) + growth.
    // stampedeListMemoryFactor (k): apiserver memory per byte of a LIST running at once,
    // k = measured RSS growth / (list bytes × concurrency), both as the model computes them. It
    // folds in the decoded objects, the encoding buffers, Go's GC headroom and APF borrowing, and
    // it is not one number: measured on kube-apiserver 1.36.3 with 21.5–21.7 MB LISTs at
    // workload-high it was 6.8 in SPEC §8.1 (+1,261 MiB, 9 at once), 7.2 in the storm drill's
    // unprotected wave 1 (+1,345 MiB, 9 at once) and 2.5 in the production drill's (+659 MiB,
    // 13 at once, on a CPU-bound 2-core apiserver where most of the storm waits for CPU before it
    // holds a response); guarded waves (3 at once) gave 2.0–2.2 (docs/performance.md). k = 4 is
    // the middle of that range on a log scale: every measurement above lies within 2× of the
    // forecast (0.55×–1.8×). Recalibrate from a drill of your own apiservers:
    // k = measured growth / (herd:stampede_list_bytes × herd:stampede_concurrency).
    stampedeListMemoryFactor: 4,
    // The apiserver's own estimate of a streamed list's memory at once (list_work_estimator.go
    // cacheWithStreamingMaxMemoryUsage): what one WatchList stream holds.
    stampedeWatchListBytes: 1000000,
    // The memory budget: apiserverMemoryLimitBytes when set (the apiserver container's limit);
    // else apiserverMemoryHeadroomFactor × the apiserver's median RSS over apiserverMemoryBaseline
    // (an apiserver at 3× its usual memory is in the range where OOM kills happened in
    // incident 002: 459 → 1,720 MiB). HerdStampedeRisk fires when the predicted peak exceeds
    // stampedeBudgetShare of it (herd:stampede_budget_bytes is that share).
    apiserverMemoryLimitBytes: 0,
    apiserverMemoryHeadroomFactor: 3,
    apiserverMemoryBaseline: '1h',
    stampedeBudgetShare: 0.8,
    // The forecast is a steady-state signal: it must hold this long (the live window needs 15 m
    // after an exporter restart to see every informer's re-watch).
    stampedeRiskFor: '5m',

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
