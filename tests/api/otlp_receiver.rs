//! A small OTLP/HTTP trace receiver (CONTRACTS.md §8: no collector is packaged in Debian):
//! `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`, answered 200 with an empty
//! `ExportTraceServiceResponse`, as a collector does. Every span received is kept, flattened
//! to [`ReceivedSpan`] (ids as lowercase hex, attributes as text), in arrival order.
//!
//! Also [`Service`]: the real binary, spawned on a free port and owned by a guard that kills
//! it on drop, for tests that need its shutdown path (SIGTERM) or its environment.
//!
//! The server is actix-web with one worker on the test's runtime; the state sits behind a
//! std `Mutex` never held across an `.await`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;

use crate::helpers::*;

/// One span as the receiver got it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    pub name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// OTLP `SpanKind`: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub start_unix_nano: u64,
    pub attributes: BTreeMap<String, String>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// The resource's `service.name`.
    pub service: String,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// `self`'s children among `spans`, in start order.
    pub fn children<'a>(&self, spans: &'a [ReceivedSpan]) -> Vec<&'a ReceivedSpan> {
        let mut out: Vec<_> = spans
            .iter()
            .filter(|s| {
                s.trace_id == self.trace_id && s.parent_span_id.as_ref() == Some(&self.span_id)
            })
            .collect();
        out.sort_by_key(|s| s.start_unix_nano);
        out
    }
}

/// The names under `root`, indented two spaces a level, children in start order:
/// `"delivery\n  incident\n    guards\n"`, for asserting a whole tree at once.
pub fn tree(spans: &[ReceivedSpan], root: &ReceivedSpan) -> String {
    fn walk(spans: &[ReceivedSpan], s: &ReceivedSpan, depth: usize, out: &mut String) {
        out.push_str(&"  ".repeat(depth));
        out.push_str(&s.name);
        out.push('\n');
        for c in s.children(spans) {
            walk(spans, c, depth + 1, out);
        }
    }
    let mut out = String::new();
    walk(spans, root, 0, &mut out);
    out
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    requests: usize,
    /// Requests that did not decode, with why.
    bad: Vec<String>,
}

pub struct OtlpReceiver {
    addr: std::net::SocketAddr,
    handle: ServerHandle,
    received: Arc<Mutex<Received>>,
}

impl OtlpReceiver {
    /// Listens on 127.0.0.1, port 0, on the current tokio runtime.
    pub fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the OTLP receiver");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let state = web::Data::new(received.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(64 << 20))
                .route("/v1/traces", web::post().to(export))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .expect("serve the OTLP receiver")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        OtlpReceiver {
            addr,
            handle,
            received,
        }
    }

    /// For `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter adds `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }

    pub fn named(&self, name: &str) -> Vec<ReceivedSpan> {
        self.lock()
            .spans
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    /// Export requests received so far (decoded or not).
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Waits until `ready` holds for the spans received, for at most `secs` seconds; returns
    /// them. Fails on a request that did not decode.
    pub async fn wait_for(
        &self,
        secs: u64,
        what: &str,
        ready: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        eventually(secs, what, || async {
            let r = self.lock();
            assert!(r.bad.is_empty(), "undecodable OTLP requests: {:?}", r.bad);
            ready(&r.spans).then(|| r.spans.clone())
        })
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        // stop() sends its command at once; the returned future only waits for it.
        let _stopping = self.handle.stop(false);
    }
}

async fn export(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<Received>>>,
) -> HttpResponse {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let decoded = if content_type.starts_with("application/x-protobuf") {
        ExportTraceServiceRequest::decode(body.as_ref()).map_err(|e| e.to_string())
    } else {
        Err(format!(
            "content-type {content_type:?}: only http/protobuf is expected"
        ))
    };
    let mut r = state.lock().unwrap_or_else(|p| p.into_inner());
    r.requests += 1;
    match decoded {
        Ok(request) => {
            r.spans.extend(flatten(request));
            HttpResponse::Ok()
                .content_type("application/x-protobuf")
                .body(ExportTraceServiceResponse::default().encode_to_vec())
        }
        Err(why) => {
            r.bad.push(why.clone());
            HttpResponse::BadRequest().body(why)
        }
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    name: s.name,
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: (!s.parent_span_id.is_empty())
                        .then(|| hex::encode(&s.parent_span_id)),
                    kind: s.kind,
                    start_unix_nano: s.start_time_unix_nano,
                    attributes: attributes(&s.attributes),
                    status_code: s.status.map(|st| st.code).unwrap_or(0),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// `remediator serve` as a child process, killed when dropped.
pub struct Service {
    child: Child,
    pub base: String,
    pub data: tempfile::TempDir,
    log: PathBuf,
}

impl Service {
    /// Serves on a free port with the shipped rules and no Docker project, its stderr kept
    /// in a file ([`Service::log`]). `env` comes on top of a cleared OTEL_*/RUST_LOG set.
    pub fn spawn(env: &[(&str, &str)]) -> Service {
        let data = tempfile::tempdir().unwrap();
        let log = data.path().join("stderr.log");
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_remediator"));
        cmd.current_dir(repo())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") || k == "RUST_LOG" || k.starts_with("REMEDIATOR_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("REMEDIATOR_WEBHOOK_TOKEN", TOKEN);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Service {
            child: cmd.spawn().expect("start remediator"),
            base: format!("http://127.0.0.1:{port}"),
            data,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn wait_healthy(&self, client: &reqwest::Client) {
        eventually(20, "service up", || async {
            client
                .get(format!("{}/-/healthy", self.base))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        })
        .await;
    }

    /// The names of the process's threads (`/proc/PID/task/*/comm`, 15 characters at most).
    pub fn threads(&self) -> Vec<String> {
        let dir = format!("/proc/{}/task", self.pid());
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .map(|c| c.trim().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends SIGTERM, as systemd and `docker stop` do.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to exit, for at most `secs` seconds.
    pub async fn exited(&mut self, secs: u64) -> ExitStatus {
        let child = &mut self.child;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = child.try_wait().expect("wait for remediator") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "remediator did not exit within {secs}s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the service wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
