//! Local emulators of the Slack Web API and the PagerDuty Events API v2, answering as their
//! documentation says (CONTRACTS.md §2, §4), for tests that must not reach the SaaS.
//!
//! - [`SlackEmulator`]: `chat.postMessage`, `chat.update`, `users.lookupByEmail`,
//!   `conversations.list` (paged with `limit` and `cursor`, `types`, `exclude_archived`, the
//!   scopes each type needs), `conversations.history` and `conversations.replies` under
//!   `{url}/METHOD`; errors are HTTP 200 `{"ok": false, "error": …}`, rate limits HTTP 429
//!   with `Retry-After`. As Slack does, `chat.postMessage` takes a channel's name or ID and
//!   every other method only its ID. Interactions' `response_url`s
//!   ([`SlackEmulator::response_url`]) take what an app answers a user with: a JSON body with
//!   `text` or `blocks`, `response_type` `ephemeral` (the default) or `in_channel`, and
//!   `replace_original` / `delete_original`; each URL at most 5 times.
//! - [`PagerDutyEmulator`]: `POST /v2/enqueue`; 202 / 400 / 429 as documented.
//!
//! Both record every accepted request in order, take injected faults (`fail_next`), and can
//! `go_down()` (connection refused) and `come_back()` on the same port.
//!
//! Each emulator runs an actix-web server (one worker) spawned on the test's tokio runtime;
//! state sits behind a std `Mutex` that is never held across an `.await`.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{http::Method, web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Map, Value};

/// The bot token the Slack emulator accepts unless told otherwise.
pub const SLACK_TOKEN: &str = "xoxb-1111111111-2222222222222-EmulatorToken000";
/// A channel the bot is a member of, known from the start.
pub const SLACK_CHANNEL: &str = "C0INCIDENT1";
/// A 32-character routing key (the emulator accepts any 32-character key).
pub const PD_ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";

const BOT_USER: &str = "U0BOTUSER1";
const BOT_ID: &str = "B0BOTID001";
const APP_ID: &str = "A0APPID001";
const TEAM: &str = "T0EMULATE1";
/// ts of the first message: `1700000000.000100`; each next one is 100 µs later.
const FIRST_TS_MICROS: u64 = 1_700_000_000_000_100;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection an emulator holds open: counted in when actix accepts it, out when actix drops
/// it (it lives in the connection's extensions), so `go_down` can see that none is left.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `configure` on `listener` with one worker, spawned on the current tokio runtime;
/// `open` counts the connections it holds.
fn serve<F>(
    listener: TcpListener,
    open: Arc<AtomicUsize>,
    configure: F,
) -> std::io::Result<ServerHandle>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let server = HttpServer::new(move || App::new().configure(configure.clone()))
        .workers(1)
        // No keep-alive: a client never holds a pooled connection that outlives `go_down`.
        .keep_alive(actix_web::http::KeepAlive::Disabled)
        .on_connect(move |_, extensions| {
            open.fetch_add(1, Ordering::SeqCst);
            extensions.insert(Counted(open.clone()));
        })
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)?
        .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(handle)
}

/// Binds `addr` again after a `go_down` (std sets SO_REUSEADDR, so TIME_WAIT does not block).
async fn rebind(addr: SocketAddr) -> TcpListener {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("emulator cannot listen on {addr} again: {last:?}");
}

/// Routes and state of one emulator, served again by [`Listening::up`].
type Configure = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// The start/stop part both emulators share.
struct Listening {
    addr: SocketAddr,
    handle: Mutex<Option<ServerHandle>>,
    /// Connections the server holds open.
    open: Arc<AtomicUsize>,
    configure: Configure,
}

impl Listening {
    /// Listens on 127.0.0.1 (port 0) and serves `configure`.
    fn start(what: &str, configure: Configure) -> Listening {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind the {what}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{what} address: {e}"));
        let listening = Listening {
            addr,
            handle: Mutex::new(None),
            open: Arc::default(),
            configure,
        };
        listening.serve(listener);
        listening
    }

    fn serve(&self, listener: TcpListener) {
        let configure = self.configure.clone();
        let handle = serve(listener, self.open.clone(), move |cfg| configure(cfg))
            .expect("start an emulator");
        *lock(&self.handle) = Some(handle);
    }

    /// Listens again on the same port (the state lives in `configure`).
    async fn up(&self) {
        if lock(&self.handle).is_some() {
            return;
        }
        let listener = rebind(self.addr).await;
        self.serve(listener);
    }

