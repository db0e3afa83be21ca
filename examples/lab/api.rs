//! The lab's mock of the platform's control-plane REST API (DESIGN §7): the same paths, JSON
//! shapes and error bodies, backed by the address plan. Registering a VPN key assigns it stable
//! addresses in the project's peer networks and, with `configure_wg`, adds it to the project's
//! wireguard-go gateway with `wg set`.
//!
//! As strict as the platform where a client could notice: error codes only from the platform's
//! published list (`tests/fixtures/platform-error-codes.txt`), search bodies must carry `search`
//! and `sort`. One deviation: a region's `address` in `GET /region/zcli` carries `http://`
//! (the platform's has no scheme and means https), because the lab speaks plain HTTP.
//!
//! Tests make it misbehave by writing a [`Mode`] to `<state_dir>/misbehave` (`lab misbehave`):
//! `slow <ms>`, `error500`, `garbage`, `ratelimit`, `expired`, `ipv6-only` (VPN answers with
//! empty IPv4 parts, as the platform's SDK represents an absent part), `no-dns` (no DNS gateway
//! in VPN answers), `no-icmp` (the gateways drop ping; set up by `lab misbehave`, not here) or
//! `ok`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::plan::{nth_v4, nth_v6, Plan, Project};

pub struct ApiOptions {
    /// The default region's address, then the second region's.
    pub listen: [SocketAddr; 2],
    /// Add and remove peers on the gateways with `wg set`; off for tests without root.
    pub configure_wg: bool,
}

/// Blocking: serves the API on `opts.listen` until the process is killed.
pub fn serve(plan: Plan, opts: ApiOptions) -> anyhow::Result<()> {
    let app = router(plan, opts.configure_wg)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut servers = tokio::task::JoinSet::new();
        for addr in opts.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the API to {addr}"))?;
            eprintln!("api: listening on http://{addr}");
            let app = app.clone();
            servers.spawn(async move { axum::serve(listener, app).await });
        }
        match servers.join_next().await {
            Some(result) => result.context("the API task")?.context("serving the API"),
            None => Ok(()),
        }
    })
}

/// The API as a router, with the stored key assignments loaded from the state dir.
pub fn router(plan: Plan, configure_wg: bool) -> anyhow::Result<Router> {
    let assignments_path = Path::new(&plan.state_dir).join("assignments.json");
    let peers = Peers::load(&assignments_path)?;
    let app = Arc::new(App {
        plan,
        configure_wg,
        assignments_path,
        peers: Mutex::new(peers),
    });
    let api = Router::new()
        .route("/region/zcli", get(region))
        .route("/user/info", get(user_info))
        .route("/project/search", post(project_search))
        .route("/project/{id}", get(project_get))
        .route("/project/{id}/vpn", post(vpn_register).delete(vpn_remove))
        .route("/project/{id}/vpn/list", get(vpn_list))
        .route("/project/{id}/vpn/{encoded}", get(vpn_get))
        .route("/service-stack/search", post(service_search))
        .route("/container/search", post(container_search));
    Ok(Router::new()
        .nest(BASE, api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), gate))
        .layer(middleware::from_fn(log))
        .with_state(app))
}

const BASE: &str = "/api/rest/public";
/// The second region's name; the default region is `prg1`, as on the platform.
pub const SECOND_REGION: &str = "lab2";
const REGION_PATH: &str = "/api/rest/public/region/zcli";
/// Server key used when no gateway exists (`configure_wg` off): any valid key will do.
const DUMMY_SERVER_KEY: &str = "Y29ycmlkb3IgbGFiIGR1bW15IGdhdGV3YXkga2V5ISE=";
/// Fixed creation time of every project: the lab has no history.
const CREATED: &str = "2024-01-01T00:00:00.000Z";

type AppState = State<Arc<App>>;

/// A project's side of the tunnel, as the API answers it.
struct Gateway {
    key: String,
    endpoint: String,
}
type Answer = Result<Json<Value>, ApiError>;

struct App {
    plan: Plan,
    configure_wg: bool,
    assignments_path: PathBuf,
    peers: Mutex<Peers>,
}

impl App {
    fn project(&self, id: &str) -> Result<&Project, ApiError> {
        self.plan.projects.iter().find(|p| p.id == id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Code::ProjectNotFound,
                format!("project {id} not found"),
            )
        })
    }

    /// The gateway's key and endpoint as they are now: `gateway-rekey` changes both.
    async fn gateway(&self, project: &Project) -> Result<Gateway, ApiError> {
        let port_path = Path::new(&self.plan.state_dir).join(format!("{}.port", project.wg_if));
        let port = match tokio::fs::read_to_string(&port_path).await {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|e| ApiError::internal(format!("reading {}: {e}", port_path.display())))?,
            Err(_) => project.endpoint.port(),
        };
        let endpoint = std::net::SocketAddr::new(project.endpoint.ip(), port).to_string();
        if !self.configure_wg {
            return Ok(Gateway {
                key: DUMMY_SERVER_KEY.to_string(),
                endpoint,
            });
        }
        let path = Path::new(&self.plan.state_dir).join(format!("{}.pub", project.wg_if));
        let key = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| ApiError::internal(format!("reading the gateway key {}: {e}", path.display())))?;
        Ok(Gateway {
            key: key.trim().to_string(),
            endpoint,
        })
    }

    /// Runs `wg set <wg_if> <args…>` when the lab manages real gateways.
    async fn wg_set(&self, project: &Project, args: &[&str]) -> Result<(), ApiError> {
        if !self.configure_wg {
            return Ok(());
        }
        let output = tokio::process::Command::new("wg")
            .arg("set")
            .arg(&project.wg_if)
            .args(args)
            .output()
            .await
            .map_err(|e| ApiError::internal(format!("running wg: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(ApiError::internal(format!(
                "wg set {} failed: {}",
                project.wg_if,
                stderr.trim()
            )));
        }
        Ok(())
    }
}

