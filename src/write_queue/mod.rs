//! The durable, ordered, per-backend write queue.
//!
//! While a backend's queue is not empty, every new write or schema statement
//! for that backend is appended to the queue instead of being sent, so a
//! recovering backend receives everything in the original order. A record is
//! removed only after the backend acknowledged it (2xx), or when it is moved
//! to the dead-letter file by the replay policy (below).
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
//!    already-acknowledged front of the oldest segment) + the 64-byte `ack`
//!    file + the dead-letter file, itself bounded by `dead_letter_max_bytes`;
//!    and, for a while, the files of segments acknowledgements consumed:
//!    removed right after the acknowledgement, or by pipelined replay while
//!    it sends the next batch ([`WriteQueue::ack_batch_leaving_files`]; the
//!    segments of two acknowledgements at most then), and at the latest by
//!    the last acknowledgement of a replay step, when replay pauses, or on
//!    open.
//!    A push refused by the storage (disk full) leaves nothing behind: no
//!    partial record, no new empty segment file.
//! 5. **Bounded memory.** In memory the queue keeps, per segment, its sequence
//!    number, its length and how many unacknowledged records it holds; per
//!    record only the ids of the batches peeked and not yet acknowledged (of
//!    [`WriteQueue::peek_batch`] and [`WriteQueue::peek_batch_after`]), at
//!    most `2 x max_records` of them. A push does not read any file.
//!    While replaying, it may also keep up to two empty buffers of batches
//!    already delivered ([`WriteQueue::recycle`]: room, no record data), of
//!    at most a batch's size each, let go when the queue is found empty or
//!    replay pauses ([`WriteQueue::release_spare_buffers`]: a backoff, the
//!    backend down).
//! 6. **A bad record never blocks the queue.** A record the backend rejects
//!    with 4xx, or keeps failing while otherwise healthy (see "Replay
//!    policy"), goes to the dead-letter file; a record whose bytes are damaged
//!    is skipped (and counted, see [`WriteQueue::dropped`]).
//! 7. **Replayed writes are never glued together.** A write body is stored with
//!    a trailing `\n` (one is added on push if the body lacks it), so bodies
//!    concatenated on replay stay separate lines.
//! 8. **The queue always opens.** Damaged bytes are cut or skipped, never a
//!    reason to refuse to start; only a storage that cannot be listed or read
//!    makes [`WriteQueue::open`] fail.
//! 9. **A full disk does not stop replay.** Acknowledging overwrites bytes of
//!    the preallocated `ack` file in place ([`Storage::write_at`]) and then
//!    removes consumed segments, so with 0 bytes free the queue still drains;
//!    a dead letter whose line cannot be written (no space, a quota, an IO
//!    error, a torn tail that cannot be cut) is still removed and counted. Pushes fail (503) while the disk is full and are accepted
//!    again as soon as space frees (by replay or otherwise).
//!
//! 10. **Batches keep the order and the guarantees.** [`WriteQueue::peek_batch`]
//!     gives the head and the consecutive records after it that can share its
//!     request (writes with the same db, rp, precision and credentials,
//!     [`Record::can_share_request`]; never a statement), bodies concatenated
//!     in queue order (each ends in `\n`, guarantee 7); [`WriteQueue::ack_batch`]
//!     acknowledges them (or their first ones) with one write of the `ack`
//!     file, so a crash before it delivers the whole batch again
//!     (at-least-once, guarantee 3) and a crash during it leaves the previous
//!     position (the older slot). A batch stays within one segment, so the
//!     acknowledged position is always a record boundary in one segment.
//!
//!     **Pipelined replay keeps them too.** [`WriteQueue::peek_batch_after`]
//!     reads the batch after one not yet acknowledged, so replay may send
//!     batch N+1 while batch N's ack is being written (and read batch N+2
//!     meanwhile: a read changes nothing). This is safe because
//!     acknowledgements are prefix-ordered: the position only moves forward,
//!     batch N+1 is acknowledged only after batch N's ack succeeded, and a
//!     failed ack stops the pipeline. So whatever a crash interrupts, the
//!     unacknowledged suffix starts at or before batch N and is sent again
//!     from its start, in queue order: the backend may see N, N+1, then N and
//!     N+1 again, and the last write of every point is still the latest
//!     pushed (a later value wins), as for any at-least-once redelivery.
//!
//! # Replay policy
//!
//! The queue stores; `Proxy::replay_step` (`src/proxy.rs`) decides, for the
//! head record, after each delivery attempt. Replay sends a batch
//! ([`WriteQueue::peek_batch`], up to `REPLAY_BATCH_MAX_BYTES`, 8 MiB, of
//! bodies, or `backend_max_body_bytes` when lower) as one request; when the backend acknowledges all of it, one ack removes
//! every record, and the next batch ([`WriteQueue::peek_batch_after`]) is
//! sent while that ack is written (guarantee 10). When it does not (a piece refused, no answer or a 5xx
//! while `/ping` answers), the records of the batch it did not acknowledge
//! are sent again one by one, and each is judged alone by this table, so a
//! record is dead-lettered only for its own refusal or its own failures.
//! While the backend is down (`/ping` fails too), nothing is sent one by one:
//! the batch is retried as a whole, attempts counted for its head.
//!
//! | backend's answer to the record | `/ping` | what happens |
//! |---|---|---|
//! | 2xx | - | acknowledged ([`WriteQueue::ack`]) |
//! | 4xx, or a statement error inside a 200 | - | dead letter at once |
//! | none (refused, timeout, broken connection) or 5xx | fails | **retried forever** with backoff: the backend is down; neither attempts nor age count |
//! | none or 5xx | 2xx | retried with backoff; dead letter after `replay_max_attempts` such failures, or at the first one once the record is older than `replay_max_age_ms` |
//!
//! The age is `now - pushed_ms` ([`RecordId::pushed_ms`], stored in the
//! record since format version 2; version 1 records have no age and only
//! the attempts cap applies to them). Attempts are counted in memory, since
//! the record became the head; they restart at 0 when the proxy restarts.
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
//! 1       1     format version: 2 (written), 1 (still read)
//! 2       4     payload length N, u32 little-endian
//! 6       4     CRC-32 (IEEE, as crc32fast computes it) of the payload, u32 LE
//! 10      N     payload
//! ```
//!
//! The payload is a length-prefixed binary encoding, chosen over JSON so that
//! bodies of several MB are stored as raw bytes, unescaped. Version 2 starts
//! with the push time (the replay policy's record age); version 1 (written
//! before) lacks it, and such a record has no age ([`RecordId::pushed_ms`] is
//! `None`):
//!
//! ```text
//! payload   = pushed_ms:u64 LE record       (version 2)
//!           | record                        (version 1)
//! pushed_ms = ms since the Unix epoch when the record was pushed
//! record    = kind:u8 fields
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
//! the proxy. With token auth at the proxy (config `auth`, [`crate::auth`])
//! records hold none: the client's credentials are dropped before routing,
//! and each request to a backend, replay included, carries that backend's
//! configured credentials instead.
//!
//! ## The `ack` file
//!
//! Version 2: 64 bytes, two 32-byte slots, created once on open (with
//! [`Storage::write_atomic`], while there is space) and then only overwritten
//! in place ([`Storage::write_at`]), so an acknowledgement needs no free disk
//! space:
//!
//! ```text
//! slot at 0 and at 32:
//! 0   4  magic "IQA2"
//! 4   8  generation G, u64 LE (1, 2, 3, ... one per acknowledgement)
//! 12  8  segment sequence number S, u64 LE
//! 20  8  offset O, u64 LE
//! 28  4  CRC-32 of slot bytes 0..28, u32 LE
//! ```
//!
//! Generation G is written to slot G mod 2, so each write overwrites the
//! older slot. The valid slot (magic and CRC) with the higher generation
//! holds the position; a write torn by a crash damages only the slot being
//! written, and the other one still holds the previous position (its record
//! is delivered again: at-least-once). The file is created with
//! `write_atomic`, or, when there is no room for a new file, by overwriting
//! the existing version 1 (or damaged) file in place (a crash during that
//! write leaves a damaged file: replay from the oldest record). If neither
//! works on open, each acknowledgement tries again.
//!
//! Version 1 (24 bytes, replaced atomically: magic "IQA1", S u64, O u64,
//! CRC-32 of bytes 0..20) is still read on open, then replaced by a version 2
//! file holding the same position. A leftover `ack.tmp` of version 1 is
//! removed on open.
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
//!   succeeded. If the append fails (e.g. `No space left on device`) on a
//!   segment it created, the segment file is removed; on an existing segment,
//!   the segment is truncated back to its previous length (truncation needs no
//!   space) so no partial record stays for a later record to follow;
//!   if that truncate fails too, the segment is *sealed*: nothing more is
//!   appended to it (its good length is known in memory) and the next push
//!   starts a new segment. A push future dropped in the middle of its append
//!   (cancelled) is repaired the same way by the next push.
//! - **peek**: reads the frame header at the head position
//!   ([`Storage::read_at`], 10 bytes), then the payload, checks the CRC and
//!   decodes. Files are read only up to the length known in memory.
//! - **peek_batch**: peek, then for each following record of the head's
//!   segment its header (a record that would pass the byte limit is not
//!   read), then its payload; the first record that cannot share the
//!   request, would pass a limit, is damaged or cannot be read ends the
//!   batch (the next peek deals with it as the head). The frames after the
//!   head are read ahead in few reads, each of at most as many bytes as the
//!   batch already spans (at least 64 KiB), so a batch that ends early is
//!   not read far ahead. The ids are kept, so their acknowledgement needs
//!   no read.
//! - **peek_batch_after**: the same from the record after a given id (the
//!   last one peeked), without consuming anything; a damaged or unreadable
//!   record there gives no batch (the next peek deals with it as the head).
//! - **ack_batch**: the ids must be consecutive records from the head of one
//!   segment; those already acknowledged are skipped. Ids not from the last
//!   peek are checked against the frame headers on disk. Then as ack, with
//!   the position past the last id: one `ack` write for all of them.
//! - **ack**: the id must be the head record (as [`WriteQueue::peek`] gave
//!   it). The next position is written, with the next generation, over the
//!   older slot of `ack` ([`Storage::write_at`]); only then does memory move
//!   on; then fully acknowledged segment files are removed (a
//!   failed removal is retried at the next ack, and on open). Acknowledging a
//!   record that is already acknowledged is a no-op (`Ok`); acknowledging any
//!   other id is an error ([`QueueError::Io`] naming both positions) and
//!   changes nothing.
//! - **dead_letter**: same id rule; appends the JSON line durably, then acks.
//!   A crash between the two writes the line again after restart. When the
//!   append fails for lack of space, the line is cut back and not written, and
//!   the record is still acknowledged and counted.
//!
//! ## Concurrency
//!
//! Pushes, peeks and acks of one queue may interleave at await points (the
//! core is async; hosts may run requests on several threads). The state sits
//! behind an `async_lock::Mutex`, held for the whole of a peek, an ack or a
//! dead letter, storage calls included, with two exceptions: the reads of
//! [`WriteQueue::peek_batch_after`] and the removal of consumed segment files
//! after an acknowledgement happen with it let go (below). A push holds it only to choose where
//! its record goes and to count it once written: the append and its sync run
//! under a second lock that orders pushes among themselves, so replay reads
//! and acknowledges while a record is being written (a queue that drains
//! under full load needs this: otherwise every replay step waits behind the
//! pushes' syncs). This is safe because:
//!
//! - reads stop at the segment lengths in the state, which count a record
//!   only once its append returned, so a record being written is never read;
//! - the append in flight is noted (`pending_append`), and while it is, a
//!   drained queue is not compacted: its last segment stays, acknowledged to
//!   its end, so neither the file being appended to is removed nor the
//!   position in the `ack` file moved past a segment the append creates (the
//!   next open deletes segments before that position as acknowledged);
//! - only the push that owns the second lock appends, so the segment chosen
//!   and the room checked against `max_bytes` cannot change under it (acks
//!   only free room).
//!
//! [`WriteQueue::peek_batch_after`] decides under the lock where its batch
//! starts (segment, offset, the segment's good length), reads and checks the
//! frames without it, and takes it again to note the ids, giving nothing if
//! the queue was peeked again meanwhile. The bytes it reads cannot change
//! under it: a segment's bytes below its good length are never rewritten
//! (appends only add past it, and cutting back a failed append stops at it),
//! and the file is removed only once every record in it is acknowledged,
//! which the records after the last one peeked are not. So replay reads the
//! batch after next while the previous one's ack is written and pushes go on.
//! The files of segments an acknowledgement consumed (or that held only
//! damaged records, skipped) are removed after the lock is let go (an
//! unlink and a directory sync take milliseconds): no record of the queue
//! is in them any more (the next open removes such files too), and their
//! sequence numbers are never used again.
//!
//! Group commit: a push first leaves its encoded record in a list of
//! records waiting (in arrival order), then takes the append lock. The push
//! that holds it writes every record waiting that fits the current segment,
//! the oldest first, with one [`Storage::append`] (one sync), then answers
//! each of them; a record that would pass `max_bytes` is refused alone
//! ([`QueueError::Full`]) without holding up the others, and a storage
//! error is every one's answer. A push whose record another push wrote
//! finds its answer when it gets the lock, and returns it; one whose record
//! is still waiting writes the next group itself. So records reach the log
//! in the order their pushes arrived, each push returns only once its own
//! record is durable, and while one sync runs the pushes arriving meanwhile
//! share the next one (ingest while a backend is down is no longer one sync
//! per request). A record leaves the list only when answered: if the push
//! writing a group is cancelled mid-append, the next push cuts that append
//! back (`pending_append`) and writes the others again.
//!
//! # Recovery on open
//!
//! 1. List the directory; read `ack` (either version). A damaged `ack` file
//!    (bad length, or no slot with a good magic and CRC) is treated as
//!    missing: replay restarts at the oldest segment (duplicates, never loss)
//!    and [`Recovery::ack_reset`] says so. A missing, version 1 or damaged file
//!    is replaced by a version 2 file holding the position in force.
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
//!
//! # Code layout
//!
//! `mod.rs`: this specification and the public API (push, peek, ack,
//! peek_batch, ack_batch);
//! `codec.rs`: record frames, payloads, the `ack` record and the corruption
//! rule; `state.rs`: the in-memory segment list and counters; `recovery.rs`:
//! [`WriteQueue::open`]; `dead_letter.rs`: the dead-letter file; `tests.rs`.

