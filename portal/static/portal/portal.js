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
      button.textContent = "copied";
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
  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("input[type=range]").forEach(showSliderValue);
    showSizePanel();
  });
})();
