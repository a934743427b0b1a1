//! The fuzz targets of influx-proxy, one function each, run by the AFL++
//! binaries in `src/bin/` (`cargo afl build --release`, see the root
//! `justfile`'s `fuzz` recipe) and, on the committed inputs, by this crate's
//! `cargo test --lib`.
//!
//! Each target takes the raw bytes AFL++ made and must never panic (the AFL
//! binaries turn every panic into an abort, including one the proxy would
//! catch: on wasm32 panics abort). Where it is cheap a target also checks what
//! the proxy promises about its answer (the `assert!`s below); a failed check
//! is a crash like any other.
//!
//! The two HTTP targets read their input from a [`MemoryStream`]; the input's
//! first byte chooses how the stream cuts its reads (see [`MemoryStream::new`]),
//! since the request-head guard and async-h1 behave differently on a head that
//! arrives in pieces. Both run on [`run_to_end`], which turns a future that
//! waits with no wake-up scheduled (on a real connection: a hang) into a
//! panic.
//!
//! Faults that are known but not fixed yet are worked around (see
//! [`Workarounds`]) so that the fuzzer looks for new ones; their inputs are
//! kept in `regressions/<target>/open-*`, and this crate's tests check that
//! they still fail without the workaround (when one stops failing, its fault
//! was fixed: turn its workaround off and drop the `open-` prefix).

use futures_lite::io::{AsyncRead, AsyncWrite};
use influx_proxy::http::{Method, Request, Response};
use influx_proxy::http1::client::{decode_backend_response, decode_backend_response_bytes};
use influx_proxy::http1::{decode_request, serve_connection, ConnectionHost, ConnectionOptions};
use influx_proxy::line_protocol::{parse_points, points, points_byte_by_byte};
use influx_proxy::statement::{
    classify, show_limit_offset, show_statement_for_backends, split_statements, StatementFilter,
    StatementKind, DEFAULT_FORBIDDEN,
};
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

/// A target: the input, and which known faults to work around.
pub type Target = fn(&[u8], Workarounds);

/// The targets by name (the names of the binaries and of the `corpus/` and
/// `regressions/` folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("line_protocol", |data, _| line_protocol(data)),
    ("statement", statement),
    ("request_head", request_head),
    ("backend_response", backend_response),
];

/// Workarounds for faults found and reported but not fixed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workarounds {
    /// Fault 1 of issue 6: a backend header value with non-ASCII bytes
    /// panics in http-types (`Headers::append`: "String slice should be
    /// valid ASCII") while async-h1 decodes the head. Skips such inputs.
    /// Off once the backend side reads heads through its guard (and
    /// [`read_backend_response`] calls that entry point).
    pub skip_non_ascii_backend_headers: bool,
    /// The trailer section of a chunked body (after `0\r\n`) is parsed by
    /// async-h1's chunked decoder, and a trailer value with non-ASCII bytes
    /// panics in http-types as in fault 1, on both sides: the request-head
    /// guard only reads the head. Natively the server catches the panic and
    /// drops the connection without an answer; on wasm32 the component
    /// aborts. Skips inputs with a chunked body holding a byte of 0x80 or
    /// more (a blind spot: a later pipelined request's head).
    /// Off once the guards cover trailers (or refuse them).
    pub skip_non_ascii_trailers: bool,
    /// async-h1 2.3.4's chunked decoder (`chunked/decoder.rs`, state
    /// `Trailers`) returns `Poll::Pending` without arranging a wake-up when
    /// the part after the last chunk (`0\r\n`) arrives incomplete, e.g. its
    /// final `\r\n` in a later read: the request or response body is never
    /// read to its end (server side: the connection hangs; backend side:
    /// until the request timeout). The fix belongs in the stream wrappers
    /// async-h1 reads from (the server's `GuardedStream`, the backend
    /// stream): wake the task after each read that returned data. The
    /// [`MemoryStream`] does that here while this is on.
    pub wake_after_each_read: bool,
    /// `show_statement_for_backends` removes `OFFSET m` from a fanned-out
    /// `SHOW`; when a `/` follows the clause, the text before the clause now
    /// decides whether that `/` is a division or starts a regex, so the rest
    /// of the statement can read differently (`SHOW SERIES% OFFSET 2 / b` is
    /// sent as `SHOW SERIES% / b`: an unterminated regex). Only statements
    /// InfluxQL refuses anyway reach this (nothing valid follows OFFSET with
    /// a `/`), so the backends answer with a parse error either way; replacing
    /// the clause by `OFFSET 0` would keep the tokens. Skips the rewrite
    /// checks when a `/` follows the first `OFFSET`.
    pub skip_show_rewrite_before_slash: bool,
}

