//! [`FsStorage`]: the write queue's files on the local file system. The
//! durability rules (syncs of files and parent directories, atomic replace,
//! modes 0700/0600, path checks) are written once in [`crate::host_fs`]; this
//! host runs each of those blocking `std::fs` calls on smol's blocking thread
//! pool ([`smol::unblock`]), so the executor thread never waits on the disk.

use crate::host_fs::DirFiles;
use crate::storage::Storage;
use std::io;
use std::path::Path;

/// The write queue's files under a root directory (the config's `data_dir`).
///
/// Paths given to the [`Storage`] methods are relative to `root`, `/`
/// separated; absolute paths and `..` components are refused with
/// `ErrorKind::InvalidInput`.
#[derive(Debug, Clone)]
pub struct FsStorage {
    files: DirFiles,
}

impl FsStorage {
    /// A storage rooted at `root`. Nothing is created until the first call
    /// ([`Storage::list`] creates directories, with their parents).
    pub fn new(root: impl Into<std::path::PathBuf>) -> FsStorage {
        FsStorage { files: DirFiles::new(root) }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.files.root()
    }

    /// Runs `f` on the files on smol's blocking pool.
    async fn run<R: Send + 'static>(&self, f: impl FnOnce(&DirFiles) -> R + Send + 'static) -> R {
        let files = self.files.clone();
        smol::unblock(move || f(&files)).await
    }
}

impl Storage for FsStorage {
    async fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let dir = dir.to_string();
        self.run(move |f| f.list(&dir)).await
    }

    async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        let path = path.to_string();
        self.run(move |f| f.read(&path)).await
    }

    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let path = path.to_string();
        self.run(move |f| f.read_at(&path, offset, len)).await
    }

    async fn append(&self, path: &str, data: Vec<u8>) -> io::Result<()> {
        let path = path.to_string();
        self.run(move |f| f.append(&path, &data)).await
    }

    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let (path, data) = (path.to_string(), data.to_vec());
        self.run(move |f| f.write_atomic(&path, &data)).await
    }

    async fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let (path, data) = (path.to_string(), data.to_vec());
        self.run(move |f| f.write_at(&path, offset, &data)).await
    }

    async fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        let path = path.to_string();
        self.run(move |f| f.truncate(&path, len)).await
    }

    async fn remove(&self, path: &str) -> io::Result<()> {
        let path = path.to_string();
        self.run(move |f| f.remove(&path)).await
    }

    async fn len(&self, path: &str) -> io::Result<Option<u64>> {
        let path = path.to_string();
        self.run(move |f| f.len(&path)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> (tempfile::TempDir, FsStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(dir.path().join("data"));
        (dir, s)
    }

    #[cfg(unix)]
    #[test]
    fn data_directories_and_queue_files_are_private_to_the_proxy() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, s) = storage();
        smol::block_on(async {
            s.list("queue/a").await.unwrap();
            s.append("queue/a/00000000000000000000.seg", b"x".to_vec()).await.unwrap();
            s.append("queue/a/dead-letter.jsonl", b"{}\n".to_vec()).await.unwrap();
            s.write_atomic("queue/a/ack", &[0; 64]).await.unwrap();
        });
        for dir in [s.root().to_path_buf(), s.root().join("queue"), s.root().join("queue/a")] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        for file in ["00000000000000000000.seg", "dead-letter.jsonl", "ack"] {
            let path = s.root().join("queue/a").join(file);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}: queued records hold clients' credentials", path.display());
        }
    }

    #[test]
    fn write_at_overwrites_in_place() {
        let (_tmp, s) = storage();
        smol::block_on(async {
            s.list("q").await.unwrap();
            s.append("q/ack", b"0123456789".to_vec()).await.unwrap();
            s.write_at("q/ack", 3, b"abc").await.unwrap();
            assert_eq!(s.read("q/ack").await.unwrap(), b"012abc6789");
            assert_eq!(s.write_at("q/none", 0, b"x").await.unwrap_err().kind(), io::ErrorKind::NotFound);
        });
    }

    #[test]
    fn list_creates_the_directory_and_lists_files_sorted() {
        let (_tmp, s) = storage();
        smol::block_on(async {
            assert_eq!(s.list("queue/a").await.unwrap(), Vec::<String>::new());
            assert!(s.root().join("queue/a").is_dir());
            s.append("queue/a/00002.log", b"x".to_vec()).await.unwrap();
            s.append("queue/a/00001.log", b"y".to_vec()).await.unwrap();
            std::fs::create_dir(s.root().join("queue/a/sub")).unwrap();
            assert_eq!(s.list("queue/a").await.unwrap(), vec!["00001.log", "00002.log"]);
        });
    }

    #[test]
    fn append_read_read_at_len_truncate_remove() {
        let (_tmp, s) = storage();
        smol::block_on(async {
            s.list("q").await.unwrap();
            assert_eq!(s.len("q/f").await.unwrap(), None);
            assert_eq!(s.read("q/f").await.unwrap_err().kind(), io::ErrorKind::NotFound);
            s.append("q/f", b"hello ".to_vec()).await.unwrap();
            s.append("q/f", b"world".to_vec()).await.unwrap();
            assert_eq!(s.read("q/f").await.unwrap(), b"hello world");
            assert_eq!(s.len("q/f").await.unwrap(), Some(11));
            assert_eq!(s.read_at("q/f", 6, 100).await.unwrap(), b"world");
            assert_eq!(s.read_at("q/f", 2, 3).await.unwrap(), b"llo");
            assert_eq!(s.read_at("q/f", 50, 3).await.unwrap(), b"");
            s.truncate("q/f", 5).await.unwrap();
            assert_eq!(s.read("q/f").await.unwrap(), b"hello");
            s.remove("q/f").await.unwrap();
            assert_eq!(s.len("q/f").await.unwrap(), None);
            s.remove("q/f").await.unwrap();
            assert_eq!(s.truncate("q/f", 0).await.unwrap_err().kind(), io::ErrorKind::NotFound);
        });
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary_file() {
        let (_tmp, s) = storage();
        smol::block_on(async {
            s.list("q").await.unwrap();
            s.write_atomic("q/cursor", b"first, longer").await.unwrap();
            s.write_atomic("q/cursor", b"second").await.unwrap();
            assert_eq!(s.read("q/cursor").await.unwrap(), b"second");
            assert_eq!(s.list("q").await.unwrap(), vec!["cursor"]);
        });
    }

    #[test]
    fn data_survives_a_new_storage_on_the_same_root() {
        let (_tmp, s) = storage();
        smol::block_on(async {
            s.list("q").await.unwrap();
            s.append("q/f", b"kept".to_vec()).await.unwrap();
        });
        let again = FsStorage::new(s.root());
        assert_eq!(smol::block_on(again.read("q/f")).unwrap(), b"kept");
    }

    #[test]
    fn refuses_paths_leaving_the_root() {
        let (_tmp, s) = storage();
        smol::block_on(async {
            for bad in ["../x", "/etc/passwd", "q/../../x", ""] {
                let e = s.append(bad, b"x".to_vec()).await.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
            }
        });
    }

    #[test]
    fn append_to_a_missing_directory_is_an_error_naming_the_file() {
        let (_tmp, s) = storage();
        let e = smol::block_on(s.append("nodir/f", b"x".to_vec())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("nodir/f"), "{e}");
    }
}
