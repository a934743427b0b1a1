//! Opening a queue: "Recovery on open" in the module documentation.

use super::*;

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
        crate::sort::sort_unstable(&mut seqs);
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
        let (ack_seq, ack_offset) = ack.map_or((0, 0), |a| (a.seq, a.offset));
        // A temporary file of an interrupted version 1 acknowledgement.
        let _ = storage.remove(&format!("{ack_path}.tmp")).await;

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
        let (dead_letter_len, dead_letters, dead_letter_dirty) =
            scan_dead_letters(storage, &dir, &mut recovery).await?;

        let mut state = State {
            segments,
            head_offset,
            writable,
            next_seq,
            depth,
            peeked: Vec::new(),
            pending_append: None,
            garbage: Vec::new(),
            dead_letter_len,
            dead_letter_dirty,
            dead_letters,
            dropped: QueueDepth { records: 0, bytes: recovery.truncated_bytes },
            ack_generation: ack.and_then(|a| a.generation).unwrap_or(0),
            ack_slots: ack.is_some_and(|a| a.generation.is_some()),
            head_pushed_ms: None,
        };
        if !state.ack_slots {
            // Missing, version 1 or damaged: create the two-slot file now, while
            // there is space, so that later acknowledgements need none. If this
            // fails (disk already full) the next acknowledgement tries again.
            let (seq, offset) = state.head_pos();
            let generation = state.ack_generation + 1;
            if create_ack_file(storage, &ack_path, &encode_ack_file(generation, seq, offset)).await.is_ok() {
                state.ack_generation = generation;
                state.ack_slots = true;
            }
        }
        if let Some(front) = state.segments.front() {
            state.head_pushed_ms =
                read_pushed_ms(storage, &segment_path(&dir, front.seq), state.head_offset).await;
        }
        let queue = WriteQueue {
            dir,
            options,
            recovery,
            state: Mutex::new(state.clone()),
            appending: Mutex::new(()),
            group: Default::default(),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            dropped_records: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            head_pushed_ms: AtomicU64::new(u64::MAX),
            spare_buffers: Default::default(),
        };
        queue.publish(&state);
        Ok(queue)
    }
}
