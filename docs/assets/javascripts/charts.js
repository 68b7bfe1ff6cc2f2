// Draw every chart on the page from the Vega-Lite spec stored in its data-spec attribute.
// vega-bundle.js (written by `profiler build`) defines window.vegaEmbed; nothing is fetched.
function drawCharts() {
  document.querySelectorAll(".vega-chart[data-spec]").forEach(function (el) {
    if (el.dataset.drawn) return;
    el.dataset.drawn = "1";
    window.vegaEmbed(el, JSON.parse(el.dataset.spec), { actions: { export: true, source: false, compiled: false, editor: false } })
      .then(function () { el.dataset.rendered = "1"; })
      .catch(function (err) {
        el.textContent = "Chart failed to draw: " + err;
        el.classList.add("vega-error");
      });
  });
}
if (window.document$) {
  window.document$.subscribe(drawCharts);  // Material's instant navigation
} else {
  document.addEventListener("DOMContentLoaded", drawCharts);
}
