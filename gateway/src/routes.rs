//! The contract's routes, matched once per request from the method and path.

use http::Method;
use wrapx_core::types::EndpointId;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/chat/completions` or `POST /w/{endpoint_id}/v1/chat/completions`.
    ChatCompletions {
        endpoint: Option<Endpoint>,
    },
    /// `POST /v1/messages` or `POST /w/{endpoint_id}/v1/messages`: Anthropic Messages, for
    /// clients on Anthropic's SDK.
    Messages {
        endpoint: Option<Endpoint>,
    },
    /// `GET /v1/models`, `GET /w/{endpoint_id}/v1/models`.
    Models {
        endpoint: Option<Endpoint>,
    },
    Healthz,
    Readyz,
    /// Anything else: 404 (after the key check when a key was presented, so it is logged).
    Unknown {
        endpoint: Option<Endpoint>,
    },
}

/// The `{endpoint_id}` of a `/w/…` path: parsed, or known to be malformed (which no key can
/// match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Valid(EndpointId),
    Malformed,
}

impl Route {
    pub fn resolve(method: &Method, path: &str) -> Self {
        match path {
            "/healthz" if method == Method::GET => return Self::Healthz,
            "/readyz" if method == Method::GET => return Self::Readyz,
            _ => {}
        }
        let (endpoint, rest) = match path.strip_prefix("/w/") {
            Some(tail) => {
                let (id, rest) = tail.split_once('/').unwrap_or((tail, ""));
                let endpoint = EndpointId::parse(id).map_or(Endpoint::Malformed, Endpoint::Valid);
                (Some(endpoint), rest)
            }
            None => (None, path.strip_prefix('/').unwrap_or(path)),
        };
        // SDKs append paths to their base URL; a trailing slash is the same route.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        match (method, rest) {
            (&Method::POST, "v1/chat/completions") => Self::ChatCompletions { endpoint },
            (&Method::POST, "v1/messages") => Self::Messages { endpoint },
            (&Method::GET, "v1/models") => Self::Models { endpoint },
            _ => Self::Unknown { endpoint },
        }
    }

    /// The endpoint the path names, if it is a `/w/…` path.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        match self {
            Self::ChatCompletions { endpoint }
            | Self::Messages { endpoint }
            | Self::Models { endpoint }
            | Self::Unknown { endpoint } => endpoint.as_ref(),
            Self::Healthz | Self::Readyz => None,
        }
    }

    /// Whether the route needs no key.
    pub fn is_public(&self) -> bool {
        matches!(self, Self::Healthz | Self::Readyz)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn resolves_the_contract_routes() {
        let ep = EndpointId::generate();
        let w = |p: &str| format!("/w/{ep}{p}");
        let cases: Vec<(Method, String, Route)> = vec![
            (
                Method::POST,
                "/v1/chat/completions".into(),
                Route::ChatCompletions { endpoint: None },
            ),
            (
                Method::POST,
                w("/v1/chat/completions"),
                Route::ChatCompletions {
                    endpoint: Some(Endpoint::Valid(ep.clone())),
                },
            ),
            (
                Method::POST,
                "/v1/messages".into(),
                Route::Messages { endpoint: None },
            ),
            (
                Method::GET,
                "/v1/models".into(),
                Route::Models { endpoint: None },
            ),
            (
                Method::GET,
                w("/v1/models/"),
                Route::Models {
                    endpoint: Some(Endpoint::Valid(ep.clone())),
                },
            ),
            (Method::GET, "/healthz".into(), Route::Healthz),
            (Method::GET, "/readyz".into(), Route::Readyz),
            (
                Method::GET,
                "/v1/chat/completions".into(),
                Route::Unknown { endpoint: None },
            ),
            (
                Method::POST,
                "/v2/chat/completions".into(),
                Route::Unknown { endpoint: None },
            ),
            (
                Method::POST,
                "/w/ep_nope/v1/chat/completions".into(),
                Route::ChatCompletions {
                    endpoint: Some(Endpoint::Malformed),
                },
            ),
            (
                Method::POST,
                "/w/".into(),
                Route::Unknown {
                    endpoint: Some(Endpoint::Malformed),
                },
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(Route::resolve(&method, &path), expected, "{method} {path}");
        }
    }
}
