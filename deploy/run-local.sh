#!/usr/bin/env bash
# Runs a local launcher cluster on 127.0.0.1, no Docker needed:
# LAUNCHER_NODES nodes (default 3) forming one Raft cluster through bootstrap-expect, and a
# gateway. Stays in the foreground; Ctrl-C, SIGTERM or `run-local.sh stop` stops the gateway,
# then every node (graceful stop: membership is kept, so running it again brings the same
# cluster back).
#
#   run-local.sh                   start the cluster (refused while one runs in LAUNCHER_DATA)
#   run-local.sh status            each process and the cluster's health; exit 0 when all run
#                                  and it is Green, 1 when something is down, 3 when not running
#   run-local.sh stop              stop the whole cluster gracefully (as Ctrl-C in its terminal)
#   run-local.sh stop-node N       stop node N gracefully (SIGTERM); the cluster keeps running
#   run-local.sh start-node N      start node N again with its config and data; waits for Green
#   run-local.sh restart-node N    both
#
#   LAUNCHER_NODES      number of nodes (default 3)
#   LAUNCHER_DATA       where configs, data, logs and pids go (default ./.local-cluster)
#   LAUNCHER_BASE_PORT  gRPC port of node 1; node N uses BASE+N-1 (default 5560)
#   LAUNCHER_PROFILE    cargo profile to build and run (default release)
#   LAUNCHER_PORT       HTTP port of the gateway on 127.0.0.1 (default 5559)
#   LAUNCHER_BUILD      0: run the binaries already built for LAUNCHER_PROFILE, no cargo
#   LAUNCHER_WAIT_SECONDS  how long starting waits for the cluster to be Green (default 120)
#
# The subcommands read the ports and binaries the running cluster was started with from
# LAUNCHER_DATA, so only LAUNCHER_DATA needs to match. `. LAUNCHER_DATA/env` (written at start)
# sets LAUNCHER_URL, LAUNCHER_TOKEN, LAUNCHER_ADMIN_TOKEN, LAUNCHER_DATA and PATH for launcherctl.
#
# A node stopped through stop-node leaves a marker (LAUNCHER_DATA/node<N>.stopped) until
# start-node has it back: the foreground run watches the pid files and stops everything only
# when a node or the gateway exits without one.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${LAUNCHER_DATA:-./.local-cluster}"
wait_seconds="${LAUNCHER_WAIT_SECONDS:-120}"
self="$0"

usage() {
  sed -n '/^#   run-local.sh  /,/^#   run-local.sh restart-node/p' "${BASH_SOURCE[0]}" | sed 's/^#   /  /'
}

die() {
  echo "run-local: $*" >&2
  exit 1
}

# The command that reaches this cluster: the data dir is named unless it is the default one of
# the current directory.
cmd_line() {
  if [ "$data" = "$(realpath -m .local-cluster)" ]; then
    echo "$self${*:+ $*}"
  else
    echo "LAUNCHER_DATA=$data $self${*:+ $*}"
  fi
}

# True when pid is a live (not zombie) process whose command line contains want: a pid file
# left by a crash may name a pid the system has given to something else since.
alive() {
  local pid="$1" want="$2" stat cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ] || return 1
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ "$cmdline" == *"$want"* ]]
}

pid_in() { cat "$1" 2>/dev/null || true; }

node_conf() { echo "$data/node$1/launcher.conf"; }
gw_conf() { echo "$data/gateway/launcher.conf"; }

