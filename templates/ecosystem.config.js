// pm2 ecosystem file for @APP@, written by `shipit init --template pm2`.
// Start: pm2 start ecosystem.config.js. shipit's reload hook:
//   reload = "pm2 startOrReload @DEPLOY_TO@/shared/ecosystem.config.js --update-env"
// Change: script, instances, env.
//
// pm2 resolves `current` once, when an app starts, and `pm2 reload` alone
// restarts the workers in that old directory. Giving the real release
// directory as `cwd` and `script` on every reload (this file reads where
// `current` points each time it is loaded) makes `pm2 startOrReload` move
// the workers to the new release, one at a time.
const fs = require("fs");
const path = require("path");

// Before the first deploy there is no release yet: fall back to the link.
let current = @CURRENT_JSON@;
try {
  current = fs.realpathSync(current);
} catch (e) {}

module.exports = {
  apps: [
    {
      name: @APP_JSON@,
      cwd: current,
      script: path.join(current, "server.js"),
      exec_mode: "cluster",
      instances: 2,
      // Graceful reload: a new worker must call process.send("ready")
      // before the old one is stopped, within listen_timeout.
      wait_ready: true,
      listen_timeout: 10000,
      // On SIGINT the old worker stops accepting and drains; it is killed
      // only after kill_timeout.
      kill_timeout: 5000,
      env: {
        NODE_ENV: "production",
        PORT: @PORT_JSON@,
      },
    },
  ],
};
