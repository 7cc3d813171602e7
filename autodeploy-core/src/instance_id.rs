//! Short, lowercase instance identifiers such as `xykemlvy`.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand::RngExt;

/// Number of characters in every [`InstanceId`].
pub const INSTANCE_ID_LEN: usize = 8;

/// The identifier of one instance: exactly eight ASCII characters from `[a-z0-9]`.
///
/// Generated ids use letters only, as in the product's `xykemlvy`. The value is `Copy` and
/// compares byte-wise, so ordered collections of ids are cheap to search.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId([u8; INSTANCE_ID_LEN]);

/// Why a string is not an [`InstanceId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceIdError {
    /// The string does not have exactly [`INSTANCE_ID_LEN`] bytes.
    #[error("instance id must be {INSTANCE_ID_LEN} characters, got {0}")]
    Length(usize),
    /// The string holds a byte outside `[a-z0-9]`.
    #[error("instance id may only contain a-z and 0-9")]
    Character,
}

impl InstanceId {
    /// A fresh random id drawn from `rng` (letters `a`–`z` only).
    pub fn random(rng: &mut impl Rng) -> Self {
        let mut bytes = [0u8; INSTANCE_ID_LEN];
        for b in &mut bytes {
            *b = b'a' + rng.random_range(0..26u8);
        }
        Self(bytes)
    }

    /// A fresh id from the thread-local generator.
    pub fn generate() -> Self {
        Self::random(&mut rand::rng())
    }

    /// Parses raw bytes, e.g. a header value; never panics.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, InstanceIdError> {
        let bytes: [u8; INSTANCE_ID_LEN] = raw
            .try_into()
            .map_err(|_| InstanceIdError::Length(raw.len()))?;
        if bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            Ok(Self(bytes))
        } else {
            Err(InstanceIdError::Character)
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        // Constructors admit only ASCII, so this never fails.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl FromStr for InstanceId {
    type Err = InstanceIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(s.as_bytes())
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({})", self.as_str())
    }
}

impl serde::Serialize for InstanceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for InstanceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_round_trip() {
        for _ in 0..100 {
            let id = InstanceId::generate();
            assert_eq!(id.as_str().len(), INSTANCE_ID_LEN);
            assert!(id.as_str().bytes().all(|b| b.is_ascii_lowercase()));
            assert_eq!(id.to_string().parse::<InstanceId>(), Ok(id));
        }
    }

    #[test]
    fn seed_id_parses_and_bad_ids_do_not() {
        assert_eq!(
            "xykemlvy".parse::<InstanceId>().unwrap().as_str(),
            "xykemlvy"
        );
        assert_eq!("".parse::<InstanceId>(), Err(InstanceIdError::Length(0)));
        assert_eq!(
            "XYKEMLVY".parse::<InstanceId>(),
            Err(InstanceIdError::Character)
        );
        assert_eq!(
            "xykemlv".parse::<InstanceId>(),
            Err(InstanceIdError::Length(7))
        );
        assert!("xykeml\u{e9}".parse::<InstanceId>().is_err());
    }

    proptest! {
        #[test]
        fn parsing_any_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(id) = InstanceId::from_bytes(&raw) {
                prop_assert_eq!(id.as_str().as_bytes(), &raw[..]);
            }
        }
    }
}