impl Workarounds {
    /// None: what the fuzzer should run once every known fault is fixed.
    pub const NONE: Workarounds = Workarounds {
        skip_non_ascii_backend_headers: false,
        skip_non_ascii_trailers: false,
        wake_after_each_read: false,
        skip_show_rewrite_before_slash: false,
    };
}

/// The workarounds the fuzz binaries use: one for each fault still open.
/// None now: the four faults the fields describe were fixed (the backend
/// side reads answers with its own reader, the server side reads heads and
/// trailers through its guard, the `SHOW` rewrite keeps `OFFSET 0` before a
/// `/`); their inputs are plain regressions.
pub const KNOWN_FAULTS: Workarounds = Workarounds::NONE;

/// The timestamp the write path appends to a point without one (any integer
/// does; this is a nanosecond one, as the proxy makes by default).
const PROXY_TIMESTAMP: &str = "1700000000000000000";

/// Line protocol: [`parse_points`] on a UTF-8 body (the write path refuses
/// other bodies before parsing).
///
/// Checks on success: each point's `line` is a slice of the body, in body
/// order, not overlapping, non-empty, without leading or trailing blanks or
/// line ending and not a comment; its `line_number` is 1 + the line endings
/// before it; its measurement is non-empty. The body the write path forwards
/// (each line, plus a timestamp where it had none, plus `\n`) parses again to
/// the same points, each with a timestamp. On error: the line number is
/// positive and the error's line is a piece of the body. Either way the
/// fast path gives exactly what the byte-by-byte scanner alone gives
/// ([`points_byte_by_byte`], the reference): same points, same error.
pub fn line_protocol(data: &[u8]) {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let fast: Vec<_> = points(body).collect();
    let reference: Vec<_> = points_byte_by_byte(body).collect();
    assert_eq!(fast, reference, "the fast path and the reference differ on {body:?}");
    let points = match parse_points(body) {
        Ok(points) => points,
        Err(e) => {
            assert!(e.line_number >= 1, "{e:?}");
            assert!(body.contains(e.line.as_str()), "error line {:?} is not in the body", e.line);
            let _ = e.to_string();
            return;
        }
    };
    let mut end_of_previous = 0;
    let mut newlines_before = 0;
    let mut forwarded = String::with_capacity(body.len() + points.len() * (PROXY_TIMESTAMP.len() + 2));
    for point in &points {
        let start = offset_in(body, point.line).expect("a point's line is a slice of the body");
        assert!(start >= end_of_previous, "points overlap or are out of order: {points:?}");
        newlines_before += body[end_of_previous..start].matches('\n').count();
        end_of_previous = start + point.line.len();
        assert_eq!(point.line_number, 1 + newlines_before, "line number of {point:?}");
        newlines_before += point.line.matches('\n').count();
        assert!(!point.line.is_empty() && !point.line.starts_with('#'), "{point:?}");
        assert!(!point.line.starts_with([' ', '\t']), "leading blank kept: {point:?}");
        assert!(!point.line.ends_with([' ', '\t', '\r', '\n']), "trailing blank kept: {point:?}");
        assert!(!point.measurement.is_empty(), "{point:?}");
        forwarded.push_str(point.line);
        if !point.has_timestamp {
            forwarded.push(' ');
            forwarded.push_str(PROXY_TIMESTAMP);
        }
        forwarded.push('\n');
    }
    let again = match parse_points(&forwarded) {
        Ok(again) => again,
        Err(e) => panic!("the forwarded body {forwarded:?} does not parse: {e}"),
    };
    assert_eq!(again.len(), points.len(), "forwarded {forwarded:?} gave other points: {again:?}");
    for (sent, received) in points.iter().zip(&again) {
        assert_eq!(sent.measurement, received.measurement, "forwarded {forwarded:?}");
        assert!(received.has_timestamp, "forwarded {received:?} has no timestamp");
        if sent.has_timestamp {
            assert_eq!(sent.line, received.line);
        } else {
            assert_eq!(received.line.strip_suffix(PROXY_TIMESTAMP), Some(&*format!("{} ", sent.line)));
        }
    }
}

