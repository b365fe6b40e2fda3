use super::*;

fn settings() -> LdapSettings {
    LdapSettings {
        servers: vec![
            "ldaps://dc1.contoso.test".into(),
            "ldap://dc2.contoso.test:389".into(),
        ],
        ca_bundle: "contoso".into(),
        bind: BindMode::User,
        user_bind: Some("{user}@contoso.test".into()),
        bind_dn: None,
        bind_password: None,
        user_base: "dc=contoso,dc=test".into(),
        user_attribute: default_user_attribute(),
        group_base: None,
        groups: vec![GroupRole {
            group: "cn=poolgate-admins,dc=contoso,dc=test".into(),
            role: "admin".into(),
        }],
        timeout_ms: default_timeout_ms(),
    }
}

fn bundles() -> CaBundles {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).expect("ca").pem();
    let bundle = crate::health::ca::parse("contoso", &pem).expect("bundle");
    CaBundles::from([("contoso".to_owned(), Arc::new(bundle))])
}

fn fields(settings: &LdapSettings) -> Vec<String> {
    validate(settings, &bundles())
        .into_iter()
        .map(|p| p.field)
        .collect()
}

#[test]
fn good_settings_pass_and_each_problem_names_its_field() {
    assert_eq!(fields(&settings()), Vec::<String>::new());
    let mut bad = settings();
    bad.servers = vec![
        "dc1.contoso.test".into(),
        "ldaps://dc1/x".into(),
        "ldap://dc1:99999".into(),
    ];
    bad.ca_bundle = "nope".into();
    bad.user_bind = Some("contoso\\someone".into());
    bad.user_base = " ".into();
    bad.user_attribute = "uid)(x".into();
    bad.groups[0].role = "root".into();
    bad.timeout_ms = 10;
    assert_eq!(
        fields(&bad),
        [
            "servers[0]",
            "servers[1]",
            "servers[2]",
            "ca_bundle",
            "user_bind",
            "user_base",
            "user_attribute",
            "groups[0].role",
            "timeout_ms"
        ]
    );
    let mut search = settings();
    search.bind = BindMode::Search;
    assert_eq!(fields(&search), ["bind_dn", "bind_password"]);
}

#[test]
fn server_urls_are_ldaps_or_ldap_with_starttls() {
    assert_eq!(
        server_url("ldaps://dc1.contoso.test"),
        Ok((true, "dc1.contoso.test".into()))
    );
    assert_eq!(server_url("ldap://dc1:389/"), Ok((false, "dc1".into())));
    assert_eq!(
        server_url("ldaps://[2001:db8::1]:636"),
        Ok((true, "2001:db8::1".into()))
    );
    assert!(server_url("ldapi:///run/slapd").is_err());
    assert!(server_url("ldaps://user@dc1").is_err());
}

#[test]
fn user_names_are_escaped_for_dns_and_filters() {
    assert_eq!(
        user_bind_name("uid={user},ou=people,dc=contoso,dc=test", "a,b=c"),
        "uid=a\\2cb\\3dc,ou=people,dc=contoso,dc=test"
    );
    assert_eq!(
        user_bind_name("{user}@contoso.test", "erin"),
        "erin@contoso.test"
    );
    // The filter a hostile name reaches the directory as.
    assert_eq!(ldap_escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
}

#[test]
fn an_empty_password_never_reaches_a_bind() {
    assert!(matches!(
        check_credentials("erin", ""),
        Err(LdapFailure::Refused(_))
    ));
    assert!(matches!(
        check_credentials("er\nin", "pw"),
        Err(LdapFailure::Refused(_))
    ));
    assert!(check_credentials("erin", "pw").is_ok());
}

#[test]
fn the_stored_service_password_is_shown_redacted_and_kept() {
    let mut stored = settings();
    stored.bind = BindMode::Search;
    stored.bind_password = Some("s3cret".into());
    let shown = stored.redacted();
    assert_eq!(shown.bind_password.as_deref(), Some(REDACTED));
    let mut sent = shown.clone();
    sent.keep_password_of(Some(&stored));
    assert_eq!(sent.bind_password.as_deref(), Some("s3cret"));
}
