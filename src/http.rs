//! Plain HTTP messages exchanged between the hosts and the core.
//!
//! The core never touches a socket; a host decodes an incoming HTTP/1.1 request
//! into a [`Request`], hands it to [`crate::proxy::Proxy::handle`] and encodes the
//! returned [`Response`]. The same types are used for requests the core sends to a
//! backend through [`crate::transport::Transport`].

/// An HTTP method, as far as the InfluxDB 1.x API uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    /// `DELETE` (InfluxDB 3's `/api/v3/configure/database`).
    Delete,
    /// Any other method (answered 405 by the proxy).
    Other,
}

impl Method {
    /// Parses a method name (`"GET"`, ...); unknown names give [`Method::Other`].
    pub fn parse(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }

    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Other => "OTHER",
        }
    }
}

/// One HTTP request: method, path (without the query string), the decoded query
/// parameters in order, headers (names lower-case) and the whole body in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Path only, e.g. `/write`.
    pub path: String,
    /// Percent-decoded query parameters, in the order they came.
    pub query: Vec<(String, String)>,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client's IP address as the host's socket saw it (no proxy
    /// headers are trusted), `None` when the host does not know it (and in
    /// requests the core sends to backends). Used to answer `POST /reload`
    /// only to loopback peers.
    pub peer: Option<std::net::IpAddr>,
}

impl Request {
    /// A request with no query, headers or body, and no peer address.
    pub fn new(method: Method, path: &str) -> Request {
        Request {
            method,
            path: path.to_string(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            peer: None,
        }
    }

    /// The first value of query parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// One HTTP response: status code, headers (names lower-case) and body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with this status and no headers or body.
    pub fn empty(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }

    /// A JSON response (`content-type: application/json`).
    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response { status, headers: vec![("content-type".into(), "application/json".into())], body }
    }

    /// The first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// Immutable bytes shared by reference count: cloning or slicing copies no
/// bytes. One write body is sent to every replica of its replica set as one
/// `SharedBytes` ([`crate::transport::Transport::send_shared`]). An `Arc`
/// (not an `Rc`) so that a host may hand the bytes to a writer task or
/// another thread (http-types bodies must be `Send + Sync`).
///
/// Bytes known to be UTF-8 (made [`From<String>`], or checked once by
/// [`SharedBytes::into_text`]) keep that knowledge: [`SharedBytes::as_str`]
/// gives them as text without reading them again (a write body's text is
/// checked once, on the worker that validates it, not again on the proxy's
/// thread).
#[derive(Clone, Default)]
pub struct SharedBytes {
    buf: std::sync::Arc<Held>,
    start: usize,
    end: usize,
}

/// What a [`SharedBytes`] holds: bytes, or bytes known to be UTF-8.
enum Held {
    Bytes(Vec<u8>),
    Text(String),
}

impl Default for Held {
    fn default() -> Held {
        Held::Bytes(Vec::new())
    }
}

impl Held {
    fn bytes(&self) -> &[u8] {
        match self {
            Held::Bytes(bytes) => bytes,
            Held::Text(text) => text.as_bytes(),
        }
    }
}

impl SharedBytes {
    /// Bytes `range` of these (offsets relative to them, clamped to their
    /// length), sharing the buffer.
    pub fn slice(&self, range: std::ops::Range<usize>) -> SharedBytes {
        let end = self.start + range.end.min(self.len());
        let start = (self.start + range.start).min(end);
        SharedBytes { buf: self.buf.clone(), start, end }
    }

    /// These bytes as text, when they are known to be UTF-8 (see the type's
    /// doc); `None` says nothing about them (they may still be UTF-8). No
    /// byte is read: O(1).
    pub fn as_str(&self) -> Option<&str> {
        match &*self.buf {
            Held::Text(text) => text.get(self.start..self.end),
            Held::Bytes(_) => None,
        }
    }

    /// These bytes, checked once to be UTF-8 and from then on known to be
    /// ([`SharedBytes::as_str`]). Without a copy when they are the whole of
    /// a buffer no other `SharedBytes` shares; otherwise checked in place,
    /// and then known only if they were already. Error: the bytes are not
    /// UTF-8 (the returned value holds them as before).
    pub fn into_text(self) -> Result<SharedBytes, (SharedBytes, std::str::Utf8Error)> {
        if self.as_str().is_some() {
            return Ok(self);
        }
        let (start, end) = (self.start, self.end);
        if start != 0 || end != self.buf.bytes().len() {
            return self.checked();
        }
        match std::sync::Arc::try_unwrap(self.buf) {
            Ok(Held::Bytes(bytes)) => String::from_utf8(bytes).map(SharedBytes::from).map_err(|e| {
                let error = e.utf8_error();
                (SharedBytes::from(e.into_bytes()), error)
            }),
            Ok(Held::Text(text)) => Ok(SharedBytes::from(text)),
            Err(buf) => SharedBytes { buf, start, end }.checked(),
        }
    }

