//! axum's extractors wrapped so that their rejections (bad JSON, a bad UUID in the path, a bad
//! query parameter) come out in the contract's error shape rather than as plain text.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;

use crate::error::ApiError;

/// A JSON body: 400 for invalid JSON, 422 for wrong types, missing or unknown fields, 415
/// without the JSON content type, 413 over the size limit.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct JsonBody<T>(pub T);

/// Path parameters: 400 when one does not parse (e.g. not a UUID).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct PathParams<T>(pub T);

/// Query parameters: 400 when one does not parse.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct QueryParams<T>(pub T);
