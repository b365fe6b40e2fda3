//! The one authentication layer. Every protected route sits behind
//! `require_auth` as a router layer, so a new route is protected unless it
//! is deliberately added to the open list in `web::open_routes`.
//!
//! Credentials: an API token (`Authorization: Bearer …`) or the session
//! cookie. A cookie is ambient (the browser sends it on its own), so a
//! state-changing request authenticated by cookie must also carry the
//! session's CSRF token in `X-CSRF-Token`.
//!
//! Guarding the credentials themselves:
//! * login attempts are counted before they are verified ([`limiter`]: per
//!   source, per user name, globally);
//! * password hashes are computed a few at a time ([`HashGate`]), so the
//!   memory they take is bounded: [`HASH_PERMITS`] × 19 MiB;
//! * the first-boot setup code and its back-off ([`setup_code`]).
//!
//! A session or token checked once is not trusted forever: long-lived
//! responses (the status stream) call [`still_valid`] as they go.
//!
//! Roles: every protected route declares the least [`Role`] it needs
//! (`web::Access`), and this layer, built per route from the route tables,
//! refuses a principal below it with 403 before the handler runs. A
//! session carries the role its user had at login ([`identity`] maps an
//! authenticated identity to one), a token the role it was created with,
//! never above its user's current role.
//!
//! Audit: the layer extracts the [`Actor`] (user, role, address, interface)
//! once, into a request extension, and records every authenticated
//! state-changing request in the audit log with its answer's status (a
//! refused one too), with whatever `AuditDetail` the handler attached.

pub(crate) mod identity;
pub(crate) mod limiter;
pub(crate) mod setup_code;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::Semaphore;

use super::{ApiError, AppState, blocking};
use crate::audit::{Actor, AuditDetail, AuditKind, Interface, NewAudit};
use crate::store::Role;

