# Shared by bench/*.sh (sourced, not run): the run header, the CPU layout,
# process tracking with cleanup on exit, samples and their summary, and the
# machine-noise-free counts (syscalls per operation with strace -c,
# instructions per operation with callgrind).
#
# Knobs (environment):
#   ROUNDS     rounds per comparison, peer and poolgate alternating (default 5)
#   DURATION   seconds per timed run (default 5)
#   SCALE      cores given to the servers, e.g. "1 2" (default: 1 and all)
#   COUNTS     1: also count syscalls, instructions (and for TCP, segments) per operation (default 1)
#   COUNT_OPS  operations under strace -c (default 2000)
#   CG_OPS     operations under callgrind (default 300)
#   CG_IDLE    seconds without load that measure callgrind's background rate (default 2)
#   BENCH_OUT  a folder to keep every sample in (samples-<bench>.tsv)
#   BENCH_KEEP 1: keep the work folder (logs, strace and callgrind output)
#   POOLGATE   the poolgate binary (default: a release build of this tree)

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
COUNTS=${COUNTS:-1}
COUNT_OPS=${COUNT_OPS:-2000}
CG_OPS=${CG_OPS:-300}
NCPU=$(nproc)
if [ -z "${SCALE:-}" ]; then
    SCALE=1
    [ "$NCPU" -gt 1 ] && SCALE="1 $NCPU"
fi
for c in $SCALE; do
    [ "$c" -ge 1 ] && [ "$c" -le "$NCPU" ] || { echo "SCALE: $c is not between 1 and $NCPU cores" >&2; exit 2; }
done
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 50 ] || { echo "ROUNDS: between 1 and 50" >&2; exit 2; }
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 120 ] || { echo "DURATION: between 1 and 120 seconds" >&2; exit 2; }
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

build_poolgate() {
    if [ -z "${POOLGATE:-}" ]; then
        (cd "$BENCH_DIR/.." && cargo build --quiet --locked --release -p poolgate --bin poolgate) >&2
        POOLGATE=$BENCH_DIR/../target/release/poolgate
    fi
}

