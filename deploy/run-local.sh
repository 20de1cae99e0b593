#!/usr/bin/env bash
# Runs a local launcher cluster on 127.0.0.1, no Docker needed:
# LAUNCHER_NODES nodes (default 3) forming one Raft cluster through bootstrap-expect.
# Stays in the foreground; Ctrl-C or SIGTERM stops every node in order (graceful stop:
# membership is kept, so running it again brings the same cluster back).
#
#   LAUNCHER_NODES      number of nodes (default 3)
#   LAUNCHER_DATA       where configs, data, logs and pids go (default ./.local-cluster)
#   LAUNCHER_BASE_PORT  gRPC port of node 1; node N uses BASE+N-1 (default 5560)
#   LAUNCHER_PROFILE    cargo profile to build and run (default release)
#   LAUNCHER_PORT       HTTP port of the gateway on 127.0.0.1 (default 5559)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nodes="${LAUNCHER_NODES:-3}"
data="${LAUNCHER_DATA:-./.local-cluster}"
base_port="${LAUNCHER_BASE_PORT:-5560}"
profile="${LAUNCHER_PROFILE:-release}"
http_port="${LAUNCHER_PORT:-5559}"
mkdir -p "$data"
data="$(cd "$data" && pwd)"

if [ "$profile" = release ]; then build_flag=--release; target=release; else build_flag=; target=debug; fi
target_dir="${CARGO_TARGET_DIR:-$here/target}"
bin="$target_dir/$target/launcher-node"
gw_bin="$target_dir/$target/launcher-gateway"
echo "building launcher-node, launcher-local-plugin and launcher-gateway ($profile) ..."
(cd "$here" && cargo build $build_flag -p launcher-node -p launcher-local-plugin -p launcher-gateway --bins --quiet)
# Run as root, the nodes and the gateway give root up for a dedicated system account, their
# server-user (privilege separation): only each node's plugin spawner and Local plugin, which
# starts jobs as their own users, keep root. Run as anyone else, everything runs as that user,
# and so does every job (the Local plugin's unprivileged mode).
admin_user="$(id -un)"
if [ "$(id -u)" = 0 ]; then
  server_user=launcher
  if ! id -u "$server_user" >/dev/null 2>&1; then
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/bin/false
    useradd --system --no-create-home --shell "$nologin" "$server_user" || id -u "$server_user" >/dev/null
    echo "created the system user $server_user: the nodes and the gateway run as it"
  fi
else
  server_user="$admin_user"
fi

key="$data/secure-cookie-key"
if [ ! -s "$key" ]; then
  # umask in a subshell: later directories (scratch) must stay traversable for job users.
  (umask 077 && head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$key")
  chmod 600 "$key"
fi
# Jobs run as their users and must reach their output and TMPDIR under the scratch path.
mkdir -p "$data/scratch" && chmod 0711 "$data" "$data/scratch"
# Each node hands its data dir to server-user itself, but cannot open the directories above it.
if [ "$server_user" != "$admin_user" ] && command -v runuser >/dev/null &&
  ! runuser -u "$server_user" -- test -x "$data"; then
  echo "run-local: the user $server_user cannot reach $data (a directory above it is closed to" \
    "other users); set LAUNCHER_DATA to a directory it can reach, e.g. /var/lib/launcher-local" >&2
  exit 1
fi

join=""
for i in $(seq 1 "$nodes"); do
  join="${join:+$join,}127.0.0.1:$((base_port + i - 1))"
done

pids=()
stop_all() {
  trap - INT TERM
  echo
  echo "stopping nodes in order (graceful stop keeps membership) ..."
  if [ -n "${gw_pid:-}" ]; then
    kill -TERM "$gw_pid" 2>/dev/null || true
    wait "$gw_pid" 2>/dev/null || true
    rm -f "$data/gateway.pid"
    echo "  gateway stopped"
  fi
  for (( i=${#pids[@]}; i>=1; i-- )); do
    pid="${pids[$((i-1))]}"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$data/node$i.pid"
    echo "  node $i stopped"
  done
  exit 0
}
trap stop_all INT TERM

for i in $(seq 1 "$nodes"); do
  dir="$data/node$i"
  mkdir -p "$dir/data"
  chmod 0711 "$dir"
  cat > "$dir/launcher.conf" <<CONF
[server]
secure-cookie-key-file=$key
scratch-path=$data/scratch/node$i
server-user=$server_user

[node]
id=$i
grpc-address=127.0.0.1:$((base_port + i - 1))
data-dir=$dir/data
join=$join
bootstrap-expect=$nodes
cache-capacity-mb=64

[cluster]
name=Local
type=Local
CONF
  RSTUDIO_CONFIG_DIR="$dir" "$bin" --config "$dir/launcher.conf" >>"$dir/node.log" 2>&1 &
  pids+=("$!")
  echo "$!" > "$data/node$i.pid"
done

echo "waiting for the cluster to become Green ..."
for _ in $(seq 1 120); do
  if out="$("$bin" --config "$data/node1/launcher.conf" status 2>/dev/null)" && grep -q "status Green" <<<"$out"; then
    break
  fi
  for i in $(seq 1 "$nodes"); do
    if ! kill -0 "${pids[$((i-1))]}" 2>/dev/null; then
      echo "node $i exited; its log ($data/node$i/node.log) ends with:" >&2
      tail -20 "$data/node$i/node.log" >&2
      stop_all
    fi
  done
  sleep 0.5
done
"$bin" --config "$data/node1/launcher.conf" status || true

# The gateway: the HTTP API on 127.0.0.1:$http_port in front of every node; this user is admin.
mkdir -p "$data/gateway"
cat > "$data/gateway/launcher.conf" <<CONF
[server]
address=127.0.0.1
port=$http_port
secure-cookie-key-file=$key
server-user=$server_user
admin-users=$admin_user
nodes=$join
CONF
# LAUNCHER_NODES here is the node count; to the gateway it would mean its seed list.
env -u LAUNCHER_NODES RSTUDIO_CONFIG_DIR="$data/gateway" "$gw_bin" --config "$data/gateway/launcher.conf" >>"$data/gateway/gateway.log" 2>&1 &
gw_pid=$!
echo "$gw_pid" > "$data/gateway.pid"
for _ in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1:$http_port/status" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$gw_pid" 2>/dev/null; then
    echo "the gateway exited; its log ($data/gateway/gateway.log) ends with:" >&2
    tail -20 "$data/gateway/gateway.log" >&2
    stop_all
  fi
  sleep 0.5
done
token="$("$gw_bin" token --user "$admin_user" --key-file "$key" --ttl 12h)"
# Jobs never run as root unless the plugin allows it: as root, the example runs as nobody.
if [ "$(id -u)" = 0 ]; then
  example='{"name":"hello","cluster":"Local","command":"echo hello from $USER","user":"nobody","workingDirectory":"/tmp"}'
else
  example='{"name":"hello","cluster":"Local","command":"echo hello from $USER"}'
fi
cat <<INFO

launcher cluster running: $nodes nodes, gRPC on 127.0.0.1:$base_port..$((base_port + nodes - 1))
  data, configs, logs: $data/node<N>/   pids: $data/node<N>.pid
  status:              $bin --config $data/node1/launcher.conf status
  key:                 $key
  HTTP API (gateway):  http://127.0.0.1:$http_port   log: $data/gateway/gateway.log

Try it (token for $admin_user, an admin, valid 12 h):
  curl -s -H "Authorization: Bearer $token" http://127.0.0.1:$http_port/jobs
  curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '$example' http://127.0.0.1:$http_port/jobs
Ctrl-C stops everything.
INFO
wait
