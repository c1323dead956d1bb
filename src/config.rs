//! Configuration: command-line flags, `BITSD_*` variables and a TOML file.
//!
//! Precedence is flag > environment > file > default. Clap handles flags,
//! variables and defaults; the file is merged by re-parsing with each file
//! key that clap took from its default turned into a `--key=value` flag, so
//! a file value is validated by exactly the same parser as a flag.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono_tz::Tz;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ipnet::IpNet;
use serde::Deserialize;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/bitsd.toml";

/// Command line of the `bitsd` binary.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "bitsd",
    version,
    args_override_self = true,
    about = "Real-time presence server for club rooms and hackerspaces",
    long_about = "Real-time presence server for club rooms and hackerspaces.\n\n\
        Every option is also a BITSD_* environment variable and a key of the TOML \
        file given by --config (default /etc/bitsd.toml when it exists). \
        Precedence: flag > environment > file > default."
)]
pub struct Cli {
    #[command(flatten)]
    pub options: Options,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `bitsd` does; the server when no subcommand is given.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum Command {
    /// Create the database if missing and (re)load every page under wiki_path.
    Bootstrap,
    /// Simulate a device, or fill the database with a plausible past.
    #[command(subcommand)]
    Fake(Fake),
}

/// `bitsd fake ...`: development and demos without hardware.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum Fake {
    /// Connect to bitsd as the device and play a day in the room: openings,
    /// temperatures drifting, now and then a message.
    Device {
        /// bitsd's device port
        #[arg(long, default_value = "127.0.0.1:8888", value_name = "HOST:PORT")]
        control: String,
        /// Send `auth <token>` first (bitsd's control_token)
        #[arg(long, value_name = "T")]
        token: Option<String>,
        /// Seconds between two rounds of temperature samples
        #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
        interval: f64,
    },
    /// Write plausible past days (openings, temperatures, messages) into the database.
    History {
        /// How many days back from yesterday
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3660))]
        days: u32,
    },
}

