//! The one check of network settings, pure: settings in, a [`Plan`] out
//! (every link with what it carries, the gateways and routes attached to
//! the link whose subnet holds them), or every problem, each naming its
//! field (`interfaces[1].vlans[0].id`). Nothing is applied unless this
//! passes, in the API and again in the root-owned step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::model::{Link, NetworkSettings};

/// One problem with the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

/// Bounds on what one appliance configures.
pub(crate) const MAX_INTERFACES: usize = 16;
pub(crate) const MAX_VLANS: usize = 64;
pub(crate) const MAX_ADDRESSES: usize = 32;
pub(crate) const MAX_ROUTES: usize = 64;
pub(crate) const MAX_SERVERS: usize = 8;
pub(crate) const MAX_SEARCH_DOMAINS: usize = 6;
/// The MTU range Ethernet links take; IPv6 needs at least 1280.
pub(crate) const MTU_MIN: u32 = 576;
pub(crate) const MTU_MIN_IPV6: u32 = 1280;
pub(crate) const MTU_MAX: u32 = 9216;
/// Linux interface names are at most 15 bytes.
const IFNAME_MAX: usize = 15;

/// How a link is found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Match {
    /// A physical interface, by name and/or MAC address.
    Physical {
        name: Option<String>,
        mac: Option<String>,
    },
    /// A VLAN poolgate creates on the link at `parent` (an index into
    /// `Plan::links`).
    Vlan { parent: usize, id: u16 },
}

/// One link as it is to be configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedLink {
    /// Stable, file-safe: names the networkd files and the VLAN device.
    pub stem: String,
    /// The device name where poolgate decides it (VLANs), else the name
    /// given, if any.
    pub device: Option<String>,
    pub matched: Match,
    pub dhcp4: bool,
    pub addresses: Vec<IpNet>,
    pub slaac: bool,
    pub mtu: Option<u32>,
    /// Default gateways on this link.
    pub gateways: Vec<IpAddr>,
    pub routes: Vec<(IpNet, IpAddr)>,
    /// VLAN devices on this link, by stem.
    pub vlans: Vec<String>,
}

/// Validated settings, ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub hostname: Option<String>,
    pub links: Vec<PlannedLink>,
    pub dns_servers: Vec<IpAddr>,
    pub search_domains: Vec<String>,
    pub ntp_servers: Vec<String>,
    pub timezone: Option<String>,
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    fn at_most<T>(&mut self, field: &str, items: &[T], max: usize) {
        if items.len() > max {
            self.problem(field, format!("at most {max} entries, not {}", items.len()));
        }
    }
}

/// A host name or domain: dot-separated labels of letters, digits and
/// inner hyphens, 1–63 each, 253 in all.
pub(crate) fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `aa:bb:cc:dd:ee:ff`, lower-cased.
fn normal_mac(mac: &str) -> Option<String> {
    let parts: Vec<&str> = mac.split(':').collect();
    (parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())))
    .then(|| mac.to_ascii_lowercase())
}

/// An IANA zone name: `Area/Location` style, no `..`, no leading `/`.
fn valid_zone_name(zone: &str) -> bool {
    !zone.is_empty()
        && zone.len() <= 64
        && !zone.starts_with('/')
        && zone
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'))
}

