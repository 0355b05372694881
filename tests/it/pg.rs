//! The tests' PostgreSQL: a throwaway cluster per test, from `clairo-pgtest` (which the
//! benchmarks use too). No mock of the database anywhere.

pub use clairo_pgtest::{PASSWORD, PgCluster, USER};

#[tokio::test]
async fn a_test_cluster_starts_as_an_unprivileged_user_and_asks_for_the_password() {
    use sqlx::Connection;
    use sqlx::postgres::{PgConnectOptions, PgConnection};
    use std::str::FromStr;

    let cluster = PgCluster::start();
    let options = PgConnectOptions::from_str(&cluster.url()).unwrap();
    let refused = PgConnection::connect_with(&options.clone().password("wrong")).await;
    assert!(refused.is_err(), "a wrong password is refused");
    let mut connection = PgConnection::connect_with(&options.password(PASSWORD))
        .await
        .expect("connects with the password");
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(user, USER);
    connection.close().await.unwrap();
    let data = cluster.data();
    drop(cluster);
    assert!(!data.exists(), "the cluster's directory is removed");
}
