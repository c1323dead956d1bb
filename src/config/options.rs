//! The command line of `bitsd`: its subcommands, and every option of SPEC
//! section 3 declared once, as a field of [`Options`]. A field's doc comment
//! is its `--help` text; its name gives the flag (`--web-port`), the
//! variable (`BITSD_WEB_PORT`) and the file key (`web_port`).

// The doc comments are `--help` text, written for a terminal, not rustdoc.
#![allow(rustdoc::bare_urls, rustdoc::invalid_html_tags)]
#![allow(rustdoc::broken_intra_doc_links)]

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;

use chrono_tz::Tz;
use clap::{Arg, ArgAction, Args, Parser};

use crate::commands::Command;
use crate::words::Lang;

use super::values::{
    Allowlist, MqttUrl, SensorNames, address, allowlist, db_uri, language, mode, mqtt_url, number,
    path, public_url, push_contact, sensor_names, switch, text, timezone, topic,
};

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
    /// TOML configuration file [default: /etc/bitsd.toml when it exists]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    // Declared before the options, `config` is shaped by their `every_option`
    // too: global, and its help names `BITSD_CONFIG`.
    #[command(flatten)]
    pub options: Options,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Every option, by `--help` group. Once [`super::load`] has merged the
/// sources, each holds its value from the flag, else the variable, else the
/// file, else its default. A `bool` is a switch: `--flag` alone is true.
#[derive(Args, Debug, Clone)]
#[command(mut_args = every_option)]
pub struct Options {
    /// Address the HTTP/websocket server binds
    #[arg(long, help_heading = "Web", default_value = "0.0.0.0", value_parser = address)]
    pub web_address: IpAddr,
    /// Port of the HTTP/websocket server (0 = any free port)
    #[arg(long, help_heading = "Web", default_value = "8008", value_parser = number(0..=u16::MAX))]
    pub web_port: u16,
    /// Unix socket path for HTTP/websocket instead of TCP
    #[arg(long, help_heading = "Web", value_parser = path, value_name = "PATH")]
    pub web_usocket: Option<PathBuf>,
    /// Take the client address and scheme from X-Real-IP / X-Forwarded-For / X-Forwarded-Proto
    #[arg(long, help_heading = "Web", default_value = "false")]
    pub reverse_proxied: bool,
    /// This server's address as the world reaches it, e.g. https://bits.example.org:
    /// every absolute URL bitsd writes uses it [default: none, each request's Host]
    #[arg(long, help_heading = "Web", value_parser = public_url, value_name = "URL")]
    pub public_url: Option<String>,
    /// Most HTTP and websocket connections at once; past it new ones wait
    #[arg(long, help_heading = "Web", default_value = "16384")]
    #[arg(value_parser = number(1..=u32::MAX), value_name = "N")]
    pub web_max_connections: u32,
    /// Most connections one client address (IPv4, or IPv6 /64) holds at once,
    /// websockets and SSE included
    #[arg(long, help_heading = "Web", default_value = "1024")]
    #[arg(value_parser = number(1..=u32::MAX), value_name = "N")]
    pub web_max_connections_per_address: u32,
    /// Most long-lived connections at once (websockets, event streams, device
    /// websockets); past it a new one gets 503, while requests are still served
    #[arg(long, help_heading = "Web", default_value = "8192")]
    #[arg(value_parser = number(1..=u32::MAX), value_name = "N")]
    pub web_max_streams: u32,
    /// How many reverse proxies stand in front (with reverse_proxied): the client
    /// is the address this many places from the right of X-Forwarded-For
    #[arg(long, help_heading = "Web", default_value = "1")]
    #[arg(value_parser = number(1..=16u32), value_name = "N")]
    pub trusted_proxy_hops: u32,
    /// Folder whose files replace the built-in ones of the same name under /static/
    /// [default: none, the built-in files only]
    #[arg(long, help_heading = "Web", value_parser = path, value_name = "PATH")]
    pub assets_path: Option<PathBuf>,
    /// Folder of markdown pages read by bootstrap (and live in developer mode), each
    /// replacing the built-in page of the same name [default: none, the built-in pages only]
    #[arg(long, help_heading = "Web", value_parser = path, value_name = "PATH")]
    pub wiki_path: Option<PathBuf>,
    /// Escape raw HTML in markdown pages
    #[arg(long, help_heading = "Web", default_value = "true")]
    pub mdescape: bool,
    /// Protocol version reported in /data
    #[arg(long, help_heading = "Web", default_value = "3", value_parser = number(0..=u32::MAX))]
    pub jsonver: u32,

