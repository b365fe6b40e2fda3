#!/usr/bin/env bash
# The VIP proxy against HAProxy (mode tcp), same members (three for HTTP,
# one for iperf3, whose two connections must meet one server), same load
# generators, interleaved: each round runs HAProxy then poolgate, ROUNDS
# rounds, at each core count in SCALE (the servers pinned with taskset,
# poolgate's worker threads and HAProxy's nbthread = the cores given).
#   1. one-stream throughput, iperf3 (HAProxy: option splice-auto)
#   2. new connections/s, wrk with Connection: close
#   3. small requests on kept-alive connections, wrk
#   4. RSS per idle proxied connection, IDLE_CONNECTIONS (default 10,000),
#      at the largest core count only (memory does not depend on timing)
# then, with COUNTS=1, TCP segments sent (nstat, COUNT_OPS operations),
# syscalls (strace -c, COUNT_OPS operations) and
# instructions (callgrind, CG_OPS operations) per proxied connection and per
# kept-alive request, on each server given one core.
# Both sides balance round robin over the same members. Loopback only; every
# run is bounded in time; every process started is stopped on exit.
# Knobs: see bench/lib.sh; POOLGATE_RELAY (auto, copy, splice) is passed on.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-50}
MEMBERS=(127.0.0.11 127.0.0.12 127.0.0.13)
POOLGATE_VIP=127.0.0.2
HAPROXY_VIP=127.0.0.3
IPERF_PORT=25201
HTTP_PORT=25202

for tool in haproxy iperf3 wrk nginx python3 taskset setsid strace valgrind nstat; do
    command -v "$tool" >/dev/null || { echo "proxy bench: $tool missing (bench/run installs it), skipped"; exit 0; }
done
build_poolgate

# Each idle proxied connection costs the proxy two descriptors; HAProxy
# asks for about 2.5 x maxconn at start, maxconn = the idle connections + 500.
# As root the hard limit can be raised; otherwise take what is allowed.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
max_idle=$(( $(ulimit -n) * 2 / 5 - 1000 ))
if [ "$IDLE_CONNECTIONS" -gt "$max_idle" ]; then
    echo "# open-files limit $(ulimit -n): idle-connection test capped at $max_idle connections"
    IDLE_CONNECTIONS=$max_idle
fi

bench_header proxy "$(haproxy -v | head -1)" "$(iperf3 -v | head -1)" "$(wrk -v 2>&1 | head -1)" \
    "$(nginx -v 2>&1) (members)"
echo "# members ${MEMBERS[*]} (nginx answering 200 \"ok\"; round robin), bulk member ${MEMBERS[0]} (iperf3 -s; its control and data connections must meet one server); wrk -c$WRK_CONNECTIONS; idle connections $IDLE_CONNECTIONS; relay ${POOLGATE_RELAY:-auto}"

# --- the members: nginx on all three addresses, one iperf3 server each,
# on the load generators' cores; started once for the whole run. ---
start_members() { # cpus
    mkdir -p "$work/nginx"
    local listen="" m
    for m in "${MEMBERS[@]}"; do listen+="        listen $m:$HTTP_PORT backlog=4096;"$'\n'; done
    cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
worker_rlimit_nofile 65536;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
daemon off;
events { worker_connections 30000; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    server {
$listen        location / { return 200 "ok\n"; }
    }
}
NGINX
    spawn taskset -c "$1" nginx -c "$work/nginx/nginx.conf"
    spawn taskset -c "$1" iperf3 -s -B "${MEMBERS[0]}" -p "$IPERF_PORT" >/dev/null 2>&1
    wait_tcp "${MEMBERS[0]}" "$IPERF_PORT"
    for m in "${MEMBERS[@]}"; do wait_tcp "$m" "$HTTP_PORT"; done
}

