// Without audit logs: node-side clients' LISTs counted by the apiserver's API Priority and Fairness
// (docs/apf-measurement.md). The responder's measurement FlowSchemas (one per client identity and
// resource, in the priority level the LISTs had) make apiserver_flowcontrol_*{flow_schema} a
// per-client, per-resource counter; herd_measurement_flowschema_info maps each flow_schema back to
// role, client, resource and identity, isolate's and protect's schemas included (while they stand
// they serve the client's LISTs instead of the measurement schema, so their requests count for it).
//
// _config.nodeClientSource chooses: 'audit' leaves every rule as the audit feed makes it; 'apf'
// makes the shared rules (herd:relists_by_resource, herd:instances_relisted) from APF alone; 'both'
// keeps the audit series and adds APF series only for a (role, client, resource) the audit feed does
// not see, so no LIST is counted twice. APF series carry source="apf".
//
// This file patches the shared rules by name, whatever their audit expression is, so it must come
// after relists.libsonnet in rules.libsonnet.
{
  prometheusRules+:: {
    local c = $._config,
    local w = c.rateWindow,
    local apf = c.nodeClientSource == 'apf' || c.nodeClientSource == 'both',
    local both = c.nodeClientSource == 'both',
    assert std.member(['audit', 'apf', 'both'], c.nodeClientSource) : "_config.nodeClientSource must be 'audit', 'apf' or 'both', not %s" % c.nodeClientSource,

    // One info series per FlowSchema, whichever responder replica exported it.
    local info = 'topk by (%(clusterLabel)s, flow_schema) (1, herd_measurement_flowschema_info{%(herdResponderSelector)s})' % c,
    // herd's schemas among the apiserver's series.
    local herdSchemas = '%(apiserverSelector)s, flow_schema=~"herd-.+"' % c,
    local strip(s) = std.stripChars(s, '\n'),
    local indent(s, n) = std.join('\n', [if l == '' then l else std.repeat(' ', n) + l for l in std.split(strip(s), '\n')]),
    // series * info: the apiserver's series labelled with the client they count.
    local byClient(series, labels) = '%s\n* on (%s, flow_schema) group_left (%s)\n%s' % [strip(series), c.clusterLabel, labels, info],
    local apfSource(expr) = 'label_replace(\n%s,\n  "source", "apf", "", ""\n)' % indent(expr, 2),
    local key = '%(clusterLabel)s, role, client, resource' % c,

    local listsRule = {
      // LISTs per second of each node-side client identity and resource, by the FlowSchema and
      // priority level that served them, summed over the apiservers.
      record: 'herd:apf_lists:rate%s' % w,
      expr: byClient(|||
        sum by (%(clusterLabel)s, flow_schema, priority_level) (
          rate(apiserver_flowcontrol_dispatched_requests_total{%(herdSchemas)s}[%(rateWindow)s])
        )
      ||| % (c { herdSchemas: herdSchemas }), 'role, client, resource, identity, action') + '\n',
    },
    local apfRelists = apfSource(|||
      sum by (%(key)s) (herd:apf_lists:rate%(rateWindow)s)
    ||| % (c { key: key })),

    // LISTs of a client and resource in the last two minutes above the pace of the ten minutes
    // before: APF cannot tell instances apart, so this stands for the audit rule's "instances that
    // relisted after being quiet". A relist loop keeps its pace and adds nothing; a schema without
    // LISTs counted 2 to 12 minutes ago (a client herd has just begun to measure) has no pace yet and
    // adds nothing either, as a stream without a baseline in HerdRelistStorm.
    local apfIncrease = apfSource(|||
      clamp_min(
        sum by (%(key)s) (
          (
            increase(apiserver_flowcontrol_dispatched_requests_total{%(herdSchemas)s}[2m])
            -
            increase(apiserver_flowcontrol_dispatched_requests_total{%(herdSchemas)s}[10m] offset 2m) / 5
            and
            apiserver_flowcontrol_dispatched_requests_total{%(herdSchemas)s} offset 12m
          )
          * on (%(clusterLabel)s, flow_schema) group_left (role, client, resource)
          %(info)s
        ),
        0
      )
    ||| % { key: key, herdSchemas: herdSchemas, clusterLabel: c.clusterLabel, info: info }),
    local apfRatio = |||
      clamp_max(
        herd:instances_relisted:increase2m{source="apf", role=~"%(syncRelistRoles)s"}
        / on (%(clusterLabel)s) group_left ()
        max by (%(clusterLabel)s) (herd_cluster_nodes{%(herdExporterSelector)s} > 0),
        1
      )
    ||| % c,

    // The rule's expression in this mode: APF alone, or audit with APF for what audit lacks.
    local merged(auditExpr, apfExpr) =
      (if both then '(\n%s\n)\nor on (%s)\n%s' % [indent(auditExpr, 2), key, strip(apfExpr)] else strip(apfExpr)) + '\n',
    local patches = {
      ['herd:relists_by_resource:rate%s' % w]: apfRelists,
      'herd:instances_relisted:increase2m': apfIncrease,
      'herd:instances_relisted:ratio2m': apfRatio,
    },
    local patchRule(r) =
      (if std.objectHas(r, 'record') && r.record == 'herd:relists_by_resource:rate%s' % w then [listsRule] else [])
      + [if std.objectHas(r, 'record') && std.objectHas(patches, r.record) then r { expr: merged(super.expr, patches[r.record]) } else r],

    groups: if !apf then super.groups else [
      if g.name == 'herd-relists.rules' then g { rules: std.flattenArrays([patchRule(r) for r in g.rules]) } else g
      for g in super.groups
    ] + [
      {
        name: 'herd-apf.rules',
        rules: [
          {
            // Rejected LISTs (429) per second by reason (queue-full, time-out, concurrency-limit).
            record: 'herd:apf_rejected:rate%s' % w,
            expr: byClient(|||
              sum by (%(clusterLabel)s, flow_schema, priority_level, reason) (
                rate(apiserver_flowcontrol_rejected_requests_total{%(herdSchemas)s}[%(rateWindow)s])
              )
            ||| % (c { herdSchemas: herdSchemas }), 'role, client, resource, identity, action') + '\n',
          },
          {
            // How long a client's LISTs queue in APF before they run, p99.
            record: 'herd:apf_list_wait_seconds:histogram_quantile',
            expr: |||
              label_replace(
                histogram_quantile(0.99,
                  sum by (%(key)s, le) (
              %(join)s
                  )
                ),
                "quantile", "0.99", "", ""
              )
            ||| % {
              key: key,
              join: indent(byClient('rate(apiserver_flowcontrol_request_wait_duration_seconds_bucket{%s, execute="true"}[%s])' % [herdSchemas, w], 'role, client, resource'), 6),
            },
          },
          {
            // Seats a client's LISTs hold right now, by priority level: what it costs the level.
            record: 'herd:apf_executing_seats:sum',
            expr: |||
              sum by (%(key)s, priority_level) (
              %(join)s
              )
            ||| % { key: key, join: indent(byClient('apiserver_flowcontrol_current_executing_seats{%s}' % herdSchemas, 'role, client, resource'), 2) },
          },
        ],
      },
    ],
  },
}
