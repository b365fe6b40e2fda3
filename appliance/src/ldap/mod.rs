//! Active Directory / LDAP login: the settings (kept in the settings store
//! under [`SETTINGS_KEY`], validated field by field), and one login attempt
//! against the directory ([`login`]) that says exactly where it stopped.
//!
//! One attempt, against the servers in order (the next one only when a
//! server cannot be reached or its TLS fails; a refused password is the
//! answer):
//! 1. connect over LDAPS, or LDAP and StartTLS — never in the clear — with
//!    the roots of the chosen CA bundle, checking the server's name;
//! 2. bind as the user (`bind = "user"`: the `user_bind` template with the
//!    user name put in, e.g. `{user}@contoso.com`), or bind as the service
//!    account and search the user (`bind = "search"`), then bind as the DN
//!    found;
//! 3. read the user's groups: the `memberOf` values of the user's entry, or
//!    with `group_base` the groups under it that list the user as a
//!    `member` / `uniqueMember`;
//! 4. the highest role any of them is mapped to (`groups`) is the user's;
//!    in none of them, the login is refused.
//!
//! Invariants:
//! * An empty password is refused before any bind: an LDAP simple bind with
//!   a DN and no password is an anonymous bind that succeeds.
//! * A user name reaches a filter only through `ldap_escape`, a DN only
//!   through `dn_escape`; names with control characters are refused.
//! * Every step is bounded by `timeout_ms`.
//!
//! Design note: `docs/decisions/1102-ldap-login.md`.

use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, dn_escape, ldap_escape};
use rustls::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::health::ca::CaBundles;
use crate::store::Role;
use crate::web::FieldProblem;
use crate::web::auth::identity::{Identity, role_of};

/// Settings store key of the LDAP settings (JSON).
pub(crate) const SETTINGS_KEY: &str = "auth.ldap";

/// At most this many servers and group mappings.
pub(crate) const MAX_SERVERS: usize = 8;
pub(crate) const MAX_GROUPS: usize = 32;
/// A user name longer than this is refused before the directory is asked.
pub(crate) const MAX_USER: usize = 256;

/// How the user's password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BindMode {
    /// Bind as `user_bind` with the user name put in.
    User,
    /// Bind as `bind_dn`, find the user's entry, bind as its DN.
    Search,
}

/// One directory group and the role its members get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRole {
    /// The group's DN, as `memberOf` lists it.
    pub group: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
}

/// Where and how to log users in against Active Directory or LDAP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldaps://dc1.contoso.com` (636) or `ldap://dc1.contoso.com` (389,
    /// then StartTLS), tried in order. The host is the name the server's
    /// certificate must carry.
    pub servers: Vec<String>,
    /// The CA bundle (`/api/v1/ca-bundles`) that signs the servers'
    /// certificates.
    pub ca_bundle: String,
    pub bind: BindMode,
    /// `bind = "user"`: what to bind as, with `{user}` for the user name,
    /// e.g. `{user}@contoso.com` or `uid={user},ou=people,dc=contoso,dc=com`
    /// (put in DN-escaped when the template is a DN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_bind: Option<String>,
    /// `bind = "search"`: the service account's DN and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_dn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_password: Option<String>,
    /// Where users are (the user's entry is looked up here in both modes,
    /// for its DN and groups).
    pub user_base: String,
    /// The attribute that holds the login name: `sAMAccountName` (AD,
    /// default) or `uid`.
    #[serde(default = "default_user_attribute")]
    pub user_attribute: String,
    /// Look groups up under this base (`member` / `uniqueMember` of the
    /// user's DN) instead of reading the user's `memberOf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_base: Option<String>,
    /// Group → role; a user in several gets the highest.
    pub groups: Vec<GroupRole>,
    /// Bound on each step (connect, TLS, bind, search), 500–30,000 ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_user_attribute() -> String {
    "sAMAccountName".to_owned()
}

fn default_timeout_ms() -> u64 {
    5_000
}

impl LdapSettings {
    /// What `GET` shows: the service account's password replaced.
    pub(crate) fn redacted(&self) -> Self {
        let mut shown = self.clone();
        if shown.bind_password.is_some() {
            shown.bind_password = Some(REDACTED.to_owned());
        }
        shown
    }

    /// A `PUT` that sends the redacted password back keeps the stored one.
    pub(crate) fn keep_password_of(&mut self, stored: Option<&Self>) {
        if self.bind_password.as_deref() == Some(REDACTED) {
            self.bind_password = stored.and_then(|s| s.bind_password.clone());
        }
    }
}

