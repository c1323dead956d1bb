//! A real mosquitto broker per test, on a free loopback port, and a
//! subscriber that records what it receives.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::sync::mpsc;

use super::PATIENCE;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A mosquitto process, killed on drop.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    /// A broker that lets anyone in.
    pub fn start() -> Mosquitto {
        Self::start_on(free_port(), None)
    }

    /// A broker that wants `user` and `password`.
    pub fn with_password(user: &str, password: &str) -> Mosquitto {
        Self::start_on(free_port(), Some((user, password)))
    }

    /// A broker on `port`, which nothing else holds.
    pub fn start_on(port: u16, login: Option<(&str, &str)>) -> Mosquitto {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: `make test` installs Debian's mosquitto for the MQTT tests"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut conf =
            format!("listener {port} 127.0.0.1\npersistence false\nuser root\nlog_dest stderr\n");
        // A subscriber is sent every message, however far it falls behind
        // (mosquitto drops QoS 1 messages past 1000 queued by default).
        conf.push_str("max_queued_messages 0\n");
        // Messages of any size pass (the default, said here because the
        // tests of oversized `set/` messages rely on it).
        conf.push_str("message_size_limit 0\n");
        match login {
            None => conf.push_str("allow_anonymous true\n"),
            Some((user, password)) => {
                let file = dir.path().join("passwd");
                let made = Command::new("mosquitto_passwd")
                    .arg("-c")
                    .arg("-b")
                    .arg(&file)
                    .args([user, password])
                    .output()
                    .expect("mosquitto_passwd runs");
                assert!(
                    made.status.success(),
                    "{}",
                    String::from_utf8_lossy(&made.stderr)
                );
                conf.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                ));
            }
        }
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut broker = Mosquitto {
            port,
            dir,
            child: None,
        };
        broker.run();
        broker
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    /// Starts the process and waits until it accepts connections.
    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.conf())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mosquitto exited with {status}: {}", self.log());
            }
            assert!(
                started.elapsed() < PATIENCE,
                "mosquitto does not accept connections"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker (retained messages are lost: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker where it stands (`SIGSTOP`): it reads, answers and
    /// forwards nothing until [`Mosquitto::resume`].
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().expect("the broker runs").id();
        // SAFETY: a plain system call on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
    }

    /// Kills the broker and starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// What the broker logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port no one listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One message as a subscriber receives it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    pub retained: bool,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| panic!("{}: {e}", self.topic))
    }
}

/// A client subscribed to one filter; it reconnects (and subscribes again)
/// when the broker comes back.
pub struct Subscriber {
    pub client: AsyncClient,
    received: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Subscribes to `filter` on the broker at `port`; returns once the
    /// broker acknowledged the subscription.
    pub async fn connect(port: u16, filter: &str) -> Subscriber {
        Self::connect_as(port, filter, None).await
    }

    pub async fn connect_as(port: u16, filter: &str, login: Option<(&str, &str)>) -> Subscriber {
        let id = format!("test-{}", rand::random::<u32>());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(8 << 20, 8 << 20);
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        let (client, mut events) = AsyncClient::new(options, 64);
        let (tx, received) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let subscriber = client.clone();
        let filter = filter.to_string();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        subscriber
                            .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                            .unwrap();
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(done) = subscribed_tx.take() {
                            let _ = done.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let message = Received {
                            topic: p.topic,
                            payload: p.payload,
                            retained: p.retain,
                        };
                        if tx.send(message).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(PATIENCE, subscribed)
            .await
            .expect("the broker acknowledges the subscription in time")
            .unwrap();
        Subscriber {
            client,
            received,
            task,
        }
    }

    /// The next message, within [`PATIENCE`].
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.received.recv())
            .await
            .expect("a message in time")
            .expect("the subscriber runs")
    }

    /// Messages until one on `topic` satisfies `check`; returns that one.
    pub async fn until(&mut self, topic: &str, check: impl Fn(&Received) -> bool) -> Received {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let next = tokio::time::timeout_at(deadline, self.received.recv())
                .await
                .unwrap_or_else(|_| panic!("no message on {topic} as expected in time"))
                .expect("the subscriber runs");
            if next.topic == topic && check(&next) {
                return next;
            }
        }
    }

    /// The latest message on each topic, once every topic of `topics` has
    /// one.
    pub async fn latest(&mut self, topics: &[&str]) -> BTreeMap<String, Received> {
        let mut latest = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !topics.iter().all(|t| latest.contains_key(*t)) {
            let next = tokio::time::timeout_at(deadline, self.received.recv())
                .await
                .unwrap_or_else(|_| {
                    let have: Vec<_> = latest.keys().collect();
                    panic!("not every topic of {topics:?} in time; have {have:?}")
                })
                .expect("the subscriber runs");
            latest.insert(next.topic.clone(), next);
        }
        latest
    }

    /// Publishes `payload` on `topic`, not retained, QoS 1.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// Publishes `payload` on `topic`, retained, QoS 1.
    pub async fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
            .unwrap();
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
