//! OAuth lifetimes against a real (SQLite) store and a clock the test moves:
//! an access token stops authenticating after `ACCESS_TOKEN_TTL_SECONDS`, its
//! refresh token still works until `REFRESH_TOKEN_TTL_SECONDS`, and an
//! authorization code dies after `CODE_TTL_SECONDS`. And the per-node cache
//! of verified credentials: a key or token revoked on one node stops working
//! there at once and on another node within `CREDENTIAL_CACHE_TTL_MS`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use stack_app::oauth::{
    ACCESS_TOKEN_TTL_SECONDS, Audience, AuthorizeParams, CODE_TTL_SECONDS, ClientMetadata,
    ConsentForm, LoginForm, REFRESH_TOKEN_TTL_SECONDS, TokenRequest, TokenResponse,
};
use stack_app::{App, AppConfig};
use stack_core::ErrorCode;
use stack_crypto::SystemRandom;
use stack_store::{Db, DbConfig};

struct TestClock(AtomicI64);

impl stack_app::Clock for TestClock {
    fn now(&self) -> stack_core::Timestamp {
        stack_core::Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

impl TestClock {
    fn advance(&self, seconds: i64) {
        self.advance_ms(seconds * 1000);
    }

    fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "expiry-test-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";

/// Unpadded base64url (RFC 4648 §5), for the PKCE challenge.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Runs the browser flow and returns a fresh authorization code.
async fn code(app: &App, client_id: &str, api_key: &str) -> String {
    let login = app
        .begin_authorization(AuthorizeParams {
            response_type: Some("code".into()),
            client_id: Some(client_id.into()),
            redirect_uri: Some(REDIRECT.into()),
            state: Some("st".into()),
            code_challenge: Some(base64url(&stack_crypto::sha256(VERIFIER.as_bytes()))),
            code_challenge_method: Some("S256".into()),
            ..AuthorizeParams::default()
        })
        .await
        .unwrap();
    let browser = login.browser_secret.clone();
    let consent = app
        .authorization_login(
            LoginForm {
                request_id: login.request_id,
                csrf: login.csrf,
                api_key: api_key.into(),
            },
            browser.as_deref(),
        )
        .await
        .unwrap();
    let redirect = app
        .authorization_decision(
            ConsentForm {
                request_id: consent.request_id,
                csrf: consent.csrf,
                decision: "approve".into(),
            },
            browser.as_deref(),
        )
        .await
        .unwrap();
    let query = redirect.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("code="))
        .unwrap()
        .to_owned()
}

fn exchange(client_id: &str, code: String) -> TokenRequest {
    TokenRequest {
        grant_type: Some("authorization_code".into()),
        code: Some(code),
        redirect_uri: Some(REDIRECT.into()),
        client_id: Some(client_id.into()),
        code_verifier: Some(VERIFIER.into()),
        ..TokenRequest::default()
    }
}

fn refresh(client_id: &str, tokens: &TokenResponse) -> TokenRequest {
    TokenRequest {
        grant_type: Some("refresh_token".into()),
        refresh_token: Some(tokens.refresh_token.clone()),
        client_id: Some(client_id.into()),
        ..TokenRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_and_codes_expire() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&DbConfig::Sqlite {
        path: dir.path().join("stack.db"),
    })
    .await
    .unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(1_800_000_000_000)));
    let app = App::new(
        Arc::new(db.clone()),
        clock.clone(),
        Arc::new(SystemRandom::new()),
        AppConfig::default(),
    );
    let op = app.create_operator("expiry").await.unwrap();
    let api_key = op.api_key.expose().to_owned();
    let client = app
        .register_oauth_client(
            ClientMetadata {
                redirect_uris: vec![REDIRECT.into()],
                client_name: Some("expiry test".into()),
                ..ClientMetadata::default()
            },
            "127.0.0.1",
        )
        .await
        .unwrap();
    let client_id = client.client_id.as_str();

