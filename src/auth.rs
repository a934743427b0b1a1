//! Token auth at the proxy (config `auth`; off by default, when the
//! client's credentials pass through to the backends unchanged).
//!
//! Tokens are InfluxDB 3's: `apiv3_` + URL-safe base64 without padding of 64
//! random bytes, and only the SHA-512 of the whole token text is kept
//! (influxdb3_catalog `create_token_and_hash`, `compute_token_hash`). The
//! random bytes come from the host ([`token_from_random`]; the native CLI's
//! `influx-proxy create token` reads the OS's random source): this module
//! does no IO.
//!
//! A token is presented as InfluxDB 3 and 1.x clients send credentials
//! ([`presented_token`]): `Authorization: Bearer <t>`, `Authorization: Token
//! <t>`, `Authorization: Basic base64(user:<t>)` (the user name ignored), or
//! the `p` parameter on the v1 routes `/query` and `/write` (as InfluxDB 3,
//! influxdb3_server `extract_v1_auth_token`; on `/query` also in a form
//! body, as InfluxDB 1.x reads it). Its SHA-512 is
//! compared with every configured hash in constant time (`subtle`), all of
//! them, whatever matched.
//!
//! Answers are influxd 1.x's, byte for byte (services/httpd/handler.go
//! `authenticate`, `serveWrite`, `serveQuery`; checked against influxd
//! 1.6.7 with `auth-enabled`): 401 `unable to parse authentication
//! credentials` (nothing presented, or a malformed header), 401
//! `authorization failed` (an unknown token), 403 `"<name>" user is not
//! authorized to write to database "<db>"`, 403 `error authorizing query:
//! <name> not authorized to execute statement '<statement>', requires
//! <privilege>`. A refused request reaches no backend.
//!
//! Scopes ([`Grant`]): a token's `databases` (names or `*`) and
//! `permissions`: `read` for SELECT, SHOW and EXPLAIN; `write` for writes,
//! `DELETE` and `DROP SERIES` (InfluxDB 1.x's WRITE privilege); `admin` for
//! what InfluxDB 1.x gives admins or ALL: `CREATE`/`DROP DATABASE`,
//! retention policies, `DROP MEASUREMENT`, `SELECT INTO`, and on `*` only,
//! statements about no database (users, grants), continuous queries and
//! subscriptions (whatever their `ON db`), and
//! the server's own `SHOW`s (`USERS`, `GRANTS`, `STATS`, `DIAGNOSTICS`,
//! `SHARDS`, `SHARD GROUPS`, `SUBSCRIPTIONS`, admin in 1.x whatever `db`
//! is). A database named by a bound parameter (`ON $d`) is unknown: `*`. Admin
//! includes read and write. A statement about no database (no `db`
//! parameter, no `db.` in FROM, no `ON db`), e.g. `SHOW DATABASES`, needs a
//! token on `*`.

use crate::config::{AuthConfig, Permission, TokenConfig};
use crate::error::ProxyError;
use crate::statement::{Source, Statement, StatementKind};
use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// What every token starts with (InfluxDB 3's `apiv3_`).
pub const TOKEN_PREFIX: &str = "apiv3_";

/// Random bytes in a token (InfluxDB 3: 64).
pub const TOKEN_RANDOM_BYTES: usize = 64;

/// 401 text when no credentials were presented or they do not parse.
pub const UNPARSABLE: &str = "unable to parse authentication credentials";

/// 401 text for an unknown token.
pub const FAILED: &str = "authorization failed";