/// InfluxQL: [`split_statements`], then [`classify`], the default
/// [`StatementFilter`] and the `SHOW` LIMIT/OFFSET rewriting on each
/// statement (and [`classify`] on the whole query).
///
/// Checks: each statement is a slice of the query, in order, non-empty, with
/// no surrounding whitespace, and one statement to [`classify`]; the
/// statements joined with `;` split into the same statements. For a fanned-out
/// `SHOW` ([`StatementKind::ShowAll`]): its LIMIT/OFFSET read, and the text
/// sent to backends is still such a `SHOW`, without OFFSET, with LIMIT n+m
/// (or unchanged when there was no OFFSET).
pub fn statement(data: &[u8], workarounds: Workarounds) {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let _ = classify(query);
    let Ok(statements) = split_statements(query) else { return };
    let mut end_of_previous = 0;
    for &statement in &statements {
        let start = offset_in(query, statement).expect("a statement is a slice of the query");
        assert!(start >= end_of_previous, "statements overlap or are out of order: {statements:?}");
        end_of_previous = start + statement.len();
        assert!(!statement.is_empty(), "empty statement in {statements:?}");
        let trimmed = statement.trim_matches(|c: char| c.is_ascii_whitespace());
        assert_eq!(trimmed, statement, "statement not trimmed");
        check_statement(statement, workarounds);
    }
    let joined = statements.join(";");
    assert_eq!(split_statements(&joined).as_ref(), Ok(&statements), "re-split of {joined:?}");
}

fn check_statement(statement: &str, workarounds: Workarounds) {
    static FILTER: OnceLock<StatementFilter> = OnceLock::new();
    let filter = FILTER.get_or_init(|| {
        let forbidden: Vec<String> = DEFAULT_FORBIDDEN.iter().map(|p| p.to_string()).collect();
        StatementFilter::new(&forbidden, &[]).expect("the default patterns compile")
    });
    let _ = filter.check(statement);
    let kind = match classify(statement) {
        Ok(kind) => kind,
        Err(e) => {
            assert!(
                !e.contains("found several"),
                "one statement of split_statements is several: {statement:?}: {e}"
            );
            return;
        }
    };
    if kind != StatementKind::ShowAll {
        return;
    }
    let (limit, offset) = match show_limit_offset(statement) {
        Ok(clauses) => clauses,
        Err(e) => panic!("classify accepted {statement:?} but its LIMIT/OFFSET do not read: {e}"),
    };
    let sent = match show_statement_for_backends(statement) {
        Ok(sent) => sent,
        Err(e) => panic!("classify accepted {statement:?} but it cannot be rewritten: {e}"),
    };
    if offset.is_none() {
        assert_eq!(sent, statement, "a SHOW without OFFSET is sent unchanged");
        return;
    }
    if workarounds.skip_show_rewrite_before_slash {
        let lower = statement.to_ascii_lowercase();
        if lower.find("offset").is_some_and(|at| lower[at..].contains('/')) {
            return;
        }
    }
    // Still routed as a fanned-out SHOW (or refused: `SHOW OFFSET 1` is
    // routed, and answered by the backends' parse error, but `SHOW` is not).
    if let Ok(kind) = classify(&sent) {
        assert_eq!(kind, StatementKind::ShowAll, "{statement:?} was sent as {sent:?}");
    }
    let expected_limit = match limit {
        Some(n) if n > 0 => Some(n.saturating_add(offset.unwrap_or(0)).min(i64::MAX as u64)),
        other => other,
    };
    // No OFFSET, or a harmless `OFFSET 0` kept where removing the clause
    // would join the tokens around it into something else.
    let sent_clauses = show_limit_offset(&sent);
    assert!(
        sent_clauses == Ok((expected_limit, None)) || sent_clauses == Ok((expected_limit, Some(0))),
        "{statement:?} was sent as {sent:?}: {sent_clauses:?}"
    );
}

