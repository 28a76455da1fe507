//! A byte-counting TCP proxy in front of a `git daemon`, for the measurement tests: what a
//! client received, how many packs, and how long it took.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Forwards 127.0.0.1:<port> to the daemon, counting the bytes sent back to the client.
pub struct Proxy {
    pub port: u16,
    down: Arc<AtomicU64>,
    packs: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicU64::new(0));
        let packs = Arc::new(AtomicU64::new(0));
        let (counter, pack_counter) = (down.clone(), packs.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(c2, s2, None));
                let counters = (counter.clone(), pack_counter.clone());
                std::thread::spawn(move || pipe(server, client, Some(counters)));
            }
        });
        Proxy { port, down, packs }
    }

    /// Server responses so far that carried a pack (a protocol v2 `packfile` section).
    pub fn packs(&self) -> u64 {
        self.packs.load(Ordering::SeqCst)
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

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<(Arc<AtomicU64>, Arc<AtomicU64>)>) {
    const PACKFILE: &[u8] = b"packfile\n";
    let mut buf = [0u8; 65536];
    // The end of the previous read, for a section header split across reads.
    let mut seen = Vec::new();
    let mut had_pack = false;
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Counted before the client has it: a client that got its pack saw it counted.
                if let Some((bytes, packs)) = &count {
                    seen.extend_from_slice(&buf[..n]);
                    if !had_pack && seen.windows(PACKFILE.len()).any(|w| w == PACKFILE) {
                        had_pack = true;
                        packs.fetch_add(1, Ordering::SeqCst);
                    }
                    seen.drain(..seen.len().saturating_sub(PACKFILE.len()));
                    bytes.fetch_add(n as u64, Ordering::SeqCst);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
