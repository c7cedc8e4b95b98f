//! Escalation state: which tiers fired for an incident (acknowledgements are written by a
//! [`super::Commit`]).

use rusqlite::params;

use super::codec::{collect, field};
use super::{Ctx, Store, StoreError};

impl Store {
    /// The tiers already fired for an incident, so a restart never fires one twice. A tier
    /// that does not read is [`StoreError::Corrupt`] naming its `tiers_fired` rowid: firing
    /// the incident's tiers again would be worse than leaving them.
    pub fn fired_tiers(&self, id: i64) -> Result<Vec<usize>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT rowid, tier FROM tiers_fired WHERE incident_id = ?1 ORDER BY tier",
            )
            .ctx("fired tiers")?;
        let rows = stmt.query(params![id]).ctx("fired tiers")?;
        collect(rows, "fired tiers", |r| {
            let rowid: i64 = r.get(0).ctx("tiers_fired rowid")?;
            let tier: i64 = field(r, 1, "tiers_fired", "tier", rowid)?;
            Ok(tier.max(0) as usize)
        })
    }
}
