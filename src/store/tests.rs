//! The store's apply path: what the intake writer commits, and the backlog after an upgrade.

use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::alert::parse_webhook;

fn body(status: &str, starts_min: i64) -> Vec<u8> {
    let starts = Utc.with_ymd_and_hms(2026, 11, 26, 3, 0, 0).unwrap()
        + chrono::Duration::minutes(starts_min);
    let ends = if status == "resolved" {
        (starts + chrono::Duration::minutes(4)).to_rfc3339()
    } else {
        "0001-01-01T00:00:00Z".to_string()
    };
    json!({"version": "4", "status": status, "groupKey": "{}:{alertname=\"PostgresDown\"}",
        "alerts": [{"status": status,
            "labels": {"alertname": "PostgresDown", "service": "postgres"},
            "annotations": {"summary": format!("{status} at {starts_min}")},
            "startsAt": starts.to_rfc3339(), "endsAt": ends}]})
    .to_string()
    .into_bytes()
}

fn ingest(store: &Store, body: &[u8]) -> i64 {
    ingest_at(store, body, Utc::now())
}

fn ingest_at(store: &Store, body: &[u8], received: chrono::DateTime<Utc>) -> i64 {
    store
        .ingest(body, &parse_webhook(body).unwrap(), received)
        .unwrap()
}

/// The engine's queue, oldest first.
fn queued(store: &Store) -> Vec<IncidentEvent> {
    let all = store.queued_events(100).unwrap();
    all.into_iter().map(|q| q.unwrap().event).collect()
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn an_acknowledged_delivery_is_already_an_incident_and_queued_once() {
    let (_dir, store) = open();
    ingest(&store, &body("firing", 0));
    ingest(&store, &body("firing", 0));
    let incidents = store.list_incidents(None, None, 10).unwrap().incidents;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].deliveries, 2);
    assert_eq!(incidents[0].state, "open");
    assert_eq!(incidents[0].phase, "new");
    assert_eq!(incidents[0].group_key, "{}:{alertname=\"PostgresDown\"}");
    let id = incidents[0].id;
    assert_eq!(
        queued(&store),
        vec![IncidentEvent::Opened(id)],
        "a repeat queues nothing"
    );

    ingest(&store, &body("resolved", 0));
    let inc = store.incident(id).unwrap().unwrap();
    assert_eq!(inc.state, "resolved");
    assert_eq!(inc.deliveries, 3);
    assert_eq!(
        inc.annotations["summary"], "resolved at 0",
        "latest annotations"
    );
    assert_eq!(
        inc.time_to_recover(),
        Some(std::time::Duration::from_secs(240))
    );
    assert_eq!(
        queued(&store),
        vec![IncidentEvent::Opened(id), IncidentEvent::Resolved(id)]
    );

    // A new firing after the resolution is a new incident.
    ingest(&store, &body("firing", 30));
    assert_eq!(
        store
            .list_incidents(None, None, 10)
            .unwrap()
            .incidents
            .len(),
        2
    );
    let backlog = store.backlog().unwrap();
    assert_eq!((backlog.intake, backlog.engine), (0, 3));
    let first = store.queued_events(1).unwrap()[0].as_ref().unwrap().id;
    store.dequeue_event(first).unwrap();
    assert_eq!(store.backlog().unwrap().engine, 2);
}

#[test]
fn a_backlog_from_an_older_version_is_applied_in_order_before_anything_new() {
    let (_dir, store) = open();
    // Stored by a version that applied deliveries later, in its engine; never applied.
    store.insert_intake(&body("firing", 0), Utc::now()).unwrap();
    store.insert_intake(b"{not json", Utc::now()).unwrap();
    assert_eq!(store.backlog().unwrap().intake, 2);

    // The next delivery resolves it: the backlog goes first, so the firing is not "missed".
    ingest(&store, &body("resolved", 0));
    let incidents = store.list_incidents(None, None, 10).unwrap().incidents;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].state, "resolved");
    assert_eq!(incidents[0].phase, "new", "opened, then resolved");
    assert_eq!(incidents[0].deliveries, 2);
    let kinds = queued(&store);
    let id = incidents[0].id;
    assert_eq!(
        kinds,
        vec![IncidentEvent::Opened(id), IncidentEvent::Resolved(id)]
    );
    assert_eq!(store.backlog().unwrap().intake, 0);
    assert_eq!(store.apply_backlog(Utc::now()).unwrap(), 0, "nothing twice");
}

