//! The account side of every command: where the API is and a client for it, login, choosing a
//! project, and registering a key with it (whose answer is the connection's configuration).

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::api::{self, types::Project, types::ProjectVpnItem, Client};
use crate::report::{Progress, Report};
use crate::store::{KeyPair, Store};

/// Where and how patiently to talk to the platform.
pub struct ApiSettings {
    /// `--api` / `CORRIDOR_API`: overrides everything else.
    pub base: Option<String>,
    /// `--region`: a region from the region list.
    pub region: Option<String>,
    /// `--region-url` / `CORRIDOR_REGION_URL`; `None` is the platform's list.
    pub region_url: Option<String>,
    pub timeout: Duration,
}

/// The API address to use and the region it belongs to (`None` when given as `--api`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAddress {
    pub base: String,
    pub region: Option<String>,
}

pub async fn client(store: &Store, settings: ApiSettings) -> Result<Client> {
    let token = store.token()?.context(
        "not logged in: run `corridor login --token <token>` (a personal access token from the platform), \
         or set CORRIDOR_TOKEN (or ZEROPS_TOKEN)",
    )?;
    client_with_token(store, settings, token).await
}

/// A client with `token` at the address [`api_address`] finds.
pub async fn client_with_token(store: &Store, settings: ApiSettings, token: String) -> Result<Client> {
    let address = api_address(store, &settings, true).await?;
    client_at(&address, &settings, token)
}

fn client_at(address: &ApiAddress, settings: &ApiSettings, token: String) -> Result<Client> {
    let connect = settings.timeout.min(api::CONNECT_TIMEOUT);
    Ok(Client::new(&address.base, Some(token))?.with_timeouts(connect, settings.timeout)?)
}

/// Where the API is, in this order: `--api`/`CORRIDOR_API`; the region named by `--region`,
/// from the region list; the address stored at login (`use_stored`); the region list's default.
pub async fn api_address(store: &Store, settings: &ApiSettings, use_stored: bool) -> Result<ApiAddress> {
    if let Some(base) = &settings.base {
        return Ok(ApiAddress {
            base: base.clone(),
            region: None,
        });
    }
    if settings.region.is_none() && use_stored {
        if let Some(base) = store.api_base()? {
            return Ok(ApiAddress {
                base,
                region: store.region()?,
            });
        }
    }
    let regions = regions(settings).await?;
    let region = api::region::pick(&regions, settings.region.as_deref())?;
    Ok(ApiAddress {
        base: region.address,
        region: Some(region.name),
    })
}

/// The platform's regions (or those at `--region-url`).
pub async fn regions(settings: &ApiSettings) -> Result<Vec<api::Region>> {
    let url = settings
        .region_url
        .as_deref()
        .unwrap_or(api::region::DEFAULT_REGION_URL);
    api::region::regions_at(url, settings.timeout)
        .await
        .with_context(|| format!("reading the region list at {url}"))
}

/// Checks the token with the platform and stores it, with the API address and its region.
pub async fn login(api: ApiSettings, token: String, report: &mut dyn Report) -> Result<()> {
    let store = Store::open()?;
    let address = api_address(&store, &api, false).await?;
    let client = client_at(&address, &api, token.clone())?;
    let user = client
        .user_info()
        .await
        .context("checking the token with the platform")?;
    store.save_token(&token)?;
    store.save_api_base(&address.base)?;
    store.save_region(address.region.as_deref())?;
    report.progress(Progress::LoggedIn {
        name: &user.full_name,
        email: &user.email,
        region: address.region.as_deref(),
        api: client.base(),
    });
    Ok(())
}

/// A project by id or name; without one, or with several matches, a picker on a terminal and a
/// clear error elsewhere.
pub async fn choose_project(client: &Client, wanted: Option<&str>, report: &mut dyn Report) -> Result<Project> {
    let candidates = match wanted {
        Some(wanted) => client.find_projects(wanted).await.context("looking up the project")?,
        None => all_projects(client).await?,
    };
    match (candidates.len(), wanted) {
        (1, _) => return Ok(candidates.into_iter().next().expect("one")),
        (0, Some(wanted)) => {
            let names: Vec<String> = all_projects(client).await?.into_iter().map(|p| p.name).collect();
            bail!(
                "no project named or with id {wanted:?}; your projects: {}",
                names.join(", ")
            );
        }
        (0, None) => bail!("your account has no projects"),
        _ => {}
    }
    let listing: Vec<String> = candidates.iter().map(|p| format!("{} ({})", p.name, p.id)).collect();
    let Some(n) = report.pick("project", &listing) else {
        bail!(
            "several projects match; name one by id with -P:\n  {}",
            listing.join("\n  ")
        );
    };
    candidates.into_iter().nth(n).context("no such project number")
}

pub async fn all_projects(client: &Client) -> Result<Vec<Project>> {
    let user = client.user_info().await.context("asking the platform who you are")?;
    let mut projects = Vec::new();
    for membership in user.client_user_list.iter().filter(|m| m.is_active()) {
        projects.extend(client.search_projects(&membership.client_id).await?);
    }
    Ok(projects)
}

/// Registers `keys` (`whose` says which, in the error) with `project`; the answer configures
/// the connection.
pub async fn register_key(client: &Client, project: &Project, keys: &KeyPair, whose: &str) -> Result<ProjectVpnItem> {
    client
        .register_vpn_key(&project.id, &keys.public_base64())
        .await
        .with_context(|| format!("registering {whose} with project {}", project.name))
}
