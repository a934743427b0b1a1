//! `influx-proxy`: the native server. See README.md.
//!
//! ```text
//! influx-proxy [-c FILE]          serve (default config/proxy.json)
//! influx-proxy check [-c FILE] [--key db,measurement[,tagvalue]]...
//!                                 validate the configuration, print the
//!                                 routes and shard groups (and where keys live)
//! influx-proxy create token      print a new token and its SHA-512
//! influx-proxy --help | --version
//! ```
//!
//! Exit status: 0 on success (and after a graceful shutdown), 1 on a start-up
//! or configuration error (one line on stderr), 2 on a usage error.
#![forbid(unsafe_code)]

use influx_proxy::route::Route;
use influx_proxy::{native, VERSION};
use std::ffi::OsString;
use std::process::ExitCode;

/// jemalloc (with its background purge thread) gives freed memory back to
/// the system within seconds of a load, where glibc's malloc keeps the arenas
/// the load grew (measured: 7.6 MiB idle 10 s after the write bench, vs
/// 13.8-18.6 MiB; README "Benchmark").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const DEFAULT_CONFIG: &str = "config/proxy.json";

const USAGE: &str = "\
influx-proxy: high-availability HTTP proxy for InfluxDB 1.x

Usage:
  influx-proxy [-c FILE]         serve with the configuration FILE
  influx-proxy check [-c FILE] [--key db,measurement[,tagvalue]]...
                                 validate FILE and print the backends, shard
                                 groups and routes, and where each key lives
  influx-proxy create token      print a new token (apiv3_...) and its SHA-512,
                                 the hash to put in the configuration's
                                 auth.tokens (the token itself is kept nowhere)
  influx-proxy --help            print this help
  influx-proxy --version         print the version

Options:
  -c, --config FILE   configuration file (default config/proxy.json)
  -k, --key KEY       (check) a shard key db,measurement[,tagvalue]: print its
                      replicas; the tag value is what follows the second comma
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Serve { config: String },
    Check { config: String, keys: Vec<String> },
    CreateToken,
    Help,
    Version,
}

/// Parses the arguments (without the program name). Errors are one line.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut config = None;
    let mut check = false;
    let mut keys = Vec::new();
    let mut create = false;
    let mut token = false;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('c') | Long("config") => {
                let value = parser.value().map_err(|e| e.to_string())?;
                config = Some(value.string().map_err(|e| e.to_string())?);
            }
            Short('k') | Long("key") => {
                let value = parser.value().map_err(|e| e.to_string())?;
                keys.push(value.string().map_err(|e| e.to_string())?);
            }
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Value(v) if v == "check" && !check && !create => check = true,
            Value(v) if v == "create" && !check && !create => create = true,
            Value(v) if v == "token" && create && !token => token = true,
            Value(v) => return Err(format!("unexpected argument {:?}", v.to_string_lossy())),
            other => return Err(other.unexpected().to_string()),
        }
    }
    if create {
        return match (token, config.is_some() || !keys.is_empty()) {
            (false, _) => {
                Err("`influx-proxy create` needs what to create: `influx-proxy create token`".into())
            }
            (true, true) => Err("`influx-proxy create token` takes no options".into()),
            (true, false) => Ok(Command::CreateToken),
        };
    }
    let config = config.unwrap_or_else(|| DEFAULT_CONFIG.to_string());
    if !check && !keys.is_empty() {
        return Err("--key is an option of `influx-proxy check`".to_string());
    }
    Ok(if check { Command::Check { config, keys } } else { Command::Serve { config } })
}

/// `influx-proxy check`: the configuration's backends, shard groups and
/// routes, and for each of `keys` (`db,measurement[,tagvalue]`) its
/// replicas, as printed. Errors (one line): a bad config, a malformed key, a
/// key with no route.
fn check(config_path: &str, keys: &[String]) -> Result<String, String> {
    let config = native::load_config(config_path)?;
    let names = config.backend_names();
    let router = config.router().map_err(|e| format!("{config_path}: {e}"))?;
    let list = |set: &[usize]| -> String {
        set.iter().map(|&i| names.get(i).map_or("?", String::as_str)).collect::<Vec<_>>().join(", ")
    };
    let mut out = format!("{config_path}: ok\nbackends:\n");
    for (name, backend) in &config.backends {
        out.push_str(&format!("  {name} {}\n", backend.url));
    }
    if !router.groups().is_empty() {
        out.push_str("shard groups:\n");
        for group in router.groups() {
            let by = match group.shard_tag() {
                Some(tag) => format!("shard key (db, measurement, tag {tag})"),
                None => "shard key (db, measurement)".to_string(),
            };
            out.push_str(&format!(
                "  {}: {} (replication_factor {}, {by})\n",
                group.name(),
                list(group.backends()),
                group.replication_factor()
            ));
        }
    }
    out.push_str("routes:\n");
    for (key, route) in router.describe() {
        match route {
            Route::Set(set) => out.push_str(&format!("  {key} -> {}\n", list(set))),
            Route::Group(group) => out.push_str(&format!("  {key} -> shard group {}\n", group.name())),
        }
    }
    for key in keys {
        let mut parts = key.splitn(3, ',');
        let (db, measurement, tag) = match (parts.next(), parts.next(), parts.next()) {
            (Some(db), Some(m), tag) if !db.is_empty() && !m.is_empty() => (db, m, tag),
            _ => return Err(format!("--key {key:?}: expected db,measurement[,tagvalue]")),
        };
        let route = router.route(measurement).ok_or_else(|| {
            format!("--key {key:?}: no route for measurement {measurement:?}: add a keymap or \"_default_\"")
        })?;
        let line = match route {
            Route::Set(set) => format!("{} (keymap replica set)", list(set)),
            Route::Group(group) => {
                let replicas = group.replicas(db, measurement, tag);
                let note = match (group.shard_tag(), tag) {
                    (None, Some(_)) => ", tag value ignored: the group shards by measurement",
                    (Some(_), None) => ", no tag value: the shard of the empty value",
                    _ => "",
                };
                format!("{} (shard group {}{note})", list(&replicas), group.name())
            }
        };
        out.push_str(&format!("key {key} -> {line}\n"));
    }
    Ok(out)
}

