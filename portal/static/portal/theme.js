// Bootstrap's colour mode follows the system setting. A static file, since the CSP runs no inline
// script; loaded without defer in <head>, so the first paint is already in the right mode.
// Without JavaScript the page stays in the light mode base.html names.
(function () {
  "use strict";

  const dark = window.matchMedia("(prefers-color-scheme: dark)");
  const apply = () => document.documentElement.setAttribute("data-bs-theme", dark.matches ? "dark" : "light");
  apply();
  dark.addEventListener("change", apply);
})();
