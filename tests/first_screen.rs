//! The README's first screen, typed as a newcomer types it: `make run`'s
//! commands as `make -n run` prints them (the test's debug build standing
//! in for the release one, free ports for 8008 and 8888), then every
//! command of the blocks after it, in bash, in the folder `make run` serves
//! from. Each must end on its own (nothing waits for a Ctrl-C it does not
//! name) and do what its comment says.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mosquitto::free_port;
use common::{http_get, root, spawn_with_input};

/// How long one command may take; only a failing one waits this long.
const PATIENCE: Duration = Duration::from_secs(60);

/// Where the README's `./target/release/` programs are in this build.
fn programs() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_bitsd"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One command as the README writes it, before its `#` comment, and the
/// comment.
struct Typed {
    command: String,
    comment: String,
}

/// The commands of the `sh` blocks between `make run going` and the next
/// heading.
fn first_screen() -> Vec<Typed> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("With `make run` going")
        .expect("the README says what to type with `make run` going");
    let rest = &readme[start..];
    let rest = &rest[..rest.find("\n## ").unwrap()];
    let mut typed = Vec::new();
    let mut in_block = false;
    for line in rest.lines() {
        match line.trim() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            text if in_block && !text.starts_with('#') && !text.is_empty() => {
                let (command, comment) = text.split_once(" # ").unwrap_or((text, ""));
                typed.push(Typed {
                    command: command.trim().to_string(),
                    comment: comment.trim().to_string(),
                });
            }
            _ => {}
        }
    }
    typed
}

/// The instance's ports in place of the README's, and this build's
/// programs in place of the release ones.
struct Instance {
    dir: tempfile::TempDir,
    web: u16,
    control: u16,
}

impl Instance {
    fn rewrite(&self, command: &str) -> String {
        command
            .replace("127.0.0.1:8008", &format!("127.0.0.1:{}", self.web))
            .replace("127.0.0.1/8888", &format!("127.0.0.1/{}", self.control))
            .replace("./target/release/", &format!("{}/", programs().display()))
    }

    /// What `make -n TARGET` would run, with this instance's ports, less
    /// the build, rewritten for this build.
    fn make(&self, target: &str) -> Vec<String> {
        let out = Command::new("make")
            .current_dir(root())
            .args(["-n", "-s", target])
            .arg(format!("WEB_PORT={}", self.web))
            .arg(format!("CONTROL_PORT={}", self.control))
            .output()
            .unwrap();
        assert!(out.status.success(), "make -n {target}");
        String::from_utf8(out.stdout)
            .unwrap()
            .replace("\\\n", " ")
            .lines()
            .filter(|l| l.starts_with("./target/release/"))
            .map(|l| self.rewrite(l))
            .collect()
    }

    /// `command` in bash, in the folder `make run` serves from, free of the
    /// test's `BITSD_*` variables.
    fn bash(&self, command: &str) -> Command {
        let mut bash = Command::new("bash");
        bash.arg("-c")
            .arg(command)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_remove("RUST_LOG");
        for (key, _) in std::env::vars() {
            if key.starts_with("BITSD_") {
                bash.env_remove(key);
            }
        }
        bash
    }

    /// Runs `command` to its end, which must come within [`PATIENCE`].
    fn run(&self, command: &str, stdin: Option<&str>) -> Output {
        let mut child = spawn_with_input(&mut self.bash(command), stdin);
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > PATIENCE {
                child.kill().unwrap();
                panic!("{command:?} did not end by itself within {PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The body of `GET path`.
    fn get(&self, path: &str) -> String {
        let response = http_get(("127.0.0.1", self.web), path);
        let (_, body) = response.split_once("\r\n\r\n").unwrap_or(("", ""));
        body.to_string()
    }

    /// Waits until `GET path`'s body satisfies `done`.
    fn wait_for(&self, what: &str, path: &str, done: impl Fn(&str) -> bool) {
        let started = Instant::now();
        loop {
            let body = self.get(path);
            if done(&body) {
                return;
            }
            assert!(started.elapsed() < PATIENCE, "{what}: {path} says {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The server `make run` starts, stopped at the end of the test.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command the README stops with Ctrl-C, stopped the same way.
fn interrupt(child: &mut Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < PATIENCE, "Ctrl-C did not stop it");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_first_screen_works_as_written() {
    let instance = Instance {
        dir: tempfile::tempdir().unwrap(),
        web: free_port(),
        control: free_port(),
    };
    let run = instance.make("run");
    let [bootstrap, serve] = run.as_slice() else {
        panic!("make run: expected bootstrap, then the server: {run:?}");
    };
    instance.run(bootstrap, None);
    let mut child = instance
        .bash(&format!("exec {serve}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let server = Server(child);
    let mut line = String::new();
    while !line.contains("control listening on ") {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "bitsd exited early");
    }
    std::thread::spawn(move || for _ in log.lines() {});

    let typed = first_screen();
    assert!(typed.len() >= 6, "{:?}", typed.len());
    for Typed { command, comment } in &typed {
        if let Some(target) = command.strip_prefix("make ") {
            let [fake] = instance.make(target).try_into().unwrap_or_else(|lines| {
                panic!("make {target}: expected one command, not {lines:?}")
            });
            if comment.contains("Ctrl-C") {
                let before = instance.get("/data");
                // `exec`, so that the Ctrl-C reaches the program itself.
                let mut device = instance.bash(&format!("exec {fake}")).spawn().unwrap();
                instance.wait_for("the fake device's samples", "/data", |now| {
                    now != before && now.contains("\"tempint\"")
                });
                interrupt(&mut device);
            } else {
                let out = instance.run(&fake, None);
                let said = String::from_utf8_lossy(&out.stdout);
                assert!(said.contains("past day(s) written"), "{said}");
                // The device's one opening so far, then weeks of changes.
                let changes = |log: &str| {
                    let log: serde_json::Value = serde_json::from_str(log).unwrap();
                    log["log"].as_array().unwrap().len()
                };
                let log = instance.get("/log?format=json&limit=100");
                assert!(changes(&log) > 20, "{log}");
            }
            continue;
        }
        let command = instance.rewrite(command);
        if command.contains("usermanage") {
            // No terminal here: the password comes on standard input.
            let out = instance.run(&format!("{command} --password-stdin"), Some("pw\n"));
            assert_eq!(String::from_utf8_lossy(&out.stdout), "added alice\n");
            continue;
        }
        let out = instance.run(&command, None);
        let said = String::from_utf8_lossy(&out.stdout);
        if command.contains("/dev/tcp/") {
            instance.wait_for("the room opened by the device", "/status", |s| s == "1");
        } else if comment == "1" {
            assert_eq!(said, "1", "{command}");
        } else if command.ends_with("/data") {
            let data: serde_json::Value = serde_json::from_str(&said).unwrap();
            assert_eq!(data["status"]["value"], "open", "{said}");
            assert_eq!(data["tempint"]["value"], 21.5, "{said}");
        } else {
            panic!("the test does not know {command:?}: say what it should check");
        }
    }
    drop(server);
}
