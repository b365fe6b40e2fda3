//! Handing keepalived its configuration. poolgate is unprivileged: it
//! writes a typed request (`{"id", "settings", "vips"}`) at the layout's
//! `request` path and waits for the result; the image's `poolgate-vrrp.path`
//! starts `poolgate system apply-vrrp` as root, which takes the request
//! (without following links, as the other root steps do), validates the
//! settings and every VIP again itself, renders keepalived.conf and the
//! nftables rule with the paths of *its* layout (the health file, the FIFO,
//! the check's binary and user are never taken from the request: a request
//! cannot make keepalived run anything else, or as anyone else), writes
//! them on the data partition, loads the rule (`nft -f`) and reloads
//! keepalived (`systemctl reload-or-restart keepalived.service`; stopped
//! when VRRP is turned off). A layout without `request` writes in process
//! (development).

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::render::{self, Paths, Vips};
use super::settings::{VrrpSettings, validate};
use crate::system::install;

/// Bounded well above any valid request.
const REQUEST_LIMIT: u64 = 256 * 1024;
/// More VIPs than one VRRP advert carries are refused (VRRPv3: 255).
pub(crate) const MAX_VIPS: usize = 255;
/// Beside the layout's `request`: what the root step did.
pub(crate) const RESULT_FILE: &str = "vrrp-result.json";
const RESULT_WAIT: Duration = Duration::from_secs(30);

/// Where keepalived's files go and what they name (`[vrrp]` in the system
/// layout). Without it poolgate renders and shows the text but hands it to
/// nobody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VrrpLayout {
    /// keepalived.conf (the unit's drop-in points keepalived at it).
    pub keepalived_conf: PathBuf,
    /// The nftables rule admitting VRRP from the peer only.
    pub nft_file: PathBuf,
    /// Ask a root-owned step through this file; `None`: write in process.
    pub request: Option<PathBuf>,
    /// poolgate's health file and notify FIFO (in its data directory).
    pub health_file: PathBuf,
    pub notify_fifo: PathBuf,
    /// The binary whose `vrrp-check` keepalived runs, and as whom.
    pub poolgate: PathBuf,
    pub script_user: String,
    /// Load the rule and reload keepalived after writing (off in tests).
    pub reload: bool,
}

impl Default for VrrpLayout {
    fn default() -> Self {
        Self {
            keepalived_conf: PathBuf::from("/var/lib/appliance/keepalived/keepalived.conf"),
            nft_file: PathBuf::from("/var/lib/appliance/keepalived/vrrp.nft"),
            request: None,
            health_file: PathBuf::from("/var/lib/poolgate/vrrp-health"),
            notify_fifo: PathBuf::from("/var/lib/poolgate/vrrp-notify.fifo"),
            poolgate: PathBuf::from("/usr/bin/poolgate"),
            script_user: "poolgate".to_owned(),
            reload: true,
        }
    }
}

impl VrrpLayout {
    pub(crate) fn paths(&self) -> Paths {
        Paths {
            health_file: self.health_file.clone(),
            notify_fifo: self.notify_fifo.clone(),
            poolgate: self.poolgate.clone(),
            script_user: self.script_user.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the VRRP request does not validate: {0}")]
    Invalid(String),
    #[error("cannot {what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Request(#[from] install::InstallError),
    #[error("the VRRP step did not apply the configuration: {0}")]
    Refused(String),
}

/// One address keepalived holds, and the interface it goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Vip {
    pub address: IpAddr,
    pub interface: String,
}

/// What the unprivileged side asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyRequest {
    pub id: u64,
    /// `None`: VRRP is off; keepalived is stopped.
    pub settings: Option<VrrpSettings>,
    pub vips: Vec<Vip>,
}

/// What the root step did with a request.
pub type ApplyResult = install::StepResult;

/// Apply `request` through the root step when the layout names one, else
/// in process. Returns what the reload said.
pub(crate) fn apply(layout: &VrrpLayout, request: &ApplyRequest) -> Result<String, ApplyError> {
    let Some(path) = &layout.request else {
        return write_and_reload(layout, request);
    };
    let body = serde_json::to_vec(request).expect("a request serialises");
    install::ask_step(path, &body, request.id, RESULT_FILE, RESULT_WAIT)?
        .map_err(ApplyError::Refused)
}

