//! The repository stands on its own: every relative link of the README and docs/ points at
//! a file inside the repository, and every command the binary has is documented.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    docs
}

/// The targets of `[text](target)` links in a markdown text.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn every_relative_link_of_the_docs_points_inside_the_repository() {
    let root = root().canonicalize().unwrap();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        assert!(
            !text.contains("../shared"),
            "{} refers to ../shared, which a clone does not have",
            doc.display()
        );
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") || link.starts_with('#')
            {
                continue;
            }
            let path = link.split('#').next().unwrap();
            let target = doc.parent().unwrap().join(path);
            let resolved = target
                .canonicalize()
                .unwrap_or_else(|_| panic!("{}: broken link {link}", doc.display()));
            assert!(
                resolved.starts_with(&root),
                "{}: {link} leaves the repository",
                doc.display()
            );
        }
    }
}

#[test]
fn every_command_is_documented_in_the_readme_and_behaviour() {
    use clap::CommandFactory;
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let behaviour = std::fs::read_to_string(Path::new(&root()).join("docs/behaviour.md")).unwrap();
    for cmd in autopilot::commands::Cli::command().get_subcommands() {
        let name = cmd.get_name();
        assert!(
            readme.contains(&format!("  {name} ")),
            "README lacks {name}"
        );
        assert!(
            behaviour.contains(&format!("\n## {name}"))
                || behaviour.contains(&format!("autopilot {name} ")),
            "docs/behaviour.md lacks {name}"
        );
    }
}

#[test]
fn each_known_defect_of_the_original_design_is_documented_with_its_test() {
    let text = std::fs::read_to_string(root().join("docs/defects.md")).unwrap();
    for n in 1..=15 {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| {n} |")))
            .unwrap_or_else(|| panic!("defect {n} missing"));
        assert!(row.contains("tests/"), "defect {n} names no test: {row}");
        // Every test named on the row exists in that file.
        for part in row.split("`tests/").skip(1) {
            let file = part.split('`').next().unwrap();
            let body = std::fs::read_to_string(root().join("tests").join(file))
                .unwrap_or_else(|_| panic!("defect {n}: no tests/{file}"));
            let after = part.split_once('`').map(|x| x.1).unwrap_or("");
            for name in after
                .split('`')
                .skip(1)
                .step_by(2)
                .take_while(|s| !s.starts_with("tests/"))
                .filter(|s| {
                    s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
            {
                assert!(
                    body.contains(&format!("fn {name}(")),
                    "defect {n}: tests/{file} has no test {name}"
                );
            }
        }
    }
}
