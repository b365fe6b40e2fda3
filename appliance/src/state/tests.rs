use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::config::MemberKey;
use crate::config::{
    self, AdminState, ConfigFile, DnsFile, ListenFile, MemberFile, MonitorFile, PoolFile,
    StartState, VirtualServiceFile, ZoneFile,
};

#[derive(Debug, Clone)]
struct MemberSpec {
    state: AdminState,
    has_fqdn: bool,
    pool_health: Option<bool>,
    web_health: Option<bool>,
}

fn member_spec() -> impl Strategy<Value = MemberSpec> {
    (
        prop::sample::select(AdminState::ALL.to_vec()),
        any::<bool>(),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(state, has_fqdn, pool_health, web_health)| MemberSpec {
            state,
            has_fqdn,
            pool_health,
            web_health,
        })
}

fn monitor(name: &str, start: StartState) -> MonitorFile {
    toml::from_str::<MonitorFile>(&format!("name = \"{name}\"\ntype = \"tcp\"\nport = 5061"))
        .map(|m| MonitorFile { start, ..m })
        .expect("valid monitor")
}

/// A config with one pool per spec list, a service per pool, two monitors.
fn config_for(pools: &[Vec<MemberSpec>], fail_open: bool, start: StartState) -> config::Config {
    let file = ConfigFile {
        listen: ListenFile {
            admin: "127.0.0.1:0".into(),
            dns: vec![],
            sip_udp: None,
            sip_tcp: None,
            sip_tls: None,
        },
        dns: DnsFile {
            ttl: 30,
            fail_open,
            ..DnsFile::default()
        },
        sip: config::SipFile::default(),
        zones: vec![ZoneFile {
            name: "test".into(),
            ttl: None,
            negative_ttl: None,
            name_servers: vec![],
            records: vec![],
        }],
        monitors: vec![monitor("sip", start), monitor("web", StartState::Up)],
        pools: pools
            .iter()
            .enumerate()
            .map(|(p, members)| PoolFile {
                name: format!("pool{p}"),
                fqdn: format!("pool{p}.test"),
                aliases: vec![format!("sip{p}.test")],
                monitor: "sip".into(),
                registrar_port: 5061,
                registrar_transport: config::Transport::Tls,
                drain_timeout_s: None,
                drop_at_deadline: false,
                drain_agent_port: None,
                drain_agent_path: None,
                members: members
                    .iter()
                    .enumerate()
                    .map(|(m, spec)| MemberFile {
                        name: format!("fe{m}"),
                        fqdn: spec.has_fqdn.then(|| format!("fe{m}.pool{p}.test")),
                        address: Some(format!("127.0.{p}.{}", m + 11)),
                        addresses: Vec::new(),
                        weight: 1,
                        state: spec.state,
                    })
                    .collect(),
            })
            .collect(),
        virtual_services: (0..pools.len())
            .map(|p| {
                toml::from_str::<VirtualServiceFile>(&format!(
                    "name = \"web{p}\"\naddress = \"127.1.0.{p}\"\nport = 443\npool = \"pool{p}\"\nmonitor = \"web\""
                ))
                .expect("valid service")
            })
            .collect(),
    };
    config::validate(&file).unwrap_or_else(|errors| panic!("{errors:?}"))
}

fn status(up: Option<bool>) -> HealthStatus {
    HealthStatus {
        state: match up {
            None => Health::Unknown,
            Some(true) => Health::Up,
            Some(false) => Health::Down,
        },
        reason: None,
        since: None,
    }
}

fn inputs_for(pools: &[Vec<MemberSpec>], config: config::Config) -> Inputs {
    let mut inputs = Inputs::new(Arc::new(config), 1, BTreeMap::new());
    for (p, members) in pools.iter().enumerate() {
        for (m, spec) in members.iter().enumerate() {
            let key: MemberKey = (format!("pool{p}"), format!("fe{m}"));
            inputs.admin.insert(key.clone(), spec.state);
            let address: IpAddr = format!("127.0.{p}.{}", m + 11).parse().expect("ip");
            inputs.health.insert(
                (key.clone(), "sip".into(), address),
                status(spec.pool_health),
            );
            inputs
                .health
                .insert((key, "web".into(), address), status(spec.web_health));
        }
    }
    inputs
}

fn pools_strategy() -> impl Strategy<Value = Vec<Vec<MemberSpec>>> {
    prop::collection::vec(prop::collection::vec(member_spec(), 1..12), 1..4)
}

