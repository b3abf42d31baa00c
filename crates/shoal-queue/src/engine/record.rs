//! One log record on disk: `len u32 | crc32 u32 | seq u64 | payload`, little-endian, the CRC
//! covering the sequence number and the payload, so a torn or garbled tail is found on reopen.

/// Bytes before the payload.
pub const HEADER: usize = 16;

/// Appends the record for `(seq, payload)` to `out`.
pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("payload length is checked against max_message");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The size on disk of a record holding `payload_len` bytes.
pub fn size(payload_len: usize) -> u64 {
    (HEADER + payload_len) as u64
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole record whose checksum matches.
    Record { seq: u64, payload: &'a [u8] },
    /// Too few bytes for the header or the payload it announces: a write cut short.
    Torn,
    /// A whole record whose checksum does not match.
    BadChecksum,
}

/// Reads the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER {
        return Decoded::Torn;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Decoded::Torn;
    };
    if checksum(seq, payload) != crc {
        return Decoded::BadChecksum;
    }
    Decoded::Record { seq, payload }
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_any_cut_or_flipped_byte_is_found() {
        let mut buf = Vec::new();
        encode(42, b"hello", &mut buf);
        assert_eq!(buf.len() as u64, size(5));
        assert_eq!(
            decode(&buf),
            Decoded::Record {
                seq: 42,
                payload: b"hello"
            }
        );
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Decoded::Torn, "cut at {cut}");
        }
        for at in 4..buf.len() {
            let mut bad = buf.clone();
            bad[at] ^= 0x01;
            assert_eq!(decode(&bad), Decoded::BadChecksum, "flipped byte {at}");
        }
    }
}
