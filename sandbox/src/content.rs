//! The words the sandbox says: invented contacts, discovery questions, support replies and
//! meeting notes. Plausible enough for demos, and shaped like the docs' examples
//! ("John Smith, CEO of TechStart. Looking for … Budget: $50-100/month.").

use serde::Serialize;

use crate::ids::Rng;

const FIRST_NAMES: &[&str] = &[
    "John", "Maria", "Liam", "Sofia", "Noah", "Emma", "Lucas", "Chloe", "Ethan", "Amelia", "Mateo",
    "Olivia", "Hugo", "Ines", "Leo", "Clara", "Oscar", "Nora", "Felix", "Alice",
];

const LAST_NAMES: &[&str] = &[
    "Smith", "Garcia", "Martin", "Rossi", "Novak", "Dubois", "Schmidt", "Jensen", "Kowalski",
    "Silva", "Brown", "Lopez", "Weber", "Moreau", "Fischer", "Costa", "Nielsen", "Romano",
    "Walker", "Bianchi",
];

const COMPANIES: &[&str] = &[
    "TechStart",
    "Brightline Dental",
    "Nordic Bikes",
    "Atlas Logistics",
    "Green Leaf Cafe",
    "Summit Legal",
    "Pixel Forge",
    "Harbor Realty",
    "BluePeak Fitness",
    "Cedar Accounting",
    "Lumen Studio",
    "Oakridge Vets",
];

const ROLES: &[&str] = &[
    "CEO",
    "Founder",
    "Head of Operations",
    "Marketing Manager",
    "CTO",
    "Office Manager",
    "Customer Success Lead",
    "Owner",
];

const NEEDS: &[&str] = &[
    "AI chatbot for support",
    "lead qualification on our website",
    "meeting notes for the sales team",
    "24/7 answers to booking questions",
    "an FAQ assistant for our web shop",
    "automated intake for new clients",
];

const BUDGETS: &[&str] = &[
    "$50-100/month",
    "$100-250/month",
    "$250-500/month",
    "under $50/month",
    "$500+/month",
];

/// A brief's answers, in the order the Discovery agent asks for them; serialised as the
/// detail's `answers` object (without `email` when the visitor gave none).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Answers {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub company: String,
    pub role: String,
    pub need: String,
    pub budget: String,
}

impl Answers {
    /// The summary line the list shows. It never contains the email: the docs' example
    /// doesn't, and clients must find it in `answers` (or not at all).
    pub(crate) fn summary(&self) -> String {
        format!(
            "{}, {} of {}. Looking for {}. Budget: {}.",
            self.name, self.role, self.company, self.need, self.budget
        )
    }

    /// What the contact typed in reply to question `i` of [`QUESTIONS`].
    pub(crate) fn reply_to(&self, i: usize) -> &str {
        match i {
            0 => &self.name,
            1 => self.email.as_deref().unwrap_or(NO_EMAIL_REPLY),
            2 => &self.company,
            3 => &self.role,
            4 => &self.need,
            _ => &self.budget,
        }
    }

