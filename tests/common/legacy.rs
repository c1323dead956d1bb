//! A database as the original Python server left it.

use std::path::{Path, PathBuf};

/// `bits.db` in `dir`, written as the original left it ([`LEGACY_SCHEMA`]).
pub fn legacy_database(dir: &Path) -> PathBuf {
    let db = dir.join("bits.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(LEGACY_SCHEMA)
        .unwrap();
    db
}

/// The original's schema, as SQLAlchemy created it on SQLite, with a few
/// rows: 3 status changes, 3 samples, 1 message, 1 user, 1 page, 1 MAC hash.
pub const LEGACY_SCHEMA: &str = r#"
CREATE TABLE "Status" (
    timestamp DATETIME NOT NULL,
    value VARCHAR(6) NOT NULL,
    modified_by VARCHAR(4) NOT NULL,
    PRIMARY KEY (timestamp),
    CHECK (value IN ('open', 'closed', 'away')),
    CHECK (modified_by IN ('BITS', 'web'))
);
CREATE TABLE "Temperature" (
    timestamp DATETIME NOT NULL,
    value FLOAT NOT NULL,
    sensor INTEGER NOT NULL,
    modified_by VARCHAR(4) NOT NULL,
    PRIMARY KEY (timestamp, value),
    CHECK (modified_by IN ('BITS', 'web'))
);
CREATE TABLE "Message" (
    userid BIGINT NOT NULL,
    timestamp DATETIME NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (userid, timestamp)
);
CREATE TABLE "Pages" (
    slug VARCHAR(100) NOT NULL,
    title VARCHAR(100) NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (slug)
);
CREATE TABLE "User" (
    userid INTEGER NOT NULL,
    name VARCHAR(256) NOT NULL,
    password VARCHAR(512) NOT NULL,
    PRIMARY KEY (userid),
    UNIQUE (name)
);
CREATE TABLE "LoginAttempt" (
    id INTEGER NOT NULL,
    username VARCHAR(256) NOT NULL,
    ipaddress VARCHAR(39) NOT NULL,
    timestamp DATETIME NOT NULL,
    PRIMARY KEY (id)
);
CREATE TABLE "MACToUser" (
    userid INTEGER NOT NULL,
    mac_hash VARCHAR(64) NOT NULL,
    PRIMARY KEY (mac_hash),
    FOREIGN KEY(userid) REFERENCES "User" (userid)
);
INSERT INTO "User" VALUES (1, 'alice', '$6$rounds=656000$saltsalt$oldhasholdhasholdhash');
INSERT INTO "Status" VALUES ('2013-05-01 18:00:00', 'open', 'BITS');
INSERT INTO "Status" VALUES ('2013-05-01 23:10:00.250000', 'closed', 'web');
INSERT INTO "Status" VALUES ('2013-05-02 09:30:00.123456', 'away', 'BITS');
INSERT INTO "Temperature" VALUES ('2013-05-02 09:00:00', 19.5, 0, 'BITS');
INSERT INTO "Temperature" VALUES ('2013-05-02 09:05:00.5', 20.0, 1, 'BITS');
INSERT INTO "Temperature" VALUES ('2013-05-02 09:10:00.000001', 20.5, 0, 'BITS');
INSERT INTO "Message" VALUES (1, '2013-05-02 10:00:00.000000', 'pizza <b>tonight</b>');
INSERT INTO "Pages" VALUES ('rules', 'Rules', '# Rules

Be nice.');
INSERT INTO "MACToUser" VALUES (1, 'abc123');
"#;
