//! Platform REST client (DESIGN.md §7): who am I, projects, services, containers, VPN keys.
//!
//! Every failure is an [`ApiError`] that callers match on; none of them, and no log line,
//! carries the token.

pub mod region;
pub mod types;
mod vpn_config;

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use crate::project_id::{InvalidProjectId, ProjectId};
pub use types::{
    ClientUser, Container, Project, ProjectVpnItem, Region, Service, ServiceTypeInfo, UserInfo, VpnKeyList, VpnNetwork,
    VpnPeer, VpnPeerNet, VpnProject, VpnProjectNet,
};
pub use vpn_config::{VpnConfig, VpnConfigError};

use types::{ErrorEnvelope, RegionList, SearchPage, SearchRequest, SearchTerm, Success, VpnKeyRequest};

/// The platform's default region.
pub const DEFAULT_BASE: &str = "https://api.app-prg1.zerops.io";
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a whole request: connecting, sending and reading the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<Token>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The platform answered with its error body.
    #[error("{code}: {message} (HTTP {status})")]
    Platform { status: u16, code: String, message: String },
    /// The answer was not what the platform sends: an error status without the error body, or
    /// a success whose body is not the expected type. `body` is shortened.
    #[error("unexpected answer from the platform ({}): {body}", status_line(*status))]
    Unparsable { status: u16, body: String },
    #[error("no answer from {url} in time")]
    Timeout { url: String },
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Any other failure of the HTTP exchange.
    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("not logged in: no API token (run `corridor login --token …` or set CORRIDOR_TOKEN or ZEROPS_TOKEN)")]
    NoToken,
    #[error("the API token contains characters that cannot be sent in an HTTP header")]
    InvalidToken,
    #[error("invalid API address {base:?}: {reason}")]
    InvalidBase { base: String, reason: &'static str },
    /// The HTTP client itself could not be built (TLS setup).
    #[error("cannot set up the HTTP client")]
    Setup(#[source] reqwest::Error),
}

impl Client {
    /// `base` is a scheme and host (and port), without path: `https://api.app-prg1.zerops.io`,
    /// `http://198.18.0.1:8080`. A bare host, as the region list gives it, means https.
    pub fn new(base: &str, token: Option<String>) -> Result<Client, ApiError> {
        Ok(Client {
            http: http_client(CONNECT_TIMEOUT, REQUEST_TIMEOUT)?,
            base: parse_base(base)?,
            token: token.map(Token::new).transpose()?,
        })
    }

    /// Replaces the default bounds ([`CONNECT_TIMEOUT`], [`REQUEST_TIMEOUT`]).
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Result<Client, ApiError> {
        self.http = http_client(connect, request)?;
        Ok(self)
    }

    /// The base URL, as normalised by [`Client::new`].
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `GET /region/zcli`; the only call without the token.
    pub async fn regions(&self) -> Result<Vec<Region>, ApiError> {
        let list: RegionList = self.call(Method::GET, &["region", "zcli"], None::<&()>, false).await?;
        Ok(list.items)
    }

    pub async fn user_info(&self) -> Result<UserInfo, ApiError> {
        self.get(&["user", "info"]).await
    }

    /// All projects of one client, fetched page by page.
    pub async fn search_projects(&self, client_id: &str) -> Result<Vec<Project>, ApiError> {
        self.search("project", vec![SearchTerm::eq("clientId", client_id)])
            .await
    }

    pub async fn project(&self, id: &ProjectId) -> Result<Project, ApiError> {
        self.get(&["project", id.as_str()]).await
    }

    pub async fn search_services(&self, project_id: &ProjectId, client_id: &str) -> Result<Vec<Service>, ApiError> {
        let terms = vec![
            SearchTerm::eq("projectId", project_id.as_str()),
            SearchTerm::eq("clientId", client_id),
        ];
        self.search("service-stack", terms).await
    }

    pub async fn search_containers(&self, client_id: &str, service_stack_id: &str) -> Result<Vec<Container>, ApiError> {
        let terms = vec![
            SearchTerm::eq("clientId", client_id),
            SearchTerm::eq("serviceStackId", service_stack_id),
        ];
        self.search("container", terms).await
    }

    /// Registers this machine's public key (44-character base64) with the project. Registering
    /// a key again returns the same assignment.
    pub async fn register_vpn_key(&self, project_id: &ProjectId, public_key: &str) -> Result<ProjectVpnItem, ApiError> {
        let body = VpnKeyRequest {
            public_key: public_key.to_owned(),
            instance_id: None,
        };
        self.call(
            Method::POST,
            &["project", project_id.as_str(), "vpn"],
            Some(&body),
            true,
        )
        .await
    }

    pub async fn delete_vpn_key(&self, project_id: &ProjectId, public_key: &str) -> Result<(), ApiError> {
        let body = VpnKeyRequest {
            public_key: public_key.to_owned(),
            instance_id: None,
        };
        let answer: Success = self
            .call(
                Method::DELETE,
                &["project", project_id.as_str(), "vpn"],
                Some(&body),
                true,
            )
            .await?;
        if !answer.success {
            return Err(ApiError::Unparsable {
                status: StatusCode::OK.as_u16(),
                body: r#"{"success":false}"#.to_owned(),
            });
        }
        Ok(())
    }

    pub async fn list_vpn_keys(&self, project_id: &ProjectId) -> Result<VpnKeyList, ApiError> {
        self.get(&["project", project_id.as_str(), "vpn", "list"]).await
    }

    pub async fn vpn_key(&self, project_id: &ProjectId, public_key: &str) -> Result<ProjectVpnItem, ApiError> {
        // The key's base64 text contains `/` and `+`, so the platform wants the text itself
        // encoded again, URL-safe and padded.
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(public_key.as_bytes());
        self.get(&["project", project_id.as_str(), "vpn", &encoded]).await
    }

    /// Projects whose id or name is `name_or_id`, across every client the user is an active
    /// member of. An exact id or name match wins; only without one are names compared
    /// ignoring case. Several matches are all returned: choosing is the caller's business.
    pub async fn find_projects(&self, name_or_id: &str) -> Result<Vec<Project>, ApiError> {
        let user = self.user_info().await?;
        let mut projects = Vec::new();
        for membership in user.client_user_list.iter().filter(|m| m.is_active()) {
            projects.extend(self.search_projects(&membership.client_id).await?);
        }

        let exact: Vec<Project> = projects
            .iter()
            .filter(|p| p.id.as_str() == name_or_id || p.name == name_or_id)
            .cloned()
            .collect();
        if !exact.is_empty() {
            return Ok(exact);
        }
        let wanted = name_or_id.to_lowercase();
        Ok(projects
            .into_iter()
            .filter(|p| p.name.to_lowercase() == wanted)
            .collect())
    }
}

impl ApiError {
    /// The HTTP status, when the platform answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Platform { status, .. } | ApiError::Unparsable { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The platform's error code, such as `projectNotFound`.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Platform { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The token is missing, wrong or expired: logging in again is the fix.
    pub fn is_auth(&self) -> bool {
        matches!(self, ApiError::NoToken | ApiError::InvalidToken)
            || self.status() == Some(401)
            || matches!(self.code(), Some("notAuthorized" | "tokenExpired"))
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Worth retrying later: no answer, rate limited, or a server-side failure.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Timeout { .. } | ApiError::Connect { .. } => true,
            _ => self.status().is_some_and(|s| s == 429 || s >= 500),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

const PAGE_SIZE: u64 = 100;
/// Bounds a search against a server whose `totalHits` never comes true.
const MAX_PAGES: usize = 50;
/// How much of an unparsable body an error keeps.
const BODY_EXCERPT_CHARS: usize = 200;

/// The bearer token, kept apart so it can only reach the `Authorization` header.
#[derive(Clone)]
struct Token {
    text: String,
    header: HeaderValue,
}

impl Token {
    fn new(text: String) -> Result<Token, ApiError> {
        let mut header = HeaderValue::from_str(&format!("Bearer {text}")).map_err(|_| ApiError::InvalidToken)?;
        header.set_sensitive(true);
        Ok(Token { text, header })
    }
}

impl Client {
    async fn get<T: DeserializeOwned>(&self, path: &[&str]) -> Result<T, ApiError> {
        self.call(Method::GET, path, None::<&()>, true).await
    }

    async fn search<T: DeserializeOwned>(&self, resource: &str, search: Vec<SearchTerm>) -> Result<Vec<T>, ApiError> {
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let body = SearchRequest {
                search: search.clone(),
                sort: Vec::new(),
                limit: PAGE_SIZE,
                offset: items.len() as u64,
            };
            let page: SearchPage<T> = self
                .call(Method::POST, &[resource, "search"], Some(&body), true)
                .await?;
            let done = page.items.is_empty() || (items.len() + page.items.len()) as u64 >= page.total_hits;
            items.extend(page.items);
            if done {
                return Ok(items);
            }
        }
        tracing::warn!(
            resource,
            fetched = items.len(),
            "search stopped after {MAX_PAGES} pages"
        );
        Ok(items)
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&B>,
        authenticated: bool,
    ) -> Result<T, ApiError> {
        let url = self.url(path);
        let mut request: RequestBuilder = self.http.request(method.clone(), url.clone());
        if authenticated {
            let token = self.token.as_ref().ok_or(ApiError::NoToken)?;
            request = request.header(AUTHORIZATION, token.header.clone());
        }
        if let Some(body) = body {
            request = request.json(body);
        }

        let started = Instant::now();
        let url_text = url.to_string();
        let response = request.send().await.map_err(|e| transport_error(e, &url_text))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| transport_error(e, &url_text))?;
        tracing::debug!(
            %method,
            path = url.path(),
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "platform call"
        );

        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|error| {
                tracing::debug!(%error, path = url.path(), "answer does not parse");
                self.unparsable(status, &bytes)
            });
        }
        match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
            Ok(ErrorEnvelope { error }) if !error.code.is_empty() => Err(ApiError::Platform {
                status: status.as_u16(),
                code: error.code,
                message: self.redact(&error.message),
            }),
            _ => Err(self.unparsable(status, &bytes)),
        }
    }

    fn url(&self, path: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("parse_base accepts only URLs with a host, which have a path")
            .clear()
            .extend(["api", "rest", "public"])
            .extend(path);
        url
    }

    fn unparsable(&self, status: StatusCode, body: &[u8]) -> ApiError {
        ApiError::Unparsable {
            status: status.as_u16(),
            body: shorten(&self.redact(&String::from_utf8_lossy(body))),
        }
    }

    /// A server or proxy that echoes the request would otherwise put the token in an error.
    fn redact(&self, text: &str) -> String {
        match &self.token {
            Some(token) if !token.text.is_empty() => text.replace(&token.text, "<token>"),
            _ => text.to_owned(),
        }
    }
}

