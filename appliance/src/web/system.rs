//! Upgrades (what runs now is in `GET /api/v1/system`, `appliance.rs`):
//! * `POST /api/v1/system/upgrade` — upload a `.pgup` bundle as the raw
//!   request body (streamed to the data partition, never held in memory).
//!   Query: `verify_only=true` runs every check and writes nothing;
//!   `reboot=now` (default), `reboot=later` (the admin reboots), or an
//!   RFC 3339 time; `drain_timeout_s=N` waits for the proxy's connections to
//!   end (at most N seconds) before rebooting. A refused bundle answers 422
//!   (or 409 for a version that does not apply) with the reason; nothing is
//!   written.

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::auth::Principal;
use super::{ApiError, AppState};
use crate::state::PublisherHandle;
use crate::system::reboot::{MAX_DRAIN, OpenConnections, RebootPlan};
use crate::system::upgrade::Uploaded;

/// After a refusal, at most this much of the rest of an upload is read and
/// dropped before answering; past it the connection is closed.
const DISCARD_LIMIT: usize = 1 << 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpgradeQuery {
    #[serde(default)]
    verify_only: bool,
    reboot: Option<String>,
    drain_timeout_s: Option<u64>,
}

/// The reboot the query asks for; `None`: the admin reboots later.
fn reboot_plan(query: &UpgradeQuery) -> Result<Option<RebootPlan>, ApiError> {
    let at = match query.reboot.as_deref() {
        None | Some("now") => None,
        Some("later") => return Ok(None),
        Some(text) => Some(
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| ApiError::invalid("reboot", "use now, later, or an RFC 3339 time"))?,
        ),
    };
    if query
        .drain_timeout_s
        .is_some_and(|s| s > MAX_DRAIN.as_secs())
    {
        return Err(ApiError::invalid(
            "drain_timeout_s",
            format!("at most {} seconds", MAX_DRAIN.as_secs()),
        ));
    }
    Ok(Some(RebootPlan {
        at,
        drain_timeout_s: query.drain_timeout_s,
    }))
}

pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<UpgradeQuery>, QueryRejection>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let mut stream = body.into_data_stream();
    let checked = query
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
        .and_then(|Query(query)| Ok((reboot_plan(&query)?, query.verify_only)));
    let (reboot, verify_only) = match checked {
        Ok(checked) => checked,
        Err(error) => {
            discard(&mut stream).await;
            return Err(error);
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(8);
    let upgrades = state.upgrades.clone();
    let store = state.store.clone();
    let actor = principal.username.clone();
    let task = tokio::task::spawn_blocking(move || {
        let chunks = std::iter::from_fn(|| rx.blocking_recv());
        upgrades
            .upgrader
            .upload(&store, &actor, chunks, verify_only)
    });
    // Ends with the body, or as soon as the upload is refused (the receiver
    // is gone), which also bounds a body longer than its bundle.
    let mut refused = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| error.to_string());
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() {
            refused = true;
            break;
        }
        if failed {
            break;
        }
    }
    drop(tx);
    if refused {
        discard(&mut stream).await;
    }
    match task.await?? {
        Uploaded::Verified(plan) => Ok(Json(json!({
            "verified": true,
            "version": plan.manifest.version,
            "min_from_version": plan.manifest.min_from_version,
            "from_version": plan.from_version,
            "slot": plan.target_slot,
            "components": plan.manifest.components,
        }))),
        Uploaded::Installed(pending) => {
            tracing::info!(to = %pending.to_version, slot = ?pending.to_slot, user = %principal.username, "Upgrade installed");
            let body = json!({
                "installed": pending.to_version,
                "slot": pending.to_slot,
                "reboot": reboot,
            });
            if let Some(plan) = reboot {
                state.upgrades.schedule(
                    plan,
                    state.store.clone(),
                    proxy_connections(state.publisher.clone()),
                );
            }
            Ok(Json(body))
        }
    }
}

/// What a reboot that drains waits for: connections open through the VIP
/// proxy, over every member of every pool, in the latest snapshot.
fn proxy_connections(publisher: PublisherHandle) -> OpenConnections {
    std::sync::Arc::new(move || {
        publisher
            .current()
            .pools
            .iter()
            .flat_map(|pool| pool.members.iter())
            .map(|member| member.counters.active())
            .sum()
    })
}

/// Read and drop the rest of a refused upload, up to a bound, so that the
/// client sees the refusal rather than a connection closed under its upload.
async fn discard(stream: &mut axum::body::BodyDataStream) {
    let mut discarded = 0usize;
    while discarded < DISCARD_LIMIT
        && let Some(Ok(chunk)) = stream.next().await
    {
        discarded += chunk.len();
    }
}
