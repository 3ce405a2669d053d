//! The canonical function: fwatchdog writes the request body to STDIN and answers with STDOUT.
//! A non-zero exit (here: an I/O error) becomes a 500.

use std::io::{self, Read, Write};

fn handle(request: &[u8]) -> Vec<u8> {
    [b"Hello, Rust. You said: ", request].concat()
}

fn main() -> io::Result<()> {
    let mut request = Vec::new();
    io::stdin().lock().read_to_end(&mut request)?;
    io::stdout().lock().write_all(&handle(&request))
}
