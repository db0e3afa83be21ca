//! WireGuard keys as text: the 44-character base64 form that the platform, the key files and
//! the daemon's configuration use. One decoder, so every key is checked the same way.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// The 32 bytes of a base64 key, or `None` when the text is not one.
pub fn decode(text: &str) -> Option<[u8; 32]> {
    BASE64.decode(text.trim()).ok()?.try_into().ok()
}

pub fn encode(bytes: &[u8; 32]) -> String {
    BASE64.encode(bytes)
}

/// `#[serde(with = "keys::secret")]` for a private key.
pub mod secret {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    use x25519_dalek::StaticSecret;

    pub fn serialize<S: Serializer>(key: &StaticSecret, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(key.as_bytes()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StaticSecret, D::Error> {
        let text = String::deserialize(d)?;
        super::decode(&text)
            .map(StaticSecret::from)
            .ok_or_else(|| D::Error::custom("not a base64 32-byte key"))
    }
}

/// `#[serde(with = "keys::public")]` for a public key.
pub mod public {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    use x25519_dalek::PublicKey;

    pub fn serialize<S: Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(key.as_bytes()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let text = String::deserialize(d)?;
        super::decode(&text)
            .map(PublicKey::from)
            .ok_or_else(|| D::Error::custom("not a base64 32-byte key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_wrong_lengths_are_refused() {
        let text = encode(&[7; 32]);

        assert_eq!(text.len(), 44);
        assert_eq!(decode(&format!(" {text}\n")), Some([7; 32]));
        assert_eq!(decode(&BASE64.encode([7; 31])), None);
        assert_eq!(decode("not base64!"), None);
    }
}
