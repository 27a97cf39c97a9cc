//! The OpenAPI 3 document, generated from the handlers' and types' annotations and served at
//! `/api/v1/openapi.json`.

use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use crate::routes::{
    audit_logs, auth, billing, chat, feedback, keys, logs, notifications, operators, projects,
    prompt_config, providers, rate_limits, routing, tools, webhooks, wrapped_apis,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Wrap-X admin API", version = "1.0.0",
         description = "Manage projects, providers, wrapped APIs, keys, prompt configs, routing, tools, webhooks, limits, logs and billing. Errors answer {\"error\":{\"code\",\"message\"}}."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::list_sessions, auth::delete_session, auth::me,
        projects::list, projects::create, projects::get, projects::update, projects::delete,
        providers::list, providers::create, providers::get, providers::update, providers::delete,
        wrapped_apis::list, wrapped_apis::create, wrapped_apis::get, wrapped_apis::update, wrapped_apis::delete,
        keys::list, keys::create, keys::revoke,
        prompt_config::get, prompt_config::put, prompt_config::versions, prompt_config::restore,
        routing::get, routing::put, routing::delete,
        tools::list, tools::create, tools::get, tools::update, tools::delete, tools::list_attached, tools::attach, tools::detach,
        webhooks::list, webhooks::create, webhooks::get, webhooks::update, webhooks::delete, webhooks::test,
        rate_limits::get, rate_limits::put,
        logs::list, logs::usage,
        chat::list, chat::create,
        notifications::list, notifications::mark_read,
        billing::get, billing::put_plan,
        audit_logs::list,
        feedback::list, feedback::create,
        operators::list, operators::update,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
