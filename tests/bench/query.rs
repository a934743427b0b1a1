//! Query benchmark: many InfluxQL statements in one `/query` through the
//! native proxy in front of two real `influxd` (issue 6: 1 MB of
//! `SHOW DATABASES;`, 69,905 statements, took 13.7-17 s and left the proxy at
//! 232 MB RSS; influxd alone answers it in about 0.4 s).
//!
//! Starts two `influxd` and the release proxy (backends `a`, `b`, `_default_`
//! on both), creates one database, then for 1/4, 1/2 and all of the 69,905
//! statements posts the query (form body) `--runs` times straight to influxd
//! `a` and through the proxy. Prints for each: the median wall time of the
//! direct and the proxied query, the proxy's CPU time (user + system, from
//! `/proc/<pid>/stat`) per proxied query, and, at the end, the proxy's peak
//! RSS (`VmHWM`). Checks that the proxy's answer equals influxd's (both
//! backends hold the same databases, so the merged answer is a's answer).
//!
//! Then the memory of answers the proxy parses (issue 6: "any single request
//! peaks at no more than about 3 x max_body_bytes + 20 MB RSS"): writes
//! `--points` points (600,000) of measurement `big` through the proxy, and
//! for each query below starts a fresh proxy (`big` on a and b,
//! `_default_` on b, so a regex FROM reads both replica sets and merges),
//! runs the query once and prints the answer's size and the proxy's peak RSS
//! against 3 x the answer + 20 MB: `SELECT * FROM /bi.*/` (merged), `SELECT *
//! FROM big` (passed through), `SELECT * FROM big; SELECT * FROM big` (split
//! and combined) and 1,000 x `SELECT * FROM big LIMIT 1000` in one query.
//! Each answer is checked against influxd a's answer to the same query.
//!
//! ```text
//! cargo bench --bench query [-- --runs N] [--points N]   (BENCH_QUERY_RUNS, 3;
//!                                                         BENCH_QUERY_POINTS, 600000; 0 skips)
//! ```
//! Panics, saying how to install it, when `influxd` is missing. Linux only
//! (`/proc`).

#[allow(unused_imports)]
#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::*;

/// The statements of the 1 MB query of issue 6.
const STATEMENTS: usize = 69_905;

fn main() {
    let mut runs: usize = std::env::var("BENCH_QUERY_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut points: usize =
        std::env::var("BENCH_QUERY_POINTS").ok().and_then(|v| v.parse().ok()).unwrap_or(600_000);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--runs" {
            runs = args.next().and_then(|v| v.parse().ok()).expect("--runs takes a number");
        }
        if arg == "--points" {
            points = args.next().and_then(|v| v.parse().ok()).expect("--points takes a number");
        }
    }
    let runs = runs.max(1);
    let c = Cluster::start(Mode::Native);
    c.create_database("bench");
    let pid = c.proxy.pid().expect("the proxy runs");
    println!(
        "influx-proxy query benchmark: SHOW DATABASES x N in one POST /query, {runs} runs each, medians"
    );
    println!("| statements | query bytes | influxd a direct | proxy -> a, b | proxy CPU per query |");
    println!("|---|---|---|---|---|");
    for n in [STATEMENTS / 4, STATEMENTS / 2, STATEMENTS] {
        let q = "SHOW DATABASES;".repeat(n);
        let body = form(&[("q", q.as_str())]).into_bytes();
        let mut direct = Vec::new();
        let mut proxied = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..runs {
            let (t, expected) = post(&format!("{}/query", c.a.url()), &body);
            direct.push(t);
            let before = cpu_time(pid);
            let (t, answer) = post(&format!("{}/query", c.proxy.url()), &body);
            cpu.push(cpu_time(pid).saturating_sub(before));
            proxied.push(t);
            assert!(answer == expected, "the proxy's answer to {n} statements differs from influxd's");
        }
        println!(
            "| {n} | {} | {:.3} s | {:.3} s | {:.3} s |",
            q.len(),
            median(&mut direct).as_secs_f64(),
            median(&mut proxied).as_secs_f64(),
            median(&mut cpu).as_secs_f64()
        );
    }
    println!("proxy peak RSS (VmHWM): {:.1} MiB", peak_rss_kib(pid) as f64 / 1024.0);
    if points > 0 {
        parsed_answer_memory(&c, points);
    }
}

/// The memory scenario (see the module doc): peak RSS of a fresh proxy per
/// query whose answer it parses.
fn parsed_answer_memory(c: &Cluster, points: usize) {
    const BODY_LINES: usize = 100_000;
    for start in (0..points).step_by(BODY_LINES) {
        let n = BODY_LINES.min(points - start);
        c.proxy.write_ok("bench", &lines("big", n, T0 + start as u64));
    }
    let mut config = Proxy::config(&[&c.a, &c.b]);
    config["keymaps"] = serde_json::json!({ "big": ["a", "b"], "_default_": ["b"] });
    config["backend_max_response_bytes"] = serde_json::json!(1u64 << 30);
    // One batch of 1,000 statements takes influxd 1.6 longer than the tests' 2 s.
    config["request_timeout_ms"] = serde_json::json!(120_000);
    let limits = vec!["SELECT * FROM big LIMIT 1000"; 1000].join("; ");
    let cases = [
        ("regex FROM, merged", "SELECT * FROM /bi.*/"),
        ("one statement, passed through", "SELECT * FROM big"),
        ("two statements, split and combined", "SELECT * FROM big; SELECT * FROM big"),
        ("1,000 x LIMIT 1000", limits.as_str()),
    ];
    println!();
    println!("parsed answers: {points} points of `big`, one fresh proxy per query");
    println!("| query | answer | proxy peak RSS | 3 x answer + 20 MB | proxy -> a, b |");
    println!("|---|---|---|---|---|");
    for (name, q) in cases {
        let proxy = Proxy::start(Mode::Native, config.clone());
        let pid = proxy.pid().expect("the proxy runs");
        let body = form(&[("q", q), ("db", "bench")]).into_bytes();
        let (_, expected) = post(&format!("{}/query", c.a.url()), &body);
        let start = Instant::now();
        let resp = http(
            "POST",
            &format!("{}/query", proxy.url()),
            // As curl asks: a plain answer, not gzip.
            &[("content-type", "application/x-www-form-urlencoded"), ("accept-encoding", "identity")],
            Some(body),
        );
        let elapsed = start.elapsed();
        assert_eq!(resp.status, 200, "{name}: {}", resp.error());
        let mb = |bytes: u64| bytes as f64 / 1e6;
        let answer = resp.body.len() as u64;
        println!(
            "| {name} | {:.1} MB | {:.1} MB | {:.1} MB | {:.2} s |",
            mb(answer),
            mb(peak_rss_kib(pid) * 1024),
            mb(3 * answer) + 20.0,
            elapsed.as_secs_f64()
        );
        assert!(resp.json() == expected, "{name}: the proxy's answer differs from influxd's");
    }
}

/// POSTs a form body; the wall time and the answer's JSON. Panics unless 200.
fn post(url: &str, body: &[u8]) -> (Duration, serde_json::Value) {
    let start = Instant::now();
    let resp =
        http("POST", url, &[("content-type", "application/x-www-form-urlencoded")], Some(body.to_vec()));
    let elapsed = start.elapsed();
    assert_eq!(resp.status, 200, "POST {url}: {}", resp.error());
    (elapsed, resp.json())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// User + system CPU time of process `pid` (`/proc/<pid>/stat` fields 14 and
/// 15, in clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// `VmHWM` of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
