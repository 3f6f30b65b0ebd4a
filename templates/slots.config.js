// pm2 file for @APP@ in shipit slots, written by
// `shipit init --template pm2-slots`. Keep it in @DEPLOY_TO@/shared/.
// shipit.toml:
//   [slots]
//   start = "cd \"$SHIPIT_DEPLOY_TO\" && pm2 start shared/slots.config.js >/dev/null"
//   stop = "cd \"$SHIPIT_DEPLOY_TO\" && pm2 delete shared/slots.config.js >/dev/null"
// Change: script, env. (`>/dev/null` drops pm2's banner and process
// table; its errors go to stderr, which shipit shows and logs.)
//
// pm2 reads this file with the slot hook's variables, so it describes one
// app, @APP@-blue or @APP@-green: the release $SHIPIT_RELEASE_PATH
// listening on $SHIPIT_SLOT_SOCKET. The hooks run from the deploy root, so
// pm2's own daemon never holds a release as its working directory.
// The app tells its release id (for expect_body = "{release}") by the
// directory it runs from: path.basename(process.cwd()).
"use strict";

const slot = process.env.SHIPIT_SLOT;
if (!slot || !process.env.SHIPIT_RELEASE_PATH || !process.env.SHIPIT_SLOT_SOCKET) {
  throw new Error("run this file from shipit's slot hooks: SHIPIT_SLOT, SHIPIT_RELEASE_PATH and SHIPIT_SLOT_SOCKET must be set");
}

module.exports = {
  apps: [
    {
      name: @APP_JSON@ + "-" + slot,
      cwd: process.env.SHIPIT_RELEASE_PATH,
      script: "server.js",
      exec_mode: "fork",
      instances: 1,
      // `pm2 start` returns once the app said it listens.
      wait_ready: true,
      listen_timeout: 10000,
      // The app drains for LINGER_MS after SIGINT (longer than nginx's
      // upstream keepalive_timeout); pm2 kills it only after kill_timeout.
      kill_timeout: 10000,
      env: {
        NODE_ENV: "production",
        SOCKET: process.env.SHIPIT_SLOT_SOCKET,
        // The front's link: while it does not name SOCKET, this slot is
        // not live and closes every kept-alive connection after its answer.
        SLOT_LINK: process.env.SHIPIT_SLOT_LINK,
        LINGER_MS: "6000",
      },
    },
  ],
};
