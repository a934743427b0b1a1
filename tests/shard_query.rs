//! Exactness of `influx_proxy::shard_query` against real InfluxDB 1.x
//! (`influxd`), without the proxy: a reference influxd gets every point; three
//! shard influxd get the same points partitioned by `placement::place` of
//! `(db, measurement, customer_id)` over the three with RF 2 (so shards
//! overlap). For each statement, every asked shard is asked the planned
//! statement directly, the answers are merged with the module, and the merged
//! JSON must equal the reference's answer. Statements that cannot be merged
//! exactly must be refused with a message naming the function and how to make
//! the query exact.

mod support;

use influx_proxy::placement::{place, ShardKey};
use influx_proxy::results::StatementResult;
use influx_proxy::shard_query::{pinned_values, plan};
use serde_json::Value;
use support::*;

const DB: &str = "shq";
const M: &str = "req";
const TAG: &str = "customer_id";
const SHARDS: [&str; 3] = ["s0", "s1", "s2"];
const RF: usize = 2;

struct Fixture {
    reference: Influxd,
    shards: Vec<Influxd>,
}

fn owners(value: &str) -> Vec<usize> {
    place(&SHARDS, RF, &ShardKey { db: DB, measurement: M, tag_value: Some(value) })
}

/// Customers c0..c7, each with one host (h0/h1 alternating), fields `v`
/// (float, multiples of 0.5 so sums are exact), `n` (integer), `s` (string);
/// points every 10 s from T0 for 30 steps with a gap (steps 12..18) and
/// customers skipping some steps, so buckets are shared, missing or empty.
/// Many points of different customers share a timestamp (ties). A few points
/// have no customer_id (the shard of the empty value), at odd seconds.
fn data() -> Vec<(String, String)> {
    let mut points = Vec::new();
    for c in 0..8u64 {
        for k in 0..30u64 {
            if (12..18).contains(&k) || (k + c) % 3 == 0 {
                continue;
            }
            let v = (c * 7 + k) as f64 * 0.5;
            let n = c * 100 + k;
            // `f`: decimal fractions (not exact in binary) that must pass the
            // merge unchanged.
            let f = format!("{}.{:02}", c, (k * 37 + c * 11) % 100);
            let line = format!(
                "{M},{TAG}=c{c},host=h{},region=r{} v={v},n={n}i,s=\"x{}\",f={f} {}\n",
                c % 2,
                c % 3,
                (k + c) % 4,
                T0 + k * 10
            );
            points.push((format!("c{c}"), line));
        }
    }
    for k in [1u64, 7, 25] {
        let line = format!("{M},host=h9 v={k}.5,n={}i,s=\"none\",f=9.{k:02} {}\n", 1000 + k, T0 + k * 10 + 3);
        points.push((String::new(), line));
    }
    points
}

fn fixture() -> Fixture {
    let reference = Influxd::start("reference");
    let shards: Vec<Influxd> = SHARDS.iter().map(|n| Influxd::start(n)).collect();
    for server in std::iter::once(&reference).chain(&shards) {
        server.query_ok("", &format!("CREATE DATABASE {DB}"));
    }
    let points = data();
    let all: String = points.iter().map(|p| p.1.as_str()).collect();
    reference.write(DB, &all);
    for (i, shard) in shards.iter().enumerate() {
        let mine: String =
            points.iter().filter(|p| owners(&p.0).contains(&i)).map(|p| p.1.as_str()).collect();
        assert!(!mine.is_empty(), "shard {i} holds no point: the test data would not test the merge");
        shard.write(DB, &mine);
    }
    // RF 2 of 3: some values are on both s0 and s1 (the asked backends share keys).
    assert!(
        (0..8).any(|c| {
            let o = owners(&format!("c{c}"));
            o.contains(&0) && o.contains(&1)
        }),
        "no value shared by s0 and s1"
    );
    Fixture { reference, shards }
}

fn first_result(v: &Value) -> Value {
    let mut r = v["results"][0].clone();
    if let Some(o) = r.as_object_mut() {
        o.remove("statement_id");
    }
    r
}

