#!/bin/sh
# Drain and undrain hooks for a front nginx that balances over the fleet:
# each host is one `server` line in a file of its own under $UPSTREAMS,
# included in the upstream block, and marked `down` while it is drained.
#
#   upstream app { include /etc/nginx/myapp-upstreams/*.conf; keepalive 16; }
#   # /etc/nginx/myapp-upstreams/deploy_web1.conf:  server 10.0.0.11:3000;
#
#   [fleet]   # nginx on the controller:
#   drain = "UPSTREAMS=/etc/nginx/myapp-upstreams sh examples/fleet/nginx-drain.sh drain"
#   undrain = "UPSTREAMS=/etc/nginx/myapp-upstreams sh examples/fleet/nginx-drain.sh undrain"
#   # nginx on another machine (ssh passes no environment: give the host
#   # as an argument):
#   drain = "ssh lb sudo UPSTREAMS=/etc/nginx/myapp-upstreams sh /opt/shipit/nginx-drain.sh drain \"$SHIPIT_HOST\""
#
# Usage: nginx-drain.sh drain|undrain [HOST]; HOST defaults to $SHIPIT_HOST
# (which shipit sets for the hook). The file of a host is named after it
# with every character other than letters, digits, '.', '_' and '-'
# replaced by '_' (deploy@web1 -> deploy_web1.conf). NGINX names the nginx binary (default: nginx on PATH);
# NGINX_PREFIX and NGINX_CONF, when set, are passed to `nginx -s reload`
# as -p and -c; NGINX_PID names the master's pid file (default
# /run/nginx.pid). A reload starts new workers without the drained host and
# the old ones finish the requests they hold: the hook returns once they
# have exited, so nothing reaches the host after a drain. (With client
# keep-alive, old workers close idle client connections at once, so this
# wait is short.)
set -eu
action=${1:-}
dir=${UPSTREAMS:?set UPSTREAMS to the directory of the per-host upstream files}
host=${2:-${SHIPIT_HOST:-}}
[ -n "$host" ] || {
  echo "usage: $0 drain|undrain HOST (or SHIPIT_HOST in the environment)" >&2
  exit 2
}
name=$(printf '%s' "$host" | tr -c 'A-Za-z0-9._-' '_')
file="$dir/$name.conf"
[ -f "$file" ] || {
  echo "no upstream file $file for $host" >&2
  exit 1
}
line=$(sed -e 's/[[:space:]]*down[[:space:]]*;/;/' "$file")
case $action in
drain) line=$(printf '%s\n' "$line" | sed -e 's/;[[:space:]]*$/ down;/') ;;
undrain) ;;
*)
  echo "usage: $0 drain|undrain [HOST]" >&2
  exit 2
  ;;
esac
printf '%s\n' "$line" >"$file.tmp"
mv "$file.tmp" "$file"
# The workers of the old configuration, which may still send to the host.
pidfile=${NGINX_PID:-/run/nginx.pid}
master=$(cat "$pidfile")
old=$(ps -o pid= --ppid "$master")
"${NGINX:-nginx}" ${NGINX_PREFIX:+-p "$NGINX_PREFIX"} ${NGINX_CONF:+-c "$NGINX_CONF"} -s reload
# Done when they have finished what they hold and exited (at most 60 s):
# from then on no request reaches a drained host.
i=0
while [ "$i" -lt 600 ]; do
  alive=""
  for pid in $old; do
    if [ -d "/proc/$pid" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then
      alive=1
    fi
  done
  [ -n "$alive" ] || exit 0
  sleep 0.1
  i=$((i + 1))
done
echo "nginx workers $old still run 60 s after the reload" >&2
exit 1
