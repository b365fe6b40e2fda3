//! The fast path for the hot names: pool FQDNs, aliases and member FQDNs
//! asked for A or AAAA in a plain query. Their resource records are encoded
//! once per `PoolView` generation (owner = a compression pointer to the
//! question), so answering is a hash lookup, a shuffle of record slots and a
//! few copies — no message parsing or name encoding per query.
//!
//! `try_respond` accepts only the plainest shape (one IN question with no
//! compression, no other records except an empty EDNS version 0 OPT) and only
//! a positive answer that fits the size limit; everything else returns `None`
//! and takes the full path (`wire::respond`). It must produce the same answer
//! the full path would (tests compare them), so it is an optimisation, never
//! a second set of rules. Pure: no I/O, no clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rand::Rng;
use rand::seq::SliceRandom;

use super::wire::{MAX_UDP_PAYLOAD, MIN_UDP_PAYLOAD, Transport};
use crate::state::PoolView;

const HEADER_LEN: usize = 12;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// The DO bit in the high byte of the OPT record's flags.
const DO_BIT: u8 = 0x80;
/// Pointer to the question name, which always starts right after the header.
const QUESTION_POINTER: [u8; 2] = [0xc0, 0x0c];
/// Most records one precomputed answer may hold (a pool's member limit).
const MAX_RECORDS: usize = 64;

/// Encoded answers of one generation, keyed by lower-case wire-format name.
#[derive(Debug, Default)]
pub(crate) struct FastAnswers {
    generation: u64,
    a: HashMap<Box<[u8]>, Vec<Box<[u8]>>>,
    aaaa: HashMap<Box<[u8]>, Vec<Box<[u8]>>>,
}

impl FastAnswers {
    pub(crate) fn build(view: &PoolView) -> Self {
        let ttl = view.config.dns.ttl.to_be_bytes();
        let mut answers = Self {
            generation: view.generation,
            ..Self::default()
        };
        for (name, answer) in &view.dns {
            let Some(key) = wire_name(name) else { continue };
            let mut a = Vec::new();
            let mut aaaa = Vec::new();
            for address in &answer.addresses {
                let mut record = Vec::with_capacity(28);
                record.extend_from_slice(&QUESTION_POINTER);
                let (rtype, data): (u16, Vec<u8>) = match address {
                    IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
                    IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
                };
                record.extend_from_slice(&rtype.to_be_bytes());
                record.extend_from_slice(&CLASS_IN.to_be_bytes());
                record.extend_from_slice(&ttl);
                record.extend_from_slice(&(data.len() as u16).to_be_bytes());
                record.extend_from_slice(&data);
                match address {
                    IpAddr::V4(_) => a.push(record.into_boxed_slice()),
                    IpAddr::V6(_) => aaaa.push(record.into_boxed_slice()),
                }
            }
            // Empty sets are NODATA, which carries the SOA: the full path's job.
            if !a.is_empty() && a.len() <= MAX_RECORDS {
                answers.a.insert(key.clone(), a);
            }
            if !aaaa.is_empty() && aaaa.len() <= MAX_RECORDS {
                answers.aaaa.insert(key, aaaa);
            }
        }
        answers
    }
}

/// `name` (lower case, no trailing dot) in wire format, or `None` if a label
/// is empty or too long.
fn wire_name(name: &str) -> Option<Box<[u8]>> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        let length = u8::try_from(label.len())
            .ok()
            .filter(|&l| (1..=63).contains(&l))?;
        out.push(length);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    (out.len() <= 255).then(|| out.into_boxed_slice())
}

/// The fast answer to `packet`, or `None` to take the full path.
pub(crate) fn try_respond(
    packet: &[u8],
    answers: &FastAnswers,
    transport: Transport,
    rng: &mut impl Rng,
) -> Option<Vec<u8>> {
    let header = packet.get(..HEADER_LEN)?;
    // QR = 0 and OPCODE = QUERY; one question, no answer or authority
    // records, at most the OPT record.
    if header[2] & 0xf8 != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }

    // The question name, lower-cased as we go; no compression in a question.
    let mut key = [0u8; 255];
    let mut at = HEADER_LEN;
    loop {
        let length = usize::from(*packet.get(at)?);
        if length > 63 || at - HEADER_LEN + length + 1 > 255 {
            return None;
        }
        let label = packet.get(at..=at + length)?;
        for (slot, byte) in key[at - HEADER_LEN..].iter_mut().zip(label) {
            *slot = byte.to_ascii_lowercase();
        }
        at += length + 1;
        if length == 0 {
            break;
        }
    }
    let name = &key[..at - HEADER_LEN];
    let fixed = packet.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    let question_end = at + 4;
    if qclass != CLASS_IN {
        return None;
    }

    // Optional OPT: root owner, version 0, no extended rcode, no options.
    let rest = &packet[question_end..];
    // The DO bit is copied into the reply's OPT (RFC 3225 §3).
    let (edns_payload, dnssec_ok) = match (count(10), rest) {
        (0, []) => (None, 0),
        (1, [0, 0, 41, p1, p2, 0, 0, flags, _, 0, 0]) => {
            debug_assert_eq!(TYPE_OPT, 41);
            (Some(u16::from_be_bytes([*p1, *p2])), flags & DO_BIT)
        }
        _ => return None,
    };

    let records = match qtype {
        TYPE_A => answers.a.get(name)?,
        TYPE_AAAA => answers.aaaa.get(name)?,
        _ => return None,
    };
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => usize::from(edns_payload.map_or(MIN_UDP_PAYLOAD, |p| {
            p.clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
        })),
    };
    let record_bytes: usize = records.iter().map(|record| record.len()).sum();
    let opt_len = if edns_payload.is_some() { 11 } else { 0 };
    let total = question_end + record_bytes + opt_len;
    if total > limit {
        // Truncation is decided by the full path.
        return None;
    }

    let mut order = [0u8; MAX_RECORDS];
    let order = &mut order[..records.len()];
    for (i, slot) in order.iter_mut().enumerate() {
        *slot = i as u8;
    }
    order.shuffle(rng);

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&header[..2]);
    // QR, AA, and the client's RD; RA = 0, RCODE = NOERROR.
    out.push(0x84 | (header[2] & 0x01));
    out.push(0);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&u16::from(edns_payload.is_some()).to_be_bytes());
    out.extend_from_slice(&packet[HEADER_LEN..question_end]);
    for &i in order.iter() {
        out.extend_from_slice(&records[usize::from(i)]);
    }
    if edns_payload.is_some() {
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, dnssec_ok, 0, 0, 0]);
    }
    Some(out)
}

/// The fast answers of the newest generation, shared by every listener and
/// rebuilt by whichever query first sees a new generation.
#[derive(Debug, Default)]
pub(crate) struct FastCache {
    current: Mutex<Arc<FastAnswers>>,
}

impl FastCache {
    pub(crate) fn for_view(&self, view: &PoolView) -> Arc<FastAnswers> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.generation != view.generation {
            *current = Arc::new(FastAnswers::build(view));
        }
        Arc::clone(&current)
    }
}
