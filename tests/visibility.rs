//! Who is seen: each member's visibility over real HTTP, the device link,
//! MAC updates and usermanage.

mod common;

use common::legacy::legacy_database;
use common::member::{
    Session, add_member as member, add_user, location, logged_in_member, usermanage,
};
use common::{AUTO_STATUS_IN_A_SECOND, TestServer};

const NAMED: &str = "nina-named";
const COUNTED: &str = "carl-counted";
const HIDDEN: &str = "hugo-hidden";

/// A server with `[spaceapi]` given by `spaceapi` and MAC updates allowed
/// once a second.
async fn server_with(spaceapi: &str, extra: &[&str]) -> TestServer {
    let mut args = vec![
        "--mac-update-password",
        "router-token",
        "--mac-update-interval",
        "1",
    ];
    args.extend_from_slice(extra);
    TestServer::start_configured(&format!("[spaceapi]\n{spaceapi}"), &args).await
}

async fn mac_update(server: &TestServer, from: &str, macs: &[String]) -> u16 {
    let macs = serde_json::json!(macs).to_string();
    common::client_from(from)
        .post(server.url("/macupdate"))
        .form(&[("password", "router-token"), ("macs", macs.as_str())])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn people(doc: &serde_json::Value) -> &serde_json::Value {
    &doc["sensors"]["people_now_present"][0]
}

/// Waits until `/spaceapi.json` counts `count` people; the document.
async fn wait_for_people(server: &TestServer, count: u64) -> serde_json::Value {
    server
        .wait_for_json("/spaceapi.json", &format!("{count} present"), |doc| {
            people(doc)["value"] == count
        })
        .await
}

#[tokio::test]
async fn counts_and_names_follow_each_members_visibility() {
    let server = server_with("show_names = true\n", &[]).await;
    let named = member(&server, NAMED, "named");
    member(&server, COUNTED, "counted");
    let hidden = member(&server, HIDDEN, "hidden");
    let carl_mac = bitsd::auth::mac_hash("aa:bb:cc:dd:ee:01").unwrap();
    let out = usermanage(&server, &["mac", "add", COUNTED, "--hash", &carl_mac], None);
    assert!(out.status.success(), "{out:?}");

    let mut device = server.device().await;
    device.send(&format!("enter {named}")).await;
    device.send(&format!("enter {hidden}")).await;
    // A hash of nobody is neither counted nor shown.
    let stranger = bitsd::auth::mac_hash("aa:bb:cc:dd:ee:99").unwrap();
    assert_eq!(
        mac_update(&server, "127.0.0.2", &[carl_mac.clone(), stranger]).await,
        200
    );
    // The keypad lines may still be on their way: the names tell when.
    let doc = server
        .wait_for_json("/spaceapi.json", "the keypad", |doc| {
            people(doc).get("names").is_some()
        })
        .await;
    assert_eq!(
        people(&doc),
        &serde_json::json!({"value": 2, "names": [NAMED]})
    );

    // A visitor sees the number and no name.
    let home = server.text("/").await;
    assert!(home.contains("People in the room: 2"), "{home}");
    for name in [NAMED, COUNTED, HIDDEN] {
        assert!(!home.contains(name), "{name} on the visitors' homepage");
    }

    // A member sees the named one's name, on the homepage and on /admin.
    let mut carl = Session::new(&server);
    assert_eq!(carl.login(COUNTED, "pw", "/admin").await.status(), 303);
    let home = carl.get("/").await;
    // It names people: no shared cache, no service worker keeps it.
    assert_eq!(home.headers()["cache-control"], "private, no-cache");
    let home = home.text().await.unwrap();
    assert!(home.contains("People in the room: 2"), "{home}");
    assert!(home.contains(&format!("<li>{NAMED}</li>")), "{home}");
    // Carl's own name only where it says who is logged in.
    assert_eq!(home.matches(COUNTED).count(), 1, "{home}");
    assert!(
        home.contains(&format!("<strong>{COUNTED}</strong>")),
        "{home}"
    );
    assert!(!home.contains(HIDDEN), "{home}");
    let admin = carl.get("/admin").await.text().await.unwrap();
    assert!(
        admin.contains("People in the room: 2 (1 not named)"),
        "{admin}"
    );
    assert_eq!(admin.matches("<li>").count(), 1, "{admin}");
    assert!(admin.contains(&format!("<li>{NAMED}</li>")), "{admin}");
    assert!(!admin.contains(HIDDEN), "{admin}");

    // A hidden member who becomes named on /admin shows at once.
    let mut hugo = Session::new(&server);
    assert_eq!(hugo.login(HIDDEN, "pw", "/admin").await.status(), 303);
    let r = hugo.submit("/admin", &[("visibility", "named")]).await;
    assert_eq!(r.status(), 303);
    let doc = server.json("/spaceapi.json").await;
    assert_eq!(
        people(&doc),
        &serde_json::json!({"value": 3, "names": [HIDDEN, NAMED]})
    );

    // Changed by usermanage, while bitsd runs: seen at the next roster change.
    let out = usermanage(
        &server,
        &["modify", COUNTED, "--visibility", "hidden"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    device.send(&format!("leave {named}")).await;
    let doc = wait_for_people(&server, 1).await;
    assert_eq!(
        people(&doc),
        &serde_json::json!({"value": 1, "names": [HIDDEN]})
    );
    let home = server.text("/").await;
    assert!(home.contains("People in the room: 1"), "{home}");
}

#[tokio::test]
async fn without_show_names_the_document_names_nobody() {
    let server = server_with("space = \"Lab\"\n", &[]).await;
    let named = member(&server, NAMED, "named");
    let counted = member(&server, COUNTED, "counted");
    let hidden = member(&server, HIDDEN, "hidden");
    let mut device = server.device().await;
    for id in [named, counted, hidden] {
        device.send(&format!("enter {id}")).await;
    }
    let doc = wait_for_people(&server, 2).await;
    assert_eq!(people(&doc), &serde_json::json!({"value": 2}));
}

#[tokio::test]
async fn a_hidden_member_alone_still_opens_and_closes_the_room() {
    let server = server_with("show_names = true\n", &AUTO_STATUS_IN_A_SECOND).await;
    let hidden = member(&server, HIDDEN, "hidden");
    let mut device = server.device().await;
    device.send(&format!("enter {hidden}")).await;
    let why = "opened for a hidden member";
    server.status_told(&mut device, "1", why).await;
    let doc = server.json("/spaceapi.json").await;
    assert_eq!(people(&doc), &serde_json::json!({"value": 0}));
    assert!(server.text("/").await.contains("People in the room: 0"));
    device.send(&format!("leave {hidden}")).await;
    let why = "closed when the hidden member leaves";
    server.status_told(&mut device, "0", why).await;
}

#[tokio::test]
async fn members_of_an_original_database_become_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_database(dir.path());
    let config = dir.path().join("bitsd.toml");
    std::fs::write(&config, "[spaceapi]\nshow_names = true\n").unwrap();
    let config = config.display().to_string();
    let server = TestServer::start_in(
        dir,
        db,
        &["--config", &config, "--mac-update-password", "router-token"],
    )
    .await;
    // alice was there before; dave comes after.
    add_user(&server, "dave", "pw");
    let list = String::from_utf8(usermanage(&server, &["list"], None).stdout).unwrap();
    assert!(list.contains("alice\tnamed\t1 MAC hash(es)"), "{list}");
    assert!(list.contains("dave\tcounted\t0 MAC hash(es)"), "{list}");
    // alice's MAC hash of the original's time puts her name in the document.
    assert_eq!(
        mac_update(&server, "127.0.0.2", &["abc123".into()]).await,
        200
    );
    let doc = wait_for_people(&server, 1).await;
    assert_eq!(
        people(&doc),
        &serde_json::json!({"value": 1, "names": ["alice"]})
    );
}

#[tokio::test]
async fn the_admin_form_sets_ones_own_visibility() {
    let server = TestServer::start().await;
    let mut s = logged_in_member(&server, "olga", "/admin").await;
    let page = s.get("/admin").await.text().await.unwrap();
    assert!(
        page.contains(r#"value="counted" checked"#),
        "new members start counted: {page}"
    );
    let listed = || {
        let out = usermanage(&server, &["list"], None);
        String::from_utf8(out.stdout).unwrap()
    };

    // Without the right token: 403, nothing changed.
    for form in [
        vec![("visibility", "named")],
        vec![("visibility", "named"), ("_xsrf", "guess")],
    ] {
        assert_eq!(s.post("/admin", &form).await.status(), 403);
    }
    assert!(listed().contains("olga\tcounted"));

    // A bad value: 400 saying why, nothing changed.
    for bad in ["everyone", "", "NAMED"] {
        let r = s.submit("/admin", &[("visibility", bad)]).await;
        assert_eq!(r.status(), 400, "{bad:?}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains("visibility must be hidden, counted or named"),
            "{text}"
        );
    }
    assert!(listed().contains("olga\tcounted"));
    assert_eq!(server.text("/status").await, "0", "no status toggled");

    // The token of the page first loaded stays good for every post after it.
    let token = s.cookie("_xsrf").unwrap();
    for visibility in ["hidden", "named"] {
        let r = s
            .post("/admin", &[("_xsrf", &token), ("visibility", visibility)])
            .await;
        assert_eq!(r.status(), 303);
        assert_eq!(location(&r), "/admin");
        assert!(listed().contains(&format!("olga\t{visibility}")));
        let page = s.get("/admin").await.text().await.unwrap();
        assert!(
            page.contains(&format!(r#"value="{visibility}" checked"#)),
            "{page}"
        );
        assert_eq!(page.matches(" checked").count(), 1, "{page}");
    }
    assert_eq!(server.text("/status").await, "0", "no status toggled");
}
