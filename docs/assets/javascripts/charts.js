// Draw every chart on the page from the Vega-Lite spec stored in its data-spec attribute,
// in vega-embed's dark theme while Material's palette is dark (slate), and draw them again
// when the reader toggles the palette (or the system's preference changes it).
// vega-bundle.js (written by `profiler build`) defines window.vegaEmbed; nothing is fetched.
var CHART_ACTIONS = { export: true, source: false, compiled: false, editor: false };

function chartTheme() {
  return document.body.getAttribute("data-md-color-scheme") === "slate" ? "dark" : "light";
}

function drawChart(el, theme) {
  var draw = (el._chartDraw || 0) + 1;  // a later draw wins over one still in flight
  el._chartDraw = draw;
  el.dataset.theme = theme;
  delete el.dataset.rendered;
  if (el._chartView) el._chartView.finalize();  // drop the old view's listeners and timers
  el._chartView = null;
  var options = { actions: CHART_ACTIONS, tooltip: { theme: theme } };
  if (theme === "dark") options.theme = "dark";
  window.vegaEmbed(el, JSON.parse(el.dataset.spec), options)
    .then(function (result) {
      if (el._chartDraw !== draw) return result.finalize();
      el._chartView = result;
      el.dataset.rendered = "1";
    })
    .catch(function (err) {
      if (el._chartDraw !== draw) return;
      el.textContent = "Chart failed to draw: " + err;
      el.classList.add("vega-error");
    });
}

function drawCharts() {
  var theme = chartTheme();
  document.querySelectorAll(".vega-chart[data-spec]").forEach(function (el) {
    if (el.dataset.theme !== theme && !el.classList.contains("vega-error")) drawChart(el, theme);
  });
}

// Material switches the palette by setting data-md-color-scheme on <body>.
new MutationObserver(drawCharts).observe(document.body, {
  attributes: true, attributeFilter: ["data-md-color-scheme"],
});
if (window.document$) {
  window.document$.subscribe(drawCharts);  // Material's instant navigation
} else {
  document.addEventListener("DOMContentLoaded", drawCharts);
}
