//! The throw-away servers tests rely on really start, answer, stop and restart.

use weir_tests::{PostgresServer, RedisServer};

#[tokio::test(flavor = "multi_thread")]
async fn throwaway_postgres_answers_queries_and_survives_a_restart() {
    let mut pg = PostgresServer::start_temporary().expect("starting PostgreSQL");
    let query = |url: String| async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let row = client.query_one("SELECT 40 + $1::int4", &[&2i32]).await?;
        Ok::<i32, tokio_postgres::Error>(row.get(0))
    };
    assert_eq!(query(pg.url()).await.unwrap(), 42);
    pg.stop();
    assert!(
        query(pg.url()).await.is_err(),
        "a stopped server must refuse connections"
    );
    pg.start_again().expect("restarting PostgreSQL");
    assert_eq!(query(pg.url()).await.unwrap(), 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn throwaway_redis_answers_and_two_servers_do_not_collide() {
    let a = RedisServer::start_temporary().expect("starting Redis a");
    let b = RedisServer::start_temporary().expect("starting Redis b");
    assert_ne!(a.port(), b.port());
    let set = |url: String, value: &'static str| async move {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("SET")
            .arg("k")
            .arg(value)
            .query_async::<()>(&mut conn)
            .await?;
        Ok::<_, redis::RedisError>(conn)
    };
    let mut conn_a = set(a.url(), "from-a").await.unwrap();
    let _conn_b = set(b.url(), "from-b").await.unwrap();
    let value: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut conn_a)
        .await
        .unwrap();
    assert_eq!(value, "from-a");
}
