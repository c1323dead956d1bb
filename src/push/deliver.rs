//! Delivery: the events the writer stored go to each subscriber of their
//! topic, in order per subscription, encrypted for its browser (RFC 8291)
//! and signed for its push service (VAPID, RFC 8292). Many subscriptions
//! are served at once; a slow or dead push service holds up only its own
//! subscriptions, retried with the webhooks' backoff for a day; 404 and 410
//! remove the subscription.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use web_push_native::jwt_simple::algorithms::ECDSAP256KeyPairLike as _;
use web_push_native::jwt_simple::claims::Claims;
use web_push_native::jwt_simple::prelude::Duration as JwtDuration;

use super::{Push, Topic};
use crate::clock::unix_time;
use crate::metrics::Metrics;
use crate::report::Report;
use crate::state::{Snapshot, State};
use crate::store::{self, Pending, PushEvent};
use crate::webhook::client::{Client, SendError};
use crate::webhook::request::{Method, Request};
use crate::webhook::retry::{self, Verdict};
use crate::words::{self, Lang};

/// Subscriptions served at once.
const AT_ONCE: usize = 64;
/// How long a push service keeps a message for an offline browser.
const TTL: u64 = 3600;
/// How long the VAPID signature is valid.
const VAPID_VALID: Duration = Duration::from_secs(12 * 3600);
/// How long a signature is used again for the same push service and
/// contact: well inside its validity, and one signature serves every
/// subscriber of a push service.
const VAPID_REUSE: Duration = Duration::from_secs(3600);
/// Wait before reading the database again after it failed.
const READ_RETRY: Duration = Duration::from_secs(5);

/// What delivery needs besides the state.
pub struct Settings {
    pub space: String,
    /// `push_contact`, else the `[spaceapi]` email as `mailto:`, else
    /// `public_url`; none: each subscription's own origin.
    pub contact: Option<String>,
    pub allow_local: bool,
}

/// Counts of deliveries by result.
#[derive(Clone)]
struct Counts {
    delivered: Counter,
    retried: Counter,
    failed: Counter,
    gone: Counter,
}

/// The end of one subscription's turn.
struct Turn {
    id: i64,
    /// The last event handled (delivered, refused for good, or too old).
    handled: Option<i64>,
    /// 404 or 410: the subscription is no more.
    gone: bool,
    /// Try again then, after `failures` failures in a row.
    retry: Option<(Instant, u32)>,
}

/// Delivers pushes until `shutdown`.
pub async fn run(
    push: Arc<Push>,
    settings: Settings,
    state: State,
    store: store::Handle,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let client = match Client::public_only(settings.allow_local) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("push: cannot start the HTTP client: {}", Report(&e));
            return;
        }
    };
    let counts = Counts {
        delivered: metrics.push_deliveries("delivered"),
        retried: metrics.push_deliveries("retried"),
        failed: metrics.push_deliveries("failed"),
        gone: metrics.push_deliveries("gone"),
    };
    let sender = Arc::new(Sender {
        push: push.clone(),
        settings,
        client,
        counts,
        signed: Default::default(),
    });
    let mut watch = state.watch();
    // Subscriptions waiting to be tried again: when, and after how many
    // failures.
    let mut backoff: HashMap<i64, (Instant, u32)> = HashMap::new();
    loop {
        let seen = relevant(&watch.borrow_and_update());
        let counted = store.run(|db| db.push_counts()).await;
        if let Ok(counts) = counted {
            for (topic, n) in counts {
                metrics.push_subscriptions(topic.as_str()).set(n as i64);
            }
        }
        let read = store
            .run(|db| {
                let pending = db.push_pending()?;
                let first = pending.iter().map(|p| p.delivered).min().unwrap_or(0);
                Ok((pending, db.push_events_after(first)?))
            })
            .await;
        let (pending, events) = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::error!("push: cannot read what to send: {}", Report(&e));
                if !pause(&shutdown, READ_RETRY).await {
                    return;
                }
                continue;
            }
        };
        let now = Instant::now();
        let due: Vec<Pending> = pending
            .into_iter()
            .filter(|p| backoff.get(&p.row.id).is_none_or(|(at, _)| *at <= now))
            .collect();
        let events = Arc::new(events);
        let mut turns = JoinSet::new();
        let mut handled = Vec::new();
        let mut gone = Vec::new();
        let mut queue = due.into_iter();
        let mut stopped = false;
        loop {
            while turns.len() < AT_ONCE
                && let Some(pending) = queue.next()
            {
                let failures = backoff.get(&pending.row.id).map_or(0, |(_, n)| *n);
                let (sender, events) = (sender.clone(), events.clone());
                turns.spawn(async move { sender.turn(pending, &events, failures).await });
            }
            let next = tokio::select! {
                _ = shutdown.cancelled() => { stopped = true; None }
                next = turns.join_next() => next,
            };
            let Some(turn) = next else { break };
            let Ok(turn) = turn else { continue };
            if let Some(event) = turn.handled {
                handled.push((turn.id, event));
            }
            if turn.gone {
                gone.push(turn.id);
                backoff.remove(&turn.id);
            } else {
                match turn.retry {
                    Some(retry) => {
                        backoff.insert(turn.id, retry);
                    }
                    None => {
                        backoff.remove(&turn.id);
                    }
                }
            }
        }
        // Also when nothing was sent: events older than a day go, whether
        // anybody subscribed or not.
        let progressed = !handled.is_empty() || !gone.is_empty();
        let before = unix_time() - retry::GIVE_UP_AFTER.as_secs_f64();
        let written = store
            .run(move |db| db.push_handled(&handled, &gone, before))
            .await;
        if let Err(e) = written {
            // Sent again later: at least once.
            tracing::error!("push: cannot record what was sent: {}", Report(&e));
        }
        // What was handled may have left more to send.
        if progressed && !stopped {
            continue;
        }
        if stopped {
            return;
        }
        let retry_at = backoff.values().map(|(at, _)| *at).min();
        let due = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = push.changed.notified() => {}
            _ = due => {}
            changed = watch.wait_for(|s| relevant(s) != seen) => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// What moves when an event to push may have been stored.
