//! Line protocol: splitting a write body into points and reading each point's
//! measurement (InfluxDB 1.x "Line protocol reference").
//!
//! `measurement[,tag_key=tag_value...] field_key=field_value[,...] [timestamp]`
//! with `\` escapes (commas and spaces in measurements; commas, equals signs and
//! spaces in tag keys, tag values and field keys; `"` and `\` in string field
//! values). Blank lines and lines starting with `#` are skipped. The whole body
//! is validated before anything is sent, so a bad line is never sent: the
//! write path writes the others and answers InfluxDB's partial write
//! ([`points_past_errors`]), or (`partial_writes: false`) writes nothing.
//!
//! # What is checked
//!
//! Everything InfluxDB 1.x's own parser (`models.ParsePoints`) rejects while
//! reading the text, with its reason words: `missing measurement`,
//! `missing tag key`, `missing tag value`, `invalid tag format`,
//! `duplicate tags`, `max key length exceeded`, `missing fields`,
//! `missing field key`, `missing field value`, `invalid field format`,
//! `invalid number`, `invalid float`, `unable to parse integer ...`,
//! `invalid boolean`, `unbalanced quotes`, `bad timestamp`, `point is invalid`.
//! Field values: float (`1`, `1.5`, `-1e3`, `.5`), integer (`1i`), unsigned
//! (`1u`), boolean (`t`, `T`, `true`, `True`, `TRUE`, `f`, `F`, `false`,
//! `False`, `FALSE`), string (`"..."`). Timestamps are integers (may be
//! negative); their range for the request's precision is left to the backend.
//!
//! # How escapes are read (as InfluxDB 1.x reads them)
//!
//! - In the measurement and the tag set a byte is escaped when the byte before
//!   it is a backslash. The measurement name is unescaped by turning `\,` into
//!   `,` and `\ ` into a space; every other backslash stays (so does the route
//!   key: `cpu\x` is routed as `cpu\x`).
//! - In the field set a backslash escapes the byte after it (`\\` is one unit).
//! - A string field value may span lines: a line ending inside `"..."` belongs
//!   to the value, as in InfluxDB 1.x. Such a point's [`Point::line`] holds the
//!   line ending(s) inside the string.
//!
//! Deliberate differences, all stricter on text InfluxDB would store oddly:
//! a backslash never escapes a line ending outside a string; a tag value may
//! not start with an unescaped `=`; a string field value must be followed by
//! `,`, a space or the end of the line; a point whose measurement or tag
//! set holds a space after an even run of backslashes (`m\\ x`: escaped
//! for InfluxDB's point parser, the start of the field set for its line
//! splitter, which then reads quotes there as strings) unless the splitter
//! ends its line where the proxy does (else the backends would not store
//! the points validated, and store others when the body is cut). Kinder:
//! `\r\n` line endings and trailing spaces or tabs are accepted (and left
//! out of [`Point::line`]).
//!
//! One pass over the body ([`points`] is an iterator); the only allocations
//! are one scratch vector for tag keys per body and an owned measurement name
//! when the name holds escapes ([`parse_points`] also collects a vector).
//!
//! Two readers, same results: a line of the common shape (no backslash, no
//! `"`, no tab or other control byte, single spaces) is read by a fast path
//! that looks only at its `,`, ` ` and `=` (found 64 bytes at a time) and
//! its field values and timestamp; every other line, and every line the fast
//! path does not accept, by the byte-by-byte scanner, which gives the error.
//! Tests compare both on every test input, the fuzz inputs and mutated lines
//! ([`points_byte_by_byte`] is the scanner alone).

use std::borrow::Cow;
use std::fmt;

/// Longest series key (measurement and tag set as sent), in bytes: InfluxDB
/// 1.x's `MaxKeyLength`. Longer keys are refused with
/// `max key length exceeded: N > 65535`.
pub const MAX_KEY_BYTES: usize = 65535;

/// One point of a write body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point<'a> {
    /// 1-based line number in the body (of the point's first line).
    pub line_number: usize,
    /// The line as sent, without its line ending (`\n` or `\r\n`) and without
    /// leading or trailing spaces and tabs. Ready to be sent on as one line.
    pub line: &'a str,
    /// Byte offset of [`Point::line`] in the body.
    pub start: usize,
    /// Byte offset of the line after the point (after its line ending; the
    /// body's length for the last line). `start..next` covers the point whole.
    pub next: usize,
    /// The measurement name with escapes removed (`cpu\,x` -> `cpu,x`).
    pub measurement: Cow<'a, str>,
    /// Whether the line ends with a timestamp.
    pub has_timestamp: bool,
}

impl Point<'_> {
    /// Whether the point is exactly the bytes of `body` (its whole body)
    /// from `at` on: its line, then `\n` or the end of the body (no blanks
    /// around it, no `\r\n`). A body all of whose points are so, one after
    /// the other from 0 to its end, is nothing but its points: the write
    /// path may forward it as it came.
    pub fn is_exact_at(&self, body: &[u8], at: usize) -> bool {
        let end = self.start + self.line.len();
        self.start == at
            && ((self.next == end + 1 && body.get(end) == Some(&b'\n'))
                || (self.next == end && end == body.len()))
    }
}

/// A malformed line. Displays as InfluxDB does:
/// `unable to parse '<line>': <reason>` (and the line number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProtocolError {
    /// 1-based line number (of the point's first line).
    pub line_number: usize,
    /// The offending line as sent, without its line ending.
    pub line: String,
    /// InfluxDB's reason, e.g. `missing fields`, `invalid number`.
    pub reason: String,
}

impl fmt::Display for LineProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unable to parse '{}': {} (line {})", self.line, self.reason, self.line_number)
    }
}

impl LineProtocolError {
    /// The text InfluxDB 1.x gives the line, without the proxy's line
    /// number: `unable to parse '<line>': <reason>` (models/points.go
    /// `ParsePointsWithPrecision`, which joins several with `\n`).
    pub fn influxdb_text(&self) -> String {
        format!("unable to parse '{}': {}", self.line, self.reason)
    }
}

impl std::error::Error for LineProtocolError {}

/// Splits and validates a whole write body. Errors on the first malformed line.
///
/// Returns the points in body order. An empty body (or one of only blank and
/// comment lines) gives no points; whether that is an error is the caller's
/// choice (InfluxDB 1.x answers 204). Collects [`points`]; callers that only
/// walk the points once should use that iterator instead (no vector).
pub fn parse_points(body: &str) -> Result<Vec<Point<'_>>, LineProtocolError> {
    points(body).collect()
}

/// The points of a write body, one at a time, in body order: an iterator of
/// `Ok(point)` that yields at most one `Err` (the first malformed line) and
/// then ends. Allocates nothing per point unless the measurement holds escapes
/// (then [`Point::measurement`] is owned).
pub fn points(body: &str) -> Points<'_> {
    Points {
        body,
        pos: 0,
        line_number: 1,
        tag_keys: Vec::new(),
        failed: false,
        fast: true,
        past_errors: false,
    }
}

/// [`points`], going on after a malformed line as InfluxDB 1.x does
/// (models/points.go `ParsePointsWithPrecision`, the same in 1.6 and 1.8):
/// every malformed line is an `Err` and the points after it are still
/// yielded. A malformed line ends where InfluxDB's line splitter
/// (`models.scanLine`) ends it (at the first `\n` outside a quoted run;
/// a `"` opened in the field set may carry it over several lines, or to
/// the body's end), and its [`LineProtocolError::line`] is that text as
/// InfluxDB quotes it: from its first byte that is not a space, tab or
/// NUL to its end (a `\r` before the `\n` included), so that
/// [`LineProtocolError::influxdb_text`] is influxd's text byte for byte
/// when the reasons agree. Valid lines cost what they cost in [`points`].
pub fn points_past_errors(body: &str) -> Points<'_> {
    Points { past_errors: true, ..points(body) }
}

/// The reference [`points`] must match: the same iterator with the fast path
/// off, every line read byte by byte by the scanner that handles all of line
/// protocol (escapes, quoted strings, errors), as [`points`] read every line
/// before the fast path was added. For the differential tests only (this
/// crate's unit tests and the `line_protocol` fuzz target in tests/fuzz/),
/// which compare both on the same bodies: same points, same error.
#[doc(hidden)]
pub fn points_byte_by_byte(body: &str) -> Points<'_> {
    Points { fast: false, ..points(body) }
}

/// The iterator of [`points`].
#[derive(Debug, Clone)]
pub struct Points<'a> {
    body: &'a str,
    /// Start of the next line to read.
    pos: usize,
    line_number: usize,
    /// Scratch space for one point's tag keys (byte spans).
    tag_keys: Vec<(usize, usize)>,
    /// An error was returned: the iterator is done.
    failed: bool,
    /// Whether lines are first tried on the fast path ([`fast_point`]).
    fast: bool,
    /// Whether a malformed line is skipped (as InfluxDB's splitter ends
    /// it) rather than the end ([`points_past_errors`]).
    past_errors: bool,
}

impl<'a> Iterator for Points<'a> {
    type Item = Result<Point<'a>, LineProtocolError>;

