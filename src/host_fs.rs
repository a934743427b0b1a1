//! The write queue's files on a real file system, written once for both hosts
//! (feature `host-fs`, enabled by `native` and by the `wasm/` crate; the core
//! without default features does not include it).
//!
//! [`DirFiles`] implements the durability rules of [`crate::storage::Storage`]
//! with blocking `std::fs` calls. The native host runs each call on smol's
//! blocking thread pool (`smol::unblock`, see `crate::native::storage`) so the
//! executor thread never waits on the disk; the WASI host (no threads) calls
//! them directly. A host supplies only that choice; the rules are here:
//!
//! - **Paths** are relative to the root (the config's `data_dir`; inside
//!   wasmtime, the preopened directory), `/` separated; empty or absolute
//!   paths and `..` components are refused with `ErrorKind::InvalidInput`, so
//!   nothing outside the data directory is touched whatever a backend is named.
//! - **Modes** (Unix): directories are created 0700 and files 0600: queued
//!   records and dead letters hold the clients' credentials. (WASI 0.2 has no
//!   file modes: under wasmtime the host's defaults apply, so keep the
//!   preopened directory itself private.)
//! - **New names are durable:** a created file or directory, a rename and a
//!   removal are followed by an `fsync` of the parent directory (POSIX
//!   `fsync(2)`: "an explicit fsync() on a file descriptor for the directory is
//!   also needed"). Directories are created one level at a time, outermost
//!   first, each synced in its parent.
//! - **append** = open in append mode (creating) + `write_all` + `sync_data`.
//! - **write_atomic** = write `<name>.tmp` (0600) + `sync_all` + `rename` +
//!   sync of the directory; a failed attempt removes the temporary file (it
//!   would otherwise hold space on a full disk).
//! - **write_at** = overwrite bytes of an existing file in place + `sync_data`;
//!   it allocates nothing when the bytes already exist, so it works on a full
//!   disk (the write queue's `ack` record relies on this).
//! - **truncate** = `set_len` + `sync_all`. **remove** of a missing file is `Ok`.
//! - Errors name the path (std's messages do not).

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

/// Files under one root directory, with blocking calls; see the module
/// documentation for the rules each call follows.
#[derive(Debug, Clone)]
pub struct DirFiles {
    root: PathBuf,
}

impl DirFiles {
    /// Files under `root`. Nothing is created until the first call
    /// ([`DirFiles::list`] creates directories, with their parents).
    pub fn new(root: impl Into<PathBuf>) -> DirFiles {
        DirFiles { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the root directory (and its missing parents, 0700) now.
    pub fn create_root(&self) -> io::Result<()> {
        create_dir_durable(&self.root)
    }

    /// `root/rel`; refuses empty or absolute paths and `..`.
    pub fn resolve(&self, rel: &str) -> io::Result<PathBuf> {
        let rel_path = Path::new(rel);
        let ok = rel_path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if rel.is_empty() || !ok {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("{rel:?}: storage paths must be relative, without '..'"),
            ));
        }
        Ok(self.root.join(rel_path))
    }

    /// Creates directory `dir` (and parents, 0700) if missing, then lists the
    /// names of the regular files in it, sorted.
    pub fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let dir = self.resolve(dir)?;
        create_dir_durable(&dir)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(named(&dir))? {
            let entry = entry.map_err(named(&dir))?;
            if entry.file_type().map_err(named(&dir))?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        crate::sort::sort(&mut names);
        Ok(names)
    }

