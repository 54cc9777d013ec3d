//! Benchmark helper (used by `make bench`): bursts of N concurrent `acquire_tenant_lock`
//! callers racing for one tenant's lease, released together by a barrier, round after
//! round. Prints the latency percentiles of the calls and checks that every round had
//! exactly one winner.
//!
//! Usage: lease_burst DATABASE_URL [CALLERS=64] [ROUNDS=50]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;
use tokio_postgres::NoTls;
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: lease_burst DATABASE_URL [CALLERS] [ROUNDS]")?;
    let callers: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(50);

    let mut clients = Vec::new();
    for _ in 0..callers {
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
        tokio::spawn(conn);
        clients.push(Arc::new(client));
    }
    let admin = clients[0].clone();
    let tenants: Vec<Uuid> = admin
        .query(
            "SELECT id FROM tenants ORDER BY id LIMIT $1",
            &[&(rounds as i64)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if tenants.is_empty() {
        return Err("no tenants in the database".into());
    }
    let stmt = "SELECT acquire_tenant_lock($1, 'burst', 1)";
    let mut latencies: Vec<Duration> = Vec::with_capacity(callers * rounds);
    let mut bad_rounds = 0;
    // The first rounds are not measured: each backend compiles the PL/pgSQL function and
    // warms its caches on its first call.
    const WARM_UP: usize = 3;
    for round in 0..rounds + WARM_UP {
        let tenant = tenants[round % tenants.len()];
        admin
            .execute(
                "DELETE FROM agent_tenant_locks WHERE tenant_id = $1",
                &[&tenant],
            )
            .await?;
        let barrier = Arc::new(Barrier::new(callers));
        let mut tasks = Vec::new();
        for c in &clients {
            let (c, barrier) = (c.clone(), barrier.clone());
            // Prepared up front so the burst measures the call, not the parse.
            let st = c.prepare(stmt).await?;
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let t0 = Instant::now();
                let won: Option<Uuid> = c.query_one(&st, &[&tenant]).await?.get(0);
                Ok::<_, tokio_postgres::Error>((t0.elapsed(), won.is_some()))
            }));
        }
        let mut winners = 0;
        for t in tasks {
            let (d, won) = t.await??;
            if round >= WARM_UP {
                latencies.push(d);
            }
            winners += usize::from(won);
        }
        if winners != 1 {
            bad_rounds += 1;
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        let i =
            ((latencies.len() as f64 * p / 100.0).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "callers={callers} rounds={rounds} p50_ms={:.2} p95_ms={:.2} p99_ms={:.2} max_ms={:.2} rounds_without_exactly_one_winner={bad_rounds}",
        pct(50.0),
        pct(95.0),
        pct(99.0),
        pct(100.0)
    );
    if bad_rounds > 0 {
        std::process::exit(1);
    }
    Ok(())
}
