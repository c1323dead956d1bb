//! A member's side of the tests: usermanage, and a browser that keeps its
//! cookies.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use reqwest::header;

use super::TestServer;

/// Adds a user with `usermanage add --password-stdin`.
pub fn add_user(server: &TestServer, name: &str, password: &str) {
    add_user_to(&server.db, name, password);
}

/// [`add_user`] for the database file `db`, whichever bitsd serves it.
pub fn add_user_to(db: &Path, name: &str, password: &str) {
    let out = usermanage_on(db, &["add", name, "--password-stdin"], Some(password));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Adds member `name` (password `pw`) with `visibility`; their id.
pub fn add_member(server: &TestServer, name: &str, visibility: &str) -> i64 {
    add_user(server, name, "pw");
    let out = usermanage(server, &["modify", name, "--visibility", visibility], None);
    assert!(out.status.success(), "{out:?}");
    rusqlite::Connection::open(&server.db)
        .unwrap()
        .query_row(
            r#"SELECT userid FROM "User" WHERE name = ?1"#,
            [name],
            |r| r.get(0),
        )
        .unwrap()
}

pub fn usermanage(server: &TestServer, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    usermanage_on(&server.db, args, stdin)
}

/// `usermanage` on the database file `db`, `stdin` written to it.
pub fn usermanage_on(db: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_usermanage"));
    command
        .args(["--config", "/dev/null", "--db"])
        .arg(db)
        .args(args);
    let stdin = stdin.map(|text| format!("{text}\n"));
    super::spawn_with_input(&mut command, stdin.as_deref())
        .wait_with_output()
        .unwrap()
}

/// A browser-like session: keeps cookies by hand, never follows redirects.
pub struct Session<'a> {
    pub server: &'a TestServer,
    pub cookies: Vec<(String, String)>,
    http: reqwest::Client,
}

impl<'a> Session<'a> {
    pub fn new(server: &'a TestServer) -> Self {
        Session {
            server,
            cookies: Vec::new(),
            http: server.http.clone(),
        }
    }

    /// A session whose connections come from the local address `from`
    /// (127.x.y.z), a client of its own for the rate limits.
    pub fn from_address(server: &'a TestServer, from: &str) -> Self {
        Session {
            server,
            cookies: Vec::new(),
            http: super::client_from(from),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn keep(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(header::SET_COOKIE) {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            let expired = text.contains("Max-Age=0");
            if !expired {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    pub async fn get(&mut self, path: &str) -> reqwest::Response {
        let r = self
            .http
            .get(self.server.url(path))
            .header(header::COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&r);
        r
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let r = self
            .http
            .post(self.server.url(path))
            .header(header::COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(&r);
        r
    }

    /// POSTs `form` with the session's `_xsrf` token, as the site's forms do.
    pub async fn submit(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let xsrf = self.cookie("_xsrf").expect("a page set _xsrf");
        let mut fields = vec![("_xsrf", xsrf.as_str())];
        fields.extend_from_slice(form);
        self.post(path, &fields).await
    }

    /// Waits until the page at `path` satisfies `check`; returns it.
    pub async fn wait_for(&mut self, path: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + super::PATIENCE;
        loop {
            let page = self.get(path).await.text().await.unwrap();
            if check(&page) {
                return page;
            }
            assert!(tokio::time::Instant::now() < deadline, "{path}: {page}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Logs in through the form; returns the response to the POST.
    pub async fn login(&mut self, user: &str, password: &str, next: &str) -> reqwest::Response {
        self.get(&format!("/login?next={next}")).await;
        let xsrf = self.cookie("_xsrf").expect("the login form sets _xsrf");
        self.post(
            "/login",
            &[
                ("username", user),
                ("password", password),
                ("next", next),
                ("_xsrf", &xsrf),
            ],
        )
        .await
    }
}

/// A session of the new member `name` (password `pw`), logged in through
/// the form on the way to `next`.
pub async fn logged_in_member<'a>(server: &'a TestServer, name: &str, next: &str) -> Session<'a> {
    add_user(server, name, "pw");
    let mut session = Session::new(server);
    let r = session.login(name, "pw", next).await;
    assert_eq!(r.status(), 303, "{name} logs in");
    session
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()[header::LOCATION].to_str().unwrap().to_string()
}
