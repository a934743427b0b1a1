//! Issue 8, "every core": a write body validated ahead of the proxy
//! ([`Proxy::write_body_job`], run on another thread, then
//! [`Proxy::handle_prepared`]) gets exactly the answer, and the backends
//! exactly the requests (and the write queues exactly the records), that the
//! same request gets when the proxy validates it inline ([`Proxy::handle`]).

use super::*;

/// `bytes` gzip-compressed.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, bytes).unwrap();
    gz.finish().unwrap()
}

/// One request of the table and what it must be answered.
struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    query: &'static str,
    gzip: Option<&'static str>,
    body: Vec<u8>,
    /// Keymaps without `_default_` ([`open_without_default`]).
    no_default: bool,
    /// Config keys added (`, "key": value`).
    extra: &'static str,
    b_down: bool,
    status: u16,
    /// How the error text starts (as the proxy answered before bodies were
    /// validated ahead), `""` for a 204.
    error: &'static str,
}

fn case(name: &'static str, body: &[u8], status: u16) -> Case {
    Case {
        name,
        method: Method::Post,
        path: "/write",
        query: "db=x",
        gzip: None,
        body: body.to_vec(),
        no_default: false,
        extra: "",
        b_down: false,
        status,
        error: "",
    }
}

/// A case answered `status` with an error text starting with `error`.
fn fails(name: &'static str, body: &[u8], status: u16, error: &'static str) -> Case {
    Case { error, ..case(name, body, status) }
}

/// What a user and the backends see of one request: the answer, every
/// request each backend got, and each backend's write queue afterwards (its
/// records, drained in order once the backend is up).
type Seen = (Response, Vec<Request>, Vec<Request>, Vec<Vec<Request>>);

fn serve(c: &Case, prepared: bool) -> Seen {
    let t = MockTransport::default();
    let p =
        if c.no_default { open_without_default(&t, c.extra) } else { open(&t, MemStorage::new(), c.extra) };
    if c.b_down {
        t.set("b", Behaviour::Down);
    }
    let mut request = Request::new(c.method, c.path);
    request.query = crate::http::decode_params(c.query);
    if let Some(encoding) = c.gzip {
        request.headers.push(("content-encoding".into(), encoding.into()));
    }
    request.body = c.body.clone();
    let response = if prepared {
        // Validated on another thread, as the native host does.
        let job = p.write_body_job(&mut request);
        let body = job.map(|job| std::thread::spawn(move || job.run()).join().unwrap());
        run(p.handle_prepared(request, body, 1_700_000_000_000))
    } else {
        run(p.handle(request, 1_700_000_000_000))
    };
    let (a, b) = (t.received("a"), t.received("b"));
    // The queues' records, as replay delivers them to the backends once up.
    let mut replayed = Vec::new();
    for backend in ["a", "b"] {
        t.set(backend, Behaviour::Up);
        let before = t.received(backend).len();
        drain(&p, p.topology().index_of(backend).unwrap());
        replayed.push(t.received(backend)[before..].to_vec());
    }
    (response, a, b, replayed)
}

