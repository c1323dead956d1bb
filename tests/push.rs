//! Web Push (SPEC 20) over real HTTP: the VAPID key kept across restarts,
//! subscriptions stored, replaced and removed, one the browser replaced
//! handed over with its choice, every check and limit a stranger meets,
//! and deliveries to a local push service that checks the signature and
//! decrypts as a real one and a browser would.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::push_service::PushService;
use common::{TestServer, client_from};
use reqwest::StatusCode;
use serde_json::{Value, json};
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike as _, ES256KeyPair};

/// A browser's subscription: a fresh P-256 key and auth secret.
fn subscription(endpoint: &str, topics: &[&str]) -> Value {
    let key = ES256KeyPair::generate();
    let p256dh = URL_SAFE_NO_PAD.encode(key.public_key().public_key().to_bytes_uncompressed());
    let auth = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
    json!({
        "subscription": {"endpoint": endpoint, "expirationTime": null,
                         "keys": {"p256dh": p256dh, "auth": auth}},
        "topics": topics,
        "lang": "it",
    })
}

/// Sends `body` as JSON with `method` from `client`; the status and text.
async fn send(
    server: &TestServer,
    client: &reqwest::Client,
    method: reqwest::Method,
    body: &Value,
) -> (StatusCode, String) {
    let r = client
        .request(method, server.url("/push/subscriptions"))
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn subscribe(server: &TestServer, from: &str, body: &Value) -> (StatusCode, String) {
    send(server, &client_from(from), reqwest::Method::POST, body).await
}

/// The stored subscriptions: (endpoint, topics, lang).
fn stored(server: &TestServer) -> Vec<(String, String, String)> {
    common::sqlite::push_subscriptions(&server.db)
}

#[tokio::test]
async fn the_public_key_is_a_p256_point_kept_across_restarts() {
    let server = TestServer::start().await;
    let r = server.get("/push/key").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let key: Value = r.json().await.unwrap();
    let key = key["publicKey"].as_str().unwrap().to_string();
    let point = URL_SAFE_NO_PAD.decode(&key).unwrap();
    assert_eq!(point.len(), 65);
    assert_eq!(point[0], 4, "uncompressed");
    assert!(web_push_native::p256::PublicKey::from_sec1_bytes(&point).is_ok());

    let db = server.db.clone();
    let dir = server.stop().await;
    let again = TestServer::start_in(dir, db, &[]).await;
    let after: Value = again.json("/push/key").await;
    assert_eq!(after["publicKey"], key.as_str());
}

#[tokio::test]
async fn a_subscription_is_stored_replaced_and_removed() {
    let server = TestServer::start().await;
    let endpoint = "https://push.example.net/send/abc";
    let (status, _) = subscribe(&server, "127.0.0.2", &subscription(endpoint, &["open"])).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        stored(&server),
        [(endpoint.into(), "open".into(), "it".into())]
    );

    // The same endpoint again: its topics replaced, still one.
    let both = subscription(endpoint, &["message", "open"]);
    let (status, _) = subscribe(&server, "127.0.0.2", &both).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stored(&server),
        [(endpoint.into(), "open,message".into(), "it".into())]
    );

    let client = client_from("127.0.0.2");
    let gone = json!({ "endpoint": endpoint });
    let (status, _) = send(&server, &client, reqwest::Method::DELETE, &gone).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(stored(&server).is_empty());
    let (status, _) = send(&server, &client, reqwest::Method::DELETE, &gone).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "already gone is gone");
}

