//! HA → VRRP: this appliance's VRRP settings and keepalived's state
//! (`vrrp`). The pairing and sync half of the HA pair is `/api/v1/ha`.
//!
//! * `GET /api/v1/ha/vrrp` — settings (or `null`), who holds the addresses,
//!   keepalived's state per instance, the keepalived.conf they render to,
//!   and each address the pair holds with its instance (`addresses`, for
//!   the HA page's state per address)
//! * `PUT /api/v1/ha/vrrp` — store settings (422 naming the field, nothing
//!   stored); keepalived then holds the VIPs instead of poolgate
//! * `DELETE /api/v1/ha/vrrp` — turn VRRP off: poolgate holds its addresses

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Json;

use super::auth::Principal;
use super::{ApiError, AppState};
use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::Config;
use crate::net::addresses::desired::Wanted;
use crate::vrrp::{VrrpError, VrrpSettings, VrrpView};

/// `GET|PUT|DELETE /api/v1/ha/vrrp`: the view, and the addresses the pair
/// holds, each with the keepalived instance that holds it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct VrrpPage {
    #[serde(flatten)]
    pub view: VrrpView,
    pub addresses: Vec<VrrpAddress>,
}

/// One address of the pair.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct VrrpAddress {
    pub address: String,
    pub interface: String,
    /// What uses it: `virtual service web`, `management address`.
    pub used_by: Vec<String>,
    /// The keepalived instance that holds it (`poolgate_v4`,
    /// `poolgate_v6`); `None` without VRRP settings for its family.
    pub instance: Option<&'static str>,
}

/// The addresses keepalived holds with `settings`: `wanted` (the config's
/// VIPs as placed on this host) and the management address.
fn addresses(
    settings: Option<&VrrpSettings>,
    wanted: BTreeMap<IpAddr, Wanted>,
) -> Vec<VrrpAddress> {
    use crate::vrrp::render::{INSTANCE_V4, INSTANCE_V6};
    let instance = |ip: IpAddr| {
        let paired = settings.is_some_and(|s| match ip {
            IpAddr::V4(_) => s.source_v4.is_some(),
            IpAddr::V6(_) => s.source_v6.is_some(),
        });
        paired.then_some(if ip.is_ipv4() {
            INSTANCE_V4
        } else {
            INSTANCE_V6
        })
    };
    let mut out: Vec<VrrpAddress> = wanted
        .into_iter()
        .map(|(ip, wanted)| VrrpAddress {
            address: ip.to_string(),
            interface: wanted.interface,
            used_by: wanted.users,
            instance: instance(ip),
        })
        .collect();
    if let Some(settings) = settings
        && let Some(ip) = settings.management_address
    {
        let text = ip.to_string();
        match out.iter_mut().find(|a| a.address == text) {
            Some(held) => held.used_by.push("management address".into()),
            None => out.push(VrrpAddress {
                address: text,
                interface: settings.interface.clone(),
                used_by: vec!["management address".into()],
                instance: instance(ip),
            }),
        }
    }
    out
}

/// Blocking: places the VIPs against the host's interfaces.
fn page(view: VrrpView, config: &Config) -> VrrpPage {
    let wanted = crate::net::addresses::vrrp_wanted(config).wanted;
    VrrpPage {
        addresses: addresses(view.settings.as_ref(), wanted),
        view,
    }
}

fn vrrp(state: &AppState) -> Result<&std::sync::Arc<crate::vrrp::Vrrp>, ApiError> {
    state.vrrp.as_ref().ok_or(ApiError::Unavailable)
}

fn answer(error: VrrpError) -> ApiError {
    match error {
        VrrpError::Invalid(problems) => ApiError::Invalid(problems),
        VrrpError::Store(error) => ApiError::Store(error),
        VrrpError::Stored(message) => ApiError::BadRequest(message),
    }
}

pub(crate) async fn get(State(state): State<AppState>) -> Result<Json<VrrpPage>, ApiError> {
    let vrrp = std::sync::Arc::clone(vrrp(&state)?);
    let config = std::sync::Arc::clone(&state.control.desired().config);
    // Rendering reads the host's interfaces (a system call).
    Ok(Json(
        tokio::task::spawn_blocking(move || page(vrrp.view(&config), &config)).await?,
    ))
}

async fn set(
    state: &AppState,
    principal: &Principal,
    settings: Option<VrrpSettings>,
) -> Result<Json<VrrpPage>, ApiError> {
    let vrrp = std::sync::Arc::clone(vrrp(state)?);
    let config = std::sync::Arc::clone(&state.control.desired().config);
    let actor = principal.username.clone();
    tokio::task::spawn_blocking(move || {
        vrrp.set(settings, &config, &actor).map_err(answer)?;
        Ok(Json(page(vrrp.view(&config), &config)))
    })
    .await?
}

pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Json<VrrpPage>, ApiError> {
    let settings: VrrpSettings = super::api::parse_json(&body)?;
    set(&state, &principal, Some(settings)).await
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<VrrpPage>, ApiError> {
    set(&state, &principal, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(management: Option<&str>) -> VrrpSettings {
        VrrpSettings {
            interface: "eth0".to_owned(),
            source_v4: Some("198.51.100.11".parse().expect("ip")),
            peer_v4: Some("198.51.100.12".parse().expect("ip")),
            source_v6: None,
            peer_v6: None,
            virtual_router_id: 51,
            priority: 150,
            advert_interval_s: crate::vrrp::settings::AdvertInterval(100),
            preempt: false,
            management_address: management.map(|ip| ip.parse().expect("ip")),
        }
    }

    fn wanted(list: &[(&str, &str)]) -> BTreeMap<IpAddr, Wanted> {
        list.iter()
            .map(|(ip, user)| {
                (
                    ip.parse().expect("ip"),
                    Wanted {
                        interface: "eth0".into(),
                        users: vec![(*user).to_owned()],
                    },
                )
            })
            .collect()
    }

    #[test]
    fn each_address_names_the_instance_of_its_family_and_the_management_address_is_one() {
        let vips = wanted(&[
            ("198.51.100.20", "virtual service web"),
            ("2001:db8::20", "virtual service web6"),
        ]);
        let list = addresses(Some(&settings(Some("198.51.100.30"))), vips);
        let seen: Vec<_> = list
            .iter()
            .map(|a| (a.address.as_str(), a.instance, a.used_by.join(", ")))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "198.51.100.20",
                    Some("poolgate_v4"),
                    "virtual service web".to_owned()
                ),
                // No IPv6 pair in the settings: no instance holds it.
                ("2001:db8::20", None, "virtual service web6".to_owned()),
                (
                    "198.51.100.30",
                    Some("poolgate_v4"),
                    "management address".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_management_address_that_is_a_vip_is_listed_once_and_without_settings_none_has_an_instance()
    {
        let vips = wanted(&[("198.51.100.20", "virtual service web")]);
        let list = addresses(Some(&settings(Some("198.51.100.20"))), vips.clone());
        assert_eq!(list.len(), 1);
        assert_eq!(
            list[0].used_by,
            ["virtual service web", "management address"]
        );
        let off = addresses(None, vips);
        assert_eq!(off.len(), 1);
        assert_eq!(off[0].instance, None);
    }
}