proptest! {
    #[test]
    fn view_is_consistent_with_config_and_admin_state(
        pools in pools_strategy(),
        fail_open in any::<bool>(),
        start_down in any::<bool>(),
    ) {
        let start = if start_down { StartState::Down } else { StartState::Up };
        let config = config_for(&pools, fail_open, start);
        let view = PoolView::build(&inputs_for(&pools, config.clone()), 7);
        prop_assert_eq!(view.generation, 7);
        prop_assert_eq!(view.pools.len(), config.pools.len());
        for (pool, (configured, specs)) in view.pools.iter().zip(config.pools.iter().zip(&pools)) {
            prop_assert_eq!(&pool.name, &configured.name);
            prop_assert_eq!(pool.members.len(), configured.members.len());
            for ((member, configured), spec) in pool.members.iter().zip(&configured.members).zip(specs) {
                prop_assert_eq!(&member.name, &configured.name);
                prop_assert_eq!(&member.addresses, &configured.addresses);
                prop_assert_eq!(member.admin_state, spec.state);
                let up = spec.pool_health.unwrap_or(start == StartState::Up);
                prop_assert_eq!(member.eligible, spec.state == AdminState::Enabled && up);
                prop_assert_eq!(member.drain.is_some(), spec.state == AdminState::Draining);
            }
            let answer = &view.dns[&pool.fqdn];
            for member in &pool.members {
                if member.admin_state != AdminState::Enabled {
                    // Draining and disabled members never get new work.
                    prop_assert!(!answer.addresses.contains(&member.addresses[0]));
                }
                if let Some(fqdn) = &member.fqdn {
                    prop_assert_eq!(
                        view.dns.contains_key(fqdn),
                        member.admin_state != AdminState::Disabled
                    );
                }
            }
            let enabled = pool.members.iter().filter(|m| m.admin_state == AdminState::Enabled).count();
            if pool.eligible.is_empty() && fail_open {
                prop_assert_eq!(answer.addresses.len(), enabled);
            } else {
                prop_assert_eq!(answer.addresses.len(), pool.eligible.len());
            }
            prop_assert_eq!(&view.dns[&pool.aliases[0]], answer);
        }
        for service in &view.services {
            let pool = &view.pools[service.pool];
            for &candidate in &service.candidates {
                let member = &pool.members[candidate];
                prop_assert_eq!(member.admin_state, AdminState::Enabled);
                prop_assert!(member.health["web"].counts_up(StartState::Up));
            }
        }
    }

    #[test]
    fn applying_a_config_diff_reaches_the_target(
        before in pools_strategy(),
        after in pools_strategy(),
    ) {
        let old = config_for(&before, true, StartState::Up);
        let new = config_for(&after, true, StartState::Up);
        let mut inputs = inputs_for(&before, old.clone());
        let counters_before = inputs.counters.clone();
        let diff = config::diff(Some(&old), &new);
        // What the store does on commit: config states win where they changed.
        let mut expected_admin: BTreeMap<MemberKey, AdminState> = inputs.admin.clone();
        expected_admin.retain(|key, _| !diff.members_removed.contains(key));
        expected_admin.extend(diff.admin_states.clone());
        let update = Update::Config { config: Arc::new(new.clone()), version: 2, diff: diff.clone() };
        let changed = inputs.apply(update);
        prop_assert!(changed);
        prop_assert_eq!(&inputs.admin, &expected_admin);
        let view = PoolView::build(&inputs, 2);
        let fresh = PoolView::build(&Inputs::new(Arc::new(new.clone()), 2, expected_admin), 2);
        for (a, b) in view.pools.iter().zip(&fresh.pools) {
            let names = |p: &PoolState| p.members.iter().map(|m| (m.name.clone(), m.admin_state)).collect::<Vec<_>>();
            prop_assert_eq!(names(a), names(b));
        }
        // Members that stayed keep their counters; health of changed members resets.
        for (key, handle) in &inputs.counters {
            if let Some(old_handle) = counters_before.get(key) {
                prop_assert!(Arc::ptr_eq(handle, old_handle));
            }
        }
        for key in diff.members_changed.iter().chain(&diff.members_added) {
            prop_assert!(!inputs.health.keys().any(|(member, _, _)| member == key));
        }
        prop_assert_eq!(inputs.counters.len(), new.pools.iter().map(|p| p.members.len()).sum::<usize>());
    }
}

