//! Database access: connection settings (URL or libpq PG* variables, sslmode and
//! sslrootcert parsed here because tokio-postgres knows neither verify-* nor root certs),
//! TLS with rustls, the connection pool, and the lease fence every cycle write passes.
//!
//! One file per concern; everything public is re-exported here, so callers name it
//! `crate::db::X`:
//! - `settings`: [`DbSettings::resolve`] and the sslmode, root certificate, session
//!   attributes, pooler setting and server list it reads;
//! - `conninfo`: connection strings as libpq reads them (keyword=value, URL parameters,
//!   service settings, default host);
//! - `connect`: opening sessions as libpq does (server list, timeouts, target_session_attrs),
//!   cancel requests;
//! - `tls`: the rustls connector, root certificates and verifiers;
//! - `errors`: connection failures as exit 2 or exit 75, and [`error_text`];
//! - `pool`: the pool ([`get`]), [`probe_pooling`] and pooler detection;
//! - `statements`: [`Param`], [`Sql`], [`Begin`], [`Commit`], [`Conn`] and [`Tx`];
//! - `fence`: the lease [`Fence`], lease-lost detection and [`require_tenants`].

mod connect;
mod conninfo;
pub mod deadline;
mod errors;
mod fence;
mod params;
mod pool;
mod resolve;
mod settings;
mod statements;
mod tls;

pub use errors::error_text;
pub use fence::{
    is_lease_lost, is_lease_lost_err, require_tenants, Fence, FencedTx, LEASE_LOST_SQLSTATE,
};
pub use params::{Param, PgTyped};
pub use pool::{
    behind_transaction_pooler, connection_report, get, probe_pooling, require_session_connection,
    statements_for, ConnectionReport, Object, PgManager, Pool, Pooling,
};
pub use settings::{DbSettings, PoolerSetting, RootCert, SessionAttrs, SslMode, Target};
pub use statements::{Begin, Commit, Conn, Sql, Statements, Tx};
