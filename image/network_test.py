#!/usr/bin/env python3
"""The appliance's network settings on the image, as an admin sets them.

    network_test.py DISK.raw [--workdir DIR] [--ready-timeout 180]

Boots a copy of the raw disk under QEMU (boot_test.Vm: the first NIC on
user-mode networking, where the test reaches the API on loopback) with a
second virtio NIC on a tap device that lives in a network namespace the
test creates (`pgimg-<pid>`). The test opens the tap from inside the
namespace and hands QEMU the descriptor, so every 198.51.100.x and
198.51.101.x address stays in the namespace and the VM: the root namespace
gets no address, no bridge and no route. In the namespace: the host side
198.51.100.1/24 on the tap, a member (HTTP on 198.51.100.1:443) and chronyd
serving NTP (`local stratum 8`; the host's chronyd, or the one in the image
build's root when the host has none: Debian's chrony package conflicts with
systemd-timesyncd). VLAN 100 is spoken on the tap by hand (a packet socket,
tags written and read by the test, 198.51.101.1): the test machine's kernel
need not have 802.1Q support.

First boot: set the admin password, then through the API:

1. PUT /api/v1/system/network: NIC 2 (matched by the MAC given to QEMU)
   static 198.51.100.10/24 with VLAN 100 at 198.51.101.10/24, NTP server
   198.51.100.1, a host name; it applies, and the confirmation keeps it.
2. 198.51.100.10 answers ping from the namespace, 198.51.101.10 answers
   ARP and ping tagged with VLAN 100.
3. PUT a pool config with a virtual service 198.51.100.20:443 to the
   member: poolgate adds the address itself and announces it (a stale
   neighbour entry in the namespace takes the VM's MAC before any traffic
   to it), and curl from the namespace through the VIP reaches the member.
4. GET /api/v1/system/network shows chrony synchronised to 198.51.100.1.

ACPI power off, boot again: the settings are still there and applied (ping,
VLAN, VIP to the member, NTP), and the console shows the new host name.

Every wait is bounded; QEMU, chronyd and the member are stopped and the
namespace (with its tap) is deleted on the way out, failed or
not.
"""

import argparse
import ctypes
import fcntl
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from boot_test import PASSWORD, Api, Failed, Vm, log, probe_kvm, wait_health  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY = r"POOLGATE_READY version=(\S+) slot=(\S+)"

TAP = "pgimg0"
VLAN_ID = 100
NIC2_MAC = "52:54:00:64:00:0a"
HOST = "198.51.100.1"
APPLIANCE = "198.51.100.10"
VIP = "198.51.100.20"
VIP_PORT = 443
VLAN_HOST = "198.51.101.1"
VLAN_APPLIANCE = "198.51.101.10"
HOSTNAME = "pgimg-appliance"
# A MAC that is nobody's: the namespace's entry for the VIP before poolgate
# announces it.
STALE_MAC = "02:00:00:00:00:99"

SETTINGS = {
    "hostname": HOSTNAME,
    "interfaces": [{
        "mac": NIC2_MAC,
        "addresses": [f"{APPLIANCE}/24"],
        "slaac": False,
        "vlans": [{"id": VLAN_ID, "addresses": [f"{VLAN_APPLIANCE}/24"], "slaac": False}],
    }],
    "ntp_servers": [HOST],
}
CONFIG = {
    "listen": {"admin": "0.0.0.0:8443"},
    "zone": [{"name": "contoso.test"}],
    "monitor": [{"name": "web", "type": "tcp", "port": VIP_PORT}],
    "pool": [{
        "name": "web",
        "fqdn": "web.contoso.test",
        "monitor": "web",
        "member": [{"name": "ns-member", "address": HOST}],
    }],
    "virtual_service": [{"name": "web", "address": VIP, "port": VIP_PORT, "pool": "web"}],
}

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
ETH_P_ALL, ETH_P_IP, ETH_P_ARP, ETH_P_8021Q = 0x0003, 0x0800, 0x0806, 0x8100
SOL_PACKET, PACKET_AUXDATA, TP_STATUS_VLAN_VALID, PACKET_OUTGOING = 263, 8, 0x10, 4
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


