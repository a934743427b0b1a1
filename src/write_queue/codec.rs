//! Encoding and decoding: record frames and payloads ("Segment files" in
//! the module documentation), the `ack` file, and the corruption rule.

use super::*;

/// Why the head record could not be read, and where the next one is.
pub(super) enum Frame {
    Valid {
        end: u64,
        record: Record,
        /// When it was pushed (ms since the epoch); `None` for version 1.
        pushed_ms: Option<u64>,
    },
    /// `skip_to`: the end of this record when only it is damaged; `None` when
    /// the rest of the segment cannot be read.
    Damaged { skip_to: Option<u64> },
}

/// The version 1 `ack` file (24 bytes, replaced atomically); written only by
/// tests now, read on open for upgrade.
#[cfg(test)]
pub(super) fn encode_ack_v1(seq: u64, offset: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(ACK_V1_BYTES);
    out.extend_from_slice(ACK_V1_MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// One slot of the version 2 `ack` file: generation, then the position.
pub(super) fn encode_ack_slot(generation: u64, seq: u64, offset: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(ACK_SLOT_BYTES);
    out.extend_from_slice(ACK_MAGIC);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Byte offset of the slot that generation `generation` is written to.
pub(super) fn ack_slot_offset(generation: u64) -> u64 {
    (generation % 2) * ACK_SLOT_BYTES as u64
}

/// A whole version 2 `ack` file holding `generation` in its slot (the other
/// slot zero, i.e. invalid).
pub(super) fn encode_ack_file(generation: u64, seq: u64, offset: u64) -> Vec<u8> {
    let mut out = vec![0; 2 * ACK_SLOT_BYTES];
    let at = ack_slot_offset(generation) as usize;
    out[at..at + ACK_SLOT_BYTES].copy_from_slice(&encode_ack_slot(generation, seq, offset));
    out
}

/// (generation, segment, offset) of a valid slot.
fn decode_ack_slot(slot: &[u8]) -> Option<(u64, u64, u64)> {
    if slot.len() != ACK_SLOT_BYTES || &slot[..4] != ACK_MAGIC {
        return None;
    }
    if crc32fast::hash(&slot[..28]) != u32_at(slot, 28)? {
        return None;
    }
    Some((u64_at(slot, 4)?, u64_at(slot, 12)?, u64_at(slot, 20)?))
}

/// What an `ack` file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AckRecord {
    pub(super) seq: u64,
    pub(super) offset: u64,
    /// The generation of the slot read; `None` for a version 1 file (to be
    /// upgraded).
    pub(super) generation: Option<u64>,
}

/// Reads either format; `None` when damaged (no valid slot).
pub(super) fn decode_ack(bytes: &[u8]) -> Option<AckRecord> {
    if bytes.len() == ACK_V1_BYTES && &bytes[..4] == ACK_V1_MAGIC {
        if crc32fast::hash(&bytes[..20]) != u32_at(bytes, 20)? {
            return None;
        }
        return Some(AckRecord { seq: u64_at(bytes, 4)?, offset: u64_at(bytes, 12)?, generation: None });
    }
    if bytes.len() != 2 * ACK_SLOT_BYTES {
        return None;
    }
    let slots = [&bytes[..ACK_SLOT_BYTES], &bytes[ACK_SLOT_BYTES..]];
    slots
        .iter()
        .filter_map(|slot| decode_ack_slot(slot))
        .max_by_key(|(generation, ..)| *generation)
        .map(|(generation, seq, offset)| AckRecord { seq, offset, generation: Some(generation) })
}

/// Does a write body need a `\n` added at its end?
pub(super) fn needs_newline(body: &[u8]) -> bool {
    !body.is_empty() && !body.ends_with(b"\n")
}

pub(super) fn opt_len(s: &Option<String>) -> u64 {
    1 + s.as_ref().map_or(0, |s| 4 + s.len() as u64)
}

pub(super) fn credentials_len(c: &Credentials) -> u64 {
    opt_len(&c.username) + opt_len(&c.password) + opt_len(&c.authorization)
}

/// Length of the encoded payload (version 2, see "Segment files").
pub(super) fn payload_len(record: &Record) -> u64 {
    PUSHED_MS_BYTES
        + match record {
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

pub(super) fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), QueueError> {
    let len = u32::try_from(len)
        .map_err(|_| QueueError::Io(format!("record field of {len} bytes is too large")))?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

pub(super) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), QueueError> {
    put_len(out, bytes.len())?;
    out.extend_from_slice(bytes);
    Ok(())
}

pub(super) fn put_opt(out: &mut Vec<u8>, s: &Option<String>) -> Result<(), QueueError> {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_bytes(out, s.as_bytes())?;
        }
    }
    Ok(())
}

pub(super) fn put_credentials(out: &mut Vec<u8>, c: &Credentials) -> Result<(), QueueError> {
    put_opt(out, &c.username)?;
    put_opt(out, &c.password)?;
    put_opt(out, &c.authorization)
}

/// The whole frame: header then payload, in one buffer (one append).
pub(super) fn encode_frame(record: &Record, pushed_ms: u64) -> Result<Vec<u8>, QueueError> {
    let total = usize::try_from(WriteQueue::record_bytes(record))
        .map_err(|_| QueueError::Io("record too large".to_string()))?;
    let mut out = Vec::with_capacity(total);
    out.resize(HEADER, 0);
    out.extend_from_slice(&pushed_ms.to_le_bytes());
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

/// (payload length, CRC, version) when the header is complete with the
/// right magic and a known version (1 or 2).
pub(super) fn parse_header(header: &[u8]) -> Option<(u64, u32, u8)> {
    if header.len() < HEADER || header[0] != RECORD_MAGIC {
        return None;
    }
    let version = header[1];
    if version != RECORD_VERSION_1 && version != RECORD_VERSION {
        return None;
    }
    let len = u32::from_le_bytes(header[2..6].try_into().ok()?);
    let crc = u32::from_le_bytes(header[6..10].try_into().ok()?);
    Some((u64::from(len), crc, version))
}

/// Reads the payload encoding; `None` on any mismatch.
pub(super) struct Decoder<'a> {
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

/// (push time, record) of a payload of format `version`.
pub(super) fn decode_payload(payload: &[u8], version: u8) -> Option<(Option<u64>, Record)> {
    let (pushed_ms, mut record, range) = decode_payload_parts(payload, version)?;
    if let Record::Write { body, .. } = &mut record {
        *body = payload.get(range)?.into();
    }
    Some((pushed_ms, record))
}

/// (push time, record, where a write's body lies in `payload`) of a payload
/// of format `version`; the record's body is left empty (not copied).
pub(super) fn decode_payload_parts(
    payload: &[u8],
    version: u8,
) -> Option<(Option<u64>, Record, std::ops::Range<usize>)> {
    let mut d = Decoder { rest: payload };
    let pushed_ms = match version {
        RECORD_VERSION_1 => None,
        _ => {
            let t = u64_at(d.rest, 0)?;
            d.rest = &d.rest[8..];
            Some(t)
        }
    };
    let mut range = 0..0;
    let record = match d.u8()? {
        KIND_WRITE => {
            let (db, rp, precision, credentials) = (d.string()?, d.opt()?, d.opt()?, d.credentials()?);
            let body = d.bytes()?;
            let start = payload.len() - d.rest.len() - body.len();
            range = start..start + body.len();
            Record::Write { db, rp, precision, credentials, body: SharedBytes::default() }
        }
        KIND_STATEMENT => Record::Statement { db: d.opt()?, q: d.string()?, credentials: d.credentials()? },
        _ => return None,
    };
    d.rest.is_empty().then_some((pushed_ms, record, range))
}

/// The record whose payload is `payload`, if its CRC matches and it decodes.
pub(super) fn check_payload(payload: &[u8], crc: u32, version: u8) -> Option<(Option<u64>, Record)> {
    if crc32fast::hash(payload) != crc {
        return None;
    }
    decode_payload(payload, version)
}

/// Validates the frame at `offset` of a segment whose good bytes are `seg`,
/// applying the corruption rule of the module documentation.
pub(super) fn check_frame(seg: &[u8], offset: u64) -> Frame {
    let seg_len = seg.len() as u64;
    let start = offset.min(seg_len) as usize;
    let Some((len, crc, version)) = parse_header(&seg[start..]) else {
        return Frame::Damaged { skip_to: None };
    };
    let end = offset + RECORD_HEADER_BYTES + len;
    if end > seg_len {
        return Frame::Damaged { skip_to: None };
    }
    let payload = &seg[start + HEADER..end as usize];
    if let Some((pushed_ms, record)) = check_payload(payload, crc, version) {
        return Frame::Valid { end, record, pushed_ms };
    }
    let next_is_valid = end == seg_len || check_frame_strict(seg, end).is_some();
    Frame::Damaged { skip_to: next_is_valid.then_some(end) }
}

/// The end of the valid frame at `offset`, if there is one.
pub(super) fn check_frame_strict(seg: &[u8], offset: u64) -> Option<u64> {
    let start = usize::try_from(offset).ok()?;
    let (len, crc, version) = parse_header(seg.get(start..)?)?;
    let end = offset + RECORD_HEADER_BYTES + len;
    let payload = seg.get(start + HEADER..usize::try_from(end).ok()?)?;
    check_payload(payload, crc, version).map(|_| end)
}

/// Reads the frame at `offset` of segment `path` whose good length is
/// `seg_len`: header, then payload. On any damage, reads the whole segment
/// once to decide how much to skip.
pub(super) async fn read_frame<S: Storage>(
    storage: &S,
    path: &str,
    offset: u64,
    seg_len: u64,
) -> Result<Frame, QueueError> {
    let header = storage.read_at(path, offset, HEADER).await.map_err(|e| io_err("cannot read", path, e))?;
    if let Some((len, crc, version)) = parse_header(&header) {
        let end = offset + RECORD_HEADER_BYTES + len;
        if end <= seg_len {
            let len =
                usize::try_from(len).map_err(|_| QueueError::Io(format!("{path}: record too large")))?;
            let payload = storage
                .read_at(path, offset + RECORD_HEADER_BYTES, len)
                .await
                .map_err(|e| io_err("cannot read", path, e))?;
            if payload.len() == len {
                if let Some((pushed_ms, record)) = check_payload(&payload, crc, version) {
                    return Ok(Frame::Valid { end, record, pushed_ms });
                }
            }
        }
    }
    let mut seg = storage.read(path).await.map_err(|e| io_err("cannot read", path, e))?;
    seg.truncate(usize::try_from(seg_len).unwrap_or(usize::MAX));
    Ok(check_frame(&seg, offset))
}

/// The push time of the frame at `offset` of segment `path` (a version 2
/// header and the first 8 payload bytes; no CRC check: only for display).
/// `None` for version 1 or when unreadable.
pub(super) async fn read_pushed_ms<S: Storage>(storage: &S, path: &str, offset: u64) -> Option<u64> {
    let bytes = storage.read_at(path, offset, HEADER + 8).await.ok()?;
    match parse_header(&bytes)? {
        (len, _, RECORD_VERSION) if len >= PUSHED_MS_BYTES => u64_at(&bytes, HEADER),
        _ => None,
    }
}

/// Writes a whole version 2 `ack` file: atomically when there is room for a
/// new file; else (disk full) in place over the existing file (version 1 or
/// damaged), which needs no new space on a file system with blocks. A crash
/// during that in-place write leaves a damaged file: replay then restarts at
/// the oldest record (duplicates, never loss).
pub(super) async fn create_ack_file<S: Storage>(
    storage: &S,
    path: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    match storage.write_atomic(path, bytes).await {
        Ok(()) => Ok(()),
        Err(e) => storage.write_at(path, 0, bytes).await.map_err(|_| e),
    }
}
