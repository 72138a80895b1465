// Minimal Grafana (schemaVersion 39, Grafana 10/11) panel builders, so the mixin needs no
// grafonnet vendoring. Panels carry only their size (gridPos.w, gridPos.h); layout() places them
// row by row, left to right, and numbers them, so ids are unique and panels never overlap.
{
  datasource:: { type: 'prometheus', uid: '${datasource}' },

  // A range query (time series or heatmap buckets).
  target(expr, legend='__auto', format='time_series', interval=''):: {
    datasource: $.datasource,
    expr: expr,
    legendFormat: legend,
    format: format,
    range: true,
    instant: false,
    [if interval != '' then 'interval']: interval,
  },

  // An instant query rendered as a table.
  tableTarget(expr):: {
    datasource: $.datasource,
    expr: expr,
    legendFormat: '__auto',
    format: 'table',
    range: false,
    instant: true,
  },

  local withRefIds(targets) = [
    targets[i] { refId: std.char(std.codepoint('A') + i) }
    for i in std.range(0, std.length(targets) - 1)
  ],

  local base(type, title, description, targets, w, h) = {
    type: type,
    title: title,
    description: description,
    datasource: $.datasource,
    targets: withRefIds(targets),
    gridPos: { w: w, h: h },
  },

  row(title):: {
    type: 'row',
    title: title,
    collapsed: false,
    panels: [],
    gridPos: { w: 24, h: 1 },
  },

  timeseries(title, description, targets, unit='short', w=12, h=8, stack='none', min=0, max=null, draw='line', legendCalcs=['mean', 'max', 'lastNotNull'])::
    base('timeseries', title, description, targets, w, h) {
      fieldConfig: {
        defaults: {
          unit: unit,
          [if min != null then 'min']: min,
          [if max != null then 'max']: max,
          color: { mode: 'palette-classic' },
          custom: {
            drawStyle: draw,
            lineWidth: 1,
            fillOpacity: if stack != 'none' || draw == 'bars' then 60 else 10,
            gradientMode: 'none',
            showPoints: 'never',
            spanNulls: false,
            axisSoftMin: 0,
            stacking: { mode: stack, group: 'A' },
          },
        },
        overrides: [],
      },
      options: {
        legend: { showLegend: true, displayMode: 'table', placement: 'bottom', calcs: legendCalcs, sortBy: 'Max', sortDesc: true },
        tooltip: { mode: 'multi', sort: 'desc' },
      },
    },

  // thresholds: list of [value, color] after the base color.
  stat(title, description, targets, unit='short', w=3, h=4, baseColor='green', thresholds=[], decimals=null, graph='none'):: base('stat', title, description, targets, w, h) {
    fieldConfig: {
      defaults: {
        unit: unit,
        [if decimals != null then 'decimals']: decimals,
        color: { mode: 'thresholds' },
        thresholds: {
          mode: 'absolute',
          steps: [{ color: baseColor, value: null }] + [{ value: t[0], color: t[1] } for t in thresholds],
        },
        noValue: '0',
      },
      overrides: [],
    },
    options: {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      colorMode: 'value',
      graphMode: graph,
      justifyMode: 'auto',
      orientation: 'auto',
      textMode: 'auto',
      wideLayout: true,
      showPercentChange: false,
    },
  },

  // A table of instant queries. rename maps result columns (e.g. Value) to headers;
  // overrides are Grafana field overrides (e.g. value mappings per column).
  table(title, description, targets, w=12, h=8, rename={}, sortBy='Value', unit='short', overrides=[]):: base('table', title, description, targets, w, h) {
    fieldConfig: {
      defaults: {
        unit: unit,
        custom: { align: 'auto', cellOptions: { type: 'auto' }, filterable: true },
      },
      overrides: overrides,
    },
    options: {
      showHeader: true,
      cellHeight: 'sm',
      footer: { show: false, reducer: ['sum'], fields: '', countRows: false },
      sortBy: [{ displayName: if std.objectHas(rename, sortBy) then rename[sortBy] else sortBy, desc: true }],
    },
    transformations: [
      { id: 'merge', options: {} },
      { id: 'organize', options: { excludeByName: { Time: true }, indexByName: {}, renameByName: rename } },
    ],
  },

  // A Prometheus classic-histogram heatmap: targets must use format 'heatmap' and legend '{{le}}'.
  heatmap(title, description, targets, unit='s', w=12, h=8):: base('heatmap', title, description, targets, w, h) {
    fieldConfig: { defaults: { custom: { hideFrom: { legend: false, tooltip: false, viz: false }, scaleDistribution: { type: 'linear' } } }, overrides: [] },
    options: {
      calculate: false,
      cellGap: 1,
      color: { mode: 'scheme', scheme: 'Oranges', fill: 'dark-orange', exponent: 0.5, scale: 'exponential', steps: 64, reverse: false },
      exemplars: { color: 'rgba(255,0,255,0.7)' },
      filterValues: { le: 1e-9 },
      legend: { show: true },
      rowsFrame: { layout: 'auto' },
      tooltip: { mode: 'single', yHistogram: true, showColorScale: false },
      yAxis: { axisPlacement: 'left', reverse: false, unit: unit },
    },
  },

  // A 0/1 state timeline with a text per value, e.g. { '0': ['Unavailable', 'red'], '1': ['Available', 'green'] }.
  stateTimeline(title, description, targets, states, w=12, h=8):: base('state-timeline', title, description, targets, w, h) {
    fieldConfig: {
      defaults: {
        color: { mode: 'thresholds' },
        thresholds: { mode: 'absolute', steps: [{ color: 'text', value: null }] },
        mappings: [{
          type: 'value',
          options: { [k]: { text: states[k][0], color: states[k][1] } for k in std.objectFields(states) },
        }],
        custom: { lineWidth: 0, fillOpacity: 80 },
      },
      overrides: [],
    },
    options: {
      showValue: 'never',
      mergeValues: true,
      alignValue: 'left',
      rowHeight: 0.9,
      legend: { showLegend: true, displayMode: 'list', placement: 'bottom' },
      tooltip: { mode: 'single', sort: 'none' },
    },
  },

  // A value-mapping override for one table column: { value: [text, color] }.
  columnMapping(column, states):: {
    matcher: { id: 'byName', options: column },
    properties: [
      { id: 'mappings', value: [{ type: 'value', options: { [k]: { text: states[k][0], color: states[k][1] } for k in std.objectFields(states) } }] },
      { id: 'custom.cellOptions', value: { type: 'color-text' } },
    ],
  },

  // Places rows of panels on the 24-column grid and numbers them from 1.
  // rows: [{ title: 'Row title', panels: [panel, ...] }]. A row with an empty title has no row header.
  layout(rows)::
    local items = std.flattenArrays([
      (if r.title != '' then [$.row(r.title)] else []) + r.panels
      for r in rows
    ]);
    local step(state, p) =
      local w = p.gridPos.w;
      local h = p.gridPos.h;
      if p.type == 'row' then
        local y = state.y + state.lineH;
        state {
          y: y + 1,
          x: 0,
          lineH: 0,
          id: state.id + 1,
          out+: [p { id: state.id, gridPos: { x: 0, y: y, w: 24, h: 1 } }],
        }
      else
        local wrap = state.x + w > 24;
        local x = if wrap then 0 else state.x;
        local y = if wrap then state.y + state.lineH else state.y;
        local lineH = if wrap then 0 else state.lineH;
        state {
          x: x + w,
          y: y,
          lineH: std.max(lineH, h),
          id: state.id + 1,
          out+: [p { id: state.id, gridPos: { x: x, y: y, w: w, h: h } }],
        };
    std.foldl(step, items, { x: 0, y: 0, lineH: 0, id: 1, out: [] }).out,
}
