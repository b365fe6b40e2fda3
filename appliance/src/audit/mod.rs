//! The audit log: every change made to the appliance, with who made it, the
//! role they held, from which address and through which interface (a UI
//! session, an API token by id, the console, the HA peer, the config file).
//!
//! The web layer records one entry per authenticated state-changing request
//! (`crate::web::auth`), whatever the answer, so a refused attempt is on
//! record too; a handler that knows more (the config versions before and
//! after a PUT, the member's previous state) attaches it as
//! [`AuditDetail`]. Changes from elsewhere (the console's `admin
//! set-password`) record their own entry with their [`Interface`].
//!
//! Entries live in SQLite (`store::audit`); the newest [`AUDIT_KEPT`] are
//! kept, older ones go in the same transaction as a new one. `kind` and
//! `interface` text forms are part of the API (`GET /api/v1/audit`).

use serde::Serialize;

use crate::store::Role;

/// How many entries the log keeps (the newest).
pub(crate) const AUDIT_KEPT: i64 = 100_000;

/// The way a change reached the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Interface {
    /// A browser session (cookie + CSRF token).
    Ui,
    /// An API token (`Authorization: Bearer`).
    Token,
    /// The appliance console (`poolgate admin …`).
    Console,
    /// The HA peer.
    Peer,
}

impl Interface {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Ui => "ui",
            Self::Token => "token",
            Self::Console => "console",
            Self::Peer => "peer",
        }
    }
}

/// Who made a change: extracted once, by the authentication layer, into a
/// request extension; handlers that pass a change on read it from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Actor {
    pub username: String,
    pub role: Option<Role>,
    /// The client's address (`None` on the console).
    pub address: Option<std::net::IpAddr>,
    pub interface: Interface,
    /// The API token's id, through `Interface::Token`.
    pub token_id: Option<i64>,
}

/// What a change was about: the `kind` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    Config,
    Member,
    User,
    Token,
    Session,
    Certificate,
    Network,
    Ha,
    Upgrade,
    License,
}

impl AuditKind {
    pub(crate) const ALL: [Self; 10] = [
        Self::Config,
        Self::Member,
        Self::User,
        Self::Token,
        Self::Session,
        Self::Certificate,
        Self::Network,
        Self::Ha,
        Self::Upgrade,
        Self::License,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Member => "member",
            Self::User => "user",
            Self::Token => "token",
            Self::Session => "session",
            Self::Certificate => "certificate",
            Self::Network => "network",
            Self::Ha => "ha",
            Self::Upgrade => "upgrade",
            Self::License => "license",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The kind of a route, by its path pattern. Total: a route nobody
    /// thought of is `config` (what most of the API changes), never lost.
    pub(crate) fn of_path(path: &str) -> Self {
        let rest = path.strip_prefix("/api/v1/").unwrap_or(path);
        let first = rest.split('/').next().unwrap_or("");
        match first {
            "pools" => Self::Member,
            "users" => Self::User,
            "tokens" => Self::Token,
            "session" => Self::Session,
            "certificate" | "ca-bundles" => Self::Certificate,
            "ha" => Self::Ha,
            "license" => Self::License,
            "system" if rest.starts_with("system/network") => Self::Network,
            "system" => Self::Upgrade,
            _ => Self::Config,
        }
    }
}

/// More about a change than the request says, attached by its handler to
/// the response's extensions.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditDetail(pub serde_json::Value);

/// An entry to record.
#[derive(Debug, Clone)]
pub(crate) struct NewAudit {
    pub actor: Actor,
    pub kind: AuditKind,
    /// `METHOD /path` as requested, or what the console did.
    pub action: String,
    /// What it was done to (a member `pool/member`, a user, a token id).
    pub target: Option<String>,
    /// The HTTP status of the answer.
    pub status: Option<u16>,
    pub detail: Option<serde_json::Value>,
}

/// One entry as listed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditEntry {
    pub id: i64,
    /// RFC 3339, UTC.
    pub at: String,
    pub username: String,
    pub role: Option<String>,
    pub address: Option<String>,
    pub interface: String,
    pub token_id: Option<i64>,
    pub kind: String,
    pub action: String,
    pub target: Option<String>,
    pub status: Option<u16>,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

/// Which entries to read: newest first, `before` an id for the next page.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditFilter {
    pub username: Option<String>,
    pub kind: Option<AuditKind>,
    /// RFC 3339 bounds on `at`, inclusive.
    pub since: Option<String>,
    pub until: Option<String>,
    pub before: Option<i64>,
    pub limit: usize,
}

/// CSV of entries (`crate::csv`); `detail` as compact JSON.
pub(crate) fn to_csv(entries: &[AuditEntry]) -> String {
    crate::csv::document(
        &[
            "id",
            "at",
            "username",
            "role",
            "address",
            "interface",
            "token_id",
            "kind",
            "action",
            "target",
            "status",
            "detail",
        ],
        entries.iter().map(|entry| {
            [
                entry.id.to_string(),
                entry.at.clone(),
                entry.username.clone(),
                entry.role.clone().unwrap_or_default(),
                entry.address.clone().unwrap_or_default(),
                entry.interface.clone(),
                entry.token_id.map(|id| id.to_string()).unwrap_or_default(),
                entry.kind.clone(),
                entry.action.clone(),
                entry.target.clone().unwrap_or_default(),
                entry.status.map(|s| s.to_string()).unwrap_or_default(),
                entry
                    .detail
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_kinds() {
        for (path, kind) in [
            ("/api/v1/config", AuditKind::Config),
            ("/api/v1/config/confirm", AuditKind::Config),
            (
                "/api/v1/pools/{pool}/members/{member}/{action}",
                AuditKind::Member,
            ),
            ("/api/v1/users/{name}", AuditKind::User),
            ("/api/v1/tokens/{id}", AuditKind::Token),
            ("/api/v1/session/password", AuditKind::Session),
            ("/api/v1/ca-bundles/{name}", AuditKind::Certificate),
            ("/api/v1/system/network/confirm", AuditKind::Network),
            ("/api/v1/system/upgrade", AuditKind::Upgrade),
            ("/api/v1/ha/vrrp", AuditKind::Ha),
            ("/api/v1/license", AuditKind::License),
        ] {
            assert_eq!(AuditKind::of_path(path), kind, "{path}");
        }
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::parse(kind.as_str()), Some(kind));
        }
    }
}
