//! `GET /api/v1/incidents`: keyset pages, newest first, followed with `next` to the end.

use std::collections::HashSet;

use chrono::Utc;
use serde_json::{json, Value};

use crate::helpers::*;

/// `n` incidents (`alertname=Paging`, label `n`), opened 41 to a webhook, and every fifth
/// of them resolved; returns their ids, newest first.
async fn with_incidents(app: &TestApp, n: usize) -> Vec<i64> {
    let starts = Utc::now();
    let labels = |i: usize| json!({"alertname": "Paging", "n": i.to_string()});
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(41) {
        let alerts: Vec<Value> = chunk
            .iter()
            .map(|i| alert(labels(*i), starts, "firing"))
            .collect();
        assert_eq!(app.post_hook(webhook(&alerts)).await.status(), 200);
    }
    let resolved: Vec<Value> = (0..n)
        .step_by(5)
        .map(|i| alert(labels(i), starts, "resolved"))
        .collect();
    for chunk in resolved.chunks(205) {
        assert_eq!(app.post_hook(webhook(chunk)).await.status(), 200);
    }
    // The 200 comes after the deliveries are applied: every incident is listed already.
    let all = app.incidents().await;
    assert_eq!(all.len(), n);
    all.iter().map(|i| i["id"].as_i64().unwrap()).collect()
}

/// Follows `next` from `first` (a path with its query) and returns each page's ids.
async fn pages(app: &TestApp, first: &str) -> Vec<Vec<i64>> {
    let mut pages = Vec::new();
    let mut path = first.to_string();
    loop {
        let (code, page) = app.get_json(&path).await;
        assert_eq!(code, 200, "{path}: {page}");
        let ids: Vec<i64> = page["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect();
        let next = &page["next"];
        assert!(
            next.is_null() || next.as_i64() == ids.last().copied(),
            "{path}: next is the page's last id: {next}"
        );
        pages.push(ids);
        match next.as_i64() {
            Some(n) => path = format!("{first}&before={n}"),
            None => return pages,
        }
    }
}

#[tokio::test]
async fn pages_follow_next_through_every_incident_newest_first() {
    let app = spawn_app().await;
    let all = with_incidents(&app, 2050).await;

    let got = pages(&app, "/api/v1/incidents?limit=1000").await;
    assert_eq!(
        got.iter().map(Vec::len).collect::<Vec<_>>(),
        [1000, 1000, 50],
        "past the largest page; next is null on the last"
    );
    let flat: Vec<i64> = got.concat();
    assert_eq!(flat, all, "every incident once, newest first");
    assert!(flat.windows(2).all(|w| w[0] > w[1]));

    // A last page that is exactly full says so: no empty page after it.
    let open = pages(&app, "/api/v1/incidents?state=open&limit=205").await;
    assert_eq!(open.len(), 8, "1640 open incidents in 8 full pages");
    assert!(open.iter().all(|p| p.len() == 205));
    let resolved = pages(&app, "/api/v1/incidents?state=resolved&limit=1000").await;
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].len(), 410);
    let (open, resolved): (HashSet<i64>, HashSet<i64>) = (
        open.concat().into_iter().collect(),
        resolved[0].iter().copied().collect(),
    );
    assert!(open.is_disjoint(&resolved));
    assert_eq!(open.len() + resolved.len(), all.len());
    let (_, page) = app
        .get_json("/api/v1/incidents?state=open&limit=1000")
        .await;
    assert!(page["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["state"] == "open"));

    // Without a limit: a page of 100.
    let (_, page) = app.get_json("/api/v1/incidents").await;
    assert_eq!(page["incidents"].as_array().unwrap().len(), 100);
    assert_eq!(page["next"], all[99]);

    // `before` is exclusive and need not be a page boundary.
    let cut = all[1234];
    let (_, page) = app
        .get_json(&format!("/api/v1/incidents?limit=3&before={cut}"))
        .await;
    let ids: Vec<i64> = page["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, all[1235..1238]);
    let oldest = *all.last().unwrap();
    let (_, page) = app
        .get_json(&format!("/api/v1/incidents?before={oldest}"))
        .await;
    assert_eq!(page, json!({"incidents": [], "next": null}));
}

#[tokio::test]
async fn bad_paging_parameters_are_400s_naming_the_parameter() {
    let app = spawn_app().await;
    for (query, error, detail) in [
        (
            "limit=0",
            "invalid limit",
            "limit=\"0\"; use a whole number from 1 to 1000",
        ),
        ("limit=1001", "invalid limit", "limit=\"1001\""),
        ("limit=-5", "invalid limit", "limit=\"-5\""),
        ("limit=ten", "invalid limit", "limit=\"ten\""),
        (
            "before=abc",
            "invalid before cursor",
            "before=\"abc\"; use an incident id",
        ),
        ("before=0", "invalid before cursor", "before=\"0\""),
        ("limit=10&before=", "invalid before cursor", "before=\"\""),
        (
            "state=burning",
            "invalid state filter",
            "use open, resolved or all",
        ),
    ] {
        let (code, v) = app.get_json(&format!("/api/v1/incidents?{query}")).await;
        assert_eq!(code, 400, "{query}: {v}");
        assert_eq!(v["error"], error, "{query}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains(detail),
            "{query}: {v}"
        );
    }
    let (code, v) = app.get_json("/api/v1/incidents?limit=1000").await;
    assert_eq!((code, v), (200, json!({"incidents": [], "next": null})));
}
