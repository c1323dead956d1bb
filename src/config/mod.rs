//! Configuration: command-line flags, `BITSD_*` variables and a TOML file.
//!
//! Each source is read into a typed [`Layer`] by the same parser per option,
//! then the layers merge field by field: flag > environment > file > default.
//! `options.rs` declares the options, `values.rs` parses their values,
//! `layers.rs` reads each source into a layer and `webhooks.rs` checks the
//! `[[webhook]]` tables of the file.

mod layers;
mod options;
mod values;
mod webhooks;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use clap::{CommandFactory, Parser, Subcommand};
use serde::Deserialize;

pub use layers::Error;
pub use options::{Layer, Options};
pub use values::{Allowlist, Lang, MqttUrl, SensorNames};
pub use webhooks::{ChatId, HookEvent, HookFormat, TELEGRAM_API, Webhook};

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
    /// TOML configuration file [default: /etc/bitsd.toml when it exists] [env: BITSD_CONFIG]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    // The options given as flags: the top layer.
    #[command(flatten)]
    pub options: Layer,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `bitsd` does; the server when no subcommand is given.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum Command {
    /// Create the database if missing and (re)load the built-in wiki pages and those under wiki_path.
    Bootstrap,
    /// Simulate a device, or fill the database with a plausible past.
    #[command(subcommand)]
    Fake(Fake),
    /// Write a consistent copy of the database to FILE, also while bitsd runs
    ///
    /// SQLite's online backup: safe while bitsd writes, unlike copying the
    /// file. The copy is one self-contained file, readable by its owner only, and
    /// passes integrity_check. It is written next to FILE under a hidden name and
    /// renamed to FILE when complete: an existing FILE is replaced, and stays
    /// whole until then. Prints one line when done.
    Backup {
        /// Where the copy goes; replaced if it exists
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Read the database without changing it and print what it holds
    ///
    /// Schema version, integrity, counts of each kind of record and the time
    /// its history spans. Nothing is written, not even a migration. Exits 1, with the reason on
    /// standard error, when the database is missing, damaged or unreadable. Run
    /// it on a database of the original BITS server before moving it to bitsd.
    Check,
    /// Webhooks: try them before the room opens for real.
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

/// `bitsd webhook ...`.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum WebhookCommand {
    /// Send one test delivery to each [[webhook]] of the config file, or to the
    /// one named, and print each answer; exits 1 if any fails
    Test {
        /// Only the hook with this name
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
}

/// `bitsd fake ...`: development and demos without hardware.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum Fake {
    /// Connect to bitsd as the device and play a day in the room: openings,
    /// temperatures drifting, now and then a message.
    Device {
        /// bitsd's device port [default: control_local_address:control_local_port]
        #[arg(long, value_name = "HOST:PORT")]
        control: Option<String>,
        /// Send `auth <token>` first [default: control_token, if set]
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

impl Config {
    /// The space's name, as [`SpaceApi::name`] gives it.
    pub fn space_name(&self) -> &str {
        self.spaceapi.as_ref().map_or("BITS", SpaceApi::name)
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
}

impl Config {
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
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    "no such directory".to_string()
                }
                Err(e) => crate::report::io_cause(&e),
            };
            return Err(Error::Folder {
                option,
                path: path.clone(),
                why,
            });
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
    let env: Vec<(String, String)> = env.into_iter().collect();
    let cli = Cli::try_parse_from(normalise_bool_flags(
        args.into_iter().map(Into::into).collect(),
    ))?;

    let given = match cli.config {
        Some(path) => Some(path),
        None => values::path().env_value("config", &env)?,
    };
    let path = given
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
    let mut table = toml::Table::new();
    if given.is_some() || path.exists() {
        table = read_file(&path)?;
    }
    let spaceapi = match table.remove("spaceapi") {
        Some(value) => Some(parse_spaceapi(&path, value)?),
        None => None,
    };
    let webhooks = match table.remove("webhook") {
        Some(value) => webhooks::parse(&path, value)?,
        None => Vec::new(),
    };
    let file = Layer::from_file(&path, table)?;
    let environment = Layer::from_env(&env)?;
    let layers = cli.options.over(environment).over(file);

    // `db` from any layer beats `db_uri`, which beats the default `db`.
    let db_path = layers
        .db
        .clone()
        .or_else(|| layers.db_uri.clone().flatten());
    let options = layers.resolve();
    let db_path = db_path.unwrap_or_else(|| options.db.clone());
    let timezone = options.timezone.unwrap_or_else(system_timezone);
    let unknown_env = env
        .iter()
        .map(|(key, _)| key)
        .filter(|key| {
            key.strip_prefix("BITSD_").is_some_and(|rest| {
                let name = rest.to_ascii_lowercase();
                name != "config" && !Layer::NAMES.contains(&name.as_str())
            })
        })
        .cloned()
        .collect();
    let config = Config {
        options,
        db_path,
        timezone,
        spaceapi,
        webhooks,
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

fn read_file(path: &Path) -> Result<toml::Table, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::file(
            path,
            format!("cannot read it: {}", crate::report::io_cause(&e)),
        )
    })?;
    text.parse::<toml::Table>().map_err(|e| {
        // The first line of toml's report says where: "TOML parse error at line 1, column 12".
        let report = e.to_string();
        let place = report
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("TOML parse error ");
        Error::file(
            path,
            format!("not valid TOML {place}: {}", e.message().trim_end()),
        )
    })
}

fn parse_spaceapi(path: &Path, value: toml::Value) -> Result<SpaceApi, Error> {
    SpaceApi::deserialize(value).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        Error::file(path, format!("spaceapi: {first}"))
    })
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
                Some(v @ ("true" | "false")) => {
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

    /// Environment variables as the layers read them.
    pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
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
        let (c, cmd) = load(
            ["bitsd", "fake", "history", "--days", "3", "--auto-status"],
            env(&[]),
        )
        .unwrap();
        assert!(c.options.auto_status);
        assert_eq!(cmd, Some(Command::Fake(Fake::History { days: 3 })));
        let (c, cmd) = load(["bitsd", "backup", "copy.db", "--db", "x.db"], env(&[])).unwrap();
        assert_eq!(c.db_path, PathBuf::from("x.db"));
        assert_eq!(
            cmd,
            Some(Command::Backup {
                file: PathBuf::from("copy.db")
            })
        );
        let (c, cmd) = load(["bitsd", "--db", "y.db", "check"], env(&[])).unwrap();
        assert_eq!(c.db_path, PathBuf::from("y.db"));
        assert_eq!(cmd, Some(Command::Check));
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
        assert_eq!(err.to_string(), format!("{file}: web_prot: unknown key"));

        let (_d, file) = with_file("web_port = \"many\"\n");
        let err = load(["bitsd", "--config", &file], env(&[])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            err.to_string(),
            format!("{file}: web_port: invalid value \"many\": expected a number from 0 to 65535")
        );

        let (_d, file) = with_file("[spaceapi]\nspace = \"X\"\ncolour = 1\n");
        let err = load(["bitsd", "--config", &file], env(&[])).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");

        let (_d, file) = with_file("config = \"other.toml\"\n");
        let err = load(["bitsd", "--config", &file], env(&[])).unwrap_err();
        assert_eq!(err.to_string(), format!("{file}: config: unknown key"));

        let (_d, file) = with_file("web_port = = 1\n");
        let err = load(["bitsd", "--config", &file], env(&[])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{file}: not valid TOML at line 1, column 12: ")),
            "{err}"
        );

        let err = load(["bitsd", "--config", "/nonexistent/bitsd.toml"], env(&[])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            err.to_string(),
            "/nonexistent/bitsd.toml: cannot read it: no such file or directory"
        );
    }

    #[test]
    fn a_bad_mqtt_url_is_refused_without_repeating_its_password() {
        let url = "mqtt://bitsd:hunter2@broker:88888";
        let error = load(["bitsd"], env(&[("BITSD_MQTT_URL", url)]))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("BITSD_MQTT_URL: invalid value"),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
        let (_d, file) = with_file(&format!("mqtt_url = \"{url}\"\n"));
        let error = load(["bitsd", "--config", &file], env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("mqtt_url: invalid value"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn sensor_names_from_a_table_a_flag_or_a_variable() {
        let (_d, file) = with_file("sensor_names = { 0 = \"Lab\", 12 = \"Outside door\" }\n");
        let (c, _) = load(["bitsd", "--config", &file], env(&[])).unwrap();
        let names = c.options.sensor_names();
        assert_eq!(names.get(0), Some("Lab"));
        assert_eq!(names.get(12), Some("Outside door"));
        assert_eq!(names.get(1), None);
        let (c, _) = load(["bitsd", "--sensor-names", " 3 = Cellar ,4=Roof"], env(&[])).unwrap();
        assert_eq!(c.options.sensor_names().get(3), Some("Cellar"));
        assert_eq!(c.options.sensor_names().get(4), Some("Roof"));
        let (c, _) = load(["bitsd"], env(&[("BITSD_SENSOR_NAMES", "7=Lab")])).unwrap();
        assert_eq!(c.options.sensor_names().get(7), Some("Lab"));
        let (c, _) = load(["bitsd"], env(&[])).unwrap();
        assert!(c.options.sensor_names.is_none());
        for (bad, why) in [
            ("x=Lab", "not a sensor number"),
            ("-1=Lab", "not a sensor number"),
            ("1", "NUMBER=NAME"),
            ("1=", "1 to 64 characters"),
            ("1=a,1=b", "named twice"),
        ] {
            let flag = format!("--sensor-names={bad}");
            let error = load(["bitsd", flag.as_str()], env(&[]))
                .unwrap_err()
                .to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
        let (_d, file) = with_file("sensor_names = { 0 = \"a,b\" }\n");
        let error = load(["bitsd", "--config", &file], env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("sensor_names: 0: a name may not hold"),
            "{error}"
        );
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
    fn the_file_is_named_by_flag_or_variable() {
        let (_d, file) = with_file("jsonver = 9\n");
        let (c, _) = load(["bitsd"], env(&[("BITSD_CONFIG", &file)])).unwrap();
        assert_eq!(c.options.jsonver, 9);
        let e = env(&[("BITSD_CONFIG", "/nonexistent/bitsd.toml")]);
        let (c, _) = load(["bitsd", "--config", &file], e).unwrap();
        assert_eq!(c.options.jsonver, 9, "the flag beats the variable");
    }

    #[test]
    fn db_uri_is_a_synonym() {
        let (c, _) = load(["bitsd", "--db-uri", "sqlite:///var/bits.db"], env(&[])).unwrap();
        assert_eq!(c.db_path, PathBuf::from("var/bits.db"));
        let (c, _) = load(["bitsd", "--db-uri", "sqlite:////var/bits.db"], env(&[])).unwrap();
        assert_eq!(c.db_path, PathBuf::from("/var/bits.db"));
        // `db` set in any layer beats `db_uri` in any other.
        let (_d, file) = with_file("db = \"f.db\"\n");
        let args = ["bitsd", "--config", &file, "--db-uri", "sqlite:///u.db"];
        let (c, _) = load(args, env(&[])).unwrap();
        assert_eq!(c.db_path, PathBuf::from("f.db"));
    }

    #[test]
    fn unknown_environment_variables_are_reported() {
        let e = env(&[
            ("BITSD_WEB_PORTT", "1"),
            ("BITSD_DB", "y.db"),
            ("BITSD_CONFIG", "/dev/null"),
            ("HOME", "/"),
        ]);
        let (c, _) = load(["bitsd"], e).unwrap();
        assert_eq!(c.unknown_env, vec!["BITSD_WEB_PORTT".to_string()]);
        assert_eq!(c.db_path, PathBuf::from("y.db"));
    }
}
