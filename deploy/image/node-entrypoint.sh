#!/bin/sh
# Entry point of the launcher-node image (busybox sh). Unless LAUNCHER_ADVERTISE_ADDRESS is
# set, the node advertises its container name (e.g. launcher_node_2:5560), found by a reverse
# lookup of its own address in Docker's DNS. Unlike the container's IP address and host name,
# the name stays the same when the container restarts, is reconnected to the network, or is
# re-created by docker-compose (which moves its volume along), so the Raft membership, which
# records each member's address, keeps reaching it. Falls back to the IP address.
set -eu
if [ -z "${LAUNCHER_ADVERTISE_ADDRESS:-}" ]; then
  port="${LAUNCHER_ADVERTISE_PORT:-5560}"
  ip="$(hostname -i | awk '{print $1}')"
  name=""
  # Docker's DNS knows the container as soon as it runs; a few tries cover a slow daemon.
  for _ in 1 2 3 4 5; do
    name="$(nslookup "$ip" 2>/dev/null | sed -n 's/.*name = \([^. ]*\).*/\1/p' | head -n 1)"
    [ -n "$name" ] && break
    sleep 1
  done
  if [ -n "$name" ]; then
    LAUNCHER_ADVERTISE_ADDRESS="$name:$port"
  else
    echo "launcher-node entrypoint: no DNS name for $ip; advertising $ip:$port, which may change when the container restarts" >&2
    LAUNCHER_ADVERTISE_ADDRESS="$ip:$port"
  fi
  export LAUNCHER_ADVERTISE_ADDRESS
fi
# Restore (deploy/README.md): a snapshot file placed in an empty node volume starts a NEW
# one-node cluster from it; other replicas then join that cluster.
restore=/var/lib/rstudio-launcher/restore.snap
data_dir="${LAUNCHER_DATA_DIR:-/var/lib/rstudio-launcher/data}"
if [ "$#" -eq 0 ] && [ -f "$restore" ] && [ ! -e "$data_dir/identity.json" ]; then
  echo "launcher-node entrypoint: $restore and an empty data dir: recovering a NEW one-node cluster from it" >&2
  exec /usr/local/bin/launcher-node recover --from "$restore" --force-new-cluster
fi
exec /usr/local/bin/launcher-node "$@"
