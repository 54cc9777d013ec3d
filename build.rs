//! Build script: embeds the git commit in `--version` and the `sql/` migrations in the binary.
use std::path::Path;
use std::process::Command;

/// Writes `$OUT_DIR/migrations.rs`: every `sql/*.sql` file, in name (= version) order,
/// embedded with include_str! so the binary carries its migrations.
fn embed_migrations() {
    let dir = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("sql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("sql/ directory")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().map(|x| x == "sql").unwrap_or(false))
        .collect();
    files.sort();
    let mut out = String::from("&[\n");
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            f.display().to_string()
        ));
        println!("cargo:rerun-if-changed={}", f.display());
    }
    out.push_str("]\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("migrations.rs");
    std::fs::write(dest, out).expect("writing migrations.rs");
}

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=AUTOPILOT_GIT_COMMIT={commit}");
    embed_migrations();
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=sql");
}
