//! Build information for `poolgate version`, and the version itself:
//! `POOLGATE_BUILD_VERSION` (semver) overrides the crate's, so the image
//! test can build a newer release of the same source to upgrade to.

use std::process::Command;

fn main() {
    let commit = std::env::var("POOLGATE_GIT_COMMIT").ok().or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    println!(
        "cargo:rustc-env=POOLGATE_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".to_owned())
    );
    println!(
        "cargo:rustc-env=POOLGATE_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );
    println!(
        "cargo:rustc-env=POOLGATE_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    let version = std::env::var("POOLGATE_BUILD_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| std::env::var("CARGO_PKG_VERSION").expect("cargo sets it"));
    let core = version.split(['-', '+']).next().unwrap_or_default();
    assert!(
        core.split('.').count() == 3 && core.split('.').all(|n| n.parse::<u64>().is_ok()),
        "POOLGATE_BUILD_VERSION must be a semver version, not {version:?}"
    );
    println!("cargo:rustc-env=POOLGATE_VERSION={version}");
    println!("cargo:rerun-if-env-changed=POOLGATE_BUILD_VERSION");
    println!("cargo:rerun-if-env-changed=POOLGATE_GIT_COMMIT");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
}
