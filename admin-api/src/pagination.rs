//! Cursor pagination: lists come newest first, the cursor is the last id of a page (UUID v7
//! ids are time-ordered, so `id < cursor` continues where the page ended), `limit` is 1..=100.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 100;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1 to 100; 50 when absent.
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

impl PageParams {
    /// The validated page size.
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            ))),
        }
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<Uuid>,
}

/// Rows that can be paged by their id.
pub trait HasId {
    fn id(&self) -> Uuid;
}

/// Builds a page from rows fetched with `LIMIT limit + 1`: the extra row only says whether
/// another page follows.
pub fn page<T: HasId>(mut rows: Vec<T>, limit: i64) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more {
        rows.last().map(HasId::id)
    } else {
        None
    };
    Page {
        data: rows,
        next_cursor,
    }
}

/// A page that holds everything (short, bounded lists such as the usage days).
pub fn whole<T>(rows: Vec<T>) -> Page<T> {
    Page {
        data: rows,
        next_cursor: None,
    }
}
