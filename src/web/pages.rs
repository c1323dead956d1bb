//! HTML pages: the homepage, the history, wiki pages, the 404 page of
//! unknown paths.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::App;
use super::auth::{MaybeMember, Xsrf, with_xsrf_cookie};
use super::client::Client;
use super::error::{Error, Result, not_found_page};
use super::html::{Chrome, render, status_class};
use super::lang::{self, Lang};
use super::readings::{self, ReadingView};
use crate::clock::LocalTime;
use crate::record::{ModifiedBy, StatusChange, StatusJson, StatusValue};
use crate::state::Snapshot;
use crate::wiki;
use crate::words::{
    self, AdminWords, AroundTime, HomeWords, LogWords, Moment, SensorWords, TimeWords, Trend,
    TrendWords,
};

/// Rows of the history per page, and the most a client may ask for.
const LOG_PAGE: u64 = 20;
const LOG_MAX: u64 = 1000;

pub fn router() -> Router<App> {
    Router::new()
        .route("/", get(home))
        .route("/blind", get(blind))
        .route("/log", get(log))
        .route("/{slug}", get(wiki_page))
}

struct SensorView {
    sensor: i64,
    label: String,
    value: String,
    at: Moment,
    trend: &'static TrendWords,
}

struct MessageView {
    user: String,
    at: Moment,
    text: String,
}

/// What a logged-in member's homepage adds: who, and the status toggle.
struct MemberBar {
    user: String,
    /// The anti-forgery token of the toggle's form.
    xsrf: String,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    chrome: Chrome,
    words: &'static HomeWords,
    /// The member's words: who is logged in, the toggle.
    admin: &'static AdminWords,
    open: bool,
    /// `open`, `closed`, or `unknown` before any status.
    status_class: &'static str,
    status_text: &'static str,
    /// Since when, by whom: the phrase around its time.
    status_since: Option<AroundTime>,
    /// Until when the room stays open, when somebody said.
    status_until: Option<String>,
    /// That the device which set the status has been gone too long: the
    /// phrase around its time.
    device_offline: Option<AroundTime>,
    /// The server's local time, from which the script tells how long ago.
    now: String,
    /// How many people are in the room, in words.
    people: String,
    /// The `named` members among them, for a logged-in member only.
    names: Vec<String>,
    member: Option<MemberBar>,
    sensors: Vec<SensorView>,
    /// The sensors beyond temperature, and their words.
    readings: Vec<ReadingView>,
    sensor_words: &'static SensorWords,
    message: Option<MessageView>,
    /// The words for the page script, safe inside a script element.
    words_json: &'static str,
    /// The `/data` JSON for the page script, safe inside a script element.
    data_json: String,
    /// The sensors' names by number, for the page script, likewise.
    names_json: String,
}

