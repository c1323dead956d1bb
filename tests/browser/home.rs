//! The homepage kept live by its script, in both languages and at phone size.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_homepage_is_live_in_a_real_browser() {
    let server = TestServer::start().await;
    let (mut browser, events, _profile) = launch().await;

    // A page from before anything was recorded, kept live from then on.
    let early = open(&browser, &server.url("/")).await;
    wait_for_websocket(&early, "the script").await;
    assert_agrees_with_the_server(&early, &server, "with nothing recorded").await;

    let mut device = server.device().await;
    device
        .send_all(&["status 0", "temperature 0 20.5", "temperature 0 21.0"])
        .await;
    // Falling, steady, and exact halves, which must round alike.
    device
        .send_all(&[
            "temperature 1 20.35",
            "temperature 1 20.25",
            "temperature 2 -0.25",
        ])
        .await;
    device.send_message("Welcome <back>").await;
    server
        .wait_for_data("the message", |d| d["message"].is_object())
        .await;
    wait_for_text(
        &early,
        "the message, live",
        "message-text",
        "Welcome <back>",
    )
    .await;
    assert_agrees_with_the_server(&early, &server, "after changes pushed one by one").await;

    // Server-rendered state, then live over the websocket.
    let page = open(&browser, &server.url("/")).await;
    wait_for_websocket(&page, "the script").await;
    assert_agrees_with_the_server(&page, &server, "on load").await;
    assert_eq!(
        text(&page, "document.getElementById('status-text').textContent").await,
        "The room is closed"
    );
    assert_eq!(
        text(&page, "document.getElementById('message-text').textContent").await,
        "Welcome <back>"
    );
    assert_eq!(text(&page, "document.title").await, "BITS · closed");

    // A status line from the device changes text, title and favicon.
    device.send("status 1").await;
    wait_for_text(&page, "the open status", "status-text", "The room is open").await;
    assert_eq!(text(&page, "document.title").await, "BITS · open");
    assert!(
        text(&page, "document.getElementById('favicon').href")
            .await
            .contains("open.svg")
    );
    assert_eq!(
        text(&page, "document.getElementById('status').className").await,
        "status open"
    );
    assert_agrees_with_the_server(&page, &server, "after a status change").await;

    // A temperature line updates the value, the trend and the chart.
    let points_before = chart_points(&page).await;
    device.send("temperature 0 23.5").await;
    wait_for_sample(&page, "the new sample", 0, "23.5 °C").await;
    assert_eq!(
        text(
            &page,
            "document.querySelector('#sensors li[data-sensor=\"0\"] .trend').textContent"
        )
        .await,
        "↑"
    );
    assert_eq!(chart_points(&page).await, points_before + 1);
    assert_agrees_with_the_server(&page, &server, "after a sample").await;

    // The colour-blind toggle is remembered across a reload.
    click(&page, "blind-toggle").await;
    wait_until(
        &page,
        "the blind palette",
        "document.body.classList.contains('blind')",
    )
    .await;
    reload_live(&page, "the reloaded page").await;
    assert!(text(&page, "String(document.body.classList.contains('blind'))").await == "true");
    assert!(
        text(&page, "document.getElementById('forecast').src")
            .await
            .contains("blind=1")
    );

    // Screenshots for review, phone and desktop.
    screenshot(&page, "home-phone.png", 390, 844, true).await;
    screenshot(&page, "home-desktop.png", 1280, 900, false).await;
    click(&page, "blind-toggle").await;

    // With websockets broken the page falls back to Server-Sent Events.
    let blocked = open(&browser, "about:blank").await;
    blocked
        .evaluate_on_new_document(
            "window.WebSocket = function () { var s = this; setTimeout(function () { s.onclose && s.onclose({}); }, 5); };",
        )
        .await
        .unwrap();
    blocked.goto(server.url("/")).await.unwrap();
    wait_until(
        &blocked,
        "the fallback",
        "document.getElementById('live').dataset.transport === 'events'",
    )
    .await;
    device.send("status 0").await;
    wait_for_text(
        &blocked,
        "the closed status over SSE",
        "status-text",
        "The room is closed",
    )
    .await;
    assert_eq!(text(&blocked, "document.title").await, "BITS · closed");

    // An installable app: its manifest parses, Chromium finds nothing that
    // keeps it from being installed, and the service worker has taken the
    // page (it keeps the homepage and /data as they pass).
    let manifest = page.execute(GetAppManifestParams::default()).await.unwrap();
    assert!(
        manifest.result.errors.is_empty(),
        "{:?}",
        manifest.result.errors
    );
    let parsed: serde_json::Value =
        serde_json::from_str(manifest.result.data.as_deref().unwrap_or("{}")).unwrap();
    assert_eq!(parsed["start_url"], "/");
    let installable = page
        .execute(GetInstallabilityErrorsParams::default())
        .await
        .unwrap();
    assert!(
        installable.result.installability_errors.is_empty(),
        "{:?}",
        installable.result.installability_errors
    );
    wait_for_worker(&page).await;
    reload_live(&page, "the page again, through the service worker").await;
    device.send("temperature 0 24.5").await;
    wait_for_sample(&page, "the last sample", 0, "24.5 °C").await;

    // In Italian the script writes what the server writes: words, dates,
    // decimal commas. (Last: the browser keeps the `lang` cookie.)
    let italian = open(&browser, &server.url("/?lang=it")).await;
    wait_for_websocket(&italian, "the Italian page's script").await;
    device.send("temperature 1 19.25").await;
    wait_for_sample(&italian, "the Italian sample", 1, "19,3 °C").await;
    assert_eq!(text(&italian, "document.documentElement.lang").await, "it");
    assert_agrees_with(&italian, &server, "/?lang=it", "in Italian").await;
    screenshot(&italian, "home-phone-it.png", 390, 844, true).await;
    screenshot(&italian, "home-desktop-it.png", 1280, 900, false).await;
    italian.close().await.unwrap();

    // Server gone: the page says it is offline.
    let _dir = server.stop().await;
    wait_until(
        &page,
        "the offline notice",
        "document.getElementById('live').classList.contains('off')",
    )
    .await;
    assert!(
        text(&page, "document.getElementById('live').textContent")
            .await
            .contains("Offline")
    );

    // Reloaded with the server gone (the phone offline), the page is the one
    // the service worker kept, showing the last state and how old it is.
    page.reload().await.unwrap();
    wait_until(
        &page,
        "the kept page with the last state",
        "document.querySelector('#sensors li[data-sensor=\"0\"] .value').textContent === '24.5 °C' \
         && document.getElementById('live').textContent.indexOf('Data from') >= 0",
    )
    .await;
    assert_eq!(
        text(&page, "document.getElementById('status-text').textContent").await,
        "The room is closed"
    );
    screenshot(&page, "home-phone-offline.png", 390, 844, true).await;

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}
