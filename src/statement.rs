//! InfluxQL statements: splitting a query into statements, classifying each one
//! for routing, and the forbidden/allowed statement filter.
//!
//! Follows the InfluxQL specification (InfluxDB 1.x "Influx Query Language
//! specification"): identifiers may be double-quoted, strings single-quoted,
//! regexes `/.../`; `db.rp.m`, `db..m` and `"quoted"."names"` are measurement
//! references.

/// Default forbidden statement patterns (regex-lite, matched
/// case-insensitively against the statement with comments removed and
/// whitespace runs collapsed to one space, see [`StatementFilter::check`]):
/// GRANT, REVOKE, CREATE/DROP USER, SET PASSWORD, SELECT ... INTO,
/// CREATE/DROP CONTINUOUS QUERY, KILL QUERY, CREATE/DROP SUBSCRIPTION.
///
/// CREATE/DROP SUBSCRIPTION are forbidden because a subscription makes every
/// backend copy its writes to another host (InfluxDB 1.x "Manage
/// subscriptions"): through the proxy each replica would send its own copy.
/// Allowed by `allowed_statements`, they go to every backend like schema
/// statements ([`StatementKind::SchemaAll`]).
///
/// The SELECT ... INTO pattern skips over single-quoted strings and
/// double-quoted identifiers, so `SELECT "into" FROM m` or
/// `WHERE host = 'into'` are not refused. Limit: a regex literal containing
/// the word (`FROM /into/`) is still refused, since a regex cannot tell a
/// `/regex/` from a division.
pub const DEFAULT_FORBIDDEN: &[&str] = &[
    r"^\s*grant\b",
    r"^\s*revoke\b",
    r"^\s*(create|drop|alter)\s+user\b",
    r"^\s*set\s+password\b",
    r#"^\s*select\b(?:[^'"]|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")*?\binto\b"#,
    r"^\s*(create|drop)\s+continuous\s+query\b",
    r"^\s*kill\s+query\b",
    r"^\s*(create|drop)\s+subscription\b",
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
    /// `/regex/`, possibly `db.rp./re/` or `rp./re/`: the pattern between
    /// the slashes, and the database named before it (unquoted), if any.
    Regex {
        pattern: String,
        database: Option<String>,
    },
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
    /// `DROP SERIES` / `DELETE` FROM several measurements or a regex, or
    /// without FROM (an empty list: every measurement): every backend of each
    /// measurement's replica set, every backend for a regex or without FROM;
    /// queued for backends that are down.
    SchemaSources(Vec<Source>),
    /// `EXPLAIN [ANALYZE] [VERBOSE] SELECT ... FROM sources` (influxql
    /// `ExplainStatement`): routed like the SELECT it explains, to one
    /// healthy backend holding the sources, failing over; the answer is that
    /// backend's plan.
    Explain(Vec<Source>),
    /// `SELECT ... INTO ... FROM sources` (forbidden by default; reaches the
    /// proxy only through `allowed_statements`): run on every backend of the
    /// sources' replica sets, each replica computing its own copy, queued for
    /// backends that are down.
    SelectInto(Vec<Source>),
}

/// Splits a query on `;` outside single-quoted strings, double-quoted
/// identifiers and regex literals. Empty statements are dropped; each returned
/// statement is trimmed. Error: an unterminated string, identifier or regex.
///
/// Comments (`-- ...` to the end of the line and `/* ... */`, as the InfluxQL
/// scanner skips them) are skipped too; a statement runs from its first token
/// to its last, so comments before or after it are not part of it.
///
/// A `/` starts a regex literal only where no operand precedes it (after
/// `=~`, `!~`, `FROM`, `,`, `.`, `(`, `SELECT`, `BY`, an operator, ...): after
/// an identifier, number, string or `)` it is a division, so `SELECT a / b`
/// is not a regex.
pub fn split_statements(query: &str) -> Result<Vec<&str>, String> {
    Ok(parse_statements(query)?.into_iter().map(|s| s.text).collect())
}

/// [`split_statements`], each statement with its tokens: the query is
/// tokenized once, and the statement filter, the classifier and the
/// LIMIT/OFFSET rewrite of a statement all read the same tokens.
pub fn parse_statements(query: &str) -> Result<Vec<Statement<'_>>, String> {
    let tokens = tokenize(query)?;
    let mut statements = Vec::new();
    // The tokens of the statement being read, offsets still in `query`.
    let mut current: Vec<Token> = Vec::new();
    let mut finish = |current: &mut Vec<Token>| {
        let (Some(first), Some(last)) = (current.first(), current.last()) else { return };
        let (start, end) = (first.start, last.end);
        let mut tokens = std::mem::take(current);
        for token in &mut tokens {
            token.start -= start;
            token.end -= start;
        }
        statements.push(Statement { text: &query[start..end], tokens });
    };
    for token in tokens {
        if token.is_punct(";") {
            finish(&mut current);
        } else {
            current.push(token);
        }
    }
    finish(&mut current);
    Ok(statements)
}

/// One InfluxQL statement and its tokens (offsets into [`Statement::text`]),
/// tokenized once ([`parse_statements`], [`Statement::parse`]).
#[derive(Debug, Clone)]
pub struct Statement<'q> {
    text: &'q str,
    tokens: Vec<Token>,
}

impl<'q> Statement<'q> {
    /// Tokenizes one statement (trimmed). Error: an unterminated string,
    /// identifier or regex.
    pub fn parse(text: &'q str) -> Result<Statement<'q>, String> {
        let text = text.trim();
        Ok(Statement { text, tokens: tokenize(text)? })
    }

    /// The statement's text as the client sent it (trimmed).
    pub fn text(&self) -> &'q str {
        self.text
    }

    /// See [`classify`].
    pub fn classify(&self) -> Result<StatementKind, String> {
        classify_tokens(self.text, &self.tokens)
    }

    /// See [`show_on_database`].
    pub fn show_on_database(&self) -> Option<String> {
        show_on_database_tokens(&self.tokens)
    }

    /// See [`show_limit_offset`].
    pub fn show_limit_offset(&self) -> Result<(Option<u64>, Option<u64>), String> {
        let clauses = limit_offset_clauses(self.text, &self.tokens)?;
        Ok((clauses.limit.map(|c| c.value), clauses.offset.map(|c| c.value)))
    }

    /// See [`show_statement_for_backends`].
    pub fn for_backends(&self) -> Result<String, String> {
        show_for_backends(self.text, &self.tokens)
    }

    /// The database a statement names for itself, for token scopes
    /// ([`crate::auth`]): `name` of `CREATE DATABASE name` / `DROP DATABASE
    /// name`, else the database of its top-level `ON db` clause (retention
    /// policy statements, `SHOW ... ON db`, `GRANT ... ON db`), else `None`
    /// (the `db` parameter applies).
    pub fn database(&self) -> Option<String> {
        let t = &self.tokens;
        if t.len() >= 3
            && (t[0].is_keyword("CREATE") || t[0].is_keyword("DROP"))
            && t[1].is_keyword("DATABASE")
        {
            return t[2].name().map(str::to_string);
        }
        on_clause_database(t)
    }

    /// True when the statement's top-level `ON` is followed by something
    /// other than a name, e.g. a bound parameter (`ON $d`, which influxd
    /// fills from `params`): its database is not known before it runs.
    pub fn has_unnamed_on_clause(&self) -> bool {
        let t = &self.tokens;
        let mut depth = 0usize;
        for (i, token) in t.iter().enumerate() {
            if token.is_punct("(") {
                depth += 1;
            } else if token.is_punct(")") {
                depth = depth.saturating_sub(1);
            } else if depth == 0 && token.is_keyword("ON") {
                return !matches!(
                    t.get(i + 1).map(|t| &t.kind),
                    Some(TokenKind::Ident(_) | TokenKind::QuotedIdent(_))
                );
            }
        }
        false
    }

    /// The first two words, upper-cased (`"DROP MEASUREMENT"`), for
    /// telling statements of one [`StatementKind`] apart.
    pub fn leading_keywords(&self) -> String {
        let words: Vec<String> = self
            .tokens
            .iter()
            .take(2)
            .filter_map(|t| match &t.kind {
                TokenKind::Ident(w) => Some(w.to_ascii_uppercase()),
                _ => None,
            })
            .collect();
        words.join(" ")
    }

    /// True when the first word is `SHOW`.
    pub fn is_show(&self) -> bool {
        self.tokens.first().is_some_and(|t| t.is_keyword("SHOW"))
    }
}

