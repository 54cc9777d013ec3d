//! The one SQL rule: every statement the binary runs lives in `src/sql/<module>/<name>.sql`,
//! one statement per file. This test prepares each file against the migrated schema, so a
//! renamed column or table fails here, not in production.

use std::path::{Path, PathBuf};

use crate::common::*;

fn sql_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sql_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "sql") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn every_sql_file_of_the_binary_prepares_against_the_migrated_schema() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let mut files = Vec::new();
    sql_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sql"),
        &mut files,
    );
    // The snapshot first: the privilege step's later statement reads its temporary table.
    files.sort_by_key(|f| (!f.ends_with("privileges/snapshot.sql"), f.clone()));
    assert!(files.len() > 20, "found only {} files", files.len());
    // One transaction, as migrate runs the privilege step: the snapshot's temporary table
    // is what the step's later statement reads, so that one file is run, not only prepared.
    c.batch_execute("BEGIN").await.unwrap();
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let result = if f.ends_with("privileges/snapshot.sql") {
            c.execute(text.as_str(), &[]).await.map(|_| ())
        } else {
            c.batch_execute("SAVEPOINT each").await.unwrap();
            let r = c.prepare(&text).await.map(|_| ());
            let end = if r.is_ok() {
                "RELEASE each"
            } else {
                "ROLLBACK TO each"
            };
            c.batch_execute(end).await.unwrap();
            r
        };
        if let Err(e) = result {
            let detail = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            failures.push(format!("{}: {detail}", f.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files do not prepare:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
