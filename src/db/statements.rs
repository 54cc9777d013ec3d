//! How SQL is sent: the [`Sql`] / [`Begin`] / [`Commit`] traits and their impls on plain
//! and pooled connections ([`Conn`], [`Tx`]), prepared-and-cached or unnamed
//! ([`Statements`]); parameters carry their types (`params`).

use std::future::Future;

use super::params::Param;
use anyhow::Result;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Error as PgError, Row};

/// How a connection sends statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statements {
    /// Named prepared statements, prepared once per connection and cached: only where the
    /// server session belongs to this connection for its whole life (direct or session
    /// pooling).
    Prepared,
    /// Unnamed statements, nothing kept on the server between round trips: works through a
    /// transaction-mode pooler without prepared-statement support.
    Unnamed,
}

fn typed<'a>(params: &'a [&'a dyn Param]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|p| (p.as_sql(), p.param_type()))
        .collect()
}

fn untyped<'a>(params: &'a [&'a dyn Param]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_sql()).collect()
}

/// What the modules run their SQL on: a plain connection or transaction (one-off commands,
/// tests), or a pooled connection ([`Conn`]) or one of its transactions ([`Tx`]). Plain
/// connections always send unnamed statements; pooled ones too, unless told the server
/// session is theirs for life (`AUTOPILOT_POOLER=session`, see [`statements_for`](super::statements_for)): then
/// they prepare each statement once per connection and reuse it. Nothing is kept on the
/// server between transactions otherwise, so every command works through a
/// transaction-mode pooler. The method names match tokio-postgres's, so generic code reads
/// the same.
pub trait Sql: Send + Sync {
    fn query(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Vec<Row>, PgError>> + Send;
    fn query_one(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Row, PgError>> + Send;
    fn query_opt(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Option<Row>, PgError>> + Send;
    fn execute(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<u64, PgError>> + Send;
}

/// A connection that can open a transaction whose statements are [`Sql`] too.
pub trait Begin: Sql {
    type Tx<'a>: Sql + Commit
    where
        Self: 'a;
    fn begin(&mut self) -> impl Future<Output = Result<Self::Tx<'_>, PgError>> + Send;
}

pub trait Commit {
    fn commit(self) -> impl Future<Output = Result<(), PgError>> + Send;
    fn rollback(self) -> impl Future<Output = Result<(), PgError>> + Send;
}

/// Implements [`Sql`] with unnamed statements on a tokio-postgres client or transaction.
macro_rules! unnamed_sql {
    ($target:ty) => {
        impl Sql for $target {
            async fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, PgError> {
                <$target>::query_typed(self, sql, &typed(params)).await
            }
            async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
                <$target>::query_typed_one(self, sql, &typed(params)).await
            }
            async fn query_opt(
                &self,
                sql: &str,
                params: &[&dyn Param],
            ) -> Result<Option<Row>, PgError> {
                <$target>::query_typed_opt(self, sql, &typed(params)).await
            }
            async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
                <$target>::execute_typed(self, sql, &typed(params)).await
            }
        }
    };
}

/// Outside a transaction every statement runs under the client-side statement bound of
/// [`crate::db::deadline::bounded`]; inside one, `SET LOCAL` bounds it (see [`Begin`]).
impl Sql for tokio_postgres::Client {
    async fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, PgError> {
        crate::db::deadline::bounded(self.cancel_token(), self.query_typed(sql, &typed(params)))
            .await
    }
    async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
        crate::db::deadline::bounded(
            self.cancel_token(),
            self.query_typed_one(sql, &typed(params)),
        )
        .await
    }
    async fn query_opt(&self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, PgError> {
        crate::db::deadline::bounded(
            self.cancel_token(),
            self.query_typed_opt(sql, &typed(params)),
        )
        .await
    }
    async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
        crate::db::deadline::bounded(self.cancel_token(), self.execute_typed(sql, &typed(params)))
            .await
    }
}
unnamed_sql!(tokio_postgres::Transaction<'_>);

/// The client under a pooled connection, reached past [`Conn`] (`&**conn`): unnamed
/// statements, safe whatever the pooler.
impl Sql for deadpool_postgres::ClientWrapper {
    fn query(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Vec<Row>, PgError>> + Send {
        Sql::query(&**self, sql, params)
    }
    fn query_one(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Row, PgError>> + Send {
        Sql::query_one(&**self, sql, params)
    }
    fn query_opt(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Option<Row>, PgError>> + Send {
        Sql::query_opt(&**self, sql, params)
    }
    fn execute(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<u64, PgError>> + Send {
        Sql::execute(&**self, sql, params)
    }
}

/// A pooled connection: the client, its statement cache, and how it sends statements.
pub struct Conn {
    client: deadpool_postgres::ClientWrapper,
    statements: Statements,
}

impl Conn {
    pub fn new(client: deadpool_postgres::ClientWrapper, statements: Statements) -> Conn {
        Conn { client, statements }
    }

    /// How this connection sends statements.
    pub fn statements(&self) -> Statements {
        self.statements
    }

    /// A transaction whose statements are sent the way the connection's are.
    pub async fn transaction(&mut self) -> Result<Tx<'_>, PgError> {
        let statements = self.statements;
        let tx = self.client.transaction().await?;
        // Every transaction starts with its bounds (SET LOCAL: pooler-safe, see
        // crate::deadline).
        tx.batch_execute(&crate::db::deadline::set_local_sql())
            .await?;
        Ok(Tx { tx, statements })
    }
}

impl std::ops::Deref for Conn {
    type Target = deadpool_postgres::ClientWrapper;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.client
    }
}

/// A transaction of a pooled connection ([`Conn::transaction`]).
pub struct Tx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    statements: Statements,
}

impl Tx<'_> {
    pub async fn commit(self) -> Result<(), PgError> {
        self.tx.commit().await
    }
    pub async fn rollback(self) -> Result<(), PgError> {
        self.tx.rollback().await
    }
}

/// Implements [`Sql`] for a pooled connection or transaction: cached prepared statements or
/// unnamed ones, as the connection says.
macro_rules! pooled_sql {
    ($target:ty, $inner:ident) => {
        impl Sql for $target {
            async fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, PgError> {
                match self.statements {
                    Statements::Unnamed => self.$inner.query_typed(sql, &typed(params)).await,
                    Statements::Prepared => {
                        let st = self.$inner.prepare_cached(sql).await?;
                        (*self.$inner).query(&st, &untyped(params)).await
                    }
                }
            }
            async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
                match self.statements {
                    Statements::Unnamed => self.$inner.query_typed_one(sql, &typed(params)).await,
                    Statements::Prepared => {
                        let st = self.$inner.prepare_cached(sql).await?;
                        (*self.$inner).query_one(&st, &untyped(params)).await
                    }
                }
            }
            async fn query_opt(
                &self,
                sql: &str,
                params: &[&dyn Param],
            ) -> Result<Option<Row>, PgError> {
                match self.statements {
                    Statements::Unnamed => self.$inner.query_typed_opt(sql, &typed(params)).await,
                    Statements::Prepared => {
                        let st = self.$inner.prepare_cached(sql).await?;
                        (*self.$inner).query_opt(&st, &untyped(params)).await
                    }
                }
            }
            async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
                match self.statements {
                    Statements::Unnamed => self.$inner.execute_typed(sql, &typed(params)).await,
                    Statements::Prepared => {
                        let st = self.$inner.prepare_cached(sql).await?;
                        (*self.$inner).execute(&st, &untyped(params)).await
                    }
                }
            }
        }
    };
}

