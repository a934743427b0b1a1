//! Unit tests of the request life cycle with mock backends
//! ([`MockTransport`]) and in-memory storage.

use super::*;
use crate::storage::MemStorage;
use crate::transport::TransportError;
use std::collections::BTreeMap;
use std::rc::Rc;

/// How a mock backend answers.
#[derive(Debug, Clone)]
enum Behaviour {
    /// InfluxDB-like: 204 to writes, canned JSON to queries, 204 to pings.
    Up,
    /// Connection refused.
    Down,
    /// Never answers within the timeout.
    Hang,
    /// Answers every request with this status and body.
    Status(u16, &'static str),
    /// Like `Up`, but answers `/write` with this status and body.
    WriteStatus(u16, &'static str),
    /// Like `Up`, but answers a `/write` whose body is longer than this many
    /// bytes with 413, as InfluxDB 1.x does over its `max-body-size`.
    MaxBody(usize),
}

#[derive(Default)]
struct MockState {
    behaviour: BTreeMap<String, Behaviour>,
    /// Canned `/query` answers by backend name.
    answers: BTreeMap<String, String>,
    /// Requests that got an answer, by backend name.
    received: BTreeMap<String, Vec<Request>>,
    /// Every request sent, answered or not, by backend name.
    attempts: BTreeMap<String, Vec<Request>>,
}

#[derive(Clone, Default)]
struct MockTransport(Rc<RefCell<MockState>>);

impl MockTransport {
    fn set(&self, backend: &str, behaviour: Behaviour) {
        self.0.borrow_mut().behaviour.insert(backend.into(), behaviour);
    }
    fn answer(&self, backend: &str, json: &str) {
        self.0.borrow_mut().answers.insert(backend.into(), json.into());
    }
    fn received(&self, backend: &str) -> Vec<Request> {
        self.0.borrow().received.get(backend).cloned().unwrap_or_default()
    }
    /// How many requests were sent to `backend`, answered or not.
    fn attempts(&self, backend: &str) -> usize {
        self.0.borrow().attempts.get(backend).map_or(0, Vec::len)
    }
    /// Bodies of the `/write` requests `backend` answered, as text.
    fn writes(&self, backend: &str) -> Vec<String> {
        self.received(backend)
            .iter()
            .filter(|r| r.path == "/write")
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    }
    /// `q` of the `/query` requests `backend` answered.
    fn statements(&self, backend: &str) -> Vec<String> {
        self.received(backend)
            .iter()
            .filter(|r| r.path == "/query")
            .filter_map(|r| {
                crate::http::decode_params(&String::from_utf8_lossy(&r.body))
                    .into_iter()
                    .find(|(k, _)| k == "q")
                    .map(|(_, v)| v)
            })
            .collect()
    }
}

impl Transport for MockTransport {
    async fn send(&self, backend: &BackendAddr, request: Request) -> Result<Response, TransportError> {
        let mut state = self.0.borrow_mut();
        state.attempts.entry(backend.name.clone()).or_default().push(request.clone());
        let behaviour = state.behaviour.get(&backend.name).cloned().unwrap_or(Behaviour::Up);
        let response = match behaviour {
            Behaviour::Down => return Err(TransportError::Connect("connection refused".into())),
            Behaviour::Hang => return Err(TransportError::Timeout),
            Behaviour::Status(status, body) => Response::json(status, body.as_bytes().to_vec()),
            Behaviour::WriteStatus(status, body) if request.path == "/write" => {
                Response::json(status, body.as_bytes().to_vec())
            }
            Behaviour::MaxBody(max) if request.path == "/write" && request.body.len() > max => {
                // Refused: not among the requests `received`.
                return Ok(Response::json(413, br#"{"error":"Request Entity Too Large"}"#.to_vec()));
            }
            Behaviour::Up | Behaviour::WriteStatus(..) | Behaviour::MaxBody(_) => match request.path.as_str()
            {
                "/query" => {
                    let body = state
                        .answers
                        .get(&backend.name)
                        .cloned()
                        .unwrap_or_else(|| r#"{"results":[{"statement_id":0}]}"#.into());
                    Response::json(200, body.into_bytes())
                }
                _ => Response::empty(204),
            },
        };
        state.received.entry(backend.name.clone()).or_default().push(request);
        Ok(response)
    }
}

fn config(extra: &str) -> Config {
    let text = format!(
        r#"{{
            "backends": {{ "a": {{ "url": "http://127.0.0.1:8086" }}, "b": {{ "url": "http://127.0.0.1:8087" }} }},
            "keymaps": {{ "cpu": ["a", "b"], "cpu.load": ["b"], "mem": ["a"], "_default_": ["a", "b"] }},
            "health_check_fall": 2, "health_check_rise": 1{extra}
        }}"#
    );
    match Config::parse("test.json", &text) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn open(transport: &MockTransport, storage: MemStorage, extra: &str) -> Proxy<MockTransport, MemStorage> {
    match futures_lite::future::block_on(Proxy::open(config(extra), transport.clone(), storage)) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn run<F: Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

fn write(proxy: &Proxy<MockTransport, MemStorage>, query: &str, body: &str) -> Response {
    let mut request = Request::new(Method::Post, "/write");
    request.query = crate::http::decode_params(query);
    request.body = body.as_bytes().to_vec();
    run(proxy.handle(request, 1_700_000_000_000))
}

fn query(proxy: &Proxy<MockTransport, MemStorage>, q: &str) -> Response {
    let mut request = Request::new(Method::Get, "/query");
    request.query = vec![("q".into(), q.into()), ("db".into(), "telegraf".into())];
    run(proxy.handle(request, 1_700_000_000_000))
}

fn error_of(response: &Response) -> String {
    let v: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    v["error"].as_str().unwrap_or_default().to_string()
}

fn drain(proxy: &Proxy<MockTransport, MemStorage>, backend: usize) -> Vec<ReplayStep> {
    let mut steps = Vec::new();
    for _ in 0..100 {
        let step = run(proxy.replay_step(backend, 1_700_000_000_000));
        steps.push(step);
        if step != ReplayStep::Progress {
            break;
        }
    }
    steps
}

#[test]
fn write_goes_to_every_replica_with_db_rp_precision_and_credentials() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let mut request = Request::new(Method::Post, "/write");
    request.query = crate::http::decode_params("db=telegraf&rp=week&precision=s&u=joe&p=secret");
    request.headers.push(("authorization".into(), "Token abc".into()));
    request.body = b"cpu,host=a v=1 1700000000\n".to_vec();
    let r = run(p.handle(request, 0));
    assert_eq!(r.status, 204, "{:?}", String::from_utf8_lossy(&r.body));
    for backend in ["a", "b"] {
        let got = t.received(backend);
        assert_eq!(got.len(), 1, "backend {backend}");
        let w = &got[0];
        assert_eq!(w.path, "/write");
        assert_eq!(w.param("db"), Some("telegraf"));
        assert_eq!(w.param("rp"), Some("week"));
        assert_eq!(w.param("precision"), Some("s"));
        assert_eq!(w.param("u"), Some("joe"));
        assert_eq!(w.param("p"), Some("secret"));
        assert_eq!(w.header("authorization"), Some("Token abc"));
        assert_eq!(w.body, b"cpu,host=a v=1 1700000000\n");
    }
}

#[test]
fn points_are_split_by_route() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let body = "cpu v=1 1\ncpu.load.1 v=2 2\nmem v=3 3\ndisk v=4 4\n";
    assert_eq!(write(&p, "db=x", body).status, 204);
    assert_eq!(t.writes("a"), vec!["cpu v=1 1\nmem v=3 3\ndisk v=4 4\n"]);
    assert_eq!(t.writes("b"), vec!["cpu v=1 1\ncpu.load.1 v=2 2\ndisk v=4 4\n"]);
}

#[test]
fn points_without_timestamp_get_the_same_one_on_every_replica() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    assert_eq!(write(&p, "db=x&precision=ms", "cpu v=1\n").status, 204);
    assert_eq!(t.writes("a"), vec!["cpu v=1 1700000000000\n"]);
    assert_eq!(t.writes("b"), t.writes("a"));
}

#[test]
fn bad_line_is_400_with_the_line_and_nothing_is_sent() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let r = write(&p, "db=x", "cpu v=1 1\ncpu,host=a\ncpu v=3 3\n");
    assert_eq!(r.status, 400);
    let e = error_of(&r);
    assert!(e.contains("cpu,host=a") && e.contains("line 2"), "{e}");
    assert!(t.received("a").is_empty() && t.received("b").is_empty());
}

#[test]
fn missing_db_and_bad_precision_and_bad_gzip_are_400() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let r = write(&p, "", "cpu v=1 1\n");
    assert_eq!((r.status, error_of(&r).as_str()), (400, "database is required"));
    assert_eq!(write(&p, "db=x&precision=fortnight", "cpu v=1 1\n").status, 400);
    let mut request = Request::new(Method::Post, "/write");
    request.query = vec![("db".into(), "x".into())];
    request.headers.push(("content-encoding".into(), "gzip".into()));
    request.body = b"not gzip at all".to_vec();
    let r = run(p.handle(request, 0));
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("gzip"), "{}", error_of(&r));
    assert!(t.received("a").is_empty());
}

