use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::fake::{FakePipedrive, Fault, Route};
use super::*;
use crate::testkit::*;
use crate::{Connector, ConnectorConfig, Secret, Verdict};

const TOKEN: &str = "4f1c2b3a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a";

fn config(base_url: &str) -> PipedriveConfig {
    PipedriveConfig {
        api_token: Some(Secret::new(TOKEN)),
        api_token_file: None,
        base_url: base_url.to_owned(),
        timeout: Duration::from_secs(5),
        email_answer_key: None,
        without_email: WithoutEmail::Note,
        fields: BTreeMap::new(),
        owner_id: None,
        organization: false,
        lead: None,
        create_lead: false,
    }
}

fn connector(config: &PipedriveConfig) -> PipedriveConnector {
    PipedriveConnector::new("deals", config).unwrap()
}

#[tokio::test]
async fn a_brief_creates_its_person_and_attaches_a_note() {
    let fake = FakePipedrive::start(TOKEN).await;
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();

    let attempt = attempt(&connector(&config(&fake.base_url)), &event, &checkpoints, 1).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert_eq!(attempt.status_code, Some(201));
    let persons = fake.persons();
    assert_eq!(persons.len(), 1);
    assert_eq!(persons[0].name, "John Smith");
    assert_eq!(persons[0].emails, vec!["john@techstart.io".to_owned()]);
    let notes = fake.notes();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].person_id, Some(persons[0].id));
    assert!(notes[0].content.contains("CEO of TechStart"));
    assert!(notes[0].content.contains(&event.id));
    assert_eq!(
        checkpoints.current(),
        Some(json!({"person_id": persons[0].id, "note_id": notes[0].id}))
    );
    // Before creating the person, with the person, and when done.
    assert_eq!(checkpoints.saves(), 3);
    assert!(fake.leads().is_empty());
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[tokio::test]
async fn a_brief_from_a_known_email_reuses_the_person() {
    let fake = FakePipedrive::start(TOKEN).await;
    let existing = fake.seed_person("John S.", "JOHN@techstart.io");

    let attempt = first_attempt(&connector(&config(&fake.base_url)), &john_brief()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert_eq!(fake.persons().len(), 1);
    assert_eq!(fake.calls(Route::CreatePerson), 0);
    assert_eq!(fake.notes()[0].person_id, Some(existing));
}

#[tokio::test]
async fn an_email_too_long_for_an_exact_search_is_still_matched_exactly() {
    let fake = FakePipedrive::start(TOKEN).await;
    let email = "john.smith@verylongcompanyname-example.com";
    fake.seed_person("Other", &format!("x.{email}"));
    let existing = fake.seed_person("John", email);
    let event = brief(
        json!({"email": email, "name": "John Smith"}),
        "Wants a demo.",
    );

    let attempt = first_attempt(&connector(&config(&fake.base_url)), &event).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert_eq!(fake.persons().len(), 2);
    assert_eq!(fake.notes()[0].person_id, Some(existing));
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[tokio::test]
async fn with_create_lead_a_lead_is_opened_on_the_person() {
    let fake = FakePipedrive::start(TOKEN).await;
    let mut config = config(&fake.base_url);
    config.create_lead = true;
    let checkpoints = MemoryCheckpoints::default();

    let attempt = attempt(&connector(&config), &john_brief(), &checkpoints, 1).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let leads = fake.leads();
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0].title, "TechStart — Clairo brief");
    assert_eq!(leads[0].person_id, fake.persons()[0].id);
    assert_eq!(checkpoints.current().unwrap()["lead_id"], leads[0].id);
    assert!(attempt.response.unwrap().contains(&leads[0].id));
}

