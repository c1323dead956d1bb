//! The device flood over each transport of SPEC 18: the original device on
//! the control port, registered devices over TLS and the `/device`
//! websocket, and four registered devices at once. Each connection is made
//! (and its claim answered) before the flood, so only the lines are timed.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::process::Spawned;
use super::{DEADLINE, FLOOD_END, PeakRss, cpu_ms, start_bitsd, ws_connect};

/// How a flood's lines reach bitsd.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transport {
    Tcp,
    Tls,
    Websocket,
}

/// A device connection ready to flood: the write half of its byte stream
/// (a websocket's frames are written raw, see [`frames`]).
pub struct Flooder {
    pub transport: Transport,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
}

/// bitsd with its TLS port on, the addresses to reach it, and the trust for
/// its certificate.
pub struct Club {
    pub bitsd: Spawned,
    pub tls: SocketAddr,
    pub db: PathBuf,
    connector: tokio_rustls::TlsConnector,
    /// The next loopback address for a registered device: one claim a
    /// second is allowed per address.
    next_address: u8,
    /// Floods so far: each has markers of its own.
    floods: u64,
}

impl Club {
    /// A fresh bitsd in `dir` with a TLS port whose certificate (for
    /// 127.0.0.1) is made here, taking devices from all of 127.0.0.0/8.
    pub fn start(dir: &Path) -> Club {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
        let bitsd = start_bitsd(
            dir,
            &[
                "--control-remote-address",
                "127.0.0.0/8",
                "--control-tls-port",
                "0",
                "--control-tls-address",
                "127.0.0.1",
                "--control-tls-cert",
                &cert_arg,
                "--control-tls-key",
                &key_arg,
            ],
        );
        let tls = bitsd.logged_address("control TLS listening on ", DEADLINE);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Club {
            bitsd,
            tls,
            db: dir.join("bench.db"),
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            next_address: 11,
            floods: 0,
        }
    }

    /// The original device on the control port, plain TCP, no token.
    pub async fn original(&self) -> Flooder {
        let stream = TcpStream::connect(self.bitsd.control).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (read, write) = stream.into_split();
        drain(read);
        Flooder {
            transport: Transport::Tcp,
            writer: Box::new(write),
        }
    }

    /// Registers the device `name` (`bitsd device add`) and connects it over
    /// `transport` with its claim code; returns once bitsd answered its key.
    pub async fn registered(&mut self, name: &str, transport: Transport) -> Flooder {
        let code = claim_code(&self.db, name);
        let from = IpAddr::from([127, 0, 0, self.next_address]);
        self.next_address += 1;
        let claim = format!("claim {code}");
        let writer: Box<dyn AsyncWrite + Unpin + Send> = match transport {
            Transport::Tcp => {
                let (read, mut write) = tcp_from(from, self.bitsd.control).await.into_split();
                write
                    .write_all(format!("{claim}\n").as_bytes())
                    .await
                    .unwrap();
                keyed(read).await;
                Box::new(write)
            }
            Transport::Tls => {
                let tcp = tcp_from(from, self.tls).await;
                let name = rustls_pki_types::ServerName::IpAddress(self.tls.ip().into());
                let tls = self.connector.connect(name, tcp).await.expect("TLS");
                let (read, mut write) = tokio::io::split(tls);
                write
                    .write_all(format!("{claim}\n").as_bytes())
                    .await
                    .unwrap();
                write.flush().await.unwrap();
                keyed(read).await;
                Box::new(write)
            }
            Transport::Websocket => {
                let tcp = tcp_from(from, self.bitsd.web).await;
                let url = format!("ws://{}/device", self.bitsd.web);
                let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
                ws.send(Message::text(claim)).await.unwrap();
                let answer = tokio::time::timeout(DEADLINE, ws.next()).await;
                let Ok(Some(Ok(Message::Text(answer)))) = answer else {
                    panic!("no answer to the claim: {answer:?}");
                };
                assert!(answer.starts_with("key "), "{answer}");
                let (read, write) = ws.into_inner().into_split();
                drain(read);
                Box::new(write)
            }
        };
        Flooder { transport, writer }
    }
}

/// A TCP connection to `to` from the local address `from`.
async fn tcp_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(to).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Waits for the `key <key>` line that answers a claim, then reads (and
/// drops) whatever else bitsd sends.
async fn keyed<R: AsyncRead + Unpin + Send + 'static>(read: R) {
    let mut lines = BufReader::new(read);
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, lines.read_line(&mut answer))
        .await
        .expect("an answer to the claim")
        .unwrap();
    assert!(answer.starts_with("key "), "{answer}");
    drain(lines);
}

/// Reads and drops what bitsd sends a device, so nothing backs up.
fn drain<R: AsyncRead + Unpin + Send + 'static>(mut read: R) {
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
    });
}

