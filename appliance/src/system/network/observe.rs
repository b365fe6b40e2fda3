//! The host's network as it is now, for the System → Network page: the
//! host name (`/proc/sys/kernel/hostname`), links with their MAC, state,
//! MTU and addresses (sysfs and `getifaddrs`), the routing tables
//! (`/proc/net/route`, `/proc/net/ipv6_route`), the resolvers in use
//! (`/etc/resolv.conf`), and chrony's synchronisation state
//! (`chronyc -c tracking`, a fixed argv). Reading needs no privilege; what
//! cannot be read is left out, never an error.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Observed {
    /// The kernel's host name; `None` when it cannot be read.
    pub hostname: Option<String>,
    pub interfaces: Vec<ObservedInterface>,
    pub routes: Vec<ObservedRoute>,
    /// The resolvers the host's programs ask (`nameserver` lines of
    /// `/etc/resolv.conf`, at most [`MAX_RESOLVERS`]).
    pub resolvers: Vec<String>,
    /// `None` when chrony does not answer.
    pub ntp: Option<NtpState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ObservedInterface {
    pub name: String,
    pub mac: Option<String>,
    /// The kernel's operational state: `up`, `down`, `unknown`, …
    pub state: String,
    pub mtu: Option<u32>,
    /// With prefix, `198.51.100.10/24`.
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ObservedRoute {
    /// `default` or a prefix.
    pub destination: String,
    pub via: Option<String>,
    pub interface: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NtpState {
    pub synchronised: bool,
    /// The source chrony follows, as it names it.
    pub source: String,
    pub stratum: u32,
    /// The system clock's offset from true time, seconds (positive: fast).
    pub offset_s: f64,
}

/// More `nameserver` lines than any resolver library reads (glibc: 3).
const MAX_RESOLVERS: usize = 16;

pub(crate) fn observe() -> Observed {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    Observed {
        hostname: read("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty()),
        interfaces: interfaces(Path::new("/sys/class/net")),
        routes: [
            std::fs::read_to_string("/proc/net/route").map(|t| routes_v4(&t)),
            std::fs::read_to_string("/proc/net/ipv6_route").map(|t| routes_v6(&t)),
        ]
        .into_iter()
        .flatten()
        .flatten()
        .collect(),
        resolvers: read("/etc/resolv.conf")
            .map(|text| resolvers(&text))
            .unwrap_or_default(),
        ntp: chrony_tracking(),
    }
}

/// The addresses of `nameserver` lines, in order; comments and other
/// options are skipped.
fn resolvers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(words.next()?)
        })
        .filter_map(|address| address.parse::<IpAddr>().ok())
        .map(|address| address.to_string())
        .take(MAX_RESOLVERS)
        .collect()
}

fn interfaces(sys: &Path) -> Vec<ObservedInterface> {
    let mut by_name: BTreeMap<String, ObservedInterface> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(sys) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let read = |file: &str| {
                std::fs::read_to_string(entry.path().join(file))
                    .ok()
                    .map(|s| s.trim().to_owned())
            };
            by_name.insert(
                name.clone(),
                ObservedInterface {
                    name,
                    mac: read("address").filter(|mac| !mac.is_empty()),
                    state: read("operstate").unwrap_or_else(|| "unknown".into()),
                    mtu: read("mtu").and_then(|m| m.parse().ok()),
                    addresses: Vec::new(),
                },
            );
        }
    }
    if let Ok(addresses) = nix::ifaddrs::getifaddrs() {
        for ifaddr in addresses {
            let Some(interface) = by_name.get_mut(&ifaddr.interface_name) else {
                continue;
            };
            let (Some(address), Some(netmask)) = (ifaddr.address, ifaddr.netmask) else {
                continue;
            };
            let pair = match (address.as_sockaddr_in(), netmask.as_sockaddr_in()) {
                (Some(a), Some(m)) => Some((IpAddr::V4(a.ip()), u32::from(m.ip()).count_ones())),
                _ => match (address.as_sockaddr_in6(), netmask.as_sockaddr_in6()) {
                    (Some(a), Some(m)) => {
                        Some((IpAddr::V6(a.ip()), u128::from(m.ip()).count_ones()))
                    }
                    _ => None,
                },
            };
            if let Some((ip, prefix)) = pair {
                interface.addresses.push(format!("{ip}/{prefix}"));
            }
        }
    }
    by_name.into_values().collect()
}

