//! The sandbox's data — agents, conversations, briefs — and how the API renders it.
//!
//! Lists are the hot path (benchmarks list 10k briefs and create 100k), so the store keeps
//! what makes them cheap: a recency index for conversations, each brief's list item
//! rendered once at creation (briefs never change), and scripted Discovery conversations
//! whose messages are generated from the brief's answers instead of stored twice.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::rfc3339;
use crate::content::{self, Answers, QUESTIONS, SCRIPT_LEN};
use crate::ids::{IdGen, IdKind, Rng, mix};
use crate::reply::ApiError;

pub(crate) const SUPPORT: &str = "SUPPORT";
pub(crate) const DISCOVERY: &str = "DISCOVERY";
pub(crate) const MEETING: &str = "MEETING";
const ACTIVE: &str = "ACTIVE";
const CLOSED: &str = "CLOSED";

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Seconds between messages of a scripted Discovery conversation: a visitor typing.
const SCRIPT_STEP_MS: i64 = 4_000;
/// Salt so that content picks and id bodies come from unrelated streams of the same seed.
const CONTENT_SALT: u64 = 0x5EED_C0DE_0000_0001;

/// An agent as the test helpers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    pub name: String,
    /// "SUPPORT", "DISCOVERY" or "MEETING" (the API's `type`).
    pub kind: String,
    pub is_active: bool,
}

/// A brief to create as if a visitor had completed the Discovery conversation.
/// Role and need are invented from the seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BriefSpec {
    pub name: String,
    /// `None`: the visitor declined, and the brief's answers carry no email at all.
    pub email: Option<String>,
    pub company: String,
    pub budget: String,
}

impl Default for BriefSpec {
    fn default() -> Self {
        Self {
            name: "John Smith".to_owned(),
            email: Some("john.smith@techstart.example".to_owned()),
            company: "TechStart".to_owned(),
            budget: "$50-100/month".to_owned(),
        }
    }
}

struct Agent {
    id: String,
    name: &'static str,
    kind: &'static str,
    is_active: bool,
    description: &'static str,
    created_ms: i64,
}

struct Message {
    role: Cow<'static, str>,
    content: String,
    at_ms: i64,
}

/// Where a live `/discover` conversation stands.
struct Discovery {
    replies: Vec<String>,
    completed: bool,
}

struct Conversation {
    id: String,
    agent: usize,
    status: Cow<'static, str>,
    created_ms: i64,
    updated_ms: i64,
    /// Key in `Store::recency`; larger = more recently updated.
    touch: u64,
    /// A brief whose answers script this conversation's first `SCRIPT_LEN` messages.
    script: Option<usize>,
    /// Messages after the script (or all of them, without one).
    messages: Vec<Message>,
    discovery: Option<Discovery>,
}

impl Conversation {
    fn message_count(&self) -> usize {
        self.messages.len() + if self.script.is_some() { SCRIPT_LEN } else { 0 }
    }
}

struct Brief {
    id: String,
    conversation: usize,
    answers: Answers,
    summary: String,
    /// `{"id":…,"agentId":…,"conversationId":…,"summary":…,"createdAt":…}`, rendered once.
    list_item: Box<str>,
}

pub(crate) struct ChatOutcome {
    pub reply: &'static str,
    pub conversation_id: String,
}

pub(crate) struct DiscoverOutcome {
    pub reply: &'static str,
    pub conversation_id: String,
    pub progress: u32,
    pub completed: bool,
}

pub(crate) struct Store {
    ids: IdGen,
    rng: Rng,
    /// Contacts invented so far; goes into generated emails to keep them distinct.
    contacts: u64,
    list_fields: bool,
    agents: Vec<Agent>,
    conversations: Vec<Conversation>,
    conversation_ids: HashMap<String, usize>,
    /// touch → conversation: iterating backwards lists the most recently updated first
    /// without sorting 100k conversations per request.
    recency: BTreeMap<u64, usize>,
    touches: u64,
    /// In creation order, which is `createdAt` order: newest first is a reverse walk.
    briefs: Vec<Brief>,
    brief_ids: HashMap<String, usize>,
    brief_list_bytes: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentJson<'a> {
    id: &'a str,
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    is_active: bool,
    description: &'a str,
    created_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConversationItemJson<'a> {
    id: &'a str,
    agent_id: &'a str,
    status: &'a str,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_count: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageJson<'a> {
    role: &'a str,
    content: &'a str,
    created_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConversationJson<'a> {
    id: &'a str,
    agent_id: &'a str,
    status: &'a str,
    messages: Vec<MessageJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BriefItemJson<'a> {
    id: &'a str,
    agent_id: &'a str,
    conversation_id: &'a str,
    summary: &'a str,
    created_at: String,
}

#[derive(Serialize)]
struct BriefConversationJson<'a> {
    id: &'a str,
    messages: Vec<MessageJson<'a>>,
}

