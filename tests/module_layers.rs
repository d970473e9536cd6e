//! The drawing of the module imports in `docs/modules.md` is the code's: every arrow it
//! shows is an import in `src/` (outside test code) and every such import is drawn, and
//! each module's line is above every module it imports, so the arrows only point down
//! and no two modules import each other, even through others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level modules: `src/x.rs` and `src/x/`.
fn modules(src: &Path) -> BTreeSet<String> {
    std::fs::read_dir(src)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            match name.strip_suffix(".rs") {
                Some("lib" | "main") => None,
                Some(m) => Some(m.to_string()),
                None if e.path().join("mod.rs").exists() => Some(name),
                None => None,
            }
        })
        .collect()
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    for e in std::fs::read_dir(path).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() || p.extension().is_some_and(|x| x == "rs") {
            rust_files(&p, out);
        }
    }
}

/// A file's text without its test modules (they end the file: `#[cfg(test)] mod x {`) and
/// without `//` comments. A `tests.rs` file is test code as a whole.
fn production_code(file: &Path) -> String {
    if file.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let end = (0..lines.len())
        .find(|&i| lines[i].trim() == "#[cfg(test)]" && lines.get(i + 1).is_some_and(|l| l.starts_with("mod ") && l.ends_with('{')))
        .unwrap_or(lines.len());
    lines[..end].iter().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Which top-level modules each one names as `crate::x`.
fn imports(src: &Path, mods: &BTreeSet<String>) -> Graph {
    let mut graph = Graph::new();
    for m in mods {
        let mut files = Vec::new();
        let dir = src.join(m);
        let root = if dir.is_dir() { dir } else { src.join(format!("{m}.rs")) };
        rust_files(&root, &mut files);
        let deps = graph.entry(m.clone()).or_default();
        for f in files {
            let code = production_code(&f);
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                assert!(!code[i + 7..].starts_with('{'), "{}: write `crate::a::x` paths, not `crate::{{...}}`", f.display());
                if name != *m && mods.contains(&name) {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

/// The drawing: the lines `a → b c` of the block between `<!-- imports -->` markers, top
/// to bottom.
fn drawing(doc: &str) -> Vec<(String, BTreeSet<String>)> {
    let start = doc.find("<!-- imports -->").expect("docs/modules.md has an <!-- imports --> block");
    let end = doc.find("<!-- /imports -->").expect("the block ends with <!-- /imports -->");
    doc[start..end]
        .lines()
        .filter(|l| l.contains('→'))
        .map(|l| {
            let (m, deps) = l.split_once('→').unwrap();
            (m.trim().to_string(), deps.split_whitespace().map(String::from).collect())
        })
        .collect()
}

#[test]
fn module_imports_point_only_down_as_drawn() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mods = modules(&src);
    let graph = imports(&src, &mods);
    let drawn = drawing(&std::fs::read_to_string(root.join("docs/modules.md")).unwrap());

    let drawn_mods: BTreeSet<String> = drawn.iter().map(|(m, _)| m.clone()).collect();
    assert_eq!(drawn_mods, mods, "docs/modules.md draws every module of src/ once");
    for (m, deps) in &drawn {
        assert_eq!(deps, &graph[m], "docs/modules.md: the arrows from `{m}` are not what src/{m} imports");
    }
    let line: BTreeMap<&str, usize> = drawn.iter().enumerate().map(|(i, (m, _))| (m.as_str(), i)).collect();
    for (m, deps) in &graph {
        for d in deps {
            assert!(line[m.as_str()] < line[d.as_str()], "`{m}` imports `{d}`, which is drawn above it: an arrow pointing up");
        }
    }
}
