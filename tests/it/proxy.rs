//! A TCP proxy between one replica and PostgreSQL that can cut the replica
//! off the way a network partition does: no FIN, no RST, just silence.
//!
//! A userspace proxy keeps both TCP connections alive at the kernel level,
//! so PostgreSQL's keepalives would never notice the cut. The proxy stands
//! in for them: `server_detect` after the cut it closes its side towards the
//! server, as the server's keepalive timeout would. The replica's side stays
//! silent until `heal`, which closes it, as the replica's own timeouts would.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Cut,
    /// Generation counter: connections from before a heal are closed.
    Healed(u32),
}

/// The proxy; stops when dropped.
pub struct Proxy {
    /// Where replicas connect.
    pub port: u16,
    state: watch::Sender<State>,
    heals: u32,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Proxies 127.0.0.1:<free port> to `upstream` (host:port).
    pub async fn start(upstream: String, server_detect: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (state, rx) = watch::channel(State::Open);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let rx = rx.clone();
                let upstream = upstream.clone();
                tokio::spawn(pump(client, upstream, rx, server_detect));
            }
        });
        Proxy {
            port,
            state,
            heals: 0,
            task,
        }
    }

    /// A proxy in front of the server of the database at `url`.
    pub async fn in_front_of(url: &str, server_detect: Duration) -> Proxy {
        let (host, port) = crate::harness::host_port(url);
        Proxy::start(format!("{host}:{port}"), server_detect).await
    }

    /// `url` (of the database behind the proxy) through the proxy.
    pub fn url(&self, url: &str) -> String {
        let (_, port) = crate::harness::host_port(url);
        let through = url.replacen(&format!(":{port}/"), &format!(":{}/", self.port), 1);
        assert_ne!(through, url, "the URL must name the port");
        through
    }

    /// Cuts every connection, current and new, silently.
    pub fn cut(&self) {
        let _ = self.state.send(State::Cut);
    }

    /// Ends the cut: held connections are reset, new ones pass.
    pub fn heal(&mut self) {
        self.heals += 1;
        let _ = self.state.send(State::Healed(self.heals));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut client: TcpStream,
    upstream: String,
    mut state: watch::Receiver<State>,
    server_detect: Duration,
) {
    let born = *state.borrow();
    if born == State::Cut {
        // A connection attempt during the cut goes nowhere until the heal.
        let _ = state.wait_for(|s| matches!(s, State::Healed(_))).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut a, mut b) = ([0u8; 16384], [0u8; 16384]);
    loop {
        tokio::select! {
            r = client.read(&mut a) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => if server.write_all(&a[..n]).await.is_err() { return },
            },
            r = server.read(&mut b) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => if client.write_all(&b[..n]).await.is_err() { return },
            },
            changed = state.changed() => {
                if changed.is_err() { return }
                let now = *state.borrow();
                if now == State::Cut {
                    break;
                }
            }
        }
    }
    // Cut: silence both ways. The server gives up after its keepalive time.
    let server_side = Arc::new(tokio::sync::Mutex::new(Some(server)));
    let closer = server_side.clone();
    tokio::spawn(async move {
        tokio::time::sleep(server_detect).await;
        if let Some(mut s) = closer.lock().await.take() {
            let _ = s.shutdown().await;
        }
    });
    let _ = state.wait_for(|s| matches!(s, State::Healed(_))).await;
    // Healed: this connection is dead to the replica; close it (its own
    // timeouts would have given up on it by now in a real partition).
    drop(client);
    drop(server_side);
}