/// `bitsd device add NAME` on `db`: the claim code.
fn claim_code(db: &Path, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_bitsd"))
        .args(["--config", "/dev/null", "--db"])
        .arg(db)
        .args(["device", "add", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("claim code: "))
        .expect("a claim code")
        .to_string()
}

/// The `count` flood lines of device `d` (sensors `4d..4d+3`, values from
/// which each sample's place reads back), then its end marker, sensor
/// `marker + d`.
fn lines(d: usize, count: usize, marker: u64) -> Vec<String> {
    let mut lines: Vec<String> = (0..count)
        .map(|i| {
            let k = i / 4;
            format!(
                "temperature {} {}.{:04}",
                4 * d + i % 4,
                k / 10_000,
                k % 10_000
            )
        })
        .collect();
    lines.push(format!("temperature {} 20.0", marker + d as u64));
    lines
}

/// The bytes a device writes for `lines`: each ended by `\n` on a byte
/// stream, each one masked text frame on a websocket (the mask is zero, so
/// the generator spends no time masking; bitsd unmasks all the same).
fn bytes(transport: Transport, lines: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.len() * 32);
    for line in lines {
        match transport {
            Transport::Tcp | Transport::Tls => {
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
            Transport::Websocket => out.extend_from_slice(&frame(line)),
        }
    }
    out
}

/// One masked text frame of a client.
fn frame(text: &str) -> Vec<u8> {
    assert!(text.len() < 126);
    let mut frame = vec![0x81, 0x80 | text.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// What one flood over one or more devices came to.
#[derive(Clone, Debug)]
pub struct Flood {
    pub samples: usize,
    /// Until every device's marker reached a websocket client: every
    /// sample committed.
    pub elapsed: Duration,
    /// Rows added to the database, read back after the flood.
    pub stored: u64,
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_after: u64,
    /// bitsd's CPU time over the flood...
    pub cpu_ms: f64,
    /// ...and this generator's (the devices and the watching client).
    pub generator_cpu_ms: f64,
}

impl Flood {
    pub fn durable_per_second(&self) -> f64 {
        self.samples as f64 / self.elapsed.as_secs_f64()
    }
}

/// Floods `total` samples split evenly over `devices`, all at once, each
/// ending with its marker; `None` if a marker did not reach a websocket
/// client within [`DEADLINE`].
pub async fn flood(club: &mut Club, devices: &mut [&mut Flooder], total: usize) -> Option<Flood> {
    let base = FLOOD_END + 8 * club.floods;
    club.floods += 1;
    let bitsd = &club.bitsd;
    let rows_before = last_row(&club.db);
    let payloads: Vec<Vec<u8>> = devices
        .iter()
        .enumerate()
        .map(|(d, device)| bytes(device.transport, &lines(d, total / devices.len(), base)))
        .collect();
    let samples = devices.len() * (total / devices.len() + 1);
    let mut watcher = ws_connect(bitsd.web).await.expect("watcher connects");
    watcher.next().await;
    let before = bitsd.rss_kib();
    let pid = bitsd.child.id();
    let peak = PeakRss::start(pid, before);
    let markers: Vec<u64> = (0..devices.len() as u64).map(|d| base + d).collect();
    let cpu_before = cpu_ms(pid);
    let generator_before = cpu_ms(std::process::id());
    let started = Instant::now();
    let writes = devices
        .iter_mut()
        .zip(&payloads)
        .map(|(device, payload)| async move {
            device.writer.write_all(payload).await.unwrap();
            device.writer.flush().await.unwrap();
        });
    let watch = async {
        let mut seen = vec![false; markers.len()];
        while let Some(Ok(message)) = watcher.next().await {
            if let Message::Text(text) = message {
                for sensor in sensors(&text) {
                    if let Some(i) = markers.iter().position(|m| *m == sensor) {
                        seen[i] = true;
                    }
                }
                if seen.iter().all(|s| *s) {
                    return true;
                }
            }
        }
        false
    };
    let (_, done) = tokio::join!(
        futures_util::future::join_all(writes),
        tokio::time::timeout(DEADLINE, watch)
    );
    let elapsed = started.elapsed();
    let generator_cpu_ms = cpu_ms(std::process::id()) - generator_before;
    let cpu_ms = cpu_ms(pid) - cpu_before;
    let rss_peak = peak.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.unwrap_or(false).then(|| Flood {
        samples,
        elapsed,
        stored: last_row(&club.db) - rows_before,
        rss_before: before,
        rss_peak,
        rss_after: bitsd.rss_kib(),
        cpu_ms,
        generator_cpu_ms,
    })
}

/// Every sensor id in a message (a change, or a snapshot after a lag).
fn sensors(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split("\"sensor\":").skip(1).filter_map(|rest| {
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    })
}

/// The last temperature row of the database: rows are only added, so the
/// difference over a flood is what it stored.
fn last_row(db: &Path) -> u64 {
    let db = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    db.query_row(r#"SELECT max(rowid) FROM "Temperature""#, [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .unwrap()
    .unwrap_or(0) as u64
}
