//! A write body validated ahead of the write path: the CPU work of a write
//! (gzip decoding, the UTF-8 check and line protocol validation, about
//! 60 ns per line: `cargo bench --bench parse`) as a pure job that any thread may run.
//!
//! The proxy itself is single-threaded (`Rc`/`RefCell` inside): routing,
//! delivery and the write queues stay on its thread, so the write queue's
//! ordering and durability rules do not change. What can run elsewhere is
//! the part of a write that reads every byte and depends on nothing but the
//! body: a host takes a write request's body into a [`WriteBodyJob`]
//! ([`crate::proxy::Proxy::write_body_job`], no copy), runs
//! [`WriteBodyJob::run`] where it likes (the native host on its worker
//! threads, `crate::native::WorkerPool`; the WASI host never does, the
//! write path then runs the same job inline), and hands the [`PreparedBody`]
//! to [`crate::proxy::Proxy::handle_prepared`] with the request.
//!
//! The result is exactly what the write path computes inline: the decoded
//! lines ([`SharedBytes`], the client's own buffer when the body was not
//! compressed), the client's gzip bytes when it was, and per point the
//! spans [`crate::line_protocol::points_past_errors`] yields (line number,
//! line, where the next line starts, measurement, whether it has a
//! timestamp), kept as byte offsets (24 bytes a point) so that the write
//! path's two passes iterate them instead of parsing twice (unless they
//! would take more than half the body's own size: a body of short lines is
//! parsed again instead, see [`MAX_SPAN_BYTES`]), and every
//! malformed line's error, read past as InfluxDB 1.x reads past it (its
//! partial writes); or the InfluxDB-style error the write path answers for
//! the whole body (same status, same text).
//!
//! No IO, no clock: this module is part of the core.

use crate::error::ProxyError;
use crate::http::{Request, SharedBytes};
use crate::line_protocol::{points_past_errors, LineProtocolError, Point};
use std::borrow::Cow;
use std::io::Read;
use std::ops::Range;

/// A write request's body as the client sent it, with what validating it
/// needs: its `Content-Encoding` and the proxy's `max_body_bytes` (bytes,
/// after gzip decoding). `Send`; cloning copies no body bytes.
#[derive(Debug, Clone)]
pub struct WriteBodyJob {
    raw: SharedBytes,
    content_encoding: Option<String>,
    max_body_bytes: u64,
}

impl WriteBodyJob {
    /// Takes `request`'s body (leaving it empty; no copy) and its
    /// `Content-Encoding` header, to be validated with limit
    /// `max_body_bytes` (bytes after decoding; the configuration's
    /// `max_body_bytes`).
    pub fn take(request: &mut Request, max_body_bytes: u64) -> WriteBodyJob {
        WriteBodyJob {
            raw: SharedBytes::from(std::mem::take(&mut request.body)),
            content_encoding: request.header("content-encoding").map(str::to_string),
            max_body_bytes,
        }
    }

    /// The body's size as sent (bytes, compressed when it is gzip).
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Decodes and validates the body: pure CPU work (no IO, no clock), safe
    /// to run on any thread. Errors are kept in the result, as the write
    /// path answers them: bad gzip, an unknown encoding or invalid UTF-8
    /// (400), over `max_body_bytes` after decoding (413), over 4 GiB
    /// decoded (413, `request body too large: over 4294967295 bytes`: the
    /// spans are 32-bit offsets). Malformed lines are not such an error:
    /// they are kept apart from the valid points around them
    /// (`ValidatedBody::malformed`), for the write path to answer as
    /// InfluxDB does (a partial write) or to refuse the whole body.
    pub fn run(mut self) -> PreparedBody {
        let validated = validate(&mut self.raw, self.content_encoding.as_deref(), self.max_body_bytes);
        PreparedBody { job: self, validated }
    }
}

/// A write body validated by [`WriteBodyJob::run`], or the error to answer
/// for it. `Send`.
#[derive(Debug)]
pub struct PreparedBody {
    job: WriteBodyJob,
    validated: Result<ValidatedBody, ProxyError>,
}