    /// Address the device (miniprotocol) listener binds
    #[arg(long, help_heading = "Device", default_value = "127.0.0.1", value_parser = address)]
    pub control_local_address: IpAddr,
    /// Port of the device listener (0 = any free port)
    #[arg(long, help_heading = "Device", default_value = "8888")]
    #[arg(value_parser = number(0..=u16::MAX))]
    pub control_local_port: u16,
    /// Unix socket path for the device listener instead of TCP
    #[arg(long, help_heading = "Device", value_parser = path, value_name = "PATH")]
    pub control_local_usocket: Option<PathBuf>,
    /// Who may connect as the device: comma-separated addresses or CIDR blocks
    #[arg(long, help_heading = "Device", default_value = "127.0.0.1")]
    #[arg(value_parser = allowlist, value_name = LIST)]
    pub control_remote_address: Allowlist,
    /// When set, the device's first line must be `auth <token>`
    #[arg(long, help_heading = "Device", value_parser = text, value_name = "TOKEN")]
    pub control_token: Option<String>,
    /// Seconds a device may stay silent before it is disconnected (0 = never)
    #[arg(long, help_heading = "Device", default_value = "3600")]
    #[arg(value_parser = number(0..=u64::MAX), value_name = "SECONDS")]
    pub control_idle_timeout: u64,
    /// Seconds the device that set the status may be disconnected before the homepage says the status may be out of date (0 = never)
    #[arg(long, help_heading = "Device", default_value = "600")]
    #[arg(value_parser = number(0..=u64::MAX), value_name = "SECONDS")]
    pub device_stale_after: u64,
    /// Seconds a claim code of `bitsd device add` or `bitsd device claim` stays valid
    #[arg(long, help_heading = "Device", default_value = "900")]
    #[arg(value_parser = number(60..=604_800u64), value_name = "SECONDS")]
    pub claim_ttl: u64,
    /// Port of the TLS device listener, for registered devices from any network [default: off]
    #[arg(long, help_heading = "Device")]
    #[arg(value_parser = number(0..=u16::MAX), value_name = "PORT")]
    pub control_tls_port: Option<u16>,
    /// Address the TLS device listener binds
    #[arg(long, help_heading = "Device", default_value = "0.0.0.0", value_parser = address)]
    pub control_tls_address: IpAddr,
    /// Certificate chain of the TLS device listener (PEM)
    #[arg(long, help_heading = "Device", value_parser = path, value_name = "PATH")]
    pub control_tls_cert: Option<PathBuf>,
    /// Private key of the TLS device listener (PEM)
    #[arg(long, help_heading = "Device", value_parser = path, value_name = "PATH")]
    pub control_tls_key: Option<PathBuf>,

    /// Owner applied to unix sockets [default: unchanged]
    #[arg(long, help_heading = "Unix sockets")]
    #[arg(value_parser = number(0..=u32::MAX), value_name = "UID")]
    pub usocket_uid: Option<u32>,
    /// Group applied to unix sockets [default: unchanged]
    #[arg(long, help_heading = "Unix sockets")]
    #[arg(value_parser = number(0..=u32::MAX), value_name = "GID")]
    pub usocket_gid: Option<u32>,
    /// Mode applied to unix sockets, in octal
    #[arg(long, help_heading = "Unix sockets", default_value = "0600")]
    #[arg(value_parser = mode, value_name = "OCTAL")]
    pub usocket_mode: u32,

    /// SQLite database file
    #[arg(long, help_heading = "Storage", default_value = "bitsd.db")]
    #[arg(value_parser = path, value_name = "PATH")]
    pub db: PathBuf,
    /// Synonym of --db written as an SQLAlchemy URI, `sqlite:///path`
    #[arg(long, help_heading = "Storage", value_parser = db_uri, value_name = "URI")]
    pub db_uri: Option<PathBuf>,
    /// Log every SQL statement
    #[arg(long, help_heading = "Storage", default_value = "false")]
    pub log_queries: bool,

