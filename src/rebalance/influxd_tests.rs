//! The move against two real influxd (1.x): the copy's queries, schema
//! statements, the conversion of real answers and the cleanup statements are
//! what InfluxDB accepts, and the new owner ends up with exactly the source's
//! data (compared as InfluxDB's own JSON).

use super::*;
use crate::storage::MemStorage;
use crate::write_queue::Record;
use futures_lite::future::block_on;
use std::time::Duration;

use crate::test_influxd::start as start_influxd;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn request(port: u16, method: &str, path: &str, params: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
    let owned: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let url = format!("http://127.0.0.1:{port}{path}?{}", crate::http::encode_params(&owned));
    let req = ureq::http::Request::builder().method(method).uri(&url).body(body).unwrap();
    let mut resp = agent().run(req).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

fn query(port: u16, db: &str, q: &str) -> serde_json::Value {
    let (status, body) =
        request(port, "POST", "/query", &[("db", db), ("q", q), ("epoch", "ns")], Vec::new());
    assert_eq!(status, 200, "{q}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["results"][0].get("error").is_none(), "{q}: {body}");
    v["results"][0].clone()
}

fn write(port: u16, db: &str, rp: &str, body: &str) {
    let (status, text) = request(port, "POST", "/write", &[("db", db), ("rp", rp)], body.as_bytes().to_vec());
    assert_eq!(status, 204, "{text}");
}

/// Backends over real servers; a push is delivered at once (the queue is
/// always empty).
struct Real {
    servers: Vec<(String, u16)>,
}

impl Real {
    fn port(&self, name: &str) -> u16 {
        self.servers.iter().find(|(n, _)| n == name).map(|(_, p)| *p).unwrap()
    }
}

impl Backends for Real {
    async fn query(&self, backend: &str, db: &str, q: &str) -> Result<StatementResult, String> {
        let (status, body) = request(
            self.port(backend),
            "GET",
            "/query",
            &[("db", db), ("q", q), ("epoch", "ns")],
            Vec::new(),
        );
        if status != 200 {
            return Err(format!("{status}: {body}"));
        }
        crate::results::first_result(body.as_bytes())
    }
    async fn push(&self, backend: &str, record: &Record, _now_ms: u64) -> Result<(), String> {
        self.send(backend, record).await
    }

    async fn send(&self, backend: &str, record: &Record) -> Result<(), String> {
        let port = self.port(backend);
        let (status, body) = match record {
            Record::Write { db, rp, body, .. } => {
                let rp = rp.clone().unwrap_or_default();
                request(port, "POST", "/write", &[("db", db), ("rp", &rp)], body.to_vec())
            }
            Record::Statement { db, q, .. } => {
                request(port, "POST", "/query", &[("db", db.as_deref().unwrap_or("")), ("q", q)], Vec::new())
            }
        };
        if !(200..300).contains(&status) || body.contains("\"error\"") {
            return Err(format!("{status}: {body}"));
        }
        Ok(())
    }
    fn is_healthy(&self, _: &str) -> bool {
        true
    }
    fn queue_is_empty(&self, _: &str) -> bool {
        true
    }
    fn requests_done_before(&self, _: u64) -> bool {
        true
    }
}

fn drive(rb: &Rebalance, b: &Real, storage: &MemStorage) {
    let mut now = 1_700_000_000_000;
    for _ in 0..10_000 {
        match block_on(rb.step(b, storage, now)).expect("step") {
            StepOutcome::Idle => return,
            StepOutcome::Again { at_ms } => now = at_ms.max(now + 1),
        }
    }
    panic!("no end: {:?}", rb.progress());
}

const DB: &str = "d b\"x";

#[test]
fn a_move_between_two_real_influxd_copies_every_type_and_name_exactly() {
    let (a, n) = (start_influxd(), start_influxd());
    let b = Real { servers: vec![("a".into(), a.port), ("n".into(), n.port)] };
    let q = |s: &str| s.replace("{db}", &quote_ident(DB));
    query(a.port, "", &q("CREATE DATABASE {db}"));
    query(
        a.port,
        DB,
        &q(r#"CREATE RETENTION POLICY "two weeks" ON {db} DURATION 336h REPLICATION 1 SHARD DURATION 1d"#),
    );
    let recent =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    let mut history = String::new();
    for i in 0..25i64 {
        history.push_str(&format!(
            "cpu\\ load\\,x,ho\\ st=v\\,1\\ \\=2,t\\x=a\\b f\\ x={},i\\,n={}i,s=\"q\\\"\\\\{i}\",b={} {}\n",
            0.1 * i as f64 + 0.2,
            i64::MIN + i,
            i % 2 == 0,
            i * 1_000_000_007
        ));
        if i % 3 == 0 {
            history.push_str(&format!("cpu\\ load\\,x,other=o big=1e21,f\\ x=-0 {}\n", i * 1_000_000_007));
        }
        history.push_str(&format!("req,customer=c{} v={i}i {}\n", i % 2 + 1, i * 1_000));
        history.push_str(&format!("req,host=h v={i}i {}\n", i * 1_000 + 1));
    }
    write(a.port, DB, "", &history);
    write(a.port, DB, "two weeks", &format!("cpu\\ load\\,x,ho\\ st=w f\\ x=1.5 {recent}\n"));

    let storage = MemStorage::new();
    let options = RebalanceOptions {
        single_writer: true,
        points_per_chunk: 7,
        points_per_s: 0,
        initial_span_ns: 2_000_000_000,
        ..RebalanceOptions::default()
    };
    let one = |key: KeyId| KeyMove {
        key,
        old_owners: vec!["a".into()],
        new_owners: vec!["n".into()],
        source: Some("a".into()),
    };
    let by_measurement = vec![one(KeyId::new(DB, "cpu load,x", None))];
    let rb = block_on(Rebalance::start(&storage, "main", None, by_measurement, options.clone())).unwrap();
    let by_tag = vec![one(KeyId::new(DB, "req", Some("c1"))), one(KeyId::new(DB, "req", Some("")))];
    let rt = block_on(Rebalance::start(&storage, "tenants", Some("customer"), by_tag, options)).unwrap();
    drive(&rb, &b, &storage);
    drive(&rt, &b, &storage);
    let (p, pt) = (rb.progress(), rt.progress());
    assert_eq!((p.keys_verified, pt.keys_verified), (1, 2), "{p:?} {pt:?}");
    assert_eq!(p.errors + pt.errors, 0, "{p:?} {pt:?}");
    assert_eq!(p.points_copied, 25 + 9 + 1);
    assert_eq!(pt.points_copied, 13 + 25);

    // The new owner has the databases and retention policies, and the same
    // points, types and names, as InfluxDB itself prints them.
    let rps = query(n.port, DB, &q("SHOW RETENTION POLICIES ON {db}"));
    assert_eq!(rps, query(a.port, DB, &q("SHOW RETENTION POLICIES ON {db}")));
    for rp in ["autogen", "two weeks"] {
        let select = format!("SELECT * FROM {} GROUP BY *", qualified(DB, rp, "cpu load,x"));
        assert!(query(a.port, DB, &select)["series"].as_array().is_some_and(|s| !s.is_empty()));
        assert_eq!(query(n.port, DB, &select), query(a.port, DB, &select), "{select}");
        let keys = format!("SHOW FIELD KEYS ON {} FROM {}", quote_ident(DB), qualified(DB, rp, "cpu load,x"));
        assert_eq!(query(n.port, DB, &keys), query(a.port, DB, &keys));
    }
    for cond in ["customer = 'c1'", "customer = ''"] {
        let select = format!("SELECT * FROM {} WHERE {cond} GROUP BY *", qualified(DB, "autogen", "req"));
        assert!(query(a.port, DB, &select)["series"].as_array().is_some_and(|s| !s.is_empty()));
        assert_eq!(query(n.port, DB, &select), query(a.port, DB, &select), "{select}");
    }
    let c2 = format!("SELECT * FROM {} WHERE customer = 'c2'", qualified(DB, "autogen", "req"));
    assert!(query(n.port, DB, &c2).get("series").is_none(), "c2 did not move");

    // Cleanup drops the moved keys on the old owner only.
    assert_eq!(block_on(rb.cleanup(&storage)).unwrap(), 1);
    assert_eq!(block_on(rt.cleanup(&storage)).unwrap(), 2);
    drive(&rb, &b, &storage);
    drive(&rt, &b, &storage);
    let measurements = query(a.port, DB, "SHOW MEASUREMENTS");
    assert_eq!(measurements["series"][0]["values"], serde_json::json!([["req"]]));
    let left =
        query(a.port, DB, &format!("SELECT count(v) FROM {} GROUP BY *", qualified(DB, "autogen", "req")));
    assert_eq!(left["series"].as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left["series"][0]["tags"]["customer"], "c2", "{left}");
    assert!(query(n.port, DB, "SHOW MEASUREMENTS")["series"][0]["values"].as_array().unwrap().len() == 2);
}

/// A removal or a replication factor raise makes backends that already hold
/// the database new owners: the proxy sent them every schema statement
/// (`SchemaAll`), so each has the source's retention policies exactly, also
/// a `REPLICATION` other than 1 (InfluxDB 1.x keeps `replicaN` as given).
/// The copy's schema statements must then be no-ops there, not a
/// `retention policy already exists` that keeps the key `Pending` forever.
#[test]
fn a_new_owner_that_already_has_the_retention_policies_gets_its_copy() {
    let (a, n) = (start_influxd(), start_influxd());
    let b = Real { servers: vec![("a".into(), a.port), ("n".into(), n.port)] };
    let db = "x";
    for port in [a.port, n.port] {
        query(port, "", "CREATE DATABASE x");
        query(port, db, "CREATE RETENTION POLICY \"r\" ON \"x\" DURATION 24h REPLICATION 2");
    }
    let recent =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    write(a.port, db, "r", &format!("cpu v=1 {recent}\ncpu v=2 {}\n", recent - 1_000_000_000));
    let storage = MemStorage::new();
    let options = RebalanceOptions { single_writer: true, points_per_s: 0, ..RebalanceOptions::default() };
    let key = KeyId::new(db, "cpu", None);
    let moves = vec![KeyMove {
        key: key.clone(),
        old_owners: vec!["a".into()],
        new_owners: vec!["n".into()],
        source: Some("a".into()),
    }];
    let rb = block_on(Rebalance::start(&storage, "main", None, moves, options)).unwrap();
    let mut now = 1_700_000_000_000;
    for _ in 0..50 {
        match block_on(rb.step(&b, &storage, now)).expect("step") {
            StepOutcome::Idle => break,
            StepOutcome::Again { at_ms } => now = at_ms.max(now + 1),
        }
    }
    let p = rb.progress();
    assert_eq!(rb.phase(&key), Some(Phase::Verified), "{p:?}");
    assert_eq!(p.errors, 0, "{p:?}");
    assert_eq!(p.points_copied, 2, "{p:?}");
    let rps = "SHOW RETENTION POLICIES ON \"x\"";
    assert_eq!(query(n.port, db, rps), query(a.port, db, rps));
}