    /// Answers from a live `/discover` conversation, one reply per question.
    pub(crate) fn from_replies(replies: &[String]) -> Self {
        let get = |i: usize| {
            replies
                .get(i)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let email = get(1);
        Self {
            name: get(0),
            email: looks_like_email(&email).then_some(email),
            company: get(2),
            role: get(3),
            need: get(4),
            budget: get(5),
        }
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => !local.is_empty() && domain.contains('.') && !s.contains(' '),
        None => false,
    }
}

/// An invented contact. `n` is a sandbox-wide counter that goes into the email, so every
/// generated contact is distinct even when names repeat.
pub(crate) fn contact(rng: &mut Rng, n: u64, with_email: bool) -> Answers {
    let first = rng.pick(FIRST_NAMES);
    let last = rng.pick(LAST_NAMES);
    let company = rng.pick(COMPANIES);
    let domain: String = company
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Answers {
        name: format!("{first} {last}"),
        email: with_email.then(|| {
            format!(
                "{}.{}{n}@{domain}.example",
                first.to_ascii_lowercase(),
                last.to_ascii_lowercase()
            )
        }),
        company: (*company).to_owned(),
        role: (*rng.pick(ROLES)).to_owned(),
        need: (*rng.pick(NEEDS)).to_owned(),
        budget: (*rng.pick(BUDGETS)).to_owned(),
    }
}

/// Role and need for a [`crate::BriefSpec`], which only fixes name, email, company and budget.
pub(crate) fn role_and_need(rng: &mut Rng) -> (String, String) {
    ((*rng.pick(ROLES)).to_owned(), (*rng.pick(NEEDS)).to_owned())
}

/// What a visitor says to open a Discovery conversation.
pub(crate) const DISCOVERY_OPENER: &str = "Hi, I'd like to learn more about what you offer.";

/// The Discovery agent's questions, one per answer field, asked in this order.
pub(crate) const QUESTIONS: [&str; 6] = [
    "Hi! I'll ask a few quick questions so our team can prepare. What's your name?",
    "Thanks! What's the best email address to reach you?",
    "Which company are you with?",
    "What is your role there?",
    "What are you looking for help with?",
    "What is your monthly software budget?",
];

pub(crate) const DISCOVERY_DONE: &str =
    "Thank you! That's everything we need — our team will be in touch shortly.";

const NO_EMAIL_REPLY: &str = "I'd rather not share my email yet.";

/// Messages in a scripted Discovery conversation: opener, question/answer pairs, thanks.
pub(crate) const SCRIPT_LEN: usize = 2 + 2 * QUESTIONS.len();

/// The `i`-th message of a scripted Discovery conversation, as (role, content).
pub(crate) fn script_message(answers: &Answers, i: usize) -> (&'static str, &str) {
    match i {
        0 => ("user", DISCOVERY_OPENER),
        i if i == SCRIPT_LEN - 1 => ("assistant", DISCOVERY_DONE),
        i if i % 2 == 1 => ("assistant", QUESTIONS[(i - 1) / 2]),
        i => ("user", answers.reply_to(i / 2 - 1)),
    }
}

/// Support topics: keywords that trigger the answer, and a question a visitor might ask.
const SUPPORT_TOPICS: &[(&[&str], &str, &str)] = &[
    (
        &["hour", "open", "close"],
        "What are your business hours?",
        "We are open Monday to Friday, 9am-6pm.",
    ),
    (
        &["price", "cost", "plan", "much"],
        "How much does the Pro plan cost?",
        "The Pro plan is €49/month, billed monthly, and you can cancel at any time.",
    ),
    (
        &["refund", "cancel", "money back"],
        "Can I get a refund?",
        "Yes — if you cancel within 14 days we refund the unused month in full.",
    ),
    (
        &["ship", "deliver"],
        "Do you ship to Germany?",
        "Yes, we ship across the EU; delivery usually takes 2-4 business days.",
    ),
    (
        &["password", "log in", "login", "account"],
        "I can't log in to my account.",
        "Sorry about that! Use \"Forgot password\" on the login page and we'll email you a reset link.",
    ),
    (
        &["human", "person", "someone"],
        "Can I talk to a human?",
        "Of course — I've flagged this conversation and a team member will reply by email within one business day.",
    ),
    (
        &["product", "offer", "sell"],
        "What products do you offer?",
        "We offer AI agents for support, lead discovery and meeting notes, all managed from one dashboard.",
    ),
];

const DEFAULT_REPLY: &str = "Thanks for your message! I've noted it and our team will follow up if needed. Is there anything else I can help with?";

/// The Support agent's answer: the first topic whose keyword appears, else a polite default.
pub(crate) fn support_reply(message: &str) -> &'static str {
    let lower = message.to_lowercase();
    SUPPORT_TOPICS
        .iter()
        .find(|(keys, _, _)| keys.iter().any(|k| lower.contains(k)))
        .map_or(DEFAULT_REPLY, |(_, _, reply)| reply)
}

/// A seeded support exchange: (visitor question, agent answer).
pub(crate) fn support_exchange(rng: &mut Rng) -> (&'static str, &'static str) {
    let (_, question, answer) = rng.pick(SUPPORT_TOPICS);
    (question, answer)
}

/// The canned transcript of any meeting: speakers take turns, as a real transcript would.
pub(crate) fn meeting_transcript(title: &str) -> String {
    format!(
        "Speaker 1: Good morning, everyone — let's get started with \"{title}\".\n\
         Speaker 2: Sure. Last week we shipped the onboarding changes; sign-ups are up about ten percent.\n\
         Speaker 1: Great. Any blockers?\n\
         Speaker 3: The client still hasn't confirmed the budget for phase two.\n\
         Speaker 2: I can follow up with them today.\n\
         Speaker 1: Thanks. Let's also get the updated timeline out by Friday.\n\
         Speaker 3: I'll draft it and share it in the channel."
    )
}

/// The canned summary, with the "Action items:" section clients look for.
pub(crate) fn meeting_summary(title: &str) -> String {
    format!(
        "{title}: the team reviewed last week's onboarding release (sign-ups up ~10%) and \
         flagged the unconfirmed phase-two budget as the main risk.\n\n\
         Action items:\n\
         - Speaker 2: follow up with the client about the phase-two budget today.\n\
         - Speaker 3: draft the updated timeline and share it by Friday.\n\
         - Everyone: review the timeline before the next meeting."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scripted_discovery_alternates_and_ends_with_thanks() {
        let a = contact(&mut Rng::new(1), 0, false);
        let roles: Vec<_> = (0..SCRIPT_LEN).map(|i| script_message(&a, i).0).collect();
        assert_eq!(roles[0], "user");
        assert!(roles.windows(2).all(|w| w[0] != w[1]));
        assert_eq!(script_message(&a, 2).1, a.name);
        assert_eq!(script_message(&a, 12).1, a.budget);
        assert_eq!(script_message(&a, SCRIPT_LEN - 1).1, DISCOVERY_DONE);
        assert!(a.email.is_none() && !a.summary().contains('@'));
    }

    #[test]
    fn replies_without_an_at_sign_leave_no_email() {
        let replies: Vec<String> = ["Ann", "no thanks", "Co", "CEO", "bots", "$5"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert!(Answers::from_replies(&replies).email.is_none());
        let mut with = replies;
        with[1] = "ann@co.example".to_owned();
        assert_eq!(
            Answers::from_replies(&with).email.as_deref(),
            Some("ann@co.example")
        );
    }
}