/// Every key ever registered, per project id, with its host number in the peer networks. Keys
/// stay here after removal so that a key registered again gets the same addresses.
#[derive(Default, Serialize, Deserialize)]
struct Peers(BTreeMap<String, BTreeMap<String, Peer>>);

#[derive(Clone, Copy, Serialize, Deserialize)]
struct Peer {
    host: u32,
    registered: bool,
}

impl Peers {
    fn load(path: &Path) -> anyhow::Result<Peers> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Peers::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self, path: &Path) -> Result<(), ApiError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ApiError::internal(e.to_string()))?;
        // Write then rename, so a crash mid-write never loses the assignments.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| ApiError::internal(format!("saving {}: {e}", path.display())))
    }

    fn registered(&self, project: &Project, key: &str) -> Option<Peer> {
        self.0.get(&project.id)?.get(key).copied().filter(|p| p.registered)
    }

    /// The key's peer entry, assigning the lowest free host number (from 2) to a new key.
    fn assign(&mut self, project: &Project, key: &str) -> Result<Peer, ApiError> {
        let keys = self.0.entry(project.id.clone()).or_default();
        if let Some(peer) = keys.get(key) {
            return Ok(*peer);
        }
        // The last host number below the IPv4 broadcast address; the IPv6 network is larger.
        let last = (1u32 << (32 - project.v4_peer_net.prefix_len())) - 2;
        let host = (2..=last)
            .find(|n| keys.values().all(|p| p.host != *n))
            .ok_or_else(|| ApiError::internal(format!("no free VPN addresses left in {}", project.v4_peer_net)))?;
        let peer = Peer {
            host,
            registered: false,
        };
        keys.insert(key.to_string(), peer);
        Ok(peer)
    }
}

// ---- middleware ----

async fn log(req: Request, next: Next) -> Response {
    let (method, path, started) = (req.method().clone(), req.uri().path().to_string(), Instant::now());
    let response = next.run(req).await;
    eprintln!(
        "api: {method} {path} -> {} ({} ms)",
        response.status().as_u16(),
        started.elapsed().as_millis()
    );
    response
}

/// Misbehaviour switch, then the bearer token, for everything but the region list.
async fn gate(State(app): AppState, req: Request, next: Next) -> Response {
    if req.uri().path() == REGION_PATH {
        return next.run(req).await;
    }
    if let Some(response) = misbehave(&app).await {
        return response;
    }
    let expected = format!("Bearer {}", app.plan.token);
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            Code::NotAuthorized,
            "missing or invalid access token",
        )
        .into_response();
    }
    next.run(req).await
}

/// A way the lab misbehaves, as written to `<state_dir>/misbehave`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Slow(u64),
    Error500,
    Garbage,
    RateLimit,
    Expired,
    NoIcmp,
    Ipv6Only,
    NoDns,
}

impl Mode {
    pub const HELP: &str = "ok, slow MS, error500, garbage, ratelimit, expired, no-icmp, ipv6-only, no-dns";

    pub fn parse(text: &str) -> Result<Mode, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let mode = match words.as_slice() {
            [] | ["ok"] => Mode::Ok,
            ["slow", ms] => Mode::Slow(ms.parse().map_err(|_| format!("slow takes milliseconds, not {ms:?}"))?),
            ["error500"] => Mode::Error500,
            ["garbage"] => Mode::Garbage,
            ["ratelimit"] => Mode::RateLimit,
            ["expired"] => Mode::Expired,
            ["no-icmp"] => Mode::NoIcmp,
            ["ipv6-only"] => Mode::Ipv6Only,
            ["no-dns"] => Mode::NoDns,
            _ => {
                return Err(format!(
                    "unknown misbehave mode {:?}: use one of {}",
                    text.trim(),
                    Mode::HELP
                ))
            }
        };
        Ok(mode)
    }

    fn read(app: &App) -> Mode {
        let path = Path::new(&app.plan.state_dir).join("misbehave");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Mode::parse(&text).unwrap_or_else(|e| {
            eprintln!("api: ignoring {e}");
            Mode::Ok
        })
    }
}

/// `None` to answer normally (after a delay for `slow`), else the misbehaving answer.
async fn misbehave(app: &App) -> Option<Response> {
    match Mode::read(app) {
        Mode::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            None
        }
        Mode::Error500 => Some(ApiError::internal("simulated server failure").into_response()),
        Mode::Garbage => {
            Some((StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], "<html>not json").into_response())
        }
        // The platform publishes no error code for this: a proxy in front of an API answers it.
        Mode::RateLimit => Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::CONTENT_TYPE, "text/plain")],
                "Too Many Requests",
            )
                .into_response(),
        ),
        Mode::Expired => Some(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                Code::TokenExpired,
                "the access token has expired",
            )
            .into_response(),
        ),
        Mode::Ok | Mode::NoIcmp | Mode::Ipv6Only | Mode::NoDns => None,
    }
}

// ---- handlers, in the order of the routes ----