/// Largest request body of the `request_head` target, in bytes (small, so
/// that 413 is reached).
pub const MAX_BODY_BYTES: u64 = 4096;

/// The client side of HTTP: the input (after its first byte, see
/// [`MemoryStream::new`]) is what one client connection sends;
/// [`serve_connection`] serves it, with the request-head guard, to a handler
/// that answers 204.
///
/// Checks: every request the handler sees has a body of at most
/// [`MAX_BODY_BYTES`], a path starting with `/`, header names in lower case
/// and header values of visible ASCII, spaces and tabs; whatever the server
/// wrote starts with a response head a client can read.
///
/// When the server gets a pure entry point for the head guard, only this
/// function changes.
pub fn request_head(data: &[u8], workarounds: Workarounds) {
    let Some((&chunk, input)) = data.split_first() else { return };
    if workarounds.skip_non_ascii_trailers && non_ascii_trailer(input) {
        return;
    }
    // The guard's own entry point (virtual timers, never blocks, panics are
    // not caught): the request the core would get, or the refusal status.
    if let Some(Ok(request)) = decode_request(input, MAX_BODY_BYTES) {
        check_request(&request);
    }
    // The serving path over a stream cut into pieces, as a client connection
    // delivers it: whatever the server wrote is a response a client can read.
    let stream = MemoryStream::new(input, chunk, workarounds.wake_after_each_read);
    let options = ConnectionOptions {
        max_body_bytes: MAX_BODY_BYTES,
        idle_timeout_ms: 60_000,
        header_read_timeout_ms: 60_000,
        body_read_timeout_ms: 30_000,
    };
    let requests = Cell::new(0usize);
    let handler = |request: Request| {
        check_request(&request);
        requests.set(requests.get() + 1);
        async { Response::empty(204) }
    };
    run_to_end(serve_connection(stream.clone(), &options, &NoTimers, handler));
    let written = stream.written();
    if requests.get() > 0 {
        assert!(!written.is_empty(), "{} requests served, nothing written", requests.get());
    }
    if !written.is_empty() {
        // The answer to a HEAD request has no body, whatever its
        // Content-Length says (RFC 9110 9.3.2): read it as a client that
        // sent HEAD does.
        let method = if input.starts_with(b"HEAD ") { Method::Head } else { Method::Get };
        if let Err(e) = decode_backend_response_bytes(&written, method, u64::MAX) {
            panic!(
                "the server wrote {:?}, which a client cannot read: {e}",
                String::from_utf8_lossy(&written)
            );
        }
    }
}

fn check_request(request: &Request) {
    assert!(request.body.len() as u64 <= MAX_BODY_BYTES, "body of {} bytes", request.body.len());
    assert!(request.path.starts_with('/'), "path {:?}", request.path);
    for (name, value) in &request.headers {
        assert!(!name.is_empty() && *name == name.to_ascii_lowercase(), "header name {name:?}");
        assert!(visible_ascii(value), "header {name}: {value:?}");
    }
}

