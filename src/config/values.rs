//! How an option's text becomes its value: one parser per kind of value,
//! shared by flags, variables and file keys, so all three accept the same
//! texts and refuse the others with the same reason.

use std::fmt::Display;
use std::net::IpAddr;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use chrono_tz::Tz;
use ipnet::IpNet;

/// From text to value; the error says what was expected.
pub(super) type Parse<T> = Arc<dyn Fn(&str) -> Result<T, String> + Send + Sync>;

/// How an option is written: its parser and how `--help` and the file show it.
pub struct Kind<T> {
    pub(super) parse: Parse<T>,
    /// The placeholder in `--help` (`<PATH>`); the option's name when unset.
    pub(super) value_name: Option<&'static str>,
    /// `--flag` alone means `true`.
    pub(super) switch: bool,
    /// The file may give a list of strings, read as one comma-separated text.
    pub(super) list: bool,
    /// The file may give a table of strings, read as `key=value,...`.
    pub(super) table: bool,
    /// The value may hold a password: an error does not repeat it.
    pub(super) secret: bool,
}

impl<T: 'static> Kind<T> {
    fn new(parse: impl Fn(&str) -> Result<T, String> + Send + Sync + 'static) -> Kind<T> {
        Kind {
            parse: Arc::new(parse),
            value_name: None,
            switch: false,
            list: false,
            table: false,
            secret: false,
        }
    }

    /// The same kind shown as `<NAME>` in `--help`.
    pub fn named(self, value_name: &'static str) -> Kind<T> {
        Kind {
            value_name: Some(value_name),
            ..self
        }
    }

    /// The same kind for an option that has no default: set or `None`.
    pub(super) fn optional(self) -> Kind<Option<T>> {
        let parse = self.parse;
        Kind {
            parse: Arc::new(move |text: &str| parse(text).map(Some)),
            value_name: self.value_name,
            switch: self.switch,
            list: self.list,
            table: self.table,
            secret: self.secret,
        }
    }
}

/// `true` or `false`; `--flag` alone is `true`.
pub fn switch() -> Kind<bool> {
    Kind {
        switch: true,
        ..Kind::new(|text| match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("expected `true` or `false`".into()),
        })
        .named("BOOL")
    }
}

/// Unsigned integers that options are counted in.
pub trait Whole: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static {
    const MIN: Self;
    const MAX: Self;
}

impl Whole for u16 {
    const MIN: u16 = u16::MIN;
    const MAX: u16 = u16::MAX;
}

impl Whole for u32 {
    const MIN: u32 = u32::MIN;
    const MAX: u32 = u32::MAX;
}

impl Whole for u64 {
    const MIN: u64 = u64::MIN;
    const MAX: u64 = u64::MAX;
}

/// A whole number within `range` (`..` for any the type holds); ranges
/// are written inclusive (`1..=16`), so the bounds read as the message says.
pub fn number<T: Whole>(range: impl RangeBounds<T>) -> Kind<T> {
    let low = match range.start_bound() {
        Bound::Included(&n) => n,
        Bound::Unbounded => T::MIN,
        Bound::Excluded(_) => unreachable!("a range never excludes its start"),
    };
    let high = match range.end_bound() {
        Bound::Included(&n) => n,
        Bound::Unbounded => T::MAX,
        Bound::Excluded(_) => panic!("write the range of an option inclusive: a..=b"),
    };
    Kind::new(move |text| match text.parse::<T>() {
        Ok(n) if low <= n && n <= high => Ok(n),
        _ => Err(format!("expected a number from {low} to {high}")),
    })
}

/// An IPv4 or IPv6 address.
pub fn address() -> Kind<IpAddr> {
    Kind::new(|text| {
        text.parse()
            .map_err(|_| "expected an IP address such as 127.0.0.1 or ::1".to_string())
    })
}

/// A file or folder path; empty is refused.
pub fn path() -> Kind<PathBuf> {
    Kind::new(|text| {
        if text.is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(PathBuf::from(text))
        }
    })
    .named("PATH")
}

/// Free text such as a token; empty is refused.
pub fn text() -> Kind<String> {
    Kind::new(|text| {
        if text.is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(text.to_string())
        }
    })
}

/// A unix file mode in octal, `0600`.
pub fn mode() -> Kind<u32> {
    Kind::new(|text| {
        let mode =
            u32::from_str_radix(text, 8).map_err(|_| format!("`{text}` is not an octal mode"))?;
        if mode > 0o7777 {
            return Err(format!("`{text}` is not a file mode (at most 7777)"));
        }
        Ok(mode)
    })
    .named("OCTAL")
}

/// Comma-separated addresses or CIDR blocks; a list of strings in the file.
pub fn addresses() -> Kind<Allowlist> {
    Kind {
        list: true,
        ..Kind::new(parse_allowlist).named("LIST")
    }
}

/// An SQLAlchemy URI of an SQLite file, `sqlite:///path`, as its path.
pub fn db_uri() -> Kind<PathBuf> {
    Kind::new(|text| match text.strip_prefix("sqlite:///") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(format!("`{text}` is not of the form sqlite:///path")),
    })
    .named("URI")
}

