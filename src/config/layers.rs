//! The layers of configuration, each read into the same typed shape: a
//! [`Layer`] holds what one source sets (the command line, the `BITSD_*`
//! variables, the TOML file), and layers merge field by field before the
//! defaults fill the rest. The `options!` macro writes this code once for
//! every option declared in `options.rs`.
//!
//! [`Layer`]: super::Layer

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;

use super::values::Kind;

/// A configuration that cannot be used; printed as one line, exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag or subcommand, or `--help` and `--version`: clap's own report.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// A `BITSD_*` variable with a value its option refuses.
    #[error("{var}: invalid value {value:?} for --{flag}: {why}")]
    Env {
        var: String,
        value: String,
        flag: String,
        why: String,
    },
    /// The file cannot be read, is not TOML, or one of its keys is bad.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// A configured folder that is not there.
    #[error("{option}: {}: {why}", path.display())]
    Folder {
        option: &'static str,
        path: PathBuf,
        why: String,
    },
}

impl Error {
    pub(super) fn file(path: &Path, message: String) -> Error {
        Error::File {
            path: path.to_path_buf(),
            message,
        }
    }

    /// 2 for a bad configuration, 0 for `--help` and `--version`.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Cli(e) => e.exit_code(),
            Error::Env { .. } | Error::File { .. } | Error::Folder { .. } => 2,
        }
    }

    /// Prints the report (help and version on standard output, the rest on
    /// standard error) and exits with [`Error::exit_code`].
    pub fn exit(&self) -> ! {
        match self {
            Error::Cli(e) => e.exit(),
            Error::Env { .. } | Error::File { .. } | Error::Folder { .. } => {
                crate::logging::eprint_line(format_args!("bitsd: {self}"));
                std::process::exit(self.exit_code())
            }
        }
    }
}

/// The variable that sets option `name`.
fn env_name(name: &str) -> String {
    format!("BITSD_{}", name.to_ascii_uppercase())
}

fn flag_name(name: &str) -> String {
    name.replace('_', "-")
}

