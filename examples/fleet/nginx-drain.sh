#!/bin/sh
# Drain and undrain hooks for a front nginx that balances over the fleet:
# each host is one `server` line in a file of its own under $UPSTREAMS,
# included in the upstream block, and marked `down` while it is drained.
#
#   upstream app { include /etc/nginx/myapp-upstreams/*.conf; keepalive 16; }
#   # /etc/nginx/myapp-upstreams/deploy_web1.conf:  server 10.0.0.11:3000;
#
#   [fleet]
#   drain = "UPSTREAMS=/etc/nginx/myapp-upstreams sh examples/fleet/nginx-drain.sh drain"
#   undrain = "UPSTREAMS=/etc/nginx/myapp-upstreams sh examples/fleet/nginx-drain.sh undrain"
#
# The file of a host is named after $SHIPIT_HOST with every character other
# than letters, digits, '.', '_' and '-' replaced by '_' (deploy@web1 ->
# deploy_web1.conf). NGINX names the nginx binary (default: nginx on PATH);
# NGINX_PREFIX and NGINX_CONF, when set, are passed to
# `nginx -s reload` as -p and -c. A reload starts new workers without the
# drained host; the old ones finish the requests they hold.
set -eu
action=${1:-}
dir=${UPSTREAMS:?set UPSTREAMS to the directory of the per-host upstream files}
name=$(printf '%s' "${SHIPIT_HOST:?SHIPIT_HOST is not set}" | tr -c 'A-Za-z0-9._-' '_')
file="$dir/$name.conf"
[ -f "$file" ] || {
  echo "no upstream file $file for $SHIPIT_HOST" >&2
  exit 1
}
line=$(sed -e 's/[[:space:]]*down[[:space:]]*;/;/' "$file")
case $action in
drain) line=$(printf '%s\n' "$line" | sed -e 's/;[[:space:]]*$/ down;/') ;;
undrain) ;;
*)
  echo "usage: $0 drain|undrain" >&2
  exit 2
  ;;
esac
printf '%s\n' "$line" >"$file.tmp"
mv "$file.tmp" "$file"
"${NGINX:-nginx}" ${NGINX_PREFIX:+-p "$NGINX_PREFIX"} ${NGINX_CONF:+-c "$NGINX_CONF"} -s reload
