//! Issue 8 on the write path: a body whose points all have a timestamp and
//! all go to one replica set is forwarded as the client sent it (a gzip
//! body compressed as it came), one shared buffer for every replica; other
//! bodies are still split and stamped point by point.

use super::*;

/// `body` gzip-compressed.
fn gzip(body: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, body).unwrap();
    gz.finish().unwrap()
}

/// `bytes` gunzipped.
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(bytes), &mut out).unwrap();
    out
}

/// `POST /write?<query>` with a gzip body `compressed`.
fn write_gzip(proxy: &Proxy<MockTransport, MemStorage>, query: &str, compressed: Vec<u8>) -> Response {
    let mut request = Request::new(Method::Post, "/write");
    request.query = crate::http::decode_params(query);
    request.headers.push(("content-encoding".into(), "gzip".into()));
    request.body = compressed;
    run(proxy.handle(request, 1_700_000_000_000))
}

/// The `/write` requests `backend` answered.
fn write_requests(t: &MockTransport, backend: &str) -> Vec<Request> {
    t.received(backend).into_iter().filter(|r| r.path == "/write").collect()
}

#[test]
fn a_timestamped_body_for_one_replica_set_reaches_every_replica_byte_identical() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    // `_default_` is [a, b]; the last line has no line ending: sent as it came.
    let body = "disk,host=a used=1i 1700000000000000000\ndisk,host=b used=2i,free=3u 1700000000000000001\n\
                swap in=1.5,out=t 1700000000000000002";
    assert_eq!(write(&p, "db=x&precision=ns", body).status, 204);
    for backend in ["a", "b"] {
        let got = write_requests(&t, backend);
        assert_eq!(got.len(), 1, "one request on {backend}");
        assert_eq!(got[0].body, body.as_bytes(), "bytes on {backend}");
        assert_eq!(got[0].header("content-encoding"), None, "plain on {backend}");
        assert_eq!(got[0].param("db"), Some("x"));
    }
}

#[test]
fn a_timestamped_gzip_body_for_one_replica_set_is_forwarded_compressed_as_it_came() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let lines = "cpu,host=a v=1 1\ncpu,host=b v=2 2\ncpu,host=c v=3 3\n";
    let compressed = gzip(lines.as_bytes());
    assert_eq!(write_gzip(&p, "db=x", compressed.clone()).status, 204);
    for backend in ["a", "b"] {
        let got = write_requests(&t, backend);
        assert_eq!(got.len(), 1, "one request on {backend}");
        assert_eq!(got[0].body, compressed, "the client's gzip bytes on {backend}");
        assert_eq!(got[0].header("content-encoding"), Some("gzip"), "on {backend}");
        assert_eq!(gunzip(&got[0].body), lines.as_bytes());
    }
}

#[test]
fn a_gzip_body_with_a_point_lacking_a_timestamp_is_decoded_and_stamped() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let compressed = gzip(b"cpu v=1 1\ncpu v=2\n");
    assert_eq!(write_gzip(&p, "db=x&precision=ms", compressed).status, 204);
    for backend in ["a", "b"] {
        let got = write_requests(&t, backend);
        assert_eq!(got.len(), 1, "one request on {backend}");
        assert_eq!(got[0].header("content-encoding"), None, "decoded on {backend}");
        assert_eq!(String::from_utf8_lossy(&got[0].body), "cpu v=1 1\ncpu v=2 1700000000000\n");
    }
}

#[test]
fn a_gzip_body_spanning_two_replica_sets_is_decoded_and_split() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    // cpu -> [a, b], mem -> [a], cpu.load -> [b].
    let compressed = gzip(b"cpu v=1 1\nmem v=2 2\ncpu.load v=3 3\n");
    assert_eq!(write_gzip(&p, "db=x", compressed).status, 204);
    assert_eq!(t.writes("a"), ["cpu v=1 1\nmem v=2 2\n"]);
    assert_eq!(t.writes("b"), ["cpu v=1 1\ncpu.load v=3 3\n"]);
    for backend in ["a", "b"] {
        assert!(write_requests(&t, backend).iter().all(|r| r.header("content-encoding").is_none()));
    }
}

#[test]
fn a_body_with_comments_or_crlf_is_sent_as_points_not_as_it_came() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    assert_eq!(write(&p, "db=x", "# c\ncpu v=1 1\r\n  cpu v=2 2  \n\ncpu v=3 3").status, 204);
    assert_eq!(t.writes("a"), ["cpu v=1 1\ncpu v=2 2\ncpu v=3 3\n"]);
    assert_eq!(t.writes("b"), t.writes("a"));
}

