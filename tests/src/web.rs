//! A real HTTP service in a pod (a thread per connection, answering `200 ok`) and a client's load
//! on it from another pod, counting what was answered; both stop on drop.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Result;

use crate::traffic::in_netns;

/// An HTTP/1.1 server in `netns` on `port`: every request gets `200 ok` and the connection closes.
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(netns: &str, port: u16) -> Result<HttpServer> {
        let l = in_netns(netns, move || Ok(TcpListener::bind(("0.0.0.0", port))?))?;
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        std::thread::spawn(move || serve(c));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(HttpServer {
            stop,
            thread: Some(thread),
        })
    }
}

fn serve(mut c: TcpStream) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut req = Vec::new();
    let mut buf = [0u8; 2048];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let _ = c.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
    );
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client's load: GETs to `addr` from `netns`, back to back (each with a 2 s timeout), from
/// `workers` threads, until dropped.
pub struct HttpLoad {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl HttpLoad {
    pub fn start(netns: &str, addr: SocketAddr, workers: usize) -> HttpLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads = (0..workers)
            .map(|_| {
                let (stop, ok, failed, ns) =
                    (stop.clone(), ok.clone(), failed.clone(), netns.to_string());
                std::thread::spawn(move || {
                    if crate::traffic::enter(&ns).is_err() {
                        return;
                    }
                    while !stop.load(Ordering::Relaxed) {
                        if get(addr).is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        HttpLoad {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// (answered, failed) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn get(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n")?;
    let mut r = Vec::new();
    s.read_to_end(&mut r)?;
    if r.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(ErrorKind::InvalidData.into())
    }
}

impl Drop for HttpLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One GET from `netns` to `addr`: whether `200` came back within 2 s.
pub fn answers(netns: &str, addr: SocketAddr) -> bool {
    in_netns(netns, move || Ok(get(addr).is_ok())).unwrap_or(false)
}
