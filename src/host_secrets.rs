//! Backend secrets (config `password_env` / `password_file` / `token_env` /
//! `token_file`, with token auth on: see [`crate::auth`]) read from the
//! host's environment and files, written once for both hosts (feature
//! `host-fs`): the native binary, and the WASI component, where `std::env`
//! is what wasmtime passes (`--env NAME`) and `std::fs` sees only the
//! preopened directories (`--dir HOST::GUEST`).

use crate::config::SecretSource;

/// The secret `source` names: an environment variable's value, or a whole
/// file (its trailing newline is dropped by
/// [`crate::config::Config::resolve_credentials`]). Errors: one phrase,
/// `not set`, `not UTF-8`, or `cannot read it: <io error>`.
pub fn read_secret(source: &SecretSource) -> Result<String, String> {
    match source {
        SecretSource::Env(name) => std::env::var(name).map_err(|e| match e {
            std::env::VarError::NotPresent => "not set".to_string(),
            std::env::VarError::NotUnicode(_) => "not UTF-8".to_string(),
        }),
        SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_variable_or_a_file_and_names_what_went_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "pw\n").unwrap();
        let path = file.to_string_lossy().into_owned();
        assert_eq!(read_secret(&SecretSource::File(path)), Ok("pw\n".to_string()));
        let missing = dir.path().join("missing").to_string_lossy().into_owned();
        let e = read_secret(&SecretSource::File(missing)).unwrap_err();
        assert!(e.starts_with("cannot read it: "), "{e}");
        assert_eq!(
            read_secret(&SecretSource::Env("INFLUX_PROXY_TEST_SURELY_UNSET".into())),
            Err("not set".to_string())
        );
        let path = std::env::var("PATH").unwrap();
        assert_eq!(read_secret(&SecretSource::Env("PATH".into())), Ok(path));
    }
}
