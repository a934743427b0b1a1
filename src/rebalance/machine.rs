//! The per-key state machine and the routing answers.

use super::convert::{self, quote_ident, FieldType};
use super::plan::KeyMove;
use super::state::{self, KeyState, Phase, RpCopy, RpRange, TransferState};
use super::verify::{self, Verification};
use super::*;
use crate::storage::Storage;
use crate::write_queue::{Credentials, Record};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

/// Retry delay after a failed step: 1 s doubling per consecutive failure, at
/// most 60 s.
pub fn backoff_ms(consecutive_errors: u32) -> u64 {
    1000u64.saturating_mul(1 << consecutive_errors.saturating_sub(1).min(6)).min(60_000)
}

/// Wait while a precondition (a caught-up source, requests still in flight)
/// does not hold, in ms.
const WAIT_MS: u64 = 200;

/// A live write of a moving key, as the write path registered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveToken {
    key: usize,
    id: u64,
}

/// What the copy source did with a live write ([`Rebalance::source_answered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceOutcome {
    /// The source answered 2xx: the write is readable there.
    Acked,
    /// The write went to the source's write queue: readable there once the
    /// queue has drained.
    Queued,
    /// The source neither took nor queued it (the client got an error).
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiveStatus {
    Open,
    Queued,
    Closed,
}

#[derive(Debug)]
struct LiveWrite {
    record: Record,
    status: LiveStatus,
}

/// An open chunk read: the re-send set is `snapshot` plus every write with
/// an id at least `start`.
#[derive(Debug)]
struct Window {
    start: u64,
    snapshot: BTreeSet<u64>,
    /// A write in the window failed at the source: the chunk is read again.
    spoiled: bool,
    /// Ids already re-sent.
    pushed: BTreeSet<u64>,
}

#[derive(Debug, Default)]
struct Live {
    writes: BTreeMap<u64, LiveWrite>,
    window: Option<Window>,
}

impl Live {
    fn in_window(&self, id: u64) -> bool {
        self.window.as_ref().is_some_and(|w| id >= w.start || w.snapshot.contains(&id))
    }

    /// Drops closed writes no open window needs.
    fn gc(&mut self) {
        let window = &self.window;
        self.writes.retain(|id, w| {
            w.status != LiveStatus::Closed
                || window.as_ref().is_some_and(|w| *id >= w.start || w.snapshot.contains(id))
        });
    }
}

#[derive(Debug)]
struct Inner {
    state: TransferState,
    index: BTreeMap<KeyId, usize>,
    live: Vec<Live>,
    next_at: Vec<u64>,
    consecutive_errors: Vec<u32>,
    next_token: u64,
    /// No chunk is copied (by any key) before this time: the rate limit is
    /// for the whole group.
    copy_gate_ms: u64,
    /// Memory holds progress the file does not have yet.
    dirty: bool,
    last_save_ms: Option<u64>,
}

impl Inner {
    /// When key `i` is due, `None` when it has nothing to do.
    fn due_at(&self, i: usize) -> Option<u64> {
        match self.state.keys[i].phase {
            Phase::Verified | Phase::Cleaned => None,
            Phase::Copying => Some(self.next_at[i].max(self.copy_gate_ms)),
            _ => Some(self.next_at[i]),
        }
    }
}

/// The rebalance of one shard group: its moving keys' durable state, the
/// routing answers for them and [`Rebalance::step`], which advances one key by
/// one step. Methods take `&self` (interior mutability, never borrowed across
/// an `.await`), so the write path can call [`Rebalance::write_targets`] and
/// [`Rebalance::live_write`] while a step awaits a backend.
#[derive(Debug)]
pub struct Rebalance {
    path: String,
    options: RebalanceOptions,
    inner: RefCell<Inner>,
}

/// What [`Rebalance::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Call again at this time (ms since the epoch; the rate limit, a
    /// backoff, or a precondition being waited for).
    Again { at_ms: u64 },
    /// Nothing left to do until [`Rebalance::cleanup`] (every key verified)
    /// or nothing at all (every key cleaned).
    Idle,
}

enum Action {
    /// Done; wait this long before the key's next step.
    Next(u64),
    /// A chunk was copied: no key copies again for this long (the rate limit).
    Copied(u64),
    /// A precondition does not hold yet: try again after this long.
    Wait(u64),
}

