//! Splitting the tenants of an installation over N runners (`run-cycle --shard I/N`, or a
//! Kubernetes Indexed Job's `JOB_COMPLETION_INDEX` with `AUTOPILOT_SHARDS`): shard I runs
//! the enabled tenants whose id hashes to I modulo N. The hash is computed by the database
//! in the tenant selection of `run-cycle` — the first 32 bits of the md5 of the tenant id's
//! text, `('x' || left(md5(t.id::text), 8))::bit(32)::bigint % N` — so it is the same for
//! every runner, binary version and PostgreSQL version, and spreads any kind of UUID
//! (random or time-ordered) evenly. Leases still guard overlaps (two runners given the same shard, or
//! a tenant run by hand meanwhile).

use crate::error::AppError;

/// One shard of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Largest shard count accepted (a sanity bound, far above any pod count).
pub const MAX_SHARDS: u32 = 10_000;

fn parse_pair(index: &str, count: &str) -> Result<Shard, String> {
    let index: u32 = index
        .trim()
        .parse()
        .map_err(|_| format!("shard index {index:?} is not a whole number"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("shard count {count:?} is not a whole number"))?;
    if count == 0 || count > MAX_SHARDS {
        return Err(format!(
            "shard count must be 1 to {MAX_SHARDS}, got {count}"
        ));
    }
    if index >= count {
        return Err(format!(
            "shard index must be below the count (0 to {}), got {index}",
            count - 1
        ));
    }
    Ok(Shard { index, count })
}

/// `--shard I/N` (clap value parser).
pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("expected I/N (e.g. 0/4), got {s:?}"))?;
    parse_pair(i, n)
}

/// The shard to run: `--shard` when given; else, in a Kubernetes Indexed Job, the pod's
/// `JOB_COMPLETION_INDEX` of `AUTOPILOT_SHARDS`; else none (every tenant). An index without
/// a count, or values out of range, are bad input (exit 2) rather than a silent full run.
pub fn resolve(flag: Option<Shard>) -> anyhow::Result<Option<Shard>> {
    if flag.is_some() {
        return Ok(flag);
    }
    let index = std::env::var("JOB_COMPLETION_INDEX").ok();
    let count = std::env::var("AUTOPILOT_SHARDS").ok();
    match (index, count) {
        (None, None) => Ok(None),
        (Some(i), Some(n)) => parse_pair(&i, &n)
            .map(Some)
            .map_err(|e| AppError::Usage(format!("JOB_COMPLETION_INDEX/AUTOPILOT_SHARDS: {e}")).into()),
        (Some(_), None) => Err(AppError::Usage(
            "JOB_COMPLETION_INDEX is set but AUTOPILOT_SHARDS is not: set it to the Job's completions"
                .into(),
        )
        .into()),
        (None, Some(_)) => Err(AppError::Usage(
            "AUTOPILOT_SHARDS is set but JOB_COMPLETION_INDEX is not (use --shard I/N outside an Indexed Job)"
                .into(),
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parses_index_over_count_and_refuses_out_of_range_values() {
        assert_eq!(parse_shard("0/4"), Ok(Shard { index: 0, count: 4 }));
        assert_eq!(parse_shard("3/4"), Ok(Shard { index: 3, count: 4 }));
        assert_eq!(parse_shard("0/1"), Ok(Shard { index: 0, count: 1 }));
        for bad in ["4/4", "1/0", "-1/4", "a/4", "2", "1/4/5", "0/10001"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