haproxy_config() { # threads
    local m i=0 servers=""
    for m in "${MEMBERS[@]}"; do i=$((i + 1)); servers+="    server fe0$i $m"$'\n'; done
    cat >"$work/haproxy.cfg" <<HAPROXY
global
    nbthread $1
    maxconn $((IDLE_CONNECTIONS + 500))
defaults
    mode tcp
    balance roundrobin
    timeout connect 3s
    timeout client 30m
    timeout server 30m
frontend bulk
    bind $HAPROXY_VIP:$IPERF_PORT
    option splice-auto
    default_backend bulk
backend bulk
    option splice-auto
    server fe01 ${MEMBERS[0]}
frontend http
    bind $HAPROXY_VIP:$HTTP_PORT
    default_backend http
backend http
$servers
HAPROXY
}
poolgate_config() {
    {
        cat <<TOML
[listen]
admin = "127.0.0.1:0"

[[zone]]
name = "bench.test"

[[monitor]]
name = "web"
type = "tcp"
port = $HTTP_PORT

[[pool]]
name = "pool"
fqdn = "pool.bench.test"
monitor = "web"
TOML
        local m i=0
        for m in "${MEMBERS[@]}"; do
            i=$((i + 1))
            printf '\n[[pool.member]]\nname = "fe0%d"\naddress = "%s"\n' "$i" "$m"
        done
        cat <<TOML

[[pool]]
name = "bulk"
fqdn = "bulk.bench.test"
monitor = "web"

[[pool.member]]
name = "bulk01"
address = "${MEMBERS[0]}"

[[virtual_service]]
name = "http"
address = "$POOLGATE_VIP"
port = $HTTP_PORT
pool = "pool"
scheduler = "round-robin"

[[virtual_service]]
name = "bulk"
address = "$POOLGATE_VIP"
port = $IPERF_PORT
pool = "bulk"
scheduler = "round-robin"
TOML
    } >"$work/poolgate.toml"
}

# start_side side cores [wrapper...] -> $server_pid, $server_host
start_side() {
    local side=$1 cores=$2
    shift 2
    if [ "$side" = haproxy ]; then
        haproxy_config "$cores"
        spawn taskset -c "$(server_cpus "$cores")" "$@" haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1
        server_host=$HAPROXY_VIP
    else
        poolgate_config
        rm -rf "$work/data"
        RUST_LOG=warn spawn taskset -c "$(server_cpus "$cores")" "$@" "$POOLGATE" run --data-dir "$work/data" \
            --config "$work/poolgate.toml" >"$work/poolgate.log" 2>&1
        server_host=$POOLGATE_VIP
    fi
    server_pid=$spawned
    # Under callgrind start-up takes a while.
    wait_tcp "$server_host" "$HTTP_PORT" 600 "$server_pid" || { tail -5 "$work/$side.log" >&2; exit 1; }
    # poolgate proxies once the monitor has seen a member up.
    for _ in $(seq 100); do
        timeout 5 python3 "$BENCH_DIR/load.py" close "$server_host" "$HTTP_PORT" 1 2>/dev/null && return 0
        sleep 0.2
    done
    echo "proxy bench: $side does not proxy" >&2
    exit 1
}
stop_side() {
    stop_group "$server_pid"
    sleep 0.5
}