/// The homepage; names of the people present and the toggle only for a
/// `member`.
fn home_page(
    app: &App,
    lang: Lang,
    snapshot: &Snapshot,
    blind: bool,
    member: Option<MemberBar>,
) -> HomePage {
    let all = words::of(lang);
    let words = &all.home;
    let thresholds = &words::THRESHOLDS;
    let names = app.config.options.sensor_names();
    let open = snapshot.is_open();
    let status_class = status_class(snapshot);
    let (title, status_text) = match status_class {
        "unknown" => (words.title_unknown, words.status_unknown),
        "open" => (words.title_open, words.status_open),
        "members" => (words.title_members, words.status_members),
        _ => (words.title_closed, words.status_closed),
    };
    let title = words::fill(title, &[("space", app.config.space_name())]);
    let mut chrome = Chrome::new(app, lang, title);
    chrome.blind = blind;
    let now = app.state.clock().now();
    let times = &all.times;
    let status_since = snapshot
        .status
        .as_ref()
        .map(|s| words::since(all, &s.timestamp, &now, by_whom(words, s.modified_by)));
    HomePage {
        chrome,
        words,
        admin: &all.admin,
        open,
        status_class,
        status_text,
        status_since,
        status_until: snapshot
            .status
            .as_ref()
            .filter(|s| s.value.lets_members_in())
            .and_then(|s| s.until)
            .map(|until| words::until(words, &until, &now)),
        device_offline: snapshot
            .device_offline_since
            .map(|since| words::device_offline(all, &since, &now)),
        now: now.0.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        people: words::fill(
            words.people,
            &[("count", &snapshot.roster.counted().to_string())],
        ),
        names: if member.is_some() {
            snapshot.roster.named().into_iter().collect()
        } else {
            Vec::new()
        },
        member,
        sensors: snapshot
            .sensors
            .values()
            .map(|t| SensorView {
                sensor: t.sensor,
                label: names.get(t.sensor).map_or_else(
                    || words::fill(words.sensor, &[("sensor", &t.sensor.to_string())]),
                    str::to_string,
                ),
                value: words::fill(
                    words.degrees,
                    &[("value", &thresholds.fixed(t.value, words.decimal_point))],
                ),
                at: Moment::new(times, &t.timestamp, &now),
                trend: words.trend(trend(snapshot, t.sensor)),
            })
            .collect(),
        readings: readings::readings(
            &readings::Shown {
                home: words,
                sensors: &all.sensors,
                times,
                names,
            },
            snapshot,
            &now,
        ),
        sensor_words: &all.sensors,
        message: snapshot.message.as_ref().map(|m| MessageView {
            user: m.user.clone(),
            at: Moment::new(times, &m.timestamp, &now),
            text: m.text.clone(),
        }),
        words_json: words::script_json(lang),
        data_json: String::from_utf8_lossy(&snapshot.data_json).replace('<', "\\u003c"),
        names_json: serde_json::to_string(&names.0)
            .expect("names serialise")
            .replace('<', "\\u003c"),
    }
}

/// The direction of a sensor's last two samples among the recent ones.
fn trend(snapshot: &Snapshot, sensor: i64) -> Trend {
    let mut recent = snapshot.temperatures.iter().filter(|t| t.sensor == sensor);
    match (recent.next(), recent.next()) {
        (Some(last), before) => words::THRESHOLDS.trend(last.value, before.map(|b| b.value)),
        (None, _) => Trend::Steady,
    }
}

fn by_whom(words: &'static HomeWords, by: ModifiedBy) -> &'static str {
    match by {
        ModifiedBy::Bits => words.by_device,
        ModifiedBy::Web => words.by_web,
    }
}

async fn home(
    AxumState(app): AxumState<App>,
    lang: Lang,
    member: MaybeMember,
    client: Client,
    headers: HeaderMap,
) -> Result<Response> {
    home_for(&app, lang, member, &client, &headers, false)
}

async fn blind(
    AxumState(app): AxumState<App>,
    lang: Lang,
    member: MaybeMember,
    client: Client,
    headers: HeaderMap,
) -> Result<Response> {
    home_for(&app, lang, member, &client, &headers, true)
}

fn home_for(
    app: &App,
    lang: Lang,
    MaybeMember(member): MaybeMember,
    client: &Client,
    headers: &HeaderMap,
    blind: bool,
) -> Result<Response> {
    let snapshot = app.state.snapshot();
    let Some(user) = member else {
        let page = home_page(app, lang, &snapshot, blind, None);
        return Ok(render(StatusCode::OK, &page)?);
    };
    let xsrf = Xsrf::from_headers(headers);
    let bar = MemberBar {
        user: user.name,
        xsrf: xsrf.token.clone(),
    };
    let page = home_page(app, lang, &snapshot, blind, Some(bar));
    let mut response = render(StatusCode::OK, &page)?;
    // A member's page names them and may name others: kept out of shared
    // caches and out of the service worker's copies (the language layer
    // says that every page varies with the cookie).
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(with_xsrf_cookie(response, &xsrf, client))
}

struct LogRow {
    at: Moment,
    /// `open`, `closed` or `away`, for the style.
    class: &'static str,
    /// The status, and how long an opening lasted.
    value: String,
    /// Who: the device (with its name when it is a registered one) or the web.
    by: String,
}

#[derive(Template)]
#[template(path = "log.html")]
struct LogPage {
    chrome: Chrome,
    words: &'static LogWords,
    range: String,
    rows: Vec<LogRow>,
    newer: Option<String>,
    older: Option<String>,
}

/// The `?offset=N&limit=M&format=json|html` of `/log`.
#[derive(Debug, PartialEq, Eq)]
struct LogQuery {
    offset: u64,
    limit: u64,
    json: bool,
}

impl LogQuery {
    fn parse(params: &HashMap<String, String>) -> Result<LogQuery> {
        let number = |name: &str, default: u64| -> Result<u64> {
            match params.get(name) {
                None => Ok(default),
                Some(v) => v.trim().parse::<u64>().map_err(|_| {
                    Error::BadRequest(format!("{name} must be a non-negative integer, got {v:?}"))
                }),
            }
        };
        let offset = number("offset", 0)?;
        let limit = number("limit", LOG_PAGE)?;
        if limit == 0 {
            return Err(Error::BadRequest("limit must be at least 1".into()));
        }
        let json = match params.get("format").map(String::as_str) {
            None | Some("html") => false,
            Some("json") => true,
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "format must be json or html, got {other:?}"
                )));
            }
        };
        Ok(LogQuery {
            offset,
            limit: limit.min(LOG_MAX),
            json,
        })
    }
}

