//! The link with several devices, their lines, and what is logged.

use super::*;
use crate::clock::Clock;
use crate::clock::LocalTime;
use crate::record::{Message, ModifiedBy, StatusChange, StatusValue, TemperatureSample};
use crate::state::Event;
use crate::store::Db;

fn at() -> LocalTime {
    LocalTime::parse("2026-11-30 10:00:00").unwrap()
}

fn status(open: bool) -> Change {
    Change::Status(StatusChange {
        timestamp: at(),
        value: if open {
            StatusValue::Open
        } else {
            StatusValue::Closed
        },
        modified_by: ModifiedBy::Bits,
        device: None,
        until: None,
        person: None,
    })
}

fn message(text: &str) -> Change {
    Change::Message(Message {
        timestamp: at(),
        user: "ada".into(),
        text: text.into(),
        device: None,
    })
}

fn published(change: Change, origin: Origin) -> Published {
    Published {
        seq: 1,
        change: Arc::new(change),
        origin,
        row: 0,
        json: bytes::Bytes::new(),
    }
}

fn registered(id: i64, name: &str) -> Who {
    Who::Registered {
        id,
        name: DeviceName::from(name),
        key_hash: format!("hash of {name}"),
    }
}

#[test]
fn every_device_hears_what_the_others_changed() {
    let link = DeviceLink::new(Arc::new(Metrics::new()));
    let shutdown = CancellationToken::new();
    let door = registered(1, "door");
    let mut devices = [
        ("BITS", link.attach(Who::Original, &shutdown)),
        ("door", link.attach(door.clone(), &shutdown)),
        ("display", link.attach(registered(2, "display"), &shutdown)),
    ];
    assert_eq!(link.registered_connected(), ["display", "door"]);
    let sample = Change::Temperature(TemperatureSample {
        timestamp: at(),
        sensor: 0,
        value: 20.0,
        modified_by: ModifiedBy::Bits,
        device: Some("door".into()),
    });
    let everyone: &[&str] = &["BITS", "door", "display"];
    let cases: [(Change, Origin, &[&str]); 6] = [
        (status(true), Origin::Web, everyone),
        (status(false), Origin::Automation, everyone),
        (status(true), Origin::ORIGINAL_DEVICE, &["door", "display"]),
        (message("ciao"), door.origin(), &["BITS", "display"]),
        (message("ciao"), Origin::Mqtt, everyone),
        (sample, door.origin(), &[]),
    ];
    for (change, origin, hearers) in cases {
        let published = published(change.clone(), origin.clone());
        if let Some(line) = line_for(&published) {
            link.send_except(line, device_of(&published.origin));
        }
        for (name, device) in &mut devices {
            let heard = device.outbox.try_recv().is_ok();
            assert_eq!(
                heard,
                hearers.contains(name),
                "{name} of {change:?} from {origin:?}"
            );
        }
    }
}

#[test]
fn a_new_connection_replaces_only_the_same_device_s() {
    let link = DeviceLink::new(Arc::new(Metrics::new()));
    let shutdown = CancellationToken::new();
    let first = link.attach(registered(1, "door"), &shutdown);
    let other = link.attach(registered(2, "display"), &shutdown);
    let original = link.attach(Who::Original, &shutdown);
    assert!(!first.cancel.is_cancelled());
    let second = link.attach(registered(1, "door"), &shutdown);
    assert!(first.cancel.is_cancelled(), "the door's older connection");
    assert!(!other.cancel.is_cancelled() && !original.cancel.is_cancelled());
    // The older one leaving does not take the newer one with it.
    link.detach(&registered(1, "door"), first.id);
    assert_eq!(link.registered_connected(), ["display", "door"]);
    link.detach(&registered(1, "door"), second.id);
    assert_eq!(link.registered_connected(), ["display"]);
}

#[test]
fn a_candidate_hears_the_devices_but_replaces_the_original_only_when_confirmed() {
    let link = DeviceLink::new(Arc::new(Metrics::new()));
    let shutdown = CancellationToken::new();
    let mut original = link.attach(Who::Original, &shutdown);
    let mut candidate = link.attach_candidate(&shutdown);
    link.send("status 1".into());
    assert!(original.outbox.try_recv().is_ok());
    assert!(candidate.outbox.try_recv().is_ok());
    assert!(!original.cancel.is_cancelled());
    // It proved to be a registered device: the original stays.
    link.detach(&Who::Original, candidate.id);
    let door = link.attach(registered(1, "door"), &shutdown);
    assert!(!original.cancel.is_cancelled() && !door.cancel.is_cancelled());
    // Another said nothing of the kind: it is the original device now.
    let next = link.attach_candidate(&shutdown);
    link.confirm(next.id);
    assert!(original.cancel.is_cancelled());
    assert!(!next.cancel.is_cancelled() && !door.cancel.is_cancelled());
}

#[test]
fn a_device_whose_key_ended_is_closed() {
    let link = DeviceLink::new(Arc::new(Metrics::new()));
    let shutdown = CancellationToken::new();
    let door = link.attach(registered(1, "door"), &shutdown);
    let display = link.attach(registered(2, "display"), &shutdown);
    let original = link.attach(Who::Original, &shutdown);
    // The door claimed a new key elsewhere; the display's is as it was.
    let keys = [
        (1, "a newer key".to_string()),
        (2, "hash of display".to_string()),
    ];
    assert_eq!(link.drop_unknown_keys(&keys, u64::MAX), ["door"]);
    assert!(door.cancel.is_cancelled());
    assert!(!display.cancel.is_cancelled() && !original.cancel.is_cancelled());
    assert_eq!(link.registered_connected(), ["display"]);
    assert_eq!(link.drop_unknown_keys(&[], u64::MAX), ["display"]);
    assert!(!original.cancel.is_cancelled(), "the original has no key");
}

