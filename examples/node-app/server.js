// A small web app for shipit's zero-downtime proof, run by pm2 in cluster
// mode behind nginx.
//
// - GET /healthz answers {"release": "<id>"}: the release directory this
//   worker runs from, so the health gate can prove the new release serves.
// - A release that contains a file named BROKEN answers 500 everywhere.
// - It tells pm2 it is ready (wait_ready) only once it listens.
// - On SIGINT/SIGTERM it stops taking new connections, answers what is in
//   flight with `Connection: close`, lingers briefly for connections the
//   cluster master had already routed to it, then exits.
"use strict";

const fs = require("fs");
const http = require("http");
const path = require("path");

const release = path.basename(__dirname);
const broken = fs.existsSync(path.join(__dirname, "BROKEN"));
const port = Number(process.env.PORT || 3000);
const lingerMs = Number(process.env.LINGER_MS || 1000);
let stopping = false;

const server = http.createServer((req, res) => {
  if (stopping) res.setHeader("Connection", "close");
  const status = broken ? 500 : 200;
  const body =
    req.url === "/healthz"
      ? JSON.stringify({ release, pid: process.pid })
      : `hello from release ${release}\n`;
  res.writeHead(status, {
    "Content-Type": req.url === "/healthz" ? "application/json" : "text/plain",
    "Content-Length": Buffer.byteLength(body),
  });
  res.end(body);
});
server.keepAliveTimeout = 5000;

server.listen(port, "127.0.0.1", () => {
  if (process.send) process.send("ready");
});

function stop() {
  if (stopping) return;
  stopping = true;
  // No new connections; idle keep-alive ones are closed now, busy ones
  // after their response (Connection: close above).
  server.close();
  server.closeIdleConnections();
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
