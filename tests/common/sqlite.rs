//! What a test reads back from a database file, one query at a time.
#![allow(dead_code)]

use rusqlite::Connection;
use rusqlite::types::FromSql;

/// The single value `sql` selects.
pub fn value<T: FromSql>(conn: &Connection, sql: &str) -> T {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The first column of every row `sql` selects, in order.
pub fn column<T: FromSql, C: FromIterator<T>>(conn: &Connection, sql: &str) -> C {
    let mut statement = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    statement
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The push subscriptions of the database at `db`: (endpoint, topics,
/// lang), oldest first.
pub fn push_subscriptions(db: &std::path::Path) -> Vec<(String, String, String)> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT endpoint, topics, lang FROM bitsd_push_subscription ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
