//! The InfluxDB 3 HTTP API (`src/api_v3.rs`) end to end: the real proxy in
//! front of two real InfluxDB 1.x servers, driven with curl-style requests as
//! InfluxDB 3's docs show them and with the official InfluxDB 3 Python client
//! (`influxdb3-python`, installed by `.ci/setup` into
//! /opt/influx-proxy-tools). Checked as a user sees it: status codes, bodies,
//! content types, and the points read directly from each `influxd`.

#[macro_use]
mod support;

use serde_json::json;
use std::process::Command;
use std::time::Duration;
use support::*;

const DB: &str = "v3test";
const CATCH_UP: Duration = Duration::from_secs(30);

/// The `time` values (ns) of `measurement` on `server`, in order.
fn times(server: &Influxd, measurement: &str) -> Vec<i64> {
    server.rows(DB, measurement).1.iter().map(|r| r[0].as_i64().unwrap_or(-1)).collect()
}

fn create_db(c: &Cluster) {
    let r = c.proxy.request(
        "POST",
        "/api/v3/configure/database",
        &[("content-type", "application/json")],
        Some(json!({"db": DB}).to_string().into_bytes()),
    );
    assert_eq!(r.status, 200, "create database: {r:?}");
}

fn write_lp_auto_precision_mixes_units_in_one_body(mode: Mode) {
    let c = Cluster::start(mode);
    create_db(&c);
    // The same kind of instant in s, ms, µs and ns, one body.
    let body = "cpu,host=a v=1 1708976567\ncpu,host=a v=2 1708976568000\ncpu,host=a v=3 1708976569000000\ncpu,host=a v=4 1708976570000000000\n";
    let r = c.proxy.request("POST", &format!("/api/v3/write_lp?db={DB}"), &[], Some(body.into()));
    assert_eq!(r.status, 204, "{r:?}");
    let want: Vec<i64> = (0..4).map(|i| (1_708_976_567 + i) * 1_000_000_000).collect();
    for server in c.backends() {
        assert_eq!(times(server, "cpu"), want, "on {}", server.name());
    }
    // An explicit unit, in InfluxDB 3's long spelling.
    let r = c.proxy.request(
        "POST",
        &format!("/api/v3/write_lp?db={DB}&precision=millisecond"),
        &[],
        Some("mem v=1 1708976567001\n".into()),
    );
    assert_eq!(r.status, 204, "{r:?}");
    for server in c.backends() {
        assert_eq!(times(server, "mem"), [1_708_976_567_001_000_000], "on {}", server.name());
    }
    // gzip body, as InfluxDB 3 takes it.
    let r = c.proxy.request(
        "POST",
        &format!("/api/v3/write_lp?db={DB}"),
        &[("content-encoding", "gzip")],
        Some(gzip(b"disk v=1 1708976567\n")),
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(times(&c.b, "disk"), [1_708_976_567_000_000_000]);
    let r = c.proxy.request(
        "POST",
        &format!("/api/v3/write_lp?db={DB}&precision=hour"),
        &[],
        Some("m v=1 1\n".into()),
    );
    assert_eq!((r.status, r.error()), (400, "unrecognized precision unit: hour".to_string()));
    let r = c.proxy.request("POST", "/api/v3/write_lp", &[], Some("m v=1 1\n".into()));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("db"), "{r:?}");
}

fn write_lp_partial_writes_and_all_or_nothing(mode: Mode) {
    let c = Cluster::start(mode);
    create_db(&c);
    let body = "cpu v=1 1708976567\nthis is not line protocol\ncpu v=2 1708976568\n";
    let r = c.proxy.request("POST", &format!("/api/v3/write_lp?db={DB}"), &[], Some(body.into()));
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["error"], "partial write of line protocol occurred", "{v}");
    assert_eq!(v["data"][0]["line_number"], 2, "{v}");
    assert_eq!(v["data"][0]["original_line"], "this is not line pro", "{v}");
    assert!(v["data"][0]["error_message"].is_string(), "{v}");
    for server in c.backends() {
        assert_eq!(server.count(DB, "cpu"), 2, "valid lines written on {}", server.name());
    }
    let body = "mem v=1 1708976567\nmem v=\n";
    let r = c.proxy.request(
        "POST",
        &format!("/api/v3/write_lp?db={DB}&accept_partial=false"),
        &[],
        Some(body.into()),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let v = r.json();
    assert_eq!(v["error"], "line protocol parsing error", "{v}");
    assert_eq!(v["data"]["line_number"], 2, "{v}");
    for server in c.backends() {
        assert_eq!(server.count(DB, "mem"), 0, "nothing written on {}", server.name());
    }
}

fn write_lp_creates_a_missing_database(mode: Mode) {
    let c = Cluster::start(mode);
    let r = c.proxy.request("POST", "/api/v3/write_lp?db=fresh", &[], Some("cpu v=1 1708976567\n".into()));
    assert_eq!(r.status, 204, "{r:?}");
    for server in c.backends() {
        assert_eq!(server.count("fresh", "cpu"), 1, "on {}", server.name());
    }
}

