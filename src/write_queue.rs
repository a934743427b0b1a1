//! The durable, ordered, per-backend write queue.
//!
//! (Spec of the on-disk layout and invariants: see the module documentation
//! written with the implementation.)
//!
//! While a backend's queue is not empty, every new write or schema statement
//! for that backend is appended to the queue instead of being sent, so a
//! recovering backend receives everything in the original order. A record is
//! removed only after the backend acknowledged it (2xx) or rejected it with a
//! 4xx, in which case it is moved to the dead-letter file.

use crate::storage::Storage;
use std::fmt;

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
        /// Line protocol, each line ending in `\n`.
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
    pub segment: u64,
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

/// One backend's queue in directory `dir` of the storage.
#[derive(Debug)]
pub struct WriteQueue {
    _private: (),
}

impl WriteQueue {
    /// Opens (or creates) the queue in `dir`: finds the segments, drops a torn
    /// or corrupt tail record (a crash in the middle of an append), and resumes
    /// after the last acknowledged record. `max_bytes` bounds the bytes on disk.
    pub async fn open<S: Storage>(storage: &S, dir: &str, max_bytes: u64) -> Result<WriteQueue, QueueError> {
        let _ = (storage, dir, max_bytes);
        todo!()
    }

    /// Records and bytes waiting.
    pub fn depth(&self) -> QueueDepth {
        todo!()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.depth().records == 0
    }

    /// Records moved to the dead-letter file since the queue was created
    /// (counted from the file on open).
    pub fn dead_letters(&self) -> u64 {
        todo!()
    }

    /// Appends `record` durably (fsynced when this returns `Ok`).
    pub async fn push<S: Storage>(&self, storage: &S, record: &Record) -> Result<(), QueueError> {
        let _ = (storage, record);
        todo!()
    }

    /// The oldest record not yet acknowledged, if any.
    pub async fn peek<S: Storage>(&self, storage: &S) -> Result<Option<(RecordId, Record)>, QueueError> {
        let _ = storage;
        todo!()
    }

    /// Removes the record `id` (which must be the one [`WriteQueue::peek`] gave)
    /// durably: a restart will not replay it again.
    pub async fn ack<S: Storage>(&self, storage: &S, id: RecordId) -> Result<(), QueueError> {
        let _ = (storage, id);
        todo!()
    }

    /// Appends `record` with `reason` and `now_ms` to the dead-letter file, then
    /// acknowledges it.
    pub async fn dead_letter<S: Storage>(
        &self,
        storage: &S,
        id: RecordId,
        record: &Record,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), QueueError> {
        let _ = (storage, id, record, reason, now_ms);
        todo!()
    }
}
