// /reports: the charts, drawn with uPlot (vendor/uplot/) from the figures the page carries as
// JSON (#report-data), the same figures as its tables. No inline script: the page's
// Content-Security-Policy allows scripts from 'self' only.
(function () {
  "use strict";
  var source = document.getElementById("report-data");
  if (!source || typeof window.uPlot === "undefined") return;
  var data = JSON.parse(source.textContent);
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  var MAX_GROUPS = COLORS.length;
  var labels = data.buckets;
  var xs = labels.map(function (_, i) { return i; });
  var byGroup = {};
  data.series.forEach(function (point) {
    (byGroup[point.group] = byGroup[point.group] || {})[point.bucket] = point;
  });

  function values(group, field, scale) {
    var points = byGroup[group] || {};
    return labels.map(function (bucket) {
      var point = points[bucket];
      var v = point ? point[field] : null;
      return v === null || v === undefined ? null : v * scale;
    });
  }

  var HOURS = 1 / 3600;
  var grouped = data.breakdown !== "none";
  // with a breakdown: the groups with the most work, at most one per colour
  var totals = {};
  data.totals.forEach(function (t) { totals[t.group] = t; });
  var groups = data.groups.slice().sort(function (a, b) {
    var ta = totals[a.key] || {}, tb = totals[b.key] || {};
    return ((tb.created || 0) + (tb.replies || 0)) - ((ta.created || 0) + (ta.replies || 0));
  }).slice(0, MAX_GROUPS);
  var single = data.groups.length ? data.groups[0].key : "all";

  function lines(list) {
    return list.map(function (item, i) {
      return { label: item[0], values: item[1], color: COLORS[i % COLORS.length] };
    });
  }

  function byEachGroup(field, scale) {
    return lines(groups.map(function (g) { return [g.label, values(g.key, field, scale)]; }));
  }

  var charts = {
    volume: {
      unit: "conversations",
      lines: grouped ? byEachGroup("created", 1) : lines([
        ["Created", values(single, "created", 1)],
        ["Closed", values(single, "closed", 1)],
        ["Customer messages", values(single, "customer_messages", 1)],
        ["Replies", values(single, "replies", 1)],
      ]),
    },
    times: {
      unit: "hours",
      lines: grouped ? byEachGroup("first_response_median_seconds", HOURS) : lines([
        ["First response, median", values(single, "first_response_median_seconds", HOURS)],
        ["First response, 90th pct.", values(single, "first_response_p90_seconds", HOURS)],
        ["Resolution, median", values(single, "resolution_median_seconds", HOURS)],
        ["Resolution, 90th pct.", values(single, "resolution_p90_seconds", HOURS)],
      ]),
    },
    sla: {
      unit: "% met",
      range: [0, 100],
      lines: grouped ? byEachGroup("sla_first_response_percent", 1) : lines([
        ["First response", values(single, "sla_first_response_percent", 1)],
        ["Resolution", values(single, "sla_resolution_percent", 1)],
      ]),
    },
  };

  function round(v) {
    return v === null || v === undefined ? "–" : String(Math.round(v * 10) / 10);
  }

  var plots = [];
  document.querySelectorAll(".chart[data-chart]").forEach(function (box) {
    var chart = charts[box.getAttribute("data-chart")];
    if (!chart) return;
    var yScale = { auto: true };
    if (chart.range) yScale = { auto: false, range: chart.range };
    var options = {
      width: Math.max(box.clientWidth, 280),
      height: 240,
      padding: [12, 36, 0, 0],  // room for the last bucket's label
      scales: { x: { time: false }, y: yScale },
      axes: [
        {
          incrs: [1, 2, 3, 7, 14, 28, 56, 91],
          values: function (u, splits) {
            return splits.map(function (i) { return Number.isInteger(i) && labels[i] ? labels[i] : ""; });
          },
        },
        { label: chart.unit },
      ],
      series: [{ label: data.bucket, value: function (u, i) { return i === null ? "" : labels[i] || ""; } }]
        .concat(chart.lines.map(function (line) {
          return {
            label: line.label,
            stroke: line.color,
            width: 2,
            points: { show: true, size: 6, fill: line.color },
            value: function (u, v) { return round(v); },
          };
        })),
    };
    var rows = [xs].concat(chart.lines.map(function (line) { return line.values; }));
    plots.push({ box: box, plot: new window.uPlot(options, rows, box) });
    box.setAttribute("data-drawn", "true");
  });

  var pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () {
      plots.forEach(function (p) { p.plot.setSize({ width: Math.max(p.box.clientWidth, 280), height: 240 }); });
    }, 150);
  });
})();