#[tokio::test]
async fn bad_subscriptions_get_a_400_that_says_what() {
    let server = TestServer::start().await;
    let good = subscription("https://push.example.net/x", &["open"]);
    let mut cases: Vec<(Value, &str)> = vec![
        (
            subscription("http://push.example.net/x", &["open"]),
            "https://",
        ),
        (
            subscription("https://127.0.0.1:9/x", &["open"]),
            "loopback, private or link-local",
        ),
        (
            subscription("https://192.168.1.10/x", &["open"]),
            "loopback, private or link-local",
        ),
        (
            subscription("https://[fe80::1]/x", &["open"]),
            "loopback, private or link-local",
        ),
        (
            subscription("https://localhost/x", &["open"]),
            "loopback, private or link-local",
        ),
        (
            subscription(
                &format!("https://push.example.net/{}", "a".repeat(1100)),
                &["open"],
            ),
            "longer than 1024 bytes",
        ),
        (
            subscription("https://push.example.net/x", &["close"]),
            "unknown topic",
        ),
        (
            json!({"subscription": {"endpoint": "https://push.example.net/x"}}),
            "expected JSON of the shape",
        ),
    ];
    let mut short = good.clone();
    short["subscription"]["keys"]["p256dh"] = json!("BAAA");
    cases.push((short, "keys.p256dh: expected 65 bytes"));
    let mut off_curve = good.clone();
    off_curve["subscription"]["keys"]["p256dh"] = json!(URL_SAFE_NO_PAD.encode([4u8; 65]));
    cases.push((off_curve, "not a point of the P-256 curve"));
    let mut auth = good.clone();
    auth["subscription"]["keys"]["auth"] = json!(URL_SAFE_NO_PAD.encode([1u8; 15]));
    cases.push((auth, "keys.auth: expected 16 bytes"));
    for (body, says) in cases {
        let (status, text) = subscribe(&server, "127.0.0.3", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains(says), "{text:?} does not say {says:?}");
    }
    // Not JSON, or not said to be.
    let client = client_from("127.0.0.3");
    let r = client
        .post(server.url("/push/subscriptions"))
        .header("content-type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(r.text().await.unwrap().contains("application/json"));
    let r = client
        .post(server.url("/push/subscriptions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(stored(&server).is_empty());
}

#[tokio::test]
async fn another_sites_page_cannot_subscribe_or_unsubscribe() {
    let server = TestServer::start().await;
    let endpoint = "https://push.example.net/mine";
    let body = subscription(endpoint, &["open"]);
    let client = client_from("127.0.0.4");
    for method in [reqwest::Method::POST, reqwest::Method::DELETE] {
        let r = client
            .request(method.clone(), server.url("/push/subscriptions"))
            .header("origin", "https://evil.example")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method}");
    }
    assert!(stored(&server).is_empty());
    // Its preflight gets no permission.
    let r = client
        .request(reqwest::Method::OPTIONS, server.url("/push/subscriptions"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers()
    );
    // Its own page may.
    let own = format!("http://{}", server.web_addr());
    let r = client
        .post(server.url("/push/subscriptions"))
        .header("origin", own)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn five_new_subscriptions_an_hour_from_one_address_and_ten_thousand_in_all() {
    let server = TestServer::start().await;
    let endpoint = |i: usize| format!("https://push.example.net/e/{i}");
    for i in 0..5 {
        let (status, text) =
            subscribe(&server, "127.0.0.5", &subscription(&endpoint(i), &["open"])).await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
    }
    let (status, text) =
        subscribe(&server, "127.0.0.5", &subscription(&endpoint(5), &["open"])).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(text.contains("5 new push subscriptions an hour"), "{text}");
    // Changing one already there is no new subscription.
    let (status, _) = subscribe(
        &server,
        "127.0.0.5",
        &subscription(&endpoint(0), &["message"]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Another address has its own five.
    let (status, _) = subscribe(&server, "127.0.0.6", &subscription(&endpoint(5), &["open"])).await;
    assert_eq!(status, StatusCode::CREATED);

    // Filled up to 10,000: the next new one is refused, a known one is not.
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 6 UNION ALL SELECT i + 1 FROM n WHERE i < 9999)
         INSERT INTO bitsd_push_subscription
             (endpoint, p256dh, auth, topics, lang, created, origin, delivered)
         SELECT 'https://push.example.net/e/' || i, 'k', 'a', 'open', 'en', 0, 'http://b', 0
         FROM n",
    )
    .unwrap();
    assert_eq!(stored(&server).len(), 10_000);
    let (status, text) = subscribe(
        &server,
        "127.0.0.7",
        &subscription(&endpoint(10_000), &["open"]),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("10000 push subscriptions"), "{text}");
    let (status, _) = subscribe(&server, "127.0.0.7", &subscription(&endpoint(1), &["open"])).await;
    assert_eq!(status, StatusCode::OK);
    // A replacement frees the place of the one it replaces.
    let renewed = replacing(&subscription(&endpoint(10_001), &[]), &endpoint(1));
    let (status, text) = subscribe(&server, "127.0.0.7", &renewed).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let kept = stored(&server);
    assert_eq!(kept.len(), 10_000);
    assert!(kept.iter().all(|(e, _, _)| *e != endpoint(1)));
}

/// `body`'s subscription alone, sent in place of the one of `old`.
fn replacing(body: &Value, old: &str) -> Value {
    json!({"subscription": body["subscription"], "replaces": old})
}

#[tokio::test]
async fn a_subscription_the_browser_replaced_keeps_its_choice() {
    let (server, service) = subscribed(&[], &[("ada", &["open", "message"], "it")]).await;
    let old = service.endpoint("ada");
    // The browser's new subscription, without topics or language.
    let renewed = replacing(&service.subscription("ada2", &[], "en"), &old);
    let (status, text) = subscribe(&server, "127.0.1.1", &renewed).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert_eq!(
        stored(&server),
        [(service.endpoint("ada2"), "open,message".into(), "it".into())]
    );

    // What comes next reaches the new one only, in the old one's language.
    let mut device = server.device().await;
    device.send("status 1").await;
    device.send_message("ciao").await;
    let delivered = service.wait_for(2).await;
    assert_eq!(tags(&delivered), ["status", "message"]);
    assert!(delivered.iter().all(|d| d.subscriber == "ada2"));
    assert_eq!(delivered[0].payload["title"], "Lab è aperta");
    assert_eq!(service.arrived(), 2, "nothing sent to the old endpoint");
    assert!(service.refused().is_empty(), "{:?}", service.refused());
    for topic in ["open", "message"] {
        let metric = format!("bitsd_push_subscriptions{{topic=\"{topic}\"}}");
        assert_eq!(server.metric(&metric).await, 1.0, "{metric}");
    }

    // Sent again, it is the one kept: 200. Topics and language sent win.
    let mut chosen = service.subscription("ada3", &["message"], "en");
    chosen["replaces"] = json!(service.endpoint("ada2"));
    let (status, _) = subscribe(&server, "127.0.1.1", &renewed).await;
    assert_eq!(status, StatusCode::OK);
    let (status, text) = subscribe(&server, "127.0.1.1", &chosen).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert_eq!(
        stored(&server),
        [(service.endpoint("ada3"), "message".into(), "en".into())]
    );
}

#[tokio::test]
async fn a_replacement_of_an_unknown_subscription_needs_topics() {
    let server = TestServer::start().await;
    let fresh = subscription("https://push.example.net/new", &["open"]);
    let unknown = "https://push.example.net/unknown";
    // Each costs the address one of its new subscriptions: which
    // endpoints bitsd keeps is not for a stranger to ask over and over.
    for _ in 0..5 {
        let (status, text) = subscribe(&server, "127.0.0.8", &replacing(&fresh, unknown)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
        assert!(
            text.contains("no subscription with that endpoint to replace; send topics"),
            "{text}"
        );
    }
    let (status, _) = subscribe(&server, "127.0.0.8", &replacing(&fresh, unknown)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(stored(&server).is_empty());
    let mut with_topics = fresh.clone();
    with_topics["replaces"] = json!(unknown);
    let (status, text) = subscribe(&server, "127.0.0.9", &with_topics).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert_eq!(
        stored(&server),
        [(
            "https://push.example.net/new".into(),
            "open".into(),
            "it".into()
        )]
    );

    let long = format!("https://push.example.net/{}", "a".repeat(1100));
    let (status, text) = subscribe(&server, "127.0.0.8", &replacing(&fresh, &long)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("replaces: longer than 1024 bytes"), "{text}");
    // Without `replaces`, topics are needed.
    let bare = json!({"subscription": fresh["subscription"]});
    let (status, text) = subscribe(&server, "127.0.0.8", &bare).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("topics: expected at least one"), "{text}");
}

/// The tags of `delivered`, in order.
fn tags(delivered: &[common::push_service::Delivered]) -> Vec<&str> {
    delivered
        .iter()
        .map(|d| d.payload["tag"].as_str().unwrap())
        .collect()
}

/// A server that may push to the local push service, with browsers
/// subscribed from addresses of their own: (name, topics, lang).
async fn subscribed(
    extra: &[&str],
    browsers: &[(&str, &[&str], &str)],
) -> (TestServer, PushService) {
    let mut args = vec!["--push-allow-local"];
    args.extend_from_slice(extra);
    let server = TestServer::start_configured("[spaceapi]\nspace = \"Lab\"\n", &args).await;
    let service = PushService::start().await;
    let key: Value = server.json("/push/key").await;
    service.trust(key["publicKey"].as_str().unwrap());
    for (i, (name, topics, lang)) in browsers.iter().enumerate() {
        let body = service.subscription(name, topics, lang);
        let (status, text) = subscribe(&server, &format!("127.0.1.{}", i + 1), &body).await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
    }
    (server, service)
}

#[tokio::test]
async fn an_opening_and_a_message_reach_their_subscribers_encrypted_and_signed() {
    let (server, service) = subscribed(
        &[],
        &[
            ("ada", &["open"], "en"),
            ("bea", &["open", "message"], "it"),
            ("cai", &["message"], "en"),
        ],
    )
    .await;
    let mut device = server.device().await;
    device.send("status 1").await;
    service.wait_for(2).await;
    let since = &server.json("/data").await["status"]["timestamp"]
        .as_str()
        .unwrap()[11..16]
        .to_string();
    let ada = &service.to("ada")[0];
    assert_eq!(ada.payload["title"], "Lab is open");
    assert_eq!(ada.payload["body"], format!("Opened at {since}"));
    assert_eq!(ada.payload["tag"], "status");
    assert_eq!(ada.payload["url"], "/");
    assert!(ada.payload["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(ada.header("urgency"), Some("high"));
    assert_eq!(ada.header("topic"), Some("status"));
    assert_eq!(ada.header("ttl"), Some("3600"));
    assert_eq!(service.to("bea")[0].payload["title"], "Lab è aperta");
    assert!(service.to("cai").is_empty());

    device.send_message("pizza & <b>beer</b>").await;
    service.wait_for(4).await;
    let bea = &service.to("bea")[1];
    assert_eq!(bea.payload["title"], "Lab");
    assert_eq!(
        bea.payload["body"],
        "messaggio da BITS: pizza & <b>beer</b>"
    );
    assert_eq!(bea.payload["tag"], "message");
    assert_eq!(bea.header("urgency"), Some("normal"));
    assert_eq!(bea.header("topic"), Some("message"));
    assert_eq!(
        service.to("cai")[0].payload["body"],
        "message from BITS: pizza & <b>beer</b>"
    );
    assert_eq!(service.to("ada").len(), 1);
    assert!(service.refused().is_empty(), "{:?}", service.refused());
    server
        .wait_for_metric("bitsd_push_deliveries_total{result=\"delivered\"}", 4.0)
        .await;
    assert_eq!(
        server
            .metric("bitsd_push_subscriptions{topic=\"open\"}")
            .await,
        2.0
    );
    assert_eq!(
        server
            .metric("bitsd_push_subscriptions{topic=\"message\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_door_that_flaps_sends_one_opening() {
    let (server, service) = subscribed(&[], &[("ada", &["open", "message"], "en")]).await;
    let mut device = server.device().await;
    device
        .send_all(&["status 1", "status 0", "status 1", "status 0", "status 1"])
        .await;
    server.wait_for_status("1").await;
    // A message after the flapping comes after the one opening.
    device.send_message("done").await;
    let delivered = service.wait_for(2).await;
    let tags = tags(&delivered);
    assert_eq!(tags, ["status", "message"]);
}

#[tokio::test]
async fn a_push_service_that_fails_is_tried_again_and_one_that_says_gone_loses_the_subscription() {
    let (server, service) = subscribed(
        &["--push-quiet", "0"],
        &[
            ("ada", &["open", "message"], "en"),
            ("bob", &["open"], "en"),
        ],
    )
    .await;
    service.script("ada", &[503, 429]);
    service.script("bob", &[410]);
    let mut device = server.device().await;
    device.send("status 1").await;
    device.send_message("after").await;
    // Ada's service fails twice, then takes both, in order.
    let delivered = service.wait_for(2).await;
    let tags = tags(&delivered);
    assert_eq!(tags, ["status", "message"]);
    server
        .wait_for_metric("bitsd_push_deliveries_total{result=\"retried\"}", 2.0)
        .await;
    // Bob's is gone: so is his subscription.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while stored(&server).len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            stored(&server)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server
        .wait_for_metric("bitsd_push_deliveries_total{result=\"gone\"}", 1.0)
        .await;
}

#[tokio::test]
async fn a_push_service_that_hangs_holds_up_nobody_else() {
    let receiver = common::receiver::Receiver::start().await;
    let hook = format!(
        "[[webhook]]\nname = \"chat\"\nformat = \"slack\"\nurl = \"{}\"\n",
        receiver.url("/hook")
    );
    let service = PushService::start().await;
    let stuck = PushService::start().await;
    let server = TestServer::start_configured(&hook, &["--push-allow-local"]).await;
    let key: Value = server.json("/push/key").await;
    service.trust(key["publicKey"].as_str().unwrap());
    // Many subscribers behind a push service that never answers, subscribed
    // first; one behind a healthy one.
    for i in 0..100 {
        let name = format!("stuck{i}");
        stuck.hang(&name);
        let body = stuck.subscription(&name, &["open", "message"], "en");
        let from = format!("127.0.2.{}", i / 5 + 1);
        let (status, _) = subscribe(&server, &from, &body).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let body = service.subscription("ada", &["open", "message"], "en");
    let (status, _) = subscribe(&server, "127.0.3.1", &body).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut device = server.device().await;
    device.send("status 1").await;
    // Committed and shown at once; the chat and Ada hear of it while the
    // hung requests are still open.
    server.wait_for_status("1").await;
    receiver.wait_for(1).await;
    service.wait_for(1).await;
    stuck.wait_for_arrivals(64).await;
    // A message while they still hang reaches Ada too.
    device.send_message("still here").await;
    let delivered = service.wait_for(2).await;
    assert_eq!(delivered[1].payload["tag"], "message");
    assert_eq!(stuck.arrived(), 64, "64 at a time for one push service");
}

#[tokio::test]
async fn what_was_not_delivered_before_a_restart_is_delivered_after() {
    let (server, service) = subscribed(&[], &[("ada", &["open"], "en")]).await;
    service.script("ada", &[503]);
    let mut device = server.device().await;
    device.send("status 1").await;
    service.wait_for_arrivals(1).await;
    assert!(service.delivered().is_empty());
    // Stopped before the next try; started again on the same database.
    let db = server.db.clone();
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, db, &["--push-allow-local"]).await;
    let delivered = service.wait_for(1).await;
    assert_eq!(delivered[0].payload["tag"], "status");
    assert_eq!(server.text("/status").await, "1");
}

/// A storm of pushes is bound by encryption: the delivery's threads run 10
/// nice steps below every other thread of bitsd, so the web, the devices
/// and the websocket fan-out go first.
#[tokio::test]
async fn the_delivery_runs_below_the_rest_of_bitsd() {
    let dir = tempfile::tempdir().unwrap();
    let bitsd = common::Spawned::start(&dir.path().join("bits.db"));
    // Answering: every part has started.
    assert!(common::http_get(bitsd.web, "/status").ends_with("\r\n\r\n0"));
    // Its thread, a worker a core, and the blocking thread of its first
    // read of the database, started by a thread of its own.
    let cores = std::thread::available_parallelism().unwrap().get();
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let threads = loop {
        let threads = threads_of(bitsd.child.id());
        let push = threads.iter().filter(|(name, _)| name == "bitsd-push");
        if push.count() >= cores + 2 {
            break threads;
        }
        assert!(std::time::Instant::now() < deadline, "{threads:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let (push, others): (Vec<_>, Vec<_>) =
        threads.iter().partition(|(name, _)| name == "bitsd-push");
    assert!(others.iter().any(|(name, _)| name == "bitsd-writer"));
    let base = others[0].1;
    assert!(others.iter().all(|(_, nice)| *nice == base), "{threads:?}");
    let lowered = (base + 10).min(19);
    assert!(push.iter().all(|(_, nice)| *nice == lowered), "{threads:?}");
}

/// The name and nice value of each thread of process `pid`.
fn threads_of(pid: u32) -> Vec<(String, i64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .map(|task| {
            let path = task.unwrap().path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap();
            let stat = std::fs::read_to_string(path.join("stat")).unwrap();
            // Fields after the name in parentheses; nice is field 19.
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            (name.trim().to_string(), fields[16].parse().unwrap())
        })
        .collect()
}