class Namespace:
    """The test's network namespace, its tap and VLAN, and the processes
    serving in it; close() removes them all."""

    def __init__(self, workdir):
        self.name = f"pgimg-{os.getpid()}"
        self.workdir = workdir
        self.processes = []
        self.logs = []
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            for command in (
                ["link", "set", "lo", "up"],
                ["tuntap", "add", "dev", TAP, "mode", "tap"],
                ["address", "add", f"{HOST}/24", "dev", TAP],
                ["link", "set", TAP, "up"],
            ):
                self.ip(*command)
            self.mac = json.loads(self.ip("-j", "link", "show", TAP))[0]["address"]
        except BaseException:
            self.close()
            raise

    def ip(self, *args):
        return subprocess.run(["ip", "-n", self.name, *args], check=True,
                              capture_output=True, text=True).stdout

    def run(self, *command, timeout=30):
        """A command in the namespace; its exit status and output."""
        try:
            done = subprocess.run(["ip", "netns", "exec", self.name, *command],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"no answer within {timeout} s"
        return done.returncode, done.stdout + done.stderr

    def start(self, name, *command):
        """A process serving in the namespace until close()."""
        path = os.path.join(self.workdir, f"{name}.log")
        out = open(path, "wb")
        self.logs.append(out)
        self.processes.append(subprocess.Popen(
            ["ip", "netns", "exec", self.name, *command],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))
        return path

    def inside(self, make):
        """make() run in the namespace: a socket or a tun device belongs to
        the namespace it is made in, wherever it is used later."""
        own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(target)
            try:
                return make()
            finally:
                setns(own)
        finally:
            os.close(own)
            os.close(target)

    def open_tap(self):
        """A descriptor on the namespace's tap, for QEMU."""
        def make():
            tap = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(tap, TUNSETIFF, struct.pack("16sH22x", TAP.encode(), IFF_TAP | IFF_NO_PI))
            except OSError:
                os.close(tap)
                raise
            return tap
        return self.inside(make)

    def packet_socket(self):
        """A raw socket on the tap that reports VLAN tags (PACKET_AUXDATA)."""
        def make():
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            try:
                s.bind((TAP, 0))
                s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            except OSError:
                s.close()
                raise
            return s
        return self.inside(make)

    def close(self):
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for out in self.logs:
            out.close()
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


def chronyd_command():
    """chronyd as a real NTP server: the host's, else the image build's own
    (run with that root's loader and libraries, no chroot)."""
    for path in (shutil.which("chronyd"), "/usr/sbin/chronyd"):
        if path and os.access(path, os.X_OK):
            return [path]
    rootfs = os.path.join(ROOT, "target", "image", "staging", "rootfs")
    libdir = os.path.join(rootfs, "usr", "lib", "x86_64-linux-gnu")
    binary = os.path.join(rootfs, "usr", "sbin", "chronyd")
    loader = os.path.join(libdir, "ld-linux-x86-64.so.2")
    if not (os.path.exists(binary) and os.path.exists(loader)):
        raise Failed("no chronyd: install chrony, or build the image first (its root has one)")
    return [loader, "--library-path", libdir, binary]


def start_servers(ns, workdir):
    """The member (HTTP on HOST:443, one file naming it) and chronyd."""
    www = os.path.join(workdir, "www")
    os.makedirs(www, exist_ok=True)
    token = "member-%d" % os.getpid()
    with open(os.path.join(www, "member.txt"), "w") as f:
        f.write(token + "\n")
    ns.start("member", sys.executable, "-m", "http.server", str(VIP_PORT),
             "--bind", HOST, "--directory", www)
    conf = os.path.join(workdir, "chronyd.conf")
    with open(conf, "w") as f:
        f.write(
            "# Serves its own clock to the appliance; controls no clock (-x).\n"
            "local stratum 8\n"
            f"allow {HOST.rsplit('.', 1)[0]}.0/24\n"
            f"allow {VLAN_HOST.rsplit('.', 1)[0]}.0/24\n"
            "bindcmdaddress /\n"
            "cmdport 0\n"
            f"pidfile {workdir}/chronyd.pid\n"
            f"driftfile {workdir}/chronyd.drift\n"
        )
    chrony_log = ns.start("chronyd", *chronyd_command(), "-f", conf, "-x", "-d", "-u", "root")
    return token, chrony_log


def poll(what, timeout, check, interval=1.0):
    """check() until it returns something true; its last answer."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, http.client.HTTPException) as error:
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise Failed(f"{what}: not within {timeout} s (last: {last})")


def observed_address(api, address):
    """The observed interface that carries `address` (with its prefix)."""
    status, view = api.request("GET", "/api/v1/system/network")
    if status != 200:
        return None
    return next((i for i in view["observed"]["interfaces"] if address in i["addresses"]), None)


def ping(ns, address):
    code, out = ns.run("ping", "-c", "1", "-W", "2", address)
    return code == 0 or None


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frames(s, deadline):
    """(VLAN id or None, ethertype, payload) of each frame that reaches the
    tap from the VM until the deadline."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        s.settimeout(left)
        try:
            data, ancillary, _, address = s.recvmsg(65535, socket.CMSG_SPACE(20))
        except socket.timeout:
            return
        if address[2] == PACKET_OUTGOING or len(data) < 14:
            continue
        vid = None
        for level, kind, aux in ancillary:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(aux) >= 20:
                status, _, _, _, _, tci, _ = struct.unpack("IIIHHHH", aux[:20])
                if status & TP_STATUS_VLAN_VALID:
                    vid = tci & 0x0FFF
        ethertype = struct.unpack("!H", data[12:14])[0]
        payload = data[14:]
        if vid is None and ethertype == ETH_P_8021Q and len(data) >= 18:
            vid = struct.unpack("!H", data[14:16])[0] & 0x0FFF
            ethertype = struct.unpack("!H", data[16:18])[0]
            payload = data[18:]
        yield vid, ethertype, payload


def vlan_ping(ns, target, source, vid, timeout=3):
    """ARP for `target` and ping it on VLAN `vid`, every frame tagged by
    hand from `source`: the namespace side of the VLAN without the
    kernel's 802.1Q support (which the test machine's kernel may lack).
    True when the echo reply comes back on that VLAN."""
    own_mac = bytes.fromhex(ns.mac.replace(":", ""))
    mine, theirs = socket.inet_aton(source), socket.inet_aton(target)

    def tagged(dst, ethertype, payload):
        frame = dst + own_mac + struct.pack("!HHH", ETH_P_8021Q, vid, ethertype) + payload
        return frame.ljust(64, b"\0")

    with ns.packet_socket() as s:
        s.send(tagged(b"\xff" * 6, ETH_P_ARP, struct.pack(
            "!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, own_mac, mine, b"\0" * 6, theirs)))
        deadline = time.monotonic() + timeout
        target_mac = None
        for got_vid, ethertype, payload in frames(s, deadline):
            if got_vid == vid and ethertype == ETH_P_ARP and len(payload) >= 28:
                op, sender_mac, sender_ip = struct.unpack("!6xH6s4s", payload[:18])
                if op == 2 and sender_ip == theirs:
                    target_mac = sender_mac
                    break
        if target_mac is None:
            return None
        ident = os.getpid() & 0xFFFF
        icmp = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"poolgate-image-test"
        icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ident, 0, 64, 1, 0, mine, theirs)
        header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
        s.send(tagged(target_mac, ETH_P_IP, header + icmp))
        for got_vid, ethertype, payload in frames(s, deadline + timeout):
            if got_vid == vid and ethertype == ETH_P_IP and len(payload) >= 28 \
                    and payload[9] == 1 and payload[12:16] == theirs:
                start = (payload[0] & 0x0F) * 4
                kind, _, _, got_ident = struct.unpack("!BBHH", payload[start:start + 6])
                if kind == 0 and got_ident == ident:
                    return True
        return None


def ntp_traffic(ns, seconds):
    """How many NTP requests came from the VM and answers went to it, for a
    failure's report."""
    counts = {"requests": 0, "answers": 0}
    with ns.packet_socket() as s:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data, address = s.recvfrom(65535)
            except socket.timeout:
                break
            if len(data) < 38 or data[12:14] != b"\x08\x00" or data[23] != 17:
                continue
            start = 14 + (data[14] & 0x0F) * 4
            sport, dport = struct.unpack("!HH", data[start:start + 4])
            if dport == 123 and address[2] != PACKET_OUTGOING:
                counts["requests"] += 1
            elif sport == 123 and address[2] == PACKET_OUTGOING:
                counts["answers"] += 1
    return counts


def fetch_member(ns):
    code, out = ns.run("curl", "-sS", "--max-time", "5", f"http://{VIP}:{VIP_PORT}/member.txt")
    return out.strip() if code == 0 else None


def ntp_synchronised(api, seen):
    """chrony's state once it follows HOST; `seen` keeps the last one."""
    status, view = api.request("GET", "/api/v1/system/network")
    ntp = view["observed"]["ntp"] if status == 200 else f"GET: {status}"
    seen[:] = [ntp]
    if isinstance(ntp, dict) and ntp["synchronised"] and ntp["source"] == HOST:
        return ntp
    return None


def check_applied(ns, api, token):
    """Addresses, VLAN, VIP and NTP as the settings and the config say."""
    poll(f"ping {APPLIANCE} from the namespace", 60, lambda: ping(ns, APPLIANCE))
    poll(f"ping {VLAN_APPLIANCE} on VLAN {VLAN_ID} from the namespace", 30,
         lambda: vlan_ping(ns, VLAN_APPLIANCE, VLAN_HOST, VLAN_ID))
    log(f"{APPLIANCE} and {VLAN_APPLIANCE} (VLAN {VLAN_ID}) answer ping")
    got = poll(f"the member through {VIP}:{VIP_PORT}", 60, lambda: fetch_member(ns))
    if got != token:
        raise Failed(f"through {VIP}:{VIP_PORT}: {got!r}, expected the member's {token!r}")
    log(f"curl http://{VIP}:{VIP_PORT}/ from the namespace reached the member")
    seen = [None]
    try:
        ntp = poll(f"chrony synchronised to {HOST}", 180, lambda: ntp_synchronised(api, seen),
                   interval=3)
    except Failed as error:
        status, events = api.request("GET", "/api/v1/events?kind=system&limit=5")
        raise Failed(f"{error}; chrony's state last shown: {seen[0]}; NTP on the tap in 10 s: "
                     f"{ntp_traffic(ns, 10)}; the last system events: {status} {events}")
    log(f"GET /api/v1/system/network: NTP {ntp}")


def first_boot(vm, ns, args, token):
    found = vm.wait_for(READY, args.ready_timeout)
    log(f"first boot: {found.group(0)} after {time.monotonic() - vm.started:.1f} s")
    api = Api(vm.ports["https"])
    wait_health(api)
    code = vm.wait_for(r"One-time setup code: ([A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4})", 60).group(1)
    api.expect("POST", "/api/v1/setup", 201, {"password": PASSWORD, "setup_code": code})
    api.login()
    view = api.expect("GET", "/api/v1/system/network", 200)
    if not view["managed"]:
        raise Failed(f"GET /api/v1/system/network: the image does not manage its network: {view}")
    started = time.monotonic()
    answer = api.expect("PUT", "/api/v1/system/network", 202, SETTINGS)
    log(f"PUT /api/v1/system/network: pending change {answer['pending']['id']}, "
        f"deadline {answer['pending']['deadline']}")
    interface = poll(f"{APPLIANCE}/24 on the appliance", 60,
                     lambda: observed_address(api, f"{APPLIANCE}/24"))
    if interface["mac"] != NIC2_MAC:
        raise Failed(f"{APPLIANCE} is on {interface}, not the NIC with MAC {NIC2_MAC}")
    poll(f"{VLAN_APPLIANCE}/24 on the appliance", 30,
         lambda: observed_address(api, f"{VLAN_APPLIANCE}/24"))
    log(f"applied in {time.monotonic() - started:.1f} s: {interface['name']} {APPLIANCE}/24, "
        f"VLAN {VLAN_ID} {VLAN_APPLIANCE}/24")
    api.expect("POST", "/api/v1/system/network/confirm", 200)
    view = api.expect("GET", "/api/v1/system/network", 200)
    if view["pending"] is not None or view["settings"]["hostname"] != HOSTNAME:
        raise Failed(f"after the confirmation: {view['settings']}, pending {view['pending']}")
    log("confirmed")

    # Before any traffic to the VIP the namespace holds a wrong MAC for it:
    # only poolgate's announcement can correct that.
    ns.ip("neigh", "replace", VIP, "lladdr", STALE_MAC, "dev", TAP, "nud", "stale")
    answer = api.expect("PUT", "/api/v1/config", 200, CONFIG)
    log(f"PUT /api/v1/config with the virtual service {VIP}:{VIP_PORT}: {answer}")
    poll(f"the namespace to learn the VM's MAC for {VIP}", 30,
         lambda: NIC2_MAC in ns.ip("neigh", "show", VIP))
    log(f"neighbour {VIP}: {ns.ip('neigh', 'show', VIP).strip()} (announced)")
    check_applied(ns, api, token)


def second_boot(vm, ns, args, token):
    found = vm.wait_for(READY, args.ready_timeout)
    log(f"second boot: {found.group(0)} after {time.monotonic() - vm.started:.1f} s")
    api = Api(vm.ports["https"])
    wait_health(api)
    api.login()
    view = api.expect("GET", "/api/v1/system/network", 200)
    kept = view["settings"]
    interfaces = [(i["mac"], i["addresses"], [(v["id"], v["addresses"]) for v in i["vlans"]])
                  for i in kept["interfaces"]]
    wanted = [(NIC2_MAC, [f"{APPLIANCE}/24"], [(VLAN_ID, [f"{VLAN_APPLIANCE}/24"])])]
    if (kept["hostname"], kept["ntp_servers"], interfaces) != (HOSTNAME, [HOST], wanted) \
            or view["pending"] is not None:
        raise Failed(f"the settings after the reboot: {kept}, pending {view['pending']}")
    log(f"GET /api/v1/system/network after the reboot: host name {view['settings']['hostname']}, "
        f"NTP {view['settings']['ntp_servers']}")
    shown = re.findall(r"Host name: (\S+)", vm.console())
    if not shown or shown[-1] != HOSTNAME:
        raise Failed(f"the console shows the host name {shown}, expected {HOSTNAME}")
    log(f"console: Host name: {shown[-1]}")
    check_applied(ns, api, token)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("disk")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--ready-timeout", type=int, default=180)
    args = parser.parse_args()
    workdir = args.workdir or os.path.join(os.path.dirname(os.path.abspath(args.disk)), "network-test")
    os.makedirs(workdir, exist_ok=True)
    disk = os.path.join(workdir, "disk.raw")
    subprocess.run(["cp", "--sparse=always", args.disk, disk], check=True)
    accel = probe_kvm(disk, workdir)
    log(f"accelerator: {accel}")
    started = time.monotonic()
    ns = Namespace(workdir)
    try:
        token, chrony_log = start_servers(ns, workdir)
        log(f"namespace {ns.name}: {TAP} {HOST}/24 (and {VLAN_HOST} on VLAN {VLAN_ID}), "
            f"member on {HOST}:{VIP_PORT}, chronyd")
        for name, run in (("first", first_boot), ("second", second_boot)):
            tap = ns.open_tap()
            try:
                vm = Vm(disk, workdir, accel, f"network-{name}", extra_args=[
                    "-netdev", f"tap,id=net1,fd={tap}",
                    "-device", f"virtio-net-pci,netdev=net1,mac={NIC2_MAC}",
                ], pass_fds=(tap,))
            finally:
                os.close(tap)
            try:
                run(vm, ns, args, token)
                vm.power_off()
                log(f"{name} boot: powered off cleanly")
            except (Failed, OSError, http.client.HTTPException, subprocess.CalledProcessError) as error:
                log(f"FAILED during the {name} boot: {error}")
                log(f"serial console ({vm.serial}), last lines:")
                for line in vm.console().splitlines()[-40:]:
                    print("    " + line)
                with open(chrony_log, errors="replace") as f:
                    log("chronyd in the namespace, last lines:")
                    for line in f.read().splitlines()[-10:]:
                        print("    " + line)
                return 1
            finally:
                vm.stop()
    except (Failed, OSError, subprocess.CalledProcessError) as error:
        log(f"FAILED: {error}")
        return 1
    finally:
        ns.close()
    # Kept when the test failed: its data partition has the guest's journal.
    os.unlink(disk)
    log(f"network test ({accel}): {time.monotonic() - started:.1f} s")
    print("image-network-test: 2 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
