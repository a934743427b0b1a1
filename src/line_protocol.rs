//! Line protocol: splitting a write body into points and reading each point's
//! measurement (InfluxDB 1.x "Line protocol reference").
//!
//! `measurement[,tag_key=tag_value...] field_key=field_value[,...] [timestamp]`
//! with `\` escapes (commas and spaces in measurements; commas, equals signs and
//! spaces in tag keys, tag values and field keys; `"` and `\` in string field
//! values). Blank lines and lines starting with `#` are skipped. The whole body
//! is validated before anything is sent, so a bad line writes nothing.

use std::borrow::Cow;
use std::fmt;

/// One point of a write body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point<'a> {
    /// 1-based line number in the body.
    pub line_number: usize,
    /// The line as sent, without its line ending (`\n` or `\r\n`).
    pub line: &'a str,
    /// The measurement name with escapes removed (`cpu\,x` -> `cpu,x`).
    pub measurement: Cow<'a, str>,
    /// Whether the line ends with a timestamp.
    pub has_timestamp: bool,
}

/// A malformed line. Displays as InfluxDB does:
/// `unable to parse '<line>': <reason>` (and the line number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProtocolError {
    pub line_number: usize,
    pub line: String,
    pub reason: String,
}

impl fmt::Display for LineProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unable to parse '{}': {} (line {})", self.line, self.reason, self.line_number)
    }
}

impl std::error::Error for LineProtocolError {}

/// Splits and validates a whole write body. Errors on the first malformed line.
pub fn parse_points(body: &str) -> Result<Vec<Point<'_>>, LineProtocolError> {
    let _ = body;
    todo!()
}

/// Checks a `precision` parameter: `ns`, `n`, `u`, `µ`, `us`, `ms`, `s`, `m`, `h`
/// (InfluxDB 1.x `/write` accepts these). Error: the message InfluxDB would give.
pub fn check_precision(precision: &str) -> Result<(), String> {
    let _ = precision;
    todo!()
}
