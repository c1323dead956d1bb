//! The subcommands of `bitsd`, as its command line declares them: what
//! each one does is in `main.rs` (and `registry` for `bitsd device`); the
//! options they share are `config`'s.

// The doc comments are `--help` text, written for a terminal, not rustdoc.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::{Args, Subcommand};

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
    /// Registered devices: add one, pair it by claim code, list, revoke, delete.
    ///
    /// Safe while bitsd runs on the same database. NAME is 1 to 32 ASCII
    /// letters, digits, '-' or '_', unique ignoring case; BITS is the original
    /// device's and cannot be registered. At most 64 devices.
    #[command(subcommand)]
    Device(DeviceCommand),
}

/// `bitsd device ...`.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum DeviceCommand {
    /// Register a device and print its claim code, valid once for claim_ttl seconds
    Add {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Print a new claim code for a device; its key works until the code is claimed
    Claim {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Print each device: name, last seen, address, transport, when its key was made
    List,
    /// End a device's key and any claim code not yet used
    Revoke {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Remove a device; what it sent stays
    Delete {
        #[arg(value_name = "NAME")]
        name: String,
    },
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
    ///
    /// As the original device on the control port (--control, --token), or
    /// as a registered device on any transport (--control, --tls or --url,
    /// with --claim or --key). A refused claim code, key or token, or a
    /// certificate that fails the check, ends it with status 1.
    Device(FakeDevice),
    /// Write plausible past days (openings, temperatures, messages) into the database.
    History {
        /// How many days back from yesterday
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3660))]
        days: u32,
    },
}

/// `bitsd fake device`: where it dials and how it proves who it is.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct FakeDevice {
    /// bitsd's device port, plain TCP [default: control_local_address:control_local_port]
    #[arg(long, value_name = "HOST:PORT", group = "dial")]
    pub control: Option<String>,
    /// bitsd's TLS device port (control_tls_port), for a registered device
    #[arg(long, value_name = "HOST:PORT", group = "dial", requires = "proof")]
    pub tls: Option<String>,
    /// bitsd's device websocket, ws://HOST:PORT/device or wss://HOST/device, for a registered device
    #[arg(long, value_name = "URL", group = "dial", requires = "proof")]
    pub url: Option<String>,
    /// Check bitsd's certificate against those in FILE (PEM) instead of the system's authorities, for --tls and wss://
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Send `auth <token>` first, as the original device [default: control_token, if set]
    #[arg(long, value_name = "T", conflicts_with_all = ["tls", "url"])]
    pub token: Option<String>,
    /// Pair as a registered device: send `claim CODE` first, then print the key bitsd answers as `key: KEY`
    #[arg(long, value_name = "CODE", group = "proof", conflicts_with = "token")]
    pub claim: Option<String>,
    /// Send `auth KEY` first, as the registered device with that key
    #[arg(long, value_name = "KEY", group = "proof", conflicts_with = "token")]
    pub key: Option<String>,
    /// Seconds between two rounds of temperature samples
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    pub interval: f64,
}
