//! The homepage in headless Chromium (Debian's `chromium`, which `make test`
//! installs when missing), against a real server on port 0.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::page::{
    GetAppManifestParams, GetInstallabilityErrorsParams,
};
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Page, cdp::browser_protocol::page::CaptureScreenshotFormat};
use common::TestServer;
use futures_util::StreamExt;

fn chromium() -> PathBuf {
    let paths = [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ];
    common::installed("CHROMIUM", &paths, "chromium")
}

async fn launch() -> (Browser, tokio::task::JoinHandle<()>, tempfile::TempDir) {
    let profile = tempfile::tempdir().unwrap();
    let config = BrowserConfig::builder()
        .chrome_executable(chromium())
        .no_sandbox()
        .user_data_dir(profile.path())
        .window_size(1280, 900)
        .args([
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .build()
        .unwrap();
    let (browser, mut handler) = Browser::launch(config).await.expect("Chromium starts");
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
    (browser, events, profile)
}

/// A new tab at `url` whose workers start at once. chromiumoxide asks
/// Chromium to hold every new worker until it resumes it, and it drops the
/// odd message it cannot parse: a service worker whose notice was dropped
/// would wait, never running, for as long as the test.
async fn open(browser: &Browser, url: &str) -> Page {
    use chromiumoxide::cdp::browser_protocol::target::SetAutoAttachParams;
    let page = browser.new_page("about:blank").await.unwrap();
    let attach = SetAutoAttachParams::builder()
        .auto_attach(true)
        .flatten(true)
        .wait_for_debugger_on_start(false)
        .build()
        .unwrap();
    page.execute(attach).await.unwrap();
    page.goto(url).await.unwrap();
    page
}

/// How long the browser may take for a step: a loaded machine starts a
/// service worker in seconds. (Only a failing step waits this long.)
const BROWSER_PATIENCE: Duration = Duration::from_secs(30);

/// Evaluates `expression` (a JS expression) until it is true.
async fn wait_until(page: &Page, what: &str, expression: &str) {
    assert!(
        became_true(page, expression).await,
        "timed out waiting for {what}: {expression}"
    );
}

/// Whether `expression` became true within [`BROWSER_PATIENCE`].
async fn became_true(page: &Page, expression: &str) -> bool {
    let deadline = tokio::time::Instant::now() + BROWSER_PATIENCE;
    loop {
        let value: bool = page
            .evaluate(format!("!!({expression})"))
            .await
            .ok()
            .and_then(|v| v.into_value().ok())
            .unwrap_or(false);
        if value {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the service worker controls the page; a failure says how
/// far its registration got.
async fn wait_for_worker(page: &Page) {
    if became_true(page, "navigator.serviceWorker.controller !== null").await {
        return;
    }
    let registration = page
        .evaluate(
            "navigator.serviceWorker.getRegistration().then(function (r) {
               return r ? ['installing', 'waiting', 'active'].map(function (k) {
                 return k + ': ' + (r[k] ? r[k].state : 'none');
               }).join(', ') : 'not registered';
             })",
        )
        .await
        .ok()
        .and_then(|v| v.into_value::<String>().ok());
    panic!("timed out waiting for the service worker to control the page: {registration:?}");
}

/// Waits until the page's script is live over the websocket.
async fn wait_for_websocket(page: &Page, what: &str) {
    wait_until(
        page,
        what,
        "document.getElementById('live').dataset.transport === 'websocket'",
    )
    .await;
}

/// Reloads the page and waits until its script is live again.
async fn reload_live(page: &Page, what: &str) {
    page.reload().await.unwrap();
    wait_for_websocket(page, what).await;
}

/// Waits until the element with id `id` reads `expected`.
async fn wait_for_text(page: &Page, what: &str, id: &str, expected: &str) {
    let expression = format!("document.getElementById('{id}').textContent === '{expected}'");
    wait_until(page, what, &expression).await;
}

/// Waits until sensor `sensor`'s value on the page reads `shown`.
async fn wait_for_sample(page: &Page, what: &str, sensor: u32, shown: &str) {
    let expression = format!(
        "document.querySelector('#sensors li[data-sensor=\"{sensor}\"] .value').textContent === '{shown}'"
    );
    wait_until(page, what, &expression).await;
}

/// Clicks the element with id `id`.
async fn click(page: &Page, id: &str) {
    page.evaluate(format!("document.getElementById('{id}').click()"))
        .await
        .unwrap();
}

/// How many points the temperature chart draws.
async fn chart_points(page: &Page) -> usize {
    page.evaluate(
        "document.querySelector('#chart polyline').getAttribute('points').split(' ').length",
    )
    .await
    .unwrap()
    .into_value()
    .unwrap()
}

async fn text(page: &Page, expression: &str) -> String {
    page.evaluate(expression)
        .await
        .unwrap()
        .into_value()
        .unwrap()
}

/// The homepage's words in a document (a JS function): the title, the
/// favicon, the status's class, then, for each element the script writes to,
/// its text, title, label, alt text and whether it is hidden.
const TEXTS: &str = r##"function (doc) {
  var describe = function (el) {
    return [el.textContent, el.getAttribute("title"), el.getAttribute("aria-label"),
      el.getAttribute("alt"), el.hidden].join(" | ");
  };
  var out = [["title", doc.title]];
  out.push(["favicon", /(open|closed)\.svg/.exec(doc.getElementById("favicon").getAttribute("href"))[1]]);
  out.push(["status", doc.getElementById("status").className]);
  ["status-text", "status-since", "temperature-title", "sensors-none", "message-title",
   "message-none", "message-body", "message-text", "message-user", "message-time",
   "forecast-title", "forecast"].forEach(function (id) {
    out.push([id, describe(doc.getElementById(id))]);
  });
  doc.querySelectorAll("#sensors li").forEach(function (li) {
    var sensor = "sensor " + li.dataset.sensor;
    out.push([sensor, describe(li)]);
    [].forEach.call(li.children, function (part) {
      out.push([sensor + " " + (part.className || part.tagName), describe(part)]);
    });
  });
  return out;
}"##;

/// Checks that the page, kept live by its script, says what the server
/// renders for the same state.
async fn assert_agrees_with_the_server(page: &Page, server: &TestServer, when: &str) {
    assert_agrees_with(page, server, "/", when).await;
}

/// [`assert_agrees_with_the_server`] with the server's page at `path`.
async fn assert_agrees_with(page: &Page, server: &TestServer, path: &str, when: &str) {
    let html = serde_json::to_string(&server.text(path).await).unwrap();
    let expression = format!(
        "(function () {{ var texts = {TEXTS}; \
         var rendered = new DOMParser().parseFromString({html}, 'text/html'); \
         return JSON.stringify([texts(rendered), texts(document)]); }})()"
    );
    let both: String = page
        .evaluate(expression)
        .await
        .unwrap()
        .into_value()
        .unwrap();
    let [rendered, live]: [Vec<(String, String)>; 2] = serde_json::from_str(&both).unwrap();
    assert!(rendered.len() > 10, "{rendered:?}");
    for (shown, served) in live.iter().zip(&rendered) {
        assert_eq!(
            shown, served,
            "{when}: the script's page, then the server's"
        );
    }
    assert_eq!(live.len(), rendered.len(), "{when}: {live:?} {rendered:?}");
}

async fn screenshot(page: &Page, name: &str, width: i64, height: i64, mobile: bool) {
    page.execute(SetDeviceMetricsOverrideParams::new(
        width, height, 1.0, mobile,
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = common::root().join("target").join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let params = ScreenshotParams::builder()
        .format(CaptureScreenshotFormat::Png)
        .full_page(true)
        .build();
    page.save_screenshot(params, dir.join(name)).await.unwrap();
}

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

/// Sets the value of the input with id `id`.
async fn type_into(page: &Page, id: &str, value: &str) {
    let value = serde_json::to_string(value).unwrap();
    page.evaluate(format!("document.getElementById('{id}').value = {value}"))
        .await
        .unwrap();
}

/// Checks that nothing in the page's sections reaches past their padding
/// or widens the page, `width` pixels wide.
async fn assert_fits(page: &Page, what: &str, width: i64, mobile: bool) {
    page.execute(SetDeviceMetricsOverrideParams::new(width, 900, 1.0, mobile))
        .await
        .unwrap();
    let outside = text(
        page,
        "(function () {
           var out = [];
           if (document.documentElement.scrollWidth > window.innerWidth) {
             out.push('the page is ' + document.documentElement.scrollWidth + ' px wide');
           }
           document.querySelectorAll('main section').forEach(function (section) {
             var box = section.getBoundingClientRect();
             var right = box.right - parseFloat(getComputedStyle(section).paddingRight) + 0.5;
             section.querySelectorAll('*').forEach(function (el) {
               if (el.getBoundingClientRect().right > right) {
                 out.push(el.tagName + (el.id ? '#' + el.id : '') + ' in ' + section.id);
               }
             });
           });
           return out.join(', ');
         })()",
    )
    .await;
    assert_eq!(outside, "", "{what}: past the edge");
}

/// Clicks the first element `selector` matches.
async fn click_first(page: &Page, selector: &str) {
    let selector = serde_json::to_string(selector).unwrap();
    page.evaluate(format!("document.querySelector({selector}).click()"))
        .await
        .unwrap();
}

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
    type_into(&page, "username", "ada").await;
    type_into(&page, "password", "pw").await;
    click_first(&page, "form[action='/login'] button").await;
    wait_until(
        &page,
        "the admin page",
        "document.getElementById('devices')",
    )
    .await;

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
