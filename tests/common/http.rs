//! A raw HTTP/1.1 client over 127.0.0.1: requests written byte for byte (so tests can send what no
//! proper client would), responses parsed by hand, chunked bodies decoded as they arrive.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    }
}

pub fn build_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    let chunked = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !chunked && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends raw bytes on a new connection and reads one response. The request is written from a
/// separate thread so that a large body can't deadlock against a large response.
pub fn send(port: u16, request: &[u8]) -> io::Result<Response> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let request = request.to_vec();
    let head_only = request.starts_with(b"HEAD ");
    let sender = std::thread::spawn(move || writer.write_all(&request));
    let response = read_response(&mut BufReader::new(&stream), head_only);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = sender.join();
    response
}

/// Reads one response from a connection.
pub fn read_response(reader: &mut impl BufRead, head_only: bool) -> io::Result<Response> {
    let mut response = read_head(reader)?;
    if head_only || response.status == 204 || response.status == 304 {
        return Ok(response);
    }
    if response.is_chunked() {
        Chunked::new(reader).read_to_end(&mut response.body)?;
    } else if let Some(length) = response.header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        response.body.resize(length, 0);
        reader.read_exact(&mut response.body)?;
    } else {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

/// Reads a response's status line and headers (skipping `100 Continue`) and leaves `reader` at the
/// start of the body; the returned body is empty.
pub fn read_head(reader: &mut impl BufRead) -> io::Result<Response> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((k, v)) = trimmed.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        if status != 100 {
            return Ok(Response { status, headers, body: Vec::new() });
        }
    }
}

/// A chunked body decoded as it is read, for bodies too big to hold or that arrive over time.
/// Reading past the last chunk gives EOF; a connection that ends before it is an error.
pub struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: usize,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    pub fn new(inner: R) -> Chunked<R> {
        Chunked { inner, left: 0, done: false }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.inner.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body cut short"));
        }
        Ok(line)
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let line = self.line()?;
            self.left = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {line:?}")))?;
            if self.left == 0 {
                self.line()?; // the empty line after the last chunk (no trailers are sent)
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body cut short"));
        }
        self.left -= n;
        if self.left == 0 {
            self.line()?; // the CRLF after the chunk's data
        }
        Ok(n)
    }
}

/// An HTTP/1.1 client on one keep-alive connection; reconnects when the server closes it.
pub struct Client {
    port: u16,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client { port, conn: None }
    }

    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<Response> {
        let (writer, reader) = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect(("127.0.0.1", self.port))?;
                stream.set_read_timeout(Some(Duration::from_secs(60)))?;
                let reader = BufReader::new(stream.try_clone()?);
                self.conn.insert((stream, reader))
            }
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
        head.extend_from_slice(body);
        let result = writer.write_all(&head).and_then(|()| read_response(reader, false));
        let keep =
            result.as_ref().is_ok_and(|r| !r.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")));
        if !keep {
            self.conn = None;
        }
        result
    }
}
