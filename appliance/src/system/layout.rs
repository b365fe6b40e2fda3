//! The appliance's disk layout as upgrades see it: two root slots (A/B), the
//! EFI system partition with one unified kernel image per slot, and which
//! slot is running. Every path comes from a `Layout`, so tests stand in
//! plain files for partitions and a directory for the ESP.
//!
//! The names below are the contract with the image build: GPT partition
//! labels `esp`, `root-a`, `root-b`, `data`; UKIs at
//! `EFI/Linux/poolgate-a*.efi` and `EFI/Linux/poolgate-b*.efi` on the ESP;
//! the running root named as `root=PARTLABEL=root-a` (or `root-b`) on the
//! kernel command line, or in the file the layout's `cmdline` names (the
//! image's initramfs writes `/run/poolgate-slot`, as one UKI boots either
//! slot).
//!
//! Boot selection is systemd-boot's own: a freshly installed UKI is named
//! `poolgate-<slot>+3.efi` (three tries); systemd-boot counts a try down on
//! every boot, `systemd-bless-boot` drops the counter once the boot reached
//! `boot-complete.target`, and an entry with no tries left sorts last, so
//! the previous slot boots again. Among good entries the newest version (the
//! UKI's `.osrel` `IMAGE_VERSION`) sorts first, so `loader.conf` must not pin
//! a `default` to one slot.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) const PARTLABEL_ROOT_A: &str = "root-a";
pub(crate) const PARTLABEL_ROOT_B: &str = "root-b";
/// Where the image mounts the ESP.
pub(crate) const ESP_MOUNT: &str = "/efi";
/// UKIs live here on the ESP (systemd-boot's Type #2 entries).
pub(crate) const UKI_DIR: &str = "EFI/Linux";
pub(crate) const UKI_PREFIX: &str = "poolgate-";
/// Boot attempts a new slot gets before systemd-boot falls back.
pub const BOOT_TRIES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub(crate) fn letter(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }

    pub fn partlabel(self) -> &'static str {
        match self {
            Self::A => PARTLABEL_ROOT_A,
            Self::B => PARTLABEL_ROOT_B,
        }
    }

    pub(crate) fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

/// Where things are. Deserialised from a layout file (TOML) in tests and
/// development; the default is the appliance image's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Layout {
    /// Block device (or file) of root slot A.
    pub root_a: PathBuf,
    pub root_b: PathBuf,
    /// The mounted EFI system partition.
    pub esp: PathBuf,
    /// Where the running slot is read from (`root=PARTLABEL=root-a`).
    pub cmdline: PathBuf,
    /// Reboot by creating this file, for a root service of the system to
    /// act on (the image's `poolgate-reboot.path`), rather than by running
    /// `systemctl reboot`, which an unprivileged service may not do.
    pub reboot_request: Option<PathBuf>,
    /// Write slots and ESP through a root-owned step (`system::install`):
    /// poolgate stages the bundle beside this file and creates it; the
    /// image's `poolgate-install.path` runs the step. `None`: poolgate
    /// writes them itself (development, tests).
    pub install_request: Option<PathBuf>,
    /// Where the appliance's network settings are written and how they
    /// are applied (`system::network`). `None`: poolgate shows the host's
    /// network and changes nothing (development, a host it does not own).
    pub network: Option<super::network::NetworkLayout>,
    /// Where keepalived's configuration goes and how it is applied
    /// (`vrrp::apply`). `None`: poolgate renders it and hands it to nobody.
    pub vrrp: Option<crate::vrrp::VrrpLayout>,
    /// Where snmpd's configuration goes and how it is applied
    /// (`snmp::apply`). `None`: poolgate renders it and hands it to nobody.
    pub snmp: Option<crate::snmp::SnmpLayout>,
}

impl Default for Layout {
    fn default() -> Self {
        let by_label = |label: &str| PathBuf::from("/dev/disk/by-partlabel").join(label);
        Self {
            root_a: by_label(PARTLABEL_ROOT_A),
            root_b: by_label(PARTLABEL_ROOT_B),
            esp: PathBuf::from(ESP_MOUNT),
            cmdline: PathBuf::from("/proc/cmdline"),
            reboot_request: None,
            install_request: None,
            network: None,
            vrrp: None,
            snmp: None,
        }
    }
}

