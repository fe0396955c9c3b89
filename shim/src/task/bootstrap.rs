//! What `start` reads on stdin and what it answers on stdout: the bootstrap protocol.
//!
//! containerd writes the container's runtime options on `start`'s stdin and reads the
//! shim's address from its stdout. Two generations of that exchange are in use:
//!
//! | containerd | stdin | the answer containerd takes | task API it then speaks |
//! |---|---|---|---|
//! | 1.6, 1.7 | the options, a protobuf `Any` | a plain address | v2 |
//! | 2.0 – 2.2 | the options, a protobuf `Any` | a plain address, or JSON `{"version": 3, ...}` | v2, or v3 |
//! | 2.3 and later | `BootstrapParams` (containerd's [`api/runtime/bootstrap/v1/bootstrap.proto`](https://github.com/containerd/containerd/blob/v2.3.4/api/runtime/bootstrap/v1/bootstrap.proto)), the options as its first extension | a `BootstrapResult` (protobuf), or any of the above | what the result says |
//!
//! 1.7 refuses a JSON answer with version 3, and 2.0 – 2.2 announce themselves as 1.7 does,
//! so a shim can only offer v3 to a containerd that sent `BootstrapParams`: this shim answers
//! those with a `BootstrapResult` saying version 3, and everyone else with a plain address.
//! The daemon serves both task APIs either way (`task/daemon.rs`): a containerd restarted as
//! another version finds the one it speaks.

use containerd_shim_protos::protobuf::{
    rt::WireType, well_known_types::any::Any, CodedInputStream, CodedOutputStream, Message,
};

/// What `start` learnt from its stdin.
#[derive(Debug, Default, PartialEq)]
pub struct Request {
    /// The container's runtime options, if containerd sent any.
    pub options: Option<Any>,
    /// The version of a containerd that sent `BootstrapParams` (2.3 and later), which takes
    /// a `BootstrapResult`.
    pub containerd_version: Option<String>,
}

/// Reads what containerd wrote: `BootstrapParams` (told apart by its `containerd_version`,
/// which an `Any` has no field for), or the options themselves.
pub fn read(input: &[u8]) -> Request {
    if input.is_empty() {
        return Request::default();
    }
    if let Some(params) = Params::decode(input) {
        return Request {
            options: params.options,
            containerd_version: Some(params.containerd_version),
        };
    }
    Request {
        options: Any::parse_from_bytes(input).ok(),
        containerd_version: None,
    }
}

/// The answer to print: a `BootstrapResult` for a containerd that sent `BootstrapParams`
/// (task API v3 over ttrpc at `address`), a plain address otherwise (task API v2).
pub fn answer(request: &Request, address: &str) -> Vec<u8> {
    if request.containerd_version.is_none() {
        return address.as_bytes().to_vec();
    }
    let mut bytes = Vec::new();
    let mut out = CodedOutputStream::vec(&mut bytes);
    // version = 1, address = 2, protocol = 3.
    let written = out
        .write_int32(1, 3)
        .and_then(|()| out.write_string(2, address))
        .and_then(|()| out.write_string(3, "ttrpc"))
        .and_then(|()| out.flush());
    drop(out);
    match written {
        Ok(()) => bytes,
        // Writing into a Vec cannot fail; a plain address is still a valid answer.
        Err(_) => address.as_bytes().to_vec(),
    }
}

/// The fields of `BootstrapParams` this shim reads.
#[derive(Debug, Default)]
struct Params {
    containerd_version: String,
    options: Option<Any>,
}

impl Params {
    /// `containerd_version` (4) and the first of `extensions` (8, each an
    /// `Extension` whose field 1 is an `Any`); the rest skipped. `None` when the bytes are
    /// not such a message (the options `Any` of an older containerd).
    fn decode(bytes: &[u8]) -> Option<Params> {
        let mut input = CodedInputStream::from_bytes(bytes);
        let mut params = Params::default();
        while let Some(tag) = input.read_raw_tag_or_eof().ok()? {
            match tag {
                0x22 => params.containerd_version = input.read_string().ok()?,
                0x42 if params.options.is_none() => {
                    let extension = input.read_bytes().ok()?;
                    let mut inner = CodedInputStream::from_bytes(&extension);
                    while let Some(tag) = inner.read_raw_tag_or_eof().ok()? {
                        if tag == 0x0a {
                            params.options =
                                Some(Any::parse_from_bytes(&inner.read_bytes().ok()?).ok()?);
                        } else {
                            inner.skip_field(WireType::new(tag & 7)?).ok()?;
                        }
                    }
                }
                _ => input.skip_field(WireType::new(tag & 7)?).ok()?,
            }
        }
        (!params.containerd_version.is_empty()).then_some(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `BootstrapParams` as containerd 2.3 encodes it, with `options` as its extension.
    fn params(id: &str, version: &str, options: &Any) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut out = CodedOutputStream::vec(&mut bytes);
        out.write_string(1, id).expect("id");
        out.write_string(2, "k8s.io").expect("namespace");
        out.write_string(4, version).expect("version");
        let mut extension = Vec::new();
        let mut inner = CodedOutputStream::vec(&mut extension);
        inner
            .write_bytes(1, &options.write_to_bytes().expect("any"))
            .expect("value");
        inner.flush().expect("flush");
        drop(inner);
        out.write_bytes(8, &extension).expect("extension");
        out.flush().expect("flush");
        drop(out);
        bytes
    }

    fn options() -> Any {
        Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x32, 4, b'r', b'u', b'n', b'c'],
            ..Default::default()
        }
    }

    #[test]
    fn containerd_2_3_sends_bootstrap_params_and_takes_a_v3_result() {
        let request = read(&params("c1", "2.3.4", &options()));
        assert_eq!(request.options, Some(options()));
        assert_eq!(request.containerd_version.as_deref(), Some("2.3.4"));
        let answer = answer(&request, "unix:///run/containerd/s/abc");
        let mut input = CodedInputStream::from_bytes(&answer);
        let mut fields = Vec::new();
        while let Some(tag) = input.read_raw_tag_or_eof().expect("tag") {
            match tag >> 3 {
                1 => fields.push(input.read_int32().expect("version").to_string()),
                _ => fields.push(input.read_string().expect("string")),
            }
        }
        assert_eq!(fields, ["3", "unix:///run/containerd/s/abc", "ttrpc"]);
    }

    #[test]
    fn older_containerds_send_the_options_and_take_a_plain_address() {
        let bytes = options().write_to_bytes().expect("any");
        let request = read(&bytes);
        assert_eq!(request.options, Some(options()));
        assert_eq!(request.containerd_version, None);
        assert_eq!(answer(&request, "unix:///x"), b"unix:///x");
        assert_eq!(read(&[]), Request::default());
    }
}
