//! Passes that ended early (the queue's `QueuePassEnded`), kept by every
//! service that accepts passes: a valid signature does not outlive that.

use chrono::Utc;
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::ended_passes;
use super::{AnyConnection, Db, DbError};

/// Records that the pass `token` ended early.
pub fn record_ended(conn: &mut AnyConnection, token: Uuid) -> QueryResult<()> {
    let row = (
        ended_passes::token.eq(token.to_string()),
        ended_passes::ended_at.eq(Utc::now().naive_utc()),
    );
    crate::on_backend!(conn, |c| diesel::insert_into(ended_passes::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

/// Whether the pass `token` ended early.
pub async fn is_ended(db: &Db, token: Uuid) -> Result<bool, DbError> {
    let token = token.to_string();
    db.run(move |conn| {
        let found: i64 = ended_passes::table.find(token).count().get_result(conn)?;
        Ok(found > 0)
    })
    .await
}