/// History of status changes, newest first.
async fn log(
    AxumState(app): AxumState<App>,
    lang: Lang,
    uri: Uri,
    query: std::result::Result<
        Query<HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response> {
    let Query(params) = query.map_err(|e| Error::BadRequest(e.body_text()))?;
    let q = LogQuery::parse(&params)?;
    // One row more, older than the page, tells whether its oldest opening
    // began before it; the end of its newest opening may be on a newer page.
    let (rows, older, end, total) = app
        .store
        .run(move |db| {
            let mut rows = db.status_log(q.offset, q.limit.saturating_add(1))?;
            let older = (rows.len() as u64 > q.limit).then(|| rows.pop()).flatten();
            let end = match rows.first() {
                Some(newest) if newest.value.is_open() && !q.json => {
                    db.status_end(newest.timestamp)?.map(|c| c.timestamp)
                }
                _ => None,
            };
            Ok((rows, older, end, db.status_count()?))
        })
        .await?;
    if q.json {
        let show_names = app.config.show_names();
        let log: Vec<StatusJson> = rows
            .iter()
            .map(|s| StatusJson::new(s, show_names))
            .collect();
        return Ok(axum::Json(serde_json::json!({ "log": log })).into_response());
    }
    let link = |offset: u64| format!("/log?offset={offset}&limit={}", q.limit);
    let words = &words::of(lang).log;
    let first = q.offset + 1;
    let range = words::fill(
        words.range,
        &[
            ("first", &first.to_string()),
            ("last", &(q.offset + rows.len() as u64).to_string()),
            ("total", &total.to_string()),
        ],
    );
    let times = &words::of(lang).times;
    let now = app.state.clock().now();
    let lasted = openings(&rows, older.as_ref(), end, &now);
    let page = LogPage {
        chrome: Chrome::page(&app, lang, words.title).keeping(uri.query()),
        words,
        range,
        newer: (q.offset > 0).then(|| link(q.offset.saturating_sub(q.limit))),
        older: (q.offset.saturating_add(q.limit) < total).then(|| link(q.offset + q.limit)),
        rows: rows
            .iter()
            .zip(lasted)
            .map(|(s, lasted)| log_row(words, times, s, lasted, &now))
            .collect(),
    };
    Ok(render(StatusCode::OK, &page)?)
}

/// How long an opening lasted, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lasted {
    Ended(i64),
    /// Still open `now`.
    SoFar(i64),
}

/// For each of `rows` (newest first), how long the opening it began
/// lasted: an `open` row after one that is not, until the next change that
/// is not `open`. `older` is the change before the oldest row, `end` the
/// first change after the newest row that is not `open`, if any.
fn openings(
    rows: &[StatusChange],
    older: Option<&StatusChange>,
    end: Option<LocalTime>,
    now: &LocalTime,
) -> Vec<Option<Lasted>> {
    let mut end = end;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            if !row.value.is_open() {
                end = Some(row.timestamp);
                return None;
            }
            let before = rows
                .get(i + 1)
                .or(if i + 1 == rows.len() { older } else { None });
            if before.is_some_and(|b| b.value.is_open()) {
                return None;
            }
            Some(match end {
                Some(end) => Lasted::Ended((end.0 - row.timestamp.0).num_seconds()),
                None => Lasted::SoFar((now.0 - row.timestamp.0).num_seconds()),
            })
        })
        .collect()
}