    /// The whole file; `ErrorKind::NotFound` if it does not exist.
    pub fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        let path = self.resolve(path)?;
        fs::read(&path).map_err(named(&path))
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    pub fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let path = self.resolve(path)?;
        let mut file = File::open(&path).map_err(named(&path))?;
        file.seek(SeekFrom::Start(offset)).map_err(named(&path))?;
        // Room for what the file holds there, so that a large read (a
        // replay batch, 8 MiB) is not copied as the buffer grows.
        let held = file.metadata().map_or(0, |m| m.len().saturating_sub(offset));
        let mut data = Vec::with_capacity(usize::try_from(held).unwrap_or(usize::MAX).min(len));
        file.take(len as u64).read_to_end(&mut data).map_err(named(&path))?;
        Ok(data)
    }

    /// Appends `data` (creating the file, 0600, if missing) durably.
    pub fn append(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let path = self.resolve(path)?;
        let existed = path.exists();
        let mut file =
            private_file(OpenOptions::new().create(true).append(true)).open(&path).map_err(named(&path))?;
        if !existed {
            sync_parent(&path).map_err(named(&path))?;
        }
        file.write_all(data).map_err(named(&path))?;
        file.sync_data().map_err(named(&path))
    }

    /// Replaces the file's contents with `data` atomically and durably.
    pub fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let path = self.resolve(path)?;
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let written = (|| {
            let mut file =
                private_file(OpenOptions::new().write(true).create(true).truncate(true)).open(&tmp)?;
            file.write_all(data)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(named(&tmp)(e));
        }
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(named(&path)(e));
        }
        sync_parent(&path).map_err(named(&path))
    }

    /// Overwrites `data.len()` bytes at `offset` of an existing file in place,
    /// durably (`sync_data`). `ErrorKind::NotFound` if the file is missing.
    pub fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let path = self.resolve(path)?;
        let mut file = OpenOptions::new().write(true).open(&path).map_err(named(&path))?;
        file.seek(SeekFrom::Start(offset)).map_err(named(&path))?;
        file.write_all(data).map_err(named(&path))?;
        file.sync_data().map_err(named(&path))
    }

    /// Cuts the file to `len` bytes, durably.
    pub fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        let path = self.resolve(path)?;
        let file = OpenOptions::new().write(true).open(&path).map_err(named(&path))?;
        file.set_len(len).map_err(named(&path))?;
        file.sync_all().map_err(named(&path))
    }

    /// Removes the file, durably; a missing file is `Ok`.
    pub fn remove(&self, path: &str) -> io::Result<()> {
        let path = self.resolve(path)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_parent(&path).map_err(named(&path)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(named(&path)(e)),
        }
    }

    /// The file's length, `None` if it does not exist.
    pub fn len(&self, path: &str) -> io::Result<Option<u64>> {
        let path = self.resolve(path)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(named(&path)(e)),
        }
    }
}

/// Files are created 0600 on Unix (no modes on WASI).
fn private_file(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Directories are created 0700 on Unix (no modes on WASI).
fn private_dir_builder() -> fs::DirBuilder {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        let mut builder = fs::DirBuilder::new();
        builder.mode(0o700);
        builder
    }
    #[cfg(not(unix))]
    fs::DirBuilder::new()
}

/// Adds the path to an IO error's message.
fn named(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Syncs the directory holding `path`, so that a new, renamed or removed
/// entry is kept that way.
fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents one level at a time, outermost
/// first, mode 0700, each made durable by a sync of its parent directory.
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
        match private_dir_builder().create(d) {
            Ok(()) => sync_parent(d).map_err(named(d))?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(named(d)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, DirFiles) {
        let dir = tempfile::tempdir().unwrap();
        let f = DirFiles::new(dir.path().join("data"));
        (dir, f)
    }

    #[cfg(unix)]
    #[test]
    fn queue_files_are_0600_and_directories_0700() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, f) = files();
        f.list("queue/a").unwrap();
        f.append("queue/a/00000000000000000001.seg", b"x").unwrap();
        f.append("queue/a/dead-letter.jsonl", b"{}\n").unwrap();
        f.write_atomic("queue/a/ack", b"0123").unwrap();
        for dir in [f.root().to_path_buf(), f.root().join("queue"), f.root().join("queue/a")] {
            let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        for name in ["00000000000000000001.seg", "dead-letter.jsonl", "ack"] {
            let path = f.root().join("queue/a").join(name);
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }

    #[test]
    fn write_at_overwrites_in_place_and_needs_an_existing_file() {
        let (_tmp, f) = files();
        f.list("q").unwrap();
        assert_eq!(f.write_at("q/ack", 0, b"x").unwrap_err().kind(), ErrorKind::NotFound);
        f.append("q/ack", b"aaaabbbb").unwrap();
        f.write_at("q/ack", 4, b"CC").unwrap();
        assert_eq!(f.read("q/ack").unwrap(), b"aaaaCCbb");
        f.write_at("q/ack", 0, b"D").unwrap();
        assert_eq!(f.read("q/ack").unwrap(), b"DaaaCCbb");
    }

    #[test]
    fn failed_write_atomic_leaves_no_temporary_file() {
        let (_tmp, f) = files();
        f.list("q").unwrap();
        // The rename fails: the target is a directory.
        fs::create_dir(f.root().join("q/ack")).unwrap();
        assert!(f.write_atomic("q/ack", b"x").is_err());
        assert!(!f.root().join("q/ack.tmp").exists());
    }
}