# Waits (polling) until pid is gone; false after `secs` seconds.
wait_gone() {
  local pid="$1" want="$2" secs="$3" deadline
  deadline=$((SECONDS + secs))
  while alive "$pid" "$want"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# SIGTERM (a graceful stop), SIGKILL if it is still there after 30 s.
stop_process() {
  local pidfile="$1" want="$2" label="$3" pid
  pid="$(pid_in "$pidfile")"
  if alive "$pid" "$want"; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$want" 30; then
      echo "  $label (pid $pid) did not stop within 30 s: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" "$want" 10 || true
    fi
    echo "  $label stopped"
  fi
  rm -f "$pidfile"
}

# Starts node i detached (its own session: a Ctrl-C in this terminal reaches only the
# foreground run, which stops the nodes in order) and records its pid.
spawn_node() {
  local i="$1" dir="$data/node$1"
  RSTUDIO_CONFIG_DIR="$dir" setsid "$bin" --config "$dir/launcher.conf" </dev/null >>"$dir/node.log" 2>&1 &
  echo "$!" >"$data/node$i.pid"
  until_exec "$!" "$dir/launcher.conf"
}

# Until the forked shell has become the program, its pid looks like a dead node to the watch.
until_exec() {
  local deadline=$((SECONDS + 5))
  until alive "$1" "$2" || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.05; done
}

# The cluster's status line from the first node that answers, as `launcher-node status` prints it.
cluster_status() {
  local i out
  for i in $(seq 1 "$nodes"); do
    if alive "$(pid_in "$data/node$i.pid")" "$(node_conf "$i")" &&
      out="$("$bin" --config "$(node_conf "$i")" status 2>/dev/null)"; then
      echo "$out"
      return 0
    fi
  done
  return 1
}

# Green as the leader sees it, asked through node $1 when given: a node that was just restarted
# answers only once it is back in touch with the leader, whose view may still be from before.
is_green() {
  local out
  if [ -n "${1:-}" ]; then
    out="$("$bin" --config "$(node_conf "$1")" status 2>/dev/null)" || return 1
  else
    out="$(cluster_status)" || return 1
  fi
  grep -q "status Green" <<<"$out"
}

# Reads what the foreground run recorded: node count, ports and binaries.
load_state() {
  local state="$data/run-local.state" k v
  [ -f "$state" ] || die "no local cluster in $data (no $state); start one with: $(cmd_line)"
  while IFS='=' read -r k v; do
    case "$k" in
      nodes) nodes="$v" ;;
      base_port) base_port="$v" ;;
      http_port) http_port="$v" ;;
      bin) bin="$v" ;;
      gw_bin) gw_bin="$v" ;;
    esac
  done <"$state"
}

# The pids of this data dir's processes that still run, one "label pid where" a line.
running_here() {
  local i pid
  pid="$(pid_in "$data/run-local.pid")"
  if alive "$pid" run-local.sh; then echo "run-local.sh (the foreground run) pid $pid"; fi
  pid="$(pid_in "$data/gateway.pid")"
  if alive "$pid" "$(gw_conf)"; then echo "gateway pid $pid (http://127.0.0.1:${http_port:-?})"; fi
  for pidfile in "$data"/node*.pid; do
    [ -e "$pidfile" ] || continue
    i="${pidfile##*/node}"
    i="${i%.pid}"
    pid="$(pid_in "$pidfile")"
    if alive "$pid" "$(node_conf "$i")"; then
      echo "node $i pid $pid (gRPC 127.0.0.1:$((${base_port:-0} + i - 1)))"
    fi
  done
}

# Who listens on a TCP port of 127.0.0.1, as "name pid N (config FILE)" when ss can tell.
port_user() {
  local port="$1" line pid cmdline
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 1
  if command -v ss >/dev/null &&
    line="$(ss -Hltnp "( sport = :$port )" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1)" &&
    [ -n "$line" ]; then
    pid="${line#pid=}"
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)"
    echo "pid $pid: ${cmdline% }"
  else
    echo "a process this user cannot see"
  fi
}

# Refuses to start while this data dir's cluster runs, or while its ports are taken.
refuse_if_running() {
  local live busy="" p who n line
  if [ -f "$data/run-local.state" ]; then load_state; fi
  live="$(running_here)"
  if [ -n "$live" ]; then
    {
      echo "run-local: a local cluster is already running in $data:"
      while IFS= read -r line; do echo "  $line"; done <<<"$live"
      echo "Nothing was started and its pid files are untouched. Stop it with Ctrl-C in the"
      echo "terminal that started it, or with:"
      echo "  $(cmd_line stop)"
      echo "Its state: $(cmd_line status); one node: $(cmd_line restart-node N)"
    } >&2
    exit 1
  fi
  n="${LAUNCHER_NODES:-3}"
  for p in "${LAUNCHER_PORT:-5559}" $(seq "${LAUNCHER_BASE_PORT:-5560}" $((${LAUNCHER_BASE_PORT:-5560} + n - 1))); do
    if who="$(port_user "$p")"; then busy="$busy  127.0.0.1:$p is in use by $who"$'\n'; fi
  done
  if [ -n "$busy" ]; then
    {
      echo "run-local: the ports of this cluster are taken (no cluster of $data runs):"
      printf '%s' "$busy"
      echo "If that is another local cluster, stop it (LAUNCHER_DATA=<its data dir> $self stop);"
      echo "else choose other ports with LAUNCHER_PORT (gateway) and LAUNCHER_BASE_PORT (nodes)."
    } >&2
    exit 1
  fi
}

