// Small behaviours of the portal's pages. No inline scripts: the CSP allows only static files.
(function () {
  "use strict";

  // Sliders of a custom size show their value next to them as they move.
  function showSliderValue(input) {
    const output = document.querySelector(`[data-output-for="${input.id}"]`);
    if (!output) return;
    const unit = output.textContent.trim().split(" ").slice(1).join(" ");
    output.textContent = unit ? `${input.value} ${unit}` : input.value;
  }

  // A flavor or a custom size: only the chosen panel is shown.
  function showSizePanel() {
    const chosen = document.querySelector("input[data-size-mode]:checked");
    if (!chosen) return;
    document.querySelectorAll("[data-size-panel]").forEach((panel) => {
      panel.classList.toggle("d-none", panel.dataset.sizePanel !== chosen.value);
    });
  }

  function copy(text, button) {
    if (!navigator.clipboard) return;
    navigator.clipboard.writeText(text).then(() => {
      const label = button.textContent;
      button.textContent = document.body.dataset.copiedLabel || "copied";
      setTimeout(() => { button.textContent = label; }, 1500);
    });
  }

  document.addEventListener("input", (event) => {
    if (event.target.matches("input[type=range]")) showSliderValue(event.target);
  });
  document.addEventListener("change", (event) => {
    if (event.target.matches("input[data-size-mode]")) showSizePanel();
  });
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-copy], [data-copy-from]");
    if (!button) return;
    const source = button.dataset.copyFrom ? document.getElementById(button.dataset.copyFrom) : null;
    copy(source ? source.value : button.dataset.copy, button);
  });
  // Polled fragments carry the version they show (data-etag); the server answers 304, and
  // htmx swaps nothing, while it is still the current one.
  document.addEventListener("htmx:configRequest", (event) => {
    const version = event.detail.elt && event.detail.elt.dataset ? event.detail.elt.dataset.etag : "";
    if (version && event.detail.verb === "get") event.detail.headers["If-None-Match"] = `"${version}"`;
  });

  // Flavor cards too small for the chosen image are greyed out and cannot be picked.
  function imageNeeds() {
    const data = document.getElementById("image-needs");
    return data ? JSON.parse(data.textContent) : null;
  }
  function markFlavorsForImage() {
    const needs = imageNeeds();
    const image = document.querySelector("input[name=image]:checked");
    if (!needs || !image) return;
    const need = needs[image.value] || { disk_gb: 0, memory_mb: 0 };
    document.querySelectorAll("input[name=flavor][data-disk-gb]").forEach((input) => {
      const small = Number(input.dataset.diskGb) < need.disk_gb || Number(input.dataset.memoryMb) < need.memory_mb;
      input.disabled = small;
      const card = document.querySelector(`label[for="${input.id}"]`);
      if (card) card.classList.toggle("too-small", small);
      const why = document.querySelector(`[data-too-small-for="${input.id}"]`);
      if (why) why.classList.toggle("d-none", !small);
      if (small && input.checked) input.checked = false;
    });
  }

  // Creating without an SSH key: say how one would log in.
  function showKeyWarning() {
    const warning = document.getElementById("no-key-warning");
    if (!warning) return;
    const picked = document.querySelector("input[name=ssh_keys]:checked");
    warning.classList.toggle("d-none", Boolean(picked));
  }

  document.addEventListener("change", (event) => {
    if (event.target.matches("input[name=image]")) markFlavorsForImage();
    if (event.target.matches("input[name=ssh_keys]")) showKeyWarning();
  });

  // The serial console log is a box of its own height (portal.css) showing its newest lines.
  function scrollLogsToEnd() {
    document.querySelectorAll("pre.console-log").forEach((pre) => { pre.scrollTop = pre.scrollHeight; });
  }
  document.addEventListener("htmx:afterSwap", scrollLogsToEnd);

  document.addEventListener("DOMContentLoaded", () => {
    scrollLogsToEnd();
    document.querySelectorAll("input[type=range]").forEach(showSliderValue);
    showSizePanel();
    markFlavorsForImage();
    showKeyWarning();
  });
})();
