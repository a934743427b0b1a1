//! Issue 9 item 4, token auth at the proxy: with `auth` configured, a
//! request needs a token in scope; a refused one reaches no backend, and
//! what backends (and queued records) get carries none of the client's
//! credentials. Without `auth`, credentials pass through (see
//! `write_goes_to_every_replica_with_db_rp_precision_and_credentials`).

use super::*;

const TELEGRAF: &str = "apiv3_telegraf";
const OPS: &str = "apiv3_ops";

fn auth_extra(open: &str) -> String {
    let hash = crate::auth::token_hash_hex;
    format!(
        r#", "auth": {{ "tokens": [
            {{ "name": "telegraf", "sha512": "{}", "databases": ["telegraf"], "permissions": ["read", "write"] }},
            {{ "name": "ops", "sha512": "{}", "databases": ["*"], "permissions": ["admin"] }}
        ]{open} }}"#,
        hash(TELEGRAF),
        hash(OPS)
    )
}

fn with_token(mut request: Request, token: &str) -> Request {
    request.headers.push(("authorization".into(), format!("Bearer {token}")));
    request
}

fn write_request(query: &str, body: &str) -> Request {
    let mut request = Request::new(Method::Post, "/write");
    request.query = crate::http::decode_params(query);
    request.body = body.as_bytes().to_vec();
    request
}

fn query_request(db: &str, q: &str) -> Request {
    let mut request = Request::new(Method::Get, "/query");
    request.query = vec![("q".into(), q.into()), ("db".into(), db.into())];
    request
}

fn metric(p: &Proxy<MockTransport, MemStorage>, line_start: &str) -> String {
    let r = run(p.handle(with_token(Request::new(Method::Get, "/metrics"), OPS), 0));
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines().find(|l| l.starts_with(line_start)).unwrap_or("").to_string()
}

#[test]
fn a_scoped_token_writes_and_reads_and_backends_get_no_client_credentials() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), &auth_extra(""));
    let r = run(p.handle(with_token(write_request("db=telegraf&u=x&p=y", "cpu v=1 1\n"), TELEGRAF), 0));
    assert_eq!(r.status, 204, "{}", error_of(&r));
    // p= alone is a form too.
    let r = run(p.handle(write_request(&format!("db=telegraf&p={TELEGRAF}"), "cpu v=2 2\n"), 0));
    assert_eq!(r.status, 204, "{}", error_of(&r));
    for backend in ["a", "b"] {
        let got = t.received(backend);
        assert_eq!(got.len(), 2, "backend {backend}");
        for w in got {
            assert_eq!(w.header("authorization"), None);
            assert_eq!((w.param("u"), w.param("p")), (None, None), "{w:?}");
        }
    }
    let r = run(p.handle(with_token(query_request("telegraf", "SELECT * FROM cpu"), TELEGRAF), 0));
    assert_eq!(r.status, 200, "{}", error_of(&r));
    let q = t.received("a").into_iter().chain(t.received("b")).find(|r| r.path == "/query").unwrap();
    assert_eq!(q.header("authorization"), None);
    assert!(!String::from_utf8_lossy(&q.body).contains(TELEGRAF));
}

#[test]
fn queued_records_hold_no_client_credentials() {
    let t = MockTransport::default();
    t.set("b", Behaviour::Down);
    let p = open(&t, MemStorage::new(), &auth_extra(""));
    let r = run(p.handle(write_request(&format!("db=telegraf&u=joe&p={TELEGRAF}"), "cpu v=1 1\n"), 0));
    assert_eq!(r.status, 204, "{}", error_of(&r));
    assert_eq!(p.queue_depth(1).records, 1);
    t.set("b", Behaviour::Up);
    let _ = drain(&p, 1);
    let replayed: Vec<Request> = t.received("b").into_iter().filter(|r| r.path == "/write").collect();
    assert_eq!(replayed.len(), 1);
    assert_eq!((replayed[0].param("u"), replayed[0].param("p")), (None, None));
    assert_eq!(replayed[0].header("authorization"), None);
}