/// The server's host: no timers (the stream never makes it wait).
struct NoTimers;

impl ConnectionHost for NoTimers {
    fn sleep(&self, _ms: u64) -> impl Future<Output = ()> {
        futures_lite::future::pending()
    }
}

/// Largest backend response body read, in bytes.
pub const MAX_BACKEND_BODY_BYTES: u64 = 1 << 20;

/// The backend side of HTTP: the input's first byte chooses the request
/// method (bits 0-1: GET, POST, HEAD, GET) and how the stream cuts its reads
/// (bits 2-7, see [`MemoryStream::new`]); the rest is what the backend
/// answers. It is read as the native transport reads it
/// ([`read_backend_response`]).
///
/// Checks: a status from 100 to 599; header names in lower case, sorted;
/// values of visible ASCII, spaces and tabs; a body no longer than its
/// `Content-Length`.
pub fn backend_response(data: &[u8], workarounds: Workarounds) {
    let Some((&control, input)) = data.split_first() else { return };
    let method = [Method::Get, Method::Post, Method::Head, Method::Get][usize::from(control & 3)];
    if workarounds.skip_non_ascii_backend_headers && non_ascii_header(input) {
        return;
    }
    if workarounds.skip_non_ascii_trailers && non_ascii_trailer(input) {
        return;
    }
    let stream = MemoryStream::new(input, control >> 2, workarounds.wake_after_each_read);
    let Ok(response) = run_to_end(read_backend_response(method, stream)) else { return };
    assert!((100..=599).contains(&response.status), "status {}", response.status);
    assert!(response.headers.is_sorted(), "headers not sorted: {:?}", response.headers);
    for (name, value) in &response.headers {
        assert!(!name.is_empty() && *name == name.to_ascii_lowercase(), "header name {name:?}");
        assert!(visible_ascii(value), "header {name}: {value:?}");
    }
    if method == Method::Head {
        assert!(response.body.is_empty(), "a body for HEAD");
    }
}

