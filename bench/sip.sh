#!/usr/bin/env bash
# REGISTER -> 301 per second: poolgate against Kamailio's dispatcher module
# configured to answer the same redirect (hash over the To URI, three
# members, one Contact each), interleaved: each round runs Kamailio then
# poolgate with the same sipp load, ROUNDS rounds, at each core count in
# SCALE (servers pinned with taskset; Kamailio children = poolgate's worker
# threads = the cores given). Each measurement is SIPPS sipp processes (one
# per load-generator core unless set) x CALLS calls, its rate over the wall
# time of the slowest; failed calls are counted per side. With COUNTS=1,
# syscalls (strace -c, COUNT_OPS calls) and instructions (callgrind, CG_OPS
# calls) per REGISTER, one core each.
# Loopback only; every sipp has a global timeout; processes stopped on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CALLS=${CALLS:-20000}
# Calls per second each sipp tries to start; -l caps the calls in flight.
RATE=${RATE:-100000}
for tool in sipp kamailio taskset setsid strace valgrind python3; do
    command -v "$tool" >/dev/null || { echo "sip bench: $tool missing (bench/run installs it), skipped"; exit 0; }
done
build_poolgate
bench_header sip "$(kamailio -v | head -1 | sed 's/^version: //')" "$(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1)"
echo "# load: ${SIPPS:-one per load-generator core} sipp x $CALLS REGISTER over UDP, -r $RATE -l 200, 301 expected"

pg_port=$(free_port)
admin_port=$(free_port)
km_port=$(free_port)
cat >"$work/poolgate.toml" <<TOML
[listen]
admin = "127.0.0.1:$admin_port"
sip_udp = "127.0.0.1:$pg_port"

# sipp is one source at full speed: measure throughput, not the per-source
# rate limit.
[sip]
udp_rate = 0

[[zone]]
name = "contoso.test"

[[monitor]]
name = "fe-sip"
type = "tcp"
port = 15061

[[pool]]
name = "pool01"
fqdn = "pool01.contoso.test"
monitor = "fe-sip"
registrar_port = 15061
registrar_transport = "tls"

[[pool.member]]
name = "fe01"
address = "127.0.0.11"

[[pool.member]]
name = "fe02"
address = "127.0.0.12"

[[pool.member]]
name = "fe03"
address = "127.0.0.13"
TOML

modules=$(dirname "$(find /usr/lib -name dispatcher.so -path '*kamailio*' | head -1)")
cat >"$work/dispatcher.list" <<LIST
1 sip:127.0.0.11:15061;transport=tls
1 sip:127.0.0.12:15061;transport=tls
1 sip:127.0.0.13:15061;transport=tls
LIST
kamailio_config() { # children
    cat >"$work/kamailio.cfg" <<CFG
#!KAMAILIO
debug=0
log_stderror=yes
children=$1
disable_tcp=yes
listen=udp:127.0.0.1:$km_port
mpath="$modules/"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "dispatcher.so"
loadmodule "corex.so"
loadmodule "textops.so"
modparam("dispatcher", "list_file", "$work/dispatcher.list")
modparam("dispatcher", "flags", 2)
request_route {
    if (!is_method("REGISTER")) { sl_send_reply("405", "Method Not Allowed"); exit; }
    if (!ds_select_domain("1", "2", "3")) { sl_send_reply("503", "Service Unavailable"); exit; }
    # The reply's Contact list is the R-URI then the branches: three
    # members, one Contact each, as poolgate sends.
    append_branch();
    if (ds_next_domain()) { append_branch(); }
    ds_next_domain();
    sl_send_reply("301", "Redirect request to Home Server");
    exit;
}
CFG
}

# The members stay up (poolgate's tcp monitor), for at most an hour.
spawn taskset -c "$(client_cpus 1)" python3 "$BENCH_DIR/members.py" 3600 15061 127.0.0.11 127.0.0.12 127.0.0.13 \
    >"$work/members.log" 2>&1
for _ in $(seq 100); do grep -q ready "$work/members.log" && break; sleep 0.1; done
wait_tcp 127.0.0.13 15061

