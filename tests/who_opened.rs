//! Who opened (SPEC 19): a status set on `/admin` or by the automation
//! after a keypad `enter` records the member; everyone sees the name only
//! when the member is `named` and the space has `show_names`, members see
//! it on `/admin` when the member is `named`.

mod common;

use common::member::{Session, add_member as member};
use common::{AUTO_STATUS_IN_A_SECOND, TestServer, assert_contains};

/// A server whose `[spaceapi]` table holds `spaceapi`.
async fn server_with(spaceapi: &str, extra: &[&str]) -> TestServer {
    let text = format!("[spaceapi]\nspace = \"Lab\"\n{spaceapi}");
    TestServer::start_configured(&text, extra).await
}

async fn logged_in<'a>(server: &'a TestServer, name: &str) -> Session<'a> {
    let mut session = Session::new(server);
    assert_eq!(session.login(name, "pw", "/admin").await.status(), 303);
    session
}

/// Sets the status to `state` from `/admin`, and waits for `/data` to say so.
async fn set_state(server: &TestServer, session: &mut Session<'_>, state: &str) {
    let r = session.submit("/admin", &[("status", state)]).await;
    assert_eq!(r.status(), 303);
    server
        .wait_for_data(state, |d| d["status"]["state"] == state)
        .await;
}

#[tokio::test]
async fn a_named_member_who_opens_is_named_and_others_are_not() {
    let server = server_with("show_names = true\n", &[]).await;
    member(&server, "ada", "named");
    member(&server, "carl", "counted");
    let mut ada = logged_in(&server, "ada").await;
    let mut carl = logged_in(&server, "carl").await;

    // A counted member opens: nobody sees who, not even on /admin.
    set_state(&server, &mut carl, "open").await;
    let data = server.json("/data").await;
    assert!(data["status"].get("person").is_none(), "{data}");
    let doc = server.json("/spaceapi.json").await;
    assert!(doc["state"].get("trigger_person").is_none(), "{doc}");
    let page = ada.get("/admin").await.text().await.unwrap();
    assert!(!page.contains("status-set-by"), "{page}");

    // A named one: in /data, the log, the SpaceAPI and on /admin.
    set_state(&server, &mut ada, "members").await;
    let data = server.json("/data").await;
    assert_eq!(data["status"]["person"], "ada", "{data}");
    assert_eq!(data["status"]["modifiedby"], "web");
    let log = server.json("/log?format=json").await;
    assert_eq!(log["log"][0]["person"], "ada", "{log}");
    assert!(log["log"][1].get("person").is_none(), "{log}");
    let doc = server.json("/spaceapi.json").await;
    assert_eq!(doc["state"]["trigger_person"], "ada", "{doc}");
    let page = carl.get("/admin").await.text().await.unwrap();
    assert_contains(
        &page,
        &["<p id=\"status-set-by\">Set by <strong>ada</strong></p>"],
    );
    let page = carl.get("/admin?lang=it").await.text().await.unwrap();
    assert_contains(
        &page,
        &[
            "Impostato da <strong>ada</strong>",
            "<p>dalle <time datetime=",
        ],
    );

    // Ada hides: her name goes at once, everywhere.
    let r = ada.submit("/admin", &[("visibility", "counted")]).await;
    assert_eq!(r.status(), 303);
    server
        .wait_for_data("ada unnamed", |d| d["status"].get("person").is_none())
        .await;
    let doc = server.json("/spaceapi.json").await;
    assert!(doc["state"].get("trigger_person").is_none(), "{doc}");
    let page = carl.get("/admin").await.text().await.unwrap();
    assert!(!page.contains("status-set-by"), "{page}");
    let log = server.json("/log?format=json").await;
    assert!(log["log"][0].get("person").is_none(), "{log}");
}

#[tokio::test]
async fn without_show_names_only_members_see_who() {
    let server = server_with("", &[]).await;
    member(&server, "ada", "named");
    let mut ada = logged_in(&server, "ada").await;
    set_state(&server, &mut ada, "open").await;
    let data = server.json("/data").await;
    assert!(data["status"].get("person").is_none(), "{data}");
    let doc = server.json("/spaceapi.json").await;
    assert!(doc["state"].get("trigger_person").is_none(), "{doc}");
    let page = ada.get("/admin").await.text().await.unwrap();
    assert_contains(&page, &["Set by <strong>ada</strong>"]);
}

#[tokio::test]
async fn the_first_one_in_by_keypad_opened_the_room() {
    let server = server_with("show_names = true\n", &AUTO_STATUS_IN_A_SECOND).await;
    let ada = member(&server, "ada", "named");
    let bob = member(&server, "bob", "named");
    let mut device = server.device().await;
    device.send(&format!("enter {bob}")).await;
    device.send(&format!("enter {ada}")).await;
    let data = server
        .wait_for_data("opened by the automation", |d| {
            d["status"]["state"] == "open"
        })
        .await;
    assert_eq!(data["status"]["person"], "bob", "{data}");
    assert_eq!(data["status"]["modifiedby"], "BITS");
    // Closing when the room empties is nobody's doing.
    device
        .send_all(&[&format!("leave {bob}"), &format!("leave {ada}")])
        .await;
    let data = server
        .wait_for_data("closed by the automation", |d| {
            d["status"]["state"] == "closed"
        })
        .await;
    assert!(data["status"].get("person").is_none(), "{data}");
}