    fn next(&mut self) -> Option<Self::Item> {
        let body = self.body;
        let b = body.as_bytes();
        while !self.failed && self.pos < b.len() {
            let start = skip_blanks(b, self.pos);
            if let Some(next) = end_of_line(b, start) {
                // Blank line.
                self.pos = next;
                self.line_number += 1;
                continue;
            }
            if b[start] == b'#' {
                // Comment.
                self.pos = match memchr::memchr(b'\n', &b[start..]) {
                    Some(p) => start + p + 1,
                    None => b.len(),
                };
                self.line_number += 1;
                continue;
            }
            if self.fast {
                if let Some(parsed) = fast_point(b, start, &mut self.tag_keys) {
                    return Some(Ok(self.point(start, &parsed, 0)));
                }
            }
            let mut scan = Scan { b, i: start, newlines: 0, split_space: false };
            let parsed = scan.point(&mut self.tag_keys).and_then(|parsed| {
                // InfluxDB's line splitter reads such a space as the start
                // of the field set: it must end the line where we do, else
                // the backends would not store the points validated here.
                let end = || parsed.next - usize::from(b[..parsed.next].ends_with(b"\n"));
                if scan.split_space && !influxdb_line_is(b, start, end()) {
                    return Err("a space after an even run of backslashes in the measurement or tag set \
                                (InfluxDB splits the body into lines differently there)"
                        .into());
                }
                Ok(parsed)
            });
            return Some(match parsed {
                Ok(parsed) => Ok(self.point(start, &parsed, scan.newlines)),
                Err(reason) if self.past_errors => Err(self.skip_malformed(start, reason)),
                Err(reason) => {
                    self.failed = true;
                    Err(error_at(body, start, scan.i, self.line_number, reason))
                }
            });
        }
        None
    }
}

impl<'a> Points<'a> {
    /// The error of the malformed line whose first non-blank byte is
    /// `start` (its raw start is `self.pos`), quoted as InfluxDB quotes it;
    /// moves on to the line after it as InfluxDB's splitter ends it
    /// ([`points_past_errors`]).
    fn skip_malformed(&mut self, start: usize, reason: Reason) -> LineProtocolError {
        let b = self.body.as_bytes();
        let end = influxdb_line_end(b, self.pos).max(start);
        // InfluxDB strips one `\n` left at the end of a line quoted to the
        // body's end.
        let quoted_end = if end == b.len() && end > start && b[end - 1] == b'\n' { end - 1 } else { end };
        let error = LineProtocolError {
            line_number: self.line_number,
            line: String::from_utf8_lossy(&b[start..quoted_end]).into_owned(),
            reason: reason.into_owned(),
        };
        self.line_number += 1 + memchr::memchr_iter(b'\n', &b[start..end]).count();
        self.pos = (end + 1).min(b.len());
        error
    }

    /// The point `parsed` found at `start` (with `newlines` line endings
    /// inside its string values); moves on to the line after it.
    fn point(&mut self, start: usize, parsed: &Parsed, newlines: usize) -> Point<'a> {
        let body = self.body;
        let measurement = &body[start..parsed.measurement_end];
        let measurement = if parsed.measurement_escaped {
            Cow::Owned(unescape_measurement(measurement))
        } else {
            Cow::Borrowed(measurement)
        };
        let point = Point {
            line_number: self.line_number,
            line: &body[start..parsed.content_end],
            start,
            next: parsed.next,
            measurement,
            has_timestamp: parsed.has_timestamp,
        };
        self.line_number += 1 + newlines;
        self.pos = parsed.next;
        point
    }
}

/// The spelling of `precision` that every InfluxDB 1.x `/write` accepts, to
/// send to backends: `""` (nanoseconds), `n`, `ns`, `u`, `ms`, `s`, `m`, `h`;
/// `us`, `µ` (micro sign U+00B5) and `μ` (Greek mu U+03BC) become `u` (the 1.x
/// HTTP handler accepts only `u`). Error, as InfluxDB words it:
/// `invalid precision "x" (use n, u, ms, s, m or h)`.
pub fn normalize_precision(precision: &str) -> Result<&'static str, String> {
    Ok(match precision {
        "" => "",
        "n" => "n",
        "ns" => "ns",
        "u" | "us" | "\u{b5}" | "\u{3bc}" => "u",
        "ms" => "ms",
        "s" => "s",
        "m" => "m",
        "h" => "h",
        _ => return Err(format!("invalid precision {precision:?} (use n, u, ms, s, m or h)")),
    })
}

/// The fast path: reads the point starting at `start` (a non-blank, non-`#`
/// byte) when it has the common shape, `measurement[,k=v...] f=v[,f=v...]
/// [timestamp]` with single spaces, no backslash, no control byte (tab,
/// NUL, a lone `\r`, ...) before its line ending and `"` only around string
/// field values, and is well-formed. `None` for every other line, well-formed or not: the
/// byte-by-byte scanner ([`Scan`]) then reads it, and gives the error if
/// there is one. So this only has to accept exactly the lines of that shape
/// the scanner accepts, with the same [`Parsed`] (no escapes, no line
/// endings inside strings); the differential tests check that it does.
///
/// It walks the line's `,`, ` `, `=` and other special bytes in order, found
/// 64 bytes at a time ([`Specials`]), instead of looking at every byte; only
/// field values and the timestamp are read byte by byte.
fn fast_point(b: &[u8], start: usize, tag_keys: &mut Vec<(usize, usize)>) -> Option<Parsed> {
    if b[start] == b',' {
        return None;
    }
    let mut specials = Specials::new(b, start);
    // The line ending at special byte `c` at `p`, if it is one: the end of
    // the point's text and the start of the next line.
    let line_end = |p: usize, c: u8| match c {
        b'\n' => Some((p, (p + 1).min(b.len()))),
        b'\r' if matches!(b.get(p + 1), None | Some(b'\n')) => Some((p, (p + 2).min(b.len()))),
        _ => None,
    };
    // Measurement: up to the first ',' or ' ' ('=' is an ordinary byte there).
    let measurement_end = loop {
        match specials.next() {
            (_, b'=') => {}
            (p, b',' | b' ') => break p,
            _ => return None,
        }
    };
    // Tag set: `,key=value` pairs up to a space; `at` is where each pair
    // (then the field set) starts.
    let mut at = measurement_end;
    if b[at] == b',' {
        tag_keys.clear();
        loop {
            let (key_end, c) = specials.next();
            if c != b'=' || key_end == at + 1 {
                return None;
            }
            tag_keys.push((at + 1, key_end));
            let (value_end, c) = specials.next();
            if value_end == key_end + 1 {
                return None;
            }
            at = value_end;
            match c {
                b',' => {}
                b' ' => break,
                _ => return None,
            }
        }
        if has_duplicate_keys(b, tag_keys) {
            return None;
        }
    }
    if at - start > MAX_KEY_BYTES {
        return None;
    }
    // Field set: `key=value` pairs after the space at `at`.
    loop {
        let (key_end, c) = specials.next();
        if c != b'=' || key_end == at + 1 {
            return None;
        }
        let (mut value_end, mut c) = specials.next();
        if value_end == key_end + 1 && c == b'"' {
            // A string value without backslashes or control bytes: to the
            // next '"', which the line ending or a ',' or ' ' must follow.
            let close = loop {
                match specials.next() {
                    (p, b'"') => break p,
                    (_, b',' | b' ' | b'=') => {}
                    _ => return None,
                }
            };
            (value_end, c) = specials.next();
            if value_end != close + 1 {
                return None;
            }
        } else {
            let value = &b[key_end + 1..value_end];
            let valid = match value.first() {
                None => false,
                Some(b'-' | b'.' | b'0'..=b'9') => plain_number(value) || check_number(value).is_ok(),
                Some(_) => check_boolean(value).is_ok(),
            };
            if !valid {
                return None;
            }
        }
        at = value_end;
        match c {
            b',' => {}
            b' ' => break,
            _ => {
                let (content_end, next) = line_end(value_end, c)?;
                let has_timestamp = false;
                return Some(Parsed {
                    measurement_end,
                    measurement_escaped: false,
                    content_end,
                    has_timestamp,
                    next,
                });
            }
        }
    }
    // Timestamp: what is left after the space at `at`, up to the line ending.
    let (end, c) = specials.next();
    let (content_end, next) = line_end(end, c)?;
    let timestamp = &b[at + 1..end];
    if !(plain_timestamp(timestamp) || fits_i64(timestamp)) {
        return None;
    }
    Some(Parsed { measurement_end, measurement_escaped: false, content_end, has_timestamp: true, next })
}

/// Whether `t` is a number [`check_number`] accepts without a closer look:
/// `[-]digits[.digits]` (a float without exponent, at most 300 bytes),
/// `[-]digits i` with at most 18 digits, `digits u` with at most 19 (each in
/// its type's range). `false` says nothing (ask [`check_number`]).
fn plain_number(t: &[u8]) -> bool {
    let (n, limit, dot_allowed) = match t.split_last() {
        Some((b'i', n)) => (n.strip_prefix(b"-").unwrap_or(n), 18, false),
        Some((b'u', n)) => (n, 19, false),
        _ => (t.strip_prefix(b"-").unwrap_or(t), 300, true),
    };
    let mut dots = 0;
    for &c in n {
        if !c.is_ascii_digit() {
            if c != b'.' || !dot_allowed {
                return false;
            }
            dots += 1;
        }
    }
    dots <= 1 && n.len() > dots && n.len() <= limit
}

