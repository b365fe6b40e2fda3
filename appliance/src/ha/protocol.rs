//! The HA sync protocol: its messages, their encoding, the pairing proof and
//! the split-brain rule. Pure: no sockets, no clocks.
//!
//! A message is one line of JSON (at most [`MAX_LINE`] bytes, newline
//! ended) inside the mutual-TLS link; every message carries `protocol`, the
//! sender's protocol number.
//!
//! Compatibility rule (N and N−1 interoperate): both sides open with a
//! `hello` naming their number; the session speaks the lower of the two and
//! is refused if they differ by more than one. A newer version may only add
//! optional fields (receivers ignore fields they do not know, and default
//! the ones they miss) and new message types, which it sends only when the
//! session speaks its number. A message type a receiver does not know is
//! answered with `refused` and otherwise ignored; it never ends the link.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// This version's protocol number. 2: the admin-installed appliance
/// certificate travels (`Message::Certificate`), sent only to a peer that
/// speaks 2.
pub(crate) const PROTOCOL: u32 = 2;

/// The longest line (a config's TOML travels in one).
pub(crate) const MAX_LINE: usize = 8 * 1024 * 1024;

/// Which side commits changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    Active,
    Standby,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Standby => "standby",
        }
    }
}

/// One message with the sender's protocol number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Frame {
    pub protocol: u32,
    #[serde(flatten)]
    pub message: Message,
}

/// What the two appliances say to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Message {
    /// The joining side's first message on a new pairing: the proof that it
    /// knows the pairing code, bound to both certificates.
    Join { appliance_id: String, proof: String },
    /// The joined side's answer: its own proof.
    Joined { appliance_id: String, proof: String },
    /// Both sides' first message on a paired link.
    Hello {
        appliance_id: String,
        role: Role,
        /// The config version in force.
        version: i64,
        /// The last version known to be the same on both; `None` right
        /// after joining (nothing shared yet).
        synced: Option<i64>,
        /// Where the admin listener is (for the standby's "make changes on
        /// the active at …").
        admin_address: String,
        /// Whether this side joined the other (the other is the older side
        /// of the pair).
        joiner: bool,
        /// This side's licence, shown on the peer (each keeps its own).
        #[serde(default)]
        licence: Option<serde_json::Value>,
        /// Whether this side committed config versions of its own after
        /// the last synced one, or member actions after the link was last
        /// known up (it was active while the link was down). Absent from
        /// an older peer: `false`.
        #[serde(default)]
        changed_alone: bool,
        /// Whether keepalived's state drives this side's role (VRRP
        /// settings stored). Absent from an older peer: `false`.
        #[serde(default)]
        keepalived: bool,
    },
    /// A committed config version, in order. With `rebase`, the follower's
    /// versions after it are dropped first.
    Config {
        version: i64,
        toml: String,
        origin: String,
        #[serde(default)]
        rebase: Option<i64>,
    },
    /// One member's admin state with the time it was set (a drain's start).
    Admin {
        pool: String,
        member: String,
        state: String,
        changed_at: String,
    },
    /// The active's admin-installed appliance certificate chain and key
    /// (PEM), which the standby installs too (protocol 2).
    Certificate { certificate: String, key: String },
    /// A CA bundle (its PEM), or its deletion (`pem` absent).
    CaBundle {
        name: String,
        #[serde(default)]
        pem: Option<String>,
    },
    /// Every user and API token, as hashes (the active's, whenever they
    /// change).
    Credentials {
        credentials: crate::store::Credentials,
    },
    /// The follower applied `version`.
    Synced { version: i64 },
    /// The active sent everything up to `version` on this link's catch-up.
    CaughtUp { version: i64 },
    /// The sender asks that `new_active` becomes the active.
    Failover { new_active: String },
    /// The active gave up its role: the asking side may take it.
    FailoverDone { new_active: String },
    /// The sender unpairs.
    Unpair,
    /// Keeps an idle link alive (and shows that it is).
    Ping,
    /// The sender refused the last message, and why.
    Refused { reason: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProtocolError {
    #[error("message is not valid JSON of a known type: {0}")]
    Malformed(String),
    #[error("peer speaks protocol {peer}; this appliance speaks {ours} and {older}", older = PROTOCOL.saturating_sub(1))]
    Incompatible { peer: u32, ours: u32 },
}

/// One message as its line (newline included).
pub(crate) fn encode(message: &Message) -> Vec<u8> {
    let frame = Frame {
        protocol: PROTOCOL,
        message: message.clone(),
    };
    let mut line = serde_json::to_vec(&frame).expect("messages serialise");
    line.push(b'\n');
    line
}

/// A received line.
pub(crate) fn decode(line: &[u8]) -> Result<Frame, ProtocolError> {
    serde_json::from_slice(line).map_err(|error| ProtocolError::Malformed(error.to_string()))
}

/// The protocol a session with a peer speaking `peer` uses.
pub(crate) fn negotiate(peer: u32) -> Result<u32, ProtocolError> {
    if peer.abs_diff(PROTOCOL) > 1 || peer == 0 {
        return Err(ProtocolError::Incompatible {
            peer,
            ours: PROTOCOL,
        });
    }
    Ok(peer.min(PROTOCOL))
}

/// SHA-256 of a certificate (DER), lower-case hex: what each side pins.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key a pairing code gives: the joined side keeps only this (in
/// memory), never the code.
pub(crate) fn code_key(code: &str) -> [u8; 32] {
    let normalised: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Sha256::new()
        .chain_update(b"poolgate-ha-pairing-code\0")
        .chain_update(normalised.as_bytes())
        .finalize()
        .into()
}

/// Which side's proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProofOf {
    Joiner,
    Joined,
}

