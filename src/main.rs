//! `influx-proxy`: the native server. See README.md.
//!
//! ```text
//! influx-proxy [-c FILE]          serve (default config/proxy.json)
//! influx-proxy check [-c FILE]    validate the configuration, print the routes
//! influx-proxy --help | --version
//! ```
//!
//! Exit status: 0 on success (and after a graceful shutdown), 1 on a start-up
//! or configuration error (one line on stderr), 2 on a usage error.
#![forbid(unsafe_code)]

use influx_proxy::route::Router;
use influx_proxy::{native, VERSION};
use std::ffi::OsString;
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "config/proxy.json";

const USAGE: &str = "\
influx-proxy: high-availability HTTP proxy for InfluxDB 1.x

Usage:
  influx-proxy [-c FILE]         serve with the configuration FILE
  influx-proxy check [-c FILE]   validate FILE and print the backends and routes
  influx-proxy --help            print this help
  influx-proxy --version         print the version

Options:
  -c, --config FILE   configuration file (default config/proxy.json)
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Serve { config: String },
    Check { config: String },
    Help,
    Version,
}

/// Parses the arguments (without the program name). Errors are one line.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut config = None;
    let mut check = false;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('c') | Long("config") => {
                let value = parser.value().map_err(|e| e.to_string())?;
                config = Some(value.string().map_err(|e| e.to_string())?);
            }
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Value(v) if v == "check" && !check => check = true,
            Value(v) => return Err(format!("unexpected argument {:?}", v.to_string_lossy())),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let config = config.unwrap_or_else(|| DEFAULT_CONFIG.to_string());
    Ok(if check { Command::Check { config } } else { Command::Serve { config } })
}

/// `influx-proxy check`: the configuration's backends and routes, as printed.
fn check(config_path: &str) -> Result<String, String> {
    let config = native::load_config(config_path)?;
    let names: Vec<String> = config.backends.keys().cloned().collect();
    let router =
        Router::new(&config.keymaps, &names).map_err(|e| format!("{config_path}: $.keymaps: {e}"))?;
    let mut out = format!("{config_path}: ok\nbackends:\n");
    for (name, backend) in &config.backends {
        out.push_str(&format!("  {name} {}\n", backend.url));
    }
    out.push_str("routes:\n");
    for (key, replicas) in router.describe() {
        let replicas: Vec<&str> =
            replicas.iter().map(|&i| names.get(i).map_or("?", String::as_str)).collect();
        out.push_str(&format!("  {key} -> {}\n", replicas.join(", ")));
    }
    Ok(out)
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
        Command::Check { config } => check(&config).map(|text| print!("{text}")),
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
        assert_eq!(parse(&["check", "-c", "y.json"]), Ok(Command::Check { config: "y.json".into() }));
        assert_eq!(parse(&["-c", "y.json", "check"]), Ok(Command::Check { config: "y.json".into() }));
        assert_eq!(parse(&["check"]), Ok(Command::Check { config: DEFAULT_CONFIG.into() }));
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
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(expect), "{args:?}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn check_of_a_missing_file_is_one_line_naming_it() {
        let e = check("/nonexistent/proxy.json").unwrap_err();
        assert!(e.starts_with("/nonexistent/proxy.json: "), "{e}");
    }
}