#[test]
fn a_body_validated_on_another_thread_gets_the_same_answer_and_backend_requests_as_inline() {
    let timestamped = b"cpu,host=a v=1 1700000000000000000\ncpu,host=b v=2 1700000000000000001".to_vec();
    let many: String = (0..300).map(|i| format!("cpu,host=h{i} v={i} {i}\n")).collect();
    let cases = vec![
        case("timestamped, one replica set: forwarded as sent", &timestamped, 204),
        Case {
            gzip: Some("gzip"),
            ..case("gzip, one replica set: forwarded compressed", &gzip(&timestamped), 204)
        },
        Case {
            gzip: Some("gzip"),
            extra: r#", "backend_max_body_bytes": 1000"#,
            ..case(
                "gzip over backend_max_body_bytes: batches of the decoded body",
                &gzip(many.as_bytes()),
                204,
            )
        },
        Case {
            extra: r#", "backend_max_body_bytes": 1000"#,
            ..case("plain over backend_max_body_bytes: batches", many.as_bytes(), 204)
        },
        case("comments, blank lines, CRLF, blanks", b"# c\n\ncpu v=1 1\r\n  mem v=2 2 \t\n\n# end", 204),
        case("no timestamps: stamped", b"cpu v=1\nmem v=2\ncpu.load v=3 3\n", 204),
        case("escaped measurements", b"cpu\\,x v=1 1\ncpu\\ y,t=1 v=2 2\nc\\pu v=3\n", 204),
        case("several replica sets", b"cpu v=1 1\nmem v=2 2\ncpu.load v=3 3\ncpu v=4 4\n", 204),
        case("a string field spanning lines", b"cpu s=\"a\nb\" 1\nmem v=1 2\n", 204),
        case("empty body", b"", 204),
        fails(
            "a malformed line: a partial write",
            b"cpu v=1\ncpu\n",
            400,
            "partial write: unable to parse 'cpu': missing fields dropped=0",
        ),
        Case {
            extra: r#", "partial_writes": false"#,
            ..fails(
                "a malformed line, partial_writes off",
                b"cpu v=1\ncpu\n",
                400,
                "unable to parse 'cpu': missing fields (line 2)",
            )
        },
        fails("bad field value", b"cpu v=1 1\ncpu v=x 2\n", 400, "partial write: unable to parse 'cpu v=x 2': "),
        fails(
            "bad lines among good ones, timestamped",
            b"cpu v=1 1\ncpu v=x 2\nmem v=3 3\n cpu,t\n\ncpu v=4 4",
            400,
            "partial write: unable to parse 'cpu v=x 2': invalid boolean\nunable to parse 'cpu,t': missing tag value dropped=0",
        ),
        fails(
            "only bad lines: nothing stored",
            b"cpu\nmem v=\n",
            400,
            "unable to parse 'cpu': missing fields\nunable to parse 'mem v=': missing field value",
        ),
        fails(
            "not UTF-8",
            b"cpu v=1\ncpu s=\"\xff\"",
            400,
            "unable to parse body: not valid UTF-8 at byte 15",
        ),
        Case { gzip: Some("gzip"), ..fails("bad gzip", b"not gzip", 400, "unable to decode gzip body: ") },
        Case {
            gzip: Some("br"),
            ..fails("unsupported encoding", b"cpu v=1", 400, "unsupported Content-Encoding \"br\" (use gzip)")
        },
        Case {
            gzip: Some("gzip"),
            extra: r#", "max_body_bytes": 1000"#,
            ..fails(
                "gzip over max_body_bytes after decoding",
                &gzip(many.as_bytes()),
                413,
                "request body too large: over 1000 bytes after gzip decoding",
            )
        },
        Case {
            no_default: true,
            ..fails(
                "no route: a partial write",
                b"cpu v=1\nnope v=1\nmem v=2 2\nnope v=3 3\n",
                400,
                "partial write: no route for measurement \"nope\" (line 2): add a keymap or \"_default_\" dropped=2",
            )
        },
        Case {
            no_default: true,
            extra: r#", "partial_writes": false"#,
            ..fails("no route, partial_writes off", b"cpu v=1\nnope v=1\n", 400, "no route for measurement \"nope\" (line 2)")
        },
        Case {
            no_default: true,
            ..fails("nothing routed", b"nope v=1\nnope v=2\n", 400, "no route for measurement \"nope\" (line 1)")
        },
        Case {
            no_default: true,
            ..fails(
                "no route before a bad line",
                b"nope v=1\nbad\n",
                400,
                "no route for measurement \"nope\" (line 1)",
            )
        },
        Case {
            no_default: true,
            ..fails("a bad line before no route", b"bad\nnope v=1\n", 400, "unable to parse 'bad': ")
        },
        Case { query: "rp=r", ..fails("missing database", b"cpu v=1", 400, "database is required") },
        Case { query: "db=x&precision=y", ..fails("bad precision", b"cpu v=1", 400, "") },
        Case { method: Method::Get, ..fails("wrong method", b"cpu v=1", 405, "") },
        Case { b_down: true, ..case("b down: queued", b"cpu v=1\nmem v=2 2\ncpu v=3 3\n", 204) },
        Case { b_down: true, ..case("b down, as sent: queued", &timestamped, 204) },
        Case {
            path: "/api/v2/write",
            query: "bucket=x/r&org=o&precision=s",
            ..case("the 2.x API", b"cpu v=1\ncpu v=2 2\n", 204)
        },
    ];
    for c in &cases {
        let inline = serve(c, false);
        let prepared = serve(c, true);
        assert_eq!(inline.0.status, c.status, "{}: {:?}", c.name, String::from_utf8_lossy(&inline.0.body));
        assert!(error_of(&inline.0).starts_with(c.error), "{}: {:?}", c.name, error_of(&inline.0));
        assert_eq!(prepared.0, inline.0, "{}: the answer", c.name);
        assert_eq!(prepared.1, inline.1, "{}: the requests a got", c.name);
        assert_eq!(prepared.2, inline.2, "{}: the requests b got", c.name);
        assert_eq!(prepared.3, inline.3, "{}: the queued records", c.name);
        if c.error.starts_with("partial write:") {
            assert!(!inline.1.is_empty() || !inline.2.is_empty(), "{}: the valid points were sent", c.name);
        } else if c.status >= 400 {
            let queued = inline.3.iter().map(Vec::len).sum::<usize>();
            assert_eq!((inline.1.len(), inline.2.len(), queued), (0, 0, 0), "{}: nothing written", c.name);
        }
        if c.status == 204 && !c.body.is_empty() {
            assert!(!inline.1.is_empty() || !inline.2.is_empty(), "{}: something was sent", c.name);
        }
        if c.b_down {
            assert!(!inline.3[1].is_empty(), "{}: b's queue held the write", c.name);
        }
    }
}

/// A host that took a write's body and validated it under a
/// `max_body_bytes` a reload has since changed: the request is judged by
/// the configuration it is served with, as if validated inline.
#[test]
fn a_body_prepared_before_a_reload_changed_max_body_bytes_is_judged_by_the_new_limit() {
    let t = MockTransport::default();
    let p = open(&t, MemStorage::new(), r#", "max_body_bytes": 100000"#);
    let many: String = (0..300).map(|i| format!("cpu,host=h{i} v={i} {i}\n")).collect();
    let mut request = Request::new(Method::Post, "/write");
    request.query = crate::http::decode_params("db=x");
    request.headers.push(("content-encoding".into(), "gzip".into()));
    request.body = gzip(many.as_bytes());
    let prepared = p.write_body_job(&mut request).map(|job| job.run());
    let smaller = Proxy::open(config(r#", "max_body_bytes": 1000"#), t.clone(), MemStorage::new());
    let smaller = run(smaller).unwrap();
    let response = run(smaller.handle_prepared(request, prepared, 1_700_000_000_000));
    assert_eq!(response.status, 413, "{:?}", String::from_utf8_lossy(&response.body));
    assert!(t.received("a").is_empty());
}
