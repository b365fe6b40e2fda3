//! The typed config model: what a `ConfigFile` becomes once `validate` has
//! accepted it, and the limits it is checked against. Every subsystem reads
//! these types (as `config::…`); only the validator builds a `Config`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::path::FieldPath;
use super::schema::*;

/// A pool member, named by its pool and its own name: the key of admin
/// state, health, drain progress and counters.
pub(crate) type MemberKey = (String, String);

/// Lync 2010 pools hold up to 10 Front Ends; we promise at least 32.
pub(crate) const MAX_POOL_MEMBERS: usize = 64;
pub(crate) const MAX_WEIGHT: u32 = 1000;
pub(crate) const MIN_INTERVAL_MS: u64 = 100;
pub const MAX_INTERVAL_MS: u64 = 3_600_000;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: FieldPath,
    pub message: String,
}

/// A config that passed validation. Built only by `validate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: Listen,
    pub dns: DnsSettings,
    pub sip: SipSettings,
    pub zones: Vec<Zone>,
    pub monitors: Vec<Monitor>,
    pub pools: Vec<Pool>,
    pub virtual_services: Vec<VirtualService>,
    pub(super) source: ConfigFile,
}

impl Config {
    /// The file form this config was validated from (what `export` prints).
    pub(crate) fn source(&self) -> &ConfigFile {
        &self.source
    }

    pub(crate) fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|pool| pool.name == name)
    }

    pub(crate) fn monitor(&self, name: &str) -> Option<&Monitor> {
        self.monitors.iter().find(|monitor| monitor.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub admin: SocketAddr,
    pub dns: Vec<SocketAddr>,
    pub sip_udp: Option<SocketAddr>,
    pub sip_tcp: Option<SocketAddr>,
    pub sip_tls: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    pub ttl: u32,
    pub fail_open: bool,
    /// UDP answers per second per source prefix; 0: no limit.
    pub rrl_rate: u32,
    pub rrl_slip: u32,
}

/// The redirect service's limits (`[sip]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSettings {
    /// UDP requests answered per second per source prefix; 0: no limit.
    pub udp_rate: u32,
    pub seen_users_max: u32,
    pub seen_users_max_age: Duration,
}

/// BIND accepts a slip of 0 to 10.
pub(crate) const MAX_RRL_SLIP: u32 = 10;
/// Ten years: a user unseen for longer is gone.
pub const MAX_SEEN_USERS_AGE_DAYS: u32 = 3650;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Lower case, no trailing dot.
    pub name: String,
    pub ttl: u32,
    /// SOA minimum: the TTL of negative answers.
    pub negative_ttl: u32,
    /// At least one; the first is the SOA's primary name server.
    pub name_servers: Vec<NameServer>,
    pub records: Vec<Record>,
}

/// A zone's name server: NS target, and A/AAAA when it has addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameServer {
    /// Fully qualified, lower case, no trailing dot.
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

/// Name servers one zone may name, and addresses one name server may have.
pub(crate) const MAX_NAME_SERVERS: usize = 8;
pub(crate) const MAX_NAME_SERVER_ADDRESSES: usize = 8;
/// The name of the name server a zone gets when it names none.
pub(crate) const DEFAULT_NAME_SERVER_LABEL: &str = "ns";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Fully qualified, lower case, no trailing dot.
    pub name: String,
    pub ttl: u32,
    pub data: RecordData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Txt(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    pub name: String,
    pub kind: MonitorKind,
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub start: StartState,
    pub path: String,
    pub host: Option<String>,
    pub expect_status: Vec<u16>,
    pub body_contains: Option<String>,
    pub transport: Transport,
    pub sni: Option<String>,
    pub ca_file: Option<String>,
    /// The name of a CA bundle in the store; the control task checks it exists.
    pub ca_bundle: Option<String>,
    pub tls_verify: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub fqdn: String,
    pub aliases: Vec<String>,
    pub monitor: String,
    pub registrar_port: u16,
    pub registrar_transport: Transport,
    pub drain_timeout: Option<Duration>,
    pub drop_at_deadline: bool,
    pub drain_agent: Option<DrainAgent>,
    pub members: Vec<Member>,
}

/// Where a member reports its active sessions while draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainAgent {
    pub port: u16,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub fqdn: Option<String>,
    /// One address, or one IPv4 and one IPv6 (in the config's order).
    pub addresses: Vec<IpAddr>,
    pub weight: u32,
    /// The admin state the config asks for; the store's admin state wins at
    /// run time (see `store`).
    pub state: AdminState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualService {
    pub name: String,
    pub address: IpAddr,
    /// Where poolgate adds `address` if the host lacks it (`net::addresses`).
    pub interface: Option<String>,
    /// The listening ports: `port` first, then `extra_ports`.
    pub ports: Vec<u16>,
    /// `member_ports[i]` is the member port that connections accepted on
    /// `ports[i]` go to (the same port unless the config maps it).
    pub member_ports: Vec<u16>,
    pub send_proxy: SendProxy,
    pub pool: String,
    pub monitor: String,
    pub scheduler: Scheduler,
    pub persistence: Persistence,
    pub persistence_timeout: Duration,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub drop_on_down: bool,
}

impl VirtualService {
    /// The member port for connections accepted on listening port `port`.
    pub(crate) fn member_port(&self, port: u16) -> Option<u16> {
        self.ports
            .iter()
            .position(|p| *p == port)
            .and_then(|i| self.member_ports.get(i).copied())
    }
}
