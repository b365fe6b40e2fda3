#!/usr/bin/env python3
"""Upgrades the appliance's raw disk under QEMU by image swap, as an admin would.

    upgrade_test.py DISK.raw [--workdir DIR] [--ready-timeout 180]

Needs the image build's staging directory (target/image/staging) and its signing
key (target/image/keys, or POOLGATE_UPGRADE_SIGNING_KEY with
POOLGATE_UPGRADE_KEYS). Makes, from the built root, bundles of two newer
versions (image/bundle --poolgate): B, poolgate rebuilt with
POOLGATE_BUILD_VERSION, and C, whose poolgate exits at once. Then, on a copy
of the disk:

1. Boot version A, set the admin password and a pool.
2. Refusals: a bundle with one flipped byte, an unsigned one and one signed
   by another key each answer 422 with their reason and are in the event
   log; slot B stays blank and the ESP gets no kernel image for it.
3. Upload B through the API: the appliance reboots into B on slot B, with
   the same password and pool, and says it was upgraded from A.
4. Upload C: C never gets its boot blessed, its boot check reboots it until
   systemd-boot's tries are spent, and B comes back by itself with the
   config intact and the rollback in the event log and GET /api/v1/system.
5. On the disk: the installs ran through the root step (its work directory
   exists, root's, 0700) and left nothing staged; poolgate's data directory
   is 0700 and its database and key 0600.

QEMU runs with -no-reboot, so each guest reboot ends QEMU and the test
starts it again on the same disk. Every wait is bounded; QEMU is killed on
any failure.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import boot_test  # noqa: E402
from boot_test import Api, Failed, Vm, log  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "image")
WORK = os.path.join(OUT, "staging")
READY = r"POOLGATE_READY version=(\S+) slot=(\S+)"
BROKEN_POOLGATE = """#!/bin/sh
echo "poolgate: a deliberately broken build for the upgrade test" >&2
exit 1
"""


def run(command, **kwargs):
    return subprocess.run(command, check=True, cwd=ROOT, **kwargs)


def signing_env():
    env = dict(os.environ)
    if not env.get("POOLGATE_UPGRADE_SIGNING_KEY"):
        keys = os.path.join(OUT, "keys")
        env["POOLGATE_UPGRADE_SIGNING_KEY"] = os.path.join(keys, "upgrade-signing.key")
        with open(os.path.join(keys, "upgrade-signing.pub")) as f:
            env["POOLGATE_UPGRADE_KEYS"] = f.read().strip()
    return env


def newer(version, step):
    """0.1.0 → 0.1.1-upgradetest.1 (step 1), 0.1.2-upgradetest.2 (step 2)."""
    major, minor, patch = re.match(r"(\d+)\.(\d+)\.(\d+)", version).groups()
    return f"{major}.{minor}.{int(patch) + step}-upgradetest.{step}"


def make_bundles(workdir, version_a):
    """B (a rebuilt poolgate), C (broken) and the three refused variants of B."""
    env = signing_env()
    version_b, version_c = newer(version_a, 1), newer(version_a, 2)
    started = time.monotonic()
    # The same source as version B: only the version it reports differs.
    run(["cargo", "build", "--locked", "--release", "-p", "poolgate", "--bin", "poolgate"],
        env={**env, "POOLGATE_BUILD_VERSION": version_b})
    binary_b = os.path.join(workdir, "poolgate-b")
    shutil.copyfile(os.path.join(ROOT, "target", "release", "poolgate"), binary_b)
    # target/release/poolgate now reports version B; the next cargo build
    # without POOLGATE_BUILD_VERSION builds the crate's own version again.
    log(f"poolgate {version_b} built in {time.monotonic() - started:.0f} s")
    broken = os.path.join(workdir, "poolgate-broken")
    with open(broken, "w") as f:
        f.write(BROKEN_POOLGATE)
    bundles = {}
    for name, version, binary in (("b", version_b, binary_b), ("c", version_c, broken)):
        started = time.monotonic()
        path = os.path.join(workdir, f"poolgate-{version}.pgup")
        run(["image/bundle", "--poolgate", binary, version, path], env=env)
        bundles[name] = (version, path)
        log(f"bundle {os.path.basename(path)}: {os.path.getsize(path) >> 20} MiB "
            f"in {time.monotonic() - started:.0f} s")

    with open(bundles["b"][1], "rb") as f:
        good = bytearray(f.read())
    manifest_end = 10 + int.from_bytes(good[6:10], "big")
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01
    unsigned = bytearray(good)
    unsigned[manifest_end:manifest_end + 64] = bytes(64)
    refused = {"flipped": flipped, "unsigned": unsigned}
    for name, data in refused.items():
        path = os.path.join(workdir, f"refused-{name}.pgup")
        with open(path, "wb") as f:
            f.write(data)
        refused[name] = path
    other = os.path.join(workdir, "other-key")
    shutil.rmtree(other, ignore_errors=True)
    run(["target/release/poolgate-bundle", "keygen", "--out", other], stdout=subprocess.DEVNULL)
    parts = os.path.join(WORK, f"bundle-{version_b}")
    refused["other-key"] = os.path.join(workdir, "refused-other-key.pgup")
    run(["target/release/poolgate-bundle", "sign", "--key", os.path.join(other, "upgrade-signing.key"),
         "--version", version_b, "--min-from", version_a,
         "--root", os.path.join(parts, "root.squashfs"), "--uki", os.path.join(parts, "poolgate.efi"),
         "--out", refused["other-key"]])
    return bundles, refused


def upload(api, path, timeout=600):
    """POST the bundle as the raw body; returns (status, answer, seconds)."""
    started = time.monotonic()
    connection = http.client.HTTPSConnection("127.0.0.1", api.port, timeout=timeout,
                                             context=api.context)
    headers = {"Content-Type": "application/octet-stream", "Cookie": api.cookie,
               "X-CSRF-Token": api.csrf, "Content-Length": str(os.path.getsize(path))}
    try:
        with open(path, "rb") as body:
            connection.request("POST", "/api/v1/system/upgrade", body, headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else None), time.monotonic() - started
    finally:
        connection.close()


def partition(disk, name):
    table = json.loads(subprocess.run(["sfdisk", "-J", disk], check=True,
                                      capture_output=True, text=True).stdout)
    found = next(p for p in table["partitiontable"]["partitions"] if p.get("name") == name)
    return found["start"] * 512, found["size"] * 512


def blank(disk, name, length=4 << 20):
    offset, _ = partition(disk, name)
    with open(disk, "rb") as f:
        f.seek(offset)
        return f.read(length).count(0) == length


def wait_exit(vm, timeout):
    try:
        vm.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise Failed(f"the appliance did not reboot within {timeout} s")


def events(api):
    return [e["message"] for e in api.expect("GET", "/api/v1/events?limit=200", 200)["events"]]


def login(vm):
    api = Api(vm.ports["https"])
    boot_test.wait_health(api, 120)
    api.login()
    return api


def same_config(api):
    config = api.expect("GET", "/api/v1/config", 200)
    pools = [p["name"] for p in config.get("pool", config.get("pools", []))]
    if pools != ["pool01"]:
        raise Failed(f"the pool did not survive: {config}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("disk")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--ready-timeout", type=int, default=240)
    args = parser.parse_args()
    workdir = args.workdir or os.path.join(os.path.dirname(os.path.abspath(args.disk)), "upgrade-test")
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(WORK, "version")) as f:
        version_a = f.read().strip()
    bundles, refused = make_bundles(workdir, version_a)
    version_b, version_c = bundles["b"][0], bundles["c"][0]
    disk = os.path.join(workdir, "disk.raw")
    run(["cp", "--sparse=always", args.disk, disk])
    accel = boot_test.probe_kvm(disk, workdir)
    log(f"accelerator: {accel}")
    passed = 0
    vm = None
    timings = {}
    try:
        # 1. Version A, configured.
        vms_started = time.monotonic()
        vm = Vm(disk, workdir, accel, "a")
        boot_test.first_boot(vm, args)
        api = Api(vm.ports["https"])
        api.login()
        # 2. Refusals: each with its reason, nothing written to slot B.
        for name, path in refused.items():
            status, answer, _ = upload(api, path)
            if status != 422:
                raise Failed(f"{name} bundle: {status} {answer}, expected 422")
            log(f"{name} bundle refused: {answer.get('error', answer)}")
        if not blank(disk, "root-b"):
            raise Failed("a refused bundle wrote to slot B")
        entries = boot_test.blessed_entries(disk)
        if any(e.startswith("poolgate-b") for e in entries):
            raise Failed(f"a refused bundle wrote a kernel image for slot B: ESP has {entries}")
        refusals = [m for m in events(api) if "upgrade bundle; refused" in m]
        if len(refusals) != len(refused):
            raise Failed(f"expected {len(refused)} refusals in the event log: {refusals}")
        passed += 1
        log(f"refusals: three bundles refused, slot B and the ESP untouched ({entries}), "
            "each in the event log")

        # 3. Upgrade to B.
        status, answer, seconds = upload(api, bundles["b"][1])
        if status != 200:
            raise Failed(f"bundle {version_b}: {status} {answer}")
        log(f"bundle {version_b} uploaded and installed in {seconds:.0f} s: {answer}")
        started = time.monotonic()
        wait_exit(vm, 120)
        vm.stop()
        vm = Vm(disk, workdir, accel, "b")
        found = vm.wait_for(READY, args.ready_timeout)
        timings["upgrade"] = seconds + time.monotonic() - started
        if found.groups() != (version_b, "b"):
            raise Failed(f"expected {version_b} on slot b, got {found.group(0)}")
        api = login(vm)
        same_config(api)
        system = api.expect("GET", "/api/v1/system", 200)
        if system["version"] != version_b or version_a not in json.dumps(system):
            raise Failed(f"GET /api/v1/system after the upgrade: {system}")
        log(f"upgraded: {found.group(0)} {timings['upgrade']:.0f} s after the upload began; "
            "password and pool kept")
        vm.wait_for(r"this boot counts as good", 120)
        passed += 1

        # 4. Broken C: rolled back to B by itself.
        status, answer, seconds = upload(api, bundles["c"][1])
        if status != 200:
            raise Failed(f"bundle {version_c}: {status} {answer}")
        log(f"bundle {version_c} (broken) installed in {seconds:.0f} s")
        started = time.monotonic()
        wait_exit(vm, 120)
        vm.stop()
        tries = 0
        deadline = started + 1200
        while True:
            tries += 1
            vm = Vm(disk, workdir, accel, f"c{tries}")
            while vm.process.poll() is None and not re.search(READY, vm.console()):
                if time.monotonic() > deadline:
                    raise Failed("no rollback within 1200 s")
                time.sleep(1)
            found = re.search(READY, vm.console())
            if found:
                break
            log(f"boot {tries}: rebooted without serving "
                f"({'boot check' if 'does not count as good' in vm.console() else 'no boot check seen'})")
            vm.stop()
            if tries > 5:
                raise Failed("still rebooting after five boots")
        timings["rollback"] = time.monotonic() - started
        if found.groups() != (version_b, "b"):
            raise Failed(f"expected {version_b} back on slot b, got {found.group(0)}")
        api = login(vm)
        same_config(api)
        messages = events(api)
        rollback = [m for m in messages if "roll" in m.lower()]
        if not rollback:
            raise Failed(f"no rollback in the event log: {messages[:20]}")
        system = api.expect("GET", "/api/v1/system", 200)
        if "rolled_back" not in json.dumps(system):
            raise Failed(f"GET /api/v1/system does not show the rollback: {system}")
        log(f"rolled back: {found.group(0)} {timings['rollback']:.0f} s after the install, "
            f"{tries - 1} failed boots; event: {rollback[0]}")
        passed += 1
        vm.power_off()
        timings["vms"] = time.monotonic() - vms_started

        # 5. Least privilege: poolgate wrote neither slot nor ESP; the
        # root step did, from its own root-only copy, and left nothing
        # behind in poolgate's directory. poolgate's files stay its own.
        vm.stop()
        vm = None
        found = boot_test.data_files(disk, workdir, [
            "/lib/poolgate-install", "/lib/poolgate/upgrade/staged.pgup",
            "/lib/poolgate/upgrade/install-request", "/lib/poolgate-install/bundle.pgup"])
        if found["/lib/poolgate-install"] != (0o700, 0):
            raise Failed(f"the root step's directory: {found['/lib/poolgate-install']}")
        leftovers = [p for p, f in found.items() if f is not None and p != "/lib/poolgate-install"]
        if leftovers:
            raise Failed(f"left behind after the installs: {leftovers}")
        boot_test.check_owner_only(disk, workdir)
        passed += 1
        log("least privilege: slots and ESP written by the root step (its directory root's, "
            "0700), nothing staged left, poolgate's data 0700/0600")
    except (Failed, OSError, http.client.HTTPException) as error:
        log(f"FAILED: {error}")
        if vm:
            log(f"serial console ({vm.serial}), last lines:")
            for line in vm.console().splitlines()[-40:]:
                print("    " + line)
        print(f"image-upgrade-test: {passed} passed, 1 failed")
        return 1
    finally:
        if vm:
            vm.stop()
    log(f"under {accel}: upgrade {timings['upgrade']:.0f} s, rollback {timings['rollback']:.0f} s, "
        f"{timings['vms']:.0f} s of VM time in all")
    print(f"image-upgrade-test: {passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
