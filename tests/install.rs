//! `make install` and `make uninstall` against the binaries this test run
//! built: every file in its place with its mode, a unit that follows PREFIX
//! and that `systemd-analyze verify` accepts, man pages that render, and
//! nothing left behind.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::root;

/// The folder of the binaries `cargo test` built.
fn build_dir() -> PathBuf {
    let bitsd = Path::new(env!("CARGO_BIN_EXE_bitsd"));
    let dir = bitsd.parent().unwrap().to_path_buf();
    assert_eq!(
        Path::new(env!("CARGO_BIN_EXE_usermanage")).parent(),
        Some(dir.as_path())
    );
    dir
}

/// `make TARGET DESTDIR=.. PREFIX=.. BUILD_DIR=..` in the repository,
/// free of the variables of a make this test may run under.
fn make(target: &str, destdir: &Path, prefix: &Path) -> Output {
    let out = Command::new("make")
        .current_dir(root())
        .args(["--no-print-directory", target])
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("PREFIX={}", prefix.display()))
        .arg(format!("BUILD_DIR={}", build_dir().display()))
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .expect("make runs");
    assert!(
        out.status.success(),
        "make {target}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, found);
            } else {
                found.insert(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(dir, dir, &mut found);
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether `program` runs here (`program --version` succeeds).
fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

#[test]
fn install_puts_every_file_in_place_and_uninstall_takes_them_away() {
    let destdir = tempfile::tempdir().unwrap();
    make("install", destdir.path(), Path::new("/usr"));
    let usr = destdir.path().join("usr");

    let expected: BTreeSet<String> = [
        "bin/bitsd",
        "bin/usermanage",
        "share/man/man1/bitsd.1",
        "share/man/man1/usermanage.1",
        "share/bash-completion/completions/bitsd",
        "share/bash-completion/completions/usermanage",
        "share/zsh/site-functions/_bitsd",
        "share/zsh/site-functions/_usermanage",
        "share/fish/vendor_completions.d/bitsd.fish",
        "share/fish/vendor_completions.d/usermanage.fish",
        "lib/systemd/system/bitsd.service",
        "share/doc/bitsd/bitsd.toml.example",
        "share/doc/bitsd/nginx.conf",
    ]
    .map(|f| format!("usr/{f}"))
    .into();
    assert_eq!(files(destdir.path()), expected);

    for program in ["bitsd", "usermanage"] {
        let installed = usr.join("bin").join(program);
        assert_eq!(mode(&installed), 0o755, "{program}");
        assert!(
            std::fs::read(&installed).unwrap() == std::fs::read(build_dir().join(program)).unwrap(),
            "{program} is the built binary"
        );
    }
    for file in expected.iter().filter(|f| !f.starts_with("usr/bin/")) {
        assert_eq!(mode(&destdir.path().join(file)), 0o644, "{file}");
    }

    let unit = read(&usr.join("lib/systemd/system/bitsd.service"));
    let exec: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(exec, ["ExecStart=/usr/bin/bitsd"]);
    assert!(unit.contains("\nType=notify\n"));
    assert!(!unit.contains("/usr/local"), "every path follows PREFIX");

    for (file, source) in [
        ("bitsd.toml.example", "deploy/bitsd.toml.example"),
        ("nginx.conf", "deploy/nginx.conf"),
    ] {
        assert_eq!(
            read(&usr.join("share/doc/bitsd").join(file)),
            read(&root().join(source))
        );
    }

    for (page, title) in [("bitsd.1", "BITSD(1)"), ("usermanage.1", "USERMANAGE(1)")] {
        let path = usr.join("share/man/man1").join(page);
        let roff = read(&path);
        assert!(roff.lines().any(|l| l.starts_with(".TH ")), "{page}");
        if available("man") {
            let out = Command::new("man")
                .arg("-l")
                .arg(&path)
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "100")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.contains(title), "{page}: {text}");
            assert!(text.contains("EXIT STATUS"), "{page}");
        } else {
            eprintln!("man is not installed: {page} checked for .TH only");
        }
    }
    let page = read(&usr.join("share/man/man1/bitsd.1"));
    assert!(
        page.contains("\\-\\-web\\-port"),
        "the options are in the page"
    );

    let bash = usr.join("share/bash-completion/completions/bitsd");
    assert!(read(&bash).contains("complete -F _bitsd"));
    if available("bash") {
        let out = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        read(&usr.join("share/zsh/site-functions/_usermanage")).starts_with("#compdef usermanage")
    );
    assert!(
        read(&usr.join("share/fish/vendor_completions.d/bitsd.fish")).contains("complete -c bitsd")
    );

    make("uninstall", destdir.path(), Path::new("/usr"));
    assert_eq!(files(destdir.path()), BTreeSet::new(), "nothing is left");
    assert!(!usr.join("share/doc/bitsd").exists());
}

#[test]
fn the_installed_unit_passes_systemd_analyze_verify() {
    if !available("systemd-analyze") {
        eprintln!("skipped: systemd-analyze is not available here");
        return;
    }
    // Installed under a real prefix, so the unit's ExecStart and its man
    // pages are there to be checked.
    let prefix = tempfile::tempdir().unwrap();
    make("install", Path::new(""), prefix.path());
    let unit = prefix.path().join("lib/systemd/system/bitsd.service");
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify");
    if available("man") {
        verify.env("MANPATH", prefix.path().join("share/man"));
    } else {
        eprintln!("man is not installed: the unit's man: links are not checked");
        verify.arg("--man=no");
    }
    let out = verify.arg(&unit).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.is_empty(),
        "systemd-analyze verify: {said}"
    );
    make("uninstall", Path::new(""), prefix.path());
    assert_eq!(files(prefix.path()), BTreeSet::new());
}