/// The token text of `random` (64 bytes from the OS's random source):
/// `apiv3_` + URL-safe base64 without padding, 92 characters.
pub fn token_from_random(random: &[u8; TOKEN_RANDOM_BYTES]) -> String {
    let mut token = String::from(TOKEN_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(random, &mut token);
    token
}

/// SHA-512 of the whole token text.
pub fn token_hash(token: &str) -> [u8; 64] {
    Sha512::digest(token.as_bytes()).into()
}

/// [`token_hash`] as 128 lower-case hex digits (the config's `sha512`).
pub fn token_hash_hex(token: &str) -> String {
    token_hash(token).iter().map(|b| format!("{b:02x}")).collect()
}

/// The token a request presents: the `Authorization` header (`Bearer`,
/// `Token`, `Basic` with the token as the password; scheme names in any
/// case) when there is one, else `p` (`password`). `Ok(None)`: nothing
/// presented. `Err`: a header that does not parse (an unknown scheme, bad
/// base64, no `:` in Basic's credentials). All answered 401 [`UNPARSABLE`].
pub fn presented_token(
    authorization: Option<&str>,
    password: Option<&str>,
) -> Result<Option<String>, UnparsableCredentials> {
    if let Some(header) = authorization {
        let (scheme, rest) = header.trim().split_once(' ').ok_or(UnparsableCredentials)?;
        let rest = rest.trim();
        return if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
            Some(rest).filter(|t| !t.is_empty()).map(|t| Some(t.to_string())).ok_or(UnparsableCredentials)
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded =
                base64::engine::general_purpose::STANDARD.decode(rest).map_err(|_| UnparsableCredentials)?;
            let text = String::from_utf8(decoded).map_err(|_| UnparsableCredentials)?;
            let (_user, token) = text.split_once(':').ok_or(UnparsableCredentials)?;
            Ok(Some(token.to_string()))
        } else {
            Err(UnparsableCredentials)
        };
    }
    Ok(password.filter(|p| !p.is_empty()).map(str::to_string))
}

/// An `Authorization` header that does not parse (answered 401
/// [`UNPARSABLE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnparsableCredentials;

/// The index of the configured token whose hash is `hash`, comparing with
/// every one in constant time (no early exit, within or across hashes).
pub fn matching_token(tokens: &[TokenConfig], hash: &[u8; 64]) -> Option<usize> {
    let mut found = None;
    for (i, token) in tokens.iter().enumerate() {
        let equal: bool = token.sha512.0.ct_eq(hash).into();
        if equal && found.is_none() {
            found = Some(i);
        }
    }
    found
}

/// What an authenticated token may do.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    token: &'a TokenConfig,
}

/// Authenticates a request for a path not in `open`: the configured token
/// its credentials present, or 401 ([`UNPARSABLE`], [`FAILED`]).
pub fn authenticate<'a>(
    config: &'a AuthConfig,
    authorization: Option<&str>,
    password: Option<&str>,
) -> Result<Grant<'a>, ProxyError> {
    let token = presented_token(authorization, password)
        .map_err(|UnparsableCredentials| ProxyError::Unauthorized(UNPARSABLE.into()))?
        .ok_or_else(|| ProxyError::Unauthorized(UNPARSABLE.into()))?;
    let index = matching_token(&config.tokens, &token_hash(&token))
        .ok_or_else(|| ProxyError::Unauthorized(FAILED.into()))?;
    Ok(Grant { token: &config.tokens[index] })
}

/// Whether `path` is answered without a token.
pub fn is_open(config: &AuthConfig, path: &str) -> bool {
    config.open.iter().any(|p| p == path)
}

/// A privilege a statement requires (InfluxDB 1.x's `requires ...` texts).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Required {
    Read(Option<String>),
    Write(Option<String>),
    Admin(Option<String>),
}