/// Check `settings`; `zone_exists` says whether the host knows a time zone.
pub(crate) fn validate(
    settings: &NetworkSettings,
    zone_exists: impl Fn(&str) -> bool,
) -> Result<Plan, Vec<Problem>> {
    let mut check = Checker {
        problems: Vec::new(),
    };
    if let Some(hostname) = &settings.hostname
        && !valid_hostname(hostname)
    {
        check.problem(
            "hostname",
            "letters, digits and inner hyphens, labels of 1–63 separated by dots",
        );
    }
    check.at_most("interfaces", &settings.interfaces, MAX_INTERFACES);

    let mut links: Vec<PlannedLink> = Vec::new();
    // Where each link's checks report: the field path of the link.
    let mut fields: Vec<String> = Vec::new();
    let mut names = BTreeSet::new();
    let mut macs = BTreeSet::new();
    let mut vlan_count = 0;
    for (i, interface) in settings.interfaces.iter().enumerate() {
        let field = format!("interfaces[{i}]");
        let name = interface.name.clone();
        if let Some(name) = &name {
            if !valid_ifname(name) {
                check.problem(
                    format!("{field}.name"),
                    format!("an interface name of 1–{IFNAME_MAX} letters, digits, '-', '_' or '.'"),
                );
            } else if !names.insert(name.clone()) {
                check.problem(
                    format!("{field}.name"),
                    format!("interface {name} is listed twice"),
                );
            }
        }
        let mac = match &interface.mac {
            Some(mac) => match normal_mac(mac) {
                Some(mac) => {
                    if !macs.insert(mac.clone()) {
                        check.problem(format!("{field}.mac"), format!("MAC {mac} is listed twice"));
                    }
                    Some(mac)
                }
                None => {
                    check.problem(
                        format!("{field}.mac"),
                        "a MAC address such as 52:54:00:12:34:56",
                    );
                    None
                }
            },
            None => None,
        };
        if interface.name.is_none() && interface.mac.is_none() {
            check.problem(&field, "name the interface, give its MAC address, or both");
        }
        let stem = match (&name, &mac) {
            (Some(name), _) => name.clone(),
            (None, Some(mac)) => format!("mac-{}", mac.replace(':', "")),
            (None, None) => format!("interface-{i}"),
        };
        let parent = links.len();
        links.push(planned(
            stem.clone(),
            name.clone(),
            Match::Physical {
                name: name.clone(),
                mac,
            },
            interface.link(),
        ));
        fields.push(field.clone());
        check.at_most(&format!("{field}.vlans"), &interface.vlans, MAX_VLANS);
        vlan_count += interface.vlans.len();
        let mut ids = BTreeSet::new();
        for (v, vlan) in interface.vlans.iter().enumerate() {
            let vfield = format!("{field}.vlans[{v}]");
            if !(1..=4094).contains(&vlan.id) {
                check.problem(
                    format!("{vfield}.id"),
                    format!("a VLAN id is 1–4094, not {}", vlan.id),
                );
            } else if !ids.insert(vlan.id) {
                check.problem(
                    format!("{vfield}.id"),
                    format!("VLAN {} is listed twice on this interface", vlan.id),
                );
            }
            // The device is `<parent>.<id>` when the parent has a name that
            // leaves room, else `vlan<id>`.
            let device = match &name {
                Some(parent) if parent.len() + 1 + vlan.id.to_string().len() <= IFNAME_MAX => {
                    format!("{parent}.{}", vlan.id)
                }
                _ => format!("vlan{}", vlan.id),
            };
            if !names.insert(device.clone()) {
                check.problem(
                    format!("{vfield}.id"),
                    format!("the VLAN device {device} exists twice"),
                );
            }
            links[parent].vlans.push(device.clone());
            links.push(planned(
                device.clone(),
                Some(device),
                Match::Vlan {
                    parent,
                    id: vlan.id,
                },
                vlan.link(),
            ));
            fields.push(vfield);
        }
    }
    if vlan_count > MAX_VLANS {
        check.problem("interfaces", format!("at most {MAX_VLANS} VLANs in all"));
    }

    // Addresses and MTUs, per link; then across links.
    let mut seen: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (link, field) in links.iter().zip(&fields) {
        check.at_most(
            &format!("{field}.addresses"),
            &link.addresses,
            MAX_ADDRESSES,
        );
        for (a, net) in link.addresses.iter().enumerate() {
            let afield = format!("{field}.addresses[{a}]");
            let ip = net.addr();
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                check.problem(&afield, format!("{ip} cannot be an interface address"));
            } else if let IpNet::V4(v4) = net
                && v4.prefix_len() < 31
                && (v4.addr() == v4.network() || v4.addr() == v4.broadcast())
            {
                check.problem(
                    &afield,
                    format!("{ip} is the network's own or broadcast address, not a host's"),
                );
            } else if let Some(other) = seen.insert(ip, afield.clone()) {
                check.problem(&afield, format!("{ip} is already at {other}"));
            }
        }
        if let Some(mtu) = link.mtu {
            let has_v6 = link.slaac || link.addresses.iter().any(|n| n.addr().is_ipv6());
            let min = if has_v6 { MTU_MIN_IPV6 } else { MTU_MIN };
            if !(min..=MTU_MAX).contains(&mtu) {
                check.problem(
                    format!("{field}.mtu"),
                    format!(
                        "an MTU of {min}–{MTU_MAX}{}",
                        if has_v6 { " (IPv6 needs 1280)" } else { "" }
                    ),
                );
            }
        }
    }
    for (i, a) in links.iter().enumerate() {
        for (j, b) in links.iter().enumerate().skip(i + 1) {
            for x in &a.addresses {
                for (k, y) in b.addresses.iter().enumerate() {
                    let (x, y) = (x.trunc(), y.trunc());
                    if x.contains(&y) || y.contains(&x) {
                        check.problem(
                            format!("{}.addresses[{k}]", fields[j]),
                            format!(
                                "subnet {y} overlaps {x} of {} ({}): a subnet belongs to one link",
                                a.stem, fields[i]
                            ),
                        );
                    }
                }
            }
        }
    }

    // Gateways and routes: each goes to the link whose subnet holds it.
    let on_link = |ip: IpAddr| -> Option<usize> {
        links
            .iter()
            .position(|link| link.addresses.iter().any(|net| net.trunc().contains(&ip)))
    };
    let v6_links: Vec<usize> = links
        .iter()
        .enumerate()
        .filter(|(_, l)| l.slaac || l.addresses.iter().any(|n| n.addr().is_ipv6()))
        .map(|(i, _)| i)
        .collect();
    let attach = |check: &mut Checker, field: &str, ip: IpAddr| -> Option<usize> {
        if let Some(link) = on_link(ip) {
            return Some(link);
        }
        if let IpAddr::V6(v6) = ip
            && v6.is_unicast_link_local()
        {
            return match v6_links.as_slice() {
                [only] => Some(*only),
                _ => {
                    check.problem(
                        field,
                        "a link-local gateway needs exactly one interface with IPv6",
                    );
                    None
                }
            };
        }
        check.problem(
            field,
            format!(
                "{ip} is in no interface's static subnet: add an address whose subnet holds it"
            ),
        );
        None
    };
    let mut gateways = Vec::new();
    if let Some(gw) = settings.gateway4 {
        let ip = IpAddr::V4(gw);
        if let Some(link) = attach(&mut check, "gateway4", ip) {
            gateways.push((link, ip));
        }
    }
    if let Some(gw) = settings.gateway6 {
        let ip = IpAddr::V6(gw);
        if let Some(link) = attach(&mut check, "gateway6", ip) {
            gateways.push((link, ip));
        }
    }
    check.at_most("routes", &settings.routes, MAX_ROUTES);
    let mut routes = Vec::new();
    for (r, route) in settings.routes.iter().enumerate() {
        let field = format!("routes[{r}]");
        if route.destination.addr().is_ipv4() != route.via.is_ipv4() {
            check.problem(
                format!("{field}.via"),
                "the gateway and the destination are of different IP versions",
            );
            continue;
        }
        if let Some(link) = attach(&mut check, &format!("{field}.via"), route.via) {
            routes.push((link, route.destination.trunc(), route.via));
        }
    }
    for (link, ip) in gateways {
        links[link].gateways.push(ip);
    }
    for (link, destination, via) in routes {
        links[link].routes.push((destination, via));
    }

    check.at_most("dns_servers", &settings.dns_servers, MAX_SERVERS);
    for (d, server) in settings.dns_servers.iter().enumerate() {
        if server.is_unspecified() || server.is_multicast() {
            check.problem(
                format!("dns_servers[{d}]"),
                format!("{server} is not a resolver's address"),
            );
        }
    }
    check.at_most(
        "search_domains",
        &settings.search_domains,
        MAX_SEARCH_DOMAINS,
    );
    for (d, domain) in settings.search_domains.iter().enumerate() {
        if !valid_hostname(domain) {
            check.problem(
                format!("search_domains[{d}]"),
                "a domain name such as contoso.com",
            );
        }
    }
    check.at_most("ntp_servers", &settings.ntp_servers, MAX_SERVERS);
    for (n, server) in settings.ntp_servers.iter().enumerate() {
        if server.parse::<IpAddr>().is_err() && !valid_hostname(server) {
            check.problem(format!("ntp_servers[{n}]"), "a host name or an IP address");
        }
    }
    if let Some(zone) = &settings.timezone
        && !(valid_zone_name(zone) && zone_exists(zone))
    {
        check.problem(
            "timezone",
            format!("{zone:?} is no time zone this appliance knows (e.g. Europe/Berlin, UTC)"),
        );
    }

    if !check.problems.is_empty() {
        return Err(check.problems);
    }
    Ok(Plan {
        hostname: settings.hostname.clone(),
        links,
        dns_servers: settings.dns_servers.clone(),
        search_domains: settings.search_domains.clone(),
        ntp_servers: settings.ntp_servers.clone(),
        timezone: settings.timezone.clone(),
    })
}

fn planned(stem: String, device: Option<String>, matched: Match, link: Link<'_>) -> PlannedLink {
    PlannedLink {
        stem,
        device,
        matched,
        dhcp4: link.dhcp4,
        addresses: link.addresses.to_vec(),
        slaac: link.slaac,
        mtu: link.mtu,
        gateways: Vec::new(),
        routes: Vec::new(),
        vlans: Vec::new(),
    }
}
