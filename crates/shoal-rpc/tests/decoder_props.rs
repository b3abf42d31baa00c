//! Property tests of the streaming `Decoder` against an independent reference reader written
//! here: random bytes, valid message streams with bytes flipped, inserted, deleted or replaced
//! by 4 GiB length claims, and valid streams cut anywhere, all fed in random chunks. The
//! decoder must never panic, must agree with the reference on every message and every error,
//! and must never hold more than one message's limit of bytes. `fuzz/` runs the same decoder
//! under libFuzzer.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use shoal_rpc::codec::{DecodeError, Decoder, Message, DEFAULT_MAX_DEPTH};
use shoal_rpc::Value;

/// A small limit, so that large messages and length claims are common in the inputs.
const MAX: usize = 4096;
/// Length bytes of the one header that may straddle the limit: the decoder can only judge an
/// item once its length field (at most 4 bytes after the marker) has arrived.
const HEADER_SLACK: usize = 4;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_agree_with_the_reference(bytes in noise(), chunks in chunk_sizes()) {
        check_stream(&bytes, &chunks);
    }
}

// Generating message streams costs more than the checks: fewer cases keep the run short.
proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn mutated_streams_agree_with_the_reference(
        msgs in vec(message(), 1..6),
        mutations in vec(mutation(), 1..6),
        chunks in chunk_sizes(),
    ) {
        let mut bytes = encode(&msgs);
        for m in &mutations {
            m.apply(&mut bytes);
        }
        check_stream(&bytes, &chunks);
    }

    #[test]
    fn valid_streams_cut_anywhere_decode_to_the_original_messages(
        msgs in vec(message(), 1..8),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let bytes = encode(&msgs);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut dec = Decoder::new(1 << 26);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut start = 0;
        for cut in cuts {
            buf.extend_from_slice(&bytes[start..cut]);
            start = cut;
            while let Some(m) = dec.decode(&mut buf).unwrap() {
                got.push(format!("{m:?}"));
            }
        }
        let want: Vec<String> = msgs
            .iter()
            .map(|v| format!("{:?}", Message::from_value(v.clone()).unwrap()))
            .collect();
        prop_assert_eq!(got, want);
        prop_assert!(buf.is_empty());
    }
}

#[test]
fn length_claims_of_4_gib_fail_as_soon_as_the_header_arrives() {
    // Each 32-bit length form claiming 2^32 - 1 bytes (or items), at the top level and as the
    // params of a request, fed one byte at a time.
    for claim in [
        &[0xc6, 0xff, 0xff, 0xff, 0xff][..], // bin 32
        &[0xdb, 0xff, 0xff, 0xff, 0xff],     // str 32
        &[0xc9, 0xff, 0xff, 0xff, 0xff, 1],  // ext 32
        &[0xdd, 0xff, 0xff, 0xff, 0xff],     // array 32
        &[0xdf, 0xff, 0xff, 0xff, 0xff],     // map 32
    ] {
        for (head, id) in [
            (&[][..], None),
            (&[0x94, 0x00, 0x07, 0xa1, b'm'][..], Some(7)),
        ] {
            let stream = [head, claim].concat();
            let mut dec = Decoder::new(MAX);
            let mut buf = BytesMut::new();
            let mut result = Ok(None);
            for b in &stream {
                buf.extend_from_slice(&[*b]);
                result = dec.decode(&mut buf);
                if !matches!(result, Ok(None)) {
                    break;
                }
            }
            match result {
                // Arrays and maps are judged by their items, which have not arrived.
                Ok(None) if matches!(claim[0], 0xdd | 0xdf) => {}
                Err(DecodeError::FrameTooLarge { size, max, id: got }) => {
                    assert!(size > MAX && max == MAX, "{claim:x?}: {size} {max}");
                    assert_eq!(got, id.map(Value::from), "{claim:x?} after {head:x?}");
                    assert!(buf.len() <= head.len() + 1 + HEADER_SLACK);
                }
                other => panic!("{claim:x?} after {head:x?}: {other:?}"),
            }
        }
    }
    // An array claiming 2^32 - 1 items fails once its items pass the limit, not before.
    let mut stream = vec![0xdd, 0xff, 0xff, 0xff, 0xff];
    stream.resize(MAX + 1, 0x01);
    let run = feed(&stream, &[1000]);
    assert!(
        matches!(run.end, End::Failed(DecodeError::FrameTooLarge { .. })),
        "{:?}",
        run.end
    );
}