impl<'a> Grant<'a> {
    /// The token's configured name.
    pub fn name(&self) -> &'a str {
        &self.token.name
    }

    fn has(&self, permission: Permission) -> bool {
        self.token.permissions.iter().any(|&p| p == permission || p == Permission::Admin)
    }

    fn covers(&self, db: Option<&str>) -> bool {
        self.token.databases.iter().any(|d| d == "*" || Some(d.as_str()) == db)
    }

    fn allows(&self, required: &Required) -> bool {
        match required {
            Required::Read(db) => self.has(Permission::Read) && self.covers(db.as_deref()),
            Required::Write(db) => self.has(Permission::Write) && self.covers(db.as_deref()),
            Required::Admin(db) => self.has(Permission::Admin) && self.covers(db.as_deref()),
        }
    }

    /// A write to database `db`: 403 unless the token writes there.
    pub fn authorize_write(&self, db: &str) -> Result<(), ProxyError> {
        if self.allows(&Required::Write(Some(db.to_string()))) {
            Ok(())
        } else {
            Err(ProxyError::Forbidden(format!(
                "{:?} user is not authorized to write to database {db:?}",
                self.token.name
            )))
        }
    }

    /// The proxy's own administration endpoints (`/reload`, `/cleanup`,
    /// `/resync`): 403 unless the token is admin on `*`.
    pub fn authorize_proxy_admin(&self, path: &str) -> Result<(), ProxyError> {
        if self.allows(&Required::Admin(None)) {
            Ok(())
        } else {
            Err(ProxyError::Forbidden(format!(
                "{:?} user is not authorized to use {path}: requires admin privilege on \"*\"",
                self.token.name
            )))
        }
    }

    /// One statement of a query with `db` parameter `db`: 403 unless every
    /// privilege it requires is the token's (see the module doc). A
    /// statement that does not classify is let through: the query path
    /// refuses it (400) before anything is sent.
    pub fn authorize_statement(&self, statement: &Statement<'_>, db: Option<&str>) -> Result<(), ProxyError> {
        for required in required(statement, db) {
            if !self.allows(&required) {
                let privilege = match &required {
                    Required::Read(db) => format!("READ on {}", db.as_deref().unwrap_or("")),
                    Required::Write(db) => format!("WRITE on {}", db.as_deref().unwrap_or("")),
                    Required::Admin(_) => "admin privilege".to_string(),
                };
                return Err(ProxyError::Forbidden(format!(
                    "error authorizing query: {} not authorized to execute statement '{}', requires {privilege}",
                    self.token.name,
                    statement.text()
                )));
            }
        }
        Ok(())
    }
}

/// The privileges `statement` requires, with `db` the request's `db`
/// parameter.
fn required(statement: &Statement<'_>, db: Option<&str>) -> Vec<Required> {
    let own = statement.database();
    // `ON $d` names a database from `params` (influxd 1.6 fills identifiers
    // from bound parameters): unknown here, so it takes a token on `*`.
    let unnamed = statement.has_unnamed_on_clause();
    let default = if unnamed { None } else { own.clone().or_else(|| db.map(str::to_string)) };
    let of_sources = |sources: &[Source]| -> Vec<Option<String>> {
        let mut dbs: Vec<Option<String>> = sources
            .iter()
            .map(|s| match s {
                Source::Measurement(m) => m.database.clone().or_else(|| default.clone()),
                Source::Regex { database, .. } => database.clone().or_else(|| default.clone()),
            })
            .collect();
        if dbs.is_empty() {
            dbs.push(default.clone());
        }
        dbs
    };
    let Ok(kind) = statement.classify() else { return Vec::new() };
    match kind {
        // influxd answers SHOW TAG KEYS / TAG VALUES from the ON database
        // (else `db`), whatever FROM names: both are read.
        StatementKind::ReadFrom(sources) if statement.leading_keywords() == "SHOW TAG" => {
            let mut required: Vec<Required> = of_sources(&sources).into_iter().map(Required::Read).collect();
            required.push(Required::Read(default.clone()));
            required
        }
        StatementKind::ReadFrom(sources) | StatementKind::Explain(sources) => {
            of_sources(&sources).into_iter().map(Required::Read).collect()
        }
        // Server administration: admin in InfluxDB 1.x (influxql ast.go
        // `RequiredPrivileges`), whatever `db` is.
        StatementKind::ShowAll
            if matches!(
                statement.leading_keywords().as_str(),
                "SHOW USERS"
                    | "SHOW GRANTS"
                    | "SHOW STATS"
                    | "SHOW DIAGNOSTICS"
                    | "SHOW SHARDS"
                    | "SHOW SHARD"
                    | "SHOW SUBSCRIPTIONS"
            ) =>
        {
            vec![Required::Admin(None)]
        }
        // Every backend's databases, unfiltered (influxd 1.x lists only a
        // user's own): a token on `*`, whatever `db` is.
        StatementKind::ShowAll if statement.leading_keywords() == "SHOW DATABASES" => {
            vec![Required::Read(None)]
        }
        StatementKind::ShowAll => vec![Required::Read(default)],
        StatementKind::SelectInto(_) => vec![Required::Admin(None)],
        // A continuous query runs with the proxy's credentials on its
        // own sources and INTO target, not only its `ON db`; a subscription
        // ships a database's writes away (InfluxDB 1.x: admin).
        StatementKind::SchemaAll
            if matches!(
                statement.leading_keywords().as_str(),
                "CREATE CONTINUOUS" | "DROP CONTINUOUS" | "CREATE SUBSCRIPTION" | "DROP SUBSCRIPTION"
            ) =>
        {
            vec![Required::Admin(None)]
        }
        StatementKind::SchemaAll => vec![Required::Admin(own)],
        StatementKind::SchemaMeasurement(m) => {
            let db = m.database.or(default);
            if statement.leading_keywords() == "DROP MEASUREMENT" {
                vec![Required::Admin(db)]
            } else {
                vec![Required::Write(db)]
            }
        }
        StatementKind::SchemaSources(sources) => {
            of_sources(&sources).into_iter().map(Required::Write).collect()
        }
    }
}

