#!/usr/bin/env bash
# Health monitor cost at scale: 1,000 tcp targets at a 1 s interval against
# loopback listeners (one per member address, 127.0.100.0 and up) for
# DURATION seconds. Prints poolgate's CPU per second of wall time (share of
# one core), its RSS, and the largest share of targets that started a probe
# within one 10 ms window (poolgate counts probe starts per window when
# POOLGATE_HEALTH_BURST_STATS is set and logs the largest at shutdown).
#
# The named peer, HAProxy (Debian package haproxy), then runs the same 1,000
# tcp-connect checks at 1 s against the same listeners for the same time, and
# the CPU and RSS ratios are printed. Both runs together stay under a minute.
#
# Targets: CPU <= 5 % of one core, largest 10 ms burst <= 5 % of targets.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=${TARGETS:-1000}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
PORT=${PORT:-17001}
PER_POOL=50

if [ -z "${POOLGATE_BIN:-}" ]; then
    cargo build --release --locked -q -p poolgate --bin poolgate
    POOLGATE_BIN=target/release/poolgate
fi

# 1,000 listening sockets plus connections in flight.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
listeners_pid=""
poolgate_pid=""
haproxy_pid=""
cleanup() {
    [ -n "$poolgate_pid" ] && kill "$poolgate_pid" 2>/dev/null || true
    [ -n "$haproxy_pid" ] && kill "$haproxy_pid" 2>/dev/null || true
    [ -n "$listeners_pid" ] && kill "$listeners_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

address() { # index -> 127.0.100.0 + index
    local i=$1
    echo "127.0.$((100 + i / 256)).$((i % 256))"
}

# The member listeners: accept and close, for at most DURATION + 60 s.
python3 - "$TARGETS" "$PORT" "$((2 * DURATION + 60))" > "$work/listeners.log" 2>&1 <<'EOF' &
import asyncio, sys
targets, port, lifetime = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
async def accept(reader, writer):
    writer.close()
async def main():
    servers = []
    for i in range(targets):
        host = f"127.0.{100 + i // 256}.{i % 256}"
        servers.append(await asyncio.start_server(accept, host, port, backlog=64))
    print("ready", flush=True)
    await asyncio.sleep(lifetime)
asyncio.run(main())
EOF
listeners_pid=$!
for _ in $(seq 100); do grep -q ready "$work/listeners.log" && break; sleep 0.1; done
grep -q ready "$work/listeners.log" || { cat "$work/listeners.log"; exit 1; }

{
    printf '[listen]\nadmin = "127.0.0.1:0"\n\n[dns]\nfail_open = false\n\n[[zone]]\nname = "bench.test"\n\n'
    printf '[[monitor]]\nname = "tcp"\ntype = "tcp"\nport = %d\ninterval_ms = 1000\ntimeout_ms = 500\nrise = 2\nfall = 3\n' "$PORT"
    for ((i = 0; i < TARGETS; i++)); do
        if ((i % PER_POOL == 0)); then
            printf '\n[[pool]]\nname = "p%d"\nfqdn = "p%d.bench.test"\nmonitor = "tcp"\n' $((i / PER_POOL)) $((i / PER_POOL))
        fi
        printf '[[pool.member]]\nname = "m%d"\naddress = "%s"\n' "$i" "$(address "$i")"
    done
} > "$work/config.toml"

POOLGATE_HEALTH_BURST_STATS=1 RUST_LOG=info "$POOLGATE_BIN" run --data-dir "$work/data" --config "$work/config.toml" \
    > /dev/null 2> "$work/poolgate.log" &
poolgate_pid=$!
for _ in $(seq 100); do grep -q "Health targets reconciled" "$work/poolgate.log" && break; sleep 0.1; done
grep -q "Health targets reconciled" "$work/poolgate.log" || { cat "$work/poolgate.log"; exit 1; }
sleep "$WARMUP"

ticks=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# measure PID -> "cpu_percent rss_kib" over DURATION seconds
measure() {
    local start_cpu start_ns end_cpu end_ns rss
    start_cpu=$(cpu "$1")
    start_ns=$(date +%s%N)
    sleep "$DURATION"
    end_cpu=$(cpu "$1")
    end_ns=$(date +%s%N)
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$1/status")
    awk -v c=$((end_cpu - start_cpu)) -v t="$ticks" -v ns=$((end_ns - start_ns)) -v rss="$rss" \
        'BEGIN { printf "%.3f %d\n", 100 * (c / t) / (ns / 1e9), rss }'
}
read -r cpu_pct rss_kib < <(measure "$poolgate_pid")
kill -TERM "$poolgate_pid"
wait "$poolgate_pid" || true
poolgate_pid=""

peer=""  # "cpu rss" once HAProxy has run
if command -v haproxy >/dev/null; then
    {
        printf 'global\n    maxconn 2000\ndefaults\n    mode tcp\n    timeout connect 500ms\n    timeout client 5s\n    timeout server 5s\n'
        # HAProxy refuses to run without a listener; nothing connects to it.
        printf 'frontend unused\n    bind 127.0.0.1:%d\n    default_backend members\n' $((PORT + 1))
        printf 'backend members\n    default-server check inter 1s fall 3 rise 2\n'
        for ((i = 0; i < TARGETS; i++)); do
            printf '    server m%d %s:%d\n' "$i" "$(address "$i")" "$PORT"
        done
    } > "$work/haproxy.cfg"
    haproxy -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 &
    haproxy_pid=$!
    sleep "$WARMUP"
    kill -0 "$haproxy_pid" 2>/dev/null || { echo "haproxy did not start:"; cat "$work/haproxy.log"; exit 1; }
    read -r peer_cpu peer_rss < <(measure "$haproxy_pid")
    kill -TERM "$haproxy_pid"
    wait "$haproxy_pid" || true
    haproxy_pid=""
    peer="$peer_cpu $peer_rss"
fi

down=$(grep -c 'to="down"' "$work/poolgate.log" || true)
bursts=$(grep "Probe start bursts" "$work/poolgate.log" | tail -1)
max_in_window=$(sed -n 's/.*max_in_window=\([0-9]*\).*/\1/p' <<< "$bursts")
probes=$(sed -n 's/.*probes=\([0-9]*\).*/\1/p' <<< "$bursts")
steady=$(sed -n 's/.*max_in_window_after_3s=\([0-9]*\).*/\1/p' <<< "$bursts")

read -r peer_cpu peer_rss <<< "$peer" || true
awk -v cpu="$cpu_pct" -v rss="$rss_kib" -v peer_cpu="${peer_cpu:-}" -v peer_rss="${peer_rss:-}" \
    -v max="${max_in_window:-0}" -v steady="${steady:-0}" -v targets="$TARGETS" -v probes="${probes:-0}" \
    -v down="$down" -v duration="$DURATION" 'BEGIN {
    burst_pct = 100 * max / targets
    printf "health: %d tcp targets, 1 s interval, %d s measured\n", targets, duration
    printf "  poolgate CPU            %6.2f %% of one core   (target <= 5 %%)   %s\n", cpu, (cpu <= 5 ? "ok" : "OVER")
    printf "  poolgate RSS            %6.1f MiB\n", rss / 1024
    printf "  largest 10 ms burst     %6d probes = %.2f %% of targets (target <= 5 %%)   %s\n", max, burst_pct, (burst_pct <= 5 ? "ok" : "OVER")
    printf "  ... after the first 3 s %6d probes = %.2f %% of targets\n", steady, 100 * steady / targets
    printf "  probes started          %6d (whole run, warm-up included)\n", probes
    printf "  transitions to down     %6d (expected 0)\n", down
    if (peer_cpu != "") {
        printf "  haproxy CPU             %6.2f %% of one core   (poolgate / haproxy = %.2f)\n", peer_cpu, (peer_cpu > 0 ? cpu / peer_cpu : 0)
        printf "  haproxy RSS             %6.1f MiB              (poolgate / haproxy = %.2f)\n", peer_rss / 1024, (peer_rss > 0 ? rss / peer_rss : 0)
    } else {
        printf "  haproxy                 not installed: no peer figures\n"
    }
}'
