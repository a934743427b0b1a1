//! Issue 7, topology changes live with nothing lost, end to end: the real
//! proxy in front of four real InfluxDB 1.x servers (`influxd`), a shard
//! group with replication factor 2 under continuous write load while its
//! placement changes:
//! - a fourth backend added (config edited, `POST /reload`);
//! - the same with the proxy SIGKILLed mid-transfer and restarted;
//! - a backend wiped (stopped, data deleted, started) and `POST /resync`;
//! - a backend removed from the group.
//!
//! Checked as a user sees it: `/health` reports the move verified; every
//! key is then on exactly its new owners (computed here with
//! `influx_proxy::placement`, independently of the proxy) with counts equal
//! to the acknowledged writes, and nowhere else after `POST /cleanup`; and
//! queries asked during the move never miss points acknowledged before the
//! query started.

#[macro_use]
mod support;

use influx_proxy::placement::{place, ShardKey};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const DB: &str = "rb";
const MEASUREMENTS: usize = 16;
/// Points of history per measurement, written before the change.
const HISTORY: u64 = 200;
/// First timestamp of the history, s; live writes start at `T0 + LIVE_OFFSET`.
const T0: u64 = 1_600_000_000;
const LIVE_OFFSET: u64 = 100_000;
/// Bound on a move (a slow machine, 2 cores shared).
const MOVE_PATIENCE: Duration = Duration::from_secs(180);

fn measurement(i: usize) -> String {
    format!("m{i:02}")
}

/// One point per measurement at `ts` (every field type).
fn point_lines(j: u64, ts: u64) -> String {
    let mut body = String::new();
    for i in 0..MEASUREMENTS {
        body.push_str(&format!(
            "{},host=h{} v={j}.5,k={j}i,s=\"p {j}\",ok={} {ts}\n",
            measurement(i),
            j % 3,
            j % 2 == 0
        ));
    }
    body
}

/// The owners (names, sorted) of `(DB, m)` in a group of `group` with RF 2.
fn owners(group: &[&str], m: &str) -> Vec<String> {
    let key = ShardKey { db: DB, measurement: m, tag_value: None };
    let mut names: Vec<String> = place(group, 2, &key).into_iter().map(|i| group[i].to_string()).collect();
    names.sort_unstable();
    names
}

fn config_path(proxy: &Proxy) -> PathBuf {
    proxy.log_path().parent().expect("the proxy's directory").join("config").join("proxy.json")
}

fn edit_config(proxy: &Proxy, edit: impl FnOnce(&mut Value)) {
    let text = std::fs::read_to_string(config_path(proxy)).expect("read proxy.json");
    let mut config: Value = serde_json::from_str(&text).expect("proxy.json is JSON");
    edit(&mut config);
    std::fs::write(config_path(proxy), serde_json::to_string_pretty(&config).expect("JSON"))
        .expect("write proxy.json");
}

/// A thread writing one point per measurement per request through the
/// proxy, each request retried until it is acknowledged (204; the same
/// points again are duplicates, stored once), so that after it stops every
/// measurement has exactly `acked()` live points.
struct Writer {
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(url: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, pause, paused, acked, failures) =
                (stop.clone(), pause.clone(), paused.clone(), acked.clone(), failures.clone());
            std::thread::spawn(move || {
                let path = format!("{url}/write?{}", form(&[("db", DB), ("precision", "s")]));
                while !stop.load(Ordering::SeqCst) {
                    if pause.load(Ordering::SeqCst) {
                        paused.store(true, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    paused.store(false, Ordering::SeqCst);
                    let n = acked.load(Ordering::SeqCst);
                    let body = point_lines(n, T0 + LIVE_OFFSET + n);
                    match try_http("POST", &path, &[], Some(body.into_bytes())) {
                        Ok(r) if r.status == 204 => {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(15));
                }
            })
        };
        Writer { stop, pause, paused, acked, failures, thread: Some(thread) }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until the writer has no request in flight and sends none.
    fn pause(&self) {
        self.pause.store(true, Ordering::SeqCst);
        wait_until(Duration::from_secs(30), "the writer pauses", || {
            if self.paused.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("a write in flight".into())
            }
        });
    }

    fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
    }

