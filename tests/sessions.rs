//! Login sessions over real HTTP: kept in the database, ended by logout,
//! by usermanage, by expiry; never logging in anybody but their user.

mod common;

use common::TestServer;
use common::member::{Session, add_user, logged_in_member, usermanage};
use reqwest::header;

/// The status of `GET /admin` with exactly `cookie` (200 logged in, 303 not).
async fn admin_with(server: &TestServer, cookie: &str) -> u16 {
    server
        .get_with(
            "/admin",
            &[(header::COOKIE, &format!("usertoken={cookie}"))],
        )
        .await
        .status()
        .as_u16()
}

fn sessions_in(server: &TestServer) -> Vec<(i64, String, i64, i64)> {
    let db = rusqlite::Connection::open(&server.db).unwrap();
    let mut stmt = db
        .prepare("SELECT userid, name, created, expires FROM bitsd_session ORDER BY created")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn sql(server: &TestServer, statement: &str) {
    let db = rusqlite::Connection::open(&server.db).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute_batch(statement).unwrap();
}

/// Logs `user` in; returns the value of its `usertoken` cookie.
async fn logged_in(server: &TestServer, user: &str, password: &str) -> String {
    let mut s = Session::new(server);
    assert_eq!(s.login(user, password, "/admin").await.status(), 303);
    s.cookie("usertoken").expect("a login cookie")
}

#[tokio::test]
async fn a_session_is_stored_as_a_hash_and_logout_ends_every_copy() {
    let server = TestServer::start().await;
    let mut browser = logged_in_member(&server, "alice", "/admin").await;
    let cookie = browser.cookie("usertoken").unwrap();
    let sessions = sessions_in(&server);
    assert_eq!(sessions.len(), 1);
    let (userid, name, created, expires) = sessions[0].clone();
    assert_eq!(name, "alice");
    assert!(userid > 1);
    assert_eq!(expires - created, 86_400, "cookie_max_age_days = 1");
    // Only a hash of the token is kept: the cookie's token is nowhere in it.
    let db = rusqlite::Connection::open(&server.db).unwrap();
    let hash: String = db
        .query_row("SELECT token_hash FROM bitsd_session", [], |r| r.get(0))
        .unwrap();
    assert_eq!(hash.len(), 64);
    assert!(!cookie.contains(&hash));

    // A copy of the cookie works until the owner logs out.
    assert_eq!(admin_with(&server, &cookie).await, 200);
    let r = browser.get("/logout").await;
    assert_eq!(r.status(), 303);
    assert_eq!(browser.cookie("usertoken"), None, "the cookie is cleared");
    assert_eq!(admin_with(&server, &cookie).await, 303, "the copy is dead");
    assert!(sessions_in(&server).is_empty());

    // POST /logout does the same.
    let cookie = logged_in(&server, "alice", "pw").await;
    let r = server
        .http
        .post(server.url("/logout"))
        .header(header::COOKIE, format!("usertoken={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(admin_with(&server, &cookie).await, 303);
}

#[tokio::test]
async fn usermanage_ends_sessions_on_logout_password_change_and_deletion() {
    let server = TestServer::start().await;
    add_user(&server, "bob", "pw");
    add_user(&server, "carol", "pw");
    let bob = logged_in(&server, "bob", "pw").await;
    let bob_phone = logged_in(&server, "bob", "pw").await;
    let carol = logged_in(&server, "carol", "pw").await;
    assert_eq!(admin_with(&server, &bob).await, 200);

    let out = usermanage(&server, &["logout", "bob"], None);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ended 2 session(s) of bob"
    );
    assert_eq!(admin_with(&server, &bob).await, 303);
    assert_eq!(admin_with(&server, &bob_phone).await, 303);
    assert_eq!(admin_with(&server, &carol).await, 200, "others stay");
    // Nothing else changed: bob still logs in with the same password.
    let bob = logged_in(&server, "bob", "pw").await;

    let out = usermanage(&server, &["modify", "bob", "--password-stdin"], Some("new"));
    assert!(out.status.success());
    assert_eq!(admin_with(&server, &bob).await, 303, "a new password");
    let bob = logged_in(&server, "bob", "new").await;

    let out = usermanage(&server, &["delete", "bob"], None);
    assert!(out.status.success());
    assert_eq!(admin_with(&server, &bob).await, 303, "deleted");
    assert_eq!(admin_with(&server, &carol).await, 200);
    assert!(sessions_in(&server).iter().all(|s| s.1 == "carol"));

    let out = usermanage(&server, &["logout", "nobody"], None);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "usermanage: no user named nobody"
    );
}

#[tokio::test]
async fn a_session_logs_in_only_the_user_it_was_made_for() {
    let server = TestServer::start().await;
    add_user(&server, "dave", "pw");
    let dave = logged_in(&server, "dave", "pw").await;
    // The user is removed behind bitsd's back (sessions left in place), and
    // the next user added gets the same id.
    sql(&server, r#"DELETE FROM "User" WHERE name = 'dave'"#);
    add_user(&server, "mallory", "pw");
    let db = rusqlite::Connection::open(&server.db).unwrap();
    let ids: (i64, i64) = db
        .query_row(
            r#"SELECT s.userid, u.userid FROM bitsd_session s, "User" u WHERE u.name = 'mallory'"#,
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(ids.0, ids.1, "the id was given again");
    assert_eq!(admin_with(&server, &dave).await, 303);
    // A user renamed is not the session's user either.
    let mallory = logged_in(&server, "mallory", "pw").await;
    sql(
        &server,
        r#"UPDATE "User" SET name = 'mallory2' WHERE name = 'mallory'"#,
    );
    assert_eq!(admin_with(&server, &mallory).await, 303);
}

#[tokio::test]
async fn expired_sessions_and_old_cookies_are_not_logged_in() {
    let server = TestServer::start_with(&["--cookie-secret", "test-secret"]).await;
    add_user(&server, "erin", "pw");
    let erin = logged_in(&server, "erin", "pw").await;
    assert_eq!(admin_with(&server, &erin).await, 200);
    sql(&server, "UPDATE bitsd_session SET expires = 1000");
    assert_eq!(admin_with(&server, &erin).await, 303, "expired");

    // A cookie of the kind bitsd gave before sessions: `userid:expiry`,
    // signed with the right key.
    let signer = bitsd::auth::Signer::new("test-secret");
    let old = signer.sign("2:4000000000");
    assert_eq!(admin_with(&server, &old).await, 303);
    // A token nobody was given, signed with the right key.
    let made_up = signer.sign(&bitsd::auth::session_token());
    assert_eq!(admin_with(&server, &made_up).await, 303);
}

#[tokio::test]
async fn expired_sessions_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let server = TestServer::start_in(dir, db, &[]).await;
    add_user(&server, "frank", "pw");
    logged_in(&server, "frank", "pw").await;
    sql(
        &server,
        "INSERT INTO bitsd_session VALUES ('old', 2, 'frank', 1, 1000);",
    );
    assert_eq!(sessions_in(&server).len(), 2);
    let db = server.db.clone();
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, db, &[]).await;
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while sessions_in(&server).len() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "not swept");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_member_keeps_at_most_32_sessions() {
    let server = TestServer::start().await;
    add_user(&server, "gina", "pw");
    let first = logged_in(&server, "gina", "pw").await;
    for _ in 0..32 {
        logged_in(&server, "gina", "pw").await;
    }
    assert_eq!(sessions_in(&server).len(), 32);
    assert_eq!(admin_with(&server, &first).await, 303, "the oldest ended");
}

#[tokio::test]
async fn new_user_names_are_letters_digits_and_dot_dash_underscore() {
    let server = TestServer::start().await;
    for good in ["Ñandú.x_y-1", "名前", "a", &"z".repeat(64)] {
        let out = usermanage(&server, &["add", good, "--password-stdin"], Some("pw"));
        assert!(out.status.success(), "{good}");
    }
    for bad in [
        "two words",
        "a/b",
        "<b>",
        "tab\there",
        "",
        &"z".repeat(65),
        "x@y",
    ] {
        let out = usermanage(&server, &["add", bad, "--password-stdin"], Some("pw"));
        assert!(!out.status.success(), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("letters, digits"), "{err}");
    }
    // A user named otherwise before these rules keeps working.
    sql(
        &server,
        &format!(
            r#"INSERT INTO "User" (name, password) VALUES ('old name', '{}')"#,
            bitsd::auth::hash_password("pw")
        ),
    );
    let cookie = logged_in(&server, "old name", "pw").await;
    assert_eq!(admin_with(&server, &cookie).await, 200);
}
