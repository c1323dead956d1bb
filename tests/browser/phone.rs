//! Every page on a phone's screen (390 and 320 px wide) and a desktop's
//! (1280), in both languages: the menu on one line, the heat map's labels
//! at least 11 px, nothing past the window's edges; screenshots of each.

use super::*;

/// A space's name longer than the header's line on a phone.
const LONG_NAME: &str = "Officina Hacker di Trento";

/// The smallest the heat map's labels may be drawn, in CSS pixels.
const SMALLEST_LABEL: f64 = 11.0;

/// The pages, named for the screenshots: the login page first, as it is
/// seen before logging in.
const PAGES: [(&str, &str); 6] = [
    ("login", "/login"),
    ("home", "/"),
    ("log", "/log"),
    ("info", "/info"),
    ("admin", "/admin"),
    ("message", "/message"),
];

/// A server whose database holds two weeks of openings (14:00 to 18:30 on
/// each of the 14 days before today), so that the heat map is drawn and the
/// history has durations.
async fn server_with_history() -> TestServer {
    let today = common::today();
    let days = (1..=14)
        .rev()
        .map(|back| today - chrono::Duration::days(back));
    common::server_with_openings(days, "14:00:00", "18:30:00").await
}

/// How the page's menu is laid out: `ok` when its links share one line.
async fn menu_lines(page: &Page) -> String {
    text(
        page,
        "(function () {
           var tops = [].map.call(document.querySelectorAll('header.site nav a'), function (a) {
             return Math.round(a.getBoundingClientRect().top);
           });
           var one = tops.length === 4 && tops.every(function (t) { return t === tops[0]; });
           return one ? 'ok' : 'links at ' + tops.join(', ');
         })()",
    )
    .await
}

/// The size the heat map's labels are drawn at, in CSS pixels: the SVG's
/// font size scaled by its rendered width over its viewBox width; and the
/// address of the picture the browser chose.
async fn label_size(page: &Page) -> (f64, String) {
    wait_until(
        page,
        "the heat map",
        "document.getElementById('forecast').complete && document.getElementById('forecast').naturalWidth > 0",
    )
    .await;
    let measured = text(
        page,
        "(function () {
           var img = document.getElementById('forecast');
           var request = new XMLHttpRequest();
           request.open('GET', img.currentSrc, false);
           request.send();
           var svg = request.responseText;
           var box = +/viewBox=\"0 0 (\\d+)/.exec(svg)[1];
           var font = +/font-size=\"(\\d+)\"/.exec(svg)[1];
           return JSON.stringify([font * img.getBoundingClientRect().width / box, img.currentSrc]);
         })()",
    )
    .await;
    serde_json::from_str(&measured).unwrap()
}

