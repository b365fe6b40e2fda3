//! What an admin creates in the parent zone (Active Directory DNS, usually)
//! to hand a single name such as `pool01.contoso.com` to poolgate: for each
//! configured zone, its NS records and the addresses of the name servers
//! that lie in the parent zone (the glue for those inside the delegated
//! zone), in zone-file form. `poolgate dns delegation --config FILE` prints
//! it. Pure: a validated `Config` in, text out.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::answer::in_zone;
use crate::config::{Config, Zone};

/// The parent zone of `zone`: its name without the first label (`.` for a
/// top-level name).
fn parent(zone: &str) -> &str {
    zone.split_once('.').map_or(".", |(_, parent)| parent)
}

/// The delegation records of every zone of `config`, one block per zone,
/// each opened by a comment line naming the parent zone it belongs in.
pub fn records(config: &Config) -> String {
    let mut out = String::new();
    for (i, zone) in config.zones.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        zone_records(zone, &mut out);
    }
    out
}

fn zone_records(zone: &Zone, out: &mut String) {
    let parent = parent(&zone.name);
    let ttl = zone.ttl;
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "; {}: create these records in the parent zone {parent}",
        zone.name
    );
    for server in &zone.name_servers {
        let _ = writeln!(out, "{}.\t{ttl}\tIN\tNS\t{}.", zone.name, server.name);
    }
    for server in &zone.name_servers {
        if parent != "." && !in_zone(&server.name, parent) {
            let _ = writeln!(
                out,
                "; {} is outside {parent}: its addresses come from its own zone",
                server.name
            );
            continue;
        }
        for address in &server.addresses {
            let rtype = match address {
                IpAddr::V4(_) => "A",
                IpAddr::V6(_) => "AAAA",
            };
            let _ = writeln!(out, "{}.\t{ttl}\tIN\t{rtype}\t{address}", server.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;

    #[test]
    fn prints_ns_and_glue_per_zone_with_its_parent() {
        let config = from_toml(
            r#"
[listen]
admin = "127.0.0.1:0"
dns = ["127.0.0.53:53"]

[[zone]]
name = "pool01.contoso.test"
ttl = 600
name_servers = [
    { name = "ns1.pool01.contoso.test", addresses = ["127.0.0.1", "::1"] },
    { name = "ns2.contoso.test", addresses = ["127.0.0.2"] },
    { name = "ns.example.org" },
]

[[zone]]
name = "sip.contoso.test"
"#,
            "f.toml",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            records(&config),
            "; pool01.contoso.test: create these records in the parent zone contoso.test\n\
             pool01.contoso.test.\t600\tIN\tNS\tns1.pool01.contoso.test.\n\
             pool01.contoso.test.\t600\tIN\tNS\tns2.contoso.test.\n\
             pool01.contoso.test.\t600\tIN\tNS\tns.example.org.\n\
             ns1.pool01.contoso.test.\t600\tIN\tA\t127.0.0.1\n\
             ns1.pool01.contoso.test.\t600\tIN\tAAAA\t::1\n\
             ns2.contoso.test.\t600\tIN\tA\t127.0.0.2\n\
             ; ns.example.org is outside contoso.test: its addresses come from its own zone\n\
             \n\
             ; sip.contoso.test: create these records in the parent zone contoso.test\n\
             sip.contoso.test.\t3600\tIN\tNS\tns.sip.contoso.test.\n\
             ns.sip.contoso.test.\t3600\tIN\tA\t127.0.0.53\n"
        );
    }
}
