//! Durations as people write them in rule files (`30s`, `2m`, `1h30m`) and read them in
//! output, and the serde adapters for configuration files.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses `30s`, `2m`, `1h30m`; zero is refused. The error starts with the text in
/// backticks, so that a caller can put the field's name before it.
pub fn parse(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        let why = match e {
            humantime::DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
                format!(" (a number needs a unit: {value}s, {value}m, {value}h)")
            }
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!(" (unknown unit `{unit}`)")
            }
            humantime::DurationError::NumberOverflow => " (too large)".to_string(),
            _ => String::new(),
        };
        format!("`{s}` is not a duration such as 30s, 2m or 1h{why}")
    })?;
    if d.is_zero() {
        return Err(format!("`{s}` must be longer than zero"));
    }
    Ok(d)
}

/// `1h 30m`, as humantime writes it.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Whole seconds, rounded up (a wait of 0.2 s reads as 1s, never as 0s).
pub fn round_up_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// Durations in configuration files: `30s`, `5m`, as [`parse`] reads them.
pub mod serde_text {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        super::serialize(d, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(de)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Durations stored as whole milliseconds (notices, records).
pub mod serde_millis {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        u64::deserialize(de).map(Duration::from_millis)
    }
}

/// `Option<Duration>` as whole milliseconds.
pub mod serde_millis_opt {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(de).map(|v| v.map(Duration::from_millis))
    }
}

/// Durations in configuration files where zero means "off": `0` (or `0s`) besides what
/// [`parse`] reads. A number from the environment (`REMEDIATOR_…=0`) arrives as one.
pub mod serde_text_or_zero {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        super::serialize(d, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(de)? {
            Raw::Number(0) => Ok(Duration::ZERO),
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "`{n}` is not a duration such as 30s, 2m or 1h (a number needs a unit: {n}s, {n}m, {n}h; 0 turns it off)"
            ))),
            Raw::Text(t) if t.trim() == "0" => Ok(Duration::ZERO),
            Raw::Text(t) => match humantime::parse_duration(t.trim()) {
                Ok(d) if d.is_zero() => Ok(d),
                _ => parse(&t).map_err(serde::de::Error::custom),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct Grace {
        #[serde(with = "serde_text_or_zero")]
        grace: Duration,
    }

    fn grace(yaml: &str) -> Result<Duration, String> {
        serde_saphyr::from_str::<Grace>(yaml)
            .map(|g| g.grace)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn zero_turns_a_setting_off_and_anything_else_reads_as_usual() {
        assert_eq!(grace("grace: 0").unwrap(), Duration::ZERO);
        assert_eq!(grace("grace: \"0\"").unwrap(), Duration::ZERO);
        assert_eq!(grace("grace: 0s").unwrap(), Duration::ZERO);
        assert_eq!(grace("grace: 5m").unwrap(), Duration::from_secs(300));
        let e = grace("grace: 5").unwrap_err();
        assert!(e.contains("a number needs a unit: 5s"), "{e}");
        let e = grace("grace: soon").unwrap_err();
        assert!(e.contains("`soon` is not a duration"), "{e}");
    }
}
