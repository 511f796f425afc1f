//! Full-text search over the `event_search` index (migration 0011), in rank or recency order,
//! paged by keyset so that a page boundary never skips or repeats a match.

use sqlx::PgPool;

use super::StorageResult;

/// One match: where it is and how well it matched.
#[derive(Clone, Debug)]
pub struct SearchHit {
    pub event_id: String,
    pub room_id: String,
    pub stream_ordering: i64,
    pub rank: f32,
}

/// Where the previous page stopped: `(rank, stream position)` of its last match.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchCursor {
    pub rank: f32,
    pub stream_ordering: i64,
}

/// What to search.
#[derive(Debug)]
pub struct SearchQuery<'a> {
    pub rooms: &'a [String],
    /// A `to_tsquery` expression over the `simple` configuration (built by the service).
    pub tsquery: &'a str,
    pub keys: &'a [String],
    pub by_rank: bool,
    pub after: Option<SearchCursor>,
    pub limit: i64,
}

#[derive(Clone, Debug)]
pub struct SearchStore {
    pool: PgPool,
}

impl SearchStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The next `limit` matches after the cursor.
    pub async fn search(&self, q: &SearchQuery<'_>) -> StorageResult<Vec<SearchHit>> {
        let (rank, pos) = q.after.map_or((None, None), |c| (Some(c.rank), Some(c.stream_ordering)));
        let hits = if q.by_rank {
            sqlx::query_as!(
                SearchHit,
                r#"SELECT event_id AS "event_id!", room_id AS "room_id!", stream_ordering AS "stream_ordering!",
                          rank AS "rank!"
                   FROM (SELECT s.event_id, s.room_id, s.stream_ordering, ts_rank_cd(s.vector, q)::real AS rank
                         FROM event_search s, to_tsquery('simple', $2) q
                         WHERE s.room_id = ANY($1) AND s.key = ANY($3) AND s.vector @@ q
                           AND s.stream_ordering > 0) m
                   WHERE $4::real IS NULL OR (m.rank, m.stream_ordering) < ($4, $5)
                   ORDER BY m.rank DESC, m.stream_ordering DESC
                   LIMIT $6"#,
                q.rooms,
                q.tsquery,
                q.keys,
                rank,
                pos,
                q.limit
            )
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query_as!(
                SearchHit,
                r#"SELECT s.event_id, s.room_id, s.stream_ordering, ts_rank_cd(s.vector, q)::real AS "rank!"
                   FROM event_search s, to_tsquery('simple', $2) q
                   WHERE s.room_id = ANY($1) AND s.key = ANY($3) AND s.vector @@ q AND s.stream_ordering > 0
                     AND ($4::bigint IS NULL OR s.stream_ordering < $4)
                   ORDER BY s.stream_ordering DESC
                   LIMIT $5"#,
                q.rooms,
                q.tsquery,
                q.keys,
                pos,
                q.limit
            )
            .fetch_all(&self.pool)
            .await?
        };
        Ok(hits)
    }

    /// How many events match in all (before visibility and filters are applied).
    pub async fn count(&self, rooms: &[String], tsquery: &str, keys: &[String]) -> StorageResult<i64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM event_search s, to_tsquery('simple', $2) q
               WHERE s.room_id = ANY($1) AND s.key = ANY($3) AND s.vector @@ q"#,
            rooms,
            tsquery,
            keys
        )
        .fetch_one(&self.pool)
        .await?)
    }
}
