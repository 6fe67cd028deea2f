//! libFuzzer target: any bytes, decoded and verified as a passport against a
//! fixed key set at a fixed instant, must never panic; whatever verifies must
//! be a consistent passport. The key and instant are those of
//! `crates/stack-passport/tests/vectors.json`, so the committed vector token
//! (seeded in `corpus/passport_verify/`) is the one valid input.
//!
//! Stable stand-in: `seeded_corpus_never_panics_and_only_the_original_verifies`
//! and the proptests in `crates/stack-passport/tests/passport.rs` run the same
//! check over this corpus and over random and mutated tokens.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stack_core::{Error, Timestamp};
use stack_crypto::RandomSource;
use stack_crypto::ed25519::{Ed25519KeyPair, jwk_thumbprint};
use stack_passport::{
    MAX_TOKEN_BYTES, PassportVerifier, VerificationKeys, VerifyOptions, decode_unverified,
};

/// 2026-04-23T14:47:12Z, the instant of the committed vector.
const NOW_MS: i64 = 1_776_955_632_000;

/// The vector's seed: bytes 0x00, 0x01, … 0x1f.
struct Counting;
impl RandomSource for Counting {
    fn fill(&self, dest: &mut [u8]) -> Result<(), Error> {
        for (i, b) in dest.iter_mut().enumerate() {
            *b = i as u8;
        }
        Ok(())
    }
}

fn verifier() -> &'static PassportVerifier {
    static VERIFIER: OnceLock<PassportVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let (key, _) = Ed25519KeyPair::generate(&Counting).expect("fixed key");
        let mut keys = VerificationKeys::new();
        keys.insert(jwk_thumbprint(&key.public_key()), key.public_key());
        keys.insert("retired-looking".into(), [7; 32]);
        PassportVerifier::new(keys, VerifyOptions::default())
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = decode_unverified(text);
    let now = Timestamp::from_millis(NOW_MS);
    match verifier().verify(text, now) {
        Ok(claims) => {
            assert_eq!(claims.sub, claims.stk.agent_id);
            assert!(text.len() <= MAX_TOKEN_BYTES);
        }
        Err(e) => assert!(!e.code().is_empty()),
    }
    let _ = verifier().verify_allowing_expired(text, now, 86_400);
});
