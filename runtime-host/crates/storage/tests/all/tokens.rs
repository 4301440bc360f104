//! API tokens: created once, found by their secret, listed per organisation, revoked.

use std::time::{SystemTime, UNIX_EPOCH};

use weir_storage::{TOKEN_PREFIX, TokenInfo, token_hash};

use crate::support::{postgres, sql};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_token_is_found_until_revoked() {
    let (_server, storage) = postgres().await;
    let before = now_ms();

    let token = storage.create_token("acme", Some("grafana")).await.unwrap();

    assert_eq!(token.org, "acme");
    assert_eq!(token.name.as_deref(), Some("grafana"));
    let found = storage.find_token(&token.secret).await.unwrap().unwrap();
    assert_eq!(found.id, token.id);
    assert_eq!(found.org, "acme");
    assert_eq!(found.name.as_deref(), Some("grafana"));
    assert!(!found.revoked);
    assert!(storage.token_is_active(token.id).await.unwrap());
    // The database clock and ours may differ a little.
    assert!(
        (before - 60_000..now_ms() + 60_000).contains(&found.created_at_ms),
        "{found:?}"
    );

    assert!(storage.revoke_token(token.id).await.unwrap());

    let found = storage.find_token(&token.secret).await.unwrap().unwrap();
    assert!(found.revoked, "{found:?}");
    assert!(!storage.token_is_active(token.id).await.unwrap());
    assert!(!storage.token_is_active(token.id + 1000).await.unwrap());
    assert!(
        !storage.revoke_token(token.id).await.unwrap(),
        "already revoked"
    );
    assert!(
        !storage.revoke_token(token.id + 1000).await.unwrap(),
        "no such token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_hash_of_a_secret_is_stored() {
    let (server, storage) = postgres().await;
    let token = storage.create_token("acme", None).await.unwrap();
    let other = storage.create_token("acme", None).await.unwrap();

    let random = token.secret.strip_prefix(TOKEN_PREFIX).unwrap();
    assert_eq!(random.len(), 64, "{}", token.secret);
    assert!(random.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(token.secret, other.secret);
    assert!(
        !format!("{token:?}").contains(random),
        "Debug shows the secret"
    );

    // Neither the secret nor its random part appears in any column of any row, in any encoding
    // PostgreSQL prints (text, and bytea as hex).
    let client = sql(&server).await;
    let rows: Vec<String> = client
        .query(
            "SELECT t::text || encode(t.token_hash, 'escape') FROM api_tokens t",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert!(!row.contains(random), "secret stored in {row}");
    }
    let stored: Vec<u8> = client
        .query_one(
            "SELECT token_hash FROM api_tokens WHERE id = $1",
            &[&token.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, token_hash(&token.secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_secrets_are_not_found() {
    let (_server, storage) = postgres().await;
    let token = storage.create_token("acme", None).await.unwrap();
    // Same shape, one digit off.
    let mut unknown = token.secret.clone();
    let last = if unknown.ends_with('0') { "1" } else { "0" };
    unknown.replace_range(unknown.len() - 1.., last);

    for secret in [
        unknown.as_str(),
        "",
        "weir_",
        "weir_not-a-token",
        &token.secret[TOKEN_PREFIX.len()..],
        &token.secret.to_uppercase(),
        &format!("{} ", token.secret),
    ] {
        assert_eq!(
            storage.find_token(secret).await.unwrap(),
            None,
            "{secret:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_per_org_with_revoked_ones() {
    let (_server, storage) = postgres().await;
    let first = storage.create_token("acme", Some("first")).await.unwrap();
    let other = storage.create_token("globex", None).await.unwrap();
    let second = storage.create_token("acme", None).await.unwrap();
    storage.revoke_token(first.id).await.unwrap();

    let acme = storage.list_tokens(Some("acme")).await.unwrap();
    let summary = |tokens: &[TokenInfo]| -> Vec<(i64, String, Option<String>, bool)> {
        tokens
            .iter()
            .map(|t| (t.id, t.org.clone(), t.name.clone(), t.revoked))
            .collect()
    };
    assert_eq!(
        summary(&acme),
        [
            (first.id, "acme".into(), Some("first".into()), true),
            (second.id, "acme".into(), None, false),
        ]
    );
    let ids: Vec<i64> = storage
        .list_tokens(None)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, [first.id, other.id, second.id]);
    assert!(
        storage
            .list_tokens(Some("nobody"))
            .await
            .unwrap()
            .is_empty()
    );
}