/// The proof that a side knows the code, bound to the TLS exchange: HMAC
/// over both certificates' fingerprints with the code's key, so a man in
/// the middle (who must present certificates of his own) cannot pair
/// without the code.
pub(crate) fn proof(key: &[u8; 32], of: ProofOf, joined_fp: &str, joiner_fp: &str) -> String {
    let label: &[u8] = match of {
        ProofOf::Joiner => b"join",
        ProofOf::Joined => b"joined",
    };
    let mut message = Vec::new();
    for part in [label, joined_fp.as_bytes(), joiner_fp.as_bytes()] {
        message.extend_from_slice(part);
        message.push(0);
    }
    hex(&hmac_sha256(key, &message))
}

/// Whether `given` is the expected proof, compared in constant time.
pub(crate) fn proof_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA-256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// One side as the split-brain rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Side<'a> {
    pub appliance_id: &'a str,
    pub version: i64,
    pub joiner: bool,
    pub role: Role,
    /// It committed config versions of its own after the last synced one.
    pub changed_alone: bool,
    /// keepalived's state drives its role.
    pub keepalived: bool,
}

/// What the hellos decide about the roles, seen from `us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Keep the roles as they are (they differ, and nothing would be lost).
    Keep,
    /// `us` is active (`true`) or standby (`false`), by [`Rule`].
    Active(bool, Rule),
}

/// Which part of the rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Only one side committed changes of its own during the split: its
    /// history wins, so nothing is lost.
    OnlyOneChanged,
    /// Both did (or both claim the same role): [`wins`].
    Versions,
}

/// The split-brain rule at a hello. A side that committed changes of its
/// own after the last synced version was active without the other: when
/// only one did, its history wins whatever the roles are now (with VRRP,
/// keepalived may already have made it standby as the link came back);
/// when both did, [`wins`] decides. When neither did, the roles stand
/// (keepalived's or the admin's choice), except that two sides claiming
/// the same role without keepalived on both are told apart by [`wins`]:
/// with keepalived on both, two standbys wait for its MASTER and two
/// actives for its election (two masters that hear each other settle
/// within an advert). Pure, symmetric: both sides reach the same answer.
pub(crate) fn decide(us: &Side<'_>, peer: &Side<'_>) -> Decision {
    match (us.changed_alone, peer.changed_alone) {
        (true, false) => Decision::Active(true, Rule::OnlyOneChanged),
        (false, true) => Decision::Active(false, Rule::OnlyOneChanged),
        (true, true) => Decision::Active(wins(us, peer), Rule::Versions),
        (false, false) if us.role == peer.role && !(us.keepalived && peer.keepalived) => {
            Decision::Active(wins(us, peer), Rule::Versions)
        }
        (false, false) => Decision::Keep,
    }
}

