//! Configuration: command-line flags, `BITSD_*` variables and a TOML file.
//!
//! `options.rs` declares the command line, every option once; `values.rs`
//! parses each kind of value. [`load`] checks each source whole, naming the
//! variable or the file and key of a bad value, then hands clap the values
//! of the file, then those of the environment, then the flags: the last one
//! given wins, so flag > environment > file > default. The `[[webhook]]`
//! tables are checked by the webhooks' own `settings`.

mod options;
mod values;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use clap::parser::ValueSource;
use clap::{Arg, CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

pub use options::{Cli, Options};

use crate::commands::Command;
pub use values::{Allowlist, MqttUrl, SensorNames};

use crate::webhook::settings::{self, Webhook};
use options::{LIST, TABLE, env_name, normalise_bool_flags};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/bitsd.toml";

/// A configuration that cannot be used, reported before anything is opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag or subcommand, or `--help` and `--version`: clap's own report.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// One line naming the variable, the file and key, or the folder.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    fn file(path: &Path, message: String) -> Error {
        Error::Invalid(format!("{}: {message}", path.display()))
    }

    fn env(name: &str, value: &str, why: String) -> Error {
        let (var, flag) = (env_name(name), name.replace('_', "-"));
        Error::Invalid(format!(
            "{var}: invalid value {:?} for --{flag}: {why}",
            shown(name, value)
        ))
    }

    /// 2 for a bad configuration, 0 for `--help` and `--version`.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Cli(e) => e.exit_code(),
            Error::Invalid(_) => 2,
        }
    }

    /// Prints the report (help and version on standard output, the rest on
    /// standard error) and exits with [`Error::exit_code`].
    pub fn exit(&self) -> ! {
        match self {
            Error::Cli(e) => exit_on_cli_error("bitsd", e),
            Error::Invalid(_) => crate::logging::eprint_line(format_args!("bitsd: {self}")),
        }
        std::process::exit(self.exit_code())
    }
}

/// Whether clap's `e` is a mistake on the command line, rather than help
/// or the version asked for.
fn is_a_mistake(e: &clap::Error) -> bool {
    use clap::error::ErrorKind;
    !matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

/// clap's report of a mistake in one line, as a file's or a variable's
/// reads: what is wrong (with the arguments it lists) and clap's tip,
/// without the usage that follows.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    let mut what = first.strip_prefix("error: ").unwrap_or(first).to_string();
    let mut tip = None;
    for line in lines {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        match line.strip_prefix("tip: ") {
            Some(t) => tip = Some(t),
            None => {
                what.push(' ');
                what.push_str(line);
            }
        }
    }
    match tip {
        Some(tip) => format!("{what}; {tip}"),
        None => what,
    }
}

/// Exits as `program` on clap's error `e`: help and the version as clap
/// prints them, a mistake in one line with status 2.
pub fn exit_on_cli_error(program: &str, e: &clap::Error) -> ! {
    if !is_a_mistake(e) {
        e.exit()
    }
    crate::logging::eprint_line(format_args!("{program}: {}", one_line(e)));
    std::process::exit(2)
}

