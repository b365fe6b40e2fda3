//! What every handler can reach (`AppState`), and the one way a handler
//! calls the store (`blocking`, off the async threads).

use std::sync::Arc;
use std::time::Instant;

use super::{ApiError, auth, history};
use crate::control::ControlHandle;
use crate::state::PublisherHandle;
use crate::store::{Store, StoreError};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Every change (configs, member actions) goes through the control task.
    pub control: ControlHandle,
    pub publisher: PublisherHandle,
    pub store: Store,
    pub started: Instant,
    /// With `--require-setup-code`: the one-time code first-boot setup needs.
    pub setup_code: Option<Arc<auth::setup_code::SetupCode>>,
    pub login_limiter: Arc<auth::LoginLimiter>,
    /// The few password hashes computed at once.
    pub hashing: Arc<auth::HashGate>,
    pub licensing: crate::license::Licensing,
    /// Counters of the DNS and SIP services, for `/metrics`.
    pub dns_stats: Arc<crate::dns::DnsStats>,
    pub sip_stats: Arc<crate::sip::SipStats>,
    /// The appliance certificate (admin listener and SIP over TLS).
    pub certificates: Option<Arc<crate::certs::Certificates>>,
    /// Upgrades and the reboot into them (`run` sets the real layout and
    /// reboot mode; the default never reboots).
    pub upgrades: Arc<crate::system::reboot::Upgrades>,
    /// Connections per member over the last minutes (`history::run` fills it).
    pub history: Arc<history::History>,
    /// The accept layer's counters of every TCP listener, for `/metrics`.
    pub listeners: Arc<crate::net::Registry>,
    /// The appliance's network settings (`run` sets it).
    pub(crate) network: Option<Arc<crate::system::network::Network>>,
    /// Counters of the addresses poolgate adds and removes, for `/metrics`.
    pub(crate) addresses: Arc<crate::net::addresses::AddressStats>,
    /// This appliance's VRRP (`run` sets it).
    pub(crate) vrrp: Option<Arc<crate::vrrp::Vrrp>>,
    /// Remote syslog (`run` sets it).
    pub(crate) syslog: Option<Arc<crate::syslog::Syslog>>,
    /// SNMP settings (`run` sets it).
    pub(crate) snmp: Option<Arc<crate::snmp::Snmp>>,
    /// Where handlers record what they did (and whose counters `/metrics` shows).
    pub events: crate::events::EventLog,
    /// The newest view generation the DNS, SIP and admin listeners are in
    /// line with (`listeners`); without a sender nothing waits for it.
    pub listeners_applied: tokio::sync::watch::Receiver<u64>,
    /// Set once an admin account exists (it is never removed), so that
    /// `GET /api/v1/health`, which load balancers and monitors poll, asks
    /// the store only until then.
    pub(crate) setup_done: Arc<std::sync::atomic::AtomicBool>,
    /// The HA pair (`run` sets it).
    pub(crate) ha: Option<Arc<crate::ha::Ha>>,
}

impl AppState {
    pub(crate) fn new(
        control: ControlHandle,
        publisher: PublisherHandle,
        store: Store,
        licensing: crate::license::Licensing,
        setup_code: Option<auth::setup_code::SetupCode>,
        events: crate::events::EventLog,
    ) -> Self {
        let data_dir = store.path().parent().map(Into::into).unwrap_or_default();
        Self {
            control,
            publisher,
            store,
            started: Instant::now(),
            setup_code: setup_code.map(Arc::from),
            login_limiter: Arc::default(),
            hashing: Arc::default(),
            licensing,
            dns_stats: Arc::default(),
            sip_stats: Arc::default(),
            certificates: None,
            upgrades: Arc::new(crate::system::reboot::Upgrades::never_rebooting(data_dir)),
            history: Arc::default(),
            listeners: Arc::default(),
            network: None,
            addresses: Arc::default(),
            vrrp: None,
            syslog: None,
            snmp: None,
            events,
            listeners_applied: tokio::sync::watch::channel(0).1,
            setup_done: Arc::default(),
            ha: None,
        }
    }
}

impl AppState {
    /// Whether first-boot setup is done (an admin account exists).
    pub(crate) async fn setup_done(&self) -> Result<bool, ApiError> {
        use std::sync::atomic::Ordering;
        if self.setup_done.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let done = blocking(self, |store| store.has_admin()).await?;
        if done {
            self.setup_done.store(true, Ordering::Relaxed);
        }
        Ok(done)
    }
}

/// Run a store call off the async threads.
pub async fn blocking<T: Send + 'static>(
    state: &AppState,
    call: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    Ok(tokio::task::spawn_blocking(move || call(&store)).await??)
}
