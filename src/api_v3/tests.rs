use super::*;
use crate::line_protocol::points_past_errors;

fn v1_lines(body: &str, precision: Precision) -> LineProtocolV1 {
    let mut points = Vec::new();
    let mut malformed = Vec::new();
    for p in points_past_errors(body) {
        match p {
            Ok(p) => points.push(p),
            Err(e) => malformed.push(e),
        }
    }
    to_v1_lines(points.into_iter(), &malformed, precision)
}

/// InfluxDB 3's own cases (influxdb3_types/src/write/tests.rs): the same
/// instant in s, ms, µs and ns is read as that instant.
#[test]
fn auto_precision_infers_the_unit_from_the_magnitude() {
    let ns = 1_708_976_567_000_000_000;
    for ts in [1_708_976_567, 1_708_976_567_000, 1_708_976_567_000_000, ns] {
        assert_eq!(Precision::Auto.to_nanos(ts), Some(ns), "{ts}");
        assert_eq!(Precision::Auto.to_nanos(-ts), Some(-ns), "-{ts}");
    }
    // Boundaries: |ts| / 1e9 < 5 is seconds, < 5,000 ms, < 5,000,000 µs.
    assert_eq!(Precision::Auto.to_nanos(4_999_999_999), Some(4_999_999_999_000_000_000));
    assert_eq!(Precision::Auto.to_nanos(5_000_000_000), Some(5_000_000_000_000_000));
    assert_eq!(Precision::Auto.to_nanos(0), Some(0));
    assert_eq!(Precision::Second.to_nanos(1_708_976_567_000), None, "overflows i64 ns");
    assert_eq!(Precision::Millisecond.to_nanos(5), Some(5_000_000));
}

#[test]
fn precision_names_are_influxdb_3_s() {
    for (s, p) in [
        ("auto", Precision::Auto),
        ("s", Precision::Second),
        ("second", Precision::Second),
        ("ms", Precision::Millisecond),
        ("millisecond", Precision::Millisecond),
        ("us", Precision::Microsecond),
        ("u", Precision::Microsecond),
        ("microsecond", Precision::Microsecond),
        ("ns", Precision::Nanosecond),
        ("n", Precision::Nanosecond),
        ("nanosecond", Precision::Nanosecond),
    ] {
        assert_eq!(Precision::parse(s), Ok(p), "{s}");
    }
    assert_eq!(Precision::parse("h"), Err("unrecognized precision unit: h".into()));
}

#[test]
fn a_body_mixing_units_is_sent_in_nanoseconds() {
    let lines =
        v1_lines("m v=1 1708976567\nm v=2 1708976568000\n\nm v=3\nm v=4 1708976569000000\n", Precision::Auto);
    assert_eq!(
        String::from_utf8(lines.body).unwrap(),
        "m v=1 1708976567000000000\nm v=2 1708976568000000000\nm v=3\nm v=4 1708976569000000000\n"
    );
    assert_eq!(lines.points, 4);
    assert!(lines.rejected.is_empty());
    // An explicit unit: lines as they came (the 1.x write gets `precision`).
    let lines = v1_lines("m v=1 1708976567\n", Precision::Second);
    assert_eq!(lines.body, b"m v=1 1708976567\n");
    assert_eq!(Precision::Second.v1(), Some("s"));
    assert_eq!(Precision::Microsecond.v1(), Some("u"));
}

#[test]
fn rejected_lines_have_influxdb_3_s_shape() {
    let lines = v1_lines("m v=1 1\nthis line is bad and quite long\nm v=\nm v=2 2\n", Precision::Auto);
    assert_eq!(lines.points, 2);
    assert_eq!(lines.rejected.iter().map(|e| e.line_number).collect::<Vec<_>>(), [2, 3]);
    let r = rejected_response(&lines.rejected, true);
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], "partial write of line protocol occurred");
    assert_eq!(v["data"][0]["line_number"], 2);
    // Cut to 20 bytes, as InfluxDB 3 serializes it.
    assert_eq!(v["data"][0]["original_line"], "this line is bad and");
    assert!(v["data"][0]["error_message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(v["data"][1]["original_line"], "m v=");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let r = rejected_response(&lines.rejected, false);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], "line protocol parsing error");
    assert_eq!(v["data"]["line_number"], 2, "one object, the first bad line: {v}");
}

#[test]
fn original_line_is_cut_at_a_character_boundary() {
    let e = WriteLineError {
        error_message: "x".into(), line_number: 1, original_line: "ééééééééééé".into()
    };
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["original_line"], "éééééééééé");
}

#[test]
fn timestamps_are_written_as_arrow_writes_them() {
    assert_eq!(timestamp(0), "1970-01-01T00:00:00");
    assert_eq!(timestamp(1_708_976_567_000_000_000), "2024-02-26T19:42:47");
    assert_eq!(timestamp(1_708_976_567_500_000_000), "2024-02-26T19:42:47.500");
    assert_eq!(timestamp(1_708_976_567_000_001_000), "2024-02-26T19:42:47.000001");
    assert_eq!(timestamp(1_708_976_567_000_000_001), "2024-02-26T19:42:47.000000001");
    assert_eq!(timestamp(-1), "1969-12-31T23:59:59.999999999");
    assert_eq!(timestamp(951_782_400_000_000_000), "2000-02-29T00:00:00");
}

