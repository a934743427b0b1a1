//! [`Storage`] for the WASI host: the shared `std::fs` rules of
//! [`influx_proxy::host_fs`] (syncs of files and parent directories, atomic
//! replace, path checks) on the data directory (inside wasmtime, the directory
//! preopened with `--dir HOST::/data`), called directly.
//!
//! `std::fs` is synchronous and WASI 0.2 has no threads, so each call blocks
//! the (single) executor for the time of the file operation: acceptable for
//! the write queue's appends and reads, which are small and sequential.
//! WASI has no file modes: keep the preopened directory private (0700).

use influx_proxy::host_fs::DirFiles;
use influx_proxy::storage::Storage;
use std::io;
use std::path::PathBuf;

/// Files under one root directory.
#[derive(Debug, Clone)]
pub struct DirStorage {
    files: DirFiles,
}

impl DirStorage {
    /// Storage rooted at `root` (created, with its missing parents, if missing).
    pub fn open(root: impl Into<PathBuf>) -> io::Result<DirStorage> {
        let files = DirFiles::new(root);
        files.create_root()?;
        Ok(DirStorage { files })
    }
}

impl Storage for DirStorage {
    async fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.files.list(dir)
    }

    async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        self.files.read(path)
    }

    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.files.read_at(path, offset, len)
    }

    async fn append(&self, path: &str, data: Vec<u8>) -> io::Result<()> {
        self.files.append(path, &data)
    }

    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        self.files.write_atomic(path, data)
    }

    async fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.files.write_at(path, offset, data)
    }

    async fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        self.files.truncate(path, len)
    }

    async fn remove(&self, path: &str) -> io::Result<()> {
        self.files.remove(path)
    }

    async fn len(&self, path: &str) -> io::Result<Option<u64>> {
        self.files.len(path)
    }
}

#[cfg(test)]
mod tests {
    //! These run natively and, with `cargo test --target wasm32-wasip2`, inside
    //! wasmtime (see `.cargo/config.toml`), where `sync_all` and the directory
    //! sync go through WASI.
    use super::*;
    use futures_lite::future::block_on;
    use std::fs;
    use std::io::ErrorKind;
    use std::path::Path;

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
            s.append("queue/a/0001.log", b"hello ".to_vec()).await.unwrap();
            s.append("queue/a/0001.log", b"world".to_vec()).await.unwrap();
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
        let _ = fs::remove_dir_all(s.files.root());
    }

    #[test]
    fn list_creates_nested_directories() {
        let s = scratch("nested");
        block_on(async {
            assert_eq!(s.list("queue/b/c/d").await.unwrap(), Vec::<String>::new());
            assert!(s.files.root().join("queue/b/c/d").is_dir());
            s.append("queue/b/c/d/0001.log", b"x".to_vec()).await.unwrap();
            // Existing directories are left as they are, files and all.
            assert_eq!(s.list("queue/b/c/d").await.unwrap(), vec!["0001.log".to_string()]);
            assert_eq!(s.list("queue/b").await.unwrap(), Vec::<String>::new());
            assert_eq!(s.list("queue/b/e").await.unwrap(), Vec::<String>::new());
            assert!(s.files.root().join("queue/b/e").is_dir());
        });
        let _ = fs::remove_dir_all(s.files.root());
    }

    #[test]
    fn write_at_overwrites_in_place() {
        let s = scratch("write-at");
        block_on(async {
            s.list("queue/a").await.unwrap();
            s.append("queue/a/ack", vec![0; 64]).await.unwrap();
            s.write_at("queue/a/ack", 32, b"slot").await.unwrap();
            let data = s.read("queue/a/ack").await.unwrap();
            assert_eq!((data.len(), &data[32..36]), (64, &b"slot"[..]));
            assert_eq!(s.write_at("queue/a/none", 0, b"x").await.unwrap_err().kind(), ErrorKind::NotFound);
        });
        let _ = fs::remove_dir_all(s.files.root());
    }

    #[test]
    fn refuses_paths_outside_the_data_directory() {
        let s = scratch("escape");
        block_on(async {
            assert_eq!(s.read("../etc/passwd").await.unwrap_err().kind(), ErrorKind::InvalidInput);
            assert_eq!(s.append("/abs", b"x".to_vec()).await.unwrap_err().kind(), ErrorKind::InvalidInput);
        });
    }
}