#[test]
fn updates_for_unknown_members_are_ignored() {
    let pools = vec![vec![
        MemberSpec {
            state: AdminState::Enabled,
            has_fqdn: true,
            pool_health: None,
            web_health: None,
        };
        2
    ]];
    let mut inputs = inputs_for(&pools, config_for(&pools, true, StartState::Up));
    let ghost: MemberKey = ("pool0".into(), "fe9".into());
    assert!(!inputs.apply(Update::AdminState {
        member: ghost.clone(),
        state: AdminState::Disabled
    }));
    assert!(!inputs.apply(Update::Health {
        member: ("pool0".into(), "fe0".into()),
        monitor: "nope".into(),
        address: "127.0.0.11".parse().expect("ip"),
        status: status(Some(false)),
    }));
    assert!(
        !inputs.apply(Update::Health {
            member: ("pool0".into(), "fe0".into()),
            monitor: "sip".into(),
            address: "127.0.0.99".parse().expect("ip"),
            status: status(Some(false)),
        }),
        "an address the member does not have"
    );
    assert!(!inputs.admin.contains_key(&ghost));
}

#[tokio::test]
async fn publisher_publishes_each_change_as_a_new_generation() {
    let pools = vec![vec![
        MemberSpec {
            state: AdminState::Enabled,
            has_fqdn: true,
            pool_health: Some(true),
            web_health: Some(true),
        };
        3
    ]];
    let inputs = inputs_for(&pools, config_for(&pools, true, StartState::Up));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (handle, task) = spawn(inputs, shutdown.clone());
    assert_eq!(handle.current().generation, 1);
    assert_eq!(handle.current().dns["pool0.test"].addresses.len(), 3);

    let fe1: MemberKey = ("pool0".into(), "fe1".into());
    let generation = handle
        .apply(Update::AdminState {
            member: fe1.clone(),
            state: AdminState::Draining,
        })
        .await
        .expect("published");
    assert_eq!(generation, 2);
    let view = handle.current();
    assert_eq!(view.dns["pool0.test"].addresses.len(), 2);
    assert!(
        view.dns.contains_key("fe1.pool0.test"),
        "draining keeps its own FQDN"
    );
    assert_eq!(
        view.pools[0].members[1].drain.as_ref().map(|d| d.state),
        Some(DrainState::Draining)
    );

    // The same state again changes nothing and publishes nothing new.
    let generation = handle
        .apply(Update::AdminState {
            member: fe1,
            state: AdminState::Draining,
        })
        .await
        .expect("published");
    assert_eq!(generation, 2);

    shutdown.cancel();
    task.await.expect("publisher exits cleanly");
}

/// Drain progress belongs to a draining member: a config that enables it
/// clears it, and progress that arrives after it left draining is refused.
#[test]
fn drain_progress_goes_when_the_member_stops_draining() {
    let spec = MemberSpec {
        state: AdminState::Draining,
        has_fqdn: false,
        pool_health: Some(true),
        web_health: Some(true),
    };
    let pools = vec![vec![spec]];
    let config = config_for(&pools, false, StartState::Up);
    let mut inputs = inputs_for(&pools, config.clone());
    let key: MemberKey = ("pool0".into(), "fe0".into());
    let progress = || DrainProgress {
        state: DrainState::Drained,
        since: None,
        overdue: false,
    };
    assert!(inputs.apply(Update::Drain {
        member: key.clone(),
        progress: Some(progress()),
    }));
    let mut diff = config::ConfigDiff::default();
    diff.admin_states.insert(key.clone(), AdminState::Enabled);
    assert!(inputs.apply(Update::Config {
        config: Arc::new(config),
        version: 2,
        diff,
    }));
    assert_eq!(inputs.admin.get(&key), Some(&AdminState::Enabled));
    assert!(inputs.drain.is_empty(), "{:?}", inputs.drain);
    assert!(!inputs.apply(Update::Drain {
        member: key,
        progress: Some(progress()),
    }));
    assert!(inputs.drain.is_empty());
}

/// Pool `p` with fe1 on 127.0.0.11 and ::11 (fe1.p.test) and fe2 on
/// 127.0.0.12; services on 127.0.0.1 and ::1 with monitor `web`.
fn dual_stack_inputs() -> Inputs {
    let text = "[listen]\nadmin = \"127.0.0.1:0\"\n\n[[zone]]\nname = \"test\"\n\n\
        [[monitor]]\nname = \"sip\"\ntype = \"tcp\"\nport = 5061\n\n\
        [[monitor]]\nname = \"web\"\ntype = \"tcp\"\nport = 443\n\n\
        [[pool]]\nname = \"p\"\nfqdn = \"p.test\"\nmonitor = \"sip\"\n\
        [[pool.member]]\nname = \"fe1\"\nfqdn = \"fe1.p.test\"\naddresses = [\"127.0.0.11\", \"::11\"]\n\
        [[pool.member]]\nname = \"fe2\"\naddress = \"127.0.0.12\"\n\n\
        [[virtual_service]]\nname = \"v4\"\naddress = \"127.0.0.1\"\nport = 443\npool = \"p\"\nmonitor = \"web\"\n\n\
        [[virtual_service]]\nname = \"v6\"\naddress = \"::1\"\nport = 443\npool = \"p\"\nmonitor = \"web\"\n";
    let config = config::from_toml(text, "dual.toml").unwrap_or_else(|e| panic!("{e}"));
    Inputs::new(Arc::new(config), 1, BTreeMap::new())
}

