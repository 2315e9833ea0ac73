// The noVNC console page: connects to the proxy URL the server put in data-websocket-url.
import RFB from "../vendor/novnc/core/rfb.js";

const screen = document.getElementById("console-screen");
const status = document.getElementById("console-status");

// The page's words, in its language (data-t-* on <body>); the English as a fallback.
const words = document.body.dataset;
const t = (key, english) => words[key] || english;

function show(state, text) {
  document.body.dataset.consoleState = state;
  status.textContent = text;
}

// noVNC waits for ever on a connection that neither opens nor fails (a proxy or VNC server that
// accepted and went quiet); after CONSOLE_CONNECT_SECONDS the page gives up and offers Reconnect.
const CONNECT_WITHIN_MS = Number(document.body.dataset.connectWithinMs) || 30000;

const rfb = new RFB(screen, screen.dataset.websocketUrl, { wsProtocols: ["binary"] });
rfb.scaleViewport = true;
rfb.addEventListener("connect", () => show("connected", t("tConnected", "Connected")));
const reconnect = document.getElementById("console-reconnect");
let connected = false;
const giveUp = setTimeout(() => { if (!connected) rfb.disconnect(); }, CONNECT_WITHIN_MS);

// Why the session ended, in words: the instance's state tells most of it.
function explain(clean) {
  const fallback = connected
    ? (clean
      ? t("tSessionEnded", "Disconnected: the session ended (it lasts at most a few hours).")
      : t("tDropped", "Connection lost: the network or the console proxy dropped it."))
    : t("tNoConnect", "Could not connect: the console link expired or the console proxy cannot be reached.");
  return fetch(document.body.dataset.liveUrl, { credentials: "same-origin" })
    .then((response) => (response.ok ? response.text() : ""))
    .then((html) => {
      const state = (html.match(/data-state="([a-z_]+)"/) || [])[1];
      const label = (html.match(/data-state-label="([^"]*)"/) || [])[1] || (state || "").replace("_", " ");
      if (state && state !== "running") return t("tInstanceIs", "Disconnected: the instance is {state} now.").replace("{state}", label);
      return fallback;
    })
    .catch(() => fallback);
}

rfb.addEventListener("connect", () => { connected = true; clearTimeout(giveUp); });
rfb.addEventListener("disconnect", (event) => {
  clearTimeout(giveUp);
  show("disconnected", event.detail.clean ? t("tDisconnected", "Disconnected") : t("tConnectionLost", "Connection lost"));
  explain(event.detail.clean).then((text) => show("disconnected", text));
  reconnect.hidden = false;
});
rfb.addEventListener("securityfailure", (event) => show("failed", t("tRefused", "Refused: {reason}").replace("{reason}", event.detail.reason)));
// A console link works once: reconnecting loads the page again, which mints a fresh one.
reconnect.addEventListener("click", () => window.location.reload());
document.getElementById("console-cad").addEventListener("click", () => rfb.sendCtrlAltDel());
