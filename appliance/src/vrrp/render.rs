//! keepalived.conf from the VRRP settings and the VIP set: pure text, no
//! I/O, golden-tested. What the text does:
//! * VRRPv3 in unicast (`unicast_src_ip`, `unicast_peer`,
//!   `check_unicast_src`): adverts go to the peer only and adverts from any
//!   other address are dropped, so no hypervisor needs to pass multicast
//!   and a third host cannot take the addresses.
//! * One instance per address family (VRRPv3 carries one family per
//!   instance), `poolgate_v4` and `poolgate_v6`, in the sync group
//!   `poolgate` so they move together.
//! * `state BACKUP` on both, `nopreempt` unless `preempt`: the first to
//!   start (or the higher priority when both start together) becomes master
//!   and keeps the addresses until it fails.
//! * Gratuitous ARP / unsolicited NA: a burst on takeover
//!   (`garp_master_repeat`), a second burst a second later
//!   (`garp_master_delay`), and one every minute while master
//!   (`garp_master_refresh`), so a switch or client that missed the
//!   takeover still learns the new MAC.
//! * `vrrp_script poolgate_serving` runs `poolgate vrrp-check` every second
//!   on the health file poolgate rewrites while it serves (`health`);
//!   unweighted on the sync group, one failure puts both instances in
//!   FAULT: the addresses go at once, whatever the peer's priority and
//!   whatever `nopreempt` says (a priority drop would not move them from a
//!   master to a `nopreempt` backup).
//! * `vrrp_notify_fifo`: every state change as a line poolgate reads
//!   (`state`).
//! * `vrrp_rt_priority`: the VRRP process runs with realtime scheduling,
//!   so adverts are sent and read on time however busy the host is (a late
//!   read makes a backup take the addresses from a live master).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use super::settings::VrrpSettings;
use crate::web::FieldProblem;

/// The realtime priority (SCHED_RR) of keepalived's VRRP process: above
/// every ordinary process, below the kernel's own realtime threads.
const VRRP_RT_PRIORITY: u8 = 20;
/// The CPU time (µs) the realtime VRRP process may use between blocking
/// system calls before the kernel kills it (RLIMIT_RTTIME). keepalived's
/// 10 ms default was exceeded on a busy virtual machine while taking the
/// addresses over (the child was killed and respawned as BACKUP); 200 ms
/// still stops a runaway loop.
const VRRP_RLIMIT_RTTIME_US: u32 = 200_000;

/// Name of the sync group and prefix of the instances.
pub(crate) const GROUP: &str = "poolgate";
pub(crate) const INSTANCE_V4: &str = "poolgate_v4";
pub(crate) const INSTANCE_V6: &str = "poolgate_v6";

/// Where keepalived finds what poolgate provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paths {
    /// The file poolgate rewrites every [`super::health::WRITE_EVERY`].
    pub health_file: PathBuf,
    /// The FIFO keepalived writes its state changes to (poolgate makes it).
    pub notify_fifo: PathBuf,
    /// The poolgate binary, whose `vrrp-check` judges the health file.
    pub poolgate: PathBuf,
    /// The user keepalived runs the check as (poolgate's own).
    pub script_user: String,
}

impl Paths {
    /// keepalived splits a script line at whitespace and ends a string at a
    /// quote: a path holding either cannot be written.
    pub(crate) fn check(&self) -> Result<(), String> {
        let plain = |s: &str| {
            !s.is_empty()
                && !s.chars().any(|c| {
                    c.is_whitespace()
                        || c.is_control()
                        || matches!(c, '"' | '\'' | '#' | '!' | '{' | '}')
                })
        };
        for (what, path) in [
            ("health file", &self.health_file),
            ("notify FIFO", &self.notify_fifo),
            ("poolgate binary", &self.poolgate),
        ] {
            let text = path.to_str().unwrap_or("");
            if !plain(text) || !path.is_absolute() {
                return Err(format!(
                    "the {what} path {} cannot be written into keepalived.conf (absolute, no spaces or quotes)",
                    path.display()
                ));
            }
        }
        if !plain(&self.script_user) {
            return Err(format!(
                "user name {:?} cannot be written into keepalived.conf",
                self.script_user
            ));
        }
        Ok(())
    }
}

/// The addresses keepalived holds: every VIP of the config on the
/// interface `net::addresses` placed it on, by address (what uses it, for
/// messages).
pub(crate) type Vips = BTreeMap<IpAddr, (String, String)>;

fn problem(field: &str, message: String) -> FieldProblem {
    FieldProblem {
        field: field.to_owned(),
        message,
        line: None,
        column: None,
    }
}

