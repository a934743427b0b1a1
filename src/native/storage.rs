//! [`FsStorage`]: the write queue's files on the local file system, through
//! async-fs (whose calls run `std::fs` on a blocking thread pool, so the
//! executor thread never waits on the disk).
//!
//! Durability follows the contract of [`Storage`]: `append` = open in append
//! mode + `write_all` + `sync_data`; `write_atomic` = write a temporary file +
//! `sync_all` + `rename` + `fsync` of the directory; a newly created file or
//! directory is made durable by an `fsync` of its parent directory (POSIX
//! `fsync(2)`: "an explicit fsync() on a file descriptor for the directory is
//! also needed" for the directory entry). The root directory is created with
//! mode 0700: queued records carry the clients' credentials.

use crate::storage::Storage;
use futures_lite::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use std::io::{self, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// The write queue's files under a root directory (the config's `data_dir`).
///
/// Paths given to the [`Storage`] methods are relative to `root`, `/`
/// separated; absolute paths and `..` components are refused with
/// `ErrorKind::InvalidInput`.
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// A storage rooted at `root`. Nothing is created until the first call
    /// ([`Storage::list`] creates directories, with their parents).
    pub fn new(root: impl Into<PathBuf>) -> FsStorage {
        FsStorage { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn resolve(&self, rel: &str) -> io::Result<PathBuf> {
        let rel_path = Path::new(rel);
        let ok = rel_path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if rel.is_empty() || !ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{rel:?}: storage paths must be relative, without '..'"),
            ));
        }
        Ok(self.root.join(rel_path))
    }
}

/// `fsync` of a directory, making the creation, rename or removal of its
/// entries durable.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    async_fs::File::open(dir).await?.sync_all().await
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Creates `dir` and its missing parents (mode 0700), each made durable by an
/// `fsync` of its parent directory.
async fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if async_fs::metadata(dir).await.is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    // Parents first, outermost first.
    let mut missing = vec![dir.to_path_buf()];
    let mut at = dir.parent();
    while let Some(p) = at.filter(|p| !p.as_os_str().is_empty()) {
        if async_fs::metadata(p).await.is_ok_and(|m| m.is_dir()) {
            break;
        }
        missing.push(p.to_path_buf());
        at = p.parent();
    }
    for d in missing.iter().rev() {
        let mut builder = async_fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use async_fs::unix::DirBuilderExt;
            builder.mode(0o700);
        }
        match builder.create(d).await {
            Ok(()) => sync_dir(parent(d)).await?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(named(d)(e)),
        }
    }
    Ok(())
}

/// Adds the path to an IO error's message (std's messages do not name it).
fn named(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Storage for FsStorage {
    async fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let dir = self.resolve(dir)?;
        create_dir_durable(&dir).await?;
        let mut names = Vec::new();
        let mut entries = async_fs::read_dir(&dir).await.map_err(named(&dir))?;
        while let Some(entry) = futures_lite::StreamExt::next(&mut entries).await {
            let entry = entry.map_err(named(&dir))?;
            if entry.file_type().await.map_err(named(&dir))?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        let path = self.resolve(path)?;
        async_fs::read(&path).await.map_err(named(&path))
    }

    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let path = self.resolve(path)?;
        let mut file = async_fs::File::open(&path).await.map_err(named(&path))?;
        file.seek(SeekFrom::Start(offset)).await.map_err(named(&path))?;
        let mut out = Vec::new();
        file.take(len as u64).read_to_end(&mut out).await.map_err(named(&path))?;
        Ok(out)
    }

    async fn append(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let path = self.resolve(path)?;
        let existed = async_fs::metadata(&path).await.is_ok();
        let mut file =
            async_fs::OpenOptions::new().append(true).create(true).open(&path).await.map_err(named(&path))?;
        if !existed {
            sync_dir(parent(&path)).await.map_err(named(&path))?;
        }
        file.write_all(data).await.map_err(named(&path))?;
        // async-fs buffers writes: flush hands them to the OS before the sync.
        file.flush().await.map_err(named(&path))?;
        file.sync_data().await.map_err(named(&path))
    }

    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let path = self.resolve(path)?;
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        let mut file = async_fs::File::create(&tmp).await.map_err(named(&tmp))?;
        file.write_all(data).await.map_err(named(&tmp))?;
        file.flush().await.map_err(named(&tmp))?;
        file.sync_all().await.map_err(named(&tmp))?;
        drop(file);
        async_fs::rename(&tmp, &path).await.map_err(named(&path))?;
        sync_dir(parent(&path)).await.map_err(named(&path))
    }

    async fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        let path = self.resolve(path)?;
        let file = async_fs::OpenOptions::new().write(true).open(&path).await.map_err(named(&path))?;
        file.set_len(len).await.map_err(named(&path))?;
        file.sync_all().await.map_err(named(&path))
    }

    async fn remove(&self, path: &str) -> io::Result<()> {
        let path = self.resolve(path)?;
        match async_fs::remove_file(&path).await {
            Ok(()) => sync_dir(parent(&path)).await.map_err(named(&path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(named(&path)(e)),
        }
    }

    async fn len(&self, path: &str) -> io::Result<Option<u64>> {
        let path = self.resolve(path)?;
        match async_fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(named(&path)(e)),
        }
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
    fn data_directories_are_private_to_the_proxy() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, s) = storage();
        smol::block_on(s.list("queue/a")).unwrap();
        for dir in [s.root().to_path_buf(), s.root().join("queue"), s.root().join("queue/a")] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }

    #[test]
    fn list_creates_the_directory_and_lists_files_sorted() {
        let (_tmp, s) = storage();
        smol::block_on(async {
            assert_eq!(s.list("queue/a").await.unwrap(), Vec::<String>::new());
            assert!(s.root().join("queue/a").is_dir());
            s.append("queue/a/00002.log", b"x").await.unwrap();
            s.append("queue/a/00001.log", b"y").await.unwrap();
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
            s.append("q/f", b"hello ").await.unwrap();
            s.append("q/f", b"world").await.unwrap();
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
            s.append("q/f", b"kept").await.unwrap();
        });
        let again = FsStorage::new(s.root());
        assert_eq!(smol::block_on(again.read("q/f")).unwrap(), b"kept");
    }

    #[test]
    fn refuses_paths_leaving_the_root() {
        let (_tmp, s) = storage();
        smol::block_on(async {
            for bad in ["../x", "/etc/passwd", "q/../../x", ""] {
                let e = s.append(bad, b"x").await.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
            }
        });
    }

    #[test]
    fn append_to_a_missing_directory_is_an_error_naming_the_file() {
        let (_tmp, s) = storage();
        let e = smol::block_on(s.append("nodir/f", b"x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("nodir/f"), "{e}");
    }
}