    /// Down means down: `stop` returns before the worker has dropped its open connections, so
    /// wait until a new connection is refused and no connection is left open (a pooled client
    /// could still be answered on one), failing the test if that takes more than 5 s.
    async fn down(&self) {
        let handle = lock(&self.handle).take();
        if let Some(handle) = handle {
            handle.stop(false).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let refused = tokio::net::TcpStream::connect(self.addr).await.is_err();
            let open = self.open.load(Ordering::SeqCst);
            if refused && open == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the emulator on {} is not down after 5s: {}",
                self.addr,
                if refused {
                    format!("{open} connections still open")
                } else {
                    "it still accepts connections".to_string()
                }
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(handle) = lock(&self.handle).take() {
            // stop() sends its command at once; the returned future only waits for it.
            let _stopping = handle.stop(false);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Slack
// ---------------------------------------------------------------------------------------

/// A message as the emulator holds it (or, in [`SlackEmulator::updates`], as an update
/// call carried it).
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub text: String,
    pub blocks: Option<Value>,
    /// Message metadata (`{event_type, event_payload}`), as chat.postMessage accepts it.
    pub metadata: Option<Value>,
}

/// One API call and how the emulator answered it (`"ok"`, an error code, `"http 429"`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub outcome: String,
}

/// What the next request(s) get instead of a normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 429, `Retry-After: {retry_after_secs}`, body `{"ok":false,"error":"ratelimited"}`.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 500 with an HTML body.
    ServerError,
    /// HTTP 200 `{"ok":false,"error":CODE}`.
    OkFalse(&'static str),
    /// The request is carried out (and recorded) as usual, then the answer is held back this
    /// long: what a client that times out sees when Slack did post the message.
    Slow(Duration),
}

/// How the bot relates to a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Member,
    NotMember,
    Archived,
}

/// A channel with a name, as `conversations.list` shows it, in the order they were added.
#[derive(Debug, Clone)]
struct Named {
    id: String,
    name: String,
    private: bool,
}

struct SlackState {
    token: String,
    channels: HashMap<String, Channel>,
    named: Vec<Named>,
    /// The OAuth scopes the token has (`conversations.list` checks them).
    scopes: Vec<String>,
    /// Faults for one method only, taken before the general ones.
    method_faults: Vec<(String, Fault)>,
    users: HashMap<String, String>,
    next_ts: u64,
    messages: Vec<Recorded>,
    updates: Vec<Recorded>,
    calls: Vec<Call>,
    faults: VecDeque<Fault>,
    /// What was posted to interactions' `response_url`s: (the URL's id, the body).
    responses: Vec<(String, Value)>,
    next_response_url: u64,
}

/// The Slack Web API on 127.0.0.1; see the module docs.
pub struct SlackEmulator {
    state: web::Data<Mutex<SlackState>>,
    listening: Listening,
}

impl SlackEmulator {
    /// Listens on 127.0.0.1 (port 0); accepts [`SLACK_TOKEN`]; knows [`SLACK_CHANNEL`].
    pub async fn start() -> SlackEmulator {
        let state = web::Data::new(Mutex::new(SlackState {
            token: SLACK_TOKEN.into(),
            channels: HashMap::from([(SLACK_CHANNEL.to_owned(), Channel::Member)]),
            named: Vec::new(),
            scopes: [
                "chat:write",
                "users:read.email",
                "channels:read",
                "groups:read",
                "channels:history",
                "groups:history",
            ]
            .map(String::from)
            .to_vec(),
            method_faults: Vec::new(),
            users: HashMap::new(),
            next_ts: FIRST_TS_MICROS,
            messages: Vec::new(),
            updates: Vec::new(),
            calls: Vec::new(),
            faults: VecDeque::new(),
            responses: Vec::new(),
            next_response_url: 1,
        }));
        let routes = state.clone();
        let listening = Listening::start(
            "Slack emulator",
            Arc::new(move |cfg| {
                cfg.app_data(routes.clone())
                    .app_data(web::PayloadConfig::new(4 << 20))
                    .route("/api/{method}", web::route().to(slack_handler))
                    .route(
                        "/actions/{team}/{id}/{secret}",
                        web::post().to(response_url_handler),
                    );
            }),
        );
        SlackEmulator { state, listening }
    }

    /// The API base URL, e.g. `http://127.0.0.1:PORT/api`.
    pub fn url(&self) -> String {
        format!("http://{}/api", self.listening.addr)
    }

