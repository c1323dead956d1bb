//! Many websocket clients of one server, bitsd or the fan-out floor, and
//! the time each event takes to reach them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

use super::process::Spawned;
use super::{DEADLINE, FANOUT_BASE, cpu_ms, device, median, sensor_of, ws_connect};

/// The markers of a status frame: what a `status 1` and a `status 0`
/// line become, on bitsd and on the floor alike.
pub const OPEN: u64 = 1;
pub const CLOSED: u64 = 0;
/// How long an event may take to reach every client.
const EVENT_DEADLINE: Duration = Duration::from_secs(10);

/// Connected websocket clients, each reading frames itself and telling
/// when one with a marker arrives.
pub struct Clients {
    pub wanted: usize,
    pub connected: usize,
    pub failed: usize,
    pub connect_time: Duration,
    arrivals: mpsc::UnboundedReceiver<(u64, Instant)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    /// Connects `n` clients to `addr`'s `/ws`, 256 handshakes at a time,
    /// each waiting for its snapshot; then a second for the server to
    /// settle.
    pub async fn connect(addr: SocketAddr, n: usize) -> Clients {
        let (arrivals_tx, arrivals) = mpsc::unbounded_channel::<(u64, Instant)>();
        let (ready_tx, mut ready) = mpsc::unbounded_channel::<bool>();
        let gate = Arc::new(Semaphore::new(256));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let (gate, arrivals_tx, ready_tx) =
                (gate.clone(), arrivals_tx.clone(), ready_tx.clone());
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await.unwrap();
                let Some(mut ws) = ws_connect(addr).await else {
                    let _ = ready_tx.send(false);
                    return;
                };
                let first = ws.next().await;
                drop(permit);
                let _ = ready_tx.send(matches!(first, Some(Ok(Message::Text(_)))));
                read_markers(ws.into_inner(), arrivals_tx).await;
            }));
        }
        let (mut connected, mut failed) = (0, 0);
        while connected + failed < n {
            match tokio::time::timeout(DEADLINE, ready.recv()).await {
                Ok(Some(true)) => connected += 1,
                Ok(Some(false)) => failed += 1,
                _ => break,
            }
        }
        let connect_time = started.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        Clients {
            wanted: n,
            connected,
            failed,
            connect_time,
            arrivals,
            tasks,
        }
    }

    /// Writes `line` to `sender` and waits until every client has had a
    /// frame with `marker`: each client's latency in ms, sorted; fewer than
    /// `connected` if some did not have it within 10 s.
    pub async fn event(
        &mut self,
        sender: &mut tokio::net::TcpStream,
        line: &[u8],
        marker: u64,
    ) -> Vec<f64> {
        while self.arrivals.try_recv().is_ok() {}
        let t0 = Instant::now();
        sender.write_all(line).await.unwrap();
        let mut latencies = Vec::with_capacity(self.connected);
        let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
        while latencies.len() < self.connected {
            match tokio::time::timeout_at(deadline, self.arrivals.recv()).await {
                Ok(Some((m, at))) if m == marker => {
                    latencies.push(at.duration_since(t0).as_secs_f64() * 1000.0)
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        latencies.sort_by(|a, b| a.total_cmp(b));
        latencies
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Reads frames (a server's are unmasked) and tells the arrival of each
/// that carries a marker: a status frame's [`OPEN`] or [`CLOSED`], or a
/// temperature sample's sensor id from [`FANOUT_BASE`] on; answers pings,
/// as a browser does. Parsing here rather than in the websocket library
/// keeps the generator's CPU use small: it shares the machine with the
/// server.
async fn read_markers(
    mut stream: tokio::net::TcpStream,
    arrivals: mpsc::UnboundedSender<(u64, Instant)>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let at = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        let mut pings = 0;
        while let Some((header, len)) = frame_header(&buf[start..]) {
            if buf.len() - start < header + len {
                break;
            }
            let payload = &buf[start + header..start + header + len];
            if buf[start] & 0x0f == PING {
                pings += 1;
            } else if let Some(marker) = marker_of(&String::from_utf8_lossy(payload)) {
                let _ = arrivals.send((marker, at));
            }
            start += header + len;
        }
        buf.drain(..start);
        for _ in 0..pings {
            // A final pong with no payload, masked with a zero key.
            if stream.write_all(&[0x8a, 0x80, 0, 0, 0, 0]).await.is_err() {
                return;
            }
        }
    }
}

/// The opcode of a ping frame.
const PING: u8 = 0x9;

fn marker_of(text: &str) -> Option<u64> {
    if let Some(sensor) = sensor_of(text) {
        return (sensor >= FANOUT_BASE).then_some(sensor);
    }
    if text.starts_with(r#"{"status":"#) {
        if text.contains(r#""value":"open""#) {
            return Some(OPEN);
        }
        if text.contains(r#""value":"closed""#) {
            return Some(CLOSED);
        }
    }
    None
}

/// Header and payload length of the unmasked frame at the start of `bytes`,
/// once the header is complete.
fn frame_header(bytes: &[u8]) -> Option<(usize, usize)> {
    let second = *bytes.get(1)? & 0x7f;
    match second {
        126 => Some((
            4,
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
        )),
        127 => Some((
            10,
            u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
        )),
        n => Some((2, n as usize)),
    }
}

/// What an event came to: times in ms from the line's write.
pub struct Spread {
    pub first: f64,
    pub p50: f64,
    pub p99: f64,
    /// Until the last client had it.
    pub last: f64,
    /// Whether every client had it.
    pub complete: bool,
}

impl Spread {
    /// The spread of sorted `latencies` among `connected` clients; an
    /// event no client had counts as taking the whole deadline.
    pub fn of(latencies: &[f64], connected: usize) -> Spread {
        let never = EVENT_DEADLINE.as_secs_f64() * 1000.0;
        let pick = |q: f64| {
            let i = (latencies.len() as f64 * q) as usize;
            latencies
                .get(i.min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(never)
        };
        Spread {
            first: pick(0.0),
            p50: pick(0.5),
            p99: pick(0.99),
            last: latencies.last().copied().unwrap_or(never),
            complete: latencies.len() >= connected,
        }
    }
}

/// What `n` websocket clients and events sent to them came to.
pub struct Fanout {
    pub clients: usize,
    pub connected: usize,
    pub failed: usize,
    pub connect_time: Duration,
    pub rss_before: u64,
    pub rss_idle: u64,
    /// Medians over the events, in ms: first client, p50, p99, last client.
    pub first: f64,
    pub p50: f64,
    pub p99: f64,
    pub last: f64,
    /// Per event, the time until every client had it (ms), sorted.
    pub alls: Vec<f64>,
    pub incomplete: usize,
    pub server_cpu_ms: f64,
    pub generator_cpu_ms: f64,
}

impl Fanout {
    /// Medians over the `spreads` of events.
    pub fn of(clients: &Clients, spreads: &[Spread]) -> Fanout {
        let column = |f: fn(&Spread) -> f64| spreads.iter().map(f).collect::<Vec<f64>>();
        let mut alls = column(|s| s.last);
        alls.sort_by(|a, b| a.total_cmp(b));
        Fanout {
            clients: clients.wanted,
            connected: clients.connected,
            failed: clients.failed,
            connect_time: clients.connect_time,
            rss_before: 0,
            rss_idle: 0,
            first: median(&mut column(|s| s.first)),
            p50: median(&mut column(|s| s.p50)),
            p99: median(&mut column(|s| s.p99)),
            last: median(&mut alls.clone()),
            alls,
            incomplete: spreads.iter().filter(|s| !s.complete).count(),
            server_cpu_ms: 0.0,
            generator_cpu_ms: 0.0,
        }
    }
}

/// Sends `events` temperature samples on `device`, one every 200 ms, to
/// `clients`: the spread of each. The markers are 64 sensor ids in turn,
/// from `first` on, so the snapshot stays the same size over a run.
pub async fn temperatures(
    device: &mut tokio::net::TcpStream,
    clients: &mut Clients,
    events: usize,
    first: u64,
) -> Vec<Spread> {
    let mut spreads = Vec::with_capacity(events);
    for event in first..first + events as u64 {
        spreads.push(temperature(device, clients, event).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    spreads
}

/// Sends the `event`th temperature sample (see [`temperatures`]): its
/// spread.
pub async fn temperature(
    device: &mut tokio::net::TcpStream,
    clients: &mut Clients,
    event: u64,
) -> Spread {
    let marker = FANOUT_BASE + event % 64;
    let line = format!("temperature {marker} 20.0\n");
    let latencies = clients.event(device, line.as_bytes(), marker).await;
    Spread::of(&latencies, clients.connected)
}

/// Connects `clients` websocket clients to `bitsd`, then sends `events`
/// temperature samples one every 200 ms and measures when each client has
/// each one.
pub async fn fanout(bitsd: &Spawned, clients: usize, events: usize) -> Fanout {
    let rss_before = bitsd.rss_kib();
    let mut connected = Clients::connect(bitsd.web, clients).await;
    let rss_idle = bitsd.rss_kib();
    let (server_cpu, generator_cpu) = (cpu_ms(bitsd.child.id()), cpu_ms(std::process::id()));
    let spreads = temperatures(&mut device(bitsd).await, &mut connected, events, 0).await;
    let server_cpu_ms = cpu_ms(bitsd.child.id()) - server_cpu;
    let generator_cpu_ms = cpu_ms(std::process::id()) - generator_cpu;
    Fanout {
        rss_before,
        rss_idle,
        server_cpu_ms,
        generator_cpu_ms,
        ..Fanout::of(&connected, &spreads)
    }
}
