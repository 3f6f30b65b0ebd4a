#!/bin/sh
# Reload hook for one fleet host that runs examples/node-app without a
# process manager. It stops the app of the release that was live (SIGTERM:
# the app answers what it has with `Connection: close`, lingers, exits),
# then starts the new release in the background. The host's own settings
# (LISTEN_HOST, PORT, LINGER_MS...) are in <deploy_to>/shared/app.env, one
# VAR=value a line; copy this file to <deploy_to>/shared/ on each host.
#
#   [hooks]
#   reload = "sh \"$SHIPIT_DEPLOY_TO/shared/restart.sh\""
#
# With [fleet], the drain hook has taken the host out of the balancer
# before this runs, so the moment with no app here is never seen by users.
set -eu
# The daemon must never hold a release as its working directory (prune
# keeps releases that running processes use).
cd "$SHIPIT_DEPLOY_TO"
set -a
. ./shared/app.env
set +a
pidfile=shared/app.pid
if [ -s "$pidfile" ]; then
  old=$(cat "$pidfile")
  if kill -TERM "$old" 2>/dev/null; then
    # Wait (at most 30 s) until it has exited, or is a zombie nobody reaped.
    i=0
    while [ -d "/proc/$old" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$old/status" 2>/dev/null &&
      [ "$i" -lt 300 ]; do
      sleep 0.1
      i=$((i + 1))
    done
  fi
fi
nohup node "$SHIPIT_RELEASE_PATH/server.js" >>shared/app.log 2>&1 </dev/null &
echo $! >"$pidfile"
