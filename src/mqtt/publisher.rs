//! The follower that keeps the broker's retained topics current: every
//! sample and message in order while connected, the whole state again on
//! each connection, nothing queued while the broker is away.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::{Packet, SubscribeReasonCode};
use tokio::sync::broadcast;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::inbox::Inbox;
use super::session::{Incoming, Session, SessionError, name};
use super::topics::{Discovery, OFFLINE, ONLINE, Topics, sensor_payload, temperature_payload};
use crate::config::{SensorNames, SpaceApi};
use crate::metrics::Metrics;
use crate::record::Change;
use crate::record::sensors::{SensorKind, SensorSample};
use crate::spaceapi;
use crate::state::{Changes, Roster, Snapshot, State};
use crate::store::{self, StoreError};

/// Publishes the broker has not acknowledged before the follower stops
/// taking changes from the stream (and waits for the broker).
const WINDOW: usize = 4096;
/// Encoded bytes not yet written before it stops taking changes.
const UNWRITTEN: usize = 1 << 20;
/// Samples read from the database at a time when catching up.
const PAGE: usize = 2048;
/// How long shutdown waits for `offline` and the disconnect to go out.
pub const GOODBYE: Duration = Duration::from_millis(600);

/// What `P/spaceapi` is made from, besides the snapshot.
pub struct SpaceApiFacts {
    pub facts: SpaceApi,
    pub names: SensorNames,
    /// The base of the document's own URLs.
    pub base: String,
    pub timezone: chrono_tz::Tz,
}

/// What the broker holds of the derived topics, as published on this
/// connection; compared so unchanged documents are not sent again.
#[derive(Default)]
struct Sent {
    status: Option<bool>,
    state: Option<&'static str>,
    until: Option<String>,
    people: Option<usize>,
    data: Bytes,
    spaceapi: String,
    roster: Roster,
}

/// How a connection ended.
pub enum Ended {
    /// bitsd is stopping (`offline` was sent), or the state has stopped.
    Shutdown,
    Lost(SessionError),
}

impl From<SessionError> for Ended {
    fn from(e: SessionError) -> Ended {
        Ended::Lost(e)
    }
}

/// What woke the connection's loop.
enum Wake {
    Shutdown,
    Read(Result<(), SessionError>),
    Written(Result<(), SessionError>),
    Changes(Result<Changes, broadcast::error::RecvError>),
    Page(Result<Vec<(i64, i64, f64)>, StoreError>),
    Roster,
    Ping,
}

pub struct Publisher {
    pub topics: Arc<Topics>,
    pub discovery: Option<Discovery>,
    pub spaceapi: SpaceApiFacts,
    pub subscribe: bool,
    pub keep_alive: Duration,
    /// Where samples missed on the stream are read back from.
    store: store::Handle,
    sent: Sent,
    /// Sensors whose discovery config went out on this connection.
    announced: HashSet<i64>,
    /// Likewise for the sensors beyond temperature.
    announced_sensors: HashSet<(SensorKind, i64)>,
    /// The last change published (or covered by a snapshot published).
    seen: u64,
    /// The row of the last sample published: samples are published once
    /// each, in the order they were written, from the stream or, when the
    /// follower fell behind it, from the database.
    sample_row: i64,
    /// The stream went on without this follower: it reads the samples it
    /// missed from the database before it takes the stream again.
    behind: bool,
}

/// A page of samples being read from the database.
type PageRead = Pin<Box<dyn Future<Output = Result<Vec<(i64, i64, f64)>, StoreError>> + Send>>;

impl Publisher {
    pub fn new(
        topics: Arc<Topics>,
        discovery: Option<Discovery>,
        spaceapi: SpaceApiFacts,
        subscribe: bool,
        keep_alive: Duration,
        store: store::Handle,
    ) -> Publisher {
        Publisher {
            topics,
            discovery,
            spaceapi,
            subscribe,
            keep_alive,
            store,
            sent: Sent::default(),
            announced: HashSet::new(),
            announced_sensors: HashSet::new(),
            seen: 0,
            sample_row: 0,
            behind: false,
        }
    }