pub(crate) const SESSION_COOKIE: &str = "poolgate_session";
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Who made a request; inserted as a request extension by `require_auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) username: String,
    /// The session's cookie secret, when authenticated by cookie.
    pub session: Option<String>,
    pub csrf: Option<String>,
    /// The API token's id, when authenticated by token.
    pub token_id: Option<i64>,
    /// What the session or token may do.
    pub role: Role,
}

impl Principal {
    /// The actor of what this principal does from `address`.
    pub(crate) fn actor(&self, address: Option<IpAddr>) -> Actor {
        Actor {
            username: self.username.clone(),
            role: Some(self.role),
            address,
            interface: if self.token_id.is_some() {
                Interface::Token
            } else {
                Interface::Ui
            },
            token_id: self.token_id,
        }
    }
}

/// What the layer in front of one protected route knows: the app, the
/// least role the route needs, and the route's pattern (for the audit log).
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub state: AppState,
    pub min: Role,
    pub path: &'static str,
}

pub(crate) async fn require_auth(
    State(guard): State<Guard>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let state = &guard.state;
    let principal = authenticate(state, request.method(), request.headers()).await?;
    let address = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    let actor = principal.actor(address);
    let method = request.method().clone();
    let changes = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let action = format!("{method} {}", request.uri().path());
    let allowed = principal.role >= guard.min;
    let response = if allowed {
        request.extensions_mut().insert(principal);
        request.extensions_mut().insert(actor.clone());
        next.run(request).await
    } else {
        tracing::info!(username = ?actor.username, role = %actor.role.unwrap_or(Role::Viewer), %action, "Refused: role too low");
        axum::response::IntoResponse::into_response(ApiError::Forbidden(needs(guard.min)))
    };
    if changes {
        let detail = response
            .extensions()
            .get::<AuditDetail>()
            .map(|d| d.0.clone());
        let entry = NewAudit {
            actor,
            kind: AuditKind::of_path(guard.path),
            action,
            target: None,
            status: Some(response.status().as_u16()),
            detail,
        };
        record(state, entry).await;
    }
    Ok(response)
}

/// Record an audit entry. A failure to record is logged, never turned into
/// a failure of the change, which has happened.
pub(crate) async fn record(state: &AppState, entry: NewAudit) {
    if let Err(error) = blocking(state, move |store| store.record_audit(&entry)).await {
        tracing::warn!(%error, "Audit entry not recorded");
    }
}

/// Why a role was refused: the least role the route needs.
pub(crate) const fn needs(min: Role) -> &'static str {
    match min {
        Role::Viewer => "this needs a user role",
        Role::Operator => "this needs the operator or admin role",
        Role::Admin => "this needs the admin role",
    }
}

async fn authenticate(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?
            .to_owned();
        let token = blocking(state, move |store| store.use_token(&token))
            .await?
            .ok_or(ApiError::Unauthorized)?;
        return Ok(Principal {
            username: token.username,
            session: None,
            csrf: None,
            token_id: Some(token.id),
            role: token.role,
        });
    }
    let secret = session_cookie(headers).ok_or(ApiError::Unauthorized)?;
    let lookup = secret.clone();
    let session = blocking(state, move |store| store.session(&lookup))
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !sent.is_some_and(|sent| constant_time_eq(sent.as_bytes(), session.csrf.as_bytes())) {
            return Err(ApiError::Forbidden("missing or wrong X-CSRF-Token"));
        }
    }
    Ok(Principal {
        username: session.username,
        session: Some(secret),
        csrf: Some(session.csrf),
        token_id: None,
        role: session.role,
    })
}

/// The session cookie's value, if the request carries one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// `Set-Cookie` for a new session, or (with `None`) one that clears it.
pub(crate) fn session_set_cookie(secret: Option<&str>) -> String {
    match secret {
        Some(secret) => format!(
            "{SESSION_COOKIE}={secret}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
            SESSION_LIFETIME.as_secs()
        ),
        None => format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"),
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Login attempts, limited by the rules of [`limiter`]: an attempt is
/// reserved before its password is verified.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    limits: Mutex<limiter::Limits>,
    /// What the credential guards refused, for `/metrics`.
    pub stats: AuthStats,
}

/// Counters of refused credentials, rendered in `/metrics`.
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Logins (and password changes) with a wrong password.
    pub login_failures: AtomicU64,
    /// Logins refused by a limit before anything was verified.
    pub login_limited: AtomicU64,
    /// Requests refused because every hashing permit stayed busy.
    pub hash_busy: AtomicU64,
    /// Wrong first-boot setup codes.
    pub setup_code_failures: AtomicU64,
    /// Setup attempts refused while the setup-code back-off runs.
    pub setup_code_limited: AtomicU64,
}

impl AuthStats {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl crate::metrics::Render for AuthStats {
    fn render(&self, out: &mut crate::metrics::MetricsWriter) {
        let Self {
            login_failures,
            login_limited,
            hash_busy,
            setup_code_failures,
            setup_code_limited,
        } = self;
        for (name, help, value) in [
            (
                "poolgate_login_failures_total",
                "Logins and password changes with a wrong password.",
                login_failures,
            ),
            (
                "poolgate_login_limited_total",
                "Logins refused by a rate limit before verification.",
                login_limited,
            ),
            (
                "poolgate_password_hash_busy_total",
                "Requests refused because every password-hashing permit stayed busy.",
                hash_busy,
            ),
            (
                "poolgate_setup_code_failures_total",
                "Wrong first-boot setup codes.",
                setup_code_failures,
            ),
            (
                "poolgate_setup_code_limited_total",
                "First-boot setups refused while the setup-code back-off runs.",
                setup_code_limited,
            ),
        ] {
            out.counter(name, help, value);
        }
    }
}

impl LoginLimiter {
    /// Count an attempt before verifying it, or `Err(seconds to wait)`.
    pub(crate) fn reserve(
        &self,
        source: IpAddr,
        username: &str,
        now: Instant,
    ) -> Result<limiter::Reservation, u64> {
        self.lock().reserve(source, username, now)
    }

    /// The verification did not run (too busy, an internal error).
    pub(crate) fn refund(&self, reservation: &limiter::Reservation) {
        self.lock().refund(reservation);
    }

    pub(crate) fn succeeded(&self, reservation: &limiter::Reservation) {
        self.lock().succeeded(reservation);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, limiter::Limits> {
        // Every update leaves the tables consistent, so a poisoned lock is usable.
        self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The few password hashes (argon2id) computed at once. Each takes 19 MiB
/// of memory (argon2's defaults, m = 19 MiB, t = 2, p = 1: OWASP's
/// recommendation) and tens of milliseconds of a core, so
/// without this gate a burst of logins or setups takes the whole machine's
/// memory and CPU (and with them DNS and SIP). Beyond a short wait for a
/// permit the request is refused with 429 and `Retry-After` at once.
#[derive(Debug)]
pub struct HashGate {
    permits: Arc<Semaphore>,
    wait: Duration,
}

/// Concurrent argon2 computations.
pub(crate) const HASH_PERMITS: usize = 2;
/// How long a request waits for one before it is refused.
pub(crate) const HASH_WAIT: Duration = Duration::from_secs(3);

impl Default for HashGate {
    fn default() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(HASH_PERMITS)),
            wait: HASH_WAIT,
        }
    }
}

impl HashGate {
    /// Run `call` (which hashes or verifies a password) on a blocking thread
    /// once a permit is free. The permit moves into the blocking task, so a
    /// client that hangs up mid-hash does not free it before the hash ends.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        store: &crate::store::Store,
        call: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, GateError> {
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| GateError::NoPermit)?
            .map_err(|_| GateError::NoPermit)?;
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            call(&store)
        })
        .await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(GateError::Failed(ApiError::Store(error))),
            Err(error) => Err(GateError::Failed(ApiError::Join(error))),
        }
    }
}

/// Why a gated hash did not produce an answer.
#[derive(Debug)]
pub(crate) enum GateError {
    /// No permit within the wait: the caller refunds the attempt and answers
    /// 429.
    NoPermit,
    /// The call ran and failed.
    Failed(ApiError),
}

impl From<GateError> for ApiError {
    fn from(error: GateError) -> Self {
        match error {
            GateError::NoPermit => ApiError::RateLimited { retry_after_s: 1 },
            GateError::Failed(error) => error,
        }
    }
}

/// A client-supplied name as logged: at most [`LOGGED_NAME_LEN`] bytes, so a
/// megabyte of user name is not a megabyte of log. Log it with `?` (Debug)
/// so control characters are escaped.
pub(crate) fn for_log(name: &str) -> &str {
    let mut end = name.len().min(LOGGED_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

pub(crate) const LOGGED_NAME_LEN: usize = 100;

/// Whether the credentials behind `principal` still hold: a stream that
/// outlives a logout, a password change or an expiry ends at the next check.
pub(crate) async fn still_valid(state: &AppState, principal: &Principal) -> bool {
    let session = principal.session.clone();
    let token = principal.token_id;
    blocking(state, move |store| match (session, token) {
        (Some(secret), _) => Ok(store.session(&secret)?.is_some()),
        (None, Some(id)) => store.token_active(id),
        (None, None) => Ok(false),
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn hashing_beyond_the_permits_waits_briefly_then_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(dir.path()).expect("store");
        let gate = HashGate::default();
        let held: Vec<_> = (0..HASH_PERMITS)
            .map(|_| {
                Arc::clone(&gate.permits)
                    .try_acquire_owned()
                    .expect("permit")
            })
            .collect();
        let started = tokio::time::Instant::now();
        let refused = gate.run(&store, |_| Ok(())).await;
        assert!(matches!(refused, Err(GateError::NoPermit)));
        assert_eq!(started.elapsed(), HASH_WAIT);
        drop(held);
        assert!(gate.run(&store, |store| store.has_admin()).await.is_ok());
    }

    #[test]
    fn names_are_logged_shortened() {
        assert_eq!(for_log("admin"), "admin");
        let long = "é".repeat(200);
        assert!(for_log(&long).len() <= LOGGED_NAME_LEN);
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "theme=dark; poolgate_session=abc123; other=1"
                .parse()
                .expect("header"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc123"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
