//! Each format's request for a delivery, built without I/O (SPEC 16).

use hmac::{Hmac, KeyInit as _, Mac as _};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use sha2::Sha256;

use super::settings::{ChatId, HookFormat, Webhook};
use crate::escape::html_unescape;

/// What a path segment may hold as it is: the unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Default text of a chat message when the room opens.
pub const TEXT_OPEN: &str = "{space} is open since {since}";
/// ... when it closes.
pub const TEXT_CLOSED: &str = "{space} is closed since {since}";
/// ... for a room opened for members only, unless `text_closed` is set
/// (old hooks keep their words: members only is closed to them).
pub const TEXT_MEMBERS: &str = "{space} is open for members only since {since}";
/// ... for an opening with a time somebody said it lasts until.
pub const TEXT_OPEN_UNTIL: &str = "{space} is open since {since}, until {until}";
/// ... and open for members only, with such a time.
pub const TEXT_MEMBERS_UNTIL: &str =
    "{space} is open for members only since {since}, until {until}";
/// ... for a message.
pub const TEXT_MESSAGE: &str = "{space}, message from {by}: {message}";

/// Facts about the space every delivery names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// `[spaceapi] space`, or `BITS`.
    pub space: String,
    /// `[spaceapi] url`, or empty.
    pub url: String,
}

impl Site {
    pub fn new(space: &str, url: Option<&str>) -> Site {
        Site {
            space: space.to_string(),
            url: url.unwrap_or_default().to_string(),
        }
    }
}

/// What a delivery tells.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A committed change: its event name and its JSON as stored.
    Change { event: &'a str, record: &'a str },
    /// `bitsd webhook test`.
    Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
}

/// An HTTP request ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// A stored record bitsd cannot read back: the row cannot be delivered.
#[derive(Debug, thiserror::Error)]
#[error("the stored record is not a change bitsd knows")]
pub struct BadRecord;

/// The request that delivers `subject` to `hook` under the id `delivery`.
pub fn build(
    hook: &Webhook,
    site: &Site,
    delivery: &str,
    subject: Subject<'_>,
) -> Result<Request, BadRecord> {
    let base = hook.base_url().trim_end_matches('/');
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("x-bits-delivery", delivery.to_string()),
    ];
    let token = hook.token.as_deref().unwrap_or_default();
    let (method, url, body) = match hook.format {
        HookFormat::Json => {
            let body = json_body(site, subject)?;
            if let Some(secret) = &hook.secret {
                headers.push(("x-bits-signature", signature(secret, body.as_bytes())));
            }
            (Method::Post, hook.base_url().to_string(), body)
        }
        HookFormat::Matrix => {
            let room = utf8_percent_encode(hook.room.as_deref().unwrap_or_default(), SEGMENT);
            let url =
                format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/{delivery}");
            headers.push(("authorization", format!("Bearer {token}")));
            let body = json!({"msgtype": "m.text", "body": text(hook, site, subject)?});
            (Method::Put, url, body.to_string())
        }
        HookFormat::Telegram => {
            let chat_id = match &hook.chat_id {
                Some(ChatId::Number(n)) => json!(n),
                Some(ChatId::Name(name)) => json!(name),
                None => Value::Null,
            };
            let url = format!("{base}/bot{token}/sendMessage");
            let body = json!({"chat_id": chat_id, "text": text(hook, site, subject)?});
            (Method::Post, url, body.to_string())
        }
        HookFormat::Mastodon => {
            headers.push(("authorization", format!("Bearer {token}")));
            headers.push(("idempotency-key", delivery.to_string()));
            let body = json!({"status": text(hook, site, subject)?});
            (
                Method::Post,
                format!("{base}/api/v1/statuses"),
                body.to_string(),
            )
        }
        HookFormat::Discord => {
            // A member's message saying `@everyone` pings nobody.
            let body = json!({
                "content": text(hook, site, subject)?,
                "allowed_mentions": {"parse": []},
            });
            (Method::Post, hook.base_url().to_string(), body.to_string())
        }
        HookFormat::Ntfy => {
            let topic = utf8_percent_encode(hook.topic.as_deref().unwrap_or_default(), SEGMENT);
            headers[0] = ("content-type", "text/plain; charset=utf-8".to_string());
            headers.push(("title", header_text(&site.space)));
            headers.push(("tags", tag(subject).to_string()));
            if !site.url.is_empty() {
                headers.push(("click", header_text(&site.url)));
            }
            if !token.is_empty() {
                headers.push(("authorization", format!("Bearer {token}")));
            }
            (
                Method::Post,
                format!("{base}/{topic}"),
                text(hook, site, subject)?,
            )
        }
        HookFormat::Gotify => {
            headers.push(("x-gotify-key", token.to_string()));
            let body = json!({
                "title": site.space,
                "message": text(hook, site, subject)?,
                "priority": 5,
            });
            (Method::Post, format!("{base}/message"), body.to_string())
        }
        HookFormat::Slack => {
            // Slack reads `<!channel>` and `<@U123>` as mentions and `&`
            // as the start of an escape.
            let text = text(hook, site, subject)?
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            let body = json!({"text": text});
            (Method::Post, hook.base_url().to_string(), body.to_string())
        }
    };
    Ok(Request {
        method,
        url,
        headers,
        body: body.into_bytes(),
    })
}

