#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The one integration-test binary of stack-passport: wire vectors, hostile
//! tokens, JWKS, revocation, delegation, and property tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::{Value, json};
use stack_core::{Error, Timestamp};
use stack_crypto::RandomSource;
use stack_crypto::ed25519::{Ed25519KeyPair, jwk_thumbprint};
use stack_passport::delegation::{NarrowError, ScopeRequest, child_depth, narrow};
use stack_passport::{
    AUDIENCE, CachingVerifier, DEFAULT_ISSUER, MAX_TOKEN_BYTES, PassportClaims, PassportError,
    PassportSigner, PassportVerifier, RevocationSet, ServiceGrant, StkClaims, VerificationKeys,
    VerifyError, VerifyOptions, decode_unverified,
};

/// 2026-04-23T14:47:12Z, the instant of the committed vector.
const NOW: i64 = 1_776_955_632;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(secs * 1000)
}

/// Deterministic "randomness": bytes start, start+1, … (wrapping).
struct CountingRng(AtomicU8);
impl CountingRng {
    fn new(start: u8) -> Self {
        Self(AtomicU8::new(start))
    }
}
impl RandomSource for CountingRng {
    fn fill(&self, dest: &mut [u8]) -> Result<(), Error> {
        for b in dest {
            *b = self.0.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

fn key(seed_start: u8) -> (Ed25519KeyPair, Vec<u8>) {
    let (k, doc) = Ed25519KeyPair::generate(&CountingRng::new(seed_start)).unwrap();
    (k, doc.into_inner())
}

fn signer(seed_start: u8) -> PassportSigner {
    PassportSigner::with_thumbprint_kid(key(seed_start).0)
}

fn grant(conn: &str, scopes: &[&str]) -> ServiceGrant {
    ServiceGrant {
        service_name: "slack".into(),
        service_id: "svc_slack".into(),
        connection_id: conn.into(),
        credential_ref: format!("cred_{conn}"),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        constraints: vec![],
        allow_data_from: vec![],
    }
}

fn claims() -> PassportClaims {
    PassportClaims {
        iss: DEFAULT_ISSUER.into(),
        sub: "agt_research01".into(),
        aud: AUDIENCE.into(),
        exp: NOW + 900,
        iat: NOW,
        nbf: None,
        jti: "pp_9fJ2kLmN3pQrS5tUvW7xYz".into(),
        stk: StkClaims {
            operator_id: "op_acme0001".into(),
            agent_id: "agt_research01".into(),
            agent_name: "research-bot".into(),
            services: vec![ServiceGrant {
                constraints: vec![json!({"type":"max_amount","value":100})],
                allow_data_from: vec!["svc_github".into()],
                ..grant("conn_slack01", &["chat:write", "channels:read"])
            }],
            identity_claims: vec![json!({
                "claim_id":"clm_01","provider":"worldid","layer":"humanity",
                "claim_type":"verified_human","assurance_level":"high",
                "verified_at": NOW - 86_400, "expires_at": NOW + 86_400 * 30
            })],
            delegation_depth: 0,
            parent_passport_id: None,
            session_id: "ses_01".into(),
            accountability: Some("enforced".into()),
            intent_summary: Some("Summarise the #research channel".into()),
            intent_services: vec!["slack".into()],
            checkpoint_interval: Some(300),
            mission_id: Some("ms_01".into()),
            mission_ids: vec!["ms_01".into()],
        },
    }
}

fn verifier_for(signers: &[&PassportSigner]) -> PassportVerifier {
    let mut keys = VerificationKeys::new();
    for s in signers {
        keys.insert(s.kid().to_owned(), s.public_key());
    }
    PassportVerifier::new(keys, VerifyOptions::default())
}

/// A token over arbitrary header and payload bytes, correctly signed.
fn raw_token(key: &Ed25519KeyPair, header: &[u8], payload: impl AsRef<[u8]>) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload.as_ref())
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn header_for(kid: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"alg":"EdDSA","typ":"JWT","kid":kid})).unwrap()
}

fn payload_with(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = serde_json::to_value(claims()).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

// ---------------------------------------------------------------- round trip

#[test]
fn round_trip_sign_then_verify() {
    let s = signer(1);
    let token = s.sign(&claims()).unwrap();
    let v = verifier_for(&[&s]);
    assert_eq!(v.verify(&token, at(NOW)).unwrap(), claims());
    assert_eq!(v.verify(&token, at(NOW + 899)).unwrap(), claims());
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header, json!({"alg":"EdDSA","typ":"JWT","kid":s.kid()}));
    assert_eq!(s.kid(), jwk_thumbprint(&s.public_key()));
    let unverified = decode_unverified(&token).unwrap();
    assert_eq!(unverified.kid.as_deref(), Some(s.kid()));
    assert_eq!(unverified.claims["sub"], "agt_research01");
}

