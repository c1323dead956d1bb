//! `/admin`'s devices section, driven by clicks.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_adds_devices_in_a_real_browser() {
    let server = TestServer::start().await;
    common::member::add_user(&server, "ada", "pw");
    // A device that has claimed its key and connected over TLS.
    {
        let mut db = bitsd::store::Db::open(&server.db, false).unwrap();
        let now = bitsd::clock::unix_seconds();
        let code = db.add_device("temperature-lab", now - 4000, 900);
        db.claim_device(&code.unwrap().code, now - 3600).unwrap();
    }
    rusqlite::Connection::open(&server.db)
        .unwrap()
        .execute(
            "UPDATE bitsd_device SET last_seen = strftime('%s', 'now') - 60, \
             address = '192.0.2.7', transport = 'tls'",
            [],
        )
        .unwrap();
    let (mut browser, events, _profile) = launch().await;

    let page = open(&browser, &server.url("/login?next=/admin")).await;
    log_in_to_admin(&page, "ada", "pw").await;

    // Added through the form: the answer shows the code once.
    type_into(&page, "device-name", "door").await;
    click_first(&page, "form.add-device button").await;
    wait_until(
        &page,
        "the claim code",
        "document.getElementById('claim-code')",
    )
    .await;
    let code = text(&page, "document.getElementById('claim-code').textContent").await;
    assert_eq!(code.len(), 19, "{code}");
    assert_eq!(
        text(
            &page,
            "String(document.querySelectorAll('.device-list li').length)"
        )
        .await,
        "2"
    );
    screenshot(&page, "admin-devices-phone.png", 390, 844, true).await;
    assert_fits(&page, "the phone", 390, true).await;
    screenshot(&page, "admin-devices-desktop.png", 1280, 900, false).await;
    assert_fits(&page, "the desktop", 1280, false).await;

    // In Italian, a new code for the same device.
    page.goto(server.url("/admin?lang=it")).await.unwrap();
    wait_until(
        &page,
        "the Italian admin page",
        "document.getElementById('devices')",
    )
    .await;
    click_first(&page, "#device-door form[action$='/code'] button").await;
    wait_until(
        &page,
        "the new claim code",
        &format!(
            "document.getElementById('claim-code') \
             && document.getElementById('claim-code').textContent !== '{code}'"
        ),
    )
    .await;
    assert_eq!(text(&page, "document.documentElement.lang").await, "it");
    assert_eq!(
        text(
            &page,
            "document.getElementById('devices-title').textContent"
        )
        .await,
        "Dispositivi"
    );
    screenshot(&page, "admin-devices-phone-it.png", 390, 844, true).await;
    assert_fits(&page, "the Italian phone", 390, true).await;
    screenshot(&page, "admin-devices-desktop-it.png", 1280, 900, false).await;
    assert_fits(&page, "the Italian desktop", 1280, false).await;

    // A name taken: the page again, the reason by the form, whose field
    // asks for the focus (whether a headless window grants it depends on
    // the window, not on the page).
    type_into(&page, "device-name", "DOOR").await;
    click_first(&page, "form.add-device button").await;
    wait_until(
        &page,
        "the refusal",
        "document.querySelector('#devices .error')",
    )
    .await;
    assert_eq!(
        text(
            &page,
            "String(document.getElementById('device-name').autofocus)"
        )
        .await,
        "true"
    );
    assert_eq!(
        text(&page, "document.getElementById('device-name').value").await,
        "DOOR"
    );
    screenshot(&page, "admin-devices-refused-phone-it.png", 390, 844, true).await;
    assert_fits(&page, "the refusal", 390, true).await;

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}
