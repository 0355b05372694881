//! The sandbox over real HTTP, the way the daemon meets it: reqwest against 127.0.0.1:0.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clairo_sandbox::{BriefSpec, Faults, Sandbox, SandboxConfig};
use reqwest::multipart::{Form, Part};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const KEY: &str = "clr_sandbox_key";

/// reqwest is built without a TLS provider of its own (the daemon installs ring).
fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new()
}

async fn sandbox(config: SandboxConfig) -> Sandbox {
    clairo_sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("sandbox starts")
}

async fn get(sb: &Sandbox, path: &str) -> Response {
    client()
        .get(format!("{}{path}", sb.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request")
}

async fn post(sb: &Sandbox, path: &str, body: Value) -> Response {
    client()
        .post(format!("{}{path}", sb.base_url()))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn body(response: Response) -> Value {
    response.json().await.expect("a JSON body")
}

fn header(response: &Response, name: &str) -> Option<u64> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A canonical WAV: 16-bit mono 8 kHz PCM, `seconds` long.
fn wav(seconds: u32) -> Vec<u8> {
    let data_len = seconds * 16_000;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8_000u32.to_le_bytes());
    w.extend_from_slice(&16_000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    w.extend((0..data_len).map(|i| (i % 251) as u8));
    w
}

async fn upload(sb: &Sandbox, agent_id: &str, file_name: &str, audio: Vec<u8>) -> Response {
    let form = Form::new()
        .text("agentId", agent_id.to_owned())
        .text("title", "Weekly standup")
        .part("audio", Part::bytes(audio).file_name(file_name.to_owned()));
    client()
        .post(format!("{}/meetings", sb.base_url()))
        .bearer_auth(KEY)
        .multipart(form)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn requests_without_a_valid_key_get_401_with_the_documented_body() {
    let sb = sandbox(SandboxConfig::default()).await;
    let url = format!("{}/agents", sb.base_url());
    let client = client();

    let missing = client.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert!(missing.headers().get("x-ratelimit-limit").is_none());
    assert_eq!(
        body(missing).await,
        json!({"error": "Missing or invalid Authorization header. Use: Bearer clr_..."})
    );

    let malformed = client
        .get(&url)
        .header("Authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        body(malformed).await["error"],
        "Missing or invalid Authorization header. Use: Bearer clr_..."
    );

    let unknown = client
        .get(&url)
        .bearer_auth("clr_unknown")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body(unknown).await, json!({"error": "Invalid API key"}));

    // A removed key stops working at once; an added one starts.
    sb.add_api_key("clr_second");
    assert_eq!(
        client
            .get(&url)
            .bearer_auth("clr_second")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    sb.remove_api_key("clr_second");
    assert_eq!(
        client
            .get(&url)
            .bearer_auth("clr_second")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Refused requests are still API requests: they count.
    let stats = sb.stats();
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.by_status[&401], 4);
    assert_eq!(stats.by_endpoint["GET /agents"], 5);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let sb = sandbox(SandboxConfig::default()).await;
    let unknown = get(&sb, "/invoices").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(header(&unknown, "x-ratelimit-remaining").is_some());
    assert_eq!(body(unknown).await, json!({"error": "Not found"}));
    let wrong_method = post(&sb, "/agents", json!({})).await;
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(body(wrong_method).await["error"].is_string());
    assert_eq!(sb.stats().by_endpoint["OTHER"], 2);
}

#[tokio::test]
async fn latency_is_added_before_the_handler_answers() {
    let sb = sandbox(SandboxConfig::default()).await;
    sb.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    assert_eq!(get(&sb, "/agents").await.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_key_without_the_max_plan_gets_403() {
    let sb = sandbox(SandboxConfig::default()).await;
    let response = client()
        .get(format!("{}/briefs", sb.base_url()))
        .bearer_auth("clr_sandbox_noplan")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        body(response).await,
        json!({"error": "API access requires the Max plan"})
    );
}

#[tokio::test]
async fn rate_limit_headers_count_down_then_429_until_reset() {
    let sb = sandbox(SandboxConfig {
        rate_limit: 3,
        window: Duration::from_secs(2),
        ..SandboxConfig::default()
    })
    .await;

    let mut reset = 0;
    for expected_remaining in [2, 1, 0] {
        let response = get(&sb, "/agents").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-ratelimit-limit"), Some(3));
        assert_eq!(
            header(&response, "x-ratelimit-remaining"),
            Some(expected_remaining)
        );
        reset = header(&response, "x-ratelimit-reset").unwrap();
    }
    // Reset is rounded up from the window's end: never in the past, at most ~3 s ahead.
    let now_s = unix_now_ms() / 1000;
    assert!(
        reset >= now_s && reset <= now_s + 3,
        "reset {reset}, now {now_s}"
    );

    // Beyond the limit: 429, and refused requests don't eat into the next window.
    for _ in 0..3 {
        let throttled = get(&sb, "/agents").await;
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&throttled, "x-ratelimit-remaining"), Some(0));
        assert_eq!(header(&throttled, "x-ratelimit-reset"), Some(reset));
        assert!(throttled.headers().get("retry-after").is_none());
        assert_eq!(
            body(throttled).await,
            json!({"error": "Too many requests — slow down"})
        );
    }
    // A client that waits until Reset is past the window.
    let wait = (reset * 1000).saturating_sub(unix_now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let recovered = get(&sb, "/agents").await;
    assert_eq!(recovered.status(), StatusCode::OK);
    assert_eq!(header(&recovered, "x-ratelimit-remaining"), Some(2));

    let stats = sb.stats();
    assert_eq!(stats.throttled, 3);
    assert_eq!(stats.by_status[&429], 3);
    assert_eq!(stats.by_endpoint["GET /agents"], 7);
}

#[tokio::test]
async fn a_429_carries_retry_after_only_when_asked_to() {
    let sb = sandbox(SandboxConfig {
        rate_limit: 1,
        window: Duration::from_secs(5),
        faults: Faults {
            retry_after: true,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    assert_eq!(get(&sb, "/briefs").await.status(), StatusCode::OK);
    let throttled = get(&sb, "/briefs").await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = header(&throttled, "retry-after").expect("Retry-After");
    assert!((1..=5).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn fail_next_answers_the_next_requests_with_the_given_status() {
    let sb = sandbox(SandboxConfig::default()).await;
    sb.fail_next(2, 503);
    for _ in 0..2 {
        let failed = get(&sb, "/conversations").await;
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
        // Faults come after rate limiting: the headers are there, the budget is spent.
        assert!(header(&failed, "x-ratelimit-remaining").is_some());
        assert!(body(failed).await["error"].is_string());
    }
    assert_eq!(get(&sb, "/conversations").await.status(), StatusCode::OK);

    // An unauthenticated request doesn't use up an injected failure.
    sb.fail_next(1, 500);
    let anonymous = client()
        .get(format!("{}/agents", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let failed = get(&sb, "/agents").await;
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body(failed).await,
        json!({"error": "Internal server error"})
    );
}

#[tokio::test]
async fn an_error_rate_of_one_fails_every_request() {
    let sb = sandbox(SandboxConfig::default()).await;
    sb.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    assert_eq!(
        get(&sb, "/briefs").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    sb.set_faults(Faults::default());
    assert_eq!(get(&sb, "/briefs").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn agents_include_every_type_and_an_inactive_one() {
    let sb = sandbox(SandboxConfig::default()).await;
    let agents = body(get(&sb, "/agents").await).await;
    let agents = agents["agents"].as_array().unwrap();
    for kind in ["SUPPORT", "DISCOVERY", "MEETING"] {
        assert!(
            agents
                .iter()
                .any(|a| a["type"] == kind && a["isActive"] == true),
            "{kind}"
        );
    }
    assert!(agents.iter().any(|a| a["isActive"] == false));
    for a in agents {
        assert!(a["id"].as_str().unwrap().starts_with("cm1"));
        for field in ["name", "description", "createdAt"] {
            assert!(a[field].is_string(), "{field}");
        }
    }
    assert_eq!(sb.agents().len(), agents.len());
}

#[tokio::test]
async fn malformed_items_are_appended_to_every_list() {
    let sb = sandbox(SandboxConfig {
        faults: Faults {
            malformed_items: 3,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    for (path, key, good) in [
        ("/agents", "agents", 4),
        ("/conversations", "conversations", 6),
        ("/briefs", "briefs", 3),
    ] {
        let list = body(get(&sb, path).await).await;
        let items = list[key].as_array().unwrap();
        assert_eq!(items.len(), good + 3, "{path}");
        let odd = &items[good..];
        assert!(
            odd.iter().any(|i| i["id"].is_number()),
            "{path}: numeric id"
        );
        assert!(
            odd.iter().any(|i| i.get("id").is_none()),
            "{path}: missing id"
        );
        assert!(
            odd.iter().any(|i| i["createdAt"].is_number()),
            "{path}: numeric createdAt"
        );
    }
}

#[tokio::test]
async fn brief_detail_has_the_documented_shape_without_agent_id() {
    let sb = sandbox(SandboxConfig::default()).await;
    let id = sb.add_brief(BriefSpec::default());

    let list = body(get(&sb, "/briefs").await).await;
    let newest = &list["briefs"][0];
    assert_eq!(newest["id"], id.as_str());
    for field in ["agentId", "conversationId", "summary", "createdAt"] {
        assert!(newest[field].is_string(), "{field}");
    }
    let summary = newest["summary"].as_str().unwrap();
    assert!(summary.starts_with("John Smith, "), "{summary}");
    assert!(summary.contains("of TechStart. Looking for "), "{summary}");
    assert!(summary.ends_with("Budget: $50-100/month."), "{summary}");
    assert!(!summary.contains('@'));

    let detail = body(get(&sb, &format!("/briefs/{id}")).await).await;
    let keys: Vec<&str> = detail
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for key in ["id", "summary", "answers", "conversation"] {
        assert!(keys.contains(&key), "{key}");
    }
    assert_eq!(detail["answers"]["email"], "john.smith@techstart.example");
    assert_eq!(detail["answers"]["company"], "TechStart");
    assert_eq!(detail["conversation"]["id"], newest["conversationId"]);
    let messages = detail["conversation"]["messages"].as_array().unwrap();
    assert!(
        messages
            .iter()
            .all(|m| m["role"].is_string() && m["createdAt"].is_string())
    );

    let missing = get(&sb, "/briefs/cm3missing").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(missing).await, json!({"error": "Brief not found"}));
}

#[tokio::test]
async fn a_brief_without_an_email_has_none_anywhere() {
    let sb = sandbox(SandboxConfig::default()).await;
    let id = sb.add_brief(BriefSpec {
        name: "Ana Lopez".into(),
        email: None,
        ..BriefSpec::default()
    });
    let detail = body(get(&sb, &format!("/briefs/{id}")).await).await;
    assert!(detail["answers"].get("email").is_none());
    assert!(!detail.to_string().contains('@'));
}

#[tokio::test]
async fn conversations_list_newest_update_first_and_detail_has_messages() {
    let sb = sandbox(SandboxConfig {
        seed_briefs: 0,
        ..SandboxConfig::default()
    })
    .await;
    let support = sb.agent_id("SUPPORT");
    let id = sb.add_conversation(
        &support,
        &[("user", "Hello!"), ("assistant", "Hi! How can I help?")],
    );
    let other = sb.add_conversation(&support, &[("user", "Are you open today?")]);

    let list = body(get(&sb, &format!("/conversations?agentId={support}&limit=2")).await).await;
    let items = list["conversations"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], other.as_str());
    assert_eq!(items[1]["messageCount"], 2);

    sb.add_message(&id, "user", "One more question");
    sb.set_conversation_status(&other, "CLOSED");
    let list = body(get(&sb, "/conversations?limit=1").await).await;
    assert_eq!(list["conversations"][0]["id"], other.as_str());
    assert_eq!(list["conversations"][0]["status"], "CLOSED");
    let list = body(get(&sb, "/conversations").await).await;
    let first = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(first["messageCount"], 3);
    assert_eq!(first["status"], "ACTIVE");

    let detail = body(get(&sb, &format!("/conversations/{id}")).await).await;
    assert_eq!(detail["agentId"], support.as_str());
    assert_eq!(detail["status"], "ACTIVE");
    assert_eq!(
        detail["messages"][0],
        json!({"role": "user", "content": "Hello!", "createdAt": detail["messages"][0]["createdAt"]})
    );
    assert_eq!(detail["messages"].as_array().unwrap().len(), 3);

    for bad in ["0", "-3", "ten", "2.5"] {
        let response = get(&sb, &format!("/conversations?limit={bad}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(body(response).await["error"].is_string());
    }
    let missing = get(&sb, "/conversations/cm2missing").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        body(missing).await,
        json!({"error": "Conversation not found"})
    );
}

#[tokio::test]
async fn list_items_can_omit_the_undocumented_fields() {
    let sb = sandbox(SandboxConfig {
        conversation_list_fields: false,
        ..SandboxConfig::default()
    })
    .await;
    let list = body(get(&sb, "/conversations").await).await;
    let item = &list["conversations"][0];
    assert!(item.get("updatedAt").is_none() && item.get("messageCount").is_none());
    assert!(item["createdAt"].is_string());
}

#[tokio::test]
async fn chat_continues_conversations_and_checks_its_agent() {
    let sb = sandbox(SandboxConfig::default()).await;
    let support = sb.agent_id("SUPPORT");
    let first = post(
        &sb,
        "/chat",
        json!({"agentId": support, "message": "What are your business hours?"}),
    )
    .await;
    assert_eq!(first.status(), StatusCode::OK);
    let first = body(first).await;
    assert_eq!(first["reply"], "We are open Monday to Friday, 9am-6pm.");
    let conversation = first["conversationId"].as_str().unwrap().to_owned();
    assert!(conversation.starts_with("cm2"));

    let again = body(
        post(
            &sb,
            "/chat",
            json!({"agentId": support, "message": "Thanks", "conversationId": conversation}),
        )
        .await,
    )
    .await;
    assert_eq!(again["conversationId"], conversation.as_str());
    let detail = body(get(&sb, &format!("/conversations/{conversation}")).await).await;
    assert_eq!(detail["messages"].as_array().unwrap().len(), 4);

    let missing = post(&sb, "/chat", json!({"agentId": support})).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let wrong_type = post(
        &sb,
        "/chat",
        json!({"agentId": sb.agent_id("MEETING"), "message": "hi"}),
    )
    .await;
    assert_eq!(wrong_type.status(), StatusCode::BAD_REQUEST);
    let unknown = post(&sb, "/chat", json!({"agentId": "cm1nope", "message": "hi"})).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(unknown).await, json!({"error": "Agent not found"}));
    let lost = post(
        &sb,
        "/chat",
        json!({"agentId": support, "message": "hi", "conversationId": "cm2nope"}),
    )
    .await;
    assert_eq!(lost.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_discover_flow_completes_and_creates_a_brief() {
    let sb = sandbox(SandboxConfig::default()).await;
    let discovery = sb.agent_id("DISCOVERY");
    let briefs_before = body(get(&sb, "/briefs").await).await["briefs"]
        .as_array()
        .unwrap()
        .len();

    let opened = body(
        post(
            &sb,
            "/discover",
            json!({"agentId": discovery, "message": "Hi there"}),
        )
        .await,
    )
    .await;
    assert_eq!(opened["completed"], false);
    assert_eq!(opened["progress"], 0);
    assert!(opened["reply"].as_str().unwrap().ends_with('?'));
    let conversation = opened["conversationId"].as_str().unwrap().to_owned();

    let answers = [
        "Jane Doe",
        "jane@acme.example",
        "Acme",
        "CTO",
        "a support chatbot",
        "$100-250/month",
    ];
    let mut last = Value::Null;
    let mut progress = 0;
    for answer in answers {
        last = body(
            post(
                &sb,
                "/discover",
                json!({"agentId": discovery, "message": answer, "conversationId": conversation}),
            )
            .await,
        )
        .await;
        let now = last["progress"].as_u64().unwrap();
        assert!(now > progress, "progress moves forward");
        progress = now;
    }
    assert_eq!(last["completed"], true);
    assert_eq!(last["progress"], 100);

    let list = body(get(&sb, "/briefs").await).await;
    let briefs = list["briefs"].as_array().unwrap();
    assert_eq!(briefs.len(), briefs_before + 1);
    let newest = &briefs[0];
    assert_eq!(newest["conversationId"], conversation.as_str());
    assert_eq!(newest["agentId"], discovery.as_str());
    assert_eq!(
        newest["summary"],
        "Jane Doe, CTO of Acme. Looking for a support chatbot. Budget: $100-250/month."
    );
    let detail = body(get(&sb, &format!("/briefs/{}", newest["id"].as_str().unwrap())).await).await;
    assert_eq!(detail["answers"]["email"], "jane@acme.example");
    assert_eq!(
        detail["conversation"]["messages"].as_array().unwrap().len(),
        14
    );

    let again = post(
        &sb,
        "/discover",
        json!({"agentId": discovery, "message": "more", "conversationId": conversation}),
    )
    .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let wrong_type = post(
        &sb,
        "/discover",
        json!({"agentId": sb.agent_id("SUPPORT"), "message": "hi"}),
    )
    .await;
    assert_eq!(wrong_type.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_small_valid_wav_is_accepted_and_its_sha256_recorded() {
    let sb = sandbox(SandboxConfig::default()).await;
    let meeting_agent = sb.agent_id("MEETING");
    let audio = wav(3);
    let expected_sha: String = Sha256::digest(&audio)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let response = upload(&sb, &meeting_agent, "standup.wav", audio.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let meeting = body(response).await;
    assert!(meeting["id"].as_str().unwrap().starts_with("cm4"));
    assert_eq!(meeting["title"], "Weekly standup");
    assert_eq!(meeting["durationSec"], 3);
    assert!(
        meeting["transcript"]
            .as_str()
            .unwrap()
            .contains("Speaker 2:")
    );
    assert!(
        meeting["summary"]
            .as_str()
            .unwrap()
            .contains("Action items:")
    );

    let stats = sb.stats();
    assert_eq!(stats.uploads.len(), 1);
    let record = &stats.uploads[0];
    assert_eq!(record.meeting_id, meeting["id"].as_str().unwrap());
    assert_eq!(record.agent_id, meeting_agent);
    assert_eq!(record.file_name, "standup.wav");
    assert_eq!(record.size, audio.len() as u64);
    assert_eq!(record.sha256, expected_sha);
    assert_eq!(stats.by_endpoint["POST /meetings"], 1);
}

#[tokio::test]
async fn a_text_file_named_mp3_is_rejected() {
    let sb = sandbox(SandboxConfig::default()).await;
    let response = upload(
        &sb,
        &sb.agent_id("MEETING"),
        "notes.mp3",
        b"just some meeting notes\n".to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body(response).await,
        json!({"error": "Unsupported audio format. Use webm, mp3 or wav"})
    );
    // A real WAV under the wrong name is refused too: name and content must agree.
    let renamed = upload(&sb, &sb.agent_id("MEETING"), "standup.mp3", wav(1)).await;
    assert_eq!(renamed.status(), StatusCode::BAD_REQUEST);
    assert!(sb.stats().uploads.is_empty());
}

#[tokio::test]
async fn an_upload_over_25_mib_is_rejected() {
    let sb = sandbox(SandboxConfig::default()).await;
    let mut audio = wav(1);
    audio.resize(25 * 1024 * 1024 + 1, 0);
    let response = upload(&sb, &sb.agent_id("MEETING"), "long.wav", audio).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body(response).await,
        json!({"error": "File too large. Max size: 25MB"})
    );
    assert!(sb.stats().uploads.is_empty());
}

#[tokio::test]
async fn uploads_need_every_field_and_a_meeting_agent() {
    let sb = sandbox(SandboxConfig::default()).await;
    let no_title = Form::new()
        .text("agentId", sb.agent_id("MEETING"))
        .part("audio", Part::bytes(wav(1)).file_name("a.wav"));
    let response = client()
        .post(format!("{}/meetings", sb.base_url()))
        .bearer_auth(KEY)
        .multipart(no_title)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(body(response).await["error"].is_string());

    let unknown = upload(&sb, "cm1nope", "a.wav", wav(1)).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let not_json = post(&sb, "/meetings", json!({"agentId": "x"})).await;
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn stats_count_route_templates_and_the_admin_routes_drive_a_sandbox() {
    let sb = sandbox(SandboxConfig::default()).await;
    let admin = format!("http://{}/_sandbox", sb.addr());
    let client = client();

    let ids: Value = client
        .post(format!("{admin}/briefs"))
        .json(&json!({"count": 250}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids = ids["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 250);
    let detail = get(&sb, &format!("/briefs/{}", ids[0].as_str().unwrap())).await;
    assert_eq!(detail.status(), StatusCode::OK);
    let conversation = body(detail).await["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let added = client
        .post(format!("{admin}/conversations/{conversation}/messages"))
        .json(&json!({"role": "user", "content": "Any update?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
    let unknown = client
        .post(format!("{admin}/conversations/cm2nope/messages"))
        .json(&json!({"role": "user", "content": "?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let faults = client
        .put(format!("{admin}/faults"))
        .json(&json!({"malformed_items": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(faults.status(), StatusCode::OK);
    let briefs = body(get(&sb, "/briefs").await).await;
    assert_eq!(briefs["briefs"].as_array().unwrap().len(), 3 + 250 + 1);

    let limited = client
        .put(format!("{admin}/rate-limit"))
        .json(&json!({"limit": 1, "window_ms": 60_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::OK);
    assert_eq!(
        get(&sb, &format!("/conversations/{conversation}"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&sb, "/conversations").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let stats: Value = client
        .get(format!("{admin}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["requests"], 4);
    assert_eq!(stats["by_endpoint"]["GET /briefs/{id}"], 1);
    assert_eq!(stats["by_endpoint"]["GET /conversations/{id}"], 1);
    assert_eq!(stats["by_status"]["429"], 1);
    assert_eq!(stats["throttled"], 1);
    let log = stats["log"].as_array().unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log[3]["endpoint"], "GET /conversations");
    assert_eq!(log[3]["status"], 429);

    let reset = client
        .post(format!("{admin}/reset-stats"))
        .send()
        .await
        .unwrap();
    assert!(reset.status().is_success());
    assert_eq!(sb.stats().requests, 0);
}

#[tokio::test]
async fn stop_ends_serve_forever() {
    let sb = sandbox(SandboxConfig::default()).await;
    let serving = tokio::spawn({
        let sb = sb.clone();
        async move { sb.serve_forever().await }
    });
    assert_eq!(get(&sb, "/agents").await.status(), StatusCode::OK);
    sb.stop();
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("serve_forever resolves after stop")
        .unwrap();
}

#[tokio::test]
async fn the_same_seed_gives_the_same_data() {
    let a = sandbox(SandboxConfig::default()).await;
    let b = sandbox(SandboxConfig::default()).await;
    assert_eq!(a.agents(), b.agents());
    let ids = |v: Value| -> Vec<Value> {
        v["briefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].clone())
            .collect()
    };
    assert_eq!(
        ids(body(get(&a, "/briefs").await).await),
        ids(body(get(&b, "/briefs").await).await)
    );
    let c = sandbox(SandboxConfig {
        seed: 7,
        ..SandboxConfig::default()
    })
    .await;
    assert_ne!(a.agents()[0].id, c.agents()[0].id);
}

#[tokio::test]
async fn ten_thousand_briefs_list_in_one_response() {
    let sb = sandbox(SandboxConfig::default()).await;
    let ids = sb.add_briefs(10_000);
    let response = get(&sb, "/briefs?limit=5").await;
    let list = body(response).await;
    let briefs = list["briefs"].as_array().unwrap();
    assert_eq!(briefs.len(), 10_003, "limit is not a /briefs parameter");
    assert_eq!(briefs[0]["id"], ids[9_999].as_str());
}
