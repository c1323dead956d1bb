//! Wiki pages: markdown files, built in from the project's `wiki/` and
//! replaced page by page by those of `wiki_path`, stored in `Pages`,
//! rendered to HTML.

use std::path::Path;

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, html};

use crate::store::{Db, Page};

/// The page of `wiki/info.md`, served at `/info`.
pub const INFO: &str = "info";

/// Turns a title or file name into a URL slug: lower case, every run of
/// non-word characters replaced by one dash, no dash at either end.
pub fn slugify(title: &str) -> String {
    let mut slug = String::with_capacity(title.len());
    let mut dash = false;
    for c in title.chars() {
        if c.is_alphanumeric() || c == '_' {
            if dash && !slug.is_empty() {
                slug.push('-');
            }
            dash = false;
            slug.extend(c.to_lowercase());
        } else {
            dash = true;
        }
    }
    slug
}

/// Reads a markdown file as a page: the slug from the file name, the title
/// from the first `# ` heading (else the file name).
pub fn page_from_file(path: &Path) -> std::io::Result<Page> {
    let body = std::fs::read_to_string(path)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(page_from_markdown(&stem, body))
}

fn page_from_markdown(stem: &str, body: String) -> Page {
    let title = body
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| stem.to_string());
    Page {
        slug: slugify(stem),
        title,
        body,
    }
}

/// The default pages, compiled in from the project's `wiki/`.
#[derive(rust_embed::Embed)]
#[folder = "wiki/"]
struct BuiltIn;

/// The built-in pages, read once.
static BUILT_IN: std::sync::LazyLock<Vec<Page>> = std::sync::LazyLock::new(read_built_in);

/// The built-in pages, sorted by slug.
pub fn built_in() -> Vec<Page> {
    BUILT_IN.clone()
}

fn read_built_in() -> Vec<Page> {
    let mut pages: Vec<Page> = BuiltIn::iter()
        .filter_map(|name| {
            let stem = name.strip_suffix(".md").filter(|s| !s.contains('/'))?;
            let file = BuiltIn::get(&name)?;
            Some(page_from_markdown(
                stem,
                String::from_utf8_lossy(&file.data).into_owned(),
            ))
        })
        .collect();
    pages.sort_by(|a, b| a.slug.cmp(&b.slug));
    pages
}

/// The built-in page `slug`, if there is one.
pub fn built_in_page(slug: &str) -> Option<Page> {
    BUILT_IN.iter().find(|p| p.slug == slug).cloned()
}

/// Every `*.md` page under `dir`, sorted by slug.
pub fn read_dir(dir: &Path) -> std::io::Result<Vec<Page>> {
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") && path.is_file() {
            pages.push(page_from_file(&path)?);
        }
    }
    pages.sort_by(|a, b| a.slug.cmp(&b.slug));
    Ok(pages)
}

/// The built-in pages with those of `folder` in place of the ones of the
/// same slug, sorted by slug.
pub fn pages(folder: Option<&Path>) -> std::io::Result<Vec<Page>> {
    let mut pages = built_in();
    if let Some(folder) = folder {
        for page in read_dir(folder)? {
            match pages.binary_search_by(|p| p.slug.cmp(&page.slug)) {
                Ok(at) => pages[at] = page,
                Err(at) => pages.insert(at, page),
            }
        }
    }
    Ok(pages)
}

/// Outcome of loading the wiki folder into the database.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub changed: Vec<String>,
    pub unchanged: usize,
}

/// Loads the built-in pages and those of `folder` into the database; pages
/// already stored as they are stay untouched.
pub fn load(db: &mut Db, folder: Option<&Path>) -> anyhow::Result<Loaded> {
    use anyhow::Context as _;
    let pages = pages(folder).with_context(|| {
        format!(
            "cannot read the wiki folder {}",
            folder.unwrap_or(Path::new("")).display()
        )
    })?;
    let mut loaded = Loaded::default();
    for page in pages {
        if db.put_page(&page)? {
            loaded.changed.push(page.slug);
        } else {
            loaded.unchanged += 1;
        }
    }
    Ok(loaded)
}

