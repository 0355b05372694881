use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::json;

use super::fake::{FakeHubspot, Fault, Route};
use super::*;
use crate::testkit::*;
use std::sync::Arc;

use crate::{ConnectorConfig, Secret, Verdict};

const TOKEN: &str = "pat-na1-11111111-2222-3333-4444-555555555555";

fn config(base_url: &str) -> HubspotConfig {
    HubspotConfig {
        token: Some(Secret::new(TOKEN)),
        token_file: None,
        base_url: base_url.to_owned(),
        timeout: Duration::from_secs(5),
        email_answer_key: None,
        properties: BTreeMap::new(),
        set: BTreeMap::new(),
        owner_id: None,
        company: false,
        deal: None,
        without_email: WithoutEmail::Note,
    }
}

fn connector(config: &HubspotConfig) -> HubspotConnector {
    HubspotConnector::new("crm", config).unwrap()
}

#[tokio::test]
async fn a_brief_upserts_its_contact_by_email_and_logs_a_note_on_it() {
    let fake = FakeHubspot::start(TOKEN).await;
    let connector = connector(&config(&fake.base_url));
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();

    let attempt = attempt(&connector, &event, &checkpoints, 1).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert_eq!(attempt.status_code, Some(201));
    let contacts = fake.contacts();
    assert_eq!(contacts.len(), 1);
    let contact = &contacts[0];
    assert_eq!(contact.properties["email"], "john@techstart.io");
    assert_eq!(contact.properties["firstname"], "John");
    assert_eq!(contact.properties["lastname"], "Smith");
    assert_eq!(contact.properties["company"], "TechStart");
    let notes = fake.notes();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].contact_ids, vec![contact.id.clone()]);
    assert_eq!(
        notes[0].properties["hs_timestamp"],
        "2026-04-01T14:30:00.000Z"
    );
    let body = &notes[0].properties["hs_note_body"];
    assert!(body.contains("CEO of TechStart"), "{body}");
    assert!(body.contains(&event.id), "{body}");
    assert_eq!(
        checkpoints.current(),
        Some(json!({"contact_id": contact.id, "note_id": notes[0].id}))
    );
    // Once with the contact (and the note about to be sent), once when done.
    assert_eq!(checkpoints.saves(), 2);
    let response = attempt.response.unwrap();
    assert!(response.contains("created"), "{response}");
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    assert!(
        fake.authorizations()
            .iter()
            .all(|header| header == &format!("Bearer {TOKEN}"))
    );
}