# Waits until node i answers `health` and the cluster is Green, for wait_seconds at most.
wait_node_back() {
  local i="$1" deadline pid
  deadline=$((SECONDS + wait_seconds))
  pid="$(pid_in "$data/node$i.pid")"
  until "$bin" --config "$(node_conf "$i")" health --timeout 2 >/dev/null 2>&1; do
    if ! alive "$pid" "$(node_conf "$i")"; then
      echo "run-local: node $i exited while starting; its log ($data/node$i/node.log) ends with:" >&2
      tail -20 "$data/node$i/node.log" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "run-local: node $i did not become healthy within ${wait_seconds} s (log: $data/node$i/node.log)" >&2
      return 1
    fi
    sleep 0.3
  done
  # From here the foreground run watches it again.
  rm -f "$data/node$i.stopped"
  until is_green "$i"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "run-local: node $i is back but the cluster is not Green after ${wait_seconds} s:" >&2
      cluster_status >&2 || true
      return 1
    fi
    sleep 0.3
  done
}

check_node_arg() {
  if ! [[ "${1:-}" =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt "$nodes" ]; then
    die "give a node number from 1 to $nodes, e.g. $(cmd_line "$2" 2)"
  fi
}

cmd_stop_node() {
  local i="$1" pid up=0 j
  pid="$(pid_in "$data/node$i.pid")"
  if ! alive "$pid" "$(node_conf "$i")"; then
    touch "$data/node$i.stopped"
    echo "node $i is not running"
    return 0
  fi
  # First the marker, then the signal: the foreground run must never see the exit unmarked.
  touch "$data/node$i.stopped"
  echo "stopping node $i (pid $pid, SIGTERM: a graceful stop, it stays a member) ..."
  stop_process "$data/node$i.pid" "$(node_conf "$i")" "node $i"
  for j in $(seq 1 "$nodes"); do
    if alive "$(pid_in "$data/node$j.pid")" "$(node_conf "$j")"; then up=$((up + 1)); fi
  done
  if [ $((up * 2)) -le "$nodes" ]; then
    echo "$up of $nodes nodes run: no quorum, writes stop until a majority is back"
  fi
  if [ "${2:-}" != restarting ]; then echo "start it again with: $(cmd_line start-node "$i")"; fi
}

# Only the foreground run watches and stops the nodes: start no node without it.
need_foreground() {
  alive "$(pid_in "$data/run-local.pid")" run-local.sh ||
    die "the local cluster in $data is not running; start it with: $(cmd_line)"
}

cmd_start_node() {
  local i="$1" pid
  need_foreground
  pid="$(pid_in "$data/node$i.pid")"
  if alive "$pid" "$(node_conf "$i")"; then
    echo "node $i is already running (pid $pid)"
    return 0
  fi
  # Marked until it is back, so that a start that fails is not taken for a crash of the cluster.
  touch "$data/node$i.stopped"
  echo "starting node $i with $(node_conf "$i") (log: $data/node$i/node.log) ..."
  spawn_node "$i"
  wait_node_back "$i" || die "node $i is not back (it stays marked as stopped: $(cmd_line start-node "$i") tries again)"
  echo "node $i is back (pid $(pid_in "$data/node$i.pid")) and the cluster is Green:"
  cluster_status
}

cmd_status() {
  local i pid st code=0 fg
  fg="$(pid_in "$data/run-local.pid")"
  if ! alive "$fg" run-local.sh && [ -z "$(running_here)" ]; then
    echo "no local cluster runs in $data (start it with: $(cmd_line))"
    return 3
  fi
  if alive "$fg" run-local.sh; then echo "foreground run: pid $fg"; else
    echo "foreground run: gone (the processes below were left behind; $(cmd_line stop) stops them)"
    code=1
  fi
  for i in $(seq 1 "$nodes"); do
    pid="$(pid_in "$data/node$i.pid")"
    if alive "$pid" "$(node_conf "$i")"; then
      st="running, pid $pid"
    elif [ -e "$data/node$i.stopped" ]; then
      st="stopped (stop-node; $(cmd_line start-node "$i") starts it)"
      code=1
    else
      st="not running"
      code=1
    fi
    echo "node $i: 127.0.0.1:$((base_port + i - 1))  $st"
  done
  pid="$(pid_in "$data/gateway.pid")"
  if alive "$pid" "$(gw_conf)"; then
    echo "gateway: http://127.0.0.1:$http_port  running, pid $pid"
  else
    echo "gateway: http://127.0.0.1:$http_port  not running"
    code=1
  fi
  if st="$(cluster_status)"; then
    echo "$st"
    grep -q "status Green" <<<"$st" || code=1
  else
    echo "no node answers"
    code=1
  fi
  return "$code"
}

cmd_stop() {
  local fg
  fg="$(pid_in "$data/run-local.pid")"
  if alive "$fg" run-local.sh; then
    echo "stopping the local cluster in $data (its foreground run, pid $fg, stops it in order) ..."
    kill -TERM "$fg"
    # Gateway and nodes take up to 30 s each before SIGKILL.
    wait_gone "$fg" run-local.sh $((40 + 35 * nodes)) || die "the foreground run (pid $fg) did not end"
  fi
  if [ -n "$(running_here)" ]; then
    echo "stopping what is left of the local cluster in $data ..."
    stop_process "$data/gateway.pid" "$(gw_conf)" gateway
    for ((i = nodes; i >= 1; i--)); do
      stop_process "$data/node$i.pid" "$(node_conf "$i")" "node $i"
    done
  fi
  rm -f "$data"/node*.stopped "$data/run-local.pid"
  echo "the local cluster in $data is stopped; start it again with: $(cmd_line)"
}

sub="${1:-start}"
case "$sub" in
  -h | --help | help)
    usage
    exit 0
    ;;
  start) ;;
  status | stop | stop-node | start-node | restart-node)
    data="$(realpath -m "$data")"
    if [ ! -f "$data/run-local.state" ]; then
      echo "run-local: no local cluster in $data; start one with: $(cmd_line)" >&2
      # status: "not running", as for a cluster that was stopped.
      if [ "$sub" = status ]; then exit 3; else exit 1; fi
    fi
    load_state
    case "$sub" in
      status) cmd_status || exit $? ;;
      stop) cmd_stop ;;
      stop-node)
        check_node_arg "${2:-}" stop-node
        cmd_stop_node "$2"
        ;;
      start-node)
        check_node_arg "${2:-}" start-node
        cmd_start_node "$2"
        ;;
      restart-node)
        check_node_arg "${2:-}" restart-node
        need_foreground
        cmd_stop_node "$2" restarting
        cmd_start_node "$2"
        ;;
    esac
    exit 0
    ;;
  *)
    echo "run-local: unknown command '$sub'; one of:" >&2
    usage >&2
    exit 2
    ;;
