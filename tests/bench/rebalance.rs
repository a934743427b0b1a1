//! Rebalance benchmark (issue 7): the copy rate of a move while the proxy
//! serves writes, and the write throughput and p99 latency during the move
//! next to the same load without one.
//!
//! Starts four `influxd` and the proxy (native) with shard group `main` =
//! a, b, c (RF 2), writes `--points` points of history (20 measurements),
//! then runs `--writers` writer threads, each sending `--requests-per-s`
//! requests per second (each request: one point of every measurement, 5
//! times, i.e. 100 lines) for `--seconds` without a move (the baseline); then adds backend d (config edited, `POST /reload`)
//! and runs the same load until `/health` says the move is verified.
//! Prints, for both phases: requests, lines/s, p50 and p99 latency; and the
//! move's points copied, duration and copy rate (points/s). The copy is
//! rate-limited by `rebalance_points_per_s` (`--rate`, default 50,000, the
//! config default).
//!
//! ```text
//! cargo bench --bench rebalance [-- --points N] [--writers N] [--requests-per-s N] [--seconds S] [--rate N]
//! ```
//! A paced load, not a saturating one: every write to a new owner goes
//! through its write queue while the move runs, and replay delivers one
//! record per request, so a load above the new owner's replay rate grows its
//! queue faster than it drains and the move cannot verify (it needs the
//! queue empty) until the load drops.
//! Panics, saying how to install it, when `influxd` is missing.

#[allow(unused_imports)]
#[path = "../support/mod.rs"]
mod support;

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const DB: &str = "bench";
const MEASUREMENTS: usize = 20;
const T0: u64 = 1_600_000_000;

fn arg(name: &str, default: u64) -> u64 {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == name {
            return args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"));
        }
    }
    default
}

/// Writers until `stop`, each sending `per_s` requests per second (paced:
/// a fixed offered load, so that the two phases compare): latencies (µs) of
/// acknowledged requests, and the failed requests.
fn load(url: &str, writers: u64, per_s: u64, stop: Arc<AtomicBool>, seq: Arc<AtomicU64>) -> (Vec<u64>, u64) {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (url, stop, seq, latencies, failures) =
                (url.to_string(), stop.clone(), seq.clone(), latencies.clone(), failures.clone());
            std::thread::spawn(move || {
                let path = format!("{url}/write?{}", form(&[("db", DB), ("precision", "s")]));
                let mut mine = Vec::new();
                let period = Duration::from_micros(1_000_000 / per_s.max(1));
                let mut next = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    next += period;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let n = seq.fetch_add(5, Ordering::SeqCst);
                    let mut body = String::new();
                    for k in 0..5 {
                        for i in 0..MEASUREMENTS {
                            body.push_str(&format!(
                                "m{i:02},host=h{} v={}.5 {}\n",
                                n % 3,
                                n + k,
                                T0 + 10_000_000 + n + k
                            ));
                        }
                    }
                    let start = Instant::now();
                    match try_http("POST", &path, &[], Some(body.into_bytes())) {
                        Ok(r) if r.status == 204 => mine.push(start.elapsed().as_micros() as u64),
                        _ => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                latencies.lock().expect("latencies").extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a writer thread");
    }
    let l = std::mem::take(&mut *latencies.lock().expect("latencies"));
    (l, failures.load(Ordering::SeqCst))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn report(name: &str, mut latencies: Vec<u64>, failures: u64, elapsed: Duration) {
    latencies.sort_unstable();
    let lines = latencies.len() as f64 * 5.0 * MEASUREMENTS as f64;
    println!(
        "{name:<14} {:>8} requests {:>10.0} lines/s  p50 {:>7.2} ms  p99 {:>7.2} ms  {failures} failed  ({:.1} s)",
        latencies.len(),
        lines / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        elapsed.as_secs_f64()
    );
}

fn main() {
    let points = arg("--points", 200_000);
    let writers = arg("--writers", 2);
    let seconds = arg("--seconds", 5);
    let rate = arg("--rate", 50_000);
    let per_s = arg("--requests-per-s", 100);
    let servers = Influxd::start_many(&["a", "b", "c", "d"]);
    let mut config = Proxy::config(&servers[..3].iter().collect::<Vec<_>>());
    config["shard_groups"] = json!({ "main": { "backends": ["a", "b", "c"], "replication_factor": 2 } });
    config["keymaps"] = json!({ "_default_": "main" });
    config["rebalance_single_writer"] = json!(true);
    config["rebalance_points_per_s"] = json!(rate);
    let proxy = Proxy::start(Mode::Native, config);
    proxy.query_ok(&format!("CREATE DATABASE {DB}"), "");
    let per = (points / MEASUREMENTS as u64).max(1);
    let mut j = 0;
    while j < per {
        let mut body = String::new();
        for jj in j..(j + 250).min(per) {
            for i in 0..MEASUREMENTS {
                body.push_str(&format!("m{i:02},host=h{} v={jj}.5,k={jj}i {}\n", jj % 3, T0 + jj));
            }
        }
        proxy.write_ok(DB, &body);
        j += 250;
    }
    println!(
        "rebalance benchmark: {} points of history in {MEASUREMENTS} measurements, {writers} writers x {per_s} \
         requests/s x 100 lines, copy rate limit {rate} points/s",
        per * MEASUREMENTS as u64
    );
    let seq = Arc::new(AtomicU64::new(0));

    // Baseline: no move.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handle = {
        let (url, stop, seq) = (proxy.url(), stop.clone(), seq.clone());
        std::thread::spawn(move || load(&url, writers, per_s, stop, seq))
    };
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::SeqCst);
    let (latencies, failures) = handle.join().expect("load");
    report("without a move", latencies, failures, started.elapsed());

    // The move: d added.
    let path = proxy.log_path().parent().expect("dir").join("config").join("proxy.json");
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
    file["backends"]["d"] = json!({ "url": servers[3].url() });
    file["shard_groups"]["main"]["backends"] = json!(["a", "b", "c", "d"]);
    std::fs::write(&path, serde_json::to_string_pretty(&file).expect("JSON")).expect("write");
    let started = Instant::now();
    let r = proxy.request("POST", "/reload", &[], None);
    assert_eq!(r.status, 200, "POST /reload: {r:?}");
    let load_started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (url, stop, seq) = (proxy.url(), stop.clone(), seq.clone());
        std::thread::spawn(move || load(&url, writers, per_s, stop, seq))
    };
    let mv = loop {
        let h = proxy.health();
        let mv = h["rebalance"][0].clone();
        if mv["keys_moving"] == 0 && mv["keys"].as_u64().unwrap_or(0) > 0 {
            break mv;
        }
        assert!(started.elapsed() < Duration::from_secs(1800), "the move did not finish: {h}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let moved_in = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (latencies, failures) = handle.join().expect("load");
    report("during the move", latencies, failures, load_started.elapsed());
    let copied = mv["points_copied"].as_u64().unwrap_or(0);
    println!(
        "move: {} of {} keys, {copied} points copied in {:.1} s: {:.0} points/s while serving writes ({} errors)",
        mv["keys"],
        MEASUREMENTS,
        moved_in.as_secs_f64(),
        copied as f64 / moved_in.as_secs_f64(),
        mv["errors"]
    );
}