    /// A fresh `response_url` for an interaction, as Slack puts in its payload
    /// (`…/actions/TEAM/ID/SECRET`).
    pub fn response_url(&self) -> String {
        let mut s = lock(&self.state);
        let n = s.next_response_url;
        s.next_response_url += 1;
        format!(
            "http://{}/actions/{TEAM}/{n}/s3cr3t{n}",
            self.listening.addr
        )
    }

    /// What was posted to the `response_url` `url` (every one when `None`), in order.
    pub fn responses(&self, url: Option<&str>) -> Vec<Value> {
        let id = url.map(response_id);
        lock(&self.state)
            .responses
            .iter()
            .filter(|(r, _)| id.as_ref().is_none_or(|i| i == r))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Replaces the accepted bot token.
    pub fn set_token(&self, token: &str) {
        lock(&self.state).token = token.into();
    }

    /// A channel the bot is a member of.
    pub fn add_channel(&self, id: &str) {
        lock(&self.state)
            .channels
            .insert(id.into(), Channel::Member);
    }

    /// A channel the bot is not in: posting answers `not_in_channel`.
    pub fn add_channel_without_bot(&self, id: &str) {
        lock(&self.state)
            .channels
            .insert(id.into(), Channel::NotMember);
    }

    /// A public channel called `name` (no `#`) with ID `id`, the bot a member.
    pub fn add_named_channel(&self, name: &str, id: &str) {
        let mut s = lock(&self.state);
        s.channels.insert(id.into(), Channel::Member);
        s.named.push(Named {
            id: id.into(),
            name: name.into(),
            private: false,
        });
    }

    /// A private channel called `name`: listed only with `groups:read`.
    pub fn add_private_channel(&self, name: &str, id: &str) {
        let mut s = lock(&self.state);
        s.channels.insert(id.into(), Channel::Member);
        s.named.push(Named {
            id: id.into(),
            name: name.into(),
            private: true,
        });
    }

    /// The token loses an OAuth scope (`groups:read`, …).
    pub fn remove_scope(&self, scope: &str) {
        lock(&self.state).scopes.retain(|s| s != scope);
    }

    /// The token gets a scope back.
    pub fn add_scope(&self, scope: &str) {
        lock(&self.state).scopes.push(scope.into());
    }

    /// The next `n` calls of `method` get `fault` (calls of other methods are answered).
    pub fn fail_method(&self, method: &str, n: usize, fault: Fault) {
        let mut s = lock(&self.state);
        for _ in 0..n {
            s.method_faults.push((method.into(), fault.clone()));
        }
    }

    /// An archived channel: posting answers `is_archived`.
    pub fn archive_channel(&self, id: &str) {
        lock(&self.state)
            .channels
            .insert(id.into(), Channel::Archived);
    }

    /// A workspace user that `users.lookupByEmail` finds (e-mail compared case-insensitively).
    pub fn add_user(&self, email: &str, user_id: &str) {
        lock(&self.state)
            .users
            .insert(email.to_lowercase(), user_id.into());
    }

    /// The next `n` requests (any method) get `fault`, after any faults already queued.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut state = lock(&self.state);
        for _ in 0..n {
            state.faults.push_back(fault.clone());
        }
    }

    /// Every message posted, in order, with its current text and blocks.
    pub fn messages(&self) -> Vec<Recorded> {
        lock(&self.state).messages.clone()
    }

    /// The replies to the root message `root_ts`, in order.
    pub fn thread(&self, root_ts: &str) -> Vec<Recorded> {
        lock(&self.state)
            .messages
            .iter()
            .filter(|m| m.thread_ts.as_deref() == Some(root_ts))
            .cloned()
            .collect()
    }

    /// Every accepted `chat.update`, in order, as the call carried it (`thread_ts` is the
    /// updated message's).
    pub fn updates(&self) -> Vec<Recorded> {
        lock(&self.state).updates.clone()
    }

    /// Every request, in order, with its outcome.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// Stops listening: connections are refused until [`SlackEmulator::come_back`].
    pub async fn go_down(&self) {
        self.listening.down().await;
    }

