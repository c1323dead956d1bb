//! The pages in headless Chromium (Debian's `chromium`, which `make test`
//! installs when missing), against a real server on port 0: the Chromium
//! harness here, the pages' tests in the modules (`home`, the homepage live;
//! `member_home`, what the homepage tells a member; `admin`, the devices
//! section of `/admin`; `phone`, every page on a phone's screen and a
//! desktop's; `sensors`, the sensors beyond temperature on the homepage;
//! `states`, the three states on the homepage, `/admin` and `/log`;
//! `notify`, the "Notify me" control and the service worker's
//! notifications).

mod admin;
#[path = "../common/mod.rs"]
mod common;
mod home;
mod member_home;
mod notify;
mod phone;
mod sensors;
mod states;

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

pub(crate) fn chromium() -> PathBuf {
    let paths = [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ];
    common::installed("CHROMIUM", &paths, "chromium")
}

pub(crate) async fn launch() -> (Browser, tokio::task::JoinHandle<()>, tempfile::TempDir) {
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
pub(crate) async fn open(browser: &Browser, url: &str) -> Page {
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
pub(crate) const BROWSER_PATIENCE: Duration = Duration::from_secs(30);

/// Evaluates `expression` (a JS expression) until it is true.
pub(crate) async fn wait_until(page: &Page, what: &str, expression: &str) {
    assert!(
        became_true(page, expression).await,
        "timed out waiting for {what}: {expression}"
    );
}

/// Evaluates `promise` (a JS expression giving a promise) until what it
/// gives is true.
pub(crate) async fn wait_until_resolved(page: &Page, what: &str, promise: &str) {
    let expression = format!("({promise}).then(function (v) {{ return !!v; }})");
    assert!(
        evaluates_true(page, &expression).await,
        "timed out waiting for {what}: {promise}"
    );
}

/// Whether `expression` became true within [`BROWSER_PATIENCE`].
pub(crate) async fn became_true(page: &Page, expression: &str) -> bool {
    evaluates_true(page, &format!("!!({expression})")).await
}

/// Whether `js`, evaluated again and again, gave `true` within
/// [`BROWSER_PATIENCE`].
async fn evaluates_true(page: &Page, js: &str) -> bool {
    let deadline = tokio::time::Instant::now() + BROWSER_PATIENCE;
    loop {
        let value: bool = page
            .evaluate(js)
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
pub(crate) async fn wait_for_worker(page: &Page) {
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
pub(crate) async fn wait_for_websocket(page: &Page, what: &str) {
    wait_until(
        page,
        what,
        "document.getElementById('live').dataset.transport === 'websocket'",
    )
    .await;
}

/// Reloads the page and waits until its script is live again.
pub(crate) async fn reload_live(page: &Page, what: &str) {
    page.reload().await.unwrap();
    wait_for_websocket(page, what).await;
}

/// Waits until the element with id `id` reads `expected`.
pub(crate) async fn wait_for_text(page: &Page, what: &str, id: &str, expected: &str) {
    let expression = format!("document.getElementById('{id}').textContent === '{expected}'");
    wait_until(page, what, &expression).await;
}

/// Waits until sensor `sensor`'s value on the page reads `shown`.
pub(crate) async fn wait_for_sample(page: &Page, what: &str, sensor: u32, shown: &str) {
    let expression = format!(
        "document.querySelector('#sensors li[data-sensor=\"{sensor}\"] .value').textContent === '{shown}'"
    );
    wait_until(page, what, &expression).await;
}

/// Clicks the element with id `id`.
pub(crate) async fn click(page: &Page, id: &str) {
    page.evaluate(format!("document.getElementById('{id}').click()"))
        .await
        .unwrap();
}

/// How many points the temperature chart draws.
pub(crate) async fn chart_points(page: &Page) -> usize {
    page.evaluate(
        "document.querySelector('#chart polyline').getAttribute('points').split(' ').length",
    )
    .await
    .unwrap()
    .into_value()
    .unwrap()
}

pub(crate) async fn text(page: &Page, expression: &str) -> String {
    page.evaluate(expression)
        .await
        .unwrap()
        .into_value()
        .unwrap()
}

/// The homepage's words in a document (a JS function): the title, the
/// favicon, the status's class, then, for each element the script writes to,
/// its text, title, label, alt text and whether it is hidden.
pub(crate) const TEXTS: &str = r##"function (doc) {
  var describe = function (el) {
    return [el.textContent, el.getAttribute("title"), el.getAttribute("aria-label"),
      el.getAttribute("alt"), el.hidden].join(" | ");
  };
  var out = [["title", doc.title]];
  out.push(["favicon", /(open|members|closed|unknown)\.svg/.exec(doc.getElementById("favicon").getAttribute("href"))[1]]);
  out.push(["status", doc.getElementById("status").className]);
  ["status-text", "status-since", "status-until", "device-offline", "temperature-title", "sensors-none", "message-title",
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
  out.push(["readings-section", String(doc.getElementById("readings-section").hidden)]);
  out.push(["readings-title", describe(doc.getElementById("readings-title"))]);
  doc.querySelectorAll("#readings li").forEach(function (li) {
    var reading = li.dataset.kind + " " + li.dataset.sensor;
    out.push([reading, describe(li)]);
    [].forEach.call(li.children, function (part) {
      out.push([reading + " " + (part.className || part.tagName), describe(part)]);
    });
  });
  return out;
}"##;

/// Checks that the page, kept live by its script, says what the server
/// renders for the same state.
pub(crate) async fn assert_agrees_with_the_server(page: &Page, server: &TestServer, when: &str) {
    assert_agrees_with(page, server, "/", when).await;
}

/// [`assert_agrees_with_the_server`] with the server's page at `path`.
pub(crate) async fn assert_agrees_with(page: &Page, server: &TestServer, path: &str, when: &str) {
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

pub(crate) async fn screenshot(page: &Page, name: &str, width: i64, height: i64, mobile: bool) {
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

/// Sets the value of the input with id `id`.
pub(crate) async fn type_into(page: &Page, id: &str, value: &str) {
    let value = serde_json::to_string(value).unwrap();
    page.evaluate(format!("document.getElementById('{id}').value = {value}"))
        .await
        .unwrap();
}

/// Checks that nothing in the page's sections reaches past their padding,
/// that no element of the page (the header's included) reaches past the
/// window's edges, and that nothing widens the page, `width` pixels wide.
pub(crate) async fn assert_fits(page: &Page, what: &str, width: i64, mobile: bool) {
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
           var edge = document.documentElement.clientWidth + 0.5;
           document.querySelectorAll('body *').forEach(function (el) {
             var box = el.getBoundingClientRect();
             if (box.width === 0 && box.height === 0) return;
             if (box.right > edge || box.left < -0.5) {
               out.push(el.tagName + (el.id ? '#' + el.id : '') + (el.className && el.className.baseVal === undefined ? '.' + el.className : '') +
                 ' at ' + Math.round(box.left) + '..' + Math.round(box.right));
             }
           });
           document.querySelectorAll('main section').forEach(function (section) {
             // A hidden section takes no room.
             if (section.getClientRects().length === 0) return;
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

/// Logs `user` in through the login form the page shows (one asked with
/// `next=/admin`) and waits for `/admin`.
pub(crate) async fn log_in_to_admin(page: &Page, user: &str, password: &str) {
    type_into(page, "username", user).await;
    type_into(page, "password", password).await;
    click_first(page, "form[action='/login'] button").await;
    wait_until(page, "the admin page", "document.getElementById('devices')").await;
}

/// Clicks the first element `selector` matches.
pub(crate) async fn click_first(page: &Page, selector: &str) {
    let selector = serde_json::to_string(selector).unwrap();
    page.evaluate(format!("document.querySelector({selector}).click()"))
        .await
        .unwrap();
}
