//! Creating and dropping a PostgreSQL database on a server, through its
//! `postgres` maintenance database: what `ticketctl up --database`, the
//! chaos run and the tests do for each service's own database.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use super::connection::DbError;

fn admin(admin_url: &str) -> Result<PgConnection, DbError> {
    PgConnection::establish(admin_url)
        .map_err(|e| DbError::Unavailable(format!("PostgreSQL at {admin_url}: {e}")))
}

/// Creates database `name` unless it exists.
pub fn create_database(admin_url: &str, name: &str) -> Result<(), DbError> {
    match admin(admin_url)?.batch_execute(&format!("CREATE DATABASE \"{name}\"")) {
        Err(error) if !error.to_string().contains("already exists") => Err(error.into()),
        _ => Ok(()),
    }
}

/// Drops database `name` if it exists, closing its connections.
pub fn drop_database(admin_url: &str, name: &str) -> Result<(), DbError> {
    admin(admin_url)?
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .map_err(DbError::from)
}
