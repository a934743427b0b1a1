//! The durable, ordered, per-backend write queue.
//!
//! While a backend's queue is not empty, every new write or schema statement
//! for that backend is appended to the queue instead of being sent, so a
//! recovering backend receives everything in the original order. A record is
//! removed only after the backend acknowledged it (2xx) or rejected it with a
//! 4xx, in which case it is moved to the dead-letter file.
//!
//! This documentation is the specification of the queue: its guarantees, its
//! files, and what happens after a crash. All IO goes through
//! [`Storage`]; the queue keeps no record data in memory.
//!
//! # Guarantees
//!
//! 1. **Nothing acknowledged is lost.** [`WriteQueue::push`] returns `Ok` only
//!    after [`Storage::append`] returned `Ok`, i.e. after the whole record is
//!    durable. A record leaves the queue only through [`WriteQueue::ack`] or
//!    [`WriteQueue::dead_letter`]. The only records ever dropped without one
//!    of those are records whose bytes on disk are damaged (see "Corruption").
//! 2. **Order.** Records are replayed in the order they were pushed: segments
//!    are read in increasing sequence number, records within a segment in file
//!    order, and a record never spans two segments.
//! 3. **At-least-once delivery.** A record is delivered again after a restart
//!    if the process stopped after the backend took it but before the
//!    acknowledgement was durable (and once more if the `ack` file itself is
//!    damaged). Re-sending is harmless for InfluxDB 1.x writes with explicit
//!    timestamps (a point with the same measurement, tag set and timestamp
//!    replaces the earlier one with the same field values: InfluxDB 1.x
//!    documentation, "Duplicate points") and for `CREATE`/`DROP` statements.
//! 4. **Bounded disk.** Bytes of records not yet acknowledged never pass
//!    `max_bytes`: a push that would pass it fails with [`QueueError::Full`]
//!    (the proxy answers 503) and is accepted again once replay has freed
//!    space. Fully acknowledged segments are deleted, and when the queue
//!    drains completely all its segments are deleted, so disk use shrinks with
//!    the queue. On disk there are at most `max_bytes` + one segment (the
//!    already-acknowledged front of the oldest segment) + the 24-byte `ack`
//!    file + the dead-letter file, itself bounded by `dead_letter_max_bytes`.
//! 5. **Bounded memory.** In memory the queue keeps, per segment, its sequence
//!    number, its length and how many unacknowledged records it holds; nothing
//!    per record. A push does not read any file.
//! 6. **A bad record never blocks the queue.** A record the backend rejects
//!    with 4xx goes to the dead-letter file; a record whose bytes are damaged
//!    is skipped (and counted, see [`WriteQueue::dropped`]).
//! 7. **Replayed writes are never glued together.** A write body is stored with
//!    a trailing `\n` (one is added on push if the body lacks it), so bodies
//!    concatenated on replay stay separate lines.
//! 8. **The queue always opens.** Damaged bytes are cut or skipped, never a
//!    reason to refuse to start; only a storage that cannot be listed or read
//!    makes [`WriteQueue::open`] fail.
//!
//! # Files
//!
//! One directory per backend (e.g. `queue/a`):
//!
//! ```text
//! queue/a/00000000000000000007.seg   segment 7: records, appended to
//! queue/a/00000000000000000008.seg   segment 8 (newer)
//! queue/a/ack                        the acknowledgement position
//! queue/a/dead-letter.jsonl          records refused by the backend (4xx)
//! ```
//!
//! Other file names in the directory are ignored.
//!
//! ## Segment files
//!
//! A segment is named by its sequence number in 20 decimal digits plus `.seg`.
//! Records are appended to the newest segment; a new segment (next sequence
//! number) is started when appending would make the current one longer than
//! `segment_bytes` ([`DEFAULT_SEGMENT_BYTES`], 8 MiB), so a segment is at most
//! `segment_bytes` long unless it holds a single larger record. A segment file
//! is the concatenation of record frames:
//!
//! ```text
//! offset  size  field
//! 0       1     magic 0xD1
//! 1       1     format version, 1
//! 2       4     payload length N, u32 little-endian
//! 6       4     CRC-32 (IEEE, as crc32fast computes it) of the payload, u32 LE
//! 10      N     payload
//! ```
//!
//! The payload (format version 1) is a length-prefixed binary encoding, chosen
//! over JSON so that bodies of several MB are stored as raw bytes, unescaped:
//!
//! ```text
//! payload   = kind:u8 fields
//! kind 1    = Write:     str db, opt rp, opt precision, creds, bytes body
//! kind 2    = Statement: opt db, str q, creds
//! creds     = opt username, opt password, opt authorization
//! bytes     = len:u32 LE, len bytes          str = bytes holding UTF-8
//! opt       = 0:u8 (absent) | 1:u8 str
//! ```
//!
//! A payload must be consumed exactly; trailing bytes, bad UTF-8 or an unknown
//! kind make the record corrupt. Credentials are stored as the client sent
//! them (they are replayed unchanged), so the data directory must be private to
//! the proxy.
//!
//! ## The `ack` file
//!
//! 24 bytes, replaced atomically ([`Storage::write_atomic`]) on every
//! acknowledgement:
//!
//! ```text
//! 0   4  magic "IQA1"
//! 4   8  segment sequence number S, u64 LE
//! 12  8  offset O, u64 LE
//! 20  4  CRC-32 of bytes 0..20, u32 LE
//! ```
//!
//! (S, O) is the position of the oldest record not yet acknowledged: every
//! record in segments before S and before offset O in segment S has been
//! acknowledged, and no other. It only moves forward. When the oldest segment
//! is fully acknowledged the position is written as (next segment, 0); when the
//! whole queue is acknowledged it is written as (S', 0) where S' is the
//! sequence number the next segment will get. New segments always get a
//! sequence number greater than every segment that existed and not smaller
//! than S (greater than S when O > 0), so an old position never covers new
//! records. A missing `ack` file means (0, 0): nothing acknowledged.
//!
//! ## The dead-letter file
//!
//! `dead-letter.jsonl`: one JSON object per line, appended durably, never
//! rewritten. A write gives
//! `{"time_ms":..,"reason":..,"db":..,"rp":..,"precision":..,"body":..}`
//! (`rp`/`precision` are `null` when absent; `body` is the line protocol as a
//! string, or `"body_hex"` when it is not UTF-8); a statement gives
//! `{"time_ms":..,"reason":..,"db":..,"q":..}`. Credentials are never written
//! there. Once the file has reached `dead_letter_max_bytes`
//! ([`DEFAULT_DEAD_LETTER_MAX_BYTES`]), further dead letters are still
//! removed from the queue and counted by [`WriteQueue::dead_letters`] but no
//! longer written, so the file cannot fill the disk.
//!
//! # Operations
//!
//! - **push**: encode the frame in one buffer, check `max_bytes`, pick the
//!   segment (start a new one if the current one would pass `segment_bytes`,
//!   is sealed, or there is none), then one [`Storage::append`] of the whole
//!   frame. Memory state (segment length, depth) changes only after the append
//!   succeeded. If the append fails, the segment is truncated back to its
//!   previous length so no partial record stays for a later record to follow;
//!   if that truncate fails too, the segment is *sealed*: nothing more is
//!   appended to it (its good length is known in memory) and the next push
//!   starts a new segment. A push future dropped in the middle of its append
//!   (cancelled) is repaired the same way by the next push.
//! - **peek**: reads the frame header at the head position
//!   ([`Storage::read_at`], 10 bytes), then the payload, checks the CRC and
//!   decodes. Files are read only up to the length known in memory.
//! - **ack**: the id must be the head record (as [`WriteQueue::peek`] gave
//!   it). The next position is written to `ack` with `write_atomic`; only then
//!   does memory move on; then fully acknowledged segment files are removed (a
//!   failed removal is retried at the next ack, and on open). Acknowledging a
//!   record that is already acknowledged is a no-op (`Ok`); acknowledging any
//!   other id is an error ([`QueueError::Io`] naming both positions) and
//!   changes nothing.
//! - **dead_letter**: same id rule; appends the JSON line durably, then acks.
//!   A crash between the two writes the line again after restart.
//!
//! The proxy is single-threaded but async: pushes, peeks and acks of one queue
//! may interleave at await points, so the state sits behind an
//! `async_lock::Mutex` held for the whole operation, storage calls included.
//!
//! # Recovery on open
//!
//! 1. List the directory; read `ack`. A damaged `ack` file (bad length, magic
//!    or CRC) is treated as missing: replay restarts at the oldest segment
//!    (duplicates, never loss) and [`Recovery::ack_reset`] says so.
//! 2. Delete segments older than the ack position's segment (fully
//!    acknowledged; a crash between writing `ack` and deleting them leaves
//!    them behind).
//! 3. Read each remaining segment once and validate every record from the ack
//!    position (offset 0 in later segments) to the end, counting records and
//!    bytes waiting (the depth).
//! 4. Drop what is damaged, by the rule below. Segments left without any
//!    record to deliver are deleted.
//! 5. Count the dead-letter file's lines; a torn last line (no `\n`, a crash in
//!    the middle of its append) is cut off.
//!
//! ## Corruption
//!
//! A record is *damaged* when its header is short, its magic or version is
//! wrong, its payload runs past the end of the file, its CRC does not match,
//! or its payload does not decode. Appends are the only writes to a segment,
//! so a crash can only leave a torn record at the very end of the newest
//! segment; damage anywhere else means the disk changed the bytes. The rule,
//! applied the same way on open and, should bytes change under a running
//! queue, on peek:
//!
//! - If the header is intact (magic, version, and a length that fits in the
//!   file) and the bytes just after the record are either the end of the
//!   segment or a valid record, only this record is damaged: it is skipped
//!   (at the end of a segment, cut off with [`Storage::truncate`]).
//! - Otherwise the length cannot be trusted and there is no way to find the
//!   next record: the rest of the segment is dropped (cut off on open; later
//!   segments are unaffected). A torn tail always falls here or in the first
//!   case.
//!
//! Dropped bytes are reported by [`WriteQueue::recovery`] (on open) and
//! [`WriteQueue::dropped`] (since open). If a cut fails, the segment is sealed
//! and its damaged tail is simply never read.

