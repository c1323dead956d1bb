//! The miniprotocol: pure parsing of device lines and bounded line framing.
//!
//! A line is a command name and its arguments separated by spaces, ending in
//! `\n` (a trailing `\r` is ignored). Numbers are written as they are; text
//! is base64 of UTF-8.

use base64::Engine as _;
use bytes::{Buf, BytesMut};

use crate::record::StatusValue;
use crate::record::sensors::SensorKind;

/// Longest line accepted, without its `\n`.
pub const MAX_LINE: usize = 4096;
/// Largest sensor number (the original stored it in a 32-bit column).
pub const MAX_SENSOR: i64 = i32::MAX as i64;
/// Longest device message, in characters after decoding.
pub const MAX_MESSAGE: usize = 1000;

/// A command from the device.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `status 1` / `status 0`: the room is open / closed.
    Status(bool),
    /// `state open|members|closed`: one of the three states.
    State(StatusValue),
    /// `until HH:MM`: the room stays open until then (the next such time);
    /// `until -`: no longer said.
    Until(Option<chrono::NaiveTime>),
    /// `temperature <sensor:int> <value:decimal>`: a sample in °C.
    Temperature { sensor: i64, value: f64 },
    /// `sensor <kind> <id:int> <value:decimal>`: a sample of a sensor beyond
    /// temperature, within its kind's range (`door_locked`: `0` or `1`).
    Sensor {
        kind: SensorKind,
        sensor: i64,
        value: f64,
    },
    /// `message <base64>`: a message from the device.
    Message(String),
    /// `enter <id:int>`: member `id` arrives (keypad).
    Enter(i64),
    /// `leave <id:int>`: member `id` leaves (keypad).
    Leave(i64),
    /// `sound <id:int>`: play sound `id`.
    Sound(i64),
    /// `auth <token>` or `auth <key>`: the first line when a control token
    /// is configured, or of a registered device.
    Auth(String),
    /// `claim <code>`: a registered device's first line, once, to get its
    /// key.
    Claim(String),
}

/// Why a line was skipped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("empty line")]
    Empty,
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    #[error("`{command}` takes {expected} argument(s), got {got}")]
    Arguments {
        command: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} `{value}` is not an integer")]
    NotInteger { what: &'static str, value: String },
    #[error("status must be 0 or 1, got `{0}`")]
    BadStatus(String),
    #[error("state must be open, members or closed, got `{0}`")]
    BadState(String),
    #[error("until must be a time HH:MM or -, got `{0}`")]
    BadUntil(String),
    #[error("temperature `{0}` is not a decimal number")]
    NotDecimal(String),
    #[error("temperature {0} is outside -100..200 °C")]
    OutOfRange(String),
    #[error("sensor must lie in 0..={MAX_SENSOR}, got {0}")]
    SensorOutOfRange(i64),
    #[error(
        "unknown sensor kind `{0}` (humidity, carbondioxide, power_consumption, barometer, door_locked)"
    )]
    UnknownSensorKind(String),
    #[error("{kind} `{value}` is not a decimal number")]
    SensorNotDecimal { kind: &'static str, value: String },
    #[error("{kind} {value} is outside {range}")]
    SensorValueOutOfRange {
        kind: &'static str,
        value: String,
        range: &'static str,
    },
    #[error("message is not valid base64")]
    BadBase64,
    #[error("message is not valid UTF-8")]
    MessageNotUtf8,
    #[error("message is empty")]
    EmptyMessage,
    #[error("message has {0} characters; at most {MAX_MESSAGE} fit")]
    MessageTooLong(usize),
}

/// Parses one line (without its `\n`; a trailing `\r` is ignored).
pub fn parse_line(line: &[u8]) -> Result<Command, ParseError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let mut words = line.split(' ').filter(|w| !w.is_empty());
    let name = words.next().ok_or(ParseError::Empty)?;
    let args: Vec<&str> = words.collect();
    let expect = |command: &'static str, expected: usize| {
        if args.len() == expected {
            Ok(())
        } else {
            Err(ParseError::Arguments {
                command,
                expected,
                got: args.len(),
            })
        }
    };
    match name {
        "status" => {
            expect("status", 1)?;
            match args[0] {
                "1" => Ok(Command::Status(true)),
                "0" => Ok(Command::Status(false)),
                other => Err(ParseError::BadStatus(truncate(other))),
            }
        }
        "state" => {
            expect("state", 1)?;
            StatusValue::from_state(args[0])
                .map(Command::State)
                .ok_or_else(|| ParseError::BadState(truncate(args[0])))
        }
        "until" => {
            expect("until", 1)?;
            until(args[0]).map(Command::Until)
        }
        "temperature" => {
            expect("temperature", 2)?;
            let sensor = sensor(args[0])?;
            let value = decimal(args[1])?;
            Ok(Command::Temperature { sensor, value })
        }
        "sensor" => {
            expect("sensor", 3)?;
            let (kind, value) = sensor_value(args[0], args[2])?;
            let sensor = sensor(args[1])?;
            Ok(Command::Sensor {
                kind,
                sensor,
                value,
            })
        }
        "message" => {
            expect("message", 1)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(args[0])
                .map_err(|_| ParseError::BadBase64)?;
            let text = String::from_utf8(bytes).map_err(|_| ParseError::MessageNotUtf8)?;
            Ok(Command::Message(message_text(text)?))
        }
        "enter" => {
            expect("enter", 1)?;
            Ok(Command::Enter(integer("user id", args[0])?))
        }
        "leave" => {
            expect("leave", 1)?;
            Ok(Command::Leave(integer("user id", args[0])?))
        }
        "sound" => {
            expect("sound", 1)?;
            Ok(Command::Sound(integer("sound id", args[0])?))
        }
        "auth" => {
            expect("auth", 1)?;
            Ok(Command::Auth(args[0].to_string()))
        }
        "claim" => {
            expect("claim", 1)?;
            Ok(Command::Claim(args[0].to_string()))
        }
        other => Err(ParseError::UnknownCommand(truncate(other))),
    }
}

