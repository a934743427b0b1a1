//! Issue 7, shard groups end to end: the real proxy in front of a group of
//! three real InfluxDB 1.x servers (`influxd`) with replication factor 2,
//! next to a single reference `influxd` fed the same writes directly.
//!
//! Checked as a user would see it: every shard key `(db, measurement)` is on
//! exactly the two backends placement gives it (computed here with
//! `influx_proxy::placement`, independently of the proxy's routing), with
//! exact counts, and on no other; and a set of queries answers through the
//! proxy exactly (the same JSON) as the reference server. Then one backend of
//! the group is stopped: the same queries still answer the same, and writes
//! made meanwhile reach it through its write queue when it returns.
//!
//! Every scenario is a plain function of the way the proxy runs ([`Mode`]),
//! instantiated per mode (native binary and wasm component) by `scenarios!`
//! at the end of the file.

#[macro_use]
mod support;

use influx_proxy::placement::{place, ShardKey};
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

/// The group's backends (also their names in the proxy config).
const GROUP: [&str; 3] = ["a", "b", "c"];
const DATABASES: [&str; 2] = ["alpha", "beta"];
const MEASUREMENTS: usize = 50;
/// First timestamp of the points, in seconds.
const T0: u64 = 1_600_000_000;
/// How long a backend that returns may take to replay its queue.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Three backends of one group and the reference server.
struct Setup {
    // Field order is drop order: the proxy goes first.
    proxy: Proxy,
    backends: Vec<Influxd>,
    reference: Influxd,
}

impl Setup {
    /// Backends a, b, c in shard group `main` (RF 2, the `_default_`
    /// route), a reference server, the proxy; both databases created
    /// through the proxy and on the reference.
    fn start(mode: Mode) -> Setup {
        let mut servers = Influxd::start_many(&["a", "b", "c", "reference"]);
        let reference = servers.pop().expect("four servers");
        let backends = servers;
        let mut config = Proxy::config(&backends.iter().collect::<Vec<_>>());
        config["shard_groups"] = json!({ "main": { "backends": GROUP, "replication_factor": 2 } });
        config["keymaps"] = json!({ "_default_": "main" });
        let proxy = Proxy::start(mode, config);
        for db in DATABASES {
            proxy.query_ok(&format!("CREATE DATABASE {db}"), "");
            reference.query_ok("", &format!("CREATE DATABASE {db}"));
        }
        Setup { proxy, backends, reference }
    }

    fn backend(&self, name: &str) -> &Influxd {
        self.backends.iter().find(|b| b.name() == name).expect("a backend of the group")
    }

    /// `body` written through the proxy (asserting 204) and to the reference.
    fn write(&self, db: &str, body: &str) {
        self.proxy.write_ok(db, body);
        self.reference.write(db, body);
    }
}

/// The measurement names `m00` .. `m49`.
fn measurement(i: usize) -> String {
    format!("m{i:02}")
}

/// Points of measurement `i` in database number `d` in the first round.
fn points_of(d: usize, i: usize) -> usize {
    2 + (i + d) % 5
}

/// The two backends (names, sorted) that hold `(db, measurement)`, from
/// placement over the group.
fn owners(db: &str, measurement: &str) -> Vec<&'static str> {
    let key = ShardKey { db, measurement, tag_value: None };
    let mut names: Vec<&str> = place(&GROUP, 2, &key).into_iter().map(|i| GROUP[i]).collect();
    names.sort_unstable();
    names
}

/// One body per database holding every measurement, interleaved (so that one
/// request carries points of many shard keys): measurement `i` gets
/// `points_of(d, i)` points from `T0 + offset`, with tags `host` (and
/// `region` for even `i`) and a float, an integer and a string field.
fn bodies(offset: u64) -> Vec<(&'static str, String, Vec<usize>)> {
    DATABASES
        .iter()
        .enumerate()
        .map(|(d, db)| {
            let counts: Vec<usize> = (0..MEASUREMENTS).map(|i| points_of(d, i)).collect();
            let mut body = String::new();
            for j in 0..*counts.iter().max().unwrap_or(&0) {
                for (i, &n) in counts.iter().enumerate() {
                    if j >= n {
                        continue;
                    }
                    let region = if i % 2 == 0 { format!(",region=r{}", j % 2) } else { String::new() };
                    body.push_str(&format!(
                        "{},host=h{}{region} v={}.5,k={}i,s=\"p {j}\" {}\n",
                        measurement(i),
                        j % 3,
                        i * 10 + j,
                        j as u64 + offset,
                        T0 + offset + j as u64
                    ));
                }
            }
            (*db, body, counts)
        })
        .collect()
}

