//! The write queue's files, behind a trait so that the core performs no IO.
//!
//! Paths are relative to the host's data directory (`data_dir` in the config;
//! inside wasmtime, the preopened directory), with `/` as separator. Both hosts
//! implement [`Storage`] with the same `std::fs` rules (`crate::host_fs`,
//! feature `host-fs`): the native host on smol's blocking pool, the WASI host
//! directly on a preopened directory; tests use [`MemStorage`].
//!
//! Durability contract: when [`Storage::append`], [`Storage::write_atomic`],
//! [`Storage::write_at`] or [`Storage::truncate`] returns `Ok`, the data survives a crash of the process and of the machine
//! (the host has called `fsync`/`sync_data`). The write queue relies on this to
//! answer a write 204 only when it is kept.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;

/// Files of the write queue. All methods are relative to the data directory.
#[allow(async_fn_in_trait)]
pub trait Storage {
    /// Creates directory `dir` (and parents) if missing, then lists the names
    /// (not paths) of the files in it, sorted.
    async fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Reads the whole file; `ErrorKind::NotFound` if it does not exist.
    async fn read(&self, path: &str) -> io::Result<Vec<u8>>;
    /// Reads up to `len` bytes at byte `offset` (fewer at the end of the file).
    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Appends `data` (creating the file if missing) and makes it durable
    /// before returning. Takes the bytes by value so that a host which
    /// writes on another thread (the native blocking pool) moves a queued
    /// record's frame there instead of copying it.
    async fn append(&self, path: &str, data: Vec<u8>) -> io::Result<()>;
    /// Replaces the file's contents with `data` atomically (write a temporary
    /// file, sync, rename) and durably.
    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()>;
    /// Overwrites `data.len()` bytes at byte `offset` of the existing file
    /// `path` in place, durably (fsynced when this returns `Ok`). Bytes that
    /// already exist need no new disk space, so this works on a full disk;
    /// writing past the end extends the file (and may then fail with
    /// `ErrorKind::StorageFull`). `ErrorKind::NotFound` if the file is missing.
    /// A crash during the call may leave any mix of old and new bytes in the
    /// range (callers checksum what they write).
    async fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes, durably.
    async fn truncate(&self, path: &str, len: u64) -> io::Result<()>;
    /// Removes the file; removing a missing file is `Ok`.
    async fn remove(&self, path: &str) -> io::Result<()>;
    /// The file's length in bytes, `None` if it does not exist.
    async fn len(&self, path: &str) -> io::Result<Option<u64>>;
}

/// An in-memory [`Storage`] for tests. Use [`MemStorage::snapshot`] /
/// [`MemStorage::from_snapshot`] to model a restart,
/// [`MemStorage::fail_appends`] to model a broken disk and
/// [`MemStorage::set_capacity`] to model a full one (ENOSPC).
#[derive(Debug, Default)]
pub struct MemStorage {
    files: RefCell<BTreeMap<String, Vec<u8>>>,
    fail_appends: std::cell::Cell<bool>,
    capacity: std::cell::Cell<Option<u64>>,
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Every file and its bytes, as a crash would leave them.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.files.borrow().clone()
    }

    /// A storage holding exactly these files (a restart after a crash).
    pub fn from_snapshot(files: BTreeMap<String, Vec<u8>>) -> MemStorage {
        MemStorage { files: RefCell::new(files), ..MemStorage::default() }
    }

    /// Models a disk of `capacity` bytes (the sum of all file lengths; `None`:
    /// unlimited), failing as a file system does when it is full
    /// (`ErrorKind::StorageFull`, ENOSPC): `append` creates a missing file
    /// (an inode needs no data space), writes what fits and then fails, so a
    /// partial record can stay; `write_atomic` (a new temporary file) fails
    /// unless all of it fits; `write_at` succeeds over existing bytes and fails
    /// when it would extend the file past the capacity; `truncate` and
    /// `remove` free space.
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.capacity.set(capacity);
    }

    /// Bytes of all files together.
    pub fn used_bytes(&self) -> u64 {
        self.files.borrow().values().map(|v| v.len() as u64).sum()
    }

    /// Bytes that still fit (`u64::MAX` when unlimited).
    fn free_bytes(&self) -> u64 {
        match self.capacity.get() {
            Some(c) => c.saturating_sub(self.used_bytes()),
            None => u64::MAX,
        }
    }

    /// From now on, `append`, `write_atomic` and `write_at` fail with an IO
    /// error (a broken disk; see [`MemStorage::set_capacity`] for a full one).
    pub fn fail_appends(&self, fail: bool) {
        self.fail_appends.set(fail);
    }

    /// Direct access for crash tests (e.g. to tear the last record).
    pub fn with_files<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> R) -> R {
        f(&mut self.files.borrow_mut())
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.fail_appends.get() {
            Err(io::Error::other("simulated disk failure"))
        } else {
            Ok(())
        }
    }
}

fn storage_full(path: &str) -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, format!("{path}: No space left on device (simulated)"))
}

fn not_found(path: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{path}: no such file"))
}

impl Storage for MemStorage {
    async fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        Ok(self
            .files
            .borrow()
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect())
    }

    async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        self.files.borrow().get(path).cloned().ok_or_else(|| not_found(path))
    }

    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let files = self.files.borrow();
        let data = files.get(path).ok_or_else(|| not_found(path))?;
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    }

    async fn append(&self, path: &str, data: Vec<u8>) -> io::Result<()> {
        self.check_writable()?;
        let fits = usize::try_from(self.free_bytes()).unwrap_or(usize::MAX).min(data.len());
        self.files.borrow_mut().entry(path.to_string()).or_default().extend_from_slice(&data[..fits]);
        if fits < data.len() {
            return Err(storage_full(path));
        }
        Ok(())
    }

    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        if (data.len() as u64) > self.free_bytes() {
            return Err(storage_full(&format!("{path}.tmp")));
        }
        self.files.borrow_mut().insert(path.to_string(), data.to_vec());
        Ok(())
    }

    async fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        let free = self.free_bytes();
        let mut files = self.files.borrow_mut();
        let file = files.get_mut(path).ok_or_else(|| not_found(path))?;
        let start = usize::try_from(offset).map_err(|_| storage_full(path))?;
        let end = start.checked_add(data.len()).ok_or_else(|| storage_full(path))?;
        if end.saturating_sub(file.len()) as u64 > free {
            return Err(storage_full(path));
        }
        if file.len() < end {
            file.resize(end, 0);
        }
        file[start..end].copy_from_slice(data);
        Ok(())
    }

    async fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        let mut files = self.files.borrow_mut();
        let data = files.get_mut(path).ok_or_else(|| not_found(path))?;
        data.truncate(len as usize);
        Ok(())
    }

    async fn remove(&self, path: &str) -> io::Result<()> {
        self.files.borrow_mut().remove(path);
        Ok(())
    }

    async fn len(&self, path: &str) -> io::Result<Option<u64>> {
        Ok(self.files.borrow().get(path).map(|d| d.len() as u64))
    }
}
