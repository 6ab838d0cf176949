//! The directory's change feed over real sockets: X-Revision on writes, `GET /changes` as
//! pages, long polls and an event stream, the histories, and a subscription delivered to a
//! loopback receiver.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::directory::{Access, Dir};
use crate::support::{client, get_text, wait_for_zero_gauge, PASSWORD, USER};

fn revision_header(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("x-revision")
        .expect("X-Revision")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn put_member(d: &Dir, team: &str, member: &str, role: &str) -> u64 {
    let response = d
        .put(
            &format!("/teams/{team}/members/{member}"),
            Some(json!({ "role": role })),
        )
        .await;
    assert_eq!(response.status(), 200);
    let header = revision_header(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["revision"], header, "{body}");
    header
}

fn kinds(page: &Value) -> Vec<String> {
    page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn revisions(page: &Value) -> Vec<u64> {
    page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["revision"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn writes_answer_their_revision_and_the_feed_pages_and_filters() {
    let d = Dir::memory(Access::default()).await;
    // team.created, person.created, membership.added
    assert_eq!(put_member(&d, "ubuntu", "alice", "member").await, 3);
    // membership.changed
    assert_eq!(put_member(&d, "ubuntu", "alice", "admin").await, 4);
    // A write that changes nothing answers the head.
    assert_eq!(put_member(&d, "ubuntu", "alice", "admin").await, 4);
    let response = d.put("/persons/bob", None).await;
    assert_eq!(revision_header(&response), 5);
    let response = d.put("/packagesets/desktop/items/gedit", None).await;
    assert_eq!(revision_header(&response), 8);
    let response = client()
        .delete(d.url("/teams/ubuntu/members/alice"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(revision_header(&response), 9);

    let page = d.get("/changes").await;
    assert_eq!(
        kinds(&page),
        [
            "team.created",
            "person.created",
            "membership.added",
            "membership.changed",
            "person.created",
            "set.created",
            "package.created",
            "item.added",
            "membership.removed",
        ]
    );
    assert_eq!(
        (page["next"].as_u64(), page["head"].as_u64()),
        (Some(9), Some(9))
    );
    let changed = &page["changes"][3];
    assert_eq!(changed["actor"], USER);
    assert_eq!(
        changed["before"],
        json!({"role": "member", "expires": null})
    );
    assert_eq!(changed["after"], json!({"role": "admin", "expires": null}));
    assert!(changed["time_us"].as_i64().unwrap() > 1_700_000_000_000_000);

    let page = d.get("/changes?after=2&limit=2").await;
    assert_eq!(revisions(&page), [3, 4]);
    assert_eq!(page["next"], 4);
    let page = d.get("/changes?person=alice").await;
    assert_eq!(revisions(&page), [2, 3, 4, 9]);
    let page = d.get("/changes?team=ubuntu&kind=membership.removed").await;
    assert_eq!(revisions(&page), [9]);
    let page = d.get("/changes?person=writer&kind=item.added").await;
    assert_eq!(revisions(&page), [8], "the actor matches person=");
    assert!(revisions(&d.get("/changes?repo=launchpad").await).is_empty());

    // Without callback_hosts, subscriptions are off (and no delivery thread starts).
    let refused = client()
        .post(d.url("/subscriptions"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"callback": "http://127.0.0.1:9/hook", "expires": 4_000_000_000i64}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        d.status(reqwest::Method::GET, "/subscriptions/1").await.0,
        404
    );
    for (query, code) in [
        ("/changes?colour=red", "bad_query"),
        ("/changes?kind=file.created", "bad_query"),
        ("/changes?after=ten", "bad_query"),
        ("/changes?wait=61", "bad_query"),
        ("/changes?after=99", "beyond_head"),
        ("/teams/ubuntu/history?limit=0", "bad_query"),
    ] {
        assert_eq!(
            d.status(reqwest::Method::GET, query).await,
            (400, code.to_owned()),
            "{query}"
        );
    }
    d.stop().await;
}

#[tokio::test]
async fn histories_are_paged_newest_first() {
    let d = Dir::memory(Access::default()).await;
    put_member(&d, "ubuntu", "alice", "member").await; // 1, 2, 3
    put_member(&d, "kernel", "ubuntu", "member").await; // 4, 5
    put_member(&d, "ubuntu", "bob", "audits").await; // 6, 7
    let page = d.get("/teams/ubuntu/history?limit=3").await;
    assert_eq!(revisions(&page), [7, 5, 3]);
    assert_eq!(page["next"], 3);
    let page = d.get("/teams/ubuntu/history?limit=3&before=3").await;
    assert_eq!(revisions(&page), [1]);
    assert_eq!(page["next"], Value::Null);
    assert_eq!(kinds(&page), ["team.created"]);
    let alice = d.get("/persons/alice/history").await;
    assert_eq!(revisions(&alice), [3, 2]);
    // The writer acted in every event.
    let writer = d.get(&format!("/persons/{USER}/history?limit=100")).await;
    assert_eq!(revisions(&writer), [7, 6, 5, 4, 3, 2, 1]);
    d.stop().await;
}

#[tokio::test]
async fn a_long_poll_and_an_event_stream_see_a_later_write() {
    let d = Dir::memory(Access::default()).await;
    put_member(&d, "ubuntu", "alice", "member").await; // up to 3

    // Long poll: waits for a matching event, answers as soon as it is durable.
    let url = d.url("/changes?after=3&wait=30&team=kernel");
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let page: Value = client()
            .get(url)
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (page, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    put_member(&d, "ubuntu", "bob", "member").await; // 4, 5: not kernel's
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !poll.is_finished(),
        "the poll answered an event that did not match"
    );
    put_member(&d, "kernel", "carol", "member").await; // 6, 7, 8
    let (page, waited) = poll.await.unwrap();
    assert_eq!(revisions(&page), [6, 8], "{page}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");

    // An empty long poll answers when the time is up, with next at the head.
    let page = d.get("/changes?after=8&wait=1").await;
    assert_eq!((revisions(&page), page["next"].as_u64()), (vec![], Some(8)));

    // The event stream, resumed with Last-Event-ID.
    let mut stream = client()
        .get(d.url("/changes?person=dave"))
        .basic_auth(USER, Some(PASSWORD))
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", "8")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    put_member(&d, "kernel", "dave", "admin").await; // 9 person.created, 10 membership.added
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("id: 10\n") {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.chunk())
            .await
            .expect("the stream sent the events in time")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        text.contains("id: 9\nevent: person.created\ndata: {"),
        "{text}"
    );
    assert!(text.contains("event: membership.added\n"), "{text}");
    let data = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let event: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        (event["revision"].as_u64(), event["member"].as_str()),
        (Some(10), Some("dave"))
    );
    drop(stream);
    d.stop().await;
}

#[derive(Default)]
struct Receiver {
    revisions: Mutex<Vec<u64>>,
}

async fn receive(State(receiver): State<Arc<Receiver>>, body: axum::Json<Value>) -> StatusCode {
    let revisions = body.0["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap());
    receiver.revisions.lock().unwrap().extend(revisions);
    StatusCode::OK
}

#[tokio::test]
async fn a_subscription_delivers_matching_events_and_reports_its_lag() {
    let receiver = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(Arc::clone(&receiver));
    let receiver_task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let d = Dir::memory(Access {
        callback_hosts: vec![hook.to_string()],
        ..Access::default()
    })
    .await;
    put_member(&d, "ubuntu", "alice", "member").await; // 1-3, before the subscription

    let create = |body: Value| {
        client()
            .post(d.url("/subscriptions"))
            .basic_auth(USER, Some(PASSWORD))
            .json(&body)
            .send()
    };
    let expires = 4_000_000_000i64;
    let bad = create(json!({
        "filter": {"team": "kernel"},
        "callback": "http://192.0.2.1/hook",
        "expires": expires
    }))
    .await
    .unwrap();
    assert_eq!(bad.status(), 400, "a callback host outside the allowlist");
    let response = create(json!({
        "filter": {"team": "kernel"},
        "callback": format!("http://{hook}/hook"),
        "expires": expires
    }))
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    let view: Value = response.json().await.unwrap();
    let id = view["id"].as_u64().unwrap();
    assert_eq!(
        (view["acked"].as_u64(), view["created_by"].as_str()),
        (Some(3), Some(USER))
    );

    put_member(&d, "ubuntu", "bob", "member").await; // 4, 5
    put_member(&d, "kernel", "carol", "member").await; // 6, 7, 8
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.revisions.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "no delivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*receiver.revisions.lock().unwrap(), [6, 8]);
    let mut view = d.get(&format!("/subscriptions/{id}")).await;
    while view["acked"] != 8 {
        assert!(Instant::now() < deadline, "not acknowledged: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        view = d.get(&format!("/subscriptions/{id}")).await;
    }
    assert_eq!(view["lag"], 0);
    let metrics = get_text(&d.url("/metrics")).await;
    assert!(
        metrics.contains(&format!("feed_subscription_lag{{subscription=\"{id}\"}} 0")),
        "{metrics}"
    );
    // The change log's indexer writes the history keys of every event above in its own
    // batches: the gauge of what it has not reached comes back to 0.
    wait_for_zero_gauge(&d.url("/metrics"), "directory_feed_history_unindexed").await;
    assert_eq!(
        d.status(reqwest::Method::DELETE, &format!("/subscriptions/{id}"))
            .await
            .0,
        204
    );
    assert_eq!(
        d.status(reqwest::Method::GET, &format!("/subscriptions/{id}"))
            .await
            .0,
        404
    );
    d.stop().await;
    receiver_task.abort();
}

/// Teams and repositories write into one log: one sequence of revisions, one feed, filters
/// across both kinds of event.
#[tokio::test]
async fn teams_and_repositories_share_one_feed() {
    let d = Dir::memory(Access::default()).await;
    assert_eq!(put_member(&d, "ubuntu", "alice", "member").await, 3);
    let commit = |n: u8| format!("{n:02x}").repeat(20);
    let pushed = client()
        .post(d.url("/repos/launchpad/commits"))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "text/plain")
        .body(format!("{}\n", commit(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 200);
    assert_eq!(revision_header(&pushed), 4);
    assert_eq!(put_member(&d, "ubuntu", "bob", "member").await, 6);

    let page = d.get("/changes").await;
    assert_eq!(revisions(&page), [1, 2, 3, 4, 5, 6]);
    assert_eq!(kinds(&page)[3], "commits.pushed");
    assert_eq!(page["changes"][3]["repo"], "launchpad");
    assert_eq!(revisions(&d.get("/changes?repo=launchpad").await), [4]);
    assert_eq!(revisions(&d.get("/changes?kind=commits.pushed").await), [4]);
    assert_eq!(revisions(&d.get("/changes?team=ubuntu").await), [1, 3, 6]);
    d.stop().await;
}

async fn push_commits(d: &Dir, repo: &str, rev_list: String) -> u64 {
    let pushed = client()
        .post(d.url(&format!("/repos/{repo}/commits")))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "text/plain")
        .body(rev_list)
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 200);
    revision_header(&pushed)
}

async fn put_branch(d: &Dir, repo: &str, branch: &str, tip: &str) -> u64 {
    let response = d
        .put(
            &format!("/repos/{repo}/branches/{branch}"),
            Some(json!({ "tip": tip })),
        )
        .await;
    assert_eq!(response.status(), 200);
    revision_header(&response)
}

/// Every page of a history, `limit` at a time, following `next`.
async fn history_pages(d: &Dir, path: &str, limit: usize) -> Vec<Vec<u64>> {
    let mut pages = Vec::new();
    let mut before = String::new();
    loop {
        let page = d.get(&format!("{path}?limit={limit}{before}")).await;
        pages.push(revisions(&page));
        match page["next"].as_u64() {
            Some(next) => before = format!("&before={next}"),
            None => return pages,
        }
    }
}

/// A person's history holds their pushes and branch moves (the commit graphs' actor index)
/// beside their membership changes, merged newest first, and pages through both without a gap
/// whatever the page size.
#[tokio::test]
async fn a_persons_history_pages_through_pushes_and_memberships() {
    let d = Dir::memory(Access::default()).await;
    let commit = |n: u8| format!("{n:02x}").repeat(20);
    put_member(&d, "ubuntu", "alice", "member").await; // 1, 2, 3
    assert_eq!(
        push_commits(&d, "launchpad", format!("{}\n", commit(1))).await,
        4
    );
    assert_eq!(put_branch(&d, "launchpad", "main", &commit(1)).await, 5);
    let child = format!("{} {}\n", commit(2), commit(1));
    assert_eq!(push_commits(&d, "launchpad", child).await, 6);
    put_member(&d, "ubuntu", "bob", "member").await; // 7, 8
    assert_eq!(put_branch(&d, "launchpad", "main", &commit(2)).await, 9);
    put_member(&d, "kernel", "alice", "member").await; // 10, 11
    assert_eq!(
        push_commits(&d, "bzr", format!("{}\n", commit(3))).await,
        12
    );

    let all: Vec<u64> = (1..=12).rev().collect();
    let path = format!("/persons/{USER}/history");
    for limit in [1, 2, 3, 5, 12, 100] {
        let pages = history_pages(&d, &path, limit).await;
        assert!(pages.iter().all(|p| p.len() <= limit), "{pages:?}");
        assert_eq!(pages.concat(), all, "limit {limit}: {pages:?}");
    }
    let page = d.get(&format!("{path}?limit=4&before=10")).await;
    assert_eq!(revisions(&page), [9, 8, 7, 6]);
    assert_eq!(
        kinds(&page),
        [
            "branch.set",
            "membership.added",
            "person.created",
            "commits.pushed"
        ]
    );
    assert_eq!(page["changes"][0]["repo"], "launchpad");
    assert_eq!(page["changes"][0]["actor"], USER);
    assert_eq!(page["next"], 6);
    // Alice pushed nothing: her history is what was done to her.
    let alice = d.get("/persons/alice/history").await;
    assert_eq!(revisions(&alice), [11, 3, 2]);
    d.stop().await;
}

/// A stored subscription starts delivering again when the directory opens.
#[tokio::test]
async fn a_stored_subscription_resumes_when_the_directory_opens() {
    let engine = engine::EngineConfig::memory()
        .open(&servers::directory::config::keyspaces())
        .unwrap();
    let access = || Access {
        callback_hosts: vec!["127.0.0.1:9".to_owned()],
        ..Access::default()
    };
    let d = Dir::start(Arc::clone(&engine), access()).await;
    let created = client()
        .post(d.url("/subscriptions"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&json!({"callback": "http://127.0.0.1:9/hook", "expires": 4_000_000_000i64}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    d.stop().await;
    let d = Dir::start(engine, access()).await;
    let view = d.get("/subscriptions/1").await;
    assert_eq!(view["callback"], "http://127.0.0.1:9/hook");
    assert_ne!(view["state"], "expired", "{view}");
    d.stop().await;
}