/// Asserts that each key is on exactly its two owners with `expected(db, i)`
/// points each, and on no other backend of the group.
fn assert_placed(s: &Setup, expected: impl Fn(usize, usize) -> usize) {
    for (d, db) in DATABASES.iter().enumerate() {
        for i in 0..MEASUREMENTS {
            let m = measurement(i);
            let owners = owners(db, &m);
            for backend in &s.backends {
                let want = if owners.contains(&backend.name()) { expected(d, i) as u64 } else { 0 };
                assert_eq!(
                    backend.count(db, &m),
                    want,
                    "({db}, {m}) on backend {} (owners {owners:?})",
                    backend.name()
                );
            }
        }
    }
}

/// The queries compared with the reference: (db parameter, query).
const QUERIES: &[(&str, &str)] = &[
    ("alpha", "SELECT * FROM m07"),
    ("alpha", "SELECT mean(v), sum(k), count(v), min(v), max(k), last(s) FROM m07"),
    ("beta", "SELECT count(v) FROM m12 GROUP BY host"),
    (
        "alpha",
        "SELECT mean(v) FROM m03 WHERE time >= 1600000000s AND time < 1600000100s GROUP BY time(2s) fill(none)",
    ),
    ("alpha", "SELECT * FROM m08 ORDER BY time DESC LIMIT 2 OFFSET 1"),
    ("alpha", "SELECT v FROM /m1.*/"),
    ("alpha", "SELECT count(v) FROM /m2.*/ WHERE time >= 1600000000s"),
    ("beta", "SELECT v, k FROM m01, m02, m44"),
    ("beta", "SELECT max(v) FROM m05, m06, m47 GROUP BY host"),
    ("alpha", "SELECT * FROM beta.autogen.m33"),
    ("alpha", "SHOW MEASUREMENTS"),
    ("beta", "SHOW MEASUREMENTS LIMIT 5 OFFSET 10"),
    ("beta", "SHOW MEASUREMENTS WITH MEASUREMENT =~ /m4.*/"),
    ("beta", "SHOW TAG KEYS"),
    ("alpha", "SHOW TAG KEYS LIMIT 1 OFFSET 1"),
    ("beta", "SHOW TAG KEYS FROM m06"),
    ("alpha", "SHOW TAG KEYS ON beta FROM m40"),
    ("alpha", "SHOW SERIES"),
    ("alpha", "SHOW SERIES LIMIT 7 OFFSET 3"),
    ("beta", "SHOW SERIES FROM /m3.*/"),
    ("beta", "SHOW FIELD KEYS"),
    ("alpha", "SHOW FIELD KEYS FROM m05"),
    ("alpha", "SHOW TAG VALUES WITH KEY = host"),
    ("beta", "SHOW TAG VALUES FROM m10 WITH KEY = region"),
    ("", "SHOW DATABASES"),
    ("alpha", "SELECT * FROM m01; SHOW MEASUREMENTS LIMIT 3; SELECT count(k) FROM m30"),
];