fn v1_answer() -> Vec<u8> {
    br#"{"results":[{"statement_id":0,"series":[
        {"name":"cpu","tags":{"host":"a"},"columns":["time","usage","note"],"values":[[1708976567000000000,1.5,"x,y"],[1708976568000000000,2,null]]},
        {"name":"cpu","tags":{"host":"b"},"columns":["time","usage","note"],"values":[[1708976567000000000,3,null]]}
    ]}]}"#
        .to_vec()
}

#[test]
fn a_1x_answer_becomes_rows_with_iox_measurement() {
    let t = Table::from_v1(&v1_answer()).unwrap();
    assert_eq!(t.columns, ["iox::measurement", "time", "host", "usage", "note"]);
    assert_eq!(t.rows.len(), 3);
    let json: Value = serde_json::from_slice(&t.render(QueryFormat::Json)).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"iox::measurement":"cpu","time":"2024-02-26T19:42:47","host":"a","usage":1.5,"note":"x,y"},
            {"iox::measurement":"cpu","time":"2024-02-26T19:42:48","host":"a","usage":2},
            {"iox::measurement":"cpu","time":"2024-02-26T19:42:47","host":"b","usage":3}
        ])
    );
    let jsonl = String::from_utf8(t.render(QueryFormat::JsonLines)).unwrap();
    assert_eq!(jsonl.lines().count(), 3);
    assert!(jsonl.ends_with("\"usage\":3}\n"), "{jsonl}");
    assert_eq!(
        String::from_utf8(t.render(QueryFormat::Csv)).unwrap(),
        "iox::measurement,time,host,usage,note\n\
         cpu,2024-02-26T19:42:47,a,1.5,\"x,y\"\n\
         cpu,2024-02-26T19:42:48,a,2,\n\
         cpu,2024-02-26T19:42:47,b,3,\n"
    );
    assert_eq!(
        String::from_utf8(t.render(QueryFormat::Pretty)).unwrap(),
        "+------------------+---------------------+------+-------+------+\n\
         | iox::measurement | time                | host | usage | note |\n\
         +------------------+---------------------+------+-------+------+\n\
         | cpu              | 2024-02-26T19:42:47 | a    | 1.5   | x,y  |\n\
         | cpu              | 2024-02-26T19:42:48 | a    | 2     |      |\n\
         | cpu              | 2024-02-26T19:42:47 | b    | 3     |      |\n\
         +------------------+---------------------+------+-------+------+"
    );
}

#[test]
fn empty_answers_and_statement_errors() {
    let t = Table::from_v1(br#"{"results":[{"statement_id":0}]}"#).unwrap();
    assert_eq!(t.render(QueryFormat::Json), b"[]");
    assert_eq!(t.render(QueryFormat::JsonLines), b"");
    assert_eq!(t.render(QueryFormat::Csv), b"");
    assert_eq!(t.render(QueryFormat::Pretty), b"++\n++");
    let e =
        Table::from_v1(br#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#).unwrap_err();
    assert_eq!(e, ProxyError::BadRequest("database not found: x".into()));
    assert_eq!(Table::from_v1(b"<html>").unwrap_err().status(), 503);
}

#[test]
fn formats_and_accept_headers() {
    assert_eq!(QueryFormat::parse("jsonl").unwrap(), QueryFormat::JsonLines);
    assert_eq!(QueryFormat::parse("json_lines").unwrap(), QueryFormat::JsonLines);
    assert_eq!(QueryFormat::parse("xml").unwrap_err().status(), 400);
    assert_eq!(QueryFormat::from_accept(None).unwrap(), QueryFormat::Json);
    assert_eq!(QueryFormat::from_accept(Some("text/csv")).unwrap(), QueryFormat::Csv);
    assert_eq!(QueryFormat::from_accept(Some("text/plain")).unwrap(), QueryFormat::Pretty);
    assert_eq!(QueryFormat::from_accept(Some("text/html,*/*;q=0.8")).unwrap(), QueryFormat::Json);
    assert_eq!(QueryFormat::from_accept(Some("image/png")).unwrap_err().status(), 400);
    assert_eq!(QueryFormat::JsonLines.content_type(), "application/jsonl");
    assert_eq!(QueryFormat::Pretty.content_type(), "text/plain; charset=utf-8");
}

#[test]
fn a_body_already_in_ns_is_not_rewritten() {
    let lines = v1_lines("m v=1 1708976567000000000\nm v=2\n", Precision::Auto);
    assert!(!lines.rewritten);
    assert!(v1_lines("m v=1 1708976567\n", Precision::Auto).rewritten);
    assert!(!v1_lines("m v=1 1708976567\n", Precision::Second).rewritten);
}
