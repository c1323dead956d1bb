//! The writer over a real database: commits, failures, order.

use std::collections::BTreeSet;

use tokio::sync::oneshot;

use super::*;
use crate::record::StatusChange;
use crate::record::StatusValue::{Closed, Open};
use crate::state::HISTORY_SAMPLES;
use crate::store::DEVICE_USER;

/// A writer over a fresh database, with a follower and a reader of its
/// snapshots.
struct Rig {
    writer: Writer,
    follower: broadcast::Receiver<Changes>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bitsd.db");
    let mut db = Db::open(&path, false).unwrap();
    let model = Model::load(&db).unwrap();
    let metrics = Arc::new(Metrics::new());
    let routes = Routes::load(&mut db, Vec::new(), &metrics).unwrap();
    let device_user = db.user_by_name(DEVICE_USER).unwrap().unwrap();
    let snapshot = Arc::new(watch::Sender::new(Arc::new(model.snapshot(3))));
    let (changes, follower) = broadcast::channel(1024);
    let clock = Clock::new(chrono_tz::Europe::Rome);
    let writer = Writer {
        db,
        model,
        snapshot: snapshot.clone(),
        changes,
        device_user,
        stamper: Stamper::new(clock),
        metrics,
        jsonver: 3,
        routes,
        storing: Arc::default(),
        lost: 0,
        device_offline: tokio::sync::watch::channel(Bytes::new()).0,
    };
    Rig {
        writer,
        follower,
        snapshot: snapshot.subscribe(),
        path,
        _dir: dir,
    }
}

type Answer = oneshot::Receiver<Result<Outcome, StoreError>>;

impl Rig {
    /// Runs `events` as one batch, committed; their answers in order.
    fn batch(&mut self, events: Vec<Event>) -> Vec<Result<Outcome, StoreError>> {
        self.batch_ending(events, |batch| batch.commit())
    }

