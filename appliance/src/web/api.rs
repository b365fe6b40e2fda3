//! REST API handlers under `/api/v1`. Handlers never mutate live state:
//! changes (configs, member actions) go to the control task (`crate::control`),
//! which validates, commits and publishes them in one order.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::setup_code::SetupCodeError;
use super::auth::{self, AuthStats, Principal};
use super::error::FieldProblem;
use super::error::control_error;
use super::extract::{config_input, expected_version, is_toml};
use super::{ApiError, AppState, blocking};
use crate::config::AdminState;
use crate::control::Source;

pub(crate) async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let view = state.publisher.current();
    let setup_required = !state.setup_done().await?;
    Ok(Json(json!({
        "status": "ok",
        "version": env!("POOLGATE_VERSION"),
        "generation": view.generation,
        "config_version": view.config_version,
        "uptime_s": state.started.elapsed().as_secs(),
        "setup_required": setup_required,
        "setup_code_required": setup_required && state.setup_code.is_some(),
    })))
}

/// Parse a JSON body into `T`, naming the field that failed.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let field = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest(format!("body is not valid JSON: {inner}"))
        } else {
            ApiError::Invalid(vec![FieldProblem {
                field: if field == "." { String::new() } else { field },
                message: inner.to_string(),
                line: None,
                column: None,
            }])
        }
    })
}

/// First-boot setup.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetupBody {
    password: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    setup_code: Option<String>,
}

/// First-boot setup: sets the first admin password, once. Whether setup is
/// still open, and the setup code, are decided before anything is hashed:
/// a request after setup costs a lookup, not an argon2 computation.
pub(crate) async fn setup(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: SetupBody = parse_json(&body)?;
    if state.setup_done().await? {
        return Err(setup_done());
    }
    if let Some(code) = &state.setup_code {
        let stats = &state.login_limiter.stats;
        code.attempt(body.setup_code.as_deref(), Instant::now())
            .map_err(|error| match error {
                SetupCodeError::Wait { retry_after_s } => {
                    AuthStats::count(&stats.setup_code_limited);
                    ApiError::RateLimited { retry_after_s }
                }
                SetupCodeError::Wrong | SetupCodeError::File { .. } => {
                    AuthStats::count(&stats.setup_code_failures);
                    ApiError::Forbidden(
                        "setup_code is missing or wrong; it is shown on the appliance console",
                    )
                }
            })?;
    }
    let username = body.username.unwrap_or_else(|| "admin".to_owned());
    if !crate::store::valid_username(&username) {
        return Err(ApiError::invalid(
            "username",
            "use 1-64 letters, digits, '.', '_' or '-'",
        ));
    }
    let password = body.password;
    let name = username.clone();
    let created = state
        .hashing
        .run(&state.store, move |store| {
            store.set_first_password(&name, &password)
        })
        .await
        .map_err(|busy| gate_refused(&state, busy))?;
    if !created {
        return Err(setup_done());
    }
    if let Some(code) = &state.setup_code {
        code.remove_file();
    }
    tracing::info!(?username, "First-boot setup completed");
    Ok((StatusCode::CREATED, Json(json!({"username": username}))).into_response())
}

/// The answer when the hashing gate gave none, counting a busy refusal.
fn gate_refused(state: &AppState, busy: auth::GateError) -> ApiError {
    if matches!(busy, auth::GateError::NoPermit) {
        AuthStats::count(&state.login_limiter.stats.hash_busy);
    }
    busy.into()
}

fn setup_done() -> ApiError {
    ApiError::Conflict("setup is already done; log in instead")
}

/// Credentials.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    username: String,
    password: String,
}