use crate::storage::Storage;
use async_lock::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Default largest segment file, in bytes (8 MiB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Default largest dead-letter file, in bytes (64 MiB).
pub const DEFAULT_DEAD_LETTER_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes of a record frame before its payload.
pub const RECORD_HEADER_BYTES: u64 = 10;
/// The dead-letter file's name inside the queue directory.
pub const DEAD_LETTER_FILE: &str = "dead-letter.jsonl";

const HEADER: usize = RECORD_HEADER_BYTES as usize;
const RECORD_MAGIC: u8 = 0xD1;
const RECORD_VERSION: u8 = 1;
const KIND_WRITE: u8 = 1;
const KIND_STATEMENT: u8 = 2;
const ACK_FILE: &str = "ack";
const ACK_MAGIC: &[u8; 4] = b"IQA1";
const ACK_BYTES: usize = 24;
const SEGMENT_SUFFIX: &str = ".seg";
/// Chunk size when counting dead-letter lines on open.
const SCAN_CHUNK: usize = 1024 * 1024;

/// The client's credentials, forwarded unchanged to backends (InfluxDB 1.x
/// "Authentication": `u`/`p` query parameters or the `Authorization` header).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    /// The `Authorization` header value (`Basic ...` or `Token ...`).
    pub authorization: Option<String>,
}

/// One queued operation for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A `/write`: line protocol points (newline-terminated lines) for this
    /// backend only.
    Write {
        db: String,
        rp: Option<String>,
        precision: Option<String>,
        credentials: Credentials,
        /// Line protocol, each line ending in `\n`. [`WriteQueue::push`] adds a
        /// final `\n` to a non-empty body that lacks it.
        body: Vec<u8>,
    },
    /// A schema statement (`CREATE DATABASE ...`, `DROP MEASUREMENT ...`) to be
    /// sent as `POST /query`.
    Statement { db: Option<String>, q: String, credentials: Credentials },
}

/// Where a record lies; returned by [`WriteQueue::peek`], given back to
/// [`WriteQueue::ack`] / [`WriteQueue::dead_letter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordId {
    /// Sequence number of the segment file.
    pub segment: u64,
    /// Byte offset of the record's frame in the segment.
    pub offset: u64,
    /// Offset just past the record.
    pub end: u64,
}

/// How much is waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Records not yet acknowledged.
    pub records: u64,
    /// Bytes on disk of those records (headers included).
    pub bytes: u64,
}

/// Why the queue could not keep or give a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueError {
    /// Appending would pass `max_bytes`; the write is not kept (answer 503).
    Full { max_bytes: u64 },
    /// The storage failed (disk full, permissions); the write is not kept.
    /// Also: [`WriteQueue::ack`] of an id that is not the oldest record.
    Io(String),
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Full { max_bytes } => write!(f, "write queue full ({max_bytes} bytes)"),
            QueueError::Io(e) => write!(f, "write queue storage error: {e}"),
        }
    }
}

impl std::error::Error for QueueError {}

/// Sizes of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    /// Largest total of bytes (frames, headers included) of records not yet
    /// acknowledged; a push past it fails with [`QueueError::Full`].
    pub max_bytes: u64,
    /// A new segment file is started when appending would make the current
    /// one longer than this, in bytes.
    pub segment_bytes: u64,
    /// The dead-letter file stops growing at this many bytes.
    pub dead_letter_max_bytes: u64,
}

impl QueueOptions {
    /// `max_bytes` with the default segment and dead-letter sizes.
    pub fn new(max_bytes: u64) -> QueueOptions {
        QueueOptions {
            max_bytes,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            dead_letter_max_bytes: DEFAULT_DEAD_LETTER_MAX_BYTES,
        }
    }
}

/// What [`WriteQueue::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files holding records to deliver.
    pub segments: usize,
    /// Segment files deleted because everything in them was acknowledged
    /// (or nothing was left in them).
    pub removed_segments: usize,
    /// Bytes cut off segment tails: torn records from a crash during an
    /// append, or damaged records (see "Corruption").
    pub truncated_bytes: u64,
    /// Damaged records in the middle of a segment, counted in the depth and
    /// skipped (counted by [`WriteQueue::dropped`]) when replay reaches them.
    pub corrupt_records: u64,
    /// True when the `ack` file was damaged: replay restarts at the oldest
    /// segment, so some records may be delivered twice.
    pub ack_reset: bool,
    /// Bytes of a torn last line cut off the dead-letter file.
    pub dead_letter_truncated_bytes: u64,
}

/// One backend's queue in directory `dir` of the storage.
#[derive(Debug)]
pub struct WriteQueue {
    dir: String,
    options: QueueOptions,
    recovery: Recovery,
    state: Mutex<State>,
    // Mirrors of `State` counters, readable without awaiting the lock.
    records: AtomicU64,
    bytes: AtomicU64,
    dead_letters: AtomicU64,
    dropped_records: AtomicU64,
    dropped_bytes: AtomicU64,
}

/// One segment file as the queue knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    seq: u64,
    /// Good length: records end here; bytes past it (a sealed segment's
    /// damaged tail) are never read.
    len: u64,
    /// Records not yet acknowledged in this segment.
    records: u64,
}

#[derive(Debug, Clone)]
struct State {
    /// Oldest first; the back one receives appends when `writable`.
    segments: VecDeque<Segment>,
    /// Offset of the oldest unacknowledged record in `segments[0]`.
    head_offset: u64,
    writable: bool,
    /// Sequence number of the next new segment.
    next_seq: u64,
    depth: QueueDepth,
    /// The record last returned by peek, while it is the head.
    peeked: Option<RecordId>,
    /// (segment, length before) of an append that did not finish (cancelled).
    pending_append: Option<(u64, u64)>,
    /// Consumed segments whose files are still to be removed.
    garbage: Vec<u64>,
    dead_letter_len: u64,
    /// A dead-letter append failed and could not be rolled back.
    dead_letter_dirty: bool,
    dead_letters: u64,
    dropped: QueueDepth,
}

impl State {
    /// The ack position: the oldest unacknowledged record (or where the next
    /// record will be when everything is acknowledged).
    fn head_pos(&self) -> (u64, u64) {
        match self.segments.front() {
            Some(s) => (s.seq, self.head_offset),
            None => (self.next_seq, 0),
        }
    }

    /// Moves consumed segments (all but the last) to `garbage`.
    fn normalize(&mut self) {
        while self.segments.len() > 1 && self.head_offset >= self.segments[0].len {
            if let Some(s) = self.segments.pop_front() {
                self.garbage.push(s.seq);
            }
            self.head_offset = 0;
            self.peeked = None;
        }
    }

    /// Everything acknowledged: all segment files become garbage and the next
    /// push starts a fresh segment.
    fn compact_if_drained(&mut self) {
        if self.segments.len() == 1 && self.head_offset >= self.segments[0].len {
            if let Some(s) = self.segments.pop_front() {
                self.garbage.push(s.seq);
                self.next_seq = self.next_seq.max(s.seq + 1);
            }
            self.head_offset = 0;
            self.writable = false;
            self.pending_append = None;
            self.peeked = None;
            self.depth = QueueDepth::default();
        }
    }

    /// Removes the head record (offset .. end) from the counts.
    fn consume_head(&mut self, end: u64, records: u64) {
        let bytes = end.saturating_sub(self.head_offset);
        if let Some(front) = self.segments.front_mut() {
            front.records = front.records.saturating_sub(records);
        }
        self.head_offset = end;
        self.depth.records = self.depth.records.saturating_sub(records);
        self.depth.bytes = self.depth.bytes.saturating_sub(bytes);
        self.peeked = None;
    }
}

/// Why the head record could not be read, and where the next one is.
enum Frame {
    Valid {
        end: u64,
        record: Record,
    },
    /// `skip_to`: the end of this record when only it is damaged; `None` when
    /// the rest of the segment cannot be read.
    Damaged {
        skip_to: Option<u64>,
    },
}

fn io_err(what: &str, path: &str, e: io::Error) -> QueueError {
    QueueError::Io(format!("{what} {path}: {e}"))
}

impl WriteQueue {
    /// Opens (or creates) the queue in `dir`: finds the segments, drops a torn
    /// or corrupt tail record (a crash in the middle of an append), and resumes
    /// after the last acknowledged record. `max_bytes` bounds the bytes on disk.
    /// Segment and dead-letter sizes are the defaults; see
    /// [`WriteQueue::open_with`].
    pub async fn open<S: Storage>(storage: &S, dir: &str, max_bytes: u64) -> Result<WriteQueue, QueueError> {
        WriteQueue::open_with(storage, dir, QueueOptions::new(max_bytes)).await
    }

