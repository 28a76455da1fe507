//! A byte-counting TCP proxy in front of a `git daemon`, for the measurement tests: what a
//! client received, and how long it took.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Forwards 127.0.0.1:<port> to the daemon, counting the bytes sent back to the client.
pub struct Proxy {
    pub port: u16,
    down: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicU64::new(0));
        let counter = down.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(c2, s2, None));
                let counter = counter.clone();
                std::thread::spawn(move || pipe(server, client, Some(counter)));
            }
        });
        Proxy { port, down }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    /// Bytes received by clients during `f`, and its wall time.
    pub fn measure(&self, f: impl FnOnce()) -> (u64, Duration) {
        let before = self.down.load(Ordering::SeqCst);
        let t = Instant::now();
        f();
        let wall = t.elapsed();
        // The copy thread may count the last bytes just after the client got them.
        std::thread::sleep(Duration::from_millis(50));
        (self.down.load(Ordering::SeqCst) - before, wall)
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>) {
    let mut buf = [0u8; 65536];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if let Some(c) = &count {
                    c.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
