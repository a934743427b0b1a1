//! Checks of the integration test harness itself (tests/support): that it
//! starts, stops, kills and restarts real `influxd` servers, that its direct
//! writes and queries give exact answers, and that its loose readers of the
//! proxy's `/health` answers read what they claim. If these fail, the
//! scenarios in tests/proxy.rs cannot be trusted.

mod support;

use serde_json::json;
use support::*;

#[test]
fn influxd_keeps_its_data_across_stop_kill_and_restart() {
    let mut server = Influxd::start("h");
    let url = server.url();
    server.query_ok("", "CREATE DATABASE d");
    server.write("d", &lines("m", 100, T0));
    assert_eq!(server.count("d", "m"), 100);
    assert_eq!(server.count("d", "absent"), 0);
    assert_eq!(server.databases(), vec!["d"]);
    assert_eq!(server.measurements("d"), vec!["m"]);
    let (columns, rows) = server.rows("d", "m");
    assert_eq!(columns, json!(["time", "host", "v"]));
    assert_eq!(rows.len(), 100);
    assert_eq!(rows[99], json!([(T0 + 99) * 1_000_000_000, "h9", 99]));

    server.stop();
    assert!(!server.is_running());
    assert!(try_http("GET", &format!("{url}/ping"), &[], None).is_err(), "a stopped influxd still answers");
    server.restart();
    assert_eq!(server.url(), url, "restart keeps the port");
    assert_eq!(server.count("d", "m"), 100, "points after SIGTERM and restart");

    server.write("d", &lines("m", 50, T0 + 100));
    server.kill();
    assert!(try_http("GET", &format!("{url}/ping"), &[], None).is_err(), "a killed influxd still answers");
    server.restart();
    assert_eq!(server.count("d", "m"), 150, "points after SIGKILL and restart (WAL)");
}

#[test]
fn influxd_answers_raw_requests_and_errors() {
    let server = Influxd::start("r");
    let addr = server.url().trim_start_matches("http://").to_string();
    let (status, raw) = raw_http(
        &addr,
        format!("GET /ping HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes(),
    )
    .expect("raw GET /ping");
    assert_eq!(status, 204, "{raw}");
    let v = server.query("nodb", "SELECT * FROM m");
    assert!(query_error(&v).is_some_and(|e| e.contains("database not found")), "{v}");
    let resp = http("POST", &format!("{}/write", server.url()), &[], Some(b"m v=1".to_vec()));
    assert_eq!(resp.status, 400);
    assert_eq!(resp.error(), "database is required");
    let resp = http("GET", &format!("{}/query?q=SHOW%20DATABASES", server.url()), &[], None);
    assert_eq!(resp.status, 200);
    assert_eq!(first_column(&resp.json()), Vec::<String>::new(), "no _internal database (monitor store off)");
}

#[test]
fn health_readers_accept_object_and_array_shapes() {
    let as_object = json!({"status": "ok", "backends": {
        "a": {"healthy": true, "queue": {"records": 0, "bytes": 0}, "queue_max_bytes": 1073741824},
        "b": {"healthy": false, "queue": {"records": 2, "bytes": 180}, "dead_letters": 1},
    }});
    let a = health_backend(&as_object, "a").expect("a");
    let b = health_backend(&as_object, "b").expect("b");
    assert_eq!((is_healthy(a), queue_depth(a)), (Some(true), 0));
    assert_eq!((is_healthy(b), queue_depth(b)), (Some(false), 182));
    assert!(health_backend(&as_object, "c").is_none());

    let as_array = json!({"backends": [
        {"name": "a", "up": true, "queue_records": 0, "queue_bytes": 0},
        {"name": "b", "up": false, "queue_records": 3, "queue_bytes": 100},
    ]});
    let b = health_backend(&as_array, "b").expect("b");
    assert_eq!((is_healthy(b), queue_depth(b)), (Some(false), 103));
}

#[test]
fn answer_readers() {
    let v = json!({"results": [{"statement_id": 0, "series": [
        {"name": "m", "columns": ["time", "count_v", "count_w"], "values": [[0, 10, 7]]}
    ]}]});
    assert_eq!(count_of(&v), 10);
    assert_eq!(column(&v, "count_w"), vec![json!(7)]);
    assert_eq!(count_of(&json!({"results": [{"statement_id": 0}]})), 0);
    assert_eq!(
        query_error(&json!({"results": [{"statement_id": 0}, {"statement_id": 1, "error": "x"}]})),
        Some("x".into())
    );
    assert_eq!(query_error(&json!({"error": "y"})), Some("y".into()));
    assert_eq!(ident("a \"b\""), "\"a \\\"b\\\"\"");
    assert_eq!(lines("m", 2, 5), "m,host=h0 v=0 5\nm,host=h1 v=1 6\n");
}
