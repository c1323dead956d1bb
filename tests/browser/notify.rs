//! The "Notify me" control and the service worker's notifications (SPEC
//! 20) in headless Chromium: the control in both languages on a phone's
//! screen and a desktop's; push messages delivered through the DevTools
//! protocol shown as notifications, the newest of a tag replacing the
//! older, and a click on one bringing up its page; subscribing through
//! Chromium's own push service (out of reach without network) and through
//! a stand-in push manager, checked against what bitsd stored; a
//! subscription the browser replaces, handed to bitsd by the service
//! worker, or by the page next opened, with the old one's choice.

use super::*;
use bitsd::words::{self, HomeWords, Lang};
use chromiumoxide::cdp::browser_protocol::background_service::{
    EventBackgroundServiceEventReceived, ServiceName, SetRecordingParams, StartObservingParams,
};
use chromiumoxide::cdp::browser_protocol::browser::{
    PermissionDescriptor, PermissionSetting, SetPermissionParams,
};
use chromiumoxide::cdp::browser_protocol::emulation::{
    EventVirtualTimeBudgetExpired, SetVirtualTimePolicyParams, VirtualTimePolicy,
};
use chromiumoxide::cdp::browser_protocol::service_worker::{
    DeliverPushMessageParams, EnableParams, EventWorkerRegistrationUpdated, RegistrationId,
};
use chromiumoxide::listeners::EventStream;
use serde_json::json;

/// How long the page waits for the browser's push service
/// (`PUSH_PATIENCE` in `assets/notify.js`).
const PUSH_PATIENCE_MS: f64 = 20_000.0;

/// The homepage's words in `lang`.
fn home(lang: Lang) -> &'static HomeWords {
    &words::of(lang).home
}

/// The server's origin, as the browser names it.
fn origin(server: &TestServer) -> String {
    server.url("")
}

/// Lets (or forbids) the server's pages to show notifications.
async fn allow_notifications(browser: &Browser, server: &TestServer, setting: PermissionSetting) {
    let params = SetPermissionParams::builder()
        .permission(PermissionDescriptor::new("notifications"))
        .setting(setting)
        .origin(origin(server))
        .build()
        .unwrap();
    browser.execute(params).await.unwrap();
}

/// Waits until the control is shown, done with what it was doing, this
/// browser `subscribed` (`yes` or `no`).
async fn wait_for_control(page: &Page, what: &str, subscribed: &str) {
    let expression = format!(
        "!document.getElementById('notify').hidden \
         && document.getElementById('notify').getAttribute('aria-busy') !== 'true' \
         && document.getElementById('notify').dataset.subscribed === '{subscribed}'"
    );
    wait_until(page, what, &expression).await;
}

/// Waits until the control says `words` went wrong.
async fn wait_for_problem(page: &Page, what: &str, words: &str) {
    let words = serde_json::to_string(words).unwrap();
    let expression = format!(
        "!document.getElementById('notify-error').hidden \
         && document.getElementById('notify-error').textContent === {words} \
         && document.getElementById('notify').getAttribute('aria-busy') !== 'true'"
    );
    wait_until(page, what, &expression).await;
}

/// The text of the element with id `id`.
async fn text_of(page: &Page, id: &str) -> String {
    text(
        page,
        &format!("document.getElementById('{id}').textContent"),
    )
    .await
}

/// Whether the element with id `id` is hidden.
async fn hidden(page: &Page, id: &str) -> bool {
    page.evaluate(format!("document.getElementById('{id}').hidden"))
        .await
        .unwrap()
        .into_value()
        .unwrap()
}

/// Ticks (or unticks) the tick boxes of the two topics.
async fn tick(page: &Page, open: bool, message: bool) {
    page.evaluate(format!(
        "document.getElementById('notify-open').checked = {open}; \
         document.getElementById('notify-message').checked = {message};"
    ))
    .await
    .unwrap();
}

/// Runs the page's clock `millis` ahead, as fast as the page goes, and
/// waits until it has (the DevTools protocol's virtual time; the page's
/// timers fire on it). The clock then stays paused, and a promise the test
/// awaits in the page may never settle: read the page with plain
/// expressions after it.
async fn run_clock_ahead(page: &Page, millis: f64) {
    let mut expired = page
        .event_listener::<EventVirtualTimeBudgetExpired>()
        .await
        .unwrap();
    let ahead = SetVirtualTimePolicyParams::builder()
        .policy(VirtualTimePolicy::Advance)
        .budget(millis)
        .build()
        .unwrap();
    page.execute(ahead).await.unwrap();
    tokio::time::timeout(BROWSER_PATIENCE, expired.next())
        .await
        .expect("the page's clock run ahead")
        .expect("the budget's end");
}

