#!/usr/bin/env bash
# DNS throughput: dnsperf against poolgate and against NSD serving the same
# pool (pool01.contoso.test, 4 A records) as a static zone, side by side in
# one run. Each server is pinned to one core (taskset), dnsperf to another.
# Prints queries per second over UDP and TCP and poolgate's ratio to NSD.
# Needs the Debian packages dnsperf and nsd. Every run is bounded (-l).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DNS_BENCH_SECONDS:-10}
SERVER_CPU=${DNS_BENCH_SERVER_CPU:-1}
CLIENT_CPU=${DNS_BENCH_CLIENT_CPU:-0}
for tool in dnsperf nsd taskset; do
    command -v "$tool" >/dev/null || { echo "dns.sh: $tool not installed (apt-get install dnsperf nsd)" >&2; exit 1; }
done

if [ -z "${POOLGATE_BIN:-}" ]; then
    cargo build --locked --release -p poolgate --bin poolgate >&2
    POOLGATE_BIN=target/release/poolgate
fi
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PG_PORT=$(free_port)
NSD_PORT=$(free_port)

cat > "$work/poolgate.toml" <<TOML
[listen]
admin = "127.0.0.1:0"
dns = ["127.0.0.1:$PG_PORT"]
[dns]
ttl = 30
# dnsperf is one source sending as fast as it can: measure throughput, not
# the response-rate limit (NSD's side runs without one as well).
rrl_rate = 0
[[zone]]
name = "contoso.test"
[[monitor]]
name = "fe-sip"
type = "tcp"
port = 5061
[[pool]]
name = "pool01"
fqdn = "pool01.contoso.test"
monitor = "fe-sip"
registrar_port = 5061
registrar_transport = "tls"
TOML
for m in 1 2 3 4; do
    printf '[[pool.member]]\nname = "fe0%s"\naddress = "127.0.0.1%s"\n' "$m" "$m" >> "$work/poolgate.toml"
done

cat > "$work/contoso.test.zone" <<ZONE
\$ORIGIN contoso.test.
\$TTL 3600
@       IN SOA contoso.test. hostmaster.contoso.test. 1 3600 600 604800 30
@       IN NS  contoso.test.
pool01 30 IN A 127.0.0.11
pool01 30 IN A 127.0.0.12
pool01 30 IN A 127.0.0.13
pool01 30 IN A 127.0.0.14
ZONE
cat > "$work/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1@$NSD_PORT
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$work"
    database: ""
    zonelistfile: "$work/zone.list"
    xfrdfile: "$work/xfrd.state"
    xfrdir: "$work"
    pidfile: "$work/nsd.pid"
    logfile: "$work/nsd.log"
    rrl-ratelimit: 0
    verbosity: 0
remote-control:
    control-enable: no
zone:
    name: contoso.test
    zonefile: contoso.test.zone
CONF
echo "pool01.contoso.test A" > "$work/queries"

taskset -c "$SERVER_CPU" nsd -d -c "$work/nsd.conf" 2>"$work/nsd.err" &
pids+=($!)
RUST_LOG=warn taskset -c "$SERVER_CPU" "$POOLGATE_BIN" run --data-dir "$work/var" --config "$work/poolgate.toml" 2>"$work/poolgate.err" &
pids+=($!)

wait_up() {
    for _ in $(seq 100); do
        dig @127.0.0.1 -p "$1" +time=1 +tries=1 pool01.contoso.test A 2>/dev/null | grep -q "status: NOERROR" && return 0
        sleep 0.1
    done
    echo "dns.sh: no DNS answer on port $1" >&2; cat "$work"/*.err >&2; exit 1
}
wait_up "$NSD_PORT"
wait_up "$PG_PORT"

qps() { # port mode
    local extra=()
    [ "$2" = tcp ] && extra=(-m tcp -c 20 -q 200) || extra=(-c 4 -q 400)
    taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$1" -d "$work/queries" -l "$DURATION" "${extra[@]}" 2>&1 \
        | awk '/Queries per second/ {print int($4)}'
}

printf '%-6s %12s %12s %8s\n' mode nsd_qps poolgate_qps ratio
for mode in udp tcp; do
    nsd_qps=$(qps "$NSD_PORT" "$mode")
    pg_qps=$(qps "$PG_PORT" "$mode")
    ratio=$(python3 -c "print(f'{$pg_qps / max($nsd_qps, 1):.2f}')")
    printf '%-6s %12s %12s %8s\n' "$mode" "$nsd_qps" "$pg_qps" "${ratio}x"
done