impl PreparedBody {
    /// The result, when it was computed for `content_encoding` and
    /// `max_body_bytes` (a reload may have changed the limit since): else
    /// the body validated again (inline) with those.
    pub(crate) fn for_request(
        self,
        content_encoding: Option<&str>,
        max_body_bytes: u64,
    ) -> Result<ValidatedBody, ProxyError> {
        if self.job.content_encoding.as_deref() == content_encoding
            && self.job.max_body_bytes == max_body_bytes
        {
            return self.validated;
        }
        let job = WriteBodyJob {
            content_encoding: content_encoding.map(str::to_string),
            max_body_bytes,
            ..self.job
        };
        job.run().validated
    }
}

impl PreparedBody {
    /// This result when it was computed for `content_encoding` and
    /// `max_body_bytes`, else the body validated again with those (as
    /// [`PreparedBody::for_request`] does), kept as a `PreparedBody` for a
    /// caller that reads it ([`PreparedBody::validated`]) before handing it
    /// to the write path ([`crate::api_v3`]).
    pub(crate) fn checked(self, content_encoding: Option<&str>, max_body_bytes: u64) -> PreparedBody {
        if self.job.content_encoding.as_deref() == content_encoding
            && self.job.max_body_bytes == max_body_bytes
        {
            return self;
        }
        WriteBodyJob { content_encoding: content_encoding.map(str::to_string), max_body_bytes, ..self.job }
            .run()
    }

    /// The validated body, or the error the write path answers for it.
    pub(crate) fn validated(&self) -> Result<&ValidatedBody, &ProxyError> {
        self.validated.as_ref()
    }

    /// The job this came from (its bytes shared, not copied), to validate
    /// the same body again.
    pub(crate) fn job(&self) -> WriteBodyJob {
        self.job.clone()
    }
}

/// A decoded write body: its line protocol, the spans of its valid points
/// and the errors of its malformed lines.
#[derive(Debug)]
pub struct ValidatedBody {
    /// The decoded line protocol (valid UTF-8): the client's buffer itself
    /// when it was not compressed.
    lines: SharedBytes,
    /// The client's gzip bytes, when the body was compressed.
    gzip: Option<SharedBytes>,
    /// The valid points' spans; `None` when they would take more memory
    /// than the body itself ([`MAX_SPAN_BYTES`]): the points are then parsed
    /// again when iterated.
    spans: Option<Vec<PointSpan>>,
    /// Measurement names that held escapes, unescaped (the spans of such
    /// points index into this).
    names: Vec<String>,
    /// Every malformed line's error, in body order (`spans` holds the
    /// valid points before, between and after them).
    malformed: Vec<LineProtocolError>,
    /// Counts of the valid points, taken as they were validated.
    summary: PointsSummary,
}

/// What the write path would otherwise count by walking the valid points
/// once more ([`ValidatedBody::summary`]): with a route that is the same
/// for every measurement, these are all it needs of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PointsSummary {
    /// Valid points.
    pub points: usize,
    /// Valid points without a timestamp.
    pub without_timestamp: usize,
    /// Bytes of the valid points' lines, each counted with one `\n`.
    pub line_bytes: usize,
    /// Whether the body is nothing but its points, each its line and `\n`
    /// (the last one's `\n` may be missing), and holds at least one: no
    /// comments, blank lines, `\r\n`, blanks around a line or malformed
    /// lines (the write path's test for forwarding a body as it came).
    pub only_points: bool,
}

/// One point of a body, as byte offsets into [`ValidatedBody::lines`]
/// (bodies of at most 4 GiB).
#[derive(Debug, Clone, Copy)]
struct PointSpan {
    line_number: u32,
    start: u32,
    line_end: u32,
    next: u32,
    /// Byte range of the measurement name in the body, or (escaped) its
    /// index in [`ValidatedBody::names`] and 0.
    measurement: (u32, u32),
    /// Bit 0: has a timestamp; bit 1: the measurement is in `names`.
    flags: u8,
}