impl Fixture {
    fn reference_answer(&self, q: &str) -> Value {
        first_result(&self.reference.query(DB, q))
    }

    /// The reference's answer with the client's `epoch`.
    fn reference_epoch(&self, q: &str, epoch: &str) -> Value {
        let resp = http(
            "POST",
            &format!("{}/query", self.reference.url()),
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(form(&[("q", q), ("db", DB), ("epoch", epoch)]).into_bytes()),
        );
        assert_eq!(resp.status, 200, "reference: {q} epoch={epoch}: {resp:?}");
        first_result(&resp.json())
    }

    /// Plans `q`, asks each shard in `asked` directly (without epoch),
    /// merges.
    fn merged(&self, q: &str, asked: &[usize]) -> Result<Value, String> {
        self.merged_epoch(q, asked, None)
    }

    fn merged_epoch(&self, q: &str, asked: &[usize], epoch: Option<&str>) -> Result<Value, String> {
        let planned = plan(q, TAG)?;
        let answers: Vec<(usize, Vec<StatementResult>)> = asked
            .iter()
            .map(|&i| {
                let v = self.shards[i].query(DB, &planned.backend_query());
                let results = v["results"].as_array().cloned().unwrap_or_default();
                (i, results.into_iter().map(StatementResult::from).collect())
            })
            .collect();
        let owner = |v: &str| owners(v).into_iter().find(|i| asked.contains(i));
        planned.merge(answers, &owner, epoch).map(|r| r.to_value())
    }

    /// Checks `q` with every backend asked and with only s0 and s1 (any
    /// N - RF + 1 = 2 of them meet every replica set); returns the mismatches.
    fn check(&self, q: &str) -> Vec<String> {
        let want = self.reference_answer(q);
        assert!(want.get("error").is_none(), "the reference refuses {q}: {want}");
        let mut bad = Vec::new();
        // An empty answer would compare equal too easily: only the two
        // statements meant to match nothing may have no series.
        if want.get("series").is_none() && !q.contains("'nobody'") && !q.contains("time < 0") {
            bad.push(format!("{q}: the reference answered no series; the test data do not exercise it"));
        }
        for asked in [&[0usize, 1, 2][..], &[0, 1][..], &[1, 2][..]] {
            match self.merged(q, asked) {
                Ok(got) if got == want => {}
                Ok(got) => bad.push(format!("{q} (asked {asked:?}):\n  want {want}\n  got  {got}")),
                Err(e) => bad.push(format!("{q} (asked {asked:?}): refused: {e}")),
            }
        }
        bad
    }
}

fn range() -> String {
    // From a minute before the first point to a minute after the last, so
    // fill() has empty buckets at both ends and in the gap.
    format!("time >= {}s AND time < {}s", T0 - 60, T0 + 360)
}

