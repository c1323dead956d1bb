//! The `[[webhook]]` tables of the config file (SPEC 16): where each hook
//! posts, which events it follows and in what format. Checked whole when
//! the configuration loads, so a hook that could never deliver is a
//! configuration error.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

use crate::record::HookEvent;

/// Where Telegram's bot API is when a `telegram` hook gives no `url`.
pub const TELEGRAM_API: &str = "https://api.telegram.org";

/// How a hook's request is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookFormat {
    #[default]
    Json,
    Matrix,
    Telegram,
    Mastodon,
    Discord,
    Slack,
    /// A topic of an ntfy server.
    Ntfy,
    /// A Gotify server's application.
    Gotify,
}

impl HookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            HookFormat::Json => "json",
            HookFormat::Matrix => "matrix",
            HookFormat::Telegram => "telegram",
            HookFormat::Mastodon => "mastodon",
            HookFormat::Discord => "discord",
            HookFormat::Slack => "slack",
            HookFormat::Ntfy => "ntfy",
            HookFormat::Gotify => "gotify",
        }
    }
}

/// One `[[webhook]]` table.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Names the hook in logs, metrics and `bitsd webhook test NAME`.
    pub name: String,
    /// The receiver; for `matrix`, `telegram` and `mastodon` the server's base.
    pub url: Option<String>,
    #[serde(default = "default_events")]
    pub events: Vec<HookEvent>,
    #[serde(default)]
    pub format: HookFormat,
    /// Key of the `X-Bits-Signature` HMAC (`json`).
    pub secret: Option<String>,
    /// Seconds a status must stay the same before it is sent.
    #[serde(default)]
    pub debounce: u64,
    pub text_open: Option<String>,
    pub text_closed: Option<String>,
    pub text_message: Option<String>,
    /// Access token (`matrix`, `mastodon`, `ntfy`), bot token (`telegram`)
    /// or application token (`gotify`).
    pub token: Option<String>,
    /// The ntfy topic.
    pub topic: Option<String>,
    /// Matrix room id, `!abc:example.org`.
    pub room: Option<String>,
    /// Telegram chat: a number, or `@channel`.
    pub chat_id: Option<ChatId>,
}

fn default_events() -> Vec<HookEvent> {
    vec![HookEvent::Status]
}

/// Secrets stay out of logs: the configuration is printed in developer mode.
impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            // For discord and slack the URL is the credential.
            .field(
                "url",
                &self.url.as_deref().and_then(|u| {
                    let u = url::Url::parse(u).ok()?;
                    Some(format!("{}://{}/...", u.scheme(), u.host_str()?))
                }),
            )
            .field("events", &self.events)
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "..."))
            .field("debounce", &self.debounce)
            .field("token", &self.token.as_ref().map(|_| "..."))
            .field("room", &self.room)
            .field("chat_id", &self.chat_id)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// A Telegram chat id as the file may write it: `-100123` or `"@club"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ChatId {
    Number(i64),
    Name(String),
}

impl Webhook {
    /// The URL requests go to before the format adds its path.
    pub fn base_url(&self) -> &str {
        match (&self.url, self.format) {
            (Some(url), _) => url,
            (None, HookFormat::Telegram) => TELEGRAM_API,
            (None, _) => "",
        }
    }

    /// Whether the hook follows events of `kind`.
    pub fn follows(&self, kind: HookEvent) -> bool {
        self.events.contains(&kind)
    }

    /// What is wrong with the table, if anything.
    fn problem(&self) -> Option<String> {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_name {
            return Some("name: expected 1 to 64 letters, digits, `-`, `_` or `.`".into());
        }
        if self.url.is_none() && self.format != HookFormat::Telegram {
            return Some("url: missing".into());
        }
        if let Some(url) = &self.url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                _ => return Some(format!("url: `{url}` is not an http:// or https:// URL")),
            }
        }
        if self.events.is_empty() {
            return Some("events: expected at least one of status, message, temperature".into());
        }
        // Well inside the 24 hours a delivery is tried for.
        if self.debounce > 3600 {
            return Some("debounce: expected at most 3600 seconds".into());
        }
        let needs: &[(&str, bool)] = match self.format {
            HookFormat::Matrix => &[
                ("token", self.token.is_some()),
                ("room", self.room.is_some()),
            ],
            HookFormat::Telegram => &[
                ("token", self.token.is_some()),
                ("chat_id", self.chat_id.is_some()),
            ],
            HookFormat::Mastodon | HookFormat::Gotify => &[("token", self.token.is_some())],
            HookFormat::Ntfy => &[("topic", self.topic.is_some())],
            HookFormat::Json | HookFormat::Discord | HookFormat::Slack => &[],
        };
        if let Some((key, _)) = needs.iter().find(|(_, given)| !given) {
            return Some(format!(
                "{key}: missing, the {} format needs it",
                self.format.as_str()
            ));
        }
        if self.secret.is_some() && self.format != HookFormat::Json {
            return Some("secret: only the json format is signed".into());
        }
        None
    }
}

