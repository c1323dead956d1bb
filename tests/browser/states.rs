//! The three states (SPEC 19) in a browser: the homepage follows the
//! device's `state members` live, `/admin`'s three buttons move between the
//! states, `/log` lists them; `/blind` shows each in the colour-blind
//! palette.

use super::*;

/// What the homepage shows for a state, in one language: the status's
/// class, its text, the window's title and the favicon.
struct Shown {
    class: &'static str,
    text: &'static str,
    title: &'static str,
}

const MEMBERS_EN: Shown = Shown {
    class: "members",
    text: "Open for members only",
    title: "BITS · members only",
};
const MEMBERS_IT: Shown = Shown {
    class: "members",
    text: "Aperta solo ai soci",
    title: "BITS · solo soci",
};
const OPEN_EN: Shown = Shown {
    class: "open",
    text: "The room is open",
    title: "BITS · open",
};
const CLOSED_EN: Shown = Shown {
    class: "closed",
    text: "The room is closed",
    title: "BITS · closed",
};

/// Waits until the homepage in `page` shows `shown`, live.
async fn wait_for_state(page: &Page, what: &str, shown: &Shown) {
    let Shown { class, text, title } = shown;
    let expression = format!(
        "document.getElementById('status').className === 'status {class}' \
         && document.getElementById('status-text').textContent === '{text}' \
         && document.title === '{title}' \
         && document.getElementById('favicon').getAttribute('href').indexOf('/static/{class}.svg') >= 0"
    );
    wait_until(page, what, &expression).await;
}

/// `/admin`'s status heading.
const ADMIN_HEADING: &str = "document.querySelector('main section.status h2').textContent";

/// `/admin`'s state buttons, as `value: words` joined by commas.
const ADMIN_BUTTONS: &str = "[].map.call(document.querySelectorAll('form.states button'), \
     function (b) { return b.value + ': ' + b.textContent; }).join(', ')";