use crate::http::SharedBytes;
use crate::storage::Storage;
use async_lock::{Mutex, MutexGuard};
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

mod codec;
mod dead_letter;
mod recovery;
mod state;
#[cfg(test)]
mod tests;

use codec::*;
use dead_letter::*;
use state::*;

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
/// Version 1 frames (no push time) are still read.
const RECORD_VERSION_1: u8 = 1;
/// Version written: the payload starts with the push time.
const RECORD_VERSION: u8 = 2;
/// The push time (ms since the epoch, u64 LE) leading a version 2 payload.
const PUSHED_MS_BYTES: u64 = 8;
const KIND_WRITE: u8 = 1;
const KIND_STATEMENT: u8 = 2;
const ACK_FILE: &str = "ack";
/// Version 1 `ack` file (24 bytes, replaced atomically), read for upgrade.
const ACK_V1_MAGIC: &[u8; 4] = b"IQA1";
const ACK_V1_BYTES: usize = 24;
/// Version 2 `ack` file: two slots of 32 bytes, each starting with this.
const ACK_MAGIC: &[u8; 4] = b"IQA2";
const ACK_SLOT_BYTES: usize = 32;
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
        /// final `\n` to a non-empty body that lacks it. Shared, not owned:
        /// a record made from a client's body, and a record read back for
        /// replay, are sent from these bytes without a copy.
        body: SharedBytes,
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
    /// When the record was pushed, ms since the Unix epoch (the `now_ms`
    /// given to [`WriteQueue::push`]); `None` for a record of format version
    /// 1, which did not store it.
    pub pushed_ms: Option<u64>,
}