/// Reads the `webhook` key of the file, an array of tables; the error
/// names the hook and the key.
pub fn parse(value: toml::Value) -> Result<Vec<Webhook>, String> {
    let hooks = Vec::<Webhook>::deserialize(value).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        format!("webhook: {first}")
    })?;
    let mut names = BTreeSet::new();
    for (i, hook) in hooks.iter().enumerate() {
        let which = if hook.name.is_empty() {
            format!("webhook {}", i + 1)
        } else {
            format!("webhook {:?}", hook.name)
        };
        if let Some(problem) = hook.problem() {
            return Err(format!("{which}: {problem}"));
        }
        if !names.insert(hook.name.as_str()) {
            return Err(format!("{which}: name: used twice"));
        }
    }
    Ok(hooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Webhook>, String> {
        let mut table: toml::Table = text.parse().unwrap();
        let value = table.remove("webhook").unwrap();
        parse(value)
    }

    #[test]
    fn every_format_with_what_it_needs() {
        let hooks = read(
            r#"
            [[webhook]]
            name = "log"
            url = "http://127.0.0.1:9000/hook"
            events = ["status", "temperature"]
            secret = "s"
            debounce = 30
            [[webhook]]
            name = "room"
            format = "matrix"
            url = "https://matrix.example.org"
            token = "t"
            room = "!abc:example.org"
            [[webhook]]
            name = "channel"
            format = "telegram"
            token = "123:abc"
            chat_id = -1001234
            [[webhook]]
            name = "toot"
            format = "mastodon"
            url = "https://social.example"
            token = "t"
            [[webhook]]
            name = "d"
            format = "discord"
            url = "https://discord.com/api/webhooks/1/x"
            [[webhook]]
            name = "s"
            format = "slack"
            url = "https://hooks.slack.com/services/x"
            chat_id = "@club"
            "#,
        )
        .unwrap();
        assert_eq!(hooks.len(), 6);
        assert_eq!(hooks[0].events, [HookEvent::Status, HookEvent::Temperature]);
        assert_eq!(hooks[0].debounce, 30);
        assert_eq!(hooks[1].events, [HookEvent::Status], "the default");
        assert_eq!(hooks[2].base_url(), TELEGRAM_API);
        assert_eq!(hooks[2].chat_id, Some(ChatId::Number(-1001234)));
        assert_eq!(hooks[5].chat_id, Some(ChatId::Name("@club".into())));
        let shown = format!("{:?}", hooks[0]);
        assert!(!shown.contains("\"s\""), "{shown}");
    }

    #[test]
    fn bad_tables_name_the_hook_and_the_key() {
        let cases = [
            (
                "name = \"a b\"\nurl = \"http://h\"",
                "webhook \"a b\": name: ",
            ),
            ("name = \"a\"", "webhook \"a\": url: missing"),
            ("name = \"a\"\nurl = \"ftp://h\"", "webhook \"a\": url: "),
            ("name = \"a\"\nurl = \"http://h\"\nevents = []", "events: "),
            (
                "name = \"a\"\nurl = \"http://h\"\nevents = [\"door\"]",
                "webhook: unknown variant",
            ),
            (
                "name = \"a\"\nurl = \"http://h\"\nformat = \"irc\"",
                "webhook: unknown variant",
            ),
            (
                "name = \"a\"\nurl = \"http://h\"\ncolour = 1",
                "webhook: unknown field",
            ),
            (
                "name = \"a\"\nurl = \"http://h\"\nformat = \"matrix\"\ntoken = \"t\"",
                "room: missing, the matrix format needs it",
            ),
            (
                "name = \"a\"\nformat = \"telegram\"\ntoken = \"t\"",
                "chat_id: missing",
            ),
            (
                "name = \"a\"\nurl = \"http://h\"\nformat = \"slack\"\nsecret = \"s\"",
                "secret: ",
            ),
            (
                "name = \"a\"\nurl = \"http://h\"\ndebounce = -1",
                "webhook: ",
            ),
            ("url = \"http://h\"", "webhook: missing field `name`"),
        ];
        for (table, expected) in cases {
            let err = read(&format!("[[webhook]]\n{table}\n")).unwrap_err();
            assert!(err.contains(expected), "{table}: {err}");
        }
        let twice = "[[webhook]]\nname = \"a\"\nurl = \"http://h\"\n".repeat(2);
        assert_eq!(read(&twice).unwrap_err(), "webhook \"a\": name: used twice");
    }
}
