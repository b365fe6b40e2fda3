//! The synchronous half of the control task: one change through validate,
//! licence, version check, diff and commit, against the desired state it
//! holds. It owns that state; the task (`super::run`) owns the order.

use std::sync::Arc;

use super::{
    AWAITING_MOVE_KEY, AwaitingMove, Change, ConfigInput, ControlError, Desired, PeerChange,
    Preview, Source, Writer,
};
use crate::config::{self, AdminState, Config, ConfigDiff, MemberKey};
use crate::events::{EventKind, NewEvent};
use crate::health::ca::{self, CaBundle, CaBundles};
use crate::license::Licensing;
use crate::net::addresses::HostCheck;
use crate::state::Inputs;
use crate::store::{SettingWrite, Store};

/// The desired state and the means to change it.
#[derive(Debug)]
pub(crate) struct Controller {
    store: Store,
    licensing: Licensing,
    desired: Arc<Desired>,
    /// Changes committed so far by this process.
    seq: u64,
    /// Checks a config against the host's interfaces (VIP placement).
    host_check: Option<HostCheck>,
    /// Whether changes of this appliance's own are committed (HA role).
    writer: Option<tokio::sync::watch::Receiver<Writer>>,
    /// The CA bundles as stored: monitors' `ca_bundle` must name one.
    ca_bundles: Arc<CaBundles>,
}

/// What one change did, before it is published.
#[derive(Debug)]
pub(crate) enum Applied {
    /// A file given at start matched the stored config: nothing written.
    Unchanged,
    /// A new config version was committed (its number is in `desired`).
    Config {
        config: Arc<Config>,
        diff: Box<ConfigDiff>,
        /// The peer's history replaced this appliance's: the version may
        /// move back.
        replace: bool,
    },
    /// A member's admin state was committed.
    Member {
        member: MemberKey,
        previous: AdminState,
        state: AdminState,
    },
    /// A backup was restored: a config that replaces the one in force
    /// whatever its version, with every member's admin state in `diff`, and
    /// the restored CA bundles.
    Restored {
        config: Arc<Config>,
        diff: Box<ConfigDiff>,
        bundles: Arc<CaBundles>,
    },
    /// A CA bundle was stored (`replaced` one of its name) or deleted.
    CaBundle {
        name: String,
        removed: bool,
        replaced: bool,
        bundles: Arc<CaBundles>,
    },
}

impl Controller {
    /// The desired state as stored, parsed and validated once here, or
    /// `bootstrap` (version 0) when nothing is stored yet. A move of the
    /// admin listener that was still awaiting its confirmation when poolgate
    /// stopped is reverted here, before anything listens.
    pub(crate) fn load(
        store: Store,
        licensing: Licensing,
        bootstrap: Config,
    ) -> Result<Self, ControlError> {
        let mut controller = Self::stored(store, licensing, bootstrap.clone())?;
        controller.revert_unconfirmed_move(bootstrap)?;
        Ok(controller)
    }

    fn stored(store: Store, licensing: Licensing, bootstrap: Config) -> Result<Self, ControlError> {
        let desired = match store.latest_config()? {
            Some(stored) => {
                let config =
                    config::from_toml(&stored.toml, &format!("stored config {}", stored.id))
                        .map_err(|source| ControlError::StoredConfig {
                            version: stored.id,
                            source,
                        })?;
                Desired {
                    version: stored.id,
                    config: Arc::new(config),
                    admin: store.admin_states()?,
                }
            }
            None => Desired {
                version: 0,
                config: Arc::new(bootstrap),
                admin: Default::default(),
            },
        };
        let ca_bundles = Arc::new(stored_ca_bundles(&store)?);
        Ok(Self {
            store,
            licensing,
            desired: Arc::new(desired),
            seq: 0,
            host_check: None,
            writer: None,
            ca_bundles,
        })
    }

    /// Commit the config from before an admin move again if the move was
    /// never confirmed (its record is still in the store).
    fn revert_unconfirmed_move(&mut self, bootstrap: Config) -> Result<(), ControlError> {
        let Some(text) = self.store.setting(AWAITING_MOVE_KEY)? else {
            return Ok(());
        };
        let forget = |store: &Store, why: &str| {
            tracing::error!(record = %text, why, "Cannot revert the unconfirmed admin listener move; the config stays as it is");
            store.remove_setting(AWAITING_MOVE_KEY)
        };
        let Ok(awaiting) = serde_json::from_str::<AwaitingMove>(&text) else {
            forget(&self.store, "unreadable record")?;
            return Ok(());
        };
        let previous = if awaiting.revert_to == 0 {
            Some(bootstrap)
        } else {
            self.store
                .config_version(awaiting.revert_to)?
                .and_then(|stored| config::from_toml(&stored.toml, "stored config").ok())
        };
        let Some(previous) = previous else {
            forget(&self.store, "the previous config version is gone")?;
            return Ok(());
        };
        let change = Change::Config {
            input: ConfigInput::Validated(Box::new(super::with_admin_states(
                &previous,
                &self.desired.admin,
            ))),
            if_match: None,
        };
        let source = Source::Revert {
            version: awaiting.revert_to,
            to: awaiting.to,
        };
        match self.apply(change, &source) {
            Ok(_) => tracing::warn!(
                to = %awaiting.to,
                back = %awaiting.from,
                version = awaiting.revert_to,
                "Admin listener move was not confirmed before poolgate stopped; previous config committed again"
            ),
            Err(error) => forget(&self.store, &error.to_string())?,
        }
        Ok(())
    }

