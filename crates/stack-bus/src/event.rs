//! Encoding events for the wire: splitting under a size limit, decoding
//! defensively.

use stack_app::revocation::{RevocationEvent, RevocationSink};
use tracing::warn;

use crate::BusError;

/// The largest `NOTIFY` payload PostgreSQL accepts in its default build
/// ("must be shorter than 8000 bytes").
pub const PG_NOTIFY_MAX_PAYLOAD: usize = 7999;

/// Encodes `event` as one or more JSON payloads of at most `max_bytes` each.
///
/// An event that fits is encoded as is. Otherwise its `jtis` are cut into
/// consecutive runs, each sent as a copy of the event carrying only that run
/// (same operator, origin, time, and the overall latest `expires_at`, which
/// only makes a node keep an id a little longer). Fails only if one id alone
/// does not fit.
pub fn split_event(event: &RevocationEvent, max_bytes: usize) -> Result<Vec<String>, BusError> {
    let whole = serde_json::to_string(event)?;
    if whole.len() <= max_bytes {
        return Ok(vec![whole]);
    }
    let with_jtis = |jtis: Vec<String>| RevocationEvent {
        jtis,
        ..event.clone()
    };
    // Compact JSON of a list of strings is `[` + items joined by `,` + `]`,
    // so a chunk's size is the empty event's plus its items and commas.
    let base = serde_json::to_string(&with_jtis(Vec::new()))?.len();
    let mut payloads = Vec::new();
    let mut chunk: Vec<String> = Vec::new();
    let mut size = base;
    for jti in &event.jtis {
        let item = serde_json::to_string(jti)?.len();
        if base + item > max_bytes {
            return Err(BusError::EventTooLarge {
                needed: base + item,
                limit: max_bytes,
            });
        }
        let comma = usize::from(!chunk.is_empty());
        if size + comma + item > max_bytes {
            payloads.push(encode_chunk(
                with_jtis(std::mem::take(&mut chunk)),
                max_bytes,
            )?);
            size = base;
        }
        size += usize::from(!chunk.is_empty()) + item;
        chunk.push(jti.clone());
    }
    if !chunk.is_empty() || payloads.is_empty() {
        payloads.push(encode_chunk(with_jtis(chunk), max_bytes)?);
    }
    Ok(payloads)
}

fn encode_chunk(event: RevocationEvent, max_bytes: usize) -> Result<String, BusError> {
    let payload = serde_json::to_string(&event)?;
    if payload.len() > max_bytes {
        // Unreachable if the size accounting above is right; refuse rather
        // than send a message the server would reject.
        return Err(BusError::EventTooLarge {
            needed: payload.len(),
            limit: max_bytes,
        });
    }
    Ok(payload)
}

/// Decodes a received payload and applies it; logs and skips anything that
/// is not a [`RevocationEvent`].
pub(crate) fn deliver(payload: &[u8], sink: &dyn RevocationSink, backend: &'static str) {
    match serde_json::from_slice::<RevocationEvent>(payload) {
        Ok(event) => sink.apply(&event),
        // The error's category and position only: serde's message may echo
        // the payload, and anyone can publish on the channel.
        Err(err) => warn!(
            backend,
            bytes = payload.len(),
            category = ?err.classify(),
            line = err.line(),
            column = err.column(),
            "skipping malformed revocation message"
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn event(jtis: Vec<String>) -> RevocationEvent {
        RevocationEvent {
            operator_id: "op_split".into(),
            jtis,
            expires_at: 1_900_000_000,
            origin: "node-a".into(),
            at_ms: 1_700_000_000_000,
            access_changed: false,
        }
    }

    fn decode(payloads: &[String]) -> Vec<RevocationEvent> {
        payloads
            .iter()
            .map(|p| serde_json::from_str(p).unwrap())
            .collect()
    }

    #[test]
    fn small_event_is_sent_whole() {
        let e = event(vec!["pp_1".into(), "pp_2".into()]);
        let payloads = split_event(&e, PG_NOTIFY_MAX_PAYLOAD).unwrap();
        assert_eq!(payloads.len(), 1);
        assert_eq!(decode(&payloads), vec![e]);
    }

    #[test]
    fn empty_event_is_sent_whole() {
        let e = event(Vec::new());
        assert_eq!(decode(&split_event(&e, 200).unwrap()), vec![e]);
    }

    #[test]
    fn large_event_is_split_under_the_limit_keeping_every_id_in_order() {
        // Ids with characters JSON escapes, so the accounting covers escaping.
        let jtis: Vec<String> = (0..2000).map(|i| format!("pp_\"{i:026}\\")).collect();
        let e = event(jtis.clone());
        for limit in [PG_NOTIFY_MAX_PAYLOAD, 500, 151] {
            let payloads = split_event(&e, limit).unwrap();
            assert!(payloads.len() > 1);
            assert!(payloads.iter().all(|p| p.len() <= limit), "limit {limit}");
            let parts = decode(&payloads);
            let rejoined: Vec<String> = parts.iter().flat_map(|p| p.jtis.clone()).collect();
            assert_eq!(rejoined, jtis);
            for part in &parts {
                assert!(!part.jtis.is_empty());
                assert_eq!(part.operator_id, e.operator_id);
                assert_eq!(part.expires_at, e.expires_at);
                assert_eq!(part.origin, e.origin);
                assert_eq!(part.at_ms, e.at_ms);
            }
            // Chunks are filled: adding the next id to one would overflow.
            for pair in parts.windows(2) {
                let mut grown = pair[0].clone();
                grown.jtis.push(pair[1].jtis[0].clone());
                assert!(serde_json::to_string(&grown).unwrap().len() > limit);
            }
        }
    }

    #[test]
    fn an_id_too_large_for_any_message_is_refused() {
        let e = event(vec!["pp_ok".into(), "x".repeat(300)]);
        assert!(matches!(
            split_event(&e, 200),
            Err(BusError::EventTooLarge { limit: 200, .. })
        ));
    }
}