/// Every option of SPEC section 3, by group.
#[derive(Args, Debug, Clone)]
pub struct Options {
    /// TOML configuration file [default: /etc/bitsd.toml when it exists]
    #[arg(long, env = "BITSD_CONFIG", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address the HTTP/websocket server binds
    #[arg(
        long,
        env = "BITSD_WEB_ADDRESS",
        global = true,
        default_value = "0.0.0.0",
        help_heading = "Web"
    )]
    pub web_address: IpAddr,
    /// Port of the HTTP/websocket server (0 = any free port)
    #[arg(
        long,
        env = "BITSD_WEB_PORT",
        global = true,
        default_value_t = 8008,
        help_heading = "Web"
    )]
    pub web_port: u16,
    /// Unix socket path for HTTP/websocket instead of TCP
    #[arg(
        long,
        env = "BITSD_WEB_USOCKET",
        global = true,
        value_name = "PATH",
        help_heading = "Web"
    )]
    pub web_usocket: Option<PathBuf>,
    /// Take the client address and scheme from X-Real-IP / X-Forwarded-For / X-Forwarded-Proto
    #[arg(long, env = "BITSD_REVERSE_PROXIED", global = true, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = parse_bool, help_heading = "Web")]
    pub reverse_proxied: bool,
    /// Most HTTP and websocket connections at once; past it new ones wait
    #[arg(long, env = "BITSD_WEB_MAX_CONNECTIONS", global = true, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..), value_name = "N", help_heading = "Web")]
    pub web_max_connections: u32,
    /// Most connections one client address (IPv4, or IPv6 /64) holds at once, websockets and SSE included
    #[arg(long, env = "BITSD_WEB_MAX_CONNECTIONS_PER_ADDRESS", global = true, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), value_name = "N", help_heading = "Web")]
    pub web_max_connections_per_address: u32,
    /// How many reverse proxies stand in front (with reverse_proxied): the client is the address this many places from the right of X-Forwarded-For
    #[arg(long, env = "BITSD_TRUSTED_PROXY_HOPS", global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16), value_name = "N", help_heading = "Web")]
    pub trusted_proxy_hops: u32,
    /// Folder served under /static/
    #[arg(
        long,
        env = "BITSD_ASSETS_PATH",
        global = true,
        default_value = "assets",
        value_name = "PATH",
        help_heading = "Web"
    )]
    pub assets_path: PathBuf,
    /// Folder of markdown pages read by bootstrap (and live in developer mode)
    #[arg(
        long,
        env = "BITSD_WIKI_PATH",
        global = true,
        default_value = "wiki",
        value_name = "PATH",
        help_heading = "Web"
    )]
    pub wiki_path: PathBuf,
    /// Escape raw HTML in markdown pages
    #[arg(long, env = "BITSD_MDESCAPE", global = true, value_name = "BOOL", num_args = 0..=1, default_value = "true", default_missing_value = "true", value_parser = parse_bool, help_heading = "Web")]
    pub mdescape: bool,
    /// Protocol version reported in /data
    #[arg(
        long,
        env = "BITSD_JSONVER",
        global = true,
        default_value_t = 3,
        help_heading = "Web"
    )]
    pub jsonver: u32,

    /// Address the device (miniprotocol) listener binds
    #[arg(
        long,
        env = "BITSD_CONTROL_LOCAL_ADDRESS",
        global = true,
        default_value = "127.0.0.1",
        help_heading = "Device"
    )]
    pub control_local_address: IpAddr,
    /// Port of the device listener (0 = any free port)
    #[arg(
        long,
        env = "BITSD_CONTROL_LOCAL_PORT",
        global = true,
        default_value_t = 8888,
        help_heading = "Device"
    )]
    pub control_local_port: u16,
    /// Unix socket path for the device listener instead of TCP
    #[arg(
        long,
        env = "BITSD_CONTROL_LOCAL_USOCKET",
        global = true,
        value_name = "PATH",
        help_heading = "Device"
    )]
    pub control_local_usocket: Option<PathBuf>,
    /// Who may connect as the device: comma-separated addresses or CIDR blocks
    #[arg(long, env = "BITSD_CONTROL_REMOTE_ADDRESS", global = true, default_value = "127.0.0.1", value_name = "LIST", value_parser = parse_allowlist, help_heading = "Device")]
    pub control_remote_address: Allowlist,
    /// When set, the device's first line must be `auth <token>`
    #[arg(long, env = "BITSD_CONTROL_TOKEN", global = true, value_name = "TOKEN", value_parser = parse_nonempty, help_heading = "Device")]
    pub control_token: Option<String>,
    /// Seconds a device may stay silent before it is disconnected (0 = never)
    #[arg(
        long,
        env = "BITSD_CONTROL_IDLE_TIMEOUT",
        global = true,
        default_value_t = 3600,
        value_name = "SECONDS",
        help_heading = "Device"
    )]
    pub control_idle_timeout: u64,

    /// Owner applied to unix sockets [default: unchanged]
    #[arg(
        long,
        env = "BITSD_USOCKET_UID",
        global = true,
        value_name = "UID",
        help_heading = "Unix sockets"
    )]
    pub usocket_uid: Option<u32>,
    /// Group applied to unix sockets [default: unchanged]
    #[arg(
        long,
        env = "BITSD_USOCKET_GID",
        global = true,
        value_name = "GID",
        help_heading = "Unix sockets"
    )]
    pub usocket_gid: Option<u32>,
    /// Mode applied to unix sockets, in octal
    #[arg(long, env = "BITSD_USOCKET_MODE", global = true, default_value = "0600", value_name = "OCTAL", value_parser = parse_mode, help_heading = "Unix sockets")]
    pub usocket_mode: u32,

    /// SQLite database file
    #[arg(
        long,
        env = "BITSD_DB",
        global = true,
        default_value = "bitsd.db",
        value_name = "PATH",
        help_heading = "Storage"
    )]
    pub db: PathBuf,
    /// Synonym of --db written as an SQLAlchemy URI, `sqlite:///path`
    #[arg(long, env = "BITSD_DB_URI", global = true, value_name = "URI", value_parser = parse_db_uri, help_heading = "Storage")]
    pub db_uri: Option<PathBuf>,
    /// Log every SQL statement
    #[arg(long, env = "BITSD_LOG_QUERIES", global = true, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = parse_bool, help_heading = "Storage")]
    pub log_queries: bool,

    /// Key that signs cookies [default: generated once and kept in the database]
    #[arg(long, env = "BITSD_COOKIE_SECRET", global = true, value_name = "SECRET", value_parser = parse_nonempty, help_heading = "Members")]
    pub cookie_secret: Option<String>,
    /// Lifetime of the login cookie, in days
    #[arg(long, env = "BITSD_COOKIE_MAX_AGE_DAYS", global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3650), help_heading = "Members")]
    pub cookie_max_age_days: u32,
    /// Seconds between two failed logins for the same user from the same address
    #[arg(
        long,
        env = "BITSD_MIN_LOGIN_RETRY",
        global = true,
        default_value_t = 5,
        help_heading = "Members"
    )]
    pub min_login_retry: u64,
    /// Token for POST /macupdate; while unset the endpoint answers 404
    #[arg(long, env = "BITSD_MAC_UPDATE_PASSWORD", global = true, value_name = "TOKEN", value_parser = parse_nonempty, help_heading = "Members")]
    pub mac_update_password: Option<String>,
    /// Minimum seconds between two MAC updates from one address
    #[arg(
        long,
        env = "BITSD_MAC_UPDATE_INTERVAL",
        global = true,
        default_value_t = 0,
        help_heading = "Members"
    )]
    pub mac_update_interval: u64,

    /// Open/close the room from the presence roster
    #[arg(long, env = "BITSD_AUTO_STATUS", global = true, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = parse_bool, help_heading = "Presence")]
    pub auto_status: bool,
    /// Seconds the roster must stay non-empty before auto_status opens
    #[arg(
        long,
        env = "BITSD_AUTO_OPEN_AFTER",
        global = true,
        default_value_t = 300,
        help_heading = "Presence"
    )]
    pub auto_open_after: u64,
    /// Seconds the roster must stay empty before auto_status closes
    #[arg(
        long,
        env = "BITSD_AUTO_CLOSE_AFTER",
        global = true,
        default_value_t = 900,
        help_heading = "Presence"
    )]
    pub auto_close_after: u64,
    /// Weeks of status history the forecast averages over
    #[arg(long, env = "BITSD_FORECAST_WEEKS", global = true, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=520), help_heading = "Presence")]
    pub forecast_weeks: u32,
    /// Time zone for timestamps and the forecast, e.g. Europe/Rome [default: the system's]
    #[arg(long, env = "BITSD_TIMEZONE", global = true, value_name = "ZONE", value_parser = parse_timezone, help_heading = "Presence")]
    pub timezone: Option<Tz>,

    /// One access-log line per HTTP request
    #[arg(long, env = "BITSD_LOG_REQUESTS", global = true, value_name = "BOOL", num_args = 0..=1, default_value = "true", default_missing_value = "true", value_parser = parse_bool, help_heading = "Operation")]
    pub log_requests: bool,
    /// Debug logging, pages and static files read from disk on every request, no caching
    #[arg(long, env = "BITSD_DEVELOPER_MODE", global = true, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = parse_bool, help_heading = "Operation")]
    pub developer_mode: bool,
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