probe() { # target
    timeout 10 sipp -sf "$BENCH_DIR/sip-register.xml" -t u1 -m 1 -i 127.0.0.1 -p "$(free_port)" \
        -timeout 3s -timeout_error -nostdin "$1" >/dev/null 2>&1
}
start_side() { # side cores [wrapper...] -> $server_pid, $target
    local side=$1 cores=$2
    shift 2
    if [ "$side" = kamailio ]; then
        kamailio_config "$cores"
        spawn taskset -c "$(server_cpus "$cores")" "$@" kamailio -DD -E -f "$work/kamailio.cfg" \
            -P "$work/kamailio.pid" >"$work/kamailio.log" 2>&1
        target=127.0.0.1:$km_port
    else
        rm -rf "$work/pg"
        RUST_LOG=warn spawn taskset -c "$(server_cpus "$cores")" "$@" "$POOLGATE" run --data-dir "$work/pg" \
            --config "$work/poolgate.toml" >"$work/poolgate.log" 2>&1
        target=127.0.0.1:$pg_port
    fi
    server_pid=$spawned
    # Under callgrind start-up takes a while.
    for _ in $(seq 120); do probe "$target" && return 0; sleep 0.5; done
    echo "sip bench: $side does not answer on $target" >&2
    tail -5 "$work/$side.log" >&2
    exit 1
}
stop_side() {
    stop_group "$server_pid"
    sleep 0.3
}

# sipps calls cpus -> "calls/s failed"
measure() {
    local sipps=$1 calls=$2 cpus=$3 start end i pid
    local spids=()
    start=$(date +%s.%N)
    for i in $(seq "$sipps"); do
        taskset -c "$cpus" sipp -sf "$BENCH_DIR/sip-register.xml" -t u1 -m "$calls" -r "$RATE" -l 200 \
            -i 127.0.0.1 -p "$(free_port)" -timeout 120s -timeout_error -nostdin \
            -trace_stat -stf "$work/sipp-$i.csv" "$target" >"$work/sipp-$i.out" 2>&1 &
        spids+=($!)
    done
    for pid in "${spids[@]}"; do wait "$pid" || true; done
    end=$(date +%s.%N)
    # The last line of each statistics file holds the cumulative counters.
    local failed=0 f
    for i in $(seq "$sipps"); do
        f=$(python3 - "$work/sipp-$i.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=";"))
head, last = rows[0], rows[-1]
print(int(last[head.index("FailedCall(C)")]))
PY
) || f=$calls
        failed=$((failed + f))
    done
    rm -f "$work"/sipp-*.csv
    python3 -c "import sys; print('%.0f' % ((int(sys.argv[1]) * int(sys.argv[2]) - int(sys.argv[4])) / (float(sys.argv[3]))), sys.argv[4])" \
        "$sipps" "$calls" "$(python3 -c "print($end - $start)")" "$failed"
}

for cores in $SCALE; do
    ccpus=$(client_cpus "$cores")
    sipps=${SIPPS:-$(client_count "$cores")}
    for round in $(seq "$ROUNDS"); do
        echo "# round $round/$ROUNDS at $cores core(s)" >&2
        for side in kamailio poolgate; do
            start_side "$side" "$cores"
            read -r rate failed < <(measure "$sipps" "$CALLS" "$ccpus")
            sample "REGISTER->301/s" calls/s higher "$cores" "$side" "$rate"
            sample "failed calls" calls lower "$cores" "$side" "$failed"
            stop_side
        done
    done
done

if [ "$COUNTS" = 1 ]; then
    echo "# counts: each server on one core; $COUNT_OPS REGISTERs under strace -c, $CG_OPS under callgrind (one sipp, -r 200 -l 10)" >&2
    count_load() { # calls
        timeout 200 sipp -sf "$BENCH_DIR/sip-register.xml" -t u1 -m "$1" -r 200 -l 10 -i 127.0.0.1 \
            -p "$(free_port)" -timeout 180s -timeout_error -nostdin "$target"
    }
    for side in kamailio poolgate; do
        start_side "$side" 1
        count_syscalls "syscalls per REGISTER" 1 "$side" "$COUNT_OPS" "$server_pid" -- count_load "$COUNT_OPS"
        stop_side
        mkdir -p "$work/cg-$side"
        start_side "$side" 1 "${CALLGRIND[@]}" --callgrind-out-file="$work/cg-$side/%p.out" --log-file="$work/cg-$side/%p.log"
        count_load 20 >/dev/null 2>&1 || true
        count_instructions "instructions per REGISTER" 1 "$side" "$CG_OPS" "$work/cg-$side" "$server_pid" -- count_load "$CG_OPS"
        stop_side
    done
fi

echo
summary kamailio
echo "goals (issue 19): REGISTER->301 >= 1.5x Kamailio with no failed calls"