/// Asserts that every query of [`QUERIES`] answers through the proxy what
/// the reference answers (status 200, equal JSON). Asked `rounds` times,
/// since the proxy picks replicas at random.
fn assert_reads_as_the_reference(s: &Setup, rounds: usize, when: &str) {
    for _ in 0..rounds {
        for (db, q) in QUERIES {
            let want = s.reference.query(db, q);
            assert!(query_error(&want).is_none(), "the reference fails {q:?}: {want}");
            let (status, got) = s.proxy.query(q, db);
            assert_eq!(status, 200, "{when}: {q:?} on {db:?} through the proxy: {got}");
            assert_eq!(
                got, want,
                "{when}: {q:?} on {db:?}: the proxy (left) differs from one influxd (right)"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Every key on exactly its owners; reads as one influxd
// ---------------------------------------------------------------------------

fn fifty_measurements_in_two_databases_are_on_exactly_their_owners_and_read_as_one_influxd(mode: Mode) {
    let s = Setup::start(mode);
    for (db, body, _) in bodies(0) {
        s.write(db, &body);
    }
    assert_placed(&s, points_of);
    // Both owners of a key hold the same points.
    for db in DATABASES {
        for i in [0, 17, 49] {
            let m = measurement(i);
            let owners = owners(db, &m);
            assert_eq!(s.backend(owners[0]).rows(db, &m), s.backend(owners[1]).rows(db, &m), "({db}, {m})");
        }
    }
    // The proxy tells where a key lives, as placement says.
    let resp = s.proxy.get("/replica?db=alpha&measurement=m07");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["replicas"], json!(owners("alpha", "m07")));
    assert_eq!(resp.json()["shard_group"], "main");
    assert_reads_as_the_reference(&s, 2, "all backends up");
    // DROP MEASUREMENT reaches both owners (and only them hold it).
    s.proxy.query_ok("DROP MEASUREMENT m09", "alpha");
    s.reference.query_ok("alpha", "DROP MEASUREMENT m09");
    for backend in &s.backends {
        assert_eq!(backend.count("alpha", "m09"), 0, "m09 after DROP MEASUREMENT on {}", backend.name());
    }
    assert_reads_as_the_reference(&s, 1, "after DROP MEASUREMENT");
}

// ---------------------------------------------------------------------------
// 2. One backend down: reads fail over, writes are queued and delivered
// ---------------------------------------------------------------------------

fn one_backend_down_reads_still_answer_and_its_writes_arrive_when_it_returns(mode: Mode) {
    let mut s = Setup::start(mode);
    for (db, body, _) in bodies(0) {
        s.write(db, &body);
    }
    let index = s.backends.iter().position(|b| b.name() == "b").expect("backend b");
    s.backends[index].stop();
    // At once, while the proxy may still think b is up: a replica or cover
    // backend that does not answer is replaced by another.
    assert_reads_as_the_reference(&s, 1, "b just stopped");
    wait_until(Duration::from_secs(10), "the proxy sees b down", || {
        let health = s.proxy.health();
        match health_backend(&health, "b").and_then(is_healthy) {
            Some(false) => Ok(()),
            other => Err(format!("b healthy: {other:?}")),
        }
    });
    assert_reads_as_the_reference(&s, 2, "b down");
    // A second round of points while b is down: 204 (b's share queued).
    for (db, body, _) in bodies(1000) {
        s.write(db, &body);
    }
    assert_reads_as_the_reference(&s, 1, "b down, after more writes");
    s.backends[index].restart();
    wait_until(CATCH_UP, "b replays its queue", || {
        let health = s.proxy.health();
        let entry = health_backend(&health, "b").cloned().unwrap_or(Value::Null);
        match (is_healthy(&entry), queue_depth(&entry)) {
            (Some(true), 0) => Ok(()),
            other => Err(format!("b (healthy, queue depth): {other:?}: {entry}")),
        }
    });
    assert_placed(&s, |d, i| 2 * points_of(d, i));
    assert_reads_as_the_reference(&s, 2, "b back");
}

// ---------------------------------------------------------------------------
// 3. A group sharded by a tag
// ---------------------------------------------------------------------------

fn tag_sharded_points_are_on_their_owners_and_shows_and_selects_answer_as_one_influxd(mode: Mode) {
    let mut servers = Influxd::start_many(&["a", "b", "c", "reference"]);
    let reference = servers.pop().expect("four servers");
    let mut config = Proxy::config(&servers.iter().collect::<Vec<_>>());
    config["shard_groups"] =
        json!({ "tenants": { "backends": GROUP, "replication_factor": 2, "shard_tag": "customer" } });
    config["keymaps"] = json!({ "_default_": "tenants" });
    let proxy = Proxy::start(mode, config);
    proxy.query_ok("CREATE DATABASE app", "");
    reference.query_ok("", "CREATE DATABASE app");
    // 20 customers and points without the tag (the shard of "").
    let mut body = String::new();
    let mut want: Vec<(String, u64)> = Vec::new();
    for c in 0..20u64 {
        let customer = format!("c{c}");
        for j in 0..(1 + c % 3) {
            body.push_str(&format!("req,customer={customer},host=h{j} v={j} {}\n", T0 + c * 10 + j));
        }
        want.push((customer, 1 + c % 3));
    }
    body.push_str(&format!("req,host=h0 v=1 {}\nreq,host=h1 v=2 {}\n", T0 + 5, T0 + 6));
    want.push((String::new(), 2));
    proxy.write_ok("app", &body);
    reference.write("app", &body);
    for (customer, n) in &want {
        let key = ShardKey { db: "app", measurement: "req", tag_value: Some(customer) };
        let owners: Vec<&str> = place(&GROUP, 2, &key).into_iter().map(|i| GROUP[i]).collect();
        let q = format!("SELECT count(v) FROM req WHERE customer = '{customer}'");
        for server in &servers {
            let got = count_of(&server.query_ok("app", &q));
            let expected = if owners.contains(&server.name()) { *n } else { 0 };
            assert_eq!(got, expected, "customer {customer:?} on {} (owners {owners:?})", server.name());
        }
        let resp = proxy.get(&format!("/replica?db=app&measurement=req&tag={customer}"));
        let mut sorted = owners.clone();
        sorted.sort_unstable();
        assert_eq!(resp.json()["replicas"], json!(sorted), "{resp:?}");
    }
    for q in [
        "SHOW TAG VALUES WITH KEY = customer",
        "SHOW TAG VALUES FROM req WITH KEY = customer LIMIT 5 OFFSET 3",
        "SHOW SERIES FROM req",
        "SHOW TAG KEYS FROM req",
        "SHOW FIELD KEYS FROM req",
        "SHOW MEASUREMENTS",
    ] {
        let (status, got) = proxy.query(q, "app");
        assert_eq!(status, 200, "{q}: {got}");
        assert_eq!(got, reference.query("app", q), "{q}: the proxy (left) differs from one influxd (right)");
    }
    // SELECTs, pinned (to one shard or several) and fanned out, merged
    // exactly: the same JSON as one influxd holding everything.
    let range = format!("time >= {T0}s AND time < {}s", T0 + 200);
    for q in [
        "SELECT count(v) FROM req".to_string(),
        "SELECT sum(v), min(v), max(v), mean(v), spread(v) FROM req".to_string(),
        "SELECT first(v) FROM req".to_string(),
        "SELECT last(v) FROM req".to_string(),
        "SELECT count(v) AS n, mean(v) FROM req GROUP BY customer".to_string(),
        format!("SELECT count(v), sum(v), mean(v) FROM req WHERE {range} GROUP BY time(50s) fill(none)"),
        format!("SELECT count(v), max(v) FROM req WHERE {range} GROUP BY time(50s) fill(0)"),
        format!("SELECT mean(v) FROM req WHERE {range} GROUP BY time(40s), host fill(null)"),
        // One customer per 10 s bucket (from T0 + 10 s on): selectors over
        // bucket starts are exact there.
        format!(
            "SELECT min(v), spread(v), first(v), last(v) FROM req WHERE time >= {}s AND time < {}s \
             GROUP BY time(10s)",
            T0 + 10,
            T0 + 200
        ),
        format!(
            "SELECT first(v), last(v), count(v) FROM req WHERE time >= {}s AND time < {}s \
             GROUP BY time(10s) fill(previous)",
            T0 + 10,
            T0 + 200
        ),
        "SELECT * FROM req".to_string(),
        "SELECT * FROM req ORDER BY time DESC LIMIT 5 OFFSET 2".to_string(),
        "SELECT v, host FROM req WHERE customer = 'c3' OR customer = 'c7'".to_string(),
        "SELECT mean(v) FROM req WHERE customer = 'c4'".to_string(),
        "SELECT count(v) FROM req WHERE host = 'h1'".to_string(),
    ] {
        let (status, got) = proxy.query(&q, "app");
        assert_eq!(status, 200, "{q}: {got}");
        let want = reference.query("app", &q);
        let series = &want["results"][0]["series"];
        assert!(series.as_array().is_some_and(|s| !s.is_empty()), "{q}: the reference holds data: {want}");
        assert_eq!(got, want, "{q}: the proxy (left) differs from one influxd (right)");
    }
    // Not mergeable exactly across shards: 400 naming the function and how to
    // make it exact, and nothing asked.
    let (status, got) = proxy.query("SELECT percentile(v, 50) FROM req", "app");
    assert_eq!(status, 400, "{got}");
    let e = got["error"].as_str().unwrap_or_default();
    assert!(e.contains("percentile") && e.contains("customer"), "{e}");
}

// ---------------------------------------------------------------------------
// 4. Backends that lost data, escaped pins, reads without a database (found
//    by attacking the shard groups as a user would)
// ---------------------------------------------------------------------------

/// The sorted names of the `rf` owners of `(db, measurement, tag)` among
/// `group`.
fn owners_in<'g>(group: &[&'g str], rf: usize, db: &str, m: &str, tag: Option<&str>) -> Vec<&'g str> {
    let key = ShardKey { db, measurement: m, tag_value: tag };
    let mut v: Vec<&str> = place(group, rf, &key).into_iter().map(|i| group[i]).collect();
    v.sort_unstable();
    v
}