    /// The store, for what the task writes outside a change (a confirmation).
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Check every config change against the host too (`net::addresses`):
    /// a virtual service address that cannot be placed is a field error.
    pub(crate) fn set_host_check(&mut self, check: HostCheck) {
        self.host_check = Some(check);
    }

    /// The one validator, then what only the appliance knows: the host
    /// check if there is one, and that every `ca_bundle` is uploaded.
    fn validate(&self, input: ConfigInput) -> Result<Config, ControlError> {
        let config = validate(input)?;
        let mut errors = match &self.host_check {
            Some(check) => check.check(&config),
            None => Vec::new(),
        };
        errors.extend(ca::missing(&config, &self.ca_bundles));
        if !errors.is_empty() {
            return Err(ControlError::Invalid(config::host_problems(errors)));
        }
        Ok(config)
    }

    /// Follow the HA role: while it says standby, changes of this
    /// appliance's own are refused.
    pub(crate) fn set_writer(&mut self, writer: tokio::sync::watch::Receiver<Writer>) {
        self.writer = Some(writer);
    }

    /// Refuse an own change on a standby.
    fn check_writer(&self, source: &Source) -> Result<(), ControlError> {
        if matches!(source, Source::Revert { .. } | Source::Peer { .. }) {
            return Ok(());
        }
        match self.writer.as_ref().map(|w| w.borrow().clone()) {
            Some(Writer::Standby { active }) => Err(ControlError::Standby { active }),
            Some(Writer::Own) | None => Ok(()),
        }
    }

    pub(crate) fn desired(&self) -> &Arc<Desired> {
        &self.desired
    }

    /// How many changes this controller has committed.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// What the publisher's first generation is built from.
    pub(crate) fn inputs(&self) -> Inputs {
        Inputs::new(
            Arc::clone(&self.desired.config),
            self.desired.version,
            self.desired.admin.clone(),
        )
        .with_ca_bundles(Arc::clone(&self.ca_bundles))
    }

    /// Take `change` through the path and commit it. Blocking (the store,
    /// the licence). Nothing is written unless every check passed; on
    /// success the held desired state is the new one.
    pub(crate) fn apply(
        &mut self,
        change: Change,
        source: &Source,
    ) -> Result<Applied, ControlError> {
        match change {
            Change::Config { input, if_match } => {
                self.check_writer(source)?;
                self.config(input, if_match, source)
            }
            Change::Member { member, state } => {
                self.check_writer(source)?;
                self.member(member, state, source)
            }
            Change::Peer(change) => self.peer(change, source),
            Change::PutCaBundle(bundle) => {
                self.check_writer(source)?;
                self.put_ca_bundle(*bundle, source)
            }
            Change::DeleteCaBundle { name } => {
                self.check_writer(source)?;
                self.delete_ca_bundle(name, source)
            }
            Change::Restore(plan) => {
                self.check_writer(source)?;
                self.restore(*plan)
            }
        }
    }

    /// Write a checked backup to the store in one transaction, then hold
    /// its config (with every member's admin state from the archive) and
    /// CA bundles. An archive without any config keeps the config in force.
    fn restore(&mut self, plan: crate::backup::Plan) -> Result<Applied, ControlError> {
        self.store.restore(&plan.rows())?;
        let admin = self.store.admin_states()?;
        let current = Arc::clone(&self.desired);
        let (version, config) = match &plan.config {
            Some(config) => (plan.version, Config::clone(config)),
            None => (0, Config::clone(&current.config)),
        };
        let mut diff = config::diff(current.stored().then_some(current.config.as_ref()), &config);
        diff.admin_states = config
            .pools
            .iter()
            .flat_map(|pool| {
                pool.members.iter().map(|member| {
                    let key = (pool.name.clone(), member.name.clone());
                    let state = admin.get(&key).copied().unwrap_or(AdminState::Enabled);
                    (key, state)
                })
            })
            .collect();
        let config = Arc::new(config);
        self.desired = Arc::new(Desired {
            version,
            config: Arc::clone(&config),
            admin,
        });
        self.ca_bundles = Arc::new(plan.bundles);
        self.seq += 1;
        Ok(Applied::Restored {
            config,
            diff: Box::new(diff),
            bundles: Arc::clone(&self.ca_bundles),
        })
    }