#[test]
fn fanned_out_queries_equal_one_influxd() {
    let f = fixture();
    let r = range();
    let mut statements: Vec<String> = Vec::new();
    for func in ["count", "sum", "min", "max", "spread", "mean"] {
        for field in ["v", "n"] {
            statements.push(format!("SELECT {func}({field}) FROM {M}"));
            statements.push(format!("SELECT {func}({field}) FROM {M} WHERE {r} GROUP BY host"));
        }
    }
    // first/last where the selected point's time is one value's only (the
    // points without customer_id sit at odd seconds); ties are refused below.
    for func in ["first", "last"] {
        for field in ["v", "n", "s"] {
            statements.push(format!(
                "SELECT {func}({field}) FROM {M} WHERE time > {}s AND time < {}s",
                T0 + 10,
                T0 + 260
            ));
        }
    }
    for func in ["count", "sum", "min", "max", "spread", "mean"] {
        for fill in ["none", "null", "previous", "linear", "7"] {
            let field = if func == "sum" || func == "spread" { "n" } else { "v" };
            statements
                .push(format!("SELECT {func}({field}) FROM {M} WHERE {r} GROUP BY time(1m) fill({fill})"));
        }
        statements.push(format!("SELECT {func}(v) FROM {M} WHERE {r} GROUP BY time(30s), host"));
    }
    statements.extend([
        // Several functions, aliases, repeated names.
        format!("SELECT count(v), sum(n) AS total, mean(v), mean(n), spread(n), min(v), max(v) FROM {M}"),
        format!(
            "SELECT count(v) AS c, mean(v), max(n) AS top_n FROM {M} WHERE {r} GROUP BY time(1m), host fill(previous)"
        ),
        format!("SELECT mean(v), count(n) FROM {M} WHERE {r} GROUP BY time(1m) fill(linear)"),
        format!("SELECT mean(v) FROM {M} WHERE {r} GROUP BY time(1m) fill(null) ORDER BY time DESC LIMIT 4 OFFSET 1"),
        format!("SELECT count(v) FROM {M} WHERE {r} GROUP BY time(1m) fill(0) LIMIT 3"),
        // A fractional fill number is truncated for integer columns.
        format!("SELECT count(v), sum(n), max(v), mean(n) FROM {M} WHERE {r} GROUP BY time(1m) fill(-2.5)"),
        format!("SELECT max(v) FROM {M} WHERE {r} GROUP BY host SLIMIT 1 SOFFSET 1"),
        format!("SELECT mean(v), sum(n) FROM {M} WHERE {r} GROUP BY time(1m) fill(previous) ORDER BY time DESC"),
        format!("SELECT mean(v), sum(n) FROM {M} WHERE {r} GROUP BY time(1m), host fill(linear) ORDER BY time DESC"),
        format!("SELECT max(v) AS \"my max\", min(v) AS \"min\" FROM {M} WHERE {r} GROUP BY time(1m)"),
        format!("SELECT * FROM {M} WHERE {r} GROUP BY region ORDER BY time DESC LIMIT 3"),
        // Several tags: series ordered by tag key, whatever the GROUP BY order.
        format!("SELECT count(v), mean(n) FROM {M} GROUP BY region, host"),
        format!("SELECT {TAG}, v FROM {M} WHERE {r} GROUP BY region, host ORDER BY time DESC LIMIT 2 SLIMIT 3"),
        format!("SELECT sum(n) FROM {M} WHERE {r} GROUP BY time(2m), region, host fill(none) SLIMIT 2 SOFFSET 1"),
        format!("SELECT \"mean\"(\"v\") FROM \"{M}\" WHERE \"host\" = 'h1'"),
        // Raw SELECTs: ties ordered by the leading string (customer_id), tag
        // columns, SELECT *, ORDER BY time DESC, LIMIT/OFFSET, SLIMIT.
        format!("SELECT {TAG}, v, n FROM {M}"),
        format!("SELECT * FROM {M}"),
        format!("SELECT * FROM {M} ORDER BY time DESC LIMIT 7 OFFSET 3"),
        format!("SELECT {TAG}, host, v FROM {M} WHERE {r} LIMIT 5"),
        format!("SELECT {TAG}, v FROM {M} GROUP BY host"),
        format!("SELECT {TAG}, v FROM {M} GROUP BY host ORDER BY time DESC SLIMIT 1"),
        format!("SELECT {TAG}, s FROM {M} WHERE v > 10 LIMIT 3 OFFSET 2"),
        // GROUP BY the shard tag: disjoint series, any function.
        format!("SELECT count(v), percentile(v, 50), stddev(n) FROM {M} GROUP BY {TAG}"),
        format!("SELECT median(v) FROM {M} WHERE {r} GROUP BY time(1m), {TAG} fill(none)"),
        format!("SELECT first(v), last(n) FROM {M} WHERE {r} GROUP BY time(1m), {TAG}, host"),
        format!("SELECT v FROM {M} GROUP BY {TAG} SLIMIT 2 SOFFSET 1"),
        format!("SELECT * FROM {M} GROUP BY * ORDER BY time DESC LIMIT 2"),
        format!("SELECT mean(v) FROM {M} GROUP BY \"{TAG}\" ORDER BY time DESC"),
        // Pinned WHERE, fanned out all the same: still exact.
        format!("SELECT v FROM {M} WHERE {TAG} = 'c3'"),
        format!("SELECT mean(v), max(n) FROM {M} WHERE ({TAG} = 'c1' OR {TAG} = 'c4') AND {r}"),
        format!("SELECT first(v), last(s) FROM {M} WHERE {TAG} = 'c1' AND {r} GROUP BY time(1m)"),
        // Decimal floats pass unchanged (selectors, raw rows).
        format!("SELECT max(f), min(f) FROM {M} WHERE {r} GROUP BY time(1m), host fill(linear)"),
        format!("SELECT {TAG}, f FROM {M} WHERE {r} ORDER BY time DESC LIMIT 9"),
        format!("SELECT max(f) FROM {M}"),
        // first/last per bucket over several customers whose first points agree.
        format!("SELECT first(s), last(s) FROM {M} WHERE s = 'x1' AND {r} GROUP BY time(1m)"),
        // Offsets and time zones of GROUP BY time.
        format!("SELECT sum(n), mean(v) FROM {M} WHERE {r} GROUP BY time(1m, 15s) fill(linear)"),
        format!("SELECT count(v), max(v) FROM {M} WHERE {r} GROUP BY time(2m), host fill(none) tz('Asia/Kolkata')"),
        format!("SELECT * FROM {M} WHERE {TAG} =~ /c[1-3]/ AND {r} LIMIT 4 OFFSET 2 tz('Europe/Paris')"),
        // Wildcard and regex arguments: one column per field.
        format!("SELECT count(*) FROM {M}"),
        format!("SELECT max(*), min(/[nv]/) AS low, spread(*) FROM {M} GROUP BY host"),
        format!("SELECT mean(/[nv]/) AS m, count(*) FROM {M} WHERE {r} GROUP BY time(1m) fill(null)"),
        format!("SELECT sum(/[nv]/), last(*) FROM {M} WHERE {TAG} = 'c2' AND {r} GROUP BY time(1m) fill(linear)"),
        // Fields and tags next to one selector: taken from the selected row.
        format!("SELECT max(v), host, {TAG} FROM {M}"),
        format!("SELECT min(n), s AS label FROM {M} WHERE {r} GROUP BY time(1m) fill(null)"),
        format!("SELECT {TAG}, last(f) FROM {M} WHERE time > {}s AND time < {}s", T0 + 10, T0 + 260),
        format!("SELECT min(v), {TAG}, host FROM {M} WHERE v = 3.5"),
        // min/max ties: equal values at different times keep the earlier one.
        format!("SELECT min(v) FROM {M} WHERE v = 3.5"),
        format!("SELECT max(v) FROM {M} WHERE v = 3.5"),
        // Nothing matches.
        format!("SELECT mean(v) FROM {M} WHERE {TAG} = 'nobody'"),
        format!("SELECT v FROM {M} WHERE time < 0"),
    ]);
    let mut bad = Vec::new();
    for q in &statements {
        bad.extend(f.check(q));
    }
    // The client's epoch: times converted after the merge, as InfluxDB does
    // (with `h`, 1m buckets and ties collapse to equal numbers).
    for q in [
        format!("SELECT mean(v), count(n) FROM {M} WHERE {r} GROUP BY time(1m), host fill(previous)"),
        format!("SELECT {TAG}, v FROM {M} ORDER BY time DESC LIMIT 6"),
        format!("SELECT max(f) FROM {M}"),
        format!("SELECT count(v) FROM {M} GROUP BY {TAG}"),
    ] {
        for epoch in ["ns", "u", "ms", "s", "m", "h"] {
            let want = f.reference_epoch(&q, epoch);
            match f.merged_epoch(&q, &[0, 1], Some(epoch)) {
                Ok(got) if got == want => {}
                other => bad.push(format!("{q} (epoch={epoch}):\n  want {want}\n  got  {other:?}")),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} statements differ from one influxd:\n{}",
        bad.len(),
        statements.len(),
        bad.join("\n")
    );
}

#[test]
fn pinned_queries_go_to_the_owner_only() {
    let f = fixture();
    for c in ["c2", "c5", ""] {
        let q = if c.is_empty() {
            format!("SELECT * FROM {M} WHERE {TAG} = ''")
        } else {
            format!("SELECT mean(v), max(n), count(s) FROM {M} WHERE host =~ /h/ AND '{c}' = \"{TAG}\"")
        };
        assert_eq!(pinned_values(&q, TAG).unwrap(), Some(vec![c.to_string()]), "{q}");
        // The unchanged statement on one owner equals the reference.
        let owner = owners(c)[0];
        let got = first_result(&f.shards[owner].query(DB, &q));
        assert_eq!(got, f.reference_answer(&q), "{q} on its owner s{owner}");
    }
    let q = format!("SELECT v FROM {M} WHERE {TAG} != 'c1'");
    assert_eq!(pinned_values(&q, TAG).unwrap(), None);
}

#[test]
fn unmergeable_queries_are_refused_with_how_to_fix() {
    let f = fixture();
    let r = range();
    // Refused at plan time: the function is named.
    for (q, name) in [
        (format!("SELECT percentile(v, 90) FROM {M}"), "percentile()"),
        (format!("SELECT median(v) FROM {M}"), "median()"),
        (format!("SELECT mode(n) FROM {M}"), "mode()"),
        (format!("SELECT stddev(v) FROM {M} WHERE {r} GROUP BY time(1m)"), "stddev()"),
        (format!("SELECT distinct(s) FROM {M}"), "distinct()"),
        (format!("SELECT count(distinct(s)) FROM {M}"), "count()"),
        (format!("SELECT top(v, 3) FROM {M}"), "top()"),
        (format!("SELECT bottom(v, 3) FROM {M}"), "bottom()"),
        (format!("SELECT integral(v) FROM {M}"), "integral()"),
        (format!("SELECT derivative(mean(v), 1m) FROM {M} WHERE {r} GROUP BY time(1m)"), "derivative()"),
        (format!("SELECT mean(v) * 2 FROM {M}"), "mean()"),
        (format!("SELECT mean(v) FROM (SELECT v FROM {M})"), "subquery"),
    ] {
        // One influxd answers it (so the refusal is the proxy's).
        let want = f.reference_answer(&q);
        assert!(want.get("error").is_none(), "the reference refuses {q}: {want}");
        let e = plan(&q, TAG).map(|_| ()).expect_err(&q);
        assert!(e.contains(name), "{q}: {e}");
        assert!(e.contains(&format!("GROUP BY {TAG}")) && e.contains("WHERE"), "{q}: {e}");
    }
    // Refused at merge time, because the data make it inexact.
    for (q, name) in [
        // first/last report the bucket start: which customer's point is first is unknown.
        (format!("SELECT first(v) FROM {M} WHERE {r} GROUP BY time(1m)"), "first()"),
        (format!("SELECT last(n), count(n) FROM {M}"), "last()"),
        // A single selector whose time several customers share.
        (format!("SELECT last(v) FROM {M}"), "selected time"),
        (format!("SELECT first(n) FROM {M}"), "selected time"),
        // Equal values in one bucket, other fields differ: which row is unknown.
        (format!("SELECT max(v), host FROM {M} WHERE v = 3.5 AND {r} GROUP BY time(10m)"), "equal values"),
        // Equal timestamps of different customers, ordered by one InfluxDB's layout.
        (format!("SELECT v FROM {M}"), "share the time"),
    ] {
        let want = f.reference_answer(&q);
        assert!(want.get("error").is_none(), "the reference refuses {q}: {want}");
        let e = f.merged(&q, &[0, 1, 2]).expect_err(&q);
        assert!(e.contains(name) && e.contains(&format!("GROUP BY {TAG}")), "{q}: {e}");
    }
}