#[test]
fn a_forwarded_body_over_backend_max_body_bytes_goes_in_batches_of_whole_points() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "backend_max_body_bytes": 20"#);
    let body = "cpu v=1 1\ncpu v=2 2\ncpu v=3 3\ncpu v=4 4\ncpu v=5 5";
    assert_eq!(write(&p, "db=x", body).status, 204);
    assert_eq!(t.writes("a"), ["cpu v=1 1\ncpu v=2 2\n", "cpu v=3 3\ncpu v=4 4\n", "cpu v=5 5"]);
    assert_eq!(t.writes("b"), t.writes("a"));
    // A gzip body that decodes to more than the limit is sent decoded, in
    // the same batches (cut from the decoded body).
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "backend_max_body_bytes": 20"#);
    assert_eq!(write_gzip(&p, "db=x", gzip(body.as_bytes())).status, 204);
    assert_eq!(t.writes("a"), ["cpu v=1 1\ncpu v=2 2\n", "cpu v=3 3\ncpu v=4 4\n", "cpu v=5 5"]);
    assert!(write_requests(&t, "a").iter().all(|r| r.header("content-encoding").is_none()));
}

#[test]
fn a_forwarded_gzip_body_refused_with_413_is_sent_decoded_in_halves() {
    let t = MockTransport::default();
    // Over 20 bytes is refused: the gzip body (about 40 bytes), then the
    // decoded body's halves (20 bytes each) are taken.
    t.set("a", Behaviour::MaxBody(20));
    let p = open(&t, MemStorage::new(), "");
    let lines = "cpu v=1 1\ncpu v=2 2\ncpu v=3 3\ncpu v=4 4\n";
    let compressed = gzip(lines.as_bytes());
    assert!(compressed.len() > 20);
    assert_eq!(write_gzip(&p, "db=x", compressed.clone()).status, 204);
    assert_eq!(t.writes("a"), ["cpu v=1 1\ncpu v=2 2\n", "cpu v=3 3\ncpu v=4 4\n"]);
    assert!(write_requests(&t, "a").iter().all(|r| r.header("content-encoding").is_none()));
    let b = write_requests(&t, "b");
    assert_eq!((b.len(), &b[0].body), (1, &compressed), "b took the gzip body as it came");
    assert_eq!(p.queue_depth(0).records, 0);
}

#[test]
fn a_queued_forwarded_body_replays_as_the_points_it_holds() {
    let t = MockTransport::default();
    t.set("b", Behaviour::Down);
    let p = open(&t, MemStorage::new(), "");
    let lines = "cpu v=1 1\ncpu v=2 2\n";
    let compressed = gzip(lines.as_bytes());
    assert_eq!(write_gzip(&p, "db=x&precision=s", compressed.clone()).status, 204);
    assert_eq!(write(&p, "db=x&precision=s", "cpu v=3 3\ncpu v=4 4").status, 204);
    assert_eq!(write_requests(&t, "a")[0].body, compressed);
    assert_eq!(write_requests(&t, "a")[1].body, b"cpu v=3 3\ncpu v=4 4");
    assert_eq!(p.queue_depth(1).records, 2);
    t.set("b", Behaviour::Up);
    drain(&p, 1);
    assert_eq!(p.queue_depth(1).records, 0);
    let replayed = write_requests(&t, "b");
    let bodies: Vec<String> =
        replayed.iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
    // Both records (same db, rp, precision, credentials) in one replayed
    // request, in queue order, decoded.
    assert_eq!(bodies, ["cpu v=1 1\ncpu v=2 2\ncpu v=3 3\ncpu v=4 4\n"]);
    for r in &replayed {
        assert_eq!(
            (r.header("content-encoding"), r.param("db"), r.param("precision")),
            (None, Some("x"), Some("s"))
        );
    }
}

/// A mock backend in front of [`MockTransport`]: a `/write` body over
/// `max` bytes is answered 413 (as InfluxDB over its `max-body-size`), one
/// holding `breaks_on` breaks the connection.
struct Flaky {
    inner: MockTransport,
    max: usize,
    breaks_on: &'static str,
    /// Whether `breaks_on` still breaks.
    breaking: Rc<std::cell::Cell<bool>>,
}

