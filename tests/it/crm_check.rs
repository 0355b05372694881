//! `clairo-sync check --online` against a CRM account: a mapped name the account does not
//! have is named with its key path and the nearest name it has. The accounts here answer
//! only what the check reads (the connectors' own tests use their full fakes).

use axum::Json;
use axum::Router;
use axum::routing::get;
use serde_json::json;

use crate::support::{Receiver, daemon_config, run_cli, sandbox};

/// Serves `router` on 127.0.0.1 port 0; answers its base address.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

/// A HubSpot account's contact properties, owners and deal pipelines.
fn hubspot() -> Router {
    Router::new()
        .route(
            "/crm/v3/objects/contacts",
            get(|| async { Json(json!({"results": []})) }),
        )
        .route(
            "/crm/v3/properties/contacts",
            get(|| async {
                Json(json!({"results": [
                    {"name": "firstname", "type": "string", "options": []},
                    {"name": "budget_range", "type": "string", "options": []},
                    {"name": "lifecyclestage", "type": "enumeration", "options": [
                        {"label": "Lead", "value": "lead"},
                        {"label": "Customer", "value": "customer"},
                    ]},
                    {"name": "hs_lead_status", "type": "enumeration", "options": [
                        {"label": "New", "value": "NEW"},
                    ]},
                ]}))
            }),
        )
        .route(
            "/crm/v3/owners",
            get(|| async {
                Json(json!({"results": [
                    {"id": "75030002", "email": "pat@example.com", "firstName": "Pat", "lastName": "Seller"},
                ]}))
            }),
        )
        .route(
            "/crm/v3/pipelines/deals",
            get(|| async {
                Json(json!({"results": [
                    {"id": "default", "label": "Sales", "stages": [
                        {"id": "appointmentscheduled", "label": "Appointment scheduled"},
                        {"id": "closedwon", "label": "Closed won"},
                    ]},
                ]}))
            }),
        )
}

/// A Pipedrive company's person fields, users and lead labels.
fn pipedrive() -> Router {
    Router::new()
        .route(
            "/api/v1/users/me",
            get(|| async { Json(json!({"success": true, "data": {"id": 1002, "name": "Pat Seller"}})) }),
        )
        .route(
            "/api/v1/personFields",
            get(|| async {
                Json(json!({"success": true, "data": [
                    {"key": "name", "name": "Name", "field_type": "varchar", "edit_flag": false},
                    {"key": "9dc80c50d78a15643bfc4ca79d76156a73a1ca0e", "name": "Budget", "field_type": "varchar", "edit_flag": true},
                ]}))
            }),
        )
        .route(
            "/api/v1/users",
            get(|| async { Json(json!({"success": true, "data": [{"id": 1002, "name": "Pat Seller"}]})) }),
        )
        .route(
            "/api/v1/leadLabels",
            get(|| async {
                Json(json!({"success": true, "data": [
                    {"id": "f08b42a0-4e75-11ea-9643-03698ef1cfd6", "name": "Hot"},
                ]}))
            }),
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn check_online_names_each_misspelt_crm_mapping_with_its_key_path_and_a_suggestion() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let hubspot = serve(hubspot()).await;
    let pipedrive = serve(pipedrive()).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[connectors.crm]
type = "hubspot"
token = "pat-na1-test"
base_url = "{hubspot}"
properties = {{ budget = "budget_rnage" }}
set = {{ lifecyclestag = "lead", hs_lead_status = "NEW" }}
owner_id = "75030002"
deal = {{ pipeline = "default", stage = "appointmentschedule" }}

[connectors.deals]
type = "pipedrive"
api_token = "pd-test"
base_url = "{pipedrive}"
fields = {{ budget = "Budgte" }}
owner_id = 1002
lead = {{ label_ids = ["f08b42a0-4e75-11ea-9643-03698ef1cfd6"] }}
"#
    );
    let config = daemon_config(dir.path(), &sandbox, &receiver, &extra);

    let (code, stdout, stderr) = run_cli(&["check", "--online", "-c", config.to_str().unwrap()]);

    assert_eq!(code, 1, "{stdout}\n{stderr}");
    for line in [
        "connectors.crm.set.lifecyclestag: HubSpot has no contact property \"lifecyclestag\"; did you mean lifecyclestage?",
        "connectors.crm.properties.budget: HubSpot has no contact property \"budget_rnage\"; did you mean budget_range?",
        "connectors.crm.deal.stage: HubSpot's deal pipeline \"default\" has no stage \"appointmentschedule\"; did you mean appointmentscheduled?",
        "connectors.deals.fields.budget: Pipedrive has no person field \"Budgte\"; did you mean Budget?",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    assert!(stderr.contains("4 problem(s) found online"), "{stderr}");
    assert!(!stderr.contains("pat-na1-test") && !stderr.contains("pd-test"));
    assert!(receiver.received().is_empty(), "--online sends no event");
}
