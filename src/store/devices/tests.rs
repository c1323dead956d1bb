//! Adding, claiming, revoking and deleting devices on a real database.

use super::*;

const TTL: i64 = 900;
const NOW: i64 = 1_800_000_000;

fn db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("d.db"), false).unwrap();
    (dir, db)
}

#[test]
fn codes_are_four_groups_of_four_from_the_alphabet() {
    for _ in 0..100 {
        let code = new_code();
        let groups: Vec<&str> = code.split('-').collect();
        assert_eq!(groups.len(), 4, "{code}");
        for group in groups {
            assert_eq!(group.len(), 4, "{code}");
            assert!(group.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{code}");
        }
    }
    assert_ne!(new_code(), new_code());
}

#[test]
fn typed_codes_are_normalised() {
    let made = "5qqp-e9dp-hh7v-fjrk";
    for typed in [
        made,
        "5qqpe9dphh7vfjrk",
        "5QQP-E9DP-HH7V-FJRK",
        " 5qqp-e9dphh7v-FJRK\n",
        "5-q-q-p-e9dp-hh7vfjrk",
    ] {
        assert_eq!(
            normalise_code(typed).as_deref(),
            Some("5qqpe9dphh7vfjrk"),
            "{typed:?}"
        );
    }
    for bad in [
        "",
        "5qqp-e9dp-hh7v",
        "5qqp-e9dp-hh7v-fjrkk",
        "5qqp-e9dp-hh7v-fjr0",
        "5qqp-e9dp-hh7v-fjr1",
        "5qqp e9dp hh7v fjrk",
        "5qqp-e9dp-hh7v-fjré",
    ] {
        assert_eq!(normalise_code(bad), None, "{bad:?}");
    }
}

#[test]
fn keys_are_256_bits_of_base64url() {
    let key = new_key();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&key)
        .unwrap();
    assert_eq!(bytes.len(), 32);
    assert_ne!(key, new_key());
}

#[test]
fn names_are_checked() {
    for good in ["a", "door-2", "Sensor_Lab", &"x".repeat(32)] {
        check_device_name(good).unwrap();
    }
    for bad in ["", "has space", "dörr", "a.b", &"x".repeat(33)] {
        assert!(
            matches!(check_device_name(bad), Err(DeviceError::BadName(_))),
            "{bad:?}"
        );
    }
    for reserved in ["BITS", "bits", "Bits"] {
        assert!(matches!(
            check_device_name(reserved),
            Err(DeviceError::Reserved(_))
        ));
    }
}

#[test]
fn a_code_claims_once_with_or_without_dashes_in_any_case() {
    let (_dir, mut db) = db();
    let new = db.add_device("door", NOW, TTL).unwrap();
    assert_eq!(new.expires, NOW + TTL);
    let typed = new.code.replace('-', "").to_uppercase();
    let claimed = db.claim_device(&typed, NOW + 10).unwrap();
    assert_eq!(claimed.device.name, "door");
    assert_eq!(claimed.device.key_made, Some(NOW + 10));
    assert_eq!(claimed.device.code_expires, None);
    assert!(matches!(
        db.claim_device(&new.code, NOW + 11),
        Err(DeviceError::UnknownCode)
    ));
    let found = db.device_by_key(&claimed.key).unwrap().unwrap();
    assert_eq!(found.name, "door");
    assert_eq!(db.device_by_key("not-a-key").unwrap(), None);
}

#[test]
fn wrong_and_expired_codes_are_refused() {
    let (_dir, mut db) = db();
    let new = db.add_device("door", NOW, TTL).unwrap();
    assert!(matches!(
        db.claim_device("aaaa-aaaa-aaaa-aaaa", NOW),
        Err(DeviceError::UnknownCode)
    ));
    assert!(matches!(
        db.claim_device("not a code", NOW),
        Err(DeviceError::UnknownCode)
    ));
    assert!(matches!(
        db.claim_device(&new.code, NOW + TTL),
        Err(DeviceError::ExpiredCode)
    ));
    // Refused, it stays pending: a moment earlier it still claims.
    db.claim_device(&new.code, NOW + TTL - 1).unwrap();
}