/// Whether `t` is a timestamp [`fits_i64`] accepts, for the common ones:
/// 1 to 19 ASCII digits, below `9000000000000000000` when 19. `false` says
/// nothing (ask [`fits_i64`]).
fn plain_timestamp(t: &[u8]) -> bool {
    !t.is_empty() && (t.len() < 19 || (t.len() == 19 && t[0] < b'9')) && all_digits(t)
}

/// Whether every byte of `t` is an ASCII digit, 8 bytes at a time.
fn all_digits(t: &[u8]) -> bool {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = t.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // A digit is 0x30..=0x39: xor 0x30 leaves 0..=9; the high bit of
        // each byte is then set for 10 and above (or 0x80 and above).
        let x = u64::from_le_bytes(word) ^ 0x3030_3030_3030_3030;
        if (((x & LOW7) + 0x7676_7676_7676_7676) | x) & HIGH != 0 {
            return false;
        }
    }
    words.remainder().iter().all(u8::is_ascii_digit)
}

/// The special bytes of a body from some offset on, in order: `,`, ` `,
/// `=`, `"`, `\` and every byte below 0x20 (line endings, tabs, NUL, ...).
/// The end of the body reads as a `\n` at the body's length (and after).
/// Finds them 64 bytes at a time ([`specials64`]).
struct Specials<'a> {
    b: &'a [u8],
    /// Offset of the block `mask` describes.
    base: usize,
    /// Bit `k`: byte `base + k` is special and not returned yet.
    mask: u64,
}

impl<'a> Specials<'a> {
    /// The special bytes from offset `from` on.
    fn new(b: &'a [u8], from: usize) -> Self {
        Specials { b, base: from, mask: block_mask(b, from) }
    }

    /// The next special byte: its offset and value (`\n` at the end of the
    /// body: there is always a next one).
    fn next(&mut self) -> (usize, u8) {
        while self.mask == 0 {
            self.base += 64;
            self.mask = block_mask(self.b, self.base);
        }
        let p = self.base + self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        (p, self.b.get(p).copied().unwrap_or(b'\n'))
    }
}

/// The special bytes of the 64 bytes from `from` (bytes past the body's end
/// count as `\n`).
fn block_mask(b: &[u8], from: usize) -> u64 {
    let rest = b.get(from..).unwrap_or_default();
    match rest.first_chunk::<64>() {
        Some(block) => specials64(block),
        None => {
            let mut block = [b'\n'; 64];
            block[..rest.len()].copy_from_slice(rest);
            specials64(&block)
        }
    }
}

/// Whether each byte of `block` is special (see [`Specials`]): bit `k` for
/// byte `k`. Written so that the compiler vectorises the comparisons
/// (SSE2 on x86_64, NEON on aarch64: 16 bytes at a time); the flags are then
/// gathered 8 at a time with a multiplication. About 4x cheaper than looking
/// at each byte, 2x cheaper than [`specials64_swar`] there (measured).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn specials64(block: &[u8; 64]) -> u64 {
    // No short-circuit (`||`): a branch per byte would stop the vectorising.
    let special = |c: u8| (c <= b' ') | (c == b',') | (c == b'=') | (c == b'"') | (c == b'\\');
    let mut flags = [0u8; 64];
    for (flag, &c) in flags.iter_mut().zip(block) {
        *flag = u8::from(special(c));
    }
    let mut mask = 0u64;
    for k in 0..8 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&flags[8 * k..8 * k + 8]);
        mask |= gather_bits(u64::from_le_bytes(word)) << (8 * k);
    }
    mask
}

/// Whether each byte of `block` is special: the portable version (wasm32
/// has no vector instructions by default), 8 bytes per 64-bit word.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn specials64(block: &[u8; 64]) -> u64 {
    specials64_swar(block)
}

/// [`specials64`] on 64-bit words (SWAR): each test sets the high bit of
/// the bytes it matches, exactly (no carries between bytes).
#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), allow(dead_code))]
fn specials64_swar(block: &[u8; 64]) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;
    // The high bit of each byte of `x` below `n` (n <= 0x80).
    let below = |x: u64, n: u8| !(((x & LOW7) + ONES * u64::from(0x80 - n)) | x) & HIGH;
    let is = |w: u64, c: u8| below(w ^ (ONES * u64::from(c)), 1);
    let mut mask = 0u64;
    for k in 0..8 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&block[8 * k..8 * k + 8]);
        let w = u64::from_le_bytes(word);
        // Control bytes and the space are the bytes below 0x21.
        let high = below(w, 0x21) | is(w, b',') | is(w, b'=') | is(w, b'"') | is(w, b'\\');
        mask |= gather_bits(high >> 7) << (8 * k);
    }
    mask
}

/// The low bits of the 8 bytes of `w` (each 0 or 1) as one byte: bit `j`
/// for byte `j` (the products of the multiplication never overlap).
fn gather_bits(w: u64) -> u64 {
    w.wrapping_mul(0x0102_0408_1020_4080) >> 56
}

/// Why a point is malformed (mostly fixed InfluxDB words).
type Reason = Cow<'static, str>;

/// Where a well-formed point lies in the body.
struct Parsed {
    /// End of the measurement name (as sent, escapes included).
    measurement_end: usize,
    /// Whether the measurement holds `\,` or `\ `.
    measurement_escaped: bool,
    /// End of the point's text, before trailing blanks and the line ending.
    content_end: usize,
    /// Whether a timestamp follows the field set.
    has_timestamp: bool,
    /// Start of the next line.
    next: usize,
}

/// A cursor over the body while one point is read. On error `i` is where the
/// problem was found.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    /// Line endings inside string field values of this point.
    newlines: usize,
    /// The measurement or tag set holds a space after an even run of
    /// backslashes: escaped for InfluxDB's point parser (the byte before is
    /// a backslash), the start of the field set for its line splitter
    /// (`scanLine` skips backslashes in pairs), which then counts quotes
    /// the point parser does not ([`influxdb_line_end`]).
    split_space: bool,
}

