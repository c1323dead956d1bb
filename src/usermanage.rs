//! The `usermanage` program: its command line and its commands, which add,
//! delete, modify and list users and their MAC hashes.
//!
//! Safe while bitsd runs on the same database: SQLite serialises the writes
//! and each command is one transaction.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::auth;
use crate::report::Report;
use crate::store::{AccountError, DEVICE_USER, Db, Visibility};

/// Manage the members of a bitsd installation.
#[derive(Parser, Debug)]
#[command(
    name = "usermanage",
    version,
    long_about = "Manage the members of a bitsd installation: their accounts, \
        passwords and sessions, and the MAC hashes that put them in the roster.\n\n\
        It finds the database as bitsd does (--db, BITSD_DB, the file given by \
        --config or BITSD_CONFIG, /etc/bitsd.toml) and may run while bitsd \
        serves the same database."
)]
pub struct Cli {
    /// TOML configuration file whose `db` (or `db_uri`) is used [default: /etc/bitsd.toml when it exists]
    #[arg(long, global = true, value_name = "F")]
    pub config: Option<PathBuf>,
    /// SQLite database file (also BITSD_DB) [default: bitsd.db]
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What `usermanage` does.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Add a user; the password is asked twice on the terminal.
    Add {
        user: String,
        /// Read the password as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user, their MAC hashes and their sessions.
    Delete { user: String },
    /// Change a user's password (and end their sessions), their visibility, or both.
    Modify {
        user: String,
        /// Read the password as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Who sees them in the room: hidden (nobody), counted (in the number
        /// of people present) or named (also by name to members); alone, the
        /// password is left as it is.
        #[arg(long, value_name = "hidden|counted|named")]
        visibility: Option<String>,
    },
    /// End every session of a user (log them out everywhere); nothing else changes.
    Logout { user: String },
    /// List users, their visibility and how many MAC hashes each has.
    List,
    /// Manage the MAC hashes that put a user in the roster.
    Mac {
        #[command(subcommand)]
        command: MacCommand,
    },
}

/// `usermanage mac ...`.
#[derive(Subcommand, Debug)]
pub enum MacCommand {
    /// Assign a MAC hash (or the hash of a MAC address) to a user.
    Add {
        user: String,
        /// The SHA-256 hex of the address, as the router reports it.
        #[arg(
            long,
            value_name = "HASH",
            required_unless_present = "mac",
            conflicts_with = "mac"
        )]
        hash: Option<String>,
        /// The address itself; its hash is stored.
        #[arg(long, value_name = "AA:BB:CC:DD:EE:FF")]
        mac: Option<String>,
    },
    /// Remove a MAC hash.
    Delete { hash: String },
}