#[test]
fn an_open_incident_shows_the_annotations_of_its_latest_delivery() {
    let (_dir, store) = open();
    let first = body("firing", 0);
    ingest(&store, &first);
    let later = String::from_utf8(first)
        .unwrap()
        .replace("firing at 0", "firing at 0, and worse")
        .into_bytes();
    let second = ingest(&store, &later);
    let list = store
        .list_incidents(Some(crate::domain::IncidentState::Open), None, 10)
        .unwrap()
        .incidents;
    assert_eq!(list[0].annotations["summary"], "firing at 0, and worse");
    assert_eq!(list[0].last_delivery, Some(second));
    let one = store.incident(list[0].id).unwrap().unwrap();
    assert_eq!(one.annotations["summary"], "firing at 0, and worse");
    assert_eq!(one.deliveries, 2);
}

#[test]
fn pruning_deletes_old_applied_bodies_only_and_keeps_the_newest_row() {
    let (_dir, store) = open();
    let long_ago = Utc::now() - chrono::Duration::days(40);
    let first = ingest_at(&store, &body("firing", 0), long_ago);
    let second = ingest_at(&store, &body("firing", 0), long_ago);
    let cutoff = Utc::now() - chrono::Duration::days(30);
    assert_eq!(
        store.prune_intake(cutoff, 100).unwrap(),
        1,
        "the newest row stays"
    );
    let count = |id: i64| -> i64 {
        store
            .conn()
            .query_row("SELECT count(*) FROM intake WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap()
    };
    assert_eq!((count(first), count(second)), (0, 1));
    // A newer delivery: the old one can go now; the new one is younger than the cutoff.
    let third = ingest(&store, &body("firing", 0));
    assert_eq!(store.prune_intake(cutoff, 100).unwrap(), 1);
    assert_eq!((count(second), count(third)), (0, 1));
    // The incident keeps its count and falls back to the annotations it opened with.
    let inc = &store.list_incidents(None, None, 10).unwrap().incidents[0];
    assert_eq!(inc.deliveries, 3);
    assert_eq!(inc.annotations["summary"], "firing at 0");

    // A stored body not applied yet (an older version's backlog) is never pruned.
    store.insert_intake(&body("firing", 5), long_ago).unwrap();
    ingest(&store, &body("firing", 9)); // applies the backlog first
    let unapplied = store.insert_intake(&body("firing", 7), long_ago).unwrap();
    ingest(&store, &body("firing", 9));
    assert!(store.prune_intake(cutoff, 100).unwrap() >= 1);
    assert_eq!(count(unapplied), 0, "applied by then, so it may go");
    let pending = store.insert_intake(&body("firing", 8), long_ago).unwrap();
    store.insert_intake(&body("firing", 9), long_ago).unwrap();
    assert_eq!(store.prune_intake(cutoff, 100).unwrap(), 0);
    assert_eq!(count(pending), 1, "not applied yet: kept");
}

/// A copy of the store that the build before typed notices wrote (tests/fixtures/store-v6).
fn v6_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/store-v6/remediator.db"
        ),
        dir.path().join(super::DB_FILE),
    )
    .unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn a_store_written_before_typed_notices_opens_and_keeps_every_row() {
    use crate::domain::{IncidentState, Notice, PagerDutyEvent, Phase, Priority, Sink};
    let (_dir, store) = v6_store();
    let page = store.list_incidents(None, None, 100).unwrap();
    let phases: Vec<(i64, Phase, IncidentState)> = page
        .incidents
        .iter()
        .map(|i| (i.id, i.phase, i.state))
        .collect();
    assert_eq!(
        phases,
        [
            (4, Phase::NoRule, IncidentState::Open),
            (3, Phase::Skipped, IncidentState::Open),
            (2, Phase::Failed, IncidentState::Open),
            (1, Phase::Failed, IncidentState::Resolved),
        ]
    );
    let pg = store.incident(1).unwrap().unwrap();
    assert_eq!(pg.priority, Some(Priority::P1));
    assert_eq!(pg.labels["service"], "postgres");
    assert!(pg.time_to_recover().is_some());
    assert_eq!(
        store.incident(2).unwrap().unwrap().acked_by.as_deref(),
        Some("alice")
    );
    let (mut decisions, mut steps, mut messages) = (0, 0, 0);
    for id in 1..=4 {
        decisions += store.decisions(id).unwrap().len();
        steps += store.steps(id).unwrap().len();
        messages += store.messages(id).unwrap().len();
    }
    assert_eq!((decisions, steps, messages), (23, 4, 35));
    // Every pending message is still due, and reads as a notice for its sink.
    let due = |sink| -> Vec<OutboxRow> {
        let rows = store.due_outbox(sink, Utc::now(), 100).unwrap();
        rows.into_iter().map(Result::unwrap).collect()
    };
    let slack = due(Sink::Slack);
    // The oldest pending message of each incident that has a thread (no rule: none).
    assert_eq!(slack.len(), 3);
    assert!(slack
        .iter()
        .all(|r| matches!(&r.notice, Notice::Recorded { was, .. } if was == "opened")));
    let pd = due(Sink::PagerDuty);
    assert_eq!(pd.len(), 2);
    // Each keeps the role its kind had: a recorded `state` still updates the root.
    let roles: Vec<String> = store
        .messages(1)
        .unwrap()
        .iter()
        .map(|m| m.kind.clone())
        .collect();
    assert!(roles.iter().any(|k| k == "state"), "{roles:?}");
    for row in &pd {
        assert_eq!(row.notice.pagerduty_event(), Some(PagerDutyEvent::Trigger));
        let Notice::Recorded { details, .. } = &row.notice else {
            panic!("{:?}", row.notice)
        };
        let source = details.as_ref().and_then(|d| d["source"].as_str());
        assert!(source.is_some_and(|s| s != "remediator"), "{details:?}");
        assert!(matches!(
            &row.notice,
            Notice::Recorded { who, priority: Some(_), .. } if !who.is_empty()
        ));
    }
}

