//! Issue 7, live reload ([`Proxy::reload`]): backends added and removed,
//! refusals that leave the old configuration serving, the snapshot a request
//! in flight keeps, `POST /reload`, and what `/health` and `/metrics` show.

use super::*;
use crate::host::LoopKind;
use std::cell::Cell;
use std::net::IpAddr;

const NOW: u64 = 1_700_000_000_000;

/// The test config's text with these backends and keymaps (JSON objects).
fn text(backends: &str, keymaps: &str, extra: &str) -> String {
    format!(
        r#"{{ "backends": {backends}, "keymaps": {keymaps},
             "health_check_fall": 2, "health_check_rise": 1{extra} }}"#
    )
}

const AB: &str = r#"{ "a": { "url": "http://127.0.0.1:8086" }, "b": { "url": "http://127.0.0.1:8087" } }"#;

fn parse(text: &str) -> Config {
    match Config::parse("test.json", text) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn health(proxy: &Proxy<MockTransport, MemStorage>) -> serde_json::Value {
    let r = run(proxy.handle(Request::new(Method::Get, "/health"), NOW));
    serde_json::from_slice(&r.body).unwrap_or_default()
}

fn metrics_text(proxy: &Proxy<MockTransport, MemStorage>) -> String {
    let r = run(proxy.handle(Request::new(Method::Get, "/metrics"), NOW));
    String::from_utf8_lossy(&r.body).into_owned()
}

/// `POST /reload` from `peer`.
fn post_reload(proxy: &Proxy<MockTransport, MemStorage>, peer: Option<&str>) -> Response {
    let mut request = Request::new(Method::Post, "/reload");
    request.peer = peer.map(|p| p.parse::<IpAddr>().unwrap());
    run(proxy.handle(request, NOW))
}

/// The proxy reads its "file" from `file`.
fn with_file(proxy: &mut Proxy<MockTransport, MemStorage>, file: &Rc<RefCell<String>>) {
    let file = file.clone();
    proxy.set_config_file("test.json".into(), Rc::new(move |_path: &str| Ok(file.borrow().clone())));
}

#[test]
fn a_backend_added_by_a_reload_gets_a_new_index_a_queue_and_writes() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    assert_eq!(p.claim_loops().len(), 4, "a and b: health check and replay each");
    // "aa" sorts between a and b: it still gets the next index, 2.
    let new = text(
        r#"{ "a": { "url": "http://127.0.0.1:8086" }, "aa": { "url": "http://127.0.0.1:8088" },
             "b": { "url": "http://127.0.0.1:8087" } }"#,
        r#"{ "cpu": ["a", "aa"], "_default_": ["a", "b"] }"#,
        "",
    );
    let report = run(p.reload(parse(&new), NOW)).unwrap();
    assert_eq!(report.generation, 2);
    assert!(report.changes.contains(&"backend aa added (http://127.0.0.1:8088)".to_string()), "{report:?}");
    let topology = p.topology();
    assert_eq!(topology.names(), ["a", "b", "aa"]);
    assert_eq!(topology.active(), [0, 1, 2]);
    // The host is told to start exactly the new backend's two loops.
    assert_eq!(p.claim_loops(), [(2, LoopKind::HealthCheck), (2, LoopKind::Replay)]);

    assert_eq!(write(&p, "db=x", "cpu v=1 1\nmem v=2 2\n").status, 204);
    assert_eq!(t.writes("aa"), ["cpu v=1 1\n"]);
    assert_eq!(t.writes("b"), ["mem v=2 2\n"]);
    // Down, it gets the write through its own durable queue, queue/aa.
    t.set("aa", Behaviour::Down);
    for _ in 0..2 {
        run(p.check_health(2, NOW));
    }
    assert_eq!(write(&p, "db=x", "cpu v=3 3\n").status, 204);
    assert_eq!(p.queue_depth(2).records, 1);
    assert!(!run(p.storage.list("queue/aa")).unwrap().is_empty());
    t.set("aa", Behaviour::Up);
    run(p.check_health(2, NOW));
    drain(&p, 2);
    assert_eq!(t.writes("aa"), ["cpu v=1 1\n", "cpu v=3 3\n"]);
    // Schema statements go to every configured backend, the new one too.
    assert_eq!(query(&p, "CREATE DATABASE x").status, 200);
    assert_eq!(t.statements("aa"), ["CREATE DATABASE x"]);
}