    /// Listens again on the same port, with the same state.
    pub async fn come_back(&self) {
        self.listening.up().await;
    }
}

/// `TEAM/ID/SECRET` of a `response_url`.
fn response_id(url: &str) -> String {
    url.split("/actions/").nth(1).unwrap_or_default().to_owned()
}

/// A `response_url`: JSON with `text` or `blocks`; `response_type` `ephemeral` or
/// `in_channel`; each URL used at most 5 times (`used_url` after that).
async fn response_url_handler(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<SlackState>>,
) -> HttpResponse {
    let id = response_id(&req.uri().to_string());
    let Ok(Value::Object(args)) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().json(json!({ "ok": false, "error": "invalid_payload" }));
    };
    let text = args.get("text").and_then(Value::as_str).unwrap_or_default();
    if text.is_empty() && args.get("blocks").is_none_or(Value::is_null) {
        return HttpResponse::Ok().json(json!({ "ok": false, "error": "no_text" }));
    }
    match args.get("response_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "ephemeral" || t == "in_channel" => {}
        Some(_) => {
            return HttpResponse::Ok()
                .json(json!({ "ok": false, "error": "invalid_response_type" }))
        }
    }
    let mut s = lock(&state);
    if s.responses.iter().filter(|(r, _)| *r == id).count() >= 5 {
        return HttpResponse::Ok().json(json!({ "ok": false, "error": "used_url" }));
    }
    s.responses.push((id, Value::Object(args)));
    HttpResponse::Ok().json(json!({ "ok": true }))
}

fn slack_ok(mut body: Value, missing_charset: bool) -> HttpResponse {
    body["ok"] = Value::Bool(true);
    if missing_charset {
        body["warning"] = json!("missing_charset");
        body["response_metadata"] = json!({ "warnings": ["missing_charset"] });
    }
    HttpResponse::Ok().json(body)
}

fn slack_error(code: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": false, "error": code }))
}

async fn slack_handler(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<SlackState>>,
) -> HttpResponse {
    let method = req
        .match_info()
        .get("method")
        .unwrap_or_default()
        .to_owned();
    let fault = {
        let mut s = lock(&state);
        match s.method_faults.iter().position(|(m, _)| *m == method) {
            Some(i) => Some(s.method_faults.remove(i).1),
            None => s.faults.pop_front(),
        }
    };
    let record = |outcome: &str| {
        lock(&state).calls.push(Call {
            method: method.clone(),
            outcome: outcome.into(),
        });
    };
    let mut delay = None;
    match fault {
        Some(Fault::RateLimited { retry_after_secs }) => {
            record("http 429");
            return HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", retry_after_secs.to_string()))
                .json(json!({ "ok": false, "error": "ratelimited" }));
        }
        Some(Fault::ServerError) => {
            record("http 500");
            return HttpResponse::InternalServerError()
                .content_type("text/html")
                .body("<html><body><h1>500 Internal Server Error</h1></body></html>");
        }
        Some(Fault::OkFalse(code)) => {
            record(code);
            return slack_error(code);
        }
        Some(Fault::Slow(d)) => delay = Some(d),
        None => {}
    }
    let (outcome, response) = match slack_request(&req, &body) {
        Err(code) => (code.to_owned(), slack_error(code)),
        Ok(request) => {
            let answer = {
                let mut s = lock(&state);
                match request.token.as_deref() {
                    None | Some("") => Err("not_authed"),
                    Some(t) if t != s.token => Err("invalid_auth"),
                    Some(_) => slack_method(&mut s, &method, &request.args),
                }
            };
            match answer {
                Ok(body) => ("ok".to_owned(), slack_ok(body, request.missing_charset)),
                Err(code) => (code.to_owned(), slack_error(code)),
            }
        }
    };
    record(&outcome);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    response
}

struct SlackRequest {
    args: Map<String, Value>,
    token: Option<String>,
    missing_charset: bool,
}

/// Arguments from the query string and the body (JSON or form), and the token: the
/// `Authorization: Bearer` header, or a `token` argument in a query or form (never in JSON).
fn slack_request(req: &HttpRequest, body: &[u8]) -> Result<SlackRequest, &'static str> {
    let mut args = Map::new();
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(req.query_string()).map_err(|_| "invalid_arguments")?;
    for (k, v) in query {
        args.insert(k, Value::String(v));
    }
    let mut missing_charset = false;
    let mut form_token = args.get("token").cloned();
    if req.method() == Method::POST && !body.is_empty() {
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("application/json") {
            let value: Value = serde_json::from_slice(body).map_err(|_| "invalid_json")?;
            let Value::Object(map) = value else {
                return Err("json_not_object");
            };
            missing_charset = !content_type.contains("charset");
            for (k, v) in map {
                if k != "token" {
                    args.insert(k, v);
                }
            }
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            let form: Vec<(String, String)> =
                serde_urlencoded::from_bytes(body).map_err(|_| "invalid_form_data")?;
            for (k, v) in form {
                args.insert(k, Value::String(v));
            }
            form_token = args.get("token").cloned();
        } else {
            return Err("invalid_post_type");
        }
    }
    let header_token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let token = header_token.or_else(|| form_token.and_then(|t| t.as_str().map(str::to_owned)));
    Ok(SlackRequest {
        args,
        token,
        missing_charset,
    })
}

