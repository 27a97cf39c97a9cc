//! The one table of errors the gateway writes: its own refusals, and the provider errors it
//! passes on in another dialect. Each kind has one status, OpenAI type and code, and Anthropic
//! type; `render` writes them in either dialect, as a whole body or as a stream's last event.
//! Nothing else in the gateway writes an error shape.

mod render;

use std::borrow::Cow;

/// What went wrong, from the client's point of view. The doc comment of each variant is the
/// default message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// You didn't provide an API key. Send it as `Authorization: Bearer <key>` or `x-api-key`.
    MissingKey,
    /// The API key is malformed.
    MalformedKey,
    /// Incorrect API key provided.
    UnknownKey,
    /// This API key has been revoked.
    RevokedKey,
    /// This API key has expired.
    ExpiredKey,
    /// This API is not active.
    InactiveApi,
    /// The account that owns this API is disabled.
    AccountDisabled,
    /// Unknown endpoint.
    UnknownEndpoint,
    /// Unknown path.
    UnknownPath,
    /// The request is not valid.
    InvalidRequest,
    /// The request body is larger than this gateway accepts.
    BodyTooLarge,
    /// The request body did not arrive in time.
    BodyTimeout,
    /// Rate limit reached for requests.
    RateLimited,
    /// The provider refused its own credentials.
    ProviderAuthentication,
    /// The provider account cannot pay for the request.
    ProviderBilling,
    /// The provider does not allow the request.
    ProviderPermission,
    /// The provider does not know what was asked for.
    ProviderNotFound,
    /// The upstream provider failed to answer.
    UpstreamError,
    /// The upstream provider is overloaded; retry later.
    ProviderOverloaded,
    /// The upstream provider did not answer in time.
    UpstreamTimeout,
    /// The service is temporarily unavailable.
    Unavailable,
    /// Internal error.
    Internal,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub status: u16,
    /// OpenAI's `error.type`.
    pub openai_type: &'static str,
    /// OpenAI's `error.code`.
    pub code: &'static str,
    /// Anthropic's `error.type`.
    pub anthropic_type: &'static str,
}

