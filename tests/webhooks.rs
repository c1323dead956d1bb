//! Webhooks (SPEC 16) against real HTTP receivers on loopback: each
//! format's request, signatures, retries, order, debounce, deliveries that
//! survive a crash, `bitsd webhook test` and the metrics.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::receiver::{Receiver, Recorded, Reply};
use common::{PATIENCE, Spawned, TestServer, bitsd_command};
use hmac::{KeyInit as _, Mac as _};

/// A config file in `dir` with a `[spaceapi]` table and `hooks`.
fn config_file(dir: &Path, hooks: &str) -> PathBuf {
    let path = dir.join("bitsd.toml");
    let text = format!("[spaceapi]\nspace = \"Lab 42\"\nurl = \"https://lab.example\"\n\n{hooks}");
    std::fs::write(&path, text).unwrap();
    path
}

/// An in-process server with `hooks` configured.
async fn server(hooks: &str) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), hooks);
    let server = TestServer::start_with(&["--config", config.to_str().unwrap()]).await;
    (server, dir)
}

fn hex_hmac(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn is_delivery_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `/metrics` has `line`, within [`PATIENCE`].
async fn wait_for_metric(server: &TestServer, line: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let metrics = server.text("/metrics").await;
        if metrics.lines().any(|l| l == line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {line:?} in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// No more than `n` requests arrive within `wait`.
async fn no_more_than(receiver: &Receiver, n: usize, wait: Duration) -> Vec<Recorded> {
    tokio::time::sleep(wait).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), n, "{requests:?}");
    requests
}

#[tokio::test]
async fn json_deliveries_carry_the_record_as_data_does_and_are_signed() {
    let receiver = Receiver::start().await;
    let hooks = format!(
        "[[webhook]]\nname = \"log\"\nurl = \"{}\"\nevents = [\"status\", \"message\", \"temperature\"]\nsecret = \"s3cret\"\n",
        receiver.url("/hook?x=1")
    );
    let (server, _dir) = server(&hooks).await;
    let mut device = server.device().await;
    device.send_all(&["status 1", "temperature 2 21.5"]).await;
    device.send_message("pizza <3").await;
    let requests = receiver.wait_for(3).await;
    let data = server.json("/data").await;

    let ids: Vec<String> = requests.iter().map(Recorded::delivery).collect();
    assert!(ids.iter().all(|id| is_delivery_id(id)), "{ids:?}");
    assert!(ids[0] != ids[1] && ids[1] != ids[2]);
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hook?x=1");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.header("user-agent"),
            Some(concat!("bitsd/", env!("CARGO_PKG_VERSION")))
        );
        let signature = request.header("x-bits-signature").unwrap();
        assert_eq!(
            signature,
            format!("sha256={}", hex_hmac("s3cret", &request.body)),
            "the HMAC of the exact body"
        );
    }
    let bodies: Vec<serde_json::Value> = requests.iter().map(Recorded::json).collect();
    let events: Vec<&str> = bodies
        .iter()
        .map(|b| b["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["status", "temperature", "message"]);
    assert_eq!(bodies[0]["status"], data["status"]);
    assert_eq!(bodies[1]["tempint"], data["tempint"]);
    assert_eq!(bodies[2]["message"], data["message"]);
    assert_eq!(
        bodies[2]["message"]["value"], "pizza &lt;3",
        "as /data has it"
    );
    for body in &bodies {
        assert_eq!(body["space"], "Lab 42");
        assert_eq!(body["url"], "https://lab.example");
        assert_eq!(body.as_object().unwrap().len(), 4, "{body}");
    }
    wait_for_metric(
        &server,
        "bitsd_webhook_deliveries_total{hook=\"log\",result=\"delivered\"} 3",
    )
    .await;
    wait_for_metric(&server, "bitsd_webhook_queue{hook=\"log\"} 0").await;
}

#[tokio::test]
async fn each_chat_format_writes_its_own_request() {
    let receiver = Receiver::start().await;
    let base = receiver.url("");
    let hooks = format!(
        r#"
[[webhook]]
name = "room"
format = "matrix"
url = "{base}/m/"
token = "mtok"
room = "!abc:example.org"
events = ["status", "message"]

[[webhook]]
name = "channel"
format = "telegram"
url = "{base}/t"
token = "123:abc"
chat_id = -1001234
text_open = "{{space}} opened by {{by}} at {{since}}, see {{url}}"

[[webhook]]
name = "toot"
format = "mastodon"
url = "{base}/social"
token = "ttok"

[[webhook]]
name = "d"
format = "discord"
url = "{base}/discord/hook"

[[webhook]]
name = "s"
format = "slack"
url = "{base}/slack/hook"
"#
    );
    let (server, _dir) = server(&hooks).await;
    let mut device = server.device().await;
    device.send("status 1").await;
    let requests = receiver.wait_for(5).await;
    let since = server.json("/data").await["status"]["timestamp"]
        .as_str()
        .unwrap()[11..16]
        .to_string();
    let by_path = |prefix: &str| {
        let found = requests.iter().find(|r| r.path.starts_with(prefix));
        found.unwrap_or_else(|| panic!("no request to {prefix}: {requests:?}"))
    };
    let text = format!("Lab 42 is open since {since}");

    let matrix = by_path("/m/");
    assert_eq!(matrix.method, "PUT");
    assert_eq!(
        matrix.path,
        format!(
            "/m/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/{}",
            matrix.delivery()
        )
    );
    assert_eq!(matrix.header("authorization"), Some("Bearer mtok"));
    assert_eq!(
        matrix.json(),
        serde_json::json!({"msgtype": "m.text", "body": text})
    );

    let telegram = by_path("/t/");
    assert_eq!(telegram.method, "POST");
    assert_eq!(telegram.path, "/t/bot123:abc/sendMessage");
    assert_eq!(
        telegram.json(),
        serde_json::json!({"chat_id": -1001234,
            "text": format!("Lab 42 opened by BITS at {since}, see https://lab.example")})
    );

    let mastodon = by_path("/social");
    assert_eq!(mastodon.method, "POST");
    assert_eq!(mastodon.path, "/social/api/v1/statuses");
    assert_eq!(mastodon.header("authorization"), Some("Bearer ttok"));
    assert_eq!(
        mastodon.header("idempotency-key"),
        Some(mastodon.delivery().as_str())
    );
    assert_eq!(mastodon.json(), serde_json::json!({"status": text}));

    let discord = by_path("/discord/hook");
    assert_eq!(discord.method, "POST");
    assert_eq!(
        discord.json(),
        serde_json::json!({"content": text, "allowed_mentions": {"parse": []}})
    );
    let slack = by_path("/slack/hook");
    assert_eq!(slack.json(), serde_json::json!({"text": text}));
    for request in &requests {
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert!(is_delivery_id(&request.delivery()));
    }

    // A message reaches the one hook that follows messages, raw.
    device.send_message("pizza <3 & {space}").await;
    let requests = receiver.wait_for(6).await;
    assert_eq!(
        requests[5].json()["body"],
        "Lab 42, message from BITS: pizza <3 & {space}"
    );
    no_more_than(&receiver, 6, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn ntfy_and_gotify_get_what_their_servers_read() {
    let receiver = Receiver::start().await;
    let base = receiver.url("");
    let hooks = format!(
        r#"
[[webhook]]
name = "phones"
format = "ntfy"
url = "{base}/ntfy/"
topic = "lab door"
token = "ntok"
events = ["status", "message"]

[[webhook]]
name = "g"
format = "gotify"
url = "{base}/gotify"
token = "gtok"
"#
    );
    let (server, _dir) = server(&hooks).await;
    let mut device = server.device().await;
    device.send("status 1").await;
    let requests = receiver.wait_for(2).await;
    let since = &server.json("/data").await["status"]["timestamp"]
        .as_str()
        .unwrap()[11..16]
        .to_string();
    let text = format!("Lab 42 is open since {since}");
    let by_path = |requests: &[Recorded], path: &str| {
        let found = requests.iter().rfind(|r| r.path == path).cloned();
        found.unwrap_or_else(|| panic!("no request to {path}: {requests:?}"))
    };

    let ntfy = by_path(&requests, "/ntfy/lab%20door");
    assert_eq!(ntfy.method, "POST");
    assert_eq!(String::from_utf8_lossy(&ntfy.body), text);
    assert_eq!(
        ntfy.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(ntfy.header("title"), Some("Lab 42"));
    assert_eq!(ntfy.header("tags"), Some("green_circle"));
    assert_eq!(ntfy.header("click"), Some("https://lab.example"));
    assert_eq!(ntfy.header("authorization"), Some("Bearer ntok"));

    let gotify = by_path(&requests, "/gotify/message");
    assert_eq!(gotify.method, "POST");
    assert_eq!(gotify.header("x-gotify-key"), Some("gtok"));
    assert_eq!(gotify.header("content-type"), Some("application/json"));
    assert_eq!(
        gotify.json(),
        serde_json::json!({"title": "Lab 42", "message": text, "priority": 5})
    );

    // Closed, then a message: each with its own tag.
    device.send("status 0").await;
    device.send_message("pizza at eight").await;
    let requests = receiver.wait_for(5).await;
    let tags: Vec<&str> = requests
        .iter()
        .filter(|r| r.path.starts_with("/ntfy/"))
        .map(|r| r.header("tags").unwrap())
        .collect();
    assert_eq!(tags, ["green_circle", "red_circle", "speech_balloon"]);
    assert_eq!(
        String::from_utf8_lossy(&by_path(&requests, "/ntfy/lab%20door").body),
        "Lab 42, message from BITS: pizza at eight"
    );
    no_more_than(&receiver, 5, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn failures_are_retried_with_the_same_id_honouring_retry_after() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(503), Reply::RetryAfter(429, "2")]);
    let hooks = format!(
        "[[webhook]]\nname = \"h\"\nurl = \"{}\"\n",
        receiver.url("/")
    );
    let (server, _dir) = server(&hooks).await;
    let mut device = server.device().await;
    device.send("status 1").await;
    let requests = receiver.wait_for(3).await;
    let ids: Vec<String> = requests.iter().map(Recorded::delivery).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(requests[0].body, requests[2].body);
    let first_wait = requests[1].at - requests[0].at;
    let second_wait = requests[2].at - requests[1].at;
    assert!(first_wait >= Duration::from_millis(900), "{first_wait:?}");
    assert!(
        second_wait >= Duration::from_millis(1900),
        "{second_wait:?}"
    );
    wait_for_metric(
        &server,
        "bitsd_webhook_deliveries_total{hook=\"h\",result=\"retried\"} 2",
    )
    .await;
    wait_for_metric(
        &server,
        "bitsd_webhook_deliveries_total{hook=\"h\",result=\"delivered\"} 1",
    )
    .await;
    no_more_than(&receiver, 3, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn one_hook_delivers_in_event_order_even_past_a_failure() {
    let receiver = Receiver::start().await;
    let mut script = vec![Reply::Status(200); 10];
    script.push(Reply::Status(500));
    script.push(Reply::Slow(Duration::from_millis(200)));
    receiver.script(script);
    let hooks = format!(
        "[[webhook]]\nname = \"chat\"\nurl = \"{}\"\nevents = [\"message\"]\n",
        receiver.url("/")
    );
    let (server, _dir) = server(&hooks).await;
    let mut device = server.device().await;
    const N: usize = 150;
    for i in 0..N {
        device.send_message(&format!("m{i}")).await;
        if i % 40 == 0 {
            device.send("temperature 0 20").await;
        }
    }
    let requests = receiver.wait_for(N + 1).await;
    let texts: Vec<String> = requests
        .iter()
        .map(|r| r.json()["message"]["value"].as_str().unwrap().to_string())
        .collect();
    let mut expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    expected.insert(10, "m10".into());
    assert_eq!(texts, expected, "in order, the failed one again at once");
    assert_eq!(requests[10].delivery(), requests[11].delivery());
    wait_for_metric(&server, "bitsd_webhook_queue{hook=\"chat\"} 0").await;
}

#[tokio::test]
async fn a_flapping_door_sends_only_its_final_state() {
    let receiver = Receiver::start().await;
    let hooks = format!(
        "[[webhook]]\nname = \"door\"\nurl = \"{}\"\ndebounce = 1\nevents = [\"status\", \"message\"]\n",
        receiver.url("/")
    );
    let (server, _dir) = server(&hooks).await;
    let mut device = server.device().await;
    for line in ["status 1", "status 0", "status 1", "status 0", "status 1"] {
        device.send(line).await;
    }
    // A message behind the flapping waits its turn.
    device.send_message("after").await;
    let requests = receiver.wait_for(2).await;
    assert_eq!(requests[0].json()["status"]["value"], "open");
    assert_eq!(requests[1].json()["event"], "message");
    wait_for_metric(
        &server,
        "bitsd_webhook_deliveries_total{hook=\"door\",result=\"superseded\"} 4",
    )
    .await;
    // A change that stays is sent once its debounce is over.
    let sent = std::time::Instant::now();
    device.send("status 0").await;
    let requests = receiver.wait_for(3).await;
    let waited = requests[2].at - sent;
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
    assert_eq!(requests[2].json()["status"]["value"], "closed");
    // A flap that ends where the room was sends nothing.
    device.send_all(&["status 1", "status 0"]).await;
    wait_for_metric(
        &server,
        "bitsd_webhook_deliveries_total{hook=\"door\",result=\"superseded\"} 6",
    )
    .await;
    no_more_than(&receiver, 3, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_chat_hears_until_when_the_room_stays_open() {
    let receiver = Receiver::start().await;
    let hooks = format!(
        "[[webhook]]\nname = \"now\"\nformat = \"slack\"\nurl = \"{}\"\n\n\
         [[webhook]]\nname = \"calm\"\nformat = \"slack\"\nurl = \"{}\"\ndebounce = 1\n",
        receiver.url("/now"),
        receiver.url("/calm"),
    );
    let (server, _dir) = server(&hooks).await;
    let mut device = server.device().await;
    device.send_all(&["state open", "until 23:59"]).await;
    let data = server
        .wait_for_data("until", |d| d["status"]["until"].is_string())
        .await;
    let since = &data["status"]["timestamp"].as_str().unwrap()[11..16];
    let requests = receiver.wait_for(3).await;
    let texts = |path: &str| -> Vec<String> {
        requests
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.json()["text"].as_str().unwrap().to_string())
            .collect()
    };
    // At once: the opening, then the time it lasts until.
    assert_eq!(
        texts("/now"),
        [
            format!("Lab 42 is open since {since}"),
            format!("Lab 42 is open since {since}, until 23:59")
        ]
    );
    // Debounced: only what stayed.
    assert_eq!(
        texts("/calm"),
        [format!("Lab 42 is open since {since}, until 23:59")]
    );
    no_more_than(&receiver, 3, Duration::from_millis(300)).await;
}

/// The outbox rows of `db`: (delivery id, event), oldest first.
fn outbox(db: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT delivery, event FROM webhook_outbox ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn deliveries_wait_for_a_receiver_that_is_down_across_a_crash() {
    // A port that refuses connections until the receiver is back on it.
    let addr = Receiver::start().await.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let hooks = format!(
        "[[webhook]]\nname = \"h\"\nurl = \"http://{addr}/in\"\nevents = [\"status\", \"message\"]\n"
    );
    let config = config_file(dir.path(), &hooks);
    let args = ["--config", config.to_str().unwrap()];
    let mut bitsd = Spawned::start_with(&db, &args, "info");
    let mut device = common::Device::connect(bitsd.control).await;
    device.send("status 1").await;
    device.send_message("one").await;
    device.send("status 0").await;
    let failing = bitsd
        .wait_for_log("webhook h: delivery failing", PATIENCE)
        .await;
    assert!(!failing.contains("/in"), "no URL in the log: {failing}");
    let deadline = std::time::Instant::now() + PATIENCE;
    while outbox(&db).len() < 3 {
        assert!(std::time::Instant::now() < deadline, "{:?}", outbox(&db));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pending = outbox(&db);
    bitsd.child.kill().unwrap();
    bitsd.child.wait().unwrap();
    drop(bitsd);

    let receiver = Receiver::start_on(addr).await;
    let _bitsd = Spawned::start_with(&db, &args, "info");
    let requests = receiver.wait_for(3).await;
    let arrived: Vec<(String, String)> = requests
        .iter()
        .map(|r| {
            (
                r.delivery(),
                r.json()["event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(arrived, pending, "the ids they had, in order");
    let deadline = std::time::Instant::now() + PATIENCE;
    while !outbox(&db).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", outbox(&db));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    no_more_than(&receiver, 3, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_refusal_is_final_and_logged() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Body(404, "no such hook\nsecond line")]);
    let dir = tempfile::tempdir().unwrap();
    let hooks = format!(
        "[[webhook]]\nname = \"h\"\nurl = \"{}\"\n",
        receiver.url("/x")
    );
    let config = config_file(dir.path(), &hooks);
    let bitsd = Spawned::start_with(
        &dir.path().join("bitsd.db"),
        &["--config", config.to_str().unwrap()],
        "info",
    );
    let mut device = common::Device::connect(bitsd.control).await;
    device.send_all(&["status 1", "status 0"]).await;
    let requests = receiver.wait_for(2).await;
    assert_ne!(
        requests[0].delivery(),
        requests[1].delivery(),
        "not retried"
    );
    let line = bitsd.wait_for_log("failed for good", PATIENCE).await;
    assert!(
        line.contains(&format!(
            "webhook h: delivery {} failed for good: 404 Not Found: no such hook",
            requests[0].delivery()
        )),
        "{line}"
    );
    assert!(!line.contains("second line"));
    no_more_than(&receiver, 2, Duration::from_millis(1200)).await;
    let metrics = common::get_text(format!("http://{}/metrics", bitsd.web)).await;
    for line in [
        "bitsd_webhook_deliveries_total{hook=\"h\",result=\"failed\"} 1",
        "bitsd_webhook_deliveries_total{hook=\"h\",result=\"delivered\"} 1",
        "bitsd_webhook_deliveries_total{hook=\"h\",result=\"retried\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
}

/// `bitsd --config CONFIG webhook test ARGS...`: exit code, stdout, stderr.
fn webhook_test(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = bitsd_command()
        .arg("--config")
        .arg(config)
        .args(["webhook", "test"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn webhook_test_sends_one_delivery_per_hook_and_prints_each_answer() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(200), Reply::Body(500, "boom\nmore")]);
    let refused = Receiver::start().await.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let hooks = format!(
        "[[webhook]]\nname = \"ok\"\nurl = \"{}\"\nsecret = \"k\"\n\n\
         [[webhook]]\nname = \"bad\"\nformat = \"slack\"\nurl = \"{}\"\n\n\
         [[webhook]]\nname = \"down\"\nurl = \"http://{refused}/\"\n",
        receiver.url("/json"),
        receiver.url("/slack"),
    );
    let config = config_file(dir.path(), &hooks);
    let path = config.clone();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || webhook_test(&path, &[]))
        .await
        .unwrap();
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], "ok: 200 OK: ok");
    assert_eq!(lines[1], "bad: 500 Internal Server Error: boom");
    assert!(lines[2].starts_with("down: "), "{stdout}");
    assert!(stderr.contains("2 of 3 webhook(s) failed"), "{stderr}");
    let requests = receiver.requests();
    let json = &requests[0];
    assert_eq!(
        json.json(),
        serde_json::json!({"event": "test", "space": "Lab 42", "url": "https://lab.example"})
    );
    assert_eq!(
        json.header("x-bits-signature").unwrap(),
        format!("sha256={}", hex_hmac("k", &json.body))
    );
    assert_eq!(
        requests[1].json(),
        serde_json::json!({"text": "test from bitsd for Lab 42"})
    );

    let path = config.clone();
    let (code, stdout, _) = tokio::task::spawn_blocking(move || webhook_test(&path, &["ok"]))
        .await
        .unwrap();
    assert_eq!((code, stdout.as_str()), (0, "ok: 200 OK: ok\n"));
    assert_eq!(receiver.requests().len(), 3);

    let (code, stdout, stderr) = webhook_test(&config, &["nope"]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert_eq!(
        stderr.trim_end(),
        "bitsd: no webhook named \"nope\"; the configured ones are: ok, bad, down"
    );
    let (code, _, stderr) = webhook_test(Path::new("/dev/null"), &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no [[webhook]] tables"), "{stderr}");
}
