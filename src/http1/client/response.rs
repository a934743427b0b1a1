//! Reading a backend's HTTP/1.1 response, by this module rather than async-h1:
//! async-h1 hands header values to http-types, which panics on bytes that are
//! not ASCII (`Headers::append`), buffers bodies without a bound, and ends a
//! `Content-Length` body quietly at the end of the connection.
//!
//! What is read, following RFC 9112 (HTTP/1.1 message syntax):
//! - the head (status line and header fields) up to [`MAX_RESPONSE_HEAD_BYTES`];
//!   a longer or malformed head is [`TransportError::Io`];
//! - header values are kept with every byte that is not visible ASCII, space
//!   or tab percent-encoded (`%C3%A9`), so that a value such as influxd's
//!   `X-Influxdb-Error: database not found: "données"` reaches the client
//!   readable and can never break a header line (section 5.5: field values
//!   are "historically" ISO-8859-1, and a recipient may treat other bytes as
//!   opaque data); obsolete line folding is replaced by a space (section 5.2);
//! - interim 1xx responses are skipped (section 15.2), `101` is an error (the
//!   proxy never asks for an upgrade);
//! - the body (section 6.3): none for HEAD, 204 and 304; `Transfer-Encoding:
//!   chunked` decoded (chunk extensions and trailers read and dropped);
//!   `Content-Length` read exactly (a body cut short is an Io error, several
//!   different values or an invalid one are an Io error, as are
//!   `Transfer-Encoding` together with `Content-Length` and any transfer
//!   coding but `chunked`); otherwise until the connection closes;
//! - at most `max_body_bytes` of body: a larger `Content-Length` is refused
//!   before reading it, a chunked or close-delimited body as soon as it
//!   passes the bound: [`TransportError::ResponseTooLarge`].
//!
//! Nothing here panics on any input (tests/fuzz runs [`decode_backend_response`]
//! on arbitrary bytes).

use crate::http::{Method, Response};
use crate::transport::TransportError;
use futures_lite::io::{AsyncRead, AsyncReadExt};

/// Largest response head read, in bytes (status line, header fields and the
/// heads of any interim 1xx responses before it). influxd's heads are under
/// 1 KiB; async-h1 allowed 8 KiB.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Largest chunk-size line (size and extensions) or trailer line, in bytes.
const MAX_CHUNK_LINE_BYTES: usize = 4096;

/// Bytes read from the stream at once into the reader's buffer.
const READ_BUFFER: usize = 16 * 1024;

/// Most bytes of a body read from the stream at once straight into the body
/// (a body part of at least [`READ_BUFFER`] bytes skips the buffer).
const MAX_DIRECT_READ: usize = 256 * 1024;

/// A whole backend response and whether its connection can carry the next
/// request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedResponse {
    /// Status, header names in lower case (sorted, values as received with
    /// non-ASCII bytes percent-encoded), and the whole body.
    pub response: Response,
    /// True when the connection may be reused (RFC 9112 section 9.3): an
    /// HTTP/1.1 response without `Connection: close`, whose body was framed
    /// (or absent), and with no byte after it.
    pub reusable: bool,
}

/// Reads one response to a request of `method` from `stream`, with a body of
/// at most `max_body_bytes` (see the module doc for what is refused).
///
/// This is the entry point the fuzz target in tests/fuzz uses: it never
/// panics, whatever the stream yields. Errors: [`TransportError::Io`] for a
/// connection that broke or bytes that are not a valid response (message
/// without the backend's URL: the caller adds it),
/// [`TransportError::ResponseTooLarge`] for a body over the bound.
pub async fn decode_backend_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    method: Method,
    max_body_bytes: u64,
) -> Result<DecodedResponse, TransportError> {
    let mut reader = Reader::new(stream);
    read_response(&mut reader, method, max_body_bytes).await
}

/// [`decode_backend_response`] over bytes already received (the whole
/// connection's bytes: the end of `bytes` is the end of the connection); for
/// fuzzing (tests/fuzz) and tests.
pub fn decode_backend_response_bytes(
    bytes: &[u8],
    method: Method,
    max_body_bytes: u64,
) -> Result<DecodedResponse, TransportError> {
    let mut stream = bytes;
    futures_lite::future::block_on(decode_backend_response(&mut stream, method, max_body_bytes))
}

/// A buffered reader that counts the bytes it received.
pub(crate) struct Reader<'s, S> {
    stream: &'s mut S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes received from the stream so far.
    pub(crate) received: u64,
    /// The limit named when a line is too long, if not the line's own.
    cap: Option<usize>,
}

