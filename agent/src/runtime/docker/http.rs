//! Just enough HTTP/1.1 to read one response from the Docker daemon: the status
//! line, the headers, and a body framed by `Content-Length`, by
//! `Transfer-Encoding: chunked` (what dockerd's Go server sends once a body
//! outgrows its 2 KiB buffer, as an inspect document usually does) or by the end
//! of the connection.
//!
//! [`parse`] is called on everything received so far; it says whether the
//! response is complete, so the client stops reading as soon as it is, even from
//! a daemon that keeps the connection open. It never panics, whatever the bytes.

/// One complete response.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
}

/// Why a response could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    /// The connection ended before the response did.
    #[error("the answer ended early")]
    Truncated,
    /// More than the client accepts.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    /// A chunk size beyond what this machine can address, so beyond any bound.
    #[error("the answer announces a chunk larger than memory")]
    ChunkTooLarge,
    #[error("the answer's status line is not HTTP/1.x")]
    BadStatusLine,
    #[error("the answer has a malformed header line")]
    BadHeader,
    #[error("the answer's Content-Length is not one number")]
    BadContentLength,
    #[error("the answer's chunked body is malformed")]
    BadChunk,
    /// A transfer coding other than `chunked` (dockerd compresses nothing it was
    /// not asked to).
    #[error("the answer uses the transfer coding `{0}`")]
    UnsupportedCoding(String),
}

/// The longest chunk-size line accepted: 16 hex digits fill a u64, and chunk
/// extensions are not expected from dockerd.
const MAX_CHUNK_LINE: usize = 256;

/// How the body's end is known.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Parses `buf`, everything received so far; `eof`: nothing more will come.
/// `Ok(None)` means more bytes are needed (never returned when `eof`).
pub(super) fn parse(buf: &[u8], eof: bool) -> Result<Option<Response>, HttpError> {
    let incomplete = || {
        if eof {
            Err(HttpError::Truncated)
        } else {
            Ok(None)
        }
    };
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return incomplete();
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| HttpError::BadHeader)?;
    let rest = &buf[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status = status_code(lines.next().unwrap_or(""))?;
    let framing = framing(lines)?;
    let body = match framing {
        Framing::Length(n) => rest.get(..n).map(<[u8]>::to_vec),
        Framing::Chunked => dechunk(rest)?,
        Framing::UntilClose => eof.then(|| rest.to_vec()),
    };
    match body {
        Some(body) => Ok(Some(Response { status, body })),
        None => incomplete(),
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn status_code(line: &str) -> Result<u16, HttpError> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 || !all_digits(code) {
        return Err(HttpError::BadStatusLine);
    }
    code.parse().map_err(|_| HttpError::BadStatusLine)
}

/// The body's framing from the header lines. `Transfer-Encoding` wins over
/// `Content-Length` (RFC 9112, 6.3).
fn framing<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Framing, HttpError> {
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HttpError::BadHeader)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if !coding.eq_ignore_ascii_case("chunked") {
                    return Err(HttpError::UnsupportedCoding(coding.to_owned()));
                }
                chunked = true;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = Some(value)
                .filter(|v| all_digits(v))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or(HttpError::BadContentLength)?;
            // A repeated header must repeat the same value.
            if length.is_some_and(|m| m != n) {
                return Err(HttpError::BadContentLength);
            }
            length = Some(n);
        }
    }
    Ok(match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::UntilClose,
    })
}

/// Decodes a chunked body; `Ok(None)` while its last chunk has not arrived.
/// Trailer fields are read past and ignored.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            if rest.len() > MAX_CHUNK_LINE {
                return Err(HttpError::BadChunk);
            }
            return Ok(None);
        };
        if line_end > MAX_CHUNK_LINE {
            return Err(HttpError::BadChunk);
        }
        let size = chunk_size(&rest[..line_end])?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(skip_trailers(rest).then_some(body));
        }
        let Some(end) = size.checked_add(2) else {
            return Err(HttpError::ChunkTooLarge);
        };
        let Some(chunk) = rest.get(..end) else {
            return Ok(None);
        };
        if !chunk.ends_with(b"\r\n") {
            return Err(HttpError::BadChunk);
        }
        body.extend_from_slice(&chunk[..size]);
        rest = &rest[end..];
    }
}

