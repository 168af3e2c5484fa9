//! Shared secrets: from the environment, or created once in the data dir (mode 0600) and reused, so
//! `trailbook token` and `trailbook serve` with the same data dir agree.

use std::io::Write;
use std::path::Path;

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}; set {env} or fix the data dir's permissions")]
pub struct SecretError {
    action: &'static str,
    path: String,
    env: &'static str,
    #[source]
    source: std::io::Error,
}

/// The secret named `env` if set and non-empty; else the content of `<data_dir>/<file>`, created with 32
/// random bytes (hex) when missing.
pub fn load_or_create(
    env: &'static str,
    data_dir: &Path,
    file: &str,
) -> Result<Vec<u8>, SecretError> {
    if let Ok(value) = std::env::var(env) {
        if !value.is_empty() {
            return Ok(value.into_bytes());
        }
    }
    let path = data_dir.join(file);
    let err = |action, source| SecretError {
        action,
        path: path.display().to_string(),
        env,
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("read", e)),
    }
    std::fs::create_dir_all(data_dir).map_err(|e| err("create the directory of", e))?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())
                .map_err(|e| err("write", e))?;
            Ok(secret.into_bytes())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&path)
            .map(|t| t.trim().as_bytes().to_vec())
            .map_err(|e| err("read", e)),
        Err(e) => Err(err("create", e)),
    }
}
