//! The documentation cannot drift from the code: `bitsd --help`, the
//! option table of `docs/running.md` and `deploy/bitsd.toml.example` name
//! the same options with the same defaults, every route is in
//! `docs/http-api.md`, and the README stays a first screen: under 300
//! lines, its two commands real `make` targets, its links to `docs/` whole.

mod common;

use std::collections::BTreeSet;

use bitsd::config::{self, Options};
use common::{bitsd_command, root, stdout_of};

fn readme() -> String {
    read("README.md")
}

/// A file of the checkout, by its path from the root.
fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The section of `text` under the heading `title`, up to the next heading
/// of the same level.
fn section<'a>(text: &'a str, title: &str) -> &'a str {
    let start = text
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("no section {title:?}"));
    let rest = &text[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    &rest[..end]
}

/// The first cell of each table row in `text`, and the second.
fn rows(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| l.starts_with("| `") || l.starts_with("| `["))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let first = cells[0].trim_start_matches("| ").to_string();
            (first, cells.get(1).unwrap_or(&"").to_string())
        })
        .collect()
}

fn names() -> BTreeSet<String> {
    Options::defaults()
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn help_names_every_option_and_no_other() {
    let help = stdout_of(bitsd_command().arg("--help").output().unwrap());
    let flags: BTreeSet<String> = help
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .replace('-', "_")
        })
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    let mut expected = names();
    expected.extend(["config", "help", "version"].map(String::from));
    // `--db` is named by `--db-uri`'s help too; nothing else may appear.
    assert_eq!(flags, expected);
}

#[test]
fn the_option_table_has_every_option_with_its_default() {
    let running = read("docs/running.md");
    let table = rows(section(&running, "Configuration"));
    let documented: BTreeSet<String> = table
        .iter()
        .filter(|(key, _)| !key.starts_with("`["))
        .map(|(key, _)| key.trim_matches('`').to_string())
        .collect();
    assert_eq!(documented, names(), "docs/running.md option table");
    for (name, default) in Options::defaults() {
        let (_, cell) = table
            .iter()
            .find(|(key, _)| key.trim_matches('`') == name)
            .unwrap();
        match default {
            Some(default) => assert_eq!(cell, &format!("`{default}`"), "{name}"),
            None => assert!(cell.starts_with("unset"), "{name}: {cell}"),
        }
    }
    assert!(
        table.iter().any(|(key, _)| key == "`[spaceapi]` table"),
        "the [spaceapi] table is documented"
    );
}

/// The example's `key = value` lines, commented (`# key = value`) or not,
/// as (key, value text).
fn example_settings(example: &str) -> Vec<(String, String)> {
    example
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .filter_map(|l| {
            let (key, value) = l.split_once(" = ")?;
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
                .then(|| (key.to_string(), value.to_string()))
        })
        .collect()
}