    /// [`WriteQueue::open`] with explicit sizes. Errors only when the
    /// directory cannot be listed or a file cannot be read; damaged contents
    /// are repaired (see "Recovery on open" in the module documentation).
    pub async fn open_with<S: Storage>(
        storage: &S,
        dir: &str,
        options: QueueOptions,
    ) -> Result<WriteQueue, QueueError> {
        let dir = dir.trim_end_matches('/').to_string();
        let names = storage.list(&dir).await.map_err(|e| io_err("cannot list", &dir, e))?;
        let mut seqs: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        seqs.sort_unstable();
        let mut recovery = Recovery::default();

        let ack_path = format!("{dir}/{ACK_FILE}");
        let ack = match storage.read(&ack_path).await {
            Ok(bytes) => {
                let ack = decode_ack(&bytes);
                recovery.ack_reset = ack.is_none();
                ack
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("cannot read", &ack_path, e)),
        };
        let (ack_seq, ack_offset) = ack.unwrap_or((0, 0));

        // New segments must not be covered by the ack position.
        let mut next_seq = if ack_offset > 0 { ack_seq.saturating_add(1) } else { ack_seq };
        let mut segments = VecDeque::new();
        let mut head_offset = 0;
        let mut depth = QueueDepth::default();
        let mut writable = true;
        for seq in seqs {
            next_seq = next_seq.max(seq.saturating_add(1));
            let path = segment_path(&dir, seq);
            if seq < ack_seq {
                recovery.removed_segments += 1;
                // A failed removal is retried at the next open.
                let _ = storage.remove(&path).await;
                continue;
            }
            let buf = storage.read(&path).await.map_err(|e| io_err("cannot read", &path, e))?;
            let file_len = buf.len() as u64;
            let start = if seq == ack_seq { ack_offset.min(file_len) } else { 0 };
            let mut pos = start;
            let mut records = 0;
            let mut cut = None;
            while pos < file_len {
                match check_frame(&buf, pos) {
                    Frame::Valid { end, .. } => {
                        records += 1;
                        pos = end;
                    }
                    Frame::Damaged { skip_to: Some(end) } if end < file_len => {
                        recovery.corrupt_records += 1;
                        records += 1;
                        pos = end;
                    }
                    Frame::Damaged { .. } => {
                        cut = Some(pos);
                        break;
                    }
                }
            }
            let mut sealed = false;
            if let Some(cut) = cut {
                recovery.truncated_bytes += file_len - cut;
                sealed = storage.truncate(&path, cut).await.is_err();
            }
            let len = cut.unwrap_or(file_len);
            if records == 0 {
                recovery.removed_segments += 1;
                let _ = storage.remove(&path).await;
                continue;
            }
            if segments.is_empty() {
                head_offset = start;
            }
            depth.records += records;
            depth.bytes += len - start;
            segments.push_back(Segment { seq, len, records });
            // Only the newest segment is appended to; a sealed one never again.
            writable = !sealed;
        }
        recovery.segments = segments.len();

        // Dead letters: count lines, cut a torn last line.
        let dl_path = format!("{dir}/{DEAD_LETTER_FILE}");
        let mut dead_letter_len =
            storage.len(&dl_path).await.map_err(|e| io_err("cannot stat", &dl_path, e))?;
        let dead_letter_len_on_disk = dead_letter_len.unwrap_or(0);
        let mut dead_letters = 0;
        let mut line_end = 0;
        let mut offset = 0;
        while offset < dead_letter_len_on_disk {
            let chunk = storage
                .read_at(&dl_path, offset, SCAN_CHUNK)
                .await
                .map_err(|e| io_err("cannot read", &dl_path, e))?;
            if chunk.is_empty() {
                break;
            }
            for (i, b) in chunk.iter().enumerate() {
                if *b == b'\n' {
                    dead_letters += 1;
                    line_end = offset + i as u64 + 1;
                }
            }
            offset += chunk.len() as u64;
        }
        let mut dead_letter_dirty = false;
        if line_end < dead_letter_len_on_disk {
            recovery.dead_letter_truncated_bytes = dead_letter_len_on_disk - line_end;
            dead_letter_dirty = storage.truncate(&dl_path, line_end).await.is_err();
            dead_letter_len = Some(line_end);
        }

        let state = State {
            segments,
            head_offset,
            writable,
            next_seq,
            depth,
            peeked: None,
            pending_append: None,
            garbage: Vec::new(),
            dead_letter_len: dead_letter_len.unwrap_or(0),
            dead_letter_dirty,
            dead_letters,
            dropped: QueueDepth { records: 0, bytes: recovery.truncated_bytes },
        };
        let queue = WriteQueue {
            dir,
            options,
            recovery,
            state: Mutex::new(state.clone()),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            dropped_records: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
        };
        queue.publish(&state);
        Ok(queue)
    }

    /// The queue's directory in the storage.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// The sizes this queue was opened with.
    pub fn options(&self) -> QueueOptions {
        self.options
    }

    /// What [`WriteQueue::open`] found and repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Records and bytes waiting.
    pub fn depth(&self) -> QueueDepth {
        QueueDepth {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.depth().records == 0
    }

    /// Records moved to the dead-letter file since the queue was created
    /// (counted from the file on open).
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.load(Ordering::Relaxed)
    }

    /// Damaged records and bytes dropped since open (bytes cut on open
    /// included; records cut in a torn or unreadable tail are not countable
    /// and appear only in bytes).
    pub fn dropped(&self) -> QueueDepth {
        QueueDepth {
            records: self.dropped_records.load(Ordering::Relaxed),
            bytes: self.dropped_bytes.load(Ordering::Relaxed),
        }
    }

    /// The bytes a record takes in the queue (frame header included), as
    /// counted by [`QueueDepth::bytes`] and `max_bytes`.
    pub fn record_bytes(record: &Record) -> u64 {
        RECORD_HEADER_BYTES + payload_len(record)
    }

    /// Appends `record` durably (fsynced when this returns `Ok`).
    ///
    /// Errors: [`QueueError::Full`] when the bytes waiting plus this record's
    /// would pass `max_bytes`; [`QueueError::Io`] when the storage failed or a
    /// field is longer than 4 GiB. On error nothing is kept.
    pub async fn push<S: Storage>(&self, storage: &S, record: &Record) -> Result<(), QueueError> {
        let size = Self::record_bytes(record);
        if size > self.options.max_bytes {
            return Err(QueueError::Full { max_bytes: self.options.max_bytes });
        }
        let frame = encode_frame(record)?;
        let mut state = self.state.lock().await;
        self.repair_append(storage, &mut state).await;
        if state.depth.bytes + size > self.options.max_bytes {
            return Err(QueueError::Full { max_bytes: self.options.max_bytes });
        }
        let current = match state.segments.back() {
            Some(back)
                if state.writable && (back.len == 0 || back.len + size <= self.options.segment_bytes) =>
            {
                Some(*back)
            }
            _ => None,
        };
        let (seq, prev_len) = match current {
            Some(back) => (back.seq, back.len),
            None => {
                let seq = state.next_seq;
                // Consumed even if the append fails: a failed new segment may
                // leave bytes behind that must not be appended to.
                state.next_seq += 1;
                (seq, 0)
            }
        };
        let path = segment_path(&self.dir, seq);
        state.pending_append = Some((seq, prev_len));
        let result = storage.append(&path, &frame).await;
        match result {
            Ok(()) => {
                state.pending_append = None;
                match current {
                    Some(_) => {
                        if let Some(back) = state.segments.back_mut() {
                            back.len += size;
                            back.records += 1;
                        }
                    }
                    None => {
                        state.segments.push_back(Segment { seq, len: size, records: 1 });
                        state.writable = true;
                        if state.segments.len() == 1 {
                            state.head_offset = 0;
                        }
                    }
                }
                state.depth.records += 1;
                state.depth.bytes += size;
                self.publish(&state);
                Ok(())
            }
            Err(e) => {
                self.repair_append(storage, &mut state).await;
                Err(io_err("cannot append to", &path, e))
            }
        }
    }

    /// The oldest record not yet acknowledged, if any. Damaged records met on
    /// the way are skipped and counted by [`WriteQueue::dropped`].
    /// Errors: [`QueueError::Io`] when the storage cannot be read (the record
    /// stays; try again later).
    pub async fn peek<S: Storage>(&self, storage: &S) -> Result<Option<(RecordId, Record)>, QueueError> {
        let mut state = self.state.lock().await;
        let result = self.peek_locked(storage, &mut state).await;
        self.publish(&state);
        result
    }

    async fn peek_locked<S: Storage>(
        &self,
        storage: &S,
        state: &mut State,
    ) -> Result<Option<(RecordId, Record)>, QueueError> {
        loop {
            state.normalize();
            let Some(front) = state.segments.front().copied() else { return Ok(None) };
            let offset = state.head_offset;
            if offset >= front.len {
                return Ok(None);
            }
            let path = segment_path(&self.dir, front.seq);
            match read_frame(storage, &path, offset, front.len).await? {
                Frame::Valid { end, record } => {
                    let id = RecordId { segment: front.seq, offset, end };
                    state.peeked = Some(id);
                    return Ok(Some((id, record)));
                }
                Frame::Damaged { skip_to: Some(end) } => {
                    state.dropped.records += 1;
                    state.dropped.bytes += end - offset;
                    state.consume_head(end, 1);
                }
                Frame::Damaged { skip_to: None } => {
                    state.dropped.records += front.records;
                    state.dropped.bytes += front.len - offset;
                    state.consume_head(front.len, front.records);
                    if state.segments.len() == 1 {
                        // Never append after bytes that cannot be read.
                        state.writable = false;
                    }
                }
            }
        }
    }