/// The database is on a only: the first write lands on a, b answers
/// "database not found", the proxy creates it and writes again. Points
/// without a timestamp must not be stored twice on a (a second stamp would
/// make a second point), and both replicas must hold the same points.
fn write_lp_creating_the_database_on_one_backend_stores_each_point_once(mode: Mode) {
    let c = Cluster::start(mode);
    c.a.query_ok("", "CREATE DATABASE half");
    let r = c.proxy.request(
        "POST",
        "/api/v3/write_lp?db=half",
        &[],
        Some("cpu,host=x v=1\ncpu,host=y v=2\n".into()),
    );
    assert_eq!(r.status, 204, "{r:?}");
    let (columns, a) = c.a.rows("half", "cpu");
    assert_eq!(a.len(), 2, "two points on a, once each: {columns} {a:?}");
    assert_eq!(c.b.rows("half", "cpu").1, a, "b holds what a holds");
}

fn write_lp_no_sync_answers_once_queued_and_is_delivered(mode: Mode) {
    let mut c = Cluster::start(mode);
    create_db(&c);
    c.b.stop();
    let r = c.proxy.request(
        "POST",
        &format!("/api/v3/write_lp?db={DB}&no_sync=true"),
        &[],
        Some("cpu v=1 1708976567\ncpu v=2 1708976568\n".into()),
    );
    assert_eq!(r.status, 204, "{r:?}");
    // Queued for a as well (it is up): delivered by replay.
    wait_until(CATCH_UP, "a has the no_sync points", || match c.a.count(DB, "cpu") {
        2 => Ok(()),
        n => Err(format!("{n} points")),
    });
    c.b.restart();
    wait_until(CATCH_UP, "b caught up", || match c.b.count(DB, "cpu") {
        2 => Ok(()),
        n => Err(format!("{n} points")),
    });
}

