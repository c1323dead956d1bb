//! `bitsd device ...` as an operator runs it: on a database bitsd made,
//! with its errors, and beside a bitsd serving the same database.

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

mod common;

use bitsd::clock::unix_seconds;
use bitsd::store::{Db, MAX_DEVICES};
use common::{PATIENCE, Spawned, bitsd_command, stdout_of};

/// `bitsd device ARGS` on `db`, in UTC.
fn device(db: &Path, args: &[&str]) -> Output {
    bitsd_command()
        .args(["--config", "/dev/null", "--timezone", "UTC", "--db"])
        .arg(db)
        .arg("device")
        .args(args)
        .output()
        .unwrap()
}

/// A new database at `d.db` in `dir`, as bitsd's first start leaves it.
fn new_database(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("d.db");
    Db::open(&db, false).unwrap();
    db
}

/// The claim code an `add` or `claim` printed.
fn code_of(printed: &str) -> String {
    let code = printed
        .lines()
        .find_map(|l| l.strip_prefix("claim code: "))
        .unwrap_or_else(|| panic!("no code in {printed}"))
        .to_string();
    let groups: Vec<&str> = code.split('-').collect();
    assert_eq!(groups.len(), 4, "{code}");
    assert!(
        groups.iter().all(|g| g.len() == 4
            && g.bytes()
                .all(|b| b"abcdefghjkmnpqrstuvwxyz23456789".contains(&b))),
        "{code}"
    );
    code
}

/// The one line of standard error of a command that had to fail with 1.
fn refusal(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let line = stderr.trim_end().to_string();
    assert!(line.starts_with("bitsd: "), "{line}");
    line
}

/// The line of `list` naming `name`.
fn listed(db: &Path, name: &str) -> String {
    let list = stdout_of(device(db, &["list"]));
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in {list}"))
        .to_string()
}

/// Claims as the device port will, through the library.
fn claim(db: &Path, code: &str) -> String {
    let mut db = Db::open(db, false).unwrap();
    db.claim_device(code, unix_seconds()).unwrap().key
}

fn key_works(db: &Path, key: &str) -> bool {
    Db::open(db, false)
        .unwrap()
        .device_by_key(key)
        .unwrap()
        .is_some()
}

#[test]
fn add_claim_list_revoke_delete() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_database(dir.path());

    let added = stdout_of(device(&db, &["add", "door"]));
    assert!(added.starts_with("added device door\n"), "{added}");
    assert!(added.contains(" UTC (in 15 minutes)"), "{added}");
    let code = code_of(&added);
    let line = listed(&db, "door");
    assert!(line.contains("never"), "{line}");
    assert!(line.contains("not claimed yet; code until "), "{line}");
    let list = stdout_of(device(&db, &["list"]));
    assert!(list.starts_with("NAME "), "{list}");
    assert!(
        list.contains("SEEN") && list.contains("TRANSPORT"),
        "{list}"
    );

    let key = claim(&db, &code.to_uppercase().replace('-', ""));
    assert!(key_works(&db, &key));
    let line = listed(&db, "door");
    assert!(line.contains("made ") && !line.contains("code"), "{line}");

    // A new code: the old key works until it is claimed.
    let again = stdout_of(device(&db, &["claim", "DOOR"]));
    assert!(again.starts_with("new claim code for door;"), "{again}");
    let new_code = code_of(&again);
    assert_ne!(new_code, code);
    assert!(listed(&db, "door").contains("; code until "));
    assert!(key_works(&db, &key));
    let new_key = claim(&db, &new_code);
    assert!(!key_works(&db, &key) && key_works(&db, &new_key));

    let revoked = stdout_of(device(&db, &["revoke", "door"]));
    assert_eq!(revoked, "revoked the key of door\n");
    assert!(!key_works(&db, &new_key));
    assert!(listed(&db, "door").contains("revoked "));
    let twice = stdout_of(device(&db, &["revoke", "door"]));
    assert!(twice.contains("door had no key"), "{twice}");

    stdout_of(device(&db, &["add", "lab"]));
    let deleted = stdout_of(device(&db, &["delete", "Door"]));
    assert_eq!(deleted, "deleted device door\n");
    let list = stdout_of(device(&db, &["list"]));
    assert!(!list.contains("door") && list.contains("lab"), "{list}");
    stdout_of(device(&db, &["delete", "lab"]));
    assert_eq!(stdout_of(device(&db, &["list"])), "no devices registered\n");
}

