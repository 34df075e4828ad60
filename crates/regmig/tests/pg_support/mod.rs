//! One throwaway PostgreSQL server per test binary, one database per test.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use pg_testkit::PgServer;
use regmig::pg::PgConfig;

/// The test binary's server, started on first use.
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().expect("start a throwaway PostgreSQL server"))
}

/// A new, empty database on the server, as a configuration.
pub fn new_database(prefix: &str) -> PgConfig {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let url = server().create_database(&name).expect("create a database");
    PgConfig::from_url(&url).expect("the test server's URL parses")
}

/// The database name of a configuration.
pub fn database_name(config: &PgConfig) -> String {
    config
        .driver_config()
        .get_dbname()
        .expect("a database")
        .to_string()
}
