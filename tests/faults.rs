//! The fault suite (issue 6): the real proxy (native binary and wasm build) in
//! front of two real `influxd`, under concurrent write load, while something
//! breaks: a backend is SIGKILLed, the proxy is SIGKILLed with a non-empty
//! queue and again in the middle of a replay, a point is overwritten across an
//! outage, the queue's tail record is torn or corrupted on disk, a backend
//! hangs, a backend answers 500 now and then (after storing the write).
//!
//! Every scenario checks by counting, per replica: every point the proxy
//! acknowledged (204) is there, nothing is there that was never sent, and, where
//! every write was acknowledged, the count equals the acknowledged count
//! exactly (InfluxDB keeps one point per series and timestamp, so a point
//! delivered twice would not show as two; "nothing twice" here means no point
//! beyond those sent).
//!
//! Each scenario is a plain function of [`Mode`], instantiated for both builds
//! by `scenarios!` at the end of the file.

#[macro_use]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::relay::{Behaviour, Relay};
use support::*;

const DB: &str = "faults";
/// How long a backend may take to catch up from its queue in these tests.
const CATCH_UP: Duration = Duration::from_secs(60);
/// Points per write request of the load.
const BATCH: u64 = 200;

// ---------------------------------------------------------------------------
// Load: concurrent writers that remember what was acknowledged
// ---------------------------------------------------------------------------

/// What the writers sent and which of it the proxy acknowledged. A point is
/// `load,writer=w v=<seq>` at timestamp `T0 + seq` seconds, so (writer, seq)
/// names it.
#[derive(Default)]
struct Ledger {
    /// (writer, first seq, points) of every request sent.
    sent: Vec<(u64, u64, u64)>,
    /// The subset answered 204.
    acked: Vec<(u64, u64, u64)>,
    /// Answers other than 204, as `status body` or the transport error.
    refused: Vec<String>,
    /// Per request (writer, first seq): when it was sent and when answered,
    /// since the load started, and the answer; for the report of a failure.
    timing: BTreeMap<(u64, u64), (Duration, Duration, String)>,
    /// What the scenario did to the cluster meanwhile ([`Load::mark`]), and
    /// when, since the load started.
    events: Vec<(Duration, String)>,
}

impl Ledger {
    fn points(batches: &[(u64, u64, u64)]) -> BTreeSet<(u64, u64)> {
        batches.iter().flat_map(|&(w, first, n)| (first..first + n).map(move |s| (w, s))).collect()
    }

    /// The request of writer `w` that carried point `seq`, as it was timed.
    fn request_of(&self, w: u64, seq: u64) -> String {
        let first = seq - seq % BATCH;
        match self.timing.get(&(w, first)) {
            Some((sent, answered, outcome)) => format!(
                "writer w{w} seq {first}..{}: sent at {} ms, answered {outcome} at {} ms",
                first + BATCH,
                sent.as_millis(),
                answered.as_millis()
            ),
            None => format!("writer w{w} seq {first}..{}: never sent", first + BATCH),
        }
    }
}