    /// The whole buffer these bytes are a part of, when no other
    /// `SharedBytes` shares it (for its room to be used again, e.g. by
    /// [`crate::write_queue::WriteQueue::recycle`]); `None` otherwise.
    pub fn try_into_vec(self) -> Option<Vec<u8>> {
        match std::sync::Arc::try_unwrap(self.buf).ok()? {
            Held::Bytes(bytes) => Some(bytes),
            Held::Text(text) => Some(text.into_bytes()),
        }
    }

    /// `self` when it is UTF-8 (as it is held), else the error.
    fn checked(self) -> Result<SharedBytes, (SharedBytes, std::str::Utf8Error)> {
        match std::str::from_utf8(&self) {
            Ok(_) => Ok(self),
            Err(e) => Err((self, e)),
        }
    }
}

impl From<Vec<u8>> for SharedBytes {
    /// Takes the vector without copying its bytes.
    fn from(bytes: Vec<u8>) -> SharedBytes {
        let end = bytes.len();
        SharedBytes { buf: std::sync::Arc::new(Held::Bytes(bytes)), start: 0, end }
    }
}

impl From<String> for SharedBytes {
    /// Takes the string without copying its bytes; known to be UTF-8
    /// ([`SharedBytes::as_str`]).
    fn from(text: String) -> SharedBytes {
        let end = text.len();
        SharedBytes { buf: std::sync::Arc::new(Held::Text(text)), start: 0, end }
    }
}

impl std::ops::Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf.bytes()[self.start..self.end]
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq for SharedBytes {
    /// Equal when the bytes are (wherever they are held).
    fn eq(&self, other: &SharedBytes) -> bool {
        self[..] == other[..]
    }
}

impl Eq for SharedBytes {}

impl PartialEq<Vec<u8>> for SharedBytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self[..] == other[..]
    }
}

impl From<&[u8]> for SharedBytes {
    /// A copy of `bytes`.
    fn from(bytes: &[u8]) -> SharedBytes {
        SharedBytes::from(bytes.to_vec())
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedBytes({} bytes)", self.len())
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Percent-encodes a query component (RFC 3986 unreserved characters kept).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[(b >> 4) as usize]));
                out.push(char::from(b"0123456789ABCDEF"[(b & 15) as usize]));
            }
        }
    }
    out
}

/// Encodes parameters as `a=1&b=2` (percent-encoded), for a query string or an
/// `application/x-www-form-urlencoded` body.
pub fn encode_params(params: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode(k));
        out.push('=');
        out.push_str(&percent_encode(v));
    }
    out
}

/// Decodes an `application/x-www-form-urlencoded` string (`+` is a space).
/// Invalid percent escapes are kept literally, as Go's `net/url` does not but
/// InfluxDB would reject; callers validate the values they need.
pub fn decode_params(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole, unshared buffer becomes text without a copy (the same
    /// bytes in memory), and so do its slices; a shared one is checked but
    /// not known afterwards; bytes that are not UTF-8 come back unchanged
    /// with the position of the first bad byte.
    #[test]
    fn bytes_checked_once_are_known_as_text_without_a_copy() {
        let bytes = SharedBytes::from(b"cpu v=1\nmem v=2\n".to_vec());
        let at = bytes.as_ptr();
        assert_eq!(bytes.as_str(), None);
        let text = bytes.into_text().expect("UTF-8");
        assert_eq!(text.as_str(), Some("cpu v=1\nmem v=2\n"));
        assert_eq!(text.as_ptr(), at, "the buffer is the same, not a copy");
        assert_eq!(text.slice(8..15).as_str(), Some("mem v=2"));

        let shared = SharedBytes::from(b"abc".to_vec());
        let other = shared.clone();
        let checked = shared.into_text().expect("UTF-8");
        assert_eq!((checked.as_str(), &checked[..]), (None, &b"abc"[..]));
        drop(other);

        let bad = SharedBytes::from(b"ok \xff".to_vec());
        let (back, e) = bad.into_text().expect_err("not UTF-8");
        assert_eq!((&back[..], e.valid_up_to()), (&b"ok \xff"[..], 3));
        let (sliced, e) =
            SharedBytes::from(b"x\xfe".to_vec()).slice(0..2).into_text().expect_err("not UTF-8");
        assert_eq!((&sliced[..], e.valid_up_to()), (&b"x\xfe"[..], 1));
    }

    #[test]
    fn params_round_trip() {
        let p = vec![("q".to_string(), "SELECT * FROM \"a b\" WHERE x='1&2'".to_string())];
        assert_eq!(decode_params(&encode_params(&p)), p);
    }

    #[test]
    fn decode_plus_and_bad_escape() {
        assert_eq!(
            decode_params("a=b+c&d=%zz&e=%4"),
            vec![("a".into(), "b c".into()), ("d".into(), "%zz".into()), ("e".into(), "%4".into())]
        );
    }
}
