// The noVNC console page: connects to the proxy URL the server put in data-websocket-url.
import RFB from "../vendor/novnc/core/rfb.js";

const screen = document.getElementById("console-screen");
const status = document.getElementById("console-status");

function show(state, text) {
  document.body.dataset.consoleState = state;
  status.textContent = text;
}

const rfb = new RFB(screen, screen.dataset.websocketUrl, { wsProtocols: ["binary"] });
rfb.scaleViewport = true;
rfb.addEventListener("connect", () => show("connected", "Connected"));
const reconnect = document.getElementById("console-reconnect");
let connected = false;

// Why the session ended, in words: the instance's state tells most of it.
function explain(clean) {
  const fallback = connected
    ? (clean ? "Disconnected: the session ended (it lasts at most a few hours)." : "Connection lost: the network or the console proxy dropped it.")
    : "Could not connect: the console link expired or the console proxy cannot be reached.";
  return fetch(document.body.dataset.liveUrl, { credentials: "same-origin" })
    .then((response) => (response.ok ? response.text() : ""))
    .then((html) => {
      const state = (html.match(/data-state="([a-z_]+)"/) || [])[1];
      if (state && state !== "running") return `Disconnected: the instance is ${state.replace("_", " ")} now.`;
      return fallback;
    })
    .catch(() => fallback);
}

rfb.addEventListener("connect", () => { connected = true; });
rfb.addEventListener("disconnect", (event) => {
  show("disconnected", event.detail.clean ? "Disconnected" : "Connection lost");
  explain(event.detail.clean).then((text) => show("disconnected", text));
  reconnect.hidden = false;
});
rfb.addEventListener("securityfailure", (event) => show("failed", `Refused: ${event.detail.reason}`));
// A console link works once: reconnecting loads the page again, which mints a fresh one.
reconnect.addEventListener("click", () => window.location.reload());
document.getElementById("console-cad").addEventListener("click", () => rfb.sendCtrlAltDel());