    fn put_ca_bundle(
        &mut self,
        bundle: CaBundle,
        source: &Source,
    ) -> Result<Applied, ControlError> {
        let name = bundle.name.clone();
        let replaced = self.ca_bundles.contains_key(&name);
        let subjects: Vec<&str> = bundle.info.iter().map(|c| c.subject.as_str()).collect();
        let event = NewEvent::new(
            EventKind::System,
            format!(
                "CA bundle {name} {} by {} ({})",
                if replaced { "replaced" } else { "uploaded" },
                source.actor(),
                subjects.join("; ")
            ),
        )
        .detail(serde_json::json!({
            "ca_bundle": name,
            "sha256_fingerprints": bundle.info.iter().map(|c| c.sha256_fingerprint.as_str()).collect::<Vec<_>>(),
        }));
        self.store.put_ca_bundle(&name, &bundle.pem, event)?;
        let mut bundles = CaBundles::clone(&self.ca_bundles);
        bundles.insert(name.clone(), Arc::new(bundle));
        self.ca_bundles = Arc::new(bundles);
        self.seq += 1;
        Ok(Applied::CaBundle {
            name,
            removed: false,
            replaced,
            bundles: Arc::clone(&self.ca_bundles),
        })
    }

    fn delete_ca_bundle(&mut self, name: String, source: &Source) -> Result<Applied, ControlError> {
        if !self.ca_bundles.contains_key(&name) {
            return Err(ControlError::UnknownCaBundle(name));
        }
        let monitors = ca::users(&self.desired.config, &name);
        if !monitors.is_empty() {
            return Err(ControlError::CaBundleInUse { name, monitors });
        }
        let event = NewEvent::new(
            EventKind::System,
            format!("CA bundle {name} deleted by {}", source.actor()),
        )
        .detail(serde_json::json!({"ca_bundle": name}));
        self.store.delete_ca_bundle(&name, event)?;
        let mut bundles = CaBundles::clone(&self.ca_bundles);
        bundles.remove(&name);
        self.ca_bundles = Arc::new(bundles);
        self.seq += 1;
        Ok(Applied::CaBundle {
            name,
            removed: true,
            replaced: false,
            bundles: Arc::clone(&self.ca_bundles),
        })
    }

    /// The config path as a dry run: validate, licence (a refusal is
    /// reported, not raised), diff; nothing is written.
    pub(crate) fn preview(&self, input: ConfigInput) -> Result<Preview, ControlError> {
        let config = self.validate(input)?;
        let current = Arc::clone(&self.desired);
        let diff = config::diff(current.stored().then_some(current.config.as_ref()), &config);
        let licence_problem = self.licensing.status()?.allows(&config).err();
        Ok(Preview {
            current,
            config,
            diff,
            licence_problem,
        })
    }

    fn config(
        &mut self,
        input: ConfigInput,
        if_match: Option<i64>,
        source: &Source,
    ) -> Result<Applied, ControlError> {
        let config = self.validate(input)?;
        let current = Arc::clone(&self.desired);
        let diff = config::diff(current.stored().then_some(current.config.as_ref()), &config);
        // A restart with the same file is no change: the stored config and
        // the admin states set since stay as they are.
        if matches!(source, Source::File { .. }) && current.stored() && diff.is_empty() {
            return Ok(Applied::Unchanged);
        }
        self.licensing
            .status()?
            .allows(&config)
            .map_err(ControlError::Licence)?;
        // Version check.
        if let Some(expected) = if_match {
            let version = current.stored().then_some(current.version);
            if version != Some(expected) {
                return Err(ControlError::VersionMismatch {
                    expected,
                    current: version.unwrap_or(0),
                });
            }
        }
        // Commit, with the admin states the diff sets, its event and the
        // record of an admin move that awaits confirmation: written with
        // the version that moves the listener, removed with its revert.
        let moved = (current.config.listen.admin != config.listen.admin).then(|| {
            serde_json::to_string(&AwaitingMove {
                revert_to: current.version,
                from: current.config.listen.admin,
                to: config.listen.admin,
            })
            .expect("plain fields serialise")
        });
        let record = match (source, &moved) {
            (Source::Revert { .. }, _) => Some(SettingWrite::Remove {
                key: AWAITING_MOVE_KEY,
            }),
            (Source::Api { .. }, Some(value)) => Some(SettingWrite::Set {
                key: AWAITING_MOVE_KEY,
                value,
            }),
            _ => None,
        };
        let version = self
            .store
            .record_config(&config, &source.to_string(), &diff, record)?;
        Ok(self.hold(version, config, diff, false))
    }

