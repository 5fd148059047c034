//! Using a path that was checked earlier without following a symlink swapped in since.
//!
//! Job paths are canonical when they are checked (`job::PathPolicy` resolves every symlink),
//! and `transcode` resolves its command-line paths the same way. A symlink found on such a
//! path later was put there after the check, by someone who can write inside a root. So a
//! path is opened one component at a time, each with `O_NOFOLLOW`, from the directory opened
//! before it (reached through `/proc/self/fd/<fd>`, the kernel's link to an open directory):
//! no symlink anywhere on the path is followed, and what is opened is what was checked.
//!
//! A component walk works on every kernel and filesystem; `openat2(RESOLVE_NO_SYMLINKS)` would
//! do the same in one call but needs Linux 5.6, and creating missing directories needs the
//! walk anyway. Files are then used through the directory's `/proc/self/fd` path, so renaming
//! a component of the original path does not redirect them either.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// `/proc/self/fd/<fd>`: names the open file itself, whatever happened to its path since.
pub(crate) fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Why a walk stopped.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// A component is a symlink: the path changed since it was checked.
    Symlink(PathBuf),
    /// Any other failure (missing, not a directory, permission, I/O).
    Io(io::Error),
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkError::Symlink(at) => write!(
                f,
                "{} is a symbolic link now; the path changed since it was checked",
                at.display()
            ),
            WalkError::Io(e) => e.fmt(f),
        }
    }
}

fn open_nofollow(parent: &File, name: &std::ffi::OsStr, directory: bool) -> io::Result<File> {
    let flags = libc::O_NOFOLLOW | if directory { libc::O_DIRECTORY } else { 0 };
    OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(fd_path(parent).join(name))
}

/// Classifies a failed open: with `O_NOFOLLOW` a symlink gives ELOOP, or ENOTDIR together
/// with `O_DIRECTORY`.
fn classify(e: io::Error, parent: &File, name: &std::ffi::OsStr, shown: &Path) -> WalkError {
    let is_link = std::fs::symlink_metadata(fd_path(parent).join(name))
        .is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        WalkError::Symlink(shown.to_path_buf())
    } else {
        WalkError::Io(e)
    }
}

/// Opens the directory `path` (absolute, no `..`) without following any symlink on it,
/// creating missing components when `create` is set.
pub(crate) fn open_dir(path: &Path, create: bool) -> Result<File, WalkError> {
    let mut dir = File::open("/").map_err(WalkError::Io)?;
    let mut shown = PathBuf::from("/");
    for component in path.components() {
        let name = match component {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(name) => name,
            Component::Prefix(_) | Component::ParentDir => {
                return Err(WalkError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a plain absolute path", path.display()),
                )))
            }
        };
        shown.push(name);
        dir = open_child_dir(&dir, name, &shown, create)?;
    }
    Ok(dir)
}

/// Opens the directory `name` inside the open directory `parent` without following a
/// symlink, creating it when it is missing and `create` is set. `shown` names it in errors.
pub(crate) fn open_child_dir(
    parent: &File,
    name: &std::ffi::OsStr,
    shown: &Path,
    create: bool,
) -> Result<File, WalkError> {
    match open_nofollow(parent, name, true) {
        Ok(dir) => Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            match std::fs::create_dir(fd_path(parent).join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(WalkError::Io(e)),
            }
            open_nofollow(parent, name, true).map_err(|e| classify(e, parent, name, shown))
        }
        Err(e) => Err(classify(e, parent, name, shown)),
    }
}

/// Opens the file at `path` for reading without following any symlink on the way: what a
/// checked path names now, held open so that it cannot be swapped afterwards.
pub(crate) fn open_file(path: &Path) -> Result<File, WalkError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(WalkError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )));
    };
    let dir = open_dir(parent, false)?;
    open_nofollow(&dir, name, false).map_err(|e| classify(e, &dir, name, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Device and inode of what `path` names now, opened without following symlinks.
    fn identity(path: &Path) -> Result<(u64, u64), WalkError> {
        let meta = open_file(path)?.metadata().map_err(WalkError::Io)?;
        Ok((meta.dev(), meta.ino()))
    }

    #[test]
    fn a_symlink_anywhere_on_the_path_is_refused_and_nothing_is_created_behind_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let elsewhere = root.join("elsewhere");
        std::fs::create_dir_all(root.join("jobs/a")).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(root.join("jobs/a/in.mp4"), b"x").unwrap();

        let made = open_dir(&root.join("jobs/a/new/deeper"), true).unwrap();
        assert!(root.join("jobs/a/new/deeper").is_dir());
        assert!(fd_path(&made)
            .canonicalize()
            .unwrap()
            .ends_with("new/deeper"));
        let before = identity(&root.join("jobs/a/in.mp4")).unwrap();

        // The swap: `jobs` becomes a symlink to a folder with the same layout.
        std::fs::create_dir_all(elsewhere.join("a")).unwrap();
        std::fs::write(elsewhere.join("a/in.mp4"), b"y").unwrap();
        std::fs::rename(root.join("jobs"), root.join("jobs.moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("jobs")).unwrap();

        let err = open_dir(&root.join("jobs/a/out"), true).unwrap_err();
        assert!(matches!(err, WalkError::Symlink(_)), "{err}");
        assert!(
            !elsewhere.join("a/out").exists(),
            "created behind the symlink"
        );
        let err = identity(&root.join("jobs/a/in.mp4")).unwrap_err();
        assert!(matches!(err, WalkError::Symlink(_)), "{err}");
        // The same file reached without symlinks is still recognised.
        assert_eq!(identity(&root.join("jobs.moved/a/in.mp4")).unwrap(), before);
        std::os::unix::fs::symlink(root.join("jobs.moved/a/in.mp4"), root.join("link.mp4"))
            .unwrap();
        assert!(matches!(
            identity(&root.join("link.mp4")),
            Err(WalkError::Symlink(_))
        ));
    }
}
