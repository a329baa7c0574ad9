//! The OpenAPI document Roster serves is valid OpenAPI 3 (checked by
//! `openapi-spec-validator`, installed by `scripts/test.sh` in
//! `tests/openapi/.venv`) and says what the routes take: list filters are
//! query parameters with their bounds. Schemathesis, from the same place,
//! then holds the running server to it: every status, content type, header
//! and body each route answers is the documented one, schema-valid requests
//! are taken and schema-violating ones refused.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn the_openapi_document_is_valid_and_declares_query_parameters_as_such() {
    let validator =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/.venv/bin/openapi-spec-validator");
    assert!(validator.exists(), "{} is missing: run scripts/test.sh, which installs it", validator.display());
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let document: Value = res.json().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
    let out = std::process::Command::new(&validator).arg(&path).output().expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "the OpenAPI document is invalid:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    for (route, names) in [
        ("/api/v1/members", &["status", "role", "cursor", "limit"][..]),
        ("/api/v1/invitations", &["status", "cursor", "limit"]),
        ("/api/v1/audit-log", &["action", "actor", "since", "until", "cursor", "limit"]),
    ] {
        let params = document["paths"][route]["get"]["parameters"].as_array().unwrap();
        for name in names {
            let param = params.iter().find(|p| p["name"] == *name).unwrap_or_else(|| panic!("{route}: {name}"));
            assert_eq!(param["in"], "query", "{route}: {param}");
        }
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(
            (limit["schema"]["minimum"].as_f64(), limit["schema"]["maximum"].as_f64()),
            (Some(1.0), Some(200.0))
        );
    }
    let sso = &document["paths"]["/api/v1/organization/sso"];
    assert!(sso["patch"].is_object(), "PATCH /api/v1/organization/sso is documented");
}

/// Schemathesis over the whole document (admin API and sign-in routes),
/// every check on, with a fixed seed so a run is repeatable; the exceptions,
/// each with its reason, are in `tests/openapi/schemathesis.toml`.
#[tokio::test]
async fn the_server_answers_as_the_openapi_document_says() {
    let app = schemathesis_target().await;
    let org = app.org("Schemathesis", 25).await;
    // The operator's routes answer only an operator key: the next test runs them.
    let (ok, report) = schemathesis(&app, &org.owner_key, &["--exclude-path-regex", "^/api/v1/operator/"]).await;
    assert!(ok, "Schemathesis found the server and its document apart:\n{report}");
    // The run tested every documented operation but the two it leaves out
    // and the nine of the operator.
    let (selected, total) = tested_of(&report);
    assert_eq!(total - selected, 2 + 9, "only the excluded and the operator's operations are left out:\n{report}");
}

/// How many operations a run selected and tested (asserted equal), and how many the document has.
fn tested_of(report: &str) -> (u32, u32) {
    let tested = report.lines().find(|l| l.trim_start().starts_with("Tested:")).unwrap_or_default();
    let selected = report.lines().find(|l| l.trim_start().starts_with("Selected:")).unwrap_or_default();
    let counts =
        |line: &str| -> Vec<u32> { line.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect() };
    let (selected, tested) = (counts(selected), counts(tested));
    assert_eq!(selected.len(), 2, "{report}");
    assert_eq!(tested, [selected[0]], "every selected operation was tested:\n{report}");
    (selected[0], selected[1])
}

/// The operator API, with an operator key: the same checks.
#[tokio::test]
async fn the_operator_api_answers_as_the_openapi_document_says() {
    let app = schemathesis_target().await;
    app.org("Schemathesis", 25).await;
    let key = app.operator_key().await;
    let (ok, report) = schemathesis(&app, &key, &["--include-path-regex", "^/api/v1/operator/"]).await;
    assert!(ok, "Schemathesis found the operator API and its document apart:\n{report}");
    assert_eq!(tested_of(&report).0, 9, "the operator's nine operations:\n{report}");
}

/// A server for Schemathesis. Failed authentications are what a run sends
/// on purpose; without the limit every such answer stays the documented 401.
async fn schemathesis_target() -> TestApp {
    TestApp::spawn_with(
        TestDb::new().await,
        |c| c.rate_limit_failed_auth_per_minute = 0,
        std::sync::Arc::new(roster::clock::SystemClock),
    )
    .await
}

/// Runs Schemathesis over the served document with `key`, every check on,
/// a fixed seed; whether it passed, and its report.
async fn schemathesis(app: &TestApp, key: &str, select: &[&str]) -> (bool, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = root.join("tests/openapi/.venv/bin/st");
    assert!(st.exists(), "{} is missing: run scripts/test.sh, which installs it", st.display());
    let work = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(&st)
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(root.join("tests/openapi/schemathesis.toml"))
        .arg("run")
        .arg(app.url("/api/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(select)
        .args(["--checks", "all", "--max-examples", "30", "--seed", "1", "--workers", "1"])
        .output()
        .await
        .expect("run schemathesis");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}