#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    let too_deep = vec![0x91; DEFAULT_MAX_DEPTH + 1];
    let run = feed(&too_deep, &[7]);
    assert_eq!(
        run.end,
        End::Failed(DecodeError::TooDeep {
            max: DEFAULT_MAX_DEPTH
        })
    );
    // Empty containers close at once, so any number of them side by side is shallow.
    let mut flat = vec![0x93, 0x02, 0xa1, b'm', 0xdc, 0x03, 0xe8];
    flat.extend(std::iter::repeat_n(0x90, 1000));
    let run = feed(&flat, &[64]);
    assert_eq!((run.messages.len(), run.end), (1, End::NeedMore));
}

/// Feeds `bytes` in chunks of the given sizes (cycled) and checks every message and the way
/// the stream ends against [`reference`].
fn check_stream(bytes: &[u8], chunks: &[usize]) {
    let run = feed(bytes, chunks);
    let mut offset = 0;
    for (msg, end) in &run.messages {
        match reference(&bytes[offset..]) {
            Reference::Value(v, n) => {
                assert!(n <= MAX, "a message of {n} bytes passed the limit");
                let want = Message::from_value(v.clone())
                    .unwrap_or_else(|e| panic!("decoded {msg:?}; the reference says {e}"));
                assert_eq!(format!("{msg:?}"), format!("{want:?}"));
                offset += n;
                assert_eq!(offset, *end, "the decoder consumed a different length");
            }
            other => panic!("decoded {msg:?} at {offset}; the reference says {other:?}"),
        }
    }
    let rest = reference(&bytes[offset..]);
    let agrees = match (&run.end, &rest) {
        (End::NeedMore, Reference::Incomplete) => true,
        (End::Failed(DecodeError::FrameTooLarge { size, max, .. }), _) => {
            *size > MAX && *max == MAX && !matches!(rest, Reference::Value(_, n) if n <= MAX)
        }
        (End::Failed(DecodeError::TooDeep { max }), Reference::TooDeep) => {
            *max == DEFAULT_MAX_DEPTH
        }
        (End::Failed(DecodeError::Malformed(_)), Reference::Reserved) => true,
        (End::Failed(DecodeError::Malformed(_)), Reference::Value(v, n)) => {
            *n <= MAX && Message::from_value(v.clone()).is_err()
        }
        _ => false,
    };
    assert!(
        agrees,
        "the decoder ended with {:?} at {offset}; the reference says {rest:?}",
        run.end
    );
}

/// What a decoder made of a stream.
#[derive(Debug)]
struct Run {
    /// Each message and the stream offset just past it.
    messages: Vec<(Message, usize)>,
    end: End,
}

#[derive(Debug, PartialEq)]
enum End {
    /// Everything was read; the decoder waits for more.
    NeedMore,
    Failed(DecodeError),
}

/// Feeds `bytes` to a decoder limited to [`MAX`] the way a connection does: append what one
/// read returned, then take every complete message. Checks that the bytes buffered never
/// exceed one message's limit (plus a straddling header) and the read just made.
fn feed(bytes: &[u8], chunks: &[usize]) -> Run {
    let mut dec = Decoder::new(MAX);
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    while fed < bytes.len() {
        let n = (*sizes.next().unwrap()).clamp(1, bytes.len() - fed);
        buf.extend_from_slice(&bytes[fed..fed + n]);
        fed += n;
        assert!(
            buf.len() <= MAX + HEADER_SLACK + n,
            "{} bytes buffered",
            buf.len()
        );
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => messages.push((m, fed - buf.len())),
                Ok(None) => break,
                Err(e) => {
                    return Run {
                        messages,
                        end: End::Failed(e),
                    }
                }
            }
        }
        assert!(
            buf.len() <= MAX + HEADER_SLACK,
            "{} bytes of one message buffered",
            buf.len()
        );
    }
    Run {
        messages,
        end: End::NeedMore,
    }
}

/// An independent reading of the MessagePack value at the front of a stream.
#[derive(Debug)]
enum Reference {
    /// A whole value and its length in bytes.
    Value(Value, usize),
    /// The stream ends inside the value.
    Incomplete,
    /// The marker 0xc1, which MessagePack never uses.
    Reserved,
    /// A non-empty array or map nested more than [`DEFAULT_MAX_DEPTH`] levels deep.
    TooDeep,
}

