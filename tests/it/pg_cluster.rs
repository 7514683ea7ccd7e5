use spine_scheduler::pg_cluster::{ClusterOptions, PgCluster};

async fn select_one(url: &str) -> Result<i32, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client.query_one("SELECT 1", &[]).await?.get(0))
}

#[tokio::test]
async fn a_private_cluster_starts_restarts_and_cleans_up() {
    let cluster = PgCluster::start(ClusterOptions {
        fast_unsafe: true,
        ..Default::default()
    })
    .expect("start a private cluster (initdb and pg_ctl must be installed)");
    let url = cluster.url("postgres");
    let dir = cluster.data_dir().to_path_buf();
    assert_eq!(select_one(&url).await.expect("query"), 1);

    cluster.stop().expect("stop");
    assert!(
        select_one(&url).await.is_err(),
        "stopped server still answers"
    );
    cluster.start_again().expect("start again");
    assert_eq!(select_one(&url).await.expect("after start"), 1);
    cluster.restart().expect("restart");
    assert_eq!(select_one(&url).await.expect("after restart"), 1);

    drop(cluster);
    assert!(!dir.exists(), "data dir left behind: {}", dir.display());
    assert!(select_one(&url).await.is_err(), "server left running");
}
