//! Pooled connections send unnamed statements by default (nothing kept on the server, so
//! any pooler works); told the connection is direct or session-pooled
//! (`AUTOPILOT_POOLER=session`) they prepare each statement once and reuse it.

use crate::common::*;
use autopilot::db::{DbSettings, Sql};

#[tokio::test]
async fn a_pooled_connection_prepares_a_statement_once_and_reuses_it() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let cl = client_row(&c, t, "Acme Lending").await;
    contact(&c, t, cl, Some("a@acme.example"), None, false).await;

    let mut settings = DbSettings::resolve(Some(&db.url)).unwrap();
    settings.pooler = autopilot::db::PoolerSetting::Session;
    let pool = settings.pool(1).unwrap();
    let conn = autopilot::db::get(&pool, &settings).await.unwrap();
    let now = chrono::Utc::now();
    for _ in 0..3 {
        autopilot::engagement::ensure_clocks(&*conn, t, now)
            .await
            .unwrap();
        autopilot::engagement::refresh_scores(&*conn, t, now)
            .await
            .unwrap();
    }
    let row = conn
        .query_one(
            "SELECT count(*) FILTER (WHERE statement LIKE '%INSERT INTO public.engagement_clocks%'),
                    count(*) FILTER (WHERE statement LIKE '%refresh_engagement_scores%')
             FROM pg_prepared_statements WHERE statement NOT LIKE '%pg_prepared_statements%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "prepared once, kept for reuse");
    assert_eq!(row.get::<_, i64>(1), 1, "prepared once, kept for reuse");
    assert_eq!(count(&c, "SELECT count(*) FROM engagement_clocks").await, 1);
}

#[tokio::test]
async fn a_pooled_connection_keeps_no_prepared_statement_by_default() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let t = tenant(&c, "Acme", true).await;
    let settings = DbSettings::resolve(Some(&db.url)).unwrap();
    let pool = settings.pool(1).unwrap();
    let conn = autopilot::db::get(&pool, &settings).await.unwrap();
    autopilot::engagement::ensure_clocks(&*conn, t, chrono::Utc::now())
        .await
        .unwrap();
    let n: i64 = conn
        .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}