impl<T: Clone + Send + Sync + 'static> Kind<T> {
    /// The command-line flag of option `name`; its default is only shown,
    /// the defaults layer supplies it (see [`Kind::flag_value`]).
    pub(super) fn arg(
        &self,
        name: &'static str,
        heading: &'static str,
        doc: &[&str],
        default: Option<&'static str>,
    ) -> clap::Arg {
        let parse = self.parse.clone();
        let help: Vec<&str> = doc.iter().map(|line| line.trim()).collect();
        let value_name = match self.value_name {
            Some(value_name) => value_name.to_string(),
            None => name.to_ascii_uppercase(),
        };
        let arg = clap::Arg::new(name)
            .long(flag_name(name))
            .global(true)
            .help_heading(heading)
            .help(format!("{} [env: {}]", help.join(" "), env_name(name)))
            .value_name(value_name)
            .value_parser(move |text: &str| parse(text));
        let arg = match default {
            Some(default) => arg.default_value(default),
            None => arg,
        };
        if self.switch {
            arg.num_args(0..=1).default_missing_value("true")
        } else {
            arg
        }
    }

    /// The value of option `name` given on the command line, not clap's default.
    pub(super) fn flag_value(&self, name: &str, matches: &clap::ArgMatches) -> Option<T> {
        if matches.value_source(name) != Some(ValueSource::CommandLine) {
            return None;
        }
        matches.get_one::<T>(name).cloned()
    }

    /// The value of option `name` from its variable in `env`, if set.
    /// `value` as an error may repeat it: not at all when it may hold a
    /// password.
    fn shown(&self, value: &str) -> String {
        if self.secret {
            "(not repeated: it may hold a password)".to_string()
        } else {
            value.to_string()
        }
    }

    pub(super) fn env_value(
        &self,
        name: &str,
        env: &[(String, String)],
    ) -> Result<Option<T>, Error> {
        let var = env_name(name);
        let Some((_, value)) = env.iter().find(|(key, _)| *key == var) else {
            return Ok(None);
        };
        (self.parse)(value).map(Some).map_err(|why| Error::Env {
            var,
            value: self.shown(value),
            flag: flag_name(name),
            why,
        })
    }

    /// The value of key `name` of the file at `path`. Numbers and booleans
    /// are read as their text, so a file accepts what a flag accepts.
    pub(super) fn file_value(
        &self,
        path: &Path,
        name: &str,
        value: toml::Value,
    ) -> Result<T, Error> {
        let error = |message: String| Error::file(path, format!("{name}: {message}"));
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Table(pairs) if self.table => pairs
                .into_iter()
                .map(|(key, item)| match item {
                    toml::Value::String(s) if !s.contains([',', '=']) => Ok(format!("{key}={s}")),
                    toml::Value::String(_) => {
                        Err(error(format!("{key}: a name may not hold `,` or `=`")))
                    }
                    other => Err(error(format!(
                        "{key}: expected a string, found {}",
                        other.type_str()
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            toml::Value::Array(items) if self.list => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s),
                    other => Err(error(format!(
                        "expected a list of strings, found {}",
                        other.type_str()
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => {
                return Err(error(format!(
                    "expected a single value, found {}",
                    other.type_str()
                )));
            }
        };
        (self.parse)(&text)
            .map_err(|why| error(format!("invalid value {:?}: {why}", self.shown(&text))))
    }

    /// The default of option `name`, from the text `--help` shows.
    pub(super) fn default_value(&self, name: &str, text: &str) -> T {
        (self.parse)(text).unwrap_or_else(|why| panic!("default of {name}, {text:?}: {why}"))
    }
}

/// Declares every option once. Each entry is the option's doc comment (its
/// `--help` text), `name: Type`, then either `= "default"` (the text a flag
/// would carry, shown in `--help`) or nothing for an `Option<T>` that stays
/// unset, then its [`Kind`]. Entries are grouped under their `--help`
/// heading. Generates `Options` (what is in force), `Layer` (what one source
/// sets) and the reading of each source into a `Layer`.
macro_rules! options {
    ($(
        $heading:literal {
            $(
                $(#[doc = $doc:literal])+
                $name:ident: $ty:ty $(= $default:literal)?, $kind:expr;
            )+
        }
    )+) => {
        /// The options in force: each from the highest layer that sets it,
        /// else its default.
        #[derive(Debug, Clone)]
        pub struct Options {
            $($( $(#[doc = $doc])+ pub $name: $ty, )+)+
        }

        /// What one source sets: the command line, the environment or the
        /// file; `None` where it says nothing.
        #[derive(Debug, Clone, Default)]
        pub struct Layer {
            $($( pub $name: Option<$ty>, )+)+
        }

        /// How each option is read.
        struct Kinds {
            $($( $name: $crate::config::values::Kind<$ty>, )+)+
        }

        impl Kinds {
            fn new() -> Kinds {
                Kinds {
                    $($( $name: $crate::config::layers::when_unset!(
                        kind $kind $(, $default)?
                    ), )+)+
                }
            }
        }

        impl Layer {
            /// Every option's name, which is also its file key.
            pub const NAMES: &[&str] = &[$($( stringify!($name), )+)+];

            /// Every option's name and default, as a flag would write it
            /// (`None`: unset unless given).
            pub const DEFAULTS: &[(&str, Option<&str>)] = &[$($(
                (stringify!($name), $crate::config::layers::when_unset!(help $($default)?)),
            )+)+];

            /// The options set by `BITSD_*` variables in `env`.
            pub fn from_env(
                env: &[(String, String)],
            ) -> Result<Layer, $crate::config::layers::Error> {
                let kinds = Kinds::new();
                Ok(Layer {
                    $($( $name: kinds.$name.env_value(stringify!($name), env)?, )+)+
                })
            }

            /// The options set by the keys of `table`, read from `path`.
            /// A key that names no option is an error.
            pub fn from_file(
                path: &std::path::Path,
                table: toml::Table,
            ) -> Result<Layer, $crate::config::layers::Error> {
                let kinds = Kinds::new();
                let mut layer = Layer::default();
                for (key, value) in table {
                    match key.as_str() {
                        $($( stringify!($name) => {
                            layer.$name = Some(kinds.$name.file_value(path, &key, value)?);
                        } )+)+
                        _ => {
                            return Err($crate::config::layers::Error::file(
                                path,
                                format!("{key}: unknown key"),
                            ));
                        }
                    }
                }
                Ok(layer)
            }

            /// Each option from `self` where it is set, else from `lower`.
            pub fn over(self, lower: Layer) -> Layer {
                Layer {
                    $($( $name: self.$name.or(lower.$name), )+)+
                }
            }

            /// The options in force: defaults fill what no layer set.
            pub fn resolve(self) -> Options {
                let kinds = Kinds::new();
                Options {
                    $($( $name: $crate::config::layers::when_unset!(
                        value self.$name, kinds.$name, stringify!($name) $(, $default)?
                    ), )+)+
                }
            }
        }

        impl clap::Args for Layer {
            fn augment_args(command: clap::Command) -> clap::Command {
                let kinds = Kinds::new();
                command
                    $($( .arg(kinds.$name.arg(
                        stringify!($name),
                        $heading,
                        &[$($doc),+],
                        $crate::config::layers::when_unset!(help $($default)?),
                    )) )+)+
            }

            fn augment_args_for_update(command: clap::Command) -> clap::Command {
                Self::augment_args(command)
            }
        }

        impl clap::FromArgMatches for Layer {
            fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Layer, clap::Error> {
                let kinds = Kinds::new();
                Ok(Layer {
                    $($( $name: kinds.$name.flag_value(stringify!($name), matches), )+)+
                })
            }

            fn update_from_arg_matches(
                &mut self,
                matches: &clap::ArgMatches,
            ) -> Result<(), clap::Error> {
                let given = <Layer as clap::FromArgMatches>::from_arg_matches(matches)?;
                *self = given.over(self.clone());
                Ok(())
            }
        }
    };
}
pub(super) use options;

/// What an option's default, or its absence for an `Option<T>`, means for
/// its kind, its resolved value and its `--help`.
macro_rules! when_unset {
    (kind $kind:expr, $default:literal) => {
        $kind
    };
    (kind $kind:expr) => {
        $crate::config::values::Kind::optional($kind)
    };
    (value $value:expr, $kind:expr, $name:expr, $default:literal) => {
        $value.unwrap_or_else(|| $kind.default_value($name, $default))
    };
    // Only an `Option<T>` may go without a default: this flattens nothing else.
    (value $value:expr, $kind:expr, $name:expr) => {
        $value.flatten()
    };
    (help $default:literal) => {
        Some($default)
    };
    (help) => {
        None
    };
}
pub(super) use when_unset;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::Error;
    use crate::config::tests::env;
    use crate::config::{Cli, Layer};

    fn flags(args: &[&str]) -> Layer {
        let args = std::iter::once("bitsd").chain(args.iter().copied());
        Cli::try_parse_from(args).unwrap().options
    }

    fn file(text: &str) -> Result<Layer, Error> {
        Layer::from_file(Path::new("bitsd.toml"), text.parse().unwrap())
    }

    #[test]
    fn each_layer_beats_the_one_below() {
        let from_file = file("web_port = 1000\ncontrol_local_port = 1001\njsonver = 7\n").unwrap();
        let from_env = Layer::from_env(&env(&[
            ("BITSD_WEB_PORT", "2000"),
            ("BITSD_CONTROL_LOCAL_PORT", "2001"),
        ]))
        .unwrap();
        let from_flags = flags(&["--web-port", "3000"]);
        let options = from_flags.over(from_env).over(from_file).resolve();
        assert_eq!(options.web_port, 3000, "flag beats environment");
        assert_eq!(options.control_local_port, 2001, "environment beats file");
        assert_eq!(options.jsonver, 7, "file beats default");
        assert_eq!(options.forecast_weeks, 8, "default");
    }

    #[test]
    fn clap_defaults_stay_out_of_the_flag_layer() {
        let layer = flags(&["bootstrap"]);
        assert_eq!(layer.web_port, None);
        assert_eq!(layer.mdescape, None);
        assert_eq!(layer.db, None);
        let options = file("web_port = 1000\n")
            .map(|f| layer.over(f).resolve())
            .unwrap();
        assert_eq!(options.web_port, 1000);
    }

    #[test]
    fn every_default_parses() {
        let options = Layer::default().resolve();
        assert_eq!(options.web_address.to_string(), "0.0.0.0");
        assert_eq!(options.usocket_mode, 0o600);
        assert!(options.mdescape && options.log_requests && !options.developer_mode);
        assert_eq!(options.web_usocket, None);
        assert_eq!(options.timezone, None);
        assert!(
            options
                .control_remote_address
                .allows("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn every_option_has_a_flag_a_variable_and_a_key() {
        let command = <Cli as clap::CommandFactory>::command();
        let unset = format!("{:?}", Layer::default());
        for name in Layer::NAMES {
            let flag = name.replace('_', "-");
            assert!(
                command.get_arguments().any(|a| a.get_long() == Some(&flag)),
                "--{flag}"
            );
            // A text no option accepts as it stands, except free text.
            let var = format!("BITSD_{}", name.to_ascii_uppercase());
            match Layer::from_env(&env(&[(&var, "?")])) {
                Ok(layer) => assert_ne!(format!("{layer:?}"), unset, "{var}"),
                Err(err) => assert!(err.to_string().starts_with(&format!("{var}: ")), "{err}"),
            }
            match file(&format!("{name} = \"?\"\n")) {
                Ok(layer) => assert_ne!(format!("{layer:?}"), unset, "{name}"),
                Err(err) => assert!(
                    err.to_string()
                        .starts_with(&format!("bitsd.toml: {name}: invalid value")),
                    "{err}"
                ),
            }
        }
    }

    #[test]
    fn booleans_from_every_source() {
        let cases = [
            (flags(&["--developer-mode"]), true),
            (flags(&["--developer-mode=false"]), false),
            (flags(&["--developer-mode", "false"]), false),
            (
                Layer::from_env(&env(&[("BITSD_DEVELOPER_MODE", "true")])).unwrap(),
                true,
            ),
            (file("developer_mode = true\n").unwrap(), true),
            (file("developer_mode = \"false\"\n").unwrap(), false),
        ];
        for (layer, expected) in cases {
            assert_eq!(layer.developer_mode, Some(expected), "{layer:?}");
        }
        let off = Layer::from_env(&env(&[("BITSD_MDESCAPE", "false")])).unwrap();
        assert!(!flags(&[]).over(off.clone()).resolve().mdescape);
        assert!(flags(&["--mdescape"]).over(off).resolve().mdescape);
    }

    #[test]
    fn a_file_takes_what_a_flag_takes() {
        let layer = file(
            "web_port = \"9000\"\nusocket_mode = 660\ncontrol_token = 1234\n\
             control_remote_address = [\"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();
        assert_eq!(layer.web_port, Some(9000));
        assert_eq!(layer.usocket_mode, Some(0o660));
        assert_eq!(layer.control_token, Some(Some("1234".to_string())));
        let allow = layer.control_remote_address.unwrap();
        assert!(allow.allows("10.9.8.7".parse().unwrap()) && allow.allows("::1".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_variable_or_the_file_and_key() {
        let err = Layer::from_env(&env(&[("BITSD_WEB_PORT", "abc")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "BITSD_WEB_PORT: invalid value \"abc\" for --web-port: expected a number from 0 to 65535"
        );
        assert_eq!(err.exit_code(), 2);
        let cases = [
            (
                "web_port = \"abc\"",
                "bitsd.toml: web_port: invalid value \"abc\": expected a number from 0 to 65535",
            ),
            (
                "cookie_max_age_days = 0",
                "bitsd.toml: cookie_max_age_days: invalid value \"0\": expected a number from 1 to 3650",
            ),
            (
                "mdescape = \"no\"",
                "bitsd.toml: mdescape: invalid value \"no\": expected `true` or `false`",
            ),
            ("web_prot = 1", "bitsd.toml: web_prot: unknown key"),
            (
                "web_port = [1]",
                "bitsd.toml: web_port: expected a single value, found array",
            ),
            (
                "control_remote_address = [1]",
                "bitsd.toml: control_remote_address: expected a list of strings, found integer",
            ),
        ];
        for (text, expected) in cases {
            let err = file(text).unwrap_err();
            assert_eq!(err.to_string(), expected);
            assert_eq!(err.exit_code(), 2);
        }
    }
}
