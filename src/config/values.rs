//! How an option's text becomes its value: one parser per kind of value.
//! Clap runs them for flags, variables and file keys alike, so all three
//! accept the same texts and refuse the others with the same reason.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;

use chrono_tz::Tz;
use ipnet::IpNet;

use crate::words::Lang;

/// `true` or `false`.
pub fn switch(text: &str) -> Result<bool, String> {
    text.parse()
        .map_err(|_| "expected `true` or `false`".to_string())
}

/// A whole number within `range`, written inclusive so the bounds read as
/// the message says.
pub fn number<T>(range: RangeInclusive<T>) -> impl Fn(&str) -> Result<T, String> + Clone
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    move |text| match text.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// An IPv4 or IPv6 address.
pub fn address(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| "expected an IP address such as 127.0.0.1 or ::1".to_string())
}

/// Free text such as a token; empty is refused.
pub fn text(text: &str) -> Result<String, String> {
    match text {
        "" => Err("must not be empty".into()),
        text => Ok(text.to_string()),
    }
}

/// A file or folder path; empty is refused.
pub fn path(text: &str) -> Result<PathBuf, String> {
    self::text(text).map(PathBuf::from)
}

/// A unix file mode in octal, `0600`.
pub fn mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        Ok(_) => Err(format!("`{text}` is not a file mode (at most 7777)")),
        Err(_) => Err(format!("`{text}` is not an octal mode")),
    }
}

/// An SQLAlchemy URI of an SQLite file, `sqlite:///path`, as its path.
pub fn db_uri(text: &str) -> Result<PathBuf, String> {
    match text.strip_prefix("sqlite:///") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(format!("`{text}` is not of the form sqlite:///path")),
    }
}

/// An IANA time zone, `Europe/Rome`.
pub fn timezone(text: &str) -> Result<Tz, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an IANA time zone such as Europe/Rome"))
}

/// An origin as the world reaches this server: `http` or `https`, a host and
/// an optional port; kept without a trailing `/`.
pub fn public_url(text: &str) -> Result<String, String> {
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
}

/// A VAPID contact: a `mailto:` address or an `https:` URL (RFC 8292).
pub fn push_contact(text: &str) -> Result<String, String> {
    let fine = (text.starts_with("mailto:") && text.len() > "mailto:".len())
        || url::Url::parse(text).is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
    if fine && text.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(text.to_string())
    } else {
        Err("expected mailto:someone@example.org or an https:// URL".into())
    }
}

/// An MQTT topic prefix: levels separated by `/`, no wildcards.
pub fn topic(text: &str) -> Result<String, String> {
    if text.is_empty() || text.starts_with('/') || text.ends_with('/') {
        return Err("expected topic levels such as `bits` or `club/room`".into());
    }
    if text.contains(['+', '#', '\0']) {
        return Err("must not hold the wildcards `+` and `#`".into());
    }
    Ok(text.to_string())
}

/// A language code bitsd speaks: `en` or `it`.
pub fn language(text: &str) -> Result<Lang, String> {
    Lang::from_code(text).ok_or_else(|| "expected en or it".to_string())
}

/// Longest sensor name, in characters.
pub const MAX_SENSOR_NAME: usize = 64;
/// Most sensors that may be named.
pub const MAX_SENSOR_NAMES: usize = 256;

/// Names of the temperature sensors, by number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SensorNames(pub BTreeMap<i64, String>);

impl SensorNames {
    pub fn get(&self, sensor: i64) -> Option<&str> {
        self.0.get(&sensor).map(String::as_str)
    }
}

/// `0=Lab,1=Outside`; the file may also write a table (see `file_text`).
pub fn sensor_names(text: &str) -> Result<SensorNames, String> {
    let mut names = BTreeMap::new();
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

/// Comma-separated addresses or CIDR blocks; the file may also write a list.
pub fn allowlist(text: &str) -> Result<Allowlist, String> {
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

/// An MQTT broker, `mqtt://[user[:password]@]host[:port]` or `mqtts://...`.
pub fn mqtt_url(text: &str) -> Result<MqttUrl, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    // Each parser's texts are tried through the options in `config::tests`;
    // here what `Debug` does not show.
    #[test]
    fn passwords_and_allowed_peers() {
        let url = mqtt_url("mqtt://bits:s%40cret@broker.lan").unwrap();
        assert_eq!(url.username.as_deref(), Some("bits"));
        assert_eq!(url.password.as_deref(), Some("s@cret"));
        let list = allowlist("10.1.2.3/8, 192.168.1.7,::1").unwrap();
        for peer in ["10.200.0.1", "::ffff:192.168.1.7", "::1"] {
            assert!(list.allows(peer.parse().unwrap()), "{peer}");
        }
        assert!(!list.allows("192.168.1.8".parse().unwrap()));
    }
}