#[test]
fn rows_an_older_build_writes_after_an_upgrade_read_as_recorded_notices() {
    use crate::domain::{Notice, NoticeKind, Sink};
    let (dir, store) = v6_store();
    // A rollback: the older build knows no `notice` column and leaves it NULL.
    store
        .conn()
        .execute(
            "INSERT INTO outbox (incident_id, sink, kind, text, created_at) VALUES (4, 'slack', 'state', 'resolved', '2026-12-01T00:00:00.000000000Z')",
            [],
        )
        .unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let due = store.due_outbox(Sink::Slack, Utc::now(), 100).unwrap();
    let row = due
        .iter()
        .map(|r| r.as_ref().unwrap())
        .find(|r| r.incident_id == 4)
        .unwrap();
    assert!(matches!(&row.notice, Notice::Recorded { text, .. } if text == "resolved"));
    assert_eq!(row.notice.role(), NoticeKind::State);
}

#[test]
fn a_damaged_row_is_an_error_naming_it_never_a_default() {
    let (_dir, store) = v6_store();
    store
        .conn()
        .execute("UPDATE incidents SET labels = '{not json' WHERE id = 3", [])
        .unwrap();
    let err = store.incident(3).unwrap_err().to_string();
    assert!(
        err.starts_with("row 3 of table incidents is damaged (column labels:"),
        "{err}"
    );
    assert!(store.list_incidents(None, None, 10).is_err());
    store
        .conn()
        .execute(
            "UPDATE incidents SET labels = '{}', phase = 'sleeping' WHERE id = 3",
            [],
        )
        .unwrap();
    let err = store.incident(3).unwrap_err().to_string();
    assert!(
        err.contains("column phase: \"sleeping\" is not a phase"),
        "{err}"
    );
}