/// Classifies one statement. Errors (answered 400): an empty or unsupported
/// statement (e.g. `SELECT` without FROM, `KILL QUERY`, `DROP SHARD`),
/// a malformed measurement reference, or a `SHOW` without FROM whose LIMIT or
/// OFFSET is malformed (see [`show_limit_offset`]).
///
/// Keywords are case-insensitive; identifiers keep their case (InfluxQL
/// identifiers are case-sensitive). Sources of `FROM (SELECT ...)` subqueries
/// are those of the innermost FROM clauses.
pub fn classify(statement: &str) -> Result<StatementKind, String> {
    classify_tokens(statement, &tokenize(statement)?)
}

fn classify_tokens(statement: &str, tokens: &[Token]) -> Result<StatementKind, String> {
    let tokens = match tokens.split_last() {
        Some((last, rest)) if last.is_punct(";") => rest,
        _ => tokens,
    };
    if tokens.iter().any(|t| t.is_punct(";")) {
        return Err("expected one InfluxQL statement, found several separated by ';'".to_string());
    }
    let mut parser = Parser { tokens, pos: 0 };
    let keyword = match parser.next() {
        Some(Token { kind: TokenKind::Ident(word), .. }) => word.to_ascii_uppercase(),
        Some(token) => return Err(format!("expected an InfluxQL statement, found {}", token.describe())),
        None => return Err("empty InfluxQL statement".to_string()),
    };
    match keyword.as_str() {
        "SELECT" => {
            let into = parser
                .tokens
                .iter()
                .any(|t| matches!(&t.kind, TokenKind::Ident(w) if w.eq_ignore_ascii_case("INTO")));
            let sources = parser.select_sources(false)?;
            if into {
                Ok(StatementKind::SelectInto(sources))
            } else {
                Ok(StatementKind::ReadFrom(sources))
            }
        }
        // Administration statements: forbidden by default; when a config
        // allows them they go to every backend (users, grants and continuous
        // queries live on each InfluxDB server).
        "GRANT" | "REVOKE" => Ok(StatementKind::SchemaAll),
        "SET" if parser.next_keyword().as_deref() == Some("PASSWORD") => Ok(StatementKind::SchemaAll),
        "EXPLAIN" => {
            let mut analyze = false;
            if parser.peek().is_some_and(|t| t.is_keyword("ANALYZE")) {
                analyze = true;
                parser.pos += 1;
            }
            if parser.peek().is_some_and(|t| t.is_keyword("VERBOSE")) {
                parser.pos += 1;
            }
            if !parser.peek().is_some_and(|t| t.is_keyword("SELECT")) {
                return Err(format!("expected SELECT after EXPLAIN, found {}", parser.found()));
            }
            parser.pos += 1;
            let into = parser.tokens[parser.pos..].iter().any(|t| t.is_keyword("INTO"));
            if analyze && into {
                // EXPLAIN ANALYZE executes the query it explains.
                return Err("EXPLAIN ANALYZE of SELECT ... INTO is not supported by the proxy".to_string());
            }
            Ok(StatementKind::Explain(parser.select_sources(false)?))
        }
        // Query IDs (SHOW QUERIES) and shard IDs (SHOW SHARDS) are each
        // backend's own: the same number names different things on each.
        "KILL" => Err(
            "KILL QUERY is not supported by the proxy: query IDs are per backend (run it on the backend that \
             SHOW QUERIES lists)"
                .to_string(),
        ),
        "SHOW" => {
            let kind = parser.show()?;
            if kind == StatementKind::ShowAll {
                // The proxy rewrites and re-applies LIMIT/OFFSET of a fanned-out
                // SHOW, so a malformed clause is refused before anything is sent.
                limit_offset_clauses(statement, tokens)?;
            }
            Ok(kind)
        }
        "CREATE" => match parser.next_keyword().as_deref() {
            Some("DATABASE" | "USER" | "SUBSCRIPTION") => Ok(StatementKind::SchemaAll),
            Some("CONTINUOUS") if parser.next_keyword().as_deref() == Some("QUERY") => {
                Ok(StatementKind::SchemaAll)
            }
            Some("RETENTION") if parser.next_keyword().as_deref() == Some("POLICY") => {
                Ok(StatementKind::SchemaAll)
            }
            other => Err(unsupported("CREATE", other)),
        },
        "ALTER" => match parser.next_keyword().as_deref() {
            Some("USER") => Ok(StatementKind::SchemaAll),
            Some("RETENTION") if parser.next_keyword().as_deref() == Some("POLICY") => {
                Ok(StatementKind::SchemaAll)
            }
            other => Err(unsupported("ALTER", other)),
        },
        "DROP" => match parser.next_keyword().as_deref() {
            Some("DATABASE" | "USER" | "SUBSCRIPTION") => Ok(StatementKind::SchemaAll),
            Some("SHARD") => Err(
                "DROP SHARD is not supported by the proxy: shard IDs are per backend (run it on the backend that \
                 SHOW SHARDS lists)"
                    .to_string(),
            ),
            Some("CONTINUOUS") if parser.next_keyword().as_deref() == Some("QUERY") => {
                Ok(StatementKind::SchemaAll)
            }
            Some("RETENTION") if parser.next_keyword().as_deref() == Some("POLICY") => {
                Ok(StatementKind::SchemaAll)
            }
            Some("MEASUREMENT") => {
                let measurement = match parser.measurement_source()? {
                    Source::Measurement(m) => m,
                    Source::Regex { .. } => {
                        return Err("DROP MEASUREMENT takes a measurement name, not a regex".to_string())
                    }
                };
                parser.expect_end_or(&[], "DROP MEASUREMENT")?;
                Ok(StatementKind::SchemaMeasurement(measurement))
            }
            Some("SERIES") => parser.delete_sources("DROP SERIES"),
            other => Err(unsupported("DROP", other)),
        },
        "DELETE" => parser.delete_sources("DELETE"),
        _ => Err(format!("{keyword} statements are not supported by the proxy")),
    }
}

/// The database of a `SHOW ... ON db ...` statement (`db` unquoted), if it
/// names one: InfluxQL's `ON_clause` of SHOW MEASUREMENTS, SERIES, TAG KEYS,
/// TAG VALUES, FIELD KEYS and RETENTION POLICIES. `None` for any other
/// statement or one that does not tokenize.
pub fn show_on_database(statement: &str) -> Option<String> {
    show_on_database_tokens(&tokenize(statement).ok()?)
}

fn show_on_database_tokens(tokens: &[Token]) -> Option<String> {
    if !tokens.first()?.is_keyword("SHOW") {
        return None;
    }
    on_clause_database(tokens)
}