/// Credentials the proxy sends a backend when `auth` is on (the clients'
/// are the proxy's, not the backends'). Debug never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum BackendCredentials {
    /// InfluxDB 1.x user auth, sent as `Authorization: Basic`.
    Basic { username: String, password: String },
    /// A token (InfluxDB 3), sent as `Authorization: Bearer <token>`.
    Token(String),
}

impl std::fmt::Debug for BackendCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendCredentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            BackendCredentials::Token(_) => write!(f, "Token(<redacted>)"),
        }
    }
}

impl BackendCredentials {
    /// Puts these credentials on `request` as its only ones: any
    /// `Authorization` header and `u` / `p` parameter it had are removed.
    pub fn apply(&self, request: &mut crate::http::Request) {
        request.headers.retain(|(name, _)| !name.eq_ignore_ascii_case("authorization"));
        request.query.retain(|(name, _)| name != "u" && name != "p");
        let value = match self {
            BackendCredentials::Basic { username, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            ),
            BackendCredentials::Token(token) => format!("Bearer {token}"),
        };
        request.headers.push(("authorization".into(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenHash;

    const TOKEN: &str = "apiv3_telegraf-token";

    fn token(name: &str, secret: &str, databases: &[&str], permissions: &[Permission]) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            sha512: TokenHash(token_hash(secret)),
            databases: databases.iter().map(|d| d.to_string()).collect(),
            permissions: permissions.to_vec(),
        }
    }

    fn config() -> AuthConfig {
        AuthConfig {
            tokens: vec![
                token("telegraf", TOKEN, &["telegraf"], &[Permission::Write]),
                token("grafana", "apiv3_grafana", &["telegraf", "app"], &[Permission::Read]),
                token("ops", "apiv3_ops", &["*"], &[Permission::Admin]),
                token("appadmin", "apiv3_appadmin", &["app"], &[Permission::Admin]),
            ],
            open: vec!["/ping".into(), "/health".into()],
        }
    }

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    #[test]
    fn a_token_is_apiv3_and_url_safe_base64_of_64_bytes_and_its_hash_is_sha512_hex() {
        let random = [0xfbu8; 64];
        let token = token_from_random(&random);
        assert!(token.starts_with("apiv3_"), "{token}");
        // 64 bytes -> 86 characters without padding; 0xfb bytes give '-' and '_'.
        assert_eq!(token.len(), 6 + 86);
        assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'), "{token}");
        assert!(token.contains('-') || token.contains('_'), "{token}");
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token[6..]).unwrap();
        assert_eq!(decoded, random);
        // SHA-512("abc") (FIPS 180-2 example).
        assert_eq!(
            token_hash_hex("abc"),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn each_accepted_form_presents_the_token() {
        let t = Some(TOKEN.to_string());
        assert_eq!(presented_token(Some(&format!("Bearer {TOKEN}")), None), Ok(t.clone()));
        assert_eq!(presented_token(Some(&format!("Token {TOKEN}")), None), Ok(t.clone()));
        assert_eq!(presented_token(Some(&format!("token  {TOKEN} ")), None), Ok(t.clone()));
        assert_eq!(presented_token(Some(&basic("anyone", TOKEN)), None), Ok(t.clone()));
        assert_eq!(presented_token(Some(&basic("", TOKEN)), None), Ok(t.clone()));
        assert_eq!(presented_token(None, Some(TOKEN)), Ok(t.clone()));
        // The header wins over p.
        assert_eq!(presented_token(Some(&format!("Bearer {TOKEN}")), Some("other")), Ok(t));
        assert_eq!(presented_token(None, None), Ok(None));
        assert_eq!(presented_token(None, Some("")), Ok(None));
        for bad in ["Bearer", "Bearer ", "Digest abc", "Basic !!!", "Basic bm9jb2xvbg==", "xyz"] {
            assert_eq!(presented_token(Some(bad), Some(TOKEN)), Err(UnparsableCredentials), "{bad}");
        }
    }

    #[test]
    fn missing_malformed_and_wrong_tokens_are_influxd_s_401s() {
        let c = config();
        let status = |auth: Option<&str>, p: Option<&str>| {
            let e = authenticate(&c, auth, p).unwrap_err();
            let r = e.to_response();
            assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"InfluxDB\""));
            (r.status, String::from_utf8(r.body).unwrap())
        };
        let unparsable = (401, "{\"error\":\"unable to parse authentication credentials\"}\n".to_string());
        let failed = (401, "{\"error\":\"authorization failed\"}\n".to_string());
        assert_eq!(status(None, None), unparsable);
        assert_eq!(status(Some("Basic !!!"), None), unparsable);
        assert_eq!(status(Some("Bearer apiv3_wrong"), None), failed);
        assert_eq!(status(None, Some("apiv3_wrong")), failed);
        // The hash, not the token, is configured: its hex is not a token.
        assert_eq!(status(Some(&format!("Bearer {}", token_hash_hex(TOKEN))), None), failed);
        assert_eq!(authenticate(&c, Some(&basic("x", "apiv3_ops")), None).unwrap().name(), "ops");
        assert_eq!(authenticate(&c, None, Some(TOKEN)).unwrap().name(), "telegraf");
        assert!(is_open(&c, "/ping") && is_open(&c, "/health") && !is_open(&c, "/query"));
    }

    #[test]
    fn the_compare_is_constant_time_over_every_configured_hash() {
        let c = config();
        // Matches only on all 64 bytes: one differing byte anywhere fails.
        let good = token_hash("apiv3_ops");
        assert_eq!(matching_token(&c.tokens, &good), Some(2));
        for i in [0, 31, 63] {
            let mut bad = good;
            bad[i] ^= 1;
            assert_eq!(matching_token(&c.tokens, &bad), None);
        }
        // subtle's ct_eq on the byte slices is what decides (no `==`).
        let source = include_str!("auth.rs");
        let body = source.split("pub fn matching_token").nth(1).unwrap().split("\n}\n").next().unwrap();
        assert!(body.contains(".ct_eq(hash)") && !body.contains("=="), "{body}");
    }

    fn check(grant: &Grant<'_>, q: &str, db: Option<&str>) -> Result<(), String> {
        let statement = Statement::parse(q).unwrap();
        grant.authorize_statement(&statement, db).map_err(|e| {
            assert_eq!(e.status(), 403);
            e.message().to_string()
        })
    }

    #[test]
    fn writes_out_of_scope_are_influxd_s_403() {
        let c = config();
        let telegraf = authenticate(&c, None, Some(TOKEN)).unwrap();
        assert_eq!(telegraf.authorize_write("telegraf"), Ok(()));
        let e = telegraf.authorize_write("app").unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(e.message(), "\"telegraf\" user is not authorized to write to database \"app\"");
        let grafana = authenticate(&c, None, Some("apiv3_grafana")).unwrap();
        assert!(grafana.authorize_write("telegraf").is_err());
        let ops = authenticate(&c, None, Some("apiv3_ops")).unwrap();
        assert_eq!(ops.authorize_write("anything"), Ok(()));
    }

    #[test]
    fn statements_need_their_privilege_on_their_database() {
        let c = config();
        let grant = |t: &str| authenticate(&c, None, Some(t)).unwrap();
        let (telegraf, grafana, ops, appadmin) =
            (grant(TOKEN), grant("apiv3_grafana"), grant("apiv3_ops"), grant("apiv3_appadmin"));
        // Reads.
        assert_eq!(check(&grafana, "SELECT * FROM cpu", Some("telegraf")), Ok(()));
        assert_eq!(check(&grafana, "SELECT * FROM app..req", Some("telegraf")), Ok(()));
        assert_eq!(check(&grafana, "SHOW MEASUREMENTS", Some("app")), Ok(()));
        assert_eq!(
            check(&grafana, "SELECT * FROM cpu", Some("secret")),
            Err("error authorizing query: grafana not authorized to execute statement 'SELECT * FROM cpu', \
                 requires READ on secret"
                .into())
        );
        assert!(check(&grafana, "SELECT * FROM secret..cpu", Some("telegraf")).is_err());
        assert!(check(&grafana, "SHOW MEASUREMENTS ON secret", Some("telegraf")).is_err());
        assert!(check(&grafana, "SHOW DATABASES", None).is_err(), "no database needs *");
        assert_eq!(check(&ops, "SHOW DATABASES", None), Ok(()));
        assert!(check(&telegraf, "SELECT * FROM cpu", Some("telegraf")).is_err(), "write only");
        // Writes by statement.
        assert_eq!(check(&telegraf, "DELETE FROM cpu", Some("telegraf")), Ok(()));
        assert_eq!(check(&telegraf, "DROP SERIES FROM cpu WHERE host = 'a'", Some("telegraf")), Ok(()));
        assert!(check(&grafana, "DELETE FROM cpu", Some("telegraf")).is_err());
        // Schema: admin, on the statement's own database.
        assert_eq!(
            check(&telegraf, "CREATE DATABASE telegraf", None),
            Err("error authorizing query: telegraf not authorized to execute statement \
                 'CREATE DATABASE telegraf', requires admin privilege"
                .into())
        );
        assert!(check(&telegraf, "DROP MEASUREMENT cpu", Some("telegraf")).is_err());
        assert_eq!(check(&appadmin, "CREATE DATABASE app", None), Ok(()));
        assert_eq!(check(&appadmin, "DROP DATABASE \"app\"", Some("x")), Ok(()));
        assert_eq!(
            check(&appadmin, "CREATE RETENTION POLICY r ON app DURATION 1d REPLICATION 1", None),
            Ok(())
        );
        assert!(
            check(&appadmin, "CREATE RETENTION POLICY r ON other DURATION 1d REPLICATION 1", None).is_err()
        );
        assert!(check(&appadmin, "CREATE DATABASE other", Some("app")).is_err());
        assert_eq!(check(&appadmin, "DROP MEASUREMENT req", Some("app")), Ok(()));
        assert_eq!(check(&appadmin, "SELECT * FROM req", Some("app")), Ok(()), "admin reads");
        assert!(check(&appadmin, "GRANT ALL ON app TO bob", None).is_ok(), "ON app");
        assert!(check(&appadmin, "CREATE USER bob WITH PASSWORD 'x'", None).is_err(), "no database: *");
        assert_eq!(check(&ops, "CREATE USER bob WITH PASSWORD 'x'", None), Ok(()));
        assert!(check(&appadmin, "SELECT * INTO x FROM req", Some("app")).is_err());
        assert_eq!(check(&ops, "SELECT * INTO x FROM req", Some("app")), Ok(()));
    }
}
