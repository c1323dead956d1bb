//! The `bitsd` binary as an operator runs it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{bitsd_command as bitsd, http_get, stdout_of};

#[test]
fn a_bad_value_is_refused_with_status_2_naming_the_option() {
    let cases: &[&[&str]] = &[
        &["--web-port", "eighty"],
        &["--usocket-mode", "rw-------"],
        &["--control-remote-address", "everyone"],
        &["--timezone", "Nowhere/Special"],
        &["--developer-mode=yes"],
    ];
    for args in cases {
        let out = bitsd()
            .args(["--config", "/dev/null"])
            .args(*args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        let option = args[0].split('=').next().unwrap();
        assert!(first.contains(option), "{args:?}: {stderr}");
    }
}

#[test]
fn a_mistaken_flag_is_one_line_like_a_mistaken_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bitsd.toml");
    std::fs::write(&file, "[spaceapi]\nspace = \"POuL\"\nweb_port = 8009\n").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--config", "/dev/null", "--web-prot", "8000"],
            "bitsd: unexpected argument '--web-prot' found; a similar argument exists: '--web-port'",
        ),
        (
            &["--config", file.to_str().unwrap()],
            "top-level options go above the first [table]",
        ),
    ];
    for (args, said) in cases {
        let out = bitsd().args(*args).arg("check").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "no usage after it: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }
    let help = bitsd().arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0), "help is no mistake");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--web-port"));

    // usermanage's flags read the same, with what is missing named.
    let usermanage = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_usermanage"))
            .args(args)
            .output()
            .unwrap()
    };
    for (args, said) in [
        (
            &["--bogus", "list"][..],
            "usermanage: unexpected argument '--bogus' found\n",
        ),
        (
            &["add"],
            "usermanage: the following required arguments were not provided: <USER>\n",
        ),
        (
            &["lsit"],
            "usermanage: unrecognized subcommand 'lsit'; a similar subcommand exists: 'list'\n",
        ),
    ] {
        let out = usermanage(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), said, "{args:?}");
    }
    let help = usermanage(&["--help"]);
    assert_eq!(help.status.code(), Some(0), "help is no mistake");
}

#[test]
fn a_bad_environment_value_or_file_key_is_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let out = bitsd()
        .args(["--config", "/dev/null", "--db"])
        .arg(dir.path().join("x.db"))
        .env("BITSD_CONTROL_LOCAL_PORT", "99999")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .next()
            .unwrap()
            .contains("--control-local-port")
    );

    let file = dir.path().join("bitsd.toml");
    std::fs::write(&file, "web_port = 8008\nweb_prot = 8009\n").unwrap();
    let out = bitsd()
        .arg("--config")
        .arg(&file)
        .arg("--db")
        .arg(dir.path().join("x.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().next().unwrap().contains("web_prot"),
        "{stderr}"
    );
    assert!(!dir.path().join("x.db").exists(), "nothing opened");
}

#[test]
fn help_lists_every_option_grouped_with_defaults() {
    let out = bitsd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for heading in [
        "Web:",
        "Device:",
        "Unix sockets:",
        "Storage:",
        "Members:",
        "Presence:",
        "Operation:",
    ] {
        assert!(help.contains(heading), "{heading}: {help}");
    }
    for option in [
        "--web-address",
        "--web-port",
        "--web-usocket",
        "--control-local-address",
        "--control-local-port",
        "--control-local-usocket",
        "--control-remote-address",
        "--control-token",
        "--usocket-uid",
        "--usocket-gid",
        "--usocket-mode",
        "--reverse-proxied",
        "--db ",
        "--db-uri",
        "--jsonver",
        "--mdescape",
        "--assets-path",
        "--wiki-path",
        "--cookie-secret",
        "--cookie-max-age-days",
        "--min-login-retry",
        "--mac-update-password",
        "--mac-update-interval",
        "--auto-status",
        "--auto-open-after",
        "--auto-close-after",
        "--timezone",
        "--log-requests",
        "--log-queries",
        "--developer-mode",
    ] {
        assert!(help.contains(option), "{option} missing from --help");
    }
    assert!(help.contains("[default: 8008]"), "{help}");
    assert!(help.contains("[env: BITSD_WEB_PORT]"), "{help}");
}

#[test]
fn bootstrap_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let wiki = concat!(env!("CARGO_MANIFEST_DIR"), "/wiki");
    let run = || {
        let out = bitsd()
            .args(["--config", "/dev/null", "--db"])
            .arg(&db)
            .args(["bootstrap", "--wiki-path", wiki])
            .output()
            .unwrap();
        stdout_of(out)
    };
    let first = run();
    assert!(
        first.contains("1 page(s) loaded") && first.contains("info"),
        "{first}"
    );
    let second = run();
    assert!(second.contains("0 page(s) loaded, 1 unchanged"), "{second}");
}

#[test]
fn serves_logs_its_addresses_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bitsd.toml");
    // File sets the web port, the environment overrides it, a flag sets the control port.
    std::fs::write(&file, "web_port = 1\nweb_address = \"127.0.0.1\"\n").unwrap();
    // Named by relative paths, from the folder that holds them.
    let mut child = bitsd()
        .current_dir(dir.path())
        .args(["--config", "bitsd.toml", "--db", "s.db"])
        .args(["--control-local-port", "0"])
        .env("BITSD_WEB_PORT", "0")
        .env("BITSD_NOT_AN_OPTION", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut web = None;
    let mut control = false;
    while web.is_none() || !control {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "bitsd exited: {seen}"
        );
        if let Some(rest) = line.split("web listening on ").nth(1) {
            web = Some(rest.trim().to_string());
        }
        control |= line.contains("control listening on 127.0.0.1:");
        seen.push_str(&line);
    }
    assert!(
        seen.contains("BITSD_NOT_AN_OPTION"),
        "unknown variables are warned about: {seen}"
    );
    // The files it uses, by absolute path, whatever the working folder.
    let db = dir.path().join("s.db");
    assert!(
        seen.contains(&format!("database {}", db.display())),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("configuration read from {}", file.display())),
        "{seen}"
    );
    let web = web.unwrap();
    assert!(
        web.starts_with("127.0.0.1:") && !web.ends_with(":1"),
        "{web}"
    );

    let body = http_get(&web, "/status");
    assert!(body.ends_with("\r\n\r\n0"), "{body}");

    // Connections that would hold a naive shutdown: a device, an idle
    // keep-alive client and a request that never finishes its headers.
    let control_addr = seen
        .split("control listening on ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .unwrap()
        .trim()
        .to_string();
    let _device = std::net::TcpStream::connect(&control_addr).unwrap();
    let mut idle = std::net::TcpStream::connect(&web).unwrap();
    {
        use std::io::Write;
        write!(idle, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut partial = std::net::TcpStream::connect(&web).unwrap();
        write!(partial, "GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
        std::mem::forget(partial);
    }
    std::thread::sleep(Duration::from_millis(100));

    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bitsd did not stop within 2 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "{code:?}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("panicked"), "{rest}");
}

#[test]
fn developer_mode_says_so_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bitsd()
        .args([
            "--config",
            "/dev/null",
            "--developer-mode",
            "--web-address",
            "127.0.0.1",
        ])
        .args(["--web-port", "0", "--control-local-port", "0", "--db"])
        .arg(dir.path().join("d.db"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("web listening on") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "bitsd exited: {seen}"
        );
        seen.push_str(&line);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("DEVELOPER MODE"), "{seen}");
    assert!(seen.contains("DEBUG"), "debug-level logging: {seen}");
}
