//! Pauses: who paused which runbooks, why, until when, and who resumed them early.
//!
//! A pause ends by itself when its `until` passes: nothing is written then, the guard simply
//! stops finding it and a listing shows it `expired`. Resuming one early records when and by
//! whom. Pauses are never deleted. Adding and ending one are fsynced: someone is relying on
//! the automation staying away from what they are working on.

use chrono::{DateTime, Utc};
use rusqlite::{params, Row};
use serde::Serialize;

use super::codec::{collect, field, Ts};
use super::{fsynced, ts, ts_serde, Ctx, Store, StoreError};
use crate::domain::{NewPause, PauseFact, PauseScope, PauseState};

/// A stored pause, as the API, the CLI and `/-/ready` show it, with its state at the time it
/// was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PauseRecord {
    pub id: i64,
    /// The rule it covers; `null` for every rule (of `service`, when given).
    pub rule: Option<String>,
    /// The service it covers; `null` for every target (of `rule`, when given).
    pub service: Option<String>,
    /// What it covers, in words ("rule postgres-down on service postgres").
    pub scope: String,
    /// Who set it.
    pub by: String,
    pub reason: String,
    #[serde(with = "ts_serde")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "ts_serde")]
    pub until: DateTime<Utc>,
    /// When and by whom it was resumed early.
    #[serde(with = "ts_serde::opt")]
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_by: Option<String>,
    pub state: PauseState,
}

impl PauseRecord {
    pub fn scope(&self) -> PauseScope {
        PauseScope {
            rule: self.rule.clone(),
            service: self.service.clone(),
        }
    }

    /// What the pause guard is told.
    pub fn fact(&self) -> PauseFact {
        PauseFact {
            id: self.id,
            by: self.by.clone(),
            until: self.until,
            reason: self.reason.clone(),
        }
    }
}

/// Which pauses a listing holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseListing {
    /// In force now, oldest first.
    Active,
    /// Every pause, active or ended, newest first, at most this many.
    All { limit: usize },
}

/// What ending one pause found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseEnd {
    /// It was in force and is resumed now.
    Ended(PauseRecord),
    /// It had already ended (expired or resumed); nothing changed.
    AlreadyOver(PauseRecord),
    /// No such pause.
    NotFound,
}

const PAUSE_SELECT: &str = "SELECT id, rule, service, created_by, reason, created_at, until,
    ended_at, ended_by FROM pauses";

/// Active at `?1`: not resumed and not past its `until`. Times are fixed-width UTC text, so
/// text order is time order.
const ACTIVE: &str = "ended_at IS NULL AND until > ?1";

fn pause_row(r: &Row<'_>, now: DateTime<Utc>) -> Result<PauseRecord, StoreError> {
    let id: i64 = r.get(0).ctx("pause id")?;
    let t = "pauses";
    let rule: Option<String> = field(r, 1, t, "rule", id)?;
    let service: Option<String> = field(r, 2, t, "service", id)?;
    let until = field::<Ts>(r, 6, t, "until", id)?.0;
    let ended_at = field::<Option<Ts>>(r, 7, t, "ended_at", id)?.map(|t| t.0);
    let scope = PauseScope {
        rule: rule.clone(),
        service: service.clone(),
    }
    .to_string();
    Ok(PauseRecord {
        id,
        rule,
        service,
        scope,
        by: field(r, 3, t, "created_by", id)?,
        reason: field(r, 4, t, "reason", id)?,
        created_at: field::<Ts>(r, 5, t, "created_at", id)?.0,
        until,
        ended_at,
        ended_by: field(r, 8, t, "ended_by", id)?,
        state: PauseState::at(until, ended_at, now),
    })
}

fn read_pause(
    conn: &rusqlite::Connection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<Option<PauseRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("{PAUSE_SELECT} WHERE id = ?1"))
        .ctx("get pause")?;
    let mut rows = stmt.query([id]).ctx("get pause")?;
    match rows.next().ctx("get pause")? {
        Some(r) => pause_row(r, now).map(Some),
        None => Ok(None),
    }
}

