//! Wires the subsystems into a running appliance: open the store, commit a
//! config given on the command line, start the publisher, bind the listeners,
//! tell systemd, and on shutdown stop accepting, finish in-flight work under a
//! deadline, and report what was cut.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError, ConfigFile, ListenFile};
use crate::state::{self, Inputs};
use crate::store::{Store, StoreError};
use crate::{dns, system, web};

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
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    #[error("cannot listen for {service} on {address}: {source}")]
    Bind {
        service: &'static str,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The config a fresh appliance runs with: only the admin listener.
pub fn bootstrap_config(admin_listen: SocketAddr) -> Config {
    let file = ConfigFile {
        listen: ListenFile {
            admin: admin_listen.to_string(),
            dns: Vec::new(),
            sip_udp: None,
            sip_tcp: None,
            sip_tls: None,
        },
        dns: config::DnsFile::default(),
        zones: Vec::new(),
        monitors: Vec::new(),
        pools: Vec::new(),
        virtual_services: Vec::new(),
    };
    config::validate(&file).expect("a config with only an admin address is valid")
}

/// Bind a TCP listener and log its one `listening` line.
pub async fn bind_tcp(service: &'static str, address: SocketAddr) -> Result<TcpListener, RunError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| RunError::Bind {
            service,
            address,
            source,
        })?;
    let bound = listener.local_addr()?;
    tracing::info!(service, address = %bound, "listening");
    Ok(listener)
}

/// Run until `shutdown` is cancelled.
pub async fn run(options: RunOptions, shutdown: CancellationToken) -> Result<(), RunError> {
    let started = Instant::now();
    let store = {
        let options = options.clone();
        tokio::task::spawn_blocking(move || -> Result<Store, RunError> {
            // Validate before opening the store: an invalid file writes nothing.
            let file_config = options.config.as_deref().map(config::load).transpose()?;
            let store = Store::open(&options.data_dir)?;
            if let (Some(config), Some(path)) = (file_config, &options.config) {
                let (version, diff) = store.commit_config(&config, &format!("file {}", path.display()))?;
                tracing::info!(version, file = %path.display(), changed = !diff.is_empty(), "Config committed");
            }
            Ok(store)
        })
        .await??
    };
    let appliance_id = store.setting_or_insert("appliance_id", new_appliance_id)?;
    let (config, version) = match store.desired_config()? {
        Some(stored) => (stored.config, stored.id),
        None => {
            tracing::info!(admin = %options.admin_listen, "No config stored yet; serving setup only");
            (bootstrap_config(options.admin_listen), 0)
        }
    };
    let config = Arc::new(config);
    tracing::info!(
        %appliance_id,
        data_dir = %options.data_dir.display(),
        config_version = version,
        pools = config.pools.len(),
        virtual_services = config.virtual_services.len(),
        "Starting poolgate {}",
        env!("CARGO_PKG_VERSION")
    );
    let inputs = Inputs::new(Arc::clone(&config), version, store.admin_states()?);
    let (publisher, publisher_task) = state::spawn(inputs, shutdown.child_token());

    let admin = bind_tcp("admin", config.listen.admin).await?;
    let router = web::router(web::AppState {
        publisher: publisher.clone(),
        store: store.clone(),
        started,
    });
    let server_shutdown = shutdown.child_token();
    let mut admin_task = tokio::spawn(web::serve(admin, router, server_shutdown));

    // DNS answers in-flight are single packets: its tasks stop at once on
    // shutdown and need no grace period.
    let dns_listeners = dns::bind(&config.listen.dns).await?;
    let mut dns_tasks = dns::spawn(
        dns_listeners,
        publisher.subscribe(),
        store.clone(),
        Arc::new(dns::DnsStats::default()),
        dns::TcpLimits::default(),
        shutdown.child_token(),
    );

    system::notify_ready();
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "Ready");

    let finished = tokio::select! {
        () = shutdown.cancelled() => None,
        result = &mut admin_task => Some(result),
    };
    system::notify_stopping();
    match finished {
        // The admin server only ends by itself on an accept-loop failure (or
        // because shutdown began in the same instant).
        Some(result) => {
            let stopping = shutdown.is_cancelled();
            shutdown.cancel();
            match result? {
                Err(error) if !stopping => return Err(error.into()),
                Err(error) => tracing::warn!(%error, "Admin listener ended with an error"),
                Ok(()) => {}
            }
        }
        None => {
            let deadline = tokio::time::sleep(options.grace);
            tokio::pin!(deadline);
            tokio::select! {
                result = &mut admin_task => {
                    if let Ok(Err(error)) = result {
                        tracing::warn!(%error, "Admin listener ended with an error");
                    }
                }
                () = &mut deadline => {
                    tracing::warn!(grace_s = options.grace.as_secs(), "Grace period over; closing admin connections still open");
                    admin_task.abort();
                }
            }
        }
    }
    while dns_tasks.join_next().await.is_some() {}
    let _ = publisher_task.await;
    tracing::info!("Stopped");
    Ok(())
}

fn new_appliance_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
