//! Durable file replacement for the gateway's small state files (release registry, development
//! CRL): a file is written whole under a temporary name, fsynced, renamed over its final name and
//! its directory fsynced, so after a crash a reader finds the old file or the new one, never a
//! part, and an acknowledged write survives power loss.
//!
//! Owns only that sequence: never decides what is written, where, or who may read it (the caller
//! gives the permission bits).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The permission bits `File::create` gives a new file (before the umask).
pub const DEFAULT_MODE: u32 = 0o666;

/// Replaces `path` with `bytes`: a temporary file `.<name>.<pid>.tmp` in the same directory
/// (created with permission bits `mode`, before the umask), written, fsynced, renamed over
/// `path`, then the directory fsynced. The temporary file is removed if writing or renaming
/// fails; one left by a crash starts with `.` and ends with `.tmp`. Errors name the file and
/// the step.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let failed = |step: &str, file: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("cannot {step} {}: {e}", file.display()))
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| failed("create", &tmp, e))?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| failed("write", &tmp, e))
        .and_then(|()| {
            drop(f);
            std::fs::rename(&tmp, path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot rename {} to {}: {e}", tmp.display(), path.display()),
                )
            })
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Fsyncs the directory `dir`, making the names created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot sync the directory {}: {e}", dir.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replace_leaves_the_new_bytes_with_the_mode_and_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.key");
        std::fs::write(&path, b"old").expect("old");
        replace(&path, b"new", 0o600).expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["ca.key"]);
        // A missing directory: an error naming the file, nothing left.
        let e = replace(&dir.path().join("no/such"), b"x", DEFAULT_MODE).expect_err("no dir");
        assert!(e.to_string().contains("cannot create"), "{e}");
    }
}
