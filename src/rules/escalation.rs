//! `escalation.yaml`: the DR plan's contacts and, per priority, who is told when an incident
//! opens, who is paged when automation fails or a guard refuses to act, and who is told as the
//! incident stays unacknowledged and unresolved (tiers, timed as a share of the rule's RTO or
//! as a fixed delay).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::{names, Collector, Priority, RuleError, Source};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// The role, as the DR plan names it ("On-call Engineer").
    #[serde(default)]
    pub name: String,
    pub email: String,
    /// A Slack user id (U…/W…) when known; otherwise it is looked up by e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_user: Option<String>,
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

    fn parse(s: &str) -> Result<TierAfter, String> {
        if let Some(p) = s.trim().strip_suffix('%') {
            let pct: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("after {s:?}: a share of the RTO is written like 50%"))?;
            if !(0.0..=1000.0).contains(&pct) {
                return Err(format!(
                    "after {s:?}: the share must be between 0% and 1000%"
                ));
            }
            Ok(TierAfter::RtoShare(pct / 100.0))
        } else {
            super::duration_text::parse(s).map(TierAfter::Delay)
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
        names(&self.contacts)
    }

    pub fn policy(&self, p: Priority) -> &Policy {
        // compile() refuses a file without all four priorities.
        static EMPTY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        self.policies
            .get(&p)
            .unwrap_or_else(|| EMPTY.get_or_init(Policy::default))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    contacts: BTreeMap<String, Spanned<Contact>>,
    policies: BTreeMap<String, Spanned<RawPolicy>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    notify: Vec<String>,
    #[serde(default)]
    page: Vec<String>,
    #[serde(default)]
    tiers: Vec<Spanned<RawTier>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    after: String,
    notify: Vec<String>,
    #[serde(default)]
    customer_impacting_only: bool,
}

pub(super) fn compile(src: &Source, errors: &mut Vec<RuleError>) -> Option<Escalation> {
    let raw: RawEscalation = match serde_saphyr::from_str(&src.text) {
        Ok(r) => r,
        Err(e) => {
            errors.push(super::yaml_error(&src.path, &e));
            return None;
        }
    };
    let before = errors.len();
    let mut c = Collector {
        path: &src.path,
        errors,
    };
    let contacts: BTreeMap<String, Contact> = raw
        .contacts
        .into_iter()
        .map(|(k, v)| {
            if !v.value.email.contains('@') {
                c.err(
                    v.referenced.line(),
                    format!(
                        "contact {k:?}: email {:?} is not an e-mail address",
                        v.value.email
                    ),
                );
            }
            (k, v.value)
        })
        .collect();
    let known = names(&contacts);
    let check = |c: &mut Collector<'_>, line: u64, what: &str, list: &[String]| {
        for who in list {
            if !contacts.contains_key(who) {
                c.err(
                    line,
                    format!("{what}: {who:?} is not a contact (known: {known})"),
                );
            }
        }
    };
    let mut policies = BTreeMap::new();
    for (key, p) in raw.policies {
        let line = p.referenced.line();
        let Some(priority) = Priority::parse(&key) else {
            c.err(
                line,
                format!("policy {key:?}: priorities are P1, P2, P3 and P4"),
            );
            continue;
        };
        check(
            &mut c,
            line,
            &format!("policy {key}.notify"),
            &p.value.notify,
        );
        check(&mut c, line, &format!("policy {key}.page"), &p.value.page);
        let mut tiers = Vec::new();
        for t in p.value.tiers {
            let tline = t.referenced.line();
            check(
                &mut c,
                tline,
                &format!("policy {key} tier"),
                &t.value.notify,
            );
            match TierAfter::parse(&t.value.after) {
                Ok(after) => tiers.push(Tier {
                    after,
                    notify: t.value.notify,
                    customer_impacting_only: t.value.customer_impacting_only,
                }),
                Err(e) => c.err(tline, format!("policy {key} tier: {e}")),
            }
        }
        policies.insert(
            priority,
            Policy {
                notify: p.value.notify,
                page: p.value.page,
                tiers,
            },
        );
    }
    for p in Priority::ALL {
        if !policies.contains_key(&p) {
            c.err(
                1,
                format!("policies: {p} is missing; every priority P1..P4 needs a policy"),
            );
        }
    }
    (errors.len() == before).then_some(Escalation { contacts, policies })
}