/// A chunk-size line: hex digits, then optional `;extensions`.
fn chunk_size(line: &[u8]) -> Result<usize, HttpError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or(&[]);
    let digits = std::str::from_utf8(digits)
        .map_err(|_| HttpError::BadChunk)?
        .trim_matches([' ', '\t']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HttpError::BadChunk);
    }
    let size = u64::from_str_radix(digits, 16).map_err(|_| HttpError::ChunkTooLarge)?;
    usize::try_from(size).map_err(|_| HttpError::ChunkTooLarge)
}

/// Whether the trailer section (lines up to an empty one) is complete.
fn skip_trailers(mut rest: &[u8]) -> bool {
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return false;
        };
        if line_end == 0 {
            return true;
        }
        rest = &rest[line_end + 2..];
    }
}

/// Non-empty and only ASCII digits (Rust's integer parsing also takes a sign).
fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(text: &[u8]) -> Response {
        parse(text, false)
            .expect("valid")
            .expect("complete without waiting for the end")
    }

    #[test]
    fn content_length_bodies_end_at_their_length() {
        let r = complete(b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nhelloEXTRA");
        assert_eq!((r.status, r.body.as_slice()), (404, &b"hello"[..]));
        let short = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
        assert_eq!(parse(short, false), Ok(None));
        assert_eq!(parse(short, true), Err(HttpError::Truncated));
    }

    #[test]
    fn chunked_bodies_are_joined_and_end_at_the_last_chunk() {
        let text = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                     5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n";
        let r = complete(text);
        assert_eq!(r.body, b"hello 0123456789");
        // Every prefix is incomplete, never an error, and truncated at the end.
        for cut in 0..text.len() {
            assert_eq!(parse(&text[..cut], false), Ok(None), "cut at {cut}");
            assert_eq!(parse(&text[..cut], true), Err(HttpError::Truncated));
        }
        let trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                         2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(complete(trailers).body, b"ok");
        // Transfer-Encoding wins over a Content-Length.
        let both = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n\
                     2\r\nok\r\n0\r\n\r\n";
        assert_eq!(complete(both).body, b"ok");
    }

    #[test]
    fn without_framing_the_body_ends_with_the_connection() {
        let text = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}";
        assert_eq!(parse(text, false), Ok(None));
        assert_eq!(parse(text, true).expect("valid").expect("done").body, b"{}");
    }

    #[test]
    fn malformed_responses_are_errors() {
        let cases: &[(&[u8], HttpError)] = &[
            (b"SSH-2.0-OpenSSH\r\n\r\n", HttpError::BadStatusLine),
            (b"HTTP/1.1 2000 OK\r\n\r\n", HttpError::BadStatusLine),
            (b"HTTP/2 200\r\n\r\n", HttpError::BadStatusLine),
            (b"HTTP/1.1 +20 OK\r\n\r\n", HttpError::BadStatusLine),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", HttpError::BadHeader),
            (b"HTTP/1.1 200 OK\r\n\xff: x\r\n\r\n", HttpError::BadHeader),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
                HttpError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                HttpError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                HttpError::UnsupportedCoding("gzip".into()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                HttpError::BadChunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n",
                HttpError::BadChunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
                HttpError::ChunkTooLarge,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
                HttpError::ChunkTooLarge,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse(text, true).as_ref(),
                Err(expected),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        // A chunk-size line that never ends is refused before the buffer's bound.
        let mut endless = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        endless.extend(std::iter::repeat_n(b'0', 1000));
        assert_eq!(parse(&endless, false), Err(HttpError::BadChunk));
    }
}
