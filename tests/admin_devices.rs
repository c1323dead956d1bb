//! The Devices section of `/admin` over real HTTP: a member adds, recodes,
//! revokes and deletes devices, and `bitsd device list` on the same
//! database sees each change.

mod common;

use bitsd::clock::unix_seconds;
use bitsd::store::{Db, DeviceError, MAX_DEVICES};
use common::member::{Session, location, logged_in_member};
use common::{Device, TestServer, assert_no_raw_timestamps, bitsd_command, header_text, stdout_of};
use reqwest::header;

/// `bitsd device ARGS` on the server's database, in UTC.
fn device(server: &TestServer, args: &[&str]) -> String {
    stdout_of(
        bitsd_command()
            .args(["--config", "/dev/null", "--timezone", "UTC", "--db"])
            .arg(&server.db)
            .arg("device")
            .args(args)
            .output()
            .unwrap(),
    )
}

/// The line of `bitsd device list` naming `name`.
fn listed(server: &TestServer, name: &str) -> String {
    let list = device(server, &["list"]);
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in {list}"))
        .to_string()
}

/// The claim code a page shows, checked for its shape.
fn code_in(page: &str) -> String {
    let start = page
        .find(r#"<code id="claim-code">"#)
        .unwrap_or_else(|| panic!("no claim code in {page}"))
        + r#"<code id="claim-code">"#.len();
    let code = &page[start..start + page[start..].find('<').unwrap()];
    let groups: Vec<&str> = code.split('-').collect();
    assert_eq!(groups.len(), 4, "{code}");
    assert!(
        groups.iter().all(|g| g.len() == 4
            && g.bytes()
                .all(|b| b"abcdefghjkmnpqrstuvwxyz23456789".contains(&b))),
        "{code}"
    );
    code.to_string()
}

/// A page that answers a device form with a new code: 200, never stored,
/// the code shown once; returns the code.
async fn shown_code(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 200);
    assert_eq!(header_text(&r, header::CACHE_CONTROL), "no-store");
    let page = r.text().await.unwrap();
    let code = code_in(&page);
    assert_eq!(page.matches(&code).count(), 1, "{page}");
    assert!(page.contains("as its first line"), "{page}");
    // Its expiry as a time and how long until it (default lifetime).
    assert!(page.contains(" (in 15 minutes)</time>.</p>"), "{page}");
    assert_no_raw_timestamps(&page);
    code
}

/// Claims as the device port does, through the library.
fn claim(server: &TestServer, code: &str) -> Result<String, DeviceError> {
    let mut db = Db::open(&server.db, false).unwrap();
    db.claim_device(code, unix_seconds()).map(|c| c.key)
}

/// A device form's answer that sends the browser back to the section.
fn back_to_devices(r: &reqwest::Response) {
    assert_eq!(r.status(), 303);
    assert_eq!(location(r), "/admin#devices");
}

/// A refused device form: a 400 that is the admin page saying why.
async fn refused(r: reqwest::Response, reason: &str) -> String {
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"<p class="error" role="alert">"#), "{page}");
    assert!(page.contains(reason), "{reason}: {page}");
    assert!(!page.contains("claim-code"), "{page}");
    page
}

