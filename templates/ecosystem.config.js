// pm2 ecosystem file for @APP@, written by `shipit init --template pm2`.
// Install: copy it to @DEPLOY_TO@/shared/ecosystem.config.js (outside the
//          releases; shipit creates shared/ on the first deploy, or create
//          it yourself) and set in shipit.toml:
//   [hooks]
//   reload = "cd \"$SHIPIT_DEPLOY_TO\" && pm2 startOrReload shared/ecosystem.config.js --update-env >/dev/null"
// That one hook starts the app on the first deploy (after the swap, when
// @DEPLOY_TO@/current exists) and reloads it gracefully, one worker at a
// time, on every later deploy and rollback. Run from the deploy root, it
// never leaves the pm2 daemon's working directory inside a release.
// `>/dev/null` drops pm2's banner and process table (a dozen lines a
// deploy); pm2 writes its errors to stderr, which shipit shows and logs.
// Change: script, instances, env (PORT must match the nginx template's
// upstream and health.url).
//
// Why the paths go through `current`: pm2 remembers the paths it was given.
// Given @DEPLOY_TO@/current, every worker that `pm2 reload` starts resolves
// the link itself and runs the new release. Started from inside the release
// (`cd current && pm2 start server.js`), pm2 records the resolved
// releases/<id> path instead and keeps running the old release after every
// reload: shipit's health gate (expect_body = "{release}") catches that.
//
// How the app knows its release id, for that gate: from the directory it
// runs from, resolved: path.basename(process.cwd()) (cwd below goes
// through `current`, and the kernel resolves it), or of
// fs.realpathSync(__dirname), not from $SHIPIT_RELEASE.
//
// `--update-env` in the reload hook: pm2 otherwise keeps the environment
// of the first start, so a changed secret in shipit.toml's env_file (which
// the hook gets) would never reach the app.
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
