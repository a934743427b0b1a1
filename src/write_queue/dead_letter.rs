//! The dead-letter file ("The dead-letter file" in the module documentation).

use super::*;

impl WriteQueue {
    /// Appends `record` with `reason` and `now_ms` to the dead-letter file, then
    /// acknowledges it. `record` is what [`WriteQueue::peek`] returned with `id`.
    ///
    /// An id already acknowledged is a no-op (no line is written). Errors as
    /// [`WriteQueue::ack`]. When the line cannot be written (a full disk, a
    /// quota, any I/O error, a torn tail that cannot be cut), as past
    /// `dead_letter_max_bytes`, the line is left out but the record is still
    /// removed and counted, so the dead-letter file cannot block the queue.
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
                Ok(()) => self.ack_locked(storage, &mut state, id.end, 1).await,
                Err(e) => Err(e),
            },
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        self.publish(&state);
        self.remove_garbage(storage, state).await;
        result
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
        // The dead-letter file is a record of what the backend refused, never
        // a reason to stop the queue: when its line cannot be written (disk
        // full, quota, an IO error, a torn tail that cannot be cut), the
        // record still leaves the queue and is counted.
        if state.dead_letter_dirty {
            state.dead_letter_dirty = storage.truncate(&path, state.dead_letter_len).await.is_err();
        }
        let line = dead_letter_line(record, reason, now_ms)?;
        let fits = state.dead_letter_len + line.len() as u64 <= self.options.dead_letter_max_bytes;
        if fits && !state.dead_letter_dirty {
            let len = line.len() as u64;
            match storage.append(&path, line).await {
                Ok(()) => state.dead_letter_len += len,
                Err(_) => {
                    state.dead_letter_dirty = storage.truncate(&path, state.dead_letter_len).await.is_err();
                }
            }
        }
        state.dead_letters += 1;
        Ok(())
    }
}

/// Counts the dead-letter file's lines and cuts a torn last line (step 5 of
/// "Recovery on open"). Returns (good length, lines, dirty: the cut failed).
pub(super) async fn scan_dead_letters<S: Storage>(
    storage: &S,
    dir: &str,
    recovery: &mut Recovery,
) -> Result<(u64, u64, bool), QueueError> {
    let dl_path = format!("{dir}/{DEAD_LETTER_FILE}");
    let mut dead_letter_len = storage.len(&dl_path).await.map_err(|e| io_err("cannot stat", &dl_path, e))?;
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

    Ok((dead_letter_len.unwrap_or(0), dead_letters, dead_letter_dirty))
}

#[derive(Serialize)]
pub(super) struct WriteLine<'a> {
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
pub(super) struct StatementLine<'a> {
    time_ms: u64,
    reason: &'a str,
    db: Option<&'a str>,
    q: &'a str,
}

/// One line of the dead-letter file, `\n` included.
pub(super) fn dead_letter_line(record: &Record, reason: &str, now_ms: u64) -> Result<Vec<u8>, QueueError> {
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
