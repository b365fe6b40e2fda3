//! Every change goes through one control task: concurrent config PUTs and
//! member actions are committed, published and logged in one order, and
//! afterwards the published view (`/api/v1/status`), the stored config
//! (`/api/v1/config`, `If-Match`) and the event log (`/api/v1/events`) agree
//! with the last change committed.

use std::collections::BTreeMap;

use poolgate_e2e::{AdminClient, Poolgate, loopback_example};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const MEMBERS: [&str; 3] = ["fe01", "fe02", "fe03"];
const ACTIONS: [(&str, &str); 3] = [
    ("drain", "draining"),
    ("disable", "disabled"),
    ("enable", "enabled"),
];

/// What one request's reply said.
#[derive(Debug, Clone)]
enum Reply {
    Config {
        version: i64,
        ttl: u64,
    },
    Member {
        member: String,
        previous: String,
        state: String,
        generation: u64,
    },
}

fn put_config(client: &AdminClient, config: &Value, if_match: Option<i64>) -> (u16, Value) {
    let mut request = client.request(Method::PUT, "/api/v1/config").json(config);
    if let Some(version) = if_match {
        request = request.header("if-match", format!("\"{version}\""));
    }
    let response = request.send().expect("PUT");
    let status = response.status().as_u16();
    (status, response.json().expect("JSON"))
}

/// Events after `after`, oldest first.
fn events_after(client: &AdminClient, after: i64) -> Vec<Value> {
    client.json(&format!("/api/v1/events?after={after}&limit=1000"))["events"]
        .as_array()
        .expect("events")
        .clone()
}

