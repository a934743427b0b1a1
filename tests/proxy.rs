//! End-to-end scenarios of issue 2: the real proxy in front of two real
//! InfluxDB 1.x servers (`influxd`), checked the way a user would see it:
//! status codes, error bodies and exact point counts on each backend, read
//! directly from each `influxd` (not through the proxy).
//!
//! Every scenario is a plain function of the way the proxy runs ([`Mode`]) and
//! is instantiated once per mode by `scenarios!` at the end of the file. Each
//! test starts its own pair of `influxd` servers and its own proxy on free
//! ports, so the tests run in parallel.

#[macro_use]
mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const DB: &str = "itest";
/// How long a recovered backend may take to catch up (replay).
const CATCH_UP: Duration = Duration::from_secs(30);

/// The keymaps of the routing scenarios: exact keys, a longer prefix key, keys
/// whose names contain a space and a comma, and `_default_`.
fn routing_keymaps(config: &mut Value) {
    config["keymaps"] = json!({
        "cpu": ["a", "b"],
        "cpu.load": ["b"],
        "mem": ["a"],
        "disk io": ["b"],
        "net,if": ["a"],
        "_default_": ["a", "b"],
    });
}

/// The `v` values of `SELECT v FROM <m>` through the proxy, in time order.
fn proxy_values(proxy: &Proxy, measurement: &str) -> Vec<Value> {
    let v = proxy.query_ok(&format!("SELECT v FROM {}", ident(measurement)), DB);
    column(&v, "v")
}

/// The `v` values of `measurement` on one backend directly, in time order.
fn backend_values(server: &Influxd, measurement: &str) -> Vec<Value> {
    let (columns, rows) = server.rows(DB, measurement);
    let index = columns
        .as_array()
        .and_then(|c| c.iter().position(|name| name == "v"))
        .unwrap_or_else(|| panic!("no column v in {columns} on {}", server.name()));
    rows.iter().map(|row| row[index].clone()).collect()
}

/// Asserts that `a` and `b` hold exactly the same points of `measurement`.
fn assert_same_points(c: &Cluster, measurement: &str) {
    let on_a = c.a.rows(DB, measurement);
    let on_b = c.b.rows(DB, measurement);
    assert_eq!(on_a.0, on_b.0, "columns of {measurement} differ between a and b");
    assert_eq!(on_a.1.len(), on_b.1.len(), "number of points of {measurement} differs between a and b");
    assert!(on_a.1 == on_b.1, "points of {measurement} differ between a and b");
}

/// Asserts that the proxy process is alive and serves: `/ping` 204 and a
/// small write 204.
fn assert_alive(c: &mut Cluster, after: &str) {
    assert!(c.proxy.is_running(), "the proxy process exited after {after}");
    let ping = c.proxy.get("/ping");
    assert_eq!(ping.status, 204, "GET /ping after {after}: {ping:?}");
    let (status, body) = c.proxy.write(DB, &format!("alive v=1 {T0}"), false);
    assert_eq!(status, 204, "a normal write after {after}: {status} {body}");
}

// ---------------------------------------------------------------------------
// 1. Schema statements fan out
// ---------------------------------------------------------------------------