    /// Removes the record `id` (which must be the one [`WriteQueue::peek`] gave)
    /// durably: a restart will not replay it again.
    ///
    /// An id already acknowledged is a no-op (`Ok`). Any other id that is not
    /// the oldest record is refused with [`QueueError::Io`] and changes
    /// nothing; so does a failure to write the `ack` file.
    pub async fn ack<S: Storage>(&self, storage: &S, id: RecordId) -> Result<(), QueueError> {
        let mut state = self.state.lock().await;
        let result = match self.check_head(storage, &mut state, id).await {
            Ok(true) => self.ack_locked(storage, &mut state, id).await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        self.publish(&state);
        result
    }

    /// Appends `record` with `reason` and `now_ms` to the dead-letter file, then
    /// acknowledges it. `record` is what [`WriteQueue::peek`] returned with `id`.
    ///
    /// An id already acknowledged is a no-op (no line is written). Errors as
    /// [`WriteQueue::ack`]; when the line cannot be written the record stays.
    pub async fn dead_letter<S: Storage>(
        &self,
        storage: &S,
        id: RecordId,
        record: &Record,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), QueueError> {
        let mut state = self.state.lock().await;
        let result = match self.check_head(storage, &mut state, id).await {
            Ok(true) => match self.write_dead_letter(storage, &mut state, record, reason, now_ms).await {
                Ok(()) => self.ack_locked(storage, &mut state, id).await,
                Err(e) => Err(e),
            },
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        self.publish(&state);
        result
    }

    /// `Ok(true)`: `id` is the head record; `Ok(false)`: already acknowledged.
    async fn check_head<S: Storage>(
        &self,
        storage: &S,
        state: &mut State,
        id: RecordId,
    ) -> Result<bool, QueueError> {
        state.normalize();
        let head = state.head_pos();
        if (id.segment, id.offset) < head {
            return Ok(false);
        }
        let not_head = || {
            QueueError::Io(format!(
                "{}: cannot acknowledge record {}:{}..{}: the oldest record is at {}:{}",
                self.dir, id.segment, id.offset, id.end, head.0, head.1
            ))
        };
        let Some(front) = state.segments.front().copied() else { return Err(not_head()) };
        if (id.segment, id.offset) != head || id.end > front.len || id.end < id.offset + RECORD_HEADER_BYTES {
            return Err(not_head());
        }
        if state.peeked == Some(id) {
            return Ok(true);
        }
        // Not from the last peek: check the frame length on disk.
        let path = segment_path(&self.dir, front.seq);
        let header =
            storage.read_at(&path, id.offset, HEADER).await.map_err(|e| io_err("cannot read", &path, e))?;
        match parse_header(&header) {
            Some((len, _)) if id.offset + RECORD_HEADER_BYTES + len == id.end => Ok(true),
            _ => Err(not_head()),
        }
    }

    /// Acknowledges the head record `id`: writes the new position, then
    /// updates memory, then removes consumed segment files.
    async fn ack_locked<S: Storage>(
        &self,
        storage: &S,
        state: &mut State,
        id: RecordId,
    ) -> Result<(), QueueError> {
        let mut next = state.clone();
        next.consume_head(id.end, 1);
        next.normalize();
        next.compact_if_drained();
        let (seq, offset) = next.head_pos();
        let path = format!("{}/{ACK_FILE}", self.dir);
        storage
            .write_atomic(&path, &encode_ack(seq, offset))
            .await
            .map_err(|e| io_err("cannot write", &path, e))?;
        *state = next;
        let mut kept = Vec::new();
        for seq in std::mem::take(&mut state.garbage) {
            if storage.remove(&segment_path(&self.dir, seq)).await.is_err() {
                kept.push(seq);
            }
        }
        state.garbage = kept;
        Ok(())
    }

    async fn write_dead_letter<S: Storage>(
        &self,
        storage: &S,
        state: &mut State,
        record: &Record,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), QueueError> {
        let path = format!("{}/{DEAD_LETTER_FILE}", self.dir);
        if state.dead_letter_dirty {
            storage
                .truncate(&path, state.dead_letter_len)
                .await
                .map_err(|e| io_err("cannot repair", &path, e))?;
            state.dead_letter_dirty = false;
        }
        let line = dead_letter_line(record, reason, now_ms)?;
        if state.dead_letter_len + line.len() as u64 <= self.options.dead_letter_max_bytes {
            if let Err(e) = storage.append(&path, &line).await {
                state.dead_letter_dirty = storage.truncate(&path, state.dead_letter_len).await.is_err();
                return Err(io_err("cannot append to", &path, e));
            }
            state.dead_letter_len += line.len() as u64;
        }
        state.dead_letters += 1;
        Ok(())
    }

    /// Undoes an append that failed or was cancelled: truncates the segment
    /// back, or seals it when that fails.
    async fn repair_append<S: Storage>(&self, storage: &S, state: &mut State) {
        let Some((seq, len)) = state.pending_append.take() else { return };
        let result = storage.truncate(&segment_path(&self.dir, seq), len).await;
        let repaired = match result {
            Ok(()) => true,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if !repaired && state.segments.back().is_some_and(|s| s.seq == seq) {
            state.writable = false;
        }
    }

    fn publish(&self, state: &State) {
        self.records.store(state.depth.records, Ordering::Relaxed);
        self.bytes.store(state.depth.bytes, Ordering::Relaxed);
        self.dead_letters.store(state.dead_letters, Ordering::Relaxed);
        self.dropped_records.store(state.dropped.records, Ordering::Relaxed);
        self.dropped_bytes.store(state.dropped.bytes, Ordering::Relaxed);
    }
}

fn segment_path(dir: &str, seq: u64) -> String {
    format!("{dir}/{seq:020}{SEGMENT_SUFFIX}")
}

/// `00000000000000000007.seg` -> 7.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn encode_ack(seq: u64, offset: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(ACK_BYTES);
    out.extend_from_slice(ACK_MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_ack(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() != ACK_BYTES || &bytes[..4] != ACK_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[20..24].try_into().ok()?);
    if crc32fast::hash(&bytes[..20]) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(bytes[4..12].try_into().ok()?);
    let offset = u64::from_le_bytes(bytes[12..20].try_into().ok()?);
    Some((seq, offset))
}

/// Does a write body need a `\n` added at its end?
fn needs_newline(body: &[u8]) -> bool {
    !body.is_empty() && !body.ends_with(b"\n")
}

fn opt_len(s: &Option<String>) -> u64 {
    1 + s.as_ref().map_or(0, |s| 4 + s.len() as u64)
}

fn credentials_len(c: &Credentials) -> u64 {
    opt_len(&c.username) + opt_len(&c.password) + opt_len(&c.authorization)
}

/// Length of the encoded payload (see "Segment files").
fn payload_len(record: &Record) -> u64 {
    match record {
        Record::Write { db, rp, precision, credentials, body } => {
            1 + 4
                + db.len() as u64
                + opt_len(rp)
                + opt_len(precision)
                + credentials_len(credentials)
                + 4
                + body.len() as u64
                + u64::from(needs_newline(body))
        }
        Record::Statement { db, q, credentials } => {
            1 + opt_len(db) + 4 + q.len() as u64 + credentials_len(credentials)
        }
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), QueueError> {
    let len = u32::try_from(len)
        .map_err(|_| QueueError::Io(format!("record field of {len} bytes is too large")))?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), QueueError> {
    put_len(out, bytes.len())?;
    out.extend_from_slice(bytes);
    Ok(())
}

fn put_opt(out: &mut Vec<u8>, s: &Option<String>) -> Result<(), QueueError> {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_bytes(out, s.as_bytes())?;
        }
    }
    Ok(())
}

fn put_credentials(out: &mut Vec<u8>, c: &Credentials) -> Result<(), QueueError> {
    put_opt(out, &c.username)?;
    put_opt(out, &c.password)?;
    put_opt(out, &c.authorization)
}

/// The whole frame: header then payload, in one buffer (one append).
fn encode_frame(record: &Record) -> Result<Vec<u8>, QueueError> {
    let total = usize::try_from(WriteQueue::record_bytes(record))
        .map_err(|_| QueueError::Io("record too large".to_string()))?;
    let mut out = Vec::with_capacity(total);
    out.resize(HEADER, 0);
    match record {
        Record::Write { db, rp, precision, credentials, body } => {
            out.push(KIND_WRITE);
            put_bytes(&mut out, db.as_bytes())?;
            put_opt(&mut out, rp)?;
            put_opt(&mut out, precision)?;
            put_credentials(&mut out, credentials)?;
            let newline = needs_newline(body);
            put_len(&mut out, body.len() + usize::from(newline))?;
            out.extend_from_slice(body);
            if newline {
                out.push(b'\n');
            }
        }
        Record::Statement { db, q, credentials } => {
            out.push(KIND_STATEMENT);
            put_opt(&mut out, db)?;
            put_bytes(&mut out, q.as_bytes())?;
            put_credentials(&mut out, credentials)?;
        }
    }
    let payload_len = out.len() - HEADER;
    let len = u32::try_from(payload_len)
        .map_err(|_| QueueError::Io(format!("record of {payload_len} bytes is too large")))?;
    let crc = crc32fast::hash(&out[HEADER..]);
    out[0] = RECORD_MAGIC;
    out[1] = RECORD_VERSION;
    out[2..6].copy_from_slice(&len.to_le_bytes());
    out[6..10].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// (payload length, CRC) when the header is complete with the right magic
/// and version.
fn parse_header(header: &[u8]) -> Option<(u64, u32)> {
    if header.len() < HEADER || header[0] != RECORD_MAGIC || header[1] != RECORD_VERSION {
        return None;
    }
    let len = u32::from_le_bytes(header[2..6].try_into().ok()?);
    let crc = u32::from_le_bytes(header[6..10].try_into().ok()?);
    Some((u64::from(len), crc))
}

/// Reads the payload encoding; `None` on any mismatch.
struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(*first)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len_bytes = self.rest.get(..4)?;
        let len = usize::try_from(u32::from_le_bytes(len_bytes.try_into().ok()?)).ok()?;
        let bytes = self.rest.get(4..4usize.checked_add(len)?)?;
        self.rest = &self.rest[4 + len..];
        Some(bytes)
    }

    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_string)
    }

    fn opt(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }

    fn credentials(&mut self) -> Option<Credentials> {
        Some(Credentials { username: self.opt()?, password: self.opt()?, authorization: self.opt()? })
    }
}

