//! What `make install` puts beside the binaries: the man pages and the bash,
//! zsh and fish completions of `bitsd` and `usermanage`, written from their
//! command lines so they say what `--help` says.
//!
//! `bitsd install-files DIR` writes them; the subcommand is not part of
//! [`config::Cli`], so neither the pages nor the completions show it.

use std::io;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, CommandFactory as _};
use clap_complete::Shell;
use roff::{Inline, Roff, bold, italic, roman};

use crate::config;
use crate::usermanage;

/// The hidden subcommand of `bitsd` that writes the files.
pub const SUBCOMMAND: &str = "install-files";

/// A section of a man page beyond what the command line tells: its title
/// and its paragraphs, each with a tag (a file, a variable) or none.
type Section = (&'static str, &'static [(&'static str, &'static str)]);

const BITSD_SECTIONS: &[Section] = &[
    (
        "FILES",
        &[
            (
                "/etc/bitsd.toml",
                "The configuration file read when neither --config nor BITSD_CONFIG names \
                 one, if it exists. Its keys are the option names with underscores \
                 (web_port = 8008). bitsd.toml.example in the documentation folder \
                 (share/doc/bitsd under the installation prefix) lists every option \
                 with its default.",
            ),
            (
                "bitsd.db",
                "The SQLite database, relative to the working directory unless --db \
                 names an absolute path. The systemd unit keeps it in \
                 /var/lib/bitsd/bitsd.db.",
            ),
        ],
    ),
    (
        "ENVIRONMENT",
        &[
            (
                "BITSD_*",
                "Each option as a variable: BITSD_WEB_PORT for --web-port, \
                 BITSD_CONFIG for --config. A flag beats the variable, which beats \
                 the file. A BITSD_ variable that names no option is ignored with a \
                 warning.",
            ),
            (
                "RUST_LOG",
                "What is logged to standard error, for example debug or \
                 bitsd=debug,info [default: info].",
            ),
            (
                "NOTIFY_SOCKET",
                "Set by systemd for a unit of Type=notify: bitsd sends READY=1 once \
                 its listeners are bound, the database is open and the state is \
                 loaded, and STOPPING=1 when it begins to shut down.",
            ),
        ],
    ),
    (
        "SIGNALS",
        &[(
            "SIGTERM, SIGINT",
            "Stop accepting connections, close the clients, finish pending writes \
             and exit 0.",
        )],
    ),
    (
        "EXIT STATUS",
        &[
            ("0", "Stopped by a signal, or the command succeeded."),
            (
                "1",
                "A failure at run time, such as a database that cannot be opened or an \
                 address in use; one line on standard error says which and why.",
            ),
            (
                "2",
                "A bad configuration: an unknown option or key, or a bad value; the \
                 message names the option, and the file or variable.",
            ),
        ],
    ),
    (
        "SEE ALSO",
        &[("", "usermanage(1), systemd.service(5), journalctl(1)")],
    ),
];

const USERMANAGE_SECTIONS: &[Section] = &[
    (
        "EXIT STATUS",
        &[
            ("0", "The command was carried out."),
            (
                "1",
                "The command failed and nothing changed; one line on standard error \
                 says why.",
            ),
            ("2", "A bad command line."),
        ],
    ),
    ("SEE ALSO", &[("", "bitsd(1)")]),
];

/// Writes every file into `dir`, laid out as it is installed under the
/// prefix's `share/` (`man/man1/bitsd.1`, `bash-completion/completions/bitsd`,
/// `zsh/site-functions/_bitsd`, `fish/vendor_completions.d/bitsd.fish`, and
/// the same for usermanage); returns the files written.
pub fn write_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let programs = [
        (config::Cli::command(), BITSD_SECTIONS),
        (usermanage::Cli::command(), USERMANAGE_SECTIONS),
    ];
    let mut written = Vec::new();
    for (command, sections) in programs {
        let name = command.get_name().to_string();
        let page = dir.join("man/man1").join(format!("{name}.1"));
        write(&page, man_page(command.clone(), sections).as_bytes())?;
        written.push(page);
        for (shell, folder, file) in [
            (Shell::Bash, "bash-completion/completions", name.clone()),
            (Shell::Zsh, "zsh/site-functions", format!("_{name}")),
            (
                Shell::Fish,
                "fish/vendor_completions.d",
                format!("{name}.fish"),
            ),
        ] {
            let path = dir.join(folder).join(file);
            write(&path, &completion(command.clone(), shell))?;
            written.push(path);
        }
    }
    Ok(written)
}

fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)
}

/// The completion script of `command` for `shell`.
pub fn completion(mut command: clap::Command, shell: Shell) -> Vec<u8> {
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    script
}

/// The man page of `command`: name, synopsis of every command, description,
/// options by group with their long help, each subcommand with its own
/// options, then `sections`.
pub fn man_page(mut command: clap::Command, sections: &[Section]) -> String {
    use clap_mangen::Man;
    command.build();
    let man = Man::new(command.clone()).title(command.get_name().to_uppercase());
    let part = |render: fn(&Man, &mut dyn io::Write) -> io::Result<()>| {
        let mut out = Vec::new();
        render(&man, &mut out).expect("writing to memory cannot fail");
        String::from_utf8_lossy(&out).into_owned()
    };
    // Each part opens with the same lines defining the apostrophe; keep one.
    let title = part(Man::render_title);
    let preamble = &title[..title.find(".TH").unwrap_or(0)];
    let mut page = title.clone();
    for text in [
        part(Man::render_name_section),
        synopsis(&command).render(),
        part(Man::render_description_section),
        part(Man::render_options_section),
        commands(&command).render(),
        extra(sections).render(),
        part(Man::render_version_section),
    ] {
        page.push_str(text.strip_prefix(preamble).unwrap_or(&text));
    }
    page
}

