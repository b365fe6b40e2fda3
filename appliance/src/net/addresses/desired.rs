//! The pure half of address ownership: which addresses poolgate must hold,
//! on which interface, given the config and the host's interfaces; and the
//! steps that take the host from what it has to that. No sockets, no
//! clocks: the applier (`netlink`) reads the host and carries the steps out.
//!
//! Rules:
//! * A candidate is every virtual service address and every DNS, SIP and
//!   admin listen address. Wildcard, loopback, multicast and IPv6
//!   link-local addresses are never added.
//! * An address the host already has and poolgate did not add (the
//!   appliance's own interface address) is left alone.
//! * Otherwise it goes on the interface the service names (`interface`), or
//!   on the interface with the longest prefix of the host's own subnets
//!   that contains it. Neither: a problem naming the field.
//! * An address poolgate added that no candidate wants any more is removed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::{Config, FieldError, path::FieldPath};

/// One interface of the host as the applier read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostInterface {
    pub name: String,
    pub index: u32,
    /// The Ethernet address, for announcements; `None` on links without one.
    pub mac: Option<[u8; 6]>,
    pub addresses: Vec<HostAddress>,
}

/// One address on a host interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostAddress {
    pub ip: IpAddr,
    pub prefix_len: u8,
    /// Added by poolgate (it marks its addresses, see `netlink`).
    pub ours: bool,
}

/// An address poolgate must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub interface: String,
    /// What uses it, for events: `virtual service web`, `admin listener`.
    pub users: Vec<String>,
}

/// What the config asks of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Desired {
    pub wanted: BTreeMap<IpAddr, Wanted>,
    /// Addresses that cannot be placed, by the field that holds them.
    pub problems: Vec<FieldError>,
}

/// One change to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Add { ip: IpAddr, interface: String },
    Remove { ip: IpAddr, interface: String },
}

/// Whether poolgate would ever add `ip` to an interface.
pub(crate) fn is_candidate(ip: IpAddr) -> bool {
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_broadcast(),
        IpAddr::V6(v6) => !v6.is_unicast_link_local() && v6.to_ipv4_mapped().is_none(),
    }
}

struct Candidate {
    ip: IpAddr,
    user: String,
    interface: Option<String>,
    /// The field of the address, and of the interface when one is named.
    address_path: FieldPath,
    interface_path: Option<FieldPath>,
}

fn candidates(config: &Config) -> Vec<Candidate> {
    let listen = FieldPath::root().key("listen");
    let plain = |ip: IpAddr, path: FieldPath, user: &str| Candidate {
        ip,
        user: user.to_owned(),
        interface: None,
        address_path: path,
        interface_path: None,
    };
    let mut out = vec![plain(
        config.listen.admin.ip(),
        listen.key("admin"),
        "admin listener",
    )];
    for (i, address) in config.listen.dns.iter().enumerate() {
        out.push(plain(
            address.ip(),
            listen.key("dns").index(i),
            "DNS listener",
        ));
    }
    for (key, address, user) in [
        ("sip_udp", config.listen.sip_udp, "SIP UDP listener"),
        ("sip_tcp", config.listen.sip_tcp, "SIP TCP listener"),
        ("sip_tls", config.listen.sip_tls, "SIP TLS listener"),
    ] {
        if let Some(address) = address {
            out.push(plain(address.ip(), listen.key(key), user));
        }
    }
    for (i, vs) in config.virtual_services.iter().enumerate() {
        let path = FieldPath::root().item("virtual_service", i);
        out.push(Candidate {
            ip: vs.address,
            user: format!("virtual service {}", vs.name),
            interface: vs.interface.clone(),
            address_path: path.key("address"),
            interface_path: vs.interface.as_ref().map(|_| path.key("interface")),
        });
    }
    out.retain(|candidate| is_candidate(candidate.ip));
    out
}

fn contains(network: IpAddr, prefix_len: u8, ip: IpAddr) -> bool {
    match (network, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) if prefix_len <= 32 => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) if prefix_len <= 128 => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