fn decode_payload(payload: &[u8]) -> Option<Record> {
    let mut d = Decoder { rest: payload };
    let record = match d.u8()? {
        KIND_WRITE => Record::Write {
            db: d.string()?,
            rp: d.opt()?,
            precision: d.opt()?,
            credentials: d.credentials()?,
            body: d.bytes()?.to_vec(),
        },
        KIND_STATEMENT => Record::Statement { db: d.opt()?, q: d.string()?, credentials: d.credentials()? },
        _ => return None,
    };
    d.rest.is_empty().then_some(record)
}

/// The record whose payload is `payload`, if its CRC matches and it decodes.
fn check_payload(payload: &[u8], crc: u32) -> Option<Record> {
    if crc32fast::hash(payload) != crc {
        return None;
    }
    decode_payload(payload)
}

/// Validates the frame at `offset` of a segment whose good bytes are `seg`,
/// applying the corruption rule of the module documentation.
fn check_frame(seg: &[u8], offset: u64) -> Frame {
    let seg_len = seg.len() as u64;
    let start = offset.min(seg_len) as usize;
    let Some((len, crc)) = parse_header(&seg[start..]) else { return Frame::Damaged { skip_to: None } };
    let end = offset + RECORD_HEADER_BYTES + len;
    if end > seg_len {
        return Frame::Damaged { skip_to: None };
    }
    let payload = &seg[start + HEADER..end as usize];
    if let Some(record) = check_payload(payload, crc) {
        return Frame::Valid { end, record };
    }
    let next_is_valid = end == seg_len || check_frame_strict(seg, end).is_some();
    Frame::Damaged { skip_to: next_is_valid.then_some(end) }
}

/// The end of the valid frame at `offset`, if there is one.
fn check_frame_strict(seg: &[u8], offset: u64) -> Option<u64> {
    let start = usize::try_from(offset).ok()?;
    let (len, crc) = parse_header(seg.get(start..)?)?;
    let end = offset + RECORD_HEADER_BYTES + len;
    let payload = seg.get(start + HEADER..usize::try_from(end).ok()?)?;
    check_payload(payload, crc).map(|_| end)
}

/// Reads the frame at `offset` of segment `path` whose good length is
/// `seg_len`: header, then payload. On any damage, reads the whole segment
/// once to decide how much to skip.
async fn read_frame<S: Storage>(
    storage: &S,
    path: &str,
    offset: u64,
    seg_len: u64,
) -> Result<Frame, QueueError> {
    let header = storage.read_at(path, offset, HEADER).await.map_err(|e| io_err("cannot read", path, e))?;
    if let Some((len, crc)) = parse_header(&header) {
        let end = offset + RECORD_HEADER_BYTES + len;
        if end <= seg_len {
            let len =
                usize::try_from(len).map_err(|_| QueueError::Io(format!("{path}: record too large")))?;
            let payload = storage
                .read_at(path, offset + RECORD_HEADER_BYTES, len)
                .await
                .map_err(|e| io_err("cannot read", path, e))?;
            if payload.len() == len {
                if let Some(record) = check_payload(&payload, crc) {
                    return Ok(Frame::Valid { end, record });
                }
            }
        }
    }
    let mut seg = storage.read(path).await.map_err(|e| io_err("cannot read", path, e))?;
    seg.truncate(usize::try_from(seg_len).unwrap_or(usize::MAX));
    Ok(check_frame(&seg, offset))
}

#[derive(Serialize)]
struct WriteLine<'a> {
    time_ms: u64,
    reason: &'a str,
    db: &'a str,
    rp: Option<&'a str>,
    precision: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_hex: Option<String>,
}

#[derive(Serialize)]
struct StatementLine<'a> {
    time_ms: u64,
    reason: &'a str,
    db: Option<&'a str>,
    q: &'a str,
}