/// An IANA time zone, `Europe/Rome`.
pub fn timezone() -> Kind<Tz> {
    Kind::new(|text| {
        text.parse::<Tz>()
            .map_err(|_| format!("`{text}` is not an IANA time zone such as Europe/Rome"))
    })
    .named("ZONE")
}

/// Longest sensor name, in characters.
pub const MAX_SENSOR_NAME: usize = 64;
/// Most sensors that may be named.
pub const MAX_SENSOR_NAMES: usize = 256;

/// Names of the temperature sensors, by number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SensorNames(pub std::collections::BTreeMap<i64, String>);

impl SensorNames {
    pub fn get(&self, sensor: i64) -> Option<&str> {
        self.0.get(&sensor).map(String::as_str)
    }
}

/// `0=Lab,1=Outside`; in the file also a table, `{0 = "Lab", 1 = "Outside"}`.
pub fn sensor_names() -> Kind<SensorNames> {
    Kind {
        table: true,
        ..Kind::new(parse_sensor_names).named("NAMES")
    }
}

fn parse_sensor_names(text: &str) -> Result<SensorNames, String> {
    let mut names = std::collections::BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (number, name) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not of the form NUMBER=NAME"))?;
        let sensor = number
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=i64::from(i32::MAX)).contains(n))
            .ok_or_else(|| format!("`{}` is not a sensor number", number.trim()))?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_SENSOR_NAME {
            return Err(format!(
                "the name of sensor {sensor} must have 1 to {MAX_SENSOR_NAME} characters"
            ));
        }
        if names.insert(sensor, name.to_string()).is_some() {
            return Err(format!("sensor {sensor} is named twice"));
        }
    }
    if names.len() > MAX_SENSOR_NAMES {
        return Err(format!("at most {MAX_SENSOR_NAMES} sensors may be named"));
    }
    Ok(SensorNames(names))
}

/// A language the pages speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    It,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::It];

    /// Its ISO 639-1 code, as in `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::It => "it",
        }
    }

    /// The language of a code, in any case.
    pub fn from_code(code: &str) -> Option<Lang> {
        Lang::ALL
            .into_iter()
            .find(|l| l.code().eq_ignore_ascii_case(code))
    }
}

/// A language code bitsd speaks: `en` or `it`.
pub fn language() -> Kind<Lang> {
    Kind::new(|text| Lang::from_code(text).ok_or_else(|| "expected en or it".to_string()))
        .named("LANG")
}

/// An MQTT broker, `mqtt://[user[:password]@]host[:port]` or `mqtts://...`.
pub fn mqtt_url() -> Kind<MqttUrl> {
    Kind {
        secret: true,
        ..Kind::new(parse_mqtt_url).named("URL")
    }
}

/// An origin as the world reaches this server: `http` or `https`, a host and
/// an optional port; kept without a trailing `/`.
pub fn public_url() -> Kind<String> {
    Kind::new(|text| {
        let expected = || "expected an origin such as https://bits.example.org".to_string();
        let (scheme, rest) = text.split_once("://").ok_or_else(expected)?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let fine = matches!(scheme, "http" | "https")
            && !authority.is_empty()
            && !authority.contains(['/', '@', '?', '#'])
            && authority.bytes().all(|b| b.is_ascii_graphic());
        if !fine {
            return Err(expected());
        }
        Ok(format!("{scheme}://{authority}"))
    })
    .named("URL")
}

/// An MQTT topic prefix: levels separated by `/`, no wildcards.
pub fn topic() -> Kind<String> {
    Kind::new(|text| {
        if text.is_empty() || text.starts_with('/') || text.ends_with('/') {
            return Err("expected topic levels such as `bits` or `club/room`".into());
        }
        if text.contains(['+', '#', '\0']) {
            return Err("must not hold the wildcards `+` and `#`".into());
        }
        Ok(text.to_string())
    })
    .named("TOPIC")
}

/// Where the MQTT broker is and how bitsd logs in to it.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttUrl {
    /// `mqtts://`: TLS, checked against the system's certificate authorities.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Never prints the password: the configuration is logged in developer mode.
impl std::fmt::Debug for MqttUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// `mqtt://user@host:port`, without the password.
impl Display for MqttUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://")?;
        if let Some(user) = &self.username {
            write!(f, "{user}@")?;
        }
        write!(f, "{}:{}", self.host, self.port)
    }
}

fn parse_mqtt_url(text: &str) -> Result<MqttUrl, String> {
    let expected = "expected mqtt://[user:password@]host[:port] or mqtts://...";
    let url = url::Url::parse(text).map_err(|e| format!("{e}; {expected}"))?;
    let tls = match url.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => return Err(format!("unknown scheme `{other}`; {expected}")),
    };
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.trim_matches(['[', ']']).to_string(),
        _ => return Err(format!("no host; {expected}")),
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("only a host and a port; {expected}"));
    }
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| "the user or password is not UTF-8".to_string())
    };
    let username = match url.username() {
        "" => None,
        user => Some(decode(user)?),
    };
    let password = url.password().map(decode).transpose()?;
    Ok(MqttUrl {
        tls,
        host,
        port: url.port().unwrap_or(if tls { 8883 } else { 1883 }),
        username,
        password,
    })
}

