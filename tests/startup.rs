//! Every failure to start is one plain line naming the thing and the cause,
//! then exit 1 (runtime) or 2 (configuration) (SPEC 15).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;

use common::bitsd_command;

/// Runs bitsd in `dir` with `args` (after `--config /dev/null` unless the
/// arguments name their own) and returns its exit code and standard error.
fn fails(dir: &Path, args: &[&str], env: &[(&str, &str)], nobody: bool) -> (i32, String) {
    let mut command = bitsd_command();
    command.current_dir(dir);
    if !args.contains(&"--config") {
        command.args(["--config", "/dev/null"]);
    }
    command.args(args).envs(env.iter().copied());
    if nobody {
        // Permissions mean nothing to root: ask as nobody.
        command.uid(65534).gid(65534);
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn each_start_up_failure_is_one_plain_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Readable by anyone, so the permission case can run as nobody.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let locked = d.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::write(d.join("notes.db"), "these are not the droids\n".repeat(200)).unwrap();
    std::fs::write(d.join("bad.toml"), "web_port = 80\nweb_address = \n").unwrap();
    std::fs::write(d.join("port.toml"), "web_port = \"x\"\n").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let root = unsafe { libc::geteuid() } == 0;

    let serve = ["--web-address", "127.0.0.1", "--web-port", "0"];
    let serve = [&serve[..], &["--control-local-port", "0"]].concat();
    let with = |extra: &[&'static str]| [&serve[..], extra].concat();
    // Arguments, environment, run as nobody, exit code, the line.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, bool, i32, String);
    let mut cases: Vec<Case> = Vec::new();
    // A database that cannot be opened: exit 1, naming the file and why.
    for (db, nobody, cause) in [
        (
            "/nonexistent/bitsd.db",
            false,
            "the directory /nonexistent does not exist",
        ),
        ("locked/bitsd.db", root, "permission denied on locked"),
        ("notes.db", false, "the file is not an SQLite database"),
        ("notes.db/bitsd.db", false, "notes.db is not a directory"),
    ] {
        let line = format!("bitsd: cannot open database {db}: {cause}");
        cases.push((with(&["--db", db]), vec![], nobody, 1, line));
    }
    // A configuration file that cannot be used: exit 2, naming the file
    // and why.
    for (file, cause) in [
        ("missing.toml", "cannot read it: no such file or directory"),
        (
            "bad.toml",
            "not valid TOML at line 2, column 15: string values must be quoted, expected literal string",
        ),
        (
            "port.toml",
            "web_port: invalid value \"x\": expected a number from 0 to 65535",
        ),
    ] {
        let line = format!("bitsd: {file}: {cause}");
        cases.push((vec!["--config", file], vec![], false, 2, line));
    }
    cases.extend([
        (
            vec![
                "--web-address",
                "127.0.0.1",
                "--web-port",
                &taken_port,
                "--control-local-port",
                "0",
            ],
            vec![],
            false,
            1,
            format!(
                "bitsd: cannot listen on 127.0.0.1:{taken_port} (web): the address is already in use"
            ),
        ),
        (
            with(&["--control-local-address", "192.0.2.1"]),
            vec![],
            false,
            1,
            "bitsd: cannot listen on 192.0.2.1:0 (device): the address is not one of this machine's"
                .into(),
        ),
        (
            serve.clone(),
            vec![("BITSD_WEB_PORT", "eighty")],
            false,
            2,
            "bitsd: BITSD_WEB_PORT: invalid value \"eighty\" for --web-port: expected a number from 0 to 65535".into(),
        ),
    ]);
    for (args, env, nobody, code, line) in cases {
        let (got, stderr) = fails(d, &args, &env, nobody);
        assert_eq!(stderr.trim_end(), line, "{args:?}");
        assert_eq!(got, code, "{args:?}: {stderr}");
    }
    assert!(
        !d.join("locked/bitsd.db").exists() && !d.join("bitsd.db").exists(),
        "no database was created by a failed start"
    );
    drop(taken);
}
