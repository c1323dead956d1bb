//! Lines as the device writes them, good and bad, and the framing of a byte
//! stream into lines.

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
        ("state open", Command::State(StatusValue::Open)),
        ("state members", Command::State(StatusValue::Members)),
        (
            "until 22:30",
            Command::Until(chrono::NaiveTime::from_hms_opt(22, 30, 0)),
        ),
        ("until -", Command::Until(None)),
        ("state closed\r", Command::State(StatusValue::Closed)),
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
        (b"state away", ParseError::BadState("away".into())),
        (b"until 24:00", ParseError::BadUntil("24:00".into())),
        (b"until 9:30", ParseError::BadUntil("9:30".into())),
        (b"until 22:30:00", ParseError::BadUntil("22:30:00".into())),
        (b"state Open", ParseError::BadState("Open".into())),
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
