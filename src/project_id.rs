//! A project id, checked once where it enters (an API answer, a file name, the command line) and
//! carried as a type from then on: every path and URL built from it is safe by construction.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The platform's ids are 22-character short UUIDs; any id of up to 64 ASCII letters, digits,
/// `-` and `_` is accepted, which keeps it a plain file name and URL segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid project id (up to 64 letters, digits, '-' or '_')")]
pub struct InvalidProjectId(pub String);

const MAX_LEN: usize = 64;

impl ProjectId {
    pub fn parse(text: &str) -> Result<ProjectId, InvalidProjectId> {
        let valid = !text.is_empty()
            && text.len() <= MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !valid {
            return Err(InvalidProjectId(text.chars().take(MAX_LEN + 1).collect()));
        }
        Ok(ProjectId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ProjectId {
    type Err = InvalidProjectId;

    fn from_str(text: &str) -> Result<ProjectId, InvalidProjectId> {
        ProjectId::parse(text)
    }
}

impl TryFrom<String> for ProjectId {
    type Error = InvalidProjectId;

    fn try_from(text: String) -> Result<ProjectId, InvalidProjectId> {
        ProjectId::parse(&text)
    }
}

impl From<ProjectId> for String {
    fn from(id: ProjectId) -> String {
        id.0
    }
}

impl AsRef<str> for ProjectId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ProjectId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ProjectId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_ids_pass_and_path_tricks_do_not() {
        assert!(ProjectId::parse("Ab3_dEf-GhIjKlMnOpQrSt").is_ok());
        for bad in [
            "",
            "..",
            "../etc/passwd",
            "a/b",
            "a b",
            "ä",
            ".hidden",
            "x.journal",
            &"a".repeat(65),
        ] {
            assert!(ProjectId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn an_answer_with_a_bad_id_does_not_deserialize() {
        let ok: Result<ProjectId, _> = serde_json::from_str("\"abc_123\"");
        let bad: Result<ProjectId, _> = serde_json::from_str("\"../../x\"");

        assert_eq!(ok.unwrap().as_str(), "abc_123");
        assert!(bad.unwrap_err().to_string().contains("not a valid project id"));
    }
}
