//! Line protocol validation benchmark: the cost per line of
//! [`influx_proxy::line_protocol::points`] and of
//! [`influx_proxy::line_protocol::points_past_errors`] (what the write
//! path reads bodies with), the check every write body goes
//! through before it is routed (the largest share of the proxy's CPU time on
//! the write path; issue 8's CPU target is 0.10 CPU-s per million lines for
//! everything the proxy does with a line).
//!
//! The load is the write benchmark's: 5,000-line bodies shaped like
//! Telegraf's system metrics (`body.rs`, about 111 bytes a line). Each round
//! validates 40 such bodies on one thread; reported: the median of 7 rounds
//! as ns per line, MB/s, and CPU-s per million lines.
//!
//! Usage: `cargo bench --bench parse`.

mod body;

use std::time::Instant;

const BODIES: usize = 40;
const LINES: usize = 5_000;
const ROUNDS: usize = 7;

fn main() {
    let bodies: Vec<String> = (0..BODIES)
        .map(|i| String::from_utf8(body::line_protocol_body(i, LINES)).expect("the bench writes UTF-8"))
        .collect();
    let bytes: usize = bodies.iter().map(String::len).sum();
    let lines = (BODIES * LINES) as f64;
    // `points`, then `points_past_errors` (what the write path reads bodies
    // with since partial writes: the same reader, going on past bad lines).
    let readers: [(&str, Reader); 2] = [
        ("line protocol validation", influx_proxy::line_protocol::points),
        ("the same, reading past errors", influx_proxy::line_protocol::points_past_errors),
    ];
    for (name, reader) in readers {
        let median = median_of_rounds(&bodies, reader);
        println!(
            "{name}: {:.1} ns per line, {:.0} MB/s, {:.3} CPU-s per million lines \
             ({} lines of {:.0} bytes on average, median of {ROUNDS} rounds)",
            median / lines * 1e9,
            bytes as f64 / median / 1e6,
            median / lines * 1e6,
            BODIES * LINES,
            bytes as f64 / lines,
        );
    }
}

/// A line protocol reader of the crate.
type Reader = fn(&str) -> influx_proxy::line_protocol::Points<'_>;

/// The median time in seconds of [`ROUNDS`] rounds of reading every body
/// with `reader`.
fn median_of_rounds(bodies: &[String], reader: Reader) -> f64 {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut points = 0usize;
        for body in bodies {
            for point in reader(body) {
                let point = point.unwrap_or_else(|e| panic!("the bench's body is valid: {e}"));
                points += usize::from(point.has_timestamp);
            }
        }
        let elapsed = start.elapsed();
        assert_eq!(points, BODIES * LINES, "every line is a point with a timestamp");
        rounds.push(elapsed.as_secs_f64());
    }
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}
