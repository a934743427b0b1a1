//! Issue 7 on the request path: points and statements routed through shard
//! groups (placement of each point by its shard key, reads of one replica
//! set or of a cover of the group, schema statements to every replica that
//! may hold a measurement, `GET /replica`).

use super::*;
use crate::placement::{place, ShardKey};

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Backends a, b, c; group `main` over all three with RF 2 (the default
/// route), group `tenants` over all three with RF 1 sharded by tag
/// `customer` (measurement `req`), and `pinned` on a alone.
fn open_groups(t: &MockTransport, extra: &str) -> Proxy<MockTransport, MemStorage> {
    open_config(
        t,
        r#""pinned": ["a"], "req": "tenants", "_default_": "main""#,
        r#""main": {"backends": ["c", "b", "a"], "replication_factor": 2},
           "tenants": {"backends": ["a", "b", "c"], "replication_factor": 1, "shard_tag": "customer"}"#,
        extra,
    )
}

fn open_config(
    t: &MockTransport,
    keymaps: &str,
    groups: &str,
    extra: &str,
) -> Proxy<MockTransport, MemStorage> {
    let text = format!(
        r#"{{
            "backends": {{ "a": {{ "url": "http://127.0.0.1:1" }}, "b": {{ "url": "http://127.0.0.1:2" }},
                           "c": {{ "url": "http://127.0.0.1:3" }} }},
            "shard_groups": {{ {groups} }},
            "keymaps": {{ {keymaps} }},
            "health_check_fall": 2, "health_check_rise": 1{extra}
        }}"#
    );
    let config = Config::parse("test.json", &text).unwrap_or_else(|e| panic!("{e}"));
    run(Proxy::open(config, t.clone(), MemStorage::new())).unwrap_or_else(|e| panic!("{e}"))
}

/// The names of the `rf` owners of a key over a, b, c, straight from
/// placement (not through the proxy's groups).
fn owners(db: &str, measurement: &str, tag_value: Option<&str>, rf: usize) -> Vec<&'static str> {
    let key = ShardKey { db, measurement, tag_value };
    let mut names: Vec<&str> = place(&NAMES, rf, &key).into_iter().map(|i| NAMES[i]).collect();
    names.sort_unstable();
    names
}

fn query_db(p: &Proxy<MockTransport, MemStorage>, q: &str, db: &str) -> Response {
    let mut request = Request::new(Method::Get, "/query");
    request.query = vec![("q".into(), q.into()), ("db".into(), db.into())];
    run(p.handle(request, T0))
}

/// Backends (by name) that received a `/query` whose `q` contains `text`.
fn asked(t: &MockTransport, text: &str) -> Vec<&'static str> {
    NAMES.into_iter().filter(|b| t.statements(b).iter().any(|q| q.contains(text))).collect()
}

#[test]
fn points_of_several_keys_in_one_body_go_to_exactly_their_keys_replicas() {
    let t = MockTransport::default();
    let p = open_groups(&t, "");
    // Runs of one measurement and interleaved ones, an explicit keymap among
    // them, in one body.
    let mut body = String::new();
    let mut want: BTreeMap<&str, String> = BTreeMap::new();
    for i in 0..40 {
        let m = format!("m{}", (i * 7) % 13 / 2);
        let line = format!("{m},host=h{i} v={i} {i}\n");
        body.push_str(&line);
        for owner in owners("telegraf", &m, None, 2) {
            want.entry(owner).or_default().push_str(&line);
        }
        if i % 10 == 0 {
            let line = format!("pinned v={i} {i}\n");
            body.push_str(&line);
            want.entry("a").or_default().push_str(&line);
        }
    }
    let r = write(&p, "db=telegraf", &body);
    assert_eq!(r.status, 204, "{}", error_of(&r));
    for backend in NAMES {
        assert_eq!(
            t.writes(backend).concat(),
            want.get(backend).cloned().unwrap_or_default(),
            "backend {backend}"
        );
    }
    // The same measurements in another database are placed by that one.
    let t = MockTransport::default();
    let p = open_groups(&t, "");
    assert_eq!(write(&p, "db=other", "m1 v=1 1\nm2 v=2 2\n").status, 204);
    for backend in NAMES {
        let mut expect = String::new();
        for (m, line) in [("m1", "m1 v=1 1\n"), ("m2", "m2 v=2 2\n")] {
            if owners("other", m, None, 2).contains(&backend) {
                expect.push_str(line);
            }
        }
        assert_eq!(t.writes(backend).concat(), expect, "backend {backend}");
    }
}