fn create_database_lands_on_both_backends(mode: Mode) {
    let c = Cluster::start(mode);

    let (status, v) = c.proxy.query("CREATE DATABASE itest", "");
    assert_eq!(status, 200, "CREATE DATABASE: {v}");
    assert_eq!(query_error(&v), None, "CREATE DATABASE: {v}");
    assert_eq!(v["results"][0]["statement_id"], 0, "CREATE DATABASE answer: {v}");
    for server in c.backends() {
        assert_eq!(server.databases(), vec!["itest"], "databases on {}", server.name());
    }
    let shown = first_column(&c.proxy.query_ok("SHOW DATABASES", ""));
    assert_eq!(shown, vec!["itest"], "SHOW DATABASES through the proxy");

    c.proxy.query_ok("CREATE DATABASE other; DROP DATABASE itest", "");
    for server in c.backends() {
        assert_eq!(
            server.databases(),
            vec!["other"],
            "databases on {} after CREATE other; DROP itest",
            server.name()
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Writes land on both backends with exact counts
// ---------------------------------------------------------------------------

fn writes_of_10000_lines_land_on_both_backends(mode: Mode) {
    let c = Cluster::start(mode);
    c.create_database(DB);

    let (status, body) = c.proxy.write(DB, &lines("plain", 10_000, T0), false);
    assert_eq!(status, 204, "plain write of 10,000 lines: {body}");
    let (status, body) = c.proxy.write(DB, &lines("gzipped", 10_000, T0), true);
    assert_eq!(status, 204, "gzip write of 10,000 lines: {body}");
    let v2 = c.proxy.write_to(
        &format!(
            "/api/v2/write?{}",
            form(&[("bucket", "itest/autogen"), ("org", "any"), ("precision", "s")])
        ),
        &lines("v2", 10_000, T0),
        false,
    );
    assert_eq!(v2.status, 204, "/api/v2/write of 10,000 lines: {v2:?}");
    let v2gz = c.proxy.write_to(
        &format!("/api/v2/write?{}", form(&[("bucket", "itest"), ("precision", "s")])),
        &lines("v2gz", 1_000, T0),
        true,
    );
    assert_eq!(v2gz.status, 204, "gzip /api/v2/write with bucket=db: {v2gz:?}");

    for server in c.backends() {
        assert_eq!(server.count(DB, "plain"), 10_000, "plain points on {}", server.name());
        assert_eq!(server.count(DB, "gzipped"), 10_000, "gzip points on {}", server.name());
        assert_eq!(server.count(DB, "v2"), 10_000, "/api/v2/write points on {}", server.name());
        assert_eq!(server.count(DB, "v2gz"), 1_000, "gzip /api/v2/write points on {}", server.name());
        // precision=s was forwarded: the first point is at T0 seconds.
        let (columns, rows) = server.rows(DB, "gzipped");
        assert_eq!(columns, json!(["time", "host", "v"]), "columns on {}", server.name());
        assert_eq!(rows[0], json!([T0 * 1_000_000_000, "h0", 0]), "first gzip point on {}", server.name());
        assert_eq!(
            rows[9_999],
            json!([(T0 + 9_999) * 1_000_000_000, "h9", 9_999]),
            "last point on {}",
            server.name()
        );
    }
    assert_same_points(&c, "plain");
    assert_same_points(&c, "gzipped");
}

// ---------------------------------------------------------------------------
// 3. Keymaps send each measurement only where configured
// ---------------------------------------------------------------------------

fn keymaps_route_each_measurement_only_where_configured(mode: Mode) {
    let c = Cluster::start_with(mode, routing_keymaps);
    c.create_database(DB);

    let body = format!(
        "# a comment line is skipped\n\
         cpu,host=x v=1 {T0}\n\
         cpu.load.1,host=x v=2 {T0}\n\
         \n\
         mem,host=x v=3 {T0}\n\
         disk,host=x v=4 {T0}\n\
         disk\\ io,host=x v=5 {T0}\n\
         net\\,if,host=x v=6 {T0}\n"
    );
    let (status, text) = c.proxy.write(DB, &body, false);
    assert_eq!(status, 204, "write of the routing body: {text}");

    // cpu: exact key [a,b]; cpu.load.1: longest prefix cpu.load [b]; mem: [a];
    // disk: _default_ [a,b]; "disk io" (escaped space): [b]; "net,if"
    // (escaped comma): [a].
    assert_eq!(c.a.measurements(DB), vec!["cpu", "disk", "mem", "net,if"], "measurements on a");
    assert_eq!(c.b.measurements(DB), vec!["cpu", "cpu.load.1", "disk", "disk io"], "measurements on b");
    assert_eq!(backend_values(&c.b, "cpu.load.1"), vec![json!(2)], "cpu.load.1 on b");
    assert_eq!(backend_values(&c.b, "disk io"), vec![json!(5)], "\"disk io\" on b");
    assert_eq!(backend_values(&c.a, "net,if"), vec![json!(6)], "\"net,if\" on a");
    for server in c.backends() {
        assert_eq!(server.count(DB, "cpu"), 1, "cpu on {}", server.name());
        assert_eq!(server.count(DB, "disk"), 1, "disk on {}", server.name());
    }
}

// ---------------------------------------------------------------------------
// 4. SELECT and merged SHOW answers
// ---------------------------------------------------------------------------

fn select_and_merged_show_answers(mode: Mode) {
    let c = Cluster::start_with(mode, routing_keymaps);
    c.create_database(DB);
    let body = format!(
        "cpu,host=x v=10 {T0}\ncpu,host=x v=20 {}\ncpu,host=x v=30 {}\n\
         cpu.load.1,host=x v=1 {T0}\ncpu.load.1,host=x v=2 {}\n\
         mem,host=x v=7 {T0}\n",
        T0 + 1,
        T0 + 2,
        T0 + 1
    );
    c.proxy.write_ok(DB, &body);

    // Reads go to one backend of the replica set, picked at random: ask
    // several times so that every pick is exercised.
    for _ in 0..6 {
        assert_eq!(proxy_values(&c.proxy, "cpu"), vec![json!(10), json!(20), json!(30)], "SELECT v FROM cpu");
        assert_eq!(
            proxy_values(&c.proxy, "cpu.load.1"),
            vec![json!(1), json!(2)],
            "SELECT from a measurement only on b"
        );
        assert_eq!(proxy_values(&c.proxy, "mem"), vec![json!(7)], "SELECT from a measurement only on a");
    }
    // GET /query, a fully qualified "db"."rp"."m" and no db parameter.
    let (status, v) = c.proxy.query_get("SELECT v FROM \"itest\".\"autogen\".\"cpu.load.1\"", "");
    assert_eq!(status, 200, "GET /query with db.rp.m: {v}");
    assert_eq!(column(&v, "v"), vec![json!(1), json!(2)], "GET /query with db.rp.m: {v}");
    // Two statements, two results.
    let v = c.proxy.query_ok("SELECT v FROM cpu; SELECT v FROM mem", DB);
    let results = v["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 2, "two statements give two results: {v}");
    assert_eq!(results[0]["statement_id"], 0, "{v}");
    assert_eq!(results[1]["statement_id"], 1, "{v}");
    assert_eq!(results[1]["series"][0]["values"][0][1], 7, "second statement's answer: {v}");

    // SHOW MEASUREMENTS: union of a (cpu, mem) and b (cpu, cpu.load.1),
    // each once, sorted.
    let shown = first_column(&c.proxy.query_ok("SHOW MEASUREMENTS", DB));
    assert_eq!(shown, vec!["cpu", "cpu.load.1", "mem"], "merged SHOW MEASUREMENTS");

    // SHOW DATABASES: a database only on a and one only on b both appear.
    c.a.query_ok("", "CREATE DATABASE only_a");
    c.b.query_ok("", "CREATE DATABASE only_b");
    let shown = first_column(&c.proxy.query_ok("SHOW DATABASES", ""));
    assert_eq!(shown, vec!["itest", "only_a", "only_b"], "merged SHOW DATABASES");
}

// ---------------------------------------------------------------------------
// 5. Forbidden statements are refused and reach no backend
// ---------------------------------------------------------------------------

fn forbidden_statements_are_refused_and_reach_no_backend(mode: Mode) {
    let c = Cluster::start(mode);
    c.create_database(DB);
    c.proxy.write_ok(DB, &format!("src,host=x v=1 {T0}\nsrc,host=x v=2 {}\n", T0 + 1));
    // A non-admin user on each backend, to see whether GRANT reached them.
    for server in c.backends() {
        server.query_ok("", "CREATE USER reader WITH PASSWORD 'reader-pw'");
    }

    let forbidden = [
        "GRANT ALL TO reader",
        "GRANT READ ON itest TO reader",
        "REVOKE ALL PRIVILEGES FROM reader",
        "CREATE USER evil WITH PASSWORD 'evil-pw' WITH ALL PRIVILEGES",
        "DROP USER reader",
        "SET PASSWORD FOR reader = 'changed'",
        "SELECT * INTO copied FROM src",
        "select v into itest.autogen.copied from src group by *",
        "CREATE CONTINUOUS QUERY cq ON itest BEGIN SELECT count(v) INTO counted FROM src GROUP BY time(1h) END",
        "KILL QUERY 1",
    ];
    for q in forbidden {
        let (status, v) = c.proxy.query(q, DB);
        assert_eq!(status, 403, "{q:?} must be refused with 403: {v}");
        let error = v["error"].as_str().unwrap_or_else(|| panic!("{q:?}: no {{\"error\":...}} in {v}"));
        assert!(error.to_lowercase().contains("forbidden"), "{q:?}: the error should say forbidden: {error}");
    }
    // A forbidden statement after an allowed one.
    let (status, v) = c.proxy.query("SELECT v FROM src; CREATE USER evil2 WITH PASSWORD 'evil-pw'", DB);
    let refused_whole = status == 403;
    let refused_second = status == 200
        && v["results"][1]["error"].as_str().is_some_and(|e| e.to_lowercase().contains("forbidden"));
    assert!(refused_whole || refused_second, "a forbidden second statement must be refused: {status} {v}");

    for server in c.backends() {
        let users = server.query_ok("", "SHOW USERS");
        let rows = users["results"][0]["series"][0]["values"].clone();
        assert_eq!(
            rows,
            json!([["reader", false]]),
            "users on {} (no new user, reader kept, not admin)",
            server.name()
        );
        let grants = first_column(&server.query_ok("", "SHOW GRANTS FOR reader"));
        assert!(grants.is_empty(), "reader got grants on {}: {grants:?}", server.name());
        assert_eq!(server.measurements(DB), vec!["src"], "no SELECT INTO target on {}", server.name());
        let cqs = server.query_ok("", "SHOW CONTINUOUS QUERIES");
        let defined: Vec<&Value> = cqs["results"][0]["series"]
            .as_array()
            .map(|all| all.iter().filter(|s| s["values"].is_array()).collect())
            .unwrap_or_default();
        assert!(defined.is_empty(), "continuous queries on {}: {cqs}", server.name());
    }
}

/// Issue 8: a body whose points all have a timestamp and go to one replica
/// set is forwarded as the client sent it (a gzip body compressed): influxd
/// stores the same points as from the points path. The last line of the
/// plain body has no line ending, a string value spans lines, and a `\r\n`
/// body (not forwarded as sent) lands the same way.
fn a_write_forwarded_as_sent_lands_on_both_backends(mode: Mode) {
    let c = Cluster::start(mode);
    c.create_database(DB);
    let plain = format!("fwd,host=a v=1 {T0}\nfwd,host=b v=2,s=\"two\nlines\" {}", T0 + 1);
    let (status, body) = c.proxy.write(DB, &plain, false);
    assert_eq!(status, 204, "plain write forwarded as sent: {body}");
    let (status, body) = c.proxy.write(DB, &lines("fwdgz", 3_000, T0), true);
    assert_eq!(status, 204, "gzip write forwarded compressed: {body}");
    let crlf = format!("fwdcrlf v=1 {T0}\r\nfwdcrlf v=2 {}\r\n", T0 + 1);
    let (status, body) = c.proxy.write(DB, &crlf, true);
    assert_eq!(status, 204, "gzip write with CRLF line endings: {body}");
    for server in c.backends() {
        let (columns, rows) = server.rows(DB, "fwd");
        assert_eq!(columns, json!(["time", "host", "s", "v"]), "columns on {}", server.name());
        assert_eq!(rows.len(), 2, "points of the plain body on {}: {rows:?}", server.name());
        assert_eq!(rows[1][2], json!("two\nlines"), "the string spanning lines on {}", server.name());
        assert_eq!(server.count(DB, "fwdgz"), 3_000, "gzip points on {}", server.name());
        assert_eq!(server.count(DB, "fwdcrlf"), 2, "CRLF points on {}", server.name());
    }
    assert_same_points(&c, "fwdgz");
}

// ---------------------------------------------------------------------------
// 6. A backend down: writes accepted, reads fail over, replay catches up
// ---------------------------------------------------------------------------

fn backend_down_then_replay_makes_both_identical(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);
    c.proxy.write_ok(DB, &lines("m", 1_000, T0));
    c.proxy.write_ok(DB, &format!("ow,host=x v=1 {T0}\n"));

    c.b.kill();

    // Reads right away (before any health check noticed): the random pick
    // hits the dead backend about half the time and must fail over.
    for i in 0..10 {
        let v = c.proxy.query_ok("SELECT count(*) FROM m", DB);
        assert_eq!(count_of(&v), 1_000, "read {i} with b killed: {v}");
    }

    // Writes are still accepted; `ow` is overwritten (same series and
    // timestamp), `ow2` overwritten twice while b is down.
    let (status, text) = c.proxy.write(DB, &lines("m", 500, T0 + 1_000), false);
    assert_eq!(status, 204, "plain write with b down: {text}");
    let (status, text) = c.proxy.write(DB, &lines("m", 500, T0 + 1_500), true);
    assert_eq!(status, 204, "gzip write with b down: {text}");
    c.proxy.write_ok(DB, &format!("ow,host=x v=2 {T0}\n"));
    for v in 1..=3 {
        c.proxy.write_ok(DB, &format!("ow2,host=x v={v} {T0}\n"));
    }

    // Schema statements while b is down are answered (and queued for b),
    // and writes into the new database follow them.
    let (status, v) = c.proxy.query("CREATE DATABASE later", "");
    assert_eq!(status, 200, "CREATE DATABASE with b down: {v}");
    assert_eq!(query_error(&v), None, "CREATE DATABASE with b down: {v}");
    assert!(c.a.databases().contains(&"later".to_string()), "database later on a");
    let (status, text) = c.proxy.write("later", &lines("n", 100, T0), false);
    assert_eq!(status, 204, "write into the database created while b was down: {text}");

    // Reads still answer the right data, and SHOW without FROM still works.
    for i in 0..6 {
        let v = c.proxy.query_ok("SELECT count(*) FROM m", DB);
        assert_eq!(count_of(&v), 2_000, "read {i} with b down after the writes: {v}");
    }
    assert_eq!(proxy_values(&c.proxy, "ow"), vec![json!(2)], "overwritten point read with b down");
    wait_until(Duration::from_secs(10), "SHOW MEASUREMENTS answers with b down", || {
        let (status, v) = c.proxy.query("SHOW MEASUREMENTS", DB);
        let names = first_column(&v);
        if status == 200 && names == ["m", "ow", "ow2"] {
            Ok(())
        } else {
            Err(format!("{status} {v}"))
        }
    });

    c.b.restart();
    wait_until(CATCH_UP, "b caught up after its restart", || {
        if !c.b.databases().contains(&"later".to_string()) {
            return Err(format!("databases on b: {:?}", c.b.databases()));
        }
        let state = (c.b.count(DB, "m"), c.b.count("later", "n"), backend_values(&c.b, "ow2"));
        if state == (2_000, 100, vec![json!(3)]) {
            Ok(())
        } else {
            Err(format!("b has (m, later.n, ow2 values) = {state:?}"))
        }
    });
    assert_eq!(c.a.count(DB, "m"), 2_000, "points of m on a");
    assert_same_points(&c, "m");
    assert_same_points(&c, "ow");
    assert_same_points(&c, "ow2");
    assert_eq!(backend_values(&c.b, "ow"), vec![json!(2)], "the newer value of ow won on b");
    assert_eq!(backend_values(&c.b, "ow2"), vec![json!(3)], "the newest value of ow2 won on b");

    // Once caught up, new writes reach b again.
    c.proxy.write_ok(DB, &lines("after", 10, T0));
    wait_until(Duration::from_secs(10), "a write after recovery reaches b", || {
        let n = c.b.count(DB, "after");
        if n == 10 {
            Ok(())
        } else {
            Err(format!("{n} points on b"))
        }
    });
    assert_eq!(c.a.count(DB, "after"), 10, "a write after recovery on a");
    assert_alive(&mut c, "the recovery");
}

/// Issue 8, every core: write bodies are validated on worker threads (the
/// native host, bodies over 8 KiB), in whatever order they finish; the
/// write queue's order must still hold. Backend b (behind a relay that
/// records what b stored, in order) is killed, so its queue fills; four
/// clients keep writing distinct points while a fifth overwrites one point
/// (same series and timestamp) with 1, 2, 3, ..., each write after the
/// previous one's 204, every body large enough to be validated off the
/// proxy's thread. b comes back in the middle of it: while its queue
/// drains, new writes must go behind the queue, never to b directly, so b
/// stores the overwrites in increasing order (a write that overtook the
/// queue would be stored before older values replayed after it), ends with
/// the last acknowledged value, and holds every point a holds.
fn writes_validated_on_other_threads_never_overtake_a_write_queue(mode: Mode) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use support::relay::{Behaviour, Relay};
    const OVERWRITES: u64 = 120;
    let (a, b) = (Influxd::start("a"), Influxd::start("b"));
    let relay = Relay::start(b.url().trim_start_matches("http://"), Behaviour::Forward);
    let mut config = Proxy::config(&[&a, &b]);
    config["backends"]["b"]["url"] = json!(relay.url());
    // Replayed in batches of at most 64 KiB: the backlog takes many
    // requests to drain, so new writes arrive while b is up again and its
    // queue is not yet empty (the case under test).
    config["backend_max_body_bytes"] = json!(65_536);
    let mut c = Cluster { proxy: Proxy::start(mode, config), a, b };
    c.create_database(DB);
    c.b.kill();
    let url = format!("{}/write?db={DB}&precision=s", c.proxy.url());
    // 300 points (about 10 KiB, over the native host's 8 KiB threshold).
    let body = |measurement: &str, k: u64| lines(measurement, 300, T0 + k * 300);
    let write = |body: String| {
        let r = http("POST", &url, &[], Some(body.into_bytes()));
        assert_eq!(r.status, 204, "write: {}", r.body);
    };
    let (last, done) = (AtomicU64::new(0), AtomicBool::new(false));
    std::thread::scope(|s| {
        for w in 0..4 {
            let (write, done) = (&write, &done);
            s.spawn(move || {
                let mut k = 0;
                while !done.load(Ordering::SeqCst) {
                    write(body(&format!("load{w}"), k));
                    k += 1;
                }
            });
        }
        s.spawn(|| {
            for v in 1..=OVERWRITES {
                write(format!("ow,host=x v={v} {T0}\n{}", body("owfill", v)));
                last.store(v, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        });
        wait_until(Duration::from_secs(60), "a third of the overwrites acknowledged", || {
            match last.load(Ordering::SeqCst) {
                v if v >= OVERWRITES / 3 => Ok(()),
                v => Err(format!("{v} acknowledged")),
            }
        });
        let queued = c.proxy.health()["backends"][1]["queue_records"].as_u64().unwrap_or(0);
        assert!(queued > 0, "b's queue holds the writes made while it was down");
        c.b.restart();
    });
    assert_eq!(last.load(Ordering::SeqCst), OVERWRITES);
    wait_until(CATCH_UP, "b's queue drained", || {
        let h = c.proxy.health();
        match h["backends"][1]["queue_records"].as_u64() {
            Some(0) => Ok(()),
            _ => Err(format!("{}", h["backends"][1])),
        }
    });
    // The overwrites in the order b stored them.
    let stored: Vec<u64> = relay
        .answered_writes()
        .iter()
        .flat_map(|body| {
            let text = String::from_utf8_lossy(body).into_owned();
            text.lines()
                .filter_map(|l| l.strip_prefix("ow,host=x v=")?.split(' ').next()?.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect();
    let first_overtaking = stored.windows(2).position(|w| w[1] < w[0]);
    assert_eq!(first_overtaking, None, "b stored the overwrites out of order: {stored:?}");
    assert_eq!(stored.last(), Some(&OVERWRITES), "b stored every overwrite: {stored:?}");
    assert_eq!(backend_values(&c.a, "ow"), vec![json!(OVERWRITES)], "the last acknowledged value on a");
    assert_eq!(backend_values(&c.b, "ow"), vec![json!(OVERWRITES)], "the last acknowledged value on b");
    for m in ["load0", "load1", "load2", "load3", "owfill"] {
        assert!(c.a.count(DB, m) > 0, "points of {m} on a");
        assert_eq!(c.b.count(DB, m), c.a.count(DB, m), "points of {m} on b and on a");
    }
    assert_alive(&mut c, "the catch-up under load");
}

// ---------------------------------------------------------------------------
// 7. The proxy killed with SIGKILL while a queue is not empty
// ---------------------------------------------------------------------------

fn proxy_killed_with_a_queue_loses_nothing(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);
    c.proxy.write_ok(DB, &lines("m", 500, T0));

    c.b.kill();
    for k in 1..=4u64 {
        let (status, text) = c.proxy.write(DB, &lines("m", 500, T0 + 500 * k), k % 2 == 0);
        assert_eq!(status, 204, "write {k} with b down: {text}");
    }

    c.proxy.kill();
    c.proxy.restart();
    // Still down: the restarted proxy keeps queueing behind the old records.
    let (status, text) = c.proxy.write(DB, &lines("m", 500, T0 + 2_500), false);
    assert_eq!(status, 204, "write after the proxy restart with b down: {text}");
    assert_eq!(c.a.count(DB, "m"), 3_000, "points on a");

    c.b.restart();
    wait_until(CATCH_UP, "b replayed everything after the proxy crash", || {
        let n = c.b.count(DB, "m");
        if n == 3_000 {
            Ok(())
        } else {
            Err(format!("{n} of 3000 points on b"))
        }
    });
    assert_eq!(c.a.count(DB, "m"), 3_000, "points on a after the replay");
    assert_same_points(&c, "m");
}

// ---------------------------------------------------------------------------
// 8. Bad inputs
// ---------------------------------------------------------------------------

/// The small body limit of the bad-input scenarios, in bytes.
const MAX_BODY: u64 = 1_000_000;

fn bad_writes_get_4xx_and_write_nothing(mode: Mode) {
    let mut c = Cluster::start_with(mode, |config| {
        config["max_body_bytes"] = json!(MAX_BODY);
        // The whole-body refusal of a body with a bad line (the default
        // writes the others, `partial_writes_store_the_valid_points_as_influxd_does`).
        config["partial_writes"] = json!(false);
    });
    c.create_database(DB);

    // Malformed line protocol: 400 naming the line; the valid lines around
    // it are not written either.
    let body = format!("good,host=x v=1 {T0}\nbad_line_without_fields\ngood,host=x v=2 {}\n", T0 + 1);
    let (status, text) = c.proxy.write(DB, &body, false);
    assert_eq!(status, 400, "malformed line protocol: {text}");
    let error = Resp { status, headers: Vec::new(), body: text }.error();
    assert!(error.contains("bad_line_without_fields"), "the error should quote the line: {error}");
    assert!(error.to_lowercase().contains("line 2"), "the error should give the line number: {error}");
    assert_alive(&mut c, "malformed line protocol");

    // Bad gzip.
    let resp = c.proxy.request(
        "POST",
        &format!("/write?db={DB}"),
        &[("content-encoding", "gzip")],
        Some(b"gadget,host=x v=1 this is not gzip".to_vec()),
    );
    assert_eq!(resp.status, 400, "bad gzip: {resp:?}");
    resp.error();
    assert_alive(&mut c, "bad gzip");

    // Truncated gzip: the beginning decodes, nothing may be written.
    let whole = gzip(lines("truncated", 2_000, T0).as_bytes());
    let resp = c.proxy.request(
        "POST",
        &format!("/write?db={DB}&precision=s"),
        &[("content-encoding", "gzip")],
        Some(whole[..whole.len() / 2].to_vec()),
    );
    assert_eq!(resp.status, 400, "truncated gzip: {resp:?}");
    resp.error();
    assert_alive(&mut c, "truncated gzip");

    // Missing db.
    let resp = c.proxy.write_to("/write?precision=s", &format!("nodb v=1 {T0}"), false);
    assert_eq!(resp.status, 400, "write without db: {resp:?}");
    assert!(resp.error().contains("database is required"), "write without db: {resp:?}");
    assert_alive(&mut c, "a write without db");

    // Bad precision.
    let resp =
        c.proxy.write_to(&format!("/write?db={DB}&precision=fortnight"), &format!("badprec v=1 {T0}"), false);
    assert_eq!(resp.status, 400, "bad precision: {resp:?}");
    resp.error();
    assert_alive(&mut c, "a bad precision");

    // A body over max_body_bytes: 413 (the proxy may answer before reading
    // the whole body, so a raw client that keeps reading is used).
    let big = lines("big", 40_000, T0);
    assert!(big.len() as u64 > MAX_BODY);
    let mut request = format!(
        "POST /write?db={DB}&precision=s HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        c.proxy.addr(),
        big.len()
    )
    .into_bytes();
    request.extend_from_slice(big.as_bytes());
    let (status, raw) =
        raw_http(&c.proxy.addr(), request).unwrap_or_else(|e| panic!("body over the limit: {e}"));
    assert_eq!(status, 413, "body over max_body_bytes: {raw}");
    assert!(raw.contains("\"error\""), "413 without an error body: {raw}");
    assert_alive(&mut c, "a body over the limit");

    // A small gzip body that decodes to more than max_body_bytes: 413.
    let bomb = gzip(lines("bomb", 40_000, T0).as_bytes());
    assert!((bomb.len() as u64) < MAX_BODY);
    let resp = c.proxy.request(
        "POST",
        &format!("/write?db={DB}&precision=s"),
        &[("content-encoding", "gzip")],
        Some(bomb),
    );
    assert_eq!(resp.status, 413, "gzip body decoding over max_body_bytes: {resp:?}");
    resp.error();
    assert_alive(&mut c, "a gzip body decoding over the limit");

    // Nothing of the refused bodies reached a backend.
    for server in c.backends() {
        assert_eq!(server.measurements(DB), vec!["alive"], "only the liveness writes on {}", server.name());
    }
}

fn bad_requests_and_queries_get_4xx(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);

    let resp = c.proxy.get("/no/such/endpoint");
    assert_eq!(resp.status, 404, "unknown endpoint: {resp:?}");
    resp.error();
    assert_alive(&mut c, "an unknown endpoint");

    let resp = c.proxy.get(&format!("/write?db={DB}"));
    assert_eq!(resp.status, 405, "GET /write: {resp:?}");
    resp.error();
    let resp = c.proxy.request("DELETE", "/query?q=SHOW%20DATABASES", &[], None);
    assert_eq!(resp.status, 405, "DELETE /query: {resp:?}");
    assert_alive(&mut c, "a wrong method");

    for q in ["SELEC v FROM m", "SELECT v FROM m WHERE host = 'unterminated", "SELECT FROM"] {
        let (status, v) = c.proxy.query(q, DB);
        assert_eq!(status, 400, "malformed InfluxQL {q:?}: {v}");
        assert!(v["error"].is_string(), "malformed InfluxQL {q:?}: no error body: {v}");
    }
    let resp = c.proxy.get(&format!("/query?db={DB}"));
    assert_eq!(resp.status, 400, "/query without q: {resp:?}");
    resp.error();
    assert_alive(&mut c, "malformed InfluxQL");

    // A 100 KB header.
    let request = format!(
        "GET /ping HTTP/1.1\r\nHost: {}\r\nX-Oversized: {}\r\nConnection: close\r\n\r\n",
        c.proxy.addr(),
        "x".repeat(100_000)
    );
    let (status, raw) = raw_http(&c.proxy.addr(), request.into_bytes())
        .unwrap_or_else(|e| panic!("oversized header: expected a 4xx answer: {e}"));
    assert!((400..500).contains(&status), "oversized header: expected 431 or 400, got {status}: {raw}");
    assert_alive(&mut c, "an oversized header");

    // Garbage instead of HTTP: a 400 or a closed connection, and the proxy
    // keeps serving.
    if let Ok((status, raw)) = raw_http(&c.proxy.addr(), b"\x16\x03\x01 not http at all\r\n\r\n".to_vec()) {
        assert_eq!(status, 400, "garbage request: {raw}");
    }
    assert_alive(&mut c, "a garbage request");
}

/// Issue 6: influxd names the database it did not find in `X-Influxdb-Error`,
/// raw UTF-8 included (`database not found: "données"`); async-h1 panicked on
/// that header. The client must get influxd's own 404 and the proxy must go
/// on serving.
fn backend_headers_that_are_not_ascii_reach_the_client_as_influxdb_errors(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);

    let resp = c.proxy.write_to(
        &format!("/write?{}", form(&[("db", "données"), ("precision", "s")])),
        "m v=1",
        false,
    );
    assert_eq!(resp.status, 404, "write to the missing database données: {resp:?}");
    assert_eq!(resp.error(), "database not found: \"données\"", "{resp:?}");
    assert_alive(&mut c, "a backend header with non-ASCII bytes");
}

/// Issue 6: the same header during replay killed the backend's replay task:
/// the queue never drained again. A queued write for a missing database
/// `données` must be dead-lettered and the writes behind it replayed.
fn replay_gets_past_a_backend_header_that_is_not_ascii(mode: Mode) {
    // `only_b` goes to b alone: while b is down its writes are only queued.
    let mut c = Cluster::start_with(mode, |config| {
        config["keymaps"] = json!({ "only_b": ["b"], "_default_": ["a", "b"] });
    });
    c.create_database(DB);
    c.b.kill();
    wait_until(Duration::from_secs(10), "b marked down", || {
        let health = c.proxy.health();
        match health_backend(&health, "b").and_then(is_healthy) {
            Some(false) => Ok(()),
            _ => Err(health.to_string()),
        }
    });
    let path = format!("/write?{}", form(&[("db", "données"), ("precision", "s")]));
    let resp = c.proxy.write_to(&path, "only_b v=1", false);
    assert_eq!(resp.status, 204, "a write for b alone, queued while b is down: {resp:?}");
    c.proxy.write_ok(DB, &lines("after", 100, T0));
    c.b.restart();
    wait_until(CATCH_UP, "b replayed the writes queued behind the données record", || {
        let n = c.b.count(DB, "after");
        if n == 100 {
            Ok(())
        } else {
            Err(format!("{n} of 100 points on b; health {}", c.proxy.health()))
        }
    });
    assert_same_points(&c, "after");
    assert_alive(&mut c, "replaying a record answered with a non-ASCII header");
}

/// Issue 6: bytes that are not UTF-8 in the query string reach influxd as
/// U+FFFD, which it echoes in its `X-Influxdb-Error` header: the same panic
/// as above. The client gets what influxd answers.
fn query_and_write_with_ff_bytes_get_influxdb_s_answer(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);
    let resp = c.proxy.get("/query?db=%FF%FE&q=SHOW%20DATABASES%20%FF");
    assert_eq!(resp.status, 400, "GET /query?db=%FF%FE&q=SHOW DATABASES %FF: {resp:?}");
    assert!(resp.error().contains("error parsing query"), "{resp:?}");
    assert_alive(&mut c, "a query with %FF bytes");

    let resp = c.proxy.write_to("/write?db=fu%ffzz", "m v=1", false);
    assert_eq!(resp.status, 404, "POST /write?db=fu%ffzz: {resp:?}");
    assert!(resp.error().starts_with("database not found: \"fu"), "{resp:?}");
    assert_alive(&mut c, "a write with %ff in the database name");
    for server in c.backends() {
        assert_eq!(server.databases(), vec![DB], "no database was created on {}", server.name());
    }
}

/// Issue 6 (found in the adversarial pass): each backend answer is bounded by
/// `backend_max_response_bytes`, and a batch of statements answered over it
/// is asked statement by statement, so the combined answer of many small
/// statements had no bound (87 KB of `SELECT * FROM big LIMIT 1000;` made a
/// 158 MB body, 472 MB peak RSS). It is bounded by the same limit: 502.
fn a_combined_query_answer_over_backend_max_response_bytes_is_502(mode: Mode) {
    let mut c = Cluster::start_with(mode, |config| config["backend_max_response_bytes"] = json!(2000));
    c.create_database(DB);
    c.proxy.write_ok(DB, &lines("few", 5, T0));
    let one = c.proxy.query_ok("SELECT * FROM few", DB);
    assert_eq!(column(&one, "v").len(), 5, "one statement answers: {one}");
    let (status, v) = c.proxy.query(&"SELECT * FROM few;".repeat(60), DB);
    let size = v.to_string().len();
    assert_eq!(status, 502, "60 answers of 5 points over a 2000-byte limit: a {size}-byte answer");
    assert_eq!(v["error"], "query answer larger than backend_max_response_bytes (2000 bytes)", "{v}");
    assert_alive(&mut c, "a combined answer over backend_max_response_bytes");
}

/// Issue 6 (found in the adversarial pass): influxd answers a write to a
/// retention policy that does not exist with `500 {"error":"retention policy
/// not found: nope"}`. The proxy took that 5xx for an outage: it answered 204,
/// queued the write, counted it against the backend's health (two such writes
/// marked both backends down, `/health` 503) and replayed it for ~50 s before
/// dead-lettering it, while every later write waited behind it. The client must
/// get influxd's answer, nothing is queued, the backends stay up and the next
/// write lands at once.
fn a_write_to_a_missing_retention_policy_gets_influxd_s_500_and_blocks_nothing(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);
    for _ in 0..4 {
        let resp = c.proxy.write_to(
            &format!("/write?db={DB}&rp=nope&precision=s"),
            &format!("norp v=1 {T0}"),
            false,
        );
        assert_eq!(
            resp.status, 500,
            "a write to a missing retention policy, as influxd answers it: {resp:?}"
        );
        assert_eq!(resp.error(), "retention policy not found: nope", "{resp:?}");
    }
    let health = c.proxy.health();
    for name in ["a", "b"] {
        let entry = health_backend(&health, name).unwrap_or_else(|| panic!("{name} missing: {health}"));
        assert_eq!(is_healthy(entry), Some(true), "{name} is not down because of a client's rp: {health}");
        assert_eq!(queue_depth(entry), 0, "nothing of the refused writes is queued for {name}: {health}");
    }
    c.proxy.write_ok(DB, &lines("after_norp", 10, T0));
    for server in c.backends() {
        assert_eq!(server.count(DB, "after_norp"), 10, "the next write is on {} at once", server.name());
    }
    assert_alive(&mut c, "writes to a missing retention policy");
}

/// Issue 6: a backend answer larger than `backend_max_response_bytes` is a
/// 502 naming the backend and the limit, not buffered whole; it does not
/// count against the backend's health (another replica would answer the
/// same), and smaller answers still flow.
fn answers_over_backend_max_response_bytes_are_502(mode: Mode) {
    let mut c = Cluster::start_with(mode, |config| config["backend_max_response_bytes"] = json!(2000));
    c.create_database(DB);
    c.proxy.write_ok(DB, &lines("big", 200, T0));

    for _ in 0..3 {
        let (status, v) = c.proxy.query("SELECT * FROM big", DB);
        assert_eq!(status, 502, "an answer of 200 points over a 2000-byte limit: {v}");
        let error = v["error"].as_str().unwrap_or_else(|| panic!("no error body: {v}"));
        assert!(
            (error.starts_with("backend a: ") || error.starts_with("backend b: "))
                && error.ends_with("answer larger than backend_max_response_bytes (2000 bytes)"),
            "{error}"
        );
    }
    let health = c.proxy.health();
    for name in ["a", "b"] {
        let entry = health_backend(&health, name).unwrap_or_else(|| panic!("{name} missing: {health}"));
        assert_eq!(is_healthy(entry), Some(true), "{name} is not down because of large answers: {health}");
    }
    let small = c.proxy.query_ok("SELECT count(v) FROM big", DB);
    assert_eq!(count_of(&small), 200, "a small answer still flows: {small}");
    assert_alive(&mut c, "answers over backend_max_response_bytes");
}

/// Requests whose framing is ambiguous (request smuggling, RFC 9112 section
/// 6.3) or that do not arrive within the config's read timeouts are refused
/// before the proxy's core: 400 / 408 with an error body and the connection
/// closed, nothing written (issue 6).
fn ambiguous_or_slow_requests_are_refused_and_write_nothing(mode: Mode) {
    let mut c = Cluster::start_with(mode, |config| {
        config["header_read_timeout_ms"] = json!(300);
        config["body_read_timeout_ms"] = json!(300);
    });
    c.create_database(DB);
    let addr = c.proxy.addr();
    let line = format!("smuggled v=1 {T0}\n");
    let n = line.len();
    for (headers, status, what) in [
        (format!("Content-Length: {n}\r\nContent-Length: 5\r\n"), 400, "conflicting Content-Length"),
        (format!("Content-Length: +{n}\r\n"), 400, "invalid Content-Length"),
        ("Transfer-Encoding: gzip\r\n".to_string(), 400, "chunked is not the final Transfer-Encoding"),
        (format!("Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n"), 400, "both Transfer-Encoding and"),
        // The body stalls: 10 bytes never come.
        (format!("Content-Length: {}\r\n", n + 10), 408, "timeout reading the request body (limit 300 ms)"),
    ] {
        let mut request =
            format!("POST /write?db={DB}&precision=s HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
        request.push_str(&line);
        let (got, raw) = raw_http(&addr, request.into_bytes()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(got, status, "{what}: {raw}");
        assert!(raw.contains(what), "{what}: {raw}");
        assert!(raw.to_ascii_lowercase().contains("connection: close"), "{what}: {raw}");
        assert_alive(&mut c, what);
    }
    // A head that stalls.
    let (got, raw) = raw_http(&addr, format!("GET /ping HTTP/1.1\r\nHost: {addr}\r\n").into_bytes())
        .unwrap_or_else(|e| panic!("a stalled head: {e}"));
    assert_eq!(got, 408, "a stalled head: {raw}");
    assert!(raw.contains("timeout reading the request head (limit 300 ms)"), "{raw}");
    assert_alive(&mut c, "a stalled head");

    for server in c.backends() {
        assert_eq!(server.measurements(DB), vec!["alive"], "only the liveness writes on {}", server.name());
    }
}

// ---------------------------------------------------------------------------
// 9. /ping, /health, /metrics
// ---------------------------------------------------------------------------

fn ping_health_and_metrics(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);

    let ping = c.proxy.get("/ping");
    assert_eq!(ping.status, 204, "GET /ping: {ping:?}");
    assert!(ping.header("x-influxdb-version").is_some_and(|v| !v.is_empty()), "X-Influxdb-Version: {ping:?}");
    assert!(ping.header("x-influxdb-build").is_some(), "X-Influxdb-Build: {ping:?}");
    let head = c.proxy.request("HEAD", "/ping", &[], None);
    assert_eq!(head.status, 204, "HEAD /ping: {head:?}");

    let health = c.proxy.health();
    for name in ["a", "b"] {
        let entry = health_backend(&health, name)
            .unwrap_or_else(|| panic!("backend {name} missing in /health: {health}"));
        assert_eq!(is_healthy(entry), Some(true), "backend {name} healthy in /health: {health}");
        assert_eq!(queue_depth(entry), 0, "backend {name} queue empty in /health: {health}");
    }

    c.proxy.write_ok(DB, &lines("m", 10, T0));
    let metrics = c.proxy.get("/metrics");
    assert_eq!(metrics.status, 200, "GET /metrics: {metrics:?}");
    assert!(metrics.body.contains("# TYPE"), "/metrics is Prometheus text: {}", metrics.body);
    assert!(
        metrics.body.lines().any(|l| !l.starts_with('#') && l.contains("write") && l.contains("204")),
        "/metrics counts requests by endpoint and status (a line with write and 204): {}",
        metrics.body
    );
    // The host gives the core its monotonic clock: the duration histograms
    // have observed the write and the requests to each backend.
    for prefix in [
        "influx_proxy_request_duration_seconds_count{endpoint=\"write\"} ",
        "influx_proxy_backend_request_duration_seconds_count{backend=\"a\"} ",
        "influx_proxy_backend_request_duration_seconds_count{backend=\"b\"} ",
    ] {
        let count =
            metrics.body.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|n| n.parse::<u64>().ok());
        assert!(count.is_some_and(|n| n >= 1), "/metrics has {prefix}>= 1: {}", metrics.body);
    }
    assert!(
        metrics.body.contains("influx_proxy_loop_restarts_total{loop=\"replay\",backend=\"a\"} 0"),
        "/metrics counts loop restarts (none here): {}",
        metrics.body
    );

    c.b.kill();
    c.proxy.write_ok(DB, &lines("m", 10, T0 + 10));
    wait_until(Duration::from_secs(10), "/health shows b down with a non-empty queue", || {
        let health = c.proxy.health();
        let a = health_backend(&health, "a").map(|e| (is_healthy(e), queue_depth(e)));
        let b = health_backend(&health, "b").map(|e| (is_healthy(e), queue_depth(e)));
        match (a, b) {
            (Some((Some(true), 0)), Some((Some(false), depth))) if depth > 0 => Ok(()),
            _ => Err(health.to_string()),
        }
    });
    wait_until(Duration::from_secs(10), "/metrics shows b's queue depth above 0", || {
        let body = c.proxy.get("/metrics").body;
        let queued = body.lines().any(|l| {
            !l.starts_with('#')
                && l.contains("queue")
                && l.contains("backend=\"b\"")
                && l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()).is_some_and(|n| n > 0.0)
        });
        if queued {
            Ok(())
        } else {
            Err(body)
        }
    });
    assert_alive(&mut c, "the health checks");
}

// ---------------------------------------------------------------------------
// 10. Graceful stop
// ---------------------------------------------------------------------------

fn sigterm_stops_and_keeps_the_queue(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);
    c.proxy.write_ok(DB, &lines("m", 100, T0));
    c.b.kill();
    c.proxy.write_ok(DB, &lines("m", 300, T0 + 100));

    c.proxy.stop(); // asserts exit status 0
    assert!(
        try_http("GET", &format!("{}/ping", c.proxy.url()), &[], None).is_err(),
        "the proxy still answers after SIGTERM"
    );

    c.proxy.restart();
    c.b.restart();
    wait_until(CATCH_UP, "b replayed the queue kept across a graceful stop", || {
        let n = c.b.count(DB, "m");
        if n == 400 {
            Ok(())
        } else {
            Err(format!("{n} of 400 points on b"))
        }
    });
    assert_eq!(c.a.count(DB, "m"), 400, "points on a");
    assert_same_points(&c, "m");
    c.proxy.stop();
}

