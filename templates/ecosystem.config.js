// pm2 ecosystem file for @APP@, written by `shipit init --template pm2`.
// Start once:  pm2 start ecosystem.config.js   (keep this file outside the
//              releases, e.g. in @DEPLOY_TO@/shared/)
// shipit.toml: reload = "pm2 reload @APP@"
// Change: script, instances, env.
//
// Why the paths go through `current`: pm2 remembers the paths it was given.
// Given @DEPLOY_TO@/current, every worker that `pm2 reload` starts resolves
// the link itself and runs the new release. Started from inside the release
// (`cd current && pm2 start server.js`), pm2 records the resolved
// releases/<id> path instead and keeps running the old release after every
// reload: shipit's health gate (expect_body = "{release}") catches that.
module.exports = {
  apps: [
    {
      name: @APP_JSON@,
      cwd: @CURRENT_JSON@,
      script: @SCRIPT_JSON@,
      exec_mode: "cluster",
      instances: 2,
      // Graceful reload, one worker at a time: a new worker must call
      // process.send("ready") within listen_timeout before the old one is
      // sent SIGINT.
      wait_ready: true,
      listen_timeout: 10000,
      // The old worker drains after SIGINT; it is killed after kill_timeout.
      kill_timeout: 5000,
      env: {
        NODE_ENV: "production",
        PORT: @PORT_JSON@,
      },
    },
  ],
};
