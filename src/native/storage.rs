//! [`FsStorage`]: the write queue's files on the local file system.
//!
//! Each [`Storage`] call runs as one job on smol's blocking thread pool
//! (`smol::unblock` with `std::fs`), so that a durable append (open, write,
//! `fdatasync`, and the directory `fsync` when the file is new) costs one
//! hand-off to a blocking thread instead of one per system call. This is what
//! async-fs does internally for each of its calls.
//!
//! Durability follows the contract of [`Storage`]: `append` = open in append
//! mode + `write_all` + `sync_data`; `write_atomic` = write a temporary file +
//! `sync_all` + `rename` + `fsync` of the directory; a newly created file or
//! directory is made durable by an `fsync` of its parent directory (POSIX
//! `fsync(2)`: "an explicit fsync() on a file descriptor for the directory is
//! also needed" for the directory entry).

use crate::storage::Storage;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
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
fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Creates `dir` and its missing parents, each made durable by an `fsync` of
/// its parent directory.
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(p) = dir.parent() {
        if !p.as_os_str().is_empty() {
            create_dir_durable(p)?;
        }
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
}

/// Adds the path to an IO error's message (std's messages do not name it).
fn named(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Storage for FsStorage {
    async fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let dir = self.resolve(dir)?;
        smol::unblock(move || {
            create_dir_durable(&dir)?;
            let mut names = Vec::new();
            for entry in fs::read_dir(&dir).map_err(named(&dir))? {
                let entry = entry.map_err(named(&dir))?;
                if entry.file_type().map_err(named(&dir))?.is_file() {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        let path = self.resolve(path)?;
        smol::unblock(move || fs::read(&path).map_err(named(&path))).await
    }

    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let path = self.resolve(path)?;
        smol::unblock(move || {
            let mut file = File::open(&path).map_err(named(&path))?;
            file.seek(SeekFrom::Start(offset)).map_err(named(&path))?;
            let mut out = Vec::new();
            file.take(len as u64).read_to_end(&mut out).map_err(named(&path))?;
            Ok(out)
        })
        .await
    }

    async fn append(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let path = self.resolve(path)?;
        let data = data.to_vec();
        smol::unblock(move || {
            let existed = path.exists();
            let mut file = OpenOptions::new().append(true).create(true).open(&path).map_err(named(&path))?;
            if !existed {
                sync_dir(parent(&path)).map_err(named(&path))?;
            }
            file.write_all(&data).map_err(named(&path))?;
            file.sync_data().map_err(named(&path))
        })
        .await
    }

    async fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let path = self.resolve(path)?;
        let data = data.to_vec();
        smol::unblock(move || {
            let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
            tmp_name.push(".tmp");
            let tmp = path.with_file_name(tmp_name);
            let mut file = File::create(&tmp).map_err(named(&tmp))?;
            file.write_all(&data).map_err(named(&tmp))?;
            file.sync_all().map_err(named(&tmp))?;
            drop(file);
            fs::rename(&tmp, &path).map_err(named(&path))?;
            sync_dir(parent(&path)).map_err(named(&path))
        })
        .await
    }

    async fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        let path = self.resolve(path)?;
        smol::unblock(move || {
            let file = OpenOptions::new().write(true).open(&path).map_err(named(&path))?;
            file.set_len(len).map_err(named(&path))?;
            file.sync_all().map_err(named(&path))
        })
        .await
    }

    async fn remove(&self, path: &str) -> io::Result<()> {
        let path = self.resolve(path)?;
        smol::unblock(move || match fs::remove_file(&path) {
            Ok(()) => sync_dir(parent(&path)).map_err(named(&path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(named(&path)(e)),
        })
        .await
    }

    async fn len(&self, path: &str) -> io::Result<Option<u64>> {
        let path = self.resolve(path)?;
        smol::unblock(move || match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(named(&path)(e)),
        })
        .await
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

    #[test]
    fn list_creates_the_directory_and_lists_files_sorted() {
        let (_tmp, s) = storage();
        smol::block_on(async {
            assert_eq!(s.list("queue/a").await.unwrap(), Vec::<String>::new());
            assert!(s.root().join("queue/a").is_dir());
            s.append("queue/a/00002.log", b"x").await.unwrap();
            s.append("queue/a/00001.log", b"y").await.unwrap();
            fs::create_dir(s.root().join("queue/a/sub")).unwrap();
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