    fn batch_ending(
        &mut self,
        events: Vec<Event>,
        commit: impl FnOnce(Batch<'_>) -> Result<(), StoreError>,
    ) -> Vec<Result<Outcome, StoreError>> {
        let (jobs, answers): (Vec<Job>, Vec<Answer>) = events
            .into_iter()
            .map(|event| {
                let (tx, rx) = oneshot::channel();
                (Job::Event(event, Some(tx), None), rx)
            })
            .unzip();
        self.writer.process(jobs, commit);
        answers
            .into_iter()
            .map(|mut rx| rx.try_recv().expect("every event is answered"))
            .collect()
    }

    fn published(&mut self) -> Vec<Published> {
        std::iter::from_fn(|| self.follower.try_recv().ok())
            .flat_map(|changes| changes.to_vec())
            .collect()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// The database as a new reader sees it.
    fn stored(&self) -> (Vec<StatusChange>, crate::store::Latest) {
        let db = Db::open(&self.path, false).unwrap();
        (db.status_log(0, 100).unwrap(), db.latest(1000).unwrap())
    }
}

fn status(value: StatusValue, origin: Origin) -> Event {
    Event::Status { value, origin }
}

fn applied(answers: &[Result<Outcome, StoreError>]) -> Vec<Outcome> {
    answers
        .iter()
        .map(|a| a.as_ref().expect("committed").clone())
        .collect()
}

#[test]
fn status_changes_are_stored_once_and_published_in_order() {
    let mut rig = rig();
    let answers = rig.batch(vec![
        status(Open, Origin::Web),
        status(Open, Origin::ORIGINAL_DEVICE),
        status(Closed, Origin::Automation),
    ]);
    assert_eq!(
        applied(&answers),
        [
            Outcome::Applied,
            Outcome::Ignored("the status is already that"),
            Outcome::Applied
        ]
    );
    let published = rig.published();
    let seen: Vec<_> = published
        .iter()
        .map(|p| (p.seq, p.origin.clone()))
        .collect();
    assert_eq!(seen, [(1, Origin::Web), (2, Origin::Automation)]);
    assert!(
        std::str::from_utf8(&published[0].json)
            .unwrap()
            .contains("\"open\"")
    );
    let snapshot = rig.snapshot();
    assert_eq!(snapshot.version, 2);
    assert_eq!(snapshot.status_version, 2);
    assert_eq!(snapshot.status_origin, Some(Origin::Automation));
    assert!(!snapshot.is_open());
    let (log, _) = rig.stored();
    let rows: Vec<_> = log.iter().map(|s| (s.value, s.modified_by)).collect();
    assert_eq!(rows, [(Closed, ModifiedBy::Bits), (Open, ModifiedBy::Web)]);
    assert!(log[1].timestamp < log[0].timestamp);
}

#[test]
fn messages_are_stored_under_their_author() {
    let mut rig = rig();
    let member = rig.writer.db.add_user("ada", "hash").unwrap();
    rig.batch(vec![Event::Message {
        author: Some(member),
        text: "from the web".into(),
        origin: Origin::Web,
    }]);
    let (_, latest) = rig.stored();
    assert_eq!(latest.message.unwrap().user, "ada");
    rig.batch(vec![Event::Message {
        author: None,
        text: "from the device".into(),
        origin: Origin::ORIGINAL_DEVICE,
    }]);
    let origins: Vec<_> = rig.published().iter().map(|p| p.origin.clone()).collect();
    assert_eq!(origins, [Origin::Web, Origin::ORIGINAL_DEVICE]);
    let snapshot = rig.snapshot();
    let message = snapshot.message.as_ref().unwrap();
    assert_eq!(
        (message.user.as_str(), message.text.as_str()),
        (DEVICE_USER, "from the device")
    );
    assert_eq!(
        (snapshot.message_version, snapshot.message_origin.clone()),
        (2, Some(Origin::ORIGINAL_DEVICE))
    );
    let (_, latest) = rig.stored();
    assert_eq!(latest.message.unwrap().text, "from the device");
}

#[test]
fn the_keypad_roster_changes_nothing_stored() {
    let mut rig = rig();
    let member = rig.writer.db.add_user("bob", "hash").unwrap();
    let carol = rig.writer.db.add_user("carol", "hash").unwrap();
    let answers = rig.batch(vec![
        Event::Enter(member.id + 100),
        Event::Enter(member.id),
        Event::Leave(member.id),
        Event::Leave(member.id),
        Event::MacRoster(BTreeSet::from([carol.id, carol.id + 100])),
    ]);
    assert_eq!(
        applied(&answers),
        [
            Outcome::Ignored("no such user"),
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Ignored("not in the room"),
            Outcome::Applied
        ]
    );
    assert!(rig.published().is_empty());
    let snapshot = rig.snapshot();
    assert_eq!(snapshot.version, 0);
    assert!(snapshot.roster.keypad.is_empty());
    // An id of nobody is dropped; carol is counted, not named.
    assert_eq!(snapshot.roster.ids(), BTreeSet::from([carol.id]));
    assert_eq!(snapshot.roster.counted(), 1);
    assert!(snapshot.roster.named().is_empty());
}

#[test]
fn visibility_applies_to_the_roster_at_once_and_at_the_next_change() {
    let mut rig = rig();
    let named = rig.writer.db.add_user("nina", "hash").unwrap();
    let hidden = rig.writer.db.add_user("hugo", "hash").unwrap();
    let answers = rig.batch(vec![
        Event::Enter(named.id),
        Event::Enter(hidden.id),
        Event::Visibility {
            member: named.id,
            visibility: Visibility::Named,
        },
        Event::Visibility {
            member: hidden.id,
            visibility: Visibility::Hidden,
        },
        Event::Visibility {
            member: hidden.id + 100,
            visibility: Visibility::Named,
        },
    ]);
    assert_eq!(
        applied(&answers)[2..],
        [
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Ignored("no such user")
        ]
    );
    let roster = rig.snapshot().roster.clone();
    assert!(roster.occupied());
    assert_eq!(roster.counted(), 1);
    assert_eq!(roster.named(), BTreeSet::from(["nina".to_string()]));
    // Changed outside the writer (usermanage): seen at the next change.
    rig.writer
        .db
        .set_visibility_of("hugo", Visibility::Named)
        .unwrap();
    assert_eq!(rig.snapshot().roster.counted(), 1);
    rig.batch(vec![Event::MacRoster(BTreeSet::new())]);
    assert_eq!(rig.snapshot().roster.counted(), 2);
    // A member deleted meanwhile leaves the roster.
    rig.writer.db.delete_user("nina").unwrap();
    rig.batch(vec![Event::Leave(hidden.id)]);
    assert!(!rig.snapshot().roster.occupied());
    let stored = rig.writer.db.users().unwrap();
    assert!(stored.iter().all(|(u, _, _)| u.name != "nina"));
}

#[test]
fn temperature_history_keeps_the_newest_samples() {
    let mut rig = rig();
    let samples = (0..150)
        .map(|i| Event::Temperature {
            sensor: i % 3,
            value: i as f64,
            device: None,
        })
        .collect();
    rig.batch(samples);
    let seqs: Vec<_> = rig.published().iter().map(|p| p.seq).collect();
    assert_eq!(seqs, (1..=150).collect::<Vec<_>>());
    let snapshot = rig.snapshot();
    assert_eq!(snapshot.temperatures.len(), HISTORY_SAMPLES);
    assert_eq!(snapshot.temperatures[0].value, 149.0);
    assert_eq!(snapshot.sensors.len(), 3);
    assert_eq!(snapshot.sensors[&0].value, 147.0);
    let (_, latest) = rig.stored();
    assert_eq!(latest.temperatures.len(), 150);
}

#[test]
fn a_big_commit_reaches_followers_in_bounded_messages() {
    let mut rig = rig();
    let samples = (0..600)
        .map(|i| Event::Temperature {
            sensor: 0,
            value: i as f64,
            device: None,
        })
        .collect();
    rig.batch(samples);
    let messages: Vec<Changes> = std::iter::from_fn(|| rig.follower.try_recv().ok()).collect();
    let sizes: Vec<usize> = messages.iter().map(|m| m.len()).collect();
    assert_eq!(
        sizes,
        [CHUNK_CHANGES, CHUNK_CHANGES, 600 - 2 * CHUNK_CHANGES]
    );
    let seqs: Vec<u64> = messages
        .iter()
        .flat_map(|m| m.iter().map(|p| p.seq))
        .collect();
    assert_eq!(seqs, (1..=600).collect::<Vec<_>>());

    let text = "<".repeat(1000);
    let messages = (0..100)
        .map(|_| Event::Message {
            author: None,
            text: text.clone(),
            origin: Origin::ORIGINAL_DEVICE,
        })
        .collect();
    rig.batch(messages);
    let chunks: Vec<Changes> = std::iter::from_fn(|| rig.follower.try_recv().ok()).collect();
    assert!(chunks.len() > 1, "closed by size before the count");
    for chunk in &chunks {
        let bytes: usize = chunk.iter().map(|p| p.json.len()).sum();
        assert!(bytes < CHUNK_BYTES, "{bytes}");
    }
}

#[test]
fn a_failed_commit_is_seen_by_no_one() {
    let mut rig = rig();
    rig.batch(vec![status(Open, Origin::ORIGINAL_DEVICE)]);
    rig.published();
    let before = rig.snapshot();

    let answers = rig.batch_ending(
        vec![
            status(Closed, Origin::Web),
            Event::Temperature {
                sensor: 0,
                value: 21.5,
                device: None,
            },
            Event::Message {
                author: None,
                text: "lost".into(),
                origin: Origin::ORIGINAL_DEVICE,
            },
        ],
        // The transaction is dropped, so rolled back, and the commit fails.
        |batch| {
            drop(batch);
            Err(StoreError::Closed)
        },
    );
    assert!(answers.iter().all(Result::is_err));
    assert!(rig.published().is_empty(), "no follower hears of it");
    let after = rig.snapshot();
    assert_eq!(after.version, before.version);
    assert_eq!(after.data_json, before.data_json);
    assert!(after.is_open());
    let (log, latest) = rig.stored();
    assert_eq!(log.len(), 1);
    assert!(latest.temperatures.is_empty() && latest.message.is_none());

    // The next batch goes on from where the last commit left off.
    rig.batch(vec![status(Closed, Origin::Web)]);
    let published = rig.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].seq, 2);
    assert!(!rig.snapshot().is_open());
}