#[test]
fn gzip_body_is_decoded() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"cpu v=1 1\n").unwrap();
    let mut request = Request::new(Method::Post, "/write");
    request.query = vec![("db".into(), "x".into())];
    request.headers.push(("content-encoding".into(), "gzip".into()));
    request.body = gz.finish().unwrap();
    assert_eq!(run(p.handle(request, 0)).status, 204);
    assert_eq!(t.writes("a"), vec!["cpu v=1 1\n"]);
}

#[test]
fn backend_4xx_is_passed_on_and_not_queued() {
    let t = MockTransport::default();
    t.set("b", Behaviour::Status(404, r#"{"error":"database not found: \"x\""}"#));
    let p = open(&t, MemStorage::new(), "");
    let r = write(&p, "db=x", "cpu v=1 1\n");
    assert_eq!(r.status, 404);
    assert_eq!(error_of(&r), "database not found: \"x\"");
    assert_eq!(p.queue_depth(1).records, 0);
}

#[test]
fn down_backend_gets_the_write_through_its_queue_in_order() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    assert_eq!(p.queue_depth(1).records, 1);
    // b comes back, but the queue is not empty: the newer write goes behind.
    t.set("b", Behaviour::Up);
    assert_eq!(write(&p, "db=x", "cpu v=2 1\n").status, 204);
    assert_eq!(p.queue_depth(1).records, 2);
    assert!(t.writes("b").is_empty(), "nothing may overtake the queue");
    assert_eq!(drain(&p, 1), vec![ReplayStep::Progress, ReplayStep::Progress, ReplayStep::Idle]);
    assert_eq!(t.writes("b"), vec!["cpu v=1 1\n", "cpu v=2 1\n"]);
    assert_eq!(t.writes("a"), vec!["cpu v=1 1\n", "cpu v=2 1\n"]);
    // Drained: writes go directly again.
    assert_eq!(write(&p, "db=x", "cpu v=3 1\n").status, 204);
    assert_eq!(t.writes("b").len(), 3);
    assert_eq!(p.queue_depth(1).records, 0);
}

#[test]
fn hanging_or_5xx_backend_is_queued_and_replay_backs_off() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "replay_backoff_min_ms": 100, "replay_backoff_max_ms": 300"#);
    t.set("a", Behaviour::Hang);
    t.set("b", Behaviour::Status(503, r#"{"error":"engine overloaded"}"#));
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    assert_eq!((p.queue_depth(0).records, p.queue_depth(1).records), (1, 1));
    let steps: Vec<ReplayStep> = (0..4).map(|_| run(p.replay_step(0, 0))).collect();
    assert_eq!(
        steps,
        vec![
            ReplayStep::RetryAfter(100),
            ReplayStep::RetryAfter(200),
            ReplayStep::RetryAfter(300),
            ReplayStep::RetryAfter(300)
        ]
    );
    t.set("a", Behaviour::Up);
    assert_eq!(drain(&p, 0), vec![ReplayStep::Progress, ReplayStep::Idle]);
    assert_eq!(run(p.replay_step(0, 0)), ReplayStep::Idle);
}

#[test]
fn replay_moves_a_4xx_record_to_the_dead_letters_and_goes_on() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    write(&p, "db=gone", "cpu v=1 1\n");
    write(&p, "db=x", "cpu v=2 2\n");
    t.set("b", Behaviour::Status(404, r#"{"error":"database not found"}"#));
    assert_eq!(run(p.replay_step(1, 0)), ReplayStep::Progress);
    t.set("b", Behaviour::Up);
    assert_eq!(drain(&p, 1), vec![ReplayStep::Progress, ReplayStep::Idle]);
    // The rejected write was tried once (answered 404), never again.
    assert_eq!(t.writes("b"), vec!["cpu v=1 1\n", "cpu v=2 2\n"]);
    let health = run(p.handle(Request::new(Method::Get, "/health"), 0));
    let v: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(v["backends"][1]["dead_letters"], 1);
}

#[test]
fn full_queue_answers_503_and_keeps_nothing_half_acknowledged() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "queue_max_bytes": 200, "max_body_bytes": 100"#);
    t.set("b", Behaviour::Down);
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(write(&p, "db=x", &format!("cpu value=1 {i}\n")).status);
    }
    assert_eq!(statuses[0], 204);
    assert_eq!(*statuses.last().unwrap(), 503, "{statuses:?}");
    let r = write(&p, "db=x", "cpu v=1 99\n");
    assert!(error_of(&r).contains("queue"), "{}", error_of(&r));
}

#[test]
fn disk_failure_while_backend_down_is_503() {
    let t = MockTransport::default();
    let storage = MemStorage::new();
    let p = open(&t, storage, "");
    t.set("b", Behaviour::Down);
    p.storage.fail_appends(true);
    let r = write(&p, "db=x", "cpu v=1 1\n");
    assert_eq!(r.status, 503, "{}", error_of(&r));
}

#[test]
fn queue_survives_a_restart() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    write(&p, "db=x", "cpu v=1 1\n");
    write(&p, "db=x", "cpu v=2 2\n");
    let files = p.storage.snapshot();
    drop(p);
    t.set("b", Behaviour::Up);
    let p = open(&t, MemStorage::from_snapshot(files), "");
    assert_eq!(p.queue_depth(1).records, 2);
    drain(&p, 1);
    assert_eq!(t.writes("b"), vec!["cpu v=1 1\n", "cpu v=2 2\n"]);
}