/// Facts about the space for `/spaceapi.json` (the `[spaceapi]` table).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpaceApi {
    pub space: Option<String>,
    pub logo: Option<String>,
    pub url: Option<String>,
    pub address: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub timezone: Option<String>,
    pub country_code: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub irc: Option<String>,
    pub mastodon: Option<String>,
    pub matrix: Option<String>,
    pub ml: Option<String>,
    #[serde(default)]
    pub show_names: bool,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub options: Options,
    /// The database file, from `db` or `db_uri`.
    pub db_path: PathBuf,
    pub timezone: Tz,
    pub spaceapi: Option<SpaceApi>,
    /// `BITSD_*` variables that name no option, to be warned about once logging is up.
    pub unknown_env: Vec<String>,
}

impl Config {
    /// The configuration of a test or embedded instance: defaults, then `args`.
    pub fn from_args<I, T>(args: I) -> Result<(Config, Option<Command>), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        load(args, std::iter::empty::<(String, String)>())
    }
}

/// Parses `args` (program name first) with `env` as the environment.
///
/// Errors are clap errors: printing them with `exit()` gives the short message
/// and exit status 2 the specification asks for.
pub fn load<I, T, E>(args: I, env: E) -> Result<(Config, Option<Command>), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
    E: IntoIterator<Item = (String, String)>,
{
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut args = normalise_bool_flags(args.into_iter().map(Into::into).collect());
    let command = parsing_command();
    let matches = command.clone().try_get_matches_from(&args)?;
    let from_flag = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let env_value = |id: &str| {
        let name = format!("BITSD_{}", id.to_ascii_uppercase());
        env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
    };

    let (file, explicit) = match (from_flag("config"), env_value("config")) {
        (true, _) => (
            Cli::from_arg_matches(&matches)?
                .options
                .config
                .unwrap_or_default(),
            true,
        ),
        (false, Some(path)) => (PathBuf::from(path), true),
        (false, None) => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    let mut table = toml::Table::new();
    if explicit || file.exists() {
        table = read_file(&command, &file)?;
    }
    let spaceapi = match table.remove("spaceapi") {
        Some(value) => Some(parse_spaceapi(&command, &file, value)?),
        None => None,
    };
    if let Some(key) = table
        .keys()
        .find(|k| *k == "config" || !is_option(&command, k))
    {
        return Err(command.clone().error(
            clap::error::ErrorKind::UnknownArgument,
            format!("{key}: unknown key in {}", file.display()),
        ));
    }
    let ids: Vec<String> = command
        .get_arguments()
        .filter(|a| a.get_long().is_some())
        .map(|a| a.get_id().to_string())
        .collect();
    for id in ids {
        if id == "config" || from_flag(&id) {
            continue;
        }
        let value = match (env_value(&id), table.remove(&id)) {
            (Some(v), _) => v,
            (None, Some(v)) => toml_scalar(&command, &file, &id, v)?,
            (None, None) => continue,
        };
        args.push(OsString::from(format!(
            "--{}={value}",
            id.replace('_', "-")
        )));
    }
    let matches = command.clone().try_get_matches_from(&args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let options = cli.options;

    let db_path = match (&options.db_uri, matches.value_source("db")) {
        (Some(uri_path), Some(ValueSource::DefaultValue) | None) => uri_path.clone(),
        _ => options.db.clone(),
    };
    let timezone = options.timezone.unwrap_or_else(system_timezone);
    let unknown_env = env
        .iter()
        .map(|(k, _)| k)
        .filter(|k| {
            k.strip_prefix("BITSD_")
                .is_some_and(|rest| !is_option(&command, &rest.to_ascii_lowercase()))
        })
        .cloned()
        .collect();
    let config = Config {
        options,
        db_path,
        timezone,
        spaceapi,
        unknown_env,
    };
    Ok((config, cli.command))
}

/// Parses the process's own arguments and environment, exiting with status 2
/// and a short message on a bad value.
pub fn from_process() -> (Config, Option<Command>) {
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    load(std::env::args_os(), env).unwrap_or_else(|e| e.exit())
}

/// The clap command with clap's own environment lookup switched off: the
/// variables are merged by [`load`] so that a file sits between them and the
/// defaults. Each option's help still names its variable.
fn parsing_command() -> clap::Command {
    let mut command = Cli::command();
    let ids: Vec<_> = command
        .get_arguments()
        .filter(|a| a.get_env().is_some())
        .map(|a| a.get_id().clone())
        .collect();
    for id in ids {
        command = command.mut_arg(id, |arg| {
            let name = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let arg = arg.env(None::<&str>);
            match name {
                Some(name) => arg.help(format!("{help} [env: {name}]")),
                None => arg,
            }
        });
    }
    command
}

/// Whether `key` names an option that a file or variable may set.
fn is_option(command: &clap::Command, key: &str) -> bool {
    command
        .get_arguments()
        .any(|a| a.get_id() == key && a.get_long().is_some())
}

fn read_file(command: &clap::Command, path: &Path) -> Result<toml::Table, clap::Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        command.clone().error(
            clap::error::ErrorKind::Io,
            format!("config: cannot read {}: {e}", path.display()),
        )
    })?;
    text.parse::<toml::Table>().map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or("").to_string();
        command.clone().error(
            clap::error::ErrorKind::InvalidValue,
            format!("config: {} is not valid TOML: {first}", path.display()),
        )
    })
}

