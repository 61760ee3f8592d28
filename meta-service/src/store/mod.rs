//! The meta store: every entity operation, one SQL code path over SQLite and PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;

use aiflow_api::Page;
use aiflow_api::meta::ListQuery;
use aiflow_db::{Backend, Db};
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use crate::error::{Error, Result};
use crate::outbox::{OUTBOX_CHANNEL, RelayState};
use crate::tags::parse_tag_uri;

pub(crate) mod entities;
mod lineage;
mod metrics;
pub(crate) mod models;
pub(crate) mod outbox;
mod runs;
pub(crate) mod sql;

pub use outbox::OutboxRow;
pub use runs::{NewJobExecution, NewWorkflowExecution, NewWorkflowVersion};
use sql::{Sql, decode_id_cursor, encode_id_cursor, page_limit, to_us};

pub(crate) type Tx = Transaction<'static, Any>;

/// The meta store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) db: Db,
    /// Shared with the outbox relay of this process (woken after a commit that wrote rows).
    pub(crate) relay: Arc<RelayState>,
}

/// A named table: where it lives, what it is called in messages and tags, how to select it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kind {
    pub(crate) table: &'static str,
    pub(crate) what: &'static str,
    /// `SELECT … FROM table t …` without a WHERE.
    pub(crate) select: &'static str,
}