/// Checks `page` (showing `what`) at `width` on a phone: the menu on one
/// line, nothing overflowing, the heat map's and the chart's labels
/// large enough.
async fn check_phone(page: &Page, what: &str, width: i64) {
    assert_fits(page, &format!("{what} at {width} px"), width, true).await;
    assert_eq!(menu_lines(page).await, "ok", "{what} at {width} px");
    if page
        .evaluate("!!document.getElementById('forecast')")
        .await
        .unwrap()
        .into_value::<bool>()
        .unwrap()
    {
        wait_until(
            page,
            "the tall heat map",
            "document.getElementById('forecast').currentSrc.indexOf('layout=tall') >= 0",
        )
        .await;
        let (size, chosen) = label_size(page).await;
        assert!(
            size >= SMALLEST_LABEL,
            "{what} at {width} px: labels of {size:.1} px in {chosen}"
        );
    }
    // The temperature chart is drawn again to its new width.
    let chart = "document.getElementById('chart')";
    let drawn = format!("!!({chart} && !{chart}.hasAttribute('hidden'))");
    if page
        .evaluate(drawn.as_str())
        .await
        .unwrap()
        .into_value::<bool>()
        .unwrap()
    {
        wait_until(
            page,
            "the chart drawn to its width",
            &format!(
                "Math.abs({chart}.getBoundingClientRect().width - {chart}.viewBox.baseVal.width) < 2"
            ),
        )
        .await;
        let size: f64 = text(
            page,
            &format!(
                "String(parseFloat(getComputedStyle({chart}.querySelector('text')).fontSize) \
                 * {chart}.getBoundingClientRect().width / {chart}.viewBox.baseVal.width)"
            ),
        )
        .await
        .parse()
        .unwrap();
        assert!(
            size >= SMALLEST_LABEL,
            "{what} at {width} px: the chart's labels of {size:.1} px"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_a_phone_in_both_languages() {
    let server = server_with_history().await;
    common::member::add_user(&server, "ada", "pw");
    {
        let mut db = bitsd::store::Db::open(&server.db, false).unwrap();
        let now = bitsd::clock::unix_seconds();
        let code = db.add_device("temperature-lab", now - 4000, 900).unwrap();
        db.claim_device(&code.code, now - 3600).unwrap();
        db.add_device("door", now - 60, 900).unwrap();
    }
    let mut device = server.device().await;
    device
        .send_all(&["status 1", "temperature 0 21.5", "temperature 1 19.25"])
        .await;
    device
        .send_message("The 3D printer is free again; filament in the drawer under the window.")
        .await;
    server
        .wait_for_data("the message", |d| d["message"].is_object())
        .await;
    let (mut browser, events, _profile) = launch().await;

    let page = open(&browser, &server.url("/login")).await;
    for (name, path) in PAGES {
        if name == "home" {
            // Logged in from here on: /admin and /message need it.
            page.goto(server.url("/login?next=/admin")).await.unwrap();
            log_in_to_admin(&page, "ada", "pw").await;
        }
        for lang in ["en", "it"] {
            let what = format!("{path} in {lang}");
            let separator = if path.contains('?') { '&' } else { '?' };
            page.execute(SetDeviceMetricsOverrideParams::new(390, 844, 1.0, true))
                .await
                .unwrap();
            page.goto(server.url(&format!("{path}{separator}lang={lang}")))
                .await
                .unwrap();
            wait_until(&page, "the page", "document.readyState === 'complete'").await;
            assert_eq!(text(&page, "document.documentElement.lang").await, lang);
            for width in [390, 320] {
                check_phone(&page, &what, width).await;
                screenshot(
                    &page,
                    &format!("phone-{name}-{lang}-{width}.png"),
                    width,
                    844,
                    true,
                )
                .await;
            }
            screenshot(
                &page,
                &format!("phone-{name}-{lang}-1280.png"),
                1280,
                900,
                false,
            )
            .await;
            assert_fits(&page, &format!("{what} on a desktop"), 1280, false).await;
            assert_eq!(menu_lines(&page).await, "ok", "{what} on a desktop");
        }
    }

    // A space with a long name in the brand: the menu still on one line,
    // the name cut short rather than past the edge.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bitsd.toml");
    std::fs::write(&config, format!("[spaceapi]\nspace = {LONG_NAME:?}\n")).unwrap();
    let db = dir.path().join("bitsd.db");
    let config = config.display().to_string();
    let long = TestServer::start_in(dir, db, &["--config", &config]).await;
    page.goto(long.url("/?lang=it")).await.unwrap();
    wait_until(&page, "the page", "document.readyState === 'complete'").await;
    let brand = text(
        &page,
        "document.querySelector('header.site .brand').textContent",
    )
    .await;
    assert_eq!(brand, LONG_NAME);
    for width in [390, 320] {
        check_phone(&page, "a long name", width).await;
        screenshot(
            &page,
            &format!("phone-long-name-{width}.png"),
            width,
            844,
            true,
        )
        .await;
    }
    screenshot(&page, "phone-long-name-1280.png", 1280, 900, false).await;
    assert_fits(&page, "a long name on a desktop", 1280, false).await;

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}