impl Scan<'_> {
    /// Reads one point starting at `self.i` (a non-blank, non-`#` byte).
    fn point(&mut self, tag_keys: &mut Vec<(usize, usize)>) -> Result<Parsed, Reason> {
        let b = self.b;
        let start = self.i;

        // Measurement: up to an unescaped ',' (tag set) or ' ' (field set).
        if b[start] == b',' {
            return Err("missing measurement".into());
        }
        let mut measurement_escaped = false;
        self.i += 1;
        let has_tags = loop {
            while b.get(self.i).is_some_and(|&c| !stop(&MEASUREMENT_STOPS, c)) {
                self.i += 1;
            }
            match b.get(self.i) {
                None | Some(b'\n') => return Err("missing fields".into()),
                Some(&c) => {
                    if b[self.i - 1] == b'\\' {
                        measurement_escaped |= c == b',' || c == b' ';
                        self.note_escaped_space(c);
                    } else if c == b',' {
                        break true;
                    } else if c == b' ' {
                        break false;
                    }
                }
            }
            self.i += 1;
        };
        let measurement_end = self.i;

        if has_tags {
            tag_keys.clear();
            self.tag_set(tag_keys)?;
            if has_duplicate_keys(b, tag_keys) {
                return Err("duplicate tags".into());
            }
        }
        if self.i - start > MAX_KEY_BYTES {
            return Err(format!("max key length exceeded: {} > {}", self.i - start, MAX_KEY_BYTES).into());
        }

        self.field_set()?;
        let mut content_end = self.i;

        // Optional timestamp.
        self.i = skip_blanks(b, self.i);
        let has_timestamp = end_of_line(b, self.i).is_none();
        if has_timestamp {
            let ts_start = self.i;
            if b[self.i] == b'-' {
                self.i += 1;
            }
            while b.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let ended = match b.get(self.i) {
                Some(b' ' | b'\t' | 0) => true,
                _ => end_of_line(b, self.i).is_some(),
            };
            if !ended || !fits_i64(&b[ts_start..self.i]) {
                return Err("bad timestamp".into());
            }
            content_end = self.i;
            self.i = skip_blanks(b, self.i);
        }
        match end_of_line(b, self.i) {
            Some(next) => {
                Ok(Parsed { measurement_end, measurement_escaped, content_end, has_timestamp, next })
            }
            None => Err("point is invalid".into()),
        }
    }

    /// Reads `key=value[,key=value...]` from just after the measurement's
    /// comma; stops at the space before the field set. Records each tag key's
    /// span in `tag_keys`.
    fn tag_set(&mut self, tag_keys: &mut Vec<(usize, usize)>) -> Result<(), Reason> {
        let b = self.b;
        self.i += 1;
        loop {
            let key_start = self.i;
            match b.get(self.i) {
                None | Some(b'\n' | b' ' | b',' | b'=') => return Err("missing tag key".into()),
                Some(_) => self.i += 1,
            }
            loop {
                while b.get(self.i).is_some_and(|&c| !stop(&TAG_STOPS, c)) {
                    self.i += 1;
                }
                match b.get(self.i) {
                    None | Some(b'\n') => return Err("missing tag value".into()),
                    Some(&c) if b[self.i - 1] != b'\\' => match c {
                        b' ' | b',' => return Err("missing tag value".into()),
                        b'=' => break,
                        _ => {}
                    },
                    Some(&c) => self.note_escaped_space(c),
                }
                self.i += 1;
            }
            tag_keys.push((key_start, self.i));
            self.i += 1;
            match b.get(self.i) {
                None | Some(b'\n' | b' ' | b',') => return Err("missing tag value".into()),
                Some(b'=') => return Err("invalid tag format".into()),
                Some(_) => self.i += 1,
            }
            let more = loop {
                while b.get(self.i).is_some_and(|&c| !stop(&TAG_STOPS, c)) {
                    self.i += 1;
                }
                match b.get(self.i) {
                    None | Some(b'\n') => return Err("missing fields".into()),
                    Some(&c) if b[self.i - 1] != b'\\' => match c {
                        b'=' => return Err("invalid tag format".into()),
                        b',' => break true,
                        b' ' => break false,
                        _ => {}
                    },
                    Some(&c) => self.note_escaped_space(c),
                }
                self.i += 1;
            };
            if !more {
                return Ok(());
            }
            self.i += 1;
        }
    }

    /// Reads the field set from the space after the measurement or tag set;
    /// stops at the first byte after it (a blank or the line ending).
    fn field_set(&mut self) -> Result<(), Reason> {
        let b = self.b;
        self.i = skip_blanks(b, self.i);
        if end_of_line(b, self.i).is_some() {
            return Err("missing fields".into());
        }
        loop {
            // Field key: up to an unescaped '='.
            let key_start = self.i;
            while b.get(self.i).is_some_and(|&c| !stop(&FIELD_KEY_STOPS, c)) {
                self.i += 1;
            }
            loop {
                match b.get(self.i) {
                    Some(b'\\') if b.get(self.i + 1).is_some_and(|&c| c != b'\n') => self.i += 2,
                    Some(b'=') => break,
                    None | Some(b'\n' | b' ' | b',') => return Err("invalid field format".into()),
                    Some(_) => self.i += 1,
                }
            }
            if self.i == key_start {
                return Err("missing field key".into());
            }
            self.i += 1;

            // Field value.
            match b.get(self.i) {
                None | Some(b'\n' | b' ' | b',') => return Err("missing field value".into()),
                Some(b'\r') if end_of_line(b, self.i).is_some() => return Err("missing field value".into()),
                Some(b'"') => self.string_value()?,
                Some(b'-' | b'.' | b'0'..=b'9') => {
                    let end = token_end(b, self.i);
                    check_number(&b[self.i..end])?;
                    self.i = end;
                }
                Some(b'n' | b'N') => return Err("invalid number".into()),
                Some(_) => {
                    let end = token_end(b, self.i);
                    check_boolean(&b[self.i..end])?;
                    self.i = end;
                }
            }
            if b.get(self.i) == Some(&b',') {
                self.i += 1;
            } else {
                return Ok(());
            }
        }
    }

    /// Reads `"..."` (with `\"` and `\\` escapes; line endings allowed) at
    /// `self.i`; the value must be followed by `,`, a space or the line ending.
    fn string_value(&mut self) -> Result<(), Reason> {
        let b = self.b;
        let open = self.i;
        let mut newlines = 0;
        self.i += 1;
        loop {
            // The next byte that matters inside the string.
            let Some(p) = memchr::memchr3(b'"', b'\\', b'\n', b.get(self.i..).unwrap_or_default()) else {
                // Point at the opening quote so the error shows its line.
                self.i = open;
                return Err("unbalanced quotes".into());
            };
            self.i += p;
            match b[self.i] {
                b'\\' if self.i + 1 < b.len() => {
                    newlines += usize::from(b[self.i + 1] == b'\n');
                    self.i += 2;
                }
                b'"' => break,
                b'\n' => {
                    newlines += 1;
                    self.i += 1;
                }
                _ => self.i += 1,
            }
        }
        self.i += 1;
        self.newlines += newlines;
        match b.get(self.i) {
            Some(b',' | b' ') => Ok(()),
            _ if blank_to_end_of_line(b, self.i) => Ok(()),
            _ => Err("invalid field format".into()),
        }
    }
}

impl Scan<'_> {
    /// At byte `c` of the measurement or tag set, escaped by the backslash
    /// before it: notes a space after an even run of backslashes.
    fn note_escaped_space(&mut self, c: u8) {
        if c == b' ' {
            let run = self.b[..self.i].iter().rev().take_while(|&&c| c == b'\\').count();
            self.split_space |= run % 2 == 0;
        }
    }
}

/// Whether InfluxDB 1.x's line splitter (`models.scanLine`) reads bytes
/// `start..end` of `b` as one line, whatever follows (a line ending at
/// `end` is not inside a quoted run): backslashes skip the byte after
/// them; from the first space on, a `"` opens or closes a quoted run (a
/// line ending inside does not end the line) when more `=` than `,` were
/// seen outside quotes.
fn influxdb_line_is(b: &[u8], start: usize, end: usize) -> bool {
    let (i, quoted) = influxdb_scan(b, start, end);
    i == end && !quoted
}

/// Where InfluxDB 1.x's line splitter (`models.scanLine`, as
/// [`influxdb_line_is`] reads it) ends the line starting at `from`: the
/// offset of its `\n`, or the body's length.
fn influxdb_line_end(b: &[u8], from: usize) -> usize {
    influxdb_scan(b, from, b.len()).0
}

/// `models.scanLine`'s reading of `b` from `from`, stopped at `end`: the
/// offset of the first `\n` outside a quoted run before `end`, else where
/// the scan passed `end` (`end`, or one more after a backslash), and
/// whether a quoted run was open there.
fn influxdb_scan(b: &[u8], from: usize, end: usize) -> (usize, bool) {
    let (mut quoted, mut fields, mut equals, mut commas) = (false, false, 0usize, 0usize);
    let mut i = from;
    while i < end {
        let c = b[i];
        if c == b'\\' && i + 2 < b.len() {
            i += 2;
            continue;
        }
        fields |= c == b' ';
        match c {
            b'=' if fields && !quoted => equals += 1,
            b',' if fields && !quoted => commas += 1,
            b'"' if fields && equals > commas => quoted = !quoted,
            b'\n' if !quoted => return (i, quoted),
            _ => {}
        }
        i += 1;
    }
    (i, quoted)
}

/// The bytes that end a run of ordinary bytes (a table lookup per byte,
/// cheaper than comparing with each; the scanners then look at the byte
/// they stopped on as before). Keys and values are short: a table beats a
/// vectorised search there (measured), which is used for long runs
/// (comments, string values, line endings).
type Stops = [bool; 256];

/// The table of `bytes`.
const fn stops(bytes: &[u8]) -> Stops {
    let mut table = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
}

/// In a measurement: `,` (tag set), ` ` (field set), `\n` (escaped when
/// the byte before is `\\`, read at the stop).
const MEASUREMENT_STOPS: Stops = stops(b", \n");
/// In a tag key or value.
const TAG_STOPS: Stops = stops(b", =\n");
/// In a field key (`\\` escapes the byte after it).
const FIELD_KEY_STOPS: Stops = stops(b"\\=\n ,");

/// Whether `c` is one of `table`'s bytes.
fn stop(table: &Stops, c: u8) -> bool {
    table[usize::from(c)]
}

/// Skips spaces, tabs and NUL bytes (InfluxDB 1.x's `skipWhitespace`).
fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | 0) = b.get(i) {
        i += 1;
    }
    i
}

/// If `i` is at a line ending (`\n`, `\r\n`, a final `\r`, or the end of the
/// body), the start of the next line.
fn end_of_line(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i) {
        None => Some(b.len()),
        Some(b'\n') => Some(i + 1),
        Some(b'\r') => match b.get(i + 1) {
            None => Some(i + 1),
            Some(b'\n') => Some(i + 2),
            Some(_) => None,
        },
        Some(_) => None,
    }
}

/// Whether only blanks are left before the line ending.
fn blank_to_end_of_line(b: &[u8], i: usize) -> bool {
    end_of_line(b, skip_blanks(b, i)).is_some()
}

/// End of an unquoted field value: the next `,`, space or line ending (or
/// trailing blanks before it).
fn token_end(b: &[u8], mut i: usize) -> usize {
    const TOKEN_STOPS: Stops = stops(b", \n\r\t\0");
    loop {
        while b.get(i).is_some_and(|&c| !stop(&TOKEN_STOPS, c)) {
            i += 1;
        }
        let Some(&c) = b.get(i) else { break };
        match c {
            b',' | b' ' | b'\n' => break,
            b'\r' | b'\t' | 0 if blank_to_end_of_line(b, i) => break,
            _ => i += 1,
        }
    }
    i
}

/// Whether `t` (an optional `-` then ASCII digits, as the scanner found them)
/// is a non-empty integer that fits an i64. Compares digit strings instead of
/// parsing: on wasm32 the overflow-checked 64-bit multiply of `str::parse`
/// is a slow library call, and this runs once per point.
fn fits_i64(t: &[u8]) -> bool {
    let (digits, limit): (&[u8], &[u8]) = match t.strip_prefix(b"-") {
        Some(d) => (d, b"9223372036854775808"),
        None => (t, b"9223372036854775807"),
    };
    // Fewer digits than the limit: in range.
    if !digits.is_empty() && digits.len() < limit.len() {
        return digits.iter().all(u8::is_ascii_digit);
    }
    // Leading zeros do not change the value.
    let significant = match digits.iter().position(|&c| c != b'0') {
        Some(p) => &digits[p..],
        None => &digits[digits.len().saturating_sub(1)..],
    };
    !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (significant.len() < limit.len() || (significant.len() == limit.len() && significant <= limit))
}