/// `group` (backends named as given, RF `rf`, sharded by tag `customer`) as
/// the route of measurement `req`, every other measurement on the first
/// backend; database `app` created through the proxy and on the reference.
fn tenants(mode: Mode, names: &[&str], rf: usize) -> (Proxy, Vec<Influxd>, Influxd) {
    let mut all: Vec<&str> = names.to_vec();
    all.push("reference");
    let mut servers = Influxd::start_many(&all);
    let reference = servers.pop().expect("the reference");
    let mut config = Proxy::config(&servers.iter().collect::<Vec<_>>());
    config["shard_groups"] =
        json!({ "tenants": { "backends": names, "replication_factor": rf, "shard_tag": "customer" } });
    config["keymaps"] = json!({ "req": "tenants", "_default_": [names[0]] });
    let proxy = Proxy::start(mode, config);
    proxy.query_ok("CREATE DATABASE app", "");
    reference.query_ok("", "CREATE DATABASE app");
    (proxy, servers, reference)
}

/// InfluxQL reads `\"` in a single-quoted string as `"` (and `\'` in a
/// double-quoted identifier as `'`; influxql `ScanString`). A SELECT pinning
/// the shard tag to a value written with `\"` must go to that value's shard:
/// the value `t<i>"x` is chosen so that it and the literal text `t<i>\"x`
/// have different owners (RF 1), so a misread pin asks the wrong backend.
fn a_pinned_value_with_an_escaped_double_quote_reads_its_own_shard(mode: Mode) {
    let group = ["a", "b"];
    let value = (0..100)
        .map(|i| format!("t{i}\"x"))
        .find(|v| {
            let misread = v.replace('"', "\\\"");
            owners_in(&group, 1, "app", "req", Some(v)) != owners_in(&group, 1, "app", "req", Some(&misread))
        })
        .expect("a value placed apart from its misreading");
    let (proxy, _servers, reference) = tenants(mode, &group, 1);
    let body = format!("req,customer={value} v=1 {T0}\nreq,customer=other v=2 {}\n", T0 + 1);
    proxy.write_ok("app", &body);
    reference.write("app", &body);
    let literal = value.replace('"', "\\\"");
    let q = format!("SELECT * FROM req WHERE customer = '{literal}'");
    let want = reference.query_ok("app", &q);
    assert!(want["results"][0]["series"].is_array(), "the reference finds the point: {want}");
    let (status, got) = proxy.query(&q, "app");
    assert_eq!(status, 200, "{q}: {got}");
    assert_eq!(got, want, "{q}: the proxy (left) differs from one influxd (right)");
}