    /// Key that signs cookies [default: generated once and kept in the database]
    #[arg(long, help_heading = "Members", value_parser = text, value_name = "SECRET")]
    pub cookie_secret: Option<String>,
    /// Lifetime of the login cookie, in days
    #[arg(long, help_heading = "Members", default_value = "1", value_parser = number(1..=3650u32))]
    pub cookie_max_age_days: u32,
    /// Seconds between two failed logins for the same user from the same address
    #[arg(long, help_heading = "Members", default_value = "5", value_parser = number(0..=u64::MAX))]
    pub min_login_retry: u64,
    /// Token for POST /macupdate; while unset the endpoint answers 404
    #[arg(long, help_heading = "Members", value_parser = text, value_name = "TOKEN")]
    pub mac_update_password: Option<String>,
    /// Minimum seconds between two MAC updates from one address
    #[arg(long, help_heading = "Members", default_value = "0", value_parser = number(0..=u64::MAX))]
    pub mac_update_interval: u64,

    /// Open/close the room from the presence roster
    #[arg(long, help_heading = "Presence", default_value = "false")]
    pub auto_status: bool,
    /// Seconds the roster must stay non-empty before auto_status opens
    #[arg(long, help_heading = "Presence", default_value = "300")]
    #[arg(value_parser = number(0..=u64::MAX))]
    pub auto_open_after: u64,
    /// Seconds the roster must stay empty before auto_status closes
    #[arg(long, help_heading = "Presence", default_value = "900")]
    #[arg(value_parser = number(0..=u64::MAX))]
    pub auto_close_after: u64,
    /// Minutes past the time the room was to stay open until after which bitsd closes it itself (0 = never)
    #[arg(long, help_heading = "Presence", default_value = "60")]
    #[arg(value_parser = number(0..=10_080u64), value_name = "MINUTES")]
    pub close_after_until: u64,
    /// Weeks of status history the forecast averages over
    #[arg(long, help_heading = "Presence", default_value = "8", value_parser = number(1..=520u32))]
    pub forecast_weeks: u32,
    /// Days of past openings in /openings.ics
    #[arg(long, help_heading = "Presence", default_value = "60")]
    #[arg(value_parser = number(1..=3660u32), value_name = "DAYS")]
    pub ical_past_days: u32,
    /// Time zone for timestamps and the forecast, e.g. Europe/Rome [default: the system's]
    #[arg(long, help_heading = "Presence", value_parser = timezone, value_name = "ZONE")]
    pub timezone: Option<Tz>,

    /// Language of the pages for a client that asks for neither English nor Italian
    #[arg(long, help_heading = "Pages", default_value = "en")]
    #[arg(value_parser = language, value_name = "LANG")]
    pub default_language: Lang,
    /// Names of the sensors of every kind by number, e.g. 0=Lab,1=Outside (in the file, a table
    /// such as {0 = "Lab", 1 = "Outside"}) [default: none, "Sensor N"]
    #[arg(long, help_heading = "Pages", value_parser = sensor_names, value_name = TABLE)]
    pub sensor_names: Option<SensorNames>,

    /// MQTT broker that bitsd keeps the state on, mqtt://[user:password@]host[:port]
    /// or mqtts://... [default: none, MQTT off]
    #[arg(long, help_heading = "Integrations", value_parser = mqtt_url, value_name = "URL")]
    pub mqtt_url: Option<MqttUrl>,
    /// First levels of every topic bitsd publishes and reads (with mqtt_url)
    #[arg(long, help_heading = "Integrations", default_value = "bits")]
    #[arg(value_parser = topic, value_name = "TOPIC")]
    pub mqtt_topic_prefix: String,
    /// Publish Home Assistant discovery configs (with mqtt_url)
    #[arg(long, help_heading = "Integrations", default_value = "true")]
    pub mqtt_homeassistant: bool,
    /// First levels of the Home Assistant discovery topics
    #[arg(long, help_heading = "Integrations", default_value = "homeassistant")]
    #[arg(value_parser = topic, value_name = "TOPIC")]
    pub mqtt_homeassistant_prefix: String,
    /// Take PREFIX/set/status, PREFIX/set/temperature/<sensor> and PREFIX/set/message
    /// as the device's own lines (with mqtt_url; restrict them with the broker's ACL)
    #[arg(long, help_heading = "Integrations", default_value = "false")]
    pub mqtt_subscribe: bool,