/// Exactly the docs' detail example: no agentId, conversationId or createdAt.
#[derive(Serialize)]
struct BriefJson<'a> {
    id: &'a str,
    summary: &'a str,
    answers: &'a Answers,
    conversation: BriefConversationJson<'a>,
}

impl Store {
    /// The seeded world: four agents (one inactive), then support conversations and
    /// briefs spread over the last hours, in chronological order.
    pub(crate) fn new(
        seed: u64,
        seed_conversations: usize,
        seed_briefs: usize,
        list_fields: bool,
        now_ms: i64,
    ) -> Self {
        let mut store = Self {
            ids: IdGen::new(seed),
            rng: Rng::new(mix(seed ^ CONTENT_SALT)),
            contacts: 0,
            list_fields,
            agents: Vec::new(),
            conversations: Vec::new(),
            conversation_ids: HashMap::new(),
            recency: BTreeMap::new(),
            touches: 0,
            briefs: Vec::new(),
            brief_ids: HashMap::new(),
            brief_list_bytes: 0,
        };
        let seeded_agents: [(&str, &str, bool, &str); 4] = [
            ("Support Bot", SUPPORT, true, "Customer support agent"),
            (
                "Discovery Agent",
                DISCOVERY,
                true,
                "Qualifies new leads before the first call",
            ),
            (
                "Meeting Notes",
                MEETING,
                true,
                "Transcribes and summarises meetings",
            ),
            (
                "Support Bot (old)",
                SUPPORT,
                false,
                "Previous support agent, kept for its history",
            ),
        ];
        for (i, (name, kind, is_active, description)) in seeded_agents.into_iter().enumerate() {
            let id = store.ids.next(IdKind::Agent);
            store.agents.push(Agent {
                id,
                name,
                kind,
                is_active,
                description,
                created_ms: now_ms - 90 * DAY_MS + i as i64 * DAY_MS,
            });
        }

        // Conversations every 3 h, briefs every 3 h offset by 90 min, oldest first, so
        // creation order is time order (the lists rely on it).
        let mut seeded: Vec<(i64, bool)> = (0..seed_conversations)
            .map(|i| {
                (
                    now_ms - (seed_conversations - i) as i64 * 3 * HOUR_MS - 90 * MINUTE_MS,
                    false,
                )
            })
            .chain(
                (0..seed_briefs).map(|i| (now_ms - (seed_briefs - i) as i64 * 3 * HOUR_MS, true)),
            )
            .collect();
        seeded.sort_unstable();
        let (mut conversations, mut briefs) = (0usize, 0usize);
        for (at_ms, is_brief) in seeded {
            if is_brief {
                // Every third seeded visitor declines to give an email, as real ones do.
                let with_email = briefs % 3 != 2;
                let n = store.next_contact();
                let answers = content::contact(&mut store.rng, n, with_email);
                store.insert_scripted_brief(answers, at_ms);
                briefs += 1;
            } else {
                store.seed_support_conversation(conversations, at_ms);
                conversations += 1;
            }
        }
        store
    }

    fn seed_support_conversation(&mut self, i: usize, at_ms: i64) {
        let agent = self.first_active(SUPPORT).unwrap_or(0);
        let status = if i % 3 == 1 { CLOSED } else { ACTIVE };
        let conv = self.new_conversation(agent, status, at_ms);
        let exchanges = 1 + self.rng.below(3);
        for k in 0..exchanges {
            let (question, answer) = content::support_exchange(&mut self.rng);
            let t = at_ms + k as i64 * MINUTE_MS;
            self.push_message(conv, "user", question.to_owned(), t);
            self.push_message(conv, "assistant", answer.to_owned(), t + 2_000);
        }
    }

