//! The VRRP settings of this appliance as the admin writes them (JSON
//! through `PUT /api/v1/ha/vrrp`, kept in the settings store beside the
//! network settings): they belong to one appliance and are never shared
//! with the peer (each names its own source and the other's address). The
//! VIP set is not here: it comes from the pool config (`net::addresses`).
//!
//! [`validate`] is the one place that says whether settings can be
//! rendered; every problem names its field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::web::FieldProblem;

/// Advertisement interval bounds, seconds (VRRPv3 allows up to 40.95 s;
/// failover takes about three intervals, so more than 10 s is no HA).
pub(crate) const MAX_ADVERT_INTERVAL_S: u8 = 10;

/// How this appliance takes part in the pair's VRRP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VrrpSettings {
    /// The interface the adverts go out on and the management address is
    /// held on (the VIPs go on the interface `net::addresses` places them on).
    pub interface: String,
    /// This appliance's own IPv4 address the adverts are sent from.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub source_v4: Option<Ipv4Addr>,
    /// The peer's IPv4 address: adverts go to it, and only its are accepted.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub peer_v4: Option<Ipv4Addr>,
    /// This appliance's own IPv6 address, needed when a VIP is IPv6
    /// (VRRPv3 runs one instance per family).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub source_v6: Option<Ipv6Addr>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub peer_v6: Option<Ipv6Addr>,
    /// 1–255, the same on both appliances and unique on the link.
    pub virtual_router_id: u8,
    /// 1–254; the higher one becomes master when both start.
    pub priority: u8,
    /// Seconds between adverts, 1–10 (default 1).
    #[serde(default = "default_advert_interval")]
    pub advert_interval_s: u8,
    /// Take the addresses back from a lower-priority master once this one
    /// is up again (default off: failback is the admin's decision).
    #[serde(default)]
    pub preempt: bool,
    /// An address the pair's active appliance holds for administration.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub management_address: Option<IpAddr>,
}

fn default_advert_interval() -> u8 {
    1
}

fn problem(field: &str, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.to_owned(),
        message: message.into(),
        line: None,
        column: None,
    }
}

/// A Linux interface name: 1–15 bytes, no `/`, whitespace or `:`.
fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `ip` can be one end of a unicast VRRP exchange.
fn unicast(ip: IpAddr) -> bool {
    let special = ip.is_unspecified() || ip.is_loopback() || ip.is_multicast();
    let v4_broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !special && !v4_broadcast
}

fn check_pair(
    out: &mut Vec<FieldProblem>,
    family: &str,
    source: Option<IpAddr>,
    peer: Option<IpAddr>,
) {
    let (source_field, peer_field) = (format!("source_{family}"), format!("peer_{family}"));
    match (source, peer) {
        (Some(_), None) => out.push(problem(
            &peer_field,
            format!("required with {source_field}: the peer's address"),
        )),
        (None, Some(_)) => out.push(problem(
            &source_field,
            format!("required with {peer_field}: this appliance's own address"),
        )),
        (Some(source), Some(peer)) => {
            for (field, ip) in [(&source_field, source), (&peer_field, peer)] {
                if !unicast(ip) {
                    out.push(problem(
                        field,
                        format!("{ip} is not a unicast address of a host"),
                    ));
                }
            }
            if source == peer {
                out.push(problem(
                    &peer_field,
                    "the peer's address must differ from this appliance's",
                ));
            }
        }
        (None, None) => {}
    }
}

/// Every problem of `settings`, by field; empty when they can be rendered.
pub(crate) fn validate(settings: &VrrpSettings) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    if !valid_interface(&settings.interface) {
        out.push(problem(
            "interface",
            "an interface name: 1 to 15 letters, digits, '-', '_' or '.'",
        ));
    }
    check_pair(
        &mut out,
        "v4",
        settings.source_v4.map(IpAddr::V4),
        settings.peer_v4.map(IpAddr::V4),
    );
    check_pair(
        &mut out,
        "v6",
        settings.source_v6.map(IpAddr::V6),
        settings.peer_v6.map(IpAddr::V6),
    );
    if settings.source_v4.is_none()
        && settings.peer_v4.is_none()
        && settings.source_v6.is_none()
        && settings.peer_v6.is_none()
    {
        out.push(problem(
            "source_v4",
            "set source_v4 and peer_v4 (or source_v6 and peer_v6): VRRP runs in unicast between the two appliances",
        ));
    }
    if settings.virtual_router_id == 0 {
        out.push(problem("virtual_router_id", "from 1 to 255"));
    }
    if settings.priority == 0 || settings.priority == 255 {
        out.push(problem(
            "priority",
            "from 1 to 254 (255 is for the owner of the addresses, which neither appliance is)",
        ));
    }
    if settings.advert_interval_s == 0 || settings.advert_interval_s > MAX_ADVERT_INTERVAL_S {
        out.push(problem(
            "advert_interval_s",
            format!("from 1 to {MAX_ADVERT_INTERVAL_S} seconds"),
        ));
    }
    if let Some(ip) = settings.management_address {
        let pair = match ip {
            IpAddr::V4(_) => settings.source_v4.is_some(),
            IpAddr::V6(_) => settings.source_v6.is_some(),
        };
        if !unicast(ip) || matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
            out.push(problem(
                "management_address",
                format!("{ip} is not an address a client can reach"),
            ));
        } else if !pair {
            let family = if ip.is_ipv4() { "v4" } else { "v6" };
            out.push(problem(
                "management_address",
                format!("an {ip} address needs source_{family} and peer_{family}"),
            ));
        } else if [
            settings.source_v4.map(IpAddr::V4),
            settings.peer_v4.map(IpAddr::V4),
            settings.source_v6.map(IpAddr::V6),
            settings.peer_v6.map(IpAddr::V6),
        ]
        .contains(&Some(ip))
        {
            out.push(problem(
                "management_address",
                "a shared address of its own, not one of the appliances'",
            ));
        }
    }
    out
}