#[test]
fn missing_and_wrong_tokens_are_401_and_reach_no_backend() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), &auth_extra(""));
    let r = run(p.handle(write_request("db=telegraf", "cpu v=1 1\n"), 0));
    assert_eq!((r.status, error_of(&r).as_str()), (401, "unable to parse authentication credentials"));
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"InfluxDB\""));
    let r = run(p.handle(with_token(write_request("db=telegraf", "cpu v=1 1\n"), "apiv3_wrong"), 0));
    assert_eq!((r.status, error_of(&r).as_str()), (401, "authorization failed"));
    let r = run(p.handle(with_token(query_request("telegraf", "SELECT * FROM cpu"), "apiv3_wrong"), 0));
    assert_eq!(r.status, 401);
    // p= is a v1 form: not on /api/v2/write (as InfluxDB 3).
    let mut v2 = Request::new(Method::Post, "/api/v2/write");
    v2.query = vec![("bucket".into(), "telegraf".into()), ("p".into(), TELEGRAF.into())];
    v2.body = b"cpu v=1 1\n".to_vec();
    let r = run(p.handle(v2, 0));
    assert_eq!((r.status, error_of(&r).as_str()), (401, "unable to parse authentication credentials"));
    assert_eq!(t.attempts("a") + t.attempts("b"), 0);
    assert_eq!(
        metric(&p, "influx_proxy_auth_failures_total{reason=\"unauthorized\"}"),
        "influx_proxy_auth_failures_total{reason=\"unauthorized\"} 4"
    );
}

#[test]
fn out_of_scope_is_influxd_s_403_and_reaches_no_backend() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), &auth_extra(""));
    let r = run(p.handle(with_token(write_request("db=other", "cpu v=1 1\n"), TELEGRAF), 0));
    assert_eq!(r.status, 403);
    assert_eq!(error_of(&r), "\"telegraf\" user is not authorized to write to database \"other\"");
    let mut v2 = Request::new(Method::Post, "/api/v2/write");
    v2.query = vec![("bucket".into(), "other/autogen".into())];
    v2.body = b"cpu v=1 1\n".to_vec();
    assert_eq!(run(p.handle(with_token(v2, TELEGRAF), 0)).status, 403);
    // One statement out of scope refuses the whole query, before any is sent.
    let r = run(p.handle(
        with_token(query_request("telegraf", "SELECT * FROM cpu; DROP DATABASE telegraf"), TELEGRAF),
        0,
    ));
    assert_eq!(r.status, 403);
    assert_eq!(
        error_of(&r),
        "error authorizing query: telegraf not authorized to execute statement 'DROP DATABASE telegraf', \
         requires admin privilege"
    );
    let r = run(p.handle(with_token(Request::new(Method::Post, "/reload"), TELEGRAF), 0));
    assert_eq!(r.status, 403, "{}", error_of(&r));
    assert_eq!(t.attempts("a") + t.attempts("b"), 0);
    assert_eq!(
        metric(&p, "influx_proxy_auth_failures_total{reason=\"forbidden\"}"),
        "influx_proxy_auth_failures_total{reason=\"forbidden\"} 4"
    );
    // An admin token on * may.
    let r = run(p.handle(with_token(query_request("", "CREATE DATABASE other"), OPS), 0));
    assert_eq!(r.status, 200, "{}", error_of(&r));
}