fn parse_spaceapi(
    command: &clap::Command,
    path: &Path,
    value: toml::Value,
) -> Result<SpaceApi, clap::Error> {
    SpaceApi::deserialize(value).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or("").to_string();
        command.clone().error(
            clap::error::ErrorKind::InvalidValue,
            format!("spaceapi: {first} (in {})", path.display()),
        )
    })
}

/// A file value as the text a flag would carry.
fn toml_scalar(
    command: &clap::Command,
    path: &Path,
    key: &str,
    value: toml::Value,
) -> Result<String, clap::Error> {
    let err = |message: String| {
        command
            .clone()
            .error(clap::error::ErrorKind::InvalidValue, message)
    };
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) if key == "control_remote_address" => items
            .into_iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s),
                other => Err(err(format!(
                    "{key}: expected addresses as strings, found {other} in {}",
                    path.display()
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join(",")),
        other => Err(err(format!(
            "{key}: expected a single value, found {} in {}",
            other.type_str(),
            path.display()
        ))),
    }
}

/// Rewrites `--flag` and `--flag true|false` of boolean options into
/// `--flag=VALUE`, so `--developer-mode bootstrap` keeps its subcommand.
fn normalise_bool_flags(args: Vec<OsString>) -> Vec<OsString> {
    let command = Cli::command();
    let bools: Vec<String> = command
        .get_arguments()
        .filter(|a| a.get_num_args().is_some_and(|r| r.min_values() == 0))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter().peekable();
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(iter);
            break;
        }
        if bools.iter().any(|b| b == text) {
            let value = match iter.peek().and_then(|next| next.to_str()) {
                Some(v) if parse_bool(v).is_ok() => {
                    let v = v.to_string();
                    iter.next();
                    v
                }
                _ => "true".to_string(),
            };
            out.push(OsString::from(format!("{text}={value}")));
        } else {
            out.push(arg);
        }
    }
    out
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected `true` or `false`".into()),
    }
}