#[test]
fn query_goes_to_one_replica_and_fails_over() {
    let t = MockTransport::default();
    t.set("a", Behaviour::Down);
    t.answer("b", r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["time","v"],"values":[[1,2]]}]}]}"#);
    let p = open(&t, MemStorage::new(), "");
    // The replica is picked at random: a fixed seed keeps the test repeatable,
    // and reads go on until a was picked (and failed over from) twice, which
    // marks it down (fall = 2).
    fastrand::seed(7);
    for _ in 0..64 {
        let r = query(&p, "SELECT v FROM cpu");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["results"][0]["series"][0]["values"][0][1], 2);
        if !p.is_healthy(0) {
            break;
        }
    }
    assert_eq!(t.attempts("a"), 2, "a is tried until it is marked down, then skipped");
    assert!(!p.is_healthy(0));
    // cpu.load lives on b only: a, even when up, is never asked.
    t.set("a", Behaviour::Up);
    let before = t.attempts("a");
    for _ in 0..5 {
        assert_eq!(query(&p, "SELECT v FROM \"cpu.load\"").status, 200);
    }
    assert_eq!(t.attempts("a"), before);
}

#[test]
fn reads_prefer_a_replica_whose_queue_is_empty() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    write(&p, "db=x", "cpu v=1 1\n");
    // b answers again and is healthy, but still has a record to replay.
    t.set("b", Behaviour::Up);
    assert!(p.is_healthy(1) && p.queue_depth(1).records == 1);
    for _ in 0..20 {
        query(&p, "SELECT v FROM cpu");
    }
    assert!(t.statements("b").is_empty(), "a backlogged replica answered a read");
    // With a down, the backlogged replica still serves.
    t.set("a", Behaviour::Down);
    assert_eq!(query(&p, "SELECT v FROM cpu").status, 200);
    assert_eq!(t.statements("b").len(), 1);
}