    fn next_contact(&mut self) -> u64 {
        self.contacts += 1;
        self.contacts
    }

    // ---- agents -------------------------------------------------------------------

    pub(crate) fn agent_infos(&self) -> Vec<AgentInfo> {
        self.agents
            .iter()
            .map(|a| AgentInfo {
                id: a.id.clone(),
                name: a.name.to_owned(),
                kind: a.kind.to_owned(),
                is_active: a.is_active,
            })
            .collect()
    }

    fn first_active(&self, kind: &str) -> Option<usize> {
        self.agents
            .iter()
            .position(|a| a.is_active && a.kind == kind)
    }

    pub(crate) fn active_agent_id(&self, kind: &str) -> Option<&str> {
        self.first_active(kind).map(|i| self.agents[i].id.as_str())
    }

    fn find_agent(&self, id: &str) -> Option<usize> {
        // A handful of agents: a scan beats a map.
        self.agents.iter().position(|a| a.id == id)
    }

    /// The agent a request names, if it exists (404), has the right type and is active (400).
    pub(crate) fn usable_agent(&self, id: &str, kind: &'static str) -> Result<usize, ApiError> {
        let index = self
            .find_agent(id)
            .ok_or_else(|| ApiError::not_found("Agent not found"))?;
        let agent = &self.agents[index];
        if agent.kind != kind {
            return Err(ApiError::bad_request(match kind {
                SUPPORT => "This endpoint only works with Support agents",
                DISCOVERY => "This endpoint only works with Discovery agents",
                _ => "This endpoint only works with Meeting agents",
            }));
        }
        if !agent.is_active {
            return Err(ApiError::bad_request("Agent is not active"));
        }
        Ok(index)
    }

    pub(crate) fn next_meeting_id(&mut self) -> String {
        self.ids.next(IdKind::Meeting)
    }

    // ---- conversations --------------------------------------------------------------

    fn new_conversation(&mut self, agent: usize, status: &'static str, at_ms: i64) -> usize {
        let id = self.ids.next(IdKind::Conversation);
        let index = self.conversations.len();
        self.conversation_ids.insert(id.clone(), index);
        self.conversations.push(Conversation {
            id,
            agent,
            status: Cow::Borrowed(status),
            created_ms: at_ms,
            updated_ms: at_ms,
            touch: 0,
            script: None,
            messages: Vec::new(),
            discovery: None,
        });
        self.touch(index, at_ms);
        index
    }

    /// Marks a conversation updated at `at_ms` — never earlier than, nor equal to, its last
    /// update, so a client comparing `updatedAt` always sees a change.
    fn touch(&mut self, conv: usize, at_ms: i64) {
        let c = &mut self.conversations[conv];
        if c.touch != 0 {
            c.updated_ms = at_ms.max(c.updated_ms + 1);
            self.recency.remove(&c.touch);
        }
        self.touches += 1;
        c.touch = self.touches;
        self.recency.insert(self.touches, conv);
    }

    fn push_message(&mut self, conv: usize, role: &str, content: String, at_ms: i64) {
        self.touch(conv, at_ms);
        let c = &mut self.conversations[conv];
        let role = match role {
            "user" => Cow::Borrowed("user"),
            "assistant" => Cow::Borrowed("assistant"),
            other => Cow::Owned(other.to_owned()),
        };
        c.messages.push(Message {
            role,
            content,
            at_ms: c.updated_ms,
        });
    }

    fn conversation_index(&self, id: &str) -> Result<usize, ApiError> {
        self.conversation_ids
            .get(id)
            .copied()
            .ok_or_else(|| ApiError::not_found("Conversation not found"))
    }

    pub(crate) fn add_conversation(
        &mut self,
        agent_id: &str,
        messages: &[(&str, &str)],
        now_ms: i64,
    ) -> Result<String, ApiError> {
        let agent = self
            .find_agent(agent_id)
            .ok_or_else(|| ApiError::not_found("Agent not found"))?;
        let conv = self.new_conversation(agent, ACTIVE, now_ms);
        for (role, content) in messages {
            self.push_message(conv, role, (*content).to_owned(), now_ms);
        }
        Ok(self.conversations[conv].id.clone())
    }

