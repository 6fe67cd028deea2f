//! JSON parsing that refuses duplicate object keys, at any depth.
//!
//! serde_json keeps the last of two equal keys; a verifier and another party
//! reading the same bytes could then disagree on a claim. Keys are compared
//! after unescaping, so `"a"` and `"\u0061"` collide. Nesting is bounded by
//! serde_json's recursion limit (128).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

const DUPLICATE: &str = "duplicate object key";

/// Why bytes are not a strict JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrictError {
    DuplicateKey,
    NotJson,
    NotObject,
}

/// Parses `bytes` as one JSON object without duplicate keys.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, StrictError> {
    match serde_json::from_slice::<Strict>(bytes) {
        Ok(Strict(Value::Object(map))) => Ok(map),
        Ok(_) => Err(StrictError::NotObject),
        Err(e) if e.is_data() && e.to_string().starts_with(DUPLICATE) => {
            Err(StrictError::DuplicateKey)
        }
        Err(_) => Err(StrictError::NotJson),
    }
}

/// Checks that `bytes` are one JSON value without duplicate keys, building
/// nothing (keys are borrowed when they have no escapes). Typed parsing
/// follows separately.
pub(crate) fn check_no_duplicates(bytes: &[u8]) -> Result<(), StrictError> {
    match serde_json::from_slice::<NoDuplicates>(bytes) {
        Ok(NoDuplicates) => Ok(()),
        Err(e) if e.is_data() && e.to_string().starts_with(DUPLICATE) => {
            Err(StrictError::DuplicateKey)
        }
        Err(_) => Err(StrictError::NotJson),
    }
}

struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        // Objects in a passport are small; a linear scan beats hashing them.
        // A hostile 16 KiB object of ~2,000 keys costs ~2M short compares.
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if seen.contains(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            seen.push(key);
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let Strict(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_duplicates_at_any_depth_and_after_unescaping() {
        assert!(parse_object(br#"{"a":1,"b":{"c":[1,2.5,"x",null,true]}}"#).is_ok());
        for dup in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"a":1,"\u0061":1}"#,
            br#"{"x":{"b":1,"b":1}}"#,
            br#"{"x":[{"b":1,"b":1}]}"#,
        ] {
            assert_eq!(parse_object(dup), Err(StrictError::DuplicateKey));
        }
        for dup in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"a":1,"\u0061":1}"#,
            br#"{"x":{"b":1,"b":1}}"#,
            br#"{"x":[{"b":1,"b":1}]}"#,
        ] {
            assert_eq!(check_no_duplicates(dup), Err(StrictError::DuplicateKey));
        }
        assert_eq!(
            check_no_duplicates(br#"{"a":1,"b":{"a":[1,2.5,"x",null,true,{"a":1}]}}"#),
            Ok(())
        );
        assert_eq!(check_no_duplicates(b"{} x"), Err(StrictError::NotJson));
        assert_eq!(
            check_no_duplicates(&[b'['; 10_000]),
            Err(StrictError::NotJson)
        );
        assert_eq!(parse_object(b"[1]"), Err(StrictError::NotObject));
        assert_eq!(parse_object(b"{"), Err(StrictError::NotJson));
        assert_eq!(parse_object(b"{} x"), Err(StrictError::NotJson));
        assert_eq!(parse_object(&[b'['; 10_000]), Err(StrictError::NotJson));
        // A custom message elsewhere that merely contains the marker is not a duplicate.
        assert_eq!(
            parse_object(br#"{"duplicate object key":1}"#).map(|m| m.len()),
            Ok(1)
        );
    }
}