#[test]
fn a_removed_backend_gets_nothing_new_delivers_its_queue_then_leaves() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let _ = p.claim_loops();
    // b is down: the write is in its queue, acknowledged to the client.
    t.set("b", Behaviour::Down);
    for _ in 0..2 {
        run(p.check_health(1, NOW));
    }
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    assert_eq!(p.queue_depth(1).records, 1);

    let new = text(r#"{ "a": { "url": "http://127.0.0.1:8086" } }"#, r#"{ "_default_": ["a"] }"#, "");
    let report = run(p.reload(parse(&new), NOW)).unwrap();
    assert!(
        report.changes.contains(
            &"backend b removed: leaving until its write queue (1 records) is delivered".to_string()
        ),
        "{report:?}"
    );
    // No new writes, schema statements or fanned-out reads for b.
    assert_eq!(write(&p, "db=x", "cpu v=2 2\n").status, 204);
    assert_eq!(p.queue_depth(1).records, 1);
    assert_eq!(query(&p, "CREATE DATABASE y").status, 200);
    assert_eq!(query(&p, "SHOW DATABASES").status, 200);
    assert_eq!(t.attempts("b"), 2, "only the two health checks");
    assert!(metrics_text(&p).contains("influx_proxy_write_queue_records{backend=\"b\"} 1"));
    let h = health(&p);
    assert_eq!(h["status"], "pass", "b no longer counts: {h}");
    assert_eq!(h["backends"][1]["name"], "b");
    assert_eq!(h["backends"][1]["state"], "leaving");
    assert_eq!(h["backends"][1]["queue_records"], 1);

    // Its queue is not stranded: replay still delivers it, then it leaves.
    assert!(!p.retire_if_drained(1));
    assert!(p.runs_loops(1));
    t.set("b", Behaviour::Up);
    drain(&p, 1);
    assert_eq!(t.writes("b"), ["cpu v=1 1\n"]);
    assert!(!p.retire_if_drained(0), "a configured backend never leaves");
    assert!(p.retire_if_drained(1));
    assert!(!p.runs_loops(1));
    let h = health(&p);
    assert_eq!(h["backends"].as_array().map(Vec::len), Some(1), "{h}");
    assert!(!metrics_text(&p).contains("influx_proxy_write_queue_records{backend=\"b\"}"));

    // Added back under its name: same index, its loops are started again.
    p.loop_ended(1, LoopKind::HealthCheck);
    p.loop_ended(1, LoopKind::Replay);
    let report = run(p.reload(config(""), NOW)).unwrap();
    assert!(report.changes.contains(&"backend b added back (http://127.0.0.1:8087)".to_string()));
    assert_eq!(p.claim_loops(), [(1, LoopKind::HealthCheck), (1, LoopKind::Replay)]);
    run(p.check_health(1, NOW));
    assert_eq!(write(&p, "db=x", "cpu v=3 3\n").status, 204);
    assert_eq!(t.writes("b"), ["cpu v=1 1\n", "cpu v=3 3\n"]);
}

