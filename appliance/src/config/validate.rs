//! The one validator: turns a `ConfigFile` into a typed `Config` or into a
//! list of field-named errors. Every path into poolgate (config file, API,
//! import) goes through `validate`, so a value that reached the store has been
//! checked once, here. It collects every error rather than stopping at the
//! first, so an admin fixes a file in one pass.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::model::*;
use super::path::{FieldPath, Segment};
use super::schema::*;

/// Validate a parsed file. Errors come in document order.
pub fn validate(file: &ConfigFile) -> Result<Config, Vec<FieldError>> {
    let mut v = Validator {
        dns_ttl: file.dns.ttl,
        ..Validator::default()
    };
    let root = FieldPath::root();

    let listen = v.listen(&file.listen, &root.key("listen"));
    let dns = DnsSettings {
        ttl: file.dns.ttl,
        fail_open: file.dns.fail_open,
        rrl_rate: file.dns.rrl_rate,
        rrl_slip: file.dns.rrl_slip,
    };
    if file.dns.rrl_slip > MAX_RRL_SLIP {
        v.error(
            root.key("dns").key("rrl_slip"),
            format!("must be at most {MAX_RRL_SLIP}"),
        );
    }
    let sip = SipSettings {
        udp_rate: file.sip.udp_rate,
        seen_users_max: file.sip.seen_users_max,
        seen_users_max_age: Duration::from_secs(
            u64::from(file.sip.seen_users_max_age_days) * 86_400,
        ),
    };
    if !(1..=MAX_SEEN_USERS_AGE_DAYS).contains(&file.sip.seen_users_max_age_days) {
        v.error(
            root.key("sip").key("seen_users_max_age_days"),
            format!("must be 1 to {MAX_SEEN_USERS_AGE_DAYS} days"),
        );
    }
    if file.dns.ttl > 86_400 {
        v.error(
            root.key("dns").key("ttl"),
            "must be at most 86400 seconds; health-filtered answers need a short TTL",
        );
    }

    let zones: Vec<Zone> = file
        .zones
        .iter()
        .enumerate()
        .filter_map(|(i, zone)| v.zone(zone, &root.item("zone", i), listen.as_ref()))
        .collect();

    let mut monitor_names = HashSet::new();
    let monitors: Vec<Monitor> = file
        .monitors
        .iter()
        .enumerate()
        .filter_map(|(i, monitor)| {
            let path = root.item("monitor", i);
            v.unique(
                &mut monitor_names,
                &monitor.name,
                &path.key("name"),
                "monitor",
            );
            v.monitor(monitor, &path)
        })
        .collect();

    let mut pool_names = HashSet::new();
    let pools: Vec<Pool> = file
        .pools
        .iter()
        .enumerate()
        .filter_map(|(i, pool)| {
            let path = root.item("pool", i);
            v.unique(&mut pool_names, &pool.name, &path.key("name"), "pool");
            v.pool(pool, &path, &monitor_names, &zones)
        })
        .collect();

    let mut vs_names = HashSet::new();
    let virtual_services: Vec<VirtualService> = file
        .virtual_services
        .iter()
        .enumerate()
        .filter_map(|(i, vs)| {
            let path = root.item("virtual_service", i);
            v.unique(
                &mut vs_names,
                &vs.name,
                &path.key("name"),
                "virtual service",
            );
            v.virtual_service(vs, &path, file, &monitor_names)
        })
        .collect();

    v.name_servers_apart_from_pools(&zones, &pools, &root);
    if let Some(listen) = &listen {
        v.listener_clashes(listen, file, &root);
    }

    match (v.errors.is_empty(), listen) {
        (true, Some(listen)) => Ok(Config {
            listen,
            dns,
            sip,
            zones,
            monitors,
            pools,
            virtual_services,
            source: file.clone(),
        }),
        _ => Err(v.errors),
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
    /// `dns.ttl`: the default negative TTL of every zone.
    dns_ttl: u32,
}

impl Validator {
    fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        self.errors.push(FieldError {
            path,
            message: message.into(),
        });
    }

    fn unique(&mut self, seen: &mut HashSet<String>, name: &str, path: &FieldPath, what: &str) {
        if !valid_name(name) {
            self.error(
                path.clone(),
                format!("{what} name {name:?} is not valid; use 1-63 letters, digits, '-' or '_'"),
            );
        } else if !seen.insert(name.to_owned()) {
            self.error(
                path.clone(),
                format!("{what} name {name:?} is used twice; give each {what} its own name"),
            );
        }
    }

    fn socket_addr(&mut self, value: &str, path: FieldPath) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    path,
                    format!(
                        "{value:?} is not an address:port; write e.g. \"127.0.0.1:5353\" or \"[::1]:5353\""
                    ),
                );
                None
            }
        }
    }

    fn ip_addr(&mut self, value: &str, path: FieldPath) -> Option<IpAddr> {
        match value.parse::<IpAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    path,
                    format!(
                        "{value:?} is not an IP address; write e.g. \"127.0.0.11\" or \"2001:db8::11\" (no port)"
                    ),
                );
                None
            }
        }
    }

    /// A member's `address` or `addresses` (exactly one of them; at most one
    /// address per family), each with its field; `None` after an error.
    fn member_addresses(
        &mut self,
        member: &MemberFile,
        path: &FieldPath,
    ) -> Option<Vec<(IpAddr, FieldPath)>> {
        match (&member.address, member.addresses.as_slice()) {
            (Some(_), [_, ..]) => {
                self.error(
                    path.key("addresses"),
                    "name either `address` or `addresses`, not both",
                );
                None
            }
            (None, []) => {
                self.error(
                    path.key("address"),
                    "missing: the member's IP address (or `addresses` for a dual-stack member)",
                );
                None
            }
            (Some(address), []) => {
                let field = path.key("address");
                Some(vec![(self.ip_addr(address, field.clone())?, field)])
            }
            (None, list) => {
                if list.len() > 2 {
                    self.error(
                        path.key("addresses"),
                        format!(
                            "{} addresses: a member has one IPv4 and one IPv6 address at most",
                            list.len()
                        ),
                    );
                    return None;
                }
                let mut parsed = Vec::with_capacity(list.len());
                for (i, value) in list.iter().enumerate() {
                    let field = path.item("addresses", i);
                    let address = self.ip_addr(value, field.clone())?;
                    if parsed
                        .iter()
                        .any(|(a, _): &(IpAddr, FieldPath)| a.is_ipv4() == address.is_ipv4())
                    {
                        self.error(
                            field,
                            format!(
                                "a second {} address: a member has one IPv4 and one IPv6 address at most",
                                if address.is_ipv4() { "IPv4" } else { "IPv6" }
                            ),
                        );
                        return None;
                    }
                    parsed.push((address, field));
                }
                Some(parsed)
            }
        }
    }

    fn dns_name(&mut self, value: &str, path: FieldPath) -> Option<String> {
        match normalise_dns_name(value) {
            Some(name) => Some(name),
            None => {
                self.error(
                    path,
                    format!(
                        "{value:?} is not a valid DNS name; use labels of 1-63 letters, digits, '-' or '_' separated by dots"
                    ),
                );
                None
            }
        }
    }

    fn listen(&mut self, listen: &ListenFile, path: &FieldPath) -> Option<Listen> {
        let admin = self.socket_addr(&listen.admin, path.key("admin"));
        let dns: Vec<Option<SocketAddr>> = listen
            .dns
            .iter()
            .enumerate()
            .map(|(i, addr)| self.socket_addr(addr, path.key("dns").index(i)))
            .collect();
        let mut optional = |value: &Option<String>, key: &str| -> Result<Option<SocketAddr>, ()> {
            match value {
                None => Ok(None),
                Some(value) => self.socket_addr(value, path.key(key)).map(Some).ok_or(()),
            }
        };
        let sip_udp = optional(&listen.sip_udp, "sip_udp");
        let sip_tcp = optional(&listen.sip_tcp, "sip_tcp");
        let sip_tls = optional(&listen.sip_tls, "sip_tls");
        Some(Listen {
            admin: admin?,
            dns: dns.into_iter().collect::<Option<Vec<_>>>()?,
            sip_udp: sip_udp.ok()?,
            sip_tcp: sip_tcp.ok()?,
            sip_tls: sip_tls.ok()?,
        })
    }

    fn zone(&mut self, zone: &ZoneFile, path: &FieldPath, listen: Option<&Listen>) -> Option<Zone> {
        let name = self.dns_name(&zone.name, path.key("name"))?;
        let ttl = zone.ttl.unwrap_or(3600);
        let negative_ttl = zone.negative_ttl.unwrap_or(self.dns_ttl);
        if negative_ttl > 86_400 {
            self.error(path.key("negative_ttl"), "must be at most 86400 seconds");
        }
        let name_servers = self.name_servers(zone, &name, path, listen);
        let mut records = Vec::new();
        for (i, record) in zone.records.iter().enumerate() {
            let path = path.item("record", i);
            let Some(owner) = self.record_owner(&record.name, &name, path.key("name")) else {
                continue;
            };
            let Some(data) = self.record_data(record, &name, path.key("value")) else {
                continue;
            };
            records.push(Record {
                name: owner,
                ttl: record.ttl.unwrap_or(ttl),
                data,
            });
        }
        Some(Zone {
            name,
            ttl,
            negative_ttl,
            // On an error the zone stays (empty), so names in it do not
            // also report "in no zone"; the error alone fails validation.
            name_servers: name_servers.unwrap_or_default(),
            records,
        })
    }

    /// A name server's name must not also be a pool FQDN, alias or member
    /// FQDN: its A/AAAA would mix with the members' (the very mistake of an
    /// NS naming the pool).
    fn name_servers_apart_from_pools(&mut self, zones: &[Zone], pools: &[Pool], root: &FieldPath) {
        let taken: HashMap<&str, String> =
            pools
                .iter()
                .flat_map(|pool| {
                    std::iter::once((pool.fqdn.as_str(), format!("pool {:?}", pool.name)))
                        .chain(pool.aliases.iter().map(|alias| {
                            (alias.as_str(), format!("an alias of pool {:?}", pool.name))
                        }))
                        .chain(pool.members.iter().filter_map(|member| {
                            member.fqdn.as_deref().map(|fqdn| {
                                (
                                    fqdn,
                                    format!("member {:?} of pool {:?}", member.name, pool.name),
                                )
                            })
                        }))
                })
                .collect();
        for (i, zone) in zones.iter().enumerate() {
            for (j, server) in zone.name_servers.iter().enumerate() {
                if let Some(owner) = taken.get(server.name.as_str()) {
                    self.error(
                        root.item("zone", i).key("name_servers").index(j).key("name"),
                        format!(
                            "{:?} is the FQDN of {owner}; give the name server a name of its own (e.g. \"ns1.{}\")",
                            server.name, zone.name
                        ),
                    );
                }
            }
        }
    }

    /// The zone's name servers as named, or the default one: `ns.<zone>` at
    /// the DNS listeners' own addresses, which must not be wildcards (an NS
    /// answer must lead back to poolgate).
    fn name_servers(
        &mut self,
        zone: &ZoneFile,
        zone_name: &str,
        path: &FieldPath,
        listen: Option<&Listen>,
    ) -> Option<Vec<NameServer>> {
        let path = path.key("name_servers");
        if zone.name_servers.is_empty() {
            let listen = listen?;
            let mut addresses: Vec<IpAddr> = Vec::new();
            for (i, address) in listen.dns.iter().enumerate() {
                if address.ip().is_unspecified() {
                    self.error(
                        path,
                        format!(
                            "required: listen.dns[{i}] is the wildcard {address}, which no resolver can be sent to; name the zone's name servers with the appliance's own addresses"
                        ),
                    );
                    return None;
                }
                if !addresses.contains(&address.ip()) {
                    addresses.push(address.ip());
                }
            }
            return Some(vec![NameServer {
                name: format!("{DEFAULT_NAME_SERVER_LABEL}.{zone_name}"),
                addresses,
            }]);
        }
        if zone.name_servers.len() > MAX_NAME_SERVERS {
            self.error(
                path,
                format!("at most {MAX_NAME_SERVERS} name servers per zone"),
            );
            return None;
        }
        let mut names = HashSet::new();
        let mut ok = true;
        let mut servers = Vec::new();
        for (i, server) in zone.name_servers.iter().enumerate() {
            let path = path.index(i);
            let Some(name) = self.dns_name(&server.name, path.key("name")) else {
                ok = false;
                continue;
            };
            if !names.insert(name.clone()) {
                self.error(
                    path.key("name"),
                    format!("name server {name:?} is named twice"),
                );
                ok = false;
            }
            let addresses_path = path.key("addresses");
            if server.addresses.len() > MAX_NAME_SERVER_ADDRESSES {
                self.error(
                    addresses_path.clone(),
                    format!("at most {MAX_NAME_SERVER_ADDRESSES} addresses per name server"),
                );
                ok = false;
                continue;
            }
            if server.addresses.is_empty() && in_zone(&name, zone_name) {
                self.error(
                    addresses_path.clone(),
                    format!(
                        "required: {name:?} is in zone {zone_name:?}, so resolvers can only reach it by the addresses (glue) given here"
                    ),
                );
                ok = false;
            }
            let mut addresses = Vec::new();
            for (j, address) in server.addresses.iter().enumerate() {
                let path = addresses_path.index(j);
                let Some(address) = self.ip_addr(address, path.clone()) else {
                    ok = false;
                    continue;
                };
                if address.is_unspecified() || address.is_multicast() {
                    self.error(
                        path,
                        format!("{address} is not an address a resolver can send queries to"),
                    );
                    ok = false;
                } else if addresses.contains(&address) {
                    self.error(path, format!("{address} is listed twice"));
                    ok = false;
                } else {
                    addresses.push(address);
                }
            }
            servers.push(NameServer { name, addresses });
        }
        ok.then_some(servers)
    }

    fn record_owner(&mut self, name: &str, zone: &str, path: FieldPath) -> Option<String> {
        let fqdn = qualify(name, zone);
        let fqdn = self.dns_name(&fqdn, path.clone())?;
        if !in_zone(&fqdn, zone) {
            self.error(
                path,
                format!("{name:?} is outside zone {zone:?}; write it relative to the zone or as a name ending in \".{zone}.\""),
            );
            return None;
        }
        Some(fqdn)
    }

    fn record_data(
        &mut self,
        record: &RecordFile,
        zone: &str,
        path: FieldPath,
    ) -> Option<RecordData> {
        let value = record.value.trim();
        let parsed = match record.rtype {
            RecordType::A => value.parse().ok().map(RecordData::A),
            RecordType::Aaaa => value.parse().ok().map(RecordData::Aaaa),
            RecordType::Cname => normalise_dns_name(&qualify(value, zone)).map(RecordData::Cname),
            RecordType::Txt => (value.len() <= 255).then(|| RecordData::Txt(record.value.clone())),
            RecordType::Srv => {
                let parts: Vec<&str> = value.split_whitespace().collect();
                match parts.as_slice() {
                    [priority, weight, port, target] => {
                        match (priority.parse(), weight.parse(), port.parse()) {
                            (Ok(priority), Ok(weight), Ok(port)) => {
                                normalise_dns_name(&qualify(target, zone)).map(|target| {
                                    RecordData::Srv {
                                        priority,
                                        weight,
                                        port,
                                        target,
                                    }
                                })
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                }
            }
        };
        if parsed.is_none() {
            let expected = match record.rtype {
                RecordType::A => "an IPv4 address such as \"192.0.2.10\"",
                RecordType::Aaaa => "an IPv6 address such as \"2001:db8::10\"",
                RecordType::Cname => "a DNS name such as \"pool01.contoso.com.\"",
                RecordType::Srv => {
                    "\"priority weight port target\" such as \"0 0 5061 pool01.contoso.com.\""
                }
                RecordType::Txt => "text of at most 255 bytes",
            };
            self.error(
                path,
                format!(
                    "{:?} is not valid for this record type; expected {expected}",
                    record.value
                ),
            );
        }
        parsed
    }

    fn monitor(&mut self, m: &MonitorFile, path: &FieldPath) -> Option<Monitor> {
        let errors_before = self.errors.len();
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&m.interval_ms) {
            self.error(
                path.key("interval_ms"),
                format!("must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS} milliseconds"),
            );
        }
        if m.timeout_ms == 0 || m.timeout_ms > m.interval_ms {
            self.error(
                path.key("timeout_ms"),
                format!(
                    "must be at least 1 and at most interval_ms ({}) so probes do not overlap",
                    m.interval_ms
                ),
            );
        }
        for (key, value) in [("rise", m.rise), ("fall", m.fall)] {
            if !(1..=100).contains(&value) {
                self.error(path.key(key), "must be between 1 and 100 probes");
            }
        }
        if m.port == Some(0) {
            self.error(
                path.key("port"),
                "port 0 is not a port a member listens on; use 1-65535",
            );
        }
        let http = matches!(m.kind, MonitorKind::Http | MonitorKind::Https);
        let sip = m.kind == MonitorKind::SipOptions;
        let transport = m.transport.unwrap_or(Transport::Udp);
        let tls = matches!(m.kind, MonitorKind::Tls | MonitorKind::Https)
            || (sip && transport == Transport::Tls);
        let mut only = |key: &str, present: bool, allowed: bool, types: &str| {
            if present && !allowed {
                self.error(
                    path.key(key),
                    format!(
                        "only applies to {types} monitors; remove it from this {} monitor",
                        m.kind.as_str()
                    ),
                );
            }
        };
        only("path", m.path.is_some(), http, "http and https");
        only("host", m.host.is_some(), http, "http and https");
        only(
            "body_contains",
            m.body_contains.is_some(),
            http,
            "http and https",
        );
        only(
            "expect_status",
            m.expect_status.is_some(),
            http || sip,
            "http, https and sip-options",
        );
        only("transport", m.transport.is_some(), sip, "sip-options");
        only(
            "sni",
            m.sni.is_some(),
            tls,
            "TLS-speaking (tls, https, sip-options over tls)",
        );
        only(
            "ca_file",
            m.ca_file.is_some(),
            tls,
            "TLS-speaking (tls, https, sip-options over tls)",
        );
        only(
            "ca_bundle",
            m.ca_bundle.is_some(),
            tls,
            "TLS-speaking (tls, https, sip-options over tls)",
        );
        only(
            "tls_verify",
            m.tls_verify.is_some(),
            tls,
            "TLS-speaking (tls, https, sip-options over tls)",
        );
        if let Some(p) = &m.path
            && !p.starts_with('/')
        {
            self.error(path.key("path"), format!("{p:?} must start with '/'"));
        }
        if let Some(codes) = &m.expect_status
            && (codes.is_empty() || codes.iter().any(|c| !(100..=699).contains(c)))
        {
            self.error(
                path.key("expect_status"),
                "must list status codes between 100 and 699",
            );
        }
        if m.ca_file.is_some() && m.tls_verify == Some(false) {
            self.error(
                path.key("ca_file"),
                "is pointless with tls_verify = false; remove one of them",
            );
        }
        if m.ca_bundle.is_some() && m.tls_verify == Some(false) {
            self.error(
                path.key("ca_bundle"),
                "is pointless with tls_verify = false; remove one of them",
            );
        }
        if m.ca_bundle.is_some() && m.ca_file.is_some() {
            self.error(
                path.key("ca_bundle"),
                "and ca_file both name the CAs to trust; keep one (ca_bundle is managed in the UI)",
            );
        }
        if let Some(name) = &m.ca_bundle
            && let Err(problem) = crate::health::ca::check_name(name)
        {
            self.error(path.key("ca_bundle"), problem);
        }
        if self.errors.len() != errors_before {
            return None;
        }
        Some(Monitor {
            name: m.name.clone(),
            kind: m.kind,
            port: m.port,
            interval: Duration::from_millis(m.interval_ms),
            timeout: Duration::from_millis(m.timeout_ms),
            rise: m.rise,
            fall: m.fall,
            start: m.start,
            path: m.path.clone().unwrap_or_else(|| "/".to_owned()),
            host: m.host.clone(),
            expect_status: m.expect_status.clone().unwrap_or_else(|| vec![200]),
            body_contains: m.body_contains.clone(),
            transport,
            sni: m.sni.clone(),
            ca_file: m.ca_file.clone(),
            ca_bundle: m.ca_bundle.clone(),
            tls_verify: m.tls_verify.unwrap_or(true),
        })
    }

    fn pool(
        &mut self,
        pool: &PoolFile,
        path: &FieldPath,
        monitors: &HashSet<String>,
        zones: &[Zone],
    ) -> Option<Pool> {
        let errors_before = self.errors.len();
        if !monitors.contains(&pool.monitor) {
            self.error(
                path.key("monitor"),
                unknown_reference("monitor", &pool.monitor, monitors),
            );
        }
        let fqdn = self.dns_name(&pool.fqdn, path.key("fqdn"));
        if let Some(fqdn) = &fqdn {
            self.require_zone(fqdn, zones, path.key("fqdn"));
        }
        let mut names = HashSet::new();
        let aliases: Vec<String> = pool
            .aliases
            .iter()
            .enumerate()
            .filter_map(|(i, alias)| {
                let alias_path = path.key("aliases").index(i);
                let alias = self.dns_name(alias, alias_path.clone())?;
                self.require_zone(&alias, zones, alias_path);
                Some(alias)
            })
            .collect();
        if pool.registrar_port == 0 {
            self.error(
                path.key("registrar_port"),
                "must be a port between 1 and 65535",
            );
        }
        if pool
            .drain_timeout_s
            .is_some_and(|t| t == 0 || t > 7 * 86_400)
        {
            self.error(
                path.key("drain_timeout_s"),
                "must be between 1 and 604800 seconds (a week)",
            );
        }
        if pool.drop_at_deadline && pool.drain_timeout_s.is_none() {
            self.error(
                path.key("drop_at_deadline"),
                "needs drain_timeout_s: set the deadline at which connections are reset",
            );
        }
        if pool.drain_agent_port == Some(0) {
            self.error(
                path.key("drain_agent_port"),
                "must be a port between 1 and 65535",
            );
        }
        if let Some(agent_path) = &pool.drain_agent_path {
            if pool.drain_agent_port.is_none() {
                self.error(path.key("drain_agent_path"), "needs drain_agent_port");
            } else if !agent_path.starts_with('/') {
                self.error(
                    path.key("drain_agent_path"),
                    format!("{agent_path:?} must start with '/'"),
                );
            }
        }
        if pool.members.is_empty() {
            self.error(
                path.key("member"),
                "a pool needs at least one [[pool.member]]",
            );
        }
        if pool.members.len() > MAX_POOL_MEMBERS {
            self.error(
                path.key("member"),
                format!("{} members is more than the {MAX_POOL_MEMBERS} a pool can hold; split the pool", pool.members.len()),
            );
        }
        let mut addresses = HashMap::new();
        let mut member_fqdns = HashSet::new();
        let members: Vec<Member> = pool
            .members
            .iter()
            .enumerate()
            .filter_map(|(i, member)| {
                let path = path.item("member", i);
                self.unique(&mut names, &member.name, &path.key("name"), "member");
                let member_addresses = self.member_addresses(member, &path);
                for (address, field) in member_addresses.iter().flatten() {
                    if let Some(other) = addresses.insert(*address, member.name.clone()) {
                        self.error(
                            field.clone(),
                            format!("{address} is already member {other:?}'s address; each member needs its own"),
                        );
                    }
                }
                if !(1..=MAX_WEIGHT).contains(&member.weight) {
                    self.error(path.key("weight"), format!("must be between 1 and {MAX_WEIGHT}"));
                }
                let member_fqdn = match &member.fqdn {
                    None => None,
                    Some(value) => {
                        let name = self.dns_name(value, path.key("fqdn"))?;
                        if !member_fqdns.insert(name.clone()) || Some(&name) == fqdn.as_ref() {
                            self.error(path.key("fqdn"), format!("{name:?} is used twice in this pool"));
                        }
                        Some(name)
                    }
                };
                Some(Member {
                    name: member.name.clone(),
                    fqdn: member_fqdn,
                    addresses: member_addresses?.into_iter().map(|(a, _)| a).collect(),
                    weight: member.weight,
                    state: member.state,
                })
            })
            .collect();
        if self.errors.len() != errors_before {
            return None;
        }
        Some(Pool {
            name: pool.name.clone(),
            fqdn: fqdn?,
            aliases,
            monitor: pool.monitor.clone(),
            registrar_port: pool.registrar_port,
            registrar_transport: pool.registrar_transport,
            drain_timeout: pool.drain_timeout_s.map(Duration::from_secs),
            drop_at_deadline: pool.drop_at_deadline,
            drain_agent: pool.drain_agent_port.map(|port| DrainAgent {
                port,
                path: pool
                    .drain_agent_path
                    .clone()
                    .unwrap_or_else(|| "/".to_owned()),
            }),
            members,
        })
    }

    fn require_zone(&mut self, name: &str, zones: &[Zone], path: FieldPath) {
        if !zones.iter().any(|zone| in_zone(name, &zone.name)) {
            self.error(
                path,
                format!("{name:?} is in no [[zone]]; add a zone that contains it so poolgate can answer for it"),
            );
        }
    }

    fn virtual_service(
        &mut self,
        vs: &VirtualServiceFile,
        path: &FieldPath,
        file: &ConfigFile,
        monitors: &HashSet<String>,
    ) -> Option<VirtualService> {
        let errors_before = self.errors.len();
        let address = self.ip_addr(&vs.address, path.key("address"));
        if let Some(interface) = &vs.interface {
            self.interface_name(interface, address, path.key("interface"));
        }
        let pool = file.pools.iter().find(|pool| pool.name == vs.pool);
        if pool.is_none() {
            let pools: HashSet<String> = file.pools.iter().map(|p| p.name.clone()).collect();
            self.error(
                path.key("pool"),
                unknown_reference("pool", &vs.pool, &pools),
            );
        }
        if let Some(monitor) = &vs.monitor
            && !monitors.contains(monitor)
        {
            self.error(
                path.key("monitor"),
                unknown_reference("monitor", monitor, monitors),
            );
        }
        // (listening port, its field, member port if given, its field)
        let mut mapped = vec![(
            vs.port,
            path.key("port"),
            vs.member_port,
            path.key("member_port"),
        )];
        for (i, extra) in vs.extra_ports.iter().enumerate() {
            let item = path.key("extra_ports").index(i);
            let (port_path, member_path) = match extra {
                ExtraPortFile::Same(_) => (item.clone(), item),
                ExtraPortFile::Mapped(_) => (item.key("port"), item.key("member_port")),
            };
            mapped.push((extra.port(), port_path, extra.member_port(), member_path));
        }
        let mut seen = HashSet::new();
        let mut ports = Vec::with_capacity(mapped.len());
        let mut member_ports = Vec::with_capacity(mapped.len());
        for (port, port_path, member_port, member_path) in mapped {
            if port == 0 {
                self.error(
                    port_path,
                    "a virtual service needs a fixed port between 1 and 65535",
                );
            } else if !seen.insert(port) {
                self.error(
                    port_path,
                    format!("port {port} is listed twice for this service"),
                );
            }
            if member_port == Some(0) {
                self.error(
                    member_path,
                    "a member port is between 1 and 65535 (leave it out for the listening port)",
                );
            }
            ports.push(port);
            member_ports.push(member_port.unwrap_or(port));
        }
        if vs.idle_timeout_s == 0 || vs.idle_timeout_s > 86_400 {
            self.error(
                path.key("idle_timeout_s"),
                "must be between 1 and 86400 seconds",
            );
        }
        if vs.persistence_timeout_s == 0 || vs.persistence_timeout_s > 86_400 {
            self.error(
                path.key("persistence_timeout_s"),
                "must be between 1 and 86400 seconds",
            );
        }
        if vs.connect_timeout_ms == 0 || vs.connect_timeout_ms > 60_000 {
            self.error(
                path.key("connect_timeout_ms"),
                "must be between 1 and 60000 milliseconds (3000 is a good start)",
            );
        }
        if self.errors.len() != errors_before {
            return None;
        }
        let pool = pool?;
        Some(VirtualService {
            name: vs.name.clone(),
            address: address?,
            interface: vs.interface.clone(),
            ports,
            member_ports,
            send_proxy: vs.send_proxy.unwrap_or_default(),
            pool: vs.pool.clone(),
            monitor: vs.monitor.clone().unwrap_or_else(|| pool.monitor.clone()),
            scheduler: vs.scheduler,
            persistence: vs.persistence,
            persistence_timeout: Duration::from_secs(vs.persistence_timeout_s),
            idle_timeout: Duration::from_secs(vs.idle_timeout_s),
            connect_timeout: Duration::from_millis(vs.connect_timeout_ms),
            drop_on_down: vs.drop_on_down,
        })
    }

    /// An interface name as Linux allows it (at most 15 bytes, no `/`, `:`
    /// or white space), for an address poolgate would add: a wildcard or
    /// loopback address is never added, so naming an interface for one is
    /// a mistake. Whether the host has the interface is checked where the
    /// config is applied (`net::addresses::check`).
    fn interface_name(&mut self, name: &str, address: Option<IpAddr>, path: FieldPath) {
        let valid = !name.is_empty()
            && name.len() <= 15
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if !valid {
            self.error(
                path,
                format!("{name:?} is not an interface name (1 to 15 characters, no '/', ':' or spaces), such as \"eth1\""),
            );
        } else if let Some(ip) = address
            && (ip.is_unspecified() || ip.is_loopback())
        {
            self.error(
                path,
                format!("{ip} is never added to an interface (wildcard or loopback); remove `interface` or give a real address"),
            );
        }
    }

    /// No two sockets of one protocol may claim the same address:port,
    /// counting a wildcard address as every address. Port 0 (pick a free
    /// port) never clashes.
    fn listener_clashes(&mut self, listen: &Listen, file: &ConfigFile, root: &FieldPath) {
        let lp = root.key("listen");
        let mut tcp: Vec<(SocketAddr, FieldPath)> = vec![(listen.admin, lp.key("admin"))];
        let mut udp: Vec<(SocketAddr, FieldPath)> = Vec::new();
        for (i, addr) in listen.dns.iter().enumerate() {
            tcp.push((*addr, lp.key("dns").index(i)));
            udp.push((*addr, lp.key("dns").index(i)));
        }
        if let Some(addr) = listen.sip_udp {
            udp.push((addr, lp.key("sip_udp")));
        }
        if let Some(addr) = listen.sip_tcp {
            tcp.push((addr, lp.key("sip_tcp")));
        }
        if let Some(addr) = listen.sip_tls {
            tcp.push((addr, lp.key("sip_tls")));
        }
        for (i, vs) in file.virtual_services.iter().enumerate() {
            let Ok(ip) = vs.address.parse::<IpAddr>() else {
                continue;
            };
            let path = root.item("virtual_service", i);
            tcp.push((SocketAddr::new(ip, vs.port), path.key("port")));
            for (j, extra) in vs.extra_ports.iter().enumerate() {
                let item = path.key("extra_ports").index(j);
                let item = match extra {
                    ExtraPortFile::Same(_) => item,
                    ExtraPortFile::Mapped(_) => item.key("port"),
                };
                tcp.push((SocketAddr::new(ip, extra.port()), item));
            }
        }
        for (protocol, sockets) in [("TCP", &tcp), ("UDP", &udp)] {
            for (i, (addr, path)) in sockets.iter().enumerate() {
                if addr.port() == 0 {
                    continue;
                }
                let clash = sockets[..i].iter().find(|(other, other_path)| {
                    other.port() == addr.port()
                        && other_path != path
                        && !same_service(path, other_path)
                        && (other.ip() == addr.ip()
                            || other.ip().is_unspecified()
                            || addr.ip().is_unspecified())
                });
                if let Some((other, other_path)) = clash {
                    self.error(
                        path.clone(),
                        format!("{protocol} {addr} clashes with {other_path} ({other}); give one of them another address or port"),
                    );
                }
            }
        }
    }
}

/// Both paths lie in one `virtual_service[i]`: a port it lists twice is
/// reported by `virtual_service` already, once.
fn same_service(a: &FieldPath, b: &FieldPath) -> bool {
    let service = |p: &FieldPath| match p.segments() {
        [Segment::Key(key), Segment::Index(i), ..] if key == "virtual_service" => Some(*i),
        _ => None,
    };
    service(a).is_some() && service(a) == service(b)
}

fn unknown_reference(what: &str, name: &str, known: &HashSet<String>) -> String {
    let mut known: Vec<&str> = known.iter().map(String::as_str).collect();
    known.sort_unstable();
    if known.is_empty() {
        format!(
            "refers to {what} {name:?}, but no {what} is defined; add a [[{what}]] named {name:?}"
        )
    } else {
        format!(
            "refers to {what} {name:?}, which is not defined; defined: {}",
            known.join(", ")
        )
    }
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Lower-case, strip one trailing dot, check label syntax.
pub(crate) fn normalise_dns_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    ok.then_some(name)
}

/// A record name relative to its zone: `@` is the apex, a trailing dot means
/// already absolute.
fn qualify(name: &str, zone: &str) -> String {
    if name == "@" {
        zone.to_owned()
    } else if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.{zone}")
    }
}

/// Is `name` equal to or below `zone`? Both normalised.
pub(crate) fn in_zone(name: &str, zone: &str) -> bool {
    name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|prefix| prefix.ends_with('.'))
}
