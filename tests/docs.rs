//! The documentation cannot drift from the code: `bitsd --help`, the
//! README's option table and `deploy/bitsd.toml.example` name the same
//! options with the same defaults, and every route is in the README.

mod common;

use std::collections::BTreeSet;

use bitsd::config::{self, Layer};
use common::{bitsd_command, root, stdout_of};

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
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
    Layer::NAMES.iter().map(|n| n.to_string()).collect()
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
fn the_readme_table_has_every_option_with_its_default() {
    let readme = readme();
    let table = rows(section(&readme, "Configuration"));
    let documented: BTreeSet<String> = table
        .iter()
        .filter(|(key, _)| !key.starts_with("`["))
        .map(|(key, _)| key.trim_matches('`').to_string())
        .collect();
    assert_eq!(documented, names(), "README option table");
    for (name, default) in Layer::DEFAULTS {
        let (_, cell) = table
            .iter()
            .find(|(key, _)| key.trim_matches('`') == *name)
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

/// The example's `# key = value` lines, uncommented, as (key, value text).
fn example_settings(example: &str) -> Vec<(String, String)> {
    example
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
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

    for (name, default) in Layer::DEFAULTS {
        let (_, value) = settings.iter().find(|(k, _)| k == name).unwrap();
        let text = match value.parse::<toml::Value>() {
            Ok(toml::Value::String(s)) => s,
            Ok(other) => other.to_string(),
            Err(e) => panic!("{name} = {value}: {e}"),
        };
        match default {
            Some(default) => assert_eq!(&text, default, "{name}"),
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
fn every_route_is_in_the_readme() {
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
    let readme = readme();
    let cells: Vec<String> = readme
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
        assert!(documented, "{route} has no row in a README table");
    }
}
