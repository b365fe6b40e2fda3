//! Making the system match validated settings: write what `render` made
//! into the system tools' directories and have them reload, with fixed
//! argvs only. poolgate is unprivileged and cannot do this on the image: it
//! writes a typed request (`{"id", "settings"}`) at the layout's `request`
//! path and waits for the result; `poolgate-network.path` starts
//! `poolgate system apply-network` as root, which takes the request
//! (without following links, as the install step does), validates the
//! settings again itself, renders and writes them, and answers. Nothing of
//! the request reaches an argv: the commands it runs are `networkctl
//! reload`, `chronyc reload sources` and `hostname --file <layout path>`.
//! A layout without `request` applies in process (development, tests).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::model::NetworkSettings;
use super::render::{PREFIX, Rendered, render};
use super::validate::validate;
use crate::system::install;

/// A request is the settings as JSON: bounded well above any valid one.
const REQUEST_LIMIT: u64 = 256 * 1024;
/// Beside the layout's `request`: what the root step did.
pub(crate) const RESULT_FILE: &str = "network-result.json";
/// How long poolgate waits for the root step.
const RESULT_WAIT: Duration = Duration::from_secs(30);
/// How long one reload command may take before it is stopped.
const COMMAND_WAIT: Duration = Duration::from_secs(20);

/// Where network settings go (`[network]` in the system layout). Without
/// it poolgate shows the host's network but changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkLayout {
    /// systemd-networkd's directory (on the image, a link to the data
    /// partition).
    pub networkd_dir: PathBuf,
    /// The chrony sources file (`sourcedir` in chrony's config).
    pub chrony_sources: PathBuf,
    /// The host name file `hostname --file` reads.
    pub hostname_file: PathBuf,
    /// The link that names the time zone, and where zones are.
    pub localtime: PathBuf,
    pub zoneinfo: PathBuf,
    /// Ask a root-owned step through this file; `None`: apply in process.
    pub request: Option<PathBuf>,
    /// Run the reload commands after writing (off where there is no
    /// networkd or chronyd to tell, as in tests).
    pub reload: bool,
}

impl Default for NetworkLayout {
    fn default() -> Self {
        Self {
            networkd_dir: PathBuf::from("/etc/systemd/network"),
            chrony_sources: PathBuf::from("/etc/chrony/sources.d/poolgate.sources"),
            hostname_file: PathBuf::from("/etc/hostname"),
            localtime: PathBuf::from("/etc/localtime"),
            zoneinfo: PathBuf::from("/usr/share/zoneinfo"),
            request: None,
            reload: true,
        }
    }
}