    /// Serves one connection: the whole state first, then each commit of
    /// `changes` as it comes, until the connection is lost or `shutdown`.
    pub async fn serve(
        &mut self,
        mut session: Session,
        state: &State,
        changes: &mut broadcast::Receiver<Changes>,
        inbox: Option<&Inbox>,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> Ended {
        let mut snapshots = state.watch();
        snapshots.borrow_and_update();
        if let Err(e) = self.resync(&mut session, &state.snapshot()) {
            return Ended::Lost(e);
        }
        let mut ping = tokio::time::interval_at(Instant::now() + self.keep_alive, self.keep_alive);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pong_due = false;
        let mut page: Option<PageRead> = None;
        loop {
            let room = session.waiting() < WINDOW && session.writer.pending() < UNWRITTEN;
            if self.behind && room && page.is_none() {
                let (store, after) = (self.store.clone(), self.sample_row);
                page = Some(Box::pin(async move {
                    store
                        .run(move |db| db.temperatures_after(after, PAGE))
                        .await
                }));
            }
            let stream = room && !self.behind;
            let Session { reader, writer, .. } = &mut session;
            let busy = writer.busy();
            let wake = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Wake::Shutdown,
                read = reader.fill() => Wake::Read(read),
                written = writer.write_some(), if busy => Wake::Written(written),
                _ = ping.tick() => Wake::Ping,
                read = async { page.as_mut().expect("a page is read").await }, if page.is_some() => {
                    page = None;
                    Wake::Page(read)
                }
                next = changes.recv(), if stream => Wake::Changes(next),
                changed = snapshots.changed(), if room => match changed {
                    Ok(()) => Wake::Roster,
                    Err(_) => Wake::Shutdown,
                },
            };
            let done = match wake {
                Wake::Shutdown => return self.goodbye(session).await,
                Wake::Read(read) => match read {
                    Ok(()) => match self.incoming(&mut session, inbox, metrics).await {
                        Ok(ponged) => {
                            pong_due &= !ponged;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e.into()),
                },
                Wake::Written(written) => written.map_err(Ended::from),
                Wake::Ping if pong_due => Err(SessionError::Timeout.into()),
                Wake::Ping => {
                    session.writer.ping();
                    pong_due = true;
                    Ok(())
                }
                Wake::Changes(Ok(commit)) => self.commit(&mut session, &commit, state),
                Wake::Changes(Err(broadcast::error::RecvError::Lagged(missed))) => {
                    tracing::debug!(
                        "mqtt fell {missed} commits behind; reading the samples it missed"
                    );
                    self.behind = true;
                    Ok(())
                }
                Wake::Page(read) => self.page(&mut session, read, state),
                Wake::Changes(Err(broadcast::error::RecvError::Closed)) => Err(Ended::Shutdown),
                Wake::Roster => {
                    // Roster changes publish no change of their own.
                    let snapshot = snapshots.borrow_and_update().clone();
                    if snapshot.roster == self.sent.roster {
                        Ok(())
                    } else {
                        self.derived_of(&mut session, &snapshot)
                            .map_err(Ended::from)
                    }
                }
            };
            match done {
                Ok(()) => {}
                Err(Ended::Lost(e)) => return Ended::Lost(e),
                // The state has stopped: so is bitsd.
                Err(Ended::Shutdown) => return self.goodbye(session).await,
            }
        }
    }

    /// Handles the packets read so far; true if a `PINGRESP` was among them.
    async fn incoming(
        &mut self,
        session: &mut Session,
        inbox: Option<&Inbox>,
        metrics: &Metrics,
    ) -> Result<bool, Ended> {
        let mut ponged = false;
        while let Some(incoming) = session.reader.packet()? {
            let packet = match incoming {
                Incoming::Packet(packet) => packet,
                Incoming::Oversized(publish) => {
                    if publish.qos != QoS::AtMostOnce {
                        session.writer.acknowledge(publish.pkid);
                    }
                    match inbox {
                        Some(inbox) => inbox.too_large(&publish.topic, publish.payload, metrics),
                        None => {
                            tracing::debug!("mqtt: an oversized PUBLISH from the broker skipped")
                        }
                    }
                    continue;
                }
            };
            match packet {
                Packet::PubAck(ack) => {
                    if session.acknowledged(ack.pkid) {
                        metrics.mqtt_published.inc();
                    }
                }
                Packet::SubAck(ack) => {
                    session.acknowledged(ack.pkid);
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        tracing::warn!(
                            "mqtt: the broker refuses bitsd its set/ topics (check its ACL); commands over MQTT are not read"
                        );
                    }
                }
                Packet::Publish(publish) => {
                    if publish.qos != QoS::AtMostOnce {
                        session.writer.acknowledge(publish.pkid);
                    }
                    if let Some(inbox) = inbox
                        && !inbox.take(&publish, metrics).await
                    {
                        return Err(Ended::Shutdown);
                    }
                }
                Packet::PingResp => ponged = true,
                other => tracing::debug!("mqtt: {} from the broker ignored", name(&other)),
            }
        }
        Ok(ponged)
    }