/// The spans of a body are kept while they take at most this many bytes, or
/// half the body's own size if that is more: 24 bytes a point is a quarter
/// of a line in bodies of real points (telegraf's are about 100 bytes a
/// line), but a body of short lines (`m v=1 1700000000`, 17 bytes; `m v=1`,
/// 6) would need about its own size again or four times it, and the write
/// path's memory bound (`max_body_bytes` three times over, plus 20 MB, for
/// the whole process: under wasmtime that includes the runtime's own 28 MiB)
/// would not hold; such a body is parsed again instead. The vector never
/// grows past this cap (no doubling beyond it).
const MAX_SPAN_BYTES: usize = 1 << 20;

const HAS_TIMESTAMP: u8 = 1;
const ESCAPED: u8 = 2;

impl ValidatedBody {
    /// The errors of the malformed lines, in body order (empty when every
    /// line is valid); [`ValidatedBody::points`] holds the others.
    pub(crate) fn malformed(&self) -> &[LineProtocolError] {
        &self.malformed
    }

    /// The decoded line protocol.
    pub(crate) fn lines(&self) -> &SharedBytes {
        &self.lines
    }

    /// The client's gzip bytes, when the body was compressed.
    pub(crate) fn gzip(&self) -> Option<&SharedBytes> {
        self.gzip.as_ref()
    }

    /// The decoded body as text (checked to be UTF-8 when validated).
    pub(crate) fn text(&self) -> &str {
        // Checked by `validate`, which keeps the lines as text (no second
        // pass over them) unless their buffer was shared; never fails (an
        // empty text if it did).
        match self.lines.as_str() {
            Some(text) => text,
            None => std::str::from_utf8(&self.lines).unwrap_or_default(),
        }
    }

    /// Counts of the valid points (see [`PointsSummary`]).
    pub(crate) fn summary(&self) -> PointsSummary {
        self.summary
    }

    /// The valid points, in body order, exactly as
    /// [`crate::line_protocol::points_past_errors`] yields them (the
    /// malformed lines left out: [`ValidatedBody::malformed`]). `text` is
    /// this body's [`ValidatedBody::text`], passed in so that a write path
    /// that walks the points twice checks the body's UTF-8 once.
    pub(crate) fn points<'t>(&'t self, text: &'t str) -> impl Iterator<Item = Point<'t>> + 't {
        match &self.spans {
            Some(spans) => BodyPoints::Spans { text, names: &self.names, spans: spans.iter() },
            // Validated whole already: parsed again, the same points.
            None => BodyPoints::Parsed(points_past_errors(text)),
        }
    }
}

/// [`ValidatedBody::points`]: from the spans, or parsed again.
enum BodyPoints<'t> {
    Spans { text: &'t str, names: &'t [String], spans: std::slice::Iter<'t, PointSpan> },
    Parsed(crate::line_protocol::Points<'t>),
}

impl<'t> Iterator for BodyPoints<'t> {
    type Item = Point<'t>;

    fn next(&mut self) -> Option<Point<'t>> {
        match self {
            BodyPoints::Spans { text, names, spans } => {
                let s = spans.next()?;
                let text: &'t str = text;
                let at = |r: Range<u32>| text.get(r.start as usize..r.end as usize).unwrap_or_default();
                Some(Point {
                    line_number: s.line_number as usize,
                    line: at(s.start..s.line_end),
                    start: s.start as usize,
                    next: s.next as usize,
                    measurement: Cow::Borrowed(if s.flags & ESCAPED != 0 {
                        names.get(s.measurement.0 as usize).map_or("", String::as_str)
                    } else {
                        at(s.measurement.0..s.measurement.1)
                    }),
                    has_timestamp: s.flags & HAS_TIMESTAMP != 0,
                })
            }
            // Malformed lines are skipped, as when the spans were taken.
            BodyPoints::Parsed(parsed) => parsed.find_map(Result::ok),
        }
    }
}

