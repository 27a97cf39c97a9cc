//! Classifying database errors: a refusal of the data itself (retrying the same rows cannot
//! succeed) against a failure that may pass (connection, timeout, deadlock, shutdown).

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    #[error("the database refused the data: {0}")]
    Data(sqlx::Error),
    #[error(transparent)]
    Transient(anyhow::Error),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        // SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation) are
        // about the rows; anything else (connection, timeout, deadlock, shutdown) may pass on
        // a later try.
        let data = matches!(&e, sqlx::Error::Database(db)
            if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")));
        if data {
            Self::Data(e)
        } else {
            Self::Transient(anyhow::Error::new(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_outside_the_data_may_pass() {
        // Refusals of the data are covered end to end (tests/logs.rs, a batch refused as data).
        for e in [sqlx::Error::PoolTimedOut, sqlx::Error::WorkerCrashed] {
            assert!(matches!(WriteError::from(e), WriteError::Transient(_)));
        }
    }
}