    /// Says `offline` and disconnects, within [`GOODBYE`].
    async fn goodbye(&mut self, mut session: Session) -> Ended {
        let offline = Bytes::from_static(OFFLINE.as_bytes());
        if session.publish(&self.topics.availability, offline).is_ok() {
            session.writer.disconnect();
            let _ = tokio::time::timeout(GOODBYE, session.writer.flush_all()).await;
        }
        Ended::Shutdown
    }

    /// Everything, as on a new connection: the broker may have lost it.
    fn resync(&mut self, session: &mut Session, snapshot: &Snapshot) -> Result<(), SessionError> {
        self.sent = Sent::default();
        self.announced.clear();
        self.announced_sensors.clear();
        if self.subscribe {
            session.subscribe(&self.topics.set_filter())?;
        }
        let online = Bytes::from_static(ONLINE.as_bytes());
        session.publish(&self.topics.availability, online)?;
        if let Some(discovery) = &self.discovery {
            let configs = [
                discovery.open(&self.topics),
                discovery.state(&self.topics),
                discovery.until(&self.topics),
                discovery.people(&self.topics),
            ];
            for (topic, config) in configs {
                session.publish(&topic, config.into())?;
            }
        }
        self.seen = snapshot.version;
        self.sample_row = snapshot.temperature_row;
        self.behind = false;
        self.state_of(session, snapshot)
    }

    /// Publishes a page of the samples missed; after the last one, the
    /// message and the documents of the current state.
    fn page(
        &mut self,
        session: &mut Session,
        read: Result<Vec<(i64, i64, f64)>, StoreError>,
        state: &State,
    ) -> Result<(), Ended> {
        let snapshot = match read {
            Ok(samples) => {
                let last = samples.len() < PAGE;
                for (row, sensor, value) in samples {
                    self.sample_row = row;
                    self.temperature(session, sensor, value)?;
                }
                if !last {
                    return Ok(());
                }
                state.snapshot()
            }
            Err(e) => {
                // The latest value of each sensor, then, as on a new
                // connection.
                tracing::warn!("mqtt: cannot read the samples missed: {e}; publishing the latest");
                let snapshot = state.snapshot();
                for sample in snapshot.sensors.values() {
                    self.temperature(session, sample.sensor, sample.value)?;
                }
                self.sample_row = self.sample_row.max(snapshot.temperature_row);
                snapshot
            }
        };
        self.behind = false;
        // The newest of each, which is all the retained topics keep.
        for sample in snapshot.sensor_samples.values() {
            self.sensor(session, sample)?;
        }
        if let Some(m) = snapshot.message.as_ref()
            && snapshot.message_version > self.seen
        {
            session.publish(&self.topics.message, m.text.clone().into())?;
        }
        self.seen = self.seen.max(snapshot.version);
        Ok(self.derived_of(session, &snapshot)?)
    }

    /// Every sensor, the message and the derived documents of `snapshot`.
    fn state_of(&mut self, session: &mut Session, snapshot: &Snapshot) -> Result<(), SessionError> {
        for sample in snapshot.sensors.values() {
            self.temperature(session, sample.sensor, sample.value)?;
        }
        for sample in snapshot.sensor_samples.values() {
            self.sensor(session, sample)?;
        }
        if let Some(m) = &snapshot.message {
            session.publish(&self.topics.message, m.text.clone().into())?;
        }
        self.derived_of(session, snapshot)
    }