async fn region(State(app): AppState) -> Json<Value> {
    let [default, second] = app.plan.api_addrs();
    Json(json!({"items": [
        {"name": "prg1", "isDefault": true, "address": format!("http://{default}")},
        {"name": SECOND_REGION, "isDefault": false, "address": format!("http://{second}")},
    ]}))
}

async fn user_info(State(app): AppState) -> Json<Value> {
    let user = &app.plan.user;
    Json(json!({
        "id": user.id,
        "email": user.email,
        "fullName": user.full_name,
        "clientUserList": [{"clientId": user.client_id, "status": "ACTIVE", "roleCode": "OWNER"}],
    }))
}

async fn project_search(State(app): AppState, body: Bytes) -> Answer {
    let rows = app.plan.projects.iter().map(|p| Row {
        keys: vec![
            ("clientId", p.client_id.clone()),
            ("id", p.id.clone()),
            ("name", p.name.clone()),
        ],
        item: json!({"id": p.id, "clientId": p.client_id, "name": p.name, "status": "ACTIVE"}),
    });
    search(&body, rows)
}

async fn project_get(State(app): AppState, UrlPath(id): UrlPath<String>) -> Answer {
    let p = app.project(&id)?;
    Ok(Json(json!({
        "id": p.id,
        "clientId": p.client_id,
        "name": p.name,
        "status": "ACTIVE",
        "description": null,
        "created": CREATED,
    })))
}

async fn vpn_register(State(app): AppState, UrlPath(id): UrlPath<String>, body: Bytes) -> Answer {
    let project = app.project(&id)?;
    let key = parse::<KeyBody>(&body)?.public_key;
    check_key(&key)?;
    let gateway = app.gateway(project).await?;
    let mut peers = app.peers.lock().await;
    let mut peer = peers.assign(project, &key)?;
    let (v4, v6) = (
        nth_v4(project.v4_peer_net, peer.host),
        nth_v6(project.v6_peer_net, peer.host),
    );
    // Set it again even when registered: the gateway may have been restarted since.
    let mode = Mode::read(&app);
    let allowed = match mode {
        Mode::Ipv6Only => format!("{v6}/128"),
        _ => format!("{v4}/32,{v6}/128"),
    };
    let wg_result = app.wg_set(project, &["peer", &key, "allowed-ips", &allowed]).await;
    peer.registered = wg_result.is_ok();
    peers.0.entry(project.id.clone()).or_default().insert(key.clone(), peer);
    peers.save(&app.assignments_path)?;
    wg_result?;
    Ok(Json(vpn_item(project, &gateway, &key, peer, mode)))
}

async fn vpn_remove(State(app): AppState, UrlPath(id): UrlPath<String>, body: Bytes) -> Answer {
    let project = app.project(&id)?;
    let key = parse::<KeyBody>(&body)?.public_key;
    check_key(&key)?;
    let mut peers = app.peers.lock().await;
    let Some(mut peer) = peers.registered(project, &key) else {
        return Err(ApiError::key_not_found(&key));
    };
    app.wg_set(project, &["peer", &key, "remove"]).await?;
    peer.registered = false;
    peers.0.entry(project.id.clone()).or_default().insert(key, peer);
    peers.save(&app.assignments_path)?;
    Ok(Json(json!({"success": true})))
}

async fn vpn_list(State(app): AppState, UrlPath(id): UrlPath<String>) -> Answer {
    let project = app.project(&id)?;
    let gateway = app.gateway(project).await?;
    let mode = Mode::read(&app);
    let peers = app.peers.lock().await;
    let list: Vec<Value> = peers
        .0
        .get(&project.id)
        .into_iter()
        .flatten()
        .filter(|(_, p)| p.registered)
        .map(|(key, p)| peer_part(project, key, *p, mode))
        .collect();
    Ok(Json(
        json!({"project": project_part(project, &gateway, mode), "peers": list}),
    ))
}

async fn vpn_get(State(app): AppState, UrlPath((id, encoded)): UrlPath<(String, String)>) -> Answer {
    let project = app.project(&id)?;
    let key = URL_SAFE
        .decode(&encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| ApiError::invalid_key("the key in the path is not base64url (with padding) of a key"))?;
    check_key(&key)?;
    let gateway = app.gateway(project).await?;
    let Some(peer) = app.peers.lock().await.registered(project, &key) else {
        return Err(ApiError::key_not_found(&key));
    };
    Ok(Json(vpn_item(project, &gateway, &key, peer, Mode::read(&app))))
}

async fn service_search(State(app): AppState, body: Bytes) -> Answer {
    let rows = app.plan.projects.iter().flat_map(|p| {
        p.services.iter().map(move |s| Row {
            keys: vec![("projectId", p.id.clone()), ("clientId", p.client_id.clone())],
            item: json!({
                "id": s.id,
                "clientId": p.client_id,
                "projectId": p.id,
                "name": s.name,
                "status": "ACTIVE",
                "isSystem": false,
                "serviceStackTypeInfo": {
                    "serviceStackTypeVersionName": s.type_version,
                    "serviceStackTypeCategory": s.category,
                },
                "created": CREATED,
                "lastUpdate": CREATED,
                "ports": [],
            }),
        })
    });
    search(&body, rows)
}