#[test]
fn tag_sharded_points_go_by_their_tag_value_and_without_it_to_the_shard_of_the_empty_value() {
    let t = MockTransport::default();
    let p = open_groups(&t, "");
    let mut body = String::new();
    let mut want: BTreeMap<&str, String> = BTreeMap::new();
    for i in 0..30 {
        let (line, value) = match i % 4 {
            0 => (format!("req,host=h v={i} {i}\n"), ""),
            1 => (format!("req,customer=c{} v={i} {i}\n", i % 7), ""),
            2 => (format!("req,host=h,customer=c{} v={i} {i}\n", i % 7), ""),
            _ => (format!("req,customer=x\\ y v={i} {i}\n"), "x y"),
        };
        let value = match i % 4 {
            1 | 2 => format!("c{}", i % 7),
            _ => value.to_string(),
        };
        body.push_str(&line);
        for owner in owners("app", "req", Some(&value), 1) {
            want.entry(owner).or_default().push_str(&line);
        }
    }
    assert_eq!(write(&p, "db=app", &body).status, 204);
    let mut total = 0;
    for backend in NAMES {
        let got = t.writes(backend).concat();
        total += got.lines().count();
        assert_eq!(got, want.get(backend).cloned().unwrap_or_default(), "backend {backend}");
    }
    assert_eq!(total, 30, "RF 1: every point exactly once");
}