impl ErrorKind {
    /// Every kind, for the tests that pin the table.
    pub const ALL: [Self; 22] = [
        Self::MissingKey,
        Self::MalformedKey,
        Self::UnknownKey,
        Self::RevokedKey,
        Self::ExpiredKey,
        Self::InactiveApi,
        Self::AccountDisabled,
        Self::UnknownEndpoint,
        Self::UnknownPath,
        Self::InvalidRequest,
        Self::BodyTooLarge,
        Self::BodyTimeout,
        Self::RateLimited,
        Self::ProviderAuthentication,
        Self::ProviderBilling,
        Self::ProviderPermission,
        Self::ProviderNotFound,
        Self::UpstreamError,
        Self::ProviderOverloaded,
        Self::UpstreamTimeout,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The table. Provider 5xx are the contract's 502 whatever their kind (`ProviderOverloaded`
    /// keeps its own code: clients back off from it differently).
    pub const fn parts(self) -> Parts {
        let (status, openai_type, code, anthropic_type) = match self {
            Self::MissingKey => (
                401,
                "invalid_request_error",
                "missing_api_key",
                "authentication_error",
            ),
            Self::MalformedKey => (
                401,
                "invalid_request_error",
                "invalid_api_key",
                "authentication_error",
            ),
            Self::UnknownKey => (
                401,
                "invalid_request_error",
                "invalid_api_key",
                "authentication_error",
            ),
            Self::RevokedKey => (
                401,
                "invalid_request_error",
                "revoked_api_key",
                "authentication_error",
            ),
            Self::ExpiredKey => (
                401,
                "invalid_request_error",
                "expired_api_key",
                "authentication_error",
            ),
            Self::InactiveApi => (403, "permission_error", "api_inactive", "permission_error"),
            Self::AccountDisabled => (
                403,
                "permission_error",
                "account_disabled",
                "permission_error",
            ),
            Self::UnknownEndpoint => (
                404,
                "invalid_request_error",
                "unknown_endpoint",
                "not_found_error",
            ),
            Self::UnknownPath => (
                404,
                "invalid_request_error",
                "unknown_url",
                "not_found_error",
            ),
            Self::InvalidRequest => (
                400,
                "invalid_request_error",
                "invalid_request",
                "invalid_request_error",
            ),
            Self::BodyTooLarge => (
                413,
                "invalid_request_error",
                "request_too_large",
                "request_too_large",
            ),
            Self::BodyTimeout => (
                408,
                "invalid_request_error",
                "request_timeout",
                "invalid_request_error",
            ),
            Self::RateLimited => (429, "requests", "rate_limit_exceeded", "rate_limit_error"),
            Self::ProviderAuthentication => (
                401,
                "invalid_request_error",
                "invalid_api_key",
                "authentication_error",
            ),
            Self::ProviderBilling => (
                402,
                "invalid_request_error",
                "billing_error",
                "billing_error",
            ),
            Self::ProviderPermission => (
                403,
                "permission_error",
                "permission_denied",
                "permission_error",
            ),
            Self::ProviderNotFound => {
                (404, "invalid_request_error", "not_found", "not_found_error")
            }
            Self::UpstreamError => (502, "upstream_error", "bad_gateway", "api_error"),
            Self::ProviderOverloaded => (
                502,
                "upstream_error",
                "provider_overloaded",
                "overloaded_error",
            ),
            Self::UpstreamTimeout => (504, "upstream_error", "gateway_timeout", "timeout_error"),
            Self::Unavailable => (
                503,
                "server_error",
                "service_unavailable",
                "overloaded_error",
            ),
            Self::Internal => (500, "server_error", "internal_error", "api_error"),
        };
        Parts {
            status,
            openai_type,
            code,
            anthropic_type,
        }
    }

    pub const fn status(self) -> u16 {
        self.parts().status
    }

    /// The kind an Anthropic error type names, if it is one of Anthropic's.
    pub fn of_anthropic_type(anthropic_type: &str) -> Option<Self> {
        Some(match anthropic_type {
            "invalid_request_error" => Self::InvalidRequest,
            "authentication_error" => Self::ProviderAuthentication,
            "billing_error" => Self::ProviderBilling,
            "permission_error" => Self::ProviderPermission,
            "not_found_error" => Self::ProviderNotFound,
            "request_too_large" => Self::BodyTooLarge,
            "rate_limit_error" => Self::RateLimited,
            "timeout_error" => Self::UpstreamTimeout,
            "api_error" => Self::UpstreamError,
            "overloaded_error" => Self::ProviderOverloaded,
            _ => return None,
        })
    }

    /// The kind a provider's bare status stands for: its own for the statuses both providers
    /// document, else a plain 4xx (`InvalidRequest`, the status kept by the caller) or 5xx.
    pub fn of_provider_status(status: u16) -> Self {
        match status {
            400 => Self::InvalidRequest,
            401 => Self::ProviderAuthentication,
            402 => Self::ProviderBilling,
            403 => Self::ProviderPermission,
            404 => Self::ProviderNotFound,
            413 => Self::BodyTooLarge,
            429 => Self::RateLimited,
            503 => Self::Unavailable,
            504 => Self::UpstreamTimeout,
            529 => Self::ProviderOverloaded,
            s if s < 500 => Self::InvalidRequest,
            _ => Self::UpstreamError,
        }
    }

    fn default_message(self) -> &'static str {
        match self {
            Self::MissingKey => "You didn't provide an API key. Send it as `Authorization: Bearer <key>` or `x-api-key`.",
            Self::MalformedKey => "The API key is malformed.",
            Self::UnknownKey => "Incorrect API key provided.",
            Self::RevokedKey => "This API key has been revoked.",
            Self::ExpiredKey => "This API key has expired.",
            Self::InactiveApi => "This API is not active.",
            Self::AccountDisabled => "The account that owns this API is disabled.",
            Self::UnknownEndpoint => "Unknown endpoint.",
            Self::UnknownPath => "Unknown path.",
            Self::InvalidRequest => "The request is not valid.",
            Self::BodyTooLarge => "The request body is larger than this gateway accepts.",
            Self::BodyTimeout => "The request body did not arrive in time.",
            Self::RateLimited => "Rate limit reached for requests.",
            Self::ProviderAuthentication => "The provider refused its own credentials.",
            Self::ProviderBilling => "The provider account cannot pay for the request.",
            Self::ProviderPermission => "The provider does not allow the request.",
            Self::ProviderNotFound => "The provider does not know what was asked for.",
            Self::UpstreamError => "The upstream provider failed to answer.",
            Self::ProviderOverloaded => "The upstream provider is overloaded; retry later.",
            Self::UpstreamTimeout => "The upstream provider did not answer in time.",
            Self::Unavailable => "The service is temporarily unavailable.",
            Self::Internal => "Internal error.",
        }
    }
}

/// An error with its message. 5xx messages stay opaque; the cause goes to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: Cow<'static, str>,
    /// A provider's own status, passed on in place of the kind's (a 4xx the table has no row
    /// for, such as 422).
    status: Option<u16>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            message: Cow::Borrowed(kind.default_message()),
            status: None,
        }
    }

    /// An error with a specific message (shown to the client: no causes of 5xx in it).
    pub fn with_message(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            status: None,
        }
    }

    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::with_message(ErrorKind::InvalidRequest, message)
    }

    /// The same error, answered with the provider's own `status`.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.kind.status())
    }
}

#[cfg(test)]
mod tests;