/// Every command the page describes: the subcommands without subcommands
/// of their own, with the words that name them (`fake device`).
fn leaves(command: &clap::Command) -> Vec<(String, &clap::Command)> {
    let mut found = Vec::new();
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        if sub.has_subcommands() {
            for (words, leaf) in leaves(sub) {
                found.push((format!("{} {words}", sub.get_name()), leaf));
            }
        } else {
            found.push((sub.get_name().to_string(), sub));
        }
    }
    found
}

/// The arguments a subcommand declares itself, not the global options it
/// inherits nor `--help`.
fn own_args(command: &clap::Command) -> impl Iterator<Item = &Arg> {
    command
        .get_arguments()
        .filter(|arg| !arg.is_global_set() && !arg.is_hide_set())
        .filter(|arg| !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version))
}

/// How `arg` is written: `--days DAYS`, `--password-stdin`, `USER`.
fn usage(arg: &Arg) -> Vec<Inline> {
    let value = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(|name| name.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_ascii_uppercase());
    match arg.get_long() {
        Some(long) if takes_value(arg) => {
            vec![bold(format!("--{long}")), roman(" "), italic(value)]
        }
        Some(long) => vec![bold(format!("--{long}"))],
        None => vec![italic(value)],
    }
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|range| range.takes_values())
        && !matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

fn synopsis(command: &clap::Command) -> Roff {
    let name = command.get_name();
    let mut forms = Vec::new();
    if !command.is_subcommand_required_set() {
        forms.push(vec![bold(name), roman(" [OPTIONS]")]);
    }
    for (words, leaf) in leaves(command) {
        let mut form = vec![bold(name), roman(" [OPTIONS] "), bold(words)];
        for arg in own_args(leaf) {
            form.push(roman(" "));
            if arg.is_required_set() {
                form.extend(usage(arg));
            } else {
                form.push(roman("["));
                form.extend(usage(arg));
                form.push(roman("]"));
            }
        }
        forms.push(form);
    }
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    for (i, form) in forms.into_iter().enumerate() {
        if i > 0 {
            roff.control("br", []);
        }
        roff.text(form);
    }
    roff
}

fn commands(command: &clap::Command) -> Roff {
    let mut roff = Roff::new();
    let leaves = leaves(command);
    if leaves.is_empty() {
        return roff;
    }
    roff.control("SH", ["COMMANDS"]);
    for (words, leaf) in leaves {
        roff.control("SS", [format!("{} {words}", command.get_name()).as_str()]);
        if let Some(about) = leaf.get_long_about().or_else(|| leaf.get_about()) {
            paragraphs(&mut roff, &about.to_string());
        }
        // A bare value (`USER`) without help is said by the synopsis.
        for arg in own_args(leaf).filter(|arg| arg.get_long().is_some() || arg.get_help().is_some())
        {
            roff.control("TP", []);
            let mut header = usage(arg);
            if let Some(default) = default_of(arg) {
                header.push(roman(format!(" [default: {default}]")));
            }
            roff.text(header);
            if let Some(help) = arg.get_long_help().or_else(|| arg.get_help()) {
                roff.text([roman(help.to_string())]);
            }
        }
    }
    roff
}

fn default_of(arg: &Arg) -> Option<String> {
    let defaults = arg.get_default_values();
    (takes_value(arg) && !defaults.is_empty()).then(|| {
        defaults
            .iter()
            .map(|d| d.to_string_lossy())
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn paragraphs(roff: &mut Roff, text: &str) {
    for (i, paragraph) in text.split("\n\n").enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        roff.text([roman(paragraph.replace('\n', " "))]);
    }
}

fn extra(sections: &[Section]) -> Roff {
    let mut roff = Roff::new();
    for (title, entries) in sections {
        roff.control("SH", [*title]);
        for (tag, text) in *entries {
            if tag.is_empty() {
                roff.text([roman(*text)]);
            } else {
                roff.control("TP", []);
                roff.text([bold(*tag)]);
                roff.text([roman(*text)]);
            }
        }
    }
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_is_in_the_page_with_its_help() {
        let page = man_page(config::Cli::command(), BITSD_SECTIONS);
        assert!(page.contains("\n.TH BITSD 1 "), "{}", &page[..80]);
        assert_eq!(page.matches(".ds Aq").count(), 2, "one preamble");
        for (name, _) in config::Options::defaults() {
            let flag = format!("\\-\\-{}", name.replace('_', "\\-"));
            assert!(page.contains(&flag), "{flag} missing");
        }
        assert!(page.contains("Address the HTTP/websocket server binds"));
        assert!(page.contains(".SS \"bitsd fake device\""), "{page}");
        assert!(page.contains("Seconds between two rounds of temperature samples"));
        assert!(!page.contains(SUBCOMMAND));
    }

    #[test]
    fn usermanage_page_has_every_command() {
        let page = man_page(usermanage::Cli::command(), USERMANAGE_SECTIONS);
        assert!(page.contains("\n.TH USERMANAGE 1 "));
        for command in [
            "add",
            "delete",
            "modify",
            "logout",
            "list",
            "mac add",
            "mac delete",
        ] {
            assert!(
                page.contains(&format!(".SS \"usermanage {command}\"")),
                "{command} missing"
            );
        }
        assert!(page.contains("Read the password as one line from standard input"));
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completion(config::Cli::command(), shell)).unwrap();
            assert!(script.contains("bootstrap"), "{shell}");
            assert!(script.contains("web-port"), "{shell}");
            assert!(!script.contains(SUBCOMMAND), "{shell}");
            let script = String::from_utf8(completion(usermanage::Cli::command(), shell)).unwrap();
            assert!(script.contains("password-stdin"), "{shell}");
        }
    }
}