/// The validation of [`WriteBodyJob::run`]. An uncompressed `raw` is
/// replaced by the same bytes known to be text ([`SharedBytes::into_text`]:
/// checked once, no copy), which the lines then share.
fn validate(
    raw: &mut SharedBytes,
    encoding: Option<&str>,
    max_bytes: u64,
) -> Result<ValidatedBody, ProxyError> {
    let not_utf8 = |e: std::str::Utf8Error| {
        ProxyError::BadRequest(format!("unable to parse body: not valid UTF-8 at byte {}", e.valid_up_to()))
    };
    let decoded = match decode(raw, encoding, max_bytes)? {
        Cow::Borrowed(_) => None,
        Cow::Owned(decoded) => Some(decoded),
    };
    let (lines, gzip) = match decoded {
        None => {
            let (checked, error) = match std::mem::take(raw).into_text() {
                Ok(text) => (text, None),
                Err((bytes, e)) => (bytes, Some(e)),
            };
            *raw = checked;
            if let Some(e) = error {
                return Err(not_utf8(e));
            }
            (raw.clone(), None)
        }
        Some(decoded) => match String::from_utf8(decoded) {
            Ok(text) => (SharedBytes::from(text), Some(raw.clone())),
            Err(e) => return Err(not_utf8(e.utf8_error())),
        },
    };
    // Known to be text unless `raw` was shared (then checked, not kept).
    let text = match lines.as_str() {
        Some(text) => text,
        None => std::str::from_utf8(&lines).map_err(not_utf8)?,
    };
    let offset = |n: usize| {
        u32::try_from(n)
            .map_err(|_| ProxyError::TooLarge(format!("request body too large: over {} bytes", u32::MAX)))
    };
    offset(text.len())?;
    // A guess (about 100 bytes a line in telegraf-like bodies), not a count:
    // counting the lines first would read the body once more.
    let max_spans = MAX_SPAN_BYTES.max(text.len() / 2) / std::mem::size_of::<PointSpan>();
    let mut spans = Some(Vec::with_capacity((text.len() / 96 + 1).min(max_spans)));
    let mut names = Vec::new();
    let mut malformed = Vec::new();
    let mut summary = PointsSummary { only_points: true, ..Default::default() };
    // Where the next point must start for the body to be only points.
    let mut next = 0;
    for point in points_past_errors(text) {
        let point = match point {
            Ok(point) => point,
            Err(e) => {
                malformed.push(e);
                summary.only_points = false;
                continue;
            }
        };
        summary.points += 1;
        summary.without_timestamp += usize::from(!point.has_timestamp);
        summary.line_bytes += point.line.len() + 1;
        summary.only_points &= point.is_exact_at(text.as_bytes(), next);
        next = point.next;
        let Some(kept) = spans.as_mut() else { continue };
        if kept.len() == max_spans {
            (spans, names) = (None, Vec::new());
            continue;
        }
        if kept.len() == kept.capacity() {
            // Doubling, but not past the cap: a vector twice the cap would
            // be the memory the cap is there to save.
            kept.reserve_exact(kept.len().max(16).min(max_spans - kept.len()));
        }
        let mut flags = if point.has_timestamp { HAS_TIMESTAMP } else { 0 };
        let measurement = match &point.measurement {
            // Unescaped, the name is the start of its line (line protocol's
            // first element), as `points()` borrows it.
            Cow::Borrowed(m) => (offset(point.start)?, offset(point.start + m.len())?),
            Cow::Owned(m) => {
                flags |= ESCAPED;
                names.push(m.to_string());
                (offset(names.len() - 1)?, 0)
            }
        };
        kept.push(PointSpan {
            line_number: offset(point.line_number)?,
            start: offset(point.start)?,
            line_end: offset(point.start + point.line.len())?,
            next: offset(point.next)?,
            measurement,
            flags,
        });
    }
    summary.only_points &= next == text.len() && summary.points > 0;
    Ok(ValidatedBody { lines, gzip, spans, names, malformed, summary })
}

