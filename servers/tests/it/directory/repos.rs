//! Repositories over HTTP: pushes, branches, merged status, revisions and branch history.

use super::*;

#[tokio::test]
async fn repositories_and_merged_status() {
    let d = Dir::memory(Access::default()).await;
    // rev-list order: children first. 4 merges 2 and 3, both children of 1.
    let rev_list = format!(
        "{} {} {}\n{} {}\n{} {}\n{}\n",
        c(4),
        c(2),
        c(3),
        c(3),
        c(1),
        c(2),
        c(1),
        c(1)
    );
    // A malformed line is refused whole.
    let bad = format!("{}\n{} zz\n", c(1), c(2));
    let r = post_text(&d, "/repos/lp/commits", bad).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_import");
    assert_eq!(body["error"]["line"], 2);
    let r = post_text(&d, "/repos/lp/commits", format!("{} {}\n", c(9), c(8))).await;
    assert_eq!(r.status(), 400);
    let r = post_text(&d, "/repos/lp/commits", rev_list.clone()).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["added"], 4);

    assert_eq!(
        d.put("/repos/lp/branches/main", Some(json!({"tip": c(2)})))
            .await
            .status(),
        200
    );
    let r = d
        .put("/repos/lp/branches/topic", Some(json!({"tip": c(3)})))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        d.get("/repos/lp/branches/topic/merged-into/main").await["merged"],
        false
    );
    assert_eq!(
        names(&d.get("/repos/lp/branches/main/merged").await["merged"]),
        Vec::<String>::new()
    );
    // Moving main to the merge reports that topic became merged.
    let r = d
        .put("/repos/lp/branches/main", Some(json!({"tip": c(4)})))
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["changes"],
        json!([{"branch": "topic", "target": "main", "merged": true}])
    );
    assert_eq!(
        d.get("/repos/lp/branches/topic/merged-into/main").await["merged"],
        true
    );
    assert_eq!(
        d.get("/repos/lp/branches/main/merged-into/topic").await["merged"],
        false
    );
    assert_eq!(
        names(&d.get("/repos/lp/branches/main/merged").await["merged"]),
        ["topic"]
    );
    let q = |a: u8, b: u8| format!("/repos/lp/ancestry?ancestor={}&descendant={}", c(a), c(b));
    assert_eq!(d.get(&q(3, 4)).await["ancestor"], true);
    assert_eq!(d.get(&q(4, 3)).await["ancestor"], false);
    assert_eq!(d.get(&q(2, 3)).await["ancestor"], false);
    // Errors.
    assert_eq!(
        d.status(reqwest::Method::GET, &q(7, 4)).await,
        (404, "not_found".into())
    );
    assert_eq!(
        d.status(
            reqwest::Method::GET,
            "/repos/lp/ancestry?ancestor=xyz&descendant=abc"
        )
        .await,
        (400, "bad_hex".into())
    );
    assert_eq!(
        d.status(reqwest::Method::GET, "/repos/lp/ancestry").await.0,
        400
    );
    assert_eq!(
        d.status(reqwest::Method::GET, "/repos/lp/branches/nope/merged")
            .await
            .0,
        404
    );
    let r = d
        .put("/repos/lp/branches/x", Some(json!({"tip": c(7)})))
        .await;
    assert_eq!(r.status(), 404);
    let r = d
        .put("/repos/lp/branches/x", Some(json!({"tip": "nothex"})))
        .await;
    assert_eq!(r.status(), 400);
    // Deleting.
    let r = client()
        .delete(d.url("/repos/lp/branches/topic"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        names(&d.get("/repos/lp/branches/main/merged").await["merged"]),
        Vec::<String>::new()
    );
    assert_eq!(
        d.status(reqwest::Method::DELETE, "/repos/lp/branches/topic")
            .await
            .0,
        404
    );

    // A bulk import: rev-list, an empty line, refs.
    let body = format!(
        "{rev_list}\nrefs/heads/main {}\nrefs/heads/feature {}\nrefs/tags/v1 {}\n",
        c(4),
        c(3),
        c(1)
    );
    let r = post_text(&d, "/import/repos/other", body).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(
        names(&d.get("/repos/other/branches/main/merged").await["merged"]),
        ["feature"]
    );
    // Repositories are apart.
    assert_eq!(
        d.status(reqwest::Method::GET, "/repos/third/branches/main/merged")
            .await
            .0,
        404
    );
    d.stop().await;
}

