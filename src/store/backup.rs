//! `bitsd backup`: a consistent copy of a database that a server may be
//! writing to, with SQLite's online backup.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::check::{
    MaintenanceError, Problems, Size, count, integrity, io, open_read_only, sibling, tables,
};
use super::directory_of;

/// Pages copied by one backup step (4 MiB at the default page size).
const PAGES_PER_STEP: i32 = 1024;
/// Pause after a busy step, and between steps of a database that is not in
/// WAL mode, where the copy would otherwise keep writers out.
const PAUSE: Duration = Duration::from_millis(10);
/// How long the backup waits for a database that stays busy.
const BUSY_LIMIT: Duration = Duration::from_secs(60);
/// Restarts (a writer changed a database not in WAL mode between two steps)
/// after which the rest is copied in one step.
const RESTARTS_BEFORE_ONE_STEP: u32 = 3;

/// What `bitsd backup` wrote.
#[derive(Debug, Clone)]
pub struct BackupDone {
    pub source: PathBuf,
    pub file: PathBuf,
    pub bytes: u64,
    pub status_changes: u64,
    pub samples: u64,
    pub messages: u64,
    pub took: Duration,
}

impl fmt::Display for BackupDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: copy of {}, {}, {} status changes, {} temperature samples, {} messages, in {:.2} s",
            self.file.display(),
            self.source.display(),
            Size(self.bytes),
            self.status_changes,
            self.samples,
            self.messages,
            self.took.as_secs_f64()
        )
    }
}

/// Copies the database at `source` to `file` with SQLite's online backup,
/// while a server may keep writing to it.
///
/// The copy is one self-contained file (journal mode DELETE), readable by
/// its owner only, checked with `integrity_check`; it is written next to
/// `file` under a hidden name and renamed over `file` when complete, so an
/// existing `file` is replaced whole or not at all.
pub fn backup(source: &Path, file: &Path) -> Result<BackupDone, MaintenanceError> {
    let started = Instant::now();
    // Refusals first: opening a database in WAL mode may create its -shm.
    refuse_own_files(source, file)?;
    if file.is_dir() {
        return Err(MaintenanceError::IsDirectory);
    }
    let partial = Partial::create(file)?;
    // Never immutable: a server may start and write while this copies.
    let src = open_read_only(source, false)?;
    let mut dst = Connection::open_with_flags(
        &partial.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    copy(&src, &mut dst)?;
    drop(src);
    // The copy carries the source's header, WAL mode included: make it one file.
    let mode: String = dst.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(MaintenanceError::CopyDamaged(format!(
            "its journal mode stayed {mode}"
        )));
    }
    integrity(&dst).map_err(|problems| match problems {
        Problems::Found(text) => MaintenanceError::CopyDamaged(text),
        Problems::Unreadable(e) => e,
    })?;
    let tables = tables(&dst)?;
    let rows = |table| count(&dst, &tables, table).map(Option::unwrap_or_default);
    let (status_changes, samples, messages) =
        (rows("Status")?, rows("Temperature")?, rows("Message")?);
    dst.close().map_err(|(_, e)| e)?;
    let bytes = partial.finish(file)?;
    Ok(BackupDone {
        source: source.to_path_buf(),
        file: file.to_path_buf(),
        bytes,
        status_changes,
        samples,
        messages,
        took: started.elapsed(),
    })
}

/// Runs the backup steps from `src` into `dst`.
fn copy(src: &Connection, dst: &mut Connection) -> Result<(), MaintenanceError> {
    let wal = src
        .pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0))?
        .eq_ignore_ascii_case("wal");
    if wal {
        // One snapshot for every step: in WAL mode a reader does not hold up
        // the writer, and a commit between two steps no longer restarts the
        // copy, which under a steady stream of samples would never finish.
        src.execute_batch("BEGIN")?;
        src.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |_| Ok(()))?;
    }
    let backup = Backup::new(src, dst)?;
    let mut busy_since: Option<Instant> = None;
    let (mut restarts, mut remaining) = (0, i32::MAX);
    loop {
        let pages = if restarts >= RESTARTS_BEFORE_ONE_STEP {
            -1
        } else {
            PAGES_PER_STEP
        };
        match backup.step(pages)? {
            StepResult::Done => break,
            StepResult::More => {
                busy_since = None;
                let now = backup.progress().remaining;
                if now > remaining {
                    restarts += 1;
                }
                remaining = now;
                if !wal {
                    std::thread::sleep(PAUSE);
                }
            }
            // Busy, locked, or anything newer: wait a little and try again.
            _ => {
                if busy_since.get_or_insert_with(Instant::now).elapsed() > BUSY_LIMIT {
                    return Err(MaintenanceError::Busy(BUSY_LIMIT));
                }
                std::thread::sleep(PAUSE);
            }
        }
    }
    drop(backup);
    if wal {
        src.execute_batch("COMMIT")?;
    }
    Ok(())
}

/// The temporary file a backup is written to, removed (with any journal
/// SQLite left next to it) unless [`Partial::finish`] renamed it.
struct Partial {
    path: PathBuf,
    done: bool,
}

impl Partial {
    /// A new, empty, owner-only file in the directory of `file`.
    fn create(file: &Path) -> Result<Partial, MaintenanceError> {
        let dir = directory_of(file);
        if !dir.is_dir() {
            return Err(MaintenanceError::NoDirectory(dir.to_path_buf()));
        }
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let pid = std::process::id();
        for n in 0.. {
            // Hidden, so a glob over the backups never picks it up.
            let path = dir.join(format!(".{name}.{pid}.{n}.partial"));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(Partial { path, done: false }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => continue,
                Err(e) => return Err(io(format!("cannot create {}", path.display()), e)),
            }
        }
        unreachable!("the loop returns")
    }

    /// Syncs the copy, renames it to `file` and syncs the directory; the
    /// copy's size.
    fn finish(mut self, file: &Path) -> Result<u64, MaintenanceError> {
        let copy = File::open(&self.path)
            .and_then(|f| f.sync_all().map(|()| f))
            .map_err(|e| io(format!("cannot sync {}", self.path.display()), e))?;
        let bytes = copy
            .metadata()
            .map_err(|e| io(format!("cannot read {}", self.path.display()), e))?
            .len();
        fs::rename(&self.path, file).map_err(|e| {
            io(
                format!(
                    "cannot rename {} to {}",
                    self.path.display(),
                    file.display()
                ),
                e,
            )
        })?;
        self.done = true;
        // The rename itself survives a power cut only once the directory is synced.
        let dir = directory_of(file);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(format!("cannot sync {}", dir.display()), e))?;
        Ok(bytes)
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let _ = fs::remove_file(sibling(&self.path, suffix));
        }
    }
}

/// Refuses a backup over the database or its journal, WAL or shared memory.
fn refuse_own_files(source: &Path, file: &Path) -> Result<(), MaintenanceError> {
    if let (Ok(a), Ok(b)) = (fs::metadata(source), fs::metadata(file))
        && a.dev() == b.dev()
        && a.ino() == b.ino()
    {
        return Err(MaintenanceError::SameFile);
    }
    let (Ok(source), Ok(dir)) = (source.canonicalize(), directory_of(file).canonicalize()) else {
        return Ok(());
    };
    let target = dir.join(file.file_name().unwrap_or_default());
    if ["", "-journal", "-wal", "-shm"]
        .iter()
        .any(|suffix| sibling(&source, suffix) == target)
    {
        return Err(MaintenanceError::SameFile);
    }
    Ok(())
}
