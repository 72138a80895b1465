// Helpers shared by the recording rules and alerts.
{
  // honorExported copies exported_<label> back to <label> for each label herd exports as data
  // (namespace, service, node, ...). Prometheus renames those to exported_<label> when the scrape
  // attaches a target label of the same name and honor_labels is false (a ServiceMonitor without
  // honorLabels: true). With honor_labels: true there is no exported_<label> and nothing changes.
  honorExported(expr, labels)::
    std.foldl(
      function(e, l) 'label_replace(%s, "%s", "$1", "exported_%s", "(.+)")' % [e, l, l],
      labels,
      expr,
    ),

  // exportedLabels lists exported_<label> for labels, to drop them in an aggregation.
  exportedLabels(labels):: std.join(', ', ['exported_' + l for l in labels]),
}
