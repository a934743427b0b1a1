//! The write queue's files, behind a trait so that the core performs no IO.
//!
//! Paths are relative to the host's data directory (`data_dir` in the config;
//! inside wasmtime, the preopened directory), with `/` as separator. The native
//! host implements [`Storage`] with async-fs (`crate::native::storage`), the WASI
//! host with `std::fs` on a preopened directory, and tests with [`MemStorage`].
//!
//! Durability contract: when [`Storage::append`] or [`Storage::write_atomic`]
//! returns `Ok`, the data survives a crash of the process and of the machine
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
    /// before returning.
    async fn append(&self, path: &str, data: &[u8]) -> io::Result<()>;
    /// Replaces the file's contents with `data` atomically (write a temporary
    /// file, sync, rename) and durably.
    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes, durably.
    async fn truncate(&self, path: &str, len: u64) -> io::Result<()>;
    /// Removes the file; removing a missing file is `Ok`.
    async fn remove(&self, path: &str) -> io::Result<()>;
    /// The file's length in bytes, `None` if it does not exist.
    async fn len(&self, path: &str) -> io::Result<Option<u64>>;
}

/// An in-memory [`Storage`] for tests. Cloning it is cheap and shares nothing:
/// use [`MemStorage::snapshot`] / [`MemStorage::from_snapshot`] to model a restart,
/// and [`MemStorage::fail_appends`] to model a full or broken disk.
#[derive(Debug, Default)]
pub struct MemStorage {
    files: RefCell<BTreeMap<String, Vec<u8>>>,
    fail_appends: std::cell::Cell<bool>,
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
        MemStorage { files: RefCell::new(files), fail_appends: Default::default() }
    }

    /// From now on, `append` and `write_atomic` fail with an IO error (disk full).
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

    async fn append(&self, path: &str, data: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        self.files.borrow_mut().entry(path.to_string()).or_default().extend_from_slice(data);
        Ok(())
    }

    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        self.files.borrow_mut().insert(path.to_string(), data.to_vec());
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
