//! Webhooks (SPEC 16): each `[[webhook]]` follows the committed changes of
//! the kinds it asked for, from the outbox the writer fills in the change's
//! own transaction, and delivers them one at a time, in order, at least
//! once, across restarts.
//!
//! A delivery's way through bitsd, in four places:
//! 1. here, `settings` checks the `[[webhook]]` tables when the
//!    configuration loads;
//! 2. the writer's [`Route`]s (`state`'s `routes`): one outbox row per hook
//!    that follows a change, written in the change's own transaction, and
//!    removed through the writer once delivered or given up;
//! 3. the outbox table (`store`'s `outbox`);
//! 4. here again: one follower task per hook reads its rows in order,
//!    `request` builds each format's request, `client` sends it, `retry`
//!    decides when to try again; and `bitsd webhook test`.

pub mod client;
pub mod request;
pub mod retry;
pub mod settings;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::unix_time;
use crate::metrics::Metrics;
use crate::record::HookEvent;
use crate::report::Report;
use crate::state::{Route, Snapshot, State};
use crate::store::{self, OUTBOX_BATCH, OutboxRow};
use client::{Answer, Client, SendError};
use request::{Site, Subject};
use retry::Verdict;
use settings::Webhook;

/// Wait before reading the outbox again after the database failed.
const READ_RETRY: Duration = Duration::from_secs(5);

/// What the writer needs to know of the hooks: their names and events.
pub fn routes(hooks: &[Webhook]) -> Vec<Route> {
    hooks
        .iter()
        .map(|hook| Route {
            hook: Arc::from(hook.name.as_str()),
            events: hook.events.clone(),
        })
        .collect()
}

/// Starts one follower per hook, until `shutdown`.
pub fn spawn(
    hooks: &[Webhook],
    site: Site,
    state: &State,
    store: &store::Handle,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), SendError> {
    if hooks.is_empty() {
        return Ok(());
    }
    let client = Client::new()?;
    let site = Arc::new(site);
    for hook in hooks {
        let result = |r| metrics.webhook_deliveries(&hook.name, r);
        let follower = Follower {
            name: Arc::from(hook.name.as_str()),
            hook: hook.clone(),
            site: site.clone(),
            client: client.clone(),
            state: state.clone(),
            store: store.clone(),
            counts: Counts {
                delivered: result("delivered"),
                retried: result("retried"),
                failed: result("failed"),
                superseded: result("superseded"),
            },
            failing: false,
            delivered_status: None,
            quiet: crate::limits::QuietLog::default(),
            done: Vec::new(),
            shutdown: shutdown.clone(),
        };
        tracker.spawn(follower.run());
    }
    tracing::info!("{} webhook(s) following the changes", hooks.len());
    Ok(())
}

struct Counts {
    delivered: Counter,
    retried: Counter,
    failed: Counter,
    superseded: Counter,
}

/// How a row ended.
enum Done {
    Delivered,
    Failed,
    Superseded,
}

/// One hook's delivery loop.
struct Follower {
    name: Arc<str>,
    hook: Webhook,
    site: Arc<Site>,
    client: Client,
    state: State,
    store: store::Handle,
    counts: Counts,
    /// Whether the last try failed: logged once when it starts, once when
    /// it ends.
    failing: bool,
    /// The status this hook last delivered since bitsd started: with a
    /// debounce, a flap that ends where it began sends nothing.
    delivered_status: Option<String>,
    /// Final failures logged, at most ten in a row then one every six seconds.
    quiet: crate::limits::QuietLog,
    /// Rows handled and not yet removed: removed together, once the rows
    /// read are all handled or before a wait.
    done: Vec<i64>,
    shutdown: CancellationToken,
}