impl Record {
    /// Whether `other` may be sent in the same request as `self`, its body
    /// after this one's ([`WriteQueue::peek_batch`]): both are writes with the
    /// same `db`, `rp`, `precision` and credentials. A statement never is.
    pub fn can_share_request(&self, other: &Record) -> bool {
        match (self, other) {
            (
                Record::Write { db, rp, precision, credentials, .. },
                Record::Write { db: db2, rp: rp2, precision: precision2, credentials: credentials2, .. },
            ) => db == db2 && rp == rp2 && precision == precision2 && credentials == credentials2,
            _ => false,
        }
    }
}

/// Consecutive records from the head of a queue, to be sent as one request
/// ([`WriteQueue::peek_batch`]) and acknowledged together
/// ([`WriteQueue::ack_batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The records' ids, oldest (the head) first; never empty.
    pub ids: Vec<RecordId>,
    /// The head record; for several writes, with the bodies of all of them
    /// concatenated in queue order as its body.
    pub record: Record,
    /// Where each record's body ends in `record`'s body, in bytes: record
    /// `i`'s body is `ends[i - 1]..ends[i]` (from 0 for the head). One entry
    /// per id (0 for a statement).
    pub ends: Vec<usize>,
}

impl Batch {
    /// Record `i` of the batch on its own (its body a slice of the
    /// concatenation, not a copy); `None` past the end.
    pub fn record(&self, i: usize) -> Option<Record> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(match &self.record {
            Record::Write { db, rp, precision, credentials, body } => Record::Write {
                db: db.clone(),
                rp: rp.clone(),
                precision: precision.clone(),
                credentials: credentials.clone(),
                body: body.slice(start..end),
            },
            statement => statement.clone(),
        })
    }

    /// Bytes `start..end` of the batch body that record `i`'s body takes.
    pub fn body_range(&self, i: usize) -> std::ops::Range<usize> {
        let end = self.ends.get(i).copied().unwrap_or(0);
        let start = if i == 0 { 0 } else { self.ends.get(i - 1).copied().unwrap_or(0) };
        start..end
    }
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
    /// Held by the one push appending (its storage call included).
    appending: Mutex<()>,
    /// Pushes waiting to be appended, and answers for those another push
    /// appended (group commit).
    group: std::sync::Mutex<Group>,
    // Mirrors of `State` counters, readable without awaiting the lock.
    records: AtomicU64,
    bytes: AtomicU64,
    dead_letters: AtomicU64,
    dropped_records: AtomicU64,
    dropped_bytes: AtomicU64,
    /// The head record's push time; `u64::MAX` when unknown or empty.
    head_pushed_ms: AtomicU64,
    /// Empty buffers of batches already delivered
    /// ([`WriteQueue::recycle`]), at most [`SPARE_BUFFERS`], for the next
    /// batches' bodies: their pages are not given back to the system and
    /// faulted in again for every batch. Let go once the queue is empty or
    /// replay pauses ([`WriteQueue::release_spare_buffers`]).
    spare_buffers: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// Batch buffers kept for reuse ([`WriteQueue::recycle`]): pipelined replay