fn set_health(inputs: &mut Inputs, member: &str, monitor: &str, address: &str, up: bool) {
    assert!(inputs.apply(Update::Health {
        member: ("p".into(), member.into()),
        monitor: monitor.into(),
        address: address.parse().expect("ip"),
        status: status(Some(up)),
    }));
}

#[test]
fn a_dual_stack_member_is_answered_and_connected_per_address() {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let mut inputs = dual_stack_inputs();
    for (member, address) in [
        ("fe1", "127.0.0.11"),
        ("fe1", "::11"),
        ("fe2", "127.0.0.12"),
    ] {
        set_health(&mut inputs, member, "sip", address, true);
        set_health(&mut inputs, member, "web", address, true);
    }
    let view = PoolView::build(&inputs, 1);
    assert_eq!(
        view.dns["p.test"].addresses,
        vec![ip("127.0.0.11"), ip("::11"), ip("127.0.0.12")],
        "A and AAAA of the dual-stack member"
    );
    assert_eq!(
        view.dns["fe1.p.test"].addresses,
        vec![ip("127.0.0.11"), ip("::11")]
    );
    let service = |view: &PoolView, name: &str| -> (Vec<usize>, Vec<IpAddr>) {
        let s = view
            .services
            .iter()
            .find(|s| s.name == name)
            .expect("service");
        (s.candidates.clone(), s.connect_to.clone())
    };
    // Each listener's family first.
    assert_eq!(
        service(&view, "v4").1,
        vec![ip("127.0.0.11"), ip("127.0.0.12")]
    );
    assert_eq!(service(&view, "v6").1, vec![ip("::11"), ip("127.0.0.12")]);

    // Its IPv6 address goes down: the pool answers only its IPv4 one, the
    // member stays up, and the IPv6 service connects to IPv4.
    set_health(&mut inputs, "fe1", "sip", "::11", false);
    set_health(&mut inputs, "fe1", "web", "::11", false);
    let view = PoolView::build(&inputs, 2);
    assert_eq!(
        view.dns["p.test"].addresses,
        vec![ip("127.0.0.11"), ip("127.0.0.12")]
    );
    let fe1 = &view.pools[0].members[0];
    assert_eq!(fe1.health["sip"].state, Health::Up);
    assert_eq!(
        fe1.health_of("sip", ip("::11")).map(|h| h.state),
        Some(Health::Down)
    );
    assert!(fe1.eligible);
    assert_eq!(
        service(&view, "v6"),
        (vec![0, 1], vec![ip("127.0.0.11"), ip("127.0.0.12")])
    );

    // Both down: the member is down, with both reasons.
    set_health(&mut inputs, "fe1", "sip", "127.0.0.11", false);
    let view = PoolView::build(&inputs, 3);
    let fe1 = &view.pools[0].members[0];
    assert_eq!(fe1.health["sip"].state, Health::Down);
    assert_eq!(
        fe1.health["sip"].reason.as_deref(),
        Some("127.0.0.11: down; ::11: down")
    );
    assert_eq!(view.dns["p.test"].addresses, vec![ip("127.0.0.12")]);

    // Draining takes both out of the pool's answer; disabling out of its own too.
    set_health(&mut inputs, "fe1", "sip", "127.0.0.11", true);
    set_health(&mut inputs, "fe1", "sip", "::11", true);
    for (state, own) in [
        (AdminState::Draining, vec![ip("127.0.0.11"), ip("::11")]),
        (AdminState::Disabled, vec![]),
    ] {
        inputs.apply(Update::AdminState {
            member: ("p".into(), "fe1".into()),
            state,
        });
        let view = PoolView::build(&inputs, 4);
        assert_eq!(
            view.dns["p.test"].addresses,
            vec![ip("127.0.0.12")],
            "{state:?}"
        );
        assert_eq!(
            view.dns
                .get("fe1.p.test")
                .map(|a| a.addresses.clone())
                .unwrap_or_default(),
            own,
            "{state:?}"
        );
        assert!(view.services.iter().all(|s| !s.candidates.contains(&0)));
    }
}
