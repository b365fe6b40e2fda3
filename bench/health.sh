#!/usr/bin/env bash
# Health monitor cost at scale: TARGETS (default 1,000) tcp health targets at
# a 1 s interval against loopback listeners (bench/members.py, one address
# per target from 127.0.100.0 up, accept and close), poolgate against
# HAProxy running the same tcp-connect checks (inter 1s, rise 2, fall 3)
# over the same listeners, interleaved: each round runs HAProxy then
# poolgate, ROUNDS rounds, each side restarted every round. The listeners
# are started once and outlive every round (bounded lifetime).
#
# Per round and side, after WARMUP s (default 3): CPU time per second of
# wall time over DURATION s (share of one core) and RSS at the end. poolgate
# also: the largest number of probes started within one 10 ms window, as a
# share of the targets (poolgate counts probe starts per window when
# POOLGATE_HEALTH_BURST_STATS is set and logs the largest at shutdown), and
# its transitions to down (every listener stays up: expected 0). HAProxy has
# no counterpart to these two, so its column stays empty for them.
#
# Health checks are timer work, not load: their cost per second does not
# grow with the cores a server may use (poolgate's probes run on one
# single-threaded runtime of their own; HAProxy spreads the same checks
# over its threads). So only the largest core count in SCALE is measured:
# the servers pinned to server_cpus of it, HAProxy nbthread and poolgate's
# worker threads sized to it, like the other benchmarks' largest run.
#
# DURATION defaults to 10 s here (the harness's 5 s is five probe
# intervals); at the defaults the whole run takes about 2.5 minutes.
# Knobs: bench/lib.sh's; TARGETS (1 to 3,000), WARMUP, PORT (the listeners'
# port, default 17001). POOLGATE_BIN is taken as POOLGATE.
# Loopback only; every process started is stopped on exit.
#
# Targets: CPU <= 5 % of one core, largest 10 ms burst <= 5 % of targets.
set -euo pipefail
DURATION=${DURATION:-10}
POOLGATE=${POOLGATE:-${POOLGATE_BIN:-}}
source "$(dirname "$0")/lib.sh"

TARGETS=${TARGETS:-1000}
WARMUP=${WARMUP:-3}
PORT=${PORT:-17001}
PER_POOL=50
[ "$TARGETS" -ge 1 ] && [ "$TARGETS" -le 3000 ] || { echo "TARGETS: between 1 and 3000" >&2; exit 2; }
[ "$WARMUP" -ge 0 ] && [ "$WARMUP" -le 60 ] || { echo "WARMUP: between 0 and 60 seconds" >&2; exit 2; }
[ "$PORT" -ge 1024 ] && [ "$PORT" -le 65535 ] || { echo "PORT: between 1024 and 65535" >&2; exit 2; }

for tool in haproxy python3 taskset setsid; do
    command -v "$tool" >/dev/null || { echo "health bench: $tool missing (bench/run installs it), skipped"; exit 0; }
done
build_poolgate

# The listeners' sockets plus the checks' connections in flight.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cores=$(tr ' ' '\n' <<<"$SCALE" | sort -n | tail -1)
SCALE=$cores
bench_header health "$(haproxy -v | head -1)"
echo "# $TARGETS tcp targets (port $PORT, $PER_POOL per pool), 1 s interval, timeout 500 ms, rise 2, fall 3; warm-up $WARMUP s; measured at $cores core(s) only (timer work, not load)"

address() { # index -> 127.0.100.0 + index
    echo "127.0.$((100 + $1 / 256)).$(($1 % 256))"
}
addresses=()
for ((i = 0; i < TARGETS; i++)); do addresses+=("$(address "$i")"); done

FRONT_PORT=$(free_port)
{
    printf 'global\n    nbthread %d\n    maxconn %d\n' "$cores" $((TARGETS + 1000))
    printf 'defaults\n    mode tcp\n    timeout connect 500ms\n    timeout client 5s\n    timeout server 5s\n'
    # HAProxy refuses to run without a listener; nothing but the readiness
    # check connects to it.
    printf 'frontend unused\n    bind 127.0.0.1:%d\n    default_backend members\n' "$FRONT_PORT"
    printf 'backend members\n    default-server check inter 1s fall 3 rise 2\n'
    for ((i = 0; i < TARGETS; i++)); do printf '    server m%d %s:%d\n' "$i" "${addresses[$i]}" "$PORT"; done
} >"$work/haproxy.cfg"
{
    printf '[listen]\nadmin = "127.0.0.1:0"\n\n[dns]\nfail_open = false\n\n[[zone]]\nname = "bench.test"\n\n'
    printf '[[monitor]]\nname = "tcp"\ntype = "tcp"\nport = %d\ninterval_ms = 1000\ntimeout_ms = 500\nrise = 2\nfall = 3\n' "$PORT"
    for ((i = 0; i < TARGETS; i++)); do
        if ((i % PER_POOL == 0)); then
            printf '\n[[pool]]\nname = "p%d"\nfqdn = "p%d.bench.test"\nmonitor = "tcp"\n' $((i / PER_POOL)) $((i / PER_POOL))
        fi
        printf '[[pool.member]]\nname = "m%d"\naddress = "%s"\n' "$i" "${addresses[$i]}"
    done
} >"$work/poolgate.toml"

