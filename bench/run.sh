#!/usr/bin/env bash
# bench/run.sh: builds the release binary and prints one table of throughput, latency, CPU and
# memory figures, all measured in this run on 127.0.0.1, each next to its target (PASS/MISS).
# Never run by `cargo test` or CI: it takes minutes and its figures depend on the machine.
#
# Usage: bench/run.sh [--quick] [--bin PATH] [--mode LIST] [--duration SECONDS]
#   --quick          3 s per wrk run, 10 starts, no re-runs (under a minute); default 10 s, 20 starts
#   --bin PATH       benchmark another watchdog binary (e.g. a Go watchdog) instead of building ours
#   --mode LIST      rows to run, comma separated: classic, streaming, http (default: all three).
#                    ROW=MODE runs a row with another value of `mode`, e.g. for the Go of-watchdog:
#                    --mode classic=serializing,streaming,http. The Go classic watchdog ignores
#                    `mode`: give it --mode classic. A binary that fails to start in a mode gets n/a.
#   --duration S     seconds per wrk run
#
# Method: see the "Benchmarks" section of README.md. wrk is installed with apt-get if missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=""
modes="classic,streaming,http"
quick=0
duration=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --bin) bin=${2:?--bin needs a path}; shift ;;
    --mode) modes=${2:?--mode needs a list}; shift ;;
    --duration) duration=${2:?--duration needs seconds}; shift ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$quick" = 1 ]; then
  duration=${duration:-3} starts=10 reruns=0 http_rounds=1 http_round_seconds=3
else
  duration=${duration:-10} starts=20 reruns=1 http_rounds=3 http_round_seconds=5
fi
ceiling_seconds=$duration # as long as the wrk runs it is compared with
noisy_percent=5 # foreign CPU above this share of the machine marks a run noisy (and re-runs it once)
lua=$root/bench/post.lua
cores=$(nproc)
hz=$(getconf CLK_TCK)
mib=1048576
began=$EPOCHSECONDS

declare -A mode_env=()
for item in ${modes//,/ }; do
  row=${item%%=*}
  case $row in classic | streaming | http) mode_env[$row]=${item#*=} ;; *)
    echo "bench/run.sh: --mode: unknown row $row (classic, streaming, http)" >&2; exit 2 ;;
  esac
done

say() { printf '%s\n' "$*" >&2; }

# ---- build and tools -------------------------------------------------------------------------

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
if ! command -v wrk >/dev/null; then
  say "installing wrk with apt-get"
  $sudo apt-get install -y -qq wrk >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk >/dev/null; }
fi
if [[ ",$modes," == *",http"* ]] && ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  say "installing nginx-light with apt-get (the http mode is compared with nginx)"
  $sudo apt-get install -y -qq nginx-light >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq nginx-light >/dev/null; }
fi
if [ -z "$bin" ]; then
  say "building the release binary"
  (cd "$root" && cargo build --release --quiet)
  bin=$root/target/release/fwatchdog
  # The static musl binary is what function images ship (Dockerfile.example): its idle RSS, size
  # and start time get rows of their own when the musl target is installed.
  if rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl; then
    if ! command -v musl-gcc >/dev/null; then
      say "installing musl-tools with apt-get (the static build compiles mimalloc)"
      $sudo apt-get install -y -qq musl-tools >/dev/null 2>&1 || true
    fi
    # Without musl-gcc the build would fail and end the run: the static rows say n/a instead.
    if command -v musl-gcc >/dev/null; then
      say "building the static (musl) release binary"
      (cd "$root" && cargo build --release --quiet --target x86_64-unknown-linux-musl)
      shipped=$root/target/x86_64-unknown-linux-musl/release/fwatchdog
    else
      say "musl-tools could not be installed: no rows for the static build"
    fi
  fi
  revision="$(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+changes')"
else
  revision="--bin"
fi
bin=$(realpath "$bin")
(cd "$root/bench/tools" && cargo build --release --quiet --target-dir "$root/target/bench-tools")
fwbench=$root/target/bench-tools/release/fwbench
spawn=$root/target/bench-tools/spawn
cc -O2 -pthread -o "$spawn" "$root/bench/tools/spawn.c"

work=$(mktemp -d -t fwbench.XXXXXX)

# ---- processes: everything started here is remembered as pid:starttime and killed on exit -------

started=()

