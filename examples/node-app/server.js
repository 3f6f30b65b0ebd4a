// A small web app for shipit's zero-downtime proof, behind nginx: run by
// pm2 in cluster mode on a TCP port (the reload strategy), by systemd with
// socket activation, or one process per slot on a unix socket (slots).
//
// - GET /healthz answers {"release": "<id>"}: the release directory this
//   worker runs from, so the health gate can prove the new release serves.
// - A release that contains a file named BROKEN (or runs with BROKEN=1)
//   answers 500 everywhere; one with NEVER_READY never listens.
// - Started by systemd with a socket unit (LISTEN_FDS >= 1 and LISTEN_PID
//   naming this process, as sd_listen_fds(3) describes), it serves the
//   socket systemd passed as fd 3 and binds nothing itself: systemd keeps
//   that socket open across restarts, so connections wait instead of being
//   refused. Otherwise SOCKET=<path> listens on that unix socket (a stale
//   socket file is removed first; mode 0666 so that nginx workers, another
//   user, can connect), else PORT (default 3000) on LISTEN_HOST (default
//   127.0.0.1).
// - With SLOT_LINK (shipit slots: the front's link, run/app.sock), it
//   answers with `Connection: close` whenever that link does not name its
//   socket: once shipit switched the front to the other slot, each pooled
//   upstream connection to this one is closed after its next answer, and
//   the front opens the next one to the live slot. Without it a front that
//   pools connections (nginx `keepalive`) keeps sending users to the old
//   release for as long as the load keeps the pool busy.
// - A release with a file SOCKET_MODE (octal, e.g. 0755) gives its socket
//   that mode instead of 0666 (a socket the front may not connect to).
// - A release with a file CRASH exits at once: a release that crashes at
//   startup.
// - A release with a file WRONG_SOCKET (and SLOT_LINK) listens on the
//   socket the front's link names, the live slot's, instead of SOCKET: a
//   start command gone wrong.
// - It tells pm2 it is ready (wait_ready) only once it listens.
// - On SIGINT/SIGTERM it stops taking new connections and answers every
//   request on the connections it has with `Connection: close`, so a proxy
//   that pools upstream connections drops each one after its next answer.
//   It stays up for LINGER_MS (default 1000): with a pooling proxy, set it
//   above the proxy's upstream keepalive_timeout, so that no pooled
//   connection outlives the process; in cluster mode it also covers
//   connections the master had already routed to this worker.
"use strict";

const fs = require("fs");
const http = require("http");
const path = require("path");

// The release id is the name of the directory this code runs from,
// resolved (releases/<id>, never `current`). Not $SHIPIT_RELEASE: pm2
// keeps the environment of an app's first start, so after a reload that
// variable still names the first release, and a gate on "{release}" would
// fail however healthy the new one is.
const release = path.basename(fs.realpathSync(__dirname));
const broken =
  fs.existsSync(path.join(__dirname, "BROKEN")) || process.env.BROKEN === "1";
const never = fs.existsSync(path.join(__dirname, "NEVER_READY"));
const port = Number(process.env.PORT || 3000);
let socket = process.env.SOCKET || "";
const activated =
  Number(process.env.LISTEN_FDS || 0) >= 1 &&
  Number(process.env.LISTEN_PID) === process.pid;
const lingerMs = Number(process.env.LINGER_MS || 1000);
const slotLink = process.env.SLOT_LINK || "";
if (slotLink && fs.existsSync(path.join(__dirname, "WRONG_SOCKET"))) {
  socket = path.join(path.dirname(slotLink), fs.readlinkSync(slotLink));
}
let stopping = false;

if (fs.existsSync(path.join(__dirname, "CRASH"))) {
  console.error("CRASH: this release exits at startup");
  process.exit(1);
}

// Is the front's link naming this slot's socket? (A readlink per request:
// cheap, and it follows every switch at once.)
function live() {
  if (!slotLink) return true;
  try {
    return fs.readlinkSync(slotLink) === path.basename(socket);
  } catch (e) {
    return false;
  }
}

const server = http.createServer((req, res) => {
  if (stopping || !live()) res.setHeader("Connection", "close");
  const status = broken ? 500 : 200;
  const body =
    req.url === "/healthz"
      ? JSON.stringify({
          release,
          pid: process.pid,
          // Shown to prove the point above (the end-to-end suite reads it).
          env_release: process.env.SHIPIT_RELEASE || null,
        })
      : `hello from release ${release}\n`;
  res.writeHead(status, {
    "Content-Type": req.url === "/healthz" ? "application/json" : "text/plain",
    "Content-Length": Buffer.byteLength(body),
  });
  res.end(body);
});
server.keepAliveTimeout = 5000;

function ready() {
  if (socket && !activated) {
    const modeFile = path.join(__dirname, "SOCKET_MODE");
    const mode = fs.existsSync(modeFile)
      ? parseInt(fs.readFileSync(modeFile, "utf8").trim(), 8)
      : 0o666;
    fs.chmodSync(socket, mode);
  }
  if (process.send) process.send("ready");
}

if (never) {
  // A release that never comes up: alive, but listening nowhere.
  setInterval(() => {}, 60000);
} else if (activated) {
  // Closing it (on SIGTERM) closes this process's copy only.
  server.listen({ fd: 3 }, ready);
} else if (socket) {
  try {
    fs.unlinkSync(socket);
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
  }
  server.listen(socket, ready);
} else {
  server.listen(port, process.env.LISTEN_HOST || "127.0.0.1", ready);
}

function stop() {
  if (stopping) return;
  stopping = true;
  if (never) process.exit(0);
  // No new connections. Kept-alive ones are not cut while idle (a proxy
  // may be sending on one right now): each is closed after its next
  // answer (Connection: close above), or by the proxy's own idle timeout.
  server.close();
  // Do not exit the moment we are idle. In cluster mode the master accepts
  // connections and hands them to workers; it closes its copy only when the
  // worker acknowledges. A handoff sent just before the master learned that
  // this worker stopped listening is acknowledged (and re-routed) only while
  // this process is alive: exiting early leaves that connection open with
  // nobody to answer it. So linger, then exit.
  setTimeout(() => {
    server.closeAllConnections();
    process.exit(0);
  }, lingerMs);
}

process.on("SIGINT", stop);
process.on("SIGTERM", stop);
process.on("message", (msg) => {
  if (msg === "shutdown") stop();
});
