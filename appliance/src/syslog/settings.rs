//! The remote syslog settings of this appliance as the admin writes them
//! (JSON through `PUT /api/v1/system/syslog`, kept in the settings store):
//! they belong to one appliance and are never synced to an HA peer, whose
//! own hostname tells the collector which appliance spoke.
//!
//! [`validate`] is the one place that says whether settings can be used;
//! every problem names its field (`servers[1].port`).

use serde::{Deserialize, Serialize};

use crate::health::ca::CaBundles;
use crate::web::FieldProblem;

/// Collectors at most: each has its own queue and connection.
pub(crate) const MAX_SERVERS: usize = 8;

/// Where events go, and which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyslogSettings {
    /// One to eight collectors; each gets every event at or above its
    /// minimum severity.
    pub servers: Vec<SyslogServer>,
}

/// One collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyslogServer {
    /// A host name or an IP address. Over TLS the collector's certificate
    /// must name it.
    pub host: String,
    /// Default 6514 for `tcp+tls` (RFC 5425), 514 otherwise.
    #[serde(default)]
    pub port: Option<u16>,
    /// `tcp+tls` (RFC 5425, the default), `tcp` (RFC 6587 octet counting)
    /// or `udp` (RFC 5426, for old collectors; a lost datagram is lost).
    #[serde(default)]
    pub transport: Transport,
    /// For `tcp+tls`: the CA bundle (`/api/v1/ca-bundles`) the collector's
    /// certificate is verified with.
    #[serde(default)]
    pub ca_bundle: Option<String>,
    /// The least severe events sent (default `info`: everything poolgate
    /// records).
    #[serde(default = "default_severity")]
    pub min_severity: Severity,
}

impl SyslogServer {
    pub(crate) fn port(&self) -> u16 {
        self.port.unwrap_or(match self.transport {
            Transport::TcpTls => 6514,
            Transport::Tcp | Transport::Udp => 514,
        })
    }

    /// How the server is named in metrics and the status: `host:port/transport`.
    pub(crate) fn label(&self) -> String {
        let host = match self.host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{}]", self.host),
            Err(_) => self.host.clone(),
        };
        format!("{host}:{}/{}", self.port(), self.transport.as_str())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Transport {
    #[default]
    #[serde(rename = "tcp+tls")]
    TcpTls,
    #[serde(rename = "tcp")]
    Tcp,
    #[serde(rename = "udp")]
    Udp,
}

impl Transport {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::TcpTls => "tcp+tls",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// RFC 5424 severities, most severe first (their numeric values).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Emergency = 0,
    Alert = 1,
    Critical = 2,
    Error = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Severity {
    pub(crate) const fn code(self) -> u8 {
        self as u8
    }
}

fn default_severity() -> Severity {
    Severity::Info
}

fn problem(field: String, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field,
        message: message.into(),
        line: None,
        column: None,
    }
}

/// A DNS name or an IP address literal (no port, no scheme).
fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Every problem of `settings`, by field; empty when they can be used.
/// `bundles` are the CA bundles stored now: a TLS server must name one.
pub(crate) fn validate(settings: &SyslogSettings, bundles: &CaBundles) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    if settings.servers.is_empty() {
        out.push(problem(
            "servers".into(),
            "name at least one server (DELETE turns remote syslog off)",
        ));
    }
    if settings.servers.len() > MAX_SERVERS {
        out.push(problem(
            "servers".into(),
            format!("at most {MAX_SERVERS} servers"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, server) in settings.servers.iter().enumerate() {
        let field = |name: &str| format!("servers[{i}].{name}");
        if !valid_host(&server.host) {
            out.push(problem(
                field("host"),
                "a host name or an IP address, without port or scheme",
            ));
        }
        if server.port == Some(0) {
            out.push(problem(field("port"), "a port from 1 to 65535"));
        }
        match (server.transport, &server.ca_bundle) {
            (Transport::TcpTls, None) => out.push(problem(
                field("ca_bundle"),
                "required for tcp+tls: the CA bundle that verifies the collector's certificate",
            )),
            (Transport::TcpTls, Some(name)) if !bundles.contains_key(name) => out.push(problem(
                field("ca_bundle"),
                format!("no CA bundle {name:?} is uploaded (/api/v1/ca-bundles)"),
            )),
            (Transport::Tcp | Transport::Udp, Some(_)) => out.push(problem(
                field("ca_bundle"),
                "only for tcp+tls: this transport does not verify the collector",
            )),
            _ => {}
        }
        if !seen.insert(server.label()) {
            out.push(problem(
                field("host"),
                format!("{} is named twice", server.label()),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str, transport: Transport, ca: Option<&str>) -> SyslogServer {
        SyslogServer {
            host: host.into(),
            port: None,
            transport,
            ca_bundle: ca.map(Into::into),
            min_severity: Severity::Info,
        }
    }

    fn fields(settings: &SyslogSettings) -> Vec<String> {
        validate(settings, &CaBundles::new())
            .into_iter()
            .map(|p| p.field)
            .collect()
    }

    #[test]
    fn sound_settings_pass_and_default_ports_follow_the_transport() {
        let settings: SyslogSettings = serde_json::from_str(
            r#"{"servers":[{"host":"logs.contoso.test","transport":"udp","min_severity":"warning"},
                           {"host":"2001:db8::5","transport":"tcp","port":1514}]}"#,
        )
        .expect("parses");
        assert!(fields(&settings).is_empty());
        assert_eq!(settings.servers[0].port(), 514);
        assert_eq!(settings.servers[1].label(), "[2001:db8::5]:1514/tcp");
        let tls: SyslogServer = serde_json::from_str(r#"{"host":"10.0.0.1"}"#).expect("parses");
        assert_eq!((tls.transport, tls.port()), (Transport::TcpTls, 6514));
        assert_eq!(tls.min_severity, Severity::Info);
    }

    #[test]
    fn each_problem_names_its_field() {
        let settings = SyslogSettings {
            servers: vec![
                server("logs.contoso.test", Transport::TcpTls, None),
                server("tcp://x:514", Transport::Udp, None),
                server("10.0.0.1", Transport::Tcp, Some("corp")),
                server("10.0.0.2", Transport::TcpTls, Some("missing")),
                SyslogServer {
                    port: Some(0),
                    ..server("10.0.0.3", Transport::Udp, None)
                },
                server("10.0.0.3", Transport::Udp, None),
                server("10.0.0.3", Transport::Udp, None),
            ],
        };
        assert_eq!(
            fields(&settings),
            [
                "servers[0].ca_bundle",
                "servers[1].host",
                "servers[2].ca_bundle",
                "servers[3].ca_bundle",
                "servers[4].port",
                "servers[6].host",
            ]
        );
        assert_eq!(fields(&SyslogSettings { servers: vec![] }), ["servers"]);
        let many = SyslogSettings {
            servers: (0..9)
                .map(|i| server(&format!("10.0.0.{i}"), Transport::Udp, None))
                .collect(),
        };
        assert_eq!(fields(&many), ["servers"]);
    }

    #[test]
    fn unknown_fields_and_transports_are_refused() {
        assert!(serde_json::from_str::<SyslogServer>(r#"{"host":"a","proto":"udp"}"#).is_err());
        assert!(serde_json::from_str::<SyslogServer>(r#"{"host":"a","transport":"tls"}"#).is_err());
        assert!(
            serde_json::from_str::<SyslogServer>(r#"{"host":"a","min_severity":"loud"}"#).is_err()
        );
    }
}
