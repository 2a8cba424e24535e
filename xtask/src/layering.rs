//! `cargo xtask layering` (and the lint step of `cargo xtask test`): the house rules that keep
//! the code easy to find one's way in, checked rather than hoped for.
//!
//! - No two top-level modules of one crate refer to each other through `crate::` paths,
//!   directly or in a circle: each crate's modules form layers a reader can take bottom-up.
//! - No `.rs` file under `crates/`, `xtask/` or `proto/src` has more than
//!   [`MAX_LINES_BEFORE_TESTS`] lines before its first `#[cfg(test)]`.
//!
//! The scan is textual (no parser): it reads `crate::name` and `use crate::{a, b::c}` outside
//! comments, before the first `#[cfg(test)]` of each file. That is all the rules need.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The longest a file may be before its tests start.
pub const MAX_LINES_BEFORE_TESTS: usize = 1_000;

/// Checks every crate of the workspace at `root`; the error lists every breach.
pub fn check(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    for src in source_dirs(root)? {
        problems.extend(module_cycles(&src)?);
    }
    for dir in ["crates", "xtask", "proto/src"] {
        for file in rust_files(&root.join(dir))? {
            let text =
                fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let lines = before_tests(&text).lines().count();
            if lines > MAX_LINES_BEFORE_TESTS {
                let shown = file.strip_prefix(root).unwrap_or(&file);
                problems.push(format!(
                    "{} has {lines} lines before its first #[cfg(test)] (at most {MAX_LINES_BEFORE_TESTS}): split it by concern",
                    shown.display()
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("layering rules broken:\n  {}", problems.join("\n  "))
    }
}

/// `src` directories of the workspace's crates.
fn source_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = vec![
        root.join("proto/src"),
        root.join("xtask/src"),
        root.join("tests/src"),
    ];
    for entry in fs::read_dir(root.join("crates")).context("listing crates/")? {
        dirs.push(entry?.path().join("src"));
    }
    dirs.retain(|d| d.is_dir());
    dirs.sort();
    Ok(dirs)
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The text before the first `#[cfg(test)]`.
fn before_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// The cycles among the top-level modules of the crate whose sources are in `src`.
fn module_cycles(src: &Path) -> Result<Vec<String>> {
    let crate_dir = src.parent().unwrap_or(src);
    let crate_name = crate_dir.file_name().map_or_else(
        || src.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if path.is_dir() {
            if name != "bin" {
                // `a.rs` with its children in `a/` is one module, whichever is listed first.
                modules.entry(name).or_default().extend(rust_files(&path)?);
            }
        } else if let Some(stem) = name.strip_suffix(".rs")
            && stem != "lib"
            && stem != "main"
        {
            modules.entry(stem.to_owned()).or_default().push(path);
        }
    }
    let mut graph: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (name, files) in &modules {
        let mut deps = BTreeSet::new();
        for file in files {
            let text =
                fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            deps.extend(crate_references(before_tests(&text)));
        }
        deps.retain(|d| d != name && modules.contains_key(d));
        graph.insert(name, deps);
    }
    let mut cycles = BTreeSet::new();
    for (name, deps) in &graph {
        for dep in deps {
            if let Some(path) = path_between(&graph, dep, name) {
                // The circle name -> dep -> ... -> name, told once: from its smallest module.
                let mut circle: Vec<String> = std::iter::once(name.to_string())
                    .chain(path.into_iter().take_while(|m| m != name))
                    .collect();
                let first = circle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, m)| m.as_str())
                    .map_or(0, |(i, _)| i);
                circle.rotate_left(first);
                circle.push(circle[0].clone());
                cycles.insert(circle.join(" -> "));
            }
        }
    }
    Ok(cycles
        .into_iter()
        .map(|c| format!("{crate_name}: modules refer to each other in a circle: {c}"))
        .collect())
}

/// The modules from `from` to `to` following `graph`, if `to` can be reached.
fn path_between(
    graph: &BTreeMap<&str, BTreeSet<String>>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut previous: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from.to_owned()]);
    let mut seen = BTreeSet::from([from.to_owned()]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            let mut path = vec![at.clone()];
            let mut cursor = at;
            while let Some(p) = previous.get(&cursor) {
                path.push(p.clone());
                cursor = p.clone();
            }
            path.reverse();
            return Some(path);
        }
        for next in graph.get(at.as_str()).into_iter().flatten() {
            if seen.insert(next.clone()) {
                previous.insert(next.clone(), at.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

/// The first path segment after every `crate::` outside comments (`crate::a::b` gives `a`;
/// `crate::{a::b, c}` gives `a` and `c`).
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                out.extend(group_heads(group, text, line));
            } else {
                let ident: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !ident.is_empty() {
                    out.insert(ident);
                }
            }
            rest = after;
        }
    }
    out
}

