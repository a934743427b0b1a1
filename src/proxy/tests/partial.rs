//! Issue 9, item 2: partial writes as InfluxDB 1.x does them
//! (services/httpd/handler.go `serveWrite`): the valid points of a body
//! with malformed lines are written on every replica, the answer names the
//! bad lines; points one replica refuses are answered as that replica
//! answered them and counted in `/metrics`.

use super::*;

/// The line protocol bodies `backend` was sent to `/write`, joined.
fn written(t: &MockTransport, backend: &str) -> String {
    t.received(backend)
        .iter()
        .filter(|r| r.path == "/write")
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

#[test]
fn the_valid_points_go_to_every_replica_and_the_answer_names_the_bad_lines() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    // cpu on a and b, mem on a; the bad lines are never sent.
    let body = "cpu v=1 1\ncpu v=x 2\nmem v=3 3\n  cpu,t\r\ncpu v=4\n";
    let r = write(&p, "db=x", body);
    assert_eq!(r.status, 400);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "{\"error\":\"partial write: unable to parse 'cpu v=x 2': invalid boolean\\n\
         unable to parse 'cpu,t\\r': missing tag value dropped=0\"}\n"
    );
    // The point without a timestamp got the proxy's time, as a whole body would.
    assert_eq!(written(&t, "a"), "cpu v=1 1\nmem v=3 3\ncpu v=4 1700000000000000000\n");
    assert_eq!(written(&t, "b"), "cpu v=1 1\ncpu v=4 1700000000000000000\n");
}

#[test]
fn a_body_of_bad_lines_only_is_influxdbs_plain_error_and_nothing_is_sent() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    let r = write(&p, "db=x", "cpu\n# c\ncpu v=\"open\nmem v=1 1\n");
    assert_eq!(r.status, 400);
    // An unbalanced quote runs to the body's end, as InfluxDB's splitter reads it.
    assert_eq!(
        error_of(&r),
        "unable to parse 'cpu': missing fields\nunable to parse 'cpu v=\"open\nmem v=1 1': unbalanced quotes"
    );
    assert!(t.received("a").is_empty() && t.received("b").is_empty());
}

#[test]
fn bad_lines_are_not_forwarded_as_sent_and_a_down_replica_queues_only_the_good_points() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::Down);
    // Timestamped, one replica set: without the bad line it would be forwarded as it came.
    let r = write(&p, "db=x", "cpu v=1 1\ncpu v=2 2 x\ncpu v=3 3\n");
    assert_eq!(r.status, 400);
    assert!(error_of(&r).starts_with("partial write: unable to parse 'cpu v=2 2 x': "), "{}", error_of(&r));
    assert_eq!(written(&t, "a"), "cpu v=1 1\ncpu v=3 3\n");
    t.set("b", Behaviour::Up);
    drain(&p, 1);
    assert_eq!(written(&t, "b"), "cpu v=1 1\ncpu v=3 3\n");
}

#[test]
fn with_partial_writes_off_a_bad_line_writes_nothing() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "partial_writes": false"#);
    let r = write(&p, "db=x", "cpu v=1 1\ncpu v=x 2\nmem v=3 3\n");
    assert_eq!(
        (r.status, error_of(&r).as_str()),
        (400, "unable to parse 'cpu v=x 2': invalid boolean (line 2)")
    );
    assert!(t.received("a").is_empty() && t.received("b").is_empty());
    assert_eq!((p.queue_depth(0).records, p.queue_depth(1).records), (0, 0));
}

#[test]
fn points_with_no_route_are_dropped_points_of_a_partial_write() {
    let t = MockTransport::default();
    let p = open_without_default(&t, "");
    let r = write(&p, "db=x", "cpu v=1 1\nnope v=2 2\nnope v=3 3\nmem v=4 4\n");
    assert_eq!(r.status, 400);
    assert_eq!(
        error_of(&r),
        "partial write: no route for measurement \"nope\" (line 2): add a keymap or \"_default_\" dropped=2"
    );
    assert_eq!(written(&t, "a"), "cpu v=1 1\nmem v=4 4\n");
    assert_eq!(written(&t, "b"), "cpu v=1 1\n");
}

/// A field type conflict on one replica only: the client gets that
/// replica's answer as it sent it, its name in `X-Influx-Proxy-Backend`,
/// and `/metrics` counts the refused points.
#[test]
fn a_point_refused_by_one_replica_is_its_partial_write_answer_and_counted() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("b", Behaviour::RefuseContaining("conflict"));
    let r = write(&p, "db=x", "cpu v=1 1\ncpu v=\"conflict\" 2\n");
    assert_eq!(r.status, 400);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "{\"error\":\"partial write: field type conflict: input field \\\"v\\\" on measurement \\\"cpu\\\" \
         is type string, already exists as type float dropped=1\"}\n"
    );
    assert_eq!(r.header("x-influx-proxy-backend"), Some("b"));
    assert_eq!(written(&t, "a"), "cpu v=1 1\ncpu v=\"conflict\" 2\n");
    let metrics = metrics_of(&p, 0);
    assert!(metrics.contains("influx_proxy_points_refused_total{backend=\"b\"} 1\n"), "{metrics}");
    assert!(metrics.contains("influx_proxy_points_refused_total{backend=\"a\"} 0\n"), "{metrics}");
    // Nothing of it is queued: the backend's answer is final.
    assert_eq!((p.queue_depth(0).records, p.queue_depth(1).records), (0, 0));
}

#[test]
fn a_replicas_refusal_wins_over_the_proxys_own_partial_write() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), "");
    t.set("a", Behaviour::RefuseContaining("conflict"));
    let r = write(&p, "db=x", "cpu v=\"conflict\" 1\ncpu v=\n");
    assert_eq!(r.status, 400);
    assert!(error_of(&r).starts_with("partial write: field type conflict: "), "{}", error_of(&r));
    assert_eq!(r.header("x-influx-proxy-backend"), Some("a"));
    assert_eq!(written(&t, "b"), "cpu v=\"conflict\" 1\n");
}

/// A gzip body with a bad line: decoded, and its valid points sent as the
/// same body without the bad line (plain) would be; never the client's
/// gzip bytes as they came.
#[test]
fn a_gzip_body_with_a_bad_line_sends_what_the_valid_lines_alone_send() {
    let gz = |text: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let sent = |body: Vec<u8>| {
        let t = MockTransport::default();
        let p = open(&t, MemStorage::new(), "");
        let mut request = Request::new(Method::Post, "/write");
        request.query = vec![("db".into(), "x".into())];
        request.headers.push(("content-encoding".into(), "gzip".into()));
        request.body = body;
        let r = run(p.handle(request, 1_700_000_000_000));
        (r, t.received("a"), t.received("b"))
    };
    let (r, a, b) = sent(gz("cpu v=1 1\ncpu v=2 2 2\ncpu v=3 3\n"));
    assert_eq!(error_of(&r), "partial write: unable to parse 'cpu v=2 2 2': point is invalid dropped=0");
    let (valid, a_valid, b_valid) = sent(gz("cpu v=1 1\ncpu v=3 3\n"));
    assert_eq!(valid.status, 204);
    for (got, alone) in [(&a, &a_valid), (&b, &b_valid)] {
        assert_eq!(got.len(), 1);
        assert_eq!(String::from_utf8_lossy(&got[0].body), "cpu v=1 1\ncpu v=3 3\n");
        assert_eq!(got[0].header("content-encoding"), None, "decoded, not the client's gzip bytes");
        // The valid body alone is forwarded compressed, as it came.
        assert_eq!(alone[0].header("content-encoding"), Some("gzip"));
    }
}
