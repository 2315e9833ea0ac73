// CPU and traffic charts of the instance page, drawn with Chart.js from the usage endpoint.
(function () {
  "use strict";

  const COLOURS = ["#0d6efd", "#198754", "#fd7e14"];
  const LABELS = { cpu: "CPU %", rx_bytes: "received", tx_bytes: "sent" };
  // The series' names in the page's language, from the canvas's data-label-* (_chart.html).
  const LABEL_KEYS = { cpu: "labelCpu", rx_bytes: "labelRx", tx_bytes: "labelTx", disk_bytes: "labelDisk" };

  function bytes(value) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(value) >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
    return `${value.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function draw(canvas, data) {
    const names = canvas.dataset.series.split(",");
    const points = names.flatMap((name) => data[name] || []);
    const empty = document.querySelector(`[data-empty-for="${canvas.id}"]`);
    if (!points.length) {
      canvas.closest(".chart-box").classList.add("d-none");
      if (empty) empty.classList.remove("d-none");
      return;
    }
    const labels = (data[names[0]] || []).map((p) => new Date(p.t).toLocaleTimeString(document.documentElement.lang || [], { hour: "2-digit", minute: "2-digit" }));
    const asBytes = canvas.dataset.unit === "bytes";
    // Ticks and grid in the page's colours, so they read in dark mode too (theme.js).
    const style = getComputedStyle(canvas);
    window.Chart.defaults.color = style.getPropertyValue("--bs-secondary-color").trim() || "#666";
    window.Chart.defaults.borderColor = style.getPropertyValue("--bs-border-color-translucent").trim() || "rgba(0,0,0,.1)";
    new window.Chart(canvas, {
      type: "line",
      data: {
        labels,
        datasets: names.map((name, i) => ({
          label: canvas.dataset[LABEL_KEYS[name]] || LABELS[name] || name,
          data: (data[name] || []).map((p) => p.v),
          borderColor: COLOURS[i % COLOURS.length],
          backgroundColor: COLOURS[i % COLOURS.length],
          pointRadius: 0,
          tension: 0.25,
        })),
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        plugins: { legend: { display: names.length > 1 } },
        scales: {
          y: asBytes
            ? { beginAtZero: true, suggestedMax: 1024, ticks: { precision: 0, callback: (v) => bytes(v) } }
            : { beginAtZero: true, suggestedMax: 100, ticks: { callback: (v) => `${v}%` } },
        },
      },
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const canvases = document.querySelectorAll("canvas[data-chart-url]");
    if (!canvases.length) return;
    fetch(canvases[0].dataset.chartUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then((response) => (response.ok ? response.json() : {}))
      .then((data) => canvases.forEach((canvas) => draw(canvas, data)))
      .catch(() => canvases.forEach((canvas) => draw(canvas, {})));
  });
})();