fn snapshot(
    status_at: u64,
    status_from: Origin,
    message_at: u64,
    message_from: Origin,
) -> Snapshot {
    let Change::Status(status) = status(true) else {
        unreachable!()
    };
    let Change::Message(message) = message("hello") else {
        unreachable!()
    };
    Snapshot {
        version: status_at.max(message_at),
        status: Some(status),
        status_version: status_at,
        status_origin: Some(status_from),
        sensors: Default::default(),
        temperatures: Default::default(),
        sensor_samples: Default::default(),
        message: Some(message),
        message_version: message_at,
        message_origin: Some(message_from),
        roster: Default::default(),
        temperature_row: 0,
        device_offline_since: None,
        data_json: bytes::Bytes::new(),
    }
}

#[test]
fn after_a_lag_the_device_hears_the_current_state_it_missed() {
    let hello = protocol::message_line("hello");
    let status = "status 1".to_string();
    let device = Origin::ORIGINAL_DEVICE;
    let web = Origin::Web;
    let cases = [
        // Both changed while the follower lagged.
        (
            snapshot(7, web.clone(), 9, device.clone()),
            5,
            vec![(status.clone(), &web), (hello.clone(), &device)],
        ),
        // Only the message is newer than what was seen.
        (
            snapshot(3, web.clone(), 9, web.clone()),
            5,
            vec![(hello, &web)],
        ),
        // Nothing newer.
        (snapshot(3, web.clone(), 4, web.clone()), 5, vec![]),
    ];
    for (snapshot, seen, lines) in cases {
        assert_eq!(lines_after_lag(&snapshot, seen), lines);
    }
}

/// The log lines written meanwhile, through a subscriber of its own.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn lines_not_sent_are_logged_short_and_rarely() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let link = DeviceLink::new(Arc::new(Metrics::new()));
    // A member's longest message: a line of about 2.7 KB.
    let long = protocol::message_line(&"ciao ".repeat(400));
    assert!(long.len() > 2600);
    for _ in 0..100 {
        link.send(long.clone());
    }
    let lines = log.lines();
    assert_eq!(lines.len(), 10, "ten in a row, then quiet: {lines:?}");
    for line in &lines {
        assert!(line.contains("no device connected; not sent: \"message "));
        assert!(line.ends_with("…\""), "{line}");
        assert!(line.len() < 200, "{} bytes: {line}", line.len());
    }
    tokio::time::advance(std::time::Duration::from_secs(6)).await;
    link.send(long.clone());
    let lines = log.lines();
    assert_eq!(lines.len(), 11);
    assert!(
        lines[10].ends_with("…\" (90 more like this not logged)"),
        "{}",
        lines[10]
    );
    // A device that does not read: the same bounds.
    let shutdown = CancellationToken::new();
    let _device = link.attach(Who::Original, &shutdown);
    tokio::time::advance(std::time::Duration::from_secs(6)).await;
    for _ in 0..OUTBOX + 1 {
        link.send(long.clone());
    }
    let lines = log.lines();
    let stuck = lines.last().unwrap();
    assert!(
        stuck.contains("device BITS is not reading; not sent: \"message "),
        "{lines:?}"
    );
    assert!(stuck.len() < 200, "{} bytes: {stuck}", stuck.len());
}

#[tokio::test]
async fn the_attached_device_hears_what_others_did_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("bitsd.db"), false).unwrap();
    let ada = db.add_user("ada", "hash").unwrap();
    let metrics = Arc::new(Metrics::new());
    let state = State::start(
        db,
        Clock::new(chrono_tz::UTC),
        3,
        false,
        (std::time::Duration::ZERO, Arc::default()),
        metrics.clone(),
        Vec::new(),
    )
    .unwrap();
    let link = DeviceLink::new(metrics);
    let shutdown = CancellationToken::new();
    let following = tokio::spawn(follow(link.clone(), state.clone(), shutdown.clone()));
    let mut device = link.attach(Who::Original, &shutdown);
    let events = [
        Event::Status {
            value: StatusValue::Open,
            origin: Origin::ORIGINAL_DEVICE,
        },
        Event::Status {
            value: StatusValue::Closed,
            origin: Origin::Web,
        },
        Event::Temperature {
            sensor: 0,
            value: 20.5,
            device: None,
        },
        Event::Message {
            author: None,
            text: "from the device".into(),
            origin: Origin::ORIGINAL_DEVICE,
        },
        Event::Status {
            value: StatusValue::Open,
            origin: Origin::Automation,
        },
        Event::Message {
            author: Some(ada),
            text: "end".into(),
            origin: Origin::Web,
        },
    ];
    for event in events {
        state.apply(event).await.unwrap();
    }
    for expected in [
        "status 0".to_string(),
        "status 1".to_string(),
        protocol::message_line("end"),
    ] {
        assert_eq!(device.outbox.recv().await, Some(expected));
    }
    shutdown.cancel();
    following.await.unwrap();
}
