//! The config file schema exactly as users write it (TOML, or JSON through
//! the API). Every table denies unknown keys so a typo is an error rather than
//! a silently ignored setting. Addresses stay strings here: the validator
//! parses them so that a bad one is reported with the field that holds it.
//!
//! Serialising a `ConfigFile` gives TOML that parses back to an equal value;
//! `poolgate export` relies on that.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: ListenFile,
    #[serde(default)]
    pub dns: DnsFile,
    #[serde(default, skip_serializing_if = "SipFile::is_default")]
    pub sip: SipFile,
    #[serde(default, rename = "zone", skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneFile>,
    #[serde(default, rename = "monitor", skip_serializing_if = "Vec::is_empty")]
    pub monitors: Vec<MonitorFile>,
    #[serde(default, rename = "pool", skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolFile>,
    #[serde(
        default,
        rename = "virtual_service",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub virtual_services: Vec<VirtualServiceFile>,
}

/// `[listen]`: where poolgate's own services listen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    pub admin: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_udp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_tcp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_tls: Option<String>,
}

/// `[dns]`: answers built from health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    #[serde(default = "default_dns_ttl")]
    pub ttl: u32,
    #[serde(default = "default_true")]
    pub fail_open: bool,
    /// Response-rate limit over UDP: answers per second per source /24
    /// (IPv4) or /56 (IPv6), with a burst of as many; 0 turns it off.
    #[serde(
        default = "default_dns_rrl_rate",
        skip_serializing_if = "is_default_dns_rrl_rate"
    )]
    pub rrl_rate: u32,
    /// Over the rate, every `rrl_slip`-th answer is sent empty with TC set
    /// (the client retries over TCP) and the others dropped; 0 drops all.
    #[serde(
        default = "default_dns_rrl_slip",
        skip_serializing_if = "is_default_dns_rrl_slip"
    )]
    pub rrl_slip: u32,
}

impl Default for DnsFile {
    fn default() -> Self {
        Self {
            ttl: default_dns_ttl(),
            fail_open: true,
            rrl_rate: default_dns_rrl_rate(),
            rrl_slip: default_dns_rrl_slip(),
        }
    }
}

/// `[sip]`: the redirect service's limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SipFile {
    /// SIP requests over UDP answered per second per source /24 (IPv4) or
    /// /56 (IPv6), with a burst of as many; beyond it they are dropped.
    /// 0 turns the limit off.
    #[serde(default = "default_sip_udp_rate")]
    pub udp_rate: u32,
    /// Users (addresses-of-record of REGISTERs) remembered for the
    /// registrar what-if; past it the least recently seen are forgotten.
    #[serde(default = "default_seen_users_max")]
    pub seen_users_max: u32,
    /// A user not seen for this many days is forgotten.
    #[serde(default = "default_seen_users_max_age_days")]
    pub seen_users_max_age_days: u32,
}

impl Default for SipFile {
    fn default() -> Self {
        Self {
            udp_rate: default_sip_udp_rate(),
            seen_users_max: default_seen_users_max(),
            seen_users_max_age_days: default_seen_users_max_age_days(),
        }
    }
}

impl SipFile {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `[[zone]]`: an authoritative zone; SOA and NS are synthesised from its
/// name servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneFile {
    pub name: String,
    /// TTL for static records that do not carry their own, and for the
    /// zone's SOA, NS and name-server addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// How long resolvers cache a negative answer (NXDOMAIN, NODATA) from
    /// this zone: the SOA minimum (RFC 2308). Defaults to `dns.ttl`, so a
    /// name that comes back is seen as soon as a changed positive answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_ttl: Option<u32>,
    /// The zone's name servers: NS records, the SOA primary (the first) and,
    /// for names in the zone, their A/AAAA (also given as glue with NS
    /// answers). None named: one, `ns.<zone>`, at the DNS listener's own
    /// addresses (refused if a `listen.dns` address is a wildcard).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_servers: Vec<NameServerFile>,
    #[serde(default, rename = "record", skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<RecordFile>,
}