    // An access token works until its lifetime is over, then never again.
    let c = code(&app, client_id, &api_key).await;
    let tokens = app.oauth_token(exchange(client_id, c)).await.unwrap();
    assert_eq!(tokens.expires_in, ACCESS_TOKEN_TTL_SECONDS);
    let p = app
        .authenticate_bearer_for(&tokens.access_token, Audience::Mcp)
        .await
        .unwrap();
    assert_eq!(p.operator_id, op.operator.id);
    clock.advance(ACCESS_TOKEN_TTL_SECONDS - 1);
    app.authenticate_bearer_for(&tokens.access_token, Audience::Mcp)
        .await
        .unwrap();
    clock.advance(1);
    let err = app
        .authenticate_bearer_for(&tokens.access_token, Audience::Mcp)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthorized, "{err:?}");

    // Its refresh token still yields a working pair …
    let renewed = app.oauth_token(refresh(client_id, &tokens)).await.unwrap();
    app.authenticate_bearer_for(&renewed.access_token, Audience::Mcp)
        .await
        .unwrap();
    // … until the refresh token's own lifetime is over.
    clock.advance(REFRESH_TOKEN_TTL_SECONDS);
    let err = app
        .oauth_token(refresh(client_id, &renewed))
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "invalid_grant", "{err:?}");

    // A code not exchanged within its lifetime is refused.
    let c = code(&app, client_id, &api_key).await;
    clock.advance(CODE_TTL_SECONDS + 1);
    let err = app.oauth_token(exchange(client_id, c)).await.unwrap_err();
    assert_eq!(err.code.as_str(), "invalid_grant", "{err:?}");

    db.close().await.unwrap();
}

/// Two nodes (two `App`s) on one database and one clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_credentials_stop_working_on_every_node_within_the_cache_ttl() {
    use sea_orm::ConnectionTrait;
    use stack_app::auth::CREDENTIAL_CACHE_TTL_MS;
    use stack_app::oauth::RevokeRequest;

    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&DbConfig::Sqlite {
        path: dir.path().join("stack.db"),
    })
    .await
    .unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(1_800_000_000_000)));
    let node = || {
        App::new(
            Arc::new(db.clone()),
            clock.clone(),
            Arc::new(SystemRandom::new()),
            AppConfig::default(),
        )
    };
    let (a, b) = (node(), node());
    let op = a.create_operator("cache").await.unwrap();
    let key = op.api_key.expose().to_owned();
    let client = a
        .register_oauth_client(
            ClientMetadata {
                redirect_uris: vec![REDIRECT.into()],
                ..ClientMetadata::default()
            },
            "127.0.0.1",
        )
        .await
        .unwrap();
    let c = code(&a, &client.client_id, &key).await;
    let tokens = a.oauth_token(exchange(&client.client_id, c)).await.unwrap();
    for app in [&a, &b] {
        app.authenticate_bearer(&key).await.unwrap();
        app.authenticate_bearer_for(&tokens.access_token, Audience::Mcp)
            .await
            .unwrap();
    }
    assert_eq!(b.credential_cache().len(), 2);
    // A token for /mcp stays refused on the REST API, cached or not.
    let err = b
        .authenticate_bearer_for(&tokens.access_token, Audience::Rest)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthorized);

    // Node A revokes the access token: refused on A at once; B trusts its
    // cached verification until the TTL is over, then asks the database.
    a.oauth_revoke(RevokeRequest {
        token: Some(tokens.access_token.clone()),
        ..RevokeRequest::default()
    })
    .await
    .unwrap();
    assert!(
        a.authenticate_bearer_for(&tokens.access_token, Audience::Mcp)
            .await
            .is_err()
    );
    clock.advance_ms(CREDENTIAL_CACHE_TTL_MS - 1);
    b.authenticate_bearer_for(&tokens.access_token, Audience::Mcp)
        .await
        .unwrap();
    clock.advance_ms(1);
    assert!(
        b.authenticate_bearer_for(&tokens.access_token, Audience::Mcp)
            .await
            .is_err()
    );

    // The API key is revoked (by whatever revokes keys, which then calls
    // forget_api_key on its node): the same bound holds.
    b.authenticate_bearer(&key).await.unwrap();
    db.connection()
        .execute_unprepared(&format!(
            "UPDATE api_keys SET revoked_at = 1 WHERE operator_id = '{}'",
            op.operator.id
        ))
        .await
        .unwrap();
    let key_id = db
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            db.connection().get_database_backend(),
            format!(
                "SELECT id FROM api_keys WHERE operator_id = '{}'",
                op.operator.id
            ),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<String>("", "id")
        .unwrap();
    a.forget_api_key(&key_id);
    let err = a.authenticate_bearer(&key).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidApiKey);
    b.authenticate_bearer(&key).await.unwrap();
    clock.advance_ms(CREDENTIAL_CACHE_TTL_MS);
    let err = b.authenticate_bearer(&key).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidApiKey);

    db.close().await.unwrap();
}