fn log_row(
    words: &'static LogWords,
    times: &TimeWords,
    s: &StatusChange,
    lasted: Option<Lasted>,
    now: &LocalTime,
) -> LogRow {
    let value = match s.value {
        StatusValue::Open => words.open,
        StatusValue::Members => words.members,
        StatusValue::Closed => words.closed,
        StatusValue::Away => words.away,
    };
    let value = match lasted {
        None => value.to_string(),
        Some(Lasted::Ended(seconds)) => words::fill(
            words.open_for,
            &[("duration", &words::duration(times, seconds))],
        ),
        Some(Lasted::SoFar(seconds)) => words::fill(
            words.open_so_far,
            &[("duration", &words::duration(times, seconds))],
        ),
    };
    LogRow {
        at: Moment::dated(times, &s.timestamp, now),
        class: s.value.as_str(),
        value,
        by: match (s.modified_by, &s.device) {
            (_, Some(name)) => format!("{} {name}", words.by_device),
            (ModifiedBy::Bits, None) => words.by_device.to_string(),
            (ModifiedBy::Web, None) => words.by_web.to_string(),
        },
    }
}

#[derive(Template)]
#[template(path = "page.html")]
struct WikiPage {
    chrome: Chrome,
    content: String,
}

/// A wiki page: in developer mode from disk (or built in), otherwise as
/// bootstrap stored it, or else the built-in page of that name.
async fn wiki_page(
    AxumState(app): AxumState<App>,
    lang: Lang,
    Path(slug): Path<String>,
) -> Result<Response> {
    let options = &app.config.options;
    let wanted = slug.clone();
    let page = if options.developer_mode {
        let folder = app.config.wiki_folder();
        tokio::task::spawn_blocking(move || {
            wiki::pages(folder.as_deref())
                .ok()
                .and_then(|pages| pages.into_iter().find(|p| p.slug == wanted))
        })
        .await
        .ok()
        .flatten()
    } else {
        match app.store.run(move |db| db.page(&wanted)).await? {
            Some(page) => Some(page),
            None => wiki::built_in_page(&slug),
        }
    };
    let Some(page) = page else {
        return Ok(not_found_page(not_found_chrome(&app, lang)));
    };
    let content = wiki::render(&page.body, options.mdescape);
    let page = WikiPage {
        chrome: Chrome::page(&app, lang, &page.title),
        content,
    };
    Ok(render(StatusCode::OK, &page)?)
}

/// The 404 page, for any unknown path.
pub async fn not_found(AxumState(app): AxumState<App>, uri: Uri, headers: HeaderMap) -> Response {
    not_found_in(&app, &uri, &headers)
}

/// The 404 page in the language of the request of `uri` and `headers`.
pub fn not_found_in(app: &App, uri: &Uri, headers: &HeaderMap) -> Response {
    let lang = lang::lenient(uri, headers, app.config.options.default_language);
    not_found_page(not_found_chrome(app, lang))
}

fn not_found_chrome(app: &App, lang: Lang) -> Chrome {
    Chrome::page(app, lang, words::of(lang).not_found.title)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn log_query() {
        let q = LogQuery::parse(&params(&[])).unwrap();
        assert_eq!(
            q,
            LogQuery {
                offset: 0,
                limit: 20,
                json: false
            }
        );
        let q = LogQuery::parse(&params(&[
            ("offset", "40"),
            ("limit", "5000"),
            ("format", "json"),
        ]))
        .unwrap();
        assert_eq!(
            q,
            LogQuery {
                offset: 40,
                limit: 1000,
                json: true
            }
        );
        for bad in [
            ("offset", "-1"),
            ("offset", "x"),
            ("limit", "1.5"),
            ("limit", "0"),
            ("format", "xml"),
        ] {
            let err = LogQuery::parse(&params(&[bad])).unwrap_err();
            assert!(err.to_string().contains(bad.0), "{err}");
        }
    }
}
