//! The homepage's sensors beyond temperature: hidden until a first sample,
//! then each kind with its unit, in both languages, live as the server
//! renders them; screenshots on a phone's screen and a desktop's.

use super::*;

/// The value shown for the sensor `kind` `id`.
fn value_of(kind: &str, id: u32) -> String {
    format!(
        "document.querySelector('#readings li[data-kind=\"{kind}\"][data-sensor=\"{id}\"] .value').textContent"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_is_shown_with_its_unit_live_and_in_both_languages() {
    let server = TestServer::start_with(&["--sensor-names", "0=Lab,2=Front door"]).await;
    let (mut browser, events, _profile) = launch().await;

    let page = open(&browser, &server.url("/?lang=en")).await;
    wait_for_websocket(&page, "the script").await;
    assert_eq!(
        text(
            &page,
            "String(document.getElementById('readings-section').hidden)"
        )
        .await,
        "true",
        "no section before a first sample"
    );
    assert_agrees_with(&page, &server, "/?lang=en", "with no sensor").await;

    let mut device = server.device().await;
    device
        .send_all(&[
            "temperature 0 21.5",
            "sensor humidity 0 45.5",
            "sensor carbondioxide 1 812",
            "sensor power_consumption 0 1250.4",
            "sensor barometer 0 1013.25",
            "sensor door_locked 2 1",
        ])
        .await;
    wait_until(
        &page,
        "every reading, live",
        "document.querySelectorAll('#readings li').length === 5",
    )
    .await;
    assert_eq!(
        text(
            &page,
            "String(document.getElementById('readings-section').hidden)"
        )
        .await,
        "false"
    );
    let kinds = text(
        &page,
        "[].map.call(document.querySelectorAll('#readings li'), function (li) { return li.dataset.kind; }).join(' ')",
    )
    .await;
    assert_eq!(
        kinds,
        "humidity carbondioxide power_consumption barometer door_locked"
    );
    assert_eq!(text(&page, &value_of("humidity", 0)).await, "46 %");
    assert_eq!(text(&page, &value_of("carbondioxide", 1)).await, "812 ppm");
    assert_eq!(
        text(&page, &value_of("power_consumption", 0)).await,
        "1250 W"
    );
    assert_eq!(text(&page, &value_of("barometer", 0)).await, "1013 hPa");
    assert_eq!(text(&page, &value_of("door_locked", 2)).await, "Locked");
    assert_eq!(
        text(
            &page,
            "document.querySelector('#readings li[data-kind=\"door_locked\"] .label').textContent"
        )
        .await,
        "Door lock · Front door"
    );
    assert_eq!(
        text(
            &page,
            "document.querySelector('#readings li[data-kind=\"carbondioxide\"] .label').textContent"
        )
        .await,
        "CO₂ · Sensor 1"
    );
    assert_agrees_with(&page, &server, "/?lang=en", "after samples pushed live").await;

    // A newer sample replaces its sensor's; another lock joins it.
    device
        .send_all(&["sensor door_locked 2 0", "sensor door_locked 3 1"])
        .await;
    wait_until(
        &page,
        "the second lock",
        "document.querySelectorAll('#readings li').length === 6",
    )
    .await;
    assert_eq!(text(&page, &value_of("door_locked", 2)).await, "Unlocked");
    assert_agrees_with(&page, &server, "/?lang=en", "after a lock opened").await;
    screenshot(&page, "sensors-en-1280.png", 1280, 900, false).await;
    assert_fits(&page, "sensors in English at 390 px", 390, true).await;
    screenshot(&page, "sensors-en-390.png", 390, 844, true).await;

    // Italian: the server's page, then the script's, agree.
    let page = open(&browser, &server.url("/?lang=it")).await;
    wait_for_websocket(&page, "the Italian script").await;
    assert_agrees_with(&page, &server, "/?lang=it", "in Italian").await;
    assert_eq!(
        text(&page, &value_of("door_locked", 3)).await,
        "Chiusa a chiave"
    );
    assert_eq!(text(&page, &value_of("door_locked", 2)).await, "Aperta");
    device.send("sensor humidity 0 52").await;
    wait_until(
        &page,
        "the new humidity, live",
        &format!("{} === '52 %'", value_of("humidity", 0)),
    )
    .await;
    assert_eq!(
        text(
            &page,
            "document.querySelector('#readings li[data-kind=\"humidity\"] .label').textContent"
        )
        .await,
        "Umidità · Lab"
    );
    assert_agrees_with(&page, &server, "/?lang=it", "in Italian, live").await;
    screenshot(&page, "sensors-it-1280.png", 1280, 900, false).await;
    assert_fits(&page, "sensors in Italian at 390 px", 390, true).await;
    screenshot(&page, "sensors-it-390.png", 390, 844, true).await;

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}