gbits() { # host cpus
    timeout $((DURATION + 30)) taskset -c "$2" iperf3 -c "$1" -p "$IPERF_PORT" -t "$DURATION" -J |
        python3 -c '
import json, sys
run = json.load(sys.stdin)
if run.get("error"):
    print("iperf3: " + run["error"], file=sys.stderr)
else:
    print("%.2f" % (run["end"]["sum_received"]["bits_per_second"] / 1e9))'
}
# A wrk run, sampled as `figure` (operations/s). With the servers on cores
# of their own, also their cores' CPU time per operation (all of it: the
# server's user and system time and the softirqs that run there) and how
# busy the load generators' cores were: a ratio of rates says little when
# the load generators' cores, not the servers', were the ones full.
wrk_run() { # figure short-name unit cores side host cpus threads [extra wrk args]
    local figure=$1 short=$2 unit=$3 cores=$4 side=$5 host=$6 cpus=$7 threads=$8
    shift 8
    local scpus out s0 c0 s1 c1 ops
    scpus=$(server_cpus "$cores")
    out=$work/wrk.out
    s0=$(cpu_busy "$scpus")
    c0=$(cpu_busy "$cpus")
    timeout $((DURATION + 30)) taskset -c "$cpus" wrk -t"$threads" -c"$WRK_CONNECTIONS" -d"${DURATION}s" "$@" \
        "http://$host:$HTTP_PORT/" >"$out" 2>&1 || true
    s1=$(cpu_busy "$scpus")
    c1=$(cpu_busy "$cpus")
    sample "$figure" "$unit" higher "$cores" "$side" "$(awk '/Requests\/sec/ { printf "%.0f\n", $2 }' "$out")"
    ops=$(awk '/requests in/ { print $1 }' "$out")
    if [ "$cores" -lt "$NCPU" ] && [ -n "$ops" ]; then
        sample "$short: server CPU/op" "CPU us/op" lower "$cores" "$side" "$(cpu_us_per_op "$s0" "$s1" "$ops")"
        sample "$short: server cores busy" "%" neither "$cores" "$side" "$(busy_share "$s0" "$s1")"
        sample "$short: client cores busy" "%" neither "$cores" "$side" "$(busy_share "$c0" "$c1")"
    fi
}
rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
idle_rss_per_conn() { # host pid -> bytes per idle proxied connection
    local before after client
    before=$(rss_kib "$2")
    timeout 120 python3 - "$1" "$HTTP_PORT" "$IDLE_CONNECTIONS" "$work/idle.ready" <<'PY' &
import socket, sys, time
host, port, n, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
# poolgate's accept layer caps one source at 1,000 connections: spread the
# connections over source addresses 127.1.0.1 and up, 500 each.
socks = []
for i in range(n):
    s = socket.socket()
    s.settimeout(10)
    s.bind(("127.1.%d.%d" % (i // 500 // 250, i // 500 % 250 + 1), 0))
    s.connect((host, port))
    socks.append(s)
open(ready, "w").close()
time.sleep(6)
PY
    client=$!
    for _ in $(seq 600); do
        [ -e "$work/idle.ready" ] && break
        kill -0 "$client" 2>/dev/null || break
        sleep 0.1
    done
    if [ ! -e "$work/idle.ready" ]; then
        wait "$client" || true
        echo "  (idle connections: the client did not open them all)" >&2
        return 0
    fi
    sleep 2
    after=$(rss_kib "$2")
    wait "$client" || true
    rm -f "$work/idle.ready"
    echo $(( (after - before) * 1024 / IDLE_CONNECTIONS ))
}

start_members "$(client_cpus 1)"
max_cores=$(tr ' ' '\n' <<<"$SCALE" | sort -n | tail -1)
for cores in $SCALE; do
    ccpus=$(client_cpus "$cores")
    threads=$(client_count "$cores")
    for round in $(seq "$ROUNDS"); do
        echo "# round $round/$ROUNDS at $cores core(s)" >&2
        for side in haproxy poolgate; do
            start_side "$side" "$cores"
            sample "iperf3 one stream" Gbit/s higher "$cores" "$side" "$(gbits "$server_host" "$ccpus")"
            wrk_run "new connections/s" "new conns" conn/s "$cores" "$side" "$server_host" "$ccpus" "$threads" \
                -H "Connection: close"
            wrk_run "kept-alive requests/s" "kept-alive" req/s "$cores" "$side" "$server_host" "$ccpus" "$threads"
            if [ "$cores" = "$max_cores" ]; then
                sample "RSS per idle connection" bytes lower "$cores" "$side" \
                    "$(idle_rss_per_conn "$server_host" "$server_pid")"
            fi
            stop_side
        done
    done
done

if [ "$COUNTS" = 1 ]; then
    echo "# counts: each server on one core; $COUNT_OPS operations under strace -c, $CG_OPS under callgrind (one client, one at a time)" >&2
    for side in haproxy poolgate; do
        start_side "$side" 1
        count_segments "TCP segments per proxied connection" 1 "$side" "$COUNT_OPS" -- \
            timeout 300 python3 "$BENCH_DIR/load.py" close "$server_host" "$HTTP_PORT" "$COUNT_OPS"
        count_segments "TCP segments per kept-alive request" 1 "$side" "$COUNT_OPS" -- \
            timeout 300 python3 "$BENCH_DIR/load.py" keep "$server_host" "$HTTP_PORT" "$COUNT_OPS"
        count_syscalls "syscalls per proxied connection" 1 "$side" "$COUNT_OPS" "$server_pid" -- \
            timeout 300 python3 "$BENCH_DIR/load.py" close "$server_host" "$HTTP_PORT" "$COUNT_OPS"
        count_syscalls "syscalls per kept-alive request" 1 "$side" "$COUNT_OPS" "$server_pid" -- \
            timeout 300 python3 "$BENCH_DIR/load.py" keep "$server_host" "$HTTP_PORT" "$COUNT_OPS"
        stop_side
        mkdir -p "$work/cg-$side"
        start_side "$side" 1 "${CALLGRIND[@]}" --callgrind-out-file="$work/cg-$side/%p.out" --log-file="$work/cg-$side/%p.log"
        python3 "$BENCH_DIR/load.py" close "$server_host" "$HTTP_PORT" 20 >/dev/null
        count_instructions "instructions per proxied connection" 1 "$side" "$CG_OPS" "$work/cg-$side" "$server_pid" -- \
            timeout 300 python3 "$BENCH_DIR/load.py" close "$server_host" "$HTTP_PORT" "$CG_OPS"
        count_instructions "instructions per kept-alive request" 1 "$side" "$CG_OPS" "$work/cg-$side" "$server_pid" -- \
            timeout 300 python3 "$BENCH_DIR/load.py" keep "$server_host" "$HTTP_PORT" "$CG_OPS"
        stop_side
    done
fi

echo
summary haproxy
echo "goals (issue 19): throughput >= 1.15x, new connections >= 1.15x, kept-alive >= 1.2x HAProxy; RSS <= 4096 bytes per idle connection"
