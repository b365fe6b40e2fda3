use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

fn names(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("fe{i:02}")).collect()
}

fn uniform(names: &[String]) -> Vec<Candidate<'_>> {
    names
        .iter()
        .map(|name| Candidate { name, weight: 1 })
        .collect()
}

fn home_of(members: &[Candidate<'_>], aor: &str) -> String {
    let logical = logical_sequence(members, aor);
    members[logical[0]].name.to_owned()
}

fn user(i: usize) -> String {
    format!("user{i}@contoso.com")
}

#[test]
fn canonical_aor_strips_everything_but_user_and_host() {
    let cases = [
        ("sip:alice@contoso.com", "alice@contoso.com"),
        ("SIP:Alice@Contoso.COM", "alice@contoso.com"),
        (
            "sips:alice@contoso.com:5061;transport=tls",
            "alice@contoso.com",
        ),
        ("<sip:alice@contoso.com>;tag=1234", "alice@contoso.com"),
        (
            "\"Alice <A>\" <sip:alice@contoso.com;maddr=x>",
            "alice@contoso.com",
        ),
        ("Alice<sip:alice@contoso.com>", "alice@contoso.com"),
        ("sip:alice:secret@contoso.com", "alice@contoso.com"),
        ("sip:alice@contoso.com?subject=x", "alice@contoso.com"),
        ("alice@contoso.com", "alice@contoso.com"),
        ("sip:contoso.com", "contoso.com"),
        ("contoso.com:5060", "contoso.com"),
        ("sip:192.0.2.13:5061;transport=tls", "192.0.2.13"),
        ("sip:192.0.2.13", "192.0.2.13"),
        ("sip:alice@[2001:DB8::10]:5070", "alice@[2001:db8::10]"),
        (
            "sip:user;par=u%40example.net@example.com",
            "user;par=u%40example.net@example.com",
        ),
        ("  <sip:bob@fabrikam.com>  ", "bob@fabrikam.com"),
    ];
    for (uri, expected) in cases {
        assert_eq!(canonical_aor(uri).as_deref(), Ok(expected), "{uri}");
    }
    assert_eq!(canonical_aor(""), Err(RegistrarError::Empty));
    assert_eq!(canonical_aor("sip:alice@"), Err(RegistrarError::NoHost));
    assert_eq!(
        canonical_aor("\"x\" <sip:alice@contoso.com"),
        Err(RegistrarError::Unterminated)
    );
}

#[test]
fn backup_mode_when_home_is_not_eligible() {
    let names = names(4);
    let members = uniform(&names);
    let aor = "alice@contoso.com";
    let all = rank(&members, aor, |_| true);
    assert!(!all.backup_mode());
    assert_eq!(all.home(), all.serving());
    let home = all.home().expect("four members");
    let failed = rank(&members, aor, |i| i != home);
    assert!(failed.backup_mode());
    assert_eq!(failed.home(), Some(home));
    assert_eq!(failed.serving(), Some(all.logical[1]));
    let none = rank(&members, aor, |_| false);
    assert_eq!(none.serving(), None);
    assert!(none.backup_mode());
}

/// Removing one of 10 members moves only its users, spread so that no
/// survivor receives more than 1.5x its fair share.
#[test]
fn removing_a_member_moves_only_its_users_evenly() {
    const USERS: usize = 100_000;
    let names = names(10);
    let members = uniform(&names);
    let homes: Vec<String> = (0..USERS).map(|i| home_of(&members, &user(i))).collect();
    for removed in ["fe03", "fe10"] {
        let survivors: Vec<Candidate<'_>> = members
            .iter()
            .copied()
            .filter(|m| m.name != removed)
            .collect();
        let mut received: BTreeMap<String, usize> = BTreeMap::new();
        let mut moved = 0;
        for (i, before) in homes.iter().enumerate() {
            let after = home_of(&survivors, &user(i));
            if before == removed {
                moved += 1;
                *received.entry(after).or_default() += 1;
            } else {
                assert_eq!(&after, before, "user{i} moved although its home survived");
            }
        }
        let fair = moved as f64 / survivors.len() as f64;
        assert_eq!(
            received.len(),
            survivors.len(),
            "every survivor takes a share"
        );
        for (member, count) in &received {
            assert!(
                (*count as f64) <= 1.5 * fair,
                "{member} received {count} of {moved} moved users (fair share {fair:.0})"
            );
        }
    }
}

/// Adding an 11th member moves about 1/11 of users, all of them to it.
#[test]
fn adding_a_member_moves_about_one_in_n_plus_one() {
    const USERS: usize = 50_000;
    let names = names(11);
    let before = uniform(&names[..10]);
    let after = uniform(&names);
    let mut moved = 0;
    for i in 0..USERS {
        let old = home_of(&before, &user(i));
        let new = home_of(&after, &user(i));
        if old != new {
            assert_eq!(new, "fe11", "a moved user goes to the new member");
            moved += 1;
        }
    }
    let fraction = moved as f64 / USERS as f64;
    let expected = 1.0 / 11.0;
    assert!(
        (fraction - expected).abs() < 0.1 * expected,
        "moved {fraction:.4}, expected about {expected:.4}"
    );
}

#[test]
fn weights_share_users_proportionally() {
    const USERS: usize = 40_000;
    let members = [
        Candidate {
            name: "a",
            weight: 1,
        },
        Candidate {
            name: "b",
            weight: 2,
        },
        Candidate {
            name: "c",
            weight: 1,
        },
    ];
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..USERS {
        *counts.entry(home_of(&members, &user(i))).or_default() += 1;
    }
    let share = |name: &str| counts[name] as f64 / USERS as f64;
    assert!((share("b") - 0.5).abs() < 0.02, "{counts:?}");
    assert!((share("a") - 0.25).abs() < 0.02, "{counts:?}");
    assert!((share("c") - 0.25).abs() < 0.02, "{counts:?}");
}

proptest! {
    /// physical ⊆ logical with order kept; logical is a permutation; the
    /// ranking does not depend on the order members are listed in.
    #[test]
    fn physical_is_an_ordered_subset_of_logical(
        weights in prop::collection::vec(1u32..=4, 1..33),
        eligible in prop::collection::vec(any::<bool>(), 33),
        user in "[a-z0-9.]{1,12}",
        rotate in 0usize..33,
    ) {
        let names: Vec<String> = (0..weights.len()).map(|i| format!("m{i}")).collect();
        let members: Vec<Candidate<'_>> = names
            .iter()
            .zip(&weights)
            .map(|(name, &weight)| Candidate { name, weight })
            .collect();
        let aor = format!("{user}@contoso.com");
        let ranking = rank(&members, &aor, |i| eligible[i]);
        let mut sorted = ranking.logical.clone();
        sorted.sort_unstable();
        prop_assert_eq!(sorted, (0..members.len()).collect::<Vec<_>>());
        let mut cursor = ranking.logical.iter();
        for index in &ranking.physical {
            prop_assert!(eligible[*index]);
            prop_assert!(cursor.any(|l| l == index), "physical order differs from logical");
        }
        prop_assert_eq!(
            ranking.physical.len(),
            (0..members.len()).filter(|&i| eligible[i]).count()
        );

        let mut rotated = members.clone();
        rotated.rotate_left(rotate % members.len());
        let by_name = |m: &[Candidate<'_>], seq: Vec<usize>| -> Vec<String> {
            seq.into_iter().map(|i| m[i].name.to_owned()).collect()
        };
        prop_assert_eq!(
            by_name(&members, logical_sequence(&members, &aor)),
            by_name(&rotated, logical_sequence(&rotated, &aor))
        );
    }
}

// Golden vectors: a fixed member set and a few hundred URIs pinned to their
// logical sequences. A failure here means users would move: bump
// HASH_VERSION and regenerate on purpose (POOLGATE_REGENERATE_GOLDEN=1).

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/sip/testdata")
        .join(format!("registrar-golden-v{HASH_VERSION}.txt"))
}

