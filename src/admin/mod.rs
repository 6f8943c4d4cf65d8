//! Operator reads and writes, shared by the CLI and the admin HTTP API, so
//! both say the same thing. Writes go through the SQL functions, which own the
//! validation; errors those raise for bad input come back as [`Error::Invalid`].

pub mod access;
pub mod deliveries;
pub mod endpoints;
pub mod event_types;
pub mod since;
pub mod status;
pub mod tenant_tokens;

pub use access::{Access, AdminAccess};

use tokio_postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    /// Bad input, with the database's explanation.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state (e.g. a disabled endpoint).
    #[error("{0}")]
    Conflict(String),
    /// Not for this caller: a tenant token asking for what only admins may do.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Db(#[from] crate::db::QueryError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<tokio_postgres::Error> for Error {
    /// Our SQL functions raise clear messages for bad input; those are the
    /// caller's to read. Anything else is our own failure.
    fn from(err: tokio_postgres::Error) -> Self {
        let Some(db) = err.as_db_error() else {
            return Error::Db(err.into());
        };
        let message = match db.hint() {
            Some(hint) => format!("{} ({hint})", db.message()),
            None => db.message().to_owned(),
        };
        let code = db.code();
        if *code == SqlState::NO_DATA_FOUND {
            Error::NotFound(message)
        } else if *code == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE {
            Error::Conflict(message)
        } else if code.code().starts_with("22")
            || code.code().starts_with("23")
            || *code == SqlState::INSUFFICIENT_PRIVILEGE
            || *code == SqlState::PROGRAM_LIMIT_EXCEEDED
        {
            Error::Invalid(message)
        } else {
            Error::Db(err.into())
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Error::Db(err.into())
    }
}
