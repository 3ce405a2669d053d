//! The listening sockets: each port the watchdog serves is bound on every address, IPv6 and IPv4
//! in one socket where the host has IPv6; and accepting on them, waiting after accept errors.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::backoff::Backoff;
use crate::config::go_duration;

/// After an accept error (out of file descriptors, most often: it lasts until some close), the
/// next accept waits 5 ms, doubling to 500 ms while errors go on, and is immediate after a success.
const ACCEPT_RETRY: Backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(500));

/// Accepts connections, one per `next()`. Errors never end an accept loop: errors that concern a
/// connection already gone are skipped, the others (out of file descriptors) are logged and
/// waited out with a back-off.
pub struct Acceptor {
    listener: TcpListener,
    backoff: Backoff,
}

impl Acceptor {
    fn new(listener: TcpListener) -> Acceptor {
        Acceptor { listener, backoff: ACCEPT_RETRY }
    }

    pub fn local_port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    pub async fn next(&mut self) -> TcpStream {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    self.backoff.reset();
                    return stream;
                }
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    let pause = self.backoff.next_pause();
                    log::warn!("accept: {e}; retrying in {}", go_duration(pause));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// Errors that concern one connection that is already gone, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}

/// Binds `port` on every address: IPv6 and IPv4 where the host has IPv6, IPv4 otherwise.
pub fn bind(port: u16) -> io::Result<Acceptor> {
    let v6 = || -> io::Result<TcpSocket> {
        let socket = TcpSocket::new_v6()?;
        set_dual_stack(&socket)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot accept IPv4 on an IPv6 socket: {e}")))?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from(([0u16; 8], port)))?;
        Ok(socket)
    };
    let socket = match v6() {
        Ok(socket) => socket,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
        Err(e) => {
            log::info!("port {port}: IPv4 only ({e})");
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(SocketAddr::from(([0, 0, 0, 0], port)))?;
            socket
        }
    };
    socket.listen(1024).map(Acceptor::new)
}

/// Makes an IPv6 socket take IPv4 connections too. If that fails the socket would silently be
/// IPv6-only (with `net.ipv6.bindv6only=1`), so the error is the caller's to handle.
fn set_dual_stack(socket: &TcpSocket) -> io::Result<()> {
    socket2::SockRef::from(socket).set_only_v6(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_dual_stack_option_is_an_error() {
        // IPV6_V6ONLY on an IPv4 socket fails: the error reaches the caller, which falls back.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        let _guard = runtime.enter();
        assert!(set_dual_stack(&TcpSocket::new_v4().unwrap()).is_err());
        if let Ok(v6) = TcpSocket::new_v6() {
            assert!(set_dual_stack(&v6).is_ok());
            assert!(!socket2::SockRef::from(&v6).only_v6().unwrap(), "IPv4 is accepted too");
        }
    }
}