impl Store {
    /// Stores a pause (fsynced) and returns it. It is in force from its `created_at`.
    pub fn add_pause(&self, p: &NewPause) -> Result<PauseRecord, StoreError> {
        let mut conn = self.conn();
        fsynced(&mut conn, |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .ctx("begin add pause")?;
            tx.prepare_cached(
                "INSERT INTO pauses (rule, service, created_by, reason, created_at, until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .ctx("add pause")?
            .execute(params![
                p.scope().rule,
                p.scope().service,
                p.by(),
                p.reason(),
                ts(p.created_at()),
                ts(p.until()),
            ])
            .ctx("add pause")?;
            let id = tx.last_insert_rowid();
            let record = read_pause(&tx, id, p.created_at())?.ok_or(StoreError::Query {
                what: "read the added pause",
                source: rusqlite::Error::QueryReturnedNoRows,
            })?;
            tx.commit().ctx("commit add pause")?;
            Ok(record)
        })
    }

    /// Pauses as they stand at `now`.
    pub fn pauses(
        &self,
        which: PauseListing,
        now: DateTime<Utc>,
    ) -> Result<Vec<PauseRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt;
        let rows = match which {
            PauseListing::Active => {
                stmt = conn
                    .prepare_cached(&format!("{PAUSE_SELECT} WHERE {ACTIVE} ORDER BY id"))
                    .ctx("list pauses")?;
                stmt.query([ts(now)])
            }
            PauseListing::All { limit } => {
                stmt = conn
                    .prepare_cached(&format!("{PAUSE_SELECT} ORDER BY id DESC LIMIT ?1"))
                    .ctx("list pauses")?;
                stmt.query([i64::try_from(limit).unwrap_or(i64::MAX)])
            }
        }
        .ctx("list pauses")?;
        collect(rows, "list pauses", |r| pause_row(r, now))
    }

    /// How many pauses are in force at `now` (`remediator_pauses_active`).
    pub fn active_pauses(&self, now: DateTime<Utc>) -> Result<i64, StoreError> {
        self.conn()
            .prepare_cached(&format!("SELECT count(*) FROM pauses WHERE {ACTIVE}"))
            .ctx("count pauses")?
            .query_row([ts(now)], |r| r.get(0))
            .ctx("count pauses")
    }

    /// The pause in force at `now` that covers an incident of `rule` acting on `service`
    /// (`None`: its target is a container or nothing, which only a rule's pause or one of
    /// every runbook covers). Of several, the one that ends last: that is how long the
    /// runbook stays paused.
    pub fn active_pause(
        &self,
        rule: &str,
        service: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<PauseFact>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "{PAUSE_SELECT} WHERE {ACTIVE}
                   AND (rule IS NULL OR rule = ?2) AND (service IS NULL OR service = ?3)
                 ORDER BY until DESC, id DESC LIMIT 1"
            ))
            .ctx("active pause")?;
        let mut rows = stmt
            .query(params![ts(now), rule, service])
            .ctx("active pause")?;
        match rows.next().ctx("active pause")? {
            Some(r) => Ok(Some(pause_row(r, now)?.fact())),
            None => Ok(None),
        }
    }

    /// Resumes pause `id` at `now`, recording `by` (fsynced), if it is still in force.
    pub fn end_pause(&self, id: i64, by: &str, now: DateTime<Utc>) -> Result<PauseEnd, StoreError> {
        let mut conn = self.conn();
        fsynced(&mut conn, |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .ctx("begin end pause")?;
            let Some(found) = read_pause(&tx, id, now)? else {
                return Ok(PauseEnd::NotFound);
            };
            if found.state != PauseState::Active {
                return Ok(PauseEnd::AlreadyOver(found));
            }
            tx.prepare_cached("UPDATE pauses SET ended_at = ?2, ended_by = ?3 WHERE id = ?1")
                .ctx("end pause")?
                .execute(params![id, ts(now), by])
                .ctx("end pause")?;
            let ended = read_pause(&tx, id, now)?.ok_or(StoreError::Query {
                what: "read the ended pause",
                source: rusqlite::Error::QueryReturnedNoRows,
            })?;
            tx.commit().ctx("commit end pause")?;
            Ok(PauseEnd::Ended(ended))
        })
    }

    /// Resumes every pause in force at `now`, recording `by` (fsynced); returns them.
    pub fn end_all_pauses(
        &self,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PauseRecord>, StoreError> {
        let mut conn = self.conn();
        fsynced(&mut conn, |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .ctx("begin end pauses")?;
            let ids: Vec<i64> = {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "UPDATE pauses SET ended_at = ?2, ended_by = ?3 WHERE {ACTIVE} RETURNING id"
                    ))
                    .ctx("end pauses")?;
                let rows = stmt
                    .query(params![ts(now), ts(now), by])
                    .ctx("end pauses")?;
                collect(rows, "end pauses", |r| r.get(0).ctx("ended pause id"))?
            };
            let mut ended = Vec::with_capacity(ids.len());
            for id in ids {
                ended.extend(read_pause(&tx, id, now)?);
            }
            ended.sort_by_key(|p| p.id);
            tx.commit().ctx("commit end pauses")?;
            Ok(ended)
        })
    }

    /// One pause as it stands at `now`.
    pub fn pause(&self, id: i64, now: DateTime<Utc>) -> Result<Option<PauseRecord>, StoreError> {
        read_pause(&self.conn(), id, now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::minutes(minutes)
    }

    fn add(store: &Store, rule: Option<&str>, service: Option<&str>, by: &str, hours: u64) -> i64 {
        let p = NewPause::lasting(
            PauseScope {
                rule: rule.map(Into::into),
                service: service.map(Into::into),
            },
            by,
            "db maintenance",
            t0(),
            Duration::from_secs(hours * 3600),
            "for",
        )
        .unwrap();
        store.add_pause(&p).unwrap().id
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn an_added_pause_reads_back_whole_and_active() {
        let (_dir, store) = open();
        let p = NewPause::lasting(
            PauseScope {
                rule: Some("postgres-down".into()),
                service: Some("postgres".into()),
            },
            "alice",
            "db maintenance",
            t0(),
            Duration::from_secs(7200),
            "for",
        )
        .unwrap();
        let stored = store.add_pause(&p).unwrap();
        assert_eq!(
            stored,
            PauseRecord {
                id: 1,
                rule: Some("postgres-down".into()),
                service: Some("postgres".into()),
                scope: "rule postgres-down on service postgres".into(),
                by: "alice".into(),
                reason: "db maintenance".into(),
                created_at: t0(),
                until: at(120),
                ended_at: None,
                ended_by: None,
                state: PauseState::Active,
            }
        );
        assert_eq!(store.pauses(PauseListing::Active, at(1)).unwrap(), [stored]);
        assert_eq!(store.active_pauses(at(1)).unwrap(), 1);
    }

    #[test]
    fn the_guard_finds_the_covering_pause_that_ends_last() {
        let (_dir, store) = open();
        add(&store, Some("pg"), None, "bob", 1);
        let alice = add(&store, None, Some("postgres"), "alice", 3);
        add(&store, Some("pg"), Some("redis"), "carol", 5);
        add(&store, Some("other"), None, "dave", 5);
        let found = |rule, service, minutes| {
            store
                .active_pause(rule, service, at(minutes))
                .unwrap()
                .map(|f| f.by)
        };
        assert_eq!(found("pg", Some("postgres"), 0).as_deref(), Some("alice"));
        assert_eq!(found("x", Some("postgres"), 0).as_deref(), Some("alice"));
        assert_eq!(found("pg", Some("redis"), 0).as_deref(), Some("carol"));
        assert_eq!(found("pg", None, 0).as_deref(), Some("bob"));
        assert_eq!(found("x", None, 0), None);
        assert_eq!(found("x", Some("backend"), 0), None);
        // Each ends by itself; nothing was written for that.
        assert_eq!(found("pg", None, 60), None);
        assert_eq!(found("pg", Some("postgres"), 179).as_deref(), Some("alice"));
        assert_eq!(found("pg", Some("postgres"), 180), None);
        let f = store.active_pause("pg", Some("postgres"), at(0)).unwrap();
        assert_eq!(
            f,
            Some(PauseFact {
                id: alice,
                by: "alice".into(),
                until: at(180),
                reason: "db maintenance".into()
            })
        );

        // A pause of every runbook covers what nothing else does.
        add(&store, None, None, "erin", 10);
        assert_eq!(found("x", None, 0).as_deref(), Some("erin"));
    }

    #[test]
    fn expired_and_resumed_pauses_leave_the_active_list_and_stay_in_the_full_one() {
        let (_dir, store) = open();
        let short = add(&store, Some("pg"), None, "bob", 1);
        let long = add(&store, None, Some("postgres"), "alice", 3);
        let all = add(&store, None, None, "carol", 3);

        assert_eq!(
            store.end_pause(long, "dave", at(30)).unwrap(),
            PauseEnd::Ended(PauseRecord {
                ended_at: Some(at(30)),
                ended_by: Some("dave".into()),
                state: PauseState::Resumed,
                ..store.pause(long, at(0)).unwrap().unwrap()
            })
        );
        assert!(matches!(
            store.end_pause(long, "erin", at(31)).unwrap(),
            PauseEnd::AlreadyOver(p) if p.ended_by.as_deref() == Some("dave")
        ));
        assert_eq!(
            store.end_pause(99, "erin", at(31)).unwrap(),
            PauseEnd::NotFound
        );

        let active: Vec<i64> = store
            .pauses(PauseListing::Active, at(61))
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(active, [all]);
        let states: Vec<(i64, PauseState)> = store
            .pauses(PauseListing::All { limit: 10 }, at(61))
            .unwrap()
            .iter()
            .map(|p| (p.id, p.state))
            .collect();
        assert_eq!(
            states,
            [
                (all, PauseState::Active),
                (long, PauseState::Resumed),
                (short, PauseState::Expired)
            ]
        );
        assert!(matches!(
            store.end_pause(short, "erin", at(61)).unwrap(),
            PauseEnd::AlreadyOver(p) if p.state == PauseState::Expired && p.ended_at.is_none()
        ));
        assert_eq!(
            store
                .pauses(PauseListing::All { limit: 1 }, at(61))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn resuming_all_ends_only_those_in_force_and_records_who() {
        let (_dir, store) = open();
        let expired = add(&store, Some("pg"), None, "bob", 1);
        let a = add(&store, None, Some("postgres"), "alice", 3);
        let b = add(&store, None, None, "carol", 3);
        let ended = store.end_all_pauses("dave", at(90)).unwrap();
        assert_eq!(ended.iter().map(|p| p.id).collect::<Vec<_>>(), [a, b]);
        assert!(ended
            .iter()
            .all(|p| p.ended_by.as_deref() == Some("dave") && p.ended_at == Some(at(90))));
        assert_eq!(
            store.pause(expired, at(90)).unwrap().unwrap().ended_by,
            None,
            "an expired pause is left as it ended"
        );
        assert!(store.end_all_pauses("dave", at(91)).unwrap().is_empty());
        assert_eq!(store.active_pauses(at(91)).unwrap(), 0);
    }

    #[test]
    fn pauses_survive_a_reopen_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let id = add(
            &Store::open(dir.path()).unwrap(),
            Some("pg"),
            None,
            "alice",
            2,
        );
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store
                .active_pause("pg", None, at(10))
                .unwrap()
                .map(|f| f.id),
            Some(id)
        );
        let ro = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(ro.active_pauses(at(10)).unwrap(), 1);
    }

    #[test]
    fn a_damaged_pause_is_an_error_naming_its_row() {
        let (_dir, store) = open();
        let id = add(&store, Some("pg"), None, "alice", 2);
        store
            .conn()
            .execute("UPDATE pauses SET until = 'soon' WHERE id = ?1", [id])
            .unwrap();
        let e = store.active_pause("pg", None, at(0)).unwrap_err();
        assert_eq!(e.damaged_row(), Some(("pauses", id)), "{e}");
    }
}