/// Log in: a session cookie plus the CSRF token for state-changing requests.
/// The attempt is counted before the password is verified (and given back
/// if it was right), so parallel guesses cannot outrun the limit.
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let source = peer.ip();
    let body: LoginBody = parse_json(&body)?;
    let reservation = state
        .login_limiter
        .reserve(source, &body.username, Instant::now())
        .map_err(|retry_after_s| {
            AuthStats::count(&state.login_limiter.stats.login_limited);
            tracing::debug!(%source, username = ?auth::for_log(&body.username), "Login refused: too many attempts");
            ApiError::RateLimited { retry_after_s }
        })?;
    let (username, password) = (body.username.clone(), body.password.clone());
    let ok = match state
        .hashing
        .run(&state.store, move |store| {
            store.verify_password(&username, &password)
        })
        .await
    {
        Ok(ok) => ok,
        Err(busy) => {
            state.login_limiter.refund(&reservation);
            return Err(gate_refused(&state, busy));
        }
    };
    // Not a local user's password: the directory, if one is set up and
    // the name is not a local user's (a local account is never shadowed).
    let directory = if ok {
        None
    } else {
        directory_login(&state, &body.username, &body.password).await
    };
    if !ok && directory.is_none() {
        AuthStats::count(&state.login_limiter.stats.login_failures);
        tracing::info!(%source, username = ?auth::for_log(&body.username), "Login failed");
        return Err(ApiError::Unauthorized);
    }
    state.login_limiter.succeeded(&reservation);
    let username = body.username;
    let name = username.clone();
    let created = blocking(&state, move |store| {
        if let Some(role) = directory {
            return store.directory_session(&name, role, auth::SESSION_LIFETIME);
        }
        let Some(role) = store.user_role(&name)? else {
            return Ok(None);
        };
        let identity = auth::identity::Identity::Local {
            username: name.clone(),
            role,
        };
        let Some(role) = auth::identity::role_of(&identity, &[]) else {
            return Ok(None);
        };
        store
            .create_session(&name, role, auth::SESSION_LIFETIME)
            .map(Some)
    })
    .await?;
    // The user was removed between the check and the session.
    let Some((secret, session)) = created else {
        return Err(ApiError::Unauthorized);
    };
    tracing::info!(%source, ?username, role = %session.role, "Logged in");
    let actor = crate::audit::Actor {
        username: username.clone(),
        role: Some(session.role),
        address: Some(source),
        interface: crate::audit::Interface::Ui,
        token_id: None,
    };
    auth::record(
        &state,
        crate::audit::NewAudit {
            actor,
            kind: crate::audit::AuditKind::Session,
            action: "POST /api/v1/session".to_owned(),
            target: Some(username.clone()),
            status: Some(200),
            detail: None,
        },
    )
    .await;
    let mut response = Json(json!({
        "username": username,
        "role": session.role,
        "csrf_token": session.csrf,
        "expires_at": session.expires_at,
    }))
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        auth::session_set_cookie(Some(&secret))
            .parse()
            .expect("cookie is a valid header value"),
    );
    Ok(response)
}

/// The role the directory gives `username` with `password`, when directory
/// login is set up, the name is not a local user's, and the directory says
/// yes; why not goes to the log (the client only learns it failed).
async fn directory_login(
    state: &AppState,
    username: &str,
    password: &str,
) -> Option<crate::store::Role> {
    let settings = match super::ldap::stored(state) {
        Ok(Some(settings)) => settings,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(%error, "Directory login settings unreadable; local users only");
            return None;
        }
    };
    let name = username.to_owned();
    let free = blocking(state, move |store| store.directory_name(&name)).await;
    if !matches!(free, Ok(crate::store::DirectoryName::Directory)) {
        return None;
    }
    let bundles = std::sync::Arc::clone(&state.publisher.current().ca_bundles);
    match crate::ldap::login(&settings, &bundles, username, password).await {
        Ok(login) => {
            tracing::info!(username = ?auth::for_log(username), dn = %login.dn, role = %login.role, server = %login.server, "Directory login");
            crate::store::Role::parse(&login.role)
        }
        Err(error) => {
            tracing::info!(username = ?auth::for_log(username), reason = %error, "Directory login refused");
            None
        }
    }
}

/// A password change by the logged-in user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordBody {
    current_password: String,
    new_password: String,
    /// Keep the user's API tokens working (default: revoke them all).
    #[serde(default)]
    keep_tokens: bool,
}