fn reference(bytes: &[u8]) -> Reference {
    let mut r = Reader { bytes, pos: 0 };
    match r.value(0) {
        Ok(v) => Reference::Value(v, r.pos),
        Err(stop) => stop,
    }
}

/// A recursive reader that checks a length against what is left before taking it, so a
/// length claim costs nothing.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn value(&mut self, level: usize) -> Result<Value, Reference> {
        let m = self.take(1)?[0];
        Ok(match m {
            0x00..=0x7f => Value::from(m),
            0xe0..=0xff => Value::from(m as i8),
            0xc0 => Value::Nil,
            0xc1 => return Err(Reference::Reserved),
            0xc2 => Value::Boolean(false),
            0xc3 => Value::Boolean(true),
            0x80..=0x8f => self.map(u64::from(m & 0x0f), level)?,
            0x90..=0x9f => self.array(u64::from(m & 0x0f), level)?,
            0xa0..=0xbf => self.str(u64::from(m & 0x1f))?,
            0xd9..=0xdb => {
                let len = self.uint(1 << (m - 0xd9))?;
                self.str(len)?
            }
            0xc4..=0xc6 => {
                let len = self.uint(1 << (m - 0xc4))?;
                Value::Binary(self.take(len)?.to_vec())
            }
            0xc7..=0xc9 => {
                let len = self.uint(1 << (m - 0xc7))?;
                self.ext(len)?
            }
            0xd4..=0xd8 => self.ext(1 << (m - 0xd4))?,
            0xca => Value::F32(f32::from_bits(self.uint(4)? as u32)),
            0xcb => Value::F64(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => Value::from(self.uint(1 << (m - 0xcc))?),
            0xd0 => Value::from(self.uint(1)? as u8 as i8),
            0xd1 => Value::from(self.uint(2)? as u16 as i16),
            0xd2 => Value::from(self.uint(4)? as u32 as i32),
            0xd3 => Value::from(self.uint(8)? as i64),
            0xdc | 0xdd => {
                let len = self.uint(2 << (m - 0xdc))?;
                self.array(len, level)?
            }
            0xde | 0xdf => {
                let len = self.uint(2 << (m - 0xde))?;
                self.map(len, level)?
            }
        })
    }

    fn array(&mut self, len: u64, level: usize) -> Result<Value, Reference> {
        if len > 0 && level >= DEFAULT_MAX_DEPTH {
            return Err(Reference::TooDeep);
        }
        let mut items = Vec::new();
        for _ in 0..len {
            items.push(self.value(level + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, len: u64, level: usize) -> Result<Value, Reference> {
        if len > 0 && level >= DEFAULT_MAX_DEPTH {
            return Err(Reference::TooDeep);
        }
        let mut entries = Vec::new();
        for _ in 0..len {
            let k = self.value(level + 1)?;
            entries.push((k, self.value(level + 1)?));
        }
        Ok(Value::Map(entries))
    }

    /// A `str`, kept as raw bytes when they are not UTF-8, as rmpv keeps them.
    fn str(&mut self, len: u64) -> Result<Value, Reference> {
        let body = self.take(len)?;
        let mut enc = vec![0xdb];
        enc.extend_from_slice(&(body.len() as u32).to_be_bytes());
        enc.extend_from_slice(body);
        Ok(rmpv::decode::read_value(&mut &enc[..]).expect("a str32 re-encoded here"))
    }

    fn ext(&mut self, len: u64) -> Result<Value, Reference> {
        let ty = self.take(1)?[0] as i8;
        Ok(Value::Ext(ty, self.take(len)?.to_vec()))
    }

    fn uint(&mut self, n: u64) -> Result<u64, Reference> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn take(&mut self, n: u64) -> Result<&[u8], Reference> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(Reference::Incomplete);
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }
}

/// One change to a valid stream.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    /// Inserts a 32-bit length header claiming 2^32 - 1 bytes or items.
    Claim(Index, u8),
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Mutation::Flip(at, bit) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes[at] ^= 1 << (bit % 8);
            }
            Mutation::Insert(at, b) => bytes.insert(at.index(bytes.len() + 1), *b),
            Mutation::Delete(at) if !bytes.is_empty() => {
                bytes.remove(at.index(bytes.len()));
            }
            Mutation::Claim(at, marker) => {
                let at = at.index(bytes.len() + 1);
                let mut claim = vec![*marker, 0xff, 0xff, 0xff, 0xff];
                if *marker == 0xc9 {
                    claim.push(0x01); // ext type
                }
                bytes.splice(at..at, claim);
            }
            _ => {}
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        1 => (any::<Index>(), prop::sample::select(vec![0xc6u8, 0xc9, 0xdb, 0xdd, 0xdf]))
            .prop_map(|(i, m)| Mutation::Claim(i, m)),
    ]
}