#[test]
fn ping_and_health_are_open_by_default_and_open_is_configurable() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), &auth_extra(""));
    assert_eq!(run(p.handle(Request::new(Method::Get, "/ping"), 0)).status, 204);
    assert_eq!(run(p.handle(Request::new(Method::Get, "/health"), 0)).status, 200);
    assert_eq!(run(p.handle(Request::new(Method::Get, "/metrics"), 0)).status, 401);
    let p = open(&t, MemStorage::new(), &auth_extra(r#", "open": ["/metrics"]"#));
    assert_eq!(run(p.handle(Request::new(Method::Get, "/ping"), 0)).status, 401);
    assert_eq!(run(p.handle(Request::new(Method::Get, "/metrics"), 0)).status, 200);
}

/// `auth` with backend `b` given a token read from `B_TOKEN` and `a` a
/// user and password read from a file (here: a reader of canned secrets).
fn with_backend_credentials(
    transport: &MockTransport,
    storage: MemStorage,
) -> Proxy<MockTransport, MemStorage> {
    let text = format!(
        r#"{{
            "backends": {{
                "a": {{ "url": "http://127.0.0.1:8086", "username": "proxy", "password_file": "/run/secrets/a" }},
                "b": {{ "url": "http://127.0.0.1:8087", "token_env": "B_TOKEN" }}
            }},
            "keymaps": {{ "_default_": ["a", "b"] }},
            "health_check_fall": 2, "health_check_rise": 1{}
        }}"#,
        auth_extra("")
    );
    let mut config = Config::parse("test.json", &text).unwrap_or_else(|e| panic!("{e}"));
    // Without the secrets read, the proxy does not start (no silent
    // credential-less backend).
    let e = run(Proxy::open(config.clone(), transport.clone(), MemStorage::new())).err().unwrap_or_default();
    assert!(e.contains("$.backends.a: its credentials were not read"), "{e}");
    let read = |source: &crate::config::SecretSource| match source {
        crate::config::SecretSource::File(path) if path == "/run/secrets/a" => Ok("s3cret\n".to_string()),
        crate::config::SecretSource::Env(name) if name == "B_TOKEN" => Ok("apiv3_backend".to_string()),
        other => Err(format!("unexpected {other}")),
    };
    config.resolve_credentials("test.json", &read).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        format!("{:?}", config.backends["a"].credentials),
        "Some(Basic(proxy, <redacted>))",
        "secrets stay out of Debug"
    );
    run(Proxy::open(config, transport.clone(), storage)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn backends_get_their_configured_credentials_direct_and_replayed() {
    use base64::Engine as _;
    let t = MockTransport::default();
    t.set("b", Behaviour::Down);
    let p = with_backend_credentials(&t, MemStorage::new());
    let r = run(p.handle(with_token(write_request("db=telegraf", "cpu v=1 1\n"), TELEGRAF), 0));
    assert_eq!(r.status, 204, "{}", error_of(&r));
    let r = run(p.handle(with_token(query_request("telegraf", "SELECT * FROM cpu"), TELEGRAF), 0));
    assert_eq!(r.status, 200, "{}", error_of(&r));
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("proxy:s3cret"));
    let got = t.received("a");
    assert!(got.iter().any(|r| r.path == "/write") && got.iter().any(|r| r.path == "/query"), "{got:?}");
    for request in &got {
        assert_eq!(request.header("authorization"), Some(basic.as_str()), "{request:?}");
    }
    // b was down: the write was queued, and its replay carries b's token.
    assert_eq!(p.queue_depth(1).records, 1);
    t.set("b", Behaviour::Up);
    let _ = drain(&p, 1);
    let replayed: Vec<Request> = t.received("b").into_iter().filter(|r| r.path == "/write").collect();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].header("authorization"), Some("Bearer apiv3_backend"));
    assert_eq!((replayed[0].param("u"), replayed[0].param("p")), (None, None));
}

#[test]
fn no_body_work_for_a_write_without_a_valid_token() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), &auth_extra(""));
    let mut request = write_request("db=telegraf", "cpu v=1 1\n");
    assert!(p.write_body_job(&mut request).is_none());
    assert_eq!(request.body, b"cpu v=1 1\n", "body left in place");
    let mut request = with_token(write_request("db=telegraf", "cpu v=1 1\n"), "apiv3_wrong");
    assert!(p.write_body_job(&mut request).is_none());
    let mut request = with_token(write_request("db=telegraf", "cpu v=1 1\n"), TELEGRAF);
    let job = p.write_body_job(&mut request).map(|job| job.run());
    let r = run(p.handle_prepared(request, job, 0));
    assert_eq!(r.status, 204, "{}", error_of(&r));
}