/// The root step (`poolgate system apply-vrrp`): take the request, apply
/// it, answer. `Ok(None)`: there was none.
pub fn serve_request(layout: &VrrpLayout) -> Result<Option<ApplyResult>, ApplyError> {
    let path = layout
        .request
        .as_deref()
        .ok_or_else(|| ApplyError::Refused("the system layout names no VRRP request".into()))?;
    Ok(install::serve_step(
        path,
        REQUEST_LIMIT,
        RESULT_FILE,
        "VRRP",
        |request: &ApplyRequest| request.id,
        |request| write_and_reload(layout, request).map_err(|error| error.to_string()),
    )?)
}

/// The text of keepalived.conf for `request` with `layout`'s paths, after
/// checking everything in it.
pub(crate) fn render_request(
    layout: &VrrpLayout,
    request: &ApplyRequest,
) -> Result<Option<String>, ApplyError> {
    let Some(settings) = &request.settings else {
        return Ok(None);
    };
    let joined = |problems: Vec<crate::web::FieldProblem>| {
        problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let problems = validate(settings);
    if !problems.is_empty() {
        return Err(ApplyError::Invalid(joined(problems)));
    }
    if request.vips.len() > MAX_VIPS {
        return Err(ApplyError::Invalid(format!(
            "{} addresses; VRRP carries at most {MAX_VIPS}",
            request.vips.len()
        )));
    }
    let mut vips = Vips::new();
    for vip in &request.vips {
        let interface_ok = !vip.interface.is_empty()
            && vip.interface.len() <= 15
            && vip
                .interface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !crate::net::addresses::desired::is_candidate(vip.address) || !interface_ok {
            return Err(ApplyError::Invalid(format!(
                "{} on {:?} is not an address keepalived may hold",
                vip.address, vip.interface
            )));
        }
        vips.insert(
            vip.address,
            (vip.interface.clone(), "a virtual service".to_owned()),
        );
    }
    let paths = layout.paths();
    paths.check().map_err(ApplyError::Invalid)?;
    render::render(settings, &vips, &paths)
        .map(Some)
        .map_err(|problems| ApplyError::Invalid(joined(problems)))
}

fn write_and_reload(layout: &VrrpLayout, request: &ApplyRequest) -> Result<String, ApplyError> {
    let conf = render_request(layout, request)?;
    let nft = match &request.settings {
        Some(settings) => render::render_nft(settings),
        None => render::NFT_OFF.to_owned(),
    };
    write_whole(&layout.nft_file, &nft)?;
    match &conf {
        Some(text) => write_whole(&layout.keepalived_conf, text)?,
        None => match fs::remove_file(&layout.keepalived_conf) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(file_error("remove", &layout.keepalived_conf)(error));
            }
            _ => {}
        },
    }
    if !layout.reload {
        return Ok(String::new());
    }
    let nft_file = layout.nft_file.to_string_lossy().into_owned();
    let keepalived = match conf {
        Some(_) => ["systemctl", "reload-or-restart", "keepalived.service"],
        None => ["systemctl", "stop", "keepalived.service"],
    };
    let said: Vec<String> = [
        crate::system::network::run_bounded(&["nft", "-f", &nft_file]),
        crate::system::network::run_bounded(&keepalived),
    ]
    .into_iter()
    .flatten()
    .collect();
    if said.is_empty() {
        Ok(String::new())
    } else {
        Err(ApplyError::Refused(said.join("; ")))
    }
}

