//! Validated settings as the system's own tools read them, pure: one
//! systemd-networkd `.network` file per link (and a `.netdev` per VLAN), a
//! chrony sources file, the host name and the time zone. Every file
//! poolgate writes starts with [`PREFIX`], so applying removes exactly the
//! files of earlier settings and never one the console or the image wrote.

use std::fmt::Write as _;

use super::validate::{Match, Plan, PlannedLink};

/// Names of the networkd files poolgate owns: ordered after the console's
/// `10-static.network`, before the image's DHCP default (`80-…`).
pub(crate) const PREFIX: &str = "20-poolgate-";
const HEADER: &str =
    "# Written by poolgate from the appliance's network settings; changes here are replaced.\n";

/// Everything one set of settings writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rendered {
    /// File name (in the networkd directory) and contents, sorted by name.
    pub networkd: Vec<(String, String)>,
    /// chrony's sources file (empty settings: no sources, chrony keeps its
    /// defaults and DHCP's).
    pub chrony_sources: String,
    pub hostname: Option<String>,
    pub timezone: Option<String>,
}

pub(crate) fn render(plan: &Plan) -> Rendered {
    let mut networkd = Vec::new();
    for link in &plan.links {
        if let Match::Vlan { id, .. } = link.matched {
            let device = link.device.as_deref().unwrap_or(&link.stem);
            networkd.push((
                format!("{PREFIX}{}.netdev", link.stem),
                format!("{HEADER}[NetDev]\nName={device}\nKind=vlan\n\n[VLAN]\nId={id}\n"),
            ));
        }
        networkd.push((
            format!("{PREFIX}{}.network", link.stem),
            network_file(plan, link),
        ));
    }
    networkd.sort();
    let mut chrony_sources = String::from(HEADER);
    for server in &plan.ntp_servers {
        let _ = writeln!(chrony_sources, "server {server} iburst");
    }
    Rendered {
        networkd,
        chrony_sources,
        hostname: plan.hostname.clone(),
        timezone: plan.timezone.clone(),
    }
}

fn network_file(plan: &Plan, link: &PlannedLink) -> String {
    let mut out = String::from(HEADER);
    out.push_str("[Match]\n");
    match &link.matched {
        Match::Physical { name, mac } => {
            if let Some(name) = name {
                let _ = writeln!(out, "Name={name}");
            }
            if let Some(mac) = mac {
                let _ = writeln!(out, "PermanentMACAddress={mac}");
            }
            // A VLAN device carries its parent's MAC: match real links only.
            if name.is_none() {
                out.push_str("Type=ether\n");
            }
        }
        Match::Vlan { .. } => {
            let _ = writeln!(out, "Name={}", link.device.as_deref().unwrap_or(&link.stem));
            out.push_str("Type=vlan\n");
        }
    }
    if let Some(mtu) = link.mtu {
        let _ = writeln!(out, "\n[Link]\nMTUBytes={mtu}");
    }
    out.push_str("\n[Network]\n");
    let _ = writeln!(out, "DHCP={}", if link.dhcp4 { "ipv4" } else { "no" });
    let _ = writeln!(
        out,
        "IPv6AcceptRA={}",
        if link.slaac { "yes" } else { "no" }
    );
    // Link-local IPv6 stays on (neighbour discovery needs it); no IPv4
    // link-local.
    out.push_str("LinkLocalAddressing=ipv6\n");
    for vlan in &link.vlans {
        let _ = writeln!(out, "VLAN={vlan}");
    }
    for server in &plan.dns_servers {
        let _ = writeln!(out, "DNS={server}");
    }
    if !plan.search_domains.is_empty() {
        let _ = writeln!(out, "Domains={}", plan.search_domains.join(" "));
    }
    for address in &link.addresses {
        // VIPs and the appliance's own addresses answer at once: no DAD
        // wait for static IPv6 addresses.
        if address.addr().is_ipv6() {
            let _ = writeln!(
                out,
                "\n[Address]\nAddress={address}\nDuplicateAddressDetection=none"
            );
        } else {
            let _ = writeln!(out, "\n[Address]\nAddress={address}");
        }
    }
    for gateway in &link.gateways {
        let _ = writeln!(out, "\n[Route]\nGateway={gateway}");
    }
    for (destination, via) in &link.routes {
        let _ = writeln!(out, "\n[Route]\nDestination={destination}\nGateway={via}");
    }
    out
}
