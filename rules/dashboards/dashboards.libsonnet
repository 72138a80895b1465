// The herd dashboard (issue 6, item 3): who is relisting what, ghosts and stale kubelets,
// too-large-RV and TokenReview storms, aggregated APIServices, audit ingest health and the
// responder. Plain jsonnet (no grafonnet); panels.libsonnet holds the panel builders.
//
// Aggregation across exporter replicas follows docs/scaling.md: counters are summed (each audit
// event reaches exactly one replica); per-object windowed gauges (ghosts, stale kubelets,
// backends) are deduplicated with max by their identifying labels; per-replica counts
// (relisting instances, ghost and stale counts) are summed, which is exact while each instance's
// connection stays on one apiserver; herd_tokenreview_nodes is shown as both bounds.
local utils = import '../lib/utils.libsonnet';
local p = import 'panels.libsonnet';

{
  // Defaults only: any value config.libsonnet sets wins, whichever side of the + it is on.
  _config+:: {
    herdExporterSelector: if 'herdExporterSelector' in super then super.herdExporterSelector else 'job="herd-exporter"',
    herdResponderSelector: if 'herdResponderSelector' in super then super.herdResponderSelector else 'job="herd-responder"',
    clusterLabel: if 'clusterLabel' in super then super.clusterLabel else 'cluster',
    showMultiCluster: if 'showMultiCluster' in super then super.showMultiCluster else true,
    dashboardUID: if 'dashboardUID' in super then super.dashboardUID else 'herd-overview',
    dashboardTitle: if 'dashboardTitle' in super then super.dashboardTitle else 'herd / Overview',
    dashboardTags: if 'dashboardTags' in super then super.dashboardTags else ['herd', 'kubernetes-mixin'],
    dashboardTimezone: if 'dashboardTimezone' in super then super.dashboardTimezone else 'utc',
    dashboardRefresh: if 'dashboardRefresh' in super then super.dashboardRefresh else '30s',
    dashboardTopK: if 'dashboardTopK' in super then super.dashboardTopK else 20,
  },

  grafanaDashboards+:: {
    'herd.json':
      local cfg = $._config;
      local join(parts) = std.join(', ', std.filter(function(s) s != '', parts));
      local clusterMatcher = '%s="$cluster"' % cfg.clusterLabel;
      local exp = join([cfg.herdExporterSelector, clusterMatcher, 'job=~"$job"']);
      // herd exports node, namespace, service and pod as data labels; a scrape that attaches target
      // labels of the same name (a ServiceMonitor without honorLabels) renames them exported_<label>.
      // honored() copies them back, as the recording rules do.
      local honored(metric, labels) = utils.honorExported('%s{%s}' % [metric, exp], labels);
      local s = {
        // Every exporter query: the configured selector, the cluster and the job variable.
        exp: exp,
        resp: join([cfg.herdResponderSelector, clusterMatcher, 'job=~"$responder_job"']),
        topk: cfg.dashboardTopK,
        instanceRelists: honored('herd_instance_relists', ['node']),
        ghostInstance: honored('herd_ghost_instance', ['node']),
        staleKubelet: honored('herd_stale_kubelet', ['node']),
        metricsServerAuth: honored('herd_metrics_server_kubelet_auth', ['namespace']),
        apiserviceAvailable: honored('herd_apiservice_available', ['namespace', 'service']),
        apiserviceBackend: honored('herd_apiservice_backend', ['pod', 'node']),
      };
      local q(expr) = expr % s;
      local ts(expr, legend='__auto', interval='') = p.target(q(expr), legend, interval=interval);
      local tab(expr) = p.tableTarget(q(expr));

      local variable(name, label, query, hide=0, multi=false) = {
        name: name,
        label: label,
        type: 'query',
        datasource: p.datasource,
        definition: query,
        query: { query: query, refId: 'PrometheusVariableQueryEditor-VariableQuery', qryType: 1 },
        refresh: 2,  // on time range change
        sort: 1,
        hide: hide,
        regex: '',
        multi: multi,
        includeAll: multi,
        [if multi then 'allValue']: '.+',
        current: {},
        options: [],
      };

      local rows = [
        {
          title: '',
          panels: [
            p.stat('Exporter replicas', 'herd exporter replicas reporting (herd_build_info). With one replica per apiserver (docs/scaling.md), expect one per apiserver.', [
              ts('count(herd_build_info{%(exp)s})'),
            ], baseColor='red', thresholds=[[1, 'green']]),
            p.stat('Relists/s', 'Relists per second across all replicas (herd_relists_total summed, docs/scaling.md).', [
              ts('sum(rate(herd_relists_total{%(exp)s}[$__rate_interval]))'),
            ], unit='reqps', baseColor='text', decimals=2, graph='area'),
            p.stat('Relisting instances', 'Instances with at least accounting.relistThreshold relists of a resource in the window, summed over replicas.', [
              ts('sum(herd_relisting_instances{%(exp)s})'),
            ], thresholds=[[1, 'orange'], [50, 'red']]),
            p.stat('Ghost instances', 'Host-network instances whose node is not a Node, or whose source address belongs to no Node (HerdGhostNodeClient).', [
              ts('sum(herd_ghost_instances{%(exp)s})'),
            ], thresholds=[[1, 'red']]),
            p.stat('Stale kubelets', 'Kubelets of existing Nodes whose pod sync is failing (herd_stale_kubelets, uncapped), summed over replicas.', [
              ts('sum(herd_stale_kubelets{%(exp)s})'),
            ], thresholds=[[1, 'red']]),
            p.stat('APIServices unavailable', 'Aggregated APIServices whose Available condition is not True: the aggregator answers 503 for their group.', [
              ts('count(min by (apiservice) (herd_apiservice_available{%(exp)s}) == 0) or vector(0)'),
            ], thresholds=[[1, 'red']]),
            p.stat('Audit feed silent for', 'Time since the newest audit event any replica accounted (time() - herd_audit_last_event_timestamp_seconds). A growing value means the audit webhook or log feed stopped.', [
              ts('time() - max(herd_audit_last_event_timestamp_seconds{%(exp)s})'),
            ], unit='s', thresholds=[[120, 'orange'], [600, 'red']]),
            p.stat('Responder leaders', 'Responder replicas holding the leader Lease (herd_responder_leader). Exactly one is healthy; 0 means no replica acts.', [
              ts('sum(herd_responder_leader{%(resp)s})'),
            ], baseColor='red', thresholds=[[1, 'green'], [2, 'red']]),
          ],
        },
        {
          title: 'Relists',
          panels: [
            p.timeseries('Relist rate by client and resource', 'Relists per second (a list without continue, or a WatchList watch) by client and resource, summed over replicas. A storm shows as one client on one resource rising by orders of magnitude (HerdRelistStorm).', [
              ts('sum by (client, resource) (rate(herd_relists_total{%(exp)s}[$__rate_interval]))', '{{client}} {{resource}}'),
            ], unit='reqps'),
            p.timeseries('Consistency mix', 'Share of relists by consistency: cache (served from the watch cache), exact (resourceVersionMatch=Exact) and consistent (no resourceVersion: since 1.31 served from the watch cache once it has caught up with etcd, from etcd when the cache cannot serve it).', [
              ts('sum by (consistency) (rate(herd_relists_total{%(exp)s}[$__rate_interval]))', '{{consistency}}'),
            ], unit='reqps', stack='percent', legendCalcs=['mean', 'lastNotNull']),
            p.timeseries('Consistent relists by client', 'Relists with no resourceVersion. Since 1.31 (ConsistentListFromCache) the watch cache serves them once it has caught up with etcd; they reach etcd when it cannot (before 1.31, the cache not ready, an unsupported selector).', [
              ts('sum by (client, resource) (rate(herd_relists_total{%(exp)s, consistency="consistent"}[$__rate_interval]))', '{{client}} {{resource}}'),
            ], unit='reqps', w=8),
            p.timeseries('Relisting instances', 'Instances with at least accounting.relistThreshold relists of the resource in the window, by client and resource, summed over replicas (an instance split across replicas may be under- or over-counted, docs/scaling.md).', [
              ts('sum by (client, resource) (herd_relisting_instances{%(exp)s})', '{{client}} {{resource}}'),
            ], w=8),
            p.timeseries('List continuation pages', 'Continuation pages (list with a continue token) by client and resource.', [
              ts('sum by (client, resource) (rate(herd_list_pages_total{%(exp)s}[$__rate_interval]))', '{{client}} {{resource}}'),
            ], unit='reqps', w=8),
            p.heatmap('Relist interval', 'Distribution of the time between two relists of the same resource by the same instance, all clients. Mass at the low end is a relist loop; a healthy reflector re-lists every few minutes at most.', [
              p.target(q('sum by (le) (increase(herd_relist_interval_seconds_bucket{%(exp)s}[$__rate_interval]))'), '{{le}}', 'heatmap'),
            ]),
            p.timeseries('Relist interval p50 by client', 'Median time between relists of the same resource by one instance, per client and resource.', [
              ts('histogram_quantile(0.5, sum by (client, resource, le) (rate(herd_relist_interval_seconds_bucket{%(exp)s}[$__rate_interval])))', '{{client}} {{resource}}'),
            ], unit='s', min=null),
            p.timeseries('Relists by shape', 'Relists by client, resource and shape: object (metadata.name=, one object: the kubelet per-object ConfigMap and Secret reflectors, which the storm alerts leave out), node (spec.nodeName=, served from the watch cache index), selected (any other selector: the whole resource is walked), all (no selector).', [
              ts('sum by (client, resource, shape) (rate(herd_relists_total{%(exp)s}[$__rate_interval]))', '{{client}} {{resource}} {{shape}}'),
            ], unit='reqps'),
            p.timeseries('apiserver time on slow requests by client and phase', 'Seconds per second kube-apiserver spent on requests slower than 500 ms, by client and phase (etcd, apf-queue-wait, serialize-response-object, ...), from its own apiserver.latency.k8s.io audit annotations: which client costs the apiserver etcd or serialization time. Watches are left out.', [
              ts('sum by (client, phase) (rate(herd_request_latency_seconds_total{%(exp)s, phase!="total"}[$__rate_interval])) > 0', '{{client}} {{phase}}'),
            ], unit='s'),
            p.table('Top relisting nodes', 'The instances with the most relists in the window (herd_instance_relists: top-K per replica plus every flagged ghost or stale instance), summed over replicas. An empty node means the instance could not be attributed to a node.', [
              tab('topk(%(topk)d, sum by (node, role, client, resource) (%(instanceRelists)s))'),
            ], w=24, h=9, rename={ Value: 'relists in window' }),
          ],
        },
        {
          title: 'Stampede forecast',
          panels: [
            p.timeseries('Forecast: apiserver peak if a client relisted together', "The apiserver's predicted memory peak if one client's live instances relisted one resource together now (herd:stampede_peak_bytes, by client, resource and shape).", [
              ts('topk(%(topk)d, herd:stampede_peak_bytes{%(exp)s})', '{{client}} {{resource}} {{shape}}'),
            ], unit='bytes', w=6),
            p.timeseries('Forecast: share of the memory budget', 'The predicted peak over the budget HerdStampedeRisk compares it with (herd:stampede_budget_used:ratio): above 1 for 5 minutes fires the alert (cheap shapes, node and object, never do). docs/runbooks/HerdStampedeRisk.md reads the forecast.', [
              ts('topk(%(topk)d, herd:stampede_budget_used:ratio{%(exp)s})', '{{client}} {{resource}} {{shape}}'),
            ], unit='percentunit', w=6),
            p.timeseries('Live instances by client and resource', 'Instances that watched or relisted a resource within accounting.liveWindow (herd_stampede_instances, summed over replicas), by client, resource, shape and the mode of their latest relist (list, watchlist, unknown): the instances one synchronized relist would bring at once.', [
              ts('topk(%(topk)d, sum by (client, resource, shape, mode) (herd_stampede_instances{%(exp)s}))', '{{client}} {{resource}} {{shape}} {{mode}}'),
            ], w=6),
            p.timeseries('Relist wave', "Instances whose relist started or completed within accounting.waveWindow (herd_relist_wave_instances): the fast path of HerdSynchronizedRelist. A wave of most of a client's live instances is a synchronized relist; an expensive one is isolated at once.", [
              ts('sum by (client, resource, shape, mode) (herd_relist_wave_instances{%(exp)s})', '{{client}} {{resource}} {{shape}} {{mode}}'),
            ], w=6),
          ],
        },
        {
          title: 'Ghosts and stale kubelets',
          panels: [
            p.timeseries('Ghost instance count by client', 'Host-network instances (kubelet, kube-proxy, CNI) whose node name is not a Node, or whose source address belongs to no Node, after the grace period (HerdGhostNodeClient).', [
              ts('sum by (role, client) (herd_ghost_instances{%(exp)s})', '{{client}}'),
            ], w=8),
            p.table('Ghost instances', 'One row per ghost (at most accounting.maxGhostSeries per replica), deduplicated across replicas. identity is what the responder quarantines.', [
              tab('max by (role, client, identity, node, source_ip, reason) (%(ghostInstance)s)'),
            ], w=16, rename={ Value: 'ghost' }),
            p.timeseries('Stale kubelet count', 'All stale kubelets (herd_stale_kubelets, uncapped, summed over replicas) against those listed per node (herd_stale_kubelet, capped at accounting.maxStaleSeries): a gap means the cap cut some.', [
              ts('sum(herd_stale_kubelets{%(exp)s})', 'stale (all)'),
              ts('count(max by (node) (%(staleKubelet)s))', 'stale (listed)'),
            ], w=8),
            p.table('Stale kubelets', 'Kubelets of existing Nodes whose pod sync is failing: too_large_resource_version (answered "Too large resource version") or relist_loop (pod relists). The responder cordons these (HerdStaleKubelet).', [
              tab('max by (node, reason) (%(staleKubelet)s)'),
            ], w=16, rename={ Value: 'stale' }, sortBy='node'),
          ],
        },
        {
          title: 'Too large resource version and TokenReviews',
          panels: [
            p.timeseries('Too large resource version', 'Requests answered "Too large resource version" (504 from the watch cache after ~3 s) by client and resource: a client asking for a resourceVersion this apiserver never reached (HerdTooLargeResourceVersion).', [
              ts('sum by (client, resource) (rate(herd_too_large_resource_version_total{%(exp)s}[$__rate_interval]))', '{{client}} {{resource}}'),
            ], unit='reqps'),
            p.timeseries('Non-2xx responses by client and code', 'Requests by classified clients that were not answered 2xx, by client, verb and code.', [
              ts('sum by (client, verb, code) (rate(herd_requests_total{%(exp)s, code!~"2.."}[$__rate_interval]))', '{{client}} {{verb}} {{code}}'),
            ], unit='reqps'),
            p.timeseries('TokenReviews by client', 'create tokenreviews by node-side clients: kubelets authenticating callers (metrics-server in token mode) against the apiserver (HerdKubeletTokenReviewStorm).', [
              ts('sum by (role, client) (rate(herd_tokenreviews_total{%(exp)s}[$__rate_interval]))', '{{client}}'),
            ], unit='reqps', w=8),
            p.timeseries('Nodes creating TokenReviews', 'Nodes whose kubelet created a TokenReview in the window. A node seen by several replicas counts on each: max is a lower bound, sum an upper bound (docs/scaling.md).', [
              ts('max(herd_tokenreview_nodes{%(exp)s})', 'nodes (lower bound, max)'),
              ts('sum(herd_tokenreview_nodes{%(exp)s})', 'nodes (upper bound, sum)'),
            ], w=8),
            p.table('metrics-server kubelet auth', 'How each metrics-server Deployment authenticates to kubelets: token means every kubelet creates a TokenReview per scrape (HerdMetricsServerTokenAuth); certificate is the fix.', [
              tab('max by (namespace, deployment, mode) (%(metricsServerAuth)s)'),
            ], w=8, rename={ Value: 'deployments' }, sortBy='deployment', overrides=[
              p.columnMapping('mode', { token: ['token', 'red'], certificate: ['certificate', 'green'], unknown: ['unknown', 'orange'] }),
            ]),
          ],
        },
        {
          title: 'Aggregated APIServices',
          panels: [
            p.stateTimeline('APIService availability', "The availability controller's Available condition per aggregated APIService (min over replicas). While unavailable, the aggregator answers 503 for the whole group (HerdAggregatedAPIUnavailable).", [
              ts('min by (apiservice) (herd_apiservice_available{%(exp)s})', '{{apiservice}}'),
            ], { '0': ['Unavailable', 'red'], '1': ['Available', 'green'] }),
            p.timeseries('Probe latency p50 / p99', "Duration of herd's GET /apis/<group>/<version> probes through the apiserver, failed ones included (a probe that hits the 5 s limit counts 5 s) (HerdAggregatedAPISlow). Probes run every 30 s, so the panel's minimum interval is 1m.", [
              ts('histogram_quantile(0.99, sum by (apiservice, le) (rate(herd_apiservice_probe_duration_seconds_bucket{%(exp)s}[$__rate_interval])))', '{{apiservice}} p99', '1m'),
              ts('histogram_quantile(0.5, sum by (apiservice, le) (rate(herd_apiservice_probe_duration_seconds_bucket{%(exp)s}[$__rate_interval])))', '{{apiservice}} p50', '1m'),
            ], unit='s'),
            p.timeseries('Probe failures by reason', 'Failed probes by APIService and reason: timeout, connection (backend unreachable), tls, http_5xx (e.g. no ready backend), http_4xx (RBAC, not served, APF).', [
              ts('sum by (apiservice, reason) (rate(herd_apiservice_probe_failures_total{%(exp)s}[$__rate_interval])) > 0', '{{apiservice}} {{reason}}', '1m'),
            ], unit='reqps', w=8),
            p.timeseries('Backend endpoints', 'Endpoints of the Service behind each APIService by state (ready, not_ready), max over replicas.', [
              ts('max by (apiservice, state) (herd_apiservice_endpoints{%(exp)s})', '{{apiservice}} {{state}}'),
            ], w=8),
            p.table('APIService backends and nodes', 'Every backend endpoint (pod and node) of each APIService, with whether the APIService is Available: the nodes of an unavailable APIService are where to look for a broken network path.', [
              tab('max by (apiservice, pod, node) (%(apiserviceBackend)s) * on (apiservice) group_left (namespace, service) min by (apiservice, namespace, service) (%(apiserviceAvailable)s)'),
            ], w=8, rename={ Value: 'available' }, sortBy='apiservice', overrides=[
              p.columnMapping('available', { '0': ['Unavailable', 'red'], '1': ['Available', 'green'] }),
            ]),
          ],
        },
        {
          title: 'Audit ingest',
          panels: [
            p.timeseries('Audit events by result', 'Audit events received by source and result: accounted, duplicate (a re-sent batch), malformed, oversized (HerdAuditEventsRejected).', [
              ts('sum by (source, result) (rate(herd_audit_events_total{%(exp)s}[$__rate_interval]))', '{{source}} {{result}}'),
            ], unit='ops', w=8),
            p.timeseries('Audit event lag', "Time from an event's stageTimestamp to herd accounting it: the webhook's batching delay plus transport.", [
              ts('histogram_quantile(0.99, sum by (source, le) (rate(herd_audit_event_lag_seconds_bucket{%(exp)s}[$__rate_interval])))', '{{source}} p99'),
              ts('histogram_quantile(0.5, sum by (source, le) (rate(herd_audit_event_lag_seconds_bucket{%(exp)s}[$__rate_interval])))', '{{source}} p50'),
            ], unit='s', w=8),
            p.timeseries('Time since last audit event', "How long each source has been silent, per replica (HerdAuditIngestStalled). One replica per apiserver: a single silent replica is one apiserver's webhook.", [
              ts('time() - max by (instance, source) (herd_audit_last_event_timestamp_seconds{%(exp)s})', '{{instance}} {{source}}'),
            ], unit='s', w=8),
            p.timeseries('Audit requests by code', 'POST /audit by HTTP status: 200 accounted, 400 malformed, 401 unauthenticated, 405 wrong method, 413 body too large, 503 overloaded (the apiserver retries).', [
              ts('sum by (source, code) (rate(herd_audit_requests_total{%(exp)s}[$__rate_interval]))', '{{source}} {{code}}'),
            ], unit='reqps', w=8),
            p.timeseries('Audit bytes', 'Bytes of audit input read, by source.', [
              ts('sum by (source) (rate(herd_audit_bytes_total{%(exp)s}[$__rate_interval]))', '{{source}}'),
            ], unit='Bps', w=8),
            p.timeseries('Audit log file events', 'For --audit.log-file: rename rotations, copytruncate truncations (lines between the last read and the truncate are lost) and oversized lines skipped.', [
              ts('sum by (file) (increase(herd_audit_file_rotations_total{%(exp)s}[$__rate_interval]))', '{{file}} rotations'),
              ts('sum by (file) (increase(herd_audit_file_truncations_total{%(exp)s}[$__rate_interval]))', '{{file}} truncations'),
              ts('sum by (file) (increase(herd_audit_file_oversized_lines_total{%(exp)s}[$__rate_interval]))', '{{file}} oversized lines'),
            ], w=8, draw='bars'),
          ],
        },
        {
          title: 'Exporter health',
          panels: [
            p.timeseries('Instances tracked', "Instances in each replica's table (bounded by accounting.maxInstances) and evictions because the table was full: non-zero evictions mean maxInstances is too small.", [
              ts('sum by (instance) (herd_instances{%(exp)s})', '{{instance}} instances'),
              ts('sum by (instance) (rate(herd_instances_evicted_total{%(exp)s}[$__rate_interval]))', '{{instance}} evicted/s'),
            ], w=8),
            p.timeseries('Cluster view', "Nodes in each replica's cache, and whether its Node and Lease informers have synced (1).", [
              ts('max by (instance) (herd_cluster_nodes{%(exp)s})', '{{instance}} nodes'),
              ts('min by (instance) (herd_cluster_synced{%(exp)s})', '{{instance}} synced'),
            ], w=8),
            p.timeseries('Collector duration', 'How long each collector took in the last scrape, per replica; collectors that failed are listed with a 0 success.', [
              ts('max by (instance, collector) (herd_scrape_collector_duration_seconds{%(exp)s})', '{{instance}} {{collector}}'),
              ts('min by (instance, collector) (herd_scrape_collector_success{%(exp)s}) == 0', '{{instance}} {{collector}} failed'),
            ], unit='s', w=8),
          ],
        },
        {
          title: 'Responder',
          panels: [
            p.timeseries('Responder actions', 'Decisions per action and result (applied, dry_run, refused, noop, failed), per interval. dry_run is the default: decided and recorded, nothing changed.', [
              ts('sum by (action, result) (increase(herd_responder_actions_total{%(resp)s}[$__rate_interval])) > 0', '{{action}} {{result}}'),
            ], w=8, draw='bars'),
            p.timeseries('Guard refusals', 'Actions refused by a guard (blast radius, rate limit, cooldown, exclusion, ownership, re-verification), per interval (HerdResponderGuardTripped).', [
              ts('sum by (action, guard) (increase(herd_responder_guard_refusals_total{%(resp)s}[$__rate_interval])) > 0', '{{action}} {{guard}}'),
            ], w=8, draw='bars'),
            p.timeseries('Leader', 'Which responder replica holds the leader Lease. Exactly one replica should be at 1; non-leaders report not ready (HerdResponderDown).', [
              ts('max by (instance) (herd_responder_leader{%(resp)s})', '{{instance}}'),
            ], w=8, max=1),
            p.timeseries('Alerts received', 'Alertmanager notifications received by alert name and status, per interval.', [
              ts('sum by (alertname, status) (increase(herd_responder_alerts_received_total{%(resp)s}[$__rate_interval])) > 0', '{{alertname}} {{status}}'),
            ], w=8, draw='bars'),
            p.timeseries('Action duration p99', 'Time from alert to action inside the responder (SPEC target: p99 under 1 s).', [
              ts('histogram_quantile(0.99, sum by (action, le) (rate(herd_responder_action_duration_seconds_bucket{%(resp)s}[$__rate_interval])))', '{{action}} p99'),
            ], unit='s', w=8),
            p.timeseries('Triage findings', 'Findings of the last triage by pattern (relist storm, ghost clients, too-large-RV loops, APIServices, TokenReview storm, audit pipeline).', [
              ts('max by (pattern) (herd_responder_findings{%(resp)s})', '{{pattern}}'),
            ], w=8),
          ],
        },
      ];

      {
        uid: cfg.dashboardUID,
        title: cfg.dashboardTitle,
        tags: cfg.dashboardTags,
        timezone: cfg.dashboardTimezone,
        refresh: cfg.dashboardRefresh,
        schemaVersion: 39,
        version: 1,
        editable: true,
        graphTooltip: 1,  // shared crosshair
        fiscalYearStartMonth: 0,
        liveNow: false,
        time: { from: 'now-1h', to: 'now' },
        timepicker: {},
        links: [],
        annotations: {
          list: [
            {
              builtIn: 1,
              datasource: { type: 'grafana', uid: '-- Grafana --' },
              enable: true,
              hide: true,
              iconColor: 'rgba(0, 211, 255, 1)',
              name: 'Annotations & Alerts',
              type: 'dashboard',
            },
            {
              name: 'Responder actions',
              datasource: p.datasource,
              enable: true,
              hide: false,
              iconColor: 'orange',
              expr: q('sum by (action, result) (increase(herd_responder_actions_total{%(resp)s, result=~"applied|failed"}[2m])) > 0'),
              step: '60s',
              titleFormat: 'herd {{action}}',
              textFormat: '{{result}}',
              tagKeys: 'action,result',
              useValueForTime: false,
            },
          ],
        },
        templating: {
          list: [
            {
              name: 'datasource',
              label: 'Data source',
              type: 'datasource',
              query: 'prometheus',
              regex: '',
              hide: 0,
              refresh: 1,
              current: {},
              options: [],
            },
            variable('cluster', 'cluster', 'label_values(herd_build_info{%s}, %s)' % [cfg.herdExporterSelector, cfg.clusterLabel], hide=if cfg.showMultiCluster then 0 else 2),
            variable('job', 'exporter job', 'label_values(herd_build_info{%s}, job)' % join([cfg.herdExporterSelector, clusterMatcher]), multi=true),
            variable('responder_job', 'responder job', 'label_values(herd_responder_leader{%s}, job)' % join([cfg.herdResponderSelector, clusterMatcher]), multi=true),
          ],
        },
        panels: p.layout(rows),
      },
  },
}