/// `PUT /api/v1/session/password`: change the logged-in user's password.
/// Every other session of the user ends; the API tokens are revoked unless
/// `keep_tokens` is set. A wrong current password counts as a failed login.
pub(crate) async fn change_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: PasswordBody = parse_json(&body)?;
    let reservation = state
        .login_limiter
        .reserve(peer.ip(), &principal.username, Instant::now())
        .map_err(|retry_after_s| {
            AuthStats::count(&state.login_limiter.stats.login_limited);
            ApiError::RateLimited { retry_after_s }
        })?;
    let username = principal.username.clone();
    let keep = crate::store::Keep {
        session: principal.session.clone(),
        tokens: body.keep_tokens,
    };
    let changed = state
        .hashing
        .run(&state.store, move |store| {
            if !store.verify_password(&username, &body.current_password)? {
                return Ok(None);
            }
            store
                .change_password(&username, &body.new_password, &keep)
                .map(Some)
        })
        .await;
    let changed = match changed {
        Ok(Some(changed)) => changed,
        Ok(None) => {
            AuthStats::count(&state.login_limiter.stats.login_failures);
            tracing::info!(source = %peer.ip(), username = ?principal.username, "Password change refused: wrong current password");
            return Err(ApiError::Forbidden("current_password is wrong"));
        }
        Err(busy) => {
            state.login_limiter.refund(&reservation);
            return Err(gate_refused(&state, busy));
        }
    };
    state.login_limiter.succeeded(&reservation);
    tracing::info!(
        username = ?principal.username,
        sessions_ended = changed.sessions_ended,
        tokens_revoked = changed.tokens_revoked,
        "Password changed"
    );
    Ok(Json(json!({
        "username": principal.username,
        "sessions_ended": changed.sessions_ended,
        "tokens_revoked": changed.tokens_revoked,
    })))
}

pub(crate) async fn session_info(Extension(principal): Extension<Principal>) -> Json<Value> {
    Json(json!({
        "username": principal.username,
        "role": principal.role,
        "csrf_token": principal.csrf,
        "token_id": principal.token_id,
    }))
}

pub(crate) async fn logout(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    if let Some(secret) = principal.session {
        blocking(&state, move |store| store.delete_session(&secret)).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        auth::session_set_cookie(None)
            .parse()
            .expect("cookie is a valid header value"),
    );
    Ok(response)
}

/// A new API token: its name (what the script using it is for) and,
/// optionally, when it expires (`expires_in_days` or `expires_at`, not both).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    name: String,
    /// Days from now, 1-3650.
    #[serde(default)]
    expires_in_days: Option<u32>,
    /// An RFC 3339 time in the future.
    #[serde(default)]
    expires_at: Option<String>,
    /// What the token may do: the creator's role (the default) or a lower one.
    #[serde(default)]
    role: Option<crate::store::Role>,
}

/// The most a token may be given: ten years.
const MAX_TOKEN_DAYS: u32 = 3650;

fn token_expiry(body: &TokenBody) -> Result<Option<time::OffsetDateTime>, ApiError> {
    let now = time::OffsetDateTime::now_utc();
    match (body.expires_in_days, &body.expires_at) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "expires_at",
            "give expires_in_days or expires_at, not both",
        )),
        (Some(days), None) => {
            if !(1..=MAX_TOKEN_DAYS).contains(&days) {
                return Err(ApiError::invalid(
                    "expires_in_days",
                    format!("use 1-{MAX_TOKEN_DAYS} days"),
                ));
            }
            Ok(Some(now + time::Duration::days(i64::from(days))))
        }
        (None, Some(text)) => {
            let at =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                    ApiError::invalid(
                        "expires_at",
                        "use an RFC 3339 time such as 2027-01-31T00:00:00Z",
                    )
                })?;
            if at <= now {
                return Err(ApiError::invalid(
                    "expires_at",
                    "the time is not in the future",
                ));
            }
            if at > now + time::Duration::days(i64::from(MAX_TOKEN_DAYS)) {
                return Err(ApiError::invalid(
                    "expires_at",
                    format!("at most {MAX_TOKEN_DAYS} days from now"),
                ));
            }
            Ok(Some(at))
        }
    }
}

pub(crate) async fn create_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: TokenBody = parse_json(&body)?;
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err(ApiError::invalid(
            "name",
            "give the token a name of 1-100 characters",
        ));
    }
    let expires = token_expiry(&body)?;
    let role = body.role.unwrap_or(principal.role);
    if role > principal.role {
        return Err(ApiError::invalid(
            "role",
            format!(
                "a token can have your role ({}) or a lower one",
                principal.role
            ),
        ));
    }
    let name = body.name.clone();
    let (id, token) = blocking(&state, move |store| {
        store.create_token(
            &principal.username,
            &name,
            expires.map(time::OffsetDateTime::unix_timestamp),
            role,
        )
    })
    .await?;
    let expires_at = expires.map(crate::clock::rfc3339);
    let mut response = (
        StatusCode::CREATED,
        Json(json!({"id": id, "name": body.name, "role": role, "token": token, "expires_at": expires_at})),
    )
        .into_response();
    response.extensions_mut().insert(crate::audit::AuditDetail(
        json!({"token_id": id, "name": body.name, "role": role}),
    ));
    Ok(response)
}

