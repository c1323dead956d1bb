//! The `bitsd` binary: configuration, logging, signals; the rest is the library.

use std::ffi::OsStr;
use std::process::ExitCode;

use anyhow::Context as _;
use bitsd::commands::{Command, DeviceCommand, Fake, FakeDevice, WebhookCommand};
use bitsd::config::{self, Config};
use bitsd::install;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(install::SUBCOMMAND)) {
        return install_files();
    }
    let (config, command) = config::from_process();
    // `bitsd device` prints its outcome; a migration on the way is no news.
    let quiet = matches!(command, Some(Command::Device(_)));
    init_logging(&config, quiet);
    for name in &config.unknown_env {
        tracing::warn!("{name} names no option; ignored");
    }
    if matches!(command, None | Some(Command::Bootstrap)) {
        config.check_folders().unwrap_or_else(|e| e.exit());
    }
    let result = match command {
        Some(Command::Bootstrap) => bootstrap(&config),
        Some(Command::Fake(Fake::History { days })) => fake_history(&config, days),
        Some(Command::Fake(Fake::Device(fake))) => fake_device(&config, fake),
        Some(Command::Backup { file }) => backup(&config, &file),
        Some(Command::Check) => check(&config),
        Some(Command::Webhook(WebhookCommand::Test { name })) => webhook_test(&config, name),
        Some(Command::Device(command)) => device(&config, command),
        None => serve(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // bitsd's refusal, as a fake device heard it: its own words.
        Err(e) if e.is::<bitsd::fake::Refused>() => {
            bitsd::logging::eprint_line(format_args!("{e}"));
            ExitCode::FAILURE
        }
        Err(e) => {
            // Not `eprintln!`: it panics when standard error is gone.
            bitsd::logging::eprint_line(format_args!("bitsd: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// `bitsd install-files DIR`: the man pages and completions for `make
/// install`, written without reading any configuration.
fn install_files() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(2).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: bitsd {} DIR", install::SUBCOMMAND);
        return ExitCode::from(2);
    };
    let dir = std::path::Path::new(dir);
    match install::write_files(dir) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "bitsd: cannot write into {}: {}",
                dir.display(),
                bitsd::report::io_cause(&e)
            );
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config, quiet: bool) {
    let default = if config.options.developer_mode {
        "debug,hyper=info,tower_http=info"
    } else if quiet {
        "warn"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only on a terminal: a journal or a file gets plain text.
    use std::io::IsTerminal as _;
    // A line that cannot be written is dropped and counted, never reported
    // with `eprintln!` (which panics when standard error is gone).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(bitsd::logging::Stderr)
        .log_internal_errors(false)
        .init();
}

fn bootstrap(config: &Config) -> anyhow::Result<()> {
    let loaded = bitsd::bootstrap(config)?;
    println!(
        "{}: {} page(s) loaded, {} unchanged{}",
        config.db_path.display(),
        loaded.changed.len(),
        loaded.unchanged,
        if loaded.changed.is_empty() {
            String::new()
        } else {
            format!(" ({})", loaded.changed.join(", "))
        }
    );
    Ok(())
}

fn backup(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    let db = config.existing_db().map_err(anyhow::Error::msg)?;
    let done = bitsd::store::backup(db, file)
        .with_context(|| format!("cannot back up {} to {}", db.display(), file.display()))?;
    println!("{done}");
    Ok(())
}

fn check(config: &Config) -> anyhow::Result<()> {
    let db = config.existing_db().map_err(anyhow::Error::msg)?;
    let inventory =
        bitsd::store::check(db).with_context(|| format!("cannot check {}", db.display()))?;
    print!("{inventory}");
    Ok(())
}

/// `bitsd webhook test [NAME]`: one line per hook with its answer.
fn webhook_test(config: &Config, name: Option<String>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = config.spaceapi.as_ref().and_then(|s| s.url.as_deref());
    let site = bitsd::webhook::request::Site::new(config.space_name(), url);
    let tested = runtime.block_on(bitsd::webhook::test(
        &config.webhooks,
        site,
        name.as_deref(),
    ))?;
    let failed = tested.iter().filter(|t| !t.ok()).count();
    for t in &tested {
        match &t.answer {
            Ok(answer) => println!("{}: {}", t.hook, answer.summary()),
            Err(e) => println!("{}: {}", t.hook, bitsd::report::Report(e)),
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} webhook(s) failed", tested.len());
    }
    Ok(())
}

/// `bitsd device ...`: what it did, or why not in one line.
fn device(config: &Config, command: DeviceCommand) -> anyhow::Result<()> {
    let now = bitsd::clock::unix_seconds();
    let done = bitsd::registry::run(config, command, now).map_err(anyhow::Error::msg)?;
    println!("{done}");
    Ok(())
}

fn fake_history(config: &Config, days: u32) -> anyhow::Result<()> {
    let written = bitsd::fake::history(config, days)?;
    println!(
        "{}: {days} past day(s) written: {} status changes, {} temperature samples, {} messages",
        config.db_path.display(),
        written.status_changes,
        written.samples,
        written.messages
    );
    Ok(())
}

/// `bitsd fake device`: dials the configured device listener (with its
/// token) unless told otherwise.
fn fake_device(config: &Config, fake: FakeDevice) -> anyhow::Result<()> {
    use bitsd::fake::{Dial, Proof};
    if !(fake.interval.is_finite() && fake.interval > 0.0) {
        anyhow::bail!("--interval must be a positive number of seconds");
    }
    let options = &config.options;
    let dial = match (fake.control, fake.tls, fake.url) {
        (_, Some(tls), _) => Dial::Tls(tls),
        (_, _, Some(url)) => Dial::websocket(&url)?,
        (Some(control), _, _) => Dial::Control(control),
        (None, None, None) => match &options.control_local_usocket {
            Some(path) => anyhow::bail!(
                "the device listener is the unix socket {}; give --control HOST:PORT",
                path.display()
            ),
            None => Dial::Control(
                std::net::SocketAddr::new(
                    options.control_local_address,
                    options.control_local_port,
                )
                .to_string(),
            ),
        },
    };
    let proof = match (fake.claim, fake.key, fake.token) {
        (Some(code), _, _) => Proof::Claim(code),
        (_, Some(key), _) => Proof::Key(key),
        (_, _, Some(token)) => Proof::Token(token),
        (None, None, None) => match &options.control_token {
            Some(token) if matches!(dial, Dial::Control(_)) => Proof::Token(token.clone()),
            _ => Proof::Nothing,
        },
    };
    let tls = match dial.uses_tls() {
        true => Some(bitsd::fake::client_tls(fake.ca.as_deref())?),
        false => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bitsd::fake::device(
        &dial,
        proof,
        tls.as_ref(),
        std::time::Duration::from_secs_f64(fake.interval),
    ))
}

/// File descriptors kept back from `web_max_connections` for the database,
/// the listeners, the device and the log.
const RESERVED_FDS: u64 = 64;

/// Keeps big, short-lived allocations (a password check's 19 MiB) from
/// staying in the allocator once freed. glibc raises its mmap threshold
/// after the first such block is freed, and from then on keeps them in each
/// thread's arena: a few hundred failed logins left bitsd 150 MB larger.
/// Setting the threshold turns that adjustment off.
fn return_big_blocks_to_the_system() {
    // From 1 MiB up, a block gets pages of its own, returned when freed.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

fn serve(mut config: Config) -> anyhow::Result<()> {
    return_big_blocks_to_the_system();
    if config.options.developer_mode {
        tracing::warn!(
            "DEVELOPER MODE: debug logging, pages and files read from disk, no caching. Never use this in production."
        );
        for (folder, name) in [
            (config.assets_folder(), "assets"),
            (config.wiki_folder(), "wiki"),
        ] {
            match folder {
                Some(folder) => tracing::info!("{name} read from {}", folder.display()),
                None => tracing::warn!(
                    "the checkout's {name}/ folder is not there and no {name}_path is set; the built-in files are served"
                ),
            }
        }
    }
    // Every live client is a file descriptor: use all the system allows.
    // A cap above what the process may open would turn into failed accepts.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!("file descriptor limit {limit}");
            let cap = u64::from(config.options.web_max_connections);
            let room = limit.saturating_sub(RESERVED_FDS).max(1);
            if cap > room {
                tracing::warn!(
                    "web_max_connections {cap} is above what the file descriptor limit {limit} allows; using {room}"
                );
                config.options.web_max_connections = room as u32;
            }
        }
        Err(e) => tracing::warn!("cannot raise the file descriptor limit: {e}"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listeners = bitsd::net::Listeners::bind(&config).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        bitsd::run(config, listeners, shutdown).await
    })?;
    // Tasks that did not finish in the grace period are dropped here.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
