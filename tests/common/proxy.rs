//! [`Proxy`]: a TCP proxy on a free loopback port in front of a broker, that adds a fixed
//! one-way delay to every byte (latency without a bandwidth limit: the kernel here has no
//! `netem`) and can cut the link (every connection closed, new ones refused) and restore
//! it.
#![allow(dead_code, unreachable_pub, reason = "shared by tests and benches")]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

struct Shared {
    target: SocketAddr,
    delay: Duration,
    cut: AtomicBool,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
    accepted: AtomicU64,
}

/// A running proxy; stops (closing every connection) on drop.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target_port`, each way
    /// `one_way_delay` late (a round trip through it costs twice that).
    pub fn start(target_port: u16, one_way_delay: Duration) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let shared = Arc::new(Shared {
            target: SocketAddr::from(([127, 0, 0, 1], target_port)),
            delay: one_way_delay,
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || accept_loop(&listener, &s))
            .expect("proxy thread");
        Proxy { port, shared }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Cuts the link: closes every connection; new ones are closed at once.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        close_all(&self.shared);
    }

    /// Restores the link: new connections go through again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        close_all(&self.shared);
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn close_all(s: &Shared) {
    let conns = std::mem::take(&mut *s.conns.lock().unwrap_or_else(|e| e.into_inner()));
    for c in conns {
        let _ = c.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: &TcpListener, s: &Arc<Shared>) {
    for client in listener.incoming() {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        s.accepted.fetch_add(1, Ordering::Relaxed);
        if s.cut.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(s.target) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        {
            let mut conns = s.conns.lock().unwrap_or_else(|e| e.into_inner());
            for c in [&client, &server] {
                if let Ok(c) = c.try_clone() {
                    conns.push(c);
                }
            }
        }
        for (from, to) in [(&client, &server), (&server, &client)] {
            if let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) {
                pipe(from, to, s.delay);
            }
        }
    }
}

/// Copies `from` into `to`, each chunk `delay` after it was read.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Read);
    });
    thread::spawn(move || {
        while let Ok((at, bytes)) = rx.recv() {
            let now = Instant::now();
            if at > now {
                thread::sleep(at - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