// ---------------------------------------------------------------------------
// 11. Disk full (issue 6): the queue drains with 0 bytes free
// ---------------------------------------------------------------------------

/// Size of the tmpfs mounted as the proxy's data directory.
const TMPFS_SIZE: &str = "8m";

/// A tmpfs mounted on a directory for one test; unmounted (lazily) on drop,
/// after the proxy that uses it is gone.
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of [`TMPFS_SIZE`] on `dir`. Panics (the test fails, it
    /// does not skip) when it cannot: the test needs root (or CAP_SYS_ADMIN)
    /// and a `mount` command.
    fn mount(dir: &std::path::Path) -> Tmpfs {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE},mode=0700"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs { dir: dir.to_path_buf() },
            Ok(o) => panic!(
                "the disk-full test cannot mount a {TMPFS_SIZE} tmpfs on {} to fill it: `mount` failed \
                 ({}): {}; it must run as root (or with CAP_SYS_ADMIN), as in .ci/run",
                dir.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!(
                "the disk-full test cannot mount a tmpfs on {}: cannot run `mount`: {e}",
                dir.display()
            ),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

/// Fills the file system holding `dir` to 0 bytes free with `dir/filler`;
/// returns the bytes written. Panics unless the writes stop with ENOSPC.
fn fill_disk(dir: &std::path::Path) -> u64 {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("create the filler file");
    let chunk = vec![0x55u8; 4096];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => panic!("writing {} returned 0", path.display()),
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = file.sync_all();
    written
}

/// Segment files of backend `backend`'s queue: (name, length).
fn segment_files(data_dir: &std::path::Path, backend: &str) -> Vec<(String, u64)> {
    let dir = data_dir.join("queue").join(backend);
    let mut out: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().map_or(0, |m| m.len())))
        .collect();
    out.sort();
    out
}

