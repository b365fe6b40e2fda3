//! Local users and their roles (admin only):
//! * `GET  /api/v1/users` — every user with role, live sessions and tokens
//! * `POST /api/v1/users` — add one (`{"username","password","role"}`); 409
//!   if the name is taken
//! * `GET|PUT|DELETE /api/v1/users/{name}` — one user; change its role
//!   and/or password (`{"role"?, "password"?}`); remove it
//!
//! A changed password or role, or a removal, ends the user's sessions and
//! revokes their tokens (an admin's own session survives a change of their
//! own password alone). The last admin cannot be removed or demoted, nor the
//! built-in `admin` (the break-glass account): 409. Input errors are 422
//! naming the field, with nothing written.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::api::parse_json;
use super::auth::Principal;
use super::{ApiError, AppState, blocking};
use crate::audit::AuditDetail;
use crate::store::{Role, UserChange, UserInfo};

/// `GET /api/v1/users`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UserList {
    pub users: Vec<UserInfo>,
}

/// A new user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUserBody {
    username: String,
    password: String,
    role: Role,
}

/// A change to a user: either or both.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserUpdateBody {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    password: Option<String>,
}

pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<UserList>, ApiError> {
    let users = blocking(&state, |store| store.users()).await?;
    Ok(Json(UserList { users }))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    let lookup = name.clone();
    blocking(&state, move |store| store.user(&lookup))
        .await?
        .map(Json)
        .ok_or_else(|| no_user(&name))
}

fn no_user(name: &str) -> ApiError {
    ApiError::NotFound(format!("no user {:?}", super::auth::for_log(name)))
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < crate::store::MIN_PASSWORD_LEN {
        return Err(ApiError::invalid(
            "password",
            format!("use at least {} characters", crate::store::MIN_PASSWORD_LEN),
        ));
    }
    if password.len() > 1024 {
        return Err(ApiError::invalid("password", "use at most 1024 bytes"));
    }
    Ok(())
}

/// The answer to a store's refusal, or the change's counts.
fn outcome(change: UserChange, name: &str) -> Result<(usize, usize), ApiError> {
    match change {
        UserChange::Done {
            sessions_ended,
            tokens_revoked,
        } => Ok((sessions_ended, tokens_revoked)),
        UserChange::NoSuchUser => Err(no_user(name)),
        UserChange::Exists => Err(ApiError::Conflict("a user of that name exists")),
        UserChange::LastAdmin => Err(ApiError::Conflict(
            "this is the last admin: add another admin first",
        )),
        UserChange::BuiltinAdmin => Err(ApiError::Conflict(
            "the built-in admin is the break-glass account: it stays an admin and cannot be removed",
        )),
    }
}

pub(crate) async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: NewUserBody = parse_json(&body)?;
    if !crate::store::valid_username(&body.username) {
        return Err(ApiError::invalid(
            "username",
            "use 1-64 letters, digits, '.', '_' or '-'",
        ));
    }
    check_password(&body.password)?;
    let NewUserBody {
        username,
        password,
        role,
    } = body;
    let name = username.clone();
    let change = state
        .hashing
        .run(&state.store, move |store| {
            store.create_user(&name, &password, role)
        })
        .await?;
    outcome(change, &username)?;
    tracing::info!(?username, %role, "User added");
    let mut response = (
        StatusCode::CREATED,
        Json(json!({"username": username, "role": role})),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(AuditDetail(json!({"username": username, "role": role})));
    Ok(response)
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: UserUpdateBody = parse_json(&body)?;
    if body.role.is_none() && body.password.is_none() {
        return Err(ApiError::invalid("role", "give a role, a password or both"));
    }
    if let Some(password) = &body.password {
        check_password(password)?;
    }
    let keep = (principal.username == name)
        .then(|| principal.session.clone())
        .flatten();
    let (role, password_changed) = (body.role, body.password.is_some());
    let user = name.clone();
    let change = state
        .hashing
        .run(&state.store, move |store| {
            store.update_user(&user, body.password.as_deref(), body.role, keep.as_deref())
        })
        .await?;
    let (sessions_ended, tokens_revoked) = outcome(change, &name)?;
    tracing::info!(username = ?name, role = ?role, password_changed, sessions_ended, tokens_revoked, "User changed");
    let answer = json!({
        "username": name,
        "role": role,
        "password_changed": password_changed,
        "sessions_ended": sessions_ended,
        "tokens_revoked": tokens_revoked,
    });
    let mut response = Json(answer.clone()).into_response();
    response.extensions_mut().insert(AuditDetail(answer));
    Ok(response)
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let user = name.clone();
    let change = blocking(&state, move |store| store.delete_user(&user)).await?;
    let (sessions_ended, tokens_revoked) = outcome(change, &name)?;
    tracing::info!(username = ?name, sessions_ended, tokens_revoked, "User removed");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.extensions_mut().insert(AuditDetail(json!({
        "username": name,
        "sessions_ended": sessions_ended,
        "tokens_revoked": tokens_revoked,
    })));
    Ok(response)
}
