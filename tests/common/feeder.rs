//! An independent publisher fed on its stdin: one `mosquitto_pub -l` that publishes `0`,
//! `1`, … every `period` until stopped, then `end`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::mosquitto::{require_binary, send_signal};

/// A numbered stream of messages from `mosquitto_pub -l` (see the [module docs](self)).
pub struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
    pid: u32,
}

impl Drop for Feeder {
    fn drop(&mut self) {
        // A failed test must not leave the publisher behind (it is reaped by its thread).
        if self.thread.is_some() {
            let _ = send_signal(self.pid, "KILL");
        }
    }
}

impl Feeder {
    /// Starts publishing to `topic` at `qos` as client `client_id`, one message every
    /// `period`.
    pub fn start(port: u16, topic: &str, qos: u8, client_id: &str, period: Duration) -> Feeder {
        let mut child = std::process::Command::new(require_binary("mosquitto_pub"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", topic, "-q", &qos.to_string(), "-l", "-i", client_id])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut stdin = child.stdin.take().unwrap();
            let mut sent = 0u64;
            while !flag.load(Ordering::Relaxed) {
                writeln!(stdin, "{sent}").unwrap();
                sent += 1;
                std::thread::sleep(period); // pacing of the stream, not synchronisation
            }
            writeln!(stdin, "end").unwrap();
            drop(stdin);
            // mosquitto_pub -l exits once every message it read is complete (PUBACK /
            // PUBCOMP).
            let status = child.wait().unwrap();
            assert!(status.success(), "mosquitto_pub: {status}");
            sent
        });
        Feeder {
            stop,
            thread: Some(thread),
            pid,
        }
    }

    /// Stops it; returns how many numbered messages it published (all complete).
    pub async fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().unwrap();
        tokio::task::spawn_blocking(move || t.join().unwrap())
            .await
            .unwrap()
    }
}