/// Stands for a stored secret in what the API shows.
pub(crate) const REDACTED: &str = "********";

pub(crate) const ROLES: [&str; 3] = ["admin", "operator", "viewer"];

fn problem(field: String, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field,
        message: message.into(),
        line: None,
        column: None,
    }
}

/// Every problem of `settings`, each naming its field; empty when they can
/// be used. `bundles` are the CA bundles that exist.
pub(crate) fn validate(settings: &LdapSettings, bundles: &CaBundles) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    if settings.servers.is_empty() || settings.servers.len() > MAX_SERVERS {
        problems.push(problem(
            "servers".into(),
            format!("name 1 to {MAX_SERVERS} servers"),
        ));
    }
    for (i, server) in settings.servers.iter().enumerate() {
        if let Err(message) = server_url(server) {
            problems.push(problem(format!("servers[{i}]"), message));
        }
    }
    if !bundles.contains_key(&settings.ca_bundle) {
        problems.push(problem(
            "ca_bundle".into(),
            format!(
                "no CA bundle {:?}: upload the CA that signs the directory's certificates first",
                settings.ca_bundle
            ),
        ));
    }
    match settings.bind {
        BindMode::User => match settings.user_bind.as_deref() {
            Some(template) if template.contains("{user}") => {}
            _ => problems.push(problem(
                "user_bind".into(),
                "bind = \"user\" needs user_bind with {user}, e.g. \"{user}@contoso.com\"",
            )),
        },
        BindMode::Search => {
            if settings.bind_dn.as_deref().is_none_or(str::is_empty) {
                problems.push(problem(
                    "bind_dn".into(),
                    "bind = \"search\" needs the service account's DN",
                ));
            }
            if settings.bind_password.as_deref().is_none_or(str::is_empty) {
                problems.push(problem(
                    "bind_password".into(),
                    "bind = \"search\" needs the service account's password (an empty one binds anonymously)",
                ));
            }
        }
    }
    if settings.user_base.trim().is_empty() {
        problems.push(problem(
            "user_base".into(),
            "the DN users are under, e.g. \"dc=contoso,dc=com\"",
        ));
    }
    let attribute = &settings.user_attribute;
    if attribute.is_empty()
        || !attribute
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        problems.push(problem(
            "user_attribute".into(),
            "an attribute name such as sAMAccountName or uid",
        ));
    }
    if settings.groups.is_empty() || settings.groups.len() > MAX_GROUPS {
        problems.push(problem(
            "groups".into(),
            format!("map 1 to {MAX_GROUPS} groups to roles"),
        ));
    }
    for (i, group) in settings.groups.iter().enumerate() {
        if group.group.trim().is_empty() {
            problems.push(problem(format!("groups[{i}].group"), "the group's DN"));
        }
        if !ROLES.contains(&group.role.as_str()) {
            problems.push(problem(
                format!("groups[{i}].role"),
                format!("{:?} is not a role: admin, operator or viewer", group.role),
            ));
        }
    }
    if !(500..=30_000).contains(&settings.timeout_ms) {
        problems.push(problem("timeout_ms".into(), "between 500 and 30000"));
    }
    problems
}

/// A server URL poolgate will use: `ldaps://host[:port]` or
/// `ldap://host[:port]` (StartTLS), nothing after the port.
fn server_url(text: &str) -> Result<(bool, String), String> {
    let (tls, rest) = if let Some(rest) = text.strip_prefix("ldaps://") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("ldap://") {
        (false, rest)
    } else {
        return Err(format!(
            "{text:?}: write ldaps://host or ldap://host (StartTLS)"
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let host = match rest.rsplit_once(':') {
        Some((host, _)) if !host.ends_with(']') && host.contains(':') => rest.to_owned(),
        Some((host, port)) => {
            port.parse::<u16>()
                .map_err(|_| format!("{text:?}: {port:?} is not a port"))?;
            host.to_owned()
        }
        None => rest.to_owned(),
    };
    if host.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("{text:?}: only a host and a port"));
    }
    Ok((tls, host.trim_matches(['[', ']']).to_owned()))
}

/// Who the directory says the user is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LdapLogin {
    pub server: String,
    pub dn: String,
    pub groups: Vec<String>,
    /// The highest role the user's groups are mapped to.
    pub role: String,
}