fn disk_full_then_backend_back_drains_the_queue_and_writes_resume(mode: Mode) {
    let a = Influxd::start("a");
    let b = Influxd::start("b");
    let config = Proxy::config(&[&a, &b]);
    let mut tmpfs = None;
    let proxy = Proxy::start_prepared(mode, config, |data| tmpfs = Some(Tmpfs::mount(data)));
    // Dropped after the cluster (declared first): the proxy stops, then the
    // tmpfs goes.
    let _tmpfs = tmpfs;
    let mut c = Cluster { proxy, a, b };
    let data_dir = c.proxy.data_dir();
    c.create_database(DB);
    c.b.stop();

    // Writes while b is down go to b's queue on the 8 MiB tmpfs until the
    // disk is full and a write is answered 503.
    let batch = 2_000;
    let mut acknowledged = 0u64;
    let mut refused = None;
    for i in 0..1_000u64 {
        let (status, body) = c.proxy.write(DB, &lines("full", batch, T0 + i * batch as u64), false);
        match status {
            204 => acknowledged += batch as u64,
            503 => {
                refused = Some(body);
                break;
            }
            _ => panic!("write {i} with b down: {status} {body}"),
        }
    }
    let refused = refused.expect("the 8 MiB disk never filled: no write was refused with 503");
    assert!(acknowledged > 0, "no write was kept before the disk filled: {refused}");
    assert!(refused.contains("cannot append to queue/b/"), "the 503 says why: {refused}");
    // Under wasmtime the host's ENOSPC reaches the component as a plain I/O
    // error (WASI errno 29), so only the native proxy can name it.
    if mode == Mode::Native {
        assert!(refused.contains("No space left on device"), "the 503 says why: {refused}");
    }
    if mode == Mode::Native {
        use std::os::unix::fs::PermissionsExt;
        for (name, _) in segment_files(&data_dir, "b") {
            let path = data_dir.join("queue/b").join(&name);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}: queued records hold clients' credentials", path.display());
        }
    }

    // The rest of the disk: 0 bytes free. A small write may still fit in the
    // unused tail of the segment's last page (counted); then every write is
    // refused and leaves no file behind.
    fill_disk(&data_dir);
    let mut next_ts = T0 + 1_000_000;
    let mut refused_writes = 0;
    for i in 0..100u64 {
        let (status, body) = c.proxy.write(DB, &lines("full", 10, next_ts), false);
        next_ts += 10;
        match status {
            204 => acknowledged += 10,
            503 => {
                refused_writes += 1;
                break;
            }
            _ => panic!("write {i} on a full disk: {status} {body}"),
        }
    }
    assert_eq!(refused_writes, 1, "writes on a full disk were never refused");
    let before = segment_files(&data_dir, "b");
    for i in 0..18u64 {
        let (status, body) = c.proxy.write(DB, &lines("refused", 10, T0 + i * 10), false);
        assert_eq!(status, 503, "write {i} on a full disk: {body}");
    }
    let after = segment_files(&data_dir, "b");
    assert_eq!(after, before, "refused writes left segment files behind");
    assert!(after.iter().all(|(_, len)| *len > 0), "empty segment files: {after:?}");

    // b comes back: its queue drains with 0 bytes free.
    let started = std::time::Instant::now();
    c.b.restart();
    let b_up = started.elapsed();
    wait_until(Duration::from_secs(120), "b's write queue drained on a full disk", || {
        let health = c.proxy.health();
        let entry = health_backend(&health, "b").cloned().unwrap_or_default();
        match queue_depth(&entry) {
            0 => Ok(()),
            n => Err(format!("{n} left in b's queue: {entry}")),
        }
    });
    eprintln!(
        "disk full ({mode:?}): {acknowledged} points replayed to b in {:?} after it answered /ping ({b_up:?} to restart it)",
        started.elapsed() - b_up
    );
    assert_eq!(c.b.count(DB, "full"), acknowledged, "points on b = points acknowledged (204)");
    assert!(c.a.count(DB, "full") >= acknowledged, "points on a");
    assert_eq!(c.b.count(DB, "refused"), 0, "refused writes are not on b");
    assert_eq!(segment_files(&data_dir, "b"), vec![], "segment files left after the drain");
    let dead = health_backend(&c.proxy.health(), "b").map(|e| e["dead_letters"].clone());
    assert_eq!(dead, Some(json!(0)), "nothing was dead-lettered");

    // Space frees: writes are accepted again and reach both backends.
    std::fs::remove_file(data_dir.join("filler")).expect("remove the filler file");
    c.proxy.write_ok(DB, &lines("again", 100, T0));
    for server in c.backends() {
        assert_eq!(server.count(DB, "again"), 100, "a write after space freed, on {}", server.name());
    }
    assert_alive(&mut c, "the disk-full episode");
}

