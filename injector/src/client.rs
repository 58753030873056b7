//! The CLI's side of the API: one HTTP/1.1 request per call over the daemon's Unix socket, or TCP
//! with a bearer token. Blocking and small on purpose: the CLI makes a handful of calls.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::Duration,
};

use thiserror::Error;

use crate::api::ErrorBody;

/// Where the daemon is.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: String, token: String },
}

#[derive(Debug, Error)]
pub enum ClientError {
    /// Nothing answers: the daemon is not running, or the socket/address is wrong.
    #[error(
        "cannot reach the daemon at {at}: {why} (is `injector daemon` running? --socket or --addr points elsewhere)"
    )]
    Unreachable { at: String, why: String },
    #[error("talking to the daemon at {at}: {why}")]
    Protocol { at: String, why: String },
}

pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// The `error` message of a JSON error body, or the body itself.
    pub fn error_message(&self) -> String {
        serde_json::from_str::<ErrorBody>(&self.body)
            .map(|b| b.error)
            .unwrap_or_else(|_| self.body.trim().to_string())
    }
}

trait Stream: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> Stream for T {}

impl Endpoint {
    fn at(&self) -> String {
        match self {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Tcp { addr, .. } => addr.clone(),
        }
    }

    /// Sends one request; any HTTP status is a response, only transport failures are errors.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, ClientError> {
        let at = self.at();
        let unreachable = |e: std::io::Error| ClientError::Unreachable {
            at: at.clone(),
            why: e.to_string(),
        };
        let proto = |why: String| ClientError::Protocol {
            at: at.clone(),
            why,
        };
        let (mut s, auth): (Box<dyn Stream>, String) = match self {
            Endpoint::Unix(p) => {
                let s = UnixStream::connect(p).map_err(unreachable)?;
                s.set_read_timeout(Some(Duration::from_secs(30))).ok();
                (Box::new(s), String::new())
            }
            Endpoint::Tcp { addr, token } => {
                let s = std::net::TcpStream::connect(addr).map_err(unreachable)?;
                s.set_read_timeout(Some(Duration::from_secs(30))).ok();
                (Box::new(s), format!("Authorization: Bearer {token}\r\n"))
            }
        };
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: injector\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())
            .map_err(|e| proto(e.to_string()))?;
        // Room for a usual answer: one read, not a 32-byte probe read and doublings.
        let mut raw = Vec::with_capacity(16 << 10);
        s.read_to_end(&mut raw).map_err(|e| proto(e.to_string()))?;
        parse_response(&raw).map_err(proto)
    }
}

/// Parses a whole HTTP/1.1 response (Content-Length, chunked, or read-to-close bodies).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let chunked = lines.any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("bad chunk")?;
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .map_err(|_| "bad chunk size")?;
            if size == 0 {
                break;
            }
            let start = eol + 2;
            out.extend_from_slice(rest.get(start..start + size).ok_or("short chunk")?);
            rest = rest.get(start + size + 2..).ok_or("short chunk")?;
        }
        body = out;
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_read() {
        let r = parse_response(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_str()), (201, "{}"));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, "abcde");
        let r =
            parse_response(b"HTTP/1.1 400 Bad Request\r\n\r\n{\"error\":\"faults[0].loss: bad\"}")
                .unwrap();
        assert_eq!(r.error_message(), "faults[0].loss: bad");
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn a_missing_daemon_is_one_clear_error() {
        let e = Endpoint::Unix("/nonexistent/injector.sock".into())
            .request("GET", "/v1/status", None)
            .err()
            .unwrap();
        assert!(matches!(e, ClientError::Unreachable { .. }));
        assert!(
            e.to_string()
                .starts_with("cannot reach the daemon at /nonexistent/injector.sock"),
            "{e}"
        );
    }
}
