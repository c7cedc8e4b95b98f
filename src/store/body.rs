//! How webhook bodies are kept in the intake table.
//!
//! A body is stored LZ4-compressed (`encoding = 'lz4'`, the block format with its length
//! prepended): Alertmanager's JSON repeats itself (label names, generator URLs), so it shrinks
//! to a third or so, and an alert storm, which is exactly when disks fill up, writes a third as
//! much. Compression happens in the HTTP worker that received the body, not in the intake's
//! one writer thread. Rows written before this (`encoding` NULL) hold the JSON as received.

use std::borrow::Cow;

/// The `encoding` stored with a compressed body.
pub(crate) const LZ4: &str = "lz4";

/// No stored body is larger than this once decompressed (the webhook limit is far lower); a
/// length prefix above it means the row is damaged, and nothing that large is allocated.
const MAX_DECODED: usize = 64 << 20;

/// A body as it is written to the intake table (with [`LZ4`] as its encoding).
pub fn encode(body: &[u8]) -> Vec<u8> {
    lz4_flex::compress_prepend_size(body)
}

/// A stored body back as the JSON that arrived.
pub(crate) fn decode<'a>(
    stored: &'a [u8],
    encoding: Option<&str>,
) -> Result<Cow<'a, [u8]>, String> {
    match encoding {
        None => Ok(Cow::Borrowed(stored)),
        Some(LZ4) => {
            let declared = stored
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or("the stored body is truncated")?;
            if declared > MAX_DECODED {
                return Err(format!(
                    "the stored body claims {declared} bytes, more than any webhook; the row is damaged"
                ));
            }
            let json = lz4_flex::decompress_size_prepended(stored)
                .map_err(|e| format!("the stored body does not decompress: {e}"))?;
            if json.len() != declared {
                return Err(format!(
                    "the stored body decompresses to {} of its {declared} bytes; the row is damaged",
                    json.len()
                ));
            }
            Ok(Cow::Owned(json))
        }
        Some(other) => Err(format!(
            "the stored body has encoding {other:?}, which this version does not know"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_damage_is_an_error_not_an_allocation() {
        let body =
            br#"{"version":"4","alerts":[{"labels":{"alertname":"PostgresDown"}}]}"#.repeat(20);
        let stored = encode(&body);
        assert!(
            stored.len() < body.len() / 3,
            "{} of {}",
            stored.len(),
            body.len()
        );
        assert_eq!(
            decode(&stored, Some(LZ4)).unwrap().as_ref(),
            body.as_slice()
        );
        assert_eq!(decode(&body, None).unwrap().as_ref(), body.as_slice());
        let mut huge = stored.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge, Some(LZ4)).unwrap_err().contains("damaged"));
        assert!(decode(&stored[..stored.len() / 2], Some(LZ4)).is_err());
        assert!(decode(&stored, Some("zstd"))
            .unwrap_err()
            .contains("does not know"));
    }
}
