//! `bitsd fake`: a simulated device and a plausible past, for development
//! and demos without hardware. `link` carries the device's lines over
//! plain TCP, TLS or a websocket.

mod link;

use std::time::Duration;

use anyhow::Context as _;
use chrono::{Datelike, Duration as Span, NaiveTime, Timelike};
use rand::Rng;
use tokio_rustls::TlsConnector;

use crate::clock::{Clock, LocalTime};
use crate::config::Config;
use crate::device::protocol;
use crate::record::{ModifiedBy, StatusChange, StatusValue, TemperatureSample};
use crate::store::{DEVICE_USER, Db};
use link::Link;
pub use link::{Dial, client_tls};

const MESSAGES: &[&str] = &[
    "Who left the soldering iron on?",
    "Pizza tonight, who is in?",
    "The 3D printer is free again",
    "Coffee is ready",
    "Meeting at 21:00 in the big room",
    "Somebody please water the plant",
];

/// How long bitsd has to answer a claim.
const CLAIM_PATIENCE: Duration = Duration::from_secs(10);
/// How long an `error auth` may take to answer a key or a token, which
/// bitsd accepts without a word: the device starts playing after that.
const REFUSAL_PATIENCE: Duration = Duration::from_secs(1);

/// Time between a refusal and the one more try: past bitsd's one check
/// a second per address.
const RECHECK_AFTER: Duration = Duration::from_millis(1500);

/// How the fake device proves who it is with its first line.
#[derive(Debug, Clone, PartialEq)]
pub enum Proof {
    /// No first line: the original device on a control port without a token.
    Nothing,
    /// `auth <token>`: the original device on a control port with a token.
    Token(String),
    /// `claim <code>`: a registered device pairing; bitsd answers its key.
    Claim(String),
    /// `auth <key>`: a registered device.
    Key(String),
}

/// bitsd answered the first line with `error auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("bitsd refused the claim code: wrong, expired or already used")]
    Claim,
    #[error("bitsd refused the key: wrong or revoked")]
    Key,
    #[error("bitsd refused the token: wrong")]
    Token,
    #[error("bitsd wants a first line that proves the device: give --token, --key or --claim")]
    Nothing,
}

impl Proof {
    /// The first line, if any.
    fn line(&self) -> Option<String> {
        match self {
            Proof::Nothing => None,
            Proof::Token(secret) | Proof::Key(secret) => Some(format!("auth {secret}")),
            Proof::Claim(code) => Some(format!("claim {code}")),
        }
    }

    fn refused(&self) -> Refused {
        match self {
            Proof::Nothing => Refused::Nothing,
            Proof::Token(_) => Refused::Token,
            Proof::Claim(_) => Refused::Claim,
            Proof::Key(_) => Refused::Key,
        }
    }
}

