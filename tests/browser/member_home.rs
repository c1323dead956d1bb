//! What the homepage tells a member (SPEC 21): no status known yet, the
//! device gone too long, kept live; a logged-in member's name and toggle.

use super::*;

/// The class of the status box.
async fn status_class(page: &Page) -> String {
    text(page, "document.getElementById('status').className").await
}

/// Screenshots `home-NAME-390.png` and `home-NAME-1280.png` of `page`.
async fn both_sizes(page: &Page, name: &str) {
    screenshot(page, &format!("home-{name}-390.png"), 390, 844, true).await;
    screenshot(page, &format!("home-{name}-1280.png"), 1280, 900, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_homepage_tells_a_member_in_a_real_browser() {
    let server = TestServer::start_with(&["--device-stale-after", "1"]).await;
    let (mut browser, events, _profile) = launch().await;

    // An empty database: no status known, in grey, claiming nothing.
    let page = open(&browser, &server.url("/?lang=en")).await;
    wait_for_websocket(&page, "the script").await;
    assert_eq!(status_class(&page).await, "status unknown");
    assert_eq!(text(&page, "document.title").await, "BITS · no status yet");
    assert_eq!(
        text(&page, "document.getElementById('live').textContent").await,
        "Live"
    );
    assert!(
        text(&page, "document.getElementById('favicon').href")
            .await
            .contains("unknown.svg")
    );
    assert_agrees_with(&page, &server, "/?lang=en", "with no status").await;
    both_sizes(&page, "unknown").await;
    let italian = open(&browser, &server.url("/?lang=it")).await;
    wait_for_websocket(&italian, "the Italian script").await;
    assert_eq!(
        text(&italian, "document.getElementById('live').textContent").await,
        "In diretta"
    );
    assert_agrees_with(&italian, &server, "/?lang=it", "with no status, in Italian").await;
    both_sizes(&italian, "unknown-it").await;

    // The device opens: live; then it leaves, and a second later the page
    // doubts the status, without a reload.
    let mut device = server.device().await;
    device.send("status 1").await;
    wait_for_text(&page, "the open status", "status-text", "The room is open").await;
    assert_eq!(status_class(&page).await, "status open");
    drop(device);
    wait_until(
        &page,
        "the offline notice",
        "!document.getElementById('device-offline').hidden",
    )
    .await;
    let notice = text(
        &page,
        "document.getElementById('device-offline').textContent",
    )
    .await;
    assert!(
        notice.starts_with("The device has been offline since ")
            && notice.ends_with("; the status may be out of date."),
        "{notice}"
    );
    assert_agrees_with(&page, &server, "/?lang=en", "with the device offline").await;
    both_sizes(&page, "device-offline").await;
    wait_until(
        &italian,
        "the Italian offline notice",
        "document.getElementById('device-offline').textContent.indexOf('Il dispositivo non è in linea') === 0",
    )
    .await;
    assert_agrees_with(&italian, &server, "/?lang=it", "offline, in Italian").await;
    both_sizes(&italian, "device-offline-it").await;
    // Back: the notice goes.
    let mut device = server.device().await;
    device.send("temperature 0 21.5").await;
    wait_until(
        &page,
        "the notice gone",
        "document.getElementById('device-offline').hidden",
    )
    .await;
    assert_agrees_with(&page, &server, "/?lang=en", "with the device back").await;
    italian.close().await.unwrap();

    // A member logs in and lands on the homepage: their name, and the
    // toggle, which follows the status live.
    common::member::add_user(&server, "ada", "pw");
    let member = open(&browser, &server.url("/login?next=/&lang=en")).await;
    type_into(&member, "username", "ada").await;
    type_into(&member, "password", "pw").await;
    click_first(&member, "form[action='/login'] button").await;
    wait_until(&member, "the homepage", "document.getElementById('toggle')").await;
    wait_for_websocket(&member, "the member's script").await;
    assert_eq!(
        text(&member, "document.getElementById('member').textContent").await,
        "Logged in as ada · Log out"
    );
    assert_eq!(
        text(
            &member,
            "document.getElementById('toggle-button').textContent"
        )
        .await,
        "Close the room"
    );
    device.send("status 0").await;
    wait_for_text(
        &member,
        "the toggle, live",
        "toggle-button",
        "Open the room",
    )
    .await;
    assert_eq!(
        text(&member, "document.getElementById('toggle-status').value").await,
        "open"
    );
    both_sizes(&member, "member").await;

    // The toggle opens the room, back on the homepage; the other pages
    // hear it live.
    click(&member, "toggle-button").await;
    wait_for_text(
        &member,
        "the room opened",
        "status-text",
        "The room is open",
    )
    .await;
    wait_for_websocket(&member, "the homepage again").await;
    assert_eq!(text(&member, "location.pathname").await, "/");
    assert_eq!(
        text(
            &member,
            "document.getElementById('toggle-button').textContent"
        )
        .await,
        "Close the room"
    );
    wait_for_text(
        &page,
        "the open status, live",
        "status-text",
        "The room is open",
    )
    .await;
    assert!(
        text(&page, "document.getElementById('status-since').textContent")
            .await
            .contains("a member, on the web")
    );
    // In Italian, for the screenshots.
    member.goto(server.url("/?lang=it")).await.unwrap();
    wait_for_websocket(&member, "the member's Italian page").await;
    assert_eq!(
        text(
            &member,
            "document.getElementById('toggle-button').textContent"
        )
        .await,
        "Chiudi la sede"
    );
    both_sizes(&member, "member-it").await;

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}