/// Random bytes, weighted towards markers that open containers or claim lengths, sometimes
/// behind a valid request head so that the decoder gets past the first byte.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => any::<u8>(),
        2 => prop::sample::select(vec![
            0x00u8, 0x01, 0x02, 0x91, 0x94, 0x9f, 0x81, 0x8f, 0xa3, 0xc0, 0xc1, 0xc4, 0xc5, 0xc6,
            0xc7, 0xc9, 0xca, 0xcb, 0xcf, 0xd4, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
            0xff,
        ]),
    ];
    let head = prop::sample::select(vec![
        &[][..],
        &[0x94, 0x00][..],
        &[0x94, 0x00, 0x01, 0xa1, b'm'][..],
        &[0x93, 0x02, 0xa1, b'm'][..],
        &[0x94, 0x01, 0x01, 0xc0][..],
    ]);
    (head, vec(byte, 0..600)).prop_map(|(head, body)| [head, &body[..]].concat())
}

/// Read sizes: mostly small (every cut point gets exercised), sometimes a whole stream.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(
        prop_oneof![4 => 1usize..16, 2 => 1usize..2048, 1 => Just(usize::MAX)],
        1..6,
    )
}

fn encode(msgs: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        rmpv::encode::write_value(&mut out, m).unwrap();
    }
    out
}

/// A request (with or without shoal's extension), a response or a notification.
fn message() -> impl Strategy<Value = Value> {
    let params = || vec(value(), 0..4).prop_map(Value::Array);
    let ext = prop_oneof![
        Just(Value::Map(vec![])),
        any::<u64>().prop_map(|ms| Value::Map(vec![("deadline_ms".into(), ms.into())])),
        value(),
    ];
    prop_oneof![
        (msgid(), method(), params()).prop_map(|(id, m, p)| Value::Array(vec![0.into(), id, m, p])),
        (msgid(), method(), params(), ext).prop_map(|(id, m, p, e)| Value::Array(vec![
            0.into(),
            id,
            m,
            p,
            e
        ])),
        (msgid(), value(), value()).prop_map(|(id, err, res)| Value::Array(vec![
            1.into(),
            id,
            err,
            res
        ])),
        (method(), params()).prop_map(|(m, p)| Value::Array(vec![2.into(), m, p])),
    ]
}

fn msgid() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => any::<u32>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::F64),
        1 => any::<f32>().prop_map(Value::F32),
    ]
}

fn method() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "[a-z_.]{0,24}".prop_map(Value::from),
        1 => vec(any::<u8>(), 0..8).prop_map(Value::Binary),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        2 => Just(Value::Nil),
        2 => any::<bool>().prop_map(Value::Boolean),
        4 => any::<i64>().prop_map(Value::from),
        4 => any::<u64>().prop_map(Value::from),
        1 => any::<f32>().prop_map(Value::F32),
        1 => any::<f64>().prop_map(Value::F64),
        4 => ".{0,40}".prop_map(Value::from),
        2 => vec(any::<u8>(), 0..300).prop_map(Value::Binary),
        1 => (any::<i8>(), vec(any::<u8>(), 0..20)).prop_map(|(t, d)| Value::Ext(t, d)),
        // Around the lengths where str 8 gives way to str 16, and str 16 to str 32.
        1 => prop_oneof![250usize..260, 65_530usize..65_540].prop_map(|n| Value::from("s".repeat(n))),
    ];
    leaf.prop_recursive(3, 48, 18, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..18).prop_map(Value::Array),
            vec((inner.clone(), inner), 0..17).prop_map(Value::Map),
        ]
    })
}