impl NetworkLayout {
    pub(crate) fn zone_exists(&self, zone: &str) -> bool {
        self.zoneinfo.join(zone).is_file()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the network settings do not validate: {0}")]
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
    #[error("the network step did not apply the settings: {0}")]
    Refused(String),
}

fn file_error(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ApplyError + use<> {
    let path = path.to_owned();
    move |source| ApplyError::File { what, path, source }
}

/// What the unprivileged side asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyRequest {
    id: u64,
    settings: NetworkSettings,
}

/// What the root step did with a request.
pub type ApplyResult = install::StepResult;

/// Apply `settings` (already validated by the caller) as request `id`:
/// through the root step when the layout names one, else in process.
/// Returns what the reload commands said.
pub(crate) fn apply(
    layout: &NetworkLayout,
    id: u64,
    settings: &NetworkSettings,
) -> Result<String, ApplyError> {
    let Some(request) = &layout.request else {
        return write_and_reload(layout, settings);
    };
    let body = serde_json::to_vec(&ApplyRequest {
        id,
        settings: settings.clone(),
    })
    .expect("a request serialises");
    install::ask_step(request, &body, id, RESULT_FILE, RESULT_WAIT)?.map_err(ApplyError::Refused)
}

/// The root step (`poolgate system apply-network`): take the request the
/// layout names, apply it, answer. `Ok(None)`: there was none.
pub fn serve_request(layout: &NetworkLayout) -> Result<Option<ApplyResult>, ApplyError> {
    let request_path = layout
        .request
        .as_deref()
        .ok_or_else(|| ApplyError::Refused("the system layout names no network request".into()))?;
    Ok(install::serve_step(
        request_path,
        REQUEST_LIMIT,
        RESULT_FILE,
        "network",
        |request: &ApplyRequest| request.id,
        |request| write_and_reload(layout, &request.settings).map_err(|error| error.to_string()),
    )?)
}

/// Validate (again: the root step believes nothing it did not check),
/// render, write and reload.
fn write_and_reload(
    layout: &NetworkLayout,
    settings: &NetworkSettings,
) -> Result<String, ApplyError> {
    let plan = validate(settings, |zone| layout.zone_exists(zone)).map_err(|problems| {
        ApplyError::Invalid(
            problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let rendered = render(&plan);
    write(layout, &rendered)?;
    if !layout.reload {
        return Ok(String::new());
    }
    let mut said = Vec::new();
    said.push(run(&["networkctl", "reload"]));
    said.push(run(&["chronyc", "reload", "sources"]));
    if rendered.hostname.is_some() {
        let file = layout.hostname_file.to_string_lossy().into_owned();
        said.push(run(&["hostname", "--file", &file]));
    }
    Ok(said.into_iter().flatten().collect::<Vec<_>>().join("; "))
}

/// Write every file of `rendered`, each whole (a rename), and remove the
/// networkd files of earlier settings that these do not have.
fn write(layout: &NetworkLayout, rendered: &Rendered) -> Result<(), ApplyError> {
    let dir = &layout.networkd_dir;
    create_readable_dirs(dir)?;
    for entry in fs::read_dir(dir).map_err(file_error("list", dir))? {
        let entry = entry.map_err(file_error("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(PREFIX) && !rendered.networkd.iter().any(|(n, _)| *n == name) {
            fs::remove_file(entry.path()).map_err(file_error("remove", &entry.path()))?;
        }
    }
    for (name, text) in &rendered.networkd {
        write_whole(&dir.join(name), text)?;
    }
    write_whole(&layout.chrony_sources, &rendered.chrony_sources)?;
    if let Some(hostname) = &rendered.hostname {
        write_whole(&layout.hostname_file, &format!("{hostname}\n"))?;
    }
    let zone = rendered.timezone.as_deref().unwrap_or("Etc/UTC");
    let target = layout.zoneinfo.join(zone);
    let mut part = layout.localtime.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let _ = fs::remove_file(&part);
    std::os::unix::fs::symlink(&target, &part).map_err(file_error("link", &part))?;
    fs::rename(&part, &layout.localtime).map_err(file_error("replace", &layout.localtime))
}

/// Let every user read and enter `dir`, which holds a file networkd or
/// chronyd reads: an earlier version created its directories 0700.
fn readable_by_all(dir: &Path) -> Result<(), ApplyError> {
    let mode = fs::metadata(dir)
        .map_err(file_error("read the mode of", dir))?
        .permissions()
        .mode();
    if mode & 0o055 != 0o055 {
        fs::set_permissions(dir, fs::Permissions::from_mode((mode | 0o055) & 0o7777))
            .map_err(file_error("set the mode of", dir))?;
    }
    Ok(())
}

/// Create `dir` and its missing parents, each 0755 whatever the umask (the
/// root step runs with poolgate's 0077): networkd and chronyd read what is
/// in them as their own users.
fn create_readable_dirs(dir: &Path) -> Result<(), ApplyError> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    fs::create_dir_all(dir).map_err(file_error("create", dir))?;
    for created in missing {
        fs::set_permissions(created, fs::Permissions::from_mode(0o755))
            .map_err(file_error("set the mode of", created))?;
    }
    Ok(())
}

fn write_whole(path: &Path, text: &str) -> Result<(), ApplyError> {
    if let Some(parent) = path.parent() {
        create_readable_dirs(parent)?;
        readable_by_all(parent)?;
    }
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    fs::write(&part, text).map_err(file_error("write", &part))?;
    // networkd and chronyd read these as their own users.
    fs::set_permissions(&part, fs::Permissions::from_mode(0o644))
        .map_err(file_error("set the mode of", &part))?;
    fs::rename(&part, path).map_err(file_error("replace", path))
}

/// Run one fixed command, bounded in time; what went wrong, if anything.
pub(crate) fn run(argv: &[&str]) -> Option<String> {
    let mut child = match Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => return Some(format!("{}: {error}", argv.join(" "))),
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return None,
            Ok(Some(status)) => return Some(format!("{}: {status}", argv.join(" "))),
            Ok(None) if started.elapsed() < COMMAND_WAIT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Some(format!(
                    "{}: no answer within {} s",
                    argv.join(" "),
                    COMMAND_WAIT.as_secs()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_the_directories_made_for_them_are_readable_by_all() {
        let root = tempfile::tempdir().expect("temp dir");
        let file = root.path().join("chrony/sub/poolgate.sources");
        write_whole(&file, "server 198.51.100.1 iburst\n").expect("written");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o644);
        assert_eq!(mode(&root.path().join("chrony/sub")), 0o755);
        assert_eq!(mode(&root.path().join("chrony")), 0o755);
        // A directory an earlier version left owner-only is opened up.
        fs::set_permissions(
            root.path().join("chrony/sub"),
            fs::Permissions::from_mode(0o700),
        )
        .expect("chmod");
        write_whole(&file, "server 198.51.100.2 iburst\n").expect("written again");
        assert_eq!(mode(&root.path().join("chrony/sub")), 0o755);
    }
}