starttime() {
  local line
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
  local f
  read -ra f <<<"${line##*) }"
  echo "${f[19]}"
}

remember() {
  local pid
  for pid; do started+=("$pid:$(starttime "$pid" || echo gone)"); done
}

# SIGKILL for the remembered processes that are still the ones we started. A child of this shell
# is waited for here, where its "Killed" notice can be kept out of the output.
kill_remembered() {
  local entry
  for entry in "${started[@]}"; do
    [ "$(starttime "${entry%%:*}" || true)" = "${entry#*:}" ] && kill -KILL "${entry%%:*}" 2>/dev/null || continue
    wait "${entry%%:*}" 2>/dev/null || true
  done
}

cleanup() {
  kill_remembered
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The pids of PID's descendants (the kernel here may lack /proc/PID/task/*/children).
descendants() {
  local parent=$1 stat line f kids=() kid
  for stat in /proc/[0-9]*/stat; do
    { read -r line <"$stat"; } 2>/dev/null || continue
    read -ra f <<<"${line##*) }"
    [ "${f[1]}" = "$parent" ] && kids+=("${stat//[^0-9]/}")
  done
  for kid in "${kids[@]}"; do
    echo "$kid"
    descendants "$kid"
  done
}

exited() { # PID gone or a zombie
  local line f
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 0
  read -ra f <<<"${line##*) }"
  [ "${f[0]}" = Z ] || [ "${f[0]}" = X ]
}

# Starts the watchdog with the configuration in "$@" (name=value). Sets wd_pid, wd_port and
# wd_tree (the watchdog and its long-lived descendants, e.g. the http-mode function). On failure
# returns 1 with the reason in wd_why.
start_watchdog() {
  wd_port=$("$fwbench" port)
  local dir
  dir=$(mktemp -d -p "$work" wd.XXXX)
  env -i PATH="$PATH" HOME="${HOME:-/}" TMPDIR="$dir" port="$wd_port" metrics_port="$("$fwbench" port)" \
    healthcheck_interval=0 read_timeout=30s write_timeout=30s "$@" "$bin" >"$dir/log" 2>&1 &
  wd_pid=$!
  remember "$wd_pid"
  local rc=0
  "$fwbench" wait "$wd_port" "$wd_pid" 10 || rc=$?
  if [ "$rc" != 0 ]; then
    local code=0
    if [ "$rc" = 1 ]; then
      wait "$wd_pid" || code=$?
      wd_why="exited with code $code"
    else
      wd_why="not healthy within 10 s"
    fi
    # The last log line without its timestamp, e.g. "mode: http is not implemented yet".
    wd_why+=$(grep -v '^\s*$' "$dir/log" | tail -1 | sed 's|^[0-9/]* [0-9:.]* ||; s/|/\//g; s/^/: /' | cut -c1-90)
    stop_watchdog
    return 1
  fi
  # shellcheck disable=SC2207
  local kids=($(descendants "$wd_pid"))
  remember "${kids[@]}"
  wd_tree="$wd_pid ${kids[*]}"
}

# SIGTERM, up to 5 s to exit (healthcheck_interval=0), then SIGKILL for whatever is left.
stop_watchdog() {
  local kids i
  kids=$(descendants "$wd_pid")
  [ -n "$kids" ] && remember $kids
  kill -TERM "$wd_pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    exited "$wd_pid" && break
    sleep 0.05
  done
  kill_remembered
  wait "$wd_pid" 2>/dev/null || true
}

# ---- measuring -------------------------------------------------------------------------------

# Sum of utime+stime+cutime+cstime over pids (ticks) into $ticks.
tree_ticks() {
  local pid line f
  ticks=0
  for pid; do
    { read -r line <"/proc/$pid/stat"; } 2>/dev/null || continue
    read -ra f <<<"${line##*) }"
    ticks=$((ticks + f[11] + f[12] + f[13] + f[14]))
  done
}

# A consistent snapshot: wall time (µs), machine busy ticks, the server's own ticks (utime+stime,
# children excluded; OWN may list several pids, comma separated, e.g. nginx's master and workers),
# the server tree's ticks, and this script's reaped children (wrk).
snapshot() {
  local own_pid=$1 line f
  shift
  snap_time=${EPOCHREALTIME/./}
  read -r line </proc/stat
  read -ra f <<<"$line"
  snap_busy=$((f[1] + f[2] + f[3] + f[6] + f[7] + f[8]))
  snap_own=0
  local pid
  for pid in ${own_pid//,/ }; do
    { read -r line <"/proc/$pid/stat"; } 2>/dev/null || continue
    read -ra f <<<"${line##*) }"
    snap_own=$((snap_own + f[11] + f[12]))
  done
  tree_ticks "$@"
  snap_tree=$ticks
  read -r line <"/proc/$$/stat"
  read -ra f <<<"${line##*) }"
  snap_self=$((f[13] + f[14]))
}

# CPU used by everything else on the machine between two snapshots, as % of all cores.
foreign_percent() { # t0 busy0 tree0 self0 t1 busy1 tree1 self1
  awk -v dt="$(($5 - $1))" -v f="$(($6 - $2 - ($7 - $3) - ($8 - $4)))" -v hz="$hz" -v n="$cores" \
    'BEGIN { p = f * 100 / (dt / 1e6 * hz * n); printf "%.1f", (p < 0 ? 0 : p) }'
}

# One wrk run: wrk_run CONNS BODY_BYTES PORT OWN_PIDS [TREE_PIDS...]. Sets r_rps r_p50 r_p99
# (ms) r_cpu (server's own CPU per request, µs) r_foreign (%) r_note (errors).
wrk_run() {
  local conns=$1 size=$2 port=$3 threads=2 out=$work/wrk.out
  shift 3
  [ "$conns" -lt 2 ] && threads=1
  snapshot "$@"
  local t0=$snap_time b0=$snap_busy o0=$snap_own tr0=$snap_tree s0=$snap_self
  BODY_SIZE=$size wrk -t"$threads" -c"$conns" -d"${duration}s" --timeout 10s -s "$lua" \
    "http://127.0.0.1:$port/" >"$out" 2>&1 || true
  snapshot "$@"
  local line
  line=$(grep '^RESULT ' "$out" || true)
  if [ -z "$line" ]; then
    say "wrk failed: $(tail -3 "$out")"
    r_rps=0 r_p50=0 r_p99=0 r_cpu=0 r_foreign=0 r_note="wrk failed"
    return
  fi
  local requests duration_us p50 p99 errors non2xx
  read -r requests duration_us p50 p99 errors non2xx <<<"$(sed 's/[a-z0-9_]*=//g; s/^RESULT //' <<<"$line")"
  r_rps=$(awk -v r="$requests" -v d="$duration_us" 'BEGIN { printf "%.0f", r / d * 1e6 }')
  r_p50=$(awk -v v="$p50" 'BEGIN { printf "%.2f", v / 1000 }')
  r_p99=$(awk -v v="$p99" 'BEGIN { printf "%.2f", v / 1000 }')
  r_cpu=$(awk -v t="$((snap_own - o0))" -v hz="$hz" -v r="$requests" 'BEGIN { printf "%.0f", r ? t * 1e6 / hz / r : 0 }')
  r_foreign=$(foreign_percent "$t0" "$b0" "$tr0" "$s0" "$snap_time" "$snap_busy" "$snap_tree" "$snap_self")
  r_note=""
  [ "$errors" != 0 ] && r_note+=" ⚠ $errors socket errors"
  [ "$non2xx" != 0 ] && r_note+=" ⚠ $non2xx non-2xx"
  return 0
}

noisy() { awk -v f="$1" -v l="$noisy_percent" 'BEGIN { exit !(f > l) }'; }

# Runs "$@", which sets r_* variables, r_foreign among them; once more when the machine was busy
# with other work, keeping the quieter run.
quietly() {
  "$@"
  if [ "$reruns" -gt 0 ] && noisy "$r_foreign"; then
    local name first=() before=$r_foreign
    for name in ${!r_@}; do first+=("$name=${!name}"); done
    say "  foreign CPU $r_foreign %: running it again"
    "$@"
    if awk -v a="$before" -v b="$r_foreign" 'BEGIN { exit !(a < b) }'; then
      for name in "${first[@]}"; do printf -v "${name%%=*}" '%s' "${name#*=}"; done
    fi
  fi
}

measure() {
  quietly wrk_run "$@"
  say "  c=$1 ${2}B: $r_rps req/s, p50 $r_p50 ms, p99 $r_p99 ms, server CPU $r_cpu µs/req, foreign $r_foreign %$r_note"
}

status_kib() { # FIELD PID -> value in KiB from /proc/PID/status
  awk -v k="$1:" '$1 == k { print $2 }' "/proc/$2/status"
}

# ---- the table -------------------------------------------------------------------------------

rows=()
row() { # figure, measured, target, result, foreign CPU ("N %" gets a mark when noisy)
  local foreign=$5
  [[ $foreign == *" %" ]] && noisy "${foreign% %}" && foreign+=" ⚠"
  rows+=("| $1 | $2 | $3 | $4 | $foreign |")
}
check() { # VALUE OP LIMIT -> PASS or MISS
  awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { ok = v != "" && (op == "<=" ? v + 0 <= l + 0 : v + 0 >= l + 0); print (ok ? "PASS" : "MISS") }'
}
fmt() { awk -v v="$2" "BEGIN { printf \"$1\", v }"; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b ? a * 100 / b : 0 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b ? a / b : 0 }'; }
na() { row "$1" "n/a ($2)" "$3" "n/a" ""; }

say "fwatchdog benchmark: $bin, ${duration} s per wrk run"
snapshot ""
t0=$snap_time b0=$snap_busy s0=$snap_self
sleep 1
snapshot ""
busy_before=$(foreign_percent "$t0" "$b0" 0 "$s0" "$snap_time" "$snap_busy" 0 "$snap_self")

# Spawn ceiling: the most a fork-per-request server can do on this machine.
ceiling_once() { # THREADS -> sets r_rate, r_cpu (the spawner's own CPU per spawn, µs), r_foreign
  snapshot ""
  local t0=$snap_time b0=$snap_busy s0=$snap_self out
  out=$(env -i PATH="$PATH" HOME="${HOME:-/}" "$spawn" "$1" "$ceiling_seconds")
  snapshot ""
  r_rate=$(sed 's/.*per_s=//' <<<"$out")
  r_cpu=$(sed 's/.*cpu_us_per_spawn=\([0-9.]*\).*/\1/' <<<"$out")
  r_foreign=$(foreign_percent "$t0" "$b0" 0 "$s0" "$snap_time" "$snap_busy" 0 "$snap_self")
}
ceiling() {
  quietly ceiling_once "$1"
  say "  bare spawn loop, $1 thread(s): $r_rate spawns/s, own CPU $r_cpu µs/spawn, foreign $r_foreign %"
}
ceiling 1
row "bare spawn loop (C, posix_spawn), 1 thread" "$(fmt %.0f "$r_rate") spawns/s ($(awk -v r="$r_rate" 'BEGIN { printf "%.0f", 1e6 / r }') µs each; its own CPU $(fmt %.0f "$r_cpu") µs per spawn)" "" "" "$r_foreign %"
ceiling "$cores"
ceiling_rate=$r_rate
spawn_cpu=$r_cpu
row "bare spawn loop, $cores threads (= cores): the spawn ceiling" "$(fmt %.0f "$r_rate") spawns/s (its own CPU **$(fmt %.0f "$r_cpu") µs** per spawn)" "" "" "$r_foreign %"

# Classic mode, 13-byte POST, fprocess=cat.
if [ -n "${mode_env[classic]:-}" ] && start_watchdog fprocess=cat mode="${mode_env[classic]}"; then
  idle_rss=$(status_kib VmRSS "$wd_pid")
  threads_idle=$(status_kib Threads "$wd_pid")
  BODY_SIZE=13 wrk -t2 -c8 -d1s -s "$lua" "http://127.0.0.1:$wd_port/" >/dev/null 2>&1 || true # warm-up
  # shellcheck disable=SC2086
  for conns in 1 8 64; do
    measure "$conns" 13 "$wd_port" "$wd_pid" $wd_tree
    latency="p50 $r_p50 / p99 $r_p99 ms"
    case $conns in
      1) row "classic 13 B, c=1" "$r_rps req/s, $latency$r_note" "" "" "$r_foreign %" ;;
      8)
        share=$(pct "$r_rps" "$ceiling_rate")
        row "classic 13 B, c=8" "$r_rps req/s = **$share %** of the spawn ceiling, $latency$r_note" "≥ 85 %" "$(check "$share" ">=" 85)" "$r_foreign %"
        times=$(ratio "$r_cpu" "$spawn_cpu")
        row "watchdog CPU per request, classic c=8" "$r_cpu µs = **${times}×** the bare spawn's" "≤ 1.25×" "$(check "$times" "<=" 1.25)" "(same run)"
        ;;
      64)
        ratio=$(awk -v a="$r_p99" -v b="$r_p50" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        row "classic 13 B, c=64" "$r_rps req/s, $latency: p99 = **${ratio}×** p50$r_note" "p99 ≤ 2.5× p50" "$(check "$ratio" "<=" 2.5)" "$r_foreign %"
        ;;
    esac
  done
  stop_watchdog
  have_classic=1
else
  why=${wd_why:-not selected with --mode}
  [ -n "${mode_env[classic]:-}" ] || why="not selected with --mode"
  for figure in "classic 13 B, c=1" "classic 13 B, c=8" "watchdog CPU per request, classic c=8" "classic 13 B, c=64"; do
    na "$figure" "$why" ""
  done
  have_classic=0
fi

# 1 MiB bodies at c=8: classic (buffered) and streaming, each on a fresh watchdog for VmHWM.
big() { # ROW LABEL RSS_LIMIT_MIB [CPU_LIMIT_MS]
  local name=$1 label=$2 rss_limit=$3 cpu_limit=${4:-}
  if [ -n "${mode_env[$name]:-}" ] && start_watchdog fprocess=cat mode="${mode_env[$name]}"; then
    # shellcheck disable=SC2086
    measure 8 "$mib" "$wd_port" "$wd_pid" $wd_tree
    local hwm cpu_ms
    hwm=$(fmt %.1f "$(awk -v k="$(status_kib VmHWM "$wd_pid")" 'BEGIN { print k / 1024 }')")
    cpu_ms=$(fmt %.2f "$(awk -v us="$r_cpu" 'BEGIN { print us / 1000 }')")
    stop_watchdog
    if [ -n "$cpu_limit" ]; then
      row "$label 1 MiB, c=8: watchdog CPU per MiB" "$cpu_ms ms ($r_rps MiB/s, p50 $r_p50 / p99 $r_p99 ms)$r_note" "≤ $cpu_limit ms" "$(check "$cpu_ms" "<=" "$cpu_limit")" "$r_foreign %"
    else
      row "$label 1 MiB, c=8: throughput" "$r_rps MiB/s, p50 $r_p50 / p99 $r_p99 ms, watchdog CPU $cpu_ms ms/MiB$r_note" "" "" "$r_foreign %"
    fi
    row "$label 1 MiB, c=8: peak RSS (VmHWM)" "$hwm MiB" "≤ $rss_limit MiB" "$(check "$hwm" "<=" "$rss_limit")" "(same run)"
  else
    local why=${wd_why:-}
    [ -n "${mode_env[$name]:-}" ] || why="not selected with --mode"
    if [ -n "$cpu_limit" ]; then na "$label 1 MiB, c=8: watchdog CPU per MiB" "$why" "≤ $cpu_limit ms"; else na "$label 1 MiB, c=8: throughput" "$why" ""; fi
    na "$label 1 MiB, c=8: peak RSS (VmHWM)" "$why" "≤ $rss_limit MiB"
  fi
}
wd_why=""
big classic classic 64
wd_why=""
big streaming streaming 16 1

# http mode: the watchdog proxies to a trivial keep-alive upstream it starts itself. Compared with
# wrk hitting such an upstream directly, and with nginx in front of one (2 workers, keepalive 32 to
# the upstream, no buffering either way, access log on as nginx's default): best of alternating
# rounds, the watchdog's and nginx's, so that both see the same machine.
start_upstream() { # -> upstream_port, upstream_pid
  upstream_port=$("$fwbench" port)
  "$fwbench" upstream "127.0.0.1:$upstream_port" &
  upstream_pid=$!
  remember "$upstream_pid"
  "$fwbench" wait "$upstream_port" "$upstream_pid" 5 || { say "the upstream did not start"; exit 1; }
}
start_nginx() { # UPSTREAM_PORT -> nginx_port, nginx_pids (master,worker,worker); 1 if nginx fails
  local dir nginx
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  dir=$(mktemp -d -p "$work" nginx.XXXX)
  nginx_port=$("$fwbench" port)
  cat >"$dir/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log $dir/access.log;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  upstream function { server 127.0.0.1:$1; keepalive 32; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://function;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
CONF
  "$nginx" -p "$dir" -c "$dir/nginx.conf" 2>"$dir/stderr" &
  local master=$! i
  remember "$master"
  # The upstream answers every path, /_/health too.
  "$fwbench" wait "$nginx_port" "$master" 5 || { say "nginx did not start: $(tail -2 "$dir/error.log" "$dir/stderr")"; return 1; }
  for ((i = 0; i < 100; i++)); do
    [ "$(descendants "$master" | wc -l)" -ge 2 ] && break
    sleep 0.05
  done
  local workers
  workers=$(descendants "$master" | tr '\n' ',')
  remember ${workers//,/ }
  nginx_pids="$master,${workers%,}"
}
if [ -n "${mode_env[http]:-}" ]; then
  start_upstream
  measure 8 13 "$upstream_port" "" "$upstream_pid"
  row "upstream hit directly, c=8" "$r_rps req/s, p50 $r_p50 / p99 $r_p99 ms$r_note" "" "" "$r_foreign %"
  direct=$r_rps
  have_nginx=0
  if start_nginx "$upstream_port"; then have_nginx=1; fi
  port=$("$fwbench" port)
  if start_watchdog mode="${mode_env[http]}" fprocess="$fwbench upstream 127.0.0.1:$port" upstream_url="http://127.0.0.1:$port"; then
    saved_duration=$duration
    duration=$http_round_seconds
    # A round whose wrk run failed has 0 req/s and is never the best: the rows say so.
    best_wd=0 best_nginx=0 wd_cpu=0 wd_lat="wrk failed" wd_foreign=0 nginx_cpu=0 nginx_lat="wrk failed" nginx_foreign=0
    for ((round = 1; round <= http_rounds; round++)); do
      # shellcheck disable=SC2086
      measure 8 13 "$wd_port" "$wd_pid" $wd_tree
      if awk -v a="$r_rps" -v b="$best_wd" 'BEGIN { exit !(a > b) }'; then
        best_wd=$r_rps wd_cpu=$r_cpu wd_lat="p50 $r_p50 / p99 $r_p99 ms$r_note" wd_foreign=$r_foreign
      fi
      [ "$have_nginx" = 1 ] || continue
      measure 8 13 "$nginx_port" "$nginx_pids" ${nginx_pids//,/ } "$upstream_pid"
      if awk -v a="$r_rps" -v b="$best_nginx" 'BEGIN { exit !(a > b) }'; then
        best_nginx=$r_rps nginx_cpu=$r_cpu nginx_lat="p50 $r_p50 / p99 $r_p99 ms$r_note" nginx_foreign=$r_foreign
      fi
    done
    duration=$saved_duration
    stop_watchdog
    rounds_text="best of $http_rounds rounds of $http_round_seconds s, alternating"
    if [ "$have_nginx" = 1 ]; then
      row "nginx in front of the upstream, c=8" "$best_nginx req/s, $nginx_lat, nginx CPU (master + workers) $nginx_cpu µs/req ($rounds_text)" "" "" "$nginx_foreign %"
      times=$(ratio "$best_wd" "$best_nginx")
      row "http mode through the watchdog, c=8: requests/s" "$best_wd req/s = **${times}×** nginx's ($(pct "$best_wd" "$direct") % of direct), $wd_lat" "≥ 1.0× nginx" "$(check "$times" ">=" 1.0)" "$wd_foreign %"
      times=$(ratio "$wd_cpu" "$nginx_cpu")
      row "watchdog CPU per request, http mode c=8" "$wd_cpu µs = **${times}×** nginx's" "≤ 1.0× nginx" "$(check "$times" "<=" 1.0)" "(same rounds)"
    else
      row "http mode through the watchdog, c=8: requests/s" "$best_wd req/s ($(pct "$best_wd" "$direct") % of direct), $wd_lat, watchdog CPU $wd_cpu µs/req; nginx did not start" "≥ 1.0× nginx" "n/a" "$wd_foreign %"
    fi
  else
    na "http mode through the watchdog, c=8: requests/s" "$wd_why" "≥ 1.0× nginx"
  fi
else
  na "http mode through the watchdog, c=8: requests/s" "not selected with --mode" "≥ 1.0× nginx"
fi

# Idle RSS, size, start time.
if [ "$have_classic" = 1 ]; then
  rss_mib=$(fmt %.2f "$(awk -v k="$idle_rss" 'BEGIN { print k / 1024 }')")
  row "idle RSS (after start, before any request)" "$rss_mib MiB ($threads_idle threads)" "≤ 3 MiB" "$(check "$rss_mib" "<=" 3)" ""
else
  na "idle RSS (after start, before any request)" "needs the classic row" "≤ 3 MiB"
fi
size_mib=$(fmt %.2f "$(awk -v b="$(stat -c %s "$bin")" 'BEGIN { print b / 1048576 }')")
row "binary size" "$size_mib MiB ($(stat -c %s "$bin") bytes)" "≤ 2.5 MiB" "$(check "$size_mib" "<=" 2.5)" ""
start_time() {
  snapshot ""
  local t0=$snap_time b0=$snap_busy s0=$snap_self
  r_ok=1
  r_out=$(env -i PATH="$PATH" HOME="${HOME:-/}" TMPDIR="$work" fprocess=cat mode="${mode_env[classic]:-classic}" \
    healthcheck_interval=0 "$fwbench" start-time "$bin" "$starts" 2>&1) || r_ok=0
  snapshot ""
  r_foreign=$(foreign_percent "$t0" "$b0" 0 "$s0" "$snap_time" "$snap_busy" 0 "$snap_self")
}
ms() { fmt %.2f "$(awk -v us="$1" 'BEGIN { print us / 1000 }')"; }
quietly start_time
out=$r_out
if [ "$r_ok" = 1 ]; then
  read -r median low high _ <<<"$(sed 's/[a-z_]*=//g' <<<"$out")"
  row "exec → first 200 on /_/health" "median **$(ms "$median") ms** of $starts starts (min $(ms "$low"), max $(ms "$high"))" "≤ 2 ms" "$(check "$(ms "$median")" "<=" 2)" "$r_foreign %"
else
  na "exec → first 200 on /_/health" "$(tail -1 <<<"$out" | sed 's/^fwbench: //' | cut -c1-90)" "≤ 2 ms"
fi

if [ -n "${shipped:-}" ]; then
  suffix="static musl build, as shipped in images"
  saved_bin=$bin
  bin=$shipped
  if start_watchdog fprocess=cat; then
    rss_mib=$(fmt %.2f "$(awk -v k="$(status_kib VmRSS "$wd_pid")" 'BEGIN { print k / 1024 }')")
    stop_watchdog
    row "idle RSS, $suffix" "$rss_mib MiB" "≤ 3 MiB" "$(check "$rss_mib" "<=" 3)" ""
  else
    na "idle RSS, $suffix" "$wd_why" "≤ 3 MiB"
  fi
  size_mib=$(fmt %.2f "$(awk -v b="$(stat -c %s "$bin")" 'BEGIN { print b / 1048576 }')")
  row "binary size, $suffix" "$size_mib MiB ($(stat -c %s "$bin") bytes)" "≤ 2.5 MiB" "$(check "$size_mib" "<=" 2.5)" ""
  quietly start_time
  out=$r_out
  if [ "$r_ok" = 1 ]; then
    read -r median low high _ <<<"$(sed 's/[a-z_]*=//g' <<<"$out")"
    row "exec → first 200 on /_/health, $suffix" "median **$(ms "$median") ms** of $starts starts (min $(ms "$low"), max $(ms "$high"))" "≤ 2 ms" "$(check "$(ms "$median")" "<=" 2)" "$r_foreign %"
  fi
  bin=$saved_bin
fi

# ---- print -----------------------------------------------------------------------------------

version=$(timeout 2 "$bin" --version 2>&1 </dev/null | head -1 | tr '\t' ' ' || true)
echo "fwatchdog benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'): nproc $cores, kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "binary: $bin ($revision; ${version:-no version}), wrk $(wrk -v 2>&1 | head -1 | awk '{ print $2 }'), ${duration} s per wrk run, wrk -t2 (-t1 at c=1)"
echo "foreign CPU = other work on the machine during the run, % of all cores (⚠ above $noisy_percent %$([ "$reruns" -gt 0 ] && echo ': re-run once, the quieter run kept')); before the run: $busy_before %"
echo
echo "| figure | measured | target | result | foreign CPU |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "took $((EPOCHSECONDS - began)) s"
