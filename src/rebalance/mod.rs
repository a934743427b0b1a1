//! Moving shard keys between backends live, with nothing lost: the plan, the
//! per-key state machine, the copy of history, verification and the durable
//! transfer state.
//!
//! This documentation is the specification of a move, as the write queue's
//! (`crate::write_queue`) is of the queue. The module is pure core: it
//! performs no IO and reads no clock; it reaches backends through the small
//! [`Backends`] trait (ask a query, send a record to a backend now and wait
//! for its acknowledgement, append a record to a backend's write queue, is a
//! backend healthy / its queue empty, are requests of an old routing still
//! in flight) and keeps its state through
//! [`crate::storage::Storage`]; every time comes in as `now_ms`.
//!
//! # Terms
//!
//! A *key* is a shard key ([`KeyId`]: `(db, measurement)` or `(db,
//! measurement, tag value)`), placed on RF *owners* of its shard group by
//! [`crate::placement::place`]. A placement change (a backend added to or
//! removed from a group, or its replication factor changed) gives each key
//! *old owners* and *new owners*; [`plan`] lists the keys whose owner sets
//! differ. *Added* owners are new owners that are not old owners (they receive
//! the copy); *lost* owners are old owners that are not new owners (the key is
//! deleted there only on [`Rebalance::cleanup`]). The *copy source* is one old
//! owner that stays an owner when there is one (it keeps receiving every
//! write), else the best old owner. A *live write* is a client's write of the
//! key accepted while it moves. Writes carry explicit timestamps: the proxy
//! stamps points without one before fanning them out (`src/proxy/write.rs`),
//! so every owner stores a point at the same time.
//!
//! # States of a moving key
//!
//! | phase | writes go to | reads go to | leaves when |
//! |---|---|---|---|
//! | `Pending` | old | old | every added owner is caught up (healthy, empty write queue), the source's `SHOW RETENTION POLICIES` is read, and `CREATE DATABASE` + each retention policy (`ALTER` for `autogen`, `CREATE` for others, with their durations, replication and the default) are sent to every added owner and acknowledged |
//! | `Schema` | old ∪ new | old | no request routed before the key entered `Schema` is still in flight ([`Backends::requests_done_before`]) |
//! | `Copying` | old ∪ new | old | every retention policy's range is copied, chunk by chunk |
//! | `Verifying` | old ∪ new | old | per-field counts are equal on the source and every added owner over every copied range |
//! | `Verified` | old ∪ new | **new** | the operator asks [`Rebalance::cleanup`] |
//! | `Cleaning` | new | new | no request of the older routing is in flight; then `DROP MEASUREMENT "m"` (or `DROP SERIES FROM "m" WHERE "tag" = 'v'` for a tag-sharded key) is sent to every lost owner that is caught up (so its queue stays free for live writes of its other keys), appended to the queue of one that is not (applied after every write it holds) |
//! | `Cleaned` | new | new | - |
//!
//! [`Rebalance::write_targets`] and [`Rebalance::read_targets`] give these
//! answers. A failed step (a query or push error, a count mismatch) is
//! counted on the key ([`Progress::errors`]) and retried after
//! [`backoff_ms`] (1 s doubling to 60 s); after `max_verify_mismatches`
//! mismatches the key is copied again from the start. A key with no copy
//! source (a resync of an RF 1 key) stays `Pending` with that error: its
//! history is gone and the operator decides.
//!
//! **Databases first.** The schema statements are applied on the added
//! owner *before* the key's writes are sent there: the key enters `Schema`,
//! and so gains the new owners as write targets, only after each added owner
//! acknowledged every statement (InfluxDB answers a statement once it is
//! applied). So no write of the key reaches a new owner before its database
//! and retention policies exist: never `database not found`. A statement the
//! added owner answers with an error (e.g. a retention policy that conflicts
//! with one it has) is a failed step, retried and shown in
//! [`Progress::last_error`].
//!
//! # The copy
//!
//! Per retention policy of the key's database (the copy reads
//! `"db"."rp"."m"` explicitly, so data outside the default policy moves too):
//! 1. *Bounds*: `SELECT * ... ORDER BY time ASC LIMIT 1` and `DESC LIMIT 1`
//!    on the source give the range `[first, last + 1)`; none: nothing to copy.
//! 2. *Chunks*: `SELECT * FROM "db"."rp"."m" WHERE [tag cond AND] time >= a
//!    AND time < b GROUP BY *` at `epoch=ns`, with the field types of `SHOW
//!    FIELD KEYS`, is turned into line protocol ([`chunk_to_line_protocol`])
//!    and sent, as one `Record::Write` with that rp and no precision (ns),
//!    to every added owner ([`Backends::send`]: now, not through its write
//!    queue, acknowledged). The chunk length adapts to
//!    `points_per_chunk` ([`next_span_ns`]); a `partial` answer (the backend's
//!    `max-row-limit`) shortens it by 4 and reads again. After a chunk of P
//!    points no key of the group copies for [`rate_delay_ms`] (P /
//!    `points_per_s`), so live traffic keeps priority.
//!
//! Each chunk read needs a *caught-up* source and caught-up added owners:
//! healthy and with an empty write queue at the moment the read begins.
//!
//! **Why not through the added owner's write queue.** While a backend's queue
//! is not empty, every write to it goes behind (`crate::write_queue`) and is
//! acknowledged to the client once fsynced there, readable on the backend
//! only once replayed. An added owner often keeps serving reads of other
//! keys: the backends that stay after a removal become new owners of the
//! removed backend's keys; after a replication factor raise every backend
//! gains keys; after an add or a resync, keys already verified are read from
//! the added owner while others still copy. History in its queue would hold
//! every live write to it behind the copy, and a read of any of its keys
//! could miss points acknowledged a moment before. Sent directly, the copy
//! leaves the queue to live writes alone, as outside a move.
//!
//! # Ordering argument: an old value never overwrites a newer one
//!
//! InfluxDB 1.x keeps, for a point (series, time), the field values of the
//! write applied last ("Duplicate points"). What a backend holds is therefore
//! decided by the order in which it *applies* writes. Say live write `W1`
//! *precedes* `W2` when `W2` was accepted after the client had its answer to
//! `W1` (for concurrent writes no order is promised, as today between
//! replicas). The guarantee: for every point, once the key is verified each
//! new owner holds the value of a write that no other write of that point
//! follows; in particular no copied chunk ever replaces a newer live value.
//!
//! Facts used: (Q) InfluxDB applies a write before it acknowledges it, and
//! the copy waits for the added owner `n`'s acknowledgement of each chunk
//! and each re-sent write before its next send; so whatever is sent to `n`
//! after an acknowledgement, by the copy or by the write path (directly or
//! replayed from `n`'s queue), is applied after what was acknowledged;
//! (A) a 204 (the client's answer) needs each owner to have acknowledged or
//! durably queued the write; (R) a backend's answer to a query shows every
//! write it acknowledged before the query began; (E) `n`'s queue is empty
//! and `n` healthy when a chunk read begins (checked with no await between
//! the check and the read), so every live write queued for `n` before the
//! read was already applied there. As for the write queue's replay, a
//! request that got no answer (a timeout) is taken as not applied: a backend
//! applying it long after is outside the argument.
//!
//! Let chunk `C` be read from source `s` at time `R` and acknowledged by `n`
//! at time `P > R`. The danger is a write `W` of the key, applied on `n`
//! *before* `C`, whose value `C` lacks because `s` had not applied `W` at
//! `R`. Which writes can `C` lack? Every write `s` acknowledged before `R` is
//! in `C` (R). Writes accepted before the key entered `Schema` were routed to
//! `s` only; `Schema -> Copying` waits until no request of that routing is in
//! flight, so each was acknowledged by `s` or is in `s`'s queue, which is
//! empty at `R`: in `C`. So `C` can lack only a live write that, at `R`,
//! (i) was registered and not yet acknowledged by `s` (in flight to it, or in
//! its queue), or (ii) was accepted after `R`.
//!
//! **Closing the window.** The write path registers every live write of a
//! key in `Schema`/`Copying`/`Verifying` ([`Rebalance::live_write`], before its
//! first send) and reports the source's answer
//! ([`Rebalance::source_answered`]); the core keeps the write's record until
//! `s` acknowledged it and no chunk read needs it. When a read begins, the
//! core snapshots the set (i) and opens a window that collects (ii). After
//! `n` acknowledged `C`, every write of the window, in acceptance order, is
//! sent again to `n`, each acknowledged before the next; writes accepted
//! while those sends run are sent too, until none is left, and the window
//! closes with no await between the last check and the close. Any write
//! accepted after the close reaches `n` (directly or from its queue) after
//! `C` and the re-sends were acknowledged, and is applied after them (Q). So
//! on `n`, every write `C` may lack is applied after `C` at least once: `C`
//! cannot have the last word on a point any such write touches.
//!
//! **Nor does `C` undo a write `n` applied before it.** Say `n` applied a
//! write `W` of a point before `C`, and `C` holds an older value of that
//! point. `C` holds, per point, the value of the last write `s` applied
//! before `R`; so `W` was not applied by `s` before `R` (else `C` would hold
//! `W`'s value or a newer one): `W` is a write `C` may lack, hence in the
//! window and re-sent after `C`.
//!
//! **The re-sends do not undo newer writes either.** A re-sent `W1`
//! could only harm if some `W2` that `W1` precedes were applied on `n` before
//! the re-send and not re-sent itself, so `W2` is outside the window:
//! `s` acknowledged `W2` before `R`, and `W2` was accepted before `R`. `W1`
//! precedes `W2`, so the client had its answer to `W1` before `R`, so `s` had
//! acknowledged `W1` (then `W1` is not in the window) or queued it (A); a
//! write queued at `s` before `R` has left `s`'s queue by `R` (empty), i.e.
//! it is acknowledged: not in the window either. Contradiction. Within the
//! window, acceptance order keeps `W1` before `W2`.
//!
//! **Duplicates are harmless**: a write applied twice, or a chunk read and
//! sent again, leaves the same values (InfluxDB's duplicate-point rule),
//! provided it is followed by what the argument above puts after it. Hence:
//! - a chunk whose send or re-sends failed half-way (one added owner got
//!   it, a send failed, the proxy was killed) is simply read again later:
//!   the cursor moves only after all its sends were acknowledged, and the
//!   new read `C'` at `R' > P` is a chunk like any other, applied after `C`
//!   on `n`;
//! - after a restart nothing of the window is in memory, but nothing is
//!   needed: requests of the dead process are gone, and writes it had
//!   accepted are in durable queues, the source's and the added owners'
//!   being empty before a read.
//!
//! A live write the source answered with a failure (not taken, not queued:
//! the client got an error) *spoils* an open window: the chunk is dropped
//! and read again (conservative: the source may have applied it after all).
//! Deletes are the one write the argument does not cover (a `DELETE` applied
//! on `n` before a chunk read earlier lands would be undone), so
//! [`Rebalance::delete_allowed`] is false during `Schema` and `Copying`: the
//! proxy refuses them for that key until the copy is done.
//!
//! # Verification
//!
//! When the source and every added owner are healthy with empty queues,
//! `SELECT count(*) FROM "db"."rp"."m" WHERE [tag cond AND] time >= first AND
//! time < end` is asked of each; per-field counts must be equal
//! ([`compare_counts`]). Only then do reads switch to the new owners. A live
//! write still in flight to one owner can make counts differ for a moment: a
//! mismatch is retried with backoff and only `max_verify_mismatches` in a row
//! start the copy again (harmless, as above).
//!
//! # Replacing and removing a backend
//!
//! - **Resync** ([`plan_resync`]): a new empty server under the same name (or
//!   one that lost its data) is, for each key it owns, an added owner whose old
//!   owners are its other replicas. The same machine fills it; until a key is
//!   verified its reads go to the other replicas only (the resynced backend is
//!   not an old owner), its writes already go to it.
//! - **Removal**: the new placement without the backend gives each key it
//!   held one new owner; the key is copied there first (the source prefers a
//!   staying owner). [`Rebalance::removal_complete`] says when every key it
//!   held is verified on RF backends elsewhere; only then may it leave the
//!   config (and `cleanup` stops writes to it).
//!
//! # Durable transfer state
//!
//! One file per group, `rebalance/<group>.state` ([`state_path`]): magic
//! `IRB1`, version 1, payload length (u32 LE), CRC-32 of the payload (IEEE,
//! crc32fast, as the write queue), payload = JSON of [`TransferState`] (each
//! key's move, phase, per retention policy the range, cursor and chunk
//! length, points copied, errors). It is replaced with
//! [`Storage::write_atomic`] *after* a step's sends (and the cleanup's
//! appends): at once when the step
//! changed the key's phase, and for progress inside a phase (cursors) at most
//! every `save_interval_ms` (so thousands of keys do not rewrite the file per
//! chunk). A crash at any point leaves the state of a completed step and
//! redoes what followed it: schema statements again (idempotent), chunks
//! again (harmless, above), counts again. Moving forward only after
//! the sends matters once: a key enters `Schema` (new owners become write
//! targets) only once its schema statements are applied on them. A
//! damaged file is refused ([`RebalanceError::Damaged`]), never guessed.
//!
//! # Several proxies
//!
//! Placement is identical on every proxy with the same config, but a move is
//! not safe with several writers: a proxy still routing a key to its old
//! owners only after the copy began defeats the ordering argument (its
//! writes are neither in the window nor on the new owner). So a move refuses
//! to start or resume unless the operator states that this proxy is the only
//! writer (`RebalanceOptions::single_writer`, a config/flag of the host):
//! [`RebalanceError::NotSingleWriter`]. To move data with several proxies:
//! point the load balancer at one proxy (or stop the others), reload it with
//! the new config and `single_writer`, wait for the move to be verified, then
//! give the other proxies the new config and bring them back. Why not etcd or
//! Consul: the shared state would also have to fence every other proxy's
//! write path per key (each write checking a lease), a new dependency and
//! failure mode for every write, for an operation that is rare and
//! operator-driven; draining to one proxy for a move gives the same safety
//! with nothing new to run.
//!
//! # Code layout
//!
//! `mod.rs`: this specification, the trait and shared types; `plan.rs`: the
//! plan and key discovery; `machine.rs`: [`Rebalance`] (state machine,
//! routing answers, live-write window); `convert.rs`: queries, the chunk to
//! line protocol conversion, chunk sizing and rate; `verify.rs`: counts;
//! `state.rs`: the state file; `tests.rs`: mock backends.