#[tokio::test]
async fn mapped_answers_are_sent_as_string_properties() {
    let fake = FakeHubspot::start(TOKEN).await;
    let mut config = config(&fake.base_url);
    config
        .properties
        .insert("team_size".to_owned(), "numemployees".to_owned());
    config
        .properties
        .insert("budget".to_owned(), "budget_range".to_owned());
    config
        .properties
        .insert("not_answered".to_owned(), "jobtitle".to_owned());

    let attempt = first_attempt(&connector(&config), &john_brief()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let contact = &fake.contacts()[0];
    // 50 is a number in the brief; HubSpot takes it as the string "50".
    assert_eq!(contact.properties["numemployees"], "50");
    assert_eq!(contact.properties["budget_range"], "$50-100/month");
    assert!(!contact.properties.contains_key("jobtitle"));
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[tokio::test]
async fn a_note_failing_with_500_after_the_contact_is_retried_and_makes_one_contact_and_one_note() {
    let fake = FakeHubspot::start(TOKEN).await;
    let connector = connector(&config(&fake.base_url));
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();
    fake.inject(Route::CreateNote, Fault::Status(500), 1);

    let first = attempt(&connector, &event, &checkpoints, 1).await;

    assert_eq!(first.status_code, Some(500));
    let (_, reason) = retry_of(&first);
    assert!(reason.contains("creating the note"), "{reason}");
    assert!(reason.contains("will not be upserted again"), "{reason}");
    let response = first.response.clone().unwrap();
    assert!(response.contains("correlationId"), "{response}");
    let contact_id = fake.contacts()[0].id.clone();
    assert_eq!(checkpoints.current().unwrap()["contact_id"], contact_id);

    let second = attempt(&connector, &event, &checkpoints, 2).await;

    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert_eq!(fake.contacts().len(), 1);
    assert_eq!(fake.notes().len(), 1);
    assert_eq!(fake.notes()[0].contact_ids, vec![contact_id]);
    assert_eq!(fake.calls(Route::Upsert), 1, "the retry upserted again");
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());

    // A third delivery (the dispatcher lost the outcome) sends nothing.
    let third = attempt(&connector, &event, &checkpoints, 3).await;
    assert_eq!(third.verdict, Verdict::Delivered);
    assert_eq!(fake.notes().len(), 1);
    assert!(third.response.unwrap().contains("already recorded"));
}

#[tokio::test]
async fn a_retry_after_a_timeout_creates_no_second_contact() {
    let fake = FakeHubspot::start(TOKEN).await;
    let mut config = config(&fake.base_url);
    config.timeout = Duration::from_millis(300);
    let connector = connector(&config);
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();
    fake.inject(
        Route::Upsert,
        Fault::SlowAfterActing(Duration::from_secs(2)),
        1,
    );

    let first = attempt(&connector, &event, &checkpoints, 1).await;

    let (_, reason) = retry_of(&first);
    assert!(reason.contains("no answer within 300ms"), "{reason}");
    assert_eq!(first.status_code, None);
    assert_eq!(
        fake.contacts().len(),
        1,
        "the fake created the contact anyway"
    );
    assert_eq!(checkpoints.current(), None);

    let second = attempt(&connector, &event, &checkpoints, 2).await;

    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert_eq!(fake.contacts().len(), 1);
    assert_eq!(fake.notes().len(), 1);
}

#[tokio::test]
async fn a_note_created_by_an_attempt_that_timed_out_is_found_not_created_again() {
    let fake = FakeHubspot::start(TOKEN).await;
    let mut config = config(&fake.base_url);
    config.timeout = Duration::from_millis(300);
    let connector = connector(&config);
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();
    fake.inject(
        Route::CreateNote,
        Fault::SlowAfterActing(Duration::from_secs(2)),
        1,
    );

    let first = attempt(&connector, &event, &checkpoints, 1).await;
    retry_of(&first);
    assert_eq!(fake.notes().len(), 1, "the fake created the note anyway");

    let second = attempt(&connector, &event, &checkpoints, 2).await;

    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert!(second.response.unwrap().contains("found"));
    assert_eq!(fake.notes().len(), 1);
    assert_eq!(fake.calls(Route::CreateNote), 1);
    assert_eq!(
        checkpoints.current().unwrap()["note_id"],
        fake.notes()[0].id
    );
}

#[tokio::test]
async fn a_409_on_contact_create_is_treated_as_the_existing_contact() {
    let fake = FakeHubspot::start(TOKEN).await;
    let existing = fake.seed_contact("john@techstart.io");
    fake.inject(Route::Upsert, Fault::Conflict, 1);
    let checkpoints = MemoryCheckpoints::default();

    let attempt = attempt(
        &connector(&config(&fake.base_url)),
        &john_brief(),
        &checkpoints,
        1,
    )
    .await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert_eq!(fake.contacts().len(), 1);
    assert_eq!(fake.notes()[0].contact_ids, vec![existing.clone()]);
    assert_eq!(checkpoints.current().unwrap()["contact_id"], existing);
}

#[tokio::test]
async fn where_email_cannot_key_an_upsert_the_contact_is_created_and_a_409_names_the_existing_one()
{
    let fake = FakeHubspot::start(TOKEN).await;
    let existing = fake.seed_contact("john@techstart.io");
    fake.inject(Route::Upsert, Fault::UpsertByEmailRefused, 1);

    let attempt = first_attempt(&connector(&config(&fake.base_url)), &john_brief()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert_eq!(fake.calls(Route::CreateContact), 1);
    assert_eq!(fake.contacts().len(), 1);
    assert_eq!(fake.notes()[0].contact_ids, vec![existing]);
}

#[tokio::test]
async fn a_429_ten_secondly_rolling_is_retried_after_the_interval() {
    let fake = FakeHubspot::start(TOKEN).await;
    fake.inject(
        Route::Upsert,
        Fault::TenSecondlyRolling {
            interval_ms: 12_000,
        },
        1,
    );

    let attempt = first_attempt(&connector(&config(&fake.base_url)), &john_brief()).await;

    assert_eq!(attempt.status_code, Some(429));
    let (after, reason) = retry_of(&attempt);
    assert!(after.unwrap() >= Duration::from_millis(12_000), "{after:?}");
    assert!(reason.contains("TEN_SECONDLY_ROLLING"), "{reason}");
    assert!(
        attempt
            .response
            .unwrap()
            .contains("\"policyName\":\"TEN_SECONDLY_ROLLING\"")
    );
    assert!(fake.contacts().is_empty());
}

#[tokio::test]
async fn a_429_daily_names_the_retry_time_in_the_accounts_time_zone() {
    let fake = FakeHubspot::start(TOKEN).await;
    fake.set_time_zone("Asia/Tokyo", 9 * 3_600_000);
    fake.inject(Route::Upsert, Fault::Daily, 1);

    let attempt = first_attempt(&connector(&config(&fake.base_url)), &john_brief()).await;

    let (after, reason) = retry_of(&attempt);
    let after = after.unwrap();
    assert!(
        after > Duration::ZERO && after <= crate::http::MAX_WAIT,
        "{after:?}"
    );
    assert!(reason.contains("daily limit"), "{reason}");
    assert!(reason.contains("Asia/Tokyo (UTC+09:00)"), "{reason}");
    // Midnight in Tokyo is 15:00 UTC.
    assert!(reason.contains(" 00:00 there ("), "{reason}");
    assert!(reason.contains(" 15:00 UTC)"), "{reason}");
    assert_eq!(fake.calls(Route::AccountInfo), 1);
}

#[tokio::test]
async fn the_accounts_time_zone_is_read_once_not_at_every_delivery() {
    let fake = FakeHubspot::start(TOKEN).await;
    let connector = connector(&config(&fake.base_url));
    for _ in 0..3 {
        first_attempt(&connector, &john_brief()).await;
    }
    assert_eq!(fake.calls(Route::AccountInfo), 1);
}

#[tokio::test]
async fn a_brief_without_an_email_becomes_a_note_on_no_contact() {
    let fake = FakeHubspot::start(TOKEN).await;
    let checkpoints = MemoryCheckpoints::default();

    let attempt = attempt(
        &connector(&config(&fake.base_url)),
        &anonymous_brief(),
        &checkpoints,
        1,
    )
    .await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert!(fake.contacts().is_empty());
    assert_eq!(fake.calls(Route::Upsert), 0);
    let notes = fake.notes();
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contact_ids.is_empty());
    assert!(notes[0].properties["hs_note_body"].contains("Ann from Corp"));
    assert!(attempt.response.unwrap().contains("no contact"));
    assert_eq!(checkpoints.current(), Some(json!({"note_id": notes[0].id})));
}

#[tokio::test]
async fn a_brief_without_an_email_is_skipped_under_the_skip_policy() {
    let fake = FakeHubspot::start(TOKEN).await;
    let mut config = config(&fake.base_url);
    config.without_email = WithoutEmail::Skip;

    let attempt = first_attempt(&connector(&config), &anonymous_brief()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered);
    assert!(attempt.response.unwrap().starts_with("skipped"));
    assert!(fake.contacts().is_empty());
    assert!(fake.notes().is_empty());
    assert_eq!(fake.total_calls(), 0);
}

#[tokio::test]
async fn a_401_is_permanent_says_to_check_the_token_and_never_shows_it() {
    let fake = FakeHubspot::start(TOKEN).await;
    let mut config = config(&fake.base_url);
    let wrong = "pat-na1-99999999-wrong-token-0000";
    config.token = Some(Secret::new(wrong));
    let connector = connector(&config);

    let attempt = first_attempt(&connector, &john_brief()).await;

    assert_eq!(attempt.status_code, Some(401));
    let reason = permanent_of(&attempt);
    assert!(reason.contains("token"), "{reason}");
    assert!(reason.contains("crm.objects.contacts.write"), "{reason}");
    let response = attempt.response.unwrap();
    assert!(response.contains("INVALID_AUTHENTICATION"), "{response}");
    for secret in [wrong, TOKEN] {
        assert!(!reason.contains(secret));
        assert!(!response.contains(secret));
    }
    let probe = connector.probe().await.unwrap_err();
    assert!(matches!(probe, ProbeError::Lasting(_)), "{probe:?}");
    let probe = probe.to_string();
    assert!(probe.contains("token"), "{probe}");
    assert!(!probe.contains(wrong));
}

#[test]
fn an_answer_echoing_the_token_is_scrubbed_before_it_is_kept() {
    let connector = connector(&config("http://127.0.0.1:9"));
    let answer = Answer {
        status: StatusCode::BAD_REQUEST,
        headers: HeaderMap::new(),
        text: format!(r#"{{"message":"bad token {TOKEN}"}}"#),
        json: Some(json!({"message": format!("bad token {TOKEN}")})),
    };
    let attempt = connector.failure(&answer, "creating the note");
    assert!(!permanent_of(&attempt).contains(TOKEN));
    assert!(!attempt.response.unwrap().contains(TOKEN));
}

#[tokio::test]
async fn a_500_is_retried_and_a_400_is_permanent_each_keeping_hubspots_error_body() {
    let fake = FakeHubspot::start(TOKEN).await;
    let connector = connector(&config(&fake.base_url));
    fake.inject(Route::Upsert, Fault::Status(503), 1);
    let first = first_attempt(&connector, &john_brief()).await;
    assert_eq!(first.status_code, Some(503));
    let (after, _) = retry_of(&first);
    assert_eq!(after, None);

    fake.inject(Route::Upsert, Fault::Status(400), 1);
    let second = first_attempt(&connector, &john_brief()).await;
    assert_eq!(second.status_code, Some(400));
    let reason = permanent_of(&second);
    assert!(reason.contains("replay"), "{reason}");
    assert!(
        second
            .response
            .unwrap()
            .contains("\"category\":\"VALIDATION_ERROR\"")
    );
}

#[tokio::test]
async fn a_meeting_becomes_a_note_on_no_contact() {
    let fake = FakeHubspot::start(TOKEN).await;

    let attempt = first_attempt(&connector(&config(&fake.base_url)), &meeting()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let notes = fake.notes();
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contact_ids.is_empty());
    let body = &notes[0].properties["hs_note_body"];
    assert!(body.contains("Weekly standup (45 min)"), "{body}");
    assert!(body.contains("&lt;everyone&gt;"), "{body}");
    assert!(fake.contacts().is_empty());
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[tokio::test]
async fn a_conversation_update_is_acknowledged_and_ignored() {
    let fake = FakeHubspot::start(TOKEN).await;

    let attempt = first_attempt(&connector(&config(&fake.base_url)), &conversation()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered);
    assert!(
        attempt
            .response
            .unwrap()
            .starts_with("ignored: conversation.updated")
    );
    assert_eq!(fake.total_calls(), 0);
}

#[tokio::test]
async fn probing_lists_one_contact_with_the_token() {
    let fake = FakeHubspot::start(TOKEN).await;
    let description = connector(&config(&fake.base_url)).probe().await.unwrap();
    assert!(description.contains("accepted the token"), "{description}");
    assert_eq!(fake.calls(Route::ListContacts), 1);
    assert!(fake.notes().is_empty());
}

#[tokio::test]
async fn probing_where_nothing_listens_fails_in_plain_words() {
    let address = unused_address();
    let error = connector(&config(&format!("http://{address}")))
        .probe()
        .await
        .unwrap_err();
    assert!(matches!(error, ProbeError::Passing(_)), "{error:?}");
    assert!(error.to_string().contains("could not connect"), "{error}");
}

#[test]
fn a_hubspot_table_parses_with_its_defaults() {
    let text = r#"
        type = "hubspot"
        token_file = "/etc/clairo-sync/hubspot-token"
    "#;
    let Ok(ConnectorConfig::Hubspot(config)) = table(text) else {
        panic!("not hubspot");
    };
    assert_eq!(config.base_url, "https://api.hubapi.com");
    assert_eq!(config.timeout, Duration::from_secs(30));
    assert_eq!(config.without_email, WithoutEmail::Note);
    assert!(config.properties.is_empty());

    let text = r#"
        type = "hubspot"
        token = "pat-na1-x"
        timeout = "5s"
        email_answer_key = "work_email"
        without_email = "skip"
        properties = { budget = "budget_range" }
    "#;
    let Ok(ConnectorConfig::Hubspot(config)) = table(text) else {
        panic!("not hubspot");
    };
    assert_eq!(config.without_email, WithoutEmail::Skip);
    assert_eq!(config.properties["budget"], "budget_range");
    assert_eq!(config.validate(), Vec::new());
}

#[test]
fn an_unknown_key_in_a_hubspot_table_is_rejected() {
    let error = table("type = \"hubspot\"\ntoken_flie = \"/x\"\n").unwrap_err();
    assert!(error.contains("token_flie"), "{error}");
}

#[test]
fn validation_names_each_key_and_never_echoes_the_token() {
    let mut config = config("ftp://api.hubapi.com");
    config.token = Some(Secret::new("pat secret\nvalue"));
    config.timeout = Duration::ZERO;
    config.email_answer_key = Some(" ".to_owned());
    config
        .properties
        .insert("size".to_owned(), "Company Size".to_owned());
    config
        .properties
        .insert("mail".to_owned(), "email".to_owned());
    let problems = config.validate();
    assert_eq!(
        keys(&problems),
        [
            "base_url",
            "token",
            "timeout",
            "email_answer_key",
            "properties.mail",
            "properties.size"
        ],
        "{problems:?}"
    );
    for problem in &problems {
        assert!(problem.message.contains("; "), "{problem:?}");
        assert!(!problem.message.contains("secret"), "{problem:?}");
    }
    assert!(HubspotConnector::new("crm", &config).is_err());

    config.token = None;
    assert!(
        config
            .validate()
            .iter()
            .any(|problem| problem.key == "token" && problem.message.contains("token_file"))
    );
    let mut slots = config.secret_slots();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].key, "token");
    assert!(slots[0].required);
    assert!(slots.pop().unwrap().value.is_none());
}

// ---------------------------------------------------------------------------------------
// Fixed values, owners, companies and deals

const OWNER: &str = "75030002";

/// A complete mapping, as the README shows it.
fn sales_config(base_url: &str) -> HubspotConfig {
    let mut config = config(base_url);
    config.timeout = Duration::from_millis(400);
    config.properties = BTreeMap::from([("budget".to_owned(), "budget_range".to_owned())]);
    config.set = BTreeMap::from([
        ("lifecyclestage".to_owned(), "lead".to_owned()),
        ("hs_lead_status".to_owned(), "NEW".to_owned()),
    ]);
    config.owner_id = Some(OWNER.to_owned());
    config.company = true;
    config.deal = Some(DealConfig {
        pipeline: "default".to_owned(),
        stage: "appointmentscheduled".to_owned(),
        name: Some(
            "{{ data.answers.company }} — {{ data.answers.name }} ({{ data.id }})".to_owned(),
        ),
    });
    config
}

#[tokio::test]
async fn twenty_briefs_from_twelve_people_at_eight_companies_make_12_contacts_5_companies_20_notes_and_20_deals_despite_failures_after_creation()
 {
    let fake = FakeHubspot::start(TOKEN).await;
    // HubSpot's search lags behind writes: only the connector's own bookkeeping and the
    // contacts' associations can keep it from making a company twice.
    fake.lag_search();
    let slow = Fault::SlowAfterActing(Duration::from_secs(1));
    fake.inject(Route::Upsert, slow.clone(), 2);
    fake.inject(Route::CreateCompany, Fault::StatusAfterActing(500), 1);
    fake.inject(Route::CreateCompany, slow.clone(), 1);
    fake.inject(Route::AssociateDefault, Fault::Status(502), 1);
    fake.inject(Route::CreateNote, Fault::StatusAfterActing(500), 2);
    fake.inject(Route::CreateNote, slow.clone(), 1);
    fake.inject(Route::CreateDeal, Fault::StatusAfterActing(503), 2);
    fake.inject(Route::CreateDeal, slow, 1);
    let connector: Arc<dyn Connector> = Arc::new(connector(&sales_config(&fake.base_url)));
    let briefs = sales_briefs();

    let retries = deliver_all(connector, briefs.clone()).await;

    assert!(
        retries >= 10,
        "every injected fault cost a retry: {retries}"
    );
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    let contacts = fake.contacts();
    assert_eq!(contacts.len(), 12, "{contacts:?}");
    let companies = fake.companies();
    assert_eq!(companies.len(), 5, "{companies:?}");
    let contact_of = |email: &str| {
        contacts
            .iter()
            .find(|contact| contact.properties["email"].eq_ignore_ascii_case(email))
            .unwrap_or_else(|| panic!("no contact {email}"))
            .id
            .clone()
    };
    for domain in COMPANY_DOMAINS {
        let company = companies
            .iter()
            .find(|company| company.properties["domain"] == domain)
            .unwrap_or_else(|| panic!("no company {domain}"));
        assert_eq!(company.properties["hubspot_owner_id"], OWNER);
        let mut expected: Vec<String> = PEOPLE
            .iter()
            .filter(|(_, email, _)| email.to_lowercase().ends_with(&format!("@{domain}")))
            .map(|(_, email, _)| contact_of(email))
            .collect();
        let mut associated = company.contact_ids.clone();
        expected.sort();
        associated.sort();
        assert_eq!(associated, expected, "{domain}");
    }
    let notes = fake.notes();
    assert_eq!(notes.len(), 20);
    let deals = fake.deals();
    assert_eq!(deals.len(), 20, "{deals:?}");
    for event in &briefs {
        let email = event.data["answers"]["email"].as_str().unwrap();
        let contact = contact_of(email);
        let mine: Vec<_> = notes
            .iter()
            .filter(|note| note.properties["hs_note_body"].contains(&event.id))
            .collect();
        assert_eq!(mine.len(), 1, "{}", event.id);
        assert_eq!(mine[0].contact_ids, vec![contact.clone()]);
        let brief = event.data["id"].as_str().unwrap();
        let mine: Vec<_> = deals
            .iter()
            .filter(|deal| deal.properties["description"].contains(&event.id))
            .collect();
        assert_eq!(mine.len(), 1, "{}", event.id);
        let deal = mine[0];
        assert_eq!(deal.contact_ids, vec![contact]);
        assert!(deal.properties["dealname"].ends_with(&format!("({brief})")));
        assert_eq!(deal.properties["dealstage"], "appointmentscheduled");
        assert_eq!(deal.properties["hubspot_owner_id"], OWNER);
        let domain = crm::company_domain(email);
        let company: Vec<String> = domain
            .iter()
            .map(|domain| {
                companies
                    .iter()
                    .find(|company| &company.properties["domain"] == domain)
                    .unwrap()
                    .id
                    .clone()
            })
            .collect();
        assert_eq!(deal.company_ids, company, "{email}");
    }
}

#[tokio::test]
async fn fixed_values_and_the_owner_are_set_on_the_contact_and_the_deal_is_named_by_its_template() {
    let fake = FakeHubspot::start(TOKEN).await;
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();

    let attempt = attempt(
        &connector(&sales_config(&fake.base_url)),
        &event,
        &checkpoints,
        1,
    )
    .await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let contact = &fake.contacts()[0];
    assert_eq!(contact.properties["lifecyclestage"], "lead");
    assert_eq!(contact.properties["hs_lead_status"], "NEW");
    assert_eq!(contact.properties["hubspot_owner_id"], OWNER);
    assert_eq!(contact.properties["budget_range"], "$50-100/month");
    let company = &fake.companies()[0];
    assert_eq!(company.properties["domain"], "techstart.io");
    assert_eq!(company.properties["name"], "TechStart");
    let deal = &fake.deals()[0];
    assert_eq!(
        deal.properties["dealname"],
        "TechStart — John Smith (cm3brief)"
    );
    assert_eq!(deal.company_ids, vec![company.id.clone()]);
    let saved = checkpoints.current().unwrap();
    assert_eq!(saved["deal_id"], deal.id);
    assert_eq!(saved["company_id"], company.id);
    let response = attempt.response.unwrap();
    assert!(response.contains("company"), "{response}");
    assert!(response.contains("deal"), "{response}");
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[tokio::test]
async fn a_company_already_in_hubspot_is_found_by_domain_and_associated_not_created() {
    let fake = FakeHubspot::start(TOKEN).await;
    let existing = fake.seed_company("techstart.io", "TechStart Inc.");
    let mut config = config(&fake.base_url);
    config.company = true;

    let attempt = first_attempt(&connector(&config), &john_brief()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let companies = fake.companies();
    assert_eq!(companies.len(), 1);
    assert_eq!(companies[0].id, existing);
    assert_eq!(
        companies[0].contact_ids,
        vec![fake.contacts()[0].id.clone()]
    );
    assert_eq!(fake.calls(Route::CreateCompany), 0);
}

#[tokio::test]
async fn a_free_mail_address_makes_no_company_and_its_deal_hangs_on_the_contact_alone() {
    let fake = FakeHubspot::start(TOKEN).await;
    let event = brief(
        json!({"name": "Jon Bell", "email": "jon.bell@gmail.com"}),
        "Jon wants a demo.",
    );

    let attempt = first_attempt(&connector(&sales_config(&fake.base_url)), &event).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert!(fake.companies().is_empty());
    assert_eq!(fake.calls(Route::SearchCompanies), 0);
    let deals = fake.deals();
    assert_eq!(deals.len(), 1);
    assert!(deals[0].company_ids.is_empty());
    assert!(attempt.response.unwrap().contains("free-mail"));
}

#[tokio::test]
async fn a_deal_created_by_an_attempt_that_got_a_500_is_found_not_created_again() {
    let fake = FakeHubspot::start(TOKEN).await;
    let connector = connector(&sales_config(&fake.base_url));
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();
    fake.inject(Route::CreateDeal, Fault::StatusAfterActing(500), 1);

    let first = attempt(&connector, &event, &checkpoints, 1).await;
    let (_, reason) = retry_of(&first);
    assert!(reason.contains("creating the deal"), "{reason}");
    assert!(reason.contains("will not be made again"), "{reason}");
    assert_eq!(fake.deals().len(), 1, "the fake created the deal anyway");

    let second = attempt(&connector, &event, &checkpoints, 2).await;

    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert!(second.response.unwrap().contains("found"));
    assert_eq!(fake.deals().len(), 1);
    assert_eq!(fake.calls(Route::CreateDeal), 1);
    assert_eq!(fake.notes().len(), 1);
    assert_eq!(fake.companies().len(), 1);
    assert_eq!(fake.calls(Route::Upsert), 1);
}

#[tokio::test]
async fn a_company_created_by_an_attempt_that_timed_out_is_found_through_the_contact_not_created_again()
 {
    let fake = FakeHubspot::start(TOKEN).await;
    fake.lag_search();
    let mut config = config(&fake.base_url);
    config.company = true;
    config.timeout = Duration::from_millis(300);
    let connector = connector(&config);
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();
    fake.inject(
        Route::CreateCompany,
        Fault::SlowAfterActing(Duration::from_secs(1)),
        1,
    );

    let first = attempt(&connector, &event, &checkpoints, 1).await;
    retry_of(&first);
    assert_eq!(fake.companies().len(), 1);

    let second = attempt(&connector, &event, &checkpoints, 2).await;

    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert_eq!(fake.companies().len(), 1);
    assert_eq!(fake.calls(Route::CreateCompany), 1);
}

#[tokio::test]
async fn a_note_on_no_contact_created_by_an_attempt_that_timed_out_is_found_not_created_again() {
    let fake = FakeHubspot::start(TOKEN).await;
    let mut config = config(&fake.base_url);
    config.timeout = Duration::from_millis(300);
    let connector = connector(&config);
    let checkpoints = MemoryCheckpoints::default();
    let event = meeting();
    fake.inject(
        Route::CreateNote,
        Fault::SlowAfterActing(Duration::from_secs(1)),
        1,
    );

    let first = attempt(&connector, &event, &checkpoints, 1).await;
    retry_of(&first);
    assert_eq!(fake.notes().len(), 1);

    let second = attempt(&connector, &event, &checkpoints, 2).await;

    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert!(second.response.unwrap().contains("found"));
    assert_eq!(fake.notes().len(), 1);
    assert_eq!(fake.calls(Route::SearchNotes), 1);
}

#[tokio::test]
async fn check_online_names_a_misspelt_property_value_owner_pipeline_and_stage_with_suggestions() {
    let fake = FakeHubspot::start(TOKEN).await;
    let mut config = sales_config(&fake.base_url);
    config.set = BTreeMap::from([
        ("lifecyclestag".to_owned(), "lead".to_owned()),
        ("hs_lead_status".to_owned(), "NEWW".to_owned()),
    ]);
    config.properties = BTreeMap::from([("budget".to_owned(), "budget_rnage".to_owned())]);
    config.owner_id = Some("75030003".to_owned());
    config.deal = Some(DealConfig {
        pipeline: "default".to_owned(),
        stage: "appointmentschedule".to_owned(),
        name: None,
    });

    let problems = connector(&config).audit().await.unwrap();

    let said: Vec<String> = problems
        .iter()
        .map(|problem| format!("{}: {}", problem.key, problem.message))
        .collect();
    assert!(
        said.contains(
            &"set.lifecyclestag: HubSpot has no contact property \"lifecyclestag\"; did you mean lifecyclestage?"
                .to_owned()
        ),
        "{said:#?}"
    );
    assert!(
        said.iter()
            .any(|line| line.starts_with("set.hs_lead_status:")
                && line.contains("no option \"NEWW\"; did you mean NEW?")),
        "{said:#?}"
    );
    assert!(
        said.iter()
            .any(|line| line.starts_with("properties.budget:")
                && line.ends_with("did you mean budget_range?")),
        "{said:#?}"
    );
    assert!(
        said.iter()
            .any(|line| line.starts_with("owner_id:") && line.contains("did you mean 75030002")),
        "{said:#?}"
    );
    assert!(
        said.iter().any(|line| line.starts_with("deal.stage:")
            && line.ends_with("did you mean appointmentscheduled?")),
        "{said:#?}"
    );
    assert_eq!(problems.len(), 5, "{said:#?}");

    config.deal = Some(DealConfig {
        pipeline: "defualt".to_owned(),
        stage: "appointmentscheduled".to_owned(),
        name: None,
    });
    let problems = connector(&config).audit().await.unwrap();
    assert!(
        problems.iter().any(|problem| problem.key == "deal.pipeline"
            && problem.message.ends_with("did you mean default?")),
        "{problems:#?}"
    );
}

#[tokio::test]
async fn check_online_finds_nothing_wrong_with_a_mapping_the_account_has() {
    let fake = FakeHubspot::start(TOKEN).await;
    let problems = connector(&sales_config(&fake.base_url))
        .audit()
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_complete_hubspot_mapping_parses_and_a_wrong_one_is_named_key_by_key() {
    let text = r#"
        type = "hubspot"
        token = "pat-na1-x"
        properties = { budget = "budget_range" }
        set = { lifecyclestage = "lead", hs_lead_status = "NEW" }
        owner_id = "75030002"
        company = true
        deal = { pipeline = "default", stage = "appointmentscheduled", name = "{{ data.answers.company }} — Clairo" }
    "#;
    let Ok(ConnectorConfig::Hubspot(config)) = table(text) else {
        panic!("not hubspot");
    };
    assert_eq!(config.validate(), Vec::new());
    assert_eq!(config.owner_id.as_deref(), Some("75030002"));
    assert!(config.company);

    let numeric = table("type = \"hubspot\"\ntoken = \"x\"\nowner_id = 75030002\n").unwrap();
    let ConnectorConfig::Hubspot(numeric) = numeric else {
        panic!("not hubspot");
    };
    assert_eq!(numeric.owner_id.as_deref(), Some("75030002"));

    let text = r#"
        type = "hubspot"
        token = "pat-na1-x"
        properties = { budget = "budget_range" }
        set = { budget_range = "x", hubspot_owner_id = "1", Lifecycle = "lead", hs_lead_status = " " }
        owner_id = "Pat"
        deal = { stage = "", name = "{{ broken" }
    "#;
    let Ok(ConnectorConfig::Hubspot(config)) = table(text) else {
        panic!("not hubspot");
    };
    assert_eq!(
        keys(&config.validate()),
        [
            "set.Lifecycle",
            "set.budget_range",
            "set.hs_lead_status",
            "set.hubspot_owner_id",
            "owner_id",
            "deal.stage",
            "deal.name"
        ]
    );
    assert!(table("type = \"hubspot\"\ndeal = { stgae = \"x\" }\n").is_err());
}
