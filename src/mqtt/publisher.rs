//! The follower that keeps the broker's retained topics current: every
//! sample and message in order while connected, the whole state again on
//! each connection, nothing queued while the broker is away.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::link::{GOODBYE, LinkState};
use super::topics::{Discovery, OFFLINE, ONLINE, Topics, temperature_payload};
use crate::config::SpaceApi;
use crate::event::Change;
use crate::spaceapi;
use crate::state::{Changes, Roster, Snapshot, State};

/// What `P/spaceapi` is made from, besides the snapshot.
pub struct SpaceApiFacts {
    pub facts: SpaceApi,
    /// The base of the document's own URLs.
    pub base: String,
    pub timezone: chrono_tz::Tz,
}

/// The connection went away (or was replaced) while publishing.
struct Down;

/// What the broker holds of the derived topics, as published on this
/// connection; compared so unchanged documents are not sent again.
#[derive(Default)]
struct Sent {
    status: Option<bool>,
    people: Option<usize>,
    data: Bytes,
    spaceapi: String,
    roster: Roster,
}

pub struct Publisher {
    pub client: AsyncClient,
    pub link: watch::Receiver<LinkState>,
    pub topics: Arc<Topics>,
    pub discovery: Option<Discovery>,
    pub spaceapi: SpaceApiFacts,
    pub subscribe: bool,
}

/// A [`Publisher`] at work.
struct Follower {
    p: Publisher,
    sent: Sent,
    /// Sensors whose discovery config went out on this connection.
    announced: HashSet<i64>,
    /// The last change published (or covered by a snapshot published).
    seen: u64,
    /// The connection being served.
    generation: u64,
    /// The client's event loop is gone: nothing can be sent any more.
    closed: bool,
    /// Stops a send that waits for room, so shutdown is not held up.
    shutdown: CancellationToken,
}