/// A SELECT of a tag-sharded measurement without any database (no `db`
/// parameter, no `db.rp.m`) is InfluxDB's "database name required", not a
/// refusal claiming the single measurement cannot be merged.
fn a_tag_sharded_select_without_a_database_answers_database_name_required(mode: Mode) {
    let (proxy, _servers, reference) = tenants(mode, &["a", "b", "c"], 2);
    let body = format!("req,customer=c1 v=1 {T0}\nreq,customer=c2 v=2 {}\n", T0 + 1);
    proxy.write_ok("app", &body);
    reference.write("app", &body);
    for q in ["SELECT * FROM req", "SELECT count(v) FROM req GROUP BY customer"] {
        let want = reference.query("", q);
        assert_eq!(want["results"][0]["error"], "database name required", "{want}");
        let (status, got) = proxy.query(q, "");
        assert_eq!(status, 200, "{q} without a database: {got}");
        assert_eq!(got, want, "{q}: the proxy (left) differs from one influxd (right)");
    }
}

/// A backend of a measurement-sharded group that lost a database (dropped
/// behind the proxy's back, as a server that lost its data) answers reads of
/// it with an `error` result. A read of a cover of the group (regex FROM,
/// `SHOW SERIES` without FROM) that asks it must not drop that error and answer the
/// other backends' data as if complete: the keys it shares with the backend
/// left out of the cover would be missing. It fails over to that backend
/// instead. Asked several times, since the cover is picked at random.
fn a_cover_backend_answering_an_error_is_replaced_not_ignored(mode: Mode) {
    let s = Setup::start(mode);
    let (proxy, reference) = (&s.proxy, &s.reference);
    let body: String = (0..12).map(|i| format!("m{i:02},host=h{} v={i} {}\n", i % 3, T0 + i)).collect();
    s.write("alpha", &body);
    // Some key lives on c and one other backend only.
    assert!((0..12).any(|i| owners_in(&GROUP, 2, "alpha", &format!("m{i:02}"), None).contains(&"c")));
    s.backend("c").query_ok("", "DROP DATABASE alpha");
    // (`SHOW MEASUREMENTS` of a missing database is an empty answer, not an
    // error: nothing tells the proxy, only a resync can.)
    for q in ["SELECT count(v) FROM /m.*/", "SHOW SERIES", "SELECT v FROM /m0.*/ WHERE time >= 0"] {
        let want = reference.query_ok("alpha", q);
        for round in 0..8 {
            let (status, got) = proxy.query(q, "alpha");
            assert_eq!(status, 200, "{q}: {got}");
            assert_eq!(got, want, "{q} (round {round}): the proxy (left) differs from one influxd (right)");
        }
    }
}