#[tokio::test]
async fn a_note_failing_with_500_after_the_person_is_retried_and_makes_one_person_and_one_note() {
    let fake = FakePipedrive::start(TOKEN).await;
    let connector = connector(&config(&fake.base_url));
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();
    fake.inject(Route::CreateNote, Fault::Status(500), 1);

    let first = attempt(&connector, &event, &checkpoints, 1).await;

    assert_eq!(first.status_code, Some(500));
    let (_, reason) = retry_of(&first);
    assert!(reason.contains("creating the note"), "{reason}");
    assert!(reason.contains("will not be created again"), "{reason}");
    assert!(first.response.unwrap().contains("\"success\":false"));
    let person_id = fake.persons()[0].id;
    assert_eq!(checkpoints.current().unwrap()["person_id"], person_id);

    let second = attempt(&connector, &event, &checkpoints, 2).await;

    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert_eq!(fake.persons().len(), 1);
    assert_eq!(fake.notes().len(), 1);
    assert_eq!(fake.notes()[0].person_id, Some(person_id));
    assert_eq!(
        fake.calls(Route::SearchPersons),
        1,
        "the retry searched again"
    );
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());

    let third = attempt(&connector, &event, &checkpoints, 3).await;
    assert_eq!(third.verdict, Verdict::Delivered);
    assert!(third.response.unwrap().contains("already recorded"));
    assert_eq!(fake.notes().len(), 1);
}

#[tokio::test]
async fn a_retry_after_a_timeout_creates_no_second_person() {
    let fake = FakePipedrive::start(TOKEN).await;
    let mut config = config(&fake.base_url);
    config.timeout = Duration::from_millis(300);
    let connector = connector(&config);
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();
    fake.inject(
        Route::CreatePerson,
        Fault::SlowAfterActing(Duration::from_secs(2)),
        1,
    );

    let first = attempt(&connector, &event, &checkpoints, 1).await;

    let (_, reason) = retry_of(&first);
    assert!(reason.contains("no answer within 300ms"), "{reason}");
    assert_eq!(
        fake.persons().len(),
        1,
        "the fake created the person anyway"
    );

    let second = attempt(&connector, &event, &checkpoints, 2).await;

    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert_eq!(fake.persons().len(), 1);
    assert_eq!(fake.calls(Route::CreatePerson), 1);
    assert_eq!(fake.notes().len(), 1);
}

#[tokio::test]
async fn a_person_created_unseen_is_found_even_before_the_search_index_has_it() {
    let fake = FakePipedrive::start(TOKEN).await;
    let mut config = config(&fake.base_url);
    config.timeout = Duration::from_millis(300);
    let connector = connector(&config);
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();
    fake.lag_search();
    fake.inject(
        Route::CreatePerson,
        Fault::SlowAfterActing(Duration::from_secs(2)),
        1,
    );

    retry_of(&attempt(&connector, &event, &checkpoints, 1).await);
    let second = attempt(&connector, &event, &checkpoints, 2).await;

    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert_eq!(fake.persons().len(), 1);
    assert_eq!(fake.calls(Route::ListPersons), 1);
    assert_eq!(fake.notes()[0].person_id, Some(fake.persons()[0].id));
}

#[tokio::test]
async fn a_note_created_by_an_attempt_that_timed_out_is_found_not_created_again() {
    let fake = FakePipedrive::start(TOKEN).await;
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

    retry_of(&attempt(&connector, &event, &checkpoints, 1).await);
    let second = attempt(&connector, &event, &checkpoints, 2).await;

    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert_eq!(fake.notes().len(), 1);
    assert_eq!(fake.calls(Route::CreateNote), 1);
    assert_eq!(
        checkpoints.current().unwrap()["note_id"],
        fake.notes()[0].id
    );
}

#[tokio::test]
async fn a_429_is_retried_after_the_reset_pipedrive_announces() {
    let fake = FakePipedrive::start(TOKEN).await;
    fake.inject(
        Route::SearchPersons,
        Fault::RateLimited { reset_secs: 7 },
        1,
    );

    let attempt = first_attempt(&connector(&config(&fake.base_url)), &john_brief()).await;

    assert_eq!(attempt.status_code, Some(429));
    let (after, reason) = retry_of(&attempt);
    assert!(after.unwrap() >= Duration::from_secs(7), "{after:?}");
    assert!(reason.contains("rate-limiting"), "{reason}");
    assert!(attempt.response.unwrap().contains("\"errorCode\":429"));
    assert!(fake.persons().is_empty());
}