/// Where a login stopped, in words an admin acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LdapFailure {
    /// The user name or password cannot be sent (empty, too long, control
    /// characters).
    #[error("{0}")]
    Refused(String),
    /// No server could be reached (each one's reason).
    #[error("no directory server answered: {0}")]
    Unreachable(String),
    /// The directory refused the user's (or the service account's) bind.
    #[error("{0}")]
    Bind(String),
    #[error("{0}")]
    NotFound(String),
    /// The user is in none of the mapped groups.
    #[error("{0}")]
    NoRole(String),
    #[error("{0}")]
    Settings(String),
}

/// The settings' group → role mapping as the login's role rule takes it.
fn group_roles(settings: &LdapSettings) -> Vec<(String, Role)> {
    settings
        .groups
        .iter()
        .filter_map(|g| Some((g.group.trim().to_owned(), Role::parse(&g.role)?)))
        .collect()
}

/// The TLS client config for `settings`' CA bundle.
fn tls_config(
    settings: &LdapSettings,
    bundles: &CaBundles,
) -> Result<Arc<ClientConfig>, LdapFailure> {
    let bundle = bundles.get(&settings.ca_bundle).ok_or_else(|| {
        LdapFailure::Settings(format!(
            "the CA bundle {:?} is gone: upload it again or choose another",
            settings.ca_bundle
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let trusted = format!("CA bundle {:?}", settings.ca_bundle);
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(bundle.roots()),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|error| LdapFailure::Settings(format!("cannot verify with {trusted}: {error}")))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| LdapFailure::Settings(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::health::verify::Explaining::new(
            inner, trusted,
        )))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The user name as it may be sent; refuses what no directory name holds.
fn check_credentials(user: &str, password: &str) -> Result<(), LdapFailure> {
    if password.is_empty() {
        return Err(LdapFailure::Refused(
            "an empty password is refused (it would bind anonymously)".into(),
        ));
    }
    if user.is_empty() || user.len() > MAX_USER || user.chars().any(char::is_control) {
        return Err(LdapFailure::Refused(
            "the user name is empty, too long or holds control characters".into(),
        ));
    }
    Ok(())
}

/// The DN (or UPN) to bind as for `user`.
fn user_bind_name(template: &str, user: &str) -> String {
    // A DN template gets a DN-escaped name; a UPN (`{user}@domain`) or a
    // down-level name (`DOMAIN\{user}`) is not a DN and takes it as is.
    let is_dn = template.contains('=');
    let value = if is_dn {
        dn_escape(user).into_owned()
    } else {
        user.to_owned()
    };
    template.replace("{user}", &value)
}

/// A readable LDAP error.
fn words(error: &ldap3::LdapError) -> String {
    match error {
        ldap3::LdapError::LdapResult { result } => result_words(result),
        other => {
            let text = other.to_string();
            // rustls's refusal carries the explained reason.
            text.replace("I/O error: ", "")
        }
    }
}

fn result_words(result: &ldap3::LdapResult) -> String {
    let name = match result.rc {
        49 => "invalid credentials",
        50 => "insufficient access rights",
        32 => "no such object",
        53 => "unwilling to perform",
        _ => "refused",
    };
    let text = result.text.trim();
    if text.is_empty() {
        format!("{name} (LDAP result {})", result.rc)
    } else {
        format!("{name} (LDAP result {}: {text})", result.rc)
    }
}

/// One login attempt against the directory, as the module doc describes.
pub(crate) async fn login(
    settings: &LdapSettings,
    bundles: &CaBundles,
    user: &str,
    password: &str,
) -> Result<LdapLogin, LdapFailure> {
    check_credentials(user, password)?;
    let tls = tls_config(settings, bundles)?;
    let timeout = Duration::from_millis(settings.timeout_ms);
    let mut unreachable = Vec::new();
    for server in &settings.servers {
        let (ldaps, _host) = server_url(server).map_err(LdapFailure::Settings)?;
        let connection = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_config(Arc::clone(&tls))
            .set_starttls(!ldaps);
        let connected = tokio::time::timeout(
            timeout * 2,
            LdapConnAsync::with_settings(connection, server),
        )
        .await;
        let (conn, mut ldap) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(error)) => {
                unreachable.push(format!("{server}: {}", words(&error)));
                continue;
            }
            Err(_) => {
                unreachable.push(format!("{server}: no answer within {timeout:?}"));
                continue;
            }
        };
        ldap3::drive!(conn);
        ldap.with_timeout(timeout);
        let outcome = against(&mut ldap, settings, user, password, server).await;
        let _ = ldap.unbind().await;
        return outcome;
    }
    Err(LdapFailure::Unreachable(unreachable.join("; ")))
}

/// Bind, find and map on one connected server.
async fn against(
    ldap: &mut ldap3::Ldap,
    settings: &LdapSettings,
    user: &str,
    password: &str,
    server: &str,
) -> Result<LdapLogin, LdapFailure> {
    let filter = format!("({}={})", settings.user_attribute, ldap_escape(user));
    let bind_as = |who: &str, error: &ldap3::LdapError| {
        LdapFailure::Bind(format!(
            "{server} refused the bind as {who}: {}",
            words(error)
        ))
    };
    let bind = |result: Result<ldap3::LdapResult, ldap3::LdapError>| {
        result.and_then(ldap3::LdapResult::success)
    };
    let (dn, member_of) = match settings.bind {
        BindMode::User => {
            let template = settings.user_bind.as_deref().unwrap_or("{user}");
            let name = user_bind_name(template, user);
            bind(ldap.simple_bind(&name, password).await).map_err(|e| bind_as(&name, &e))?;
            find_user(ldap, settings, &filter, server).await?
        }
        BindMode::Search => {
            let account = settings.bind_dn.as_deref().unwrap_or_default();
            let secret = settings.bind_password.as_deref().unwrap_or_default();
            if secret.is_empty() {
                return Err(LdapFailure::Settings(
                    "the service account has no password".into(),
                ));
            }
            bind(ldap.simple_bind(account, secret).await)
                .map_err(|e| bind_as(&format!("the service account {account}"), &e))?;
            let (dn, member_of) = find_user(ldap, settings, &filter, server).await?;
            bind(ldap.simple_bind(&dn, password).await).map_err(|e| bind_as(&dn, &e))?;
            (dn, member_of)
        }
    };
    let groups = match &settings.group_base {
        Some(base) => groups_under(ldap, base, &dn, server).await?,
        None => member_of,
    };
    let identity = Identity::Directory {
        username: user.to_owned(),
        groups: groups.clone(),
    };
    let role = role_of(&identity, &group_roles(settings))
        .map(|role| role.as_str().to_owned())
        .ok_or_else(|| {
            LdapFailure::NoRole(format!(
                "{dn} is in none of the mapped groups (its groups: {})",
                if groups.is_empty() {
                    "none".to_owned()
                } else {
                    groups.join("; ")
                }
            ))
        })?;
    Ok(LdapLogin {
        server: server.to_owned(),
        dn,
        groups,
        role,
    })
}

/// The user's entry under `user_base`: exactly one, with its `memberOf`.
async fn find_user(
    ldap: &mut ldap3::Ldap,
    settings: &LdapSettings,
    filter: &str,
    server: &str,
) -> Result<(String, Vec<String>), LdapFailure> {
    let found = ldap
        .search(
            &settings.user_base,
            Scope::Subtree,
            filter,
            vec!["memberOf"],
        )
        .await
        .and_then(ldap3::SearchResult::success)
        .map_err(|error| {
            LdapFailure::NotFound(format!(
                "{server}: the search {filter} under {} failed: {}",
                settings.user_base,
                words(&error)
            ))
        })?
        .0;
    match found.as_slice() {
        [entry] => {
            let entry = SearchEntry::construct(entry.clone());
            let member_of = entry.attrs.get("memberOf").cloned().unwrap_or_default();
            Ok((entry.dn, member_of))
        }
        [] => Err(LdapFailure::NotFound(format!(
            "{server}: no entry {filter} under {}",
            settings.user_base
        ))),
        many => Err(LdapFailure::NotFound(format!(
            "{server}: {} entries match {filter} under {}; the name must be unique",
            many.len(),
            settings.user_base
        ))),
    }
}

/// The DNs of the groups under `base` that list `dn` as a member.
async fn groups_under(
    ldap: &mut ldap3::Ldap,
    base: &str,
    dn: &str,
    server: &str,
) -> Result<Vec<String>, LdapFailure> {
    let escaped = ldap_escape(dn);
    let filter = format!("(|(member={escaped})(uniqueMember={escaped}))");
    let found = ldap
        .search(base, Scope::Subtree, &filter, vec!["1.1"])
        .await
        .and_then(ldap3::SearchResult::success)
        .map_err(|error| {
            LdapFailure::NotFound(format!(
                "{server}: the group search under {base} failed: {}",
                words(&error)
            ))
        })?
        .0;
    Ok(found
        .into_iter()
        .map(|entry| SearchEntry::construct(entry).dn)
        .collect())
}

#[cfg(test)]
mod tests;
