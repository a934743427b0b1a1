//! Unit tests of the request life cycle with mock backends
//! ([`MockTransport`]) and in-memory storage.

use super::query::MAX_BATCH_STATEMENTS;
use super::*;
use crate::storage::MemStorage;
use crate::transport::{BackendAddr, TransportError};
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
    /// `/ping` answers 204; every other request this status and body (a
    /// record the backend keeps failing while otherwise healthy).
    RecordFails(u16, &'static str),
    /// `/ping` answers 204; every other request breaks the connection.
    RecordBreaks,
    /// `/ping` answers 204; every other request gets no answer within the
    /// timeout (a backend too busy to answer writes in time).
    RecordHangs,
    /// Like `Up`, but answers `/write` with this status and body.
    WriteStatus(u16, &'static str),
    /// Like `Up`, but answers a `/write` whose body is longer than this many
    /// bytes with 413, as InfluxDB 1.x does over its `max-body-size`.
    MaxBody(usize),
    /// Like `Up`, but answers a `/write` whose body contains this text with
    /// 400 `partial write: field type conflict` (the points of that request
    /// are not among those `received`).
    RefuseContaining(&'static str),
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
    /// How `/query` requests are answered, by backend name, when it differs
    /// from `behaviour` (which then still governs pings and writes).
    query_behaviour: BTreeMap<String, Behaviour>,
    /// Statements that fail inside a 200 answer: (backend, text the statement
    /// contains, error). Alone, the statement's result carries the error; in
    /// a multi-statement query the answer is cut after it as InfluxDB 1.6
    /// answers (`{"statement_id":i,"error":"not executed"}`, later statements
    /// left out).
    statement_errors: Vec<(String, String, String)>,
    /// `/query` requests refused as a whole: (backend, text `q` contains,
    /// status, body).
    refusals: Vec<(String, String, u16, &'static str)>,
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
    fn set_queries(&self, backend: &str, behaviour: Behaviour) {
        self.0.borrow_mut().query_behaviour.insert(backend.into(), behaviour);
    }
    fn fail_statement(&self, backend: &str, containing: &str, error: &str) {
        self.0.borrow_mut().statement_errors.push((backend.into(), containing.into(), error.into()));
    }
    /// `/query` requests to `backend` whose `q` contains `containing` are
    /// answered `status` with `body`.
    fn refuse_queries(&self, backend: &str, containing: &str, status: u16, body: &'static str) {
        self.0.borrow_mut().refusals.push((backend.into(), containing.into(), status, body));
    }
    fn received(&self, backend: &str) -> Vec<Request> {
        self.0.borrow().received.get(backend).cloned().unwrap_or_default()
    }
    /// Every request sent to `backend`, answered or not, in order.
    fn attempted(&self, backend: &str) -> Vec<Request> {
        self.0.borrow().attempts.get(backend).cloned().unwrap_or_default()
    }
    /// How many requests were sent to `backend`, answered or not.
    fn attempts(&self, backend: &str) -> usize {
        self.0.borrow().attempts.get(backend).map_or(0, Vec::len)
    }
    /// Bodies of the `/write` requests `backend` answered, as text (a gzip
    /// body decoded, as InfluxDB decodes it).
    fn writes(&self, backend: &str) -> Vec<String> {
        self.received(backend)
            .iter()
            .filter(|r| r.path == "/write")
            .map(|r| match r.header("content-encoding") {
                Some("gzip") => {
                    let mut out = Vec::new();
                    let decoded = std::io::Read::read_to_end(
                        &mut flate2::read::MultiGzDecoder::new(&r.body[..]),
                        &mut out,
                    );
                    assert!(decoded.is_ok(), "a gzip body that does not decode: {decoded:?}");
                    String::from_utf8_lossy(&out).into_owned()
                }
                _ => String::from_utf8_lossy(&r.body).into_owned(),
            })
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
        let mut behaviour = state.behaviour.get(&backend.name).cloned().unwrap_or(Behaviour::Up);
        if request.path == "/query" {
            if let Some(b) = state.query_behaviour.get(&backend.name) {
                behaviour = b.clone();
            }
        }
        if request.path == "/query" {
            let q = query_text(&request);
            if let Some((_, _, status, body)) = state
                .refusals
                .iter()
                .find(|(b, containing, _, _)| *b == backend.name && q.contains(containing.as_str()))
            {
                behaviour = Behaviour::Status(*status, body);
            }
        }
        let response = match behaviour {
            Behaviour::Down => return Err(TransportError::Connect("connection refused".into())),
            Behaviour::Hang => return Err(TransportError::Timeout),
            Behaviour::Status(status, body) => Response::json(status, body.as_bytes().to_vec()),
            Behaviour::RecordFails(_, _) | Behaviour::RecordBreaks | Behaviour::RecordHangs
                if request.path == "/ping" =>
            {
                Response::empty(204)
            }
            Behaviour::RecordFails(status, body) => Response::json(status, body.as_bytes().to_vec()),
            Behaviour::RecordBreaks => return Err(TransportError::Io("Broken pipe (os error 32)".into())),
            Behaviour::RecordHangs => return Err(TransportError::Timeout),
            Behaviour::WriteStatus(status, body) if request.path == "/write" => {
                Response::json(status, body.as_bytes().to_vec())
            }
            Behaviour::MaxBody(max) if request.path == "/write" && request.body.len() > max => {
                // Refused: not among the requests `received`.
                return Ok(Response::json(413, br#"{"error":"Request Entity Too Large"}"#.to_vec()));
            }
            Behaviour::RefuseContaining(text)
                if request.path == "/write" && String::from_utf8_lossy(&request.body).contains(text) =>
            {
                return Ok(Response::json(
                    400,
                    br#"{"error":"partial write: field type conflict: input field \"v\" on measurement \"cpu\" is type string, already exists as type float dropped=1"}"#.to_vec(),
                ));
            }
            Behaviour::Up
            | Behaviour::WriteStatus(..)
            | Behaviour::MaxBody(_)
            | Behaviour::RefuseContaining(_) => match request.path.as_str() {
                "/query" => Response::json(200, mock_query_answer(&state, &backend.name, &request)),
                _ => Response::empty(204),
            },
        };
        state.received.entry(backend.name.clone()).or_default().push(request);
        Ok(response)
    }
}

/// `q` of a `/query` request's form body.
fn query_text(request: &Request) -> String {
    crate::http::decode_params(&String::from_utf8_lossy(&request.body))
        .into_iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// A mock `/query` answer: one result per statement of `q`, each the backend's
/// canned result (or `{}`) with its `statement_id`, cut after a failing
/// statement (see [`MockState::statement_errors`]).
fn mock_query_answer(state: &MockState, backend: &str, request: &Request) -> Vec<u8> {
    let q = query_text(request);
    let statements = crate::statement::split_statements(&q).unwrap_or_default();
    let canned: serde_json::Value = state
        .answers
        .get(backend)
        .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
        .and_then(|v| v["results"].get(0).cloned())
        .unwrap_or_else(|| serde_json::json!({}));
    let mut results = Vec::new();
    for (i, statement) in statements.iter().enumerate() {
        let error = state
            .statement_errors
            .iter()
            .find(|(b, containing, _)| b == backend && statement.contains(containing.as_str()));
        let mut result = match error {
            Some((_, _, e)) if statements.len() == 1 => serde_json::json!({ "error": e }),
            Some(_) => serde_json::json!({ "error": "not executed" }),
            None => canned.clone(),
        };
        result["statement_id"] = serde_json::json!(i);
        results.push(result);
        if error.is_some() {
            break;
        }
    }
    serde_json::to_vec(&serde_json::json!({ "results": results })).unwrap_or_default()
}

fn config(extra: &str) -> Config {
    config_with(r#"{ "cpu": ["a", "b"], "cpu.load": ["b"], "mem": ["a"], "_default_": ["a", "b"] }"#, extra)
}

/// The test config with these keymaps (a JSON object).
fn config_with(keymaps: &str, extra: &str) -> Config {
    let text = format!(
        r#"{{
            "backends": {{ "a": {{ "url": "http://127.0.0.1:8086" }}, "b": {{ "url": "http://127.0.0.1:8087" }} }},
            "keymaps": {keymaps},
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

/// A proxy whose keymaps have no `_default_`: `cpu` on a and b, `mem` on a,
/// `cpu.load` on b; any other measurement has no route.
fn open_without_default(transport: &MockTransport, extra: &str) -> Proxy<MockTransport, MemStorage> {
    let config = config_with(r#"{ "cpu": ["a", "b"], "cpu.load": ["b"], "mem": ["a"] }"#, extra);
    match futures_lite::future::block_on(Proxy::open(config, transport.clone(), MemStorage::new())) {
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
    let p = open(&t, MemStorage::new(), r#", "partial_writes": false"#);
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

/// Found in the adversarial pass: influxd answers `consistency=bogus` with
/// 400 `invalid consistency level`; the proxy answered 204.
#[test]
fn an_invalid_consistency_level_is_400_as_influxd_answers_it() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let r = write(&p, "db=x&consistency=bogus", "cpu v=1 1\n");
    assert_eq!((r.status, error_of(&r)), (400, "invalid consistency level".to_string()));
    assert!(t.writes("a").is_empty() && t.writes("b").is_empty(), "nothing written");
    for level in ["any", "one", "QUORUM", "all", ""] {
        assert_eq!(write(&p, &format!("db=x&consistency={level}"), "cpu v=1 1\n").status, 204, "{level}");
    }
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
    // Replayed in one request (the same db), in order.
    assert_eq!(drain(&p, 1), vec![ReplayStep::Progress, ReplayStep::Idle]);
    assert_eq!(t.writes("b"), vec!["cpu v=1 1\ncpu v=2 1\n"]);
    assert_eq!(t.writes("a"), vec!["cpu v=1 1\n", "cpu v=2 1\n"]);
    // Drained: writes go directly again.
    assert_eq!(write(&p, "db=x", "cpu v=3 1\n").status, 204);
    assert_eq!(t.writes("b").len(), 2);
    assert_eq!(p.queue_depth(1).records, 0);
}

/// Replay keeps its delivered batches' buffers for the next ones while it
/// goes on, and lets them go as soon as it pauses (here: the backend went
/// down again with records still queued), not only once the queue drains.
#[test]
fn replay_lets_its_batch_buffers_go_when_it_pauses() {
    let t = MockTransport::default();
    // Two 10-byte records per batch: 16 batches (32 records) per step.
    let p = open(&t, MemStorage::new(), r#", "backend_max_body_bytes": 20"#);
    t.set("b", Behaviour::Down);
    for i in 0..40 {
        assert_eq!(write(&p, "db=x", &format!("cpu v={} 1\n", i % 10)).status, 204);
    }
    t.set("b", Behaviour::Up);
    let held = || p.topology().states[1].queue.spare_buffers_held();
    assert_eq!(run(p.replay_step(1, 1_700_000_000_000)), ReplayStep::Progress);
    assert_eq!(p.queue_depth(1).records, 8, "32 records replayed in one step");
    assert!(held() > 0, "buffers kept for the next batches");
    t.set("b", Behaviour::Down);
    assert!(matches!(run(p.replay_step(1, 1_700_000_000_000)), ReplayStep::RetryAfter(_)));
    assert_eq!(p.queue_depth(1).records, 8);
    assert_eq!(held(), 0, "let go while the backend is down");
    t.set("b", Behaviour::Up);
    assert_eq!(drain(&p, 1).last(), Some(&ReplayStep::Idle));
    assert_eq!(t.writes("b").concat().lines().count(), 40, "every record delivered once");
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

/// influxd answers a write for a retention policy that does not exist with
/// 500 (not 4xx). Queued while b was down, such a record was retried
/// `replay_max_attempts` times (about 50 s with the default backoff) while the
/// records behind it waited; it is a refusal: dead-lettered at once.
#[test]
fn replay_dead_letters_a_missing_retention_policy_at_once() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    write(&p, "db=x&rp=nope", "cpu v=1 1\n");
    write(&p, "db=x", "cpu v=2 2\n");
    t.set("b", Behaviour::WriteStatus(500, r#"{"error":"retention policy not found: nope"}"#));
    assert_eq!(run(p.replay_step(1, 0)), ReplayStep::Progress);
    t.set("b", Behaviour::Up);
    assert_eq!(drain(&p, 1), vec![ReplayStep::Progress, ReplayStep::Idle]);
    assert_eq!(t.writes("b"), vec!["cpu v=1 1\n", "cpu v=2 2\n"]);
    let health = run(p.handle(Request::new(Method::Get, "/health"), 0));
    let v: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(
        (v["backends"][1]["dead_letters"].clone(), v["backends"][1]["healthy"].clone()),
        (1.into(), true.into())
    );
}

/// The same answer on the direct path is passed on with its status, not
/// queued, and does not count against the backend's health.
#[test]
fn a_missing_retention_policy_is_passed_on_and_not_queued() {
    let t = MockTransport::default();
    t.set("b", Behaviour::WriteStatus(500, r#"{"error":"retention policy not found: nope"}"#));
    let p = open(&t, MemStorage::new(), "");
    for _ in 0..5 {
        let r = write(&p, "db=x&rp=nope", "cpu v=1 1\n");
        assert_eq!((r.status, error_of(&r)), (500, "retention policy not found: nope".to_string()));
    }
    assert_eq!(p.queue_depth(1).records, 0);
    let health = run(p.handle(Request::new(Method::Get, "/health"), 0));
    let v: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(v["backends"][1]["healthy"], true);
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

/// One replica refuses the write (4xx) while the other can neither take it
/// nor keep it: the client must hear 503 (retry), not the 4xx (drop), or the
/// write is lost for the second replica.
#[test]
fn a_refusal_and_a_write_not_kept_answer_503() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("a", Behaviour::Status(400, r#"{"error":"partial write: field type conflict"}"#));
    t.set("b", Behaviour::Down);
    p.storage.fail_appends(true);
    let r = write(&p, "db=x", "cpu v=1 1\n");
    assert_eq!(r.status, 503, "{}", error_of(&r));
    assert!(error_of(&r).contains("write not kept"), "{}", error_of(&r));
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
    assert_eq!(t.writes("b"), vec!["cpu v=1 1\ncpu v=2 2\n"]);
}

#[test]
fn query_goes_to_one_replica_and_fails_over() {
    let t = MockTransport::default();
    t.set("a", Behaviour::Down);
    t.answer("b", r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["time","v"],"values":[[1,2]]}]}]}"#);
    let p = open(&t, MemStorage::new(), "");
    // The replica is picked at random: a fixed seed keeps the test repeatable.
    fastrand::seed(7);
    for _ in 0..20 {
        let r = query(&p, "SELECT v FROM cpu");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["results"][0]["series"][0]["values"][0][1], 2);
    }
    // a was picked first some of the time and failed over from; failed
    // queries do not mark it down (fall = 2), its health checks do.
    assert!(t.attempts("a") >= 2, "a was never tried: {}", t.attempts("a"));
    assert!(p.is_healthy(0));
    run(p.check_health(0, 1));
    run(p.check_health(0, 2));
    assert!(!p.is_healthy(0));
    // Marked down, a is no longer asked while b answers.
    let before = t.attempts("a");
    for _ in 0..10 {
        assert_eq!(query(&p, "SELECT v FROM cpu").status, 200);
    }
    assert_eq!(t.attempts("a"), before);
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
    // Issue 9: InfluxDB's body as b sent it (clients match on the text);
    // which backend said it is in the header.
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "{\"results\":[{\"statement_id\":0,\"error\":\"retention policy conflicts with an existing policy\"}]}\n"
    );
    assert_eq!(r.header("x-influx-proxy-backend"), Some("b"));
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

/// Found in the adversarial pass: the combined answer of a multi-statement
/// query had no bound. Each backend answer stays under
/// `backend_max_response_bytes` (a batch over it is asked statement by
/// statement), so 3,000 statements `SELECT * FROM big LIMIT 1000` (87 KB of
/// query) made the proxy build a 158 MB body (472 MB peak RSS), and 1 MB of
/// them about 1.8 GB. The whole answer is bounded by the same limit: 502
/// before anything changed, else the statement over the limit gets the error
/// and the rest is not executed.
#[test]
fn a_combined_query_answer_over_backend_max_response_bytes_is_502() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "backend_max_response_bytes": 2000"#);
    t.answer("a", r#"{"results":[{"statement_id":0,"series":[{"name":"mem","columns":["time","v"],"values":[[1,2],[3,4],[5,6]]}]}]}"#);
    let many = "SELECT v FROM mem;".repeat(50);
    let r = query(&p, &many);
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(error_of(&r), "query answer larger than backend_max_response_bytes (2000 bytes)");
    // After a change, the error is the statement's, in a 200 answer.
    let r = query(&p, &format!("CREATE DATABASE x;{many}"));
    assert_eq!(r.status, 200);
    // The results up to the limit, then short errors (`not executed`).
    assert!(r.body.len() <= 2000 + 51 * 50, "{} bytes", r.body.len());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let results = v["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 51);
    let errors: Vec<&str> = results.iter().filter_map(|r| r["error"].as_str()).collect();
    assert_eq!(errors[0], "query answer larger than backend_max_response_bytes (2000 bytes)");
    assert!(errors[1..].iter().all(|e| *e == "not executed"), "{errors:?}");
    // A query under the limit still answers.
    assert_eq!(query(&p, "SELECT v FROM mem; SELECT v FROM mem").status, 200);
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

/// Issue 9: EXPLAIN [ANALYZE] goes where the SELECT it explains would, to
/// one replica, failing over; the answer is the backend's as it sent it.
#[test]
fn explain_is_routed_like_the_select_it_explains_with_failover() {
    let t = MockTransport::default();
    let plan = r#"{"results":[{"statement_id":0,"series":[{"columns":["QUERY PLAN"],"values":[["EXPRESSION: <nil>"]]}]}]}"#;
    t.answer("a", plan);
    t.answer("b", plan);
    let p = open(&t, MemStorage::new(), "");
    // cpu.load lives on b only.
    let r = query(&p, "EXPLAIN SELECT * FROM \"cpu.load\"");
    assert_eq!(r.status, 200, "{}", error_of(&r));
    let json = |body: &[u8]| serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
    assert_eq!(json(&r.body), json(plan.as_bytes()));
    assert_eq!(r.header("x-influx-proxy-backend"), Some("b"));
    assert!(t.statements("a").is_empty());
    // mem lives on a only.
    assert_eq!(query(&p, "EXPLAIN ANALYZE SELECT mean(v) FROM mem").status, 200);
    assert_eq!(t.statements("a"), ["EXPLAIN ANALYZE SELECT mean(v) FROM mem"]);
    // cpu on a and b: one of them; with a down, b answers.
    t.set("a", Behaviour::Down);
    for _ in 0..4 {
        let r = query(&p, "EXPLAIN SELECT * FROM cpu");
        assert_eq!(r.status, 200, "{}", error_of(&r));
        assert_eq!(r.header("x-influx-proxy-backend"), Some("b"));
    }
    // A SELECT across replica sets is explained by one backend: one request.
    let before = t.statements("b").len() + t.statements("a").len();
    assert_eq!(query(&p, "EXPLAIN SELECT * FROM \"cpu.load\", mem").status, 200);
    assert_eq!(t.statements("b").len() + t.statements("a").len(), before + 1);
}

/// Issue 9: DELETE and DROP SERIES without FROM go to every backend, FROM a
/// regex to every backend, FROM several measurements to the replicas of
/// each; queued for a backend that is down.
#[test]
fn delete_and_drop_series_without_one_measurement_fan_out_and_queue() {
    let t = MockTransport::default();
    let p = open_without_default(&t, "");
    t.set("b", Behaviour::Down);
    let r = query(&p, "DELETE WHERE host = 'x'");
    assert_eq!(r.status, 200, "{}", error_of(&r));
    assert_eq!(t.statements("a"), ["DELETE WHERE host = 'x'"]);
    assert_eq!(p.queue_depth(1).records, 1, "queued for b");
    assert_eq!(query(&p, "DROP SERIES FROM /c.*/").status, 200);
    assert_eq!(p.queue_depth(1).records, 2, "queued for b");
    t.set("b", Behaviour::Up);
    drain(&p, 1);
    assert_eq!(t.statements("b"), ["DELETE WHERE host = 'x'", "DROP SERIES FROM /c.*/"]);
    // mem is on a, cpu.load on b: both; mem alone: a only.
    assert_eq!(query(&p, "DROP SERIES FROM mem, \"cpu.load\" WHERE host = 'a'").status, 200);
    assert_eq!(t.statements("a").len(), 3);
    assert_eq!(t.statements("b").len(), 3);
    assert_eq!(query(&p, "DELETE FROM mem, mem").status, 200);
    assert_eq!((t.statements("a").len(), t.statements("b").len()), (4, 3));
    // A measurement without a route is still refused before anything is sent.
    let r = query(&p, "DELETE FROM mem, nowhere");
    assert_eq!(r.status, 400, "{}", error_of(&r));
    assert_eq!((t.statements("a").len(), t.statements("b").len()), (4, 3));
}

/// Issue 9: SHOW SUBSCRIPTIONS is merged from every backend; CREATE/DROP
/// SUBSCRIPTION are forbidden by default and, when allowed, go to every
/// backend.
#[test]
fn subscriptions_are_shown_merged_and_forbidden_to_change_by_default() {
    let t = MockTransport::default();
    let subs = r#"{"results":[{"statement_id":0,"series":[{"name":"x","columns":["retention_policy","name","mode","destinations"],"values":[["autogen","s","ALL",["udp://h:9090"]]]}]}]}"#;
    t.answer("a", subs);
    t.answer("b", subs);
    let p = open(&t, MemStorage::new(), "");
    let r = query(&p, "SHOW SUBSCRIPTIONS");
    assert_eq!(r.status, 200, "{}", error_of(&r));
    let json = |body: &[u8]| serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
    assert_eq!(json(&r.body), json(subs.as_bytes()), "one copy of the subscription");
    assert_eq!((t.statements("a").len(), t.statements("b").len()), (1, 1));
    let create = "CREATE SUBSCRIPTION s ON x.autogen DESTINATIONS ALL 'udp://h:9090'";
    for q in [create, "DROP SUBSCRIPTION s ON x.autogen"] {
        let r = query(&p, q);
        assert_eq!(r.status, 403, "{q}: {}", error_of(&r));
        assert_eq!(error_of(&r), format!("statement forbidden by the proxy: {q}"));
    }
    assert_eq!((t.statements("a").len(), t.statements("b").len()), (1, 1));
    let p = open(&t, MemStorage::new(), r#", "allowed_statements": ["subscription"]"#);
    assert_eq!(query(&p, create).status, 200);
    assert_eq!(t.statements("a")[1], create);
    assert_eq!(t.statements("b")[1], create);
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
fn a_backlog_and_each_health_change_are_logged_once() {
    // What a log must show when an acknowledged write goes missing: when a
    // backend's writes started to queue, and when it was marked down and up.
    let t = MockTransport::default();
    let mut p = open(&t, MemStorage::new(), "");
    let lines = Rc::new(RefCell::new(Vec::<String>::new()));
    let sink = lines.clone();
    p.set_log(Rc::new(move |line: &str| sink.borrow_mut().push(line.to_string())));
    t.set("a", Behaviour::Down);
    for ts in 1..=3 {
        assert_eq!(write(&p, "db=x", &format!("cpu v=1 {ts}\n")).status, 204);
    }
    run(p.check_health(0, 4));
    run(p.check_health(0, 5));
    t.set("a", Behaviour::Up);
    run(p.check_health(0, 6));
    assert_eq!(drain(&p, 0), vec![ReplayStep::Progress, ReplayStep::Idle]);
    let lines = lines.borrow();
    let a: Vec<&String> = lines.iter().filter(|l| l.starts_with("backend a:")).collect();
    assert_eq!(a.len(), 3, "{lines:?}");
    assert!(a[0].starts_with("backend a: a write went to the empty write queue after: "), "{lines:?}");
    assert!(a[1].starts_with("backend a: marked down: "), "{lines:?}");
    assert_eq!(a[2], "backend a: marked up", "{lines:?}");
    assert!(lines.iter().all(|l| !l.starts_with("backend b:")), "b never failed: {lines:?}");
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

/// The results of a `/query` answer (panics on anything else).
fn results_of(response: &Response) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&response.body)));
    v["results"].as_array().cloned().unwrap_or_else(|| panic!("no results: {v}"))
}

#[test]
fn a_mixed_query_that_cannot_run_whole_sends_nothing() {
    let t = MockTransport::default();
    let p = open_without_default(&t, r#", "allowed_statements": ["into"]"#);
    let cases: &[(&str, u16, &str)] = &[
        // Routing: m has no keymap and there is no _default_.
        ("CREATE DATABASE x; SELECT * FROM m", 400, "no route for measurement \"m\""),
        ("DROP MEASUREMENT cpu; SELECT * FROM m", 400, "no route for measurement \"m\""),
        ("CREATE DATABASE x; DROP MEASUREMENT m", 400, "no route for measurement \"m\""),
        ("DELETE FROM cpu; DROP SERIES FROM m WHERE host = 'a'", 400, "no route for measurement \"m\""),
        ("CREATE DATABASE x; SELECT * INTO copy FROM m", 400, "no route for measurement \"m\""),
        ("CREATE DATABASE x; SELECT * FROM cpu, m", 400, "no route for measurement \"m\""),
        ("CREATE DATABASE x; SHOW TAG KEYS FROM m", 400, "no route for measurement \"m\""),
        // The window of a SHOW ... FROM that spans replica sets is re-applied
        // by the proxy, so its LIMIT must be readable before anything is sent.
        ("CREATE DATABASE x; SHOW SERIES FROM /c/ LIMIT x", 400, "after LIMIT"),
        ("CREATE DATABASE x; SHOW SERIES FROM mem, \"cpu.load\" OFFSET 1.5", 400, "invalid OFFSET"),
        ("CREATE DATABASE x; SHOW MEASUREMENTS LIMIT x", 400, "after LIMIT"),
        // The statement filter and unsupported forms.
        ("CREATE DATABASE x; GRANT ALL TO joe", 403, "forbidden"),
        ("CREATE DATABASE x; SELECT 1", 400, "SELECT without FROM"),
        ("DROP MEASUREMENT cpu; DROP SHARD 1", 400, "not supported"),
    ];
    for (q, status, error) in cases {
        let r = query(&p, q);
        assert_eq!(r.status, *status, "{q}: {}", String::from_utf8_lossy(&r.body));
        assert!(error_of(&r).contains(error), "{q}: got {:?}, want {error:?}", error_of(&r));
        assert_eq!((t.attempts("a"), t.attempts("b")), (0, 0), "{q}: a request was sent");
        assert_eq!(
            (p.queue_depth(0).records, p.queue_depth(1).records),
            (0, 0),
            "{q}: a statement was queued"
        );
    }
}

/// Found in the adversarial pass: `CREATE DATABASE x; SELECT FROM cpu`
/// created x, then answered 200 with the parse error as the second
/// statement's error; influxd answers 400 and runs nothing. The whole query
/// is parsed by a backend first (with a statement appended that cannot parse,
/// so none of it runs); its parse error is the answer, nothing is sent.
#[test]
fn a_query_influxdb_cannot_parse_is_400_before_any_mutation_runs() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let refusal = r#"{"error":"error parsing query: found FROM, expected identifier at line 1, char 27"}"#;
    for backend in ["a", "b"] {
        t.refuse_queries(backend, "SELECT FROM cpu", 400, refusal);
    }
    let r = query(&p, "CREATE DATABASE x; SELECT FROM cpu");
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(error_of(&r), "error parsing query: found FROM, expected identifier at line 1, char 27");
    // Only the parse check reached a backend: the query with the probe after it.
    let sent: Vec<String> = t.statements("a").into_iter().chain(t.statements("b")).collect();
    assert_eq!(sent, ["CREATE DATABASE x; SELECT FROM cpu\n;influx_proxy_syntax_check"]);
    // The probe's own parse error means the query parsed: it runs.
    for backend in ["a", "b"] {
        t.refuse_queries(
            backend,
            ";influx_proxy_syntax_check",
            400,
            r#"{"error":"error parsing query: found influx_proxy_syntax_check, expected SELECT at line 2, char 2"}"#,
        );
    }
    let r = query(&p, "CREATE DATABASE y; SHOW DATABASES");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(t.statements("b").iter().any(|s| s == "CREATE DATABASE y"), "{:?}", t.statements("b"));
}

#[test]
fn a_read_failing_after_a_mutation_is_that_statement_error_not_a_4xx() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    // Every replica refuses the SELECT as a whole request with a 400 that is
    // not a parse error (the query parsed whole, see
    // `a_query_influxdb_cannot_parse_is_400_before_any_mutation_runs`).
    for backend in ["a", "b"] {
        t.refuse_queries(backend, "SELECT v FROM cpu WHERE", 400, r#"{"error":"found EOF"}"#);
    }
    let r = query(&p, "CREATE DATABASE x; SELECT v FROM cpu WHERE; SHOW DATABASES");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let results = results_of(&r);
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(results[0], serde_json::json!({"statement_id": 0}));
    assert_eq!(results[1]["statement_id"], 1);
    assert!(results[1]["error"].as_str().unwrap_or_default().contains("found EOF"), "{results:?}");
    // As InfluxDB: statements after a failed one are not executed.
    assert_eq!(results[2], serde_json::json!({"statement_id": 2, "error": "not executed"}));
    let run = |s: &&String| s.contains("SHOW") && !s.ends_with(";influx_proxy_syntax_check");
    assert_eq!(t.statements("a").iter().filter(run).count(), 0);
    assert_eq!(t.statements("b").iter().filter(run).count(), 0);
    // Every replica down after a mutation: still 200, the read's error in its result.
    t.set_queries("a", Behaviour::Down);
    t.set_queries("b", Behaviour::Down);
    let r = query(&p, "SELECT v FROM cpu");
    assert_eq!(r.status, 503, "before any mutation the failure is the answer's status");
    t.set_queries("a", Behaviour::Up);
    t.set_queries("b", Behaviour::Up);
    t.refuse_queries("a", "FROM mem", 500, r#"{"error":"boom"}"#);
    let r = query(&p, "DROP MEASUREMENT cpu; SELECT v FROM mem");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let results = results_of(&r);
    assert!(results[1]["error"].as_str().unwrap_or_default().contains("boom"), "{results:?}");
    // The same read without a mutation before it keeps its status.
    let r = query(&p, "SELECT v FROM mem; DROP MEASUREMENT cpu");
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        t.statements("a")
            .iter()
            .filter(|s| s.contains("DROP") && !s.ends_with(";influx_proxy_syntax_check"))
            .count(),
        1,
        "DROP sent after a failed read"
    );
}

#[test]
fn many_reads_are_sent_in_batches_not_one_request_per_statement() {
    let t = MockTransport::default();
    t.answer("a", r#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["x"]]}]}]}"#);
    t.answer("b", r#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["y"]]}]}]}"#);
    let p = open(&t, MemStorage::new(), "");
    let n = 2 * MAX_BATCH_STATEMENTS + 1;
    let r = query(&p, &"SHOW DATABASES;".repeat(n));
    assert_eq!(r.status, 200);
    let results = results_of(&r);
    assert_eq!(results.len(), n);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["statement_id"], i);
        assert_eq!(result["series"][0]["values"], serde_json::json!([["x"], ["y"]]), "statement {i}");
    }
    // SHOW without FROM goes to every backend: one request per batch each.
    assert_eq!((t.attempts("a"), t.attempts("b")), (3, 3));

    // Reads routed to one replica set: one backend answers each batch.
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let r = query(&p, &"SELECT v FROM cpu; ".repeat(n));
    assert_eq!(results_of(&r).len(), n);
    assert_eq!(t.attempts("a") + t.attempts("b"), 3);
    // A schema statement in between ends a batch (it is delivered on its own).
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let r = query(&p, "SHOW DATABASES; SHOW DATABASES; CREATE DATABASE x; SHOW DATABASES; SHOW DATABASES");
    assert_eq!(results_of(&r).len(), 5);
    // (Besides the parse check of the whole query, on a or b.)
    let sent: Vec<String> =
        t.statements("a").into_iter().filter(|s| !s.ends_with(";influx_proxy_syntax_check")).collect();
    assert_eq!(
        sent,
        ["SHOW DATABASES;\nSHOW DATABASES", "CREATE DATABASE x", "SHOW DATABASES;\nSHOW DATABASES"]
    );
}

#[test]
fn a_statement_failing_inside_a_batch_gets_its_own_error_and_the_rest_runs_as_influxdb_would() {
    // On one replica set: InfluxDB stops at the first failed statement.
    let t = MockTransport::default();
    t.fail_statement("a", "nodb", "database not found: nodb");
    t.fail_statement("b", "nodb", "database not found: nodb");
    let p = open(&t, MemStorage::new(), "");
    let r = query(&p, "SELECT v FROM cpu; SELECT v FROM nodb..cpu; SELECT v FROM cpu");
    assert_eq!(r.status, 200);
    let results = results_of(&r);
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], serde_json::json!({"statement_id": 0}));
    // The real error, asked for alone (InfluxDB 1.6 answers "not executed" in a batch).
    assert_eq!(results[1], serde_json::json!({"statement_id": 1, "error": "database not found: nodb"}));
    assert_eq!(results[2], serde_json::json!({"statement_id": 2, "error": "not executed"}));

    // SHOW fanned out: b fails a statement a answers, so a's answer stands
    // and b is asked for the statements after it again.
    let t = MockTransport::default();
    t.answer("a", r#"{"results":[{"statement_id":0,"series":[{"name":"measurements","columns":["name"],"values":[["x"]]}]}]}"#);
    t.answer("b", r#"{"results":[{"statement_id":0,"series":[{"name":"measurements","columns":["name"],"values":[["y"]]}]}]}"#);
    t.fail_statement("b", "ON only_a", "database not found: only_a");
    let p = open(&t, MemStorage::new(), "");
    let r = query(&p, "SHOW MEASUREMENTS; SHOW MEASUREMENTS ON only_a; SHOW MEASUREMENTS");
    let results = results_of(&r);
    let values: Vec<&serde_json::Value> = results.iter().map(|r| &r["series"][0]["values"]).collect();
    assert_eq!(
        values,
        [&serde_json::json!([["x"], ["y"]]), &serde_json::json!([["x"]]), &serde_json::json!([["x"], ["y"]])]
    );
    assert_eq!(t.statements("a").len(), 1);
    assert_eq!(
        t.statements("b"),
        [
            "SHOW MEASUREMENTS;\nSHOW MEASUREMENTS ON only_a;\nSHOW MEASUREMENTS",
            "SHOW MEASUREMENTS ON only_a",
            "SHOW MEASUREMENTS"
        ]
    );
}

#[test]
fn failing_or_hanging_queries_do_not_mark_a_backend_down() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    // a answers its pings but fails every query; fall is 2.
    for (i, behaviour) in
        [Behaviour::Status(500, r#"{"error":"out of memory"}"#), Behaviour::Hang].into_iter().enumerate()
    {
        t.set_queries("a", behaviour);
        for _ in 0..10 {
            // cpu fails over to b; mem lives on a only and fails.
            assert_eq!(query(&p, "SELECT v FROM cpu").status, 200);
            assert_eq!(query(&p, "SELECT v FROM mem").status, 503);
            assert_eq!(query(&p, "SHOW DATABASES").status, 200);
        }
        assert!(p.is_healthy(0), "round {i}: queries marked a healthy backend down");
        // Its writes are still delivered directly, not diverted to its queue.
        assert_eq!(write(&p, "db=x", &format!("cpu v={i} 1\n")).status, 204);
        assert_eq!(t.writes("a").len(), i + 1, "round {i}");
        assert_eq!(p.queue_depth(0).records, 0, "round {i}");
        // The failure is still visible.
        let health = run(p.handle(Request::new(Method::Get, "/health"), 0));
        let v: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
        let last_error = v["backends"][0]["last_error"].as_str().unwrap_or_default().to_string();
        assert!(!last_error.is_empty(), "round {i}: {v}");
    }
    // Its pings still count: two failed health checks mark it down.
    t.set("a", Behaviour::Down);
    run(p.check_health(0, 1));
    run(p.check_health(0, 2));
    assert!(!p.is_healthy(0));
}

#[test]
fn a_batch_no_replica_answers_is_asked_statement_by_statement() {
    // Both replicas fail the batch as a whole (as when many heavy statements
    // together outlast the request timeout) but answer each statement alone.
    let t = MockTransport::default();
    for backend in ["a", "b"] {
        t.refuse_queries(backend, ";\n", 500, r#"{"error":"timeout"}"#);
    }
    let p = open(&t, MemStorage::new(), "");
    let r = query(&p, "SELECT v FROM cpu; SELECT v FROM cpu; SELECT v FROM cpu");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(results_of(&r).len(), 3);
    assert!(results_of(&r).iter().all(|r| r.get("error").is_none()), "{:?}", results_of(&r));
    // One batch per replica, then three statements alone.
    assert_eq!(t.attempts("a") + t.attempts("b"), 2 + 3);
}

#[test]
fn a_backend_failing_many_statements_of_a_batch_is_not_sent_them_quadratically() {
    // b fails every statement a answers: each failure cuts b's batch short,
    // and b is asked for the rest again.
    let t = MockTransport::default();
    t.fail_statement("b", "ON only_a", "database not found: only_a");
    let p = open(&t, MemStorage::new(), "");
    let n = 512;
    let r = query(&p, &"SHOW MEASUREMENTS ON only_a;".repeat(n));
    assert_eq!(r.status, 200);
    assert_eq!(results_of(&r).len(), n);
    let sent_to_b: usize =
        t.statements("b").iter().map(|q| crate::statement::split_statements(q).map_or(0, |s| s.len())).sum();
    // Re-sending the rest after each failure would be n * (n + 1) / 2 = 131,328.
    assert!(sent_to_b <= 4 * n, "{sent_to_b} statements sent to b for {n}");
    assert_eq!(t.statements("a").len(), 1);
}

// The replay policy: no record blocks a queue forever.

const T0: u64 = 1_700_000_000_000;

fn health_of(p: &Proxy<MockTransport, MemStorage>, now_ms: u64) -> serde_json::Value {
    let health = run(p.handle(Request::new(Method::Get, "/health"), now_ms));
    serde_json::from_slice(&health.body).unwrap()
}

fn metrics_of(p: &Proxy<MockTransport, MemStorage>, now_ms: u64) -> String {
    String::from_utf8(run(p.handle(Request::new(Method::Get, "/metrics"), now_ms)).body).unwrap()
}

fn dead_letter_file(storage: &MemStorage, backend: &str) -> String {
    let files = storage.snapshot();
    String::from_utf8(files.get(&format!("queue/{backend}/dead-letter.jsonl")).cloned().unwrap_or_default())
        .unwrap()
}

#[test]
fn record_failing_max_attempts_times_while_ping_answers_is_dead_lettered_and_the_queue_flows() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "replay_max_attempts": 3"#);
    t.set("b", Behaviour::Down);
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    assert_eq!(write(&p, "db=x", "cpu v=2 2\n").status, 204);
    t.set("b", Behaviour::RecordFails(500, r#"{"error":"timeout"}"#));
    let steps: Vec<ReplayStep> = (0..3).map(|_| run(p.replay_step(1, T0))).collect();
    assert!(matches!(
        steps[..],
        [ReplayStep::RetryAfter(_), ReplayStep::RetryAfter(_), ReplayStep::Progress]
    ));
    assert_eq!(p.queue_depth(1).records, 1, "the failing record left the queue");
    t.set("b", Behaviour::Up);
    assert_eq!(drain(&p, 1), vec![ReplayStep::Progress, ReplayStep::Idle]);
    assert_eq!(t.writes("b").last().map(String::as_str), Some("cpu v=2 2\n"));
    let v = health_of(&p, T0);
    assert_eq!(v["backends"][1]["dead_letters"], 1);
    assert_eq!(v["backends"][1]["replay_given_up"], 1);
    assert!(metrics_of(&p, T0).contains("influx_proxy_replay_given_up_total{backend=\"b\"} 1"));
    let line = dead_letter_file(&p.storage, "b");
    assert!(line.contains("replay gave up after 3 attempts") && line.contains("timeout"), "{line}");
}

#[test]
fn record_breaking_the_connection_is_dead_lettered_once_older_than_max_age() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "replay_max_attempts": 1000, "replay_max_age_ms": 60000"#);
    t.set("b", Behaviour::Down);
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    t.set("b", Behaviour::RecordBreaks);
    assert!(matches!(run(p.replay_step(1, T0 + 59_999)), ReplayStep::RetryAfter(_)));
    assert_eq!(run(p.replay_step(1, T0 + 60_000)), ReplayStep::Progress);
    assert_eq!(p.queue_depth(1).records, 0);
    let line = dead_letter_file(&p.storage, "b");
    assert!(line.contains("queued 60000 ms ago") && line.contains("Broken pipe"), "{line}");
}

/// A backend that answers `/ping` but is too busy to answer writes within
/// `request_timeout_ms` (seen under load: a whole acknowledged write was
/// dead-lettered after 10 timeouts in a row) is slow, not given a bad
/// record: timeouts never count towards `replay_max_attempts`, only the age
/// limit gives such a record up.
#[test]
fn a_record_that_only_times_out_is_retried_past_max_attempts_until_its_max_age() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "replay_max_attempts": 3, "replay_max_age_ms": 60000"#);
    t.set("b", Behaviour::Down);
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    assert_eq!(write(&p, "db=x", "cpu v=2 2\n").status, 204);
    t.set("b", Behaviour::RecordHangs);
    for i in 0..20 {
        let step = run(p.replay_step(1, T0 + i));
        assert!(matches!(step, ReplayStep::RetryAfter(_)), "attempt {i}: {step:?}");
    }
    assert_eq!(p.queue_depth(1).records, 2, "nothing given up for timing out");
    assert_eq!(health_of(&p, T0)["backends"][1]["dead_letters"], 0);
    assert_eq!(p.replay_attempts(1), 20, "every attempt shown");
    t.set("b", Behaviour::Up);
    assert_eq!(drain(&p, 1), vec![ReplayStep::Progress, ReplayStep::Idle]);
    assert_eq!(t.writes("b"), vec!["cpu v=1 1\ncpu v=2 2\n"]);
    // Past the age limit, a record that still times out is given up.
    t.set("b", Behaviour::Down);
    assert_eq!(write(&p, "db=x", "cpu v=3 3\n").status, 204);
    t.set("b", Behaviour::RecordHangs);
    assert!(matches!(run(p.replay_step(1, T0 + 59_999)), ReplayStep::RetryAfter(_)));
    assert_eq!(run(p.replay_step(1, T0 + 60_000)), ReplayStep::Progress);
    let line = dead_letter_file(&p.storage, "b");
    assert!(line.contains("queued 60000 ms ago") && line.contains("timed out"), "{line}");
}

#[test]
fn down_backend_is_retried_forever_whatever_the_attempts_and_the_age() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "replay_max_attempts": 2, "replay_max_age_ms": 1000"#);
    t.set("b", Behaviour::Down);
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    for i in 0..20 {
        t.set("b", if i % 2 == 0 { Behaviour::Down } else { Behaviour::Hang });
        let step = run(p.replay_step(1, T0 + 10 * 86_400_000 + i));
        assert!(matches!(step, ReplayStep::RetryAfter(_)), "{step:?}");
    }
    assert_eq!(p.queue_depth(1).records, 1, "never dead-lettered while down");
    assert_eq!(health_of(&p, T0)["backends"][1]["dead_letters"], 0);
    t.set("b", Behaviour::Up);
    assert_eq!(drain(&p, 1), vec![ReplayStep::Progress, ReplayStep::Idle]);
    assert_eq!(t.writes("b"), vec!["cpu v=1 1\n"]);
}

#[test]
fn health_and_metrics_show_the_oldest_record_age_and_its_replay_attempts() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let v = health_of(&p, T0);
    assert_eq!(v["backends"][1]["oldest_record_age_ms"], serde_json::Value::Null);
    assert_eq!(v["backends"][1]["replay_attempts"], 0);
    t.set("b", Behaviour::Down);
    assert_eq!(write(&p, "db=x", "cpu v=1 1\n").status, 204);
    assert_eq!(write(&p, "db=x", "cpu v=2 2\n").status, 204);
    run(p.replay_step(1, T0 + 1000));
    run(p.replay_step(1, T0 + 2000));
    let v = health_of(&p, T0 + 5_000);
    assert_eq!(v["backends"][1]["oldest_record_age_ms"], 5_000);
    assert_eq!(v["backends"][1]["replay_attempts"], 2);
    assert_eq!(v["backends"][0]["oldest_record_age_ms"], serde_json::Value::Null);
    let text = metrics_of(&p, T0 + 5_000);
    assert!(text.contains("influx_proxy_write_queue_oldest_age_seconds{backend=\"b\"} 5.0"), "{text}");
    assert!(text.contains("influx_proxy_write_queue_replay_attempts{backend=\"b\"} 2"), "{text}");
    t.set("b", Behaviour::Up);
    drain(&p, 1);
    let v = health_of(&p, T0 + 6_000);
    assert_eq!(v["backends"][1]["oldest_record_age_ms"], serde_json::Value::Null);
    assert_eq!(v["backends"][1]["replay_attempts"], 0);
}
#[test]
fn count_lines_counts_every_newline_at_any_position() {
    for len in 0..40 {
        for newline_every in 1..10 {
            let body: Vec<u8> = (0..len)
                .map(|i| if i % newline_every == 0 { b'\n' } else { b'a' + (i % 26) as u8 })
                .collect();
            let expected = body.iter().filter(|&&b| b == b'\n').count() as u64;
            assert_eq!(count_lines(&body), expected, "{:?}", String::from_utf8_lossy(&body));
        }
    }
    // Bytes that differ from `\n` in one bit only, and high bytes.
    let tricky = [0x0b, 0x08, 0x8a, 0x0a, 0xff, 0x00, 0x7f, 0x0a, 0x0a, 0x2a, 0x4a, 0x0e];
    assert_eq!(count_lines(&tricky), 3);
    // Over the counters' blocks, every byte a newline (no counter overflows).
    assert_eq!(count_lines(&[b'\n'; 20_001]), 20_001);
    let mixed: Vec<u8> = (0..100_003).map(|i| if i % 3 == 0 { b'\n' } else { b'x' }).collect();
    assert_eq!(count_lines(&mixed), 33_335);
}

/// `/write` requests `backend` answered: (query parameters, body).
fn write_requests(t: &MockTransport, backend: &str) -> Vec<(String, String)> {
    t.received(backend)
        .iter()
        .filter(|r| r.path == "/write")
        .map(|r| (crate::http::encode_params(&r.query), String::from_utf8_lossy(&r.body).into_owned()))
        .collect()
}

#[test]
fn replay_sends_consecutive_records_as_one_request_in_queue_order() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    // The same point twice: the later value must be the one the backend keeps,
    // i.e. come later in the body (InfluxDB keeps the last of duplicate points).
    for body in ["cpu v=1 1\n", "cpu v=2 1\n", "cpu v=3 2\ncpu,host=h v=4 2\n"] {
        assert_eq!(write(&p, "db=x", body).status, 204);
    }
    assert_eq!(p.queue_depth(1).records, 3);
    t.set("b", Behaviour::Up);
    assert_eq!(drain(&p, 1), vec![ReplayStep::Progress, ReplayStep::Idle]);
    assert_eq!(t.writes("b"), vec!["cpu v=1 1\ncpu v=2 1\ncpu v=3 2\ncpu,host=h v=4 2\n"]);
    assert_eq!(p.queue_depth(1).records, 0);
    let text = metrics_of(&p, T0);
    assert!(text.contains("influx_proxy_replayed_records_total{backend=\"b\"} 3"), "{text}");
    assert!(text.contains("influx_proxy_points_written_total{backend=\"b\"} 4"), "{text}");
    let bytes = "cpu v=1 1\ncpu v=2 1\ncpu v=3 2\ncpu,host=h v=4 2\n".len();
    assert!(text.contains(&format!("influx_proxy_bytes_written_total{{backend=\"b\"}} {bytes}")), "{text}");
}

#[test]
fn replay_batches_stay_within_backend_max_body_bytes() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "backend_max_body_bytes": 40"#);
    t.set("b", Behaviour::Down);
    for i in 0..6 {
        assert_eq!(write(&p, "db=x", &format!("cpu v={i} {i}\n")).status, 204);
    }
    t.set("b", Behaviour::Up);
    drain(&p, 1);
    let writes = t.writes("b");
    assert!(writes.iter().all(|w| w.len() <= 40), "{writes:?}");
    assert!(writes.len() < 6, "batched: {writes:?}");
    assert_eq!(writes.concat(), (0..6).map(|i| format!("cpu v={i} {i}\n")).collect::<String>());
}

#[test]
fn replay_never_merges_records_of_different_databases_retention_policies_precisions_or_credentials() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    let writes = [
        ("db=x", "cpu v=1 1\n"),
        ("db=x", "cpu v=2 2\n"),
        ("db=y", "cpu v=3 3\n"),
        ("db=y&rp=week", "cpu v=4 4\n"),
        ("db=y&rp=week&precision=s", "cpu v=5 5\n"),
        ("db=y&rp=week&precision=s&u=alice&p=secret", "cpu v=6 6\n"),
        ("db=y&rp=week&precision=s&u=alice&p=other", "cpu v=7 7\n"),
        ("db=y&rp=week&precision=s&u=bob&p=other", "cpu v=8 8\n"),
        ("db=y&rp=week&precision=s&u=bob&p=other", "cpu v=9 9\n"),
    ];
    for (query, body) in writes {
        assert_eq!(write(&p, query, body).status, 204, "{query}");
    }
    // A statement between two writes that could share a request: three requests.
    let mut create = Request::new(Method::Post, "/query");
    create.query = vec![("q".into(), "CREATE DATABASE z".into())];
    assert_eq!(run(p.handle(create, T0)).status, 200);
    assert_eq!(write(&p, "db=z", "cpu v=10 10\n").status, 204);
    assert_eq!(write(&p, "db=z", "cpu v=11 11\n").status, 204);
    let mut drop = Request::new(Method::Post, "/query");
    drop.query = vec![("q".into(), "DROP SERIES FROM cpu".into()), ("db".into(), "z".into())];
    assert_eq!(run(p.handle(drop, T0)).status, 200);
    assert_eq!(write(&p, "db=z", "cpu v=12 12\n").status, 204);
    t.set("b", Behaviour::Up);
    drain(&p, 1);
    assert_eq!(p.queue_depth(1).records, 0);
    let q = |s: &str| crate::http::encode_params(&crate::http::decode_params(s));
    assert_eq!(
        write_requests(&t, "b"),
        vec![
            (q("db=x"), "cpu v=1 1\ncpu v=2 2\n".to_string()),
            (q("db=y"), "cpu v=3 3\n".to_string()),
            (q("db=y&rp=week"), "cpu v=4 4\n".to_string()),
            (q("db=y&rp=week&precision=s"), "cpu v=5 5\n".to_string()),
            (q("db=y&rp=week&precision=s&u=alice&p=secret"), "cpu v=6 6\n".to_string()),
            (q("db=y&rp=week&precision=s&u=alice&p=other"), "cpu v=7 7\n".to_string()),
            (q("db=y&rp=week&precision=s&u=bob&p=other"), "cpu v=8 8\ncpu v=9 9\n".to_string()),
            (q("db=z"), "cpu v=10 10\ncpu v=11 11\n".to_string()),
            (q("db=z"), "cpu v=12 12\n".to_string()),
        ]
    );
    assert_eq!(t.statements("b"), vec!["CREATE DATABASE z", "DROP SERIES FROM cpu"]);
    // The statements came between the writes, in queue order.
    let order: Vec<String> =
        t.received("b").iter().map(|r| r.path.clone()).filter(|p| p != "/ping").collect();
    assert_eq!(
        order,
        [
            "/write", "/write", "/write", "/write", "/write", "/write", "/write", "/query", "/write",
            "/query", "/write"
        ]
    );
}

#[test]
fn replay_batches_carry_the_authorization_header_of_their_own_records_only() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    for (auth, body) in
        [("Token one", "cpu v=1 1\n"), ("Token one", "cpu v=2 2\n"), ("Token two", "cpu v=3 3\n")]
    {
        let mut request = Request::new(Method::Post, "/write");
        request.query = vec![("db".into(), "x".into())];
        request.headers.push(("authorization".into(), auth.into()));
        request.body = body.as_bytes().to_vec();
        assert_eq!(run(p.handle(request, T0)).status, 204);
    }
    t.set("b", Behaviour::Up);
    drain(&p, 1);
    let sent: Vec<(Option<String>, String)> = t
        .received("b")
        .iter()
        .filter(|r| r.path == "/write")
        .map(|r| {
            (r.header("authorization").map(str::to_string), String::from_utf8_lossy(&r.body).into_owned())
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            (Some("Token one".into()), "cpu v=1 1\ncpu v=2 2\n".into()),
            (Some("Token two".into()), "cpu v=3 3\n".into()),
        ]
    );
}

#[test]
fn a_refused_point_in_a_replay_batch_is_the_only_dead_letter_and_the_rest_arrive() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    for body in ["cpu v=1 1\n", "cpu v=2 2\n", "cpu v=\"bad\" 3\n", "cpu v=4 4\n"] {
        assert_eq!(write(&p, "db=x", body).status, 204);
    }
    t.set("b", Behaviour::RefuseContaining("bad"));
    let before = t.attempts("b");
    let steps = drain(&p, 1);
    assert_eq!(steps.last(), Some(&ReplayStep::Idle), "{steps:?}");
    assert_eq!(p.queue_depth(1).records, 0);
    // The batch was tried as one request, then its records one by one.
    let tried: Vec<String> =
        t.0.borrow()
            .attempts
            .get("b")
            .map(|a| {
                a[before..]
                    .iter()
                    .filter(|r| r.path == "/write")
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                    .collect()
            })
            .unwrap_or_default();
    assert_eq!(tried.first().map(String::as_str), Some("cpu v=1 1\ncpu v=2 2\ncpu v=\"bad\" 3\ncpu v=4 4\n"));
    assert_eq!(t.writes("b").concat(), "cpu v=1 1\ncpu v=2 2\ncpu v=4 4\n");
    let dead = dead_letter_file(&p.storage, "b");
    assert_eq!(dead.lines().count(), 1, "{dead}");
    let line: serde_json::Value = serde_json::from_str(dead.trim()).unwrap();
    assert_eq!(line["body"], "cpu v=\"bad\" 3\n");
    assert!(line["reason"].as_str().unwrap_or_default().contains("field type conflict"), "{line}");
    let v = health_of(&p, T0);
    assert_eq!(v["backends"][1]["dead_letters"], 1);
    let text = metrics_of(&p, T0);
    assert!(text.contains("influx_proxy_replayed_records_total{backend=\"b\"} 3"), "{text}");
    assert!(text.contains("influx_proxy_points_written_total{backend=\"b\"} 3"), "{text}");
}

#[test]
fn a_crash_between_sending_a_replay_batch_and_its_ack_delivers_it_again_whole() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    for body in ["cpu v=1 1\n", "cpu v=2 2\n", "cpu v=3 3\n"] {
        assert_eq!(write(&p, "db=x", body).status, 204);
    }
    t.set("b", Behaviour::Up);
    // The backend takes the batch; the acknowledgement cannot be written.
    p.storage.fail_appends(true);
    assert!(matches!(run(p.replay_step(1, T0)), ReplayStep::RetryAfter(_)));
    assert_eq!(t.writes("b"), vec!["cpu v=1 1\ncpu v=2 2\ncpu v=3 3\n"]);
    assert_eq!(p.queue_depth(1).records, 3, "nothing removed without its ack");
    // The crash: a new proxy on what is on disk.
    let t2 = MockTransport::default();
    let p2 = open(&t2, MemStorage::from_snapshot(p.storage.snapshot()), "");
    assert_eq!(p2.queue_depth(1).records, 3);
    assert_eq!(drain(&p2, 1), vec![ReplayStep::Progress, ReplayStep::Idle]);
    assert_eq!(t2.writes("b"), t.writes("b"), "the same points again: idempotent, nothing lost");
    assert_eq!(p2.queue_depth(1).records, 0);
}

mod api_v3;
mod auth;
mod batches;
mod forward;
mod gzip;
mod moves;
mod partial;
mod prepared;
mod reload;
mod shard_groups;