#[tokio::test]
async fn a_used_up_window_pauses_between_calls_and_the_retry_resumes() {
    let fake = FakePipedrive::start(TOKEN).await;
    let connector = connector(&config(&fake.base_url));
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();
    fake.inject(
        Route::CreatePerson,
        Fault::LastInWindow { reset_secs: 3 },
        1,
    );

    let first = attempt(&connector, &event, &checkpoints, 1).await;

    let (after, reason) = retry_of(&first);
    assert!(after.unwrap() >= Duration::from_secs(3), "{after:?}");
    assert!(reason.contains("x-ratelimit-remaining: 0"), "{reason}");
    assert_eq!(fake.calls(Route::CreateNote), 0);
    assert!(checkpoints.current().unwrap()["person_id"].is_u64());

    let second = attempt(&connector, &event, &checkpoints, 2).await;

    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert_eq!(fake.persons().len(), 1);
    assert_eq!(fake.notes().len(), 1);
}

#[tokio::test]
async fn a_brief_without_an_email_under_the_note_policy_is_kept_dead_and_creates_nothing() {
    let fake = FakePipedrive::start(TOKEN).await;

    let attempt = first_attempt(&connector(&config(&fake.base_url)), &anonymous_brief()).await;

    let reason = permanent_of(&attempt);
    assert!(reason.contains("no contact email"), "{reason}");
    assert!(reason.contains("without_email"), "{reason}");
    assert!(fake.persons().is_empty());
    assert!(fake.notes().is_empty());
    assert_eq!(fake.total_calls(), 0);
}

#[tokio::test]
async fn a_brief_without_an_email_is_skipped_under_the_skip_policy() {
    let fake = FakePipedrive::start(TOKEN).await;
    let mut config = config(&fake.base_url);
    config.without_email = WithoutEmail::Skip;

    let attempt = first_attempt(&connector(&config), &anonymous_brief()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered);
    assert!(attempt.response.unwrap().starts_with("skipped"));
    assert!(fake.persons().is_empty());
    assert_eq!(fake.total_calls(), 0);
}

