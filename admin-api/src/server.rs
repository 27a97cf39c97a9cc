//! Start-up, the middleware stack and the accept loop on hyper-util's server builder (with an
//! explicit header-read timeout, which hyper leaves off unless a timer is configured), and
//! graceful shutdown: stop accepting, let in-flight requests finish, drain the event publisher.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    extract::{ConnectInfo, DefaultBodyLimit, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer};
use uuid::Uuid;
use wrapx_core::{
    cache::CacheNames, config::Settings, crypto::MasterKeys, keys::KeyHasher, password,
    types::Email,
};

use crate::{
    audit::{self, Actor},
    auth::Client,
    error::{body_for_status, ApiError},
    events::EventPublisher,
    routes,
    state::{AppState, Inner},
};

/// The request counter of the contract.
pub const REQUESTS_METRIC: &str = "wrapx_admin_requests_total";

/// A bound, ready-to-serve admin API.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    settings: Settings,
    /// Background tasks (the event publisher) drained at shutdown.
    tasks: TaskTracker,
    tasks_stop: CancellationToken,
}

impl Application {
    /// Connects (lazily), applies the migrations, binds `admin.listen` (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = wrapx_core::db::pool(&settings.database).context("database pool")?;
        wrapx_core::db::migrate(&db)
            .await
            .context("applying the migrations")?;
        let redis = wrapx_core::redis_pool::pool(&settings.redis).context("redis pool")?;
        let metrics = wrapx_core::telemetry::prometheus(&[]).context("metrics recorder")?;
        crate::metrics::describe();
        let tasks = TaskTracker::new();
        let tasks_stop = CancellationToken::new();
        let events = EventPublisher::start(settings.amqp.clone(), &tasks, tasks_stop.clone());
        let state = AppState {
            inner: Arc::new(Inner {
                names: CacheNames::new(settings.redis.prefix.clone()),
                hasher: KeyHasher::from_settings(&settings.security)
                    .context("security.hash_pepper")?,
                master_keys: MasterKeys::from_settings(&settings.security)
                    .context("security.master_key")?,
                settings: settings.clone(),
                db,
                redis,
                events,
            }),
        };
        let router = router(state.clone(), metrics);
        let listener = TcpListener::bind(settings.admin.listen)
            .await
            .with_context(|| format!("binding admin.listen {}", settings.admin.listen))?;
        Ok(Self {
            listener,
            router,
            state,
            settings,
            tasks,
            tasks_stop,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves; then stops accepting, waits for in-flight requests
    /// (at most the request timeout), drains the event publisher and closes the pool.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            state,
            settings,
            tasks,
            tasks_stop,
        } = self;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(settings.admin.header_read_timeout_ms));
        let graceful = GracefulShutdown::new();
        // Connections apart from the background tasks: a connection that outlives the grace
        // period is abandoned, never waited on forever.
        let connections = TaskTracker::new();
        tracing::info!(listen = %listener.local_addr()?, "wrapx-admin listening");
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let router = router.clone();
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    router.clone().oneshot(request)
                });
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            connections.spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        tracing::info!("stop requested: finishing in-flight requests");
        let grace = Duration::from_millis(settings.admin.request_timeout_ms.saturating_add(1000));
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.len(),
                "in-flight requests did not finish within the grace period"
            );
        }
        connections.close();
        tasks_stop.cancel();
        tasks.close();
        tasks.wait().await;
        state.db.close().await;
        tracing::info!("wrapx-admin stopped");
        Ok(())
    }
}

/// The whole stack, outermost first: metrics and contract-shaped errors, panic catcher,
/// request timeout, early 413 on `content-length`, body limit, routes.
fn router(state: AppState, metrics: PrometheusHandle) -> Router {
    let max_body = state.settings.admin.max_body_bytes;
    let timeout = Duration::from_millis(state.settings.admin.request_timeout_ms);
    Router::new()
        .nest("/api/v1", routes::api())
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || async move { wrapx_core::telemetry::render(&metrics) }),
        )
        .fallback(|| async { body_for_status(StatusCode::NOT_FOUND) })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            max_body,
            content_length_limit,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(CatchPanicLayer::new())
        .layer(middleware::from_fn(shape_and_count))
        .with_state(state)
}

async fn openapi_json() -> Response {
    Json(crate::openapi::document()).into_response()
}

/// 413 before reading a body whose declared length is over the limit.
async fn content_length_limit(State(max): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    next.run(request).await
}

/// Counts every answer by status class, and rewrites the plain-text error answers of axum and
/// tower (405, 408, a panic's 500) into the contract's shape.
async fn shape_and_count(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let response = if (status.is_client_error() || status.is_server_error()) && !is_json {
        let mut shaped = body_for_status(status);
        for (name, value) in response.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                shaped.headers_mut().insert(name.clone(), value.clone());
            }
        }
        shaped
    } else {
        response
    };
    let class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!(REQUESTS_METRIC, "status" => class).increment(1);
    response
}

/// `wrapx-admin create-admin`: makes an operator account, or gives an existing account the
/// admin flag and the given password.
pub async fn create_admin(
    settings: &Settings,
    email: &str,
    password_plain: &str,
) -> anyhow::Result<Uuid> {
    let email = Email::parse(email).context("the email is not a valid address")?;
    let n = password_plain.chars().count();
    anyhow::ensure!(
        (8..=128).contains(&n),
        "the password must be 8 to 128 characters"
    );
    let db = wrapx_core::db::pool(&settings.database)?;
    wrapx_core::db::migrate(&db)
        .await
        .context("applying the migrations")?;
    let owned = password_plain.to_owned();
    let hash = tokio::task::spawn_blocking(move || password::hash_password(&owned)).await??;
    let name = email
        .as_str()
        .split('@')
        .next()
        .unwrap_or("admin")
        .to_owned();
    let mut tx = db.begin().await?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO users (id, email, password_hash, name, is_admin) VALUES ($1, $2, $3, $4, true) \
         ON CONFLICT (email) DO UPDATE SET is_admin = true, is_active = true, password_hash = EXCLUDED.password_hash \
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(email.as_str())
    .bind(hash)
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let actor = Actor {
        user_id: Some(id),
        client: Client {
            ip: None,
            user_agent: Some("wrapx-admin create-admin".into()),
        },
    };
    audit::record(
        &mut tx,
        &actor,
        "user.made_admin",
        "user",
        Some(id),
        serde_json::json!({"fields": ["is_admin", "password"]}),
    )
    .await?;
    tx.commit().await?;
    db.close().await;
    Ok(id)
}