// ---------------------------------------------------------------------------
// 12. A write that grows past influxd's max-body-size once timestamps are added
// ---------------------------------------------------------------------------

/// Issue 6.2: 1,000,000 lines without timestamps (15 MB, under the proxy's
/// 25 MB limit) grow to 35 MB per backend at ns precision once the proxy adds
/// its timestamps, over influxd's default 25 MB `max-body-size`. The proxy
/// must send them in batches of at most `backend_max_body_bytes`, so that
/// both backends hold every point, both queues stay or drain to 0, and a later
/// write still reaches both. All lines share the proxy's one timestamp (as on
/// influxd itself), so each of the 10,000 series `g` (100 consecutive lines
/// each) holds one point: `count(f)` is 10,000 on each backend exactly when
/// every batch arrived.
fn a_write_over_influxd_body_limit_after_timestamps_lands_in_batches(mode: Mode) {
    // influxd may take longer than the base config's 2 s to store an 8 MiB
    // batch (about 230,000 points) on a busy test machine: the default
    // timeout (10 s) or more, so that a slow answer is not taken for a fault.
    let c = Cluster::start_with(mode, |config| config["request_timeout_ms"] = json!(30_000));
    c.create_database(DB);
    let n = 1_000_000;
    let mut body = String::with_capacity(n * 16);
    for i in 0..n {
        body.push_str(&format!("p10,g={} f=1\n", i / 100));
    }
    assert!(body.len() < 25_000_000, "the body must be under max_body_bytes: {}", body.len());
    let resp = c.proxy.write_to(&format!("/write?db={DB}"), &body, false);
    assert_eq!(resp.status, 204, "write of 1,000,000 lines without timestamps: {resp:?}");
    drop(body);

    wait_until(CATCH_UP, "every point of the big write on both backends, queues empty", || {
        let counts: Vec<u64> =
            c.backends().iter().map(|s| count_of(&s.query_ok(DB, "SELECT count(f) FROM p10"))).collect();
        // /health answers 503 while both backends are marked down.
        let health = c.proxy.get("/health").json();
        let depths: Vec<u64> =
            ["a", "b"].iter().map(|n| health_backend(&health, n).map_or(u64::MAX, queue_depth)).collect();
        if counts == [10_000, 10_000] && depths == [0, 0] {
            Ok(())
        } else {
            Err(format!("count(f) on a, b: {counts:?}; queue depths: {depths:?}"))
        }
    });

    // A later write reaches both backends.
    c.proxy.write_ok(DB, &lines("after_big", 10, T0));
    wait_until(Duration::from_secs(10), "a write after the big one reaches both backends", || {
        let counts: Vec<u64> = c.backends().iter().map(|s| s.count(DB, "after_big")).collect();
        if counts == [10, 10] {
            Ok(())
        } else {
            Err(format!("points of after_big on a, b: {counts:?}"))
        }
    });
}