impl Rebalance {
    /// Starts a move of `moves` in group `group` (`shard_tag` for a
    /// tag-sharded group), saved in [`state::state_path`]. Refused
    /// ([`RebalanceError::NotSingleWriter`]) unless
    /// `options.single_writer` (see "Several proxies" in the module doc) and
    /// ([`RebalanceError::Busy`]) while an earlier move of the group has a
    /// key not yet verified. Writes the state file before returning.
    pub async fn start<S: Storage>(
        storage: &S,
        group: &str,
        shard_tag: Option<&str>,
        moves: Vec<KeyMove>,
        options: RebalanceOptions,
    ) -> Result<Rebalance, RebalanceError> {
        check_single_writer(group, &options)?;
        let path = state::state_path(group);
        if let Some(old) = state::load(storage, &path).await? {
            if old.keys.iter().any(|k| k.phase < Phase::Verified) {
                return Err(RebalanceError::Busy(group.to_string()));
            }
        }
        let keys = moves
            .into_iter()
            .map(|key_move| KeyState {
                key_move,
                phase: Phase::Pending,
                rps: Vec::new(),
                points_copied: 0,
                errors: 0,
                verify_mismatches: 0,
                epoch: 0,
                last_error: None,
            })
            .collect();
        let state = TransferState {
            group: group.to_string(),
            shard_tag: shard_tag.map(str::to_string),
            routing_epoch: 0,
            keys,
        };
        state::save(storage, &path, &state).await?;
        Ok(Rebalance::from_state(path, options, state))
    }

    /// Resumes the move of `group` saved in the storage, `Ok(None)` if there
    /// is none. Same single-writer rule as [`Rebalance::start`]. A damaged
    /// file is an error ([`RebalanceError::Damaged`]): the operator decides.
    pub async fn open<S: Storage>(
        storage: &S,
        group: &str,
        options: RebalanceOptions,
    ) -> Result<Option<Rebalance>, RebalanceError> {
        let path = state::state_path(group);
        let Some(state) = state::load(storage, &path).await? else { return Ok(None) };
        check_single_writer(group, &options)?;
        Ok(Some(Rebalance::from_state(path, options, state)))
    }

    fn from_state(path: String, options: RebalanceOptions, state: TransferState) -> Rebalance {
        let n = state.keys.len();
        let index = state.keys.iter().enumerate().map(|(i, k)| (k.key_move.key.clone(), i)).collect();
        let inner = Inner {
            state,
            index,
            live: (0..n).map(|_| Live::default()).collect(),
            next_at: vec![0; n],
            consecutive_errors: vec![0; n],
            next_token: 0,
            copy_gate_ms: 0,
            dirty: false,
            last_save_ms: None,
        };
        Rebalance { path, options, inner: RefCell::new(inner) }
    }

    /// The durable state as it is in memory (for `/health` details and tests).
    pub fn state(&self) -> TransferState {
        self.inner.borrow().state.clone()
    }

    /// The phase of `key`, `None` if it is not moving in this rebalance.
    pub fn phase(&self, key: &KeyId) -> Option<Phase> {
        let inner = self.inner.borrow();
        inner.index.get(key).map(|&i| inner.state.keys[i].phase)
    }

    /// Where a write of `key` goes, by backend name: `None` when the key is
    /// not moving (use the placement); old owners while `Pending`; old ∪ new
    /// (old first) from `Schema` to `Verified`; new owners from `Cleaning`.
    pub fn write_targets(&self, key: &KeyId) -> Option<Vec<String>> {
        let inner = self.inner.borrow();
        let k = &inner.state.keys[*inner.index.get(key)?];
        let m = &k.key_move;
        Some(match k.phase {
            Phase::Pending => m.old_owners.clone(),
            Phase::Cleaning | Phase::Cleaned => m.new_owners.clone(),
            _ => {
                let mut all = m.old_owners.clone();
                all.extend(m.added());
                all
            }
        })
    }

    /// Which backends a read of `key` may ask: `None` when the key is not
    /// moving; the old owners until the key is `Verified`, the new owners
    /// after. (A resynced backend is a new owner that is not an old one:
    /// reads skip it until it is verified.)
    pub fn read_targets(&self, key: &KeyId) -> Option<Vec<String>> {
        let inner = self.inner.borrow();
        let k = &inner.state.keys[*inner.index.get(key)?];
        Some(if k.phase >= Phase::Verified {
            k.key_move.new_owners.clone()
        } else {
            k.key_move.old_owners.clone()
        })
    }

    /// The copy source of `key` (the old owner whose answers to live writes
    /// [`Rebalance::source_answered`] wants), `None` when the key is not
    /// moving or has no source.
    pub fn source(&self, key: &KeyId) -> Option<String> {
        let inner = self.inner.borrow();
        inner.state.keys[*inner.index.get(key)?].key_move.source.clone()
    }

    /// True when every key is `Verified` or later (reads follow the new
    /// placement; nothing is copied any more).
    pub fn all_verified(&self) -> bool {
        self.inner.borrow().state.keys.iter().all(|k| k.phase >= Phase::Verified)
    }

    /// Whether backend `name` is still a write target of some key
    /// ([`Rebalance::write_targets`]): a backend removed from the group must
    /// not leave while it is.
    pub fn writes_to(&self, name: &str) -> bool {
        self.inner.borrow().state.keys.iter().any(|k| {
            let m = &k.key_move;
            match k.phase {
                Phase::Pending => m.old_owners.iter().any(|o| o == name),
                Phase::Cleaning | Phase::Cleaned => m.new_owners.iter().any(|o| o == name),
                _ => m.old_owners.iter().chain(&m.new_owners).any(|o| o == name),
            }
        })
    }