fn golden_uris() -> Vec<String> {
    let domains = [
        "contoso.com",
        "fabrikam.com",
        "Example.ORG",
        "[2001:db8::5]",
    ];
    let forms = [
        "sip:{u}@{d}",
        "sips:{u}@{d}:5061;transport=tls",
        "\"User {u}\" <sip:{u}@{d}>;tag=9",
        "{u}@{d}",
    ];
    (0..300)
        .map(|i| {
            let user = match i % 3 {
                0 => format!("user{i}"),
                1 => format!("First.Last{i}"),
                _ => format!("+1425555{i:04}"),
            };
            forms[i % forms.len()]
                .replace("{u}", &user)
                .replace("{d}", domains[(i / 4) % domains.len()])
        })
        .collect()
}

fn golden_sets() -> Vec<(&'static str, Vec<Candidate<'static>>)> {
    const TEN: [&str; 10] = [
        "fe01", "fe02", "fe03", "fe04", "fe05", "fe06", "fe07", "fe08", "fe09", "fe10",
    ];
    vec![
        (
            "uniform",
            TEN.iter()
                .map(|name| Candidate { name, weight: 1 })
                .collect(),
        ),
        (
            "weighted",
            vec![
                Candidate {
                    name: "fe01",
                    weight: 1,
                },
                Candidate {
                    name: "fe02",
                    weight: 2,
                },
                Candidate {
                    name: "fe03",
                    weight: 3,
                },
                Candidate {
                    name: "fe04",
                    weight: 1,
                },
            ],
        ),
    ]
}

