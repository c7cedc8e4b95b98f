//! `escalation.yaml`: the DR plan's contacts and, per priority, who is told when an incident
//! opens, who is paged when automation fails or a guard refuses to act, and who is told as the
//! incident stays unacknowledged and unresolved (tiers, timed as a share of the rule's RTO or
//! as a fixed delay).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::read::{self, Errors, Fields};
use super::yaml;
use super::{names_of, Priority, RuleError, Source};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The role, as the DR plan names it ("On-call Engineer").
    #[serde(default)]
    pub name: String,
    pub email: String,
    /// A Slack user id (U…/W…) when known; otherwise it is looked up by e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_user: Option<String>,
    /// The Slack users (U…/W…) whose answers count for an `approve` step that asks this
    /// contact; empty: anyone in the channel may answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slack_users: Vec<String>,
}

/// When a tier fires: a share of the RTO (`50%`) or a delay (`10m`) after the incident opened.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum TierAfter {
    RtoShare(f64),
    Delay(#[serde(with = "super::duration_text")] Duration),
}

impl TierAfter {
    pub fn delay(self, rto: Duration) -> Duration {
        match self {
            TierAfter::RtoShare(share) => rto.mul_f64(share),
            TierAfter::Delay(d) => d,
        }
    }

    /// `50%` or `10m`; the error starts with the text in backticks.
    fn parse(s: &str) -> Result<TierAfter, String> {
        if let Some(p) = s.trim().strip_suffix('%') {
            let pct: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("`{s}` is not a share of the RTO such as 50%"))?;
            if !(0.0..=1000.0).contains(&pct) {
                return Err(format!("`{s}` is not a share between 0% and 1000%"));
            }
            Ok(TierAfter::RtoShare(pct / 100.0))
        } else {
            super::duration_text::parse(s)
                .map(TierAfter::Delay)
                .map_err(|_| format!("`{s}` is neither a share of the RTO (50%) nor a delay (10m)"))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tier {
    pub after: TierAfter,
    pub notify: Vec<String>,
    /// Only for rules marked `customer_impacting` (the DR plan's product-owner rule).
    pub customer_impacting_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Policy {
    pub notify: Vec<String>,
    pub page: Vec<String>,
    pub tiers: Vec<Tier>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Escalation {
    pub contacts: BTreeMap<String, Contact>,
    pub policies: BTreeMap<Priority, Policy>,
}

impl Escalation {
    pub fn contact_names(&self) -> String {
        names_of(&self.contacts)
    }

    pub fn policy(&self, p: Priority) -> &Policy {
        // compile() refuses a file without all four priorities.
        static EMPTY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        self.policies
            .get(&p)
            .unwrap_or_else(|| EMPTY.get_or_init(Policy::default))
    }
}

/// Reads `escalation.yaml`. Gives the contacts and policies it could read even when some
/// were wrong (the rules' `owner` and `page` checks need the names; nothing else runs on a
/// set with errors), and `None` only when not even the contacts could be read.
pub(super) fn compile(src: &Source, errors: &mut Vec<RuleError>) -> Option<Escalation> {
    let mut e = Errors::new(&src.path, &src.text, errors);
    let doc = match yaml::parse(&src.text) {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            e.at(
                None,
                "the file is empty; it holds the contacts and escalation policies (copy the one shipped in rules/)",
            );
            return None;
        }
        Err(syntax) => {
            e.at(syntax.pos, syntax.message);
            return None;
        }
    };
    let top = Fields::of_named(
        &mut e,
        &doc,
        "",
        "the file",
        " with `contacts:` and `policies:`",
    )?;
    top.check_keys(&mut e, Some(&["contacts", "policies"]));

    let contacts = top
        .require(&mut e, "contacts", " (who can be told and paged)")
        .and_then(|n| read_contacts(&mut e, n));

    let mut policies = BTreeMap::new();
    if let Some(n) = top.require(&mut e, "policies", " (one per priority, P1 to P4)") {
        if let Some(f) = Fields::of(&mut e, n, "policies", " of P1, P2, P3, P4 to policies") {
            f.check_keys(&mut e, None);
            for (key, key_node, value) in f.entries() {
                let Some(priority) = Priority::parse(key) else {
                    e.at(
                        key_node.pos,
                        format!("unknown policy `{key}` (the priorities are P1, P2, P3, P4)"),
                    );
                    continue;
                };
                if let Some(policy) = read_policy(&mut e, value, &f.child(key), contacts.as_ref()) {
                    policies.entry(priority).or_insert(policy);
                }
            }
            for p in Priority::ALL {
                if !f.entries().any(|(k, _, _)| Priority::parse(k) == Some(p)) {
                    e.at(
                        f.pos,
                        format!("missing key `policies.{p}` (every priority needs a policy)"),
                    );
                }
            }
        }
    }
    Some(Escalation {
        contacts: contacts?,
        policies,
    })
}

fn read_contacts(e: &mut Errors<'_>, n: &yaml::Node) -> Option<BTreeMap<String, Contact>> {
    let f = Fields::of(e, n, "contacts", " of names to contacts")?;
    f.check_keys(e, None);
    let mut contacts = BTreeMap::new();
    for (key, _, value) in f.entries() {
        let path = f.child(key);
        // A contact with a problem is still a name the rules may use; it is reported here,
        // not again at each rule that names it.
        let contact = read_contact(e, value, &path).unwrap_or(Contact {
            name: String::new(),
            email: String::new(),
            slack_user: None,
            slack_users: Vec::new(),
        });
        contacts.entry(key.to_string()).or_insert(contact);
    }
    Some(contacts)
}

fn read_contact(e: &mut Errors<'_>, n: &yaml::Node, path: &str) -> Option<Contact> {
    let f = Fields::of(e, n, path, " such as { email: oncall@example.org }")?;
    f.check_keys(e, Some(&["name", "email", "slack_user", "slack_users"]));
    let name = f
        .get("name")
        .and_then(|n| read::string(e, n, &f.child("name")));
    let email = f.require(e, "email", "").and_then(|n| {
        let what = f.child("email");
        let email = read::string(e, n, &what)?;
        if !email.contains('@') {
            e.at(n.pos, format!("{what} `{email}` is not an e-mail address"));
            return None;
        }
        Some(email)
    });
    let slack_user = f
        .get("slack_user")
        .and_then(|n| read::string(e, n, &f.child("slack_user")));
    let slack_users = match f.get("slack_users") {
        None => Some(Vec::new()),
        Some(n) => slack_user_ids(e, n, &f.child("slack_users")),
    };
    Some(Contact {
        name: name.unwrap_or_default(),
        email: email?,
        slack_user,
        slack_users: slack_users?,
    })
}

/// Whether `id` is a Slack user id: `U` or `W` and then upper-case letters and digits.
pub fn is_slack_user_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some('U' | 'W'))
        && id.len() >= 3
        && id.len() <= 32
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// `slack_users: [U…, W…]`: each a well-formed Slack user id.
fn slack_user_ids(e: &mut Errors<'_>, n: &yaml::Node, what: &str) -> Option<Vec<String>> {
    let before = e.count();
    let mut ids = Vec::new();
    for item in read::list(e, n, what)? {
        let Some(id) = read::string(e, item, what) else {
            continue;
        };
        if is_slack_user_id(&id) {
            ids.push(id);
        } else {
            e.at(
                item.pos,
                format!("{what}: `{id}` is not a Slack user id (U… or W…, as in the profile's \"Copy member ID\")"),
            );
        }
    }
    (e.count() == before).then_some(ids)
}

fn read_policy(
    e: &mut Errors<'_>,
    n: &yaml::Node,
    path: &str,
    contacts: Option<&BTreeMap<String, Contact>>,
) -> Option<Policy> {
    let f = if n.is_null() {
        Fields::empty(n.pos, path)
    } else {
        Fields::of(e, n, path, " such as { notify: [oncall], page: [oncall] }")?
    };
    let before = e.count();
    f.check_keys(e, Some(&["notify", "page", "tiers"]));
    let who = |e: &mut Errors<'_>, key: &str| {
        f.get(key)
            .and_then(|n| read::contact_list(e, n, &f.child(key), contacts, ""))
            .unwrap_or_default()
    };
    let notify = who(e, "notify");
    let page = who(e, "page");
    let mut tiers = Vec::new();
    if let Some(n) = f.get("tiers") {
        let what = f.child("tiers");
        for t in read::list(e, n, &what).unwrap_or_default() {
            if let Some(tier) = read_tier(e, t, &what, contacts) {
                tiers.push(tier);
            }
        }
    }
    (e.count() == before).then_some(Policy {
        notify,
        page,
        tiers,
    })
}

fn read_tier(
    e: &mut Errors<'_>,
    n: &yaml::Node,
    path: &str,
    contacts: Option<&BTreeMap<String, Contact>>,
) -> Option<Tier> {
    let f = Fields::of(e, n, path, " such as { after: 50%, notify: [eng-lead] }")?;
    f.check_keys(e, Some(&["after", "notify", "customer_impacting_only"]));
    let after = f
        .require(
            e,
            "after",
            " (a share of the RTO such as 50%, or a delay such as 10m)",
        )
        .and_then(|n| {
            let what = f.child("after");
            let text = read::string(e, n, &what)?;
            TierAfter::parse(&text)
                .map_err(|why| e.at(n.pos, format!("{what} {why}")))
                .ok()
        });
    let notify = f
        .require(e, "notify", "")
        .and_then(|n| read::contact_list(e, n, &f.child("notify"), contacts, ""));
    let customer_impacting_only = f
        .get("customer_impacting_only")
        .and_then(|n| read::boolean(e, n, &f.child("customer_impacting_only")))
        .unwrap_or(false);
    Some(Tier {
        after: after?,
        notify: notify?,
        customer_impacting_only,
    })
}