/// The revision of a write's answer: `X-Revision` and `revision` in the JSON, equal.
async fn revision_of(response: reqwest::Response) -> u64 {
    assert_eq!(response.status(), 200);
    let header: u64 = response.headers()["x-revision"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["revision"], header, "{body}");
    header
}

#[tokio::test]
async fn repository_writes_answer_revisions_and_branch_history_pages() {
    let d = Dir::memory(Access::default()).await;
    let rev_list = format!("{} {}\n{} {}\n{}\n", c(3), c(1), c(2), c(1), c(1));
    let pushed = revision_of(post_text(&d, "/repos/hist/commits", rev_list).await).await;
    assert_eq!(pushed, 1);
    let main = revision_of(
        d.put("/repos/hist/branches/main", Some(json!({"tip": c(2)})))
            .await,
    )
    .await;
    let topic = revision_of(
        d.put("/repos/hist/branches/topic", Some(json!({"tip": c(3)})))
            .await,
    )
    .await;
    let moved = revision_of(
        d.put("/repos/hist/branches/topic", Some(json!({"tip": c(1)})))
            .await,
    )
    .await;
    assert_eq!((main, topic, moved), (2, 3, 4));
    let deleted = client()
        .delete(d.url("/repos/hist/branches/topic"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(revision_of(deleted).await, 5);
    // A re-push of known commits records nothing and answers the head.
    let again = post_text(&d, "/repos/hist/commits", format!("{}\n", c(1))).await;
    assert_eq!(revision_of(again).await, 5);

    // The whole history of topic, then page by page.
    let page = d.get("/repos/hist/branches/topic/history").await;
    let kinds: Vec<(u64, String)> = page["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["revision"].as_u64().unwrap(),
                e["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (3, "branch.set".to_string()),
            (4, "branch.set".to_string()),
            (5, "branch.deleted".to_string())
        ]
    );
    assert_eq!(page["next"], Value::Null);
    let first = &page["history"][0];
    assert_eq!(first["actor"], USER);
    assert_eq!(first["repo"], "hist");
    assert_eq!(first["branch"], "topic");
    assert_eq!(first["before"], Value::Null);
    assert_eq!(first["after"], c(3));
    assert_eq!(page["history"][1]["before"], c(3));
    // topic moved onto main's ancestor: merged into main now.
    assert_eq!(
        page["history"][1]["changes"],
        json!([{"branch": "topic", "target": "main", "merged": true}])
    );
    let one = d.get("/repos/hist/branches/topic/history?limit=2").await;
    assert_eq!(one["history"].as_array().unwrap().len(), 2);
    assert_eq!(one["next"], 4);
    let two = d
        .get("/repos/hist/branches/topic/history?after=4&limit=2")
        .await;
    assert_eq!(two["history"][0]["revision"], 5);
    assert_eq!(two["next"], Value::Null);
    // main's history has only its own move; a branch that never existed has none.
    let main_history = d.get("/repos/hist/branches/main/history").await;
    assert_eq!(main_history["history"].as_array().unwrap().len(), 1);
    let none = d.get("/repos/hist/branches/nothing/history").await;
    assert!(none["history"].as_array().unwrap().is_empty());
    // Bad queries.
    for query in ["after=x", "limit=0", "limit=1001", "color=red"] {
        let (status, code) = d
            .status(
                reqwest::Method::GET,
                &format!("/repos/hist/branches/topic/history?{query}"),
            )
            .await;
        assert_eq!((status, code.as_str()), (400, "bad_query"), "{query}");
    }
    d.stop().await;
}