fn names(host: &[HostInterface]) -> String {
    let names: Vec<&str> = host.iter().map(|i| i.name.as_str()).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// The addresses `config` needs poolgate to hold on `host`.
pub(crate) fn desired(config: &Config, host: &[HostInterface]) -> Desired {
    let mut out = Desired::default();
    for candidate in candidates(config) {
        let ip = candidate.ip;
        // A named interface must exist even when the address is there
        // already: the config must stand on a host that lacks it.
        if let (Some(name), Some(path)) = (&candidate.interface, &candidate.interface_path)
            && !host.iter().any(|i| &i.name == name)
        {
            out.problems.push(FieldError {
                path: path.clone(),
                message: format!(
                    "this appliance has no interface {name:?} (it has: {})",
                    names(host)
                ),
            });
            continue;
        }
        let theirs = host
            .iter()
            .flat_map(|i| &i.addresses)
            .any(|a| a.ip == ip && !a.ours);
        if theirs {
            continue;
        }
        let interface = match &candidate.interface {
            Some(name) => name.clone(),
            _ => {
                let best = host
                    .iter()
                    .flat_map(|i| i.addresses.iter().map(move |a| (i, a)))
                    .filter(|(_, a)| !a.ours && contains(a.ip, a.prefix_len, ip))
                    .max_by_key(|(_, a)| a.prefix_len);
                match best {
                    Some((interface, _)) => interface.name.clone(),
                    None => {
                        let hint = if candidate.address_path.to_string().starts_with("listen") {
                            "use an address of the appliance or one in the subnet of one of its interfaces"
                        } else {
                            "use an address in the subnet of one of its interfaces, or name the interface with `interface`"
                        };
                        out.problems.push(FieldError {
                            path: candidate.address_path.clone(),
                            message: format!(
                                "{ip} is neither on this appliance nor in the subnet of any of its interfaces ({}); {hint}",
                                names(host)
                            ),
                        });
                        continue;
                    }
                }
            }
        };
        let user = candidate.user.clone();
        match out.wanted.get_mut(&ip) {
            Some(wanted) if wanted.interface != interface => {
                out.problems.push(FieldError {
                    path: candidate
                        .interface_path
                        .unwrap_or(candidate.address_path),
                    message: format!(
                        "{ip} is already placed on {} by {}; one address can be on one interface only",
                        wanted.interface,
                        wanted.users.join(", ")
                    ),
                });
            }
            Some(wanted) => wanted.users.push(user),
            None => {
                out.wanted.insert(
                    ip,
                    Wanted {
                        interface,
                        users: vec![user],
                    },
                );
            }
        }
    }
    out
}

/// The problems `config` would have on `host`: what a config PUT or
/// preview answers with 422.
pub(crate) fn check(config: &Config, host: &[HostInterface]) -> Vec<FieldError> {
    desired(config, host).problems
}

/// The steps that make `host` hold exactly the wanted addresses of
/// `desired` (and nothing else of poolgate's): removals first, so an
/// address moving to another interface is never on two at once.
pub(crate) fn plan(desired: &Desired, host: &[HostInterface]) -> Vec<Step> {
    let mut removes = Vec::new();
    for interface in host {
        for address in interface.addresses.iter().filter(|a| a.ours) {
            let keep = desired
                .wanted
                .get(&address.ip)
                .is_some_and(|wanted| wanted.interface == interface.name);
            if !keep {
                removes.push(Step::Remove {
                    ip: address.ip,
                    interface: interface.name.clone(),
                });
            }
        }
    }
    let mut adds = Vec::new();
    for (ip, wanted) in &desired.wanted {
        let present = host.iter().any(|interface| {
            interface.name == wanted.interface
                && interface.addresses.iter().any(|a| a.ip == *ip && a.ours)
        });
        if !present {
            adds.push(Step::Add {
                ip: *ip,
                interface: wanted.interface.clone(),
            });
        }
    }
    removes.extend(adds);
    removes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<HostInterface> {
        let addr = |ip: &str, prefix_len, ours| HostAddress {
            ip: ip.parse().expect("test address"),
            prefix_len,
            ours,
        };
        vec![
            HostInterface {
                name: "lo".into(),
                index: 1,
                mac: None,
                addresses: vec![addr("127.0.0.1", 8, false), addr("::1", 128, false)],
            },
            HostInterface {
                name: "eth0".into(),
                index: 2,
                mac: Some([2, 0, 0, 0, 0, 1]),
                addresses: vec![
                    addr("198.51.100.10", 24, false),
                    addr("2001:db8:100::10", 64, false),
                    addr("198.51.100.30", 32, true),
                ],
            },
            HostInterface {
                name: "eth1".into(),
                index: 3,
                mac: Some([2, 0, 0, 0, 0, 2]),
                addresses: vec![
                    addr("203.0.113.10", 24, false),
                    addr("198.51.0.1", 16, false),
                ],
            },
        ]
    }

    fn config(admin: &str, services: &[(&str, Option<&str>)]) -> Config {
        let mut toml = format!("[listen]\nadmin = \"{admin}\"\n");
        toml.push_str(
            "[[zone]]\nname = \"example.test\"\n[[monitor]]\nname = \"m\"\ntype = \"tcp\"\n[[pool]]\nname = \"p\"\nfqdn = \"p.example.test\"\nmonitor = \"m\"\n[[pool.member]]\nname = \"a\"\naddress = \"192.0.2.1\"\n",
        );
        for (i, (address, interface)) in services.iter().enumerate() {
            toml.push_str(&format!(
                "[[virtual_service]]\nname = \"vs{i}\"\naddress = \"{address}\"\nport = {}\npool = \"p\"\n",
                1000 + i
            ));
            if let Some(interface) = interface {
                toml.push_str(&format!("interface = \"{interface}\"\n"));
            }
        }
        crate::config::from_toml(&toml, "test").expect("test config is valid")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn places_by_longest_prefix_and_skips_what_the_host_has() {
        let cfg = config(
            "198.51.100.10:8443",
            &[
                ("198.51.100.20", None),
                ("2001:db8:100::20", None),
                ("203.0.113.5", None),
                ("127.0.0.1", None),
                ("0.0.0.0", None),
            ],
        );
        let desired = desired(&cfg, &host());
        assert!(desired.problems.is_empty(), "{:?}", desired.problems);
        let placed: Vec<(IpAddr, &str)> = desired
            .wanted
            .iter()
            .map(|(ip, w)| (*ip, w.interface.as_str()))
            .collect();
        // 198.51.100.20 is in eth0's /24 and eth1's /16: the /24 wins.
        assert_eq!(
            placed,
            vec![
                (ip("198.51.100.20"), "eth0"),
                (ip("203.0.113.5"), "eth1"),
                (ip("2001:db8:100::20"), "eth0"),
            ]
        );
    }

    #[test]
    fn a_named_interface_wins_and_must_exist() {
        let cfg = config(
            "127.0.0.1:8443",
            &[("192.0.2.50", Some("eth1")), ("192.0.2.51", Some("eth9"))],
        );
        let desired = desired(&cfg, &host());
        assert_eq!(desired.wanted[&ip("192.0.2.50")].interface, "eth1");
        assert_eq!(desired.problems.len(), 1);
        assert_eq!(
            desired.problems[0].path.to_string(),
            "virtual_service[1].interface"
        );
        assert!(desired.problems[0].message.contains("eth0, eth1"));
    }

    #[test]
    fn an_address_in_no_subnet_names_its_field() {
        let cfg = config("192.0.2.9:8443", &[("192.0.2.50", None)]);
        let problems = check(&cfg, &host());
        let paths: Vec<String> = problems.iter().map(|p| p.path.to_string()).collect();
        assert_eq!(paths, vec!["listen.admin", "virtual_service[0].address"]);
        assert!(problems[1].message.contains("`interface`"));
    }

    #[test]
    fn a_named_interface_must_exist_even_for_an_address_on_the_host() {
        let cfg = config("127.0.0.1:8443", &[("198.51.100.10", Some("eth9"))]);
        let problems = check(&cfg, &host());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path.to_string(), "virtual_service[0].interface");
    }

    #[test]
    fn one_address_on_two_interfaces_is_a_problem() {
        let cfg = config(
            "127.0.0.1:8443",
            &[("192.0.2.50", Some("eth0")), ("192.0.2.50", Some("eth1"))],
        );
        let problems = check(&cfg, &host());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path.to_string(), "virtual_service[1].interface");
    }

    #[test]
    fn shared_addresses_are_wanted_once() {
        let cfg = config(
            "198.51.100.20:8443",
            &[("198.51.100.20", None), ("198.51.100.20", None)],
        );
        let desired = desired(&cfg, &host());
        assert_eq!(desired.wanted.len(), 1);
        assert_eq!(
            desired.wanted[&ip("198.51.100.20")].users,
            vec![
                "admin listener",
                "virtual service vs0",
                "virtual service vs1"
            ]
        );
    }

    #[test]
    fn plan_adds_missing_removes_unused_and_keeps_the_rest() {
        let host = host();
        // 198.51.100.30 is ours on eth0 and still wanted: kept.
        let cfg = config(
            "127.0.0.1:8443",
            &[("198.51.100.30", None), ("198.51.100.20", None)],
        );
        let steps = plan(&desired(&cfg, &host), &host);
        assert_eq!(
            steps,
            vec![Step::Add {
                ip: ip("198.51.100.20"),
                interface: "eth0".into()
            }]
        );
        // Nothing wanted: ours goes, theirs stays.
        let empty = config("127.0.0.1:8443", &[]);
        let steps = plan(&desired(&empty, &host), &host);
        assert_eq!(
            steps,
            vec![Step::Remove {
                ip: ip("198.51.100.30"),
                interface: "eth0".into()
            }]
        );
    }

    #[test]
    fn plan_moves_an_address_remove_first() {
        let host = host();
        let cfg = config("127.0.0.1:8443", &[("198.51.100.30", Some("eth1"))]);
        let steps = plan(&desired(&cfg, &host), &host);
        assert_eq!(
            steps,
            vec![
                Step::Remove {
                    ip: ip("198.51.100.30"),
                    interface: "eth0".into()
                },
                Step::Add {
                    ip: ip("198.51.100.30"),
                    interface: "eth1".into()
                },
            ]
        );
    }

    #[test]
    fn plan_then_apply_reaches_the_target() {
        let mut host = host();
        let cfg = config(
            "127.0.0.1:8443",
            &[
                ("198.51.100.20", None),
                ("2001:db8:100::20", None),
                ("192.0.2.1", Some("eth1")),
            ],
        );
        let target = desired(&cfg, &host);
        for step in plan(&target, &host) {
            match step {
                Step::Add { ip, interface } => {
                    let i = host
                        .iter_mut()
                        .find(|i| i.name == interface)
                        .expect("known");
                    i.addresses.push(HostAddress {
                        ip,
                        prefix_len: 32,
                        ours: true,
                    });
                }
                Step::Remove { ip, interface } => {
                    let i = host
                        .iter_mut()
                        .find(|i| i.name == interface)
                        .expect("known");
                    i.addresses.retain(|a| a.ip != ip);
                }
            }
        }
        assert!(plan(&desired(&cfg, &host), &host).is_empty());
        assert_eq!(desired(&cfg, &host).wanted, target.wanted);
    }

    #[test]
    fn candidates_exclude_what_is_never_added() {
        for text in [
            "0.0.0.0",
            "::",
            "127.0.0.5",
            "::1",
            "fe80::1",
            "224.0.0.1",
            "255.255.255.255",
            "::ffff:192.0.2.1",
        ] {
            assert!(!is_candidate(ip(text)), "{text}");
        }
        assert!(is_candidate(ip("198.51.100.20")));
        assert!(is_candidate(ip("2001:db8::20")));
    }
}