fn str_arg<'a>(args: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    args.get(name).and_then(Value::as_str)
}

/// `blocks` as a JSON array (form posts carry it as a JSON string), or `invalid_blocks`.
fn blocks_arg(args: &Map<String, Value>) -> Result<Option<Value>, &'static str> {
    let blocks = match args.get("blocks") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => {
            serde_json::from_str::<Value>(s).map_err(|_| "invalid_blocks_format")?
        }
        Some(v) => v.clone(),
    };
    let Value::Array(items) = &blocks else {
        return Err("invalid_blocks_format");
    };
    if items.is_empty() {
        return Ok(None);
    }
    let valid = items.len() <= 50
        && items
            .iter()
            .all(|b| b.get("type").and_then(Value::as_str).is_some());
    if valid {
        Ok(Some(blocks))
    } else {
        Err("invalid_blocks")
    }
}

fn check_channel<'a>(s: &SlackState, channel: Option<&'a str>) -> Result<&'a str, &'static str> {
    let channel = channel.unwrap_or_default();
    match s.channels.get(channel) {
        None => Err("channel_not_found"),
        Some(Channel::NotMember) => Err("not_in_channel"),
        Some(Channel::Archived) => Err("is_archived"),
        Some(Channel::Member) => Ok(channel),
    }
}

fn message_json(m: &Recorded) -> Value {
    let mut message = json!({
        "type": "message",
        "user": BOT_USER,
        "bot_id": BOT_ID,
        "app_id": APP_ID,
        "team": TEAM,
        "text": m.text,
        "ts": m.ts,
    });
    if let Some(blocks) = &m.blocks {
        message["blocks"] = blocks.clone();
    }
    if let Some(thread_ts) = &m.thread_ts {
        message["thread_ts"] = json!(thread_ts);
        message["parent_user_id"] = json!(BOT_USER);
    }
    if let Some(metadata) = &m.metadata {
        message["metadata"] = metadata.clone();
    }
    message
}

fn slack_method(
    s: &mut SlackState,
    method: &str,
    args: &Map<String, Value>,
) -> Result<Value, &'static str> {
    match method {
        "chat.postMessage" => {
            // A name is accepted here (and only here), and answered with the channel's ID.
            let given = str_arg(args, "channel").unwrap_or_default();
            let by_name = s
                .named
                .iter()
                .find(|n| n.name == given.trim_start_matches('#'))
                .map(|n| n.id.clone());
            let channel = check_channel(s, Some(by_name.as_deref().unwrap_or(given)))?.to_owned();
            let text = str_arg(args, "text").unwrap_or_default().to_owned();
            let blocks = blocks_arg(args)?;
            if text.is_empty() && blocks.is_none() {
                return Err("no_text");
            }
            if text.chars().count() > 40_000 {
                return Err("msg_too_long");
            }
            let thread_ts = str_arg(args, "thread_ts")
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if let Some(root) = &thread_ts {
                let is_root = s
                    .messages
                    .iter()
                    .any(|m| m.channel == channel && &m.ts == root && m.thread_ts.is_none());
                if !is_root {
                    return Err("thread_not_found");
                }
            }
            let micros = s.next_ts;
            s.next_ts += 100;
            let ts = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
            let message = Recorded {
                channel: channel.clone(),
                ts: ts.clone(),
                thread_ts,
                text,
                blocks,
                metadata: args.get("metadata").cloned().filter(|m| !m.is_null()),
            };
            let body = json!({ "channel": channel, "ts": ts, "message": message_json(&message) });
            s.messages.push(message);
            Ok(body)
        }
        "chat.update" => {
            let channel = check_channel(s, str_arg(args, "channel"))?.to_owned();
            let ts = str_arg(args, "ts").unwrap_or_default().to_owned();
            let text = str_arg(args, "text").map(str::to_owned);
            let blocks = blocks_arg(args)?;
            if text.as_deref().unwrap_or_default().is_empty() && blocks.is_none() {
                return Err("no_text");
            }
            if text.as_deref().unwrap_or_default().chars().count() > 40_000 {
                return Err("msg_too_long");
            }
            let Some(message) = s
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts)
            else {
                return Err("message_not_found");
            };
            if let Some(text) = &text {
                message.text = text.clone();
            }
            if blocks.is_some() {
                message.blocks = blocks.clone();
            }
            let body = json!({
                "channel": channel,
                "ts": ts,
                "text": message.text,
                "message": message_json(message),
            });
            let update = Recorded {
                channel,
                ts,
                thread_ts: message.thread_ts.clone(),
                text: text.unwrap_or_default(),
                blocks,
                metadata: None,
            };
            s.updates.push(update);
            Ok(body)
        }
        // The root and its replies, oldest first (metadata only with include_all_metadata).
        "conversations.replies" => {
            let channel = check_channel(s, str_arg(args, "channel"))?.to_owned();
            let root = str_arg(args, "ts").unwrap_or_default().to_owned();
            let with_meta = str_arg(args, "include_all_metadata") == Some("true");
            let found: Vec<Value> = s
                .messages
                .iter()
                .filter(|m| {
                    m.channel == channel
                        && (m.ts == root || m.thread_ts.as_deref() == Some(root.as_str()))
                })
                .map(|m| {
                    let mut v = message_json(m);
                    if !with_meta {
                        v.as_object_mut().map(|o| o.remove("metadata"));
                    }
                    v
                })
                .collect();
            if found.is_empty() {
                return Err("thread_not_found");
            }
            Ok(json!({ "messages": found, "has_more": false }))
        }
        // Channel messages (not replies), newest first.
        "conversations.history" => {
            let channel = check_channel(s, str_arg(args, "channel"))?.to_owned();
            let with_meta = str_arg(args, "include_all_metadata") == Some("true");
            let found: Vec<Value> = s
                .messages
                .iter()
                .rev()
                .filter(|m| m.channel == channel && m.thread_ts.is_none())
                .map(|m| {
                    let mut v = message_json(m);
                    if !with_meta {
                        v.as_object_mut().map(|o| o.remove("metadata"));
                    }
                    v
                })
                .collect();
            Ok(json!({ "messages": found, "has_more": false }))
        }
        "conversations.list" => conversations_list(s, args),
        "users.lookupByEmail" => {
            let email = str_arg(args, "email").unwrap_or_default().trim();
            if email.is_empty() {
                return Err("invalid_arguments");
            }
            let Some(id) = s.users.get(&email.to_lowercase()) else {
                return Err("users_not_found");
            };
            Ok(json!({ "user": {
                "id": id,
                "team_id": TEAM,
                "name": email.split('@').next().unwrap_or_default(),
                "deleted": false,
                "is_bot": false,
                "profile": { "email": email },
            } }))
        }
        _ => Err("unknown_method"),
    }
}