/// A refused value of option `name` as an error repeats it: not at all for
/// the broker's URL, or for anything that may be a URL with a password.
fn shown(name: &str, value: &str) -> String {
    if name == "mqtt_url" || value.contains('@') {
        "(not repeated: it may hold a password)".to_string()
    } else {
        value.to_string()
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
    /// Name the `named` members present in `people_now_present`.
    #[serde(default)]
    pub show_names: bool,
}

impl SpaceApi {
    /// The space's name: `space`, or `BITS` when it is unset or empty.
    pub fn name(&self) -> &str {
        self.space
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("BITS")
    }
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub options: Options,
    /// The database file, from `db` or `db_uri`.
    pub db_path: PathBuf,
    pub timezone: Tz,
    pub spaceapi: Option<SpaceApi>,
    /// The `[[webhook]]` tables, in the file's order.
    pub webhooks: Vec<Webhook>,
    /// `BITSD_*` variables that name no option, to be warned about once logging is up.
    pub unknown_env: Vec<String>,
    /// The configuration file read, as an absolute path; none when none was
    /// given and `/etc/bitsd.toml` is not there.
    pub file: Option<PathBuf>,
}

impl Config {
    /// The space's name, as [`SpaceApi::name`] gives it.
    pub fn space_name(&self) -> &str {
        self.spaceapi.as_ref().map_or("BITS", SpaceApi::name)
    }

    /// Whether `named` members are named to everyone (`[spaceapi]
    /// show_names`).
    pub fn show_names(&self) -> bool {
        self.spaceapi.as_ref().is_some_and(|s| s.show_names)
    }

    /// The database of a command that works on an existing one (a member,
    /// a device, a backup): its path, or, when there is no file there, the
    /// one-line refusal naming the absolute path tried and how to point
    /// elsewhere. Nothing is created.
    pub fn existing_db(&self) -> Result<&Path, String> {
        existing_db(&self.db_path, self.file.as_deref())
    }

    /// The configuration of a test or embedded instance: defaults, then `args`.
    pub fn from_args<I, T>(args: I) -> Result<(Config, Option<Command>), Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        load(args, std::iter::empty::<(String, String)>())
    }

    /// The folder whose files replace the built-in `/static/` files:
    /// `assets_path`, else in developer mode the checkout's own `assets/`.
    pub fn assets_folder(&self) -> Option<PathBuf> {
        self.folder(&self.options.assets_path, "assets")
    }

    /// The folder whose pages replace the built-in wiki pages: `wiki_path`,
    /// else in developer mode the checkout's own `wiki/`.
    pub fn wiki_folder(&self) -> Option<PathBuf> {
        self.folder(&self.options.wiki_path, "wiki")
    }

    fn folder(&self, configured: &Option<PathBuf>, name: &str) -> Option<PathBuf> {
        configured.clone().or_else(|| {
            let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
            (self.options.developer_mode && checkout.is_dir()).then_some(checkout)
        })
    }

    /// A configured `assets_path` or `wiki_path` must be a folder that is
    /// there: a typo would otherwise quietly serve the built-in files.
    pub fn check_folders(&self) -> Result<(), Error> {
        let configured = [
            ("assets_path", &self.options.assets_path),
            ("wiki_path", &self.options.wiki_path),
        ];
        for (option, path) in configured {
            let Some(path) = path else { continue };
            let why = match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => "not a directory".to_string(),
                Err(e) if e.kind() == ErrorKind::NotFound => "no such directory".to_string(),
                Err(e) => crate::report::io_cause(&e),
            };
            return Err(Error::Invalid(format!(
                "{option}: {}: {why}",
                path.display()
            )));
        }
        Ok(())
    }
}

