//! `approve` steps' requests and answers: one row per step of a run, written with the
//! decision and the notices of its moment (through [`super::Commit`]), read by the engine's
//! wait (which resumes after a restart with the stored deadline), the API and the root.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::codec::{field, Json, Ts};
use super::{ts, Ctx, Store, StoreError};
use crate::domain::{Approval, ApprovalVerdict, Decided, RunPhase};

const COLUMNS: &str = "id, phase, seq, who, prompt, choices, asked_at, deadline, verdict, decided_by, slack_user, choice, decided_at";

pub(super) fn ask(tx: &Transaction<'_>, incident: i64, a: &Approval) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO approvals (incident_id, phase, seq, who, prompt, choices, asked_at, deadline)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (incident_id, phase, seq) DO NOTHING",
    )
    .ctx("ask approval")?
    .execute(params![
        incident,
        a.phase,
        a.seq as i64,
        a.who,
        a.prompt,
        super::json(&a.choices),
        ts(a.asked_at),
        ts(a.deadline)
    ])
    .ctx("ask approval")?;
    Ok(())
}

pub(super) fn answer(
    tx: &Transaction<'_>,
    incident: i64,
    phase: RunPhase,
    seq: usize,
    d: &Decided,
) -> Result<(), StoreError> {
    let n = tx
        .prepare_cached(
            "UPDATE approvals SET verdict = ?4, decided_by = ?5, slack_user = ?6, choice = ?7, decided_at = ?8
             WHERE incident_id = ?1 AND phase = ?2 AND seq = ?3 AND verdict IS NULL",
        )
        .ctx("answer approval")?
        .execute(params![
            incident,
            phase,
            seq as i64,
            d.verdict,
            d.by,
            d.slack_user,
            d.choice,
            ts(d.at)
        ])
        .ctx("answer approval")?;
    if n == 0 {
        return Err(StoreError::NotWaiting(incident));
    }
    Ok(())
}

fn row(r: &Row<'_>) -> Result<Approval, StoreError> {
    let id: i64 = r.get(0).ctx("approval id")?;
    let t = "approvals";
    let verdict: Option<ApprovalVerdict> = field(r, 8, t, "verdict", id)?;
    let decided = match verdict {
        None => None,
        Some(verdict) => Some(Decided {
            verdict,
            by: field::<Option<String>>(r, 9, t, "decided_by", id)?.unwrap_or_default(),
            slack_user: field(r, 10, t, "slack_user", id)?,
            choice: field(r, 11, t, "choice", id)?,
            at: field::<Ts>(r, 12, t, "decided_at", id)?.0,
        }),
    };
    Ok(Approval {
        phase: field(r, 1, t, "phase", id)?,
        seq: field::<i64>(r, 2, t, "seq", id)? as usize,
        who: field(r, 3, t, "who", id)?,
        prompt: field(r, 4, t, "prompt", id)?,
        choices: field::<Json<Vec<String>>>(r, 5, t, "choices", id)?.0,
        asked_at: field::<Ts>(r, 6, t, "asked_at", id)?.0,
        deadline: field::<Ts>(r, 7, t, "deadline", id)?.0,
        decided,
    })
}

impl Store {
    /// The request of step `seq` of `phase` of incident `id`'s run, if it was asked.
    pub fn approval_at(
        &self,
        id: i64,
        phase: RunPhase,
        seq: usize,
    ) -> Result<Option<Approval>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE incident_id = ?1 AND phase = ?2 AND seq = ?3"
            ))
            .ctx("read approval")?;
        let mut rows = stmt
            .query(params![id, phase, seq as i64])
            .ctx("read approval")?;
        match rows.next().ctx("read approval")? {
            Some(r) => row(r).map(Some),
            None => Ok(None),
        }
    }

    /// Incident `id`'s latest request (the one waiting, or the last answered).
    pub fn latest_approval(&self, id: i64) -> Result<Option<Approval>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE incident_id = ?1 ORDER BY id DESC LIMIT 1"
            ))
            .ctx("read approval")?;
        let mut rows = stmt.query([id]).ctx("read approval")?;
        match rows.next().ctx("read approval")? {
            Some(r) => row(r).map(Some),
            None => Ok(None),
        }
    }

    /// The choice of the run's latest approved request, for `{{ approval.choice }}`.
    pub fn approved_choice(&self, id: i64) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        conn.query_row(
            "SELECT choice FROM approvals WHERE incident_id = ?1 AND verdict = 'approved' ORDER BY id DESC LIMIT 1",
            [id],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()
        .ctx("read approved choice")
        .map(Option::flatten)
    }

    /// Every request of incident `id`, in the order asked (the post-mortem's timeline).
    pub fn approvals(&self, id: i64) -> Result<Vec<Approval>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE incident_id = ?1 ORDER BY id"
            ))
            .ctx("read approvals")?;
        let mut rows = stmt.query([id]).ctx("read approvals")?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().ctx("read approvals")? {
            out.push(row(r)?);
        }
        Ok(out)
    }
}

impl Store {
    /// The Slack `ts` of the message that asked request `seq` of `phase` (the delivered
    /// `approval` notice's result), to update it once answered; `None` until it is posted.
    pub fn approval_message_ts(
        &self,
        id: i64,
        phase: RunPhase,
        seq: usize,
    ) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT result FROM outbox
                 WHERE incident_id = ?1 AND sink = 'slack' AND kind = 'approval' AND delivered_at IS NOT NULL
                   AND json_extract(notice, '$.request.phase') = ?2
                   AND json_extract(notice, '$.request.seq') = ?3
                 ORDER BY id LIMIT 1",
                params![id, phase, seq as i64],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .ctx("read the approval's Slack message")
            .map(Option::flatten)
    }
}