impl Publisher {
    /// Follows `changes` (subscribed before any input started) until
    /// `shutdown`, then says `offline` and disconnects.
    pub async fn run(
        self,
        state: State,
        mut changes: broadcast::Receiver<Changes>,
        shutdown: CancellationToken,
    ) {
        let mut snapshots = state.watch();
        let mut f = Follower {
            p: self,
            sent: Sent::default(),
            announced: HashSet::new(),
            seen: 0,
            generation: 0,
            closed: false,
            shutdown: shutdown.clone(),
        };
        let mut synced: Option<u64> = None;
        while !f.closed && !shutdown.is_cancelled() {
            let link = *f.p.link.borrow_and_update();
            if link.up && synced != Some(link.generation) {
                f.generation = link.generation;
                if f.resync(&state.snapshot()).await.is_ok() {
                    synced = Some(link.generation);
                }
                continue;
            }
            let live = link.up && synced == Some(link.generation);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = f.p.link.changed() => {}
                next = changes.recv() => match next {
                    // While down, changes are dropped: the next connection
                    // starts from the snapshot.
                    Ok(commit) if live => {
                        let _ = f.commit(&commit, &state).await;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!("mqtt fell {missed} commits behind; publishing the current state");
                        if live {
                            let _ = f.catch_up(&state.snapshot()).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = snapshots.changed() => {
                    // Roster changes publish no change of their own.
                    let snapshot = snapshots.borrow_and_update().clone();
                    if live && snapshot.roster != f.sent.roster {
                        let _ = f.derived(&snapshot).await;
                    }
                }
            }
        }
        if f.p.link.borrow().up {
            let client = f.p.client.clone();
            let availability = f.p.topics.availability.clone();
            let _ = tokio::time::timeout(GOODBYE, async move {
                let offline = Bytes::from_static(OFFLINE.as_bytes());
                client
                    .publish_bytes(availability, QoS::AtLeastOnce, true, offline)
                    .await?;
                client.disconnect().await
            })
            .await;
        }
    }
}

impl Follower {
    /// Publishes `payload` on `topic`, retained, unless the connection being
    /// served goes away first.
    async fn send(&mut self, topic: String, payload: Bytes) -> Result<(), Down> {
        let generation = self.generation;
        let gone = |l: &LinkState| !l.up || l.generation != generation;
        if gone(&self.p.link.borrow()) {
            return Err(Down);
        }
        let Publisher { client, link, .. } = &mut self.p;
        let sent = tokio::select! {
            sent = client.publish_bytes(topic, QoS::AtLeastOnce, true, payload) => sent,
            _ = link.wait_for(gone) => return Err(Down),
            _ = self.shutdown.cancelled() => return Err(Down),
        };
        self.closed = sent.is_err();
        sent.map_err(|_| Down)
    }

    /// Everything, as on a new connection: the broker may have lost it.
    async fn resync(&mut self, snapshot: &Snapshot) -> Result<(), Down> {
        self.sent = Sent::default();
        self.announced.clear();
        if self.p.subscribe {
            let filter = self.p.topics.set_filter();
            let generation = self.generation;
            let Publisher { client, link, .. } = &mut self.p;
            let done = tokio::select! {
                done = client.subscribe(filter, QoS::AtLeastOnce) => done,
                _ = link.wait_for(|l| !l.up || l.generation != generation) => return Err(Down),
                _ = self.shutdown.cancelled() => return Err(Down),
            };
            self.closed = done.is_err();
            done.map_err(|_| Down)?;
        }
        let online = Bytes::from_static(ONLINE.as_bytes());
        self.send(self.p.topics.availability.clone(), online)
            .await?;
        if let Some(discovery) = &self.p.discovery {
            let configs = [
                discovery.open(&self.p.topics),
                discovery.people(&self.p.topics),
            ];
            for (topic, config) in configs {
                self.send(topic, config.into()).await?;
            }
        }
        self.seen = snapshot.version;
        self.state_of(snapshot, true).await
    }

    /// The current state after changes were missed.
    async fn catch_up(&mut self, snapshot: &Snapshot) -> Result<(), Down> {
        let message = snapshot.message_version > self.seen;
        self.seen = snapshot.version;
        self.state_of(snapshot, message).await
    }

    /// Every sensor, the message (with `message`) and the derived documents
    /// of `snapshot`.
    async fn state_of(&mut self, snapshot: &Snapshot, message: bool) -> Result<(), Down> {
        for sample in snapshot.sensors.values() {
            self.temperature(sample.sensor, sample.value).await?;
        }
        if let Some(m) = snapshot.message.as_ref().filter(|_| message) {
            self.send(self.p.topics.message.clone(), m.text.clone().into())
                .await?;
        }
        self.derived(snapshot).await
    }

    /// One message of the stream: each sample and message in order, then
    /// the documents derived from the state, once.
    async fn commit(&mut self, commit: &Changes, state: &State) -> Result<(), Down> {
        let after = self.seen;
        for published in commit.iter().filter(|p| p.seq > after) {
            self.seen = published.seq;
            match &*published.change {
                Change::Temperature(t) => self.temperature(t.sensor, t.value).await?,
                Change::Message(m) => {
                    self.send(self.p.topics.message.clone(), m.text.clone().into())
                        .await?
                }
                // Derived: only the final status of a commit matters.
                Change::Status(_) => {}
            }
        }
        self.derived(&state.snapshot()).await
    }

    /// A sample, after the sensor's discovery config when it is new.
    async fn temperature(&mut self, sensor: i64, value: f64) -> Result<(), Down> {
        if let Some(discovery) = &self.p.discovery
            && !self.announced.contains(&sensor)
        {
            let (topic, config) = discovery.temperature(&self.p.topics, sensor);
            self.send(topic, config.into()).await?;
            self.announced.insert(sensor);
        }
        let topic = self.p.topics.temperature(sensor);
        self.send(topic, temperature_payload(value).into()).await
    }

    /// Status, people, `/data` and SpaceAPI documents, those that changed.
    async fn derived(&mut self, snapshot: &Snapshot) -> Result<(), Down> {
        let open = snapshot.is_open();
        if self.sent.status != Some(open) {
            let value = if open { "open" } else { "closed" };
            self.send(
                self.p.topics.status.clone(),
                Bytes::from_static(value.as_bytes()),
            )
            .await?;
            self.sent.status = Some(open);
        }
        let roster = &snapshot.roster;
        let people = roster
            .keypad
            .values()
            .chain(&roster.macs)
            .collect::<BTreeSet<_>>()
            .len();
        if self.sent.people != Some(people) {
            self.send(self.p.topics.people.clone(), people.to_string().into())
                .await?;
            self.sent.people = Some(people);
        }
        if snapshot.data_json != self.sent.data {
            self.send(self.p.topics.data.clone(), snapshot.data_json.clone())
                .await?;
            self.sent.data = snapshot.data_json.clone();
        }
        let facts = &self.p.spaceapi;
        let document =
            spaceapi::document(&facts.facts, snapshot, &facts.base, facts.timezone).to_string();
        if document != self.sent.spaceapi {
            self.send(self.p.topics.spaceapi.clone(), document.clone().into())
                .await?;
            self.sent.spaceapi = document;
        }
        if self.sent.roster != snapshot.roster {
            self.sent.roster = snapshot.roster.clone();
        }
        Ok(())
    }
}
