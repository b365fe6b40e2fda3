//! The command-line contract: check-config, run --config, export, admin
//! set-password, version.

use std::time::Duration;

use poolgate_e2e::{Poolgate, examples_dir, loopback_example, poolgate_cli};

fn text(output: &[u8]) -> String {
    String::from_utf8_lossy(output).into_owned()
}

#[test]
fn check_config_accepts_every_example() {
    for entry in std::fs::read_dir(examples_dir()).expect("examples") {
        let path = entry.expect("entry").path();
        let output = poolgate_cli(&["check-config", path.to_str().expect("utf-8")], "");
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            text(&output.stderr)
        );
    }
}

#[test]
fn check_config_names_file_line_column_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = std::fs::read_to_string(examples_dir().join("lync-pool.toml")).expect("example");
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        example.replacen("rise = 2", "rise = 2\nrisee = 3", 1),
    )
    .expect("write");
    let output = poolgate_cli(&["check-config", file.to_str().expect("utf-8")], "");
    assert_eq!(output.status.code(), Some(64));
    let stderr = text(&output.stderr);
    let expected = format!(
        "{}:42:1: monitor[0].risee: unknown field `risee`",
        file.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn dns_delegation_prints_the_parent_zone_records_or_names_the_bad_field() {
    let example = examples_dir().join("lync-pool.toml");
    let output = poolgate_cli(
        &[
            "dns",
            "delegation",
            "--config",
            example.to_str().expect("utf-8"),
        ],
        "",
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "; contoso.test: create these records in the parent zone test\n\
         contoso.test.\t3600\tIN\tNS\tns1.contoso.test.\n\
         ns1.contoso.test.\t3600\tIN\tA\t127.0.0.1\n"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wildcard.toml");
    let text_in = std::fs::read_to_string(&example).expect("example");
    let line = text_in
        .lines()
        .find(|line| line.starts_with("name_servers = "))
        .expect("the example names its name servers");
    std::fs::write(
        &file,
        text_in
            .replacen(&format!("{line}\n"), "", 1)
            .replacen("127.0.0.1:5353", "0.0.0.0:5353", 1),
    )
    .expect("write");
    let output = poolgate_cli(
        &[
            "dns",
            "delegation",
            "--config",
            file.to_str().expect("utf-8"),
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(64));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("zone[0].name_servers: required"),
        "{stderr}"
    );
}

#[test]
fn run_with_an_invalid_config_exits_64_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("var");
    let mut config = loopback_example();
    config["pool"][0]["monitor"] = "missing".into();
    let mut poolgate = Poolgate::start_with_config(&data, &config, &[]);
    let status = poolgate
        .wait_timeout(Duration::from_secs(10))
        .expect("exits");
    assert_eq!(status.code(), Some(64), "{}", poolgate.log().join("\n"));
    assert!(poolgate.log().join("\n").contains("pool[0].monitor"));
    assert!(
        !data.exists(),
        "an invalid config must not create the data dir"
    );
}

#[test]
fn export_round_trips_through_run_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("first");
    let mut poolgate = Poolgate::start_with_config(&first, &loopback_example(), &[]);
    poolgate.address("admin");
    let status = poolgate.terminate(Duration::from_secs(10));
    assert!(
        status.success(),
        "{status:?}\n{}",
        poolgate.log().join("\n")
    );

    let exported = poolgate_cli(
        &["export", "--data-dir", first.to_str().expect("utf-8")],
        "",
    );
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let exported = text(&exported.stdout);

    let second = dir.path().join("second");
    let config: toml::Table = exported.parse().expect("export is TOML");
    let mut poolgate = Poolgate::start_with_config(&second, &config, &[]);
    poolgate.address("admin");
    let status = poolgate.terminate(Duration::from_secs(10));
    assert!(
        status.success(),
        "{status:?}\n{}",
        poolgate.log().join("\n")
    );

    let again = poolgate_cli(
        &["export", "--data-dir", second.to_str().expect("utf-8")],
        "",
    );
    assert_eq!(text(&again.stdout), exported);
}

#[test]
fn export_of_an_empty_data_dir_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = poolgate_cli(
        &["export", "--data-dir", dir.path().to_str().expect("utf-8")],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("no poolgate data"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn admin_set_password_reads_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let weak = poolgate_cli(&["admin", "set-password", "--data-dir", data], "short\n");
    assert_eq!(weak.status.code(), Some(1));
    assert!(
        text(&weak.stderr).contains("at least"),
        "{}",
        text(&weak.stderr)
    );
    let ok = poolgate_cli(
        &["admin", "set-password", "--data-dir", data],
        "a long enough secret\n",
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let store = poolgate::store::Store::open(dir.path()).expect("open store");
    assert!(
        store
            .verify_password("admin", "a long enough secret")
            .expect("verify")
    );
}

#[test]
fn version_prints_build_info() {
    let output = poolgate_cli(&["version"], "");
    assert!(output.status.success());
    assert!(
        text(&output.stdout).starts_with("poolgate "),
        "{}",
        text(&output.stdout)
    );
}