/// A reload reads the backends' secrets again (a rotated password is used
/// from the next request on); without a secret reader it is refused.
#[test]
fn a_reload_reads_the_backends_secrets_again() {
    use base64::Engine as _;
    let t = MockTransport::default();
    let text = format!(
        r#"{{
            "backends": {{ "a": {{ "url": "http://127.0.0.1:8086", "username": "proxy", "password_env": "A_PASS" }} }},
            "keymaps": {{ "_default_": ["a"] }}{}
        }}"#,
        auth_extra("")
    );
    let password = Rc::new(std::cell::RefCell::new("one".to_string()));
    let mut config = Config::parse("test.json", &text).unwrap_or_else(|e| panic!("{e}"));
    let current = password.clone();
    let read: crate::proxy::SecretReader = Rc::new(move |_| Ok(current.borrow().clone()));
    config.resolve_credentials("test.json", &*read).unwrap_or_else(|e| panic!("{e}"));
    let mut p = run(Proxy::open(config, t.clone(), MemStorage::new())).unwrap_or_else(|e| panic!("{e}"));
    let file = text.clone();
    p.set_config_file("test.json".into(), Rc::new(move |_path: &str| Ok(file.clone())));
    // No secret reader yet: the reload is refused, naming the backend.
    let e = run(p.reload_file(0)).unwrap_err();
    assert!(e.contains("$.backends.a: its credentials were not read"), "{e}");
    p.set_secret_reader(read);
    *password.borrow_mut() = "two".to_string();
    run(p.reload_file(0)).unwrap_or_else(|e| panic!("{e}"));
    let r = run(p.handle(with_token(write_request("db=telegraf", "cpu v=1 1\n"), TELEGRAF), 0));
    assert_eq!(r.status, 204, "{}", error_of(&r));
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("proxy:two"));
    let writes: Vec<Request> = t.received("a").into_iter().filter(|r| r.path == "/write").collect();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].header("authorization"), Some(basic.as_str()));
}

/// A v3 request (path with its query string, body) with `token`, if any.
fn v3_request(method: Method, target: &str, body: &str, token: Option<&str>) -> Request {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut request = Request::new(method, path);
    request.query = crate::http::decode_params(query);
    request.body = body.as_bytes().to_vec();
    match token {
        Some(token) => with_token(request, token),
        None => request,
    }
}

#[test]
fn influxdb3_routes_are_scoped_like_the_writes_and_statements_they_run() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), &auth_extra(""));
    let answer = |method, target: &str, body: &str, token| {
        let r = run(p.handle(v3_request(method, target, body, token), 0));
        (r.status, error_of(&r))
    };
    // Without a token: 401, whatever the route.
    for (method, target, body) in [
        (Method::Post, "/api/v3/write_lp?db=telegraf", "cpu v=1 1\n"),
        (Method::Get, "/api/v3/query_influxql?db=telegraf&q=SELECT+*+FROM+cpu", ""),
        (Method::Get, "/api/v3/configure/database?format=json", ""),
    ] {
        assert_eq!(answer(method, target, body, None).0, 401, "{target}");
    }
    // Out of scope: 403, and nothing reaches a backend.
    let (status, error) = answer(Method::Post, "/api/v3/write_lp?db=other", "cpu v=1 1\n", Some(TELEGRAF));
    assert_eq!(status, 403, "{error}");
    assert_eq!(error, "\"telegraf\" user is not authorized to write to database \"other\"");
    let (status, error) = answer(
        Method::Post,
        "/api/v3/query_influxql",
        r#"{"db":"other","q":"SELECT * FROM cpu"}"#,
        Some(TELEGRAF),
    );
    assert_eq!(status, 403, "{error}");
    assert!(error.starts_with("error authorizing query: telegraf not authorized"), "{error}");
    for (method, target, body) in [
        (Method::Get, "/api/v3/configure/database?format=json", ""),
        (Method::Post, "/api/v3/configure/database", r#"{"db":"telegraf"}"#),
        (Method::Delete, "/api/v3/configure/database?db=telegraf", ""),
    ] {
        assert_eq!(answer(method, target, body, Some(TELEGRAF)).0, 403, "{method:?} {target}");
    }
    assert_eq!(t.attempts("a") + t.attempts("b"), 0, "a refused request reaches no backend");
    // In scope: written and answered.
    let (status, error) = answer(Method::Post, "/api/v3/write_lp?db=telegraf", "cpu v=1 1\n", Some(TELEGRAF));
    assert_eq!(status, 204, "{error}");
    let (status, error) =
        answer(Method::Get, "/api/v3/query_influxql?db=telegraf&q=SELECT+*+FROM+cpu", "", Some(TELEGRAF));
    assert_eq!(status, 200, "{error}");
    let (status, error) = answer(Method::Post, "/api/v3/configure/database", r#"{"db":"new"}"#, Some(OPS));
    assert_eq!(status, 200, "{error}");
    for backend in ["a", "b"] {
        assert!(t.received(backend).iter().all(|r| r.header("authorization").is_none()), "{backend}");
    }
}

#[test]
fn server_administration_shows_need_admin_on_every_database() {
    // InfluxDB 1.x requires admin for these (influxql ast.go
    // `RequiredPrivileges`): a read token on one database is refused, even
    // with that database as `db`.
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), &auth_extra(""));
    for q in [
        "SHOW USERS",
        "SHOW GRANTS FOR proxy",
        "SHOW STATS",
        "SHOW DIAGNOSTICS",
        "SHOW SHARDS",
        "SHOW SHARD GROUPS",
        "SHOW SUBSCRIPTIONS",
    ] {
        let r = run(p.handle(with_token(query_request("telegraf", q), TELEGRAF), 0));
        assert_eq!(r.status, 403, "{q}: {}", error_of(&r));
        assert_eq!(
            error_of(&r),
            format!(
                "error authorizing query: telegraf not authorized to execute statement '{q}', \
                 requires admin privilege"
            )
        );
    }
    assert_eq!(t.attempts("a") + t.attempts("b"), 0);
    let r = run(p.handle(with_token(query_request("", "SHOW USERS"), OPS), 0));
    assert_eq!(r.status, 200, "{}", error_of(&r));
}

