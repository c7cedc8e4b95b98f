//! How typed values are written to and read from SQLite: the domain's text enums as their
//! words, notices and contact lists as JSON, and [`field`], which reads a column of a row and
//! turns a value that does not parse into [`StoreError::Corrupt`] naming the row.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::Row;

use super::{parse_ts, StoreError};
use crate::domain::notice::{RunOutcome, StateChange};
use crate::domain::{
    DecisionKind, IncidentState, Notice, Origin, Phase, Priority, RunPhase, Sink, StepOutcome,
    Verdict,
};

macro_rules! text_sql {
    ($($t:ty),+) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }
        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                <$t>::from_str(s).map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    )+};
}

text_sql!(
    crate::domain::ApprovalVerdict,
    Phase,
    IncidentState,
    Sink,
    Verdict,
    DecisionKind,
    RunPhase,
    StepOutcome,
    RunOutcome,
    Origin
);

impl ToSql for Priority {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Priority {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        Priority::parse(s)
            .ok_or_else(|| FromSqlError::Other(format!("{s:?} is not a priority P1..P4").into()))
    }
}

/// A value stored as JSON text.
pub(crate) struct Json<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromSql for Json<T> {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        serde_json::from_str(s)
            .map(Json)
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// A timestamp stored as [`super::ts`] text.
pub(crate) struct Ts(pub DateTime<Utc>);

impl FromSql for Ts {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        parse_ts(s)
            .map(Ts)
            .ok_or_else(|| FromSqlError::Other(format!("{s:?} is not an RFC 3339 time").into()))
    }
}

pub(crate) fn notice_json(n: &Notice) -> String {
    // A notice is plain data (strings, numbers, lists): serialising it cannot fail.
    serde_json::to_string(n).unwrap_or_else(|_| "{}".into())
}

pub(crate) fn state_change(p: Phase) -> Notice {
    Notice::State {
        change: StateChange::Phase(p),
    }
}

/// Column `idx` (named `column`) of a row of `table` whose id is `id`, parsed as `T`.
pub(crate) fn field<T: FromSql>(
    r: &Row<'_>,
    idx: usize,
    table: &'static str,
    column: &'static str,
    id: i64,
) -> Result<T, StoreError> {
    r.get(idx).map_err(|e| StoreError::Corrupt {
        table,
        id,
        column,
        detail: match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, inner) => inner.to_string(),
            other => other.to_string(),
        },
    })
}

/// Reads every row of a query through `map`.
pub(crate) fn collect<T>(
    mut rows: rusqlite::Rows<'_>,
    what: &'static str,
    mut map: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    use super::Ctx;
    let mut out = Vec::new();
    while let Some(r) = rows.next().ctx(what)? {
        out.push(map(r)?);
    }
    Ok(out)
}

/// Reads every row of a query through `map`, one result per row: a row that does not parse
/// ([`StoreError::Corrupt`]) is that row's error and the rows after it are still read; any
/// other error (the query itself failing) fails the whole read.
pub(crate) fn collect_each<T>(
    mut rows: rusqlite::Rows<'_>,
    what: &'static str,
    mut map: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<Result<T, StoreError>>, StoreError> {
    use super::Ctx;
    let mut out = Vec::new();
    while let Some(r) = rows.next().ctx(what)? {
        match map(r) {
            Err(e) if e.damaged_row().is_none() => return Err(e),
            read => out.push(read),
        }
    }
    Ok(out)
}