/// Parses `args` (program name first) with `env` as the environment.
///
/// [`Error::exit`] prints the short message and exits with status 2, as the
/// specification asks, or 0 for `--help` and `--version`.
pub fn load<I, T, E>(args: I, env: E) -> Result<(Config, Option<Command>), Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
    E: IntoIterator<Item = (String, String)>,
{
    let env: BTreeMap<String, String> = env.into_iter().collect();
    let var = |name: &str| env.get(&env_name(name)).map(String::as_str);
    let args = normalise_bool_flags(args.into_iter().map(Into::into).collect());
    // The flags alone first: a bad one, `--help` and `--version` end here.
    let flags = Cli::try_parse_from(&args)?;

    let from_env = |text| values::path(text).map_err(|why| Error::env("config", text, why));
    let given = match flags.config {
        Some(path) => Some(path),
        None => var("config").map(from_env).transpose()?,
    };
    let path = given
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
    let mut table = toml::Table::new();
    let read = given.is_some() || path.exists();
    if read {
        table = read_file(&path)?;
    }
    let file = read.then(|| std::path::absolute(&path).unwrap_or_else(|_| path.clone()));
    let spaceapi = table.remove("spaceapi");
    let spaceapi = spaceapi.map(|v| parse_spaceapi(&path, v)).transpose()?;
    let webhooks = match table.remove("webhook") {
        Some(value) => settings::parse(value).map_err(|e| Error::file(&path, e))?,
        None => Vec::new(),
    };

    // Each source's values as flags, checked where they come from; the last
    // one clap reads wins.
    let known = Options::args();
    let flag = |arg: &Arg, text: &str| format!("--{}={text}", arg.get_long().unwrap_or_default());
    let mut merged = vec![args.first().cloned().unwrap_or_else(|| "bitsd".into())];
    for (key, value) in table {
        let error = |message: String| Error::file(&path, format!("{key}: {message}"));
        let Some(arg) = known.iter().find(|a| a.get_id() == key.as_str()) else {
            let names = known.iter().map(|a| a.get_id().as_str());
            return Err(error(match nearest(&key, names) {
                Some(near) => format!("unknown key; did you mean {near}?"),
                None => "unknown key".into(),
            }));
        };
        let text = file_text(arg, value).map_err(error)?;
        check(arg, &text)
            .map_err(|why| error(format!("invalid value {:?}: {why}", shown(&key, &text))))?;
        merged.push(flag(arg, &text).into());
    }
    for arg in &known {
        let name = arg.get_id().as_str();
        if let Some(text) = var(name) {
            check(arg, text).map_err(|why| Error::env(name, text, why))?;
            merged.push(flag(arg, text).into());
        }
    }
    merged.extend(args.into_iter().skip(1));
    let matches = Cli::command().try_get_matches_from(merged)?;
    let cli = Cli::from_arg_matches(&matches)?;

    let options = cli.options;
    // `db` from any source beats `db_uri`, which beats the default `db`.
    let db_path = match (matches.value_source("db"), &options.db_uri) {
        (Some(ValueSource::DefaultValue), Some(uri)) => uri.clone(),
        _ => options.db.clone(),
    };
    let timezone = options.timezone.unwrap_or_else(system_timezone);
    // The space's time zone is the configured one, unless `[spaceapi]`
    // still names its own (older files did).
    let spaceapi = spaceapi.map(|mut facts| {
        if facts.timezone.is_none() {
            facts.timezone = options.timezone.map(|tz| tz.name().to_string());
        }
        facts
    });
    let named = |key: &String| {
        key == "BITSD_CONFIG" || known.iter().any(|a| env_name(a.get_id().as_str()) == *key)
    };
    let unknown_env = env
        .into_keys()
        .filter(|key| key.starts_with("BITSD_") && !named(key));
    let config = Config {
        options,
        db_path,
        timezone,
        spaceapi,
        webhooks,
        unknown_env: unknown_env.collect(),
        file,
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

/// Whether `text`, the value of option `arg`, is one it takes: clap reads it
/// as a flag would be read; the error is the option's reason.
fn check(arg: &Arg, text: &str) -> Result<(), String> {
    let flag = format!("--{}={text}", arg.get_long().unwrap_or_default());
    let command = clap::Command::new("bitsd").no_binary_name(true);
    let Err(e) = command.arg(arg.clone()).try_get_matches_from([flag]) else {
        return Ok(());
    };
    Err(std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string))
}

/// A file's value of option `arg` as the text a flag would carry: numbers and
/// booleans as written, a list of strings of a `LIST` option joined by
/// commas, a table of strings of a `NAMES` option as `key=value,...`.
fn file_text(arg: &Arg, value: toml::Value) -> Result<String, String> {
    use toml::Value::{Array, Boolean, Float, Integer, String as Text, Table};
    let takes = |name: &str| arg.get_value_names().is_some_and(|n| n[0] == name);
    let found =
        |what: &str, value: toml::Value| format!("expected {what}, found {}", value.type_str());
    let parts: Vec<String> = match value {
        Text(s) => return Ok(s),
        Integer(i) => return Ok(i.to_string()),
        Float(f) => return Ok(f.to_string()),
        Boolean(b) => return Ok(b.to_string()),
        Array(items) if takes(LIST) => items
            .into_iter()
            .map(|item| match item {
                Text(s) => Ok(s),
                other => Err(found("a list of strings", other)),
            })
            .collect::<Result<_, _>>()?,
        Table(pairs) if takes(TABLE) => pairs
            .into_iter()
            .map(|(key, item)| match item {
                Text(s) if !s.contains([',', '=']) => Ok(format!("{key}={s}")),
                Text(_) => Err(format!("{key}: a name may not hold `,` or `=`")),
                other => Err(format!("{key}: {}", found("a string", other))),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(found("a single value", other)),
    };
    Ok(parts.join(","))
}

fn read_file(path: &Path) -> Result<toml::Table, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let why = crate::report::io_cause(&e);
        Error::file(path, format!("cannot read it: {why}"))
    })?;
    text.parse().map_err(|e: toml::de::Error| {
        // The first line of toml's report says where: "TOML parse error at line 1, column 12".
        let report = e.to_string();
        let place = report.lines().next().unwrap_or_default();
        let place = place.trim_start_matches("TOML parse error ");
        let why = e.message().trim_end();
        Error::file(path, format!("not valid TOML {place}: {why}"))
    })
}