    /// Who push services may contact about bitsd's notifications (VAPID sub),
    /// mailto:... or https://... [default: the [spaceapi] email, else public_url,
    /// else the origin a subscription came from]
    #[arg(long, help_heading = "Integrations", value_parser = push_contact, value_name = "URI")]
    pub push_contact: Option<String>,
    /// Minutes the room must have been closed for its opening to be pushed
    #[arg(long, help_heading = "Integrations", default_value = "30")]
    #[arg(value_parser = number(0..=10_080u64), value_name = "MINUTES")]
    pub push_quiet: u64,
    /// Accept push endpoints over http:// and on loopback, private or
    /// link-local addresses (a push service on the club's own network, tests)
    #[arg(long, help_heading = "Integrations", default_value = "false")]
    pub push_allow_local: bool,

    /// One access-log line per HTTP request
    #[arg(long, help_heading = "Operation", default_value = "true")]
    pub log_requests: bool,
    /// Debug logging, pages and static files read from disk on every request, no caching
    #[arg(long, help_heading = "Operation", default_value = "false")]
    pub developer_mode: bool,
}

/// The placeholder of an option whose file value may be a list of strings,
/// read as one comma-separated text.
pub(super) const LIST: &str = "LIST";
/// ... a table of strings, read as `key=value,...`.
pub(super) const TABLE: &str = "NAMES";

/// What every option shares: it may follow a subcommand, its help names its
/// variable, and a `bool` may also be given `true` or `false`.
fn every_option(arg: Arg) -> Arg {
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let var = env_name(arg.get_id().as_str());
    let arg = arg.global(true).help(format!("{help} [env: {var}]"));
    if !matches!(arg.get_action(), ArgAction::SetTrue) {
        return arg;
    }
    arg.action(ArgAction::Set)
        .num_args(0..=1)
        .default_missing_value("true")
        .value_parser(switch)
        .value_name("BOOL")
}

/// The variable that sets option `name`.
pub(super) fn env_name(name: &str) -> String {
    format!("BITSD_{}", name.to_ascii_uppercase())
}

impl Options {
    /// The sensors' names; none when `sensor_names` is unset.
    pub fn sensor_names(&self) -> &SensorNames {
        static UNNAMED: SensorNames = SensorNames(std::collections::BTreeMap::new());
        self.sensor_names.as_ref().unwrap_or(&UNNAMED)
    }

    /// Every option as clap reads it; its id is its name and file key.
    pub(super) fn args() -> Vec<Arg> {
        Options::augment_args(clap::Command::new("bitsd"))
            .get_arguments()
            .cloned()
            .collect()
    }

    /// Every option's name and its default as a flag would write it (`None`:
    /// unset unless given).
    pub fn defaults() -> Vec<(String, Option<String>)> {
        let default = |a: &Arg| Some(a.get_default_values().first()?.to_str()?.to_string());
        let named = |a: Arg| (a.get_id().to_string(), default(&a));
        Options::args().into_iter().map(named).collect()
    }
}

/// Rewrites `--flag` and `--flag true|false` of boolean options into
/// `--flag=VALUE`, so `--developer-mode bootstrap` keeps its subcommand.
pub(super) fn normalise_bool_flags(args: Vec<OsString>) -> Vec<OsString> {
    let switches: Vec<String> = Options::args()
        .iter()
        .filter(|a| a.get_num_args().is_some_and(|r| r.min_values() == 0))
        .filter_map(|a| Some(format!("--{}", a.get_long()?)))
        .collect();
    let mut out = Vec::with_capacity(args.len());
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        if arg == "--" {
            out.push(arg);
            out.extend(args);
            break;
        }
        match switches.iter().find(|s| arg == s.as_str()) {
            Some(switch) => {
                let value = args.next_if(|v| v == "true" || v == "false");
                let value = value.unwrap_or_else(|| "true".into());
                out.push(format!("{switch}={}", value.to_string_lossy()).into());
            }
            None => out.push(arg),
        }
    }
    out
}