fn io(message: impl Into<String>) -> TransportError {
    TransportError::Io(message.into())
}

impl<'s, S: AsyncRead + Unpin> Reader<'s, S> {
    pub(crate) fn new(stream: &'s mut S) -> Reader<'s, S> {
        Reader { stream, buf: vec![0; READ_BUFFER], start: 0, end: 0, received: 0, cap: None }
    }

    /// Makes bytes available; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, TransportError> {
        if self.start < self.end {
            return Ok(true);
        }
        let n = self.stream.read(&mut self.buf).await.map_err(|e| io(e.to_string()))?;
        self.received = self.received.saturating_add(n as u64);
        self.start = 0;
        self.end = n.min(self.buf.len());
        Ok(n > 0)
    }

    fn available(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
    }

    /// Appends one line (without its LF and a CR before it) to `line`,
    /// reading at most `limit` bytes. `Ok(false)` at the end of the stream
    /// before any byte of the line; a line cut by the end is an error.
    async fn read_line(
        &mut self,
        line: &mut Vec<u8>,
        limit: usize,
        what: &str,
    ) -> Result<bool, TransportError> {
        let mut taken = 0usize;
        loop {
            if !self.fill().await? {
                if taken == 0 {
                    return Ok(false);
                }
                return Err(io(format!("connection closed in the middle of the {what}")));
            }
            let available = self.available();
            let (n, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if taken.saturating_add(n) > limit {
                return Err(io(format!("{what} over {} bytes", self.cap.unwrap_or(limit))));
            }
            line.extend_from_slice(available.get(..n).unwrap_or_default());
            taken += n;
            self.consume(n);
            if done {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(true);
            }
        }
    }

    /// Appends exactly `n` bytes to `out`; the number appended if the stream
    /// ends first.
    async fn read_exact(&mut self, n: u64, out: &mut Vec<u8>) -> Result<u64, TransportError> {
        let mut left = n;
        while left > 0 {
            if self.start == self.end && left >= READ_BUFFER as u64 {
                // Large bodies go straight from the stream into `out`.
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(MAX_DIRECT_READ);
                let old = out.len();
                out.resize(old + want, 0);
                let read = self.stream.read(out.get_mut(old..).unwrap_or_default()).await;
                let n = *read.as_ref().unwrap_or(&0);
                out.truncate(old + n.min(want));
                let n = read.map_err(|e| io(e.to_string()))?.min(want);
                self.received = self.received.saturating_add(n as u64);
                if n == 0 {
                    break;
                }
                left -= n as u64;
                continue;
            }
            if !self.fill().await? {
                break;
            }
            let available = self.available();
            let take = available.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            out.extend_from_slice(available.get(..take).unwrap_or_default());
            self.consume(take);
            left -= take as u64;
        }
        Ok(n - left)
    }

    /// Whether bytes are already buffered beyond what was consumed.
    fn has_leftover(&self) -> bool {
        self.start < self.end
    }
}

/// The status line and header fields of one response.
struct Head {
    http11: bool,
    status: u16,
    /// Lower-case names, values trimmed and percent-encoded where needed.
    headers: Vec<(String, String)>,
}

impl Head {
    fn values<'h>(&'h self, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
        self.headers.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The comma-separated elements of every `name` field, trimmed, empty
    /// ones left out (RFC 9110 section 5.6.1).
    fn list<'h>(&'h self, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
        self.values(name).flat_map(|v| v.split(',')).map(str::trim).filter(|e| !e.is_empty())
    }
}

