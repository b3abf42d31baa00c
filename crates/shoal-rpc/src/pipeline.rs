//! Calls and notifications sent together in one write and answered in order, as a redis
//! pipeline is: a [`Pipeline`] is built once (each message encoded as it is added) and sent
//! with [`crate::Client::call_pipeline`] or [`crate::Peer::call_pipeline`], as often as wanted.
//!
//! Sending one costs the sender one lock of the connection's table of calls, one encode pass
//! that copies the bodies behind fresh headers, one write and, while the answers come in order,
//! one wake-up: against one of each per call when the same calls are made one by one.

use bytes::BytesMut;
use serde::Serialize;

use crate::codec::{self, RequestExt};
use crate::error::Error;

/// Messages to send together, in order: calls, each answered, and notifications.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    /// Each message's method and params (see [`codec::encode_body`]), one after another.
    bodies: BytesMut,
    messages: Vec<Message>,
    calls: usize,
}

#[derive(Debug, Clone, Copy)]
struct Message {
    /// Where its body ends in `bodies`.
    end: usize,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Call,
    Notification,
}

/// A frame of a pipeline that is over the connection's message limit.
pub(crate) struct TooLarge(pub(crate) usize);

impl Pipeline {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a call of `method` with positional `params` (a tuple, slice or `Vec`), as
    /// [`crate::Client::call`] takes them. Its answer comes back in the position of the
    /// call among the pipeline's calls.
    pub fn call<P: Serialize + ?Sized>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<&mut Self, Error> {
        self.add(Kind::Call, method, params)?;
        self.calls += 1;
        Ok(self)
    }

    /// Adds a one-way notification, sent in its place among the calls.
    pub fn notify<P: Serialize + ?Sized>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<&mut Self, Error> {
        self.add(Kind::Notification, method, params)?;
        Ok(self)
    }

    fn add<P: Serialize + ?Sized>(
        &mut self,
        kind: Kind,
        method: &str,
        params: &P,
    ) -> Result<(), Error> {
        let start = self.bodies.len();
        if let Err(e) = codec::encode_body(&mut self.bodies, method, params) {
            self.bodies.truncate(start);
            return Err(Error::Encode(format!("{method}: {e}")));
        }
        self.messages.push(Message {
            end: self.bodies.len(),
            kind,
        });
        Ok(())
    }

    /// Calls and notifications added.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Calls added: the number of answers a send gives back.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Empties the pipeline, keeping its memory.
    pub fn clear(&mut self) {
        self.bodies.clear();
        self.messages.clear();
        self.calls = 0;
    }

    /// Appends every message as a frame, numbering the calls from `first` on (in 31 bits, as
    /// a connection numbers its calls). Refuses a frame over `max` bytes; the caller then
    /// drops whatever was appended.
    pub(crate) fn encode(
        &self,
        buf: &mut BytesMut,
        first: u32,
        ext: Option<RequestExt>,
        max: usize,
    ) -> Result<(), TooLarge> {
        let mut start = 0;
        let mut id = first;
        let ext = codec::EncodedExt::new(ext);
        for m in &self.messages {
            let body = &self.bodies[start..m.end];
            start = m.end;
            let at = buf.len();
            match m.kind {
                Kind::Call => {
                    codec::encode_request_parts(buf, id, body, &ext);
                    id = id.wrapping_add(1) & 0x7fff_ffff;
                }
                Kind::Notification => codec::encode_notification_body(buf, body),
            }
            if buf.len() - at > max {
                return Err(TooLarge(buf.len() - at));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Decoder, Message as Msg};

    #[test]
    fn frames_are_the_messages_in_order_with_calls_numbered_from_the_first_id() {
        let mut p = Pipeline::new();
        p.call("echo", &("a",)).unwrap();
        p.notify("sink", &(1,)).unwrap();
        p.call("none", &()).unwrap();
        assert_eq!((p.len(), p.calls()), (3, 2));
        let mut buf = BytesMut::new();
        let ext = Some(RequestExt {
            deadline_ms: Some(250),
        });
        // The last id before the wrap: the next call takes 0.
        assert!(p.encode(&mut buf, 0x7fff_ffff, ext, 1 << 20).is_ok());
        let mut decoder = Decoder::new(1 << 20);
        let mut got = Vec::new();
        while let Some(m) = decoder.decode(&mut buf).unwrap() {
            got.push(m);
        }
        let mut expected_one = BytesMut::new();
        codec::encode_request(&mut expected_one, 0x7fff_ffff, "echo", &("a",), ext).unwrap();
        codec::encode_notification(&mut expected_one, "sink", &(1,)).unwrap();
        codec::encode_request(&mut expected_one, 0, "none", &(), ext).unwrap();
        let mut expected = Vec::new();
        while let Some(m) = decoder.decode(&mut expected_one).unwrap() {
            expected.push(m);
        }
        assert_eq!(got, expected);
        assert!(matches!(&got[2], Msg::Request { params, .. } if params.is_empty()));
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_with_its_size() {
        let mut p = Pipeline::new();
        p.call("echo", &("a",)).unwrap();
        p.call("echo", &("x".repeat(100),)).unwrap();
        let mut buf = BytesMut::new();
        match p.encode(&mut buf, 1, None, 64) {
            Err(TooLarge(size)) => assert!(size > 100, "{size}"),
            Ok(()) => panic!("a 100-byte argument fit in 64 bytes"),
        }
    }

    /// Params that cannot be encoded are refused where they are added, naming the method, and
    /// the pipeline keeps what it held.
    #[test]
    fn a_message_that_cannot_be_encoded_is_refused_and_leaves_the_rest() {
        struct Unencodable;
        impl Serialize for Unencodable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no wire form"))
            }
        }
        let mut p = Pipeline::new();
        p.call("echo", &("a",)).unwrap();
        let err = p.call("store", &(Unencodable,)).unwrap_err();
        assert!(
            matches!(&err, Error::Encode(why) if why.starts_with("store: ")),
            "{err}"
        );
        assert!(err.to_string().contains("no wire form"), "{err}");
        let err = p.notify("log", &(Unencodable,)).unwrap_err();
        assert!(
            matches!(&err, Error::Encode(why) if why.starts_with("log: ")),
            "{err}"
        );
        assert_eq!((p.len(), p.calls()), (1, 1));
        let mut buf = BytesMut::new();
        assert!(p.encode(&mut buf, 1, None, 1 << 20).is_ok());
        let mut one = BytesMut::new();
        codec::encode_request(&mut one, 1, "echo", &("a",), None).unwrap();
        assert_eq!(buf, one, "only the first call, whole");
    }

    #[test]
    fn a_cleared_pipeline_is_empty_and_takes_new_messages() {
        let mut p = Pipeline::new();
        p.call("echo", &("a",))
            .unwrap()
            .call("echo", &("b",))
            .unwrap();
        p.clear();
        assert!(p.is_empty());
        assert_eq!(p.calls(), 0);
        p.notify("sink", &()).unwrap();
        assert_eq!((p.len(), p.calls()), (1, 0));
    }
}
