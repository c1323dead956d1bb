//! The shape of the source tree: modules small enough to read, maps that
//! name every module, and imports that only run one way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest module file, in lines, tests included.
const MAX_LINES: usize = 700;

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn source_files() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(&src).unwrap().display().to_string();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

#[test]
fn no_module_is_too_long() {
    let long: Vec<_> = source_files()
        .into_iter()
        .map(|(name, text)| (name, text.lines().count()))
        .filter(|(_, lines)| *lines > MAX_LINES)
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

/// The modules `text` declares from files (`mod x;`, `pub mod x;`), test
/// modules (`#[cfg(test)] mod tests;`) left out.
fn declared_modules(text: &str) -> Vec<String> {
    let mut declared = Vec::new();
    let mut test_only = false;
    for line in text.lines().map(str::trim) {
        let rest = line.strip_prefix("pub ").unwrap_or(line);
        let rest = match rest.strip_prefix("pub(") {
            Some(scoped) => scoped.split_once(") ").map_or(rest, |(_, r)| r),
            None => rest,
        };
        if let Some(name) = rest.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            if !test_only {
                declared.push(name.trim().to_string());
            }
        }
        test_only = line == "#[cfg(test)]";
    }
    declared
}

/// The names a file's leading `//!` comment puts in backticks; `x.rs`,
/// `x/` and `x::y` name `x`.
fn mapped_modules(text: &str) -> BTreeSet<String> {
    let map: String = text
        .lines()
        .map_while(|line| line.strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    map.split('`')
        .skip(1)
        .step_by(2)
        .map(|quoted| {
            let name = quoted.split("::").next().unwrap_or(quoted);
            name.trim_end_matches(".rs")
                .trim_end_matches('/')
                .to_string()
        })
        .collect()
}

/// `lib.rs` and each file with submodules (`mod.rs`, `web/live.rs`) opens
/// with a map that names every module it declares.
#[test]
fn every_module_is_on_its_parents_map() {
    let mut missing = Vec::new();
    for (file, text) in source_files() {
        let mapped = mapped_modules(&text);
        for module in declared_modules(&text) {
            if !mapped.contains(&module) {
                missing.push(format!("src/{file}: `{module}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules missing from the //! map of the file declaring them:\n{}",
        missing.join("\n")
    );
}

#[test]
fn declarations_and_maps_are_read() {
    let text = "//! `a` and `b.rs`, `c::D`.\n\nmod a;\npub mod b;\npub(crate) mod c;\n\
                #[cfg(test)]\nmod tests;\nmod inline {}\n";
    assert_eq!(declared_modules(text), ["a", "b", "c"]);
    assert_eq!(
        mapped_modules(text),
        BTreeSet::from(["a", "b", "c"].map(String::from))
    );
}

/// The top-level module a file belongs to (`state/writer.rs` is `state`).
fn top_module(file: &str) -> Option<String> {
    let first = file.split('/').next()?.trim_end_matches(".rs");
    match first {
        "lib" | "main" | "bin" => None,
        module => Some(module.to_string()),
    }
}

/// `crate::x` paths named in `text`, outside its `#[cfg(test)]` part.
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    code.match_indices("crate::")
        .map(|(at, _)| {
            code[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn modules_import_in_one_direction() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in source_files() {
        let Some(module) = top_module(&file) else {
            continue;
        };
        let used: Vec<String> = imports(&text)
            .into_iter()
            .filter(|m| *m != module)
            .collect();
        graph.entry(module).or_default().extend(used);
    }
    // The layers a module may build on.
    assert!(
        graph["store"]
            .iter()
            .all(|m| ["clock", "record", "report"].contains(&m.as_str())),
        "store builds on: {:?}",
        graph["store"]
    );
    assert!(!graph["state"].contains("device") && !graph["state"].contains("web"));
    // Followers of the state know nothing of the web.
    for follower in ["mqtt", "webhook"] {
        assert!(!graph[follower].contains("web"), "{follower} imports web");
    }

    assert_no_circle(graph);
}

/// Within a folder (`web/`, `state/`, ...), the files' `super::x` imports
/// of each other.
#[test]
fn submodules_import_in_one_direction() {
    let files = source_files();
    let folders: BTreeSet<&str> = files
        .iter()
        .filter_map(|(name, _)| name.rsplit_once('/').map(|(folder, _)| folder))
        .collect();
    for folder in folders {
        let in_folder: Vec<(String, &String)> = files
            .iter()
            .filter_map(|(name, text)| {
                let (f, file) = name.rsplit_once('/')?;
                (f == folder && file != "mod.rs")
                    .then(|| (file.trim_end_matches(".rs").to_string(), text))
            })
            .collect();
        let siblings: BTreeSet<&String> = in_folder.iter().map(|(m, _)| m).collect();
        let graph = in_folder
            .iter()
            .map(|(module, text)| {
                let code = text.split("#[cfg(test)]").next().unwrap_or(text);
                let uses = code
                    .match_indices("super::")
                    .flat_map(|(at, _)| {
                        let rest = &code[at + 7..];
                        // `super::{a, b::C}` or `super::a`.
                        let names = match rest.strip_prefix('{') {
                            Some(group) => group.split('}').next().unwrap_or(""),
                            None => rest.split([';', ' ', ')', ',']).next().unwrap_or(""),
                        };
                        names
                            .split(',')
                            .map(|n| n.trim().split("::").next().unwrap_or("").to_string())
                            .collect::<Vec<_>>()
                    })
                    .filter(|n| n != module && siblings.contains(n))
                    .collect();
                (module.clone(), uses)
            })
            .collect();
        assert_no_circle(graph);
    }
}

/// Repeatedly removes modules that import nothing left; what cannot be
/// removed imports in a circle.
fn assert_no_circle(graph: BTreeMap<String, BTreeSet<String>>) {
    let mut left = graph;
    while !left.is_empty() {
        let leaves: Vec<String> = left
            .iter()
            .filter(|(_, uses)| uses.iter().all(|m| !left.contains_key(m)))
            .map(|(m, _)| m.clone())
            .collect();
        assert!(!leaves.is_empty(), "modules importing each other: {left:?}");
        for leaf in leaves {
            left.remove(&leaf);
        }
    }
}
