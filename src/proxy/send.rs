//! Sending one record to one backend in pieces no larger than the backend
//! accepts: [`Proxy::send_record`], shared by the direct path
//! ([`Proxy::deliver_shared`]) and replay ([`Proxy::replay_step`]).
//!
//! A write record's body is cut at point boundaries into pieces of at most
//! `backend_max_body_bytes` (a record queued before the limit was lowered, or
//! by an older version, can be larger), sent in body order. A piece that the
//! backend refuses with 413 (InfluxDB 1.x answers `Request Entity Too Large`
//! when a body exceeds its `[http] max-body-size`) is halved at a point
//! boundary and each half sent again, recursively; a single point the
//! backend still refuses with 413 ends as that 413 (a 4xx: the client's
//! error on the direct path, a dead letter in replay), never as a retry.

use super::write::WriteBody;
use super::{record_request, Proxy};
use crate::http::{Request, Response, SharedBytes};
use crate::line_protocol;
use crate::storage::Storage;
use crate::transport::{BackendAddr, Transport, TransportError};
use crate::write_queue::Record;
use std::ops::Range;

/// What [`Proxy::send_record`] got.
#[derive(Debug)]
pub(super) struct Sent {
    /// The last 2xx answer when every piece was acknowledged; else the first
    /// answer that was not 2xx, or the transport error.
    pub outcome: Result<Response, TransportError>,
    /// How many bytes at the start of a write record's body the backend
    /// acknowledged (the whole body on success; 0 for a statement or a
    /// failure on the first piece). The rest is unacknowledged.
    pub acked: usize,
    /// Only from [`Proxy::send_record_judging_each`]: the pieces of a write
    /// the backend refused with a 4xx (a 413 after halving down to one
    /// point), in body order. When every other piece was acknowledged,
    /// `outcome` is the first of these refusals.
    pub refused: Vec<Range<usize>>,
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    /// Sends `record` to backend `backend` (index): a statement as one
    /// request; a write in pieces of at most `backend_max_body_bytes`, in
    /// order, halving a piece the backend answers 413 (down to one point).
    /// Stops at the first answer that is not 2xx (after splitting) or at the
    /// first transport error. Records nothing in health or metrics: the
    /// callers do.
    pub(super) async fn send_record(&self, backend: usize, record: &Record) -> Sent {
        self.send_pieces(backend, record, false).await
    }

    /// [`Proxy::send_record`] for replay: a piece refused with a 4xx (also a
    /// single point refused with 413) does not stop the pieces after it, each
    /// is judged on its own (as on the write path, where every batch is its
    /// own record), so one refused point of a queued record does not keep the
    /// points after it from the backend. The refused pieces are in
    /// [`Sent::refused`]; a 5xx or a transport error still stops at once.
    pub(super) async fn send_record_judging_each(&self, backend: usize, record: &Record) -> Sent {
        self.send_pieces(backend, record, true).await
    }

    async fn send_pieces(&self, backend: usize, record: &Record, judge_each: bool) -> Sent {
        match WriteBody::of_record(record) {
            Some(body) => self.send_write(backend, &body, judge_each).await,
            None => {
                let topo = self.topology();
                let outcome = self.transport.send(&topo.backends[backend], record_request(record)).await;
                Sent { outcome, acked: 0, refused: Vec::new() }
            }
        }
    }