/// The database of the first top-level (outside parentheses) `ON db`.
fn on_clause_database(tokens: &[Token]) -> Option<String> {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate() {
        if token.is_punct("(") {
            depth += 1;
        } else if token.is_punct(")") {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && token.is_keyword("ON") {
            return match &tokens.get(i + 1)?.kind {
                TokenKind::Ident(name) | TokenKind::QuotedIdent(name) => Some(name.clone()),
                _ => None,
            };
        }
    }
    None
}

/// The top-level `LIMIT n` and `OFFSET m` of a `SHOW` statement, as
/// `(limit, offset)`; `None` for a clause that is absent. InfluxQL
/// specification: `SHOW MEASUREMENTS ... [LIMIT_clause] [OFFSET_clause]`, and
/// likewise SHOW SERIES, TAG KEYS, TAG VALUES and FIELD KEYS.
///
/// Only unquoted `LIMIT` / `OFFSET` keywords outside parentheses count:
/// `SLIMIT` / `SOFFSET`, quoted identifiers, strings and regexes are not
/// clauses. Like InfluxDB, the caller should treat `LIMIT 0` as "no limit"
/// and `OFFSET 0` as "no offset".
///
/// Errors: the statement does not tokenize, a clause is not followed by a
/// whole number of rows from 0 to 2^63-1 (`LIMIT x`, `LIMIT 1.5`, `LIMIT -1`),
/// or a clause is given twice.
pub fn show_limit_offset(statement: &str) -> Result<(Option<u64>, Option<u64>), String> {
    Statement::parse(statement)?.show_limit_offset()
}

/// The text of a `SHOW` statement to send to each backend when the proxy
/// fans it out and merges the answers: `OFFSET m` is removed and `LIMIT n`
/// becomes `LIMIT n+m`, so that each backend returns every row that could
/// fall in the window `[m, m+n)` of the merged, sorted union; the proxy then
/// applies `OFFSET m` and `LIMIT n` itself (see
/// [`crate::results::window_show_rows`]). `LIMIT 0` (no limit) is kept as is.
/// A statement without OFFSET is returned unchanged; nothing else in the
/// text (comments, spacing, case) is touched. A sum above 2^63-1 (InfluxDB's
/// largest LIMIT) is capped at it.
///
/// Errors: as [`show_limit_offset`].
pub fn show_statement_for_backends(statement: &str) -> Result<String, String> {
    show_for_backends(statement, &tokenize(statement)?)
}

fn show_for_backends(statement: &str, tokens: &[Token]) -> Result<String, String> {
    let clauses = limit_offset_clauses(statement, tokens)?;
    let Some(offset) = clauses.offset else {
        return Ok(statement.to_string());
    };
    // Edits as (start, end, replacement) byte spans, applied left to right.
    // Removing the clause joins the tokens around it; where a `/` follows,
    // what precedes it decides whether it divides or starts a regex, so the
    // clause is kept there as a harmless `OFFSET 0` (found by fuzzing:
    // `SHOW SERIES% OFFSET 2 / b` must not become `SHOW SERIES% / b`).
    let slash_follows = statement[offset.end..].trim_start().starts_with('/');
    let removed = if slash_follows { " OFFSET 0".to_string() } else { String::new() };
    let mut edits: Vec<(usize, usize, String)> = vec![(offset.clause_start, offset.end, removed)];
    if let Some(limit) = clauses.limit.filter(|l| l.value > 0) {
        let raised = limit.value.saturating_add(offset.value).min(MAX_ROWS);
        edits.push((limit.keyword_start, limit.end, format!("LIMIT {raised}")));
    }
    crate::sort::sort_by_key(&mut edits, |&(start, _, _)| start);
    let mut text = String::with_capacity(statement.len() + 8);
    let mut copied = 0;
    for (start, end, replacement) in edits {
        text.push_str(&statement[copied..start]);
        text.push_str(&replacement);
        copied = end;
    }
    text.push_str(&statement[copied..]);
    Ok(text)
}

/// The largest LIMIT or OFFSET InfluxDB accepts (a Go `int64`).
const MAX_ROWS: u64 = i64::MAX as u64;

/// A `LIMIT n` or `OFFSET m` clause of a statement.
#[derive(Debug, Clone, Copy)]
struct RowClause {
    value: u64,
    /// Where the keyword starts.
    keyword_start: usize,
    /// Where the token before the keyword ends (so removing
    /// `clause_start..end` also removes the space before the clause).
    clause_start: usize,
    /// Where the number ends.
    end: usize,
}

#[derive(Debug, Default)]
struct RowClauses {
    limit: Option<RowClause>,
    offset: Option<RowClause>,
}

/// Finds the top-level `LIMIT` and `OFFSET` clauses; see [`show_limit_offset`].
fn limit_offset_clauses(statement: &str, tokens: &[Token]) -> Result<RowClauses, String> {
    let mut clauses = RowClauses::default();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let keyword = if token.is_keyword("LIMIT") {
            "LIMIT"
        } else if token.is_keyword("OFFSET") {
            "OFFSET"
        } else {
            if token.is_punct("(") {
                depth += 1;
            } else if token.is_punct(")") {
                depth = depth.saturating_sub(1);
            }
            i += 1;
            continue;
        };
        if depth > 0 {
            i += 1;
            continue;
        }
        let number = match tokens.get(i + 1) {
            Some(n) if n.kind == TokenKind::Number => n,
            other => {
                let found = other.map_or_else(|| "the end of the statement".to_string(), Token::describe);
                return Err(format!("expected a number of rows after {keyword}, found {found}"));
            }
        };
        let text = &statement[number.start..number.end];
        let value = match text.parse::<u64>() {
            Ok(value) if value <= MAX_ROWS => value,
            _ => {
                return Err(format!(
                    "invalid {keyword} {text}: expected a whole number of rows up to {MAX_ROWS}"
                ))
            }
        };
        let slot = if keyword == "LIMIT" { &mut clauses.limit } else { &mut clauses.offset };
        if slot.is_some() {
            return Err(format!("{keyword} is given more than once"));
        }
        let clause_start = if i == 0 { token.start } else { tokens[i - 1].end };
        *slot = Some(RowClause { value, keyword_start: token.start, clause_start, end: number.end });
        i += 2;
    }
    Ok(clauses)
}

/// The forbidden/allowed statement filter (regex-lite, case-insensitive).
#[derive(Debug, Clone)]
pub struct StatementFilter {
    forbidden: Vec<regex_lite::Regex>,
    allowed: Vec<regex_lite::Regex>,
}

impl StatementFilter {
    /// Compiles the patterns. Error: the first pattern that does not compile,
    /// with regex-lite's message.
    pub fn new(forbidden: &[String], allowed: &[String]) -> Result<StatementFilter, String> {
        let compile = |patterns: &[String]| -> Result<Vec<regex_lite::Regex>, String> {
            patterns
                .iter()
                .map(|pattern| {
                    regex_lite::RegexBuilder::new(pattern)
                        .case_insensitive(true)
                        .build()
                        .map_err(|e| format!("invalid statement pattern {pattern:?}: {e}"))
                })
                .collect()
        };
        Ok(StatementFilter { forbidden: compile(forbidden)?, allowed: compile(allowed)? })
    }

    /// `Err(message)` if the statement matches a forbidden pattern and no
    /// allowed pattern; the message names the statement
    /// (`statement forbidden by the proxy: <statement>`).
    ///
    /// Patterns are matched against the statement with its comments removed
    /// and each whitespace run collapsed to one space, trimmed, so
    /// `GRANT /* x */ ALL` and `grant\n all` look like `GRANT ALL`.
    pub fn check(&self, statement: &str) -> Result<(), String> {
        let normalised = match tokenize(statement) {
            Ok(tokens) => normalise(statement, &tokens),
            // Does not tokenize (an unterminated string...): only the
            // whitespace is collapsed.
            Err(_) => statement.split_whitespace().collect::<Vec<_>>().join(" "),
        };
        self.check_normalised(normalised)
    }

    /// [`StatementFilter::check`] of a statement already tokenized.
    pub fn check_statement(&self, statement: &Statement<'_>) -> Result<(), String> {
        self.check_normalised(normalise(statement.text, &statement.tokens))
    }

    fn check_normalised(&self, normalised: String) -> Result<(), String> {
        let forbidden = self.forbidden.iter().any(|re| re.is_match(&normalised));
        if forbidden && !self.allowed.iter().any(|re| re.is_match(&normalised)) {
            return Err(format!("statement forbidden by the proxy: {normalised}"));
        }
        Ok(())
    }
}

/// The statement with comments replaced by a space and whitespace runs
/// collapsed to one space, trimmed (`tokens`: the statement's).
fn normalise(statement: &str, tokens: &[Token]) -> String {
    let mut text = String::with_capacity(statement.len());
    let mut previous_end = None;
    for token in tokens {
        if let Some(end) = previous_end {
            // Whatever lies between two tokens is whitespace or a comment.
            if end < token.start {
                text.push(' ');
            }
        }
        text.push_str(&statement[token.start..token.end]);
        previous_end = Some(token.end);
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn unsupported(verb: &str, what: Option<&str>) -> String {
    match what {
        Some(what) => format!("{verb} {what} statements are not supported by the proxy"),
        None => format!("incomplete {verb} statement"),
    }
}

/// Keywords that end a FROM clause's source list.
const SOURCE_LIST_END: &[&str] =
    &["WHERE", "GROUP", "ORDER", "LIMIT", "OFFSET", "SLIMIT", "SOFFSET", "FILL", "TZ", "INTO", "WITH"];

/// Keywords after which a `/` starts a regex literal (the InfluxQL parser
/// expects an expression or a source there, never a division).
const REGEX_AFTER_KEYWORD: &[&str] = &["SELECT", "FROM", "WHERE", "AND", "OR", "BY"];

/// What an InfluxQL token is (see [`tokenize`]). Shared with the
/// shard-query merge (`shard_query`), which reads SELECTs with the same
/// tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// An unquoted identifier or keyword, as written.
    Ident(String),
    /// A double-quoted identifier, unquoted and unescaped.
    QuotedIdent(String),
    /// A single-quoted string, unquoted and unescaped.
    Str(String),
    /// The pattern of a `/regex/` (`\/` unescaped to `/`).
    Regex(String),
    /// A number or duration literal (`10`, `1.5`, `5m`).
    Number,
    /// Punctuation or an operator (`;`, `,`, `.`, `(`, `=~`, ...).
    Punct(String),
}

/// One InfluxQL token and its byte span in the text: `text[start..end]` is
/// the token as written (quotes and escapes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Token {
    /// Whether this is the punctuation or operator `p` (`(`, `::`, `=~`, ...).
    pub(crate) fn is_punct(&self, p: &str) -> bool {
        matches!(&self.kind, TokenKind::Punct(q) if q == p)
    }

    /// Whether this is the unquoted word `keyword`, in any case (a quoted
    /// identifier is never a keyword).
    pub(crate) fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.kind, TokenKind::Ident(word) if word.eq_ignore_ascii_case(keyword))
    }

    /// The name of an identifier, plain or double-quoted (unescaped).
    pub(crate) fn name(&self) -> Option<&str> {
        match &self.kind {
            TokenKind::Ident(name) | TokenKind::QuotedIdent(name) => Some(name),
            _ => None,
        }
    }

    fn is_any_keyword(&self, keywords: &[&str]) -> bool {
        keywords.iter().any(|k| self.is_keyword(k))
    }

    /// Whether this token can end an operand, so that a following `/` is a
    /// division rather than the start of a regex.
    pub(crate) fn ends_operand(&self) -> bool {
        match &self.kind {
            TokenKind::Ident(_) => !self.is_any_keyword(REGEX_AFTER_KEYWORD),
            TokenKind::QuotedIdent(_) | TokenKind::Str(_) | TokenKind::Regex(_) | TokenKind::Number => true,
            TokenKind::Punct(p) => p == ")",
        }
    }

    fn describe(&self) -> String {
        match &self.kind {
            TokenKind::Ident(s) => format!("`{s}`"),
            TokenKind::QuotedIdent(s) => format!("identifier \"{s}\""),
            TokenKind::Str(_) => "a string".to_string(),
            TokenKind::Regex(r) => format!("regex /{r}/"),
            TokenKind::Number => "a number".to_string(),
            TokenKind::Punct(p) => format!("`{p}`"),
        }
    }
}

