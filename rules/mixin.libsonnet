// The herd mixin: alerts, recording rules and the dashboard. Vendor it with jsonnet-bundler
// (see README.md) or take the generated prometheus_alerts.yaml, prometheus_rules.yaml and
// dashboards_out/ from this directory.
local addRunbookURLs(mixin) = mixin {
  prometheusAlerts+:: {
    groups: [
      group {
        rules: [
          rule {
            annotations+: {
              // $ is the final object, so a user's _config override of the pattern applies.
              runbook_url: $._config.runbookURLPattern % rule.alert,
            },
          }
          for rule in group.rules
        ],
      }
      for group in super.groups
    ],
  },
};

addRunbookURLs(
  (import 'config.libsonnet') +
  (import 'alerts/alerts.libsonnet') +
  (import 'rules/rules.libsonnet') +
  (import 'dashboards/dashboards.libsonnet')
)