/// When both sides claim the same role (both active after a split, or both
/// standby), whether `us` keeps (or takes) the active role. The rule:
/// the higher committed config version wins; on a tie, the side that was
/// joined (the older side of the pair); should both say the same, the
/// lower appliance id. Both sides compute it from the two hellos and reach
/// the same answer.
pub(crate) fn wins(us: &Side<'_>, peer: &Side<'_>) -> bool {
    if us.version != peer.version {
        return us.version > peer.version;
    }
    if us.joiner != peer.joiner {
        return !us.joiner;
    }
    us.appliance_id < peer.appliance_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_case_6_with_a_long_key() {
        let key = [0xaa; 131];
        let mac = hmac_sha256(
            &key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn messages_round_trip_and_carry_the_protocol() {
        let messages = [
            Message::Hello {
                appliance_id: "a".into(),
                role: Role::Active,
                version: 7,
                synced: Some(6),
                admin_address: "127.0.0.1:8443".into(),
                joiner: false,
                licence: None,
                changed_alone: true,
                keepalived: true,
            },
            Message::Config {
                version: 8,
                toml: "[listen]\nadmin = \"127.0.0.1:1\"\n".into(),
                origin: "API (admin)".into(),
                rebase: Some(5),
            },
            Message::Admin {
                pool: "p".into(),
                member: "m".into(),
                state: "draining".into(),
                changed_at: "2026-01-01T00:00:00Z".into(),
            },
            Message::Synced { version: 8 },
            Message::Unpair,
            Message::Ping,
            Message::Certificate {
                certificate: "-----BEGIN CERTIFICATE-----".into(),
                key: "-----BEGIN PRIVATE KEY-----".into(),
            },
        ];
        for message in messages {
            let line = encode(&message);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
            let text = String::from_utf8(line.clone()).expect("utf-8");
            assert!(
                text.starts_with(&format!("{{\"protocol\":{PROTOCOL},")),
                "{text}"
            );
            assert_eq!(decode(&line).expect("decodes").message, message);
        }
    }

    #[test]
    fn an_older_peer_without_new_fields_and_a_newer_one_with_unknown_fields_are_read() {
        let older = br#"{"protocol":1,"type":"hello","appliance_id":"b","role":"standby","version":3,"synced":3,"admin_address":"x","joiner":true}"#;
        let frame = decode(older).expect("older hello");
        assert!(matches!(
            frame.message,
            Message::Hello {
                licence: None,
                changed_alone: false,
                keepalived: false,
                ..
            }
        ));
        let newer = br#"{"protocol":2,"type":"synced","version":4,"acked_at":"later"}"#;
        let frame = decode(newer).expect("newer synced");
        assert_eq!(frame.protocol, 2);
        assert_eq!(frame.message, Message::Synced { version: 4 });
        assert!(decode(br#"{"protocol":2,"type":"teleport"}"#).is_err());
        assert!(decode(b"not json").is_err());
    }

    #[test]
    fn n_and_n_minus_one_interoperate_and_nothing_further() {
        assert_eq!(negotiate(PROTOCOL), Ok(PROTOCOL));
        assert_eq!(negotiate(PROTOCOL + 1), Ok(PROTOCOL));
        assert_eq!(negotiate(PROTOCOL - 1), Ok(PROTOCOL - 1), "N-1 peers");
        assert!(negotiate(PROTOCOL + 2).is_err());
        assert!(negotiate(0).is_err());
    }

    #[test]
    fn the_proof_binds_the_code_and_both_certificates() {
        let key = code_key("ABCD-EFGH-JKLM-NPQR");
        assert_eq!(
            key,
            code_key("abcd efgh jklm npqr"),
            "spacing and case do not matter"
        );
        let good = proof(&key, ProofOf::Joiner, "aa", "bb");
        assert!(proof_matches(
            &good,
            &proof(&key, ProofOf::Joiner, "aa", "bb")
        ));
        // Another code, another certificate on either side (a man in the
        // middle), or the other side's proof: all different.
        for other in [
            proof(&code_key("WRONG-CODE"), ProofOf::Joiner, "aa", "bb"),
            proof(&key, ProofOf::Joiner, "cc", "bb"),
            proof(&key, ProofOf::Joiner, "aa", "cc"),
            proof(&key, ProofOf::Joined, "aa", "bb"),
        ] {
            assert!(!proof_matches(&good, &other));
        }
        assert!(!proof_matches(&good, "short"));
    }

    #[test]
    fn the_higher_version_wins_a_split_then_the_joined_side_then_the_lower_id() {
        let side = |id, version, joiner| Side {
            appliance_id: id,
            version,
            joiner,
            role: Role::Active,
            changed_alone: false,
            keepalived: false,
        };
        let (a, b) = (side("a", 5, false), side("b", 7, true));
        assert!(wins(&b, &a) && !wins(&a, &b), "higher version");
        let (a, b) = (side("z", 7, false), side("b", 7, true));
        assert!(wins(&a, &b) && !wins(&b, &a), "tie: the joined side");
        let (a, b) = (side("a", 7, false), side("b", 7, false));
        assert!(wins(&a, &b) && !wins(&b, &a), "inconsistent: lower id");
        // Exactly one side wins whatever the inputs.
        for (va, vb) in [(1, 1), (1, 2), (3, 2)] {
            for (ja, jb) in [(false, true), (true, false), (false, false)] {
                let (a, b) = (side("a", va, ja), side("b", vb, jb));
                assert_ne!(wins(&a, &b), wins(&b, &a));
            }
        }
    }

    #[test]
    fn the_side_that_changed_alone_wins_whatever_the_roles_are_now() {
        let side = |id, version, joiner, role, changed_alone| Side {
            appliance_id: id,
            version,
            joiner,
            role,
            changed_alone,
            keepalived: false,
        };
        use Role::{Active, Standby};
        // keepalived made the changed side standby as the link came back:
        // it becomes active again, nothing it did is lost.
        let (a, b) = (
            side("a", 9, false, Active, false),
            side("b", 10, true, Standby, true),
        );
        assert_eq!(
            decide(&a, &b),
            Decision::Active(false, Rule::OnlyOneChanged)
        );
        assert_eq!(decide(&b, &a), Decision::Active(true, Rule::OnlyOneChanged));
        // Both changed: the versions rule, even with roles that differ.
        let (a, b) = (
            side("a", 12, false, Standby, true),
            side("b", 11, true, Active, true),
        );
        assert_eq!(decide(&a, &b), Decision::Active(true, Rule::Versions));
        assert_eq!(decide(&b, &a), Decision::Active(false, Rule::Versions));
        // Neither changed, roles differ: they stand.
        let (a, b) = (
            side("a", 9, false, Active, false),
            side("b", 9, true, Standby, false),
        );
        assert_eq!(decide(&a, &b), Decision::Keep);
        // Neither changed, same role: the versions rule.
        let (a, b) = (
            side("a", 9, false, Standby, false),
            side("b", 9, true, Standby, false),
        );
        assert_eq!(decide(&a, &b), Decision::Active(true, Rule::Versions));
        assert_eq!(decide(&b, &a), Decision::Active(false, Rule::Versions));
        // With keepalived on both, neither changed: keepalived decides.
        let with = |side: Side<'static>| Side {
            keepalived: true,
            ..side
        };
        let (a, b) = (
            with(side("a", 9, false, Standby, false)),
            with(side("b", 9, true, Standby, false)),
        );
        assert_eq!(decide(&a, &b), Decision::Keep);
        let (a, b) = (
            with(side("a", 9, false, Active, true)),
            with(side("b", 9, true, Active, false)),
        );
        assert_eq!(decide(&a, &b), Decision::Active(true, Rule::OnlyOneChanged));
        // Symmetric whatever the inputs: exactly one active, or both keep.
        for ca in [false, true] {
            for cb in [false, true] {
                for (ra, rb) in [
                    (Active, Active),
                    (Active, Standby),
                    (Standby, Active),
                    (Standby, Standby),
                ] {
                    let (a, b) = (side("a", 3, false, ra, ca), side("b", 4, true, rb, cb));
                    match (decide(&a, &b), decide(&b, &a)) {
                        (Decision::Keep, Decision::Keep) => assert_ne!(ra, rb),
                        (Decision::Active(x, _), Decision::Active(y, _)) => assert_ne!(x, y),
                        other => panic!("asymmetric: {other:?}"),
                    }
                }
            }
        }
    }
}