/// `conversations.list`: the channels of the asked `types` (default `public_channel`;
/// `private_channel` needs `groups:read`, `public_channel` `channels:read`), archived ones
/// left out with `exclude_archived=true`, `limit` a page (default 100, at most 1000), the
/// next page's `cursor` in `response_metadata.next_cursor` (`""` on the last page).
fn conversations_list(s: &SlackState, args: &Map<String, Value>) -> Result<Value, &'static str> {
    let types = str_arg(args, "types").unwrap_or("public_channel");
    let (mut public, mut private) = (false, false);
    for t in types.split(',').map(str::trim) {
        match t {
            "public_channel" => public = true,
            "private_channel" => private = true,
            "mpim" | "im" => {}
            _ => return Err("invalid_types"),
        }
    }
    let has = |scope: &str| s.scopes.iter().any(|x| x == scope);
    if (public && !has("channels:read")) || (private && !has("groups:read")) {
        return Err("missing_scope");
    }
    let limit = match str_arg(args, "limit") {
        None => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err("invalid_limit"),
        },
    };
    let start = match str_arg(args, "cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => c
            .strip_prefix("dGVhbTpD")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or("invalid_cursor")?,
    };
    let exclude_archived = str_arg(args, "exclude_archived") == Some("true");
    let listed: Vec<&Named> = s
        .named
        .iter()
        .filter(|n| if n.private { private } else { public })
        .filter(|n| !(exclude_archived && s.channels.get(&n.id) == Some(&Channel::Archived)))
        .collect();
    if start > listed.len() {
        return Err("invalid_cursor");
    }
    let page: Vec<Value> = listed
        .iter()
        .skip(start)
        .take(limit)
        .map(|n| {
            let state = s.channels.get(&n.id).copied();
            json!({
                "id": n.id,
                "name": n.name,
                "is_channel": !n.private,
                "is_group": n.private,
                "is_private": n.private,
                "is_archived": state == Some(Channel::Archived),
                "is_member": state == Some(Channel::Member),
                "created": 1_600_000_000,
            })
        })
        .collect();
    let next = start + page.len();
    let next_cursor = if next < listed.len() {
        format!("dGVhbTpD{next}")
    } else {
        String::new()
    };
    Ok(json!({ "channels": page, "response_metadata": { "next_cursor": next_cursor } }))
}