/// Renders markdown to HTML: tables, fenced code, links and images. With
/// `escape_html`, raw HTML in the source is shown as text. Links to
/// `javascript:` and similar are neutralised in any case.
pub fn render(markdown: &str, escape_html: bool) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let events = Parser::new_ext(markdown, options).map(|event| match event {
        Event::Html(text) | Event::InlineHtml(text) if escape_html => Event::Text(text),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        other => other,
    });
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut out, events);
    out
}

fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let lower: String = url
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    let bad = ["javascript:", "vbscript:", "data:"];
    if bad.iter().any(|b| lower.starts_with(b)) {
        CowStr::Borrowed("#")
    } else {
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        let cases = [
            ("info", "info"),
            ("Info", "info"),
            ("How the device works", "how-the-device-works"),
            ("  --Hello, World!--  ", "hello-world"),
            ("snake_case page", "snake_case-page"),
            ("Università 2024", "università-2024"),
            ("!!!", ""),
        ];
        for (title, slug) in cases {
            assert_eq!(slugify(title), slug, "{title:?}");
        }
    }

    #[test]
    fn a_folder_replaces_built_in_pages_by_slug() {
        let built_in = built_in();
        assert!(built_in.iter().any(|p| p.slug == INFO), "info is built in");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("info.md"), "# Our room\n").unwrap();
        std::fs::write(dir.path().join("Rules.md"), "# House rules\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a page").unwrap();
        let pages = pages(Some(dir.path())).unwrap();
        let slugs: Vec<&str> = pages.iter().map(|p| p.slug.as_str()).collect();
        assert_eq!(slugs.len(), built_in.len() + 1, "{slugs:?}");
        assert!(slugs.is_sorted(), "{slugs:?}");
        let info = pages.iter().find(|p| p.slug == INFO).unwrap();
        assert_eq!(info.title, "Our room");
        assert!(pages.iter().any(|p| p.slug == "rules"));
        assert_eq!(super::pages(None).unwrap(), built_in);
    }

    #[test]
    fn titles_come_from_the_first_heading() {
        let p = page_from_markdown("info", "intro\n# What is BITS\n\ntext".into());
        assert_eq!(p.slug, "info");
        assert_eq!(p.title, "What is BITS");
        let p = page_from_markdown("Rules", "no heading".into());
        assert_eq!((p.slug.as_str(), p.title.as_str()), ("rules", "Rules"));
    }

    #[test]
    fn renders_tables_and_fenced_code() {
        let html = render(
            "| a | b |\n|---|---|\n| 1 | 2 |\n\n```rust\nfn x() {}\n```\n",
            true,
        );
        assert!(html.contains("<table>"), "{html}");
        assert!(html.contains("<td>1</td>"), "{html}");
        assert!(
            html.contains("<code class=\"language-rust\">fn x() {}"),
            "{html}"
        );
    }

    #[test]
    fn raw_html_is_escaped_when_asked() {
        let md = "hi <script>alert(1)</script>\n\n<div onclick=\"x()\">block</div>\n";
        let escaped = render(md, true);
        assert!(!escaped.contains("<script>"), "{escaped}");
        assert!(!escaped.contains("<div"), "{escaped}");
        assert!(escaped.contains("&lt;script&gt;"), "{escaped}");
        let raw = render(md, false);
        assert!(raw.contains("<div onclick"), "{raw}");
    }

    #[test]
    fn script_links_are_neutralised() {
        let html = render(
            "[x](javascript:alert(1)) [y]( JaVaScRiPt:alert(1)) ![i](data:text/html,x) [ok](/info)",
            true,
        );
        assert!(!html.to_ascii_lowercase().contains("javascript:"), "{html}");
        assert!(!html.contains("data:"), "{html}");
        assert!(html.contains("href=\"/info\""), "{html}");
    }
}
