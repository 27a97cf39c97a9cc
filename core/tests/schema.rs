//! The schema the migrations build: every table and key field, every foreign key and its
//! delete rule, the uniqueness and check constraints the code relies on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::Row;
use uuid::Uuid;
use wrapx_core::db::{migrate, MIGRATOR};
use wrapx_testkit::{
    backends,
    seed::{self, Provider, User, WrappedApi},
};

/// The product's 18 tables and the key fields each must have.
const TABLES: &[(&str, &[&str])] = &[
    (
        "users",
        &[
            "id",
            "email",
            "password_hash",
            "name",
            "is_active",
            "is_admin",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "projects",
        &[
            "id",
            "user_id",
            "name",
            "description",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "llm_providers",
        &[
            "id",
            "user_id",
            "provider_name",
            "api_key_ciphertext",
            "api_base_url",
            "created_at",
        ],
    ),
    (
        "wrapped_apis",
        &[
            "id",
            "user_id",
            "project_id",
            "provider_id",
            "name",
            "endpoint_id",
            "is_active",
            "created_at",
        ],
    ),
    (
        "api_keys",
        &[
            "id",
            "wrapped_api_id",
            "key_hash",
            "key_name",
            "expires_at",
            "is_active",
            "created_at",
        ],
    ),
    (
        "prompt_configs",
        &[
            "id",
            "wrapped_api_id",
            "role",
            "instructions",
            "rules",
            "behavior",
            "tone",
            "examples",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "tools",
        &[
            "id",
            "user_id",
            "tool_name",
            "tool_type",
            "tool_config",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "wrapped_api_tools",
        &["id", "wrapped_api_id", "tool_id", "created_at"],
    ),
    (
        "webhooks",
        &[
            "id",
            "wrapped_api_id",
            "url",
            "secret_ciphertext",
            "events",
            "is_active",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "chat_messages",
        &[
            "id",
            "user_id",
            "wrapped_api_id",
            "message",
            "response",
            "created_at",
        ],
    ),
    (
        "api_logs",
        &[
            "id",
            "request_id",
            "wrapped_api_id",
            "api_key_id",
            "request_data",
            "response_data",
            "tokens_used",
            "prompt_tokens",
            "completion_tokens",
            "status",
            "latency_ms",
            "model",
            "cost",
            "created_at",
        ],
    ),
    (
        "sessions",
        &[
            "id",
            "user_id",
            "token_hash",
            "refresh_token_hash",
            "expires_at",
            "is_active",
            "ip_address",
            "user_agent",
            "created_at",
        ],
    ),
    (
        "rate_limits",
        &[
            "id",
            "user_id",
            "wrapped_api_id",
            "requests_count",
            "limit",
            "reset_at",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "config_versions",
        &[
            "id",
            "prompt_config_id",
            "wrapped_api_id",
            "version",
            "config_snapshot",
            "created_at",
        ],
    ),
    (
        "notifications",
        &[
            "id",
            "wrapped_api_id",
            "user_id",
            "type",
            "title",
            "message",
            "is_read",
            "metadata",
            "created_at",
        ],
    ),
    (
        "billing",
        &[
            "id",
            "user_id",
            "plan_type",
            "status",
            "amount",
            "payment_date",
            "expires_at",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "audit_logs",
        &[
            "id",
            "user_id",
            "action",
            "resource_type",
            "resource_id",
            "ip_address",
            "user_agent",
            "details",
            "created_at",
        ],
    ),
    (
        "feedback",
        &[
            "id",
            "user_id",
            "wrapped_api_id",
            "rating",
            "comment",
            "created_at",
        ],
    ),
];

/// Every foreign key, with its deliberate ON DELETE (pg_constraint.confdeltype:
/// c = cascade, a = no action, checked at the end of the statement, n = set null).
const FOREIGN_KEYS: &[(&str, &str, &str, &str)] = &[
    ("projects", "user_id", "users", "c"),
    ("llm_providers", "user_id", "users", "c"),
    ("wrapped_apis", "user_id", "users", "c"),
    ("wrapped_apis", "project_id", "projects", "a"),
    ("wrapped_apis", "provider_id", "llm_providers", "a"),
    ("api_keys", "wrapped_api_id", "wrapped_apis", "c"),
    ("prompt_configs", "wrapped_api_id", "wrapped_apis", "c"),
    ("tools", "user_id", "users", "c"),
    ("wrapped_api_tools", "wrapped_api_id", "wrapped_apis", "c"),
    ("wrapped_api_tools", "tool_id", "tools", "c"),
    ("webhooks", "wrapped_api_id", "wrapped_apis", "c"),
    ("chat_messages", "user_id", "users", "c"),
    ("chat_messages", "wrapped_api_id", "wrapped_apis", "c"),
    ("sessions", "user_id", "users", "c"),
    ("rate_limits", "user_id", "users", "c"),
    ("rate_limits", "wrapped_api_id", "wrapped_apis", "c"),
    ("config_versions", "prompt_config_id", "prompt_configs", "c"),
    ("config_versions", "wrapped_api_id", "wrapped_apis", "c"),
    ("config_versions", "created_by", "users", "n"),
    ("notifications", "user_id", "users", "c"),
    ("notifications", "wrapped_api_id", "wrapped_apis", "n"),
    ("billing", "user_id", "users", "c"),
    ("audit_logs", "user_id", "users", "n"),
    ("feedback", "user_id", "users", "c"),
    ("feedback", "wrapped_api_id", "wrapped_apis", "c"),
];

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_reapply_as_a_no_op() {
    let url = backends::create_database().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    migrate(&pool).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, MIGRATOR.iter().count());
    migrate(&pool).await.unwrap();
    let again: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(again, applied);
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 18);
}

#[tokio::test]
async fn every_table_has_its_key_fields_and_foreign_keys() {
    let (_, pool) = backends::migrated_database().await;
    for (table, columns) in TABLES {
        let present: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1",
        )
        .bind(table)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(!present.is_empty(), "table {table} is missing");
        for column in *columns {
            assert!(
                present.iter().any(|c| c == column),
                "{table}.{column} is missing"
            );
        }
    }
    let rows = sqlx::query(
        "SELECT c.conrelid::regclass::text AS tbl, a.attname::text AS col,
                c.confrelid::regclass::text AS ref, c.confdeltype::text AS on_delete
         FROM pg_constraint c
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
         WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let actual: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get("tbl"), r.get("col"), r.get("ref"), r.get("on_delete")))
        .collect();
    for (table, column, referenced, on_delete) in FOREIGN_KEYS {
        let expected = (
            table.to_string(),
            column.to_string(),
            referenced.to_string(),
            on_delete.to_string(),
        );
        assert!(
            actual.contains(&expected),
            "missing foreign key {expected:?}"
        );
    }
    assert_eq!(
        actual.len(),
        FOREIGN_KEYS.len(),
        "unexpected foreign keys: {actual:?}"
    );
}

/// Inserts a user, project, provider and wrapped API; returns the user's and the API's ids.
async fn seed(pool: &sqlx::PgPool, email: &str, endpoint: &str) -> (Uuid, Uuid) {
    let user = User::new().email(email).insert(pool).await;
    let project = seed::project(pool, user).await;
    let provider = Provider::new(user).insert(pool).await;
    let api = WrappedApi::new(user, project, provider)
        .endpoint(endpoint)
        .insert(pool)
        .await;
    (user, api.id)
}

#[tokio::test]
async fn constraints_hold() {
    let (_, pool) = backends::migrated_database().await;
    let (user, api) = seed(&pool, "Ada@Example.com", "ep_aaaaaaaaaaaaaaaaaaaa").await;

    // Emails are unique case-insensitively.
    let dup = sqlx::query("INSERT INTO users (id, email, password_hash, name) VALUES ($1, 'ada@example.COM', 'x', 'n')")
        .bind(Uuid::now_v7()).execute(&pool).await;
    assert!(dup.is_err(), "duplicate email accepted");

    // endpoint_id is unique.
    let project: Uuid = sqlx::query_scalar("SELECT project_id FROM wrapped_apis WHERE id = $1")
        .bind(api)
        .fetch_one(&pool)
        .await
        .unwrap();
    let provider: Uuid = sqlx::query_scalar("SELECT provider_id FROM wrapped_apis WHERE id = $1")
        .bind(api)
        .fetch_one(&pool)
        .await
        .unwrap();
    let dup = sqlx::query("INSERT INTO wrapped_apis (id, user_id, project_id, provider_id, name, endpoint_id, model) VALUES ($1, $2, $3, $4, 'w2', 'ep_aaaaaaaaaaaaaaaaaaaa', 'm')")
        .bind(Uuid::now_v7()).bind(user).bind(project).bind(provider).execute(&pool).await;
    assert!(dup.is_err(), "duplicate endpoint_id accepted");

    // The key hash is unique.
    let hash = "a".repeat(64);
    let insert_key = |id: Uuid| {
        sqlx::query("INSERT INTO api_keys (id, wrapped_api_id, key_hash, key_hint, key_name) VALUES ($1, $2, $3, 'wxk_abcd', 'k')")
            .bind(id).bind(api).bind(hash.clone())
    };
    insert_key(Uuid::now_v7()).execute(&pool).await.unwrap();
    assert!(
        insert_key(Uuid::now_v7()).execute(&pool).await.is_err(),
        "duplicate key hash accepted"
    );

    // A tool is attached to a wrapped API once.
    let tool = seed::tool(&pool, user, "lookup").await;
    seed::attach_tool(&pool, api, tool).await.unwrap();
    assert!(
        seed::attach_tool(&pool, api, tool).await.is_err(),
        "tool attached twice"
    );

    // One version number per config.
    let config = Uuid::now_v7();
    sqlx::query("INSERT INTO prompt_configs (id, wrapped_api_id) VALUES ($1, $2)")
        .bind(config)
        .bind(api)
        .execute(&pool)
        .await
        .unwrap();
    let version = || {
        sqlx::query("INSERT INTO config_versions (id, prompt_config_id, wrapped_api_id, version, config_snapshot) VALUES ($1, $2, $3, 1, '{}')")
        .bind(Uuid::now_v7()).bind(config).bind(api)
    };
    version().execute(&pool).await.unwrap();
    assert!(version().execute(&pool).await.is_err(), "version 1 twice");

    // Check constraints: rating 1 to 5, known plans and statuses.
    for rating in [0, 6] {
        let r = sqlx::query(
            "INSERT INTO feedback (id, user_id, wrapped_api_id, rating) VALUES ($1, $2, $3, $4)",
        )
        .bind(Uuid::now_v7())
        .bind(user)
        .bind(api)
        .bind(rating as i16)
        .execute(&pool)
        .await;
        assert!(r.is_err(), "rating {rating} accepted");
    }
    for (plan, status) in [("gold", "active"), ("pro", "sleeping")] {
        let r = sqlx::query("INSERT INTO billing (id, user_id, plan_type, status, period_start, expires_at) VALUES ($1, $2, $3, $4, now(), now() + interval '30 days')")
            .bind(Uuid::now_v7()).bind(user).bind(plan).bind(status).execute(&pool).await;
        assert!(r.is_err(), "plan {plan}/{status} accepted");
    }

    // A project in use cannot be deleted; deleting the user cascades, audit rows survive.
    assert!(sqlx::query("DELETE FROM projects WHERE id = $1")
        .bind(project)
        .execute(&pool)
        .await
        .is_err());
    sqlx::query("INSERT INTO audit_logs (id, user_id, action, resource_type) VALUES ($1, $2, 'create', 'project')")
        .bind(Uuid::now_v7()).bind(user).execute(&pool).await.unwrap();
    assert!(
        sqlx::query("UPDATE audit_logs SET action = 'forged'")
            .execute(&pool)
            .await
            .is_err(),
        "audit row edited"
    );
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    let apis: i64 = sqlx::query_scalar("SELECT count(*) FROM wrapped_apis")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(apis, 0);
    let audit: Option<Uuid> = sqlx::query_scalar("SELECT user_id FROM audit_logs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(audit, None);
}

#[tokio::test]
async fn api_logs_request_id_is_the_idempotency_key() {
    let (_, pool) = backends::migrated_database().await;
    let request = Uuid::now_v7();
    let insert = || {
        sqlx::query(
        "INSERT INTO api_logs (id, request_id, wrapped_api_id, api_key_id, user_id, provider, model, status, outcome, latency_ms, created_at)
         VALUES ($1, $2, $3, $3, $3, 'openai', 'm', 200, 'completed', 5, now())
         ON CONFLICT (request_id) DO NOTHING",
    ).bind(Uuid::now_v7()).bind(request).bind(Uuid::now_v7())
    };
    assert_eq!(insert().execute(&pool).await.unwrap().rows_affected(), 1);
    assert_eq!(insert().execute(&pool).await.unwrap().rows_affected(), 0);
}