// ---------------------------------------------------------------------------
// Issue 8: gzip of write bodies to a backend configured with "gzip": true
// ---------------------------------------------------------------------------

/// Counter `name{backend="<backend>"}` of the proxy's `/metrics`.
fn backend_counter(proxy: &Proxy, name: &str, backend: &str) -> u64 {
    let body = proxy.get("/metrics").body;
    let prefix = format!("{name}{{backend=\"{backend}\"}} ");
    let value = body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|n| n.trim().parse().ok());
    value.unwrap_or_else(|| panic!("no {prefix} in /metrics: {body}"))
}

fn a_backend_with_gzip_stores_every_point(mode: Mode) {
    let mut c = Cluster::start_with(mode, |config| {
        config["backends"]["a"]["gzip"] = json!(true);
        // The 5,000-line bodies (about 150 KB) go in several batches.
        config["backend_max_body_bytes"] = json!(40_000);
    });
    c.create_database(DB);
    // Forwarded as sent (timestamps), stamped by the proxy (none), a client's
    // gzip body, and a body cut into batches (over backend_max_body_bytes).
    c.proxy.write_ok(DB, &lines("gzfwd", 5_000, T0));
    let unstamped: String = (0..2_000).map(|i| format!("gzstamp,host=h{i} v={i}\n")).collect();
    c.proxy.write_ok(DB, &unstamped);
    let (status, body) = c.proxy.write(DB, &lines("gzclient", 3_000, T0), true);
    assert_eq!(status, 204, "client gzip write: {body}");
    // a down: its writes are queued, then replayed (gzip) once it is back.
    c.a.kill();
    let (status, body) = c.proxy.write(DB, &lines("gzreplay", 2_000, T0), false);
    assert_eq!(status, 204, "write with a down: {body}");
    c.a.restart();
    wait_until(CATCH_UP, "a caught up (replay with gzip)", || {
        let depth = health_backend(&c.proxy.health(), "a").map_or(u64::MAX, queue_depth);
        let n = c.a.count(DB, "gzreplay");
        if (n, depth) == (2_000, 0) {
            Ok(())
        } else {
            Err(format!("{n} points of gzreplay on a, queue depth {depth}"))
        }
    });
    for (measurement, n) in [("gzfwd", 5_000), ("gzstamp", 2_000), ("gzclient", 3_000), ("gzreplay", 2_000)] {
        for server in c.backends() {
            assert_eq!(server.count(DB, measurement), n, "points of {measurement} on {}", server.name());
        }
        assert_same_points(&c, measurement);
    }
    // a was sent compressed bodies: far fewer bytes on the wire than b for
    // the same points (both got the client's gzip body as it came).
    let (sent_a, sent_b) = (
        backend_counter(&c.proxy, "influx_proxy_bytes_sent_total", "a"),
        backend_counter(&c.proxy, "influx_proxy_bytes_sent_total", "b"),
    );
    assert!(sent_a > 0 && sent_a * 3 < sent_b, "bytes sent: a (gzip) {sent_a}, b (plain) {sent_b}");
    assert_alive(&mut c, "the gzip writes");
}

// ---------------------------------------------------------------------------
// Instantiation per way of running the proxy
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Issue 6: many statements in one query, and a statement that fails among them
// ---------------------------------------------------------------------------

