//! Handing snmpd its configuration, the way `vrrp::apply` hands keepalived
//! its own: poolgate is unprivileged and writes a typed request
//! (`{"id", "settings"}`) at the layout's `request` path; the image's
//! `poolgate-snmp.path` starts `poolgate system apply-snmp` as root, which
//! takes the request (without following links), validates the settings
//! again itself, renders snmpd.conf with the AgentX socket and group of
//! *its* layout, writes it (0600, root) and runs `systemctl
//! reload-or-restart snmpd.service` (`stop` when SNMP is turned off). A
//! layout without `request` writes in process (development).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::settings::{RenderPaths, SnmpSettings, render, validate};
use crate::system::install;

const REQUEST_LIMIT: u64 = 256 * 1024;
pub(crate) const RESULT_FILE: &str = "snmp-result.json";
const RESULT_WAIT: Duration = Duration::from_secs(30);

/// Where snmpd's configuration goes (`[snmp]` in the system layout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnmpLayout {
    /// snmpd.conf (the unit's drop-in points snmpd at it).
    pub snmpd_conf: PathBuf,
    /// Where snmpd listens (its `agentAddress`; default UDP 161 on every
    /// address).
    pub agent_address: String,
    /// The AgentX socket snmpd opens and `poolgate run --agentx-socket`
    /// connects to.
    pub agentx_socket: PathBuf,
    /// The group that may connect to it.
    pub agentx_group: String,
    /// Ask a root-owned step through this file; `None`: write in process.
    pub request: Option<PathBuf>,
    /// Reload snmpd after writing (off in tests).
    pub reload: bool,
}

impl Default for SnmpLayout {
    fn default() -> Self {
        Self {
            snmpd_conf: PathBuf::from("/var/lib/appliance/snmp/snmpd.conf"),
            agent_address: "udp:161,udp6:161".to_owned(),
            agentx_socket: PathBuf::from("/run/snmpd-agentx/master"),
            agentx_group: "poolgate".to_owned(),
            request: None,
            reload: true,
        }
    }
}

impl SnmpLayout {
    pub(crate) fn paths(&self) -> RenderPaths {
        RenderPaths {
            agent_address: self.agent_address.clone(),
            agentx_socket: self.agentx_socket.clone(),
            agentx_group: self.agentx_group.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnmpApplyError {
    #[error("the SNMP request does not validate: {0}")]
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
    #[error("the SNMP step did not apply the configuration: {0}")]
    Refused(String),
}

/// What the unprivileged side asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyRequest {
    pub id: u64,
    /// `None`: SNMP is off; snmpd is stopped.
    pub settings: Option<SnmpSettings>,
}

/// Apply `request` through the root step when the layout names one, else
/// in process.
pub(crate) fn apply(layout: &SnmpLayout, request: &ApplyRequest) -> Result<String, SnmpApplyError> {
    let Some(path) = &layout.request else {
        return write_and_reload(layout, request);
    };
    let body = serde_json::to_vec(request).expect("a request serialises");
    install::ask_step(path, &body, request.id, RESULT_FILE, RESULT_WAIT)?
        .map_err(SnmpApplyError::Refused)
}

/// The root step (`poolgate system apply-snmp`): take the request, apply
/// it, answer. `Ok(None)`: there was none.
pub fn serve_request(layout: &SnmpLayout) -> Result<Option<install::StepResult>, SnmpApplyError> {
    let path = layout
        .request
        .as_deref()
        .ok_or_else(|| SnmpApplyError::Refused("the system layout names no SNMP request".into()))?;
    Ok(install::serve_step(
        path,
        REQUEST_LIMIT,
        RESULT_FILE,
        "SNMP",
        |request: &ApplyRequest| request.id,
        |request| write_and_reload(layout, request).map_err(|error| error.to_string()),
    )?)
}

fn write_and_reload(layout: &SnmpLayout, request: &ApplyRequest) -> Result<String, SnmpApplyError> {
    let text = match &request.settings {
        Some(settings) => {
            let problems = validate(settings);
            if !problems.is_empty() {
                let joined: Vec<String> = problems
                    .iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect();
                return Err(SnmpApplyError::Invalid(joined.join("; ")));
            }
            Some(render(settings, &layout.paths()))
        }
        None => None,
    };
    match &text {
        Some(text) => write_whole(&layout.snmpd_conf, text)?,
        None => match fs::remove_file(&layout.snmpd_conf) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(SnmpApplyError::File {
                    what: "remove",
                    path: layout.snmpd_conf.clone(),
                    source: error,
                });
            }
            _ => {}
        },
    }
    if !layout.reload {
        return Ok(String::new());
    }
    let command = match text {
        Some(_) => ["systemctl", "reload-or-restart", "snmpd.service"],
        None => ["systemctl", "stop", "snmpd.service"],
    };
    match crate::system::network::run_bounded(&command) {
        None => Ok(String::new()),
        Some(said) => Err(SnmpApplyError::Refused(said)),
    }
}

/// Write whole (a rename), readable by root only: it holds the v3
/// passphrases.
fn write_whole(path: &Path, text: &str) -> Result<(), SnmpApplyError> {
    use std::os::unix::fs::PermissionsExt;
    let error = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| SnmpApplyError::File { what, path, source }
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(error("create", parent))?;
    }
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    fs::write(&part, text).map_err(error("write", &part))?;
    fs::set_permissions(&part, fs::Permissions::from_mode(0o600))
        .map_err(error("set the mode of", &part))?;
    fs::rename(&part, path).map_err(error("replace", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_step_renders_with_its_own_socket_and_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = SnmpLayout {
            snmpd_conf: dir.path().join("snmp/snmpd.conf"),
            agentx_socket: "/run/x/master".into(),
            request: Some(dir.path().join("req/snmp-request")),
            reload: false,
            ..SnmpLayout::default()
        };
        let settings: SnmpSettings =
            serde_json::from_value(serde_json::json!({"community": "public"})).expect("parses");
        let request = ApplyRequest {
            id: 3,
            settings: Some(settings),
        };
        let path = layout.request.as_ref().expect("path");
        fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        fs::write(path, serde_json::to_vec(&request).expect("json")).expect("write");
        let result = serve_request(&layout).expect("served").expect("a result");
        assert!(result.applied && result.id == 3, "{result:?}");
        let text = fs::read_to_string(&layout.snmpd_conf).expect("written");
        assert!(text.contains("agentXSocket /run/x/master\n"), "{text}");

        // Invalid settings are refused by the step itself.
        let bad = ApplyRequest {
            id: 4,
            settings: Some(SnmpSettings::default()),
        };
        fs::write(path, serde_json::to_vec(&bad).expect("json")).expect("write");
        let result = serve_request(&layout).expect("served").expect("a result");
        assert!(
            !result.applied && result.message.contains("users"),
            "{result:?}"
        );

        // Off: the file goes.
        let off = ApplyRequest {
            id: 5,
            settings: None,
        };
        fs::write(path, serde_json::to_vec(&off).expect("json")).expect("write");
        assert!(
            serve_request(&layout)
                .expect("served")
                .expect("result")
                .applied
        );
        assert!(!layout.snmpd_conf.exists());
    }
}
