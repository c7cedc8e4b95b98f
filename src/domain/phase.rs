//! Where an incident is in its lifecycle, and a macro for the crate's text-valued enums.

/// A stored or configured value that names no variant of the enum it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {what} (expected one of: {expected})")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// An enum whose variants are written as fixed snake_case words (in SQLite, in JSON, in
/// logs): `as_str`, `FromStr` (an [`UnknownValue`] for anything else), `Display` and serde.
macro_rules! text_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident as $what:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::domain::UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::domain::UnknownValue {
                        what: $what,
                        value: s.to_owned(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }

        /// Compares with the stored word (`phase == "new"`).
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use text_enum;

text_enum! {
    /// What remediator is doing about an incident.
    pub enum Phase as "phase" {
        /// Opened by the intake; the engine has not decided yet.
        New = "new",
        /// No rule matches its labels: nothing to do.
        NoRule = "no_rule",
        /// A guard skipped the runbook without paging (dry-run, dedup, busy).
        Skipped = "skipped",
        /// A guard refused to act and people were paged.
        Escalated = "escalated",
        /// Its runbook is running.
        Remediating = "remediating",
        /// Its runbook finished and every step succeeded.
        Recovered = "recovered",
        /// Its runbook failed; `on_failure` ran and people were paged.
        Failed = "failed",
        /// remediator restarted while its runbook ran; a human took over.
        Interrupted = "interrupted",
        /// Resolved before remediator ever saw it firing: recorded, nothing done.
        Missed = "missed",
        /// Fleet mode: another replica claimed it and acts on it; this one watches its claim
        /// and tells nobody.
        Claimed = "claimed",
        /// Fleet mode: the replica that claimed it finished with it (its done marker).
        ActedElsewhere = "acted_elsewhere",
    }
}

text_enum! {
    /// Whether the alert still fires (Alertmanager's view).
    pub enum IncidentState as "incident state" {
        Open = "open",
        Resolved = "resolved",
    }
}

impl Phase {
    /// The few words the thread's root shows for this phase of an open incident.
    pub fn root_state(self) -> crate::domain::RootState {
        use crate::domain::RootState;
        match self {
            Phase::Remediating => RootState::Remediating,
            Phase::Recovered => RootState::Recovered,
            Phase::Failed | Phase::Escalated | Phase::Interrupted => RootState::Escalated,
            Phase::New
            | Phase::NoRule
            | Phase::Skipped
            | Phase::Missed
            | Phase::Claimed
            | Phase::ActedElsewhere => RootState::Firing,
        }
    }
}

text_enum! {
    /// Which list of a rule's steps a step belongs to.
    pub enum RunPhase as "run phase" {
        Main = "main",
        OnFailure = "on_failure",
        /// A rule's `fallback`: run when a `steps` step fails, it can still recover.
        Fallback = "fallback",
    }
}
