//! Escalation state: which tiers fired for an incident (acknowledgements are written by a
//! [`super::Commit`]).

use rusqlite::params;

use super::{Ctx, Store, StoreError};

impl Store {
    /// The tiers already fired for an incident, so a restart never fires one twice.
    pub fn fired_tiers(&self, id: i64) -> Result<Vec<usize>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT tier FROM tiers_fired WHERE incident_id = ?1 ORDER BY tier")
            .ctx("fired tiers")?;
        let rows = stmt
            .query_map(params![id], |r| r.get::<_, i64>(0))
            .ctx("fired tiers")?;
        rows.map(|r| r.map(|t| t.max(0) as usize))
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("fired tiers")
    }
}
