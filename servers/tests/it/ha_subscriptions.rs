//! Subscriptions with two directories on one PostgreSQL database: only the writer delivers
//! (one receiver gets each page once, not once per instance), and when the writer stops the
//! new one continues from the durable cursor, in revision order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use engine::testing::{skip, PgScratch};
use engine::Backend;
use reqwest::Method;
use serde_json::json;
use servers::common::Leader;
use servers::directory::{self, Directory};

use crate::ha::{at_leader, directory_config, elected, runtime, server_config, Keep, Running};
use crate::support::{client, PASSWORD, USER};

/// Every revision the receiver was sent, in arrival order.
type Received = Arc<Mutex<Vec<u64>>>;

async fn receive(State(received): State<Received>, body: axum::Json<serde_json::Value>) {
    let revisions = body.0["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["revision"].as_u64().unwrap());
    received.lock().unwrap().extend(revisions);
}

async fn start_receiver(received: Received) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(received);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    address
}

/// Waits (30 s at most) until the receiver holds every revision of `wanted`.
async fn wait_for_all(received: &Received, wanted: &std::ops::RangeInclusive<u64>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = received.lock().unwrap().clone();
        if wanted.clone().all(|r| got.contains(&r)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered: {:?} of {wanted:?}",
            wanted
                .clone()
                .filter(|r| !got.contains(r))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn only_the_writer_delivers_and_a_new_writer_continues() {
    if skip(Backend::Postgres) {
        return;
    }
    let scratch = PgScratch::new();
    let keep = Keep::default();
    runtime().block_on(only_the_writer_delivers_on(&scratch, &keep));
}

async fn only_the_writer_delivers_on(scratch: &PgScratch, keep: &Keep) {
    let received: Received = Arc::default();
    let receiver = start_receiver(Arc::clone(&received)).await;
    let mut server = server_config();
    server.callback_hosts = vec![receiver.to_string()];
    let mut instances: Vec<(Leader, Running)> = Vec::new();
    for _ in 0..2 {
        let config = directory_config(scratch, &scratch.url());
        let server = server.clone();
        let state = tokio::task::spawn_blocking(move || {
            let (store, commits) = config.store.open().unwrap();
            Directory::new(store, commits, &server).unwrap()
        })
        .await
        .unwrap();
        keep.engine(state.store().engine());
        let leader = Leader::elect(
            state.store().engine().clone(),
            "directory",
            Duration::from_millis(900),
        );
        let state = state.with_leader(leader.clone());
        leader.start();
        instances.push((leader, Running::start(directory::app(state)).await));
    }
    let leading = elected(&instances).await;

    let created: serde_json::Value = client()
        .post(instances[leading].1.url("/subscriptions"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({
            "callback": format!("http://{receiver}/hook"),
            "expires": 4_000_000_000i64,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_u64().unwrap();
    let first = created["acked"].as_u64().unwrap() + 1;

    let mut last = 0;
    for i in 0..20 {
        let path = format!("/teams/core/members/p{i}");
        let written = at_leader(&instances, Method::PUT, &path).await;
        assert_eq!(written.status(), 200);
        last = crate::ha::revision_of(&written);
    }
    wait_for_all(&received, &(first..=last)).await;
    // Time for a follower's delivery, had it one, to arrive too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<u64> = received.lock().unwrap().clone();
    assert_eq!(
        before,
        (first..=last).collect::<Vec<_>>(),
        "each event once, in revision order: the follower delivers nothing"
    );
    let follower = 1 - leading;
    let view: serde_json::Value = instances[follower]
        .1
        .send(Method::GET, &format!("/subscriptions/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["state"], "standby", "{view}");

    // The writer stops (gracefully: it hands the lease over); the other one delivers on.
    let (old_leader, old) = instances.remove(leading);
    old.stop().await;
    old_leader.stop().await;
    let resumed_from = last + 1;
    for i in 20..30 {
        let path = format!("/teams/core/members/p{i}");
        let written = at_leader(&instances, Method::PUT, &path).await;
        assert_eq!(written.status(), 200);
        last = crate::ha::revision_of(&written);
    }
    wait_for_all(&received, &(resumed_from..=last)).await;
    let after: Vec<u64> = received.lock().unwrap()[before.len()..].to_vec();
    // At least once: a page whose acknowledgement was not recorded may come again, but the
    // new writer starts at the durable cursor and goes on in revision order.
    assert!(after.windows(2).all(|w| w[0] < w[1]), "{after:?}");
    assert!(
        after.first().is_some_and(|r| *r <= resumed_from),
        "{after:?}"
    );
    let view: serde_json::Value = instances[0]
        .1
        .send(Method::GET, &format!("/subscriptions/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["state"], "delivering", "{view}");
    for (leader, running) in instances {
        running.stop().await;
        leader.stop().await;
    }
}
