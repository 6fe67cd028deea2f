//! The master key: from `STACK_MASTER_KEY`, or a key file in the data
//! directory created once with mode 0600. See `docs/design/keys.md`.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use stack_crypto::RandomSource;
use stack_crypto::aead::DataKey;

use crate::config::Config;

fn decode(text: &str) -> anyhow::Result<DataKey> {
    let t = text.trim();
    let bytes = URL_SAFE_NO_PAD
        .decode(t.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(t))
        .context("the master key must be base64 or base64url")?;
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "the master key must be exactly 32 bytes (got {})",
            bytes.len()
        )
    })?;
    Ok(DataKey::from_bytes(arr))
}

/// Loads the master key, creating the key file on a fresh data directory.
pub fn load_master_key(config: &Config) -> anyhow::Result<DataKey> {
    if let Some(k) = &config.master_key {
        return decode(k.expose()).context("STACK_MASTER_KEY");
    }
    if config.database_url.is_some() {
        tracing::warn!(
            "STACK_MASTER_KEY is not set: using a key file in the data directory; every node sharing this database needs the same master key"
        );
    }
    let path = config.data_dir.join("master.key");
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    if path.exists() {
        check_permissions(&path)?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return decode(&text).with_context(|| format!("{}", path.display()));
    }
    let mut bytes = [0u8; 32];
    stack_crypto::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    write_new_secret_file(&path, URL_SAFE_NO_PAD.encode(bytes).as_bytes())?;
    tracing::info!(path = %path.display(), "created the master key file (mode 0600); back it up: without it the signing keys cannot be opened");
    Ok(DataKey::from_bytes(bytes))
}

#[cfg(unix)]
fn write_new_secret_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn write_new_secret_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(contents)?;
    Ok(())
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {mode:o}); chmod 600 it",
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}