/// `/proc/net/route`: little-endian hex addresses, one route per line
/// after the header.
fn routes_v4(text: &str) -> Vec<ObservedRoute> {
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.swap_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, gw, mask) = (hex(f.get(1)?)?, hex(f.get(2)?)?, hex(f.get(7)?)?);
            let prefix = u32::from(mask).count_ones();
            Some(ObservedRoute {
                destination: if prefix == 0 {
                    "default".into()
                } else {
                    format!("{dest}/{prefix}")
                },
                via: (!gw.is_unspecified()).then(|| gw.to_string()),
                interface: (*f.first()?).to_owned(),
            })
        })
        .collect()
}

/// `/proc/net/ipv6_route`: destination, its prefix, source, its prefix,
/// next hop (32 hex digits each but the prefixes), metric, …, device.
fn routes_v6(text: &str) -> Vec<ObservedRoute> {
    let hex = |s: &str| u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from);
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = hex(f.first()?)?;
            let prefix = u8::from_str_radix(f.get(1)?, 16).ok()?;
            let via = hex(f.get(4)?)?;
            let interface = (*f.get(9)?).to_owned();
            // The kernel's own local, multicast and loopback entries.
            if interface == "lo" || dest.is_multicast() || prefix == 128 {
                return None;
            }
            Some(ObservedRoute {
                destination: if prefix == 0 {
                    "default".into()
                } else {
                    format!("{dest}/{prefix}")
                },
                via: (!via.is_unspecified()).then(|| via.to_string()),
                interface,
            })
        })
        .collect()
}

fn chrony_tracking() -> Option<NtpState> {
    let output = Command::new("chronyc")
        .args(["-c", "-n", "tracking"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    parse_tracking(&String::from_utf8_lossy(&output.stdout))
}

/// `chronyc -c tracking`: reference id, source, stratum, reference time,
/// system time offset, …, leap status last.
fn parse_tracking(text: &str) -> Option<NtpState> {
    let f: Vec<&str> = text.trim().split(',').collect();
    let stratum: u32 = f.get(2)?.parse().ok()?;
    let offset_s: f64 = f.get(4)?.parse().ok()?;
    let leap = f.last()?;
    Some(NtpState {
        synchronised: (1..16).contains(&stratum) && *leap != "Not synchronised",
        source: (*f.get(1)?).to_owned(),
        stratum,
        offset_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ipv4_routing_table() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0164A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0064A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = routes_v4(text);
        assert_eq!(routes[0].destination, "default");
        assert_eq!(routes[0].via.as_deref(), Some("192.168.100.1"));
        assert_eq!(routes[1].destination, "192.168.100.0/24");
        assert_eq!(routes[1].via, None);
        assert_eq!(routes[1].interface, "eth0");
    }

    #[test]
    fn reads_the_ipv6_routing_table_without_the_kernels_own_entries() {
        let text = "20010db8010000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1\n\
                    00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth1\n\
                    00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000001 00000000 80200001       lo\n";
        let routes = routes_v6(text);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].destination, "2001:db8:100::/64");
        assert_eq!(routes[1].destination, "default");
        assert_eq!(routes[1].via.as_deref(), Some("fe80::1"));
    }

    #[test]
    fn reads_the_resolvers_from_resolv_conf() {
        let text = "# Generated\nsearch contoso.test\nnameserver 192.0.2.53\n  nameserver 2001:db8::53 \n\
                    nameserver not-an-address\n;nameserver 192.0.2.1\noptions edns0\n";
        assert_eq!(resolvers(text), ["192.0.2.53", "2001:db8::53"]);
        let many = "nameserver 192.0.2.1\n".repeat(100);
        assert_eq!(resolvers(&many).len(), MAX_RESOLVERS);
    }

    #[test]
    fn reads_chronys_tracking() {
        let synced = "C0A80001,192.168.0.1,3,1700000000.1,-0.000012,0.000001,0.000002,1.2,0.01,0.02,0.003,0.004,64.0,Normal\n";
        let state = parse_tracking(synced).expect("parses");
        assert!(state.synchronised);
        assert_eq!(state.stratum, 3);
        assert!((state.offset_s + 0.000012).abs() < 1e-9);
        let unsynced = "00000000,,0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,1.0,0.0,Not synchronised\n";
        assert!(!parse_tracking(unsynced).expect("parses").synchronised);
    }
}