fn integer(what: &'static str, text: &str) -> Result<i64, ParseError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::NotInteger {
            what,
            value: truncate(text),
        });
    }
    text.parse().map_err(|_| ParseError::NotInteger {
        what,
        value: truncate(text),
    })
}

/// A time of day `HH:MM` (24 hours), or `-` for none.
pub fn until(text: &str) -> Result<Option<chrono::NaiveTime>, ParseError> {
    if text == "-" {
        return Ok(None);
    }
    let well_formed = text.len() == 5 && text.as_bytes()[2] == b':';
    well_formed
        .then(|| chrono::NaiveTime::parse_from_str(text, "%H:%M").ok())
        .flatten()
        .map(Some)
        .ok_or_else(|| ParseError::BadUntil(truncate(text)))
}

/// A sensor number as the device writes it, in `0..=MAX_SENSOR`.
pub fn sensor(text: &str) -> Result<i64, ParseError> {
    let sensor = integer("sensor", text)?;
    if !(0..=MAX_SENSOR).contains(&sensor) {
        return Err(ParseError::SensorOutOfRange(sensor));
    }
    Ok(sensor)
}

/// A message's text, when it is not blank and within [`MAX_MESSAGE`].
pub fn message_text(text: String) -> Result<String, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::EmptyMessage);
    }
    let chars = text.chars().count();
    if chars > MAX_MESSAGE {
        return Err(ParseError::MessageTooLong(chars));
    }
    Ok(text)
}

/// A decimal as the device writes it: digits, an optional sign and point,
/// within -100..200 °C.
pub fn decimal(text: &str) -> Result<f64, ParseError> {
    let value = plain_decimal(text).ok_or_else(|| ParseError::NotDecimal(truncate(text)))?;
    if !value.is_finite() || !(-100.0..=200.0).contains(&value) {
        return Err(ParseError::OutOfRange(truncate(text)));
    }
    Ok(value)
}

/// Digits, an optional sign and point: no exponent, `inf` or `NaN`.
fn plain_decimal(text: &str) -> Option<f64> {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_only(int) || !digits_only(frac) {
        return None;
    }
    text.parse().ok()
}

/// A sensor's kind and a sample's value as the device writes them, the
/// value within the kind's range.
pub fn sensor_value(kind: &str, text: &str) -> Result<(SensorKind, f64), ParseError> {
    let kind =
        SensorKind::from_name(kind).ok_or_else(|| ParseError::UnknownSensorKind(truncate(kind)))?;
    let value = plain_decimal(text).ok_or_else(|| ParseError::SensorNotDecimal {
        kind: kind.as_str(),
        value: truncate(text),
    })?;
    if !kind.accepts(value) {
        return Err(ParseError::SensorValueOutOfRange {
            kind: kind.as_str(),
            value: truncate(text),
            range: kind.range_text(),
        });
    }
    Ok((kind, value))
}

/// Keeps log lines short and escaped whatever the device sends.
fn truncate(text: &str) -> String {
    crate::escape::cut(text)
}

/// The line that answers a wrong, expired or used claim code, or a wrong or
/// revoked key, before the connection is closed.
pub const ERROR_AUTH: &str = "error auth";

/// The line `key <key>` that answers an accepted claim.
pub fn key_line(key: &str) -> String {
    format!("key {key}")
}

/// The line `status 0|1` sent to the device.
pub fn status_line(open: bool) -> String {
    format!("status {}", u8::from(open))
}

/// The line `message <base64>` sent to the device.
pub fn message_line(text: &str) -> String {
    format!(
        "message {}",
        base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
    )
}

/// Splits a byte stream into lines, holding at most [`MAX_LINE`] bytes of an
/// unfinished line.
#[derive(Debug, Default)]
pub struct LineFramer {
    buf: BytesMut,
    /// Bytes of `buf` already searched for `\n`: bytes arriving one at a
    /// time must not make each search start over (quadratic time).
    scanned: usize,
}

/// A line longer than [`MAX_LINE`] arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {MAX_LINE} bytes")]
pub struct Overlong;

impl LineFramer {
    pub fn new() -> Self {
        LineFramer {
            buf: BytesMut::with_capacity(1024),
            scanned: 0,
        }
    }

    /// Adds bytes read from the connection.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into, for callers that read in place.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next complete line without its `\n`, `None` when more bytes are
    /// needed, or [`Overlong`] when a line exceeds the limit (the caller
    /// closes the connection).
    pub fn next_line(&mut self) -> Result<Option<BytesMut>, Overlong> {
        let found = memchr::memchr(b'\n', &self.buf[self.scanned..]).map(|i| i + self.scanned);
        match found {
            Some(i) if i <= MAX_LINE => {
                let mut line = self.buf.split_to(i + 1);
                line.truncate(i);
                self.scanned = 0;
                Ok(Some(line))
            }
            Some(_) => Err(Overlong),
            None if self.buf.len() > MAX_LINE => Err(Overlong),
            None => {
                self.scanned = self.buf.len();
                Ok(None)
            }
        }
    }

    /// Bytes of an unfinished line, dropped at end of stream.
    pub fn pending(&self) -> usize {
        self.buf.remaining()
    }
}

#[cfg(test)]
mod tests;
