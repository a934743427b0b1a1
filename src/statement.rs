//! InfluxQL statements: splitting a query into statements, classifying each one
//! for routing, and the forbidden/allowed statement filter.
//!
//! Follows the InfluxQL specification (InfluxDB 1.x "Influx Query Language
//! specification"): identifiers may be double-quoted, strings single-quoted,
//! regexes `/.../`; `db.rp.m`, `db..m` and `"quoted"."names"` are measurement
//! references.

/// Default forbidden statement patterns (regex-lite, matched case-insensitively
/// anywhere in the statement): GRANT, REVOKE, CREATE/DROP USER, SET PASSWORD,
/// SELECT ... INTO, CREATE/DROP CONTINUOUS QUERY, KILL QUERY.
pub const DEFAULT_FORBIDDEN: &[&str] = &[
    r"^\s*grant\b",
    r"^\s*revoke\b",
    r"^\s*(create|drop|alter)\s+user\b",
    r"^\s*set\s+password\b",
    r"^\s*select\b.*\binto\b",
    r"^\s*(create|drop)\s+continuous\s+query\b",
    r"^\s*kill\s+query\b",
];

/// A measurement reference in a FROM clause or DROP/DELETE statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementRef {
    /// `db` of `db.rp.m`, unquoted.
    pub database: Option<String>,
    /// `rp` of `db.rp.m` / `rp.m`, unquoted.
    pub retention_policy: Option<String>,
    /// The measurement name, unquoted and unescaped.
    pub name: String,
}

/// One source in a FROM clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Measurement(MeasurementRef),
    /// `/regex/` (the pattern between the slashes), possibly `db.rp./re/`.
    Regex(String),
}

/// How a statement is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// `SELECT ... FROM ...` or `SHOW ... FROM ...` (and `SHOW ... ON db FROM`):
    /// routed by the sources' replica sets to one healthy backend, failing over.
    ReadFrom(Vec<Source>),
    /// `SHOW ...` without FROM (DATABASES, MEASUREMENTS, RETENTION POLICIES,
    /// TAG KEYS, FIELD KEYS, SERIES, ...): every healthy backend, results merged.
    ShowAll,
    /// `CREATE DATABASE`, `DROP DATABASE`, `CREATE|ALTER|DROP RETENTION POLICY`:
    /// every backend; queued for backends that are down.
    SchemaAll,
    /// `DROP MEASUREMENT m`, `DROP SERIES FROM m`, `DELETE FROM m`: every
    /// backend of m's replica set; queued for backends that are down.
    SchemaMeasurement(MeasurementRef),
}

/// Splits a query on `;` outside single-quoted strings, double-quoted
/// identifiers and regex literals. Empty statements are dropped; each returned
/// statement is trimmed. Error: an unterminated string, identifier or regex.
pub fn split_statements(query: &str) -> Result<Vec<&str>, String> {
    let _ = query;
    todo!()
}

/// Classifies one statement. Errors (answered 400): an empty or unsupported
/// statement (e.g. `SELECT` without FROM, a DELETE or DROP SERIES without FROM),
/// or a malformed measurement reference.
pub fn classify(statement: &str) -> Result<StatementKind, String> {
    let _ = statement;
    todo!()
}

/// The forbidden/allowed statement filter (regex-lite, case-insensitive).
#[derive(Debug, Clone)]
pub struct StatementFilter {
    _private: (),
}

impl StatementFilter {
    /// Compiles the patterns. Error: the first pattern that does not compile,
    /// with regex-lite's message.
    pub fn new(forbidden: &[String], allowed: &[String]) -> Result<StatementFilter, String> {
        let _ = (forbidden, allowed);
        todo!()
    }

    /// `Err(message)` if the statement matches a forbidden pattern and no
    /// allowed pattern; the message names the statement.
    pub fn check(&self, statement: &str) -> Result<(), String> {
        let _ = statement;
        todo!()
    }
}