    /// [`Proxy::send_record`] (`judge_each`: [`Proxy::send_record_judging_each`])
    /// of a write body shared between replicas: each piece is a slice of the
    /// one buffer, never a copy. A body forwarded with its client's gzip
    /// bytes ([`WriteBody::gzip`]; the write path forwards them only when
    /// the decoded body is at most `backend_max_body_bytes`) is sent as one
    /// request with `Content-Encoding: gzip`; refused with 413, it is sent
    /// decoded instead, in the two halves of its points (each halved again
    /// on a 413 as usual).
    ///
    /// To a backend configured with `gzip` ([`crate::config::BackendConfig::gzip`])
    /// every other piece goes gzip-compressed ([`WriteBody::gzipped`]: once
    /// per piece, shared by the replicas that ask for it), with
    /// `Content-Encoding: gzip`. Pieces are cut and halved on the line
    /// protocol, so `backend_max_body_bytes` bounds what InfluxDB decodes
    /// (its `max-body-size` is checked against the compressed
    /// `Content-Length` only, services/httpd/handler.go `serveWrite`, which
    /// a piece's compressed bytes never exceed in practice; a 413 still
    /// halves it).
    pub(super) async fn send_write(&self, backend: usize, write: &WriteBody, judge_each: bool) -> Sent {
        let topo = self.topology();
        let addr = &topo.backends[backend];
        let body = &write.lines[..];
        let limit = usize::try_from(topo.config.backend_max_body_bytes).unwrap_or(usize::MAX);
        let compress = topo.config.backends.get(&addr.name).is_some_and(|b| b.gzip);
        // A stack of the pieces still to send, the next one last.
        let mut todo = match write.gzip.as_ref().filter(|_| body.len() <= limit) {
            Some(gzip) => match self.send_body(addr, write.request(true), gzip.clone()).await {
                Ok(r) if (200..300).contains(&r.status) => {
                    return Sent { outcome: Ok(r), acked: body.len(), refused: Vec::new() }
                }
                Ok(r) if r.status == 413 => {
                    let mut todo = Vec::with_capacity(2);
                    match halve(body, 0..body.len()) {
                        Some((first, second)) => todo.extend([second, first]),
                        None => todo.push(0..body.len()),
                    }
                    todo
                }
                other => return Sent { outcome: other, acked: 0, refused: Vec::new() },
            },
            None => {
                let mut todo = split_points(body, 0..body.len(), limit);
                todo.reverse();
                todo
            }
        };
        let (mut acked, mut last) = (0, None);
        let (mut refused, mut refusal) = (Vec::new(), None);
        while let Some(piece) = todo.pop() {
            let answer = match compress.then(|| write.gzipped(piece.clone())).flatten() {
                Some(gzip) => self.send_body(addr, write.request(true), gzip).await,
                None => self.send_body(addr, write.request(false), write.lines.slice(piece.clone())).await,
            };
            // Too large: halved (a single point goes on as any refusal).
            if matches!(&answer, Ok(r) if r.status == 413) {
                if let Some((first, second)) = halve(body, piece.clone()) {
                    todo.push(second);
                    todo.push(first);
                    continue;
                }
            }
            match answer {
                Ok(r) if (200..300).contains(&r.status) => {
                    acked = piece.end;
                    last = Some(r);
                }
                // A refusal (4xx, or InfluxDB's 500 for a missing retention
                // policy) of this piece alone: dead-lettered, the rest goes on.
                Ok(r) if judge_each && super::refuses_request(&r) => {
                    refused.push(piece);
                    refusal.get_or_insert(r);
                }
                other => return Sent { outcome: other, acked, refused },
            }
        }
        let outcome = match refusal {
            Some(r) => r,
            None => last.unwrap_or_else(|| Response::empty(204)),
        };
        Sent { outcome: Ok(outcome), acked, refused }
    }

    /// Sends one write request with `body` to `addr`, counting the body's
    /// bytes, as they go on the wire, in `influx_proxy_bytes_sent_total`.
    async fn send_body(
        &self,
        addr: &BackendAddr,
        request: Request,
        body: SharedBytes,
    ) -> Result<Response, TransportError> {
        self.metrics.sent(&addr.name, body.len() as u64);
        self.transport.send_shared(addr, request, body).await
    }
}

/// Calls `each(start, next)` for every point of bytes `range` of a line
/// protocol `body`, with offsets into `body`: the point's first byte and the
/// start of the line after it. Text that is not valid line protocol (the
/// proxy never queues any) is walked by line from the first bad line on.
fn for_each_point(body: &[u8], range: Range<usize>, mut each: impl FnMut(usize, usize)) {
    let base = range.start;
    let slice = body.get(range).unwrap_or_default();
    let text = match std::str::from_utf8(slice) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&slice[..e.valid_up_to()]).unwrap_or_default(),
    };
    let mut at = 0;
    for point in line_protocol::points(text) {
        let Ok(point) = point else { break };
        each(base + point.start, base + point.next);
        at = point.next;
    }
    while at < slice.len() {
        let next = match slice[at..].iter().position(|&c| c == b'\n') {
            Some(p) => at + p + 1,
            None => slice.len(),
        };
        each(base + at, base + next);
        at = next;
    }
}

