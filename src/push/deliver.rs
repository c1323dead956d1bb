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
const AT_ONCE: usize = 128;
/// How long a push service keeps a message for an offline browser.
const TTL: u64 = 3600;
/// How long the VAPID signature is valid.
const VAPID_VALID: Duration = Duration::from_secs(12 * 3600);
/// How long a signature is used again for the same push service and
/// contact: well inside its validity, and one signature serves every
/// subscriber of a push service.
const VAPID_REUSE: Duration = Duration::from_secs(3600);
/// Most events read at once: a subscriber far behind gets them a batch
/// at a time, and memory stays bounded whatever is queued.
const EVENTS_READ: usize = 256;
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
#[derive(Debug)]
struct Turn {
    id: i64,
    /// Whether its push service answered at all.
    answered: bool,
    /// The last event handled (delivered, refused for good, or too old).
    handled: Option<i64>,
    /// 404 or 410: the subscription is no more.
    gone: bool,
    /// Try again then, after `failures` failures in a row.
    retry: Option<(Instant, u32)>,
}

impl Turn {
    /// A turn that came to nothing.
    fn unfinished(id: i64) -> Turn {
        Turn {
            id,
            answered: false,
            handled: None,
            gone: false,
            retry: None,
        }
    }
}

/// How far below bitsd's other threads delivery runs, in nice steps. A
/// storm of pushes is bound by encryption: it takes the CPU the web and the
/// devices leave, and the websocket fan-out goes on as if it were not there.
const NICENESS: libc::c_int = 10;

/// Starts delivering pushes until `shutdown`, on a runtime of its own whose
/// threads run `NICENESS` steps below the thread that calls this (at
/// most at the lowest, 19); `tracker` waits for it to end.
pub fn start(
    push: Arc<Push>,
    settings: Settings,
    state: State,
    store: store::Handle,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> std::io::Result<()> {
    let nice = (this_thread_nice() + NICENESS).min(LOWEST);
    let token = tracker.token();
    let (built_tx, built) = std::sync::mpsc::sync_channel(1);
    // The runtime is made and dropped on its own thread, never in the
    // caller's async context.
    std::thread::Builder::new()
        .name("bitsd-push".into())
        .spawn(move || {
            set_nice(nice);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .thread_name("bitsd-push")
                .on_thread_start(move || set_nice(nice))
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    let _ = built_tx.send(Ok(()));
                    runtime.block_on(run(push, settings, state, store, metrics, shutdown));
                }
                Err(e) => {
                    let _ = built_tx.send(Err(e));
                }
            }
            drop(token);
        })?;
    built
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the push thread ended at start")))
}

/// The lowest priority, as a nice value.
const LOWEST: libc::c_int = 19;

/// The calling thread's nice value.
fn this_thread_nice() -> libc::c_int {
    // SAFETY: on Linux the priority of PRIO_PROCESS 0 is the calling
    // thread's; errno is this thread's, cleared first as -1 is a valid
    // answer.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if nice == -1 && *libc::__errno_location() != 0 {
            0
        } else {
            nice
        }
    }
}