#[tokio::test]
async fn a_401_is_permanent_says_to_check_the_token_and_never_shows_it() {
    let fake = FakePipedrive::start(TOKEN).await;
    let mut config = config(&fake.base_url);
    let wrong = "0000deadbeef0000deadbeef0000deadbeef0000";
    config.api_token = Some(Secret::new(wrong));
    let connector = connector(&config);

    let attempt = first_attempt(&connector, &john_brief()).await;

    assert_eq!(attempt.status_code, Some(401));
    let reason = permanent_of(&attempt);
    assert!(reason.contains("API token"), "{reason}");
    let response = attempt.response.unwrap();
    assert!(response.contains("unauthorized access"), "{response}");
    for secret in [wrong, TOKEN] {
        assert!(!reason.contains(secret));
        assert!(!response.contains(secret));
    }
    let probe = connector.probe().await.unwrap_err();
    assert!(matches!(probe, ProbeError::Lasting(_)), "{probe:?}");
    let probe = probe.to_string();
    assert!(probe.contains("API token"), "{probe}");
    assert!(!probe.contains(wrong));
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[tokio::test]
async fn a_meeting_is_skipped_because_a_pipedrive_note_needs_a_person() {
    let fake = FakePipedrive::start(TOKEN).await;

    let attempt = first_attempt(&connector(&config(&fake.base_url)), &meeting()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered);
    assert!(
        attempt
            .response
            .unwrap()
            .starts_with("skipped: meeting.processed")
    );
    assert_eq!(fake.total_calls(), 0);
}

#[tokio::test]
async fn a_conversation_update_is_acknowledged_and_ignored() {
    let fake = FakePipedrive::start(TOKEN).await;

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
async fn a_5xx_is_retried_and_a_400_is_permanent() {
    let fake = FakePipedrive::start(TOKEN).await;
    let connector = connector(&config(&fake.base_url));
    fake.inject(Route::SearchPersons, Fault::Status(502), 1);
    let first = first_attempt(&connector, &john_brief()).await;
    assert_eq!(first.status_code, Some(502));
    assert_eq!(retry_of(&first).0, None);

    fake.inject(Route::CreatePerson, Fault::Status(400), 1);
    let second = first_attempt(&connector, &john_brief()).await;
    assert_eq!(second.status_code, Some(400));
    assert!(permanent_of(&second).contains("replay"));
    assert!(fake.persons().is_empty());
}

#[tokio::test]
async fn probing_reads_the_tokens_user() {
    let fake = FakePipedrive::start(TOKEN).await;
    let description = connector(&config(&fake.base_url)).probe().await.unwrap();
    assert!(
        description.contains("Pat Seller of Example Co"),
        "{description}"
    );
    assert_eq!(fake.calls(Route::Me), 1);
}

#[test]
fn a_pipedrive_table_parses_with_its_defaults() {
    let text = r#"
        type = "pipedrive"
        api_token_file = "/etc/clairo-sync/pipedrive-token"
    "#;
    let Ok(ConnectorConfig::Pipedrive(config)) = table(text) else {
        panic!("not pipedrive");
    };
    assert_eq!(config.base_url, "https://api.pipedrive.com");
    assert_eq!(config.timeout, Duration::from_secs(30));
    assert_eq!(config.without_email, WithoutEmail::Note);
    assert!(!config.create_lead);

    let text = r#"
        type = "pipedrive"
        api_token = "abc123"
        timeout = "10s"
        email_answer_key = "work_email"
        without_email = "skip"
        create_lead = true
    "#;
    let Ok(ConnectorConfig::Pipedrive(config)) = table(text) else {
        panic!("not pipedrive");
    };
    assert!(config.create_lead);
    assert_eq!(config.without_email, WithoutEmail::Skip);
    assert_eq!(config.validate(), Vec::new());
}

#[test]
fn an_unknown_key_in_a_pipedrive_table_is_rejected() {
    let error = table("type = \"pipedrive\"\ncreate_leads = true\n").unwrap_err();
    assert!(error.contains("create_leads"), "{error}");
}

#[test]
fn validation_names_each_key_and_never_echoes_the_token() {
    let mut config = config("pipedrive.example.com");
    config.api_token = Some(Secret::new("abc secret\n"));
    config.timeout = Duration::ZERO;
    config.email_answer_key = Some(String::new());
    let problems = config.validate();
    assert_eq!(
        keys(&problems),
        ["base_url", "api_token", "timeout", "email_answer_key"],
        "{problems:?}"
    );
    for problem in &problems {
        assert!(!problem.message.contains("secret"), "{problem:?}");
    }
    config.api_token = None;
    assert!(
        config
            .validate()
            .iter()
            .any(|problem| problem.key == "api_token" && problem.message.contains("api_token_file"))
    );
    assert!(PipedriveConnector::new("deals", &config).is_err());
    let slots = config.secret_slots();
    assert_eq!(slots[0].key, "api_token");
    assert!(slots[0].required);
}

/// The loader reads the credential `<connector name>-api-token` (underscores in the key
/// become dashes, as in every `LoadCredential=` name): the message must say that name.
#[test]
fn a_missing_token_names_the_credential_the_loader_reads() {
    let config = table("type = \"pipedrive\"\n").unwrap();
    let problems = config.validate();
    let token = problems
        .iter()
        .find(|problem| problem.key == "api_token")
        .expect("the missing token is a problem");
    assert!(
        token.message.contains("`<connector name>-api-token`"),
        "{}",
        token.message
    );
    assert!(!token.message.contains("-api_token"), "{}", token.message);
}

// ---------------------------------------------------------------------------------------
// Custom fields, owners, organisations and leads

const OWNER: u64 = 1002;
const HOT: &str = "f08b42a0-4e75-11ea-9643-03698ef1cfd6";
const BUDGET_KEY: &str = "9dc80c50d78a15643bfc4ca79d76156a73a1ca0e";
const TEAM_SIZE_KEY: &str = "e1b7a9d2c3f40b5a6c7d8e9f0a1b2c3d4e5f6a7b";

/// A complete mapping, as the README shows it.
fn sales_config(base_url: &str) -> PipedriveConfig {
    let mut config = config(base_url);
    config.timeout = Duration::from_millis(400);
    config.fields = BTreeMap::from([
        ("budget".to_owned(), "Budget".to_owned()),
        ("team_size".to_owned(), TEAM_SIZE_KEY.to_owned()),
    ]);
    config.owner_id = Some(OWNER);
    config.organization = true;
    config.lead = Some(LeadConfig {
        title: Some(
            "{{ data.answers.company }} — {{ data.answers.name }} ({{ data.id }})".to_owned(),
        ),
        label_ids: vec![HOT.to_owned()],
        channel: Some(7),
    });
    config
}

#[tokio::test]
async fn twenty_briefs_from_twelve_people_at_eight_companies_make_12_persons_5_organizations_20_notes_and_20_leads_despite_failures_after_creation()
 {
    let fake = FakePipedrive::start(TOKEN).await;
    // Pipedrive's search lags behind writes: only the connector's own bookkeeping and
    // reading the newest records can keep it from making a person or organisation twice.
    fake.lag_search();
    let slow = Fault::SlowAfterActing(Duration::from_secs(1));
    fake.inject(Route::CreateOrganization, Fault::StatusAfterActing(500), 1);
    fake.inject(Route::CreateOrganization, slow.clone(), 1);
    fake.inject(Route::CreatePerson, Fault::StatusAfterActing(502), 1);
    fake.inject(Route::CreatePerson, slow.clone(), 1);
    fake.inject(Route::CreateNote, Fault::StatusAfterActing(500), 2);
    fake.inject(Route::CreateNote, slow.clone(), 1);
    fake.inject(Route::CreateLead, Fault::StatusAfterActing(503), 2);
    fake.inject(Route::CreateLead, slow, 1);
    let connector: Arc<dyn Connector> = Arc::new(connector(&sales_config(&fake.base_url)));
    let briefs = sales_briefs();

    let retries = deliver_all(connector, briefs.clone()).await;

    assert!(
        retries >= 10,
        "every injected fault cost a retry: {retries}"
    );
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    let persons = fake.persons();
    assert_eq!(persons.len(), 12, "{persons:?}");
    let organizations = fake.organizations();
    assert_eq!(organizations.len(), 5, "{organizations:?}");
    let org_of = |domain: &str| {
        organizations
            .iter()
            .find(|org| org.name == domain)
            .map(|org| org.id)
    };
    let person_of = |email: &str| {
        persons
            .iter()
            .find(|person| {
                person
                    .emails
                    .iter()
                    .any(|known| known.eq_ignore_ascii_case(email))
            })
            .unwrap_or_else(|| panic!("no person {email}"))
            .clone()
    };
    for domain in COMPANY_DOMAINS {
        let org = organizations.iter().find(|org| org.name == domain).unwrap();
        assert_eq!(org.owner_id, Some(OWNER));
    }
    for (_, email, _) in PEOPLE {
        let person = person_of(email);
        let domain = crm::company_domain(email);
        assert_eq!(person.org_id, domain.as_deref().and_then(org_of), "{email}");
        assert_eq!(person.owner_id, Some(OWNER));
    }
    let notes = fake.notes();
    assert_eq!(notes.len(), 20);
    let leads = fake.leads();
    assert_eq!(leads.len(), 20, "{leads:?}");
    for event in &briefs {
        let email = event.data["answers"]["email"].as_str().unwrap();
        let person = person_of(email);
        let org = crm::company_domain(email).as_deref().and_then(org_of);
        let mine: Vec<_> = notes
            .iter()
            .filter(|note| note.content.contains(&event.id))
            .collect();
        assert_eq!(mine.len(), 1, "{}", event.id);
        assert_eq!(mine[0].person_id, Some(person.id));
        assert_eq!(mine[0].org_id, org);
        let mine: Vec<_> = leads
            .iter()
            .filter(|lead| lead.origin_id.as_deref() == Some(event.id.as_str()))
            .collect();
        assert_eq!(mine.len(), 1, "{}", event.id);
        let lead = mine[0];
        assert_eq!(lead.person_id, person.id);
        assert_eq!(lead.organization_id, org);
        assert_eq!(lead.owner_id, Some(OWNER));
        assert_eq!(lead.label_ids, vec![HOT.to_owned()]);
        assert_eq!(lead.channel, Some(7));
        let brief = event.data["id"].as_str().unwrap();
        assert!(
            lead.title.ends_with(&format!("({brief})")),
            "{}",
            lead.title
        );
    }
}

#[tokio::test]
async fn a_custom_field_named_as_pipedrive_shows_it_is_resolved_to_its_key_and_typed() {
    let fake = FakePipedrive::start(TOKEN).await;

    let attempt = first_attempt(&connector(&sales_config(&fake.base_url)), &john_brief()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let person = &fake.persons()[0];
    assert_eq!(person.custom_fields[BUDGET_KEY], json!("$50-100/month"));
    // team_size is 50 in the brief; a numeric field takes the number.
    assert_eq!(person.custom_fields[TEAM_SIZE_KEY], json!(50.0));
    assert_eq!(person.owner_id, Some(OWNER));
    assert_eq!(fake.organizations()[0].name, "techstart.io");
    assert_eq!(fake.leads()[0].title, "TechStart — John Smith (cm3brief)");
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[tokio::test]
async fn the_person_fields_are_read_once_not_at_every_brief_and_a_missing_one_is_left_out() {
    let fake = FakePipedrive::start(TOKEN).await;
    let connector = connector(&sales_config(&fake.base_url));
    for _ in 0..3 {
        first_attempt(&connector, &john_brief()).await;
    }
    assert_eq!(fake.calls(Route::PersonFields), 1);

    let mut config = sales_config(&fake.base_url);
    config
        .fields
        .insert("budget".to_owned(), "Budgte".to_owned());
    let connector = PipedriveConnector::new("deals", &config).unwrap();
    let attempt = first_attempt(&connector, &john_brief()).await;
    // A missing field is left out (and logged), the lead still lands.
    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    // Read once by this connector: the list it just read is not read again at once.
    assert_eq!(fake.calls(Route::PersonFields), 2);
}

#[tokio::test]
async fn an_organization_already_in_pipedrive_is_found_and_a_free_mail_address_makes_none() {
    let fake = FakePipedrive::start(TOKEN).await;
    let existing = fake.seed_organization("techstart.io");
    let connector = connector(&sales_config(&fake.base_url));

    let first = first_attempt(&connector, &john_brief()).await;
    let gmail = brief(
        json!({"name": "Jon Bell", "email": "jon.bell@gmail.com"}),
        "Demo?",
    );
    let second = first_attempt(&connector, &gmail).await;

    assert_eq!(first.verdict, Verdict::Delivered, "{first:?}");
    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert_eq!(fake.organizations().len(), 1);
    assert_eq!(fake.calls(Route::CreateOrganization), 0);
    let persons = fake.persons();
    assert_eq!(persons[0].org_id, Some(existing));
    assert_eq!(persons[1].org_id, None);
    assert!(second.response.unwrap().contains("free-mail"));
}

#[tokio::test]
async fn a_lead_created_by_an_attempt_that_timed_out_is_found_not_created_again() {
    let fake = FakePipedrive::start(TOKEN).await;
    let mut config = config(&fake.base_url);
    config.timeout = Duration::from_millis(300);
    config.create_lead = true;
    let connector = connector(&config);
    let checkpoints = MemoryCheckpoints::default();
    let event = john_brief();
    fake.inject(
        Route::CreateLead,
        Fault::SlowAfterActing(Duration::from_secs(1)),
        1,
    );

    let first = attempt(&connector, &event, &checkpoints, 1).await;
    let (_, reason) = retry_of(&first);
    assert!(reason.contains("creating the lead"), "{reason}");
    assert_eq!(fake.leads().len(), 1, "the fake created the lead anyway");

    let second = attempt(&connector, &event, &checkpoints, 2).await;

    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    assert_eq!(fake.leads().len(), 1);
    assert_eq!(fake.calls(Route::CreateLead), 1);
    assert_eq!(fake.leads()[0].title, "TechStart — Clairo brief");
    assert_eq!(
        checkpoints.current().unwrap()["lead_id"],
        fake.leads()[0].id
    );
}

#[tokio::test]
async fn check_online_names_a_misspelt_field_owner_label_and_channel_with_suggestions() {
    let fake = FakePipedrive::start(TOKEN).await;
    let mut config = sales_config(&fake.base_url);
    config.fields = BTreeMap::from([
        ("budget".to_owned(), "Budgte".to_owned()),
        ("mail".to_owned(), "Email".to_owned()),
        ("team_size".to_owned(), "team size".to_owned()),
    ]);
    config.owner_id = Some(1003);
    config.lead.as_mut().unwrap().label_ids =
        vec!["f08b42a0-4e75-11ea-9643-03698ef1cfd7".to_owned()];
    config.lead.as_mut().unwrap().channel = Some(70);

    let problems = connector(&config).audit().await.unwrap();

    let said: Vec<String> = problems
        .iter()
        .map(|problem| format!("{}: {}", problem.key, problem.message))
        .collect();
    assert!(
        said.contains(
            &"fields.budget: Pipedrive has no person field \"Budgte\"; did you mean Budget?"
                .to_owned()
        ),
        "{said:#?}"
    );
    assert!(
        said.iter()
            .any(|line| line.starts_with("fields.mail:") && line.contains("built-in")),
        "{said:#?}"
    );
    assert!(
        said.iter()
            .any(|line| line
                == "owner_id: Pipedrive has no user 1003; did you mean 1002 (Pat Seller)?"),
        "{said:#?}"
    );
    assert!(
        said.iter()
            .any(|line| line.starts_with("lead.label_ids[0]:")
                && line.contains("did you mean f08b42a0-4e75-11ea-9643-03698ef1cfd6 (Hot)?")),
        "{said:#?}"
    );
    assert!(
        said.iter().any(|line| line
            .starts_with("lead.channel: Pipedrive has no source channel 70")
            && line.contains("Clairo = 7")),
        "{said:#?}"
    );
    assert_eq!(problems.len(), 5, "{said:#?}");

    let problems = connector(&sales_config(&fake.base_url))
        .audit()
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_complete_pipedrive_mapping_parses_create_lead_still_means_a_default_lead_and_bad_ids_are_named()
 {
    let text = r#"
        type = "pipedrive"
        api_token = "x"
        fields = { budget = "Budget", team_size = "Team size" }
        owner_id = 1002
        organization = true
        lead = { title = "{{ data.answers.company }} — Clairo", label_ids = ["f08b42a0-4e75-11ea-9643-03698ef1cfd6"], channel = 7 }
    "#;
    let Ok(ConnectorConfig::Pipedrive(config)) = table(text) else {
        panic!("not pipedrive");
    };
    assert_eq!(config.validate(), Vec::new());
    assert_eq!(config.owner_id, Some(1002));
    assert_eq!(config.lead.as_ref().unwrap().channel, Some(7));

    let Ok(ConnectorConfig::Pipedrive(old)) =
        table("type = \"pipedrive\"\napi_token = \"x\"\ncreate_lead = true\n")
    else {
        panic!("not pipedrive");
    };
    let lead = old.lead_config().unwrap();
    assert!(lead.title.is_none() && lead.label_ids.is_empty() && lead.channel.is_none());

    let text = r#"
        type = "pipedrive"
        api_token = "x"
        fields = { budget = " " }
        owner_id = 0
        lead = { title = "{{ oops", label_ids = ["hot"] }
    "#;
    let Ok(ConnectorConfig::Pipedrive(config)) = table(text) else {
        panic!("not pipedrive");
    };
    assert_eq!(
        keys(&config.validate()),
        [
            "fields.budget",
            "owner_id",
            "lead.title",
            "lead.label_ids[0]"
        ]
    );
    assert!(table("type = \"pipedrive\"\nowner_id = \"Pat\"\n").is_err());
}