#[test]
fn a_new_code_keeps_the_old_key_until_claimed() {
    let (_dir, mut db) = db();
    let first = db.add_device("door", NOW, TTL).unwrap();
    let old = db.claim_device(&first.code, NOW).unwrap().key;
    let second = db.new_claim_code("DOOR", NOW + 100, TTL).unwrap();
    assert_eq!(second.device, "door");
    assert_eq!(second.expires, NOW + 100 + TTL);
    assert!(db.device_by_key(&old).unwrap().is_some(), "old key works");
    let new = db.claim_device(&second.code, NOW + 200).unwrap().key;
    assert_eq!(db.device_by_key(&old).unwrap(), None, "old key replaced");
    assert_eq!(
        db.device_by_key(&new).unwrap().unwrap().key_made,
        Some(NOW + 200)
    );
}

#[test]
fn a_newer_code_voids_the_older() {
    let (_dir, mut db) = db();
    let first = db.add_device("door", NOW, TTL).unwrap();
    let second = db.new_claim_code("door", NOW + 1, TTL).unwrap();
    assert!(matches!(
        db.claim_device(&first.code, NOW + 2),
        Err(DeviceError::UnknownCode)
    ));
    db.claim_device(&second.code, NOW + 2).unwrap();
}

#[test]
fn revoke_and_delete_end_the_key() {
    let (_dir, mut db) = db();
    let code = db.add_device("door", NOW, TTL).unwrap().code;
    let door = db.claim_device(&code, NOW).unwrap().key;
    let code = db.add_device("lab", NOW, TTL).unwrap().code;
    let lab = db.claim_device(&code, NOW).unwrap().key;

    assert_eq!(
        db.revoke_device("DOOR", NOW + 5).unwrap(),
        ("door".to_string(), true)
    );
    assert_eq!(db.device_by_key(&door).unwrap(), None);
    assert!(!db.revoke_device("door", NOW + 6).unwrap().1, "no key left");
    let listed = &db.devices().unwrap()[0];
    assert_eq!((listed.key_made, listed.revoked), (None, Some(NOW + 6)));

    assert_eq!(db.delete_device("LAB").unwrap(), "lab");
    assert_eq!(db.device_by_key(&lab).unwrap(), None);
    let names: Vec<String> = db.devices().unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["door"]);
    assert!(matches!(
        db.delete_device("lab"),
        Err(DeviceError::NoSuchDevice(_))
    ));
    assert!(matches!(
        db.revoke_device("nothing", NOW),
        Err(DeviceError::NoSuchDevice(_))
    ));
    assert!(matches!(
        db.new_claim_code("bits", NOW, TTL),
        Err(DeviceError::Reserved(_))
    ));
}

#[test]
fn revoke_voids_a_pending_code_and_a_new_one_pairs_again() {
    let (_dir, mut db) = db();
    let code = db.add_device("door", NOW, TTL).unwrap().code;
    db.revoke_device("door", NOW).unwrap();
    assert!(matches!(
        db.claim_device(&code, NOW),
        Err(DeviceError::UnknownCode)
    ));
    let code = db.new_claim_code("door", NOW, TTL).unwrap().code;
    let claimed = db.claim_device(&code, NOW + 1).unwrap();
    assert_eq!(claimed.device.revoked, None);
}

#[test]
fn delete_touches_nothing_else() {
    let (_dir, mut db) = db();
    db.add_device("door", NOW, TTL).unwrap();
    let users_before = db.users().unwrap().len();
    db.delete_device("door").unwrap();
    assert_eq!(db.users().unwrap().len(), users_before);
    assert!(db.user_by_name(DEVICE_USER).unwrap().is_some());
    db.add_device("door", NOW, TTL).unwrap();
}

#[test]
fn names_are_unique_ignoring_case_and_bits_is_reserved() {
    let (_dir, mut db) = db();
    db.add_device("Door", NOW, TTL).unwrap();
    match db.add_device("dOOR", NOW, TTL) {
        Err(DeviceError::Exists(name)) => assert_eq!(name, "Door"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        db.add_device("bits", NOW, TTL),
        Err(DeviceError::Reserved(_))
    ));
    assert!(matches!(
        db.add_device("no way", NOW, TTL),
        Err(DeviceError::BadName(_))
    ));
    assert_eq!(db.devices().unwrap().len(), 1);
}

#[test]
fn at_most_64_devices() {
    let (_dir, mut db) = db();
    for i in 0..MAX_DEVICES {
        db.add_device(&format!("d{i}"), NOW, TTL).unwrap();
    }
    assert!(matches!(
        db.add_device("one-more", NOW, TTL),
        Err(DeviceError::Full)
    ));
    db.delete_device("d0").unwrap();
    db.add_device("one-more", NOW, TTL).unwrap();
    assert_eq!(db.devices().unwrap().len(), MAX_DEVICES as usize);
}
