//! Passport throughput, single-threaded.
//!
//! ```text
//! cargo run --release -p stack-passport --example passport_bench [ITERATIONS]
//! ```
//!
//! Measures (a) raw `stack_crypto::ed25519::verify` over a passport's signing
//! input, (b) the full `CachingVerifier::verify` (parse, signature, claims,
//! and a lookup in a set of 100,000 revoked ids), (c) `PassportSigner::sign`
//! of realistic claims; prints ops/s and the ratio b/a (target ≥ 0.8: the
//! JWT layer should cost little next to the signature check). The three run
//! interleaved in 5 rounds and the best round of each is reported, so that a
//! busy shared machine skews them alike.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use stack_core::Timestamp;
use stack_crypto::SystemRandom;
use stack_crypto::ed25519::{self, Ed25519KeyPair};
use stack_passport::{
    AUDIENCE, CachingVerifier, DEFAULT_ISSUER, PassportClaims, PassportSigner, PassportVerifier,
    ServiceGrant, StkClaims, VerificationKeys, VerifyOptions,
};

const NOW: i64 = 1_776_955_632;
const REVOKED: usize = 100_000;
const ROUNDS: u32 = 5;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("passport_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn claims() -> PassportClaims {
    let grant = |name: &str, conn: &str, scopes: &[&str]| ServiceGrant {
        service_name: name.into(),
        service_id: format!("svc_{name}"),
        connection_id: conn.into(),
        credential_ref: format!("cred_{conn}"),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        constraints: vec![json!({"type":"max_amount","param":"amount","value":100})],
        allow_data_from: vec![],
    };
    PassportClaims {
        iss: DEFAULT_ISSUER.into(),
        sub: "agt_Xk3pQ9rT2vW8yZ1aB4cD6e".into(),
        aud: AUDIENCE.into(),
        exp: NOW + 900,
        iat: NOW,
        nbf: None,
        jti: "pp_9fJ2kLmN3pQrS5tUvW7xYz".into(),
        stk: StkClaims {
            operator_id: "op_Lm4nP7qR0sT3uV6wX9yZ2a".into(),
            agent_id: "agt_Xk3pQ9rT2vW8yZ1aB4cD6e".into(),
            agent_name: "research-assistant".into(),
            services: vec![
                grant(
                    "slack",
                    "conn_sl01",
                    &["chat:write", "channels:read", "users:read"],
                ),
                grant("github", "conn_gh01", &["repo:read", "issues:write"]),
                grant("stripe", "conn_st01", &["charges:read"]),
            ],
            identity_claims: vec![json!({
                "claim_id":"clm_01","provider":"worldid","layer":"humanity",
                "claim_type":"verified_human","assurance_level":"high",
                "verified_at": NOW - 86_400, "expires_at": NOW + 2_592_000
            })],
            delegation_depth: 0,
            parent_passport_id: None,
            session_id: "ses_Qw2Er4Ty6Ui8Op0As1Df3G".into(),
            accountability: Some("enforced".into()),
            intent_summary: Some("Triage new GitHub issues and post a summary to #eng".into()),
            intent_services: vec!["github".into(), "slack".into()],
            checkpoint_interval: Some(300),
            mission_id: None,
            mission_ids: vec!["ms_Zx9Cv7Bn5Mm3Kk1Jj2Hh4G".into()],
        },
    }
}

fn ops_per_sec(n: u32, f: impl FnMut()) -> f64 {
    let mut f = f;
    for _ in 0..(n / 10).max(1) {
        f(); // warm-up
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

fn run() -> Result<(), String> {
    let n: u32 = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|_| format!("not a number: {a}"))?,
        None => 20_000,
    };
    let (key, _) = Ed25519KeyPair::generate(&SystemRandom::new()).map_err(|e| e.to_string())?;
    let signer = PassportSigner::with_thumbprint_kid(key);
    let claims = claims();
    let token = signer.sign(&claims).map_err(|e| e.to_string())?;

    let mut keys = VerificationKeys::new();
    keys.insert(signer.kid().to_owned(), signer.public_key());
    let mut verifier = CachingVerifier::new(PassportVerifier::new(keys, VerifyOptions::default()));
    for i in 0..REVOKED {
        verifier.revoke(format!("pp_revoked{i:016}"), NOW + 900);
    }
    let now = Timestamp::from_millis(NOW * 1000 + 1);
    verifier
        .verify(&token, now)
        .map_err(|e| format!("the benchmark token does not verify: {e}"))?;

    let (signing_input, sig_b64) = token.rsplit_once('.').ok_or("token has no signature")?;
    let signature = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|e| e.to_string())?;
    let public_key = signer.public_key();

    // Interleaved rounds, best of each: on a shared machine this compares
    // (a) and (b) under the same load instead of whatever load each met.
    let per_round = (n / ROUNDS).max(1);
    let (mut raw, mut full, mut sign) = (0f64, 0f64, 0f64);
    for _ in 0..ROUNDS {
        raw = raw.max(ops_per_sec(per_round, || {
            assert_verified(ed25519::verify(
                black_box(&public_key),
                black_box(signing_input.as_bytes()),
                black_box(&signature),
            ));
        }));
        full = full.max(ops_per_sec(per_round, || {
            assert_verified(verifier.verify(black_box(&token), now).is_ok());
        }));
        sign = sign.max(ops_per_sec(per_round, || {
            black_box(signer.sign(black_box(&claims)).is_ok());
        }));
    }

    println!(
        "passport_bench: {n} iterations of each ({ROUNDS} interleaved rounds, best round kept), token {} bytes, {REVOKED} revoked ids",
        token.len()
    );
    println!(
        "(a) raw ed25519 verify          {raw:>10.0} ops/s  ({:.1} µs/op)",
        1e6 / raw
    );
    println!(
        "(b) CachingVerifier::verify     {full:>10.0} ops/s  ({:.1} µs/op)",
        1e6 / full
    );
    println!(
        "(c) PassportSigner::sign        {sign:>10.0} ops/s  ({:.1} µs/op)",
        1e6 / sign
    );
    println!("ratio b/a = {:.2} (target >= 0.80)", full / raw);
    Ok(())
}

/// Keeps the optimiser from discarding the work, without a panic path.
fn assert_verified(ok: bool) {
    if !black_box(ok) {
        eprintln!("passport_bench: a verification failed mid-run");
        std::process::exit(1);
    }
}