fn parse_spaceapi(path: &Path, value: toml::Value) -> Result<SpaceApi, Error> {
    SpaceApi::deserialize(value).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        // A top-level option written below `[spaceapi]` is read as part of it.
        let unknown = first
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(key, _)| key);
        let options = Options::args();
        match unknown {
            Some(key) if options.iter().any(|a| a.get_id() == key) => Error::file(
                path,
                format!(
                    "[spaceapi] {key}: a top-level option, read here as part of [spaceapi]; \
                     top-level options go above the first [table]"
                ),
            ),
            _ => Error::file(path, format!("spaceapi: {first}")),
        }
    })
}

/// The one of `names` nearest to the unknown `key`, when one is near
/// enough to be what was meant.
fn nearest<'a>(key: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names
        .map(|name| (strsim::jaro_winkler(key, name), name))
        .filter(|(likeness, _)| *likeness > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

/// `db` when a file is there; otherwise the refusal of [`Config::existing_db`].
/// `file` is the configuration file read, if any.
fn existing_db<'a>(db: &'a Path, file: Option<&Path>) -> Result<&'a Path, String> {
    if db.exists() {
        return Ok(db);
    }
    let tried = std::path::absolute(db).unwrap_or_else(|_| db.to_path_buf());
    // A file such as /dev/null is no place to write `db` in.
    let file = file
        .filter(|f| f.is_file())
        .map_or_else(|| DEFAULT_CONFIG_FILE.into(), |f| f.display().to_string());
    Err(format!(
        "no database at {}: give --db PATH, or set db in {file} \
         (bitsd creates the database when it first starts)",
        tried.display()
    ))
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

    /// `bitsd --config FILE ARGS`, FILE holding `file`, with `vars` as the
    /// environment (ARGS and `vars` split at spaces): the configuration and
    /// command as `Debug`, or the error with FILE written `bitsd.toml`.
    fn run(args: &str, vars: &str, file: &str) -> Result<String, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bitsd.toml");
        std::fs::write(&path, file).unwrap();
        let path = path.to_str().unwrap();
        let args = ["bitsd", "--config", path]
            .into_iter()
            .chain(args.split_whitespace());
        let env = vars.split_whitespace().map(|v| v.split_once('=').unwrap());
        match load(args, env.map(|(k, v)| (k.to_string(), v.to_string()))) {
            Ok(loaded) => Ok(format!("{loaded:?}")),
            Err(e) if e.exit_code() == 2 => Err(e.to_string().replace(path, "bitsd.toml")),
            Err(e) => panic!("{e}"),
        }
    }

    type Text = &'static str;
    /// (flags, variables, file, a part of the configuration or of the error)
    type Case = (Text, Text, Text, Result<Text, Text>);

    #[rustfmt::skip]
    const SOURCES: &[Case] = &[
        ("", "", "", Ok("web_port: 8008")),
        ("--web-port 3000", "BITSD_WEB_PORT=2000", "web_port = 1", Ok("web_port: 3000")),
        ("", "BITSD_WEB_PORT=2000", "web_port = 1", Ok("web_port: 2000")),
        ("bootstrap", "", "web_port = 1", Ok("web_port: 1,")),
        ("--developer-mode bootstrap", "", "", Ok("developer_mode: true")),
        ("--developer-mode bootstrap", "", "", Ok("Some(Bootstrap)")),
        ("bootstrap --mdescape false", "", "", Ok("mdescape: false")),
        ("--mdescape=false", "", "", Ok("mdescape: false")),
        ("--mdescape", "BITSD_MDESCAPE=false", "", Ok("mdescape: true")),
        ("", "BITSD_MDESCAPE=false", "mdescape = true", Ok("mdescape: false")),
        ("", "BITSD_AUTO_STATUS=true", "", Ok("auto_status: true")),
        ("", "", "log_requests = false", Ok("log_requests: false")),
        ("", "", "log_requests = \"false\"", Ok("log_requests: false")),
        ("fake history --days 3 --auto-status", "", "", Ok("auto_status: true")),
        ("fake history --days 3 --auto-status", "", "", Ok("History { days: 3 }")),
        ("backup c.db --db x.db", "", "", Ok("db_path: \"x.db\"")),
        ("backup c.db --db x.db", "", "", Ok("Backup { file: \"c.db\" }")),
        ("check --db x.db", "", "", Ok("Some(Check)")),
        ("--db-uri sqlite:///var/b.db", "", "", Ok("db_path: \"var/b.db\"")),
        ("--db-uri sqlite:////var/b.db", "", "", Ok("db_path: \"/var/b.db\"")),
        ("--db-uri sqlite:///u.db", "", "db = \"f.db\"", Ok("db_path: \"f.db\"")),
        ("", "BITSD_WEB_PORTT=1 BITSD_DB=y.db", "", Ok("unknown_env: [\"BITSD_WEB_PORTT\"]")),
        ("", "BITSD_WEB_PORTT=1 BITSD_DB=y.db", "", Ok("db_path: \"y.db\"")),
        ("", "BITSD_web_port=1", "", Ok("unknown_env: [\"BITSD_web_port\"]")),
        ("", "BITSD_CONFIG=/x", "", Ok("unknown_env: []")),
        ("", "", "[spaceapi]\nspace = \"POuL\"", Ok("space: Some(\"POuL\")")),
        ("", "", "timezone = \"Europe/Rome\"", Ok("timezone: Europe/Rome")),
        ("--web-port 1", "BITSD_WEB_PORT=x", "", Err("BITSD_WEB_PORT: invalid value \"x\" for")),
        ("", "BITSD_WEB_PORT=x", "", Err("BITSD_WEB_PORT: invalid value \"x\" for --web-port: expect")),
        ("", "", "web_port = \"x\"", Err("bitsd.toml: web_port: invalid value \"x\": expected")),
        ("", "", "web_prot = 1", Err("bitsd.toml: web_prot: unknown key; did you mean web_port?")),
        ("", "", "colour = 1", Err("bitsd.toml: colour: unknown key")),
        ("", "", "config = \"x.toml\"", Err("bitsd.toml: config: unknown key")),
        ("", "", "web_port = [\"1\"]", Err("web_port: expected a single value, found array")),
        ("", "", "control_remote_address = [1]", Err("control_remote_address: expected a list of")),
        ("", "", "sensor_names = { 0 = \"a,b\" }", Err("names: 0: a name may not hold `,` or `=`")),
        ("", "", "sensor_names = { 0 = 1 }", Err("names: 0: expected a string, found integer")),
        ("", "", "[spaceapi]\ncolour = 1", Err("bitsd.toml: spaceapi: unknown field `colour`")),
        ("", "", "[spaceapi]\nweb_port = 1", Err("bitsd.toml: [spaceapi] web_port: a top-level option")),
        ("", "", "[spaceapi]\ntimezone = \"Europe/Rome\"", Ok("timezone: Some(\"Europe/Rome\")")),
        ("", "", "web_port = = 1", Err("bitsd.toml: not valid TOML at line 1, column 12: ")),
        ("--web-port http", "", "", Err("error: invalid value 'http' for '--web-port <WEB_PORT>'")),
    ];

    /// Every kind of value, as a flag, a variable or a key takes it or not.
    #[rustfmt::skip]
    const VALUES: &[Case] = &[
        ("", "", "web_port = \"9000\"", Ok("web_port: 9000")),
        ("", "", "control_token = 1234", Ok("control_token: Some(\"1234\")")),
        ("", "", "usocket_mode = \"0660\"", Ok("usocket_mode: 432")),
        ("", "", "usocket_mode = 660", Ok("usocket_mode: 432")),
        ("--usocket-mode 0900", "", "", Err("'0900' for '--usocket-mode <OCTAL>': `0900` is not")),
        ("", "BITSD_USOCKET_MODE=17777", "", Err("`17777` is not a file mode (at most 7777)")),
        ("--web-port 65536", "", "", Err("expected a number from 0 to 65535")),
        ("--cookie-max-age-days 3651", "", "", Err("expected a number from 1 to 3650")),
        ("--trusted-proxy-hops 0", "", "", Err("expected a number from 1 to 16")),
        ("--web-max-streams 4294967295", "", "", Ok("web_max_streams: 4294967295")),
        ("--mdescape=maybe", "", "", Err("'maybe' for '--mdescape [<BOOL>]': expected `true`")),
        ("", "BITSD_LOG_QUERIES=TRUE", "", Err("expected `true` or `false`")),
        ("", "", "control_remote_address = [\"10.0.0.0/8\", \"::1\"]", Ok("[10.0.0.0/8, ::1/128]")),
        ("--control-remote-address 10.1.2.3/8,,::1", "", "", Ok("[10.0.0.0/8, ::1/128]")),
        ("--control-remote-address everyone", "", "", Err("`everyone` is not an IP address")),
        ("--control-remote-address 10.0.0.0/33", "", "", Err("`10.0.0.0/33` is not a CIDR")),
        ("--control-remote-address ,", "", "", Err("needs at least one address or CIDR")),
        ("--web-address localhost", "", "", Err("expected an IP address such as")),
        ("--web-address ::1", "", "", Ok("web_address: ::1")),
        ("--web-usocket=", "", "", Err("'' for '--web-usocket <PATH>': must not be empty")),
        ("", "BITSD_CONTROL_TOKEN=", "", Err("for --control-token: must not be empty")),
        ("--db-uri sqlite:///", "", "", Err("`sqlite:///` is not of the form sqlite:///path")),
        ("--db-uri postgres://x", "", "", Err("is not of the form sqlite:///path")),
        ("--timezone Mars/Olympus", "", "", Err("is not an IANA time zone such as")),
        ("--default-language IT", "", "", Ok("default_language: It")),
        ("--default-language de", "", "", Err("expected en or it")),
        ("--public-url https://b.org:8443/", "", "", Ok("Some(\"https://b.org:8443\")")),
        ("--public-url https://u@b.org", "", "", Err("expected an origin such as")),
        ("--public-url b.org", "", "", Err("expected an origin such as")),
        ("--mqtt-topic-prefix club/room", "", "", Ok("mqtt_topic_prefix: \"club/room\"")),
        ("--mqtt-topic-prefix bits/", "", "", Err("expected topic levels such as")),
        ("--mqtt-topic-prefix a/+/b", "", "", Err("must not hold the wildcards")),
        ("--mqtt-url mqtt://bits:s%40cret@broker", "", "", Ok("mqtt://bits@broker:1883")),
        ("--mqtt-url mqtts://[::1]:8884", "", "", Ok("Some(mqtts://::1:8884)")),
        ("--mqtt-url ssl://h", "", "", Ok("Some(mqtts://h:8883)")),
        ("--mqtt-url http://h", "", "", Err("unknown scheme `http`; expected mqtt://")),
        ("--mqtt-url mqtt://h/t", "", "", Err("only a host and a port; expected")),
        ("", "BITSD_MQTT_URL=mqtt://u:pw@h:99999", "", Err("\"(not repeated: it may hold")),
        ("", "BITSD_MQTT_URL=mqtt://u:pw", "", Err("\"(not repeated: it may hold")),
        ("", "", "mqtt_url = \"mqtt://u:pw@h:99999\"", Err("\"(not repeated: it may hold")),
        ("", "", "sensor_names = { 0 = \"Lab\", 12 = \"Door\" }", Ok("({0: \"Lab\", 12: \"Door\"})")),
        ("--sensor-names 3=Cellar,4=Roof", "", "", Ok("({3: \"Cellar\", 4: \"Roof\"})")),
        ("", "BITSD_SENSOR_NAMES=7=Lab", "", Ok("({7: \"Lab\"})")),
        ("", "", "sensor_names = \"7=Lab\"", Ok("({7: \"Lab\"})")),
        ("", "", "", Ok("sensor_names: None")),
        ("--sensor-names x=Lab", "", "", Err("`x` is not a sensor number")),
        ("--sensor-names=-1=Lab", "", "", Err("`-1` is not a sensor number")),
        ("--sensor-names 1", "", "", Err("`1` is not of the form NUMBER=NAME")),
        ("--sensor-names 1=", "", "", Err("sensor 1 must have 1 to 64 characters")),
        ("--sensor-names 1=a,1=b", "", "", Err("sensor 1 is named twice")),
    ];

    #[test]
    fn each_source_and_value_in_its_place() {
        for (args, vars, file, expected) in [SOURCES, VALUES].concat() {
            let got = run(args, vars, file);
            let fine = match (&got, expected) {
                (Ok(got), Ok(part)) | (Err(got), Err(part)) => got.contains(part),
                _ => false,
            };
            assert!(fine, "{args} | {vars} | {file}: {got:?}, not {expected:?}");
            assert!(!format!("{got:?}").contains(":pw"), "a password repeated");
        }
        let config = |file: &str| {
            let env = [("BITSD_CONFIG".to_string(), file.to_string())];
            load(["bitsd"], env).map(|(config, _)| config.options.jsonver)
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("named.toml");
        std::fs::write(&file, "jsonver = 9\n").unwrap();
        assert_eq!(config(file.to_str().unwrap()).unwrap(), 9);
        let error = |file| config(file).unwrap_err().to_string();
        let missing = "/nonexistent/bitsd.toml: cannot read it: no such file or directory";
        assert_eq!(error("/nonexistent/bitsd.toml"), missing);
        assert!(error("").starts_with("BITSD_CONFIG: invalid value \"\" for --config"));
    }

    #[test]
    fn every_option_has_a_flag_a_variable_and_a_key() {
        let command = Cli::command();
        let unset = run("", "", "").unwrap();
        for (name, _) in Options::defaults() {
            let flag = name.replace('_', "-");
            assert!(command.get_arguments().any(|a| a.get_long() == Some(&flag)));
            // A text no option takes as it stands, except free text.
            let var = env_name(&name);
            match run("", &format!("{var}=?"), "") {
                Ok(config) => assert_ne!(config, unset, "{var}"),
                Err(error) => assert!(error.starts_with(&format!("{var}: ")), "{error}"),
            }
            match run("", "", &format!("{name} = \"?\"")) {
                Ok(config) => assert_ne!(config, unset, "{name}"),
                Err(error) => {
                    let shown = shown(&name, "?");
                    let start = format!("bitsd.toml: {name}: invalid value {shown:?}: ");
                    assert!(error.starts_with(&start), "{error}");
                }
            }
        }
    }
}