/// What SQLite answers when the disk is full.
fn disk_full() -> StoreError {
    let code = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL);
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        code,
        Some("database or disk is full".into()),
    ))
}

#[test]
fn events_not_stored_are_counted_and_shown_until_one_is_stored() {
    let mut rig = rig();
    let sample = Event::Temperature {
        sensor: 0,
        value: 20.0,
        device: None,
    };
    let answers = rig.batch_ending(
        vec![status(Open, Origin::ORIGINAL_DEVICE), sample.clone()],
        |batch| {
            drop(batch);
            Err(disk_full())
        },
    );
    assert!(answers.iter().all(Result::is_err));
    assert_eq!(rig.writer.metrics.events_not_stored.get(), 2);
    let why = rig.writer.storing.failure();
    assert_eq!(why.as_deref(), Some("database or disk is full"));

    // A batch that writes nothing proves nothing: still failing.
    let answers = rig.batch(vec![Event::Leave(42)]);
    assert!(matches!(answers[0], Ok(Outcome::Ignored(_))));
    assert!(rig.writer.storing.failure().is_some());

    // The next event stored ends it, without anything else.
    rig.batch(vec![sample]);
    assert_eq!(rig.writer.storing.failure(), None);
    assert_eq!(rig.writer.metrics.events_not_stored.get(), 2);
    assert_eq!(rig.published().len(), 1);
}

#[test]
fn timestamps_never_repeat() {
    let mut stamper = Stamper::new(Clock::new(chrono_tz::UTC));
    let stamps: Vec<_> = (0..1000).map(|_| stamper.next()).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]));
}