/// `body` sent with `Content-Encoding: encoding`, gunzipped when that is
/// gzip. Errors: bad gzip (400), decoded size over `max_bytes` (413), another
/// encoding (400).
fn decode<'b>(body: &'b [u8], encoding: Option<&str>, max_bytes: u64) -> Result<Cow<'b, [u8]>, ProxyError> {
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => Ok(Cow::Borrowed(body)),
        // Exactly `gzip`, as InfluxDB 1.x's write handler compares it
        // (services/httpd/handler.go `serveWrite`): another spelling is
        // refused there (the compressed bytes do not parse), so here too.
        Some("gzip") => {
            // A guess (the decoded size is unknown), never over the limit.
            let guess = body.len().saturating_mul(4).min(usize::try_from(max_bytes).unwrap_or(usize::MAX));
            let mut out = Vec::with_capacity(guess);
            flate2::read::MultiGzDecoder::new(body)
                .take(max_bytes.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(|e| ProxyError::BadRequest(format!("unable to decode gzip body: {e}")))?;
            if out.len() as u64 > max_bytes {
                return Err(ProxyError::TooLarge(format!(
                    "request body too large: over {max_bytes} bytes after gzip decoding"
                )));
            }
            Ok(Cow::Owned(out))
        }
        Some(other) => {
            Err(ProxyError::BadRequest(format!("unsupported Content-Encoding {other:?} (use gzip)")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Method;
    use std::io::Write;

    fn job(body: &[u8], encoding: Option<&str>) -> WriteBodyJob {
        let mut request = Request::new(crate::http::Method::Post, "/write");
        request.body = body.to_vec();
        if let Some(e) = encoding {
            request.headers.push(("content-encoding".into(), e.into()));
        }
        WriteBodyJob::take(&mut request, 1 << 20)
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// The spans give back exactly the points `points()` yields.
    #[test]
    fn the_spans_give_back_the_points_the_parser_yields() {
        let body = "# c\ncpu,host=a v=1 1\r\n\n  m\\,x\\ y v=2\ncpu v=\"a\nb\" 3\t\nlast v=1";
        let prepared = job(body.as_bytes(), None).run();
        let validated = prepared.validated.unwrap();
        let expected: Vec<Point<'_>> = crate::line_protocol::points(body).map(Result::unwrap).collect();
        assert_eq!(validated.points(validated.text()).collect::<Vec<_>>(), expected);
        assert_eq!(expected.len(), 4);
        assert_eq!(validated.points(validated.text()).nth(1).unwrap().measurement, "m,x y");
        assert!(validated.gzip().is_none());
        let gz = gzip(body.as_bytes());
        let validated = job(&gz, Some("gzip")).run().validated.unwrap();
        assert_eq!(validated.points(validated.text()).collect::<Vec<_>>(), expected);
        assert_eq!(&validated.gzip().unwrap()[..], &gz[..]);
    }

    /// A body of tiny lines, whose spans would take four times its size,
    /// keeps none, and yields the same points (parsed again) and errors; so
    /// does a body of short timestamped lines (the spans about its size); a
    /// body of ordinary lines keeps its spans, in a vector no larger than
    /// half the body.
    #[test]
    fn a_body_whose_spans_would_outweigh_half_of_it_keeps_none_and_yields_the_same_points() {
        let mut body: String = (0..60_000).map(|i| format!("m v={}\n", i % 10)).collect();
        body.push_str("m v=\nm v=1\n");
        let validated = job(body.as_bytes(), None).run().validated.unwrap();
        assert!(validated.spans.is_none(), "60,000 spans of 24 bytes outweigh 360 kB");
        let expected: Vec<Point<'_>> = points_past_errors(&body).filter_map(Result::ok).collect();
        assert_eq!(expected.len(), 60_001);
        assert_eq!(validated.points(validated.text()).collect::<Vec<_>>(), expected);
        let errors: Vec<_> = validated.malformed().iter().map(|e| e.line_number).collect();
        assert_eq!(errors, [60_001]);

        let short: String =
            (0..60_000).map(|i| format!("p10 f=1 {}\n", 1_700_000_000_000_000_000u64 + i)).collect();
        let validated = job(short.as_bytes(), None).run().validated.unwrap();
        assert!(validated.spans.is_none(), "1.44 MB of spans outweigh half of a 1.7 MB body");
        let expected: Vec<Point<'_>> = points_past_errors(&short).filter_map(Result::ok).collect();
        assert_eq!(validated.points(validated.text()).collect::<Vec<_>>(), expected);

        let ordinary: String = (0..60_000)
            .map(|i| {
                format!(
                    "cpu,host=server{i:05},region=eu-west,dc=fra1 usage_user={i}.5,usage_system=0.25 {i}\n"
                )
            })
            .collect();
        let validated = job(ordinary.as_bytes(), None).run().validated.unwrap();
        let spans = validated.spans.as_ref().expect("ordinary lines keep their spans");
        assert_eq!(spans.len(), 60_000);
        assert!(
            spans.capacity() * std::mem::size_of::<PointSpan>() <= ordinary.len() / 2,
            "the vector ({} spans) stays within half the body ({} bytes)",
            spans.capacity(),
            ordinary.len()
        );
    }

    /// A plain body is checked for UTF-8 once, by the validation: its lines
    /// are the client's buffer itself, known to be text afterwards (the
    /// write path's `text()` reads no byte again); so are decoded gzip
    /// lines. Invalid UTF-8 is still the same 400.
    #[test]
    fn the_body_is_checked_for_utf8_once_and_stays_the_clients_buffer() {
        let body = b"cpu v=1 1\nmem v=2 2\n".to_vec();
        let mut request = Request::new(Method::Post, "/write?db=d");
        request.body = body;
        let at = request.body.as_ptr();
        let validated = WriteBodyJob::take(&mut request, 1 << 20).run().validated.unwrap();
        assert_eq!(validated.lines().as_ptr(), at, "no copy");
        assert_eq!(validated.lines().as_str(), Some("cpu v=1 1\nmem v=2 2\n"));
        assert_eq!(validated.text().as_ptr(), at);
        let gz = gzip(b"cpu v=1 1\n");
        let validated = job(&gz, Some("gzip")).run().validated.unwrap();
        assert_eq!(validated.lines().as_str(), Some("cpu v=1 1\n"));
        match job(b"cpu v=\xff 1\n", None).run().validated {
            Err(ProxyError::BadRequest(e)) => {
                assert_eq!(e, "unable to parse body: not valid UTF-8 at byte 6")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_are_kept_as_the_write_path_answers_them() {
        let validated = job(b"cpu v=1\ncpu\nmem v=2\n x y\r\n", None).run().validated.unwrap();
        let lines: Vec<_> = validated.points(validated.text()).map(|p| (p.line_number, p.line)).collect();
        assert_eq!(lines, [(1, "cpu v=1"), (3, "mem v=2")], "the points around the bad lines");
        let errors: Vec<_> =
            validated.malformed().iter().map(|e| (e.line_number, e.influxdb_text())).collect();
        assert_eq!(
            errors,
            [
                (2, "unable to parse 'cpu': missing fields".into()),
                (4, "unable to parse 'x y\r': invalid field format".into())
            ]
        );
        let e = job(b"cpu v=\xff", None).run().validated.unwrap_err();
        assert_eq!(e.message(), "unable to parse body: not valid UTF-8 at byte 6");
        let e = job(b"x", Some("br")).run().validated.unwrap_err();
        assert_eq!(e.message(), "unsupported Content-Encoding \"br\" (use gzip)");
        let big = gzip(&vec![b'#'; (1 << 20) + 1]);
        let e = job(&big, Some("gzip")).run().validated.unwrap_err();
        assert_eq!(
            (e.status(), e.message()),
            (413, "request body too large: over 1048576 bytes after gzip decoding")
        );
    }

    /// A prepared body whose limit differs from the request's (a reload in
    /// between) is validated again with the request's.
    #[test]
    fn a_body_prepared_under_another_limit_is_validated_again() {
        let gz = gzip(&[b'#'; 2000]);
        let prepared = job(&gz, Some("gzip")).run();
        assert!(prepared.validated.is_ok());
        let prepared = job(&gz, Some("gzip")).run();
        let e = prepared.for_request(Some("gzip"), 1000).unwrap_err();
        assert_eq!(e.status(), 413);
    }
}
