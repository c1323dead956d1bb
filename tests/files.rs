//! Which files: every command finds the database where the server does
//! (the configuration file's `db`, with no `--db`), and a command that
//! needs an existing database and finds none creates nothing and says
//! which absolute path it tried and how to point elsewhere.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{bitsd_command, spawn_with_input, stdout_of};

fn usermanage_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_usermanage"));
    command.env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("BITSD_") {
            command.env_remove(key);
        }
    }
    command
}

/// `command` run in the folder `cwd` with the configuration file `config`
/// given as `BITSD_CONFIG` (as `/etc/bitsd.toml` is found, with no flag),
/// `stdin` written to it.
fn run_in(mut command: Command, cwd: &Path, config: &Path, stdin: &str) -> Output {
    command.current_dir(cwd).env("BITSD_CONFIG", config);
    spawn_with_input(&mut command, Some(stdin))
        .wait_with_output()
        .unwrap()
}

fn usermanage(cwd: &Path, config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut command = usermanage_command();
    command.args(args);
    run_in(command, cwd, config, stdin)
}

fn bitsd(cwd: &Path, config: &Path, args: &[&str]) -> Output {
    let mut command = bitsd_command();
    command.args(args);
    run_in(command, cwd, config, "")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The one line on standard error of a command that exited 1.
fn refusal(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr.trim_end().to_string()
}

#[test]
fn every_command_uses_the_configured_database_without_db() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let db = state.join("bitsd.db");
    let config = dir.path().join("bitsd.toml");
    std::fs::write(&config, format!("db = {:?}\n", db.display().to_string())).unwrap();

    stdout_of(bitsd(&elsewhere, &config, &["bootstrap"]));
    let added = usermanage(
        &elsewhere,
        &config,
        &["add", "alice", "--password-stdin"],
        "secret\n",
    );
    assert_eq!(stdout_of(added), "added alice\n");
    let listed = stdout_of(usermanage(&elsewhere, &config, &["list"], ""));
    assert!(listed.contains("alice"), "{listed}");
    let device = stdout_of(bitsd(&elsewhere, &config, &["device", "add", "door"]));
    assert!(device.starts_with("added device door"), "{device}");

    let copy = dir.path().join("copy.db");
    let backed_up = stdout_of(bitsd(
        &elsewhere,
        &config,
        &["backup", copy.to_str().unwrap()],
    ));
    assert!(
        backed_up.contains(&format!("copy of {}", db.display())),
        "{backed_up}"
    );
    let checked = stdout_of(bitsd(&elsewhere, &config, &["check"]));
    assert!(
        checked.contains("users: 2"),
        "alice and the device: {checked}"
    );
    assert!(checked.contains("registered devices: 1"), "{checked}");
    assert!(entries(&elsewhere).is_empty(), "{:?}", entries(&elsewhere));
}

#[test]
fn without_a_database_nothing_is_created_and_the_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    // A configuration that names no database: the default, bitsd.db in
    // the current folder.
    let config = dir.path().join("bitsd.toml");
    std::fs::write(&config, "web_port = 8008\n").unwrap();
    let tried = empty.join("bitsd.db");
    let expected = format!(
        "no database at {}: give --db PATH, or set db in {} \
         (bitsd creates the database when it first starts)",
        tried.display(),
        config.display()
    );

    for args in [
        &["add", "alice", "--password-stdin"][..],
        &["list"],
        &["delete", "alice"],
        &["mac", "delete", &"a".repeat(64)],
    ] {
        let out = usermanage(&empty, &config, args, "secret\n");
        assert_eq!(refusal(&out), format!("usermanage: {expected}"), "{args:?}");
    }
    let copy = dir.path().join("copy.db");
    for args in [
        &["backup", copy.to_str().unwrap()][..],
        &["check"],
        &["device", "add", "door"],
        &["device", "list"],
    ] {
        let out = bitsd(&empty, &config, args);
        assert_eq!(refusal(&out), format!("bitsd: {expected}"), "{args:?}");
    }
    assert!(entries(&empty).is_empty(), "{:?}", entries(&empty));
    assert!(!copy.exists());

    // A relative --db is named by its absolute path too.
    let out = usermanage(&empty, &config, &["--db", "other.db", "list"], "");
    let line = refusal(&out);
    assert!(
        line.starts_with(&format!(
            "usermanage: no database at {}: ",
            empty.join("other.db").display()
        )),
        "{line}"
    );
    assert!(entries(&empty).is_empty(), "{:?}", entries(&empty));
}