#[test]
fn a_store_of_a_newer_schema_is_refused_read_only_or_not() {
    let (dir, store) = v6_store();
    store
        .conn()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    drop(store);
    for err in [
        Store::open(dir.path()).err().unwrap(),
        Store::open_read_only(dir.path()).err().unwrap(),
    ] {
        assert!(matches!(err, StoreError::Newer { found: 99, .. }), "{err}");
        assert!(
            err.to_string().contains("newer than this build knows"),
            "{err}"
        );
    }
}

/// The incidents' ids, oldest first.
fn incident_ids(store: &Store) -> Vec<i64> {
    let page = store.list_incidents(None, None, 100).unwrap();
    page.incidents.iter().rev().map(|i| i.id).collect()
}

#[test]
fn a_damaged_queue_entry_is_its_own_error_and_leaves_for_the_quarantine_whole() {
    let (_dir, store) = open();
    for starts in 0..3 {
        ingest(&store, &body("firing", starts));
    }
    let incidents = incident_ids(&store);
    let queue: Vec<i64> = store
        .queued_events(10)
        .unwrap()
        .into_iter()
        .map(|q| q.unwrap().id)
        .collect();
    store
        .conn()
        .execute(
            "UPDATE engine_queue SET trace = x'00ff' WHERE id = ?1",
            [queue[1]],
        )
        .unwrap();

    let entries = store.queued_events(10).unwrap();
    assert_eq!(entries.len(), 3, "the others still read, in order");
    assert_eq!(entries[0].as_ref().unwrap().id, queue[0]);
    assert_eq!(entries[2].as_ref().unwrap().id, queue[2]);
    let err = entries[1].as_ref().unwrap_err();
    assert_eq!(err.damaged_row(), Some(("engine_queue", queue[1])));
    let error = err.to_string();
    assert!(
        error.starts_with(&format!(
            "row {} of table engine_queue is damaged (column trace:",
            queue[1]
        )),
        "{error}"
    );

    let now = Utc::now();
    let n = store
        .quarantine_queued(queue[1], "engine_queue", queue[1], &error, now)
        .unwrap()
        .expect("quarantined");
    let left: Vec<i64> = store
        .queued_events(10)
        .unwrap()
        .into_iter()
        .map(|q| q.unwrap().id)
        .collect();
    assert_eq!(left, [queue[0], queue[2]]);
    let q = store.quarantined(10).unwrap();
    assert_eq!(
        q,
        Quarantined {
            count: 1,
            latest: vec![QuarantineRecord {
                id: n,
                source_table: "engine_queue".into(),
                row_id: queue[1],
                error: error.clone(),
                at: parse_ts(&ts(now)).unwrap(),
                incident_id: Some(incidents[1]),
                queue_id: Some(queue[1]),
            }],
        }
    );
    assert_eq!(
        store
            .quarantine_queued(queue[1], "engine_queue", queue[1], &error, now)
            .unwrap(),
        None,
        "an entry no longer queued is not quarantined twice"
    );

    // The way back that the log gives, once the row is repaired.
    store
        .conn()
        .execute_batch(&format!(
            "UPDATE quarantine SET trace = NULL WHERE id = {n};
             INSERT INTO engine_queue (incident_id, kind, trace) SELECT incident_id, kind, trace FROM quarantine WHERE id = {n};
             DELETE FROM quarantine WHERE id = {n};"
        ))
        .unwrap();
    assert_eq!(
        queued(&store),
        [
            IncidentEvent::Opened(incidents[0]),
            IncidentEvent::Opened(incidents[2]),
            IncidentEvent::Opened(incidents[1]),
        ],
        "queued again, last"
    );
    assert_eq!(store.quarantined(10).unwrap().count, 0);
}

