//! One binary carries its defaults (SPEC 15): started in an empty folder on
//! a new database, bitsd serves its whole homepage, `/static/` and `/info`;
//! configured folders replace built-in files one by one.

mod common;

use std::path::Path;

use common::{Spawned, bitsd_command, folder_with, root};
use reqwest::{Method, header};

/// bitsd started in `dir`, an empty folder but for its database.
fn start_in(dir: &Path, extra: &[&str]) -> Spawned {
    Spawned::start_in(dir, &dir.join("bitsd.db"), extra, "info")
}

fn url(server: &Spawned, path: &str) -> String {
    format!("http://{}{path}", server.web)
}

#[tokio::test]
async fn an_empty_folder_serves_the_whole_homepage_files_and_info() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path(), &[]);
    let http = reqwest::Client::new();

    let home = http.get(url(&server, "/")).send().await.unwrap();
    assert_eq!(home.status(), 200);
    let home = home.text().await.unwrap();
    for linked in ["/static/style.css", "/static/app.js"] {
        assert!(home.contains(linked), "{linked} not linked: {home}");
    }

    for (name, mime) in [
        ("style.css", "text/css"),
        ("app.js", "text/javascript"),
        ("logo.svg", "image/svg+xml"),
        ("open.svg", "image/svg+xml"),
        ("closed.svg", "image/svg+xml"),
        ("robots.txt", "text/plain"),
    ] {
        let response = http
            .get(url(&server, &format!("/static/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let headers = response.headers().clone();
        let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
        assert!(content_type.starts_with(mime), "{name}: {content_type}");
        assert!(
            headers[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("max-age="),
            "{name}"
        );
        let body = response.bytes().await.unwrap();
        let on_disk = std::fs::read(root().join("assets").join(name)).unwrap();
        assert_eq!(body.as_ref(), on_disk.as_slice(), "{name} is the project's");

        // The ETag is a validator: the same file answers 304, empty.
        let etag = headers[header::ETAG].clone();
        let again = http
            .get(url(&server, &format!("/static/{name}")))
            .header(header::IF_NONE_MATCH, etag.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{name}");
        assert_eq!(again.headers()[header::ETAG], etag);
        assert!(again.bytes().await.unwrap().is_empty());
    }

    for (method, path, status) in [
        (Method::HEAD, "/static/style.css", 200),
        (Method::GET, "/static/nothing.css", 404),
        (Method::POST, "/static/style.css", 405),
    ] {
        let response = http
            .request(method.clone(), url(&server, path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
    }

    // No bootstrap ran: the page is the built-in one.
    let info = http.get(url(&server, "/info")).send().await.unwrap();
    assert_eq!(info.status(), 200);
    let info = info.text().await.unwrap();
    let source = std::fs::read_to_string(root().join("wiki/info.md")).unwrap();
    let title = source.lines().find_map(|l| l.strip_prefix("# ")).unwrap();
    assert!(info.contains(title.trim()), "{info}");

    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with("bitsd.db"))
        .collect();
    assert!(left.is_empty(), "bitsd wrote {left:?} beside its database");
}

#[tokio::test]
async fn a_configured_folder_replaces_built_in_files_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let style = ("style.css", "body { background: teal }\n");
    let assets = folder_with(dir.path(), "ours", &[style]);
    std::fs::write(assets.join("club.png"), b"\x89PNG not really").unwrap();
    let server = start_in(dir.path(), &["--assets-path", assets.to_str().unwrap()]);
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(url(&server, path)).send();

    let style = get("/static/style.css").await.unwrap();
    assert_eq!(style.status(), 200);
    assert_eq!(style.text().await.unwrap(), "body { background: teal }\n");
    let club = get("/static/club.png").await.unwrap();
    assert_eq!(club.status(), 200);
    assert_eq!(club.headers()[header::CONTENT_TYPE], "image/png");
    let script = get("/static/app.js").await.unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.bytes().await.unwrap().as_ref(),
        std::fs::read(root().join("assets/app.js"))
            .unwrap()
            .as_slice(),
        "a file the folder lacks comes from the binary"
    );
    assert_eq!(get("/static/nothing.css").await.unwrap().status(), 404);
}

#[tokio::test]
async fn bootstrap_loads_built_in_pages_then_the_folders() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let bootstrap = |extra: &[&str]| {
        let out = bitsd_command()
            .current_dir(dir.path())
            .args(["--config", "/dev/null", "--db"])
            .arg(&db)
            .arg("bootstrap")
            .args(extra)
            .output()
            .unwrap();
        common::stdout_of(out)
    };
    let first = bootstrap(&[]);
    assert!(
        first.contains("1 page(s) loaded, 0 unchanged (info)"),
        "{first}"
    );

    let pages = [
        ("info.md", "# Our room\n\nCome by on Thursdays.\n"),
        ("rules.md", "# House rules\n\nBe kind.\n"),
    ];
    let wiki = folder_with(dir.path(), "pages", &pages);
    let second = bootstrap(&["--wiki-path", wiki.to_str().unwrap()]);
    assert!(
        second.contains("2 page(s) loaded, 0 unchanged (info, rules)"),
        "{second}"
    );

    let server = start_in(dir.path(), &[]);
    let info = reqwest::get(url(&server, "/info")).await.unwrap();
    assert!(info.text().await.unwrap().contains("Come by on Thursdays."));
    let rules = reqwest::get(url(&server, "/rules")).await.unwrap();
    assert!(rules.text().await.unwrap().contains("Be kind."));
}

#[test]
fn a_configured_folder_that_is_not_there_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let missing = dir.path().join("missing");
    for (args, says) in [
        (
            ["--assets-path", missing.to_str().unwrap()],
            format!(
                "bitsd: assets_path: {}: no such directory",
                missing.display()
            ),
        ),
        (
            ["--wiki-path", file.to_str().unwrap()],
            format!("bitsd: wiki_path: {}: not a directory", file.display()),
        ),
    ] {
        for command in [&[][..], &["bootstrap"][..]] {
            let out = bitsd_command()
                .current_dir(dir.path())
                .args(["--config", "/dev/null", "--web-port", "0"])
                .args(["--control-local-port", "0"])
                .args(args)
                .args(command)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?} {command:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(stderr.trim_end(), says, "{command:?}");
            assert!(
                !dir.path().join("bitsd.db").exists(),
                "nothing is opened before the configuration is checked"
            );
        }
    }
}
