//! Active Directory / LDAP login against a real directory: slapd (Debian's
//! OpenLDAP) started by the test on loopback with a certificate from a test
//! CA, users in an admins and an operators group, and poolgate's settings
//! and test button driven through the API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use poolgate_e2e::{AdminClient, Poolgate, free_port, loopback_example};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const BASE: &str = "dc=contoso,dc=test";

/// A CA and a server certificate for 127.0.0.1 signed by it (PEMs).
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Contoso Test Directory CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let cert = params.signed_by(&key, &issuer).expect("leaf");
    Pki {
        ca: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// slapd on 127.0.0.1 (LDAP with StartTLS, and LDAPS), killed on drop.
struct Slapd {
    child: Child,
    ldap: u16,
    ldaps: u16,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ENTRIES: &str = "dn: dc=contoso,dc=test
objectClass: dcObject
objectClass: organization
o: Contoso
dc: contoso

dn: ou=people,dc=contoso,dc=test
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=contoso,dc=test
objectClass: organizationalUnit
ou: groups

dn: cn=poolgate,dc=contoso,dc=test
objectClass: person
cn: poolgate
sn: service
userPassword: service-secret

dn: uid=alice,ou=people,dc=contoso,dc=test
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Admin
userPassword: alice-secret

dn: uid=oscar,ou=people,dc=contoso,dc=test
objectClass: inetOrgPerson
uid: oscar
cn: Oscar
sn: Operator
userPassword: oscar-secret

dn: uid=nina,ou=people,dc=contoso,dc=test
objectClass: inetOrgPerson
uid: nina
cn: Nina
sn: Nobody
userPassword: nina-secret

dn: cn=poolgate-admins,ou=groups,dc=contoso,dc=test
objectClass: groupOfNames
cn: poolgate-admins
member: uid=alice,ou=people,dc=contoso,dc=test

dn: cn=poolgate-operators,ou=groups,dc=contoso,dc=test
objectClass: groupOfNames
cn: poolgate-operators
member: uid=oscar,ou=people,dc=contoso,dc=test
";

impl Slapd {
    fn start(dir: &Path, pki: &Pki) -> Self {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        for (name, text) in [
            ("ca.pem", &pki.ca),
            ("cert.pem", &pki.cert),
            ("key.pem", &pki.key),
        ] {
            std::fs::write(dir.join(name), text).expect("write PEM");
        }
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             pidfile {dir}/slapd.pid\n\
             TLSCACertificateFile {dir}/ca.pem\nTLSCertificateFile {dir}/cert.pem\nTLSCertificateKeyFile {dir}/key.pem\n\
             database mdb\nmaxsize 16777216\nsuffix \"{BASE}\"\nrootdn \"cn=admin,{BASE}\"\nrootpw admin-secret\ndirectory {data}\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by * read\n",
            dir = dir.display(),
            data = data.display(),
        );
        let conf_path = dir.join("slapd.conf");
        std::fs::write(&conf_path, conf).expect("slapd.conf");
        let ldif = dir.join("entries.ldif");
        std::fs::write(&ldif, ENTRIES).expect("ldif");
        let added = Command::new("slapadd")
            .arg("-f")
            .arg(&conf_path)
            .arg("-l")
            .arg(&ldif)
            .output()
            .expect("slapadd (Debian's slapd package)");
        assert!(
            added.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let (ldap, ldaps) = (free_port(), free_port());
        let child = Command::new("slapd")
            .arg("-d")
            .arg("0")
            .arg("-f")
            .arg(&conf_path)
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{ldap}/ ldaps://127.0.0.1:{ldaps}/"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start slapd");
        let slapd = Self { child, ldap, ldaps };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", ldaps)).is_err() {
            assert!(Instant::now() < deadline, "slapd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        slapd
    }
}

fn put_ca(admin: &AdminClient, name: &str, pem: &str) {
    let response = admin
        .request(reqwest::Method::PUT, &format!("/api/v1/ca-bundles/{name}"))
        .header("Content-Type", "application/x-pem-file")
        .body(pem.to_owned())
        .send()
        .expect("PUT CA bundle");
    assert_eq!(response.status().as_u16(), 200, "{:?}", response.text());
}

fn settings(slapd: &Slapd) -> Value {
    json!({
        "servers": [format!("ldaps://127.0.0.1:{}", slapd.ldaps)],
        "ca_bundle": "directory",
        "bind": "search",
        "bind_dn": format!("cn=poolgate,{BASE}"),
        "bind_password": "service-secret",
        "user_base": format!("ou=people,{BASE}"),
        "user_attribute": "uid",
        "group_base": format!("ou=groups,{BASE}"),
        "groups": [
            { "group": format!("cn=poolgate-admins,ou=groups,{BASE}"), "role": "admin" },
            { "group": format!("cn=poolgate-operators,ou=groups,{BASE}"), "role": "operator" },
        ],
        "timeout_ms": 3000,
    })
}

fn test_login(admin: &AdminClient, user: &str, password: &str, settings: Option<&Value>) -> Value {
    let mut body = json!({ "username": user, "password": password });
    if let Some(settings) = settings {
        body["settings"] = settings.clone();
    }
    let response = admin.post("/api/v1/auth/ldap/test", &body);
    assert_eq!(response.status().as_u16(), 200);
    response.json().expect("JSON")
}

fn error_of(result: &Value) -> String {
    assert_eq!(result["ok"], false, "{result}");
    result["error"].as_str().expect("error text").to_owned()
}

#[test]
fn directory_users_map_to_roles_and_every_failure_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let slapd = Slapd::start(&dir.path().join("slapd"), &pki);
    let poolgate = Poolgate::start_with_config(&dir.path().join("var"), &loopback_example(), &[]);
    let admin = AdminClient::setup_and_login(poolgate.address("admin"), PASSWORD);

    // Settings are checked field by field; nothing is stored.
    let mut bad = settings(&slapd);
    bad["ca_bundle"] = "directory".into();
    bad["servers"] = json!(["dc1.contoso.test"]);
    bad["groups"][0]["role"] = "root".into();
    let response = admin.put("/api/v1/auth/ldap", &bad);
    assert_eq!(response.status().as_u16(), 422);
    let problems: Value = response.json().expect("JSON");
    let fields: Vec<&str> = problems["fields"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        ["servers[0]", "ca_bundle", "groups[0].role"],
        "{problems}"
    );
    assert!(admin.json("/api/v1/auth/ldap")["settings"].is_null());

    put_ca(&admin, "directory", &pki.ca);
    let stored = admin.put("/api/v1/auth/ldap", &settings(&slapd));
    assert_eq!(stored.status().as_u16(), 200);
    let shown = admin.json("/api/v1/auth/ldap");
    assert_eq!(shown["settings"]["bind_password"], "********", "{shown}");

    // Each group gives its role; the group lists are read from the directory.
    let alice = test_login(&admin, "alice", "alice-secret", None);
    assert_eq!(alice["ok"], true, "{alice}");
    assert_eq!(alice["login"]["role"], "admin");
    assert_eq!(alice["login"]["dn"], format!("uid=alice,ou=people,{BASE}"));
    let oscar = test_login(&admin, "oscar", "oscar-secret", None);
    assert_eq!(oscar["login"]["role"], "operator", "{oscar}");

    // Refusals, each with its reason.
    let nina = error_of(&test_login(&admin, "nina", "nina-secret", None));
    assert!(nina.contains("none of the mapped groups"), "{nina}");
    let wrong = error_of(&test_login(&admin, "alice", "not-her-password", None));
    assert!(wrong.contains("invalid credentials"), "{wrong}");
    let empty = error_of(&test_login(&admin, "alice", "", None));
    assert!(empty.contains("empty password"), "{empty}");
    let hostile = error_of(&test_login(&admin, "*)(uid=*", "alice-secret", None));
    assert!(
        hostile.contains("no entry"),
        "a filter made of the name finds nobody: {hostile}"
    );
    let star = error_of(&test_login(&admin, "*", "alice-secret", None));
    assert!(star.contains("no entry"), "{star}");

    // Logging in: the directory's users get their groups' roles.
    let address = poolgate.address("admin");
    let session = |user: &str, password: &str| -> u16 {
        AdminClient::new(address)
            .post(
                "/api/v1/session",
                &json!({ "username": user, "password": password }),
            )
            .status()
            .as_u16()
    };
    let mut oscar = AdminClient::new(address);
    oscar.login("oscar", "oscar-secret");
    assert_eq!(oscar.json("/api/v1/session")["role"], "operator");
    let drain = oscar.post("/api/v1/pools/pool01/members/fe02/drain", &json!({}));
    assert_eq!(drain.status().as_u16(), 200, "an operator drains");
    let config = oscar.json("/api/v1/config");
    assert_eq!(oscar.put("/api/v1/config", &config).status().as_u16(), 403);
    let mut alice = AdminClient::new(address);
    alice.login("alice", "alice-secret");
    assert_eq!(alice.json("/api/v1/session")["role"], "admin");
    for (user, password) in [
        ("nina", "nina-secret"),
        ("alice", "not-her-password"),
        ("alice", ""),
        ("*)(uid=*", "alice-secret"),
    ] {
        assert_eq!(session(user, password), 401, "{user}");
    }
    // A directory user has no password here: only the directory logs it in.
    let users = admin.json("/api/v1/users");
    assert!(users.to_string().contains("oscar"), "{users}");

    // StartTLS on the plain port, binding as the user through a DN template.
    let mut starttls = settings(&slapd);
    starttls["servers"] = json!([format!("ldap://127.0.0.1:{}", slapd.ldap)]);
    starttls["bind"] = "user".into();
    starttls["user_bind"] = format!("uid={{user}},ou=people,{BASE}").into();
    let alice = test_login(&admin, "alice", "alice-secret", Some(&starttls));
    assert_eq!(alice["login"]["role"], "admin", "{alice}");

    // A directory whose certificate another CA signed is refused, named.
    let other = poolgate_e2e_other_ca();
    put_ca(&admin, "other", &other);
    let mut foreign = settings(&slapd);
    foreign["ca_bundle"] = "other".into();
    let refused = error_of(&test_login(&admin, "alice", "alice-secret", Some(&foreign)));
    assert!(
        refused.contains("unknown issuer") && refused.contains("Contoso Test Directory CA"),
        "{refused}"
    );

    // A server down is passed over for the next one; all down says so.
    let mut fallback = settings(&slapd);
    let closed = free_port();
    fallback["servers"] = json!([
        format!("ldaps://127.0.0.1:{closed}"),
        format!("ldaps://127.0.0.1:{}", slapd.ldaps)
    ]);
    assert_eq!(
        test_login(&admin, "alice", "alice-secret", Some(&fallback))["login"]["role"],
        "admin"
    );
    drop(slapd);
    let down = error_of(&test_login(&admin, "alice", "alice-secret", None));
    assert!(down.starts_with("no directory server answered"), "{down}");
    // With the directory down, the local admin still logs in; directory users do not.
    assert_eq!(session("admin", PASSWORD), 200);
    assert_eq!(session("alice", "alice-secret"), 401);

    // Turned off.
    assert_eq!(admin.delete("/api/v1/auth/ldap").status().as_u16(), 200);
    assert!(admin.json("/api/v1/auth/ldap")["settings"].is_null());
}

/// Another CA's certificate, which signed nothing slapd serves.
fn poolgate_e2e_other_ca() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Fabrikam CA");
    params.self_signed(&key).expect("CA").pem()
}