esac

# ---- start: the foreground run ----
nodes="${LAUNCHER_NODES:-3}"
base_port="${LAUNCHER_BASE_PORT:-5560}"
profile="${LAUNCHER_PROFILE:-release}"
http_port="${LAUNCHER_PORT:-5559}"
data="$(realpath -m "$data")"
refuse_if_running
mkdir -p "$data"
# Read by refuse_if_running from an earlier run's state; this run's values win.
nodes="${LAUNCHER_NODES:-3}"
base_port="${LAUNCHER_BASE_PORT:-5560}"
http_port="${LAUNCHER_PORT:-5559}"

if [ "$profile" = release ]; then build_flag=--release; target=release; else build_flag=; target=debug; fi
target_dir="${CARGO_TARGET_DIR:-$here/target}"
bin_dir="$target_dir/$target"
bin="$bin_dir/launcher-node"
gw_bin="$bin_dir/launcher-gateway"
if [ "${LAUNCHER_BUILD:-1}" = 0 ]; then
  for b in launcher-node launcher-local-plugin launcher-gateway launcherctl; do
    [ -x "$bin_dir/$b" ] || die "LAUNCHER_BUILD=0 but $bin_dir/$b is missing: build it (cargo build ${build_flag:+$build_flag }--workspace --bins)"
  done
else
  echo "building launcher-node, launcher-local-plugin, launcher-gateway and launcherctl ($profile) ..."
  (cd "$here" && cargo build $build_flag -p launcher-node -p launcher-local-plugin -p launcher-gateway -p launcherctl --bins --quiet)