/// `zone.name_servers[]`: one name server of a zone, e.g.
/// `{ name = "ns1.pool01.contoso.com", addresses = ["192.0.2.10"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameServerFile {
    /// Fully qualified (a trailing dot is optional).
    pub name: String,
    /// IPv4 and IPv6 addresses: the appliance's own (and its HA peer's).
    /// Required for a name in or under the zone; optional for a name server
    /// outside it (its own zone gives its addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// `[[zone.record]]`: a static record, its name relative to the zone unless it
/// ends with a dot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordFile {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: RecordType,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordType {
    A,
    Aaaa,
    Cname,
    Srv,
    Txt,
}

/// `[[monitor]]`: a health probe definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorFile {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: MonitorKind,
    /// Overrides the member's port (members have addresses, not ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// What a target counts as before its first probe completes.
    #[serde(default)]
    pub start: StartState,
    /// http/https: request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// http/https: Host header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// http/https: status codes that count as up; sip-options: final response codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<Vec<u16>>,
    /// http/https: the body must contain this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// sip-options: udp, tcp or tls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// TLS-speaking monitors: server name sent in SNI and verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// TLS-speaking monitors: PEM file on the appliance of CA certificates
    /// to verify against (prefer `ca_bundle`, which the UI and API manage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// TLS-speaking monitors: the uploaded CA bundle (`/api/v1/ca-bundles`)
    /// to verify against instead of the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// TLS-speaking monitors: `false` explicitly skips certificate verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MonitorKind {
    Tcp,
    Tls,
    Http,
    Https,
    SipOptions,
}

impl MonitorKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Http => "http",
            Self::Https => "https",
            Self::SipOptions => "sip-options",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartState {
    #[default]
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// `[[pool]]`: a pool of SIP servers (a Lync Enterprise pool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    pub name: String,
    pub fqdn: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Decides DNS answers and registrar eligibility.
    pub monitor: String,
    #[serde(default = "default_registrar_port")]
    pub registrar_port: u16,
    #[serde(default = "default_registrar_transport")]
    pub registrar_transport: Transport,
    /// A drain still unfinished after this long is overdue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_s: Option<u64>,
    /// At the drain deadline, reset the connections that remain.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_at_deadline: bool,
    /// Optional drain agent on each member: `GET http://<member><path>` on
    /// this port answers the number of active sessions as a decimal number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_agent_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_agent_path: Option<String>,
    #[serde(default, rename = "member")]
    pub members: Vec<MemberFile>,
}

/// `[[pool.member]]`: one server of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberFile {
    /// Stable name: the registrar hash key, never the address.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    /// The member's address; a dual-stack member names `addresses`
    /// instead (exactly one of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A dual-stack member's addresses: one IPv4 and one IPv6 (either
    /// alone is the same as `address`). Each is answered in DNS and probed
    /// on its own; a virtual service connects to the one of its listener's
    /// family while it is up, else to the other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub state: AdminState,
}

/// Operator intent for a member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    #[default]
    Enabled,
    Draining,
    Disabled,
}

impl AdminState {
    pub const ALL: [Self; 3] = [Self::Enabled, Self::Draining, Self::Disabled];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Draining => "draining",
            Self::Disabled => "disabled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// `[[virtual_service]]`: a TCP pass-through VIP in front of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VirtualServiceFile {
    pub name: String,
    pub address: String,
    /// The interface poolgate adds `address` to when the host does not
    /// have it already (`eth1`); by default the interface whose subnet
    /// contains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub port: u16,
    /// Where connections to `port` go on the member; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_port: Option<u16>,
    /// More listening ports on the same address: `80` (the same port on
    /// the member) or `{ port = 80, member_port = 8080 }`, mixed freely.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_ports: Vec<ExtraPortFile>,
    /// `"v2"`: every connection to a member starts with a PROXY protocol
    /// v2 header carrying the client's address and port; `"none"` (the
    /// default) sends the client's bytes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_proxy: Option<SendProxy>,
    pub pool: String,
    /// Defaults to the pool's monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    #[serde(default)]
    pub scheduler: Scheduler,
    #[serde(default)]
    pub persistence: Persistence,
    #[serde(default = "default_persistence_timeout_s")]
    pub persistence_timeout_s: u64,
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// How long to wait for a member to accept before trying another one.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Close a member's open connections when its monitor marks it down
    /// (otherwise they run until they end by themselves or idle out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_on_down: bool,
}

