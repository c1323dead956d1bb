//! Why a database file cannot be opened, in words for the operator.

use std::path::Path;

/// Why `path` cannot be opened as a database, in plain words: the file
/// system is asked first (a missing folder, permissions), SQLite's code
/// tells the rest.
pub(super) fn why_not_open(path: &Path, e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    let folder = directory_of(path);
    match std::fs::metadata(folder) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return format!("the directory {} does not exist", folder.display());
        }
        Ok(m) if !m.is_dir() => return format!("{} is not a directory", folder.display()),
        _ => {}
    }
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return "that is a directory".to_string();
    }
    if path.exists() && !accessible(path, libc::R_OK | libc::W_OK) {
        return format!("permission denied on {}", path.display());
    }
    // SQLite creates the database, and its -wal file, beside it.
    if !accessible(folder, libc::W_OK | libc::X_OK) {
        return format!("permission denied on {}", folder.display());
    }
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => "the file is not an SQLite database".to_string(),
        Some(ErrorCode::DatabaseCorrupt) => "the database is damaged".to_string(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "another program keeps the database locked".to_string()
        }
        Some(ErrorCode::ReadOnly) => "the database is read-only".to_string(),
        Some(ErrorCode::DiskFull) => "the disk is full".to_string(),
        _ => crate::report::Report(e).to_string(),
    }
}

/// The directory `file` is in (`.` for a bare name).
pub(super) fn directory_of(file: &Path) -> &Path {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Whether this process may use `path` with `mode` (`libc::R_OK` ...).
fn accessible(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `path` is a valid NUL-terminated string for the whole call.
    unsafe { libc::access(path.as_ptr(), mode) == 0 }
}
