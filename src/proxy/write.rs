//! The write path: `POST /write` (InfluxDB 1.x) and `POST /api/v2/write`
//! (InfluxDB 1.8's 2.x compatibility API, "Write data with the InfluxDB API").
//!
//! The body (plain or gzip) is validated whole and each point routed by its
//! measurement to its replica set before anything is sent: the keymap's
//! explicit set, or in a shard group the replicas of the point's shard key
//! `(db, measurement[, shard tag value])` ([`crate::shard_group`]). Then each
//! backend gets just its points, the backends concurrently, in batches of at
//! most `backend_max_body_bytes` (counted with the timestamps added, cut at
//! point boundaries, sent or queued in body order, each its own write queue
//! record), so that no backend is sent more than its InfluxDB accepts
//! (`[http] max-body-size`, 25 MB by default). Points without a timestamp get
//! the proxy's time (at the request's precision) so that every replica, and
//! a later replay, stores the same point.
//!
//! Partial writes (`partial_writes`, default on), as InfluxDB 1.x does them
//! (services/httpd/handler.go `serveWrite`): malformed lines and points no
//! keymap routes are left out, the other points go exactly as a fully valid
//! body's would (same batches, stamps, routes, queues and moves; never the
//! forward-as-sent path, which would send the bad lines), and the answer is
//! 400 `partial write: ... dropped=N` ([`Dropped::answer`]); a body with
//! nothing to store is refused whole. A backend's refusal of its batch is
//! answered as it sent it, its name in `X-Influx-Proxy-Backend`.
//!
//! No copies where the body allows it: the client's body is taken from the
//! request (not copied) into a reference-counted buffer ([`SharedBytes`]).
//! When every point has a timestamp, all go to one replica set and the body
//! holds nothing but its points (each its line and `\n`: no comments, blank
//! lines, `\r\n` or blanks around a line, which the proxy reads more kindly
//! than InfluxDB), the body is forwarded as it came: one pass (validate and
//! route, noting where batches would be cut), then the replicas are sent
//! slices of that one buffer. A gzip body is then forwarded compressed as it
//! came (`Content-Encoding: gzip`; InfluxDB 1.x decodes it) when it decodes
//! to at most `backend_max_body_bytes`; a larger one is sent as batches cut
//! from the decoded buffer (the backend's limit applies to what it decodes),
//! and one refused with 413 is sent decoded, halved ([`super::send`]).
//!
//! With a keymap of `_default_` alone naming an explicit replica set, every
//! measurement has that route: no point is routed one by one, and the
//! counts the validation took ([`crate::validated_body::PointsSummary`];
//! natively on a worker thread) stand for the routing pass, so a body
//! forwarded as it came is not read again on the proxy's thread. Measured
//! with `just bench` (8 connections, 5,000-line bodies into two sinks):
//! 9.08 -> 10.32 M lines/s plain, 0.143 -> 0.123 CPU-s per million lines,
//! p99 9.4 -> 7.5 ms (means of 2 interleaved runs).
//!
//! Otherwise (points to stamp, several replica sets, a move under way, or a
//! body the backends must not see as sent) the body is read twice
//! (validate, then batch) instead of keeping a vector of points; the open
//! batches together hold at most `backend_max_body_bytes`; backends that get
//! the same points (replicas of the same sets) share one batch buffer, which
//! no backend request copies. A backend that cannot take a body directly
//! queues a copy of its line protocol (a queue record owns its bytes).

use super::moves::GroupMove;
use super::{allow, join_all, Delivery, Proxy, Refused, Topology};
use crate::error::ProxyError;
use crate::http::{Method, Request, Response, SharedBytes};
use crate::line_protocol::{normalize_precision, tag_value, Point};
use crate::rebalance::{KeyId, LiveToken, SourceOutcome};
use crate::route::{ReplicaSet, Route};
use crate::storage::Storage;
use crate::transport::Transport;
use crate::validated_body::{PreparedBody, WriteBodyJob};
use crate::write_queue::{Credentials, Record};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::rc::Rc;

/// Which write API the request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteApi {
    /// `/write?db=&rp=&precision=&u=&p=`
    V1,
    /// `/api/v2/write?bucket=db[/rp]&org=&precision=`
    V2,
    /// `/api/v3/write_lp` ([`crate::api_v3`]), already turned into a 1.x
    /// write (`db`, `precision`); `no_sync`: every backend's points go to its
    /// write queue (fsynced) instead of being sent directly;
    /// `accept_partial` instead of `partial_writes` for points no keymap
    /// routes (the body's malformed lines are already left out);
    /// `default_timestamp`: the timestamp (at the write's precision) for the
    /// points that have none, fixed by the caller so that writing the body
    /// again (after creating a missing database) stores the same points
    /// rather than a second copy of each ([`Proxy::default_timestamp`]);
    /// `None` takes a new one.
    V3 { no_sync: bool, accept_partial: bool, default_timestamp: Option<u128> },
}