/// Peers allowed to connect as the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist(pub Vec<IpNet>);

impl Allowlist {
    /// Whether `addr` (IPv4-mapped IPv6 counts as IPv4) is in the list.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.0.iter().any(|net| net.contains(&addr))
    }
}

fn parse_allowlist(text: &str) -> Result<Allowlist, String> {
    let nets = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            if part.contains('/') {
                IpNet::from_str(part)
                    .map(|net| net.trunc())
                    .map_err(|_| format!("`{part}` is not a CIDR block"))
            } else {
                IpAddr::from_str(part)
                    .map(IpNet::from)
                    .map_err(|_| format!("`{part}` is not an IP address"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if nets.is_empty() {
        return Err("needs at least one address or CIDR block".into());
    }
    Ok(Allowlist(nets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T>(kind: &Kind<T>, text: &str) -> Result<T, String> {
        (kind.parse)(text)
    }

    #[test]
    fn switches() {
        let kind = switch();
        assert_eq!(parse(&kind, "true"), Ok(true));
        assert_eq!(parse(&kind, "false"), Ok(false));
        for bad in ["", "TRUE", "yes", "1"] {
            assert!(parse(&kind, bad).is_err(), "{bad}");
        }
        assert!(kind.switch);
    }

    #[test]
    fn numbers_within_their_range() {
        let port = number::<u16>(..);
        assert_eq!(parse(&port, "8008"), Ok(8008));
        assert_eq!(parse(&port, "+80"), Ok(80));
        assert_eq!(
            parse(&port, "65536"),
            Err("expected a number from 0 to 65535".into())
        );
        let days = number::<u32>(1..=3650);
        for bad in ["0", "3651", "-1", "1.5", " 2", ""] {
            assert_eq!(
                parse(&days, bad),
                Err("expected a number from 1 to 3650".into()),
                "{bad}"
            );
        }
        assert_eq!(parse(&number::<u32>(1..), "4294967295"), Ok(u32::MAX));
    }

    #[test]
    fn texts_and_paths_are_not_empty() {
        assert_eq!(parse(&text(), "t"), Ok("t".to_string()));
        assert!(parse(&text(), "").is_err());
        assert_eq!(parse(&path(), "a/b"), Ok(PathBuf::from("a/b")));
        assert!(parse(&path(), "").is_err());
        assert_eq!(parse(&path().optional(), "a"), Ok(Some(PathBuf::from("a"))));
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse(&mode(), "0600"), Ok(0o600));
        assert_eq!(parse(&mode(), "660"), Ok(0o660));
        assert!(parse(&mode(), "0900").is_err());
        assert!(parse(&mode(), "17777").is_err());
    }

    #[test]
    fn allowlists() {
        let list = parse(&addresses(), "10.1.2.3/8, 192.168.1.7,::1").unwrap();
        assert!(list.allows("10.200.0.1".parse().unwrap()));
        assert!(list.allows("::ffff:192.168.1.7".parse().unwrap()));
        assert!(list.allows("::1".parse().unwrap()));
        assert!(!list.allows("192.168.1.8".parse().unwrap()));
        for bad in ["", ",", "everyone", "10.0.0.0/33"] {
            assert!(parse(&addresses(), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mqtt_urls() {
        let url = parse(&mqtt_url(), "mqtt://bits:s%40cret@broker.lan").unwrap();
        assert!(!url.tls);
        assert_eq!((url.host.as_str(), url.port), ("broker.lan", 1883));
        assert_eq!(url.username.as_deref(), Some("bits"));
        assert_eq!(url.password.as_deref(), Some("s@cret"));
        assert_eq!(format!("{url:?}"), "mqtt://bits@broker.lan:1883");
        let url = parse(&mqtt_url(), "mqtts://[::1]:8884").unwrap();
        assert!(url.tls);
        assert_eq!((url.host.as_str(), url.port), ("::1", 8884));
        assert_eq!(parse(&mqtt_url(), "mqtts://h").unwrap().port, 8883);
        for bad in [
            "",
            "broker:1883",
            "http://h",
            "mqtt://",
            "mqtt://h/topic",
            "mqtt://h:99999",
        ] {
            assert!(parse(&mqtt_url(), bad).is_err(), "{bad}");
        }
        assert_eq!(parse(&topic(), "club/room"), Ok("club/room".to_string()));
        for bad in ["", "/bits", "bits/", "bits/#", "a/+/b"] {
            assert!(parse(&topic(), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uris_and_zones() {
        assert_eq!(
            parse(&db_uri(), "sqlite:////var/b.db"),
            Ok(PathBuf::from("/var/b.db"))
        );
        assert!(parse(&db_uri(), "sqlite:///").is_err());
        assert!(parse(&db_uri(), "postgres://x").is_err());
        assert_eq!(
            parse(&timezone(), "Europe/Rome"),
            Ok(chrono_tz::Europe::Rome)
        );
        assert!(parse(&timezone(), "Mars/Olympus").is_err());
        assert!(parse(&address(), "localhost").is_err());
    }
}