fn parse_nonempty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_string())
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(s, 8).map_err(|_| format!("`{s}` is not an octal mode"))?;
    if mode > 0o7777 {
        return Err(format!("`{s}` is not a file mode (at most 7777)"));
    }
    Ok(mode)
}

fn parse_allowlist(s: &str) -> Result<Allowlist, String> {
    let nets = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            if part.contains('/') {
                IpNet::from_str(part)
                    .map(|n| n.trunc())
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

fn parse_db_uri(s: &str) -> Result<PathBuf, String> {
    match s.strip_prefix("sqlite:///") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(format!("`{s}` is not of the form sqlite:///path")),
    }
}

fn parse_timezone(s: &str) -> Result<Tz, String> {
    s.parse::<Tz>()
        .map_err(|_| format!("`{s}` is not an IANA time zone such as Europe/Rome"))
}

/// The machine's zone, or UTC when it cannot be told.
fn system_timezone() -> Tz {
    if let Ok(tz) = std::env::var("TZ")
        && let Ok(zone) = tz.trim_start_matches(':').parse::<Tz>()
    {
        return zone;
    }
    iana_time_zone::get_timezone()
        .ok()
        .and_then(|name| name.parse::<Tz>().ok())
        .unwrap_or(Tz::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn with_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bitsd.toml");
        std::fs::write(&path, text).unwrap();
        let p = path.to_str().unwrap().to_string();
        (dir, p)
    }

    #[test]
    fn defaults() {
        let (c, cmd) = load(["bitsd", "--config", "/dev/null"], env(&[])).unwrap();
        assert_eq!(cmd, None);
        assert_eq!(c.options.web_port, 8008);
        assert_eq!(c.options.control_local_port, 8888);
        assert_eq!(c.options.usocket_mode, 0o600);
        assert!(c.options.mdescape);
        assert!(!c.options.developer_mode);
        assert_eq!(c.db_path, PathBuf::from("bitsd.db"));
        assert!(
            c.options
                .control_remote_address
                .allows("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn precedence_flag_env_file_default() {
        let (_d, file) = with_file("web_port = 1000\ncontrol_local_port = 1001\njsonver = 7\n");
        let e = env(&[
            ("BITSD_WEB_PORT", "2000"),
            ("BITSD_CONTROL_LOCAL_PORT", "2001"),
        ]);
        let (c, _) = load(["bitsd", "--config", &file, "--web-port", "3000"], e).unwrap();
        assert_eq!(c.options.web_port, 3000, "flag beats environment");
        assert_eq!(c.options.control_local_port, 2001, "environment beats file");
        assert_eq!(c.options.jsonver, 7, "file beats default");
        assert_eq!(c.options.min_login_retry, 5, "default");
    }

    #[test]
    fn booleans_in_every_form() {
        let (c, cmd) = load(
            [
                "bitsd",
                "--developer-mode",
                "bootstrap",
                "--mdescape",
                "false",
            ],
            env(&[]),
        )
        .unwrap();
        assert!(c.options.developer_mode);
        assert!(!c.options.mdescape);
        assert_eq!(cmd, Some(Command::Bootstrap));
        let (c, _) = load(["bitsd", "--mdescape=false"], env(&[])).unwrap();
        assert!(!c.options.mdescape);
        let (c, _) = load(["bitsd"], env(&[("BITSD_AUTO_STATUS", "true")])).unwrap();
        assert!(c.options.auto_status);
        let (_d, file) = with_file("log_requests = false\n");
        let (c, _) = load(["bitsd", "--config", &file], env(&[])).unwrap();
        assert!(!c.options.log_requests);
    }

    #[test]
    fn options_after_the_subcommand() {
        let (a, _) = load(["bitsd", "--db", "x.db", "bootstrap"], env(&[])).unwrap();
        let (b, _) = load(["bitsd", "bootstrap", "--db", "x.db"], env(&[])).unwrap();
        assert_eq!(a.db_path, PathBuf::from("x.db"));
        assert_eq!(b.db_path, PathBuf::from("x.db"));
    }

    #[test]
    fn bad_values_name_the_option() {
        let cases: &[&[&str]] = &[
            &["bitsd", "--web-port", "http"],
            &["bitsd", "--usocket-mode", "0900"],
            &["bitsd", "--control-remote-address", "10.0.0.0/33"],
            &["bitsd", "--timezone", "Mars/Olympus"],
            &["bitsd", "--db-uri", "postgres://x"],
            &["bitsd", "--mdescape=maybe"],
        ];
        for args in cases {
            let err = load(args.iter().copied(), env(&[])).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let option = args[1].split('=').next().unwrap();
            let text = err.to_string();
            assert!(text.lines().next().unwrap().contains(option), "{text}");
        }
    }

    #[test]
    fn file_errors() {
        let (_d, file) = with_file("web_prot = 1\n");
        let err = load(["bitsd", "--config", &file], env(&[])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("web_prot"), "{err}");

        let (_d, file) = with_file("web_port = \"many\"\n");
        let err = load(["bitsd", "--config", &file], env(&[])).unwrap_err();
        assert!(err.to_string().contains("--web-port"), "{err}");

        let (_d, file) = with_file("[spaceapi]\nspace = \"X\"\ncolour = 1\n");
        let err = load(["bitsd", "--config", &file], env(&[])).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");

        let err = load(["bitsd", "--config", "/nonexistent/bitsd.toml"], env(&[])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn file_values() {
        let (_d, file) = with_file(
            "control_remote_address = [\"10.0.0.0/8\", \"192.168.1.7\"]\n\
             usocket_mode = \"0660\"\ntimezone = \"Europe/Rome\"\n\
             [spaceapi]\nspace = \"POuL\"\nlat = 45.5\nlon = 9.2\nshow_names = true\n",
        );
        let (c, _) = load(["bitsd", "--config", &file], env(&[])).unwrap();
        let allow = &c.options.control_remote_address;
        assert!(allow.allows("10.1.2.3".parse().unwrap()));
        assert!(allow.allows("::ffff:192.168.1.7".parse().unwrap()));
        assert!(!allow.allows("192.168.1.8".parse().unwrap()));
        assert_eq!(c.options.usocket_mode, 0o660);
        assert_eq!(c.timezone, chrono_tz::Europe::Rome);
        let s = c.spaceapi.unwrap();
        assert_eq!(s.space.as_deref(), Some("POuL"));
        assert!(s.show_names);
    }

    #[test]
    fn db_uri_is_a_synonym() {
        let (c, _) = load(["bitsd", "--db-uri", "sqlite:///var/bits.db"], env(&[])).unwrap();
        assert_eq!(c.db_path, PathBuf::from("var/bits.db"));
        let (c, _) = load(["bitsd", "--db-uri", "sqlite:////var/bits.db"], env(&[])).unwrap();
        assert_eq!(c.db_path, PathBuf::from("/var/bits.db"));
    }

    #[test]
    fn unknown_environment_variables_are_reported() {
        let e = env(&[
            ("BITSD_WEB_PORTT", "1"),
            ("BITSD_DB", "y.db"),
            ("HOME", "/"),
        ]);
        let (c, _) = load(["bitsd"], e).unwrap();
        assert_eq!(c.unknown_env, vec!["BITSD_WEB_PORTT".to_string()]);
        assert_eq!(c.db_path, PathBuf::from("y.db"));
    }
}
