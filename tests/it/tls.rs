//! TLS to PostgreSQL, as a managed database demands it: a private server
//! with `ssl=on`, certificates from a CA made here (rcgen), and `pg_hba.conf`
//! accepting TLS connections only (`hostssl`). The library's connections,
//! `migrate`, `serve` (a tick fires, the API answers) and `dev` all work
//! with libpq's `sslmode=require` and `verify-full` + `sslrootcert`; the
//! wrong settings fail with an error that says what failed; a client
//! certificate is sent when the server asks for one; the password comes
//! from a file or libpq's variables and is never printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::json;
use spine_scheduler::pg_cluster::{ClusterOptions, PgCluster};
use tokio_postgres::Client;

use crate::api_replica::{start_api_replica, Http, ADMIN, PIPELINE};
use crate::dev::{free_ports, wait_for_demo_fire, Dev};
use crate::harness::{binary, eventually};
use crate::replica::temp_dir;

/// The password of the role that logs in with one (`scram-sha-256`).
const PASSWORD: &str = "s3cret-Pa55word";

/// A CA and what it signed, as PEM files in one folder.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    /// A CA that signed nothing here: trusting it alone must fail.
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).expect("CA certificate").pem();
    (params, key, pem)
}

impl Pki {
    /// The server's certificate is valid for `db.test.internal` and
    /// 127.0.0.1 — not for `localhost`, which also reaches it: the name check
    /// is then what tells `verify-ca` from `verify-full`. The client's is
    /// for the role `postgres`.
    fn new(tag: &str) -> Pki {
        let dir = temp_dir(tag);
        let (ca_params, ca_key, ca_pem) = ca("spine test CA");
        let (_, _, other_pem) = ca("some other CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let sign = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key_pem) = sign(
            vec!["db.test.internal".into(), "127.0.0.1".into()],
            "db.test.internal",
        );
        let (client_pem, client_key_pem) = sign(Vec::new(), "postgres");
        let pki = Pki {
            ca: dir.join("ca.crt"),
            other_ca: dir.join("other-ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            dir,
        };
        write(&pki.ca, &ca_pem);
        write(&pki.other_ca, &other_pem);
        write(&pki.server_cert, &server_pem);
        write(&pki.server_key, &server_key_pem);
        write(&pki.client_cert, &client_pem);
        write(&pki.client_key, &client_key_pem);
        pki
    }
}

/// The server reads its key only if the key is its own and private.
fn give_to_server(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    if unsafe { libc::geteuid() } == 0 {
        // Postgres refuses to run as root: the cluster runs as `postgres`.
        let out = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .expect("id -u postgres");
        let uid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("uid of postgres");
        std::os::unix::fs::chown(path, Some(uid), None).expect("chown key");
    }
}

/// A private server that takes TLS connections only: trust for the
/// superuser, a client certificate for database `certdb`, a password for
/// role `spine`.
struct TlsServer {
    pki: Pki,
    cluster: PgCluster,
}

impl TlsServer {
    async fn start(tag: &str) -> TlsServer {
        let pki = Pki::new(tag);
        give_to_server(&pki.server_key);
        let hba = pki.dir.join("pg_hba.conf");
        write(
            &hba,
            "local all all trust\n\
             hostssl certdb all 127.0.0.1/32 trust clientcert=verify-full\n\
             hostssl all spine 127.0.0.1/32 scram-sha-256\n\
             hostssl all all 127.0.0.1/32 trust\n",
        );
        let path = |p: &Path| p.display().to_string();
        let settings = vec![
            ("ssl".to_string(), "on".to_string()),
            ("ssl_cert_file".to_string(), path(&pki.server_cert)),
            ("ssl_key_file".to_string(), path(&pki.server_key)),
            ("ssl_ca_file".to_string(), path(&pki.ca)),
            ("hba_file".to_string(), path(&hba)),
        ];
        let cluster = tokio::task::spawn_blocking(move || {
            PgCluster::start(ClusterOptions {
                fast_unsafe: true,
                settings,
                ..Default::default()
            })
        })
        .await
        .expect("join")
        .expect("private TLS cluster");
        let server = TlsServer { pki, cluster };
        let c = server
            .connect(&server.url("postgres", "sslmode=require"))
            .await;
        // One statement each: CREATE DATABASE refuses a transaction block.
        for statement in [
            "CREATE DATABASE certdb".to_string(),
            format!("CREATE ROLE spine LOGIN PASSWORD '{PASSWORD}'"),
            "CREATE DATABASE spinedb OWNER spine".to_string(),
        ] {
            c.batch_execute(&statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        server
    }

    /// `postgres://postgres@127.0.0.1:PORT/db?params`.
    fn url(&self, db: &str, params: &str) -> String {
        format!("{}?{params}", self.cluster.url(db))
    }

    /// The same through another name for the same address.
    fn localhost_url(&self, db: &str, params: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{db}?{params}",
            self.cluster.port()
        )
    }

    /// `sslmode=verify-full` against the test CA.
    fn verified(&self, db: &str) -> String {
        self.url(
            db,
            &format!("sslmode=verify-full&sslrootcert={}", self.pki.ca.display()),
        )
    }

    async fn try_connect(&self, url: &str) -> Result<Client, String> {
        match tokio::time::timeout(
            Duration::from_secs(10),
            spine_scheduler::store::connect(url),
        )
        .await
        {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    async fn connect(&self, url: &str) -> Client {
        self.try_connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect over TLS: {e}"))
    }
}

/// Whether this session is encrypted, from the server's side.
async fn encrypted(c: &Client) -> bool {
    c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .expect("pg_stat_ssl")
    .get(0)
}

fn assert_fails_with(what: &str, result: Result<Client, String>, says: &[&str]) {
    let error = match result {
        Ok(_) => panic!("{what}: connected, but must fail"),
        Err(e) => e,
    };
    for s in says {
        assert!(
            error.contains(s),
            "{what}: the error {error:?} does not say {s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_mean_what_they_mean_in_libpq() {
    let server = TlsServer::start("tls-modes").await;
    let pki = &server.pki;
    // require: encrypted, certificate unchecked (any name, any CA).
    let c = server
        .connect(&server.localhost_url("postgres", "sslmode=require"))
        .await;
    assert!(encrypted(&c).await, "sslmode=require is encrypted");
    // verify-full with the CA: by IP, in URL and key=value form.
    assert!(encrypted(&server.connect(&server.verified("postgres")).await).await);
    let key_value = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{}'",
        server.cluster.port(),
        pki.ca.display()
    );
    assert!(encrypted(&server.connect(&key_value).await).await);
    // verify-ca checks the chain, not the name: localhost is fine.
    let ca_only = format!("sslmode=verify-ca&sslrootcert={}", pki.ca.display());
    server
        .connect(&server.localhost_url("postgres", &ca_only))
        .await;
    // verify-full through a name the certificate does not carry.
    let full = format!("sslmode=verify-full&sslrootcert={}", pki.ca.display());
    assert_fails_with(
        "verify-full for a name not in the certificate",
        server
            .try_connect(&server.localhost_url("postgres", &full))
            .await,
        &["TLS handshake", "not valid for name", "localhost"],
    );
    // verify-full against another CA.
    let other = format!("sslmode=verify-full&sslrootcert={}", pki.other_ca.display());
    assert_fails_with(
        "verify-full against another CA",
        server.try_connect(&server.url("postgres", &other)).await,
        &["TLS handshake", "invalid peer certificate", "UnknownIssuer"],
    );
    // A checking mode with nothing to check against says so.
    assert_fails_with(
        "verify-full without sslrootcert",
        server
            .try_connect(&server.url("postgres", "sslmode=verify-full"))
            .await,
        &["sslrootcert"],
    );
    // disable: the server has no entry for an unencrypted connection.
    assert_fails_with(
        "sslmode=disable",
        server
            .try_connect(&server.url("postgres", "sslmode=disable"))
            .await,
        &["no pg_hba.conf entry", "no encryption"],
    );
    // A client certificate: refused without, accepted with.
    assert_fails_with(
        "certdb without a client certificate",
        server
            .try_connect(&server.url("certdb", "sslmode=require"))
            .await,
        &["certificate"],
    );
    let with_cert = format!(
        "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let c = server.connect(&server.url("certdb", &with_cert)).await;
    let client_dn: Option<String> = c
        .query_one(
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("client_dn")
        .get(0);
    assert_eq!(client_dn.as_deref(), Some("/CN=postgres"));
}

fn spine(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args);
    for var in [
        "DATABASE_URL",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "SPINE_DATABASE_PASSWORD_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run spine-scheduler")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_serve_and_the_api_work_over_verified_tls() {
    let server = TlsServer::start("tls-serve").await;
    let url = server.verified("postgres");
    let out = spine(&["migrate"], &[("DATABASE_URL", &url)]);
    assert!(out.status.success(), "migrate: {}", said(&out));
    // The wrong CA fails the command with the reason.
    let other = server.url(
        "postgres",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            server.pki.other_ca.display()
        ),
    );
    let out = spine(&["migrate"], &[("DATABASE_URL", &other)]);
    assert!(
        !out.status.success(),
        "migrate against another CA succeeded"
    );
    assert!(
        said(&out).contains("invalid peer certificate"),
        "migrate against another CA: {}",
        said(&out)
    );
    // serve: the API answers, and a schedule made through it fires.
    let dir = temp_dir("tls-serve-replica");
    let node = start_api_replica(&url, &dir, "tls-replica").await;
    let api = Http::new();
    let reply = api
        .create_schedule(
            &node.base,
            json!({"name": "over_tls", "pipeline": PIPELINE, "cron": "* * * * * *"}),
        )
        .await;
    assert_eq!(reply.status, 201, "create: {}", reply.text);
    let c = server.connect(&url).await;
    eventually(
        Duration::from_secs(20),
        "a tick of over_tls completed",
        || async {
            c.query_one(
                "SELECT count(*) FROM scheduler_runs WHERE schedule_name = 'over_tls' AND status = 'completed'",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0) > 0)
            .unwrap_or(false)
        },
    )
    .await;
    let runs = api
        .get(&node.base, "/v1/schedules/over_tls/runs", Some(ADMIN))
        .await;
    assert_eq!(runs.status, 200, "runs: {}", runs.text);
    // Every session the replica holds is encrypted.
    let plain: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name LIKE 'spine-scheduler%' AND NOT s.ssl",
            &[],
        )
        .await
        .expect("sessions")
        .get(0);
    assert_eq!(plain, 0, "unencrypted replica sessions");
    node.replica.terminate(Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_against_a_tls_only_database() {
    let server = TlsServer::start("tls-dev").await;
    let dir = temp_dir("tls-dev-run");
    let base = free_ports(3);
    let mut dev = Dev::start(&dir, base, Some(&server.url("postgres", "sslmode=require")));
    let runs = wait_for_demo_fire(&mut dev, base, Duration::from_secs(60)).await;
    assert!(!runs.is_empty());
    dev.signal(libc::SIGINT);
    let status = dev.wait(Duration::from_secs(60));
    assert!(status.success(), "dev exit {status}:\n{}", dev.tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_a_file_or_libpqs_variables() {
    let server = TlsServer::start("tls-password").await;
    let port = server.cluster.port().to_string();
    let ca = server.pki.ca.display().to_string();
    let password_file = server.pki.dir.join("password");
    write(&password_file, &format!("{PASSWORD}\n"));
    let libpq = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "spine"),
        ("PGDATABASE", "spinedb"),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.as_str()),
    ];
    let file_flag = password_file.display().to_string();
    let out = spine(&["migrate", "--database-password-file", &file_flag], &libpq);
    assert!(
        out.status.success(),
        "migrate with PG* and a password file: {}",
        said(&out)
    );
    let mut with_env = libpq.to_vec();
    with_env.push(("PGPASSWORD", PASSWORD));
    let out = spine(&["migrate"], &with_env);
    assert!(
        out.status.success(),
        "migrate with PGPASSWORD: {}",
        said(&out)
    );
    // The file through its variable, with a URL that carries no password.
    let url =
        format!("postgres://spine@127.0.0.1:{port}/spinedb?sslmode=verify-full&sslrootcert={ca}");
    let out = spine(
        &["migrate"],
        &[
            ("DATABASE_URL", &url),
            ("SPINE_DATABASE_PASSWORD_FILE", &file_flag),
        ],
    );
    assert!(
        out.status.success(),
        "migrate with a URL and the file: {}",
        said(&out)
    );
    // A wrong password fails as the server says, and is never printed.
    let wrong = "Wr0ng-and-secret";
    write(&password_file, wrong);
    let out = spine(&["migrate", "--database-password-file", &file_flag], &libpq);
    assert!(!out.status.success(), "a wrong password was accepted");
    let text = said(&out);
    assert!(
        text.contains("password authentication failed"),
        "wrong password: {text}"
    );
    assert!(!text.contains(wrong), "the password was printed: {text}");
    // A missing file is named.
    let missing = server.pki.dir.join("no-such-password");
    let out = spine(
        &[
            "migrate",
            "--database-password-file",
            &missing.display().to_string(),
        ],
        &libpq,
    );
    assert!(!out.status.success());
    assert!(said(&out).contains("no-such-password"), "{}", said(&out));
}