// ---------------------------------------------------------------------------------------
// PagerDuty
// ---------------------------------------------------------------------------------------

/// An event PagerDuty accepted (202), in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub struct PdEvent {
    pub routing_key: String,
    pub event_action: String,
    /// As sent, or the one PagerDuty generated for a trigger without one.
    pub dedup_key: String,
    pub payload: Option<Value>,
    /// The whole request body.
    pub body: Value,
}

/// The state of the alert a dedup key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Triggered,
    Acknowledged,
    Resolved,
}

/// What the next request(s) get instead of a normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PdFault {
    /// HTTP 429 "Request Limit Exceeded"; the event is not ingested.
    RateLimited,
    /// HTTP 500.
    ServerError,
    /// HTTP 400 `invalid event` with this error, whatever the event.
    Rejected(&'static str),
    /// Processed as usual, then answered this much later.
    Slow(Duration),
}

struct PdState {
    events: Vec<PdEvent>,
    rejected: Vec<(Value, Vec<String>)>,
    alerts: HashMap<(String, String), AlertStatus>,
    faults: VecDeque<PdFault>,
    generated: u64,
}

/// The PagerDuty Events API v2 on 127.0.0.1; see the module docs.
pub struct PagerDutyEmulator {
    state: web::Data<Mutex<PdState>>,
    listening: Listening,
}

impl PagerDutyEmulator {
    /// Listens on 127.0.0.1 (port 0).
    pub async fn start() -> PagerDutyEmulator {
        let state = web::Data::new(Mutex::new(PdState {
            events: Vec::new(),
            rejected: Vec::new(),
            alerts: HashMap::new(),
            faults: VecDeque::new(),
            generated: 0,
        }));
        let routes = state.clone();
        let listening = Listening::start(
            "PagerDuty emulator",
            Arc::new(move |cfg| {
                cfg.app_data(routes.clone())
                    .app_data(web::PayloadConfig::new(4 << 20))
                    .route("/v2/enqueue", web::post().to(pd_handler));
            }),
        );
        PagerDutyEmulator { state, listening }
    }

    /// The events URL, `http://127.0.0.1:PORT/v2/enqueue`.
    pub fn url(&self) -> String {
        format!("http://{}/v2/enqueue", self.listening.addr)
    }

    /// The next `n` requests get `fault`, after any faults already queued.
    pub fn fail_next(&self, n: usize, fault: PdFault) {
        let mut state = lock(&self.state);
        for _ in 0..n {
            state.faults.push_back(fault.clone());
        }
    }

    /// Accepted events, in order.
    pub fn events(&self) -> Vec<PdEvent> {
        lock(&self.state).events.clone()
    }

    /// Rejected (400) bodies with their error strings, in order.
    pub fn rejected(&self) -> Vec<(Value, Vec<String>)> {
        lock(&self.state).rejected.clone()
    }

    /// The alert `dedup_key` names on `routing_key`, if a trigger ever opened one.
    pub fn alert(&self, routing_key: &str, dedup_key: &str) -> Option<AlertStatus> {
        lock(&self.state)
            .alerts
            .get(&(routing_key.to_owned(), dedup_key.to_owned()))
            .copied()
    }

    /// Stops listening: connections are refused until [`PagerDutyEmulator::come_back`].
    pub async fn go_down(&self) {
        self.listening.down().await;
    }

    /// Listens again on the same port, with the same state.
    pub async fn come_back(&self) {
        self.listening.up().await;
    }
}

async fn pd_handler(body: web::Bytes, state: web::Data<Mutex<PdState>>) -> HttpResponse {
    let fault = lock(&state).faults.pop_front();
    let mut delay = None;
    match fault {
        Some(PdFault::RateLimited) => {
            return HttpResponse::TooManyRequests().json(json!({
                "status": "throttle event",
                "message": "Requests for this service are arriving too quickly.  Please retry later.",
            }));
        }
        Some(PdFault::ServerError) => {
            return HttpResponse::InternalServerError()
                .content_type("text/html")
                .body("<html><body><h1>500 Internal Server Error</h1></body></html>");
        }
        Some(PdFault::Rejected(error)) => return pd_invalid(vec![error.to_owned()]),
        Some(PdFault::Slow(d)) => delay = Some(d),
        None => {}
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let response = match parsed.as_ref().map(pd_validate) {
        None => {
            let errors = vec!["Malformed JSON".to_owned()];
            lock(&state).rejected.push((
                Value::String(String::from_utf8_lossy(&body).into()),
                errors.clone(),
            ));
            pd_invalid(errors)
        }
        Some(Err(errors)) => {
            let value = parsed.clone().unwrap_or_default();
            lock(&state).rejected.push((value, errors.clone()));
            pd_invalid(errors)
        }
        Some(Ok(())) => {
            let body = parsed.unwrap_or_default();
            let dedup_key = pd_accept(&mut lock(&state), body);
            HttpResponse::Accepted().json(json!({
                "status": "success",
                "message": "Event processed",
                "dedup_key": dedup_key,
            }))
        }
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    response
}

fn pd_invalid(errors: Vec<String>) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({
        "status": "invalid event",
        "message": "Event object is invalid",
        "errors": errors,
    }))
}

