//! Developer mode: debug marker, pages and files read from disk, no caching.

mod common;

use common::{TestServer, folder_with};
use reqwest::header;

/// A server whose wiki and assets folders are temporary and editable.
async fn server_with_folders(
    developer: bool,
) -> (TestServer, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let wiki = folder_with(
        dir.path(),
        "wiki",
        &[("rules.md", "# Rules\n\nfirst version\n")],
    );
    let assets = folder_with(
        dir.path(),
        "assets",
        &[("site.css", "body { color: red }\n")],
    );
    let db = dir.path().join("bitsd.db");
    let (w, a) = (wiki.display().to_string(), assets.display().to_string());
    let flag = format!("--developer-mode={developer}");
    let server =
        TestServer::start_in(dir, db, &[&flag, "--wiki-path", &w, "--assets-path", &a]).await;
    (server, wiki, assets)
}

#[tokio::test]
async fn developer_mode_reads_from_disk_and_marks_pages() {
    let (server, wiki, assets) = server_with_folders(true).await;
    let home = server.text("/").await;
    assert!(
        home.contains("<meta name=\"mode\" content=\"debug\">"),
        "{home}"
    );

    assert!(server.text("/rules").await.contains("first version"));
    std::fs::write(wiki.join("rules.md"), "# Rules\n\nsecond version\n").unwrap();
    assert!(
        server.text("/rules").await.contains("second version"),
        "edit and reload"
    );
    std::fs::write(wiki.join("new-page.md"), "# New\n\nhello\n").unwrap();
    assert!(
        server.text("/new-page").await.contains("hello"),
        "a new file, no bootstrap"
    );

    let css = server.get("/static/site.css").await;
    assert!(css.headers().get(header::CACHE_CONTROL).is_none());
    assert!(css.headers().get(header::LAST_MODIFIED).is_none());
    std::fs::write(assets.join("site.css"), "body { color: blue }\n").unwrap();
    assert!(server.text("/static/site.css").await.contains("blue"));
}

#[tokio::test]
async fn without_developer_mode_pages_come_from_the_database_and_files_are_cached() {
    let (server, wiki, _assets) = server_with_folders(false).await;
    assert!(!server.text("/").await.contains("content=\"debug\""));
    std::fs::write(wiki.join("rules.md"), "# Rules\n\nsecond version\n").unwrap();
    let page = server.text("/rules").await;
    assert!(
        page.contains("first version"),
        "until the next bootstrap: {page}"
    );
    // A built-in file changes only with the version: kept a week.
    let css = server.get("/static/style.css").await;
    assert!(common::header_text(&css, header::CACHE_CONTROL).contains("max-age"));
    // A file of the folder may change any time: revalidated by its date.
    let css = server.get("/static/site.css").await;
    assert_eq!(css.headers()[header::CACHE_CONTROL], "no-cache");
    let modified = common::header_text(&css, header::LAST_MODIFIED);
    let again = server
        .get_with("/static/site.css", &[(header::IF_MODIFIED_SINCE, modified)])
        .await;
    assert_eq!(again.status(), 304);
}