#[test]
fn the_example_config_has_every_option_at_its_default_and_loads() {
    let path = root().join("deploy/bitsd.toml.example");
    let example = std::fs::read_to_string(&path).unwrap();
    let (top, spaceapi) = example
        .split_once("# [spaceapi]\n")
        .expect("the example has a [spaceapi] table");
    let settings = example_settings(top);
    let keys: Vec<&str> = settings.iter().map(|(k, _)| k.as_str()).collect();
    let unique: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "an option appears twice: {keys:?}"
    );
    assert_eq!(unique, names(), "example options");

    for (name, default) in Options::defaults() {
        let (_, value) = settings.iter().find(|(k, _)| *k == name).unwrap();
        let text = match value.parse::<toml::Value>() {
            Ok(toml::Value::String(s)) => s,
            Ok(other) => other.to_string(),
            Err(e) => panic!("{name} = {value}: {e}"),
        };
        let set = top.lines().any(|l| l.starts_with(&format!("{name} = ")));
        match default {
            // A line the file sets says the default in its comment.
            Some(default) if set => {
                let at = top.find(&format!("\n{name} = ")).unwrap();
                let comment = top[..at].rsplit("\n\n").next().unwrap();
                let shown = toml::Value::String(default.clone()).to_string();
                assert!(
                    comment.contains(&format!("default {default}"))
                        || comment.contains(&format!("default {shown}")),
                    "{name}: its comment must say the default {shown}"
                );
            }
            Some(default) => assert_eq!(text, default, "{name}"),
            None => {
                // An unset option shows an example value and says so.
                let at = top.find(&format!("# {name} = ")).unwrap();
                let before = &top[..at].rsplit("\n\n").next().unwrap().to_lowercase();
                assert!(
                    before.contains("unset"),
                    "{name}: its comment must say it is unset by default"
                );
            }
        }
    }

    // What the file sets as it is: the database, by absolute path, so
    // that every command finds it from any folder.
    let set: Vec<(&str, &str)> = top
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = "))
        .collect();
    assert_eq!(set, [("db", "\"/var/lib/bitsd/bitsd.db\"")]);
    // The tables hold their own keys only: each option is named once,
    // above the first table.
    let below: Vec<String> = example_settings(spaceapi)
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| names().contains(key))
        .collect();
    assert!(
        below.is_empty(),
        "top-level options inside a table: {below:?}"
    );

    // Every line uncommented is a valid configuration.
    let mut whole = String::new();
    for (key, value) in example_settings(top) {
        whole.push_str(&format!("{key} = {value}\n"));
    }
    let (spaceapi, webhooks) = spaceapi
        .split_once("# [[webhook]]\n")
        .expect("the example has [[webhook]] tables");
    whole.push_str("[spaceapi]\n");
    for (key, value) in example_settings(spaceapi) {
        whole.push_str(&format!("{key} = {value}\n"));
    }
    for table in format!("# [[webhook]]\n{webhooks}")
        .split("# [[webhook]]\n")
        .skip(1)
    {
        whole.push_str("[[webhook]]\n");
        for (key, value) in example_settings(table) {
            whole.push_str(&format!("{key} = {value}\n"));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    // Folders named in the example must exist for a start, not for a load.
    let file = dir.path().join("bitsd.toml");
    std::fs::write(&file, &whole).unwrap();
    let (loaded, _) = config::load(
        ["bitsd", "--config", file.to_str().unwrap()],
        std::iter::empty::<(String, String)>(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{whole}"));
    let hooks: Vec<(&str, &str)> = loaded
        .webhooks
        .iter()
        .map(|h| (h.name.as_str(), h.format.as_str()))
        .collect();
    assert_eq!(hooks, [("log", "json"), ("room", "matrix")]);
    assert!(loaded.webhooks[0].secret.is_some() && loaded.webhooks[1].debounce > 0);
    let spaceapi = format!("{:?}", loaded.spaceapi.expect("[spaceapi] is read"));
    assert!(
        !spaceapi.contains("None"),
        "every [spaceapi] field is in the example: {spaceapi}"
    );
}

#[test]
fn every_route_is_in_the_http_api() {
    let mut routes = BTreeSet::new();
    let mut stack = vec![root().join("src/web")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let code = std::fs::read_to_string(&path).unwrap();
            for call in [".route(", ".nest_service("] {
                for piece in code.split(call).skip(1) {
                    let route = piece.trim_start().trim_start_matches('"');
                    let Some(end) = route.find('"') else { continue };
                    routes.insert(route[..end].replace('{', "<").replace('}', ">"));
                }
            }
        }
    }
    assert!(routes.len() > 15, "routes found: {routes:?}");
    let api = read("docs/http-api.md");
    let cells: Vec<String> = api
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.split(" | ").next().unwrap().to_string())
        .collect();
    for route in &routes {
        let documented = cells.iter().any(|cell| {
            cell.split(", ")
                .map(|c| c.trim_start_matches("| ").trim_matches('`'))
                .map(|c| c.strip_prefix("POST ").unwrap_or(c))
                .any(|c| c == route || c.strip_suffix("/<path>") == Some(route))
        });
        assert!(
            documented,
            "{route} has no row in a table of docs/http-api.md"
        );
    }
}

/// The targets of the markdown links `[text](target)` in `text`.
fn links(text: &str) -> Vec<&str> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target))
        .collect()
}