impl Store {
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self {
            db,
            relay: Arc::default(),
        }
    }

    /// The database behind the store.
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// `true` when the database answers.
    pub async fn ping(&self) -> bool {
        self.db.ping().await
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// two writers never deadlock upgrading a read lock.
    pub(crate) async fn begin(&self) -> Result<Tx> {
        Ok(match self.db.backend {
            Backend::Sqlite => self.db.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.db.pool.begin().await?,
        })
    }

    /// Commits and, if outbox rows were written, wakes the relays and returns once the rows
    /// are on the bus (waiting at most a couple of seconds; see [`RelayState::committed`]).
    pub(crate) async fn commit(&self, mut tx: Tx, wrote_outbox: bool) -> Result<()> {
        if wrote_outbox && self.db.backend == Backend::Postgres {
            // Delivered on commit: the relays of other servers on this database wake too.
            sqlx::query(sqlx::AssertSqlSafe(format!("NOTIFY {OUTBOX_CHANNEL}")))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if wrote_outbox {
            self.relay.committed().await;
        }
        Ok(())
    }

    /// The id of a live project, or 422 naming `field`.
    pub(crate) async fn project_ref(
        &self,
        conn: &mut sqlx::AnyConnection,
        project: Option<&str>,
        field: &str,
    ) -> Result<Option<i64>> {
        let Some(name) = project else {
            return Ok(None);
        };
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM meta_projects WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
        id.map(Some).ok_or_else(|| {
            Error::unknown(field, format!("{field}: project {name:?} does not exist"))
        })
    }

    /// The id of a live row of `kind` named `name`, or 404.
    pub(crate) async fn live_id(
        &self,
        conn: &mut sqlx::AnyConnection,
        kind: Kind,
        name: &str,
    ) -> Result<i64> {
        let mut q = Sql::new("SELECT id FROM ");
        q.push(kind.table)
            .push(" WHERE name = ")
            .bind(name)
            .push(" AND deleted_at IS NULL");
        let row: Option<AnyRow> = q.query().fetch_optional(&mut *conn).await?;
        match row {
            Some(r) => sql::get_i(&r, "id"),
            None => Err(Error::not_found(kind.what, name)),
        }
    }

    /// Replaces the tag rows of one entity.
    pub(crate) async fn write_tags(
        tx: &mut Tx,
        kind: Kind,
        id: i64,
        tags: &BTreeMap<String, String>,
    ) -> Result<()> {
        sqlx::query("DELETE FROM meta_tags WHERE entity = $1 AND entity_id = $2")
            .bind(kind.table)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        for (k, v) in tags {
            sqlx::query("INSERT INTO meta_tags (entity, entity_id, k, v) VALUES ($1, $2, $3, $4)")
                .bind(kind.table)
                .bind(id)
                .bind(k)
                .bind(v)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Lists live rows of `kind` with the shared filters, oldest first, one page.
    pub(crate) async fn list_named(
        &self,
        kind: Kind,
        q: &ListQuery,
        extra: impl FnOnce(&mut Sql),
    ) -> Result<(Vec<AnyRow>, Option<String>)> {
        let limit = page_limit(
            q.limit,
            aiflow_api::page::DEFAULT_LIMIT,
            aiflow_api::page::MAX_LIMIT,
        )?;
        let after = q.cursor.as_deref().map(decode_id_cursor).transpose()?;
        let mut s = Sql::new(kind.select);
        s.push(" WHERE t.deleted_at IS NULL");
        if let Some(project) = &q.project {
            if kind.table == entities::PROJECTS.table {
                // Projects belong to no project: the project of a project is itself.
                s.push(" AND t.name = ").bind(project);
            } else {
                s.push(" AND t.project_id IN (SELECT id FROM meta_projects WHERE name = ")
                    .bind(project)
                    .push(" AND deleted_at IS NULL)");
            }
        }
        let mut tags = BTreeMap::new();
        if let Some(t) = &q.tags {
            let uri = parse_tag_uri(t, "tags", true)?;
            if let Some(name) = uri.name {
                s.push(" AND t.name = ").bind(name);
            }
            tags = uri.tags;
        }
        for (k, v) in tags {
            s.push(" AND t.id IN (SELECT entity_id FROM meta_tags WHERE entity = ")
                .bind(kind.table)
                .push(" AND k = ")
                .bind(k)
                .push(" AND v = ")
                .bind(v)
                .push(")");
        }
        if let Some(prefix) = &q.prefix
            && !prefix.is_empty()
        {
            // substr counts characters on both engines; LIKE differs in case rules.
            let n = prefix.chars().count();
            s.push(&format!(" AND substr(t.name, 1, {n}) = "))
                .bind(prefix);
        }
        if let Some(t) = q.created_after {
            s.push(" AND t.created_at >= ").bind(to_us(t));
        }
        if let Some(t) = q.created_before {
            s.push(" AND t.created_at < ").bind(to_us(t));
        }
        extra(&mut s);
        if let Some(a) = after {
            s.push(" AND t.id > ").bind(a);
        }
        s.push(" ORDER BY t.id LIMIT ").bind(limit + 1);
        let mut rows = s.query().fetch_all(&self.db.pool).await?;
        let next = page_cursor(&mut rows, limit)?;
        Ok((rows, next))
    }

    /// Soft-deletes the live row named `name`; its name can be used again.
    pub(crate) async fn soft_delete(&self, kind: Kind, name: &str) -> Result<()> {
        let mut s = Sql::new("UPDATE ");
        s.push(kind.table)
            .push(" SET deleted_at = ")
            .bind(sql::now_us())
            .push(" WHERE name = ")
            .bind(name)
            .push(" AND deleted_at IS NULL");
        let done = s.query().execute(&self.db.pool).await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(kind.what, name));
        }
        tracing::info!(what = kind.what, name, "deleted");
        Ok(())
    }
}

/// Cuts a fetched `limit + 1` rows to `limit` and gives the cursor of the next page.
pub(crate) fn page_cursor(rows: &mut Vec<AnyRow>, limit: i64) -> Result<Option<String>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let last = rows.last().map(|r| sql::get_i(r, "id")).transpose()?;
        Ok(last.map(encode_id_cursor))
    } else {
        Ok(None)
    }
}

/// A page from rows and a converter.
pub(crate) fn to_page<T>(
    rows: Vec<AnyRow>,
    next: Option<String>,
    f: impl Fn(&AnyRow) -> Result<T>,
) -> Result<Page<T>> {
    Ok(Page {
        items: rows.iter().map(f).collect::<Result<_>>()?,
        next_cursor: next,
    })
}

/// Maps a unique violation on insert to 409 naming `name`.
pub(crate) fn dup(what: &'static str, name: &str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| {
        if sql::is_unique_violation(&e) {
            Error::conflict(Some("name"), format!("{what} {name:?} already exists"))
        } else {
            Error::Db(e)
        }
    }
}