    /// Stops the writer; returns the acknowledged requests.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the writer thread");
        }
        self.acked()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Queries through the proxy that must see every point acknowledged before
/// they started: counts of single measurements (the key's read owners), a
/// regex count over the group (a cover), and SHOW MEASUREMENTS. During a
/// removal (`regex_refused`) the backends that stay hold keys whole and
/// receive copies of others, so a cover could take a series from a partial
/// copy: the regex count is refused with a 400 until the move is verified.
fn check_reads(proxy: &Proxy, writer: &Writer, servers: &[Influxd], regex_refused: bool, round: usize) {
    // What each server holds, for the failure messages.
    let held = || -> String {
        servers
            .iter()
            .map(|s| {
                let v = s.query(DB, "SELECT count(v) FROM /m.*/");
                let counts: Vec<String> = v["results"][0]["series"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| format!("{}={}", x["name"].as_str().unwrap_or("?"), x["values"][0][1]))
                    .collect();
                format!("{}: {}", s.name(), counts.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let acked = writer.acked();
    // A quarter of the measurements each round (moving keys and keys that
    // stay, in turn).
    for j in 0..MEASUREMENTS / 4 {
        let m = measurement((round * (MEASUREMENTS / 4) + j) % MEASUREMENTS);
        let (status, v) = proxy.query(&format!("SELECT count(v) FROM {m}"), DB);
        assert_eq!(status, 200, "count of {m} during the move: {v}");
        let got = count_of(&v);
        assert!(
            got >= HISTORY + acked,
            "count of {m} during the move: {got} < {} acknowledged: {v}",
            HISTORY + acked
        );
    }
    let (status, v) = proxy.query("SELECT count(v) FROM /m.*/", DB);
    if regex_refused && status != 200 {
        assert_eq!(status, 400, "regex count during a removal: {v}");
        assert!(v["error"].as_str().unwrap_or("").contains("being copied"), "{v}");
    } else if regex_refused {
        // Answered: only once every key is verified (the move may have
        // finished between the caller's /health and this query).
        let mv = move_of(&proxy.health(), "main");
        assert!(
            mv.as_ref().is_some_and(|mv| mv["keys_moving"] == 0),
            "regex count answered during a removal before the move was verified: {v}\n{mv:?}"
        );
    }
    if status != 200 {
        return check_show(proxy);
    }
    let series = v["results"][0]["series"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        series.len(),
        MEASUREMENTS,
        "regex count during the move: every measurement: {v}\nheld:\n{}\nhealth: {}",
        held(),
        proxy.health()
    );
    for s in &series {
        let n = s["values"][0][1].as_u64().unwrap_or(0);
        assert!(
            n >= HISTORY + acked,
            "regex count during the move: {} has {n} < {}: {v}",
            s["name"],
            HISTORY + acked
        );
    }
    check_show(proxy);
}

fn check_show(proxy: &Proxy) {
    let (status, v) = proxy.query("SHOW MEASUREMENTS", DB);
    assert_eq!(status, 200, "SHOW MEASUREMENTS during the move: {v}");
    assert_eq!(first_column(&v).len(), MEASUREMENTS, "SHOW MEASUREMENTS during the move: {v}");
}

/// The group's entry of `/health`'s `rebalance`.
fn move_of(health: &Value, group: &str) -> Option<Value> {
    health["rebalance"].as_array()?.iter().find(|g| g["group"] == group).cloned()
}

/// Waits (asking reads all along) until the move of `main` is verified;
/// returns its last `/health` entry.
fn wait_verified(proxy: &Proxy, writer: &Writer, servers: &[Influxd], removal: bool) -> Value {
    let start = Instant::now();
    let mut round = 0;
    loop {
        let h = proxy.health();
        if let Some(mv) = move_of(&h, "main") {
            if mv["keys_moving"] == 0 && mv["keys"].as_u64().unwrap_or(0) > 0 {
                assert!(round > 0, "no query was asked while keys were moving: {mv}");
                return mv;
            }
        }
        assert!(start.elapsed() < MOVE_PATIENCE, "the move was not verified in {MOVE_PATIENCE:?}: {h}");
        check_reads(proxy, writer, servers, removal, round);
        round += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `POST /cleanup?group=<group>`, then waits for the move to be `cleaned`
/// (the old copies deleted).
fn cleanup(proxy: &Proxy, group: &str) {
    let r = proxy.request("POST", &format!("/cleanup?group={group}"), &[], None);
    assert_eq!(r.status, 200, "POST /cleanup: {r:?}");
    wait_until(MOVE_PATIENCE, "the old copies deleted", || {
        let h = proxy.health();
        match move_of(&h, group) {
            Some(mv) if mv["state"] == "cleaned" => Ok(()),
            _ => Err(format!("{}", h["rebalance"])),
        }
    });
}

/// Waits until every backend's write queue is delivered.
fn wait_queues_empty(proxy: &Proxy) {
    wait_until(MOVE_PATIENCE, "every write queue delivered", || {
        let h = proxy.health();
        let busy: Vec<String> = h["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| queue_depth(b) > 0)
            .map(|b| b["name"].to_string())
            .collect();
        if busy.is_empty() {
            Ok(())
        } else {
            Err(format!("queues not empty: {busy:?}"))
        }
    });
}

/// Every key on each of `group`'s owners with `want` points; with
/// `nowhere_else`, 0 on every other server of `servers`.
fn assert_placed(servers: &[Influxd], group: &[&str], want: u64, nowhere_else: bool, when: &str) {
    for i in 0..MEASUREMENTS {
        let m = measurement(i);
        let owners = owners(group, &m);
        for s in servers {
            let is_owner = owners.iter().any(|o| o == s.name());
            if !is_owner && !nowhere_else {
                continue;
            }
            let expected = if is_owner { want } else { 0 };
            assert_eq!(s.count(DB, &m), expected, "{when}: ({DB}, {m}) on {} (owners {owners:?})", s.name());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// A fourth backend added to a group of three.
    Add,
    /// The same, the proxy SIGKILLed mid-transfer and restarted.
    AddKilledMidTransfer,
    /// Backend b wiped and resynced.
    Resync,
    /// Backend c removed from a group of four.
    Remove,
}

fn topology_change_loses_nothing(mode: Mode, change: Change) {
    let servers = Influxd::start_many(&["a", "b", "c", "d"]);
    let (before, after): (Vec<&str>, Vec<&str>) = match change {
        Change::Add | Change::AddKilledMidTransfer => (vec!["a", "b", "c"], vec!["a", "b", "c", "d"]),
        Change::Resync => (vec!["a", "b", "c"], vec!["a", "b", "c"]),
        Change::Remove => (vec!["a", "b", "c", "d"], vec!["a", "b", "d"]),
    };
    let configured: Vec<&Influxd> = servers.iter().filter(|s| before.contains(&s.name())).collect();
    let mut config = Proxy::config(&configured);
    config["shard_groups"] = json!({ "main": { "backends": before, "replication_factor": 2 } });
    config["keymaps"] = json!({ "_default_": "main" });
    config["rebalance_single_writer"] = json!(true);
    // Slow enough for queries and writes to run during the move (and,
    // killed, to be killed in the middle of it).
    let (rate, chunk) = if change == Change::AddKilledMidTransfer { (150, 50) } else { (600, 100) };
    config["rebalance_points_per_s"] = json!(rate);
    config["rebalance_points_per_chunk"] = json!(chunk);
    let mut proxy = Proxy::start(mode, config);
    proxy.query_ok(&format!("CREATE DATABASE {DB}"), "");
    let mut history = String::new();
    for j in 0..HISTORY {
        history.push_str(&point_lines(j, T0 + j));
    }
    proxy.write_ok(DB, &history);
    for i in 0..MEASUREMENTS {
        let m = measurement(i);
        let owners = owners(&before, &m);
        for s in servers.iter().filter(|s| before.contains(&s.name())) {
            let want = if owners.iter().any(|o| o == s.name()) { HISTORY } else { 0 };
            assert_eq!(s.count(DB, &m), want, "before the change: ({DB}, {m}) on {}", s.name());
        }
    }

    let writer = Writer::start(proxy.url());
    wait_until(Duration::from_secs(30), "live writes acknowledged", || {
        if writer.acked() >= 5 {
            Ok(())
        } else {
            Err(format!("{} acknowledged", writer.acked()))
        }
    });
    let started = Instant::now();
    let mut servers = servers;
    match change {
        Change::Add | Change::AddKilledMidTransfer | Change::Remove => {
            let d_url = servers[3].url();
            edit_config(&proxy, |c| {
                c["backends"]["d"] = json!({ "url": d_url });
                c["shard_groups"]["main"]["backends"] = json!(after);
            });
            let r = proxy.request("POST", "/reload", &[], None);
            assert_eq!(r.status, 200, "POST /reload: {r:?}");
            assert!(r.body.contains("shard group main: moving"), "POST /reload names the move: {}", r.body);
        }
        Change::Resync => {
            writer.pause();
            wait_queues_empty(&proxy);
            servers[1].wipe();
            assert!(servers[1].databases().is_empty(), "b is empty after the wipe");
            let r = proxy.request("POST", "/resync?backend=b", &[], None);
            assert_eq!(r.status, 200, "POST /resync: {r:?}");
            writer.resume();
        }
    }
    if change == Change::AddKilledMidTransfer {
        wait_until(MOVE_PATIENCE, "the copy under way", || {
            let h = proxy.health();
            match move_of(&h, "main") {
                Some(mv) if mv["points_copied"].as_u64().unwrap_or(0) > 0 && mv["keys_moving"] != 0 => Ok(()),
                _ => Err(format!("{}", h["rebalance"])),
            }
        });
        // A delete of a key being copied could be undone by a chunk read
        // before it: refused. The last moving key (in name order) is copied
        // last, so it is still copying now.
        let last_moving = (0..MEASUREMENTS)
            .map(measurement)
            .rfind(|m| owners(&before, m) != owners(&after, m))
            .expect("some key moves");
        std::thread::sleep(Duration::from_millis(500));
        let (status, v) = proxy.query(&format!("DELETE FROM {last_moving} WHERE time < 1000"), DB);
        assert_eq!(status, 400, "DELETE of a key being copied: {v}");
        assert!(v["error"].as_str().unwrap_or("").contains("being moved"), "{v}");
        writer.pause();
        proxy.kill();
        proxy.restart();
        let mv = move_of(&proxy.health(), "main").expect("the move is resumed after a restart");
        assert_ne!(mv["keys_moving"], 0, "killed mid-transfer: keys still moving after the restart: {mv}");
        writer.resume();
    }
    let mv = wait_verified(&proxy, &writer, &servers, change == Change::Remove);
    let elapsed = started.elapsed();
    let failures = writer.failures.load(Ordering::SeqCst);
    let acked = writer.stop();
    eprintln!(
        "{change:?} ({mode:?}): verified in {elapsed:?}, {} points copied ({:.0} points/s), {acked} write requests \
         acknowledged, {failures} retried",
        mv["points_copied"],
        mv["points_copied"].as_f64().unwrap_or(0.0) / elapsed.as_secs_f64()
    );
    if change != Change::AddKilledMidTransfer {
        assert_eq!(failures, 0, "no write failed during the move");
    }
    assert_eq!(mv["errors"], 0, "no failed step: {mv}");
    let metrics = proxy.get("/metrics").body;
    let keys = mv["keys"].as_u64().unwrap_or(0);
    assert!(
        metrics
            .contains(&format!("influx_proxy_rebalance_keys{{group=\"main\",state=\"verified\"}} {keys}\n")),
        "/metrics shows the move verified: {metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "influx_proxy_rebalance_points_copied_total{{group=\"main\"}} {}\n",
            mv["points_copied"]
        )),
        "{metrics}"
    );
    wait_queues_empty(&proxy);
    // Reads now on the new owners: every acknowledged point.
    for i in 0..MEASUREMENTS {
        let m = measurement(i);
        let v = proxy.query_ok(&format!("SELECT count(v) FROM {m}"), DB);
        assert_eq!(count_of(&v), HISTORY + acked, "{m} through the proxy after the move");
    }
    let v = proxy.query_ok("SELECT count(v) FROM /m.*/", DB);
    let series = v["results"][0]["series"].as_array().cloned().unwrap_or_default();
    assert_eq!(series.len(), MEASUREMENTS, "regex count after the move: {v}");
    for s in &series {
        assert_eq!(s["values"][0][1].as_u64(), Some(HISTORY + acked), "regex count after the move: {v}");
    }
    assert_placed(&servers, &after, HISTORY + acked, false, "verified");
    if change == Change::Resync {
        assert_placed(&servers[..3], &after, HISTORY + acked, true, "resynced");
        return;
    }
    cleanup(&proxy, "main");
    wait_queues_empty(&proxy);
    assert_placed(&servers, &after, HISTORY + acked, true, "cleaned up");
}

/// `/cleanup` before the move is verified, `/resync` of an unknown backend,
/// and a move without `rebalance_single_writer`: refused, saying why.
fn refusals(mode: Mode) {
    let servers = Influxd::start_many(&["a", "b", "c", "d"]);
    let mut config = Proxy::config(&servers[..3].iter().collect::<Vec<_>>());
    config["shard_groups"] = json!({ "main": { "backends": ["a", "b", "c"], "replication_factor": 2 } });
    config["keymaps"] = json!({ "_default_": "main" });
    let proxy = Proxy::start(mode, config);
    proxy.query_ok(&format!("CREATE DATABASE {DB}"), "");
    proxy.write_ok(DB, &point_lines(0, T0));
    let d_url = servers[3].url();
    edit_config(&proxy, |c| {
        c["backends"]["d"] = json!({ "url": d_url });
        c["shard_groups"]["main"]["backends"] = json!(["a", "b", "c", "d"]);
    });
    let r = proxy.request("POST", "/reload", &[], None);
    assert_eq!(r.status, 400, "a move without single writer: {r:?}");
    assert!(
        r.error().contains("only writer") && r.error().contains("rebalance_single_writer"),
        "{}",
        r.error()
    );
    // The old placement keeps serving.
    proxy.write_ok(DB, &point_lines(1, T0 + 1));
    assert_placed(&servers[..3], &["a", "b", "c"], 2, true, "after the refused reload");
    let r = proxy.request("POST", "/cleanup?group=main", &[], None);
    assert_eq!(r.status, 400, "cleanup without a move: {r:?}");
    let r = proxy.request("POST", "/resync?backend=zz", &[], None);
    assert_eq!(r.status, 400, "resync of an unknown backend: {r:?}");
}

/// The owners (names, sorted) of `(DB, m, tag value)` in a tag-sharded
/// group of `group` with RF 2.
fn tag_owners(group: &[&str], m: &str, value: &str) -> Vec<String> {
    let key = ShardKey { db: DB, measurement: m, tag_value: Some(value) };
    let mut names: Vec<String> = place(group, 2, &key).into_iter().map(|i| group[i].to_string()).collect();
    names.sort_unstable();
    names
}

/// Points of `req` on `server` with `customer` = `value` ('' = without it).
fn tag_count(server: &Influxd, value: &str) -> u64 {
    count_of(&server.query_ok(DB, &format!("SELECT count(v) FROM req WHERE customer = '{value}'")))
}

/// A group sharded by tag `customer`: keys `(db, req, value)` are found with
/// `SHOW TAG VALUES` (and the points without the tag as the empty value),
/// moved to a fourth backend, and after cleanup each is on exactly its new
/// owners.
fn tag_sharded_keys_move_too(mode: Mode) {
    let servers = Influxd::start_many(&["a", "b", "c", "d"]);
    let mut config = Proxy::config(&servers[..3].iter().collect::<Vec<_>>());
    config["shard_groups"] = json!({ "tenants": { "backends": ["a", "b", "c"], "replication_factor": 2, "shard_tag": "customer" } });
    config["keymaps"] = json!({ "_default_": "tenants" });
    config["rebalance_single_writer"] = json!(true);
    let proxy = Proxy::start(mode, config);
    proxy.query_ok(&format!("CREATE DATABASE {DB}"), "");
    let values: Vec<String> = (0..12).map(|i| format!("c{i}")).chain([String::new()]).collect();
    let mut body = String::new();
    for j in 0..40u64 {
        for v in &values {
            let tag = if v.is_empty() { String::new() } else { format!(",customer={v}") };
            body.push_str(&format!("req{tag} v={j}i {}\n", T0 + j));
        }
    }
    proxy.write_ok(DB, &body);
    let d_url = servers[3].url();
    edit_config(&proxy, |c| {
        c["backends"]["d"] = json!({ "url": d_url });
        c["shard_groups"]["tenants"]["backends"] = json!(["a", "b", "c", "d"]);
    });
    let r = proxy.request("POST", "/reload", &[], None);
    assert_eq!(r.status, 200, "POST /reload: {r:?}");
    // While the keys move (reads on their old owners until verified), a
    // fanned-out and a pinned SELECT see every acknowledged point.
    let total = |q: &str| count_of(&proxy.query_ok(q, DB));
    assert_eq!(total("SELECT count(v) FROM req"), 40 * values.len() as u64, "fan-out during the move");
    assert_eq!(total("SELECT count(v) FROM req WHERE customer = 'c3'"), 40, "pinned during the move");
    wait_until(MOVE_PATIENCE, "the move verified", || {
        let h = proxy.health();
        match move_of(&h, "tenants") {
            Some(mv) if mv["keys_moving"] == 0 && mv["keys"].as_u64().unwrap_or(0) > 0 => Ok(()),
            _ => Err(format!("{}", h["rebalance"])),
        }
    });
    cleanup(&proxy, "tenants");
    wait_queues_empty(&proxy);
    let group = ["a", "b", "c", "d"];
    for v in &values {
        let owners = tag_owners(&group, "req", v);
        for s in &servers {
            let want = if owners.iter().any(|o| o == s.name()) { 40 } else { 0 };
            assert_eq!(tag_count(s, v), want, "(req, customer={v:?}) on {} (owners {owners:?})", s.name());
        }
    }
    assert_eq!(total("SELECT count(v) FROM req"), 40 * values.len() as u64, "fan-out after the move");
    assert_eq!(
        total("SELECT sum(v) FROM req WHERE customer = 'c3' OR customer = 'c9'"),
        2 * 780,
        "pinned after"
    );
    // SHOW through the proxy still sees every value.
    let v = proxy.query_ok("SHOW TAG VALUES FROM req WITH KEY = customer", DB);
    assert_eq!(column(&v, "value").len(), 12, "{v}");
}

fn a_fourth_backend_added_under_write_load_moves_its_keys_with_nothing_lost(mode: Mode) {
    topology_change_loses_nothing(mode, Change::Add);
}

fn the_proxy_killed_mid_transfer_resumes_and_finishes_the_move(mode: Mode) {
    topology_change_loses_nothing(mode, Change::AddKilledMidTransfer);
}

fn a_wiped_backend_is_resynced_from_its_replicas(mode: Mode) {
    topology_change_loses_nothing(mode, Change::Resync);
}

fn a_backend_removed_from_the_group_leaves_its_keys_on_the_others(mode: Mode) {
    topology_change_loses_nothing(mode, Change::Remove);
}

fn a_tag_sharded_groups_keys_move_to_a_new_backend(mode: Mode) {
    tag_sharded_keys_move_too(mode);
}

fn cleanup_resync_and_a_move_without_single_writer_are_refused_saying_why(mode: Mode) {
    refusals(mode);
}

scenarios!(native: Mode::Native, wasm: Mode::Wasm; [
    a_fourth_backend_added_under_write_load_moves_its_keys_with_nothing_lost,
    the_proxy_killed_mid_transfer_resumes_and_finishes_the_move,
    a_wiped_backend_is_resynced_from_its_replicas,
    a_backend_removed_from_the_group_leaves_its_keys_on_the_others,
    a_tag_sharded_groups_keys_move_to_a_new_backend,
    cleanup_resync_and_a_move_without_single_writer_are_refused_saying_why,
]);
