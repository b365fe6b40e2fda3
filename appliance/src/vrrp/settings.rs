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

/// Advertisement interval bounds, centiseconds (VRRPv3 counts in
/// centiseconds up to 40.95 s; failover takes about three intervals, so
/// more than 10 s is no HA, and under 0.1 s a busy host misses adverts).
pub(crate) const MIN_ADVERT_INTERVAL_CS: u16 = 10;
pub(crate) const MAX_ADVERT_INTERVAL_CS: u16 = 1000;
/// The default: 0.5 s, so a lost master is replaced within 3 s (three
/// adverts and the skew: about 1.7 s; decision 1000 has the figures).
pub(crate) const DEFAULT_ADVERT_INTERVAL_CS: u16 = 50;

/// The advert interval: seconds in JSON (`0.5`, `1`), centiseconds inside,
/// as VRRPv3 carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertInterval(pub u16);

impl AdvertInterval {
    /// As keepalived's `advert_int` takes it: seconds, at most two decimals.
    pub(crate) fn keepalived(self) -> String {
        let (s, cs) = (self.0 / 100, self.0 % 100);
        match cs {
            0 => s.to_string(),
            cs if cs % 10 == 0 => format!("{s}.{}", cs / 10),
            cs => format!("{s}.{cs:02}"),
        }
    }
}

impl Serialize for AdvertInterval {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(100) {
            serializer.serialize_u16(self.0 / 100)
        } else {
            serializer.serialize_f64(f64::from(self.0) / 100.0)
        }
    }
}

impl<'de> Deserialize<'de> for AdvertInterval {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        let cs = (seconds * 100.0).round();
        if !seconds.is_finite()
            || (seconds * 100.0 - cs).abs() > 1e-6
            || !(0.0..=65535.0).contains(&cs)
        {
            return Err(serde::de::Error::custom(
                "seconds from 0.1 to 10 in steps of 0.01 (VRRPv3 counts centiseconds)",
            ));
        }
        Ok(Self(cs as u16))
    }
}

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
    /// Seconds between adverts, 0.1–10 in steps of 0.01 (default 0.5).
    #[serde(default = "default_advert_interval")]
    #[schema(value_type = f64)]
    pub advert_interval_s: AdvertInterval,
    /// Take the addresses back from a lower-priority master once this one
    /// is up again (default off: failback is the admin's decision).
    #[serde(default)]
    pub preempt: bool,
    /// An address the pair's active appliance holds for administration.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub management_address: Option<IpAddr>,
}

fn default_advert_interval() -> AdvertInterval {
    AdvertInterval(DEFAULT_ADVERT_INTERVAL_CS)
}

impl VrrpSettings {
    /// The advert interval in centiseconds.
    pub(crate) fn advert_interval_cs(&self) -> u16 {
        self.advert_interval_s.0
    }
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
    if !(MIN_ADVERT_INTERVAL_CS..=MAX_ADVERT_INTERVAL_CS).contains(&settings.advert_interval_cs()) {
        out.push(problem(
            "advert_interval_s",
            "from 0.1 to 10 seconds, in steps of 0.01",
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