/// Cuts bytes `range` of a line protocol `body` into consecutive pieces of at
/// most `max` bytes each, at point boundaries (a piece holds whole points; a
/// string field value spanning lines is never cut). A point larger than
/// `max` is a piece of its own. The pieces cover `range` exactly, in order.
pub(crate) fn split_points(body: &[u8], range: Range<usize>, max: usize) -> Vec<Range<usize>> {
    if range.len() <= max {
        return vec![range];
    }
    let mut pieces = Vec::new();
    let mut piece_start = range.start;
    for_each_point(body, range.clone(), |start, next| {
        if next - piece_start > max && start > piece_start {
            pieces.push(piece_start..start);
            piece_start = start;
        }
    });
    pieces.push(piece_start..range.end);
    pieces
}

/// Bytes `range` of `body` cut in two at the point boundary nearest its
/// middle; `None` when it holds a single point.
fn halve(body: &[u8], range: Range<usize>) -> Option<(Range<usize>, Range<usize>)> {
    let middle = range.start + range.len() / 2;
    let mut best: Option<usize> = None;
    for_each_point(body, range.clone(), |start, _| {
        if start > range.start && best.is_none_or(|b| start.abs_diff(middle) < b.abs_diff(middle)) {
            best = Some(start);
        }
    });
    best.map(|cut| (range.start..cut, cut..range.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(body: &'a str, pieces: &[Range<usize>]) -> Vec<&'a str> {
        pieces.iter().map(|r| &body[r.clone()]).collect()
    }

    #[test]
    fn pieces_hold_whole_points_and_cover_the_body() {
        let body = "a v=1 1\nb v=2 2\nc v=3 3\nd v=4 4\n";
        assert_eq!(
            texts(body, &split_points(body.as_bytes(), 0..body.len(), 16)),
            ["a v=1 1\nb v=2 2\n", "c v=3 3\nd v=4 4\n"]
        );
        assert_eq!(
            texts(body, &split_points(body.as_bytes(), 0..body.len(), 17)),
            ["a v=1 1\nb v=2 2\n", "c v=3 3\nd v=4 4\n"]
        );
        assert_eq!(
            texts(body, &split_points(body.as_bytes(), 0..body.len(), 15)),
            ["a v=1 1\n", "b v=2 2\n", "c v=3 3\n", "d v=4 4\n"]
        );
        assert_eq!(split_points(body.as_bytes(), 0..body.len(), 1000), vec![0..body.len()]);
    }

    #[test]
    fn a_point_over_the_limit_is_a_piece_of_its_own() {
        let body = "a v=1 1\nbig s=\"0123456789012345678901234567890\" 2\nc v=3 3\n";
        assert_eq!(
            texts(body, &split_points(body.as_bytes(), 0..body.len(), 10)),
            ["a v=1 1\n", "big s=\"0123456789012345678901234567890\" 2\n", "c v=3 3\n"]
        );
    }

    #[test]
    fn a_string_spanning_lines_is_not_cut() {
        let body = "log s=\"one\ntwo\nthree\" 1\nlog s=\"x\" 2\n";
        let pieces = split_points(body.as_bytes(), 0..body.len(), 8);
        assert_eq!(texts(body, &pieces), ["log s=\"one\ntwo\nthree\" 1\n", "log s=\"x\" 2\n"]);
    }

    #[test]
    fn halving_gives_two_pieces_at_a_point_boundary_or_one_point() {
        let body = "a v=1 1\nb v=2 2\nc v=3 3\nd v=4 4\ne v=5 5\n";
        let (first, second) = halve(body.as_bytes(), 0..body.len()).unwrap();
        assert_eq!(texts(body, &[first, second]), ["a v=1 1\nb v=2 2\n", "c v=3 3\nd v=4 4\ne v=5 5\n"]);
        let one = "a v=1 1\n";
        assert_eq!(halve(one.as_bytes(), 0..one.len()), None);
        // A sub-range halves within itself.
        let (first, second) = halve(body.as_bytes(), 8..24).unwrap();
        assert_eq!(texts(body, &[first, second]), ["b v=2 2\n", "c v=3 3\n"]);
    }
}
