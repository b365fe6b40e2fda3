//! The appliance's network settings as the admin writes them (JSON through
//! the API, the settings store), kept apart from the pool config: an HA peer
//! shares the pool config but never these. Nothing here is checked yet;
//! `validate` is the one place that says whether settings can be applied.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Everything about the appliance's own network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// The appliance's host name (RFC 1123); `None` keeps the image's.
    #[serde(default)]
    pub hostname: Option<String>,
    /// One entry per interface the appliance configures; an interface not
    /// listed keeps the image's default (DHCPv4 and SLAAC).
    #[serde(default)]
    pub interfaces: Vec<InterfaceSettings>,
    /// The IPv4 default gateway: inside a static subnet of one interface.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub gateway4: Option<Ipv4Addr>,
    /// The IPv6 default gateway: inside a static subnet, or link-local when
    /// exactly one interface has IPv6.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub gateway6: Option<Ipv6Addr>,
    #[serde(default)]
    pub routes: Vec<RouteSettings>,
    /// DNS resolvers the appliance itself uses.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub dns_servers: Vec<IpAddr>,
    #[serde(default)]
    pub search_domains: Vec<String>,
    /// NTP servers (host names or addresses) chrony follows.
    #[serde(default)]
    pub ntp_servers: Vec<String>,
    /// An IANA time zone such as `Europe/Berlin`; `None` is UTC.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// One interface, matched by name, by MAC address, or by both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSettings {
    #[serde(default)]
    pub name: Option<String>,
    /// `aa:bb:cc:dd:ee:ff`.
    #[serde(default)]
    pub mac: Option<String>,
    /// Take an IPv4 address by DHCP (beside any static ones).
    #[serde(default)]
    pub dhcp4: bool,
    /// Static IPv4 and IPv6 addresses with their prefix, `198.51.100.10/24`.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub addresses: Vec<IpNet>,
    /// Accept IPv6 router advertisements (SLAAC).
    #[serde(default = "yes")]
    pub slaac: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// 802.1Q sub-interfaces on this one.
    #[serde(default)]
    pub vlans: Vec<VlanSettings>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VlanSettings {
    /// The VLAN id, 1–4094.
    pub id: u16,
    #[serde(default)]
    pub dhcp4: bool,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub addresses: Vec<IpNet>,
    #[serde(default = "yes")]
    pub slaac: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// What an interface or a VLAN carries, whichever it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link<'a> {
    pub dhcp4: bool,
    pub addresses: &'a [IpNet],
    pub slaac: bool,
    pub mtu: Option<u32>,
}

impl InterfaceSettings {
    pub(crate) fn link(&self) -> Link<'_> {
        Link {
            dhcp4: self.dhcp4,
            addresses: &self.addresses,
            slaac: self.slaac,
            mtu: self.mtu,
        }
    }
}

impl VlanSettings {
    pub(crate) fn link(&self) -> Link<'_> {
        Link {
            dhcp4: self.dhcp4,
            addresses: &self.addresses,
            slaac: self.slaac,
            mtu: self.mtu,
        }
    }
}

/// A static route through a gateway inside one of the static subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    #[schema(value_type = String)]
    pub destination: IpNet,
    #[schema(value_type = String)]
    pub via: IpAddr,
}