    /// The moving keys' old owners (united), the added owners (united), and
    /// the fewest old owners a key has: what a cover read of the group needs
    /// while keys are not verified (see `crate::proxy` moves).
    pub fn owner_summary(&self) -> (BTreeSet<String>, BTreeSet<String>, usize) {
        let inner = self.inner.borrow();
        let (mut old, mut added, mut fewest) = (BTreeSet::new(), BTreeSet::new(), usize::MAX);
        for k in &inner.state.keys {
            old.extend(k.key_move.old_owners.iter().cloned());
            added.extend(k.key_move.added());
            fewest = fewest.min(k.key_move.old_owners.len());
        }
        (old, added, fewest)
    }

    /// False when some key of measurement `measurement` (in database `db`,
    /// any database when `None`) may not be deleted now
    /// ([`Rebalance::delete_allowed`]).
    pub fn delete_allowed_measurement(&self, db: Option<&str>, measurement: &str) -> bool {
        self.inner.borrow().state.keys.iter().all(|k| {
            let key = &k.key_move.key;
            key.measurement != measurement
                || db.is_some_and(|db| key.db != db)
                || !matches!(k.phase, Phase::Schema | Phase::Copying)
        })
    }

    /// False while some key of the move is in `Schema` or `Copying`
    /// ([`Rebalance::delete_allowed`]): a `DELETE` or `DROP SERIES` of every
    /// measurement (no FROM, or FROM a regex) must wait.
    pub fn delete_allowed_all(&self) -> bool {
        self.inner.borrow().state.keys.iter().all(|k| !matches!(k.phase, Phase::Schema | Phase::Copying))
    }

    /// False while `key` is in `Schema` or `Copying`: a `DELETE`/`DROP
    /// SERIES`/`DROP MEASUREMENT` then could be undone on a new owner by a
    /// chunk read before it (the proxy should answer it with an error saying
    /// the key is moving).
    pub fn delete_allowed(&self, key: &KeyId) -> bool {
        !matches!(self.phase(key), Some(Phase::Schema | Phase::Copying))
    }

    /// The routing epoch: the host tags each request with the epoch in force
    /// when it was routed and answers [`Backends::requests_done_before`].
    pub fn routing_epoch(&self) -> u64 {
        self.inner.borrow().state.routing_epoch
    }

    /// True when backend `name` may leave the group: every key it owned
    /// before has all its new owners verified (it is then no old owner of a
    /// key still moving).
    pub fn removal_complete(&self, name: &str) -> bool {
        let inner = self.inner.borrow();
        inner
            .state
            .keys
            .iter()
            .filter(|k| k.key_move.old_owners.iter().any(|o| o == name))
            .all(|k| k.phase >= Phase::Verified)
    }

    /// Registers a live write of `key` (the record the write path sends to
    /// the key's owners: db, rp, precision, credentials and the key's lines,
    /// every point with a timestamp) before its first send, with no `.await`
    /// between routing the write and this call. `Some` while the key is in
    /// `Schema`, `Copying` or `Verifying` (a mismatch copies again): the host
    /// then reports the copy source's answer with
    /// [`Rebalance::source_answered`]. The record is kept in memory until the
    /// source took it and no chunk read needs it, so memory is bounded by the
    /// writes in flight to the source (plus those accepted during one chunk
    /// read and its appends).
    pub fn live_write(&self, key: &KeyId, record: &Record) -> Option<LiveToken> {
        let mut inner = self.inner.borrow_mut();
        let i = *inner.index.get(key)?;
        if !matches!(inner.state.keys[i].phase, Phase::Schema | Phase::Copying | Phase::Verifying) {
            return None;
        }
        let id = inner.next_token;
        inner.next_token += 1;
        inner.live[i].writes.insert(id, LiveWrite { record: record.clone(), status: LiveStatus::Open });
        Some(LiveToken { key: i, id })
    }

    /// The copy source's answer to a registered live write. Every token
    /// [`Rebalance::live_write`] gave must be answered once (a write future
    /// dropped before the source answered: `Failed`), else its record stays
    /// in memory until the key leaves `Verifying`.
    pub fn source_answered(&self, token: LiveToken, outcome: SourceOutcome) {
        let mut inner = self.inner.borrow_mut();
        let Some(live) = inner.live.get_mut(token.key) else { return };
        let in_window = live.in_window(token.id);
        let Some(w) = live.writes.get_mut(&token.id) else { return };
        w.status = match outcome {
            SourceOutcome::Acked | SourceOutcome::Failed => LiveStatus::Closed,
            SourceOutcome::Queued => LiveStatus::Queued,
        };
        if outcome == SourceOutcome::Failed && in_window {
            if let Some(w) = live.window.as_mut() {
                w.spoiled = true;
            }
        }
        if w.status == LiveStatus::Closed && !in_window {
            live.writes.remove(&token.id);
        }
    }

    /// Live writes kept in memory (all keys).
    pub fn live_writes_held(&self) -> usize {
        self.inner.borrow().live.iter().map(|l| l.writes.len()).sum()
    }