/// holds two batches at once (the one being acknowledged, the next).
const SPARE_BUFFERS: usize = 2;

/// Pushes waiting for [`WriteQueue::push`]'s append lock: their frames, in
/// arrival order, and the answers of those already appended by another.
#[derive(Debug, Default)]
struct Group {
    next_ticket: u64,
    waiting: VecDeque<Waiting>,
    done: Vec<(u64, Result<(), QueueError>)>,
}

/// One push's encoded record.
#[derive(Debug)]
struct Waiting {
    ticket: u64,
    frame: Vec<u8>,
    /// Its bytes in the queue ([`WriteQueue::record_bytes`]).
    size: u64,
    now_ms: u64,
}

/// `record` with `body` as its body when it is a write.
fn with_body(mut record: Record, body: SharedBytes) -> Record {
    if let Record::Write { body: slot, .. } = &mut record {
        *slot = body;
    }
    record
}

fn io_err(what: &str, path: &str, e: io::Error) -> QueueError {
    QueueError::Io(format!("{what} {path}: {e}"))
}

impl WriteQueue {
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

    /// When the oldest record waiting was pushed (ms since the Unix epoch);
    /// `None` when the queue is empty or the head is a version 1 record
    /// (written before push times were stored).
    pub fn oldest_pushed_ms(&self) -> Option<u64> {
        match self.head_pushed_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            t => Some(t),
        }
    }

    /// Appends `record` durably (fsynced when this returns `Ok`), stamped
    /// with `now_ms` (ms since the Unix epoch) as its push time.
    ///
    /// Pushes that wait while another one is written are written together
    /// afterwards, in the order they arrived, with one [`Storage::append`]
    /// (one sync) per segment they go to (group commit: see "Concurrency" in
    /// the module documentation); each still returns only once its own
    /// record is durable.
    ///
    /// Errors: [`QueueError::Full`] when the bytes waiting plus this record's
    /// would pass `max_bytes`; [`QueueError::Io`] when the storage failed
    /// (disk full: `No space left on device`; every record of the append that
    /// failed gets it) or a field is longer than 4 GiB, or when the push that
    /// was writing this record with its own was cancelled. On error nothing
    /// is kept: a partial append is cut back and a segment file the append
    /// created is removed.
    pub async fn push<S: Storage>(
        &self,
        storage: &S,
        record: &Record,
        now_ms: u64,
    ) -> Result<(), QueueError> {
        let size = Self::record_bytes(record);
        if size > self.options.max_bytes {
            return Err(QueueError::Full { max_bytes: self.options.max_bytes });
        }
        let frame = encode_frame(record, now_ms)?;
        let ticket = {
            let mut group = self.group();
            let ticket = group.next_ticket;
            group.next_ticket += 1;
            group.waiting.push_back(Waiting { ticket, frame, size, now_ms });
            ticket
        };
        // Whatever happens to this push (cancelled included), its frame and
        // answer do not stay behind.
        struct Leave<'q>(&'q WriteQueue, u64);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                let mut group = self.0.group();
                group.waiting.retain(|w| w.ticket != self.1);
                group.done.retain(|(t, _)| *t != self.1);
            }
        }
        let _leave = Leave(self, ticket);
        // One append at a time; the state lock is held only around it, so
        // replay's reads and acknowledgements go on while records are written
        // and synced.
        let _appending = self.appending.lock().await;
        loop {
            {
                let mut group = self.group();
                if let Some(i) = group.done.iter().position(|(t, _)| *t == ticket) {
                    return group.done.swap_remove(i).1;
                }
            }
            // Not answered yet, so still waiting: this push writes the
            // records waiting (its own among them), a segment's worth at a
            // time, until its own is answered.
            self.append_run(storage, ticket).await;
        }
    }

    fn group(&self) -> std::sync::MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the first records waiting that go to one segment, in order,
    /// with one [`Storage::append`], and answers them (and those refused as
    /// [`QueueError::Full`]) in `done`: at least the first record waiting is
    /// answered. Records stay in `waiting` until answered, so that if this
    /// push (`leader`) is cancelled mid-append the others are written by the
    /// next push (which first cuts the unfinished append back). Called with
    /// `appending` held.
    async fn append_run<S: Storage>(&self, storage: &S, leader: u64) {
        let mut state = self.state.lock().await;
        self.repair_append(storage, &mut state).await;
        let current = match state.segments.back() {
            Some(back) if state.writable => Some(*back),
            _ => None,
        };
        // The run: (ticket, bytes, push time) of each record written.
        let mut run: Vec<(u64, u64, u64)> = Vec::new();
        let mut new_segment = current.is_none();
        let frames = {
            let mut group = self.group();
            let mut room = self.options.max_bytes.saturating_sub(state.depth.bytes);
            // Bytes in the segment once the run is written (a new segment:
            // only the run's).
            let mut seg_len = current.map_or(0, |back| back.len);
            let mut full = Vec::new();
            let mut i = 0;
            while let Some(w) = group.waiting.get(i) {
                if w.size > room {
                    full.push(w.ticket);
                    i += 1;
                    continue;
                }
                if seg_len != 0 && seg_len + w.size > self.options.segment_bytes {
                    if run.is_empty() && !new_segment {
                        // The current segment is full: this run starts the next.
                        new_segment = true;
                        seg_len = 0;
                        continue;
                    }
                    break;
                }
                room -= w.size;
                seg_len += w.size;
                run.push((w.ticket, w.size, w.now_ms));
                i += 1;
            }
            let max_bytes = self.options.max_bytes;
            group.waiting.retain(|w| !full.contains(&w.ticket));
            group.done.extend(full.into_iter().map(|t| (t, Err(QueueError::Full { max_bytes }))));
            let bytes: u64 = run.iter().map(|r| r.1).sum();
            let mut frames = Vec::new();
            if run.len() > 1 {
                frames.reserve_exact(usize::try_from(bytes).unwrap_or(0));
            }
            for w in group.waiting.iter_mut().take(run.len()) {
                if run.len() == 1 && w.ticket == leader {
                    // The leader's own record alone: moved, not copied (if
                    // the leader is cancelled, so is its record).
                    frames = std::mem::take(&mut w.frame);
                } else {
                    frames.extend_from_slice(&w.frame);
                }
            }
            frames
        };
        if run.is_empty() {
            return;
        }
        let (seq, prev_len) = match (new_segment, current) {
            (false, Some(back)) => (back.seq, back.len),
            _ => {
                let seq = state.next_seq;
                // Consumed even if the append fails: a failed new segment
                // may leave bytes behind that must not be appended to.
                state.next_seq += 1;
                (seq, 0)
            }
        };
        // The segment appended to (or made) is kept even if the queue is
        // removed while it runs (`State::compact_if_drained`), and the
        // next push cuts it back if it never finishes.
        state.pending_append = Some((seq, prev_len));
        drop(state);
        let path = segment_path(&self.dir, seq);
        let bytes: u64 = run.iter().map(|r| r.1).sum();
        let result = storage.append(&path, frames).await;
        let mut state = self.state.lock().await;
        let result = match result {
            Ok(()) => {
                state.pending_append = None;
                let records = run.len() as u64;
                match state.segments.back_mut() {
                    Some(back) if !new_segment && back.seq == seq => {
                        back.len += bytes;
                        back.records += records;
                    }
                    // A new segment (or, should its segment have left the
                    // list meanwhile, the one appended to, which is never
                    // removed while the append runs): it becomes the back.
                    _ => {
                        state.segments.push_back(Segment { seq, len: prev_len + bytes, records });
                        state.writable = true;
                        if state.segments.len() == 1 {
                            state.head_offset = prev_len;
                        }
                    }
                }
                if state.depth.records == 0 {
                    state.head_pushed_ms = run.first().map(|r| r.2);
                }
                state.depth.records += records;
                state.depth.bytes += bytes;
                self.publish(&state);
                Ok(())
            }
            Err(e) => {
                self.repair_append(storage, &mut state).await;
                Err(io_err("cannot append to", &path, e))
            }
        };
        let mut group = self.group();
        group.waiting.retain(|w| !run.iter().any(|r| r.0 == w.ticket));
        group.done.extend(run.iter().map(|r| (r.0, result.clone())));
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
                Frame::Valid { end, record, pushed_ms } => {
                    let id = RecordId { segment: front.seq, offset, end, pushed_ms };
                    state.peeked = vec![id];
                    state.head_pushed_ms = pushed_ms;
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
            Ok(true) => self.ack_locked(storage, &mut state, id.end, 1).await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        self.publish(&state);
        self.remove_garbage(storage, state).await;
        result
    }

    /// The head record and the records after it that may share its request
    /// ([`Record::can_share_request`]), as one [`Batch`]: at most
    /// `max_records` records whose bodies total at most `max_body_bytes`
    /// (the head alone may be longer), all in the head's segment. A
    /// statement is always alone. Damaged records are skipped before the head
    /// as by [`WriteQueue::peek`]; one met after the head ends the batch (the
    /// next peek skips it), as does a read error there.
    /// Errors: [`QueueError::Io`] when the head cannot be read.
    pub async fn peek_batch<S: Storage>(
        &self,
        storage: &S,
        max_body_bytes: u64,
        max_records: usize,
    ) -> Result<Option<Batch>, QueueError> {
        let mut state = self.state.lock().await;
        let result = self.peek_batch_locked(storage, &mut state, max_body_bytes, max_records).await;
        self.publish(&state);
        result
    }

    async fn peek_batch_locked<S: Storage>(
        &self,
        storage: &S,
        state: &mut State,
        max_body_bytes: u64,
        max_records: usize,
    ) -> Result<Option<Batch>, QueueError> {
        let Some((head, record)) = self.peek_locked(storage, state).await? else {
            // Drained: the buffers kept for replay are given back.
            self.release_spare_buffers();
            return Ok(None);
        };
        let seg_len = state.segments.front().map_or(head.end, |s| s.len);
        let batch = self.extend_batch(storage, head, record, seg_len, max_body_bytes, max_records).await;
        state.peeked = batch.ids.clone();
        Ok(Some(batch))
    }

    /// The batch that follows record `after` (the last record of a batch
    /// given by [`WriteQueue::peek_batch`] or by this function, acknowledged
    /// or not yet): the record just after it (at the start of the next
    /// segment when `after` ends its segment) and the records after that
    /// which may share its request, with the limits of
    /// [`WriteQueue::peek_batch`]. It lets replay read and send the next
    /// batch while the previous one's acknowledgement is being written
    /// (guarantee 10). `None` when nothing follows, when `after` is not the
    /// last id peeked, or when the record after it is damaged or cannot be
    /// read (a later [`WriteQueue::peek_batch`] deals with it as the head).
    /// Its ids are remembered next to the unacknowledged ones of the batch
    /// ending at `after`, so their acknowledgement needs no read either.
    /// Never an error: the storage is only read, and what cannot be read is
    /// `None`.
    pub async fn peek_batch_after<S: Storage>(
        &self,
        storage: &S,
        after: RecordId,
        max_body_bytes: u64,
        max_records: usize,
    ) -> Option<Batch> {
        // Where the batch starts is decided under the lock; its frames are
        // read with the lock let go, so that an ack (or a push) goes on
        // meanwhile ("Concurrency": these bytes cannot change).
        let (seq, offset, seg_len) = {
            let mut state = self.state.lock().await;
            state.normalize();
            if state.peeked.last() != Some(&after) {
                return None;
            }
            let index = state.segments.iter().position(|s| s.seq == after.segment)?;
            let segment = state.segments[index];
            if after.end < segment.len {
                (segment.seq, after.end, segment.len)
            } else {
                let next = state.segments.get(index + 1)?;
                (next.seq, 0, next.len)
            }
        };
        if offset >= seg_len {
            return None;
        }
        let path = segment_path(&self.dir, seq);
        let Ok(Frame::Valid { end, record, pushed_ms }) = read_frame(storage, &path, offset, seg_len).await
        else {
            return None;
        };
        let head = RecordId { segment: seq, offset, end, pushed_ms };
        let batch = self.extend_batch(storage, head, record, seg_len, max_body_bytes, max_records).await;
        let mut state = self.state.lock().await;
        state.normalize();
        if state.peeked.last() != Some(&after) {
            // Peeked again meanwhile: this read is not the one after it.
            self.recycle(batch);
            return None;
        }
        // Ids of the batch ending at `after` (not yet acknowledged) stay,
        // then this batch's: at most two batches of ids.
        let keep_from = state.peeked.len().saturating_sub(max_records);
        state.peeked.drain(..keep_from);
        state.peeked.extend_from_slice(&batch.ids);
        Some(batch)
    }

    /// The batch led by record `head` (read, decoded as `record`) of a
    /// segment whose good bytes end at `seg_len`: `head` and the records
    /// after it in that segment that may share its request, within the
    /// limits (see [`WriteQueue::peek_batch`]). The following frames are
    /// read ahead in few reads (see [`read_ahead`]), each body copied once,
    /// into a buffer sized for the whole batch.
    async fn extend_batch<S: Storage>(
        &self,
        storage: &S,
        head: RecordId,
        mut record: Record,
        seg_len: u64,
        max_body_bytes: u64,
        max_records: usize,
    ) -> Batch {
        let mut ids = vec![head];
        let Record::Write { body, .. } = &mut record else {
            return Batch { ids, record, ends: vec![0] };
        };
        let mut ends = vec![body.len()];
        let head_body = std::mem::take(body);
        // What a payload holds besides the body (db, rp, precision,
        // credentials, push time): the same for every record that can share
        // the head's request (of its format version).
        let meta = (head.end - head.offset).saturating_sub(RECORD_HEADER_BYTES + head_body.len() as u64);
        // Room for the whole batch at once (pages never written cost
        // nothing), so the body is never copied to grow.
        let room =
            seg_len.saturating_sub(head.end).min(max_body_bytes.saturating_sub(head_body.len() as u64));
        // The batch body: the head's own bytes while it is alone (no copy),
        // the concatenation once a second record joins.
        let mut joined: Option<Vec<u8>> = None;
        let mut batch_len = head_body.len();
        let path = segment_path(&self.dir, head.segment);
        // Frames read ahead: bytes `chunk_at..chunk_at + chunk.len()`.
        let (mut chunk, mut chunk_at) = (Vec::new(), head.end);
        let mut at = head.end;
        while ids.len() < max_records && at < seg_len {
            // The header first: a record that would pass the limit is not read.
            let Some(header) = self
                .frame_bytes(storage, &path, (&mut chunk, &mut chunk_at), at, HEADER, seg_len, || {
                    read_ahead(max_body_bytes, batch_len, meta, max_records - ids.len(), at - head.offset)
                })
                .await
            else {
                break;
            };
            let Some((len, crc, version)) = parse_header(header) else { break };
            let end = at + RECORD_HEADER_BYTES + len;
            // A record that would pass the limit is not read (its body is
            // its payload less the head's metadata if it can share the
            // request; checked again once decoded).
            if end > seg_len || batch_len as u64 + len.saturating_sub(meta) > max_body_bytes {
                break;
            }
            let Ok(frame_len) = usize::try_from(RECORD_HEADER_BYTES + len) else { break };
            let Some(frame) = self
                .frame_bytes(storage, &path, (&mut chunk, &mut chunk_at), at, frame_len, seg_len, || {
                    read_ahead(max_body_bytes, batch_len, meta, max_records - ids.len(), at - head.offset)
                })
                .await
            else {
                break;
            };
            let payload = &frame[HEADER..];
            if crc32fast::hash(payload) != crc {
                break;
            }
            let Some((pushed_ms, next, range)) = decode_payload_parts(payload, version) else { break };
            let fits = (batch_len + range.len()) as u64 <= max_body_bytes;
            if !fits || !record.can_share_request(&next) {
                break;
            }
            let buf = joined.get_or_insert_with(|| {
                let mut buf =
                    self.spare_buffers.lock().ok().and_then(|mut spares| spares.pop()).unwrap_or_default();
                buf.clear();
                // A kept buffer is not reallocated (and its pages faulted
                // in again) for a batch only slightly longer than its last:
                // room for the longest batch (the limit, or a segment; pages
                // never written cost nothing).
                let whole = usize::try_from(max_body_bytes.min(self.options.segment_bytes)).unwrap_or(0);
                buf.reserve((head_body.len() + usize::try_from(room).unwrap_or(0)).max(whole));
                buf.extend_from_slice(&head_body);
                buf
            });
            buf.extend_from_slice(payload.get(range).unwrap_or_default());
            batch_len = buf.len();
            ends.push(batch_len);
            ids.push(RecordId { segment: head.segment, offset: at, end, pushed_ms });
            at = end;
        }
        let body = match joined {
            Some(buf) => SharedBytes::from(buf),
            None => head_body,
        };
        Batch { ids, record: with_body(record, body), ends }
    }

    /// Keeps the buffer of batch `batch`, delivered and no longer needed,
    /// for a later batch's body (at most [`SPARE_BUFFERS`] are kept, until
    /// the queue is next found empty or replay pauses): only a batch of several records,
    /// whose body was assembled in a buffer of its own, and only when
    /// nothing else still shares that buffer. Changes nothing in the queue.
    pub fn recycle(&self, batch: Batch) {
        let Record::Write { body, .. } = batch.record else { return };
        if batch.ids.len() < 2 {
            return;
        }
        let Some(buffer) = body.try_into_vec() else { return };
        if let Ok(mut spares) = self.spare_buffers.lock() {
            if spares.len() < SPARE_BUFFERS {
                spares.push(buffer);
            }
        }
    }

    /// How many buffers [`WriteQueue::recycle`] keeps now (tests).
    #[cfg(test)]
    pub(crate) fn spare_buffers_held(&self) -> usize {
        self.spare_buffers.lock().map_or(0, |spares| spares.len())
    }

    /// The capacity in bytes of each buffer [`WriteQueue::recycle`] keeps
    /// now (tests).
    #[cfg(test)]
    pub(crate) fn spare_buffer_capacities(&self) -> Vec<usize> {
        self.spare_buffers.lock().map_or(Vec::new(), |spares| spares.iter().map(Vec::capacity).collect())
    }

    /// Lets go of the buffers [`WriteQueue::recycle`] kept: replay pauses
    /// (`Proxy::replay_step` calls this whenever a step does not go on at
    /// once), so they would only hold memory.
    pub fn release_spare_buffers(&self) {
        if let Ok(mut spares) = self.spare_buffers.lock() {
            *spares = Vec::new();
        }
    }

    /// Bytes `at..at + len` of segment `path` (good bytes up to `seg_len`),
    /// from the read-ahead `chunk` (holding bytes from `chunk.1` on) when it
    /// has them, else after one read at `at` of `len` or, when larger,
    /// `ahead()` bytes (what the rest of the batch may need) into it.
    /// `None` when they cannot be read.
    #[allow(clippy::too_many_arguments)]
    async fn frame_bytes<'c, S: Storage>(
        &self,
        storage: &S,
        path: &str,
        chunk: (&'c mut Vec<u8>, &mut u64),
        at: u64,
        len: usize,
        seg_len: u64,
        ahead: impl FnOnce() -> u64,
    ) -> Option<&'c [u8]> {
        let (bytes, chunk_at) = chunk;
        let covered = at >= *chunk_at && (at - *chunk_at) as usize + len <= bytes.len();
        if !covered {
            let want = ahead().max(len as u64).min(seg_len.saturating_sub(at));
            *bytes = storage.read_at(path, at, usize::try_from(want).ok()?).await.ok()?;
            *chunk_at = at;
            if bytes.len() < len {
                return None;
            }
        }
        let start = usize::try_from(at - *chunk_at).ok()?;
        bytes.get(start..start + len)
    }

    /// Removes the records `ids` durably with one write of the `ack` file
    /// (one acknowledgement): they must be consecutive records from the head,
    /// in one segment, as [`WriteQueue::peek_batch`] gave them (all of a
    /// batch, or its first ones). Ids already acknowledged are skipped (all
    /// of them: a no-op). Errors as [`WriteQueue::ack`]: ids that are not
    /// the oldest records, or not consecutive, are refused with
    /// [`QueueError::Io`] and change nothing.
    pub async fn ack_batch<S: Storage>(&self, storage: &S, ids: &[RecordId]) -> Result<(), QueueError> {
        let mut state = self.state.lock().await;
        let result = self.ack_batch_locked(storage, &mut state, ids).await;
        self.publish(&state);
        self.remove_garbage(storage, state).await;
        result
    }

    /// [`WriteQueue::ack_batch`], but the files of the segments it consumed
    /// are left for a later call to remove ([`WriteQueue::ack`],
    /// [`WriteQueue::ack_batch`], [`WriteQueue::dead_letter`] or
    /// [`WriteQueue::remove_consumed_segments`]): pipelined replay removes
    /// them while it sends the next batch, so an unlink (milliseconds) is
    /// not one more wait between batches. The records are removed all the
    /// same (the `ack` file is written): only the files wait.
    pub async fn ack_batch_leaving_files<S: Storage>(
        &self,
        storage: &S,
        ids: &[RecordId],
    ) -> Result<(), QueueError> {
        let mut state = self.state.lock().await;
        let result = self.ack_batch_locked(storage, &mut state, ids).await;
        self.publish(&state);
        result
    }

    /// Removes the files of segments already acknowledged
    /// ([`WriteQueue::ack_batch_leaving_files`]); the lock is held only to
    /// read their list and then to strike those removed. A file that cannot
    /// be removed is tried again later.
    pub async fn remove_consumed_segments<S: Storage>(&self, storage: &S) {
        let state = self.state.lock().await;
        self.remove_garbage(storage, state).await;
    }

    async fn ack_batch_locked<S: Storage>(
        &self,
        storage: &S,
        state: &mut State,
        ids: &[RecordId],
    ) -> Result<(), QueueError> {
        state.normalize();
        let head = state.head_pos();
        let ids = match ids.iter().position(|id| (id.segment, id.offset) >= head) {
            Some(first) => &ids[first..],
            None => return Ok(()),
        };
        let (Some(first), Some(last)) = (ids.first().copied(), ids.last().copied()) else { return Ok(()) };
        if !self.check_head(storage, state, first).await? {
            return Ok(());
        }
        let chained = ids.windows(2).all(|w| w[1].segment == w[0].segment && w[1].offset == w[0].end);
        if !chained {
            return Err(QueueError::Io(format!(
                "{}: cannot acknowledge records {}:{}..{}:{}: not consecutive records",
                self.dir, first.segment, first.offset, last.segment, last.end
            )));
        }
        if !state.peeked.starts_with(ids) {
            // Not from the last peek: check each frame's length on disk.
            let path = segment_path(&self.dir, first.segment);
            let front_len = state.segments.front().map_or(0, |s| s.len);
            for id in &ids[1..] {
                let header = storage
                    .read_at(&path, id.offset, HEADER)
                    .await
                    .map_err(|e| io_err("cannot read", &path, e))?;
                match parse_header(&header) {
                    Some((len, ..))
                        if id.offset + RECORD_HEADER_BYTES + len == id.end && id.end <= front_len => {}
                    _ => {
                        return Err(QueueError::Io(format!(
                            "{}: cannot acknowledge record {}:{}..{}: no such record",
                            self.dir, id.segment, id.offset, id.end
                        )))
                    }
                }
            }
        }
        self.ack_locked(storage, state, last.end, ids.len() as u64).await
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
        if state.peeked.first() == Some(&id) {
            return Ok(true);
        }
        // Not from the last peek: check the frame length on disk.
        let path = segment_path(&self.dir, front.seq);
        let header =
            storage.read_at(&path, id.offset, HEADER).await.map_err(|e| io_err("cannot read", &path, e))?;
        match parse_header(&header) {
            Some((len, ..)) if id.offset + RECORD_HEADER_BYTES + len == id.end => Ok(true),
            _ => Err(not_head()),
        }
    }

    /// Acknowledges the `records` head records, which end at `end` in the
    /// front segment: writes the new position (in place, into the slot of the
    /// next generation), then updates memory, then removes consumed segment
    /// files.
    async fn ack_locked<S: Storage>(
        &self,
        storage: &S,
        state: &mut State,
        end: u64,
        records: u64,
    ) -> Result<(), QueueError> {
        let mut next = state.clone();
        next.consume_head(end, records);
        next.normalize();
        next.compact_if_drained();
        let (seq, offset) = next.head_pos();
        let path = format!("{}/{ACK_FILE}", self.dir);
        let generation = state.ack_generation + 1;
        let written = if state.ack_slots {
            let slot = encode_ack_slot(generation, seq, offset);
            storage.write_at(&path, ack_slot_offset(generation), &slot).await
        } else {
            // No two-slot file yet (it could not be created on open).
            create_ack_file(storage, &path, &encode_ack_file(generation, seq, offset)).await
        };
        written.map_err(|e| io_err("cannot write", &path, e))?;
        next.ack_generation = generation;
        next.ack_slots = true;
        next.head_pushed_ms = match next.segments.front() {
            // Not past the good bytes: a record being appended there is not
            // the queue's yet.
            Some(front) if next.head_offset < front.len => {
                read_pushed_ms(storage, &segment_path(&self.dir, front.seq), next.head_offset).await
            }
            _ => None,
        };
        *state = next;
        Ok(())
    }

    /// Removes the files of the segments an acknowledgement consumed
    /// (`garbage`), with the lock (`state`) let go first: an unlink and the
    /// sync of the directory take milliseconds, which pushes and the read of
    /// the next batch need not wait for ("Concurrency"). A segment leaves
    /// the list only once its file is gone, so one that cannot be removed,
    /// or whose removal is cut short (the caller's future dropped: a replay
    /// loop restarting), is tried again by the next removal (and the next
    /// open removes it as acknowledged); removing a file twice is harmless.
    async fn remove_garbage<S: Storage>(&self, storage: &S, state: MutexGuard<'_, State>) {
        let garbage = state.garbage.clone();
        drop(state);
        if garbage.is_empty() {
            return;
        }
        let mut removed = Vec::with_capacity(garbage.len());
        for seq in garbage {
            if storage.remove(&segment_path(&self.dir, seq)).await.is_ok() {
                removed.push(seq);
            }
        }
        self.state.lock().await.garbage.retain(|seq| !removed.contains(seq));
    }

    /// Undoes an append that failed or was cancelled: truncates the segment
    /// back, or seals it when that fails.
    async fn repair_append<S: Storage>(&self, storage: &S, state: &mut State) {
        let Some((seq, len)) = state.pending_append.take() else { return };
        let path = segment_path(&self.dir, seq);
        // A segment file the append created goes away (no empty or partial
        // file is left behind); an existing one is cut back.
        let result = match len {
            0 => storage.remove(&path).await,
            _ => storage.truncate(&path, len).await,
        };
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
        let pushed = if state.depth.records == 0 { None } else { state.head_pushed_ms };
        self.head_pushed_ms.store(pushed.unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// Bytes worth reading at once for the rest of a batch: the body room left
/// (`max_body_bytes` less `body_len` bytes taken) plus, for each of at most
/// `records` more records (up to 1,024), its frame header and `meta` bytes
/// of metadata; but no more than [`READ_AHEAD_GROWTH`] times the `spanned`
/// bytes of frames the batch already holds (at least
/// [`READ_AHEAD_MIN_BYTES`]), so that a batch that ends early (the next
/// record cannot share the request or is too long) is not read up to
/// `max_body_bytes` ahead, while one that fills its limits is still read in
/// few reads (an 8 MiB batch of 555 KB records: the head, then two).
fn read_ahead(max_body_bytes: u64, body_len: usize, meta: u64, records: usize, spanned: u64) -> u64 {
    let per_record = RECORD_HEADER_BYTES + meta;
    let rest = max_body_bytes.saturating_sub(body_len as u64) + per_record * records.min(1024) as u64;
    rest.min(spanned.saturating_mul(READ_AHEAD_GROWTH).max(READ_AHEAD_MIN_BYTES))
}

/// How many times the bytes a batch already holds [`read_ahead`] reads at
/// most for its rest: a read is a round trip to the host's storage (a
/// blocking thread natively), so few of them; what a batch that ends early
/// read past its end is at most this many times what it holds, and is read
/// again, from the page cache, for the next batch.
const READ_AHEAD_GROWTH: u64 = 3;

/// Fewest bytes [`read_ahead`] reads at once (unless the limits need fewer).
const READ_AHEAD_MIN_BYTES: u64 = 64 * 1024;
