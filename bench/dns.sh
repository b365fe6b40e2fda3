#!/usr/bin/env bash
# DNS: poolgate against NSD serving the same pool (pool01.contoso.test,
# four A records, as a static zone for NSD), interleaved: each round runs
# NSD then poolgate with the same dnsperf load, ROUNDS rounds, at each core
# count in SCALE (servers pinned with taskset; NSD server-count = the cores
# given, rrl off; poolgate's worker threads = the cores given; its response
# rate limit off too). Over UDP and TCP: queries/s and the queries lost
# (sent, never answered) at the same offered load: dnsperf with the same
# clients and outstanding queries for both, and with DNS_QPS set, the same
# fixed rate (-Q). With COUNTS=1, syscalls (strace -c, COUNT_OPS queries)
# and instructions (callgrind, CG_OPS queries) per UDP query, one core each.
# Loopback only; every run is bounded (-l, timeout); processes stopped on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DNS_QPS=${DNS_QPS:-}
for tool in dnsperf nsd dig taskset setsid strace valgrind python3; do
    command -v "$tool" >/dev/null || { echo "dns bench: $tool missing (bench/run installs it), skipped"; exit 0; }
done
build_poolgate
bench_header dns "$(nsd -v 2>&1 | head -1)" "dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ { print $2; exit }')"
echo "# query: pool01.contoso.test A (4 records); udp: dnsperf -c 4 -q 400; tcp: -c 20 -q 200${DNS_QPS:+; offered rate -Q $DNS_QPS}"

PG_PORT=$(free_port)
NSD_PORT=$(free_port)
cat >"$work/poolgate.toml" <<TOML
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
    printf '[[pool.member]]\nname = "fe0%s"\naddress = "127.0.0.1%s"\n' "$m" "$m" >>"$work/poolgate.toml"
done
cat >"$work/contoso.test.zone" <<ZONE
\$ORIGIN contoso.test.
\$TTL 3600
@       IN SOA contoso.test. hostmaster.contoso.test. 1 3600 600 604800 30
@       IN NS  contoso.test.
pool01 30 IN A 127.0.0.11
pool01 30 IN A 127.0.0.12
pool01 30 IN A 127.0.0.13
pool01 30 IN A 127.0.0.14
ZONE
nsd_config() { # server-count
    cat >"$work/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1@$NSD_PORT
    server-count: $1
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
}
echo "pool01.contoso.test A" >"$work/queries"

# The members stay up (poolgate's tcp monitor), for at most an hour.
spawn taskset -c "$(client_cpus 1)" python3 "$BENCH_DIR/members.py" 3600 5061 127.0.0.11 127.0.0.12 127.0.0.13 127.0.0.14 \
    >"$work/members.log" 2>&1
for _ in $(seq 100); do grep -q ready "$work/members.log" && break; sleep 0.1; done
wait_tcp 127.0.0.14 5061

wait_dns() { # port [tries of 0.1 s]
    for _ in $(seq "${2:-100}"); do
        dig @127.0.0.1 -p "$1" +time=1 +tries=1 pool01.contoso.test A 2>/dev/null | grep -q "status: NOERROR" && return 0
        sleep 0.1
    done
    echo "dns bench: no DNS answer on port $1" >&2
    exit 1
}
start_side() { # side cores [wrapper...] -> $server_pid, $server_port
    local side=$1 cores=$2
    shift 2
    if [ "$side" = nsd ]; then
        nsd_config "$cores"
        rm -f "$work/nsd.pid" "$work/xfrd.state"
        spawn taskset -c "$(server_cpus "$cores")" "$@" nsd -d -c "$work/nsd.conf" 2>"$work/nsd.err"
        server_port=$NSD_PORT
    else
        rm -rf "$work/var"
        RUST_LOG=warn spawn taskset -c "$(server_cpus "$cores")" "$@" "$POOLGATE" run --data-dir "$work/var" \
            --config "$work/poolgate.toml" 2>"$work/poolgate.err"
        server_port=$PG_PORT
    fi
    server_pid=$spawned
    wait_dns "$server_port" 600
}
stop_side() {
    stop_group "$server_pid"
    sleep 0.3
}

dnsperf_run() { # port mode cpus [extra dnsperf args] -> "qps lost"
    local port=$1 mode=$2 cpus=$3
    shift 3
    local extra=(-c 4 -q 400)
    [ "$mode" = tcp ] && extra=(-m tcp -c 20 -q 200)
    [ -n "$DNS_QPS" ] && extra+=(-Q "$DNS_QPS")
    timeout $((DURATION + 30)) taskset -c "$cpus" dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" \
        "${extra[@]}" "$@" 2>&1 | awk '/Queries lost:/ { lost = $3 } /Queries per second:/ { qps = int($4) } END { print qps, lost }'
}

for cores in $SCALE; do
    ccpus=$(client_cpus "$cores")
    for round in $(seq "$ROUNDS"); do
        echo "# round $round/$ROUNDS at $cores core(s)" >&2
        for side in nsd poolgate; do
            start_side "$side" "$cores"
            for mode in udp tcp; do
                s0=$(cpu_busy "$(server_cpus "$cores")")
                c0=$(cpu_busy "$ccpus")
                read -r qps lost < <(dnsperf_run "$server_port" "$mode" "$ccpus" -l "$DURATION")
                s1=$(cpu_busy "$(server_cpus "$cores")")
                c1=$(cpu_busy "$ccpus")
                sample "$mode queries/s" q/s higher "$cores" "$side" "$qps"
                sample "$mode lost queries" queries lower "$cores" "$side" "$lost"
                # With the servers on cores of their own: their cores' CPU
                # time per query, and which side's cores were the full ones.
                if [ "$cores" -lt "$NCPU" ] && [ -n "$qps" ]; then
                    sample "$mode: server CPU/query" "CPU us/op" lower "$cores" "$side" \
                        "$(cpu_us_per_op "$s0" "$s1" $((qps * DURATION)))"
                    sample "$mode: server cores busy" "%" neither "$cores" "$side" "$(busy_share "$s0" "$s1")"
                    sample "$mode: client cores busy" "%" neither "$cores" "$side" "$(busy_share "$c0" "$c1")"
                fi
            done
            stop_side
        done
    done
done

if [ "$COUNTS" = 1 ]; then
    echo "# counts: each server on one core; $COUNT_OPS UDP queries under strace -c, $CG_OPS under callgrind (dnsperf -c 1 -q 10)" >&2
    for side in nsd poolgate; do
        start_side "$side" 1
        count_syscalls "syscalls per udp query" 1 "$side" "$COUNT_OPS" "$server_pid" -- \
            timeout 300 dnsperf -s 127.0.0.1 -p "$server_port" -d "$work/queries" -c 1 -q 10 -n "$COUNT_OPS"
        stop_side
        mkdir -p "$work/cg-$side"
        start_side "$side" 1 "${CALLGRIND[@]}" --callgrind-out-file="$work/cg-$side/%p.out" --log-file="$work/cg-$side/%p.log"
        dnsperf -s 127.0.0.1 -p "$server_port" -d "$work/queries" -c 1 -q 10 -n 50 >/dev/null 2>&1 || true
        count_instructions "instructions per udp query" 1 "$side" "$CG_OPS" "$work/cg-$side" "$server_pid" -- \
            timeout 300 dnsperf -s 127.0.0.1 -p "$server_port" -d "$work/queries" -c 1 -q 10 -n "$CG_OPS" -t 30
        stop_side
    done
fi

echo
summary nsd
echo "goals (issue 19): udp >= 1.2x NSD with no more lost queries than NSD, tcp >= 1.5x"