#[tokio::test]
async fn add_new_code_revoke_and_delete_from_the_page() {
    let server = TestServer::start().await;
    let mut s = logged_in_member(&server, "ada", "/admin").await;
    let page = s.get("/admin").await.text().await.unwrap();
    assert!(page.contains(r#"<section class="devices" id="devices""#));
    assert!(page.contains("No devices registered."), "{page}");

    // Added: the code is in this answer and in no later page.
    let code = shown_code(s.submit("/admin/devices", &[("name", "door")]).await).await;
    let line = listed(&server, "door");
    assert!(line.contains("not claimed yet; code until "), "{line}");
    let page = s.get("/admin").await.text().await.unwrap();
    assert!(!page.contains(&code), "{page}");
    assert!(!page.contains("claim-code"), "{page}");
    assert!(page.contains(r#"<li id="device-door">"#), "{page}");
    assert!(page.contains("Last contact: never"), "{page}");
    assert!(page.contains("Not claimed yet"), "{page}");
    assert!(
        page.contains("Claim code pending until <time datetime=\""),
        "{page}"
    );
    assert!(page.contains("1 of at most 64 registered"), "{page}");
    assert_no_raw_timestamps(&page);

    // Claimed, then a new code: the old one is used up, the key stays
    // until the new code is claimed.
    let key = claim(&server, &code).unwrap();
    let page = s.get("/admin").await.text().await.unwrap();
    assert!(page.contains("Has a key since <time datetime=\""), "{page}");
    assert!(!page.contains("Claim code pending"), "{page}");
    let again = shown_code(s.submit("/admin/devices/door/code", &[]).await).await;
    assert_ne!(again, code);
    assert!(listed(&server, "door").contains("; code until "));
    assert!(matches!(
        claim(&server, &code),
        Err(DeviceError::UnknownCode)
    ));
    let db = Db::open(&server.db, false).unwrap();
    assert!(db.device_by_key(&key).unwrap().is_some());

    // Revoked: key and code end.
    back_to_devices(&s.submit("/admin/devices/door/revoke", &[]).await);
    assert!(db.device_by_key(&key).unwrap().is_none());
    let line = listed(&server, "door");
    assert!(
        line.contains("revoked ") && !line.contains("code"),
        "{line}"
    );
    assert!(matches!(
        claim(&server, &again),
        Err(DeviceError::UnknownCode)
    ));
    let page = s.get("/admin").await.text().await.unwrap();
    assert!(page.contains("Key revoked <time datetime=\""), "{page}");
    assert!(!page.contains(">Revoke<"), "nothing left to revoke: {page}");
    assert_no_raw_timestamps(&page);

    // Deleted, named in any case.
    shown_code(s.submit("/admin/devices", &[("name", "lab")]).await).await;
    back_to_devices(&s.submit("/admin/devices/DOOR/delete", &[]).await);
    let list = device(&server, &["list"]);
    assert!(!list.contains("door") && list.contains("lab"), "{list}");
    back_to_devices(&s.submit("/admin/devices/lab/delete", &[]).await);
    assert_eq!(device(&server, &["list"]), "no devices registered\n");
    let page = s.get("/admin").await.text().await.unwrap();
    assert!(page.contains("No devices registered."), "{page}");
}

#[tokio::test]
async fn the_list_says_when_and_how_a_device_last_connected() {
    let server = TestServer::start().await;
    let mut s = logged_in_member(&server, "bea", "/admin").await;
    s.get("/admin").await;
    shown_code(s.submit("/admin/devices", &[("name", "lab")]).await).await;
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    // 2027-01-15 08:00:00 UTC, 09:00 in Rome.
    conn.execute(
        "UPDATE bitsd_device SET last_seen = 1800000000, address = '192.0.2.7', \
         transport = 'tls' WHERE name = 'lab'",
        [],
    )
    .unwrap();
    let page = s.get("/admin").await.text().await.unwrap();
    // A time and how long until it (the test's clock is the real one: it
    // is a future time, its year shown until 2027).
    assert!(
        page.contains(r#"Last contact: <time datetime="2027-01-15T09:00:00">Fri 15 Jan"#)
            && page.contains(", 09:00 ("),
        "{page}"
    );
    assert_no_raw_timestamps(&page);
    assert!(page.contains("tls from 192.0.2.7"), "{page}");
    let page = s.get("/admin?lang=it").await.text().await.unwrap();
    assert!(page.contains("Dispositivi"), "{page}");
    assert!(
        page.contains(r#"Ultimo contatto: <time datetime="2027-01-15T09:00:00">ven 15 gen"#)
            && page.contains(", 09:00 ("),
        "{page}"
    );
    assert_no_raw_timestamps(&page);
    assert!(page.contains("tls da 192.0.2.7"), "{page}");
}

#[tokio::test]
async fn a_device_claims_the_code_the_page_shows_and_a_revoke_drops_it() {
    let server = TestServer::start_with(&["--control-remote-address", "127.0.0.0/8"]).await;
    let mut s = logged_in_member(&server, "eve", "/admin").await;
    s.get("/admin").await;
    let code = shown_code(s.submit("/admin/devices", &[("name", "door")]).await).await;
    let mut door = Device::connect_from("127.0.0.2", server.control_addr()).await;
    door.send(&format!("claim {code}")).await;
    let line = door.recv().await;
    assert!(line.starts_with("key "), "{line}");

    let page = s
        .wait_for("/admin", |p| {
            p.contains(r#"<span class="badge on">Connected</span>"#)
        })
        .await;
    assert!(!page.contains("Last contact"), "{page}");
    assert!(page.contains("tcp from 127.0.0.2"), "{page}");
    assert!(page.contains("Has a key since <time datetime=\""), "{page}");

    back_to_devices(&s.submit("/admin/devices/door/revoke", &[]).await);
    door.closed().await;
    let page = s.wait_for("/admin", |p| !p.contains("badge on")).await;
    assert!(page.contains("Last contact: <time datetime=\""), "{page}");
    assert!(page.contains("Key revoked <time datetime=\""), "{page}");
}

#[tokio::test]
async fn refusals_are_400_with_the_reason() {
    let server = TestServer::start().await;
    let mut s = logged_in_member(&server, "cleo", "/admin").await;
    s.get("/admin").await;

    let page = refused(
        s.submit("/admin/devices", &[("name", "has space")]).await,
        "is not a valid device name (1 to 32 ASCII letters, digits, ",
    )
    .await;
    assert!(
        page.contains(r#"value="has space""#),
        "the name is kept: {page}"
    );
    refused(
        s.submit("/admin/devices", &[("name", "")]).await,
        "is not a valid device name",
    )
    .await;
    refused(
        s.submit("/admin/devices", &[]).await,
        "is not a valid device name",
    )
    .await;
    refused(
        s.submit("/admin/devices", &[("name", "bits")]).await,
        "reserved for the original device",
    )
    .await;
    shown_code(s.submit("/admin/devices", &[("name", "Door")]).await).await;
    refused(
        s.submit("/admin/devices", &[("name", "dOOR")]).await,
        "a device named Door already exists",
    )
    .await;
    for action in ["code", "revoke", "delete"] {
        refused(
            s.submit(&format!("/admin/devices/nowhere/{action}"), &[])
                .await,
            "no device named nowhere",
        )
        .await;
    }

    // Filled up to the limit, a 65th is refused.
    {
        let mut db = Db::open(&server.db, false).unwrap();
        for i in 1..MAX_DEVICES {
            db.add_device(&format!("d{i}"), unix_seconds(), 900)
                .unwrap();
        }
    }
    let page = refused(
        s.submit("/admin/devices", &[("name", "one-more")]).await,
        "there are already 64 devices, the most bitsd keeps; delete one first",
    )
    .await;
    assert!(page.contains("64 of at most 64 registered"), "{page}");
    assert!(!device(&server, &["list"]).contains("one-more"));
}

#[tokio::test]
async fn only_members_with_the_forms_token_change_devices() {
    let server = TestServer::start().await;
    let mut s = logged_in_member(&server, "dan", "/admin").await;
    s.get("/admin").await;
    shown_code(s.submit("/admin/devices", &[("name", "door")]).await).await;

    // Not logged in: sent to the login form, whatever the token.
    let mut visitor = Session::new(&server);
    visitor.get("/login").await;
    for path in [
        "/admin/devices",
        "/admin/devices/door/code",
        "/admin/devices/door/revoke",
        "/admin/devices/door/delete",
    ] {
        let r = visitor.submit(path, &[("name", "lab")]).await;
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(location(&r), format!("/login?next={path}"));
        let r = server.post_form(path, &[("name", "lab")]).await;
        assert_eq!(r.status(), 303, "{path}");
    }

    // Logged in, without the token or with another.
    for xsrf in [None, Some("guess"), Some("")] {
        for path in [
            "/admin/devices",
            "/admin/devices/door/code",
            "/admin/devices/door/revoke",
            "/admin/devices/door/delete",
        ] {
            let mut form = vec![("name", "lab")];
            form.extend(xsrf.map(|x| ("_xsrf", x)));
            let r = s.post(path, &form).await;
            assert_eq!(r.status(), 403, "{path} {xsrf:?}");
            let text = r.text().await.unwrap();
            assert!(text.contains("anti-forgery token"), "{text}");
        }
    }
    // Nor from another site, even with the token.
    let xsrf = s.cookie("_xsrf").unwrap();
    let r = server
        .http
        .post(server.url("/admin/devices"))
        .header(header::COOKIE, s.cookie_header())
        .header(header::ORIGIN, "https://evil.example")
        .form(&[("name", "lab"), ("_xsrf", &xsrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let list = device(&server, &["list"]);
    assert!(!list.contains("lab"), "{list}");
    assert!(listed(&server, "door").contains("code until"));
}