# The listeners, on the members' cores, for every round and no longer than
# the longest the rounds can take (start-up, warm-up, measurement, stop).
lifetime=$((ROUNDS * 2 * (WARMUP + DURATION + 40) + 60))
spawn taskset -c "$(client_cpus "$cores")" python3 "$BENCH_DIR/members.py" "$lifetime" "$PORT" "${addresses[@]}" \
    >"$work/members.log" 2>&1
members_pid=$spawned
for _ in $(seq 300); do grep -q ready "$work/members.log" && break; sleep 0.1; done
grep -q ready "$work/members.log" || { echo "health bench: the listeners did not start:" >&2; tail -5 "$work/members.log" >&2; exit 1; }
wait_tcp "${addresses[$((TARGETS - 1))]}" "$PORT" 100 "$members_pid"

plain_log() { sed 's/\x1b\[[0-9;]*m//g' "$1"; } # without the ANSI colours
start_side() { # side round -> $server_pid
    local side=$1 round=$2
    if [ "$side" = haproxy ]; then
        spawn taskset -c "$(server_cpus "$cores")" haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.$round.log" 2>&1
        server_pid=$spawned
        wait_tcp 127.0.0.1 "$FRONT_PORT" 300 "$server_pid" || { tail -5 "$work/haproxy.$round.log" >&2; exit 1; }
    else
        rm -rf "$work/data"
        POOLGATE_HEALTH_BURST_STATS=1 RUST_LOG=info spawn taskset -c "$(server_cpus "$cores")" "$POOLGATE" run \
            --data-dir "$work/data" --config "$work/poolgate.toml" >/dev/null 2>"$work/poolgate.$round.log"
        server_pid=$spawned
        for _ in $(seq 300); do
            plain_log "$work/poolgate.$round.log" | grep -q "Health targets reconciled" && return 0
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        echo "health bench: poolgate did not start its health targets:" >&2
        tail -5 "$work/poolgate.$round.log" >&2
        exit 1
    fi
}

ticks=$(getconf CLK_TCK)
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; } # utime + stime, all threads
measure() { # pid -> "cpu_percent rss_kib" over DURATION s
    local start_cpu start_ns end_cpu end_ns rss
    start_cpu=$(cpu_ticks "$1")
    start_ns=$(date +%s%N)
    sleep "$DURATION"
    end_cpu=$(cpu_ticks "$1") || { echo "health bench: the server exited while measured" >&2; exit 1; }
    end_ns=$(date +%s%N)
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$1/status")
    awk -v c=$((end_cpu - start_cpu)) -v t="$ticks" -v ns=$((end_ns - start_ns)) -v rss="$rss" \
        'BEGIN { printf "%.2f %d\n", 100 * (c / t) / (ns / 1e9), rss }'
}
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$2"; } # name line -> its number

for round in $(seq "$ROUNDS"); do
    echo "# round $round/$ROUNDS at $cores core(s)" >&2
    for side in haproxy poolgate; do
        start_side "$side" "$round"
        sleep "$WARMUP"
        measured=$(measure "$server_pid")
        read -r cpu_pct rss_kib <<<"$measured"
        stop_group "$server_pid"
        sample "CPU" "% of one core" lower "$cores" "$side" "$cpu_pct"
        sample "RSS" KiB lower "$cores" "$side" "$rss_kib"
        if [ "$side" = poolgate ]; then
            # Written at shutdown: the whole run, warm-up included.
            log=$(plain_log "$work/poolgate.$round.log")
            bursts=$(grep "Probe start bursts" <<<"$log" | tail -1 || true)
            max=$(field max_in_window "$bursts")
            steady=$(field max_in_window_after_3s "$bursts")
            sample "largest 10 ms probe burst" "% of targets" lower "$cores" poolgate \
                "${max:+$(awk -v m="$max" -v t="$TARGETS" 'BEGIN { printf "%.2f", 100 * m / t }')}"
            sample "transitions to down" transitions lower "$cores" poolgate "$(grep -c 'to="down"' <<<"$log" || true)"
            echo "    poolgate: $(field probes "$bursts") probes started, largest 10 ms burst ${max:-?}," \
                "${steady:-?} after the first 3 s" >&2
        fi
        sleep 0.5
    done
done

echo
summary haproxy
python3 - "$SAMPLES" "$ROUNDS" <<'PY'
import statistics, sys

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1], encoding="utf-8")]
rounds = int(sys.argv[2])


def values(figure):
    return [float(r[5]) for r in rows if r[0] == figure and r[4] == "poolgate"]


def verdict(figure, limit):
    got = values(figure)
    if not got:
        return "no value", "MISSING"
    median = statistics.median(got)
    return f"{median:.2f} %", "ok" if median <= limit else "OVER"


burst, down = values("largest 10 ms probe burst"), values("transitions to down")
if burst:
    print(
        f"poolgate only: largest 10 ms probe burst {statistics.median(burst):.2f} % of targets "
        f"[{min(burst):.2f}-{max(burst):.2f}] over {len(burst)} round(s); "
        f"transitions to down {int(sum(down))} over {len(down)} of {rounds} round(s) (expected 0)"
    )
cpu, cpu_ok = verdict("CPU", 5)
burst_median, burst_ok = verdict("largest 10 ms probe burst", 5)
print(
    f"targets (poolgate medians): CPU <= 5 % of one core: {cpu} {cpu_ok}; "
    f"largest 10 ms burst <= 5 % of targets: {burst_median} {burst_ok}"
)
PY