#[test]
fn a_damaged_notice_is_its_own_error_and_once_held_only_its_incident_waits() {
    use crate::domain::{Notice, Sink};
    let (_dir, store) = open();
    ingest(&store, &body("firing", 0));
    ingest(&store, &body("firing", 1));
    let (a, b) = (incident_ids(&store)[0], incident_ids(&store)[1]);
    for (id, text) in [(a, "a1"), (a, "a2"), (b, "b1")] {
        let mut c = Commit::new(id, Utc::now());
        c.notice(Sink::Slack, Notice::Message { text: text.into() });
        store.commit(&c).unwrap();
    }
    let a1 = store.messages(a).unwrap()[0].id;
    store
        .conn()
        .execute("UPDATE outbox SET notice = '{not json' WHERE id = ?1", [a1])
        .unwrap();

    let due = store.due_outbox(Sink::Slack, Utc::now(), 10).unwrap();
    assert_eq!(due.len(), 2, "a2 waits behind a1");
    let err = due[0].as_ref().unwrap_err();
    assert_eq!(err.damaged_row(), Some(("outbox", a1)));
    let error = err.to_string();
    assert!(
        error.starts_with(&format!(
            "row {a1} of table outbox is damaged (column notice:"
        )),
        "{error}"
    );
    let b1 = due[1].as_ref().unwrap();
    assert_eq!(b1.incident_id, b);
    assert!(matches!(&b1.notice, Notice::Message { text } if text == "b1"));

    // Held as a refusal is: shown with its error, its incident's later messages behind it.
    store.outbox_block(a1, &error).unwrap();
    let held = store.outbox_blocked().unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].sink, held[0].error.as_str(), held[0].messages),
        (Sink::Slack, error.as_str(), 1)
    );
    let due: Vec<i64> = store
        .due_outbox(Sink::Slack, Utc::now(), 10)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().id)
        .collect();
    assert_eq!(due, [b1.id]);
}

/// Records that incident `id` matched rule `pg` (P1, RTO 30 min), as the engine does.
fn match_pg(store: &Store, id: i64) {
    let mut c = Commit::new(id, Utc::now());
    c.matched(
        "pg",
        crate::domain::Priority::P1,
        None,
        std::time::Duration::from_secs(1800),
        vec![],
        None,
    );
    store.commit(&c).unwrap();
}

#[test]
fn a_damaged_incident_or_fired_tier_is_its_own_error_and_the_other_candidates_read() {
    let (_dir, store) = open();
    ingest(&store, &body("firing", 0));
    ingest(&store, &body("firing", 1));
    let (a, b) = (incident_ids(&store)[0], incident_ids(&store)[1]);
    for id in [a, b] {
        match_pg(&store, id);
    }
    store
        .conn()
        .execute(
            "UPDATE incidents SET labels = '{not json' WHERE id = ?1",
            [a],
        )
        .unwrap();
    let candidates = store.escalation_candidates(0, 100, Utc::now()).unwrap();
    assert_eq!(candidates.len(), 2);
    let err = candidates[0].as_ref().unwrap_err();
    assert_eq!(err.damaged_row(), Some(("incidents", a)));
    assert_eq!(candidates[1].as_ref().unwrap().id, b);

    // Passed over where it stands: recorded once, however often it is met.
    let error = err.to_string();
    let now = Utc::now();
    assert!(store
        .quarantine_row("incidents", a, &error, Some(a), now)
        .unwrap()
        .is_some());
    assert_eq!(
        store
            .quarantine_row("incidents", a, &error, Some(a), now)
            .unwrap(),
        None
    );
    let q = store.quarantined(10).unwrap();
    assert_eq!(q.count, 1);
    assert_eq!(
        (q.latest[0].incident_id, q.latest[0].queue_id),
        (Some(a), None)
    );

    store
        .conn()
        .execute(
            "INSERT INTO tiers_fired (incident_id, tier, at) VALUES (?1, 'second', ?2)",
            rusqlite::params![b, ts(now)],
        )
        .unwrap();
    let err = store.fired_tiers(b).unwrap_err();
    assert_eq!(err.damaged_row().map(|(t, _)| t), Some("tiers_fired"));
    assert!(err.to_string().contains("column tier"), "{err}");
}

#[test]
fn escalation_candidates_come_a_page_at_a_time_in_id_order() {
    let (_dir, store) = open();
    for i in 0..5 {
        ingest(&store, &body("firing", i));
    }
    let ids = incident_ids(&store);
    // The third is not matched: no candidate.
    for &id in ids.iter().filter(|&&id| id != ids[2]) {
        match_pg(&store, id);
    }
    let page = |after, limit| -> Vec<i64> {
        store
            .escalation_candidates(after, limit, Utc::now())
            .unwrap()
            .into_iter()
            .map(|c| c.unwrap().id)
            .collect()
    };
    assert_eq!(page(0, 2), [ids[0], ids[1]]);
    assert_eq!(page(ids[1], 2), [ids[3], ids[4]]);
    assert!(page(ids[4], 2).is_empty());
}