/// The emoji tag ntfy shows before a delivery's title: a circle of the
/// state's colour, a speech balloon for a message.
fn tag(subject: Subject<'_>) -> &'static str {
    let Subject::Change { record, .. } = subject else {
        return "white_check_mark";
    };
    let record: Value = serde_json::from_str(record).unwrap_or_default();
    if let Some(status) = record.get("status") {
        // `state` is there since members only; older rows have `value`.
        let state = status.get("state").or_else(|| status.get("value"));
        return match state.and_then(Value::as_str) {
            Some("open") => "green_circle",
            Some("members") => "purple_circle",
            _ => "red_circle",
        };
    }
    if record.get("message").is_some() {
        "speech_balloon"
    } else {
        "thermometer"
    }
}

/// `text` as a header value: as it is when it is printable ASCII, else as
/// an RFC 2047 encoded word (which ntfy reads), so no byte is lost or
/// refused.
fn header_text(text: &str) -> String {
    if text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return text.to_string();
    }
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    format!("=?UTF-8?B?{encoded}?=")
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `{"event": "status", "status": {...}, "space": "...", "url": "..."}`, the
/// record exactly as stored (as `/data` writes it).
fn json_body(site: &Site, subject: Subject<'_>) -> Result<String, BadRecord> {
    let tail = format!(
        "\"space\":{},\"url\":{}}}",
        json!(site.space),
        json!(site.url)
    );
    match subject {
        Subject::Test => Ok(format!("{{\"event\":\"test\",{tail}")),
        Subject::Change { event, record } => {
            // The stored record is `{"<kind>":{...}}`: its members go in as they are.
            serde_json::from_str::<serde_json::Map<String, Value>>(record)
                .map_err(|_| BadRecord)?;
            let members = record
                .trim()
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .ok_or(BadRecord)?;
            Ok(format!("{{\"event\":{},{members},{tail}", json!(event)))
        }
    }
}

/// The chat text of `subject` for `hook`.
pub fn text(hook: &Webhook, site: &Site, subject: Subject<'_>) -> Result<String, BadRecord> {
    let Subject::Change { record, .. } = subject else {
        return Ok(format!("test from bitsd for {}", site.space));
    };
    let record: serde_json::Map<String, Value> =
        serde_json::from_str(record).map_err(|_| BadRecord)?;
    let (kind, fields) = record.iter().next().ok_or(BadRecord)?;
    let field = |name: &str| match fields.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    // `2024-03-01 18:30:05` shows as `18:30`.
    let clock = |name: &str| {
        let time = field(name);
        time.get(11..16).unwrap_or(&time).to_string()
    };
    let since = clock("timestamp");
    let until = clock("until");
    let (open, members) = if until.is_empty() {
        (TEXT_OPEN, TEXT_MEMBERS)
    } else {
        (TEXT_OPEN_UNTIL, TEXT_MEMBERS_UNTIL)
    };
    let template = match kind.as_str() {
        "status" if field("value") == "open" => hook.text_open.as_deref().unwrap_or(open),
        "status" if field("state") == "members" => hook.text_closed.as_deref().unwrap_or(members),
        "status" => hook.text_closed.as_deref().unwrap_or(TEXT_CLOSED),
        "message" => hook.text_message.as_deref().unwrap_or(TEXT_MESSAGE),
        "tempint" => {
            return Ok(format!(
                "{}: {} °C on sensor {} at {since}",
                site.space,
                field("value"),
                field("sensor")
            ));
        }
        _ => return Err(BadRecord),
    };
    let state = field("state");
    let (status, by, message) = match kind.as_str() {
        "status" => {
            let status = if field("value") == "open" {
                "open"
            } else {
                "closed"
            };
            (status.to_string(), field("modifiedby"), String::new())
        }
        _ => (
            String::new(),
            html_unescape(&field("user")),
            html_unescape(&field("value")),
        ),
    };
    Ok(fill(template, |name| match name {
        "space" => Some(&site.space),
        "status" => Some(&status),
        "state" => Some(&state),
        "since" => Some(&since),
        "until" => Some(&until),
        "by" => Some(&by),
        "message" => Some(&message),
        "url" => Some(&site.url),
        _ => None,
    }))
}

/// `template` with each `{name}` that `value` knows replaced, in one pass:
/// a value is never read as a template itself.
fn fill<'a>(template: &str, value: impl Fn(&str) -> Option<&'a String>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .find('}')
            .and_then(|close| Some((close, value(&after[..close])?)))
        {
            Some((close, text)) => {
                out.push_str(text);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::HookEvent;

    const ID: &str = "0123456789abcdef0123456789abcdef";
    const OPEN: &str =
        r#"{"status":{"timestamp":"2026-03-01 18:30:05","modifiedby":"web","value":"open"}}"#;
    const MESSAGE: &str = r#"{"message":{"user":"ada","timestamp":"2026-03-01 18:31:00","value":"pizza &lt;3 &amp; {space}"}}"#;
    const TEMPERATURE: &str = r#"{"tempint":{"timestamp":"2026-03-01 18:32:00","value":21.5,"modifiedby":"BITS","sensor":2}}"#;

    fn hook(format: HookFormat) -> Webhook {
        Webhook {
            name: "h".into(),
            url: Some("https://example.org/base/".into()),
            events: vec![HookEvent::Status],
            format,
            secret: None,
            debounce: 0,
            text_open: None,
            text_closed: None,
            text_message: None,
            token: Some("tok".into()),
            room: Some("!room:example.org".into()),
            chat_id: Some(ChatId::Number(-100)),
            topic: Some("door".into()),
        }
    }

    fn site() -> Site {
        Site {
            space: "Lab \"42\"".into(),
            url: "https://lab.example".into(),
        }
    }

    fn change<'a>(event: &'a str, record: &'a str) -> Subject<'a> {
        Subject::Change { event, record }
    }

    fn body(request: &Request) -> Value {
        serde_json::from_slice(&request.body).unwrap()
    }

    fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
        let found = request.headers.iter().find(|(n, _)| *n == name);
        found.map(|(_, v)| v.as_str())
    }

    #[test]
    fn json_carries_the_record_as_stored_and_signs_the_body() {
        let mut hook = hook(HookFormat::Json);
        hook.secret = Some("key".into());
        let request = build(&hook, &site(), ID, change("status", OPEN)).unwrap();
        assert_eq!(request.method, Method::Post);
        assert_eq!(request.url, "https://example.org/base/");
        let text = std::str::from_utf8(&request.body).unwrap();
        assert!(
            text.starts_with(r#"{"event":"status","status":{"timestamp":"2026-03-01 18:30:05","#),
            "{text}"
        );
        assert_eq!(
            body(&request),
            json!({"event": "status", "status": {"timestamp": "2026-03-01 18:30:05",
                "modifiedby": "web", "value": "open"}, "space": "Lab \"42\"",
                "url": "https://lab.example"})
        );
        assert_eq!(header(&request, "x-bits-delivery"), Some(ID));
        assert_eq!(header(&request, "content-type"), Some("application/json"));
        assert_eq!(
            header(&request, "x-bits-signature").unwrap(),
            signature("key", &request.body)
        );
        let temperature = build(&hook, &site(), ID, change("temperature", TEMPERATURE)).unwrap();
        assert_eq!(body(&temperature)["event"], "temperature");
        assert_eq!(body(&temperature)["tempint"]["sensor"], 2);
        let test = build(&hook, &site(), ID, Subject::Test).unwrap();
        assert_eq!(
            body(&test),
            json!({"event": "test", "space": "Lab \"42\"", "url": "https://lab.example"})
        );
        hook.secret = None;
        let unsigned = build(&hook, &site(), ID, Subject::Test).unwrap();
        assert_eq!(header(&unsigned, "x-bits-signature"), None);
        for bad in ["", "[1]", "{\"status\":", "nope"] {
            assert!(
                build(&hook, &site(), ID, change("status", bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn chat_formats_put_the_text_where_each_service_wants_it() {
        let site = site();
        let open = change("status", OPEN);
        let matrix = build(&hook(HookFormat::Matrix), &site, ID, open).unwrap();
        assert_eq!(matrix.method, Method::Put);
        assert_eq!(
            matrix.url,
            format!(
                "https://example.org/base/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/{ID}"
            )
        );
        assert_eq!(header(&matrix, "authorization"), Some("Bearer tok"));
        assert_eq!(
            body(&matrix),
            json!({"msgtype": "m.text", "body": "Lab \"42\" is open since 18:30"})
        );

        let telegram = build(&hook(HookFormat::Telegram), &site, ID, open).unwrap();
        assert_eq!(telegram.url, "https://example.org/base/bottok/sendMessage");
        assert_eq!(
            body(&telegram),
            json!({"chat_id": -100, "text": "Lab \"42\" is open since 18:30"})
        );
        let mut by_name = hook(HookFormat::Telegram);
        by_name.url = None;
        by_name.chat_id = Some(ChatId::Name("@club".into()));
        let telegram = build(&by_name, &site, ID, open).unwrap();
        assert_eq!(telegram.url, "https://api.telegram.org/bottok/sendMessage");
        assert_eq!(body(&telegram)["chat_id"], "@club");

        let mastodon = build(&hook(HookFormat::Mastodon), &site, ID, open).unwrap();
        assert_eq!(mastodon.url, "https://example.org/base/api/v1/statuses");
        assert_eq!(header(&mastodon, "idempotency-key"), Some(ID));
        assert_eq!(header(&mastodon, "authorization"), Some("Bearer tok"));
        assert_eq!(body(&mastodon)["status"], "Lab \"42\" is open since 18:30");

        let discord = build(&hook(HookFormat::Discord), &site, ID, open).unwrap();
        assert_eq!(discord.url, "https://example.org/base/");
        assert_eq!(
            body(&discord),
            json!({"content": "Lab \"42\" is open since 18:30", "allowed_mentions": {"parse": []}})
        );
        let slack = build(&hook(HookFormat::Slack), &site, ID, Subject::Test).unwrap();
        assert_eq!(
            body(&slack),
            json!({"text": "test from bitsd for Lab \"42\""})
        );
        // A member's `<!channel>` is text, not a mention.
        let message = change("message", MESSAGE);
        let slack = build(&hook(HookFormat::Slack), &site, ID, message).unwrap();
        assert_eq!(
            body(&slack)["text"],
            "Lab \"42\", message from ada: pizza &lt;3 &amp; {space}"
        );

        // ntfy: the text as the body, the rest in headers; a title that is
        // not plain ASCII as an encoded word.
        let ntfy = build(&hook(HookFormat::Ntfy), &site, ID, open).unwrap();
        assert_eq!(ntfy.url, "https://example.org/base/door");
        assert_eq!(ntfy.body, b"Lab \"42\" is open since 18:30");
        assert_eq!(header(&ntfy, "title"), Some("Lab \"42\""));
        assert_eq!(header(&ntfy, "tags"), Some("green_circle"));
        assert_eq!(header(&ntfy, "authorization"), Some("Bearer tok"));
        let caffè = Site::new("Caffè 42", None);
        let ntfy = build(&hook(HookFormat::Ntfy), &caffè, ID, Subject::Test).unwrap();
        assert_eq!(header(&ntfy, "title"), Some("=?UTF-8?B?Q2FmZsOoIDQy?="));
        assert_eq!(header(&ntfy, "click"), None, "no url, no click");
        let mut anonymous = hook(HookFormat::Ntfy);
        anonymous.token = None;
        let ntfy = build(&anonymous, &site, ID, open).unwrap();
        assert_eq!(header(&ntfy, "authorization"), None);

        let gotify = build(&hook(HookFormat::Gotify), &site, ID, open).unwrap();
        assert_eq!(gotify.url, "https://example.org/base/message");
        assert_eq!(header(&gotify, "x-gotify-key"), Some("tok"));
        assert_eq!(
            body(&gotify),
            json!({"title": "Lab \"42\"", "message": "Lab \"42\" is open since 18:30", "priority": 5})
        );
    }

    #[test]
    fn members_only_has_words_of_its_own_and_a_state() {
        let mut hook = hook(HookFormat::Slack);
        let site = site();
        let members = OPEN.replace(
            "\"value\":\"open\"",
            "\"value\":\"closed\",\"state\":\"members\"",
        );
        assert!(members.contains("members"), "{members}");
        assert_eq!(
            text(&hook, &site, change("status", &members)).unwrap(),
            "Lab \"42\" is open for members only since 18:30"
        );
        hook.text_closed = Some("{space}: {state} ({status})".into());
        assert_eq!(
            text(&hook, &site, change("status", &members)).unwrap(),
            "Lab \"42\": members (closed)"
        );
    }

    #[test]
    fn an_until_is_said_when_there_is_one() {
        let mut hook = hook(HookFormat::Slack);
        let site = site();
        let until = OPEN.replace(
            "\"value\":\"open\"",
            "\"value\":\"open\",\"state\":\"open\",\"until\":\"2026-03-01 22:30:00\"",
        );
        assert_eq!(
            text(&hook, &site, change("status", &until)).unwrap(),
            "Lab \"42\" is open since 18:30, until 22:30"
        );
        let members = until.replace("\"state\":\"open\"", "\"state\":\"members\"");
        let members = members.replacen("\"value\":\"open\"", "\"value\":\"closed\"", 1);
        assert_eq!(
            text(&hook, &site, change("status", &members)).unwrap(),
            "Lab \"42\" is open for members only since 18:30, until 22:30"
        );
        // A template of the club's own: `{until}` is empty when none was said.
        hook.text_open = Some("{space} open ({until})".into());
        assert_eq!(
            text(&hook, &site, change("status", &until)).unwrap(),
            "Lab \"42\" open (22:30)"
        );
        assert_eq!(
            text(&hook, &site, change("status", OPEN)).unwrap(),
            "Lab \"42\" open ()"
        );
    }

    #[test]
    fn templates_fill_each_placeholder_once() {
        let mut hook = hook(HookFormat::Slack);
        hook.text_closed = Some("{status} by {by} at {since} {url} {nope} {".into());
        hook.text_message = Some("{by}: {message} ({space})".into());
        let site = site();
        let closed = OPEN.replace("\"open\"", "\"closed\"");
        assert_eq!(
            text(&hook, &site, change("status", &closed)).unwrap(),
            "closed by web at 18:30 https://lab.example {nope} {"
        );
        // Raw text, and `{space}` written by a member stays as written.
        assert_eq!(
            text(&hook, &site, change("message", MESSAGE)).unwrap(),
            "ada: pizza <3 & {space} (Lab \"42\")"
        );
        let plain = self::hook(HookFormat::Slack);
        assert_eq!(
            text(&plain, &site, change("message", MESSAGE)).unwrap(),
            "Lab \"42\", message from ada: pizza <3 & {space}"
        );
        // The author is escaped in the record like the text, for old
        // clients; a chat gets both as written.
        let quoted = MESSAGE.replace("\"ada\"", "\"o&#39;neil &amp; co\"");
        assert_eq!(
            text(&plain, &site, change("message", &quoted)).unwrap(),
            "Lab \"42\", message from o'neil & co: pizza <3 & {space}"
        );
        assert_eq!(
            text(&plain, &site, change("temperature", TEMPERATURE)).unwrap(),
            "Lab \"42\": 21.5 °C on sensor 2 at 18:32"
        );
    }

    #[test]
    fn unescaping_undoes_the_escaping() {
        for raw in ["<b>&amp;</b> \"q\" 'a'", "&", "&&;", "plain", "&#39", ""] {
            assert_eq!(html_unescape(&crate::escape::html_escape(raw)), raw);
        }
        assert_eq!(html_unescape("&unknown; &lt"), "&unknown; &lt");
    }
}