#[test]
fn a_database_named_by_a_bound_parameter_needs_every_database() {
    // influxd 1.6.7 takes an identifier from `params`:
    // `SHOW MEASUREMENTS ON $d` with params={"d":{"identifier":"other"}}
    // lists other's measurements, whatever `db` says.
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), &auth_extra(""));
    let params = r#"{"d":{"identifier":"other"}}"#;
    for q in ["SHOW MEASUREMENTS ON $d", "SHOW TAG KEYS ON $d FROM cpu", "SHOW RETENTION POLICIES ON $d"] {
        let mut request = query_request("telegraf", q);
        request.query.push(("params".into(), params.into()));
        let r = run(p.handle(with_token(request, TELEGRAF), 0));
        assert_eq!(r.status, 403, "{q}: {}", error_of(&r));
        let r = run(p.handle(
            v3_request(
                Method::Post,
                "/api/v3/query_influxql",
                &serde_json::json!({"db": "telegraf", "q": q, "params": {"d": {"identifier": "other"}}})
                    .to_string(),
                Some(TELEGRAF),
            ),
            0,
        ));
        assert_eq!(r.status, 403, "v3 {q}: {}", error_of(&r));
    }
    assert_eq!(t.attempts("a") + t.attempts("b"), 0);
    // A bound parameter as a value is no database: still in scope.
    let r = run(
        p.handle(with_token(query_request("telegraf", "SELECT * FROM cpu WHERE host = $h"), TELEGRAF), 0)
    );
    assert_eq!(r.status, 200, "{}", error_of(&r));
}

#[test]
fn continuous_queries_and_subscriptions_need_admin_on_every_database() {
    // A continuous query runs on the backends with the proxy's
    // credentials: one `ON telegraf` may read and write any database, and
    // a subscription ships a database's writes to any URL (InfluxDB 1.x:
    // admin). Allowed by config here, an admin token on one database is
    // still refused.
    let t = MockTransport::default();
    let extra = format!(
        r#", "allowed_statements": ["continuous query", "subscription"], "auth": {{ "tokens": [
            {{ "name": "tadmin", "sha512": "{}", "databases": ["telegraf"], "permissions": ["admin"] }},
            {{ "name": "ops", "sha512": "{}", "databases": ["*"], "permissions": ["admin"] }}
        ] }}"#,
        crate::auth::token_hash_hex(TELEGRAF),
        crate::auth::token_hash_hex(OPS)
    );
    let p = open(&t, MemStorage::new(), &extra);
    let cq = "CREATE CONTINUOUS QUERY cq ON telegraf BEGIN SELECT mean(v) INTO telegraf.autogen.copy \
              FROM other.autogen.cpu GROUP BY time(1m) END";
    for q in [
        cq,
        "DROP CONTINUOUS QUERY cq ON telegraf",
        "CREATE SUBSCRIPTION s ON telegraf.autogen DESTINATIONS ALL 'http://example.com:9090'",
        "DROP SUBSCRIPTION s ON telegraf.autogen",
    ] {
        let r = run(p.handle(with_token(query_request("telegraf", q), TELEGRAF), 0));
        assert_eq!(r.status, 403, "{q}: {}", error_of(&r));
        assert!(error_of(&r).ends_with("requires admin privilege"), "{}", error_of(&r));
    }
    assert_eq!(t.attempts("a") + t.attempts("b"), 0);
    let r = run(p.handle(with_token(query_request("telegraf", cq), OPS), 0));
    assert_eq!(r.status, 200, "{}", error_of(&r));
}