#[test]
fn an_invalid_config_file_is_refused_and_the_old_config_keeps_serving() {
    let t = MockTransport::default();
    let mut p = open(&t, MemStorage::new(), "");
    let file = Rc::new(RefCell::new("{ \"backends\": {,\n}".to_string()));
    with_file(&mut p, &file);
    let e = run(p.reload_file(NOW)).unwrap_err();
    assert_eq!(e, "test.json: $: key must be a string at line 1 column 16");
    // Over HTTP: 400 with the same one-line error.
    let r = post_reload(&p, Some("127.0.0.1"));
    assert_eq!(r.status, 400);
    assert_eq!(error_of(&r), e);
    // A keymap naming an unknown backend: refused by validation too.
    *file.borrow_mut() = text(AB, r#"{ "_default_": ["a", "c"] }"#, "");
    assert_eq!(
        run(p.reload_file(NOW)).unwrap_err(),
        r#"test.json: $.keymaps._default_[1]: unknown backend "c""#
    );
    assert_eq!(p.topology().generation(), 1);
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    assert_eq!((t.writes("a").len(), t.writes("b").len()), (1, 1));
    let h = health(&p);
    assert_eq!(h["config_generation"], 1);
    assert_eq!(h["last_reload"]["result"], "refused");
    assert_eq!(h["last_reload"]["at_ms"], NOW);
    assert_eq!(h["last_reload"]["error"], r#"test.json: $.keymaps._default_[1]: unknown backend "c""#);
    let m = metrics_text(&p);
    assert!(m.contains("influx_proxy_config_reloads_total{result=\"refused\"} 3"), "{m}");
    assert!(m.contains("influx_proxy_config_reloads_total{result=\"applied\"} 0"), "{m}");
}

#[test]
fn keys_the_host_cannot_change_live_are_refused_naming_the_key() {
    let t = MockTransport::default();
    let mut p = open(&t, MemStorage::new(), "");
    let file = Rc::new(RefCell::new(String::new()));
    with_file(&mut p, &file);
    for (key, value, old) in [
        ("listen", r#""127.0.0.1:9999""#, r#""127.0.0.1:7076""#),
        ("data_dir", r#""elsewhere""#, r#""data""#),
        ("request_timeout_ms", "5", "10000"),
    ] {
        *file.borrow_mut() = text(AB, r#"{ "_default_": ["a"] }"#, &format!(r#", "{key}": {value}"#));
        let e = run(p.reload_file(NOW)).unwrap_err();
        assert_eq!(
            e,
            format!(
                "test.json: $.{key}: cannot change while the proxy runs ({old} -> {value}); \
                 restart the proxy to apply it"
            )
        );
    }
    // The TLS listener's certificate is loaded by the host at start too.
    *file.borrow_mut() = text(
        AB,
        r#"{ "_default_": ["a"] }"#,
        r#", "listen_tls": {"cert_file": "c.pem", "key_file": "k.pem"}"#,
    );
    let e = run(p.reload_file(NOW)).unwrap_err();
    assert!(
        e.starts_with("test.json: $.listen_tls: cannot change while the proxy runs (None -> Some("),
        "{e}"
    );
    // Nothing of the refused files applied (their keymaps sent cpu to a only).
    assert_eq!(p.topology().generation(), 1);
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    assert_eq!(t.writes("b").len(), 1);
}

#[test]
fn settings_and_keymaps_apply_live_and_an_unchanged_file_changes_nothing() {
    let t = MockTransport::default();
    let mut p = open(&t, MemStorage::new(), "");
    let file = Rc::new(RefCell::new(text(
        AB,
        r#"{ "cpu": ["b"], "_default_": ["a", "b"] }"#,
        r#", "forbidden_statements": ["^drop"]"#,
    )));
    with_file(&mut p, &file);
    let report = run(p.reload_file(NOW)).unwrap();
    assert_eq!(report.generation, 2);
    assert!(report.changes.iter().any(|c| c.starts_with("keymaps changed: cpu")), "{report:?}");
    assert!(report.changes.contains(&"forbidden_statements changed".to_string()), "{report:?}");
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    assert_eq!((t.writes("a").len(), t.writes("b").len()), (0, 1));
    assert_eq!(query(&p, "DROP DATABASE x").status, 403);
    assert_eq!(query(&p, "GRANT ALL TO u").status, 200, "no longer in the forbidden list");
    // The same file again: applied, nothing changed, same generation.
    let report = run(p.reload_file(NOW)).unwrap();
    assert_eq!(report, ReloadReport { generation: 2, changes: vec![] });
    let h = health(&p);
    assert_eq!(h["config_generation"], 2);
    assert_eq!(h["last_reload"]["result"], "applied");
    let m = metrics_text(&p);
    assert!(m.contains("influx_proxy_config_reloads_total{result=\"applied\"} 2"), "{m}");
    assert!(m.contains("influx_proxy_config_generation 2"), "{m}");
}

#[test]
fn a_changed_url_is_used_from_the_next_request_on() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let new = text(
        r#"{ "a": { "url": "http://127.0.0.1:9086" }, "b": { "url": "http://127.0.0.1:8087" } }"#,
        r#"{ "cpu": ["a", "b"], "cpu.load": ["b"], "mem": ["a"], "_default_": ["a", "b"] }"#,
        "",
    );
    let report = run(p.reload(parse(&new), NOW)).unwrap();
    assert_eq!(report.changes, ["backend a url: http://127.0.0.1:8086 -> http://127.0.0.1:9086"]);
    assert_eq!(p.topology().backends()[0].authority(), "127.0.0.1:9086");
    assert_eq!(health(&p)["backends"][0]["url"], "http://127.0.0.1:9086");
}

/// A transport whose `/write` requests wait until the gate opens.
#[derive(Clone)]
struct Gated {
    inner: MockTransport,
    open: Rc<Cell<bool>>,
    waiting: Rc<RefCell<Vec<std::task::Waker>>>,
}

impl Transport for Gated {
    async fn send(&self, backend: &BackendAddr, request: Request) -> Result<Response, TransportError> {
        if request.path == "/write" {
            std::future::poll_fn(|cx| {
                if self.open.get() {
                    Poll::Ready(())
                } else {
                    self.waiting.borrow_mut().push(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
        }
        self.inner.send(backend, request).await
    }
}

#[test]
fn a_request_in_flight_keeps_the_topology_it_started_with() {
    let t = MockTransport::default();
    let gated = Gated { inner: t.clone(), open: Rc::new(Cell::new(false)), waiting: Rc::default() };
    let p = run(Proxy::open(config(""), gated.clone(), MemStorage::new())).unwrap();
    let mut request = Request::new(Method::Post, "/write");
    request.query = vec![("db".into(), "x".into())];
    request.body = b"cpu v=1 1\n".to_vec();
    let mut in_flight = Box::pin(p.handle(request, NOW));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(in_flight.as_mut().poll(&mut cx).is_pending(), "waiting at the gate");

    // While it waits: b is removed and cpu goes to a only.
    let new = text(r#"{ "a": { "url": "http://127.0.0.1:8086" } }"#, r#"{ "_default_": ["a"] }"#, "");
    assert_eq!(run(p.reload(parse(&new), NOW)).unwrap().generation, 2);
    assert!(!p.retire_if_drained(1), "a request on the old topology may still write to b");

    gated.open.set(true);
    let response = run(in_flight);
    assert_eq!(response.status, 204);
    // It finished with the routes it started with: b got its write.
    assert_eq!(t.writes("a"), ["cpu v=1 1\n"]);
    assert_eq!(t.writes("b"), ["cpu v=1 1\n"]);
    // Requests started after the reload do not reach b.
    let mut request = Request::new(Method::Post, "/write");
    request.query = vec![("db".into(), "x".into())];
    request.body = b"cpu v=2 2\n".to_vec();
    assert_eq!(run(p.handle(request, NOW)).status, 204);
    assert_eq!(t.writes("b").len(), 1);
    assert_eq!(t.writes("a").len(), 2);
    // No request holds the old topology any more and b's queue is empty.
    assert!(p.retire_if_drained(1));
}

#[test]
fn post_reload_is_answered_only_to_loopback_peers() {
    let t = MockTransport::default();
    let mut p = open(&t, MemStorage::new(), "");
    assert_eq!(post_reload(&p, Some("127.0.0.1")).status, 404, "no file known");
    let file = Rc::new(RefCell::new(text(AB, r#"{ "_default_": ["a"] }"#, "")));
    with_file(&mut p, &file);
    for peer in [Some("10.1.2.3"), Some("192.168.0.1"), Some("::2"), None] {
        let r = post_reload(&p, peer);
        assert_eq!(r.status, 403, "{peer:?}");
        assert_eq!(error_of(&r), "/reload is answered only to clients on a loopback address");
    }
    assert_eq!(p.topology().generation(), 1, "nothing was read or applied");
    let mut get = Request::new(Method::Get, "/reload");
    get.peer = Some("127.0.0.1".parse().unwrap());
    assert_eq!(run(p.handle(get, NOW)).status, 405);

    let r = post_reload(&p, Some("127.0.0.1"));
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["generation"], 2);
    assert_eq!(v["changes"][0].as_str().map(|c| c.starts_with("keymaps changed: _default_")), Some(true));
    assert_eq!(post_reload(&p, Some("::1")).status, 200);
    assert_eq!(post_reload(&p, Some("::ffff:127.0.0.1")).status, 200);
    assert!(is_loopback(Some("127.8.9.10".parse().unwrap())));
    assert!(!is_loopback(Some("::ffff:10.0.0.1".parse().unwrap())));
}

#[test]
fn each_reload_attempt_is_logged_on_one_line() {
    let t = MockTransport::default();
    let mut p = open(&t, MemStorage::new(), "");
    let lines: Rc<RefCell<Vec<String>>> = Rc::default();
    let sink = lines.clone();
    p.set_log(Rc::new(move |line: &str| sink.borrow_mut().push(line.to_string())));
    let file = Rc::new(RefCell::new(text(AB, r#"{ "_default_": ["b"] }"#, r#", "replay_max_attempts": 5"#)));
    with_file(&mut p, &file);
    run(p.reload_file(NOW)).unwrap();
    *file.borrow_mut() = "{".into();
    run(p.reload_file(NOW)).unwrap_err();
    let lines = lines.borrow();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        "configuration reloaded (generation 2): keymaps changed: _default_, cpu, cpu.load, mem (data already written is not \
         copied to a new replica set); replay_max_attempts: 10 -> 5"
    );
    assert!(
        lines[1].starts_with(
            "configuration reload refused, the old configuration keeps serving: test.json: $: EOF while parsing"
        ),
        "{}",
        lines[1]
    );
}

#[test]
fn a_reload_that_would_move_shard_group_data_is_refused_naming_the_key() {
    const ABC: &str = r#"{ "a": { "url": "http://127.0.0.1:8086" }, "b": { "url": "http://127.0.0.1:8087" },
                           "c": { "url": "http://127.0.0.1:8088" } }"#;
    let group = |backends: &str, rf: u32| {
        format!(r#", "shard_groups": {{ "main": {{ "backends": {backends}, "replication_factor": {rf} }} }}"#)
    };
    let t = MockTransport::default();
    let first = text(ABC, r#"{ "_default_": "main" }"#, &group(r#"["a", "b"]"#, 1));
    let mut p = match run(Proxy::open(parse(&first), t.clone(), MemStorage::new())) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let file = Rc::new(RefCell::new(first));
    with_file(&mut p, &file);
    let generation = p.topology().generation();
    // A changed placement is a move, which needs rebalance_single_writer.
    for (keymaps, groups, key, why) in [
        (r#"{ "_default_": "main" }"#, group(r#"["a", "b", "c"]"#, 1), "$.shard_groups.main", "only writer"),
        (r#"{ "_default_": "main" }"#, group(r#"["a", "b"]"#, 2), "$.shard_groups.main", "only writer"),
        (
            r#"{ "_default_": ["a"] }"#,
            group(r#"["a", "b"]"#, 1),
            "$.keymaps._default_",
            "would move data between backends",
        ),
    ] {
        *file.borrow_mut() = text(ABC, keymaps, &groups);
        let e = run(p.reload_file(NOW)).unwrap_err();
        assert!(e.starts_with(&format!("test.json: {key}: ")), "{e}");
        assert!(e.contains(why), "{e}");
    }
    assert_eq!(p.topology().generation(), generation, "nothing of the refused files applied");
    // The same backends listed in another order place every key the same way: applied.
    *file.borrow_mut() = text(ABC, r#"{ "_default_": "main", "cpu": ["c"] }"#, &group(r#"["b", "a"]"#, 1));
    run(p.reload_file(NOW)).unwrap();
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    assert_eq!(t.writes("c").len(), 1, "the new explicit keymap applies live");
}

#[test]
fn a_restart_while_a_removed_backend_is_leaving_keeps_it_leaving_until_its_queue_is_delivered() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    // b is down: the write waits in its queue, acknowledged to the client.
    t.set("b", Behaviour::Down);
    for _ in 0..2 {
        run(p.check_health(1, NOW));
    }
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    let only_a = text(r#"{ "a": { "url": "http://127.0.0.1:8086" } }"#, r#"{ "_default_": ["a"] }"#, "");
    // A disk that cannot record the leaving backends does not keep b
    // configured, but the report says what a restart would then do.
    p.storage.fail_appends(true);
    let report = run(p.reload(parse(&only_a), NOW)).unwrap();
    assert!(
        report.changes.contains(
            &"the leaving backends could not be recorded in leaving.json (simulated disk failure): \
              a restart before they have left would not deliver their queues"
                .to_string()
        ),
        "{report:?}"
    );
    assert_eq!(health(&p)["backends"][1]["state"], "leaving");
    p.storage.fail_appends(false);
    // Added back, then removed again with a working disk: recorded.
    run(p.reload(config(""), NOW)).unwrap();
    let report = run(p.reload(parse(&only_a), NOW)).unwrap();
    assert!(!report.changes.iter().any(|c| c.contains("could not be recorded")), "{report:?}");
    assert_eq!(health(&p)["backends"][1]["state"], "leaving");

    // The proxy restarts (an upgrade, a reboot) with the file it was
    // reloaded with, which no longer names b.
    let files = p.storage.snapshot();
    drop(p);
    let p = run(Proxy::open(parse(&only_a), t.clone(), MemStorage::from_snapshot(files))).unwrap();
    let h = health(&p);
    assert_eq!(h["backends"][1]["name"], "b", "b's acknowledged write is still waiting: {h}");
    assert_eq!(h["backends"][1]["state"], "leaving", "{h}");
    assert_eq!(h["backends"][1]["queue_records"], 1, "{h}");
    assert_eq!(h["status"], "pass", "{h}");
    assert_eq!(
        p.claim_loops(),
        [
            (0, LoopKind::HealthCheck),
            (0, LoopKind::Replay),
            (1, LoopKind::HealthCheck),
            (1, LoopKind::Replay)
        ]
    );
    // Nothing new for b; once it is back, its queue is delivered and it leaves.
    assert_eq!(write(&p, "db=x", "cpu v=2 2\n").status, 204);
    t.set("b", Behaviour::Up);
    run(p.check_health(1, NOW));
    drain(&p, 1);
    assert_eq!(t.writes("b"), ["cpu v=1 1\n"]);
    assert!(p.retire_if_drained(1));

    // Once it has left, a later restart does not bring it back.
    let files = p.storage.snapshot();
    drop(p);
    let p = run(Proxy::open(parse(&only_a), t.clone(), MemStorage::from_snapshot(files))).unwrap();
    assert_eq!(health(&p)["backends"].as_array().map(Vec::len), Some(1));
    assert_eq!(p.claim_loops(), [(0, LoopKind::HealthCheck), (0, LoopKind::Replay)]);
}