fn many_statements_and_a_failed_one_answer_as_influxd(mode: Mode) {
    let c = Cluster::start(mode);
    c.create_database(DB);
    // 3,000 statements (sent to each backend in batches) answer exactly what
    // one influxd answers to the same query.
    let q = "SHOW DATABASES;".repeat(3000);
    let through_proxy = c.proxy.query_ok(&q, "");
    let direct = c.a.query_ok("", &q);
    assert_eq!(through_proxy, direct, "3,000 SHOW DATABASES through the proxy and from influxd a differ");
    assert_eq!(through_proxy["results"].as_array().map(Vec::len), Some(3000));

    // A statement that fails in the middle: its own error (influxd 1.6 says
    // only "not executed" for it in a multi-statement query), and the
    // statements after it are not executed, as InfluxDB does.
    let (status, v) = c.proxy.query("SHOW DATABASES; SELECT * FROM nodb..m; SHOW DATABASES", "");
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 3, "{v}");
    assert_eq!(first_column(&json!({"results": [results[0].clone()]})), vec![DB], "{v}");
    assert_eq!(results[1]["error"], "database not found: nodb", "{v}");
    assert_eq!(results[2], json!({"statement_id": 2, "error": "not executed"}), "{v}");

    // A statement influxd refuses to parse after a mutation (found in the
    // adversarial pass: the proxy ran the CREATE, then answered 200 with the
    // parse error as the second statement's error). influxd parses the whole
    // query first: 400 with its error, nothing executed. So does the proxy.
    let q = "CREATE DATABASE made; SELECT FROM cpu WHERE";
    let (status, v) = c.proxy.query(q, DB);
    let direct = http(
        "POST",
        &format!("{}/query", c.a.url()),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form(&[("q", q), ("db", DB)]).into_bytes()),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        (status, v),
        (direct.status, direct.json()),
        "the proxy and influxd a answer {q:?} differently"
    );
    for server in c.backends() {
        assert!(
            !server.databases().contains(&"made".to_string()),
            "CREATE DATABASE ran on {}",
            server.name()
        );
    }
    // A query that parses runs whole.
    let (status, v) = c.proxy.query("CREATE DATABASE made; SHOW DATABASES", DB);
    assert_eq!(status, 200, "{v}");
    assert_eq!(query_error(&v), None, "{v}");
    for server in c.backends() {
        assert!(
            server.databases().contains(&"made".to_string()),
            "CREATE DATABASE missing on {}",
            server.name()
        );
    }
}

// ---------------------------------------------------------------------------
// Partial writes (issue 9, item 2)
// ---------------------------------------------------------------------------

/// `POST /write?db=<db>&precision=s` with `body` straight to `server`.
fn direct_write(server: &Influxd, db: &str, body: &str) -> Resp {
    http(
        "POST",
        &format!("{}/write?{}", server.url(), form(&[("db", db), ("precision", "s")])),
        &[],
        Some(body.as_bytes().to_vec()),
    )
}

/// A body with bad lines among good ones: the good points are stored on both
/// replicas and the answer is influxd's, status and body byte for byte, as a
/// direct influxd answers the same body (written to another database).
fn partial_writes_store_the_valid_points_as_influxd_does(mode: Mode) {
    let c = Cluster::start(mode);
    c.create_database(DB);
    c.a.query_ok("", "CREATE DATABASE direct");

    // One bad line among 5,000.
    let mut body = lines("partial", 5_000, T0);
    body = body.replacen(&format!("partial,host=h7 v=2497 {}\n", T0 + 2_497), "partial,host=h7\n", 1);
    assert_eq!(body.lines().count(), 5_000);
    let proxied =
        c.proxy.write_to(&format!("/write?{}", form(&[("db", DB), ("precision", "s")])), &body, false);
    let direct = direct_write(&c.a, "direct", &body);
    assert_eq!(direct.status, 400, "{direct:?}");
    assert!(direct.body.starts_with("{\"error\":\"partial write: unable to parse"), "{direct:?}");
    assert_eq!(
        (proxied.status, &proxied.body),
        (direct.status, &direct.body),
        "the proxy's answer vs influxd's"
    );
    for server in c.backends() {
        assert_eq!(server.count(DB, "partial"), 4_999, "points on {}", server.name());
    }
    assert_eq!(c.a.count("direct", "partial"), 4_999, "points stored by the direct influxd");
    assert_same_points(&c, "partial");

    // Several bad lines, of several kinds, and a point without a timestamp:
    // the reasons joined as influxd joins them.
    let body = format!(
        "several v=1 {T0}\nseveral v=oops {}\n# comment\nseveral,t v=2 {}\nseveral v=3 {}\n  several\nseveral v=4\n\
         several,t=<a&b> v=nope {}\n",
        T0 + 1,
        T0 + 2,
        T0 + 3,
        T0 + 4
    );
    let proxied =
        c.proxy.write_to(&format!("/write?{}", form(&[("db", DB), ("precision", "s")])), &body, false);
    let direct = direct_write(&c.a, "direct", &body);
    // Go's JSON escapes `<`, `&`, `>` in the quoted line.
    assert!(direct.body.contains("\\u003ca\\u0026b\\u003e"), "{direct:?}");
    assert_eq!((proxied.status, &proxied.body), (direct.status, &direct.body), "several bad lines");
    for server in c.backends() {
        assert_eq!(server.count(DB, "several"), 3, "points of several on {}", server.name());
    }
    assert_same_points(&c, "several");

    // Only bad lines: influxd's plain error, nothing stored.
    let body = "nothing,host=x\nnothing v=\n";
    let proxied =
        c.proxy.write_to(&format!("/write?{}", form(&[("db", DB), ("precision", "s")])), body, false);
    let direct = direct_write(&c.a, "direct", body);
    assert_eq!(direct.status, 400, "{direct:?}");
    assert!(!direct.body.contains("partial write"), "{direct:?}");
    assert_eq!((proxied.status, &proxied.body), (direct.status, &direct.body), "only bad lines");
    for server in c.backends() {
        assert!(
            !server.measurements(DB).contains(&"nothing".to_string()),
            "nothing stored on {}",
            server.name()
        );
    }
}

/// A field type conflict on one replica only: that replica refuses the
/// points the other stores; the client gets the refusing replica's answer as
/// it sent it (its name in `X-Influx-Proxy-Backend`), and `/metrics` counts
/// the refused points.
fn a_field_type_conflict_on_one_replica_is_its_partial_write(mode: Mode) {
    let c = Cluster::start(mode);
    c.create_database(DB);
    // On b only, `v` of `conflict` is a string.
    c.b.write(DB, &format!("conflict v=\"text\" {T0}\n"));
    assert_eq!(c.b.count(DB, "conflict"), 1);

    let body = format!("conflict v=1 {}\nconflict v=2 {}\nother v=3 {}\n", T0 + 1, T0 + 2, T0 + 3);
    let proxied =
        c.proxy.write_to(&format!("/write?{}", form(&[("db", DB), ("precision", "s")])), &body, false);
    // What b answers the same body directly (its points already there).
    let direct = direct_write(&c.b, DB, &body);
    assert_eq!(direct.status, 400, "{direct:?}");
    assert!(direct.body.contains("partial write: field type conflict"), "{direct:?}");
    assert_eq!((proxied.status, &proxied.body), (direct.status, &direct.body), "the proxy's answer vs b's");
    assert_eq!(proxied.header("x-influx-proxy-backend"), Some("b"), "{proxied:?}");
    assert_eq!(c.a.count(DB, "conflict"), 2, "a stored both points");
    assert_eq!(c.b.count(DB, "conflict"), 1, "b kept only its own");
    for server in c.backends() {
        assert_eq!(server.count(DB, "other"), 1, "the other measurement on {}", server.name());
    }
    assert_eq!(backend_counter(&c.proxy, "influx_proxy_points_refused_total", "b"), 2);
    assert_eq!(backend_counter(&c.proxy, "influx_proxy_points_refused_total", "a"), 0);
    // Not queued for a retry: the refusal is final.
    let health = c.proxy.health();
    for name in ["a", "b"] {
        let entry = health_backend(&health, name).unwrap_or_else(|| panic!("{name} in {health}"));
        assert_eq!(queue_depth(entry), 0, "{name}'s queue: {health}");
    }
}

// ---------------------------------------------------------------------------
// Issue 9: 1.x transparency of InfluxQL
// ---------------------------------------------------------------------------

/// `POST /query` (form body `q`, and `db` when not empty) to `base_url`: the
/// raw answer, for byte-for-byte comparisons of the proxy with influxd.
fn raw_query(base_url: &str, q: &str, db: &str) -> Resp {
    let mut params = vec![("q", q)];
    if !db.is_empty() {
        params.push(("db", db));
    }
    http(
        "POST",
        &format!("{base_url}/query"),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form(&params).into_bytes()),
    )
}

/// The backend that answered, from `X-Influx-Proxy-Backend`; panics when it
/// names none of `c`'s backends.
fn answering<'c>(c: &'c Cluster, r: &Resp) -> &'c Influxd {
    let name = r.header("x-influx-proxy-backend").unwrap_or_else(|| panic!("no backend header: {r:?}"));
    c.backends()
        .into_iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("unknown backend {name}: {r:?}"))
}

/// `(status, body)` of `r`.
fn status_body(r: &Resp) -> (u16, &str) {
    (r.status, r.body.as_str())
}

