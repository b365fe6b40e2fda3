//! Answer building: one query name and type, one `PoolView` → the response
//! code and the answer and authority sections. Pure: no sockets, no clock;
//! the only input besides the view is the random source that shuffles
//! address sets, so tests pass a seeded one.
//!
//! Invariants:
//! * a name outside every configured zone is REFUSED (we are no resolver);
//! * pool FQDNs, aliases and member FQDNs answer from `PoolView::dns`, which
//!   is already health- and admin-filtered (and fail-open expanded), so a
//!   draining or disabled member never reaches a pool answer and a disabled
//!   member's own FQDN does not exist;
//! * a name that exists without data of the asked type is NODATA (NOERROR,
//!   empty answer), a name that does not exist is NXDOMAIN; both carry the
//!   zone's SOA in authority with the negative TTL;
//! * each zone apex has a synthesised SOA and NS from the zone's name servers
//!   (see `soa_record`); a name server's name answers its addresses, and an
//!   NS answer carries the in-zone name servers' addresses as glue;
//! * negative answers are cached for the zone's `negative_ttl`.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::config::{RecordData, Zone};
use crate::state::PoolView;

/// How many CNAME hops inside our own zones we follow in one answer.
const MAX_CNAME_CHAIN: usize = 8;

/// SOA timers (seconds). Secondaries are not expected (poolgate is the only
/// authority for its zones), so these only need to be sane.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 604_800;

/// What to send back for one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub rcode: ResponseCode,
    /// Set for every name inside one of our zones.
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    /// Glue: the addresses of in-zone name servers named in an NS answer.
    pub additionals: Vec<Record>,
}

impl Answer {
    fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// `qname` as poolgate stores names: lower case, no trailing dot.
pub(crate) fn normalise(qname: &Name) -> String {
    let mut text = qname.to_lowercase().to_ascii();
    if text.ends_with('.') {
        text.pop();
    }
    text
}

/// The most specific configured zone that contains `name`.
pub(crate) fn zone_for<'z>(zones: &'z [Zone], name: &str) -> Option<&'z Zone> {
    zones
        .iter()
        .filter(|zone| in_zone(name, &zone.name))
        .max_by_key(|zone| zone.name.len())
}

pub(crate) fn in_zone(name: &str, zone: &str) -> bool {
    name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|head| head.ends_with('.'))
}

/// Answer `qtype` for `qname` from `view`.
pub(crate) fn answer(
    view: &PoolView,
    qname: &Name,
    qtype: RecordType,
    rng: &mut impl Rng,
) -> Answer {
    let name = normalise(qname);
    let Some(zone) = zone_for(&view.config.zones, &name) else {
        return Answer::refused();
    };
    let mut answers = Vec::new();
    let mut current = name;
    let mut current_zone = zone;
    let mut exists = false;
    for hop in 0..MAX_CNAME_CHAIN {
        let found = lookup(view, current_zone, &current, qtype, rng, &mut answers);
        if hop == 0 {
            exists = found.exists;
        }
        match found.cname {
            Some(target) => match zone_for(&view.config.zones, &target) {
                Some(zone) => {
                    current = target;
                    current_zone = zone;
                }
                // Out of our zones: the client's resolver follows it.
                None => break,
            },
            None => break,
        }
    }
    let mut result = Answer {
        rcode: ResponseCode::NoError,
        authoritative: true,
        answers,
        authorities: Vec::new(),
        additionals: Vec::new(),
    };
    if qtype == RecordType::NS
        && result
            .answers
            .iter()
            .any(|r| r.record_type() == RecordType::NS)
    {
        result.additionals = glue(zone);
    }
    if result.answers.is_empty() {
        if !exists {
            result.rcode = ResponseCode::NXDomain;
        }
        result.authorities.push(negative_soa(view, zone));
    }
    result
}

struct Found {
    exists: bool,
    /// The name holds a CNAME and the question was for another type.
    cname: Option<String>,
}

