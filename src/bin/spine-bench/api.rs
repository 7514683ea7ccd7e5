//! `api`: list/get/create latency through the admin API under concurrent
//! load, with 10,000 schedules stored.

use std::time::{Duration, Instant};

use anyhow::Context;
use spine_scheduler::store;

use crate::common::{bulk_schedules, pct, spawn_replicas, stop_replicas};
use crate::Args;

/// Runs the scenario on the (fresh) database at `url` and returns the report.
pub async fn run(args: &Args, url: &str) -> anyhow::Result<String> {
    let (schedules, seconds) = (args.schedules(10_000), args.seconds(20));
    let mut client = store::connect(url).await?;
    store::migrate::migrate(&mut client).await?;
    bulk_schedules(&client, schedules, |i| {
        format!("{} {} * * *", i % 60, i % 24)
    })
    .await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let (mut replicas, dir) = spawn_replicas(url, 1, &["--listen", &listen])?;
    let base = format!("http://{listen}");
    // The same client setup as the http pipeline (it installs the TLS provider).
    let http = spine_scheduler::pipeline::http::build_client()
        .map_err(|e| anyhow::anyhow!("http client: {e}"))?;
    let ready = Instant::now();
    loop {
        let ok = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        if ready.elapsed() > Duration::from_secs(60) {
            stop_replicas(&mut replicas, &dir);
            anyhow::bail!("the replica's API never became ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..args.clients)
        .map(|c| {
            let http = http.clone();
            let base = base.clone();
            tokio::spawn(async move {
                let (mut list, mut get, mut create, mut errors) = (vec![], vec![], vec![], 0u64);
                let mut i = 0usize;
                while Instant::now() < deadline {
                    i += 1;
                    let t = Instant::now();
                    let timeout = Duration::from_secs(10);
                    let (bucket, ok) = match i % 3 {
                        0 => {
                            let r = http
                                .get(format!("{base}/v1/schedules?limit=100"))
                                .send()
                                .await;
                            (&mut list, r.is_ok_and(|r| r.status().is_success()))
                        }
                        1 => {
                            let name = format!("bench{:06}", (c * 7919 + i * 104_729) % schedules);
                            let r = http
                                .get(format!("{base}/v1/schedules/{name}"))
                                .timeout(timeout)
                                .send()
                                .await;
                            (&mut get, r.is_ok_and(|r| r.status().is_success()))
                        }
                        _ => {
                            let body = serde_json::json!({
                                "name": format!("api{c:03}x{i:07}"),
                                "pipeline": "bench.record",
                                "cron": "0 3 * * *",
                            });
                            let r = http
                                .post(format!("{base}/v1/schedules"))
                                .header("content-type", "application/json")
                                .body(body.to_string())
                                .timeout(timeout)
                                .send()
                                .await;
                            (&mut create, r.is_ok_and(|r| r.status().is_success()))
                        }
                    };
                    bucket.push(t.elapsed().as_secs_f64() * 1000.0);
                    if !ok {
                        errors += 1;
                    }
                }
                (list, get, create, errors)
            })
        })
        .collect();
    let (mut list, mut get, mut create, mut errors) = (vec![], vec![], vec![], 0);
    for t in tasks {
        let (l, g, c, e) = t.await.context("client task")?;
        list.extend(l);
        get.extend(g);
        create.extend(c);
        errors += e;
    }
    stop_replicas(&mut replicas, &dir);
    let mut out = format!(
        "scenario api: 1 replica, {schedules} schedules stored, {} concurrent clients, {seconds} s\n",
        args.clients
    );
    for (name, v) in [
        ("list (page of 100)", &mut list),
        ("get one", &mut get),
        ("create", &mut create),
    ] {
        v.sort_by(|a, b| a.total_cmp(b));
        out.push_str(&format!(
            "{:<38}n {:>6}  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms\n",
            name,
            v.len(),
            pct(v, 0.5),
            pct(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        ));
    }
    out.push_str(&format!("{:<38}{errors}", "non-2xx or failed requests"));
    Ok(out)
}
