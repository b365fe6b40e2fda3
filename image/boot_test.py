#!/usr/bin/env python3
"""Boots the appliance's raw disk under QEMU and talks to it as a user would.

    boot_test.py DISK.raw [--workdir DIR] [--ready-timeout 180]

Runs on a copy of the disk (the built image stays pristine), with OVMF and a
fresh copy of its variable store, q35, virtio disk and NIC, user-mode
networking with its ports forwarded to loopback, and the serial console logged to a file.
KVM is used only if a 10-second probe boot shows firmware output; otherwise
TCG.

First boot: wait for POOLGATE_READY, GET /api/v1/health over HTTPS, read the
one-time setup code from the serial console, set the admin password with it,
log in, and PUT a pool config that adds DNS and SIP listeners: they are
live, so the pool name is answered over DNS at once. The HA pieces start:
the sync listener gives a pairing code, and VRRP settings make the root step
start keepalived, which reports MASTER (no peer) through its notify FIFO;
VRRP is turned off again. Power off with ACPI.
Second boot: setup is refused (the password survived on the data
partition), login works, the pool name is answered over DNS and a SIP
OPTIONS gets 200 (the config survived too). Power off with ACPI again. Finally the ESP shows
slot A's kernel image marked good by boot counting, and the data partition
(read with debugfs) has poolgate's directory 0700 and its database and key
0600.

Every wait is bounded; QEMU is killed on any failure.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
PASSWORD = "image-test-" + "%08x" % random.getrandbits(32)
POOL_FQDN = "pool01.contoso.test"
CONFIG = {
    "listen": {
        "admin": "0.0.0.0:8443",
        "dns": ["0.0.0.0:53"],
        "sip_udp": "0.0.0.0:5060",
        "sip_tcp": "0.0.0.0:5060",
        "sip_tls": "0.0.0.0:5061",
    },
    # The DNS listener is a wildcard, so the zone names its name server:
    # the guest's address under QEMU's user-mode network.
    "zone": [{
        "name": "contoso.test",
        "name_servers": [{"name": "ns1.contoso.test", "addresses": ["10.0.2.15"]}],
    }],
    # Members on the guest's own loopback: the probes reach poolgate's own
    # SIP TLS listener and never leave the VM.
    "monitor": [{"name": "fe-tcp", "type": "tcp", "port": 5061}],
    "pool": [{
        "name": "pool01",
        "fqdn": POOL_FQDN,
        "monitor": "fe-tcp",
        "member": [
            {"name": "fe01", "address": "127.0.0.11"},
            {"name": "fe02", "address": "127.0.0.12"},
        ],
    }],
}


# The guest's address under QEMU's user-mode network.
GUEST_ADDRESS = "10.0.2.15"


class Failed(Exception):
    pass


def log(message):
    print(f"image-test: {message}", flush=True)


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Vm:
    """One QEMU run of the disk; always stopped by stop()."""

    def __init__(self, disk, workdir, accel, name, snapshot=False, extra_args=(), pass_fds=()):
        """`extra_args` go on QEMU's command line (another NIC, say) and
        `pass_fds` are the descriptors it inherits for them."""
        self.serial = os.path.join(workdir, f"serial-{name}.log")
        self.monitor = os.path.join(workdir, f"monitor-{name}.sock")
        vars_copy = os.path.join(workdir, f"ovmf-vars-{name}.fd")
        shutil.copyfile(OVMF_VARS, vars_copy)
        for path in (self.serial, self.monitor):
            if os.path.exists(path):
                os.unlink(path)
        self.ports = {
            "https": free_port(socket.SOCK_STREAM),
            "dns": free_port(socket.SOCK_DGRAM),
            "sip": free_port(socket.SOCK_DGRAM),
        }
        forwards = (
            f"hostfwd=tcp:127.0.0.1:{self.ports['https']}-:8443,"
            f"hostfwd=udp:127.0.0.1:{self.ports['dns']}-:53,"
            f"hostfwd=udp:127.0.0.1:{self.ports['sip']}-:5060"
        )
        command = [
            "qemu-system-x86_64", "-machine", "q35", "-accel", accel,
            "-cpu", "host" if accel == "kvm" else "max",
            "-smp", "2", "-m", "2048", "-nodefaults", "-display", "none",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            "-drive", f"if=virtio,format=raw,file={disk}" + (",snapshot=on" if snapshot else ""),
            # Not restrict=on: it drops the guest's UDP replies to forwarded
            # ports. The appliance starts no outbound traffic of its own (no
            # time sync, no package updates), and the test talks to loopback.
            "-netdev", f"user,id=net0,{forwards}",
            "-device", "virtio-net-pci,netdev=net0",
            "-serial", f"file:{self.serial}",
            "-monitor", f"unix:{self.monitor},server,nowait",
            "-no-reboot",
            *extra_args,
        ]
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        pass_fds=pass_fds)

    def console(self):
        try:
            with open(self.serial, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.console())
            if found:
                return found
            if self.process.poll() is not None:
                raise Failed(f"QEMU exited ({self.process.returncode}) before {pattern!r}: "
                             f"{self.process.stderr.read().decode(errors='replace').strip()}")
            time.sleep(0.5)
        raise Failed(f"no {pattern!r} on the serial console within {timeout} s")

    def power_off(self, timeout=90):
        """ACPI power button, then wait for the guest to halt and QEMU to exit."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.monitor)
            s.sendall(b"system_powerdown\n")
            time.sleep(0.5)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failed(f"the appliance did not power off within {timeout} s")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def probe_kvm(disk, workdir):
    """KVM only if it really runs a guest: on some machines /dev/kvm exists
    but a VM never gets going. Ten seconds of a snapshot boot tell."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    vm = Vm(disk, workdir, "kvm", "kvm-probe", snapshot=True)
    try:
        vm.wait_for(r"BdsDxe|EFI stub|Linux version|POOLGATE", 10)
        return "kvm"
    except Failed:
        return "tcg"
    finally:
        vm.stop()


class Api:
    def __init__(self, port):
        self.port = port
        self.cookie = None
        self.csrf = None
        self.context = ssl.create_default_context()
        # The appliance's certificate is self-signed on first start.
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE

    def request(self, method, path, body=None):
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=20,
                                                 context=self.context)
        headers = {"Content-Type": "application/json"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        try:
            connection.request(method, path, json.dumps(body) if body is not None else None, headers)
            response = connection.getresponse()
            data = response.read()
            cookie = response.getheader("Set-Cookie")
            if cookie:
                self.cookie = cookie.split(";", 1)[0]
            return response.status, (json.loads(data) if data else None)
        finally:
            connection.close()

    def expect(self, method, path, status, body=None):
        got, answer = self.request(method, path, body)
        if got != status:
            raise Failed(f"{method} {path}: {got} {answer}, expected {status}")
        return answer

    def login(self):
        answer = self.expect("POST", "/api/v1/session", 200,
                             {"username": "admin", "password": PASSWORD})
        self.csrf = answer["csrf_token"]


def wait_health(api, timeout=60):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status, answer = api.request("GET", "/api/v1/health")
            if status == 200:
                return answer
            last = status
        except (OSError, http.client.HTTPException) as error:
            last = error
        time.sleep(1)
    raise Failed(f"GET /api/v1/health: no 200 within {timeout} s ({last})")


def dns_query(port, name, timeout=30):
    """An A query over UDP; returns the answer's IPv4 addresses."""
    query_id = random.getrandbits(16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        while time.monotonic() < deadline:
            s.sendto(packet, ("127.0.0.1", port))
            try:
                reply = s.recv(4096)
            except socket.timeout:
                continue
            rid, flags, _, ancount, _, _ = struct.unpack("!HHHHHH", reply[:12])
            if rid != query_id:
                continue
            if flags & 0x000F:
                raise Failed(f"DNS {name}: rcode {flags & 0xF}")
            offset = 12 + len(question) + 4
            addresses = []
            for _ in range(ancount):
                # Skip the owner name (a pointer or labels).
                while reply[offset] != 0 and reply[offset] & 0xC0 != 0xC0:
                    offset += reply[offset] + 1
                offset += 2 if reply[offset] & 0xC0 == 0xC0 else 1
                rtype, _, _, length = struct.unpack("!HHIH", reply[offset:offset + 10])
                offset += 10
                if rtype == 1 and length == 4:
                    addresses.append(socket.inet_ntoa(reply[offset:offset + 4]))
                offset += length
            return addresses
    raise Failed(f"DNS {name}: no answer within {timeout} s")


def sip_options(port, timeout=30):
    """An OPTIONS over UDP; returns the status line of the answer."""
    call_id = "%016x" % random.getrandbits(64)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
        message = (
            f"OPTIONS sip:{POOL_FQDN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{call_id}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:image-test@contoso.test>;tag={call_id[:8]}\r\n"
            f"To: <sip:{POOL_FQDN}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        s.settimeout(2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.sendto(message, ("127.0.0.1", port))
            try:
                reply = s.recv(65535).decode(errors="replace")
            except socket.timeout:
                continue
            if call_id in reply:
                return reply.split("\r\n", 1)[0]
    raise Failed(f"SIP OPTIONS: no answer within {timeout} s")


def check_ha(api, timeout=60):
    """The HA pieces of the image start: poolgate's sync listener is up (a
    pairing code is given), and VRRP settings make the root step
    (poolgate-vrrp.path) write keepalived's configuration and start
    keepalived (Debian's package), whose state comes back through the
    notify FIFO: with no peer answering, MASTER of the management address.
    VRRP is turned off again afterwards."""
    code = api.expect("POST", "/api/v1/ha/pairing-code", 200, {}).get("code", "")
    if not re.fullmatch(r"[A-Z2-9]{4}(-[A-Z2-9]{4}){3}", code):
        raise Failed(f"POST /api/v1/ha/pairing-code: {code!r} is not a pairing code")
    view = api.expect("GET", "/api/v1/system/network", 200)
    nic = next((i["name"] for i in view["observed"]["interfaces"]
                if any(a.startswith(GUEST_ADDRESS + "/") for a in i["addresses"])), None)
    if nic is None:
        raise Failed(f"no interface holds {GUEST_ADDRESS}: {view['observed']}")
    settings = {"interface": nic, "source_v4": GUEST_ADDRESS, "peer_v4": "10.0.2.16",
                "virtual_router_id": 51, "priority": 100, "management_address": "10.0.2.20"}
    api.expect("PUT", "/api/v1/ha/vrrp", 200, settings)
    deadline = time.monotonic() + timeout
    while True:
        view = api.expect("GET", "/api/v1/ha/vrrp", 200)
        states = {i["name"]: i["state"] for i in view["instances"]}
        if states.get("poolgate_v4") == "MASTER" and view["addresses_held_by"] == "keepalived":
            break
        if time.monotonic() > deadline:
            events = api.expect("GET", "/api/v1/events?kind=system", 200)
            raise Failed(f"keepalived did not report MASTER within {timeout} s: {states}; "
                         f"events: {[e['message'] for e in events['events'][:5]]}")
        time.sleep(1)
    api.expect("DELETE", "/api/v1/ha/vrrp", 200)
    return states


def first_boot(vm, args):
    found = vm.wait_for(r"POOLGATE_READY version=(\S+) slot=(\S+)", args.ready_timeout)
    ready_s = time.monotonic() - vm.started
    log(f"first boot: {found.group(0)} after {ready_s:.1f} s")
    api = Api(vm.ports["https"])
    log(f"GET /api/v1/health: {wait_health(api)}")
    code = vm.wait_for(r"One-time setup code: ([A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4})", 60).group(1)
    log("setup code read from the serial console")
    api.expect("POST", "/api/v1/setup", 403, {"password": PASSWORD, "setup_code": "00000000x"})
    api.expect("POST", "/api/v1/setup", 201, {"password": PASSWORD, "setup_code": code})
    api.login()
    answer = api.expect("PUT", "/api/v1/config", 200, CONFIG)
    log(f"PUT /api/v1/config: {answer}")
    # Listeners are live: no restart between the PUT and the first answer.
    deadline = time.monotonic() + 30
    while not (addresses := dns_query(vm.ports["dns"], POOL_FQDN)):
        if time.monotonic() > deadline:
            raise Failed(f"DNS {POOL_FQDN}: no A records within 30 s of the PUT")
        time.sleep(1)
    log(f"DNS {POOL_FQDN} right after the PUT: {addresses}")
    if "grown to the end of" not in vm.console():
        raise Failed("the data partition was not grown on first boot")
    log(f"HA: pairing code given, keepalived started and reported {check_ha(api)}")
    return ready_s


def second_boot(vm, args):
    found = vm.wait_for(r"POOLGATE_READY version=(\S+) slot=(\S+)", args.ready_timeout)
    ready_s = time.monotonic() - vm.started
    log(f"second boot: {found.group(0)} after {ready_s:.1f} s")
    api = Api(vm.ports["https"])
    wait_health(api)
    api.expect("POST", "/api/v1/setup", 409, {"password": "someone-else", "setup_code": "0"})
    api.login()
    status = api.expect("GET", "/api/v1/status", 200)
    log(f"pools: {[p['name'] for p in status['pools']]}")
    addresses = dns_query(vm.ports["dns"], POOL_FQDN)
    if not addresses:
        raise Failed(f"DNS {POOL_FQDN}: no A records")
    log(f"DNS {POOL_FQDN}: {addresses}")
    line = sip_options(vm.ports["sip"])
    if not line.startswith("SIP/2.0 200"):
        raise Failed(f"SIP OPTIONS: {line}")
    log(f"SIP OPTIONS: {line}")
    return ready_s


def blessed_entries(disk):
    """The slot kernel images on the disk's ESP, by file name. systemd-boot
    counts tries in the name (poolgate-a+2-1.efi); systemd-bless-boot drops
    the counter once boot-complete.target is reached (poolgate-a.efi)."""
    table = json.loads(subprocess.run(["sfdisk", "-J", disk], check=True,
                                      capture_output=True, text=True).stdout)
    esp = next(p for p in table["partitiontable"]["partitions"] if p.get("name") == "esp")
    offset = esp["start"] * table["partitiontable"].get("sectorsize", 512)
    listing = subprocess.run(["mdir", "-b", "-i", f"{disk}@@{offset}", "::/EFI/Linux"],
                             check=True, capture_output=True, text=True,
                             env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout
    return sorted(os.path.basename(line.strip()) for line in listing.splitlines() if line.strip())


def data_files(disk, workdir, paths):
    """Mode and owner uid of `paths` (below /var) on the disk's data
    partition, read with debugfs from a sparse copy of the partition; a
    path that is not there maps to None."""
    table = json.loads(subprocess.run(["sfdisk", "-J", disk], check=True,
                                      capture_output=True, text=True).stdout)
    data = next(p for p in table["partitiontable"]["partitions"] if p.get("name") == "data")
    sector = table["partitiontable"].get("sectorsize", 512)
    image = os.path.join(workdir, "data-partition.img")
    subprocess.run(["dd", f"if={disk}", f"of={image}", "bs=4M", "conv=sparse", "status=none",
                    "iflag=skip_bytes,count_bytes", f"skip={data['start'] * sector}",
                    f"count={data['size'] * sector}"], check=True)
    found = {}
    try:
        for path in paths:
            out = subprocess.run(["debugfs", "-R", f"stat {path}", image],
                                 capture_output=True, text=True).stdout
            mode = re.search(r"Mode:\s+(\d+)", out)
            user = re.search(r"User:\s+(\d+)", out)
            found[path] = (int(mode.group(1), 8), int(user.group(1))) if mode and user else None
    finally:
        os.unlink(image)
    return found


# What only poolgate may read on the data partition (row 11 of issue 18).
OWNER_ONLY = {
    "/lib/poolgate": 0o700,
    "/lib/poolgate/poolgate.db": 0o600,
    "/lib/poolgate/tls": 0o700,
    "/lib/poolgate/tls/admin-key.pem": 0o600,
}


def check_owner_only(disk, workdir):
    found = data_files(disk, workdir, list(OWNER_ONLY))
    wrong = {path: found[path] for path, mode in OWNER_ONLY.items()
             if found[path] is None or found[path][0] != mode}
    if wrong:
        raise Failed(f"data partition modes: {wrong} (want {OWNER_ONLY})")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("disk")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--ready-timeout", type=int, default=180)
    args = parser.parse_args()
    workdir = args.workdir or os.path.join(os.path.dirname(os.path.abspath(args.disk)), "boot-test")
    os.makedirs(workdir, exist_ok=True)
    disk = os.path.join(workdir, "disk.raw")
    subprocess.run(["cp", "--sparse=always", args.disk, disk], check=True)

    accel = probe_kvm(disk, workdir)
    log(f"accelerator: {accel}")
    timings = {}
    for name, run in (("first", first_boot), ("second", second_boot)):
        vm = Vm(disk, workdir, accel, name)
        try:
            timings[name] = run(vm, args)
            started = time.monotonic()
            vm.power_off()
            log(f"{name} boot: powered off cleanly in {time.monotonic() - started:.1f} s")
        except (Failed, OSError, http.client.HTTPException) as error:
            log(f"FAILED during the {name} boot: {error}")
            log(f"serial console ({vm.serial}), last lines:")
            for line in vm.console().splitlines()[-40:]:
                print("    " + line)
            return 1
        finally:
            vm.stop()
    entries = blessed_entries(disk)
    if entries != ["poolgate-a.efi"]:
        log(f"FAILED: slot A was not marked good by boot counting: ESP has {entries}")
        return 1
    log(f"boot counting: ESP has {entries} (slot A blessed)")
    try:
        modes = check_owner_only(disk, workdir)
    except (Failed, subprocess.CalledProcessError) as error:
        log(f"FAILED: {error}")
        return 1
    log("data partition: " + ", ".join(f"{p} {m:o}" for p, (m, _) in modes.items()))
    log(f"boot to ready ({accel}): first {timings['first']:.1f} s, second {timings['second']:.1f} s")
    print("image-test: 5 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