fi
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
  # Root's own jobs are refused (min-uid), and system accounts such as nobody have no home to
  # run in: the examples need an ordinary account with a home.
  job_user=launcher-demo
  if ! id -u "$job_user" >/dev/null 2>&1; then
    useradd --create-home --user-group --shell /bin/sh --comment "jobs of the launcher examples" "$job_user" ||
      id -u "$job_user" >/dev/null
    echo "created the user $job_user (uid $(id -u "$job_user"), home $(getent passwd "$job_user" | cut -d: -f6)): the examples run their jobs as it"
  fi
  if [ "$(id -u "$job_user")" -lt 1000 ]; then
    echo "run-local: warning: $job_user has uid $(id -u "$job_user"), below the default min-uid 1000: its jobs will be refused" >&2
  fi
else
  server_user="$admin_user"
  job_user="$admin_user"
fi

key="$data/secure-cookie-key"
if [ ! -s "$key" ]; then
  # umask in a subshell: later directories (scratch) must stay traversable for job users.
  (umask 077 && head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$key")
  chmod 600 "$key"
fi
# Jobs run as their users and must reach their output and TMPDIR under the scratch path.
mkdir -p "$data/scratch" && chmod 0711 "$data" "$data/scratch"
# Each node hands its data dir to server-user itself, but cannot open the directories above
# it; the same goes for the jobs' user and the scratch path.
for u in "$server_user" "$job_user"; do
  if [ "$u" != "$admin_user" ] && command -v runuser >/dev/null &&
    ! runuser -u "$u" -- test -x "$data"; then
    die "the user $u cannot reach $data (a directory above it is closed to" \
      "other users); set LAUNCHER_DATA to a directory it can reach, e.g. /var/lib/launcher-local"
  fi
done

join=""
for i in $(seq 1 "$nodes"); do
  join="${join:+$join,}127.0.0.1:$((base_port + i - 1))"
done

# Nothing of this data dir runs (checked above): what is left from an earlier run is stale.
rm -f "$data"/node*.pid "$data"/node*.stopped "$data/gateway.pid"
echo "$$" >"$data/run-local.pid"
cat >"$data/run-local.state" <<STATE
nodes=$nodes
base_port=$base_port
http_port=$http_port
bin=$bin
gw_bin=$gw_bin
STATE

stop_all() {
  trap - INT TERM HUP
  echo
  echo "stopping the gateway, then the nodes from last to first (graceful stop keeps membership) ..."
  stop_process "$data/gateway.pid" "$(gw_conf)" gateway
  for ((i = nodes; i >= 1; i--)); do
    stop_process "$data/node$i.pid" "$(node_conf "$i")" "node $i"
  done
  rm -f "$data"/node*.stopped "$data/run-local.pid"
  exit "${1:-0}"
}
trap stop_all INT TERM HUP

for i in $(seq 1 "$nodes"); do
  dir="$data/node$i"
  mkdir -p "$dir/data"
  chmod 0711 "$dir"
  cat >"$dir/launcher.conf" <<CONF
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
  spawn_node "$i"
done

# A node or the gateway that exits without stop-node's marker takes the cluster down: a crash
# must not go unnoticed behind a cluster that looks fine.
check_node() {
  local i="$1" pid again
  pid="$(pid_in "$data/node$i.pid")"
  alive "$pid" "$(node_conf "$i")" && return 0
  [ -e "$data/node$i.stopped" ] && return 0
  # start-node writes the new pid before it removes the marker.
  again="$(pid_in "$data/node$i.pid")"
  [ "$again" != "$pid" ] && alive "$again" "$(node_conf "$i")"
}
node_crashed() {
  echo "run-local: node $i exited (not through stop-node); its log ($data/node$i/node.log) ends with:" >&2
  tail -20 "$data/node$i/node.log" >&2
  stop_all 1
}

echo "waiting for the cluster to become Green ..."
deadline=$((SECONDS + wait_seconds))
until is_green; do
  for i in $(seq 1 "$nodes"); do check_node "$i" || node_crashed; done
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "run-local: the cluster is not Green after ${wait_seconds} s (logs: $data/node<N>/node.log):" >&2
    cluster_status >&2 || true
    stop_all 1
  fi
  sleep 0.5
done
cluster_status

# The gateway: the HTTP API on 127.0.0.1:$http_port in front of every node; this user is admin.
mkdir -p "$data/gateway"
cat >"$(gw_conf)" <<CONF
[server]
address=127.0.0.1
port=$http_port
secure-cookie-key-file=$key
server-user=$server_user
admin-users=$admin_user
nodes=$join
CONF
# LAUNCHER_NODES here is the node count; to the gateway it would mean its seed list.
env -u LAUNCHER_NODES RSTUDIO_CONFIG_DIR="$data/gateway" setsid "$gw_bin" --config "$(gw_conf)" \
  </dev/null >>"$data/gateway/gateway.log" 2>&1 &
echo "$!" >"$data/gateway.pid"
until_exec "$!" "$(gw_conf)"
deadline=$((SECONDS + 60))
until curl -fsS "http://127.0.0.1:$http_port/status" >/dev/null 2>&1; do
  if ! alive "$(pid_in "$data/gateway.pid")" "$(gw_conf)" || [ "$SECONDS" -ge "$deadline" ]; then
    echo "run-local: the gateway did not come up; its log ($data/gateway/gateway.log) ends with:" >&2
    tail -20 "$data/gateway/gateway.log" >&2
    stop_all 1
  fi
  sleep 0.3
done

url="http://127.0.0.1:$http_port"
token="$("$gw_bin" token --user "$job_user" --key-file "$key" --ttl 12h)"
admin_token="$("$gw_bin" token --user "$admin_user" --key-file "$key" --ttl 12h)"
# For launcherctl and the README's examples; it holds tokens, so it is the admin's alone.
(
  umask 077
  cat >"$data/env" <<ENV
# Written by deploy/run-local.sh for the local cluster in $data: . $data/env
export LAUNCHER_DATA='$data'
export LAUNCHER_URL='$url'
export LAUNCHER_TOKEN='$token'
export LAUNCHER_ADMIN_TOKEN='$admin_token'
export LAUNCHER_JOB_USER='$job_user'
export LAUNCHER_KEY_FILE='$key'
export PATH='$bin_dir':"\$PATH"
ENV
)
# shellcheck disable=SC2016 # $USER is the job's to expand, as that user
job='{"name":"hello","cluster":"Local","command":"echo hello from $USER"}'
if [ "$job_user" = "$admin_user" ]; then
  who="Jobs run as $job_user (unprivileged mode: the Local plugin runs only this user's jobs)."
else
  who="Jobs run as $job_user, an ordinary account created for the examples (root's jobs are refused)."
fi
cat <<INFO

launcher cluster running: $nodes nodes, gRPC on 127.0.0.1:$base_port..$((base_port + nodes - 1))
  data, configs, logs: $data/node<N>/   pids: $data/node<N>.pid
  status:              $bin --config $data/node1/launcher.conf status
  key:                 $key
  HTTP API (gateway):  $url   log: $data/gateway/gateway.log   web page: $url/
  for launcherctl:     . $data/env   (LAUNCHER_URL, LAUNCHER_TOKEN, LAUNCHER_ADMIN_TOKEN, PATH)

$who
Token for $job_user (valid 12 h): $token

Try it with curl (submit a job, then print its output; follow=true waits for the job to end):
  T='$token'
  ID=\$(curl -s -H "Authorization: Bearer \$T" -H 'Content-Type: application/json' -d '$job' $url/jobs | grep -o '"id":"[^"]*"' | cut -d'"' -f4); echo "job \$ID"
  curl -s -H "Authorization: Bearer \$T" "$url/jobs/\$ID/output?follow=true"
Or with launcherctl:
  . $data/env
  ID=\$(launcherctl jobs submit --cluster Local --name hello --command 'echo hello from \$USER' -q)
  launcherctl jobs get "\$ID" --watch && launcherctl jobs output "\$ID"
As admin ($admin_user), whose listing holds only $admin_user's own jobs unless user=* asks for everybody's:
  curl -s -w '\\n' -H "Authorization: Bearer $admin_token" '$url/jobs?user=*'
  launcherctl --token "\$LAUNCHER_ADMIN_TOKEN" jobs list --user '*'

One node:  $(cmd_line stop-node N)   (and start-node N, restart-node N; state: $(cmd_line status))
Stop:      Ctrl-C here, or $(cmd_line stop)
INFO

while :; do
  for i in $(seq 1 "$nodes"); do check_node "$i" || node_crashed; done
  if ! alive "$(pid_in "$data/gateway.pid")" "$(gw_conf)"; then
    echo "run-local: the gateway exited; its log ($data/gateway/gateway.log) ends with:" >&2
    tail -20 "$data/gateway/gateway.log" >&2
    stop_all 1
  fi
  sleep 1
done