    /// Asks for the old copies to be deleted: every `Verified` key goes to
    /// `Cleaning` (its writes stop going to the owners that lost it) and
    /// [`Rebalance::step`] then drops it there. Keys not yet verified are
    /// left alone. Returns how many keys were scheduled; saves the state.
    pub async fn cleanup<S: Storage>(&self, storage: &S) -> Result<usize, RebalanceError> {
        let snapshot = {
            let mut inner = self.inner.borrow_mut();
            let epoch = inner.state.routing_epoch + 1;
            let mut n = 0;
            for k in inner.state.keys.iter_mut().filter(|k| k.phase == Phase::Verified) {
                k.phase = Phase::Cleaning;
                k.epoch = epoch;
                n += 1;
            }
            if n == 0 {
                return Ok(0);
            }
            inner.state.routing_epoch = epoch;
            for t in inner.next_at.iter_mut() {
                *t = 0;
            }
            (inner.state.clone(), n)
        };
        state::save(storage, &self.path, &snapshot.0).await?;
        Ok(snapshot.1)
    }

    /// Progress figures for `/health` and `/metrics`.
    pub fn progress(&self) -> Progress {
        let inner = self.inner.borrow();
        let keys = &inner.state.keys;
        let count = |f: &dyn Fn(&KeyState) -> bool| keys.iter().filter(|k| f(k)).count() as u64;
        Progress {
            group: inner.state.group.clone(),
            keys: keys.len() as u64,
            keys_moving: count(&|k| k.phase < Phase::Verified),
            keys_copied: count(&|k| k.phase >= Phase::Verifying),
            keys_verified: count(&|k| k.phase >= Phase::Verified),
            keys_cleaned: count(&|k| k.phase == Phase::Cleaned),
            points_copied: keys.iter().map(|k| k.points_copied).sum(),
            errors: keys.iter().map(|k| k.errors).sum(),
            last_error: keys.iter().rev().find_map(|k| k.last_error.clone()),
        }
    }

