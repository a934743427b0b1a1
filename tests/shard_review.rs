//! Shard groups attacked as a user would (review of issue 7, "Configuration"
//! and "Writes and queries"): the real proxy in front of real InfluxDB 1.x
//! servers (`influxd`), next to a single reference `influxd` fed the same
//! writes directly; what the proxy answers must be what the reference
//! answers.

#[macro_use]
mod support;

use influx_proxy::placement::{place, ShardKey};
use serde_json::json;
use support::*;

const T0: u64 = 1_600_000_000;

/// The sorted names of the `rf` owners of `(db, measurement, tag)` among
/// `group`.
fn owners<'g>(group: &[&'g str], rf: usize, db: &str, m: &str, tag: Option<&str>) -> Vec<&'g str> {
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
            owners(&group, 1, "app", "req", Some(v)) != owners(&group, 1, "app", "req", Some(&misread))
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
    let group = ["a", "b", "c"];
    let mut servers = Influxd::start_many(&["a", "b", "c", "reference"]);
    let reference = servers.pop().expect("the reference");
    let mut config = Proxy::config(&servers.iter().collect::<Vec<_>>());
    config["shard_groups"] = json!({ "main": { "backends": group, "replication_factor": 2 } });
    config["keymaps"] = json!({ "_default_": "main" });
    let proxy = Proxy::start(mode, config);
    proxy.query_ok("CREATE DATABASE app", "");
    reference.query_ok("", "CREATE DATABASE app");
    let body: String = (0..12).map(|i| format!("m{i:02},host=h{} v={i} {}\n", i % 3, T0 + i)).collect();
    proxy.write_ok("app", &body);
    reference.write("app", &body);
    // Some key lives on c and one other backend only.
    assert!((0..12).any(|i| owners(&group, 2, "app", &format!("m{i:02}"), None).contains(&"c")));
    servers[2].query_ok("", "DROP DATABASE app");
    // (`SHOW MEASUREMENTS` of a missing database is an empty answer, not an
    // error: nothing tells the proxy, only a resync can.)
    for q in ["SELECT count(v) FROM /m.*/", "SHOW SERIES", "SELECT v FROM /m0.*/ WHERE time >= 0"] {
        let want = reference.query_ok("app", q);
        for round in 0..8 {
            let (status, got) = proxy.query(q, "app");
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
    let group = ["a", "b", "c"];
    let mut servers = Influxd::start_many(&["a", "b", "c", "reference"]);
    let reference = servers.pop().expect("the reference");
    let mut config = Proxy::config(&servers.iter().collect::<Vec<_>>());
    config["shard_groups"] = json!({ "main": { "backends": group, "replication_factor": 2 } });
    config["keymaps"] = json!({ "_default_": "main" });
    let proxy = Proxy::start(mode, config);
    proxy.query_ok("CREATE DATABASE app", "");
    reference.query_ok("", "CREATE DATABASE app");
    let names: Vec<String> = (0..12).map(|i| format!("m{i:02}")).collect();
    let body: String =
        names.iter().enumerate().map(|(i, m)| format!("{m} v={i} {}\n", T0 + i as u64)).collect();
    proxy.write_ok("app", &body);
    reference.write("app", &body);
    servers[2].query_ok("", "DROP DATABASE app");
    let q = format!("SELECT v FROM {}", names.join(", "));
    let want = reference.query_ok("app", &q);
    for round in 0..8 {
        let (status, got) = proxy.query(&q, "app");
        if status == 200 && query_error(&got).is_none() {
            assert_eq!(got, want, "round {round}: a 200 answer without error must be complete");
        }
    }
}

scenarios!(native: Mode::Native, wasm: Mode::Wasm; [
    a_pinned_value_with_an_escaped_double_quote_reads_its_own_shard,
    a_tag_sharded_select_without_a_database_answers_database_name_required,
    a_cover_backend_answering_an_error_is_replaced_not_ignored,
    a_replica_set_answering_an_error_fails_a_multi_set_select_loudly,
]);
