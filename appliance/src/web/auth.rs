//! The one authentication layer. Every protected route sits behind
//! `require_auth` as a router layer, so a new route is protected unless it
//! is deliberately added to the open list in `web::open_routes`.
//!
//! Credentials: an API token (`Authorization: Bearer …`) or the session
//! cookie. A cookie is ambient (the browser sends it on its own), so a
//! state-changing request authenticated by cookie must also carry the
//! session's CSRF token in `X-CSRF-Token`. Login attempts are rate-limited
//! per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState, blocking};

pub const SESSION_COOKIE: &str = "poolgate_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Who made a request; inserted as a request extension by `require_auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub username: String,
    /// The session's cookie secret, when authenticated by cookie.
    pub session: Option<String>,
    pub csrf: Option<String>,
}

pub async fn require_auth(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, request.method(), request.headers()).await?;
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
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
        let username = blocking(state, move |store| store.token_user(&token))
            .await?
            .ok_or(ApiError::Unauthorized)?;
        return Ok(Principal {
            username,
            session: None,
            csrf: None,
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
    })
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
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
pub fn session_set_cookie(secret: Option<&str>) -> String {
    match secret {
        Some(secret) => format!(
            "{SESSION_COOKIE}={secret}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
            SESSION_LIFETIME.as_secs()
        ),
        None => format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Failed logins per source address in a sliding window. Bounded: at most
/// `MAX_SOURCES` addresses are tracked; expired entries are dropped first.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginLimiter {
    pub const MAX_FAILURES: u32 = 5;
    pub const WINDOW: Duration = Duration::from_secs(300);
    const MAX_SOURCES: usize = 10_000;

    /// `Err(seconds to wait)` while `source` is locked out.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), u64> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&source) {
            Some((count, since))
                if *count >= Self::MAX_FAILURES && now.duration_since(*since) < Self::WINDOW =>
            {
                Err((Self::WINDOW - now.duration_since(*since)).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, source: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= Self::MAX_SOURCES {
            failures.retain(|_, (_, since)| now.duration_since(*since) < Self::WINDOW);
        }
        if failures.len() >= Self::MAX_SOURCES && !failures.contains_key(&source) {
            // Under a distributed guessing attack keep counting the ones we have.
            return;
        }
        let entry = failures.entry(source).or_insert((0, now));
        if now.duration_since(entry.1) >= Self::WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, source: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_max_failures_then_recovers() {
        let limiter = LoginLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let start = Instant::now();
        for _ in 0..LoginLimiter::MAX_FAILURES {
            assert!(limiter.check(ip, start).is_ok());
            limiter.failed(ip, start);
        }
        assert!(limiter.check(ip, start).is_err());
        assert!(limiter.check(other, start).is_ok(), "per source");
        assert!(limiter.check(ip, start + LoginLimiter::WINDOW).is_ok());
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