/// A backend's answer to `method` read from `stream` by the transport's own
/// response reader ([`decode_backend_response`]). Error: the transport
/// error's message.
pub async fn read_backend_response(method: Method, mut stream: MemoryStream) -> Result<Response, String> {
    let decoded = decode_backend_response(&mut stream, method, MAX_BACKEND_BODY_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    Ok(decoded.response)
}

/// Whether a header line of the head at the start of `input` (after the
/// status line, up to the first empty line) has a byte of 0x80 or more.
fn non_ascii_header(input: &[u8]) -> bool {
    let mut lines = input.split(|&b| b == b'\n');
    lines.next();
    lines.take_while(|line| !line.is_empty() && *line != b"\r").any(|line| line.iter().any(|&b| b >= 0x80))
}

/// Whether `input` (a message: head, then body) has a chunked body with a
/// byte of 0x80 or more: async-h1 can read trailers anywhere in it (after a
/// last chunk, an empty chunk size, or a chunk size it refused and read on).
fn non_ascii_trailer(input: &[u8]) -> bool {
    let find =
        |needle: &[u8]| input.windows(needle.len()).position(|w| w == needle).map(|p| p + needle.len());
    let Some(body_start) = [find(b"\r\n\r\n"), find(b"\n\n")].into_iter().flatten().min() else {
        return false;
    };
    input[..body_start].to_ascii_lowercase().windows(7).any(|w| w == b"chunked")
        && input[body_start..].iter().any(|&b| b >= 0x80)
}

/// Visible ASCII, spaces and tabs (an HTTP field value, RFC 9110 section 5.5).
fn visible_ascii(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Polls `future` to its end. Panics if it returns `Pending` without having
/// arranged a wake-up: every stream here is always ready and there are no
/// timers, so nothing would ever wake it (on a real connection it would wait
/// until a timeout, or forever).
pub fn run_to_end<F: Future>(future: F) -> F::Output {
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        flag.0.store(false, Ordering::SeqCst);
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        assert!(
            flag.0.load(Ordering::SeqCst),
            "stalled: Pending with no wake-up scheduled (a hang on a real connection)"
        );
    }
}

/// Where `piece` starts in `whole`, if it is a slice of it.
fn offset_in(whole: &str, piece: &str) -> Option<usize> {
    let start = (piece.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start + piece.len() <= whole.len()).then_some(start)
}

/// A connection in memory: reads give the input, then end of file; writes are
/// kept (see [`MemoryStream::written`]). Clones share the connection.
#[derive(Debug, Clone)]
pub struct MemoryStream(Arc<Mutex<MemoryState>>);

#[derive(Debug)]
struct MemoryState {
    input: Vec<u8>,
    read: usize,
    chunk: usize,
    written: Vec<u8>,
    closed: bool,
    wake_after_each_read: bool,
}

impl MemoryStream {
    /// A connection that delivers `input`, at most `chunk` bytes per read
    /// (0: as much as the reader asks for). `wake_after_each_read`: see
    /// [`Workarounds::wake_after_each_read`].
    pub fn new(input: &[u8], chunk: u8, wake_after_each_read: bool) -> MemoryStream {
        let chunk = if chunk == 0 { usize::MAX } else { usize::from(chunk) };
        MemoryStream(Arc::new(Mutex::new(MemoryState {
            input: input.to_vec(),
            read: 0,
            chunk,
            written: Vec::new(),
            closed: false,
            wake_after_each_read,
        })))
    }

    /// What was written to the connection so far.
    pub fn written(&self) -> Vec<u8> {
        self.state().written.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl AsyncRead for MemoryStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut state = self.state();
        let n = buf.len().min(state.chunk).min(state.input.len() - state.read);
        let start = state.read;
        buf[..n].copy_from_slice(&state.input[start..start + n]);
        state.read += n;
        if n > 0 && state.wake_after_each_read {
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut state = self.state();
        if state.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        state.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.state().closed = true;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    static PANICKED: AtomicBool = AtomicBool::new(false);

    /// Runs `target` on `data`; whether it panicked anywhere (even where the
    /// proxy catches the panic, as the AFL binaries count it).
    fn panics(target: Target, data: &[u8], workarounds: Workarounds) -> bool {
        PANICKED.store(false, Ordering::SeqCst);
        let unwound = std::panic::catch_unwind(|| target(data, workarounds)).is_err();
        unwound || PANICKED.load(Ordering::SeqCst)
    }

    fn inputs(folder: &str, target: &str) -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder).join(target);
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        paths
    }

    /// Every committed input (seeds and regressions) passes its target with
    /// the workarounds in force; each `regressions/*/open-*` input still fails
    /// without them (else its fault is fixed: see the crate doc).
    #[test]
    fn committed_inputs_pass_and_open_faults_still_fail_without_workarounds() {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            previous(info);
        }));
        let mut count = 0;
        for &(name, target) in TARGETS {
            let seeds = inputs("corpus", name);
            assert!(seeds.len() >= 4, "corpus/{name} has {} seeds", seeds.len());
            for path in seeds.iter().chain(&inputs("regressions", name)) {
                let data = std::fs::read(path).unwrap();
                assert!(!panics(target, &data, KNOWN_FAULTS), "{} fails", path.display());
                let open = path.file_name().unwrap().to_string_lossy().starts_with("open-");
                if open {
                    assert!(
                        panics(target, &data, Workarounds::NONE),
                        "{} passes without workarounds: its fault is fixed",
                        path.display()
                    );
                }
                count += 1;
            }
        }
        assert!(count >= 4 * TARGETS.len());
    }
}