#[test]
fn an_incident_younger_than_the_earliest_tier_is_no_escalation_candidate() {
    let (_dir, store) = open();
    let t0 = Utc::now() - chrono::Duration::minutes(10);
    ingest_at(&store, &body("firing", 0), t0);
    ingest_at(
        &store,
        &body("firing", 1),
        t0 + chrono::Duration::minutes(5),
    );
    let ids = incident_ids(&store);
    for &id in &ids {
        match_pg(&store, id);
    }
    let opened_by = |t| -> Vec<i64> {
        store
            .escalation_candidates(0, 10, t)
            .unwrap()
            .into_iter()
            .map(|c| c.unwrap().id)
            .collect()
    };
    assert!(opened_by(t0 - chrono::Duration::seconds(1)).is_empty());
    assert_eq!(opened_by(t0), [ids[0]]);
    assert_eq!(opened_by(t0 + chrono::Duration::minutes(5)), ids);
}

#[test]
fn the_legacy_dedup_key_is_the_one_an_older_version_paged_under_and_only_that() {
    use crate::domain::{Notice, Sink};
    let (_dir, store) = open();
    ingest(&store, &body("firing", 0));
    ingest(&store, &body("firing", 1));
    let (old, new) = (incident_ids(&store)[0], incident_ids(&store)[1]);
    for (id, sink) in [
        (old, Sink::Slack),
        (old, Sink::PagerDuty),
        (old, Sink::PagerDuty),
        (new, Sink::PagerDuty),
    ] {
        let mut c = Commit::new(id, Utc::now());
        c.notice(sink, Notice::Message { text: "m".into() });
        store.commit(&c).unwrap();
    }
    assert_eq!(
        store.legacy_dedup_key(old).unwrap(),
        None,
        "nothing sent yet"
    );
    let ids = |id| -> Vec<i64> { store.messages(id).unwrap().iter().map(|m| m.id).collect() };
    let (o, n) = (ids(old), ids(new));
    // A Slack message's result is no key; the first page sent under the old scheme is.
    store
        .outbox_delivered(o[0], "remediator-incident-1", Utc::now())
        .unwrap();
    assert_eq!(store.legacy_dedup_key(old).unwrap(), None);
    store
        .outbox_delivered(o[1], &format!("remediator-incident-{old}"), Utc::now())
        .unwrap();
    store
        .outbox_delivered(o[2], "remediator-incident-999", Utc::now())
        .unwrap();
    assert_eq!(
        store.legacy_dedup_key(old).unwrap(),
        Some(format!("remediator-incident-{old}"))
    );
    // A page sent under the identity's key is no legacy.
    store
        .outbox_delivered(
            n[0],
            "remediator-0123456789abcdef-2026-12-04T19:00:00Z",
            Utc::now(),
        )
        .unwrap();
    assert_eq!(store.legacy_dedup_key(new).unwrap(), None);
}

#[test]
fn the_wal_is_checkpointed_off_the_stores_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let db = dir.path().join(DB_FILE);
    let before = std::fs::metadata(&db).unwrap().len();
    // About 200 pages into the WAL: far below the connection's own backstop.
    let filler: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    for _ in 0..200 {
        store.insert_intake(&filler, Utc::now()).unwrap();
    }
    // With the store's connection held, only the checkpoint thread can copy the WAL into
    // the database file.
    let held = store.conn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&db).unwrap().len() < before + 100 * 4096 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file did not grow: no checkpoint ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(held);
    // Dropping the store stops the thread.
    drop(store);
}

#[test]
fn the_flapping_count_walks_the_unique_fingerprint_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let plan: String = store
        .conn()
        .query_row(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM incidents WHERE fingerprint = 'ab' AND first_seen >= '2026'",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(
        plan.contains("USING INDEX sqlite_autoindex_incidents_1 (fingerprint=?)"),
        "{plan}"
    );
}
