// Renders the mixin into the files committed next to it (`make rules`, checked by
// `make rules-check`): jsonnet -S -c -m <dir> generate.jsonnet
local mixin = import 'mixin.libsonnet';

{
  'prometheus_alerts.yaml': std.manifestYamlDoc(mixin.prometheusAlerts, indent_array_in_object=true, quote_keys=false),
  'prometheus_rules.yaml': std.manifestYamlDoc(mixin.prometheusRules, indent_array_in_object=true, quote_keys=false),
} + {
  ['dashboards_out/' + name]: std.manifestJsonEx(mixin.grafanaDashboards[name], '  ')
  for name in std.objectFields(mixin.grafanaDashboards)
}