fn file_error(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ApplyError + use<> {
    let path = path.to_owned();
    move |source| ApplyError::File { what, path, source }
}

/// Write whole (a rename), readable by root only: keepalived and nft run
/// as root.
fn write_whole(path: &Path, text: &str) -> Result<(), ApplyError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(file_error("create", parent))?;
    }
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    fs::write(&part, text).map_err(file_error("write", &part))?;
    fs::set_permissions(&part, fs::Permissions::from_mode(0o600))
        .map_err(file_error("set the mode of", &part))?;
    fs::rename(&part, path).map_err(file_error("replace", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(dir: &Path) -> VrrpLayout {
        VrrpLayout {
            keepalived_conf: dir.join("keepalived/keepalived.conf"),
            nft_file: dir.join("keepalived/vrrp.nft"),
            request: Some(dir.join("req/vrrp-request")),
            reload: false,
            ..VrrpLayout::default()
        }
    }

    fn settings() -> VrrpSettings {
        serde_json::from_value(serde_json::json!({
            "interface": "eth0", "source_v4": "198.51.100.11", "peer_v4": "198.51.100.12",
            "virtual_router_id": 51, "priority": 100,
        }))
        .expect("settings")
    }

    fn ask(layout: &VrrpLayout, request: &ApplyRequest) -> Option<ApplyResult> {
        let path = layout.request.as_ref().expect("request path");
        fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        fs::write(path, serde_json::to_vec(request).expect("json")).expect("write");
        serve_request(layout).expect("served")
    }

    #[test]
    fn the_root_step_writes_with_its_own_paths_and_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = layout(dir.path());
        let request = ApplyRequest {
            id: 7,
            settings: Some(settings()),
            vips: vec![Vip {
                address: "198.51.100.20".parse().expect("ip"),
                interface: "eth0".to_owned(),
            }],
        };
        let result = ask(&layout, &request).expect("a request");
        assert_eq!((result.id, result.applied), (7, true), "{}", result.message);
        let conf = fs::read_to_string(&layout.keepalived_conf).expect("conf");
        assert!(
            conf.contains("script \"/usr/bin/poolgate vrrp-check /var/lib/poolgate/vrrp-health\"")
        );
        assert!(conf.contains("    script_user poolgate\n"));
        assert!(conf.contains("        198.51.100.20/32 dev eth0\n"));
        let nft = fs::read_to_string(&layout.nft_file).expect("nft");
        assert!(nft.contains("ip saddr 198.51.100.12 accept"), "{nft}");
        assert!(!layout.request.as_ref().expect("path").exists(), "taken");

        // Off: keepalived's file goes, the rule is dropped.
        let off = ApplyRequest {
            id: 8,
            settings: None,
            vips: Vec::new(),
        };
        assert!(ask(&layout, &off).expect("a request").applied);
        assert!(!layout.keepalived_conf.exists());
        assert_eq!(
            fs::read_to_string(&layout.nft_file).expect("nft"),
            render::NFT_OFF
        );
    }

    #[test]
    fn the_root_step_refuses_what_does_not_validate_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = layout(dir.path());
        let mut bad = settings();
        bad.priority = 0;
        let result = ask(
            &layout,
            &ApplyRequest {
                id: 1,
                settings: Some(bad),
                vips: Vec::new(),
            },
        )
        .expect("a request");
        assert!(!result.applied);
        assert!(result.message.contains("priority"), "{}", result.message);
        for vip in [
            ("127.0.0.1", "eth0"),
            ("198.51.100.20", "eth0 up; x"),
            ("2001:db8::1", "eth0"),
        ] {
            let result = ask(
                &layout,
                &ApplyRequest {
                    id: 2,
                    settings: Some(settings()),
                    vips: vec![Vip {
                        address: vip.0.parse().expect("ip"),
                        interface: vip.1.to_owned(),
                    }],
                },
            )
            .expect("a request");
            assert!(!result.applied, "{vip:?}");
        }
        assert!(!layout.keepalived_conf.exists());
        assert!(!layout.nft_file.exists());

        // Not a request at all: answered unread, an error.
        let path = layout.request.clone().expect("path");
        fs::write(
            &path,
            b"{\"id\": 3, \"settings\": null, \"vips\": [], \"script\": \"/bin/sh\"}",
        )
        .expect("write");
        assert!(serve_request(&layout).is_err());
        assert!(
            fs::read_to_string(path.with_file_name(RESULT_FILE))
                .expect("result")
                .contains("unread")
        );
    }

    #[test]
    fn the_image_layout_names_the_vrrp_step_and_the_drop_in_s_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/rootfs");
        let layout =
            crate::system::layout::Layout::load(&root.join("usr/lib/poolgate/system-layout.toml"))
                .expect("the image's layout loads");
        let vrrp = layout.vrrp.expect("a [vrrp] table");
        assert_eq!(
            vrrp.request.as_deref(),
            Some(Path::new("/var/lib/poolgate/vrrp/vrrp-request"))
        );
        assert!(vrrp.paths().check().is_ok());
        let drop_in = fs::read_to_string(
            root.join("usr/lib/systemd/system/keepalived.service.d/poolgate.conf"),
        )
        .expect("keepalived drop-in");
        for path in [&vrrp.keepalived_conf, &vrrp.nft_file] {
            assert!(
                drop_in.contains(path.to_str().expect("utf-8")),
                "{}",
                path.display()
            );
        }
        let path_unit = fs::read_to_string(root.join("usr/lib/systemd/system/poolgate-vrrp.path"))
            .expect("path unit");
        assert!(path_unit.contains("PathExists=/var/lib/poolgate/vrrp/vrrp-request"));
    }
}