/// The configuration text, or the problems (by settings field) that stop
/// it: a VIP of a family whose source and peer are not set.
pub(crate) fn render(
    settings: &VrrpSettings,
    vips: &Vips,
    paths: &Paths,
) -> Result<String, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let mut v4: Vec<(IpAddr, &str)> = Vec::new();
    let mut v6: Vec<(IpAddr, &str)> = Vec::new();
    for (ip, (interface, users)) in vips {
        let (list, pair, family) = match ip {
            IpAddr::V4(_) => (&mut v4, settings.source_v4.is_some(), "v4"),
            IpAddr::V6(_) => (&mut v6, settings.source_v6.is_some(), "v6"),
        };
        if !pair {
            problems.push(problem(
                &format!("source_{family}"),
                format!(
                    "required: the config has the address {ip} ({users}); set source_{family} and peer_{family}"
                ),
            ));
        }
        list.push((*ip, interface.as_str()));
    }
    if let Some(ip) = settings.management_address {
        let list = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
        if !list.iter().any(|(held, _)| *held == ip) {
            list.push((ip, settings.interface.as_str()));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let mut instances = Vec::new();
    if let (Some(source), Some(peer)) = (settings.source_v4, settings.peer_v4) {
        instances.push((INSTANCE_V4, IpAddr::V4(source), IpAddr::V4(peer), v4));
    }
    if let (Some(source), Some(peer)) = (settings.source_v6, settings.peer_v6) {
        instances.push((INSTANCE_V6, IpAddr::V6(source), IpAddr::V6(peer), v6));
    }

    let mut out = String::new();
    let w = &mut out;
    // `writeln!` into a String cannot fail.
    let _ = writeln!(
        w,
        "# Written by poolgate from its VRRP settings and the VIPs of its config.\n\
         # Changes made here are overwritten.\n"
    );
    let _ = writeln!(w, "global_defs {{");
    let _ = writeln!(w, "    vrrp_version 3");
    let _ = writeln!(w, "    vrrp_notify_fifo {}", paths.notify_fifo.display());
    let _ = writeln!(w, "    script_user {}", paths.script_user);
    let _ = writeln!(w, "    enable_script_security");
    // Realtime scheduling for the VRRP process: on a busy host a backup
    // that reads the master's adverts late takes the addresses from a
    // master that is still running (and with nopreempt keeps them).
    let _ = writeln!(w, "    vrrp_rt_priority {VRRP_RT_PRIORITY}");
    let _ = writeln!(w, "    vrrp_rlimit_rttime {VRRP_RLIMIT_RTTIME_US}");
    let _ = writeln!(w, "}}\n");
    let _ = writeln!(w, "vrrp_script poolgate_serving {{");
    let _ = writeln!(
        w,
        "    script \"{} vrrp-check {}\"",
        paths.poolgate.display(),
        paths.health_file.display()
    );
    let _ = writeln!(w, "    interval 1");
    let _ = writeln!(w, "    timeout 1");
    let _ = writeln!(w, "    fall 1");
    let _ = writeln!(w, "    rise 2");
    let _ = writeln!(w, "    init_fail");
    let _ = writeln!(w, "}}\n");
    let _ = writeln!(w, "vrrp_sync_group {GROUP} {{");
    let _ = writeln!(w, "    group {{");
    for (name, ..) in &instances {
        let _ = writeln!(w, "        {name}");
    }
    let _ = writeln!(w, "    }}");
    let _ = writeln!(w, "    track_script {{");
    let _ = writeln!(w, "        poolgate_serving");
    let _ = writeln!(w, "    }}");
    let _ = writeln!(w, "}}");
    for (name, source, peer, addresses) in &instances {
        let _ = writeln!(w, "\nvrrp_instance {name} {{");
        let _ = writeln!(w, "    state BACKUP");
        let _ = writeln!(w, "    interface {}", settings.interface);
        let _ = writeln!(w, "    virtual_router_id {}", settings.virtual_router_id);
        let _ = writeln!(w, "    priority {}", settings.priority);
        let _ = writeln!(
            w,
            "    advert_int {}",
            settings.advert_interval_s.keepalived()
        );
        if !settings.preempt {
            let _ = writeln!(w, "    nopreempt");
        }
        let _ = writeln!(w, "    unicast_src_ip {source}");
        let _ = writeln!(w, "    unicast_peer {{");
        let _ = writeln!(w, "        {peer}");
        let _ = writeln!(w, "    }}");
        let _ = writeln!(w, "    check_unicast_src");
        let _ = writeln!(w, "    garp_master_delay 1");
        let _ = writeln!(w, "    garp_master_repeat 3");
        let _ = writeln!(w, "    garp_master_refresh 60");
        let _ = writeln!(w, "    virtual_ipaddress {{");
        for (ip, interface) in addresses {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            let _ = writeln!(w, "        {ip}/{prefix} dev {interface}");
        }
        let _ = writeln!(w, "    }}");
        let _ = writeln!(w, "}}");
    }
    Ok(out)
}

/// Replaces the table wholesale: `nft -f` of this file is idempotent.
const NFT_RESET: &str = "table inet poolgate_vrrp {}\ndelete table inet poolgate_vrrp\n";

/// The ruleset with VRRP off: the table is gone.
pub(crate) const NFT_OFF: &str = "# Written by poolgate: VRRP is off.\n\
    table inet poolgate_vrrp {}\ndelete table inet poolgate_vrrp\n";

/// The nftables ruleset the root step loads beside keepalived: VRRP (IP
/// protocol 112) is accepted only from the configured peer's addresses.
pub(crate) fn render_nft(settings: &VrrpSettings) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# Written by poolgate: VRRP only from the paired peer.");
    let _ = write!(w, "{NFT_RESET}");
    let _ = writeln!(w, "table inet poolgate_vrrp {{");
    let _ = writeln!(w, "    chain input {{");
    let _ = writeln!(
        w,
        "        type filter hook input priority filter; policy accept;"
    );
    if let Some(peer) = settings.peer_v4 {
        let _ = writeln!(w, "        meta l4proto 112 ip saddr {peer} accept");
    }
    if let Some(peer) = settings.peer_v6 {
        let _ = writeln!(w, "        meta l4proto 112 ip6 saddr {peer} accept");
    }
    let _ = writeln!(w, "        meta l4proto 112 counter drop");
    let _ = writeln!(w, "    }}");
    let _ = writeln!(w, "}}");
    out
}
