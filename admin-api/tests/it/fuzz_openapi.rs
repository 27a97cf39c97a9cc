//! schemathesis against the served OpenAPI spec: generated input on every route (bar the two
//! that end the test's own session, which would leave the rest testing only 401s) never gets a
//! 5xx. schemathesis comes from tests/requirements.txt, installed by scripts/test.

use std::path::PathBuf;

fn schemathesis() -> PathBuf {
    wrapx_testkit::python().with_file_name("st")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_input_on_every_route_never_gets_a_5xx() {
    let app = crate::common::spawn().await;
    let (_, token, _) = app.account("fuzz@example.com").await;
    let st = schemathesis();
    assert!(
        st.exists(),
        "{} is missing: scripts/test installs tests/requirements.txt into .venv",
        st.display()
    );
    let args = vec![
        "run".to_owned(),
        format!("{}/api/v1/openapi.json", app.base),
        "--url".to_owned(),
        app.base.clone(),
        "-H".to_owned(),
        format!("Authorization: Bearer {token}"),
        "--checks".to_owned(),
        "not_a_server_error".to_owned(),
        "--phases".to_owned(),
        "examples,fuzzing".to_owned(),
        "--max-examples".to_owned(),
        "15".to_owned(),
        "--seed".to_owned(),
        "20261125".to_owned(),
        "--exclude-path".to_owned(),
        "/api/v1/auth/logout".to_owned(),
        "--exclude-path-regex".to_owned(),
        "^/api/v1/auth/sessions/".to_owned(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(st)
            .args(&args)
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    // It ran the routes (all but the two left out), not nothing.
    let tested: usize = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(tested >= 50, "{tested} operations tested: {report}");
    assert!(report.contains(" passed"), "{report}");
    app.shutdown().await;
}