#[test]
fn schema_statement_refused_by_one_backend_is_reported() {
    let t = MockTransport::default();
    t.answer(
        "b",
        r#"{"results":[{"statement_id":0,"error":"retention policy conflicts with an existing policy"}]}"#,
    );
    let p = open(&t, MemStorage::new(), "");
    let r = query(&p, "CREATE RETENTION POLICY week ON x DURATION 7d REPLICATION 1");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let e = v["results"][0]["error"].as_str().unwrap_or_default();
    assert!(e.contains("backend b") && e.contains("conflicts"), "{v}");
}

#[test]
fn allowed_admin_statements_go_to_every_backend_and_select_into_to_the_source_replicas() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "allowed_statements": ["^grant", "into"]"#);
    assert_eq!(query(&p, "GRANT ALL TO joe").status, 200);
    assert_eq!(t.statements("a"), vec!["GRANT ALL TO joe"]);
    assert_eq!(t.statements("b"), vec!["GRANT ALL TO joe"]);
    // cpu.load lives on b: the INTO runs there only.
    assert_eq!(query(&p, "SELECT * INTO copy FROM \"cpu.load\"").status, 200);
    assert_eq!(t.statements("a").len(), 1);
    assert_eq!(t.statements("b").len(), 2);
    // Still forbidden: REVOKE (not allowed).
    assert_eq!(query(&p, "REVOKE ALL FROM joe").status, 403);
}

