//! Under systemd (`Type=notify`) bitsd says `READY=1` once `/data` answers
//! and `STOPPING=1` when it begins to shut down, through the socket named by
//! `NOTIFY_SOCKET`: a path or an abstract name.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;

use common::{PATIENCE, bitsd_command};
use tokio::net::UnixDatagram;

async fn next_message(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 512];
    let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buffer))
        .await
        .expect("a message from bitsd in time")
        .unwrap();
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

/// Starts the real binary with `NOTIFY_SOCKET=name`, waits for `READY=1`
/// on `socket`, asks `/data` at once, then stops it with SIGTERM.
async fn ready_then_stopping(socket: UnixDatagram, name: &OsStr) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bitsd_command()
        .args(["--config", "/dev/null", "--db"])
        .arg(dir.path().join("bitsd.db"))
        .args(["--web-address", "127.0.0.1", "--web-port", "0"])
        .args(["--control-local-port", "0"])
        .env("NOTIFY_SOCKET", name)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The web address is in the log; the log is read to the end so bitsd
    // never blocks on a full pipe.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (address_tx, address_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut address_tx = Some(address_tx);
        for line in stderr.lines().map_while(Result::ok) {
            let found = line
                .split("web listening on ")
                .nth(1)
                .and_then(|rest| rest.trim().parse::<SocketAddr>().ok());
            if let Some(address) = found
                && let Some(tx) = address_tx.take()
            {
                let _ = tx.send(address);
            }
        }
    });

    assert_eq!(next_message(&socket).await, "READY=1");
    let web = tokio::time::timeout(PATIENCE, address_rx)
        .await
        .unwrap()
        .expect("bitsd logs its web address");
    let data: serde_json::Value = reqwest::get(format!("http://{web}/data"))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(data, serde_json::json!({"version": 3}));

    // SAFETY: kill only sends a signal to the child this test started.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    assert_eq!(next_message(&socket).await, "STOPPING=1");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn ready_and_stopping_through_a_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    ready_then_stopping(socket, path.as_os_str()).await;
}

#[tokio::test]
async fn ready_and_stopping_through_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("bitsd-notify-test-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let socket = std::os::unix::net::UnixDatagram::bind_addr(&address).unwrap();
    socket.set_nonblocking(true).unwrap();
    let socket = UnixDatagram::from_std(socket).unwrap();
    ready_then_stopping(socket, OsStr::new(&format!("@{name}"))).await;
}
