//! Verify a passport offline, as an embedding service would.
//!
//! ```text
//! cargo run -p stack-passport --example offline_verify -- JWKS.json TOKEN_FILE [REVOKED_IDS_FILE]
//! ```
//!
//! `JWKS.json` is the body of `GET /v1/.well-known/jwks.json`; `TOKEN_FILE`
//! holds the passport (`-` reads it from stdin); `REVOKED_IDS_FILE` lists one
//! revoked `jti` per line. `PASSPORT_NOW=<unix seconds>` replaces the clock
//! (to replay a verdict, e.g. on `tests/vectors.json` at its `now`). Prints
//! the verdict; exits 0 when the passport is valid, 1 when it is refused, 2 on
//! a usage or input error.
#![allow(clippy::print_stdout)]

use std::io::Read as _;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use stack_core::Timestamp;
use stack_passport::{CachingVerifier, PassportVerifier, VerificationKeys, VerifyOptions};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("offline_verify: {message}");
            eprintln!("usage: offline_verify JWKS.json TOKEN_FILE|- [REVOKED_IDS_FILE]");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(jwks_path), Some(token_path)) = (args.first(), args.get(1)) else {
        return Err("missing arguments".into());
    };
    let jwks_text =
        std::fs::read_to_string(jwks_path).map_err(|e| format!("reading {jwks_path}: {e}"))?;
    let jwks: serde_json::Value =
        serde_json::from_str(&jwks_text).map_err(|e| format!("{jwks_path} is not JSON: {e}"))?;
    let keys = VerificationKeys::from_jwks(&jwks).map_err(|e| format!("{jwks_path}: {e}"))?;

    let token = if token_path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(token_path).map_err(|e| format!("reading {token_path}: {e}"))?
    };

    let mut verifier = CachingVerifier::new(PassportVerifier::new(keys, VerifyOptions::default()));
    if let Some(revoked_path) = args.get(2) {
        let ids = std::fs::read_to_string(revoked_path)
            .map_err(|e| format!("reading {revoked_path}: {e}"))?;
        for jti in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
            // The file carries no expiry: keep each id for good.
            verifier.revoke(jti.to_owned(), i64::MAX);
        }
    }

    let now = match std::env::var("PASSPORT_NOW") {
        Ok(secs) => {
            let secs: i64 = secs
                .trim()
                .parse()
                .map_err(|_| format!("PASSPORT_NOW is not a number of seconds: {secs}"))?;
            Timestamp::from_millis(secs.saturating_mul(1000))
        }
        Err(_) => {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|_| "the system clock is before 1970".to_owned())?
                .as_millis();
            Timestamp::from_millis(i64::try_from(now_ms).unwrap_or(i64::MAX))
        }
    };

    match verifier.verify(token.trim(), now) {
        Ok(claims) => {
            println!("valid");
            println!("  jti       {}", claims.jti);
            println!("  agent     {} ({})", claims.sub, claims.stk.agent_name);
            println!("  operator  {}", claims.stk.operator_id);
            println!(
                "  expires   {}",
                Timestamp::from_millis(claims.exp.saturating_mul(1000)).to_rfc3339()
            );
            println!("  depth     {}", claims.stk.delegation_depth);
            for s in &claims.stk.services {
                println!(
                    "  service   {} via {}: {}",
                    s.service_name,
                    s.connection_id,
                    s.scopes.join(" ")
                );
            }
            Ok(true)
        }
        Err(e) => {
            println!("refused: {} ({})", e.code(), e.describe());
            Ok(false)
        }
    }
}