fn http_client(connect: Duration, request: Duration) -> Result<reqwest::Client, ApiError> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    reqwest::Client::builder()
        .user_agent(concat!("corridor/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .connect_timeout(connect)
        .timeout(request)
        // The platform does not redirect; following one could carry the token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(ApiError::Setup)
}

fn parse_base(base: &str) -> Result<Url, ApiError> {
    let text = base.trim();
    let invalid = |reason| ApiError::InvalidBase {
        base: text.to_owned(),
        reason,
    };
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    let url = Url::parse(&with_scheme).map_err(|_| invalid("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    // Credentials would show up wherever the URL does, errors included.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the address are not supported"));
    }
    let has_path = !url.path().trim_end_matches('/').is_empty();
    if has_path || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("give only scheme, host and port; the API path is added"));
    }
    Ok(url)
}

fn transport_error(error: reqwest::Error, url: &str) -> ApiError {
    let url = url.to_owned();
    let source = error.without_url();
    if source.is_timeout() {
        ApiError::Timeout { url }
    } else if source.is_connect() {
        ApiError::Connect { url, source }
    } else {
        ApiError::Request { url, source }
    }
}

fn status_line(status: u16) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("HTTP {status} {reason}").trim_end().to_owned()
}

fn shorten(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return "(empty body)".to_owned();
    }
    match body.char_indices().nth(BODY_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None => body.to_owned(),
    }
}
