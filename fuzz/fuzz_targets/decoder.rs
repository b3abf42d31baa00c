//! libFuzzer target for the streaming MessagePack-RPC decoder: the input is fed in chunks of
//! sizes drawn from its first byte, and must decode exactly as it does in one piece, with the
//! bytes buffered for one message never past the limit (plus one straddling header).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal_rpc::codec::{DecodeError, Decoder};

/// A small limit, so that length claims and large messages hit it often.
const MAX: usize = 4096;
/// Length bytes of a header the decoder has to see before it can judge the item.
const HEADER_SLACK: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = decode(stream, || usize::MAX);
    let mut state = u32::from(seed) | 1;
    let chunked = decode(stream, move || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        1 + (state >> 16) as usize % 97
    });
    assert_eq!(whole, chunked);
});

/// The messages decoded (as text, so NaN floats compare equal) and the kind of error that
/// ended the stream, if any.
fn decode(stream: &[u8], mut chunk: impl FnMut() -> usize) -> (Vec<String>, Option<&'static str>) {
    let mut dec = Decoder::new(MAX);
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut fed = 0;
    while fed < stream.len() {
        let n = chunk().clamp(1, stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => messages.push(format!("{m:?}")),
                Ok(None) => break,
                Err(e) => return (messages, Some(kind(&e))),
            }
        }
        assert!(
            buf.len() <= MAX + HEADER_SLACK,
            "{} bytes of one message buffered",
            buf.len()
        );
    }
    (messages, None)
}

fn kind(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::FrameTooLarge { size, max, .. } => {
            assert!(*size > *max);
            "frame too large"
        }
        DecodeError::TooDeep { .. } => "too deep",
        DecodeError::Malformed(_) => "malformed",
    }
}
