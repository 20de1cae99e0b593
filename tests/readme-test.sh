#!/usr/bin/env bash
# Runs the README's local-cluster commands as printed, on this machine, against a local cluster of
# its own (a temporary LAUNCHER_DATA, free ports on 127.0.0.1, the debug binaries):
#
#   <!-- readme-test: start -->  the next sh block is the start command (one line); it runs in
#                                the background, and every line run-local.sh prints under
#                                "Try it" is run as printed
#   <!-- readme-test -->         the next sh block runs; all of them, in the README's order, in
#                                one shell (as a reader in one terminal), with set -euo pipefail
#   <!-- readme-test: last -->   the next sh block runs after those, line by line, each
#                                run-local.sh subcommand checked against the processes
#
# In between it starts the cluster a second time, which must be refused while leaving the running
# one Green and its pid files alone. Everything it started is stopped at the end, also on failure.
# Any problem fails the run with a message saying what; the work dir is kept then.
#
#   READMETEST_BUILD=0  skip `cargo build --workspace --bins` (binaries known to be fresh)
#   READMETEST_KEEP=1   keep the work dir (logs, the blocks and their output) after a pass too
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() {
  echo "readme-test: FAIL: $*" >&2
  exit 1
}
step() { echo "readme-test: $*"; }

if [ "${READMETEST_BUILD:-1}" != 0 ]; then
  step "building the debug binaries (as tests/run-all.sh does) ..."
  cargo build --workspace --bins --locked --quiet
fi

work="$(mktemp -d /tmp/launcher-readme-test.XXXXXX)"
# Job users must pass through it to their output under the scratch path.
chmod 0711 "$work"
mkdir -p "$work/home" "$work/blocks"

# ---- the README's marked blocks ----
awk -v dir="$work/blocks" '
  /^<!-- readme-test: start -->$/ { kind = "start"; next }
  /^<!-- readme-test: last -->$/  { kind = "last"; next }
  /^<!-- readme-test -->$/        { kind = "run"; next }
  kind != "" && !inblock && /^```sh$/ { inblock = 1; n++; file = sprintf("%s/%02d-%s.sh", dir, n, kind); printf "" > file; next }
  inblock && /^```$/ { inblock = 0; kind = ""; close(file); next }
  inblock { print >> file; next }
  kind != "" && !/^$/ { printf "README.md line %d: a readme-test marker must be followed by an sh block\n", NR > "/dev/stderr"; exit 1 }
