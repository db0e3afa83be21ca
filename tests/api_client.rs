//! The platform client against an in-process HTTP server that answers as DESIGN.md §7 says.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;
use corridor::api::{ApiError, Client};
use serde_json::{json, Value};

const TOKEN: &str = "secret-token-123";
const KEY: &str = "+/+/ERERERERERERERERERERERERERERERERERERERE=";

#[tokio::test]
async fn regions_are_listed_without_a_token() {
    let server = serve(|_| {
        ok(json!({"items": [
            {"name": "prg1", "isDefault": true, "address": "api.app-prg1.zerops.io", "extra": 1},
            {"name": "other", "isDefault": null, "address": "api.other.example"}
        ]}))
    })
    .await;
    let client = Client::new(&server.base, None).unwrap();

    let regions = client.regions().await.unwrap();

    assert_eq!(regions.len(), 2);
    assert_eq!(regions[0].address, "api.app-prg1.zerops.io");
    assert!(regions[0].is_default);
    assert!(!regions[1].is_default);
    let seen = server.only_request();
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.path, "/api/rest/public/region/zcli");
    assert!(seen.headers.get("authorization").is_none());
}

#[tokio::test]
async fn every_call_sends_bearer_token_json_content_type_and_user_agent() {
    let server = serve(|_| ok(user_json())).await;

    client(&server).user_info().await.unwrap();

    let seen = server.only_request();
    assert_eq!(seen.header("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(seen.header("content-type"), "application/json");
    assert!(seen.header("user-agent").starts_with("corridor/"));
}

#[tokio::test]
async fn user_info_is_parsed_leniently() {
    let server = serve(|_| {
        ok(json!({
            "id": "u1", "email": "a@b.c", "fullName": null, "unknown": {"x": 1},
            "clientUserList": [{"clientId": "c1", "status": "ACTIVE", "roleCode": "OWNER"}]
        }))
    })
    .await;

    let user = client(&server).user_info().await.unwrap();

    assert_eq!(server.only_request().path, "/api/rest/public/user/info");
    assert_eq!(user.id, "u1");
    assert_eq!(user.full_name, "");
    assert_eq!(user.client_user_list[0].client_id, "c1");
    assert!(user.client_user_list[0].is_active());
}

#[tokio::test]
async fn project_is_fetched_by_id() {
    let server = serve(|_| ok(project_json("p1", "c1", "myproject"))).await;

    let project = client(&server).project(&pid("p1")).await.unwrap();

    assert_eq!(server.only_request().path, "/api/rest/public/project/p1");
    assert_eq!(project.name, "myproject");
    assert_eq!(project.client_id, "c1");
    assert_eq!(project.status, "ACTIVE");
}

#[tokio::test]
async fn search_projects_sends_the_documented_body() {
    let server = serve(|_| ok(page(vec![project_json("p1", "c1", "one")], 1))).await;

    let projects = client(&server).search_projects("c1").await.unwrap();

    assert_eq!(projects.len(), 1);
    let seen = server.only_request();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/api/rest/public/project/search");
    assert_eq!(
        seen.json(),
        json!({
            "search": [{"name": "clientId", "operator": "eq", "value": "c1"}],
            "sort": [], "limit": 100, "offset": 0
        })
    );
}

#[tokio::test]
async fn search_projects_pages_until_total_hits() {
    let all: Vec<Value> = (0..250)
        .map(|i| project_json(&format!("p{i}"), "c1", &format!("project {i}")))
        .collect();
    let server = serve(move |seen| {
        let body = seen.json();
        let offset = body["offset"].as_u64().unwrap() as usize;
        let limit = body["limit"].as_u64().unwrap() as usize;
        let items = all.iter().skip(offset).take(limit).cloned().collect();
        ok(page(items, all.len() as u64))
    })
    .await;

    let projects = client(&server).search_projects("c1").await.unwrap();

    assert_eq!(projects.len(), 250);
    assert_eq!(projects[249].id, "p249");
    let offsets: Vec<u64> = server
        .requests()
        .iter()
        .map(|s| s.json()["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![0, 100, 200]);
}

#[tokio::test]
async fn search_stops_when_the_server_runs_out_before_total_hits() {
    let server = serve(|seen| {
        let items = if seen.json()["offset"] == 0 {
            vec![project_json("p1", "c1", "one")]
        } else {
            vec![]
        };
        ok(page(items, 1000))
    })
    .await;

    let projects = client(&server).search_projects("c1").await.unwrap();

    assert_eq!(projects.len(), 1);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn search_services_sends_project_and_client_terms() {
    let server = serve(|_| {
        ok(page(
            vec![
                json!({
                    "id": "s1", "projectId": "p1", "name": "api", "status": "ACTIVE",
                    "isSystem": false,
                    "serviceStackTypeInfo": {
                        "serviceStackTypeVersionName": "nodejs@22",
                        "serviceStackTypeCategory": "USER"
                    }
                }),
                json!({"id": "s2", "name": "core", "isSystem": true, "serviceStackTypeInfo": null}),
            ],
            2,
        ))
    })
    .await;

    let services = client(&server).search_services(&pid("p1"), "c1").await.unwrap();

    let seen = server.only_request();
    assert_eq!(seen.path, "/api/rest/public/service-stack/search");
    assert_eq!(
        seen.json()["search"],
        json!([
            {"name": "projectId", "operator": "eq", "value": "p1"},
            {"name": "clientId", "operator": "eq", "value": "c1"}
        ])
    );
    assert_eq!(services[0].name, "api");
    assert_eq!(
        services[0].service_stack_type_info.service_stack_type_version_name,
        "nodejs@22"
    );
    assert!(services[1].is_system);
    assert_eq!(services[1].service_stack_type_info, Default::default());
}

#[tokio::test]
async fn search_containers_sends_client_and_service_terms() {
    let server = serve(|_| {
        ok(page(
            vec![
                json!({"id": "k1", "serviceStackId": "s1", "number": 13, "hostname": "node-id-13", "status": "ACTIVE"}),
                json!({"id": "k2", "serviceStackId": "s1", "number": 14, "hostname": null, "status": "ACTIVE"}),
            ],
            2,
        ))
    })
    .await;

    let containers = client(&server).search_containers("c1", "s1").await.unwrap();

    let seen = server.only_request();
    assert_eq!(seen.path, "/api/rest/public/container/search");
    assert_eq!(
        seen.json()["search"],
        json!([
            {"name": "clientId", "operator": "eq", "value": "c1"},
            {"name": "serviceStackId", "operator": "eq", "value": "s1"}
        ])
    );
    assert_eq!(containers[0].number, 13);
    assert_eq!(containers[0].hostname.as_deref(), Some("node-id-13"));
    assert_eq!(containers[1].hostname, None);
}

#[tokio::test]
async fn register_vpn_key_posts_the_key_and_parses_the_item() {
    let server = serve(|_| ok(vpn_item_json())).await;

    let item = client(&server).register_vpn_key(&pid("p1"), KEY).await.unwrap();

    let seen = server.only_request();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/api/rest/public/project/p1/vpn");
    assert_eq!(seen.json(), json!({"publicKey": KEY, "instanceId": null}));
    assert_eq!(item.peer.ipv4.assigned_ip_address, "");
    let config = item.to_config().unwrap();
    assert_eq!(config.endpoint, "198.18.0.1:51820");
    assert_eq!(config.addresses, vec!["fd00:1:2::2/128".parse().unwrap()]);
    assert_eq!(
        item.dns_server().unwrap(),
        "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
}

#[tokio::test]
async fn delete_vpn_key_sends_delete_with_the_key() {
    let server = serve(|_| ok(json!({"success": true}))).await;

    client(&server).delete_vpn_key(&pid("p1"), KEY).await.unwrap();

    let seen = server.only_request();
    assert_eq!(seen.method, Method::DELETE);
    assert_eq!(seen.path, "/api/rest/public/project/p1/vpn");
    assert_eq!(seen.json(), json!({"publicKey": KEY, "instanceId": null}));
}

#[tokio::test]
async fn delete_vpn_key_without_success_is_an_error() {
    let server = serve(|_| ok(json!({"success": false}))).await;

    let err = client(&server).delete_vpn_key(&pid("p1"), KEY).await.unwrap_err();

    assert!(matches!(err, ApiError::Unparsable { status: 200, .. }), "{err:?}");
}

#[tokio::test]
async fn list_vpn_keys_parses_project_and_peers() {
    let server = serve(|_| {
        let item = vpn_item_json();
        ok(json!({"project": item["project"], "peers": [item["peer"], item["peer"]]}))
    })
    .await;

    let list = client(&server).list_vpn_keys(&pid("p1")).await.unwrap();

    assert_eq!(server.only_request().path, "/api/rest/public/project/p1/vpn/list");
    assert_eq!(list.peers.len(), 2);
    assert_eq!(list.project.ipv4.shared_endpoint, "198.18.0.1:51820");
}

#[tokio::test]
async fn vpn_key_path_is_the_key_text_in_padded_base64url() {
    let server = serve(|_| ok(vpn_item_json())).await;

    let item = client(&server).vpn_key(&pid("p1"), KEY).await.unwrap();

    assert_eq!(
        server.only_request().path,
        "/api/rest/public/project/p1/vpn/Ky8rL0VSRVJFUkVSRVJFUkVSRVJFUkVSRVJFUkVSRVJFUkVSRVJFUkVSRT0="
    );
    assert_eq!(item.peer.public_key, KEY);
}

#[tokio::test]
async fn error_body_becomes_a_platform_error() {
    let server = serve(|_| {
        answer(
            403,
            json!({"error": {"code": "insufficientPermissions", "message": "You don't have access", "meta": [{"x": 1}]}}),
        )
    })
    .await;

    let err = client(&server).project(&pid("p1")).await.unwrap_err();

    let ApiError::Platform {
        status,
        ref code,
        ref message,
    } = err
    else {
        panic!("expected a platform error, got {err:?}");
    };
    assert_eq!(status, 403);
    assert_eq!(code, "insufficientPermissions");
    assert_eq!(message, "You don't have access");
    assert_eq!(
        err.to_string(),
        "insufficientPermissions: You don't have access (HTTP 403)"
    );
    assert!(!err.is_auth());
}

#[tokio::test]
async fn expired_token_is_an_auth_error() {
    let server = serve(|_| {
        answer(
            401,
            json!({"error": {"code": "tokenExpired", "message": "Token expired"}}),
        )
    })
    .await;

    let err = client(&server).user_info().await.unwrap_err();

    assert!(err.is_auth(), "{err:?}");
    assert_eq!(err.code(), Some("tokenExpired"));
}

#[tokio::test]
async fn not_found_is_recognised() {
    let server = serve(|_| {
        answer(
            404,
            json!({"error": {"code": "projectNotFound", "message": "Project not found"}}),
        )
    })
    .await;

    let err = client(&server).project(&pid("nope")).await.unwrap_err();

    assert!(err.is_not_found());
    assert!(!err.is_transient());
}

#[tokio::test]
async fn garbage_error_body_becomes_unparsable_with_a_shortened_body() {
    let garbage = format!("<html>{}</html>", "bad gateway ".repeat(100));
    let server = serve(move |_| (502, garbage.clone())).await;

    let err = client(&server).user_info().await.unwrap_err();

    let ApiError::Unparsable { status, ref body } = err else {
        panic!("expected unparsable, got {err:?}");
    };
    assert_eq!(status, 502);
    assert!(body.starts_with("<html>bad gateway"));
    assert!(body.chars().count() <= 201, "{} chars", body.chars().count());
    assert!(err.to_string().contains("HTTP 502 Bad Gateway"), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn garbage_success_body_becomes_unparsable() {
    let server = serve(|_| (200, "this is not json".to_owned())).await;

    let err = client(&server).project(&pid("p1")).await.unwrap_err();

    assert!(
        matches!(err, ApiError::Unparsable { status: 200, ref body } if body == "this is not json"),
        "{err:?}"
    );
}

#[tokio::test]
async fn success_body_of_the_wrong_shape_becomes_unparsable() {
    let server = serve(|_| ok(json!({"items": "not a list"}))).await;

    let err = client(&server).search_projects("c1").await.unwrap_err();

    assert!(matches!(err, ApiError::Unparsable { status: 200, .. }), "{err:?}");
}

#[tokio::test]
async fn slow_server_times_out_within_the_configured_bound() {
    let server = serve_slowly(Duration::from_secs(10), |_| ok(user_json())).await;
    let client = client(&server)
        .with_timeouts(Duration::from_secs(1), Duration::from_millis(300))
        .unwrap();
    let started = Instant::now();

    let err = client.user_info().await.unwrap_err();

    assert!(
        matches!(err, ApiError::Timeout { ref url } if url.ends_with("/api/rest/public/user/info")),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(err.is_transient());
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let err = Client::new(&base, Some(TOKEN.into()))
        .unwrap()
        .user_info()
        .await
        .unwrap_err();

    assert!(matches!(err, ApiError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn calls_without_a_token_fail_before_sending() {
    let server = serve(|_| ok(user_json())).await;

    let err = Client::new(&server.base, None).unwrap().user_info().await.unwrap_err();

    assert!(matches!(err, ApiError::NoToken));
    assert!(err.is_auth());
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn the_token_never_appears_in_errors_or_debug_output() {
    let server = serve(|seen| (500, format!("echo: {}", seen.header("authorization")))).await;
    let client = client(&server);

    let err = client.user_info().await.unwrap_err();

    assert!(matches!(err, ApiError::Unparsable { status: 500, .. }));
    for text in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
        assert!(!text.contains(TOKEN), "{text}");
    }
}

#[tokio::test]
async fn find_projects_searches_active_clients_and_matches_id_or_name() {
    let server = serve(|seen| match seen.path.as_str() {
        "/api/rest/public/user/info" => ok(json!({
            "id": "u1",
            "clientUserList": [
                {"clientId": "c1", "status": "ACTIVE"},
                {"clientId": "c2", "status": "ACTIVE"},
                {"clientId": "c3", "status": "WAITING_FOR_CONFIRMATION"}
            ]
        })),
        _ => {
            let client_id = seen.json()["search"][0]["value"].as_str().unwrap().to_owned();
            let items = match client_id.as_str() {
                "c1" => vec![project_json("p1", "c1", "Shop"), project_json("p2", "c1", "blog")],
                "c2" => vec![project_json("p3", "c2", "shop")],
                other => panic!("inactive client {other} searched"),
            };
            let total = items.len() as u64;
            ok(page(items, total))
        }
    })
    .await;
    let client = client(&server);

    let by_exact_name = client.find_projects("shop").await.unwrap();
    let by_any_case = client.find_projects("BLOG").await.unwrap();
    let by_id = client.find_projects("p1").await.unwrap();
    let none = client.find_projects("missing").await.unwrap();

    assert_eq!(ids(&by_exact_name), ["p3"]);
    assert_eq!(ids(&by_any_case), ["p2"]);
    assert_eq!(ids(&by_id), ["p1"]);
    assert!(none.is_empty());
}

#[test]
fn base_addresses_are_normalised_or_rejected() {
    let base = |text: &str| Client::new(text, None).map(|c| c.base().to_owned());

    assert_eq!(
        base("api.app-prg1.zerops.io").unwrap(),
        "https://api.app-prg1.zerops.io"
    );
    assert_eq!(base("http://198.18.0.1:8080/").unwrap(), "http://198.18.0.1:8080");
    assert_eq!(base(corridor::api::DEFAULT_BASE).unwrap(), corridor::api::DEFAULT_BASE);
    for bad in [
        "ftp://host",
        "https://host/api/rest/public",
        "https://user:pw@host",
        "https://",
    ] {
        assert!(matches!(base(bad), Err(ApiError::InvalidBase { .. })), "{bad}");
    }
}

#[test]
fn a_token_that_cannot_be_a_header_is_rejected() {
    let err = Client::new("https://host", Some("bad\ntoken".into())).unwrap_err();

    assert!(matches!(err, ApiError::InvalidToken));
    assert!(!err.to_string().contains("bad"));
}

// Helpers

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

type Answer = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

#[derive(Clone)]
struct ServerState {
    seen: Arc<Mutex<Vec<Seen>>>,
    answer: Answer,
    delay: Duration,
}

struct TestServer {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn only_request(&self) -> Seen {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        requests.into_iter().next().unwrap()
    }
}

async fn serve(answer: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> TestServer {
    serve_slowly(Duration::ZERO, answer).await
}

async fn serve_slowly(delay: Duration, answer: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> TestServer {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = ServerState {
        seen: seen.clone(),
        answer: Arc::new(answer),
        delay,
    };
    let app = Router::new().fallback(handle).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestServer { base, seen }
}

async fn handle(
    State(state): State<ServerState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let seen = Seen {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    };
    let (status, body) = (state.answer)(&seen);
    state.seen.lock().unwrap().push(seen);
    tokio::time::sleep(state.delay).await;
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body,
    )
}

fn client(server: &TestServer) -> Client {
    Client::new(&server.base, Some(TOKEN.into())).unwrap()
}

fn ok(body: Value) -> (u16, String) {
    answer(200, body)
}

fn answer(status: u16, body: Value) -> (u16, String) {
    (status, body.to_string())
}

fn page(items: Vec<Value>, total_hits: u64) -> Value {
    json!({"items": items, "totalHits": total_hits, "limit": 100, "offset": 0})
}

fn user_json() -> Value {
    json!({"id": "u1", "email": "a@b.c", "fullName": "A B", "clientUserList": []})
}

fn project_json(id: &str, client_id: &str, name: &str) -> Value {
    json!({"id": id, "clientId": client_id, "name": name, "status": "ACTIVE", "description": null})
}

fn vpn_item_json() -> Value {
    json!({
        "project": {
            "publicKey": "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
            "ipv4": {
                "network": {"network": "10.0.0.0/16", "gateway": "10.0.0.1"},
                "sharedEndpoint": "198.18.0.1:51820",
                "endpoint": "198.18.0.1:51821"
            },
            "ipv6": {
                "network": {"network": "fd00:1::/64", "gateway": "fd00:1::1"},
                "sharedEndpoint": "",
                "endpoint": null
            }
        },
        "peer": {
            "publicKey": KEY,
            "ipv4": {"network": {"network": "", "gateway": ""}, "assignedIpAddress": ""},
            "ipv6": {
                "network": {"network": "fd00:1:2::/64", "gateway": "fd00:1:2::1"},
                "assignedIpAddress": "fd00:1:2::2"
            }
        }
    })
}

fn ids(projects: &[corridor::api::Project]) -> Vec<&str> {
    projects.iter().map(|p| p.id.as_str()).collect()
}

fn pid(id: &str) -> corridor::api::ProjectId {
    corridor::api::ProjectId::parse(id).unwrap()
}