impl Follower {
    async fn run(mut self) {
        let mut watch = self.state.watch();
        // Rows up to here are handled, removed or about to be.
        let mut cursor = 0;
        let mut rows: VecDeque<OutboxRow> = VecDeque::new();
        loop {
            if rows.is_empty() {
                let seen = self.relevant(&watch.borrow_and_update());
                let (name, after) = (self.name.clone(), cursor);
                let read = self
                    .store
                    .run(move |db| db.outbox_after(&name, after, OUTBOX_BATCH))
                    .await;
                match read {
                    Ok(read) => rows.extend(read),
                    Err(e) => {
                        tracing::error!(
                            "webhook {}: cannot read its queue: {}",
                            self.name,
                            Report(&e)
                        );
                        if !self.pause(READ_RETRY).await {
                            return;
                        }
                        continue;
                    }
                }
                if rows.is_empty() {
                    // Asleep until a change this hook follows is committed.
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        changed = watch.wait_for(|s| self.relevant(s) != seen) => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                    continue;
                }
            }
            let Some(row) = rows.front() else { continue };
            let Some(done) = self.handle(row).await else {
                // Stopping: what is done need not be sent again.
                self.forget_done().await;
                return;
            };
            match done {
                Done::Delivered => self.counts.delivered.inc(),
                Done::Failed => self.counts.failed.inc(),
                Done::Superseded => self.counts.superseded.inc(),
            };
            cursor = row.id;
            self.done.push(row.id);
            rows.pop_front();
            if rows.is_empty() && !self.forget_done().await {
                return;
            }
        }
    }

    /// Has the writer remove the rows handled; false once it is gone.
    async fn forget_done(&mut self) -> bool {
        if self.done.is_empty() {
            return true;
        }
        let ids = std::mem::take(&mut self.done);
        self.state.forget(self.name.clone(), ids).await.is_ok()
    }

    /// What in the snapshot moves when a change this hook follows is
    /// committed: a status-only hook sleeps through a flood of samples.
    fn relevant(&self, snapshot: &Snapshot) -> u64 {
        if self.hook.follows(HookEvent::Temperature) {
            return snapshot.version;
        }
        let mut sum = 0;
        if self.hook.follows(HookEvent::Status) {
            sum += snapshot.status_version;
        }
        if self.hook.follows(HookEvent::Message) {
            sum += snapshot.message_version;
        }
        sum
    }

    async fn pause_secs(&self, seconds: f64) -> bool {
        self.pause(Duration::from_secs_f64(seconds)).await
    }