async fn container_search(State(app): AppState, body: Bytes) -> Answer {
    let rows = app.plan.projects.iter().flat_map(|p| {
        p.services.iter().flat_map(move |s| {
            s.containers.iter().map(move |c| Row {
                keys: vec![
                    ("clientId", p.client_id.clone()),
                    ("serviceStackId", s.id.clone()),
                    ("projectId", p.id.clone()),
                ],
                item: json!({
                    "id": c.id,
                    "clientId": p.client_id,
                    "projectId": p.id,
                    "serviceStackId": s.id,
                    "status": c.status,
                    "number": c.number,
                    "name": null,
                    "hostname": c.name,
                    "created": CREATED,
                    "lastUpdate": CREATED,
                }),
            })
        })
    });
    search(&body, rows)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        Code::NotFound,
        format!("no such endpoint: {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    let message = format!("no such endpoint: {} {}", req.method(), req.uri().path());
    ApiError::new(StatusCode::NOT_FOUND, Code::NotFound, message)
}

// ---- request bodies and answers ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyBody {
    public_key: String,
}

/// The platform's `EsFilter`: `search` and `sort` are required, paging is optional.
#[derive(Deserialize)]
struct SearchBody {
    search: Vec<Filter>,
    #[allow(dead_code)]
    sort: Vec<Value>,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

#[derive(Deserialize)]
struct Filter {
    name: String,
    operator: String,
    value: Value,
}

impl Filter {
    fn text(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

fn default_limit() -> usize {
    100
}

/// One searchable entity: the fields a search may filter on, and its item in the answer.
struct Row {
    keys: Vec<(&'static str, String)>,
    item: Value,
}

/// Applies a search body's `eq` filters and paging to the rows.
fn search(body: &Bytes, rows: impl Iterator<Item = Row>) -> Answer {
    let body: SearchBody = parse(body)?;
    let mut rows: Vec<Row> = rows.collect();
    let fields: Vec<&str> = rows
        .first()
        .map(|r| r.keys.iter().map(|(name, _)| *name).collect())
        .unwrap_or_default();
    if let Some(bad) = body
        .search
        .iter()
        .find(|f| f.operator != "eq" || !fields.contains(&f.name.as_str()))
    {
        return Err(ApiError::invalid_input(format!(
            "unsupported search term {} {}",
            bad.name, bad.operator
        )));
    }
    rows.retain(|r| {
        body.search
            .iter()
            .all(|f| r.keys.iter().any(|(name, v)| *name == f.name && *v == f.text()))
    });
    let total = rows.len();
    let items: Vec<Value> = rows
        .into_iter()
        .skip(body.offset)
        .take(body.limit)
        .map(|r| r.item)
        .collect();
    Ok(Json(
        json!({"items": items, "totalHits": total, "limit": body.limit, "offset": body.offset}),
    ))
}

fn vpn_item(project: &Project, gateway: &Gateway, key: &str, peer: Peer, mode: Mode) -> Value {
    json!({"project": project_part(project, gateway, mode), "peer": peer_part(project, key, peer, mode)})
}

/// In the SDK every part of a VPN answer is a plain string (`types.String`): an absent network,
/// gateway or address is `""`. `ipv6-only` empties the IPv4 networks and addresses (the
/// endpoint, the gateway's own address, stays); `no-dns` empties the project gateways, the
/// addresses a client would use for DNS.
fn project_part(p: &Project, gateway: &Gateway, mode: Mode) -> Value {
    // The underlay is IPv4 only, so the IPv6 side names the same endpoint.
    let endpoint = &gateway.endpoint;
    let v4 = mode != Mode::Ipv6Only;
    let dns = mode != Mode::NoDns;
    json!({
        "publicKey": gateway.key,
        "ipv4": {
            "network": {"network": part(v4, p.v4_net), "gateway": part(v4 && dns, p.v4_gateway)},
            "sharedEndpoint": endpoint,
            "endpoint": endpoint,
        },
        "ipv6": {
            "network": {"network": p.v6_net.to_string(), "gateway": part(dns, p.v6_gateway)},
            "sharedEndpoint": endpoint,
            "endpoint": endpoint,
        },
    })
}

fn peer_part(p: &Project, key: &str, peer: Peer, mode: Mode) -> Value {
    let v4 = mode != Mode::Ipv6Only;
    json!({
        "publicKey": key,
        "ipv4": {
            "network": {"network": part(v4, p.v4_peer_net), "gateway": part(v4, p.v4_peer_gateway)},
            "assignedIpAddress": part(v4, nth_v4(p.v4_peer_net, peer.host)),
        },
        "ipv6": {
            "network": {"network": p.v6_peer_net.to_string(), "gateway": p.v6_peer_gateway.to_string()},
            "assignedIpAddress": nth_v6(p.v6_peer_net, peer.host).to_string(),
        },
    })
}

/// A part of a VPN answer: its text when present, `""` when absent.
fn part(present: bool, value: impl ToString) -> String {
    if present {
        value.to_string()
    } else {
        String::new()
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid_input(format!("invalid request body: {e}")))
}

/// A WireGuard public key as the platform takes it: 44 characters of standard base64, 32 bytes.
fn check_key(key: &str) -> Result<(), ApiError> {
    match STANDARD.decode(key) {
        Ok(bytes) if key.len() == 44 && bytes.len() == 32 => Ok(()),
        _ => Err(ApiError::invalid_key(
            "the public key must be 44 characters of base64 encoding 32 bytes",
        )),
    }
}

// ---- errors ----

/// Declares [`Code`] with every variant listed once, so a test can check them all.
macro_rules! codes {
    ($($variant:ident = $text:literal,)*) => {
        /// The error codes the lab answers with: each one the platform publishes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Code { $($variant,)* }

        impl Code {
            #[cfg(test)]
            const ALL: &[Code] = &[$(Code::$variant,)*];

            fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $text,)* }
            }
        }
    };
}

codes! {
    NotAuthorized = "notAuthorized",
    TokenExpired = "tokenExpired",
    InvalidUserInput = "invalidUserInput",
    NotFound = "notFound",
    ProjectNotFound = "projectNotFound",
    InvalidVpnPublicKey = "invalidVpnPublicKey",
    VpnPublicKeyNotFound = "vpnPublicKeyNotFound",
    InternalServerError = "internalServerError",
}

/// An answer with status ≥ 300 and the platform's error body.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: Code,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::InternalServerError, message)
    }

    fn invalid_input(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, Code::InvalidUserInput, message)
    }

    fn invalid_key(message: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, Code::InvalidVpnPublicKey, message)
    }

    fn key_not_found(key: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            Code::VpnPublicKeyNotFound,
            format!("VPN public key {key} is not registered"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message, "meta": null}});
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use reqwest::Method;

    #[tokio::test]
    async fn region_list_needs_no_token() {
        let lab = Lab::start().await;

        let (status, body) = lab.call_as(Method::GET, "/region/zcli", None, None).await;

        assert_eq!(status, 200);
        let [default, second] = lab.plan.api_addrs();
        assert_eq!(
            body,
            json!({"items": [
                {"name": "prg1", "isDefault": true, "address": format!("http://{default}")},
                {"name": "lab2", "isDefault": false, "address": format!("http://{second}")},
            ]})
        );
    }

    #[test]
    fn every_error_code_is_one_the_platform_publishes() {
        let published: Vec<&str> = include_str!("../../tests/fixtures/platform-error-codes.txt")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();

        assert!(published.len() > 100, "the fixture holds the platform's list");
        for code in Code::ALL {
            assert!(published.contains(&code.as_str()), "{code:?} is not a platform code");
        }
    }

    #[test]
    fn misbehave_modes_parse_or_say_which_exist() {
        assert_eq!(Mode::parse(""), Ok(Mode::Ok));
        assert_eq!(Mode::parse("slow 250\n"), Ok(Mode::Slow(250)));
        assert_eq!(Mode::parse("no-icmp"), Ok(Mode::NoIcmp));
        assert_eq!(Mode::parse("ipv6-only"), Ok(Mode::Ipv6Only));
        assert_eq!(Mode::parse("no-dns"), Ok(Mode::NoDns));
        assert!(Mode::parse("slow fast").unwrap_err().contains("milliseconds"));
        assert!(Mode::parse("sideways").unwrap_err().contains("no-icmp"));
    }

    #[tokio::test]
    async fn missing_or_wrong_token_is_not_authorized() {
        let lab = Lab::start().await;

        let missing = lab.call_as(Method::GET, "/user/info", None, None).await;
        let wrong = lab.call_as(Method::GET, "/user/info", Some("nope"), None).await;

        for (status, body) in [missing, wrong] {
            assert_eq!(status, 401);
            assert_eq!(body["error"]["code"], "notAuthorized");
            assert!(body["error"]["message"].is_string());
            assert_eq!(body["error"]["meta"], Value::Null);
        }
    }

    #[tokio::test]
    async fn user_info_comes_from_the_plan() {
        let lab = Lab::start().await;

        let (status, body) = lab.call(Method::GET, "/user/info", None).await;

        assert_eq!(status, 200);
        let user = &lab.plan.user;
        assert_eq!(body["id"], user.id.as_str());
        assert_eq!(body["fullName"], user.full_name.as_str());
        assert_eq!(body["clientUserList"][0]["clientId"], user.client_id.as_str());
        assert_eq!(body["clientUserList"][0]["status"], "ACTIVE");
    }

    #[tokio::test]
    async fn project_search_filters_and_pages() {
        let lab = Lab::start().await;
        let client_id = lab.plan.user.client_id.clone();

        let (status, all) = lab
            .call(
                Method::POST,
                "/project/search",
                Some(search_body("clientId", &client_id, 10, 0)),
            )
            .await;
        let (_, second) = lab
            .call(
                Method::POST,
                "/project/search",
                Some(search_body("clientId", &client_id, 1, 1)),
            )
            .await;
        let (_, by_name) = lab
            .call(
                Method::POST,
                "/project/search",
                Some(search_body("name", "demo", 10, 0)),
            )
            .await;

        assert_eq!(status, 200);
        assert_eq!(all["totalHits"], 3);
        assert_eq!(all["items"].as_array().map(Vec::len), Some(3));
        assert_eq!(second["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(second["items"][0]["name"], "other");
        assert_eq!(
            (second["limit"].clone(), second["offset"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(by_name["items"][0]["id"].as_str(), Some(lab.demo().id.as_str()));
        assert_eq!(by_name["items"][0]["status"], "ACTIVE");
    }

    #[tokio::test]
    async fn malformed_search_is_invalid_input() {
        let lab = Lab::start().await;

        let client_id = lab.plan.user.client_id.clone();
        let term = json!([{"name": "clientId", "operator": "eq", "value": client_id}]);
        let bodies = [
            json!({"search": "everything", "sort": []}),
            json!({"search": term}),
            json!({"sort": [], "limit": 10}),
            json!({"search": term, "sort": null}),
        ];

        for body in bodies {
            let (status, answer) = lab.call(Method::POST, "/project/search", Some(body.clone())).await;

            assert_eq!(status, 400, "{body}");
            assert_eq!(answer["error"]["code"], "invalidUserInput", "{body}");
        }
        let (minimal, _) = lab
            .call(
                Method::POST,
                "/project/search",
                Some(json!({"search": term, "sort": []})),
            )
            .await;
        assert_eq!(minimal, 200, "limit and offset are optional");
    }

    #[tokio::test]
    async fn one_project_and_unknown_project() {
        let lab = Lab::start().await;
        let id = lab.demo().id.clone();

        let (status, body) = lab.call(Method::GET, &format!("/project/{id}"), None).await;
        let (missing, error) = lab.call(Method::GET, "/project/nope", None).await;

        assert_eq!(status, 200);
        assert_eq!(body["name"], "demo");
        assert_eq!(body["description"], Value::Null);
        assert_eq!(missing, 404);
        assert_eq!(error["error"]["code"], "projectNotFound");
    }

    #[tokio::test]
    async fn services_and_containers_of_a_project() {
        let lab = Lab::start().await;
        let demo = lab.demo().clone();
        let api = &demo.services[0];

        let (_, services) = lab
            .call(
                Method::POST,
                "/service-stack/search",
                Some(search_body("projectId", &demo.id, 100, 0)),
            )
            .await;
        let (_, containers) = lab
            .call(
                Method::POST,
                "/container/search",
                Some(search_body("serviceStackId", &api.id, 100, 0)),
            )
            .await;

        assert_eq!(services["totalHits"], demo.services.len());
        assert_eq!(services["items"][0]["name"], "api");
        assert_eq!(
            services["items"][0]["serviceStackTypeInfo"]["serviceStackTypeVersionName"],
            "nodejs@22"
        );
        assert_eq!(containers["totalHits"], api.containers.len());
        assert_eq!(containers["items"][0]["hostname"], "node-id-13.runtime.api.zerops");
        assert_eq!(containers["items"][0]["number"], 13);
    }

    #[tokio::test]
    async fn a_stopped_container_is_listed_with_the_platform_status() {
        let lab = Lab::start().await;
        let api = lab.demo().services[0].clone();

        let (_, containers) = lab
            .call(
                Method::POST,
                "/container/search",
                Some(search_body("serviceStackId", &api.id, 100, 0)),
            )
            .await;

        let statuses: Vec<(&str, &str)> = containers["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["hostname"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            statuses,
            [
                ("node-id-13.runtime.api.zerops", "ACTIVE"),
                ("node-id-14.runtime.api.zerops", "ACTIVE"),
                ("node-id-15.runtime.api.zerops", "STOPPED"),
            ]
        );
        let stopped = &api.containers[2];
        assert!(
            !lab.plan.namespaces().contains(&stopped.ns) && stopped.ns.is_empty(),
            "a stopped container has no namespace"
        );
    }

    #[tokio::test]
    async fn a_project_without_services_answers_empty_lists() {
        let lab = Lab::start().await;
        let empty = lab.plan.projects.iter().find(|p| p.name == "empty").unwrap().clone();

        let (status, services) = lab
            .call(
                Method::POST,
                "/service-stack/search",
                Some(search_body("projectId", &empty.id, 100, 0)),
            )
            .await;
        let (_, containers) = lab
            .call(
                Method::POST,
                "/container/search",
                Some(search_body("projectId", &empty.id, 100, 0)),
            )
            .await;

        assert_eq!(status, 200);
        for answer in [services, containers] {
            assert_eq!(answer["items"], json!([]));
            assert_eq!(answer["totalHits"], 0);
        }
    }

    #[tokio::test]
    async fn registering_a_key_twice_gives_the_same_answer() {
        let lab = Lab::start().await;

        let first = lab.register(&key(1)).await;
        let second = lab.register(&key(1)).await;

        assert_eq!(first, second);
        let demo = lab.demo();
        let peer_v4 = nth_v4(demo.v4_peer_net, 2).to_string();
        let peer_v6 = nth_v6(demo.v6_peer_net, 2).to_string();
        let endpoint = demo.endpoint.to_string();
        assert_eq!(
            first,
            json!({
                "project": {
                    "publicKey": DUMMY_SERVER_KEY,
                    "ipv4": {
                        "network": {"network": demo.v4_net.to_string(), "gateway": demo.v4_gateway.to_string()},
                        "sharedEndpoint": endpoint, "endpoint": endpoint,
                    },
                    "ipv6": {
                        "network": {"network": demo.v6_net.to_string(), "gateway": demo.v6_gateway.to_string()},
                        "sharedEndpoint": endpoint, "endpoint": endpoint,
                    },
                },
                "peer": {
                    "publicKey": key(1),
                    "ipv4": {
                        "network": {"network": demo.v4_peer_net.to_string(), "gateway": demo.v4_peer_gateway.to_string()},
                        "assignedIpAddress": peer_v4,
                    },
                    "ipv6": {
                        "network": {"network": demo.v6_peer_net.to_string(), "gateway": demo.v6_peer_gateway.to_string()},
                        "assignedIpAddress": peer_v6,
                    },
                },
            })
        );
    }

    #[tokio::test]
    async fn different_keys_get_different_addresses() {
        let lab = Lab::start().await;

        let one = lab.register(&key(1)).await;
        let two = lab.register(&key(2)).await;

        assert_eq!(
            one["peer"]["ipv4"]["assignedIpAddress"],
            nth_v4(lab.demo().v4_peer_net, 2).to_string()
        );
        assert_eq!(
            two["peer"]["ipv4"]["assignedIpAddress"],
            nth_v4(lab.demo().v4_peer_net, 3).to_string()
        );
        assert_eq!(
            two["peer"]["ipv6"]["assignedIpAddress"],
            nth_v6(lab.demo().v6_peer_net, 3).to_string()
        );
    }

    #[tokio::test]
    async fn assignments_survive_a_restart_and_a_removal() {
        let lab = Lab::start().await;
        lab.register(&key(1)).await;
        let before = lab.register(&key(2)).await;
        lab.call(
            Method::DELETE,
            &lab.vpn_path(""),
            Some(json!({"publicKey": key(2), "instanceId": null})),
        )
        .await;

        let restarted = Lab::start_in(lab.dir).await;
        let after = restarted.register(&key(2)).await;

        assert_eq!(before, after);
    }

    #[tokio::test]
    async fn get_a_key_by_its_base64url_text() {
        let lab = Lab::start().await;
        let registered = lab.register(&key(1)).await;

        let (status, body) = lab
            .call(
                Method::GET,
                &lab.vpn_path(&format!("/{}", URL_SAFE.encode(key(1)))),
                None,
            )
            .await;
        let (missing, error) = lab
            .call(
                Method::GET,
                &lab.vpn_path(&format!("/{}", URL_SAFE.encode(key(2)))),
                None,
            )
            .await;
        let (invalid, bad) = lab.call(Method::GET, &lab.vpn_path("/not-base64!"), None).await;

        assert_eq!(status, 200);
        assert_eq!(body, registered);
        assert_eq!(missing, 404);
        assert_eq!(error["error"]["code"], "vpnPublicKeyNotFound");
        assert_eq!(invalid, 400);
        assert_eq!(bad["error"]["code"], "invalidVpnPublicKey");
    }

    #[tokio::test]
    async fn ipv6_only_empties_every_ipv4_part_but_the_endpoint() {
        let lab = Lab::start().await;
        let full = lab.register(&key(1)).await;
        lab.misbehave("ipv6-only");

        let answer = lab.register(&key(1)).await;
        let (_, listed) = lab.call(Method::GET, &lab.vpn_path("/list"), None).await;

        let empty = json!({"network": {"network": "", "gateway": ""}, "assignedIpAddress": ""});
        assert_eq!(answer["peer"]["ipv4"], empty);
        assert_eq!(
            answer["project"]["ipv4"]["network"],
            json!({"network": "", "gateway": ""})
        );
        assert_eq!(
            answer["project"]["ipv4"]["sharedEndpoint"],
            full["project"]["ipv4"]["sharedEndpoint"]
        );
        assert_eq!(answer["project"]["ipv6"], full["project"]["ipv6"]);
        assert_eq!(answer["peer"]["ipv6"], full["peer"]["ipv6"]);
        assert_eq!(listed["peers"][0]["ipv4"], empty);
    }

    #[tokio::test]
    async fn no_dns_empties_the_project_gateways_only() {
        let lab = Lab::start().await;
        let full = lab.register(&key(1)).await;
        lab.misbehave("no-dns");

        let answer = lab.register(&key(1)).await;

        for family in ["ipv4", "ipv6"] {
            let network = &answer["project"][family]["network"];
            assert_eq!(network["gateway"], "", "{family}");
            assert_eq!(network["network"], full["project"][family]["network"]["network"]);
        }
        assert_eq!(answer["peer"], full["peer"]);
    }

    #[tokio::test]
    async fn a_gateway_moved_by_rekey_is_answered_from_then_on() {
        let lab = Lab::start().await;
        let before = lab.register(&key(1)).await;
        let port_file = lab.dir.path().join(format!("{}.port", lab.demo().wg_if));
        std::fs::write(port_file, "51999\n").expect("write port");

        let after = lab.register(&key(1)).await;

        let moved = format!("{}:51999", lab.demo().gw_underlay_addr);
        assert_eq!(
            before["project"]["ipv4"]["sharedEndpoint"],
            lab.demo().endpoint.to_string()
        );
        for family in ["ipv4", "ipv6"] {
            assert_eq!(after["project"][family]["sharedEndpoint"], moved.as_str(), "{family}");
            assert_eq!(after["project"][family]["endpoint"], moved.as_str(), "{family}");
        }
    }

    #[tokio::test]
    async fn list_shows_registered_keys_only() {
        let lab = Lab::start().await;
        let one = lab.register(&key(1)).await;
        let two = lab.register(&key(2)).await;
        lab.call(
            Method::DELETE,
            &lab.vpn_path(""),
            Some(json!({"publicKey": key(1), "instanceId": null})),
        )
        .await;

        let (status, body) = lab.call(Method::GET, &lab.vpn_path("/list"), None).await;

        assert_eq!(status, 200);
        assert_eq!(body["project"], one["project"]);
        assert_eq!(body["peers"], json!([two["peer"]]));
    }

    #[tokio::test]
    async fn delete_a_key_then_it_is_unknown() {
        let lab = Lab::start().await;
        lab.register(&key(1)).await;
        let body = json!({"publicKey": key(1), "instanceId": null});

        let (status, answer) = lab.call(Method::DELETE, &lab.vpn_path(""), Some(body.clone())).await;
        let (again, error) = lab.call(Method::DELETE, &lab.vpn_path(""), Some(body)).await;

        assert_eq!((status, answer), (200, json!({"success": true})));
        assert_eq!(again, 404);
        assert_eq!(error["error"]["code"], "vpnPublicKeyNotFound");
        assert_eq!(error["error"]["meta"], Value::Null);
    }

    #[tokio::test]
    async fn invalid_keys_are_rejected() {
        let lab = Lab::start().await;
        let short = STANDARD.encode([1u8; 31]);
        let unpadded = key(1).trim_end_matches('=').to_string();

        for bad in ["", "not a key", &short, &unpadded] {
            let body = json!({"publicKey": bad, "instanceId": null});
            let (status, error) = lab.call(Method::POST, &lab.vpn_path(""), Some(body)).await;

            assert_eq!(status, 400, "{bad:?}");
            assert_eq!(error["error"]["code"], "invalidVpnPublicKey");
        }
    }

    #[tokio::test]
    async fn wrong_body_and_unknown_route() {
        let lab = Lab::start().await;

        let (status, error) = lab
            .call(Method::POST, &lab.vpn_path(""), Some(json!({"key": key(1)})))
            .await;
        let (missing, not_found) = lab.call(Method::GET, "/no/such/thing", None).await;
        let (wrong_method, no_method) = lab.call(Method::PUT, "/user/info", None).await;

        assert_eq!(status, 400);
        assert_eq!(error["error"]["code"], "invalidUserInput");
        assert_eq!(missing, 404);
        assert_eq!(not_found["error"]["code"], "notFound");
        assert_eq!(wrong_method, 404);
        assert_eq!(no_method["error"]["code"], "notFound");
    }

    #[tokio::test]
    async fn misbehave_file_modes() {
        let lab = Lab::start().await;
        let expected = [
            ("error500", 500, Some("internalServerError")),
            ("expired", 401, Some("tokenExpired")),
            ("no-icmp", 200, None),
            ("ipv6-only", 200, None),
            ("no-dns", 200, None),
            ("ok\n", 200, None),
            ("", 200, None),
        ];

        for (mode, status, code) in expected {
            lab.misbehave(mode);
            let (got, body) = lab.call(Method::GET, "/user/info", None).await;

            assert_eq!(got, status, "{mode:?}");
            assert_eq!(body["error"]["code"].as_str(), code, "{mode:?}");
        }
    }

    #[tokio::test]
    async fn misbehave_garbage_and_slow() {
        let lab = Lab::start().await;
        let url = format!("{}/user/info", lab.base);

        lab.misbehave("garbage\n");
        let garbage = lab
            .http
            .get(&url)
            .bearer_auth(&lab.plan.token)
            .send()
            .await
            .expect("request");
        let content_type = garbage.headers().get(header::CONTENT_TYPE).cloned();
        let text = garbage.text().await.expect("body");
        lab.misbehave("ratelimit");
        let limited = lab
            .http
            .get(&url)
            .bearer_auth(&lab.plan.token)
            .send()
            .await
            .expect("request");
        let limited = (limited.status().as_u16(), limited.text().await.expect("body"));
        lab.misbehave("slow 300");
        let started = Instant::now();
        let (slow, _) = lab.call(Method::GET, "/user/info", None).await;
        let (region, _) = lab.call_as(Method::GET, "/region/zcli", None, None).await;

        assert_eq!(text, "<html>not json");
        assert_eq!(
            limited,
            (429, "Too Many Requests".to_string()),
            "no code the platform lacks"
        );
        assert_eq!(content_type.as_ref().and_then(|v| v.to_str().ok()), Some("text/html"));
        assert_eq!(slow, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(region, 200, "the region list ignores the switch");
    }

    // ---- helpers ----

    struct Lab {
        plan: Plan,
        dir: tempfile::TempDir,
        base: String,
        http: reqwest::Client,
    }

    impl Lab {
        async fn start() -> Lab {
            Lab::start_in(tempfile::tempdir().expect("tempdir")).await
        }

        async fn start_in(dir: tempfile::TempDir) -> Lab {
            let mut plan = Plan::new("t", 0);
            plan.state_dir = dir.path().to_string_lossy().into_owned();
            let app = router(plan.clone(), false).expect("router");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let base = format!("http://{}{BASE}", listener.local_addr().expect("address"));
            tokio::spawn(async move { axum::serve(listener, app).await });
            Lab {
                plan,
                dir,
                base,
                http: reqwest::Client::new(),
            }
        }

        fn demo(&self) -> &Project {
            &self.plan.projects[0]
        }

        fn vpn_path(&self, rest: &str) -> String {
            format!("/project/{}/vpn{rest}", self.demo().id)
        }

        fn misbehave(&self, mode: &str) {
            std::fs::write(self.dir.path().join("misbehave"), mode).expect("write misbehave");
        }

        async fn register(&self, key: &str) -> Value {
            let body = json!({"publicKey": key, "instanceId": null});
            let (status, answer) = self.call(Method::POST, &self.vpn_path(""), Some(body)).await;
            assert_eq!(status, 200, "{answer}");
            answer
        }

        async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
            self.call_as(method, path, Some(&self.plan.token), body).await
        }

        async fn call_as(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
            let mut request = self.http.request(method, format!("{}{path}", self.base));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let text = response.text().await.expect("body");
            let body = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).expect("JSON body")
            };
            (status, body)
        }
    }

    fn key(n: u8) -> String {
        STANDARD.encode([n; 32])
    }

    fn search_body(name: &str, value: &str, limit: usize, offset: usize) -> Value {
        json!({"search": [{"name": name, "operator": "eq", "value": value}], "sort": [], "limit": limit, "offset": offset})
    }
}