/// One line of the dead-letter file, `\n` included.
fn dead_letter_line(record: &Record, reason: &str, now_ms: u64) -> Result<Vec<u8>, QueueError> {
    let encoded = match record {
        Record::Write { db, rp, precision, body, .. } => {
            let text = std::str::from_utf8(body).ok();
            let hex = match text {
                Some(_) => None,
                None => Some(body.iter().map(|b| format!("{b:02x}")).collect()),
            };
            serde_json::to_vec(&WriteLine {
                time_ms: now_ms,
                reason,
                db,
                rp: rp.as_deref(),
                precision: precision.as_deref(),
                body: text,
                body_hex: hex,
            })
        }
        Record::Statement { db, q, .. } => {
            serde_json::to_vec(&StatementLine { time_ms: now_ms, reason, db: db.as_deref(), q })
        }
    };
    let mut line = encoded.map_err(|e| QueueError::Io(format!("cannot encode dead letter: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use futures_lite::future::block_on;
    use std::cell::Cell;
    use std::collections::{BTreeMap, VecDeque};

    const DIR: &str = "queue/a";

    fn options(max_bytes: u64, segment_bytes: u64) -> QueueOptions {
        QueueOptions { max_bytes, segment_bytes, dead_letter_max_bytes: DEFAULT_DEAD_LETTER_MAX_BYTES }
    }

    /// A write whose frame has the same size for every `i` < 10000.
    fn write(i: usize) -> Record {
        Record::Write {
            db: "telegraf".into(),
            rp: None,
            precision: None,
            credentials: Credentials::default(),
            body: format!("cpu,host=h{i:04} value={i:04}i\n").into_bytes(),
        }
    }

    fn frame_size() -> u64 {
        WriteQueue::record_bytes(&write(0))
    }

    fn open<S: Storage>(storage: &S, options: QueueOptions) -> WriteQueue {
        block_on(WriteQueue::open_with(storage, DIR, options)).expect("open")
    }

    /// A restart after a crash: a new storage with exactly the files on "disk".
    fn restart(storage: &MemStorage) -> MemStorage {
        MemStorage::from_snapshot(storage.snapshot())
    }

    fn push<S: Storage>(q: &WriteQueue, s: &S, r: &Record) {
        block_on(q.push(s, r)).expect("push");
    }

    /// A queue opened on `s` with the writes of `range` pushed.
    fn open_with_writes<S: Storage>(s: &S, o: QueueOptions, range: std::ops::Range<usize>) -> WriteQueue {
        let q = open(s, o);
        for r in writes(range) {
            push(&q, s, &r);
        }
        q
    }

    /// Peeks and acks everything, oldest first.
    fn drain<S: Storage>(q: &WriteQueue, s: &S) -> Vec<Record> {
        let mut out = Vec::new();
        while let Some((id, r)) = block_on(q.peek(s)).expect("peek") {
            block_on(q.ack(s, id)).expect("ack");
            out.push(r);
        }
        out
    }

    fn segment_files(s: &MemStorage) -> BTreeMap<String, Vec<u8>> {
        s.snapshot().into_iter().filter(|(k, _)| k.starts_with(DIR) && k.ends_with(SEGMENT_SUFFIX)).collect()
    }

    fn disk_bytes(s: &MemStorage) -> u64 {
        segment_files(s).values().map(|v| v.len() as u64).sum()
    }

    fn newest_segment(s: &MemStorage) -> String {
        segment_files(s).into_keys().next_back().expect("a segment file")
    }

    fn writes(range: std::ops::Range<usize>) -> Vec<Record> {
        range.map(write).collect()
    }

    /// A storage whose appends can be torn, delayed, and whose truncates and
    /// removes can fail.
    #[derive(Default)]
    struct Flaky {
        inner: MemStorage,
        /// The next append writes only this many bytes, then fails.
        tear_next_append: Cell<Option<usize>>,
        /// Appends write half, yield once (a cancellation point), then the rest.
        pause_appends: Cell<bool>,
        fail_truncate: Cell<bool>,
        fail_remove: Cell<bool>,
    }

    impl Storage for Flaky {
        async fn list(&self, dir: &str) -> io::Result<Vec<String>> {
            self.inner.list(dir).await
        }
        async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
            self.inner.read(path).await
        }
        async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
            self.inner.read_at(path, offset, len).await
        }
        async fn append(&self, path: &str, data: &[u8]) -> io::Result<()> {
            if let Some(keep) = self.tear_next_append.take() {
                self.inner.append(path, &data[..keep]).await?;
                return Err(io::Error::other("disk full in the middle of an append"));
            }
            if self.pause_appends.get() {
                let half = data.len() / 2;
                self.inner.append(path, &data[..half]).await?;
                futures_lite::future::yield_now().await;
                return self.inner.append(path, &data[half..]).await;
            }
            self.inner.append(path, data).await
        }
        async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
            self.inner.write_atomic(path, data).await
        }
        async fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
            if self.fail_truncate.get() {
                return Err(io::Error::other("truncate refused"));
            }
            self.inner.truncate(path, len).await
        }
        async fn remove(&self, path: &str) -> io::Result<()> {
            if self.fail_remove.get() {
                return Err(io::Error::other("remove refused"));
            }
            self.inner.remove(path).await
        }
        async fn len(&self, path: &str) -> io::Result<Option<u64>> {
            self.inner.len(path).await
        }
    }

    #[test]
    fn records_come_back_in_push_order_across_segments() {
        let s = MemStorage::new();
        let q = open(&s, options(1 << 20, 4 * frame_size()));
        for r in writes(0..30) {
            push(&q, &s, &r);
        }
        assert_eq!(segment_files(&s).len(), 8, "4 records per segment");
        assert_eq!(drain(&q, &s), writes(0..30));
        assert!(q.is_empty());
    }

    #[test]
    fn depth_counts_records_and_frame_bytes() {
        let s = MemStorage::new();
        let q = open(&s, options(1 << 20, 4 * frame_size()));
        assert_eq!(q.depth(), QueueDepth::default());
        for r in writes(0..10) {
            push(&q, &s, &r);
        }
        assert_eq!(q.depth(), QueueDepth { records: 10, bytes: 10 * frame_size() });
        assert_eq!(disk_bytes(&s), 10 * frame_size());
        let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
        assert_eq!(id.end - id.offset, frame_size());
        block_on(q.ack(&s, id)).unwrap();
        assert_eq!(q.depth(), QueueDepth { records: 9, bytes: 9 * frame_size() });
        // Reopening counts the same.
        let s2 = restart(&s);
        let q2 = open(&s2, options(1 << 20, 4 * frame_size()));
        assert_eq!(q2.depth(), QueueDepth { records: 9, bytes: 9 * frame_size() });
    }

    #[test]
    fn ack_survives_restart_and_unacked_records_are_redelivered() {
        let s = MemStorage::new();
        let o = options(1 << 20, 4 * frame_size());
        let q = open_with_writes(&s, o, 0..10);
        for _ in 0..5 {
            let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
            block_on(q.ack(&s, id)).unwrap();
        }
        // Record 5 is peeked (sent) but not acknowledged when the crash comes.
        let (_, peeked) = block_on(q.peek(&s)).unwrap().unwrap();
        assert_eq!(peeked, write(5));

        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert_eq!(q2.depth().records, 5);
        assert!(!q2.recovery().ack_reset);
        assert_eq!(drain(&q2, &s2), writes(5..10));
    }

    #[test]
    fn open_truncates_partial_record_cut_in_header() {
        let s = MemStorage::new();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let _q = open_with_writes(&s, o, 0..3);
        let seg = newest_segment(&s);
        let torn_len = 2 * frame_size() + 5;
        s.with_files(|f| f.get_mut(&seg).unwrap().truncate(torn_len as usize));

        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert_eq!(q2.recovery().truncated_bytes, 5);
        assert_eq!(q2.depth(), QueueDepth { records: 2, bytes: 2 * frame_size() });
        assert_eq!(s2.snapshot()[&seg].len() as u64, 2 * frame_size(), "torn bytes cut on disk");
        assert_eq!(drain(&q2, &s2), writes(0..2));
    }

    #[test]
    fn open_truncates_partial_record_cut_in_payload() {
        let s = MemStorage::new();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let _q = open_with_writes(&s, o, 0..3);
        let seg = newest_segment(&s);
        let torn_len = 3 * frame_size() - 3;
        s.with_files(|f| f.get_mut(&seg).unwrap().truncate(torn_len as usize));

        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert_eq!(q2.recovery().truncated_bytes, frame_size() - 3);
        assert_eq!(q2.dropped().bytes, frame_size() - 3);
        assert_eq!(q2.depth().records, 2);
        assert_eq!(drain(&q2, &s2), writes(0..2));
    }

    #[test]
    fn open_drops_last_record_with_bit_flip_detected_by_crc() {
        let s = MemStorage::new();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let _q = open_with_writes(&s, o, 0..3);
        let seg = newest_segment(&s);
        // Flip one bit in the body of the last record ("value=0002i" -> "value=0003i").
        let at = (3 * frame_size() - 4) as usize;
        s.with_files(|f| f.get_mut(&seg).unwrap()[at] ^= 0x01);

        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert_eq!(q2.recovery().truncated_bytes, frame_size());
        assert_eq!(drain(&q2, &s2), writes(0..2), "the altered record is not delivered");
    }

    #[test]
    fn push_after_recovery_continues_cleanly() {
        let s = MemStorage::new();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let _q = open_with_writes(&s, o, 0..3);
        let seg = newest_segment(&s);
        s.with_files(|f| f.get_mut(&seg).unwrap().truncate((3 * frame_size() - 7) as usize));

        let s2 = restart(&s);
        let q2 = open(&s2, o);
        push(&q2, &s2, &write(100));
        push(&q2, &s2, &write(101));
        let s3 = restart(&s2);
        let q3 = open(&s3, o);
        assert_eq!(q3.recovery().truncated_bytes, 0, "no garbage between old and new records");
        assert_eq!(drain(&q3, &s3), vec![write(0), write(1), write(100), write(101)]);
    }

    #[test]
    fn push_is_refused_when_full_and_accepted_after_acks() {
        let s = MemStorage::new();
        let q = open(&s, options(3 * frame_size(), 2 * frame_size()));
        for r in writes(0..3) {
            push(&q, &s, &r);
        }
        assert_eq!(block_on(q.push(&s, &write(3))), Err(QueueError::Full { max_bytes: 3 * frame_size() }));
        assert_eq!(q.depth().records, 3, "a refused write is not kept");
        let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
        block_on(q.ack(&s, id)).unwrap();
        push(&q, &s, &write(3));
        assert_eq!(drain(&q, &s), writes(1..4));
        // A record larger than the whole queue is refused outright.
        let huge = Record::Write {
            db: "db".into(),
            rp: None,
            precision: None,
            credentials: Credentials::default(),
            body: vec![b'x'; 4 * frame_size() as usize],
        };
        assert!(matches!(block_on(q.push(&s, &huge)), Err(QueueError::Full { .. })));
    }

    #[test]
    fn failed_append_keeps_nothing_and_queue_stays_usable() {
        let s = MemStorage::new();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let q = open(&s, o);
        push(&q, &s, &write(0));
        s.fail_appends(true);
        assert!(matches!(block_on(q.push(&s, &write(1))), Err(QueueError::Io(_))));
        assert_eq!(q.depth().records, 1);
        s.fail_appends(false);
        push(&q, &s, &write(2));
        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert_eq!(q2.recovery().truncated_bytes, 0);
        assert_eq!(drain(&q2, &s2), vec![write(0), write(2)]);
    }

    #[test]
    fn torn_append_is_rolled_back_so_no_partial_record_stays() {
        let s = Flaky::default();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let q = open(&s, o);
        push(&q, &s, &write(0));
        s.tear_next_append.set(Some(7));
        assert!(matches!(block_on(q.push(&s, &write(1))), Err(QueueError::Io(_))));
        assert_eq!(disk_bytes(&s.inner), frame_size(), "partial bytes cut");
        push(&q, &s, &write(2));
        let s2 = restart(&s.inner);
        let q2 = open(&s2, o);
        assert_eq!(q2.recovery().truncated_bytes, 0);
        assert_eq!(drain(&q2, &s2), vec![write(0), write(2)]);
    }

    #[test]
    fn torn_append_that_cannot_be_cut_seals_the_segment() {
        let s = Flaky::default();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let q = open(&s, o);
        push(&q, &s, &write(0));
        s.fail_truncate.set(true);
        s.tear_next_append.set(Some(7));
        assert!(block_on(q.push(&s, &write(1))).is_err());
        push(&q, &s, &write(2));
        assert_eq!(segment_files(&s.inner).len(), 2, "the next record went to a new segment");
        // The running queue never reads the garbage.
        let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
        assert_eq!(r, write(0));
        block_on(q.ack(&s, id)).unwrap();
        let (_, r) = block_on(q.peek(&s)).unwrap().unwrap();
        assert_eq!(r, write(2));
        // Neither does a restarted one.
        s.fail_truncate.set(false);
        let s2 = restart(&s.inner);
        let q2 = open(&s2, o);
        assert_eq!(drain(&q2, &s2), vec![write(2)]);
    }

    #[test]
    fn cancelled_push_leaves_no_partial_record() {
        let s = Flaky::default();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let q = open(&s, o);
        push(&q, &s, &write(0));
        s.pause_appends.set(true);
        {
            let record = write(1);
            let mut fut = Box::pin(q.push(&s, &record));
            assert!(block_on(futures_lite::future::poll_once(&mut fut)).is_none(), "stopped mid-append");
            // Dropped here: the host gave up on the request.
        }
        assert!(disk_bytes(&s.inner) > frame_size(), "half a record on disk");
        s.pause_appends.set(false);
        push(&q, &s, &write(2));
        let s2 = restart(&s.inner);
        let q2 = open(&s2, o);
        assert_eq!(q2.recovery().truncated_bytes, 0);
        assert_eq!(drain(&q2, &s2), vec![write(0), write(2)]);
    }

    #[test]
    fn consumed_segments_are_deleted_and_disk_use_shrinks() {
        let s = MemStorage::new();
        let o = options(1 << 20, 4 * frame_size());
        let q = open_with_writes(&s, o, 0..16);
        assert_eq!(segment_files(&s).len(), 4);
        let mut last = disk_bytes(&s);
        for i in 0..16 {
            let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
            assert_eq!(r, write(i));
            block_on(q.ack(&s, id)).unwrap();
            let now = disk_bytes(&s);
            assert!(now <= last);
            if i % 4 == 3 {
                assert!(now < last, "segment freed after record {i}");
            }
            last = now;
        }
        assert_eq!(segment_files(&s).len(), 0, "a drained queue keeps no segment");
        // The queue goes on after compaction, also across a restart.
        push(&q, &s, &write(16));
        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert_eq!(drain(&q2, &s2), vec![write(16)]);
    }

    #[test]
    fn segments_left_by_a_failed_remove_are_deleted_on_open() {
        let s = Flaky::default();
        let o = options(1 << 20, 2 * frame_size());
        let q = open_with_writes(&s, o, 0..6);
        s.fail_remove.set(true);
        for _ in 0..4 {
            let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
            block_on(q.ack(&s, id)).unwrap();
        }
        assert_eq!(segment_files(&s.inner).len(), 3);
        s.fail_remove.set(false);
        let s2 = restart(&s.inner);
        let q2 = open(&s2, o);
        assert_eq!(q2.recovery().removed_segments, 2);
        assert_eq!(segment_files(&s2).len(), 1);
        assert_eq!(drain(&q2, &s2), writes(4..6));
    }

    #[test]
    fn damaged_record_in_the_middle_is_skipped_when_the_next_one_is_valid() {
        let s = MemStorage::new();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let _q = open_with_writes(&s, o, 0..4);
        let seg = newest_segment(&s);
        let at = (2 * frame_size() - 4) as usize; // body of record 1
        s.with_files(|f| f.get_mut(&seg).unwrap()[at] ^= 0x10);
        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert_eq!(q2.recovery().corrupt_records, 1);
        assert_eq!(q2.recovery().truncated_bytes, 0);
        assert_eq!(drain(&q2, &s2), vec![write(0), write(2), write(3)]);
        assert_eq!(q2.dropped(), QueueDepth { records: 1, bytes: frame_size() });
        assert_eq!(q2.depth(), QueueDepth::default());
    }

    #[test]
    fn damaged_header_in_the_middle_cuts_the_rest_of_that_segment_only() {
        let s = MemStorage::new();
        let o = options(1 << 20, 4 * frame_size());
        let _q = open_with_writes(&s, o, 0..8);
        let first = segment_files(&s).into_keys().next().unwrap();
        let at = frame_size() as usize; // magic byte of record 1
        s.with_files(|f| f.get_mut(&first).unwrap()[at] = 0);
        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert_eq!(q2.recovery().truncated_bytes, 3 * frame_size());
        assert_eq!(drain(&q2, &s2), vec![write(0), write(4), write(5), write(6), write(7)]);
    }

    #[test]
    fn damage_appearing_under_a_running_queue_is_skipped_by_peek() {
        let s = MemStorage::new();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let q = open_with_writes(&s, o, 0..3);
        let seg = newest_segment(&s);
        s.with_files(|f| f.get_mut(&seg).unwrap()[5] ^= 0xff); // length of record 0
        assert_eq!(block_on(q.peek(&s)).unwrap(), None, "the segment cannot be read past the damage");
        assert_eq!(q.dropped().records, 3);
        assert!(q.is_empty());
        // New records go to a fresh segment and are delivered.
        push(&q, &s, &write(9));
        assert_eq!(drain(&q, &s), vec![write(9)]);
    }

    #[test]
    fn damaged_ack_file_replays_from_the_oldest_record() {
        let s = MemStorage::new();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let q = open_with_writes(&s, o, 0..3);
        let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
        block_on(q.ack(&s, id)).unwrap();
        s.with_files(|f| f.get_mut(&format!("{DIR}/{ACK_FILE}")).unwrap()[6] ^= 1);
        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert!(q2.recovery().ack_reset);
        assert_eq!(drain(&q2, &s2), writes(0..3), "duplicates rather than loss");
    }

    #[test]
    fn ack_of_an_acked_id_is_a_no_op_and_of_a_later_id_an_error() {
        let s = MemStorage::new();
        let q = open(&s, options(1 << 20, DEFAULT_SEGMENT_BYTES));
        for r in writes(0..3) {
            push(&q, &s, &r);
        }
        let (first, _) = block_on(q.peek(&s)).unwrap().unwrap();
        block_on(q.ack(&s, first)).unwrap();
        block_on(q.ack(&s, first)).unwrap();
        assert_eq!(q.depth().records, 2, "a second ack removes nothing");
        let (second, _) = block_on(q.peek(&s)).unwrap().unwrap();
        let third = RecordId { segment: second.segment, offset: second.end, end: second.end + frame_size() };
        assert!(matches!(block_on(q.ack(&s, third)), Err(QueueError::Io(_))));
        let wrong_end = RecordId { end: second.end + 1, ..second };
        assert!(block_on(q.ack(&s, wrong_end)).is_err());
        assert_eq!(q.depth().records, 2);
        // An ack without a preceding peek is checked against the file.
        let s2 = restart(&s);
        let q2 = open(&s2, options(1 << 20, DEFAULT_SEGMENT_BYTES));
        block_on(q2.ack(&s2, second)).unwrap();
        assert_eq!(drain(&q2, &s2), vec![write(2)]);
    }

    #[test]
    fn failed_ack_write_changes_nothing() {
        let s = MemStorage::new();
        let q = open(&s, options(1 << 20, DEFAULT_SEGMENT_BYTES));
        push(&q, &s, &write(0));
        let (id, _) = block_on(q.peek(&s)).unwrap().unwrap();
        s.fail_appends(true);
        assert!(block_on(q.ack(&s, id)).is_err());
        s.fail_appends(false);
        assert_eq!(q.depth().records, 1);
        assert_eq!(block_on(q.peek(&s)).unwrap().unwrap().1, write(0));
    }

    #[test]
    fn dead_letters_are_json_lines_counted_across_restart() {
        let s = MemStorage::new();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let q = open(&s, o);
        let statement = Record::Statement {
            db: Some("telegraf".into()),
            q: "CREATE RETENTION POLICY \"x\" ON telegraf".into(),
            credentials: Credentials { password: Some("secret".into()), ..Default::default() },
        };
        push(&q, &s, &write(0));
        push(&q, &s, &statement);
        push(&q, &s, &write(2));
        let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
        block_on(q.dead_letter(&s, id, &r, "400 unable to parse", 1_700_000_000_000)).unwrap();
        let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
        block_on(q.dead_letter(&s, id, &r, "400 error parsing query", 1_700_000_000_001)).unwrap();
        // Dead-lettering an id twice writes one line.
        block_on(q.dead_letter(&s, id, &r, "again", 1)).unwrap();
        assert_eq!(q.dead_letters(), 2);
        assert_eq!(q.depth().records, 1);

        let file = s.snapshot()[&format!("{DIR}/{DEAD_LETTER_FILE}")].clone();
        let text = String::from_utf8(file).unwrap();
        assert!(!text.contains("secret"), "credentials are not written");
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            serde_json::json!({"time_ms": 1_700_000_000_000u64, "reason": "400 unable to parse",
                "db": "telegraf", "rp": null, "precision": null, "body": "cpu,host=h0000 value=0000i\n"})
        );
        assert_eq!(
            lines[1],
            serde_json::json!({"time_ms": 1_700_000_000_001u64, "reason": "400 error parsing query",
                "db": "telegraf", "q": "CREATE RETENTION POLICY \"x\" ON telegraf"})
        );

        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert_eq!(q2.dead_letters(), 2);
        assert_eq!(drain(&q2, &s2), vec![write(2)]);
    }

    #[test]
    fn torn_dead_letter_line_is_cut_on_open() {
        let s = MemStorage::new();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let q = open(&s, o);
        push(&q, &s, &write(0));
        push(&q, &s, &write(1));
        let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
        block_on(q.dead_letter(&s, id, &r, "400", 1)).unwrap();
        let path = format!("{DIR}/{DEAD_LETTER_FILE}");
        s.with_files(|f| f.get_mut(&path).unwrap().extend_from_slice(b"{\"time_ms\":2,\"rea"));
        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert_eq!(q2.dead_letters(), 1);
        assert_eq!(q2.recovery().dead_letter_truncated_bytes, 17);
        let (id, r) = block_on(q2.peek(&s2)).unwrap().unwrap();
        block_on(q2.dead_letter(&s2, id, &r, "404 database not found", 2)).unwrap();
        let text = String::from_utf8(s2.snapshot()[&path].clone()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    }

    #[test]
    fn dead_letter_file_stops_growing_at_its_cap() {
        let s = MemStorage::new();
        let o = QueueOptions { dead_letter_max_bytes: 150, ..options(1 << 20, DEFAULT_SEGMENT_BYTES) };
        let q = open_with_writes(&s, o, 0..5);
        for _ in 0..5 {
            let (id, r) = block_on(q.peek(&s)).unwrap().unwrap();
            block_on(q.dead_letter(&s, id, &r, "400", 1)).unwrap();
        }
        assert_eq!(q.dead_letters(), 5);
        assert!(q.is_empty());
        let len = s.snapshot()[&format!("{DIR}/{DEAD_LETTER_FILE}")].len();
        assert!(len > 0 && len <= 150, "dead-letter file is {len} bytes");
    }

    #[test]
    fn body_keeps_its_trailing_newline_and_gets_one_if_missing() {
        let s = MemStorage::new();
        let q = open(&s, options(1 << 20, DEFAULT_SEGMENT_BYTES));
        let with = |body: &[u8]| Record::Write {
            db: "db".into(),
            rp: None,
            precision: None,
            credentials: Credentials::default(),
            body: body.to_vec(),
        };
        push(&q, &s, &with(b"a v=1 1\nb v=2 2\n"));
        push(&q, &s, &with(b"c v=3 3"));
        push(&q, &s, &with(b""));
        let got = drain(&q, &s);
        assert_eq!(got, vec![with(b"a v=1 1\nb v=2 2\n"), with(b"c v=3 3\n"), with(b"")]);
    }

    #[test]
    fn credentials_precision_and_statements_round_trip_across_restart() {
        let s = MemStorage::new();
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let q = open(&s, o);
        let creds = Credentials {
            username: Some("écrivain".into()),
            password: Some("p@ss:word".into()),
            authorization: Some("Token abc==".into()),
        };
        let records = vec![
            Record::Write {
                db: "metrics".into(),
                rp: Some("one_week".into()),
                precision: Some("ms".into()),
                credentials: creds.clone(),
                body: b"cpu value=1 1700000000000\n".to_vec(),
            },
            Record::Statement { db: None, q: "CREATE DATABASE \"metrics\"".into(), credentials: creds },
            Record::Statement {
                db: Some("metrics".into()),
                q: "DROP MEASUREMENT cpu".into(),
                credentials: Credentials::default(),
            },
            Record::Write {
                db: String::new(),
                rp: None,
                precision: Some("n".into()),
                credentials: Credentials { username: Some(String::new()), ..Default::default() },
                body: vec![0xff, 0xfe, b'\n'],
            },
        ];
        for r in &records {
            push(&q, &s, r);
        }
        assert_eq!(q.depth().bytes, records.iter().map(WriteQueue::record_bytes).sum::<u64>());
        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert_eq!(drain(&q2, &s2), records);
    }

    #[test]
    fn open_creates_an_empty_queue_and_ignores_other_files() {
        let s = MemStorage::new();
        s.with_files(|f| {
            f.insert(format!("{DIR}/notes.txt"), b"hello".to_vec());
            f.insert(format!("{DIR}/7.seg"), b"not a segment name".to_vec());
            f.insert(format!("{DIR}/ack.tmp"), b"x".to_vec());
        });
        let q = open(&s, options(1 << 20, DEFAULT_SEGMENT_BYTES));
        assert!(q.is_empty());
        assert_eq!(block_on(q.peek(&s)).unwrap(), None);
        assert_eq!(q.recovery(), &Recovery::default());
        push(&q, &s, &write(0));
        assert_eq!(drain(&q, &s), vec![write(0)]);
    }

    #[test]
    fn new_segments_are_never_covered_by_an_old_ack_position() {
        // Ack points into segment 3 at offset > 0 but segment 3 is gone (e.g.
        // deleted by hand): a new segment must not be numbered 3.
        let s = MemStorage::new();
        s.with_files(|f| {
            f.insert(format!("{DIR}/{ACK_FILE}"), encode_ack(3, 2 * frame_size()));
        });
        let o = options(1 << 20, DEFAULT_SEGMENT_BYTES);
        let _q = open_with_writes(&s, o, 0..3);
        let s2 = restart(&s);
        let q2 = open(&s2, o);
        assert_eq!(drain(&q2, &s2), writes(0..3));
    }

    /// Random push/peek/ack/dead-letter/restart/crash sequences against a
    /// `VecDeque` model.
    #[test]
    fn random_operations_match_a_fifo_model() {
        for seed in [1, 2, 3, 42, 2024] {
            run_model(seed, 3000);
        }
    }

    fn random_record(rng: &mut fastrand::Rng) -> Record {
        let text =
            |rng: &mut fastrand::Rng, n: usize| -> String { (0..n).map(|_| rng.alphanumeric()).collect() };
        let credentials = if rng.bool() {
            Credentials::default()
        } else {
            Credentials { username: Some(text(rng, 4)), password: Some(text(rng, 6)), authorization: None }
        };
        if rng.u8(..10) == 0 {
            Record::Statement {
                db: rng.bool().then(|| text(rng, 3)),
                q: format!("DROP SERIES FROM {}", text(rng, 5)),
                credentials,
            }
        } else {
            let n = rng.usize(0..150);
            let mut body = text(rng, n).into_bytes();
            if rng.bool() {
                body.push(b'\n');
            }
            Record::Write {
                db: text(rng, 4),
                rp: rng.bool().then(|| text(rng, 2)),
                precision: rng.bool().then(|| "s".to_string()),
                credentials,
                body,
            }
        }
    }

    /// The record as the queue gives it back (body newline-terminated).
    fn normalized(r: &Record) -> Record {
        let mut r = r.clone();
        if let Record::Write { body, .. } = &mut r {
            if needs_newline(body) {
                body.push(b'\n');
            }
        }
        r
    }

    fn run_model(seed: u64, ops: usize) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let o = QueueOptions { max_bytes: 3000, segment_bytes: 400, dead_letter_max_bytes: 100_000 };
        let mut s = MemStorage::new();
        let mut q = open(&s, o);
        let mut model: VecDeque<Record> = VecDeque::new();
        let mut dead = 0u64;
        let mut last_acked: Option<RecordId> = None;
        let mut largest = 0u64;
        for step in 0..ops {
            let ctx = format!("seed {seed} step {step}");
            let op = rng.u8(..100);
            match op {
                0..=44 => {
                    let r = random_record(&mut rng);
                    let size = WriteQueue::record_bytes(&r);
                    largest = largest.max(size);
                    let model_bytes: u64 = model.iter().map(WriteQueue::record_bytes).sum();
                    let result = block_on(q.push(&s, &r));
                    if model_bytes + size > o.max_bytes {
                        assert_eq!(result, Err(QueueError::Full { max_bytes: o.max_bytes }), "{ctx}");
                    } else {
                        assert_eq!(result, Ok(()), "{ctx}");
                        model.push_back(normalized(&r));
                    }
                }
                45..=82 => {
                    let got = block_on(q.peek(&s)).expect(&ctx);
                    assert_eq!(got.as_ref().map(|(_, r)| r), model.front(), "{ctx}");
                    if let (Some((id, _)), true) = (got, op < 75) {
                        block_on(q.ack(&s, id)).expect(&ctx);
                        model.pop_front();
                        last_acked = Some(id);
                    }
                }
                83..=86 => {
                    if let Some((id, r)) = block_on(q.peek(&s)).expect(&ctx) {
                        block_on(q.dead_letter(&s, id, &r, "400 bad", step as u64)).expect(&ctx);
                        assert_eq!(Some(r), model.pop_front(), "{ctx}");
                        dead += 1;
                        last_acked = Some(id);
                    }
                }
                87..=92 => {
                    s = restart(&s);
                    q = open(&s, o);
                    assert_eq!(q.recovery().truncated_bytes, 0, "{ctx}");
                    last_acked = None;
                }
                93..=96 => {
                    // Crash in the middle of an append to the newest segment.
                    if let Some(seg) = segment_files(&s).into_keys().next_back() {
                        let frame = encode_frame(&random_record(&mut rng)).unwrap();
                        let keep = rng.usize(1..frame.len());
                        s.with_files(|f| f.get_mut(&seg).unwrap().extend_from_slice(&frame[..keep]));
                        s = restart(&s);
                        q = open(&s, o);
                        assert_eq!(q.recovery().truncated_bytes, keep as u64, "{ctx}");
                        last_acked = None;
                    }
                }
                _ => {
                    if let Some(id) = last_acked {
                        block_on(q.ack(&s, id)).expect(&ctx);
                    }
                }
            }
            let bytes: u64 = model.iter().map(WriteQueue::record_bytes).sum();
            assert_eq!(q.depth(), QueueDepth { records: model.len() as u64, bytes }, "{ctx}");
            assert_eq!(q.dead_letters(), dead, "{ctx}");
            assert!(
                disk_bytes(&s) <= bytes + o.segment_bytes.max(largest),
                "{ctx}: {} bytes of segments for {bytes} waiting",
                disk_bytes(&s)
            );
        }
        assert_eq!(drain(&q, &s), Vec::from(model));
    }
}