    /// One message of the stream: each sample and message in order, then
    /// the documents derived from the state, once.
    fn commit(
        &mut self,
        session: &mut Session,
        commit: &Changes,
        state: &State,
    ) -> Result<(), Ended> {
        for published in commit.iter() {
            match &*published.change {
                // By row: samples read back from the database may be on
                // the stream too.
                Change::Temperature(t) if published.row > self.sample_row => {
                    self.sample_row = published.row;
                    self.temperature(session, t.sensor, t.value)?
                }
                Change::Sensor(sample) if published.seq > self.seen => {
                    self.sensor(session, sample)?
                }
                Change::Message(m) if published.seq > self.seen => {
                    session.publish(&self.topics.message, m.text.clone().into())?
                }
                // Derived: only the final status of a commit matters.
                _ => {}
            }
            self.seen = self.seen.max(published.seq);
        }
        Ok(self.derived_of(session, &state.snapshot())?)
    }

    /// A sample, after the sensor's discovery config when it is new.
    fn temperature(
        &mut self,
        session: &mut Session,
        sensor: i64,
        value: f64,
    ) -> Result<(), SessionError> {
        if let Some(discovery) = &self.discovery
            && !self.announced.contains(&sensor)
        {
            let (topic, config) = discovery.temperature(&self.topics, sensor);
            session.publish(&topic, config.into())?;
            self.announced.insert(sensor);
        }
        let topic = self.topics.temperature(sensor);
        session.publish(&topic, temperature_payload(value).into())
    }

    /// A sample of a sensor beyond temperature, after its discovery config
    /// when it is new.
    fn sensor(&mut self, session: &mut Session, sample: &SensorSample) -> Result<(), SessionError> {
        let key = (sample.kind, sample.sensor);
        if let Some(discovery) = &self.discovery
            && !self.announced_sensors.contains(&key)
        {
            let (topic, config) = discovery.sensor(&self.topics, sample.kind, sample.sensor);
            session.publish(&topic, config.into())?;
            self.announced_sensors.insert(key);
        }
        let topic = self.topics.sensor(sample.kind, sample.sensor);
        session.publish(&topic, sensor_payload(sample).into())
    }

    /// Status, people, `/data` and SpaceAPI documents, those that changed.
    fn derived_of(
        &mut self,
        session: &mut Session,
        snapshot: &Snapshot,
    ) -> Result<(), SessionError> {
        let open = snapshot.is_open();
        if self.sent.status != Some(open) {
            let value = if open { "open" } else { "closed" };
            session.publish(&self.topics.status, Bytes::from_static(value.as_bytes()))?;
            self.sent.status = Some(open);
        }
        let state = snapshot.status.as_ref().map(|s| s.value.state_str());
        if let Some(state) = state
            && self.sent.state != Some(state)
        {
            session.publish(&self.topics.state, Bytes::from_static(state.as_bytes()))?;
            self.sent.state = Some(state);
        }
        let until = snapshot.status.as_ref().map(|s| match s.until {
            Some(u) if s.value.lets_members_in() => u.0.format("%H:%M").to_string(),
            _ => "-".to_string(),
        });
        if until.is_some() && self.sent.until != until {
            let payload = until.clone().unwrap_or_default();
            session.publish(&self.topics.until, payload.into())?;
            self.sent.until = until;
        }
        let people = snapshot.roster.counted();
        if self.sent.people != Some(people) {
            session.publish(&self.topics.people, people.to_string().into())?;
            self.sent.people = Some(people);
        }
        if snapshot.data_json != self.sent.data {
            session.publish(&self.topics.data, snapshot.data_json.clone())?;
            self.sent.data = snapshot.data_json.clone();
        }
        let facts = &self.spaceapi;
        let document = spaceapi::document(
            &facts.facts,
            &facts.names,
            snapshot,
            &facts.base,
            facts.timezone,
        )
        .to_string();
        if document != self.sent.spaceapi {
            session.publish(&self.topics.spaceapi, document.clone().into())?;
            self.sent.spaceapi = document;
        }
        if self.sent.roster != snapshot.roster {
            self.sent.roster = snapshot.roster.clone();
        }
        Ok(())
    }
}
