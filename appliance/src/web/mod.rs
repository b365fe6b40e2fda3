//! The admin listener: REST API under `/api/v1` and `/metrics`, over HTTPS
//! (`tls`), behind one authentication layer (`auth`).
//!
//! Open routes (no credentials), and only these:
//! * `GET  /api/v1/health` — liveness (and whether first-boot setup is due)
//! * `POST /api/v1/setup` — first admin password; 409 once one exists
//! * `POST /api/v1/session` — log in
//! * `GET  /api/v1/openapi.json` — the OpenAPI document of these routes
//! * `GET  /`, `GET /assets/{file}` — the UI page and its embedded script
//!   and stylesheet (no data; the page logs in through the API)
//!
//! Protected routes (session cookie + CSRF header for changes, or a Bearer
//! API token), each with the least role it needs (`Access`, in the tables
//! below): reads and self-service (log out, own password, own tokens) for
//! every role, member actions for operators, all else for admins:
//! * `GET /api/v1/session`, `DELETE /api/v1/session` — who am I, log out
//! * `PUT /api/v1/session/password` — change the password (`auth`: other
//!   sessions end, tokens are revoked unless `keep_tokens`)
//! * `GET|POST /api/v1/tokens`, `DELETE /api/v1/tokens/{id}` — API tokens
//!   (an admin sees and revokes all; anyone else their own; a token has its
//!   creator's role or a lower one)
//! * `GET|POST /api/v1/users`, `GET|PUT|DELETE /api/v1/users/{name}` —
//!   local users and their roles (`users`; admin only)
//! * `GET /api/v1/audit` — the audit log: filters, paging, CSV/JSON export;
//!   `GET /api/v1/config/versions/{id}` — a stored config version (`audit`)
//! * `GET /api/v1/status` — pools, members, health, drain, virtual services
//! * `GET /api/v1/status/stream` — the same as server-sent events
//! * `GET /api/v1/status/history` — connections per member, last ten minutes
//! * `GET /api/v1/statistics` — the last hour as rates (`after`, `minutes`)
//! * `GET|PUT /api/v1/config` — desired config as JSON (PUT also takes TOML;
//!   it validates: 422 with field errors and nothing written; it answers the
//!   `version` in force, whether it `changed`, the `generation` of the pool
//!   view that carries it, and `confirm_by` when it moved the admin
//!   listener; 409 while an earlier move awaits confirmation)
//! * `POST /api/v1/config/confirm` — keep a moved admin listener: only a
//!   request that arrives on the new address counts (409 otherwise, or when
//!   nothing awaits confirmation); unconfirmed by `confirm_by`, the previous
//!   config is committed again
//! * `GET /api/v1/config/export`, `POST /api/v1/config/preview` — the config
//!   as TOML; what a new config would change, writing nothing (`configure`)
//! * `POST /api/v1/pools/{pool}/members/{member}/{drain|enable|disable}`
//! * `GET /api/v1/events` — the event log: filters (`kind`, `pool`,
//!   `member`, `since`, `until`), paging newest first (`before`, the
//!   answer's `next_before`) or tailing oldest first (`after`), `limit`,
//!   CSV/JSON export (`format`); an unknown `kind` or an unreadable time is
//!   422 (`event_log`); the newest 100,000 are kept
//! * `GET|POST /api/v1/license` — licence status; activation (`{"license": …}`)
//! * `GET /api/v1/registrar?uri=…` — a user's registrar sequences: logical,
//!   physical, home, backup_mode (400 for an unreadable URI)
//! * `GET /api/v1/registrar/what-if?pool=…&member=…` — the share of users
//!   (over the hash space) who would move if the member were drained
//! * `GET /api/v1/system`, `GET|PUT /api/v1/certificate` — version, build,
//!   root slot and upgrades; the appliance certificate and replacing it
//!   (`appliance`)
//! * `GET /api/v1/ca-bundles`, `GET|PUT|DELETE /api/v1/ca-bundles/{name}` —
//!   CA bundles for TLS health checks: list, one with its PEM, upload or
//!   replace (PEM body; 422 naming what is wrong), delete (409 naming the
//!   monitors that use it) (`ca_bundles`)
//! * `POST /api/v1/system/upgrade` — upload an upgrade bundle (`system`)
//! * `POST /api/v1/system/backup`, `POST /api/v1/system/restore/preview`,
//!   `POST /api/v1/system/restore`, `GET /api/v1/system/support-bundle` —
//!   the encrypted full backup, its preview and restore, and the support
//!   bundle without secrets; admin-only (`backup`)
//! * `GET|PUT /api/v1/system/network`, `POST /api/v1/system/network/preview`,
//!   `POST /api/v1/system/network/confirm` — the appliance's network, applied
//!   and reverted unless confirmed in time (`network`)
//! * `GET /api/v1/ha`, `POST /api/v1/ha/pairing-code`, `POST /api/v1/ha/join`,
//!   `POST /api/v1/ha/failover`, `DELETE /api/v1/ha` — the HA pair (`ha`)
//! * `GET|PUT|DELETE /api/v1/ha/vrrp` — this appliance's VRRP settings and
//!   keepalived's state (`vrrp`)
//! * `GET|PUT|DELETE /api/v1/system/syslog` — remote syslog collectors
//!   and their state (`syslog`)
//! * `GET|PUT|DELETE /api/v1/system/snmp` — the SNMP community, v3 users
//!   and trap sinks, and the snmpd.conf they render to (`snmp`)
//! * `GET|PUT|DELETE /api/v1/auth/ldap`, `POST /api/v1/auth/ldap/test` —
//!   Active Directory / LDAP login settings and the test button (`ldap`)
//! * `GET /metrics` — Prometheus text format
//!
//! On the standby of an HA pair, config PUTs, imports and member actions are
//! refused with 409 naming the active (the control task decides).
//!
//! The route tables below are the single source: the router is built from
//! them and the security tests enumerate them.