/// `GET /api/v1/tokens`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenList {
    pub tokens: Vec<crate::store::TokenInfo>,
}

/// An admin sees every token; anyone else their own.
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<TokenList>, ApiError> {
    let mut tokens = blocking(&state, |store| store.tokens()).await?;
    if principal.role < crate::store::Role::Admin {
        tokens.retain(|token| token.username == principal.username);
    }
    Ok(Json(TokenList { tokens }))
}

/// An admin revokes any token; anyone else only their own.
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no token {id:?}")))?;
    let owner = (principal.role < crate::store::Role::Admin).then(|| principal.username.clone());
    if blocking(&state, move |store| {
        store.revoke_token(id, owner.as_deref())
    })
    .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no active token {id}")))
    }
}

/// The desired config as JSON, with each member's current admin state:
/// the committed config as the control task holds it (nothing is parsed).
pub(crate) async fn get_config(State(state): State<AppState>) -> Json<Value> {
    Json(
        serde_json::to_value(state.control.desired().file())
            .expect("a config file serialises to JSON"),
    )
}

/// Longest a config PUT waits for moved listeners to be open.
const LISTENERS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Replace the desired config: validate, commit, publish. The body is JSON,
/// or TOML with `Content-Type: application/toml` (an exported file). Nothing
/// is written unless the whole config is valid, nor when `If-Match` names a
/// version other than the stored one (409: someone else changed it). The
/// answer names the pool view `generation` that carries the change: when it
/// is given, DNS, the proxy and SIP already serve it, on their new
/// addresses if they moved. A moved admin listener answers `confirm_by`:
/// `POST /api/v1/config/confirm` must reach the new address before then.
pub(crate) async fn put_config(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let toml = is_toml(&headers);
    let input = config_input(&headers, &body)?;
    let expected = expected_version(&headers)?;
    let source = Source::Api {
        user: principal.username,
    };
    let before = state.control.desired().version;
    let outcome = state
        .control
        .set_config(input, expected, source)
        .await
        .map_err(|error| control_error(error, toml))?;
    if outcome.diff.listeners_changed {
        // Moved listeners answer before the change is acknowledged. The
        // wait is bounded: a bind that fails is reported, not waited for.
        let mut applied = state.listeners_applied.clone();
        let generation = outcome.generation;
        let _ = tokio::time::timeout(
            LISTENERS_WAIT,
            applied.wait_for(|applied| *applied >= generation),
        )
        .await;
    }
    let changed = !outcome.diff.is_empty();
    let mut response = Json(json!({
        "version": outcome.version,
        "changed": changed,
        "generation": outcome.generation,
        "confirm_by": outcome.confirm_by.map(crate::clock::rfc3339),
    }))
    .into_response();
    // Both versions' ids: `GET /api/v1/config/versions/{id}` shows each.
    response
        .extensions_mut()
        .insert(crate::audit::AuditDetail(json!({
            "before_version": before,
            "after_version": outcome.version,
            "changed": changed,
        })));
    Ok(response)
}

/// `POST /api/v1/pools/{pool}/members/{member}/{action}`: drain, enable, disable.
pub(crate) async fn member_action(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((pool, member, action)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let target = match action.as_str() {
        "drain" => AdminState::Draining,
        "enable" => AdminState::Enabled,
        "disable" => AdminState::Disabled,
        _ => {
            return Err(ApiError::NotFound(format!(
                "no action {action:?}; use drain, enable or disable"
            )));
        }
    };
    let source = Source::Api {
        user: principal.username,
    };
    let outcome = state
        .control
        .set_admin_state((pool.clone(), member.clone()), target, source)
        .await
        .map_err(|error| control_error(error, false))?;
    let mut response = Json(json!({
        "pool": pool,
        "member": member,
        "admin_state": outcome.state.as_str(),
        "previous": outcome.previous.as_str(),
        "generation": outcome.generation,
    }))
    .into_response();
    response
        .extensions_mut()
        .insert(crate::audit::AuditDetail(json!({
            "pool": pool,
            "member": member,
            "admin_state": outcome.state.as_str(),
            "previous": outcome.previous.as_str(),
        })));
    Ok(response)
}

/// Prometheus text exposition of the current view and counters: each
/// component renders its own families (`crate::metrics`).
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    use crate::metrics::{CONTENT_TYPE, MetricsWriter, Render};
    let mut out = MetricsWriter::new();
    state.publisher.current().render(&mut out);
    state.dns_stats.render(&mut out);
    state.sip_stats.render(&mut out);
    state.login_limiter.stats.render(&mut out);
    state.events.stats().render(&mut out);
    state.listeners.render(&mut out);
    state.addresses.render(&mut out);
    if let Some(ha) = &state.ha {
        ha.stats.render(&mut out);
    }
    if let Some(syslog) = &state.syslog {
        syslog.render(&mut out);
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out.finish()).into_response()
}