/// The subscriptions bitsd keeps: (endpoint, topics, lang).
fn stored(server: &TestServer) -> Vec<(String, String, String)> {
    common::sqlite::push_subscriptions(&server.db)
}

/// How many subscriptions bitsd keeps.
fn stored_count(server: &TestServer) -> i64 {
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    conn.query_row("SELECT COUNT(*) FROM bitsd_push_subscription", [], |r| {
        r.get(0)
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_fits_a_phone_and_a_desktop_in_both_languages() {
    let server = TestServer::start().await;
    let mut device = server.device().await;
    device
        .send_all(&["status 1", "temperature 0 21.5", "temperature 1 19.25"])
        .await;
    device.send_message("Pizza at eight").await;
    server
        .wait_for_data("the message", |d| d["message"].is_object())
        .await;
    let (mut browser, events, _profile) = launch().await;
    let page = open(&browser, "about:blank").await;
    for lang in Lang::ALL {
        let words = home(lang);
        let code = lang.code();
        page.execute(SetDeviceMetricsOverrideParams::new(390, 844, 1.0, true))
            .await
            .unwrap();
        page.goto(server.url(&format!("/?lang={code}")))
            .await
            .unwrap();
        wait_for_control(&page, &format!("the control in {code}"), "no").await;
        assert_eq!(text_of(&page, "notify-title").await, words.notify_title);
        assert_eq!(text_of(&page, "notify-state").await, words.notify_off);
        assert_eq!(text_of(&page, "notify-button").await, words.notify_button);
        let labels = text(
            &page,
            "[].map.call(document.querySelectorAll('#notify-form label'), \
             function (l) { return l.textContent.trim(); }).join(' | ')",
        )
        .await;
        assert_eq!(
            labels,
            format!("{} | {}", words.notify_open, words.notify_message)
        );
        assert!(hidden(&page, "notify-stop").await && hidden(&page, "notify-error").await);

        for width in [390, 320] {
            assert_fits(
                &page,
                &format!("the control in {code} at {width} px"),
                width,
                true,
            )
            .await;
        }
        screenshot(&page, &format!("notify-{code}-390.png"), 390, 844, true).await;
        assert_fits(
            &page,
            &format!("the control in {code} on a desktop"),
            1280,
            false,
        )
        .await;
        screenshot(&page, &format!("notify-{code}-1280.png"), 1280, 900, false).await;

        // Nothing ticked: said in words, nothing asked of the browser.
        tick(&page, false, false).await;
        click(&page, "notify-button").await;
        wait_for_problem(&page, "nothing ticked", words.notify_none_chosen).await;
        assert_fits(
            &page,
            &format!("the problem in {code} at 320 px"),
            320,
            true,
        )
        .await;
        screenshot(
            &page,
            &format!("notify-{code}-390-problem.png"),
            390,
            844,
            true,
        )
        .await;
    }
    assert_eq!(stored_count(&server), 0);

    // An iPhone's Safari, which has no push manager outside a page added to
    // the home screen: the control says to add it first; on the home screen
    // of an iPhone without push (before iOS 16.4), that it cannot.
    for (standalone, words) in [
        (false, home(Lang::En).notify_home_screen),
        (true, home(Lang::En).notify_unsupported),
    ] {
        let iphone = open(&browser, "about:blank").await;
        iphone.set_user_agent(IPHONE).await.unwrap();
        iphone
            .evaluate_on_new_document(format!(
                "delete window.PushManager; \
                 Object.defineProperty(navigator, 'standalone', {{ value: {standalone} }});"
            ))
            .await
            .unwrap();
        iphone.goto(server.url("/?lang=en")).await.unwrap();
        wait_for_control(&iphone, "the control on an iPhone", "unsupported").await;
        assert_eq!(text_of(&iphone, "notify-state").await, words);
        assert!(hidden(&iphone, "notify-form").await);
        if !standalone {
            assert_fits(&iphone, "the iPhone's advice at 320 px", 320, true).await;
            screenshot(&iphone, "notify-en-390-iphone.png", 390, 844, true).await;
        }
        iphone.close().await.unwrap();
    }

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}

/// Safari on an iPhone, as it names itself.
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) \
    AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

/// The id of the service worker's registration for `server`'s pages, from
/// the DevTools protocol's `ServiceWorker` domain.
async fn registration_id(page: &Page, server: &TestServer) -> RegistrationId {
    let mut updates = page
        .event_listener::<EventWorkerRegistrationUpdated>()
        .await
        .unwrap();
    page.execute(EnableParams::default()).await.unwrap();
    let scope = server.url("/");
    let found = tokio::time::timeout(BROWSER_PATIENCE, async {
        while let Some(event) = updates.next().await {
            let registration = event
                .registrations
                .iter()
                .find(|r| r.scope_url == scope && !r.is_deleted);
            if let Some(r) = registration {
                return Some(r.registration_id.clone());
            }
        }
        None
    })
    .await;
    found
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no service worker registration for {scope}"))
}

/// Push messages delivered to the service worker through the DevTools
/// protocol, each awaited until its `push` event is done, as DevTools'
/// own record of push messages tells.
struct Pusher {
    registration: RegistrationId,
    origin: String,
    done: EventStream<EventBackgroundServiceEventReceived>,
}

impl Pusher {
    async fn new(page: &Page, server: &TestServer) -> Pusher {
        let done = page
            .event_listener::<EventBackgroundServiceEventReceived>()
            .await
            .unwrap();
        page.execute(StartObservingParams::new(ServiceName::PushMessaging))
            .await
            .unwrap();
        page.execute(SetRecordingParams::new(true, ServiceName::PushMessaging))
            .await
            .unwrap();
        Pusher {
            registration: registration_id(page, server).await,
            origin: origin(server),
            done,
        }
    }

    /// Delivers `data` and waits until the worker has handled it (and so
    /// shown its notification). Chromium forgets a notification being
    /// shown while a page reads the notifications: none are read meanwhile.
    async fn deliver(&mut self, page: &Page, data: &str) {
        let params =
            DeliverPushMessageParams::new(self.origin.clone(), self.registration.clone(), data);
        page.execute(params).await.unwrap();
        let done = tokio::time::timeout(BROWSER_PATIENCE, async {
            while let Some(event) = self.done.next().await {
                let event = &event.background_service_event;
                if event.event_name == "Push event completed" {
                    return Some(event.event_metadata.clone());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the push message {data} never handled"));
        let status: Vec<String> = done
            .iter()
            .map(|m| format!("{}={}", m.key, m.value))
            .collect();
        assert_eq!(status, ["Status=Success"], "the push message {data}");
    }
}

/// The notifications the service worker shows, by tag, as JSON of
/// `[title, body, tag, icon, url, timestamp]`; a promise.
const SHOWN: &str = "navigator.serviceWorker.ready \
    .then(function (r) { return r.getNotifications(); }) \
    .then(function (list) { \
      return JSON.stringify(list.map(function (n) { \
        return [n.title, n.body, n.tag, n.icon, n.data && n.data.url, n.timestamp]; \
      }).sort(function (a, b) { return a[2] < b[2] ? -1 : 1; })); \
    })";

/// Waits until the notifications shown are `expected` (title, body, tag),
/// by tag.
async fn wait_for_notifications(page: &Page, what: &str, expected: &[(&str, &str, &str)]) {
    let expected = serde_json::to_string(expected).unwrap();
    let expression = format!(
        "({SHOWN}).then(function (shown) {{ \
           return JSON.stringify(JSON.parse(shown).map(function (n) {{ return n.slice(0, 3); }})) \
             === JSON.stringify({expected}); \
         }})"
    );
    wait_until_resolved(page, what, &expression).await;
}

/// The homepage, allowed to notify, with its service worker activated,
/// and a pusher to it.
async fn homepage_taking_pushes(browser: &Browser, server: &TestServer) -> (Page, Pusher) {
    allow_notifications(browser, server, PermissionSetting::Granted).await;
    let page = open(browser, &server.url("/")).await;
    wait_for_worker(&page).await;
    // The worker takes the page while it activates; push messages are
    // for an activated worker.
    wait_until(
        &page,
        "the worker activated",
        "navigator.serviceWorker.controller.state === 'activated'",
    )
    .await;
    let pusher = Pusher::new(&page, server).await;
    (page, pusher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_messages_show_as_notifications_the_newest_of_a_tag_only() {
    let server = TestServer::start().await;
    let (mut browser, events, _profile) = launch().await;
    let (page, mut pusher) = homepage_taking_pushes(&browser, &server).await;

    let opened_at: i64 = 1_796_000_000_000;
    let open = json!({"title": "BITS is open", "body": "since 18:02", "url": "/",
                      "tag": "status", "timestamp": opened_at});
    pusher.deliver(&page, &open.to_string()).await;
    wait_for_notifications(
        &page,
        "the opening",
        &[("BITS is open", "since 18:02", "status")],
    )
    .await;
    let shown: serde_json::Value = serde_json::from_str(&text(&page, SHOWN).await).unwrap();
    let icon = server.url("/static/icon-192.png");
    assert_eq!(
        shown,
        json!([[
            "BITS is open",
            "since 18:02",
            "status",
            icon,
            "/",
            opened_at
        ]])
    );

    // A newer status replaces it; a message stands beside it.
    let closed = json!({"title": "BITS is closed", "body": "since 23:40", "url": "/",
                        "tag": "status", "timestamp": opened_at + 1000});
    pusher.deliver(&page, &closed.to_string()).await;
    let message = json!({"title": "Message from alice", "body": "pizza at eight", "url": "/",
                         "tag": "message", "timestamp": opened_at + 2000});
    pusher.deliver(&page, &message.to_string()).await;
    wait_for_notifications(
        &page,
        "the newer status and the message",
        &[
            ("Message from alice", "pizza at eight", "message"),
            ("BITS is closed", "since 23:40", "status"),
        ],
    )
    .await;

    // Not JSON: shown anyway, under the space's name.
    pusher.deliver(&page, "the room is open").await;
    wait_for_notifications(
        &page,
        "the message that is not JSON",
        &[
            ("BITS", "the room is open", "bitsd"),
            ("Message from alice", "pizza at eight", "message"),
            ("BITS is closed", "since 23:40", "status"),
        ],
    )
    .await;

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}

/// Clicks the notification of `tag` in the service worker: a
/// `notificationclick` event of the notification shown, made by a script
/// (headless Chromium has no notification to click), with a `waitUntil`
/// of its own, as a script's event refuses the real one. The worker's
/// `focus` and `openWindow`, which only a real click may use, record what
/// they were asked instead. What they were asked: `[focused, opened]`.
async fn click_notification(worker: &mut WorkerConsole, tag: &str) -> serde_json::Value {
    let click = format!(
        "(function () {{
           var asked = {{ focused: [], opened: [] }};
           WindowClient.prototype.focus = function () {{
             asked.focused.push(this.url);
             return Promise.resolve(this);
           }};
           self.clients.openWindow = function (url) {{
             asked.opened.push(url);
             return Promise.resolve(null);
           }};
           return self.registration.getNotifications({{ tag: {tag} }}).then(function (list) {{
             if (list.length !== 1) throw new Error(list.length + ' notifications of the tag');
             var waits = [];
             var event = new NotificationEvent('notificationclick', {{ notification: list[0] }});
             Object.defineProperty(event, 'waitUntil', {{ value: function (p) {{ waits.push(p); }} }});
             self.dispatchEvent(event);
             return Promise.all(waits);
           }}).then(function () {{ return [asked.focused, asked.opened]; }});
         }})()",
        tag = json!(tag)
    );
    worker.evaluate(&click).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_a_notification_brings_up_its_page() {
    let server = TestServer::start().await;
    let (mut browser, events, _profile) = launch().await;
    let (page, mut pusher) = homepage_taking_pushes(&browser, &server).await;
    for (tag, url) in [
        ("status", "/"),
        ("message", "/log"),
        ("other", "https://elsewhere.example/"),
    ] {
        let push = json!({"title": "BITS", "body": tag, "url": url, "tag": tag});
        pusher.deliver(&page, &push.to_string()).await;
    }
    wait_for_notifications(
        &page,
        "three notifications",
        &[
            ("BITS", "message", "message"),
            ("BITS", "other", "other"),
            ("BITS", "status", "status"),
        ],
    )
    .await;
    let mut worker = WorkerConsole::attach(&browser, &server).await;

    // The homepage is open: it is brought up, and the notification goes.
    let asked = click_notification(&mut worker, "status").await;
    assert_eq!(asked, json!([[server.url("/")], []]));
    // Another page of the site: opened, as no window shows it.
    let asked = click_notification(&mut worker, "message").await;
    assert_eq!(asked, json!([[], [server.url("/log")]]));
    // Another site's: the homepage instead, which is open.
    let asked = click_notification(&mut worker, "other").await;
    assert_eq!(asked, json!([[server.url("/")], []]));
    wait_for_notifications(&page, "every clicked notification closed", &[]).await;

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}

/// A stand-in for the browser's push manager, for Chromium without a
/// push service: a subscription of an endpoint of the page's choosing
/// (`sessionStorage` `fake-endpoint`) with a real P-256 key, kept in
/// `sessionStorage` across reloads; the options it was asked with are kept
/// there too (`fake-options`).
const STAND_IN: &str = r#"(function () {
  var KEY = "fake-subscription";
  function b64(bytes) {
    return btoa(String.fromCharCode.apply(null, new Uint8Array(bytes)))
      .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function subscription(kept) {
    return {
      endpoint: kept.endpoint,
      options: null,
      toJSON: function () { return { endpoint: kept.endpoint, expirationTime: null, keys: kept.keys }; },
      unsubscribe: function () { sessionStorage.removeItem(KEY); return Promise.resolve(true); },
    };
  }
  PushManager.prototype.getSubscription = function () {
    var kept = JSON.parse(sessionStorage.getItem(KEY) || "null");
    return Promise.resolve(kept && subscription(kept));
  };
  PushManager.prototype.subscribe = function (options) {
    sessionStorage.setItem("fake-options", JSON.stringify({
      userVisibleOnly: options.userVisibleOnly,
      key: b64(options.applicationServerKey),
    }));
    return crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"])
      .then(function (pair) { return crypto.subtle.exportKey("raw", pair.publicKey); })
      .then(function (raw) {
        var kept = {
          endpoint: sessionStorage.getItem("fake-endpoint") || "https://push.example.net/send/" + Math.random().toString(36).slice(2),
          keys: { p256dh: b64(raw), auth: b64(crypto.getRandomValues(new Uint8Array(16))) },
        };
        sessionStorage.setItem(KEY, JSON.stringify(kept));
        return subscription(kept);
      });
  };
})();"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_asks_and_tells_bitsd_and_says_what_went_wrong() {
    let server = TestServer::start().await;
    let (mut browser, events, _profile) = launch().await;
    let en = home(Lang::En);
    let it = home(Lang::It);

    // Notifications blocked: said in words, nothing stored.
    let page = open(&browser, &server.url("/?lang=en")).await;
    wait_for_control(&page, "the control", "no").await;
    allow_notifications(&browser, &server, PermissionSetting::Denied).await;
    click(&page, "notify-button").await;
    wait_for_problem(&page, "notifications blocked", en.notify_denied).await;
    assert_eq!(text_of(&page, "notify-state").await, en.notify_off);
    assert_eq!(stored_count(&server), 0);

    // Chromium's own push service: out of reach in a machine without
    // network, where Chromium never answers; the page gives up after its
    // patience, on the page's clock, run ahead by the DevTools protocol
    // once the push service was asked, and says so in words. Should it be
    // reached, bitsd stores the subscription, and the page removes it again.
    allow_notifications(&browser, &server, PermissionSetting::Granted).await;
    page.evaluate(
        "var subscribe = PushManager.prototype.subscribe; \
         PushManager.prototype.subscribe = function (options) { \
           window.pushServiceAsked = true; return subscribe.call(this, options); };",
    )
    .await
    .unwrap();
    tick(&page, true, false).await;
    click(&page, "notify-button").await;
    wait_until(&page, "the push service asked", "window.pushServiceAsked").await;
    run_clock_ahead(&page, PUSH_PATIENCE_MS + 10_000.0).await;
    wait_until(
        &page,
        "the push service's answer",
        "document.getElementById('notify').getAttribute('aria-busy') === 'false' \
         && (!document.getElementById('notify-error').hidden \
             || document.getElementById('notify').dataset.subscribed === 'yes')",
    )
    .await;
    if hidden(&page, "notify-error").await {
        // (Read without a promise: on the page's paused clock one may not
        // settle.)
        let endpoint = text(
            &page,
            "JSON.parse(localStorage.getItem('bits-notify')).endpoint",
        )
        .await;
        assert_eq!(stored(&server), [(endpoint, "open".into(), "en".into())]);
        assert_eq!(text_of(&page, "notify-state").await, en.notify_on_open);
        click(&page, "notify-stop").await;
        wait_for_control(&page, "unsubscribed", "no").await;
    } else {
        assert_eq!(text_of(&page, "notify-error").await, en.notify_unreachable);
        assert_eq!(text_of(&page, "notify-state").await, en.notify_off);
    }
    assert_eq!(stored_count(&server), 0);
    page.close().await.unwrap();

    // A push manager that answers, in Italian: bitsd stores what the page
    // chose, in its language; the page says so, also after a reload.
    let page = open(&browser, "about:blank").await;
    page.evaluate_on_new_document(STAND_IN).await.unwrap();
    page.goto(server.url("/?lang=it")).await.unwrap();
    wait_for_control(&page, "the Italian control", "no").await;
    tick(&page, true, true).await;
    click(&page, "notify-button").await;
    wait_for_control(&page, "subscribed", "yes").await;
    assert_eq!(text_of(&page, "notify-state").await, it.notify_on_both);
    let endpoint = text(
        &page,
        "JSON.parse(sessionStorage.getItem('fake-subscription')).endpoint",
    )
    .await;
    assert_eq!(
        stored(&server),
        [(endpoint.clone(), "open,message".into(), "it".into())]
    );
    let options: serde_json::Value =
        serde_json::from_str(&text(&page, "sessionStorage.getItem('fake-options')").await).unwrap();
    let key = server.json("/push/key").await;
    assert_eq!(
        options,
        json!({"userVisibleOnly": true, "key": key["publicKey"]})
    );

    page.reload().await.unwrap();
    wait_for_control(&page, "subscribed, after a reload", "yes").await;
    assert_eq!(text_of(&page, "notify-state").await, it.notify_on_both);
    assert_eq!(text_of(&page, "notify-button").await, it.notify_save);
    assert!(!hidden(&page, "notify-stop").await);
    screenshot(&page, "notify-it-390-subscribed.png", 390, 844, true).await;
    assert_fits(&page, "subscribed at 320 px", 320, true).await;
    screenshot(&page, "notify-it-1280-subscribed.png", 1280, 900, false).await;

    // Another choice replaces the topics of the same endpoint.
    tick(&page, false, true).await;
    click(&page, "notify-button").await;
    wait_until(
        &page,
        "the new choice",
        &format!(
            "document.getElementById('notify-state').textContent === {}",
            serde_json::to_string(it.notify_on_message).unwrap()
        ),
    )
    .await;
    assert_eq!(
        stored(&server),
        [(endpoint.clone(), "message".into(), "it".into())]
    );

    // Stopped: gone from bitsd and from the browser.
    click(&page, "notify-stop").await;
    wait_for_control(&page, "unsubscribed", "no").await;
    assert_eq!(text_of(&page, "notify-state").await, it.notify_off);
    assert_eq!(stored_count(&server), 0);
    assert_eq!(
        text(
            &page,
            "String(sessionStorage.getItem('fake-subscription')) + ' ' + String(localStorage.getItem('bits-notify'))"
        )
        .await,
        "null null"
    );

    // bitsd refuses (an endpoint that is not https://): its words are
    // shown, and the browser keeps no subscription bitsd does not know.
    page.evaluate("sessionStorage.setItem('fake-endpoint', 'http://push.example.net/x')")
        .await
        .unwrap();
    click(&page, "notify-button").await;
    wait_until(
        &page,
        "bitsd's refusal",
        "!document.getElementById('notify-error').hidden \
         && document.getElementById('notify').getAttribute('aria-busy') === 'false'",
    )
    .await;
    let refused = text_of(&page, "notify-error").await;
    let prefix = it.notify_refused.replace("{reason}", "");
    assert!(
        refused.starts_with(&prefix) && refused.contains("https://"),
        "{refused}"
    );
    assert_eq!(text_of(&page, "notify-state").await, it.notify_off);
    assert_eq!(
        text(&page, "String(sessionStorage.getItem('fake-subscription'))").await,
        "null"
    );
    assert_eq!(stored_count(&server), 0);

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}

/// The service worker's own realm, reached over a DevTools connection of
/// its own: chromiumoxide detaches from every service worker it meets.
struct WorkerConsole {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// The DevTools session attached to the worker.
    session: String,
    /// The id of the last command sent.
    sent: u64,
}

impl WorkerConsole {
    /// Attaches to the running service worker of `server`'s pages.
    async fn attach(browser: &Browser, server: &TestServer) -> WorkerConsole {
        let (socket, _) = tokio_tungstenite::connect_async(browser.websocket_address().as_str())
            .await
            .expect("a DevTools connection");
        let mut console = WorkerConsole {
            socket,
            session: String::new(),
            sent: 0,
        };
        let script = server.url("/sw.js");
        let deadline = tokio::time::Instant::now() + BROWSER_PATIENCE;
        let target = loop {
            let targets = console.call(None, "Target.getTargets", json!({})).await;
            let worker = targets["targetInfos"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["type"] == "service_worker" && t["url"] == script.as_str())
                .map(|t| t["targetId"].clone());
            if let Some(id) = worker {
                break id;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no service worker {script} running: {targets}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let attached = console
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await;
        console.session = attached["sessionId"].as_str().unwrap().to_string();
        console
    }

    /// Sends the DevTools command `method`, to the worker when `session`
    /// is its session, else to the browser; its result.
    async fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: serde_json::Value,
    ) -> serde_json::Value {
        use futures_util::SinkExt as _;
        use tokio_tungstenite::tungstenite::Message;
        self.sent += 1;
        let mut command = json!({"id": self.sent, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::Text(command.to_string().into()))
            .await
            .unwrap();
        let answer = tokio::time::timeout(BROWSER_PATIENCE, async {
            // Events and other answers pass by.
            while let Some(message) = self.socket.next().await {
                if let Message::Text(text) = message.unwrap() {
                    let message: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if message["id"] == self.sent {
                        return message;
                    }
                }
            }
            panic!("the DevTools connection closed during {method}");
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method}"));
        if let Some(error) = answer.get("error") {
            panic!("{method}: {error}");
        }
        answer["result"].clone()
    }

    /// What `expression` gives in the worker, a promise awaited; its
    /// exception fails the test.
    async fn evaluate(&mut self, expression: &str) -> serde_json::Value {
        let session = self.session.clone();
        let params = json!({"expression": expression, "awaitPromise": true, "returnByValue": true});
        let answer = self.call(Some(&session), "Runtime.evaluate", params).await;
        if let Some(exception) = answer.get("exceptionDetails") {
            panic!("in the service worker: {exception}");
        }
        answer["result"]["value"].clone()
    }
}

/// Dispatches a `pushsubscriptionchange` event in the service worker,
/// with `old` and `new` (JS expressions) as its subscriptions, and awaits
/// what the worker asked it to wait for; how many promises that was.
/// Chromium makes a `PushSubscriptionChangeEvent` only of subscriptions of
/// its own push service, out of reach here, and an event made by a script
/// refuses `waitUntil`: the event is made without subscriptions, then
/// given the two and a `waitUntil` of its own.
async fn change_subscription(worker: &mut WorkerConsole, old: &str, new: &str) -> u64 {
    let dispatch = format!(
        "(function () {{
           var waits = [];
           var event = typeof PushSubscriptionChangeEvent === 'function'
             ? new PushSubscriptionChangeEvent('pushsubscriptionchange')
             : new ExtendableEvent('pushsubscriptionchange');
           Object.defineProperty(event, 'oldSubscription', {{ value: {old} }});
           Object.defineProperty(event, 'newSubscription', {{ value: {new} }});
           Object.defineProperty(event, 'waitUntil', {{ value: function (p) {{ waits.push(p); }} }});
           self.dispatchEvent(event);
           return Promise.all(waits).then(function () {{ return waits.length; }});
         }})()"
    );
    worker.evaluate(&dispatch).await.as_u64().unwrap()
}

/// A subscription as a JS object whose `toJSON` gives `endpoint` with a
/// fresh P-256 key and auth secret, as a browser's does.
fn subscription_js(endpoint: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike as _, ES256KeyPair};
    let key = ES256KeyPair::generate();
    let json = json!({
        "endpoint": endpoint,
        "expirationTime": null,
        "keys": {
            "p256dh": URL_SAFE_NO_PAD.encode(key.public_key().public_key().to_bytes_uncompressed()),
            "auth": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
        },
    });
    format!(
        "{{ endpoint: {}, options: null, \
           toJSON: function () {{ return {json}; }}, \
           unsubscribe: function () {{ return Promise.resolve(true); }} }}",
        json!(endpoint)
    )
}

/// Waits until bitsd keeps exactly `expected` (endpoint, topics, lang).
async fn wait_for_stored(server: &TestServer, what: &str, expected: &[(&str, &str, &str)]) {
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(e, t, l)| (e.to_string(), t.to_string(), l.to_string()))
        .collect();
    let deadline = tokio::time::Instant::now() + BROWSER_PATIENCE;
    while stored(server) != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}, expected {expected:?}",
            stored(server)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_the_browser_replaces_stays_subscribed() {
    let server = TestServer::start().await;
    let (mut browser, events, _profile) = launch().await;
    allow_notifications(&browser, &server, PermissionSetting::Granted).await;
    // Subscribed in Italian to both, through the stand-in push manager.
    let page = open(&browser, "about:blank").await;
    page.evaluate_on_new_document(STAND_IN).await.unwrap();
    page.goto(server.url("/?lang=it")).await.unwrap();
    wait_for_control(&page, "the Italian control", "no").await;
    tick(&page, true, true).await;
    click(&page, "notify-button").await;
    wait_for_control(&page, "subscribed", "yes").await;
    let old = text(
        &page,
        "JSON.parse(sessionStorage.getItem('fake-subscription')).endpoint",
    )
    .await;
    assert_eq!(
        stored(&server),
        [(old.clone(), "open,message".into(), "it".into())]
    );

    // A browser that renews the subscription without telling the worker:
    // the page, next opened, hands the new one to bitsd with the choice.
    let moved = "https://push.example.net/send/moved";
    page.evaluate(format!(
        "var k = JSON.parse(sessionStorage.getItem('fake-subscription')); \
         k.endpoint = {}; sessionStorage.setItem('fake-subscription', JSON.stringify(k)); \
         location.reload(); true",
        json!(moved)
    ))
    .await
    .unwrap();
    wait_for_stored(
        &server,
        "the page's new subscription in place of the old",
        &[(moved, "open,message", "it")],
    )
    .await;
    wait_for_control(&page, "subscribed after the renewal", "yes").await;
    assert_eq!(
        text_of(&page, "notify-state").await,
        home(Lang::It).notify_on_both
    );

    // The page shares the choice with the worker.
    wait_until_resolved(
        &page,
        "the choice shared with the worker",
        &format!(
            "caches.open('bitsd-push-choice') \
               .then(function (c) {{ return c.match('/push/choice'); }}) \
               .then(function (r) {{ return r ? r.json() : null; }}) \
               .then(function (c) {{ return !!c && c.endpoint === {} && c.lang === 'it' \
                 && c.topics.join() === 'open,message'; }})",
            json!(moved)
        ),
    )
    .await;

    wait_for_worker(&page).await;
    let mut worker = WorkerConsole::attach(&browser, &server).await;
    // bitsd forgot the old one already (its push service said it was gone
    // before the browser told the worker): the worker's choice is enough.
    rusqlite::Connection::open(&server.db)
        .unwrap()
        .execute("DELETE FROM bitsd_push_subscription", [])
        .unwrap();

    // Firefox's way: the new subscription comes with the event.
    let renewed = "https://push.example.net/send/renewed";
    let old_js = format!("{{ endpoint: {} }}", json!(moved));
    let waited = change_subscription(&mut worker, &old_js, &subscription_js(renewed)).await;
    assert_eq!(waited, 1, "the worker waits for bitsd");
    wait_for_stored(
        &server,
        "the new subscription in place of the old",
        &[(renewed, "open,message", "it")],
    )
    .await;

    // Without it, the worker subscribes again with bitsd's key, as the page
    // does.
    let again = "https://push.example.net/send/again";
    let made = subscription_js(again);
    worker
        .evaluate(&format!(
            "PushManager.prototype.subscribe = function (options) {{
               var key = btoa(String.fromCharCode.apply(null, new Uint8Array(options.applicationServerKey)))
                 .replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
               self.askedWith = {{ userVisibleOnly: options.userVisibleOnly, key: key }};
               return Promise.resolve({made});
             }}; true"
        ))
        .await;
    let renewed_js = format!("{{ endpoint: {} }}", json!(renewed));
    let waited = change_subscription(&mut worker, &renewed_js, "null").await;
    assert_eq!(waited, 1);
    wait_for_stored(
        &server,
        "the worker's own subscription in place of the old",
        &[(again, "open,message", "it")],
    )
    .await;
    let key = server.json("/push/key").await;
    assert_eq!(
        worker.evaluate("self.askedWith").await,
        json!({"userVisibleOnly": true, "key": key["publicKey"]})
    );

    // Without the old subscription, there is no telling whose choice to
    // keep: nothing is sent.
    worker
        .evaluate(
            "self.fetched = []; var fetchAtFirst = self.fetch; \
             self.fetch = function (url) { self.fetched.push(String(url)); \
               return fetchAtFirst.apply(self, arguments); }; true",
        )
        .await;
    let waited = change_subscription(
        &mut worker,
        "null",
        &subscription_js("https://push.example.net/send/orphan"),
    )
    .await;
    assert_eq!(waited, 0);
    assert_eq!(worker.evaluate("self.fetched").await, json!([]));
    assert_eq!(
        stored(&server),
        [(again.into(), "open,message".into(), "it".into())]
    );

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}