#[test]
fn refusals_are_one_line_with_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");

    let long = "x".repeat(33);
    for bad in ["has space", "dörr", "a.b", "", long.as_str()] {
        let line = refusal(device(&db, &["add", bad]));
        assert!(line.contains("is not a valid device name"), "{line}");
    }
    assert!(!db.exists(), "a bad name opens no database");
    // Without a database none is made: the path is named.
    let line = refusal(device(&db, &["add", "door"]));
    assert!(line.starts_with(&format!("bitsd: no database at {}: ", db.display())));
    assert!(!db.exists(), "no database is created");
    Db::open(&db, false).unwrap();
    // On a database, only the refusal is said.
    let line = refusal(device(&db, &["revoke", "nowhere"]));
    assert_eq!(line, "bitsd: no device named nowhere");
    stdout_of(device(&db, &["add", &"x".repeat(32)]));

    for reserved in ["BITS", "bits"] {
        let line = refusal(device(&db, &["add", reserved]));
        assert!(line.contains("reserved for the original device"), "{line}");
        refusal(device(&db, &["revoke", reserved]));
    }

    stdout_of(device(&db, &["add", "Door"]));
    let line = refusal(device(&db, &["add", "dOOR"]));
    assert_eq!(line, "bitsd: a device named Door already exists");

    for command in ["claim", "revoke", "delete"] {
        let line = refusal(device(&db, &[command, "nowhere"]));
        assert_eq!(line, "bitsd: no device named nowhere", "{command}");
    }

    // Filled up to the limit, the next one is refused.
    {
        let mut store = Db::open(&db, false).unwrap();
        for i in 2..MAX_DEVICES {
            store
                .add_device(&format!("d{i}"), unix_seconds(), 900)
                .unwrap();
        }
    }
    let line = refusal(device(&db, &["add", "one-more"]));
    assert!(line.contains("already 64 devices"), "{line}");
    stdout_of(device(&db, &["delete", "d2"]));
    stdout_of(device(&db, &["add", "one-more"]));

    let out = device(&db, &["add"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing NAME is a usage error"
    );
}

#[test]
fn claim_ttl_sets_how_long_a_code_lasts() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_database(dir.path());
    let added = stdout_of(device(&db, &["add", "door", "--claim-ttl", "60"]));
    assert!(added.contains("(in 1 minute)"), "{added}");
    let again = bitsd_command()
        .args(["--config", "/dev/null", "--db"])
        .arg(&db)
        .args(["device", "claim", "door"])
        .env("BITSD_CLAIM_TTL", "604800")
        .output()
        .unwrap();
    assert!(stdout_of(again).contains("(in 7 days)"));
    for bad in ["59", "604801", "soon"] {
        let out = device(&db, &["list", "--claim-ttl", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.lines().next().unwrap().contains("--claim-ttl"),
            "{stderr}"
        );
    }
}

/// The body of `GET /status`: `0` or `1`.
fn status(web: std::net::SocketAddr) -> String {
    let out = common::http_get(web, "/status");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.rsplit("\r\n\r\n").next().unwrap().to_string()
}

/// Waits until the server's `/status` says `want`.
fn wait_for_status(web: std::net::SocketAddr, want: &str) {
    let started = Instant::now();
    while status(web) != want {
        assert!(started.elapsed() < PATIENCE, "/status never became {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn works_beside_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let mut server = Spawned::start(&db);
    let mut link = std::net::TcpStream::connect(server.control).unwrap();
    link.write_all(b"status 1\n").unwrap();
    wait_for_status(server.web, "1");

    let code = code_of(&stdout_of(device(&db, &["add", "door"])));
    let line = refusal(device(&db, &["add", "DOOR"]));
    assert!(line.contains("already exists"), "{line}");
    let key = claim(&db, &code);
    assert!(listed(&db, "door").contains("made "));
    stdout_of(device(&db, &["claim", "door"]));
    stdout_of(device(&db, &["revoke", "door"]));
    assert!(!key_works(&db, &key));
    stdout_of(device(&db, &["add", "lab"]));
    stdout_of(device(&db, &["delete", "door"]));
    let list = stdout_of(device(&db, &["list"]));
    assert!(list.contains("lab") && !list.contains("door"), "{list}");

    // The server still writes its events to the database.
    link.write_all(b"status 0\n").unwrap();
    wait_for_status(server.web, "0");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "bitsd still runs"
    );
    drop(link);
    let check = stdout_of(
        bitsd_command()
            .args(["--config", "/dev/null", "--db"])
            .arg(&db)
            .arg("check")
            .output()
            .unwrap(),
    );
    assert!(check.contains("status changes: 2"), "{check}");
}