fn non_blank<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// Every documented rule the event breaks, as PagerDuty lists them in `errors`.
fn pd_validate(event: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if !event.is_object() {
        return Err(vec!["Event object must be a JSON object".into()]);
    }
    match non_blank(event, "routing_key") {
        None => errors.push("'routing_key' is missing or blank".into()),
        Some(key) if key.chars().count() != 32 => {
            errors.push("Length of 'routing_key' is incorrect (should be 32 characters)".into())
        }
        Some(_) => {}
    }
    let action = non_blank(event, "event_action");
    match action {
        None => errors.push("'event_action' is missing or blank".into()),
        Some("trigger" | "acknowledge" | "resolve") => {}
        Some(_) => errors.push(
            "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)".into(),
        ),
    }
    match event.get("dedup_key") {
        None | Some(Value::Null) => {
            if matches!(action, Some("acknowledge" | "resolve")) {
                errors.push("'dedup_key' is missing or blank".into());
            }
        }
        Some(Value::String(key)) if key.chars().count() > 255 => {
            errors.push("'dedup_key' is too long (maximum 255 characters)".into())
        }
        Some(Value::String(key)) if key.is_empty() => {
            errors.push("'dedup_key' is missing or blank".into())
        }
        Some(Value::String(_)) => {}
        Some(_) => errors.push("'dedup_key' must be a string".into()),
    }
    if action == Some("trigger") {
        match event.get("payload") {
            Some(payload @ Value::Object(_)) => {
                match non_blank(payload, "summary") {
                    None => errors.push("'payload.summary' is missing or blank".into()),
                    Some(s) if s.chars().count() > 1024 => errors
                        .push("'payload.summary' is too long (maximum 1024 characters)".into()),
                    Some(_) => {}
                }
                if non_blank(payload, "source").is_none() {
                    errors.push("'payload.source' is missing or blank".into());
                }
                match payload.get("severity").and_then(Value::as_str) {
                    Some("critical" | "error" | "warning" | "info") => {}
                    None => errors.push("'payload.severity' is missing or blank".into()),
                    Some(_) => errors.push(
                        "'payload.severity' is invalid (must be one of: critical, error, \
                         warning, info)"
                            .into(),
                    ),
                }
            }
            _ => errors.push("'payload' is missing or not an object".into()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Records a valid event and applies the documented dedup semantics; returns the dedup key.
fn pd_accept(s: &mut PdState, body: Value) -> String {
    let routing_key = non_blank(&body, "routing_key")
        .unwrap_or_default()
        .to_owned();
    let action = non_blank(&body, "event_action")
        .unwrap_or_default()
        .to_owned();
    let dedup_key = match body.get("dedup_key").and_then(Value::as_str) {
        Some(key) => key.to_owned(),
        None => {
            s.generated += 1;
            format!("{:032x}", 0x5eed_0000_u128 + u128::from(s.generated))
        }
    };
    let key = (routing_key.clone(), dedup_key.clone());
    let current = s.alerts.get(&key).copied();
    let next = match (action.as_str(), current) {
        ("trigger", None | Some(AlertStatus::Resolved)) => Some(AlertStatus::Triggered),
        ("acknowledge", Some(AlertStatus::Triggered)) => Some(AlertStatus::Acknowledged),
        ("resolve", Some(AlertStatus::Triggered | AlertStatus::Acknowledged)) => {
            Some(AlertStatus::Resolved)
        }
        _ => None, // applied to the open alert unchanged, or dropped
    };
    if let Some(next) = next {
        s.alerts.insert(key, next);
    }
    s.events.push(PdEvent {
        routing_key,
        event_action: action,
        dedup_key: dedup_key.clone(),
        payload: body.get("payload").cloned(),
        body,
    });
    dedup_key
}