pub(crate) async fn read_response<S: AsyncRead + Unpin>(
    reader: &mut Reader<'_, S>,
    method: Method,
    max_body_bytes: u64,
) -> Result<DecodedResponse, TransportError> {
    let mut head_budget = MAX_RESPONSE_HEAD_BYTES;
    let head = loop {
        let head = read_head(reader, &mut head_budget).await?;
        match head.status {
            101 => return Err(io("backend switched protocols (HTTP 101) unasked")),
            100..=199 => continue,
            _ => break head,
        }
    };
    let close = !head.http11 || head.list("connection").any(|t| t.eq_ignore_ascii_case("close"));
    let no_body = method == Method::Head || matches!(head.status, 204 | 304);
    let transfer_encoding: Vec<&str> = head.list("transfer-encoding").collect();
    let content_length = content_length(&head)?;
    let mut body = Vec::new();
    let framed = if no_body {
        true
    } else if !transfer_encoding.is_empty() {
        if content_length.is_some() {
            return Err(io("response has both Transfer-Encoding and Content-Length"));
        }
        if !matches!(&transfer_encoding[..], [coding] if coding.eq_ignore_ascii_case("chunked")) {
            return Err(io(format!(
                "unsupported response Transfer-Encoding {:?}",
                transfer_encoding.join(", ")
            )));
        }
        read_chunked(reader, &mut body, max_body_bytes).await?;
        true
    } else if let Some(len) = content_length {
        if len > max_body_bytes {
            return Err(TransportError::ResponseTooLarge { limit: max_body_bytes });
        }
        body.reserve(usize::try_from(len).unwrap_or(0).min(1 << 20));
        let got = reader.read_exact(len, &mut body).await?;
        if got < len {
            return Err(io(format!("response body cut off after {got} of {len} bytes")));
        }
        true
    } else {
        // Delimited by the end of the connection.
        let got = reader.read_exact(max_body_bytes.saturating_add(1), &mut body).await?;
        if got > max_body_bytes {
            return Err(TransportError::ResponseTooLarge { limit: max_body_bytes });
        }
        false
    };
    let reusable = framed && !close && !reader.has_leftover();
    let mut headers = head.headers;
    crate::sort::sort(&mut headers);
    Ok(DecodedResponse { response: Response { status: head.status, headers, body }, reusable })
}

/// The body length announced by `Content-Length`, if any: every value (and
/// list element) must be the same decimal number (RFC 9112 section 6.3,
/// item 5).
fn content_length(head: &Head) -> Result<Option<u64>, TransportError> {
    let mut length = None;
    for value in head.list("content-length") {
        let parsed = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
            .then(|| value.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| io(format!("invalid response Content-Length {value:?}")))?;
        match length {
            Some(l) if l != parsed => {
                return Err(io(format!("conflicting response Content-Length values {l} and {parsed}")))
            }
            _ => length = Some(parsed),
        }
    }
    if length.is_none() && head.values("content-length").next().is_some() {
        return Err(io("empty response Content-Length"));
    }
    Ok(length)
}

/// Reads one head, spending `budget` bytes at most.
async fn read_head<S: AsyncRead + Unpin>(
    reader: &mut Reader<'_, S>,
    budget: &mut usize,
) -> Result<Head, TransportError> {
    let too_large = || io(format!("response head over {MAX_RESPONSE_HEAD_BYTES} bytes"));
    reader.cap = Some(MAX_RESPONSE_HEAD_BYTES);
    let head = read_head_lines(reader, budget).await;
    reader.cap = None;
    let (head, spent) = head?;
    *budget = budget.checked_sub(spent).ok_or_else(too_large)?;
    Ok(head)
}

/// The lines of one head and the bytes they took.
async fn read_head_lines<S: AsyncRead + Unpin>(
    reader: &mut Reader<'_, S>,
    budget: &usize,
) -> Result<(Head, usize), TransportError> {
    let budget = *budget;
    let too_large = || io(format!("response head over {MAX_RESPONSE_HEAD_BYTES} bytes"));
    let mut line = Vec::new();
    if !reader.read_line(&mut line, budget, "response head").await? {
        return Err(io(if reader.received == 0 {
            "connection closed before any response byte"
        } else {
            "connection closed before the response head"
        }));
    }
    let mut spent = line.len() + 2;
    let (http11, status) = status_line(&line)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        line.clear();
        let left = budget.checked_sub(spent).ok_or_else(too_large)?;
        if !reader.read_line(&mut line, left, "response head").await? {
            return Err(io("connection closed in the middle of the response head"));
        }
        spent += line.len() + 2;
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // Obsolete line folding: part of the previous value.
            let Some((_, value)) = headers.last_mut() else {
                return Err(io("response head starts with a folded line"));
            };
            value.push(' ');
            value.push_str(&field_value(&line));
            continue;
        }
        let colon =
            line.iter().position(|&b| b == b':').ok_or_else(|| io("response header line without a colon"))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(io(format!("invalid response header name {:?}", String::from_utf8_lossy(name))));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        headers.push((name, field_value(&line[colon + 1..])));
    }
    Ok((Head { http11, status, headers }, spent))
}