#[test]
fn statements_are_signed_with_the_passport_key_but_are_never_passports() {
    let s = signer(1);
    let body = json!({"type": "intent_simulation", "allowed": true, "sub": "agt_research01"});
    let token = s.sign_statement("intent-simulation+jwt", &body).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(
        header,
        json!({"alg":"EdDSA","typ":"intent-simulation+jwt","kid":s.kid()})
    );
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload, body);
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let input = format!("{}.{}", parts[0], parts[1]);
    assert!(stack_crypto::ed25519::verify(
        &s.public_key(),
        input.as_bytes(),
        &signature
    ));
    // A passport verifier refuses it whatever its payload says.
    let forged = s
        .sign_statement("intent-simulation+jwt", &claims())
        .unwrap();
    assert!(verifier_for(&[&s]).verify(&forged, at(NOW)).is_err());
    assert!(s.sign_statement("JWT", &body).is_err());
    assert!(s.sign_statement("jwt", &body).is_err());
    assert!(s.sign_statement("", &body).is_err());
}

#[test]
fn optional_fields_are_omitted_and_defaults_read_back() {
    let s = signer(1);
    let mut c = claims();
    c.stk.accountability = None;
    c.stk.intent_summary = None;
    c.stk.checkpoint_interval = None;
    c.stk.mission_id = None;
    c.nbf = Some(NOW - 5);
    c.stk.delegation_depth = 2;
    c.stk.parent_passport_id = Some("pp_parent".into());
    let token = s.sign(&c).unwrap();
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(payload["stk"].get("accountability").is_none());
    assert_eq!(payload["nbf"], NOW - 5);
    assert_eq!(verifier_for(&[&s]).verify(&token, at(NOW)).unwrap(), c);

    // Minimal stk as another issuer might send it: optional lists absent.
    let key = key(1).0;
    let minimal = payload_with(|v| {
        let stk = v["stk"].as_object_mut().unwrap();
        for k in [
            "intent_services",
            "mission_ids",
            "accountability",
            "intent_summary",
            "checkpoint_interval",
            "mission_id",
        ] {
            stk.remove(k);
        }
        v["stk"]["services"][0]
            .as_object_mut()
            .unwrap()
            .remove("constraints");
        v["stk"]["extra_future_claim"] = json!({"ignored": true});
    });
    let token = raw_token(&key, &header_for(s.kid()), &minimal);
    let got = verifier_for(&[&s]).verify(&token, at(NOW)).unwrap();
    assert!(got.stk.mission_ids.is_empty());
    assert!(got.stk.services[0].constraints.is_empty());
}

// ------------------------------------------------------------- test vector

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors.json")
}

/// The wire format is pinned: a key from a fixed seed and fixed claims must
/// give exactly the committed token. Regenerate (only for a deliberate format
/// change) with `STACK_UPDATE_VECTORS=1 cargo test -p stack-passport`.
#[test]
fn committed_test_vector() {
    let (k, pkcs8) = key(0);
    let kid = jwk_thumbprint(&k.public_key());
    let x = URL_SAFE_NO_PAD.encode(k.public_key());
    let s = PassportSigner::new(kid.clone(), k);
    let token = s.sign(&claims()).unwrap();
    let computed = json!({
        "description": "Ed25519 seed = bytes 0x00..0x1f; kid = RFC 7638 thumbprint; verify at now",
        "pkcs8_hex": hex_encode(&pkcs8),
        "kid": kid,
        "x": x,
        "now": NOW,
        "claims": serde_json::to_value(claims()).unwrap(),
        "token": token,
    });
    if std::env::var_os("STACK_UPDATE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&computed).unwrap() + "\n";
        std::fs::write(vectors_path(), text).unwrap();
    }
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    assert_eq!(stored, computed, "the passport wire format changed");

    // And the stored token verifies with a key set read from the stored x.
    let jwks = json!({"keys":[{"kty":"OKP","crv":"Ed25519","kid":stored["kid"],"x":stored["x"]}]});
    let v = PassportVerifier::new(
        VerificationKeys::from_jwks(&jwks).unwrap(),
        VerifyOptions::default(),
    );
    let got = v
        .verify(stored["token"].as_str().unwrap(), at(NOW))
        .unwrap();
    assert_eq!(serde_json::to_value(got).unwrap(), stored["claims"]);
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------- hostile tokens

fn hs256(secret: &[u8], input: &str) -> Vec<u8> {
    // HMAC-SHA256 by hand over stack_crypto::sha256, to forge the classic
    // alg-confusion token without another dependency.
    let mut k = [0u8; 64];
    if secret.len() > 64 {
        k[..32].copy_from_slice(&stack_crypto::sha256(secret));
    } else {
        k[..secret.len()].copy_from_slice(secret);
    }
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(input.as_bytes());
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&stack_crypto::sha256(&inner));
    stack_crypto::sha256(&outer).to_vec()
}

