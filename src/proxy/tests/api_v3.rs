//! The InfluxDB 3 API ([`crate::api_v3`]) over the proxy's write and query
//! paths, with mock backends: what each backend is sent, what is queued,
//! what the client hears.

use super::*;

fn v3(
    proxy: &Proxy<MockTransport, MemStorage>,
    method: Method,
    path_and_query: &str,
    body: &str,
) -> Response {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut request = Request::new(method, path);
    request.query = crate::http::decode_params(query);
    request.body = body.as_bytes().to_vec();
    run(proxy.handle(request, 1_700_000_000_000))
}

fn writes_of(t: &MockTransport, backend: &str) -> Vec<Request> {
    t.received(backend).into_iter().filter(|r| r.path == "/write").collect()
}

#[test]
fn write_lp_sends_auto_precision_points_in_ns_to_every_replica() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let r =
        v3(&p, Method::Post, "/api/v3/write_lp?db=x", "cpu v=1 1708976567\ncpu v=2 1708976568000\ncpu v=3\n");
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    for backend in ["a", "b"] {
        let writes = writes_of(&t, backend);
        assert_eq!(writes.len(), 1, "{backend}");
        assert_eq!(writes[0].param("db"), Some("x"));
        assert_eq!(writes[0].param("precision"), None, "ns: no precision sent");
        assert_eq!(
            String::from_utf8_lossy(&writes[0].body),
            "cpu v=1 1708976567000000000\ncpu v=2 1708976568000000000\ncpu v=3 1700000000000000000\n"
        );
    }
    // An explicit unit goes as the 1.x precision, the lines unchanged.
    let r = v3(&p, Method::Post, "/api/v3/write_lp?db=x&precision=microsecond", "mem v=1 5\n");
    assert_eq!(r.status, 204);
    let last = writes_of(&t, "a").pop().unwrap();
    assert_eq!((last.param("precision"), &last.body[..]), (Some("u"), &b"mem v=1 5\n"[..]));
}

#[test]
fn write_lp_no_sync_queues_for_every_backend_and_sends_nothing_before_answering() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let r = v3(&p, Method::Post, "/api/v3/write_lp?db=x&no_sync=true", "cpu v=1 1708976567\n");
    assert_eq!(r.status, 204);
    assert!(writes_of(&t, "a").is_empty() && writes_of(&t, "b").is_empty(), "nothing sent before the answer");
    assert_eq!(p.queue_depth(0).records, 1);
    assert_eq!(p.queue_depth(1).records, 1);
    drain(&p, 0);
    drain(&p, 1);
    for backend in ["a", "b"] {
        assert_eq!(t.writes(backend), ["cpu v=1 1708976567000000000\n"], "{backend} after replay");
    }
    assert_eq!(p.queue_depth(0).records + p.queue_depth(1).records, 0);
    // Without no_sync the same write goes directly.
    let r = v3(&p, Method::Post, "/api/v3/write_lp?db=x", "cpu v=2 1708976568\n");
    assert_eq!(r.status, 204);
    assert_eq!(p.queue_depth(0).records, 0);
    assert_eq!(t.writes("a").len(), 2);
}

#[test]
fn write_lp_accept_partial_false_sends_nothing() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let r = v3(&p, Method::Post, "/api/v3/write_lp?db=x&accept_partial=false", "cpu v=1 1\ncpu v=\n");
    assert_eq!(r.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], "line protocol parsing error");
    assert_eq!(v["data"]["line_number"], 2);
    assert!(t.received("a").is_empty() && t.received("b").is_empty());
    // Default: the valid line is written, the answer lists the bad one.
    let r = v3(&p, Method::Post, "/api/v3/write_lp?db=x", "cpu v=1 1\ncpu v=\n");
    assert_eq!(r.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], "partial write of line protocol occurred");
    assert_eq!(v["data"][0]["original_line"], "cpu v=");
    assert_eq!(t.writes("b"), ["cpu v=1 1000000000\n"]);
    let r = v3(&p, Method::Post, "/api/v3/write_lp?db=x&no_sync=maybe", "cpu v=1 1\n");
    assert_eq!(r.status, 400);
}