#[test]
fn requests_in_the_same_millisecond_get_distinct_default_timestamps() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    write(&p, "db=x", "cpu,host=h v=1\n");
    write(&p, "db=x", "cpu,host=h v=2\nmem v=3\n");
    assert_eq!(
        t.writes("a"),
        vec![
            "cpu,host=h v=1 1700000000000000000\n",
            "cpu,host=h v=2 1700000000000000001\nmem v=3 1700000000000000001\n"
        ]
    );
    assert_eq!(t.writes("b")[1], "cpu,host=h v=2 1700000000000000001\n");
}

#[test]
fn query_with_every_replica_down_is_503() {
    let t = MockTransport::default();
    t.set("a", Behaviour::Down);
    t.set("b", Behaviour::Status(500, r#"{"error":"boom"}"#));
    let p = open(&t, MemStorage::new(), "");
    let r = query(&p, "SELECT v FROM cpu");
    assert_eq!(r.status, 503);
    assert!(error_of(&r).contains("boom"), "{}", error_of(&r));
}

#[test]
fn show_without_from_is_merged_and_survives_one_backend_down() {
    let t = MockTransport::default();
    t.answer("a", r#"{"results":[{"statement_id":0,"series":[{"name":"measurements","columns":["name"],"values":[["cpu"],["mem"]]}]}]}"#);
    t.answer("b", r#"{"results":[{"statement_id":0,"series":[{"name":"measurements","columns":["name"],"values":[["cpu"],["cpu.load"]]}]}]}"#);
    let p = open(&t, MemStorage::new(), "");
    let r = query(&p, "SHOW MEASUREMENTS");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["results"][0]["series"][0]["values"], serde_json::json!([["cpu"], ["cpu.load"], ["mem"]]));
    t.set("b", Behaviour::Down);
    let r = query(&p, "SHOW MEASUREMENTS");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["results"][0]["series"][0]["values"], serde_json::json!([["cpu"], ["mem"]]));
}

#[test]
fn show_limit_offset_is_the_window_of_the_merged_answer() {
    let t = MockTransport::default();
    // Each backend answers as InfluxDB would to `LIMIT 3`: its first 3 names.
    t.answer("a", r#"{"results":[{"statement_id":0,"series":[{"name":"measurements","columns":["name"],"values":[["cpu"],["disk"],["mem"]]}]}]}"#);
    t.answer("b", r#"{"results":[{"statement_id":0,"series":[{"name":"measurements","columns":["name"],"values":[["cpu"],["cpu.load"],["net"]]}]}]}"#);
    let p = open(&t, MemStorage::new(), "");
    let r = query(&p, "SHOW MEASUREMENTS LIMIT 2 OFFSET 1");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    // Merged sorted union: cpu, cpu.load, disk, mem, net; skip 1, take 2.
    assert_eq!(v["results"][0]["series"][0]["values"], serde_json::json!([["cpu.load"], ["disk"]]));
    assert_eq!(t.statements("a"), ["SHOW MEASUREMENTS LIMIT 3"]);
    assert_eq!(t.statements("b"), ["SHOW MEASUREMENTS LIMIT 3"]);

    // An offset past the merged rows: InfluxDB's empty answer.
    let r = query(&p, "SHOW MEASUREMENTS OFFSET 5");
    assert_eq!(String::from_utf8_lossy(&r.body), "{\"results\":[{\"statement_id\":0}]}\n");
    assert_eq!(t.statements("a")[1], "SHOW MEASUREMENTS");

    // A malformed LIMIT is refused before anything is sent.
    let r = query(&p, "SHOW MEASUREMENTS LIMIT many");
    assert_eq!(r.status, 400, "{}", error_of(&r));
    assert!(error_of(&r).contains("after LIMIT"), "{}", error_of(&r));
    assert_eq!(t.statements("a").len(), 2);
}

#[test]
fn several_statements_get_their_own_statement_ids() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let r = query(&p, "SELECT v FROM cpu; SHOW DATABASES");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["results"][0]["statement_id"], 0);
    assert_eq!(v["results"][1]["statement_id"], 1);
}

#[test]
fn forbidden_statement_is_403_and_reaches_no_backend() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    for q in
        ["GRANT ALL TO joe", "SELECT * INTO other FROM cpu", "SHOW DATABASES; DROP USER joe", "KILL QUERY 1"]
    {
        let r = query(&p, q);
        assert_eq!(r.status, 403, "{q}");
        assert!(error_of(&r).contains("forbidden"), "{}", error_of(&r));
    }
    assert!(t.received("a").is_empty() && t.received("b").is_empty());
}

#[test]
fn malformed_query_is_400_and_reaches_no_backend() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    for q in ["SELECT v FROM 'unterminated", "", "FLY ME TO THE MOON"] {
        let r = query(&p, q);
        assert_eq!(r.status, 400, "{q:?}: {}", error_of(&r));
    }
    assert!(t.received("a").is_empty() && t.received("b").is_empty());
}