    /// Waits `wait`; false on shutdown.
    async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    /// Delivers `row`, waiting out its debounce and retrying as the answers
    /// allow; None on shutdown.
    async fn handle(&mut self, row: &OutboxRow) -> Option<Done> {
        if !retry::in_time(row.created, unix_time(), Duration::ZERO) {
            self.final_failure(row, "older than a day, not sent");
            return Some(Done::Failed);
        }
        if self.hook.debounce > 0 && row.status.is_some() {
            let due = row.created + self.hook.debounce as f64;
            let wait = due - unix_time();
            if wait > 0.0 && !(self.forget_done().await && self.pause_secs(wait).await) {
                return None;
            }
            // Every change stamped before `due` is committed once this returns.
            self.state.flush().await;
            let (name, id) = (self.name.clone(), row.id);
            let later = self
                .store
                .run(move |db| db.outbox_status_after(&name, id, due))
                .await;
            match later {
                Ok(true) => return Some(Done::Superseded),
                Ok(false) if row.status == self.delivered_status => {
                    return Some(Done::Superseded);
                }
                Ok(false) => {}
                // Sent rather than lost: at least once.
                Err(e) => tracing::error!(
                    "webhook {}: cannot look for later status changes: {}",
                    self.name,
                    Report(&e)
                ),
            }
        }
        let subject = Subject::Change {
            event: &row.event,
            record: &row.record,
        };
        let request = match request::build(&self.hook, &self.site, &row.delivery, subject) {
            Ok(request) => request,
            Err(e) => {
                tracing::error!(
                    "webhook {}: delivery {} dropped: {e}",
                    self.name,
                    row.delivery
                );
                return Some(Done::Failed);
            }
        };
        let mut failures = 0;
        loop {
            let sent = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                sent = self.client.send(&request) => sent,
            };
            let retry_after = match &sent {
                Ok(answer) => match retry::verdict(answer.status) {
                    Verdict::Delivered => {
                        if std::mem::take(&mut self.failing) {
                            tracing::info!("webhook {}: delivering again", self.name);
                        }
                        if row.status.is_some() {
                            self.delivered_status = row.status.clone();
                        }
                        return Some(Done::Delivered);
                    }
                    Verdict::Final => {
                        self.final_failure(row, &answer.summary());
                        return Some(Done::Failed);
                    }
                    Verdict::Retry => answer.retry_after,
                },
                Err(_) => None,
            };
            failures += 1;
            let why = why(&sent);
            let wait = retry::delay(failures, retry_after);
            if !retry::in_time(row.created, unix_time(), wait) {
                self.final_failure(row, &format!("{why}; given up a day after the event"));
                return Some(Done::Failed);
            }
            self.counts.retried.inc();
            if !std::mem::replace(&mut self.failing, true) {
                tracing::warn!(
                    "webhook {}: delivery failing ({why}); retrying with backoff",
                    self.name
                );
            }
            if !(self.forget_done().await && self.pause(wait).await) {
                return None;
            }
        }
    }

    /// Logged at a bounded rate: a receiver that refuses everything must not
    /// write a line per event (the metric counts each).
    fn final_failure(&self, row: &OutboxRow, why: &str) {
        if let Some(held) = self.quiet.pass() {
            tracing::warn!(
                "webhook {}: delivery {} failed for good: {why}{held}",
                self.name,
                row.delivery
            );
        }
    }
}

fn why(sent: &Result<Answer, SendError>) -> String {
    match sent {
        Ok(answer) => answer.summary(),
        Err(e) => Report(e).to_string(),
    }
}

/// Why `bitsd webhook test` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("no [[webhook]] tables in the configuration file")]
    NoHooks,
    #[error("no webhook named {name:?}; the configured ones are: {known}")]
    Unknown { name: String, known: String },
    #[error(transparent)]
    Client(#[from] SendError),
}

/// One hook's answer to a test delivery.
pub struct Tested {
    pub hook: String,
    pub answer: Result<Answer, SendError>,
}

impl Tested {
    pub fn ok(&self) -> bool {
        matches!(&self.answer, Ok(a) if retry::verdict(a.status) == Verdict::Delivered)
    }
}

/// `bitsd webhook test [NAME]`: one test delivery to each hook, or to the
/// one named, each answer in the configuration's order.
pub async fn test(
    hooks: &[Webhook],
    site: Site,
    name: Option<&str>,
) -> Result<Vec<Tested>, TestError> {
    if hooks.is_empty() {
        return Err(TestError::NoHooks);
    }
    let hooks: Vec<&Webhook> = match name {
        None => hooks.iter().collect(),
        Some(name) => match hooks.iter().find(|h| h.name == name) {
            Some(hook) => vec![hook],
            None => {
                let known: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
                return Err(TestError::Unknown {
                    name: name.to_string(),
                    known: known.join(", "),
                });
            }
        },
    };
    let client = Client::new()?;
    let mut answers = Vec::with_capacity(hooks.len());
    for hook in hooks {
        let delivery = format!("{:032x}", rand::random::<u128>());
        let answer = match request::build(hook, &site, &delivery, Subject::Test) {
            Ok(request) => client.send(&request).await,
            // A test subject is always built; nothing stored is read.
            Err(e) => Err(SendError::Network(e.to_string())),
        };
        answers.push(Tested {
            hook: hook.name.clone(),
            answer,
        });
    }
    Ok(answers)
}
