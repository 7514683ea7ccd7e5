//! Opening connections and pools.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conninfo::Conninfo;
use super::tls::TlsSettings;
use super::StoreError;

/// Parses a `postgres://` URL (or key=value string) with libpq's TLS
/// keywords (see `store::tls`) and applies our defaults: an application name,
/// a connect timeout and JIT compilation off ([`NO_JIT`]), unless the URL
/// sets them. Reads no file.
pub fn settings(url: &str) -> Result<(Config, TlsSettings), StoreError> {
    let mut info = Conninfo::parse(url)?;
    let tls = TlsSettings::take_from(&mut info)?;
    let mut config: Config = info
        .to_string()
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Config(e.to_string()))?;
    config.ssl_mode(tls.postgres_mode());
    if config.get_application_name().is_none() {
        config.application_name("spine-scheduler");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let options = config.get_options().unwrap_or_default().to_string();
    if !options.contains("jit") {
        config.options(format!("{options} {NO_JIT}").trim());
    }
    Ok((config, tls))
}

/// The session setting that turns PostgreSQL's JIT compilation off (it is
/// on by default since PostgreSQL 12). JIT compiles a statement whose
/// *estimated* cost passes `jit_above_cost` (100,000), and over a month of
/// daily partitions the estimates of the leader's retry pass and of the
/// pending pickup pass it: 0.2 ms of execution behind 1,058 ms of compiling
/// 756 functions, every 2 s (`spine-bench history`, BENCHMARKS.md). Every
/// statement of the scheduler is short, so JIT never pays for itself here.
/// A URL whose `options` name `jit` keeps its own setting.
pub const NO_JIT: &str = "-c jit=off";

/// [`settings`], and the TLS connector they call for (certificate files are
/// read now, so a rotated certificate counts from the next connection).
pub fn config(url: &str) -> Result<(Config, MakeRustlsConnect), StoreError> {
    let (config, tls) = settings(url)?;
    Ok((config, tls.connector()?))
}

/// One dedicated connection (for one-shot commands and the leader's lock).
/// The connection's I/O runs on a spawned task; it ends when the client drops.
pub async fn connect(url: &str) -> Result<Client, StoreError> {
    let (config, tls) = config(url)?;
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection closed with an error");
        }
    });
    Ok(client)
}

/// A connection pool of at most `size` connections.
///
/// Pooled sessions get `idle_in_transaction_session_timeout`: a replica
/// paused (SIGSTOP, a long GC-like stall, a frozen VM) in the middle of a
/// claim would otherwise hold its schedules' advisory locks — and block every
/// other replica's claim of them — for as long as it stays paused.
pub fn pool(url: &str, size: usize) -> Result<Pool, StoreError> {
    let (mut config, tls) = config(url)?;
    let mut options = config.get_options().unwrap_or_default().to_string();
    if !options.contains("idle_in_transaction_session_timeout") {
        options.push_str(" -c idle_in_transaction_session_timeout=5s");
    }
    config.options(options.trim());
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            // Fast: no round trip per checkout (Verified would cost a query
            // on every claim). A connection that died is dropped on its first
            // error, and every caller retries.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))
}

/// The same `postgres://` URL pointing at database `db` (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host}/{db}?{q}"),
        None => format!("{host}/{db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jit_is_off_unless_the_url_says_otherwise() {
        let (config, _) = settings("postgres://u@h/db").unwrap();
        assert_eq!(config.get_options(), Some(NO_JIT));
        let (config, _) =
            settings("postgres://u@h/db?options=-c%20statement_timeout%3D5s").unwrap();
        assert_eq!(
            config.get_options(),
            Some("-c statement_timeout=5s -c jit=off")
        );
        let (config, _) = settings("postgres://u@h/db?options=-c%20jit%3Don").unwrap();
        assert_eq!(config.get_options(), Some("-c jit=on"));
    }

    #[test]
    fn url_database_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