#[test]
fn create_database_goes_everywhere_and_is_queued_for_a_down_backend() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    let r = query(&p, "CREATE DATABASE telegraf");
    assert_eq!(r.status, 200, "{}", error_of(&r));
    assert_eq!(t.statements("a"), vec!["CREATE DATABASE telegraf"]);
    assert_eq!(p.queue_depth(1).records, 1);
    write(&p, "db=telegraf", "cpu v=1 1\n");
    t.set("b", Behaviour::Up);
    drain(&p, 1);
    // The statement is replayed before the write that needs it.
    let got: Vec<String> = t.received("b").iter().map(|r| r.path.clone()).collect();
    assert_eq!(got, vec!["/query", "/write"]);
    assert_eq!(t.statements("b"), vec!["CREATE DATABASE telegraf"]);
}

#[test]
fn drop_measurement_goes_to_its_replica_set_only() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    assert_eq!(query(&p, "DROP MEASUREMENT \"cpu.load\"").status, 200);
    assert!(t.statements("a").is_empty());
    assert_eq!(t.statements("b"), vec!["DROP MEASUREMENT \"cpu.load\""]);
}

#[test]
fn health_flips_after_consecutive_failures_and_reads_skip_down_backends() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("a", Behaviour::Down);
    run(p.check_health(0, 1));
    assert!(p.is_healthy(0));
    run(p.check_health(0, 2));
    assert!(!p.is_healthy(0));
    t.set("a", Behaviour::Up);
    // While a is marked down, reads go to b without trying a.
    for _ in 0..5 {
        query(&p, "SELECT v FROM cpu");
    }
    assert!(t.statements("a").is_empty());
    run(p.check_health(0, 3));
    assert!(p.is_healthy(0));
}

