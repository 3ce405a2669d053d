//! A trivial HTTP/1.1 server: one thread per connection, keep-alive, echoes the request body
//! (Content-Length or chunked) with 200. Just enough HTTP for wrk and a proxying watchdog.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use crate::Result;

const MAX_HEAD_LINES: usize = 100;

pub fn run(addr: &str) -> Result {
    let listener = TcpListener::bind(addr).map_err(|e| format!("upstream: cannot listen on {addr}: {e}"))?;
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                thread::spawn(move || {
                    let _ = serve(stream);
                });
            }
            Err(e) => eprintln!("upstream: accept: {e}"),
        }
    }
    Ok(())
}

struct Head {
    chunked: bool,
    length: usize,
    close: bool,
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut writer = stream;
    let mut body = Vec::new();
    while let Some(head) = read_head(&mut reader)? {
        body.clear();
        if head.chunked {
            read_chunked(&mut reader, &mut body)?;
        } else {
            body.resize(head.length, 0);
            reader.read_exact(&mut body)?;
        }
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if head.close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        response.extend_from_slice(&body);
        writer.write_all(&response)?;
        if head.close {
            break;
        }
    }
    Ok(())
}

/// The request line and headers; `None` when the client closed the connection between requests.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut head = Head { chunked: false, length: 0, close: line.trim_end().ends_with("HTTP/1.0") };
    for _ in 0..MAX_HEAD_LINES {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Ok(Some(head));
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => head.length = value.parse().map_err(|_| invalid("bad Content-Length"))?,
            "transfer-encoding" => head.chunked = value.contains("chunked"),
            "connection" => head.close = value.contains("close"),
            _ => {}
        }
    }
    Err(invalid("request head too long"))
}

fn read_chunked(reader: &mut impl BufRead, body: &mut Vec<u8>) -> std::io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size.trim(), 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(());
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}
