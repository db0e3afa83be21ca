//! The platform's wire schema (DESIGN.md §7), both directions, in camelCase.
//!
//! Answers are read leniently: unknown fields are ignored, and fields other than ids may be
//! missing or `null`, which reads as the empty value. Whether an empty value is acceptable is
//! decided where it is used (see [`ProjectVpnItem::to_config`](super::ProjectVpnItem::to_config)),
//! not here. The types also serialize, so a test server or the lab can answer with them.

use serde::{Deserialize, Deserializer, Serialize};

use super::ProjectId;

/// `GET /region/zcli`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionList {
    #[serde(default, deserialize_with = "nullable")]
    pub items: Vec<Region>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub is_default: bool,
    /// A host name such as `api.app-prg1.zerops.io`, without scheme.
    #[serde(default, deserialize_with = "nullable")]
    pub address: String,
}

/// `GET /user/info`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    pub id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub email: String,
    #[serde(default, deserialize_with = "nullable")]
    pub full_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub client_user_list: Vec<ClientUser>,
}

/// The user's membership in one client (organisation).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientUser {
    pub client_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
    #[serde(default, deserialize_with = "nullable")]
    pub role_code: String,
}

impl ClientUser {
    pub fn is_active(&self) -> bool {
        self.status == "ACTIVE"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: ProjectId,
    #[serde(default, deserialize_with = "nullable")]
    pub client_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
}

/// A service stack; its `name` is the service's hostname.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
    #[serde(default, deserialize_with = "nullable")]
    pub is_system: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub service_stack_type_info: ServiceTypeInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTypeInfo {
    #[serde(default, deserialize_with = "nullable")]
    pub service_stack_type_version_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub service_stack_type_category: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub service_stack_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub number: u64,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
}

/// The answer to registering or fetching one VPN key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectVpnItem {
    #[serde(default, deserialize_with = "nullable")]
    pub project: VpnProject,
    #[serde(default, deserialize_with = "nullable")]
    pub peer: VpnPeer,
}

/// `GET /project/{id}/vpn/list`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpnKeyList {
    #[serde(default, deserialize_with = "nullable")]
    pub project: VpnProject,
    #[serde(default, deserialize_with = "nullable")]
    pub peers: Vec<VpnPeer>,
}

/// The project's side of the tunnel: the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpnProject {
    /// Base64, 44 characters.
    #[serde(default, deserialize_with = "nullable")]
    pub public_key: String,
    #[serde(default, deserialize_with = "nullable")]
    pub ipv4: VpnProjectNet,
    #[serde(default, deserialize_with = "nullable")]
    pub ipv6: VpnProjectNet,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpnProjectNet {
    #[serde(default, deserialize_with = "nullable")]
    pub network: VpnNetwork,
    /// `host:port`.
    #[serde(default, deserialize_with = "nullable")]
    pub shared_endpoint: String,
    /// `host:port`.
    #[serde(default, deserialize_with = "nullable")]
    pub endpoint: String,
}

/// This machine's side of the tunnel, as the platform registered it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpnPeer {
    #[serde(default, deserialize_with = "nullable")]
    pub public_key: String,
    #[serde(default, deserialize_with = "nullable")]
    pub ipv4: VpnPeerNet,
    #[serde(default, deserialize_with = "nullable")]
    pub ipv6: VpnPeerNet,
    /// When the key was registered, as the platform writes it; not every answer has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpnPeerNet {
    #[serde(default, deserialize_with = "nullable")]
    pub network: VpnNetwork,
    #[serde(default, deserialize_with = "nullable")]
    pub assigned_ip_address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpnNetwork {
    /// CIDR.
    #[serde(default, deserialize_with = "nullable")]
    pub network: String,
    #[serde(default, deserialize_with = "nullable")]
    pub gateway: String,
}

/// Body of `POST /…/search`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRequest {
    pub search: Vec<SearchTerm>,
    #[serde(default)]
    pub sort: Vec<serde_json::Value>,
    pub limit: u64,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchTerm {
    pub name: String,
    pub operator: String,
    pub value: String,
}

impl SearchTerm {
    pub fn eq(name: &str, value: &str) -> SearchTerm {
        SearchTerm {
            name: name.to_owned(),
            operator: "eq".to_owned(),
            value: value.to_owned(),
        }
    }
}

/// Answer of `POST /…/search`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "T: Deserialize<'de>"))]
pub struct SearchPage<T> {
    #[serde(default, deserialize_with = "nullable")]
    pub items: Vec<T>,
    #[serde(default, deserialize_with = "nullable")]
    pub total_hits: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub limit: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub offset: u64,
}

/// Body of `POST` and `DELETE /project/{id}/vpn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpnKeyRequest {
    pub public_key: String,
    /// Always sent, as `null`.
    pub instance_id: Option<String>,
}

/// Answer of `DELETE /project/{id}/vpn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Success {
    pub success: bool,
}

/// The body of every answer with status ≥ 300.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    #[serde(default, deserialize_with = "nullable")]
    pub message: String,
    #[serde(default)]
    pub meta: serde_json::Value,
}

/// Reads `null` as the type's default, so that a field the platform sends as `null` is treated
/// like a missing one.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}