' README.md || fail "README.md's readme-test markers are malformed"
shopt -s nullglob
starts=("$work"/blocks/*-start.sh)
runs=("$work"/blocks/*-run.sh)
lasts=("$work"/blocks/*-last.sh)
shopt -u nullglob
[ "${#starts[@]}" = 1 ] || fail "README.md must mark exactly one start block (<!-- readme-test: start -->), found ${#starts[@]}"
[ "${#runs[@]}" -ge 1 ] || fail "README.md marks no block to run (<!-- readme-test -->)"
[ "${#lasts[@]}" = 1 ] || fail "README.md must mark exactly one last block (<!-- readme-test: last -->), found ${#lasts[@]}"
start_cmd="$(grep -v '^[[:space:]]*\(#\|$\)' "${starts[0]}")"
[ "$(wc -l <<<"$start_cmd")" = 1 ] || fail "the start block must hold one command, not: $start_cmd"
[[ "$start_cmd" == *deploy/run-local.sh* ]] || fail "the start block does not run deploy/run-local.sh: $start_cmd"
# What the README must keep documenting, so that a lost block cannot pass silently.
all_runs="$(cat "${runs[@]}")"
# shellcheck disable=SC2016 # README text, not to expand here
for needle in '. "${LAUNCHER_DATA:-.local-cluster}/env"' '--watch' '{"operation":"stop"}' 'user=*' \
  "--user '*'" 'verify-installation --user "$LAUNCHER_JOB_USER"' 'launcherctl completions zsh'; do
  grep -qF -- "$needle" <<<"$all_runs" || fail "no README block to run shows: $needle"
done
for needle in 'deploy/run-local.sh status' 'deploy/run-local.sh restart-node 2' \
  'deploy/run-local.sh stop-node 2' 'deploy/run-local.sh start-node 2' 'deploy/run-local.sh stop'; do
  grep -q "^$needle\( \|$\)" "${lasts[0]}" || fail "the last block lacks: $needle"
done
step "README.md: start command '$start_cmd', ${#runs[@]} blocks to run, then $(grep -vc '^[[:space:]]*\(#\|$\)' "${lasts[0]}") cluster commands"

# ---- free ports on 127.0.0.1: the gateway, then three nodes ----
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
base=""
for _ in $(seq 1 50); do
  b=$((20000 + RANDOM % 9000))
  if ! listening "$b" && ! listening $((b + 1)) && ! listening $((b + 2)) && ! listening $((b + 3)); then
    base="$b"
    break
  fi
done
[ -n "$base" ] || fail "found no four free ports"

# The cluster's environment, as a reader's terminal would have it: nothing of the caller's
# launcher or launcherctl settings; a HOME of its own for what the README writes under ~.
for v in LAUNCHER_URL LAUNCHER_TOKEN LAUNCHER_ADMIN_TOKEN LAUNCHER_CA_FILE LAUNCHERCTL_CONFIG \
  LAUNCHER_JOB_USER LAUNCHER_KEY_FILE LAUNCHER_WAIT_SECONDS XDG_CONFIG_HOME XDG_DATA_HOME; do
  unset "$v"
done
export LAUNCHER_DATA="$work/cluster" LAUNCHER_NODES=3 LAUNCHER_PORT="$base" \
  LAUNCHER_BASE_PORT=$((base + 1)) LAUNCHER_PROFILE=debug LAUNCHER_BUILD=0 HOME="$work/home"
url="http://127.0.0.1:$LAUNCHER_PORT"

fg_pid=""
passed=0
cleanup() {
  local code=$? pid f
  trap - EXIT INT TERM
  if [ -n "$fg_pid" ] && kill -0 "$fg_pid" 2>/dev/null; then
    step "stopping the cluster ..."
    timeout 180 deploy/run-local.sh stop >/dev/null 2>&1 || true
    kill -TERM "$fg_pid" 2>/dev/null || true
  fi
  # Whatever is left that belongs to this run: its command line names the work dir.
  for f in /proc/[0-9]*/cmdline; do
    pid="${f#/proc/}"
    pid="${pid%/cmdline}"
    [ "$pid" != "$$" ] || continue
    if tr '\0' ' ' 2>/dev/null <"$f" | grep -qF "$work/"; then
      echo "readme-test: killing pid $pid, left over: $(tr '\0' ' ' <"$f" 2>/dev/null)" >&2
      kill -KILL "$pid" 2>/dev/null || true
      code=1
    fi
  done
  if [ "$code" = 0 ] && [ "$passed" = 1 ]; then
    if [ "${READMETEST_KEEP:-0}" = 1 ]; then step "kept $work"; else rm -rf "$work"; fi
    step "PASS"
  else
    echo "readme-test: FAILED; logs in $work (run-local.log, cluster/node<N>/node.log, cluster/gateway/gateway.log)" >&2
    [ ! -f "$work/run-local.log" ] || tail -30 "$work/run-local.log" >&2
    [ "$code" != 0 ] || code=1
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Polls `cmd` every 0.3 s until it succeeds, for `secs` seconds at most.
wait_for() {
  local what="$1" secs="$2" deadline
  shift 2
  deadline=$((SECONDS + secs))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within $secs s"
    sleep 0.3
  done
}
fg_alive() { kill -0 "$fg_pid" 2>/dev/null; }
started() { grep -q '^Stop:' "$work/run-local.log" || { fg_alive || fail "run-local.sh exited: $(tail -20 "$work/run-local.log")"; false; }; }
green() { curl -fsS "$url/status" 2>/dev/null | grep -q '"status":"Green"'; }
pids() { cat "$LAUNCHER_DATA"/node*.pid "$LAUNCHER_DATA/gateway.pid" 2>/dev/null; }
node_pid() { cat "$LAUNCHER_DATA/node$1.pid" 2>/dev/null; }
node_up() { local p; p="$(node_pid "$1")" && kill -0 "$p" 2>/dev/null; }

# ---- start, as printed, in the background ----
step "starting: $start_cmd (LAUNCHER_DATA=$LAUNCHER_DATA, gateway $url, nodes on $LAUNCHER_BASE_PORT..$((base + 3)))"
bash -c "$start_cmd" >"$work/run-local.log" 2>&1 </dev/null &
fg_pid=$!
wait_for "run-local.sh to report the cluster running" 300 started
green || fail "the gateway does not report Green after run-local.sh said it runs"
job_user="$(bash -c '. "$LAUNCHER_DATA/env" && echo "$LAUNCHER_JOB_USER"')" || fail "cannot source $LAUNCHER_DATA/env"
[ -n "$job_user" ] || fail "$LAUNCHER_DATA/env sets no LAUNCHER_JOB_USER"
step "cluster Green; jobs run as $job_user"

# ---- the lines run-local.sh printed to try it ----
sed -n '/^Try it with curl/,/^One node:/p' "$work/run-local.log" | sed -n 's/^  //p' >"$work/try-it.sh"
[ "$(wc -l <"$work/try-it.sh")" -ge 6 ] || fail "run-local.sh printed no lines to try: $(cat "$work/run-local.log")"
step "running the $(wc -l <"$work/try-it.sh") lines run-local.sh printed to try it ..."
timeout 120 bash -euo pipefail "$work/try-it.sh" >"$work/try-it.out" 2>&1 </dev/null ||
  fail "the printed lines failed ($?): $(cat "$work/try-it.out")"
[ "$(grep -c "^hello from $job_user\$" "$work/try-it.out")" = 2 ] ||
  fail "the printed curl and launcherctl jobs did not both print 'hello from $job_user': $(cat "$work/try-it.out")"
grep -q "\"user\":\"$job_user\"" "$work/try-it.out" || fail "the printed admin listing (user=*) lacks $job_user's jobs"

# ---- a second start while it runs: refused, nothing touched ----
before="$(pids)"
set +e
timeout 60 bash -c "$start_cmd" >"$work/second-start.out" 2>&1 </dev/null
rc=$?
set -e
[ "$rc" = 1 ] || fail "starting again while the cluster runs exited $rc, not 1: $(cat "$work/second-start.out")"
for needle in "already running in $LAUNCHER_DATA" "run-local.sh stop" "Ctrl-C"; do
  grep -qF "$needle" "$work/second-start.out" || fail "the refusal does not say '$needle': $(cat "$work/second-start.out")"
done
[ "$(pids)" = "$before" ] || fail "the refused start changed the pid files"
fg_alive || fail "the refused start took the running cluster down"
green || fail "the cluster is not Green after the refused start"
step "a second start is refused (exit 1) and the running cluster stays Green"

# ---- the README's blocks, in order, in one shell ----
{
  for b in "${runs[@]}"; do
    echo "echo '::: README block ${b##*/}'"
    cat "$b"
  done
} >"$work/readme-blocks.sh"
step "running the README's blocks (${runs[*]##*/}) ..."
set +e
PS4='+ ' timeout 600 bash -xeuo pipefail "$work/readme-blocks.sh" >"$work/readme-blocks.out" 2>&1 </dev/null
rc=$?
set -e
sed 's/^/  | /' "$work/readme-blocks.out"
if [ "$rc" != 0 ]; then
  fail "a README block failed (exit $rc) in $(grep '^::: README block' "$work/readme-blocks.out" | tail -1 | cut -d' ' -f4); its output ends with:
$(tail -40 "$work/readme-blocks.out")"
fi
out="$work/readme-blocks.out"
grep -q "^hello from $job_user\$" "$out" || fail "no README job printed 'hello from $job_user'"
grep -q "the installation works" "$out" || fail "verify-installation did not pass"
grep -q '"operationComplete":true' "$out" || fail "the curl stop did not complete"
grep -q "exit code 3" "$out" || fail "jobs wait did not exit with the job's code 3"
grep -q "exit code 124" "$out" || fail "jobs get --watch --timeout did not exit 124"
green || fail "the cluster is not Green after the README's blocks"
step "README blocks passed"

# ---- the last block, line by line ----
while IFS= read -r line; do
  cmd="${line%%#*}"
  [ -n "${cmd// /}" ] || continue
  step "\$ $line"
  n2_before="$(node_pid 2 || true)"
  timeout 300 bash -c "$cmd" </dev/null || fail "'$cmd' exited $?"
  case "$cmd" in
    *"run-local.sh status"*) ;;
    *"run-local.sh restart-node 2"*)
      if ! node_up 2 || [ "$(node_pid 2)" = "$n2_before" ]; then fail "node 2 was not restarted"; fi
      green || fail "not Green after restart-node 2"
      fg_alive || fail "restart-node 2 took the cluster down"
      ;;
    *"run-local.sh stop-node 2"*)
      ! node_up 2 || fail "node 2 still runs after stop-node 2"
      # The foreground run looks at its nodes every second: it must not take this for a crash.
      for _ in 1 2 3 4 5 6 7; do
        fg_alive || fail "stop-node 2 took the cluster down"
        sleep 0.3
      done
      if ! node_up 1 || ! node_up 3; then fail "stop-node 2 stopped other nodes"; fi
      ;;
    *"run-local.sh start-node 2"*)
      node_up 2 || fail "node 2 is not running after start-node 2"
      green || fail "not Green after start-node 2"
      ;;
    *"run-local.sh stop"*)
      wait_for "the foreground run to end" 30 bash -c "! kill -0 $fg_pid 2>/dev/null"
      set +e
      wait "$fg_pid"
      rc=$?
      set -e
      [ "$rc" = 0 ] || fail "the foreground run ended with $rc after stop, not 0"
      [ -z "$(pids)" ] || fail "pid files left after stop: $(pids)"
      for p in $(seq "$base" $((base + 3))); do
        ! listening "$p" || fail "port $p still answers after stop"
      done
      ;;
    *) fail "the last block has a line this test does not know how to check: $line" ;;
  esac
done <"${lasts[0]}"
fg_alive && fail "the cluster still runs after the last block"
passed=1