#[test]
fn show_databases_needs_every_database_whatever_db_says() {
    // The proxy answers SHOW DATABASES with every backend's databases
    // (influxd 1.x would list only those the user may read): a token on
    // one database cannot list them by passing its own as `db`.
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), &auth_extra(""));
    let r = run(p.handle(with_token(query_request("telegraf", "SHOW DATABASES"), TELEGRAF), 0));
    assert_eq!(r.status, 403, "{}", error_of(&r));
    assert_eq!(
        error_of(&r),
        "error authorizing query: telegraf not authorized to execute statement 'SHOW DATABASES', requires READ on "
    );
    let r = run(p.handle(
        v3_request(
            Method::Post,
            "/api/v3/query_influxql",
            r#"{"db":"telegraf","q":"show databases"}"#,
            Some(TELEGRAF),
        ),
        0,
    ));
    assert_eq!(r.status, 403, "{}", error_of(&r));
    assert_eq!(t.attempts("a") + t.attempts("b"), 0);
    // What is about its database stays in scope.
    let r = run(p.handle(with_token(query_request("telegraf", "SHOW MEASUREMENTS"), TELEGRAF), 0));
    assert_eq!(r.status, 200, "{}", error_of(&r));
    let r = run(p.handle(with_token(query_request("", "SHOW DATABASES"), OPS), 0));
    assert_eq!(r.status, 200, "{}", error_of(&r));
}

#[test]
fn a_regex_source_in_another_database_is_out_of_scope() {
    // influxd 1.6.7 reads `other` for `SELECT * FROM other.././` whatever
    // `db` says (checked), as for `other..cpu`.
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), &auth_extra(""));
    for q in [
        "SELECT * FROM other.././",
        "SELECT * FROM other.autogen./c/",
        "SELECT * FROM cpu, other.././",
        "SHOW TAG KEYS FROM other.././",
        "EXPLAIN SELECT * FROM (SELECT * FROM \"other\"..//)",
        "DELETE FROM other.././",
    ] {
        let r = run(p.handle(with_token(query_request("telegraf", q), TELEGRAF), 0));
        assert_eq!(r.status, 403, "{q}: {}", error_of(&r));
        assert!(error_of(&r).ends_with(" on other"), "{q}: {}", error_of(&r));
    }
    assert_eq!(t.attempts("a") + t.attempts("b"), 0);
    // Its own database, or none named (`rp./re/`): the db parameter's.
    for q in ["SELECT * FROM telegraf.././", "SELECT * FROM autogen./c/", "SELECT * FROM /c/"] {
        let r = run(p.handle(with_token(query_request("telegraf", q), TELEGRAF), 0));
        assert_eq!(r.status, 200, "{q}: {}", error_of(&r));
    }
}

#[test]
fn show_tag_keys_and_values_are_scoped_by_their_on_database_too() {
    // influxd 1.6.7 answers SHOW TAG KEYS / TAG VALUES from the ON
    // database (else `db`), whatever database FROM names (checked:
    // `SHOW TAG KEYS ON secret FROM app..cpu` lists secret's tag keys).
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), &auth_extra(""));
    for (db, q) in [
        ("telegraf", "SHOW TAG KEYS ON other FROM telegraf..cpu"),
        ("telegraf", "SHOW TAG VALUES ON other FROM telegraf..cpu WITH KEY = host"),
        ("other", "SHOW TAG KEYS FROM telegraf..cpu"),
        ("other", "SHOW TAG VALUES FROM telegraf.autogen.cpu WITH KEY = host"),
    ] {
        let r = run(p.handle(with_token(query_request(db, q), TELEGRAF), 0));
        assert_eq!(r.status, 403, "{q}: {}", error_of(&r));
        assert!(error_of(&r).ends_with("requires READ on other"), "{q}: {}", error_of(&r));
    }
    assert_eq!(t.attempts("a") + t.attempts("b"), 0);
    let r = run(p.handle(
        with_token(query_request("telegraf", "SHOW TAG KEYS ON telegraf FROM telegraf..cpu"), TELEGRAF),
        0,
    ));
    assert_eq!(r.status, 200, "{}", error_of(&r));
}
