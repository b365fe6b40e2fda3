//! The `poolgate` command: parses arguments and hands over to the library.
//! Exit codes: 0 success, 64 invalid config (or usage), 65 upgrade bundle
//! refused, 1 any other failure.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use poolgate::app::{self, RunError, RunOptions};
use poolgate::config;
use poolgate::store::{self, Store};
use poolgate::system::layout::Layout;
use poolgate::system::reboot::RebootMode;
use poolgate::system::upgrade::{Plan, UpgradeError, Upgrader, Verdict};
use tokio_util::sync::CancellationToken;

const EXIT_CONFIG: u8 = 64;
const EXIT_REFUSED: u8 = 65;

#[derive(Debug, Parser)]
#[command(
    name = "poolgate",
    about = "Load-balancing appliance for SIP server pools",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the appliance.
    Run {
        /// Where the database and certificates live.
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
        /// Validate this file and make it the desired config before anything listens.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Admin listener of a fresh appliance that has no config yet.
        #[arg(long, default_value = "0.0.0.0:443")]
        admin_listen: SocketAddr,
        /// Seconds to let in-flight work finish after SIGTERM.
        #[arg(long, default_value_t = 10)]
        grace_period_s: u64,
        /// First-boot setup must present a one-time code printed on the console.
        #[arg(long)]
        require_setup_code: bool,
        /// Root slots and ESP for upgrades (TOML: root_a, root_b, esp,
        /// cmdline); the appliance image's layout if omitted.
        #[arg(long)]
        system_layout: Option<PathBuf>,
        /// Never reboot into an installed upgrade (development and tests).
        #[arg(long)]
        no_reboot: bool,
        /// Seconds a move of the admin listener or a network change has to
        /// be confirmed (tests only; operators keep the default).
        #[arg(long, default_value_t = 120, hide = true)]
        confirm_timeout_s: u64,
        /// Add the virtual service and listen addresses the host lacks to
        /// its interfaces, and remove them when unused (the appliance image
        /// does; needs CAP_NET_ADMIN and CAP_NET_RAW). Without it, every
        /// address must already be on the host.
        #[arg(long)]
        manage_addresses: bool,
        /// The HA sync listener (IP:port) the peer connects to for pairing
        /// and config sync; an appliance setting, never replicated. Without
        /// it the appliance cannot be paired.
        #[arg(long)]
        ha_listen: Option<SocketAddr>,
        /// snmpd's AgentX socket (its `agentXSocket`): poolgate connects
        /// as a subagent serving POOLGATE-MIB and sends its notifications
        /// through snmpd. Without it there is no SNMP.
        #[arg(long)]
        agentx_socket: Option<PathBuf>,
    },
    /// Check an upgrade bundle and install it into the inactive root slot,
    /// then reboot into it.
    Upgrade {
        /// The `.pgup` bundle.
        file: PathBuf,
        /// Run every check and write nothing.
        #[arg(long)]
        verify_only: bool,
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
        /// Root slots and ESP (as for `run`).
        #[arg(long)]
        system_layout: Option<PathBuf>,
        /// Install, but leave the reboot to the admin.
        #[arg(long)]
        no_reboot: bool,
    },
    /// Steps the image runs as root.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
    /// Validate a config file; exit 0 if valid, 64 with FILE:LINE:COL messages if not.
    CheckConfig { file: PathBuf },
    /// keepalived's health check: exit 0 if poolgate rewrote its VRRP
    /// health file within the last 1.5 s, 1 (with the reason) if not.
    VrrpCheck { health_file: PathBuf },
    /// Print the stored desired config as TOML that `run --config` accepts.
    Export {
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
    },
    /// Administration from the console.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Run simulated pool members (on their loopback addresses) for a demo or tests.
    DemoMembers {
        #[arg(long)]
        config: PathBuf,
    },
    /// Licence status and offline activation.
    License {
        #[command(subcommand)]
        command: LicenseCommand,
    },
    /// Print the logical registrar sequence of a SIP URI, one member per line.
    Registrar {
        #[arg(long)]
        config: PathBuf,
        /// The user's SIP URI or address-of-record (sip:alice@contoso.com).
        uri: String,
        /// The pool to rank in (default: the pool whose FQDN or alias is the
        /// URI's host, else the first pool, as the redirect service chooses).
        #[arg(long)]
        pool: Option<String>,
    },
    /// DNS helpers.
    Dns {
        #[command(subcommand)]
        command: DnsCommand,
    },
    /// Print version and build information.
    Version,
}

