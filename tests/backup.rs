//! `bitsd backup` and `bitsd check`, run as the real binary against real
//! database files.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::legacy::{LEGACY_SCHEMA, legacy_database};
use common::sqlite::value;
use common::{PATIENCE, Spawned, bitsd_command, stdout_of};
use tokio::io::AsyncWriteExt;

/// `bitsd --config /dev/null --db DB ARGS...`, waited for.
fn bitsd(db: &Path, args: &[&str]) -> Output {
    bitsd_command()
        .args(["--config", "/dev/null", "--db"])
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

/// Every file of `dir` with its bytes.
fn listing(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    listing(dir).into_keys().collect()
}

/// A failure: status 1, nothing on standard output, one line on standard
/// error starting with `start`; that line.
fn one_line_failure(out: &Output, start: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(start), "{stderr}");
    stderr.trim_end().to_string()
}

fn rows(db: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    value(&conn, &format!(r#"SELECT COUNT(*) FROM "{table}""#))
}

/// Opens a copy and checks it is whole, one file, and in DELETE mode.
fn assert_whole(copy: &Path) {
    let conn = rusqlite::Connection::open(copy).unwrap();
    let ok: String = value(&conn, "PRAGMA integrity_check");
    assert_eq!(ok, "ok", "{}", copy.display());
    let mode: String = value(&conn, "PRAGMA journal_mode");
    assert_eq!(mode, "delete", "{}", copy.display());
}

/// A bitsd database with 3 days of history, its server stopped.
fn bitsd_database(dir: &Path) -> PathBuf {
    let db = dir.join("bitsd.db");
    stdout_of(bitsd(&db, &["fake", "history", "--days", "3"]));
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_under_a_device_flood_are_whole_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    // Some MiB of history, so one copy takes several steps.
    stdout_of(bitsd(&db, &["fake", "history", "--days", "120"]));
    let server = Spawned::start(&db);

    let mut device = tokio::net::TcpStream::connect(server.control)
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut lines = String::new();
                for _ in 0..20 {
                    n += 1;
                    lines.push_str(&format!(
                        "temperature {} {}.{}\n",
                        n % 7,
                        15 + n % 10,
                        n % 10
                    ));
                }
                device.write_all(lines.as_bytes()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let at_start = rows(&db, "Temperature");
    let started = Instant::now();
    while rows(&db, "Temperature") < at_start + 500 {
        assert!(started.elapsed() < PATIENCE, "the flood is not stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut overlapped = 0;
    for round in 0..4 {
        let copy = dir.path().join(format!("copy-{round}.db"));
        let before = rows(&db, "Temperature");
        let out = tokio::task::spawn_blocking({
            let (db, copy) = (db.clone(), copy.clone());
            move || bitsd(&db, &["backup", copy.to_str().unwrap()])
        })
        .await
        .unwrap();
        let after = rows(&db, "Temperature");
        let line = stdout_of(out);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            line.starts_with(&format!("{}: copy of ", copy.display())),
            "{line}"
        );
        assert!(line.contains(" temperature samples, "), "{line}");

        assert_whole(&copy);
        let copied = rows(&copy, "Temperature");
        assert!(
            (before..=after).contains(&copied),
            "round {round}: {copied} samples copied, {before} stored before and {after} after"
        );
        assert!(
            line.contains(&format!(" {copied} temperature samples")),
            "{line}"
        );
        if after > before {
            overlapped += 1;
        }
    }
    assert!(
        overlapped > 0,
        "no backup ran while samples were being stored"
    );
    stop.store(true, Ordering::Relaxed);
    flooding.await.unwrap();

    let mut files = names(dir.path());
    files.retain(|name| !name.starts_with("bitsd.db"));
    assert_eq!(files, ["copy-0.db", "copy-1.db", "copy-2.db", "copy-3.db"]);
    drop(server);
}

#[test]
fn a_backup_replaces_an_existing_file_and_refuses_the_database_itself() {
    let dir = tempfile::tempdir().unwrap();
    let db = bitsd_database(dir.path());
    let copy = dir.path().join("nightly.db");
    std::fs::write(&copy, b"yesterday's copy").unwrap();
    stdout_of(bitsd(&db, &["backup", copy.to_str().unwrap()]));
    assert_whole(&copy);
    assert_eq!(rows(&copy, "Status"), rows(&db, "Status"));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the copy holds password hashes");
    assert_eq!(names(dir.path()), ["bitsd.db", "nightly.db"]);

    let before = listing(dir.path());
    let other_spelling = format!("{}/./bitsd.db", dir.path().display());
    for target in [db.to_str().unwrap(), &other_spelling, "bitsd.db-wal"] {
        let out = bitsd_command()
            .current_dir(dir.path())
            .args(["--config", "/dev/null", "backup", target, "--db"])
            .arg(&db)
            .output()
            .unwrap();
        let line = one_line_failure(&out, "bitsd: cannot back up ");
        assert!(
            line.ends_with("the database itself or one of its files"),
            "{line}"
        );
    }
    let missing_dir = dir.path().join("no/such/dir/copy.db");
    let out = bitsd(&db, &["backup", missing_dir.to_str().unwrap()]);
    let line = one_line_failure(&out, "bitsd: cannot back up ");
    assert!(line.ends_with("does not exist"), "{line}");
    assert_eq!(listing(dir.path()), before, "nothing written, nothing left");
}

#[test]
fn a_backup_of_a_missing_database_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let copy = dir.path().join("copy.db");
    let out = bitsd(&db, &["backup", copy.to_str().unwrap()]);
    let line = one_line_failure(&out, &format!("bitsd: no database at {}: ", db.display()));
    assert!(line.contains("give --db PATH"), "{line}");
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
}

#[test]
fn check_reads_an_original_database_without_changing_a_byte() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_database(dir.path());
    let before = listing(dir.path());

    let out = stdout_of(bitsd(&db, &["check"]));
    let expected = format!(
        "database: {} (", // size follows
        db.display()
    );
    assert!(out.starts_with(&expected), "{out}");
    for line in [
        "schema: original BITS schema, will be upgraded on first start",
        "integrity: ok",
        "status changes: 3, 2013-05-01 18:00:00 to 2013-05-02 09:30:00",
        "temperature samples: 3, 2013-05-02 09:00:00 to 2013-05-02 09:10:00",
        "messages: 1, 2013-05-02 10:00:00 to 2013-05-02 10:00:00",
        "users: 1",
        "pages: 1",
        "MAC hashes: 1",
        "registered devices: 0 (no table yet)",
        "history: 2013-05-01 18:00:00 to 2013-05-02 10:00:00",
    ] {
        assert!(out.lines().any(|l| l == line), "no line {line:?} in\n{out}");
    }
    assert_eq!(listing(dir.path()), before, "the files are as they were");
}

#[test]
fn check_reads_a_bitsd_database_stopped_or_running() {
    let dir = tempfile::tempdir().unwrap();
    let db = bitsd_database(dir.path());
    let before = listing(dir.path());
    assert_eq!(before.len(), 1, "one file while no server runs");
    let out = stdout_of(bitsd(&db, &["check"]));
    assert_eq!(listing(dir.path()), before, "the files are as they were");

    let schema = out.lines().find(|l| l.starts_with("schema: ")).unwrap();
    assert!(
        schema.starts_with("schema: version ") && schema.ends_with(" (current)"),
        "{out}"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (status, samples): (i64, i64) = (rows(&db, "Status"), rows(&db, "Temperature"));
    let (first, last): (String, String) = conn
        .query_row(
            r#"SELECT MIN(timestamp), MAX(timestamp) FROM "Temperature""#,
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    drop(conn);
    let line = format!(
        "temperature samples: {samples}, {} to {}",
        &first[..19],
        &last[..19]
    );
    assert!(out.lines().any(|l| l == line), "no line {line:?} in\n{out}");
    assert!(
        out.contains(&format!("\nstatus changes: {status}, ")),
        "{out}"
    );
    assert!(out.contains("\nusers: 1\n"), "the device user: {out}");

    // With the server running, its -wal and -shm are there and stay.
    let server = Spawned::start(&db);
    let running = names(dir.path());
    let again = stdout_of(bitsd(&db, &["check"]));
    assert!(again.contains("\nintegrity: ok\n"), "{again}");
    assert_eq!(names(dir.path()), running);
    drop(server);
}

#[test]
fn check_fails_in_one_line_on_a_damaged_or_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let good = bitsd_database(dir.path());
    let bytes = std::fs::read(&good).unwrap();

    let garbage = dir.path().join("garbage.db");
    std::fs::write(
        &garbage,
        (0..8192u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let missing = dir.path().join("missing.db");

    // An index that no longer matches its table: readable, but damaged.
    let inconsistent = dir.path().join("inconsistent.db");
    let conn = rusqlite::Connection::open(&inconsistent).unwrap();
    conn.execute_batch(LEGACY_SCHEMA).unwrap();
    conn.execute_batch(
        r#"CREATE INDEX ix_status_value ON "Status" (value);
           PRAGMA writable_schema = ON;
           UPDATE sqlite_schema SET sql = 'CREATE INDEX ix_status_value ON "Status" (modified_by)'
               WHERE name = 'ix_status_value';"#,
    )
    .unwrap();
    drop(conn);

    // Copied mid-transaction, once pages spilled into the file: the journal
    // is hot, and a reader may not roll it back.
    let interrupted = dir.path().join("interrupted.db");
    let writing = dir.path().join("writing.db");
    let mut conn = rusqlite::Connection::open(&writing).unwrap();
    conn.execute_batch(LEGACY_SCHEMA).unwrap();
    conn.execute_batch("PRAGMA cache_size = 1").unwrap();
    let tx = conn.transaction().unwrap();
    for i in 0..3000 {
        tx.execute(
            r#"INSERT INTO "Temperature" VALUES (?1, 20.0, 0, 'BITS')"#,
            [format!("2014-01-01 00:00:00.{i:06}")],
        )
        .unwrap();
    }
    std::fs::copy(&writing, &interrupted).unwrap();
    let journal = |db: &Path| PathBuf::from(format!("{}-journal", db.display()));
    std::fs::copy(journal(&writing), journal(&interrupted)).unwrap();
    tx.rollback().unwrap();
    drop(conn);

    let before = listing(dir.path());
    for (db, why) in [
        (&garbage, "file is not a database"),
        (&truncated, "malformed"),
        (&inconsistent, "integrity check failed: "),
        (&interrupted, "-journal holds an interrupted transaction; "),
    ] {
        let out = bitsd(db, &["check"]);
        let line = one_line_failure(&out, &format!("bitsd: cannot check {}: ", db.display()));
        assert!(line.contains(why), "{line}");
    }
    let out = bitsd(&missing, &["check"]);
    let line = one_line_failure(
        &out,
        &format!("bitsd: no database at {}: ", missing.display()),
    );
    assert!(line.contains("give --db PATH"), "{line}");
    assert_eq!(listing(dir.path()), before, "the files are as they were");
}