impl Layout {
    /// Read a layout file; unknown keys are errors.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        toml::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    pub(crate) fn device(&self, slot: Slot) -> &Path {
        match slot {
            Slot::A => &self.root_a,
            Slot::B => &self.root_b,
        }
    }

    pub(crate) fn uki_dir(&self) -> PathBuf {
        self.esp.join(UKI_DIR)
    }

    /// The running slot, from the kernel command line; `None` when it names
    /// neither (not booted from the appliance image).
    pub(crate) fn running_slot(&self) -> Option<Slot> {
        std::fs::read_to_string(&self.cmdline)
            .ok()
            .and_then(|text| slot_from_cmdline(&text))
    }
}

/// `root=PARTLABEL=root-a` → A. The last `root=` wins, as for the kernel.
pub(crate) fn slot_from_cmdline(cmdline: &str) -> Option<Slot> {
    let root = cmdline
        .split_ascii_whitespace()
        .filter_map(|word| word.strip_prefix("root="))
        .next_back()?;
    match root.strip_prefix("PARTLABEL=")? {
        PARTLABEL_ROOT_A => Some(Slot::A),
        PARTLABEL_ROOT_B => Some(Slot::B),
        _ => None,
    }
}

/// The file name of a newly installed UKI: `poolgate-b+3.efi`.
pub(crate) fn new_uki_name(slot: Slot) -> String {
    format!("{UKI_PREFIX}{}+{BOOT_TRIES}.efi", slot.letter())
}

/// A UKI file name on the ESP, parsed: its slot and, while boot counting is
/// on, `(tries left, tries done)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UkiName {
    pub slot: Slot,
    pub tries: Option<(u32, u32)>,
}

/// `poolgate-a.efi`, `poolgate-b+3.efi`, `poolgate-b+0-3.efi`; also any
/// `poolgate-a<suffix>.efi` the image may use (`poolgate-a-1.2.0.efi`).
pub(crate) fn parse_uki_name(name: &str) -> Option<UkiName> {
    let stem = name.strip_suffix(".efi")?.strip_prefix(UKI_PREFIX)?;
    let slot = match stem.get(..1)? {
        "a" => Slot::A,
        "b" => Slot::B,
        _ => return None,
    };
    let rest = &stem[1..];
    if !(rest.is_empty() || rest.starts_with(['+', '-', '.', '_'])) {
        return None;
    }
    let tries = rest.rsplit_once('+').and_then(|(_, counter)| {
        let (left, done) = counter.split_once('-').unwrap_or((counter, "0"));
        Some((left.parse().ok()?, done.parse().ok()?))
    });
    Some(UkiName { slot, tries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_slot_comes_from_the_root_partlabel() {
        assert_eq!(
            slot_from_cmdline("quiet root=PARTLABEL=root-b ro console=ttyS0\n"),
            Some(Slot::B)
        );
        assert_eq!(
            slot_from_cmdline("root=PARTLABEL=root-b root=PARTLABEL=root-a"),
            Some(Slot::A)
        );
        assert_eq!(slot_from_cmdline("root=/dev/sda2 ro"), None);
        assert_eq!(slot_from_cmdline("root=PARTLABEL=data"), None);
        assert_eq!(slot_from_cmdline(""), None);
    }

    #[test]
    fn uki_names_carry_slot_and_boot_counter() {
        assert_eq!(new_uki_name(Slot::B), "poolgate-b+3.efi");
        let parse = |n| parse_uki_name(n).map(|u| (u.slot, u.tries));
        assert_eq!(parse("poolgate-b+3.efi"), Some((Slot::B, Some((3, 0)))));
        assert_eq!(parse("poolgate-b+0-3.efi"), Some((Slot::B, Some((0, 3)))));
        assert_eq!(parse("poolgate-a.efi"), Some((Slot::A, None)));
        assert_eq!(parse("poolgate-a-1.2.0.efi"), Some((Slot::A, None)));
        assert_eq!(parse("poolgate-b+3.efi.part"), None);
        assert_eq!(parse("poolgate-c.efi"), None);
        assert_eq!(parse("poolgate-ab.efi"), None);
        assert_eq!(parse("other-a.efi"), None);
    }
}