#[test]
fn a_write_over_several_replica_sets_is_204_only_once_every_replica_took_or_queued_it() {
    let t = MockTransport::default();
    let p = open_groups(&t, "");
    t.set("c", Behaviour::Down);
    let body: String = (0..20).map(|i| format!("m{i} v={i} {i}\n")).collect();
    let r = write(&p, "db=telegraf", &body);
    assert_eq!(r.status, 204, "{}", error_of(&r));
    let for_c: String = (0..20)
        .filter(|i| owners("telegraf", &format!("m{i}"), None, 2).contains(&"c"))
        .map(|i| format!("m{i} v={i} {i}\n"))
        .collect();
    assert!(!for_c.is_empty());
    assert!(p.queue_depth(2).records > 0, "c's points are queued");
    t.set("c", Behaviour::Up);
    drain(&p, 2);
    assert_eq!(t.writes("c").concat(), for_c);
    // A replica that cannot keep its points (its queue is full) makes the
    // write 503, although the other replicas took theirs.
    let t = MockTransport::default();
    let p = open_groups(&t, r#", "max_body_bytes": 1000, "queue_max_bytes": 1000"#);
    t.set("c", Behaviour::Down);
    let body: String = (0..20).map(|i| format!("m{i} v={i}{} {i}\n", "0".repeat(20))).collect();
    assert!(body.len() < 1000);
    let statuses: Vec<u16> = (0..10).map(|_| write(&p, "db=telegraf", &body).status).collect();
    assert_eq!(statuses[0], 204);
    assert_eq!(*statuses.last().unwrap(), 503, "{statuses:?}");
    let r = write(&p, "db=telegraf", &body);
    assert!(error_of(&r).contains("queue"), "{}", error_of(&r));
}

#[test]
fn a_read_of_one_measurement_goes_to_one_replica_of_its_key_and_fails_over() {
    let t = MockTransport::default();
    let p = open_groups(&t, "");
    for i in 0..12 {
        let m = format!("m{i}");
        let q = format!("SELECT v FROM {m}");
        assert_eq!(query_db(&p, &q, "telegraf").status, 200);
        let got = asked(&t, &q);
        assert_eq!(got.len(), 1, "{q}: {got:?}");
        assert!(owners("telegraf", &m, None, 2).contains(&got[0]), "{q} asked {got:?}");
        // `db.rp.m` names its own database.
        let q = format!("SHOW TAG KEYS FROM other.autogen.{m}");
        assert_eq!(query_db(&p, &q, "telegraf").status, 200);
        let got = asked(&t, &q);
        assert!(got.len() == 1 && owners("other", &m, None, 2).contains(&got[0]), "{q} asked {got:?}");
        // So does `SHOW ... ON db`.
        let q = format!("SHOW FIELD KEYS ON third FROM {m}");
        assert_eq!(query_db(&p, &q, "telegraf").status, 200);
        let got = asked(&t, &q);
        assert!(got.len() == 1 && owners("third", &m, None, 2).contains(&got[0]), "{q} asked {got:?}");
    }
    // One owner down: the other answers.
    let owners_m3 = owners("telegraf", "m3", None, 2);
    t.set(owners_m3[0], Behaviour::Down);
    fastrand::seed(3);
    for i in 0..10 {
        let q = format!("SELECT v FROM m3 WHERE v = {i}");
        let r = query_db(&p, &q, "telegraf");
        assert_eq!(r.status, 200, "{}", error_of(&r));
        assert_eq!(asked(&t, &q), vec![owners_m3[1]]);
    }
    // Both down: 503, and the third backend (which has no copy) is never asked.
    t.set(owners_m3[1], Behaviour::Down);
    let r = query_db(&p, "SELECT v FROM m3 WHERE v = 99", "telegraf");
    assert_eq!(r.status, 503, "{}", error_of(&r));
    let third = NAMES.into_iter().find(|b| !owners_m3.contains(b)).unwrap();
    assert!(asked(&t, "v = 99").is_empty());
    assert!(!t.statements(third).iter().any(|q| q.contains("m3 WHERE")));
}

#[test]
fn several_measurements_in_one_from_read_one_replica_of_each_key() {
    let t = MockTransport::default();
    let p = open_config(
        &t,
        r#""_default_": "main""#,
        r#""main": {"backends": ["a", "b", "c"], "replication_factor": 1}"#,
        "",
    );
    // Find two measurements on different backends (RF 1).
    let (x, y) =
        (0..50).map(|i| format!("m{i}")).fold((None, None), |(x, y): (Option<String>, Option<String>), m| {
            match (&x, &y) {
                (None, _) => (Some(m), None),
                (Some(first), None) if owners("db", first, None, 1) != owners("db", &m, None, 1) => {
                    (x, Some(m))
                }
                _ => (x, y),
            }
        });
    let (x, y) = (x.unwrap(), y.unwrap());
    let q = format!("SELECT v FROM {x}, {y}");
    assert_eq!(query_db(&p, &q, "db").status, 200);
    let mut want = [owners("db", &x, None, 1)[0], owners("db", &y, None, 1)[0]];
    want.sort_unstable();
    assert_eq!(asked(&t, &q), want);
}

#[test]
fn regex_from_and_show_without_from_read_a_cover_of_the_group_failing_over() {
    let t = MockTransport::default();
    let p = open_config(
        &t,
        r#""_default_": "main""#,
        r#""main": {"backends": ["a", "b", "c"], "replication_factor": 2}"#,
        "",
    );
    for (i, q) in ["SHOW MEASUREMENTS", "SELECT v FROM /m.*/", "SHOW SERIES FROM /m/", "SHOW DATABASES"]
        .iter()
        .enumerate()
    {
        let r = query_db(&p, q, "telegraf");
        assert_eq!(r.status, 200, "{q}: {}", error_of(&r));
        // N - RF + 1 = 2 distinct backends of the 3.
        assert_eq!(asked(&t, q).len(), 2, "{q} (#{i}) asked {:?}", asked(&t, q));
    }
    // One backend down: the other two answer (each cover that picked it
    // replaced it).
    t.set("b", Behaviour::Down);
    let before = t.attempts("b");
    fastrand::seed(11);
    for i in 0..10 {
        let q = format!("SHOW MEASUREMENTS LIMIT {}", i + 1);
        let r = query_db(&p, &q, "telegraf");
        assert_eq!(r.status, 200, "{}", error_of(&r));
        let mut got = asked(&t, &q);
        got.retain(|b| *b != "b");
        assert_eq!(got, ["a", "c"], "{q}");
    }
    // b (still marked healthy: no health check ran) was picked and replaced.
    assert!(t.attempts("b") > before + 3, "b was asked {} times", t.attempts("b") - before);
    // Two down: not every shard can answer, 503.
    t.set("c", Behaviour::Down);
    let r = query_db(&p, "SHOW MEASUREMENTS", "telegraf");
    assert_eq!(r.status, 503, "{}", error_of(&r));
}

#[test]
fn tag_sharded_selects_are_pinned_or_fanned_out_and_the_unmergeable_are_400() {
    let t = MockTransport::default();
    let p = open_groups(&t, "");
    // Pinned: the statement as it is, to the value's replica only.
    let q = "SELECT mean(v) FROM req WHERE customer = 'c1'";
    let r = query_db(&p, q, "app");
    assert_eq!(r.status, 200, "{q}: {}", error_of(&r));
    assert_eq!(asked(&t, q).len(), 1, "{q}");
    // Not pinned: every backend of the RF-1 group (its cover is all 3),
    // asked with the shard tag grouped so each value is taken from one.
    let q = "SELECT count(v) FROM req";
    let r = query_db(&p, q, "app");
    assert_eq!(r.status, 200, "{q}: {}", error_of(&r));
    assert_eq!(asked(&t, "FROM req GROUP BY"), NAMES, "{q}");
    for (q, want) in [
        ("SELECT v FROM /.*/", "cannot be merged exactly across its shards"),
        ("SELECT v FROM m1, req", "cannot be merged exactly across its shards"),
        ("SELECT percentile(v, 90) FROM req", "percentile"),
    ] {
        let before: usize = NAMES.iter().map(|b| t.statements(b).len()).sum();
        let r = query_db(&p, q, "app");
        assert_eq!(r.status, 400, "{q}");
        let e = error_of(&r);
        assert!(e.contains(want), "{q}: {e}");
        let after: usize = NAMES.iter().map(|b| t.statements(b).len()).sum();
        assert_eq!(before, after, "a refused query reaches no backend: {q}");
    }
    // SHOW unites exactly: every backend of the RF-1 group (cover 3).
    for q in ["SHOW TAG VALUES FROM req WITH KEY = customer", "SHOW SERIES FROM req"] {
        let r = query_db(&p, q, "app");
        assert_eq!(r.status, 200, "{q}: {}", error_of(&r));
        assert_eq!(asked(&t, q), NAMES, "{q}");
    }
    // A tag-sharded group that keeps every key everywhere (RF = N) answers
    // from one backend.
    let t = MockTransport::default();
    let p = open_config(
        &t,
        r#""_default_": "full""#,
        r#""full": {"backends": ["a", "b", "c"], "replication_factor": 3, "shard_tag": "customer"}"#,
        "",
    );
    let r = query_db(&p, "SELECT v FROM req", "app");
    assert_eq!(r.status, 200, "{}", error_of(&r));
    assert_eq!(asked(&t, "SELECT v FROM req").len(), 1);
}

#[test]
fn schema_statements_go_to_every_replica_that_may_hold_the_measurement() {
    let t = MockTransport::default();
    let p = open_groups(&t, "");
    for (q, want) in [
        ("DROP MEASUREMENT m5", owners("telegraf", "m5", None, 2)),
        ("DELETE FROM m6 WHERE time < 10", owners("telegraf", "m6", None, 2)),
        ("DROP SERIES FROM other..m7", owners("other", "m7", None, 2)),
        ("DROP SERIES FROM req WHERE customer = 'c1'", NAMES.to_vec()),
        ("DROP MEASUREMENT pinned", vec!["a"]),
        ("CREATE DATABASE x", NAMES.to_vec()),
        ("CREATE RETENTION POLICY w ON x DURATION 7d REPLICATION 1", NAMES.to_vec()),
    ] {
        let r = query_db(&p, q, "telegraf");
        assert_eq!(r.status, 200, "{q}: {}", error_of(&r));
        assert_eq!(asked(&t, q), want, "{q}");
    }
}

#[test]
fn select_into_from_a_shard_group_is_400_and_reaches_no_backend() {
    let t = MockTransport::default();
    let p = open_groups(&t, r#", "allowed_statements": ["^select"]"#);
    for q in ["SELECT * INTO copy FROM m1", "SELECT * INTO copy FROM /m/", "SELECT * INTO copy FROM req"] {
        let r = query_db(&p, q, "telegraf");
        assert_eq!(r.status, 400, "{q}");
        assert!(error_of(&r).contains("SELECT ... INTO from measurements of a shard group is not supported"));
    }
    assert!(NAMES.iter().all(|b| t.statements(b).is_empty()));
    // From an explicit keymap it runs on its replicas, as before.
    let r = query_db(&p, "SELECT * INTO copy FROM pinned", "telegraf");
    assert_eq!(r.status, 200, "{}", error_of(&r));
    assert_eq!(asked(&t, "INTO copy FROM pinned"), ["a"]);
}

#[test]
fn get_replica_answers_where_a_key_lives() {
    let t = MockTransport::default();
    let p = open_groups(&t, "");
    let get = |query: &str| {
        let mut request = Request::new(Method::Get, "/replica");
        request.query = crate::http::decode_params(query);
        let r = run(p.handle(request, T0));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        (r.status, v)
    };
    let (status, v) = get("db=telegraf&measurement=cpu");
    assert_eq!(status, 200, "{v}");
    // placement's golden placement of (telegraf, cpu) over a, b, c with RF 2.
    assert_eq!(
        v,
        serde_json::json!({"db": "telegraf", "measurement": "cpu", "tag": null, "shard_group": "main",
                           "shard_tag": null, "replication_factor": 2, "replicas": ["b", "c"]})
    );
    let (_, v) = get("db=app&measurement=req&tag=c1");
    assert_eq!(v["shard_group"], "tenants");
    assert_eq!(v["shard_tag"], "customer");
    assert_eq!(v["replicas"], serde_json::json!(owners("app", "req", Some("c1"), 1)));
    let (_, v) = get("db=app&measurement=req");
    assert_eq!(v["replicas"], serde_json::json!(owners("app", "req", Some(""), 1)));
    let (_, v) = get("db=x&measurement=pinned");
    assert_eq!(
        (v["shard_group"].clone(), v["replicas"].clone()),
        (serde_json::Value::Null, serde_json::json!(["a"]))
    );
    for (query, want) in [
        ("measurement=cpu", "missing required parameter \"db\""),
        ("db=x&measurement=", "missing required parameter \"measurement\""),
    ] {
        let (status, v) = get(query);
        assert_eq!((status, v["error"].as_str()), (400, Some(want)), "{query}");
    }
    let t = MockTransport::default();
    let p = open_config(&t, r#""cpu": ["a"]"#, "", "");
    let mut request = Request::new(Method::Get, "/replica");
    request.query = crate::http::decode_params("db=x&measurement=mem");
    let r = run(p.handle(request, T0));
    assert_eq!(r.status, 400);
    assert_eq!(error_of(&r), "no route for measurement \"mem\": add a keymap or \"_default_\"");
}

/// A partial write through shard groups: each backend gets exactly what it
/// gets for the same body without its bad lines (every valid point on its
/// shard key's replicas), and the bad lines reach no backend.
#[test]
fn a_partial_write_places_the_valid_points_as_the_valid_body_alone() {
    let good =
        "req,customer=x v=1 1\nreq,customer=y v=2 2\ncpu,host=h v=3 3\npinned v=4\nreq,customer=z v=5 5\n";
    let with_bad = "req,customer=x v=1 1\nreq,customer= v=9 9\nreq,customer=y v=2 2\ncpu,host=h v=3 3\n\
                    cpu v=\"open\" 4 4\npinned v=4\nreq,customer=z v=5 5\nbad\n";
    let sent = |body: &str| {
        let t = MockTransport::default();
        let p = open_groups(&t, "");
        let mut request = Request::new(Method::Post, "/write");
        request.query = vec![("db".into(), "x".into())];
        request.body = body.as_bytes().to_vec();
        let r = run(p.handle(request, T0));
        (r, NAMES.map(|b| t.received(b)))
    };
    let (valid, expected) = sent(good);
    assert_eq!(valid.status, 204);
    let (partial, got) = sent(with_bad);
    assert_eq!(partial.status, 400);
    assert!(error_of(&partial).starts_with("partial write: unable to parse 'req,customer= v=9 9': "));
    assert!(error_of(&partial).ends_with("\nunable to parse 'bad': missing fields dropped=0"));
    assert_eq!(got, expected, "the requests of a, b, c");
    assert!(expected.iter().map(Vec::len).sum::<usize>() >= 3);
}
