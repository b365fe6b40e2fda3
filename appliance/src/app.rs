//! Wires the subsystems into a running appliance: open the store, commit a
//! config given on the command line through the control path, start the
//! publisher and the control task, bind the listeners (`listeners` keeps
//! them in line with the config afterwards),
//! tell systemd, and on shutdown stop accepting, finish in-flight work under a
//! deadline, and report what was cut.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError, ConfigFile, ListenFile};
use crate::control::{self, Change, ConfigInput, ControlError, Controller};
use crate::license::{self, Licensing};
use crate::state;
use crate::store::StoreError;
use crate::{certs, dns, events, health, listeners, net, proxy, sip, syslog, system, vrrp, web};

/// Options of `poolgate run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub data_dir: PathBuf,
    /// Validated and committed as the desired config before anything listens.
    pub config: Option<PathBuf>,
    /// Where the admin listener goes while no config has been stored yet (a
    /// fresh appliance, set up through the web UI).
    pub admin_listen: SocketAddr,
    /// How long in-flight work may take to finish after a shutdown signal.
    pub grace: Duration,
    /// First-boot setup must present a one-time code shown on the console.
    pub require_setup_code: bool,
    /// Root slots and ESP, for upgrades (the image's by default).
    pub system_layout: system::layout::Layout,
    /// How to reboot into an installed upgrade.
    pub reboot: system::reboot::RebootMode,
    /// How long a move of the admin listener has to be confirmed from the
    /// new address before the previous config is put back (120 s; shorter
    /// only in tests).
    pub confirm_timeout: Duration,
    /// Own the addresses the config needs (`net::addresses`); off, they
    /// must be on the host already (development, tests on the host).
    pub manage_addresses: bool,
    /// The HA sync listener (`crate::ha`); without it no pairing.
    pub ha_listen: Option<SocketAddr>,
    /// The AgentX subagent (`crate::snmp`); without it no SNMP.
    pub snmp: Option<crate::snmp::SnmpOptions>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    #[error(transparent)]
    Bind(#[from] net::BindError),
    #[error(transparent)]
    Listener(#[from] listeners::ListenerError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Tls(#[from] certs::TlsError),
    /// The console's appliance id or setup code file cannot be written.
    #[error(transparent)]
    SetupCode(#[from] web::auth::setup_code::SetupCodeError),
    #[error(transparent)]
    Upgrade(#[from] system::upgrade::UpgradeError),
    #[error(transparent)]
    Network(#[from] system::network::NetworkError),
    #[error(transparent)]
    Vrrp(#[from] vrrp::VrrpError),
    #[error(transparent)]
    Syslog(#[from] syslog::SyslogError),
    #[error(transparent)]
    Snmp(#[from] crate::snmp::SnmpError),
}

/// The config a fresh appliance runs with: only the admin listener.
pub(crate) fn bootstrap_config(admin_listen: SocketAddr) -> Config {
    let file = ConfigFile {
        listen: ListenFile {
            admin: admin_listen.to_string(),
            dns: Vec::new(),
            sip_udp: None,
            sip_tcp: None,
            sip_tls: None,
        },
        dns: config::DnsFile::default(),
        sip: config::SipFile::default(),
        zones: Vec::new(),
        monitors: Vec::new(),
        pools: Vec::new(),
        virtual_services: Vec::new(),
    };
    config::validate(&file).expect("a config with only an admin address is valid")
}

/// Run until `shutdown` is cancelled.
pub async fn run(options: RunOptions, shutdown: CancellationToken) -> Result<(), RunError> {
    let started = Instant::now();
    // Validate before opening the store: an invalid file writes nothing.
    let file_config = options.config.as_deref().map(config::load).transpose()?;
    // Owner-only (0700) before anything is written into it, an existing
    // wider directory included.
    crate::store::prepare_data_dir(&options.data_dir)?;
    // Settles an upgrade that was waiting for this start (its success, or a
    // rollback and the database it needs) before anything reads the store.
    let (store, _) = system::upgrade::open_store(
        &options.data_dir,
        &options.system_layout,
        &system::upgrade::running_version(),
    )?;
    let appliance_id = store.setting_or_insert("appliance_id", new_appliance_id)?;
    let licensing = Licensing::new(store.clone(), license::vendor_keys(), appliance_id.clone())?;
    let mut controller = Controller::load(
        store.clone(),
        licensing.clone(),
        bootstrap_config(options.admin_listen),
    )?;
    // The VRRP settings are read now: a config change is checked against
    // them too (a VIP of a family VRRP cannot move is a field error).
    let vrrp_settings = vrrp::Vrrp::stored_settings(&store)?;
    let host_check = match options.manage_addresses {
        true => net::addresses::HostCheck::of_host(),
        false => net::addresses::HostCheck::none(),
    };
    controller.set_host_check(host_check.and(vrrp::config_check(vrrp_settings.subscribe())));
    if options.manage_addresses {
        // A listener for an address the same config brings binds before
        // the address is added (`net::bind`).
        net::allow_nonlocal(true);
    }
    // The HA role: a standby commits only its peer's changes. Read before
    // the file at start, which a standby does not commit.
    let (writer_tx, writer) = tokio::sync::watch::channel(control::Writer::Own);
    if crate::ha::stored_pair(&store)?.is_some_and(|pair| pair.role == crate::ha::Role::Standby) {
        writer_tx.send_replace(control::Writer::Standby { active: None });
    }
    controller.set_writer(writer);
    if let (Some(config), Some(path)) = (file_config, &options.config) {
        commit_file_config(&mut controller, config, path)?;
    }
    let (config, version) = {
        let desired = controller.desired();
        (Arc::clone(&desired.config), desired.version)
    };
    if version == 0 {
        tracing::info!(admin = %options.admin_listen, "No config stored yet; serving setup only");
    }
    tracing::info!(
        %appliance_id,
        data_dir = %options.data_dir.display(),
        config_version = version,
        pools = config.pools.len(),
        virtual_services = config.virtual_services.len(),
        "Starting poolgate {}",
        env!("POOLGATE_VERSION")
    );
    // The event log's writer stops last, on its own token, so it keeps the
    // events of everything else shutting down.
    let events_stop = CancellationToken::new();
    let (events, events_task) = events::spawn(store.clone(), events_stop.clone());
    let (publisher, publisher_task) = state::spawn(controller.inputs(), shutdown.child_token());
    let (control, control_task) = controller.spawn(
        publisher.clone(),
        events.clone(),
        shutdown.child_token(),
        options.confirm_timeout,
    );
    let health_task = health::spawn(events.clone(), publisher.clone(), shutdown.child_token());
    let network = system::network::Network::load(
        options.system_layout.network.clone(),
        store.clone(),
        events.clone(),
        options.confirm_timeout,
    )
    .await?;
    let network_task = tokio::spawn(Arc::clone(&network).run_deadlines(shutdown.child_token()));
    // With VRRP settings, keepalived holds the addresses (`vrrp`).
    let vrrp = vrrp::Vrrp::load(
        store.clone(),
        events.clone(),
        &options.data_dir,
        options.system_layout.vrrp.clone(),
        vrrp_settings,
    )?;
    // Addresses first, so the listeners below find theirs; given up last.
    let (addresses_stop, address_stats) = (CancellationToken::new(), Arc::default());
    let addresses_task = match options.manage_addresses {
        true => {
            let stats = Arc::clone(&address_stats);
            net::addresses::spawn(
                control.clone(),
                events.clone(),
                stats,
                vrrp.holder(),
                addresses_stop.clone(),
            )
            .await
        }
        false => tokio::spawn(async {}),
    };

    // The console shows the appliance id and the setup code from files in
    // the data directory, never from the log, which carries client input.
    web::auth::setup_code::write_private(
        &options
            .data_dir
            .join(web::auth::setup_code::APPLIANCE_ID_FILE),
        &format!("{appliance_id}\n"),
    )?;
    let setup_code = if options.require_setup_code && !store.has_admin()? {
        let code = web::auth::setup_code::SetupCode::create(&options.data_dir)?;
        tracing::info!(
            file = %options.data_dir.join(web::auth::setup_code::FILE).display(),
            "First-boot setup requires the one-time code shown on the console"
        );
        Some(code)
    } else {
        web::auth::setup_code::remove_stale_file(&options.data_dir);
        None
    };
    let identity = certs::Identity::for_config(&appliance_id, &config);
    let drain_task = tokio::spawn(crate::drain::run(
        publisher.clone(),
        store.clone(),
        events.clone(),
        shutdown.child_token(),
    ));
    let certificates = certs::Certificates::load_or_create(&options.data_dir, &identity)?;
    let renewal_task = tokio::spawn(certs::keep_renewed(
        Arc::clone(&certificates),
        appliance_id.clone(),
        publisher.subscribe(),
        shutdown.child_token(),
    ));
    let tls = certificates.server_config(&[b"h2", b"http/1.1"])?;
    // The accept layer's gates, one per listener label, for `/metrics`.
    let gates = Arc::new(net::Registry::default());
    let (seen_tx, seen_rx) = tokio::sync::mpsc::channel(10_000);
    let sip_stats = Arc::new(sip::SipStats {
        seen: Some(seen_tx),
        gates: Arc::clone(&gates),
        ..sip::SipStats::default()
    });
    let seen_task = tokio::spawn(crate::store::seen_writer::run(
        seen_rx,
        store.clone(),
        publisher.clone(),
        Arc::clone(&sip_stats),
        shutdown.child_token(),
    ));
    let licence = licensing.status()?;
    tracing::info!(state = ?licence.state, "{}", licence.message);
    let clock = tokio::spawn(keep_licence_clock(
        licensing.clone(),
        shutdown.child_token(),
    ));
    let dns_stats = Arc::new(dns::DnsStats {
        gates: Arc::clone(&gates),
        ..dns::DnsStats::default()
    });
    let (listeners_applied, applied) = tokio::sync::watch::channel(0);
    let mut app_state = web::AppState::new(
        control.clone(),
        publisher.clone(),
        store.clone(),
        licensing,
        setup_code,
        events.clone(),
    );
    app_state.dns_stats = Arc::clone(&dns_stats);
    app_state.sip_stats = Arc::clone(&sip_stats);
    app_state.certificates = Some(Arc::clone(&certificates));
    app_state.listeners = Arc::clone(&gates);
    app_state.network = Some(network);
    app_state.listeners_applied = applied;
    app_state.addresses = address_stats;
    app_state.vrrp = Some(Arc::clone(&vrrp));
    let syslog = syslog::Syslog::load(store.clone(), events.clone())?;
    let syslog_task = syslog.spawn(publisher.clone(), shutdown.child_token());
    app_state.syslog = Some(syslog);
    app_state.snmp = Some(crate::snmp::Snmp::load(
        store.clone(),
        events.clone(),
        options.system_layout.snmp.clone(),
    )?);
    let snmp_task = match options.snmp.clone() {
        Some(snmp) => tokio::spawn(crate::snmp::serve(
            snmp,
            publisher.clone(),
            store.clone(),
            app_state.licensing.clone(),
            shutdown.child_token(),
        )),
        None => tokio::spawn(async {}),
    };
    app_state.upgrades = Arc::new(system::reboot::Upgrades::new(
        system::upgrade::Upgrader::new(options.system_layout.clone(), options.data_dir.clone()),
        options.reboot,
    ));
    // The sync link's own identity, apart from the admin certificate.
    let sync_identity = crate::ha::identity::load_or_create(
        &options.data_dir,
        &appliance_id,
        &certificates,
        crate::ha::stored_pair(&store)?.is_some(),
    )?;
    let ha = crate::ha::Ha::load(
        store.clone(),
        events.clone(),
        control.clone(),
        app_state.licensing.clone(),
        crate::ha::Local {
            appliance_id: appliance_id.clone(),
            sync_listen: options.ha_listen,
            identity: sync_identity,
            vrrp: Some(Arc::clone(&vrrp)),
            certificates: Some(Arc::clone(&certificates)),
        },
    )?;
    let ha_listener = match options.ha_listen {
        Some(address) => Some(crate::ha::bind(address, &gates).await?),
        None => None,
    };
    // From now on the HA module says who writes.
    let mut ha_writer = ha.writer();
    let writer_task = tokio::spawn({
        let shutdown = shutdown.child_token();
        async move {
            loop {
                writer_tx.send_replace(ha_writer.borrow_and_update().clone());
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = ha_writer.changed() => if changed.is_err() { return },
                }
            }
        }
    });
    let ha_task = tokio::spawn(crate::ha::serve(
        Arc::clone(&ha),
        ha_listener,
        shutdown.child_token(),
    ));
    app_state.ha = Some(ha);
    let history_task = tokio::spawn(web::history::run(
        publisher.clone(),
        web::history::Sources {
            dns: Arc::clone(&app_state.dns_stats),
            sip: Arc::clone(&app_state.sip_stats),
        },
        control.subscribe(),
        Arc::clone(&app_state.history),
        shutdown.child_token(),
    ));
    let router = web::router(app_state);
    // The VIP proxy binds its own listeners (one per service port) and keeps
    // them in line with the config; it waits out the grace period itself.
    let proxy_workers = proxy::Workers::per_core().map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot start the proxy's worker threads: {error}"),
        )
    })?;
    let proxy_task = tokio::spawn(proxy::serve(
        proxy_workers,
        publisher.clone(),
        events.clone(),
        proxy::RelayMode::from_env(),
        shutdown.child_token(),
        options.grace,
        Arc::clone(&gates),
    ));
    let fail_open_task = tokio::spawn(dns::fail_open::watch(
        publisher.subscribe(),
        events.clone(),
        shutdown.child_token(),
    ));
    // DNS, SIP and the admin listener: bound now (a failure here is fatal),
    // then kept in line with the config. DNS answers in flight are single
    // packets and stop at once on shutdown; admin requests get the grace
    // period.
    let serving = listeners::Serving {
        dns: dns::Responder::new(publisher.subscribe(), dns_stats, dns::TcpLimits::default()),
        publisher: publisher.clone(),
        sip_stats: Arc::clone(&sip_stats),
        certificates,
        admin: listeners::Admin { router, tls },
        gates: Arc::clone(&gates),
        events: events.clone(),
        applied: listeners_applied,
    };
    let listeners =
        listeners::Listeners::start(serving, &config.listen, shutdown.child_token()).await?;
    let listeners_task =
        tokio::spawn(listeners.follow(publisher.subscribe(), control.admin_move(), options.grace));

    // keepalived keeps the addresses here only while these tasks run.
    let mut liveness = vrrp::health::Liveness::default();
    liveness.watch("control", control_task.abort_handle());
    liveness.watch("listeners", listeners_task.abort_handle());
    liveness.watch("proxy", proxy_task.abort_handle());
    let vrrp_task = vrrp.spawn(liveness, control.clone(), shutdown.child_token());

    system::notify_ready();
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "Ready");

    shutdown.cancelled().await;
    system::notify_stopping();
    let _ = vrrp_task.await;
    let _ = listeners_task.await;
    let _ = drain_task.await;
    let _ = seen_task.await;
    let _ = clock.await;
    let _ = renewal_task.await;
    let _ = history_task.await;
    let _ = ha_task.await;
    let _ = writer_task.await;
    let _ = health_task.await;
    let _ = network_task.await;
    let _ = proxy_task.await;
    let _ = fail_open_task.await;
    let _ = syslog_task.await;
    let _ = snmp_task.await;
    addresses_stop.cancel();
    let _ = addresses_task.await;
    let _ = control_task.await;
    let _ = publisher_task.await;
    events_stop.cancel();
    let _ = events_task.await;
    tracing::info!("Stopped");
    Ok(())
}

/// Commit a `--config` file through the control path, before anything
/// listens. A file that matches the stored config changes nothing; one the
/// licence forbids is not applied: the stored config keeps running and the
/// refusal is logged.
fn commit_file_config(
    controller: &mut Controller,
    config: Config,
    path: &Path,
) -> Result<(), RunError> {
    let change = Change::Config {
        input: ConfigInput::Validated(Box::new(config)),
        if_match: None,
    };
    let source = control::Source::File {
        path: path.to_owned(),
    };
    match controller.apply(change, &source) {
        Ok(control::Applied::Unchanged) => {
            tracing::info!(file = %path.display(), "Config file matches the stored config");
        }
        Ok(_) => {
            let version = controller.desired().version;
            tracing::info!(version, file = %path.display(), "Config committed");
        }
        Err(ControlError::Standby { .. }) => {
            tracing::error!(file = %path.display(), "Config file not applied: this appliance is the standby of an HA pair; running the config synced from the active");
        }
        Err(ControlError::Licence(reason)) => {
            tracing::error!(file = %path.display(), %reason, "Config file not applied; running the stored config");
        }
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

/// Move the licensing clock forward once a minute, so turning the system
/// clock back cannot extend an evaluation.
async fn keep_licence_clock(licensing: Licensing, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let licensing = licensing.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || licensing.now()).await {
            tracing::warn!(%error, "Cannot record the licensing clock");
        }
    }
}

fn new_appliance_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