#[test]
fn write_lp_to_a_missing_database_creates_it_and_writes_again() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::WriteStatus(404, r#"{"error":"database not found: \"x\""}"#));
    let r = v3(&p, Method::Post, "/api/v3/write_lp?db=x", "cpu v=1 1\n");
    // b keeps refusing (a mock): its refusal is the answer, after one CREATE and a second attempt.
    assert_eq!(r.status, 404);
    assert_eq!(t.statements("a"), ["CREATE DATABASE \"x\""]);
    assert_eq!(t.statements("b"), ["CREATE DATABASE \"x\""]);
    assert_eq!(t.attempts("b"), 3, "write, CREATE, write");
    assert_eq!(t.writes("a").len(), 2);
}

#[test]
fn query_influxql_answers_rows_and_sql_and_parquet_are_501() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let answer =
        r#"{"results":[{"series":[{"name":"cpu","columns":["time","v"],"values":[[1000000000,1]]}]}]}"#;
    t.answer("a", answer);
    t.answer("b", answer);
    let r = v3(&p, Method::Get, "/api/v3/query_influxql?db=x&q=SELECT+v+FROM+cpu&format=jsonl", "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/jsonl"));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "{\"iox::measurement\":\"cpu\",\"time\":\"1970-01-01T00:00:01\",\"v\":1}\n"
    );
    // The backend was asked for ns epochs.
    let asked = t.received("a").into_iter().chain(t.received("b")).find(|r| r.path == "/query").unwrap();
    let form = crate::http::decode_params(&String::from_utf8_lossy(&asked.body));
    assert!(form.contains(&("epoch".into(), "ns".into())), "{form:?}");
    let r = v3(
        &p,
        Method::Post,
        "/api/v3/query_influxql",
        r#"{"db":"x","q":"SELECT v FROM cpu","format":"parquet"}"#,
    );
    assert_eq!(r.status, 501);
    let r = v3(&p, Method::Post, "/api/v3/query_sql", r#"{"db":"x","q":"SELECT 1"}"#);
    assert_eq!(r.status, 501);
    assert!(error_of(&r).contains("SQL"), "{}", error_of(&r));
    let r = v3(&p, Method::Post, "/api/v3/query_influxql", "not json");
    assert_eq!(r.status, 400);
}

#[test]
fn configure_database_fans_out_create_and_drop_and_queues_for_a_down_backend() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    let r = v3(&p, Method::Post, "/api/v3/configure/database", r#"{"db":"new"}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(t.statements("a"), ["CREATE DATABASE \"new\""]);
    assert_eq!(p.queue_depth(1).records, 1, "queued for b");
    let r = v3(&p, Method::Delete, "/api/v3/configure/database?db=new", "");
    assert_eq!(r.status, 200);
    assert_eq!(t.statements("a"), ["CREATE DATABASE \"new\"", "DROP DATABASE \"new\""]);
    assert_eq!(p.queue_depth(1).records, 2);
    let r = v3(&p, Method::Delete, "/api/v3/configure/database", "");
    assert_eq!(r.status, 400);
    let r = v3(&p, Method::Head, "/api/v3/configure/database", "");
    assert_eq!(r.status, 405);
}

#[test]
fn write_lp_forwards_a_body_that_needs_no_change_as_it_came() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    // ns timestamps (auto reads them as ns): the client's gzip bytes go on.
    let lines = "cpu v=1 1708976567000000000\ncpu v=2 1708976568000000000\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, lines.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let mut request = Request::new(Method::Post, "/api/v3/write_lp");
    request.query = crate::http::decode_params("db=x");
    request.headers.push(("content-encoding".into(), "gzip".into()));
    request.body = gz.clone();
    // Validated ahead by the host, as the native host does on its workers.
    let job = p.write_body_job(&mut request).expect("a write_lp body job");
    let r = run(p.handle_prepared(request, Some(job.run()), 1_700_000_000_000));
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    for backend in ["a", "b"] {
        let sent = writes_of(&t, backend);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].header("content-encoding"), Some("gzip"), "{backend}");
        assert_eq!(sent[0].body, gz, "the client's bytes on {backend}");
    }
    assert_eq!(t.writes("a"), [lines]);
}