    /// Appends a message; returns the new message count.
    pub(crate) fn add_message(
        &mut self,
        conversation_id: &str,
        role: &str,
        content: &str,
        now_ms: i64,
    ) -> Result<usize, ApiError> {
        let conv = self.conversation_index(conversation_id)?;
        self.push_message(conv, role, content.to_owned(), now_ms);
        Ok(self.conversations[conv].message_count())
    }

    /// Keeps only the first `keep` messages, as a vendor that deletes or edits history
    /// might; an update like any other. Returns the new message count.
    pub(crate) fn truncate_messages(
        &mut self,
        conversation_id: &str,
        keep: usize,
        now_ms: i64,
    ) -> Result<usize, ApiError> {
        let conv = self.conversation_index(conversation_id)?;
        let scripted = if self.conversations[conv].script.is_some() {
            SCRIPT_LEN
        } else {
            0
        };
        // A scripted conversation renders its first messages from its brief: they stay.
        if keep < scripted {
            return Err(ApiError::bad_request(format!(
                "this conversation's first {scripted} messages come from its brief; keep at least {scripted}"
            )));
        }
        self.conversations[conv].messages.truncate(keep - scripted);
        self.touch(conv, now_ms);
        Ok(self.conversations[conv].message_count())
    }

    /// A status change is an update, as it would be in the vendor's database.
    pub(crate) fn set_status(
        &mut self,
        conversation_id: &str,
        status: &str,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let conv = self.conversation_index(conversation_id)?;
        self.conversations[conv].status = match status {
            ACTIVE => Cow::Borrowed(ACTIVE),
            CLOSED => Cow::Borrowed(CLOSED),
            other => Cow::Owned(other.to_owned()),
        };
        self.touch(conv, now_ms);
        Ok(())
    }

    /// The conversation `id`, if it belongs to `agent` (another agent's is "not found",
    /// as it would be to a client that cannot see it).
    fn conversation_of(&self, id: &str, agent: usize) -> Result<usize, ApiError> {
        let conv = self.conversation_index(id)?;
        if self.conversations[conv].agent != agent {
            return Err(ApiError::not_found("Conversation not found"));
        }
        Ok(conv)
    }

    pub(crate) fn chat(
        &mut self,
        agent_id: &str,
        message: &str,
        conversation_id: Option<&str>,
        now_ms: i64,
    ) -> Result<ChatOutcome, ApiError> {
        let agent = self.usable_agent(agent_id, SUPPORT)?;
        let conv = match conversation_id {
            Some(id) => self.conversation_of(id, agent)?,
            None => self.new_conversation(agent, ACTIVE, now_ms),
        };
        let reply = content::support_reply(message);
        self.push_message(conv, "user", message.to_owned(), now_ms);
        self.push_message(conv, "assistant", reply.to_owned(), now_ms);
        Ok(ChatOutcome {
            reply,
            conversation_id: self.conversations[conv].id.clone(),
        })
    }

    /// One step of the Discovery flow. The first message opens the conversation and is
    /// answered with the first question; each later message answers the pending question.
    /// After the last answer the conversation closes and its brief is created.
    pub(crate) fn discover(
        &mut self,
        agent_id: &str,
        message: &str,
        conversation_id: Option<&str>,
        now_ms: i64,
    ) -> Result<DiscoverOutcome, ApiError> {
        let agent = self.usable_agent(agent_id, DISCOVERY)?;
        let conv = match conversation_id {
            Some(id) => self.conversation_of(id, agent)?,
            None => self.new_conversation(agent, ACTIVE, now_ms),
        };
        let c = &mut self.conversations[conv];
        let finished = c.script.is_some() || c.discovery.as_ref().is_some_and(|d| d.completed);
        if finished {
            return Err(ApiError::bad_request(
                "This discovery conversation is already completed",
            ));
        }
        let answered = match &mut c.discovery {
            // Opening (or a conversation created by other means): this message asks nothing.
            None => {
                c.discovery = Some(Discovery {
                    replies: Vec::new(),
                    completed: false,
                });
                0
            }
            Some(d) => {
                d.replies.push(message.to_owned());
                d.replies.len()
            }
        };
        self.push_message(conv, "user", message.to_owned(), now_ms);
        let total = QUESTIONS.len();
        let completed = answered == total;
        let reply = if completed {
            content::DISCOVERY_DONE
        } else {
            QUESTIONS[answered]
        };
        self.push_message(conv, "assistant", reply.to_owned(), now_ms);
        if completed {
            let c = &mut self.conversations[conv];
            let answers = match &mut c.discovery {
                Some(d) => {
                    d.completed = true;
                    Answers::from_replies(&d.replies)
                }
                None => Answers::from_replies(&[]),
            };
            c.status = Cow::Borrowed(CLOSED);
            let created_ms = c.updated_ms;
            self.insert_brief(conv, answers, created_ms);
        }
        Ok(DiscoverOutcome {
            reply,
            conversation_id: self.conversations[conv].id.clone(),
            progress: ((answered * 100 + total / 2) / total) as u32,
            completed,
        })
    }