fn relevant(snapshot: &Snapshot) -> u64 {
    snapshot.status_version + snapshot.message_version
}

async fn pause(shutdown: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Sends pushes; shared by the turns.
struct Sender {
    push: Arc<Push>,
    settings: Settings,
    client: Client,
    counts: Counts,
    /// The `Authorization` made for each (push service origin, contact),
    /// and when.
    signed: std::sync::Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl Sender {
    /// Sends `pending` its events in order, until one needs trying again.
    async fn turn(&self, pending: Pending, events: &[PushEvent], failures: u32) -> Turn {
        let id = pending.row.id;
        let mut turn = Turn {
            id,
            handled: None,
            gone: false,
            retry: None,
        };
        let subscription = &pending.row.subscription;
        let mine = events
            .iter()
            .filter(|e| e.id > pending.delivered && subscription.topics.contains(&e.topic));
        for event in mine {
            if !retry::in_time(event.created, unix_time(), Duration::ZERO) {
                self.counts.failed.inc();
                turn.handled = Some(event.id);
                continue;
            }
            let request = match self.request(&pending, event) {
                Ok(request) => request,
                Err(why) => {
                    tracing::warn!("push: subscription {id} dropped: {why}");
                    turn.gone = true;
                    return turn;
                }
            };
            let sent = self.client.send(&request).await;
            let retry_after = match &sent {
                Ok(answer) if matches!(answer.status, 404 | 410) => {
                    self.counts.gone.inc();
                    turn.gone = true;
                    return turn;
                }
                Ok(answer) => match retry::verdict(answer.status) {
                    Verdict::Delivered => {
                        self.counts.delivered.inc();
                        turn.handled = Some(event.id);
                        continue;
                    }
                    Verdict::Final => {
                        self.counts.failed.inc();
                        tracing::warn!(
                            "push: subscription {id} refused event {}: {}",
                            event.id,
                            answer.summary()
                        );
                        turn.handled = Some(event.id);
                        continue;
                    }
                    Verdict::Retry => answer.retry_after,
                },
                Err(SendError::Timeout | SendError::Network(_)) => None,
                Err(SendError::Client(_)) => None,
            };
            self.counts.retried.inc();
            let failures = failures + 1;
            let wait = retry::delay(failures, retry_after);
            if failures == 1
                && let Err(e) = &sent
            {
                tracing::info!("push: subscription {id} unreachable, trying again: {e}");
            }
            turn.retry = Some((Instant::now() + wait, failures));
            return turn;
        }
        // Every event is handled, those of other topics too.
        turn.handled = events
            .last()
            .map(|e| e.id)
            .filter(|&e| e > pending.delivered);
        turn
    }

    /// The encrypted, signed request of `event` for `pending`.
    fn request(&self, pending: &Pending, event: &PushEvent) -> Result<Request, String> {
        let subscription = &pending.row.subscription;
        let endpoint =
            super::subscription::check_endpoint(&subscription.endpoint, self.settings.allow_local)?;
        let key = URL_SAFE_NO_PAD
            .decode(&subscription.p256dh)
            .ok()
            .and_then(|k| web_push_native::p256::PublicKey::from_sec1_bytes(&k).ok())
            .ok_or("its p256dh is no longer a key")?;
        let auth = URL_SAFE_NO_PAD
            .decode(&subscription.auth)
            .ok()
            .filter(|a| a.len() == 16)
            .ok_or("its auth is no longer 16 bytes")?;
        let auth = web_push_native::Auth::clone_from_slice(&auth);
        let lang = Lang::from_code(&subscription.lang).unwrap_or_default();
        let payload = payload(&self.settings.space, lang, event);
        let body = web_push_native::encrypt(payload.into_bytes(), &key, &auth)
            .map_err(|e| format!("cannot encrypt for it: {e}"))?;
        let contact = self
            .settings
            .contact
            .clone()
            .unwrap_or_else(|| pending.origin.clone());
        let vapid = self.vapid(&endpoint, &contact)?;
        let (topic, urgency) = match event.topic {
            Topic::Open => ("status", "high"),
            Topic::Message => ("message", "normal"),
        };
        Ok(Request {
            method: Method::Post,
            url: endpoint,
            headers: vec![
                ("content-type", "application/octet-stream".into()),
                ("content-encoding", "aes128gcm".into()),
                ("ttl", TTL.to_string()),
                ("urgency", urgency.into()),
                ("topic", topic.into()),
                ("authorization", vapid),
            ],
            body,
        })
    }

    /// `vapid t=<JWT>, k=<public key>` for `endpoint`: the JWT's audience
    /// is the endpoint's origin (its port too), its subject `contact`.
    /// Made again after [`VAPID_REUSE`].
    fn vapid(&self, endpoint: &str, contact: &str) -> Result<String, String> {
        let url = url::Url::parse(endpoint).map_err(|_| "its endpoint is no URL")?;
        let audience = url.origin().ascii_serialization();
        let key = (audience, contact.to_string());
        let now = Instant::now();
        let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((header, at)) = signed.get(&key)
            && now.duration_since(*at) < VAPID_REUSE
        {
            return Ok(header.clone());
        }
        let claims = Claims::create(JwtDuration::from_secs(VAPID_VALID.as_secs()))
            .with_audience(&key.0)
            .with_subject(contact);
        let token = self
            .push
            .vapid
            .pair()
            .sign(claims)
            .map_err(|e| format!("cannot sign: {e}"))?;
        let header = format!("vapid t={token}, k={}", self.push.vapid.public_key());
        // Push services of subscribers come and go: the old ones are dropped.
        signed.retain(|_, (_, at)| now.duration_since(*at) < VAPID_REUSE);
        signed.insert(key, (header.clone(), now));
        Ok(header)
    }
}

/// The notification's JSON: `{"title", "body", "url": "/", "tag",
/// "timestamp"}` in `lang`.
pub fn payload(space: &str, lang: Lang, event: &PushEvent) -> String {
    let words = &words::of(lang).push;
    let record: serde_json::Value = serde_json::from_str(&event.record).unwrap_or_default();
    let (title, body, tag) = match event.topic {
        Topic::Open => {
            let at = record["status"]["timestamp"].as_str().unwrap_or_default();
            let time = at.get(11..16).unwrap_or(at);
            (
                words::fill(words.open_title, &[("space", space)]),
                words::fill(words.open_body, &[("time", time)]),
                "status",
            )
        }
        Topic::Message => {
            let message = &record["message"];
            // The record holds them escaped for old clients' HTML.
            let user = crate::escape::html_unescape(message["user"].as_str().unwrap_or_default());
            let text = crate::escape::html_unescape(message["value"].as_str().unwrap_or_default());
            (
                space.to_string(),
                words::fill(words.message_body, &[("user", &user), ("text", &text)]),
                "message",
            )
        }
    };
    serde_json::json!({
        "title": title,
        "body": body,
        "url": "/",
        "tag": tag,
        "timestamp": (event.created * 1000.0) as i64,
    })
    .to_string()
}