/// Plays the device against bitsd at `dial` until it closes the connection
/// or the process is stopped; reconnects after a failure (with the key a
/// claim gave). A refusal of the first line, or of bitsd's certificate,
/// ends it with an error: trying again would not help.
pub async fn device(
    dial: &Dial,
    mut proof: Proof,
    tls: Option<&TlsConnector>,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut second_try = false;
    loop {
        match play(dial, &mut proof, tls, interval).await {
            Ok(()) => {
                println!("bitsd closed the connection");
                return Ok(());
            }
            // bitsd refuses a check within a second of another from the
            // same address in the same words: one more try tells them apart.
            Err(e) if e.is::<Refused>() && !std::mem::replace(&mut second_try, true) => {
                println!("{e}; trying once more in {RECHECK_AFTER:?}");
                tokio::time::sleep(RECHECK_AFTER).await;
            }
            Err(e) if e.is::<Refused>() || link::bad_certificate(&e) => return Err(e),
            Err(e) => {
                eprintln!("fake device: {e:#}; trying again in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn play(
    dial: &Dial,
    proof: &mut Proof,
    tls: Option<&TlsConnector>,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut link = Link::connect(dial, tls).await?;
    println!("connected to {dial}");
    prove(&mut link, proof).await?;
    let mut room = Room::new();
    send(&mut link, protocol::status_line(room.open)).await?;
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                for line in room.step() {
                    send(&mut link, line).await?;
                }
            }
            line = link.recv() => match line? {
                Some(line) if line == protocol::ERROR_AUTH => return Err(proof.refused().into()),
                Some(line) => println!("< {line}"),
                None => return Ok(()),
            },
        }
    }
}

async fn send(link: &mut Link, line: String) -> anyhow::Result<()> {
    println!("> {line}");
    link.send(&line).await
}

/// Sends the first line, if any, and reads bitsd's answer: a claim's key
/// (printed as `key: <key>`, and kept for the next connections) or a
/// refusal.
async fn prove(link: &mut Link, proof: &mut Proof) -> anyhow::Result<()> {
    let Some(first) = proof.line() else {
        return Ok(());
    };
    send(link, first).await?;
    if let Proof::Claim(_) = proof {
        let answer = tokio::time::timeout(CLAIM_PATIENCE, link.recv())
            .await
            .with_context(|| format!("no answer to the claim within {CLAIM_PATIENCE:?}"))??;
        let Some(answer) = answer else {
            anyhow::bail!("bitsd closed the connection before answering the claim");
        };
        if answer == protocol::ERROR_AUTH {
            return Err(Refused::Claim.into());
        }
        let Some(key) = answer.strip_prefix("key ") else {
            anyhow::bail!("bitsd answered the claim with {answer:?}, not a key");
        };
        println!("key: {key}");
        *proof = Proof::Key(key.to_string());
        return Ok(());
    }
    match tokio::time::timeout(REFUSAL_PATIENCE, link.recv()).await {
        Err(_) => Ok(()),
        Ok(Ok(Some(line))) if line == protocol::ERROR_AUTH => Err(proof.refused().into()),
        Ok(Ok(Some(line))) => {
            println!("< {line}");
            Ok(())
        }
        Ok(Ok(None)) => anyhow::bail!("bitsd closed the connection after the first line"),
        Ok(Err(e)) => Err(e),
    }
}

/// The simulated room: two thermometers, a hygrometer and a CO2 meter
/// drifting, openings (some for members only) with the door's lock,
/// messages.
struct Room {
    open: bool,
    temperatures: [f64; 2],
    humidity: f64,
    carbon_dioxide: f64,
    rounds: u32,
}

impl Room {
    fn new() -> Room {
        Room {
            open: true,
            temperatures: [21.0, 19.5],
            humidity: 45.0,
            carbon_dioxide: 600.0,
            rounds: 0,
        }
    }

    /// The lines of one round: a sample per sensor, sometimes a status
    /// change or a message.
    fn step(&mut self) -> Vec<String> {
        let mut rng = rand::rng();
        self.rounds += 1;
        let mut lines = Vec::new();
        for (sensor, t) in self.temperatures.iter_mut().enumerate() {
            let target = if self.open { 22.0 } else { 18.0 };
            *t += (target - *t) * 0.02 + rng.random_range(-0.15..0.15);
            lines.push(format!("temperature {sensor} {:.2}", t));
        }
        // People breathe: CO2 climbs while the room is in use, and the air
        // is a little damper.
        let (co2, damp) = if self.open {
            (1100.0, 50.0)
        } else {
            (450.0, 42.0)
        };
        self.carbon_dioxide += (co2 - self.carbon_dioxide) * 0.05 + rng.random_range(-10.0..10.0);
        self.humidity += (damp - self.humidity) * 0.03 + rng.random_range(-0.3..0.3);
        lines.push(format!(
            "sensor humidity 0 {:.1}",
            self.humidity.clamp(0.0, 100.0)
        ));
        lines.push(format!(
            "sensor carbondioxide 0 {:.0}",
            self.carbon_dioxide.max(0.0)
        ));
        if self.rounds.is_multiple_of(20) && rng.random_bool(0.5) {
            self.open = !self.open;
            // One opening in four is for members only.
            if self.open && rng.random_bool(0.25) {
                lines.push("state members".to_string());
            } else {
                lines.push(protocol::status_line(self.open));
            }
            lines.push(format!("sensor door_locked 0 {}", u8::from(!self.open)));
        }
        if self.rounds.is_multiple_of(15) {
            let text = MESSAGES[rng.random_range(0..MESSAGES.len())];
            lines.push(protocol::message_line(text));
        }
        lines
    }
}

/// What `fake history` wrote.
#[derive(Debug, Default)]
pub struct Written {
    pub status_changes: usize,
    pub samples: usize,
    pub messages: usize,
}

/// Writes `days` plausible days ending yesterday: openings in the afternoon
/// and evening (fewer at weekends), a temperature sample per sensor every
/// ten minutes, a few messages. Today is left to the live device.
pub fn history(config: &Config, days: u32) -> anyhow::Result<Written> {
    let mut db = Db::open(&config.db_path, config.options.log_queries)
        .with_context(|| format!("cannot open database {}", config.db_path.display()))?;
    let device = db
        .user_by_name(DEVICE_USER)?
        .context("the device user is missing")?;
    let today = Clock::new(config.timezone).now().0.date();
    let mut rng = rand::rng();
    let mut written = Written::default();
    let batch = db.batch()?;
    for back in (1..=i64::from(days)).rev() {
        let day = today - Span::days(back);
        let weekend = day.weekday().num_days_from_monday() >= 5;
        let mut openings = Vec::new();
        if !weekend || rng.random_bool(0.4) {
            let open = 13 * 60 + rng.random_range(0..120);
            let close = 19 * 60 + rng.random_range(0..150);
            openings.push((open, close));
            if !weekend && rng.random_bool(0.3) {
                openings.insert(
                    0,
                    (
                        9 * 60 + rng.random_range(0..60),
                        12 * 60 + rng.random_range(0..30),
                    ),
                );
            }
        }
        let at = |minute: i64, second: u32| {
            let time = NaiveTime::from_hms_opt((minute / 60) as u32, (minute % 60) as u32, second)
                .unwrap_or(NaiveTime::MIN);
            LocalTime(day.and_time(time))
        };
        for (open, close) in &openings {
            for (minute, value) in [(*open, StatusValue::Open), (*close, StatusValue::Closed)] {
                batch.insert_status(&StatusChange {
                    timestamp: at(minute, rng.random_range(0..60)),
                    value,
                    modified_by: ModifiedBy::Bits,
                    device: None,
                    until: None,
                    person: None,
                })?;
                written.status_changes += 1;
            }
            if rng.random_bool(0.3) {
                let text = MESSAGES[rng.random_range(0..MESSAGES.len())];
                batch.insert_message(device.id, at(open + 30, 0), text, None)?;
                written.messages += 1;
            }
        }
        for minute in (0..24 * 60).step_by(10) {
            let inside = openings.iter().any(|(o, c)| (*o..*c).contains(&minute));
            let time = at(minute, 0);
            let daily = ((time.0.hour() as f64 - 15.0) / 24.0 * std::f64::consts::TAU).cos();
            for sensor in 0..2 {
                let base = if inside { 21.5 } else { 18.5 } - sensor as f64 * 1.2;
                batch.insert_temperature(&TemperatureSample {
                    timestamp: LocalTime(time.0 + Span::seconds(sensor)),
                    sensor,
                    value: ((base + daily + rng.random_range(-0.3..0.3)) * 10.0).round() / 10.0,
                    modified_by: ModifiedBy::Bits,
                    device: None,
                })?;
                written.samples += 1;
            }
        }
    }
    batch.commit()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_drifts_and_speaks_the_protocol() {
        let mut room = Room::new();
        let mut saw_status = false;
        let mut saw_message = false;
        let mut saw_sensor = false;
        for _ in 0..200 {
            for line in room.step() {
                let parsed = protocol::parse_line(line.as_bytes());
                assert!(parsed.is_ok(), "{line}: {parsed:?}");
                saw_status |= line.starts_with("status") || line.starts_with("state");
                saw_message |= line.starts_with("message");
                saw_sensor |= line.starts_with("sensor humidity");
            }
        }
        assert!(saw_message && saw_sensor);
        assert!(
            saw_status,
            "200 rounds flip the status at least once (p = 1 - 2^-10)"
        );
        assert!(room.temperatures.iter().all(|t| (10.0..30.0).contains(t)));
    }
}
