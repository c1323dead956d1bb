//! Web Push subscriptions as stored: what a subscriber may ask to be told,
//! and what bitsd keeps of them.

/// What a subscriber may ask to be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// The room opens (after `push_quiet` minutes closed).
    Open,
    /// A new message.
    Message,
}

impl Topic {
    pub const ALL: [Topic; 2] = [Topic::Open, Topic::Message];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Open => "open",
            Topic::Message => "message",
        }
    }

    pub fn parse(text: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// A subscription, checked: what bitsd keeps of a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub endpoint: String,
    /// The browser's P-256 public key, 65 bytes uncompressed, base64url.
    pub p256dh: String,
    /// The browser's 16-byte authentication secret, base64url.
    pub auth: String,
    /// Sorted, each once, at least one.
    pub topics: Vec<Topic>,
    /// `en` or `it`.
    pub lang: String,
}

/// A subscription sent in place of another, checked: what it does not
/// say is taken from the one it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    /// The topics sent, if any.
    pub topics: Option<Vec<Topic>>,
    /// The language sent (a code), if any.
    pub lang: Option<String>,
    /// The endpoint of the subscription it replaces.
    pub replaces: String,
}

impl Replacement {
    /// Whether its topics must come from the subscription it replaces.
    pub fn takes_topics(&self) -> bool {
        self.topics.is_none()
    }

    /// What to store, given the topics and language of the subscription
    /// replaced, if that one is stored: what was sent, else the replaced
    /// one's, else for the language `default_lang`; none without topics.
    pub fn taking(
        &self,
        replaced: Option<(Vec<Topic>, String)>,
        default_lang: &str,
    ) -> Option<Subscription> {
        let (old_topics, old_lang) = replaced.unzip();
        Some(Subscription {
            endpoint: self.endpoint.clone(),
            p256dh: self.p256dh.clone(),
            auth: self.auth.clone(),
            topics: self.topics.clone().or(old_topics)?,
            lang: self
                .lang
                .clone()
                .or(old_lang)
                .unwrap_or_else(|| default_lang.to_string()),
        })
    }
}

/// How many subscribe to each topic, as the push delivery last counted:
/// the writer stores no event nobody would be sent.
#[derive(Debug, Default)]
pub struct Subscribers {
    open: std::sync::atomic::AtomicU64,
    message: std::sync::atomic::AtomicU64,
}

impl Subscribers {
    fn of(&self, topic: Topic) -> &std::sync::atomic::AtomicU64 {
        match topic {
            Topic::Open => &self.open,
            Topic::Message => &self.message,
        }
    }

    pub fn set(&self, topic: Topic, n: u64) {
        self.of(topic)
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn any(&self, topic: Topic) -> bool {
        self.of(topic).load(std::sync::atomic::Ordering::Relaxed) > 0
    }
}
