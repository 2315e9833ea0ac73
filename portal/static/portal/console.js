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
rfb.addEventListener("disconnect", (event) =>
  show("disconnected", event.detail.clean ? "Disconnected" : "Connection lost"));
rfb.addEventListener("securityfailure", (event) => show("failed", `Refused: ${event.detail.reason}`));
document.getElementById("console-cad").addEventListener("click", () => rfb.sendCtrlAltDel());
