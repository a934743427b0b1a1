//! The durable transfer state: one checksummed file per group, replaced
//! atomically.

use super::plan::KeyMove;
use super::RebalanceError;
use crate::storage::Storage;
use serde::{Deserialize, Serialize};
use std::io;

/// `IRB1`: the file's magic.
const MAGIC: &[u8; 4] = b"IRB1";
/// Format version written (and the only one read).
pub const STATE_VERSION: u8 = 1;
const HEADER: usize = 13;

/// Where a moving key is; see the module documentation's state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing done yet. Writes and reads: old owners.
    Pending,
    /// Databases and retention policies queued on the new owners; writes go
    /// to old and new owners; waiting for requests routed before that and
    /// for a caught-up copy source.
    Schema,
    /// History being copied, chunk by chunk. Writes: old and new; reads: old.
    Copying,
    /// Copy done; comparing counts. Writes: old and new; reads: old.
    Verifying,
    /// Counts equal. Writes: old and new; reads: new.
    Verified,
    /// `cleanup` asked: writes go to the new owners only; the key is being
    /// dropped on the owners that lost it.
    Cleaning,
    /// Dropped on the owners that lost it. Writes and reads: new owners.
    Cleaned,
}

/// How far one retention policy of a key is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpRange {
    /// Bounds not read yet.
    Unknown,
    /// The source holds no point of the key in this retention policy.
    Empty,
    /// Earliest point's time and one past the latest's (ns since the epoch),
    /// read when the copy of this retention policy started.
    Range { first: i64, end: i64 },
}

/// The copy of one retention policy of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpCopy {
    pub name: String,
    pub range: RpRange,
    /// Everything before this time (ns) is copied.
    pub cursor: i64,
    /// The next chunk's length (ns).
    pub span_ns: i64,
    pub done: bool,
}

/// One moving key's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    #[serde(rename = "move")]
    pub key_move: KeyMove,
    pub phase: Phase,
    /// The source's retention policies (filled by the schema step).
    pub rps: Vec<RpCopy>,
    pub points_copied: u64,
    /// Failed steps (queries, pushes, count mismatches), retried with backoff.
    pub errors: u64,
    /// Count mismatches since the copy last (re)started.
    pub verify_mismatches: u32,
    /// Routing epoch at which the key's write targets last changed.
    pub epoch: u64,
    pub last_error: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferState {
    pub group: String,
    pub shard_tag: Option<String>,
    /// Bumped whenever some key's write targets change.
    pub routing_epoch: u64,
    pub keys: Vec<KeyState>,
}

/// The state file of group `group`: `rebalance/<group>.state`, the name
/// hex-encoded unless it is only ASCII letters, digits, `-` and `_`.
pub fn state_path(group: &str) -> String {
    let plain =
        !group.is_empty() && group.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        format!("rebalance/{group}.state")
    } else {
        let hex: String = group.bytes().map(|b| format!("{b:02x}")).collect();
        format!("rebalance/x{hex}.state")
    }
}

/// `magic "IRB1" | version u8 | payload length u32 LE | CRC-32 (crc32fast,
/// IEEE) of the payload u32 LE | payload (JSON of [`TransferState`])`.
pub fn encode(state: &TransferState) -> Result<Vec<u8>, RebalanceError> {
    let payload = serde_json::to_vec(state).map_err(|e| RebalanceError::Storage(e.to_string()))?;
    let len = u32::try_from(payload.len()).map_err(|_| RebalanceError::Storage("state too large".into()))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(STATE_VERSION);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The state in `bytes`; [`RebalanceError::Damaged`] when the magic,
/// version, length, checksum or JSON is wrong.
pub fn decode(path: &str, bytes: &[u8]) -> Result<TransferState, RebalanceError> {
    let damaged = |why: &str| RebalanceError::Damaged(format!("{path}: {why}"));
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Err(damaged("not a transfer state file"));
    }
    if bytes[4] != STATE_VERSION {
        return Err(damaged(&format!("unknown version {}", bytes[4])));
    }
    let len = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let crc = u32::from_le_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]);
    let payload = &bytes[HEADER..];
    if payload.len() != len {
        return Err(damaged("wrong length"));
    }
    if crc32fast::hash(payload) != crc {
        return Err(damaged("checksum mismatch"));
    }
    serde_json::from_slice(payload).map_err(|e| damaged(&e.to_string()))
}

/// Writes the state durably and atomically ([`Storage::write_atomic`]: a
/// crash leaves the old file or the new one, never a mix).
pub async fn save<S: Storage>(storage: &S, path: &str, state: &TransferState) -> Result<(), RebalanceError> {
    let bytes = encode(state)?;
    storage.write_atomic(path, &bytes).await.map_err(|e| RebalanceError::Storage(format!("{path}: {e}")))
}

/// The state saved at `path`, `None` when there is none.
pub async fn load<S: Storage>(storage: &S, path: &str) -> Result<Option<TransferState>, RebalanceError> {
    match storage.read(path).await {
        Ok(bytes) => decode(path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RebalanceError::Storage(format!("{path}: {e}"))),
    }
}