    /// Advances one key by one step (the one due first) and saves the state:
    /// at once when the key's phase changed (routing depends on it), else
    /// progress (cursors, counters) at most every `save_interval_ms` (a crash
    /// re-copies what was not saved, harmlessly; [`Rebalance::flush`] saves
    /// it). The rate limit holds for the whole group: after a chunk of P
    /// points no key copies for P / `points_per_s` seconds. Failures of backends are counted on the key and
    /// retried with [`backoff_ms`]; only a failure to save the state is
    /// returned (the step's work is redone after a restart, harmlessly).
    pub async fn step<B: Backends, S: Storage>(
        &self,
        backends: &B,
        storage: &S,
        now_ms: u64,
    ) -> Result<StepOutcome, RebalanceError> {
        let due = {
            let inner = self.inner.borrow();
            let next = (0..inner.state.keys.len()).filter_map(|i| inner.due_at(i).map(|t| (t, i))).min();
            match next {
                None => return Ok(StepOutcome::Idle),
                Some((at_ms, _)) if at_ms > now_ms => return Ok(StepOutcome::Again { at_ms }),
                Some((_, i)) => i,
            }
        };
        let phase = self.inner.borrow().state.keys[due].phase;
        let result = match phase {
            Phase::Pending => self.schema_step(backends, due).await,
            Phase::Schema => self.join_step(backends, due),
            Phase::Copying => self.copy_step(backends, due).await,
            Phase::Verifying => self.verify_step(backends, due).await,
            Phase::Cleaning => self.clean_step(backends, due, now_ms).await,
            Phase::Verified | Phase::Cleaned => Ok(Action::Wait(0)),
        };
        let save = {
            let mut inner = self.inner.borrow_mut();
            let changed_phase = inner.state.keys[due].phase != phase;
            let (delay, progressed) = match result {
                Ok(Action::Next(d)) => {
                    inner.consecutive_errors[due] = 0;
                    (d, true)
                }
                Ok(Action::Copied(d)) => {
                    inner.consecutive_errors[due] = 0;
                    inner.copy_gate_ms = now_ms.saturating_add(d);
                    (0, true)
                }
                Ok(Action::Wait(d)) => (d, false),
                Err(e) => {
                    inner.consecutive_errors[due] += 1;
                    let k = &mut inner.state.keys[due];
                    k.errors += 1;
                    k.last_error = Some(e);
                    (backoff_ms(inner.consecutive_errors[due]), true)
                }
            };
            inner.next_at[due] = now_ms.saturating_add(delay);
            if !matches!(inner.state.keys[due].phase, Phase::Schema | Phase::Copying | Phase::Verifying) {
                let live = &mut inner.live[due];
                live.writes.clear();
                live.window = None;
            }
            inner.dirty |= progressed;
            let interval_passed = inner
                .last_save_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= self.options.save_interval_ms);
            // A phase change is saved at once (it changes routing); progress
            // inside a phase (cursors, counts) at most every save_interval_ms.
            (inner.dirty && (changed_phase || interval_passed)).then(|| {
                inner.dirty = false;
                inner.last_save_ms = Some(now_ms);
                inner.state.clone()
            })
        };
        if let Some(snapshot) = save {
            if let Err(e) = state::save(storage, &self.path, &snapshot).await {
                self.inner.borrow_mut().dirty = true;
                return Err(e);
            }
        }
        Ok(self.outcome(now_ms))
    }

    /// Saves progress not yet in the file (the host calls it on shutdown).
    pub async fn flush<S: Storage>(&self, storage: &S) -> Result<(), RebalanceError> {
        let snapshot = {
            let mut inner = self.inner.borrow_mut();
            if !inner.dirty {
                return Ok(());
            }
            inner.dirty = false;
            inner.state.clone()
        };
        if let Err(e) = state::save(storage, &self.path, &snapshot).await {
            self.inner.borrow_mut().dirty = true;
            return Err(e);
        }
        Ok(())
    }

    fn outcome(&self, now_ms: u64) -> StepOutcome {
        let inner = self.inner.borrow();
        (0..inner.state.keys.len())
            .filter_map(|i| inner.due_at(i))
            .map(|t| t.max(now_ms))
            .min()
            .map_or(StepOutcome::Idle, |at_ms| StepOutcome::Again { at_ms })
    }

    fn key_move(&self, i: usize) -> KeyMove {
        self.inner.borrow().state.keys[i].key_move.clone()
    }

    fn condition(&self, key: &KeyId) -> Option<String> {
        let inner = self.inner.borrow();
        convert::tag_condition(inner.state.shard_tag.as_deref(), key.tag_value.as_deref())
    }

    fn credentials(&self) -> Credentials {
        self.options.credentials.clone()
    }

    /// Pending -> Schema: the source's retention policies, created on every
    /// added owner (sent, acknowledged); then writes go to old ∪ new.
    async fn schema_step<B: Backends>(&self, b: &B, i: usize) -> Result<Action, String> {
        let m = self.key_move(i);
        let added = m.added();
        if added.is_empty() {
            self.inner.borrow_mut().state.keys[i].phase = Phase::Verified;
            return Ok(Action::Next(0));
        }
        let source = m.source.clone().ok_or("no old owner to copy from: the key's history is lost")?;
        if !b.is_healthy(&source) || !caught_up(b, &added) {
            return Ok(Action::Wait(WAIT_MS));
        }
        let db = &m.key.db;
        let q = format!("SHOW RETENTION POLICIES ON {}", quote_ident(db));
        let answer = b.query(&source, db, &q).await.map_err(|e| format!("{source}: {q}: {e}"))?;
        let rps = retention_policies(&answer).map_err(|e| format!("{source}: {q}: {e}"))?;
        let mut statements = vec![format!("CREATE DATABASE {}", quote_ident(db))];
        for rp in &rps {
            let default = if rp.default { " DEFAULT" } else { "" };
            statements.push(if rp.name == "autogen" {
                format!(
                    "ALTER RETENTION POLICY {} ON {} DURATION {}s SHARD DURATION {}s{default}",
                    quote_ident(&rp.name),
                    quote_ident(db),
                    rp.duration_s,
                    rp.shard_duration_s
                )
            } else {
                format!(
                    "CREATE RETENTION POLICY {} ON {} DURATION {}s REPLICATION {} SHARD DURATION {}s{default}",
                    quote_ident(&rp.name),
                    quote_ident(db),
                    rp.duration_s,
                    rp.replica_n,
                    rp.shard_duration_s
                )
            });
        }
        for n in &added {
            for q in &statements {
                let record =
                    Record::Statement { db: Some(db.clone()), q: q.clone(), credentials: self.credentials() };
                b.send(n, &record).await.map_err(|e| format!("{n}: {q}: {e}"))?;
            }
        }
        let mut inner = self.inner.borrow_mut();
        let epoch = inner.state.routing_epoch + 1;
        inner.state.routing_epoch = epoch;
        let span = self.options.initial_span_ns.max(1);
        let k = &mut inner.state.keys[i];
        k.rps = rps
            .iter()
            .map(|rp| RpCopy {
                name: rp.name.clone(),
                range: RpRange::Unknown,
                cursor: 0,
                span_ns: span,
                done: false,
            })
            .collect();
        k.phase = Phase::Schema;
        k.epoch = epoch;
        Ok(Action::Next(0))
    }

    /// Schema -> Copying once no request routed before the key joined its new
    /// owners is still in flight.
    fn join_step<B: Backends>(&self, b: &B, i: usize) -> Result<Action, String> {
        let epoch = self.inner.borrow().state.keys[i].epoch;
        if !b.requests_done_before(epoch) {
            return Ok(Action::Wait(WAIT_MS));
        }
        self.inner.borrow_mut().state.keys[i].phase = Phase::Copying;
        Ok(Action::Next(0))
    }

    /// One step of the copy: the bounds of a retention policy, or one chunk.
    async fn copy_step<B: Backends>(&self, b: &B, i: usize) -> Result<Action, String> {
        let m = self.key_move(i);
        let source = m.source.clone().ok_or("no old owner to copy from")?;
        if !caught_up(b, std::slice::from_ref(&source)) || !caught_up(b, &m.added()) {
            return Ok(Action::Wait(WAIT_MS));
        }
        // The source's queue is empty: every live write it had queued is
        // readable there.
        {
            let mut inner = self.inner.borrow_mut();
            let live = &mut inner.live[i];
            for w in live.writes.values_mut().filter(|w| w.status == LiveStatus::Queued) {
                w.status = LiveStatus::Closed;
            }
            live.gc();
        }
        let next = {
            let inner = self.inner.borrow();
            inner.state.keys[i].rps.iter().position(|r| !r.done)
        };
        let Some(r) = next else {
            self.inner.borrow_mut().state.keys[i].phase = Phase::Verifying;
            return Ok(Action::Next(0));
        };
        let rp = self.inner.borrow().state.keys[i].rps[r].clone();
        let db = &m.key.db;
        let cond = self.condition(&m.key);
        let ask = |q: String| {
            let source = source.clone();
            async move { b.query(&source, db, &q).await.map_err(|e| format!("{source}: {q}: {e}")) }
        };
        let (first, end) = match rp.range {
            RpRange::Unknown => {
                let q = convert::bound_query(db, &rp.name, &m.key.measurement, cond.as_deref(), true);
                let first = convert::first_time(&ask(q).await?)?;
                let q = convert::bound_query(db, &rp.name, &m.key.measurement, cond.as_deref(), false);
                let last = convert::first_time(&ask(q).await?)?;
                let mut inner = self.inner.borrow_mut();
                let rc = &mut inner.state.keys[i].rps[r];
                match (first, last) {
                    (Some(first), Some(last)) if last >= first => {
                        rc.range = RpRange::Range { first, end: last.saturating_add(1) };
                        rc.cursor = first;
                    }
                    _ => {
                        rc.range = RpRange::Empty;
                        rc.done = true;
                    }
                }
                return Ok(Action::Next(0));
            }
            RpRange::Empty => {
                self.inner.borrow_mut().state.keys[i].rps[r].done = true;
                return Ok(Action::Next(0));
            }
            RpRange::Range { first, end } => (first, end),
        };
        if rp.cursor >= end {
            self.inner.borrow_mut().state.keys[i].rps[r].done = true;
            return Ok(Action::Next(0));
        }
        let q = convert::field_keys_query(db, &rp.name, &m.key.measurement);
        let types: BTreeMap<String, FieldType> = convert::field_types(&ask(q).await?)?;
        // Caught up again at the read itself (the field keys query awaited):
        // no await from here to the chunk query.
        if !caught_up(b, std::slice::from_ref(&source)) || !caught_up(b, &m.added()) {
            return Ok(Action::Wait(WAIT_MS));
        }
        let a = rp.cursor;
        let span = rp.span_ns.max(1);
        let b_end = a.saturating_add(span).min(end);
        self.begin_window(i);
        let result = self.copy_chunk(b, i, &m, &rp.name, cond.as_deref(), &types, a, b_end).await;
        let spoiled = self.end_window(i);
        let points = match result {
            Ok(Some(points)) => points,
            Ok(None) => return Ok(Action::Wait(0)),
            Err(ChunkError::Partial) => {
                let mut inner = self.inner.borrow_mut();
                let rc = &mut inner.state.keys[i].rps[r];
                rc.span_ns = (rc.span_ns / 4).max(1);
                return Err(format!(
                    "{source}: chunk {a}..{b_end} too large (partial answer); shorter chunks"
                ));
            }
            Err(ChunkError::Other(e)) => return Err(e),
        };
        if spoiled {
            return Ok(Action::Wait(0));
        }
        let mut inner = self.inner.borrow_mut();
        let k = &mut inner.state.keys[i];
        let rc = &mut k.rps[r];
        rc.cursor = b_end;
        rc.span_ns = convert::next_span_ns(
            b_end - a,
            points,
            self.options.points_per_chunk,
            end.saturating_sub(first),
        );
        if rc.cursor >= end {
            rc.done = true;
        }
        k.points_copied += points;
        Ok(Action::Copied(convert::rate_delay_ms(points, self.options.points_per_s)))
    }

    fn begin_window(&self, i: usize) {
        let mut inner = self.inner.borrow_mut();
        let start = inner.next_token;
        let live = &mut inner.live[i];
        let snapshot =
            live.writes.iter().filter(|(_, w)| w.status != LiveStatus::Closed).map(|(id, _)| *id).collect();
        live.window = Some(Window { start, snapshot, spoiled: false, pushed: BTreeSet::new() });
    }

    /// Closes the window (no await between the last re-send check and
    /// this); true when it was spoiled.
    fn end_window(&self, i: usize) -> bool {
        let mut inner = self.inner.borrow_mut();
        let live = &mut inner.live[i];
        let spoiled = live.window.take().is_some_and(|w| w.spoiled);
        live.gc();
        spoiled
    }

    /// The records of the window not yet re-sent, in acceptance order.
    fn window_records(&self, i: usize) -> Vec<(u64, Record)> {
        let inner = self.inner.borrow();
        let live = &inner.live[i];
        let Some(w) = live.window.as_ref() else { return Vec::new() };
        live.writes
            .iter()
            .filter(|(id, _)| (**id >= w.start || w.snapshot.contains(id)) && !w.pushed.contains(id))
            .map(|(id, lw)| (*id, lw.record.clone()))
            .collect()
    }

    fn window_spoiled(&self, i: usize) -> bool {
        self.inner.borrow().live[i].window.as_ref().is_some_and(|w| w.spoiled)
    }

    /// Reads chunk `a..end`, sends it to every added owner, then re-sends
    /// the window's live writes until none is left (see the module doc).
    /// `Ok(None)`: the window was spoiled before anything was sent.
    #[allow(clippy::too_many_arguments)]
    async fn copy_chunk<B: Backends>(
        &self,
        b: &B,
        i: usize,
        m: &KeyMove,
        rp: &str,
        cond: Option<&str>,
        types: &BTreeMap<String, FieldType>,
        a: i64,
        end: i64,
    ) -> Result<Option<u64>, ChunkError> {
        let source = m.source.as_deref().unwrap_or_default();
        let db = &m.key.db;
        let q = convert::chunk_query(db, rp, &m.key.measurement, cond, a, end);
        let answer =
            b.query(source, db, &q).await.map_err(|e| ChunkError::Other(format!("{source}: {q}: {e}")))?;
        let converted = match convert::chunk_to_line_protocol(&answer, types) {
            Ok(c) => c,
            Err(e) if e.starts_with("partial") => return Err(ChunkError::Partial),
            Err(e) => return Err(ChunkError::Other(format!("{source}: {q}: {e}"))),
        };
        if self.window_spoiled(i) {
            return Ok(None);
        }
        if converted.points == 0 {
            return Ok(Some(0));
        }
        let chunk = Record::Write {
            db: db.clone(),
            rp: Some(rp.to_string()),
            precision: None,
            credentials: self.credentials(),
            body: converted.body.into(),
        };
        let added = m.added();
        for n in &added {
            b.send(n, &chunk).await.map_err(|e| ChunkError::Other(format!("{n}: chunk {a}..{end}: {e}")))?;
        }
        loop {
            let batch = self.window_records(i);
            if batch.is_empty() {
                break;
            }
            for n in &added {
                for (_, record) in &batch {
                    b.send(n, record)
                        .await
                        .map_err(|e| ChunkError::Other(format!("{n}: live write: {e}")))?;
                }
            }
            let mut inner = self.inner.borrow_mut();
            if let Some(w) = inner.live[i].window.as_mut() {
                w.pushed.extend(batch.iter().map(|(id, _)| *id));
            }
        }
        Ok(Some(converted.points))
    }

    /// Verifying -> Verified when per-field counts are equal on the source
    /// and every added owner over each copied range; a mismatch is an error,
    /// and after `max_verify_mismatches` the key is copied again.
    async fn verify_step<B: Backends>(&self, b: &B, i: usize) -> Result<Action, String> {
        let m = self.key_move(i);
        let source = m.source.clone().ok_or("no old owner to copy from")?;
        let added = m.added();
        if !caught_up(b, std::slice::from_ref(&source)) || !caught_up(b, &added) {
            return Ok(Action::Wait(WAIT_MS));
        }
        let rps = self.inner.borrow().state.keys[i].rps.clone();
        let cond = self.condition(&m.key);
        let db = &m.key.db;
        let mut differences = Vec::new();
        for rp in &rps {
            let RpRange::Range { first, end } = rp.range else { continue };
            let q = convert::count_query(db, &rp.name, &m.key.measurement, cond.as_deref(), first, end);
            let counts = |n: String| {
                let q = q.clone();
                async move {
                    let answer = b.query(&n, db, &q).await.map_err(|e| format!("{n}: {q}: {e}"))?;
                    verify::field_counts(&answer).map_err(|e| format!("{n}: {q}: {e}"))
                }
            };
            let old = counts(source.clone()).await?;
            for n in &added {
                let new = counts(n.clone()).await?;
                if let Verification::Differs(diffs) = verify::compare_counts(&old, &new) {
                    let list: Vec<String> = diffs
                        .iter()
                        .map(|d| format!("{} {} on {source}, {} on {n}", d.field, d.old, d.new))
                        .collect();
                    differences.push(format!("rp {:?}: {}", rp.name, list.join("; ")));
                }
            }
        }
        let mut inner = self.inner.borrow_mut();
        let k = &mut inner.state.keys[i];
        if differences.is_empty() {
            k.phase = Phase::Verified;
            return Ok(Action::Next(0));
        }
        k.verify_mismatches += 1;
        if k.verify_mismatches >= self.options.max_verify_mismatches.max(1) {
            k.verify_mismatches = 0;
            k.phase = Phase::Copying;
            let span = self.options.initial_span_ns.max(1);
            for rp in &mut k.rps {
                if let RpRange::Range { first, .. } = rp.range {
                    rp.cursor = first;
                    rp.span_ns = span;
                    rp.done = false;
                }
            }
        }
        Err(format!("counts differ: {}", differences.join(" | ")))
    }

    /// Cleaning -> Cleaned: once no request routed before the key left its
    /// lost owners is in flight, the key is dropped there (sent to a caught-up
    /// one, through the write queue of one that is not).
    async fn clean_step<B: Backends>(&self, b: &B, i: usize, now_ms: u64) -> Result<Action, String> {
        let (m, epoch) = {
            let inner = self.inner.borrow();
            (inner.state.keys[i].key_move.clone(), inner.state.keys[i].epoch)
        };
        if !b.requests_done_before(epoch) {
            return Ok(Action::Wait(WAIT_MS));
        }
        let tag = self.inner.borrow().state.shard_tag.clone();
        let q = match convert::tag_condition(tag.as_deref(), m.key.tag_value.as_deref()) {
            Some(cond) => format!("DROP SERIES FROM {} WHERE {cond}", quote_ident(&m.key.measurement)),
            None => format!("DROP MEASUREMENT {}", quote_ident(&m.key.measurement)),
        };
        for n in m.lost() {
            let record = Record::Statement {
                db: Some(m.key.db.clone()),
                q: q.clone(),
                credentials: self.credentials(),
            };
            // Caught up: every write it was sent is applied, so the drop is
            // sent now and its queue stays free for live writes of its other
            // keys. Else (down, replaying) behind what its queue holds.
            if caught_up(b, std::slice::from_ref(&n)) {
                match b.send(&n, &record).await {
                    // Nothing of the key is left there (a wiped server).
                    Err(e) if e.contains("database not found") => {}
                    other => other.map_err(|e| format!("{n}: {q}: {e}"))?,
                }
            } else {
                b.push(&n, &record, now_ms).await.map_err(|e| format!("{n}: {e}"))?;
            }
        }
        self.inner.borrow_mut().state.keys[i].phase = Phase::Cleaned;
        Ok(Action::Next(0))
    }
}

