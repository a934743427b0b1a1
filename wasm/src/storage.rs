//! [`Storage`] for the WASI host: `std::fs` on the data directory
//! (inside wasmtime, the directory preopened with `--dir HOST::/data`).
//!
//! `std::fs` is synchronous and WASI 0.2 has no threads, so each call blocks
//! the (single) executor for the time of the file operation: acceptable for
//! the write queue's appends and reads, which are small and sequential.
//!
//! Durability (the contract in [`influx_proxy::storage`]): `append`,
//! `write_atomic` and `truncate` call `sync_all` on the file (wasmtime maps it
//! to `fsync` on the host) before returning, and a file they create or rename
//! also has its directory synced so that the new name survives a crash.
//! `list` creates missing directories one level at a time, syncing the parent
//! of each; `remove` syncs the directory after removing the file.

use influx_proxy::storage::Storage;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

/// Files under one root directory.
#[derive(Debug, Clone)]
pub struct DirStorage {
    root: PathBuf,
}

impl DirStorage {
    /// Storage rooted at `root` (created, with its missing parents, if missing).
    pub fn open(root: impl Into<PathBuf>) -> io::Result<DirStorage> {
        let root = root.into();
        create_dir_durable(&root)?;
        Ok(DirStorage { root })
    }

    /// `root/rel`; refuses absolute paths and `..` so that nothing outside the
    /// data directory is touched whatever a backend is named.
    fn path(&self, rel: &str) -> io::Result<PathBuf> {
        let rel = Path::new(rel);
        if rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
            Ok(self.root.join(rel))
        } else {
            Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("{}: not a plain relative path", rel.display()),
            ))
        }
    }
}

/// Syncs the directory holding `path`, so that a new, renamed or removed
/// entry is kept that way.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// Creates `dir` and its missing parents one level at a time, outermost
/// first, each made durable by a sync of its parent directory (POSIX
/// `fsync(2)`: the directory entry needs an fsync of the directory too).
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = vec![dir];
    let mut at = dir.parent();
    while let Some(p) = at.filter(|p| !p.as_os_str().is_empty()) {
        if p.is_dir() {
            break;
        }
        missing.push(p);
        at = p.parent();
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => sync_parent(d)?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", d.display()))),
        }
    }
    Ok(())
}

impl Storage for DirStorage {
    async fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let dir = self.path(dir)?;
        create_dir_durable(&dir)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(path)?)
    }

    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = File::open(self.path(path)?)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut data = Vec::with_capacity(len.min(1 << 20));
        file.take(len as u64).read_to_end(&mut data)?;
        Ok(data)
    }

    async fn append(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let path = self.path(path)?;
        let existed = path.exists();
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.write_all(data)?;
        file.sync_all()?;
        if !existed {
            sync_parent(&path)?;
        }
        Ok(())
    }

    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let path = self.path(path)?;
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &path)?;
        sync_parent(&path)
    }

    async fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.path(path)?)?;
        file.set_len(len)?;
        file.sync_all()
    }

    async fn remove(&self, path: &str) -> io::Result<()> {
        let path = self.path(path)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_parent(&path),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn len(&self, path: &str) -> io::Result<Option<u64>> {
        match fs::metadata(self.path(path)?) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    //! These run natively and, with `cargo test --target wasm32-wasip2`, inside
    //! wasmtime (see `.cargo/config.toml`), where `sync_all` and the directory
    //! sync go through WASI.
    use super::*;
    use futures_lite::future::block_on;

    /// A fresh directory under `$TMPDIR` or `/tmp` (preopened by the test
    /// runner inside wasmtime, where `std::env::temp_dir` panics).
    fn scratch(name: &str) -> DirStorage {
        let tmp = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = Path::new(&tmp).join(format!("ipx-wasm-storage-{nanos}-{name}"));
        let _ = fs::remove_dir_all(&dir);
        DirStorage::open(dir).unwrap()
    }

    #[test]
    fn append_read_truncate_remove() {
        let s = scratch("basic");
        block_on(async {
            assert_eq!(s.list("queue/a").await.unwrap(), Vec::<String>::new());
            s.append("queue/a/0001.log", b"hello ").await.unwrap();
            s.append("queue/a/0001.log", b"world").await.unwrap();
            assert_eq!(s.read("queue/a/0001.log").await.unwrap(), b"hello world");
            assert_eq!(s.read_at("queue/a/0001.log", 6, 100).await.unwrap(), b"world");
            assert_eq!(s.read_at("queue/a/0001.log", 2, 3).await.unwrap(), b"llo");
            assert_eq!(s.len("queue/a/0001.log").await.unwrap(), Some(11));
            s.truncate("queue/a/0001.log", 5).await.unwrap();
            assert_eq!(s.read("queue/a/0001.log").await.unwrap(), b"hello");
            s.write_atomic("queue/a/state", b"42").await.unwrap();
            s.write_atomic("queue/a/state", b"43").await.unwrap();
            assert_eq!(s.list("queue/a").await.unwrap(), vec!["0001.log".to_string(), "state".to_string()]);
            assert_eq!(s.read("queue/a/state").await.unwrap(), b"43");
            s.remove("queue/a/0001.log").await.unwrap();
            s.remove("queue/a/0001.log").await.unwrap();
            assert_eq!(s.len("queue/a/0001.log").await.unwrap(), None);
            assert_eq!(s.read("queue/a/0001.log").await.unwrap_err().kind(), ErrorKind::NotFound);
        });
        let _ = fs::remove_dir_all(&s.root);
    }

    #[test]
    fn list_creates_nested_directories() {
        let s = scratch("nested");
        block_on(async {
            assert_eq!(s.list("queue/b/c/d").await.unwrap(), Vec::<String>::new());
            assert!(s.root.join("queue/b/c/d").is_dir());
            s.append("queue/b/c/d/0001.log", b"x").await.unwrap();
            // Existing directories are left as they are, files and all.
            assert_eq!(s.list("queue/b/c/d").await.unwrap(), vec!["0001.log".to_string()]);
            assert_eq!(s.list("queue/b").await.unwrap(), Vec::<String>::new());
            assert_eq!(s.list("queue/b/e").await.unwrap(), Vec::<String>::new());
            assert!(s.root.join("queue/b/e").is_dir());
        });
        let _ = fs::remove_dir_all(&s.root);
    }

    #[test]
    fn refuses_paths_outside_the_data_directory() {
        let s = scratch("escape");
        block_on(async {
            assert_eq!(s.read("../etc/passwd").await.unwrap_err().kind(), ErrorKind::InvalidInput);
            assert_eq!(s.append("/abs", b"x").await.unwrap_err().kind(), ErrorKind::InvalidInput);
        });
    }
}