fn query_influxql_formats(mode: Mode) {
    let c = Cluster::start(mode);
    create_db(&c);
    // The README's example: seconds and milliseconds in one body (auto).
    let body = "cpu,host=a usage=1.5 1708976567\ncpu,host=b usage=3 1708976567000";
    let r = c.proxy.request("POST", &format!("/api/v3/write_lp?db={DB}"), &[], Some(body.into()));
    assert_eq!(r.status, 204, "{r:?}");
    let q = "SELECT%20usage%20FROM%20cpu%20GROUP%20BY%20host";
    let r = c.proxy.get(&format!("/api/v3/query_influxql?db={DB}&q={q}"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!([
            {"iox::measurement": "cpu", "time": "2024-02-26T19:42:47", "host": "a", "usage": 1.5},
            {"iox::measurement": "cpu", "time": "2024-02-26T19:42:47", "host": "b", "usage": 3}
        ])
    );
    let r = c.proxy.get(&format!("/api/v3/query_influxql?db={DB}&q={q}&format=jsonl"));
    assert_eq!(r.header("content-type"), Some("application/jsonl"));
    assert_eq!(r.body.lines().count(), 2, "{r:?}");
    let r = c.proxy.get(&format!("/api/v3/query_influxql?db={DB}&q={q}&format=csv"));
    assert_eq!(r.header("content-type"), Some("text/csv"));
    assert_eq!(
        r.body,
        "iox::measurement,time,host,usage\ncpu,2024-02-26T19:42:47,a,1.5\ncpu,2024-02-26T19:42:47,b,3\n"
    );
    let r = c.proxy.request(
        "GET",
        &format!("/api/v3/query_influxql?db={DB}&q={q}"),
        &[("accept", "text/plain")],
        None,
    );
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(r.body.starts_with("+------------------+"), "{}", r.body);
    assert!(r.body.contains("| cpu              | 2024-02-26T19:42:47 | a    | 1.5   |"), "{}", r.body);
    // POST with a JSON body, as InfluxDB 3's docs show it.
    let r = c.proxy.request(
        "POST",
        "/api/v3/query_influxql",
        &[("content-type", "application/json")],
        Some(
            json!({"db": DB, "q": "SELECT count(usage) FROM cpu", "format": "json"}).to_string().into_bytes(),
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!([{"iox::measurement": "cpu", "time": "1970-01-01T00:00:00", "count": 2}]));
    // What a 1.x backend cannot answer: a clear 501, not a 404.
    let r = c.proxy.get(&format!("/api/v3/query_influxql?db={DB}&q={q}&format=parquet"));
    assert_eq!(r.status, 501, "{r:?}");
    assert!(r.error().contains("parquet"), "{r:?}");
    let r = c.proxy.get(&format!("/api/v3/query_sql?db={DB}&q=SELECT%201"));
    assert_eq!(r.status, 501, "{r:?}");
    assert!(r.error().contains("SQL"), "{r:?}");
    let r = c.proxy.get(&format!("/api/v3/query_influxql?db=nope&q={q}"));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("database not found"), "{r:?}");
}

fn configure_database_lists_creates_and_drops_on_every_backend(mode: Mode) {
    let mut c = Cluster::start(mode);
    create_db(&c);
    let r = c.proxy.get("/api/v3/configure/database?format=json");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!([{"iox::database": DB}]));
    let r = c.proxy.get("/api/v3/configure/database?format=csv");
    assert_eq!(r.body, format!("iox::database\n{DB}\n"));
    // b down: the CREATE is queued for it.
    c.b.stop();
    let r = c.proxy.request("POST", "/api/v3/configure/database", &[], Some(br#"{"db":"other"}"#.to_vec()));
    assert_eq!(r.status, 200, "{r:?}");
    c.b.restart();
    wait_until(CATCH_UP, "b has database other", || {
        let dbs = c.b.databases();
        if dbs.contains(&"other".to_string()) {
            Ok(())
        } else {
            Err(format!("{dbs:?}"))
        }
    });
    let r = c.proxy.request("DELETE", &format!("/api/v3/configure/database?db={DB}"), &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    wait_until(CATCH_UP, "both dropped the database", || {
        let dbs: Vec<Vec<String>> = c.backends().iter().map(|s| s.databases()).collect();
        if dbs.iter().all(|d| d == &["other"]) {
            Ok(())
        } else {
            Err(format!("{dbs:?}"))
        }
    });
    let r = c.proxy.request("POST", "/api/v3/configure/database", &[], Some(b"{}".to_vec()));
    assert_eq!(r.status, 400, "{r:?}");
}

fn ping_and_health_keep_their_answers(mode: Mode) {
    let c = Cluster::start(mode);
    let r = c.proxy.get("/ping");
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.header("x-influxdb-version").is_some(), "{r:?}");
    let h = c.proxy.health();
    assert!(health_backend(&h, "a").is_some() && health_backend(&h, "b").is_some(), "{h}");
}

/// The official client: `write()` over /api/v2/write (its default), over
/// /api/v3/write_lp (`write_use_v2_api=False`) and with `no_sync=True`.
fn influxdb3_python_client_writes(mode: Mode) {
    let python = "/opt/influx-proxy-tools/bin/python";
    let check = Command::new(python).args(["-c", "import influxdb_client_3"]).output();
    assert!(
        check.as_ref().is_ok_and(|o| o.status.success()),
        "the influxdb3-python package is missing: run `bash .ci/setup` (it installs influxdb3-python \
         into the venv /opt/influx-proxy-tools): {check:?}"
    );
    let c = Cluster::start(mode);
    create_db(&c);
    let script = r#"
import sys
from influxdb_client_3 import InfluxDBClient3, write_client_options, WriteOptions, WriteType
host, db = sys.argv[1], sys.argv[2]
def client(**opts):
    wo = WriteOptions(write_type=WriteType.synchronous, **opts)
    return InfluxDBClient3(host=host, database=db, token="unused", write_client_options=write_client_options(write_options=wo))
client().write(record="py,api=v2 v=1 1708976567000000000")
client(use_v2_api=False).write(record="py,api=v3 v=2 1708976568000000000")
client(use_v2_api=False, no_sync=True).write(record="py,api=nosync v=3 1708976569000000000")
print("ok")
"#;
    let out = Command::new(python).args(["-c", script, &c.proxy.url(), DB]).output().expect("run python");
    assert!(
        out.status.success(),
        "python client: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Each write went where the client says it sends it.
    let metrics = c.proxy.get("/metrics").body;
    let answered = |endpoint: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("influx_proxy_requests_total{")
                    && l.contains(&format!("endpoint=\"{endpoint}\""))
                    && l.contains("status=\"204\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    assert_eq!(answered("api_v2_write").as_deref(), Some("1"), "{metrics}");
    assert_eq!(answered("api_v3_write_lp").as_deref(), Some("2"), "{metrics}");
    for server in c.backends() {
        wait_until(CATCH_UP, "the client's three points", || match server.count(DB, "py") {
            3 => Ok(()),
            n => Err(format!("{n} points on {}", server.name())),
        });
    }
}

scenarios!(native: Mode::Native, wasm: Mode::Wasm; [
    write_lp_auto_precision_mixes_units_in_one_body,
    write_lp_partial_writes_and_all_or_nothing,
    write_lp_creates_a_missing_database,
    write_lp_creating_the_database_on_one_backend_stores_each_point_once,
    write_lp_no_sync_answers_once_queued_and_is_delivered,
    query_influxql_formats,
    configure_database_lists_creates_and_drops_on_every_backend,
    ping_and_health_keep_their_answers,
    influxdb3_python_client_writes,
]);
