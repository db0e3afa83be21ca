//! Regions: the platform's list (`GET /region/zcli`, no token) and the choice of one, as the
//! platform's CLI makes it: the region named, else the default one.

use std::time::Duration;

use super::{ApiError, Client, Region};

/// Where the platform publishes its region list.
pub const DEFAULT_REGION_URL: &str = "https://api.app-prg1.zerops.io/api/rest/public/region/zcli";
/// The path every region list URL ends in; what comes before it is an API address.
const REGION_PATH: &str = "/api/rest/public/region/zcli";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("no region named {wanted:?}; the regions are: {}", names(.regions))]
    Unknown { wanted: String, regions: Vec<Region> },
    #[error("the region list names no default region; pick one with --region: {}", names(.regions))]
    NoDefault { regions: Vec<Region> },
    #[error("the region list is empty")]
    Empty,
}

/// The region list at `url` (a URL ending in `/api/rest/public/region/zcli`).
pub async fn regions_at(url: &str, timeout: Duration) -> Result<Vec<Region>, ApiError> {
    let base = url.trim().trim_end_matches('/');
    let Some(base) = base.strip_suffix(REGION_PATH) else {
        return Err(ApiError::InvalidBase {
            base: url.to_owned(),
            reason: "a region list URL ends in /api/rest/public/region/zcli",
        });
    };
    let connect = timeout.min(super::CONNECT_TIMEOUT);
    Client::new(base, None)?
        .with_timeouts(connect, timeout)?
        .regions()
        .await
}

/// The region called `wanted`, else the default one.
pub fn pick(regions: &[Region], wanted: Option<&str>) -> Result<Region, RegionError> {
    if regions.is_empty() {
        return Err(RegionError::Empty);
    }
    let found = match wanted {
        Some(wanted) => regions
            .iter()
            .find(|r| r.name == wanted)
            .ok_or_else(|| RegionError::Unknown {
                wanted: wanted.to_owned(),
                regions: regions.to_vec(),
            })?,
        None => regions
            .iter()
            .find(|r| r.is_default)
            .ok_or_else(|| RegionError::NoDefault {
                regions: regions.to_vec(),
            })?,
    };
    Ok(found.clone())
}

fn names(regions: &[Region]) -> String {
    regions
        .iter()
        .map(|r| {
            if r.is_default {
                format!("{} (default)", r.name)
            } else {
                r.name.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_region_unless_one_is_named() {
        let regions = [region("prg1", true), region("lab2", false)];

        assert_eq!(pick(&regions, None).unwrap().name, "prg1");
        assert_eq!(pick(&regions, Some("lab2")).unwrap().name, "lab2");
    }

    #[test]
    fn an_unknown_region_lists_the_known_ones() {
        let regions = [region("prg1", true), region("lab2", false)];

        let err = pick(&regions, Some("mars")).unwrap_err();

        assert_eq!(
            err.to_string(),
            "no region named \"mars\"; the regions are: prg1 (default), lab2"
        );
    }

    #[test]
    fn no_default_and_no_regions_are_errors() {
        assert!(matches!(
            pick(&[region("a", false)], None),
            Err(RegionError::NoDefault { .. })
        ));
        assert_eq!(pick(&[], None), Err(RegionError::Empty));
    }

    fn region(name: &str, is_default: bool) -> Region {
        Region {
            name: name.into(),
            is_default,
            address: format!("api.{name}.example"),
        }
    }
}