/// A numeric field value: float `[-]digits[.digits][e[+-]digits]` (either
/// side of the point may be empty, not both), integer `[-]digits i`, unsigned
/// `digits u`; each within its type's range. NaN and infinities are refused.
fn check_number(t: &[u8]) -> Result<(), Reason> {
    let invalid = || Reason::Borrowed("invalid number");
    let as_str = |t: &[u8]| std::str::from_utf8(t).unwrap_or("").to_string();
    match t.split_last() {
        Some((b'i', n)) => {
            let digits = n.strip_prefix(b"-").unwrap_or(n);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(invalid());
            }
            if digits.len() >= 19 && as_str(n).parse::<i64>().is_err() {
                return Err(format!("unable to parse integer {}: value out of range", as_str(n)).into());
            }
            Ok(())
        }
        Some((b'u', n)) => {
            if n.is_empty() || !n.iter().all(u8::is_ascii_digit) {
                return Err(invalid());
            }
            if n.len() >= 20 && as_str(n).parse::<u64>().is_err() {
                return Err(format!("unable to parse unsigned {}: value out of range", as_str(n)).into());
            }
            Ok(())
        }
        _ => {
            let mut i = usize::from(t.first() == Some(&b'-'));
            let digits = |i: &mut usize| {
                let from = *i;
                while t.get(*i).is_some_and(u8::is_ascii_digit) {
                    *i += 1;
                }
                *i - from
            };
            let mut mantissa = digits(&mut i);
            if t.get(i) == Some(&b'.') {
                i += 1;
                mantissa += digits(&mut i);
            }
            if mantissa == 0 {
                return Err(invalid());
            }
            let exponent = matches!(t.get(i), Some(b'e' | b'E'));
            if exponent {
                i += 1;
                if matches!(t.get(i), Some(b'+' | b'-')) {
                    i += 1;
                }
                if digits(&mut i) == 0 {
                    return Err(invalid());
                }
            }
            if i != t.len() {
                return Err(invalid());
            }
            // Only an exponent or a very long number can leave f64's range.
            if exponent || t.len() > 300 {
                match as_str(t).parse::<f64>() {
                    Ok(v) if v.is_finite() => {}
                    _ => return Err("invalid float".into()),
                }
            }
            Ok(())
        }
    }
}

/// A boolean field value, as InfluxDB 1.x spells them.
fn check_boolean(t: &[u8]) -> Result<(), Reason> {
    match t {
        b"t" | b"T" | b"true" | b"True" | b"TRUE" | b"f" | b"F" | b"false" | b"False" | b"FALSE" => Ok(()),
        _ => Err("invalid boolean".into()),
    }
}

/// Whether two tag keys (compared as sent) are equal.
fn has_duplicate_keys(b: &[u8], keys: &mut [(usize, usize)]) -> bool {
    let key = |&(s, e): &(usize, usize)| &b[s..e];
    // A point has a few tags: comparing each pair is cheaper than sorting.
    // Lengths first, from the offsets: tag keys rarely have equal lengths
    // (`host`, `region`, `cpu`), and only those are sliced and compared.
    if keys.len() <= 8 {
        for (i, &(s, e)) in keys.iter().enumerate() {
            for &(s2, e2) in &keys[i + 1..] {
                if e2 - s2 == e - s && b[s..e] == b[s2..e2] {
                    return true;
                }
            }
        }
        return false;
    }
    if keys.windows(2).all(|w| key(&w[0]) < key(&w[1])) {
        return false;
    }
    // std's sort, not `crate::sort`: this runs per line whose tag keys are
    // out of order, and the index sort of wasm32 allocates.
    keys.sort_unstable_by(|x, y| key(x).cmp(key(y)));
    keys.windows(2).any(|w| key(&w[0]) == key(&w[1]))
}