/// The same lost database, read by a SELECT of several measurements whose
/// keys live on different replica sets (one backend asked per set): the
/// answer is the reference's or an error, never a 200 that silently lacks the
/// measurements of the set whose backend answered the error.
fn a_replica_set_answering_an_error_fails_a_multi_set_select_loudly(mode: Mode) {
    let s = Setup::start(mode);
    let (proxy, reference) = (&s.proxy, &s.reference);
    let names: Vec<String> = (0..12).map(|i| format!("m{i:02}")).collect();
    let body: String =
        names.iter().enumerate().map(|(i, m)| format!("{m} v={i} {}\n", T0 + i as u64)).collect();
    s.write("alpha", &body);
    s.backend("c").query_ok("", "DROP DATABASE alpha");
    let q = format!("SELECT v FROM {}", names.join(", "));
    let want = reference.query_ok("alpha", &q);
    for round in 0..8 {
        let (status, got) = proxy.query(&q, "alpha");
        if status == 200 && query_error(&got).is_none() {
            assert_eq!(got, want, "round {round}: a 200 answer without error must be complete");
        }
    }
}

scenarios!(native: Mode::Native, wasm: Mode::Wasm; [
    fifty_measurements_in_two_databases_are_on_exactly_their_owners_and_read_as_one_influxd,
    one_backend_down_reads_still_answer_and_its_writes_arrive_when_it_returns,
    tag_sharded_points_are_on_their_owners_and_shows_and_selects_answer_as_one_influxd,
    a_pinned_value_with_an_escaped_double_quote_reads_its_own_shard,
    a_tag_sharded_select_without_a_database_answers_database_name_required,
    a_cover_backend_answering_an_error_is_replaced_not_ignored,
    a_replica_set_answering_an_error_fails_a_multi_set_select_loudly,
]);