mod convert;
#[cfg(test)]
mod influxd_tests;
mod machine;
mod plan;
mod state;
#[cfg(test)]
mod tests;
mod verify;

pub use convert::{
    bound_query, chunk_query, chunk_to_line_protocol, count_query, field_keys_query, field_types, first_time,
    go_duration_secs, next_span_ns, qualified, quote_ident, quote_string, rate_delay_ms, tag_condition,
    Converted, FieldType,
};
pub use machine::{
    backoff_ms, retention_policies, LiveToken, Rebalance, RetentionPolicy, SourceOutcome, StepOutcome,
};
pub use plan::{keys_of_db, plan, plan_resync, show_names, show_tag_values, KeyMove, Placement};
pub use state::{decode, encode, state_path, KeyState, Phase, RpCopy, RpRange, TransferState, STATE_VERSION};
pub use verify::{compare_counts, field_counts, CountDiff, Verification};

use crate::results::StatementResult;
#[allow(unused_imports)] // doc links
use crate::storage::Storage;
use crate::write_queue::{Credentials, Record};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A shard key, owned (see [`crate::placement::ShardKey`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId {
    pub db: String,
    pub measurement: String,
    /// The shard tag's value in a tag-sharded group (`""`: points without the tag).
    pub tag_value: Option<String>,
}

impl KeyId {
    pub fn new(db: &str, measurement: &str, tag_value: Option<&str>) -> KeyId {
        KeyId {
            db: db.to_string(),
            measurement: measurement.to_string(),
            tag_value: tag_value.map(str::to_string),
        }
    }
}

/// What a move needs of the world; the host implements it over its
/// transport and write queues, tests over mocks. Backends are named as in the
/// config (names stay stable across reloads; indices may not).
#[allow(async_fn_in_trait)]
pub trait Backends {
    /// Runs one statement `q` on `backend` in database `db` with `epoch=ns`
    /// and gives its result. Error: no answer or a non-2xx (the message).
    async fn query(&self, backend: &str, db: &str, q: &str) -> Result<StatementResult, String>;
    /// Appends `record` durably to `backend`'s write queue (its replay
    /// delivers it in order); used for what a lost owner must apply after
    /// the writes it was sent (the cleanup's drops for a lost owner that is not caught up). Error: the queue refused
    /// it (full, disk).
    async fn push(&self, backend: &str, record: &Record, now_ms: u64) -> Result<(), String>;
    /// Sends `record` to `backend` now, bypassing its write queue, and
    /// succeeds only on the backend's acknowledgement: a write answered 2xx
    /// (InfluxDB applies a write before it answers it), a statement answered
    /// 2xx with no error in its result. The copy's schema statements,
    /// chunks and re-sent live writes go this way, only to an added owner
    /// that is healthy with an empty queue. Error: no answer, a non-2xx, a
    /// statement error (the message).
    async fn send(&self, backend: &str, record: &Record) -> Result<(), String>;
    /// The health check's verdict on `backend`.
    fn is_healthy(&self, backend: &str) -> bool;
    /// True when `backend`'s write queue holds nothing.
    fn queue_is_empty(&self, backend: &str) -> bool;
    /// True when no request routed with a [`Rebalance::routing_epoch`] below
    /// `epoch` is still in flight (after a restart: true).
    fn requests_done_before(&self, epoch: u64) -> bool;
}

/// Settings of a move (from the config; not saved in the state file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalanceOptions {
    /// The operator states that this proxy is the only one writing to the
    /// group's backends (see "Several proxies"); without it a move refuses to
    /// start.
    pub single_writer: bool,
    /// Target points per chunk.
    pub points_per_chunk: u64,
    /// Copy rate limit, points per second (0: none).
    pub points_per_s: u64,
    /// First chunk length, ns.
    pub initial_span_ns: i64,
    /// Count mismatches in a row before a key is copied again.
    pub max_verify_mismatches: u32,
    /// Progress inside a phase is saved at most this often, ms (phase
    /// changes are saved at once).
    pub save_interval_ms: u64,
    /// Credentials put on the copy's records and statements (the proxy's own
    /// backend credentials; default none).
    pub credentials: Credentials,
}

impl Default for RebalanceOptions {
    /// Not single-writer; 10,000 points per chunk; 50,000 points/s; first
    /// chunk 1 hour; 3 mismatches; progress saved every second.
    fn default() -> RebalanceOptions {
        RebalanceOptions {
            single_writer: false,
            points_per_chunk: 10_000,
            points_per_s: 50_000,
            initial_span_ns: 3_600_000_000_000,
            max_verify_mismatches: 3,
            save_interval_ms: 1000,
            credentials: Credentials::default(),
        }
    }
}

/// Progress of one group's move, for `/health` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub group: String,
    /// Keys in the move.
    pub keys: u64,
    /// Keys not yet verified (reads still on the old owners).
    pub keys_moving: u64,
    /// Keys whose copy is complete (verifying or later).
    pub keys_copied: u64,
    /// Keys verified (reads on the new owners).
    pub keys_verified: u64,
    /// Keys dropped from the owners that lost them.
    pub keys_cleaned: u64,
    pub points_copied: u64,
    /// Failed steps so far (retried).
    pub errors: u64,
    pub last_error: Option<String>,
}

/// Why a move cannot start, resume or save its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceError {
    /// The group's name: not told that this proxy is the only writer.
    NotSingleWriter(String),
    /// The group's name: an earlier move has keys not yet verified.
    Busy(String),
    /// The state file cannot be written or read.
    Storage(String),
    /// The state file is damaged (magic, version, length, checksum, JSON).
    Damaged(String),
}

impl fmt::Display for RebalanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebalanceError::NotSingleWriter(g) => write!(
                f,
                "refusing to move data of shard group {g:?}: a move is safe only when this proxy is the only \
                 writer; stop the other proxies or point the load balancer at this one, then set single_writer"
            ),
            RebalanceError::Busy(g) => write!(f, "shard group {g:?} has a move in progress"),
            RebalanceError::Storage(e) => write!(f, "rebalance state: {e}"),
            RebalanceError::Damaged(e) => write!(f, "rebalance state damaged: {e}"),
        }
    }
}

impl std::error::Error for RebalanceError {}
