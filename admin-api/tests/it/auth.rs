//! Accounts and sessions: rotation, reuse detection, concurrent refresh, logout, session
//! revocation, timing-safe and throttled login, operators and deactivation.

use std::time::{Duration, Instant};

use crate::common::{expect, spawn, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_session() {
    let app = spawn().await;
    let (_, access, refresh) = app.account("rot@example.com").await;
    let me = expect(StatusCode::OK, app.get("/me", &access).await);
    assert_eq!(me["email"], "rot@example.com");
    assert!(me.get("password_hash").is_none());

    let rotated = expect(
        StatusCode::OK,
        app.call(
            Method::POST,
            "/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await,
    );
    let (access2, refresh2) = (
        rotated["access_token"].as_str().unwrap(),
        rotated["refresh_token"].as_str().unwrap(),
    );
    assert_ne!(access2, access);
    assert_ne!(refresh2, refresh);
    // The old access token died with the rotation; the new one works.
    assert_eq!(app.get("/me", &access).await.0, StatusCode::UNAUTHORIZED);
    expect(StatusCode::OK, app.get("/me", access2).await);

    // The spent refresh token presented again: refused, and the whole session is revoked.
    let (status, body) = app
        .call(
            Method::POST,
            "/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(app.get("/me", access2).await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .call(
            Method::POST,
            "/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh2})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let reason: String = sqlx::query_scalar("SELECT revoked_reason FROM sessions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(reason, "refresh_token_reuse");
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_let_exactly_one_through() {
    let app = spawn().await;
    let (_, _, refresh) = app.account("race@example.com").await;
    let attempts = (0..10).map(|_| {
        app.call(
            Method::POST,
            "/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
    });
    let results = futures::future::join_all(attempts).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|(s, _)| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
        "{results:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn logout_and_session_revocation_work_server_side() {
    let app = spawn().await;
    let (_, first, _) = app.account("out@example.com").await;
    let second = app.login("out@example.com", PASSWORD).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let sessions = expect(StatusCode::OK, app.get("/auth/sessions", &first).await);
    let rows = sessions["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|r| r["ip_address"] == "127.0.0.1"),
        "{sessions}"
    );
    let other = rows.iter().find(|r| r["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::DELETE,
            &format!("/auth/sessions/{other}"),
            Some(&first),
            None,
        )
        .await,
    );
    assert_eq!(app.get("/me", &second).await.0, StatusCode::UNAUTHORIZED);
    expect(
        StatusCode::NO_CONTENT,
        app.call(Method::POST, "/auth/logout", Some(&first), None)
            .await,
    );
    let (status, body) = app.get("/me", &first).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    // No token, a malformed header, a doubled header: 401 in the contract shape.
    assert_eq!(
        app.call(Method::GET, "/me", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let doubled = app
        .client
        .get(app.url("/api/v1/me"))
        .header("authorization", "Bearer x")
        .header("authorization", "Bearer y")
        .send()
        .await
        .unwrap();
    assert_eq!(doubled.status(), StatusCode::UNAUTHORIZED);
    let audit: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_logs ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        audit,
        [
            "user.registered",
            "session.created",
            "session.created",
            "session.revoked",
            "session.revoked"
        ]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn login_does_not_reveal_whether_an_email_exists_and_is_throttled() {
    let app = spawn().await;
    app.account("known@example.com").await;
    // Warm-up: the dummy hash is made on first use.
    app.login("warmup@example.com", "not the password").await;
    let started = Instant::now();
    let wrong_password = app.login("known@example.com", "not the password").await;
    let t_known = started.elapsed();
    let started = Instant::now();
    let unknown_email = app.login("nobody@example.com", "not the password").await;
    let t_unknown = started.elapsed();
    assert_eq!(wrong_password, unknown_email);
    assert_eq!(wrong_password.0, StatusCode::UNAUTHORIZED);
    // Both spend one argon2id verification; "within noise" here is a factor of three.
    let (fast, slow) = if t_known < t_unknown {
        (t_known, t_unknown)
    } else {
        (t_unknown, t_known)
    };
    assert!(
        slow < fast * 3 + Duration::from_millis(50),
        "{t_known:?} vs {t_unknown:?}"
    );

    // Per account: after the limit even the right password waits.
    for _ in 1..5 {
        assert_eq!(
            app.login("known@example.com", "wrong").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "known@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 900);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests");
    // The same for an unknown email: the throttle reveals nothing either.
    for _ in 0..5 {
        app.login("ghost@example.com", "wrong").await;
    }
    assert_eq!(
        app.login("ghost@example.com", "wrong").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Per address: many accounts from one address.
    for i in 0..20 {
        app.login(&format!("spray{i}@example.com"), "wrong").await;
    }
    assert_eq!(
        app.login("fresh@example.com", "wrong").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.shutdown().await;
}

#[tokio::test]
async fn operators_list_and_deactivate_users_and_owners_get_403() {
    let app = spawn().await;
    let (owner_id, owner, _) = app.account("owner@example.com").await;
    let (status, body) = app.get("/admin/users", &owner).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        app.call(
            Method::PATCH,
            &format!("/admin/users/{owner_id}"),
            Some(&owner),
            Some(json!({"is_active": false}))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    // is_admin cannot be set through a body.
    assert_eq!(
        app.call(
            Method::PATCH,
            &format!("/admin/users/{owner_id}"),
            Some(&owner),
            Some(json!({"is_active": true, "is_admin": true}))
        )
        .await
        .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    wrapx_admin::create_admin(&app.settings, "ops@example.com", "operator password")
        .await
        .unwrap();
    let ops = app.login("ops@example.com", "operator password").await.1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let users = expect(StatusCode::OK, app.get("/admin/users", &ops).await);
    assert_eq!(users["data"].as_array().unwrap().len(), 2);
    let user = expect(
        StatusCode::OK,
        app.call(
            Method::PATCH,
            &format!("/admin/users/{owner_id}"),
            Some(&ops),
            Some(json!({"is_active": false})),
        )
        .await,
    );
    assert_eq!(user["is_active"], false);
    // The deactivated user's session stops at once, and they cannot log in.
    assert_eq!(app.get("/me", &owner).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.login("owner@example.com", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    let missing = uuid::Uuid::now_v7();
    assert_eq!(
        app.call(
            Method::PATCH,
            &format!("/admin/users/{missing}"),
            Some(&ops),
            Some(json!({"is_active": false}))
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    app.shutdown().await;
}
