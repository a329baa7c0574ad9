//! The OpenAPI document Roster serves is valid OpenAPI 3 (checked by
//! `openapi-spec-validator`, installed by `scripts/test.sh` in
//! `tests/openapi/.venv`) and says what the routes take: list filters are
//! query parameters with their bounds.

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