/// Carries out one command: the message to print, or a one-line error.
pub fn run(cli: Cli) -> Result<String, String> {
    let path = database_path(&cli)?;
    // Check what can be checked before asking for a password or opening.
    match &cli.command {
        Command::Add { user, .. } => check_name(user)?,
        Command::Delete { user } if user == DEVICE_USER => {
            return Err(format!("the device user {DEVICE_USER} cannot be deleted"));
        }
        Command::Modify {
            user,
            password_stdin,
            visibility,
        } => {
            if let Some(v) = visibility {
                Visibility::parse(v)?;
            }
            if user == DEVICE_USER && (*password_stdin || visibility.is_none()) {
                return Err(format!("the device user {DEVICE_USER} has no password"));
            }
        }
        _ => {}
    }
    let mut db =
        Db::open(&path, false).map_err(|e| format!("{}: {}", path.display(), Report(&e)))?;
    let account = |e: AccountError| Report(&e).to_string();
    let store = |e: crate::store::StoreError| Report(&e).to_string();
    match cli.command {
        Command::Add {
            user,
            password_stdin,
        } => {
            if db.credentials(&user).map_err(store)?.is_some() {
                return Err(AccountError::UserExists(user).to_string());
            }
            let hash = auth::hash_password(&read_password(&user, password_stdin)?);
            db.add_user(&user, &hash).map_err(account)?;
            Ok(format!("added {user}"))
        }
        Command::Delete { user } => {
            db.delete_user(&user).map_err(account)?;
            Ok(format!("deleted {user}"))
        }
        Command::Modify {
            user,
            password_stdin,
            visibility,
        } => {
            if db.credentials(&user).map_err(store)?.is_none() {
                return Err(AccountError::NoSuchUser(user).to_string());
            }
            let visibility = visibility.as_deref().map(Visibility::parse).transpose()?;
            let mut done = Vec::new();
            // Alone, --visibility leaves the password as it is.
            if password_stdin || visibility.is_none() {
                let hash = auth::hash_password(&read_password(&user, password_stdin)?);
                db.set_password(&user, &hash).map_err(account)?;
                done.push(format!(
                    "changed the password of {user}; their sessions are ended"
                ));
            }
            if let Some(visibility) = visibility {
                db.set_visibility_of(&user, visibility).map_err(account)?;
                done.push(format!("{user} is now {visibility}"));
            }
            Ok(done.join("\n"))
        }
        Command::Logout { user } => {
            let ended = db.end_sessions(&user).map_err(account)?;
            Ok(format!("ended {ended} session(s) of {user}"))
        }
        Command::List => {
            let users = db.users().map_err(store)?;
            let lines: Vec<String> = users
                .iter()
                .map(|(u, visibility, macs)| {
                    format!("{}\t{visibility}\t{macs} MAC hash(es)", u.name)
                })
                .collect();
            Ok(lines.join("\n"))
        }
        Command::Mac {
            command: MacCommand::Add { user, hash, mac },
        } => {
            let hash = match (hash, mac) {
                (Some(hash), _) => check_hash(&hash)?,
                (None, Some(mac)) => auth::mac_hash(&mac).ok_or_else(|| {
                    format!("{mac:?} is not a MAC address like AA:BB:CC:DD:EE:FF")
                })?,
                (None, None) => return Err("give --hash or --mac".into()),
            };
            db.add_mac(&user, &hash).map_err(account)?;
            Ok(format!("added MAC hash {hash} to {user}"))
        }
        Command::Mac {
            command: MacCommand::Delete { hash },
        } => {
            let hash = check_hash(&hash)?;
            db.delete_mac(&hash).map_err(account)?;
            Ok(format!("deleted MAC hash {hash}"))
        }
    }
}

/// The database bitsd would use with the same `--config`, `--db`, variables
/// and file, which must exist: `usermanage` never creates one.
fn database_path(cli: &Cli) -> Result<PathBuf, String> {
    let mut args = vec!["bitsd".to_string()];
    if let Some(config) = &cli.config {
        args.extend(["--config".into(), config.display().to_string()]);
    }
    if let Some(db) = &cli.db {
        args.extend(["--db".into(), db.display().to_string()]);
    }
    let env = std::env::vars().filter(|(k, _)| k.starts_with("BITSD_"));
    let (config, _) = crate::config::load(args, env).map_err(|e| {
        e.to_string()
            .lines()
            .next()
            .unwrap_or("bad configuration")
            .to_string()
    })?;
    config.existing_db().map(Path::to_path_buf)
}

/// New user names: 1 to 64 letters (of any script), digits, `.`, `_` and
/// `-`. Existing users with other names keep working.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphabetic() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid user name (1 to 64 letters, digits, '.', '_' or '-')"
        ))
    }
}

/// MAC hashes are SHA-256 hex: 64 hex digits, stored lower-case.
fn check_hash(hash: &str) -> Result<String, String> {
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash.to_ascii_lowercase())
    } else {
        Err(format!(
            "{hash:?} is not a SHA-256 hex hash (64 hex digits)"
        ))
    }
}

fn read_password(user: &str, from_stdin: bool) -> Result<String, String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let prompt = format!("Password for {user}: ");
        let first = rpassword::prompt_password(&prompt).map_err(|e| {
            format!("cannot read a password from the terminal ({e}); use --password-stdin")
        })?;
        let second = rpassword::prompt_password(format!("Again, password for {user}: "))
            .map_err(|e| format!("cannot read a password from the terminal ({e})"))?;
        if first != second {
            return Err("the two passwords differ; nothing changed".into());
        }
        first
    };
    if password.is_empty() {
        return Err("the password is empty; nothing changed".into());
    }
    Ok(password)
}