/// Licence status with current use.
pub(crate) async fn license_status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let licensing = state.licensing.clone();
    let status = tokio::task::spawn_blocking(move || licensing.status()).await??;
    let usage = crate::license::Usage::of(&state.publisher.current().config);
    let licensed = status.state == crate::license::LicenceState::Licensed;
    let mut body = serde_json::to_value(status).expect("status serialises");
    body["usage"] = serde_json::to_value(usage).expect("usage serialises");
    // Until a licence of its own is in force: licences a restored backup brought that are bound to another
    // appliance: what to ask the vendor to re-issue (`crate::backup`).
    let other = blocking(&state, |store| {
        store.setting(crate::store::OTHER_APPLIANCE_LICENCES)
    })
    .await?;
    if let Some(other) = other
        .filter(|_| !licensed)
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
    {
        body["other_appliance_licences"] = other;
    }
    Ok(Json(body))
}

/// A licence as the vendor issued it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LicenceBody {
    license: String,
}

/// Activate a licence. A rejected one leaves the previous in force.
pub(crate) async fn install_license(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: LicenceBody = parse_json(&body)?;
    let licensing = state.licensing.clone();
    let installed = tokio::task::spawn_blocking(move || licensing.install(&body.license)).await??;
    match installed {
        Ok(licence) => {
            tracing::info!(license_id = ?licence.id, customer = ?licence.customer, "Licence installed");
            license_status(State(state)).await
        }
        Err(error) => Err(ApiError::invalid("license", error.to_string())),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RegistrarQuery {
    uri: String,
}

/// A user's logical and physical registrar sequences.
pub(crate) async fn registrar(
    State(state): State<AppState>,
    Query(query): Query<RegistrarQuery>,
) -> Result<Json<Value>, ApiError> {
    let view = state.publisher.current();
    match crate::sip::registrar::lookup(&view, &query.uri) {
        Ok(Some(lookup)) => Ok(Json(
            serde_json::to_value(lookup).expect("a lookup serialises"),
        )),
        Ok(None) => Err(ApiError::NotFound("no pool is configured".to_owned())),
        Err(error) => Err(ApiError::invalid("uri", error.to_string())),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WhatIfQuery {
    pool: String,
    member: String,
}

/// What share of users would move off a member if it were drained: over the
/// hash space, and over the users seen in REGISTERs.
pub(crate) async fn registrar_what_if(
    State(state): State<AppState>,
    Query(query): Query<WhatIfQuery>,
) -> Result<Json<Value>, ApiError> {
    let view = state.publisher.current();
    let not_found = || {
        ApiError::NotFound(format!(
            "pool {:?} has no member {:?}",
            query.pool, query.member
        ))
    };
    let pool_index = view
        .pools
        .iter()
        .position(|p| p.name == query.pool)
        .ok_or_else(not_found)?;
    let index = view.pools[pool_index]
        .members
        .iter()
        .position(|m| m.name == query.member)
        .ok_or_else(not_found)?;
    let name = query.pool.clone();
    // Off the async threads: the seen users are copied out page by page (the
    // store is held for one page at a time, never while ranking), then ranked
    // with no lock held.
    let (fraction_hash_space, seen_users, fraction_seen_users) = blocking(&state, move |store| {
        let seen = store.seen_aors(&name)?;
        let pool = &view.pools[pool_index];
        Ok((
            crate::sip::registrar::drain_fraction(pool, index),
            seen.len(),
            crate::sip::seen_drain_fraction(pool, index, &seen),
        ))
    })
    .await?;
    Ok(Json(json!({
        "pool": query.pool,
        "member": query.member,
        "fraction_hash_space": fraction_hash_space,
        "seen_users": seen_users,
        "fraction_seen_users": fraction_seen_users,
    })))
}