#[test]
fn hostile_tokens_are_refused_with_the_specific_error() {
    let s = signer(1);
    let other = signer(2);
    let (k, _) = key(1);
    let kid = s.kid().to_owned();
    let v = verifier_for(&[&s]);
    let good = s.sign(&claims()).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let body = parts[1];

    // alg: none, with and without a signature.
    let none_h = b64(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#).as_bytes());

    // HS256 with the public key bytes as the HMAC secret.
    let hs_h = b64(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#).as_bytes());
    let hs_input = format!("{hs_h}.{body}");
    let hs_sig = b64(&hs256(&s.public_key(), &hs_input));
    let hs_x_sig = b64(&hs256(
        URL_SAFE_NO_PAD.encode(s.public_key()).as_bytes(),
        &hs_input,
    ));

    // A retired key: known when signed, removed from the set since.
    let retired = signer(3);
    let mut rotated = verifier_for(&[&s, &retired]);
    let retired_token = retired.sign(&claims()).unwrap();
    assert!(rotated.verify(&retired_token, at(NOW)).is_ok());
    let mut keys = rotated.keys().clone();
    keys.remove(retired.kid());
    rotated.replace_keys(keys);

    let mut wrong_aud = claims();
    wrong_aud.aud = "someone-else".into();
    let mut wrong_iss = claims();
    wrong_iss.iss = "https://api.getstack.run".into();
    let mut future_nbf = claims();
    future_nbf.nbf = Some(NOW + 600);
    let mut future_iat = claims();
    future_iat.iat = NOW + 600;
    future_iat.exp = NOW + 1200;

    let h = header_for(&kid);
    let cases: Vec<(&str, String, VerifyError)> = vec![
        (
            "alg none, empty signature",
            format!("{none_h}.{body}."),
            VerifyError::UnsupportedAlgorithm("none".into()),
        ),
        (
            "alg none, original signature",
            format!("{none_h}.{body}.{}", parts[2]),
            VerifyError::UnsupportedAlgorithm("none".into()),
        ),
        (
            "HS256 keyed with the raw public key",
            format!("{hs_input}.{hs_sig}"),
            VerifyError::UnsupportedAlgorithm("HS256".into()),
        ),
        (
            "HS256 keyed with the JWK x",
            format!("{hs_input}.{hs_x_sig}"),
            VerifyError::UnsupportedAlgorithm("HS256".into()),
        ),
        (
            "unknown kid",
            raw_token(&k, &header_for("no-such-kid"), payload_with(|_| {})),
            VerifyError::UnknownKey("no-such-kid".into()),
        ),
        (
            "missing kid",
            raw_token(&k, br#"{"alg":"EdDSA","typ":"JWT"}"#, payload_with(|_| {})),
            VerifyError::MissingKid,
        ),
        (
            "empty kid",
            raw_token(&k, &header_for(""), payload_with(|_| {})),
            VerifyError::MissingKid,
        ),
        (
            "signature from another key under our kid",
            raw_token(&key(2).0, &h, payload_with(|_| {})),
            VerifyError::BadSignature,
        ),
        (
            "another signer's own token",
            other.sign(&claims()).unwrap(),
            VerifyError::UnknownKey(other.kid().into()),
        ),
        (
            "payload swapped under a valid signature",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&payload_with(|v| v["stk"]["delegation_depth"] = json!(1))),
                parts[2]
            ),
            VerifyError::BadSignature,
        ),
        (
            "wrong aud",
            s.sign(&wrong_aud).unwrap(),
            VerifyError::WrongAudience,
        ),
        (
            "aud array without ours",
            raw_token(&k, &h, payload_with(|v| v["aud"] = json!(["a", "b"]))),
            VerifyError::WrongAudience,
        ),
        (
            "wrong iss",
            s.sign(&wrong_iss).unwrap(),
            VerifyError::WrongIssuer,
        ),
        (
            "nbf in the future",
            s.sign(&future_nbf).unwrap(),
            VerifyError::NotYetValid { nbf: NOW + 600 },
        ),
        (
            "iat in the future",
            s.sign(&future_iat).unwrap(),
            VerifyError::IssuedInFuture,
        ),
        (
            "truncated to two parts",
            format!("{}.{}", parts[0], parts[1]),
            VerifyError::Malformed("a passport has three dot-separated parts"),
        ),
        (
            "truncated signature",
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]),
            VerifyError::BadSignature,
        ),
        (
            "truncated mid-payload",
            good[..parts[0].len() + 10].to_owned(),
            VerifyError::Malformed("a passport has three dot-separated parts"),
        ),
        (
            "four parts",
            format!("{good}.x"),
            VerifyError::Malformed("a passport has three dot-separated parts"),
        ),
        (
            "garbled base64 header",
            format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
            VerifyError::Malformed("the header is not base64url"),
        ),
        (
            "garbled base64 payload",
            format!("{}.{}*.{}", parts[0], parts[1], parts[2]),
            VerifyError::Malformed("the payload is not base64url"),
        ),
        (
            "padded base64 signature",
            format!("{good}=="),
            VerifyError::Malformed("the signature is not base64url"),
        ),
        (
            "non-JSON header",
            format!("{}.{}.{}", b64(b"EdDSA"), parts[1], parts[2]),
            VerifyError::Malformed("the header is not a JSON object"),
        ),
        (
            "non-JSON payload",
            raw_token(&k, &h, b"this is not json"),
            VerifyError::Malformed("the payload is not a JSON object"),
        ),
        (
            "JSON array payload",
            raw_token(&k, &h, b"[1,2,3]"),
            VerifyError::Malformed("the payload is not a JSON object"),
        ),
        (
            "oversized",
            format!("{}.{}.{}", parts[0], "A".repeat(MAX_TOKEN_BYTES), parts[2]),
            VerifyError::TooLarge,
        ),
        (
            "duplicated key in header",
            raw_token(
                &k,
                format!(r#"{{"alg":"EdDSA","alg":"none","kid":"{kid}"}}"#).as_bytes(),
                payload_with(|_| {}),
            ),
            VerifyError::Malformed("duplicate key in the header"),
        ),
        (
            "duplicated kid in header",
            raw_token(
                &k,
                format!(r#"{{"alg":"EdDSA","kid":"{kid}","kid":"other"}}"#).as_bytes(),
                payload_with(|_| {}),
            ),
            VerifyError::Malformed("duplicate key in the header"),
        ),
        (
            "duplicated key in payload",
            raw_token(&k, &h, {
                let p = String::from_utf8(payload_with(|_| {})).unwrap();
                format!(r#"{{"sub":"agt_other",{}"#, &p[1..]).into_bytes()
            }),
            VerifyError::Malformed("duplicate key in the payload"),
        ),
        (
            "duplicated nested key in payload",
            raw_token(&k, &h, {
                let p = String::from_utf8(payload_with(|_| {})).unwrap();
                p.replacen(r#""stk":{"#, r#""stk":{"agent_id":"agt_x","#, 1)
                    .into_bytes()
            }),
            VerifyError::Malformed("duplicate key in the payload"),
        ),
        (
            "float exp",
            raw_token(
                &k,
                &h,
                payload_with(|v| v["exp"] = json!((NOW + 900) as f64 + 0.5)),
            ),
            VerifyError::InvalidClaims("exp must be an integer".into()),
        ),
        (
            "integral float exp",
            raw_token(&k, &h, {
                let p = String::from_utf8(payload_with(|_| {})).unwrap();
                p.replace(
                    &format!("\"exp\":{}", NOW + 900),
                    &format!("\"exp\":{}.0", NOW + 900),
                )
                .into_bytes()
            }),
            VerifyError::InvalidClaims("exp must be an integer".into()),
        ),
        (
            "string iat",
            raw_token(&k, &h, payload_with(|v| v["iat"] = json!(NOW.to_string()))),
            VerifyError::InvalidClaims("iat must be an integer".into()),
        ),
        (
            "missing exp",
            raw_token(
                &k,
                &h,
                payload_with(|v| {
                    v.as_object_mut().unwrap().remove("exp");
                }),
            ),
            VerifyError::InvalidClaims("exp is required".into()),
        ),
        (
            "missing jti",
            raw_token(
                &k,
                &h,
                payload_with(|v| {
                    v.as_object_mut().unwrap().remove("jti");
                }),
            ),
            VerifyError::InvalidClaims("jti must be a non-empty string".into()),
        ),
        (
            "missing stk",
            raw_token(
                &k,
                &h,
                payload_with(|v| {
                    v.as_object_mut().unwrap().remove("stk");
                }),
            ),
            VerifyError::InvalidClaims("stk is required".into()),
        ),
        (
            "sub != stk.agent_id",
            raw_token(&k, &h, payload_with(|v| v["sub"] = json!("agt_other"))),
            VerifyError::InvalidClaims("sub must equal stk.agent_id".into()),
        ),
        (
            "depth over the maximum",
            raw_token(
                &k,
                &h,
                payload_with(|v| v["stk"]["delegation_depth"] = json!(5)),
            ),
            VerifyError::InvalidClaims("stk.delegation_depth exceeds the maximum".into()),
        ),
        (
            "crit header",
            raw_token(
                &k,
                format!(r#"{{"alg":"EdDSA","kid":"{kid}","crit":["exp"]}}"#).as_bytes(),
                payload_with(|_| {}),
            ),
            VerifyError::Malformed("critical header parameters are not supported"),
        ),
        (
            "empty string",
            String::new(),
            VerifyError::Malformed("a passport has three dot-separated parts"),
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(v.verify(&token, at(NOW)), Err(want), "{name}");
    }
    assert_eq!(
        rotated.verify(&retired_token, at(NOW)),
        Err(VerifyError::UnknownKey(retired.kid().into())),
        "retired key"
    );
    assert!(matches!(
        s.sign(&sub_mismatch_claims()),
        Err(PassportError::InvalidClaims(_))
    ));
}

fn sub_mismatch_claims() -> PassportClaims {
    let mut c = claims();
    c.sub = "agt_other".into();
    c
}

#[test]
fn expiry_leeway_and_refresh_grace() {
    let s = signer(1);
    let v = verifier_for(&[&s]);
    let token = s.sign(&claims()).unwrap();
    let exp = NOW + 900;
    assert!(v.verify(&token, at(exp + 29)).is_ok(), "within leeway");
    assert_eq!(
        v.verify(&token, at(exp + 30)),
        Err(VerifyError::Expired { exp })
    );
    assert_eq!(
        v.verify(&token, at(exp + 3600)).unwrap_err().code(),
        "expired"
    );
    let day = 86_400;
    assert!(
        v.verify_allowing_expired(&token, at(exp + day), day)
            .is_ok()
    );
    assert_eq!(
        v.verify_allowing_expired(&token, at(exp + day + 1), day),
        Err(VerifyError::Expired { exp })
    );
    // Grace does not waive anything else.
    let mut bad_aud = claims();
    bad_aud.aud = "x".into();
    assert_eq!(
        v.verify_allowing_expired(&s.sign(&bad_aud).unwrap(), at(exp + 10), day),
        Err(VerifyError::WrongAudience)
    );
    let strict = PassportVerifier::new(
        v.keys().clone(),
        VerifyOptions {
            leeway_secs: 0,
            ..VerifyOptions::default()
        },
    );
    assert_eq!(
        strict.verify(&token, at(exp)),
        Err(VerifyError::Expired { exp })
    );
    // nbf leeway
    let mut c = claims();
    c.nbf = Some(NOW + 20);
    let t = s.sign(&c).unwrap();
    assert!(v.verify(&t, at(NOW)).is_ok());
    assert_eq!(
        strict.verify(&t, at(NOW)),
        Err(VerifyError::NotYetValid { nbf: NOW + 20 })
    );
}

#[test]
fn the_memo_rechecks_time_only_and_is_emptied_with_the_keys() {
    let s = signer(1);
    let other = signer(9);
    let v = verifier_for(&[&s]).with_memo(2);
    let token = s.sign(&claims()).unwrap();
    let exp = NOW + 900;
    // Not remembered while not valid; remembered once every check passed.
    let mut future = claims();
    future.nbf = Some(NOW + 100);
    let early = s.sign(&future).unwrap();
    assert_eq!(
        v.verify(&early, at(NOW)),
        Err(VerifyError::NotYetValid { nbf: NOW + 100 })
    );
    assert_eq!(v.memo_len(), 0);
    assert_eq!(v.verify(&token, at(NOW)).unwrap(), claims());
    assert_eq!(v.memo_len(), 1);
    // A remembered token is still held to the clock of each call.
    assert_eq!(v.verify(&token, at(NOW + 10)).unwrap(), claims());
    assert_eq!(
        v.verify(&token, at(exp + 30)),
        Err(VerifyError::Expired { exp })
    );
    assert!(
        v.verify_allowing_expired(&token, at(exp + 60), 3600)
            .is_ok()
    );
    // Other bytes are other tokens: a forged signature is still refused.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert!(v.verify(&forged, at(NOW)).is_err());
    assert_eq!(v.memo_len(), 1);
    // Bounded: a full memo drops what has expired, then everything.
    let mut c2 = claims();
    c2.jti = "pp_second".into();
    let t2 = s.sign(&c2).unwrap();
    assert!(v.verify(&t2, at(NOW)).is_ok());
    assert_eq!(v.memo_len(), 2);
    let mut c3 = claims();
    c3.jti = "pp_third".into();
    let t3 = s.sign(&c3).unwrap();
    assert!(v.verify(&t3, at(NOW)).is_ok());
    assert_eq!(v.memo_len(), 1);
    // Clones share it; a new key set empties it, and a token whose key is
    // gone is refused even though it was remembered.
    let mut rotated = v.clone();
    assert_eq!(rotated.memo_len(), 1);
    let mut keys = VerificationKeys::new();
    keys.insert(other.kid().to_owned(), other.public_key());
    rotated.replace_keys(keys);
    assert_eq!(rotated.memo_len(), 0);
    assert!(matches!(
        rotated.verify(&t3, at(NOW)),
        Err(VerifyError::UnknownKey(_))
    ));
    assert_eq!(v.verify(&t3, at(NOW)).unwrap().jti, "pp_third");
    // Oversized input is refused before it is hashed.
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(v.verify(&huge, at(NOW)), Err(VerifyError::TooLarge));
}

#[test]
fn aud_may_be_an_array_containing_ours() {
    let (k, _) = key(1);
    let s = signer(1);
    let v = verifier_for(&[&s]);
    let token = raw_token(
        &k,
        &header_for(s.kid()),
        payload_with(|v| v["aud"] = json!(["other", AUDIENCE])),
    );
    assert_eq!(v.verify(&token, at(NOW)).unwrap().aud, AUDIENCE);
}

#[test]
fn errors_have_stable_codes_and_never_echo_the_token() {
    let s = signer(1);
    let token = s.sign(&claims()).unwrap();
    let errors = [
        (VerifyError::Malformed("x"), "malformed"),
        (VerifyError::TooLarge, "too_large"),
        (
            VerifyError::UnsupportedAlgorithm("none".into()),
            "unsupported_algorithm",
        ),
        (VerifyError::MissingKid, "missing_kid"),
        (VerifyError::UnknownKey("k".into()), "unknown_key"),
        (VerifyError::BadSignature, "bad_signature"),
        (VerifyError::Expired { exp: 1 }, "expired"),
        (VerifyError::NotYetValid { nbf: 1 }, "not_yet_valid"),
        (VerifyError::IssuedInFuture, "issued_in_future"),
        (VerifyError::WrongIssuer, "wrong_issuer"),
        (VerifyError::WrongAudience, "wrong_audience"),
        (VerifyError::InvalidClaims("x".into()), "invalid_claims"),
        (VerifyError::Revoked, "revoked"),
    ];
    for (e, code) in errors {
        assert_eq!(e.code(), code);
        assert!(!e.describe().contains(&token));
        assert!(!e.describe().is_empty());
    }
    assert_eq!(
        Error::from(VerifyError::Revoked).code,
        stack_core::ErrorCode::PassportRevoked
    );
    assert_eq!(
        Error::from(VerifyError::Expired { exp: 1 }).code,
        stack_core::ErrorCode::PassportExpired
    );
    assert_eq!(
        Error::from(VerifyError::BadSignature).code,
        stack_core::ErrorCode::Unauthorized
    );
    // A hostile kid is cut short in the error.
    let long_kid = "k".repeat(5000);
    let e = verifier_for(&[&s])
        .verify(
            &raw_token(&key(1).0, &header_for(&long_kid), b"{}"),
            at(NOW),
        )
        .unwrap_err();
    assert!(e.describe().len() < 200, "{}", e.describe().len());
}

// ------------------------------------------------------------------- JWKS

#[test]
fn jwks_round_trip_and_filtering() {
    let a = signer(1);
    let b = signer(2);
    let mut keys = VerificationKeys::new();
    keys.insert(a.kid().into(), a.public_key());
    keys.insert(b.kid().into(), b.public_key());
    let doc = keys.to_jwks();
    let entries = doc["keys"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for e in entries {
        assert_eq!(e["kty"], "OKP");
        assert_eq!(e["crv"], "Ed25519");
        assert_eq!(e["use"], "sig");
        assert_eq!(e["alg"], "EdDSA");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(e["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
    }
    let back = VerificationKeys::from_jwks(&doc).unwrap();
    assert_eq!(back.kids(), keys.kids());
    assert_eq!(back.get(a.kid()), Some(&a.public_key()));

    let x = URL_SAFE_NO_PAD.encode(a.public_key());
    let mixed = json!({"keys":[
        {"kty":"OKP","crv":"Ed25519","x":x},                                   // no kid
        {"kty":"OKP","crv":"Ed25519","x":x,"kid":""},                          // empty kid
        {"kty":"OKP","crv":"Ed25519","x":x,"kid":"enc","use":"enc"},           // not a signing key
        {"kty":"OKP","crv":"X25519","x":x,"kid":"x25519"},                     // wrong curve
        {"kty":"EC","crv":"P-256","x":x,"y":x,"kid":"ec"},                     // wrong type
        {"kty":"OKP","crv":"Ed25519","x":x,"kid":"rs","alg":"RS256"},          // wrong alg
        {"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"short"},                // not 32 bytes
        {"kty":"OKP","crv":"Ed25519","x":"!!","kid":"garbled"},                // not base64url
        "not an object",
        {"kty":"OKP","crv":"Ed25519","x":x,"kid":"ok-no-use"},                 // use omitted: fine
        {"kty":"OKP","crv":"Ed25519","x":x,"kid":"ok","use":"sig","alg":"EdDSA"}
    ]});
    let filtered = VerificationKeys::from_jwks(&mixed).unwrap();
    assert_eq!(
        filtered.kids(),
        vec!["ok".to_owned(), "ok-no-use".to_owned()]
    );

    let none_left = json!({"keys":[{"kty":"OKP","crv":"Ed25519","x":x,"use":"enc","kid":"e"}]});
    assert_eq!(
        VerificationKeys::from_jwks(&none_left).unwrap_err(),
        PassportError::NoUsableKeys
    );
    assert_eq!(
        VerificationKeys::from_jwks(&json!({"keys":[]}))
            .unwrap_err()
            .code(),
        "no_usable_keys"
    );
    for bad in [json!({}), json!([]), json!({"keys":{}}), json!(null)] {
        assert_eq!(
            VerificationKeys::from_jwks(&bad).unwrap_err().code(),
            "invalid_jwks"
        );
    }
}

// ------------------------------------------------------------- revocation

#[test]
fn revocation_set_and_caching_verifier() {
    let mut set = RevocationSet::default();
    assert!(set.is_empty());
    set.insert("pp_a".into(), 100);
    set.insert("pp_b".into(), 200);
    set.insert("pp_a".into(), 50); // keeps the later expiry
    assert_eq!(set.len(), 2);
    set.prune(150);
    assert!(!set.contains("pp_a"));
    assert!(set.contains("pp_b"));

    let s = signer(1);
    let mut cv = CachingVerifier::new(verifier_for(&[&s]));
    let token = s.sign(&claims()).unwrap();
    assert!(cv.verify(&token, at(NOW)).is_ok());
    cv.revoke(claims().jti, claims().exp);
    assert_eq!(cv.verify(&token, at(NOW)), Err(VerifyError::Revoked));
    // Pruning keeps the entry while the token could still pass on leeway.
    cv.prune(at(claims().exp + 10));
    assert_eq!(cv.verify(&token, at(NOW)), Err(VerifyError::Revoked));
    cv.prune(at(claims().exp + 31));
    assert!(cv.revocations().is_empty());
    // A forged token with a revoked jti is still a bad signature, not "revoked".
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert_ne!(cv.verify(&forged, at(NOW)), Ok(claims()));
}

// ------------------------------------------------------------- delegation

#[test]
fn delegation_narrowing() {
    let parent = vec![
        ServiceGrant {
            constraints: vec![json!({"type":"max_amount","value":100})],
            ..grant("conn_a", &["read", "write"])
        },
        ServiceGrant {
            allow_data_from: vec!["svc_x".into(), "svc_y".into()],
            ..grant("conn_b", &["read"])
        },
    ];
    let req = |conn: &str, scopes: &[&str]| ScopeRequest {
        service_connection_id: conn.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        constraints: vec![],
        allow_data_from: vec![],
    };

    // Empty request: inherit unchanged.
    assert_eq!(narrow(&parent, &[]).unwrap(), parent);

    // Subset of scopes on one connection; parent constraints kept, new ones added.
    let child = narrow(
        &parent,
        &[ScopeRequest {
            constraints: vec![json!({"type":"allowed_values","values":["#general"]})],
            ..req("conn_a", &["read"])
        }],
    )
    .unwrap();
    assert_eq!(child.len(), 1);
    assert_eq!(child[0].scopes, vec!["read".to_owned()]);
    assert_eq!(child[0].constraints.len(), 2);
    assert_eq!(child[0].credential_ref, "cred_conn_a");

    // Escalations.
    assert_eq!(
        narrow(&parent, &[req("conn_a", &["admin"])]),
        Err(NarrowError::ScopeEscalation {
            connection_id: "conn_a".into(),
            scope: Some("admin".into())
        })
    );
    assert_eq!(
        narrow(&parent, &[req("conn_zzz", &["read"])]),
        Err(NarrowError::ScopeEscalation {
            connection_id: "conn_zzz".into(),
            scope: None
        })
    );
    assert_eq!(
        narrow(&parent, &[req("conn_b", &["write"])])
            .unwrap_err()
            .code(),
        "SCOPE_ESCALATION"
    );

    // allow_data_from: subset of a non-empty parent list, inherited when empty.
    let narrowed = narrow(
        &parent,
        &[ScopeRequest {
            allow_data_from: vec!["svc_x".into()],
            ..req("conn_b", &[])
        }],
    )
    .unwrap();
    assert_eq!(narrowed[0].allow_data_from, vec!["svc_x".to_owned()]);
    assert_eq!(
        narrowed[0].scopes,
        vec!["read".to_owned()],
        "empty scopes inherit"
    );
    assert_eq!(
        narrow(&parent, &[req("conn_b", &["read"])]).unwrap()[0].allow_data_from,
        parent[1].allow_data_from
    );
    assert_eq!(
        narrow(
            &parent,
            &[ScopeRequest {
                allow_data_from: vec!["svc_z".into()],
                ..req("conn_b", &["read"])
            }]
        ),
        Err(NarrowError::ScopeEscalation {
            connection_id: "conn_b".into(),
            scope: Some("allow_data_from:svc_z".into())
        })
    );
    // An unrestricted parent may be restricted.
    assert_eq!(
        narrow(
            &parent,
            &[ScopeRequest {
                allow_data_from: vec!["svc_q".into()],
                ..req("conn_a", &["read"])
            }]
        )
        .unwrap()[0]
            .allow_data_from,
        vec!["svc_q".to_owned()]
    );
    // The same connection twice merges into one grant.
    let merged = narrow(
        &parent,
        &[req("conn_a", &["read"]), req("conn_a", &["write", "read"])],
    )
    .unwrap();
    assert_eq!(merged.len(), 1);
    assert_eq!(
        merged[0].scopes,
        vec!["read".to_owned(), "write".to_owned()]
    );

    // Request bodies as the SDK sends them.
    let body: Vec<ScopeRequest> =
        serde_json::from_value(json!([{"service_connection_id":"conn_a","scopes":["read"]}]))
            .unwrap();
    assert_eq!(narrow(&parent, &body).unwrap()[0].scopes, vec!["read"]);

    // Depth.
    assert_eq!(child_depth(0), Ok(1));
    assert_eq!(child_depth(3), Ok(4));
    assert_eq!(child_depth(4), Err(NarrowError::DepthExceeded { depth: 5 }));
    assert_eq!(
        child_depth(255).unwrap_err().code(),
        "DELEGATION_DEPTH_EXCEEDED"
    );
}

// ------------------------------------------------- jsonwebtoken interop

#[test]
fn interoperates_with_jsonwebtoken_both_ways() {
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
    stack_crypto::jwt::install_ring_provider();
    let (k, pkcs8) = key(1);
    let s = PassportSigner::with_thumbprint_kid(k);

    // Ours → jsonwebtoken.
    let token = s.sign(&claims()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false; // it would read the wall clock
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[DEFAULT_ISSUER]);
    let data = jsonwebtoken::decode::<PassportClaims>(
        &token,
        &DecodingKey::from_ed_der(&s.public_key()),
        &validation,
    )
    .unwrap();
    assert_eq!(data.claims, claims());
    assert_eq!(data.header.kid.as_deref(), Some(s.kid()));

    // jsonwebtoken → ours.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(s.kid().to_owned());
    let theirs =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_ed_der(&pkcs8)).unwrap();
    assert_eq!(
        verifier_for(&[&s]).verify(&theirs, at(NOW)).unwrap(),
        claims()
    );
}

// ------------------------------------------------ properties and fuzz corpus

/// The key and instant of the committed vector, as in the fuzz target.
fn fixture() -> (PassportVerifier, String) {
    let s = signer(0);
    let token = s.sign(&claims()).unwrap();
    (verifier_for(&[&s]), token)
}

/// The check the `passport_verify` fuzz target runs, on stable: never panic,
/// and anything accepted is a consistent passport.
fn check_input(v: &PassportVerifier, data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let _ = decode_unverified(text);
    match v.verify(text, at(NOW)) {
        Ok(c) => {
            assert_eq!(c.sub, c.stk.agent_id);
            assert!(text.len() <= MAX_TOKEN_BYTES);
            true
        }
        Err(e) => {
            assert!(!e.code().is_empty());
            false
        }
    }
}

#[test]
fn seeded_corpus_never_panics_and_only_the_original_verifies() {
    let (v, token) = fixture();
    let mut corpus: Vec<Vec<u8>> = vec![token.clone().into_bytes()];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/passport_verify");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            corpus.push(std::fs::read(e.path()).unwrap());
        }
    }
    // Deterministic single-byte mutations of the valid token: every position,
    // a few replacement bytes each.
    let bytes = token.as_bytes();
    let mut accepted = 0;
    for i in 0..bytes.len() {
        for &r in &[b'A', b'_', b'.', b'=', 0xff] {
            if bytes[i] == r {
                continue;
            }
            let mut m = bytes.to_vec();
            m[i] = r;
            if check_input(&v, &m) {
                // Only a change in the unused low bits of the last base64
                // character could survive, and the strict decoder refuses it.
                accepted += 1;
            }
        }
    }
    assert_eq!(accepted, 0);
    for input in &corpus {
        // Only the committed vector token (also a corpus seed) verifies.
        assert_eq!(check_input(&v, input), *input == token.as_bytes());
    }
    assert!(check_input(&v, token.as_bytes()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_verify(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let (v, _) = fixture();
        prop_assert!(!check_input(&v, &data));
    }

    #[test]
    fn random_dotted_base64_never_verifies(
        h in "[A-Za-z0-9_-]{0,64}", p in "[A-Za-z0-9_-]{0,256}", s in "[A-Za-z0-9_-]{0,90}"
    ) {
        let (v, _) = fixture();
        let token = format!("{h}.{p}.{s}");
        prop_assert!(!check_input(&v, token.as_bytes()));
    }

    #[test]
    fn mutations_of_a_valid_token_never_verify(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let (v, token) = fixture();
        let mut m = token.clone().into_bytes();
        for (idx, byte) in &edits {
            let i = idx.index(m.len());
            m[i] = *byte;
        }
        prop_assume!(m != token.as_bytes());
        prop_assert!(!check_input(&v, &m));
    }

    #[test]
    fn cut_or_extended_tokens_never_verify(cut in 0usize..400, tail in "[A-Za-z0-9_.-]{1,8}") {
        let (v, token) = fixture();
        let cut = cut.min(token.len() - 1);
        prop_assert!(!check_input(&v, &token.as_bytes()[..cut]));
        let extended = format!("{token}{tail}");
        prop_assert!(!check_input(&v, extended.as_bytes()));
    }
}