#[derive(Debug, Subcommand)]
enum DnsCommand {
    /// Print, per zone, the NS and glue A/AAAA records to create in the parent
    /// (e.g. Active Directory) zone to delegate the zone to poolgate.
    Delegation {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum LicenseCommand {
    /// Verify a licence file and install it.
    Install {
        file: PathBuf,
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
    },
    /// Print the licence status as JSON.
    Status {
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Install the bundle poolgate staged beside the layout's install_request
    /// file, after checking it again (run as root by poolgate-install.service).
    /// Exit 0 when a result was written (or nothing was requested).
    InstallStaged {
        /// Root slots, ESP and the request file (as for `run`).
        #[arg(long)]
        system_layout: Option<PathBuf>,
        /// A directory only root can write, for the checked copy.
        #[arg(long)]
        work_dir: PathBuf,
    },
    /// Apply the network settings poolgate asked for through the layout's
    /// `[network] request` file, after validating them again (run as root by
    /// poolgate-network.service). Exit 0 when a result was written (or
    /// nothing was requested).
    ApplyNetwork {
        #[arg(long)]
        system_layout: Option<PathBuf>,
    },
    /// Take poolgate's VRRP request, validate it again, write
    /// keepalived.conf and the nftables rule, load the rule and reload
    /// keepalived (the image's poolgate-vrrp.path runs it as root).
    ApplyVrrp {
        #[arg(long)]
        system_layout: Option<PathBuf>,
    },
    /// Take poolgate's SNMP request, validate it again, write snmpd.conf
    /// and reload snmpd (the image's poolgate-snmp.path runs it as root).
    ApplySnmp {
        #[arg(long)]
        system_layout: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Set an admin password, read from standard input.
    SetPassword {
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
        #[arg(long, default_value = "admin")]
        username: String,
        /// Keep the user's API tokens working (by default a new password
        /// revokes them, and always ends every session).
        #[arg(long)]
        keep_tokens: bool,
    },
    /// Write an encrypted full backup of a stopped appliance to FILE; the
    /// passphrase (at least 10 characters) is read from standard input.
    Backup {
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
        /// Where the archive goes (created owner-only; never overwritten).
        file: PathBuf,
        /// Include the network and VRRP settings.
        #[arg(long)]
        network: bool,
    },
    /// Restore a backup into a stopped appliance's data directory (the
    /// passphrase from standard input); prints what changes. Start
    /// poolgate afterwards.
    Restore {
        #[arg(long, default_value = "./var")]
        data_dir: PathBuf,
        /// The `.pgbackup` archive.
        file: PathBuf,
        /// Only print what would change; write nothing.
        #[arg(long)]
        preview: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    poolgate::system::restrict_umask();
    let result = match cli.command {
        Command::Run {
            data_dir,
            config,
            admin_listen,
            grace_period_s,
            require_setup_code,
            system_layout,
            no_reboot,
            confirm_timeout_s,
            manage_addresses,
            ha_listen,
            agentx_socket,
        } => match layout(system_layout.as_deref()) {
            Ok(system_layout) => run(RunOptions {
                data_dir,
                config,
                admin_listen,
                grace: Duration::from_secs(grace_period_s),
                require_setup_code,
                system_layout,
                reboot: reboot_mode(no_reboot),
                confirm_timeout: Duration::from_secs(confirm_timeout_s),
                manage_addresses,
                ha_listen,
                snmp: agentx_socket
                    .map(|agentx_socket| poolgate::snmp::SnmpOptions { agentx_socket }),
            }),
            Err(error) => Err(error),
        },
        Command::Upgrade {
            file,
            verify_only,
            data_dir,
            system_layout,
            no_reboot,
        } => upgrade(
            &file,
            verify_only,
            &data_dir,
            system_layout.as_deref(),
            reboot_mode(no_reboot),
        ),
        Command::System {
            command:
                SystemCommand::InstallStaged {
                    system_layout,
                    work_dir,
                },
        } => install_staged(system_layout.as_deref(), &work_dir),
        Command::System {
            command: SystemCommand::ApplyNetwork { system_layout },
        } => apply_network(system_layout.as_deref()),
        Command::System {
            command: SystemCommand::ApplyVrrp { system_layout },
        } => apply_vrrp(system_layout.as_deref()),
        Command::System {
            command: SystemCommand::ApplySnmp { system_layout },
        } => apply_snmp(system_layout.as_deref()),
        Command::CheckConfig { file } => return check_config(&file),
        Command::VrrpCheck { health_file } => {
            return match poolgate::vrrp::check(&health_file) {
                poolgate::vrrp::Verdict::Serving => ExitCode::SUCCESS,
                poolgate::vrrp::Verdict::NotServing(reason) => {
                    eprintln!("poolgate is not serving: {reason}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Export { data_dir } => export(&data_dir),
        Command::Admin {
            command:
                AdminCommand::SetPassword {
                    data_dir,
                    username,
                    keep_tokens,
                },
        } => set_password(&data_dir, &username, keep_tokens),
        Command::Admin {
            command:
                AdminCommand::Backup {
                    data_dir,
                    file,
                    network,
                },
        } => backup(&data_dir, &file, network),
        Command::Admin {
            command:
                AdminCommand::Restore {
                    data_dir,
                    file,
                    preview,
                },
        } => restore(&data_dir, &file, preview),
        Command::License { command } => license(command),
        Command::DemoMembers { config } => demo_members(&config),
        Command::Registrar { config, uri, pool } => {
            return registrar(&config, &uri, pool.as_deref());
        }
        Command::Dns {
            command: DnsCommand::Delegation { config },
        } => return delegation(&config),
        Command::Version => {
            println!("{}", poolgate::build_info());
            Ok(ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("poolgate: {error:#}");
        ExitCode::FAILURE
    })
}

fn run(options: RunOptions) -> anyhow::Result<ExitCode> {
    poolgate::system::init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        poolgate::system::cancel_on_signal(shutdown.clone())
            .context("cannot install signal handlers")?;
        match app::run(options, shutdown).await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(RunError::Config(error)) => {
                eprintln!("{error}");
                Ok(ExitCode::from(EXIT_CONFIG))
            }
            Err(error) => {
                tracing::error!(%error, "poolgate stopped");
                Err(error.into())
            }
        }
    })
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match config::load(file) {
        Ok(config) => {
            let members: usize = config.pools.iter().map(|pool| pool.members.len()).sum();
            println!(
                "{}: ok ({} pools, {members} members, {} virtual services, {} zones)",
                file.display(),
                config.pools.len(),
                config.virtual_services.len(),
                config.zones.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// `poolgate dns delegation`: the parent zone's records, from the file.
fn delegation(file: &std::path::Path) -> ExitCode {
    match config::load(file) {
        Ok(config) => {
            print!("{}", poolgate::dns::delegation::records(&config));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The lookup `GET /api/v1/registrar` makes, on a view built from the file
/// (every member up, as configured).
fn registrar(file: &std::path::Path, uri: &str, pool: Option<&str>) -> ExitCode {
    let mut config = match config::load(file) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // `--pool`: rank in that pool alone, which the lookup then falls back to.
    if let Some(name) = pool {
        config.pools.retain(|p| p.name == name);
    }
    let inputs = poolgate::state::Inputs::new(Arc::new(config), 0, BTreeMap::new());
    let view = poolgate::state::PoolView::build(&inputs, 0);
    match poolgate::sip::registrar::lookup(&view, uri) {
        Ok(Some(lookup)) => {
            for name in &lookup.logical {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("poolgate: {}: no such pool", pool.unwrap_or("(any)"));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(error) => {
            eprintln!("poolgate: {uri}: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn existing_store(data_dir: &std::path::Path) -> anyhow::Result<Store> {
    if !data_dir.join(store::DB_FILE).exists() {
        bail!("no poolgate data in {}", data_dir.display());
    }
    Ok(Store::open(data_dir)?)
}

fn export(data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let store = existing_store(data_dir)?;
    match store.export_toml()? {
        Some(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        None => bail!("no config stored in {} yet", data_dir.display()),
    }
}

/// Works on the data directory of a running poolgate too: sessions and
/// tokens are checked against the database on every request, so the ones
/// this ends stop working at once.
fn set_password(
    data_dir: &std::path::Path,
    username: &str,
    keep_tokens: bool,
) -> anyhow::Result<ExitCode> {
    if !store::valid_username(username) {
        bail!("the user name must be 1-64 letters, digits, '.', '_' or '-'; nothing changed");
    }
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("New password for {username}: "))?;
        let second = rpassword::prompt_password("Repeat it: ")?;
        if first != second {
            bail!("the two passwords differ; nothing changed");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    let store = Store::open(data_dir)?;
    let keep = store::Keep {
        session: None,
        tokens: keep_tokens,
    };
    let changed = store.change_password(username, &password, &keep)?;
    store.record_console_change(
        poolgate::audit::AuditKind::User,
        "admin set-password",
        username,
        serde_json::json!({
            "sessions_ended": changed.sessions_ended,
            "tokens_revoked": changed.tokens_revoked,
        }),
    )?;
    eprintln!(
        "Password set for {username}; {} session(s) ended, {} API token(s) revoked.",
        changed.sessions_ended, changed.tokens_revoked
    );
    Ok(ExitCode::SUCCESS)
}

/// A passphrase from the terminal (asked twice when `confirm`) or the
/// first line of standard input.
fn read_passphrase(confirm: bool) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Backup passphrase: ")?;
        if confirm && rpassword::prompt_password("Repeat it: ")? != first {
            bail!("the two passphrases differ; nothing written");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn backup(
    data_dir: &std::path::Path,
    file: &std::path::Path,
    network: bool,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    existing_store(data_dir)?;
    let passphrase = read_passphrase(true)?;
    let archive = poolgate::backup::backup_data_dir(data_dir, &passphrase, network)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    out.write_all(&archive)?;
    out.sync_all()?;
    eprintln!(
        "Backup written to {} ({} bytes).",
        file.display(),
        archive.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn restore(
    data_dir: &std::path::Path,
    file: &std::path::Path,
    preview: bool,
) -> anyhow::Result<ExitCode> {
    existing_store(data_dir)?;
    let archive = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let passphrase = read_passphrase(false)?;
    match poolgate::backup::restore_data_dir(data_dir, &archive, &passphrase, !preview) {
        Ok(outcome) => {
            println!("{}", serde_json::to_string_pretty(&outcome.preview)?);
            if outcome.applied {
                eprintln!(
                    "Restored into {}; every session ended. Start poolgate to serve the restored config.",
                    data_dir.display()
                );
            } else {
                eprintln!("Preview only: nothing written.");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("poolgate: {error}; nothing changed");
            Ok(ExitCode::from(65))
        }
    }
}

fn licensing(data_dir: &std::path::Path) -> anyhow::Result<poolgate::license::Licensing> {
    let store = existing_store(data_dir)?;
    let appliance_id = store.setting("appliance_id")?.with_context(|| {
        format!(
            "{} has no appliance id yet: start poolgate once first",
            data_dir.display()
        )
    })?;
    Ok(poolgate::license::Licensing::new(
        store,
        poolgate::license::vendor_keys(),
        appliance_id,
    )?)
}

fn license(command: LicenseCommand) -> anyhow::Result<ExitCode> {
    match command {
        LicenseCommand::Install { file, data_dir } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let licensing = licensing(&data_dir)?;
            match licensing.install(&text)? {
                Ok(licence) => {
                    existing_store(&data_dir)?.record_console_change(
                        poolgate::audit::AuditKind::License,
                        "license install",
                        &licence.id,
                        serde_json::json!({"customer": licence.customer}),
                    )?;
                    println!("Installed licence {} for {}.", licence.id, licence.customer);
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => bail!("licence not installed: {error}"),
            }
        }
        LicenseCommand::Status { data_dir } => {
            let status = licensing(&data_dir)?.status()?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn demo_members(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    poolgate::system::init_logging();
    let config = match config::load(file) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        poolgate::system::cancel_on_signal(shutdown.clone())?;
        poolgate::demo::run(&config, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn layout(path: Option<&std::path::Path>) -> anyhow::Result<Layout> {
    match path {
        Some(path) => Layout::load(path).map_err(anyhow::Error::msg),
        None => Ok(Layout::default()),
    }
}

fn reboot_mode(no_reboot: bool) -> RebootMode {
    if no_reboot {
        RebootMode::Disabled
    } else {
        RebootMode::Systemd
    }
}

fn upgrade(
    file: &std::path::Path,
    verify_only: bool,
    data_dir: &std::path::Path,
    system_layout: Option<&std::path::Path>,
    reboot: RebootMode,
) -> anyhow::Result<ExitCode> {
    let upgrader = Upgrader::new(layout(system_layout)?, data_dir.to_owned());
    // Only the checks' verdict is a verdict on the bundle; whatever fails
    // after them is a failure of this appliance (exit 1).
    let refused = |error: &UpgradeError| match error.verdict() {
        Verdict::Refused | Verdict::DoesNotApply => {
            eprintln!("poolgate: {}: refused: {error}", file.display());
            ExitCode::from(EXIT_REFUSED)
        }
        Verdict::Interrupted | Verdict::Failed => {
            eprintln!("poolgate: {error}");
            ExitCode::FAILURE
        }
    };
    if verify_only {
        return Ok(match upgrader.verify_file(file) {
            Ok(plan) => {
                describe_plan(file, &plan);
                println!("Every check passed; nothing was written.");
                ExitCode::SUCCESS
            }
            Err(error) => refused(&error),
        });
    }
    let lock = upgrader.lock()?;
    let store = Store::open(data_dir)?;
    let plan = match upgrader.check_file(&lock, file, &store, "console") {
        Ok(plan) => plan,
        Err(error) => return Ok(refused(&error)),
    };
    describe_plan(file, &plan);
    let pending = upgrader.install_file(file, &plan, &store, "console")?;
    store.record_console_change(
        poolgate::audit::AuditKind::Upgrade,
        "upgrade",
        &pending.to_version,
        serde_json::json!({"file": file.display().to_string(), "slot": pending.to_slot.partlabel()}),
    )?;
    println!(
        "Installed {} in slot {}; the database is backed up.",
        pending.to_version,
        pending.to_slot.partlabel()
    );
    upgrader.reboot(reboot, &store, &pending)?;
    match reboot {
        RebootMode::Systemd => println!("Rebooting into {}.", pending.to_version),
        RebootMode::Disabled => println!("Reboot to start {}.", pending.to_version),
    }
    Ok(ExitCode::SUCCESS)
}

fn install_staged(
    system_layout: Option<&std::path::Path>,
    work_dir: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    poolgate::system::init_logging();
    let mut layout = layout(system_layout)?;
    // This is the step that writes: it must not ask itself.
    let request = layout
        .install_request
        .take()
        .context("the system layout names no install_request file")?;
    let data_dir = request
        .parent()
        .context("the install_request file has no directory")?
        .to_owned();
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    let upgrader = Upgrader::new(layout, data_dir);
    match upgrader.install_staged(&request, work_dir)? {
        Some(result) => println!("{}", serde_json::to_string(&result)?),
        None => println!("Nothing to install."),
    }
    Ok(ExitCode::SUCCESS)
}

fn apply_network(system_layout: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    poolgate::system::init_logging();
    let layout = layout(system_layout)?;
    let network = layout
        .network
        .context("the system layout has no [network] table")?;
    match poolgate::system::network::serve_request(&network)? {
        Some(result) => println!("{}", serde_json::to_string(&result)?),
        None => println!("Nothing to apply."),
    }
    Ok(ExitCode::SUCCESS)
}

fn apply_vrrp(system_layout: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    poolgate::system::init_logging();
    let layout = layout(system_layout)?;
    let vrrp = layout
        .vrrp
        .context("the system layout has no [vrrp] table")?;
    match poolgate::vrrp::serve_request(&vrrp)? {
        Some(result) => println!("{}", serde_json::to_string(&result)?),
        None => println!("Nothing to apply."),
    }
    Ok(ExitCode::SUCCESS)
}

fn apply_snmp(system_layout: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    poolgate::system::init_logging();
    let layout = layout(system_layout)?;
    let snmp = layout
        .snmp
        .context("the system layout has no [snmp] table")?;
    match poolgate::snmp::serve_request(&snmp)? {
        Some(result) => println!("{}", serde_json::to_string(&result)?),
        None => println!("Nothing to apply."),
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_plan(file: &std::path::Path, plan: &Plan) {
    let manifest = &plan.manifest;
    println!(
        "{}: {} {} (upgrades from {} or later), signed by a trusted key",
        file.display(),
        manifest.product,
        manifest.version,
        manifest.min_from_version
    );
    for component in &manifest.components {
        println!(
            "  {} {} bytes, sha256 {}",
            component.name, component.size, component.sha256
        );
    }
    println!(
        "Running {} from slot {}; installs into slot {}.",
        plan.from_version,
        plan.from_slot.partlabel(),
        plan.target_slot.partlabel()
    );
}