pooled_sql!(Tx<'_>, tx);

/// The statements of [`Conn`] outside a transaction, before the client-side bound.
struct PooledStatements<'a> {
    client: &'a deadpool_postgres::ClientWrapper,
    statements: Statements,
}

impl Sql for PooledStatements<'_> {
    async fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, PgError> {
        match self.statements {
            Statements::Unnamed => self.client.query_typed(sql, &typed(params)).await,
            Statements::Prepared => {
                let st = self.client.prepare_cached(sql).await?;
                tokio_postgres::Client::query(self.client, &st, &untyped(params)).await
            }
        }
    }
    async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
        match self.statements {
            Statements::Unnamed => self.client.query_typed_one(sql, &typed(params)).await,
            Statements::Prepared => {
                let st = self.client.prepare_cached(sql).await?;
                tokio_postgres::Client::query_one(self.client, &st, &untyped(params)).await
            }
        }
    }
    async fn query_opt(&self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, PgError> {
        match self.statements {
            Statements::Unnamed => self.client.query_typed_opt(sql, &typed(params)).await,
            Statements::Prepared => {
                let st = self.client.prepare_cached(sql).await?;
                tokio_postgres::Client::query_opt(self.client, &st, &untyped(params)).await
            }
        }
    }
    async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
        match self.statements {
            Statements::Unnamed => self.client.execute_typed(sql, &typed(params)).await,
            Statements::Prepared => {
                let st = self.client.prepare_cached(sql).await?;
                tokio_postgres::Client::execute(self.client, &st, &untyped(params)).await
            }
        }
    }
}

impl Conn {
    fn unbounded(&self) -> PooledStatements<'_> {
        PooledStatements {
            client: &self.client,
            statements: self.statements,
        }
    }
}

/// Outside a transaction every statement runs under the client-side statement bound of
/// [`crate::db::deadline::bounded`].
impl Sql for Conn {
    async fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, PgError> {
        crate::db::deadline::bounded(self.cancel_token(), self.unbounded().query(sql, params)).await
    }
    async fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, PgError> {
        crate::db::deadline::bounded(self.cancel_token(), self.unbounded().query_one(sql, params))
            .await
    }
    async fn query_opt(&self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, PgError> {
        crate::db::deadline::bounded(self.cancel_token(), self.unbounded().query_opt(sql, params))
            .await
    }
    async fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, PgError> {
        crate::db::deadline::bounded(self.cancel_token(), self.unbounded().execute(sql, params))
            .await
    }
}

// Every transaction starts with its bounds (SET LOCAL: pooler-safe, see crate::deadline).
impl Begin for tokio_postgres::Client {
    type Tx<'a> = tokio_postgres::Transaction<'a>;
    async fn begin(&mut self) -> Result<Self::Tx<'_>, PgError> {
        let tx = tokio_postgres::Client::transaction(self).await?;
        tx.batch_execute(&crate::db::deadline::set_local_sql())
            .await?;
        Ok(tx)
    }
}

impl Begin for Conn {
    type Tx<'a> = Tx<'a>;
    fn begin(&mut self) -> impl Future<Output = Result<Self::Tx<'_>, PgError>> + Send {
        self.transaction()
    }
}

impl Commit for tokio_postgres::Transaction<'_> {
    fn commit(self) -> impl Future<Output = Result<(), PgError>> + Send {
        tokio_postgres::Transaction::commit(self)
    }
    fn rollback(self) -> impl Future<Output = Result<(), PgError>> + Send {
        tokio_postgres::Transaction::rollback(self)
    }
}

impl Commit for Tx<'_> {
    fn commit(self) -> impl Future<Output = Result<(), PgError>> + Send {
        Tx::commit(self)
    }
    fn rollback(self) -> impl Future<Output = Result<(), PgError>> + Send {
        Tx::rollback(self)
    }
}