# --- processes: each server runs in its own process group (setsid), so a
# forking peer (NSD, Kamailio) goes with all its children. ---
work=$(mktemp -d)
SAMPLES=$work/samples.tsv
: >"$SAMPLES"
groups=()
spawn() { # command... (in the background, own process group); sets $spawned
    setsid "$@" &
    spawned=$!
    groups+=("$spawned")
}
stop_group() { # pid: TERM the group, KILL it after 5 s
    local pid=$1
    kill -TERM -- "-$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
bench_cleanup() {
    local pid
    for pid in "${groups[@]}"; do stop_group "$pid"; done
    [ -n "${BENCH_OUT:-}" ] && mkdir -p "$BENCH_OUT" && cp "$SAMPLES" "$BENCH_OUT/samples-$BENCH_NAME.tsv"
    if [ -n "${BENCH_KEEP:-}" ]; then echo "# work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

wait_tcp() { # host port [tries of 0.1 s] [pid that must stay alive]
    for _ in $(seq "${3:-100}"); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then
            echo "the server for $1:$2 exited" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "nothing listens on $1:$2" >&2
    return 1
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- CPU layout: servers on the last C cores, members and load generators
# on the others; with C = all cores they share every core. ---
cpu_range() { # first last -> a taskset list
    if [ "$1" = "$2" ]; then echo "$1"; else echo "$1-$2"; fi
}
server_cpus() { # cores
    if [ "$1" -ge "$NCPU" ]; then cpu_range 0 $((NCPU - 1)); else cpu_range $((NCPU - $1)) $((NCPU - 1)); fi
}
client_cpus() { # cores
    if [ "$1" -ge "$NCPU" ]; then cpu_range 0 $((NCPU - 1)); else cpu_range 0 $((NCPU - $1 - 1)); fi
}
client_count() { # cores given to the servers -> cores the clients get
    if [ "$1" -ge "$NCPU" ]; then echo "$NCPU"; else echo $((NCPU - $1)); fi
}

# --- where the time went: busy jiffies of a set of cpus (taskset syntax),
# so a timed run can report how busy the servers' and the load generators'
# cores were, and the servers' CPU time per operation. ---
cpu_busy() { # cpus -> "busy total" jiffies summed over those cpus
    awk -v list="$1" '
        BEGIN { n = split(list, parts, ","); for (i = 1; i <= n; i++) {
            if (split(parts[i], r, "-") == 2) { for (c = r[1]; c <= r[2]; c++) want["cpu" c] = 1 }
            else want["cpu" parts[i]] = 1 } }
        $1 in want { t = 0; for (i = 2; i <= NF; i++) t += $i; busy += t - $5 - $6; total += t }
        END { print busy + 0, total + 0 }' /proc/stat
}
busy_share() { # "busy total" before, "busy total" after -> percent busy
    python3 -c 'import sys; b0, t0, b1, t1 = map(int, sys.argv[1:]); print("%.0f" % (100 * (b1 - b0) / max(1, t1 - t0)))' $1 $2
}
cpu_us_per_op() { # "busy total" before, "busy total" after, operations -> CPU microseconds per operation
    python3 -c 'import sys, os; b0, t0, b1, t1, ops = map(int, sys.argv[1:]); print("%.1f" % ((b1 - b0) * 1e6 / os.sysconf("SC_CLK_TCK") / max(1, ops)))' $1 $2 "$3"
}

bench_header() { # bench name, then "peer: version" lines
    BENCH_NAME=$1
    shift
    local describe
    describe=$(git -C "$BENCH_DIR/.." describe --always --dirty 2>/dev/null || echo unknown)
    echo "# bench $BENCH_NAME, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# poolgate binary $POOLGATE: $("$POOLGATE" version 2>/dev/null || echo "no version"); tree $describe"
    echo "# nproc $NCPU, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# cpu $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    local peer
    for peer in "$@"; do echo "# peer $peer"; done
    echo "# rounds $ROUNDS (peer and poolgate alternating), $DURATION s per timed run"
    local c
    for c in $SCALE; do
        if [ "$c" -ge "$NCPU" ]; then
            echo "# layout at $c core(s): servers, members and load generators share cpus $(server_cpus "$c")"
        else
            echo "# layout at $c core(s): servers on cpu $(server_cpus "$c"), members and load generators on cpu $(client_cpus "$c")"
        fi
    done
}

sample() { # figure unit better(higher|lower|neither) cores side value
    [ -n "$6" ] || { echo "  (no value for $1, $5)" >&2; return 0; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$SAMPLES"
    printf '  %-34s %3s core(s) %-9s %s %s\n' "$1" "$4" "$5" "$6" "$2" >&2
}
summary() { # peer name
    python3 "$BENCH_DIR/stats.py" "$SAMPLES" "$1"
}

descendants() { # pid... -> those pids and all their descendants
    local pid
    for pid in "$@"; do
        echo "$pid"
        descendants $(ps -o pid= --ppid "$pid" 2>/dev/null)
    done
}

# --- syscalls per operation: strace -c over every thread of the server's
# processes while a fixed number of operations runs. The load command (a
# shell function is fine) must bound itself in count and time. ---
count_syscalls() { # figure cores side ops pid -- load command...
    local figure=$1 cores=$2 side=$3 ops=$4 pid=$5
    shift 6
    local out=$work/strace.$side.$RANDOM args=() p
    for p in $(descendants "$pid"); do args+=(-p "$p"); done
    timeout 300 strace -c -f -o "$out" "${args[@]}" 2>"$out.err" &
    local tracer=$!
    for _ in $(seq 100); do grep -q attached "$out.err" 2>/dev/null && break; sleep 0.1; done
    sleep 0.5
    "$@" >"$out.load" 2>&1 || echo "  (load for $figure, $side ended with an error: $(tail -1 "$out.load"))" >&2
    kill -INT "$tracer" 2>/dev/null || true
    wait "$tracer" 2>/dev/null || true
    local total
    total=$(awk '$NF == "total" { print $4 }' "$out")
    sample "$figure" "syscalls/op" lower "$cores" "$side" \
        "$(python3 -c "import sys; print('%.1f' % (int(sys.argv[1]) / int(sys.argv[2])))" "${total:-0}" "$ops")"
    # The five most frequent, per operation.
    awk -v ops="$ops" '$NF != "total" && $4 ~ /^[0-9]+$/ { printf "%s %.2f\n", $NF, $4 / ops }' "$out" |
        sort -k2 -rn | head -5 | tr '\n' ' ' | sed "s/^/    $side top syscalls per op: /; s/ \$/\n/" >&2
}

# --- TCP segments per operation: the kernel's count of TCP segments sent
# (nstat's TcpOutSegs: every socket on the machine, the client's, the
# server's and the members'), over a fixed number of operations. On
# loopback most of a proxy's time is the kernel's, per packet; this count
# does not depend on machine noise. ---
count_segments() { # figure cores side ops -- load command...
    local figure=$1 cores=$2 side=$3 ops=$4
    shift 5
    local out=$work/nstat.$side.$RANDOM
    nstat -n >/dev/null
    "$@" >"$out.load" 2>&1 || echo "  (load for $figure, $side ended with an error: $(tail -1 "$out.load"))" >&2
    sleep 0.2
    sample "$figure" "segments/op" lower "$cores" "$side" \
        "$(nstat TcpOutSegs 2>/dev/null | awk -v ops="$ops" '$1 == "TcpOutSegs" { printf "%.2f\n", $2 / ops; found = 1 } END { if (!found) print "0.00" }')"
}

# --- instructions per operation: the server runs under callgrind. After a
# warm-up its counters are zeroed and dumped over CG_IDLE seconds without
# load (timers, health probes: the background rate), then zeroed again, a
# fixed number of operations runs, and the dump of every process in the
# server's tree is summed, less the background rate over the load's time. ---
# Prefix a server's command with "${CALLGRIND[@]}" --callgrind-out-file=DIR/%p.out.
CALLGRIND=(valgrind --tool=callgrind --trace-children=yes --dump-instr=no --collect-jumps=no)
CG_IDLE=${CG_IDLE:-2}
callgrind_window() { # prefix pids... -> instructions since the last zeroing
    local prefix=$1
    shift
    find "$prefix" -name '*.out*' >"$prefix/before"
    callgrind_control -d "$@" >/dev/null 2>&1
    find "$prefix" -name '*.out*' | grep -vxFf "$prefix/before" | xargs -r awk '/^totals:/ { s += $2 } END { print s + 0 }'
}
count_instructions() { # figure cores side ops prefix pid -- load command...
    local figure=$1 cores=$2 side=$3 ops=$4 prefix=$5 pid=$6
    shift 7
    local pids idle start end total
    read -ra pids <<<"$(descendants "$pid" | tr '\n' ' ')"
    callgrind_control -z "${pids[@]}" >/dev/null 2>&1
    sleep "$CG_IDLE"
    idle=$(callgrind_window "$prefix" "${pids[@]}")
    callgrind_control -z "${pids[@]}" >/dev/null 2>&1
    start=$(date +%s.%N)
    "$@" >"$prefix/load.out" 2>&1 || echo "  (load for $figure, $side ended with an error: $(tail -1 "$prefix/load.out"))" >&2
    end=$(date +%s.%N)
    total=$(callgrind_window "$prefix" "${pids[@]}")
    sample "$figure" "instructions/op" lower "$cores" "$side" "$(python3 -c '
import sys
total, idle, idle_s, load_s, ops = (float(a) for a in sys.argv[1:])
print(int(max(0.0, total - idle / idle_s * load_s) / ops))' "$total" "$idle" "$CG_IDLE" "$(python3 -c "print($end - $start)")" "$ops")"
    echo "    $side: $total instructions in the load window, background $((${idle%.*} / CG_IDLE))/s subtracted" >&2
}