    // ---- briefs -------------------------------------------------------------------------

    pub(crate) fn add_brief(&mut self, spec: BriefSpec, now_ms: i64) -> String {
        let (role, need) = content::role_and_need(&mut self.rng);
        let answers = Answers {
            name: spec.name,
            email: spec.email,
            company: spec.company,
            role,
            need,
            budget: spec.budget,
        };
        let brief = self.insert_scripted_brief(answers, now_ms);
        self.briefs[brief].id.clone()
    }

    pub(crate) fn add_generated_briefs(&mut self, count: usize, now_ms: i64) -> Vec<String> {
        self.briefs.reserve(count);
        self.conversations.reserve(count);
        (0..count)
            .map(|_| {
                let n = self.next_contact();
                let answers = content::contact(&mut self.rng, n, true);
                let brief = self.insert_scripted_brief(answers, now_ms);
                self.briefs[brief].id.clone()
            })
            .collect()
    }

    /// A brief created `brief_ms` with a closed Discovery conversation that led up to it.
    fn insert_scripted_brief(&mut self, answers: Answers, brief_ms: i64) -> usize {
        let agent = self.first_active(DISCOVERY).unwrap_or(0);
        let started = brief_ms - (SCRIPT_LEN as i64 - 1) * SCRIPT_STEP_MS;
        let conv = self.new_conversation(agent, CLOSED, started);
        let brief = self.insert_brief(conv, answers, brief_ms);
        let c = &mut self.conversations[conv];
        c.script = Some(brief);
        c.discovery = Some(Discovery {
            replies: Vec::new(),
            completed: true,
        });
        self.touch(conv, brief_ms);
        brief
    }

    fn insert_brief(&mut self, conv: usize, answers: Answers, created_ms: i64) -> usize {
        let id = self.ids.next(IdKind::Brief);
        let summary = answers.summary();
        let c = &self.conversations[conv];
        let item = BriefItemJson {
            id: &id,
            agent_id: &self.agents[c.agent].id,
            conversation_id: &c.id,
            summary: &summary,
            created_at: rfc3339(created_ms),
        };
        let list_item = serde_json::to_string(&item)
            .unwrap_or_default()
            .into_boxed_str();
        self.brief_list_bytes += list_item.len() + 1;
        let index = self.briefs.len();
        self.brief_ids.insert(id.clone(), index);
        self.briefs.push(Brief {
            id,
            conversation: conv,
            answers,
            summary,
            list_item,
        });
        index
    }

    // ---- rendering ----------------------------------------------------------------------

    fn messages_json<'a>(&'a self, c: &'a Conversation) -> Vec<MessageJson<'a>> {
        let script = c.script.map(|b| &self.briefs[b].answers);
        let scripted = script.into_iter().flat_map(|answers| {
            (0..SCRIPT_LEN).map(move |i| {
                let (role, content) = content::script_message(answers, i);
                MessageJson {
                    role,
                    content,
                    created_at: rfc3339(c.created_ms + i as i64 * SCRIPT_STEP_MS),
                }
            })
        });
        scripted
            .chain(c.messages.iter().map(|m| MessageJson {
                role: &m.role,
                content: &m.content,
                created_at: rfc3339(m.at_ms),
            }))
            .collect()
    }

