#!/usr/bin/env bash
# REGISTER -> 301 per second: poolgate against Kamailio's dispatcher module
# configured to answer the same redirect (hash over the To URI, three
# members), measured in the same run with the same sipp load. Every run is
# bounded: CALLS calls per sipp, a global sipp timeout, peers killed on exit.
#
# Needs: sipp (sip-tester), kamailio; a release build of poolgate.
# Environment: CALLS (default 100000), SIPPS (parallel sipp processes, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

CALLS=${CALLS:-100000}
SIPPS=${SIPPS:-2}
# Calls per second each sipp tries to start; -l caps the calls in flight.
RATE=${RATE:-100000}
for tool in sipp kamailio; do
    command -v "$tool" >/dev/null || { echo "sip bench: $tool not installed; skipping"; exit 0; }
done
cargo build -q --locked --release -p poolgate --bin poolgate
POOLGATE=target/release/poolgate

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

# --- poolgate -------------------------------------------------------------
pg_port=$(free_port)
admin_port=$(free_port)
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
RUST_LOG=warn "$POOLGATE" run --data-dir "$work/pg" --config "$work/poolgate.toml" 2>"$work/poolgate.log" &
pids+=($!)

# --- Kamailio: dispatcher, alg 2 (hash over To URI), stateless 301 ---------
km_port=$(free_port)
modules=$(dirname "$(find /usr/lib -name dispatcher.so -path '*kamailio*' | head -1)")
cat >"$work/dispatcher.list" <<LIST
1 sip:127.0.0.11:15061;transport=tls
1 sip:127.0.0.12:15061;transport=tls
1 sip:127.0.0.13:15061;transport=tls
LIST
cat >"$work/kamailio.cfg" <<CFG
#!KAMAILIO
debug=0
log_stderror=yes
children=$(nproc)
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
kamailio -DD -E -f "$work/kamailio.cfg" -P "$work/kamailio.pid" >"$work/kamailio.log" 2>&1 &
pids+=($!)

# Wait until both answer one REGISTER.
probe() {
    sipp -sf bench/sip-register.xml -t u1 -m 1 -i 127.0.0.1 -p "$(free_port)" \
        -timeout 3s -timeout_error -nostdin "$1" >/dev/null 2>&1
}
for target in "127.0.0.1:$pg_port" "127.0.0.1:$km_port"; do
    for _ in $(seq 50); do probe "$target" && break; sleep 0.2; done
    probe "$target" || { echo "sip bench: $target does not answer"; cat "$work"/*.log; exit 1; }
done

# Run SIPPS sipp processes, CALLS calls each, against one target; print
# calls per second over the wall time of the slowest.
measure() {
    local target=$1 start end ok=0 i
    local spids=()
    start=$(date +%s.%N)
    for i in $(seq "$SIPPS"); do
        sipp -sf bench/sip-register.xml -t u1 -m "$CALLS" -r "$RATE" -l 200 \
            -i 127.0.0.1 -p "$(free_port)" -timeout 60s -timeout_error -nostdin \
            "$target" >"$work/sipp-$i.out" 2>&1 &
        spids+=($!)
    done
    for pid in "${spids[@]}"; do wait "$pid" && ok=$((ok + 1)); done
    end=$(date +%s.%N)
    python3 -c "print(f'{$SIPPS * $CALLS / ($end - $start):.0f}')"
    for out in "$work"/sipp-*.out; do
        grep "Failed call" "$out" | tail -1 | awk -v t="$target" '{print "  " t " failed calls: " $(NF)}' >&2 || true
    done
    [ "$ok" -eq "$SIPPS" ] || echo "sip bench: $((SIPPS - ok)) sipp run(s) against $target had failed calls" >&2
}

echo "sip bench: $SIPPS sipp x $CALLS REGISTER->301 calls over UDP"
pg_rate=$(measure "127.0.0.1:$pg_port")
km_rate=$(measure "127.0.0.1:$km_port")
echo "poolgate: $pg_rate REGISTER/s"
echo "kamailio: $km_rate REGISTER/s (dispatcher, alg 2)"
python3 -c "print(f'ratio poolgate/kamailio: {$pg_rate / $km_rate:.2f}x (goal >= 1.0x)')"
