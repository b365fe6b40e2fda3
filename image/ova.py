#!/usr/bin/env python3
"""Builds and checks poolgate's OVA (the VMware import format).

An OVA is a ustar tar whose first member is the OVF 1.0 descriptor (VMware
reads it before anything else), then the manifest (``SHA256(file)= hex`` for
each other member), then the disk as a streamOptimized VMDK.

    ova.py build --name N --version V --vmdk DISK --capacity BYTES --out N.ova
    ova.py check N.ova [--raw N.raw]

``check`` is what the image test runs: descriptor first and well-formed with
the sections VMware needs, manifest hashes right, every ``ovf:size`` the
member's real size, and (with --raw) the VMDK converting back to a disk
identical to the raw one.
"""

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET

NS = {
    "ovf": "http://schemas.dmtf.org/ovf/envelope/1",
    "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
    "vmw": "http://www.vmware.com/schema/ovf",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
VMDK_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
CPUS = 2
MEMORY_MIB = 2048


def descriptor(name, version, vmdk_name, vmdk_size, capacity):
    """The OVF 1.0 descriptor: 2 vCPU, 2 GiB, one SATA disk, one vmxnet3
    NIC, EFI firmware with Secure Boot off (v1 ships an unsigned boot loader)."""

    def item(**fields):
        # The CIM schema defines the rasd elements as a sequence in
        # alphabetical order, and VMware rejects them in any other.
        fields["ElementName"] = fields["Caption"]
        lines = "".join(f"        <rasd:{key}>{value}</rasd:{key}>\n"
                        for key, value in sorted(fields.items()))
        return f"      <Item>\n{lines}      </Item>\n"

    items = (
        item(InstanceID=1, ResourceType=3, Caption=f"{CPUS} virtual CPUs",
             AllocationUnits="hertz * 10^6", VirtualQuantity=CPUS)
        + item(InstanceID=2, ResourceType=4, Caption=f"{MEMORY_MIB} MB of memory",
               AllocationUnits="byte * 2^20", VirtualQuantity=MEMORY_MIB)
        + item(InstanceID=3, ResourceType=20, Caption="SATA controller",
               Address=0, ResourceSubType="vmware.sata.ahci")
        + item(InstanceID=4, ResourceType=17, Caption="Hard disk 1", AddressOnParent=0,
               HostResource="ovf:/disk/vmdisk1", Parent=3)
        + item(InstanceID=5, ResourceType=10, Caption="Network adapter 1", AddressOnParent=7,
               AutomaticAllocation="true", Connection="VM Network", ResourceSubType="VMXNET3")
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="{NS['ovf']}" xmlns:ovf="{NS['ovf']}" xmlns:rasd="{NS['rasd']}" xmlns:vssd="{NS['vssd']}" xmlns:vmw="{NS['vmw']}" xmlns:xsi="{NS['xsi']}">
  <References>
    <File ovf:href="{vmdk_name}" ovf:id="file1" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="{VMDK_FORMAT}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The network poolgate serves DNS, SIP and the web UI on</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>poolgate load balancer for SIP server pools</Info>
    <Name>{name}</Name>
    <ProductSection>
      <Info>Product information</Info>
      <Product>poolgate</Product>
      <Version>{version}</Version>
      <FullVersion>{version}</FullVersion>
    </ProductSection>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian11_64Guest">
      <Info>Debian GNU/Linux (64-bit)</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>2 vCPU, 2 GiB memory, EFI firmware, Secure Boot off</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType>
      </System>
{items}      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
      <vmw:Config ovf:required="false" vmw:key="bootOptions.efiSecureBootEnabled" vmw:value="false"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build(args):
    vmdk_name = f"{args.name}-disk1.vmdk"
    ovf_name = f"{args.name}.ovf"
    ovf = descriptor(args.name, args.version, vmdk_name,
                     os.path.getsize(args.vmdk), args.capacity).encode()
    manifest = (
        f"SHA256({ovf_name})= {hashlib.sha256(ovf).hexdigest()}\n"
        f"SHA256({vmdk_name})= {sha256(args.vmdk)}\n"
    ).encode()
    tmp = args.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        add_bytes(tar, ovf_name, ovf)
        add_bytes(tar, f"{args.name}.mf", manifest)
        info = tar.gettarinfo(args.vmdk, arcname=vmdk_name)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o644
        with open(args.vmdk, "rb") as f:
            tar.addfile(info, f)
    os.replace(tmp, args.out)


def check(args):
    problems = []
    with tarfile.open(args.ova, "r:") as tar, tempfile.TemporaryDirectory() as tmp:
        members = tar.getmembers()
        names = [m.name for m in members]
        if not names or not names[0].endswith(".ovf"):
            problems.append(f"first member is {names[:1]}, not the .ovf descriptor")
        if any(m.type != tarfile.REGTYPE for m in members):
            problems.append("members other than plain files")
        with open(args.ova, "rb") as f:
            header = f.read(512)
        if header[257:263] != b"ustar\x00":
            problems.append("not a POSIX ustar archive")
        tar.extractall(tmp, filter="data")
        sizes = {m.name: m.size for m in members}

        descriptors = [n for n in names if n.endswith(".ovf")]
        if len(descriptors) != 1:
            print(f"ova check: {len(descriptors)} .ovf descriptors in the archive")
            return 1
        ovf_name = descriptors[0]
        try:
            root = ET.parse(os.path.join(tmp, ovf_name)).getroot()
        except ET.ParseError as error:
            print(f"ova check: {ovf_name} is not well-formed XML: {error}")
            return 1
        ovf = "{%s}" % NS["ovf"]
        for section in ("References", "DiskSection", "NetworkSection", "VirtualSystem"):
            if root.find(f"ovf:{section}", NS) is None:
                problems.append(f"descriptor lacks {section}")
        vs = root.find("ovf:VirtualSystem", NS)
        for section in ("OperatingSystemSection", "VirtualHardwareSection"):
            if vs is None or vs.find(f"ovf:{section}", NS) is None:
                problems.append(f"descriptor's VirtualSystem lacks {section}")
        files = root.findall("ovf:References/ovf:File", NS)
        if not files:
            problems.append("descriptor references no file")
        for file in files:
            href, size = file.get(ovf + "href"), file.get(ovf + "size")
            if href not in sizes:
                problems.append(f"{href} is referenced but not in the archive")
            elif str(sizes[href]) != size:
                problems.append(f"{href}: ovf:size {size}, real size {sizes[href]}")
        hardware = root.find("ovf:VirtualSystem/ovf:VirtualHardwareSection", NS)
        if hardware is not None:
            found = {}
            for item in hardware.findall("ovf:Item", NS):
                tags = [child.tag.split("}")[1] for child in item]
                if tags != sorted(tags):
                    problems.append(f"Item elements not in schema (alphabetical) order: {tags}")
                kind = item.findtext("rasd:ResourceType", namespaces=NS)
                found[kind] = item
            cpus = found.get("3")
            memory = found.get("4")
            nic = found.get("10")
            if cpus is None or cpus.findtext("rasd:VirtualQuantity", namespaces=NS) != str(CPUS):
                problems.append(f"not {CPUS} vCPUs")
            if memory is None or memory.findtext("rasd:VirtualQuantity", namespaces=NS) != str(MEMORY_MIB):
                problems.append(f"not {MEMORY_MIB} MB of memory")
            if nic is None or nic.findtext("rasd:ResourceSubType", namespaces=NS) != "VMXNET3":
                problems.append("no vmxnet3 network adapter")
            config = {c.get("{%s}key" % NS["vmw"]): c.get("{%s}value" % NS["vmw"])
                      for c in hardware.findall("vmw:Config", NS)}
            if config.get("firmware") != "efi":
                problems.append("firmware is not efi")
            if config.get("bootOptions.efiSecureBootEnabled") != "false":
                problems.append("Secure Boot is not off")

        manifests = [n for n in names if n.endswith(".mf")]
        if len(manifests) != 1:
            problems.append(f"{len(manifests)} manifests")
        else:
            listed = {}
            with open(os.path.join(tmp, manifests[0])) as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    left, _, digest = line.partition("= ")
                    if not (left.startswith("SHA256(") and left.endswith(")")):
                        problems.append(f"manifest line {line!r} is not SHA256(file)= hex")
                        continue
                    listed[left[7:-1]] = digest
            for name in names:
                if name == manifests[0]:
                    continue
                if name not in listed:
                    problems.append(f"{name} is not in the manifest")
                elif listed[name] != sha256(os.path.join(tmp, name)):
                    problems.append(f"{name}: manifest hash does not match")

        disks = root.findall("ovf:DiskSection/ovf:Disk", NS)
        if args.raw and disks and not problems:
            href = next(f.get(ovf + "href") for f in files
                        if f.get(ovf + "id") == disks[0].get(ovf + "fileRef"))
            capacity = int(disks[0].get(ovf + "capacity"))
            if capacity != os.path.getsize(args.raw):
                problems.append(f"disk capacity {capacity} is not the raw disk's size")
            # Convert back and compare with the raw disk (content; the sizes
            # are equal by the capacity check above).
            back = os.path.join(tmp, "back.raw")
            subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw",
                            os.path.join(tmp, href), back], check=True)
            compared = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                                       back, args.raw], capture_output=True, text=True)
            if compared.returncode != 0:
                problems.append(f"VMDK differs from the raw disk: {compared.stdout.strip()}")

    for problem in problems:
        print(f"ova check: {problem}")
    if problems:
        return 1
    print(f"ova check: {os.path.basename(args.ova)} ok ({', '.join(names)})")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--name", required=True)
    b.add_argument("--version", required=True)
    b.add_argument("--vmdk", required=True)
    b.add_argument("--capacity", required=True, type=int)
    b.add_argument("--out", required=True)
    c = sub.add_parser("check")
    c.add_argument("ova")
    c.add_argument("--raw")
    args = parser.parse_args()
    sys.exit(build(args) if args.command == "build" else check(args))


if __name__ == "__main__":
    main()
