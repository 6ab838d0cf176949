//! Usage statistics over a real socket: downloads per file and per bucket per day, and the
//! total and last day in the file record; ranges reversed or over 366 days are 400.

use crate::support::{client, content, error_code, Options, TestServer, PASSWORD, USER};

async fn status_of(server: &TestServer, path: &str) -> (u16, String) {
    let response = client()
        .get(server.url(path))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        if status == 200 {
            String::new()
        } else {
            error_code(response).await
        },
    )
}

#[tokio::test]
async fn download_statistics_over_a_socket() {
    let server = TestServer::start(Options::default()).await;
    // The clock starts at 2023-11-14T22:13:20Z.
    let small = server.upload("stats", "small.txt", b"hello".to_vec()).await;
    let large = server
        .upload("stats", "large.bin", content(100_000, 1))
        .await;
    let fresh = server.get_json(&format!("/files/{}", small["id"])).await;
    assert_eq!(fresh["downloads"], 0);
    assert_eq!(fresh["last_downloaded"], serde_json::Value::Null);
    for (file, times) in [(&small, 3), (&large, 2)] {
        for _ in 0..times {
            let url = server.url(file["url"].as_str().unwrap());
            assert_eq!(client().get(url).send().await.unwrap().status(), 200);
        }
    }
    // A range from the middle is not a download.
    let url = server.url(large["url"].as_str().unwrap());
    let partial = client()
        .get(url)
        .header("range", "bytes=10-20")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), 206);

    let record = server.get_json(&format!("/files/{}", small["id"])).await;
    assert_eq!(record["downloads"], 3);
    assert_eq!(record["last_downloaded"], "2023-11-14");
    let days = server
        .get_json(&format!(
            "/files/{}/downloads?from=2023-11-13&to=2023-11-15",
            large["id"]
        ))
        .await;
    assert_eq!(days["total"], 2);
    assert_eq!(days["days"].as_array().unwrap().len(), 3);
    assert_eq!(
        days["days"][1],
        serde_json::json!({"day": "2023-11-14", "downloads": 2})
    );
    assert_eq!(days["days"][0]["downloads"], 0);
    let bucket = server
        .get_json("/buckets/stats/downloads?from=2023-11-14&to=2023-11-14")
        .await;
    assert_eq!(
        bucket["days"],
        serde_json::json!([{"day": "2023-11-14", "downloads": 5}])
    );
    // By default: the 30 days up to today.
    let recent = server.get_json("/buckets/stats/downloads").await;
    assert_eq!(recent["days"].as_array().unwrap().len(), 30);
    assert_eq!(recent["to"], "2023-11-14");
    assert_eq!(recent["total"], 5);

    let id = small["id"].as_u64().unwrap();
    for (path, code) in [
        (
            format!("/files/{id}/downloads?from=2023-11-15&to=2023-11-14"),
            "bad_range",
        ),
        (
            format!("/files/{id}/downloads?from=2022-11-13&to=2023-11-14"),
            "bad_range",
        ),
        (
            "/buckets/stats/downloads?from=2023-02-30".to_string(),
            "bad_query",
        ),
        (
            "/buckets/stats/downloads?since=2023-01-01".to_string(),
            "bad_query",
        ),
    ] {
        assert_eq!(
            status_of(&server, &path).await,
            (400, code.to_string()),
            "{path}"
        );
    }
    // 366 days (both ends included) is the longest range.
    assert_eq!(
        status_of(
            &server,
            &format!("/files/{id}/downloads?from=2022-11-14&to=2023-11-14")
        )
        .await
        .0,
        200
    );
    assert_eq!(status_of(&server, "/files/999/downloads").await.0, 404);
    server.stop().await;
}
