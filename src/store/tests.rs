//! The store over a real database file.

use super::*;

#[test]
fn latest_has_the_newest_sample_of_each_sensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("t.db"), false).unwrap();
    assert!(db.latest(10).unwrap().per_sensor.is_empty());
    let batch = db.batch().unwrap();
    // Sensors out of order, one negative, the newest not the last written.
    let samples = [
        (3, "2026-11-01 10:00:00", 20.0),
        (-1, "2026-11-01 09:00:00", 5.0),
        (3, "2026-11-01 12:00:00", 22.0),
        (0, "2026-11-01 11:00:00", 18.0),
        (3, "2026-11-01 11:00:00", 21.0),
        (-1, "2026-11-01 08:00:00", 4.0),
    ];
    for (sensor, at, value) in samples {
        batch
            .insert_temperature(&TemperatureSample {
                timestamp: LocalTime::parse(at).unwrap(),
                sensor,
                value,
                modified_by: ModifiedBy::Bits,
                device: None,
            })
            .unwrap();
    }
    batch.commit().unwrap();
    let newest: Vec<(i64, f64)> = db
        .latest(2)
        .unwrap()
        .per_sensor
        .iter()
        .map(|t| (t.sensor, t.value))
        .collect();
    assert_eq!(newest, [(-1, 5.0), (0, 18.0), (3, 22.0)]);
}

#[test]
fn migrations_are_idempotent_and_add_the_device_user() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let db = Db::open(&path, false).unwrap();
    assert!(db.user_by_name(DEVICE_USER).unwrap().is_some());
    drop(db);
    let db = Db::open(&path, false).unwrap();
    let n: i64 = db
        .conn
        .query_row(r#"SELECT COUNT(*) FROM "User""#, [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let v: i64 = db
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v as usize, MIGRATIONS.len());
}

#[test]
fn a_session_is_made_only_with_the_password_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("t.db"), false).unwrap();
    let alice = db.add_user("alice", "hash-1").unwrap();
    // Checked against hash-1, but the password changed meanwhile.
    db.set_password("alice", "hash-2").unwrap();
    assert!(!db.create_session("s1", &alice, "hash-1", 100, 200).unwrap());
    assert!(db.create_session("s2", &alice, "hash-2", 100, 200).unwrap());
    assert_eq!(db.session_user("s1", 150).unwrap(), None);
    assert_eq!(db.session_user("s2", 150).unwrap(), Some(alice.clone()));
    assert_eq!(db.session_user("s2", 200).unwrap(), None, "expired");
    assert_eq!(db.sweep_sessions(199).unwrap(), 0);
    assert_eq!(db.sweep_sessions(200).unwrap(), 1);
    // Deleted meanwhile: no session either.
    db.delete_user("alice").unwrap();
    assert!(!db.create_session("s3", &alice, "hash-2", 100, 200).unwrap());
}

#[test]
fn account_refusals_and_database_failures_are_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("t.db"), false).unwrap();
    db.add_user("alice", "hash").unwrap();
    let refused = db.add_user("alice", "hash");
    assert!(matches!(refused, Err(AccountError::UserExists(ref n)) if n == "alice"));
    assert!(matches!(
        db.delete_mac("00"),
        Err(AccountError::NoSuchMac(_))
    ));
    db.conn.execute_batch(r#"DROP TABLE "MACToUser""#).unwrap();
    let failed = db.delete_mac("00").unwrap_err();
    assert!(matches!(failed, AccountError::Store(StoreError::Sqlite(_))));
    let shown = crate::report::Report(&failed).to_string();
    assert!(shown.starts_with("database: no such table"), "{shown}");
}

#[test]
fn members_of_the_time_become_named_and_later_ones_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    // A database of schema version 5 with two members.
    let conn = Connection::open(&path).unwrap();
    for sql in &MIGRATIONS[..5] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 5).unwrap();
    conn.execute_batch(
        r#"INSERT INTO "User" (name, password) VALUES ('old', 'x'), ('older', 'y')"#,
    )
    .unwrap();
    drop(conn);
    let mut db = Db::open(&path, false).unwrap();
    let young = db.add_user("young", "z").unwrap();
    let seen: Vec<(String, Visibility)> = db
        .users()
        .unwrap()
        .into_iter()
        .map(|(u, v, _)| (u.name, v))
        .collect();
    let expected = [
        ("BITS", Visibility::Counted),
        ("old", Visibility::Named),
        ("older", Visibility::Named),
        ("young", Visibility::Counted),
    ];
    let expected: Vec<(String, Visibility)> =
        expected.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    assert_eq!(seen, expected);
    db.set_visibility_of("young", Visibility::Hidden).unwrap();
    assert_eq!(db.visibility(young.id).unwrap(), Visibility::Hidden);
    // A deleted member's visibility does not pass to the next id.
    db.delete_user("young").unwrap();
    let next = db.add_user("next", "w").unwrap();
    assert_eq!(next.id, young.id);
    assert_eq!(db.visibility(next.id).unwrap(), Visibility::Counted);
    assert!(matches!(
        db.set_visibility_of("nobody", Visibility::Named),
        Err(AccountError::NoSuchUser(_))
    ));
    // The table's check refuses any other value.
    let refused = db.conn.execute(
        "UPDATE bitsd_member SET visibility = 'everyone' WHERE userid = 2",
        [],
    );
    assert!(refused.is_err());
}