/// True when every backend of `names` is healthy with an empty write queue:
/// a copy source whose answers show every write it acknowledged, or an added
/// owner that applies what the copy sends it now, after everything routed to
/// it before (see "Ordering argument").
fn caught_up<B: Backends>(b: &B, names: &[String]) -> bool {
    names.iter().all(|n| b.is_healthy(n) && b.queue_is_empty(n))
}

enum ChunkError {
    Partial,
    Other(String),
}

fn check_single_writer(group: &str, options: &RebalanceOptions) -> Result<(), RebalanceError> {
    if options.single_writer {
        Ok(())
    } else {
        Err(RebalanceError::NotSingleWriter(group.to_string()))
    }
}

/// One row of `SHOW RETENTION POLICIES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub name: String,
    pub duration_s: u64,
    pub shard_duration_s: u64,
    /// `replicaN` (InfluxDB 1.x keeps it as created; 1 when not shown):
    /// created the same on an added owner, so that one which already has
    /// the policy (the proxy sends schema statements to every backend of a
    /// group) takes the statement as a no-op rather than a conflict.
    pub replica_n: u64,
    pub default: bool,
}

/// The rows of a `SHOW RETENTION POLICIES ON "db"` answer (columns `name`,
/// `duration`, `shardGroupDuration`, `replicaN`, `default`).
pub fn retention_policies(result: &crate::results::StatementResult) -> Result<Vec<RetentionPolicy>, String> {
    let mut rps = Vec::new();
    for series in convert::series_of(result)? {
        let col =
            |name: &str| series.columns.iter().position(|c| c == name).ok_or(format!("no column {name}"));
        let (n, d, s, def) = (col("name")?, col("duration")?, col("shardGroupDuration")?, col("default")?);
        let replica_n = series.columns.iter().position(|c| c == "replicaN");
        for row in &series.values {
            let cell = |j: usize| row.get(j).map(|c| c.get()).ok_or("short row".to_string());
            let text = |j: usize| -> Result<String, String> {
                serde_json::from_str::<String>(cell(j)?).map_err(|e| e.to_string())
            };
            let dur = |j: usize| -> Result<u64, String> {
                let t = text(j)?;
                convert::go_duration_secs(&t).ok_or(format!("bad duration {t:?}"))
            };
            rps.push(RetentionPolicy {
                name: text(n)?,
                duration_s: dur(d)?,
                shard_duration_s: dur(s)?,
                replica_n: match replica_n {
                    Some(j) => cell(j)?
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad replicaN {}", cell(j).unwrap_or("")))?,
                    None => 1,
                },
                default: cell(def)?.trim() == "true",
            });
        }
    }
    Ok(rps)
}
