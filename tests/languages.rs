//! English and Italian over real HTTP: how a request gets its language, and
//! every page in both.

mod common;

use common::TestServer;
use common::member::{Session, add_user};
use reqwest::header;

/// The `lang` of the page's `<html>` element.
fn html_lang(page: &str) -> &str {
    let at = page
        .find("<html lang=\"")
        .expect("an html element with lang")
        + 12;
    &page[at..at + page[at..].find('"').unwrap()]
}

async fn page_with(server: &TestServer, path: &str, accept: &str) -> reqwest::Response {
    server
        .get_with(path, &[(header::ACCEPT_LANGUAGE, accept)])
        .await
}

#[tokio::test]
async fn the_language_comes_from_the_query_then_the_cookie_then_the_browser() {
    let server = TestServer::start().await;

    let r = page_with(&server, "/", "it-IT,it;q=0.9,en;q=0.8").await;
    let vary = r.headers()[header::VARY].to_str().unwrap().to_string();
    assert!(
        vary.contains("Accept-Language") && vary.contains("Cookie"),
        "{vary}"
    );
    let page = r.text().await.unwrap();
    assert_eq!(html_lang(&page), "it");
    assert!(page.contains("La sede è chiusa"), "{page}");
    assert!(page.contains(r#"href="?lang=en""#), "a link to English");

    let page = page_with(&server, "/", "de-DE,de;q=0.9,en;q=0.5,it;q=0.4")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(html_lang(&page), "en");
    assert!(page.contains("The room is closed"));

    // Asked for, then remembered over what the browser says.
    let mut s = Session::new(&server);
    let r = s.get("/log?lang=it").await;
    let cookie = common::header_text(&r, header::SET_COOKIE).to_string();
    assert!(
        cookie.starts_with("lang=it;") && cookie.contains("Max-Age="),
        "{cookie}"
    );
    assert!(r.text().await.unwrap().contains("<h1>Storico</h1>"));
    let r = server
        .get_with(
            "/",
            &[
                (header::ACCEPT_LANGUAGE, "en"),
                (header::COOKIE, &s.cookie_header()),
            ],
        )
        .await;
    assert_eq!(html_lang(&r.text().await.unwrap()), "it");

    let r = page_with(&server, "/?lang=fr", "it").await;
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("lang must be en or it"), "{body}");

    // A 404 of an unknown path still speaks the language; a bad `lang`
    // there is passed over (on a page that exists it is a 400).
    let r = page_with(&server, "/no/such/page?lang=xx", "it").await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("Pagina non trovata"));
}

#[tokio::test]
async fn default_language_is_for_browsers_that_ask_for_neither() {
    let server = TestServer::start_with(&["--default-language", "it"]).await;
    for accept in ["", "de, fr;q=0.5", "*"] {
        let page = page_with(&server, "/", accept).await.text().await.unwrap();
        assert_eq!(html_lang(&page), "it", "{accept:?}");
    }
    let page = page_with(&server, "/", "en-US").await.text().await.unwrap();
    assert_eq!(html_lang(&page), "en");
}

#[tokio::test]
async fn every_page_speaks_italian_with_its_dates_and_decimals() {
    let server = TestServer::start_with(&["--min-login-retry", "0"]).await;
    add_user(&server, "ada", "pw");
    let mut device = server.device().await;
    device.send_all(&["status 1", "temperature 0 21.5"]).await;
    server
        .wait_for_data("the sample", |d| d["tempint"]["value"] == 21.5)
        .await;
    let mut s = Session::new(&server);
    s.get("/?lang=it").await;

    let home = s.get("/").await.text().await.unwrap();
    assert!(home.contains("La sede è aperta"), "{home}");
    assert!(home.contains("21,5 °C"), "decimal comma: {home}");
    // A change of today: its time and how long ago.
    let since = home.split("id=\"status-since\"").nth(1).unwrap();
    let since = &since[since.find('>').unwrap() + 1..since.find("</p>").unwrap()];
    assert!(
        since.starts_with("dalle <time datetime=\"")
            && since.ends_with(" (adesso)</time>, segnalato dal dispositivo"),
        "{since}"
    );
    // The sample's time likewise: HH:MM and how long ago.
    let sample = home.split("<time datetime=").nth(2).unwrap();
    let sample = &sample[sample.find('>').unwrap() + 1..sample.find("</time>").unwrap()];
    assert!(
        sample.as_bytes()[2] == b':' && sample.ends_with(" (adesso)"),
        "{sample}"
    );
    assert!(
        home.contains(r#""decimal_point":",""#),
        "the script's table"
    );
    assert!(!home.contains("The room is"), "{home}");

    let login = s.get("/login").await.text().await.unwrap();
    assert!(login.contains("Nome utente") && login.contains("Accedi"));
    let wrong = s.login("ada", "nope", "/admin").await;
    assert_eq!(wrong.status(), 401);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Nome utente o password errati.")
    );
    // One login a second from an address.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = s.login("ada", "pw", "/admin").await;
    assert_eq!(r.status(), 303);

    let admin = s.get("/admin").await.text().await.unwrap();
    assert!(
        admin.contains("Connesso come <strong>ada</strong>"),
        "{admin}"
    );
    assert!(admin.contains("Chiudi la sede"), "{admin}");
    let form = s.get("/message").await.text().await.unwrap();
    assert!(form.contains("firmato <strong>ada</strong>"), "{form}");
    let xsrf = s.cookie("_xsrf").unwrap();
    let r = s
        .post("/message", &[("msgtext", " "), ("_xsrf", &xsrf)])
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("Il messaggio è vuoto."));

    // Not yet a week of history: the map says so.
    let map = s.get("/presence.svg").await.text().await.unwrap();
    assert!(
        map.contains(">Storico ancora insufficiente:</text>") && map.contains("Probabilità"),
        "{map}"
    );
    let log = s.get("/log?limit=5&lang=it").await.text().await.unwrap();
    // The other language's link keeps the page's query.
    assert!(log.contains(r#"href="?limit=5&#38;lang=en""#), "{log}");
    let login = s.get("/login?next=/message").await.text().await.unwrap();
    assert!(
        login.contains(r#"href="?next=%2Fmessage&#38;lang=en""#),
        "{login}"
    );
    assert!(
        log.contains("aperta") && log.contains("dispositivo"),
        "{log}"
    );
    for (path, page) in [
        ("/", &home),
        ("/login", &login),
        ("/admin", &admin),
        ("/message", &form),
        ("/log", &log),
    ] {
        assert_eq!(html_lang(page), "it", "{path}");
        assert!(page.contains(">Storico</a>"), "{path}: the header");
    }

    // The same pages in English, in the same session.
    let home = s.get("/?lang=en").await.text().await.unwrap();
    assert!(home.contains("21.5 °C") && home.contains("The room is open"));
    let admin = s.get("/admin").await.text().await.unwrap();
    assert!(
        admin.contains("Logged in as <strong>ada</strong>"),
        "{admin}"
    );
}
