//! The miniprotocol: pure parsing of device lines and bounded line framing.
//!
//! A line is a command name and its arguments separated by spaces, ending in
//! `\n` (a trailing `\r` is ignored). Numbers are written as they are; text
//! is base64 of UTF-8.

use base64::Engine as _;
use bytes::{Buf, BytesMut};

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
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn good_lines() {
        let hello = format!("message {}", b64("ciao <3"));
        let longest = format!("message {}", b64(&"é".repeat(1000)));
        let cases: Vec<(&str, Command)> = vec![
            (longest.as_str(), Command::Message("é".repeat(1000))),
            ("status 1", Command::Status(true)),
            ("status 0", Command::Status(false)),
            ("status 1\r", Command::Status(true)),
            ("  status   0 ", Command::Status(false)),
            (
                "temperature 0 21.5",
                Command::Temperature {
                    sensor: 0,
                    value: 21.5,
                },
            ),
            (
                "temperature 3 -7",
                Command::Temperature {
                    sensor: 3,
                    value: -7.0,
                },
            ),
            (
                "temperature 1 +.5",
                Command::Temperature {
                    sensor: 1,
                    value: 0.5,
                },
            ),
            (
                "temperature 2 200",
                Command::Temperature {
                    sensor: 2,
                    value: 200.0,
                },
            ),
            (
                "temperature 2147483647 20",
                Command::Temperature {
                    sensor: 2_147_483_647,
                    value: 20.0,
                },
            ),
            (
                "temperature 2 -100.0",
                Command::Temperature {
                    sensor: 2,
                    value: -100.0,
                },
            ),
            (&hello, Command::Message("ciao <3".into())),
            ("enter 42", Command::Enter(42)),
            ("leave 42", Command::Leave(42)),
            ("sound 3", Command::Sound(3)),
            ("auth s3cret", Command::Auth("s3cret".into())),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_line(line.as_bytes()), Ok(expected), "{line:?}");
        }
    }

    #[test]
    fn bad_lines() {
        let not_utf8 = format!(
            "message {}",
            base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe])
        );
        let blank = format!("message {}", b64("   "));
        let long = format!("message {}", b64(&"é".repeat(1001)));
        let cases: Vec<(&[u8], ParseError)> = vec![
            (b"", ParseError::Empty),
            (b"   \r", ParseError::Empty),
            (b"\xff\xfe", ParseError::NotUtf8),
            (b"open", ParseError::UnknownCommand("open".into())),
            (b"STATUS 1", ParseError::UnknownCommand("STATUS".into())),
            (
                b"status",
                ParseError::Arguments {
                    command: "status",
                    expected: 1,
                    got: 0,
                },
            ),
            (
                b"status 1 2",
                ParseError::Arguments {
                    command: "status",
                    expected: 1,
                    got: 2,
                },
            ),
            (b"status 2", ParseError::BadStatus("2".into())),
            (b"status on", ParseError::BadStatus("on".into())),
            (
                b"temperature 0",
                ParseError::Arguments {
                    command: "temperature",
                    expected: 2,
                    got: 1,
                },
            ),
            (
                b"temperature x 20",
                ParseError::NotInteger {
                    what: "sensor",
                    value: "x".into(),
                },
            ),
            (b"temperature -1 20", ParseError::SensorOutOfRange(-1)),
            (
                b"temperature 2147483648 20",
                ParseError::SensorOutOfRange(2_147_483_648),
            ),
            (
                b"\x1b[2Jopen",
                ParseError::UnknownCommand("\\u{1b}[2Jopen".into()),
            ),
            (b"temperature 0 hot", ParseError::NotDecimal("hot".into())),
            (b"temperature 0 NaN", ParseError::NotDecimal("NaN".into())),
            (b"temperature 0 inf", ParseError::NotDecimal("inf".into())),
            (b"temperature 0 1e2", ParseError::NotDecimal("1e2".into())),
            (b"temperature 0 .", ParseError::NotDecimal(".".into())),
            (
                b"temperature 0 200.1",
                ParseError::OutOfRange("200.1".into()),
            ),
            (b"temperature 0 -273", ParseError::OutOfRange("-273".into())),
            (
                b"temperature 99999999999999999999 1",
                ParseError::NotInteger {
                    what: "sensor",
                    value: "99999999999999999999".into(),
                },
            ),
            (b"message !!!", ParseError::BadBase64),
            (not_utf8.as_bytes(), ParseError::MessageNotUtf8),
            (blank.as_bytes(), ParseError::EmptyMessage),
            (long.as_bytes(), ParseError::MessageTooLong(1001)),
            (
                b"enter bob",
                ParseError::NotInteger {
                    what: "user id",
                    value: "bob".into(),
                },
            ),
            (
                b"leave",
                ParseError::Arguments {
                    command: "leave",
                    expected: 1,
                    got: 0,
                },
            ),
            (
                b"sound 1.5",
                ParseError::NotInteger {
                    what: "sound id",
                    value: "1.5".into(),
                },
            ),
            (
                b"auth",
                ParseError::Arguments {
                    command: "auth",
                    expected: 1,
                    got: 0,
                },
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(
                parse_line(line),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn long_words_are_truncated_in_errors() {
        let line = "x".repeat(1000);
        let Err(ParseError::UnknownCommand(word)) = parse_line(line.as_bytes()) else {
            panic!("expected an unknown command");
        };
        assert!(word.len() < 80);
    }

    #[test]
    fn lines_to_the_device() {
        assert_eq!(status_line(true), "status 1");
        assert_eq!(status_line(false), "status 0");
        assert_eq!(message_line("ciao"), format!("message {}", b64("ciao")));
    }

    #[test]
    fn framing_byte_by_byte() {
        let mut f = LineFramer::new();
        let mut lines = Vec::new();
        for b in b"status 1\ntemperature 0 2\n".iter() {
            f.extend(&[*b]);
            while let Some(line) = f.next_line().unwrap() {
                lines.push(line);
            }
        }
        assert_eq!(lines, vec![&b"status 1"[..], &b"temperature 0 2"[..]]);
        let mut f = LineFramer::new();
        for _ in 0..MAX_LINE {
            f.extend(b"x");
            assert_eq!(f.next_line(), Ok(None));
        }
        f.extend(b"x");
        assert_eq!(f.next_line(), Err(Overlong));
    }

    #[test]
    fn framing_splits_and_bounds() {
        let mut f = LineFramer::new();
        f.extend(b"status 1\nstat");
        assert_eq!(f.next_line().unwrap().as_deref(), Some(&b"status 1"[..]));
        assert_eq!(f.next_line().unwrap(), None);
        f.extend(b"us 0\r\n\n");
        assert_eq!(f.next_line().unwrap().as_deref(), Some(&b"status 0\r"[..]));
        assert_eq!(f.next_line().unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(f.pending(), 0);

        let mut f = LineFramer::new();
        f.extend(&vec![b'a'; MAX_LINE]);
        assert_eq!(f.next_line(), Ok(None), "exactly the limit is still fine");
        f.extend(b"\n");
        assert_eq!(f.next_line().unwrap().map(|l| l.len()), Some(MAX_LINE));

        let mut f = LineFramer::new();
        f.extend(&vec![b'a'; MAX_LINE + 1]);
        assert_eq!(f.next_line(), Err(Overlong));

        let mut f = LineFramer::new();
        let mut long = vec![b'a'; MAX_LINE + 10];
        long.push(b'\n');
        f.extend(&long);
        assert_eq!(f.next_line(), Err(Overlong));
    }

    #[test]
    fn sensor_lines() {
        let sample = |kind, sensor, value| {
            Ok(Command::Sensor {
                kind,
                sensor,
                value,
            })
        };
        let good = [
            (
                "sensor humidity 0 45.5",
                sample(SensorKind::Humidity, 0, 45.5),
            ),
            (
                "sensor carbondioxide 3 812",
                sample(SensorKind::CarbonDioxide, 3, 812.0),
            ),
            (
                "sensor power_consumption 1 1000000",
                sample(SensorKind::PowerConsumption, 1, 1e6),
            ),
            (
                "sensor barometer 0 300",
                sample(SensorKind::Barometer, 0, 300.0),
            ),
            (
                "sensor door_locked 2 1",
                sample(SensorKind::DoorLocked, 2, 1.0),
            ),
            (
                "sensor door_locked 2 0\r",
                sample(SensorKind::DoorLocked, 2, 0.0),
            ),
        ];
        for (line, expected) in good {
            assert_eq!(parse_line(line.as_bytes()), expected, "{line:?}");
        }
        let out = |kind, value: &str, range| ParseError::SensorValueOutOfRange {
            kind,
            value: value.into(),
            range,
        };
        let bad = [
            (
                "sensor humidity 0 100.5",
                out("humidity", "100.5", "0..100 %"),
            ),
            ("sensor humidity 0 -1", out("humidity", "-1", "0..100 %")),
            (
                "sensor carbondioxide 0 100001",
                out("carbondioxide", "100001", "0..100000 ppm"),
            ),
            (
                "sensor power_consumption 0 -5",
                out("power_consumption", "-5", "0..1000000 W"),
            ),
            (
                "sensor barometer 0 1200",
                out("barometer", "1200", "300..1100 hPa"),
            ),
            ("sensor door_locked 0 2", out("door_locked", "2", "0 or 1")),
            (
                "sensor door_locked 0 0.5",
                out("door_locked", "0.5", "0 or 1"),
            ),
            (
                "sensor radiation 0 1",
                ParseError::UnknownSensorKind("radiation".into()),
            ),
            (
                "sensor temperature 0 20",
                ParseError::UnknownSensorKind("temperature".into()),
            ),
            (
                "sensor humidity 0 wet",
                ParseError::SensorNotDecimal {
                    kind: "humidity",
                    value: "wet".into(),
                },
            ),
            (
                "sensor humidity 0 NaN",
                ParseError::SensorNotDecimal {
                    kind: "humidity",
                    value: "NaN".into(),
                },
            ),
            ("sensor humidity -1 40", ParseError::SensorOutOfRange(-1)),
            (
                "sensor humidity 40",
                ParseError::Arguments {
                    command: "sensor",
                    expected: 3,
                    got: 2,
                },
            ),
        ];
        for (line, expected) in bad {
            assert_eq!(parse_line(line.as_bytes()), Err(expected), "{line:?}");
        }
        assert_eq!(
            parse_line(b"sensor barometer 0 1200")
                .unwrap_err()
                .to_string(),
            "barometer 1200 is outside 300..1100 hPa"
        );
    }
}