/// Where a write goes on each backend.
struct WriteTarget {
    db: String,
    rp: Option<String>,
    /// Normalised to InfluxDB 1.x's `n`, `u`, `ms`, `s`, `m`, `h`; `None` = ns.
    precision: Option<String>,
    credentials: Credentials,
    /// Queue for every backend, answer once queued (`/api/v3/write_lp?no_sync=true`).
    no_sync: bool,
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    pub(crate) async fn write(
        &self,
        topo: &Topology,
        request: &mut Request,
        prepared: Option<PreparedBody>,
        api: WriteApi,
        now_ms: u64,
    ) -> Result<Response, ProxyError> {
        allow(request, &[Method::Post])?;
        let target = WriteTarget::from_request(request, api)?;
        // The client's bytes, taken without copying (shared by every backend
        // request that forwards them), decoded and validated: by the host
        // ahead of this (`prepared`, possibly on another thread), else here.
        let prepared = match prepared {
            Some(prepared) => prepared,
            None => WriteBodyJob::take(request, topo.config.max_body_bytes).run(),
        };
        let body = prepared.for_request(request.header("content-encoding"), topo.config.max_body_bytes)?;
        let (lines, gzip) = (body.lines().clone(), body.gzip().cloned());
        let text = body.text();
        let limit = usize::try_from(topo.config.backend_max_body_bytes).unwrap_or(usize::MAX);

        // Pass 1: route every point before sending anything. Nothing is
        // kept per point, only the distinct replica sets used and where the
        // body would be cut into batches if it is forwarded as it came.
        // Malformed lines and points with no route: with `partial_writes`
        // they are left out and the others written ([`Dropped`]); without,
        // the first of them fails the whole write and nothing is written.
        let partial = match api {
            WriteApi::V3 { accept_partial, .. } => accept_partial,
            WriteApi::V1 | WriteApi::V2 => topo.config.partial_writes,
        };
        let malformed = body.malformed();
        let first_malformed = malformed.first().map(|e| e.line_number);
        let mut dropped = Dropped::default();
        let mut last = LastRoute::default();
        let mut sets: Vec<ReplicaSet> = Vec::new();
        let (mut line_bytes, mut without_timestamp, mut routed) = (0usize, 0usize, 0usize);
        let mut cuts = Cuts::default();
        let mut moving = false;
        // Every measurement has the same route (a keymap of `_default_`
        // alone, an explicit set): no point is routed, none is read here;
        // the counts taken as the body was validated stand for this pass.
        // Not for a body of nothing but points over `limit`, whose cuts
        // into batches the walk finds.
        let summary = body.summary();
        let one_set = topo.router.only_set().filter(|_| !summary.only_points || text.len() <= limit);
        if let Some(set) = one_set {
            if summary.points > 0 {
                sets.push(set.clone());
            }
            (routed, line_bytes, without_timestamp) =
                (summary.points, summary.line_bytes, summary.without_timestamp);
        } else {
            for point in body.points(text) {
                // Whole-body refusal: what was answered when the first
                // malformed line ended the parse (a point with no route before
                // it is the error; none after it is read).
                if !partial && first_malformed.is_some_and(|n| point.line_number > n) {
                    break;
                }
                match self.route_point(topo, &target.db, &point, &mut last, &mut sets) {
                    Ok(_) => {}
                    Err(e) if partial => {
                        dropped.no_route(e, point.line_number);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                routed += 1;
                moving |= last.moving.is_some();
                line_bytes += point.line.len() + 1;
                without_timestamp += usize::from(!point.has_timestamp);
                if summary.only_points {
                    cuts.point(&point, limit);
                }
            }
        }
        if let (false, Some(e)) = (partial, malformed.first()) {
            return Err(ProxyError::BadRequest(e.to_string()));
        }
        if routed == 0 {
            // Nothing to store: the body is refused whole, as InfluxDB
            // refuses a body none of whose lines parse (its joined parse
            // errors, no `partial write:`).
            let first_bad_line = first_malformed.unwrap_or(usize::MAX);
            if let Some((e, _)) = dropped.first_no_route.as_ref().filter(|(_, line)| *line < first_bad_line) {
                return Err(e.clone());
            }
            if !malformed.is_empty() {
                let texts: Vec<String> = malformed.iter().map(|e| e.influxdb_text()).collect();
                return Err(ProxyError::BadRequest(texts.join("\n")));
            }
        }
        // Left-out lines: never forwarded as the client sent them. (With
        // one route for all, a body of only points is within `limit`: one
        // batch, no cut.)
        let batches =
            (summary.only_points && dropped.points == 0).then(|| cuts.finish(text.len(), summary.points));
        // What is answered once the points are written (a backend's refusal
        // wins, as the points writer's error wins in InfluxDB's handler).
        let answer = move |rejected: Option<Refused>| match rejected {
            Some(refused) => Ok(refusal_response(topo, refused)),
            None => dropped.answer(malformed),
        };

        // Every point has a timestamp, all go to one replica set, and the
        // body holds nothing but them (no comments, blank lines, `\r\n` or
        // padding the backend might read differently): the client's bytes
        // are sent as they came, the same buffer to every replica. A gzip
        // body is forwarded compressed when it decodes to at most
        // `backend_max_body_bytes`; a larger one is sent decoded, cut at
        // point boundaries into batches of at most that size (as the points
        // path would cut it), each batch a slice of the one decoded buffer.
        if let (Some(batches), [set], 0, false) = (batches, &sets[..], without_timestamp, moving) {
            let one = |lines: SharedBytes, gzip, points| WriteBody {
                db: target.db.clone(),
                rp: target.rp.clone(),
                precision: target.precision.clone(),
                credentials: target.credentials.clone(),
                lines,
                gzip,
                points: Some(points),
                compressed: Default::default(),
                no_sync: target.no_sync,
            };
            let bodies: Vec<WriteBody> = match gzip {
                Some(gzip) if lines.len() <= limit => {
                    let points = batches.iter().map(|(_, n)| n).sum();
                    vec![one(lines, Some(gzip), points)]
                }
                _ => batches.into_iter().map(|(range, n)| one(lines.slice(range), None, n)).collect(),
            };
            // In backend order, as the points path hands them over.
            let mut backends = set.to_vec();
            crate::sort::sort_unstable(&mut backends);
            backends.dedup();
            let mut rejected = None;
            // By value: a batch (and the gzip pieces made for it) is let go
            // once delivered.
            for body in bodies {
                self.deliver_to(&backends, &body, now_ms).await.or_else(|e| keep_going(e, &mut rejected))?;
            }
            return answer(rejected);
        }

        // Given only when some point lacks a timestamp.
        let default_timestamp = (without_timestamp > 0).then(|| {
            match api {
                WriteApi::V3 { default_timestamp: Some(t), .. } => t,
                _ => self.default_timestamp(target.precision.as_deref(), now_ms),
            }
            .to_string()
        });
        let stamp_bytes = default_timestamp.as_ref().map_or(0, |t| t.len() + 1);
        let total = line_bytes + without_timestamp * stamp_bytes;

        // Backends that get exactly the same points (they are in the same
        // used replica sets) form a group sharing one batch body: with one
        // replica set, or sets that do not overlap, one body per replica set.
        let mut groups: Vec<Group> = Vec::new();
        for backend in 0..topo.backends.len() {
            let sets_of: Vec<bool> = sets.iter().map(|s| s.contains(&backend)).collect();
            if !sets_of.contains(&true) {
                continue;
            }
            match groups.iter_mut().find(|g| g.sets == sets_of) {
                Some(g) => g.backends.push(backend),
                None => {
                    groups.push(Group { sets: sets_of, backends: vec![backend], body: Vec::new(), points: 0 })
                }
            }
        }
        // Per used set, the groups that get its points.
        let set_groups: Vec<Vec<usize>> =
            (0..sets.len()).map(|k| (0..groups.len()).filter(|&g| groups[g].sets[k]).collect()).collect();

        // Pass 2: fill the groups' batches (all of them together at most
        // `backend_max_body_bytes`, counted with the timestamps added) and
        // hand them over whenever the next point would not fit.
        let mut buffered = 0;
        let mut live: LiveBodies = BTreeMap::new();
        // The first backend 4xx: the later batches are still sent.
        let mut rejected = None;
        let used = sets.len();
        for point in body.points(text) {
            if !partial && first_malformed.is_some_and(|n| point.line_number > n) {
                break;
            }
            let set_index = match one_set {
                Some(_) => Ok(0),
                None => self.route_point(topo, &target.db, &point, &mut last, &mut sets),
            };
            let k = match set_index {
                Ok(k) => k,
                // Left out (counted in pass 1).
                Err(_) if partial => continue,
                Err(e) => return Err(e),
            };
            let targets = match set_groups.get(k) {
                Some(targets) if sets.len() == used => targets,
                _ => return Err(ProxyError::Internal("a point changed its route".into())),
            };
            let stamp = if point.has_timestamp { None } else { default_timestamp.as_deref() };
            let size = point.line.len() + 1 + stamp.map_or(0, |_| stamp_bytes);
            if buffered > 0 && buffered + size * targets.len() > limit {
                self.flush(topo, &target, &mut groups, &mut live, now_ms)
                    .await
                    .or_else(|e| keep_going(e, &mut rejected))?;
                buffered = 0;
            }
            // A point of a key being moved: also kept as that key's own
            // record, registered with the move when its batch is sent.
            if let Some((mv, key)) = &last.moving {
                let body = match live.get_mut(key) {
                    Some((_, body)) => body,
                    None => &mut live.entry(key.clone()).or_insert((mv.clone(), Vec::new())).1,
                };
                push_point(body, point.line, stamp);
            }
            for &g in targets {
                let batch = &mut groups[g];
                if batch.body.capacity() == 0 {
                    batch.body.reserve(limit.min(total));
                }
                push_point(&mut batch.body, point.line, stamp);
                batch.points += 1;
                buffered += size;
            }
        }
        self.flush(topo, &target, &mut groups, &mut live, now_ms)
            .await
            .or_else(|e| keep_going(e, &mut rejected))?;
        answer(rejected)
    }

    /// Hands `body` to each backend of `backends` (one replica set),
    /// concurrently, all sharing its bytes. Error as [`Proxy::settle`].
    async fn deliver_to(&self, backends: &[usize], body: &WriteBody, now_ms: u64) -> Result<(), Refused> {
        let deliveries = join_all(
            backends
                .iter()
                .map(|&backend| async move { (backend, self.deliver_shared(backend, body, now_ms).await) })
                .collect(),
        )
        .await;
        self.settle(deliveries)?;
        Ok(())
    }

    /// The index in `sets` of the replica set of `point` written to `db`
    /// (added to `sets` when new): the keymap's explicit set, or the
    /// replicas of the point's shard key in its shard group. `last` caches
    /// the previous point's key and set (bodies usually hold runs of one
    /// measurement, and of one tag value): a run of an explicit keymap costs
    /// one comparison per point, no trie walk and no hashing. Error: no
    /// route (400).
    fn route_point<'a, 'p>(
        &self,
        topo: &'p Topology,
        db: &str,
        point: &Point<'a>,
        last: &mut LastRoute<'a, 'p>,
        sets: &mut Vec<ReplicaSet>,
    ) -> Result<usize, ProxyError> {
        // The shard tag's value when the cache check below read it (same
        // measurement, so same group and tag): not scanned for again.
        let mut read_value = None;
        if let Some((m, tag, k)) = &last.key {
            // (`last.moving` is the cached key's move, if any.)
            if *m == point.measurement {
                match tag {
                    // An explicit set or a measurement-sharded group: the
                    // measurement is the whole key (the db is the request's).
                    None => return Ok(*k),
                    Some((key, value)) => {
                        let v = tag_value(point.line, key).unwrap_or(Cow::Borrowed(""));
                        if v == *value {
                            return Ok(*k);
                        }
                        read_value = Some(v);
                    }
                }
            }
        }
        let route = topo.router.route(&point.measurement).ok_or_else(|| {
            ProxyError::BadRequest(format!(
                "no route for measurement \"{}\" (line {}): add a keymap or \"_default_\"",
                point.measurement, point.line_number
            ))
        })?;
        last.moving = None;
        let (set, tag) = match route {
            Route::Set(set) => (Cow::Borrowed(set), None),
            Route::Group(group) => {
                // A point without the shard tag is placed (and cached) as the
                // shard of the empty value.
                let tag = group.shard_tag().map(|key| {
                    let value = read_value
                        .take()
                        .unwrap_or_else(|| tag_value(point.line, key).unwrap_or(Cow::Borrowed("")));
                    (key, value)
                });
                let value = tag.as_ref().map(|(_, v)| v.as_ref());
                let placed = || group.replicas(db, &point.measurement, value);
                match topo.moves.get(group.name()) {
                    // A key of a move: its targets as the move says, fixed
                    // for the whole request at its first point (both passes
                    // must agree).
                    Some(mv) => {
                        let key = KeyId::new(db, &point.measurement, value);
                        let set = match last.memo.get(&key) {
                            Some(set) => set.clone(),
                            None => {
                                let set = match mv.rebalance.write_targets(&key) {
                                    Some(names) => super::moves::indices_of(topo, &names),
                                    None => placed(),
                                };
                                last.memo.insert(key.clone(), set.clone());
                                set
                            }
                        };
                        if mv.rebalance.phase(&key).is_some() {
                            last.moving = Some((mv.clone(), key));
                        }
                        (Cow::Owned(set), tag)
                    }
                    None => (Cow::Owned(placed()), tag),
                }
            }
        };
        let k = match sets.iter().position(|s| *s == *set) {
            Some(k) => k,
            None => {
                sets.push(set.into_owned());
                sets.len() - 1
            }
        };
        last.key = match point.measurement {
            Cow::Borrowed(m) => Some((m, tag, k)),
            Cow::Owned(_) => None,
        };
        Ok(k)
    }

    /// Hands the groups' batches over (emptying them): each backend of a
    /// group gets its group's batch as one record, the backends concurrently.
    /// Error: the first backend 4xx, or 503 when a backend could neither take
    /// a batch nor queue it ([`Proxy::settle`]).
    async fn flush(
        &self,
        topo: &Topology,
        target: &WriteTarget,
        groups: &mut [Group],
        live: &mut LiveBodies,
        now_ms: u64,
    ) -> Result<(), Refused> {
        // Live writes of moving keys, registered before anything is sent
        // (no await in between); each is answered with the copy source's
        // delivery, or Failed if this future is dropped first.
        let mut tokens = LiveTokens(Vec::new());
        for (key, (mv, body)) in std::mem::take(live) {
            let record = Record::Write {
                db: target.db.clone(),
                rp: target.rp.clone(),
                precision: target.precision.clone(),
                credentials: target.credentials.clone(),
                body: body.into(),
            };
            if let Some(token) = mv.rebalance.live_write(&key, &record) {
                let source = mv.rebalance.source(&key).and_then(|n| topo.index_of(&n));
                tokens.0.push((mv, token, source));
            }
        }
        // One body per group, shared by its backends.
        let bodies: Vec<(&[usize], WriteBody)> = groups
            .iter_mut()
            .filter(|g| g.points > 0)
            .map(|g| {
                let body = WriteBody {
                    db: target.db.clone(),
                    rp: target.rp.clone(),
                    precision: target.precision.clone(),
                    credentials: target.credentials.clone(),
                    lines: SharedBytes::from(std::mem::take(&mut g.body)),
                    gzip: None,
                    points: Some(std::mem::take(&mut g.points)),
                    compressed: Default::default(),
                    no_sync: target.no_sync,
                };
                (&g.backends[..], body)
            })
            .collect();
        let deliveries = join_all(
            bodies
                .iter()
                .flat_map(|(backends, body)| {
                    backends.iter().map(move |&backend| async move {
                        (backend, self.deliver_shared(backend, body, now_ms).await)
                    })
                })
                .collect(),
        )
        .await;
        for (mv, token, source) in std::mem::take(&mut tokens.0) {
            let outcome = match deliveries.iter().find(|(b, _)| Some(*b) == source).map(|(_, d)| d) {
                Some(Delivery::Delivered(_)) => SourceOutcome::Acked,
                Some(Delivery::Queued) => SourceOutcome::Queued,
                _ => SourceOutcome::Failed,
            };
            mv.rebalance.source_answered(token, outcome);
        }
        self.settle(deliveries)?;
        Ok(())
    }
}

/// One write body for the backends of one replica set (or of one group of
/// backends that get the same points), shared by them: one buffer, whatever
/// the number of replicas ([`Proxy::deliver_shared`]).
#[derive(Debug, Clone)]
pub(super) struct WriteBody {
    pub(super) db: String,
    pub(super) rp: Option<String>,
    /// InfluxDB 1.x's `precision` (`None` = ns).
    pub(super) precision: Option<String>,
    pub(super) credentials: Credentials,
    /// Line protocol: whole points, each ending with `\n` (the last one may
    /// lack it when the client's bytes are forwarded as they came).
    pub(super) lines: SharedBytes,
    /// The client's gzip body when it is forwarded compressed as it came
    /// (it decodes to `lines`); sent with `Content-Encoding: gzip`.
    pub(super) gzip: Option<SharedBytes>,
    /// Points in `lines` (for the `written` metrics), when counted: the write
    /// path counts them as it routes; `None` for a queued record's body
    /// ([`WriteBody::of_record`]), whose lines are counted only if needed
    /// (`count_lines` reads the whole body: on replay it was 6% of the
    /// proxy thread's samples, spent twice per batch, perf).
    pub(super) points: Option<u64>,
    /// Pieces of `lines` compressed for the backends configured with
    /// `gzip` ([`WriteBody::gzipped`]): byte range, gzip bytes. Each piece is
    /// compressed once, by the first such backend that sends it, and shared
    /// by the others (the replicas of one set are sent the same pieces).
    pub(super) compressed: RefCell<Vec<(Range<usize>, SharedBytes)>>,
    /// Queued for every backend rather than sent directly
    /// (`/api/v3/write_lp?no_sync=true`, [`WriteApi::V3`]).
    pub(super) no_sync: bool,
}

impl WriteBody {
    /// The body of a write record (its bytes shared, not copied, however many
    /// pieces it is sent in); `None` for a statement. Its points are not
    /// counted ([`WriteBody::points`] is `None`): the replay, which sends
    /// queued records, counts the lines of what it acknowledges.
    pub(super) fn of_record(record: &Record) -> Option<WriteBody> {
        match record {
            Record::Write { db, rp, precision, credentials, body } => Some(WriteBody {
                db: db.clone(),
                rp: rp.clone(),
                precision: precision.clone(),
                credentials: credentials.clone(),
                lines: body.clone(),
                gzip: None,
                points: None,
                compressed: Default::default(),
                no_sync: false,
            }),
            Record::Statement { .. } => None,
        }
    }

    /// The write queue record of bytes `from..` of `lines`: a slice of the
    /// same buffer (no copy; the queue copies it once, into its file), and
    /// never the gzip bytes (a record is line protocol).
    pub(super) fn record(&self, from: usize) -> Record {
        Record::Write {
            db: self.db.clone(),
            rp: self.rp.clone(),
            precision: self.precision.clone(),
            credentials: self.credentials.clone(),
            body: self.lines.slice(from..self.lines.len()),
        }
    }

    /// Bytes `range` of `lines` gzip-compressed (flate2's fastest level,
    /// read straight from the shared buffer: no copy of the line protocol),
    /// for a backend configured with `gzip`. Compressed on the first call
    /// for `range`, then the same bytes for every later call (every replica
    /// of the set). `None` when the encoder failed (it writes to memory and
    /// does not); the piece is then sent plain.
    pub(super) fn gzipped(&self, range: Range<usize>) -> Option<SharedBytes> {
        if let Some((_, bytes)) = self.compressed.borrow().iter().find(|(r, _)| *r == range) {
            return Some(bytes.clone());
        }
        let piece = self.lines.get(range.clone())?;
        // Fast level (1): typical line protocol still shrinks about 6x (zlib
        // level 1 on 5,000 telegraf-like points: 659 KB -> 105 KB), for
        // about a third of the default level's CPU (which gets 9x).
        let out = Vec::with_capacity(piece.len() / 4 + 64);
        let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        encoder.write_all(piece).ok()?;
        let bytes = SharedBytes::from(encoder.finish().ok()?);
        self.compressed.borrow_mut().push((range, bytes.clone()));
        Some(bytes)
    }

    /// The `POST /write` request without its body (sent with
    /// [`Transport::send_shared`]); `gzip` adds `Content-Encoding: gzip`.
    pub(super) fn request(&self, gzip: bool) -> Request {
        let mut request = super::write_request(&self.db, &self.rp, &self.precision, &self.credentials);
        if gzip {
            request.headers.push(("content-encoding".into(), "gzip".into()));
        }
        request
    }
}

/// Appends a point's `line`, the default timestamp `stamp` when it had
/// none, and a line ending to `body`.
fn push_point(body: &mut Vec<u8>, line: &str, stamp: Option<&str>) {
    body.extend_from_slice(line.as_bytes());
    if let Some(ts) = stamp {
        body.push(b' ');
        body.extend_from_slice(ts.as_bytes());
    }
    body.push(b'\n');
}

/// Where a body that is nothing but its points
/// ([`crate::validated_body::PointsSummary::only_points`]) would be cut into
/// batches of at most `backend_max_body_bytes`, kept while pass 1 reads its
/// points (at point boundaries, as [`super::send`] cuts a record, so a
/// forwarded body goes in the same batches).
#[derive(Default)]
struct Cuts {
    batch_start: usize,
    batch_points: u64,
    /// Full batches: byte ranges and point counts.
    batches: Vec<(std::ops::Range<usize>, u64)>,
}

impl Cuts {
    /// Point `point` was read (the next one of the body).
    fn point(&mut self, point: &Point<'_>, limit: usize) {
        if point.next - self.batch_start > limit && point.start > self.batch_start {
            self.batches.push((self.batch_start..point.start, self.batch_points));
            self.batch_start = point.start;
            self.batch_points = 0;
        }
        self.batch_points += 1;
    }

    /// The batches covering the whole body of `len` bytes and `points`
    /// points (those after the last cut in the last batch; all of them
    /// when no point was read).
    fn finish(mut self, len: usize, points: usize) -> Vec<(std::ops::Range<usize>, u64)> {
        let before: u64 = self.batches.iter().map(|(_, n)| n).sum();
        self.batches.push((self.batch_start..len, (points as u64).saturating_sub(before)));
        self.batches
    }
}

/// Per moving key of a request's batch: its move and its own lines.
type LiveBodies = BTreeMap<KeyId, (Rc<GroupMove>, Vec<u8>)>;

/// Registered live writes not yet answered: answered `Failed` when dropped
/// (the write future was dropped before the source answered).
struct LiveTokens(Vec<(Rc<GroupMove>, LiveToken, Option<usize>)>);

impl Drop for LiveTokens {
    fn drop(&mut self) {
        for (mv, token, _) in self.0.drain(..) {
            mv.rebalance.source_answered(token, SourceOutcome::Failed);
        }
    }
}

/// The key and replica set (index into the request's used sets) of the
/// previous point: `(measurement, Some((shard tag, its value)) in a
/// tag-sharded group, index)`. A measurement-sharded group needs no tag: the
/// database is the request's.
#[derive(Default)]
struct LastRoute<'a, 'p> {
    key: Option<(&'a str, Option<ShardTagValue<'a, 'p>>, usize)>,
    /// The previous point's key when it is being moved, with its move.
    moving: Option<(Rc<GroupMove>, KeyId)>,
    /// The replica set of each key of a move seen by this request.
    memo: BTreeMap<KeyId, ReplicaSet>,
}

/// A point's shard tag (the group's, borrowed from the router) and its value.
type ShardTagValue<'a, 'p> = (&'p str, Cow<'a, str>);

/// After a batch failed with `e`: a backend 4xx is kept in `rejected` (the
/// first one is the answer) and the later batches are still sent, each being
/// judged on its own as InfluxDB judges the points of a partial write; any
/// other error (503: a batch could not be kept) ends the write at once with
/// that error, so that the client retries rather than drops the write.
fn keep_going(e: Refused, rejected: &mut Option<Refused>) -> Result<(), ProxyError> {
    match e {
        (ProxyError::Backend { .. }, _) => {
            rejected.get_or_insert(e);
            Ok(())
        }
        (other, _) => Err(other),
    }
}

/// The answer to a write a backend refused: its status and its error text
/// as it sent them (InfluxDB's body, e.g. `partial write: field type
/// conflict: ... dropped=N`, with no prefix), and the backend's name in
/// `X-Influx-Proxy-Backend`.
fn refusal_response(topo: &Topology, (error, backend): Refused) -> Response {
    let mut response = error.to_response();
    if let Some(addr) = backend.and_then(|b| topo.backends.get(b)) {
        response.headers.push(("x-influx-proxy-backend".into(), addr.name.clone()));
    }
    response
}

/// The points of a write body the proxy left out under `partial_writes`
/// (besides its malformed lines, [`crate::validated_body::ValidatedBody::malformed`]):
/// points no keymap routes, which the proxy cannot store anywhere. In
/// InfluxDB's partial-write model (tsdb/shard.go `PartialWriteError`) they
/// are points dropped by the writer, as points beyond a retention policy
/// are: counted in `dropped=N`.
#[derive(Default)]
struct Dropped {
    points: u64,
    /// The first one's error (the reason named in the answer) and line number.
    first_no_route: Option<(ProxyError, usize)>,
}

impl Dropped {
    fn no_route(&mut self, e: ProxyError, line_number: usize) {
        self.points += 1;
        self.first_no_route.get_or_insert((e, line_number));
    }

    /// The answer once the other points are written: 204 when nothing was
    /// left out; else InfluxDB 1.x's partial write (services/httpd/handler.go
    /// `serveWrite`, the same in 1.6 and 1.8), 400 `partial write: <reason>
    /// dropped=N`, the reason being each malformed line's `unable to parse
    /// '<line>': <reason>` joined with `\n` (models/points.go
    /// `ParsePointsWithPrecision`), then the first point with no route's
    /// error; `N` counts the points with no route (InfluxDB's `dropped`
    /// does not count lines that did not parse: it answers `dropped=0`).
    fn answer(self, malformed: &[crate::line_protocol::LineProtocolError]) -> Result<Response, ProxyError> {
        if malformed.is_empty() && self.points == 0 {
            return Ok(Response::empty(204));
        }
        let mut reasons: Vec<String> = malformed.iter().map(|e| e.influxdb_text()).collect();
        reasons.extend(self.first_no_route.map(|(e, _)| e.message().to_string()));
        Err(ProxyError::BadRequest(format!("partial write: {} dropped={}", reasons.join("\n"), self.points)))
    }
}

/// Backends that get the same points, and their batch being filled: line
/// protocol with the default timestamp added where a point had none.
struct Group {
    /// Per replica set used by the request, whether these backends are in it.
    sets: Vec<bool>,
    backends: Vec<usize>,
    body: Vec<u8>,
    points: u64,
}

impl WriteTarget {
    fn from_request(request: &Request, api: WriteApi) -> Result<WriteTarget, ProxyError> {
        let non_empty = |name: &str| request.param(name).filter(|v| !v.is_empty()).map(str::to_string);
        let (db, rp) = match api {
            WriteApi::V1 | WriteApi::V3 { .. } => {
                let db =
                    non_empty("db").ok_or_else(|| ProxyError::BadRequest("database is required".into()))?;
                (db, non_empty("rp"))
            }
            WriteApi::V2 => {
                let bucket =
                    non_empty("bucket").ok_or_else(|| ProxyError::BadRequest("bucket is required".into()))?;
                match bucket.split_once('/') {
                    Some((db, rp)) if !db.is_empty() => {
                        (db.to_string(), Some(rp).filter(|r| !r.is_empty()).map(str::to_string))
                    }
                    Some(_) => {
                        return Err(ProxyError::BadRequest(format!(
                            "bucket {bucket:?}: database is required"
                        )))
                    }
                    None => (bucket, None),
                }
            }
        };
        // As InfluxDB 1.x (`models.ParseConsistencyLevel`): `consistency`, when
        // given, is one of any, one, quorum, all (any case), else 400. It has no
        // meaning for a single InfluxDB OSS server and is not forwarded.
        if let Some(level) = request.param("consistency").filter(|v| !v.is_empty()) {
            if !["any", "one", "quorum", "all"].iter().any(|l| l.eq_ignore_ascii_case(level)) {
                return Err(ProxyError::BadRequest("invalid consistency level".into()));
            }
        }
        let precision = match normalize_precision(request.param("precision").unwrap_or(""))
            .map_err(ProxyError::BadRequest)?
        {
            "" | "n" | "ns" => None,
            p => Some(p.to_string()),
        };
        let credentials = Credentials {
            username: non_empty("u"),
            password: request.param("p").map(str::to_string),
            authorization: request.header("authorization").map(str::to_string),
        };
        let no_sync = matches!(api, WriteApi::V3 { no_sync: true, .. });
        Ok(WriteTarget { db, rp, precision, credentials, no_sync })
    }
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    /// The timestamp given to the points of one request that have none:
    /// `now_ms` in units of `precision` (`None` = ns). At ns and µs precision it is also
    /// strictly greater than the one given to the previous request, so two
    /// requests within the same millisecond stay two points, as they would on
    /// one InfluxDB (which stamps them with its ns clock).
    pub(crate) fn default_timestamp(&self, precision: Option<&str>, now_ms: u64) -> u128 {
        let now = now_ms as u128;
        let (value, last) = match precision {
            None | Some("n" | "ns") => (now * 1_000_000, Some(&self.last_default_ns)),
            Some("u") => (now * 1_000, Some(&self.last_default_us)),
            Some("ms") => (now, None),
            Some("s") => (now / 1_000, None),
            Some("m") => (now / 60_000, None),
            Some("h") => (now / 3_600_000, None),
            Some(_) => (now * 1_000_000, Some(&self.last_default_ns)),
        };
        match last {
            Some(cell) => {
                let v = value.max(cell.get() + 1);
                cell.set(v);
                v
            }
            None => value,
        }
    }
}