/// `\,` -> `,` and `\ ` -> ` `, left to right; other backslashes stay.
fn unescape_measurement(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(p) = rest.find(['\\']) {
        match rest.as_bytes().get(p + 1) {
            Some(b',' | b' ') => {
                out.push_str(&rest[..p]);
                rest = &rest[p + 1..];
                out.push_str(&rest[..1]);
                rest = &rest[1..];
            }
            _ => {
                out.push_str(&rest[..p + 1]);
                rest = &rest[p + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The value of tag `key` in `line`, a point's line as validated by
/// [`points`] ([`Point::line`]), with escapes removed (`\,`, `\ ` and `\=`
/// in keys and values, as InfluxDB 1.x unescapes them); `None` when the point
/// has no such tag. Used to place a point by its shard tag
/// ([`crate::shard_group`]). Reads the measurement and tag set only; borrows
/// unless the value holds escapes.
pub fn tag_value<'a>(line: &'a str, key: &str) -> Option<Cow<'a, str>> {
    let b = line.as_bytes();
    let escaped = |i: usize| i > 0 && b[i - 1] == b'\\';
    // The end (exclusive) of the key or value starting at `i`: the next
    // unescaped byte of `stops`.
    let end = |mut i: usize, stops: &[u8]| {
        while i < b.len() && (escaped(i) || !stops.contains(&b[i])) {
            i += 1;
        }
        i
    };
    let mut i = end(1.min(b.len()), b", ");
    while i < b.len() && b[i] == b',' {
        let key_start = i + 1;
        let key_end = end(key_start, b"=");
        let value_start = (key_end + 1).min(b.len());
        i = end(value_start, b", ");
        if unescape_tag(&line[key_start..key_end]) == key {
            return Some(unescape_tag(&line[value_start..i]));
        }
    }
    None
}

/// `\,`, `\ ` and `\=` -> `,`, ` `, `=`; other backslashes stay.
fn unescape_tag(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(&next @ (',' | ' ' | '='))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The error for a point starting at `start` whose problem was found at `at`:
/// the text from `start` to the end of the physical line holding `at`.
fn error_at(body: &str, start: usize, at: usize, line_number: usize, reason: Reason) -> LineProtocolError {
    let b = body.as_bytes();
    let at = at.clamp(start, b.len());
    let mut end = match memchr::memchr(b'\n', &b[at..]) {
        Some(p) => at + p,
        None => b.len(),
    };
    if end > start && b[end - 1] == b'\r' {
        end -= 1;
    }
    LineProtocolError { line_number, line: body[start..end].to_string(), reason: reason.into_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A space after `\\` in the measurement or tag set is escaped for
    /// InfluxDB's point parser but starts the field set for its line
    /// splitter, which then counts the tag value's `"` as opening a string:
    /// influxd 1.6 answers the first body 400 (`point is invalid`: both
    /// lines read as one) and stores both points sent one per request, so a
    /// replica sent the body halved (413) would store what the others
    /// refused. Refused here, unless the splitter ends the line where we do.
    #[test]
    fn a_line_influxdb_splits_elsewhere_is_refused() {
        let merged = "m\\\\ x=1,t=\"q f=1 1\nm v=2 2\n";
        let e = parse_points(merged).unwrap_err();
        assert_eq!((e.line_number, e.reason.starts_with("a space after an even run")), (1, true), "{e}");
        // Split in two: the splitter ends the point's line before ours.
        let split = "m\\\\ x=1,t=\"q f=\"a\nb\" 1\n";
        assert!(parse_points(split).is_err());
        // Quoted up to the body's end: it would swallow a line sent after it.
        assert!(parse_points("m\\\\ x=1,t=\"q f=1 1").is_err());
        // Same lines for both: kept.
        assert_eq!(parse_points("m\\\\ x,t=\"q f=1 1\nm v=2 2\n").map(|p| p.len()), Ok(2));
        assert_eq!(parse_points("m\\\\ x=1,t=q f=1 1\nm v=2 2\n").map(|p| p.len()), Ok(2));
        assert_eq!(parse_points("m\\\\\\ x=1,t=\"q f=1 1\nm v=2 2\n").map(|p| p.len()), Ok(2));
    }

    /// Past a malformed line, reading goes on where InfluxDB's splitter
    /// (`models.scanLine`) ends that line: at its `\n`, or past a quoted
    /// run opened in the field set; each error quotes the line as
    /// influxd does (`\r` kept, leading blanks not).
    #[test]
    fn reading_past_errors_resumes_where_influxdb_ends_the_bad_line() {
        let body = "a v=1 1\n\t bad\r\nb s=\"x\ny\" z\nd v=1 3\ne v=z\nf v=2 4\ng s=\"open\nh v=1 5\n";
        let mut points = Vec::new();
        let mut errors = Vec::new();
        for item in points_past_errors(body) {
            match item {
                Ok(p) => points.push((p.line_number, p.line)),
                Err(e) => errors.push((e.line_number, e.influxdb_text())),
            }
        }
        assert_eq!(points, [(1, "a v=1 1"), (5, "d v=1 3"), (7, "f v=2 4")]);
        assert_eq!(
            errors,
            [
                (2, "unable to parse 'bad\r': missing fields".to_string()),
                // A string spanning lines: one line for InfluxDB.
                (3, "unable to parse 'b s=\"x\ny\" z': bad timestamp".to_string()),
                (6, "unable to parse 'e v=z': invalid boolean".to_string()),
                // Never closed: to the body's end (its last `\n` left out).
                (8, "unable to parse 'g s=\"open\nh v=1 5': unbalanced quotes".to_string()),
            ]
        );
        // Without errors: exactly what `points` yields.
        let good = "a v=1 1\n# c\nb,t=1 s=\"q\nr\" 2\n";
        assert_eq!(points_past_errors(good).collect::<Vec<_>>(), super::points(good).collect::<Vec<_>>());
    }

    /// The measurement of the single point of `line`, or the error reason.
    fn outcome(line: &str) -> Result<String, String> {
        match parse_points(line) {
            Ok(points) => {
                assert_eq!(points.len(), 1, "{line:?} gave {points:?}");
                Ok(points[0].measurement.to_string())
            }
            Err(e) => Err(e.reason),
        }
    }

    /// Corpus: (line, expected measurement or `!reason`). Reasons are InfluxDB
    /// 1.x's words for the same line.
    const CORPUS: &[(&str, &str)] = &[
        // Well-formed points.
        ("cpu value=1", "cpu"),
        ("cpu,host=a,region=west value=1.5 1465839830100400200", "cpu"),
        ("cpu value=1 -1", "cpu"),
        ("cpu value=-1e3,b=1E+3,c=.5,d=1.,e=-0.5e-2", "cpu"),
        ("cpu value=1i,big=9223372036854775807i,small=-9223372036854775808i", "cpu"),
        ("cpu value=1u,max=18446744073709551615u", "cpu"),
        ("cpu a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE", "cpu"),
        (r#"cpu s="hello, world = yes",t="" 1"#, "cpu"),
        (r#"cpu s="a \"quoted\" word and a \\ backslash""#, "cpu"),
        (r"cpu\,x value=1", "cpu,x"),
        (r"cpu\ load value=1", "cpu load"),
        (r"cpu\x value=1", r"cpu\x"),
        (r"cpu\\,x value=1", r"cpu\,x"),
        (r"cpu,host\ name=a\,b\ c\=d value=1", "cpu"),
        (r"cpu field\ key\,x\=y=1", "cpu"),
        ("cpu,b=1,a=2 value=1", "cpu"),
        ("=cpu value=1", "=cpu"),
        ("cpu  value=1  123  ", "cpu"),
        ("  cpu value=1", "cpu"),
        ("cpu value=1\t", "cpu"),
        ("cpu value=t\t\0\r\n", "cpu"),
        ("cpu value=\"x\"\t", "cpu"),
        ("cpu value=1\t123", "!invalid number"),
        ("cpu value=\"x\"\t1", "!invalid field format"),
        ("cpu value=1 123\r\n", "cpu"),
        ("cpu value=1\r", "cpu"),
        ("温度,地点=北京 值=1", "温度"),
        ("cpu value=1e308", "cpu"),
        ("cpu value=1e-400", "cpu"),
        // Measurement and tag set.
        (",host=a value=1", "!missing measurement"),
        ("cpu", "!missing fields"),
        ("cpu ", "!missing fields"),
        ("cpu\\ value=1", "!missing fields"),
        ("cpu,host=a", "!missing fields"),
        ("cpu,host=a ", "!missing fields"),
        ("cpu, value=1", "!missing tag key"),
        ("cpu,=a value=1", "!missing tag key"),
        ("cpu,host value=1", "!missing tag value"),
        ("cpu,host= value=1", "!missing tag value"),
        ("cpu,host=a, value=1", "!missing tag key"),
        ("cpu,host=a=b value=1", "!invalid tag format"),
        ("cpu,host==a value=1", "!invalid tag format"),
        ("cpu,host=a,host=b value=1", "!duplicate tags"),
        ("cpu,b=1,a=2,b=3 value=1", "!duplicate tags"),
        // Field set.
        ("cpu value", "!invalid field format"),
        ("cpu value=1,", "!invalid field format"),
        ("cpu value=1,other", "!invalid field format"),
        ("cpu value=1, other=2", "!invalid field format"),
        ("cpu =1", "!missing field key"),
        ("cpu value=1,=2", "!missing field key"),
        ("cpu value=", "!missing field value"),
        ("cpu value= 1", "!missing field value"),
        ("cpu value=,x=1", "!missing field value"),
        ("cpu value=\r\n", "!missing field value"),
        ("cpu value=1.2.3", "!invalid number"),
        ("cpu value=-", "!invalid number"),
        ("cpu value=.", "!invalid number"),
        ("cpu value=1e", "!invalid number"),
        ("cpu value=1x", "!invalid number"),
        ("cpu value=NaN", "!invalid number"),
        ("cpu value=nan", "!invalid number"),
        ("cpu value=1.5i", "!invalid number"),
        ("cpu value=-1u", "!invalid number"),
        ("cpu value=1iu", "!invalid number"),
        ("cpu value=1e999", "!invalid float"),
        (
            "cpu value=9223372036854775808i",
            "!unable to parse integer 9223372036854775808: value out of range",
        ),
        (
            "cpu value=18446744073709551616u",
            "!unable to parse unsigned 18446744073709551616: value out of range",
        ),
        ("cpu value=yes", "!invalid boolean"),
        ("cpu value=tru", "!invalid boolean"),
        ("cpu value=tRUE", "!invalid boolean"),
        ("cpu value=\"abc", "!unbalanced quotes"),
        ("cpu value=\"abc\\\"", "!unbalanced quotes"),
        ("cpu value=\"a\"b", "!invalid field format"),
        // Timestamp.
        ("cpu value=1 12a", "!bad timestamp"),
        ("cpu value=1 -", "!bad timestamp"),
        ("cpu value=1 1.5", "!bad timestamp"),
        ("cpu value=1 99999999999999999999", "!bad timestamp"),
        ("cpu value=1 123 456", "!point is invalid"),
    ];

    #[test]
    fn corpus() {
        let mut failures = Vec::new();
        for &(line, expected) in CORPUS {
            let want = match expected.strip_prefix('!') {
                Some(reason) => Err(reason.to_string()),
                None => Ok(expected.to_string()),
            };
            let got = outcome(line);
            if got != want {
                failures.push(format!("{line:?}: expected {want:?}, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn splits_a_body_into_points_with_line_numbers() {
        let body = "# a comment\r\ncpu,host=a value=1 1\r\n\r\n   \nmem free=2i 2\n  # indented comment\ndisk used=3u\n";
        let points = parse_points(body).unwrap();
        let got: Vec<_> = points.iter().map(|p| (p.line_number, p.line, p.measurement.as_ref())).collect();
        assert_eq!(
            got,
            [(2, "cpu,host=a value=1 1", "cpu"), (5, "mem free=2i 2", "mem"), (7, "disk used=3u", "disk")]
        );
    }

    #[test]
    fn the_iterator_gives_each_points_span_and_stops_after_the_first_error() {
        let body = "# c\n  cpu v=1 1 \r\nlog s=\"a\nb\"\nmem v=2";
        let spans: Vec<_> = points(body).map(|p| p.map(|p| &body[p.start..p.next])).collect();
        assert_eq!(spans, [Ok("cpu v=1 1 \r\n"), Ok("log s=\"a\nb\"\n"), Ok("mem v=2")]);
        let mut it = points("cpu v=1\nbad\ncpu v=2\n");
        assert!(it.next().is_some_and(|p| p.is_ok()));
        assert!(it.next().is_some_and(|p| p.is_err_and(|e| e.line_number == 2)));
        assert!(it.next().is_none(), "nothing after the first error");
    }

    #[test]
    fn line_leaves_out_leading_and_trailing_blanks_and_the_line_ending() {
        let body = "\t cpu value=1  123 \t\r\nmem free=t\t\r\nio s=\"a b\" \n";
        let lines: Vec<_> = parse_points(body).unwrap().iter().map(|p| p.line).collect();
        assert_eq!(lines, ["cpu value=1  123", "mem free=t", "io s=\"a b\""]);
    }

    #[test]
    fn empty_and_comment_only_bodies_have_no_points() {
        assert_eq!(parse_points("").unwrap(), []);
        assert_eq!(parse_points("\n\n  \r\n#x\n").unwrap(), []);
    }

    #[test]
    fn measurement_is_borrowed_unless_escaped() {
        let points = parse_points("cpu v=1\nc\\ pu v=1\n").unwrap();
        assert!(matches!(points[0].measurement, Cow::Borrowed("cpu")));
        assert!(matches!(&points[1].measurement, Cow::Owned(m) if m == "c pu"));
    }

    #[test]
    fn a_string_value_may_span_lines() {
        let body = "log msg=\"first\nsecond\\\"\n\" 1\nlog msg=\"x\"\n";
        let points = parse_points(body).unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].line, "log msg=\"first\nsecond\\\"\n\" 1");
        assert_eq!((points[1].line_number, points[1].line), (4, "log msg=\"x\""));
    }

    #[test]
    fn the_first_bad_line_is_reported_with_its_number_and_text() {
        let body = "cpu value=1\n\ncpu value=oops 5\r\ncpu\n";
        let e = parse_points(body).unwrap_err();
        assert_eq!(
            e,
            LineProtocolError {
                line_number: 3,
                line: "cpu value=oops 5".into(),
                reason: "invalid boolean".into()
            }
        );
        assert_eq!(e.to_string(), "unable to parse 'cpu value=oops 5': invalid boolean (line 3)");
    }

    #[test]
    fn unbalanced_quotes_report_the_line_of_the_opening_quote() {
        let e = parse_points("cpu value=1\ncpu s=\"open\ncpu value=2\ncpu value=3\n").unwrap_err();
        assert_eq!(
            (e.line_number, e.line.as_str(), e.reason.as_str()),
            (2, "cpu s=\"open", "unbalanced quotes")
        );
    }

    #[test]
    fn an_error_after_a_multi_line_string_shows_the_text_up_to_it() {
        let e = parse_points("log msg=\"a\nb\",n=x\n").unwrap_err();
        assert_eq!(
            (e.line_number, e.line.as_str(), e.reason.as_str()),
            (1, "log msg=\"a\nb\",n=x", "invalid boolean")
        );
    }

    #[test]
    fn a_backslash_does_not_escape_a_line_ending_outside_strings() {
        let e = parse_points("cpu,host=a\\\nb value=1\n").unwrap_err();
        assert_eq!((e.line.as_str(), e.reason.as_str()), ("cpu,host=a\\", "missing fields"));
    }

    #[test]
    fn series_keys_longer_than_influxdb_allows_are_refused() {
        let ok = format!("cpu,t={} v=1", "x".repeat(MAX_KEY_BYTES - 6));
        assert!(parse_points(&ok).is_ok());
        let long = format!("cpu,t={} v=1", "x".repeat(MAX_KEY_BYTES - 5));
        assert_eq!(parse_points(&long).unwrap_err().reason, "max key length exceeded: 65536 > 65535");
    }

    #[test]
    fn precision() {
        for p in ["", "n", "ns", "u", "us", "\u{b5}", "\u{3bc}", "ms", "s", "m", "h"] {
            assert!(normalize_precision(p).is_ok(), "{p:?}");
        }
        assert_eq!(normalize_precision("us"), Ok("u"));
        assert_eq!(normalize_precision("\u{b5}"), Ok("u"));
        assert_eq!(normalize_precision("ms"), Ok("ms"));
        assert_eq!(
            normalize_precision("x"),
            Err(r#"invalid precision "x" (use n, u, ms, s, m or h)"#.to_string())
        );
        assert!(normalize_precision("MS").is_err());
    }

    #[test]
    fn never_panics_on_truncated_or_odd_input() {
        let samples =
            ["cpu,host=a\\ b value=\"x\\\"y\",n=-1.5e-3,i=3i,u=4u,b=true 1\r\n", "\\,\\ \\=\\\"\u{e9}\0\t#"];
        for s in samples {
            for end in (0..=s.len()).filter(|&e| s.is_char_boundary(e)) {
                for start in (0..end).filter(|&b| s.is_char_boundary(b)) {
                    let _ = parse_points(&s[start..end]);
                }
            }
        }
    }

    #[test]
    fn timestamp_range_check_agrees_with_parsing() {
        let cases = [
            "0",
            "-0",
            "7",
            "-1",
            "000123",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "19223372036854775807",
            "00000000000000000009223372036854775807",
            "99999999999999999999",
            "-",
            "",
        ];
        for t in cases {
            assert_eq!(fits_i64(t.as_bytes()), t.parse::<i64>().is_ok(), "{t:?}");
        }
        for _ in 0..10_000 {
            let len = fastrand::usize(1..22);
            let mut t: String = (0..len).map(|_| fastrand::char('0'..='9')).collect();
            if fastrand::bool() {
                t.insert(0, '-');
            }
            assert_eq!(fits_i64(t.as_bytes()), t.parse::<i64>().is_ok(), "{t:?}");
        }
    }

    /// The lines of [`tag_value_reads_one_tag_of_a_point_unescaped`].
    const TAG_VALUE_LINES: &[&str] = &[
        "cpu,host=a,customer=c1 v=1 1",
        "cpu,customer=c1,host=a v=1",
        "cpu,host=a v=1",
        "cpu v=1,customer=\"x\"",
        "c\\,pu,customer=x v=1",
        "c\\ pu,customer=x v=1",
        "cpu,cust\\=omer=x,customer=y v=1",
        "cpu,cust\\=omer=x,customer=y v=1",
        "cpu,customer=a\\ b\\,c\\=d,host=h v=1",
        "cpu,customer=a\\b v=1",
        "cpu,host=customer v=1",
        "cpu,customers=x v=1",
    ];

    #[test]
    fn tag_value_reads_one_tag_of_a_point_unescaped() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("cpu,host=a,customer=c1 v=1 1", "customer", Some("c1")),
            ("cpu,customer=c1,host=a v=1", "customer", Some("c1")),
            ("cpu,host=a v=1", "customer", None),
            ("cpu v=1,customer=\"x\"", "customer", None),
            ("c\\,pu,customer=x v=1", "customer", Some("x")),
            ("c\\ pu,customer=x v=1", "customer", Some("x")),
            ("cpu,cust\\=omer=x,customer=y v=1", "cust=omer", Some("x")),
            ("cpu,cust\\=omer=x,customer=y v=1", "customer", Some("y")),
            ("cpu,customer=a\\ b\\,c\\=d,host=h v=1", "customer", Some("a b,c=d")),
            ("cpu,customer=a\\b v=1", "customer", Some("a\\b")),
            ("cpu,host=customer v=1", "customer", None),
            ("cpu,customers=x v=1", "customer", None),
        ];
        for (line, key, want) in cases {
            let point = parse_points(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(tag_value(point[0].line, key).as_deref(), *want, "{line}");
        }
        assert!(matches!(tag_value("m,t=v x=1", "t"), Some(Cow::Borrowed("v"))));
    }

    /// Both iterators on `body`, whole: the fast path ([`points`]) must
    /// give what the byte-by-byte scanner alone gives
    /// ([`points_byte_by_byte`], the reference), point for point, error for
    /// error (line number, text and reason).
    fn assert_same_as_reference(body: &str) {
        let fast: Vec<_> = points(body).collect();
        let reference: Vec<_> = points_byte_by_byte(body).collect();
        assert_eq!(fast, reference, "body {body:?}");
        for (f, r) in fast.iter().zip(&reference) {
            if let (Ok(f), Ok(r)) = (f, r) {
                assert_eq!(
                    matches!(f.measurement, Cow::Borrowed(_)),
                    matches!(r.measurement, Cow::Borrowed(_)),
                    "{body:?}"
                );
            }
        }
    }

    /// Every body the other tests of this module read.
    fn test_bodies() -> Vec<String> {
        let mut bodies: Vec<String> = CORPUS.iter().map(|(line, _)| line.to_string()).collect();
        bodies.extend(
            [
                "m\\\\ x=1,t=\"q f=1 1\nm v=2 2\n",
                "m\\\\ x=1,t=\"q f=\"a\nb\" 1\n",
                "m\\\\ x=1,t=\"q f=1 1",
                "m\\\\ x,t=\"q f=1 1\nm v=2 2\n",
                "m\\\\ x=1,t=q f=1 1\nm v=2 2\n",
                "m\\\\\\ x=1,t=\"q f=1 1\nm v=2 2\n",
                "# a comment\r\ncpu,host=a value=1 1\r\n\r\n   \nmem free=2i 2\n  # indented comment\ndisk used=3u\n",
                "# c\n  cpu v=1 1 \r\nlog s=\"a\nb\"\nmem v=2",
                "cpu v=1\nbad\ncpu v=2\n",
                "\t cpu value=1  123 \t\r\nmem free=t\t\r\nio s=\"a b\" \n",
                "",
                "\n\n  \r\n#x\n",
                "cpu v=1\nc\\ pu v=1\n",
                "log msg=\"first\nsecond\\\"\n\" 1\nlog msg=\"x\"\n",
                "cpu value=1\n\ncpu value=oops 5\r\ncpu\n",
                "cpu value=1\ncpu s=\"open\ncpu value=2\ncpu value=3\n",
                "log msg=\"a\nb\",n=x\n",
                "cpu,host=a\\\nb value=1\n",
                "cpu,host=a\\ b value=\"x\\\"y\",n=-1.5e-3,i=3i,u=4u,b=true 1\r\n",
                "\\,\\ \\=\\\"\u{e9}\0\t#",
            ]
            .map(String::from),
        );
        bodies.push(format!("cpu,t={} v=1", "x".repeat(MAX_KEY_BYTES - 6)));
        bodies.push(format!("cpu,t={} v=1", "x".repeat(MAX_KEY_BYTES - 5)));
        bodies.push(format!("cpu,t={} v=1 1\nm v=2", "x".repeat(MAX_KEY_BYTES - 6)));
        bodies.extend(TAG_VALUE_LINES.iter().map(|line| line.to_string()));
        bodies
    }

    /// Lines of the shapes the write path sees most (Telegraf's), which the
    /// fast path reads itself.
    const COMMON_LINES: &[&str] = &[
        "cpu,host=server001,region=us-west,cpu=cpu-total usage_idle=12.34,usage_user=5i,usage_system=87.66 1700000000000000000",
        "mem,host=server002,region=us-east used_percent=99.5,available=1049600i,swap_on=true 1700000001000000000",
        "disk,host=server003,region=eu-central,path=/var/lib,fstype=ext4 used=8192i,free=17179869184i,inodes_used=3i 1700000002000000000",
        "net,host=server004,region=ap-south,interface=eth0 bytes_recv=3000i,bytes_sent=1800i,err_in=0i 1700000003000000000",
        "cpu value=1",
        "cpu value=1 -1",
        "m a=-1.5,b=.5,c=1.,d=7u,e=-3i,f=F,g=FALSE 0",
        "温度,地点=北京 值=1",
        "=cpu,a=b x=t 9223372036854775807",
        "syslog,host=a,severity=info message=\"connection from 10.0.0.1, port=22 closed\",code=3i 1700000000000000000",
        "m s=\"\",t=\"x\"",
    ];

    #[test]
    fn the_fast_path_reads_the_common_shapes_itself() {
        let mut tag_keys = Vec::new();
        for line in COMMON_LINES {
            for body in
                [line.to_string(), format!("{line}\n"), format!("{line}\r\n"), format!("{line}\nm v=1")]
            {
                let parsed = fast_point(body.as_bytes(), 0, &mut tag_keys);
                assert!(parsed.is_some_and(|p| p.content_end == line.len()), "{body:?}");
                assert_same_as_reference(&body);
            }
        }
        // Not its shape: left to the byte-by-byte scanner.
        for line in [
            "cpu  v=1",
            "cpu v=1  1",
            "cpu v=1 1 ",
            "c\\ pu v=1",
            "cpu s=\"\\\"\"",
            "cpu v=1\t1",
            "cpu v=1e3",
        ] {
            if line != "cpu v=1e3" {
                assert!(fast_point(line.as_bytes(), 0, &mut tag_keys).is_none(), "{line:?}");
            }
            assert_same_as_reference(line);
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_reference_on_every_test_input() {
        for body in test_bodies() {
            assert_same_as_reference(&body);
            assert_same_as_reference(&format!("{body}\n"));
            assert_same_as_reference(&format!("{body}\r\nm v=1\n"));
            assert_same_as_reference(&format!("cpu v=1 1\n{body}"));
        }
        let valid: Vec<&str> = CORPUS.iter().filter(|(_, m)| !m.starts_with('!')).map(|(l, _)| *l).collect();
        assert_same_as_reference(&valid.join("\n"));
    }

    #[test]
    fn the_fast_path_agrees_with_the_reference_on_the_fuzz_inputs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
        let mut read = 0;
        for folder in ["corpus/line_protocol", "regressions/line_protocol"] {
            let Ok(entries) = std::fs::read_dir(root.join(folder)) else { continue };
            for entry in entries {
                let path = entry.expect("a fuzz input folder reads").path();
                if !path.is_file() {
                    continue;
                }
                let data = std::fs::read(&path).expect("a fuzz input reads");
                if let Ok(body) = std::str::from_utf8(&data) {
                    assert_same_as_reference(body);
                    read += 1;
                }
            }
        }
        assert!(read >= 5, "the fuzz corpus of line_protocol was not found under {}", root.display());
    }

    /// Random edits of well-formed lines, with the bytes that matter to
    /// line protocol: most of them malformed, or of shapes on the edge of
    /// the fast path's.
    #[test]
    fn the_fast_path_agrees_with_the_reference_on_mutated_lines() {
        const BYTES: &[u8] = b"\\,=\"\n\r\t 0123456789eE-+.iutfTF";
        let seeds: Vec<String> = COMMON_LINES
            .iter()
            .map(|l| l.to_string())
            .chain(CORPUS.iter().filter(|(_, m)| !m.starts_with('!')).map(|(l, _)| l.to_string()))
            .collect();
        let mut rng = fastrand::Rng::with_seed(8);
        let mut accepted = 0;
        for _ in 0..200_000 {
            let mut line = seeds[rng.usize(..seeds.len())].clone().into_bytes();
            if rng.u8(..4) == 0 {
                // Several lines, so that a line's end and the next start move.
                line.push(b'\n');
                line.extend_from_slice(seeds[rng.usize(..seeds.len())].as_bytes());
            }
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..=line.len());
                let byte = BYTES[rng.usize(..BYTES.len())];
                match rng.u8(..3) {
                    0 => line.insert(at, byte),
                    1 if at < line.len() => {
                        line.remove(at);
                    }
                    _ if at < line.len() => line[at] = byte,
                    _ => line.push(byte),
                }
            }
            // Edits may cut a multi-byte character: such bodies are refused
            // before parsing.
            let Ok(body) = String::from_utf8(line) else { continue };
            assert_same_as_reference(&body);
            accepted += usize::from(parse_points(&body).is_ok());
        }
        assert!(accepted > 10_000, "too few mutated lines were well-formed ({accepted}) to test acceptance");
    }

    /// Duplicate tag keys are found whatever their length, and keys alike
    /// in length, first and last byte but not equal are not taken for
    /// duplicates (both readers; up to 8 keys and past 8).
    #[test]
    fn duplicate_tag_keys_are_told_from_keys_that_only_look_alike() {
        for body in [
            "m,host=a,hast=b v=1",
            "m,ab=1,ab=2 v=1",
            "m,a=1,b=2,c=3,d=4,e=5,f=6,g=7,hxst=8,host=9 v=1",
            "m,host=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,host=9 v=1",
            "m,k1=a,k2=b,k3=c,k4=d,k5=e,k6=f,k7=g,k1=h v=1",
            "m,x=1,y=2,x=3 v=1",
        ] {
            assert_same_as_reference(body);
        }
        let dup = |body: &str| parse_points(body).err().map(|e| e.reason);
        assert_eq!(dup("m,host=a,hast=b v=1"), None);
        assert_eq!(dup("m,a=1,b=2,c=3,d=4,e=5,f=6,g=7,hxst=8,host=9 v=1"), None);
        assert_eq!(dup("m,ab=1,ab=2 v=1").as_deref(), Some("duplicate tags"));
        assert_eq!(dup("m,k1=a,k2=b,k3=c,k4=d,k5=e,k6=f,k7=g,k1=h v=1").as_deref(), Some("duplicate tags"));
        assert_eq!(dup("m,host=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,host=9 v=1").as_deref(), Some("duplicate tags"));
    }

    #[test]
    fn the_special_bytes_are_found_as_a_byte_by_byte_search_finds_them() {
        let by_byte = |block: &[u8; 64]| {
            let special = |c: u8| c <= b' ' || matches!(c, b',' | b'=' | b'"' | b'\\');
            (0..64).filter(|&k| special(block[k])).fold(0u64, |m, k| m | 1 << k)
        };
        let mut rng = fastrand::Rng::with_seed(64);
        let mut blocks: Vec<[u8; 64]> = (0..=255u8).map(|c| [c; 64]).collect();
        for _ in 0..20_000 {
            blocks.push(std::array::from_fn(|_| match rng.u8(..3) {
                0 => rng.u8(..),
                1 => b",= \"\\\n\r\t\0\x1f!#-<>[]{|}\x7f\x80\xff"[rng.usize(..22)],
                _ => rng.u8(b'0'..=b'z'),
            }));
        }
        for block in &blocks {
            assert_eq!(specials64(block), by_byte(block), "{block:?}");
            assert_eq!(specials64_swar(block), by_byte(block), "{block:?}");
        }
        // The end of the body reads as line endings.
        let mut specials = Specials::new(b"ab", 0);
        assert_eq!((specials.next(), specials.next()), ((2, b'\n'), (3, b'\n')));
    }

    #[test]
    fn the_shortcuts_for_numbers_and_timestamps_accept_only_what_the_full_checks_accept() {
        let mut rng = fastrand::Rng::with_seed(10);
        let mut cases: Vec<Vec<u8>> = [
            "0",
            "-0",
            "1.",
            ".5",
            ".",
            "-",
            "-.",
            "1..2",
            "1.2.3",
            "5i",
            "-5i",
            "i",
            "-i",
            "5u",
            "-5u",
            "u",
            "1.5i",
            "1.5u",
            "999999999999999999i",
            "9999999999999999999i",
            "18446744073709551615u",
            "99999999999999999999u",
            "8999999999999999999",
            "9223372036854775807",
            "9223372036854775808",
            "0000000000000000000",
            "-1",
            "",
            "1e5",
            "1 ",
            "12a",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        cases.push(vec![b'1'; 301]);
        cases.push(vec![b'1'; 300]);
        for _ in 0..50_000 {
            let len = rng.usize(0..24);
            cases.push(
                (0..len)
                    .map(|_| {
                        let alphabet = if rng.bool() { 10 } else { 17 };
                        b"0123456789.-iue+x"[rng.usize(..alphabet)]
                    })
                    .collect(),
            );
        }
        for t in &cases {
            if plain_number(t) {
                assert_eq!(check_number(t), Ok(()), "{:?}", String::from_utf8_lossy(t));
            }
            if plain_timestamp(t) {
                assert!(fits_i64(t), "{:?}", String::from_utf8_lossy(t));
            }
            assert_eq!(all_digits(t), t.iter().all(u8::is_ascii_digit), "{t:?}");
        }
    }
}
