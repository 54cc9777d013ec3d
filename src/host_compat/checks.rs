//! The CHECK part of [`super::inspect`]: a host CHECK over columns whose every agent value
//! is known is copied onto a temporary table, and every combination of those values is
//! inserted there under a savepoint; the rejected ones are the finding.

use anyhow::{Context, Result};
use tokio_postgres::Transaction;

use super::{quote_ident, quote_literal, Column, Finding, HostTable, CHECKS_SQL};

/// Numbers the temporary probe tables of one inspection.
#[derive(Default)]
pub(super) struct Probes {
    count: u32,
}

impl Probes {
    /// CHECK constraints over columns whose every agent value is known.
    pub(super) async fn check_findings(
        &mut self,
        tx: &mut Transaction<'_>,
        t: &HostTable,
        cols: &[Column],
    ) -> Result<Vec<Finding>> {
        let mut findings = Vec::new();
        for r in tx
            .query(CHECKS_SQL, &[&t.name])
            .await
            .with_context(|| format!("reading the CHECK constraints of {}", t.name))?
        {
            let name: String = r.get(0);
            let def: String = r.get(1);
            let check_cols: Vec<String> = r.get(2);
            if check_cols.is_empty()
                || !check_cols
                    .iter()
                    .all(|c| t.values.iter().any(|(v, _)| v == c))
            {
                continue;
            }
            self.count += 1;
            let probe_table = format!("pg_temp.autopilot_probe_{}", self.count);
            let check = Check {
                name: &name,
                def: &def,
                cols: &check_cols,
            };
            create_probe_table(tx, t, cols, &check, &probe_table).await?;
            let rejected = rejected_values(tx, t, &check, &probe_table).await?;
            if !rejected.is_empty() {
                findings.push(Finding {
                    table: t.name.to_string(),
                    column: if check_cols.len() == 1 {
                        Some(check_cols[0].clone())
                    } else {
                        None
                    },
                    constraint: Some(name.clone()),
                    problem: format!(
                        "CHECK {name} rejects what autopilot writes: {}",
                        rejected.join("; ")
                    ),
                });
            }
        }
        Ok(findings)
    }
}

/// One host CHECK constraint as read from the catalog.
struct Check<'a> {
    name: &'a str,
    def: &'a str,
    cols: &'a [String],
}

/// A temporary table with the CHECK's columns (their host types) and the CHECK itself.
async fn create_probe_table(
    tx: &Transaction<'_>,
    t: &HostTable,
    cols: &[Column],
    check: &Check<'_>,
    probe_table: &str,
) -> Result<()> {
    let defs: Vec<String> = check
        .cols
        .iter()
        .map(|c| {
            let ty = cols
                .iter()
                .find(|x| &x.name == c)
                .map(|x| x.type_name.clone())
                .unwrap_or_else(|| "text".into());
            format!("{} {ty}", quote_ident(c))
        })
        .collect();
    let def = check.def.trim_end_matches(" NOT VALID");
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {probe_table} ({}); ALTER TABLE {probe_table} ADD CONSTRAINT {} {def}",
        defs.join(", "),
        quote_ident(check.name)
    ))
    .await
    .with_context(|| format!("probing CHECK {} of {}", check.name, t.name))
}

/// Each combination of agent values the probe table's CHECK rejects, as `col = 'value', …`.
async fn rejected_values(
    tx: &mut Transaction<'_>,
    t: &HostTable,
    check: &Check<'_>,
    probe_table: &str,
) -> Result<Vec<String>> {
    let lists: Vec<(&str, &[&str])> = t
        .values
        .iter()
        .filter(|(c, _)| check.cols.iter().any(|x| x == c))
        .map(|(c, v)| (*c, *v))
        .collect();
    let mut rejected: Vec<String> = Vec::new();
    for combo in combinations(&lists) {
        let names: Vec<String> = combo.iter().map(|(c, _)| quote_ident(c)).collect();
        let vals: Vec<String> = combo.iter().map(|(_, v)| quote_literal(v)).collect();
        let sp = tx.savepoint("probe").await?;
        let res = sp
            .batch_execute(&format!(
                "INSERT INTO {probe_table} ({}) VALUES ({})",
                names.join(", "),
                vals.join(", ")
            ))
            .await;
        sp.rollback().await?;
        if res.is_err() {
            rejected.push(
                combo
                    .iter()
                    .map(|(c, v)| format!("{c} = '{v}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
    }
    Ok(rejected)
}

/// Every combination of the given columns' agent values.
fn combinations(lists: &[(&str, &[&str])]) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (col, values) in lists {
        let mut next = Vec::new();
        for combo in &out {
            for v in values.iter() {
                let mut c = combo.clone();
                c.push((col.to_string(), v.to_string()));
                next.push(c);
            }
        }
        out = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_cover_every_pairing() {
        let c = combinations(&[("a", &["1", "2"]), ("b", &["x", "y", "z"])]);
        assert_eq!(c.len(), 6);
        assert!(c.contains(&vec![("a".into(), "2".into()), ("b".into(), "z".into())]));
    }
}