/// Item 1: `EXPLAIN [ANALYZE] SELECT` answers as the influxd holding the
/// data does (the proxy used to answer 400 "not supported").
fn explain_answers_as_influxd(mode: Mode) {
    let c = Cluster::start(mode);
    c.create_database(DB);
    c.proxy.write_ok(DB, &lines("cpu", 100, T0));
    for q in ["EXPLAIN SELECT * FROM cpu", "EXPLAIN SELECT mean(v) FROM cpu WHERE time > 0 GROUP BY time(1h)"]
    {
        let through_proxy = raw_query(&c.proxy.url(), q, DB);
        let server = answering(&c, &through_proxy);
        let direct = raw_query(&server.url(), q, DB);
        assert_eq!(
            status_body(&through_proxy),
            (200, direct.body.as_str()),
            "{q}: proxy vs {}",
            server.name()
        );
    }
    // EXPLAIN ANALYZE times the run: same shape, the timings differ.
    let q = "EXPLAIN ANALYZE SELECT count(v) FROM cpu";
    let through_proxy = raw_query(&c.proxy.url(), q, DB);
    let direct = raw_query(&answering(&c, &through_proxy).url(), q, DB);
    assert_eq!(through_proxy.status, 200, "{through_proxy:?}");
    let columns = |r: &Resp| r.json()["results"][0]["series"][0]["columns"].clone();
    assert_eq!(columns(&through_proxy), json!(["EXPLAIN ANALYZE"]), "{through_proxy:?}");
    assert_eq!(columns(&through_proxy), columns(&direct));
    // A database that does not exist: influxd's error, byte for byte.
    let q = "EXPLAIN SELECT * FROM nodb..cpu";
    let through_proxy = raw_query(&c.proxy.url(), q, DB);
    let direct = raw_query(&c.a.url(), q, DB);
    assert_eq!(status_body(&through_proxy), status_body(&direct), "{q}");
}

/// Item 2: `DELETE` and `DROP SERIES` without FROM, FROM a regex or several
/// measurements reach every backend (queued for one that is down) and
/// answer as influxd.
fn delete_and_drop_series_without_one_measurement_reach_every_backend(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);
    let mut body = String::new();
    for m in ["cpu", "mem", "disk", "net"] {
        for host in ["x", "y"] {
            body.push_str(&format!("{m},host={host} v=1 {T0}\n"));
        }
    }
    c.proxy.write_ok(DB, &body);
    let count = |server: &Influxd, m: &str, host: &str| {
        count_of(&server.query_ok(DB, &format!("SELECT count(v) FROM {m} WHERE host = '{host}'")))
    };
    let q = "DELETE WHERE host = 'x'";
    let through_proxy = raw_query(&c.proxy.url(), q, DB);
    let direct = raw_query(&c.a.url(), q, DB); // nothing left to delete: same answer
    assert_eq!(status_body(&through_proxy), status_body(&direct), "{q}");
    assert_eq!(through_proxy.status, 200, "{through_proxy:?}");
    for server in c.backends() {
        for m in ["cpu", "mem", "disk", "net"] {
            assert_eq!(count(server, m, "x"), 0, "{m},host=x deleted on {}", server.name());
            assert_eq!(count(server, m, "y"), 1, "{m},host=y kept on {}", server.name());
        }
    }
    for (q, gone) in [("DROP SERIES FROM /^c/ WHERE host = 'y'", "cpu"), ("DELETE FROM mem, disk", "mem")] {
        let r = raw_query(&c.proxy.url(), q, DB);
        assert_eq!(status_body(&r), status_body(&raw_query(&c.a.url(), q, DB)), "{q}");
        for server in c.backends() {
            assert_eq!(count(server, gone, "y"), 0, "{q}: {gone} on {}", server.name());
        }
    }
    for server in c.backends() {
        assert_eq!(count(server, "disk", "y"), 0, "disk on {}", server.name());
        assert_eq!(count(server, "net", "y"), 1, "net kept on {}", server.name());
    }
    // b down: queued, and applied once it is back.
    c.b.kill();
    let (status, v) = c.proxy.query("DROP SERIES WHERE host = 'y'", DB);
    assert_eq!((status, query_error(&v)), (200, None), "DROP SERIES with b down: {v}");
    assert_eq!(count(&c.a, "net", "y"), 0);
    c.b.restart();
    wait_until(CATCH_UP, "the queued DROP SERIES replayed on b", || match count(&c.b, "net", "y") {
        0 => Ok(()),
        n => Err(format!("{n} points of net,host=y on b")),
    });
}

/// Item 3: subscriptions. CREATE/DROP SUBSCRIPTION are forbidden by default;
/// allowed, they reach every backend; SHOW SUBSCRIPTIONS answers as influxd.
fn subscriptions_are_forbidden_by_default_and_fan_out_when_allowed(mode: Mode) {
    let c = Cluster::start_with(mode, |config| config["allowed_statements"] = json!(["subscription"]));
    c.create_database(DB);
    let create = "CREATE SUBSCRIPTION s ON itest.autogen DESTINATIONS ALL 'udp://127.0.0.1:9'";
    {
        let default = Proxy::start(mode, Proxy::config(&[&c.a, &c.b]));
        let (status, v) = default.query(create, "");
        assert_eq!(status, 403, "{v}");
        assert_eq!(v["error"], format!("statement forbidden by the proxy: {create}"), "{v}");
    }
    let (status, v) = c.proxy.query(create, "");
    assert_eq!((status, query_error(&v)), (200, None), "{v}");
    let show = "SHOW SUBSCRIPTIONS";
    for server in c.backends() {
        let v = server.query_ok("", show);
        assert_eq!(
            v["results"][0]["series"][0]["values"][0][1],
            "s",
            "subscription on {}: {v}",
            server.name()
        );
    }
    let through_proxy = raw_query(&c.proxy.url(), show, "");
    assert_eq!(status_body(&through_proxy), status_body(&raw_query(&c.a.url(), show, "")), "{show}");
    // The same again: influxd's "already exists", byte for byte.
    let through_proxy = raw_query(&c.proxy.url(), create, "");
    assert_eq!(status_body(&through_proxy), status_body(&raw_query(&c.a.url(), create, "")), "{create}");
    let (status, v) = c.proxy.query("DROP SUBSCRIPTION s ON itest.autogen", "");
    assert_eq!((status, query_error(&v)), (200, None), "{v}");
    for server in c.backends() {
        let v = server.query_ok("", show);
        assert_eq!(v["results"][0].get("series"), None, "subscription dropped on {}: {v}", server.name());
    }
}

/// Item 4: a backend's error reaches the client byte for byte as influxd
/// sent it (Telegraf matches on `database not found`, `retention policy
/// not found`, ...); which backend said it is in `X-Influx-Proxy-Backend`.
fn backend_errors_are_influxd_s_bodies_byte_for_byte(mode: Mode) {
    let c = Cluster::start(mode);
    c.create_database(DB);
    c.proxy.query_ok("CREATE RETENTION POLICY rp ON itest DURATION 1h REPLICATION 1", "");
    c.proxy.write_ok(DB, &lines("cpu", 10, T0));
    let cases: &[(&str, &str)] = &[
        ("CREATE RETENTION POLICY rp ON itest DURATION 2h REPLICATION 1", ""),
        ("CREATE DATABASE itest; CREATE RETENTION POLICY rp ON itest DURATION 2h REPLICATION 1", ""),
        ("SELECT * FROM nodb..cpu", DB),
        ("SELECT * FROM nope.cpu", DB),
        ("SELECT * FROM cpu", "nodb"),
        ("SHOW RETENTION POLICIES ON nodb", ""),
        ("DROP SERIES FROM cpu", "nodb"),
        ("DELETE WHERE host = 'x'", "nodb"),
        ("SELECT * FROM cpu WHERE", DB),
        ("SELECT v FROM cpu GROUP BY time(", DB),
    ];
    for &(q, db) in cases {
        let through_proxy = raw_query(&c.proxy.url(), q, db);
        let direct = raw_query(&c.a.url(), q, db);
        assert!(direct.body.contains("error"), "{q}: influxd a answers no error: {direct:?}");
        assert_eq!(status_body(&through_proxy), status_body(&direct), "{q} on {db:?}: proxy vs influxd a");
        // One backend's error names it; a merged SHOW names those merged.
        let backend = through_proxy.header("x-influx-proxy-backend");
        assert!(
            matches!(backend, Some("a" | "b" | "a, b" | "b, a")),
            "{q}: X-Influx-Proxy-Backend {backend:?}"
        );
    }
}

scenarios!(native: Mode::Native, wasm: Mode::Wasm; [
    partial_writes_store_the_valid_points_as_influxd_does,
    a_field_type_conflict_on_one_replica_is_its_partial_write,
    create_database_lands_on_both_backends,
    writes_of_10000_lines_land_on_both_backends,
    a_write_forwarded_as_sent_lands_on_both_backends,
    keymaps_route_each_measurement_only_where_configured,
    select_and_merged_show_answers,
    forbidden_statements_are_refused_and_reach_no_backend,
    backend_down_then_replay_makes_both_identical,
    proxy_killed_with_a_queue_loses_nothing,
    bad_writes_get_4xx_and_write_nothing,
    bad_requests_and_queries_get_4xx,
    ambiguous_or_slow_requests_are_refused_and_write_nothing,
    ping_health_and_metrics,
    sigterm_stops_and_keeps_the_queue,
    many_statements_and_a_failed_one_answer_as_influxd,
    disk_full_then_backend_back_drains_the_queue_and_writes_resume,
    backend_headers_that_are_not_ascii_reach_the_client_as_influxdb_errors,
    query_and_write_with_ff_bytes_get_influxdb_s_answer,
    replay_gets_past_a_backend_header_that_is_not_ascii,
    answers_over_backend_max_response_bytes_are_502,
    a_write_over_influxd_body_limit_after_timestamps_lands_in_batches,
    a_write_to_a_missing_retention_policy_gets_influxd_s_500_and_blocks_nothing,
    a_combined_query_answer_over_backend_max_response_bytes_is_502,
    a_backend_with_gzip_stores_every_point,
    writes_validated_on_other_threads_never_overtake_a_write_queue,
    explain_answers_as_influxd,
    delete_and_drop_series_without_one_measurement_reach_every_backend,
    subscriptions_are_forbidden_by_default_and_fan_out_when_allowed,
    backend_errors_are_influxd_s_bodies_byte_for_byte,
]);