impl Transport for Flaky {
    async fn send(&self, backend: &BackendAddr, request: Request) -> Result<Response, TransportError> {
        if request.path == "/write" && backend.name == "a" {
            if request.body.len() > self.max {
                return Ok(Response::json(413, br#"{"error":"Request Entity Too Large"}"#.to_vec()));
            }
            if self.breaking.get() && String::from_utf8_lossy(&request.body).contains(self.breaks_on) {
                return Err(TransportError::Io("Broken pipe (os error 32)".into()));
            }
        }
        self.inner.send(backend, request).await
    }
}

#[test]
fn a_forwarded_gzip_body_whose_second_half_fails_after_413_queues_that_half_decoded() {
    let t = MockTransport::default();
    let breaking = Rc::new(std::cell::Cell::new(true));
    let flaky = Flaky { inner: t.clone(), max: 20, breaks_on: "v=3", breaking: breaking.clone() };
    let p = match run(Proxy::open(config(""), flaky, MemStorage::new())) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let lines = "cpu v=1 1\ncpu v=2 2\ncpu v=3 3\ncpu v=4 4\n";
    let mut request = Request::new(Method::Post, "/write");
    request.query = crate::http::decode_params("db=x");
    request.headers.push(("content-encoding".into(), "gzip".into()));
    request.body = gzip(lines.as_bytes());
    assert!(request.body.len() > 20);
    // a: the gzip body refused (413), its first half taken, the second
    // half's connection broken: that half is queued, the write kept.
    assert_eq!(run(p.handle(request, 1_700_000_000_000)).status, 204);
    assert_eq!(t.writes("a"), ["cpu v=1 1\ncpu v=2 2\n"]);
    assert_eq!(p.queue_depth(0).records, 1);
    assert_eq!(t.writes("b"), [lines]);
    // Replayed once the backend takes it: the half it had not acknowledged.
    breaking.set(false);
    assert_eq!(run(p.replay_step(0, 1_700_000_000_000)), ReplayStep::Progress);
    assert_eq!(p.queue_depth(0).records, 0);
    assert_eq!(t.writes("a"), ["cpu v=1 1\ncpu v=2 2\n", "cpu v=3 3\ncpu v=4 4\n"]);
}

/// InfluxDB 1.x decodes a body only for `Content-Encoding: gzip` exactly
/// (services/httpd/handler.go); `GZIP` there is read as line protocol and
/// refused. The proxy refuses it too, and nothing reaches a backend.
#[test]
fn content_encoding_is_gzip_exactly_as_influxdb_compares_it() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    for spelling in ["GZIP", "Gzip"] {
        let mut request = Request::new(Method::Post, "/write");
        request.query = crate::http::decode_params("db=x");
        request.headers.push(("content-encoding".into(), spelling.into()));
        request.body = gzip(b"cpu v=1 1\n");
        let r = run(p.handle(request, 1_700_000_000_000));
        assert_eq!(r.status, 400, "{spelling}");
        assert!(String::from_utf8_lossy(&r.body).contains("unsupported Content-Encoding"), "{spelling}");
    }
    assert!(write_requests(&t, "a").is_empty() && write_requests(&t, "b").is_empty());
    assert_eq!(write_gzip(&p, "db=x", gzip(b"cpu v=1 1\n")).status, 204);
}

/// With a keymap of `_default_` alone no point is routed one by one (the
/// counts taken during validation stand for that pass): every request gets
/// exactly the answer, the backend requests (answered or not) and the
/// metrics it gets when each point is routed (a keymap with one more key,
/// which none of these measurements match), whatever its body: as sent or
/// rebuilt, stamped or not, with comments, `\r\n`, blanks around lines,
/// malformed lines (partial writes on and off), empty, gzip; of the size of
/// `backend_max_body_bytes`, one byte over it, or cut into many batches;
/// through `/write` and `/api/v2/write`, at another precision; with b up,
/// down, refusing large bodies (413) or refusing a point (400).
#[test]
fn a_default_only_keymap_answers_and_sends_as_routing_each_point_does() {
    let long = |line: &dyn Fn(usize) -> String| -> String { (0..40).map(line).collect() };
    let stamped = |i: usize| format!("cpu,host=h{i} v={i} {i}\n");
    let unstamped = |i: usize| format!("cpu,host=h{i} v={i}\n");
    // 20 bytes: the size of the smallest limit below, and one byte over the other.
    let exact = "cpu v=1 1\nmem v=2 2\n".to_string();
    let bodies: Vec<String> = vec![
        "cpu,host=a v=1 1\ncpu,host=b v=2 2\n".into(),
        "cpu,host=a v=1 1\nmem v=2 2".into(),
        "cpu v=1\nmem v=2 5\n".into(),
        "# comment\ncpu v=1 1\n\ncpu v=2 2\r\n  mem v=3 3  \n".into(),
        "cpu v=1 1\nbad line\nmem v=2 2\n".into(),
        "bad line\nworse\n".into(),
        String::new(),
        "\n\n".into(),
        "m\\,x\\ y,t=1 v=1 1\nm\\,x\\ y,t=2 v=2\n".into(),
        long(&stamped),
        long(&unstamped),
        long(&|i| if i == 7 { "# c\n".into() } else { stamped(i) }),
        long(&|i| format!("cpu,host=h{i} v={i} {i}\r\n")),
        long(&|i| if i == 7 { "bad\n".into() } else { stamped(i) }),
        long(&|i| if i == 7 { "bad\n".into() } else { unstamped(i) }),
        long(&|i| if i % 2 == 0 { unstamped(i) } else { format!("  {}", stamped(i)) }),
        long(&stamped) + "\n",
        long(&|i| format!("m{} v={i} {i}\n", "x".repeat(i * 3))),
        exact.clone(),
        exact.trim_end().to_string(),
    ];
    let configs = [
        "",
        r#", "partial_writes": false"#,
        r#", "backend_max_body_bytes": 200"#,
        r#", "backend_max_body_bytes": 200, "partial_writes": false"#,
        r#", "backend_max_body_bytes": 20"#,
        r#", "backend_max_body_bytes": 19"#,
    ];
    let behaviours = [
        None,
        Some(Behaviour::Down),
        Some(Behaviour::MaxBody(100)),
        Some(Behaviour::RefuseContaining("h9 ")),
    ];
    let writes =
        [("/write", "db=x"), ("/write", "db=x&precision=s"), ("/api/v2/write", "bucket=x/rp&precision=ms")];
    for body in &bodies {
        for extra in configs {
            for b in &behaviours {
                for (path, query) in writes {
                    for gzipped in [false, true] {
                        let outcome = |keymaps: &str| {
                            let t = MockTransport::default();
                            if let Some(b) = b {
                                t.set("b", b.clone());
                            }
                            let p = match run(Proxy::open(
                                config_with(keymaps, extra),
                                t.clone(),
                                MemStorage::new(),
                            )) {
                                Ok(p) => p,
                                Err(e) => panic!("{e}"),
                            };
                            let mut request = Request::new(Method::Post, path);
                            request.query = crate::http::decode_params(query);
                            request.body = match gzipped {
                                true => {
                                    request.headers.push(("content-encoding".into(), "gzip".into()));
                                    gzip(body.as_bytes())
                                }
                                false => body.as_bytes().to_vec(),
                            };
                            let answer = run(p.handle(request, 1_700_000_000_000));
                            let sent = |backend: &str| -> Vec<(String, Vec<u8>, Option<String>)> {
                                t.attempted(backend)
                                    .into_iter()
                                    .filter(|r| r.path == "/write")
                                    .map(|r| {
                                        let encoding = r.header("content-encoding").map(str::to_string);
                                        (crate::http::encode_params(&r.query), r.body, encoding)
                                    })
                                    .collect()
                            };
                            let metrics =
                                run(p.handle(Request::new(Method::Get, "/metrics"), 1_700_000_000_000));
                            let mut metrics: Vec<String> = String::from_utf8_lossy(&metrics.body)
                                .lines()
                                .filter(|l| !l.starts_with('#') && !l.contains("seconds"))
                                .map(str::to_string)
                                .collect();
                            metrics.sort();
                            (answer.status, answer.body.clone(), sent("a"), sent("b"), metrics)
                        };
                        let fast = outcome(r#"{ "_default_": ["a", "b"] }"#);
                        let routed = outcome(r#"{ "unused": ["a"], "_default_": ["a", "b"] }"#);
                        assert!(
                            fast == routed,
                            "body {body:?}, config {extra:?}, b {b:?}, {path}?{query}, gzip {gzipped}"
                        );
                    }
                }
            }
        }
    }
}
