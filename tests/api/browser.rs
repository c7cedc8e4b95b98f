//! A real headless browser for the tests: Debian's chromium under a [`ChildGuard`], driven
//! over the Chrome DevTools protocol (a websocket, JSON messages) so that a test can load a
//! page, read what the console and the page's scripts reported (`Runtime.consoleAPICalled`,
//! `Runtime.exceptionThrown`, `Log.entryAdded`) and evaluate the DOM as it rendered.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{eventually, tool, ChildGuard};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A headless chromium with one page attached.
pub struct Browser {
    socket: Socket,
    session: String,
    next_id: u64,
    /// Every event of the page's session seen so far (method and params).
    pub events: Vec<Value>,
    _profile: tempfile::TempDir,
    _process: ChildGuard,
}

impl Browser {
    /// Starts chromium with a fresh profile, no network of its own (no updates, sync or
    /// QUIC), and attaches to a blank page with the runtime, log and page domains on.
    pub async fn start() -> Browser {
        let bin = tool("REMEDIATOR_TEST_CHROMIUM_BIN", "chromium");
        let profile = tempfile::tempdir().unwrap();
        let process = ChildGuard::spawn(
            Command::new(bin).args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ]),
            "chromium",
        );
        // With port 0 chromium picks one and writes it, and the browser's path, here.
        let port_file: PathBuf = profile.path().join("DevToolsActivePort");
        let (port, path) = eventually(30, "chromium's DevToolsActivePort", || async {
            let text = std::fs::read_to_string(&port_file).ok()?;
            let mut lines = text.lines();
            let port = lines.next()?.trim().parse::<u16>().ok()?;
            let path = lines.next()?.trim().to_owned();
            Some((port, path))
        })
        .await;
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}"))
            .await
            .expect("connect to chromium's DevTools websocket");
        let mut b = Browser {
            socket,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
            _process: process,
        };
        let target = b
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = b
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        b.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.page_call(domain, json!({})).await;
        }
        b
    }

    /// Sends a command (to the page's session when given) and returns its result; events
    /// that arrive meanwhile are kept in [`Browser::events`].
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.socket
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to chromium");
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let v = self.read().await;
                if v["id"] == id {
                    return v;
                }
                self.events.push(v);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("chromium did not answer {method} within 30s"));
        assert!(
            answer.get("error").is_none(),
            "{method} failed: {}",
            answer["error"]
        );
        answer["result"].clone()
    }

    async fn read(&mut self) -> Value {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("chromium's websocket: {e}"),
                None => panic!("chromium closed its websocket"),
            }
        }
    }

    pub async fn page_call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params).await
    }

    /// Loads `url` and waits for its load event (redirects followed).
    pub async fn open(&mut self, url: &str) {
        let before = self.events.len();
        let nav = self.page_call("Page.navigate", json!({"url": url})).await;
        assert!(
            nav.get("errorText").is_none(),
            "navigating to {url}: {}",
            nav["errorText"]
        );
        let loaded = |events: &[Value]| events.iter().any(|e| e["method"] == "Page.loadEventFired");
        tokio::time::timeout(Duration::from_secs(30), async {
            while !loaded(&self.events[before..]) {
                let v = self.read().await;
                self.events.push(v);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{url} did not load within 30s"));
    }

    /// Evaluates `expression` in the page and returns its value (JSON-serialisable).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .page_call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expression} threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// What the page reported as wrong: console errors and warnings, uncaught exceptions,
    /// and the browser's own log errors (a resource that failed to load, a CSP violation).
    pub fn problems(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e["method"].as_str()? {
                "Runtime.consoleAPICalled"
                    if ["error", "warning", "assert"].contains(&e["params"]["type"].as_str()?) =>
                {
                    Some(format!("console: {}", e["params"]["args"]))
                }
                "Runtime.exceptionThrown" => {
                    Some(format!("exception: {}", e["params"]["exceptionDetails"]))
                }
                "Log.entryAdded"
                    if ["error", "warning"].contains(&e["params"]["entry"]["level"].as_str()?) =>
                {
                    Some(format!("log: {}", e["params"]["entry"]))
                }
                _ => None,
            })
            .collect()
    }
}