/// The heads of the items of a `use crate::{...}` group that may span lines: `group` is the
/// rest of the line after the brace; the group continues in `text` after `line`.
fn group_heads(group: &str, text: &str, line: &str) -> Vec<String> {
    let start = text.find(line).map_or(0, |at| at + line.len());
    let mut body = String::from(group);
    body.push('\n');
    body.push_str(&text[start..]);
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    let mut ident = String::new();
    for c in body.chars() {
        match c {
            '{' => {
                depth += 1;
                item_start = false;
            }
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if c.is_ascii_alphanumeric() || c == '_' => {
                if item_start {
                    ident.push(c);
                }
            }
            _ => {
                if item_start && !ident.is_empty() {
                    heads.push(std::mem::take(&mut ident));
                    item_start = false;
                }
            }
        }
    }
    if !ident.is_empty() {
        heads.push(ident);
    }
    heads.retain(|h| h != "self");
    heads
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn references_are_read_from_paths_and_use_groups() {
        let text = "use crate::api::X;\nuse crate::{\n    config::Y,\n    dirs::{self, Z},\n    metrics,\n};\nfn f() { crate::spawn(); } // crate::ignored\n";
        let refs = crate_references(text);
        let expected: BTreeSet<String> = ["api", "config", "dirs", "metrics", "spawn"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(refs, expected);
    }

    #[test]
    fn a_circle_of_modules_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        write(src, "lib.rs", "mod a; mod b; mod c;");
        write(src, "a.rs", "use crate::b::B;");
        write(src, "b/mod.rs", "mod inner;");
        write(src, "b/inner.rs", "use crate::{c::C};");
        write(src, "c.rs", "fn f() { crate::a::g() }");
        let problems = module_cycles(src).unwrap();
        assert!(!problems.is_empty(), "no cycle found");
        assert!(
            problems.iter().any(|p| p.contains("a -> b -> c -> a")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_module_file_and_its_directory_of_children_count_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        write(src, "lib.rs", "mod a; mod b;");
        write(src, "a.rs", "mod child; use crate::b::B;");
        write(src, "a/child.rs", "pub struct C;");
        write(src, "b.rs", "use crate::a::A;");
        let problems = module_cycles(src).unwrap();
        assert!(
            problems.iter().any(|p| p.contains("a -> b -> a")),
            "a.rs's reference counts although a/ holds children: {problems:?}"
        );
    }

    #[test]
    fn layered_modules_and_test_code_pass() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        write(src, "lib.rs", "mod a; mod b;");
        write(src, "a.rs", "pub struct A;");
        write(
            src,
            "b.rs",
            "use crate::a::A;\n#[cfg(test)]\nmod tests { use crate::b; }",
        );
        assert!(module_cycles(src).unwrap().is_empty());
    }

    #[test]
    fn only_the_lines_before_the_tests_count() {
        let text = format!("{}#[cfg(test)]\n{}", "x\n".repeat(10), "y\n".repeat(2_000));
        assert_eq!(before_tests(&text).lines().count(), 10);
    }
}