pub(crate) mod api;
mod appliance;
mod audit;
pub(crate) mod auth;
mod backup;
mod ca_bundles;
mod configure;
mod error;
mod event_log;
mod extract;
mod ha;
pub(crate) mod history;
mod ldap;
mod network;
mod openapi;
mod snmp;
mod state;
pub(crate) mod status;
mod syslog;
mod system;
pub(crate) mod tls;
mod ui;
mod users;
mod vrrp;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Json};
use axum::routing::{MethodFilter, MethodRouter, on};
use serde_json::json;

pub use crate::store::Role;

pub(crate) use error::{ApiError, ErrorBody, FieldProblem};
pub(crate) use state::AppState;
pub use state::blocking;

/// The address the admin listener a request arrived on was opened for (as
/// the config names it): what a confirmation of a move is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenedOn(pub std::net::SocketAddr);

/// The local address a request's connection reached (on a wildcard
/// listener, the appliance address the client used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReachedAt(pub std::net::SocketAddr);

/// One route: who may use it, method, path, a one-line summary and the Rust
/// types of its JSON request and response bodies (for the OpenAPI
/// document), and its handler.
#[derive(Debug)]
pub struct Route {
    /// Required: a route cannot be declared without saying who may use it.
    pub access: Access,
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub request: Option<Body>,
    pub response: Option<Body>,
    pub handler: MethodRouter<AppState>,
}

/// Who may use a route: anyone (the open routes), or a logged-in user
/// (session or API token) holding at least a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    Role(Role),
}

const OPEN: Access = Access::Open;
/// Reads, and what every user does for themselves (log out, change their
/// own password, their own API tokens).
const VIEWER: Access = Access::Role(Role::Viewer);
/// Member actions: drain, enable, disable.
const OPERATOR: Access = Access::Role(Role::Operator);
/// Every other change.
const ADMIN: Access = Access::Role(Role::Admin);

/// A body type's schema, generated from the Rust type (`utoipa::ToSchema`).
#[derive(Debug, Clone, Copy)]
pub struct Body {
    pub name: fn() -> std::borrow::Cow<'static, str>,
    /// Adds the type's schema and those it refers to.
    pub collect: fn(&mut Vec<(String, openapi::Schema)>),
}

fn body<T: utoipa::ToSchema>() -> Body {
    Body {
        name: T::name,
        collect: |schemas| {
            schemas.push((T::name().into_owned(), T::schema()));
            T::schemas(schemas);
        },
    }
}

macro_rules! spec {
    ($access:expr, $method:ident, $path:literal, $summary:literal, $handler:expr
        $(, request = $request:ty)? $(, response = $response:ty)?) => {
        Route {
            access: $access,
            method: Method::$method,
            path: $path,
            summary: $summary,
            request: None $(.or(Some(body::<$request>())))?,
            response: None $(.or(Some(body::<$response>())))?,
            handler: on(MethodFilter::$method, $handler),
        }
    };
}