fn lookup(
    view: &PoolView,
    zone: &Zone,
    name: &str,
    qtype: RecordType,
    rng: &mut impl Rng,
    answers: &mut Vec<Record>,
) -> Found {
    let owner = dns_name(name);
    let mut exists = false;
    let mut cname = None;
    let any = qtype == RecordType::ANY;

    if let Some(dynamic) = view.dns.get(name) {
        exists = true;
        let ttl = view.config.dns.ttl;
        let mut addresses: Vec<IpAddr> = dynamic
            .addresses
            .iter()
            .copied()
            .filter(|address| match address {
                IpAddr::V4(_) => any || qtype == RecordType::A,
                IpAddr::V6(_) => any || qtype == RecordType::AAAA,
            })
            .collect();
        addresses.shuffle(rng);
        answers.extend(
            addresses
                .into_iter()
                .map(|address| Record::from_rdata(owner.clone(), ttl, address_rdata(address))),
        );
    }

    for record in zone.records.iter().filter(|record| record.name == name) {
        exists = true;
        let rtype = static_type(&record.data);
        if let RecordData::Cname(target) = &record.data
            && qtype != RecordType::CNAME
            && !any
        {
            answers.push(Record::from_rdata(
                owner.clone(),
                record.ttl,
                static_rdata(&record.data),
            ));
            cname = Some(target.clone());
            continue;
        }
        if any || rtype == qtype {
            answers.push(Record::from_rdata(
                owner.clone(),
                record.ttl,
                static_rdata(&record.data),
            ));
        }
    }

    // A name server's own name: its addresses, from whichever zone names it.
    for server in view
        .config
        .zones
        .iter()
        .flat_map(|zone| &zone.name_servers)
        .filter(|server| server.name == name)
    {
        exists = true;
        for &address in &server.addresses {
            let rtype = match address {
                IpAddr::V4(_) => RecordType::A,
                IpAddr::V6(_) => RecordType::AAAA,
            };
            let record = Record::from_rdata(owner.clone(), zone.ttl, address_rdata(address));
            if (any || rtype == qtype) && !answers.contains(&record) {
                answers.push(record);
            }
        }
    }

    if name == zone.name {
        exists = true;
        if any || qtype == RecordType::SOA {
            answers.push(soa_record(view, zone, zone.ttl));
        }
        if any || qtype == RecordType::NS {
            answers.extend(zone.name_servers.iter().map(|server| {
                Record::from_rdata(
                    owner.clone(),
                    zone.ttl,
                    RData::NS(NS(dns_name(&server.name))),
                )
            }));
        }
    }

    // An empty non-terminal (`_tcp.zone` above `_sip._tls._tcp.zone`) exists
    // with no data: NODATA, not NXDOMAIN (RFC 8020).
    if !exists {
        exists = zone
            .records
            .iter()
            .map(|record| record.name.as_str())
            .chain(view.dns.keys().map(String::as_str))
            .any(|other| other != name && in_zone(other, name));
    }
    Found { exists, cname }
}

/// The addresses of the zone's name servers that lie inside it, for the
/// additional section of an NS answer: without them a resolver could not
/// reach a name server whose name only this zone resolves.
fn glue(zone: &Zone) -> Vec<Record> {
    zone.name_servers
        .iter()
        .filter(|server| in_zone(&server.name, &zone.name))
        .flat_map(|server| {
            let owner = dns_name(&server.name);
            server.addresses.iter().map(move |&address| {
                Record::from_rdata(owner.clone(), zone.ttl, address_rdata(address))
            })
        })
        .collect()
}

/// The zone's synthesised SOA. The primary name server is the zone's first
/// name server (one that leads back to poolgate, see `config::NameServer`),
/// the mailbox `hostmaster.<zone>`, the serial the committed config version
/// (it grows with every change), and the minimum — the negative-caching TTL
/// — the zone's `negative_ttl` (by default `dns.ttl`, so a name that comes
/// back, a member re-enabled, is seen as soon as a positive answer would be).
pub(crate) fn soa_record(view: &PoolView, zone: &Zone, ttl: u32) -> Record {
    let apex = dns_name(&zone.name);
    let primary = zone
        .name_servers
        .first()
        .map_or_else(|| apex.clone(), |server| dns_name(&server.name));
    let mailbox = dns_name(&format!("hostmaster.{}", zone.name));
    let serial = u32::try_from(view.config_version.max(0)).unwrap_or(u32::MAX);
    Record::from_rdata(
        apex.clone(),
        ttl,
        RData::SOA(SOA::new(
            primary,
            mailbox,
            serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            zone.negative_ttl,
        )),
    )
}

/// SOA for the authority section of a negative answer: its TTL is the
/// smaller of the SOA's own TTL and its minimum (RFC 2308 §5).
fn negative_soa(view: &PoolView, zone: &Zone) -> Record {
    soa_record(view, zone, zone.ttl.min(zone.negative_ttl))
}

fn address_rdata(address: IpAddr) -> RData {
    match address {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

fn static_type(data: &RecordData) -> RecordType {
    match data {
        RecordData::A(_) => RecordType::A,
        RecordData::Aaaa(_) => RecordType::AAAA,
        RecordData::Cname(_) => RecordType::CNAME,
        RecordData::Srv { .. } => RecordType::SRV,
        RecordData::Txt(_) => RecordType::TXT,
    }
}

fn static_rdata(data: &RecordData) -> RData {
    match data {
        RecordData::A(v4) => RData::A(A(*v4)),
        RecordData::Aaaa(v6) => RData::AAAA(AAAA(*v6)),
        RecordData::Cname(target) => RData::CNAME(CNAME(dns_name(target))),
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, dns_name(target))),
        RecordData::Txt(text) => RData::TXT(TXT::new(vec![text.clone()])),
    }
}

/// A validated, normalised name as a fully qualified wire name.
fn dns_name(name: &str) -> Name {
    // The validator only admits names that `Name` accepts; the root is the
    // fallback for an impossible case rather than a panic on a query path.
    Name::from_ascii(format!("{name}.")).unwrap_or_else(|_| Name::root())
}
