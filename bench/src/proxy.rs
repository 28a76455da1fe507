//! A counting TCP proxy on 127.0.0.1 in front of the git server: per connection, the bytes each
//! way and the round trips (how often the client had to wait for an answer: each switch from
//! client-speaking to server-speaking is one).

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one connection carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conn {
    /// The git service asked for: "git-upload-pack" (fetch) or "git-receive-pack" (push).
    pub service: String,
    /// From accept to close.
    pub duration: Duration,
    /// Bytes server -> client (what the client received).
    pub received: u64,
    /// Bytes client -> server.
    pub sent: u64,
    pub round_trips: u32,
}

/// Connections added up.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    pub connections: u32,
    pub received: u64,
    pub sent: u64,
    pub round_trips: u32,
    pub duration: Duration,
}

impl Traffic {
    /// The connections for `service` ("git-upload-pack", "git-receive-pack"; "" for all).
    pub fn of(conns: &[Conn], service: &str) -> Traffic {
        conns
            .iter()
            .filter(|c| c.service.starts_with(service))
            .fold(Traffic::default(), |mut t, c| {
                t.connections += 1;
                t.received += c.received;
                t.sent += c.sent;
                t.round_trips += c.round_trips;
                t.duration += c.duration;
                t
            })
    }
}

#[derive(Default)]
struct Shared {
    active: u32,
    done: Vec<Conn>,
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
}

#[derive(PartialEq)]
enum Dir {
    None,
    ToServer,
    ToClient,
}

struct Live {
    conn: Conn,
    last: Dir,
    /// The first bytes from the client, which name the service.
    head: Vec<u8>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`.
    /// The accept thread lives as long as the process (the bench is one short-lived process).
    pub fn start(upstream: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the counting proxy")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let s = s.clone();
                s.lock().unwrap().active += 1;
                std::thread::spawn(move || {
                    let conn = serve(client, upstream).unwrap_or_default();
                    let mut g = s.lock().unwrap();
                    g.active -= 1;
                    g.done.push(conn);
                });
            }
        });
        Ok(Proxy { port, shared })
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    /// Waits until every open connection has closed, then returns and forgets what they carried.
    pub fn take(&self) -> Result<Vec<Conn>> {
        crate::measure::wait_until(
            "proxied connections to close",
            Duration::from_secs(30),
            || self.shared.lock().unwrap().active == 0,
        )?;
        Ok(std::mem::take(&mut self.shared.lock().unwrap().done))
    }

    /// `take`, added up over the connections for `service`.
    pub fn traffic(&self, service: &str) -> Result<Traffic> {
        Ok(Traffic::of(&self.take()?, service))
    }
}

fn serve(client: TcpStream, upstream: SocketAddr) -> Result<Conn> {
    let start = Instant::now();
    let server = TcpStream::connect(upstream).context("connecting to the git server")?;
    let live = Arc::new(Mutex::new(Live {
        conn: Conn::default(),
        last: Dir::None,
        head: Vec::new(),
    }));
    let up = {
        let (from, to, live) = (client.try_clone()?, server.try_clone()?, live.clone());
        std::thread::spawn(move || pump(from, to, &live, Dir::ToServer))
    };
    pump(server, client, &live, Dir::ToClient);
    let _ = up.join();
    let mut c = live.lock().unwrap().conn.clone();
    c.duration = start.elapsed();
    Ok(c)
}

/// Copies until EOF, counting; then passes the EOF on.
fn pump(mut from: TcpStream, mut to: TcpStream, live: &Mutex<Live>, dir: Dir) {
    // PLUMB_BENCH_DUMP=1 prints what goes by (first 600 bytes of each read), to see the protocol.
    let dump = std::env::var_os("PLUMB_BENCH_DUMP").is_some();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut l = live.lock().unwrap();
            match dir {
                Dir::ToServer => {
                    // The request may come in pieces (gix writes the pkt-line length apart).
                    if l.head.len() < 64 {
                        l.head.extend_from_slice(&buf[..n.min(64)]);
                        l.conn.service = service_of(&l.head);
                    }
                    l.conn.sent += n as u64
                }
                Dir::ToClient => {
                    l.conn.received += n as u64;
                    // The server answering after the client spoke (or first) closes a round trip.
                    if l.last != Dir::ToClient {
                        l.conn.round_trips += 1;
                    }
                }
                Dir::None => {}
            }
            l.last = if dir == Dir::ToServer {
                Dir::ToServer
            } else {
                Dir::ToClient
            };
        }
        if dump {
            let arrow = if dir == Dir::ToServer { "C>S" } else { "S>C" };
            eprintln!(
                "{arrow} {n}: {}",
                String::from_utf8_lossy(&buf[..n.min(600)]).escape_debug()
            );
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// "git-upload-pack" from a git:// request ("003fgit-upload-pack /fleet.git\0host=...").
fn service_of(first: &[u8]) -> String {
    let text = String::from_utf8_lossy(first);
    let start = text.find("git-").unwrap_or(text.len());
    text[start..]
        .split([' ', '\0'])
        .next()
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_and_round_trips() {
        // An echo-ish server: answers every line with "ok\n".
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        std::thread::spawn(move || {
            let (s, _) = server.accept().unwrap();
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut r, &mut line).unwrap() > 0 {
                w.write_all(b"ok\n").unwrap();
                line.clear();
            }
        });
        let proxy = Proxy::start(addr).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        let mut answer = [0u8; 3];
        for _ in 0..3 {
            c.write_all(b"hello\n").unwrap();
            c.read_exact(&mut answer).unwrap();
        }
        drop(c);
        let t = proxy.traffic("").unwrap();
        assert_eq!(
            (t.connections, t.received, t.sent, t.round_trips),
            (1, 9, 18, 3)
        );
        assert_eq!(
            service_of(b"003fgit-upload-pack /fleet.git\0host=x\0"),
            "git-upload-pack"
        );
        assert_eq!(service_of(b"003f"), "");
    }
}