/// Routes open without credentials.
pub fn open_routes() -> Vec<Route> {
    vec![
        spec!(
            OPEN,
            GET,
            "/api/v1/health",
            "Liveness, version, and whether first-boot setup is due",
            api::health
        ),
        spec!(
            OPEN,
            POST,
            "/api/v1/setup",
            "Set the first admin password (409 once one exists)",
            api::setup,
            request = api::SetupBody
        ),
        spec!(
            OPEN,
            POST,
            "/api/v1/session",
            "Log in: session cookie and CSRF token",
            api::login,
            request = api::LoginBody
        ),
        spec!(
            OPEN,
            GET,
            "/api/v1/openapi.json",
            "This document",
            openapi::document
        ),
        spec!(OPEN, GET, "/", "The web UI", ui::index),
        spec!(
            OPEN,
            GET,
            "/assets/{file}",
            "The web UI's script and stylesheet",
            ui::asset
        ),
    ]
}

/// Every other route; all of them sit behind `auth::require_auth`.
pub fn protected_routes() -> Vec<Route> {
    vec![
        spec!(
            VIEWER,
            GET,
            "/api/v1/session",
            "The logged-in user and CSRF token",
            api::session_info
        ),
        spec!(VIEWER, DELETE, "/api/v1/session", "Log out", api::logout),
        spec!(
            VIEWER,
            PUT,
            "/api/v1/session/password",
            "Change the password: other sessions end, API tokens are revoked unless kept",
            api::change_password,
            request = api::PasswordBody
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/tokens",
            "List API tokens (never their secrets)",
            api::list_tokens,
            response = api::TokenList
        ),
        spec!(
            VIEWER,
            POST,
            "/api/v1/tokens",
            "Create an API token; the secret is shown once",
            api::create_token,
            request = api::TokenBody
        ),
        spec!(
            VIEWER,
            DELETE,
            "/api/v1/tokens/{id}",
            "Revoke an API token",
            api::revoke_token
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/status",
            "Pools, members, health, drain progress, virtual services",
            status::status,
            response = status::StatusBody
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/status/stream",
            "The status document as server-sent events",
            ui::status_stream
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/status/history",
            "Active connections per member over the last ten minutes",
            history::history,
            response = history::HistoryBody
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/statistics",
            "The last hour in 10 s intervals: connections and bytes/s per virtual service and member, health transitions, DNS queries and answers/s by kind, SIP requests and redirects/s (`after`: samples past that seq; `minutes`: 1-60)",
            history::statistics,
            response = history::StatisticsBody
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/config",
            "The desired config as JSON",
            api::get_config,
            response = crate::config::ConfigFile
        ),
        spec!(
            ADMIN,
            PUT,
            "/api/v1/config",
            "Replace the desired config (422 with field errors, nothing written)",
            api::put_config,
            request = crate::config::ConfigFile
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/config/export",
            "The desired config as TOML (what `poolgate export` prints)",
            configure::export
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/config/confirm",
            "Keep a moved admin listener (only on its new address, before confirm_by)",
            configure::confirm,
            response = configure::ConfirmBody
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/config/preview",
            "What a config (JSON or TOML) would change; validates, writes nothing",
            configure::preview,
            request = crate::config::ConfigFile
        ),
        spec!(
            OPERATOR,
            POST,
            "/api/v1/pools/{pool}/members/{member}/{action}",
            "Drain, enable or disable a member",
            api::member_action
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/events",
            "The event log: health transitions, admin actions, drain milestones, commits (filters, paging, CSV or JSON export)",
            event_log::list,
            response = event_log::EventList
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/audit",
            "The audit log: who changed what, from where, through which interface (filters, paging, CSV or JSON export)",
            audit::list,
            response = audit::AuditList
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/config/versions/{id}",
            "One committed config version as stored (TOML), e.g. an audit entry's before or after",
            audit::config_version,
            response = audit::ConfigVersion
        ),
        spec!(
            ADMIN,
            GET,
            "/api/v1/users",
            "Local users with their roles, live sessions and API tokens",
            users::list,
            response = users::UserList
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/users",
            "Add a local user (409 if the name is taken)",
            users::create,
            request = users::NewUserBody
        ),
        spec!(
            ADMIN,
            GET,
            "/api/v1/users/{name}",
            "One local user",
            users::get,
            response = crate::store::UserInfo
        ),
        spec!(
            ADMIN,
            PUT,
            "/api/v1/users/{name}",
            "Change a user's role and/or password: their sessions end and tokens are revoked (409 for the last or built-in admin)",
            users::update,
            request = users::UserUpdateBody
        ),
        spec!(
            ADMIN,
            DELETE,
            "/api/v1/users/{name}",
            "Remove a user with their sessions and tokens (409 for the last or built-in admin)",
            users::delete
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/license",
            "Licence status and current use",
            api::license_status
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/license",
            "Activate a licence",
            api::install_license,
            request = api::LicenceBody
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/registrar",
            "A SIP user's home server and failover order",
            api::registrar,
            response = crate::sip::registrar::Lookup
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/registrar/what-if",
            "The share of users who would move if a member were drained",
            api::registrar_what_if
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/system",
            "Version, build, appliance id, certificate, root slot and upgrades",
            appliance::system
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/certificate",
            "The appliance certificate (admin listener and SIP over TLS)",
            appliance::certificate,
            response = crate::certs::CertificateInfo
        ),
        spec!(
            ADMIN,
            PUT,
            "/api/v1/certificate",
            "Replace the appliance certificate and key (PEM), checked first",
            appliance::install_certificate,
            request = appliance::CertificateBody,
            response = crate::certs::CertificateInfo
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/ca-bundles",
            "CA bundles for TLS health checks: certificates (subject, not_after, fingerprint) and the monitors using each",
            ca_bundles::list,
            response = ca_bundles::CaBundleList
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/ca-bundles/{name}",
            "One CA bundle, with its PEM text",
            ca_bundles::get,
            response = ca_bundles::CaBundleDetail
        ),
        spec!(
            ADMIN,
            PUT,
            "/api/v1/ca-bundles/{name}",
            "Upload or replace a CA bundle (PEM body of CA certificates; 422 naming what is wrong, nothing written)",
            ca_bundles::put,
            response = crate::health::ca::CaBundleInfo
        ),
        spec!(
            ADMIN,
            DELETE,
            "/api/v1/ca-bundles/{name}",
            "Delete a CA bundle (409 naming the monitors while any uses it)",
            ca_bundles::delete
        ),
        spec!(VIEWER, GET, "/metrics", "Prometheus metrics", api::metrics),
        spec!(
            ADMIN,
            POST,
            "/api/v1/system/upgrade",
            "Upload an upgrade bundle (raw body): verify, install, reboot",
            system::upgrade
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/system/backup",
            "Download an encrypted full backup (admin only; passphrase in the body, at least 10 characters)",
            backup::backup,
            request = backup::BackupBody
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/system/restore/preview",
            "What restoring a backup would change (admin only); writes nothing",
            backup::preview,
            request = backup::RestoreBody,
            response = crate::backup::PreviewBody
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/system/restore",
            "Restore a backup in one transaction (admin only); 422 naming the reason and nothing changed if it cannot; every session ends",
            backup::restore,
            request = backup::RestoreBody
        ),
        spec!(
            ADMIN,
            GET,
            "/api/v1/system/support-bundle",
            "A tar.gz for support: events, status, versions, upgrades, config and network settings, secrets removed (admin only)",
            backup::support_bundle
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/system/network",
            "The network settings, the change awaiting confirmation, and the host's interfaces, routes and NTP state",
            network::get,
            response = crate::system::network::NetworkView
        ),
        spec!(
            ADMIN,
            PUT,
            "/api/v1/system/network",
            "Apply network settings (422 naming the field, nothing applied); they are reverted unless confirmed before the deadline",
            network::put,
            request = crate::system::network::NetworkSettings
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/system/network/preview",
            "What network settings would change; validates, applies nothing",
            network::preview,
            request = crate::system::network::NetworkSettings
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/system/network/confirm",
            "Keep the network change awaiting confirmation",
            network::confirm
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/ha",
            "The HA pair: role, peer, link and sync state, last synced version, changes not applied",
            ha::get,
            response = crate::ha::HaStatus
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/ha/pairing-code",
            "A one-time pairing code (10 minutes, single use), shown once",
            ha::pairing_code,
            response = ha::PairingCode
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/ha/join",
            "Pair with the appliance whose sync listener is at `peer`, using its pairing code",
            ha::join,
            request = ha::JoinBody,
            response = crate::ha::HaStatus
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/ha/failover",
            "Swap the active and standby roles through the link (force: take the active role without the peer)",
            ha::failover,
            request = ha::FailoverBody
        ),
        spec!(
            ADMIN,
            DELETE,
            "/api/v1/ha",
            "Unpair (the peer is told if reachable)",
            ha::unpair
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/ha/vrrp",
            "VRRP settings, who holds the addresses, keepalived's state per instance, and the keepalived.conf they render to",
            vrrp::get,
            response = vrrp::VrrpPage
        ),
        spec!(
            ADMIN,
            PUT,
            "/api/v1/ha/vrrp",
            "Store VRRP settings (422 naming the field, nothing stored); keepalived then holds the VIPs",
            vrrp::put,
            request = crate::vrrp::VrrpSettings,
            response = vrrp::VrrpPage
        ),
        spec!(
            ADMIN,
            DELETE,
            "/api/v1/ha/vrrp",
            "Turn VRRP off: poolgate holds its addresses itself",
            vrrp::delete,
            response = vrrp::VrrpPage
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/system/syslog",
            "Remote syslog settings and each collector's state (connected, sent, dropped, last error)",
            syslog::get,
            response = crate::syslog::SyslogView
        ),
        spec!(
            ADMIN,
            PUT,
            "/api/v1/system/syslog",
            "Store remote syslog settings (422 naming the field, nothing stored); every event goes to the collectors as RFC 5424",
            syslog::put,
            request = crate::syslog::SyslogSettings,
            response = crate::syslog::SyslogView
        ),
        spec!(
            ADMIN,
            DELETE,
            "/api/v1/system/syslog",
            "Turn remote syslog off",
            syslog::delete,
            response = crate::syslog::SyslogView
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/system/snmp",
            "SNMP settings (secrets masked) and the snmpd.conf they render to",
            snmp::get,
            response = crate::snmp::SnmpView
        ),
        spec!(
            ADMIN,
            PUT,
            "/api/v1/system/snmp",
            "Store SNMP settings (422 naming the field, nothing stored) and hand them to snmpd",
            snmp::put,
            request = crate::snmp::SnmpSettings,
            response = crate::snmp::SnmpView
        ),
        spec!(
            ADMIN,
            DELETE,
            "/api/v1/system/snmp",
            "Turn SNMP off: snmpd is stopped",
            snmp::delete,
            response = crate::snmp::SnmpView
        ),
        spec!(
            VIEWER,
            GET,
            "/api/v1/auth/ldap",
            "Directory (AD / LDAP) login settings, the service account's password shown as ********",
            ldap::get,
            response = ldap::LdapPage
        ),
        spec!(
            ADMIN,
            PUT,
            "/api/v1/auth/ldap",
            "Store directory login settings (422 naming the field, nothing stored; ******** keeps the stored password)",
            ldap::put,
            request = crate::ldap::LdapSettings,
            response = ldap::LdapPage
        ),
        spec!(
            ADMIN,
            DELETE,
            "/api/v1/auth/ldap",
            "Turn directory login off: local users only",
            ldap::delete,
            response = ldap::LdapPage
        ),
        spec!(
            ADMIN,
            POST,
            "/api/v1/auth/ldap/test",
            "Try one directory login (with the settings sent, or the stored ones): who the user is and the role, or where it stopped",
            ldap::test,
            request = ldap::TestBody,
            response = ldap::TestResult
        ),
    ]
}

/// The routes, each protected route behind the authentication layer with
/// its own least role.
fn build(state: &AppState, routes: Vec<Route>) -> Router<AppState> {
    routes.into_iter().fold(Router::new(), |router, route| {
        let handler = match route.access {
            Access::Open => route.handler,
            Access::Role(min) => route
                .handler
                .route_layer(axum::middleware::from_fn_with_state(
                    auth::Guard {
                        state: state.clone(),
                        min,
                        path: route.path,
                    },
                    auth::require_auth,
                )),
        };
        router.route(route.path, handler)
    })
}

pub(crate) fn router(state: AppState) -> Router {
    let routes = open_routes()
        .into_iter()
        .chain(protected_routes())
        .collect();
    build(&state, routes)
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers that keep the UI out of frames and other origins' scripts.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    response
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, Json(json!({"error": "not found"})))
}
