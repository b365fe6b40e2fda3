#!/usr/bin/env bash
# The VIP proxy side by side with HAProxy (mode tcp), same member, same run:
#   1. one-stream throughput, iperf3            (goal >= 1.15x HAProxy)
#   2. new connections/s, wrk Connection: close (goal >= 1.1x HAProxy)
#   3. small requests on kept-alive connections (goal >= 1.2x HAProxy)
#   4. RSS per idle proxied connection, 10,000  (goal <= 8 KiB)
# poolgate runs three times: copy relay, splice(2) relay, and auto (copy,
# then splice once a direction carries bulk data; the default).
# Every run is bounded (DURATION seconds, default 8). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
MEMBER=127.0.0.11
POOLGATE_VIP=127.0.0.2
HAPROXY_VIP=127.0.0.3
IPERF_PORT=25201
HTTP_PORT=25202

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    need=()
    for tool in haproxy:haproxy iperf3:iperf3 wrk:wrk nginx:nginx-light; do
        command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
fi
for tool in haproxy iperf3 wrk nginx python3; do
    command -v "$tool" >/dev/null || { echo "proxy bench: $tool missing, skipped"; exit 0; }
done

if [ -z "${POOLGATE:-}" ]; then
    cargo build --quiet --locked --release -p poolgate --bin poolgate
    POOLGATE=$PWD/target/release/poolgate
fi
# Each idle proxied connection costs the proxy two descriptors; stay under
# the hard limit this machine allows.
ulimit -n "$(ulimit -Hn)"
max_idle=$(( ($(ulimit -n) - 200) / 2 ))
if [ "$IDLE_CONNECTIONS" -gt "$max_idle" ]; then
    echo "open-files limit $(ulimit -n): idle-connection test capped at $max_idle connections"
    IDLE_CONNECTIONS=$max_idle
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_port() { # host port
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1:$2" >&2
    exit 1
}

# --- the member: iperf3 and nginx on 127.0.0.11 ---
iperf3 -s -B "$MEMBER" -p "$IPERF_PORT" >/dev/null 2>&1 &
pids+=($!)
mkdir -p "$work/nginx"
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
        listen $MEMBER:$HTTP_PORT backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
NGINX
nginx -c "$work/nginx/nginx.conf" &
pids+=($!)
wait_port "$MEMBER" "$IPERF_PORT"
wait_port "$MEMBER" "$HTTP_PORT"

# --- HAProxy, mode tcp, same member, port kept ---
cat >"$work/haproxy.cfg" <<HAPROXY
global
    maxconn $max_idle
defaults
    mode tcp
    timeout connect 3s
    timeout client 30m
    timeout server 30m
frontend vip
    bind $HAPROXY_VIP:$IPERF_PORT
    bind $HAPROXY_VIP:$HTTP_PORT
    default_backend pool
backend pool
    server fe01 $MEMBER
HAPROXY
haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 &
haproxy_pid=$!
pids+=($haproxy_pid)
wait_port "$HAPROXY_VIP" "$HTTP_PORT"

# --- poolgate: one virtual service on both ports ---
cat >"$work/poolgate.toml" <<TOML
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

[[pool.member]]
name = "fe01"
address = "$MEMBER"

[[virtual_service]]
name = "bench"
address = "$POOLGATE_VIP"
port = $IPERF_PORT
extra_ports = [$HTTP_PORT]
pool = "pool"
TOML

start_poolgate() { # relay mode
    rm -rf "$work/data-$1"
    POOLGATE_RELAY=$1 RUST_LOG=warn "$POOLGATE" run --data-dir "$work/data-$1" \
        --config "$work/poolgate.toml" >"$work/poolgate-$1.log" 2>&1 &
    poolgate_pid=$!
    pids+=($poolgate_pid)
    wait_port "$POOLGATE_VIP" "$HTTP_PORT"
}
stop_poolgate() {
    kill "$poolgate_pid" 2>/dev/null || true
    wait "$poolgate_pid" 2>/dev/null || true
    # Let the port close before the next instance binds it.
    sleep 0.5
}

gbits() { # host
    iperf3 -c "$1" -p "$IPERF_PORT" -t "$DURATION" -J |
        python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}
rps() { # host [extra wrk args]
    local host=$1
    shift
    wrk -t2 -c50 -d"${DURATION}s" "$@" "http://$host:$HTTP_PORT/" |
        awk '/Requests\/sec/ { printf "%.0f\n", $2 }'
}
rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
idle_rss_per_conn() { # host pid → bytes per connection
    local before after
    before=$(rss_kib "$2")
    python3 - "$1" "$HTTP_PORT" "$IDLE_CONNECTIONS" "$work/idle.ready" <<'PY' &
import socket, sys, time, os
host, port, n, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
socks = []
for _ in range(n):
    s = socket.create_connection((host, port))
    socks.append(s)
open(ready, "w").close()
time.sleep(6)
PY
    local client=$!
    for _ in $(seq 200); do [ -e "$work/idle.ready" ] && break; sleep 0.1; done
    sleep 2
    after=$(rss_kib "$2")
    wait "$client" || true
    rm -f "$work/idle.ready"
    echo $(( (after - before) * 1024 / IDLE_CONNECTIONS ))
}
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2fx' % (a/b) if b else 'n/a')" "$1" "$2"; }

declare -A result
for target in direct haproxy copy splice auto; do
    case $target in
        direct) host=$MEMBER ;;
        haproxy) host=$HAPROXY_VIP ;;
        *) start_poolgate "$target"; host=$POOLGATE_VIP ;;
    esac
    result[$target,gbps]=$(gbits "$host")
    result[$target,close]=$(rps "$host" -H "Connection: close")
    result[$target,keep]=$(rps "$host")
    case $target in
        direct) result[$target,rss]=- ;;
        haproxy) result[$target,rss]=$(idle_rss_per_conn "$host" "$haproxy_pid") ;;
        *) result[$target,rss]=$(idle_rss_per_conn "$host" "$poolgate_pid"); stop_poolgate ;;
    esac
done

printf '%-27s %8s %8s %8s %8s %8s %7s %7s %7s\n' "" direct haproxy copy splice auto \
    copy/H splice/H auto/H
row() { # label key
    printf '%-27s %8s %8s %8s %8s %8s %7s %7s %7s\n' "$1" "${result[direct,$2]}" "${result[haproxy,$2]}" \
        "${result[copy,$2]}" "${result[splice,$2]}" "${result[auto,$2]}" \
        "$(ratio "${result[copy,$2]}" "${result[haproxy,$2]}")" \
        "$(ratio "${result[splice,$2]}" "${result[haproxy,$2]}")" \
        "$(ratio "${result[auto,$2]}" "${result[haproxy,$2]}")"
}
row "iperf3 one stream (Gbit/s)" gbps
row "new connections/s (close)" close
row "kept-alive requests/s" keep
row "RSS per idle conn (bytes)" rss
echo "goals: throughput >= 1.15x, new connections >= 1.1x, kept-alive >= 1.2x HAProxy; RSS <= 8192 bytes per connection"