#[test]
fn pages_upsert_reports_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("t.db"), false).unwrap();
    let page = Page {
        slug: "info".into(),
        title: "Info".into(),
        body: "# Info".into(),
    };
    assert!(db.put_page(&page).unwrap());
    assert!(!db.put_page(&page).unwrap());
    let changed = Page {
        body: "# Info\nmore".into(),
        ..page
    };
    assert!(db.put_page(&changed).unwrap());
    assert_eq!(db.page("info").unwrap(), Some(changed));
}

#[test]
fn push_events_are_kept_until_every_subscriber_had_them_or_a_day() {
    use crate::record::push::{Subscription, Topic};
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("t.db"), false).unwrap();
    let event = |db: &mut Db, created: f64| {
        let batch = db.batch().unwrap();
        batch.insert_push_event(Topic::Open, "{}", created).unwrap();
        batch.commit().unwrap();
    };
    let ids = |db: &Db| -> Vec<i64> {
        db.push_events_after(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect()
    };
    // Nobody subscribed: nobody needs them.
    event(&mut db, 100.0);
    event(&mut db, 200.0);
    db.push_handled(&[], &[], 0.0).unwrap();
    assert!(ids(&db).is_empty());
    // A subscriber hears from now on; ids are never given again.
    let s = Subscription {
        endpoint: "https://push.example/1".into(),
        p256dh: "k".into(),
        auth: "a".into(),
        topics: vec![Topic::Open],
        lang: "en".into(),
    };
    assert_eq!(
        db.push_subscribe(&s, "https://b.example", 10, 0).unwrap(),
        Subscribed::Created
    );
    event(&mut db, 300.0);
    event(&mut db, 400.0);
    let pending = db.push_pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].delivered, 2, "not the events before it");
    assert_eq!(ids(&db), [3, 4]);
    db.push_handled(&[], &[], 0.0).unwrap();
    assert_eq!(ids(&db), [3, 4], "kept for the one who has not had them");
    db.push_handled(&[(pending[0].row.id, 3)], &[], 350.0)
        .unwrap();
    assert_eq!(ids(&db), [4]);
    db.push_handled(&[], &[], 1000.0).unwrap();
    assert!(ids(&db).is_empty(), "given up after a day");
    assert_eq!(db.push_events_after(0, 1).unwrap().len(), 0);
}

#[test]
fn a_push_replacement_takes_the_old_ones_choice_and_place() {
    use crate::record::push::{Replacement, Subscription, Topic};
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("t.db"), false).unwrap();
    let subscription = |endpoint: &str, topics: Vec<Topic>, lang: &str| Subscription {
        endpoint: endpoint.into(),
        p256dh: "k".into(),
        auth: "a".into(),
        topics,
        lang: lang.into(),
    };
    let old = subscription(
        "https://push.example/old",
        vec![Topic::Open, Topic::Message],
        "it",
    );
    let other = subscription("https://push.example/other", vec![Topic::Open], "en");
    for s in [&old, &other] {
        assert_eq!(
            db.push_subscribe(s, "https://b.example", 2, 0).unwrap(),
            Subscribed::Created
        );
    }
    // An event the old one has not had yet.
    let batch = db.batch().unwrap();
    batch.insert_push_event(Topic::Open, "{}", 100.0).unwrap();
    batch.commit().unwrap();
    let replacement = |endpoint: &str, replaces: &str| {
        let s = subscription(endpoint, Vec::new(), "en");
        Replacement {
            endpoint: s.endpoint,
            p256dh: s.p256dh,
            auth: s.auth,
            topics: None,
            lang: None,
            replaces: replaces.into(),
        }
    };
    let endpoints = |db: &Db| -> Vec<(String, Vec<Topic>, String, i64)> {
        db.push_pending()
            .unwrap()
            .into_iter()
            .map(|p| {
                let s = p.row.subscription;
                (s.endpoint, s.topics, s.lang, p.delivered)
            })
            .collect()
    };

    // Nothing to take the topics from.
    let stray = replacement("https://push.example/new", "https://push.example/none");
    assert_eq!(
        db.push_replace(&stray, "en", "https://b.example", 2, 0)
            .unwrap(),
        Subscribed::NothingToReplace
    );
    // Two kept of two: the new one takes the old one's place, choice and
    // events still to hear.
    let new = replacement("https://push.example/new", "https://push.example/old");
    assert_eq!(
        db.push_replace(&new, "en", "https://b.example", 2, 0)
            .unwrap(),
        Subscribed::Created
    );
    assert_eq!(
        endpoints(&db),
        [
            (
                "https://push.example/other".into(),
                vec![Topic::Open],
                "en".into(),
                0
            ),
            (
                "https://push.example/new".into(),
                vec![Topic::Open, Topic::Message],
                "it".into(),
                0
            ),
        ]
    );
    // Sent again: the new one keeps what it has.
    assert_eq!(
        db.push_replace(&new, "en", "https://b.example", 2, 0)
            .unwrap(),
        Subscribed::Replaced
    );
    assert_eq!(endpoints(&db).len(), 2);
    // Replaced by an endpoint already kept: that one stays, with the
    // choice of the one it replaces.
    let merged = replacement("https://push.example/other", "https://push.example/new");
    assert_eq!(
        db.push_replace(&merged, "en", "https://b.example", 2, 0)
            .unwrap(),
        Subscribed::Replaced
    );
    assert_eq!(
        endpoints(&db),
        [(
            "https://push.example/other".into(),
            vec![Topic::Open, Topic::Message],
            "it".into(),
            0
        )]
    );
}