    pub(crate) fn agents_json(&self, malformed: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 * (self.agents.len() + malformed));
        out.extend_from_slice(br#"{"agents":["#);
        let mut first = true;
        for a in &self.agents {
            separate(&mut out, &mut first);
            let item = AgentJson {
                id: &a.id,
                name: a.name,
                kind: a.kind,
                is_active: a.is_active,
                description: a.description,
                created_at: rfc3339(a.created_ms),
            };
            write_json(&mut out, &item);
        }
        let agent_id = &self.agents[0].id;
        for i in 0..malformed {
            separate(&mut out, &mut first);
            write_json(&mut out, &malformed_item("agent", i, agent_id));
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// Most recently updated first; `agent_filter` naming no agent gives an empty list.
    pub(crate) fn conversations_json(
        &self,
        agent_filter: Option<&str>,
        limit: usize,
        malformed: usize,
    ) -> Vec<u8> {
        let agent = agent_filter.map(|id| self.find_agent(id));
        let mut out = Vec::with_capacity(200 * (limit.min(self.conversations.len()) + malformed));
        out.extend_from_slice(br#"{"conversations":["#);
        let mut first = true;
        if !matches!(agent, Some(None)) {
            let agent = agent.flatten();
            let listed = self
                .recency
                .values()
                .rev()
                .map(|&i| &self.conversations[i])
                .filter(|c| agent.is_none_or(|a| c.agent == a))
                .take(limit);
            for c in listed {
                separate(&mut out, &mut first);
                let item = ConversationItemJson {
                    id: &c.id,
                    agent_id: &self.agents[c.agent].id,
                    status: &c.status,
                    created_at: rfc3339(c.created_ms),
                    updated_at: self.list_fields.then(|| rfc3339(c.updated_ms)),
                    message_count: self.list_fields.then(|| c.message_count()),
                };
                write_json(&mut out, &item);
            }
        }
        let agent_id = &self.agents[0].id;
        for i in 0..malformed {
            separate(&mut out, &mut first);
            write_json(&mut out, &malformed_item("conversation", i, agent_id));
        }
        out.extend_from_slice(b"]}");
        out
    }

    pub(crate) fn conversation_json(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        let c = &self.conversations[self.conversation_index(id)?];
        let body = ConversationJson {
            id: &c.id,
            agent_id: &self.agents[c.agent].id,
            status: &c.status,
            messages: self.messages_json(c),
        };
        Ok(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Newest first, all of them: the docs give `/briefs` no parameters, so there is no
    /// `limit` to honour. The items were rendered at creation; this is a concatenation.
    pub(crate) fn briefs_json(&self, limit: usize, malformed: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.brief_list_bytes.min(limit.saturating_mul(400)) + 200 * malformed + 16,
        );
        out.extend_from_slice(br#"{"briefs":["#);
        let mut first = true;
        for b in self.briefs.iter().rev().take(limit) {
            separate(&mut out, &mut first);
            out.extend_from_slice(b.list_item.as_bytes());
        }
        let agent_id = self
            .first_active(DISCOVERY)
            .map_or(self.agents[0].id.as_str(), |i| &self.agents[i].id);
        for i in 0..malformed {
            separate(&mut out, &mut first);
            write_json(&mut out, &malformed_item("brief", i, agent_id));
        }
        out.extend_from_slice(b"]}");
        out
    }

    pub(crate) fn brief_json(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        let index = *self
            .brief_ids
            .get(id)
            .ok_or_else(|| ApiError::not_found("Brief not found"))?;
        let b = &self.briefs[index];
        let c = &self.conversations[b.conversation];
        let body = BriefJson {
            id: &b.id,
            summary: &b.summary,
            answers: &b.answers,
            conversation: BriefConversationJson {
                id: &c.id,
                messages: self.messages_json(c),
            },
        };
        Ok(serde_json::to_vec(&body).unwrap_or_default())
    }
}

fn separate(out: &mut Vec<u8>, first: &mut bool) {
    if !std::mem::take(first) {
        out.push(b',');
    }
}

fn write_json<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    // Writing into a Vec cannot fail, and these types serialise infallibly.
    let _ = serde_json::to_writer(&mut *out, value);
    let _ = out.flush();
}

/// A list item a tolerant client must skip: cycling through a numeric id, a missing id
/// and a non-string `createdAt` — the oddities the design asks clients to survive.
fn malformed_item(kind: &str, i: usize, agent_id: &str) -> serde_json::Value {
    let mut item = match kind {
        "agent" => json!({
            "name": "Malformed agent", "type": SUPPORT, "isActive": true,
            "description": "An item a tolerant client skips",
        }),
        "conversation" => json!({ "agentId": agent_id, "status": ACTIVE }),
        _ => json!({
            "agentId": agent_id,
            "conversationId": "cm2malformed",
            "summary": "Malformed brief",
        }),
    };
    let fields = item.as_object_mut().expect("malformed items are objects");
    match i % 3 {
        0 => {
            fields.insert("id".into(), json!(900_000 + i));
            fields.insert("createdAt".into(), json!("2026-01-01T00:00:00.000Z"));
        }
        1 => {
            fields.insert("createdAt".into(), json!("2026-01-01T00:00:00.000Z"));
        }
        _ => {
            fields.insert("id".into(), json!(format!("cm9malformed{i:013}")));
            fields.insert("createdAt".into(), json!(1_767_225_600 + i));
        }
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000_000;

    fn parse(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    #[test]
    fn seeding_is_deterministic_and_mixes_statuses() {
        let a = Store::new(42, 3, 3, true, NOW);
        let b = Store::new(42, 3, 3, true, NOW);
        assert_eq!(a.briefs_json(usize::MAX, 0), b.briefs_json(usize::MAX, 0));
        assert_eq!(
            a.conversations_json(None, 50, 0),
            b.conversations_json(None, 50, 0)
        );
        let list = parse(&a.conversations_json(None, 50, 0));
        let statuses: Vec<_> = list["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["status"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(statuses.len(), 6);
        assert!(statuses.iter().any(|s| s == ACTIVE) && statuses.iter().any(|s| s == CLOSED));
    }

    #[test]
    fn conversations_list_newest_update_first_and_honours_limit() {
        let mut s = Store::new(1, 3, 0, true, NOW);
        let support = s.active_agent_id(SUPPORT).unwrap().to_owned();
        let list = parse(&s.conversations_json(None, 50, 0));
        let oldest = list["conversations"][2]["id"].as_str().unwrap().to_owned();
        s.add_message(&oldest, "user", "hello again", NOW).unwrap();
        let list = parse(&s.conversations_json(Some(&support), 1, 0));
        let items = list["conversations"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["id"], oldest.as_str());
        assert_eq!(items[0]["updatedAt"], rfc3339(NOW));
        assert!(
            parse(&s.conversations_json(Some("cm1nope"), 50, 0))["conversations"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_scripted_brief_conversation_has_its_messages_and_counts_appended_ones() {
        let mut s = Store::new(1, 0, 0, true, NOW);
        let id = s.add_brief(
            BriefSpec {
                email: None,
                ..BriefSpec::default()
            },
            NOW,
        );
        let detail = parse(&s.brief_json(&id).unwrap());
        assert!(detail["answers"].get("email").is_none());
        assert_eq!(detail["answers"]["name"], "John Smith");
        let conv = detail["conversation"]["id"].as_str().unwrap().to_owned();
        assert_eq!(
            detail["conversation"]["messages"].as_array().unwrap().len(),
            SCRIPT_LEN
        );
        assert_eq!(
            s.add_message(&conv, "user", "one more thing", NOW + 5)
                .unwrap(),
            SCRIPT_LEN + 1
        );
    }

    #[test]
    fn a_briefs_limit_keeps_the_newest() {
        let mut s = Store::new(1, 0, 0, true, NOW);
        let ids = s.add_generated_briefs(10, NOW);
        let list = parse(&s.briefs_json(3, 0));
        let items = list["briefs"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["id"], ids[9].as_str());
    }

    #[test]
    fn generated_briefs_have_distinct_emails_and_list_newest_first() {
        let mut s = Store::new(1, 0, 0, true, NOW);
        let ids = s.add_generated_briefs(500, NOW);
        let list = parse(&s.briefs_json(usize::MAX, 0));
        let items = list["briefs"].as_array().unwrap();
        assert_eq!(items.len(), 500);
        assert_eq!(items[0]["id"], ids[499].as_str());
        let emails: std::collections::HashSet<_> = ids
            .iter()
            .map(|id| {
                parse(&s.brief_json(id).unwrap())["answers"]["email"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(emails.len(), 500);
    }
}