#[test]
fn concurrent_changes_agree_everywhere_in_commit_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let poolgate = Poolgate::start_with_config(&dir.path().join("var"), &loopback_example(), &[]);
    let client = AdminClient::setup_and_login(poolgate.address("admin"), PASSWORD);
    let base = client.json("/api/v1/config");
    let before = client.json("/api/v1/status");
    let start_version = before["config_version"].as_i64().expect("config version");
    let initial: BTreeMap<String, String> = MEMBERS
        .iter()
        .enumerate()
        .map(|(index, member)| {
            let state = before["pools"][0]["members"][index]["admin_state"]
                .as_str()
                .expect("admin state");
            ((*member).to_owned(), state.to_owned())
        })
        .collect();
    let newest = client.json("/api/v1/events?limit=1")["events"][0]["id"]
        .as_i64()
        .unwrap_or(0);

    // Twenty changes at once: config PUTs (each a distinct TTL) and member
    // actions on three members.
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20u64)
            .map(|i| {
                let (client, base) = (&client, &base);
                scope.spawn(move || {
                    if i % 2 == 0 {
                        let ttl = 200 + i;
                        let mut config = base.clone();
                        config["dns"]["ttl"] = json!(ttl);
                        let (status, body) = put_config(client, &config, None);
                        assert_eq!(status, 200, "{body}");
                        Reply::Config {
                            version: body["version"].as_i64().expect("version"),
                            ttl,
                        }
                    } else {
                        let member = MEMBERS[(i / 2 % 3) as usize];
                        let (action, state) = ACTIONS[(i / 6 % 3) as usize];
                        let response = client.post(
                            &format!("/api/v1/pools/pool01/members/{member}/{action}"),
                            &json!({}),
                        );
                        assert_eq!(response.status().as_u16(), 200, "{member} {action}");
                        let body: Value = response.json().expect("JSON");
                        assert_eq!(body["admin_state"], state, "{body}");
                        Reply::Member {
                            member: member.to_owned(),
                            previous: body["previous"].as_str().expect("previous").to_owned(),
                            state: state.to_owned(),
                            generation: body["generation"].as_u64().expect("generation"),
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request thread"))
            .collect()
    });

    // Config versions: one per PUT, without gaps, in the order of their events.
    let mut versions: Vec<i64> = replies
        .iter()
        .filter_map(|r| match r {
            Reply::Config { version, .. } => Some(*version),
            Reply::Member { .. } => None,
        })
        .collect();
    versions.sort_unstable();
    let expected: Vec<i64> = (start_version + 1..=start_version + 10).collect();
    assert_eq!(versions, expected);
    let events = events_after(&client, newest);
    let logged_versions: Vec<i64> = events
        .iter()
        .filter(|e| e["kind"] == "config")
        .map(|e| e["detail"]["version"].as_i64().expect("version"))
        .collect();
    assert_eq!(logged_versions, expected, "config events in commit order");

    // Member actions: per member, the events chain (each starts where the
    // one before ended) and match the replies in the order the publisher
    // saw them (generation; a no-op follows the change it repeats).
    let mut final_states = initial.clone();
    for member in MEMBERS {
        let logged: Vec<(String, String)> = events
            .iter()
            .filter(|e| e["kind"] == "admin" && e["member"] == member)
            .map(|e| {
                (
                    e["detail"]["from"].as_str().expect("from").to_owned(),
                    e["detail"]["to"].as_str().expect("to").to_owned(),
                )
            })
            .collect();
        let mut at = initial[member].clone();
        for (from, to) in &logged {
            assert_eq!(from, &at, "{member}: {logged:?}");
            at.clone_from(to);
        }
        final_states.insert(member.to_owned(), at);
        let mut replied: Vec<(u64, bool, String, String)> = replies
            .iter()
            .filter_map(|r| match r {
                Reply::Member {
                    member: m,
                    previous,
                    state,
                    generation,
                } if m == member => Some((
                    *generation,
                    previous == state,
                    previous.clone(),
                    state.clone(),
                )),
                _ => None,
            })
            .collect();
        replied.sort();
        let replied: Vec<(String, String)> = replied
            .into_iter()
            .map(|(_, _, previous, state)| (previous, state))
            .collect();
        assert_eq!(
            replied, logged,
            "{member}: replies in publish order = events"
        );
    }

    // The published view, the stored config and the event log agree on the
    // final state: the last committed config and each member's last action.
    let status = client.json("/api/v1/status");
    let last = *versions.last().expect("a version");
    assert_eq!(status["config_version"], last);
    assert_eq!(client.json("/api/v1/health")["config_version"], last);
    let last_ttl = replies
        .iter()
        .find_map(|r| match r {
            Reply::Config { version, ttl } if *version == last => Some(*ttl),
            _ => None,
        })
        .expect("the last PUT");
    let config = client.json("/api/v1/config");
    assert_eq!(config["dns"]["ttl"], last_ttl);
    for (index, member) in MEMBERS.iter().enumerate() {
        let state = &final_states[*member];
        assert_eq!(
            status["pools"][0]["members"][index]["admin_state"], *state,
            "{member} in the view"
        );
        assert_eq!(
            config["pool"][0]["member"][index]["state"], *state,
            "{member} in the config"
        );
    }
    let export = client.get("/api/v1/config/export").text().expect("export");
    assert!(export.contains(&format!("ttl = {last_ttl}")), "{export}");

    // If-Match: a change reviewed against an older version is refused and
    // writes nothing; against the current one it lands.
    let mut reviewed = config.clone();
    reviewed["dns"]["ttl"] = json!(77);
    let (status, body) = put_config(&client, &reviewed, Some(last - 1));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("version {last}"))),
        "{body}"
    );
    assert_eq!(client.json("/api/v1/config"), config, "nothing was written");
    let (status, body) = put_config(&client, &reviewed, Some(last));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], last + 1);

    // Five changes reviewed against the same version race: one lands.
    let current = last + 1;
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..5u64)
            .map(|i| {
                let (client, config) = (&client, &config);
                scope.spawn(move || {
                    let mut config = config.clone();
                    config["dns"]["ttl"] = json!(300 + i);
                    put_config(client, &config, Some(current)).0
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request thread"))
            .collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(client.json("/api/v1/status")["config_version"], current + 1);
    let events = events_after(&client, newest);
    let config_events = events.iter().filter(|e| e["kind"] == "config").count();
    assert_eq!(config_events, 12, "one event per committed version");
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}