/// `influx-proxy create token`: a new InfluxDB 3 style token from 64 bytes
/// of the OS's random source, and its SHA-512 ([`influx_proxy::auth`]):
/// `token: apiv3_...` and `sha512: <128 hex digits>`, one line each.
fn create_token() -> Result<String, String> {
    let mut random = [0u8; influx_proxy::auth::TOKEN_RANDOM_BYTES];
    getrandom::fill(&mut random).map_err(|e| format!("influx-proxy: no random bytes from the OS: {e}"))?;
    let token = influx_proxy::auth::token_from_random(&random);
    let hash = influx_proxy::auth::token_hash_hex(&token);
    Ok(format!("token: {token}\nsha512: {hash}\n"))
}

fn main() -> ExitCode {
    let command = match parse_args(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("influx-proxy: {e} (see influx-proxy --help)");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::Version => {
            println!("influx-proxy {VERSION}");
            Ok(())
        }
        Command::Check { config, keys } => check(&config, &keys).map(|text| print!("{text}")),
        Command::CreateToken => create_token().map(|text| print!("{text}")),
        Command::Serve { config } => native::run(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn parses_the_command_line() {
        let serve = |c: &str| Ok(Command::Serve { config: c.into() });
        assert_eq!(parse(&[]), serve(DEFAULT_CONFIG));
        assert_eq!(parse(&["-c", "x.json"]), serve("x.json"));
        assert_eq!(parse(&["--config=x.json"]), serve("x.json"));
        assert_eq!(parse(&["--config", "x.json"]), serve("x.json"));
        let check = |c: &str, keys: &[&str]| {
            Ok(Command::Check { config: c.into(), keys: keys.iter().map(|k| k.to_string()).collect() })
        };
        assert_eq!(parse(&["check", "-c", "y.json"]), check("y.json", &[]));
        assert_eq!(parse(&["-c", "y.json", "check"]), check("y.json", &[]));
        assert_eq!(parse(&["check"]), check(DEFAULT_CONFIG, &[]));
        assert_eq!(
            parse(&["check", "--key", "db,cpu", "-k", "app,req,c,1"]),
            check(DEFAULT_CONFIG, &["db,cpu", "app,req,c,1"])
        );
        assert_eq!(parse(&["create", "token"]), Ok(Command::CreateToken));
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(parse(&["-V"]), Ok(Command::Version));
    }

    #[test]
    fn usage_errors_are_one_line() {
        for (args, expect) in [
            (&["--frobnicate"][..], "--frobnicate"),
            (&["-c"], "missing argument"),
            (&["serve"], "unexpected argument \"serve\""),
            (&["check", "check"], "unexpected argument \"check\""),
            (&["--key", "db,cpu"], "--key is an option of `influx-proxy check`"),
            (&["check", "--key"], "missing argument"),
            (&["create"], "needs what to create"),
            (&["create", "user"], "unexpected argument \"user\""),
            (&["create", "token", "-c", "x"], "takes no options"),
            (&["check", "create"], "unexpected argument \"create\""),
            (&["token"], "unexpected argument \"token\""),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(expect), "{args:?}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn check_of_a_missing_file_is_one_line_naming_it() {
        let e = check("/nonexistent/proxy.json", &[]).unwrap_err();
        assert!(e.starts_with("/nonexistent/proxy.json: "), "{e}");
    }

    #[test]
    fn check_prints_each_group_and_where_a_key_lives() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/shard-groups.json");
        let out =
            check(path, &["telegraf,cpu".into(), "app,requests,customer-17".into(), "x,cpu.load".into()])
                .unwrap();
        assert!(
            out.contains(
                "shard groups:\n  main: a, b, c (replication_factor 2, shard key (db, measurement))\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "  tenants: c, d, e (replication_factor 2, shard key (db, measurement, tag customer_id))\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("  requests -> shard group tenants\n  _default_ -> shard group main\n"),
            "{out}"
        );
        assert!(out.contains("  cpu.load -> b\n"), "{out}");
        // placement's golden placement of (telegraf, cpu) over a, b, c, RF 2.
        assert!(out.contains("key telegraf,cpu -> b, c (shard group main)\n"), "{out}");
        assert!(out.contains("key x,cpu.load -> b (keymap replica set)\n"), "{out}");
        let tenant = out.lines().find(|l| l.starts_with("key app,requests,customer-17 -> ")).unwrap_or("");
        let replicas = tenant.trim_start_matches("key app,requests,customer-17 -> ");
        let replicas = replicas.strip_suffix(" (shard group tenants)").unwrap_or_else(|| panic!("{out}"));
        let replicas: Vec<&str> = replicas.split(", ").collect();
        assert!(
            replicas.len() == 2
                && replicas.iter().all(|r| ["c", "d", "e"].contains(r))
                && replicas[0] != replicas[1],
            "two of tenants' c, d, e: {out}"
        );
        let e = check(path, &["nocomma".into()]).unwrap_err();
        assert_eq!(e, r#"--key "nocomma": expected db,measurement[,tagvalue]"#);
    }
}