/// Waits until `/admin` in `page` is in state `class`, headed `heading`.
async fn wait_for_admin(page: &Page, class: &str, heading: &str) {
    let expression = format!(
        "document.getElementById('devices') \
         && document.querySelector('main section.status').className === 'status {class}' \
         && {ADMIN_HEADING} === '{heading}'"
    );
    wait_until(page, &format!("/admin {class}"), &expression).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_states_in_a_real_browser() {
    let server = TestServer::start().await;
    common::member::add_user(&server, "ada", "pw");
    // Named: members see that she set the status.
    let named =
        common::member::usermanage(&server, &["modify", "ada", "--visibility", "named"], None);
    assert!(named.status.success(), "{named:?}");
    let (mut browser, events, _profile) = launch().await;

    // The device says members only: both homepages follow, live.
    let home = open(&browser, &server.url("/?lang=en")).await;
    wait_for_websocket(&home, "the script").await;
    let italian = open(&browser, &server.url("/?lang=it")).await;
    wait_for_websocket(&italian, "the Italian script").await;
    let mut device = server.device().await;
    device.send("state members").await;
    wait_for_state(&home, "members only, live", &MEMBERS_EN).await;
    wait_for_state(&italian, "members only in Italian, live", &MEMBERS_IT).await;
    // Open until two hours from now, said by the device: live, as the
    // server writes it.
    let until = (chrono::Utc::now().with_timezone(&chrono_tz::Europe::Rome)
        + chrono::Duration::hours(2))
    .format("%H:%M")
    .to_string();
    device.send(&format!("until {until}")).await;
    for page in [&home, &italian] {
        wait_until(
            page,
            "the time the room stays open until, live",
            &format!(
                "!document.getElementById('status-until').hidden && \
                 document.getElementById('status-until').textContent.indexOf('{until}') >= 0"
            ),
        )
        .await;
    }
    assert_agrees_with(&home, &server, "/?lang=en", "members only").await;
    assert_agrees_with(&italian, &server, "/?lang=it", "members only, in Italian").await;
    for (page, lang) in [(&home, "en"), (&italian, "it")] {
        screenshot(
            page,
            &format!("states-members-{lang}-390.png"),
            390,
            844,
            true,
        )
        .await;
        assert_fits(page, &format!("members only, {lang}, phone"), 390, true).await;
        screenshot(
            page,
            &format!("states-members-{lang}-1280.png"),
            1280,
            900,
            false,
        )
        .await;
    }
    // The colour-blind palette, kept open to compare the three states.
    let blind = open(&browser, &server.url("/blind?lang=en")).await;
    wait_for_websocket(&blind, "the colour-blind page's script").await;
    wait_for_state(&blind, "members only, colour-blind", &MEMBERS_EN).await;
    screenshot(&blind, "states-members-blind-390.png", 390, 844, true).await;
    italian.close().await.unwrap();

    // Closed by the device, then moved by a member's clicks on /admin; the
    // homepage follows each.
    device.send("state closed").await;
    wait_for_state(&home, "closed, live", &CLOSED_EN).await;
    let admin = open(&browser, &server.url("/login?next=/admin&lang=en")).await;
    log_in_to_admin(&admin, "ada", "pw").await;
    wait_for_admin(&admin, "closed", "The room is closed").await;
    assert_eq!(
        text(&admin, ADMIN_BUTTONS).await,
        "open: Open the room, members: Members only"
    );

    click_first(&admin, "form.states button[value='members']").await;
    wait_for_admin(&admin, "members", "Open for members only").await;
    assert_eq!(
        text(&admin, ADMIN_BUTTONS).await,
        "open: Open the room, closed: Close the room"
    );
    wait_for_state(&home, "members only from /admin, live", &MEMBERS_EN).await;
    assert_agrees_with(&home, &server, "/?lang=en", "members only from /admin").await;
    assert_eq!(
        text(
            &admin,
            "document.getElementById('status-set-by').textContent"
        )
        .await,
        "Set by ada"
    );
    // Until when, from /admin's time field: the page comes back with it.
    type_into(&admin, "until", &until).await;
    click_first(&admin, "form.until button").await;
    wait_until(
        &admin,
        "/admin with its until",
        &format!(
            "document.getElementById('devices') && \
             document.getElementById('until').getAttribute('value') === '{until}'"
        ),
    )
    .await;
    screenshot(&admin, "states-admin-en-390.png", 390, 844, true).await;
    assert_fits(&admin, "/admin members only, phone", 390, true).await;
    screenshot(&admin, "states-admin-en-1280.png", 1280, 900, false).await;
    assert_fits(&admin, "/admin members only, desktop", 1280, false).await;
    admin.goto(server.url("/admin?lang=it")).await.unwrap();
    wait_for_admin(&admin, "members", "Aperta solo ai soci").await;
    assert_eq!(
        text(
            &admin,
            "document.getElementById('status-set-by').textContent"
        )
        .await,
        "Impostato da ada"
    );
    assert_eq!(
        text(&admin, ADMIN_BUTTONS).await,
        "open: Apri la sede, closed: Chiudi la sede"
    );
    screenshot(&admin, "states-admin-it-390.png", 390, 844, true).await;
    assert_fits(&admin, "/admin members only in Italian, phone", 390, true).await;
    screenshot(&admin, "states-admin-it-1280.png", 1280, 900, false).await;
    assert_fits(
        &admin,
        "/admin members only in Italian, desktop",
        1280,
        false,
    )
    .await;
    admin.goto(server.url("/admin?lang=en")).await.unwrap();
    wait_for_admin(&admin, "members", "Open for members only").await;

    click_first(&admin, "form.states button[value='open']").await;
    wait_for_admin(&admin, "open", "The room is open").await;
    assert_eq!(
        text(&admin, ADMIN_BUTTONS).await,
        "members: Members only, closed: Close the room"
    );
    wait_for_state(&home, "open from /admin, live", &OPEN_EN).await;
    wait_for_state(&blind, "open, colour-blind", &OPEN_EN).await;
    screenshot(&blind, "states-open-blind-390.png", 390, 844, true).await;

    click_first(&admin, "form.states button[value='closed']").await;
    wait_for_admin(&admin, "closed", "The room is closed").await;
    assert_eq!(
        text(&admin, ADMIN_BUTTONS).await,
        "open: Open the room, members: Members only"
    );
    wait_for_state(&home, "closed from /admin, live", &CLOSED_EN).await;
    wait_for_state(&blind, "closed, colour-blind", &CLOSED_EN).await;
    screenshot(&blind, "states-closed-blind-390.png", 390, 844, true).await;
    assert_agrees_with(&home, &server, "/?lang=en", "closed from /admin").await;

    // /log: newest first, the three states in words (the open one with how
    // long it lasted), on a phone.
    for (lang, words) in [
        (
            "en",
            [
                "closed",
                "open for ",
                "members only",
                "closed",
                "members only",
            ],
        ),
        (
            "it",
            ["chiusa", "aperta per ", "solo soci", "chiusa", "solo soci"],
        ),
    ] {
        admin
            .goto(server.url(&format!("/log?lang={lang}")))
            .await
            .unwrap();
        let classes = "[].map.call(document.querySelectorAll('table.log tbody tr'), \
             function (tr) { return tr.className; }).join(' ')";
        wait_until(
            &admin,
            &format!("/log in {lang}"),
            &format!(
                "document.documentElement.lang === '{lang}' \
                 && {classes} === 'closed open members closed members'"
            ),
        )
        .await;
        let shown = text(
            &admin,
            "[].map.call(document.querySelectorAll('table.log tbody tr'), \
             function (tr) { return tr.children[1].textContent; }).join('|')",
        )
        .await;
        let shown: Vec<&str> = shown.split('|').collect();
        assert_eq!(shown.len(), words.len(), "{shown:?}");
        for (shown, word) in shown.iter().zip(words) {
            assert!(
                *shown == word || word.ends_with(' ') && shown.starts_with(word),
                "/log in {lang}: {shown:?}, expected {word:?}"
            );
        }
        screenshot(
            &admin,
            &format!("states-log-{lang}-390.png"),
            390,
            844,
            true,
        )
        .await;
        assert_fits(&admin, &format!("/log in {lang}, phone"), 390, true).await;
    }

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
}
