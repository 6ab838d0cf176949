//! Deliveries to a real receiver on a loopback socket that fails, stalls, and is restarted,
//! and a service restart in between.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

use super::super::feed::test_source::LogSource;
use super::*;

/// How the receiver answers its next requests: each entry is used once, then it answers 200.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Fail,
    Stall,
}

#[derive(Default)]
struct Receiver {
    plan: Mutex<Vec<Answer>>,
    /// The revisions of every event received with a 200 answer, in arrival order.
    accepted: Mutex<Vec<u64>>,
    requests: AtomicUsize,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    body: axum::Json<serde_json::Value>,
) -> StatusCode {
    receiver.requests.fetch_add(1, Ordering::SeqCst);
    let answer = {
        let mut plan = receiver.plan.lock().unwrap();
        (!plan.is_empty()).then(|| plan.remove(0))
    };
    match answer {
        Some(Answer::Fail) => StatusCode::INTERNAL_SERVER_ERROR,
        Some(Answer::Stall) => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            StatusCode::OK
        }
        None => {
            let revisions = body.0["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["revision"].as_u64().unwrap());
            receiver.accepted.lock().unwrap().extend(revisions);
            StatusCode::OK
        }
    }
}

async fn start_receiver(
    receiver: Arc<Receiver>,
    listener: Option<std::net::TcpListener>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = match listener {
        Some(l) => tokio::net::TcpListener::from_std(l).unwrap(),
        None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let address = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (address, task)
}

fn fast() -> Delivery {
    Delivery {
        timeout: Duration::from_millis(500),
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn in_future() -> i64 {
    unix_now() + 3600
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_survive_failures_stalls_and_restarts_in_revision_order() {
    let source = LogSource::new();
    source.record("file.created", "a"); // before the subscription: not delivered
    let receiver = Arc::new(Receiver::default());
    receiver
        .plan
        .lock()
        .unwrap()
        .extend([Answer::Fail, Answer::Fail, Answer::Stall, Answer::Fail]);
    let (address, receiver_task) = start_receiver(Arc::clone(&receiver), None).await;
    let hosts = vec![address.to_string()];
    let subscriptions = Subscriptions::start(
        Arc::clone(&source),
        Arc::clone(&source.consumers),
        hosts.clone(),
        fast(),
    )
    .unwrap();
    let new = NewSubscription {
        filter: [("bucket".to_owned(), "a".to_owned())].into(),
        callback: format!("http://{address}/hook"),
        expires: in_future(),
        after: None,
    };
    let created = {
        let subscriptions = Arc::clone(&subscriptions);
        tokio::task::spawn_blocking(move || subscriptions.create(new, "tester"))
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(created.acked, 1);
    let id = created.id;

    let mut expected = Vec::new();
    for i in 0..20 {
        let bucket = if i % 2 == 0 { "a" } else { "b" };
        let revision = source.record("file.created", bucket);
        if bucket == "a" {
            expected.push(revision);
        }
    }
    wait_for("the first deliveries", || {
        receiver.accepted.lock().unwrap().len() >= expected.len()
    })
    .await;
    assert!(
        receiver.requests.load(Ordering::SeqCst) >= 5,
        "the failures were retried"
    );
    // At least once, in order: no event is missing and none arrives before an older one.
    let accepted = receiver.accepted.lock().unwrap().clone();
    let mut sorted = accepted.clone();
    sorted.sort_unstable();
    assert_eq!(accepted, sorted, "deliveries out of order");
    sorted.dedup();
    assert_eq!(sorted, expected);
    // The receiver counts a delivery before the deliverer reads its answer and leaves the
    // retrying state.
    wait_for("the subscription back to delivering", || {
        subscriptions.get(id).unwrap().state == "delivering"
    })
    .await;
    assert_eq!(subscriptions.get(id).unwrap().created_by, "tester");

    // The receiver goes away; events keep being written and the writes do not wait for it.
    let port = address;
    receiver_task.abort();
    let _ = receiver_task.await;
    let started = Instant::now();
    for _ in 0..5 {
        expected.push(source.record("file.created", "a"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "writes waited for a dead receiver"
    );
    wait_for("a retrying state", || {
        subscriptions.get(id).unwrap().state == "retrying"
    })
    .await;
    assert!(subscriptions.get(id).unwrap().lag >= 5);
    assert!(subscriptions
        .metrics_text()
        .contains(&format!("feed_subscription_lag{{subscription=\"{id}\"}}")));

    // The service restarts (deliveries stopped, a new instance over the same records), and the
    // receiver comes back on the same address: everything after the acknowledged revision
    // arrives.
    subscriptions.stop();
    drop(subscriptions);
    let listener = std::net::TcpListener::bind(port).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (_, _receiver_task) = start_receiver(Arc::clone(&receiver), Some(listener)).await;
    let restarted = Subscriptions::start(
        Arc::clone(&source),
        Arc::clone(&source.consumers),
        hosts,
        fast(),
    )
    .unwrap();
    wait_for("the deliveries after the restart", || {
        let mut got = receiver.accepted.lock().unwrap().clone();
        got.sort_unstable();
        got.dedup();
        got == expected
    })
    .await;
    let accepted = receiver.accepted.lock().unwrap().clone();
    assert!(accepted.windows(2).all(|w| w[0] <= w[1]), "{accepted:?}");
    wait_for("the acknowledgement", || {
        restarted.get(id).unwrap().lag == 0
    })
    .await;

    {
        let restarted = Arc::clone(&restarted);
        tokio::task::spawn_blocking(move || restarted.delete(id))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        restarted.get(id).unwrap_err().status(),
        StatusCode::NOT_FOUND
    );
    assert!(source.consumers.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused_and_nothing_is_created() {
    let source = LogSource::new();
    source.record("file.created", "a");
    let subscriptions = Subscriptions::start(
        Arc::clone(&source),
        Arc::clone(&source.consumers),
        vec!["127.0.0.1:9".to_owned()],
        fast(),
    )
    .unwrap();
    let good = NewSubscription {
        filter: [("bucket".to_owned(), "a".to_owned())].into(),
        callback: "http://127.0.0.1:9/hook".to_owned(),
        expires: in_future(),
        after: None,
    };
    let cases = [
        (
            NewSubscription {
                callback: "http://10.0.0.1:9/hook".into(),
                ..good.clone()
            },
            "bad_callback",
        ),
        (
            NewSubscription {
                callback: "http://127.0.0.1:10/hook".into(),
                ..good.clone()
            },
            "bad_callback",
        ),
        (
            NewSubscription {
                callback: "file:///etc/passwd".into(),
                ..good.clone()
            },
            "bad_callback",
        ),
        (
            NewSubscription {
                callback: "not a url".into(),
                ..good.clone()
            },
            "bad_callback",
        ),
        (
            NewSubscription {
                expires: unix_now() - 1,
                ..good.clone()
            },
            "bad_expires",
        ),
        (
            NewSubscription {
                filter: [("colour".into(), "red".into())].into(),
                ..good.clone()
            },
            "bad_query",
        ),
        (
            NewSubscription {
                filter: [("kind".into(), "nope".into())].into(),
                ..good.clone()
            },
            "bad_query",
        ),
        (
            NewSubscription {
                filter: [("wait".into(), "5".into())].into(),
                ..good.clone()
            },
            "bad_query",
        ),
        (
            NewSubscription {
                after: Some(99),
                ..good.clone()
            },
            "beyond_head",
        ),
    ];
    for (new, code) in cases {
        let subscriptions = Arc::clone(&subscriptions);
        let error = tokio::task::spawn_blocking(move || subscriptions.create(new, "tester"))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(error.code(), code);
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    }
    assert!(source.consumers.list().unwrap().is_empty());
    let created = tokio::task::spawn_blocking(move || subscriptions.create(good, "tester"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.id, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_starts_at_the_first_subscription_or_at_open_when_some_are_stored() {
    let source = LogSource::new();
    source.record("file.created", "a");
    let hosts = vec!["127.0.0.1:9".to_owned()];
    let open = |hosts: Vec<String>| {
        LazySubscriptions::open(
            Arc::clone(&source),
            Arc::clone(&source.consumers),
            hosts,
            false,
        )
        .unwrap()
    };
    let new = || NewSubscription {
        filter: BTreeMap::new(),
        callback: "http://127.0.0.1:9/hook".to_owned(),
        expires: in_future(),
        after: None,
    };

    let off = open(Vec::new());
    let refused = tokio::task::block_in_place(|| off.create(new(), "tester")).unwrap_err();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(
        off.started().is_none(),
        "no callback_hosts, no delivery thread"
    );

    let lazy = open(hosts.clone());
    assert!(lazy.started().is_none(), "nothing stored, nothing started");
    assert_eq!(lazy.get(1).unwrap_err().status(), StatusCode::NOT_FOUND);
    assert!(lazy.metrics_text().is_empty());
    let view = tokio::task::block_in_place(|| lazy.create(new(), "tester")).unwrap();
    assert!(lazy.started().is_some());
    assert_eq!(lazy.get(view.id).unwrap().id, view.id);
    lazy.started().unwrap().stop();

    let reopened = open(hosts);
    assert!(
        reopened.started().is_some(),
        "a stored subscription resumes at open"
    );
    reopened.started().unwrap().stop();
}