/// Sets the calling thread's nice value to `nice`. A thread inherits the
/// value of the thread that starts it, so a set value, unlike a step, is
/// the same however the runtime's threads come to be started.
fn set_nice(nice: libc::c_int) {
    // SAFETY: on Linux PRIO_PROCESS with a thread id changes that thread's
    // nice value only; gettid has no preconditions.
    let failed =
        unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) != 0 };
    if failed {
        tracing::warn!(
            "push: cannot lower the delivery's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Delivers pushes until `shutdown`.
///
/// One loop schedules every subscription's turn: at most `AT_ONCE` at
/// once and `PER_SERVICE` per push service, services that answered
/// lately first, so a push service that hangs holds only its own places.
/// What each turn handled is written in batches; new events are read as
/// soon as they are stored, while other turns are still under way.
async fn run(
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
    let mut plan = Plan::default();
    let mut turns: JoinSet<Turn> = JoinSet::new();
    // The subscription of each turn's task.
    let mut tasks: HashMap<tokio::task::Id, i64> = HashMap::new();
    let mut read = true;
    // The web counts what it adds and removes; the delivery counts at its
    // first read, and at the read after it removed subscriptions whose
    // push service said they were gone.
    let mut recount = true;
    loop {
        if read {
            read = false;
            let seen = relevant(&watch.borrow_and_update());
            if recount && let Ok(counted) = store.run(|db| db.push_counts()).await {
                push.count(counted, &metrics);
                recount = false;
            }
            let found = store
                .run(|db| {
                    let pending = db.push_pending()?;
                    let Some(first) = pending.iter().map(|p| p.delivered).min() else {
                        return Ok((pending, Vec::new()));
                    };
                    Ok((pending, db.push_events_after(first, EVENTS_READ)?))
                })
                .await;
            match found {
                Ok((pending, events)) => {
                    plan.more = events.len() == EVENTS_READ;
                    plan.take(pending, Arc::new(events), seen);
                }
                Err(e) => {
                    tracing::error!("push: cannot read what to send: {}", Report(&e));
                    plan.read_again = Some(Instant::now() + READ_RETRY);
                }
            }
        }
        while turns.len() < AT_ONCE
            && let Some((pending, events, failures)) = plan.next()
        {
            let (sender, id) = (sender.clone(), pending.row.id);
            let task = turns.spawn(async move { sender.turn(pending, &events, failures).await });
            tasks.insert(task.id(), id);
        }
        let unwritten = !plan.written.is_empty() || !plan.gone.is_empty();
        if plan.written.len() >= FLUSH_EVERY || (turns.is_empty() && unwritten) {
            recount |= flush(&store, &mut plan).await;
        }
        // A batch of events sent to everyone: the next batch.
        if turns.is_empty() && plan.waiting.is_empty() && plan.more {
            plan.more = false;
            read = true;
            continue;
        }
        let due = plan.next_due();
        let wake = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let seen = plan.seen;
        let woke = tokio::select! {
            _ = shutdown.cancelled() => Woke::Stop,
            Some(done) = turns.join_next_with_id(), if !turns.is_empty() => {
                let (task, turn) = match done {
                    Ok((task, turn)) => (task, Some(turn)),
                    Err(e) => (e.id(), None),
                };
                Woke::Turn(tasks.remove(&task), turn)
            }
            _ = push.changed.notified() => Woke::Read,
            _ = wake => Woke::Read,
            changed = watch.wait_for(|s| relevant(s) != seen) => match changed {
                Ok(_) => Woke::Read,
                Err(_) => Woke::Stop,
            },
        };
        match woke {
            Woke::Stop => {
                // What is under way is sent again after the restart.
                turns.abort_all();
                flush(&store, &mut plan).await;
                return;
            }
            Woke::Turn(_, Some(turn)) => plan.done(turn),
            // A turn that panicked: its subscription is tried again.
            Woke::Turn(Some(id), None) => {
                plan.done(Turn::unfinished(id));
                read = true;
            }
            Woke::Turn(None, None) => {}
            Woke::Read => read = true,
        }
    }
}

/// What the loop woke up for.
enum Woke {
    Stop,
    /// A turn ended: its subscription, and what it came to unless it
    /// panicked.
    Turn(Option<i64>, Option<Turn>),
    Read,
}

/// Subscriptions handled at most before their progress is written.
const FLUSH_EVERY: usize = 1000;
/// Turns under way at once for one push service (by origin).
const PER_SERVICE: usize = 64;

/// The schedule: subscriptions waiting for a turn, by push service, and
/// what their turns came to.
#[derive(Default)]
struct Plan {
    /// The events of the last read: every subscription's turn takes those
    /// after the last one it handled.
    latest: Arc<Vec<PushEvent>>,
    /// Subscriptions waiting, by push service origin.
    waiting: HashMap<String, std::collections::VecDeque<Pending>>,
    /// The ids of those waiting.
    queued: std::collections::HashSet<i64>,
    /// Turns under way, by subscription, and how many per push service.
    running: HashMap<i64, Pending>,
    under_way: HashMap<String, usize>,
    /// Subscriptions whose turn was under way when events were read: they
    /// wait again once it ends.
    stale: std::collections::HashSet<i64>,
    /// Push services that answered lately (any answer), so served first.
    answering: std::collections::HashSet<String>,
    /// Subscriptions failing: when to try again, after how many failures.
    backoff: HashMap<i64, (Instant, u32)>,
    /// The last event handled per subscription, not yet written.
    written: HashMap<i64, i64>,
    /// Subscriptions gone (404 or 410), not yet removed.
    gone: Vec<i64>,
    /// When to read again after the database failed.
    read_again: Option<Instant>,
    /// The state's version at the last read.
    seen: u64,
    /// Whether the last read stopped at `EVENTS_READ` events.
    more: bool,
}

impl Plan {
    /// Takes the events read and the subscriptions with events to send:
    /// those waiting already will send the new ones too, those under way
    /// wait again once their turn ends, those failing wait for their time.
    fn take(&mut self, pending: Vec<Pending>, events: Arc<Vec<PushEvent>>, seen: u64) {
        self.seen = seen;
        self.read_again = None;
        self.latest = events;
        // A subscription removed meanwhile is tried again no more.
        let ids: std::collections::HashSet<i64> = pending.iter().map(|p| p.row.id).collect();
        self.backoff.retain(|id, _| ids.contains(id));
        let now = Instant::now();
        for p in pending {
            let id = p.row.id;
            if self.running.contains_key(&id) {
                self.stale.insert(id);
                continue;
            }
            let failing = self.backoff.get(&id).is_some_and(|(at, _)| *at > now);
            if failing || self.queued.contains(&id) || self.gone.contains(&id) {
                continue;
            }
            self.queue(p);
        }
    }

    /// Puts `p` in its push service's queue if it has events to send.
    fn queue(&mut self, mut p: Pending) {
        if let Some(&done) = self.written.get(&p.row.id) {
            p.delivered = p.delivered.max(done);
        }
        if self.latest.last().is_none_or(|e| e.id <= p.delivered) {
            return;
        }
        self.queued.insert(p.row.id);
        let service = origin(&p.row.subscription.endpoint);
        self.waiting.entry(service).or_default().push_back(p);
    }

    /// The next turn to start: from a push service with a place free,
    /// those that answered lately first.
    fn next(&mut self) -> Option<(Pending, Arc<Vec<PushEvent>>, u32)> {
        let free = |service: &String, plan: &Plan| {
            plan.under_way.get(service).copied().unwrap_or(0) < PER_SERVICE
        };
        let service = self
            .waiting
            .keys()
            .filter(|s| free(s, self))
            .min_by_key(|s| !self.answering.contains(*s))?
            .clone();
        let queue = self.waiting.get_mut(&service)?;
        let pending = queue.pop_front()?;
        if queue.is_empty() {
            self.waiting.remove(&service);
        }
        *self.under_way.entry(service).or_default() += 1;
        let id = pending.row.id;
        self.queued.remove(&id);
        self.running.insert(id, pending.clone());
        let failures = self.backoff.get(&id).map_or(0, |(_, n)| *n);
        Some((pending, self.latest.clone(), failures))
    }

    /// Takes what a turn came to.
    fn done(&mut self, turn: Turn) {
        let Some(pending) = self.running.remove(&turn.id) else {
            return;
        };
        let service = origin(&pending.row.subscription.endpoint);
        if let Some(n) = self.under_way.get_mut(&service) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.under_way.remove(&service);
            }
        }
        if turn.answered {
            self.answering.insert(service);
        } else {
            self.answering.remove(&service);
        }
        if let Some(event) = turn.handled {
            self.written.insert(turn.id, event);
        }
        let stale = self.stale.remove(&turn.id);
        if turn.gone {
            self.gone.push(turn.id);
            self.backoff.remove(&turn.id);
            return;
        }
        match turn.retry {
            Some(retry) => {
                self.backoff.insert(turn.id, retry);
            }
            None => {
                self.backoff.remove(&turn.id);
                // Events came while it was under way.
                if stale {
                    self.queue(pending);
                }
            }
        }
    }

    /// When something is due: a subscription to try again, or a read.
    fn next_due(&self) -> Option<Instant> {
        let retry = self.backoff.values().map(|(at, _)| *at).min();
        match (retry, self.read_again) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Writes what was handled and removes the subscriptions gone; events
/// older than a day go too, whether anybody subscribed or not. Whether
/// subscriptions were removed.
async fn flush(store: &store::Handle, plan: &mut Plan) -> bool {
    let handled: Vec<(i64, i64)> = plan.written.iter().map(|(s, e)| (*s, *e)).collect();
    let gone = plan.gone.clone();
    let before = unix_time() - retry::GIVE_UP_AFTER.as_secs_f64();
    match store
        .run(move |db| db.push_handled(&handled, &gone, before))
        .await
    {
        Ok(()) => {
            plan.written.clear();
            !std::mem::take(&mut plan.gone).is_empty()
        }
        // Kept, and written with the next ones: at least once.
        Err(e) => {
            tracing::error!("push: cannot record what was sent: {}", Report(&e));
            false
        }
    }
}

/// The push service of `endpoint`: its origin.
fn origin(endpoint: &str) -> String {
    url::Url::parse(endpoint)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

/// What moves when an event to push may have been stored.
fn relevant(snapshot: &Snapshot) -> u64 {
    snapshot.status_version + snapshot.message_version
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
        let mut turn = Turn::unfinished(id);
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
            turn.answered |= sent.is_ok();
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
