//! TLS in the wasm build: not available. The native host speaks TLS with
//! rustls and its `ring` crypto provider; ring's C code needs clang to build
//! for wasm32-wasip2, which the project's machines do not install (they
//! build with gcc): `cargo build --target wasm32-wasip2` of rustls + ring
//! fails in ring's build script with `error occurred in cc-rs: failed to
//! find tool "clang": No such file or directory (os error 2)`. (With
//! Debian's clang 14 installed, ring 0.17.14, rustls 0.23 and futures-rustls
//! do build for wasm32-wasip2; wiring them to this host's wstd streams is
//! not done.) So this host refuses, with a clear error, every setting that
//! needs TLS, rather than sending data in the clear to a backend configured
//! as `https://` (README.md, "TLS").

use influx_proxy::config::Config;
use influx_proxy::transport::BackendAddr;

/// Why this build cannot use TLS, for messages.
pub const WHY: &str = "TLS is not available in the wasm build (its crypto provider, ring, needs \
                       clang to build for wasm32-wasip2); use the native build";

/// At start: `Err("FILE: $.path: ...")` naming the first setting that
/// needs TLS (`listen_tls`, then an `https://` backend URL); `Ok` for a
/// config without TLS. (`backend_tls` alone is harmless: it applies to
/// `https://` backends only.)
pub fn refuse(file: &str, config: &Config) -> Result<(), String> {
    if config.listen_tls.is_some() {
        return Err(format!("{file}: $.listen_tls: {WHY}"));
    }
    for (name, backend) in &config.backends {
        if backend.url.starts_with("https://") {
            return Err(format!("{file}: $.backends.{name}.url: https:// backends: {WHY}"));
        }
    }
    Ok(())
}

/// At connect (a backend a reload added): the transport's refusal of an
/// `https://` backend, `None` for `http://`.
#[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
pub fn refuse_backend(backend: &BackendAddr) -> Option<String> {
    backend.tls.as_ref().map(|_| format!("{}: https:// backends: {WHY}", backend.url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse("proxy.json", text).unwrap()
    }

    #[test]
    fn https_backends_and_the_tls_listener_are_refused_naming_the_key() {
        let plain = parse(
            r#"{"backends": {"a": {"url": "http://127.0.0.1:8086"}}, "keymaps": {"_default_": ["a"]},
                              "backend_tls": {"ca_file": "ca.pem"}}"#,
        );
        assert_eq!(refuse("proxy.json", &plain), Ok(()));
        let https = parse(
            r#"{"backends": {"a": {"url": "https://127.0.0.1:8086"}}, "keymaps": {"_default_": ["a"]}}"#,
        );
        assert_eq!(
            refuse("proxy.json", &https).unwrap_err(),
            format!("proxy.json: $.backends.a.url: https:// backends: {WHY}")
        );
        let listener = parse(
            r#"{"backends": {"a": {"url": "http://127.0.0.1:8086"}}, "keymaps": {"_default_": ["a"]},
                "listen_tls": {"cert_file": "c.pem", "key_file": "k.pem"}}"#,
        );
        assert_eq!(refuse("proxy.json", &listener).unwrap_err(), format!("proxy.json: $.listen_tls: {WHY}"));
        let addr = https.backend_addrs().unwrap().remove(0);
        assert_eq!(
            refuse_backend(&addr).unwrap(),
            format!("https://127.0.0.1:8086: https:// backends: {WHY}")
        );
        assert_eq!(refuse_backend(&plain.backend_addrs().unwrap()[0]), None);
    }
}