fn golden_text() -> String {
    let mut text = format!(
        "# Registrar golden vectors, hash version {HASH_VERSION}.\n\
         # set<TAB>uri<TAB>canonical AoR<TAB>logical sequence\n\
         # uniform = fe01..fe10 weight 1; weighted = fe01:1 fe02:2 fe03:3 fe04:1\n"
    );
    for (set, members) in golden_sets() {
        for uri in golden_uris() {
            let aor = canonical_aor(&uri).expect("golden URIs are valid");
            let sequence: Vec<&str> = logical_sequence(&members, &aor)
                .into_iter()
                .map(|i| members[i].name)
                .collect();
            writeln!(text, "{set}\t{uri}\t{aor}\t{}", sequence.join(",")).expect("string write");
        }
    }
    text
}

#[test]
fn golden_vectors_pin_the_ranking() {
    let path = golden_path();
    let actual = golden_text();
    if std::env::var_os("POOLGATE_REGENERATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).expect("write golden file");
    }
    let expected = std::fs::read_to_string(&path).expect("golden file is committed");
    for (line, (want, got)) in expected.lines().zip(actual.lines()).enumerate() {
        assert_eq!(got, want, "golden line {} changed", line + 1);
    }
    assert_eq!(expected.lines().count(), actual.lines().count());
    assert_eq!(expected.lines().count(), 3 + 600);
}

#[test]
fn drain_fraction_matches_the_users_who_would_move() {
    let config = crate::config::from_toml(crate::sip::redirect::tests::POOL_CONFIG, "test.toml")
        .expect("valid config");
    let inputs = crate::state::Inputs::new(std::sync::Arc::new(config), 1, BTreeMap::new());
    let view = PoolView::build(&inputs, 1);
    let pool = &view.pools[0];
    const USERS: usize = 20_000;
    for member in 0..pool.members.len() {
        let moved = (0..USERS)
            .filter(|&i| rank_pool(pool, &user(i)).serving() == Some(member))
            .count();
        let expected = drain_fraction(pool, member);
        assert!((expected - 0.25).abs() < 1e-9);
        assert!(
            (moved as f64 / USERS as f64 - expected).abs() < 0.02,
            "{member}: {moved} of {USERS}"
        );
    }
    assert_eq!(drain_fraction(pool, 99), 0.0);
}

#[test]
fn a_pools_sip_domains_are_its_names_and_the_domains_they_lie_in() {
    let config = crate::config::from_toml(crate::sip::redirect::tests::POOL_CONFIG, "test.toml")
        .expect("valid config");
    let inputs = crate::state::Inputs::new(std::sync::Arc::new(config), 1, BTreeMap::new());
    let view = PoolView::build(&inputs, 1);
    let pool = &view.pools[0];
    for host in [
        "contoso.com",
        "pool01.contoso.com",
        "sip.contoso.com",
        "CONTOSO.com",
        "contoso.com.",
    ] {
        assert!(serves_domain(pool, host), "{host}");
    }
    for host in [
        "com",
        "",
        "fabrikam.com",
        "evil-contoso.com",
        "xcontoso.com",
        "other.contoso.com",
        "127.0.0.1",
        "pool01.contoso.com.evil.test",
    ] {
        assert!(!serves_domain(pool, host), "{host}");
    }
    assert!(serves_domain(&view.pools[1], "fabrikam.com"));
}
