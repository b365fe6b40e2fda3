//! The request path as a pure function: request bytes and a `PoolView` in,
//! response bytes (or a reason to stay silent) out. Both listeners (UDP and
//! TCP) and the fuzz target go through `respond`, so what the fuzzer covers is
//! exactly what the network reaches.
//!
//! Protocol rules owned here: a packet shorter than a header or already a
//! response is dropped (answering responses would make us a reflector);
//! anything else that does not parse gets FORMERR; opcodes other than QUERY
//! get NOTIMP; exactly one question of class IN (or ANY); EDNS version above 0
//! gets BADVERS; the advertised UDP payload is clamped to 512–1232; the DO bit
//! of the query's OPT is copied into the reply's (RFC 3225 §3); zone transfers
//! (AXFR, IXFR) are REFUSED — poolgate is the only authority of its zones and
//! has no secondaries; a query signed with TSIG gets NOTAUTH with an unsigned
//! TSIG record carrying BADKEY (RFC 8945 §5.2: poolgate holds no TSIG keys, so
//! every key is unknown); a UDP answer that does not fit is sent as header +
//! question with TC set, and over TCP the answer is always complete.

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TSIG, TsigError, make_tsig_record};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use rand::Rng;

use super::answer;
use crate::state::PoolView;

/// Largest UDP payload we advertise and use: the DNS flag day 2020 value,
/// which avoids IP fragmentation on every common path.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Classic DNS limit; also the floor for an EDNS-advertised size (RFC 6891).
pub(crate) const MIN_UDP_PAYLOAD: u16 = 512;
/// DNS header length.
const HEADER_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Why a packet got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Shorter than a DNS header: nothing to address a response to.
    TooShort,
    /// The packet is itself a response.
    NotAQuery,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reply {
        bytes: Vec<u8>,
        rcode: ResponseCode,
        /// The UDP answer did not fit and was cut to header + question.
        truncated: bool,
    },
    Silent(Silence),
}

/// Answer one DNS message.
pub fn respond(
    packet: &[u8],
    view: &PoolView,
    transport: Transport,
    rng: &mut impl Rng,
) -> Outcome {
    if packet.len() < HEADER_LEN {
        return Outcome::Silent(Silence::TooShort);
    }
    let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
        return Outcome::Silent(Silence::TooShort);
    };
    if header.metadata.message_type == MessageType::Response {
        return Outcome::Silent(Silence::NotAQuery);
    }
    let id = header.metadata.id;
    let op_code = header.metadata.op_code;
    let request = match Message::from_vec(packet) {
        Ok(request) => request,
        Err(_) => {
            let mut response = Message::error_msg(id, op_code, ResponseCode::FormErr);
            response.metadata.recursion_desired = header.metadata.recursion_desired;
            return encode(&response, usize::from(MIN_UDP_PAYLOAD), false);
        }
    };

    let mut response = Message::response(id, op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.queries.clone_from(&request.queries);
    // The client's EDNS decides the UDP size limit and whether we send OPT.
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => usize::from(request.edns.as_ref().map_or(MIN_UDP_PAYLOAD, |edns| {
            edns.max_payload().clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
        })),
    };
    if let Some(asked) = &request.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD)
            .set_version(0)
            .set_dnssec_ok(asked.flags().dnssec_ok);
        response.edns = Some(edns);
    }

    let rcode = if let Some(tsig) = unknown_key(&request) {
        // Unsigned, as RFC 8945 §5.3.2 requires for a key error.
        response.signature = Some(Box::new(tsig));
        ResponseCode::NotAuth
    } else if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
        ResponseCode::BADVERS
    } else if op_code != OpCode::Query {
        ResponseCode::NotImp
    } else if request.queries.len() != 1 {
        ResponseCode::FormErr
    } else {
        let query: &Query = &request.queries[0];
        if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY)
            || matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR)
        {
            ResponseCode::Refused
        } else {
            let result = answer::answer(view, query.name(), query.query_type(), rng);
            response.metadata.authoritative = result.authoritative;
            response.answers = result.answers;
            response.authorities = result.authorities;
            response.additionals = result.additionals;
            result.rcode
        }
    };
    response.metadata.response_code = rcode;
    encode(&response, limit, true)
}

/// The TSIG record of the error answer to a signed `request`, or `None` if it
/// is not signed. The key (named by the record's owner) is never known, so
/// the answer is BADKEY with an empty MAC; the time and fudge are the
/// request's own, which keeps this path free of a clock (the client does not
/// check the time of an unsigned error).
fn unknown_key(request: &Message) -> Option<hickory_proto::rr::Record<TSIG>> {
    let record = request
        .additionals
        .iter()
        .find(|record| record.record_type() == RecordType::TSIG)?;
    let RData::TSIG(asked) = &record.data else {
        return None;
    };
    Some(make_tsig_record(
        record.name.clone(),
        TSIG::new(
            asked.algorithm.clone(),
            asked.time,
            asked.fudge,
            Vec::new(),
            request.metadata.id,
            Some(TsigError::BadKey),
            Vec::new(),
        ),
    ))
}

/// Serialise `response`; if it exceeds `limit`, send header + question + OPT
/// with TC set so the client retries over TCP.
fn encode(response: &Message, limit: usize, may_truncate: bool) -> Outcome {
    let rcode = response.metadata.response_code;
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit || !may_truncate => Outcome::Reply {
            bytes,
            rcode,
            truncated: false,
        },
        Ok(_) => {
            let mut cut = response.clone();
            cut.answers.clear();
            cut.authorities.clear();
            cut.additionals.clear();
            cut.metadata.truncation = true;
            // The TSIG (if any) stays: it is what the answer is about.
            match cut.to_vec() {
                Ok(bytes) if bytes.len() <= limit => Outcome::Reply {
                    bytes,
                    rcode,
                    truncated: true,
                },
                // Even the question does not fit: a bare header says so.
                _ => bare_header(response, ResponseCode::ServFail, true),
            }
        }
        Err(_) => bare_header(response, ResponseCode::ServFail, false),
    }
}

fn bare_header(response: &Message, rcode: ResponseCode, truncated: bool) -> Outcome {
    let mut bare = Message::error_msg(response.metadata.id, response.metadata.op_code, rcode);
    bare.metadata.truncation = truncated;
    bare.metadata.recursion_desired = response.metadata.recursion_desired;
    match bare.to_vec() {
        Ok(bytes) => Outcome::Reply {
            bytes,
            rcode,
            truncated,
        },
        Err(_) => Outcome::Silent(Silence::TooShort),
    }
}