/// `writers` threads writing batches of [`BATCH`] new points, one request at a
/// time each (as Telegraf does), until [`Load::stop`].
struct Load {
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Load {
    fn start(proxy_url: &str, writers: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let started = Instant::now();
        let threads = (0..writers)
            .map(|w| {
                let (stop, ledger, url) = (stop.clone(), ledger.clone(), proxy_url.to_string());
                std::thread::spawn(move || {
                    let mut seq = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let mut body = String::with_capacity(BATCH as usize * 40);
                        for s in seq..seq + BATCH {
                            body.push_str(&format!("load,writer=w{w} v={s} {}\n", T0 + s));
                        }
                        let url = format!("{url}/write?{}", form(&[("db", DB), ("precision", "s")]));
                        let sent_at = started.elapsed();
                        let answer = try_http("POST", &url, &[], Some(body.into_bytes()));
                        let answered_at = started.elapsed();
                        let mut l = ledger.lock().unwrap();
                        l.sent.push((w, seq, BATCH));
                        let outcome = match answer {
                            Ok(r) if r.status == 204 => {
                                l.acked.push((w, seq, BATCH));
                                "204".to_string()
                            }
                            Ok(r) => {
                                let refusal = format!("{} {}", r.status, r.body);
                                l.refused.push(refusal.clone());
                                refusal
                            }
                            Err(e) => {
                                l.refused.push(e.clone());
                                e
                            }
                        };
                        l.timing.insert((w, seq), (sent_at, answered_at, outcome));
                        drop(l);
                        seq += BATCH;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load { stop, ledger, threads, started }
    }

    /// Notes that the scenario did `what` now (shown if a check fails).
    fn mark(&self, what: &str) {
        let at = self.started.elapsed();
        self.ledger.lock().unwrap().events.push((at, what.to_string()));
    }

    /// Stops the writers and returns what they sent and what was acknowledged.
    fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a writer thread panicked");
        }
        let mut ledger = Arc::try_unwrap(self.ledger).ok().expect("writers joined").into_inner().unwrap();
        ledger.events.push((self.started.elapsed(), "load stopped".into()));
        ledger
    }

    /// Acknowledged requests so far.
    fn acked(&self) -> usize {
        self.ledger.lock().unwrap().acked.len()
    }
}

/// The (writer, seq) of every point of measurement `load` on `server`.
fn stored(server: &Influxd) -> BTreeSet<(u64, u64)> {
    let v = server.query_ok(DB, "SELECT v FROM \"load\" GROUP BY writer");
    let mut out = BTreeSet::new();
    for series in v["results"][0]["series"].as_array().cloned().unwrap_or_default() {
        let writer = series["tags"]["writer"].as_str().unwrap_or("").trim_start_matches('w');
        let w: u64 = writer.parse().unwrap_or_else(|_| panic!("writer tag of {series}"));
        for row in series["values"].as_array().cloned().unwrap_or_default() {
            let seq = row[1].as_f64().unwrap_or_else(|| panic!("v of {row}")) as u64;
            out.insert((w, seq));
        }
    }
    out
}

/// Waits until every replica in `servers` holds every acknowledged point,
/// then checks that none holds anything that was never sent; with `exact`,
/// that each holds exactly the acknowledged points. On a timeout the panic
/// says, for each replica, which acknowledged requests are missing (when
/// they were sent and answered, whether the other replicas have them), with
/// the scenario's events, the proxy's `/health` and `/metrics` and the
/// backends' log tails (the proxy's log tail is printed when it is dropped).
fn assert_replicas_hold(proxy: &Proxy, servers: &[&Influxd], ledger: &Ledger, exact: bool) {
    let acked = Ledger::points(&ledger.acked);
    let sent = Ledger::points(&ledger.sent);
    let deadline = Instant::now() + CATCH_UP;
    let holdings = loop {
        let holdings: Vec<BTreeSet<(u64, u64)>> = servers.iter().map(|s| stored(s)).collect();
        if holdings.iter().all(|have| acked.is_subset(have)) {
            break holdings;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {CATCH_UP:?} waiting until every replica holds every acknowledged point\n{}",
                missing_report(proxy, servers, &holdings, ledger, &acked)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for (server, have) in servers.iter().zip(&holdings) {
        let extra: Vec<_> = have.difference(&sent).take(5).collect();
        assert!(extra.is_empty(), "backend {} holds points never sent: {extra:?}", server.name());
        if exact {
            assert_eq!(have.len(), acked.len(), "backend {}: points stored vs acknowledged", server.name());
        }
    }
}

/// What [`assert_replicas_hold`] reports when acknowledged points are missing.
fn missing_report(
    proxy: &Proxy,
    servers: &[&Influxd],
    holdings: &[BTreeSet<(u64, u64)>],
    ledger: &Ledger,
    acked: &BTreeSet<(u64, u64)>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} requests sent, {} acknowledged ({} points), {} refused",
        ledger.sent.len(),
        ledger.acked.len(),
        acked.len(),
        ledger.refused.len()
    );
    for (i, (server, have)) in servers.iter().zip(holdings).enumerate() {
        let missing: Vec<&(u64, u64)> = acked.difference(have).collect();
        let _ = writeln!(
            out,
            "backend {} ({}, {}): {} of {} acknowledged points missing",
            server.name(),
            server.url(),
            if server.is_running() { "running" } else { "not running" },
            missing.len(),
            acked.len()
        );
        // Grouped by request: (writer, first seq) -> points missing.
        let mut by_request: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for &&(w, seq) in &missing {
            *by_request.entry((w, seq - seq % BATCH)).or_default() += 1;
        }
        for (&(w, first), &n) in by_request.iter().take(20) {
            let elsewhere: Vec<String> = servers
                .iter()
                .zip(holdings)
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, (other, theirs))| {
                    let held = (first..first + BATCH).filter(|&s| theirs.contains(&(w, s))).count();
                    format!("{} holds {held} of them", other.name())
                })
                .collect();
            let _ = writeln!(
                out,
                "  {n} of {BATCH} points of {}; {}",
                ledger.request_of(w, first),
                elsewhere.join(", ")
            );
        }
        if by_request.len() > 20 {
            let _ = writeln!(out, "  ... {} requests in all", by_request.len());
        }
    }
    let _ = writeln!(out, "events (ms since the load started):");
    for (at, what) in &ledger.events {
        let _ = writeln!(out, "  {} {what}", at.as_millis());
    }
    let health = proxy.get("/health");
    let _ = writeln!(out, "proxy /health ({}):\n{}", health.status, health.body);
    let metrics = proxy.get("/metrics");
    let _ = writeln!(out, "proxy /metrics ({}), per backend:", metrics.status);
    let wanted = |l: &&str| !l.starts_with('#') && l.contains("backend=") && !l.contains("_bucket");
    for line in metrics.body.lines().filter(wanted) {
        let _ = writeln!(out, "  {line}");
    }
    for server in servers {
        let _ =
            writeln!(out, "influxd {} write statistics (/debug/vars, since its last start):", server.name());
        let _ = writeln!(out, "{}", write_statistics(server));
        let _ =
            writeln!(out, "----- influxd {} log tail -----\n{}", server.name(), log_tail(&server.log_path()));
    }
    out
}

/// `server`'s own count of what it was sent and stored (influxd's
/// `/debug/vars`: the `httpd`, `write` and `shard` statistics), one line each:
/// whether the missing points reached it and were accepted (`pointsWrittenOK`,
/// `writePointsOk`) tells a proxy that never sent them from a server that
/// lost them.
fn write_statistics(server: &Influxd) -> String {
    let vars = match try_http("GET", &format!("{}/debug/vars", server.url()), &[], None) {
        Ok(r) if r.status == 200 => r.json(),
        Ok(r) => return format!("  /debug/vars answered {}", r.status),
        Err(e) => return format!("  /debug/vars: {e}"),
    };
    let mut lines = Vec::new();
    for entry in vars.as_object().into_iter().flat_map(|m| m.values()) {
        let name = entry["name"].as_str().unwrap_or("");
        if ["httpd", "write", "shard"].contains(&name) {
            lines.push(format!("  {name} {} {}", entry["tags"], entry["values"]));
        }
    }
    lines.join("\n")
}

/// Waits until every queue of the proxy is empty, then checks that none of
/// them gave a record up or dropped one as damaged: nothing in these
/// scenarios is refused, and the records they damage on disk are cut off
/// when the queue opens, so a dead letter or a dropped record is a lost
/// write (its reason is in the log tail and in `/health`). `/health` is read
/// whatever its status (503 while both backends are marked down).
fn wait_drained(proxy: &Proxy) {
    let health = wait_until(CATCH_UP, "every write queue drained", || {
        let health = proxy.get("/health").json();
        let depth: u64 = ["a", "b"].iter().filter_map(|n| health_backend(&health, n)).map(queue_depth).sum();
        if depth == 0 && health_backend(&health, "a").is_some() {
            Ok(health)
        } else {
            Err(format!("{health}"))
        }
    });
    let count = |field: &str| -> u64 {
        ["a", "b"]
            .iter()
            .filter_map(|n| health_backend(&health, n))
            .map(|b| b[field].as_u64().unwrap_or(0))
            .sum()
    };
    let (dead, dropped) = (count("dead_letters"), count("dropped_records"));
    if dead > 0 || dropped > 0 {
        panic!(
            "{dead} records dead-lettered, {dropped} dropped as damaged: {health}\n{}",
            log_tail(&proxy.log_path())
        );
    }
}

fn wait_for_acks(load: &Load, at_least: usize) {
    wait_until(Duration::from_secs(30), &format!("{at_least} writes acknowledged"), || {
        let n = load.acked();
        if n >= at_least {
            Ok(())
        } else {
            Err(format!("{n} acknowledged"))
        }
    });
}

// ---------------------------------------------------------------------------
// 1. A backend SIGKILLed under concurrent load
// ---------------------------------------------------------------------------

fn backend_killed_under_load_loses_nothing(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);
    let load = Load::start(&c.proxy.url(), 4);
    wait_for_acks(&load, 20);
    load.mark("killing b");
    c.b.kill();
    load.mark("b killed");
    let before = load.acked();
    wait_for_acks(&load, before + 40);
    load.mark("restarting b");
    c.b.restart();
    load.mark("b answers /ping");
    let before = load.acked();
    wait_for_acks(&load, before + 20);
    let ledger = load.stop();
    assert!(ledger.refused.is_empty(), "with one replica up every write is kept: {:?}", &ledger.refused[..]);
    wait_drained(&c.proxy);
    assert_replicas_hold(&c.proxy, &[&c.a, &c.b], &ledger, true);
}