/// One of `virtual_service.extra_ports`, kept in the form it was written
/// so an export prints it back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ExtraPortFile {
    /// `80`: the same port on the member.
    Same(u16),
    /// `{ port = 80, member_port = 8080 }`.
    Mapped(PortMapFile),
}

impl ExtraPortFile {
    /// The listening port.
    pub(crate) fn port(&self) -> u16 {
        match self {
            Self::Same(port) => *port,
            Self::Mapped(map) => map.port,
        }
    }

    /// The member port, when one is given.
    pub(crate) fn member_port(&self) -> Option<u16> {
        match self {
            Self::Same(_) => None,
            Self::Mapped(map) => map.member_port,
        }
    }
}

/// Serde's `untagged` would answer a bad table with "did not match any
/// variant"; this says what a mapped port must look like and keeps the
/// inner field in the error path (`extra_ports[0].member_port`).
impl<'de> Deserialize<'de> for ExtraPortFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ExtraPortFile;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port number (80) or a table { port = 80, member_port = 8080 }")
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
                u16::try_from(value).map(ExtraPortFile::Same).map_err(|_| {
                    E::invalid_value(
                        serde::de::Unexpected::Unsigned(value),
                        &"a port between 1 and 65535",
                    )
                })
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(E::invalid_value(
                        serde::de::Unexpected::Signed(value),
                        &"a port between 1 and 65535",
                    )),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                PortMapFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ExtraPortFile::Mapped)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `{ port = 80, member_port = 8080 }`: a listening port and the member
/// port its connections go to (the same port when left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortMapFile {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_port: Option<u16>,
}

/// What a virtual service sends a member before the client's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SendProxy {
    /// Nothing: the member sees the proxy's address as the source.
    #[default]
    None,
    /// A PROXY protocol version 2 header (binary) with the client's
    /// address and port, as HAProxy's `accept-proxy` and nginx's
    /// `proxy_protocol` read it.
    V2,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduler {
    #[default]
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    SourceHash,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Persistence {
    #[default]
    None,
    SourceIp,
}

fn default_true() -> bool {
    true
}
fn default_dns_ttl() -> u32 {
    30
}
// NSD's rrl-ratelimit and rrl-slip defaults (docs/decisions/0702).
fn default_dns_rrl_rate() -> u32 {
    200
}
fn is_default_dns_rrl_rate(rate: &u32) -> bool {
    *rate == default_dns_rrl_rate()
}
fn default_dns_rrl_slip() -> u32 {
    2
}
fn is_default_dns_rrl_slip(slip: &u32) -> bool {
    *slip == default_dns_rrl_slip()
}
fn default_sip_udp_rate() -> u32 {
    200
}
fn default_seen_users_max() -> u32 {
    100_000
}
fn default_seen_users_max_age_days() -> u32 {
    30
}
// HAProxy's defaults: frequent enough to notice a failure within seconds,
// rise/fall high enough that one lost packet does not flap a member.
fn default_interval_ms() -> u64 {
    2000
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_registrar_port() -> u16 {
    5061
}
fn default_registrar_transport() -> Transport {
    Transport::Tls
}
fn default_weight() -> u32 {
    1
}
// Microsoft's guidance for Lync web services: 20 minutes of persistence,
// 30 minutes of idle time.
fn default_persistence_timeout_s() -> u64 {
    1200
}
fn default_idle_timeout_s() -> u64 {
    1800
}
fn default_connect_timeout_ms() -> u64 {
    3000
}
