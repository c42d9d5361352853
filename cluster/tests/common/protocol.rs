//! The node-to-node frames' bodies, written here from the protocol's
//! description rather than taken from the crate: a request frame is
//! `(request id, Request)`, its answer `(request id, Response)`, each
//! postcard after a 4-byte big-endian length.

use serde::{Deserialize, Serialize};

/// The requests the tests send (a call).
#[derive(Serialize, Deserialize, Debug)]
pub enum Request {
    Call {
        shard: u32,
        epoch: i64,
        id: Vec<u8>,
        args: Vec<u8>,
        request: Vec<u8>,
        timeout_ms: u64,
        trace: Option<String>,
    },
}

/// Every answer of the protocol, so that any of them decodes.
#[derive(Serialize, Deserialize, Debug)]
pub enum Response {
    Reply(Vec<u8>),
    Done,
    Count(u64),
    NotOwner,
    NotFound,
    Failed(String),
}