#[test]
fn endpoints_and_methods() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let ping = run(p.handle(Request::new(Method::Get, "/ping"), 0));
    assert_eq!(ping.status, 204);
    assert!(ping.header("x-influxdb-version").is_some());
    assert_eq!(run(p.handle(Request::new(Method::Head, "/ping"), 0)).status, 204);
    assert_eq!(run(p.handle(Request::new(Method::Get, "/write"), 0)).status, 405);
    let nf = run(p.handle(Request::new(Method::Get, "/nope"), 0));
    assert_eq!(nf.status, 404);
    assert!(!error_of(&nf).is_empty());
    let metrics = run(p.handle(Request::new(Method::Get, "/metrics"), 0));
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("influx_proxy_write_queue_records{backend=\"b\"} 0"), "{text}");
    assert!(text.contains("influx_proxy_requests_total{endpoint=\"ping\",status=\"204\"} 2"), "{text}");
}

#[test]
fn query_answer_is_gzipped_when_asked() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let mut request = Request::new(Method::Get, "/query");
    request.query = vec![("q".into(), "SHOW DATABASES".into())];
    request.headers.push(("accept-encoding".into(), "gzip, deflate".into()));
    let r = run(p.handle(request, 0));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut plain).unwrap();
    assert!(plain.contains("\"results\""), "{plain}");
}

#[test]
fn post_query_reads_the_form_body() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let mut request = Request::new(Method::Post, "/query");
    request.headers.push(("content-type".into(), "application/x-www-form-urlencoded".into()));
    request.body = b"q=CREATE+DATABASE+x&db=x".to_vec();
    assert_eq!(run(p.handle(request, 0)).status, 200);
    assert_eq!(t.statements("a"), vec!["CREATE DATABASE x"]);
}

#[test]
fn show_from_several_replica_sets_unites_the_rows() {
    let t = MockTransport::default();
    t.answer(
        "a",
        r#"{"results":[{"statement_id":0,"series":[{"columns":["key"],"values":[["cpu,host=a"]]}]}]}"#,
    );
    t.answer("b", r#"{"results":[{"statement_id":0,"series":[{"columns":["key"],"values":[["cpu,host=a"],["cpu.load,host=a"]]}]}]}"#);
    let p = open(&t, MemStorage::new(), "");
    // mem lives on a only, cpu.load on b only: one backend of each set is asked.
    let r = query(&p, "SHOW SERIES FROM mem, \"cpu.load\"");
    assert_eq!(r.status, 200, "{}", error_of(&r));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v["results"][0]["series"][0]["values"],
        serde_json::json!([["cpu,host=a"], ["cpu.load,host=a"]])
    );
    let r = query(&p, "SHOW SERIES FROM mem, \"cpu.load\" LIMIT 1 OFFSET 1");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["results"][0]["series"][0]["values"], serde_json::json!([["cpu.load,host=a"]]));
    assert_eq!(
        t.statements("a").last().map(String::as_str),
        Some("SHOW SERIES FROM mem, \"cpu.load\" LIMIT 2")
    );
}

mod batches;
