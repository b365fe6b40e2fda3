//! The SNMP settings of this appliance as the admin writes them (JSON
//! through `PUT /api/v1/system/snmp`, kept in the settings store, never
//! synced to an HA peer): a read-only v2c community and the sources it is
//! answered from, v3 users (always authPriv, SHA and AES), and trap sinks.
//! snmpd enforces them; poolgate renders its snmpd.conf ([`render`]).
//!
//! Passwords and communities are write-only: [`SnmpSettings::redacted`] is
//! what `GET` shows, and a `PUT` names them again.
//!
//! [`validate`] is the one place that says whether settings can be
//! rendered; every problem names its field.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::web::FieldProblem;

pub(crate) const MAX_USERS: usize = 16;
pub(crate) const MAX_SINKS: usize = 8;
pub(crate) const MAX_SOURCES: usize = 32;
const REDACTED: &str = "********";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnmpSettings {
    /// The read-only SNMPv2c community; none: no v2c at all.
    #[serde(default)]
    pub community: Option<String>,
    /// Networks v2c requests are answered from (default: any).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub community_sources: Vec<ipnet::IpNet>,
    /// SNMPv3 users: read-only, authPriv with SHA and AES.
    #[serde(default)]
    pub users: Vec<SnmpUser>,
    /// Where notifications go.
    #[serde(default)]
    pub trap_sinks: Vec<TrapSink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnmpUser {
    pub name: String,
    /// SHA authentication passphrase, 8 to 64 characters.
    pub auth_password: String,
    /// AES privacy passphrase, 8 to 64 characters.
    pub priv_password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrapSink {
    #[schema(value_type = String)]
    pub host: IpAddr,
    /// Default 162.
    #[serde(default)]
    pub port: Option<u16>,
    /// `v2c` (a trap with `community`) or `v3` (a trap as `user`).
    pub version: TrapVersion,
    #[serde(default)]
    pub community: Option<String>,
    /// One of `users`, for `v3`.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrapVersion {
    V2c,
    V3,
}

impl SnmpSettings {
    /// The settings without their secrets, as `GET` shows them.
    pub(crate) fn redacted(&self) -> Self {
        let mut shown = self.clone();
        if let Some(community) = &mut shown.community {
            *community = REDACTED.into();
        }
        for user in &mut shown.users {
            user.auth_password = REDACTED.into();
            user.priv_password = REDACTED.into();
        }
        for sink in &mut shown.trap_sinks {
            if let Some(community) = &mut sink.community {
                *community = REDACTED.into();
            }
        }
        shown
    }
}

fn problem(field: String, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field,
        message: message.into(),
        line: None,
        column: None,
    }
}

/// A token snmpd.conf takes inside double quotes: printable ASCII
/// without `"` or `\`.
fn quotable(text: &str) -> bool {
    text.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

/// A bare snmpd.conf word: letters, digits, `-`, `_`, `.`.
fn word(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_community(out: &mut Vec<FieldProblem>, field: String, community: &str) {
    if !word(community, 32) {
        out.push(problem(field, "1 to 32 letters, digits, '-', '_' or '.'"));
    }
}

fn check_password(out: &mut Vec<FieldProblem>, field: String, password: &str) {
    if password == REDACTED {
        out.push(problem(
            field,
            "passwords are not shown by GET: give the password itself",
        ));
    } else if !(8..=64).contains(&password.len()) || !quotable(password) {
        out.push(problem(
            field,
            "8 to 64 printable ASCII characters without '\"' or '\\'",
        ));
    }
}

/// Every problem of `settings`, by field; empty when they can be rendered.
pub(crate) fn validate(settings: &SnmpSettings) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    if let Some(community) = &settings.community {
        if community == REDACTED {
            out.push(problem(
                "community".into(),
                "the community is not shown by GET: give it again",
            ));
        } else {
            check_community(&mut out, "community".into(), community);
        }
    }
    if !settings.community_sources.is_empty() && settings.community.is_none() {
        out.push(problem("community_sources".into(), "only with a community"));
    }
    if settings.community_sources.len() > MAX_SOURCES {
        out.push(problem(
            "community_sources".into(),
            format!("at most {MAX_SOURCES} networks"),
        ));
    }
    if settings.community.is_none() && settings.users.is_empty() {
        out.push(problem(
            "users".into(),
            "name a v3 user or a community (DELETE turns SNMP off)",
        ));
    }
    if settings.users.len() > MAX_USERS {
        out.push(problem(
            "users".into(),
            format!("at most {MAX_USERS} users"),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, user) in settings.users.iter().enumerate() {
        if !word(&user.name, 32) {
            out.push(problem(
                format!("users[{i}].name"),
                "1 to 32 letters, digits, '-', '_' or '.'",
            ));
        } else if !names.insert(user.name.as_str()) {
            out.push(problem(
                format!("users[{i}].name"),
                format!("{} is named twice", user.name),
            ));
        }
        check_password(
            &mut out,
            format!("users[{i}].auth_password"),
            &user.auth_password,
        );
        check_password(
            &mut out,
            format!("users[{i}].priv_password"),
            &user.priv_password,
        );
    }
    if settings.trap_sinks.len() > MAX_SINKS {
        out.push(problem(
            "trap_sinks".into(),
            format!("at most {MAX_SINKS} sinks"),
        ));
    }
    for (i, sink) in settings.trap_sinks.iter().enumerate() {
        let field = |name: &str| format!("trap_sinks[{i}].{name}");
        if sink.host.is_unspecified() || sink.host.is_multicast() {
            out.push(problem(field("host"), "the address of one host"));
        }
        if sink.port == Some(0) {
            out.push(problem(field("port"), "a port from 1 to 65535"));
        }
        match (sink.version, &sink.community, &sink.user) {
            (TrapVersion::V2c, Some(community), None) => {
                check_community(&mut out, field("community"), community);
            }
            (TrapVersion::V2c, None, _) => {
                out.push(problem(field("community"), "required for a v2c sink"));
            }
            (TrapVersion::V2c, Some(_), Some(_)) => {
                out.push(problem(field("user"), "only for a v3 sink"));
            }
            (TrapVersion::V3, _, Some(user)) => {
                if sink.community.is_some() {
                    out.push(problem(field("community"), "only for a v2c sink"));
                }
                if !names.contains(user.as_str()) {
                    out.push(problem(
                        field("user"),
                        format!("no user {user:?} among users"),
                    ));
                }
            }
            (TrapVersion::V3, _, None) => {
                out.push(problem(
                    field("user"),
                    "required for a v3 sink: one of users",
                ));
            }
        }
    }
    out
}

/// Where the rendered snmpd.conf points snmpd.
#[derive(Debug, Clone)]
pub(crate) struct RenderPaths {
    /// Where snmpd listens (`agentAddress`).
    pub agent_address: String,
    /// The AgentX socket snmpd opens and poolgate connects to.
    pub agentx_socket: std::path::PathBuf,
    /// The group that may connect to it (poolgate's).
    pub agentx_group: String,
}

/// The text of snmpd.conf for `settings` (which passed [`validate`]).
pub(crate) fn render(settings: &SnmpSettings, paths: &RenderPaths) -> String {
    let mut out = String::from(
        "# Rendered by poolgate from its SNMP settings (PUT /api/v1/system/snmp);\n\
         # changes made here are overwritten.\n\
         master agentx\n",
    );
    out.push_str(&format!(
        "agentAddress {}\nagentXSocket {}\nagentXPerms 0660 0750 root {}\n",
        paths.agent_address,
        paths.agentx_socket.display(),
        paths.agentx_group
    ));
    out.push_str(
        "# What anyone who may read sees: the system group and POOLGATE-MIB.\n\
         view poolgate included .1.3.6.1.2.1.1\n\
         view poolgate included .1.3.6.1.4.1.32473\n",
    );
    if let Some(community) = &settings.community {
        let any = [
            "0.0.0.0/0".parse().expect("net"),
            "::/0".parse().expect("net"),
        ];
        let sources = match settings.community_sources.is_empty() {
            true => &any[..],
            false => &settings.community_sources[..],
        };
        for source in sources {
            let directive = match source {
                ipnet::IpNet::V4(_) => "rocommunity",
                ipnet::IpNet::V6(_) => "rocommunity6",
            };
            let source = match source.prefix_len() {
                0 => "default".to_owned(),
                _ => source.to_string(),
            };
            out.push_str(&format!("{directive} {community} {source} -V poolgate\n"));
        }
    }
    for user in &settings.users {
        out.push_str(&format!(
            "createUser {} SHA \"{}\" AES \"{}\"\nrouser {} priv -V poolgate\n",
            user.name, user.auth_password, user.priv_password, user.name
        ));
    }
    for sink in &settings.trap_sinks {
        let address = std::net::SocketAddr::new(sink.host, sink.port.unwrap_or(162));
        let target = match address {
            std::net::SocketAddr::V4(a) => format!("udp:{a}"),
            std::net::SocketAddr::V6(a) => format!("udp6:{a}"),
        };
        match (sink.version, &sink.community, &sink.user) {
            (TrapVersion::V2c, Some(community), _) => {
                out.push_str(&format!("trap2sink {target} {community}\n"));
            }
            (TrapVersion::V3, _, Some(name)) => {
                if let Some(user) = settings.users.iter().find(|u| &u.name == name) {
                    out.push_str(&format!(
                        "trapsess -v3 -u {} -l authPriv -a SHA -A \"{}\" -x AES -X \"{}\" {target}\n",
                        user.name, user.auth_password, user.priv_password
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SnmpSettings {
        serde_json::from_value(serde_json::json!({
            "community": "monitoring",
            "community_sources": ["10.1.0.0/16", "2001:db8::/32"],
            "users": [{"name": "nms", "auth_password": "auth-pass-1", "priv_password": "priv-pass-1"}],
            "trap_sinks": [
                {"host": "10.1.2.3", "version": "v2c", "community": "traps"},
                {"host": "2001:db8::9", "port": 1162, "version": "v3", "user": "nms"}
            ]
        }))
        .expect("settings parse")
    }

    fn paths() -> RenderPaths {
        RenderPaths {
            agent_address: "udp:161,udp6:161".into(),
            agentx_socket: "/run/snmpd/agentx".into(),
            agentx_group: "poolgate".into(),
        }
    }

    #[test]
    fn sound_settings_render_every_directive() {
        let settings = settings();
        assert!(validate(&settings).is_empty(), "{:?}", validate(&settings));
        let text = render(&settings, &paths());
        for line in [
            "master agentx",
            "agentAddress udp:161,udp6:161",
            "agentXSocket /run/snmpd/agentx",
            "agentXPerms 0660 0750 root poolgate",
            "rocommunity monitoring 10.1.0.0/16 -V poolgate",
            "rocommunity6 monitoring 2001:db8::/32 -V poolgate",
            "createUser nms SHA \"auth-pass-1\" AES \"priv-pass-1\"",
            "rouser nms priv -V poolgate",
            "trap2sink udp:10.1.2.3:162 traps",
            "trapsess -v3 -u nms -l authPriv -a SHA -A \"auth-pass-1\" -x AES -X \"priv-pass-1\" udp6:[2001:db8::9]:1162",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        let open: SnmpSettings =
            serde_json::from_value(serde_json::json!({"community": "public"})).expect("parses");
        let text = render(&open, &paths());
        assert!(
            text.contains("rocommunity public default -V poolgate\n"),
            "{text}"
        );
        assert!(
            text.contains("rocommunity6 public default -V poolgate\n"),
            "{text}"
        );
    }

    #[test]
    fn secrets_are_redacted_and_a_redacted_secret_is_refused() {
        let shown = settings().redacted();
        assert_eq!(shown.community.as_deref(), Some(REDACTED));
        assert_eq!(shown.users[0].auth_password, REDACTED);
        assert_eq!(shown.trap_sinks[0].community.as_deref(), Some(REDACTED));
        let fields: Vec<String> = validate(&shown).into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "community",
                "users[0].auth_password",
                "users[0].priv_password",
                "trap_sinks[0].community"
            ]
        );
    }

    #[test]
    fn each_problem_names_its_field() {
        let bad: SnmpSettings = serde_json::from_value(serde_json::json!({
            "community_sources": ["10.0.0.0/8"],
            "users": [
                {"name": "a b", "auth_password": "short", "priv_password": "has\"quote"},
                {"name": "ok", "auth_password": "long-enough", "priv_password": "long-enough"},
                {"name": "ok", "auth_password": "long-enough", "priv_password": "long-enough"}
            ],
            "trap_sinks": [
                {"host": "0.0.0.0", "version": "v2c"},
                {"host": "10.0.0.1", "port": 0, "version": "v3", "user": "nobody"}
            ]
        }))
        .expect("parses");
        let fields: Vec<String> = validate(&bad).into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "community_sources",
                "users[0].name",
                "users[0].auth_password",
                "users[0].priv_password",
                "users[2].name",
                "trap_sinks[0].host",
                "trap_sinks[0].community",
                "trap_sinks[1].port",
                "trap_sinks[1].user",
            ]
        );
        let empty = SnmpSettings::default();
        let fields: Vec<String> = validate(&empty).into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["users"]);
        assert!(serde_json::from_str::<SnmpSettings>(r#"{"communty":"x"}"#).is_err());
    }
}