/// `HTTP/1.x SSS reason`: whether it is 1.1, and the status.
fn status_line(line: &[u8]) -> Result<(bool, u16), TransportError> {
    let bad = || io(format!("invalid response status line {:?}", String::from_utf8_lossy(line)));
    let http11 = match line.get(..9) {
        Some(b"HTTP/1.1 ") => true,
        Some(b"HTTP/1.0 ") => false,
        _ => return Err(bad()),
    };
    let code = line.get(9..12).ok_or_else(bad)?;
    if !code.iter().all(u8::is_ascii_digit) || line.get(12).is_some_and(|&b| b != b' ') {
        return Err(bad());
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err(bad());
    }
    Ok((http11, status))
}

/// RFC 9110 section 5.6.2 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A field value trimmed of spaces and tabs, every byte outside visible
/// ASCII, space and tab as `%XX`.
fn field_value(raw: &[u8]) -> String {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = raw.iter().position(|b| !is_ows(b)).unwrap_or(raw.len());
    let end = raw.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    let mut out = String::with_capacity(end.saturating_sub(start));
    for &b in raw.get(start..end).unwrap_or_default() {
        if b == b'\t' || (b' '..=b'~').contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a chunked body (RFC 9112 section 7.1) into `body`, at most
/// `max_body_bytes` of it; trailers are read and dropped.
async fn read_chunked<S: AsyncRead + Unpin>(
    reader: &mut Reader<'_, S>,
    body: &mut Vec<u8>,
    max_body_bytes: u64,
) -> Result<(), TransportError> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if !reader.read_line(&mut line, MAX_CHUNK_LINE_BYTES, "chunk size line").await? {
            return Err(io("connection closed in the middle of a chunked response body"));
        }
        let digits = line.iter().position(|&b| !b.is_ascii_hexdigit()).unwrap_or(line.len());
        let rest = &line[digits..];
        if digits == 0 || !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t')) {
            return Err(io(format!("invalid chunk size line {:?}", String::from_utf8_lossy(&line))));
        }
        let size = line[..digits].iter().try_fold(0u64, |n, &d| {
            let digit = u64::from(char::from(d).to_digit(16).unwrap_or(0));
            n.checked_mul(16).and_then(|n| n.checked_add(digit))
        });
        let size = size.ok_or_else(|| io("chunk size out of range"))?;
        if size == 0 {
            break;
        }
        if (body.len() as u64).saturating_add(size) > max_body_bytes {
            return Err(TransportError::ResponseTooLarge { limit: max_body_bytes });
        }
        let got = reader.read_exact(size, body).await?;
        if got < size {
            return Err(io("connection closed in the middle of a chunked response body"));
        }
        line.clear();
        if reader.read_exact(2, &mut line).await? < 2 || line != b"\r\n" {
            return Err(io("chunk data not followed by CRLF"));
        }
    }
    // Trailer fields, up to the blank line.
    let mut budget = MAX_RESPONSE_HEAD_BYTES;
    loop {
        line.clear();
        if !reader.read_line(&mut line, budget.min(MAX_CHUNK_LINE_BYTES), "response trailer").await? {
            return Err(io("connection closed in the middle of the response trailers"));
        }
        if line.is_empty() {
            return Ok(());
        }
        budget = budget.checked_sub(line.len() + 2).ok_or_else(|| io("response trailers too large"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<DecodedResponse, TransportError> {
        decode_backend_response_bytes(bytes, Method::Get, 1000)
    }

    fn io_error(bytes: &[u8]) -> String {
        match decode(bytes) {
            Err(TransportError::Io(e)) => e,
            other => panic!("expected an Io error for {:?}, got {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn influxd_s_non_ascii_error_header_is_kept_percent_encoded_with_its_body() {
        let body = "{\"error\":\"database not found: \\\"données\\\"\"}\n";
        let raw = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
             X-Influxdb-Error: database not found: \"données\"\r\nX-Influxdb-Version: 1.6.7\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let d = decode(raw.as_bytes()).unwrap();
        assert!(d.reusable);
        assert_eq!(d.response.status, 404);
        assert_eq!(d.response.body, body.as_bytes());
        assert_eq!(d.response.header("x-influxdb-error"), Some("database not found: \"donn%C3%A9es\""));
        assert_eq!(d.response.header("content-type"), Some("application/json"));
        // Raw bytes that are not UTF-8, and control bytes, too.
        let d = decode(b"HTTP/1.1 204 No Content\r\nX-A: \xff\x01 b\t\r\n\r\n").unwrap();
        assert_eq!(d.response.header("x-a"), Some("%FF%01 b"));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let d = decode(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nok\r\n1\r\n!\r\n0\r\nT: 1\r\n\r\n")
            .unwrap();
        assert_eq!((d.response.body.as_slice(), d.reusable), (&b"ok!"[..], true));
        let d = decode(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").unwrap();
        assert_eq!((d.response.body.as_slice(), d.reusable), (&b"until the end"[..], false));
        let d = decode(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").unwrap();
        assert!(!d.reusable);
        let d = decode(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert!(!d.reusable, "HTTP/1.0");
        let d = decode(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokstray").unwrap();
        assert_eq!((d.response.body.as_slice(), d.reusable), (&b"ok"[..], false));
        let d = decode(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((d.response.status, d.reusable), (204, true));
        let d = decode(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\nok").unwrap();
        assert_eq!(d.response.body, b"ok", "repeated equal lengths are one length");
        let d =
            decode_backend_response_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::Head, 1)
                .unwrap();
        assert_eq!((d.response.body.len(), d.reusable), (0, true));
        let d = decode(b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(d.response.header("x-folded"), Some("a b"));
    }

    #[test]
    fn broken_or_ambiguous_responses_are_io_errors() {
        for (raw, expect) in [
            (&b""[..], "before any response byte"),
            (b"HTTP/1.1 200 OK\r\nContent-Le", "middle of the response head"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcd", "cut off after 4 of 10 bytes"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef", "conflicting"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nabcdef", "conflicting"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid response Content-Length"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", "invalid"),
            (b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", "empty"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", "both"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "chunked response body"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n", "out of range"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n", "CRLF"),
            (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "invalid response header name"),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "without a colon"),
            (b"HTTP/1.1 200 OK\r\n folded\r\n\r\n", "folded"),
            (b"HTTP/2 200\r\n\r\n", "status line"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
            (b"HTTP/1.1 099 X\r\n\r\n", "status line"),
            (b"\xff\xfe\r\n\r\n", "status line"),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
        ] {
            let e = io_error(raw);
            assert!(e.contains(expect), "{e:?} for {:?}", String::from_utf8_lossy(raw));
        }
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..2000 {
            huge.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(40)).as_bytes());
        }
        huge.extend_from_slice(b"\r\n");
        assert!(io_error(&huge).contains("response head over 65536 bytes"));
        let mut endless = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        endless.extend(std::iter::repeat_n(b'a', 200_000));
        assert!(io_error(&endless).contains("over"));
        // Endless interim responses are bounded by the same budget.
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(10_000);
        assert!(io_error(&interim).contains("response head over"));
    }

    #[test]
    fn large_bodies_are_read_whole_and_cut_ones_refused() {
        let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        raw.extend_from_slice(&body);
        let d = decode_backend_response_bytes(&raw, Method::Get, 1 << 20).unwrap();
        assert!(d.response.body == body && d.reusable);
        let mut chunked =
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", body.len()).into_bytes();
        chunked.extend_from_slice(&body);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        assert!(decode_backend_response_bytes(&chunked, Method::Get, 1 << 20).unwrap().response.body == body);
        raw.truncate(raw.len() - 1);
        match decode_backend_response_bytes(&raw, Method::Get, 1 << 20) {
            Err(TransportError::Io(e)) => assert!(e.contains("cut off after 999999 of 1000000 bytes"), "{e}"),
            other => panic!("{:?}", other.map(|d| d.response.status)),
        }
    }

    #[test]
    fn bodies_over_the_bound_are_refused() {
        let too_large = Err(TransportError::ResponseTooLarge { limit: 4 });
        let by_length = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n";
        assert_eq!(decode_backend_response_bytes(by_length, Method::Get, 4), too_large);
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
        assert_eq!(decode_backend_response_bytes(chunked, Method::Get, 4), too_large);
        let until_close = b"HTTP/1.1 200 OK\r\n\r\nabcde";
        assert_eq!(decode_backend_response_bytes(until_close, Method::Get, 4), too_large);
        let at_bound = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";
        assert_eq!(decode_backend_response_bytes(at_bound, Method::Get, 4).unwrap().response.body, b"abcd");
    }

    #[test]
    fn no_input_panics() {
        // Every prefix and a few byte flips of a response with every feature.
        let full = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-E: caf\xc3\xa9\r\n\tfold\r\n\
                     Transfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\nT: x\r\n\r\n";
        for end in 0..=full.len() {
            let _ = decode(&full[..end]);
            for flip in [0u8, b'\n', b'\r', b':', b' ', 0xff, b'9'] {
                let mut bytes = full[..end].to_vec();
                if let Some(b) = bytes.get_mut(end / 2) {
                    *b = flip;
                }
                let _ = decode(&bytes);
            }
        }
    }
}