/// Splits InfluxQL text into tokens, skipping whitespace and comments
/// (`-- ...` to the end of the line, `/* ... */`), as influxql's scanner
/// does: strings and quoted identifiers are unescaped (`\\`, `\"`, `\'`,
/// `\n`; see [`scan_quoted`]); numbers and durations follow its
/// `scanNumber`; a `/` is a regex unless it follows an operand
/// ([`Token::ends_operand`]), the parser's rule; the two-character operators
/// are `=~ !~ != <> <= >= ::`.
/// Errors: an unterminated string, quoted identifier, regex or comment.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let bytes = text.as_bytes();
    let mut tokens: Vec<Token> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let b = bytes[i];
        let kind = match b {
            _ if b.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = text[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let close = text[i + 2..].find("*/").ok_or("unterminated /* comment")?;
                i = i + 2 + close + 2;
                continue;
            }
            b'/' if !tokens.last().is_some_and(Token::ends_operand) => {
                let (pattern, end) = scan_regex(text, i)?;
                i = end;
                TokenKind::Regex(pattern)
            }
            b'\'' => {
                let (value, end) = scan_quoted(text, i, b'\'', "string")?;
                i = end;
                TokenKind::Str(value)
            }
            b'"' => {
                let (value, end) = scan_quoted(text, i, b'"', "identifier")?;
                i = end;
                TokenKind::QuotedIdent(value)
            }
            _ if b.is_ascii_alphabetic() || b == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                TokenKind::Ident(text[start..i].to_string())
            }
            // As influxql's `scanNumber`: digits, or `.` and a digit (`.5`).
            _ if b.is_ascii_digit() || (b == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) => {
                let digits = |mut i: usize| {
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    i
                };
                i = digits(i);
                if bytes.get(i) == Some(&b'.') {
                    // A decimal (`1.5`, also `1.`): its digits end it.
                    i = digits(i + 1);
                } else if bytes.get(i).is_some_and(u8::is_ascii_alphabetic) || text[i..].starts_with('µ') {
                    // A duration (`5m`, `10ms`, `1µ`): letters, `µ` and digits.
                    loop {
                        if bytes.get(i).is_some_and(u8::is_ascii_alphanumeric) {
                            i += 1;
                        } else if text[i..].starts_with('µ') {
                            i += 'µ'.len_utf8();
                        } else {
                            break;
                        }
                    }
                }
                TokenKind::Number
            }
            _ => {
                const TWO: &[&str] = &["=~", "!~", "!=", "<>", "<=", ">=", "::"];
                let len = if TWO.iter().any(|op| text[i..].starts_with(op)) {
                    2
                } else {
                    text[i..].chars().next().map_or(1, char::len_utf8)
                };
                i += len;
                TokenKind::Punct(text[start..i].to_string())
            }
        };
        tokens.push(Token { kind, start, end: i });
    }
    Ok(tokens)
}

/// Scans a `'string'` or `"identifier"` starting at `start` (the opening
/// quote); returns the unescaped value and the index after the closing quote.
/// Escapes: `\n`, `\\`, `\'`, `\"`; other backslash pairs are kept as written
/// (InfluxDB itself refuses them).
fn scan_quoted(text: &str, start: usize, quote: u8, what: &str) -> Result<(String, usize), String> {
    let mut value = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((offset, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, e @ ('\\' | '\'' | '"'))) => value.push(e),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => break,
            },
            c if c as u32 == u32::from(quote) => return Ok((value, start + 1 + offset + 1)),
            c => value.push(c),
        }
    }
    Err(format!("unterminated {what} starting at byte {start}: {}", excerpt(&text[start..])))
}

/// Scans a `/regex/` starting at `start` (the opening slash); returns the
/// pattern (with `\/` unescaped, other escapes kept for the regex) and the
/// index after the closing slash.
fn scan_regex(text: &str, start: usize) -> Result<(String, usize), String> {
    let mut pattern = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((offset, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => pattern.push('/'),
                Some((_, other)) => {
                    pattern.push('\\');
                    pattern.push(other);
                }
                None => break,
            },
            '/' => return Ok((pattern, start + 1 + offset + 1)),
            c => pattern.push(c),
        }
    }
    Err(format!("unterminated regex starting at byte {start}: {}", excerpt(&text[start..])))
}

/// The first 40 characters of `text`, for error messages.
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(40).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    out
}