    /// Hold `config`, committed as `version` with `diff` from the config
    /// held until now, as the desired state, with the admin states the diff
    /// sets.
    fn hold(&mut self, version: i64, config: Config, diff: ConfigDiff, replace: bool) -> Applied {
        let mut admin = self.desired.admin.clone();
        diff.apply_admin(&mut admin);
        let config = Arc::new(config);
        self.desired = Arc::new(Desired {
            version,
            config: Arc::clone(&config),
            admin,
        });
        self.seq += 1;
        Applied::Config {
            config,
            diff: Box::new(diff),
            replace,
        }
    }

    /// A change the HA peer committed: its config under its version (with
    /// this appliance's own `[listen]`), or a member's admin state with the
    /// peer's time.
    fn peer(&mut self, change: PeerChange, source: &Source) -> Result<Applied, ControlError> {
        match change {
            PeerChange::Config {
                version,
                toml,
                origin,
                rebase,
            } => {
                let current = Arc::clone(&self.desired);
                let floor = rebase.unwrap_or(current.version);
                if version <= floor {
                    return Err(ControlError::Replay {
                        version,
                        current: current.version,
                    });
                }
                let name = format!("peer config {version}");
                let peer = config::from_toml(&toml, &name).map_err(ControlError::Invalid)?;
                let mut file = peer.source().clone();
                file.listen = current.config.source().listen.clone();
                let config = config::from_toml(&config::file_to_toml(&file), &name)
                    .map_err(ControlError::Invalid)?;
                let diff =
                    config::diff(current.stored().then_some(current.config.as_ref()), &config);
                let stored_source = format!("{source} ({origin})");
                self.store
                    .record_peer_config(&config, &stored_source, &diff, version, rebase)?;
                Ok(self.hold(version, config, diff, rebase.is_some()))
            }
            PeerChange::Admin {
                member,
                state,
                changed_at,
            } => {
                let (pool, name) = &member;
                let current = self.desired.admin.get(&member).copied();
                let same_time = self.store.admin_state_changed_at(pool, name)?.as_deref()
                    == Some(changed_at.as_str());
                if current == Some(state) && same_time {
                    return Ok(Applied::Unchanged);
                }
                let previous = self.store.set_admin_state_at(
                    pool,
                    name,
                    state,
                    &changed_at,
                    &source.actor(),
                )?;
                let mut desired = Desired::clone(&self.desired);
                desired.admin.insert(member.clone(), state);
                self.desired = Arc::new(desired);
                self.seq += 1;
                Ok(Applied::Member {
                    member,
                    previous,
                    state,
                })
            }
        }
    }

    fn member(
        &mut self,
        member: MemberKey,
        state: AdminState,
        source: &Source,
    ) -> Result<Applied, ControlError> {
        let (pool, name) = &member;
        let known = self
            .desired
            .config
            .pool(pool)
            .is_some_and(|p| p.members.iter().any(|m| &m.name == name));
        if !known {
            return Err(ControlError::UnknownMember {
                pool: pool.clone(),
                member: name.clone(),
            });
        }
        let previous = self
            .store
            .set_admin_state(pool, name, state, &source.actor())?;
        let mut desired = Desired::clone(&self.desired);
        desired.admin.insert(member.clone(), state);
        self.desired = Arc::new(desired);
        self.seq += 1;
        Ok(Applied::Member {
            member,
            previous,
            state,
        })
    }
}

/// The stored CA bundles, checked again as they are read. One that no
/// longer passes (a stricter poolgate) is left out and logged: a monitor
/// that names it fails its probes with the reason, and a new upload fixes it.
fn stored_ca_bundles(store: &Store) -> Result<CaBundles, ControlError> {
    let mut bundles = CaBundles::new();
    for (name, pem) in store.ca_bundles()? {
        match ca::parse(&name, &pem) {
            Ok(bundle) => {
                bundles.insert(name, Arc::new(bundle));
            }
            Err(problem) => {
                tracing::error!(ca_bundle = %name, %problem, "Stored CA bundle no longer passes its checks; upload it again");
            }
        }
    }
    Ok(bundles)
}

/// The one validator, whatever form the config came in.
fn validate(input: ConfigInput) -> Result<Config, ControlError> {
    match input {
        ConfigInput::Json(body) => config::from_json(&body, "upload"),
        ConfigInput::Toml(text) => config::from_toml(&text, "upload"),
        ConfigInput::Validated(config) => Ok(*config),
    }
    .map_err(ControlError::Invalid)
}