// ---------------------------------------------------------------------------
// 2. The proxy SIGKILLed under load while a queue is not empty
// ---------------------------------------------------------------------------

fn proxy_killed_under_load_with_a_queue_loses_nothing(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);
    c.b.kill();
    let load = Load::start(&c.proxy.url(), 4);
    wait_for_acks(&load, 30);
    load.mark("killing the proxy");
    c.proxy.kill();
    std::thread::sleep(Duration::from_millis(300));
    load.mark("restarting the proxy");
    c.proxy.restart();
    load.mark("the proxy answers /ping");
    let before = load.acked();
    wait_for_acks(&load, before + 20);
    load.mark("restarting b");
    c.b.restart();
    load.mark("b answers /ping");
    let before = load.acked();
    wait_for_acks(&load, before + 20);
    let ledger = load.stop();
    wait_drained(&c.proxy);
    // Requests cut by the kill got no answer; they may or may not be stored.
    assert_replicas_hold(&c.proxy, &[&c.a, &c.b], &ledger, false);
}

// ---------------------------------------------------------------------------
// 3. The proxy SIGKILLed in the middle of a replay
// ---------------------------------------------------------------------------

fn proxy_killed_mid_replay_loses_nothing(mode: Mode) {
    // b sits behind a relay that can hold its answers, so the replay can be
    // caught in the middle deterministically.
    let a = Influxd::start("a");
    let mut b = Influxd::start("b");
    let relay = Relay::start(b.url().trim_start_matches("http://"), Behaviour::Forward);
    let mut config = Proxy::config(&[&a, &b]);
    config["backends"]["b"]["url"] = serde_json::json!(relay.url());
    // Replay sends consecutive records as one request of at most this many
    // bytes: two of the load's ~7 KB records (200 lines of ~35 bytes), so
    // that 10 requests (20 records) leave records of the 60 or more queued
    // (at 40,000, 5 records a request, 10 requests could drain the queue).
    config["backend_max_body_bytes"] = serde_json::json!(15_000);
    let mut proxy = Proxy::start(mode, config);
    proxy.query_ok(&format!("CREATE DATABASE {DB}"), "");

    b.kill();
    let load = Load::start(&proxy.url(), 2);
    wait_for_acks(&load, 60);
    let ledger = load.stop();
    assert!(ledger.refused.is_empty(), "{:?}", ledger.refused);
    let queued = queue_depth(health_backend(&proxy.health(), "b").expect("b in /health"));
    assert!(queued >= 60, "b's queue holds the writes: {queued}");

    // b back; after 10 replayed requests (each one record or more) the relay
    // hangs, so the proxy is killed with a replay in flight and records left.
    relay.hang_after_writes(10);
    b.restart();
    wait_until(CATCH_UP, "10 requests replayed", || {
        let n = b.count(DB, "load");
        if n >= 10 * BATCH {
            Ok(())
        } else {
            Err(format!("{n} points replayed"))
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let left = queue_depth(health_backend(&proxy.health(), "b").expect("b in /health"));
    assert!(left > 0, "records left in b's queue when the proxy is killed");
    proxy.kill();
    relay.hang_after_writes(-1);
    proxy.restart();
    wait_drained(&proxy);
    assert_replicas_hold(&proxy, &[&a, &b], &ledger, true);
}

// ---------------------------------------------------------------------------
// 4. Overwrites across an outage: the newest value wins on the recovered backend
// ---------------------------------------------------------------------------

fn overwrites_across_an_outage_keep_the_newest_value(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);
    let load = Load::start(&c.proxy.url(), 2);
    // 100 points rewritten with the round number, round after round, by one
    // client waiting for each answer; b is down for the middle rounds.
    fn round(proxy: &Proxy, r: u64) {
        let body: String = (0..100).map(|i| format!("ow,host=h{i} v={r} {}\n", T0 + i)).collect();
        proxy.write_ok(DB, &body);
    }
    for r in 0..5 {
        round(&c.proxy, r);
    }
    c.b.kill();
    for r in 5..15 {
        round(&c.proxy, r);
    }
    c.b.restart();
    for r in 15..20 {
        round(&c.proxy, r);
    }
    let ledger = load.stop();
    wait_drained(&c.proxy);
    for server in c.backends() {
        let v = server.query_ok(DB, "SELECT count(v), min(v), max(v) FROM ow");
        let row = &v["results"][0]["series"][0]["values"][0];
        assert_eq!(
            (row[1].as_u64(), row[2].as_f64(), row[3].as_f64()),
            (Some(100), Some(19.0), Some(19.0)),
            "backend {}: every point of ow holds the last value written: {v}",
            server.name()
        );
    }
    assert_replicas_hold(&c.proxy, &[&c.a, &c.b], &ledger, true);
}

// ---------------------------------------------------------------------------
// 5. A torn tail and a corrupted tail record in the queue on disk
// ---------------------------------------------------------------------------

/// The newest segment file of backend `name`'s queue.
fn newest_segment(proxy: &Proxy, name: &str) -> std::path::PathBuf {
    let dir = proxy.data_dir().join("queue").join(name);
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    segments.pop().unwrap_or_else(|| panic!("no segment in {}", dir.display()))
}

fn torn_tail_is_dropped_and_the_rest_replayed(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);
    c.b.kill();
    let load = Load::start(&c.proxy.url(), 2);
    wait_for_acks(&load, 20);
    let ledger = load.stop();
    assert!(ledger.refused.is_empty(), "{:?}", ledger.refused);
    c.proxy.kill();
    // A crash in the middle of an append: the start of a frame and part of
    // its payload, never acknowledged to anyone.
    let segment = newest_segment(&c.proxy, "b");
    let mut torn = vec![0xD1, 0x01, 0x00, 0x10, 0x00, 0x00, 0xAA, 0xBB, 0xCC, 0xDD];
    torn.extend_from_slice(b"\x01\x00\x00\x00partial payload");
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(&segment).unwrap().write_all(&torn).unwrap();
    c.proxy.restart();
    c.b.restart();
    wait_drained(&c.proxy);
    assert_replicas_hold(&c.proxy, &[&c.a, &c.b], &ledger, true);
    // And the queue keeps working after the repair.
    c.proxy.write_ok(DB, "after,host=x v=1 1600000000\n");
}

fn corrupted_tail_record_is_skipped_and_the_rest_replayed(mode: Mode) {
    let mut c = Cluster::start(mode);
    c.create_database(DB);
    c.b.kill();
    for k in 0..10u64 {
        let body: String = (0..BATCH)
            .map(|s| format!("load,writer=w0 v={} {}\n", k * BATCH + s, T0 + k * BATCH + s))
            .collect();
        c.proxy.write_ok(DB, &body);
    }
    c.proxy.kill();
    // Bit rot in the last record's payload (its last byte is a newline of the
    // body): its CRC no longer matches.
    let segment = newest_segment(&c.proxy, "b");
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();
    c.proxy.restart();
    c.b.restart();
    wait_drained(&c.proxy);
    // Every record but the damaged one reaches b; a holds all ten.
    let on_b = stored(&c.b);
    assert_eq!(on_b.len() as u64, 9 * BATCH, "points on b: the damaged record alone is lost");
    assert!(on_b.iter().all(|&(_, s)| s < 9 * BATCH), "the damaged record was the last one");
    assert_eq!(stored(&c.a).len() as u64, 10 * BATCH);
    c.proxy.write_ok(DB, "after,host=x v=1 1600000000\n");
    wait_until(Duration::from_secs(10), "a write after the repair reaches b", || {
        if c.b.count(DB, "after") == 1 {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
}

// ---------------------------------------------------------------------------
// 6. A hanging backend, and one answering 500 now and then
// ---------------------------------------------------------------------------

fn a_hanging_backend_queues_and_catches_up(mode: Mode) {
    let a = Influxd::start("a");
    let b = Influxd::start("b");
    let relay = Relay::start(b.url().trim_start_matches("http://"), Behaviour::Forward);
    let mut config = Proxy::config(&[&a, &b]);
    config["backends"]["b"]["url"] = serde_json::json!(relay.url());
    config["request_timeout_ms"] = serde_json::json!(500);
    let proxy = Proxy::start(mode, config);
    proxy.query_ok(&format!("CREATE DATABASE {DB}"), "");
    let load = Load::start(&proxy.url(), 3);
    wait_for_acks(&load, 10);
    load.mark("b's relay hangs");
    relay.set(Behaviour::Hang);
    let before = load.acked();
    wait_for_acks(&load, before + 30);
    load.mark("b's relay forwards again");
    relay.set(Behaviour::Forward);
    let before = load.acked();
    wait_for_acks(&load, before + 10);
    let ledger = load.stop();
    assert!(ledger.refused.is_empty(), "a hanging replica must not fail writes: {:?}", &ledger.refused[..]);
    wait_drained(&proxy);
    assert_replicas_hold(&proxy, &[&a, &b], &ledger, true);
}

fn intermittent_500s_lose_nothing_and_add_nothing(mode: Mode) {
    let a = Influxd::start("a");
    let b = Influxd::start("b");
    let relay = Relay::start(b.url().trim_start_matches("http://"), Behaviour::Fail500EveryThirdWrite);
    let mut config = Proxy::config(&[&a, &b]);
    config["backends"]["b"]["url"] = serde_json::json!(relay.url());
    let proxy = Proxy::start(mode, config);
    proxy.query_ok(&format!("CREATE DATABASE {DB}"), "");
    let load = Load::start(&proxy.url(), 3);
    wait_for_acks(&load, 60);
    let ledger = load.stop();
    assert!(ledger.refused.is_empty(), "500s of one replica must not fail writes: {:?}", &ledger.refused[..]);
    assert!(relay.injected_failures() > 0, "the relay injected 500s");
    relay.set(Behaviour::Forward);
    wait_drained(&proxy);
    assert_replicas_hold(&proxy, &[&a, &b], &ledger, true);
}

scenarios!(native: Mode::Native, wasm: Mode::Wasm; [
    backend_killed_under_load_loses_nothing,
    proxy_killed_under_load_with_a_queue_loses_nothing,
    proxy_killed_mid_replay_loses_nothing,
    overwrites_across_an_outage_keep_the_newest_value,
    torn_tail_is_dropped_and_the_rest_replayed,
    corrupted_tail_record_is_skipped_and_the_rest_replayed,
    a_hanging_backend_queues_and_catches_up,
    intermittent_500s_lose_nothing_and_add_nothing,
]);