/// A cursor over a statement's tokens, for [`classify`].
struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        if token.is_some() {
            self.pos += 1;
        }
        token
    }

    /// The next token as an upper-case keyword, if it is an unquoted word.
    fn next_keyword(&mut self) -> Option<String> {
        match self.peek() {
            Some(Token { kind: TokenKind::Ident(word), .. }) => {
                let word = word.to_ascii_uppercase();
                self.pos += 1;
                Some(word)
            }
            _ => None,
        }
    }

    fn found(&self) -> String {
        self.peek().map_or_else(|| "the end of the statement".to_string(), Token::describe)
    }

    /// After SELECT: skips the field list (and INTO) to the FROM at this
    /// nesting level and returns its sources. `nested`: inside `( ... )`, the
    /// statement ends at the closing parenthesis (left for the caller).
    fn select_sources(&mut self, nested: bool) -> Result<Vec<Source>, String> {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => return Err("SELECT without FROM is not supported by the proxy".to_string()),
                Some(t) if t.is_punct("(") => depth += 1,
                Some(t) if t.is_punct(")") => {
                    if depth == 0 {
                        return Err("SELECT without FROM is not supported by the proxy".to_string());
                    }
                    depth -= 1;
                }
                Some(t) if depth == 0 && t.is_keyword("FROM") => break,
                Some(_) => {}
            }
            self.pos += 1;
        }
        self.pos += 1; // FROM
        let sources = self.sources()?;
        // The rest of the statement (WHERE, GROUP BY, ...) does not affect routing.
        match self.peek() {
            None if !nested => {}
            Some(t) if t.is_any_keyword(SOURCE_LIST_END) => {}
            Some(t) if nested && t.is_punct(")") => {}
            _ => return Err(format!("unexpected {} after the FROM sources", self.found())),
        }
        if nested {
            let mut depth = 0usize;
            while let Some(t) = self.peek() {
                if t.is_punct("(") {
                    depth += 1;
                } else if t.is_punct(")") {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                }
                self.pos += 1;
            }
        }
        Ok(sources)
    }

    /// A comma-separated source list: measurement references, regexes and
    /// `(SELECT ...)` subqueries (whose innermost sources are returned).
    fn sources(&mut self) -> Result<Vec<Source>, String> {
        let mut sources = Vec::new();
        loop {
            if self.peek().is_some_and(|t| t.is_punct("(")) {
                self.pos += 1;
                if self.next_keyword().as_deref() != Some("SELECT") {
                    return Err(format!("expected SELECT in a FROM subquery, found {}", self.found()));
                }
                sources.extend(self.select_sources(true)?);
                if self.next().is_none_or(|t| !t.is_punct(")")) {
                    return Err("unterminated FROM subquery: expected `)`".to_string());
                }
            } else {
                sources.push(self.measurement_source()?);
            }
            if self.peek().is_some_and(|t| t.is_punct(",")) {
                self.pos += 1;
            } else {
                return Ok(sources);
            }
        }
    }

    /// One measurement reference (`m`, `"m"`, `rp.m`, `db.rp.m`, `db..m`) or
    /// regex (`/re/`, `db.rp./re/`).
    fn measurement_source(&mut self) -> Result<Source, String> {
        let mut parts: Vec<String> = Vec::new();
        let mut regex = None;
        loop {
            match self.peek().map(|t| &t.kind) {
                Some(TokenKind::Ident(name) | TokenKind::QuotedIdent(name)) => {
                    parts.push(name.clone());
                    self.pos += 1;
                }
                Some(TokenKind::Regex(pattern)) => {
                    regex = Some(pattern.clone());
                    self.pos += 1;
                    break;
                }
                // `db..m`: an empty retention policy.
                Some(TokenKind::Punct(p)) if p == "." && !parts.is_empty() => parts.push(String::new()),
                _ => return Err(format!("expected a measurement name or /regex/, found {}", self.found())),
            }
            if self.peek().is_some_and(|t| t.is_punct(".")) {
                self.pos += 1;
            } else {
                break;
            }
        }
        let count = parts.len() + usize::from(regex.is_some());
        if count > 3 {
            return Err(format!(
                "malformed measurement reference: {count} dot-separated parts, at most 3 (db.rp.measurement)"
            ));
        }
        let non_empty = |s: String| if s.is_empty() { None } else { Some(s) };
        if let Some(pattern) = regex {
            // `db.rp./re/`: the database is the first of two parts.
            let database = if parts.len() == 2 { non_empty(parts.swap_remove(0)) } else { None };
            return Ok(Source::Regex { pattern, database });
        }
        let name = parts.pop().unwrap_or_default();
        if name.is_empty() {
            return Err("malformed measurement reference: empty measurement name".to_string());
        }
        let retention_policy = parts.pop().and_then(non_empty);
        let database = parts.pop().and_then(non_empty);
        Ok(Source::Measurement(MeasurementRef { database, retention_policy, name }))
    }

    /// After SHOW: `ReadFrom` if the statement has a FROM clause, else `ShowAll`.
    fn show(&mut self) -> Result<StatementKind, String> {
        if self.peek().is_none() {
            return Err("incomplete SHOW statement".to_string());
        }
        let mut depth = 0usize;
        while let Some(t) = self.peek() {
            if t.is_punct("(") {
                depth += 1;
            } else if t.is_punct(")") {
                depth = depth.saturating_sub(1);
            } else if depth == 0 && t.is_keyword("FROM") {
                self.pos += 1;
                let sources = self.sources()?;
                self.expect_end_or(SOURCE_LIST_END, "SHOW ... FROM")?;
                return Ok(StatementKind::ReadFrom(sources));
            }
            self.pos += 1;
        }
        Ok(StatementKind::ShowAll)
    }

    /// After `DROP SERIES` / `DELETE`: `[FROM sources] [WHERE ...]` (influxql
    /// `parseDropSeriesStatement`, `parseDeleteStatement`; InfluxDB requires
    /// FROM or WHERE and answers the parse error itself). One measurement:
    /// [`StatementKind::SchemaMeasurement`]; several or a regex:
    /// [`StatementKind::SchemaSources`]; no FROM: `SchemaSources` of no source.
    fn delete_sources(&mut self, what: &str) -> Result<StatementKind, String> {
        if !self.peek().is_some_and(|t| t.is_keyword("FROM")) {
            // Neither: influxd refuses it (`found EOF, expected FROM,
            // WHERE`); refused here, it is never queued for a backend.
            if self.peek().is_none() {
                return Err(format!("{what} needs FROM or WHERE"));
            }
            self.expect_end_or(&["WHERE"], what)?;
            return Ok(StatementKind::SchemaSources(Vec::new()));
        }
        self.pos += 1;
        let sources = self.sources()?;
        self.expect_end_or(&["WHERE"], what)?;
        match sources.as_slice() {
            [Source::Measurement(measurement)] => Ok(StatementKind::SchemaMeasurement(measurement.clone())),
            _ => Ok(StatementKind::SchemaSources(sources)),
        }
    }

    fn expect_end_or(&self, keywords: &[&str], what: &str) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(t) if t.is_any_keyword(keywords) => Ok(()),
            Some(_) => Err(format!("unexpected {} in {what}", self.found())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str) -> Source {
        Source::Measurement(MeasurementRef { database: None, retention_policy: None, name: name.into() })
    }

    fn full(db: Option<&str>, rp: Option<&str>, name: &str) -> MeasurementRef {
        MeasurementRef {
            database: db.map(str::to_string),
            retention_policy: rp.map(str::to_string),
            name: name.into(),
        }
    }

    fn re(pattern: &str) -> Source {
        Source::Regex { pattern: pattern.into(), database: None }
    }

    fn read(sources: Vec<Source>) -> StatementKind {
        StatementKind::ReadFrom(sources)
    }

    #[test]
    fn split_on_semicolons_outside_strings_identifiers_and_regexes() {
        let cases: &[(&str, &[&str])] = &[
            ("SHOW DATABASES", &["SHOW DATABASES"]),
            ("  SHOW DATABASES ;  SELECT * FROM m ; ", &["SHOW DATABASES", "SELECT * FROM m"]),
            (";;; ;", &[]),
            ("", &[]),
            (
                "SELECT * FROM m WHERE t = 'a;b'; SHOW USERS",
                &["SELECT * FROM m WHERE t = 'a;b'", "SHOW USERS"],
            ),
            (r"SELECT * FROM m WHERE t = 'it\'s;x'", &[r"SELECT * FROM m WHERE t = 'it\'s;x'"]),
            (r#"SELECT "a;b" FROM "m\";x""#, &[r#"SELECT "a;b" FROM "m\";x""#]),
            ("SELECT * FROM /cpu;.*/", &["SELECT * FROM /cpu;.*/"]),
            (r"SELECT * FROM /a\/;b/; SHOW USERS", &[r"SELECT * FROM /a\/;b/", "SHOW USERS"]),
            ("SHOW MEASUREMENTS WITH MEASUREMENT =~ /x;y/", &["SHOW MEASUREMENTS WITH MEASUREMENT =~ /x;y/"]),
            ("SELECT * FROM m WHERE h !~ /;/;SHOW USERS", &["SELECT * FROM m WHERE h !~ /;/", "SHOW USERS"]),
            ("SELECT * FROM a, /b;c/", &["SELECT * FROM a, /b;c/"]),
            ("SELECT * FROM db.rp./b;c/", &["SELECT * FROM db.rp./b;c/"]),
            // A division is not a regex: the `;` between the slashes splits.
            ("SELECT a / b FROM m; SELECT c / 2 FROM n", &["SELECT a / b FROM m", "SELECT c / 2 FROM n"]),
            (
                "SELECT mean(a) / 2 FROM m;SELECT \"b\"/3 FROM n",
                &["SELECT mean(a) / 2 FROM m", "SELECT \"b\"/3 FROM n"],
            ),
            // Comments.
            ("SHOW USERS -- list; them\n; SHOW DATABASES", &["SHOW USERS", "SHOW DATABASES"]),
            ("/* a; b */ SHOW USERS; /* c */", &["SHOW USERS"]),
            ("SELECT * /* ; */ FROM m", &["SELECT * /* ; */ FROM m"]),
        ];
        for (query, expected) in cases {
            assert_eq!(split_statements(query).as_deref(), Ok(*expected), "query: {query}");
            // Tokenized once: each statement's tokens are those it has alone.
            for statement in parse_statements(query).unwrap_or_else(|e| panic!("{query}: {e}")) {
                let alone = tokenize(statement.text()).unwrap_or_else(|e| panic!("{query}: {e}"));
                assert_eq!(statement.tokens, alone, "query: {query}");
            }
        }
    }

    /// The statement filter, the classifier and the SHOW rewrite give the
    /// same answers from the shared tokens as from the text alone.
    #[test]
    fn a_statement_tokenized_once_answers_as_its_text() {
        let query = "SHOW MEASUREMENTS ON \"db\" LIMIT 2 OFFSET 1; SELECT * FROM m WHERE t = 'a;b'; \
                     GRANT /* x */ ALL TO u; DROP SERIES FROM cpu WHERE h = 'x'; SHOW TAG KEYS LIMIT 3;\
                     SHOW SERIES% OFFSET 2 / b";
        let filter = StatementFilter::new(&["^GRANT ALL".to_string()], &[]).expect("patterns");
        let statements = parse_statements(query).expect("tokenizes");
        assert_eq!(statements.len(), 6);
        for s in &statements {
            let text = s.text();
            assert_eq!(s.classify(), classify(text), "{text}");
            assert_eq!(s.show_on_database(), show_on_database(text), "{text}");
            assert_eq!(s.show_limit_offset(), show_limit_offset(text), "{text}");
            assert_eq!(s.for_backends(), show_statement_for_backends(text), "{text}");
            assert_eq!(filter.check_statement(s), filter.check(text), "{text}");
            assert_eq!(s.is_show(), text.starts_with("SHOW"), "{text}");
        }
        assert_eq!(statements[0].show_on_database().as_deref(), Some("db"));
        assert_eq!(statements[0].for_backends().as_deref(), Ok("SHOW MEASUREMENTS ON \"db\" LIMIT 3"));
        assert!(filter.check_statement(&statements[2]).is_err());
    }

    /// Numbers and durations end where influxql's `scanNumber` ends them
    /// (they used to swallow `_`, letters after a decimal, and leave a
    /// trailing or leading `.` to punctuation).
    #[test]
    fn numbers_end_where_influxql_ends_them() {
        let spans = |text: &str| -> Vec<(TokenKind, String)> {
            let tokens = tokenize(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            tokens.iter().map(|t| (t.kind.clone(), text[t.start..t.end].to_string())).collect()
        };
        let number = |s: &str| (TokenKind::Number, s.to_string());
        let ident = |s: &str| (TokenKind::Ident(s.to_string()), s.to_string());
        let punct = |s: &str| (TokenKind::Punct(s.to_string()), s.to_string());
        assert_eq!(spans("10 1.5 5m 10ms 1µ 2h30m"), ["10", "1.5", "5m", "10ms", "1µ", "2h30m"].map(number));
        assert_eq!(spans(".5"), [number(".5")]);
        assert_eq!(spans("1."), [number("1.")]);
        assert_eq!(spans("1.5.3"), [number("1.5"), number(".3")]);
        assert_eq!(spans("1.5m"), [number("1.5"), ident("m")]);
        assert_eq!(spans("1_000"), [number("1"), ident("_000")]);
        assert_eq!(spans("db..m"), [ident("db"), punct("."), punct("."), ident("m")]);
        // A `/` after `1.` divides: it used to start a regex that ran on
        // to the next `/`, swallowing the `;`.
        assert_eq!(
            split_statements("SELECT v FROM m WHERE v > 1./2; SELECT w FROM n WHERE w > 1./2"),
            Ok(vec!["SELECT v FROM m WHERE v > 1./2", "SELECT w FROM n WHERE w > 1./2"])
        );
    }

    #[test]
    fn split_refuses_unterminated_literals() {
        for query in [
            "SELECT * FROM m WHERE t = 'abc; SHOW USERS",
            "SELECT * FROM \"m; SHOW USERS",
            "SELECT * FROM /cpu; SHOW USERS",
            r"SELECT * FROM m WHERE t = 'ab\'",
            "SHOW USERS /* never closed",
        ] {
            let err = split_statements(query).unwrap_err();
            assert!(err.contains("unterminated"), "{query}: {err}");
        }
    }

    #[test]
    fn classify_table() {
        use StatementKind::*;
        let cases: Vec<(&str, StatementKind)> = vec![
            ("SELECT * FROM cpu", read(vec![m("cpu")])),
            ("select * from cpu", read(vec![m("cpu")])),
            ("SeLeCt value FrOm Cpu WHERE time > now() - 1h", read(vec![m("Cpu")])),
            ("SELECT * FROM \"cpu load\"", read(vec![m("cpu load")])),
            (r#"SELECT * FROM "say \"hi\"""#, read(vec![m("say \"hi\"")])),
            ("SELECT * FROM \"select\"", read(vec![m("select")])),
            (
                "SELECT * FROM telegraf.autogen.cpu",
                read(vec![Source::Measurement(full(Some("telegraf"), Some("autogen"), "cpu"))]),
            ),
            (
                "SELECT * FROM telegraf..cpu",
                read(vec![Source::Measurement(full(Some("telegraf"), None, "cpu"))]),
            ),
            ("SELECT * FROM autogen.cpu", read(vec![Source::Measurement(full(None, Some("autogen"), "cpu"))])),
            (
                r#"SELECT * FROM "my db"."my rp"."my.m""#,
                read(vec![Source::Measurement(full(Some("my db"), Some("my rp"), "my.m"))]),
            ),
            ("SELECT * FROM cpu, mem, \"disk\"", read(vec![m("cpu"), m("mem"), m("disk")])),
            ("SELECT * FROM /cpu.*/", read(vec![re("cpu.*")])),
            (r"SELECT * FROM /a\/b/", read(vec![re("a/b")])),
            (
                "SELECT * FROM db.rp./^c/",
                read(vec![Source::Regex { pattern: "^c".into(), database: Some("db".into()) }]),
            ),
            ("SELECT * FROM cpu, /^mem/", read(vec![m("cpu"), re("^mem")])),
            (
                "SELECT mean(usage) AS u, max(\"x\") / 2 FROM cpu WHERE host =~ /a;b/ GROUP BY time(1m), host fill(null) LIMIT 10",
                read(vec![m("cpu")]),
            ),
            ("SELECT a / b FROM cpu", read(vec![m("cpu")])),
            ("SELECT /usage/ FROM cpu", read(vec![m("cpu")])),
            ("SELECT * FROM cpu ORDER BY time DESC LIMIT 1", read(vec![m("cpu")])),
            ("SELECT * FROM cpu tz('Europe/Paris')", read(vec![m("cpu")])),
            ("SELECT * FROM cpu SLIMIT 1 SOFFSET 2", read(vec![m("cpu")])),
            ("SELECT * INTO other FROM cpu", StatementKind::SelectInto(vec![m("cpu")])),
            ("GRANT ALL TO u", StatementKind::SchemaAll),
            ("revoke read ON db FROM u", StatementKind::SchemaAll),
            ("CREATE USER x WITH PASSWORD 'y'", StatementKind::SchemaAll),
            ("DROP USER x", StatementKind::SchemaAll),
            ("SET PASSWORD FOR x = 'y'", StatementKind::SchemaAll),
            ("DROP CONTINUOUS QUERY cq ON db", StatementKind::SchemaAll),
            ("SELECT mean(m) FROM (SELECT max(v) AS m FROM cpu GROUP BY host)", read(vec![m("cpu")])),
            (
                "SELECT a FROM (SELECT b FROM (SELECT c FROM db..inner WHERE x = 1)) WHERE time > 0",
                read(vec![Source::Measurement(full(Some("db"), None, "inner"))]),
            ),
            ("SELECT * FROM (SELECT * FROM a), b", read(vec![m("a"), m("b")])),
            ("SELECT * FROM cpu;", read(vec![m("cpu")])),
            ("SELECT * FROM cpu -- trailing comment", read(vec![m("cpu")])),
            ("SHOW SERIES FROM cpu", read(vec![m("cpu")])),
            ("SHOW SERIES FROM cpu WHERE host = 'a'", read(vec![m("cpu")])),
            ("SHOW TAG KEYS ON telegraf FROM cpu", read(vec![m("cpu")])),
            ("show field keys from \"cpu\"", read(vec![m("cpu")])),
            ("SHOW TAG VALUES FROM cpu WITH KEY = host", read(vec![m("cpu")])),
            ("SHOW TAG VALUES FROM cpu WITH KEY IN (\"a\", \"b\")", read(vec![m("cpu")])),
            ("SHOW SERIES FROM /c.*/ LIMIT 5", read(vec![re("c.*")])),
            ("SHOW DATABASES", ShowAll),
            ("show measurements", ShowAll),
            ("SHOW MEASUREMENTS WITH MEASUREMENT =~ /x;y/", ShowAll),
            ("SHOW MEASUREMENTS ON telegraf WITH MEASUREMENT = cpu", ShowAll),
            ("SHOW RETENTION POLICIES ON telegraf", ShowAll),
            ("SHOW SERIES", ShowAll),
            ("SHOW TAG KEYS", ShowAll),
            ("SHOW FIELD KEYS ON db", ShowAll),
            ("SHOW TAG VALUES WITH KEY = \"from\"", ShowAll),
            ("SHOW USERS", ShowAll),
            ("SHOW STATS", ShowAll),
            ("SHOW DIAGNOSTICS", ShowAll),
            ("CREATE DATABASE telegraf", SchemaAll),
            ("create database \"my db\" WITH DURATION 1d", SchemaAll),
            ("DROP DATABASE telegraf", SchemaAll),
            ("CREATE RETENTION POLICY one_day ON telegraf DURATION 1d REPLICATION 1 DEFAULT", SchemaAll),
            ("ALTER RETENTION POLICY one_day ON telegraf DURATION 2d", SchemaAll),
            ("drop retention policy one_day on telegraf", SchemaAll),
            ("DROP MEASUREMENT cpu", SchemaMeasurement(full(None, None, "cpu"))),
            ("DROP MEASUREMENT \"cpu load\"", SchemaMeasurement(full(None, None, "cpu load"))),
            ("DROP SERIES FROM cpu WHERE host = 'a'", SchemaMeasurement(full(None, None, "cpu"))),
            ("DROP SERIES FROM cpu", SchemaMeasurement(full(None, None, "cpu"))),
            ("DELETE FROM cpu WHERE time < '2020-01-01'", SchemaMeasurement(full(None, None, "cpu"))),
            ("delete from db.rp.cpu", SchemaMeasurement(full(Some("db"), Some("rp"), "cpu"))),
            // Issue 9: DELETE / DROP SERIES without FROM, FROM a regex or
            // several measurements; EXPLAIN; subscriptions.
            ("DELETE WHERE host = 'x'", SchemaSources(vec![])),
            ("DELETE WHERE time < 0", SchemaSources(vec![])),
            ("drop series where host = 'a'", SchemaSources(vec![])),
            ("DELETE FROM /c.*/", SchemaSources(vec![re("c.*")])),
            ("DROP SERIES FROM a, b WHERE host = 'a'", SchemaSources(vec![m("a"), m("b")])),
            ("DELETE FROM cpu, /^mem/", SchemaSources(vec![m("cpu"), re("^mem")])),
            ("EXPLAIN SELECT * FROM cpu", Explain(vec![m("cpu")])),
            ("explain analyze select mean(v) from cpu, mem where time > 0", Explain(vec![m("cpu"), m("mem")])),
            ("EXPLAIN ANALYZE VERBOSE SELECT * FROM /c/", Explain(vec![re("c")])),
            ("EXPLAIN SELECT * INTO b FROM a", Explain(vec![m("a")])),
            ("SHOW SUBSCRIPTIONS", ShowAll),
            ("CREATE SUBSCRIPTION s ON db.autogen DESTINATIONS ALL 'udp://h:9090'", SchemaAll),
            ("DROP SUBSCRIPTION s ON db.autogen", SchemaAll),
            ("SHOW QUERIES", ShowAll),
            ("SHOW SHARDS", ShowAll),
            ("SHOW SHARD GROUPS", ShowAll),
            ("SHOW GRANTS FOR bob", ShowAll),
            ("SHOW CONTINUOUS QUERIES", ShowAll),
            ("SHOW SERIES CARDINALITY", ShowAll),
            ("GRANT ALL TO bob", SchemaAll),
            ("REVOKE READ ON db FROM bob", SchemaAll),
            ("SET PASSWORD FOR bob = 'x'", SchemaAll),
        ];
        assert!(cases.len() >= 40);
        for (statement, expected) in cases {
            assert_eq!(classify(statement), Ok(expected), "statement: {statement}");
        }
    }

    #[test]
    fn classify_refuses_unsupported_statements_clearly() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("SELECT 1", "SELECT without FROM is not supported"),
            ("SELECT now()", "SELECT without FROM is not supported"),
            ("SELECT * FROM (SELECT 1)", "SELECT without FROM is not supported"),
            ("EXPLAIN cpu", "expected SELECT after EXPLAIN, found `cpu`"),
            ("EXPLAIN", "expected SELECT after EXPLAIN, found the end of the statement"),
            ("EXPLAIN SELECT 1", "SELECT without FROM is not supported"),
            ("EXPLAIN ANALYZE SELECT * INTO b FROM a", "EXPLAIN ANALYZE of SELECT ... INTO is not supported"),
            ("FROBNICATE cpu", "FROBNICATE statements are not supported"),
            ("DELETE cpu", "unexpected `cpu` in DELETE"),
            ("DELETE", "DELETE needs FROM or WHERE"),
            ("DROP SERIES", "DROP SERIES needs FROM or WHERE"),
            ("DROP SERIES FROM a, b nonsense", "unexpected `nonsense` in DROP SERIES"),
            ("DROP SHARD 1", "DROP SHARD is not supported by the proxy: shard IDs are per backend"),
            ("DROP MEASUREMENT /c/", "expected a measurement name"),
            ("DROP MEASUREMENT db.rp./c/", "takes a measurement name, not a regex"),
            ("DROP MEASUREMENT cpu WHERE x = 1", "unexpected `WHERE` in DROP MEASUREMENT"),
            ("KILL QUERY 36", "KILL QUERY is not supported by the proxy: query IDs are per backend"),
            ("SELECT * FROM a.b.c.d", "at most 3"),
            ("SELECT * FROM db.rp.", "expected a measurement name"),
            ("SELECT * FROM \"\"", "empty measurement name"),
            ("SELECT * FROM cpu nonsense", "unexpected `nonsense` after the FROM sources"),
            ("SELECT * FROM 'cpu'", "expected a measurement name or /regex/, found a string"),
            ("SELECT * FROM a; SELECT * FROM b", "several"),
            ("SHOW", "incomplete SHOW"),
            ("'cpu'", "expected an InfluxQL statement"),
            ("SELECT * FROM 'unterminated", "unterminated"),
        ];
        for (statement, expected) in cases {
            let err = classify(statement).unwrap_err();
            assert!(err.contains(expected), "statement {statement:?}: got {err:?}, want {expected:?}");
        }
    }

    /// `(LIMIT, OFFSET)` as [`show_limit_offset`] reads them.
    type Window = (Option<u64>, Option<u64>);

    #[test]
    fn show_limit_offset_reads_top_level_clauses() {
        let cases: &[(&str, Window)] = &[
            ("SHOW MEASUREMENTS", (None, None)),
            ("SHOW MEASUREMENTS LIMIT 2", (Some(2), None)),
            ("SHOW MEASUREMENTS OFFSET 3", (None, Some(3))),
            ("show measurements limit 2 offset 1", (Some(2), Some(1))),
            ("SHOW TAG KEYS LIMIT 0", (Some(0), None)),
            ("SHOW MEASUREMENTS WITH MEASUREMENT =~ /limit 5/ LIMIT 7", (Some(7), None)),
            ("SHOW TAG VALUES WITH KEY = \"limit\" WHERE \"offset\" = 'LIMIT 9'", (None, None)),
            ("SHOW SERIES WHERE host = 'a' LIMIT 10 OFFSET 20", (Some(10), Some(20))),
            // SLIMIT / SOFFSET are the series clauses, not LIMIT / OFFSET.
            ("SHOW TAG KEYS SLIMIT 1 SOFFSET 2", (None, None)),
            ("SHOW TAG KEYS LIMIT 3 OFFSET 4 SLIMIT 1 SOFFSET 2", (Some(3), Some(4))),
            // Inside parentheses (a subquery) a clause belongs to it.
            ("SHOW SERIES WHERE (x = 1 LIMIT 5) OFFSET 6", (None, Some(6))),
            ("SHOW MEASUREMENTS /* LIMIT 1 */ LIMIT -- OFFSET 9\n 2", (Some(2), None)),
            ("SHOW MEASUREMENTS LIMIT 9223372036854775807", (Some(9_223_372_036_854_775_807), None)),
        ];
        for (statement, expected) in cases {
            assert_eq!(show_limit_offset(statement), Ok(*expected), "statement: {statement}");
        }
    }

    #[test]
    fn show_limit_offset_refuses_bad_numbers() {
        let cases: &[(&str, &str)] = &[
            ("SHOW MEASUREMENTS LIMIT", "expected a number of rows after LIMIT, found the end"),
            ("SHOW MEASUREMENTS LIMIT x", "expected a number of rows after LIMIT, found `x`"),
            ("SHOW MEASUREMENTS LIMIT -1", "expected a number of rows after LIMIT, found `-`"),
            ("SHOW MEASUREMENTS LIMIT '2'", "found a string"),
            ("SHOW MEASUREMENTS LIMIT 1.5", "invalid LIMIT 1.5"),
            ("SHOW MEASUREMENTS OFFSET 5m", "invalid OFFSET 5m"),
            ("SHOW MEASUREMENTS LIMIT 9223372036854775808", "invalid LIMIT 9223372036854775808"),
            ("SHOW MEASUREMENTS LIMIT 99999999999999999999999", "invalid LIMIT"),
            ("SHOW MEASUREMENTS LIMIT 1 LIMIT 2", "LIMIT is given more than once"),
            ("SHOW MEASUREMENTS OFFSET 1 OFFSET 2", "OFFSET is given more than once"),
            ("SHOW MEASUREMENTS LIMIT 'unterminated", "unterminated"),
        ];
        for (statement, expected) in cases {
            let err = show_limit_offset(statement).unwrap_err();
            assert!(err.contains(expected), "statement {statement:?}: got {err:?}, want {expected:?}");
        }
        // classify refuses them too, so nothing is sent for a malformed window.
        let err = classify("SHOW MEASUREMENTS LIMIT x").unwrap_err();
        assert!(err.contains("after LIMIT"), "{err}");
        assert_eq!(classify("SHOW MEASUREMENTS LIMIT 2 OFFSET 1"), Ok(StatementKind::ShowAll));
    }

    #[test]
    fn backends_get_limit_plus_offset_and_no_offset() {
        let cases: &[(&str, &str)] = &[
            ("SHOW MEASUREMENTS", "SHOW MEASUREMENTS"),
            ("SHOW MEASUREMENTS LIMIT 2", "SHOW MEASUREMENTS LIMIT 2"),
            ("SHOW MEASUREMENTS LIMIT 2 OFFSET 1", "SHOW MEASUREMENTS LIMIT 3"),
            ("show measurements limit 2 offset 1", "show measurements LIMIT 3"),
            ("SHOW MEASUREMENTS OFFSET 4", "SHOW MEASUREMENTS"),
            ("SHOW TAG KEYS LIMIT 0 OFFSET 4", "SHOW TAG KEYS LIMIT 0"),
            (
                "SHOW TAG KEYS ON db WHERE host = 'LIMIT 1' LIMIT 10 OFFSET 5 SLIMIT 2 SOFFSET 1",
                "SHOW TAG KEYS ON db WHERE host = 'LIMIT 1' LIMIT 15 SLIMIT 2 SOFFSET 1",
            ),
            ("SHOW SERIES  LIMIT\n5\tOFFSET  5", "SHOW SERIES  LIMIT 10"),
            (
                "SHOW MEASUREMENTS LIMIT 9223372036854775807 OFFSET 1",
                "SHOW MEASUREMENTS LIMIT 9223372036854775807",
            ),
            // Clauses in the wrong order (InfluxDB refuses it) keep their places.
            ("SHOW MEASUREMENTS OFFSET 1 LIMIT 2", "SHOW MEASUREMENTS LIMIT 3"),
        ];
        for (statement, expected) in cases {
            assert_eq!(show_statement_for_backends(statement).as_deref(), Ok(*expected), "{statement}");
        }
        assert!(show_statement_for_backends("SHOW MEASUREMENTS OFFSET x").is_err());
    }

    /// Found by fuzzing (tests/fuzz/regressions/statement): removing the
    /// OFFSET clause before a `/` turned a division into the start of a regex.
    #[test]
    fn offset_removed_before_a_slash_keeps_the_tokens_apart() {
        let sent = show_statement_for_backends("SHOW SERIES% OFFSET 2 / b").unwrap();
        assert_eq!(sent, "SHOW SERIES% OFFSET 0 / b");
        assert_eq!(show_limit_offset(&sent), Ok((None, Some(0))));
    }

    fn default_filter() -> StatementFilter {
        let forbidden: Vec<String> = DEFAULT_FORBIDDEN.iter().map(|s| s.to_string()).collect();
        StatementFilter::new(&forbidden, &[]).unwrap()
    }

    #[test]
    fn default_filter_refuses_administration_and_into() {
        let filter = default_filter();
        for statement in [
            "GRANT ALL TO u",
            "grant read ON db TO u",
            "REVOKE ALL FROM u",
            "CREATE USER x WITH PASSWORD 'y'",
            "DROP USER x",
            "SET PASSWORD FOR x = 'y'",
            "SELECT * INTO b FROM a",
            "SELECT mean(v) INTO \"db\".\"rp\".\"m\" FROM m GROUP BY time(1m)",
            "select\n  mean(v)\n  into b\n  from a",
            "SELECT \"into\" INTO b FROM a",
            "CREATE CONTINUOUS QUERY cq ON db BEGIN SELECT mean(v) INTO b FROM a GROUP BY time(1h) END",
            "DROP CONTINUOUS QUERY cq ON db",
            "KILL QUERY 36",
            "  kill   query 36 ON \"h1\"",
            "/* hidden */ GRANT ALL TO u",
            "CREATE /* hidden */ USER x WITH PASSWORD 'y' WITH ALL PRIVILEGES",
            "SELECT * -- comment\nINTO b FROM a",
            "CREATE SUBSCRIPTION s ON db.autogen DESTINATIONS ALL 'udp://h:9090'",
            "drop  subscription s ON db.autogen",
        ] {
            let err = filter.check(statement).unwrap_err();
            assert!(err.starts_with("statement forbidden by the proxy: "), "{statement}: {err}");
        }
        let err = filter.check("drop   user\n x").unwrap_err();
        assert_eq!(err, "statement forbidden by the proxy: drop user x");
    }

    #[test]
    fn default_filter_lets_ordinary_statements_through() {
        let filter = default_filter();
        for statement in [
            "SELECT \"into\" FROM m",
            "SELECT * FROM m WHERE host = 'into'",
            "SELECT * FROM \"into\"",
            r#"SELECT "a\"into" FROM m"#,
            "SELECT intox FROM m",
            "SHOW USERS",
            "SHOW GRANTS FOR u",
            "SHOW CONTINUOUS QUERIES",
            "SHOW QUERIES",
            "SELECT * FROM cpu",
            "CREATE DATABASE db",
            "DROP MEASUREMENT users",
            "SHOW SUBSCRIPTIONS",
            "EXPLAIN SELECT * FROM cpu",
            "EXPLAIN ANALYZE SELECT * FROM cpu",
            "DELETE WHERE host = 'x'",
        ] {
            assert_eq!(filter.check(statement), Ok(()), "{statement}");
        }
    }

    #[test]
    fn allowed_patterns_override_forbidden_ones() {
        let forbidden: Vec<String> = DEFAULT_FORBIDDEN.iter().map(|s| s.to_string()).collect();
        let allowed = vec![r"^select \* into archive\.\.".to_string()];
        let filter = StatementFilter::new(&forbidden, &allowed).unwrap();
        assert_eq!(filter.check("SELECT * INTO archive..cpu FROM cpu"), Ok(()));
        assert!(filter.check("SELECT * INTO other..cpu FROM cpu").is_err());
        assert!(filter.check("GRANT ALL TO u").is_err());
    }

    #[test]
    fn filter_reports_bad_patterns() {
        let err = StatementFilter::new(&["(unclosed".to_string()], &[]).unwrap_err();
        assert!(err.contains("(unclosed"), "{err}");
        let err = StatementFilter::new(&[], &["[z-a]".to_string()]).unwrap_err();
        assert!(err.contains("[z-a]"), "{err}");
    }

    #[test]
    fn arbitrary_text_gives_results_or_errors_never_panics() {
        const PIECES: &[&str] = &[
            "SELECT ",
            "FROM ",
            "SHOW ",
            "DROP ",
            "SERIES ",
            "DELETE ",
            "MEASUREMENT ",
            "(",
            ")",
            "'",
            "\"",
            "\\",
            "/",
            "*",
            "-",
            ";",
            ",",
            ".",
            "=~",
            "a",
            "µ",
            "é",
            "1",
            "5m",
            " ",
            "\n",
            "WHERE ",
            "INTO ",
            "LIMIT ",
            "OFFSET ",
            "SLIMIT ",
            "7 ",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let filter = default_filter();
        for _ in 0..5000 {
            let text: String = (0..rng.usize(0..14)).map(|_| PIECES[rng.usize(..PIECES.len())]).collect();
            if let Ok(statements) = split_statements(&text) {
                for statement in statements {
                    assert!(!statement.is_empty() && statement.trim() == statement, "{text:?}");
                    let _ = classify(statement);
                }
            }
            let _ = classify(&text);
            let _ = filter.check(&text);
            if let Ok((limit, offset)) = show_limit_offset(&text) {
                // The backends' statement has no OFFSET (or `OFFSET 0` before
                // a `/`) and LIMIT n+m.
                let sent = show_statement_for_backends(&text).unwrap();
                let (sent_limit, sent_offset) = show_limit_offset(&sent).unwrap();
                assert!(matches!(sent_offset, None | Some(0)), "{text:?} -> {sent:?}");
                let want = match (limit, offset) {
                    (Some(n), Some(m)) if n > 0 => Some(n + m),
                    _ => limit,
                };
                assert_eq!(sent_limit, want, "{text:?} -> {sent:?}");
            }
        }
    }

    #[test]
    fn show_on_database_reads_the_on_clause() {
        assert_eq!(show_on_database("SHOW TAG KEYS ON telegraf FROM cpu").as_deref(), Some("telegraf"));
        assert_eq!(show_on_database(r#"show measurements on "my db" limit 1"#).as_deref(), Some("my db"));
        assert_eq!(show_on_database("SHOW TAG KEYS FROM cpu"), None);
        assert_eq!(show_on_database("SELECT * FROM cpu"), None);
        assert_eq!(show_on_database("SHOW TAG VALUES WITH KEY = \"on\""), None);
    }
}