#[test]
fn the_readme_is_a_first_screen_with_its_commands() {
    let readme = readme();
    let lines = readme.lines().count();
    assert!(
        lines < 300,
        "README.md has {lines} lines: move sections to docs/"
    );
    // The two commands stand in the first code block, and are make targets.
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the README opens with a sh block");
    let makefile = read("Makefile");
    for target in ["run", "test"] {
        assert!(
            block
                .lines()
                .any(|l| l.starts_with(&format!("make {target} "))),
            "`make {target}` is in the README's first block:\n{block}"
        );
        assert!(
            makefile
                .lines()
                .any(|l| l.starts_with(&format!("{target}:"))),
            "the Makefile has a {target} target"
        );
    }
}

#[test]
fn the_readme_links_every_document_and_every_link_resolves() {
    let readme = readme();
    let mut docs = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            docs.insert(format!("docs/{name}"));
        }
    }
    assert!(docs.len() >= 5, "docs/: {docs:?}");
    let linked: BTreeSet<String> = links(&readme)
        .into_iter()
        .map(|l| l.split('#').next().unwrap().to_string())
        .filter(|l| l.starts_with("docs/"))
        .collect();
    assert_eq!(
        linked, docs,
        "the README links every file of docs/, and only those"
    );

    // Every relative link of the README and of docs/ names a file that
    // exists, and an anchor names a heading of it.
    let mut pages = vec![("README.md".to_string(), readme.clone())];
    pages.extend(docs.iter().map(|d| (d.clone(), read(d))));
    for (page, text) in &pages {
        let folder = std::path::Path::new(page).parent().unwrap();
        for link in links(text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() {
                std::path::PathBuf::from(page)
            } else {
                folder.join(file)
            };
            let path = root().join(&target);
            assert!(path.exists(), "{page}: link {link} names no file");
            if !anchor.is_empty() {
                let target_text = std::fs::read_to_string(&path).unwrap();
                let found = target_text
                    .lines()
                    .filter(|l| l.starts_with('#'))
                    .any(|l| slug(l.trim_start_matches('#').trim()) == anchor);
                assert!(found, "{page}: link {link} names no heading");
            }
        }
    }
}

/// A heading's anchor as GitHub makes it: lower case, spaces to dashes,
/// punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The commands of the first `sh` block of `text`, without comment lines
/// and trailing comments.
fn first_block(text: &str) -> Vec<&str> {
    let start = text.find("```sh\n").expect("a sh block") + 6;
    let block = &text[start..start + text[start..].find("```").unwrap()];
    block
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(" # ").next().unwrap().trim())
        .collect()
}

#[test]
fn the_deploy_steps_build_as_a_user_and_install_as_root() {
    let running = read("docs/running.md");
    let steps = first_block(section(&running, "Deploy"));
    let at = |what: &str| {
        steps
            .iter()
            .position(|s| s.starts_with(what))
            .unwrap_or_else(|| panic!("no step {what:?} in {steps:#?}"))
    };
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let repository = manifest["package"]["repository"].as_str().unwrap();
    let clone = at(&format!("git clone {repository} "));
    let (user, rustup, build, back) = (at("su - "), at("curl "), at("make"), at("exit"));
    let install = at("make -C ");
    assert!(steps[rustup].contains("https://sh.rustup.rs"));
    // Debian's rustc is too old: rustup's goes first, for the user.
    assert!(user < rustup && rustup < clone && clone < build && build < back);
    assert_eq!(steps[build], "make");
    assert!(back < install && steps[install].ends_with(" install"));
    // Installed, the commands find the database in /etc/bitsd.toml.
    assert!(steps.iter().all(|s| !s.contains("--db")), "{steps:#?}");
    let configured =
        at("install -m 0644 /usr/local/share/doc/bitsd/bitsd.toml.example /etc/bitsd.toml");
    assert!(configured < at("usermanage add "));
    let rust = manifest["package"]["rust-version"].as_str().unwrap();
    assert!(
        running.contains(&format!("Rust {rust} or later")),
        "the toolchain needed"
    );
}
